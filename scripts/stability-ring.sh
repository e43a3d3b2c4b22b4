#!/usr/bin/env bash
# The ring's Jacobian spectrum along training (docs/stability.md): mog-ring
# at eta 0.5 and eta 0 for each seed in SEEDS (default "0 1 2"), STEPS steps
# (default 100000), an estimate every EVERY steps (default 5000), two runs at
# a time on one thread each; then, on each seed-0 run's last checkpoint,
# `lockstep stability --compare-eta` (the other eta) with a picture.
# Outputs: runs/stability-ring/eta{E}-seed{S}/, .../spectrum-eta{E}.json/.png,
# and runs/stability-ring/abscissa.png (every run's max Re λ along training).
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-"0 1 2"}
STEPS=${STEPS:-100000}
EVERY=${EVERY:-5000}
BIN=target/release/lockstep
[ -x "$BIN" ] || cargo build --release
OUT=runs/stability-ring
mkdir -p "$OUT/logs"
train() {
  local eta=$1 seed=$2 dir="$OUT/eta$1-seed$2"
  [ -f "$dir/summary.json" ] && return 0
  rm -rf "$dir"
  $BIN train --config configs/mog-ring.toml --steps "$STEPS" --seed "$seed" --out "$dir" -q --threads 1 \
    --set train.eta="$eta" --set log.stability_every="$EVERY" --set log.eval_every=10000 2>"$OUT/logs/eta$1-seed$2.log" >/dev/null
  echo "done: eta $eta seed $seed"
}
for seed in $SEEDS; do
  train 0.5 "$seed" &
  train 0 "$seed" &
  wait
done
for eta in 0.5 0; do
  other=$([ "$eta" = 0 ] && echo 0.5 || echo 0)
  ck=$(ls "$OUT/eta$eta-seed0/checkpoints/"step-*.safetensors | tail -1)
  $BIN stability --checkpoint "$ck" --compare-eta "$other" --plot "$OUT/spectrum-eta$eta.png" > "$OUT/spectrum-eta$eta.json"
done
$BIN plot --stability "$OUT"/eta*-seed*/ --out "$OUT/abscissa.png"
