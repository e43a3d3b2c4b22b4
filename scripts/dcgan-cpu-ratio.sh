#!/usr/bin/env bash
# Issue 10's speed check: steps/s of the dcgan28 step (batch 64) on the CPU,
# lockstep against shared/reference/torch_gan_step.py, at eta 0.5 and eta 0,
# runs alternated, then a table with each pair's ratio and GFLOP/s (11.93
# GFLOP a step at eta 0.5, 7.77 at eta 0, as PyTorch's FlopCounterMode counts).
# Needs: python3 with torch.  Usage:
#   scripts/dcgan-cpu-ratio.sh [path/to/lockstep] [path/to/torch_gan_step.py] [rounds] [steps]
set -euo pipefail
B=${1:-target/release/lockstep}
REF=${2:-../shared/reference/torch_gan_step.py}
ROUNDS=${3:-3}
STEPS=${4:-100}
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
rows=()
for i in $(seq "$ROUNDS"); do
  for eta in 0.5 0; do
    ours=$("$B" bench --config configs/fashion-mnist-dcgan.toml --backend cpu --steps "$STEPS" --set "train.eta=$eta" 2>/dev/null)
    theirs=$(python3 "$REF" --device cpu --model dcgan28 --batch 64 --eta "$eta" --steps "$STEPS")
    o=$(echo "$ours" | field steps_per_second)
    t=$(echo "$theirs" | field steps_per_second)
    g=$(echo "$ours" | field gflop_per_second)
    rss=$(echo "$ours" | field peak_rss_mib)
    rows+=("| $i | $eta | $o | $t | $(python3 -c "print(f'{$o/$t:.2f}')") | $g | $(python3 -c "print(f'{$rss:.0f}')") |")
  done
done
echo "| round | eta | lockstep steps/s | PyTorch steps/s | ratio | lockstep GFLOP/s | lockstep peak RSS MiB |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
