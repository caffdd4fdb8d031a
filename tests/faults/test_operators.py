"""What operators see and do is true: webhook latency runs to the end of
the reply, one info line per ended session, SIGHUP re-reads the whole
configuration (and refuses a bad one), and login limits count every
method, OAuth included."""

import base64
import os
import signal
import time

import fakebackend as fb
from faultlib import FaultCase, raw_from, upper
from harness import Gateway, new_dir

DURATION = "pop3gw_webhook_duration_seconds_sum"
FIRST_BYTE = "pop3gw_webhook_retrieve_first_byte_seconds_sum"


def xoauth2(user, token):
    return base64.b64encode(("user=%s\x01auth=Bearer %s\x01\x01" % (user, token)).encode()).decode()


class LatencyTests(FaultCase):

    def test_latency_runs_to_the_end_of_the_reply(self):
        """A backend that sends its headers at once and its list body 0.5 s
        later: the login takes 0.5 s, and the metric says so."""
        m0 = self.metrics()
        self.be.plan("list", fb.headers_then(0.5))
        r = self.raw()
        self.assertTrue(r.cmd("USER alice").startswith(b"+OK"))
        t0 = time.monotonic()
        self.assertTrue(r.cmd("PASS secret1").startswith(b"+OK"))
        took = time.monotonic() - t0
        self.assertGreater(took, 0.5)
        m1 = self.metrics()
        grew = self.metric(DURATION, m1, event="list") - self.metric(DURATION, m0, event="list")
        self.assertGreaterEqual(grew, 0.45, "list latency grew by %.4f s only" % grew)
        r.cmd("QUIT")

    def test_retrieve_first_byte_and_whole_transfer(self):
        """retrieve: the time to the headers and the whole transfer are two
        measures; a body that comes 0.5 s after the headers shows in the
        second only."""
        r = self.login_and_stat()
        m0 = self.metrics()
        self.be.plan("retrieve", fb.headers_then(0.5))
        st, body = r.multi("RETR 1")
        self.assertTrue(st.startswith(b"+OK"), st)
        m1 = self.metrics()
        whole = self.metric(DURATION, m1, event="retrieve") - \
            self.metric(DURATION, m0, event="retrieve")
        first = self.metric(FIRST_BYTE, m1) - self.metric(FIRST_BYTE, m0)
        self.assertGreaterEqual(whole, 0.45)
        self.assertGreater(first, 0)
        self.assertLess(first, 0.4, "the time to the headers counted the body's wait")
        r.cmd("QUIT")


class TopEndsItsCallTests(FaultCase):
    """TOP stops the retrieve once it has its lines. When the whole reply
    is in before the +OK has gone out (a small message), the stop happens
    as the body is released to the session; the call must still end then,
    not at backend_timeout_retrieve: no call left in flight, no 'webhook
    timed out' line, and each call timed."""

    GATEWAY_ARGS = {"backend_timeout_retrieve": "10"}
    COUNT = "pop3gw_webhook_duration_seconds_count"

    def test_top_of_small_messages(self):
        r = self.login_and_stat()
        m0 = self.metrics()
        lines0 = len(self.log_lines())
        for n in (1, 2, 3, 1, 2, 3):
            st, body = r.multi("TOP %d 0" % n)
            self.assertTrue(st.startswith(b"+OK"), st)
            self.assertTrue(body.endswith(b"\r\n\r\n"), body)  # the headers and the blank line
            self.wait_metric("pop3gw_webhook_inflight", lambda v: v == 0, timeout=1)
        m1 = self.metrics()
        self.assertEqual(self.metric(self.COUNT, m1, event="retrieve")
                         - self.metric(self.COUNT, m0, event="retrieve"), 6)
        self.assertEqual(self.metric("pop3gw_webhook_calls_total", m1, event="retrieve")
                         - self.metric("pop3gw_webhook_calls_total", m0, event="retrieve"), 6)
        self.assertEqual([l for l in self.log_lines()[lines0:] if "timed out" in l], [])
        self.assertTrue(r.cmd("QUIT").startswith(b"+OK"))
        self.normal_session()


class SessionLineTests(FaultCase):
    GATEWAY_ARGS = {"log_level": "info"}

    def test_one_info_line_per_session(self):
        r = self.login_and_stat()
        st, body = r.multi("RETR 1")
        self.assertTrue(st.startswith(b"+OK"))
        st, top = r.multi("TOP 2 0")
        self.assertTrue(st.startswith(b"+OK"))
        self.assertTrue(r.cmd("DELE 3").startswith(b"+OK"))
        self.assertTrue(r.cmd("QUIT").startswith(b"+OK"))
        line = self.wait_log(r"msg=\"session ended\" user=alice .*reason=quit", level="info")
        self.assertIn("user=alice", line)
        self.assertIn("retr=1/%d" % len(body), line)
        self.assertIn("top=1/%d" % len(top), line)
        self.assertIn("dele=1", line)
        self.assertIn("committed=yes", line)
        self.assertIn("commands=", line)
        self.assertRegex(line, r"duration=\d+\.\d{3}")
        self.assertIn("tls=0", line)
        # A session that drops commits nothing, and says why it ended.
        r = self.login_and_stat()
        self.assertTrue(r.cmd("DELE 1").startswith(b"+OK"))
        r.close()
        line = self.wait_log(r"msg=\"session ended\" user=alice .*reason=client_closed",
                             level="info")
        self.assertIn("dele=1", line)
        self.assertIn("committed=no", line)
        self.assertEqual(self.be.committed, [("alice", "uid-a3")], "the dropped DELE was committed")


