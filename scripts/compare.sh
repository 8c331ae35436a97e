#!/usr/bin/env bash
# Runs the comparison of annal against SQLite and PostgreSQL (issue 7) and
# regenerates BENCHMARKS.md and benchmarks-writers.svg at the repository root.
#
#   scripts/compare.sh           full run (5-6 minutes after building, on 2 cores)
#   scripts/compare.sh --quick   CI mode: small data set, short phases; checks that
#                                every workload completes and writes the report to a
#                                temporary directory, not over BENCHMARKS.md
#   scripts/compare.sh --queries the queries of issue 16 (topic patterns, a metadata
#                                field, counts) on 1,000,000 events; prints a table
#                                (with --quick: 20,000 events)
#
# What it does: installs PostgreSQL with apt-get if it is missing (as root, or
# with sudo), builds `annal-compare` in release mode, starts a throwaway
# PostgreSQL cluster in a temporary directory on the same file system as the
# other stores (as the unprivileged `postgres` user when run as root; Unix
# socket only; fsync and synchronous_commit on), runs the harness, then stops
# the server and removes every temporary file.
#
# Environment: ANNAL_BENCH_DIR picks the directory the data goes under (default:
# $TMPDIR or /tmp, unless that is tmpfs, then the repository); CARGO_TARGET_DIR
# is honoured.
set -euo pipefail

usage() {
    if [ "${1:-0}" = 0 ]; then
        sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
    else
        sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2
    fi
    exit "${1:-0}"
}

QUICK=0
QUERIES=0
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        --queries) QUERIES=1 ;;
        -h | --help) usage 0 ;;
        *) echo "unknown argument: $arg" >&2; usage 2 ;;
    esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
T0=$(date +%s)
say() { echo "[compare.sh $(($(date +%s) - T0))s] $*" >&2; }
IS_ROOT=0
[ "$(id -u)" = 0 ] && IS_ROOT=1

# 1. PostgreSQL's server binaries (Debian's layout first).
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
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
            echo "$d"
            return 0
        fi
    fi
    return 1
}

if ! PGBIN="$(pg_bindir)"; then
    say "PostgreSQL is not installed: installing it with apt-get"
    SUDO=""
    if [ "$IS_ROOT" = 0 ]; then
        if sudo -n true 2>/dev/null; then
            SUDO="sudo -n"
        else
            echo "PostgreSQL is missing and this is not root (nor passwordless sudo): install the 'postgresql' package" >&2
            exit 1
        fi
    fi
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    PGBIN="$(pg_bindir)" || { echo "PostgreSQL's server binaries not found after installing" >&2; exit 1; }
fi
say "PostgreSQL binaries: $PGBIN ($("$PGBIN/postgres" --version))"

# 2. Build.
say "building annal-compare (release)"
cargo build --release -p annal-compare
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac
BIN="$TARGET/release/annal-compare"
T_BUILT=$(date +%s)

# 3. Temporary directories: data on a real disk, the socket in a short path.
BASE="${ANNAL_BENCH_DIR:-${TMPDIR:-/tmp}}"
mkdir -p "$BASE"
case "$(stat -f -c %T "$BASE" 2>/dev/null || echo unknown)" in
    tmpfs | ramfs) BASE="$ROOT" ;; # fdatasync would be free there: the figures would mean nothing
esac
WORK="$(mktemp -d "$BASE/annal-compare.XXXXXX")"
SOCK="$(mktemp -d /tmp/annal-pg.XXXXXX)"
PGDATA="$WORK/pg"
PG_STARTED=0

if [ "$IS_ROOT" = 1 ]; then
    PG_OS_USER=postgres
    if ! id "$PG_OS_USER" >/dev/null 2>&1; then
        say "creating the system user $PG_OS_USER to run the server"
        useradd --system --user-group --no-create-home --shell /usr/sbin/nologin "$PG_OS_USER"
    fi
    as_pg() { (cd / && runuser -u "$PG_OS_USER" -- "$@"); }
else
    as_pg() { "$@"; }
fi

cleanup() {
    local rc=$?
    if [ "$PG_STARTED" = 1 ]; then
        as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK" "$SOCK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

chmod 755 "$WORK"
mkdir -p "$PGDATA" "$WORK/data"
chmod 700 "$PGDATA"
if [ "$IS_ROOT" = 1 ]; then
    chown "$PG_OS_USER" "$PGDATA" "$SOCK"
    if ! as_pg test -w "$PGDATA"; then
        echo "the $PG_OS_USER user cannot write $PGDATA (a parent directory is not searchable): set ANNAL_BENCH_DIR" >&2
        exit 1
    fi
fi

# 4. A throwaway PostgreSQL cluster, default durability.
say "starting PostgreSQL in $PGDATA"
as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust -E UTF8 --no-locale >"$WORK/initdb.log" 2>&1 ||
    { cat "$WORK/initdb.log" >&2; exit 1; }
if [ "$QUICK" = 1 ]; then SHARED_BUFFERS=256MB; MAX_WAL=1GB; else SHARED_BUFFERS=2GB; MAX_WAL=4GB; fi
cat >>"$PGDATA/postgresql.conf" <<EOF

# annal-compare: a private server on a Unix socket; durability at the defaults.
listen_addresses = ''
unix_socket_directories = '$SOCK'
port = 5432
max_connections = 300
shared_buffers = $SHARED_BUFFERS
max_wal_size = $MAX_WAL
fsync = on
synchronous_commit = on
full_page_writes = on
EOF
if ! as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/postgres.log" -w -t 120 start >/dev/null; then
    cat "$PGDATA/postgres.log" >&2
    exit 1
fi
PG_STARTED=1
PG_URL="host=$SOCK port=5432 user=postgres dbname=postgres"

# 5. The harness.
if [ "$QUICK" = 1 ]; then
    OUTDIR="$(mktemp -d "${TMPDIR:-/tmp}/annal-compare-report.XXXXXX")"
    FLAGS=(--quick)
else
    OUTDIR="$ROOT"
    FLAGS=()
fi
set +e
if [ "$QUERIES" = 1 ]; then
    say "running the queries"
    EVENTS=1000000
    [ "$QUICK" = 1 ] && EVENTS=20000
    "$BIN" queries --data "$WORK/data" --pg "$PG_URL" --events "$EVENTS"
    RC=$?
else
    say "running the comparison"
    "$BIN" "${FLAGS[@]}" --data "$WORK/data" --pg "$PG_URL" \
        --out "$OUTDIR/BENCHMARKS.md" --chart "$OUTDIR/benchmarks-writers.svg"
    RC=$?
fi
set -e
if [ "$RC" != 0 ]; then
    echo "--- end of the PostgreSQL log ---" >&2
    tail -n 20 "$PGDATA/postgres.log" >&2 || true
fi
T_END=$(date +%s)
if [ "$QUERIES" = 1 ]; then
    say "done in $((T_END - T0)) s (build $((T_BUILT - T0)) s, queries $((T_END - T_BUILT)) s)"
else
    say "done in $((T_END - T0)) s (build $((T_BUILT - T0)) s, comparison $((T_END - T_BUILT)) s); report: $OUTDIR/BENCHMARKS.md, chart: $OUTDIR/benchmarks-writers.svg"
fi
exit "$RC"
