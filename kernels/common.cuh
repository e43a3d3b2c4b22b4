// Shared by every kernel family: prepended to each kernels/*.cu before NVRTC
// compiles it (see src/backend/cuda/kernels.rs).
//
// Row layout.  Every activation-like buffer of the CUDA backend holds, for
// each of `chunks` chunks, a block of `block` rows of `width` values; a pass
// works on rows [start, start + count) of every block (the real samples, the
// fake ones, or all of them).  `Rows` describes such a selection (the Rust
// side: backend::cuda::device::RowsArg) and `row_elem` maps the i-th element
// of it to its offset.
#include <cuda_fp16.h>

typedef long long i64;

struct Rows {
    int chunks, block, start, count, width;
};

// Elements in the selection.
__device__ __forceinline__ i64 row_elems(Rows r) { return (i64)r.chunks * r.count * r.width; }

__device__ __forceinline__ i64 row_elem(i64 i, Rows r) {
    i64 per = (i64)r.count * r.width;
    i64 c = i / per;
    i64 e = i - c * per;
    return (c * r.block + r.start) * (i64)r.width + e;
}

#define GRID_STRIDE(i, n) for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)blockDim.x * gridDim.x)

__device__ __forceinline__ float ld(const __half* p, i64 i) { return __half2float(p[i]); }
__device__ __forceinline__ void st(__half* p, i64 i, float v) { p[i] = __float2half_rn(v); }
