"""PROXY protocol v1 and v2 (proxy_protocol, proxy_trusted): the address in
the header becomes the session's client, in every webhook body and every log
line; a header from an untrusted address, a malformed header or a missing
one closes the connection. Then a real HAProxy in TCP mode with
send-proxy-v2 in front of two gateways (skipped when haproxy is not
installed: `apt-get install haproxy`).

No traffic leaves loopback: 203.0.113.7, 2001:db8::7 and 10.0.0.0/8 only
appear inside headers and configuration.
"""

import os
import poplib
import re
import shutil
import socket
import ssl
import struct
import time
import unittest

from harness import HOST, Backend, MailRoot, Proc, StartError, free_port, new_dir, upper
from test_tls import (REMOTE_IP, Client, TlsGateway, TlsStackTestCase, claimed_port,
                      client_context, make_cert, proxy_v1, proxy_v2, refused_before_greeting)

HAPROXY = shutil.which("haproxy") or (os.access("/usr/sbin/haproxy", os.X_OK)
                                      and "/usr/sbin/haproxy") or None


class ProxyCase(TlsStackTestCase):
    """Helpers for gateways that require the header."""

    def assert_closed_without_greeting(self, data, header=b"", port=None, why=""):
        t0 = time.monotonic()
        out = refused_before_greeting(port or self.gw.port, data, header=header)
        self.assertNotIn(b"+OK", out, why)
        self.assertNotIn(b"-ERR", out, why)
        return time.monotonic() - t0

    def session_log(self, session):
        return [l for l in self.gw.log().splitlines() if "session=%s" % session in l]


# ------------------------------------------------------------ the header


