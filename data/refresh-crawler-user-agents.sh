#!/usr/bin/env bash
# Refresh data/crawler-user-agents.txt (one regex per line) from the
# crawler-user-agents package on the npm registry (MIT, Martin Monperrus).
# Usage: data/refresh-crawler-user-agents.sh [VERSION]   (default: latest)
# Then: cargo test --lib user_agent
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version="${1:-latest}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "crawler-user-agents@$version" >/dev/null && tar xzf crawler-user-agents-*.tgz)
node -e '
  const list = require(process.argv[1]);
  process.stdout.write(list.map((e) => e.pattern + "\n").join(""));
' "$tmp/package/crawler-user-agents.json" >"$here/crawler-user-agents.txt"
cp "$tmp/package/LICENSE" "$here/LICENSE-crawler-user-agents.txt"
got="$(node -p 'require(process.argv[1]).version' "$tmp/package/package.json")"
echo "crawler-user-agents $got: $(wc -l <"$here/crawler-user-agents.txt") patterns"
