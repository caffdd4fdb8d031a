"""Harness for pop3gw's integration tests (Python 3 standard library only).

It builds throw-away mail roots for the reference backend (pop3gw-maildir),
starts the backend and the gateway as real processes on free loopback ports,
waits for them by polling (never by sleeping a fixed time), stops them
whatever happens, and offers small POP3 clients (poplib and a raw socket one)
plus the expected CRLF conversions of every stored message.

run.py sets PGW_IT_BUILD to the directory that holds the two binaries.
"""

import atexit
import hashlib
import http.client
import json
import os
import poplib
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HOST = "127.0.0.1"


def _time_scale():
    v = os.environ.get("PGW_TIME_SCALE", "").strip() or "1"
    try:
        scale = float(v)
    except ValueError:
        scale = 0
    if not scale >= 1:
        raise SystemExit("PGW_TIME_SCALE must be a number of at least 1, not %r" % v)
    return scale


# Upper bounds on elapsed times, and the deadlines of waits, are multiplied
# by PGW_TIME_SCALE (default 1; a loaded or slow machine sets 2 or more).
# Lower bounds are never scaled.
TIME_SCALE = _time_scale()


def upper(seconds, cap=None):
    """An upper bound on an elapsed time: `seconds` times PGW_TIME_SCALE,
    but at most `cap`, which a test sets below the time the wrong behaviour
    would take (the deadline it must not wait for), so that a scaled bound
    still tells right from wrong."""
    t = seconds * TIME_SCALE
    return min(t, cap) if cap is not None else t


START_DEADLINE = upper(15.0)  # seconds a process gets to become ready
# No test may hang a run: one that takes longer than this fails with
# TestTimeout (raised from SIGALRM, whatever it was waiting on). The slowest
# test takes about 11 s under valgrind; PGW_TEST_TIMEOUT overrides.
TEST_TIMEOUT = int(os.environ.get("PGW_TEST_TIMEOUT") or upper(300))
STOP_DEADLINE = upper(15.0)  # seconds a process gets to exit after SIGTERM
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # Standard Webhooks test key

# Gateway flags every test gateway gets: one worker, no admin endpoint, a
# fixed host name for APOP timestamps, debug logs, and no failed-login delay
# or lockout so that the tests that fail logins on purpose stay fast.
GATEWAY_DEFAULTS = {
    "admin_listen": "",
    "workers": "1",
    "log_level": "debug",
    "hostname": "test.local",
    "apop": "on",
    "auth_failure_delay": "0",
    "max_auth_failures_per_ip": "100000",
    "shutdown_grace": "3",
    "backend_timeout": "5",
}


# ---------------------------------------------------------------- build dir


def build_dir():
    return os.path.abspath(os.environ.get("PGW_IT_BUILD", "build"))


def binary(name):
    """Path of a built binary; fails the calling test if it is missing."""
    path = os.path.join(build_dir(), name)
    if not os.access(path, os.X_OK):
        raise AssertionError("binary %s not found (build it with `make`)" % path)
    return path


_SANITIZED = None


def sanitized():
    """True when the gateway under test is an AddressSanitizer build (such
    as build/san): its redzones and quarantine make RSS larger, so memory
    bounds have a budget of their own for it."""
    global _SANITIZED
    if _SANITIZED is None:
        try:
            with open(os.path.join(build_dir(), "pop3gw"), "rb") as f:
                _SANITIZED = b"__asan_init" in f.read()
        except OSError:
            _SANITIZED = False
    return _SANITIZED


# Set by tests/faults/valgrind_run.py, which runs every gateway under
# valgrind: its allocator holds freed blocks back (20 MB by default), which
# shows in RSS.
UNDER_VALGRIND = False


# ------------------------------------------------------------- run directory

_run_dir = None
_run_lock = threading.Lock()


def run_dir():
    """One directory per run for logs and mail roots; run.py removes it."""
    global _run_dir
    with _run_lock:
        if _run_dir is None:
            _run_dir = tempfile.mkdtemp(prefix="pop3gw-it-")
        return _run_dir


def new_dir(prefix):
    return tempfile.mkdtemp(prefix=prefix + "-", dir=run_dir())


