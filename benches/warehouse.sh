#!/usr/bin/env bash
# The dbt package (deploy/warehouse/dbt) on DuckDB over events touchgate
# captured: `dbt build` over DAYS days of events, then the incremental
# re-run after one more day.
#
#   bash benches/warehouse.sh
#
# Starts, on 127.0.0.1 only, nginx as the upstream and the touchgate release
# build with a file sink, once per day with its wall clock moved back that
# many days (libfaketime), and drives visitors through it with
# benches/warehouse_events.rs (landings over several days, signups; a share
# of each day's visitors are earlier days' visitors coming back). The events
# of days DAYS..1 are built in one `dbt build`; then day 0 is captured into
# the same directory and `dbt build` runs again, incrementally. Prints the
# number of events and both times. Everything it started is stopped on exit.
#
# Environment (defaults):
#   EVENTS=1000000 DAYS=10       about EVENTS events over DAYS days, plus one day more
#   DBT_VENV=target/dbt-venv     the virtual environment with tests/dbt/requirements.txt
#   TOUCHGATE_BIN=path           skip the build, use this binary
#   KEEP_WORK=1                  keep the temp dir (events, the DuckDB file, dbt's logs)

set -euo pipefail
# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

EVENTS=${EVENTS:-1000000}
DAYS=${DAYS:-10}
DBT_VENV=${DBT_VENV:-${CARGO_TARGET_DIR:-$ROOT/target}/dbt-venv}
# One visitor makes about 2.25 events: a little under its 2 landings on
# average (two landings of one visitor on the same URL within 10 s are one
# touchpoint, one event_id), and a signup with its form attempt one time in
# five.
VISITORS_PER_DAY=$((EVENTS * 4 / 9 / DAYS))

need "$NGINX" "apt-get install nginx-light"
need "$DBT_VENV/bin/dbt" "see tests/dbt/requirements.txt"
FAKETIME_LIB=$(ls /usr/lib/*/faketime/libfaketime.so.1 2>/dev/null | head -n1)
[[ -n $FAKETIME_LIB ]] || die "libfaketime not found (apt-get install faketime)"

check_ports "$UP_PORT" "$TG_PORT" "$TG_ADMIN_PORT"
setup_work
echo "work dir: $WORK"
build_touchgate
(cd "$ROOT" && cargo bench --bench warehouse_events --no-run --quiet) || die "cannot build benches/warehouse_events.rs"
start_upstream

mkdir -p "$WORK/events"
cat >"$WORK/touchgate.toml" <<EOF
[proxy]
listen = "127.0.0.1:$TG_PORT"
upstream = "http://127.0.0.1:$UP_PORT"
drain_delay = "0s"

[admin]
listen = "127.0.0.1:$TG_ADMIN_PORT"

[spool]
dir = "$WORK/spool"
fsync = "never"

[[form]]
path = "/signup"
event = "signup_submitted"
lead_id = "email"
natural_key = ["lead_id", "day"]

[[sink]]
type = "file"
path = "$WORK/events/events.jsonl"
EOF

# capture_day N: the day N days back, VISITORS_PER_DAY visitors.
capture_day() {
    local back=$1
    env LD_PRELOAD="$FAKETIME_LIB" FAKETIME="-${back}d" FAKETIME_DONT_FAKE_MONOTONIC=1 \
        TOUCHGATE_SECRET=bench-secret-0123456789abcdef0123456789 RUST_LOG=warn \
        "$WORK/touchgate" run --config "$WORK/touchgate.toml" >>"$WORK/touchgate.log" 2>&1 &
    local pid=$!
    STARTED_PIDS+=("$pid")
    wait_port "$TG_PORT" "$pid" touchgate
    (cd "$ROOT" && cargo bench --bench warehouse_events --quiet -- \
        "127.0.0.1:$TG_PORT" "$VISITORS_PER_DAY" "$back" "$WORK/visitors.jsonl") >/dev/null ||
        die "warehouse_events failed"
    kill -TERM "$pid"
    # bounded: a clean drain writes every event before the exit
    for _ in $(seq 600); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && die "touchgate did not drain within 60 s"
    wait "$pid" || die "touchgate exited with an error (see $WORK/touchgate.log)"
}

events_count() {
    cat "$WORK"/events/*.jsonl | wc -l
}

# dbt_build: prints the wall time of one `dbt build` in seconds.
dbt_build() {
    local start end
    start=$(date +%s.%N)
    (cd "$WORK" && TOUCHGATE_DUCKDB_PATH="$WORK/touchgate.duckdb" DBT_SEND_ANONYMOUS_USAGE_STATS=false \
        "$DBT_VENV/bin/dbt" build --project-dir "$ROOT/deploy/warehouse/dbt" \
        --profiles-dir "$ROOT/deploy/warehouse/dbt" --target-path "$WORK/dbt-target" \
        --log-path "$WORK/dbt-logs" --vars "{events_glob: '$WORK/events/events*.jsonl*'}" \
        >>"$WORK/dbt.log" 2>&1) || die "dbt build failed (see $WORK/dbt.log)"
    end=$(date +%s.%N)
    awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f\n", b - a }'
}

for back in $(seq "$DAYS" -1 1); do
    capture_day "$back"
    echo "day -$back captured: $(events_count) events"
done
full_events=$(events_count)
full=$(dbt_build)
capture_day 0
all_events=$(events_count)
incremental=$(dbt_build)

echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo), load before dbt $(cut -d' ' -f1-3 /proc/loadavg)"
echo "dbt build, $full_events events over $DAYS days: ${full} s"
echo "dbt build again after day 0 ($((all_events - full_events)) new events, $all_events in all): ${incremental} s"
"$DBT_VENV/bin/python" - "$WORK/touchgate.duckdb" <<'EOF'
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
for table in ["tg_events", "tg_touchpoints", "tg_sessions", "tg_conversions", "tg_attribution", "tg_daily_checks"]:
    print(f"  {table}: {con.execute(f'select count(*) from main.{table}').fetchone()[0]} rows")
EOF
