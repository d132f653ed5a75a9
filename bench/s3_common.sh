#! Shared by the S3 benchmarks (sourced before common.sh, not run): starts moto's S3 server on
#! 127.0.0.1:$MOTO_PORT over HTTPS (pgBackRest speaks only HTTPS to S3; both tools skip verification of
#! moto's self-signed certificate), creates the buckets strata-bench and pgbr-bench, and sets
#! EXTRA_CONF / PGBR_EXTRA_GLOBAL so that common.sh's cluster archives into the bucket through pg_strata
#! and its pgBackRest stanza lives in the other bucket. Defines S3_CONF (the strata.* lines, also for
#! the CLI's --config), MOTO_LOG (moto's request log) and stops moto on exit.
MOTO_PORT=${MOTO_PORT:-55481}
MOTO_LOG=/tmp/strata-bench-moto-$MOTO_PORT.log
S3_KEY_ID=AKIDSTRATABENCH
S3_KEY_SECRET=strata-bench-secret-value

pkill -f "moto_server -H 127.0.0.1 -p $MOTO_PORT" 2>/dev/null || true
bash scripts/setup.sh >/dev/null
/opt/strata-moto/bin/moto_server -H 127.0.0.1 -p "$MOTO_PORT" --ssl >"$MOTO_LOG" 2>&1 &
MOTO_PID=$!
trap 'kill $MOTO_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sk "https://127.0.0.1:$MOTO_PORT/moto-api/" >/dev/null && break; sleep 0.2; done
for bucket in strata-bench pgbr-bench; do curl -sfk -X PUT "https://127.0.0.1:$MOTO_PORT/$bucket" >/dev/null; done

S3_CONF="strata.repo1 = 's3://strata-bench/repo'
strata.repo1_s3_endpoint = 'https://127.0.0.1:$MOTO_PORT'
strata.repo1_s3_uri_style = 'path'
strata.repo1_s3_region = 'us-east-1'
strata.repo1_s3_key = '$S3_KEY_ID'
strata.repo1_s3_key_secret = '$S3_KEY_SECRET'
strata.repo1_s3_verify_tls = off"
EXTRA_CONF="$S3_CONF
${EXTRA_CONF:-}"
PGBR_EXTRA_GLOBAL="repo1-type=s3
repo1-s3-bucket=pgbr-bench
repo1-s3-endpoint=127.0.0.1
repo1-storage-port=$MOTO_PORT
repo1-s3-region=us-east-1
repo1-s3-key=$S3_KEY_ID
repo1-s3-key-secret=$S3_KEY_SECRET
repo1-s3-uri-style=path
repo1-storage-verify-tls=n
${PGBR_EXTRA_GLOBAL:-}"

# The CLI's --config file for the bucket (after common.sh made $B).
write_strata_conf() {
    printf 'strata.stanza = %s\n%s\n' "'bench'" "$S3_CONF" > "$B/strata.conf"
    chown postgres "$B/strata.conf"; chmod 0600 "$B/strata.conf"
}
