#!/usr/bin/env bash
# `make bench`: benchmarks (never part of `make test`). Prints figures and ratios against
# baselines measured in the same run and writes target/bench/report.json.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --locked -p gscip-core --bench core -- --warm-up-time 2 --measurement-time ${BENCH_SECONDS:-5} "$@"
python3 scripts/bench-report.py
# The lab part (root): A — R — B with plain, the NFQUEUE floor, wireguard-go, boringtun,
# strongSwan (kernel-libipsec), GSCIP; A — GA — GB — B with plain, the floor, GSCIP; 10,000 new
# flows through one GEN; offloads on and off.
./scripts/install-deps.sh ip iptables python3 iperf3 ethtool ping unshare timeout wireguard-go wg swanctl \
  /usr/lib/ipsec/charon /usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so \
  /usr/lib/ipsec/plugins/libstrongswan-openssl.so
# boringtun-cli 0.7.1 from crates.io, built once (2-3 minutes) into target/tools.
if [ -z "${BORINGTUN:-}" ]; then
  BORINGTUN="$PWD/target/tools/bin/boringtun-cli"
  if [ ! -x "$BORINGTUN" ]; then
    env -u CARGO_TARGET_DIR cargo install --locked boringtun-cli --version 0.7.1 --root "$PWD/target/tools"
  fi
  export BORINGTUN
fi
cargo build --locked --release -p gscipd -p gscip-lab -p gscip-gms
./target/release/gscip-lab-bench
# The GMS: enrollments and key fetches per second, a rotation reaching 1,000 simulated GEs
# (two sockets each: raise the open-file limit).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
./target/release/gms-bench
python3 - <<'PY'
import json
rows = (json.load(open("target/bench/report.json")) + json.load(open("target/bench/lab.json"))
        + json.load(open("target/bench/gms.json")))
json.dump(rows, open("target/bench/report.json", "w"), indent=2)
print("merged: target/bench/report.json")
PY
