"""Security checks: no password, token or secret in the logs at any level
(logfmt and JSON, debug included), in --check-config or in /status, with
the secrets given as values or read from files; a backend
`message` with CR/LF or control bytes cannot inject a line into the
client's stream nor forge a response code; privileges are dropped after
the ports are bound when started as root with `user`."""

import base64
import hashlib
import json
import os
import pwd
import re
import signal
import socket
import subprocess
import threading
import time
import unittest

import fakebackend as fb
from faultlib import (FAULT_DEFAULTS, FaultCase, HOST, Gateway, admin_get, free_port,
                      read_until_close)
import harness

PASSWORD = "Pa55 w0rd-S3CRET-alice"
WRONG = "WrongPass-XYZ-guess"
TOKEN = "ya29.OAUTH-TOKEN-b0b-7Hx"
BACKEND_SECRET = "whsec_" + base64.b64encode(b"pop3gw-fault-suite-signing-key!").decode()
BACKEND_TOKEN = "tok-BACKEND-bearer-91xq"
ADMIN_TOKEN = "adm-TOKEN-dashboard-77zz"
LONG_PASSWORD = "L0ng-" + "p" * 300


def b64(s):
    return base64.b64encode(s if isinstance(s, bytes) else s.encode()).decode()


def secret_forms():
    """Every form a secret could leak in: as is, and the base64 payloads
    that carry it on the wire."""
    forms = {
        "password": PASSWORD,
        "wrong password": WRONG,
        "long password": LONG_PASSWORD[:40],
        "oauth token": TOKEN,
        "backend secret": BACKEND_SECRET,
        "backend secret key": BACKEND_SECRET[len("whsec_"):],
        "backend token": BACKEND_TOKEN,
        "admin token": ADMIN_TOKEN,
        "PLAIN payload": b64("\0alice\0" + PASSWORD),
        "PLAIN bad payload": b64("alice\0" + PASSWORD),
        "LOGIN password": b64(PASSWORD),
        "LOGIN wrong password": b64(WRONG),
        "XOAUTH2 payload": b64("user=alice\x01auth=Bearer " + TOKEN + "\x01\x01"),
        "OAUTHBEARER payload": b64("n,a=alice,\x01auth=Bearer " + TOKEN + "\x01\x01"),
    }
    # Password fragments (a log that cut or escaped the value).
    forms["password tail"] = PASSWORD.split(" ", 1)[1]
    forms["password head"] = PASSWORD.split(" ", 1)[0]
    return forms


