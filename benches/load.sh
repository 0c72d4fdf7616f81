#!/usr/bin/env bash
# touchgate vs nginx as a reverse proxy in front of the same fast upstream.
#
#   bash benches/load.sh
#
# Starts, on 127.0.0.1 only: nginx as the upstream (static answers), nginx
# as a keep-alive reverse proxy to it (and, for the landing row, the same
# proxy with a userid cookie and a JSON access log of the campaign), and
# touchgate (release build) to the
# same upstream; then runs wrk (HTTP/1.1) and h2load (h2c, prior knowledge)
# against both proxies, alternating which goes first each round. Prints
# requests/s, p99 latency and the touchgate/nginx ratios (medians over the
# rounds, and the median of each round's own ratio), touchgate's RSS idle
# and after load, and RSS per idle connection. Everything it started is stopped on exit.
#
# Environment (defaults):
#   DURATION=10s ROUNDS=3 CONNS=64 WRK_THREADS=1   wrk runs
#   H2_CONNS=16 H2_STREAMS=10                       h2load runs (same DURATION)
#   IDLE_CONNS=5000                                 0 skips the idle-connection probe
#   ROWS="plain landing form h2-plain"              which rows to measure
#   PROXY_WORKERS=auto                              nginx proxy worker_processes
#   TOUCHGATE_BIN=path                              skip the build, use this binary
#   CARGO_ARGS="..."                                extra `cargo build --release` args
#   UP_PORT NGX_PORT NGX_H2_PORT TG_PORT TG_ADMIN_PORT NGX_CAP_PORT   ports (28480-28485)
#   KEEP_WORK=1                                     keep the temp dir (configs, raw outputs)

set -euo pipefail
# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-64}
H2_CONNS=${H2_CONNS:-16}
H2_STREAMS=${H2_STREAMS:-10}
IDLE_CONNS=${IDLE_CONNS:-5000}

need "$NGINX" "apt-get install nginx-light"
need wrk "apt-get install wrk"
need curl "apt-get install curl"
need ss "apt-get install iproute2"
HAVE_H2LOAD=1
command -v h2load >/dev/null 2>&1 || {
    HAVE_H2LOAD=0
    echo "note: h2load not found (apt-get install nghttp2-client): HTTP/2 rows skipped" >&2
}

check_ports "$UP_PORT" "$NGX_PORT" "$NGX_H2_PORT" "$NGX_CAP_PORT" "$TG_PORT" "$TG_ADMIN_PORT"
setup_work
echo "work dir: $WORK"
build_touchgate
write_lua
start_upstream
start_nginx_proxy
start_touchgate

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
sleep 2
tg_idle=$(rss_kib "$TG_PID")
tg_idle_anon=$(rss_kib "$TG_PID" RssAnon)
tg_idle_file=$(rss_kib "$TG_PID" RssFile)
ngx_idle=$(nginx_rss_kib "$NGINX_PID")

# Sanity: both proxies answer every request kind with 200 before measuring.
for port in "$NGX_PORT" "$NGX_CAP_PORT" "$TG_PORT"; do
    for path in / /landing /signup; do
        method=GET
        [[ $path == /signup ]] && method=POST
        code=$(curl -s -o /dev/null -w '%{http_code}' -X "$method" --data-binary @/dev/null "http://127.0.0.1:$port$path")
        [[ $code == 200 ]] || die "127.0.0.1:$port$path answered $code"
    done
done

# Warm-up (not recorded): pools, page cache, branch predictors.
for port in "$NGX_PORT" "$TG_PORT"; do
    run_wrk "http://127.0.0.1:$port/" - 2s "$CONNS" "$WORK/warmup.txt"
done

RESULTS=$WORK/results.tsv
: >"$RESULTS"

# The proxy's CPU time (all threads / all workers), clock ticks.
proxy_cpu() { if [[ $1 == nginx ]]; then nginx_cpu_ticks "$NGINX_PID"; else cpu_ticks "$TG_PID"; fi; }

