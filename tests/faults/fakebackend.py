"""A webhook backend under the test's control (Python 3 standard library).

It runs in the test process, in threads: an HTTP/1.1 keep-alive server
(ThreadingHTTPServer) that answers pop3gw's events per the contract from
in-memory mailboxes, unless the test has planned something else for an
event. Every request is recorded (headers, raw body, parsed body, when it
arrived, how answering it went) so that a test can assert what the gateway
asked for: that retries reused the webhook-id, that no `quit` was sent, what
`deleted` held.

    be = FakeBackend().start()
    be.plan("list", status(500))             # the next list call gets a 500
    be.plan("authenticate", delay(3), times=None)   # every call, until cleared
    be.kill(); be.restart()                  # connection refused, then back

Actions are callables `action(handler, req)` that write the reply on
`handler` (a BaseHTTPRequestHandler); the factories below build them.
"""

import base64
import hashlib
import json
import re
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness import upper  # wait deadlines scale with PGW_TIME_SCALE

HOST = "127.0.0.1"


def crlf(data):
    """What a POP3 client receives for stored bytes (before dot-stuffing)."""
    out = re.sub(rb"(?<!\r)\n", b"\r\n", data)
    if not out.endswith(b"\r\n"):
        out += b"\r\n"
    return out


DEFAULT_USERS = {"alice": "secret1", "bob": "pass word 2", "erin": "erinpw"}
DEFAULT_TOKENS = {"alice": "tok-alice-0123456789"}


def default_mailboxes():
    return {
        "alice": [
            ("uid-a1", b"From: a@example.com\nSubject: one\n\nHello.\n.dot line\nBye.\n"),
            ("uid-a2", b"From: b@example.com\nSubject: two\n\nSecond message.\n"),
            ("uid-a3", b"From: c@example.com\nSubject: three\n\nThird.\n"),
        ],
        "bob": [
            ("uid-b1", b"From: x@example.com\nSubject: for bob\n\nHi Bob.\n"),
        ],
        "erin": [],
    }


class Request:
    """One request as the backend saw it."""

    def __init__(self, event, path, headers, raw, conn_id, method="POST"):
        self.event = event
        self.method = method
        self.path = path
        self.headers = headers  # lower-case names
        self.raw = raw
        try:
            self.body = json.loads(raw.decode("utf-8")) if raw else None
        except (ValueError, UnicodeDecodeError):
            self.body = None
        self.conn_id = conn_id
        self.t_start = time.monotonic()
        self.t_end = None
        self.outcome = None  # "ok", or what went wrong while answering
        self.action = None  # name of the planned action, None for the default

    @property
    def webhook_id(self):
        return self.headers.get("webhook-id")

    @property
    def session(self):
        return (self.body or {}).get("session")

    def __repr__(self):
        return "<%s %s id=%s session=%s outcome=%s>" % (
            self.event, self.action or "default", self.webhook_id, self.session, self.outcome)


# ---------------------------------------------------------------- actions


def _chunks(body, size=7):
    """body in the chunked transfer coding, in pieces of `size` octets."""
    out = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size])
                   for i in range(0, len(body), size))
    return out + b"0\r\n\r\n"


def _send(h, code, body=b"", ctype="application/json", headers=None, length=None):
    """Writes a whole reply in one send (status line, headers and body), as
    a real server would: no Nagle/delayed-ACK stall between them. A backend
    made with chunked=True sends the body chunked, without Content-Length."""
    h.send_response(code)
    if ctype:
        h.send_header("Content-Type", ctype)
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    if getattr(h, "force_close", False):
        h.send_header("Connection", "close")
        h.close_connection = True
    if h.backend.chunked and length is None:
        h.send_header("Transfer-Encoding", "chunked")
        body = _chunks(body)
    else:
        h.send_header("Content-Length", str(len(body) if length is None else length))
    late = getattr(h, "body_after", 0)
    if late:
        # headers_then(): the status and headers now, the body later.
        h.end_headers()
        h.wfile.flush()
        if h.backend.stopping.wait(late):
            h.close_now()
            return
        h.wfile.write(body)
        h.wfile.flush()
        return
    h._headers_buffer.append(b"\r\n" + body)
    h.flush_headers()
    h.wfile.flush()