class OAuthLimitTests(FaultCase):
    """A refused token counts as a failed login, and waits out
    auth_failure_delay, before the error challenge goes out."""

    def auth(self, r, token):
        """AUTH XOAUTH2 with an initial response: the first line back (a
        challenge "+ ..." or a status line)."""
        r.send("AUTH XOAUTH2 %s\r\n" % xoauth2("alice", token))
        return r.line()

    def test_hanging_up_after_the_challenge_still_counts(self):
        self.gw.stop_clean()
        self.gw.opts["max_auth_failures_per_ip"] = "3"
        self.gw.start()
        self._wait_admin()
        n0 = len(self.be.requests("authenticate"))
        for i in range(3):
            r = raw_from(self.gw.port, "127.0.0.41")
            self.assertTrue(self.auth(r, "bad%d" % i).startswith(b"+ "))
            r.close()  # hangs up instead of answering the challenge
        self.assertEqual(len(self.be.requests("authenticate")) - n0, 3)
        # The 4th attempt, with the right token, is refused without asking.
        # (an OAuth refusal, even this one, goes through the error challenge)
        r = raw_from(self.gw.port, "127.0.0.41")
        self.assertTrue(self.auth(r, fb.DEFAULT_TOKENS["alice"]).startswith(b"+ "))
        r.send(b"\r\n")
        self.assertEqual(r.line(),
                         b"-ERR [AUTH] too many failed logins from your address, try again later\r\n")
        self.assertEqual(len(self.be.requests("authenticate")) - n0, 3, "the backend was asked")
        r.close()
        self.normal_session()

    def test_bad_answers_to_the_challenge_do_not_keep_the_connection(self):
        self.gw.stop_clean()
        self.gw.opts["max_auth_failures"] = "2"
        self.gw.start()
        self._wait_admin()
        r = self.raw()
        for i in range(2):
            self.assertTrue(self.auth(r, "bad%d" % i).startswith(b"+ "))
            r.send(b"\x01\x02 not an answer\r\n")  # an invalid line
            self.assertTrue(r.line().startswith(b"-ERR [AUTH]"))
        self.assertEqual(r.line(), b"-ERR [AUTH] too many failed logins, closing\r\n")
        r.expect_eof(timeout=upper(2))
        self.normal_session()

    def test_delay_before_the_challenge(self):
        self.gw.stop_clean()
        self.gw.opts["auth_failure_delay"] = "1"
        self.gw.start()
        self._wait_admin()
        r = self.raw()
        t0 = time.monotonic()
        self.assertTrue(self.auth(r, "bad").startswith(b"+ "))
        took = time.monotonic() - t0
        self.assertGreaterEqual(took, 0.95, "the challenge came before auth_failure_delay")
        self.assertLess(took, upper(2.5))
        t1 = time.monotonic()
        r.send(b"\r\n")
        self.assertTrue(r.line().startswith(b"-ERR [AUTH]"))
        self.assertLess(time.monotonic() - t1, 0.5, "the -ERR waited out the delay twice")
        r.cmd("QUIT")


class ReloadTests(FaultCase):
    """SIGHUP re-reads the whole configuration from the file it started
    with: keys that can change apply to new sessions and calls, keys that
    need a restart keep their value and are named, and a configuration
    that does not validate is refused whole."""

    def setUp(self):
        super().setUp()
        self.gw.stop_clean()
        self.other = fb.FakeBackend().start()
        self.addCleanup(self.other.stop)
        self.conf = os.path.join(new_dir("conf"), "pop3gw.conf")
        self.write_conf(self.be.url, "info")
        self.gw.opts["backend_url"] = None  # from the file
        self.gw.opts["log_level"] = None
        self.gw.opts["config"] = self.conf
        self.gw.start()
        self._wait_admin()

    def write_conf(self, url, level, extra=""):
        with open(self.conf, "w") as f:
            f.write("backend_url = %s\nlog_level = %s\n%s" % (url, level, extra))

    def hup(self, wait_for):
        n = len(self.log_lines())
        os.kill(self.gw.pid, signal.SIGHUP)
        return self.wait_log(wait_for, since=n)

    def test_runtime_keys_apply_to_new_sessions(self):
        self.write_conf(self.other.url, "debug")
        self.hup("configuration reloaded")
        n0 = len(self.other.requests("authenticate"))
        self.normal_session()
        self.assertGreater(len(self.other.requests("authenticate")), n0,
                           "the new backend_url was not used")
        self.wait_log(r"level=debug", since=0)

    def test_restart_keys_keep_their_value_and_are_named(self):
        # (listen, workers and admin_listen come from flags here, which
        # beat the file; spool_dir and user do not)
        spool = new_dir("spool")
        self.write_conf(self.be.url, "info", "spool_dir = %s\nuser = nobody\n" % spool)
        line = self.hup("need a restart")
        self.assertIn("spool_dir", line)
        self.assertIn("user", line)
        self.normal_session()

    def test_invalid_configuration_is_refused_whole(self):
        self.write_conf(self.other.url, "debug", "backend_timeout = -3\n")
        line = self.hup("configuration refused")
        self.assertIn("backend_timeout", line)
        n0 = len(self.other.requests())
        self.normal_session()
        self.assertEqual(len(self.other.requests()), n0, "a refused file changed backend_url")
