"""The demo (`make demo` runs scripts/demo.sh): it fills a sample mailbox,
starts the reference backend and the gateway, prints how to read mail, and
stops both on Ctrl-C (SIGINT). Run on free ports with a fresh directory.

The banner's fetchmail and mpop settings are run exactly as printed (each
is skipped when the tool is not installed): the two clients that stop on a
server without TLS unless told otherwise."""

import glob
import http.client
import os
import poplib
import re
import shlex
import shutil
import signal
import subprocess
import time
import unittest

import harness

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SUBJECTS = (b"Subject: Welcome to pop3gw", b"Subject: A second message")


class DemoTests(unittest.TestCase):
    def printed(self, text, pattern):
        """The banner line (stripped) that matches pattern."""
        lines = [l.strip() for l in text.splitlines() if re.match(pattern, l.strip())]
        self.assertEqual(len(lines), 1, "one line matching %r expected:\n%s" % (pattern, text))
        return lines[0]

    def run_printed(self, command, home):
        """Runs a command line from the banner as it is, with its own HOME."""
        env = dict(os.environ, HOME=home)
        env.pop("FETCHMAILHOME", None)
        r = subprocess.run(shlex.split(command), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                           timeout=60)
        out = r.stdout.decode("utf-8", "replace")
        self.assertEqual(r.returncode, 0, "%s exited %d:\n%s" % (command, r.returncode, out))
        return out

    def assert_both_messages(self, data, what):
        for subject in SUBJECTS:
            self.assertIn(subject, data, "%s lacks %r" % (what, subject))

    def test_demo_serves_sample_mail_and_stops_on_sigint(self):
        pop3_port, backend_port, admin_port = (harness.free_port() for _ in range(3))
        demo_dir = harness.new_dir("demo")
        env = {k: v for k, v in os.environ.items() if not k.startswith("POP3GW_")}
        env.update(B=harness.build_dir(), DEMO_DIR=demo_dir, POP3_PORT=str(pop3_port),
                   BACKEND_PORT=str(backend_port), ADMIN_PORT=str(admin_port))
        out_path = os.path.join(harness.new_dir("demo-out"), "demo.out")
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(["sh", os.path.join(REPO, "scripts", "demo.sh")], env=env,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            text = ""
            while "Press Ctrl-C" not in text:
                self.assertIsNone(proc.poll(), "the demo exited early:\n" + text)
                self.assertLess(time.monotonic() - deadline, 0, "the demo did not start:\n" + text)
                time.sleep(0.1)
                with open(out_path, errors="replace") as f:
                    text = f.read()
            self.assertIn("curl -u alice:wonderland pop3://127.0.0.1:%d/1" % pop3_port, text)

            # The dashboard's URL is printed, and the page is there.
            url = self.printed(text, r"Dashboard:")
            self.assertEqual(url, "Dashboard:  http://127.0.0.1:%d/" % admin_port)
            c = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=10)
            c.request("GET", "/")
            r = c.getresponse()
            self.assertEqual((r.status, r.getheader("Content-Type", "").split(";")[0]),
                             (200, "text/html"))
            c.close()

            demo_dir = os.path.realpath(demo_dir)
            fetched = os.path.join(demo_dir, "fetched")
            with self.subTest("fetchmail"):
                if not shutil.which("fetchmail"):
                    self.skipTest("fetchmail is not installed")
                command = self.printed(text, r"fetchmail -f ")
                poll = self.printed(text, r"poll 127\.0\.0\.1 ")
                self.assertIn("sslproto ''", poll)
                with open(os.path.join(demo_dir, "fetchmailrc")) as f:
                    self.assertIn(poll + "\n", f.read())
                self.run_printed(command, harness.new_dir("fetchmail-home"))
                files = sorted(glob.glob(os.path.join(fetched, "fetchmail.*")))
                self.assertEqual(len(files), 2, files)
                data = b"".join(open(p, "rb").read() for p in files)
                self.assert_both_messages(data, "what fetchmail fetched")

            with self.subTest("mpop"):
                if not shutil.which("mpop"):
                    self.skipTest("mpop is not installed")
                command = self.printed(text, r"mpop --host=")
                self.assertIn("--auth=user", command)
                self.run_printed(command, harness.new_dir("mpop-home"))
                with open(os.path.join(fetched, "mpop.mbox"), "rb") as f:
                    mbox = f.read()
                self.assertEqual(len(re.findall(rb"^From ", mbox, re.M)), 2, mbox[:2000])
                self.assert_both_messages(mbox, "mpop's mbox")

            # Both clients kept the mail on the server.
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
