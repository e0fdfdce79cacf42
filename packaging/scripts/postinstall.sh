#!/bin/sh
# A first install enables nothing: the example configuration in
# /etc/swallowkeeper/swallowkeeper.yml names a registry and nginx target that
# must be checked first. An upgrade restarts a running daemon on the new
# binary (nginx keeps serving meanwhile; see docs/OPERATIONS.md, Upgrades).
# Arguments: deb `configure OLD-VERSION` (empty on a first install);
# rpm 1 (install) or 2 (upgrade).
set -e
upgrade=false
case "$1" in
configure) [ -n "${2:-}" ] && upgrade=true ;;
2) upgrade=true ;;
esac
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	if [ "$upgrade" = true ]; then
		systemctl try-restart swallowkeeper.service >/dev/null 2>&1 || true
	fi
fi
if [ "$upgrade" = false ]; then
	cat <<'MSG'
swallowkeeper: edit /etc/swallowkeeper/swallowkeeper.yml, check it with
  swallowkeeper check -config /etc/swallowkeeper/swallowkeeper.yml
then start the daemon with
  systemctl enable --now swallowkeeper
The Lua module for stock nginx is in /usr/share/swallowkeeper/lua.
MSG
fi
exit 0