class SecretsCase(FaultCase):
    LOG_FORMAT = "logfmt"
    BACKEND_KW = {"users": {"alice": PASSWORD}, "tokens": {"alice": TOKEN}}

    def setUp(self):
        self.GATEWAY_ARGS = dict(self.secret_args(), log_level="debug",
                                 log_format=self.LOG_FORMAT)
        super().setUp()

    def secret_args(self):
        return {"backend_secret": BACKEND_SECRET, "backend_token": BACKEND_TOKEN,
                "admin_token": ADMIN_TOKEN}

    def _wait_admin(self):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if admin_get(self.admin_port, "/healthz", timeout=1)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)

    def exercise(self):
        """Every way a secret passes through the gateway."""
        # USER/PASS: right, wrong, too long, with a control byte.
        r = self.raw()
        r.login("alice", PASSWORD)
        r.cmd("QUIT")
        r = self.raw()
        r.cmd("USER alice")
        self.assertTrue(r.cmd("PASS " + WRONG).startswith(b"-ERR [AUTH]"))
        self.assertTrue(r.cmd("pass " + PASSWORD).startswith(b"-ERR"))  # no USER: refused
        r.cmd("USER alice")
        self.assertTrue(r.cmd("PASS " + LONG_PASSWORD).startswith(b"-ERR"))
        r.cmd("USER alice")
        self.assertTrue(r.cmd("PASS " + PASSWORD + "\x01").startswith(b"-ERR"))
        r.close()
        # AUTH PLAIN (initial response and continuation), a malformed one.
        r = self.raw()
        self.assertTrue(r.cmd("AUTH PLAIN " + b64("\0alice\0" + PASSWORD)).startswith(b"+OK"))
        r.cmd("QUIT")
        r = self.raw()
        self.assertTrue(r.step("AUTH PLAIN").startswith(b"+ "))
        self.assertTrue(r.step(b64("alice\0" + PASSWORD)).startswith(b"-ERR"))
        r.close()
        # AUTH LOGIN with a wrong, then the right password.
        r = self.raw()
        self.assertTrue(r.step("AUTH LOGIN").startswith(b"+ "))
        self.assertTrue(r.step(b64("alice")).startswith(b"+ "))
        self.assertTrue(r.step(b64(WRONG)).startswith(b"-ERR"))
        self.assertTrue(r.step("AUTH LOGIN").startswith(b"+ "))
        self.assertTrue(r.step(b64("alice")).startswith(b"+ "))
        self.assertTrue(r.step(b64(PASSWORD)).startswith(b"+OK"))
        r.cmd("QUIT")
        # XOAUTH2 and OAUTHBEARER.
        r = self.raw()
        self.assertTrue(r.step("AUTH XOAUTH2 " + b64("user=alice\x01auth=Bearer " + TOKEN +
                                                    "\x01\x01")).startswith(b"+OK"))
        r.cmd("QUIT")
        r = self.raw()
        self.assertTrue(r.step("AUTH OAUTHBEARER " + b64("n,a=alice,\x01auth=Bearer " + TOKEN +
                                                        "\x01\x01")).startswith(b"+OK"))
        r.cmd("QUIT")
        # APOP (the digest is derived from the password).
        r = self.raw()
        ts = re.search(rb"<[^>]+>", r.greeting).group(0)
        digest = hashlib.md5(ts + PASSWORD.encode()).hexdigest()
        self.assertTrue(r.cmd("APOP alice " + digest).startswith(b"+OK"))
        r.cmd("QUIT")
        # The backend fails while the password is in flight.
        self.be.plan("authenticate", fb.status(500, {"error": "boom " + PASSWORD}))
        r = self.raw()
        r.cmd("USER alice")
        self.assertTrue(r.cmd("PASS " + PASSWORD).startswith(b"-ERR [SYS/TEMP]"))
        self.be.plan("authenticate", fb.delay(2))
        self.assertTrue(r.cmd("PASS " + PASSWORD).startswith(b"-ERR"))
        r.close()
        # Admin: the token in a URL, a wrong one, a right one.
        admin_get(self.admin_port, "/?token=" + ADMIN_TOKEN)
        admin_get(self.admin_port, "/metrics?token=" + ADMIN_TOKEN)
        c = __import__("http.client").client.HTTPConnection(HOST, self.admin_port, timeout=5)
        c.request("GET", "/status", headers={"Authorization": "Bearer " + ADMIN_TOKEN + "x"})
        c.getresponse().read()
        c.request("GET", "/sessions", headers={"Authorization": "Bearer " + ADMIN_TOKEN})
        c.getresponse().read()
        c.close()
        # SIGHUP re-reads the secrets.
        self.gw.proc.send_signal(signal.SIGHUP)
        self.wait_log("configuration reloaded")
        # Every request was signed and carried the token.
        reqs = self.be.requests()
        self.assertTrue(reqs)
        for q in reqs:
            self.assertEqual(q.headers.get("authorization"), "Bearer " + BACKEND_TOKEN)
            self.assertTrue(q.headers.get("webhook-signature", "").startswith("v1,"))

    def assert_no_secret(self, text, where):
        for what, value in secret_forms().items():
            for line in text.splitlines():
                if value in line:
                    self.fail("%s found in %s: %s" % (what, where, line[:300]))

    def test_no_secret_in_logs(self):
        self.exercise()
        self.gw.stop_clean()
        # The harness writes the command line first ("$ pop3gw --backend_secret=...");
        # that line is the test's, not the gateway's.
        log = "\n".join(l for l in self.gw.log().splitlines() if not l.startswith("$ "))
        self.assertIn("level=debug" if self.LOG_FORMAT == "logfmt" else '"level":"debug"', log)
        self.assertGreater(log.count("\n"), 50)
        self.assert_no_secret(log, "the gateway log")

    def test_no_secret_in_check_config(self):
        argv = self.gw.argv() + ["--check-config"]
        out = subprocess.run(argv, capture_output=True, timeout=10)
        text = (out.stdout + out.stderr).decode("utf-8", "replace")
        self.assertEqual(out.returncode, 0, text)
        self.assert_no_secret(text, "--check-config")
        # A bad secret's error message masks the value too.
        bad = [a for a in argv if not a.startswith("--backend_secret=")] + [
            "--backend_secret=whsec_" + "!" + BACKEND_SECRET[6:]]
        out = subprocess.run(bad, capture_output=True, timeout=10)
        self.assertNotEqual(out.returncode, 0)
        self.assertNotIn(BACKEND_SECRET[6:], (out.stdout + out.stderr).decode("utf-8", "replace"))


class SecretsJsonTests(SecretsCase):
    LOG_FORMAT = "json"

    def test_log_lines_are_json(self):
        self.exercise()
        self.gw.stop_clean()
        for line in self.gw.log().splitlines()[1:]:
            if line.startswith("{"):
                json.loads(line)

    test_no_secret_in_check_config = None


