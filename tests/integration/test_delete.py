"""DELE, RSET and QUIT: what is marked, what is committed, what is not.
Each test gets its own mail root, backend and gateway."""

import socket

from harness import Raw, StackTestCase, login


class DeleteTests(StackTestCase):
    SHARED = False

    def quits(self, start=0):
        reqs = self.backend.wait_requests(
            lambda rs: any(r["event"] == "quit" for r in rs), start=start)
        return [r for r in reqs if r["event"] == "quit"]

    def test_dele_hides_message(self):
        msgs = self.msgs()
        p = login(self.gw)
        try:
            self.assertTrue(p.dele(2).startswith(b"+OK"))
            count, octets = p.stat()
            self.assertEqual(count, len(msgs) - 1)
            self.assertEqual(octets, sum(m.size for m in msgs) - msgs[1].size)
            _, listing, _ = p.list()
            self.assertEqual(listing, [b"%d %d" % (i + 1, m.size)
                                       for i, m in enumerate(msgs) if i != 1])
            _, uidls, _ = p.uidl()
            self.assertEqual(uidls, [b"%d %s" % (i + 1, m.uid.encode())
                                     for i, m in enumerate(msgs) if i != 1])
            self.assertErr(p.list, 2)
            self.assertErr(p.uidl, 2)
            self.assertErr(p.dele, 2)
            self.assertErr(p.retr, 2)
            self.assertErr(p.top, 2, 0)
            # RSET restores it.
            self.assertTrue(p.rset().startswith(b"+OK"))
            self.assertEqual(p.stat(), (len(msgs), sum(m.size for m in msgs)))
            self.assertEqual(p.list(2), b"+OK 2 %d" % msgs[1].size)
            _, lines, _ = p.retr(2)
            self.assertEqual(b"\r\n".join(lines) + b"\r\n", msgs[1].expected)
            self.assertTrue(p.quit().startswith(b"+OK"))
        finally:
            p.close()
        # RSET then QUIT deletes nothing.
        self.assertEqual(self.root.uids_on_disk("alice"), sorted(m.uid for m in msgs))
        quits = self.quits()
        self.assertEqual(len(quits), 1)
        self.assertEqual(quits[0]["deleted"], [])

    def test_numbers_do_not_shift(self):
        msgs = self.msgs()
        p = login(self.gw)
        try:
            p.dele(1)
            _, lines, _ = p.retr(2)
            self.assertEqual(b"\r\n".join(lines) + b"\r\n", msgs[1].expected)
            self.assertEqual(p.list(3), b"+OK 3 %d" % msgs[2].size)
            self.assertEqual(p.uidl(2), b"+OK 2 %s" % msgs[1].uid.encode())
            _, lines, _ = p.top(4, 0)
            self.assertIn(b"Subject: already CRLF", lines)
            p.rset()
        finally:
            p.quit()

    def test_dele_quit_removes_files(self):
        msgs = self.msgs()
        start = len(self.backend.requests())
        p = login(self.gw)
        self.assertTrue(p.dele(1).startswith(b"+OK"))
        self.assertTrue(p.dele(3).startswith(b"+OK"))
        self.assertTrue(p.quit().startswith(b"+OK"))
        remaining = [m for i, m in enumerate(msgs) if i not in (0, 2)]
        self.assertEqual(self.root.uids_on_disk("alice"), sorted(m.uid for m in remaining))
        quits = self.quits(start)
        self.assertEqual(len(quits), 1, quits)
        self.assertEqual(sorted(quits[0]["deleted"], key=lambda d: d["message"]),
                         [{"message": 1, "uid": msgs[0].uid},
                          {"message": 3, "uid": msgs[2].uid}])
        # A new session sees the rest, renumbered.
        p = login(self.gw)
        try:
            self.assertEqual(p.stat(), (len(remaining), sum(m.size for m in remaining)))
            _, uidls, _ = p.uidl()
            self.assertEqual(uidls, [b"%d %s" % (i + 1, m.uid.encode())
                                     for i, m in enumerate(remaining)])
            _, lines, _ = p.retr(1)
            self.assertEqual(b"\r\n".join(lines) + b"\r\n", remaining[0].expected)
        finally:
            p.quit()

    def test_dele_single_quit_request(self):
        msgs = self.msgs()
        start = len(self.backend.requests())
        p = login(self.gw)
        p.dele(5)
        p.quit()
        self.assertNotIn(msgs[4].uid, self.root.uids_on_disk("alice"))
        self.assertEqual(len(self.root.uids_on_disk("alice")), len(msgs) - 1)
        quits = self.quits(start)
        self.assertEqual(len(quits), 1, quits)
        self.assertEqual(quits[0]["deleted"], [{"message": 5, "uid": msgs[4].uid}])

    def test_dele_then_drop_removes_nothing(self):
        msgs = self.msgs()
        start = len(self.backend.requests())
        r = Raw(self.gw.port)
        r.login()
        self.assertTrue(r.cmd("DELE 1").startswith(b"+OK"))
        self.assertTrue(r.cmd("DELE 2").startswith(b"+OK"))
        dropped = {q["session"] for q in self.backend.requests()[start:]}
        self.assertEqual(len(dropped), 1)
        r.sock.shutdown(socket.SHUT_RDWR)
        r.close()
        # A fresh session on the single worker: by the time it has logged in
        # (two backend round trips), the gateway has seen the close.
        p = login(self.gw)
        try:
            self.assertEqual(p.stat(), (len(msgs), sum(m.size for m in msgs)))
        finally:
            p.quit()
        self.assertEqual(self.root.uids_on_disk("alice"), sorted(m.uid for m in msgs))
        for q in self.quits(start):
            self.assertNotIn(q["session"], dropped, "a dropped session sent quit: %r" % q)
            self.assertEqual(q["deleted"], [])

    def test_quit_then_close_commits(self):
        """The client sends DELE, QUIT and closes at once: the QUIT line was
        read whole, so the deletion is committed all the same."""
        msgs = self.msgs()
        start = len(self.backend.requests())
        r = Raw(self.gw.port)
        r.login()
        self.assertTrue(r.cmd("DELE 1").startswith(b"+OK"))
        r.send("QUIT\r\n")
        r.close()
        quits = self.quits(start)
        self.assertEqual(quits[0]["deleted"], [{"message": 1, "uid": msgs[0].uid}])
        self.assertEqual(self.root.uids_on_disk("alice"), sorted(m.uid for m in msgs[1:]))

    def test_half_close_after_quit_gets_reply(self):
        """A client that shuts down its sending side after QUIT (as
        `nc -N` does) can still read: it gets the +OK, then the close."""
        msgs = self.msgs()
        start = len(self.backend.requests())
        r = Raw(self.gw.port)
        self.addCleanup(r.close)
        r.login()
        self.assertTrue(r.cmd("DELE 2").startswith(b"+OK"))
        r.send("QUIT\r\n")
        r.sock.shutdown(socket.SHUT_WR)
        quits = self.quits(start)
        self.assertEqual(quits[0]["deleted"], [{"message": 2, "uid": msgs[1].uid}])
        self.assertEqual(r.status()[:3], b"+OK")
        self.assertEqual(r.expect_eof(), b"")


