#!/usr/bin/env bash
#! The main job for a newcomer: set everything up, then start a throwaway PostgreSQL 15 cluster that
#! archives its WAL through pg_strata into a local repository, run a workload over several segments,
#! show the archiving status, and fetch every archived segment back with `strata archive-get`,
#! comparing it with the server's own copy. Everything lives under /tmp/strata-demo; rerun at will.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

DEMO=/tmp/strata-demo
PORT=55432
BIN=/usr/lib/postgresql/15/bin
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
psql_demo() { as_pg "$BIN/psql" -XAt -v ON_ERROR_STOP=1 -h "$DEMO" -p "$PORT" -U postgres -d postgres "$@"; }

if [ -f "$DEMO/data/postmaster.pid" ]; then as_pg "$BIN/pg_ctl" -D "$DEMO/data" -m fast -w stop || true; fi
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

echo "== a workload over several WAL segments"
psql_demo -c "CREATE EXTENSION pg_strata" >/dev/null
psql_demo -c "CREATE TABLE orders (id bigint PRIMARY KEY, customer int, note text)" >/dev/null
for i in 1 2 3 4 5 6; do
    psql_demo -c "INSERT INTO orders SELECT g, g % 1000, repeat(md5(g::text), 8)
                  FROM generate_series(($i - 1) * 40000 + 1, $i * 40000) g" >/dev/null
    psql_demo -c "UPDATE orders SET note = 'updated' WHERE id % 97 = $i" >/dev/null
    last=$(psql_demo -c "SELECT pg_walfile_name(pg_switch_wal())")
done
for _ in $(seq 1 600); do
    done_wal=$(psql_demo -c "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
    [[ "$done_wal" < "$last" ]] || break
    sleep 0.1
done

echo "== archive_status()"
psql_demo -x -c "SELECT * FROM archive_status()"

echo "== every archived segment back through strata archive-get"
n=0
for obj in "$DEMO"/repo/demo/archive/*/*.zst; do
    name=$(basename "$obj" .zst)
    [ -f "$DEMO/data/pg_wal/$name" ] || continue
    strata archive-get "$name" "$DEMO/restored-$name" --repo "file://$DEMO/repo" --stanza demo
    cmp "$DEMO/restored-$name" "$DEMO/data/pg_wal/$name"
    rm -f "$DEMO/restored-$name"
    n=$((n + 1))
done
echo "$n segments fetched back, each byte-identical to the server's copy"
echo "repository: $(du -sh "$DEMO/repo/demo/archive" | cut -f1) of compressed WAL, $(ls "$DEMO"/repo/demo/summary/*/ | wc -l) block-change summaries"
if strata archive-get 0000000100000000000000FF "$DEMO/nothing" --repo "file://$DEMO/repo" --stanza demo; then
    echo "unexpected: a segment that was never archived was found" >&2; exit 1
else
    echo "a segment that was never archived: exit $? (what restore_command expects)"
fi

as_pg "$BIN/pg_ctl" -D "$DEMO/data" -m fast -w stop >/dev/null
echo "== demo done (cluster stopped; files in $DEMO)"
