#!/usr/bin/env bash
#! S3 side by side (run by hand, not by CI): pg_strata and pgBackRest 2.45 (`repo1-type=s3`) backing up
#! the same cluster into the same S3 server — moto's server mode on 127.0.0.1 over HTTPS (pgBackRest
#! speaks only HTTPS to S3; both tools skip certificate verification of moto's self-signed certificate).
#! The cluster is the backup bench's (pgbench scale SCALE plus as much incompressible data), archiving
#! into the bucket through pg_strata; same compression (zstd LEVEL) and processes for both tools.
#!
#! Each round (RUNS, default 3, tools interleaved, page cache dropped before each): a full backup by
#! each, then pgbench writes for a while, then an incremental by each (pgBackRest's default file-level
#! incremental); then RUNS restores of the newest backup (the chain) by each. Medians and ratios are
#! printed, and the S3 requests (from moto's request log) per archived segment and per backup.
#!
#! moto keeps objects in spooled temporary files: stored sizes are read through the S3 listing.
#!
#! Usage: [RUNS=3] bash bench/s3_bench.sh [SCALE=30] [PROCESSES=2] [LEVEL=3]
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:-30}
PROCS=${2:-2}
LEVEL=${3:-3}
RUNS=${RUNS:-3}

B=/tmp/strata-bench-s3
PORT=55437
RETENTION_FULL=$((RUNS + 1))
EXTRA_CONF="strata.retention_full = $RETENTION_FULL"
source bench/s3_common.sh
source bench/common.sh
write_strata_conf

# A mark in moto's request log (its line count).
requests() { wc -l < "$MOTO_LOG"; }
# The number of requests between two marks.
requests_count() { sed -n "$(($1 + 1)),$2p" "$MOTO_LOG" | grep -cE '"(GET|PUT|HEAD|POST|DELETE) ' || true; }
# Requests by method between two line numbers of moto's log: "PUT 12, GET 3".
requests_between() {
    sed -n "$(($1 + 1)),$2p" "$MOTO_LOG" | grep -oE '"(GET|PUT|HEAD|POST|DELETE) ' | tr -d '" ' | sort | uniq -c |
        awk '{printf "%s%s %d", sep, $2, $1; sep=", "} END {print ""}'
}
psql_pg() { runuser -u postgres -- "$BIN/psql" -XAt -h "$B" -p "$PORT" -U postgres -d postgres -c "$1"; }

# S3 requests of the archiver per segment: 20 segments of a little WAL each.
mark=$(requests)
first=$(psql_pg "SELECT pg_walfile_name(pg_current_wal_lsn())")
for i in $(seq 1 20); do psql_pg "CREATE TABLE IF NOT EXISTS ticks (i int); INSERT INTO ticks VALUES ($i)" >/dev/null; last=$(psql_pg "SELECT pg_walfile_name(pg_switch_wal())"); done
until [[ ! "$(psql_pg "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")" < "$last" ]]; do sleep 0.2; done
end=$(requests)
seg_requests=$(requests_between "$mark" "$end")
seg_count=$(requests_count "$mark" "$end")

declare -a sf pf si pi sr pr
s_full_req=""; p_full_req=""; s_incr_req=""; p_incr_req=""
for run in $(seq 1 "$RUNS"); do
    echo "== round $run/$RUNS: full backups, pgbench, incremental backups"
    drop_caches; m=$(requests)
    sf+=("$(measure runuser -u postgres -- "$BIN/psql" -XAt -h "$B" -p "$PORT" -U postgres -d postgres -c "SELECT backup_start('full')")")
    s_full_req=$(requests_between "$m" "$(requests)")
    drop_caches; m=$(requests)
    pf+=("$(measure runuser -u postgres -- pgbackrest --config="$B/pgbackrest.conf" --stanza=bench --type=full backup)")
    p_full_req=$(requests_between "$m" "$(requests)")
    as_pg "$BIN/pgbench" -n -T 20 -c 2 -h "$B" -p "$PORT" -U postgres postgres >/dev/null 2>&1
    drop_caches; m=$(requests)
    si+=("$(measure runuser -u postgres -- "$BIN/psql" -XAt -h "$B" -p "$PORT" -U postgres -d postgres -c "SELECT backup_start('incr')")")
    s_incr_req=$(requests_between "$m" "$(requests)")
    drop_caches; m=$(requests)
    pi+=("$(measure runuser -u postgres -- pgbackrest --config="$B/pgbackrest.conf" --stanza=bench --type=incr backup)")
    p_incr_req=$(requests_between "$m" "$(requests)")
