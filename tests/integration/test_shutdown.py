"""SIGTERM: the gateway exits 0, and open sessions end without deleting."""

import signal
import socket
import time

from harness import Raw, StackTestCase, STOP_DEADLINE, upper


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


class SecondInstanceTests(StackTestCase):
    """A second gateway started by mistake on a port the first one holds
    must fail to bind and say so (no SO_REUSEPORT), and the first one goes
    on serving every client."""

    def test_second_instance_on_same_port_fails(self):
        import subprocess
        argv = [self.gw.exe] + ["--%s=%s" % (k, v) for k, v in self.gw.opts.items()
                                if v is not None and k not in ("listen", "admin_listen")]
        argv += ["--listen=127.0.0.1:%d" % self.gw.port, "--admin_listen="]
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=upper(10))
        err = p.stdout.decode() + p.stderr.decode()
        self.assertNotEqual(p.returncode, 0, "a second instance started on the same port:\n" + err)
        self.assertIn("address in use", err)
        self.assertIn("port=%d" % self.gw.port, err)
        # The first one still answers, every time.
        for _ in range(5):
            r = Raw(self.gw.port)
            r.login()
            self.assertTrue(r.cmd("STAT").startswith(b"+OK"))
            r.cmd("QUIT")
            r.close()
