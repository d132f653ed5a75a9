#!/usr/bin/env bash
#! Full backup and restore benchmark (run by hand, not by CI). One cluster: pgbench scale SCALE plus a
#! table of random (incompressible) bytes of about the same size. Times, on the same data, with the same
#! compression and the same number of processes:
#!   - pg_strata: SELECT backup_start('full') (the worker; peak memory from its log line),
#!     strata restore --process-max N
#!   - pgbackrest backup --type=full / pgbackrest restore (Debian's pgbackrest 2.45)
#!   - pg_basebackup -Ft --compress=client-zstd / tar extraction
#! and prints the ratios pg_strata / pgbackrest; then strata verify of one full (against its restore
#! time) and of the whole repository, side by side with pgbackrest verify.
#!
#! Each measurement runs RUNS times (default 3, tools interleaved); medians are printed.
#!
#! Usage: [RUNS=3] bash bench/backup_bench.sh [SCALE=100] [PROCESSES=2] [LEVEL=3]
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:-100}
PROCS=${2:-2}
LEVEL=${3:-3}
RUNS=${RUNS:-3}

B=/tmp/strata-bench-backup
PORT=55434
RETENTION_FULL=$((RUNS + 1))
source bench/common.sh

# Each measurement RUNS times, the tools interleaved so that a slow moment of this shared machine does
# not fall on one tool only; the medians are reported.
s_backups=(); p_backups=(); b_backups=()
for run in $(seq 1 "$RUNS"); do
    echo "== full backups, round $run/$RUNS: pg_strata (worker, $PROCS threads), pgbackrest (process-max $PROCS), pg_basebackup (one process); zstd $LEVEL"
    drop_caches
    s_backups+=("$(measure runuser -u postgres -- "$BIN/psql" -XAt -h "$B" -p "$PORT" -U postgres -d postgres -c "SELECT backup_start('full')")")
    drop_caches
    p_backups+=("$(measure runuser -u postgres -- pgbackrest --config="$B/pgbackrest.conf" --stanza=bench --type=full backup)")
    rm -rf "$B/basebackup"
    drop_caches
    b_backups+=("$(measure runuser -u postgres -- "$BIN/pg_basebackup" -h "$B" -p "$PORT" -U postgres -D "$B/basebackup" -Ft -X fetch -c fast --compress=client-zstd:$LEVEL)")
done
s_peak=$(grep -o 'peak memory [0-9.]* MB' "$B/server.log" | tail -1 | grep -o '[0-9.]*' || echo "?")
s_stored=$(du -sb "$B/strata-repo/bench/backup/$(ls "$B/strata-repo/bench/backup" | tail -1)" | cut -f1)
p_stored=$(du -sb "$B/pgbr-repo/backup/bench/$(ls "$B/pgbr-repo/backup/bench" | grep -E 'F$' | tail -1)" | cut -f1)
b_stored=$(du -sb "$B/basebackup" | cut -f1)
stop_pg "$B/data"

s_restores=(); p_restores=(); b_restores=()
for run in $(seq 1 "$RUNS"); do
    echo "== restores, round $run/$RUNS ($PROCS processes)"
    rm -rf "$B/restore-strata" "$B/restore-pgbr" "$B/restore-base"
    drop_caches
    s_restores+=("$(measure runuser -u postgres -- strata restore --pgdata "$B/restore-strata" --process-max "$PROCS" --repo "file://$B/strata-repo" --stanza bench)")
    drop_caches
    p_restores+=("$(measure runuser -u postgres -- pgbackrest --config="$B/pgbackrest.conf" --stanza=bench --pg1-path="$B/restore-pgbr" restore)")
    mkdir -p "$B/restore-base"; chown postgres "$B/restore-base"
    drop_caches
    b_restores+=("$(measure runuser -u postgres -- tar -I zstd -xf "$B/basebackup/base.tar.zst" -C "$B/restore-base")")
done
# Verification: one full backup (pg_strata --set, against its restore time) and the whole repository
# (every backup and the archive) side by side with pgbackrest verify.
s_label=$(ls "$B/strata-repo/bench/backup" | tail -1)
drop_caches
s_verify_one=$(measure runuser -u postgres -- strata verify --set "$s_label" --process-max "$PROCS" --repo "file://$B/strata-repo" --stanza bench)
drop_caches
s_verify_all=$(measure runuser -u postgres -- strata verify --process-max "$PROCS" --repo "file://$B/strata-repo" --stanza bench)
drop_caches
p_verify_all=$(measure runuser -u postgres -- pgbackrest --config="$B/pgbackrest.conf" --stanza=bench verify)
rm -rf "$B/restore-strata2"
s_peak_restore=$( { /usr/bin/time -f '%M' runuser -u postgres -- strata restore --pgdata "$B/restore-strata2" --process-max "$PROCS" --repo "file://$B/strata-repo" --stanza bench >/dev/null; } 2>&1 | tail -1 )
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
echo "runs (s): pg_strata backup ${s_backups[*]} restore ${s_restores[*]}; pgbackrest backup ${p_backups[*]} restore ${p_restores[*]}; pg_basebackup backup ${b_backups[*]} restore ${b_restores[*]}"
s_backup=$(median "${s_backups[@]}"); p_backup=$(median "${p_backups[@]}"); b_backup=$(median "${b_backups[@]}")
s_restore=$(median "${s_restores[@]}"); p_restore=$(median "${p_restores[@]}"); b_restore=$(median "${b_restores[@]}")

python3 - "$db_bytes" "$s_backup" "$p_backup" "$b_backup" "$s_restore" "$p_restore" "$b_restore" "$s_stored" "$p_stored" "$b_stored" "$s_peak" "$s_peak_restore" "$s_verify_one" "$s_verify_all" "$p_verify_all" <<'PY'
import sys
db = int(sys.argv[1]) / 1e6
sb, pb, bb, sr, pr, br = map(float, sys.argv[2:8])
ss, ps, bs = (int(x) / 1e6 for x in sys.argv[8:11])
peak, peak_r = sys.argv[11], sys.argv[12]
print(f"database {db:.0f} MB; medians of the runs")
print(f"{'':<14}{'backup s':>10}{'MB/s':>8}{'stored MB':>11}{'restore s':>11}")
for name, b, s, r in (("pg_strata", sb, ss, sr), ("pgbackrest", pb, ps, pr), ("pg_basebackup", bb, bs, br)):
    print(f"{name:<14}{b:>10.2f}{db / b:>8.0f}{s:>11.0f}{r:>11.2f}")
print(f"pg_strata / pgbackrest wall time: backup {sb / pb:.2f}x, restore {sr / pr:.2f}x (target <= 0.80x)")
print(f"pg_strata / pg_basebackup wall time: backup {sb / bb:.2f}x, restore {sr / br:.2f}x")
print(f"peak memory: backup worker {peak} MB, strata restore {int(peak_r) / 1024:.0f} MB")
v1, va, pv = map(float, sys.argv[13:16])
print(f"verify one full: pg_strata {v1:.2f} s (its restore: {sr:.2f} s, {v1 / sr:.2f}x)")
print(f"verify the whole repository: pg_strata {va:.2f} s, pgbackrest {pv:.2f} s ({va / pv:.2f}x)")
PY
