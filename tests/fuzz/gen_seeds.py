#!/usr/bin/env python3
"""Writes the hand-made seed files tests/fuzz/corpus/NAME/seed-*.

The seeds are committed; this script documents how each was made and
rewrites them (`python3 tests/fuzz/gen_seeds.py`). Inputs the fuzzer found
sit beside them under their SHA-1 names, past crashes under crash-*.
Input layouts are described at the top of each tests/fuzz/fuzz_NAME.c.
"""
import base64
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def b64(raw):
    return base64.b64encode(raw).decode()


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def crlf(*lines):
    return "".join(l + "\r\n" for l in lines).encode()


# ---- session: [flags][L][L control bytes][client stream] ---------------------
APOP, PLAIN_OK, STLS, TLS, LOOP, CONNECT, JSONLOG, STRICT = (1 << i for i in range(8))
PLAIN_B64 = b64(b"\0alice\0secret")
PLAIN_AUTHZ_B64 = b64(b"admin\0alice\0secret")
XOAUTH2_B64 = b64(b"user=alice\x01auth=Bearer tok3n\x01\x01")
OAUTHB_B64 = b64(b"n,a=alice,\x01host=pop.example.org\x01port=110\x01auth=Bearer tok3n\x01\x01")


def session(name, flags, ctl, stream):
    write("session", name, bytes([flags, len(ctl)]) + bytes(ctl) + stream)


FULL = crlf("STAT", "LIST", "LIST 2", "UIDL", "UIDL 1", "RETR 1", "TOP 1 0", "TOP 2 3",
            "DELE 2", "LIST 2", "RSET", "DELE 1", "NOOP", "QUIT")
session("user-pass", PLAIN_OK, [], crlf("CAPA", "USER alice", "PASS secret") + FULL)
session("apop", APOP, [], crlf("APOP alice c4c9334bac560ecc979e58001b3e22fb", "STAT", "QUIT"))
session("auth-plain", TLS, [], crlf("AUTH PLAIN " + PLAIN_B64, "LIST", "QUIT"))
session("auth-plain-continued", TLS | JSONLOG, [],
        crlf("AUTH PLAIN", PLAIN_AUTHZ_B64, "UIDL", "QUIT"))
session("auth-login", LOOP, [], crlf("AUTH LOGIN", b64(b"alice"), b64(b"secret"), "STAT", "QUIT"))
session("auth-login-cancel", TLS, [], crlf("AUTH LOGIN", "*", "AUTH", "QUIT"))
session("xoauth2", TLS, [], crlf("AUTH XOAUTH2 " + XOAUTH2_B64, "UIDL", "QUIT"))
# auth refused ({"ok":false}): OAuth error challenge, client answers, -ERR
session("oauthbearer-refused", TLS, [0, 3],
        crlf("AUTH OAUTHBEARER " + OAUTHB_B64, "", "AUTH OAUTHBEARER " + OAUTHB_B64, "", "QUIT"))
# first chunk ends right after STLS; what follows comes after the handshake
stls = crlf("CAPA", "STLS")
session("stls", STLS, [len(stls)], stls + crlf("CAPA", "USER alice", "PASS secret", "QUIT"))
# bytes sent with STLS in the same packet must be dropped (injection)
session("stls-injection", STLS, [], crlf("STLS", "USER evil", "PASS evil", "STAT"))
# byte-at-a-time delivery
session("one-byte-chunks", PLAIN_OK, [1] * 40, crlf("USER alice", "PASS secret", "STAT", "QUIT"))
# refusals: IN-USE, then a 403 (the backend refusing the webhook: [SYS/TEMP],
# not a failed login), then LOGIN-DELAY; strict limits close after the second refusal
session("refusals", PLAIN_OK | STRICT, [0, 4, 9, 5],
        crlf("USER alice", "PASS a", "USER alice", "PASS b", "USER alice", "PASS c"))
session("auth-temp", PLAIN_OK, [0, 12, 13, 14],
        crlf("USER a", "PASS b", "USER a", "PASS b", "USER a", "PASS b", "QUIT"))
