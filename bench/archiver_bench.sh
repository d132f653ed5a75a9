#!/usr/bin/env bash
#! The in-server archiver against pgBackRest's archive-push (run by hand, not by CI), two measures:
#!
#! 1. Draining a backlog: a cluster whose archiving was not configured while a pgbench load wrote
#!    SEGMENTS segments (all waiting as .ready) is copied once per tool; each copy is started, its
#!    archiving configured and reloaded, and the time until no segment waits is measured (the segments
#!    in the page cache, as recently written WAL is; DROP_CACHES=1 drops it first): pg_strata with strata.archive_process_max = 1 (no look-ahead) and 2 (the
#!    default), pgbackrest archive-push synchronous and with archive-async=y process-max=2.
#! 2. Sustained load (SUSTAINED seconds, default 300; 0 skips it): pgbench -N with 4 clients on a fresh
#!    cluster archiving through pg_strata (the default look-ahead), then through pgBackRest async; the
#!    number of waiting .ready segments is sampled every 10 s, and the WAL rate and the largest and
#!    last backlog are printed for each.
#!
#! Same compression everywhere (zstd LEVEL). Usage (DRAIN=0 skips the first measure):
#!   [SUSTAINED=300] [DRAIN=1] [RUNS=3] bash bench/archiver_bench.sh [SEGMENTS=100] [LEVEL=3]
set -euo pipefail
cd "$(dirname "$0")/.."
SEGMENTS=${1:-100}
LEVEL=${2:-3}
SUSTAINED=${SUSTAINED:-300}

bash scripts/setup.sh >/dev/null
command -v pgbackrest >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbackrest >/dev/null; }

B=/tmp/strata-bench-archiver
BIN=/usr/lib/postgresql/15/bin
PORT=55437
as_pg() { runuser -u postgres -- "$@"; }
stop_pg() { if [ -f "$1/postmaster.pid" ]; then as_pg "$BIN/pg_ctl" -D "$1" -m fast -w stop >/dev/null || true; fi; }
for d in "$B"/d-*; do [ -d "$d" ] && stop_pg "$d"; done
rm -rf "$B"; mkdir -p "$B"; chown postgres "$B"
PSQL() { as_pg "$BIN/psql" -XAt -v ON_ERROR_STOP=1 -h "$B" -p "$PORT" -U postgres -d postgres "$@"; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
waiting() { find "$1/pg_wal/archive_status" -name '*.ready' | wc -l; }
# Returns once no segment of the cluster at $1 waits; one process polling every 20 ms (a find per poll
# took a tenth of the machine's CPU from the archivers measured).
wait_drained() {
    python3 -c 'import os, sys, time
d = os.path.join(sys.argv[1], "pg_wal", "archive_status")
while any(n.endswith(".ready") for n in os.listdir(d)):
    time.sleep(0.02)' "$1"
}

# A cluster whose archiving is not configured yet (archive_mode on, pg_strata's library, no repository).
new_cluster() {
    as_pg "$BIN/initdb" -D "$1" -U postgres -A trust --data-checksums >/dev/null
    cat >> "$1/postgresql.conf" <<CONF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$B'
shared_preload_libraries = 'pg_strata'
archive_mode = on
archive_library = 'pg_strata'
strata.stanza = 'bench'
strata.compress_type = 'zstd'
strata.compress_level = $LEVEL
max_wal_size = '8GB'
wal_keep_size = '8GB'
synchronous_commit = off
CONF
}

# pgBackRest's configuration for a cluster at $1 with repository $2 (async when $3 = async).
pgbr_conf() {
    cat > "$B/pgbackrest-$(basename "$1").conf" <<CONF
[global]
repo1-path=$2
compress-type=zst
compress-level=$LEVEL
log-path=$B/pgbr-log
lock-path=$B/pgbr-log-$(basename "$1")
log-level-console=warn
log-level-file=off
spool-path=$B/pgbr-spool-$(basename "$1")
$([ "$3" = async ] && printf 'archive-async=y\nprocess-max=2\n')
[bench]
pg1-path=$1
pg1-socket-path=$B
pg1-port=$PORT
pg1-user=postgres
CONF
    mkdir -p "$2" "$B/pgbr-log" "$B/pgbr-log-$(basename "$1")" "$B/pgbr-spool-$(basename "$1")"
    chown -R postgres "$2" "$B"/pgbr-* "$B/pgbackrest-$(basename "$1").conf"
}

# pgBackRest runs as archive_command: the cluster at $1 starts with no archive library (changing
# archive_library makes the archiver exit, and the postmaster restarts it up to a minute later).
no_library() { echo "archive_library = ''" >> "$1/postgresql.conf"; }

# Configures archiving of the running cluster at $1 for tool $2 (strata1, strata2, pgbr-sync,
# pgbr-async) and reloads.
configure() {
    local d=$1 tool=$2
    case $tool in
        strata*)
            mkdir -p "$B/repo-$tool"; chown postgres "$B/repo-$tool"
            PSQL -c "ALTER SYSTEM SET strata.archive_process_max = ${tool#strata}" >/dev/null
            PSQL -c "ALTER SYSTEM SET strata.repo1 = 'file://$B/repo-$tool'" >/dev/null ;;
        pgbr-*)
            pgbr_conf "$d" "$B/repo-$tool" "${tool#pgbr-}"
            as_pg pgbackrest --config="$B/pgbackrest-$(basename "$d").conf" --stanza=bench stanza-create >/dev/null
            PSQL -c "ALTER SYSTEM SET archive_command = 'pgbackrest --config=$B/pgbackrest-$(basename "$d").conf --stanza=bench archive-push %p'" >/dev/null ;;
    esac
    PSQL -c "SELECT pg_reload_conf()" >/dev/null
}

