"""The admin HTTP endpoint: /healthz, /readyz, /status, /metrics, /sessions
and the dashboard page, the bearer token, and counters that move by exactly
what a session did.

Every gateway here enables the admin endpoint on a free loopback port (the
harness default disables it). `promtool check metrics` runs when promtool is
installed (Debian package `prometheus`); without it that test is skipped.
"""

import base64
import collections
import hashlib
import http.client
import http.server
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
import unittest

from harness import HOST, Backend, Gateway, MailRoot, StackTestCase, free_port, new_dir, upper

TOKEN = "s3cr3t-admin-token"
PROTECTED = ("/status", "/metrics", "/sessions", "/history", "/")
WAIT = upper(10.0)  # seconds any polled condition gets (scaled by PGW_TIME_SCALE)


# ------------------------------------------------------------------ helpers


def http_get(port, path, token=None, method="GET", headers=None, host=HOST, body=None,
             timeout=10, source=None):
    """One request to the admin endpoint: (status, headers dict, body bytes).
    `source` binds the client's side to that local address."""
    c = http.client.HTTPConnection(host, port, timeout=timeout,
                                   source_address=(source, 0) if source else None)
    try:
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = "Bearer " + token
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def wait_until(pred, what, timeout=WAIT):
    """Polls pred() until it returns something true; returns that."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.02)


def parse_metrics(text):
    """Prometheus text to ({(name, ((label, value), ...)): float}, {name: type})."""
    samples, types = {}, {}
    line_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')
    label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ", 3)
            types[name] = typ
            continue
        if not line or line.startswith("#"):
            continue
        m = line_re.match(line)
        if not m:
            raise AssertionError("not a sample line: %r" % line)
        labels = tuple(sorted(label_re.findall(m.group(2) or "")))
        samples[(m.group(1), labels)] = float(m.group(3))
    return samples, types


def metric(samples, name, **labels):
    key = (name, tuple(sorted(labels.items())))
    if key not in samples:
        raise AssertionError("no sample %s%r" % (name, labels))
    return samples[key]


class Client:
    """A POP3 client on a bare socket that counts every octet it sends and
    receives, so the gateway's byte counters can be checked exactly."""

    def __init__(self, port):
        self.sock = socket.create_connection((HOST, port), timeout=10)
        self.buf = b""
        self.sent = 0
        self.received = 0
        self.greeting = self.line()

    @property
    def local_port(self):
        return self.sock.getsockname()[1]

    def _fill(self):
        data = self.sock.recv(65536)
        self.received += len(data)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def cmd(self, text):
        data = text.encode() + b"\r\n"
        self.sock.sendall(data)
        self.sent += len(data)
        return self.line()

    def multi(self, text):
        st = self.cmd(text)
        if st.startswith(b"+OK"):
            while self.line() != b".":
                pass
        return st

    def quit(self):
        """QUIT, then read to the end so every octet sent is counted."""
        st = self.cmd("QUIT")
        self.sock.settimeout(10)
        try:
            while True:
                self._fill()
        except EOFError:
            pass
        self.sock.close()
        return st

    def close(self):
        self.sock.close()


class AdminMixin:
    """Starts stacks with the admin endpoint on; offers JSON and metrics getters."""

    ADMIN_TOKEN = TOKEN
    WORKERS = "2"

    @classmethod
    def start_stack(cls, owner):
        cls.admin_port = free_port()
        args = dict(cls.GATEWAY_ARGS)
        args.update({"admin_listen": "%s:%d" % (HOST, cls.admin_port), "workers": cls.WORKERS})
        if cls.ADMIN_TOKEN:
            args["admin_token"] = cls.ADMIN_TOKEN
        cls.GATEWAY_ARGS = args
        stack = super().start_stack(owner)
        cls.wait_admin()
        return stack

    @classmethod
    def wait_admin(cls):
        def ready():
            try:
                return http_get(cls.admin_port, "/readyz")[0] == 200
            except OSError:
                return False
        wait_until(ready, "/readyz to answer 200")

    def get(self, path, expect=200):
        status, headers, body = http_get(self.admin_port, path, token=self.ADMIN_TOKEN)
        self.assertEqual(status, expect, "%s answered %d: %r" % (path, status, body[:300]))
        return headers, body

    def status(self):
        return json.loads(self.get("/status")[1])

    def sessions(self):
        return json.loads(self.get("/sessions")[1])

    def metrics(self):
        return parse_metrics(self.get("/metrics")[1].decode())[0]

    def settled_status(self, base):
        """/status once no connection of ours is open and no call is in flight."""
        def idle():
            st = self.status()
            ok = (st["connections"]["active"] == base["connections"]["active"] and
                  st["sessions"]["total"] == base["sessions"]["total"] and
                  st["webhooks"]["inflight"] == 0)
            return st if ok else None
        return wait_until(idle, "the gateway to become idle")


# ---------------------------------------------------------------- the token


