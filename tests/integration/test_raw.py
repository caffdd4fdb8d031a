"""The wire protocol on a bare socket: pipelining, split commands, line
length limits, argument checking and state checks."""

import socket

from harness import Raw, StackTestCase


class RawProtocolTests(StackTestCase):
    # Many deliberate -ERRs in one connection: keep the bad-command cap high.
    GATEWAY_ARGS = {"max_bad_commands": "1000"}

    def raw(self):
        r = Raw(self.gw.port)
        self.addCleanup(r.close)
        return r

    def test_pipelining(self):
        msgs = self.msgs()
        r = self.raw()
        r.login()
        r.send("CAPA\r\nSTAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nNOOP\r\n")
        st = r.status()
        self.assertTrue(st.startswith(b"+OK"), st)
        caps = r.body().split(b"\r\n")
        self.assertIn(b"PIPELINING", caps)
        st = r.status()
        self.assertEqual(st, b"+OK %d %d\r\n" % (len(msgs), sum(m.size for m in msgs)))
        st = r.status()
        self.assertTrue(st.startswith(b"+OK"), st)
        self.assertEqual(r.body(), b"".join(b"%d %d\r\n" % (i + 1, m.size)
                                            for i, m in enumerate(msgs)))
        st = r.status()
        self.assertTrue(st.startswith(b"+OK"), st)
        self.assertEqual(r.body(), b"".join(b"%d %s\r\n" % (i + 1, m.uid.encode())
                                            for i, m in enumerate(msgs)))
        st = r.status()
        self.assertTrue(st.startswith(b"+OK"), st)
        self.assertEqual(r.body(), msgs[0].expected)
        self.assertTrue(r.status().startswith(b"+OK"))
        self.assertEqual(r.pending(), b"")

    def test_pipelined_login_and_retrieves(self):
        """The whole session in one write, including the login that waits on
        the backend: the gateway must keep the rest queued, in order."""
        msgs = self.msgs()
        r = self.raw()
        cmds = "USER alice\r\nPASS secret1\r\n" + "".join(
            "RETR %d\r\n" % (i + 1) for i in range(len(msgs))) + "QUIT\r\n"
        r.send(cmds)
        self.assertTrue(r.status().startswith(b"+OK"))
        self.assertTrue(r.status().startswith(b"+OK"))
        for m in msgs:
            self.assertTrue(r.status().startswith(b"+OK"))
            self.assertEqual(r.body(), m.expected)
        self.assertTrue(r.status().startswith(b"+OK"))
        self.assertEqual(r.expect_eof(), b"")

    def test_command_split_across_writes(self):
        msgs = self.msgs()
        r = self.raw()
        r.login()
        r.send("ST")
        self.assertEqual(r.pending(0.2), b"", "replied to half a command")
        r.send("AT\r\n")
        self.assertEqual(r.status(), b"+OK %d %d\r\n" % (len(msgs), sum(m.size for m in msgs)))
        # CR and LF in separate writes, byte by byte.
        for ch in b"LIST 2\r\n":
            r.send(bytes([ch]))
        self.assertEqual(r.status(), b"+OK 2 %d\r\n" % msgs[1].size)

    def test_255_octet_line_accepted(self):
        # PASS with a 248-character password: 255 octets with CRLF. The whole
        # password must reach the backend.
        pw = "p" * 248
        line = "PASS " + pw + "\r\n"
        self.assertEqual(len(line), 255)
        start = len(self.backend.requests())
        r = self.raw()
        self.assertTrue(r.cmd("USER alice").startswith(b"+OK"))
        r.send(line)
        st = r.status()
        self.assertTrue(st.startswith(b"-ERR [AUTH]"), st)
        reqs = self.backend.wait_requests(
            lambda rs: any(q["event"] == "authenticate" for q in rs), start=start)
        auth = [q for q in reqs if q["event"] == "authenticate"]
        self.assertEqual(len(auth), 1, auth)
        self.assertEqual(auth[0]["password"], pw)
        # The connection survives and a good login follows.
        r.login()
        self.assertTrue(r.cmd("NOOP").startswith(b"+OK"))

    def test_255_octet_user_line(self):
        r = self.raw()
        st = r.cmd("USER " + "u" * 248)
        self.assertTrue(st.startswith(b"+OK") or st.startswith(b"-ERR"), st)
        self.assertEqual(r.pending(0.2), b"")
        r.login()
        self.assertTrue(r.cmd("NOOP").startswith(b"+OK"))

    def test_overlong_line_single_error(self):
        msgs = self.msgs()
        r = self.raw()
        r.login()
        long_line = b"NOOP " + b"a" * (300 - 7) + b"\r\n"
        self.assertEqual(len(long_line), 300)
        r.send(long_line + b"STAT\r\n")
        st = r.status()
        self.assertTrue(st.startswith(b"-ERR"), st)
        st = r.status()
        self.assertEqual(st, b"+OK %d %d\r\n" % (len(msgs), sum(m.size for m in msgs)),
                         "the long line was answered more than once")
        self.assertTrue(r.cmd("NOOP").startswith(b"+OK"))
        self.assertEqual(r.pending(), b"")

    def test_overlong_line_tail_not_run(self):
        # If the gateway split the line at 255 octets, the tail "DELE 1"
        # would run as a command and STAT would count one message less.
        msgs = self.msgs()
        r = self.raw()
        r.login()
        pad = b"NOOP " + b"x" * (255 - 5 - 1)
        r.send(pad + b" DELE 1\r\nSTAT\r\n")
        self.assertTrue(r.status().startswith(b"-ERR"))
        self.assertEqual(r.status(), b"+OK %d %d\r\n" % (len(msgs), sum(m.size for m in msgs)))
        self.assertTrue(r.cmd("RSET").startswith(b"+OK"))

    def test_huge_line_bounded(self):
        """100 KB without a line end: -ERR or a close, never a hang."""
        r = self.raw()
        try:
            r.send(b"X" * 100000 + b"\r\n")
            st = r.status()
            self.assertTrue(st.startswith(b"-ERR"), st)
        except (EOFError, ConnectionResetError, BrokenPipeError):
            pass  # closing is allowed
        # The gateway still serves other clients.
        r2 = self.raw()
        r2.login()
        self.assertTrue(r2.cmd("NOOP").startswith(b"+OK"))

    def test_lower_case_commands(self):
        msgs = self.msgs()
        r = self.raw()
        self.assertTrue(r.cmd("user alice").startswith(b"+OK"))
        self.assertTrue(r.cmd("pass secret1").startswith(b"+OK"))
        self.assertEqual(r.cmd("stat"), b"+OK %d %d\r\n" % (len(msgs), sum(m.size for m in msgs)))
        self.assertEqual(r.cmd("LiSt 1"), b"+OK 1 %d\r\n" % msgs[0].size)
        st, body = r.multi("retr 1")
        self.assertEqual(body, msgs[0].expected)
        st, body = r.multi("uidl")
        self.assertTrue(st.startswith(b"+OK"))
        self.assertTrue(r.cmd("noop").startswith(b"+OK"))
        self.assertTrue(r.cmd("quit").startswith(b"+OK"))

    def test_unknown_command(self):
        r = self.raw()
        self.assertTrue(r.cmd("FOO").startswith(b"-ERR"))
        r.login()
        self.assertTrue(r.cmd("BAR baz").startswith(b"-ERR"))
        self.assertTrue(r.cmd("NOOP").startswith(b"+OK"))

    def test_state_checks(self):
        r = self.raw()
        for c in ("STAT", "LIST", "RETR 1", "DELE 1", "UIDL", "TOP 1 0", "RSET", "NOOP"):
            self.assertTrue(r.cmd(c).startswith(b"-ERR"), "%s before login" % c)
        self.assertTrue(r.cmd("PASS secret1").startswith(b"-ERR"), "PASS without USER")
        r.login()
        for c in ("USER alice", "PASS secret1", "APOP alice 0123456789abcdef0123456789abcdef"):
            self.assertTrue(r.cmd(c).startswith(b"-ERR"), "%s after login" % c)
        self.assertTrue(r.cmd("NOOP").startswith(b"+OK"))

    def test_bad_arguments(self):
        r = self.raw()
        r.login()
        for c in ("RETR 0", "RETR 99", "RETR abc", "RETR 1 2", "RETR", "RETR -1", "RETR +1",
                  "RETR 1x", "LIST  1", "LIST 0", "LIST 99", "LIST 1 2", "DELE 0", "DELE 99",
                  "DELE abc", "UIDL 0", "UIDL 99", "RETR 99999999999999999999999"):
            st = r.cmd(c)
            self.assertTrue(st.startswith(b"-ERR"), "%r gave %r" % (c, st))
        # Nothing was marked deleted by any of that.
        msgs = self.msgs()
        self.assertEqual(r.cmd("STAT"), b"+OK %d %d\r\n" % (len(msgs), sum(m.size for m in msgs)))

    def test_quit_in_authorization(self):
        r = self.raw()
        self.assertTrue(r.cmd("QUIT").startswith(b"+OK"))
        self.assertEqual(r.expect_eof(), b"")

    def test_quit_in_transaction_closes(self):
        r = self.raw()
        r.login()
        self.assertTrue(r.cmd("QUIT").startswith(b"+OK"))
        self.assertEqual(r.expect_eof(), b"")

    def test_pipelined_batch_then_half_close(self):
        """A client that writes its whole session and shuts down its sending
        side (`printf ... | nc -N`) still gets every reply, then the close."""
        msgs = self.msgs()
        r = self.raw()
        r.send("USER alice\r\nPASS secret1\r\nSTAT\r\nRETR 1\r\nQUIT\r\n")
        r.sock.shutdown(socket.SHUT_WR)
        self.assertTrue(r.status().startswith(b"+OK"), "USER")
        self.assertTrue(r.status().startswith(b"+OK"), "PASS")
        self.assertEqual(r.status(), b"+OK %d %d\r\n" % (len(msgs), sum(m.size for m in msgs)))
        self.assertTrue(r.status().startswith(b"+OK"), "RETR")
        self.assertEqual(r.body(), msgs[0].expected)
        self.assertTrue(r.status().startswith(b"+OK"), "QUIT")
        self.assertEqual(r.expect_eof(), b"")