class ProxyHeaderTests(ProxyCase):
    GATEWAY_ARGS = {"proxy_protocol": "any", "proxy_trusted": "127.0.0.1/32",
                    "plaintext_auth": "allow", "events": "connect,disconnect",
                    "max_bad_commands": "1000"}

    def full_session(self, header, ip, port, tls=False):
        """Logs in as alice, runs STAT, RETR, TOP, UIDL and QUIT, and checks
        every webhook body and every log line of the session."""
        start = len(self.backend.requests())
        c = self.connect(tls=tls, header=header)
        c.login()
        self.assertEqual(c.cmd("STAT"), self.stat_line())
        st, body = c.multi("RETR 1")
        self.assertEqual(body, self.msgs()[0].expected)
        c.multi("TOP 2 0")
        c.multi("UIDL")
        self.assertTrue(c.cmd("QUIT").startswith(b"+OK"))
        evs = self.events_for(ip, port, until="quit", start=start)
        self.assertEqual([e["event"] for e in evs],
                         ["connect", "authenticate", "list", "retrieve", "retrieve", "quit"])
        for e in evs:
            self.assertEqual(e["client"], {"ip": ip, "port": port, "tls": tls}, e)
        # Nothing of this session reached the backend with another address.
        session = evs[0]["session"]
        others = [r for r in self.backend.requests()[start:] if r.get("session") == session]
        self.assertEqual(len(others), len(evs))
        lines = self.session_log(session)
        with_client = [l for l in lines if "client=" in l]
        self.assertTrue(with_client, lines)
        for l in with_client:
            self.assertIn("client=%s" % ip, l)
        self.assertTrue(any("msg=login" in l for l in with_client), lines)
        return c

    def test_v1_tcp4_everywhere(self):
        port = claimed_port()
        self.full_session(proxy_v1(REMOTE_IP, port), REMOTE_IP, port)

    def test_v1_tcp6(self):
        port = claimed_port()
        self.full_session(proxy_v1("2001:db8::7", port), "2001:db8::7", port)

    def test_v2_tcp4(self):
        port = claimed_port()
        self.full_session(proxy_v2(REMOTE_IP, port), REMOTE_IP, port)

    def test_v2_tcp6(self):
        port = claimed_port()
        self.full_session(proxy_v2("2001:db8::7", port), "2001:db8::7", port)

    def test_v2_tlvs_are_skipped(self):
        # ALPN, authority, a NOOP and a custom TLV, as load balancers add them.
        tlvs = b"".join(bytes([t]) + struct.pack("!H", len(v)) + v for t, v in (
            (0x01, b"pop3"), (0x02, b"mail.example.com"), (0x04, b"\0" * 40),
            (0xE0, b"vpce-0123456789abcdef0")))
        port = claimed_port()
        self.full_session(proxy_v2(REMOTE_IP, port, tlvs=tlvs), REMOTE_IP, port)

    def test_v2_local_keeps_the_socket_address(self):
        start = len(self.backend.requests())
        c = self.connect(header=proxy_v2(command=0x20))
        c.login()
        self.assertTrue(c.cmd("QUIT").startswith(b"+OK"))
        evs = self.events_for(HOST, c.local_port, until="quit", start=start)
        self.assertEqual(evs[0]["client"], {"ip": HOST, "port": c.local_port, "tls": False})

    def test_v1_unknown_keeps_the_socket_address(self):
        start = len(self.backend.requests())
        c = self.connect(header=b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n")
        c.login()
        self.assertTrue(c.cmd("QUIT").startswith(b"+OK"))
        evs = self.events_for(HOST, c.local_port, until="quit", start=start)
        self.assertEqual(len(evs), 4)

    def test_header_split_across_writes(self):
        for make in (proxy_v1, proxy_v2):
            with self.subTest(version=make.__name__):
                port = claimed_port()
                header = make(REMOTE_IP, port)
                start = len(self.backend.requests())
                s = socket.create_connection((HOST, self.gw.port), timeout=10)
                self.addCleanup(s.close)
                for piece in (header[:3], header[3:11], header[11:17], header[17:]):
                    s.sendall(piece)
                    time.sleep(0.05)
                f = s.makefile("rb")
                self.assertTrue(f.readline().startswith(b"+OK"))
                s.sendall(b"USER alice\r\nPASS secret1\r\nQUIT\r\n")
                self.assertTrue(f.readline().startswith(b"+OK"))
                self.assertTrue(f.readline().startswith(b"+OK"))
                self.assertTrue(f.readline().startswith(b"+OK"))
                evs = self.events_for(REMOTE_IP, port, until="quit", start=start)
                self.assertTrue(evs)

    def test_header_and_commands_in_one_write(self):
        port = claimed_port()
        start = len(self.backend.requests())
        c = Client(self.gw.port, header=proxy_v1(REMOTE_IP, port) + b"CAPA\r\nUSER alice\r\n"
                   b"PASS secret1\r\nSTAT\r\nQUIT\r\n")
        self.addCleanup(c.close)
        self.assertTrue(c.greeting.startswith(b"+OK"))
        self.assertTrue(c.status().startswith(b"+OK"))
        c.body()
        self.assertTrue(c.status().startswith(b"+OK"))
        self.assertTrue(c.status().startswith(b"+OK"))
        self.assertEqual(c.status(), self.stat_line())
        self.assertTrue(c.status().startswith(b"+OK"))
        self.events_for(REMOTE_IP, port, until="quit", start=start)

    def test_header_then_implicit_tls(self):
        """The header is read from the raw socket, then the TLS handshake."""
        for make in (proxy_v1, proxy_v2):
            with self.subTest(version=make.__name__):
                port = claimed_port()
                self.full_session(make(REMOTE_IP, port, dport=995), REMOTE_IP, port, tls=True)

    def test_header_then_stls(self):
        start = len(self.backend.requests())
        port = claimed_port()
        c = self.connect(header=proxy_v2(REMOTE_IP, port))
        c.starttls(self.ctx())
        c.login()
        self.assertTrue(c.cmd("QUIT").startswith(b"+OK"))
        evs = self.events_for(REMOTE_IP, port, until="quit", start=start)
        self.assertEqual(evs[0]["client"], {"ip": REMOTE_IP, "port": port, "tls": False})  # connect
        for e in evs[1:]:
            self.assertEqual(e["client"], {"ip": REMOTE_IP, "port": port, "tls": True})

    def test_disconnect_event_carries_the_client(self):
        start = len(self.backend.requests())
        port = claimed_port()
        c = self.connect(header=proxy_v1(REMOTE_IP, port))
        c.login()
        c.close()  # no QUIT
        evs = self.events_for(REMOTE_IP, port, until="disconnect", start=start)
        d = [e for e in evs if e["event"] == "disconnect"][0]
        self.assertEqual(d["client"], {"ip": REMOTE_IP, "port": port, "tls": False})
        self.assertEqual(d["reason"], "client_closed")

    def test_malformed_headers_close(self):
        sig = b"\r\n\r\n\x00\r\nQUIT\n"
        bad = {
            "v1 bad address": b"PROXY TCP4 203.0.113.256 192.0.2.1 40000 110\r\n",
            "v1 port too big": b"PROXY TCP4 203.0.113.7 192.0.2.1 70000 110\r\n",
            "v1 leading zero port": b"PROXY TCP4 203.0.113.7 192.0.2.1 0400 110\r\n",
            "v1 missing port": b"PROXY TCP4 203.0.113.7 192.0.2.1 40000\r\n",
            "v1 v6 address as TCP4": b"PROXY TCP4 2001:db8::7 192.0.2.1 40000 110\r\n",
            "v1 unknown family": b"PROXY UDP4 203.0.113.7 192.0.2.1 40000 110\r\n",
            "v1 lower case": b"proxy TCP4 203.0.113.7 192.0.2.1 40000 110\r\n",
            "v1 double space": b"PROXY TCP4  203.0.113.7 192.0.2.1 40000 110\r\n",
            "v1 LF only": b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 110\n",
            "v1 too long": b"PROXY UNKNOWN " + b"x" * 120 + b"\r\n",
            "v2 version 1": sig + b"\x11\x11\x00\x0c" + b"\0" * 12,
            "v2 unknown command": sig + b"\x2f\x11\x00\x0c" + b"\0" * 12,
            "v2 length too short for TCP4": sig + b"\x21\x11\x00\x04" + b"\0" * 4,
            "v2 length too short for TCP6": sig + b"\x21\x21\x00\x0c" + b"\0" * 12,
            "v2 broken signature": b"\r\n\r\n\x00\r\nQUIX\n" + b"\x21\x11\x00\x0c" + b"\0" * 12,
        }
        n = self.gw.log_count("bad PROXY header")
        for name, header in bad.items():
            with self.subTest(name):
                self.assert_closed_without_greeting(b"USER alice\r\n", header=header, why=name)
        self.gw.wait_log("bad PROXY header", n + len(bad))

    def test_missing_header_closes(self):
        for name, data in (("a POP3 command", b"CAPA\r\n"),
                           ("USER", b"USER alice\r\nPASS secret1\r\n"),
                           ("HTTP", b"GET / HTTP/1.0\r\n\r\n"),
                           ("TLS ClientHello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")):
            with self.subTest(name):
                self.assert_closed_without_greeting(data, why=name)
        # A TLS client on the implicit-TLS port without a header fails too.
        with self.assertRaises((ssl.SSLError, ConnectionError, OSError)):
            Client(self.gw.tls_port, context=self.ctx(), timeout=5).close()


class ProxyV1OnlyTests(ProxyCase):
    GATEWAY_ARGS = {"proxy_protocol": "v1", "proxy_trusted": "127.0.0.1/32",
                    "plaintext_auth": "allow"}

    def test_v2_header_refused_when_only_v1_is_on(self):
        self.assert_closed_without_greeting(b"CAPA\r\n", header=proxy_v2())
        c = self.connect(header=proxy_v1())
        c.login()


class UntrustedProxyTests(ProxyCase):
    """Only 10.0.0.0/8 may send the header; the tests connect from
    127.0.0.1, so even a valid header closes the connection."""

    GATEWAY_ARGS = {"proxy_protocol": "any", "proxy_trusted": "10.0.0.0/8, 192.0.2.0/24"}

    @classmethod
    def make_gateway(cls, backend, cert, key):
        return TlsGateway(backend, cert, key, args=cls.GATEWAY_ARGS, ready_log="pop3gw started")

    def test_valid_header_from_untrusted_address_closes(self):
        n = self.gw.log_count("untrusted")
        for header in (proxy_v1(), proxy_v2(), proxy_v2(command=0x20), b"PROXY UNKNOWN\r\n"):
            with self.subTest(header=header[:14]):
                self.assert_closed_without_greeting(b"CAPA\r\n", header=header)
        self.assert_closed_without_greeting(b"", header=proxy_v1(), port=self.gw.tls_port)
        log = self.gw.wait_log("untrusted", n + 5)
        self.assertIn("peer=127.0.0.1", log)
        self.assertEqual(self.backend.requests(), [])


class ProxyDeadlineTests(ProxyCase):
    """A trusted peer that sends no header, or only part of one, is closed
    after a short deadline (login_timeout, at most 5 s, plus 1 s)."""

    GATEWAY_ARGS = {"proxy_protocol": "any", "proxy_trusted": "127.0.0.1/32",
                    "login_timeout": "1"}

    def test_silent_and_partial_headers_time_out(self):
        socks = []
        for data in (b"", b"PROXY TCP4 203.0.", b"\r\n\r\n\x00\r\nQU"):
            s = socket.create_connection((HOST, self.gw.port), timeout=8)
            self.addCleanup(s.close)
            if data:
                s.sendall(data)
            socks.append(s)
        t0 = time.monotonic()
        for s in socks:
            try:
                got = s.recv(100)
            except ConnectionResetError:
                got = b""  # closed with the peeked bytes unread: a reset
            self.assertEqual(got, b"")  # closed, and no greeting
        self.assertLess(time.monotonic() - t0, upper(5))
        self.gw.wait_log("no PROXY header in time", 3)


# -------------------------------------------------------------- HAProxy


class HAProxy(Proc):
    """HAProxy in the foreground (-db) with a generated configuration: a
    plain and an implicit-TLS frontend, each balancing over the gateways
    with send-proxy-v2, health-checked on the gateways' /readyz."""

    READY_WHAT = "passing a POP3 greeting through"

    def __init__(self, gateways):
        self.gateways = gateways
        self.cfg_path = os.path.join(new_dir("haproxy"), "haproxy.cfg")
        self.tls_port = None
        super().__init__("haproxy")

    def config(self):
        def backend(name, attr):
            lines = ["backend %s" % name,
                     "    balance roundrobin",
                     "    option httpchk",
                     "    http-check send meth GET uri /readyz",
                     "    http-check expect status 200",
                     "    default-server send-proxy-v2 check inter 1s fall 2 rise 1"]
            for i, g in enumerate(self.gateways):
                lines.append("    server gw%d %s:%d check port %d"
                             % (i + 1, HOST, getattr(g, attr), g.admin_port))
            return "\n".join(lines) + "\n"
        return ("global\n"
                "    log stdout format raw local0 info\n"
                "    maxconn 200\n"
                "    nbthread 1\n"
                "\n"
                "defaults\n"
                "    mode tcp\n"
                "    log global\n"
                "    option tcplog\n"
                "    timeout connect 5s\n"
                "    timeout client 11m\n"
                "    timeout server 11m\n"
                "    timeout check 3s\n"
                "\n"
                "frontend pop3\n"
                "    bind %s:%d\n"
                "    default_backend pop3gw_pop3\n"
                "\n"
                "frontend pop3s\n"
                "    bind %s:%d\n"
                "    default_backend pop3gw_pop3s\n"
                "\n" % (HOST, self.port, HOST, self.tls_port)
                + backend("pop3gw_pop3", "port") + "\n" + backend("pop3gw_pop3s", "tls_port"))

    def argv(self):
        self.tls_port = free_port()
        with open(self.cfg_path, "w") as f:
            f.write(self.config())
        return [HAPROXY, "-db", "-f", self.cfg_path]

    def ready(self):
        with socket.create_connection((HOST, self.port), timeout=2) as s:
            line = s.makefile("rb").readline(1024)
        return line.startswith(b"+OK")


class AdminTlsGateway(TlsGateway):
    """A TlsGateway with its admin endpoint on a free port (for /readyz)."""

    def __init__(self, *a, **kw):
        self.admin_port = free_port()
        super().__init__(*a, **kw)
        self.opts["admin_listen"] = "%s:%d" % (HOST, self.admin_port)


@unittest.skipUnless(HAPROXY, "haproxy is not installed (apt-get install haproxy)")
class HAProxyTests(ProxyCase):
    """HAProxy (TCP mode, send-proxy-v2) in front of two gateways that take
    v2 headers from 127.0.0.1 only. Client and HAProxy both sit on
    loopback, so the client address is 127.0.0.1 as well: what proves that
    the header was used is the port, which must be the client socket's own
    port and not the one HAProxy connected from."""

    GATEWAY_ARGS = {"proxy_protocol": "v2", "proxy_trusted": "127.0.0.1/32"}

    @classmethod
    def setUpClass(cls):
        unittest.TestCase.setUpClass()
        cls.root = MailRoot()
        cls.addClassCleanup(cls.root.remove)
        cert, key = make_cert(new_dir("tls"))
        cls.backend = Backend(cls.root)
        cls.addClassCleanup(cls.backend.stop_clean)
        cls.backend.start()
        cls.gws = []
        for i in (1, 2):
            g = AdminTlsGateway(cls.backend, cert, key, args=cls.GATEWAY_ARGS, name="gateway%d" % i)
            cls.addClassCleanup(g.stop_clean)
            g.start()
            cls.gws.append(g)
        cls.gw = cls.gws[0]
        cls.haproxy = HAProxy(cls.gws)
        cls.addClassCleanup(cls.haproxy.stop)
        try:
            cls.haproxy.start()
        except StartError as e:
            text = str(e)
            if re.search(r"parsing|config", text, re.I) and "ALERT" in text:
                raise  # our configuration is wrong: a real failure
            raise unittest.SkipTest("haproxy could not be started: %s" % text[-600:])

    def sessions_by_port(self, start, ports, until="quit"):
        """{client port: [events]} for the given client ports on 127.0.0.1."""
        def grouped(rs):
            out = {}
            for r in rs:
                c = r.get("client", {})
                if c.get("ip") == HOST and c.get("port") in ports:
                    out.setdefault(c["port"], []).append(r)
            return out
        self.backend.wait_requests(
            lambda rs: all(any(e["event"] == until for e in evs)
                           for evs in grouped(rs).values()) and len(grouped(rs)) == len(ports),
            start=start)
        return grouped(self.backend.requests()[start:])

    def served_by(self, port):
        """Names of the gateways whose log shows a connection from port."""
        pat = re.compile(r"msg=connect client=127\.0\.0\.1 port=%d\b" % port)
        return [g.name for g in self.gws if pat.search(g.log())]

    def test_backend_sees_the_client_port_through_haproxy(self):
        start = len(self.backend.requests())
        ports = []
        for i in range(6):
            p = poplib.POP3(HOST, self.haproxy.port, timeout=10)
            self.addCleanup(p.close)
            ports.append(p.sock.getsockname()[1])
            p.user("alice")
            p.pass_("secret1")
            self.assertEqual(p.stat()[0], len(self.msgs()))
            resp, lines, octets = p.retr(1)
            self.assertEqual(b"\r\n".join(lines) + b"\r\n", self.msgs()[0].expected)
            p.quit()
        by_port = self.sessions_by_port(start, set(ports))
        self.assertEqual(sorted(by_port), sorted(ports))
        for port, evs in by_port.items():
            self.assertEqual([e["event"] for e in evs], ["authenticate", "list", "retrieve", "quit"])
            for e in evs:
                self.assertEqual(e["client"], {"ip": HOST, "port": port, "tls": False})
        # Both gateways took sessions, and each logged the real client port.
        served = {p: self.served_by(p) for p in ports}
        for p, names in served.items():
            self.assertEqual(len(names), 1, "port %d in the logs of %r" % (p, names))
        self.assertEqual({n[0] for n in served.values()}, {"gateway1", "gateway2"}, served)
        # No event carries a port that is not a client's (HAProxy's own).
        stray = [r for r in self.backend.requests()[start:]
                 if r.get("client", {}).get("port") not in ports]
        self.assertEqual(stray, [])

    def test_implicit_tls_through_haproxy(self):
        start = len(self.backend.requests())
        ports = []
        for i in range(2):
            p = poplib.POP3_SSL(HOST, self.haproxy.tls_port, timeout=10,
                                context=client_context(self.gw.cert))
            self.addCleanup(p.close)
            ports.append(p.sock.getsockname()[1])
            p.user("bob")
            p.pass_("pass word 2")
            p.stat()
            p.quit()
        by_port = self.sessions_by_port(start, set(ports))
        self.assertEqual(len(by_port), 2)
        for port, evs in by_port.items():
            for e in evs:
                self.assertEqual(e["client"], {"ip": HOST, "port": port, "tls": True})

    def test_stls_through_haproxy(self):
        start = len(self.backend.requests())
        p = poplib.POP3(HOST, self.haproxy.port, timeout=10)
        self.addCleanup(p.close)
        port = p.sock.getsockname()[1]
        p.stls(client_context(self.gw.cert))
        p.user("alice")
        p.pass_("secret1")
        p.quit()
        evs = self.sessions_by_port(start, {port})[port]
        self.assertTrue(all(e["client"] == {"ip": HOST, "port": port, "tls": True} for e in evs))

    def test_direct_connection_without_header_is_closed(self):
        for g in self.gws:
            for port in (g.port, g.tls_port):
                self.assert_closed_without_greeting(b"CAPA\r\n", port=port)

    def test_v1_header_refused_by_a_v2_gateway(self):
        self.assert_closed_without_greeting(b"CAPA\r\n", header=proxy_v1())

    def test_direct_header_still_works(self):
        """The gateways trust 127.0.0.1 as a whole: a hand-made v2 header
        from it is as good as HAProxy's."""
        start = len(self.backend.requests())
        port = claimed_port()
        c = self.connect(header=proxy_v2(REMOTE_IP, port))
        c.starttls(self.ctx())
        c.login()
        c.cmd("QUIT")
        self.events_for(REMOTE_IP, port, until="quit", start=start)
