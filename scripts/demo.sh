#!/usr/bin/env bash
# Live demo on loopback: installs what is missing (nginx + lua, Consul built
# from the Go module proxy), builds swallowkeeper, then runs Consul, nginx,
# three backends and the daemon while instances join, fail checks, crash
# and come back under a steady stream of requests.
# Pass --keep to leave everything running afterwards, until Ctrl-C;
# -split for a canary split moved 90/10 → 50/50 → 0/100 through Consul KV.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"

scripts/install-deps.sh
consul="$(scripts/build-consul.sh)"
bin="$(mktemp -d)"
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/swallowkeeper" ./cmd/swallowkeeper
go build -o "$bin/swallowkeeper-demo" ./cmd/swallowkeeper-demo
"$bin/swallowkeeper-demo" -consul "$consul" -nginx "$(command -v nginx)" -swallowkeeper "$bin/swallowkeeper" -repo "$PWD" "$@"
