#!/usr/bin/env python3
"""Tabulates a replication grid (scripts/replicate.sh): one row per
(data, objective, eta) with the mean and spread over seeds of modes covered,
high-quality % and reverse KL, then every run.  Markdown on stdout.

  python3 scripts/replication_table.py runs/replication
"""
import glob, json, os, statistics, sys


def main(out):
    runs = {}
    for d in sorted(glob.glob(os.path.join(out, "*-s[0-9]*"))):
        name = os.path.basename(d)
        if name.endswith((".log", ".json")):
            continue
        data, obj, eta, seed = name.split("-")
        key = (data, obj, eta[3:])
        s = os.path.join(d, "summary.json")
        failed = d + ".failed.json"
        if os.path.exists(s):
            runs.setdefault(key, []).append((seed, json.load(open(s))))
        elif os.path.exists(failed):
            runs.setdefault(key, []).append((seed, json.load(open(failed))))
    print("| data | objective | eta | runs | modes covered | high-quality % | reverse KL |")
    print("|---|---|---|---|---|---|---|")
    for key in sorted(runs):
        ok = [r for _, r in runs[key] if not r.get("failed")]
        total = ok[0]["modes_total"] if ok else "?"
        def col(f, fmt):
            v = [f(r) for r in ok if f(r) is not None]
            if not v:
                return "-"
            sd = statistics.pstdev(v) if len(v) > 1 else 0.0
            return f"{fmt.format(statistics.mean(v))} ± {fmt.format(sd)}"
        n_failed = len(runs[key]) - len(ok)
        print(f"| {key[0]} | {key[1]} | {key[2]} | {len(ok)}" + (f" (+{n_failed} diverged)" if n_failed else "")
              + f" | {col(lambda r: r['modes_covered'], '{:.1f}')} / {total}"
              + f" | {col(lambda r: 100 * r['high_quality_fraction'], '{:.1f}')}"
              + f" | {col(lambda r: r['reverse_kl'], '{:.3f}')} |")
    print()
    print("| run | steps | modes | HQ % | reverse KL | steps/s |")
    print("|---|---|---|---|---|---|")
    for key in sorted(runs):
        for seed, r in sorted(runs[key]):
            name = f"{key[0]}-{key[1]}-eta{key[2]}-{seed}"
            if r.get("failed"):
                print(f"| {name} | - | diverged: {r['error']} | | | |")
                continue
            kl = "-" if r["reverse_kl"] is None else f"{r['reverse_kl']:.3f}"
            print(f"| {name} | {r['steps']} | {r['modes_covered']}/{r['modes_total']} | "
                  f"{100 * r['high_quality_fraction']:.1f} | {kl} | {r['steps_per_second']:.0f} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/replication")