class AdminTokenTests(AdminMixin, StackTestCase):

    def test_healthz_and_readyz_need_no_token(self):
        for path in ("/healthz", "/readyz"):
            for token in (None, "wrong"):
                status, headers, body = http_get(self.admin_port, path, token=token)
                self.assertEqual(status, 200, (path, body))
                self.assertTrue(headers["content-type"].startswith("application/json"))
        health = json.loads(http_get(self.admin_port, "/healthz")[2])
        self.assertEqual(health, {"status": "ok", "workers": 2, "answered": 2})
        self.assertEqual(json.loads(http_get(self.admin_port, "/readyz")[2]),
                         {"status": "ready"})

    def test_missing_or_wrong_token_gets_401(self):
        wrong = [None, "", "wrong", TOKEN + "x", TOKEN[:-1], TOKEN.upper()]
        for path in PROTECTED:
            for token in wrong:
                status, headers, _ = http_get(self.admin_port, path, token=token)
                self.assertEqual(status, 401, "%s with token %r" % (path, token))
                self.assertTrue(headers.get("www-authenticate", "").startswith("Bearer"),
                                headers)
            # Another scheme with the right secret is not a bearer token.
            basic = base64.b64encode(("admin:" + TOKEN).encode()).decode()
            status, _, _ = http_get(self.admin_port, path,
                                    headers={"Authorization": "Basic " + basic})
            self.assertEqual(status, 401, path)
            status, _, body = http_get(self.admin_port, path, token=TOKEN)
            self.assertEqual(status, 200, (path, body[:200]))
        # The scheme name is case-insensitive (RFC 7235).
        status, _, _ = http_get(self.admin_port, "/status",
                                headers={"Authorization": "bearer " + TOKEN})
        self.assertEqual(status, 200)

    def test_query_token_only_for_the_page(self):
        status, headers, body = http_get(self.admin_port, "/?token=" + TOKEN)
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-type"].startswith("text/html"), headers)
        self.assertIn(b"<canvas", body)
        self.assertEqual(http_get(self.admin_port, "/?token=wrong")[0], 401)
        for path in ("/status", "/metrics", "/sessions"):
            self.assertEqual(http_get(self.admin_port, path + "?token=" + TOKEN)[0], 401, path)

    def test_dashboard_is_self_contained(self):
        headers, body = self.get("/")
        page = body.decode()
        self.assertNotRegex(page, r"(?i)(src|href)\s*=\s*['\"]?(https?:)?//",
                            "the page loads something from elsewhere")
        self.assertNotRegex(page, r"(?i)<link[^>]+stylesheet")
        self.assertNotRegex(page, r"(?i)@import")
        for el in ("active-connections", "logins-ok", "logins-failed", "webhook-calls",
                   "commands-total", "sessions-body", "chart-sessions", "chart-latency"):
            self.assertIn("id='%s'" % el, page)
        csp = headers.get("content-security-policy", "")
        self.assertIn("default-src 'none'", csp)
        self.assertIn("connect-src 'self'", csp)

    def test_unknown_path_and_method(self):
        self.assertEqual(http_get(self.admin_port, "/nope", token=TOKEN)[0], 404)
        status, headers, _ = http_get(self.admin_port, "/status", token=TOKEN, method="POST",
                                      body=b"x=1")
        self.assertEqual(status, 405)
        self.assertIn("GET", headers.get("allow", ""))
        status, headers, body = http_get(self.admin_port, "/status", token=TOKEN,
                                         method="HEAD")
        self.assertEqual((status, body), (200, b""))

    def test_keep_alive(self):
        """The dashboard polls two documents a second over kept-alive connections."""
        c = http.client.HTTPConnection(HOST, self.admin_port, timeout=10)
        try:
            for path in ("/status", "/sessions", "/metrics", "/status"):
                c.request("GET", path, headers={"Authorization": "Bearer " + TOKEN})
                r = c.getresponse()
                r.read()
                self.assertEqual(r.status, 200)
                self.assertNotEqual(r.getheader("Connection", "").lower(), "close", path)
        finally:
            c.close()


class AdminTokenFileTests(unittest.TestCase):
    """admin_token_file: the token is read from a file at start and again
    on SIGHUP; a file that no longer reads leaves the running token."""

    def test_token_from_file_and_sighup(self):
        root = MailRoot()
        self.addCleanup(root.remove)
        backend = Backend(root)
        self.addCleanup(backend.stop_clean)
        backend.start()
        path = os.path.join(new_dir("admin-token"), "token")
        with open(path, "w") as f:
            f.write("first-token\n")
        port = free_port()
        gw = Gateway(backend, name="gateway-token-file", args={
            "admin_listen": "%s:%d" % (HOST, port), "admin_token_file": path})
        self.addCleanup(gw.stop_clean)
        gw.start()
        wait_until(lambda: http_get(port, "/readyz")[0] == 200, "/readyz")
        self.assertEqual(http_get(port, "/status", token="first-token")[0], 200)
        self.assertEqual(http_get(port, "/status", token="second-token")[0], 401)
        self.assertEqual(http_get(port, "/status")[0], 401)

        def sighup(expect):
            before = gw.log().count(expect)
            os.kill(gw.pid, signal.SIGHUP)
            wait_until(lambda: gw.log().count(expect) > before, expect)
        with open(path, "w") as f:
            f.write("second-token\r\n")
        sighup("SIGHUP: configuration reloaded")
        self.assertEqual(http_get(port, "/status", token="second-token")[0], 200)
        self.assertEqual(http_get(port, "/status", token="first-token")[0], 401)
        os.unlink(path)
        sighup("SIGHUP: configuration refused")
        self.assertIn("admin_token_file: cannot read", gw.log())
        self.assertEqual(http_get(port, "/status", token="second-token")[0], 200)
        log = "\n".join(l for l in gw.log().splitlines() if not l.startswith("$ "))
        self.assertNotIn("first-token", log)
        self.assertNotIn("second-token", log)


# ------------------------------------------------------------- the counters


