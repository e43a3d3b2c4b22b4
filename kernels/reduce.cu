// Reductions of a step run on the device: the chunks' partial sums added in
// chunk order, and squared norms for the step's report.  CPU twins:
// gan::trainer::{reduce_rows, sum_sq}.

// out[j] = rows[0][j] + rows[1][j] + ... + rows[nrows-1][j], added in that
// order in fp32 (bit for bit the trainer's reduction), for j < ncols; row r
// starts at rows + r * stride.
extern "C" __global__ void reduce_rows(const float* rows, i64 stride, int nrows, int ncols, float* out) {
    GRID_STRIDE(j, (i64)ncols) {
        float s = rows[j];
        for (int r = 1; r < nrows; r++) s += rows[(i64)r * stride + j];
        out[j] = s;
    }
}

#define SQ_THREADS 1024

// *out = sum of x[i]^2 in double, one block of SQ_THREADS threads (a fixed
// order, so the result is the same every run).
extern "C" __global__ void sum_squares(const float* x, i64 n, double* out) {
    __shared__ double red[SQ_THREADS];
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
