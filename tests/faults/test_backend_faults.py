"""Backend faults: a backend that is down, slow past the deadline, answers
500, 429, garbage, the wrong JSON shape, an oversized or too deep body, a
listing whose octet total wraps, a uid list of the wrong length, cuts a
stream halfway (with a length, or close-delimited short of the listed
size), or poisons a kept-alive connection with a 204 that has a body;
retries with the same webhook-id; the circuit breaker.

Each fault case asserts what the client received, that the fault left a log
line naming the session and moved a metric, that the gateway serves a normal
session right after, and what the backend was (or was not) asked to delete;
tests/faults/README.md lists the cases that check something else.
"""

import base64
import hashlib
import hmac
import os
import re
import socket
import time

import fakebackend as fb
import harness
from faultlib import FaultCase, crlf, read_until_close, rst_close, upper

SYS_TEMP_AUTH = b"-ERR [SYS/TEMP] authentication is unavailable now, try again later\r\n"
SYS_TEMP_LIST = b"-ERR [SYS/TEMP] the maildrop cannot be opened now, try again later\r\n"
SYS_TEMP_RETR = b"-ERR [SYS/TEMP] the message cannot be read now, try again later\r\n"
SYS_TEMP_UIDL = b"-ERR [SYS/TEMP] unique ids are unavailable now, try again later\r\n"
NOT_REMOVED = b"-ERR [SYS/TEMP] some deleted messages not removed\r\n"
ERRORS = "pop3gw_webhook_errors_total"


class BackendFaultCase(FaultCase):

    def pass_reply(self, r, user="alice", password=None):
        self.assertTrue(r.cmd("USER " + user).startswith(b"+OK"))
        return r.cmd("PASS " + (password or self.be.users[user]))

    def expect_closed(self, r, timeout=3):
        try:
            rest = r.expect_eof(timeout=upper(timeout))
        except socket.timeout:
            self.fail("the gateway kept the connection open")
        except ConnectionResetError:
            rest = b""
        return rest

    def errors(self, snapshot, event):
        return sum(self.metric(ERRORS, snapshot, event=event, reason=k)
                   for k in ("timeout", "connect", "status", "body", "broken", "refused"))

    def assert_errors_grew(self, before, event):
        """Waits until the webhook errors of `event`, whatever the reason,
        are above their count in the snapshot `before`."""
        old = self.errors(before, event)
        deadline = time.monotonic() + upper(5)
        while self.errors(self.metrics(), event) <= old:
            if time.monotonic() > deadline:
                self.fail("no webhook error counted for %s" % event)
            time.sleep(0.05)


class DownBackendTests(BackendFaultCase):

    def test_killed_before_login(self):
        m0 = self.metrics()
        self.be.kill()
        r = self.raw()
        sid = self.session_id(r)
        t0 = time.monotonic()
        self.assertEqual(self.pass_reply(r), SYS_TEMP_AUTH)
        self.assertLess(time.monotonic() - t0, upper(1.5))
        self.assert_fault_logged(sid, "login not checked: backend error")
        self.assert_metric_grew(m0, ERRORS, event="authenticate", reason="connect")
        # A backend failure is not a failed login.
        self.assertEqual(self.metric("pop3gw_logins_total", method="USER", result="failed"), 0)
        # The session goes on; once the backend is back, the same
        # connection logs in.
        self.be.restart()
        self.assertTrue(r.cmd("USER alice").startswith(b"+OK"))
        self.assertTrue(r.cmd("PASS secret1").startswith(b"+OK"))
        self.assertTrue(r.cmd("QUIT").startswith(b"+OK"))
        self.normal_session()
        self.assert_not_deleted()

    def test_killed_after_login(self):
        """The backend dies mid-session: RETR fails (after retries), DELE
        and QUIT cannot commit, and nothing is deleted."""
        r = self.login_and_stat()
        sid = self.session_id(r)
        m0 = self.metrics()
        self.be.kill()
        t0 = time.monotonic()
        self.assertEqual(r.cmd("RETR 1"), SYS_TEMP_RETR)
        self.assertLess(time.monotonic() - t0, upper(1.5), "retries must stay inside the deadline")
        self.assert_metric_grew(m0, "pop3gw_webhook_retries_total", by=1, event="retrieve")
        self.assert_fault_logged(sid, "webhook failed.*event=retrieve")
        self.assertTrue(r.cmd("NOOP").startswith(b"+OK"), "session must continue after -ERR")
        self.assertTrue(r.cmd("DELE 1").startswith(b"+OK"))
        self.assertEqual(r.cmd("QUIT"), NOT_REMOVED)
        self.expect_closed(r)
        self.assert_fault_logged(sid, "quit failed: deletions not committed")
        self.assert_metric_grew(m0, "pop3gw_quit_failures_total")
        self.be.restart()
        self.normal_session()
        self.assert_not_deleted()

    def test_transport_retries_keep_webhook_id_and_deadline(self):
        """list is idempotent: refused connections are retried (twice, with
        backoff) inside backend_timeout; every log line of it carries the
        same webhook-id."""
        self.be.plan("authenticate", fb.then_kill())
        r = self.raw()
        sid = self.session_id(r)
        m0 = self.metrics()
        t0 = time.monotonic()
        self.assertEqual(self.pass_reply(r), SYS_TEMP_LIST)
        self.assertLess(time.monotonic() - t0, upper(1.5))
        self.expect_closed(r)
        self.assert_metric_grew(m0, "pop3gw_webhook_retries_total", by=2, event="list")
        retries = [l for l in self.log_lines() if 'msg="webhook retry"' in l]
        ids = {l.split(" id=")[1].split()[0] for l in retries if " id=msg_%s_" % sid in l}
        self.assertEqual(len(ids), 1, "retries of one call must share one webhook-id: %r" % retries)
        self.be.restart()
        self.normal_session()