class AdminCounterTests(AdminMixin, StackTestCase):

    def test_counters_move_by_what_sessions_did(self):
        base = self.settled_status(self.status())
        base_m = self.metrics()
        sent = received = 0

        # 1: USER/PASS, a full read-only session and one bad command.
        a = Client(self.gw.port)
        self.assertTrue(a.cmd("USER alice").startswith(b"+OK"))
        self.assertTrue(a.cmd("PASS secret1").startswith(b"+OK"))
        self.assertTrue(a.cmd("STAT").startswith(b"+OK"))
        self.assertTrue(a.multi("LIST").startswith(b"+OK"))
        self.assertTrue(a.multi("UIDL").startswith(b"+OK"))
        self.assertTrue(a.multi("RETR 1").startswith(b"+OK"))
        self.assertTrue(a.cmd("BOGUS").startswith(b"-ERR"))
        self.assertTrue(a.cmd("NOOP").startswith(b"+OK"))
        self.assertTrue(a.quit().startswith(b"+OK"))
        # 2: a failed USER/PASS login.
        b = Client(self.gw.port)
        b.cmd("USER alice")
        self.assertTrue(b.cmd("PASS not-the-password").startswith(b"-ERR"))
        b.quit()
        # 3: APOP.
        c = Client(self.gw.port)
        ts = re.search(rb"<[^>]+>", c.greeting).group(0)
        digest = hashlib.md5(ts + b"secret1").hexdigest()
        self.assertTrue(c.cmd("APOP alice " + digest).startswith(b"+OK"))
        c.quit()
        # 4: AUTH PLAIN with an initial response.
        d = Client(self.gw.port)
        plain = base64.b64encode(b"\0alice\0secret1").decode()
        self.assertTrue(d.cmd("AUTH PLAIN " + plain).startswith(b"+OK"))
        d.quit()
        for cl in (a, b, c, d):
            sent += cl.sent
            received += cl.received

        st = self.settled_status(base)
        m = self.metrics()

        def delta(path):
            x, y = base, st
            for k in path.split("."):
                x, y = x[k], y[k]
            return y - x

        self.assertEqual(delta("connections.total"), 4)
        self.assertEqual(delta("connections.refused"), 0)
        self.assertEqual(delta("logins.ok.USER"), 1)
        self.assertEqual(delta("logins.ok.APOP"), 1)
        self.assertEqual(delta("logins.ok.PLAIN"), 1)
        self.assertEqual(delta("logins.failed.USER"), 1)
        self.assertEqual(delta("logins.ok_total"), 3)
        self.assertEqual(delta("logins.failed_total"), 1)
        # a: 9 lines (BOGUS included), b: 3, c: 2, d: 2
        self.assertEqual(delta("pop3.commands"), 16)
        self.assertEqual(delta("pop3.bad_commands"), 1)
        self.assertEqual(delta("pop3.messages_retrieved"), 1)
        self.assertEqual(delta("pop3.messages_deleted"), 0)
        self.assertEqual(delta("bytes.in"), sent)
        self.assertEqual(delta("bytes.out"), received)
        expected_calls = {"authenticate": 4, "list": 3, "uidl": 0, "retrieve": 1, "quit": 3,
                          "connect": 0, "disconnect": 0}
        for event, n in expected_calls.items():
            self.assertEqual(delta("webhooks.events.%s.calls" % event), n, event)
            self.assertEqual(delta("webhooks.events.%s.errors" % event), 0, event)
            self.assertEqual(delta("webhooks.events.%s.latency.count" % event), n, event)
        self.assertEqual(delta("webhooks.calls"), sum(expected_calls.values()))
        self.assertEqual(st["backend"]["state"], "ok")
        self.assertIsNotNone(st["backend"]["last_ok"])

        # The same numbers through /metrics.
        def mdelta(name, **labels):
            return metric(m, name, **labels) - metric(base_m, name, **labels)

        self.assertEqual(mdelta("pop3gw_connections_total"), 4)
        self.assertEqual(mdelta("pop3gw_logins_total", method="USER", result="ok"), 1)
        self.assertEqual(mdelta("pop3gw_logins_total", method="USER", result="failed"), 1)
        self.assertEqual(mdelta("pop3gw_logins_total", method="APOP", result="ok"), 1)
        self.assertEqual(mdelta("pop3gw_logins_total", method="PLAIN", result="ok"), 1)
        self.assertEqual(mdelta("pop3gw_commands_total"), 16)
        self.assertEqual(mdelta("pop3gw_bad_commands_total"), 1)
        self.assertEqual(mdelta("pop3gw_received_bytes_total"), sent)
        self.assertEqual(mdelta("pop3gw_sent_bytes_total"), received)
        self.assertEqual(mdelta("pop3gw_messages_retrieved_total"), 1)
        for event, n in expected_calls.items():
            self.assertEqual(mdelta("pop3gw_webhook_calls_total", event=event), n, event)
            self.assertEqual(mdelta("pop3gw_webhook_duration_seconds_count", event=event), n)
            self.assertEqual(mdelta("pop3gw_webhook_duration_seconds_bucket", event=event,
                                    le="+Inf"), n)
            for reason in ("timeout", "connect", "status", "body", "broken", "refused"):
                self.assertEqual(mdelta("pop3gw_webhook_errors_total", event=event,
                                        reason=reason), 0)
        self.assertEqual(metric(m, "pop3gw_connections_active"), st["connections"]["active"])
        self.assertEqual(metric(m, "pop3gw_backend_failing"), 0)

    def test_sessions_lists_live_sessions(self):
        base = self.settled_status(self.status())
        bob = Client(self.gw.port)
        bob.cmd("USER bob")
        self.assertTrue(bob.cmd("PASS pass word 2").startswith(b"+OK"))
        anon = Client(self.gw.port)
        try:
            ss = self.sessions()
            self.assertTrue(ss["complete"])
            self.assertEqual((ss["workers"], ss["answered"]), (2, 2))
            self.assertEqual(ss["count"], len(ss["sessions"]))
            mine = {s["client"]["port"]: s for s in ss["sessions"]}
            self.assertIn(bob.local_port, mine, ss)
            self.assertIn(anon.local_port, mine, ss)
            s = mine[bob.local_port]
            self.assertEqual(s["user"], "bob")
            self.assertEqual(s["state"], "TRANSACTION")
            self.assertEqual(s["client"], {"ip": HOST, "port": bob.local_port, "tls": False})
            self.assertEqual(s["bytes_in"], bob.sent)
            self.assertEqual(s["bytes_out"], bob.received)
            self.assertRegex(s["id"], r"^[0-9a-f]{8,}$")
            self.assertLessEqual(abs(s["since"] - time.time()), 5)
            self.assertIn(s["worker"], (0, 1))
            self.assertIsNone(s["command"])
            t = mine[anon.local_port]
            self.assertEqual(t["state"], "AUTHORIZATION")
            self.assertIsNone(t["user"])
            ids = {s["id"], t["id"]}
            st = self.status()
            self.assertEqual(st["sessions"]["transaction"] - base["sessions"]["transaction"], 1)
            self.assertEqual(st["sessions"]["authorization"] -
                             base["sessions"]["authorization"], 1)
            self.assertEqual(st["connections"]["active"] - base["connections"]["active"], 2)
        finally:
            bob.quit()
            anon.quit()
        wait_until(lambda: not ids & {s["id"] for s in self.sessions()["sessions"]},
                   "closed sessions to leave /sessions")

    def test_status_document(self):
        Client(self.gw.port).quit()
        st = self.status()
        self.assertEqual(st["workers"], 2)
        self.assertFalse(st["draining"])
        self.assertRegex(st["version"], r"^\d+\.\d+")
        self.assertEqual(st["listeners"], [{"host": HOST, "port": self.gw.port, "tls": False}])
        self.assertGreaterEqual(st["uptime_seconds"], 0)
        self.assertLessEqual(abs(st["now"] - time.time()), 5)
        self.assertIn(st["backend"]["state"], ("ok", "unknown"))
        events = st["webhooks"]["events"]
        self.assertEqual(set(events), {"authenticate", "list", "uidl", "retrieve", "quit",
                                       "connect", "disconnect"})
        bounds = st["webhooks"]["bucket_bounds"]
        self.assertEqual(bounds, sorted(bounds))
        for name, e in list(events.items()) + [("all", st["webhooks"])]:
            lat = e["latency"]
            self.assertEqual(len(lat["buckets"]), len(bounds) + 1, name)
            self.assertEqual(sum(lat["buckets"]), lat["count"], name)
            if lat["count"]:
                self.assertLessEqual(lat["p50"], lat["p90"], name)
                self.assertLessEqual(lat["p90"], lat["p99"], name)
                self.assertLessEqual(lat["p99"], bounds[-1], name)
            else:
                self.assertIsNone(lat["p50"], name)

    def test_metrics_format(self):
        Client(self.gw.port).quit()
        headers, body = self.get("/metrics")
        self.assertTrue(headers["content-type"].startswith("text/plain; version=0.0.4"),
                        headers)
        text = body.decode()
        samples, types = parse_metrics(text)
        for (name, labels), _ in samples.items():
            self.assertTrue(name.startswith("pop3gw_"), name)
            family = re.sub(r"_(bucket|sum|count)$", "", name)
            typ = types.get(name) or types.get(family)
            self.assertIsNotNone(typ, "no TYPE for %s" % name)
            if typ == "counter":
                self.assertTrue(name.endswith("_total"), name)
        for name, typ in types.items():
            if typ != "counter":
                self.assertFalse(name.endswith("_total"), name)
        st = self.status()
        self.assertEqual(metric(samples, "pop3gw_info", version=st["version"]), 1)
        self.assertEqual(metric(samples, "pop3gw_up"), 1)
        self.assertEqual(metric(samples, "pop3gw_workers"), 2)
        self.assertEqual(types["pop3gw_webhook_duration_seconds"], "histogram")
        bounds = ["%g" % b for b in st["webhooks"]["bucket_bounds"]] + ["+Inf"]
        for event in st["webhooks"]["events"]:
            counts = [metric(samples, "pop3gw_webhook_duration_seconds_bucket", event=event,
                             le=le) for le in bounds]
            self.assertEqual(counts, sorted(counts), "buckets of %s not cumulative" % event)
            self.assertEqual(counts[-1], metric(samples, "pop3gw_webhook_duration_seconds_count",
                                                event=event))
            self.assertGreaterEqual(metric(samples, "pop3gw_webhook_duration_seconds_sum",
                                           event=event), 0)

    def test_promtool_check_metrics(self):
        promtool = shutil.which("promtool")
        if not promtool:
            self.skipTest("promtool not installed (Debian package `prometheus`)")
        Client(self.gw.port).quit()
        _, body = self.get("/metrics")
        r = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, "promtool: %s %s" % (r.stdout, r.stderr))
        self.assertEqual(r.stdout.strip() + r.stderr.strip(), b"",
                         "promtool found problems: %s %s" % (r.stdout, r.stderr))


