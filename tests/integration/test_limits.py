"""Per-connection limits: bad commands and failed logins close the
connection once their cap is reached."""

import socket

from harness import Raw, StackTestCase, login


class LimitTests(StackTestCase):
    GATEWAY_ARGS = {"max_bad_commands": "5", "max_auth_failures": "2"}

    def raw(self):
        r = Raw(self.gw.port)
        self.addCleanup(r.close)
        return r

    def count_until_close(self, r, command, most):
        """Sends `command` up to `most` times; returns how many got a reply
        before the gateway closed the connection (None if it never did)."""
        for i in range(most):
            try:
                st = r.cmd(command)
            except (EOFError, ConnectionResetError, BrokenPipeError):
                return i
            self.assertTrue(st.startswith(b"-ERR"), st)
        try:
            r.expect_eof(timeout=2)
            return most
        except socket.timeout:
            return None

    def test_bad_commands_close(self):
        r = self.raw()
        n = self.count_until_close(r, "FOO", 8)
        self.assertIsNotNone(n, "still open after 8 bad commands with max_bad_commands=5")
        self.assertIn(n, (5, 6), "closed after %s bad commands, max_bad_commands=5" % n)

    def test_good_commands_do_not_count(self):
        r = self.raw()
        for _ in range(4):
            self.assertTrue(r.cmd("FOO").startswith(b"-ERR"))
        r.login()
        for _ in range(20):
            self.assertTrue(r.cmd("NOOP").startswith(b"+OK"))

    def test_auth_failures_close(self):
        r = self.raw()
        self.assertTrue(r.cmd("USER alice").startswith(b"+OK"))
        self.assertTrue(r.cmd("PASS bad1").startswith(b"-ERR [AUTH]"))
        # The second failure reaches the cap: -ERR, then the close.
        self.assertTrue(r.cmd("USER alice").startswith(b"+OK"))
        try:
            st = r.cmd("PASS bad2")
            self.assertTrue(st.startswith(b"-ERR [AUTH]"), st)
            r.expect_eof(timeout=3)
        except socket.timeout:
            self.fail("connection still open after max_auth_failures=2 failed logins")
        except (EOFError, ConnectionResetError):
            pass
        # Other connections are unaffected.
        p = login(self.gw)
        self.assertTrue(p.quit().startswith(b"+OK"))