class DeadlineTests(BackendFaultCase):

    def test_authenticate_past_deadline(self):
        self.be.plan("authenticate", fb.delay(3))
        r = self.raw()
        sid = self.session_id(r)
        m0 = self.metrics()
        t0 = time.monotonic()
        self.assertEqual(self.pass_reply(r), SYS_TEMP_AUTH)
        elapsed = time.monotonic() - t0
        self.assertGreater(elapsed, 0.8)
        # (the backend answers after 3 s: a scaled bound stays below that)
        self.assertLess(elapsed, upper(2.0, cap=2.8), "backend_timeout=1 must bound the wait")
        self.assert_metric_grew(m0, ERRORS, event="authenticate", reason="timeout")
        self.assert_fault_logged(sid, "login not checked: backend error")
        # A timeout is not retried.
        self.assertEqual(len(self.be.requests("authenticate")), 1)
        self.normal_session()

    def test_list_past_deadline(self):
        self.be.plan("list", fb.delay(3))
        r = self.raw()
        sid = self.session_id(r)
        m0 = self.metrics()
        self.assertEqual(self.pass_reply(r), SYS_TEMP_LIST)
        self.expect_closed(r)
        self.assert_metric_grew(m0, ERRORS, event="list", reason="timeout")
        self.assert_fault_logged(sid, "list failed")
        self.normal_session()
        self.assert_no_quit(session=sid)

    def test_retrieve_headers_past_deadline(self):
        self.be.plan("retrieve", fb.delay(3))
        r = self.login_and_stat()
        sid = self.session_id(r)
        m0 = self.metrics()
        t0 = time.monotonic()
        self.assertEqual(r.cmd("RETR 1"), SYS_TEMP_RETR)
        self.assertLess(time.monotonic() - t0, upper(2.0, cap=2.8))
        self.assert_metric_grew(m0, ERRORS, event="retrieve", reason="timeout")
        self.assert_fault_logged(sid, "retrieve")
        # The session continues and the next RETR works.
        st, body = r.multi("RETR 2")
        self.assertTrue(st.startswith(b"+OK"), st)
        self.assertEqual(body, crlf(self.be.mailboxes["alice"][1][1]))
        self.assertTrue(r.cmd("QUIT").startswith(b"+OK"))
        self.normal_session()

    def test_retrieve_stalls_after_ok(self):
        """No body progress for backend_timeout after +OK: the connection is
        closed without the final dot."""
        data = fb.generated_message(200000)
        self.be.plan("retrieve", fb.stall_message(data, after=0.5, seconds=6))
        r = self.login_and_stat()
        sid = self.session_id(r)
        m0 = self.metrics()
        self.assertTrue(r.cmd("DELE 2").startswith(b"+OK"))
        st = r.cmd("RETR 1")
        self.assertTrue(st.startswith(b"+OK"), st)
        t0 = time.monotonic()
        rest = self.expect_closed(r, timeout=5)
        self.assertLess(time.monotonic() - t0, upper(3.0, cap=5.5))  # the stall lasts 6 s
        self.assertFalse(rest.endswith(b"\r\n.\r\n"), "a cut message must not end with the dot")
        self.assert_metric_grew(m0, ERRORS, event="retrieve", reason="broken")
        self.assert_fault_logged(sid, "retrieve broke after \\+OK")
        self.normal_session()
        self.assert_no_quit(session=sid)
        self.assert_not_deleted()

    def test_quit_past_deadline(self):
        """A quit that times out: the client is told the deletions may not
        have happened, and it is not resent (a timeout is not retried)."""
        self.be.plan("quit", fb.delay(3, then=fb.status(500)))
        r = self.login_and_stat()
        sid = self.session_id(r)
        m0 = self.metrics()
        self.assertTrue(r.cmd("DELE 2").startswith(b"+OK"))
        t0 = time.monotonic()
        self.assertEqual(r.cmd("QUIT"), NOT_REMOVED)
        self.assertLess(time.monotonic() - t0, upper(2.0, cap=2.8))
        self.expect_closed(r)
        qs = self.be.requests("quit")
        self.assertEqual(len(qs), 1, qs)
        self.assertEqual(qs[0].body["deleted"], [{"message": 2, "uid": "uid-a2"}])
        self.assert_metric_grew(m0, ERRORS, event="quit", reason="timeout")
        self.assert_fault_logged(sid, "quit failed: deletions not committed")
        self.normal_session()


class StatusTests(BackendFaultCase):

    def test_authenticate_500_not_retried(self):
        self.be.plan("authenticate", fb.status(500, {"error": "boom"}))
        r = self.raw()
        sid = self.session_id(r)
        m0 = self.metrics()
        self.assertEqual(self.pass_reply(r), SYS_TEMP_AUTH)
        self.assertEqual(len(self.be.requests("authenticate")), 1)
        self.assert_metric_grew(m0, ERRORS, event="authenticate", reason="status")
        self.assert_fault_logged(sid, "login not checked: backend error")
        self.assertTrue(r.cmd("USER alice").startswith(b"+OK"))
        self.assertTrue(r.cmd("PASS secret1").startswith(b"+OK"))
        r.cmd("QUIT")
        self.normal_session()

    def test_list_500_closes(self):
        self.be.plan("list", fb.status(503))
        r = self.raw()
        sid = self.session_id(r)
        m0 = self.metrics()
        self.assertEqual(self.pass_reply(r), SYS_TEMP_LIST)
        self.expect_closed(r)
        self.assertEqual(len(self.be.requests("list")), 1, "a 5xx is an answer: no retry")
        self.assert_metric_grew(m0, ERRORS, event="list", reason="status")
        self.assert_fault_logged(sid, "list failed")
        self.assert_no_quit(session=sid)
        self.normal_session()

    def test_retrieve_500_session_continues(self):
        self.be.plan("retrieve", fb.status(500))
        r = self.login_and_stat()
        sid = self.session_id(r)
        m0 = self.metrics()
        self.assertEqual(r.cmd("RETR 1"), SYS_TEMP_RETR)
        self.assert_metric_grew(m0, ERRORS, event="retrieve", reason="status")
        self.assert_fault_logged(sid, "webhook failed")
        st, body = r.multi("RETR 1")
        self.assertTrue(st.startswith(b"+OK"), st)
        self.assertTrue(r.cmd("QUIT").startswith(b"+OK"))
        self.normal_session()

    def test_retrieve_404(self):
        """404 is the backend's answer "no such message", not a failure:
        no error is counted and no warning logged."""
        self.be.plan("retrieve", fb.status(404, {"error": "gone"}))
        r = self.login_and_stat()
        sid = self.session_id(r)
        m0 = self.metrics()
        self.assertEqual(r.cmd("RETR 3"), b"-ERR message 3 is no longer available\r\n")
        self.assertTrue(r.cmd("NOOP").startswith(b"+OK"))
        r.cmd("QUIT")
        r.expect_eof()
        m1 = self.metrics()
        self.assertEqual(self.errors(m1, "retrieve"), self.errors(m0, "retrieve"))
        self.assertGreaterEqual(self.metric("pop3gw_webhook_calls_total", m1, event="retrieve") -
                                self.metric("pop3gw_webhook_calls_total", m0, event="retrieve"), 1)
        self.assertEqual([l for l in self.log_lines() if sid in l and "level=warn" in l], [])
        self.normal_session()

    def test_quit_500_with_deletions(self):
        self.be.plan("quit", fb.status(500, {"error": "disk full"}))
        r = self.login_and_stat()
        sid = self.session_id(r)
        m0 = self.metrics()
        self.assertTrue(r.cmd("DELE 1").startswith(b"+OK"))
        self.assertTrue(r.cmd("DELE 3").startswith(b"+OK"))
        self.assertEqual(r.cmd("QUIT"), NOT_REMOVED)
        self.expect_closed(r)
        qs = self.be.requests("quit")
        self.assertEqual(len(qs), 1, "a 500 is an answer: no retry")
        self.assertEqual(qs[0].body["deleted"], [{"message": 1, "uid": "uid-a1"},
                                                 {"message": 3, "uid": "uid-a3"}])
        self.assert_metric_grew(m0, "pop3gw_quit_failures_total")
        self.assert_metric_grew(m0, ERRORS, event="quit", reason="status")
        self.assert_fault_logged(sid, "quit failed: deletions not committed")
        self.assert_not_deleted()
        self.normal_session()

    def test_quit_500_nothing_deleted(self):
        self.be.plan("quit", fb.status(500))
        r = self.login_and_stat()
        sid = self.session_id(r)
        m0 = self.metrics()
        self.assertEqual(r.cmd("QUIT"), b"+OK bye\r\n")
        self.expect_closed(r)
        # Nothing was pending, so the client is not told; the failed call
        # is still logged and counted, but it is not a failed quit.
        self.assert_fault_logged(sid, "webhook failed.*event=quit.*http_status=500")
        self.assert_metric_grew(m0, ERRORS, event="quit", reason="status")
        self.assertEqual(self.metric("pop3gw_quit_failures_total"),
                         self.metric("pop3gw_quit_failures_total", m0))
        self.normal_session()

    def test_redirect_is_a_failure(self):
        """A 3xx is an answer, not a pointer: never followed. Each redirect
        points at the live backend, under a path that answers the call
        normally (the event is the last path segment), so a gateway that
        followed it would log the client in."""
        moved = self.be.url + "/moved/authenticate"
        for code in (301, 302, 303, 307, 308):
            with self.subTest(code=code):
                self.be.plan("authenticate", fb.status(code, b"", headers={"Location": moved}))
                n0 = self.be.mark()
                r = self.raw()
                sid = self.session_id(r)
                m0 = self.metrics()
                self.assertEqual(self.pass_reply(r), SYS_TEMP_AUTH)
                self.assert_fault_logged(sid, "webhook failed.*http_status=%d" % code)
                self.assert_metric_grew(m0, ERRORS, event="authenticate", reason="status")
                reqs = self.be.requests(since=n0)
                self.assertEqual([(q.method, q.path) for q in reqs],
                                 [("POST", "/authenticate")], "the redirect was followed")
                r.close()
            # A good session between the cases keeps the breaker closed.
            self.normal_session()


