#!/usr/bin/env bash
# Regenerates link/hot-functions.txt: the functions touchgate runs at
# start-up and on its request paths, which build.rs has the linker place
# together at the front of the executable code. Clustered, they fill fewer
# pages, so the kernel maps (and counts in RSS) less of the binary; see
# docs/performance.md, "RSS idle".
#
#   bash link/generate.sh          # needs valgrind, nginx, curl, python3
#
# It runs the release binary under callgrind, on 127.0.0.1 only, in front
# of the benches' nginx upstream (benches/common.sh: ports, work dir and
# cleanup too): from start to idle with three configurations, once more on
# the spool the last one left, then through a request mix (plain GET,
# landing, return visit, form post, HTTP/2, c.js, ingest, admin).
# Start-up functions come first, then the request paths. A stale list is
# harmless: names that no longer exist match nothing, and new functions
# are placed in the ordinary .text.
set -euo pipefail
# shellcheck source=../benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../benches/common.sh"
cd "$ROOT"
need valgrind "apt-get install valgrind"
need "$NGINX" "apt-get install nginx-light"
need curl "apt-get install curl"
need python3 "apt-get install python3"
check_ports "$UP_PORT" "$TG_PORT" "$TG_ADMIN_PORT"
setup_work
cargo build --release --bin touchgate
BIN=$ROOT/target/release/touchgate
start_upstream

# The shipped default configuration (every section, a form and an ingest
# rule), moved to loopback ports and the work dir; a minimal one, since
# sections left out run their defaults' code instead; and the one
# benches/load.sh runs (spool and events straight in the work dir).
sed -e "s#127.0.0.1:8080#127.0.0.1:$TG_PORT#" -e "s#http://127.0.0.1:3000#http://127.0.0.1:$UP_PORT#" \
    -e "s#127.0.0.1:9901#127.0.0.1:$TG_ADMIN_PORT#" -e "s#data/#$WORK/data/#" \
    config/touchgate.toml >"$WORK/default.toml"
grep -q "$WORK/data/spool" "$WORK/default.toml" || die "config/touchgate.toml changed shape"
cat >"$WORK/minimal.toml" <<EOF
[proxy]
listen = "127.0.0.1:$TG_PORT"
upstream = "http://127.0.0.1:$UP_PORT"
[admin]
listen = "127.0.0.1:$TG_ADMIN_PORT"
[spool]
dir = "$WORK/data/spool"
EOF
write_touchgate_config
mv "$WORK/touchgate.toml" "$WORK/bench.toml"

wait_admin() {
    for _ in $(seq 120); do
        curl -fs -o /dev/null "http://127.0.0.1:$TG_ADMIN_PORT/healthz" && return 0
        sleep 0.5
    done
    cat "$WORK"/*.fns.log >&2
    die "touchgate did not start under valgrind"
}

requests() {
    local t=http://127.0.0.1:$TG_PORT jar=$WORK/jar
    local landing="$t/landing?utm_source=google&utm_medium=cpc&utm_campaign=spring&gclid=Cj0KCQ"
    for _ in 1 2 3; do
        curl -fs -o /dev/null "$t/"
        curl -fs -o /dev/null -H 'Sec-Fetch-Dest: document' -H 'Referer: https://www.google.com/' "$landing"
        curl -fs -o /dev/null -c "$jar" -b "$jar" -H 'Sec-Fetch-Dest: document' -H 'Referer: https://www.google.com/' "$landing"
        curl -fs -o /dev/null -c "$jar" -b "$jar" -H 'Sec-Fetch-Dest: document' "$t/pricing"
        curl -fs -o /dev/null -c "$jar" -b "$jar" -d 'email=ada@example.com&plan=pro' "$t/signup"
        curl -fs -o /dev/null --http2-prior-knowledge "$t/"
        curl -fs -o /dev/null -H 'authorization: Bearer generate-token-0123456789' \
            -H 'content-type: application/x-ndjson' \
            --data-binary '{"event_name":"account_created","user_id":"u-1","properties":{"plan":"pro"}}' \
            "http://127.0.0.1:$TG_ADMIN_PORT/v1/events"
        curl -fs -o /dev/null "$t/_tg/c.js"
        curl -fs -o /dev/null "http://127.0.0.1:$TG_ADMIN_PORT/metrics"
        curl -fs -o /dev/null "http://127.0.0.1:$TG_ADMIN_PORT/readyz" || true
    done
}

# profile NAME CONFIG [requests]: run touchgate under callgrind, write the
# functions it ran (mangled names, one per line) to $WORK/NAME.fns.
profile() {
    [[ $1 == restart ]] || rm -rf "$WORK/data" "$WORK/spool"
    TOUCHGATE_SECRET=generate-secret-0123456789abcdef0123 TOUCHGATE_INGEST_TOKEN=generate-token-0123456789 \
        valgrind --tool=callgrind --demangle=no --callgrind-out-file="$WORK/$1.out" \
        "$BIN" run --config "$WORK/$2.toml" >"$WORK/$1.fns.log" 2>&1 &
    local vg=$!
    STARTED_PIDS+=("$vg")
    wait_admin
    sleep 2
    [[ ${3:-} == requests ]] && requests && sleep 2
    kill -TERM "$vg"
    wait "$vg" || true
    grep -oE '^c?fn=\([0-9]+\) .*' "$WORK/$1.out" | sed -E 's/^c?fn=\([0-9]+\) //' >"$WORK/$1.fns"
}
profile startup default
profile startup-minimal minimal
profile startup-bench bench
profile restart bench   # on the spool the previous run left
profile requests default requests
cat "$WORK/startup.fns" "$WORK/startup-minimal.fns" "$WORK/startup-bench.fns" "$WORK/restart.fns" >"$WORK/startups.fns"

python3 - "$WORK/startups.fns" "$WORK/requests.fns" "$BIN" >link/hot-functions.txt <<'PY'
import collections, re, subprocess, sys
# Functions with identical bodies are merged into one section that carries
# several symbol names, and callgrind reports any one of them; so every
# name at the address of a function that ran is listed.
by_addr, addr_of = collections.defaultdict(list), {}
for line in subprocess.run(['nm', '--defined-only', sys.argv[3]], capture_output=True, text=True, check=True).stdout.splitlines():
    parts = line.split()
    if len(parts) == 3 and parts[1] in 'tT':
        by_addr[parts[0]].append(parts[2])
        addr_of[parts[2]] = parts[0]
def names(path):
    for ran in open(path):
        ran = ran.strip()
        if ran not in addr_of:  # libc and other shared objects
            continue
        for name in sorted(by_addr[addr_of[ran]]):
            base = re.sub(r'\.llvm\.\d+$', '', name)
            # The crate disambiguator changes with the crate's version and
            # build settings; the rest of a v0 name is the item's full path.
            yield re.sub(r'Cs[0-9A-Za-z]*_(?=\d)', 'Cs*_', base)
seen = set()
print('# Generated by link/generate.sh: the functions touchgate runs at start-up,')
print('# then on its request paths (v0 symbol names, crate hashes as *). build.rs')
print('# turns them into the linker script; see docs/performance.md, "RSS idle".')
# Sorted within each group, so that a regenerated list differs from the
# last one only where the code did.
for group in sys.argv[1:3]:
    for name in sorted(set(names(group)) - seen):
        seen.add(name)
        print(name)
PY
echo "link/hot-functions.txt: $(grep -vc '^#' link/hot-functions.txt) functions" >&2
