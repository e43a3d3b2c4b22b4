// Reductions of a step run on the device: the chunks' partial sums added in
// chunk order (plain, or unscaled and checked on the way), and the step's
// report (squared norms).  CPU twins: gan::trainer::{reduce_rows, sum_sq},
// gan::loss_scale::unscale_check.

// The resident step's reduction of the partial-sum rows into `out` (same
// column layout): columns c0 .. c0+n0 multiplied by *s0 and columns
// c1 .. c1+n1 by *s1, each element unscaled then added in row order (bit for
// bit the host path: gan::loss_scale::unscale_check on every row, then
// gan::trainer::reduce_rows); counts the non-finite sums at *flag; writes an
// fp16 copy of the first range to out16 when not null (v for phase 2).
extern "C" __global__ void reduce_unscale(const float* rows, i64 stride, int nrows, int c0, int n0, const float* s0,
                                          int c1, int n1, const float* s1, float* out, __half* out16,
                                          unsigned int* flag) {
    float sc0 = *s0, sc1 = *s1;
    GRID_STRIDE(j, (i64)n0 + n1) {
        bool first = j < n0;
        i64 c = first ? c0 + j : c1 + (j - n0);
        float sc = first ? sc0 : sc1;
        float s = rows[c] * sc;
        for (int r = 1; r < nrows; r++) s += rows[(i64)r * stride + c] * sc;
        out[c] = s;
        if (first && out16) out16[j] = __float2half_rn(s);
        if (!isfinite(s)) atomicAdd(flag, 1u);
    }
}

#define SQ_THREADS 1024

__device__ void block_sum_squares(const float* x, i64 n, double* out, double* red) {
    double s = 0.0;
    for (i64 i = threadIdx.x; i < n; i += blockDim.x) s += (double)x[i] * (double)x[i];
    red[threadIdx.x] = s;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w /= 2) {
        if (threadIdx.x < w) red[threadIdx.x] += red[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) *out = red[0];
}

// The step's report, two blocks of SQ_THREADS threads: block 0 writes
// *sq0 = sum of x0[i]^2 and copies the nstats stats, block 1 *sq1 = sum of
// x1[i]^2 (double, a fixed order).
extern "C" __global__ void step_report(const float* x0, i64 n0, const float* x1, i64 n1, double* sq0, double* sq1,
                                       const float* stats, float* stats_out, int nstats) {
    __shared__ double red[SQ_THREADS];
    if (blockIdx.x == 0) {
        block_sum_squares(x0, n0, sq0, red);
        if (threadIdx.x < nstats) stats_out[threadIdx.x] = stats[threadIdx.x];
    } else {
        block_sum_squares(x1, n1, sq1, red);
    }
}
