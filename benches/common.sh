# shellcheck shell=bash
# Shared by benches/load.sh and benches/soak.sh (sourced, not run):
# start nginx (upstream and proxy) and touchgate on 127.0.0.1, the wrk Lua
# scripts, output parsing, and the cleanup trap. Everything started here is
# remembered by PID and killed by PID on exit.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)

UP_PORT=${UP_PORT:-28480}
NGX_PORT=${NGX_PORT:-28481}
NGX_H2_PORT=${NGX_H2_PORT:-28482}
TG_PORT=${TG_PORT:-28483}
TG_ADMIN_PORT=${TG_ADMIN_PORT:-28484}
NGX_CAP_PORT=${NGX_CAP_PORT:-28485}
PROXY_WORKERS=${PROXY_WORKERS:-auto}
NGINX=${NGINX:-/usr/sbin/nginx}

STARTED_PIDS=()
WORK=""

die() {
    echo "error: $*" >&2
    exit 2
}

need() {
    local cmd=$1 hint=$2
    command -v "$cmd" >/dev/null 2>&1 || [[ -x $cmd ]] || die "$cmd not found ($hint)"
}

cleanup() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED_PIDS[@]}"; do
        # bounded: 50 x 0.1 s, then SIGKILL
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [[ -n $WORK && -d $WORK && -z ${KEEP_WORK:-} ]]; then
        rm -rf "$WORK"
    fi
}

setup_work() {
    WORK=$(mktemp -d /tmp/touchgate-bench.XXXXXX)
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}

port_free() {
    ! ss -Hltn "sport = :$1" | grep -q .
}

check_ports() {
    local p
    for p in "$@"; do
        port_free "$p" || die "port $p is in use (set UP_PORT/NGX_PORT/NGX_H2_PORT/NGX_CAP_PORT/TG_PORT/TG_ADMIN_PORT)"
    done
}

# wait_port PORT PID NAME: until something listens on PORT (10 s at most).
wait_port() {
    local port=$1 pid=$2 name=$3
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || die "$name exited at start (see $WORK/$name.log)"
        port_free "$port" || return 0
        sleep 0.1
    done
    die "$name did not listen on $port within 10 s"
}

render() {
    sed -e "s|@DIR@|$WORK|g" -e "s|@UP_PORT@|$UP_PORT|g" -e "s|@NGX_PORT@|$NGX_PORT|g" \
        -e "s|@NGX_H2_PORT@|$NGX_H2_PORT|g" -e "s|@NGX_CAP_PORT@|$NGX_CAP_PORT|g" \
        -e "s|@PROXY_WORKERS@|$PROXY_WORKERS|g" "$1" >"$2"
}

start_upstream() {
    mkdir -p "$WORK/upstream-tmp"
    render "$BENCH_DIR/nginx/upstream.conf" "$WORK/upstream.conf"
    "$NGINX" -t -q -c "$WORK/upstream.conf" -e "$WORK/upstream-error.log" || die "nginx upstream config invalid"
    "$NGINX" -c "$WORK/upstream.conf" -e "$WORK/upstream-error.log" >"$WORK/upstream.log" 2>&1 &
    UPSTREAM_PID=$!
    STARTED_PIDS+=("$UPSTREAM_PID")
    wait_port "$UP_PORT" "$UPSTREAM_PID" upstream
}

start_nginx_proxy() {
    mkdir -p "$WORK/proxy-tmp"
    render "$BENCH_DIR/nginx/proxy.conf" "$WORK/proxy.conf"
    "$NGINX" -t -q -c "$WORK/proxy.conf" -e "$WORK/proxy-error.log" || die "nginx proxy config invalid"
    "$NGINX" -c "$WORK/proxy.conf" -e "$WORK/proxy-error.log" >"$WORK/proxy.log" 2>&1 &
    NGINX_PID=$!
    STARTED_PIDS+=("$NGINX_PID")
    wait_port "$NGX_PORT" "$NGINX_PID" proxy
    wait_port "$NGX_H2_PORT" "$NGINX_PID" proxy
    wait_port "$NGX_CAP_PORT" "$NGINX_PID" proxy
}

