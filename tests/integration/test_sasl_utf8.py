"""SASL (RFC 5034) over TLS, as the backend sees it, and UTF8 (RFC 6856).

Every mechanism runs on the implicit-TLS listener, and each test checks the
exact `authenticate` body that reached the backend (from the reference
backend's --log-requests). test_sasl.py covers the same mechanisms on a
plain loopback connection; this file adds the wire details (empty
challenges, `=`, `*` at each step, bad base64, the OAuth error challenges
and their JSON, continuation lines of many KB) and UTF-8 credentials.
"""

import base64
import json
import os

from harness import HOST, TOKENS, MailRoot
from test_tls import TlsStackTestCase, b64

MECHS = ["PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"]


class SaslCase(TlsStackTestCase):
    GATEWAY_ARGS = {"max_bad_commands": "1000", "max_auth_failures": "1000"}

    def tls(self):
        start = len(self.backend.requests())
        c = self.connect(tls=True)
        c.start = start
        return c

    def auths(self, c, n=None, timeout=5.0):
        """The authenticate bodies of client c's session (by its port);
        with n, waits until there are n of them."""
        if n:
            self.backend.wait_requests(
                lambda rs: len(self._mine(rs, c)) >= n, start=c.start, timeout=timeout)
        return self._mine(self.backend.requests()[c.start:], c)

    @staticmethod
    def _mine(rs, c):
        return [r for r in rs if r.get("event") == "authenticate"
                and r.get("client", {}).get("port") == c.local_port]

    def body_without_noise(self, body):
        """An authenticate body without what changes from run to run."""
        b = {k: v for k, v in body.items() if not k.startswith("_") and k != "session"}
        self.assertEqual(b.pop("client"), {"ip": HOST, "port": body["client"]["port"], "tls": True})
        return b

    def assert_in(self, c, user="alice"):
        self.assertEqual(c.cmd("STAT"), self.stat_line(user))


# ------------------------------------------------------------------ SASL


