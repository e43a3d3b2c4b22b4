// Optimizers on fp32 master weights, with an fp16 copy of the result for the
// next step's GEMMs.  CPU twin: gan::optim::Optimizer::step (the same
// expressions in the same order; compiled without FMA contraction, so the
// results are bitwise equal).

// The per-step coefficients come from device memory (they change between
// replays of a captured step), computed on the host by
// gan::optim::Optimizer::coefficients.  When `skip` is not null and *skip is
// not zero (a non-finite gradient), nothing changes.  When `bad` is not null
// it counts the parameters that come out non-finite.  p16 may be null.

// Adam (PyTorch's formula): coef = (sign * lr / (1 - beta1^t), 1 / sqrt(1 - beta2^t)).
extern "C" __global__ void adam_step(float* p, const float* g, float* m, float* v, __half* p16, i64 n, float b1,
                                     float b2, const float* coef, float eps, const unsigned int* skip,
                                     unsigned int* bad) {
    if (skip && *skip) return;
    float step_size = coef[0], inv_sqrt_bc2 = coef[1];
    GRID_STRIDE(i, n) {
        float gi = g[i];
        float mi = b1 * m[i] + (1.0f - b1) * gi;
        float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float pi = p[i] - step_size * mi / (sqrtf(vi) * inv_sqrt_bc2 + eps);
        p[i] = pi;
        if (p16) p16[i] = __float2half_rn(pi);
        if (bad && !isfinite(pi)) atomicAdd(bad, 1u);
    }
}

// SGD: p -= coef[0] * g, coef[0] = sign * lr (negative for the ascending player).
extern "C" __global__ void sgd_step(float* p, const float* g, __half* p16, i64 n, const float* coef,
                                    const unsigned int* skip, unsigned int* bad) {
    if (skip && *skip) return;
    float lr = coef[0];
    GRID_STRIDE(i, n) {
        float pi = p[i] - lr * g[i];
        p[i] = pi;
        if (p16) p16[i] = __float2half_rn(pi);
        if (bad && !isfinite(pi)) atomicAdd(bad, 1u);
    }
}
