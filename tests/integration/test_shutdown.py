"""SIGTERM: the gateway exits 0, and open sessions end without deleting."""

import signal
import socket
import time

from harness import Raw, StackTestCase, STOP_DEADLINE


class ShutdownTests(StackTestCase):
    SHARED = False
    GATEWAY_ARGS = {"shutdown_grace": "2"}

    def test_sigterm_idle_exits_zero(self):
        p = Raw(self.gw.port)
        p.login()
        p.cmd("QUIT")
        p.close()
        self.gw.stop_clean()

    def test_sigterm_with_open_session(self):
        msgs = self.msgs()
        start = len(self.backend.requests())
        r = Raw(self.gw.port, timeout=15)
        self.addCleanup(r.close)
        r.login()
        self.assertTrue(r.cmd("DELE 1").startswith(b"+OK"))
        t0 = time.monotonic()
        self.gw.proc.send_signal(signal.SIGTERM)
        try:
            r.expect_eof(timeout=2 + 8)  # grace 2 s, then the session is closed
        except socket.timeout:
            self.fail("session still open %.1fs after SIGTERM" % (time.monotonic() - t0))
        except ConnectionResetError:
            pass
        rc = self.gw.proc.wait(timeout=STOP_DEADLINE)
        self.assertEqual(rc, 0, "gateway exit status after SIGTERM")
        self.assertEqual(self.root.uids_on_disk("alice"), sorted(m.uid for m in msgs))
        self.assertFalse([q for q in self.backend.requests()[start:] if q["event"] == "quit"])
