#!/bin/sh
# Writes a backup history file and a timeline history file that a real PostgreSQL wrote, for
# Tests/KhoCoreTests/WALFormatTests.swift: a base backup of a primary (its .backup file), then a
# standby made from it is promoted (its 00000002.history). Run as root:
#   sh Tests/Fixtures/postgres/wal/make-history-fixtures.sh /usr/lib/postgresql/15/bin
set -eu
bin=$1
out=$(cd "$(dirname "$0")" && pwd)
major=$("$bin/postgres" --version | sed 's/[^0-9]*\([0-9]*\).*/\1/')
work=$(mktemp -d)
chown postgres "$work"
as() { runuser -u postgres -- "$@"; }
mkdir "$work/archive" && chown postgres "$work/archive"
# Stop whatever this script started, also when a step fails.
trap 'for d in standby primary; do [ -f "$work/$d/postmaster.pid" ] && as "$bin/pg_ctl" -D "$work/$d" -m immediate -w stop >/dev/null; done; rm -rf "$work"' EXIT
as "$bin/initdb" -D "$work/primary" -A trust -U postgres >/dev/null
# The archive is where PostgreSQL puts the backup history file for good (pg_wal keeps it only
# until the next checkpoint).
as "$bin/pg_ctl" -D "$work/primary" -o "-k $work -p 5491 -c listen_addresses='' -c archive_mode=on -c archive_command='cp %p $work/archive/%f'" -w start >/dev/null
as "$bin/pg_basebackup" -h "$work" -p 5491 -U postgres -D "$work/standby" -R -X stream -l "kho fixture" >/dev/null
as "$bin/psql" -h "$work" -p 5491 -U postgres -Atqc "SELECT pg_switch_wal()" >/dev/null
sleep 2
cp "$work"/archive/*.backup "$out/"
sysid=$(as "$bin/pg_controldata" "$work/primary" | sed -n 's/^Database system identifier: *//p')
as "$bin/pg_ctl" -D "$work/standby" -o "-k $work -p 5492 -c listen_addresses='' -c archive_mode=off" -w start >/dev/null
as "$bin/pg_ctl" -D "$work/standby" -w promote >/dev/null
sleep 1
cp "$work/standby/pg_wal/00000002.history" "$out/"
as "$bin/pg_ctl" -D "$work/standby" -m fast -w stop >/dev/null
as "$bin/pg_ctl" -D "$work/primary" -m fast -w stop >/dev/null
printf '%016x\n' "$sysid" > "$out/history-fixtures-sysid"
