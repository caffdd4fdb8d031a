"""How the gateway uses its backend: when uidl is called, outages,
keep-alive reuse, webhook signatures and tokens (given as values or read
from files, and read again on SIGHUP)."""

import json
import os
import re
import signal
import time

from harness import (HOST, SECRET, Backend, Gateway, StackTestCase, free_port, login, new_dir,
                     pop)
from test_admin import http_get, metric, parse_metrics, wait_until


class UidlFromListTests(StackTestCase):
    """Default backend: uids come with the listing, so no uidl event."""

    def test_no_uidl_event_when_list_has_uids(self):
        msgs = self.msgs()
        start = len(self.backend.requests())
        p = login(self.gw)
        try:
            _, uidls, _ = p.uidl()
            self.assertEqual(uidls, [b"%d %s" % (i + 1, m.uid.encode())
                                     for i, m in enumerate(msgs)])
            self.assertEqual(p.uidl(3), b"+OK 3 %s" % msgs[2].uid.encode())
        finally:
            p.quit()
        events = [r["event"] for r in self.session_requests(start)]
        self.assertEqual(events, ["authenticate", "list", "quit"])

    def test_list_event_once_per_session(self):
        start = len(self.backend.requests())
        p = login(self.gw)
        try:
            p.stat()
            p.list()
            p.list(1)
            p.stat()
            p.uidl()
        finally:
            p.quit()
        events = [r["event"] for r in self.session_requests(start)]
        self.assertEqual(events.count("list"), 1, events)

    def test_retrieve_request_fields(self):
        msgs = self.msgs()
        start = len(self.backend.requests())
        p = login(self.gw)
        try:
            p.retr(2)
            p.top(3, 1)
        finally:
            p.quit()
        reqs = [r for r in self.session_requests(start) if r["event"] == "retrieve"]
        self.assertEqual(len(reqs), 2, reqs)
        self.assertEqual(reqs[0]["message"], 2)
        self.assertEqual(reqs[0]["uid"], msgs[1].uid)
        self.assertNotIn("lines", reqs[0])
        self.assertEqual(reqs[1]["message"], 3)
        self.assertEqual(reqs[1]["lines"], 1)
        self.assertEqual(reqs[1]["user"], "alice")


class UidlEventTests(StackTestCase):
    """Backend started with --no-list-uids: the gateway must ask uidl."""
    BACKEND_ARGS = ("--no-list-uids",)

    def test_uidl_event_once(self):
        msgs = self.msgs()
        start = len(self.backend.requests())
        p = login(self.gw)
        try:
            self.assertEqual(p.stat()[0], len(msgs))
            _, uidls, _ = p.uidl()
            self.assertEqual(uidls, [b"%d %s" % (i + 1, m.uid.encode())
                                     for i, m in enumerate(msgs)])
            self.assertEqual(p.uidl(2), b"+OK 2 %s" % msgs[1].uid.encode())
            p.uidl()
        finally:
            p.quit()
        events = [r["event"] for r in self.session_requests(start)]
        self.assertEqual(events.count("uidl"), 1, events)
        self.assertEqual(events, ["authenticate", "list", "uidl", "quit"])

    def test_no_uidl_event_without_uidl_command(self):
        start = len(self.backend.requests())
        p = login(self.gw)
        try:
            p.stat()
            p.retr(1)
        finally:
            p.quit()
        events = [r["event"] for r in self.session_requests(start)]
        self.assertNotIn("uidl", events)

    def test_quit_deletions_carry_uids(self):
        # carol is alice's twin, so alice's mailbox stays whole for the others.
        msgs = self.msgs("carol")
        start = len(self.backend.requests())
        p = login(self.gw, "carol")
        p.dele(2)
        p.dele(4)
        self.assertTrue(p.quit().startswith(b"+OK"))
        reqs = self.session_requests(start)
        events = [r["event"] for r in reqs]
        self.assertEqual(events, ["authenticate", "list", "uidl", "quit"])
        self.assertEqual(sorted(reqs[-1]["deleted"], key=lambda d: d["message"]),
                         [{"message": 2, "uid": msgs[1].uid},
                          {"message": 4, "uid": msgs[3].uid}])
        left = sorted(m.uid for i, m in enumerate(msgs) if i not in (1, 3))
        self.assertEqual(self.root.uids_on_disk("carol"), left)

    def test_retrieve_after_uidl_carries_uid(self):
        msgs = self.msgs()
        start = len(self.backend.requests())
        p = login(self.gw)
        try:
            p.uidl()
            p.retr(3)
        finally:
            p.quit()
        ret = [r for r in self.session_requests(start) if r["event"] == "retrieve"]
        self.assertEqual(ret[0].get("uid"), msgs[2].uid)


