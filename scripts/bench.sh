#!/usr/bin/env bash
# `make bench`: benchmarks (never part of `make test`). Prints figures and ratios against
# baselines measured in the same run and writes target/bench/report.json.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --locked -p gscip-core --bench core -- --warm-up-time 2 --measurement-time ${BENCH_SECONDS:-5} "$@"
python3 scripts/bench-report.py
