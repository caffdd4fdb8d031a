#!/bin/sh
# Creates the demo mailbox served by the reference backend in the
# pop3gw-maildir image: user alice, password wonderland, two messages.
# Usage: sample-mailbox.sh DIR
set -eu
dir=${1:?usage: sample-mailbox.sh DIR}
mkdir -p "$dir/alice/new" "$dir/alice/cur" "$dir/alice/tmp"
printf '# user:password, one a line (pop3gw-maildir --users)\nalice:wonderland\n' > "$dir/users"
now=$(date +%s)
cat > "$dir/alice/new/$now.M1P1.docker" <<MSG
From: pop3gw demo <demo@example.org>
To: alice@example.org
Subject: Welcome to pop3gw
Date: $(date -R)
Message-ID: <$now.1@docker.example.org>

Hello Alice,

this message lives in a Maildir served by the reference backend
(pop3gw-maildir) in its own container. Your mail client speaks POP3 to
pop3gw, and pop3gw turns every command into a JSON webhook to that backend.
MSG
cat > "$dir/alice/new/$((now + 1)).M2P1.docker" <<MSG
From: pop3gw demo <demo@example.org>
To: alice@example.org
Subject: A second message
Date: $(date -R)
Message-ID: <$now.2@docker.example.org>

Delete me with DELE 2 and QUIT, and the backend removes the file.
MSG
