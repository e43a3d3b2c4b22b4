// Optimizers on fp32 master weights, with an fp16 copy of the result for the
// next step's GEMMs, both players in one launch.  CPU twin:
// gan::optim::Optimizer::step (Adam as PyTorch's formula; the same
// expressions in the same order, compiled without FMA contraction, so the
// results are bitwise equal).

// The per-step coefficients come from device memory (they change between
// replays of a captured step), computed on the host by
// gan::optim::Optimizer::coefficients.  When `skip` is not null and *skip is
// not zero (a non-finite gradient), nothing changes.  When `bad` is not null
// it counts the parameters that come out non-finite.  p16 may be null.

// The generator's n_gen
// parameters at p[0..n_gen) with gradient g[g_gen..], the discriminator's
// n_disc at p[disc_at..) with gradient g[g_disc..]; m, v and p16 share p's
// layout.  Adam: coef = (sign * lr / (1 - beta1^t), 1 / sqrt(1 - beta2^t));
// SGD: coef[0] = sign * lr (the sign is -1 for the ascending player).
extern "C" __global__ void adam_players(float* p, const float* g, float* m, float* v, __half* p16, i64 n_gen,
                                        i64 n_disc, i64 disc_at, i64 g_gen, i64 g_disc, float b1, float b2,
                                        const float* coef_gen, const float* coef_disc, float eps,
                                        const unsigned int* skip, unsigned int* bad) {
    if (skip && *skip) return;
    GRID_STRIDE(t, n_gen + n_disc) {
        bool gen = t < n_gen;
        i64 i = gen ? t : disc_at + (t - n_gen);
        const float* coef = gen ? coef_gen : coef_disc;
        float gi = g[gen ? g_gen + t : g_disc + (t - n_gen)];
        float mi = b1 * m[i] + (1.0f - b1) * gi;
        float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float pi = p[i] - coef[0] * mi / (sqrtf(vi) * coef[1] + eps);
        p[i] = pi;
        p16[i] = __float2half_rn(pi);
        if (bad && !isfinite(pi)) atomicAdd(bad, 1u);
    }
}

extern "C" __global__ void sgd_players(float* p, const float* g, __half* p16, i64 n_gen, i64 n_disc, i64 disc_at,
                                       i64 g_gen, i64 g_disc, const float* coef_gen, const float* coef_disc,
                                       const unsigned int* skip, unsigned int* bad) {
    if (skip && *skip) return;
    GRID_STRIDE(t, n_gen + n_disc) {
        bool gen = t < n_gen;
        i64 i = gen ? t : disc_at + (t - n_gen);
        float lr = gen ? coef_gen[0] : coef_disc[0];
        float pi = p[i] - lr * g[gen ? g_gen + t : g_disc + (t - n_gen)];
        p[i] = pi;
        p16[i] = __float2half_rn(pi);
        if (bad && !isfinite(pi)) atomicAdd(bad, 1u);
    }
}
