"""Big replies the contract promises to carry: a 50 MB retrieve in the JSON
form (content and content_base64), decoded as it streams within a small
memory budget, and a listing of 100,000 messages with 70-octet uids.

These are not faults but limits; like the fault cases they check what the
client got, and a normal session after. The listing test prints the
gateway's RSS and the time of the login, LIST and UIDL.
"""

import json
import threading
import time

import fakebackend as fb
import harness
from faultlib import FaultCase, crlf, sanitized

MB = 1024 * 1024


class JsonRetrieveTests(FaultCase):
    """A 50 MB message as {"content": ...} and as {"content_base64": ...}:
    byte-exact, and the gateway's RSS grows by less than 4 MB."""

    TOTAL = 50 * MB
    GATEWAY_ARGS = {"backend_timeout": "5"}
    # Under AddressSanitizer freed memory sits in a quarantine (256 MB by
    # default) and counts as resident: keep it small, as test_streaming does.
    EXTRA_ASAN = ["quarantine_size_mb=4", "thread_local_quarantine_size_kb=64"]

    @staticmethod
    def rss_budget_kb():
        """4 MB (issue 12); 8 MB for the ASan build, whose quarantine holds
        up to 4 MB of freed memory here. Measured growth with the normal
        build, a client that reads as fast as it can: 1.0-1.3 MB (content),
        1.1-1.9 MB (content_base64), about the 768 KB output mark plus
        curl's 512 KB receive buffer."""
        return 8 * 1024 if sanitized() else 4 * 1024

    def setUp(self):
        # A private spool_dir: a client slower than the backend spools.
        self.GATEWAY_ARGS = dict(self.GATEWAY_ARGS, spool_dir=harness.new_dir("spool"))
        super().setUp()

    def sample_rss(self, stop, peak):
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], self.gateway_rss_kb())
            except (OSError, KeyError):
                return
            stop.wait(0.01)

    def retrieve_big_json(self, b64):
        # Warm up with a normal session (raw retrieves only), then the
        # baseline: the growth counts what the JSON form costs.
        self.normal_session()
        r = self.login_and_stat()
        rss0 = self.gateway_rss_kb()

        self.be.plan("retrieve", fb.json_content_stream(self.TOTAL, base64=b64))
        stop = threading.Event()
        peak = [rss0]
        sampler = threading.Thread(target=self.sample_rss, args=(stop, peak), daemon=True)
        sampler.start()
        t0 = time.monotonic()
        try:
            st = r.cmd("RETR 1")
            self.assertTrue(st.startswith(b"+OK"), st)
            got = harness.read_body_digest(r)
        finally:
            stop.set()
            sampler.join()
        elapsed = time.monotonic() - t0
        hwm = self.gw.status_kb("VmHWM")
        want = fb.json_message_digest(self.TOTAL)
        self.assertEqual(got[0], want[0], "received length differs")
        self.assertEqual(got[1], want[1], "received bytes differ")
        grow = max(peak[0], hwm) - rss0
        print("\n  %s: %d octets in %.1fs; RSS %d kB before, grew by %d kB (sampled peak %d kB, "
              "VmHWM %d kB)" % ("content_base64" if b64 else "content", want[0], elapsed, rss0,
                               grow, peak[0], hwm), flush=True)
        self.assertLess(grow, self.rss_budget_kb(),
                        "gateway RSS grew by %d kB for a 50 MB JSON retrieve (budget %d kB)"
                        % (grow, self.rss_budget_kb()))
        # The session goes on.
        self.assertTrue(r.cmd("NOOP").startswith(b"+OK"))
        self.assertTrue(r.cmd("QUIT").startswith(b"+OK"))
        r.close()
        self.normal_session()

    def test_content_50mb(self):
        self.retrieve_big_json(b64=False)

    def test_content_base64_50mb(self):
        self.retrieve_big_json(b64=True)


def uid_of(i):
    """A 70-octet uid, unique per i."""
    u = "uid-%06d-" % i
    return u + "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[:70 - len(u)]


