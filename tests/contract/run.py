#!/usr/bin/env python3
"""Contract tests: the example backends and the contract checker.

    python3 tests/contract/run.py [--build DIR] [-v] [-k PATTERN]

1. The three backends (the reference build/pop3gw-maildir, backends/python,
   backends/node) each serve a temporary Maildir, and
   tools/pop3gw-check-backend must pass them: read-only, then with signatures,
   a bearer token and --allow-delete on a throwaway copy.
2. Deliberately broken backends (tests/contract/broken/) must each make the
   checker FAIL, naming the expected check.
3. Each backend behind the real gateway (build/pop3gw) answers the same POP3
   session: login, STAT, LIST, UIDL, RETR of every message compared byte for
   byte with its CRLF form, DELE 1 and QUIT removing the file.

Python 3 standard library only. Processes run on free loopback ports, are
waited for by polling, and are stopped whatever happens. The last line of
output is "N passed, N failed" (", N skipped" when tests were skipped; with
PGW_REQUIRE_ALL=1 in the environment a skipped test counts as failed).
"""

import argparse
import base64
import json
import os
import poplib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CHECKER = os.path.join(REPO, "tools", "pop3gw-check-backend")
BROKEN = os.path.join(HERE, "broken")
HOST = "127.0.0.1"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the Standard Webhooks test key
TOKEN = "contract-test-token"
USER, PASSWORD = "alice", "secret1"
DEADLINE = 20.0  # seconds a process gets to become ready, or to answer

BUILD = os.path.join(REPO, "build")  # set from --build
TMP = None  # one directory per run


# --------------------------------------------------------------- mail data


def crlf(data):
    """A stored message as a POP3 client receives it, before dot-stuffing:
    bare LF -> CRLF, and a final CRLF when the last line has none."""
    out = re.sub(rb"(?<!\r)\n", b"\r\n", data)
    if data and not out.endswith(b"\r\n"):
        out += b"\r\n"
    return out


def messages():
    """(file name, sub-directory, bytes) in maildrop order (names sorted)."""
    big = b"".join(b"line %05d of a longer message, stored with LF\n" % i for i in range(3000))
    return [
        ("1700000001.M1P1.test", "new",
         b"From: one@example.com\nTo: alice@test.local\nSubject: plain LF\n\n"
         b"Hello Alice,\nthis message is stored with LF line ends.\n"),
        ("1700000002.M2P1.test", "new",
         b"From: dots@example.com\nSubject: dot lines\n\n"
         b".leading dot\n..two dots\n.\nafter a line that is a single dot\n.\n"),
        ("1700000003.M3P1.test", "cur",  # a seen message: flags after ':'
         b"From: nonl@example.com\nSubject: no final newline\n\n"
         b"first body line\nlast line without a newline"),
        ("1700000004.M4P1.test", "cur",
         b"From: crlf@example.com\r\nSubject: already CRLF\r\n\r\nline one\r\n.dot\r\n"),
        ("1700000005.M5P1.test", "new",
         b"From: big@example.com\nSubject: bigger\n\n" + big),
    ]


def file_name(name, sub):
    return name + ":2,S" if sub == "cur" else name


def make_root():
    """A fresh mail root: ROOT/users and ROOT/alice/{new,cur,tmp}."""
    root = tempfile.mkdtemp(prefix="mail-", dir=TMP)
    with open(os.path.join(root, "users"), "w") as f:
        f.write("# user:password\n%s:%s\nbob:bobpw\n" % (USER, PASSWORD))
    for user in (USER, "bob"):
        for sub in ("new", "cur", "tmp"):
            os.makedirs(os.path.join(root, user, sub))
    for name, sub, data in messages():
        with open(os.path.join(root, USER, sub, file_name(name, sub)), "wb") as f:
            f.write(data)
    return root


def files_of(root, user=USER):
    out = []
    for sub in ("new", "cur"):
        out.extend(n.split(":", 1)[0] for n in os.listdir(os.path.join(root, user, sub)))
    return sorted(out)


# --------------------------------------------------------------- processes


