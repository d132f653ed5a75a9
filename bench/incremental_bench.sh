#!/usr/bin/env bash
#! Incremental backup benchmark (run by hand, not by CI): pg_strata's block-level incrementals against
#! pgBackRest's (Debian's 2.45) file-level ones (repo1, its default) and block incremental ones (repo2:
#! repo-bundle=y, repo-block=y, which 2.45 has as a beta feature, beta=y), on one cluster (pgbench scale
#! SCALE plus a table of random bytes of about the same size), with the same compression and processes.
#!
#!  1. full backup with both tools;
#!  2. "recent rows": a contiguous 1% of the rows of each table updated (as real workloads mostly touch
#!     recent rows), then incr with both: wall time, bytes read from PGDATA, bytes stored, ratios;
#!  3. three more rounds of it, so that each tool has a chain of 5 (full + 4 incr), then a fresh full of
#!     the same data; restores of the chain and of that full (pg_strata), of the chain (pgBackRest);
#!  4. "random rows": 1% of the rows updated at random (many more blocks change), then incr with both.
#!
#! Bytes read from PGDATA: pg_strata reports them (strata_backups.read_size); for pgBackRest, the
#! block input operations of its processes (page cache dropped first) times 512. Before each backup a
#! CHECKPOINT (untimed), so that no tool pays for the buffers the update dirtied. For each incr it
#! prints where the stored bytes go per relation, for pg_strata and pgBackRest's block incremental
#! (bench/where_bytes_go.py), against the floor of the new random bytes the update wrote.
#!
#! Usage: bash bench/incremental_bench.sh [SCALE=100] [PROCESSES=2] [LEVEL=3]
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:-100}
PROCS=${2:-2}
LEVEL=${3:-3}

B=/tmp/strata-bench-incr
PORT=55435
RETENTION_FULL=9
# No autovacuum: its hint-bit and visibility-map writes would add changed blocks of their own between
# the backups (for both tools); the load is vacuumed once below instead.
EXTRA_CONF="autovacuum = off"
PGBR_EXTRA_GLOBAL="repo2-path=$B/pgbr-repo2
repo2-bundle=y
repo2-block=y
repo2-retention-full=9
beta=y"
source bench/common.sh

PGBR() { as_pg pgbackrest --config="$B/pgbackrest.conf" --stanza=bench "$@"; }
echo "== VACUUM ANALYZE of the load, then the archiver catches up"
PSQL -c "VACUUM ANALYZE" >/dev/null
accounts=$(PSQL -c "SELECT count(*) FROM pgbench_accounts")
randoms=$(PSQL -c "SELECT count(*) FROM random_data")

