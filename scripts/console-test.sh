#!/usr/bin/env bash
# End-to-end tests of the web console (`annal serve` at /ui) in headless
# Chromium, driven by playwright-core (pinned in console/test/package-lock.json):
# starts `annal serve` with an admin and a read-only token on a temporary
# store, writes sample data through the API, opens every page and checks it
# against the API, follows the live tail, replays a parked event, and checks
# the read-only console (console/test/e2e.mjs says each step).
#
# Usage: scripts/console-test.sh
#        ANNAL_BIN=path/to/annal scripts/console-test.sh   (default: the debug build, built if missing)
#
# Screenshots of each page go to $CARGO_TARGET_DIR/console-screenshots
# (target/console-screenshots by default), kept as CI artifacts.
# Installs the Debian packages chromium, nodejs and npm with apt-get if they
# are missing (as root).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "console-test: $*" >&2; }
SUDO=""
if [ "$(id -u)" != 0 ]; then
    SUDO="sudo -n"
fi

missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
CHROMIUM="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}"
[ -n "$CHROMIUM" ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
    CHROMIUM="${CHROMIUM:-$(command -v chromium)}"
fi

target="${CARGO_TARGET_DIR:-target}"
bin="${ANNAL_BIN:-$target/debug/annal}"
if [ -z "${ANNAL_BIN:-}" ]; then
    # Nothing to do when `cargo test --workspace` built it already.
    cargo build -q -p annal-cli
fi

(cd console/test && npm ci --no-audit --no-fund --silent)

export ANNAL_BIN="$bin" CHROMIUM SCREENSHOTS="${SCREENSHOTS:-$target/console-screenshots}"
say "annal: $ANNAL_BIN; browser: $CHROMIUM ($("$CHROMIUM" --version 2>/dev/null || echo unknown))"
node console/test/e2e.mjs