class BackendOutageTests(StackTestCase):
    SHARED = False
    GATEWAY_ARGS = {"backend_timeout": "3"}

    def session_ok(self):
        p = login(self.gw)
        try:
            self.assertEqual(p.stat()[0], len(self.msgs()))
            _, lines, _ = p.retr(1)
            self.assertEqual(b"\r\n".join(lines) + b"\r\n", self.msgs()[0].expected)
        finally:
            p.quit()

    def test_backend_down_then_back(self):
        self.session_ok()  # leaves a kept-alive backend connection behind
        port = self.backend.port
        self.backend.kill()
        for _ in range(2):
            p = pop(self.gw)
            try:
                p.user("alice")
                self.assertErr(p.pass_, "secret1", code="SYS/TEMP")
            finally:
                p.quit()
        self.gw.check_alive("the backend was down")
        # Same port, same mail root.
        self.backend = Backend(self.root, port=port, name="backend-restarted")
        self.addCleanup(self.backend.stop_clean)
        self.backend.start()
        self.session_ok()
        self.session_ok()

    def test_backend_dies_after_login(self):
        p = login(self.gw)
        try:
            self.backend.kill()
            self.assertErr(p.retr, 1, code="SYS/TEMP")
            # The session survives a failed retrieve.
            self.assertTrue(p.noop().startswith(b"+OK"))
        finally:
            # Nothing to delete: +OK even though quit cannot reach the backend.
            self.assertTrue(p.quit().startswith(b"+OK"))
        self.gw.check_alive("the backend died mid-session")


class KeepAliveTests(StackTestCase):
    GATEWAY_ARGS = {"workers": "1"}

    def test_connections_reused(self):
        before = self.backend.stats()
        for _ in range(20):
            p = login(self.gw)
            try:
                p.stat()
                p.retr(1)
            finally:
                p.quit()
        after = self.backend.stats()
        # The second /_stats call is itself one more connection.
        conns = after["connections"] - before["connections"] - 1
        reqs = sum(after["requests"].get(e, 0) - before["requests"].get(e, 0)
                   for e in ("authenticate", "list", "retrieve", "quit"))
        self.assertGreaterEqual(reqs, 80, after)
        self.assertLessEqual(conns, 4, "%d backend connections for %d requests: %r"
                             % (conns, reqs, after))