class RefusalTests(BackendFaultCase):

    def test_429_is_login_delay(self):
        self.be.plan("authenticate", fb.status(429, b"", headers={"Retry-After": "60"}))
        r = self.raw()
        sid = self.session_id(r)
        m0 = self.metrics()
        st = self.pass_reply(r)
        self.assertTrue(st.startswith(b"-ERR [LOGIN-DELAY] "), st)
        self.assert_fault_logged(sid, "login failed")
        self.assert_metric_grew(m0, "pop3gw_logins_total", method="USER", result="failed")
        self.assertTrue(r.cmd("CAPA").startswith(b"+OK"))
        r.body()
        self.normal_session()

    def test_429_message_shown_sanitised(self):
        self.be.plan("authenticate", fb.status(429, {"message": "[AUTH] wait\r\n+OK a minute"},
                                                headers={"Retry-After": "60"}))
        r = self.raw()
        sid = self.session_id(r)
        m0 = self.metrics()
        st = self.pass_reply(r)
        self.assertEqual(st, b"-ERR [LOGIN-DELAY] wait+OK a minute\r\n")
        self.assertEqual(r.pending(0.3), b"")
        line = self.assert_fault_logged(sid, "login failed")
        self.assertNotIn("+OK a minute", line)  # the backend's text is not logged
        self.assert_metric_grew(m0, "pop3gw_logins_total", method="USER", result="failed")
        self.normal_session()

    def test_423_in_use(self):
        self.be.plan("authenticate", fb.status(423))
        r = self.raw()
        sid = self.session_id(r)
        m0 = self.metrics()
        self.assertTrue(self.pass_reply(r).startswith(b"-ERR [IN-USE] "))
        self.assert_fault_logged(sid, "login failed")
        self.assert_metric_grew(m0, "pop3gw_logins_total", method="USER", result="failed")
        self.normal_session()


class RefusedWebhookTests(BackendFaultCase):
    """A 401 or 403, on any event, is the backend refusing the webhook call
    itself (a bad signature or token): -ERR [SYS/TEMP], an error-level log
    line naming the likely cause, the `refused` error metric. Never a failed
    login: no auth_failure_delay, not counted toward max_auth_failures or
    max_auth_failures_per_ip, no `login failed` line."""
    GATEWAY_ARGS = {"events": "connect, disconnect", "auth_failure_delay": "2",
                    "max_auth_failures": "1", "max_auth_failures_per_ip": "2"}
    REFUSED_LINE = r"level=error .*webhook refused by the backend: check backend_secret / " \
                   r"backend_token.* event=%s id=msg_%s_\d+ http_status=%d"

    def assert_refused_logged(self, sid, event, code):
        self.wait_log(self.REFUSED_LINE % (event, sid, code), level="error")

    def test_authenticate(self):
        m0 = self.metrics()
        r = self.raw()
        sid = self.session_id(r)
        for code in (401, 403, 401):
            with self.subTest(code=code):
                # Whatever the body says: the status speaks of the call.
                self.be.plan("authenticate", fb.status(code, {"ok": False, "code": "AUTH",
                                                              "message": "bad signature"}))
                t0 = time.monotonic()
                self.assertEqual(self.pass_reply(r), SYS_TEMP_AUTH)
                self.assertLess(time.monotonic() - t0, 1.0, "no auth_failure_delay")
                self.assert_refused_logged(sid, "authenticate", code)
        # Three refusals, yet max_auth_failures=1 has not closed the
        # connection, and max_auth_failures_per_ip=2 has not locked out the
        # address: the same connection logs in.
        st = self.pass_reply(r)
        self.assertTrue(st.startswith(b"+OK maildrop has 3 messages"), st)
        self.assertTrue(r.cmd("QUIT").startswith(b"+OK"))
        self.assert_metric_grew(m0, ERRORS, by=3, event="authenticate", reason="refused")
        self.assertEqual(self.metric(ERRORS, event="authenticate", reason="status"), 0)
        self.assertEqual(self.metric("pop3gw_logins_total", method="USER", result="failed"), 0)
        self.assertEqual(self.metric("pop3gw_logins_total", method="USER", result="ok"), 1)
        mine = [l for l in self.log_lines() if "session=%s " % sid in l]
        self.assertFalse([l for l in mine if re.search(r'msg="login failed\b', l)], mine)
        self.assertEqual(len([l for l in mine if "login not checked: backend error" in l]), 3)
        self.assertEqual(len(self.be.requests("authenticate")), 4, "a 401 is an answer: no retry")

    def test_list_retrieve_quit(self):
        for code in (401, 403):
            with self.subTest(code=code):
                m0 = self.metrics()
                # list: the maildrop cannot be opened, the session ends
                self.be.plan("list", fb.status(code))
                r = self.raw()
                sid = self.session_id(r)
                self.assertEqual(self.pass_reply(r), SYS_TEMP_LIST)
                self.expect_closed(r)
                self.assert_refused_logged(sid, "list", code)
                # retrieve: -ERR, the session goes on
                self.be.plan("retrieve", fb.status(code, b"forbidden", "text/plain"))
                r = self.login_and_stat()
                sid = self.session_id(r)
                self.assertEqual(r.cmd("RETR 1"), SYS_TEMP_RETR)
                self.assert_refused_logged(sid, "retrieve", code)
                self.assertTrue(r.cmd("NOOP").startswith(b"+OK"))
                # quit: the deletions are not committed
                self.be.plan("quit", fb.status(code))
                self.assertTrue(r.cmd("DELE 1").startswith(b"+OK"))
                self.assertEqual(r.cmd("QUIT"), NOT_REMOVED)
                self.expect_closed(r)
                self.assert_refused_logged(sid, "quit", code)
                for event in ("list", "retrieve", "quit"):
                    self.assert_metric_grew(m0, ERRORS, event=event, reason="refused")
                    self.assertEqual(self.metric(ERRORS, event=event, reason="status"), 0)
                    self.assertEqual(len([q for q in self.be.requests(event)
                                          if q.action == "status %d" % code]), 1,
                                     "a %d is an answer: no retry" % code)
                self.assert_not_deleted()
                # (a good session in between keeps the circuit breaker closed)
                self.normal_session()

    def test_connect_and_disconnect(self):
        m0 = self.metrics()
        self.be.plan("connect", fb.status(403, {"message": "go away"}))
        s = socket.create_connection(("127.0.0.1", self.gw.port), timeout=5)
        data, closed = read_until_close(s, 3)
        s.close()
        self.assertTrue(closed)
        self.assertEqual(data, b"-ERR [SYS/TEMP] service unavailable, try again later\r\n")
        self.assert_metric_grew(m0, ERRORS, event="connect", reason="refused")
        self.wait_log(r"level=error .*webhook refused by the backend.* event=connect .*"
                      r"http_status=403", level="error")
        # disconnect: nobody waits for it, but the refusal is logged and counted
        self.be.plan("disconnect", fb.status(401))
        r = self.login_and_stat()
        sid = self.session_id(r)
        rst_close(r.sock)
        self.assert_refused_logged(sid, "disconnect", 401)
        self.assert_metric_grew(m0, ERRORS, event="disconnect", reason="refused")
        self.normal_session()