class SaslOverTlsTests(SaslCase):

    def test_capa_and_bare_auth_list_every_mechanism(self):
        c = self.tls()
        self.assertIn("SASL " + " ".join(MECHS), c.capa())
        st, body = c.multi("AUTH")
        self.assertTrue(st.startswith(b"+OK"), st)
        self.assertEqual(body.decode().split("\r\n")[:-1], MECHS)

    def test_plain_initial_response_body(self):
        c = self.tls()
        st = c.cmd("AUTH PLAIN " + b64("\0alice\0secret1"))
        self.assertTrue(st.startswith(b"+OK"), st)
        self.assert_in(c)
        (auth,) = self.auths(c, 1)
        self.assertEqual(self.body_without_noise(auth), {
            "event": "authenticate", "user": "alice", "method": "PLAIN",
            "password": "secret1", "attempt": 1})

    def test_plain_with_authzid(self):
        c = self.tls()
        st = c.cmd("AUTH PLAIN " + b64("alice\0alice\0secret1"))
        self.assertTrue(st.startswith(b"+OK"), st)
        (auth,) = self.auths(c, 1)
        self.assertEqual(auth["authzid"], "alice")
        self.assertEqual(auth["user"], "alice")
        # Acting as someone else: sent to the backend, which says no.
        d = self.tls()
        st = d.cmd("AUTH PLAIN " + b64("bob\0alice\0secret1"))
        self.assertTrue(st.startswith(b"-ERR [AUTH]"), st)
        (auth,) = self.auths(d, 1)
        self.assertEqual((auth["authzid"], auth["user"]), ("bob", "alice"))

    def test_plain_after_an_empty_challenge(self):
        c = self.tls()
        self.assertEqual(c.step("AUTH PLAIN"), b"+ \r\n")
        st = c.step(b64("\0bob\0pass word 2"))
        self.assertTrue(st.startswith(b"+OK"), st)
        self.assert_in(c, "bob")
        (auth,) = self.auths(c, 1)
        self.assertEqual(auth["password"], "pass word 2")

    def test_plain_empty_initial_response(self):
        """`=` is an empty initial response (RFC 5034 §4); for PLAIN that is
        not a valid message, so -ERR without asking the backend."""
        c = self.tls()
        st = c.step("AUTH PLAIN =")
        self.assertTrue(st.startswith(b"-ERR"), st)
        self.assertFalse(st.startswith(b"+"), st)
        self.assertEqual(c.step("AUTH PLAIN"), b"+ \r\n")
        self.assertTrue(c.step("").startswith(b"-ERR"))  # an empty response: same
        self.assertEqual(self.auths(c), [])
        # An empty password is a well-formed PLAIN message: the backend decides.
        st = c.cmd("AUTH PLAIN " + b64("\0alice\0"))
        self.assertTrue(st.startswith(b"-ERR [AUTH]"), st)
        self.assertEqual(self.auths(c, 1)[0]["password"], "")
        c.login()

    def test_login_mechanism(self):
        c = self.tls()
        self.assertEqual(c.step("AUTH LOGIN"), b"+ " + b64("Username:").encode() + b"\r\n")
        self.assertEqual(c.step(b64("alice")), b"+ " + b64("Password:").encode() + b"\r\n")
        st = c.step(b64("secret1"))
        self.assertTrue(st.startswith(b"+OK"), st)
        self.assert_in(c)
        (auth,) = self.auths(c, 1)
        self.assertEqual(self.body_without_noise(auth), {
            "event": "authenticate", "user": "alice", "method": "LOGIN",
            "password": "secret1", "attempt": 1})

    def test_login_with_initial_response(self):
        c = self.tls()
        self.assertEqual(c.step("AUTH LOGIN " + b64("bob")), b"+ UGFzc3dvcmQ6\r\n")
        self.assertTrue(c.step(b64("pass word 2")).startswith(b"+OK"))

    def test_cancel_at_every_step(self):
        c = self.tls()
        for opening, answers in (("AUTH PLAIN", []), ("AUTH LOGIN", []),
                                 ("AUTH LOGIN", [b64("alice")]),
                                 ("AUTH LOGIN " + b64("alice"), []),
                                 ("AUTH XOAUTH2", []), ("AUTH OAUTHBEARER", [])):
            with self.subTest(opening=opening, answers=len(answers)):
                self.assertTrue(c.step(opening).startswith(b"+ "))
                for a in answers:
                    self.assertTrue(c.step(a).startswith(b"+ "))
                st = c.step("*")
                self.assertTrue(st.startswith(b"-ERR"), st)
        self.assertEqual(self.auths(c), [])
        self.assertTrue(c.cmd("STAT").startswith(b"-ERR"))  # still in AUTHORIZATION
        c.login()

    def test_bad_base64_and_unknown_mechanisms(self):
        c = self.tls()
        for line in ("AUTH PLAIN !!!!", "AUTH PLAIN AGFsaWNlAHNlY3JldDE",  # no padding
                     "AUTH XOAUTH2 ===="):
            with self.subTest(line=line):
                self.assertTrue(c.step(line).startswith(b"-ERR"))
        self.assertEqual(c.step("AUTH LOGIN"), b"+ VXNlcm5hbWU6\r\n")
        self.assertTrue(c.step("not base64 at all").startswith(b"-ERR"))
        for mech in ("CRAM-MD5", "GSSAPI", "SCRAM-SHA-256", "EXTERNAL", "PLAINX"):
            with self.subTest(mech=mech):
                st = c.step("AUTH " + mech)
                self.assertTrue(st.startswith(b"-ERR"), st)
        self.assertEqual(self.auths(c), [])
        c.login()

    def test_mechanism_names_are_case_insensitive(self):
        c = self.tls()
        st = c.cmd("auth plain " + b64("\0alice\0secret1"))
        self.assertTrue(st.startswith(b"+OK"), st)

    def test_xoauth2_success_body(self):
        c = self.tls()
        st = c.cmd("AUTH XOAUTH2 " + b64("user=carol\x01auth=Bearer %s\x01\x01" % TOKENS["carol"]))
        self.assertTrue(st.startswith(b"+OK"), st)
        self.assert_in(c, "carol")
        (auth,) = self.auths(c, 1)
        self.assertEqual(self.body_without_noise(auth), {
            "event": "authenticate", "user": "carol", "method": "XOAUTH2",
            "token": TOKENS["carol"], "attempt": 1})

    def test_xoauth2_error_challenge(self):
        c = self.tls()
        st = c.step("AUTH XOAUTH2 " + b64("user=carol\x01auth=Bearer expired\x01\x01"))
        self.assertTrue(st.startswith(b"+ "), st)
        challenge = json.loads(base64.b64decode(st[2:].strip(), validate=True))
        self.assertEqual(challenge.get("status"), "401")
        self.assertIn("schemes", challenge)
        st = c.step("")  # the client's empty answer
        self.assertTrue(st.startswith(b"-ERR [AUTH]"), st)
        self.assertEqual(self.auths(c, 1)[0]["token"], "expired")
        c.login()

    def test_oauthbearer_success_body(self):
        c = self.tls()
        ir = "n,a=carol,\x01host=mail.example.com\x01port=995\x01auth=Bearer %s\x01\x01" % (
            TOKENS["carol"])
        st = c.cmd("AUTH OAUTHBEARER " + b64(ir))
        self.assertTrue(st.startswith(b"+OK"), st)
        self.assert_in(c, "carol")
        (auth,) = self.auths(c, 1)
        self.assertEqual(self.body_without_noise(auth), {
            "event": "authenticate", "user": "carol", "method": "OAUTHBEARER",
            "token": TOKENS["carol"], "attempt": 1})

    def test_oauthbearer_without_a_user_name(self):
        """No a=: `user` is null, and the backend finds the user by token;
        later events carry the name the backend confirmed."""
        c = self.tls()
        st = c.cmd("AUTH OAUTHBEARER " + b64("n,,\x01auth=Bearer %s\x01\x01" % TOKENS["carol"]))
        self.assertTrue(st.startswith(b"+OK"), st)
        self.assertTrue(c.cmd("QUIT").startswith(b"+OK"))
        evs = self.backend.wait_requests(
            lambda rs: any(r["event"] == "quit" and r["client"]["port"] == c.local_port
                           for r in rs), start=c.start)
        evs = [e for e in evs if e["client"]["port"] == c.local_port]
        self.assertIsNone(evs[0]["user"])
        self.assertEqual([e["user"] for e in evs[1:]], ["carol", "carol"])

    def test_oauthbearer_error_challenge(self):
        c = self.tls()
        st = c.step("AUTH OAUTHBEARER " + b64("n,a=carol,\x01auth=Bearer expired\x01\x01"))
        self.assertTrue(st.startswith(b"+ "), st)
        challenge = json.loads(base64.b64decode(st[2:].strip(), validate=True))
        self.assertEqual(challenge["status"], "invalid_token")
        st = c.step(b64("\x01"))  # RFC 7628 §3.2.3: the client answers with ^A
        self.assertTrue(st.startswith(b"-ERR [AUTH]"), st)
        c.login()

    def test_long_continuation_lines(self):
        """OAuth tokens of several KB go in continuation lines; 4 KB logs
        in, 12 KB arrives intact, past 16 KB the line is refused and the
        session goes on."""
        c = self.tls()
        self.assertEqual(c.step("AUTH XOAUTH2"), b"+ \r\n")
        st = c.step(b64("user=dave\x01auth=Bearer %s\x01\x01" % TOKENS["dave"]))
        self.assertTrue(st.startswith(b"+OK"), st)
        self.assert_in(c, "dave")
        self.assertEqual(self.auths(c, 1)[0]["token"], TOKENS["dave"])

        d = self.tls()
        big = "".join("0123456789abcdef"[(i * 5) % 16] for i in range(12000))
        self.assertEqual(d.step("AUTH OAUTHBEARER"), b"+ \r\n")
        line = b64("n,a=carol,\x01auth=Bearer %s\x01\x01" % big)
        self.assertGreater(len(line), 12000)
        self.assertTrue(d.step(line).startswith(b"+ "))  # wrong token: error challenge
        self.assertTrue(d.step("AQ==").startswith(b"-ERR [AUTH]"))
        self.assertEqual(self.auths(d, 1)[0]["token"], big)

        self.assertEqual(d.step("AUTH OAUTHBEARER"), b"+ \r\n")
        st = d.step(b64("n,a=carol,\x01auth=Bearer %s\x01\x01" % (big * 2)))
        self.assertTrue(st.startswith(b"-ERR"), st)
        d.login()
        self.assertEqual(len(self.auths(d, 2)), 2)

    def test_initial_response_longer_than_a_command_line(self):
        """RFC 5034 §4: a client whose initial response does not fit in the
        255-octet command line must use a continuation instead; a longer
        AUTH line is refused like any over-long command."""
        c = self.tls()
        st = c.step("AUTH XOAUTH2 " + b64("user=dave\x01auth=Bearer %s\x01\x01" % TOKENS["dave"]))
        self.assertTrue(st.startswith(b"-ERR"), st)
        c.login()

    def test_attempts_are_counted_per_connection(self):
        c = self.tls()
        self.assertTrue(c.cmd("AUTH PLAIN " + b64("\0alice\0wrong")).startswith(b"-ERR [AUTH]"))
        self.assertEqual(c.step("AUTH LOGIN"), b"+ VXNlcm5hbWU6\r\n")
        c.step(b64("alice"))
        self.assertTrue(c.step(b64("wrong again")).startswith(b"-ERR [AUTH]"))
        self.assertTrue(c.cmd("AUTH PLAIN " + b64("\0alice\0secret1")).startswith(b"+OK"))
        self.assertEqual([a["attempt"] for a in self.auths(c, 3)], [1, 2, 3])
        self.assertEqual([a["method"] for a in self.auths(c)], ["PLAIN", "LOGIN", "PLAIN"])

    def test_overlong_user_name_refused_without_backend_call(self):
        """user is at most 255 octets (the contract); a longer SASL name is
        refused before the backend is asked."""
        c = self.tls()
        for line in (b64("\0" + "u" * 256 + "\0pw"),
                     b64("n,a=%s,\x01auth=Bearer tok\x01\x01" % ("u" * 256))):
            with self.subTest(size=len(line)):
                c.step("AUTH PLAIN" if "\0" in base64.b64decode(line).decode() else
                       "AUTH OAUTHBEARER")
                st = c.step(line)
                self.assertTrue(st.startswith(b"-ERR [AUTH]"), st)
        self.assertEqual(self.auths(c), [])
        c.login()

    def test_overlong_user_name_message(self):
        """The refusal of a 256-octet (valid UTF-8) name should not claim
        the credentials are not valid UTF-8."""
        c = self.tls()
        c.step("AUTH PLAIN")
        st = c.step(b64("\0" + "u" * 256 + "\0pw"))
        self.assertTrue(st.startswith(b"-ERR [AUTH]"), st)
        self.assertNotIn(b"UTF-8", st, "misleading reason for a name that is only too long")

    def test_control_characters_in_sasl_names(self):
        """A decoded name could carry CR LF into a reply or a log line: it
        is refused before the backend is asked, and nothing extra is sent."""
        c = self.tls()
        for mech, msg in (("PLAIN", "\0alice\r\n+OK forged\0secret1"),
                          ("PLAIN", "bob\r\nx\0alice\0secret1"),
                          ("XOAUTH2", "user=carol\r\n+OK\x01auth=Bearer tok-carol-123\x01\x01"),
                          ("OAUTHBEARER", "n,a=ca\x7frol,\x01auth=Bearer tok-carol-123\x01\x01")):
            with self.subTest(mech=mech, msg=msg[:12]):
                st = c.step("AUTH %s %s" % (mech, b64(msg)))
                self.assertTrue(st.startswith(b"-ERR [AUTH]"), st)
                self.assertEqual(c.quiet(0.1), b"")
        self.assertEqual(c.step("AUTH LOGIN"), b"+ VXNlcm5hbWU6\r\n")
        self.assertEqual(c.step(b64("alice\nQUIT")), b"+ UGFzc3dvcmQ6\r\n")
        self.assertTrue(c.step(b64("secret1")).startswith(b"-ERR [AUTH]"))
        self.assertEqual(self.auths(c), [])
        c.login()

    def test_auth_refused_after_login(self):
        c = self.tls()
        c.login()
        st = c.step("AUTH PLAIN " + b64("\0bob\0pass word 2"))
        self.assertTrue(st.startswith(b"-ERR"), st)
        self.assert_in(c)


