#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS_PER_TARGET seconds each.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]      (default 30 seconds, all targets)
#
# Each target starts from a temporary copy of its seed corpus (fuzz/corpus/<target>/),
# so the committed corpus never grows. Crashes, OOMs and timeouts are kept in
# fuzz/artifacts/<target>/ (not committed). Before fuzzing a target, the inputs in
# fuzz/regressions/<target>/ are replayed once. Exits non-zero if a regression input
# fails, if any target found a crash, OOM or timeout, or if the build failed.
#
# Environment:
#   CARGO_TARGET_DIR        where to build (default: cargo's, fuzz/target)
#   ANNAL_FUZZ_KEEP_GOING=1 keep fuzzing after a crash (libFuzzer fork mode), to
#                           collect several distinct crashes in one run
#   ANNAL_FUZZ_STRICT=0     store_dir no longer requires (as it does by default) that
#                           a store which opened, acknowledged an append and closed
#                           cleanly reopens with that append
#   ANNAL_FUZZ_ARGS         more libFuzzer flags, e.g. "-seed=1 -dict=..."
#   ANNAL_FUZZ_SANITIZER    cargo-fuzz's sanitizer (default address); CI's smoke
#                           run uses none: it builds much faster, and panics,
#                           overflow checks and the harnesses' own checks still fire
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
secs="${1:-30}"
[ $# -gt 0 ] && shift
all_targets=(frame segment_header index_file checkpoint compressed_segment store_dir subjects)
if [ $# -gt 0 ]; then targets=("$@"); else targets=("${all_targets[@]}"); fi

case "$secs" in
  ''|*[!0-9]*) echo "usage: fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]" >&2; exit 2 ;;
esac

# cargo-fuzz passes nightly-only flags (-Zsanitizer, ...); this lets stable rustc accept them.
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked || exit 1
fi

cd "$root" || exit 1
echo "== building the fuzz targets"
if ! cargo fuzz build --sanitizer "${ANNAL_FUZZ_SANITIZER:-address}"; then
  echo "fuzz/run.sh: build failed" >&2
  exit 1
fi
# Run the binaries just built (as `cargo fuzz run` does after building), so that
# every target tests the same build even if the sources change meanwhile.
target_dir="$(cargo metadata --no-deps --format-version 1 --manifest-path "$here/Cargo.toml" |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
triple="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="$target_dir/$triple/release"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_odr_violation=0}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

work="$(mktemp -d "${TMPDIR:-/tmp}/annal-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT

extra=()
if [ "${ANNAL_FUZZ_KEEP_GOING:-0}" != 0 ]; then
  extra+=(-fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1)
fi
# shellcheck disable=SC2206
extra+=(${ANNAL_FUZZ_ARGS:-})

failed=0
summary=()
for t in "${targets[@]}"; do
  if [ ! -d "$here/corpus/$t" ]; then
    echo "fuzz/run.sh: no target $t (known: ${all_targets[*]})" >&2
    exit 2
  fi
  corpus="$work/corpus/$t"
  mkdir -p "$corpus"
  cp -R "$here/corpus/$t/." "$corpus/"
  art="$here/artifacts/$t"
  mkdir -p "$art"
  before="$(ls "$art" | grep -E '^(crash|oom|timeout|leak)-' | sort)"
  log="$work/$t.log"
  # Inputs that once crashed annal must not crash it now.
  regressions=()
  if [ -d "$here/regressions/$t" ]; then
    while IFS= read -r f; do regressions+=("$f"); done < <(find "$here/regressions/$t" -type f ! -name '*.md' | sort)
  fi
  if [ ${#regressions[@]} -gt 0 ]; then
    echo "== replaying ${#regressions[@]} regression input(s) of $t"
    if ! "$bin_dir/$t" -rss_limit_mb=2048 -timeout=30 "${regressions[@]}" >"$work/$t.regressions.log" 2>&1; then
      grep -E 'panicked at|ERROR:|^Running:' "$work/$t.regressions.log" | tail -5
      summary+=("$(printf '%-19s %s' "$t" "REGRESSION FAILED (see a fuzz/regressions/$t/ input above)")")
      failed=1
    fi
  fi
  echo "== fuzzing $t for ${secs}s"
  "$bin_dir/$t" \
    -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 -timeout=30 \
    -artifact_prefix="$art/" -print_final_stats=1 "${extra[@]}" "$corpus" 2>&1 | tee "$log" |
    grep -vE '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)|^"|^###### '
  rc="${PIPESTATUS[0]}"
  after="$(ls "$art" | grep -E '^(crash|oom|timeout|leak)-' | sort)"
  new="$(comm -13 <(echo "$before") <(echo "$after") | grep . || true)"
  runs="$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+$')"
  [ -z "$runs" ] && runs="$(grep -oE '^Done [0-9]+ runs' "$log" | tail -1 | grep -oE '[0-9]+')"
  # Fork mode prints no final stats; its status lines start with "#RUNS:".
  [ -z "$runs" ] && runs="$(grep -oE '^#[0-9]+:' "$log" | tail -1 | tr -d '#:')"
  rate="$(grep -oE 'stat::average_exec_per_sec: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+$')"
  [ -z "$rate" ] && rate="$(grep -oE 'exec/s: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+$')"
  cov="$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+$')"
  status=ok
  if [ "$rc" != 0 ] || [ -n "$new" ]; then
    status="FAILED (exit $rc)"
    failed=1
  fi
  summary+=("$(printf '%-19s %-18s runs=%-10s exec/s=%-8s cov=%s' "$t" "$status" "${runs:-?}" "${rate:-?}" "${cov:-?}")")
  if [ -n "$new" ]; then
    while read -r f; do summary+=("    new artifact: fuzz/artifacts/$t/$f"); done <<<"$new"
  fi
done

echo
echo "== summary (${secs}s per target)"
printf '%s\n' "${summary[@]}"
if [ "$failed" != 0 ]; then
  echo "fuzz/run.sh: a target found a crash, OOM or timeout; reproduce with: RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET fuzz/artifacts/TARGET/FILE" >&2
  exit 1
fi