class BodyTests(BackendFaultCase):

    def test_authenticate_garbage(self):
        self.be.plan("authenticate", fb.garbage())
        r = self.raw()
        sid = self.session_id(r)
        m0 = self.metrics()
        self.assertEqual(self.pass_reply(r), SYS_TEMP_AUTH)
        self.assert_metric_grew(m0, ERRORS, event="authenticate", reason="body")
        self.assert_fault_logged(sid, "login not checked: backend error")
        self.normal_session()

    def test_list_garbage(self):
        self.be.plan("list", fb.garbage(ctype="text/html"))
        r = self.raw()
        sid = self.session_id(r)
        m0 = self.metrics()
        self.assertEqual(self.pass_reply(r), SYS_TEMP_LIST)
        self.expect_closed(r)
        self.assert_metric_grew(m0, ERRORS, event="list", reason="body")
        self.assert_fault_logged(sid, "list failed")
        self.normal_session()

    def test_wrong_shapes_authenticate(self):
        for bad in ({"ok": "yes"}, {"okay": True}, [1, 2], {"ok": True, "user": "x\r\n+OK y"},
                    {"ok": False, "code": 7}, {"ok": True, "user": ""},
                    {"ok": True, "mailbox": {"k": "v" * 5000}}):
            with self.subTest(body=bad):
                self.be.plan("authenticate", fb.reply_json(bad))
                r = self.raw()
                sid = self.session_id(r)
                m0 = self.metrics()
                self.assertEqual(self.pass_reply(r), SYS_TEMP_AUTH)
                self.assert_fault_logged(sid, "login not checked: backend error")
                self.assert_metric_grew(m0, ERRORS, event="authenticate", reason="body")
                r.close()
            # A good session between the cases keeps the breaker closed.
            self.normal_session()

    def test_wrong_shapes_list(self):
        bads = [
            {"messages": {"size": 1}},
            {"msgs": []},
            {"messages": [{"size": -1, "uid": "a"}]},
            {"messages": [{"size": "12", "uid": "a"}]},
            {"messages": [{"size": 1.5, "uid": "a"}]},
            {"messages": [{"size": 2 ** 53, "uid": "a"}]},
            {"messages": [{"size": 10, "uid": "a"}, {"size": 10}]},      # uids all or none
            {"messages": [{"size": 10, "uid": "a"}, {"size": 10, "uid": "a"}]},  # duplicate
            {"messages": [{"size": 10, "uid": "has space"}]},
            {"messages": [{"size": 10, "uid": "x" * 71}]},
            {"messages": [{"size": 10, "uid": "a\r\n+OK"}]},
        ]
        for bad in bads:
            with self.subTest(body=bad):
                m0 = self.metrics()
                self.be.plan("list", fb.reply_json(bad))
                r = self.raw()
                sid = self.session_id(r)
                self.assertEqual(self.pass_reply(r), SYS_TEMP_LIST)
                self.expect_closed(r)
                self.assert_metric_grew(m0, ERRORS, event="list", reason="body")
                self.assert_fault_logged(sid, "list failed")
            # The breaker opens after 5 failures in a row: a good session
            # between the cases keeps it closed.
            self.normal_session()
        self.assertEqual(self.be.requests("quit", 0) and
                         [q for q in self.be.requests("quit") if q.body.get("deleted")], [])

    def test_retrieve_json_bodies(self):
        bads = [
            (fb.status(200, {"content": "a", "content_base64": "YQ=="}), "both"),
            (fb.status(200, {}), "neither"),
            (fb.status(200, {"content_base64": "!!!not base64"}), "bad base64"),
            (fb.status(200, {"content": 5}), "not a string"),
            (fb.garbage(), "not JSON"),
        ]
        r = self.login_and_stat()
        sid = self.session_id(r)
        for act, why in bads:
            with self.subTest(why=why):
                self.be.plan("retrieve", act)
                m0 = self.metrics()
                n0 = len(self.log_lines())
                self.assertEqual(r.cmd("RETR 1"), SYS_TEMP_RETR)
                self.assert_metric_grew(m0, ERRORS, event="retrieve", reason="body")
                self.assert_fault_logged(sid, "webhook failed.*event=retrieve", since=n0)
            # keep the breaker closed
            st, body = r.multi("RETR 2")
            self.assertTrue(st.startswith(b"+OK"), st)
        # A good JSON body is fine.
        self.be.plan("retrieve", fb.status(200, {"content": "Subject: j\n\n.x\nbody"}))
        st, body = r.multi("RETR 1")
        self.assertTrue(st.startswith(b"+OK"), st)
        self.assertEqual(body, b"Subject: j\r\n\r\n.x\r\nbody\r\n")
        self.assertTrue(r.cmd("QUIT").startswith(b"+OK"))
        self.normal_session()


    def test_octet_total_wraps(self):
        """2,048 messages of 2^53-1 octets and one of 2,048 add up to 2^64,
        which a 64-bit sum wraps to 0: a backend error at PASS, never
        "+OK ... (0 octets)". One octet less (2^64-1) still fits."""
        big = [{"size": 2 ** 53 - 1, "uid": "w%04d" % i} for i in range(2048)]
        self.be.plan("list", fb.reply_json({"messages": big + [{"size": 2048, "uid": "last"}]}))
        r = self.raw()
        sid = self.session_id(r)
        m0 = self.metrics()
        self.assertEqual(self.pass_reply(r), SYS_TEMP_LIST)
        self.expect_closed(r)
        self.assert_metric_grew(m0, ERRORS, event="list", reason="body")
        self.assert_fault_logged(sid, "list failed.*more than 2\\^64-1 octets")
        # The largest total that fits is served as it is.
        self.be.plan("list", fb.reply_json({"messages": big + [{"size": 2047, "uid": "last"}]}))
        r = self.raw()
        self.assertEqual(self.pass_reply(r),
                         b"+OK maildrop has 2049 messages (18446744073709551615 octets)\r\n")
        self.assertEqual(r.cmd("STAT"), b"+OK 2049 18446744073709551615\r\n")
        self.assertEqual(r.cmd("LIST 2049"), b"+OK 2049 2047\r\n")
        self.assertTrue(r.cmd("QUIT").startswith(b"+OK"))
        self.normal_session()