session("connect-refused", CONNECT, [2], crlf("CAPA"))
session("connect-ok", CONNECT | PLAIN_OK, [0], crlf("USER alice", "PASS x", "QUIT"))
# retrieve: OK streamed but broken half way: the session must close
session("retr-broken", PLAIN_OK, [0, 0, 0, 0x10], crlf("USER a", "PASS b", "RETR 1", "NOOP"))
session("retr-404-temp", PLAIN_OK, [0, 0, 0, 1, 2, 3, 7],
        crlf("USER a", "PASS b", "RETR 1", "RETR 2", "TOP 1 1", "RETR 3", "QUIT"))
session("top-bodies", PLAIN_OK, [0, 0, 1, 0x04, 0x08, 0x0c, 0xe4],
        crlf("USER a", "PASS b", "TOP 1 0", "TOP 1 1", "TOP 2 5", "RETR 2", "QUIT"))
# deletions without uids: quit first asks uidl; then a failing quit
session("quit-uidl", PLAIN_OK, [0, 0, 0, 0, 2],
        crlf("USER a", "PASS b", "DELE 1", "DELE 3", "QUIT"))
session("uidl-mismatch", PLAIN_OK, [0, 0, 0, 0x10, 1],
        crlf("USER a", "PASS b", "UIDL", "UIDL", "DELE 1", "QUIT"))
session("list-truncated", PLAIN_OK, [0, 0, 3], crlf("USER a", "PASS b", "LIST", "UIDL", "QUIT"))
session("list-fails", PLAIN_OK, [0, 0, 6], crlf("USER a", "PASS b", "STAT", "QUIT"))
session("long-line", PLAIN_OK, [], b"NOOP " + b"A" * 300 + b"\r\nCAPA\r\n" +
        b"AUTH PLAIN\r\n" + b"B" * 17000 + b"\r\nQUIT\r\n")
session("bad-commands", STRICT, [], b"FOO\r\n\r\nSTAT\r\nUSER\r\nX\x01Y\r\nQUIT\r\n")
session("utf8", PLAIN_OK, [0, 2],
        crlf("UTF8", "USER j\u00fcrgen", "PASS p\u00e4ss") + crlf("STAT", "QUIT"))
session("bad-utf8", PLAIN_OK, [], b"USER \xc3\x28\r\nUSER a\r\nPASS \xff\r\nQUIT\r\n")
session("lf-only-lowercase", PLAIN_OK, [], b"user alice\npass secret\nstat\nlist 1\nquit\n")
session("msgnum-edges", PLAIN_OK, [],
        crlf("USER a", "PASS b", "RETR 0", "RETR 4294967296", "LIST 99999999999",
             "TOP 1 -1", "TOP 1 100000001", "DELE 1", "DELE 1", "RETR 1", "QUIT"))

# ---- command: plain client lines, tried in six prepared states --------------
for name, text in [
    ("capa", crlf("CAPA")),
    ("user-pass", crlf("USER alice", "PASS secret")),
    ("apop", crlf("APOP alice c4c9334bac560ecc979e58001b3e22fb")),
    ("stls", crlf("STLS")),
    ("auth-list", crlf("AUTH")),
    ("auth-plain", crlf("AUTH PLAIN " + PLAIN_B64)),
    ("auth-xoauth2", crlf("AUTH XOAUTH2 " + XOAUTH2_B64)),
    ("sasl-line", crlf(b64(b"alice"), b64(b"secret"))),
    ("sasl-cancel", crlf("*")),
    ("sasl-empty", crlf("=")),
    ("utf8", crlf("UTF8")),
    ("quit", crlf("QUIT")),
    ("stat", crlf("STAT")),
    ("list", crlf("LIST", "LIST 1", "LIST 4294967296")),
    ("uidl", crlf("UIDL", "UIDL 2")),
    ("retr", crlf("RETR 1")),
    ("top", crlf("TOP 1 10")),
    ("dele-rset", crlf("DELE 1", "RSET", "DELE 2", "QUIT")),
    ("noop", crlf("NOOP")),
    ("lowercase-lf", b"retr 2\nlist\n"),
    ("two-spaces", crlf("LIST  1", "TOP 1  2", "USER  a b")),
]:
    write("command", name, text)

