#!/usr/bin/env bash
# What live stability estimates cost a training run: mog-ring for STEPS
# steps (default 20000) with log.stability_every = EVERY (default 5000) and
# without, alternated (off, on, on, off); prints each run's steps/s (the
# training's: the wait for the last estimate after the last step is not in
# it) and the ratio of the two means.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-20000}
EVERY=${2:-5000}
BIN=target/release/lockstep
[ -x "$BIN" ] || cargo build --release
out=$(mktemp -d)
sps() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['steps_per_second'])" "$1/summary.json"; }
declare -a off on
for k in 0 1 2 3; do
  case $k in 0|3) every=0 ;; *) every=$EVERY ;; esac
  $BIN train --config configs/mog-ring.toml --steps "$STEPS" --out "$out/run$k" -q \
    --set log.stability_every=$every --set log.eval_every=0 --set log.sample_every=0 --set log.checkpoint_every=0 2>/dev/null >/dev/null
  s=$(sps "$out/run$k")
  n=$(grep -c '"stability"' "$out/run$k/metrics.jsonl" || true)
  echo "run $k: stability_every=$every  steps/s $s  estimates $n"
  if [ "$every" = 0 ]; then off+=("$s"); else on+=("$s"); fi
done
python3 - "${off[@]}" "${on[@]}" <<'PY'
import sys
v = [float(x) for x in sys.argv[1:]]
off, on = (v[0] + v[1]) / 2, (v[2] + v[3]) / 2
print(f"mean steps/s: {off:.1f} without, {on:.1f} with estimates: {100 * on / off:.1f} %")
PY
rm -rf "$out"
