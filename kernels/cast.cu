// fp32 <-> fp16 conversions (round to nearest even).  CPU twin: half::f16::from_f32 / to_f32.

extern "C" __global__ void f32_to_f16(const float* x, __half* y, i64 n) {
    GRID_STRIDE(i, n) { y[i] = __float2half_rn(x[i]); }
}

extern "C" __global__ void f16_to_f32(const __half* x, float* y, i64 n) {
    GRID_STRIDE(i, n) { y[i] = __half2float(x[i]); }
}