class ChunkedReplyTests(BackendFaultCase):
    """Replies without Content-Length, in the chunked transfer coding (what
    many frameworks send for a body they stream): every event works, and the
    connection stays open for the next call."""
    BACKEND_KW = {"chunked": True}

    def test_chunked_replies(self):
        self.normal_session(delete=[2])
        self.assertEqual(self.be.committed, [("alice", "uid-a2")])
        self.be.plan("retrieve", fb.reply_json({"content": "Subject: json\n\nchunked\n"}))
        r = self.login_and_stat()
        st, body = r.multi("RETR 1")
        self.assertTrue(st.startswith(b"+OK"), st)
        self.assertEqual(body, b"Subject: json\r\n\r\nchunked\r\n")
        self.assertTrue(r.cmd("QUIT").startswith(b"+OK"))
        reqs = self.be.requests()
        for q in reqs:  # the last reply may still be finishing on the backend's side
            self.be.wait_answered(q)
        self.assertTrue(all(q.outcome == "ok" for q in reqs), reqs)
        # One kept-alive connection throughout, except that the gateway
        # drops the one whose TOP 1 0 it cut short (the 4th retrieve): the
        # rest of that chunked reply is never read.
        top = [i for i, q in enumerate(reqs) if q.event == "retrieve"][3]
        ids = [q.conn_id for q in reqs]
        self.assertEqual([i for i in range(1, len(ids)) if ids[i] != ids[i - 1]], [top + 1],
                         "connections: %r" % list(zip(ids, reqs)))
        for event in ("authenticate", "list", "retrieve", "quit"):
            self.assertEqual(self.errors(self.metrics(), event), 0, event)


