// The objective's per-sample terms at D's output, the seeds of the backward
// passes (pre-multiplied by the loss scale), and the per-chunk statistics.
// CPU twins: gan::objective::Objective and the per-sample loops of
// gan::phases::{phase1, phase2} (factored as gan::phases::{phase1_seeds,
// gen_loss_seeds, phase2_seeds}).
// obj: 0 gan, 1 nsgan, 2 wgan.  The loss scale is read from device memory
// (it changes between replays of a captured step).  D's output has width 1; a chunk's block holds
// its n real samples (rows 0..n) then its n fake ones (rows n..2n).

__device__ __forceinline__ float sigm(float t) {
    if (t >= 0.0f) return 1.0f / (1.0f + expf(-t));
    float e = expf(t);
    return e / (1.0f + e);
}

__device__ __forceinline__ float obj_f(int obj, float t) {
    if (obj == 2) return t;
    return t >= 0.0f ? -log1pf(expf(-t)) : t - log1pf(expf(t));
}

__device__ __forceinline__ float obj_df(int obj, float t) { return obj == 2 ? 1.0f : sigm(-t); }

__device__ __forceinline__ float obj_d2f(int obj, float t) { return obj == 2 ? 0.0f : -(sigm(t) * sigm(-t)); }

__device__ __forceinline__ float gen_loss(int obj, float d) { return obj == 1 ? -obj_f(obj, d) : obj_f(obj, -d); }

__device__ __forceinline__ float gen_loss_grad(int obj, float d) { return obj == 1 ? -obj_df(obj, d) : -obj_df(obj, -d); }

#define NSTAT 5
#define HEAD_THREADS 256

// Phase 1, one thread block per chunk: the seeds of D's backward pass
// (ybar = f'(D) / B at a real sample, -f'(-D) / B at a fake one, times
// `scale`) and the chunk's statistics (sums / B) written to
// stats[c * stride + k].  Block size: HEAD_THREADS.
extern "C" __global__ void phase1_seeds(const __half* d, __half* ybar, float* stats, i64 stride, int n, int obj,
                                        float inv_b, const float* scale_p) {
    __shared__ float red[NSTAT][HEAD_THREADS];
    int c = blockIdx.x;
    const __half* dc = d + (i64)c * 2 * n;
    __half* yc = ybar + (i64)c * 2 * n;
    float scale = *scale_p;
    float s[NSTAT] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float dr = __half2float(dc[i]);
        float df = __half2float(dc[n + i]);
        yc[i] = __float2half_rn(obj_df(obj, dr) * inv_b * scale);
        yc[n + i] = __float2half_rn(-obj_df(obj, -df) * inv_b * scale);
        s[0] += obj_f(obj, dr);
        s[1] += obj_f(obj, -df);
        s[2] += gen_loss(obj, df);
        s[3] += dr > 0.0f ? 1.0f : 0.0f;
        s[4] += df < 0.0f ? 1.0f : 0.0f;
    }
    for (int k = 0; k < NSTAT; k++) red[k][threadIdx.x] = s[k];
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w /= 2) {
        if (threadIdx.x < w)
            for (int k = 0; k < NSTAT; k++) red[k][threadIdx.x] += red[k][threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        for (int k = 0; k < NSTAT; k++) stats[c * stride + k] = red[k][0] * inv_b;
}

// Phase 1 with eta = 0: the seed of the generator loss at the fake samples,
// ybar = gen_loss'(D) / B * scale (rows n..2n of each chunk).
extern "C" __global__ void gen_loss_seeds(const __half* d, __half* ybar, int chunks, int n, int obj, float inv_b,
                                          const float* scale_p) {
    float scale = *scale_p;
    GRID_STRIDE(i, (i64)chunks * n) {
        i64 e = row_elem(i, Rows{chunks, 2 * n, n, n, 1});
        ybar[e] = __float2half_rn(gen_loss_grad(obj, __half2float(d[e])) * inv_b * scale);
    }
}

// Phase 2 at the fake samples, from D and its tangent ddot along v:
// ybar = (gen_loss'(D) + 2 eta f''(-D) ddot) / B, ydotbar = -2 eta f'(-D) / B, both times `scale`.
extern "C" __global__ void phase2_seeds(const __half* d, const __half* ddot, __half* ybar, __half* ydotbar,
                                        int chunks, int n, int obj, float two_eta, float inv_b,
                                        const float* scale_p) {
    float scale = *scale_p;
    GRID_STRIDE(i, (i64)chunks * n) {
        i64 e = row_elem(i, Rows{chunks, 2 * n, n, n, 1});
        float di = __half2float(d[e]);
        float t = __half2float(ddot[e]);
        ybar[e] = __float2half_rn((gen_loss_grad(obj, di) + two_eta * obj_d2f(obj, -di) * t) * inv_b * scale);
        ydotbar[e] = __float2half_rn(-two_eta * obj_df(obj, -di) * inv_b * scale);
    }
}
