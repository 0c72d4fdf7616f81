#!/usr/bin/env bash
# How much of the plain-GET gap to nginx is the HTTP stack and how much is
# touchgate: nginx as the reverse proxy, benches/bare_proxy (hyper's server
# and pooled client as touchgate configures them, doing nothing else) and
# touchgate, all in front of the same nginx upstream, on GET / (no cookies).
#
#   bash benches/bare_hyper.sh
#
# For each round and proxy, in turn: a 2-second warm-up, then
# wrk -t1 -c64 for DURATION, and the proxy's user and system CPU time over
# that run (/proc/PID/stat, all threads or all nginx workers) per request.
# Prints each run, then the medians and the ratios to nginx. 127.0.0.1
# only; everything it started is stopped on exit.
#
# Environment (defaults): DURATION=8s ROUNDS=3 CONNS=64 BARE_PORT=28490,
# and the ports and TOUCHGATE_BIN / CARGO_ARGS of benches/load.sh.

set -euo pipefail
# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DURATION=${DURATION:-8s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-64}
BARE_PORT=${BARE_PORT:-28490}

need "$NGINX" "apt-get install nginx-light"
need wrk "apt-get install wrk"
check_ports "$UP_PORT" "$NGX_PORT" "$NGX_H2_PORT" "$NGX_CAP_PORT" "$TG_PORT" "$TG_ADMIN_PORT" "$BARE_PORT"
setup_work
build_touchgate
bare_target=${CARGO_TARGET_DIR:-$ROOT/target}/bare_proxy
(cd "$ROOT/benches/bare_proxy" && CARGO_TARGET_DIR=$bare_target cargo build --release --quiet) ||
    die "building benches/bare_proxy failed"
write_lua
start_upstream
start_nginx_proxy
start_touchgate
"$bare_target/release/bare-proxy" "127.0.0.1:$BARE_PORT" "http://127.0.0.1:$UP_PORT" >"$WORK/bare.log" 2>&1 &
BARE_PID=$!
STARTED_PIDS+=("$BARE_PID")
wait_port "$BARE_PORT" "$BARE_PID" bare-proxy

# user and system clock ticks, summed over PIDs
user_sys() {
    local u=0 s=0 pid a b
    for pid in "$@"; do
        read -r a b < <(awk '{ print $14, $15 }' "/proc/$pid/stat")
        u=$((u + a)) s=$((s + b))
    done
    echo "$u $s"
}

hz=$(getconf CLK_TCK)
echo "proxy      round        req/s   p99       user us/req  sys us/req"
for round in $(seq "$ROUNDS"); do
    for proxy in nginx bare touchgate; do
        case $proxy in
        nginx) port=$NGX_PORT pids=$(pgrep -P "$NGINX_PID" | tr '\n' ' ') ;;
        bare) port=$BARE_PORT pids=$BARE_PID ;;
        touchgate) port=$TG_PORT pids=$TG_PID ;;
        esac
        wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$port/" >/dev/null
        # shellcheck disable=SC2086 # pids is a list
        read -r u0 s0 < <(user_sys $pids)
        out=$(wrk -t1 -c"$CONNS" -d"$DURATION" --latency "http://127.0.0.1:$port/")
        # shellcheck disable=SC2086
        read -r u1 s1 < <(user_sys $pids)
        n=$(awk '/requests in/ { print $1 }' <<<"$out")
        rps=$(awk '/Requests\/sec/ { print $2 }' <<<"$out")
        p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
        ((n > 0)) || die "$proxy: no requests completed"
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$proxy" "$round" "$rps" "$(to_ms <<<"$p99")" \
            "$(awk -v t=$((u1 - u0)) -v n="$n" -v hz="$hz" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }')" \
            "$(awk -v t=$((s1 - s0)) -v n="$n" -v hz="$hz" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }')" |
            tee -a "$WORK/runs.tsv" |
            awk -F'\t' '{ printf "%-10s %5s %12.0f %6.2f ms %12s %11s\n", $1, $2, $3, $4, $5, $6 }'
    done
done

echo
echo "medians over $ROUNDS rounds, wrk -t1 -c$CONNS -d$DURATION, GET /"
awk -F'\t' '
    function median(list,    n, a, i, j, t) {
        n = split(list, a, " ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    { rps[$1] = rps[$1] " " $3; p99[$1] = p99[$1] " " $4; us[$1] = us[$1] " " $5; sy[$1] = sy[$1] " " $6 }
    END {
        base = median(rps["nginx"])
        printf "| proxy | req/s | ratio to nginx | p99 ms | user us/req | sys us/req |\n|---|---|---|---|---|---|\n"
        split("nginx bare touchgate", order, " ")
        for (k = 1; k <= 3; k++) {
            p = order[k]
            printf "| %s | %.0f | %.2fx | %.2f | %.2f | %.2f |\n", p, median(rps[p]), median(rps[p]) / base, median(p99[p]), median(us[p]), median(sy[p])
        }
    }' "$WORK/runs.tsv"