# run_row ROW PROXY ROUND: one measurement, appended to RESULTS as
# row proxy round req/s p99_ms errors cpu_us_per_request.
run_row() {
    local row=$1 proxy=$2 round=$3 port h2port out cpu0 cpu1 requests cpu_us
    if [[ $proxy == nginx ]]; then port=$NGX_PORT h2port=$NGX_H2_PORT; else port=$TG_PORT h2port=$TG_PORT; fi
    # Landings are compared with nginx doing the capture an ops team would
    # set up instead (userid cookie + JSON access log, benches/nginx/proxy.conf).
    [[ $proxy == nginx && $row == landing ]] && port=$NGX_CAP_PORT
    out=$WORK/$row-$proxy-$round.txt
    cpu0=$(proxy_cpu "$proxy")
    case $row in
    plain) run_wrk "http://127.0.0.1:$port/" - "$DURATION" "$CONNS" "$out" ;;
    landing) run_wrk "http://127.0.0.1:$port/" "$WORK/landing.lua" "$DURATION" "$CONNS" "$out" ;;
    form) run_wrk "http://127.0.0.1:$port/" "$WORK/form.lua" "$DURATION" "$CONNS" "$out" ;;
    h2-plain) run_h2load "http://127.0.0.1:$h2port/" "${DURATION%s}" "$H2_CONNS" "$H2_STREAMS" "$out" ;;
    esac
    cpu1=$(proxy_cpu "$proxy")
    local parsed
    if [[ $row == h2-* ]]; then
        parsed=$(parse_h2load "$out")
        # h2load's request count covers the measured phase only, its CPU
        # also the warm-up second: counted over both.
        requests=$(awk '/^requests:/ { gsub(/,/, ""); print $2 }' "$out")
        requests=$(awk -v n="$requests" -v d="${DURATION%s}" 'BEGIN { printf "%d", n * (d + 1) / d }')
    else
        parsed=$(parse_wrk "$out")
        requests=$(awk '/requests in/ { print $1 }' "$out")
    fi
    cpu_us=$(awk -v t=$((cpu1 - cpu0)) -v n="${requests:-0}" -v hz="$CLK_TCK" 'BEGIN { if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print 0 }')
    printf '%s\t%s\t%s\t%s\t%s\n' "$row" "$proxy" "$round" "${parsed// /$'\t'}" "$cpu_us" >>"$RESULTS"
    local rps p99 errs
    read -r rps p99 errs <<<"$parsed"
    printf '  %-9s %-9s round %s: %s req/s, p99 %s ms, errors %s, CPU %s us/request\n' "$row" "$proxy" "$round" "$rps" "$p99" "$errs" "$cpu_us"
}

if [[ -n ${ROWS:-} ]]; then
    read -r -a ROWS <<<"$ROWS"
else
    ROWS=(plain landing form)
    ((HAVE_H2LOAD)) && ROWS+=(h2-plain)
fi
echo "measuring: ${#ROWS[@]} rows x 2 proxies x $ROUNDS rounds x $DURATION"
for round in $(seq "$ROUNDS"); do
    for row in "${ROWS[@]}"; do
        if ((round % 2)); then
            run_row "$row" nginx "$round"
            run_row "$row" touchgate "$round"
        else
            run_row "$row" touchgate "$round"
            run_row "$row" nginx "$round"
        fi
    done
done

sleep 2
tg_after=$(rss_kib "$TG_PID")
tg_hwm=$(rss_kib "$TG_PID" VmHWM)
tg_after_anon=$(rss_kib "$TG_PID" RssAnon)
ngx_after=$(nginx_rss_kib "$NGINX_PID")
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
events=$(metric touchgate_events_total)
dropped=$(metric touchgate_events_dropped_total)
duplicates=$(metric touchgate_events_duplicate_total)

# RSS per idle keep-alive connection: open IDLE_CONNS connections, one
# request on each (a connection that never sent a request is cut by the
# header-read timeout), hold them, compare RSS. The probe writes how many
# it opened to $WORK/idle.opened and holds until $WORK/idle.release exists
# (60 s at most).
idle_probe() {
    python3 - "$1" "$IDLE_CONNS" "$WORK/idle.opened" "$WORK/idle.release" <<'PY'
import os, resource, socket, sys, time
port, n, opened, release = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 256)), hard))
req = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
socks = []
deadline = time.time() + 60
try:
    for _ in range(n):
        if time.time() > deadline:
            break
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(req)
        got = b""
        while b"ok\n" not in got:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        socks.append(s)
finally:
    with open(opened + ".tmp", "w") as f:
        f.write(str(len(socks)))
    os.rename(opened + ".tmp", opened)
end = time.time() + 60
while not os.path.exists(release) and time.time() < end:
    time.sleep(0.1)
PY
}