class AdminDocsTests(AdminMixin, StackTestCase):
    """docs/admin.md names every metric, and its alert rules load."""

    DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs",
                       "admin.md")

    def doc(self):
        with open(self.DOC, encoding="utf-8") as f:
            return f.read()

    def test_every_metric_is_documented(self):
        _, types = parse_metrics(self.get("/metrics")[1].decode())
        doc = self.doc()
        missing = [n for n in types if "`%s`" % n not in doc]
        self.assertEqual(missing, [], "metrics not described in docs/admin.md")

    def test_alert_rules_in_docs_load(self):
        promtool = shutil.which("promtool")
        if not promtool:
            self.skipTest("promtool not installed (Debian package `prometheus`)")
        blocks = [b for b in re.findall(r"```yaml\n(.*?)```", self.doc(), re.S)
                  if b.startswith("groups:")]
        self.assertEqual(len(blocks), 1, "one rules block expected in docs/admin.md")
        path = os.path.join(new_dir("rules"), "pop3gw-alerts.yml")
        with open(path, "w") as f:
            f.write(blocks[0])
        r = subprocess.run([promtool, "check", "rules", path], capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, "promtool: %s %s" % (r.stdout, r.stderr))


# ---------------------------------------------------------- backend outage


class AdminBackendOutageTests(AdminMixin, StackTestCase):
    """A backend outage shows in /status and /metrics, never in /readyz."""

    SHARED = False

    def test_outage_is_in_status_not_readyz(self):
        c = Client(self.gw.port)
        c.cmd("USER alice")
        self.assertTrue(c.cmd("PASS secret1").startswith(b"+OK"))
        c.quit()
        st = self.settled_status(self.status())
        self.assertEqual(st["backend"]["state"], "ok")
        base = st["webhooks"]["events"]["authenticate"]
        self.backend.stop()

        c = Client(self.gw.port)
        c.cmd("USER alice")
        self.assertTrue(c.cmd("PASS secret1").startswith(b"-ERR [SYS/TEMP]"))
        c.quit()
        st = self.settled_status(st)
        auth = st["webhooks"]["events"]["authenticate"]
        self.assertEqual(st["backend"]["state"], "failing")
        self.assertGreaterEqual(st["backend"]["last_error"], st["backend"]["last_ok"])
        self.assertEqual(auth["calls"] - base["calls"], 1)
        self.assertEqual(auth["errors"] - base["errors"], 1)
        self.assertEqual(auth["errors_by_reason"]["connect"] -
                         base["errors_by_reason"]["connect"], 1)
        m = self.metrics()
        self.assertEqual(metric(m, "pop3gw_backend_failing"), 1)
        self.assertGreaterEqual(metric(m, "pop3gw_webhook_errors_total", event="authenticate",
                                       reason="connect"), 1)
        for path in ("/readyz", "/healthz"):
            status, _, body = http_get(self.admin_port, path)
            self.assertEqual(status, 200, "%s during a backend outage: %r" % (path, body))


