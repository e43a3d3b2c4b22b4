#!/usr/bin/env bash
# Issue 10's image runs: the Fashion-MNIST DCGAN (configs/fashion-mnist-dcgan.toml)
# with the shipped eta and with eta = 0, two runs at a time on one thread
# each, plus the short eta trials that chose the shipped value.  Each run
# leaves a normal run directory under OUT (samples/, metrics.jsonl,
# summary.json); the last lines print each run's final D accuracy, V and
# wall time.  Usage: scripts/dcgan-fashion-mnist.sh [path/to/lockstep] [OUT]
set -euo pipefail
B=${1:-target/release/lockstep}
OUT=${2:-runs/dcgan-fashion-mnist}
mkdir -p "$OUT"
run() { # name, extra args...
  local name=$1
  shift
  "$B" train --config configs/fashion-mnist-dcgan.toml --backend cpu --threads 1 --quiet --out "$OUT/$name" "$@" \
    >"$OUT/$name.log" 2>&1
}
# The trials (1000 steps each): which eta the gan objective tolerates.
for pair in "0.5 0.05" "0.01 0.001"; do
  set -- $pair
  run "trial-eta$1" --set "train.eta=$1" --steps 1000 &
  run "trial-eta$2" --set "train.eta=$2" --steps 1000 &
  wait
done
# The non-saturating objective at the mixtures' eta (it collapses too).
run trial-nsgan-eta0.5 --set train.eta=0.5 --set train.objective=nsgan --steps 1000
# The full runs: the shipped eta against eta = 0.
run shipped &
run eta0 --set train.eta=0 &
wait
for d in "$OUT"/*/; do
  python3 - "$d" <<'PY'
import json, sys
d = sys.argv[1]
last = [json.loads(l) for l in open(d + "metrics.jsonl")][-1]
s = json.load(open(d + "summary.json"))
print(f"{d}: step {last['step']}  V {last['value']:.3f}  D acc real {last['d_accuracy_real']:.2f} "
      f"fake {last['d_accuracy_fake']:.2f}  |grad_G| {last['grad_norm_gen']:.3g}  wall {s['wall_seconds']:.0f} s")
PY
done
