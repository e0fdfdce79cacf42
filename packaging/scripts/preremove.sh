#!/bin/sh
# Stops and disables the daemon when the package is removed, not when it is
# upgraded. Arguments: deb `remove` or `upgrade`; rpm 0 (erase) or 1 (upgrade).
set -e
case "$1" in
remove | 0)
	if [ -d /run/systemd/system ]; then
		systemctl disable --now swallowkeeper.service >/dev/null 2>&1 || true
	fi
	;;
esac
exit 0
