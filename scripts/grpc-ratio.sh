#!/usr/bin/env bash
# Issue 3's speed check: steps/s of mog-ring in process and over loopback
# gRPC (1 and 2 workers), CPU backend, alternated 3 times.  One worker runs
# whole steps (one small message each way per step); the last line is the
# same worker driven phase by phase (--host-step), for comparison.
# Usage: scripts/grpc-ratio.sh [path/to/lockstep] [threads]
B=${1:-target/release/lockstep}
T=${2:-4}
for i in 1 2 3; do
  for args in "--workers 1 --transport inproc" "--workers 1 --transport grpc" "--workers 2 --transport grpc" \
    "--workers 1 --transport grpc --host-step"; do
    # shellcheck disable=SC2086
    sps=$("$B" bench --config configs/mog-ring.toml --backend cpu --threads "$T" $args --steps 1000 --warmup 50 2>/dev/null |
      grep -o '"steps_per_second":[0-9.]*')
    echo "run $i $args: $sps"
  done
done
