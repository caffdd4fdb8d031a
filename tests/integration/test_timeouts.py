"""Login timeout: a client that never logs in is disconnected."""

import socket
import time

from harness import Raw, StackTestCase, upper


class LoginTimeoutTests(StackTestCase):
    GATEWAY_ARGS = {"login_timeout": "1"}

    def test_silent_client_disconnected(self):
        r = Raw(self.gw.port, timeout=10)
        self.addCleanup(r.close)
        t0 = time.monotonic()
        try:
            rest = r.expect_eof(timeout=upper(6))
        except socket.timeout:
            self.fail("still connected %.1fs after the greeting with login_timeout=1"
                      % (time.monotonic() - t0))
        elapsed = time.monotonic() - t0
        self.assertGreater(elapsed, 0.5, "closed too early")
        # An optional -ERR line before the close is fine; nothing else.
        self.assertTrue(rest == b"" or rest.startswith(b"-ERR"), rest)

    def test_partial_login_disconnected(self):
        r = Raw(self.gw.port, timeout=10)
        self.addCleanup(r.close)
        self.assertTrue(r.cmd("USER alice").startswith(b"+OK"))
        r.send("PA")  # half a command does not reset the login timer
        try:
            rest = r.expect_eof(timeout=upper(6))
        except socket.timeout:
            self.fail("a half-logged-in client was kept past login_timeout")
        self.assertTrue(rest == b"" or rest.startswith(b"-ERR"), rest)

    def test_logged_in_client_not_cut_by_login_timeout(self):
        r = Raw(self.gw.port, timeout=10)
        self.addCleanup(r.close)
        r.login()
        # Idle for longer than login_timeout: idle_timeout applies now.
        self.assertEqual(r.pending(2.5), b"")
        self.assertFalse(r.eof, "closed a logged-in session after login_timeout")
        self.assertTrue(r.cmd("NOOP").startswith(b"+OK"))
        self.assertTrue(r.cmd("QUIT").startswith(b"+OK"))
