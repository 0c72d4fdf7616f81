#!/usr/bin/env bash
# Runs one fuzz target for a bounded time and tells whether it reached a
# plateau: coverage ("cov", edges) at half, three quarters and the end of the
# run, both as libFuzzer counts it (every instrumented crate) and restricted to
# touchgate's own source (src/), which is what a plateau is judged on when a
# dependency's generated tables (the psl crate's suffix matcher, the http
# crate's header names) keep adding edges of their own.
#
#   fuzz/plateau.sh TARGET SECONDS [extra libFuzzer flags]
#
# Build first: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build -O
# FUZZ_BIN overrides where the binaries are (default fuzz/target/<triple>/release).
# The corpus (fuzz/corpus/TARGET) is kept between runs and grows; the run's
# log and corpus snapshots go to fuzz/runs/TARGET-<time>/ (ignored by git).
set -euo pipefail
cd "$(dirname "$0")"

target=${1:?usage: plateau.sh TARGET SECONDS [flags]}
secs=${2:?usage: plateau.sh TARGET SECONDS [flags]}
shift 2
bin=${FUZZ_BIN:-target/x86_64-unknown-linux-gnu/release}/$target
[ -x "$bin" ] || { echo "no fuzz binary at $bin; build first" >&2; exit 2; }
command -v llvm-symbolizer >/dev/null || { echo "own-code coverage needs llvm-symbolizer on PATH" >&2; exit 2; }

corpus=corpus/$target
run=runs/$target-$(date -u +%Y%m%dT%H%M%S)
mkdir -p "$corpus" "$run"
flags=(-max_total_time="$secs" -print_final_stats=1)
[ -f "dict/$target.dict" ] && flags+=(-dict="dict/$target.dict")

# Snapshots of the corpus at 50% and 75% of the run, for own-code coverage
# (libFuzzer may replace a file while it is copied: that file is skipped).
snapshot() { mkdir -p "$2" && cp -r "$1/." "$2/" 2>/dev/null || true; }
(
  sleep $((secs / 2))
  snapshot "$corpus" "$run/corpus-50"
  sleep $((secs / 4))
  snapshot "$corpus" "$run/corpus-75"
) &
snapper=$!
trap 'kill $snapper 2>/dev/null || true' EXIT

# A crash ends the run early with a non-zero status (pipefail): the
# summary is still printed, the crashing input goes to the run's folder,
# and the snapshots not yet taken are skipped.
start=$SECONDS
status=0
"$bin" "${flags[@]}" -artifact_prefix="$run/" "$@" "$corpus" 2>&1 |
  while IFS= read -r line; do printf '%d %s\n' $((SECONDS - start)) "$line"; done >"$run/log" ||
  status=$?
kill $snapper 2>/dev/null || true
wait $snapper 2>/dev/null || true
snapshot "$corpus" "$run/corpus-end"

# libFuzzer's "cov:" as last printed at or before a second mark.
cov_at() {
  awk -v t="$1" '$1 <= t && match($0, /cov: [0-9]+/) { c = substr($0, RSTART + 5, RLENGTH - 5) } END { print c + 0 }' "$run/log"
}
# Edges covered by a corpus in this repository's own functions (src/, and
# the target, into which some of it is inlined), not in dependencies or std.
# -runs=1: the whole corpus is replayed before the first mutation.
own_cov() {
  [ -d "$1" ] || { echo "-"; return; }
  "$bin" -runs=1 -print_coverage=1 -artifact_prefix="$run/replay-" "$1" 2>&1 |
    awk -v root="$(cd .. && pwd)/" 'index($0, "COVERED_FUNC:") == 1 && index($0, " " root) {
           if (match($0, /edges: [0-9]+\//)) n += substr($0, RSTART + 7, RLENGTH - 8)
         } END { print n + 0 }'
}
execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$run/log" | grep -oE '[0-9]+$' || echo "?")
printf '%s: %s s, %s executions, corpus %s\n' "$target" "$secs" "$execs" "$(ls "$corpus" | wc -l)"
printf '  cov (all crates) at 50%% / 75%% / end: %s / %s / %s\n' \
  "$(cov_at $((secs / 2)))" "$(cov_at $((secs * 3 / 4)))" "$(cov_at "$secs")"
printf '  own edges        at 50%% / 75%% / end: %s / %s / %s\n' \
  "$(own_cov "$run/corpus-50")" "$(own_cov "$run/corpus-75")" "$(own_cov "$run/corpus-end")"
if [ "$status" -ne 0 ] || grep -qE 'ERROR: libFuzzer|panicked|SUMMARY: .*Sanitizer' "$run/log"; then
  echo "  CRASH after $(awk 'END { print $1 }' "$run/log") s (exit $status): input and log in fuzz/$run/" >&2
  exit 1
fi
