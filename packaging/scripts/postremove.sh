#!/bin/sh
# Forgets the removed unit. The user and /var/lib/swallowkeeper stay, even on
# purge: nginx may still include the persisted upstream file there, and
# removing it would stop nginx from starting.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
