#!/usr/bin/env python3
"""Summarises scripts/stability-ring.sh's runs for docs/stability.md: per run,
the spectral abscissa at a few steps, the leading complex pair among the
largest eigenvalues (the rotation) where there is one, the share of the
rightmost eigenvector on D, the final modes and high-quality fraction, and
the estimates' seconds and products."""
import glob, json, os, statistics, sys

root = sys.argv[1] if len(sys.argv) > 1 else "runs/stability-ring"
at = [5000, 10000, 25000, 50000, 75000, 100000]
print("| run | " + " | ".join(f"max Re λ at {s // 1000}k" for s in at) + " | modes | HQ | s/estimate (median) | products (median) |")
print("|---|" + "---|" * (len(at) + 4))
for d in sorted(glob.glob(os.path.join(root, "eta*-seed*/"))):
    rows = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl")) if '"stability"' in l]
    by = {r["step"]: r["stability"] for r in rows}
    cells = [f"{by[s]['spectral_abscissa']:.3g}" if s in by else "–" for s in at]
    summ = json.load(open(os.path.join(d, "summary.json"))) if os.path.exists(os.path.join(d, "summary.json")) else {}
    secs = statistics.median(r["stability"]["seconds"] for r in rows) if rows else float("nan")
    mv = statistics.median(r["stability"]["matvecs"] for r in rows) if rows else float("nan")
    name = os.path.basename(d.rstrip("/"))
    print(f"| {name} | " + " | ".join(cells) + f" | {summ.get('modes_covered', '–')} | {summ.get('high_quality_fraction', float('nan')):.3f} | {secs:.1f} | {mv:.0f} |")
print()
print("The leading rotation (complex pair of largest modulus among the 6 largest) along training:")
print()
print("| run | " + " | ".join(f"{s // 1000}k" for s in at) + " |")
print("|---|" + "---|" * len(at))
for d in sorted(glob.glob(os.path.join(root, "eta*-seed*/"))):
    rows = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl")) if '"stability"' in l]
    by = {r["step"]: r["stability"] for r in rows}
    def pair(s):
        if s not in by:
            return "–"
        c = [p for p in by[s]["largest"] if p[1] > 0]
        return f"{c[0][0]:.3g} ± {c[0][1]:.3g}i" if c else "none"
    print(f"| {os.path.basename(d.rstrip('/'))} | " + " | ".join(pair(s) for s in at) + " |")
