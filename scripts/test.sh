#!/usr/bin/env bash
#! Sets up (scripts/setup.sh) and runs every test of pg_strata: the pure crates with cargo test, the
#! end-to-end scenarios of pg_test/ against real PostgreSQL 15 clusters, and `cargo pgrx test`.
#! Run as root on Debian 12 (PostgreSQL test servers run as the postgres user).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

# Every cargo test run's output is also kept in a log, to print the totals at the end.
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
echo; echo "== unit and golden tests of the pure crates"
cargo test -p pgformat -p strata-core -p strata-cli 2>&1 | tee -a "$LOG"

echo; echo "== end-to-end scenarios against real PostgreSQL 15 clusters"
export STRATA_BIN=/usr/local/bin/strata
export STRATA_TEST_TMP="${STRATA_TEST_TMP:-/tmp/strata-tests}"
mkdir -p "$STRATA_TEST_TMP"
chmod 0755 "$STRATA_TEST_TMP"
# --no-fail-fast: one failing scenario file does not hide the others (the run still fails).
cargo test -p pg_test --no-fail-fast -- --test-threads=2 2>&1 | tee -a "$LOG"

echo; echo "== cargo pgrx test (in-server tests of the extension)"
PGRX_TEST_DATA=/tmp/strata-pgrx-test-data
rm -rf "$PGRX_TEST_DATA"
install -d -o postgres -g postgres -m 0700 "$PGRX_TEST_DATA"
cargo pgrx test pg15 --runas postgres --pgdata "$PGRX_TEST_DATA" 2>&1 | tee -a "$LOG"
# cargo pgrx test installed its test build; put the release build back so the server runs it.
bash scripts/setup.sh >/dev/null
echo; echo "== all tests passed"
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;/) p += $i; if ($(i+1) ~ /^failed;/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$LOG"
