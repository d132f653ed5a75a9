#!/usr/bin/env bash
#! The main job for a newcomer: set everything up, then start a throwaway PostgreSQL 15 cluster that
#! archives its WAL through pg_strata into a local repository, load data, take a full backup from SQL,
#! change some rows, take an incremental backup (only the changed blocks), make more changes, stop the
#! server, restore with `strata restore` into a new directory (the full rebuilt with the incremental, then
#! the WAL replayed from the archive), start it and show that every change is there, and `strata info`.
#! Everything lives under /tmp/strata-demo; rerun at will.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

DEMO=/tmp/strata-demo
PORT=55432
BIN=/usr/lib/postgresql/15/bin
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
psql_demo() { as_pg "$BIN/psql" -XAt -v ON_ERROR_STOP=1 -h "$DEMO" -p "$PORT" -U postgres -d postgres "$@"; }

for d in data restored; do
    if [ -f "$DEMO/$d/postmaster.pid" ]; then as_pg "$BIN/pg_ctl" -D "$DEMO/$d" -m fast -w stop || true; fi
done
rm -rf "$DEMO"
mkdir -p "$DEMO/repo"
chown -R postgres:postgres "$DEMO" 2>/dev/null || true

echo "== a throwaway cluster archiving through pg_strata into file://$DEMO/repo"
as_pg "$BIN/initdb" -D "$DEMO/data" -U postgres -A trust --data-checksums >/dev/null
cat >> "$DEMO/data/postgresql.conf" <<CONF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$DEMO'
shared_preload_libraries = 'pg_strata'
archive_mode = on
archive_library = 'pg_strata'
strata.repo1 = 'file://$DEMO/repo'
strata.stanza = 'demo'
strata.compress_type = 'zstd'
wal_keep_size = '1GB'
CONF
as_pg "$BIN/pg_ctl" -D "$DEMO/data" -l "$DEMO/server.log" -w start >/dev/null

echo "== load data"
psql_demo -c "CREATE EXTENSION pg_strata" >/dev/null
psql_demo -c "CREATE TABLE orders (id bigint PRIMARY KEY, customer int, note text)" >/dev/null
psql_demo -c "INSERT INTO orders SELECT g, g % 1000, repeat(md5(g::text), 4) FROM generate_series(1, 200000) g" >/dev/null
psql_demo -c "SELECT count(*) AS orders, pg_size_pretty(pg_database_size('postgres')) AS size FROM orders"

echo "== SELECT backup_start('full')"
label=$(psql_demo -c "SELECT backup_start('full')")
echo "backup $label taken by the background worker"
psql_demo -x -c "SELECT label, kind, start_lsn, stop_lsn, pg_size_pretty(database_size) AS database_size,
                        pg_size_pretty(stored_size) AS stored_size, file_count, page_checksum_errors
                 FROM strata_backups"

echo "== change 1% of the rows, then SELECT backup_start('incr'): only the changed blocks are copied"
psql_demo -c "UPDATE orders SET note = 'changed after the full' WHERE id BETWEEN 100000 AND 102000" >/dev/null
incr=$(psql_demo -c "SELECT backup_start('incr')")
echo "backup $incr taken"
psql_demo -x -c "SELECT label, kind, prior, method, pg_size_pretty(database_size) AS database_size,
                        pg_size_pretty(read_size) AS read_from_pgdata,
                        pg_size_pretty(stored_size) AS stored_size
                 FROM strata_backups WHERE kind = 'incr'"

echo "== more changes after the backups (they will come back from the archived WAL)"
psql_demo -c "INSERT INTO orders SELECT g, g % 1000, 'after the backup' FROM generate_series(200001, 250000) g" >/dev/null
psql_demo -c "DELETE FROM orders WHERE id <= 1000" >/dev/null
psql_demo -c "CREATE TABLE late (x int); INSERT INTO late VALUES (42)" >/dev/null
expected=$(psql_demo -c "SELECT count(*) || ' orders, checksum ' || md5(string_agg(id::text || note, ',' ORDER BY id)) FROM orders")
last=$(psql_demo -c "SELECT pg_walfile_name(pg_switch_wal())")
for _ in $(seq 1 600); do
    done_wal=$(psql_demo -c "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
    [[ "$done_wal" < "$last" ]] || break
    sleep 0.1
done
psql_demo -x -c "SELECT last_archived_wal, archived_count, failed_count, summaries_written FROM archive_status()"
as_pg "$BIN/pg_ctl" -D "$DEMO/data" -m fast -w stop >/dev/null
echo "source stopped: $expected"

echo "== strata restore --pgdata $DEMO/restored (latest backup: the incremental over the full, then all archived WAL)"
as_pg strata restore --pgdata "$DEMO/restored" --repo "file://$DEMO/repo" --stanza demo
# The restored copy gets its own port so it could run beside the source.
echo "port = $((PORT + 1))" >> "$DEMO/restored/postgresql.conf"
as_pg "$BIN/pg_ctl" -D "$DEMO/restored" -l "$DEMO/restored.log" -w start >/dev/null
psql_restored() { as_pg "$BIN/psql" -XAt -v ON_ERROR_STOP=1 -h "$DEMO" -p "$((PORT + 1))" -U postgres -d postgres "$@"; }
for _ in $(seq 1 600); do
    [ "$(psql_restored -c "SELECT pg_is_in_recovery()" 2>/dev/null)" = "f" ] && break
    sleep 0.2
done
got=$(psql_restored -c "SELECT count(*) || ' orders, checksum ' || md5(string_agg(id::text || note, ',' ORDER BY id)) FROM orders")
echo "restored: $got"
[ "$got" = "$expected" ] || { echo "the restored data differs from the source" >&2; exit 1; }
echo "late table: $(psql_restored -c "SELECT x FROM late")"
echo "timeline after recovery: $(psql_restored -c "SELECT timeline_id FROM pg_control_checkpoint()")"

echo "== strata info"
strata info --repo "file://$DEMO/repo" --stanza demo

as_pg "$BIN/pg_ctl" -D "$DEMO/restored" -m fast -w stop >/dev/null
echo "== demo done: the restored cluster has every change (servers stopped; files in $DEMO)"