# --------------------------------------------------------------- draining


class SlowBackend:
    """A stand-in backend whose authenticate waits until released, so a
    session stays busy while the gateway drains."""

    def __init__(self):
        self.release = threading.Event()
        self.auth_seen = threading.Event()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(n)
                event = self.path.rsplit("/", 1)[-1]
                if event == "authenticate":
                    outer.auth_seen.set()
                    outer.release.wait(20)
                    body = {"ok": True}
                elif event == "list":
                    body = {"messages": []}
                else:
                    body = {}
                data = json.dumps(body).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the gateway went away first

        self.server = http.server.ThreadingHTTPServer((HOST, 0), H)
        self.server.daemon_threads = True
        self.url = "http://%s:%d" % (HOST, self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class AdminDrainTests(AdminMixin, unittest.TestCase):

    def test_readyz_says_draining_after_sigterm(self):
        be = SlowBackend()
        self.addCleanup(be.stop)
        type(self).admin_port = free_port()
        gw = Gateway(None, args={"backend_url": be.url, "shutdown_grace": "10",
                                 "admin_listen": "%s:%d" % (HOST, self.admin_port),
                                 "admin_token": TOKEN, "workers": "2"})
        self.addCleanup(gw.stop)
        gw.start()
        self.wait_admin()
        s = socket.create_connection((HOST, gw.port), timeout=10)
        self.addCleanup(s.close)
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"USER alice\r\nPASS pw\r\n")
        self.assertTrue(be.auth_seen.wait(10), "the backend never got authenticate")
        gw.proc.send_signal(signal.SIGTERM)

        def draining():
            status, _, body = http_get(self.admin_port, "/readyz")
            return (status, json.loads(body)) if status == 503 else None
        status, body = wait_until(draining, "/readyz to say draining")
        self.assertEqual(body["reason"], "draining")
        # The workers are not pinged while draining: none answered.
        self.assertEqual((body["workers"], body["answered"]), (2, 0))
        status, _, body = http_get(self.admin_port, "/healthz")
        self.assertEqual((status, json.loads(body)["status"]), (200, "draining"))
        st = json.loads(http_get(self.admin_port, "/status", token=TOKEN)[2])
        self.assertTrue(st["draining"])
        # Let the busy session finish; the gateway then exits on its own.
        be.release.set()
        self.assertTrue(f.readline().startswith(b"+OK"))  # USER
        try:
            f.readline()  # PASS, answered while draining
            s.sendall(b"QUIT\r\n")
            f.readline()
        except OSError:
            pass  # the drain may close the session after its reply
        wait_until(lambda: gw.proc.poll() is not None, "the gateway to exit", timeout=15)
        self.assertEqual(gw.stop(), 0)


