"""RFC 1939 basics through poplib and a strict raw client, on one shared
backend and gateway (nothing here deletes)."""

import hashlib
import poplib
import re

from harness import Raw, StackTestCase, dot_stuff, lines_of, login, pop, top_lines


class BasicTests(StackTestCase):

    def test_greeting_has_apop_timestamp(self):
        p = pop(self.gw)
        try:
            welcome = p.getwelcome()
            self.assertTrue(welcome.startswith(b"+OK"), welcome)
            m = re.search(rb"<[^<>@\s]+@test\.local>", welcome)
            self.assertIsNotNone(m, "no <timestamp@test.local> in %r" % welcome)
        finally:
            p.quit()
        p2 = pop(self.gw)
        try:
            self.assertNotEqual(re.search(rb"<[^>]*>", p2.getwelcome()).group(0), m.group(0),
                                "APOP timestamp repeated across greetings")
        finally:
            p2.quit()

    def test_capa(self):
        for logged_in in (False, True):
            p = login(self.gw) if logged_in else pop(self.gw)
            try:
                caps = p.capa()
                # UTF8 too in both states: RFC 6856, RFC 2449 section 5.
                for cap in ("TOP", "UIDL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE",
                            "UTF8", "IMPLEMENTATION"):
                    self.assertIn(cap, caps, "CAPA (logged in: %s) lacks %s: %r"
                                  % (logged_in, cap, caps))
                if not logged_in:
                    self.assertIn("USER", caps, caps)
                else:  # USER and SASL belong to AUTHORIZATION only
                    self.assertNotIn("USER", caps, caps)
                    self.assertNotIn("SASL", caps, caps)
                # No certificate is configured, so STLS must not be offered.
                self.assertNotIn("STLS", caps, caps)
            finally:
                p.quit()

    def test_stat_list_uidl(self):
        msgs = self.msgs()
        p = login(self.gw)
        try:
            count, octets = p.stat()
            self.assertEqual(count, len(msgs))
            self.assertEqual(octets, sum(m.size for m in msgs))
            resp, listing, _ = p.list()
            self.assertTrue(resp.startswith(b"+OK"), resp)
            self.assertEqual(listing, [b"%d %d" % (i + 1, m.size) for i, m in enumerate(msgs)])
            for i, m in enumerate(msgs):
                self.assertEqual(p.list(i + 1), b"+OK %d %d" % (i + 1, m.size))
            resp, uidls, _ = p.uidl()
            self.assertEqual(uidls, [b"%d %s" % (i + 1, m.uid.encode())
                                     for i, m in enumerate(msgs)])
            for i, m in enumerate(msgs):
                self.assertEqual(p.uidl(i + 1), b"+OK %d %s" % (i + 1, m.uid.encode()))
        finally:
            p.quit()

    def test_retr_each_message_exact(self):
        msgs = self.msgs()
        p = login(self.gw)
        try:
            for i, m in enumerate(msgs):
                resp, lines, octets = p.retr(i + 1)
                self.assertTrue(resp.startswith(b"+OK"), resp)
                got = b"\r\n".join(lines) + b"\r\n"
                self.assertEqual(got, m.expected, "message %d (%s) differs" % (i + 1, m.uid))
        finally:
            p.quit()

    def test_retr_wire_bytes(self):
        """The bytes on the wire: CRLF everywhere, dot-stuffed, terminated."""
        msgs = self.msgs()
        r = Raw(self.gw.port)
        try:
            r.login()
            for i, m in enumerate(msgs):
                st = r.cmd("RETR %d" % (i + 1))
                self.assertTrue(st.startswith(b"+OK"), st)
                want = dot_stuff(m.expected) + b".\r\n"
                got = b""
                while len(got) < len(want):
                    got += r.line()
                self.assertEqual(got, want, "message %d on the wire" % (i + 1))
            self.assertTrue(r.cmd("QUIT").startswith(b"+OK"))
        finally:
            r.close()

    def test_top(self):
        msgs = self.msgs()
        p = login(self.gw)
        try:
            for i, m in enumerate(msgs):
                for n in (0, 2, 1000):
                    resp, lines, _ = p.top(i + 1, n)
                    self.assertTrue(resp.startswith(b"+OK"), resp)
                    self.assertEqual(lines, top_lines(m.expected, n),
                                     "TOP %d %d" % (i + 1, n))
                    if n == 1000:
                        self.assertEqual(lines, lines_of(m.expected))
        finally:
            p.quit()

    def test_top_wire_is_stuffed(self):
        # Message 2 starts its body with dot lines; TOP 2 3 cuts after three.
        r = Raw(self.gw.port)
        try:
            r.login()
            st, body = r.multi("TOP 2 3")
            self.assertTrue(st.startswith(b"+OK"), st)
            want = b"\r\n".join(top_lines(self.msgs()[1].expected, 3)) + b"\r\n"
            self.assertEqual(body, want)
            r.cmd("QUIT")
        finally:
            r.close()

    def test_top_needs_both_arguments(self):
        r = Raw(self.gw.port)
        try:
            r.login()
            for bad in ("TOP 1", "TOP", "TOP 1 -1", "TOP 1 x", "TOP 99 0", "TOP 0 0"):
                self.assertTrue(r.cmd(bad).startswith(b"-ERR"), bad)
            self.assertTrue(r.cmd("NOOP").startswith(b"+OK"))
            r.cmd("QUIT")
        finally:
            r.close()

    def test_noop_rset_quit(self):
        p = login(self.gw)
        self.assertTrue(p.noop().startswith(b"+OK"))
        self.assertTrue(p.rset().startswith(b"+OK"))
        self.assertEqual(p.stat()[0], len(self.msgs()))
        self.assertTrue(p.quit().startswith(b"+OK"))

    def test_quit_is_sent_to_backend(self):
        start = len(self.backend.requests())
        p = login(self.gw)
        p.stat()
        self.assertTrue(p.quit().startswith(b"+OK"))
        reqs = self.session_requests(start)
        events = [r["event"] for r in reqs]
        self.assertEqual(events, ["authenticate", "list", "quit"], reqs)
        self.assertEqual(reqs[-1].get("deleted"), [], reqs[-1])
        self.assertEqual(reqs[0]["method"], "USER")
        self.assertEqual(reqs[0]["password"], "secret1")
        self.assertEqual(reqs[0]["user"], "alice")
        self.assertEqual(reqs[0].get("client", {}).get("ip"), "127.0.0.1", reqs[0])
        for r in reqs:
            self.assertEqual(r["_path"], "/" + r["event"], r)

    def test_apop(self):
        start = len(self.backend.requests())
        p = pop(self.gw)
        ts = re.search(rb"<[^>]*>", p.getwelcome()).group(0).decode()
        resp = p.apop("alice", "secret1")
        self.assertTrue(resp.startswith(b"+OK"), resp)
        self.assertEqual(p.stat()[0], len(self.msgs()))
        p.quit()
        auth = [r for r in self.backend.requests()[start:] if r["event"] == "authenticate"]
        self.assertEqual(len(auth), 1, auth)
        self.assertEqual(auth[0]["method"], "APOP")
        self.assertEqual(auth[0]["apop"]["timestamp"], ts)
        self.assertEqual(auth[0]["apop"]["digest"],
                         hashlib.md5((ts + "secret1").encode()).hexdigest())
        self.assertNotIn("password", auth[0])

    def test_apop_wrong_secret(self):
        p = pop(self.gw)
        try:
            self.assertErr(p.apop, "alice", "wrong", code="AUTH")
        finally:
            p.quit()

    def test_password_with_spaces(self):
        start = len(self.backend.requests())
        p = login(self.gw, "bob", "pass word 2")
        try:
            count, octets = p.stat()
            self.assertEqual(count, len(self.msgs("bob")))
            self.assertEqual(octets, sum(m.size for m in self.msgs("bob")))
            resp, lines, _ = p.retr(2)
            self.assertEqual(b"\r\n".join(lines) + b"\r\n", self.msgs("bob")[1].expected)
        finally:
            p.quit()
        auth = [r for r in self.backend.requests()[start:] if r["event"] == "authenticate"]
        self.assertEqual(auth[0]["password"], "pass word 2")

    def test_wrong_password(self):
        p = pop(self.gw)
        try:
            p.user("alice")
            self.assertErr(p.pass_, "secret2", code="AUTH")
            # The connection stays usable: a second attempt succeeds.
            p.user("alice")
            self.assertTrue(p.pass_("secret1").startswith(b"+OK"))
            self.assertEqual(p.stat()[0], len(self.msgs()))
        finally:
            p.quit()

    def test_unknown_user(self):
        p = pop(self.gw)
        try:
            try:
                p.user("nobody")
            except poplib.error_proto as e:  # rejecting at USER is allowed too
                self.assertTrue(e.args[0].startswith(b"-ERR"), e.args[0])
                return
            self.assertErr(p.pass_, "secret1", code="AUTH")
        finally:
            p.quit()

    def test_password_is_not_logged(self):
        p = login(self.gw, "bob", "pass word 2")
        p.quit()
        self.assertNotIn("pass word 2", self.gw.log())


class EmptyMailboxTests(StackTestCase):
    """A user with no messages (its own stack: a backend that fails on an
    empty listing must not take the other tests down with it)."""

    def test_empty_mailbox(self):
        start = len(self.backend.requests())
        p = login(self.gw, "erin")
        try:
            self.assertEqual(p.stat(), (0, 0))
            resp, listing, _ = p.list()
            self.assertTrue(resp.startswith(b"+OK"), resp)
            self.assertEqual(listing, [])
            resp, uidls, _ = p.uidl()
            self.assertEqual(uidls, [])
            self.assertErr(p.retr, 1)
            self.assertErr(p.list, 1)
            self.assertErr(p.dele, 1)
        finally:
            self.assertTrue(p.quit().startswith(b"+OK"))
        events = [r["event"] for r in self.session_requests(start)]
        self.assertEqual(events, ["authenticate", "list", "quit"])
