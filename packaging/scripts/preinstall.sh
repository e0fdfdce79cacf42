#!/bin/sh
# Creates the system user and group that packaging/systemd/swallowkeeper.service
# runs as (User=/Group=swallowkeeper), once; an upgrade finds them.
# Its home is the unit's StateDirectory; systemd creates it at start.
set -e
if ! getent group swallowkeeper >/dev/null 2>&1; then
	groupadd --system swallowkeeper
fi
if ! getent passwd swallowkeeper >/dev/null 2>&1; then
	useradd --system --gid swallowkeeper --no-create-home \
		--home-dir /var/lib/swallowkeeper --shell /usr/sbin/nologin \
		--comment "SwallowKeeper daemon" swallowkeeper
fi
exit 0
