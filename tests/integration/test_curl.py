"""curl as a POP3 client."""

import shutil
import subprocess
import unittest

from harness import HOST, StackTestCase

CURL = shutil.which("curl")


@unittest.skipUnless(CURL, "curl is not installed")
class CurlTests(StackTestCase):

    def curl(self, path, *extra, user="alice:secret1"):
        url = "pop3://%s@%s:%d/%s" % (user, HOST, self.gw.port, path)
        res = subprocess.run([CURL, "-sS", "--max-time", "20", *extra, url],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        return res

    def test_retr_each_message(self):
        for i, m in enumerate(self.msgs()):
            res = self.curl(str(i + 1))
            self.assertEqual(res.returncode, 0, res.stderr)
            self.assertEqual(res.stdout, m.expected, "message %d" % (i + 1))

    def test_list(self):
        res = self.curl("")
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(res.stdout, b"".join(b"%d %d\r\n" % (i + 1, m.size)
                                              for i, m in enumerate(self.msgs())))

    def test_uidl_and_top(self):
        res = self.curl("", "-X", "UIDL")
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(res.stdout, b"".join(b"%d %s\r\n" % (i + 1, m.uid.encode())
                                              for i, m in enumerate(self.msgs())))
        res = self.curl("", "-X", "TOP 2 1")
        self.assertEqual(res.returncode, 0, res.stderr)
        m = self.msgs()[1].expected
        head = m[:m.index(b"\r\n\r\n") + 4]
        self.assertEqual(res.stdout, head + b".leading dot line\r\n")

    def test_password_with_spaces(self):
        res = self.curl("1", user="bob:pass%20word%202")
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(res.stdout, self.msgs("bob")[0].expected)

    def test_wrong_password(self):
        res = self.curl("1", user="alice:nope")
        self.assertNotEqual(res.returncode, 0)
        self.assertEqual(res.stdout, b"")
