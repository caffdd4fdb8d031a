"""Graceful shutdown under load and faults: SIGTERM stops accepting, lets
commands in flight finish (a QUIT being committed completes), keeps a
logged-in session open so that it may still QUIT and commit its deletions
(any other command gets -ERR [SYS/TEMP] server shutting down), tells a
session that has not logged in and closes it, closes whatever is left
when shutdown_grace (2 s here) ends, and exits 0. No deletion is ever sent
for a session that did not QUIT."""

import socket
import time

import fakebackend as fb
from faultlib import FaultCase, HOST, crlf, read_until_close, sigterm, upper

SHUTTING_DOWN = b"-ERR [SYS/TEMP] server shutting down, try again later\r\n"


class ShutdownTests(FaultCase):
    GATEWAY_ARGS = {"events": "disconnect"}

    def wait_exit(self, limit):
        t0 = time.monotonic()
        rc = self.gw.proc.wait(timeout=upper(15))
        took = time.monotonic() - t0
        self.assertEqual(rc, 0, "exit status after SIGTERM")
        self.assertLess(took, upper(limit), "took %.1fs to exit" % took)
        return took

    def retr_in_flight_at_sigterm(self):
        """A logged-in client whose RETR is waiting on a slow backend when
        SIGTERM arrives."""
        self.be.plan("retrieve", fb.delay(0.7))
        r = self.raw()
        r.login("alice", "secret1")
        r.send(b"RETR 1\r\n")
        self.be.wait_for(lambda rs: any(q.event == "retrieve" for q in rs))
        sigterm(self.gw)
        return r

    def test_quit_being_committed_completes(self):
        self.be.plan("quit", fb.delay(0.6))
        idle = self.raw()
        idle.login("bob", "pass word 2")
        self.assertTrue(idle.cmd("DELE 1").startswith(b"+OK"))
        r = self.raw()
        r.login("alice", "secret1")
        self.assertTrue(r.cmd("DELE 2").startswith(b"+OK"))
        r.send(b"QUIT\r\n")
        self.be.wait_for(lambda rs: any(q.event == "quit" for q in rs))
        t0 = time.monotonic()
        sigterm(self.gw)
        # The QUIT in flight completes with its deletion committed.
        self.assertRegex(r.line(), rb"^\+OK bye, 1 messages? deleted\r\n$")
        r.expect_eof(timeout=2)
        # The idle logged-in session may still QUIT during the grace period;
        # it does not, so it is told and closed when the 2 s are over, and
        # its DELE is dropped.
        self.assertEqual(idle.line(), SHUTTING_DOWN)
        self.assertGreater(time.monotonic() - t0, 1.5, "closed before the grace period ended")
        idle.expect_eof(timeout=upper(2))
        self.wait_exit(3)
        self.assertEqual(self.be.committed, [("alice", "uid-a2")])
        quits = self.be.requests("quit")
        self.assertEqual([q.body["user"] for q in quits], ["alice"], "bob never QUIT")
        # bob's session gets a disconnect (reason shutdown), never a quit.
        disc = [q for q in self.be.requests("disconnect") if q.body.get("user") == "bob"]
        self.assertEqual([d.body["reason"] for d in disc], ["shutdown"])

    def test_retrieve_in_flight_finishes(self):
        r = self.retr_in_flight_at_sigterm()
        self.assertTrue(r.status().startswith(b"+OK"))
        self.assertEqual(r.body(), crlf(self.be.mailboxes["alice"][0][1]))
        # Closed when the grace period ends (it could still have QUIT).
        self.assertEqual(r.line(), SHUTTING_DOWN)
        r.expect_eof(timeout=2)
        self.wait_exit(3)
        self.assert_no_quit()

    def test_quit_during_grace_commits(self):
        """SIGTERM with a DELE pending, then QUIT within the grace period:
        +OK, and the quit event carries the deletion."""
        r = self.raw()
        r.login("alice", "secret1")
        self.assertTrue(r.cmd("DELE 2").startswith(b"+OK"))
        n0 = len(self.log_lines())
        sigterm(self.gw)
        self.wait_log(r"msg=stopping\b", since=n0)
        # Any other command is refused now, and the session stays open.
        self.assertEqual(r.cmd("STAT"), SHUTTING_DOWN)
        self.assertEqual(r.cmd("NOOP"), SHUTTING_DOWN)
        self.assertRegex(r.cmd("QUIT"), rb"^\+OK bye, 1 messages? deleted\r\n$")
        r.expect_eof(timeout=2)
        self.wait_exit(3)
        quits = self.be.requests("quit")
        self.assertEqual(len(quits), 1)
        self.assertEqual([d["message"] for d in quits[0].body["deleted"]], [2])
        self.assertEqual(self.be.committed, [("alice", "uid-a2")])

    def test_not_logged_in_told_and_closed_at_once(self):
        r = self.raw()
        self.assertTrue(r.cmd("USER alice").startswith(b"+OK"))
        t0 = time.monotonic()
        sigterm(self.gw)
        self.assertEqual(r.line(), SHUTTING_DOWN)
        # (told at once, not when the 2 s grace period ends)
        self.assertLess(time.monotonic() - t0, upper(0.5, cap=1.5))
        r.expect_eof(timeout=upper(2))
        self.wait_exit(3)

    def test_pipelined_commands_after_sigterm_are_not_run(self):
        """Commands that arrive after the drain began are not started, but
        QUIT: a DELE+QUIT batch sent too late gets the DELE refused and a
        QUIT that commits nothing."""
        n0 = len(self.log_lines())
        r = self.retr_in_flight_at_sigterm()
        self.wait_log(r"msg=stopping\b", since=n0)
        r.send(b"DELE 1\r\nQUIT\r\n")
        self.assertTrue(r.status().startswith(b"+OK"))
        r.body()
        self.assertEqual(r.line(), SHUTTING_DOWN)
        self.assertTrue(r.line().startswith(b"+OK"))
        r.expect_eof(timeout=2)
        self.wait_exit(3)
        self.assertEqual([q.body["deleted"] for q in self.be.requests("quit")], [[]])
        self.assert_not_deleted()

    def test_grace_period_ends_stuck_sessions(self):
        """A call that outlives shutdown_grace: the session is closed at the
        end of the grace period, nothing is deleted, exit 0."""
        self.gw.stop_clean()
        self.gw.opts["backend_timeout"] = "10"
        self.gw.start()
        self._wait_admin()
        self.be.plan("retrieve", fb.hang())
        r = self.raw()
        r.login("alice", "secret1")
        self.assertTrue(r.cmd("DELE 2").startswith(b"+OK"))
        r.send(b"RETR 1\r\n")
        self.be.wait_for(lambda rs: any(q.event == "retrieve" for q in rs))
        t0 = time.monotonic()
        sigterm(self.gw)
        data, closed = read_until_close(r.sock, 5)
        self.assertTrue(closed)
        took = time.monotonic() - t0
        self.assertGreater(took, 1.5)
        self.assertLess(took, upper(3.5, cap=8))  # not backend_timeout (10 s)
        self.wait_exit(2)
        self.assert_no_quit()
        self.assert_not_deleted()
        self.assertIn("shutdown grace period over", self.gw.log())

    def test_slow_reader_at_shutdown(self):
        """A client that stops reading mid-RETR does not hold the process:
        it is closed by send_timeout or the grace period."""
        self.be.plan("retrieve", fb.stream_message(30 * 1024 * 1024))
        r = self.raw(rcvbuf=8192)
        r.login("alice", "secret1")
        r.send(b"RETR 1\r\n")
        self.be.wait_for(lambda rs: any(q.event == "retrieve" for q in rs))
        time.sleep(0.3)
        sigterm(self.gw)
        self.wait_exit(3.5)
        self.assert_no_quit()

    def test_new_connections_not_served_while_draining(self):
        self.be.plan("retrieve", fb.hang())
        self.gw.stop_clean()
        self.gw.opts["backend_timeout"] = "10"
        self.gw.start()
        self._wait_admin()
        busy = self.raw()
        busy.login("alice", "secret1")
        busy.send(b"RETR 1\r\n")
        self.be.wait_for(lambda rs: any(q.event == "retrieve" for q in rs))
        n0 = len(self.log_lines())
        sigterm(self.gw)
        # (the log also holds the first start's lines: only newer ones count)
        self.wait_log(r"msg=stopping\b", since=n0)
        # Not greeted: refused, or held unanswered until the process exits.
        try:
            s = socket.create_connection((HOST, self.gw.port), timeout=2)
        except OSError:
            s = None
        if s is not None:
            data, closed = read_until_close(s, 5)
            s.close()
            self.assertFalse(data.startswith(b"+OK"), "a new session was greeted while draining")
        self.wait_exit(4)
