#!/bin/sh
# Writes the first 8 KiB page of WAL segments that a real PostgreSQL cluster wrote, for
# Tests/KhoCoreTests/WALFormatTests.swift. Run as root on a host with PostgreSQL installed:
#   sh Tests/Fixtures/postgres/wal/make-fixtures.sh /usr/lib/postgresql/15/bin
# Each fixture is named <major>-<segment size in MiB>m-<sysid hex>-<WAL file name>.page.
set -eu
bin=$1
out=$(cd "$(dirname "$0")" && pwd)
major=$("$bin/postgres" --version | sed 's/[^0-9]*\([0-9]*\).*/\1/')
make_cluster() {
    segsize=$1; first=$2
    work=$(mktemp -d)
    chown postgres "$work"
    runuser -u postgres -- "$bin/initdb" -D "$work/data" -A trust -U postgres --wal-segsize="$segsize" >/dev/null
    # Start on a chosen timeline and log number, so that the names have non-trivial fields.
    [ -n "$first" ] && runuser -u postgres -- "$bin/pg_resetwal" -l "$first" "$work/data" >/dev/null
    runuser -u postgres -- "$bin/pg_ctl" -D "$work/data" -o "-k $work -c listen_addresses=''" -w start >/dev/null
    for i in 1 2; do
        runuser -u postgres -- "$bin/psql" -h "$work" -U postgres -Atqc "SET client_min_messages = warning; CREATE TABLE IF NOT EXISTS t(x int); INSERT INTO t SELECT generate_series(1, 1000); SELECT pg_switch_wal();" >/dev/null
    done
    runuser -u postgres -- "$bin/psql" -h "$work" -U postgres -Atqc "CHECKPOINT" >/dev/null
    sysid=$(runuser -u postgres -- "$bin/pg_controldata" "$work/data" | sed -n 's/^Database system identifier: *//p')
    sysidhex=$(printf '%016x' "$sysid")
    runuser -u postgres -- "$bin/pg_ctl" -D "$work/data" -m fast -w stop >/dev/null
    for f in "$work"/data/pg_wal/[0-9A-F]*; do
        case $(basename "$f") in *.*) continue;; esac
        head -c 8192 "$f" > "$out/$major-${segsize}m-$sysidhex-$(basename "$f").page"
    done
    rm -rf "$work"
}
make_cluster 16 ""
make_cluster 1 000000030000000700000FF0
make_cluster 64 00000002000000010000003E
