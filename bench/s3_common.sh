#! Shared by the S3 benchmarks (sourced before common.sh, not run): starts moto's S3 server on
#! 127.0.0.1:$MOTO_PORT+1 behind stunnel's TLS on 127.0.0.1:$MOTO_PORT (pgBackRest speaks only HTTPS to
#! S3, and its OpenSSL refuses moto's own TLS, which ends connections without close_notify; both tools
#! skip verification of the self-signed certificate), creates the buckets strata-bench and pgbr-bench,
#! and sets
#! EXTRA_CONF / PGBR_EXTRA_GLOBAL so that common.sh's cluster archives into the bucket through pg_strata
#! and its pgBackRest stanza lives in the other bucket. Defines S3_CONF (the strata.* lines, also for
#! the CLI's --config), MOTO_LOG (moto's request log) and stops moto on exit.
MOTO_PORT=${MOTO_PORT:-55481}
MOTO_LOG=/tmp/strata-bench-moto-$MOTO_PORT.log
S3_KEY_ID=AKIDSTRATABENCH
S3_KEY_SECRET=strata-bench-secret-value

pkill -f "moto_server -H 127.0.0.1 -p $((MOTO_PORT + 1))" 2>/dev/null || true
pkill -f "stunnel /tmp/strata-bench-stunnel-$MOTO_PORT" 2>/dev/null || true
bash scripts/setup.sh >/dev/null
command -v stunnel >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq stunnel4 >/dev/null; }
/opt/strata-moto/bin/moto_server -H 127.0.0.1 -p "$((MOTO_PORT + 1))" >"$MOTO_LOG" 2>&1 &
MOTO_PID=$!
TLS_DIR=/tmp/strata-bench-stunnel-$MOTO_PORT
mkdir -p "$TLS_DIR"
[ -f "$TLS_DIR/cert.pem" ] || openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TLS_DIR/key.pem" \
    -out "$TLS_DIR/cert.pem" -days 365 -subj "/CN=127.0.0.1" 2>/dev/null
# With S3_LATENCY_MS, a proxy adding that round trip per request sits in front of stunnel (clients ->
# proxy on MOTO_PORT -> stunnel on MOTO_PORT+2 -> moto on MOTO_PORT+1): S3 is tens of ms away, moto is not.
TLS_PORT=$MOTO_PORT
if [ -n "${S3_LATENCY_MS:-}" ]; then
    TLS_PORT=$((MOTO_PORT + 2))
    pkill -f "latency_proxy.py $MOTO_PORT " 2>/dev/null || true
    python3 bench/latency_proxy.py "$MOTO_PORT" "$TLS_PORT" "$S3_LATENCY_MS" &
    LATENCY_PID=$!
fi
cat > "$TLS_DIR/stunnel.conf" <<CONF
foreground = yes
pid =
[s3]
accept = 127.0.0.1:$TLS_PORT
connect = 127.0.0.1:$((MOTO_PORT + 1))
cert = $TLS_DIR/cert.pem
key = $TLS_DIR/key.pem
CONF
stunnel "$TLS_DIR/stunnel.conf" >"$TLS_DIR/log" 2>&1 &
STUNNEL_PID=$!
trap 'kill $MOTO_PID $STUNNEL_PID ${LATENCY_PID:-} 2>/dev/null || true' EXIT
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