# ---- conv: [RETR 0x80 | TOP n][chunking][body] --------------------------------
MSG_CRLF = b"From: a@example.org\r\nSubject: hi\r\n\r\nline 1\r\n.line 2\r\n..\r\n.\r\nend\r\n"
MSG_LF = b"From: a@example.org\nSubject: hi\n\nline 1\n.line 2\n.\nlast, no LF"
for name, top, chunk, body in [
    ("retr-crlf", 0x80, 3, MSG_CRLF),
    ("retr-lf", 0x80, 0, MSG_LF),
    ("retr-cr-edges", 0x80, 0, b"a\rb\n\r\r\n\r\n.\r.\n\rx\r"),
    ("retr-empty", 0x80, 2, b""),
    ("top0", 0, 1, MSG_CRLF),
    ("top1-lf", 1, 2, MSG_LF),
    ("top5-short", 5, 3, MSG_CRLF),
    ("top-no-header-end", 2, 1, b"Subject: x\r\nX-A: y\r\n"),
    ("top-cr-blank", 1, 0, b"Subject: x\r\n\r\r\nbody\r\n\rmore\r\n"),
]:
    write("conv", name, bytes([top, chunk]) + body)

# ---- sasl: [mech | 4 initial | 8 raw][lines] -----------------------------------
PL, LO, XO, OB, INIT, RAW = 0, 1, 2, 3, 4, 8
for name, mode, text in [
    ("plain-b64", PL | INIT, PLAIN_B64),
    ("plain-raw", PL | INIT | RAW, b"\0alice\0secret"),
    ("plain-authzid-raw", PL | RAW, b"admin\0alice\0secret"),
    ("plain-continued", PL, PLAIN_AUTHZ_B64),
    ("plain-empty", PL | INIT, "="),
    ("login", LO, b64(b"alice") + "\n" + b64(b"secret")),
    ("login-raw", LO | RAW, b"alice\nsecret"),
    ("login-cancel", LO, "*"),
    ("xoauth2", XO | INIT, XOAUTH2_B64),
    ("xoauth2-raw", XO | INIT | RAW, b"user=alice\x01auth=Bearer tok3n\x01\x01"),
    ("oauthbearer", OB | INIT, OAUTHB_B64),
    ("oauthbearer-raw", OB | INIT | RAW,
     b"n,a=alice,\x01host=pop.example.org\x01port=110\x01auth=Bearer tok3n\x01\x01"),
    ("oauthbearer-escapes-raw", OB | RAW, b"y,a=al=2Cice=3D,\x01auth=bearer x\x01\x01"),
    ("bad-base64", PL | INIT, "AGFsaWNlAHNlY3JldA="),
    ("mech-name", PL, "oauthbearer"),
]:
    write("sasl", name, bytes([mode]) + (text.encode() if isinstance(text, str) else text))

# ---- proxy: [versions | (max nets - 1) << 2][bytes] ------------------------------
V2SIG = b"\r\n\r\n\x00\r\nQUIT\n"
CLIENT_HELLO = b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03"


def v2(cmd, fam, body):
    return V2SIG + bytes([0x20 | cmd, fam]) + struct.pack(">H", len(body)) + body


V4 = bytes([192, 0, 2, 1, 198, 51, 100, 2]) + struct.pack(">HH", 51522, 995)
V6 = (bytes.fromhex("20010db8000000000000000000000001") +
      bytes.fromhex("20010db8000000000000000000000002") + struct.pack(">HH", 51522, 110))