# Seconds and block input operations of a command (GNU time counts its waited-for children too).
timed() { /usr/bin/time -f '%e %I' "$@" 2>&1 >/dev/null | tail -1; }
wait_archived() {
    local last
    last=$(PSQL -c "SELECT pg_walfile_name(pg_switch_wal())")
    until [[ ! "$(PSQL -c "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")" < "$last" ]]; do sleep 0.5; done
}
wait_archived
# Before each backup: a checkpoint, so that no tool pays for writing the buffers the update dirtied
# (whichever ran first after the update did, and pg_strata always ran first), then the page cache
# dropped.
settle() { PSQL -c "CHECKPOINT" >/dev/null; drop_caches; }
strata_backup() {  # kind -> "seconds label"
    settle
    local t0 t1 label
    t0=$(date +%s.%N)
    label=$(PSQL -c "SELECT backup_start('$1')")
    t1=$(date +%s.%N)
    echo "$(python3 -c "print(f'{$t1 - $t0:.3f}')") $label"
}
pgbr_block_backup() {  # type -> "seconds read_bytes stored_bytes" (repo2: block incremental)
    settle
    local r label
    r=$(timed runuser -u postgres -- pgbackrest --config="$B/pgbackrest.conf" --stanza=bench --repo=2 --type="$1" backup)
    label=$(ls "$B/pgbr-repo2/backup/bench" | grep -E '^[0-9]{8}-[0-9]{6}F' | sort | tail -1)
    echo "$(echo "$r" | cut -d' ' -f1) $(( $(echo "$r" | cut -d' ' -f2) * 512 )) $(du -sb "$B/pgbr-repo2/backup/bench/$label" | cut -f1)"
}
strata_facts() { PSQL -c "SELECT read_size, stored_size, method FROM strata_backups WHERE label = '$1'" | tr '|' ' '; }
pgbr_backup() {  # type -> "seconds read_bytes stored_bytes"
    settle
    local r label
    r=$(timed runuser -u postgres -- pgbackrest --config="$B/pgbackrest.conf" --stanza=bench --type="$1" backup)
    label=$(ls "$B/pgbr-repo/backup/bench" | grep -E '^[0-9]{8}-[0-9]{6}F' | sort | tail -1)
    echo "$(echo "$r" | cut -d' ' -f1) $(( $(echo "$r" | cut -d' ' -f2) * 512 )) $(du -sb "$B/pgbr-repo/backup/bench/$label" | cut -f1)"
}
recent_rows() {  # round: a contiguous 1% of each table, a different stretch each round
    local a0=$(( $1 * accounts / 100 + 1 )) a1=$(( ($1 + 1) * accounts / 100 ))
    local r0=$(( $1 * randoms / 100 + 1 )) r1=$(( ($1 + 1) * randoms / 100 ))
    PSQL -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid BETWEEN $a0 AND $a1" >/dev/null
    PSQL -c "UPDATE random_data SET payload = gen_random_bytes(1000) WHERE id BETWEEN $r0 AND $r1" >/dev/null
    PSQL -c "UPDATE pgbench_branches SET bbalance = bbalance + 1; UPDATE pgbench_tellers SET tbalance = tbalance + 1" >/dev/null
    wait_archived
}
random_rows() {
    PSQL -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid IN (SELECT 1 + (random() * ($accounts - 1))::int FROM generate_series(1, $accounts / 100))" >/dev/null
    PSQL -c "UPDATE random_data SET payload = gen_random_bytes(1000) WHERE id IN (SELECT 1 + (random() * ($randoms - 1))::int FROM generate_series(1, $randoms / 100))" >/dev/null
    wait_archived
}
report() {  # title strata_secs strata_read strata_stored pgbr_secs pgbr_read pgbr_stored strata_full_secs method blk_secs blk_read blk_stored
    python3 - "$@" <<'PY'
import sys
title, ss, sr, sst, ps, pr, pst, sfull, method, bs, br, bst = sys.argv[1:]
ss, sr, sst, ps, pr, pst, sfull, bs, br, bst = map(float, (ss, sr, sst, ps, pr, pst, sfull, bs, br, bst))
mb = lambda b: f"{b / 1e6:.1f} MB"
print(f"-- {title}")
print(f"{'':<18}{'wall s':>9}{'read':>13}{'stored':>12}")
print(f"{'pg_strata':<18}{ss:>9.2f}{mb(sr):>13}{mb(sst):>12}   (method {method})")
print(f"{'pgbackrest':<18}{ps:>9.2f}{mb(pr):>13}{mb(pst):>12}")
print(f"{'pgbackrest block':<18}{bs:>9.2f}{mb(br):>13}{mb(bst):>12}   (repo-bundle, repo-block)")
print(f"pg_strata / pgbackrest: wall {ss / ps:.2f}x (target <= 0.30x), read {sr / max(pr, 1):.3f}x, "
      f"stored {sst / pst:.3f}x (target <= 0.10x); pg_strata incr / its full: {ss / sfull:.2f}x (target <= 0.10x)")
print(f"pg_strata / pgbackrest block incremental: wall {ss / bs:.2f}x (target <= 0.10x), "
      f"read {sr / max(br, 1):.3f}x, stored {sst / bst:.2f}x (target <= 0.50x)")
PY
}

# Where one incr's bytes go, per relation, for pg_strata and pgBackRest's block incremental (the latest
# backup of repo2), against the floor: the new random bytes the update wrote into random_data.
where_bytes_go() {  # strata label -> appended to $B/where_bytes_go.txt
    local pgbr_label
    pgbr_label=$(ls "$B/pgbr-repo2/backup/bench" | grep -E '^[0-9]{8}-[0-9]{6}F' | sort | tail -1)
    PSQL -c "SELECT 'base/' || (SELECT oid FROM pg_database WHERE datname = current_database()) || '/' ||
        relfilenode, relname FROM pg_class WHERE relfilenode <> 0" > "$B/relmap"
    python3 bench/where_bytes_go.py "$B/strata-repo/bench/backup/$1/manifest.json" \
        "$B/pgbr-repo2/backup/bench/$pgbr_label/backup.manifest" "$B/relmap" \
        $(( randoms / 100 * 1000 )) "new random bytes in random_data" >> "$B/where_bytes_go.txt"
}