done
stop_pg "$B/data"
for run in $(seq 1 "$RUNS"); do
    echo "== restores of the newest backup (full + incr), round $run/$RUNS"
    rm -rf "$B/restore-strata" "$B/restore-pgbr"
    drop_caches
    sr+=("$(measure runuser -u postgres -- strata restore --pgdata "$B/restore-strata" --process-max "$PROCS" --config "$B/strata.conf")")
    drop_caches
    pr+=("$(measure runuser -u postgres -- pgbackrest --config="$B/pgbackrest.conf" --stanza=bench --pg1-path="$B/restore-pgbr" restore)")
done
stored() { # bucket, prefix: bytes of the newest full backup
    python3 - "$1" "$2" "$MOTO_PORT" <<'PY'
import re, ssl, sys, urllib.request
bucket, prefix, port = sys.argv[1:4]
ctx = ssl._create_unverified_context()
keys, token = [], None
while True:
    url = f"https://127.0.0.1:{port}/{bucket}?list-type=2&prefix={prefix}"
    if token:
        url += "&continuation-token=" + urllib.parse.quote(token)
    body = urllib.request.urlopen(url, context=ctx).read().decode()
    keys += re.findall(r"<Key>([^<]*)</Key><LastModified>[^<]*</LastModified><ETag>[^<]*</ETag><Size>(\d+)</Size>", body)
    m = re.search(r"<NextContinuationToken>([^<]*)</NextContinuationToken>", body)
    if not m:
        break
    token = m.group(1)
fulls = sorted({re.search(r"/(\d{8}-\d{6}F)/", k).group(1) for k, _ in keys if re.search(r"/\d{8}-\d{6}F/", k)})
newest = fulls[-1]
print(sum(int(s) for k, s in keys if f"/{newest}/" in k))
PY
}
s_stored=$(stored strata-bench repo/bench/backup/)
p_stored=$(stored pgbr-bench "${B#/}/pgbr-repo/backup/bench/")
echo "runs (s): pg_strata full ${sf[*]} incr ${si[*]} restore ${sr[*]}; pgbackrest full ${pf[*]} incr ${pi[*]} restore ${pr[*]}"
echo "S3 requests of the archiver for 20 segments (with their summaries): $seg_requests ($seg_count in all: $(python3 -c "print($seg_count / 20)") per segment)"
echo "S3 requests, last full backup: pg_strata $s_full_req; pgbackrest $p_full_req"
echo "S3 requests, last incremental: pg_strata $s_incr_req; pgbackrest $p_incr_req"
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
python3 - "$db_bytes" "$s_stored" "$p_stored" "$(median "${sf[@]}")" "$(median "${pf[@]}")" "$(median "${si[@]}")" \
    "$(median "${pi[@]}")" "$(median "${sr[@]}")" "$(median "${pr[@]}")" <<'PY'
import sys
db, ss, ps = (int(x) / 1e6 for x in sys.argv[1:4])
sf, pf, si, pi, sr, pr = map(float, sys.argv[4:10])
print(f"database {db:.0f} MB on S3 (moto, HTTPS); medians")
print(f"{'':<12}{'full s':>9}{'stored MB':>11}{'incr s':>9}{'restore s':>11}")
print(f"{'pg_strata':<12}{sf:>9.2f}{ss:>11.0f}{si:>9.2f}{sr:>11.2f}")
print(f"{'pgbackrest':<12}{pf:>9.2f}{ps:>11.0f}{pi:>9.2f}{pr:>11.2f}")
print(f"pg_strata / pgbackrest: full {sf / pf:.2f}x, incr {si / pi:.2f}x, restore {sr / pr:.2f}x (targets: full and restore <= 0.80x)")
PY
rm -rf "$B/restore-strata" "$B/restore-pgbr"
