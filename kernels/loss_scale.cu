// Dynamic loss scaling on the device: unscale the fp32 gradient sums and count
// the non-finite ones.  CPU twin: gan::loss_scale::unscale_check.

// For rows r < rows: x[r * stride + j] *= inv_scale for j < len; *nonfinite
// counts the values that are inf or NaN after unscaling (*inv_scale_p = 1:
// a plain finiteness check).
extern "C" __global__ void unscale_check(float* x, i64 stride, int rows, int len, const float* inv_scale_p,
                                         unsigned int* nonfinite) {
    float inv_scale = *inv_scale_p;
    GRID_STRIDE(i, (i64)rows * len) {
        i64 r = i / len;
        i64 e = r * stride + (i - r * len);
        float v = x[e] * inv_scale;
        x[e] = v;
        if (!isfinite(v)) atomicAdd(nonfinite, 1u);
    }
}
