#!/usr/bin/env bash
# End-to-end tests of `annal serve` with the official KurrentDB gRPC clients:
# installs the pinned Python client (kurrentdbclient) in a virtual environment,
# starts `annal serve --no-auth` on a temporary store on a free loopback port,
# and runs server/tests/python against it. Needs python3 (with venv) and cargo;
# installs python3-venv with apt-get when missing (CI runs as root).
#
#   scripts/grpc-clients.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

KURRENTDBCLIENT_VERSION=1.3.5
PYTEST_VERSION=9.2.0
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
VENV="${ANNAL_GRPC_VENV:-$TARGET/venv-grpc}"

if ! command -v python3 >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq python3 python3-venv >/dev/null
fi
if [ ! -x "$VENV/bin/python" ]; then
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
        rm -rf "$VENV"
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$VENV"
    fi
fi
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('kurrentdbclient') != '$KURRENTDBCLIENT_VERSION' or m.version('pytest') != '$PYTEST_VERSION')" 2>/dev/null; then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        "kurrentdbclient==$KURRENTDBCLIENT_VERSION" "pytest==$PYTEST_VERSION"
fi

cargo build -q -p annal-cli
BIN="$TARGET/debug/annal"

WORK="$(mktemp -d)"
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$BIN" --data "$WORK/store" serve --listen "127.0.0.1:$PORT" --no-auth >"$WORK/serve.log" 2>&1 &
SERVER=$!
cleanup() {
    kill "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# Wait (up to 30 s) for the listener.
python3 - "$PORT" <<'PY'
import socket, sys, time
deadline = time.time() + 30
while True:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
        break
    except OSError:
        if time.time() > deadline:
            sys.exit("annal serve did not start listening")
        time.sleep(0.1)
PY

status=0
ANNAL_GRPC_URI="kurrentdb://127.0.0.1:$PORT?tls=false" \
    "$VENV/bin/python" -m pytest -q -p no:cacheprovider server/tests/python "$@" || status=$?
if [ "$status" -ne 0 ]; then
    echo "--- annal serve log:" >&2
    cat "$WORK/serve.log" >&2
fi
exit "$status"