class RefusedWebhookMixin:
    """A backend that refuses the gateway's signature or token answers 401:
    that is a refused webhook, not a failed login (docs/webhooks.md)."""

    REFUSED = ("webhook refused by the backend: check backend_secret / backend_token")

    def assert_refused_not_failed_login(self, args, name):
        admin_port = free_port()
        # Strict login limits: a failed login would be delayed 2 s, close
        # the connection and lock the address out at once.
        gw = Gateway(self.backend, name=name, args=dict(
            args, admin_listen="%s:%d" % (HOST, admin_port), auth_failure_delay="2",
            max_auth_failures="1", max_auth_failures_per_ip="1"))
        self.addCleanup(gw.stop_clean)
        gw.start()
        p = pop(gw)
        try:
            for _ in range(2):  # the same connection, twice
                t0 = time.monotonic()
                p.user("alice")
                self.assertErr(p.pass_, "secret1", code="SYS/TEMP")
                self.assertLess(time.monotonic() - t0, 1.5, "delayed like a failed login")
        finally:
            p.quit()
        # An error line names the likely cause; no line says "login failed".
        line = wait_until(lambda: [l for l in gw.log().splitlines() if self.REFUSED in l],
                          "the refused-webhook log line")[0]
        self.assertIn("level=error", line)
        self.assertRegex(line, r"event=authenticate id=msg_[0-9a-f]{16}_\d+ http_status=401")
        self.assertFalse(re.search(r'msg="login failed\b', gw.log()), gw.log())

        def get(path):
            status, _, body = http_get(admin_port, path)
            self.assertEqual(status, 200, (path, body))
            return body
        samples = parse_metrics(get("/metrics").decode())[0]
        self.assertEqual(metric(samples, "pop3gw_webhook_errors_total", event="authenticate",
                                reason="refused"), 2)
        self.assertEqual(metric(samples, "pop3gw_webhook_errors_total", event="authenticate",
                                reason="status"), 0)
        self.assertEqual(metric(samples, "pop3gw_logins_total", method="USER", result="failed"), 0)
        st = json.loads(get("/status"))
        self.assertEqual(st["backend"]["state"], "failing", st["backend"])
        self.assertEqual(st["webhooks"]["events"]["authenticate"]["errors_by_reason"]["refused"], 2)
        self.assertEqual(st["logins"]["failed_total"], 0)


class SignatureTests(RefusedWebhookMixin, StackTestCase):
    BACKEND_ARGS = ("--secret=" + SECRET,)
    GATEWAY_ARGS = {"backend_secret": SECRET}

    def test_signed_login_works(self):
        p = login(self.gw)
        try:
            self.assertEqual(p.stat()[0], len(self.msgs()))
            _, lines, _ = p.retr(2)
            self.assertEqual(b"\r\n".join(lines) + b"\r\n", self.msgs()[1].expected)
        finally:
            p.quit()

    def test_rotated_secrets(self):
        # Two keys, the right one second: the gateway signs with each.
        other = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"
        gw = Gateway(self.backend, args={"backend_secret": other + " " + SECRET},
                     name="gateway-rotated")
        self.addCleanup(gw.stop_clean)
        gw.start()
        p = login(gw)
        try:
            self.assertEqual(p.stat()[0], len(self.msgs()))
        finally:
            p.quit()

    def test_wrong_secret_is_a_refused_webhook(self):
        wrong = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"
        self.assert_refused_not_failed_login({"backend_secret": wrong}, "gateway-wrong-secret")

    def test_unsigned_fails(self):
        gw = Gateway(self.backend, args={"backend_secret": None}, name="gateway-unsigned")
        self.addCleanup(gw.stop_clean)
        gw.start()
        p = pop(gw)
        try:
            p.user("alice")
            self.assertErr(p.pass_, "secret1", code="SYS/TEMP")
        finally:
            p.quit()


class TokenTests(RefusedWebhookMixin, StackTestCase):
    BACKEND_ARGS = ("--token=tok-123",)
    GATEWAY_ARGS = {"backend_token": "tok-123"}

    def test_token_login_works(self):
        p = login(self.gw)
        try:
            self.assertEqual(p.stat()[0], len(self.msgs()))
        finally:
            p.quit()

    def test_wrong_token_is_a_refused_webhook(self):
        self.assert_refused_not_failed_login({"backend_token": "nope"}, "gateway-wrong-token")