def free_port():
    """A port that was free a moment ago (bind to 0, read it, close)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((HOST, 0))
        return s.getsockname()[1]
    finally:
        s.close()


# ------------------------------------------------------- message conversions


def crlf(data):
    """A stored message as a POP3 client receives it (before dot-stuffing):
    bare LF becomes CRLF, CRLF stays, and a final CRLF is added if missing."""
    out = re.sub(rb"(?<!\r)\n", b"\r\n", data)
    if not out.endswith(b"\r\n"):
        out += b"\r\n"
    return out


def dot_stuff(data):
    """RFC 1939 byte stuffing of a CRLF message (without the terminator)."""
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..")


def lines_of(expected):
    """The lines of a CRLF message without their line ends."""
    assert expected.endswith(b"\r\n")
    return expected[:-2].split(b"\r\n")


def top_lines(expected, n):
    """Lines of TOP msg n: the header, the blank line, then n body lines."""
    lines = lines_of(expected)
    try:
        blank = lines.index(b"")
    except ValueError:
        return lines
    return lines[: blank + 1 + n]


# --------------------------------------------------------------- mail roots


class Message:
    def __init__(self, uid, data=None, expected=None, size=None, sha256=None, path=None):
        self.uid = uid  # file name; uid = name up to the first ':'
        self.data = data  # stored bytes (None for a big generated file)
        self.expected = crlf(data) if data is not None else expected
        self.size = len(self.expected) if self.expected is not None else size
        self.sha256 = (hashlib.sha256(self.expected).hexdigest()
                       if self.expected is not None else sha256)
        self.path = path


def _uid(n):
    return "17000000%02d.M%dP4242.pop3gw-test" % (n, n)


def alice_messages():
    """(uid, bytes) for alice's mailbox, in maildrop order."""
    body1 = (b"Return-Path: <sender@example.com>\n"
             b"From: Sender <sender@example.com>\n"
             b"To: alice@test.local\n"
             b"Subject: first message\n"
             b"Date: Mon, 06 Nov 2023 10:00:00 +0000\n"
             b"Message-ID: <m1@example.com>\n"
             b"\n"
             b"Hello Alice,\n"
             b"\n"
             b"this is the first message.\n"
             b"It has several lines.\n"
             b"Bye.\n")
    dots = (b"From: dots@example.com\n"
            b"To: alice@test.local\n"
            b"Subject: lines that start with dots\n"
            b"\n"
            b".leading dot line\n"
            b"..two leading dots\n"
            b".\n"
            b"a line after a lone dot\n"
            b"...\n"
            b" .space then dot\n"
            b".\n")
    no_newline = (b"From: nonl@example.com\n"
                  b"Subject: no final newline\n"
                  b"\n"
                  b"first body line\n"
                  b"last line without newline")
    crlf_msg = (b"From: crlf@example.com\r\n"
                b"Subject: already CRLF\r\n"
                b"\r\n"
                b"line one\r\n"
                b".crlf dot line\r\n"
                b"line three\r\n")
    nul = (b"From: nul@example.com\n"
           b"Subject: a NUL byte\n"
           b"\n"
           b"before\x00after\n"
           b"the line after the NUL\n")
    mixed = (b"From: mixed@example.com\r\n"
             b"Subject: mixed line ends\n"
             b"\r\n"
             b"crlf line\r\n"
             b"lf line\n"
             b"another crlf line\r\n" +
             b"x" * 1500 + b"\n" +
             b"last\n")
    return [(_uid(i + 1), m) for i, m in
            enumerate([body1, dots, no_newline, crlf_msg, nul, mixed])]


def bob_messages():
    return [
        ("1700000101.M1P1.pop3gw-test",
         b"From: x@example.com\nSubject: for bob\n\nHi Bob.\n"),
        ("1700000102.M2P1.pop3gw-test",
         b"From: y@example.com\nSubject: bob again\n\nSecond.\n.\nEnd\n"),
    ]


DEFAULT_USERS = {
    "alice": "secret1",
    "bob": "pass word 2",
    "carol": "carolpw",
    "dave": "davepw",
    "erin": "erinpw",  # an empty mailbox
}

# OAuth bearer tokens (third field of the users file). dave's is a few KB,
# as real ones are, so it needs a SASL continuation line longer than 255.
TOKENS = {
    "carol": "tok-carol-123",
    "dave": "ya29." + "".join("abcdefghijklmnopqrstuvwxyz0123456789-_"[(i * 7) % 38]
                              for i in range(4000)),
}


