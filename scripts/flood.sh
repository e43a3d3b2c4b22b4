#!/usr/bin/env bash
# The flood of tests/flood.rs at full size: a 2-worker gRPC run of
# tests/data/tiny-ring.toml long enough to last about a minute on two cores,
# undisturbed and then under CONNECTIONS bad connections (default 200: wrong
# tokens, garbage bytes, half-open HTTP/2 streams); prints steps/s, peak RSS
# of the coordinator and the refusal lines.
set -euo pipefail
cd "$(dirname "$0")/.."
LOCKSTEP_FLOOD_CONNECTIONS=${1:-200} LOCKSTEP_FLOOD_STEPS=${2:-120000} \
  cargo test --release --test flood -- --nocapture 2>&1 | grep -oE 'flood: .*|  lockstep: refused.*|test result.*|panicked.*'
