#!/usr/bin/env bash
# A bounded soak of touchgate: mixed traffic at a bounded rate for
# SOAK_SECONDS, in slices; touchgate's RSS sampled after every slice and
# the latency of each slice recorded. Exit 1 if any request failed
# (socket error or non-2xx/3xx answer) or RSS grew steadily; 2 on a setup
# problem.
#
#   bash benches/soak.sh                     # 10 minutes
#   SOAK_SECONDS=300 bash benches/soak.sh    # 5 minutes
#
# Traffic (wrk, one thread, SOAK_CONNS connections; per request):
#   50% plain GET /, no cookies              (pass-through)
#   20% asset GET with touchgate's cookies   (cookie verify + x-touch-* headers)
#   10% page view with the cookies           (navigation, not a landing)
#   15% paid-search landing, new visitor     (ids minted, landing event)
#    5% 1 KiB signup POST, a new lead each   (conversion event)
#
# The rate: wrk has no rate option (wrk2 is not in Debian), so the Lua
# script's delay() makes each connection wait SOAK_DELAY_MS between a
# response and its next request: the rate is at most SOAK_CONNS x 1000 /
# SOAK_DELAY_MS requests/s (8 x 1000 / 4 = 2,000/s by default), well below
# saturation, so latency is not queueing. Each slice is a separate
# `wrk -d SLICE_SECONDS` run.
#
# RSS "grows steadily" when the mean of the last third of the samples is
# more than 20% above the mean of the first third AND the thirds' means
# increase monotonically. The dedupe set is bounded by its entry count and
# grows until full; DEDUPE_MAX_ENTRIES (default 20,000 here, 1,000,000
# shipped) makes it fill within the first minute, so that what the check
# sees afterwards is whatever else grows.
#
# Environment: SOAK_SECONDS=600 SLICE_SECONDS=10 SOAK_CONNS=8
# SOAK_DELAY_MS=4 DEDUPE_MAX_ENTRIES=20000, plus TOUCHGATE_BIN, CARGO_ARGS,
# TG_WORKERS, ports and KEEP_WORK as in load.sh.

set -euo pipefail
# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SOAK_SECONDS=${SOAK_SECONDS:-600}
SLICE_SECONDS=${SLICE_SECONDS:-10}
SOAK_CONNS=${SOAK_CONNS:-8}
SOAK_DELAY_MS=${SOAK_DELAY_MS:-4}
DEDUPE_MAX_ENTRIES=${DEDUPE_MAX_ENTRIES:-20000}
SLICES=$((SOAK_SECONDS / SLICE_SECONDS))
((SLICES >= 3)) || die "SOAK_SECONDS must be at least 3 slices of $SLICE_SECONDS s"

need "$NGINX" "apt-get install nginx-light"
need wrk "apt-get install wrk"
need curl "apt-get install curl"
need ss "apt-get install iproute2"

check_ports "$UP_PORT" "$TG_PORT" "$TG_ADMIN_PORT"
setup_work
echo "work dir: $WORK"
build_touchgate
write_lua
start_upstream
start_touchgate

cat >"$WORK/mixed.lua" <<'EOF'
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

local ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
local n, wait = 0, 0
local plain, asset, page, landing, form_headers
local filler = string.rep("lorem+ipsum+dolor+sit+amet+", 60)

-- args: the returning visitor's Cookie header, the delay in ms.
function init(args)
  local cookie = args[1] or ""
  wait = tonumber(args[2] or "0")
  plain = wrk.format("GET", "/", { ["User-Agent"] = ua })
  asset = wrk.format("GET", "/static/app.js?v=42", {
    ["Cookie"] = cookie, ["Sec-Fetch-Dest"] = "script", ["Sec-Fetch-Mode"] = "no-cors",
    ["Referer"] = "http://shop.example.com/landing", ["User-Agent"] = ua })
  page = wrk.format("GET", "/landing", {
    ["Cookie"] = cookie, ["Sec-Fetch-Dest"] = "document", ["Sec-Fetch-Mode"] = "navigate",
    ["User-Agent"] = ua })
  landing = wrk.format("GET", "/landing?utm_source=google&utm_medium=cpc&utm_campaign=spring_sale_2026&utm_term=running+shoes&gclid=Cj0KCQiA4NWrBhD", {
    ["Sec-Fetch-Dest"] = "document", ["Sec-Fetch-Mode"] = "navigate",
    ["Referer"] = "https://www.google.com/", ["User-Agent"] = ua })
  form_headers = {
    ["Content-Type"] = "application/x-www-form-urlencoded", ["Sec-Fetch-Dest"] = "document",
    ["Cookie"] = cookie, ["User-Agent"] = ua }
  math.randomseed(4242 + (tid or 0))
end

function delay()
  return wait
end