if [ "${DRAIN:-1}" = 1 ]; then
echo "== producing $SEGMENTS segments of WAL (pgbench, then bulk updates) with archiving not configured"
new_cluster "$B/src"
as_pg "$BIN/pg_ctl" -D "$B/src" -l "$B/src.log" -w start >/dev/null
as_pg "$BIN/pgbench" -i -s 20 -q -h "$B" -p "$PORT" -U postgres postgres >/dev/null 2>&1
as_pg "$BIN/pgbench" -n -T 20 -c 2 -h "$B" -p "$PORT" -U postgres postgres >/dev/null 2>&1
until [ "$(waiting "$B/src")" -ge "$SEGMENTS" ]; do
    PSQL -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 3 = 0" >/dev/null
    PSQL -c "CHECKPOINT" >/dev/null
done
stop_pg "$B/src"
NSEG=$(waiting "$B/src")
echo "$NSEG segments wait"
fi

# RUNS rounds, the four tools interleaved in each (the machine's speed drifts within minutes); every
# round starts from fresh repositories and spools, and the medians are reported.
declare -A drain drain_cpu
for round in $(seq "${RUNS:-3}"); do
for tool in $([ "${DRAIN:-1}" = 1 ] && echo strata1 strata2 pgbr-sync pgbr-async); do
    d="$B/d-$tool"
    rm -rf "$B/repo-$tool" "$B/pgbr-spool-d-$tool"
    cp -a "$B/src" "$d"
    case $tool in pgbr-*) no_library "$d" ;; esac
    as_pg "$BIN/pg_ctl" -D "$d" -l "$d.log" -w start >/dev/null
    # The copy left the segments in the page cache, as recently written WAL is; DROP_CACHES=1 makes
    # the drain read them from the disk.
    [ "${DROP_CACHES:-0}" = 1 ] && drop_caches
    read -r _ u0 n0 s0 _ < /proc/stat
    start=$(date +%s.%N)
    configure "$d" "$tool"
    wait_drained "$d"
    t=$(echo "$(date +%s.%N) - $start" | bc)
    read -r _ u1 n1 s1 _ < /proc/stat
    # CPU time of the whole machine while draining (user + nice + system, in seconds).
    cpu=$(echo "scale=2; ($u1 + $n1 + $s1 - $u0 - $n0 - $s0) / $(getconf CLK_TCK)" | bc)
    drain[$tool]="${drain[$tool]:-} $t"
    drain_cpu[$tool]="${drain_cpu[$tool]:-} $cpu"
    echo "round $round, $tool: $NSEG segments in $t s, $cpu CPU-seconds"
    stop_pg "$d"
    rm -rf "$d"