# Build (unless TOUCHGATE_BIN is given) and copy the binary into the work
# dir: the shared target dir's binary may be replaced by another build
# while the bench runs.
build_touchgate() {
    if [[ -n ${TOUCHGATE_BIN:-} ]]; then
        [[ -x $TOUCHGATE_BIN ]] || die "TOUCHGATE_BIN=$TOUCHGATE_BIN is not executable"
        cp "$TOUCHGATE_BIN" "$WORK/touchgate"
        return
    fi
    need cargo "install Rust"
    local target=${CARGO_TARGET_DIR:-$ROOT/target}
    # shellcheck disable=SC2086 # CARGO_ARGS is a list of words on purpose
    (cd "$ROOT" && cargo build --release --quiet ${CARGO_ARGS:-}) || die "cargo build --release failed"
    cp "$target/release/touchgate" "$WORK/touchgate"
}

# touchgate's config: defaults everywhere except the ports, a temp spool
# and file sink, the [[form]] the form rows post to, and
# DEDUPE_MAX_ENTRIES (default: the shipped 1,000,000).
write_touchgate_config() {
    cat >"$WORK/touchgate.toml" <<EOF
[proxy]
listen = "127.0.0.1:$TG_PORT"
upstream = "http://127.0.0.1:$UP_PORT"

[admin]
listen = "127.0.0.1:$TG_ADMIN_PORT"

[spool]
dir = "$WORK/spool"

[dedupe]
max_entries = ${DEDUPE_MAX_ENTRIES:-1000000}

[[form]]
path = "/signup"
method = "POST"
event = "signup_submitted"
lead_id = "email"
natural_key = ["lead_id", "day"]
fields = [{ name = "plan", mode = "raw" }]

[[sink]]
type = "file"
path = "$WORK/events.jsonl"
EOF
}

start_touchgate() {
    write_touchgate_config
    TOUCHGATE_SECRET=check-config-secret-0123456789 "$WORK/touchgate" check-config --config "$WORK/touchgate.toml" >"$WORK/check-config.log" 2>&1 ||
        die "touchgate check-config failed: $(cat "$WORK/check-config.log")"
    grep -q ': ok$' "$WORK/check-config.log" || die "$WORK/touchgate is not a working touchgate binary"
    # TG_WORKERS: tokio worker threads (tokio reads TOKIO_WORKER_THREADS;
    # unset = one per core, what `touchgate run` does in production).
    local workers=()
    [[ -n ${TG_WORKERS:-} ]] && workers=(TOKIO_WORKER_THREADS="$TG_WORKERS")
    env "${workers[@]}" TOUCHGATE_SECRET="${TOUCHGATE_SECRET:-bench-secret-0123456789abcdef0123456789}" RUST_LOG="${RUST_LOG:-info}" \
        "$WORK/touchgate" run --config "$WORK/touchgate.toml" >"$WORK/touchgate.log" 2>&1 &
    TG_PID=$!
    STARTED_PIDS+=("$TG_PID")
    wait_port "$TG_PORT" "$TG_PID" touchgate
    wait_port "$TG_ADMIN_PORT" "$TG_PID" touchgate
}

# rss_kib PID [FIELD]: VmRSS (or VmHWM) in KiB.
rss_kib() {
    awk -v f="${2:-VmRSS}:" '$1 == f { print $2 }' "/proc/$1/status"
}

# Sum of VmRSS over an nginx master and its workers.
nginx_rss_kib() {
    local total=0 pid
    for pid in "$1" $(pgrep -P "$1"); do
        total=$((total + $(rss_kib "$pid")))
    done
    echo "$total"
}

# CPU time (user + system, clock ticks) of one process, all its threads.
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# ... of an nginx master and its workers.
nginx_cpu_ticks() {
    local total=0 pid
    for pid in "$1" $(pgrep -P "$1"); do
        total=$((total + $(cpu_ticks "$pid")))
    done
    echo "$total"
}

# shellcheck disable=SC2034 # used by load.sh
CLK_TCK=$(getconf CLK_TCK)

mib() {
    awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'
}

# One counter from touchgate's /metrics (sum over its label sets).
metric() {
    curl -s "http://127.0.0.1:$TG_ADMIN_PORT/metrics" |
        awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $NF } END { printf "%d", s }'
}

