#!/usr/bin/env bash
#! Sets up a fresh Debian 12 machine (as root) for pg_strata and installs it:
#! apt packages, cargo-pgrx 0.18.1, `cargo pgrx init` on the system PostgreSQL 15,
#! moto's S3 server for the tests (a venv in /opt/strata-moto), Debian's pg_cron (postgresql-15-cron) and
#! a venv with prometheus_client (its text-format parser) in /opt/strata-py for the tests,
#! the extension into PostgreSQL 15 and the `strata` binary into /usr/local/bin.
#! Every step is skipped when it is already done, so reruns are fast.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
PGRX_VERSION=0.18.1
APT_PACKAGES="postgresql-15 postgresql-server-dev-15 postgresql-contrib postgresql-15-cron build-essential libclang-dev pkg-config sudo python3-venv"
# The S3 server the tests run against (crates/core/src/storage/s3_tests.rs looks for it here).
MOTO_VENV=/opt/strata-moto
MOTO_VERSION=5.2.1
# The metrics tests parse the endpoint's text with prometheus_client's parser, from this venv.
PY_VENV=/opt/strata-py

log() { printf '\n== %s\n' "$*"; }
# Runs a command with its output kept in a log, shown only if it fails.
quiet() {
    local out
    out=$(mktemp)
    if ! "$@" >"$out" 2>&1; then
        cat "$out" >&2
        rm -f "$out"
        echo "setup.sh: failed: $*" >&2
        return 1
    fi
    rm -f "$out"
}

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: run as root (it installs apt packages and the extension into PostgreSQL)" >&2
    exit 1
fi

missing=""
for p in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    log "installing apt packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Keep Debian from creating and starting a 15/main cluster on port 5432.
    apt-get install -y -qq postgresql-common >/dev/null
    sed -i 's/^#\?\s*create_main_cluster.*/create_main_cluster = false/' /etc/postgresql-common/createcluster.conf
    apt-get install -y -qq $missing >/dev/null
fi

if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
    log "installing cargo-pgrx $PGRX_VERSION (about 4 minutes)"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
fi

if ! grep -qs "pg15" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
    log "cargo pgrx init on the system PostgreSQL 15"
    cargo pgrx init --pg15 "$PG_CONFIG"
fi

if ! "$PY_VENV/bin/python" -c 'import prometheus_client' 2>/dev/null; then
    log "creating $PY_VENV with prometheus_client (for the metrics tests)"
    rm -rf "$PY_VENV"
    /usr/bin/python3 -m venv "$PY_VENV"
    quiet "$PY_VENV/bin/pip" install --disable-pip-version-check prometheus_client
fi

# Debian's python3 is "externally managed": moto goes into a venv of its own.
if ! "$MOTO_VENV/bin/python" -c "import moto, flask; assert moto.__version__ == '$MOTO_VERSION'" 2>/dev/null; then
    log "installing moto[server] $MOTO_VERSION (the tests' S3 server) into $MOTO_VENV"
    rm -rf "$MOTO_VENV"
    /usr/bin/python3 -m venv "$MOTO_VENV"
    quiet "$MOTO_VENV/bin/pip" install --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi

if [ "${STRATA_SKIP_INSTALL:-}" != "1" ]; then
    log "building and installing the pg_strata extension into PostgreSQL 15"
    quiet cargo pgrx install --release --pg-config "$PG_CONFIG"
    log "building and installing the strata binary into /usr/local/bin"
    quiet cargo build --release -p strata-cli
    install -m 0755 target/release/strata /usr/local/bin/strata
fi
log "setup done"