# ------------------------------------------------------------ recent failures


class AdminRecentFailuresTests(AdminMixin, StackTestCase):
    """/status lists the last 50 failed webhook calls, newest first: the quit
    event goes to a path the backend does not have (404), and disconnect,
    which follows a QUIT that failed, to a port nobody listens on (after a
    few, the circuit breaker holds calls back: they fail too)."""

    SHARED = False

    @classmethod
    def start_stack(cls, owner):
        cls.dead_port = free_port()
        cls.GATEWAY_ARGS = {"events": "disconnect",
                            "backend_url_disconnect": "http://%s:%d/gone" % (HOST, cls.dead_port)}
        return super().start_stack(owner)

    def start_failing_stack(self):
        # backend_url_quit needs the backend's port: set once it runs.
        self.gw.stop_clean()
        self.gw = Gateway(self.backend, name="gateway-failing", args=dict(
            self.gw.opts, backend_url_quit=self.backend.url + "/no-such-path"))
        self.addCleanup(self.gw.stop_clean)
        self.gw.start()
        self.wait_admin()

    def failing_session(self):
        c = Client(self.gw.port)
        self.assertTrue(c.cmd("USER alice").startswith(b"+OK"))
        self.assertTrue(c.cmd("PASS secret1").startswith(b"+OK"))
        self.assertTrue(c.cmd("DELE 1").startswith(b"+OK"))
        self.assertTrue(c.quit().startswith(b"-ERR"))  # quit answered 404: nothing deleted

    def test_recent_failures(self):
        self.start_failing_stack()
        self.assertEqual(self.status()["recent_failures"], [])
        self.failing_session()
        got = wait_until(lambda: (lambda f: f if len(f) >= 2 else None)(
            self.status()["recent_failures"]), "two failures in /status")
        self.assertEqual([f["event"] for f in got], ["disconnect", "quit"])  # newest first
        disc, quit_ = got
        self.assertEqual(quit_["http_status"], 404)
        self.assertIsNone(quit_["transport_error"])
        self.assertEqual(quit_["reason"], "quit: HTTP status 404")
        self.assertIsNone(disc["http_status"])
        self.assertEqual(disc["transport_error"], "Couldn't connect to server")
        self.assertRegex(disc["reason"], r"^the transfer failed, attempts: [1-9]\b")
        self.assertEqual(disc["session"], quit_["session"])
        self.assertRegex(disc["session"], r"^[0-9a-f]{16}$")
        self.assertIn("session=%s" % disc["session"], self.gw.log())
        now = self.status()["now"]
        for f in got:
            self.assertLessEqual(now - f["time"], upper(10))
            self.assertGreaterEqual(f["duration_seconds"], 0)
            self.assertLess(f["duration_seconds"], upper(6.0))
        # 26 more sessions: 54 failures in all, the 50 newest kept.
        for _ in range(26):
            self.failing_session()
        got = wait_until(lambda: (lambda st: st["recent_failures"] if st["webhooks"]["errors"] >= 54
                                  else None)(self.status()), "54 webhook errors")
        self.assertEqual(len(got), 50)
        self.assertEqual({f["event"] for f in got}, {"disconnect", "quit"})
        times = [f["time"] for f in got]
        self.assertEqual(times, sorted(times, reverse=True))
        self.assertNotIn(disc["session"], [f["session"] for f in got])  # the oldest are gone


class AdminHistoryTests(AdminMixin, StackTestCase):
    """/history: a sample every 5 seconds of the numbers /status shows."""

    def test_samples_every_five_seconds(self):
        c = Client(self.gw.port)
        self.assertTrue(c.cmd("USER alice").startswith(b"+OK"))
        self.assertTrue(c.cmd("PASS secret1").startswith(b"+OK"))
        h = wait_until(lambda: (lambda d: d if len(d["samples"]) >= 3 else None)(
            json.loads(self.get("/history")[1])), "three samples", timeout=upper(20.0))
        self.assertEqual((h["interval_seconds"], h["keep_seconds"]), (5, 300))
        ts = [x["t_ms"] for x in h["samples"]]
        for a, b in zip(ts, ts[1:]):
            self.assertGreaterEqual(b - a, 5000)
            self.assertLess(b - a, upper(7.0) * 1000)
        self.assertLessEqual(ts[-1], h["now_ms"])
        last = h["samples"][-1]
        st = self.status()
        self.assertEqual(last["connections_active"], 1)
        self.assertEqual(last["sessions_transaction"], 1)
        self.assertEqual(last["logins"], st["logins"]["ok_total"] + st["logins"]["failed_total"])
        self.assertEqual(len(last["latency_buckets"]), len(h["bucket_bounds"]) + 1)
        self.assertEqual(sum(last["latency_buckets"]), last["webhook_calls"])
        c.quit()


# --------------------------------------------------- exposure without a token


def non_loopback_ipv4():
    """A non-loopback IPv4 address of this machine, or None. From `ip`,
    else from the source address a UDP socket would use toward TEST-NET-1
    (no packet is sent); it must be bindable."""
    candidates = []
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True,
                             timeout=5).stdout
        candidates += re.findall(r"\binet (\d+\.\d+\.\d+\.\d+)/", out)
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.connect(("192.0.2.1", 9))
            candidates.append(u.getsockname()[0])
    except OSError:
        pass
    for a in candidates:
        if a.startswith("127.") or a == "0.0.0.0":
            continue
        try:
            with socket.socket() as s:
                s.bind((a, 0))
            return a
        except OSError:
            continue
    return None


