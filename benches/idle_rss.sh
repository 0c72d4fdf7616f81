#!/usr/bin/env bash
# Idle RSS of `touchgate run`, measured the way benches/load.sh measures it:
# the same config (a file sink, one [[form]], a temp spool), 2 s after both
# listeners accept, from /proc/PID/status. No upstream is needed: an idle
# proxy opens no upstream connection.
#
#   bash benches/idle_rss.sh                       # builds with cargo build --release first
#   TOUCHGATE_BIN=target/release/touchgate bash benches/idle_rss.sh
#
# Environment: TOUCHGATE_BIN, CARGO_ARGS, ROUNDS=3 (a fresh process each),
# TG_PORT TG_ADMIN_PORT (28493, 28494).

set -euo pipefail
TG_PORT=${TG_PORT:-28493}
TG_ADMIN_PORT=${TG_ADMIN_PORT:-28494}
# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ROUNDS=${ROUNDS:-3}

check_ports "$TG_PORT" "$TG_ADMIN_PORT"
setup_work
build_touchgate
echo "binary: $(stat -c %s "$WORK/touchgate") bytes"
for round in $(seq "$ROUNDS"); do
    rm -rf "$WORK/spool"
    start_touchgate
    sleep 2
    echo "round $round: RSS $(rss_kib "$TG_PID") KiB (anon $(rss_kib "$TG_PID" RssAnon), file-backed $(rss_kib "$TG_PID" RssFile))"
    kill -TERM "$TG_PID"
    wait "$TG_PID" 2>/dev/null || true
done
