// The counter-based generator: Philox4x32-10 keyed by the seed and addressed
// by (block, sample index, step, purpose; the step read from device memory so
// that a captured CUDA graph draws fresh numbers every replay), Box-Muller with the polynomial ln
// and sincos.  CPU twin: rng::{philox, box_muller, Stream::normals} and
// data::Mixture::sample.  Compiled without FMA contraction and with IEEE
// division and sqrt, so each float equals the CPU's bit for bit.

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

__device__ __forceinline__ uint4 philox(uint2 key, uint4 c) {
    for (int r = 0; r < 10; r++) {
        unsigned int hi0 = __umulhi(PHILOX_M0, c.x), lo0 = PHILOX_M0 * c.x;
        unsigned int hi1 = __umulhi(PHILOX_M1, c.z), lo1 = PHILOX_M1 * c.z;
        c = make_uint4(hi1 ^ c.y ^ key.x, lo1, hi0 ^ c.w ^ key.y, lo0);
        key.x += PHILOX_W0;
        key.y += PHILOX_W1;
    }
    return c;
}

__device__ __forceinline__ float uniform_open0(unsigned int w) { return (float)((w >> 8) + 1u) * (1.0f / 16777216.0f); }
__device__ __forceinline__ float uniform01(unsigned int w) { return (float)(w >> 8) * (1.0f / 16777216.0f); }

__device__ __forceinline__ float ln_unit(float x) {
    unsigned int bits = __float_as_uint(x);
    int e = (int)((bits >> 23) & 0xffu) - 127;
    float m = __uint_as_float((bits & 0x007fffffu) | 0x3f800000u);
    bool big = m > 1.41421356237309504880f;
    m = big ? m * 0.5f : m;
    e += big ? 1 : 0;
    float s = (m - 1.0f) / (m + 1.0f);
    float s2 = s * s;
    float p = 1.0f + s2 * (1.0f / 3.0f + s2 * (1.0f / 5.0f + s2 * (1.0f / 7.0f + s2 * (1.0f / 9.0f))));
    return (float)e * 0.693147180559945309417f + 2.0f * s * p;
}

__device__ __forceinline__ void sincos_turns(float u, float* sn, float* cs) {
    float q = floorf(u * 4.0f + 0.5f);
    float r = (u * 4.0f - q) * 1.57079632679489661923f;
    float r2 = r * r;
    float s = r * (1.0f + r2 * (-1.0f / 6.0f + r2 * (1.0f / 120.0f + r2 * (-1.0f / 5040.0f + r2 * (1.0f / 362880.0f)))));
    float c = 1.0f + r2 * (-0.5f + r2 * (1.0f / 24.0f + r2 * (-1.0f / 720.0f + r2 * (1.0f / 40320.0f))));
    int k = ((int)q) & 3;
    bool odd = (k & 1) != 0;
    float s1 = odd ? c : s, c1 = odd ? s : c;
    *sn = (k & 2) ? -s1 : s1;
    *cs = ((k + 1) & 2) ? -c1 : c1;
}

__device__ __forceinline__ float2 box_muller(unsigned int a, unsigned int b) {
    float r = sqrtf(-2.0f * ln_unit(uniform_open0(a)));
    float s, c;
    sincos_turns(uniform01(b), &s, &c);
    return make_float2(r * c, r * s);
}

__device__ __forceinline__ void put(float* p, i64 i, float v) { p[i] = v; }
__device__ __forceinline__ void put(__half* p, i64 i, float v) { p[i] = __float2half_rn(v); }

// N(0, 1) latents: sample `first + s` (s counts the selected rows, chunk by
// chunk) gets `width` numbers; Philox block b gives numbers 4b..4b+3.
// The counter's fixed words for (purpose, step), as rng::Stream::new builds them.
__device__ __forceinline__ unsigned int step_lo(const unsigned long long* step) { return (unsigned int)*step; }
__device__ __forceinline__ unsigned int step_hi(unsigned int purpose, const unsigned long long* step) {
    return (purpose << 24) | ((unsigned int)(*step >> 32) & 0x00FFFFFFu);
}

template <typename T>
__device__ void normals(T* out, uint2 key, unsigned int step_lo, unsigned int hi, unsigned int first, Rows r) {
    int width = r.width, count = r.count, block = r.block, start = r.start;
    int blocks4 = (width + 3) / 4;
    GRID_STRIDE(t, (i64)r.chunks * count * blocks4) {
        i64 s = t / blocks4;
        int b = (int)(t - s * blocks4);
        uint4 w = philox(key, make_uint4((unsigned int)b, first + (unsigned int)s, step_lo, hi));
        float2 n01 = box_muller(w.x, w.y);
        float2 n23 = box_muller(w.z, w.w);
        float v[4] = {n01.x, n01.y, n23.x, n23.y};
        i64 c = s / count;
        i64 row = c * block + start + (s - c * count);
        for (int k = 0; k < 4 && 4 * b + k < width; k++) put(out, row * width + 4 * b + k, v[k]);
    }
}

extern "C" __global__ void normals_f16(__half* out, unsigned int key0, unsigned int key1, unsigned int purpose,
                                       const unsigned long long* step, unsigned int first, Rows r) {
    normals(out, make_uint2(key0, key1), step_lo(step), step_hi(purpose, step), first, r);
}

extern "C" __global__ void normals_f32(float* out, unsigned int key0, unsigned int key1, unsigned int purpose,
                                       const unsigned long long* step, unsigned int first, Rows r) {
    normals(out, make_uint2(key0, key1), step_lo(step), step_hi(purpose, step), first, r);
}

// Real samples from a mixture of isotropic 2-D Gaussians (centres: ncentres
// (x, y) pairs): a mode chosen uniformly by word 0, noise by Box-Muller on
// words 1 and 2, in double as on the CPU.
template <typename T>
__device__ void mixture(T* out, uint2 key, unsigned int step_lo, unsigned int hi, unsigned int first,
                        const double* centres, int ncentres, double sd, Rows r) {
    int count = r.count, block = r.block, start = r.start;
    GRID_STRIDE(s, (i64)r.chunks * count) {
        uint4 w = philox(key, make_uint4(0u, first + (unsigned int)s, step_lo, hi));
        int k = (int)(((unsigned long long)w.x * (unsigned long long)ncentres) >> 32);
        float2 n = box_muller(w.y, w.z);
        i64 c = s / count;
        i64 row = c * block + start + (s - c * count);
        put(out, row * 2, (float)(centres[2 * k] + sd * (double)n.x));
        put(out, row * 2 + 1, (float)(centres[2 * k + 1] + sd * (double)n.y));
    }
}

extern "C" __global__ void mixture_f16(__half* out, unsigned int key0, unsigned int key1, unsigned int purpose,
                                       const unsigned long long* step, unsigned int first, const double* centres,
                                       int ncentres, double sd, Rows r) {
    mixture(out, make_uint2(key0, key1), step_lo(step), step_hi(purpose, step), first, centres, ncentres, sd, r);
}

extern "C" __global__ void mixture_f32(float* out, unsigned int key0, unsigned int key1, unsigned int purpose,
                                       const unsigned long long* step, unsigned int first, const double* centres,
                                       int ncentres, double sd, Rows r) {
    mixture(out, make_uint2(key0, key1), step_lo(step), step_hi(purpose, step), first, centres, ncentres, sd, r);
}
