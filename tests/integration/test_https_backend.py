"""A backend over HTTPS: the gateway verifies the backend's certificate
against a private CA (`backend_ca_file`) and, when the backend asks for
one, presents a client certificate (`backend_cert`, `backend_key`).

The test makes its own certificates with the openssl command line: a CA, a
server certificate for 127.0.0.1 (subjectAltName IP:127.0.0.1) and a client
certificate signed by it, and a second CA with a server certificate of its
own (a backend the first CA did not sign). The backends are real processes:
the Python example backend (backends/python/backend.py) in its HTTPS mode,
serving a throw-away mail root.
"""

import os
import random
import re
import shutil
import subprocess
import sys
import unittest

from harness import HOST, Gateway, MailRoot, Proc, Raw, new_dir

OPENSSL = shutil.which("openssl")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHON_BACKEND = os.path.join(REPO, "backends", "python", "backend.py")

SYS_TEMP_AUTH = b"-ERR [SYS/TEMP] authentication is unavailable now, try again later\r\n"
# libcurl's text for CURLE_PEER_FAILED_VERIFICATION, which the gateway logs
# libcurl's code, then its detail naming the TLS error
UNTRUSTED = ("SSL peer certificate or SSH remote key was not OK "
             "(SSL certificate problem: unable to get local issuer certificate)")


# ------------------------------------------------------------ certificates


