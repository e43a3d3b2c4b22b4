// The elementwise halves of a linear layer's passes (the products go through
// cuBLAS).  CPU twins: nn::layer::Linear::forward / jvp (the bias broadcast)
// and nn::layer::column_sums (the bias gradient, one sum per chunk).

// y = half(acc + b) on the selected rows; b (width values) may be null.
extern "C" __global__ void bias_cast(const float* acc, const __half* b, __half* y,
                                     Rows r) {
    GRID_STRIDE(i, row_elems(r)) {
        i64 e = row_elem(i, r);
        float v = acc[e];
        if (b) v += ld(b, i % r.width);
        st(y, e, v);
    }
}

// out[c * out_stride + j] = scale * sum over the selected rows r of chunk c of dy[r, j]
// (summed in row order in fp32, so the result does not depend on the launch).
// Grid: (ceil(width / blockDim.x), chunks).
extern "C" __global__ void colsum_chunks(const __half* dy, float* out, i64 out_stride, float scale, Rows r) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    int c = blockIdx.y;
    if (j >= r.width) return;
    const __half* p = dy + ((i64)c * r.block + r.start) * r.width + j;
    float s = 0.0f;
    for (int k = 0; k < r.count; k++) s += __half2float(p[(i64)k * r.width]);
    out[c * out_stride + j] = s * scale;
}
