// Shared by every kernel family: prepended to each kernels/*.cu before NVRTC
// compiles it (see src/backend/cuda/kernels.rs).
//
// Row layout.  Every activation-like buffer of the CUDA backend holds, for
// each of `chunks` chunks, a block of `block` rows of `width` values; a pass
// works on rows [start, start + count) of every block (the real samples, the
// fake ones, or all of them).  `row_elem` maps the i-th element of that
// selection to its offset.
#include <cuda_fp16.h>

typedef long long i64;

__device__ __forceinline__ i64 row_elem(i64 i, int block, int start, int count, int width) {
    i64 per = (i64)count * width;
    i64 c = i / per;
    i64 r = i - c * per;
    return (c * block + start) * (i64)width + r;
}

#define GRID_STRIDE(i, n) for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)blockDim.x * gridDim.x)

__device__ __forceinline__ float ld(const __half* p, i64 i) { return __half2float(p[i]); }
__device__ __forceinline__ void st(__half* p, i64 i, float v) { p[i] = __float2half_rn(v); }
