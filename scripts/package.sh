#!/usr/bin/env bash
# Builds the swallowkeeper binary and its .deb and .rpm packages.
#
#   scripts/package.sh [-o DIR] [-version VERSION] [-arch GOARCH]
#
#   -o DIR            where the packages go (default: dist/, gitignored)
#   -version VERSION  the version the binary reports and the packages carry
#                     (default: git describe --tags --always --dirty; "dev"
#                     outside a git checkout, and the binary then reports
#                     what Go's build info knows)
#   -arch GOARCH      the target architecture (default: go env GOARCH)
#   -print-version    print the version and the package version made of it,
#                     and build nothing
#
# The binary is built as the Dockerfile builds it (CGO_ENABLED=0,
# -trimpath, -X .../internal/cli.Version). The packages are made by nfpm
# (packaging/nfpm.yaml), pinned in packaging/tools/go.mod: a module of its
# own, so that the daemon's go.mod stays free of it. The first run downloads
# nfpm's modules from the Go module proxy and builds it (about a minute).
# What the packages hold: packaging/nfpm.yaml; packaging/package_test.go
# unpacks them and checks it.
set -euo pipefail
export PATH="$PATH:/usr/local/go/bin"

usage() { sed -n '2,14s/^# \{0,1\}//p' "$0"; }

out=dist
version=""
arch=""
print_version=false
while [ $# -gt 0 ]; do
  case "$1" in
    -o | --o | -output) out="${2:?-o needs a directory}"; shift 2 ;;
    -version | --version) version="${2:?-version needs a value}"; shift 2 ;;
    -arch | --arch) arch="${2:?-arch needs a value}"; shift 2 ;;
    -print-version | --print-version) print_version=true; shift ;;
    -h | -help | --help) usage; exit 0 ;;
    *) echo "package.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

# -o is relative to where the script was called from.
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
cd "$(dirname "$0")/.."
root="$PWD"

if [ -z "$version" ]; then
  version="$(git -C "$root" describe --tags --always --dirty 2>/dev/null || true)"
  version="${version:-dev}"
fi
case "$version" in
  *[!A-Za-z0-9._+~-]*) echo "package.sh: version $version: only letters, digits and . _ + ~ - are allowed" >&2; exit 2 ;;
esac
[ -n "$arch" ] || arch="$(go env GOARCH)"

# The package version, in semver as nfpm reads it (nfpm writes a prerelease
# as ~pre and build metadata as +meta, for dpkg and rpm alike):
#   v1.2.3               1.2.3
#   v1.2.3-rc1           1.2.3-rc1             (before 1.2.3)
#   v1.2.3-4-gabc1234    1.2.3+4.gabc1234      (after 1.2.3)
#   abc1234, dev         0.0.0+gabc1234, 0.0.0+dev (no tag yet)
# "-dirty" (uncommitted changes) becomes metadata.
semver_re='^v?([0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.]+)?)(-([0-9]+)-g([0-9a-f]+))?(-dirty)?$'
dirty=""
if [[ "$version" =~ $semver_re ]]; then
  pkgversion="${BASH_REMATCH[1]}"
  meta=""
  [ -z "${BASH_REMATCH[3]}" ] || meta="${BASH_REMATCH[4]}.g${BASH_REMATCH[5]}"
  [ -z "${BASH_REMATCH[6]}" ] || meta="${meta:+$meta.}dirty"
  # A prerelease that is only "dirty" was matched as one: v1.2.3-dirty.
  if [ "${BASH_REMATCH[2]}" = "-dirty" ] && [ -z "${BASH_REMATCH[3]}${BASH_REMATCH[6]}" ]; then
    pkgversion="${pkgversion%-dirty}"
    meta=dirty
  fi
  pkgversion="$pkgversion${meta:++$meta}"
else
  case "$version" in *-dirty) dirty=.dirty ;; esac
  base="${version%-dirty}"
  [[ "$base" =~ ^[0-9a-f]{7,40}$ ]] && base="g$base"
  pkgversion="0.0.0+$(tr -c 'A-Za-z0-9\n' '.' <<<"$base")$dirty"
fi

if [ "$print_version" = true ]; then
  echo "$version $pkgversion"
  exit 0
fi

stage="$(mktemp -d -t swallowkeeper-package.XXXXXX)"
trap 'rm -rf "$stage"' EXIT

echo "package.sh: building swallowkeeper $version for linux/$arch" >&2
CGO_ENABLED=0 GOOS=linux GOARCH="$arch" go build -trimpath \
  -ldflags "-s -w -X github.com/swallowkeeper/swallowkeeper/internal/cli.Version=${version}" \
  -o "$stage/swallowkeeper" ./cmd/swallowkeeper

# The repository's unit runs /usr/local/bin/swallowkeeper (a hand install);
# the package puts the binary in /usr/bin.
sed -e '/^Exec/ s#/usr/local/bin/swallowkeeper#/usr/bin/swallowkeeper#g' \
  packaging/systemd/swallowkeeper.service >"$stage/swallowkeeper.service"
if grep -q '^Exec.*/usr/local/' "$stage/swallowkeeper.service"; then
  echo "package.sh: the packaged unit still runs something under /usr/local" >&2
  exit 1
fi

nfpm="$(go -C packaging/tools tool -n nfpm)"
mkdir -p "$out"
# Each package's path on stdout, all else on stderr.
for packager in deb rpm; do
  log="$(SK_VERSION="$pkgversion" SK_ARCH="$arch" SK_STAGE="$stage" \
    "$nfpm" package --config packaging/nfpm.yaml --packager "$packager" --target "$out/" 2>&1)" || {
    echo "$log" >&2; exit 1; }
  echo "$log" >&2
  sed -n 's/^created package: //p' <<<"$log"
done
