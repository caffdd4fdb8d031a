"""RFC 5034 AUTH with the mechanisms the gateway advertises: PLAIN, LOGIN,
XOAUTH2 and OAUTHBEARER, passed to the backend."""

import base64

from harness import TOKENS, Raw, StackTestCase


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


class SaslTests(StackTestCase):
    GATEWAY_ARGS = {"max_bad_commands": "1000"}

    def raw(self):
        r = Raw(self.gw.port)
        self.addCleanup(r.close)
        return r

    def last_auth(self, start):
        reqs = self.backend.wait_requests(
            lambda rs: any(q["event"] == "authenticate" for q in rs), start=start)
        return [q for q in reqs if q["event"] == "authenticate"][-1]

    def assert_logged_in(self, r, user="alice"):
        msgs = self.msgs(user)
        self.assertEqual(r.cmd("STAT"), b"+OK %d %d\r\n" % (len(msgs), sum(m.size for m in msgs)))

    def test_capa_lists_sasl(self):
        r = self.raw()
        st, body = r.multi("CAPA")
        caps = body.split(b"\r\n")
        sasl = [c for c in caps if c.startswith(b"SASL ")]
        self.assertEqual(len(sasl), 1, caps)
        for mech in (b"PLAIN", b"LOGIN", b"XOAUTH2", b"OAUTHBEARER"):
            self.assertIn(mech, sasl[0].split())

    def test_bare_auth_lists_mechanisms(self):
        r = self.raw()
        st, body = r.multi("AUTH")
        self.assertTrue(st.startswith(b"+OK"), st)
        self.assertIn(b"PLAIN", body.split(b"\r\n"))

    def test_plain_initial_response(self):
        start = len(self.backend.requests())
        r = self.raw()
        st = r.cmd("AUTH PLAIN " + b64("\0alice\0secret1"))
        self.assertTrue(st.startswith(b"+OK"), st)
        self.assert_logged_in(r)
        auth = self.last_auth(start)
        self.assertEqual(auth["method"], "PLAIN")
        self.assertEqual(auth["user"], "alice")
        self.assertEqual(auth["password"], "secret1")
        self.assertNotIn("authzid", auth)

    def test_plain_continuation(self):
        r = self.raw()
        st = r.step("AUTH PLAIN")
        self.assertTrue(st.startswith(b"+"), st)
        self.assertFalse(st.startswith(b"+OK"), st)
        st = r.step(b64("\0bob\0pass word 2"))
        self.assertTrue(st.startswith(b"+OK"), st)
        self.assert_logged_in(r, "bob")

    def test_plain_wrong_password(self):
        r = self.raw()
        st = r.cmd("AUTH PLAIN " + b64("\0alice\0nope"))
        self.assertTrue(st.startswith(b"-ERR [AUTH]"), st)
        r.login()

    def test_login_mechanism(self):
        start = len(self.backend.requests())
        r = self.raw()
        st = r.step("AUTH LOGIN")
        self.assertEqual(st, b"+ VXNlcm5hbWU6\r\n")
        st = r.step(b64("alice"))
        self.assertEqual(st, b"+ UGFzc3dvcmQ6\r\n")
        st = r.step(b64("secret1"))
        self.assertTrue(st.startswith(b"+OK"), st)
        self.assert_logged_in(r)
        self.assertEqual(self.last_auth(start)["method"], "LOGIN")

    def test_cancel(self):
        r = self.raw()
        self.assertTrue(r.step("AUTH PLAIN").startswith(b"+ "))
        self.assertTrue(r.step("*").startswith(b"-ERR"))
        # Still in AUTHORIZATION, and usable.
        self.assertTrue(r.cmd("STAT").startswith(b"-ERR"))
        r.login()

    def test_bad_base64_and_unknown_mechanism(self):
        r = self.raw()
        self.assertTrue(r.cmd("AUTH PLAIN !!!notbase64").startswith(b"-ERR"))
        self.assertTrue(r.cmd("AUTH CRAM-MD5").startswith(b"-ERR"))
        self.assertTrue(r.cmd("AUTH NOSUCHMECH").startswith(b"-ERR"))
        r.login()

    def test_auth_after_login(self):
        r = self.raw()
        r.login()
        self.assertTrue(r.cmd("AUTH PLAIN " + b64("\0alice\0secret1")).startswith(b"-ERR"))
        self.assertTrue(r.cmd("NOOP").startswith(b"+OK"))

    def test_xoauth2(self):
        start = len(self.backend.requests())
        r = self.raw()
        tok = TOKENS["carol"]
        st = r.cmd("AUTH XOAUTH2 " + b64("user=carol\x01auth=Bearer %s\x01\x01" % tok))
        self.assertTrue(st.startswith(b"+OK"), st)
        self.assert_logged_in(r, "carol")
        auth = self.last_auth(start)
        self.assertEqual(auth["method"], "XOAUTH2")
        self.assertEqual(auth["token"], tok)
        self.assertEqual(auth["user"], "carol")

    def test_xoauth2_failure_dance(self):
        r = self.raw()
        st = r.step("AUTH XOAUTH2 " + b64("user=carol\x01auth=Bearer wrong\x01\x01"))
        # A base64 JSON challenge; the client answers an empty line; then -ERR.
        self.assertTrue(st.startswith(b"+ "), st)
        base64.b64decode(st[2:].strip(), validate=True)
        st = r.step("")
        self.assertTrue(st.startswith(b"-ERR"), st)
        r.login()

    def test_oauthbearer(self):
        start = len(self.backend.requests())
        r = self.raw()
        tok = TOKENS["carol"]
        st = r.cmd("AUTH OAUTHBEARER " + b64("n,a=carol,\x01auth=Bearer %s\x01\x01" % tok))
        self.assertTrue(st.startswith(b"+OK"), st)
        self.assert_logged_in(r, "carol")
        auth = self.last_auth(start)
        self.assertEqual(auth["method"], "OAUTHBEARER")
        self.assertEqual(auth["token"], tok)

    def test_long_token_in_continuation(self):
        """A 4 KB token: the continuation line is far past 255 octets."""
        start = len(self.backend.requests())
        r = self.raw()
        tok = TOKENS["dave"]
        self.assertTrue(r.step("AUTH XOAUTH2").startswith(b"+ "))
        st = r.step(b64("user=dave\x01auth=Bearer %s\x01\x01" % tok))
        self.assertTrue(st.startswith(b"+OK"), st)
        self.assert_logged_in(r, "dave")
        self.assertEqual(self.last_auth(start)["token"], tok)
