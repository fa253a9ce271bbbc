#!/usr/bin/env python3
"""Reads criterion's estimates and prints each figure with its ratio to the baseline measured
in the same run; writes target/bench/report.json as
[{"name", "value", "unit", "baseline", "baseline_value", "ratio"}]."""
import json
import os
import sys

CRIT = os.path.join("target", "criterion")


def median_ns(group, bench, param=None):
    parts = [CRIT, group] + [x for x in (bench, param) if x] + ["new", "estimates.json"]
    path = os.path.join(*parts)
    try:
        with open(path) as f:
            return json.load(f)["median"]["point_estimate"]
    except FileNotFoundError:
        sys.exit(f"bench-report: {path} missing: did the benchmark run?")


rows = []
for group, what in (("pccom_1400", "1400-byte TCP payload"), ("pccom_unit_64000", "64,000-byte unit (GSO packet)")):
    for alg in ("aes-256-gcm", "chacha20-poly1305"):
        v = median_ns(group, "seal_open", alg)
        b = median_ns(group, "raw_aead_seal_open", alg)
        rows.append({"name": f"PCCOM seal+open, {what}, {alg}", "value": round(v / 1000, 3), "unit": "us",
                     "baseline": f"raw {alg} seal+open of the same bytes (aws-lc-rs)",
                     "baseline_value": round(b / 1000, 3), "ratio": round(v / b, 3), "goal": "<= 1.3"})
d = median_ns("dprp_decision_seed_path", "")
rows.append({"name": "DPRP decision (policy function), 4-GE path", "value": round(d, 1), "unit": "ns",
             "baseline": None, "baseline_value": None, "ratio": None})
seed = "seed 001: whole DPRP negotiation on a Pentium 4 over 100BASE-TX (published figure, not re-measured)"
for bench, what in (("dprp_negotiation_two_ges", "with path keys (every flow after a path's first)"),
                    ("dprp_negotiation_two_ges_signatures_only", "path keys off (a path's first flow)")):
    n = median_ns(bench, "")
    rows.append({"name": f"DPRP negotiation CPU, two GESs (DDE, RGI, MPIT, CDN), {what}", "value": round(n / 1000, 1),
                 "unit": "us", "baseline": seed, "baseline_value": 1012.0, "ratio": round(n / 1000 / 1012.0, 3)})

os.makedirs(os.path.join("target", "bench"), exist_ok=True)
with open(os.path.join("target", "bench", "report.json"), "w") as f:
    json.dump(rows, f, indent=2)

w = max(len(r["name"]) for r in rows)
print()
print(f"{'figure':<{w}}  {'value':>10}  {'baseline':>10}  {'ratio':>6}")
for r in rows:
    bv = "-" if r["baseline_value"] is None else f"{r['baseline_value']:.3f}"
    ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
    print(f"{r['name']:<{w}}  {r['value']:>8} {r['unit']:<2} {bv:>10}  {ratio:>6}")
print("\nbaselines:")
for r in rows:
    if r["baseline"]:
        print(f"  {r['name']}: {r['baseline']}")
print("written: target/bench/report.json")