class DisconnectEventTests(StackTestCase):
    """With the optional disconnect event on, a dropped session reports
    client_closed exactly once and never quits."""
    SHARED = False
    GATEWAY_ARGS = {"events": "disconnect"}

    def test_drop_sends_disconnect_not_quit(self):
        msgs = self.msgs()
        r = Raw(self.gw.port)
        r.login()
        self.assertTrue(r.cmd("DELE 1").startswith(b"+OK"))
        sid = self.backend.requests()[-1]["session"]
        r.close()
        reqs = self.backend.wait_requests(
            lambda rs: any(q["event"] == "disconnect" for q in rs))
        disc = [q for q in reqs if q["event"] == "disconnect"]
        self.assertEqual(len(disc), 1, disc)
        self.assertEqual(disc[0]["session"], sid)
        self.assertEqual(disc[0].get("reason"), "client_closed")
        self.assertFalse([q for q in reqs if q["event"] == "quit"])
        self.assertEqual(self.root.uids_on_disk("alice"), sorted(m.uid for m in msgs))

    def test_quit_sends_no_disconnect(self):
        start = len(self.backend.requests())
        p = login(self.gw)
        p.stat()
        p.quit()
        # Then a dropped logged-in session, whose disconnect marks the point
        # by which any disconnect of the first one would have been sent.
        r = Raw(self.gw.port)
        r.login()
        r.close()
        reqs = self.backend.wait_requests(
            lambda rs: any(q["event"] == "disconnect" for q in rs), start=start)
        self.assertEqual(len([q for q in reqs if q["event"] == "disconnect"]), 1, reqs)