TLV = bytes([0x02, 0x00, 0x0f]) + b"pop.example.org"  # PP2_TYPE_AUTHORITY
for name, mode, data in [
    ("v1-tcp4", 3, b"PROXY TCP4 192.0.2.1 198.51.100.2 51522 110\r\nUSER a\r\n"),
    ("v1-tcp6", 1, b"PROXY TCP6 2001:db8::1 2001:db8::2 51522 995\r\n" + CLIENT_HELLO),
    ("v1-unknown", 3, b"PROXY UNKNOWN\r\n"),
    ("v1-unknown-addrs", 1, b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n"),
    ("v1-longest", 3, b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                      b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"),
    ("v2-tcp4", 2, v2(1, 0x11, V4) + CLIENT_HELLO),
    ("v2-tcp6-tlv", 3, v2(1, 0x21, V6 + TLV) + b"CAPA\r\n"),
    ("v2-local", 2, v2(0, 0x00, b"")),
    ("v2-local-addrs", 3, v2(0, 0x11, V4)),
    ("v2-udp", 2, v2(1, 0x12, V4)),
    ("trusted-list", 3 | (7 << 2), b"10.0.0.0/8, 192.168.0.0/16,::1, 2001:db8::/32,127.0.0.1"),
    ("trusted-mapped", 3 | (1 << 2), b"::ffff:192.0.2.0/120"),
]:
    write("proxy", name, bytes([mode]) + data)

# ---- wh_json: [max_messages][body] ------------------------------------------------
for name, mx, body in [
    ("auth-ok", 0, '{"ok": true}'),
    ("auth-ok-user-mailbox", 0,
     '{"ok":true,"user":"alice@example.org","mailbox":{"folder":"INBOX","id":42,"tags":[1,2]}}'),
    ("auth-refused", 0, '{"ok":false,"code":"LOGIN-DELAY","message":"[LOGIN-DELAY] wait 5 min"}'),
    ("auth-refused-injection", 0, '{"ok":false,"message":"\\r\\n+OK fake\\u0000 [x] y\\t "}'),
    ("auth-unknown-code", 0, '{"ok":false,"code":"NOPE","message":null}'),
    ("list", 0, '{"messages":[{"size":1234,"uid":"a1"},{"size":0,"uid":"b2"}]}'),
    ("list-no-uids", 2, '{"messages":[{"size":1},{"size":2},{"size":3}]}'),
    ("list-some-uids", 0, '{"messages":[{"size":1},{"size":2,"uid":"x"}]}'),
    ("list-dup-uids", 0, '{"messages":[{"size":1,"uid":"x"},{"size":2,"uid":"x"}]}'),
    ("list-big-size", 0, '{"messages":[{"size":9007199254740992},{"size":-1},{"size":1.5}]}'),
    ("uidl", 0, '{"uids":["a1","b2","~!"]}'),
    ("uidl-bad", 0, '{"uids":["a b","",1,"\\u0000x"]}'),
    ("content", 0, '{"content":"Subject: x\\r\\n\\r\\n.hi\\n"}'),
    ("content-base64", 0, '{"content_base64":"U3ViamVjdDogeA0KDQpoaQ0K"}'),
    ("content-both", 0, '{"content":"a","content_base64":"YQ=="}'),
    ("deep", 0, '{"a":' * 17 + "1" + "}" * 17),
    ("duplicate-keys", 0, '{"ok":true,"ok":false}'),
    ("not-object", 0, '[{"ok":true}]'),
    ("bad-utf8", 0, b'{"ok":true,"user":"\xc3\x28"}'.decode("latin-1")),
    ("sanitize", 0, "  [AUTH] [x]  hello\tworld \x01\x7f" + "z" * 200),
]:
    write("wh_json", name, bytes([mx]) + body.encode("latin-1"))

# ---- wh_content: [body] (a JSON retrieve reply, fed in pieces) ------------------
for name, body in [
    ("text", '{"content":"Subject: x\\r\\n\\r\\n.hi \\u00e9\\ud83d\\ude00\\n"}'),
    ("text-escapes", '{"content":"\\"\\\\\\/\\b\\f\\n\\r\\t\\u0000\\u007F\\u20AC"}'),
    ("text-raw-utf8", b'{"content":"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \x7f"}'),
    ("base64", '{"content_base64":"U3ViamVjdDogeA0KDQpoaQ0K"}'),
    ("base64-padded-spaces", '{"content_base64":" AP8A\\r\\ngA= = \\t"}'),
    ("base64-one-pad", '{"content_base64":"YWI="}'),
    ("base64-bad-pad", '{"content_base64":"YQ=a"}'),
    ("members", '{"id":[1,{"a":"content","b":null}],"content_base64":null,'
                '"cont\\u0065nt":"x\\u0041","n":-1.5e+3,"t":true}'),
    ("both", '{"content":"a","content_base64":"YQ=="}'),
    ("duplicate", '{"content":"a","x":{},"content":"b"}'),
    ("not-string", '{"content":["a"]}'),
    ("lone-surrogate", '{"content":"\\ud800x"}'),
    ("bad-utf8", b'{"content":"\xed\xa0\x80\xc3"}'),
    ("trailing", '{"content":"a"} {'),
    ("truncated", '{"content":"abc'),
    ("deep", '{"content":"a","d":' + "[" * 15 + "]" * 15 + "}"),
    ("whitespace", ' \r\n{ "content" :\t"a" ,\n "x" : [ ] }\n '),
]:
    write("wh_content", name, body if isinstance(body, bytes) else body.encode())

# ---- cfg: [mode][...] -----------------------------------------------------------
FULL_CONFIG = """# pop3gw example
listen = 127.0.0.1:1110, [::1]:1110
listen_tls = *:1995
tls_cert = /etc/pop3gw/cert.pem
tls_key = /etc/pop3gw/key.pem
tls_min_version = 1.3
plaintext_auth = tls-only
hostname = mail.example.org
apop = off
backend_url = https://backend.example.org/pop3/
backend_url_retrieve = http://127.0.0.1:9000/raw
backend_secret = whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw whsec_dGVzdA==
backend_token = s3cr3t-t0ken
backend_timeout = 2.5
backend_timeout_retrieve = 30
backend_pool = 8
max_inflight = 100
events = connect, disconnect
admin_listen = 127.0.0.1:8110
admin_token = adm1n
workers = auto
max_connections = 1000
max_connections_per_ip = 10
login_timeout = 30
idle_timeout = 600
send_timeout = 60
max_bad_commands = 5
shutdown_grace = 0
expire = NEVER
login_delay = 300
auth_failure_delay = 0.5
max_auth_failures = 3
max_auth_failures_per_ip = 20
max_messages = 5000
proxy_protocol = any
proxy_trusted = 10.0.0.0/8, ::1
log_format = json ; a comment after a blank
log_level = debug
"""
write("cfg", "file-full", b"\x02" + FULL_CONFIG.encode())
write("cfg", "file-errors", b"\x02" + b"""listen = 0.0.0.0:110
[section]
backend_token = two words
""")
write("cfg", "file-long-line", b"\x02backend_token = " + b"t" * 600 + b"\n   backend_url=http://x\n")
write("cfg", "file-bad-secret", b"\x02backend_secret = whsec_notbase64!\n")
write("cfg", "load-env-args", b"\x03backend_url = http://127.0.0.1:8080\n\x00"
      b"POP3GW_LISTEN=127.0.0.1:110\nPOP3GW_ADMIN_TOKEN=bad token\nPATH=/bin\n\x00"
      b"--check-config\n--log-level=debug\n--backend-timeout\n3\n--nope=1\n")
KEYS = ["listen", "listen_tls", "tls_cert", "tls_key", "tls_min_version", "plaintext_auth",
        "hostname", "apop", "backend_url"]
set_lines = [
    (0, "[::1]:110,*:995,:143,mail.example.org:110"),
    (1, "256.1.1.1:1"),
    (4, "1.3"),
    (5, "allow"),
    (6, "999.example"),
    (8, "https://127.0.0.1:8080/pop3//"),
    (16, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    (17, "bad token"),
    (21, "0"),
    (31, "connect,disconnect,connect"),
    (34, "65"),
    (39, "599.999"),
    (44, ""),
    (50, "10.0.0.0/33"),
    (53, "unknown_key=1"),
]
write("cfg", "set-keys", b"\x00" + b"\n".join(bytes([k]) + v.encode() for k, v in set_lines))
