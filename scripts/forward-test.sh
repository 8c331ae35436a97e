#!/usr/bin/env bash
# Forwarding against real servers: starts PostgreSQL and nats-server (with
# JetStream) on loopback in temporary directories, with passwords, and runs
# the ignored tests of cli/tests/forward_real.rs against them (the KurrentDB
# and annal targets' tests start second `annal serve`s of their own) (the debug
# build `cargo test --workspace` made already, so CI compiles nothing more).
#
# Usage: scripts/forward-test.sh            (20,000 events per target)
#        ANNAL_FORWARD_EVENTS=100000 scripts/forward-test.sh
#        ANNAL_FORWARD_BENCH=200000 scripts/forward-test.sh   (figures, no tests)
#
# Installs the Debian packages postgresql and nats-server with apt-get if they
# are missing (as root). PostgreSQL runs as the `postgres` user when this runs
# as root (it refuses to run as root). Everything it starts is stopped at exit.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "forward-test: $*" >&2; }
SUDO=""
if [ "$(id -u)" != 0 ]; then
    SUDO="sudo -n"
fi

pg_bindir() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then
            echo "$d"
            return 0
        fi
    done
    if command -v pg_config >/dev/null 2>&1; then
        d="$(pg_config --bindir)"
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then
            echo "$d"
            return 0
        fi
    fi
    return 1
}

need_install=()
pg_bindir >/dev/null || need_install+=(postgresql)
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need_install+=(nats-server)
if [ ${#need_install[@]} -gt 0 ]; then
    say "installing ${need_install[*]} with apt-get"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_install[@]}" >/dev/null
fi
PGBIN="$(pg_bindir)"
NATS="$(command -v nats-server || echo /usr/sbin/nats-server)"
# The packages' own services are not ours: leave them be, use other ports.
WORK="$(mktemp -d /tmp/annal-forward-test.XXXXXX)"
chmod 755 "$WORK"
# Ports below the kernel's ephemeral range (32768-60999 by default): while a
# server is stopped for an outage, the forwarder's connects to 127.0.0.1:PORT
# may be given PORT itself as their own port, and Linux then connects the
# socket to itself, holding the port so that the server cannot start again
# (it happened in CI with 55432).
PG_PORT=25432
NATS_PORT=24222
PASSWORD="annal-test-secret"

as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

PGDATA="$WORK/pg"
mkdir -p "$PGDATA"
[ "$(id -u)" = 0 ] && chown postgres "$PGDATA"
echo "$PASSWORD" >"$WORK/pwfile"
chmod 644 "$WORK/pwfile"
as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres --pwfile="$WORK/pwfile" -A scram-sha-256 -E UTF8 --no-locale >"$WORK/initdb.log" 2>&1 ||
    { cat "$WORK/initdb.log" >&2; exit 1; }
cat >>"$PGDATA/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PGDATA'
fsync = on
synchronous_commit = on
EOF

cleanup() {
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1 || true
    if [ -f "$WORK/nats.pid" ]; then kill "$(cat "$WORK/nats.pid")" 2>/dev/null || true; fi
    if [ -f "$WORK/remote.pid" ]; then kill "$(cat "$WORK/remote.pid")" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$(id -u)" = 0 ]; then
    PG_START="runuser -u postgres -- $PGBIN/pg_ctl -D $PGDATA -l $PGDATA/postgres.log -w -t 60 start"
    PG_STOP="runuser -u postgres -- $PGBIN/pg_ctl -D $PGDATA -m fast -w stop"
else
    PG_START="$PGBIN/pg_ctl -D $PGDATA -l $PGDATA/postgres.log -w -t 60 start"
    PG_STOP="$PGBIN/pg_ctl -D $PGDATA -m fast -w stop"
fi
NATS_START="$NATS -js -sd $WORK/nats -a 127.0.0.1 -p $NATS_PORT --user annal --pass $PASSWORD -l $WORK/nats.log & echo \$! >$WORK/nats.pid; for i in \$(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$NATS_PORT) 2>/dev/null && break; sleep 0.1; done"
NATS_STOP="kill \$(cat $WORK/nats.pid); while kill -0 \$(cat $WORK/nats.pid) 2>/dev/null; do sleep 0.05; done"
NATS_KILL="kill -9 \$(cat $WORK/nats.pid); while kill -0 \$(cat $WORK/nats.pid) 2>/dev/null; do sleep 0.05; done"

sh -c "$PG_START" >/dev/null
sh -c "$NATS_START"
say "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT, $("$NATS" --version) on 127.0.0.1:$NATS_PORT"

export ANNAL_TEST_PG_URL="postgres://postgres:$PASSWORD@127.0.0.1:$PG_PORT/postgres"
export ANNAL_TEST_PG_START="$PG_START" ANNAL_TEST_PG_STOP="$PG_STOP"
export ANNAL_TEST_NATS_URL="nats://annal:$PASSWORD@127.0.0.1:$NATS_PORT"
export ANNAL_TEST_NATS_START="$NATS_START" ANNAL_TEST_NATS_STOP="$NATS_STOP" ANNAL_TEST_NATS_KILL="$NATS_KILL"

if [ -n "${ANNAL_FORWARD_BENCH:-}" ]; then
    # Figures for BENCHMARKS.md instead of the tests: ANNAL_FORWARD_BENCH=EVENTS.
    cargo run -q --release -p annal-forward --example forward_bench -- \
        "$ANNAL_TEST_PG_URL?table=annal_bench" "$ANNAL_FORWARD_BENCH"
    cargo run -q --release -p annal-forward --example forward_bench -- \
        "$ANNAL_TEST_NATS_URL?stream=BENCH&subject=bench.{stream}" "$ANNAL_FORWARD_BENCH"
    # KurrentDB's protocol: a second annal (release build) serving gRPC, durability always.
    cargo build -q --release -p annal-cli
    ANNAL_BIN="${CARGO_TARGET_DIR:-target}/release/annal"
    "$ANNAL_BIN" --data "$WORK/remote" serve --no-auth --listen 127.0.0.1:52113 >"$WORK/remote.log" 2>&1 &
    echo $! >"$WORK/remote.pid"
    for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/52113) 2>/dev/null && break; sleep 0.1; done
    cargo run -q --release -p annal-forward --example forward_bench -- \
        "kurrentdb://127.0.0.1:52113?tls=false" "$ANNAL_FORWARD_BENCH"
    exit 0
fi

started=$(date +%s)
cargo test -p annal-cli --test forward_real -- --ignored --test-threads=1 --nocapture
say "real-server tests took $(($(date +%s) - started)) s"
