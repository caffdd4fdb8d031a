"""A small, correct, in-memory pop3gw backend that the broken backends in
this directory each break in one way. Not an example to follow (see
backends/python/backend.py for that): it only exists so that the contract
checker (tools/pop3gw-check-backend) can be shown to catch each mistake.

One user, alice / secret1, with three messages. Start a backend with
    python3 tests/contract/broken/NAME.py --listen=127.0.0.1:PORT
"""

import http.server
import json
import sys
import threading

USER, PASSWORD = "alice", "secret1"


def crlf_size(data):
    """The size the contract asks for: bare LF counts 2, final CRLF added."""
    size = len(data) + data.count(b"\n") - data.count(b"\r\n")
    return size + 2 if data and not data.endswith(b"\n") else size


class Backend:
    """The behaviour. Subclasses override one method to break it."""

    def __init__(self):
        self.lock = threading.Lock()
        self.messages = [  # (uid, stored bytes), maildrop order
            ("m1", b"From: a@example.com\nSubject: one\n\nfirst\n"),
            ("m2", b"From: b@example.com\nSubject: dots\n\n.\n..two\nend\n"),
            ("m3", b"From: c@example.com\nSubject: three\n\nno final newline"),
        ]

    # -- pieces a broken backend replaces

    def password_ok(self, req):
        return req.get("user") == USER and req.get("password") == PASSWORD

    def size(self, uid, data):
        return crlf_size(data)

    def listing(self):
        return [{"size": self.size(uid, data), "uid": uid} for uid, data in self.messages]

    def uids(self):
        return [m.get("uid") for m in self.listing()]

    def delete(self, uid):
        """Returns the HTTP status for one deletion (200: done or gone)."""
        self.messages = [m for m in self.messages if m[0] != uid]
        return 200

    def missing(self):
        return 404, {"error": "no such message"}

    # -- the events

    def authenticate(self, req):
        if req.get("method") == "USER" and self.password_ok(req):
            return 200, {"ok": True}
        return 200, {"ok": False}

    def list(self, req):
        return 200, {"messages": self.listing()}

    def uidl(self, req):
        return 200, {"uids": self.uids()}

    def retrieve(self, req):
        uid, n = req.get("uid"), req.get("message")
        for i, (u, data) in enumerate(self.messages):
            if (uid is not None and u == uid) or (uid is None and n == i + 1):
                return 200, data
        return self.missing()

    def quit(self, req):
        status = 200
        for entry in req.get("deleted", []):
            status = max(status, self.delete(entry.get("uid")))
        return status, {"ok": status == 200}

    def connect(self, req):
        return 200, {"ok": True}

    disconnect = connect


def serve(backend, argv=None, protocol="HTTP/1.1", nagle=False):
    """Serves `backend`. With nagle, as http.server does by default: Nagle's
    algorithm on, and the head and the body of a reply in two writes."""
    argv = sys.argv[1:] if argv is None else argv
    listen = next(a.split("=", 1)[1] for a in argv if a.startswith("--listen="))
    host, port = listen.rsplit(":", 1)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = protocol
        disable_nagle_algorithm = not nagle
        wbufsize = 0 if nagle else -1  # -1: head and body in one write

        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            event = self.path.rsplit("/", 1)[-1]
            if event not in ("authenticate", "list", "uidl", "retrieve", "quit",
                             "connect", "disconnect"):
                status, result = 404, {"error": "no such event"}
            else:
                with backend.lock:
                    status, result = getattr(backend, event)(json.loads(body))
            if isinstance(result, bytes):
                out, ctype = result, "message/rfc822"
            else:
                out, ctype = json.dumps(result).encode(), "application/json"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    server = http.server.ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True
    print("broken backend listening on %s:%d" % server.server_address, file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
