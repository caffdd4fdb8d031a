#!/usr/bin/env python3
"""Soak test: many POP3 sessions with a fault mix against one gateway,
watching its memory and descriptors (`make soak`; not part of CI).

    python3 tests/soak/soak.py --build build [--sessions 200000]
                               [--concurrency 96] [--time-limit 900]

Everything runs on loopback: the gateway (build/pop3gw, 2 workers), a
controllable backend (asyncio HTTP/1.1 keep-alive, in a child process) and
the POP3 clients (asyncio, this process). The backend's behaviour depends on
the user name, so the mix is decided by the client:

  normal      login, STAT, LIST, UIDL, RETR, TOP, DELE, QUIT (60 %)
  capa        CAPA, QUIT without login (8 %)
  abandon     connect and close at once, or reset (5 %)
  drop_retr   login, RETR of a 260 KB message, reset after a few KB (4 %)
  bad_cmds    garbage commands until the gateway closes (3 %)
  auth_fail   a wrong password (5 %)
  be_500      list answers 500: -ERR [SYS/TEMP] and close (3 %)
  be_garbage  authenticate answers garbage: -ERR [SYS/TEMP] (2 %)
  be_slow     authenticate answers after the deadline (1 %)
  be_cut      retrieve cut halfway after +OK: the connection closes (3 %)
  be_quit500  quit answers 500 with deletions pending (2 %)
  slow_reader RETR of 260 KB read in small sips (3 %)
  stalled     RETR of 16 MB not read: send_timeout closes it (0.5 %)
  silent      connect, say nothing: login_timeout closes it (0.5 %)

The gateway's VmRSS and open descriptors (by kind) are sampled before the
load, after a warm-up, half-way, every few seconds, and at the end once
every session is over; the numbers are printed. The run fails when
descriptors other than kept-alive backend connections (at most the pool) did
not return to their starting count, when RSS grew in the second half of the
run by more than the allowance (the allocator keeps freed memory, so RSS
settles on a plateau above the idle start rather than falling back to it),
when a session saw a protocol violation or hung, when the gateway died, or
when it did not exit 0 on SIGTERM.
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import HOST, fd_kinds, free_port  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

MIX = [
    ("normal", 60), ("capa", 8), ("abandon", 5), ("drop_retr", 4), ("bad_cmds", 3),
    ("auth_fail", 5), ("be_500", 3), ("be_garbage", 2), ("be_slow", 1), ("be_cut", 3),
    ("be_quit500", 2), ("slow_reader", 3), ("stalled", 0.5), ("silent", 0.5),
]

PASSWORD = "soak-pw"
SMALL = b"From: soak@example.com\nSubject: small\n\n" + b"hello soak line\n" * 40
MEDIUM = b"From: soak@example.com\nSubject: medium\n\n" + (b"." + b"m" * 70 + b"\n") * 200
LARGE = b"From: soak@example.com\nSubject: large\n\n" + (b"x" * 99 + b"\n") * 2600  # 260 KB


STALLED = LARGE * 64  # 16 MB: more than the kernel's socket buffers hold


def crlf_len(data):
    n = len(data) + data.count(b"\n") - data.count(b"\r\n")
    return n if data.endswith(b"\n") else n + 2


MESSAGES = [("s1", SMALL), ("m1", MEDIUM), ("l1", LARGE)]


# ---------------------------------------------------------------- backend

def backend_main(port, ready):
    """The soak backend (a child process): asyncio HTTP/1.1, keep-alive."""

    def reply(code, body=b"", ctype="application/json"):
        reason = {200: "OK", 404: "Not Found", 500: "Internal Server Error"}.get(code, "X")
        head = ("HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
                % (code, reason, ctype, len(body))).encode()
        return head + body

    listing = json.dumps({"messages": [{"size": crlf_len(d), "uid": u}
                                       for u, d in MESSAGES]}).encode()

    async def handle(reader, writer):
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                n = 0
                for l in lines[1:]:
                    if l.lower().startswith("content-length:"):
                        n = int(l.split(":", 1)[1])
                body = json.loads(await reader.readexactly(n)) if n else {}
                event = path.rsplit("/", 1)[-1]
                user = body.get("user") or ""
                kind = user.split("-", 1)[0]
                if event == "authenticate":
                    if kind == "be_garbage":
                        writer.write(reply(200, b"<html>not json"))
                    elif kind == "be_slow":
                        await asyncio.sleep(1.5)
                        writer.write(reply(200, b'{"ok":true}'))
                    else:
                        ok = body.get("password") == PASSWORD
                        writer.write(reply(200, b'{"ok":true}' if ok else b'{"ok":false}'))
                elif event == "list":
                    writer.write(reply(500, b'{"error":"soak"}') if kind == "be_500"
                                 else reply(200, listing))
                elif event == "uidl":
                    writer.write(reply(200, json.dumps({"uids": [u for u, _ in MESSAGES]}).encode()))
                elif event == "retrieve":
                    uid = body.get("uid")
                    data = dict(MESSAGES).get(uid)
                    if kind == "stalled":
                        data = STALLED
                    if data is None:
                        writer.write(reply(404, b"{}"))
                    elif kind == "be_cut":
                        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: message/rfc822\r\n"
                                     b"Content-Length: %d\r\n\r\n" % len(data) + data[:len(data) // 2])
                        await writer.drain()
                        writer.close()
                        return
                    else:
                        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: message/rfc822\r\n"
                                     b"Content-Length: %d\r\n\r\n" % len(data))
                        for i in range(0, len(data), 65536):
                            writer.write(data[i:i + 65536])
                            await writer.drain()
                elif event == "quit":
                    writer.write(reply(500, b'{"error":"soak"}') if kind == "be_quit500"
                                 else reply(200, b'{"ok":true}'))
                else:
                    writer.write(reply(200, b'{"ok":true}'))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError,
                asyncio.LimitOverrunError):
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def run():
        srv = await asyncio.start_server(handle, HOST, port, backlog=1024)
        ready.set()
        async with srv:
            await srv.serve_forever()

    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    asyncio.run(run())


# ---------------------------------------------------------------- clients

class Violation(Exception):
    """The gateway said something a POP3 client must never see."""


class Client:
    def __init__(self, reader, writer):
        self.r, self.w = reader, writer

    async def line(self):
        l = await self.r.readline()
        if not l:
            raise EOFError()
        if not l.endswith(b"\r\n"):
            raise Violation("line without CRLF: %r" % l[:80])
        if len(l) > 70000:
            raise Violation("overlong line")
        return l

    async def status(self):
        l = await self.line()
        if not (l.startswith(b"+OK") or l.startswith(b"-ERR")):
            raise Violation("not a status line: %r" % l[:80])
        if len(l) > 512:
            raise Violation("status line over 512 octets")
        return l

    async def cmd(self, c):
        self.w.write(c + b"\r\n")
        return await self.status()

    async def body(self):
        n = 0
        while True:
            l = await self.line()
            if l == b".\r\n":
                return n
            if l.startswith(b".") and not l.startswith(b".."):
                raise Violation("unstuffed dot line")
            n += len(l) - (1 if l.startswith(b"..") else 0)

    def reset(self):
        sock = self.w.get_extra_info("socket")
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.w.transport.abort()


def err_temp(st):
    return st.startswith(b"-ERR [SYS/TEMP]")


async def session(kind, port, seq, stats):
    """One session of `kind`; returns an outcome label. Unexpected replies
    raise Violation; tolerated degradations are labelled."""
    user = "%s-%d" % (kind, seq)
    if kind == "abandon":
        reader, writer = await asyncio.open_connection(HOST, port)
        c = Client(reader, writer)
        if seq % 2:
            c.reset()
        else:
            writer.close()
        return "ok"
    if kind == "silent":
        reader, writer = await asyncio.open_connection(HOST, port)
        data = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        if not data.endswith(b"-ERR autologout: idle for too long, closing\r\n"):
            raise Violation("silent client got %r" % data[-80:])
        return "ok"
    if kind == "stalled":
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (HOST, port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
    else:
        reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 20)
    c = Client(reader, writer)
    try:
        g = await c.status()
        if not g.startswith(b"+OK"):
            return "greeting-err"  # e.g. a connection limit
        if kind == "capa":
            if not (await c.cmd(b"CAPA")).startswith(b"+OK"):
                raise Violation("CAPA failed")
            await c.body()
            await c.cmd(b"QUIT")
            return "ok"
        if kind == "bad_cmds":
            writer.write(b"FOO\r\n" * 20)
            data = await asyncio.wait_for(reader.read(), 10)
            if not data.rstrip().endswith(b"closing"):
                raise Violation("bad commands not closed: %r" % data[-80:])
            return "ok"
        if (await c.cmd(b"USER " + user.encode())).startswith(b"-ERR"):
            raise Violation("USER refused")
        pw = b"wrong" if kind == "auth_fail" else PASSWORD.encode()
        st = await c.cmd(b"PASS " + pw)
        if err_temp(st) and kind not in ("be_garbage", "be_slow", "be_500"):
            return "sys-temp"  # the circuit breaker answered for a failing backend
        if kind == "auth_fail":
            if not st.startswith(b"-ERR [AUTH]"):
                raise Violation("wrong password got %r" % st)
            await c.cmd(b"QUIT")
            return "ok"
        if kind in ("be_garbage", "be_slow"):
            if not err_temp(st):
                raise Violation("%s got %r" % (kind, st))
            await c.cmd(b"QUIT")
            return "ok"
        if kind == "be_500":
            if not err_temp(st):
                raise Violation("list 500 got %r" % st)
            await asyncio.wait_for(reader.read(), 10)
            return "ok"
        if err_temp(st):
            return "sys-temp"  # the circuit breaker answered for a failing backend
        if not st.startswith(b"+OK"):
            raise Violation("login got %r" % st)
        if kind == "normal":
            for cmd in (b"STAT", b"LIST", b"UIDL"):
                st = await c.cmd(cmd)
                if not st.startswith(b"+OK"):
                    raise Violation("%s got %r" % (cmd, st))
                if cmd != b"STAT":
                    await c.body()
            which = 1 + seq % 2
            st = await c.cmd(b"RETR %d" % which)
            if st.startswith(b"+OK"):
                n = await c.body()
                if n != crlf_len(MESSAGES[which - 1][1]):
                    raise Violation("RETR %d: %d octets" % (which, n))
            elif not err_temp(st):
                raise Violation("RETR got %r" % st)
            st = await c.cmd(b"TOP 3 2")
            if st.startswith(b"+OK"):
                await c.body()
            await c.cmd(b"DELE 1")
            st = await c.cmd(b"QUIT")
            if not st.startswith(b"+OK") and not err_temp(st):
                raise Violation("QUIT got %r" % st)
            return "ok" if st.startswith(b"+OK") else "sys-temp"
        if kind == "be_quit500":
            await c.cmd(b"DELE 2")
            st = await c.cmd(b"QUIT")
            if st != b"-ERR [SYS/TEMP] some deleted messages not removed\r\n":
                raise Violation("quit 500 got %r" % st)
            return "ok"
        if kind in ("be_cut", "drop_retr", "slow_reader", "stalled"):
            which = b"3" if kind != "be_cut" else b"2"
            st = await c.cmd(b"RETR " + which)
            if err_temp(st):
                return "sys-temp"
            if not st.startswith(b"+OK"):
                raise Violation("RETR got %r" % st)
            if kind == "be_cut":
                data = await asyncio.wait_for(reader.read(), 10)
                if data.endswith(b"\r\n.\r\n"):
                    raise Violation("a cut message ended with the terminator")
                return "ok"
            if kind == "drop_retr":
                await reader.read(8192)
                c.reset()
                return "ok"
            if kind == "stalled":
                # Read nothing (a small receive buffer, set before the
                # connection): send_timeout (2 s) closes the connection.
                writer.transport.pause_reading()
                await asyncio.sleep(4)
                writer.transport.resume_reading()
                tail = b""
                while True:
                    d = await reader.read(65536)
                    if not d:
                        return "ok"  # closed by send_timeout, as it should
                    tail = (tail + d)[-5:]
                    if tail.endswith(b"\r\n.\r\n"):
                        await c.cmd(b"QUIT")
                        return "not-stalled"  # the buffers took it all
            # slow reader: small sips with pauses until the terminator
            tail = b""
            got = 0
            while not tail.endswith(b"\r\n.\r\n"):
                d = await reader.read(4096)
                if not d:
                    raise Violation("slow reader cut off after %d octets" % got)
                got += len(d)
                tail = (tail + d)[-5:]
                await asyncio.sleep(0.002)
            if got - 3 != crlf_len(LARGE):
                raise Violation("slow reader got %d octets" % (got - 3))
            await c.cmd(b"QUIT")
            return "ok"
        raise Violation("unknown kind %s" % kind)
    except EOFError:
        return "closed"
    finally:
        try:
            writer.close()
        except Exception:
            pass


# ---------------------------------------------------------------- gateway

def fd_targets(pid):
    out = []
    for fd in sorted(os.listdir("/proc/%d/fd" % pid), key=int):
        try:
            out.append("%s->%s" % (fd, os.readlink("/proc/%d/fd/%s" % (pid, fd))))
        except OSError:
            pass
    return out


def describe_sockets(pid, known):
    """Prints what `ss` knows of the sockets that were not there at the start."""
    inodes = [t.split("socket:[")[1][:-1] for t in fd_targets(pid)
              if "socket:[" in t and t not in known]
    try:
        out = subprocess.run(["ss", "-anpe"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for ino in inodes:
        lines = [l.strip() for l in out.splitlines() if "ino:%s " % ino in l or l.endswith("ino:" + ino)]
        print("  socket %s: %s" % (ino, " | ".join(lines) or "not listed by ss"))


def sample(pid, backend_port):
    with open("/proc/%d/status" % pid) as f:
        st = dict(l.split(":", 1) for l in f if ":" in l)
    rss = int(st["VmRSS"].split()[0])
    kinds = fd_kinds(pid, backend_port)
    fds = os.listdir("/proc/%d/fd" % pid)
    return {"rss_kb": rss, "fds": len(fds), **kinds}


def metrics(admin_port):
    with urllib.request.urlopen("http://%s:%d/metrics" % (HOST, admin_port), timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out


def fmt_sample(label, t, s):
    return ("%-10s %7.1fs  rss=%7d kB  fds=%4d  (client=%d backend=%d listen=%d other=%d)"
            % (label, t, s["rss_kb"], s["fds"], s["client"], s["backend"], s["listen"],
               s["other"]))


async def drive(args, port, admin_port, gw, backend_port):
    mix = [(k, w) for k, w in MIX if not args.only or k in args.only.split(",")]
    kinds = [k for k, _ in mix]
    weights = [w for _, w in mix]
    rng = random.Random(args.seed)
    stats = {}
    violations = []
    t0 = time.monotonic()
    samples = []
    started = 0
    done = 0
    sem = asyncio.Semaphore(args.concurrency)
    warm = min(args.warmup, args.sessions)
    baseline = {}
    mid = {}

    async def one(kind, seq):
        nonlocal done
        try:
            out = await asyncio.wait_for(session(kind, port, seq, stats), 60)
        except Violation as e:
            out = "VIOLATION"
            if len(violations) < 20:
                violations.append("%s #%d: %s" % (kind, seq, e))
        except asyncio.TimeoutError:
            out = "HUNG"
            if len(violations) < 20:
                violations.append("%s #%d: no progress for 60 s" % (kind, seq))
        except (ConnectionError, OSError) as e:
            out = "conn-error:%s" % e.__class__.__name__
        finally:
            sem.release()
            done += 1
        key = (kind, out)
        stats[key] = stats.get(key, 0) + 1

    async def sampler():
        while True:
            await asyncio.sleep(args.sample_every)
            if gw.poll() is not None:
                return
            s = sample(gw.pid, backend_port)
            samples.append(("during", time.monotonic() - t0, s))
            print(fmt_sample("during", time.monotonic() - t0, s) +
                  "  sessions=%d rate=%.0f/s" % (done, done / (time.monotonic() - t0)),
                  flush=True)

    sampler_task = asyncio.ensure_future(sampler())
    tasks = set()
    limit_hit = False
    for seq in range(args.sessions):
        if time.monotonic() - t0 > args.time_limit:
            limit_hit = True
            break
        if gw.poll() is not None:
            break
        await sem.acquire()
        kind = rng.choices(kinds, weights)[0]
        t = asyncio.ensure_future(one(kind, seq))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
        started += 1
        if started == args.sessions // 2:
            mid.update(sample(gw.pid, backend_port))
            samples.append(("mid", time.monotonic() - t0, dict(mid)))
            print(fmt_sample("half-way", time.monotonic() - t0, mid), flush=True)
        if started == warm:
            await asyncio.gather(*list(tasks), return_exceptions=True)
            await asyncio.sleep(3)
            baseline = sample(gw.pid, backend_port)
            samples.append(("warm", time.monotonic() - t0, baseline))
            print(fmt_sample("after-warm", time.monotonic() - t0, baseline), flush=True)
    if tasks:
        await asyncio.gather(*list(tasks), return_exceptions=True)
    sampler_task.cancel()
    return stats, violations, samples, started, time.monotonic() - t0, baseline, mid, limit_hit


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--sessions", type=int, default=int(os.environ.get("SOAK_SESSIONS", 200000)))
    ap.add_argument("--concurrency", type=int, default=96)
    ap.add_argument("--warmup", type=int, default=10000)
    ap.add_argument("--time-limit", type=float, default=900.0,
                    help="stop starting sessions after this many seconds")
    ap.add_argument("--sample-every", type=float, default=15.0)
    ap.add_argument("--rss-allowance-kb", type=int, default=8192,
                    help="RSS the end may exceed the half-way level by")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", metavar="KIND[,KIND]", help="run only these kinds (diagnosis)")
    args = ap.parse_args()

    exe = os.path.abspath(os.path.join(args.build, "pop3gw"))
    if not os.access(exe, os.X_OK):
        print("no %s: run make" % exe, file=sys.stderr)
        return 2
    backend_port, port, admin_port = free_port(), free_port(), free_port()
    ready = multiprocessing.Event()
    be = multiprocessing.Process(target=backend_main, args=(backend_port, ready), daemon=True)
    be.start()
    if not ready.wait(10):
        print("backend did not start", file=sys.stderr)
        return 2
    logdir = tempfile.mkdtemp(prefix="pop3gw-soak-")
    log_path = os.path.join(logdir, "gateway.log")
    argv = [exe, "--listen=%s:%d" % (HOST, port), "--backend_url=http://%s:%d" % (HOST, backend_port),
            "--admin_listen=%s:%d" % (HOST, admin_port), "--workers=2", "--log_level=warn",
            "--backend_timeout=1", "--login_timeout=1", "--send_timeout=2",
            "--auth_failure_delay=0", "--max_auth_failures_per_ip=0",
            "--max_connections_per_ip=100000", "--max_connections=20000",
            "--max_bad_commands=5", "--shutdown_grace=5", "--hostname=soak.local"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("POP3GW_")}
    logf = open(log_path, "wb")
    gw = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, env=env)
    rc = 1
    end = None
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection((HOST, port), timeout=1) as s:
                    if s.recv(100).startswith(b"+OK"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or gw.poll() is not None:
                print("gateway did not start; log in %s" % log_path, file=sys.stderr)
                return 2
            time.sleep(0.05)
        # One admin request first: libmicrohttpd keeps the socket of its last
        # (closed) connection until the next one arrives, so the start and
        # end samples, both taken after a /metrics request, compare alike.
        metrics(admin_port)
        time.sleep(0.5)
        start = sample(gw.pid, backend_port)
        start_fds = fd_targets(gw.pid)
        print("soak: %d sessions, concurrency %d, gateway pid %d, log %s"
              % (args.sessions, args.concurrency, gw.pid, log_path), flush=True)
        print(fmt_sample("start", 0.0, start), flush=True)
        m0 = metrics(admin_port)
        stats, violations, samples, started, elapsed, warm, mid, limit_hit = asyncio.run(
            drive(args, port, admin_port, gw, backend_port))
        alive = gw.poll() is None
        # Let every session end (timeouts are 1-2 s), then measure.
        if alive:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                m = metrics(admin_port)
                if m.get("pop3gw_connections_active", 1) == 0 and m.get("pop3gw_webhook_inflight", 1) == 0:
                    break
                time.sleep(0.2)
            # Sockets the backend closed may linger in curl's cache for a
            # moment: sample a few times and keep the last.
            for _ in range(10):
                time.sleep(1)
                end = sample(gw.pid, backend_port)
                if end["client"] == 0 and (end["listen"], end["other"]) == (
                        start["listen"], start["other"]):
                    break
            m1 = metrics(admin_port)
        print(fmt_sample("end", elapsed, end) if alive else "gateway DIED (status %s)" % gw.poll())
        print()
        print("sessions run: %d in %.1fs (%.0f/s)%s" % (
            started, elapsed, started / elapsed if elapsed else 0,
            "; time limit reached" if limit_hit else ""))
        print("outcomes by kind:")
        for (kind, out), n in sorted(stats.items()):
            print("  %-12s %-18s %7d" % (kind, out, n))
        if alive:
            print("gateway metrics (delta over the run):")
            for k in sorted(m1):
                d = m1[k] - m0.get(k, 0)
                if d and ("_total" in k and "bucket" not in k) and not k.startswith("pop3gw_webhook_duration"):
                    print("  %-90s %10.0f" % (k, d))
            print("  %-90s %10.0f" % ("pop3gw_connections_active (end)", m1.get("pop3gw_connections_active", -1)))
            print("  %-90s %10.0f" % ("pop3gw_webhook_inflight (end)", m1.get("pop3gw_webhook_inflight", -1)))
        rss_max = max([s["rss_kb"] for _, _, s in samples] + [start["rss_kb"]])
        print()
        print("RSS kB: start %d, after warm-up %s, half-way %s, peak sampled %d, end %s" % (
            start["rss_kb"], warm.get("rss_kb", "-"), mid.get("rss_kb", "-"), rss_max,
            end["rss_kb"] if alive else "-"))
        print("fds: start %d (client %d, backend %d, listen %d, other %d), end %s" % (
            start["fds"], start["client"], start["backend"], start["listen"], start["other"],
            "%d (client %d, backend %d, listen %d, other %d)" % (
                end["fds"], end["client"], end["backend"], end["listen"], end["other"])
            if alive else "-"))
        problems = []
        if not alive:
            problems.append("the gateway died")
        else:
            if end["client"] != 0:
                problems.append("%d client sockets still open" % end["client"])
            if (end["listen"], end["other"]) != (start["listen"], start["other"]):
                print("descriptors at the start: " + " ".join(start_fds))
                print("descriptors at the end:   " + " ".join(fd_targets(gw.pid)))
                describe_sockets(gw.pid, set(start_fds))
                problems.append("descriptors other than backend connections changed: "
                                "listen %d->%d other %d->%d" % (start["listen"], end["listen"],
                                                                start["other"], end["other"]))
            if end["backend"] > 2 * 16:
                problems.append("%d backend connections, more than the pool" % end["backend"])
            # The allocator keeps freed memory (pop3gw sets M_TRIM_THRESHOLD
            # to 16 MB per arena), so RSS settles on a plateau after the
            # warm-up instead of falling back to the idle start. A leak shows
            # as growth in the second half of the run.
            ref = mid.get("rss_kb") or warm.get("rss_kb") or start["rss_kb"]
            if end["rss_kb"] > ref + args.rss_allowance_kb:
                problems.append("RSS grew from %d kB half-way to %d kB at the end (allowance %d kB)"
                                % (ref, end["rss_kb"], args.rss_allowance_kb))
        bad = sum(n for (k, o), n in stats.items() if o in ("VIOLATION", "HUNG"))
        if bad:
            problems.append("%d sessions saw a protocol violation or hung" % bad)
            for v in violations:
                print("  " + v)
        if problems:
            print("SOAK FAILED: " + "; ".join(problems))
            print("gateway log: %s" % log_path)
        else:
            print("SOAK PASSED")
        rc = 1 if problems else 0
    finally:
        if gw.poll() is None:
            gw.send_signal(signal.SIGTERM)
            try:
                code = gw.wait(30)
                print("gateway exit status after SIGTERM: %d" % code)
                if code != 0:
                    rc = 1
            except subprocess.TimeoutExpired:
                gw.kill()
                print("gateway did not stop within 30 s of SIGTERM")
                rc = 1
        be.terminate()
        be.join(5)
        logf.close()
    return rc


if __name__ == "__main__":
    sys.exit(main())
