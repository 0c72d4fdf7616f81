#!/usr/bin/env bash
# The integrity benchmark (docs/integrity.md): JOURNEYS scripted visitor
# journeys in real Chromium through touchgate in front of the demo app, each
# measured by a client-only tracker and by touchgate, per condition.
#
#   JOURNEYS=200 bash benches/integrity.sh            # writes docs/integrity.md
#   JOURNEYS=21 CHECK=1 bash benches/integrity.sh     # the CI run: asserts, writes nothing
#   BASE=http://127.0.0.1:8080 EVENTS=/var/lib/touchgate/events.jsonl \
#     FORM_PATH=/signup bash benches/integrity.sh     # against your own app behind touchgate
#
# Needs Node.js >= 20, npm and Chromium (/usr/bin/chromium or $TG_CHROMIUM).
set -euo pipefail
cd "$(dirname "$0")/.."
JOURNEYS=${JOURNEYS:-200}
SEED=${SEED:-1}
FORM_PATH=${FORM_PATH:-/signup}
OUT=${OUT:-docs/integrity.md}
if ! [[ "$JOURNEYS" =~ ^[0-9]+$ ]] || [ "$JOURNEYS" -lt 7 ] || [ "$JOURNEYS" -gt 2000 ]; then
  echo "JOURNEYS must be 7..2000 (one journey per condition at least)" >&2
  exit 2
fi
target=${CARGO_TARGET_DIR:-$PWD/target}
# The tree the binary and the harness are built from, taken before the build.
tree="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src benches Cargo.toml Cargo.lock || echo ' (with uncommitted changes)')"
work=$(mktemp -d)
demo_pid=
cleanup() {
  [ -n "$demo_pid" ] && kill "$demo_pid" 2>/dev/null && wait "$demo_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# playwright-core from the browser tests' lock file, into the target dir.
npm_dir="$target/integrity-npm"
if ! cmp -s tests/browser/package-lock.json "$npm_dir/installed-package-lock.json"; then
  mkdir -p "$npm_dir"
  cp tests/browser/package.json tests/browser/package-lock.json "$npm_dir/"
  (cd "$npm_dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  cp tests/browser/package-lock.json "$npm_dir/installed-package-lock.json"
fi

if [ -z "${BASE:-}" ]; then
  cargo build -q --bin touchgate
  "$target/debug/touchgate" demo --listen 127.0.0.1:0 --data-dir "$work/demo" >"$work/demo.out" 2>"$work/demo.err" &
  demo_pid=$!
  for _ in $(seq 1 300); do
    BASE=$(grep -o 'Open in a browser *http://[0-9.:]*' "$work/demo.out" | grep -o 'http://.*' || true)
    [ -n "$BASE" ] && break
    sleep 0.1
  done
  [ -n "$BASE" ] || { echo "touchgate demo did not start:" >&2; cat "$work/demo.err" >&2; exit 1; }
  EVENTS="$work/demo/events.jsonl"
fi
: "${EVENTS:?EVENTS: the file sink of the touchgate in front of BASE}"

opts=$(printf '{"base":"%s","events":"%s","journeys":%d,"seed":%d,"formPath":"%s"}' \
  "$BASE" "$EVENTS" "$JOURNEYS" "$SEED" "$FORM_PATH")
TG_NODE_MODULES="$npm_dir/node_modules" TG_CHROMIUM="${TG_CHROMIUM:-/usr/bin/chromium}" \
  node benches/integrity/run.cjs "$opts" >"$work/results.json"

[ -n "${KEEP:-}" ] && cp "$work/results.json" "$KEEP"
if [ -n "${CHECK:-}" ]; then
  node benches/integrity/render.cjs "$work/results.json" --check
  exit
fi
node benches/integrity/render.cjs "$work/results.json" >"$work/table.md"
cat "$work/table.md"
{
  echo "# Integrity benchmark"
  echo
  echo "What a client-only tracker and touchgate each record of the same visitor journeys in real"
  echo "Chromium, per condition. How to read it and how to run it against your own app: the README,"
  echo "\"Integrity benchmark\"."
  echo
  echo "Headline: $(cat "$work/results.json.headline")."
  echo
  cat "$work/table.md"
  echo
  echo "## Run"
  echo
  echo "- command: \`JOURNEYS=$JOURNEYS SEED=$SEED bash benches/integrity.sh\`"
  echo "- tree: $tree"
  echo "- machine: $(nproc) cores, $(uname -sm), $(/usr/bin/chromium --version 2>/dev/null || echo Chromium), Node.js $(node --version)"
  echo "- date: $(date -u +%Y-%m-%d)"
} >"$OUT"
echo "wrote $OUT" >&2
