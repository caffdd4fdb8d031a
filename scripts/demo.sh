#!/bin/sh
# make demo: a sample mailbox, the reference backend and the gateway on
# 127.0.0.1, in the foreground until Ctrl-C. The banner prints the settings
# for curl, fetchmail, mpop and other mail clients; tests/integration/
# test_demo.py runs the printed fetchmail and mpop commands as they are.
set -eu
B=${B:-build}
DIR=${DEMO_DIR:-$B/demo}
POP3_PORT=${POP3_PORT:-1110}
BACKEND_PORT=${BACKEND_PORT:-8025}
ADMIN_PORT=${ADMIN_PORT:-8110}
PASSWORD=wonderland

mkdir -p "$DIR/mail/alice/new" "$DIR/mail/alice/cur" "$DIR/mail/alice/tmp" "$DIR/fetched"
DIR=$(cd "$DIR" && pwd) # printed paths work from any directory
printf 'alice:%s\n' "$PASSWORD" > "$DIR/mail/users"
if [ -z "$(find "$DIR/mail/alice/new" "$DIR/mail/alice/cur" -type f | head -n 1)" ]; then
    now=$(date +%s)
    cat > "$DIR/mail/alice/new/$now.M1P1.demo" <<MSG
From: pop3gw demo <demo@example.org>
To: alice@example.org
Subject: Welcome to pop3gw
Date: $(date -R)
Message-ID: <$now.1@demo.example.org>

Hello Alice,

this message lives in a Maildir served by the reference backend
(pop3gw-maildir). Your mail client speaks POP3 to pop3gw, and pop3gw
turns every command into a JSON webhook to that backend.
.
A line with a single dot, like the one above, is dot-stuffed on the wire.
MSG
    cat > "$DIR/mail/alice/new/$((now + 1)).M2P1.demo" <<MSG
From: pop3gw demo <demo@example.org>
To: alice@example.org
Subject: A second message
Date: $(date -R)
Message-ID: <$now.2@demo.example.org>

Delete me with DELE 2 and QUIT, and the backend removes the file.
MSG
fi

pids=""
cleanup() {
    trap - INT TERM EXIT
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    for p in $pids; do wait "$p" 2>/dev/null || true; done
    echo "demo stopped"
}
trap 'cleanup; exit 0' INT TERM
trap cleanup EXIT

"$B/pop3gw-maildir" --listen=127.0.0.1:$BACKEND_PORT --root="$DIR/mail" &
pids="$!"
"$B/pop3gw" --listen=127.0.0.1:$POP3_PORT --backend_url=http://127.0.0.1:$BACKEND_PORT \
    --admin_listen=127.0.0.1:$ADMIN_PORT --log_level=info &
pids="$pids $!"

# Wait until the gateway greets.
i=0
until curl -s --max-time 1 "pop3://127.0.0.1:$POP3_PORT/" -u "alice:$PASSWORD" >/dev/null 2>&1; do
    i=$((i + 1))
    if [ $i -gt 50 ]; then echo "the gateway did not start" >&2; exit 1; fi
    sleep 0.1
done

# fetchmail: the demo has no TLS, so sslproto '' (else fetchmail tries STLS
# and stops); keep leaves the mail on the server; each message becomes a
# file in $DIR/fetched. Its id and pid files stay in $DIR too.
POLL="poll 127.0.0.1 service $POP3_PORT protocol pop3 auth password user \"alice\" password \"$PASSWORD\" sslproto '' keep mda \"cat > \$(mktemp $DIR/fetched/fetchmail.XXXXXX)\""
(
    umask 077 # fetchmail wants its rc file private (it holds a password)
    printf '# fetchmail -f %s\nset idfile "%s/fetchmail.ids"\nset pidfile "%s/fetchmail.pid"\n%s\n' \
        "$DIR/fetchmailrc" "$DIR" "$DIR" "$POLL" > "$DIR/fetchmailrc"
)
# mpop: no TLS (--tls=off) and USER/PASS (--auth=user; else "cannot use a
# secure authentication method"); the messages go to an mbox file.
MPOP="mpop --host=127.0.0.1 --port=$POP3_PORT --tls=off --auth=user --user=alice --passwordeval='echo $PASSWORD' --keep=on --delivery=mbox,$DIR/fetched/mpop.mbox --uidls-file=$DIR/mpop.uidls"

cat <<TXT

  pop3gw demo is running. Mail lives in $DIR/mail/alice (a Maildir).

  Dashboard:  http://127.0.0.1:$ADMIN_PORT/
  Status:     curl http://127.0.0.1:$ADMIN_PORT/status

  The account: POP3 server 127.0.0.1, port $POP3_PORT, no encryption (this
  demo has no certificate, so no TLS and no STLS), plain password login
  (USER/PASS), user alice, password $PASSWORD. A password in clear is
  accepted only because the client is on this machine.

  curl:
    curl -u alice:$PASSWORD pop3://127.0.0.1:$POP3_PORT/      list the messages
    curl -u alice:$PASSWORD pop3://127.0.0.1:$POP3_PORT/1     read message 1

  fetchmail (sslproto '' turns STLS off; keep leaves the mail on the server):
    fetchmail -f $DIR/fetchmailrc
  which holds this line, ready for a ~/.fetchmailrc:
    $POLL

  mpop (--tls=off, and --auth=user for USER/PASS):
    $MPOP

  Thunderbird, Evolution and other mail clients: incoming mail POP3, server
  127.0.0.1, port $POP3_PORT, connection security None, authentication
  "Normal password" (plain password), user alice, password $PASSWORD.

  Python:
    python3 -c "import poplib; p=poplib.POP3('127.0.0.1',$POP3_PORT); p.user('alice'); p.pass_('$PASSWORD'); print(p.stat())"

  Fetched mail lands in $DIR/fetched. Press Ctrl-C to stop.

TXT
wait