class HugeListingTests(FaultCase):
    """100,000 messages with 70-octet uids (max_messages' default) work:
    STAT, LIST and UIDL give every entry, single LIST/UIDL and RETR of the
    last message work. Prints RSS and times."""

    N = 100000
    GATEWAY_ARGS = {"backend_timeout": "10"}

    def setUp(self):
        msgs = [(uid_of(i), b"Subject: message %d\n\nbody %s\n" % (i, b"x" * (i % 97)))
                for i in range(self.N)]
        boxes = fb.default_mailboxes()
        boxes["alice"] = msgs
        self.BACKEND_KW = {"mailboxes": boxes}
        super().setUp()
        # The listing is made once, so that the login's time is the
        # gateway's, not the fake backend's.
        self.sizes = [len(crlf(d)) for _, d in msgs]
        entries = [{"size": s, "uid": u} for s, (u, _) in zip(self.sizes, msgs)]
        self.body = json.dumps({"messages": entries}, separators=(",", ":")).encode()
        alice_list = fb.status(200, self.body)

        def listing(h, req):
            if (req.body or {}).get("user") == "alice":
                alice_list(h, req)
            else:
                h.backend.answer(h, req)
        self.be.plan("list", listing, times=None)

    def test_100000_messages_with_uids(self):
        self.normal_session(user="bob")
        rss0 = self.gateway_rss_kb()
        total = sum(self.sizes)
        r = self.raw(timeout=60)
        t0 = time.monotonic()
        r.login("alice", "secret1")
        t_login = time.monotonic() - t0
        rss_login = self.gateway_rss_kb()
        self.assertEqual(r.cmd("STAT"), b"+OK %d %d\r\n" % (self.N, total))
        t0 = time.monotonic()
        st, body = r.multi("LIST")
        t_list = time.monotonic() - t0
        self.assertTrue(st.startswith(b"+OK"), st)
        lines = body.split(b"\r\n")[:-1]
        self.assertEqual(len(lines), self.N)
        for n in (1, 2, 50000, 99999, self.N):
            self.assertEqual(lines[n - 1], b"%d %d" % (n, self.sizes[n - 1]))
        t0 = time.monotonic()
        st, body = r.multi("UIDL")
        t_uidl = time.monotonic() - t0
        self.assertTrue(st.startswith(b"+OK"), st)
        lines = body.split(b"\r\n")[:-1]
        self.assertEqual(len(lines), self.N)
        for n in (1, 2, 50000, 99999, self.N):
            self.assertEqual(lines[n - 1], b"%d %s" % (n, uid_of(n - 1).encode()))
        self.assertEqual(len(uid_of(self.N - 1)), 70)
        rss_after = self.gateway_rss_kb()
        self.assertEqual(r.cmd("LIST %d" % self.N), b"+OK %d %d\r\n" % (self.N, self.sizes[-1]))
        self.assertEqual(r.cmd("UIDL 77777"), b"+OK 77777 %s\r\n" % uid_of(77776).encode())
        self.assertEqual(r.cmd("LIST %d" % (self.N + 1)), b"-ERR no such message\r\n")
        st, body = r.multi("RETR %d" % self.N)
        self.assertEqual(st, b"+OK %d octets\r\n" % self.sizes[-1])
        self.assertEqual(body, crlf(self.be.mailboxes["alice"][-1][1]))
        self.assertTrue(r.cmd("QUIT").startswith(b"+OK"))
        r.expect_eof()
        self.wait_metric("pop3gw_connections_active", lambda v: v == 0)
        rss_end = self.gateway_rss_kb()
        print("\n  %d messages, list reply %d octets: login (authenticate + list) %.0f ms, "
              "LIST %.0f ms, UIDL %.0f ms (as the client reads them); gateway RSS %d kB before, "
              "%d kB after the login, %d kB after LIST and UIDL (grew by %d kB), %d kB once "
              "the session ended, VmHWM %d kB"
              % (self.N, len(self.body), t_login * 1000, t_list * 1000, t_uidl * 1000, rss0,
                 rss_login, rss_after, rss_after - rss0, rss_end, self.gw.status_kb("VmHWM")),
              flush=True)
        self.normal_session(user="bob")
