"""TLS: implicit TLS listeners (RFC 8314), STLS (RFC 2595), the plaintext
policy, certificate reload on SIGHUP, start-up checks, stalled handshakes,
and real TLS clients (openssl s_client, curl, poplib, fetchmail, mpop).

Each class makes its own self-signed certificate (with subjectAltName
localhost and 127.0.0.1, so clients verify it for real with the certificate
itself as the trust anchor). Remote clients are simulated with a PROXY v1
header from the trusted 127.0.0.1: the session then sees 203.0.113.7, which
is not loopback, so `plaintext_auth = tls-only` applies to it.

The helpers at the top (make_cert, TlsGateway, Client, ...) are also used by
test_proxy_haproxy.py and test_sasl_utf8.py.
"""

import base64
import getpass
import hashlib
import itertools
import os
import poplib
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import time
import unittest

from harness import (DEFAULT_USERS, HOST, Backend, Gateway, MailRoot, ProtocolError, Raw, upper,
                     StackTestCase, free_port, new_dir)

OPENSSL = shutil.which("openssl")
CURL = shutil.which("curl")
FETCHMAIL = shutil.which("fetchmail")
MPOP = shutil.which("mpop")

REMOTE_IP = "203.0.113.7"  # TEST-NET-3: only ever written into PROXY headers
_claimed_ports = itertools.count(41000)


def claimed_port():
    """A distinct source port to claim in a PROXY header, so that a test can
    pick its session's webhooks out of the shared request log."""
    return next(_claimed_ports)


# ------------------------------------------------------------ certificates


def make_cert(directory, name="server", kind="ec", cn="localhost"):
    """A self-signed certificate and key (PEM) valid for localhost and
    127.0.0.1. Returns (cert_path, key_path)."""
    if not OPENSSL:
        raise unittest.SkipTest("the openssl command is needed to make test certificates")
    cert = os.path.join(directory, name + "-cert.pem")
    key = os.path.join(directory, name + "-key.pem")
    if kind == "rsa":
        newkey = ["-newkey", "rsa:2048"]
    else:
        newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    res = subprocess.run([OPENSSL, "req", "-x509", *newkey, "-nodes", "-subj", "/CN=" + cn,
                          "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-days", "2",
                          "-keyout", key, "-out", cert],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, timeout=60)
    if res.returncode != 0:
        raise AssertionError("openssl req failed: %s" % res.stdout.decode(errors="replace"))
    return cert, key


def fingerprint_file(cert_path):
    """SHA-256 of the DER form of the first certificate in a PEM file."""
    with open(cert_path) as f:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(f.read())).hexdigest()


def fingerprint_peer(sock):
    return hashlib.sha256(sock.getpeercert(binary_form=True)).hexdigest()


def client_context(cafile=None, maximum=None, minimum=None, ciphers=None):
    """A client context that verifies the server against `cafile` (the
    self-signed certificate) and the name localhost; without cafile it
    verifies nothing (for tests that swap certificates)."""
    if cafile:
        ctx = ssl.create_default_context(cafile=cafile)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if maximum:
        ctx.maximum_version = maximum
    if minimum:
        ctx.minimum_version = minimum
    if ciphers:
        ctx.set_ciphers(ciphers)
    return ctx


# ------------------------------------------------------------ PROXY headers


def proxy_v1(src=REMOTE_IP, sport=None, dst=None, dport=110):
    fam = "TCP6" if ":" in src else "TCP4"
    dst = dst or ("2001:db8::1" if fam == "TCP6" else "192.0.2.1")
    return ("PROXY %s %s %s %d %d\r\n" % (fam, src, dst, sport or claimed_port(), dport)).encode()


PROXY_V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v2(src=REMOTE_IP, sport=None, dst=None, dport=110, command=0x21, tlvs=b""):
    """A PROXY v2 header: PROXY command (0x21) over TCP4 or TCP6, or with
    command=0x20 the LOCAL command with no address."""
    if command == 0x20:
        return PROXY_V2_SIG + bytes([0x20, 0x00]) + struct.pack("!H", len(tlvs)) + tlvs
    if ":" in src:
        fam, dst = 0x21, dst or "2001:db8::1"
        addrs = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
    else:
        fam, dst = 0x11, dst or "192.0.2.1"
        addrs = socket.inet_aton(src) + socket.inet_aton(dst)
    body = addrs + struct.pack("!HH", sport or claimed_port(), dport) + tlvs
    return PROXY_V2_SIG + bytes([command, fam]) + struct.pack("!H", len(body)) + body


# ----------------------------------------------------------------- clients


class Client(Raw):
    """harness.Raw (strict wire checks, cmd/multi/step/login), optionally
    after a PROXY header and optionally inside TLS from the first byte."""

    def __init__(self, port, context=None, header=b"", timeout=10, greet=True):
        self.timeout = timeout
        self.buf = bytearray()
        self.eof = False
        sock = socket.create_connection((HOST, port), timeout=timeout)
        self.local_port = sock.getsockname()[1]
        if header:
            sock.sendall(header)
        self.sock = context.wrap_socket(sock, server_hostname="localhost") if context else sock
        self.greeting = self.line() if greet else None

    def starttls(self, context):
        """STLS, then the handshake; checks nothing followed the +OK."""
        st = self.cmd("STLS")
        if not st.startswith(b"+OK"):
            raise AssertionError("STLS refused: %r" % st)
        if self.buf:
            raise ProtocolError("bytes after the STLS +OK before the handshake: %r" % bytes(self.buf))
        self.sock = context.wrap_socket(self.sock, server_hostname="localhost")
        return st

    def quiet(self, wait=0.4):
        """What arrives within `wait` seconds (b'' if nothing). Works on TLS
        sockets too, where TLS 1.3 session tickets make the socket readable
        without any application data."""
        if self.buf:
            out = bytes(self.buf)
            self.buf.clear()
            return out
        self.sock.settimeout(wait)
        try:
            return self.sock.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            return b""
        finally:
            self.sock.settimeout(self.timeout)

    def capa(self):
        st, body = self.multi("CAPA")
        if not st.startswith(b"+OK"):
            raise AssertionError("CAPA failed: %r" % st)
        return body.decode().split("\r\n")[:-1]

    def tls_version(self):
        return self.sock.version() if isinstance(self.sock, ssl.SSLSocket) else None