class MailRoot:
    """A Maildir tree for pop3gw-maildir: ROOT/users and ROOT/USER/{new,cur,tmp}.

    alice and carol get the same six messages (carol is for tests that
    delete in a shared stack); bob has two, dave one, erin none.
    """

    def __init__(self, users=None):
        self.path = new_dir("mail")
        self.users = dict(DEFAULT_USERS if users is None else users)
        self.messages = {}  # user -> [Message] in maildrop order
        with open(os.path.join(self.path, "users"), "w") as f:
            for user, pw in self.users.items():
                token = TOKENS.get(user)
                f.write("%s:%s%s\n" % (user, pw, ":" + token if token else ""))
        for user in self.users:
            self.messages[user] = []
            for sub in ("new", "cur", "tmp"):
                os.makedirs(os.path.join(self.path, user, sub), exist_ok=True)
        if "alice" in self.users:
            for uid, data in alice_messages():
                self.add("alice", uid, data)
        if "carol" in self.users:
            for uid, data in alice_messages():
                self.add("carol", uid.replace("pop3gw-test", "carol"), data)
        if "bob" in self.users:
            for uid, data in bob_messages():
                self.add("bob", uid, data)
        if "dave" in self.users:
            self.add("dave", "1700000201.M1P1.dave", b"Subject: for dave\n\nHi Dave.\n")

    def add(self, user, uid, data, sub="new"):
        path = os.path.join(self.path, user, sub, uid)
        with open(path, "wb") as f:
            f.write(data)
        m = Message(uid, data, path=path)
        self.messages[user].append(m)
        return m

    def add_big(self, user, uid, megabytes=50):
        """Writes a generated message of about `megabytes` MB straight to a
        file (never whole in memory) and records its expected size and
        SHA-256 after CRLF conversion. Its lines include dot lines, and it
        ends without a final newline."""
        path = os.path.join(self.path, user, "new", uid)
        lines = []
        for i in range(12000):  # about 1 MB of varied lines
            r = i % 50
            if r == 7:
                lines.append(b".a line that starts with a dot %d" % i)
            elif r == 19:
                lines.append(b".")
            elif r == 31:
                lines.append(b"..two dots %d" % i)
            elif r == 40:
                lines.append(b"")
            else:
                lines.append(b"line %06d " % i + b"abcdefghijklmnopqrstuvwxyz0123456789" * 2)
        block = b"\n".join(lines) + b"\n"
        block_crlf = block.replace(b"\n", b"\r\n")
        h = hashlib.sha256()
        size = 0
        head = (b"From: big@example.com\nTo: %s@test.local\nSubject: big one\n\n"
                % user.encode())
        tail = b"END without a final newline"
        with open(path, "wb") as f:
            f.write(head)
            h.update(crlf(head))
            size += len(crlf(head))
            n = 0
            while size < megabytes * 1024 * 1024:
                marker = b"block %d\n" % n
                f.write(marker)
                f.write(block)
                c = crlf(marker) + block_crlf
                h.update(c)
                size += len(c)
                n += 1
            f.write(tail)
            h.update(tail + b"\r\n")
            size += len(tail) + 2
        m = Message(uid, expected=None, size=size, sha256=h.hexdigest(), path=path)
        self.messages[user].append(m)
        return m

    def uids_on_disk(self, user):
        """uids of the files currently in USER/new and USER/cur."""
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(self.path, user, sub)
            out.extend(name.split(":", 1)[0] for name in os.listdir(d))
        return sorted(out)

    def remove(self):
        shutil.rmtree(self.path, ignore_errors=True)


# ---------------------------------------------------------------- processes

_logs = []  # (name, path) of every process log of this run, for failure dumps
_logs_lock = threading.Lock()


def known_logs():
    with _logs_lock:
        return list(_logs)


def log_tail(path, start=0, max_lines=80):
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
    except OSError:
        return ""
    lines = data.decode("utf-8", "replace").splitlines()
    if len(lines) > max_lines:
        lines = ["... (%d lines cut)" % (len(lines) - max_lines)] + lines[-max_lines:]
    return "\n".join(lines)


_live = set()  # Procs whose process may still run, for the exit handler
_live_lock = threading.Lock()


def stop_all():
    """Kills every child still running (run.py calls it at exit)."""
    with _live_lock:
        procs = list(_live)
    for p in procs:
        try:
            p.stop(sig=signal.SIGKILL, timeout=5)
        except Exception:  # best effort at exit
            pass


class StartError(AssertionError):
    pass