idle_line=""
if ((IDLE_CONNS > 0)) && command -v python3 >/dev/null 2>&1; then
    for target in touchgate nginx; do
        if [[ $target == touchgate ]]; then port=$TG_PORT; else port=$NGX_PORT; fi
        rss() { if [[ $target == touchgate ]]; then rss_kib "$TG_PID"; else nginx_rss_kib "$NGINX_PID"; fi; }
        rm -f "$WORK/idle.opened" "$WORK/idle.release"
        before=$(rss)
        idle_probe "$port" &
        probe=$!
        STARTED_PIDS+=("$probe")
        for _ in $(seq 700); do
            [[ -e $WORK/idle.opened ]] && break
            sleep 0.1
        done
        opened=$(cat "$WORK/idle.opened" 2>/dev/null || echo 0)
        sleep 2
        after=$(rss)
        touch "$WORK/idle.release"
        wait "$probe" || true
        per=$(awk -v a="$after" -v b="$before" -v n="$opened" 'BEGIN { if (n > 0) printf "%.1f", (a - b) / n; else print "n/a" }')
        idle_line+=$(printf '%-9s %5s idle connections: RSS %s -> %s MiB, %s KiB per connection' \
            "$target" "$opened" "$(mib "$before")" "$(mib "$after")" "$per")$'\n'
        sleep 1
    done
fi

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { awk -F'\t' -v r="$1" -v p="$2" -v c="$3" '$1 == r && $2 == p { print $c }' "$RESULTS" | median; }
errsum() { awk -F'\t' -v r="$1" '$1 == r { s += $6 } END { printf "%d", s }' "$RESULTS"; }

echo
echo "touchgate vs nginx reverse proxy, same upstream; $(nproc) cores; median of $ROUNDS x $DURATION"
echo "wrk -t${WRK_THREADS:-1} -c$CONNS; h2load -t1 -c$H2_CONNS -m$H2_STREAMS (h2c); nginx proxy worker_processes $PROXY_WORKERS"
echo "load average before: $load_before   after: $load_after"
echo
printf '| %-10s | %12s | %12s | %7s | %10s | %10s | %9s | %13s | %6s |\n' row "nginx req/s" "tg req/s" "ratio" "nginx p99" "tg p99" "p99 ratio" "CPU us/req n/t" errors
printf '|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n' ------------ -------------- -------------- --------- ------------ ------------ ----------- ---------------- --------
for row in "${ROWS[@]}"; do
    n_rps=$(col "$row" nginx 4)
    t_rps=$(col "$row" touchgate 4)
    n_p99=$(col "$row" nginx 5)
    t_p99=$(col "$row" touchgate 5)
    printf '| %-10s | %12.0f | %12.0f | %6.2fx | %7.2f ms | %7.2f ms | %8.2fx | %6.1f / %5.1f | %6s |\n' "$row" "$n_rps" "$t_rps" \
        "$(awk -v a="$t_rps" -v b="$n_rps" 'BEGIN { print (b > 0 ? a / b : 0) }')" "$n_p99" "$t_p99" \
        "$(awk -v a="$t_p99" -v b="$n_p99" 'BEGIN { print (b > 0 ? a / b : 0) }')" \
        "$(col "$row" nginx 7)" "$(col "$row" touchgate 7)" "$(errsum "$row")"
done
echo
# Each round runs the two proxies back to back, so a round's ratio shares
# that minute's machine noise; their median is the steadier figure when
# the medians above come from different minutes.
echo "per-round ratios (touchgate / nginx of the same round), and their median:"
for row in "${ROWS[@]}"; do
    ratios=$(awk -F'\t' -v r="$row" '$1 == r { v[$2 "," $3] = $4; rounds[$3] = 1 }
        END { for (k in rounds) if (v["nginx," k] > 0) printf "%.3f\n", v["touchgate," k] / v["nginx," k] }' "$RESULTS" | sort -g)
    printf '  %-10s %s -> %.2fx\n' "$row" "$(echo "$ratios" | tr '\n' ' ')" "$(echo "$ratios" | median)"
done
echo
echo "touchgate RSS idle:       $(mib "$tg_idle") MiB (anon $(mib "$tg_idle_anon") MiB, file-backed $(mib "$tg_idle_file") MiB)"
echo "touchgate RSS after load: $(mib "$tg_after") MiB (anon $(mib "$tg_after_anon") MiB), peak $(mib "$tg_hwm") MiB"
echo "nginx proxy RSS (master + workers): idle $(mib "$ngx_idle") MiB, after load $(mib "$ngx_after") MiB"
echo "touchgate events: $events emitted, $dropped dropped, $duplicates duplicates"
[[ -n $idle_line ]] && printf '%s' "$idle_line"
echo "raw outputs: $RESULTS (set KEEP_WORK=1 to keep $WORK)"
if awk -F'\t' '{ s += $6 } END { exit !(s > 0) }' "$RESULTS"; then
    echo "WARNING: some runs had socket errors or non-2xx answers (errors column)" >&2
fi
