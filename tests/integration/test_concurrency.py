"""Many simultaneous sessions on one worker."""

import threading

from harness import StackTestCase, login

SESSIONS = 100


class ConcurrencyTests(StackTestCase):
    GATEWAY_ARGS = {"max_connections_per_ip": "1000", "max_connections": "2000"}

    def test_100_concurrent_sessions(self):
        msgs = self.msgs()
        want_uidl = [b"%d %s" % (i + 1, m.uid.encode()) for i, m in enumerate(msgs)]
        want_stat = (len(msgs), sum(m.size for m in msgs))
        barrier = threading.Barrier(SESSIONS, timeout=60)
        errors = []
        done = [0]
        lock = threading.Lock()

        def session(n):
            try:
                p = login(self.gw, timeout=60)
                try:
                    barrier.wait()  # all logged in at once, then all work at once
                    if p.stat() != want_stat:
                        raise AssertionError("STAT %r" % (p.stat(),))
                    _, uidls, _ = p.uidl()
                    if uidls != want_uidl:
                        raise AssertionError("UIDL %r" % uidls)
                    _, lines, _ = p.retr(1)
                    if b"\r\n".join(lines) + b"\r\n" != msgs[0].expected:
                        raise AssertionError("RETR 1 differs")
                    resp = p.quit()
                    if not resp.startswith(b"+OK"):
                        raise AssertionError("QUIT %r" % resp)
                finally:
                    p.close()
                with lock:
                    done[0] += 1
            except Exception as e:  # collected and reported below
                barrier.abort()
                with lock:
                    errors.append("session %d: %r" % (n, e))

        threads = [threading.Thread(target=session, args=(i,)) for i in range(SESSIONS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertFalse(errors, "\n".join(errors[:10]))
        self.assertEqual(done[0], SESSIONS)
        self.gw.check_alive("after the concurrent sessions")