def named(name):
    def deco(fn):
        fn.action_name = name
        return fn
    return deco


def default(close=False):
    """The contract's normal answer (what no plan gives); with close, the
    connection is closed after it (Connection: close), so that the next
    call needs a fresh connection."""
    @named("default")
    def act(h, req):
        h.force_close = close
        h.backend.answer(h, req)
    return act


def then_kill(action=None):
    """Stops listening, does `action` (default: the normal answer, on a
    closing connection), then cuts every other connection: the calls after
    this one are refused."""
    action = action or default(close=True)

    @named("then kill")
    def act(h, req):
        h.backend.stop_listening()
        action(h, req)
        h.backend.cut_connections(keep=h.connection)
    return act


def status(code, body=b"", ctype="application/json", headers=None):
    """A reply with this status and body."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    elif isinstance(body, str):
        body = body.encode()

    @named("status %d" % code)
    def act(h, req):
        _send(h, code, body, ctype, headers)
    return act


def reply_json(obj, code=200):
    return status(code, json.dumps(obj).encode())


def garbage(code=200, ctype="application/json"):
    """A 200 whose body is not JSON."""
    return status(code, b"<html>\x00\xff this is not JSON {{{", ctype)


def big_json(nbytes, event_shape=None):
    """A syntactically valid JSON object of about nbytes octets."""
    pad = "x" * max(0, nbytes - 40)
    body = json.dumps({"padding": pad, "messages": [], "ok": False}).encode()

    @named("big %d" % nbytes)
    def act(h, req):
        _send(h, 200, body)
    return act


def deep_json(depth):
    """An authenticate reply whose mailbox nests `depth` levels."""
    body = ('{"ok":true,"mailbox":' + '{"a":' * depth + "1" + "}" * depth + "}").encode()
    return status(200, body)


def drop():
    """Reads the request, then closes the connection without any reply."""
    @named("drop")
    def act(h, req):
        h.close_now()
    return act


def delay(seconds, then=None):
    """Waits, then does `then` (default: the normal answer). The wait ends
    early when the backend is killed."""
    then = then or default()

    @named("delay %.1f" % seconds)
    def act(h, req):
        if h.backend.stopping.wait(seconds):
            h.close_now()
            return
        then(h, req)
    return act


def headers_then(seconds, then=None):
    """Sends the status line and headers of `then` (default: the normal
    answer) at once, and its body `seconds` later: a backend whose reply
    is slow after its headers."""
    then = then or default()

    @named("headers, then the body after %.1f s" % seconds)
    def act(h, req):
        h.body_after = seconds
        try:
            then(h, req)
        finally:
            h.body_after = 0
    return act


def hang():
    """Never answers (until the backend is killed or the peer goes away)."""
    @named("hang")
    def act(h, req):
        while not h.backend.stopping.wait(0.05):
            if h.peer_gone():
                req.outcome = "peer closed while hanging"
                h.close_now()
                return
        h.close_now()
    return act


def cut_message(data=None, fraction=0.5, ctype="message/rfc822"):
    """retrieve: 200 with the full Content-Length, then only part of the
    body, then the connection is closed."""
    @named("cut")
    def act(h, req):
        body = data if data is not None else h.backend.message_for(req)
        if body is None:
            _send(h, 404, b'{"error":"no such message"}')
            return
        n = max(1, int(len(body) * fraction))
        h.send_response(200)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body[:n])
        h.wfile.flush()
        time.sleep(0.05)
        h.close_now()
    return act


def stall_message(data=None, after=0.5, seconds=5.0):
    """retrieve: 200, part of the body, then nothing for `seconds`."""
    @named("stall")
    def act(h, req):
        body = data if data is not None else h.backend.message_for(req)
        n = max(1, int(len(body) * after))
        h.send_response(200)
        h.send_header("Content-Type", "message/rfc822")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body[:n])
        h.wfile.flush()
        if h.backend.stopping.wait(seconds):
            h.close_now()
            return
        try:
            h.wfile.write(body[n:])
            h.wfile.flush()
        except OSError as e:
            req.outcome = "broken: %s" % e
            h.close_now()
    return act


GEN_LINE = b"0123456789abcdefghij" * 3 + b"\n"
GEN_HEAD = b"From: big@example.com\nSubject: generated\n\n"


def generated_chunks(total, chunk=65536):
    """A generated message of exactly `total` octets (LF lines), in chunks
    of whole lines (the last one cut), produced lazily: a 200 MB message
    costs no memory and starts at once."""
    yield GEN_HEAD
    left = total - len(GEN_HEAD)
    unit = GEN_LINE * max(1, chunk // len(GEN_LINE))
    while left > 0:
        part = unit[:left]
        left -= len(part)
        yield part


def generated_message(total):
    """The bytes stream_message(total) sends, at once (small totals)."""
    return b"".join(generated_chunks(total))


def generated_digest(total):
    """(length, sha256 hex) of what a POP3 client receives for
    generated_message(total), before dot-stuffing (there is none to do)."""
    h = hashlib.sha256()
    n = 0
    last = b""
    for part in generated_chunks(total):
        out = part.replace(b"\n", b"\r\n")
        h.update(out)
        n += len(out)
        last = out
    if not last.endswith(b"\r\n"):
        h.update(b"\r\n")
        n += 2
    return n, h.hexdigest()


def stream_message(total, chunk=65536, interval=0.0):
    """retrieve: a generated message of `total` octets (LF lines), sent in
    chunks of about `chunk` octets with `interval` seconds between them;
    records in req.sent how much was written, and in req.outcome whether
    the gateway closed the transfer."""
    @named("stream %d" % total)
    def act(h, req):
        h.send_response(200)
        h.send_header("Content-Type", "message/rfc822")
        h.send_header("Content-Length", str(total))
        h.end_headers()
        req.sent = 0
        try:
            for part in generated_chunks(total, chunk):
                h.wfile.write(part)
                req.sent += len(part)
                if interval and h.backend.stopping.wait(interval):
                    break
            h.wfile.flush()
        except OSError as e:
            req.outcome = "broken: %s" % e.__class__.__name__
            req.t_end = time.monotonic()
            h.close_now()
    return act


def close_delimited(data=None, fraction=0.5, http10=True, ctype="message/rfc822"):
    """retrieve: a body without Content-Length or chunking, which only the
    closing of the connection ends: an HTTP/1.0 reply (http10), or an
    HTTP/1.1 one with neither header. Sends `fraction` of the message (1.0:
    all of it), then closes, as a backend that dies mid-message does."""
    @named("close-delimited %s %.2f" % ("1.0" if http10 else "1.1", fraction))
    def act(h, req):
        body = data if data is not None else h.backend.message_for(req)
        n = len(body) if fraction >= 1 else max(1, int(len(body) * fraction))
        head = (b"HTTP/1.0 200 OK\r\n" if http10 else b"HTTP/1.1 200 OK\r\n")
        head += b"Content-Type: " + ctype.encode() + b"\r\n\r\n"
        h.wfile.write(head + body[:n])
        h.wfile.flush()
        h.close_now()
    return act


def no_content_with_body(body=b'{"ok":true}', wait=10.0):
    """A 204 that carries a body anyway (with its Content-Length). A 204
    has no body, so a client takes the reply as over after its headers and
    may reuse the connection. The body is sent when the next request
    arrives on the connection (after the client's own checks of a reused
    connection), so it lands in front of that request's reply: the
    connection is poisoned for whoever uses it next."""
    @named("204 with a body")
    def act(h, req):
        h.send_response(204)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.flush()
        req.t_end = time.monotonic()  # the reply as the client sees it is over
        deadline = time.monotonic() + upper(wait)
        while time.monotonic() < deadline and not h.backend.stopping.is_set():
            r, _, _ = select.select([h.connection], [], [], 0.05)
            if r:
                break
        if h.peer_gone():
            return
        h.wfile.write(body)
        h.wfile.flush()
    return act


# A message of 76-octet lines (75 and LF) for the JSON retrieve tests: text
# that needs JSON escapes (quotes, backslashes, tabs, non-ASCII as \u
# escapes and as raw UTF-8) and dot lines that need stuffing.
JSON_HEAD = ("From: json@example.com\nSubject: a big JSON retrieve \u00e9\u20ac\n\n").encode()


def _json_block():
    lines = []
    for i in range(860):
        r = i % 43
        if r == 5:
            t = ".a dot line %d" % i
        elif r == 17:
            t = "quotes \"and\" back\\slashes\tand a tab, caf\u00e9 %d" % i
        elif r == 29:
            t = "."
        else:
            t = "line %06d " % i + "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        b = t.encode()
        b = (b + b"-" * 75)[:75] if len(b) < 75 else b[:75]
        lines.append(b + b"\n")
    return b"".join(lines)


JSON_BLOCK = _json_block()


def json_message_chunks(total):
    """The message json_content_stream(total) carries: JSON_HEAD, then
    whole JSON_BLOCKs until at least `total` octets."""
    yield JSON_HEAD
    n = len(JSON_HEAD)
    while n < total:
        yield JSON_BLOCK
        n += len(JSON_BLOCK)


def json_message_digest(total):
    """(length, sha256 hex) of what a POP3 client receives for
    json_message_chunks(total), unstuffed: every LF as CRLF."""
    h = hashlib.sha256()
    n = 0
    for part in json_message_chunks(total):
        out = part.replace(b"\n", b"\r\n")
        h.update(out)
        n += len(out)
    return n, h.hexdigest()


def _json_doc_parts(total, b64):
    """The pieces of {"content": "..."} or {"content_base64": "..."} for
    json_message_chunks(total), produced lazily (a few hundred KB at a
    time). content: JSON escapes (\n, \", \\, \t, \u00e9); the head keeps
    its non-ASCII as raw UTF-8. content_base64: 76-character lines joined
    by \r\n escapes, as MIME writes them."""
    if not b64:
        yield b'{"content":"'
        block = json.dumps(JSON_BLOCK.decode()).encode()[1:-1]
        first = True
        for part in json_message_chunks(total):
            if first:
                yield json.dumps(part.decode(), ensure_ascii=False).encode()[1:-1]
                first = False
            else:
                yield block
        yield b'"}'
        return
    yield b'{"content_base64":"'
    carry = b""
    unit = 57 * 1024  # a multiple of 57 octets: 1024 whole 76-character lines
    lines_out = 0
    for part in json_message_chunks(total):
        carry += part
        if len(carry) < unit:
            continue
        cut = len(carry) - len(carry) % unit
        enc = base64.b64encode(carry[:cut])
        carry = carry[cut:]
        out = b"\\r\\n".join(enc[i:i + 76] for i in range(0, len(enc), 76))
        yield (b"\\r\\n" if lines_out else b"") + out
        lines_out += 1
    if carry:
        enc = base64.b64encode(carry)
        out = b"\\r\\n".join(enc[i:i + 76] for i in range(0, len(enc), 76))
        yield (b"\\r\\n" if lines_out else b"") + out
    yield b'"}'


def json_content_stream(total, base64=False):
    """retrieve: 200, application/json, a JSON document of the content (or
    content_base64) form for a message of at least `total` octets of
    76-octet lines (json_message_digest(total) says what the client must
    get), written as it is made: never whole in memory. Content-Length is
    counted in a first pass. Records in req.sent the octets written."""
    @named("json %s %d" % ("content_base64" if base64 else "content", total))
    def act(h, req):
        length = sum(len(p) for p in _json_doc_parts(total, base64))
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(length))
        h.end_headers()
        req.sent = 0
        try:
            for part in _json_doc_parts(total, base64):
                h.wfile.write(part)
                req.sent += len(part)
            h.wfile.flush()
        except OSError as e:
            req.outcome = "broken: %s" % e.__class__.__name__
            req.t_end = time.monotonic()
            h.close_now()
    return act


# ---------------------------------------------------------------- server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fakebackend/1"
    sys_version = ""

    def log_message(self, fmt, *args):  # quiet
        pass

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.backend = self.server.backend
        self.conn_id = self.backend._register(self.connection)
        self._closed = False
        self.force_close = False

    def finish(self):
        try:
            super().finish()
        except OSError:
            pass
        self.backend._unregister(self.connection)

    def close_now(self):
        """Ends this connection at once (no reply, or a cut one)."""
        self._closed = True
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def peer_gone(self):
        try:
            self.connection.setblocking(False)
            try:
                data = self.connection.recv(1, socket.MSG_PEEK)
                return data == b""
            except BlockingIOError:
                return False
            finally:
                self.connection.setblocking(True)
        except OSError:
            return True

    def do_GET(self):
        # Recorded too (method GET, no body), so that a test can assert that
        # nothing followed a redirect with a GET.
        req = Request(self.path.rstrip("/").rsplit("/", 1)[-1], self.path,
                      {k.lower(): v for k, v in self.headers.items()}, b"", self.conn_id,
                      method="GET")
        self.backend._record(req)
        try:
            _send(self, 404, b'{"error":"POST only"}')
            req.outcome = "ok"
        except OSError as e:
            req.outcome = "broken: %s" % e.__class__.__name__
            self.close_connection = True
        finally:
            req.t_end = time.monotonic()
            self.backend._answered(req)

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        event = self.path.rstrip("/").rsplit("/", 1)[-1]
        headers = {k.lower(): v for k, v in self.headers.items()}
        req = Request(event, self.path, headers, raw, self.conn_id)
        self.force_close = False
        action = self.backend._take(event, req)
        self.backend._record(req)
        req.action = getattr(action, "action_name", "custom") if action else None
        try:
            (action or default())(self, req)
            if req.outcome is None:
                req.outcome = "closed" if self._closed else "ok"
        except OSError as e:
            req.outcome = "broken: %s" % e.__class__.__name__
            self.close_connection = True
        finally:
            if req.t_end is None:
                req.t_end = time.monotonic()
            self.backend._answered(req)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def handle_error(self, request, client_address):
        pass  # resets and cut connections are what these tests are about


class FakeBackend:
    """See the module docstring."""

    def __init__(self, users=None, mailboxes=None, tokens=None, list_uids=True, chunked=False):
        self.users = dict(DEFAULT_USERS if users is None else users)
        self.tokens = dict(DEFAULT_TOKENS if tokens is None else tokens)
        self.mailboxes = default_mailboxes() if mailboxes is None else mailboxes
        self.list_uids = list_uids
        self.chunked = chunked  # replies without Content-Length (see _send)
        self.port = None
        self.server = None
        self.thread = None
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._plans = {}  # event -> [(action, remaining or None)]
        self._reqs = []
        self._conns = {}
        self._conn_seq = 0
        self.committed = []  # (user, uid) deletions a quit committed
        self.max_concurrent = 0
        self._active = 0

    # ---- life cycle
    @property
    def url(self):
        return "http://%s:%d" % (HOST, self.port)

    def start(self, port=None):
        self.stopping.clear()
        self.server = _Server((HOST, port if port is not None else (self.port or 0)), _Handler)
        self.server.backend = self
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def stop_listening(self):
        """Closes the listening socket: new connections are refused."""
        srv, self.server = self.server, None
        if srv:
            self.stopping.set()
            srv.shutdown()
            srv.server_close()

    def cut_connections(self, keep=None):
        """Shuts down every open connection (but `keep`)."""
        with self._lock:
            conns = [c for c in self._conns.values() if c is not keep]
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def kill(self):
        """A crashed backend: stops listening and cuts every open
        connection; further calls get `connection refused`."""
        self.stop_listening()
        self.cut_connections()

    def restart(self):
        """Listens again on the same port."""
        deadline = time.monotonic() + 5
        while True:
            try:
                return self.start(self.port)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self):
        self.kill()

    # ---- plans
    def plan(self, event, *actions, times=1):
        """Queues actions for the next calls of `event`, in order; each
        serves `times` calls (None: every call until clear())."""
        with self._lock:
            for a in actions:
                self._plans.setdefault(event, []).append([a, times])
        return self

    def clear(self, event=None):
        with self._lock:
            if event is None:
                self._plans.clear()
            else:
                self._plans.pop(event, None)

    def _take(self, event, req):
        with self._lock:
            q = self._plans.get(event)
            while q:
                a, left = q[0]
                if left is None:
                    return a
                if left > 0:
                    q[0][1] -= 1
                    if q[0][1] == 0:
                        q.pop(0)
                    return a
                q.pop(0)
            return None

    # ---- records
    def _register(self, conn):
        with self._lock:
            self._conn_seq += 1
            self._conns[self._conn_seq] = conn
            return self._conn_seq

    def _unregister(self, conn):
        with self._lock:
            for k, v in list(self._conns.items()):
                if v is conn:
                    del self._conns[k]

    def open_connections(self):
        with self._lock:
            return len(self._conns)

    def is_open(self, conn_id):
        """Whether connection `conn_id` (a Request's conn_id) is still open
        on the backend's side."""
        with self._lock:
            return conn_id in self._conns

    def _record(self, req):
        with self._cond:
            self._reqs.append(req)
            self._active += 1
            self.max_concurrent = max(self.max_concurrent, self._active)
            self._cond.notify_all()

    def _answered(self, req):
        with self._cond:
            self._active -= 1
            self._cond.notify_all()

    def requests(self, event=None, since=0):
        with self._lock:
            rs = self._reqs[since:]
        return [r for r in rs if event is None or r.event == event]

    def mark(self):
        """An index for requests(since=...)."""
        with self._lock:
            return len(self._reqs)

    def wait_for(self, pred, timeout=5.0, since=0):
        """Waits until pred(requests since `since`) is true; returns them."""
        deadline = time.monotonic() + upper(timeout)
        with self._cond:
            while True:
                rs = self._reqs[since:]
                if pred(rs):
                    return rs
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("backend never saw what was expected; got %r" % rs)
                self._cond.wait(min(left, 0.1))

    def wait_answered(self, req, timeout=10.0):
        deadline = time.monotonic() + upper(timeout)
        while req.t_end is None:
            if time.monotonic() > deadline:
                raise AssertionError("request %r still being answered" % req)
            time.sleep(0.01)
        return req

    # ---- the contract's normal answers
    def _user_msgs(self, user):
        gone = {u for (who, u) in self.committed if who == user}
        return [(u, d) for (u, d) in self.mailboxes.get(user, []) if u not in gone]

    def message_for(self, req):
        b = req.body or {}
        msgs = self._user_msgs(b.get("user"))
        uid, n = b.get("uid"), b.get("message")
        for i, (u, d) in enumerate(msgs):
            if (uid is not None and u == uid) or (uid is None and n == i + 1):
                return d
        return None

    def answer(self, h, req):
        b = req.body
        if not isinstance(b, dict) or b.get("event") != req.event:
            _send(h, 400, b'{"error":"bad request"}')
            return
        ev = req.event
        if ev == "authenticate":
            user, method = b.get("user"), b.get("method")
            ok = False
            if method in ("USER", "PLAIN", "LOGIN"):
                ok = user in self.users and b.get("password") == self.users[user]
            elif method == "APOP":
                pw = self.users.get(user)
                a = b.get("apop") or {}
                ok = pw is not None and hashlib.md5(
                    (a.get("timestamp", "") + pw).encode()).hexdigest() == a.get("digest")
            elif method in ("XOAUTH2", "OAUTHBEARER"):
                ok = user in self.tokens and b.get("token") == self.tokens[user]
            _send(h, 200, json.dumps({"ok": True, "user": user} if ok else {"ok": False}).encode())
        elif ev == "list":
            msgs = self._user_msgs(b.get("user"))
            out = []
            for u, d in msgs:
                e = {"size": len(crlf(d))}
                if self.list_uids:
                    e["uid"] = u
                out.append(e)
            _send(h, 200, json.dumps({"messages": out}).encode())
        elif ev == "uidl":
            _send(h, 200, json.dumps({"uids": [u for u, _ in self._user_msgs(b.get("user"))]}).encode())
        elif ev == "retrieve":
            d = self.message_for(req)
            if d is None:
                _send(h, 404, b'{"error":"no such message"}')
            else:
                _send(h, 200, d, "message/rfc822")
        elif ev == "quit":
            user = b.get("user")
            with self._lock:
                for e in b.get("deleted") or []:
                    if (user, e.get("uid")) not in self.committed:
                        self.committed.append((user, e.get("uid")))
            _send(h, 200, b'{"ok":true}')
        elif ev in ("connect", "disconnect"):
            _send(h, 200, b'{"ok":true}')
        else:
            _send(h, 404, b'{"error":"no such event"}')


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()
