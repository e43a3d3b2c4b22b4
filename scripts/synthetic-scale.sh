#!/usr/bin/env bash
# The control plane's load test (docs/scaling.md): W synthetic workers
# (`--backend synthetic`: pseudo-gradients of the model's size, no training)
# over loopback gRPC, W = 1, 2, 4, ..., 32, one bench each.  Prints a
# markdown table: steps/s, the step's wall time, the coordinator thread's CPU
# time per step, and the bytes per step it received and sent against
# W × 8 P.
#
#   scripts/synthetic-scale.sh [CONFIG] [BATCH] [SYNTHETIC_MS] [STEPS]
#   scripts/synthetic-scale.sh configs/mog-ring.toml 4096 20 100
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-configs/mog-ring.toml}
BATCH=${2:-4096}
MS=${3:-20}
STEPS=${4:-100}
BIN=target/release/lockstep
[ -x "$BIN" ] || cargo build --release
P=$("$BIN" bench --config "$CONFIG" --backend synthetic --synthetic-ms 0 --steps 1 --warmup 0 2>/dev/null |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["params"])')
echo "$CONFIG, batch $BATCH, P = $P, --synthetic-ms $MS"
echo
echo "| W | steps/s | step ms | compute ms (ideal) | coordinator CPU ms/step | received B/step | / (W × 8 P) | sent B/step |"
echo "|---|---|---|---|---|---|---|---|"
for w in 1 2 4 8 16 32; do
  "$BIN" bench --config "$CONFIG" --backend synthetic --synthetic-ms "$MS" --transport grpc --workers "$w" \
    --steps "$STEPS" --warmup 10 --set "train.batch=$BATCH" --breakdown 2>/dev/null |
    python3 -c '
import json, sys
d = json.load(sys.stdin)
b = d["breakdown"]
w, ms, p = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
phases = 2 if d["eta"] > 0 else 1
rx, tx = b["bytes_received_per_step"], b["bytes_sent_per_step"]
cols = [w, "%.1f" % d["steps_per_second"], "%.2f" % d["step_ms"], "%.2f" % (phases * ms / w),
        "%.2f" % d["coordinator_cpu_ms"], "{:,.0f}".format(rx), "%.3f" % (rx / (w * 8 * p)), "{:,.0f}".format(tx)]
print("| " + " | ".join(map(str, cols)) + " |")
' "$w" "$MS" "$P"
done