function request()
  local r = math.random(100)
  if r <= 50 then return plain end
  if r <= 70 then return asset end
  if r <= 80 then return page end
  if r <= 95 then return landing end
  -- os.time() keeps e-mails distinct across the slices (one wrk run each).
  n = n + 1
  local head = "email=soak" .. os.time() .. "." .. (tid or 0) .. "." .. n .. "%40example.com&name=Jane+Doe&plan=pro&message="
  return wrk.format("POST", "/signup", form_headers, head .. string.sub(filler, 1, 1024 - #head))
end
EOF

# A returning visitor: the cookies touchgate sets on a first landing.
cookie=$(curl -s -D - -o /dev/null -H 'Sec-Fetch-Dest: document' -H 'Referer: https://www.google.com/' \
    "http://127.0.0.1:$TG_PORT/landing?utm_source=google&utm_medium=cpc&gclid=soak" |
    awk 'tolower($1) == "set-cookie:" { sub(/;.*/, "", $2); printf "%s%s", sep, $2; sep = "; " }')
[[ $cookie == *tg_did=*tg_sid=* ]] || die "no identity cookies from touchgate (got: $cookie)"

sleep 1
rss_idle=$(rss_kib "$TG_PID")
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
SAMPLES=$WORK/samples.tsv
: >"$SAMPLES"
echo "soak: $SLICES slices x ${SLICE_SECONDS}s, $SOAK_CONNS connections, ${SOAK_DELAY_MS} ms delay; RSS idle $(mib "$rss_idle") MiB"
printf '%5s %6s %10s %9s %7s %9s\n' slice t_s "req/s" "p99 ms" errors "RSS MiB"
started=$(date +%s)
for i in $(seq "$SLICES"); do
    out=$WORK/slice-$i.txt
    run_wrk "http://127.0.0.1:$TG_PORT/" "$WORK/mixed.lua" "${SLICE_SECONDS}s" "$SOAK_CONNS" "$out" "$cookie" "$SOAK_DELAY_MS"
    read -r rps p99 errs <<<"$(parse_wrk "$out")"
    rss=$(rss_kib "$TG_PID")
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$i" "$(($(date +%s) - started))" "$rps" "$p99" "$errs" "$rss" >>"$SAMPLES"
    printf '%5s %6s %10s %9s %7s %9s\n' "$i" "$(($(date +%s) - started))" "$rps" "$p99" "$errs" "$(mib "$rss")"
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
sleep 2
events=$(metric touchgate_events_total)
dropped=$(metric touchgate_events_dropped_total)
duplicates=$(metric touchgate_events_duplicate_total)
conversions=$(metric touchgate_conversions_total)
requests=$(metric touchgate_requests_total)

median_p99=$(cut -f4 "$SAMPLES" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
summary=$(awk -F'\t' -v n="$SLICES" '
    { rss[NR] = $6; rps += $3; err += $5; if ($4 > maxp) maxp = $4 }
    END {
        t = int(n / 3)
        for (i = 1; i <= t; i++) a += rss[i]
        for (i = t + 1; i <= n - t; i++) b += rss[i]
        for (i = n - t + 1; i <= n; i++) c += rss[i]
        a /= t; b /= (n - 2 * t); c /= t
        grow = (c > a * 1.2 && a < b && b < c) ? 1 : 0
        printf "%.1f %.1f %.1f %.1f %.0f %.3f %d %d %.1f\n", a / 1024, b / 1024, c / 1024, (c - a) * 100 / a,
            rps / n, maxp, err, grow, rss[n] / 1024
    }' "$SAMPLES")
read -r first middle last growth_pct mean_rps max_p99 errors grows rss_end <<<"$summary"

echo
echo "soak: $SOAK_SECONDS s ($SLICES x ${SLICE_SECONDS}s), ~$mean_rps req/s mean, load average before $load_before, after $load_after"
echo "requests through touchgate: $requests; events emitted $events (conversions $conversions), dropped $dropped, duplicates $duplicates"
echo "p99 per slice: median $median_p99 ms, worst $max_p99 ms; failed requests: $errors"
echo "RSS: idle $(mib "$rss_idle") MiB; mean of first/middle/last third $first / $middle / $last MiB ($growth_pct% last vs first); at the end $rss_end MiB"
echo "samples: $SAMPLES (KEEP_WORK=1 keeps $WORK)"
status=0
if ((errors > 0)); then
    echo "FAIL: $errors requests failed (socket errors or non-2xx/3xx answers)"
    status=1
fi
if ((grows)); then
    echo "FAIL: RSS grew steadily (last third > first third by more than 20%, monotonic)"
    status=1
fi
((dropped == 0)) || echo "note: $dropped events dropped (queue full or spool error; see touchgate_events_dropped_total)"
((status == 0)) && echo "PASS"
exit "$status"