class Proc:
    """A child process with its stdout and stderr in a log file.

    Subclasses build their command line in argv() from self.port and say
    in ready() whether the process answers yet. When the port was picked
    here (not given by the caller) and the process dies because someone
    took the port in the meantime, start() picks another and retries."""

    READY_WHAT = "ready"

    def __init__(self, name, port=None, env=None):
        self.name = name
        self.fixed_port = port is not None
        self.port = port or free_port()
        self.env = env
        self.proc = None
        self.log_path = os.path.join(new_dir("log"), name + ".log")
        self.returncode = None
        self.start_failed = False  # start() raised: already reported
        self.killed = False  # a test killed it on purpose
        with _logs_lock:
            _logs.append((name, self.log_path))

    def argv(self):
        raise NotImplementedError

    def ready(self):
        raise NotImplementedError

    def _spawn(self):
        argv = self.argv()
        with open(self.log_path, "ab") as logf:
            logf.write(("$ %s\n" % " ".join(argv)).encode())
            logf.flush()
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                         stderr=subprocess.STDOUT, env=self.env,
                                         close_fds=True)
        with _live_lock:
            _live.add(self)
        self.returncode = None

    def start(self):
        self.start_failed = True
        for attempt in range(3):
            log_start = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
            self._spawn()
            deadline = time.monotonic() + START_DEADLINE
            while True:
                if self.proc.poll() is not None:
                    tail = log_tail(self.log_path, log_start)
                    if (not self.fixed_port and attempt < 2
                            and re.search(r"(?i)address already in use|EADDRINUSE", tail)):
                        self.stop()
                        self.port = free_port()
                        break  # retry on another port
                    rc = self.proc.returncode
                    self.stop()
                    raise StartError("%s exited with %s while starting; log:\n%s"
                                     % (self.name, rc, tail))
                try:
                    if self.ready():
                        self.start_failed = False
                        return self
                except (OSError, http.client.HTTPException, ValueError):
                    pass
                if time.monotonic() > deadline:
                    self.stop(sig=signal.SIGKILL)
                    raise StartError("%s not %s after %.0fs; log:\n%s" % (
                        self.name, self.READY_WHAT, START_DEADLINE,
                        log_tail(self.log_path, log_start)))
                time.sleep(0.02)
        raise StartError("%s: no free port after 3 tries" % self.name)

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self, what="running"):
        if self.proc is None or self.proc.poll() is not None:
            rc = self.proc.returncode if self.proc is not None else self.returncode
            raise AssertionError("%s exited with %s while %s; log:\n%s" % (
                self.name, rc, what, log_tail(self.log_path)))

    def stop(self, sig=signal.SIGTERM, timeout=STOP_DEADLINE):
        """Signals the process, waits, kills it if it does not exit.
        Returns the exit code, or None if it had to be killed."""
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
                self.returncode = self.proc.returncode
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.returncode = None
        else:
            self.returncode = self.proc.returncode
        self.proc = None
        with _live_lock:
            _live.discard(self)
        return self.returncode

    def kill(self):
        """SIGKILL on purpose (a test simulating a crash)."""
        self.killed = True
        return self.stop(sig=signal.SIGKILL, timeout=10)

    def stop_clean(self):
        """SIGTERM; raises unless the process exits with status 0 in time.
        Quiet when its start already failed or a test killed it."""
        if self.proc is None and (self.start_failed or self.killed):
            return
        was_running = self.alive()
        rc = self.stop()
        if self.start_failed or self.killed:
            return
        if rc != 0:
            how = "on SIGTERM" if was_running else "before the end of the test"
            raise AssertionError("%s did not exit cleanly %s (status %r); log:\n%s"
                                 % (self.name, how, rc, log_tail(self.log_path, max_lines=60)))

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def status_kb(self, field):
        """A field of /proc/PID/status in kB (VmRSS, VmHWM)."""
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise KeyError(field)


def _sanitizer_env(extra_asan=None):
    # POP3GW_* variables are gateway configuration: none leak in from outside.
    env = {k: v for k, v in os.environ.items() if not k.startswith("POP3GW_")}
    asan = env.get("ASAN_OPTIONS", "")
    opts = ["detect_leaks=1", "abort_on_error=0"]
    if extra_asan:
        opts.extend(extra_asan)
    env["ASAN_OPTIONS"] = ":".join([o for o in [asan] + opts if o])
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    return env


