#!/usr/bin/env python3
"""A pop3gw backend in one file of standard-library Python.

pop3gw speaks POP3 to mail clients and asks a backend like this one, over
HTTP, for everything that concerns a mailbox: every event is a POST of a JSON
object to BACKEND_URL/EVENT (see docs/webhooks.md, the contract). This
backend serves the same layout as the reference backend (backends/maildir):

    ROOT/users                 one "user:password" per line ('#' comments)
    ROOT/USER/new/, cur/       the user's messages, one file each (Maildir)

Run it, then point the gateway at it:

    python3 backends/python/backend.py --listen=127.0.0.1:8025 --root=/srv/mail \
        [--users=FILE] [--secret=whsec_...] [--token=TOKEN]

    # pop3gw.conf
    backend_url    = http://127.0.0.1:8025
    backend_secret = whsec_...          # the same key, if --secret is used

HTTPS instead of HTTP, optionally requiring a client certificate (mutual
TLS, the gateway's backend_cert and backend_key):

    python3 backends/python/backend.py --listen=127.0.0.1:8443 --root=/srv/mail \
        --tls-cert=cert.pem --tls-key=key.pem [--tls-client-ca=clients-ca.pem]

    # pop3gw.conf
    backend_url     = https://127.0.0.1:8443
    backend_ca_file = ca.pem            # if a private CA signed cert.pem
    backend_cert    = client.pem        # with --tls-client-ca
    backend_key     = client-key.pem

Each flag can also come from the environment: BACKEND_LISTEN, BACKEND_ROOT,
BACKEND_USERS, BACKEND_SECRET, BACKEND_TOKEN, BACKEND_TLS_CERT,
BACKEND_TLS_KEY, BACKEND_TLS_CLIENT_CA (a flag wins). When it is ready it
prints "pop3gw python backend listening on HOST:PORT" to stderr (with
"(https)" after it in TLS mode).

It is meant to be read: docs/backends.md walks through it.
"""

import base64
import hashlib
import hmac
import http.server
import json
import os
import shutil
import signal
import socket
import ssl
import sys
import time

MAX_BODY = 1 << 20  # request bodies are small JSON objects
SIGNATURE_TOLERANCE = 300  # seconds a webhook-timestamp may be off
EVENTS = ("authenticate", "list", "uidl", "retrieve", "quit", "connect", "disconnect")

CONFIG = {}  # filled by main(): root, users, secrets (list of keys), token, quiet