EXPOSED_WARNING = "admin endpoint listens beyond loopback without admin_token"


class AdminExposureTests(unittest.TestCase):
    """Without admin_token, /sessions and the dashboard (which name users
    and client addresses) answer loopback clients only, and the start-up
    log warns when the endpoint listens beyond loopback. The endpoint
    listens on 0.0.0.0; the remote client is this machine's own
    non-loopback address, so the gateway sees a non-loopback peer."""

    @classmethod
    def setUpClass(cls):
        cls.remote = non_loopback_ipv4()
        if not cls.remote:
            raise unittest.SkipTest("this machine has no non-loopback IPv4 address")
        cls.root = MailRoot()
        cls.addClassCleanup(cls.root.remove)
        cls.backend = Backend(cls.root)
        cls.addClassCleanup(cls.backend.stop_clean)
        cls.backend.start()

    def start_gateway(self, listen_host, token=None):
        port = free_port()
        args = {"admin_listen": "%s:%d" % (listen_host, port), "workers": "2"}
        if token:
            args["admin_token"] = token
        gw = Gateway(self.backend, args=args, name="gateway-exposure")
        self.addCleanup(gw.stop_clean)
        gw.start()
        wait_until(lambda: http_get(port, "/readyz")[0] == 200, "/readyz")
        return gw, port

    def remote_get(self, port, path, token=None):
        return http_get(port, path, token=token, host=self.remote, source=self.remote)

    def test_no_token_loopback_only(self):
        gw, port = self.start_gateway("0.0.0.0")
        line = wait_until(lambda: [l for l in gw.log().splitlines() if EXPOSED_WARNING in l],
                          "the start-up warning")[0]
        self.assertIn("level=warn", line)
        self.assertIn("hint=\"set admin_token or admin_token_file\"", line)
        # From beyond loopback: 403, with a body that says why.
        status, headers, body = self.remote_get(port, "/sessions")
        self.assertEqual(status, 403, body)
        self.assertTrue(headers["content-type"].startswith("application/json"))
        doc = json.loads(body)
        self.assertEqual(doc["error"], "forbidden")
        self.assertIn("loopback", doc["reason"])
        self.assertIn("admin_token", doc["reason"])
        status, headers, body = self.remote_get(port, "/")
        self.assertEqual(status, 403)
        self.assertTrue(headers["content-type"].startswith("text/html"))
        self.assertIn(b"admin_token", body)
        self.assertNotIn(b"<canvas", body)
        # The paths without names answer as before.
        for path in ("/healthz", "/readyz", "/status", "/metrics", "/history"):
            status, _, body = self.remote_get(port, path)
            self.assertEqual(status, 200, (path, body[:200]))
        # From loopback: everything.
        for path in ("/sessions", "/"):
            self.assertEqual(http_get(port, path)[0], 200, path)
        self.assertIn("admin: refused: without admin_token this path answers loopback only",
                      gw.log())
        self.assertIn("client=%s path=/sessions" % self.remote, gw.log())

    def test_with_token_remote_clients_allowed(self):
        gw, port = self.start_gateway("0.0.0.0", token=TOKEN)
        status, _, body = self.remote_get(port, "/sessions", token=TOKEN)
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["count"], 0)
        self.assertEqual(self.remote_get(port, "/?token=" + TOKEN)[0], 200)
        self.assertEqual(self.remote_get(port, "/sessions")[0], 401)
        self.assertEqual(self.remote_get(port, "/sessions", token="wrong")[0], 401)
        self.assertIn("admin endpoint listening", gw.log())
        self.assertNotIn(EXPOSED_WARNING, gw.log())

    def test_loopback_listener_no_warning(self):
        gw, port = self.start_gateway(HOST)
        self.assertEqual(http_get(port, "/sessions")[0], 200)
        self.assertIn("admin endpoint listening", gw.log())
        self.assertNotIn(EXPOSED_WARNING, gw.log())


# ------------------------------------------------------------ slow clients

HEAD_DEADLINE = 5.0  # admin.c ADMIN_HEAD_S: seconds to send a whole request head
PER_IP = 16  # admin.c ADMIN_MAX_PER_IP: admin connections from one address


class SlowHeaderFlood:
    """`n` connections from each source address, each sending a request line
    and then one more header line every `period` seconds, never ending the
    head. A reader thread notes when each connection is closed."""

    def __init__(self, port, sources, n=40, period=3.0):
        self.conns = []
        self.period = period
        self.stop = threading.Event()
        for src in sources:
            for _ in range(n):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.bind((src, 0))
                s.connect((HOST, port))
                s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n")
                self.conns.append({"sock": s, "src": src, "t0": time.monotonic(), "end": None})
        self.threads = [threading.Thread(target=self._read, daemon=True),
                        threading.Thread(target=self._drip, daemon=True)]
        for t in self.threads:
            t.start()

    def _read(self):
        while not self.stop.is_set():
            live = {c["sock"]: c for c in self.conns if c["end"] is None}
            if not live:
                return
            ready, _, _ = select.select(list(live), [], [], 0.05)
            for s in ready:
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    live[s]["end"] = time.monotonic() - live[s]["t0"]

    def _drip(self):
        n = 0
        while not self.stop.wait(self.period):
            n += 1
            for c in self.conns:
                if c["end"] is None:
                    try:
                        c["sock"].sendall(b"X-Drip-%d: y\r\n" % n)
                    except OSError:
                        pass

    def close(self):
        self.stop.set()
        for t in self.threads:
            t.join(5)
        for c in self.conns:
            c["sock"].close()


