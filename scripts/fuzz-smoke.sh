#!/usr/bin/env bash
# fuzz-smoke.sh [SECONDS_PER_TARGET]   (default 15)
#
# Builds every cargo-fuzz target in fuzz/ once and runs each for SECONDS_PER_TARGET seconds,
# starting from the committed seeds (fuzz/seeds/<target>/, fuzz/found/<target>/, examples/ and crates/gscip-load/seed001/ for `scenario`) and the
# local corpus (fuzz/corpus/<target>/). Prints one summary line per target; exits non-zero,
# naming the target, if any target crashes (panic, broken round trip, timeout, OOM). The
# crashing input is left in fuzz/artifacts/<target>/ (reproduce with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none -a <target> fuzz/artifacts/<target>/crash-...`).
# Writes only under fuzz/ (target/, corpus/, artifacts/; all git-ignored), plus installing
# cargo-fuzz into ~/.cargo/bin when it is missing.
#
# Toolchain and sanitizer (checked on rustc 1.95.0, cargo-fuzz 0.13.2):
# - No nightly can be installed on our machines, so cargo-fuzz runs on the pinned stable
#   toolchain (rust-toolchain.toml) with RUSTC_BOOTSTRAP=1. With `--sanitizer none`, cargo-fuzz
#   passes only stable flags (-Cpasses=sancov-module, -Cllvm-args=-sanitizer-coverage-*,
#   --cfg fuzzing, -Cdebug-assertions) and builds even without RUSTC_BOOTSTRAP; the sanitizers
#   need -Zsanitizer=..., which stable rustc accepts only with RUSTC_BOOTSTRAP=1. We set it always.
# - The AddressSanitizer runtime does ship with the stable x86_64-unknown-linux-gnu rust-std
#   (lib/rustlib/x86_64-unknown-linux-gnu/lib/librustc-stable_rt.asan.a), and
#   `cargo fuzz build -s address` builds and runs with RUSTC_BOOTSTRAP=1. We still default to
#   `--sanitizer none`: our crates forbid unsafe code, aws-lc's C code is not built with ASan
#   anyway, and without ASan the targets run several times faster (dprp_message here: ~90k
#   execs/s with ASan, ~800k without). Set FUZZ_SANITIZER=address to fuzz with ASan (the first
#   such build recompiles every dependency).
# - Debug assertions and overflow checks are on (-a), so an arithmetic overflow is a crash.
# - libfuzzer-sys compiles libFuzzer from source: a C++ compiler (g++) must be installed.
set -euo pipefail

SECS="${1:-15}"
if ! [[ "$SECS" =~ ^[0-9]+$ ]] || [ "$SECS" -lt 1 ]; then
  echo "usage: $0 [SECONDS_PER_TARGET]" >&2
  exit 2
fi
SANITIZER="${FUZZ_SANITIZER:-none}"

cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1

echo "fuzz-smoke: $(rustc --version) (RUSTC_BOOTSTRAP=1), sanitizer: $SANITIZER, ${SECS}s per target"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz-smoke: cargo-fuzz not found; installing it from crates.io"
  cargo install cargo-fuzz --locked
fi

FLAGS=(--sanitizer "$SANITIZER" --debug-assertions)

echo "fuzz-smoke: building all targets"
cargo fuzz build "${FLAGS[@]}"

mapfile -t TARGETS < <(cargo fuzz list)
if [ "${#TARGETS[@]}" -eq 0 ]; then
  echo "fuzz-smoke: FAILED: no fuzz targets found" >&2
  exit 1
fi

LOGS=fuzz/artifacts/smoke-logs
mkdir -p "$LOGS"
passed=0
failed=()
for t in "${TARGETS[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  dirs=("fuzz/corpus/$t")
  [ -d "fuzz/seeds/$t" ] && dirs+=("fuzz/seeds/$t")
  [ -d "fuzz/found/$t" ] && dirs+=("fuzz/found/$t")
  extra=()
  case "$t" in
    scenario) dirs+=(examples crates/gscip-load/seed001); extra+=(-max_len=8192 -dict=fuzz/dicts/scenario.dict) ;;
  esac
  log="$LOGS/$t.log"
  # libFuzzer writes new inputs only to the first corpus directory (fuzz/corpus/<t>).
  set +e
  cargo fuzz run "${FLAGS[@]}" "$t" "${dirs[@]}" -- \
    -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "${extra[@]}" \
    >"$log" 2>&1
  rc=$?
  set -e
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")
  corp=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$done_line")
  if [ "$rc" -eq 0 ] && [ -n "$runs" ]; then
    passed=$((passed + 1))
    printf 'fuzz-smoke: %-14s ok      %10s runs in %ss (cov %s, corpus %s)\n' "$t" "$runs" "$SECS" "${cov:-?}" "${corp:-?}"
  else
    failed+=("$t")
    printf 'fuzz-smoke: %-14s FAILED  exit %s after %s runs; log: %s\n' "$t" "$rc" "${runs:-?}" "$log" >&2
    grep -E -A2 "panicked at" "$log" | head -n 12 >&2 || true
    grep -E "ERROR: libFuzzer|^SUMMARY" "$log" | head -n 4 >&2 || true
    for a in $(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log"); do
      echo "fuzz-smoke: $t: input $a (hex):" >&2
      od -An -v -tx1 "$a" | tr -d ' \n' | fold -w 128 >&2
      echo >&2
      echo "fuzz-smoke: $t: reproduce with: RUSTC_BOOTSTRAP=1 cargo fuzz run ${FLAGS[*]} $t $a" >&2
    done
  fi
done

echo "fuzz-smoke: $passed passed, ${#failed[@]} failed"
if [ "${#failed[@]}" -ne 0 ]; then
  echo "fuzz-smoke: FAILED targets: ${failed[*]}" >&2
  exit 1
fi
