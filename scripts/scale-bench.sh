#!/usr/bin/env bash
# Steps/s with separate worker processes, each pinned to one core (taskset)
# with one thread, under a coordinator process, as on a cluster: 1 worker
# (core 0) against 2 workers (cores 0 and 1), alternating, ROUNDS times.
# Prints each run, then the median of the 2-against-1 ratios of adjacent runs.
#
#   scripts/scale-bench.sh [CONFIG] [BATCH] [STEPS] [ROUNDS]
#   scripts/scale-bench.sh configs/mog-ring.toml 4096 400 3
#   scripts/scale-bench.sh configs/fashion-mnist-dcgan.toml 128 60 3
#
# Evaluations, samples, plots and checkpoints are pushed beyond the run, so
# only steps are timed (the last metrics line's steps_per_second, taken
# before the final evaluation).
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-configs/mog-ring.toml}
BATCH=${2:-4096}
STEPS=${3:-400}
ROUNDS=${4:-3}
BIN=target/release/lockstep
[ -x "$BIN" ] || cargo build --release
far=$((STEPS * 10))

# One run with $1 workers: prints its steps/s.
run() {
  local n=$1 port out
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  out=$(mktemp -d)
  "$BIN" coordinator --quiet --config "$CONFIG" --steps "$STEPS" --min-workers "$n" \
    --listen "127.0.0.1:$port" --out "$out/run" --set "train.batch=$BATCH" \
    --set "log.every=$far" --set "log.eval_every=$far" --set "log.sample_every=$far" \
    --set "log.checkpoint_every=$far" >"$out/summary.json" 2>"$out/coordinator.log" &
  local coord=$!
  local pids=()
  for core in $(seq 0 $((n - 1))); do
    taskset -c "$core" "$BIN" worker --coordinator "http://127.0.0.1:$port" --backend cpu --threads 1 --retry-for 20 \
      2>>"$out/workers.log" &
    pids+=($!)
  done
  if ! wait "$coord"; then
    echo "the coordinator failed:" >&2
    cat "$out/coordinator.log" >&2
    exit 1
  fi
  for p in "${pids[@]}"; do wait "$p" || true; done
  # The last metrics line's steps/s: measured before the evaluation that
  # every run ends with (the summary's figure includes it).
  python3 -c "import json, sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])['steps_per_second'])" "$out/run/metrics.jsonl"
  rm -rf "$out"
}

ratios=()
for r in $(seq 1 "$ROUNDS"); do
  # Alternate which kind goes first.
  if [ $((r % 2)) -eq 1 ]; then
    one=$(run 1)
    two=$(run 2)
  else
    two=$(run 2)
    one=$(run 1)
  fi
  ratio=$(python3 -c "print(f'{$two / $one:.3f}')")
  ratios+=("$ratio")
  echo "round $r: 1 worker $one steps/s, 2 workers $two steps/s, ratio $ratio"
done
python3 -c "import statistics, sys; r = sorted(map(float, sys.argv[1:])); print(f'$CONFIG batch $BATCH: 2 workers / 1 worker, median of {len(r)} rounds: {statistics.median(r):.3f} (all: {r})')" "${ratios[@]}"
