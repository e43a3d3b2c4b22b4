#!/usr/bin/env bash
# The flood of tests/flood.rs at full size: five pairs of 2-worker gRPC runs
# of tests/data/tiny-ring.toml, each long enough to last about a minute on two
# cores, one undisturbed and one under CONNECTIONS bad connections (default
# 200: wrong tokens, garbage bytes, half-open HTTP/2 streams); prints steps/s,
# the flooded/calm ratio of each pair, peak RSS of the coordinator and the
# refusal lines.  About 17 minutes on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
LOCKSTEP_FLOOD_CONNECTIONS=${1:-200} LOCKSTEP_FLOOD_STEPS=${2:-120000} \
  cargo test --release --test flood -- --nocapture 2>&1 | grep -oE 'flood: .*|  lockstep: refused.*|test result.*|panicked.*'