# ------------------------------------------------------------------ UTF8

UTF8_USERS = {
    "alice": "secret1",
    "jürgen": "pässwörd ✓",
    "ζωή": "κωδικός 1",
    "李雷": "密码 two words",
}


class Utf8Tests(SaslCase):
    """RFC 6856: the UTF8 capability and command. UTF-8 user names and
    passwords reach the backend intact, and once the command was given,
    `utf8: true` is in every later event of the session."""

    GATEWAY_ARGS = dict(SaslCase.GATEWAY_ARGS, events="connect,disconnect")

    @classmethod
    def make_root(cls):
        root = MailRoot(users=UTF8_USERS)
        # The harness writes the users file in the locale's encoding: write
        # it again as UTF-8 whatever the locale.
        with open(os.path.join(root.path, "users"), "w", encoding="utf-8") as f:
            for user, pw in UTF8_USERS.items():
                f.write("%s:%s\n" % (user, pw))
        for user in UTF8_USERS:
            if user != "alice":
                root.add(user, "1700000401.M1P1.%s" % user.encode().hex(),
                         ("From: x@example.com\nSubject: für %s\n\nGrüße.\n" % user).encode())
        return root

    def session_events(self, c, until="quit"):
        self.backend.wait_requests(
            lambda rs: any(r["event"] == until and r["client"]["port"] == c.local_port
                           for r in rs), start=c.start)
        return [r for r in self.backend.requests()[c.start:]
                if r.get("client", {}).get("port") == c.local_port]

    def test_capa_advertises_utf8(self):
        c = self.tls()
        caps = c.capa()
        utf8 = [x for x in caps if x.split()[0] == "UTF8"]
        self.assertEqual(len(utf8), 1, caps)
        self.assertIn("USER", utf8[0].split()[1:])  # UTF-8 in USER/PASS too
        # After login too (RFC 6856; RFC 2449 section 5), while the UTF8
        # command itself belongs to AUTHORIZATION.
        c.login()
        self.assertEqual([x for x in c.capa() if x.split()[0] == "UTF8"], utf8)
        self.assertTrue(c.cmd("UTF8").startswith(b"-ERR"))

    def test_utf8_user_pass_reach_the_backend(self):
        for user, pw in UTF8_USERS.items():
            if user == "alice":
                continue
            with self.subTest(user=user):
                c = self.tls()
                self.assertEqual(c.cmd("UTF8"), b"+OK UTF8 enabled\r\n")
                self.assertTrue(c.cmd("USER " + user).startswith(b"+OK"))
                st = c.cmd("PASS " + pw)
                self.assertTrue(st.startswith(b"+OK"), st)
                self.assert_in(c, user)
                st, body = c.multi("RETR 1")
                self.assertEqual(body, self.msgs(user)[0].expected)
                self.assertTrue(c.cmd("QUIT").startswith(b"+OK"))
                evs = self.session_events(c)
                self.assertEqual([e["event"] for e in evs],
                                 ["connect", "authenticate", "list", "retrieve", "quit"])
                self.assertNotIn("utf8", evs[0])  # connect: before the command
                for e in evs[1:]:
                    self.assertIs(e.get("utf8"), True, e)
                    self.assertEqual(e["user"], user)
                self.assertEqual(evs[1]["password"], pw)

    def test_utf8_with_sasl_plain_and_login(self):
        c = self.tls()
        c.cmd("UTF8")
        st = c.cmd("AUTH PLAIN " + b64("\0jürgen\0pässwörd ✓"))
        self.assertTrue(st.startswith(b"+OK"), st)
        (auth,) = self.auths(c, 1)
        self.assertEqual((auth["user"], auth["password"], auth["utf8"]),
                         ("jürgen", "pässwörd ✓", True))
        d = self.tls()
        d.cmd("UTF8")
        d.step("AUTH LOGIN")
        d.step(b64("李雷"))
        self.assertTrue(d.step(b64("密码 two words")).startswith(b"+OK"))
        (auth,) = self.auths(d, 1)
        self.assertEqual((auth["user"], auth["password"]), ("李雷", "密码 two words"))

    def test_disconnect_event_carries_utf8(self):
        c = self.tls()
        c.cmd("UTF8")
        c.login("ζωή", UTF8_USERS["ζωή"])
        c.close()  # without QUIT
        evs = self.session_events(c, until="disconnect")
        d = [e for e in evs if e["event"] == "disconnect"][0]
        self.assertIs(d.get("utf8"), True)
        self.assertEqual(d["user"], "ζωή")

    def test_without_the_command_no_utf8_field(self):
        c = self.tls()
        c.login()
        self.assertTrue(c.cmd("QUIT").startswith(b"+OK"))
        for e in self.session_events(c):
            self.assertNotIn("utf8", e)

    def test_utf8_name_without_the_command(self):
        """The gateway does not insist on UTF8 before a UTF-8 name (it
        advertises "UTF8 USER"); the name still arrives intact, but without
        the utf8 flag."""
        c = self.tls()
        c.login("jürgen", UTF8_USERS["jürgen"])
        (auth,) = self.auths(c, 1)
        self.assertEqual(auth["user"], "jürgen")
        self.assertNotIn("utf8", auth)

    def test_invalid_utf8_is_refused_without_a_backend_call(self):
        c = self.tls()
        c.cmd("UTF8")
        for line in (b"USER j\xfcrgen",  # Latin-1, not UTF-8
                     b"USER \xc3\x28",
                     b"USER \xed\xa0\x80"):  # an encoded surrogate
            with self.subTest(line=line):
                st = c.cmd(line)
                self.assertTrue(st.startswith(b"-ERR [AUTH]"), st)
        self.assertTrue(c.cmd("USER alice").startswith(b"+OK"))
        self.assertTrue(c.cmd(b"PASS p\xe4ss").startswith(b"-ERR [AUTH]"))
        for raw in (b"\0\xff\xfe\0pw", b"\0alice\0\xc0\xaf"):  # overlong '/'
            with self.subTest(plain=raw):
                st = c.cmd("AUTH PLAIN " + base64.b64encode(raw).decode())
                self.assertTrue(st.startswith(b"-ERR [AUTH]"), st)
        self.assertEqual(self.auths(c), [])
        c.login()

    def test_utf8_only_in_authorization(self):
        c = self.tls()
        c.login()
        st = c.cmd("UTF8")
        self.assertTrue(st.startswith(b"-ERR"), st)
        self.assertTrue(c.cmd("QUIT").startswith(b"+OK"))
        for e in self.session_events(c):
            self.assertNotIn("utf8", e)

    def test_utf8_survives_stls(self):
        """UTF8 given in the clear, then STLS: the flag stays (it is a
        property of the session, not of the transport)."""
        start = len(self.backend.requests())
        c = self.connect()
        c.start = start
        self.assertTrue(c.cmd("UTF8").startswith(b"+OK"))
        c.starttls(self.ctx())
        c.login("jürgen", UTF8_USERS["jürgen"])
        self.assertTrue(c.cmd("QUIT").startswith(b"+OK"))
        evs = self.session_events(c)
        for e in evs[1:]:
            self.assertIs(e.get("utf8"), True)
            self.assertIs(e["client"]["tls"], True)