class SecretsFileTests(SecretsCase):
    """The same with every secret read from a file (*_file keys): the
    requests still carry them, --check-config shows the paths only."""

    def secret_args(self):
        folder = harness.new_dir("secrets")
        self.files = {}
        for key, value in (("backend_secret", BACKEND_SECRET), ("backend_token", BACKEND_TOKEN),
                           ("admin_token", ADMIN_TOKEN)):
            path = os.path.join(folder, key)
            with open(path, "w") as f:
                f.write(value + "\n")
            self.files[key + "_file"] = path
        return self.files

    def test_no_secret_in_check_config(self):
        out = subprocess.run(self.gw.argv() + ["--check-config"], capture_output=True,
                             timeout=10)
        text = (out.stdout + out.stderr).decode("utf-8", "replace")
        self.assertEqual(out.returncode, 0, text)
        self.assert_no_secret(text, "--check-config")
        for key, path in self.files.items():
            self.assertIn("\n%s = %s\n" % (key, path), text)
            self.assertIn("\n%s = ***\n" % key[:-len("_file")], text)


class RecentFailuresTests(FaultCase):
    """/status's recent_failures say what failed and how, never what the
    backend's reply held: jansson quotes the text it stopped at
    ("... near 'xyz'"), and the entry stops before that."""

    MARKER = "BodyMarkerQ7" + "".join(c for c in PASSWORD if c.isalnum())
    BACKEND_KW = {"users": {"alice": PASSWORD}}

    def test_no_body_in_recent_failures(self):
        self.be.plan("list", fb.status(200, '{"messages": %s}' % self.MARKER))
        r = self.raw()
        r.cmd("USER alice")
        # The listing is fetched at login: its broken reply fails the login
        # with [SYS/TEMP] (or the next command, were it fetched later).
        reply = r.cmd("PASS " + PASSWORD)
        if reply.startswith(b"+OK"):
            reply = r.cmd("STAT")
        self.assertTrue(reply.startswith(b"-ERR [SYS/TEMP]"), reply)
        r.close()

        def failures():
            st = json.loads(admin_get(self.admin_port, "/status")[1])
            return st["recent_failures"] if len(st["recent_failures"]) >= 1 else None
        deadline = time.monotonic() + harness.upper(5)
        while not (got := failures()) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertTrue(got, "no recent failure in /status")
        text = admin_get(self.admin_port, "/status")[1].decode()
        self.assertNotIn("BodyMarker", text)
        self.assertNotIn(PASSWORD, text)
        listing = [f for f in got if f["event"] == "list"]
        self.assertEqual(len(listing), 1, got)
        self.assertEqual(listing[0]["http_status"], 200)
        self.assertIsNone(listing[0]["transport_error"])
        self.assertTrue(listing[0]["reason"].startswith("list: invalid JSON"), listing[0])
        self.assertNotIn(" near ", listing[0]["reason"])
        self.assertRegex(listing[0]["session"], r"^[0-9a-f]{16}$")


# ---------------------------------------------------------------- injection

SYS_TEMP_AUTH = "-ERR [SYS/TEMP] authentication is unavailable now, try again later\r\n"

EVIL = [
    "bad\r\n+OK injected",
    "bad\n+OK injected\r\n.\r\n",
    "[SYS/PERM] [OK] forged code",
    "  [IN-USE]   spaced",
    "ctl\x00\x01\x07\x1b[2J\x7fend",
    "t\tab",
    "unicode \u00e9\u2028\u2029line",
    "x" * 5000,
    "\r\n",
    "[AUTH]",
]


def sanitised(msg, default):
    """What docs/webhooks.md section 11 says the client sees."""
    out = "".join(" " if c == "\t" else c for c in msg if c == "\t" or 0x20 <= ord(c) <= 0x7e)
    out = out.lstrip(" ")
    while True:
        m = re.match(r"\[[^\]]*\]\s*", out)
        if not m:
            break
        out = out[m.end():].lstrip(" ")
    out = out[:160].rstrip(" ")
    return out or default