def free_port():
    s = socket.socket()
    try:
        s.bind((HOST, 0))
        return s.getsockname()[1]
    finally:
        s.close()


class Proc:
    """A child process with its output in a log file; stop() always works."""

    def __init__(self, name, argv):
        self.name = name
        self.argv = argv
        self.log_path = os.path.join(tempfile.mkdtemp(prefix="log-", dir=TMP), name + ".log")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=REPO)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_port(self, port, greeting=False):
        """Polls until the port accepts connections (and, for the gateway,
        sends a +OK greeting)."""
        deadline = time.monotonic() + DEADLINE
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("%s exited with %s while starting:\n%s" % (
                    self.name, self.proc.returncode, self.log()[-3000:]))
            try:
                with socket.create_connection((HOST, port), timeout=2) as s:
                    if not greeting or s.makefile("rb").readline(512).startswith(b"+OK"):
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("%s not ready after %gs:\n%s" % (
                    self.name, DEADLINE, self.log()[-3000:]))
            time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def backend_argv(kind, port, root, extra=()):
    listen = "--listen=%s:%d" % (HOST, port)
    if kind == "reference":
        argv = [os.path.join(BUILD, "pop3gw-maildir"), listen, "--root=" + root, "--quiet"]
    elif kind == "python":
        argv = [sys.executable, os.path.join(REPO, "backends", "python", "backend.py"),
                listen, "--root=" + root, "--quiet"]
    elif kind == "node":
        argv = ["node", os.path.join(REPO, "backends", "node", "backend.js"),
                listen, "--root=" + root, "--quiet"]
    else:  # a broken one
        argv = [sys.executable, os.path.join(BROKEN, kind + ".py"), listen]
    return argv + list(extra)


BACKENDS = ("reference", "python", "node")


class Case(unittest.TestCase):
    """Starts processes and stops them all after each test."""

    def setUp(self):
        self.procs = []

    def tearDown(self):
        for p in reversed(self.procs):
            p.stop()

    def start_backend(self, kind, root=None, extra=()):
        if kind == "reference" and not os.access(os.path.join(BUILD, "pop3gw-maildir"), os.X_OK):
            self.fail("%s/pop3gw-maildir is missing: run make" % BUILD)
        port = free_port()
        p = Proc(kind, backend_argv(kind, port, root, extra))
        self.procs.append(p)
        p.wait_port(port)
        p.url = "http://%s:%d" % (HOST, port)
        return p

    def check(self, url, *args):
        """Runs the checker; returns (exit status, output, {check: [verdicts]})."""
        argv = [sys.executable, CHECKER, url, "--user", USER, "--password", PASSWORD,
                "--timeout", "10"] + list(args)
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=120, cwd=REPO)
        out = r.stdout.decode("utf-8", "replace")
        verdicts = {}
        for line in out.splitlines():
            m = re.match(r"(PASS|FAIL|WARN)\s+(\S+)", line)
            if m:
                verdicts.setdefault(m.group(2), []).append(m.group(1))
        self.assertRegex(out.splitlines()[-1] if out else "",
                         r"^\d+ passed, \d+ failed, \d+ warnings$", out)
        return r.returncode, out, verdicts


# ---------------------------------------------------- checker vs backends


