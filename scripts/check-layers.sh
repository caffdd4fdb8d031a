#!/bin/sh
# Fails when an #include points up a layer or sideways between layers.
# The layers, bottom up: lib/; then webhook/ and admin/, each on lib/ only;
# then gateway/, which holds main and wires the other two in. An include
# only points down (docs/architecture.md).
set -u
cd "$(dirname "$0")/.."
bad=0
check() { # folder, pattern of folders it must not include
    dir=$1 forbidden=$2
    for f in "$dir"/*.c "$dir"/*.h; do
        [ -e "$f" ] || continue
        rows=$(grep -nE "^[[:space:]]*#[[:space:]]*include[[:space:]]+\"($forbidden)/" "$f")
        if [ -n "$rows" ]; then
            printf '%s\n' "$rows" | while IFS= read -r row; do
                printf '%s:%s   <- %s/ may not include %s/\n' "$f" "$row" "$dir" "$forbidden"
            done
            bad=1
        fi
    done
}
check lib 'gateway|webhook|admin|backends|tests'
check webhook 'gateway|admin|backends|tests'
check admin 'gateway|webhook|backends|tests'
check gateway 'backends|tests'
# Includes by bare file name would hide where a header lives.
rows=$(grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]+"[^/"]+"' lib/*.[ch] webhook/*.[ch] admin/*.[ch] gateway/*.[ch])
if [ -n "$rows" ]; then
    printf '%s\n' "$rows" | while IFS= read -r row; do
        printf '%s   <- name the folder: #include "lib/x.h"\n' "$row"
    done
    bad=1
fi
if [ "$bad" -ne 0 ]; then
    echo "check-layers: includes that point up a layer or sideways (see docs/architecture.md)" >&2
    exit 1
fi
echo "check-layers: lib <- webhook, admin <- gateway: every include points down"