class InjectionTests(FaultCase):

    def single_line(self, r, st):
        self.assertTrue(st.endswith(b"\r\n"))
        self.assertEqual(st.count(b"\n"), 1)
        self.assertLessEqual(len(st), 512)
        self.assertTrue(all(0x20 <= c <= 0x7e for c in st[:-2]), st)
        self.assertEqual(r.pending(0.2), b"", "bytes after the -ERR line")

    def test_refusal_message(self):
        for msg in EVIL:
            with self.subTest(msg=msg[:30]):
                self.be.plan("authenticate", fb.reply_json({"ok": False, "message": msg}))
                r = self.raw()
                r.cmd("USER alice")
                st = r.cmd("PASS wrong")
                self.single_line(r, st)
                want = "-ERR [AUTH] " + sanitised(msg, "invalid user name or password")
                if "\x00" in msg:
                    # jansson refuses \u0000 in strings: the reply counts as
                    # invalid, which is just as safe.
                    self.assertIn(st.decode(), (want + "\r\n", SYS_TEMP_AUTH))
                else:
                    self.assertEqual(st.decode(), want + "\r\n")
                self.assertTrue(r.cmd("NOOP").startswith(b"-ERR"))  # still AUTHORIZATION
                r.close()

    def test_refusal_status_bodies(self):
        for code, prefix in ((423, "[IN-USE]"), (429, "[LOGIN-DELAY]")):
            with self.subTest(code=code):
                self.be.plan("authenticate", fb.status(code, {"message": "a\r\n+OK b\x01c"}))
                r = self.raw()
                r.cmd("USER alice")
                st = r.cmd("PASS x")
                self.single_line(r, st)
                self.assertEqual(st, ("-ERR %s a+OK bc\r\n" % prefix).encode())
                r.close()
        # 401 and 403 refuse the webhook, not the login: the body's text
        # never reaches the client.
        for code in (401, 403):
            with self.subTest(code=code):
                self.be.plan("authenticate", fb.status(code, {"message": "a\r\n+OK b\x01c"}))
                r = self.raw()
                r.cmd("USER alice")
                st = r.cmd("PASS x")
                self.single_line(r, st)
                self.assertEqual(st.decode(), SYS_TEMP_AUTH)
                r.close()

    def test_refusal_codes_cannot_be_forged(self):
        self.be.plan("authenticate", fb.reply_json({"ok": False, "code": "SYS/PERM",
                                                    "message": "[SYS/TEMP] x"}))
        r = self.raw()
        r.cmd("USER alice")
        self.assertEqual(r.cmd("PASS x"), b"-ERR [SYS/PERM] x\r\n")

    def test_oauth_error_path(self):
        self.be.plan("authenticate", fb.reply_json({"ok": False,
                                                    "message": "no\r\n+OK token accepted"}))
        r = self.raw()
        st = r.step("AUTH XOAUTH2 " + b64("user=alice\x01auth=Bearer x\x01\x01"))
        self.assertTrue(st.startswith(b"+ "), st)
        self.assertEqual(st.count(b"\n"), 1)
        st = r.step("")
        self.single_line(r, st)
        self.assertEqual(st, b"-ERR [AUTH] no+OK token accepted\r\n")

    def test_user_name_from_backend(self):
        self.be.plan("authenticate", fb.reply_json({"ok": True, "user": "al\r\nice"}))
        r = self.raw()
        r.cmd("USER alice")
        st = r.cmd("PASS secret1")
        self.single_line(r, st)
        self.assertTrue(st.startswith(b"-ERR [SYS/TEMP]"), st)


class ConnectInjectionTests(FaultCase):
    GATEWAY_ARGS = {"events": "connect"}

    def test_connect_refusal_message(self):
        self.be.plan("connect", fb.reply_json({"ok": False, "message": "go away\r\n+OK welcome"}))
        s = socket.create_connection((HOST, self.gw.port), timeout=5)
        data, closed = read_until_close(s, 3)
        s.close()
        self.assertTrue(closed)
        self.assertEqual(data, b"-ERR go away+OK welcome\r\n")
        self.be.plan("connect", fb.reply_json({"ok": False, "message": "[SYS/TEMP]\r\n.\r\n"}))
        s = socket.create_connection((HOST, self.gw.port), timeout=5)
        data, closed = read_until_close(s, 3)
        s.close()
        # CR/LF removed, then the leading [...] group: "." is what is left.
        self.assertEqual(data, b"-ERR .\r\n")
        # A 403 refuses the webhook, not the client: its text is not shown.
        self.be.plan("connect", fb.status(403, {"message": "[SYS/TEMP]\r\n.\r\n"}))
        s = socket.create_connection((HOST, self.gw.port), timeout=5)
        data, closed = read_until_close(s, 3)
        s.close()
        self.assertEqual(data, b"-ERR [SYS/TEMP] service unavailable, try again later\r\n")
        self.be.plan("connect", fb.garbage())
        s = socket.create_connection((HOST, self.gw.port), timeout=5)
        data, closed = read_until_close(s, 3)
        s.close()
        self.assertEqual(data, b"-ERR [SYS/TEMP] service unavailable, try again later\r\n")
        self.normal_session()


