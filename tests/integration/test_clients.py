"""Real mail clients against the gateway: fetchmail and mpop (skipped when
not installed). Both use plaintext USER/PASS, allowed for loopback clients."""

import getpass
import os
import shutil
import stat
import subprocess
import unittest

from harness import HOST, StackTestCase, new_dir

FETCHMAIL = shutil.which("fetchmail")
MPOP = shutil.which("mpop")


def body_lines(expected):
    """Body lines of a CRLF message (after the first blank line)."""
    head, _, body = expected.partition(b"\r\n\r\n")
    return body[:-2].split(b"\r\n") if body else []


def contains_block(lines, block):
    n = len(block)
    return any(lines[i:i + n] == block for i in range(len(lines) - n + 1))


class ClientTestMixin:

    def check_delivered(self, files, tool):
        """Each stored message arrived once, with its body lines intact."""
        msgs = self.msgs()
        self.assertEqual(len(files), len(msgs),
                         "%s delivered %d messages, want %d" % (tool, len(files), len(msgs)))
        outputs = []
        for path in files:
            with open(path, "rb") as f:
                outputs.append(f.read().replace(b"\r\n", b"\n").split(b"\n"))
        used = set()
        for m in msgs:
            subject = [l for l in m.expected.split(b"\r\n") if l.startswith(b"Subject:")][0]
            block = body_lines(m.expected)
            match = [i for i, lines in enumerate(outputs)
                     if subject in lines and contains_block(lines, block)]
            self.assertTrue(match, "%s: no delivered file holds the body of %s (%r)"
                            % (tool, m.uid, subject))
            self.assertNotIn(match[0], used)
            used.add(match[0])

    def run_tool(self, argv, env, timeout=60):
        res = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, env=env, timeout=timeout)
        return res.returncode, res.stdout.decode("utf-8", "replace")


@unittest.skipUnless(FETCHMAIL, "fetchmail is not installed")
class FetchmailTests(ClientTestMixin, StackTestCase):

    def test_fetchmail_keep(self):
        work = new_dir("fetchmail")
        out = os.path.join(work, "out")
        os.mkdir(out)
        mda = os.path.join(work, "mda.sh")
        with open(mda, "w") as f:
            f.write('#!/bin/sh\nexec cat > "$(mktemp %s/msg.XXXXXX)"\n' % out)
        os.chmod(mda, 0o755)
        rc = os.path.join(work, "fetchmailrc")
        with open(rc, "w") as f:
            f.write("set no bouncemail\n"
                    "poll %s service %d protocol pop3 auth password timeout 30\n"
                    "  user \"alice\" there with password \"secret1\" is \"%s\" here\n"
                    "  keep fetchall sslproto '' mda \"%s\"\n" % (HOST, self.gw.port, getpass.getuser(), mda))
        os.chmod(rc, stat.S_IRUSR | stat.S_IWUSR)
        env = dict(os.environ, HOME=work, FETCHMAILHOME=work)
        # Its own id and pid files: as root fetchmail would lock /var/run.
        code, log = self.run_tool([FETCHMAIL, "-f", rc, "-v", "--nosyslog",
                                   "-i", os.path.join(work, "ids"),
                                   "--pidfile", os.path.join(work, "fetchmail.pid")], env)
        self.assertEqual(code, 0, "fetchmail exited %d:\n%s" % (code, log))
        files = sorted(os.path.join(out, n) for n in os.listdir(out))
        self.check_delivered(files, "fetchmail")
        # keep: nothing was deleted.
        self.assertEqual(self.root.uids_on_disk("alice"), sorted(m.uid for m in self.msgs()))


@unittest.skipUnless(MPOP, "mpop is not installed")
class MpopTests(ClientTestMixin, StackTestCase):

    def test_mpop_keep(self):
        work = new_dir("mpop")
        md = os.path.join(work, "Maildir")
        for sub in ("new", "cur", "tmp"):
            os.makedirs(os.path.join(md, sub))
        conf = os.path.join(work, "mpoprc")
        with open(conf, "w") as f:
            f.write("defaults\n"
                    "timeout 30\n"
                    "account default\n"
                    "host %s\n"
                    "port %d\n"
                    "tls off\n"
                    "auth user\n"
                    "user alice\n"
                    "password secret1\n"
                    "delivery maildir %s\n"
                    "keep on\n"
                    "uidls_file %s\n" % (HOST, self.gw.port, md, os.path.join(work, "uidls")))
        os.chmod(conf, stat.S_IRUSR | stat.S_IWUSR)
        env = dict(os.environ, HOME=work)
        code, log = self.run_tool([MPOP, "-C", conf, "--debug"], env)
        self.assertEqual(code, 0, "mpop exited %d:\n%s" % (code, log[-6000:]))
        files = sorted(os.path.join(md, sub, n) for sub in ("new", "cur")
                       for n in os.listdir(os.path.join(md, sub)))
        self.check_delivered(files, "mpop")
        self.assertEqual(self.root.uids_on_disk("alice"), sorted(m.uid for m in self.msgs()))
        # A second run fetches nothing new: the uids were stable.
        code, log = self.run_tool([MPOP, "-C", conf], env)
        self.assertEqual(code, 0, log)
        files2 = [n for sub in ("new", "cur") for n in os.listdir(os.path.join(md, sub))]
        self.assertEqual(len(files2), len(files), log)
