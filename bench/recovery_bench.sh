#!/usr/bin/env bash
#! Recovery replay benchmark (run by hand, not by CI): how fast recovery replays archived WAL after a
#! restore, with the restore_command fetching one segment per call or ahead. One cluster (pgbench scale
#! SCALE), a full backup by pg_strata and by pgBackRest, then pgbench until about WAL_MB of WAL is
#! archived by both (pg_strata's archiver in the server; the same segments pushed with `pgbackrest
#! archive-push`). Each tool's backup is restored and the time from `pg_ctl start` to the end of
#! recovery (promoted) is measured:
#!   - pg_strata, restore_command without prefetch (--prefetch 0) and with it (the default, 8)
#!   - pgBackRest archive-get, synchronous and with archive-async=y (process-max PROCS, its spool)
#!   - the floor: `cp` from a local directory of the uncompressed segments (no tool, no checks), which
#!     no restore_command can beat: what is left is PostgreSQL's own replay
#! RUNS rounds (default 1), the variants interleaved in each; medians.
#!
#! With REPO=s3 both repositories are buckets of moto's S3 server on 127.0.0.1 over HTTPS (bench/
#! s3_common.sh): every segment fetched is then a GET with its latency, where prefetching pays.
#!
#! S3_LATENCY_MS=N (with REPO=s3) adds N ms per request, as a distant S3 endpoint would.
#!
#! Usage: [RUNS=1] [REPO=local|s3] [S3_LATENCY_MS=N] bash bench/recovery_bench.sh [SCALE=20] [WAL_MB=2048] [PROCESSES=2]
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:-20}
WAL_MB=${2:-2048}
PROCS=${3:-2}
LEVEL=3
RUNS=${RUNS:-1}
B=/tmp/strata-bench-recovery
PORT=55438
EXTRA_CONF="wal_keep_size = '16GB'
max_wal_size = '16GB'
checkpoint_timeout = '1h'"
REPO=${REPO:-local}
if [ "$REPO" = s3 ]; then
    source bench/s3_common.sh
fi
source bench/common.sh
STRATA_REPO=(--repo "file://$B/strata-repo" --stanza bench)
if [ "$REPO" = s3 ]; then
    write_strata_conf
    STRATA_REPO=(--config "$B/strata.conf")
fi

echo "== full backups"
start_seg=$(PSQL -c "SELECT pg_walfile_name(pg_current_wal_lsn())")
PSQL -c "SELECT backup_start('full')" >/dev/null
as_pg pgbackrest --config="$B/pgbackrest.conf" --stanza=bench --type=full backup
echo "== pgbench until ${WAL_MB} MB of WAL"
start_lsn=$(PSQL -c "SELECT pg_current_wal_lsn()")
while :; do
    as_pg "$BIN/pgbench" -n -T 10 -c 2 -h "$B" -p "$PORT" -U postgres postgres >/dev/null 2>&1
    done_mb=$(PSQL -c "SELECT (pg_current_wal_lsn() - '$start_lsn'::pg_lsn) / 1048576")
    [ "${done_mb%.*}" -ge "$WAL_MB" ] && break
done
last=$(PSQL -c "SELECT pg_walfile_name(pg_switch_wal())")
until [[ ! "$(PSQL -c "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")" < "$last" ]]; do sleep 1; done
echo "== pushing the same segments into pgBackRest's archive"
for f in $(ls "$B/data/pg_wal" | grep -E '^[0-9A-F]{24}$' | sort); do
    [[ "$f" < "$start_seg" ]] && continue
    [[ "$f" > "$last" ]] && continue
    as_pg pgbackrest --config="$B/pgbackrest.conf" --stanza=bench archive-push "$B/data/pg_wal/$f" >/dev/null
done
echo "== the same segments, uncompressed, in a local directory (the floor's cp)"
mkdir -p "$B/wal-plain"
for f in $(ls "$B/data/pg_wal" | grep -E '^[0-9A-F]{24}$' | sort); do
    [[ "$f" < "$start_seg" ]] && continue
    [[ "$f" > "$last" ]] && continue
    cp "$B/data/pg_wal/$f" "$B/wal-plain/"