incr_with_both() {  # title -> the report of one incr with each tool
    local s_secs s_label s_read s_stored s_method p_secs p_read p_stored
    read -r s_secs s_label <<<"$(strata_backup incr)"
    read -r s_read s_stored s_method <<<"$(strata_facts "$s_label")"
    read -r p_secs p_read p_stored <<<"$(pgbr_backup incr)"
    read -r b_secs b_read b_stored <<<"$(pgbr_block_backup incr)"
    where_bytes_go "$s_label"
    report "$1" "$s_secs" "$s_read" "$s_stored" "$p_secs" "$p_read" "$p_stored" "$s_full" "$s_method" \
        "$b_secs" "$b_read" "$b_stored"
}

echo "== full backups (page cache dropped before each)"
read -r s_full full_label <<<"$(strata_backup full)"
read -r p_full _ _ <<<"$(pgbr_backup full)"
read -r b_full _ _ <<<"$(pgbr_block_backup full)"
echo "pg_strata full $s_full s, pgbackrest full $p_full s, pgbackrest block full $b_full s"

echo "== recent rows: a contiguous 1% of the rows of each table updated, then incr"
recent_rows 10
recent_report=$(incr_with_both "recent rows (1% contiguous per table)")
echo "$recent_report"

echo "== three more rounds (chains of 5), then a full of the same data"
for round in 11 12 13; do
    recent_rows "$round"
    strata_backup incr >/dev/null
    pgbr_backup incr >/dev/null
    pgbr_block_backup incr >/dev/null
done
read -r _ same_full <<<"$(strata_backup full)"
chain_label=$(PSQL -c "SELECT label FROM strata_backups WHERE kind = 'incr' ORDER BY stop_lsn DESC LIMIT 1")
chain_len=$(( $(PSQL -c "SELECT cardinality(\"references\") FROM strata_backups WHERE label = '$chain_label'") + 1 ))

echo "== random rows: 1% of the rows updated at random, then incr"
random_rows
random_report=$(incr_with_both "random rows (1% at random per table)")
echo "$random_report"
stop_pg "$B/data"

echo "== restores (page cache dropped before each): pg_strata chain of $chain_len, pg_strata full of the same data, pgbackrest chain"
restore_strata() {
    rm -rf "$B/restore"; drop_caches
    measure runuser -u postgres -- strata restore --pgdata "$B/restore" --set "$1" --process-max "$PROCS" --repo "file://$B/strata-repo" --stanza bench
}
pgbr_chain=$(ls "$B/pgbr-repo/backup/bench" | grep -E '_[0-9]{8}-[0-9]{6}I$' | sort | sed -n 4p)
chain_times=(); full_times=(); pgbr_times=()
for run in 1 2 3; do
    chain_times+=("$(restore_strata "$chain_label")")
    full_times+=("$(restore_strata "$same_full")")
    rm -rf "$B/restore"; drop_caches
    pgbr_times+=("$(measure runuser -u postgres -- pgbackrest --config="$B/pgbackrest.conf" --stanza=bench --pg1-path="$B/restore" --set="$pgbr_chain" restore)")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
c=$(median "${chain_times[@]}"); f=$(median "${full_times[@]}"); p=$(median "${pgbr_times[@]}")
rm -rf "$B/restore"

echo
echo "== results (database $(( db_bytes / 1048576 )) MB, zstd $LEVEL, $PROCS processes)"
echo "full backup: pg_strata $s_full s, pgbackrest $p_full s, pgbackrest block $b_full s"
echo "$recent_report"
echo "$random_report"
echo "-- where the bytes go (recent rows, then random rows)"
cat "$B/where_bytes_go.txt"
python3 - "$c" "$f" "$p" "$chain_len" "${chain_times[*]}" "${full_times[*]}" "${pgbr_times[*]}" <<'PY'
import sys
c, f, p = map(float, sys.argv[1:4])
n = sys.argv[4]
print(f"-- restore (medians of 3; runs: chain {sys.argv[5]}, full {sys.argv[6]}, pgbackrest {sys.argv[7]})")
print(f"pg_strata chain of {n}: {c:.2f} s; pg_strata full of the same data: {f:.2f} s "
      f"-> {c / f:.2f}x (target <= 1.20x); pgbackrest chain of 5: {p:.2f} s -> pg_strata/pgbackrest {c / p:.2f}x")
PY