class SizeAndDepthTests(BackendFaultCase):
    # A listing may be as large as max_messages entries need (128 octets
    # each) plus 1 MiB: with 1000 messages that is 1,152,000 octets, so the
    # 1.5 MiB body below is over it.
    GATEWAY_ARGS = {"max_messages": "1000"}

    def test_oversized_list_body(self):
        self.be.plan("list", fb.big_json(1536 * 1024))
        r = self.raw()
        sid = self.session_id(r)
        m0 = self.metrics()
        rss0 = self.gateway_rss_kb()
        self.assertEqual(self.pass_reply(r), SYS_TEMP_LIST)
        self.expect_closed(r)
        self.assert_fault_logged(sid, "list failed")
        self.assertLess(self.gateway_rss_kb() - rss0, 8 * 1024, "an oversized body was buffered")
        m1 = self.metrics()
        self.assertGreaterEqual(self.errors(m1, "list") - self.errors(m0, "list"), 1)
        # Documented meaning of reason="body": "a body not per the contract"
        # (too large included, docs/webhooks.md section 9).
        self.assert_metric_grew(m0, ERRORS, event="list", reason="body")
        self.normal_session()

    def test_oversized_authenticate_body(self):
        self.be.plan("authenticate", fb.big_json(2 * 1024 * 1024))
        r = self.raw()
        sid = self.session_id(r)
        m0 = self.metrics()
        self.assertEqual(self.pass_reply(r), SYS_TEMP_AUTH)
        self.assert_fault_logged(sid, "login not checked: backend error.*reply larger than")
        self.assert_metric_grew(m0, ERRORS, event="authenticate", reason="body")
        self.normal_session()

    def test_json_retrieve_over_1mib_arrives(self):
        # The JSON form is decoded as it streams: unlike the other replies
        # it has no 1 MiB limit (a 50 MB one is in test_big_replies.py).
        content = "Subject: big json\n\n" + ("x" * 75 + "\n") * (1100 * 1024 // 76)
        self.be.plan("retrieve", fb.status(200, {"content": content}))
        r = self.login_and_stat()
        st, body = r.multi("RETR 1")
        self.assertTrue(st.startswith(b"+OK"), st)
        self.assertEqual(body, content.encode().replace(b"\n", b"\r\n"))
        self.assertTrue(r.cmd("NOOP").startswith(b"+OK"))
        r.cmd("QUIT")
        self.normal_session()

    def test_json_depth_limit(self):
        # depth 16 with the top-level object: accepted, mailbox echoed.
        self.be.plan("authenticate", fb.deep_json(15))
        r = self.raw()
        self.assertTrue(self.pass_reply(r).startswith(b"+OK"))
        lst = self.be.requests("list")[-1]
        d, mb = 0, lst.body["mailbox"]
        while isinstance(mb, dict):
            d, mb = d + 1, mb["a"]
        self.assertEqual(d, 15)
        r.cmd("QUIT")
        # depth 17: a backend error.
        self.be.plan("authenticate", fb.deep_json(16))
        r = self.raw()
        sid = self.session_id(r)
        m0 = self.metrics()
        self.assertEqual(self.pass_reply(r), SYS_TEMP_AUTH)
        self.assert_fault_logged(sid, "login not checked: backend error")
        self.assert_metric_grew(m0, ERRORS, event="authenticate", reason="body")
        # Very deep (a parser stack attack) is just as harmless.
        self.be.plan("authenticate", fb.deep_json(100000))
        r = self.raw()
        sid = self.session_id(r)
        m0 = self.metrics()
        self.assertEqual(self.pass_reply(r), SYS_TEMP_AUTH)
        self.assert_fault_logged(sid, "login not checked: backend error")
        self.assert_metric_grew(m0, ERRORS, event="authenticate", reason="body")
        self.normal_session()

    def test_max_messages_cuts_listing(self):
        self.gw.stop_clean()
        self.gw.opts["max_messages"] = "2"
        self.gw.start()
        self._wait_admin()
        r = self.raw()
        sid = self.session_id(r)
        m0 = self.metrics()
        self.assertTrue(self.pass_reply(r).startswith(b"+OK"))
        self.assertEqual(r.cmd("STAT"), b"+OK 2 %d\r\n" %
                         sum(len(crlf(d)) for _, d in self.be.mailboxes["alice"][:2]))
        self.assert_fault_logged(sid, "listing cut to max_messages")
        self.assert_metric_grew(m0, "pop3gw_listings_truncated_total")
        self.assertEqual(r.cmd("RETR 3"), b"-ERR no such message\r\n")
        self.assertTrue(r.cmd("DELE 2").startswith(b"+OK"))
        self.assertTrue(r.cmd("QUIT").startswith(b"+OK"))
        self.be.wait_for(lambda rs: any(q.event == "quit" for q in rs))
        self.assertEqual(self.be.requests("quit")[-1].body["deleted"],
                         [{"message": 2, "uid": "uid-a2"}])
        self.normal_session()  # two messages left: the listing fits


class UidlLengthTests(BackendFaultCase):
    BACKEND_KW = {"list_uids": False}

    def test_uidl_wrong_length(self):
        self.be.plan("uidl", fb.reply_json({"uids": ["u1", "u2"]}), times=None)
        r = self.login_and_stat()
        sid = self.session_id(r)
        m0 = self.metrics()
        self.assertEqual(r.cmd("UIDL"), SYS_TEMP_UIDL)
        self.assert_fault_logged(sid, "uidl: wrong number of uids")
        self.assertTrue(r.cmd("STAT").startswith(b"+OK 3 "), "session continues")
        # At QUIT with deletions the gateway needs uids: the wrong count
        # means nothing is committed and no quit is sent at all.
        self.assertTrue(r.cmd("DELE 1").startswith(b"+OK"))
        self.assertEqual(r.cmd("QUIT"), NOT_REMOVED)
        self.expect_closed(r)
        self.assert_no_quit()
        self.assert_not_deleted()
        self.assertGreaterEqual(len(self.be.requests("uidl")), 2)
        self.be.clear("uidl")
        self.normal_session()
        # "a uidl count that differs from the listing" is a backend failure
        # (docs/webhooks.md section 9), which is counted in the metrics.
        m1 = self.metrics()
        self.assertGreaterEqual(self.errors(m1, "uidl") - self.errors(m0, "uidl"), 2,
                                "two uidl replies of the wrong length moved no error metric")

    def test_uidl_too_many_and_invalid(self):
        for bad in ({"uids": ["a", "b", "c", "d"]}, {"uids": ["a", "a", "b"]},
                    {"uids": ["a", None, "b"]}, {"uids": "abc"}, {"uids": ["a", "b c", "d"]}):
            with self.subTest(body=bad):
                self.be.plan("uidl", fb.reply_json(bad))
                r = self.login_and_stat()
                sid = self.session_id(r)
                m0 = self.metrics()
                self.assertEqual(r.cmd("UIDL"), SYS_TEMP_UIDL)
                self.assert_fault_logged(sid, "uidl failed|uidl: wrong number of uids")
                self.assert_metric_grew(m0, ERRORS, event="uidl", reason="body")
                r.cmd("QUIT")
                self.normal_session()
        self.assertEqual(self.be.committed, [])

    def test_uidl_500_before_quit(self):
        self.be.plan("uidl", fb.status(500))
        r = self.login_and_stat()
        sid = self.session_id(r)
        m0 = self.metrics()
        self.assertTrue(r.cmd("DELE 2").startswith(b"+OK"))
        self.assertEqual(r.cmd("QUIT"), NOT_REMOVED)
        self.expect_closed(r)
        self.assert_fault_logged(sid, "uidl failed")
        self.assert_metric_grew(m0, ERRORS, event="uidl", reason="status")
        self.assert_no_quit()
        self.normal_session(delete=[2])
        q = self.be.requests("quit")[-1]
        self.assertEqual(q.body["deleted"], [{"message": 2, "uid": "uid-a2"}])


class StreamTests(BackendFaultCase):

    def test_stream_cut_halfway(self):
        data = fb.generated_message(300000)
        self.be.plan("retrieve", fb.cut_message(data, 0.5))
        r = self.login_and_stat()
        sid = self.session_id(r)
        m0 = self.metrics()
        self.assertTrue(r.cmd("DELE 3").startswith(b"+OK"))
        st = r.cmd("RETR 1")
        self.assertTrue(st.startswith(b"+OK"), st)
        rest = self.expect_closed(r, timeout=5)
        self.assertFalse(rest.endswith(b"\r\n.\r\n"), "a cut message must not look complete")
        self.assertLess(len(rest), len(crlf(data)))
        self.assertEqual(len(self.be.requests("retrieve")), 1, "bytes arrived: no retry")
        self.assert_metric_grew(m0, ERRORS, event="retrieve", reason="broken")
        self.assert_fault_logged(sid, "retrieve broke after \\+OK")
        self.assert_no_quit(session=sid)
        self.assert_not_deleted()
        self.normal_session()

    def test_size_mismatch_is_logged(self):
        self.be.plan("retrieve", fb.status(200, b"Subject: short\n\nx\n", "message/rfc822"))
        r = self.login_and_stat()
        sid = self.session_id(r)
        m0 = self.metrics()
        st, body = r.multi("RETR 1")
        self.assertTrue(st.startswith(b"+OK"))
        self.assertEqual(body, b"Subject: short\r\n\r\nx\r\n")
        self.assert_fault_logged(sid, "message size differs from listing")
        self.assert_metric_grew(m0, "pop3gw_size_mismatches_total")
        r.cmd("QUIT")
        self.normal_session()


    def test_close_delimited_body_short_of_listing(self):
        """A body that only the closing of the connection ends (HTTP/1.0, or
        HTTP/1.1 with neither Content-Length nor chunking), cut before its
        listed size: the backend may have died mid-message, so the client
        sees the connection closed, never the final dot."""
        data = self.be.mailboxes["alice"][0][1]
        for http10 in (True, False):
            with self.subTest(http10=http10):
                self.be.plan("retrieve", fb.close_delimited(fraction=0.5, http10=http10))
                r = self.login_and_stat()
                sid = self.session_id(r)
                m0 = self.metrics()
                self.assertTrue(r.cmd("DELE 3").startswith(b"+OK"))
                st = r.cmd("RETR 1")
                self.assertEqual(st, b"+OK %d octets\r\n" % len(crlf(data)))
                rest = self.expect_closed(r, timeout=5)
                self.assertNotIn(b"\r\n.\r\n", b"\r\n" + rest,
                                 "a short message must not look complete")
                self.assertTrue(crlf(data).startswith(rest), rest)
                self.assertLess(len(rest), len(crlf(data)))
                self.assert_fault_logged(sid, "retrieve ended by close short of its listed size")
                self.assert_metric_grew(m0, ERRORS, event="retrieve", reason="broken")
                self.assert_no_quit(session=sid)
                self.assert_not_deleted()
                self.normal_session()
        # TOP of more lines than the message has: the same.
        self.be.plan("retrieve", fb.close_delimited(fraction=0.5))
        r = self.login_and_stat()
        sid = self.session_id(r)
        m0 = self.metrics()
        self.assertTrue(r.cmd("TOP 1 100").startswith(b"+OK"))
        rest = self.expect_closed(r, timeout=5)
        self.assertNotIn(b"\r\n.\r\n", b"\r\n" + rest, "a short message must not look complete")
        self.assert_fault_logged(sid, "retrieve ended by close short of its listed size")
        self.assert_metric_grew(m0, ERRORS, event="retrieve", reason="broken")
        self.normal_session()
        # Close-delimited and whole: delivered with its final dot, also
        # when the stored message has no final line end (the listed size
        # counts the CRLF the gateway adds), and by TOP.
        for http10, stored in ((True, data), (False, data), (True, data.rstrip(b"\n"))):
            with self.subTest(http10=http10, whole=True, final_lf=stored.endswith(b"\n")):
                self.be.plan("retrieve", fb.close_delimited(stored, fraction=1.0, http10=http10))
                self.be.plan("retrieve", fb.close_delimited(stored, fraction=1.0, http10=http10))
                r = self.login_and_stat()
                m0 = self.metrics()
                st, body = r.multi("RETR 1")
                self.assertEqual(st, b"+OK %d octets\r\n" % len(crlf(data)))
                self.assertEqual(body, crlf(data))
                st, body = r.multi("TOP 1 100")
                self.assertTrue(st.startswith(b"+OK"), st)
                self.assertEqual(body, crlf(data))
                self.assertTrue(r.cmd("QUIT").startswith(b"+OK"))
                self.assertEqual(self.errors(self.metrics(), "retrieve"), self.errors(m0, "retrieve"))


class IdleConnectionTests(BackendFaultCase):
    """Kept-alive backend connections that the backend closes while they
    sit idle between calls (a restart, a short keep-alive timeout)."""

    def cpu_seconds(self):
        with open("/proc/%d/stat" % self.gw.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def test_closed_idle_connections_are_dropped_quietly(self):
        self.normal_session()
        self.normal_session(user="bob")
        m0 = self.metrics()
        # Every idle pooled connection is shut down by the backend.
        n0 = len(self.log_lines())
        self.be.cut_connections()
        t0 = self.cpu_seconds()
        time.sleep(0.5)  # a gateway spinning on the closed sockets burns this
        self.assertLess(self.cpu_seconds() - t0, 0.2)
        self.be.clear()
        self.normal_session()
        # The next session found the pool's connections dead and opened new
        # ones: no call failed because of them.
        m1 = self.metrics()
        events = ("authenticate", "list", "retrieve", "quit")
        self.assertEqual({e: self.errors(m1, e) - self.errors(m0, e) for e in events},
                         {e: 0 for e in events})
        # ... and nothing worse than info was logged about it.
        self.assertEqual([l for l in self.log_lines()[n0:]
                          if "level=warn" in l or "level=error" in l], [])


class RetryTests(BackendFaultCase):
    SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    GATEWAY_ARGS = {"backend_secret": SECRET}

    def check_signature(self, req):
        key = base64.b64decode(self.SECRET[len("whsec_"):])
        content = ("%s.%s." % (req.headers["webhook-id"], req.headers["webhook-timestamp"])).encode() + req.raw
        want = "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
        self.assertIn(want, req.headers["webhook-signature"].split())

    def test_list_retried_with_same_id(self):
        # authenticate closes its connection, so list opens a fresh one,
        # which the backend drops without answering.
        self.be.plan("authenticate", fb.default(close=True))
        self.be.plan("list", fb.drop())
        r = self.raw()
        sid = self.session_id(r)
        m0 = self.metrics()
        self.assertTrue(self.pass_reply(r).startswith(b"+OK"))
        self.assertTrue(r.cmd("STAT").startswith(b"+OK 3 "))
        lists = self.be.requests("list")
        self.assertEqual(len(lists), 2, lists)
        self.assertEqual(lists[0].webhook_id, lists[1].webhook_id)
        self.assertEqual(lists[0].raw, lists[1].raw)
        for q in lists:
            self.check_signature(q)
        self.assert_metric_grew(m0, "pop3gw_webhook_retries_total", event="list")
        self.assert_fault_logged(sid, "webhook retry.*event=list")
        r.cmd("QUIT")
        self.normal_session()

    def test_quit_retried_with_same_id_commits_once(self):
        r = self.login_and_stat()
        sid = self.session_id(r)
        m0 = self.metrics()
        self.assertTrue(r.cmd("DELE 1").startswith(b"+OK"))
        # The connection the quit would reuse is cut (a backend restart
        # between calls), and the first fresh attempt is dropped too.
        self.be.plan("quit", fb.drop(), fb.drop())
        self.assertRegex(r.cmd("QUIT"), rb"^\+OK bye, 1 messages? deleted\r\n$")
        qs = self.be.requests("quit")
        # Three sends of the one call: the kept-alive connection turned out
        # dead (libcurl resends once on a fresh connection), that attempt was
        # dropped too (the gateway retries), and the third was answered.
        self.assertEqual(len(qs), 3, qs)
        for q in qs:
            self.be.wait_answered(q)
        self.assertEqual([q.outcome for q in qs], ["closed", "closed", "ok"], qs)
        self.assertEqual(len({q.conn_id for q in qs}), 3, "each send on its own connection")
        self.assertEqual(len({q.webhook_id for q in qs}), 1, qs)
        self.assertEqual(len({q.raw for q in qs}), 1)
        for q in qs:
            self.check_signature(q)
            self.assertEqual(q.body["deleted"], [{"message": 1, "uid": "uid-a1"}])
        self.assertEqual(self.be.committed, [("alice", "uid-a1")])
        self.assert_fault_logged(sid, "webhook retry.*event=quit")
        self.assert_metric_grew(m0, "pop3gw_webhook_retries_total", event="quit")
        self.normal_session()

    def test_authenticate_never_retried_by_gateway(self):
        self.be.plan("authenticate", fb.drop(), times=None)
        r = self.raw()
        sid = self.session_id(r)
        m0 = self.metrics()
        self.assertEqual(self.pass_reply(r), SYS_TEMP_AUTH)
        self.assert_fault_logged(sid, "login not checked: backend error")
        self.assert_metric_grew(m0, ERRORS, event="authenticate", reason="connect")
        auths = self.be.requests("authenticate")
        # libcurl itself may resend once on a kept-alive connection that
        # turned out dead (documented); the gateway never retries it.
        self.assertLessEqual(len(auths), 2, auths)
        self.assertEqual(len({a.webhook_id for a in auths}), 1)
        self.assertEqual(self.metric("pop3gw_webhook_retries_total", event="authenticate"),
                         self.metric("pop3gw_webhook_retries_total", m0, event="authenticate"))
        self.be.clear()
        self.normal_session()



class PoisonedConnectionTests(BackendFaultCase):
    """A reply that breaks its kept-alive connection (a 204 with a body)
    must not hurt the next, unrelated call on it: an idempotent call that
    fails on a reused connection before any response byte is retried on a
    fresh one, and the poisoned connection is dropped. backend_pool=1, so
    the next call reuses that connection."""
    GATEWAY_ARGS = {"backend_pool": "1"}

    def test_next_call_retried_on_fresh_connection(self):
        b = self.login_and_stat()
        sid_b = self.session_id(b)
        a = self.login_and_stat()
        self.assertTrue(a.cmd("DELE 2").startswith(b"+OK"))
        # A's quit gets a 204 (committed) with a body that lands in front
        # of the next reply on that connection.
        self.be.plan("quit", fb.no_content_with_body())
        self.assertRegex(a.cmd("QUIT"), rb"^\+OK")
        self.expect_closed(a)
        quit_req = self.be.requests("quit")[-1]
        self.assertEqual(quit_req.body["deleted"], [{"message": 2, "uid": "uid-a2"}])
        m0 = self.metrics()
        n0 = len(self.log_lines())
        since = self.be.mark()
        # B's next call is unrelated and idempotent: it must just work.
        st, body = b.multi("RETR 1")
        self.assertEqual(st, b"+OK %d octets\r\n" % len(crlf(self.be.mailboxes["alice"][0][1])))
        self.assertEqual(body, crlf(self.be.mailboxes["alice"][0][1]))
        self.assertTrue(b.cmd("QUIT").startswith(b"+OK"))
        rets = self.be.requests("retrieve", since)
        self.assertEqual(len(rets), 2, rets)
        self.assertEqual(rets[0].conn_id, quit_req.conn_id, "the first try reused the connection")
        self.assertNotEqual(rets[1].conn_id, quit_req.conn_id, "the retry used a fresh one")
        self.assertEqual(rets[0].webhook_id, rets[1].webhook_id)
        self.assert_metric_grew(m0, "pop3gw_webhook_retries_total", event="retrieve")
        self.assertEqual(self.errors(self.metrics(), "retrieve"), self.errors(m0, "retrieve"))
        self.assert_fault_logged(sid_b, "webhook retry.*event=retrieve", since=n0)
        # The poisoned connection was dropped, and never used again.
        harness.poll(lambda: not self.be.is_open(quit_req.conn_id),
                     "the poisoned connection to be closed", timeout=5)
        self.assertEqual([q for q in self.be.requests(since=since)
                          if q.conn_id == quit_req.conn_id], [rets[0]])
        self.normal_session()

class CircuitBreakerTests(BackendFaultCase):

    def trip(self):
        """Five failing calls in a row (timeouts, in parallel)."""
        self.be.plan("authenticate", fb.delay(1.6, then=fb.status(500)), times=5)
        rs = [self.raw() for _ in range(5)]
        for r in rs:
            r.send("USER alice\r\nPASS secret1\r\n")
        for r in rs:
            self.assertTrue(r.line().startswith(b"+OK"))
            self.assertEqual(r.line(), SYS_TEMP_AUTH)
        self.wait_log("circuit open", level="warn")

    def test_opens_fails_fast_then_recovers(self):
        self.trip()
        n0 = len(self.be.requests("authenticate"))
        m0 = self.metrics()
        r = self.raw()
        sid = self.session_id(r)
        t0 = time.monotonic()
        self.assertEqual(self.pass_reply(r), SYS_TEMP_AUTH)
        # (a call let through would wait for backend_timeout, 1 s)
        self.assertLess(time.monotonic() - t0, upper(0.5, cap=0.9),
                        "an open circuit answers at once")
        self.assertEqual(len(self.be.requests("authenticate")), n0, "no call while open")
        self.assert_fault_logged(sid, "circuit open")
        self.assert_metric_grew(m0, ERRORS, event="authenticate", reason="connect")
        # After the 2 s cool-down one probe goes through and closes it.
        time.sleep(2.2)
        self.normal_session()
        self.wait_log("circuit closed", level="info")
        self.normal_session()

    def test_cancelled_probe_does_not_keep_circuit_open(self):
        """The probe's client resets its connection while the probe runs:
        the call is cancelled. The circuit must still recover."""
        self.trip()
        time.sleep(2.2)
        self.be.plan("authenticate", fb.delay(0.8))
        a = self.raw()
        a.send("USER alice\r\nPASS secret1\r\n")
        self.assertTrue(a.line().startswith(b"+OK"))
        self.be.wait_for(lambda rs: any(q.event == "authenticate" for q in rs),
                         since=len(self.be.requests()) - 1)
        sid = self.session_id(a)
        rst_close(a.sock)  # the probe is cancelled with its session
        self.wait_log(r"session=%s msg=disconnect\b" % sid)
        self.wait_metric("pop3gw_webhook_inflight", lambda v: v == 0)
        # The backend is healthy now; past another cool-down a login must work.
        time.sleep(2.2)
        r = self.raw()
        st = self.pass_reply(r)
        self.assertTrue(st.startswith(b"+OK"),
                        "circuit stuck open after a cancelled probe: %r" % st)
        self.wait_log("circuit closed", level="info")
        r.cmd("QUIT")

    def test_one_failing_event_does_not_hold_the_others(self):
        """Five failed `list` calls open the circuit for `list` only: the
        next login still asks the backend, and its listing fails at once."""
        self.be.plan("list", fb.status(500), times=5)
        for _ in range(5):
            r = self.raw()
            self.assertEqual(self.pass_reply(r), SYS_TEMP_LIST)
            self.expect_closed(r)
        self.wait_log(r"circuit open.*event=list", level="warn")
        n_auth = len(self.be.requests("authenticate"))
        n_list = len(self.be.requests("list"))
        r = self.raw()
        self.assertEqual(self.pass_reply(r), SYS_TEMP_LIST)
        self.assertEqual(len(self.be.requests("authenticate")), n_auth + 1,
                         "authenticate was held back by the list circuit")
        self.assertEqual(len(self.be.requests("list")), n_list, "no list call while open")
        self.expect_closed(r)
        # Past the cool-down the list probe goes through and closes it.
        time.sleep(2.2)
        self.normal_session()
        self.wait_log("circuit closed.*event=list", level="info")


class InflightTests(BackendFaultCase):
    # Time in the queue counts against a call's deadline: give it room.
    GATEWAY_ARGS = {"max_inflight": "1", "backend_timeout": "4"}

    def test_calls_wait_in_order(self):
        self.be.plan("list", fb.delay(0.2), times=None)
        rs = [self.raw() for _ in range(4)]
        for r in rs:
            r.send("USER alice\r\nPASS secret1\r\n")
        for r in rs:
            self.assertTrue(r.line().startswith(b"+OK"))
            self.assertTrue(r.line().startswith(b"+OK"), "queued calls must run")
        self.assertEqual(self.be.max_concurrent, 1, "max_inflight=1 was exceeded")
        for r in rs:
            r.cmd("QUIT")


class DisconnectEventTests(BackendFaultCase):
    """With events=disconnect, a session that logged in and did not end
    with a successful quit gets exactly one disconnect, with its reason;
    one that quit successfully, or never logged in, gets none."""
    GATEWAY_ARGS = {"events": "disconnect"}

    def disconnects(self, sid):
        return [q.body.get("reason") for q in self.be.requests("disconnect") if q.session == sid]

    def settled(self):
        """Every session is over and no call is running: a connection
        starts its disconnect call before it stops counting as active, so
        any disconnect still to come has reached the backend by now."""
        self.wait_metric("pop3gw_connections_active", lambda v: v == 0)
        self.wait_metric("pop3gw_webhook_inflight", lambda v: v == 0)

    def wait_disconnects(self, sid, n=1):
        self.be.wait_for(lambda rs: sum(1 for q in rs if q.event == "disconnect"
                                        and q.session == sid) >= n)
        self.settled()  # a second one would have arrived by now
        return self.disconnects(sid)

    def test_reasons(self):
        # list fails after a good login: error
        self.be.plan("list", fb.status(500))
        r = self.raw()
        sid = self.session_id(r)
        self.assertEqual(self.pass_reply(r), SYS_TEMP_LIST)
        self.assertEqual(self.wait_disconnects(sid), ["error"])
        # quit fails with deletions pending: error, and no second quit
        self.be.plan("quit", fb.status(500))
        r = self.login_and_stat()
        sid = self.session_id(r)
        r.cmd("DELE 1")
        self.assertEqual(r.cmd("QUIT"), NOT_REMOVED)
        self.assertEqual(self.wait_disconnects(sid), ["error"])
        # the client drops: client_closed
        r = self.login_and_stat()
        sid = self.session_id(r)
        rst_close(r.sock)
        self.assertEqual(self.wait_disconnects(sid), ["client_closed"])
        # a retrieve that breaks after +OK: error
        self.be.plan("retrieve", fb.cut_message(fb.generated_message(100000)))
        r = self.login_and_stat()
        sid = self.session_id(r)
        r.cmd("RETR 1")
        self.expect_closed(r)
        self.assertEqual(self.wait_disconnects(sid), ["error"])
        # a clean QUIT: none; never logged in: none
        r = self.login_and_stat()
        sid_ok = self.session_id(r)
        self.assertTrue(r.cmd("QUIT").startswith(b"+OK"))
        r2 = self.raw()
        sid_anon = self.session_id(r2)
        r2.cmd("QUIT")
        self.settled()
        self.assertEqual(self.disconnects(sid_ok), [])
        self.assertEqual(self.disconnects(sid_anon), [])
        self.assertEqual(self.be.committed, [])

    def test_never_logged_in_gets_none(self):
        r = self.raw()
        sid = self.session_id(r)
        r.cmd("USER alice")
        r.expect_eof(timeout=5)  # login_timeout=2
        self.settled()
        self.assertEqual(self.disconnects(sid), [])
