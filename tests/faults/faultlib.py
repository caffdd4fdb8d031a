"""Shared pieces of the fault suite: a gateway in front of a FakeBackend,
metrics and log helpers, misbehaving-client helpers.

The process handling, the raw POP3 client and the port picking come from
the integration suite's harness (tests/integration/harness.py), imported
here, not copied.
"""

import http.client
import os
import re
import signal
import socket
import struct
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

import harness  # noqa: E402
from harness import (HOST, Gateway, Raw, fd_kinds, free_port, parse_prom,  # noqa: E402,F401
                     sanitized, upper)

from fakebackend import FakeBackend, crlf  # noqa: E402,F401

# Small timeouts keep the suite fast (see tests/faults/README.md).
FAULT_DEFAULTS = {
    "backend_timeout": "1",
    "auth_failure_delay": "0",
    "login_timeout": "2",
    "send_timeout": "2",
    "shutdown_grace": "2",
    "max_auth_failures_per_ip": "100000",
    "log_level": "debug",
    "workers": "1",
}


def dot_stuff(data):
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..")


# ---------------------------------------------------------------- metrics

def admin_get(port, path, timeout=5):
    c = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


# ---------------------------------------------------------------- clients


def rst_close(sock):
    """Closes with a TCP RST (SO_LINGER 0): the peer sees a reset, not a
    FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def raw_from(port, source_ip, timeout=10):
    """A Raw client whose connection comes from another loopback address
    (127.0.0.0/8 all reach the gateway), for per-address limits."""
    r = Raw.__new__(Raw)
    r.timeout = timeout
    r.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    r.sock.settimeout(timeout)
    r.sock.bind((source_ip, 0))
    r.sock.connect((HOST, port))
    r.buf = bytearray()
    r.eof = False
    r.greeting = r.line()
    return r


def read_until_close(sock, timeout):
    """Everything the peer sends until it closes; (data, closed)."""
    sock.settimeout(timeout)
    data = bytearray()
    try:
        while True:
            b = sock.recv(65536)
            if not b:
                return bytes(data), True
            data += b
    except socket.timeout:
        return bytes(data), False
    except ConnectionResetError:
        return bytes(data), True


# ---------------------------------------------------------------- test base
# Every wait below polls until its deadline, which is scaled by
# PGW_TIME_SCALE (harness.upper).


class FaultCase(unittest.TestCase):
    """A FakeBackend and a gateway (admin endpoint on) for each test.

    Each test gets its own pair: the circuit breaker and the per-address
    counters live in the gateway, and a fault test must not leave them to
    the next one."""

    GATEWAY_ARGS = {}
    BACKEND_KW = {}
    EXTRA_ASAN = None  # ASAN_OPTIONS for the gateway (as StackTestCase)

    def setUp(self):
        super().setUp()
        self.be = FakeBackend(**self.BACKEND_KW).start()
        self.addCleanup(self.be.stop)
        self.admin_port = free_port()
        args = dict(FAULT_DEFAULTS)
        args["admin_listen"] = "%s:%d" % (HOST, self.admin_port)
        args.update(self.GATEWAY_ARGS)
        self.gw = Gateway(self.be, args=args, extra_asan=self.EXTRA_ASAN)
        self.addCleanup(self.gw.stop_clean)
        self.gw.start()
        self._wait_admin()
        self.clients = []

    def tearDown(self):
        for r in self.clients:
            try:
                r.close()
            except OSError:
                pass
        super().tearDown()

    def _wait_admin(self):
        deadline = time.monotonic() + upper(10)
        while True:
            try:
                if admin_get(self.admin_port, "/healthz", timeout=1)[0] == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                raise AssertionError("admin endpoint never answered")
            time.sleep(0.05)

    # ---- clients
    def raw(self, timeout=10, **kw):
        r = Raw(self.gw.port, timeout=timeout, **kw)
        self.clients.append(r)
        return r

    def local_port(self, r):
        """The client's port: r is a Raw client or a plain socket."""
        return getattr(r, "sock", r).getsockname()[1]

    def normal_session(self, user="alice", delete=None):
        """A complete, correct session: login, STAT, LIST, UIDL, RETR of
        every message byte-exact, TOP, optional DELE, QUIT. Proves the
        gateway still serves normally after a fault."""
        msgs = self.be._user_msgs(user)
        r = self.raw()
        self.assertTrue(r.greeting.startswith(b"+OK"), r.greeting)
        r.login(user, self.be.users[user])
        st = r.cmd("STAT")
        self.assertEqual(st, b"+OK %d %d\r\n" % (len(msgs), sum(len(crlf(d)) for _, d in msgs)))
        status, body = r.multi("LIST")
        self.assertTrue(status.startswith(b"+OK"), status)
        status, body = r.multi("UIDL")
        self.assertTrue(status.startswith(b"+OK"), status)
        self.assertEqual(body, b"".join(b"%d %s\r\n" % (i + 1, u.encode())
                                        for i, (u, _) in enumerate(msgs)))
        for i, (_, d) in enumerate(msgs):
            status, body = r.multi("RETR %d" % (i + 1))
            self.assertEqual(status, b"+OK %d octets\r\n" % len(crlf(d)))
            self.assertEqual(body, crlf(d))
        if msgs:
            status, body = r.multi("TOP 1 0")
            self.assertTrue(status.startswith(b"+OK"), status)
        for n in delete or ():
            self.assertTrue(r.cmd("DELE %d" % n).startswith(b"+OK"))
        self.assertTrue(r.cmd("QUIT").startswith(b"+OK"))
        r.expect_eof(timeout=5)
        r.close()

    def login_and_stat(self, user="alice"):
        r = self.raw()
        r.login(user, self.be.users[user])
        return r

    # ---- metrics
    def metrics(self):
        status, body = admin_get(self.admin_port, "/metrics")
        self.assertEqual(status, 200)
        return parse_prom(body.decode())

    def metric(self, name, snapshot=None, **labels):
        m = snapshot if snapshot is not None else self.metrics()
        return m.get((name, frozenset(labels.items())), 0.0)

    def wait_metric(self, name, pred, timeout=5.0, **labels):
        deadline = time.monotonic() + upper(timeout)
        while True:
            v = self.metric(name, **labels)
            if pred(v):
                return v
            if time.monotonic() > deadline:
                raise AssertionError("metric %s%r stayed at %r" % (name, labels, v))
            time.sleep(0.05)

    def assert_metric_grew(self, before, name, by=1, **labels):
        """Waits until metric name{labels} is at least `by` above its value
        in the snapshot `before`."""
        old = self.metric(name, before, **labels)
        self.wait_metric(name, lambda v: v >= old + by, **labels)

    # ---- logs
    def log_lines(self):
        return self.gw.log().splitlines()

    def session_id(self, r, timeout=5.0):
        """The session id the gateway gave client r, a Raw client or a
        plain socket (from its debug `connect` line, which names the
        client's port)."""
        port = self.local_port(r)
        pat = re.compile(r"session=([0-9a-f]+) msg=connect client=\S+ port=%d\b" % port)
        deadline = time.monotonic() + upper(timeout)
        while True:
            for line in self.log_lines():
                m = pat.search(line)
                if m:
                    return m.group(1)
            if time.monotonic() > deadline:
                raise AssertionError("no connect line for client port %d" % port)
            time.sleep(0.02)

    def wait_log(self, pattern, timeout=5.0, level=None, since=0):
        """The first log line matching `pattern` (a regex), waiting for it;
        with `level`, only lines of that level or more severe; with `since`
        (a count of log lines), only lines after the first `since`."""
        rx = re.compile(pattern)
        levels = {"error": 0, "warn": 1, "info": 2, "debug": 3}
        deadline = time.monotonic() + upper(timeout)
        while True:
            for line in self.log_lines()[since:]:
                if level:
                    m = re.search(r"\blevel=(\w+)", line)
                    if not m or levels.get(m.group(1), 9) > levels[level]:
                        continue
                if rx.search(line):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError("no log line matches %r; log tail:\n%s" % (
                    pattern, "\n".join(self.log_lines()[-40:])))
            time.sleep(0.02)

    def assert_fault_logged(self, sid, what, timeout=5.0, since=0):
        """A warn/info/error line that names session `sid` (as its
        session field, or inside a webhook-id) and matches `what`: every
        fault leaves one. With `since` (a count of log lines), only lines
        after the first `since` count."""
        rx = re.compile(what)
        deadline = time.monotonic() + upper(timeout)
        while True:
            for line in self.log_lines()[since:]:
                if " level=debug " in line or sid not in line:
                    continue
                if rx.search(line):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError("no info/warn line for session %s matching %r; log tail:\n%s"
                                     % (sid, what, "\n".join(self.log_lines()[-40:])))
            time.sleep(0.02)

    # ---- backend assertions
    def assert_no_quit(self, since=0, session=None):
        qs = [q for q in self.be.requests("quit", since)
              if session is None or q.session == session]
        self.assertEqual(qs, [], "a quit was sent: %r" % qs)

    def assert_not_deleted(self, user="alice"):
        self.assertEqual([u for (w, u) in self.be.committed if w == user], [],
                         "deletions were committed")

    def gateway_fds(self):
        return len(os.listdir("/proc/%d/fd" % self.gw.pid))

    def gateway_fd_kinds(self):
        """The gateway's descriptors by kind: backend (kept-alive backend
        connections, a bounded pool), client, listen, other."""
        return fd_kinds(self.gw.pid, self.be.port)

    def gateway_rss_kb(self):
        return self.gw.status_kb("VmRSS")


def connect_nowait(port):
    """A non-blocking socket whose connect to the gateway has started."""
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect((HOST, port))
    except BlockingIOError:
        pass
    return s


def sigterm(gw):
    gw.proc.send_signal(signal.SIGTERM)
