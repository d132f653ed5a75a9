#!/usr/bin/env bash
#! Recovery replay benchmark (run by hand, not by CI): how fast recovery replays archived WAL after a
#! restore, with the restore_command fetching one segment per call or ahead. One cluster (pgbench scale
#! SCALE), a full backup by pg_strata and by pgBackRest, then pgbench until about WAL_MB of WAL is
#! archived by both (pg_strata's archiver in the server; the same segments pushed with `pgbackrest
#! archive-push`). Each tool's backup is restored and the time from `pg_ctl start` to the end of
#! recovery (promoted) is measured:
#!   - pg_strata, restore_command without prefetch (--prefetch 0) and with it (the default, 8)
#!   - pgBackRest archive-get, synchronous and with archive-async=y (process-max PROCS, its spool)
#!
#! With REPO=s3 both repositories are buckets of moto's S3 server on 127.0.0.1 over HTTPS (bench/
#! s3_common.sh): every segment fetched is then a GET with its latency, where prefetching pays.
#!
#! S3_LATENCY_MS=N (with REPO=s3) adds N ms per request, as a distant S3 endpoint would.
#!
#! Usage: [REPO=local|s3] [S3_LATENCY_MS=N] bash bench/recovery_bench.sh [SCALE=20] [WAL_MB=2048] [PROCESSES=2]
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:-20}
WAL_MB=${2:-2048}
PROCS=${3:-2}
LEVEL=3
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

declare -A took
for variant in strata-plain strata-prefetch pgbr-sync pgbr-async; do
    dir="$B/restore-$variant"
    rm -rf "$dir"
    case $variant in
        strata-plain) as_pg strata restore --pgdata "$dir" --prefetch 0 --no-lease "${STRATA_REPO[@]}" >/dev/null ;;
        strata-prefetch) as_pg strata restore --pgdata "$dir" --no-lease "${STRATA_REPO[@]}" >/dev/null ;;
        pgbr-sync)
            as_pg pgbackrest --config="$B/pgbackrest.conf" --stanza=bench --pg1-path="$dir" \
                "--recovery-option=restore_command=pgbackrest --config=$B/pgbackrest.conf --stanza=bench --pg1-path=$dir archive-get %f \"%p\"" restore
            ;;
        pgbr-async)
            mkdir -p "$B/pgbr-spool"; chown postgres "$B/pgbr-spool"
            as_pg pgbackrest --config="$B/pgbackrest.conf" --stanza=bench --pg1-path="$dir" \
                "--recovery-option=restore_command=pgbackrest --config=$B/pgbackrest.conf --stanza=bench --archive-async --spool-path=$B/pgbr-spool --process-max=$PROCS --pg1-path=$dir archive-get %f \"%p\"" restore
            ;;
    esac
    took[$variant]=$(replay "$dir" $((PORT + 1)))
    echo "$variant: ${took[$variant]} s"
done
latency=""; [ -n "${S3_LATENCY_MS:-}" ] && latency=", ${S3_LATENCY_MS} ms per request"
python3 - "$segments" "${took[strata-plain]}" "${took[strata-prefetch]}" "${took[pgbr-sync]}" "${took[pgbr-async]}" "$REPO" "$latency" <<'PY'
import sys
n = int(sys.argv[1]); sp, sf, ps, pa = map(float, sys.argv[2:6])
print(f"recovery of {n} archived segments ({n * 16} MB, {sys.argv[6]} repositories{sys.argv[7]}), from pg_ctl start to promoted:")
for name, t in (("pg_strata, no prefetch", sp), ("pg_strata, prefetch 8", sf), ("pgBackRest, sync", ps), ("pgBackRest, archive-async", pa)):
    print(f"  {name:<28}{t:>8.2f} s{n / t:>8.1f} segments/s")
print(f"prefetch / no prefetch: {sf / sp:.2f}x (target <= 0.5x); prefetch / pgBackRest async: {sf / pa:.2f}x (target <= 0.8x)")
PY