def refused_before_greeting(port, data, header=b"", wait=5):
    """Connects, sends header + data, and returns what the server sent
    before closing (raises socket.timeout if it keeps the connection)."""
    with socket.create_connection((HOST, port), timeout=wait) as s:
        if header or data:
            try:
                s.sendall(header + data)
            except OSError:
                return b""
        out = b""
        while True:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                return out
            if not chunk:
                return out
            out += chunk


# ---------------------------------------------------------------- gateways


class TlsGateway(Gateway):
    """pop3gw with a certificate and an implicit-TLS listener besides the
    plain one. With proxy_protocol on, its readiness probe sends a header
    first (v1 UNKNOWN or v2 LOCAL); when no probe can work (an untrusted
    proxy network) set ready_log to a log line to wait for instead."""

    def __init__(self, backend, cert, key, args=None, name="gateway", tls_listener=True,
                 ready_log=None):
        self.cert, self.key = cert, key
        self.tls_port = free_port() if tls_listener else None
        self.ready_log = ready_log
        self._spawns = 0
        opts = {"tls_cert": cert, "tls_key": key}
        opts.update(args or {})
        super().__init__(backend, args=opts, name=name)

    def _spawn(self):
        if self._spawns and self.tls_port:
            self.tls_port = free_port()  # a retry after a port clash
        self._spawns += 1
        super()._spawn()

    def argv(self):
        argv = super().argv()
        if self.tls_port:
            argv.append("--listen_tls=%s:%d" % (HOST, self.tls_port))
        return argv

    def ready(self):
        if self.ready_log:
            return self.ready_log in self.log()
        mode = self.opts.get("proxy_protocol", "off")
        if mode == "off":
            return super().ready()
        header = b"PROXY UNKNOWN\r\n" if mode == "v1" else proxy_v2(command=0x20)
        with socket.create_connection((HOST, self.port), timeout=2) as s:
            s.sendall(header)
            line = s.makefile("rb").readline(1024)
        return line.startswith(b"+OK")

    def log_count(self, text):
        return self.log().count(text)

    def wait_log(self, text, count=1, timeout=5.0):
        """Polls the log until `text` appears `count` times; returns the log."""
        deadline = time.monotonic() + upper(timeout)
        while True:
            log = self.log()
            if log.count(text) >= count:
                return log
            if time.monotonic() > deadline:
                raise AssertionError("gateway log never had %r x%d; tail:\n%s"
                                     % (text, count, log[-3000:]))
            time.sleep(0.02)


class TlsStackTestCase(StackTestCase):
    """A backend and a TlsGateway with a fresh self-signed certificate."""

    KEY_KIND = "ec"

    @classmethod
    def make_gateway(cls, backend, cert, key):
        return TlsGateway(backend, cert, key, args=cls.GATEWAY_ARGS)

    @classmethod
    def start_stack(cls, owner):
        root = cls.make_root()
        add_cleanup = owner.addClassCleanup if isinstance(owner, type) else owner.addCleanup
        add_cleanup(root.remove)
        cert, key = make_cert(new_dir("tls"), kind=cls.KEY_KIND)
        backend = Backend(root, args=cls.BACKEND_ARGS)
        add_cleanup(backend.stop_clean)
        backend.start()
        gw = cls.make_gateway(backend, cert, key)
        add_cleanup(gw.stop_clean)
        gw.start()
        return root, backend, gw

    # helpers

    def ctx(self, **kw):
        return client_context(self.gw.cert, **kw)

    def connect(self, tls=False, header=b"", context=None, **kw):
        """A Client on the plain port, or on the TLS port with tls=True."""
        ctx = context or (self.ctx() if tls else None)
        c = Client(self.gw.tls_port if tls else self.gw.port, context=ctx, header=header, **kw)
        self.addCleanup(c.close)
        return c

    def events_for(self, ip, port, until=None, start=0, timeout=5.0):
        """Webhook bodies whose client is ip:port; with `until`, waits
        until an event of that name is among them."""
        def mine(rs):
            return [r for r in rs if r.get("client", {}).get("ip") == ip
                    and r.get("client", {}).get("port") == port]
        if until:
            self.backend.wait_requests(lambda rs: any(r["event"] == until for r in mine(rs)),
                                       start=start, timeout=timeout)
        return mine(self.backend.requests()[start:])

    def stat_line(self, user="alice"):
        msgs = self.msgs(user)
        return b"+OK %d %d\r\n" % (len(msgs), sum(m.size for m in msgs))


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


# ------------------------------------------------------------ implicit TLS


