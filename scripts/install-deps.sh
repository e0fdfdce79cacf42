#!/usr/bin/env bash
# Installs what SwallowKeeper's demo and tests need on Debian 12, and only
# what is missing: nginx with the Lua module and lua-resty-core, etcd and
# ZooKeeper servers (for the etcd/ZooKeeper sources), curl, Chromium (the
# status page test); then builds the
# pinned Consul into the cache (scripts/build-consul.sh). Never starts or
# enables a system service.
set -euo pipefail

# chromium renders the status page in its headless test; dpkg-deb (dpkg)
# unpacks the .deb that packaging/package_test.go builds.
pkgs=(nginx libnginx-mod-http-lua lua-resty-core etcd-server zookeeper curl ca-certificates procps chromium dpkg)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    sudo=sudo
  fi
  # The packages' maintainer scripts try to start their services; on a
  # machine without an init system that fails harmlessly, and we never use
  # the system services: tests and the demo run their own processes.
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

command -v go >/dev/null || { echo "install-deps: Go is not installed (want go 1.26 in PATH)" >&2; exit 1; }
"$(dirname "$0")/build-consul.sh" >/dev/null
