#!/usr/bin/env bash
# The churn run of docs/scaling.md for SECONDS (default 300): synthetic
# worker processes killed (SIGKILL) or frozen (SIGSTOP) and replaced every
# 150-650 ms under a coordinator process, three alive at a time; the run must
# end bitwise where an undisturbed one ends, every step applied once
# (tests/churn.rs, which CI runs for 15 s).
#
#   scripts/churn.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
LOCKSTEP_CHURN_SECONDS=${1:-300} cargo test --release --test churn -- --nocapture
