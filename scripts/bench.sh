#!/usr/bin/env bash
# Benchmarks SwallowKeeper against consul-template on loopback and writes
# docs/BENCHMARKS.md, docs/bench/results.json and docs/bench/*.png.
#
# Usage: scripts/bench.sh [-quick] [swallowkeeper-bench flags...]   (-h lists them)
# Needs: Go, Debian nginx + libnginx-mod-http-lua (scripts/install-deps.sh),
# Consul (scripts/build-consul.sh builds and caches it), consul-template
# (installed here from the Go module proxy into the cache when missing).
# A full run takes about 13 minutes on 2 cores (the issue's per-mode sizes
# spread over 3 runs); -quick about 3 minutes; installing what is missing
# on a fresh machine about 11 minutes more, once.
# Opt-in scenarios (never in the default set, nor in -quick): -scenarios
# fanout, -scenarios fleet, -soak; with -json/-md elsewhere than docs/.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"

cache="${SWALLOWKEEPER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/swallowkeeper}"
mkdir -p "$cache/bin"

# The Consul that scripts/build-consul.sh caches; install what is missing
# (nginx + Lua, Consul) only when something is.
consul="${CONSUL_BIN:-$cache/consul-${CONSUL_VERSION:-1.20.1}/consul}"
if [ ! -x "$consul" ] || ! command -v nginx >/dev/null || [ ! -e /usr/lib/nginx/modules/ngx_http_lua_module.so ]; then
  scripts/install-deps.sh
  consul="$(scripts/build-consul.sh)"
fi

ct="${CONSUL_TEMPLATE_BIN:-$cache/bin/consul-template}"
if [ ! -x "$ct" ]; then
  echo "installing consul-template into $cache/bin (Go module proxy)..." >&2
  if ! GOBIN="$cache/bin" go install github.com/hashicorp/consul-template@latest; then
    echo "consul-template@latest failed; trying the pinned v0.41.1" >&2
    GOBIN="$cache/bin" go install github.com/hashicorp/consul-template@v0.41.1
  fi
fi

bin="$(mktemp -d)"
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/swallowkeeper" ./cmd/swallowkeeper
# The bench is a module of its own (bench/go.mod), so that its plotting
# library stays out of the daemon's dependencies.
go -C bench build -o "$bin/swallowkeeper-bench" ./cmd/swallowkeeper-bench

"$bin/swallowkeeper-bench" -consul "$consul" -nginx "$(command -v nginx)" \
  -consul-template "$ct" -swallowkeeper "$bin/swallowkeeper" -repo "$PWD" \
  -command "scripts/bench.sh${*:+ $*}" "$@"