class SecretFileMixin:
    """Secrets read from files (backend_secret_file, backend_token_file):
    used at start, read again on SIGHUP, and a file that no longer reads
    leaves the running secret in place."""

    RELOADED = "SIGHUP: configuration reloaded"
    REFUSED_RELOAD = "SIGHUP: configuration refused; the running one stays"

    def write_secret(self, path, value):
        with open(path, "w") as f:
            f.write(value + "\n")

    def sighup(self, gw, expect):
        """SIGHUP, then waits for one more `expect` line in the log."""
        before = gw.log().count(expect)
        os.kill(gw.pid, signal.SIGHUP)
        wait_until(lambda: gw.log().count(expect) > before, "%r after SIGHUP" % expect)

    def assert_login_works(self, gw):
        p = login(gw)
        try:
            self.assertEqual(p.stat()[0], len(self.msgs()))
        finally:
            p.quit()

    def assert_refused(self, gw):
        p = pop(gw)
        try:
            p.user("alice")
            self.assertErr(p.pass_, "secret1", code="SYS/TEMP")
        finally:
            p.quit()

    def check_file_key(self, key, good, wrong, env=False):
        path = os.path.join(new_dir("secret"), key)
        self.write_secret(path, good)
        gw = Gateway(self.backend, args={} if env else {key: path}, name="gateway-" + key)
        if env:
            gw.env["POP3GW_" + key.upper()] = path
        self.addCleanup(gw.stop_clean)
        gw.start()
        self.assert_login_works(gw)
        # A new value in the file is taken on SIGHUP: a wrong one is refused
        # by the backend (401: a refused webhook, -ERR [SYS/TEMP]).
        self.write_secret(path, wrong)
        self.sighup(gw, self.RELOADED)
        self.assert_refused(gw)
        self.write_secret(path, good)
        self.sighup(gw, self.RELOADED)
        self.assert_login_works(gw)
        # A file that cannot be read any more: the reload is refused, the
        # running secret stays.
        os.unlink(path)
        self.sighup(gw, self.REFUSED_RELOAD)
        self.assertIn("%s: cannot read" % key, gw.log())
        self.assert_login_works(gw)
        # Neither the secret nor a part of it is logged; the path may be.
        log = "\n".join(l for l in gw.log().splitlines() if not l.startswith("$ "))
        for v in (good, wrong):
            self.assertNotIn(v.replace("whsec_", ""), log)


class SecretFileTests(SecretFileMixin, StackTestCase):
    BACKEND_ARGS = ("--secret=" + SECRET,)
    WRONG = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"

    def test_backend_secret_file(self):
        self.check_file_key("backend_secret_file", SECRET, self.WRONG)

    def test_backend_secret_file_from_environment(self):
        self.check_file_key("backend_secret_file", SECRET, self.WRONG, env=True)

    def test_backend_reads_its_secret_from_a_file(self):
        """pop3gw-maildir --secret-file: the same key, from a file, on both sides."""
        path = os.path.join(new_dir("secret"), "s")
        self.write_secret(path, SECRET)
        backend = Backend(self.root, args=("--secret-file=" + path,), name="backend-secret-file")
        self.addCleanup(backend.stop_clean)
        backend.start()
        gw = Gateway(backend, args={"backend_secret_file": path}, name="gateway-secret-file")
        self.addCleanup(gw.stop_clean)
        gw.start()
        self.assert_login_works(gw)
        wrong = Gateway(backend, args={"backend_secret": self.WRONG}, name="gateway-wrong")
        self.addCleanup(wrong.stop_clean)
        wrong.start()
        self.assert_refused(wrong)

    def test_secret_and_file_both_set(self):
        path = os.path.join(new_dir("secret"), "s")
        self.write_secret(path, SECRET)
        gw = Gateway(self.backend, args={"backend_secret": SECRET, "backend_secret_file": path},
                     name="gateway-both")
        with self.assertRaises(AssertionError) as cm:
            gw.start()
        self.assertIn("backend_secret and backend_secret_file are both set", str(cm.exception))
        self.assertEqual(gw.returncode, 2)


class TokenFileTests(SecretFileMixin, StackTestCase):
    BACKEND_ARGS = ("--token=tok-file-123",)

    def test_backend_token_file(self):
        self.check_file_key("backend_token_file", "tok-file-123", "tok-wrong-456")

    def test_backend_token_file_from_environment(self):
        self.check_file_key("backend_token_file", "tok-file-123", "tok-wrong-456", env=True)