def openssl(*args):
    res = subprocess.run([OPENSSL, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, timeout=60)
    if res.returncode != 0:
        raise AssertionError("openssl %s failed: %s" % (args[0], res.stdout.decode(errors="replace")))


EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


class PrivateCA:
    """A CA made for the test: CA_DIR/NAME-ca.pem and its key."""

    def __init__(self, directory, name):
        self.dir = directory
        self.cert = os.path.join(directory, name + "-ca.pem")
        self.key = os.path.join(directory, name + "-ca-key.pem")
        openssl("req", "-x509", *EC_KEY, "-subj", "/CN=pop3gw test CA " + name, "-days", "2",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout", self.key, "-out", self.cert)

    def issue(self, name, cn, extensions):
        """A certificate and key signed by this CA; returns (cert, key)."""
        key = os.path.join(self.dir, name + "-key.pem")
        csr = os.path.join(self.dir, name + ".csr")
        cert = os.path.join(self.dir, name + ".pem")
        ext = os.path.join(self.dir, name + ".ext")
        with open(ext, "w") as f:
            f.write("basicConstraints = CA:FALSE\n"
                    "keyUsage = critical, digitalSignature\n" + extensions)
        openssl("req", "-new", *EC_KEY, "-subj", "/CN=" + cn, "-keyout", key, "-out", csr)
        openssl("x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
                "-set_serial", str(random.getrandbits(63)), "-days", "2",
                "-extfile", ext, "-out", cert)
        return cert, key


# ------------------------------------------------------------ the backend


class PythonHttpsBackend(Proc):
    """backends/python/backend.py serving a MailRoot over HTTPS; with
    client_ca it requires a client certificate signed by that CA."""

    READY_WHAT = "listening"

    def __init__(self, root, cert, key, client_ca=None, name="https-backend"):
        self.root = root
        self.cert, self.key, self.client_ca = cert, key, client_ca
        env = {k: v for k, v in os.environ.items() if not k.startswith("BACKEND_")}
        super().__init__(name, env=env)

    def argv(self):
        argv = [sys.executable, PYTHON_BACKEND, "--listen=%s:%d" % (HOST, self.port),
                "--root=" + self.root.path, "--tls-cert=" + self.cert, "--tls-key=" + self.key,
                "--quiet"]
        if self.client_ca:
            argv.append("--tls-client-ca=" + self.client_ca)
        return argv

    def ready(self):
        return ("listening on %s:%d (https)" % (HOST, self.port)) in self.log()

    @property
    def url(self):
        return "https://%s:%d" % (HOST, self.port)


# ------------------------------------------------------------ the tests


class HttpsBackendTests(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if not OPENSSL:
            raise unittest.SkipTest("the openssl command is needed to make test certificates")
        pki = new_dir("pki")
        cls.ca = PrivateCA(pki, "private")
        server = cls.ca.issue("server", "127.0.0.1",
                              "extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1\n")
        cls.client_cert, cls.client_key = cls.ca.issue("client", "pop3gw",
                                                       "extendedKeyUsage = clientAuth\n")
        other = PrivateCA(pki, "other")
        foreign = other.issue("foreign-server", "127.0.0.1",
                              "extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1\n")
        cls.root = MailRoot()
        cls.addClassCleanup(cls.root.remove)
        cls.https = cls.backend(*server, name="https-backend")
        cls.mtls = cls.backend(*server, client_ca=cls.ca.cert, name="mtls-backend")
        cls.foreign = cls.backend(*foreign, name="foreign-ca-backend")

    @classmethod
    def backend(cls, cert, key, client_ca=None, name=None):
        be = PythonHttpsBackend(cls.root, cert, key, client_ca, name=name)
        cls.addClassCleanup(be.stop_clean)
        return be.start()

    def gateway(self, backend, **args):
        gw = Gateway(backend, args=args, name="gateway-" + backend.name)
        self.addCleanup(gw.stop_clean)
        return gw.start()

    def raw(self, gw):
        r = Raw(gw.port)
        self.addCleanup(r.close)
        return r

    def session_id(self, gw, r):
        port = r.sock.getsockname()[1]
        m = re.search(r"session=(\w+) msg=connect client=127\.0\.0\.1 port=%d\b" % port, gw.log())
        self.assertIsNotNone(m, "no connect line for client port %d" % port)
        return m.group(1)

    def read_mail(self, gw):
        """Login, LIST and RETR of every message, byte for byte."""
        msgs = self.root.messages["alice"]
        r = self.raw(gw)
        r.login()
        st, body = r.multi("LIST")
        self.assertTrue(st.startswith(b"+OK"), st)
        self.assertEqual(body, b"".join(b"%d %d\r\n" % (i + 1, m.size)
                                        for i, m in enumerate(msgs)))
        for i, m in enumerate(msgs):
            st, body = r.multi("RETR %d" % (i + 1))
            self.assertEqual(st, b"+OK %d octets\r\n" % m.size)
            self.assertEqual(body, m.expected, "message %d" % (i + 1))
        self.assertTrue(r.cmd("QUIT").startswith(b"+OK"))
        r.expect_eof()

    def refused_login(self, gw):
        """A login that fails with [SYS/TEMP]; returns the session id."""
        r = self.raw(gw)
        sid = self.session_id(gw, r)
        self.assertTrue(r.cmd("USER alice").startswith(b"+OK"))
        self.assertEqual(r.cmd("PASS " + "secret1"), SYS_TEMP_AUTH)
        self.assertTrue(r.cmd("QUIT").startswith(b"+OK"))
        return sid

    def webhook_failure(self, gw, sid):
        """The error text of the session's failed authenticate call, from
        the gateway's `webhook failed` line."""
        m = re.search(r'level=warn msg="webhook failed" event=authenticate id=msg_%s_\S+ '
                      r'http_status=0 error="([^"]*)"' % sid, gw.log())
        self.assertIsNotNone(m, "no webhook failed line for session %s:\n%s" % (sid, gw.log()))
        self.assertRegex(gw.log(), r'session=%s msg="login not checked: backend error" .*error="%s"'
                         % (sid, re.escape(m.group(1))))
        return m.group(1)

    def test_backend_ca_file(self):
        gw = self.gateway(self.https, backend_ca_file=self.ca.cert)
        self.read_mail(gw)
        self.read_mail(gw)  # again, on the kept-alive connection

    def test_client_certificate(self):
        gw = self.gateway(self.mtls, backend_ca_file=self.ca.cert,
                          backend_cert=self.client_cert, backend_key=self.client_key)
        self.read_mail(gw)

    def test_client_certificate_missing(self):
        """The backend wants a client certificate and gets none: the TLS
        handshake fails on the backend's side, and the login gets
        [SYS/TEMP], not [AUTH]."""
        gw = self.gateway(self.mtls, backend_ca_file=self.ca.cert)
        sid = self.refused_login(gw)
        error = self.webhook_failure(gw, sid)
        # With TLS 1.3 the client finishes its side of the handshake before
        # the backend refuses it: libcurl then fails sending the request or
        # reading the reply, depending on when the alert arrives (with TLS
        # 1.2, during the handshake). The backend's log names the reason.
        self.assertRegex(error, r"^(Failed sending data to the peer|Failure when receiving data "
                                r"from the peer|SSL connect error)( \(.*\))?$")
        self.assertRegex(self.mtls.log(), r"TLS handshake with 127\.0\.0\.1 failed: .*certificate")

    def test_backend_certificate_from_another_ca(self):
        gw = self.gateway(self.foreign, backend_ca_file=self.ca.cert)
        sid = self.refused_login(gw)
        self.assertEqual(self.webhook_failure(gw, sid), UNTRUSTED)

    def test_private_ca_not_trusted_by_default(self):
        """Without backend_ca_file the system's CAs apply, and they did not
        sign the backend's certificate."""
        gw = self.gateway(self.https)
        sid = self.refused_login(gw)
        self.assertEqual(self.webhook_failure(gw, sid), UNTRUSTED)