# The wrk Lua scripts, written into the work dir.
write_lua() {
    # A paid-search landing of a new visitor: no cookies, so touchgate mints
    # ids, sets the four cookies and emits a landing event every time.
    cat >"$WORK/landing.lua" <<'EOF'
wrk.method = "GET"
wrk.path = "/landing?utm_source=google&utm_medium=cpc&utm_campaign=spring_sale_2026&utm_term=running+shoes&utm_content=ad_b&gclid=Cj0KCQiA4NWrBhD-ARIsAFCKwWtl&gad_source=1"
wrk.headers["Sec-Fetch-Dest"] = "document"
wrk.headers["Sec-Fetch-Mode"] = "navigate"
wrk.headers["Sec-Fetch-Site"] = "cross-site"
wrk.headers["Referer"] = "https://www.google.com/"
wrk.headers["User-Agent"] = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
wrk.headers["Accept"] = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
EOF
    # 1 KiB urlencoded signups; the wrk run's start time, the thread and a
    # counter make every e-mail distinct, across runs too, so every post is
    # a new lead (a new natural key): dedupe never drops one and each post
    # yields one conversion event.
    cat >"$WORK/form.lua" <<'EOF'
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

local n = 0
local run = os.time()
local headers = {
  ["Content-Type"] = "application/x-www-form-urlencoded",
  ["Sec-Fetch-Dest"] = "document",
  ["Sec-Fetch-Mode"] = "navigate",
  ["User-Agent"] = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
}
local filler = string.rep("lorem+ipsum+dolor+sit+amet+", 60)

function body()
  n = n + 1
  local head = "email=lead" .. run .. "." .. (tid or 0) .. "." .. n .. "%40example.com&name=Jane+Doe&company=Example+Ltd&plan=pro&phone=&message="
  return head .. string.sub(filler, 1, 1024 - #head)
end

function request()
  return wrk.format("POST", "/signup", headers, body())
end
EOF
}

# run_wrk URL SCRIPT|- DURATION CONNS OUTFILE [wrk args after --]
run_wrk() {
    local url=$1 script=$2 duration=$3 conns=$4 out=$5
    shift 5
    local args=(-t "${WRK_THREADS:-1}" -c "$conns" -d "$duration" --latency --timeout 5s)
    [[ $script != - ]] && args+=(-s "$script")
    wrk "${args[@]}" "$url" "$@" >"$out" 2>&1 || die "wrk failed: $(cat "$out")"
}

to_ms() {
    awk '{ v = $1; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
           if (u == "us") v /= 1000; else if (u == "s") v *= 1000; else if (u == "m") v *= 60000
           printf "%.3f", v }'
}

# parse_wrk OUTFILE: "REQS_PER_S P99_MS ERRORS" (ERRORS = socket errors +
# non-2xx/3xx answers).
parse_wrk() {
    local f=$1 rps p99 errs
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$f")
    p99=$(awk '$1 == "99%" { print $2 }' "$f" | to_ms)
    errs=$(awk '/Socket errors:/ { gsub(/,/, ""); s += $4 + $6 + $8 + $10 }
                /Non-2xx or 3xx responses:/ { s += $NF } END { printf "%d", s }' "$f")
    echo "${rps:-0} ${p99:-0} ${errs:-0}"
}

# run_h2load URL DURATION_S CONNS STREAMS OUTFILE: h2c, prior knowledge.
run_h2load() {
    local url=$1 duration=$2 conns=$3 streams=$4 out=$5
    rm -f "$out.log"
    h2load -t 1 -c "$conns" -m "$streams" -D "$duration" --warm-up-time 1 --log-file "$out.log" "$url" >"$out" 2>&1 ||
        die "h2load failed: $(cat "$out")"
}

# parse_h2load OUTFILE: "REQS_PER_S P99_MS ERRORS"; p99 from the
# per-request log (h2load prints no percentiles). ERRORS = failed +
# errored + timed-out requests + non-2xx/3xx answers.
parse_h2load() {
    local f=$1 rps p99 errs
    rps=$(awk '/^finished in/ { gsub(/,/, ""); print $4 }' "$f")
    errs=$(awk '/^requests:/ { gsub(/,/, ""); s += $10 + $12 + $14 }
                /^status codes:/ { gsub(/,/, ""); s += $7 + $9 } END { printf "%d", s }' "$f")
    p99=$(sort -n -k3,3 "$f.log" | awk '{ d[NR] = $3 } END { i = int(NR * 0.99); if (i < 1) i = 1; printf "%.3f", d[i] / 1000 }')
    echo "${rps:-0} ${p99:-0} ${errs:-0}"
}