class KeptListingTests(StackTestCase):
    """The reference backend serves a user's listing again while cur/ and
    new/ are unchanged, and reads the directories again after any change."""
    SHARED = False

    def age_dirs(self, user="alice", seconds=60):
        """Backdates the user's cur/ and new/ so a listing taken now is kept."""
        t = time.time() - seconds
        for sub in ("cur", "new"):
            os.utime(os.path.join(self.root.path, user, sub), (t, t))

    def listing(self, user="alice"):
        """(uids, sizes) of one session, and the backend's listing counters
        around it."""
        before = self.backend.stats()["listings"]
        p = login(self.gw, user)
        try:
            _, uidls, _ = p.uidl()
            _, sizes, _ = p.list()
        finally:
            p.quit()
        after = self.backend.stats()["listings"]
        uids = [u.split(b" ", 1)[1].decode() for u in uidls]
        return uids, [int(s.split()[1]) for s in sizes], {
            k: after[k] - before[k] for k in ("scanned", "kept")}

    def expected(self, user="alice"):
        msgs = sorted(self.msgs(user), key=lambda m: m.uid)
        return [m.uid for m in msgs], [m.size for m in msgs]

    def test_unchanged_listing_is_served_again(self):
        self.age_dirs()
        first = self.listing()
        self.assertEqual(first[2], {"scanned": 1, "kept": 0})
        second = self.listing()
        self.assertEqual(second[2], {"scanned": 0, "kept": 1})
        self.assertEqual(first[:2], second[:2])
        self.assertEqual(second[:2], self.expected())

    def test_fresh_directories_are_not_kept(self):
        # Directories changed just now: each session reads them again. (They
        # are dated now before each session: on a slow run, such as under
        # valgrind, the mail root may be older than the 2 s that make a
        # listing keepable.)
        self.age_dirs(seconds=0)
        self.listing()
        self.age_dirs(seconds=0)
        self.assertEqual(self.listing()[2], {"scanned": 1, "kept": 0})

    def test_delivery_is_seen(self):
        self.age_dirs()
        self.listing()
        self.assertEqual(self.listing()[2]["kept"], 1)
        self.root.add("alice", "1800000000.M9P9.late", b"Subject: late\n\nnew one\n")
        uids, sizes, counts = self.listing()
        self.assertEqual(counts, {"scanned": 1, "kept": 0})
        self.assertEqual((uids, sizes), self.expected())
        self.assertIn("1800000000.M9P9.late", uids)

    def test_move_to_cur_and_delete_are_seen(self):
        self.age_dirs()
        self.listing()
        # A mail client marks the first message read: new/ -> cur/.
        m = self.msgs()[0]
        dest = os.path.join(self.root.path, "alice", "cur", m.uid + ":2,S")
        os.rename(m.path, dest)
        m.path = dest
        uids, _, counts = self.listing()
        self.assertEqual(counts["scanned"], 1)
        self.assertEqual(uids, self.expected()[0])
        # Deleted through POP3, after the directories settled again.
        self.age_dirs()
        self.listing()
        p = login(self.gw)
        try:
            p.dele(1)
        finally:
            p.quit()
        uids, _, _ = self.listing()
        self.assertEqual(len(uids), len(self.msgs()) - 1)
        self.assertEqual(sorted(uids), sorted(self.root.uids_on_disk("alice")))

    def test_retrieve_follows_moves_and_removals(self):
        # The kept listing names new/UID; the client then marks it read
        # (moved to cur/UID:2,S) and another message is removed outright.
        self.age_dirs()
        self.listing()
        msgs = self.msgs()
        p = login(self.gw)
        try:
            first, second = msgs[0], msgs[1]
            dest = os.path.join(self.root.path, "alice", "cur", first.uid + ":2,S")
            os.rename(first.path, dest)
            os.remove(second.path)
            _, lines, _ = p.retr(1)
            self.assertEqual(b"\r\n".join(lines) + b"\r\n", first.expected)
            self.assertRaisesRegex(Exception, "-ERR", p.retr, 2)
            _, lines, _ = p.retr(3)
            self.assertEqual(b"\r\n".join(lines) + b"\r\n", msgs[2].expected)
        finally:
            p.quit()
