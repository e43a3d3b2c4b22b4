#!/usr/bin/env bash
# Runs the replication grid of docs/replication.md: ring and grid, objectives
# gan and wgan, eta 0 and 0.5, seeds 0-2, each for the config's 100,000 steps
# on one CPU thread, JOBS at a time; then tabulates with replication_table.py.
#   scripts/replicate.sh [OUT_DIR] [JOBS] [STEPS]
# DATASETS="ring grid" (the default) selects the data sets.
set -euo pipefail
out=${1:-runs/replication}
jobs=${2:-2}
steps=${3:-100000}
mkdir -p "$out"
cargo build --release --quiet
cp target/release/lockstep "$out/lockstep"   # one binary for the whole grid
list=$(mktemp)
for data in ${DATASETS:-ring grid}; do
  for obj in gan wgan; do
    for eta in 0.5 0; do
      for seed in 0 1 2; do
        echo "$data $obj $eta $seed" >>"$list"
      done
    done
  done
done
run_one() {
  local out=$1 steps=$2 data=$3 obj=$4 eta=$5 seed=$6
  local dir="$out/$data-$obj-eta$eta-s$seed"
  [ -f "$dir/summary.json" ] && return 0
  rm -rf "$dir"
  "$out/lockstep" train --config "configs/mog-$data.toml" --out "$dir" --steps "$steps" --seed "$seed" \
    --set "train.objective=\"$obj\"" --set "train.eta=$eta" --threads 1 --quiet >"$dir.log" 2>&1 \
    || echo "{\"failed\": true, \"error\": $(tail -1 "$dir.log" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().strip()))')}" >"$dir.failed.json"
}
export -f run_one
xargs -P "$jobs" -L 1 bash -c 'run_one "$0" "$1" $2 $3 $4 $5' "$out" "$steps" <"$list"
rm -f "$list"
python3 scripts/replication_table.py "$out"
