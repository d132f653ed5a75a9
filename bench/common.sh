#! Shared by the benchmarks (sourced, not run): installs what they need, creates the benchmark cluster
#! (pgbench scale $SCALE plus a table of random, incompressible bytes of about the same size; archiving
#! through pg_strata with zstd $LEVEL and $PROCS processes), waits for the archiver, and configures a
#! pgBackRest stanza on the same cluster with the same compression and processes. Expects SCALE, PROCS,
#! LEVEL and B (the work directory) to be set; defines as_pg, stop_pg, PSQL, measure, drop_caches.
bash scripts/setup.sh >/dev/null
command -v pgbackrest >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbackrest >/dev/null; }
command -v zstd >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zstd >/dev/null; }

BIN=/usr/lib/postgresql/15/bin
as_pg() { runuser -u postgres -- "$@"; }
stop_pg() { if [ -f "$1/postmaster.pid" ]; then as_pg "$BIN/pg_ctl" -D "$1" -m fast -w stop >/dev/null || true; fi; }
stop_pg "$B/data"
rm -rf "$B"; mkdir -p "$B/strata-repo" "$B/strata-repo2" "$B/pgbr-repo" "$B/pgbr-repo2" "$B/pgbr-log"
chown -R postgres:postgres "$B"

echo "== cluster: pgbench scale $SCALE plus random data of the same size"
as_pg "$BIN/initdb" -D "$B/data" -U postgres -A trust --data-checksums >/dev/null
cat >> "$B/data/postgresql.conf" <<CONF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$B'
shared_preload_libraries = 'pg_strata'
archive_mode = on
archive_library = 'pg_strata'
strata.repo1 = 'file://$B/strata-repo'
strata.stanza = 'bench'
strata.compress_type = 'zstd'
strata.compress_level = $LEVEL
strata.process_max = $PROCS
max_wal_size = '4GB'
synchronous_commit = off
${EXTRA_CONF:-}
CONF
as_pg "$BIN/pg_ctl" -D "$B/data" -l "$B/server.log" -w start >/dev/null
PSQL() { as_pg "$BIN/psql" -XAt -v ON_ERROR_STOP=1 -h "$B" -p "$PORT" -U postgres -d postgres "$@"; }
PSQL -c "CREATE EXTENSION pg_strata" >/dev/null
PSQL -c "CREATE EXTENSION IF NOT EXISTS pgcrypto" >/dev/null
as_pg "$BIN/pgbench" -i -s "$SCALE" -q -h "$B" -p "$PORT" -U postgres postgres >/dev/null 2>&1
pgbench_bytes=$(PSQL -c "SELECT pg_database_size('postgres')")
rows=$(( pgbench_bytes / 1100 ))
# 1000 random bytes per row (gen_random_bytes gives at most 1024 per call): incompressible.
PSQL -c "CREATE TABLE random_data AS SELECT g AS id, gen_random_bytes(1000) AS payload FROM generate_series(1, $rows) g" >/dev/null
PSQL -c "CHECKPOINT" >/dev/null
db_bytes=$(PSQL -c "SELECT sum(pg_database_size(oid)) FROM pg_database")
# Let the archiver finish the load's WAL first: otherwise it compresses in the background of the
# measurements (and the first backup would wait for that backlog).
last=$(PSQL -c "SELECT pg_walfile_name(pg_switch_wal())")
echo "waiting for the archiver to catch up to $last"
until [[ ! "$(PSQL -c "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")" < "$last" ]]; do sleep 1; done
echo "database: $(( db_bytes / 1048576 )) MB"

measure() { python3 - "$@" <<'PY'
import resource, subprocess, sys, time
t = time.monotonic()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(f"{time.monotonic() - t:.3f}")
PY
}
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }

cat > "$B/pgbackrest.conf" <<CONF
[global]
repo1-path=$B/pgbr-repo
compress-type=zst
compress-level=$LEVEL
process-max=$PROCS
log-path=$B/pgbr-log
lock-path=$B/pgbr-log
log-level-console=warn
log-level-file=off
start-fast=y
archive-check=n
repo1-retention-full=${RETENTION_FULL:-9}
${PGBR_EXTRA_GLOBAL:-}
[bench]
pg1-path=$B/data
pg1-socket-path=$B
pg1-port=$PORT
pg1-user=postgres
CONF
chown postgres "$B/pgbackrest.conf"
as_pg pgbackrest --config="$B/pgbackrest.conf" --stanza=bench stanza-create >/dev/null

