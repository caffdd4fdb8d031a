"""The demo (`make demo` runs scripts/demo.sh): it fills a sample mailbox,
starts the reference backend and the gateway, prints how to read mail, and
stops both on Ctrl-C (SIGINT). Run on free ports with a fresh directory."""

import os
import poplib
import signal
import subprocess
import time
import unittest

import harness

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


class DemoTests(unittest.TestCase):
    def test_demo_serves_sample_mail_and_stops_on_sigint(self):
        pop3_port, backend_port, admin_port = (harness.free_port() for _ in range(3))
        demo_dir = harness.new_dir("demo")
        env = {k: v for k, v in os.environ.items() if not k.startswith("POP3GW_")}
        env.update(B=harness.build_dir(), DEMO_DIR=demo_dir, POP3_PORT=str(pop3_port),
                   BACKEND_PORT=str(backend_port), ADMIN_PORT=str(admin_port))
        out_path = os.path.join(demo_dir, "demo.out")
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(["sh", os.path.join(REPO, "scripts", "demo.sh")], env=env,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            text = ""
            while "Press Ctrl-C" not in text:
                self.assertIsNone(proc.poll(), "the demo exited early:\n" + text)
                self.assertLess(time.monotonic(), deadline, "the demo did not start:\n" + text)
                time.sleep(0.1)
                with open(out_path, errors="replace") as f:
                    text = f.read()
            self.assertIn("curl -u alice:wonderland pop3://127.0.0.1:%d/1" % pop3_port, text)

            p = poplib.POP3("127.0.0.1", pop3_port, timeout=10)
            p.user("alice")
            p.pass_("wonderland")
            count, _ = p.stat()
            self.assertEqual(count, 2)
            _, lines, _ = p.retr(1)
            self.assertIn(b"Subject: Welcome to pop3gw", lines)
            p.quit()

            os.killpg(proc.pid, signal.SIGINT)
            self.assertEqual(proc.wait(timeout=15), 0)
            with open(out_path, errors="replace") as f:
                self.assertIn("demo stopped", f.read())
            # Both servers are gone: the port refuses connections.
            with self.assertRaises(OSError):
                poplib.POP3("127.0.0.1", pop3_port, timeout=2)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


if __name__ == "__main__":
    unittest.main()
