// Optimizers on fp32 master weights, with an fp16 copy of the result for the
// next step's GEMMs.  CPU twin: gan::optim::Optimizer::step (the same
// expressions in the same order; compiled without FMA contraction, so the
// results are bitwise equal).

// Adam (PyTorch's formula): step_size = sign * lr / (1 - beta1^t),
// inv_sqrt_bc2 = 1 / sqrt(1 - beta2^t).  p16 may be null.
extern "C" __global__ void adam_step(float* p, const float* g, float* m, float* v, __half* p16, i64 n,
                                     float b1, float b2, float step_size, float inv_sqrt_bc2, float eps) {
    GRID_STRIDE(i, n) {
        float gi = g[i];
        float mi = b1 * m[i] + (1.0f - b1) * gi;
        float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float pi = p[i] - step_size * mi / (sqrtf(vi) * inv_sqrt_bc2 + eps);
        p[i] = pi;
        if (p16) p16[i] = __float2half_rn(pi);
    }
}

// SGD: p -= lr * g with lr already signed (negative for the ascending player).
extern "C" __global__ void sgd_step(float* p, const float* g, __half* p16, i64 n, float lr) {
    GRID_STRIDE(i, n) {
        float pi = p[i] - lr * g[i];
        p[i] = pi;
        if (p16) p16[i] = __float2half_rn(pi);
    }
}