class ImplicitTlsTests(TlsStackTestCase):
    """listen_tls: the handshake comes before the greeting; TLS 1.2+ with
    forward-secret AEAD suites only. An RSA certificate, so that suites
    without ECDHE could be negotiated if the gateway allowed them."""

    KEY_KIND = "rsa"

    @classmethod
    def make_root(cls):
        root = MailRoot()
        cls.big = root.add_big("erin", "1700000301.M1P1.big", megabytes=4)
        return root

    def test_greeting_inside_tls_and_login(self):
        c = self.connect(tls=True)
        self.assertTrue(c.greeting.startswith(b"+OK"), c.greeting)
        self.assertIn(c.tls_version(), ("TLSv1.2", "TLSv1.3"))
        self.assertEqual(fingerprint_peer(c.sock), fingerprint_file(self.gw.cert))
        caps = c.capa()
        self.assertNotIn("STLS", caps)  # TLS is already on
        self.assertIn("USER", caps)
        self.assertTrue(c.cmd("STLS").startswith(b"-ERR"))
        start = len(self.backend.requests())
        c.login()
        self.assertEqual(c.cmd("STAT"), self.stat_line())
        st, body = c.multi("RETR 1")
        self.assertEqual(body, self.msgs()[0].expected)
        self.assertTrue(c.cmd("QUIT").startswith(b"+OK"))
        evs = self.events_for(HOST, c.local_port, until="quit", start=start)
        self.assertEqual([e["event"] for e in evs], ["authenticate", "list", "retrieve", "quit"])
        for e in evs:
            self.assertEqual(e["client"], {"ip": HOST, "port": c.local_port, "tls": True})

    def test_pipelined_commands_in_one_tls_record(self):
        c = self.connect(tls=True)
        c.send(b"USER alice\r\nPASS secret1\r\nSTAT\r\nLIST 2\r\nRETR 2\r\nNOOP\r\nQUIT\r\n")
        self.assertTrue(c.status().startswith(b"+OK"))
        self.assertTrue(c.status().startswith(b"+OK"))
        self.assertEqual(c.status(), self.stat_line())
        self.assertEqual(c.status(), b"+OK 2 %d\r\n" % self.msgs()[1].size)
        self.assertTrue(c.status().startswith(b"+OK"))
        self.assertEqual(c.body(), self.msgs()[1].expected)
        self.assertTrue(c.status().startswith(b"+OK"))
        self.assertTrue(c.status().startswith(b"+OK"))
        self.assertEqual(c.expect_eof(), b"")

    def test_big_retr_over_tls_to_a_slow_reader(self):
        """4 MB through bufferevent_openssl while the client first does not
        read at all (the transfer pauses at the output high-water mark)."""
        c = self.connect(tls=True, timeout=60)
        c.login("erin", "erinpw")
        c.send(b"RETR 1\r\n")
        time.sleep(0.5)
        self.assertTrue(c.status().startswith(b"+OK"))
        h = hashlib.sha256()
        n = 0
        while True:
            line = c.line()
            if line == b".\r\n":
                break
            if line.startswith(b"."):
                line = line[1:]
            h.update(line)
            n += len(line)
            if n > self.big.size:
                self.fail("more than the message's %d octets before the final dot"
                          % self.big.size)
        self.assertEqual(n, self.big.size)
        self.assertEqual(h.hexdigest(), self.big.sha256)
        self.assertTrue(c.cmd("QUIT").startswith(b"+OK"))

    def test_plaintext_on_tls_port_gets_no_greeting(self):
        """No plaintext greeting leaks: the listener waits for a ClientHello
        and closes on anything else."""
        out = refused_before_greeting(self.gw.tls_port, b"CAPA\r\nUSER alice\r\n")
        self.assertNotIn(b"+OK", out)
        self.assertNotIn(b"-ERR", out)

    def test_tls12_forward_secret_aead_only(self):
        """TLS 1.2: ECDHE with AES-GCM or ChaCha20 is accepted; RSA key
        exchange and SHA-1 MAC suites are refused."""
        ok = ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
              "ECDHE-RSA-CHACHA20-POLY1305"]
        refused = ["AES128-GCM-SHA256", "AES256-SHA", "ECDHE-RSA-AES128-SHA"]
        for suite in ok + refused:
            with self.subTest(suite=suite):
                try:
                    ctx = self.ctx(maximum=ssl.TLSVersion.TLSv1_2, ciphers=suite)
                except ssl.SSLError:
                    self.skipTest("this client's OpenSSL cannot offer %s" % suite)
                if suite in ok:
                    c = self.connect(tls=True, context=ctx)
                    self.assertEqual(c.tls_version(), "TLSv1.2")
                    self.assertEqual(c.sock.cipher()[0], suite)
                    self.assertTrue(c.greeting.startswith(b"+OK"))
                else:
                    with self.assertRaises((ssl.SSLError, ConnectionError)):
                        self.connect(tls=True, context=ctx)

    def _openssl_old_protocol(self, flag):
        # OPENSSL_CONF=/dev/null and SECLEVEL=0 lift the client's own floor
        # (Debian's openssl.cnf sets MinProtocol = TLSv1.2), so the client
        # really offers the old version and the server has to refuse it.
        env = dict(os.environ, OPENSSL_CONF="/dev/null")
        res = subprocess.run([OPENSSL, "s_client", "-connect", "%s:%d" % (HOST, self.gw.tls_port),
                              flag, "-cipher", "DEFAULT:@SECLEVEL=0", "-servername", "localhost"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, env=env, timeout=20)
        out = res.stdout.decode("utf-8", "replace")
        if re.search(r"no protocols available|unknown option|Option unknown|"
                     r"unsupported protocol.*ssl_choose_client_version|wrong ssl version", out, re.I):
            self.skipTest("this openssl cannot even offer %s: %s" % (flag, out[-300:]))
        return res.returncode, out

    @unittest.skipUnless(OPENSSL, "openssl is not installed")
    def test_tls11_and_tls10_refused(self):
        for flag in ("-tls1_1", "-tls1"):
            with self.subTest(flag=flag):
                rc, out = self._openssl_old_protocol(flag)
                self.assertNotEqual(rc, 0, out)
                self.assertIn("alert protocol version", out)
                self.assertIn("Cipher is (NONE)", out)
                self.assertNotIn("+OK", out)

    @unittest.skipUnless(OPENSSL, "openssl is not installed")
    def test_openssl_s_client_implicit_tls(self):
        res = subprocess.run(
            [OPENSSL, "s_client", "-connect", "%s:%d" % (HOST, self.gw.tls_port),
             "-CAfile", self.gw.cert, "-verify_hostname", "localhost", "-verify_return_error",
             "-quiet", "-crlf", "-ign_eof"],
            input=b"USER alice\nPASS secret1\nSTAT\nQUIT\n", stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, timeout=20)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertIn(self.stat_line(), res.stdout)
        self.assertTrue(res.stdout.startswith(b"+OK"), res.stdout)


class MinTls13Tests(TlsStackTestCase):
    GATEWAY_ARGS = {"tls_min_version": "1.3"}

    def test_tls12_refused_tls13_accepted(self):
        with self.assertRaises((ssl.SSLError, ConnectionError)):
            self.connect(tls=True, context=self.ctx(maximum=ssl.TLSVersion.TLSv1_2))
        c = self.connect(tls=True)
        self.assertEqual(c.tls_version(), "TLSv1.3")
        # STLS honours the same floor.
        c = self.connect()
        c.cmd("STLS")
        with self.assertRaises((ssl.SSLError, ConnectionError)):
            c.sock = self.ctx(maximum=ssl.TLSVersion.TLSv1_2).wrap_socket(
                c.sock, server_hostname="localhost")


# -------------------------------------------------------------------- STLS


class StlsTests(TlsStackTestCase):
    GATEWAY_ARGS = {"max_bad_commands": "1000"}

    def test_capa_offers_stls_until_upgraded(self):
        c = self.connect()
        self.assertIn("STLS", c.capa())
        c.starttls(self.ctx())
        self.assertIn(c.tls_version(), ("TLSv1.2", "TLSv1.3"))
        self.assertEqual(fingerprint_peer(c.sock), fingerprint_file(self.gw.cert))
        caps = c.capa()
        self.assertNotIn("STLS", caps)
        self.assertIn("USER", caps)
        self.assertIn("SASL PLAIN LOGIN XOAUTH2 OAUTHBEARER", caps)

    def test_bytes_after_stls_are_discarded(self):
        """STLS and CAPA in one write: the CAPA, sent before the handshake,
        must be answered neither in the clear nor inside TLS."""
        c = self.connect()
        c.send(b"STLS\r\nCAPA\r\n")
        st = c.status()
        self.assertTrue(st.startswith(b"+OK"), st)
        self.assertEqual(c.quiet(0.3), b"", "the gateway answered CAPA in the clear")
        c.sock = self.ctx().wrap_socket(c.sock, server_hostname="localhost")
        self.assertEqual(c.quiet(0.5), b"", "the injected CAPA was answered inside TLS")
        # The first reply inside TLS is the one to the first command sent inside TLS.
        self.assertEqual(c.cmd("STLS"), b"-ERR TLS is already active\r\n")
        self.assertEqual(c.quiet(0.2), b"")
        c.login()
        self.assertEqual(c.cmd("STAT"), self.stat_line())

    def test_injected_login_before_handshake_is_discarded(self):
        """The classic attack: a man in the middle appends commands to the
        client's STLS; none of them may run."""
        start = len(self.backend.requests())
        c = self.connect()
        c.send(b"STLS\r\nUSER alice\r\nPASS secret1\r\nDELE 1\r\nQUIT\r\n")
        self.assertTrue(c.status().startswith(b"+OK"))
        c.sock = self.ctx().wrap_socket(c.sock, server_hostname="localhost")
        self.assertEqual(c.quiet(0.5), b"")
        self.assertEqual(self.events_for(HOST, c.local_port, start=start), [])
        # Still in AUTHORIZATION: a command of TRANSACTION is refused.
        self.assertTrue(c.cmd("STAT").startswith(b"-ERR"))

    def test_stays_in_authorization_and_login_is_over_tls(self):
        start = len(self.backend.requests())
        c = self.connect()
        c.starttls(self.ctx())
        self.assertTrue(c.cmd("STAT").startswith(b"-ERR"))
        c.login()
        self.assertEqual(c.cmd("STAT"), self.stat_line())
        self.assertTrue(c.cmd("QUIT").startswith(b"+OK"))
        evs = self.events_for(HOST, c.local_port, until="quit", start=start)
        self.assertTrue(evs)
        for e in evs:
            self.assertEqual(e["client"]["tls"], True, e)

    def test_stls_refused_when_tls_is_active(self):
        c = self.connect()
        c.starttls(self.ctx())
        self.assertEqual(c.cmd("STLS"), b"-ERR TLS is already active\r\n")
        c.login()  # the session goes on

    def test_stls_refused_in_transaction(self):
        c = self.connect()
        c.login()  # loopback: plaintext allowed
        st = c.cmd("STLS")
        self.assertTrue(st.startswith(b"-ERR"), st)
        self.assertEqual(c.quiet(0.2), b"")
        self.assertEqual(c.cmd("STAT"), self.stat_line())  # still plaintext, still usable

    def test_stls_with_an_argument_is_refused(self):
        c = self.connect()
        self.assertTrue(c.cmd("STLS now").startswith(b"-ERR"))
        c.starttls(self.ctx())
        c.login()

    def test_lower_case_stls(self):
        c = self.connect()
        c.send(b"stls\r\n")
        self.assertTrue(c.status().startswith(b"+OK"))
        c.sock = self.ctx().wrap_socket(c.sock, server_hostname="localhost")
        c.login()

    def test_failed_handshake_closes_only_that_connection(self):
        c = self.connect()
        self.assertTrue(c.cmd("STLS").startswith(b"+OK"))
        c.send(b"this is not a TLS ClientHello\r\n")
        c.sock.settimeout(5)
        try:
            rest = c.sock.recv(100)
        except ConnectionResetError:
            rest = b""
        self.assertFalse(rest.startswith(b"+OK") or rest.startswith(b"-ERR"), rest)
        d = self.connect()
        d.starttls(self.ctx())
        d.login()


# --------------------------------------------------------- plaintext policy


class PlaintextPolicyTests(TlsStackTestCase):
    """plaintext_auth = tls-only (the default) for a non-loopback client:
    the PROXY header from the trusted 127.0.0.1 claims 203.0.113.7."""

    GATEWAY_ARGS = {"proxy_protocol": "v1", "proxy_trusted": "127.0.0.1/32",
                    "max_bad_commands": "1000"}

    def remote(self, tls=False, src=REMOTE_IP):
        port = claimed_port()
        c = self.connect(tls=tls, header=proxy_v1(src, port))
        c.claimed = port
        return c

    def test_capa_before_tls_has_no_password_mechanisms(self):
        c = self.remote()
        caps = c.capa()
        self.assertIn("STLS", caps)
        self.assertNotIn("USER", caps)
        self.assertFalse([x for x in caps if x.startswith("SASL")], caps)

    def test_user_pass_refused_before_tls(self):
        start = len(self.backend.requests())
        c = self.remote()
        st = c.cmd("USER alice")
        self.assertTrue(st.startswith(b"-ERR [AUTH]"), st)
        st = c.cmd("PASS secret1")
        self.assertTrue(st.startswith(b"-ERR [AUTH]"), st)
        self.assertTrue(c.cmd("STAT").startswith(b"-ERR"))
        self.assertTrue(c.cmd("QUIT").startswith(b"+OK"))
        self.assertEqual(self.events_for(REMOTE_IP, c.claimed, start=start), [])

    def test_every_sasl_mechanism_refused_before_tls(self):
        start = len(self.backend.requests())
        c = self.remote()
        for line in ("AUTH PLAIN " + b64("\0alice\0secret1"), "AUTH PLAIN", "AUTH LOGIN",
                     "AUTH LOGIN " + b64("alice"),
                     "AUTH XOAUTH2 " + b64("user=carol\x01auth=Bearer tok-carol-123\x01\x01"),
                     "AUTH OAUTHBEARER " + b64("n,a=carol,\x01auth=Bearer tok-carol-123\x01\x01")):
            with self.subTest(line=line.split(" ")[:2]):
                st = c.step(line)  # a "+ " continuation would fail the prefix check
                self.assertTrue(st.startswith(b"-ERR [AUTH]"), st)
        # A bare AUTH lists no mechanism that could be used now.
        st, body = c.multi("AUTH")
        self.assertTrue(st.startswith(b"+OK"), st)
        self.assertEqual(body, b"")
        self.assertTrue(c.cmd("QUIT").startswith(b"+OK"))
        self.assertEqual(self.events_for(REMOTE_IP, c.claimed, start=start), [])

    def test_apop_is_allowed_before_tls(self):
        """APOP sends no password, so tls-only does not refuse it."""
        start = len(self.backend.requests())
        c = self.remote()
        ts = re.search(rb"<[^>]+>", c.greeting).group(0)
        digest = hashlib.md5(ts + b"secret1").hexdigest()
        st = c.cmd("APOP alice " + digest)
        self.assertTrue(st.startswith(b"+OK"), st)
        self.assertTrue(c.cmd("QUIT").startswith(b"+OK"))
        evs = self.events_for(REMOTE_IP, c.claimed, until="quit", start=start)
        self.assertEqual(evs[0]["method"], "APOP")
        self.assertEqual(evs[0]["client"], {"ip": REMOTE_IP, "port": c.claimed, "tls": False})

    def test_after_stls_everything_is_offered_and_works(self):
        start = len(self.backend.requests())
        c = self.remote()
        c.starttls(self.ctx())
        caps = c.capa()
        self.assertIn("USER", caps)
        self.assertIn("SASL PLAIN LOGIN XOAUTH2 OAUTHBEARER", caps)
        self.assertNotIn("STLS", caps)
        st = c.cmd("AUTH PLAIN " + b64("\0alice\0secret1"))
        self.assertTrue(st.startswith(b"+OK"), st)
        self.assertEqual(c.cmd("STAT"), self.stat_line())
        self.assertTrue(c.cmd("QUIT").startswith(b"+OK"))
        evs = self.events_for(REMOTE_IP, c.claimed, until="quit", start=start)
        self.assertEqual([e["event"] for e in evs], ["authenticate", "list", "quit"])
        for e in evs:
            self.assertEqual(e["client"], {"ip": REMOTE_IP, "port": c.claimed, "tls": True})

    def test_user_pass_after_stls(self):
        c = self.remote()
        c.starttls(self.ctx())
        c.login("bob")
        self.assertEqual(c.cmd("STAT"), self.stat_line("bob"))

    def test_implicit_tls_remote_login(self):
        start = len(self.backend.requests())
        c = self.remote(tls=True)
        self.assertIn("USER", c.capa())
        c.login()
        self.assertTrue(c.cmd("QUIT").startswith(b"+OK"))
        evs = self.events_for(REMOTE_IP, c.claimed, until="quit", start=start)
        self.assertTrue(all(e["client"]["tls"] is True for e in evs), evs)

    def test_loopback_after_proxy_may_use_plaintext(self):
        """The exception is decided on the real address after PROXY."""
        for src in ("127.0.0.9", "::1", "::ffff:127.0.0.1"):
            with self.subTest(src=src):
                c = self.remote(src=src)
                self.assertIn("USER", c.capa())
                c.login()
                self.assertTrue(c.cmd("QUIT").startswith(b"+OK"))
        # PROXY UNKNOWN keeps the socket's own address, 127.0.0.1.
        c = self.connect(header=b"PROXY UNKNOWN\r\n")
        c.login()

    def test_other_private_addresses_are_not_loopback(self):
        for src in ("10.1.2.3", "192.168.1.5", "2001:db8::5"):
            with self.subTest(src=src):
                c = self.remote(src=src)
                self.assertTrue(c.cmd("USER alice").startswith(b"-ERR [AUTH]"))


class AllowPlaintextTests(TlsStackTestCase):
    """plaintext_auth = allow: passwords in the clear from anywhere."""

    GATEWAY_ARGS = {"proxy_protocol": "v1", "proxy_trusted": "127.0.0.1/32",
                    "plaintext_auth": "allow"}

    def test_remote_plaintext_login_allowed(self):
        start = len(self.backend.requests())
        port = claimed_port()
        c = self.connect(header=proxy_v1(REMOTE_IP, port))
        caps = c.capa()
        self.assertIn("USER", caps)
        self.assertIn("STLS", caps)
        self.assertIn("SASL PLAIN LOGIN XOAUTH2 OAUTHBEARER", caps)
        c.login()
        self.assertEqual(c.cmd("STAT"), self.stat_line())
        self.assertTrue(c.cmd("QUIT").startswith(b"+OK"))
        evs = self.events_for(REMOTE_IP, port, until="quit", start=start)
        self.assertEqual(evs[0]["method"], "USER")
        for e in evs:
            self.assertEqual(e["client"], {"ip": REMOTE_IP, "port": port, "tls": False})

    def test_remote_sasl_plain_in_the_clear(self):
        c = self.connect(header=proxy_v1(REMOTE_IP))
        st = c.cmd("AUTH PLAIN " + b64("\0bob\0pass word 2"))
        self.assertTrue(st.startswith(b"+OK"), st)


# ---------------------------------------------------------- SIGHUP reload


class CertReloadTests(TlsStackTestCase):
    """SIGHUP loads the certificate and key again: new connections get the
    new certificate, established sessions carry on, and a file that does
    not load keeps the previous certificate (with a log line saying why)."""

    def any_ctx(self):
        return client_context(None)  # the certificate changes under us

    def new_fingerprints(self):
        a = self.connect(tls=True, context=self.any_ctx())
        b = self.connect()
        b.starttls(self.any_ctx())
        return fingerprint_peer(a.sock), fingerprint_peer(b.sock)

    def assert_session_works(self, c):
        self.assertEqual(c.cmd("STAT"), self.stat_line())
        st, body = c.multi("RETR 2")
        self.assertEqual(body, self.msgs()[1].expected)

    def test_sighup_reload(self):
        gw = self.gw
        first = fingerprint_file(gw.cert)
        self.assertEqual(self.new_fingerprints(), (first, first))
        # Sessions open across all the reloads: implicit TLS and STLS.
        a = self.connect(tls=True)
        a.login()
        b = self.connect()
        b.starttls(self.ctx())
        b.login("alice")
        self.assert_session_works(a)

        # 1. A new certificate and key in the same files.
        cert2, key2 = make_cert(new_dir("tls"), name="second")
        second = fingerprint_file(cert2)
        self.assertNotEqual(first, second)
        shutil.copyfile(cert2, gw.cert)
        shutil.copyfile(key2, gw.key)
        n = gw.log_count("TLS certificate reloaded")
        os.kill(gw.pid, signal.SIGHUP)
        gw.wait_log("TLS certificate reloaded", n + 1)
        self.assertEqual(self.new_fingerprints(), (second, second))
        c = self.connect(tls=True, context=client_context(cert2))  # verifies for real
        self.assertTrue(c.greeting.startswith(b"+OK"))
        self.assert_session_works(a)
        self.assert_session_works(b)

        # 2. Garbage: the reload fails, the second certificate stays.
        for path in (gw.cert, gw.key):
            with open(path, "w") as f:
                f.write("this is not PEM\n")
        n = gw.log_count("TLS reload failed")
        os.kill(gw.pid, signal.SIGHUP)
        log = gw.wait_log("TLS reload failed", n + 1)
        self.assertRegex(log, r"cannot load TLS certificate.*error=")
        self.assertIn("keeping the old certificate", log)
        self.assertEqual(self.new_fingerprints(), (second, second))
        self.assert_session_works(a)

        # 3. A certificate whose key does not match: refused the same way.
        cert3, key3 = make_cert(new_dir("tls"), name="third")
        shutil.copyfile(cert3, gw.cert)
        shutil.copyfile(key2, gw.key)
        n = gw.log_count("TLS reload failed")
        os.kill(gw.pid, signal.SIGHUP)
        gw.wait_log("TLS reload failed", n + 1)
        self.assertEqual(self.new_fingerprints(), (second, second))

        # 4. Good files again: the reload works after failures.
        shutil.copyfile(cert3, gw.cert)
        shutil.copyfile(key3, gw.key)
        n = gw.log_count("TLS certificate reloaded")
        os.kill(gw.pid, signal.SIGHUP)
        gw.wait_log("TLS certificate reloaded", n + 1)
        self.assertEqual(self.new_fingerprints(), (fingerprint_file(cert3),) * 2)

        for s in (a, b):
            self.assert_session_works(s)
            self.assertTrue(s.cmd("QUIT").startswith(b"+OK"))
        gw.check_alive("after four SIGHUPs")


# ------------------------------------------------------- real TLS clients


def delivered_ok(test, files, msgs, tool):
    """Each message arrived once: its Subject and body lines are in one file."""
    test.assertEqual(len(files), len(msgs), "%s delivered %d files" % (tool, len(files)))
    contents = []
    for path in files:
        with open(path, "rb") as f:
            contents.append(f.read().replace(b"\r\n", b"\n"))
    for m in msgs:
        text = m.expected.replace(b"\r\n", b"\n")
        head, _, body = text.partition(b"\n\n")
        subject = [l for l in head.split(b"\n") if l.startswith(b"Subject:")][0]
        hits = [c for c in contents if subject in c and body.rstrip(b"\n") in c]
        test.assertTrue(hits, "%s: %r not delivered intact" % (tool, subject))


class RealTlsClientTests(TlsStackTestCase):
    """Every client verifies the certificate (the self-signed certificate is
    its trust anchor, the name is localhost or 127.0.0.1), and every login
    is checked to have reached the backend with client.tls = true."""

    def setUp(self):
        super().setUp()
        self.start = len(self.backend.requests())

    def assert_logins_over_tls(self, at_least=1):
        auths = self.backend.wait_requests(
            lambda rs: len([r for r in rs if r["event"] == "authenticate"]) >= at_least,
            start=self.start)
        auths = [r for r in auths if r["event"] == "authenticate"]
        for a in auths:
            self.assertEqual(a["client"]["tls"], True, a)
        return auths

    def run_tool(self, argv, env=None, stdin=None, timeout=60):
        res = subprocess.run(argv, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             env=env, timeout=timeout)
        return res.returncode, res.stdout.decode("utf-8", "replace")

    @unittest.skipUnless(OPENSSL, "openssl is not installed")
    def test_openssl_s_client_starttls_pop3(self):
        code, out = self.run_tool(
            [OPENSSL, "s_client", "-starttls", "pop3", "-connect", "%s:%d" % (HOST, self.gw.port),
             "-CAfile", self.gw.cert, "-verify_hostname", "localhost", "-verify_return_error",
             "-quiet", "-crlf", "-ign_eof"],
            stdin=b"USER alice\nPASS secret1\nSTAT\nRETR 4\nQUIT\n")
        self.assertEqual(code, 0, out)
        self.assertIn(self.stat_line().decode(), out)
        self.assertIn("line one\r\n..crlf dot line\r\n", out)
        self.assertIn("+OK bye", out)
        self.assert_logins_over_tls()

    @unittest.skipUnless(CURL, "curl is not installed")
    def test_curl_pop3s(self):
        url = "pop3s://alice:secret1@%s:%d/" % (HOST, self.gw.tls_port)
        for i, m in enumerate(self.msgs()[:3]):
            res = subprocess.run([CURL, "-sS", "--max-time", "20", "--cacert", self.gw.cert,
                                  url + str(i + 1)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, timeout=30)
            self.assertEqual(res.returncode, 0, res.stderr)
            self.assertEqual(res.stdout, m.expected)
        self.assert_logins_over_tls(3)

    @unittest.skipUnless(CURL, "curl is not installed")
    def test_curl_ssl_reqd_uses_stls(self):
        url = "pop3://bob:pass%%20word%%202@%s:%d/1" % (HOST, self.gw.port)
        res = subprocess.run([CURL, "-sS", "-v", "--max-time", "20", "--ssl-reqd", "--cacert",
                              self.gw.cert, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             timeout=30)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(res.stdout, self.msgs("bob")[0].expected)
        self.assertIn(b"> STLS", res.stderr)
        self.assert_logins_over_tls()

    def test_poplib_pop3_ssl(self):
        p = poplib.POP3_SSL(HOST, self.gw.tls_port, context=self.ctx(), timeout=10)
        self.addCleanup(p.close)
        self.assertNotIn("STLS", p.capa())
        p.user("alice")
        p.pass_("secret1")
        msgs = self.msgs()
        self.assertEqual(p.stat(), (len(msgs), sum(m.size for m in msgs)))
        resp, lines, octets = p.retr(2)
        self.assertEqual(b"\r\n".join(lines) + b"\r\n", msgs[1].expected)
        p.quit()
        self.assert_logins_over_tls()

    def test_poplib_stls(self):
        p = poplib.POP3(HOST, self.gw.port, timeout=10)
        self.addCleanup(p.close)
        self.assertIn("STLS", p.capa())
        p.stls(self.ctx())
        self.assertNotIn("STLS", p.capa())
        p.user("bob")
        p.pass_(DEFAULT_USERS["bob"])
        resp, lines, octets = p.retr(2)
        self.assertEqual(b"\r\n".join(lines) + b"\r\n", self.msgs("bob")[1].expected)
        p.quit()
        self.assert_logins_over_tls()

    def _fetchmail(self, port, tls_words):
        work = new_dir("fetchmail-tls")
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
                    "  keep fetchall %s sslcertck sslcertfile \"%s\" sslcommonname localhost\n"
                    "  mda \"%s\"\n" % (HOST, port, getpass.getuser(), tls_words, self.gw.cert, mda))
        os.chmod(rc, 0o600)
        env = dict(os.environ, HOME=work, FETCHMAILHOME=work)
        code, log = self.run_tool([FETCHMAIL, "-f", rc, "-v", "--nosyslog",
                                   "-i", os.path.join(work, "ids"),
                                   "--pidfile", os.path.join(work, "fetchmail.pid")], env=env)
        self.assertEqual(code, 0, "fetchmail exited %d:\n%s" % (code, log[-4000:]))
        files = [os.path.join(out, n) for n in os.listdir(out)]
        delivered_ok(self, files, self.msgs(), "fetchmail")
        self.assert_logins_over_tls()
        return log

    @unittest.skipUnless(FETCHMAIL, "fetchmail is not installed")
    def test_fetchmail_implicit_tls(self):
        self._fetchmail(self.gw.tls_port, "ssl")

    @unittest.skipUnless(FETCHMAIL, "fetchmail is not installed")
    def test_fetchmail_stls(self):
        log = self._fetchmail(self.gw.port, "sslproto 'tls1.2+'")
        self.assertIn("POP3> STLS", log)

    def _mpop(self, port, starttls):
        work = new_dir("mpop-tls")
        md = os.path.join(work, "Maildir")
        for sub in ("new", "cur", "tmp"):
            os.makedirs(os.path.join(md, sub))
        conf = os.path.join(work, "mpoprc")
        with open(conf, "w") as f:
            f.write("defaults\ntimeout 30\naccount default\n"
                    "host %s\nport %d\n"
                    "tls on\ntls_starttls %s\ntls_trust_file %s\ntls_host_override localhost\n"
                    "auth user\nuser alice\npassword secret1\n"
                    "delivery maildir %s\nkeep on\nuidls_file %s\n"
                    % (HOST, port, starttls, self.gw.cert, md, os.path.join(work, "uidls")))
        os.chmod(conf, 0o600)
        code, log = self.run_tool([MPOP, "-C", conf, "--debug"], env=dict(os.environ, HOME=work))
        self.assertEqual(code, 0, "mpop exited %d:\n%s" % (code, log[-4000:]))
        files = [os.path.join(md, sub, n) for sub in ("new", "cur")
                 for n in os.listdir(os.path.join(md, sub))]
        delivered_ok(self, files, self.msgs(), "mpop")
        self.assert_logins_over_tls()
        return log

    @unittest.skipUnless(MPOP, "mpop is not installed")
    def test_mpop_implicit_tls(self):
        self._mpop(self.gw.tls_port, "off")

    @unittest.skipUnless(MPOP, "mpop is not installed")
    def test_mpop_stls(self):
        log = self._mpop(self.gw.port, "on")
        self.assertIn("--> STLS", log)


class TlsShutdownTests(TlsStackTestCase):
    """SIGTERM with TLS sessions in every stage: logged in over implicit
    TLS, in AUTHORIZATION after STLS, and a TCP connection to the TLS port
    that never starts its handshake. The gateway exits 0 after the grace
    period and deletes nothing."""

    SHARED = False
    GATEWAY_ARGS = {"shutdown_grace": "1"}

    def test_sigterm_with_tls_sessions(self):
        msgs = self.msgs()
        start = len(self.backend.requests())
        a = self.connect(tls=True, timeout=15)
        a.login()
        self.assertTrue(a.cmd("DELE 1").startswith(b"+OK"))
        b = self.connect(timeout=15)
        b.starttls(self.ctx())
        idle = socket.create_connection((HOST, self.gw.tls_port), timeout=15)
        self.addCleanup(idle.close)
        t0 = time.monotonic()
        self.gw.proc.send_signal(signal.SIGTERM)
        for c in (a, b):
            try:
                rest = c.expect_eof(timeout=10)
            except (ConnectionResetError, ssl.SSLError):
                rest = b""
            self.assertTrue(rest == b"" or rest.startswith(b"-ERR [SYS/TEMP]"), rest)
        rc = self.gw.proc.wait(timeout=15)
        self.assertEqual(rc, 0, "gateway exit status after SIGTERM")
        self.assertLess(time.monotonic() - t0, upper(10))
        self.assertEqual(self.root.uids_on_disk("alice"), sorted(m.uid for m in msgs))
        self.assertFalse([q for q in self.backend.requests()[start:] if q["event"] == "quit"])


class NoCertificateTests(StackTestCase):
    """Without tls_cert there is no STLS (the harness's default gateway)."""

    def test_stls_not_offered(self):
        c = Client(self.gw.port)
        self.addCleanup(c.close)
        self.assertNotIn("STLS", c.capa())
        self.assertEqual(c.cmd("STLS"), b"-ERR STLS is not available\r\n")
        c.login()  # loopback: plaintext allowed under tls-only


def run_gateway_once(*flags, timeout=10):
    """Runs pop3gw with flags until it exits; returns (status, output)."""
    exe = os.path.join(os.environ.get("PGW_IT_BUILD", "build"), "pop3gw")
    env = {k: v for k, v in os.environ.items() if not k.startswith("POP3GW_")}
    res = subprocess.run([exe, "--admin_listen=", "--backend_url=http://%s:1" % HOST] + list(flags),
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, env=env, timeout=timeout)
    return res.returncode, res.stdout.decode("utf-8", "replace")


class TlsConfigTests(unittest.TestCase):
    """Start-up checks for TLS and the plaintext policy (with
    --check-config, so nothing binds a port, except where noted)."""

    def test_refusals(self):
        cases = {
            "listen_tls without a certificate":
                (["--listen=", "--listen_tls=127.0.0.1:1"], "listen_tls needs a certificate"),
            "tls_cert without tls_key":
                (["--listen=127.0.0.1:1", "--tls_cert=/x.pem"], "tls_key is not"),
            "TLS 1.1 as the floor":
                (["--listen=127.0.0.1:1", "--tls_min_version=1.1"], "1.2 or 1.3"),
            "tls-only, no certificate, a non-loopback listener":
                (["--listen=0.0.0.0:1"], "tls-only"),
            "PROXY without trusted networks":
                (["--listen=127.0.0.1:1", "--proxy_protocol=v2"], "proxy_trusted"),
        }
        for name, (flags, words) in cases.items():
            with self.subTest(name):
                rc, out = run_gateway_once("--check-config", *flags)
                self.assertEqual(rc, 2, out)
                self.assertIn(words, out)

    def test_loopback_without_certificate_is_fine(self):
        rc, out = run_gateway_once("--check-config", "--listen=127.0.0.1:1")
        self.assertEqual(rc, 0, out)

    def test_tls_only_behind_proxy_without_certificate_is_refused(self):
        """With proxy_protocol on, the clients are whoever the header says,
        not the loopback peer; under tls-only and without a certificate
        none of them could ever log in with a password (no STLS to offer).
        The start-up check that exists for exactly this case should see
        through the loopback listener."""
        rc, out = run_gateway_once("--check-config", "--listen=127.0.0.1:1",
                                   "--proxy_protocol=v2", "--proxy_trusted=127.0.0.1/32")
        self.assertEqual(rc, 2, "pop3gw accepted a configuration where remote clients can "
                                "never log in with a password:\n" + out)
        self.assertIn("tls-only", out)

    def test_missing_certificate_at_start_says_why(self):
        port = free_port()
        rc, out = run_gateway_once("--listen=127.0.0.1:%d" % port,
                                   "--tls_cert=/nonexistent/cert.pem",
                                   "--tls_key=/nonexistent/key.pem")
        self.assertEqual(rc, 1, out)
        self.assertIn("cannot load TLS certificate", out)
        self.assertIn("No such file or directory", out,
                      "the log line does not say why the file could not be loaded")


class TlsReloadDiagnosticsTests(TlsStackTestCase):
    """A failed reload "logs why": the reason names the actual problem."""

    def reload_error(self, cert_text=None, key_text=None, remove_cert=False):
        """Breaks the files as told, sends SIGHUP, restores the files, and
        returns the error lines the failed reload logged (without their
        timestamps)."""
        gw = self.gw
        good_cert, good_key = open(gw.cert).read(), open(gw.key).read()
        try:
            if cert_text is not None:
                with open(gw.cert, "w") as f:
                    f.write(cert_text)
            if key_text is not None:
                with open(gw.key, "w") as f:
                    f.write(key_text)
            if remove_cert:
                os.unlink(gw.cert)
            offset = len(gw.log())
            n = gw.log_count("TLS reload failed")
            os.kill(gw.pid, signal.SIGHUP)
            log = gw.wait_log("TLS reload failed", n + 1)
        finally:
            with open(gw.cert, "w") as f:
                f.write(good_cert)
            with open(gw.key, "w") as f:
                f.write(good_key)
        lines = [re.sub(r"^ts=\S+ ", "", l) for l in log[offset:].splitlines()
                 if "level=error" in l]
        self.assertTrue(lines, "no error line for the failed reload:\n" + log[offset:])
        return "\n".join(lines)

    def test_missing_file(self):
        lines = self.reload_error(remove_cert=True)
        self.assertIn("No such file or directory", lines,
                      "SIGHUP with a missing certificate file logged:\n%s" % lines)

    def test_mismatched_key_is_called_a_mismatch(self):
        """A valid key of another certificate is a mismatch, not a file
        that is not PEM."""
        _, other_key = make_cert(new_dir("tls"), name="other")
        lines = self.reload_error(key_text=open(other_key).read())
        self.assertRegex(lines, r"(?i)mismatch|does not match", lines)
        self.assertNotIn("not a PEM", lines,
                         "a well-formed key that belongs to another certificate is "
                         "reported as not PEM:\n%s" % lines)

    def test_bad_certificate_and_bad_key_are_told_apart(self):
        cert_lines = self.reload_error(cert_text="not a certificate\n")
        key_lines = self.reload_error(key_text="not a key\n")
        self.assertNotEqual(cert_lines, key_lines,
                            "a bad certificate and a bad key log the same:\n%s" % cert_lines)


def client_hello_bytes():
    """The bytes of a real TLS ClientHello (made with a memory BIO), for
    clients that start a handshake and then stall."""
    ctx = client_context(None)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


class TlsLoginTimeoutTests(TlsStackTestCase):
    """login_timeout also bounds a TLS handshake that never completes: the
    connection is closed (nothing can be sent on it), and a client that
    goes away meanwhile is noticed."""

    GATEWAY_ARGS = {"login_timeout": "1", "send_timeout": "1", "shutdown_grace": "1"}
    LIMIT = upper(4.0)  # seconds: login_timeout 1, a linger of at most send_timeout 1, slack

    def stalled(self):
        """Three stalled handshakes: implicit TLS with no byte sent,
        implicit TLS after a ClientHello, and STLS with no byte after +OK."""
        a = socket.create_connection((HOST, self.gw.tls_port), timeout=self.LIMIT)
        b = socket.create_connection((HOST, self.gw.tls_port), timeout=self.LIMIT)
        b.sendall(client_hello_bytes())
        c = Client(self.gw.port, timeout=self.LIMIT)
        self.assertTrue(c.cmd("STLS").startswith(b"+OK"))
        socks = {"implicit TLS, nothing sent": a, "implicit TLS, ClientHello sent": b,
                 "STLS, nothing sent": c.sock}
        for s in socks.values():
            self.addCleanup(s.close)
        return socks

    def test_stalled_handshakes_are_closed(self):
        socks = self.stalled()
        ports = {name: s.getsockname()[1] for name, s in socks.items()}
        t0 = time.monotonic()
        still_open = []
        for name, s in socks.items():
            s.settimeout(max(0.05, self.LIMIT - (time.monotonic() - t0)))
            try:
                while s.recv(4096):
                    pass  # a ServerHello or an alert may come first
            except ConnectionResetError:
                pass
            except (socket.timeout, BlockingIOError):
                still_open.append(name)
        # The clients give up and close: the gateway must notice.
        for s in socks.values():
            s.close()
        deadline = time.monotonic() + upper(2)
        while True:
            log = self.gw.log()
            ids = {name: re.search(r"session=(\w+) msg=connect client=127\.0\.0\.1 port=%d\b"
                                   % port, log) for name, port in ports.items()}
            not_freed = [name for name, m in ids.items()
                         if not m or "session=%s msg=disconnect" % m.group(1) not in log]
            if not not_freed or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if still_open or not_freed:
            self.fail("TLS connections whose handshake stalled: still open %.0fs after "
                      "connecting (login_timeout 1 s): %s; not freed %.0fs after the client "
                      "closed them: %s" % (self.LIMIT, still_open, upper(2), not_freed))
