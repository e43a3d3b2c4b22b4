#!/usr/bin/env bash
# The generated hostile inputs of tests/fuzz.rs at FACTOR times CI's counts
# (default 50: 100,000 configs, 100,000 checkpoints, ...); prints one line per
# input kind: cases tried, refused, accepted, the largest allocation seen.
set -euo pipefail
cd "$(dirname "$0")/.."
LOCKSTEP_FUZZ_CASES=${1:-50} cargo test --release --test fuzz -- --nocapture --test-threads 1 2>&1 | grep -oE 'fuzz [^:]+: .*|test result.*|panicked.*'