class AdminSlowClientTests(AdminMixin, StackTestCase):
    """40 connections from each of two addresses, each sending one header
    line every 3 seconds and never finishing its head, do not keep
    /healthz and /readyz from answering: the endpoint runs on one thread
    that never waits, holds at most 16 connections per address, and cuts a
    connection whose head is not complete within 5 seconds."""

    ADMIN_TOKEN = None

    def probe(self, path):
        """(status, seconds) of one request from 127.0.0.1 on a fresh connection."""
        t0 = time.monotonic()
        try:
            status = http_get(self.admin_port, path, timeout=upper(1.0))[0]
        except (OSError, http.client.HTTPException) as e:
            status = repr(e)
        return status, time.monotonic() - t0

    def test_probes_answer_during_a_slow_header_flood(self):
        flood = SlowHeaderFlood(self.admin_port, ["127.0.0.2", "127.0.0.3"])
        self.addCleanup(flood.close)
        results = []
        until = time.monotonic() + HEAD_DEADLINE + 2.0
        while time.monotonic() < until:
            for path in ("/healthz", "/readyz"):
                results.append((path,) + self.probe(path))
            time.sleep(0.2)
        bad = [r for r in results if r[1] != 200]
        self.assertEqual(bad, [], "%d of %d probes failed" % (len(bad), len(results)))
        self.assertGreaterEqual(len(results), 40)

        # Each address kept PER_IP connections; the rest were closed at once.
        wait_until(lambda: all(c["end"] is not None for c in flood.conns),
                   "every flood connection to be closed", timeout=upper(3.0))
        for src in ("127.0.0.2", "127.0.0.3"):
            ends = sorted(c["end"] for c in flood.conns if c["src"] == src)
            refused = [t for t in ends if t < 1.0]
            held = [t for t in ends if t >= 1.0]
            self.assertEqual(len(held), PER_IP, (src, ends))
            self.assertEqual(len(refused), 40 - PER_IP, (src, ends))
            # The held ones were cut at the head deadline (checked once a
            # second), although each sent a line every 3 s.
            self.assertGreaterEqual(held[0], HEAD_DEADLINE - 0.1, (src, ends))
            self.assertLess(held[-1], upper(HEAD_DEADLINE + 1.5, cap=2 * 3.0 + 2.5), (src, ends))
        self.assertIn("admin: closed connections that sent no whole request in time",
                      self.gw.log())
        # The endpoint serves normally afterwards.
        self.assertEqual(http_get(self.admin_port, "/status")[0], 200)


# ------------------------------------------------------------------- IPv6


def have_ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


class AdminIPv6Tests(unittest.TestCase):

    def test_admin_listen_on_ipv6_literal(self):
        if not have_ipv6_loopback():
            self.skipTest("no IPv6 loopback here")
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        port = s.getsockname()[1]
        s.close()
        root = MailRoot()
        self.addCleanup(root.remove)
        be = Backend(root)
        self.addCleanup(be.stop)
        be.start()
        gw = Gateway(be, args={"admin_listen": "[::1]:%d" % port})
        self.addCleanup(gw.stop_clean)
        gw.start()

        def up():
            try:
                return http_get(port, "/healthz", host="::1")
            except OSError:
                return None
        status, _, body = wait_until(up, "the admin endpoint on [::1]")
        self.assertEqual(status, 200, body)
        # No token configured: /status is open.
        status, _, body = http_get(port, "/status", host="::1")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["workers"], 1)



class WorkerBalanceTests(AdminMixin, StackTestCase):
    """Two workers share the listening socket; a worker holding more than
    its share of the connections (plus 16 and an eighth) stops accepting
    until it is back near its share, so neither ends up with most of them."""
    GATEWAY_ARGS = {"max_connections_per_ip": "1000", "max_connections": "2000"}
    SHARED = False
    N = 240

    def per_worker(self):
        counts = collections.Counter(s["worker"] for s in self.sessions()["sessions"])
        return [counts.get(0, 0), counts.get(1, 0)]

    def test_connections_stay_spread(self):
        held = []
        try:
            for i in range(self.N):
                s = socket.create_connection((HOST, self.gw.port), timeout=10)
                held.append(s)
                self.assertTrue(s.recv(512).startswith(b"+OK"))  # accepted and greeted
            counts = self.per_worker()
            self.assertEqual(sum(counts), self.N, counts)
            share = self.N // 2
            for n in counts:
                self.assertLessEqual(n, share + 16 + share // 8 + 1, counts)
            # Nearly all of one worker's clients leave: the other now holds
            # far more than its share, so the next clients go to the first.
            sessions = self.sessions()["sessions"]
            emptied = max((0, 1), key=lambda w: counts[w])
            ports = {s["client"]["port"] for s in sessions if s["worker"] == emptied}
            keep, left = [], 0
            for s in held:
                if s.getsockname()[1] in ports and left < counts[emptied] - 10:
                    s.close()
                    left += 1
                else:
                    keep.append(s)
            held = keep
            wait_until(lambda: sum(self.per_worker()) == len(held), "the closes to be seen")
            before = self.per_worker()
            for i in range(40):
                s = socket.create_connection((HOST, self.gw.port), timeout=10)
                held.append(s)
                self.assertTrue(s.recv(512).startswith(b"+OK"))
            after = self.per_worker()
            # Random or hashed placement would give it about 20 of the 40.
            self.assertGreaterEqual(after[emptied] - before[emptied], 36, (before, after))
        finally:
            for s in held:
                s.close()