class Backend(Proc):
    """pop3gw-maildir serving a MailRoot."""

    READY_WHAT = "answering GET /_stats"

    def __init__(self, root, port=None, args=(), log_requests=True, name="backend"):
        self.root = root
        self.args = list(args)
        self.exe = binary("pop3gw-maildir")
        self.req_log = os.path.join(new_dir("req"), "requests.jsonl") if log_requests else None
        super().__init__(name, port, env=_sanitizer_env())

    def argv(self):
        argv = [self.exe, "--listen=%s:%d" % (HOST, self.port), "--root=%s" % self.root.path]
        if self.req_log:
            argv.append("--log-requests=%s" % self.req_log)
        return argv + self.args

    def ready(self):
        self.stats(timeout=1)
        return True

    @property
    def url(self):
        return "http://%s:%d" % (HOST, self.port)

    def stats(self, timeout=5):
        """GET /_stats: {"connections": N, "requests": {event: n}}."""
        c = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            c.request("GET", "/_stats")
            r = c.getresponse()
            body = r.read()
            if r.status != 200:
                raise ValueError("/_stats answered %d" % r.status)
            return json.loads(body)
        finally:
            c.close()

    def requests(self):
        """The webhook requests received so far, as dicts (body + "_path")."""
        if not self.req_log or not os.path.exists(self.req_log):
            return []
        out = []
        with open(self.req_log, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break  # being written
                line = line.strip()
                if line:
                    out.append(json.loads(line))
        return out

    def wait_requests(self, pred, timeout=5.0, start=0):
        """Polls the request log until pred(requests[start:]) is true
        (timeout scaled by PGW_TIME_SCALE)."""
        deadline = time.monotonic() + upper(timeout)
        while True:
            reqs = self.requests()[start:]
            if pred(reqs):
                return reqs
            if time.monotonic() > deadline:
                raise AssertionError("backend request log never matched; got:\n%s" %
                                     "\n".join(json.dumps(r) for r in reqs))
            time.sleep(0.02)


class Gateway(Proc):
    """pop3gw in front of a Backend."""

    READY_WHAT = "greeting"

    def __init__(self, backend, port=None, args=None, name="gateway", extra_asan=None):
        self.backend = backend
        self.exe = binary("pop3gw")
        self.opts = dict(GATEWAY_DEFAULTS)
        self.opts.update(args or {})
        self.opts.setdefault("backend_url", backend.url if backend else "http://%s:1" % HOST)
        super().__init__(name, port, env=_sanitizer_env(extra_asan))

    def argv(self):
        opts = dict(self.opts, listen="%s:%d" % (HOST, self.port))
        return [self.exe] + ["--%s=%s" % (k, v) for k, v in opts.items() if v is not None]

    def ready(self):
        with socket.create_connection((HOST, self.port), timeout=2) as s:
            line = s.makefile("rb").readline(1024)
        return line.startswith(b"+OK")


# ------------------------------------------------------------------ clients


def pop(gw, timeout=10):
    return poplib.POP3(HOST, gw.port, timeout=timeout)


def login(gw, user="alice", password=None, timeout=10):
    p = pop(gw, timeout)
    p.user(user)
    p.pass_(password if password is not None else DEFAULT_USERS[user])
    return p


class ProtocolError(AssertionError):
    pass


class Raw:
    """A POP3 client on a bare socket that checks the wire format strictly:
    every line ends in CRLF, first reply lines fit in 512 octets, and a
    multi-line reply only has dot lines that are stuffed."""

    def __init__(self, port, timeout=10, rcvbuf=None):
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((HOST, port))
        self.buf = bytearray()
        self.eof = False
        self.greeting = self.line()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self, n=65536):
        """One recv into the buffer; False at EOF."""
        if self.eof:
            return False
        data = self.sock.recv(n)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def recv_some(self, n=65536):
        """Buffered bytes, or one recv of at most n bytes (b'' at EOF)."""
        if not self.buf:
            self._fill(n)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def line(self, limit=70000):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                break
            if len(self.buf) > limit:
                raise ProtocolError("line longer than %d octets" % limit)
            if not self._fill():
                raise EOFError("connection closed by the server (pending %r)" %
                               bytes(self.buf[:200]))
        if not line.endswith(b"\r\n"):
            raise ProtocolError("line without CRLF: %r" % line[:200])
        return line

    def status(self):
        line = self.line()
        if len(line) > 512:
            raise ProtocolError("first reply line longer than 512 octets: %r" % line[:100])
        if not (line.startswith(b"+OK") or line.startswith(b"-ERR")):
            raise ProtocolError("not a status line: %r" % line[:200])
        return line

    def body(self):
        """Reads a multi-line body up to the terminator; returns the
        unstuffed bytes with their CRLFs."""
        out = []
        while True:
            line = self.line()
            if line == b".\r\n":
                return b"".join(out)
            if line.startswith(b"."):
                if not line.startswith(b".."):
                    raise ProtocolError("unstuffed dot line: %r" % line[:200])
                line = line[1:]
            out.append(line)

    def cmd(self, command):
        """Sends one command, returns its status line."""
        if isinstance(command, str):
            command = command.encode()
        self.send(command + b"\r\n")
        return self.status()

    def step(self, line):
        """Sends one line of a SASL exchange; returns the reply line, which
        may also be a continuation ("+ base64")."""
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        reply = self.line()
        if not (reply.startswith(b"+OK") or reply.startswith(b"-ERR")
                or reply.startswith(b"+ ")):
            raise ProtocolError("not a status or continuation line: %r" % reply[:200])
        return reply

    def multi(self, command):
        """Sends one command; returns (status, body or None on -ERR)."""
        st = self.cmd(command)
        if st.startswith(b"+OK"):
            return st, self.body()
        return st, None

    def login(self, user="alice", password=None):
        a = self.cmd("USER " + user)
        b = self.cmd("PASS " + (password if password is not None else DEFAULT_USERS[user]))
        if not b.startswith(b"+OK"):
            raise AssertionError("login failed: %r %r" % (a, b))
        return b

    def expect_eof(self, timeout=5):
        """Reads until the server closes; returns the bytes read meanwhile.
        Raises socket.timeout if the server keeps the connection open."""
        self.sock.settimeout(timeout)
        try:
            while self._fill():
                pass
        finally:
            self.sock.settimeout(self.timeout)
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def pending(self, wait=0.3):
        """Whatever arrives within `wait` seconds (b'' if nothing)."""
        if not self.buf and not self.eof:
            r, _, _ = select.select([self.sock], [], [], wait)
            if r:
                self._fill()
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def close(self):
        self.sock.close()


