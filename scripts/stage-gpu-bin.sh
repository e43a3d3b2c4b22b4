#!/usr/bin/env bash
# Builds what scripts/gpu-check.sh needs and stages it, stripped, in a folder
# to carry to a GPU machine that has no Rust toolchain (default: gpu-bin/,
# ignored by git).  Usage: scripts/stage-gpu-bin.sh [DIR] [path/to/torch_gan_step.py]
set -eu
DIR=${1:-gpu-bin}
TORCH=${2:-../shared/reference/torch_gan_step.py}
cargo build --release
exe() { cargo test --release --no-run --test "$1" 2>&1 | sed -n "s|.*Executable tests/$1.rs (\(.*\))|\1|p"; }
mkdir -p "$DIR"
cp target/release/lockstep "$DIR/lockstep"
cp "$(exe cuda)" "$DIR/cuda-tests"
cp "$(exe cuda_compile)" "$DIR/cuda-compile-tests"
cp "$TORCH" "$DIR/"
strip "$DIR/lockstep" "$DIR/cuda-tests" "$DIR/cuda-compile-tests"
du -sh "$DIR"