def log(*parts):
    print("python-backend:", *parts, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- signatures


def secret_keys(value):
    """The HMAC keys of "whsec_A whsec_B ...": the base64-decoded part after
    the prefix (the text itself is not the key)."""
    keys = []
    for secret in value.split():
        if not secret.startswith("whsec_"):
            raise ValueError("a secret starts with whsec_")
        keys.append(base64.b64decode(secret[len("whsec_"):], validate=True))
    return keys


def signature_ok(headers, body):
    """Standard Webhooks: webhook-signature holds one or more space-separated
    "v1,BASE64" values; BASE64 is HMAC-SHA256(key, id + "." + timestamp + "."
    + raw body). One match with one key is enough."""
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    sigs = headers.get("webhook-signature")
    if not (msg_id and stamp and sigs) or not stamp.isdigit():
        return False
    if abs(time.time() - int(stamp)) > SIGNATURE_TOLERANCE:
        return False  # too old (a replay) or from a badly wrong clock
    signed = msg_id.encode() + b"." + stamp.encode() + b"." + body
    for key in CONFIG["secrets"]:
        mac = hmac.new(key, signed, hashlib.sha256).digest()
        expected = b"v1," + base64.b64encode(mac)
        for candidate in sigs.split(" "):
            # compare_digest takes the same time wherever the first difference is
            if hmac.compare_digest(expected, candidate.encode()):
                return True
    return False


# --------------------------------------------------------------------- users


def read_users():
    """{user: password} from the users file, read on every login so that
    edits apply at once. "user:password[:oauth-token]"; the token is ignored
    here because this backend does not do OAuth."""
    users = {}
    try:
        with open(CONFIG["users"], encoding="utf-8") as f:
            for line in f:
                line = line.rstrip("\r\n")
                if not line or line.startswith("#") or ":" not in line:
                    continue
                name, password = line.split(":", 2)[:2]
                if valid_user(name) and name not in users:  # the first line counts
                    users[name] = password
    except OSError as e:
        log("cannot read users file:", e)
    return users


def valid_user(name):
    """A user name is also a directory name under ROOT: keep it inside."""
    return (isinstance(name, str) and name != "" and "/" not in name
            and "\0" not in name and not name.startswith("."))


def same_secret(a, b):
    """Constant-time comparison of two strings of any length."""
    return hmac.compare_digest(hashlib.sha256(a.encode()).digest(),
                               hashlib.sha256(b.encode()).digest())


def check_login(req):
    """True when the credentials of an authenticate request are right."""
    users = read_users()
    name = req.get("user")
    # An unknown user is compared against a dummy password, so that the
    # reply and its timing are the same as for a wrong password.
    password = users.get(name, "") if isinstance(name, str) else ""
    known = name in users and password != ""  # an empty password: no logins
    method = req.get("method")
    if method in ("USER", "PLAIN", "LOGIN"):
        given = req.get("password")
        if not isinstance(given, str):
            return False
        if method == "PLAIN" and req.get("authzid") not in (None, name):
            return False  # no logging in as somebody else
        return same_secret(given, password or "\0dummy") and known
    if method == "APOP":
        # The client proves it knows the password: digest = MD5(timestamp + password).
        apop = req.get("apop") or {}
        stamp, digest = apop.get("timestamp"), apop.get("digest")
        if not (isinstance(stamp, str) and isinstance(digest, str)):
            return False
        want = hashlib.md5((stamp + password).encode()).hexdigest()
        return same_secret(digest.lower(), want) and known
    return False  # XOAUTH2, OAUTHBEARER and anything new: not supported here


# ------------------------------------------------------------------ maildirs


def uid_of(name):
    """A message's uid: its file name up to the first ':' (what follows is
    the Maildir flags, which change when a client reads the message). POP3
    allows 1 to 70 printable characters; other names get their MD5."""
    base = name.split(":", 1)[0]
    if 1 <= len(base) <= 70 and all(0x21 <= ord(c) <= 0x7E for c in base):
        return base
    return hashlib.md5(base.encode("utf-8", "surrogateescape")).hexdigest()


def maildrop(user):
    """[(uid, path)] in maildrop order (file names sorted, so oldest first),
    or None if the user has no Maildir."""
    home = os.path.join(CONFIG["root"], user)
    if not os.path.isdir(home):
        return None
    entries = []
    for sub in ("new", "cur"):
        try:
            with os.scandir(os.path.join(home, sub)) as it:
                for e in it:
                    if not e.name.startswith(".") and e.is_file(follow_symlinks=False):
                        entries.append((e.name, e.path))
        except FileNotFoundError:
            pass  # a missing new/ or cur/ is just empty
    entries.sort(key=lambda e: os.fsencode(e[0]))  # bytewise
    out, seen = [], set()
    for name, path in entries:
        uid = uid_of(name)
        if uid not in seen:  # uids must be unique: keep the first
            seen.add(uid)
            out.append((uid, path))
    return out


_sizes = {}  # (path, inode, mtime, bytes) -> size; files rarely change


def pop3_size(path):
    """The size a POP3 client will count: line ends as CRLF, plus a final
    CRLF when the last line has none. So each LF not preceded by CR counts
    2, and a non-empty file that does not end in LF gets 2 more."""
    st = os.stat(path)
    key = (path, st.st_ino, st.st_mtime_ns, st.st_size)
    if key in _sizes:
        return _sizes[key]
    size, prev = 0, b""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(65536)
            if not chunk:
                break
            size += len(chunk) + chunk.count(b"\n") - chunk.count(b"\r\n")
            if prev == b"\r" and chunk[:1] == b"\n":
                size -= 1  # a CRLF split across two chunks
            prev = chunk[-1:]
    if size and prev != b"\n":
        size += 2
    _sizes[key] = size
    return size


def find(user, uid, number):
    """The path of a message, by uid when there is one (message numbers are
    only meaningful in the listing the gateway got), else by number."""
    drop = maildrop(user) or []
    if uid is not None:
        return next((path for u, path in drop if u == uid), None)
    if isinstance(number, int) and 1 <= number <= len(drop):
        return drop[number - 1][1]
    return None


# -------------------------------------------------------------------- events
#
# Each handler gets the parsed request and returns (status, JSON reply), or
# for retrieve a path to stream.


def ev_authenticate(req):
    if check_login(req):
        return 200, {"ok": True, "user": req["user"]}
    return 200, {"ok": False, "code": "AUTH", "message": "invalid user name or password"}


def ev_list(req):
    drop = maildrop(req["user"])
    if drop is None:
        return 404, {"error": "no such user"}
    messages = []
    for uid, path in drop:
        try:
            messages.append({"size": pop3_size(path), "uid": uid})
        except FileNotFoundError:
            pass  # moved or deleted meanwhile; a client renamed it new/ -> cur/
    return 200, {"messages": messages}


def ev_uidl(req):
    # Only called when list has no uids; this one always has, but answer anyway.
    drop = maildrop(req["user"])
    if drop is None:
        return 404, {"error": "no such user"}
    return 200, {"uids": [uid for uid, _ in drop]}


def ev_retrieve(req):
    # "lines" (TOP) is ignored: the gateway cuts the message itself.
    for _ in range(2):  # a file can move from new/ to cur/ under us: look twice
        path = find(req["user"], req.get("uid"), req.get("message"))
        if path is None:
            return 404, {"error": "no such message"}
        try:
            return 200, open(path, "rb")
        except FileNotFoundError:
            continue
    return 404, {"error": "no such message"}


def ev_quit(req):
    """Deletes what the client marked with DELE. Idempotent: a uid that is
    already gone counts as deleted, so a repeated quit also succeeds."""
    deleted = req.get("deleted") or []
    if not isinstance(deleted, list):
        return 400, {"error": "deleted is not an array"}
    count, failed = 0, False
    for entry in deleted:
        uid = entry.get("uid") if isinstance(entry, dict) else None
        number = entry.get("message") if isinstance(entry, dict) else None
        for _ in range(2):
            path = find(req["user"], uid, number if uid is None else None)
            if path is None:
                break  # already gone: nothing to do
            try:
                os.unlink(path)
                count += 1
                if not CONFIG["quiet"]:
                    log("deleted user=%s uid=%s" % (req["user"], uid))
                break
            except FileNotFoundError:
                continue  # renamed meanwhile: look again
            except OSError as e:
                log("cannot delete", path, e)
                failed = True
                break
    if failed:  # no 2xx unless every deletion is done
        return 500, {"error": "some deleted messages not removed"}
    return 200, {"ok": True, "deleted": count}


def ev_ok(req):
    # connect (before the greeting) and disconnect (a session ended without
    # quit): nothing to do for a backend that keeps no locks.
    return 200, {"ok": True}


HANDLERS = {"authenticate": ev_authenticate, "list": ev_list, "uidl": ev_uidl,
            "retrieve": ev_retrieve, "quit": ev_quit, "connect": ev_ok,
            "disconnect": ev_ok}


# ---------------------------------------------------------------------- HTTP


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the gateway reuses connections
    server_version = "pop3gw-python-backend"
    timeout = 600  # close connections idle for 10 minutes
    disable_nagle_algorithm = True  # no 40 ms wait on small replies
    wbufsize = -1  # buffer the head and a small body into a single write

    def log_message(self, fmt, *args):
        pass  # no access log; deletions and errors are logged

    def reply(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        # 1. Read the body: always Content-Length, at most 1 MB.
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            self.close_connection = True
            return self.reply(411, {"error": "Content-Length required"})
        if int(length) > MAX_BODY:
            self.close_connection = True  # the body stays unread
            return self.reply(413, {"error": "body too large"})
        body = self.rfile.read(int(length))

        # 2. Is it the gateway? Check before parsing anything. 401 is for this
        # only: the gateway reads it as "the backend refused the webhook" (and
        # logs a hint about backend_secret / backend_token), never as a wrong
        # password, which ev_authenticate answers with 200 {"ok": false}.
        if CONFIG["token"] is not None:
            given = self.headers.get("Authorization", "")
            if not same_secret(given, "Bearer " + CONFIG["token"]):
                return self.reply(401, {"error": "bad token"})
        if CONFIG["secrets"] and not signature_ok(self.headers, body):
            return self.reply(401, {"error": "bad signature"})

        # 3. Which event: the last path segment (backend_url may have a path).
        event = self.path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        if event not in HANDLERS:
            return self.reply(404, {"error": "no such event"})
        try:
            req = json.loads(body)
        except ValueError:
            return self.reply(400, {"error": "body is not JSON"})
        if not isinstance(req, dict) or req.get("event") != event:
            return self.reply(400, {"error": "event does not match the path"})
        # Mailbox events trust "user": the gateway sends the name that
        # authenticate confirmed (and the signature proves it came from it).
        if event not in ("authenticate", "connect", "disconnect") and not valid_user(req.get("user")):
            return self.reply(400, {"error": "bad user name"})

        # 4. Answer. Repeats of a call (same webhook-id) need no bookkeeping:
        # only quit changes anything, and it is idempotent.
        try:
            status, result = HANDLERS[event](req)
        except Exception as e:  # a bug or an I/O error: 500, never a hang
            log("error in", event, repr(e))
            return self.reply(500, {"error": "internal error"})
        if status == 200 and event == "retrieve":
            return self.stream(result)
        self.reply(status, result)

    def stream(self, f):
        """Sends a message file as it is stored, in chunks: never whole in
        memory, whatever its size. The gateway converts line ends itself."""
        with f:
            self.send_response(200)
            self.send_header("Content-Type", "message/rfc822")
            self.send_header("Content-Length", str(os.fstat(f.fileno()).st_size))
            self.end_headers()
            try:
                shutil.copyfileobj(f, self.wfile, 65536)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                # The gateway stops a TOP transfer once it has the lines it needs.
                self.close_connection = True

    def not_allowed(self):
        self.reply(405, {"error": "use POST"})

    do_GET = do_PUT = do_DELETE = do_PATCH = not_allowed


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True  # one thread per connection; none blocks shutdown
    tls = None  # an ssl.SSLContext in HTTPS mode

    def finish_request(self, request, client_address):
        """In HTTPS mode, the TLS handshake happens here, in the
        connection's own thread, so a slow or silent client holds up no
        one else."""
        if self.tls is None:
            return super().finish_request(request, client_address)
        request.settimeout(Handler.timeout)
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            log("TLS handshake with %s failed: %s" % (client_address[0], e))
            return
        try:
            super().finish_request(conn, client_address)
        finally:
            conn.close()


def tls_context(cert, key, client_ca):
    """The server side of HTTPS: our certificate and key; with client_ca,
    every client must present a certificate that CA signed."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if client_ca:
        ctx.load_verify_locations(cafile=client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def parse_listen(value):
    """HOST:PORT, [IPv6]:PORT -> (family, host, port)."""
    host, _, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        return socket.AF_INET6, host[1:-1], int(port)
    return socket.AF_INET, host or "127.0.0.1", int(port)


def main(argv):
    opts = {"listen": os.environ.get("BACKEND_LISTEN", "127.0.0.1:8025"),
            "root": os.environ.get("BACKEND_ROOT"),
            "users": os.environ.get("BACKEND_USERS"),
            "secret": os.environ.get("BACKEND_SECRET"),
            "token": os.environ.get("BACKEND_TOKEN"),
            "tls-cert": os.environ.get("BACKEND_TLS_CERT"),
            "tls-key": os.environ.get("BACKEND_TLS_KEY"),
            "tls-client-ca": os.environ.get("BACKEND_TLS_CLIENT_CA"),
            "quiet": None}
    for arg in argv:
        name, eq, value = arg.partition("=")
        if arg in ("-h", "--help"):
            print(__doc__.strip())
            return 0
        if not name.startswith("--") or name[2:] not in opts or (not eq and name != "--quiet"):
            print("usage: backend.py --root=DIR [--listen=HOST:PORT] [--users=FILE] "
                  "[--secret=whsec_...] [--token=TOKEN] [--tls-cert=FILE --tls-key=FILE "
                  "[--tls-client-ca=FILE]] [--quiet]", file=sys.stderr)
            return 2
        opts[name[2:]] = value if eq else "1"
    if not opts["root"]:
        print("backend.py: --root=DIR is required", file=sys.stderr)
        return 2
    try:
        CONFIG["secrets"] = secret_keys(opts["secret"] or "")
    except ValueError as e:
        print("backend.py: bad --secret:", e, file=sys.stderr)
        return 2
    CONFIG["root"] = opts["root"]
    CONFIG["users"] = opts["users"] or os.path.join(opts["root"], "users")
    CONFIG["token"] = opts["token"] or None
    CONFIG["quiet"] = bool(opts["quiet"])

    if bool(opts["tls-cert"]) != bool(opts["tls-key"]) or (opts["tls-client-ca"]
                                                            and not opts["tls-cert"]):
        print("backend.py: HTTPS needs both --tls-cert and --tls-key "
              "(--tls-client-ca only with them)", file=sys.stderr)
        return 2
    tls = None
    if opts["tls-cert"]:
        try:
            tls = tls_context(opts["tls-cert"], opts["tls-key"], opts["tls-client-ca"])
        except (OSError, ssl.SSLError) as e:
            print("backend.py: cannot load the TLS files:", e, file=sys.stderr)
            return 2

    family, host, port = parse_listen(opts["listen"])
    Server.address_family = family
    server = Server((host, port), Handler)
    server.tls = tls
    # SIGTERM (docker stop, CI) stops the server like Ctrl-C, with status 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    where = server.server_address
    print("pop3gw python backend listening on %s:%d%s" % (
        "[%s]" % where[0] if family == socket.AF_INET6 else where[0], where[1],
        " (https)" if tls else ""), file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