done
cp "$B"/data/pg_wal/*.history "$B/wal-plain/" 2>/dev/null || true
chown -R postgres "$B/wal-plain"
segments=$(( $(printf '%d' 0x${last:16:8}) - $(printf '%d' 0x${start_seg:16:8}) + 1 ))
stop_pg "$B/data"

# Time from pg_ctl start to the end of recovery (the server promoted and accepting writes).
replay() {
    local dir=$1 port=$2
    echo "port = $port" >> "$dir/postgresql.auto.conf"
    echo "unix_socket_directories = '$B'" >> "$dir/postgresql.auto.conf"
    echo "archive_mode = off" >> "$dir/postgresql.auto.conf"
    drop_caches
    python3 - "$dir" "$port" "$B" "$BIN" <<'PY'
import subprocess, sys, time
d, port, sock, bin_ = sys.argv[1:5]
t = time.monotonic()
subprocess.run(["runuser", "-u", "postgres", "--", f"{bin_}/pg_ctl", "-D", d, "-l", f"{d}/replay.log", "-t", "3600", "-w", "start"], check=True, stdout=subprocess.DEVNULL)
while True:
    r = subprocess.run(["runuser", "-u", "postgres", "--", f"{bin_}/psql", "-XAt", "-h", sock, "-p", port, "-U", "postgres", "-d", "postgres", "-c", "SELECT pg_is_in_recovery()"], capture_output=True, text=True)
    if r.stdout.strip() == "f":
        break
    time.sleep(0.05)
print(f"{time.monotonic() - t:.2f}")
PY
    stop_pg "$dir"
}

VARIANTS="floor-cp strata-plain strata-prefetch pgbr-sync pgbr-async"
declare -A took
for run in $(seq 1 "$RUNS"); do
for variant in $VARIANTS; do
    dir="$B/restore-$variant"
    rm -rf "$dir"
    case $variant in
        floor-cp)
            as_pg strata restore --pgdata "$dir" --prefetch 0 --no-lease "${STRATA_REPO[@]}" >/dev/null
            # The last setting of a name in postgresql.auto.conf wins.
            echo "restore_command = 'cp $B/wal-plain/%f %p'" >> "$dir/postgresql.auto.conf"
            ;;
        strata-plain) as_pg strata restore --pgdata "$dir" --prefetch 0 --no-lease "${STRATA_REPO[@]}" >/dev/null ;;
        strata-prefetch) as_pg strata restore --pgdata "$dir" --no-lease "${STRATA_REPO[@]}" >/dev/null ;;
        pgbr-sync)
            as_pg pgbackrest --config="$B/pgbackrest.conf" --stanza=bench --pg1-path="$dir" \
                "--recovery-option=restore_command=pgbackrest --config=$B/pgbackrest.conf --stanza=bench --pg1-path=$dir archive-get %f \"%p\"" restore
            ;;
        pgbr-async)
            rm -rf "$B/pgbr-spool"; mkdir -p "$B/pgbr-spool"; chown postgres "$B/pgbr-spool"
            as_pg pgbackrest --config="$B/pgbackrest.conf" --stanza=bench --pg1-path="$dir" \
                "--recovery-option=restore_command=pgbackrest --config=$B/pgbackrest.conf --stanza=bench --archive-async --spool-path=$B/pgbr-spool --process-max=$PROCS --pg1-path=$dir archive-get %f \"%p\"" restore
            ;;
    esac
    t=$(replay "$dir" $((PORT + 1)))
    took[$variant]="${took[$variant]:-} $t"
    echo "round $run/$RUNS, $variant: $t s"
    rm -rf "$dir"
done
done
latency=""; [ -n "${S3_LATENCY_MS:-}" ] && latency=", ${S3_LATENCY_MS} ms per request"
python3 - "$segments" "$REPO" "$latency" "${took[floor-cp]}" "${took[strata-plain]}" "${took[strata-prefetch]}" "${took[pgbr-sync]}" "${took[pgbr-async]}" <<'PY'
import statistics, sys
n = int(sys.argv[1])
runs = [list(map(float, a.split())) for a in sys.argv[4:9]]
fl, sp, sf, ps, pa = (statistics.median(r) for r in runs)
print(f"recovery of {n} archived segments ({n * 16} MB, {sys.argv[2]} repositories{sys.argv[3]}), from pg_ctl start to promoted, medians of {len(runs[0])}:")
names = ("floor: cp of uncompressed WAL", "pg_strata, no prefetch", "pg_strata, prefetch 8", "pgBackRest, sync", "pgBackRest, archive-async")
for name, t, r in zip(names, (fl, sp, sf, ps, pa), runs):
    print(f"  {name:<31}{t:>8.2f} s{n / t:>8.1f} segments/s  {t / fl:.2f}x the floor  (runs: {' '.join(f'{x:.2f}' for x in r)})")
print(f"prefetch / no prefetch: {sf / sp:.2f}x (target <= 0.5x); prefetch / pgBackRest async: {sf / pa:.2f}x (target <= 0.8x)")
print(f"what fetching costs above the floor: no prefetch {sp - fl:+.2f} s, prefetch {sf - fl:+.2f} s, pgBackRest sync {ps - fl:+.2f} s, async {pa - fl:+.2f} s")
PY