# ---------------------------------------------------------------- test base


class StackTestCase(unittest.TestCase):
    """A backend and a gateway per class (set SHARED = False for one per
    test). Subclasses set BACKEND_ARGS / GATEWAY_ARGS and may override
    make_root()."""

    SHARED = True
    BACKEND_ARGS = ()
    GATEWAY_ARGS = {}
    EXTRA_ASAN = None

    @classmethod
    def make_root(cls):
        return MailRoot()

    @classmethod
    def start_stack(cls, owner):
        """Starts root, backend and gateway; registers their cleanup on
        `owner` (the class or the test)."""
        root = cls.make_root()
        add_cleanup = owner.addClassCleanup if isinstance(owner, type) else owner.addCleanup
        add_cleanup(root.remove)
        backend = Backend(root, args=cls.BACKEND_ARGS)
        add_cleanup(backend.stop_clean)
        backend.start()
        gw = Gateway(backend, args=cls.GATEWAY_ARGS, extra_asan=cls.EXTRA_ASAN)
        add_cleanup(gw.stop_clean)
        gw.start()
        return root, backend, gw

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if cls.SHARED:
            cls.root, cls.backend, cls.gw = cls.start_stack(cls)

    def setUp(self):
        super().setUp()
        if not self.SHARED:
            self.root, self.backend, self.gw = self.start_stack(self)

    # helpers
    def msgs(self, user="alice"):
        return self.root.messages[user]

    def session_requests(self, start, until="quit"):
        """Requests logged since index `start`, once an `until` event is
        among them (the backend logs a request as it answers it, so a line
        may land just after the client saw the reply); asserts they are all
        from one session and returns them."""
        if until:
            reqs = self.backend.wait_requests(
                lambda rs: any(r.get("event") == until for r in rs), start=start)
        else:
            reqs = self.backend.requests()[start:]
        sessions = {r.get("session") for r in reqs}
        self.assertLessEqual(len(sessions), 1, "requests from several sessions: %r" % reqs)
        return reqs

    def assertErr(self, fn, *args, code=None):
        """Calls a poplib method expecting -ERR (optionally with a response
        code); returns the response line."""
        with self.assertRaises(poplib.error_proto) as cm:
            fn(*args)
        resp = cm.exception.args[0]
        if isinstance(resp, str):
            resp = resp.encode()
        self.assertTrue(resp.startswith(b"-ERR"), "expected -ERR, got %r" % resp)
        if code:
            self.assertTrue(resp.startswith(b"-ERR [" + code.encode() + b"]"),
                            "expected -ERR [%s], got %r" % (code, resp))
        return resp


