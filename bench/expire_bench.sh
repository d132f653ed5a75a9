#!/usr/bin/env bash
#! Expiry benchmark (run by hand, not by CI): a real cluster archiving through pg_strata produces
#! SEGMENTS archived WAL segments (with their summaries) and BACKUPS backups (a full every fifth, incrs
#! between), then `strata expire` with a policy that keeps only the newest full is timed on a copy of
#! the repository: the dry run (decides from the manifests' heads and listings, reads no data object)
#! and the real run (deletes almost everything). The target: under 5 s for 1,000 segments and 50
#! backups on the development machine.
#!
#! Usage: bash bench/expire_bench.sh [SEGMENTS=1000] [BACKUPS=50]
set -euo pipefail
cd "$(dirname "$0")/.."
SEGMENTS=${1:-1000}
BACKUPS=${2:-50}
SCALE=1 PROCS=2 LEVEL=3 PORT=55437 B=/tmp/strata-bench-expire
source bench/common.sh

per_backup=$(( SEGMENTS / BACKUPS ))
echo "== $BACKUPS backups, $per_backup WAL segments before each"
for i in $(seq 1 "$BACKUPS"); do
    # A WAL record, then a switch: one (mostly empty) archived segment per round.
    PSQL -c "DO \$\$ BEGIN FOR i IN 1..$per_backup LOOP PERFORM pg_logical_emit_message(false, 'b', 'x'); PERFORM pg_switch_wal(); END LOOP; END \$\$" >/dev/null
    PSQL -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 50 = $(( i % 50 ))" >/dev/null
    kind=$([ $(( (i - 1) % 5 )) -eq 0 ] && echo full || echo incr)
    PSQL -c "SELECT backup_start('$kind')" >/dev/null
done
last=$(PSQL -c "SELECT pg_walfile_name(pg_switch_wal())")
until [[ ! "$(PSQL -c "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")" < "$last" ]]; do sleep 1; done
stop_pg "$B/data"
segments=$(find "$B/strata-repo/bench/archive" -type f -name '[0-9A-F]*' | wc -l)
summaries=$(find "$B/strata-repo/bench/summary" -type f | wc -l)
backups=$(find "$B/strata-repo/bench/backup" -name manifest.json | wc -l)
echo "repository: $segments archived WAL files, $summaries summaries, $backups backups, $(du -sm "$B/strata-repo" | cut -f1) MB"

rm -rf "$B/expire-repo"; cp -a "$B/strata-repo" "$B/expire-repo"
drop_caches
dry=$(measure strata expire --dry-run --retention-full 1 --repo "file://$B/expire-repo" --stanza bench)
real=$(measure strata expire --retention-full 1 --repo "file://$B/expire-repo" --stanza bench)
left_segments=$(find "$B/expire-repo/bench/archive" -type f -name '[0-9A-F]*' | wc -l)
left_backups=$(find "$B/expire-repo/bench/backup" -name manifest.json | wc -l)
echo "== strata expire --retention-full 1"
printf "dry run: %s s; real run: %s s (left: %s backups, %s WAL files)\n" "$dry" "$real" "$left_backups" "$left_segments"
