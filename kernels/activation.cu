// Elementwise activations and their four passes.  CPU twin:
// nn::layer::Activation (eval, forward, backward, jvp, jvp_backward).
// kind: 0 relu, 1 leaky_relu (s = slope), 2 tanh, 3 sigmoid, 4 scale (s = factor).

__device__ __forceinline__ float sigmoidf_stable(float t) {
    if (t >= 0.0f) return 1.0f / (1.0f + expf(-t));
    float e = expf(t);
    return e / (1.0f + e);
}

// (sigma(a), sigma'(a), sigma''(a)).
__device__ __forceinline__ void act_eval(int kind, float s, float a, float* y, float* d1, float* d2) {
    switch (kind) {
    case 0: *y = a > 0.0f ? a : 0.0f; *d1 = a > 0.0f ? 1.0f : 0.0f; *d2 = 0.0f; break;
    case 1: *y = a > 0.0f ? a : s * a; *d1 = a > 0.0f ? 1.0f : s; *d2 = 0.0f; break;
    case 2: { float t = tanhf(a); float d = 1.0f - t * t; *y = t; *d1 = d; *d2 = -2.0f * t * d; break; }
    case 3: { float t = sigmoidf_stable(a); float d = t * (1.0f - t); *y = t; *d1 = d; *d2 = d * (1.0f - 2.0f * t); break; }
    default: *y = s * a; *d1 = s; *d2 = 0.0f; break;
    }
}

// y = sigma(a).
extern "C" __global__ void act_forward(const __half* a, __half* y, int kind, float s,
                                       Rows r) {
    GRID_STRIDE(i, row_elems(r)) {
        i64 e = row_elem(i, r);
        float v, d1, d2;
        act_eval(kind, s, ld(a, e), &v, &d1, &d2);
        st(y, e, v);
    }
}

// da = sigma'(a) dy (backward), and ydot = sigma'(a) adot (jvp).
extern "C" __global__ void act_backward(const __half* a, const __half* dy, __half* da, int kind, float s,
                                        Rows r) {
    GRID_STRIDE(i, row_elems(r)) {
        i64 e = row_elem(i, r);
        float v, d1, d2;
        act_eval(kind, s, ld(a, e), &v, &d1, &d2);
        st(da, e, d1 * ld(dy, e));
    }
}

// abar = sigma'(a) ybar + sigma''(a) adot ydotbar (adot may be null: zero);
// adotbar = sigma'(a) ydotbar when adotbar is not null.
extern "C" __global__ void act_jvp_backward(const __half* a, const __half* adot, const __half* ybar,
                                            const __half* ydotbar, __half* abar, __half* adotbar, int kind, float s,
                                            Rows r) {
    GRID_STRIDE(i, row_elems(r)) {
        i64 e = row_elem(i, r);
        float v, d1, d2;
        act_eval(kind, s, ld(a, e), &v, &d1, &d2);
        float tb = ld(ydotbar, e);
        float ab = d1 * ld(ybar, e);
        if (adot) ab += d2 * ld(adot, e) * tb;
        st(abar, e, ab);
        if (adotbar) st(adotbar, e, d1 * tb);
    }
}

// A linear layer's bias and the activation after it, fused (forward): the
// linear output y_lin = half(acc + b) (kept: the activation's backward needs
// it) and y = half(sigma(y_lin)), from the rounded y_lin as the unfused pair
// (linear.cu's bias_cast, then act_forward) computes it.
extern "C" __global__ void bias_act_forward(const float* acc, const __half* b, __half* y_lin, __half* y, int kind,
                                            float s, Rows r) {
    GRID_STRIDE(i, row_elems(r)) {
        i64 e = row_elem(i, r);
        __half h = __float2half_rn(acc[e] + __half2float(b[i % r.width]));
        y_lin[e] = h;
        float v, d1, d2;
        act_eval(kind, s, __half2float(h), &v, &d1, &d2);
        st(y, e, v);
    }
}

// The same pair's tangents (jvp): t_lin = half(acc + c) and
// t = half(sigma'(a) t_lin), a the pair's linear output from the forward.
extern "C" __global__ void bias_act_jvp(const float* acc, const __half* c, const __half* a, __half* t_lin, __half* t,
                                        int kind, float s, Rows r) {
    GRID_STRIDE(i, row_elems(r)) {
        i64 e = row_elem(i, r);
        __half h = __float2half_rn(acc[e] + __half2float(c[i % r.width]));
        t_lin[e] = h;
        float v, d1, d2;
        act_eval(kind, s, ld(a, e), &v, &d1, &d2);
        st(t, e, d1 * __half2float(h));
    }
}