# ------------------------------------------------------------ reading bodies


def read_body_digest(r, chunk=1 << 20):
    """Reads a multi-line body from Raw client r (its status line already
    read) in big pieces, unstuffing as it goes, without keeping it: returns
    (length, sha256 hex) of the body as the client sees it (CRLF lines,
    without the terminator). Raises ProtocolError on an unstuffed dot line
    and EOFError when the server closes before the terminator."""
    h = hashlib.sha256()
    total = 0
    tail = b""
    while True:
        data = r.recv_some(chunk)
        if not data:
            raise EOFError("connection closed after %d body octets (pending %r)"
                           % (total, tail[:100]))
        data = tail + data
        cut = data.rfind(b"\n") + 1
        region, tail = data[:cut], data[cut:]
        if not region:
            continue
        # region holds whole lines and starts at a line start.
        end = -1
        if region.startswith(b".\r\n"):
            end = 0
        else:
            i = region.find(b"\r\n.\r\n")
            if i >= 0:
                end = i + 2
        if end >= 0:
            # Whatever follows the terminator belongs to the next reply.
            r.buf[:0] = region[end + 3:] + tail
            region = region[:end]
        starts = region.count(b"\n.") + region.startswith(b".")
        stuffed = region.count(b"\n..") + region.startswith(b"..")
        if starts != stuffed:
            raise ProtocolError("unstuffed dot line within %d octets of octet %d"
                                % (len(region), total))
        if region.startswith(b".."):
            region = region[1:]
        region = region.replace(b"\n..", b"\n.")
        h.update(region)
        total += len(region)
        if end >= 0:
            return total, h.hexdigest()


# ---------------------------------------------------------------- metrics

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prom(text):
    """Prometheus text to {(name, frozenset of (label, value)): float}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = frozenset(_LABEL.findall(m.group(3) or ""))
        try:
            out[(m.group(1), labels)] = float(m.group(4))
        except ValueError:
            pass
    return out


def admin_metrics(port, timeout=5):
    """GET /metrics from an admin endpoint (no token), parsed."""
    c = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        c.request("GET", "/metrics")
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            raise AssertionError("/metrics answered %d" % r.status)
        return parse_prom(body.decode())
    finally:
        c.close()


def poll(pred, what, timeout=10.0, interval=0.02):
    """Calls pred() until it returns something true, and returns that;
    fails after `timeout` seconds (scaled by PGW_TIME_SCALE)."""
    deadline = time.monotonic() + upper(timeout)
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (upper(timeout), what))
        time.sleep(interval)


# ---------------------------------------------------------------- a process's sockets
# Used by the fault suite and the soak test.

def tcp_sockets(pid):
    """inode -> (local port, remote port, state) of a process's TCP sockets."""
    out = {}
    for name in ("tcp", "tcp6"):
        try:
            with open("/proc/%d/net/%s" % (pid, name)) as f:
                next(f)
                for line in f:
                    p = line.split()
                    lport = int(p[1].rsplit(":", 1)[1], 16)
                    rport = int(p[2].rsplit(":", 1)[1], 16)
                    out[p[9]] = (lport, rport, p[3])
        except OSError:
            pass
    return out


def fd_kinds(pid, backend_port):
    """Counts a process's descriptors: backend connections (to
    backend_port), listen sockets, other TCP sockets (clients), the rest."""
    socks = tcp_sockets(pid)
    kinds = {"backend": 0, "listen": 0, "client": 0, "other": 0}
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            info = socks.get(link[8:-1])
            if info is None:
                kinds["other"] += 1
            elif info[2] == "0A":
                kinds["listen"] += 1
            elif info[1] == backend_port:
                kinds["backend"] += 1
            else:
                kinds["client"] += 1
        else:
            kinds["other"] += 1
    return kinds


def spool_fds(pid, spool_dir):
    """[(fd, target)] of a process's descriptors open on files in
    spool_dir. A spool file has no name: it shows as "DIR/#INODE (deleted)"
    when made with O_TMPFILE, "DIR/NAME (deleted)" when made and unlinked."""
    prefix = os.path.realpath(spool_dir) + "/"
    out = []
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith(prefix):
            out.append((int(fd), link))
    return out


# ---------------------------------------------------------------- running suites
# Shared by tests/integration/run.py and the fault suite's runners.

