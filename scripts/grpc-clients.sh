#!/usr/bin/env bash
# End-to-end tests of `annal serve` with the official KurrentDB gRPC clients:
# installs the pinned Python client (kurrentdbclient), and the eventsourcing
# library with its KurrentDB adapter, in a virtual environment,
# starts two servers on temporary stores and free loopback ports, one
# `--no-auth` in cleartext and one with TLS (a self-signed certificate made
# here) and a token, and runs server/tests/python against them. Needs python3
# (with venv), openssl and cargo; installs what is missing with apt-get (CI
# runs as root).
#
#   scripts/grpc-clients.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

KURRENTDBCLIENT_VERSION=1.3.5
PYTEST_VERSION=9.2.0
# The eventsourcing library and its KurrentDB adapter (which accepts kurrentdbclient 1.3.5).
EVENTSOURCING_VERSION=9.5.6
EVENTSOURCING_KURRENTDB_VERSION=1.2.2
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
VENV="${ANNAL_GRPC_VENV:-$TARGET/venv-grpc}"

if ! command -v python3 >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq python3 python3-venv openssl >/dev/null
fi
if [ ! -x "$VENV/bin/python" ]; then
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
        rm -rf "$VENV"
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$VENV"
    fi
fi
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('kurrentdbclient') != '$KURRENTDBCLIENT_VERSION' or m.version('pytest') != '$PYTEST_VERSION' or m.version('eventsourcing') != '$EVENTSOURCING_VERSION' or m.version('eventsourcing-kurrentdb') != '$EVENTSOURCING_KURRENTDB_VERSION')" 2>/dev/null; then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        "kurrentdbclient==$KURRENTDBCLIENT_VERSION" "pytest==$PYTEST_VERSION" \
        "eventsourcing==$EVENTSOURCING_VERSION" "eventsourcing-kurrentdb==$EVENTSOURCING_KURRENTDB_VERSION"
fi

cargo build -q -p annal-cli
BIN="$TARGET/debug/annal"

WORK="$(mktemp -d)"
# One folder per server: a store reads the annal.toml next to it.
mkdir -p "$WORK/open" "$WORK/tls"
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
PORT="$(free_port)"
TLS_PORT="$(free_port)"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" >/dev/null 2>&1
SECRET_SHA256="$(printf '%s' s3cret | sha256sum | cut -d' ' -f1)"
cat >"$WORK/tls/annal.toml" <<TOML
[server]
listen = "127.0.0.1:$TLS_PORT"

[server.tls]
cert = "$WORK/cert.pem"
key = "$WORK/key.pem"

[[server.tokens]]
name = "app"
sha256 = "$SECRET_SHA256"
role = "write"
TOML

"$BIN" --data "$WORK/open/store" serve --listen "127.0.0.1:$PORT" --no-auth >"$WORK/serve.log" 2>&1 &
SERVER=$!
"$BIN" --data "$WORK/tls/store" --config "$WORK/tls/annal.toml" serve >"$WORK/serve-tls.log" 2>&1 &
TLS_SERVER=$!
cleanup() {
    kill "$SERVER" "$TLS_SERVER" 2>/dev/null || true
    wait "$SERVER" "$TLS_SERVER" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

show_logs() {
    echo "--- annal serve log:" >&2
    cat "$WORK/serve.log" >&2
    echo "--- annal serve (TLS) log:" >&2
    cat "$WORK/serve-tls.log" >&2
}

# Wait (up to 30 s) for both listeners.
if ! python3 - "$PORT" "$TLS_PORT" <<'PY'
import socket, sys, time
deadline = time.time() + 30
for port in sys.argv[1:]:
    while True:
        try:
            socket.create_connection(("127.0.0.1", int(port)), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline:
                sys.exit(f"annal serve did not start listening on {port}")
            time.sleep(0.1)
PY
then
    show_logs
    exit 1
fi

status=0
ANNAL_GRPC_URI="kurrentdb://127.0.0.1:$PORT?tls=false" \
    ANNAL_GRPC_TLS_URI="kurrentdb://localhost:$TLS_PORT?tlsCaFile=$WORK/cert.pem" \
    "$VENV/bin/python" -m pytest -q -p no:cacheprovider server/tests/python "$@" || status=$?
if [ "$status" -ne 0 ]; then
    show_logs
fi
exit "$status"
