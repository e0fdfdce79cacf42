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
go test -race -count=1 ./internal/upstream/ ./internal/engine/ ./internal/config/ ./internal/backoff/ ./internal/store/ ./internal/registry/ ./internal/statuspage/ ./internal/jsonobj/ ./internal/split/ ./internal/metric/

echo "== short fuzz runs (seed corpora in testdata/fuzz)"
# A fixed number of executions, not a duration: with a duration, Go 1.26's
# fuzz coordinator can fail a target with a bare "context deadline exceeded"
# when the clock runs out mid-call (golang/go#75804, fixed in Go 1.27), which
# reddened CI once with no crasher written. A count has no deadline to race.
# SK_FUZZTIME (e.g. 2m or 5000000x) replaces the per-target default.
fuzz() { # target package execs: prints the exec count, or everything on a failure
  local out
  if out="$(go test -run '^$' -fuzz "^$1\$" -fuzztime "${SK_FUZZTIME:-$3}" "$2" 2>&1)"; then
    echo "$1: $(grep -E '^fuzz: elapsed' <<<"$out" | tail -1)"
  else
    echo "$out"; return 1
  fi
}
# About 15 s each on a 2-core machine.
fuzz FuzzBuildRender ./internal/registry/ 400000x
fuzz FuzzParseDetail ./internal/sink/dyups/ 100000x

echo "== everything, against real servers"
# -v so that the figures the tests measure (lines starting "FIGURE ") reach
# the CI log; the full output stays in a file, and a failure prints its part.
log="$(mktemp -t swallowkeeper-test.XXXXXX)"
rc=0
go test -count=1 -timeout 40m -v "$@" ./... >"$log" 2>&1 || rc=$?
grep -E '^(FIGURE |ok |FAIL|--- FAIL|panic:)|^ +[A-Za-z0-9_]+_test\.go:[0-9]+: ' "$log" || true
if [ "$rc" -ne 0 ]; then
  echo "== failures (full log: $log)"
  # || true: head may close the pipe early, and pipefail would end the
  # script there, with grep's SIGPIPE status instead of the tests'.
  grep -E -B2 -A40 -- '^(--- FAIL|panic:|FAIL	)' "$log" | head -400 || true
  # Last, so that a shortened copy of this output still ends with it: what
  # each failing test printed itself, its reason included.
  echo "== what each failing test printed"
  awk -f scripts/failed-output.awk "$log" "$log" | tail -300 || true
  exit "$rc"
fi
rm -f "$log"

echo "== benchmark harness: its own module (bench/go.mod), then a smoke test (scripts/bench.sh -quick; figures to a temp dir)"
(cd bench && go vet ./... && go test -count=1 ./...)
# Fails only when the harness breaks; a missed target is reported, not an
# error. The committed docs/BENCHMARKS.md comes from a full run.
benchdir="$(mktemp -d -t swallowkeeper-bench.XXXXXX)"
scripts/bench.sh -quick -shared -json "$benchdir/results.json" -md "$benchdir/BENCHMARKS.md" >"$benchdir/bench.log" 2>&1 || {
  tail -60 "$benchdir/bench.log"; exit 1; }
grep -E 'targets met|met$' "$benchdir/bench.log" | tail -12
rm -rf "$benchdir"
