#!/usr/bin/env bash
#! Archiving benchmark (run by hand, not by CI): archives the same set of real WAL segments with
#! pg_strata (`strata archive-push`: the in-server archiver's code, block-change summaries included)
#! and with `pgbackrest archive-push` (Debian's pgbackrest), same compression type and level, and prints
#! segments/s, MB/s and CPU seconds of both, and their ratios.
#!
#! Usage: bash bench/archive_bench.sh [SEGMENTS=48] [COMPRESS=zst|lz4] [LEVEL=3]
set -euo pipefail
cd "$(dirname "$0")/.."
SEGMENTS=${1:-48}
COMPRESS=${2:-zst}
LEVEL=${3:-3}
STRATA_COMPRESS=$([ "$COMPRESS" = zst ] && echo zstd || echo "$COMPRESS")

bash scripts/setup.sh >/dev/null
command -v pgbackrest >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbackrest >/dev/null; }

B=/tmp/strata-bench-archive
BIN=/usr/lib/postgresql/15/bin
PORT=55433
as_pg() { runuser -u postgres -- "$@"; }
if [ -f "$B/data/postmaster.pid" ]; then as_pg "$BIN/pg_ctl" -D "$B/data" -m fast -w stop >/dev/null || true; fi
rm -rf "$B"; mkdir -p "$B/wal" "$B/strata-repo" "$B/pgbr-repo" "$B/pgbr-log"
chown -R postgres:postgres "$B"

echo "== producing $SEGMENTS real WAL segments with pgbench"
as_pg "$BIN/initdb" -D "$B/data" -U postgres -A trust --data-checksums >/dev/null
cat >> "$B/data/postgresql.conf" <<CONF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$B'
wal_keep_size = '8GB'
max_wal_size = '8GB'
synchronous_commit = off
CONF
as_pg "$BIN/pg_ctl" -D "$B/data" -l "$B/server.log" -w start >/dev/null
PSQL() { as_pg "$BIN/psql" -XAt -h "$B" -p "$PORT" -U postgres -d postgres "$@"; }
as_pg "$BIN/pgbench" -i -s 20 -h "$B" -p "$PORT" -U postgres postgres >/dev/null 2>&1
start_seg=$(PSQL -c "SELECT pg_walfile_name(pg_current_wal_lsn())")
# A mix of real record types: OLTP transactions (pgbench), then bulk updates (heap, btree, full-page
# images after checkpoints) until there are enough segments.
as_pg "$BIN/pgbench" -n -T 20 -c 2 -h "$B" -p "$PORT" -U postgres postgres >/dev/null 2>&1
while :; do
    PSQL -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 3 = 0" >/dev/null
    PSQL -c "CHECKPOINT" >/dev/null
    cur=$(PSQL -c "SELECT pg_walfile_name(pg_current_wal_lsn())")
    n=$(( 16#${cur:16:8} - 16#${start_seg:16:8} ))
    [ "$n" -ge "$SEGMENTS" ] && break
done
PSQL -c "CHECKPOINT" >/dev/null
for f in $(ls "$B/data/pg_wal" | grep -E '^[0-9A-F]{24}$' | sort); do
    [[ "$f" < "$start_seg" ]] && continue
    [[ "$f" < "$cur" ]] || continue
    cp "$B/data/pg_wal/$f" "$B/wal/"
done
SYSID=$(PSQL -c "SELECT system_identifier FROM pg_control_system()")
NSEG=$(ls "$B/wal" | wc -l)
MB=$(( NSEG * 16 ))
chown -R postgres:postgres "$B"
echo "$NSEG segments ($MB MB) from a pgbench workload"

# Wall and CPU (user+sys of all children) of a command, in seconds.
measure() { python3 - "$@" <<'PY'
import os, resource, subprocess, sys, time
t = time.monotonic()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
wall = time.monotonic() - t
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{wall:.3f} {ru.ru_utime + ru.ru_stime:.3f}")
PY
}

echo "== pg_strata: one process, as the in-server archiver ($STRATA_COMPRESS level $LEVEL, summaries included)"
read -r s_wall s_cpu < <(measure runuser -u postgres -- strata archive-push "$B"/wal/* \
    --repo "file://$B/strata-repo" --stanza bench --compress-type "$STRATA_COMPRESS" --compress-level "$LEVEL")
echo "== pg_strata: one process per segment (as archive_command would run it)"
rm -rf "$B/strata-repo2"; mkdir "$B/strata-repo2"; chown postgres "$B/strata-repo2"
cat > "$B/strata-each.sh" <<SH
for f in $B/wal/*; do strata archive-push "\$f" --repo file://$B/strata-repo2 --stanza bench --compress-type $STRATA_COMPRESS --compress-level $LEVEL --system-identifier $SYSID || exit 1; done
SH
read -r s1_wall s1_cpu < <(measure runuser -u postgres -- bash "$B/strata-each.sh")

echo "== pgbackrest archive-push, one process per segment ($COMPRESS level $LEVEL)"
cat > "$B/pgbackrest.conf" <<CONF
[global]
repo1-path=$B/pgbr-repo
compress-type=$COMPRESS
compress-level=$LEVEL
log-path=$B/pgbr-log
lock-path=$B/pgbr-log
log-level-console=warn
log-level-file=off
start-fast=y
[bench]
pg1-path=$B/data
pg1-socket-path=$B
pg1-port=$PORT
pg1-user=postgres
CONF
chown postgres "$B/pgbackrest.conf"
as_pg pgbackrest --config="$B/pgbackrest.conf" --stanza=bench stanza-create >/dev/null
cat > "$B/pgbr-each.sh" <<SH
for f in $B/wal/*; do pgbackrest --config=$B/pgbackrest.conf --stanza=bench archive-push "\$f" || exit 1; done
SH
read -r p_wall p_cpu < <(measure runuser -u postgres -- bash "$B/pgbr-each.sh")
as_pg "$BIN/pg_ctl" -D "$B/data" -m fast -w stop >/dev/null

s_stored=$(du -sb "$B/strata-repo/bench/archive" | cut -f1)
p_stored=$(du -sb "$B/pgbr-repo/archive" | cut -f1)
python3 - "$NSEG" "$MB" "$s_wall" "$s_cpu" "$s1_wall" "$s1_cpu" "$p_wall" "$p_cpu" "$s_stored" "$p_stored" <<'PY'
import sys
n, mb = int(sys.argv[1]), int(sys.argv[2])
sw, sc, s1w, s1c, pw, pc = map(float, sys.argv[3:9])
ss, ps = int(sys.argv[9]), int(sys.argv[10])
def row(name, w, c):
    print(f"{name:<34} {w:8.2f} s wall {c:8.2f} s CPU {n/w:8.1f} seg/s {mb/w:8.1f} MB/s {mb/c:8.1f} MB per CPU-s")
row("pg_strata (one process)", sw, sc)
row("pg_strata (process per segment)", s1w, s1c)
row("pgbackrest archive-push", pw, pc)
print(f"stored: pg_strata {ss/1e6:.1f} MB, pgbackrest {ps/1e6:.1f} MB (of {mb} MB)")
print(f"throughput per core, pg_strata / pgbackrest: {pc/sc:.2f}x (one process), {pc/s1c:.2f}x (process per segment)")
print(f"wall time ratio pgbackrest / pg_strata: {pw/sw:.2f}x")
PY
