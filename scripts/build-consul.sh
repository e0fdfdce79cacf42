#!/usr/bin/env bash
# Builds a pinned Consul from the Go module proxy and caches the binary
# outside the repo. Consul is not in Debian, and no prebuilt binary may be
# downloaded, so we compile the module ourselves.
#
# Usage: scripts/build-consul.sh        prints the path of the cached binary
# Env:   CONSUL_VERSION (default 1.20.1), SWALLOWKEEPER_CACHE (default ~/.cache/swallowkeeper)
set -euo pipefail

version="${CONSUL_VERSION:-1.20.1}"
cache="${SWALLOWKEEPER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/swallowkeeper}"
bin="$cache/consul-$version/consul"

# Capture first: `grep -q` closing the pipe early could fail the pipeline
# under pipefail and force a needless rebuild.
if [ -x "$bin" ] && have="$("$bin" version 2>/dev/null)" && grep -q "Consul v$version" <<<"$have"; then
  echo "$bin"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod
export GOPATH="${GOPATH:-$(go env GOPATH)}"

echo "building consul v$version from the Go module proxy (first time takes ~7 min)..." >&2
( cd "$work" && go mod download -json "github.com/hashicorp/consul@v$version" >dl.json )
src=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' "$work/dl.json" | head -1)
[ -d "$src" ] || { echo "build-consul: module source not found (see $work/dl.json)" >&2; exit 1; }

cp -r "$src" "$work/consul"
chmod -R u+w "$work/consul"
cd "$work/consul"
# The module's go.mod replaces its own submodules (api, sdk, ...) with local
# directories that the module zip does not contain; use the published versions.
sed -i -E '/^replace[[:space:]]+github\.com\/hashicorp\/consul\//d' go.mod
sed -i -E '/^[[:space:]]*github\.com\/hashicorp\/consul\/[^ ]+[[:space:]]*=>[[:space:]]*\.\//d' go.mod
go build -trimpath -ldflags "-X github.com/hashicorp/consul/version.GitCommit=v$version -X github.com/hashicorp/consul/version.Version=$version -X github.com/hashicorp/consul/version.VersionPrerelease=" -o "$work/consul.bin" .
mkdir -p "$(dirname "$bin")"
mv "$work/consul.bin" "$bin"
"$bin" version >&2
echo "$bin"
