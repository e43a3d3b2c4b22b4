#!/usr/bin/env bash
# Every GPU check of lockstep, for a machine with an NVIDIA GPU, CUDA 13
# (driver, NVRTC, cuBLAS, headers), Python with PyTorch, and no Rust
# toolchain.  Run it from the repository root with the folder of prebuilt
# binaries (see README "GPU checks"):
#
#   scripts/gpu-check.sh gpu-bin
#
# gpu-bin holds: lockstep, cuda-tests and cuda-compile-tests (test binaries,
# stripped), torch_gan_step.py (../shared/reference).  Logs go to $OUT (or
# ./gpu-check-logs); a table of results is printed last.  QUICK=1 skips the
# 100k-step training run, SKIP_TORCH=1 the PyTorch reference.
set -u
BIN=${1:?usage: scripts/gpu-check.sh BIN_DIR}
BIN=$(cd "$BIN" && pwd)
LOGS=${OUT:-gpu-check-logs}
mkdir -p "$LOGS"
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
ROWS=()

# check NAME CMD...: runs CMD with its output in $LOGS/NAME.log; records PASS/FAIL and seconds.
check() {
    local name=$1
    shift
    local t0=$SECONDS
    if "$@" >"$LOGS/$name.log" 2>&1; then s=PASS; else s="FAIL(rc=$?)"; fi
    ROWS+=("$(printf '%-34s %-10s %5ss' "$name" "$s" $((SECONDS - t0)))")
    echo "== $name: $s ($((SECONDS - t0)) s)"
    tail -n 5 "$LOGS/$name.log"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$LOGS/gpu.txt"

check nvrtc-compile "$BIN/cuda-compile-tests" --nocapture
check kernels-and-parity "$BIN/cuda-tests" --nocapture --test-threads 1 --skip mog_ring_trains

# Speed: lockstep beside the PyTorch reference, same card, same call.
check bench-lockstep "$BIN/lockstep" bench --config configs/mog-ring.toml --backend cuda --steps 5000 --warmup 100
check bench-lockstep-host-step "$BIN/lockstep" bench --config configs/mog-ring.toml --backend cuda --steps 2000 --warmup 100 --host-step
check bench-lockstep-b8192 "$BIN/lockstep" bench --config configs/mog-ring.toml --backend cuda --steps 300 --warmup 20 --set train.batch=8192
# One CUDA worker over loopback gRPC: whole graph steps, one small message each way per step.
check bench-lockstep-grpc-cuda "$BIN/lockstep" bench --config configs/mog-ring.toml --backend cuda --transport grpc --workers 1 --steps 3000 --warmup 100 --breakdown
if [ -z "${SKIP_TORCH:-}" ]; then
check torch-eager python3 "$BIN/torch_gan_step.py" --model mog-ring --eta 0.5 --steps 1000
check torch-graph-amp python3 "$BIN/torch_gan_step.py" --model mog-ring --eta 0.5 --steps 2000 --graph --amp
check torch-graph-amp-b8192 python3 "$BIN/torch_gan_step.py" --model mog-ring --eta 0.5 --steps 300 --graph --amp --batch 8192
fi
check auto-picks-cuda bash -c "'$BIN/lockstep' bench --config tests/data/tiny-ring.toml --steps 5 --warmup 1 | grep '\"backend\":\"cuda\"'"
check bad-device-exits-2 bash -c "'$BIN/lockstep' bench --config tests/data/tiny-ring.toml --backend cuda --device 99 --steps 1; test \$? -eq 2"

# A CUDA worker and a CPU worker under one coordinator.
mixed() {
    local dir
    dir=$(mktemp -d)
    "$BIN/lockstep" coordinator --config configs/mog-ring-short.toml --out "$dir/run" --steps 300 --min-workers 2 \
        --listen 127.0.0.1:7171 --quiet >"$dir/coord.out" 2>"$dir/coord.err" &
    local c=$!
    sleep 1
    "$BIN/lockstep" worker --coordinator http://127.0.0.1:7171 --backend cuda >"$dir/w1.log" 2>&1 &
    "$BIN/lockstep" worker --coordinator http://127.0.0.1:7171 --backend cpu >"$dir/w2.log" 2>&1 &
    wait $c
    local rc=$?
    cat "$dir/coord.err" "$dir/coord.out"
    [ $rc -eq 0 ] && grep -q 'joined (cuda' "$dir/coord.err" && grep -q 'joined (cpu' "$dir/coord.err" &&
        grep -q '"steps":300' "$dir/coord.out" && grep -q '"workers":2' "$dir/coord.out"
}
check coordinator-cuda-plus-cpu mixed

# A CUDA worker over loopback gRPC (whole graph steps, each sent ahead of the
# last one's answer) ends bitwise where the in-process CUDA run ends.
cuda_grpc_bitwise() {
    local dir
    dir=$(mktemp -d)
    for t in inproc grpc; do
        "$BIN/lockstep" train --quiet --config configs/mog-ring-short.toml --steps 300 --backend cuda \
            --transport $t --out "$dir/$t" || return 1
    done
    python3 scripts/same-tensors.py "$dir/inproc/checkpoints/step-0000300.safetensors" \
        "$dir/grpc/checkpoints/step-0000300.safetensors"
}
check cuda-worker-over-grpc-bitwise cuda_grpc_bitwise

# Issue 3's gRPC-against-in-process ratio on this host's CPU cores.
check grpc-ratio-cpu scripts/grpc-ratio.sh "$BIN/lockstep" 4

# The full authors' run (100k steps) on the GPU; QUICK=1 leaves it out.
if [ -z "${QUICK:-}" ]; then
    check mog-ring-8-modes timeout 400 "$BIN/cuda-tests" --nocapture --exact mog_ring_trains_to_all_eight_modes_on_the_gpu
fi

echo
echo "== lockstep bench (mog-ring, batch 512 and 8192) and PyTorch (same card):"
grep -h '^{' "$LOGS"/bench-*.log "$LOGS"/torch-*.log 2>/dev/null
echo
echo "== gRPC against in-process (CPU backend, 4 threads, steps/s):"
cat "$LOGS/grpc-ratio-cpu.log" 2>/dev/null
echo
printf '%-34s %-10s %6s\n' CHECK RESULT TIME
printf '%s\n' "${ROWS[@]}"