class TestCheckerPassesBackends(Case):
    """The checker passes all three backends, with no failure and no warning
    beyond the ones that are expected."""

    def assert_clean(self, code, out, verdicts, allowed_warnings=()):
        failed = [k for k, v in verdicts.items() if "FAIL" in v]
        warned = [k for k, v in verdicts.items() if "WARN" in v and k not in allowed_warnings]
        self.assertEqual((code, failed, warned), (0, [], []), out)
        # No backend here stalls on Nagle's algorithm.
        self.assertEqual(verdicts.get("http.reply-time"), ["PASS"], out)

    def read_only(self, kind):
        root = make_root()
        before = files_of(root)
        b = self.start_backend(kind, root)
        code, out, v = self.check(b.url)
        self.assert_clean(code, out, v)
        for name in ("authenticate.ok", "authenticate.wrong-password",
                     "authenticate.unknown-user", "authenticate.repeat", "list",
                     "list.uids", "uidl", "retrieve", "retrieve.missing", "retrieve.top",
                     "retrieve.by-uid", "quit.empty", "quit.repeat", "connect", "disconnect"):
            self.assertIn("PASS", v.get(name, []), "%s not passed:\n%s" % (name, out))
        self.assertEqual(v["retrieve"].count("PASS"), len(messages()), out)
        self.assertEqual(files_of(root), before, "a read-only check changed the mailbox")

    def with_delete(self, kind):
        root = make_root()  # a throwaway copy
        b = self.start_backend(kind, root, ["--secret=" + SECRET, "--token=" + TOKEN])
        code, out, v = self.check(b.url, "--secret", SECRET, "--token", TOKEN, "--allow-delete")
        self.assert_clean(code, out, v)
        for name in ("signature.wrong", "signature.missing", "signature.stale",
                     "token.missing", "quit.delete", "quit.delete-repeat",
                     "quit.delete-effect"):
            self.assertEqual(v.get(name), ["PASS"], "%s:\n%s" % (name, out))
        names = [n for n, _, _ in messages()]
        self.assertEqual(files_of(root), names[:-1], "the last message was not deleted")

    def test_reference_read_only(self):
        self.read_only("reference")

    def test_python_read_only(self):
        self.read_only("python")

    def test_node_read_only(self):
        self.read_only("node")

    def test_reference_signed_with_delete(self):
        self.with_delete("reference")

    def test_python_signed_with_delete(self):
        self.with_delete("python")

    def test_node_signed_with_delete(self):
        self.with_delete("node")

    def test_reference_without_list_uids(self):
        """With no uids in list, the uidl answer is required and used."""
        root = make_root()
        b = self.start_backend("reference", root, ["--no-list-uids"])
        code, out, v = self.check(b.url, "--allow-delete")
        # retrieve.by-uid needs uids from list... no: it uses uidl's, and passes.
        self.assert_clean(code, out, v)
        self.assertIn("no uids", out)
        self.assertEqual(v.get("uidl"), ["PASS"], out)
        self.assertEqual(v.get("quit.delete-effect"), ["PASS"], out)

    def test_reference_with_locks(self):
        """A backend that locks maildrops from login to quit also passes:
        the checker releases every session it logs in."""
        b = self.start_backend("reference", make_root(), ["--lock-timeout=60"])
        code, out, v = self.check(b.url, "--allow-delete")
        self.assert_clean(code, out, v)

    def test_rotated_keys(self):
        """Backends accept a request when any of several signatures matches."""
        other = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVoxMjM0NTY="
        for kind in BACKENDS:
            with self.subTest(kind):
                b = self.start_backend(kind, make_root(), ["--secret=%s %s" % (other, SECRET)])
                code, out, v = self.check(b.url, "--secret", "%s %s" % (SECRET, other))
                self.assert_clean(code, out, v)
                self.assertEqual(v.get("signature.wrong"), ["PASS"], out)

    def test_unsigned_backend_warns(self):
        """A backend that does not verify signatures gets WARN, not FAIL."""
        b = self.start_backend("python", make_root())
        code, out, v = self.check(b.url, "--secret", SECRET)
        self.assertEqual(code, 0, out)
        self.assertEqual(v.get("signature.wrong"), ["WARN"], out)

    def test_backend_wants_signature(self):
        """Without --secret, a signing backend fails the login, with a hint."""
        b = self.start_backend("node", make_root(), ["--secret=" + SECRET])
        code, out, v = self.check(b.url)
        self.assertEqual(code, 1, out)
        self.assertIn("FAIL", v.get("authenticate.ok", []), out)
        self.assertIn("--secret", out)

    def test_unreachable(self):
        code, out, v = self.check("http://%s:%d" % (HOST, free_port()))
        self.assertEqual(code, 1, out)
        self.assertEqual(v.get("backend.reachable"), ["FAIL"], out)

    def test_usage(self):
        r = subprocess.run([sys.executable, CHECKER, "http://x"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
        self.assertEqual(r.returncode, 2, r.stdout)
        r = subprocess.run([sys.executable, CHECKER, "http://x", "--user=u", "--password=p",
                            "--max-messages=0"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
        self.assertEqual(r.returncode, 2, r.stdout)
        self.assertIn(b"--max-messages: at least 1", r.stdout)


# -------------------------------------------------- the three agree


class TestBackendsAgree(Case):
    """On an awkward Maildir the three backends give the same listing,
    the same bytes, and the same answers to odd requests."""

    def awkward_root(self):
        root = make_root()
        new, cur = os.path.join(root, USER, "new"), os.path.join(root, USER, "cur")
        files = {
            (new, "1700000010.name with spaces"): b"Subject: spaces\n\nx\n",
            (new, "1700000011." + "L" * 80): b"Subject: long name\n\nx\n",
            (new, "1700000012.empty"): b"",
            (new, "1700000013.cr-end"): b"Subject: cr\n\nends in CR\r",
            (new, "1700000014.crcrlf"): b"a\r\r\nb\rc\n\n",
            (new, "1700000015.dup"): b"first of two with one uid\n",
            (cur, "1700000015.dup:2,S"): b"second of two with one uid\n",
            (new, ".hidden"): b"never listed\n",
            (cur, "1700000016.x:2,"): b"only CRLF\r\n",
        }
        for (d, name), data in files.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        os.symlink(os.path.join(new, "1700000010.name with spaces"), os.path.join(new, "1700000017.link"))
        os.mkdir(os.path.join(new, "1700000018.a-directory"))
        return root

    def post(self, url, event, **fields):
        import http.client
        u = url.split("//", 1)[1]
        host, port = u.split(":")
        c = http.client.HTTPConnection(host, int(port), timeout=DEADLINE)
        body = dict({"event": event, "session": "0123456789abcdef",
                     "client": {"ip": HOST, "port": 1, "tls": False}, "user": USER}, **fields)
        c.request("POST", "/" + event, json.dumps(body), {"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        c.close()
        if r.getheader("Content-Type", "").startswith("application/json"):
            return r.status, json.loads(data)
        return r.status, data

    def test_same_answers(self):
        root = self.awkward_root()
        urls = {kind: self.start_backend(kind, root).url for kind in BACKENDS}
        apop_stamp = "<1.2@test.local>"
        digest = __import__("hashlib").md5((apop_stamp + PASSWORD).encode()).hexdigest()
        calls = [
            ("list", {}),
            ("uidl", {}),
            ("authenticate", {"method": "PLAIN", "password": PASSWORD, "attempt": 1}),
            ("authenticate", {"method": "PLAIN", "password": PASSWORD, "authzid": "bob", "attempt": 1}),
            ("authenticate", {"method": "APOP", "apop": {"timestamp": apop_stamp, "digest": digest},
                              "attempt": 1}),
            ("authenticate", {"method": "APOP", "apop": {"timestamp": apop_stamp, "digest": "0" * 32},
                              "attempt": 1}),
            ("authenticate", {"method": "XOAUTH2", "token": "t", "attempt": 1}),
            ("authenticate", {"method": "LOGIN", "password": PASSWORD, "attempt": 1, "user": "bob"}),
            ("retrieve", {"message": 99}),
            ("retrieve", {"message": 1, "uid": "no-such-uid"}),
            ("list", {"user": "nobody"}),
            ("list", {"user": "../alice"}),
        ]
        status, listing = self.post(urls["reference"], "list")
        for m in listing["messages"]:
            calls.append(("retrieve", {"message": 1, "uid": m["uid"]}))
        for event, fields in calls:
            answers = {}
            for kind, url in urls.items():
                status, body = self.post(url, event, **fields)
                if isinstance(body, dict):  # the reference adds a mailbox; texts may differ
                    body = {k: v for k, v in body.items() if k in ("ok", "user", "messages", "uids", "code")}
                answers[kind] = (status, body)
            with self.subTest(event=event, fields=fields):
                self.assertEqual(answers["python"], answers["reference"])
                self.assertEqual(answers["node"], answers["reference"])
        names = [m["uid"] for m in listing["messages"]]
        self.assertIn("1700000015.dup", names)
        self.assertEqual(len(names), len(set(names)))
        self.assertFalse(any(n.startswith(".") or n.endswith(".link") for n in names), names)


# ------------------------------------------------------- signing details


class TestSignatures(unittest.TestCase):
    """The example backends' verification against the Standard Webhooks test
    vector (its timestamp is old, so the clock check is widened here)."""

    VECTOR = {"webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330",
              "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}
    BODY = b'{"test": 2432232314}'

    def test_python(self):
        sys.path.insert(0, os.path.join(REPO, "backends", "python"))
        try:
            import backend
        finally:
            sys.path.pop(0)
        backend.SIGNATURE_TOLERANCE = 10 ** 10
        backend.CONFIG["secrets"] = backend.secret_keys("whsec_AAAA " + SECRET)
        h = dict(self.VECTOR)
        self.assertTrue(backend.signature_ok(h, self.BODY))
        h["webhook-signature"] = "v1,AAAA " + self.VECTOR["webhook-signature"]
        self.assertTrue(backend.signature_ok(h, self.BODY), "any of several values")
        self.assertFalse(backend.signature_ok(h, self.BODY + b" "))
        h["webhook-timestamp"] = "1614265331"
        self.assertFalse(backend.signature_ok(h, self.BODY))
        backend.SIGNATURE_TOLERANCE = 300
        self.assertFalse(backend.signature_ok(dict(self.VECTOR), self.BODY), "stale")

    def test_node(self):
        script = """
const b = require(process.argv[1]);
const v = JSON.parse(process.argv[2]);
b.CONFIG.keys = b.secretKeys('whsec_AAAA ' + process.argv[3]);
const body = Buffer.from('{"test": 2432232314}');
const now = Date.now;
Date.now = () => 1614265330 * 1000 + 1000;
const out = [b.signatureOk(v, body), b.signatureOk(v, Buffer.concat([body, Buffer.from(' ')]))];
Date.now = now;
out.push(b.signatureOk(v, body));
console.log(JSON.stringify(out));
"""
        r = subprocess.run(["node", "-e", script, os.path.join(REPO, "backends", "node", "backend.js"),
                            json.dumps(self.VECTOR), SECRET],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        self.assertEqual(r.stdout.decode().strip(), "[true,false,false]", r.stdout)


# ------------------------------------------------- checker vs broken ones


class TestCheckerCatchesBrokenBackends(Case):
    """Each broken backend makes the checker FAIL the expected check, and
    nothing unrelated."""

    # backend -> (checks that must FAIL, other checks that may FAIL with them)
    EXPECTED = {
        "wrong_sizes": ({"retrieve.size"}, set()),
        "mixed_uids": ({"list.uids"}, set()),
        "duplicate_uids": ({"list.uids"}, {"uidl"}),
        "quit_500": ({"quit.empty"}, {"quit.delete"}),
        "any_password": ({"authenticate.wrong-password", "authenticate.unknown-user"}, set()),
        "not_idempotent": ({"quit.delete-repeat"}, set()),
        "missing_200": ({"retrieve.missing"}, set()),
        "auth_401": ({"authenticate.wrong-password", "authenticate.unknown-user"}, set()),
    }

    def test_correct_base_passes(self):
        """The base of the broken ones, and two variants that are allowed."""
        for kind, warnings in (("correct", set()), ("json_content", set()),
                               ("http10", {"http.keep-alive"})):
            with self.subTest(kind):
                b = self.start_backend(kind)
                code, out, v = self.check(b.url, "--allow-delete")
                self.assertEqual(code, 0, out)
                self.assertNotIn("FAIL", out)
                self.assertEqual({k for k, x in v.items() if "WARN" in x}, warnings, out)
                if kind == "json_content":
                    self.assertIn("200 JSON", out)
                b.stop()

    def test_wrong_password_401_explained(self):
        """401 to a wrong password: the checker says why that is wrong."""
        b = self.start_backend("auth_401")
        code, out, v = self.check(b.url)
        self.assertEqual(code, 1, out)
        line = next(l for l in out.splitlines() if "authenticate.wrong-password" in l)
        self.assertTrue(line.startswith("FAIL"), line)
        self.assertIn("refusing the webhook itself", line)
        self.assertIn("[SYS/TEMP] instead of [AUTH]", line)
        self.assertIn('200 {"ok": false}', line)

    def test_nagle_stall_warns(self):
        """Nagle's algorithm on, head and body in two writes: every reply
        waits for the checker's delayed ACK. Correct, but a WARN that names
        the likely cause; nothing else is reported."""
        b = self.start_backend("nagle")
        code, out, v = self.check(b.url, "--allow-delete")
        self.assertEqual(code, 0, out)
        self.assertNotIn("FAIL", out)
        self.assertEqual({k for k, x in v.items() if "WARN" in x}, {"http.reply-time"}, out)
        line = next(l for l in out.splitlines() if "http.reply-time" in l)
        m = re.search(r"median ([\d.]+) ms", line)
        self.assertGreaterEqual(float(m.group(1)), 30, line)
        self.assertIn("after the headers", line)
        self.assertIn("Nagle", line)
        self.assertIn("TCP_NODELAY", line)

    def test_listing_over_1_mib(self):
        """20,000 messages: list and uidl bodies over 1 MiB, which the
        gateway takes with its default max_messages. The checker passes
        them, and refuses the list where the gateway would: with
        --max-messages=1000 (1 MiB plus 128 KB)."""
        b = self.start_backend("big_listing")
        code, out, v = self.check(b.url, "--allow-delete")
        self.assertEqual(code, 0, out)
        self.assertNotIn("FAIL", out)
        self.assertIn("PASS", v["list"], out)
        self.assertIn("PASS", v["uidl"], out)
        self.assertIn("only the first 20 of 20000 messages", out)
        code, out, v = self.check(b.url, "--max-messages=1000")
        self.assertEqual(code, 1, out)
        self.assertEqual({k for k, x in v.items() if "FAIL" in x}, {"list"}, out)
        line = next(l for l in out.splitlines() if l.startswith("FAIL"))
        self.assertIn("longer than the %d octets the gateway accepts" % ((1 << 20) + 128 * 1000),
                      line)
        b.stop()

    def test_broken(self):
        for kind, (must, may) in sorted(self.EXPECTED.items()):
            with self.subTest(kind):
                b = self.start_backend(kind)
                code, out, v = self.check(b.url, "--allow-delete")
                failed = {k for k, verdicts in v.items() if "FAIL" in verdicts}
                self.assertEqual(code, 1, out)
                self.assertTrue(must <= failed, "expected FAIL of %s:\n%s" % (sorted(must), out))
                self.assertTrue(failed <= must | may, "unexpected FAILs %s:\n%s" % (
                    sorted(failed - must - may), out))
                b.stop()


# ------------------------------------------------- behind the real gateway


class TestPop3Session(Case):
    """The same POP3 session through build/pop3gw against each backend."""

    def start_gateway(self, backend, secret=None):
        gw = os.path.join(BUILD, "pop3gw")
        if not os.access(gw, os.X_OK):
            self.fail("%s is missing: run make" % gw)
        port = free_port()
        argv = [gw, "--listen=%s:%d" % (HOST, port), "--backend_url=" + backend.url,
                "--admin_listen=", "--workers=1", "--auth_failure_delay=0"]
        if secret:
            argv.append("--backend_secret=" + secret)
        p = Proc("gateway", argv)
        self.procs.append(p)
        p.wait_port(port, greeting=True)
        p.port = port
        return p

    def session(self, kind):
        root = make_root()
        msgs = messages()
        expected = [crlf(data) for _, _, data in msgs]
        uids = [name for name, _, _ in msgs]
        b = self.start_backend(kind, root, ["--secret=" + SECRET])
        gw = self.start_gateway(b, SECRET)
        try:
            pop = poplib.POP3(HOST, gw.port, timeout=DEADLINE)
            pop.user(USER)
            resp = pop.pass_(PASSWORD)
            self.assertTrue(resp.startswith(b"+OK"), resp)
            self.assertEqual(pop.stat(), (len(msgs), sum(len(e) for e in expected)))
            _, lines, _ = pop.list()
            self.assertEqual(lines, [b"%d %d" % (i + 1, len(e)) for i, e in enumerate(expected)])
            _, lines, _ = pop.uidl()
            self.assertEqual(lines, [b"%d %s" % (i + 1, u.encode()) for i, u in enumerate(uids)])
            for i, want in enumerate(expected):
                resp, lines, _ = pop.retr(i + 1)
                self.assertTrue(resp.startswith(b"+OK"), resp)
                got = b"".join(line + b"\r\n" for line in lines)
                self.assertEqual(got, want, "message %d differs" % (i + 1))
            resp, lines, _ = pop.top(2, 0)
            self.assertEqual(lines, crlf(msgs[1][2]).split(b"\r\n\r\n")[0].split(b"\r\n") + [b""])
            pop.dele(1)
            self.assertTrue(pop.quit().startswith(b"+OK"))
        except (poplib.error_proto, OSError) as e:
            self.fail("%s: %s\ngateway log:\n%s\nbackend log:\n%s" % (
                kind, e, gw.log()[-3000:], b.log()[-3000:]))
        self.assertEqual(files_of(root), uids[1:], "DELE 1 + QUIT did not remove the file")

        # APOP and AUTH PLAIN reach the backend as "APOP" and "PLAIN" logins.
        pop = poplib.POP3(HOST, gw.port, timeout=DEADLINE)
        self.assertTrue(pop.apop(USER, PASSWORD).startswith(b"+OK"))
        self.assertEqual(pop.stat()[0], len(msgs) - 1)
        pop.quit()
        pop = poplib.POP3(HOST, gw.port, timeout=DEADLINE)
        plain = base64.b64encode(b"\0%s\0%s" % (USER.encode(), PASSWORD.encode())).decode()
        self.assertTrue(pop._shortcmd("AUTH PLAIN " + plain).startswith(b"+OK"))
        pop.quit()

        # A wrong password is refused through the gateway too.
        pop = poplib.POP3(HOST, gw.port, timeout=DEADLINE)
        pop.user(USER)
        with self.assertRaises(poplib.error_proto) as cm:
            pop.pass_("wrong")
        self.assertIn(b"[AUTH]", cm.exception.args[0])
        pop.close()

    def test_python(self):
        self.session("python")

    def test_node(self):
        self.session("node")

    def test_reference(self):
        self.session("reference")


# ------------------------------------------------------------------ runner


def main():
    global BUILD, TMP
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(REPO, "build"),
                    help="directory with pop3gw and pop3gw-maildir (default build)")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("-k", dest="pattern", help="run only tests whose name contains this")
    args = ap.parse_args()
    BUILD = os.path.abspath(args.build)
    TMP = tempfile.mkdtemp(prefix="pop3gw-contract-")
    try:
        loader = unittest.TestLoader()
        if args.pattern:
            loader.testNamePatterns = ["*%s*" % args.pattern]
        suite = loader.loadTestsFromModule(sys.modules[__name__])
        result = unittest.TextTestRunner(verbosity=2 if args.verbose else 1,
                                         stream=sys.stdout).run(suite)
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    passed = result.testsRun - failed - skipped
    if skipped and os.environ.get("PGW_REQUIRE_ALL") == "1":
        # PGW_REQUIRE_ALL=1 (.ci/run sets it): a skipped test counts as failed.
        print("PGW_REQUIRE_ALL=1: %d skipped test(s) count as failed:" % skipped)
        for test, reason in result.skipped:
            print("  skipped: %s (%s)" % (test.id(), reason))
        failed, skipped = failed + skipped, 0
    print("%d passed, %d failed%s" % (passed, failed, ", %d skipped" % skipped if skipped else ""))
    return 1 if failed or result.testsRun == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