class TestTimeout(Exception):
    """A test ran past TEST_TIMEOUT."""


def _on_alarm(signum, frame):
    raise TestTimeout("the test ran for more than %d s (PGW_TEST_TIMEOUT)" % TEST_TIMEOUT)


class LogDumpingResult(unittest.TextTestResult):
    """Prints what the processes of a failed test wrote to their logs while
    it ran (the tail of each log), and keeps each test's wall time."""

    def startTest(self, test):
        self._t0 = time.monotonic()
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.alarm(TEST_TIMEOUT)
        self._offsets = {}
        for name, path in known_logs():
            try:
                self._offsets[path] = os.path.getsize(path)
            except OSError:
                self._offsets[path] = 0
        super().startTest(test)

    def _dump(self, test):
        offsets = getattr(self, "_offsets", {})
        for name, path in known_logs():
            start = offsets.get(path, 0)
            try:
                if os.path.getsize(path) <= start:
                    continue
            except OSError:
                continue
            self.stream.writeln("---- %s log (%s) during %s ----" % (name, path, test))
            self.stream.writeln(log_tail(path, start, max_lines=60))
        self.stream.flush()

    def stopTest(self, test):
        signal.alarm(0)
        super().stopTest(test)
        self.durations = getattr(self, "durations", [])
        self.durations.append((time.monotonic() - self._t0, test.id()))

    def addError(self, test, err):
        super().addError(test, err)
        self._dump(test)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._dump(test)


def counts(result):
    """(passed, failed, skipped) of a unittest result."""
    skipped = len(result.skipped)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    passed = max(result.testsRun - skipped - failed - len(result.expectedFailures), 0)
    return passed, failed, skipped


def skips(result):
    """[(test id, reason)] of the tests a unittest result skipped."""
    return [(t.id(), reason) for t, reason in result.skipped]


def require_all():
    """True when PGW_REQUIRE_ALL=1 (set by .ci/run): a skipped test, such
    as one whose tool is missing, counts as a failure."""
    return os.environ.get("PGW_REQUIRE_ALL") == "1"


def print_durations(result, n):
    """Prints the n slowest tests of a run, slowest first."""
    for d, name in sorted(getattr(result, "durations", []), reverse=True)[:n]:
        print("%6.2fs  %s" % (d, name))


def report(what, elapsed, passed, failed, skipped, keep, skipped_tests=()):
    """Keeps the run directory when something failed (or when asked),
    prints the time and the closing `N passed, N failed` line; returns the
    exit status. With PGW_REQUIRE_ALL=1 every skipped test (named in
    skipped_tests, as skips() gives them) is also a failure."""
    if skipped and require_all():
        print("PGW_REQUIRE_ALL=1: %d skipped test%s count as failed:"
              % (skipped, "" if skipped == 1 else "s"))
        for name, reason in skipped_tests:
            print("  skipped: %s (%s)" % (name, reason))
        failed += skipped
        skipped = 0
    rd = _run_dir
    if rd:
        if failed or keep:
            print("logs and mail roots kept in %s" % rd)
        else:
            shutil.rmtree(rd, ignore_errors=True)
    print("%s took %.1fs" % (what, elapsed))
    line = "%d passed, %d failed" % (passed, failed)
    if skipped:
        line += ", %d skipped" % skipped
    sys.stdout.flush()
    print(line)
    sys.stdout.flush()
    return 1 if failed or passed + failed + skipped == 0 else 0


def run_suite(start_dir, patterns, quiet, failfast=False, resultclass=LogDumpingResult):
    """Runs the test_*.py files of start_dir (only tests whose
    module.Class.test name contains one of `patterns`, or matches it when
    it has wildcards). Every process started is stopped at exit and on
    SIGTERM. Returns (result, seconds), or None when interrupted."""
    atexit.register(stop_all)

    def on_term(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_term)

    loader = unittest.TestLoader()
    if patterns:
        loader.testNamePatterns = [p if any(c in p for c in "*?[") else "*%s*" % p
                                   for p in patterns]
    suite = loader.discover(start_dir=start_dir, pattern="test_*.py", top_level_dir=start_dir)
    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=1 if quiet else 2,
                                     resultclass=resultclass, failfast=failfast)
    t0 = time.monotonic()
    try:
        result = runner.run(suite)
    except KeyboardInterrupt as e:
        stop_all()
        print("\ninterrupted (%s); logs kept in %s" % (e, _run_dir), file=sys.stderr)
        return None
    return result, time.monotonic() - t0