# ---------------------------------------------------------------- privileges


def free_privileged_port():
    for port in range(990, 600, -1):
        s = socket.socket()
        try:
            s.bind((HOST, port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise unittest.SkipTest("no free port below 1024")


def proc_ids(pid):
    ids = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("Uid", "Gid", "Groups", "CapEff", "CapPrm"):
                ids[k] = v.split()
    return ids


@unittest.skipUnless(os.geteuid() == 0, "needs root")
class PrivilegeDropTests(unittest.TestCase):

    def setUp(self):
        self.be = fb.FakeBackend().start()
        self.addCleanup(self.be.stop)
        self.nobody = pwd.getpwnam("nobody")

    def start(self, port, args):
        gw = Gateway(self.be, port=port, args=dict(FAULT_DEFAULTS, user="nobody", **args))
        self.addCleanup(gw.stop_clean)
        gw.start()
        return gw

    def check_dropped(self, gw):
        deadline = time.monotonic() + 5
        while "dropped privileges" not in gw.log() and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertIn("dropped privileges", gw.log())
        ids = proc_ids(gw.pid)
        self.assertEqual(ids["Uid"], [str(self.nobody.pw_uid)] * 4, ids)
        self.assertEqual(ids["Gid"], [str(self.nobody.pw_gid)] * 4, ids)
        self.assertEqual(ids["Groups"], [], "supplementary groups kept: %r" % ids)
        self.assertEqual(int(ids["CapEff"][0], 16), 0, ids)
        self.assertEqual(int(ids["CapPrm"][0], 16), 0, ids)
        # Every thread, not only the main one.
        for tid in os.listdir("/proc/%d/task" % gw.pid):
            with open("/proc/%d/task/%s/status" % (gw.pid, tid)) as f:
                uid = [l.split()[1:] for l in f if l.startswith("Uid:")][0]
            self.assertEqual(uid, [str(self.nobody.pw_uid)] * 4, "thread %s" % tid)

    def test_drops_after_binding_privileged_port(self):
        port = free_privileged_port()
        gw = self.start(port, {"admin_listen": ""})
        self.check_dropped(gw)
        # The privileged port was bound before the drop and serves.
        r = harness.Raw(gw.port)
        r.login("alice", "secret1")
        self.assertTrue(r.cmd("STAT").startswith(b"+OK"))
        r.cmd("QUIT")
        r.close()

    def test_admin_on_privileged_port(self):
        """The admin port, like the POP3 ports, is bound before the drop:
        a port below 1024 works with user=nobody."""
        port = free_privileged_port()
        admin = port - 1
        while admin > 600:
            s = socket.socket()
            try:
                s.bind((HOST, admin))
                break
            except OSError:
                admin -= 1
            finally:
                s.close()
        try:
            gw = self.start(free_port(), {"admin_listen": "%s:%d" % (HOST, admin)})
        except harness.StartError as e:
            lines = [l for l in str(e).splitlines() if "level=error" in l]
            self.fail("gateway did not start with admin_listen on port %d and user=nobody: %s"
                      % (admin, " | ".join(lines) or str(e)[-400:]))
        self.check_dropped(gw)
        self.assertEqual(admin_get(admin, "/healthz")[0], 200)

    def test_unknown_user_refuses_to_start(self):
        """A `user` that does not exist: the gateway exits non-zero, saying
        why, and never serves a client (it would serve it as root)."""
        port = free_port()
        gw = Gateway(self.be, port=port, args=dict(FAULT_DEFAULTS, user="no-such-user-pop3gw"))
        gw._spawn()
        self.addCleanup(gw.stop)
        served = []
        deadline = time.monotonic() + 5

        def knock():
            # Connect again and again while the process lives: the window in
            # which it would serve is a few milliseconds wide.
            while gw.proc.poll() is None and time.monotonic() < deadline:
                try:
                    s = socket.create_connection((HOST, port), timeout=0.5)
                except OSError:
                    time.sleep(0.001)
                    continue
                try:
                    data = s.recv(200)
                except OSError:
                    data = b""
                finally:
                    s.close()
                if data:
                    served.append(data)
        knockers = [threading.Thread(target=knock) for _ in range(4)]
        for t in knockers:
            t.start()
        for t in knockers:
            t.join()
        rc = gw.proc.wait(timeout=10)
        self.assertNotEqual(rc, 0)
        self.assertIn("no such user", gw.log())
        self.assertEqual(served, [], "clients were served before the gateway gave up on "
                         "user=no-such-user-pop3gw (as root): %r" % served[:3])
