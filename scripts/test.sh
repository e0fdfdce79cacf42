#!/usr/bin/env bash
# The project's test command. It installs what is missing, then runs every
# test: pure packages with -race, and the integration tests against real
# Consul, nginx (+lua), etcd and ZooKeeper processes that the tests start on
# loopback. A missing component fails the run; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"

scripts/install-deps.sh
CONSUL_BIN="$(scripts/build-consul.sh)"
export CONSUL_BIN

echo "== gofmt and go vet"
unformatted="$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"
if [ -n "$unformatted" ]; then echo "gofmt would change:"; echo "$unformatted"; exit 1; fi
go vet ./...

echo "== pure packages, with the race detector"
go test -race -count=1 ./internal/upstream/ ./internal/engine/ ./internal/config/ ./internal/backoff/ ./internal/store/ ./internal/registry/ ./internal/statuspage/

echo "== short fuzz runs (seed corpora in testdata/fuzz)"
fuzz() { # target package: prints the exec count, or everything on a failure
  local out
  if out="$(go test -run '^$' -fuzz "^$1\$" -fuzztime "${SK_FUZZTIME:-20s}" "$2" 2>&1)"; then
    echo "$1: $(grep -E '^fuzz: elapsed' <<<"$out" | tail -1)"
  else
    echo "$out"; return 1
  fi
}
fuzz FuzzBuildRender ./internal/registry/
fuzz FuzzParseDetail ./internal/sink/dyups/

echo "== everything, against real servers"
go test -count=1 -timeout 40m "$@" ./...
