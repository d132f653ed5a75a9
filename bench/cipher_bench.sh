#!/usr/bin/env bash
#! What encryption costs (run by hand, not by CI). The backup bench's cluster (pgbench scale SCALE plus as
#! much incompressible data), archiving into two pg_strata repositories: repo1 plain, repo2 AES-256-GCM;
#! pgBackRest with two repositories on the same cluster: repo1 plain, repo2 aes-256-cbc. Same compression
#! (zstd LEVEL) and processes everywhere. Each round (RUNS, default 3, tools interleaved, plain and
#! encrypted in turn first, page cache dropped before each): a full backup into each of the four, then a restore from each. Prints the
#! medians, each tool's encrypted / plain ratio (target for pg_strata: <= 1.10) and pg_strata encrypted /
#! pgBackRest encrypted.
#!
#! Usage: [RUNS=3] bash bench/cipher_bench.sh [SCALE=100] [PROCESSES=2] [LEVEL=3]
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:-100}
PROCS=${2:-2}
LEVEL=${3:-3}
RUNS=${RUNS:-3}

B=/tmp/strata-bench-cipher
PORT=55436
RETENTION_FULL=$((RUNS + 1))
PASS="bench passphrase $(date +%s%N)"
# Outside $B, which common.sh empties: the file must be there when the server archives its first segment.
PASSFILE=/tmp/strata-bench-cipher-pass/pass
mkdir -p "$(dirname "$PASSFILE")"
printf '%s\n' "$PASS" > "$PASSFILE"
chown -R postgres:postgres "$(dirname "$PASSFILE")"
chmod 0700 "$(dirname "$PASSFILE")"
EXTRA_CONF="strata.repo2 = 'file://$B/strata-repo2'
strata.repo2_cipher_type = 'aes-256-gcm'
strata.repo2_cipher_pass_file = '$PASSFILE'
strata.retention_full = $RETENTION_FULL
strata.repo2_retention_full = $RETENTION_FULL"
PGBR_EXTRA_GLOBAL="repo2-path=$B/pgbr-repo2
repo2-cipher-type=aes-256-cbc
repo2-cipher-pass=$PASS
repo2-retention-full=$RETENTION_FULL"
source bench/common.sh

# The command line of a strata restore from repository N (1 plain, 2 encrypted) into a directory (no
# spaces in its words: measure takes it split).
strata_restore() {
    local extra=()
    [ "$1" = 2 ] && extra=(--cipher-pass-file "$PASSFILE")
    echo runuser -u postgres -- strata restore --pgdata "$2" --process-max "$PROCS" --repo "file://$B/strata-repo" \
        --repo2 "file://$B/strata-repo2" --repo-number "$1" --stanza bench "${extra[@]}"
}

declare -a sb1 sb2 pb1 pb2 sr1 sr2 pr1 pr2
# Odd rounds run plain before encrypted, even rounds the other way round: the machine's speed drifts
# within minutes, and whatever ran just before (a restore's writes, a backup's checkpoint) must not
# always fall on the same side.
pair() { if [ $(( $1 % 2 )) = 1 ]; then echo "$2 $3"; else echo "$3 $2"; fi; }
s_backup() { drop_caches; measure runuser -u postgres -- "$BIN/psql" -XAt -h "$B" -p "$PORT" -U postgres -d postgres -c "SELECT backup_start('full', repo => $1)"; }
p_backup() { drop_caches; measure runuser -u postgres -- pgbackrest --config="$B/pgbackrest.conf" --stanza=bench --repo="$1" --type=full backup; }
s_restore() { drop_caches; measure $(strata_restore "$1" "$B/restore-s$1"); }
p_restore() { drop_caches; measure runuser -u postgres -- pgbackrest --config="$B/pgbackrest.conf" --stanza=bench --repo="$1" --pg1-path="$B/restore-p$1" restore; }
for run in $(seq 1 "$RUNS"); do
    echo "== full backups, round $run/$RUNS: pg_strata plain / aes-256-gcm, pgbackrest plain / aes-256-cbc"
    for n in $(pair "$run" 1 2); do
        t=$(s_backup "$n"); if [ "$n" = 1 ]; then sb1+=("$t"); else sb2+=("$t"); fi
    done
    for n in $(pair "$run" 1 2); do
        t=$(p_backup "$n"); if [ "$n" = 1 ]; then pb1+=("$t"); else pb2+=("$t"); fi
    done
done
s_stored1=$(du -sb "$B/strata-repo/bench/backup/$(ls "$B/strata-repo/bench/backup" | tail -1)" | cut -f1)
s_stored2=$(du -sb "$B/strata-repo2/bench/backup/$(ls "$B/strata-repo2/bench/backup" | tail -1)" | cut -f1)
stop_pg "$B/data"
for run in $(seq 1 "$RUNS"); do
    echo "== restores, round $run/$RUNS"
    rm -rf "$B"/restore-*
    for n in $(pair "$run" 1 2); do
        t=$(s_restore "$n"); if [ "$n" = 1 ]; then sr1+=("$t"); else sr2+=("$t"); fi
    done
    for n in $(pair "$run" 1 2); do
        t=$(p_restore "$n"); if [ "$n" = 1 ]; then pr1+=("$t"); else pr2+=("$t"); fi
    done
done
echo "runs (s): strata backup plain ${sb1[*]} gcm ${sb2[*]}; restore plain ${sr1[*]} gcm ${sr2[*]}"
echo "          pgbackrest backup plain ${pb1[*]} cbc ${pb2[*]}; restore plain ${pr1[*]} cbc ${pr2[*]}"
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
python3 - "$db_bytes" "$s_stored1" "$s_stored2" \
    "$(median "${sb1[@]}")" "$(median "${sb2[@]}")" "$(median "${pb1[@]}")" "$(median "${pb2[@]}")" \
    "$(median "${sr1[@]}")" "$(median "${sr2[@]}")" "$(median "${pr1[@]}")" "$(median "${pr2[@]}")" <<'PY'
import sys
db, st1, st2 = (int(x) / 1e6 for x in sys.argv[1:4])
sb1, sb2, pb1, pb2, sr1, sr2, pr1, pr2 = map(float, sys.argv[4:12])
print(f"database {db:.0f} MB; pg_strata stored {st1:.0f} MB plain, {st2:.0f} MB encrypted; medians")
print(f"{'':<24}{'backup s':>10}{'restore s':>11}")
for name, b, r in (("pg_strata plain", sb1, sr1), ("pg_strata aes-256-gcm", sb2, sr2),
                   ("pgbackrest plain", pb1, pr1), ("pgbackrest aes-256-cbc", pb2, pr2)):
    print(f"{name:<24}{b:>10.2f}{r:>11.2f}")
print(f"encryption cost, pg_strata: backup {sb2 / sb1:.2f}x, restore {sr2 / sr1:.2f}x (target <= 1.10x)")
print(f"encryption cost, pgbackrest: backup {pb2 / pb1:.2f}x, restore {pr2 / pr1:.2f}x")
print(f"pg_strata gcm / pgbackrest cbc: backup {sb2 / pb2:.2f}x, restore {sr2 / pr2:.2f}x")
PY
rm -rf "$B"/restore-*