done
done

sustained() {
    local tool=$1 d="$B/s-$1"
    # A new cluster: the drain's repository holds another cluster's stanza (and would be refused).
    rm -rf "$B/repo-$tool"
    new_cluster "$d"
    echo "checkpoint_timeout = '30s'" >> "$d/postgresql.conf"
    case $tool in pgbr-*) no_library "$d" ;; esac
    as_pg "$BIN/pg_ctl" -D "$d" -l "$d.log" -w start >/dev/null
    as_pg "$BIN/pgbench" -i -s 20 -q -h "$B" -p "$PORT" -U postgres postgres >/dev/null 2>&1
    configure "$d" "$tool"
    until [ "$(waiting "$d")" -eq 0 ]; do sleep 0.5; done
    local lsn0 lsn1
    lsn0=$(PSQL -c "SELECT pg_current_wal_lsn()")
    as_pg "$BIN/pgbench" -n -N -T "$SUSTAINED" -c 4 -j 2 -h "$B" -p "$PORT" -U postgres postgres >/dev/null 2>&1 &
    local bench=$! samples=()
    while kill -0 "$bench" 2>/dev/null; do
        sleep 10
        samples+=("$(waiting "$d")")
    done
    lsn1=$(PSQL -c "SELECT pg_current_wal_lsn()")
    local mb
    mb=$(PSQL -c "SELECT round(pg_wal_lsn_diff('$lsn1', '$lsn0') / 1048576)")
    local max=0
    for s in "${samples[@]}"; do [ "$s" -gt "$max" ] && max=$s; done
    echo "$tool: $mb MB of WAL in $SUSTAINED s ($(( mb / SUSTAINED )) MB/s); waiting segments every 10 s: ${samples[*]}; largest $max, last ${samples[-1]}"
    stop_pg "$d"
    rm -rf "$d"
}

if [ "$SUSTAINED" -gt 0 ]; then
    echo "== sustained load: pgbench -N -c 4 for $SUSTAINED s, checkpoints every 30 s"
    sustained strata2
    sustained pgbr-async
fi

[ "${DRAIN:-1}" = 1 ] || exit 0
python3 - "$NSEG" "${drain[strata1]}" "${drain[strata2]}" "${drain[pgbr-sync]}" "${drain[pgbr-async]}" \
    "${drain_cpu[strata1]}" "${drain_cpu[strata2]}" "${drain_cpu[pgbr-sync]}" "${drain_cpu[pgbr-async]}" <<'PY'
import statistics, sys
n = int(sys.argv[1])
s1, s2, ps, pa = ([float(x) for x in a.split()] for a in sys.argv[2:6])
cpus = [[float(x) for x in a.split()] for a in sys.argv[6:10]]
print(f"draining {n} waiting segments ({n * 16} MB), {len(s2)} rounds (CPU: the whole machine's, per segment):")
for (name, ts), cs in zip((("pg_strata, archive_process_max 1", s1), ("pg_strata, archive_process_max 2", s2),
                           ("pgbackrest archive-push, sync", ps), ("pgbackrest archive-push, async process-max 2", pa)), cpus):
    m = statistics.median(ts)
    c = statistics.median(cs) / n * 1000
    print(f"  {name:<46} median {m:6.2f} s {n / m:6.1f} segments/s {c:5.0f} CPU-ms/segment   rounds: {' '.join(f'{t:.2f}' for t in ts)}")
for i in range(len(s2)):
    print(f"  round {i + 1}: pg_strata (2) rate / pgbackrest sync {ps[i] / s2[i]:.2f}x, / async {pa[i] / s2[i]:.2f}x")
m = statistics.median
print(f"medians: pg_strata (2) rate / pgbackrest sync: {m(ps) / m(s2):.2f}x (target >= 2x); "
      f"/ async: {m(pa) / m(s2):.2f}x (target >= 1.2x)")
print(f"look-ahead: {m(s1) / m(s2):.2f}x the rate of one segment at a time")
PY
