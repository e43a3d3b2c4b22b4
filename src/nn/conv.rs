//! 2-D convolutions on the CPU, generic over `Float` like the rest of `nn`.
//!
//! Buffers are row-major `rows × (C·H·W)`, each sample in NCHW order (C
//! planes of H×W), as in PyTorch.  A `ConvGeom` describes one ordinary
//! convolution from `ci×h×w` to `co×oh×ow` and carries its three operators:
//!
//! * `forward`:         y = conv(x, w)
//! * `backward_data`:   dx = convᵀ(dy, w), the adjoint in x
//! * `backward_filter`: dw = the adjoint in w of (x, dy)
//!
//! each one `matmul` per group of samples, with im2row (im2col with a row per
//! output position, `[n·oh·ow × ci·k·k]`: every kernel row is then one run of
//! k contiguous input values whatever the stride) and its adjoint row2im.
//! `ConvGeom::samples_per_gemm` chooses the group: one sample when the inner
//! dimension ci·k·k is small (then each GEMM reads or writes the NCHW sample
//! directly), else several, side by side in one GEMM, with one cheap pass that
//! moves the GEMM's other side to or from NCHW
//! (`cargo run --release --example conv_bench` measures the choices).
//!
//! `Conv` is the layer (PyTorch `Conv2d`, or with `transposed`
//! `ConvTranspose2d`), with the four passes of `layer.rs` (forward, backward,
//! jvp, jvp_backward) and a trailing caller-provided scratch (at least
//! `scratch_len(rows)` values), so that nothing is allocated per call except
//! what the `gemm` crate allocates internally.  A transposed convolution is
//! the adjoint of an ordinary one: its forward is that convolution's
//! `backward_data`, its dx that convolution's `forward`, and its dW the
//! convolution's `backward_filter` with the roles of x and dy swapped.

use super::float::{matmul, Float, Mat};

/// The rows (output positions) a grouped GEMM should have at least; see
/// `ConvGeom::samples_per_gemm` (measured with `examples/conv_bench.rs`).
const GEMM_ROWS: usize = 384;

/// The inner dimension ci·k·k from which a convolution is GEMM-bound: below
/// it, the passes that move a GEMM's side to or from NCHW cost as much as a
/// good part of the GEMM itself.
const LARGE_KDIM: usize = 256;

/// A 2-D convolution from `ci×h×w` to `co×oh×ow`: square kernel `k`, stride
/// `s`, zero padding `p` on every side, `oh = (h + 2p − k)/s + 1` (likewise
/// `ow`), no dilation and no groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    /// Input channels.
    pub ci: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub co: usize,
    /// Kernel size (k×k).
    pub k: usize,
    /// Stride.
    pub s: usize,
    /// Zero padding on each side.
    pub p: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl ConvGeom {
    /// The geometry of `Conv2d(ci, co, k, stride = s, padding = p)` on `ci×h×w`
    /// inputs; an error when a size, `k` or `s` is zero or the padded input is
    /// smaller than the kernel.
    pub fn new(ci: usize, h: usize, w: usize, co: usize, k: usize, s: usize, p: usize) -> Result<ConvGeom, String> {
        if ci == 0 || co == 0 {
            return Err(format!("a convolution needs at least one channel in and out (got {ci} in, {co} out)"));
        }
        if h == 0 || w == 0 {
            return Err(format!("convolution input {ci}×{h}×{w} is empty"));
        }
        if k == 0 {
            return Err("convolution kernel size must be positive, got 0".into());
        }
        if s == 0 {
            return Err("convolution stride must be positive, got 0".into());
        }
        if h + 2 * p < k || w + 2 * p < k {
            return Err(format!("kernel {k} does not fit a {h}×{w} input with padding {p} (output would be empty)"));
        }
        let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        Ok(ConvGeom { ci, h, w, co, k, s, p, oh, ow })
    }

    /// Values per input sample: ci·h·w.
    pub fn in_len(&self) -> usize {
        self.ci * self.h * self.w
    }

    /// Values per output sample: co·oh·ow.
    pub fn out_len(&self) -> usize {
        self.co * self.oh * self.ow
    }

    /// Values in the weight `[co, ci, k, k]`.
    pub fn weight_len(&self) -> usize {
        self.co * self.ci * self.k * self.k
    }

    /// The GEMMs' inner dimension for `forward`: ci·k·k.
    fn kdim(&self) -> usize {
        self.ci * self.k * self.k
    }

    /// Output positions per channel: oh·ow.
    fn plane(&self) -> usize {
        self.oh * self.ow
    }

    /// Floating-point operations of `forward` on `rows` samples (2 per
    /// multiply-add; `backward_data` and `backward_filter` do as many).
    pub fn flops_forward(&self, rows: usize) -> u64 {
        2 * (rows * self.co * self.kdim() * self.plane()) as u64
    }

    /// Samples per GEMM for a chunk of `rows`.  With a small inner dimension
    /// (ci·k·k < 256) one: each sample's GEMM then reads and writes the NCHW
    /// sample directly, with no pass to gather or scatter a group, and those
    /// passes would cost more than a larger GEMM saves.  Otherwise enough
    /// samples for `GEMM_ROWS` output positions (8 of D conv2's 7×7): one
    /// sample's 49 rows fit the GEMM's 16-row tiles badly, and much larger
    /// groups outgrow the L2 cache (measured: `examples/conv_bench.rs --sweep`).
    pub fn samples_per_gemm(&self, rows: usize) -> usize {
        if self.kdim() < LARGE_KDIM {
            1
        } else {
            GEMM_ROWS.div_ceil(self.plane()).clamp(1, rows.max(1))
        }
    }

    /// The scratch (in values) the three operators and the layers need for
    /// chunks of up to `rows` samples.
    pub fn scratch_len(&self, rows: usize) -> usize {
        self.group_scratch_len(self.samples_per_gemm(rows))
    }

    /// The scratch for groups of `n` samples: cols `[n·plane × kdim]`, the
    /// GEMM's other side `[n·plane × co]` and (`copies_input`) the copied planes.
    fn group_scratch_len(&self, n: usize) -> usize {
        n * (self.plane() * (self.kdim() + self.co)
            + if self.copies_input() { self.ci * self.plane_stride() } else { 0 })
    }

    /// Asserts the lengths of a grouped operator's buffers.
    fn check(&self, group: usize, rows: usize, x: usize, w: usize, y: usize, scratch: usize) {
        let sc = self.group_scratch_len(group.min(rows));
        assert!(
            x >= rows * self.in_len(),
            "conv: input holds {x} values, {rows} samples need {}",
            rows * self.in_len()
        );
        assert!(w >= self.weight_len(), "conv: weight holds {w} values, needs {}", self.weight_len());
        assert!(
            y >= rows * self.out_len(),
            "conv: output holds {y} values, {rows} samples need {}",
            rows * self.out_len()
        );
        assert!(scratch >= sc, "conv: scratch holds {scratch} values, {rows} samples need {sc}");
    }

    /// y (+)= conv(x, w) for `rows` samples: x `rows × in_len`, w `[co, ci, k, k]`
    /// (PyTorch's Conv2d weight), y `rows × out_len`; `accumulate` adds to y.
    pub fn forward<T: Float>(&self, rows: usize, x: &[T], w: &[T], y: &mut [T], accumulate: bool, scratch: &mut [T]) {
        self.forward_grouped(self.samples_per_gemm(rows), rows, x, w, y, accumulate, scratch)
    }

    /// dx (+)= convᵀ(dy, w), the adjoint of `forward` in x: dy `rows × out_len`,
    /// dx `rows × in_len`; `accumulate` adds to dx.
    pub fn backward_data<T: Float>(
        &self,
        rows: usize,
        dy: &[T],
        w: &[T],
        dx: &mut [T],
        accumulate: bool,
        scratch: &mut [T],
    ) {
        self.backward_data_grouped(self.samples_per_gemm(rows), rows, dy, w, dx, accumulate, scratch)
    }

    /// dw (+)= the adjoint of `forward` in w, summed over the `rows` samples of
    /// x (`rows × in_len`) and dy (`rows × out_len`); `accumulate` adds to dw.
    pub fn backward_filter<T: Float>(
        &self,
        rows: usize,
        x: &[T],
        dy: &[T],
        dw: &mut [T],
        accumulate: bool,
        scratch: &mut [T],
    ) {
        self.backward_filter_grouped(self.samples_per_gemm(rows), rows, x, dy, dw, accumulate, scratch)
    }

    /// y[r, c, ·] += b[c] for every sample r and output channel c.
    pub fn bias_forward<T: Float>(&self, rows: usize, b: &[T], y: &mut [T]) {
        add_channel_bias(rows, self.co, self.plane(), b, y)
    }

    /// db[c] = Σ over samples and positions of dy[r, c, ·] (written, not accumulated).
    pub fn bias_backward<T: Float>(&self, rows: usize, dy: &[T], db: &mut [T]) {
        channel_sums(rows, self.co, self.plane(), dy, db)
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_grouped<T: Float>(
        &self,
        group: usize,
        rows: usize,
        x: &[T],
        w: &[T],
        y: &mut [T],
        accumulate: bool,
        scratch: &mut [T],
    ) {
        self.check(group, rows, x.len(), w.len(), y.len(), scratch.len());
        let (kd, pl, il, ol, co) = (self.kdim(), self.plane(), self.in_len(), self.out_len(), self.co);
        for r0 in (0..rows).step_by(group.max(1)) {
            let n = group.min(rows - r0);
            let (cols, side, pad) = self.split_scratch(n, scratch);
            self.im2row(n, &x[r0 * il..(r0 + n) * il], pad, cols);
            let y = &mut y[r0 * ol..(r0 + n) * ol];
            if self.positions_major_forward() {
                // [n·plane × co] = cols · Wᵀ, each sample's [plane × co] then transposed into y
                matmul(Mat::n(cols, n * pl, kd), Mat::t(w, kd, co), side, false);
                self.positions_to_nchw(n, side, y, accumulate);
            } else if n == 1 {
                matmul(Mat::n(w, co, kd), Mat::t(cols, kd, pl), y, accumulate);
            } else {
                // [co × n·plane] = W · colsᵀ, then each channel's planes moved to their samples
                matmul(Mat::n(w, co, kd), Mat::t(cols, kd, n * pl), side, false);
                self.channel_major_to_nchw(n, side, y, accumulate);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn backward_data_grouped<T: Float>(
        &self,
        group: usize,
        rows: usize,
        dy: &[T],
        w: &[T],
        dx: &mut [T],
        accumulate: bool,
        scratch: &mut [T],
    ) {
        self.check(group, rows, dx.len(), w.len(), dy.len(), scratch.len());
        let (kd, pl, il, ol) = (self.kdim(), self.plane(), self.in_len(), self.out_len());
        for r0 in (0..rows).step_by(group.max(1)) {
            let n = group.min(rows - r0);
            let (cols, side, pad) = self.split_scratch(n, scratch);
            // cols [n·plane × kdim] = dyᵀ · W with dy channel-major [co × n·plane]
            let dyc = self.channel_major(n, &dy[r0 * ol..(r0 + n) * ol], side);
            matmul(Mat::t(dyc, n * pl, self.co), Mat::n(w, self.co, kd), cols, false);
            self.row2im(n, cols, pad, &mut dx[r0 * il..(r0 + n) * il], accumulate);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn backward_filter_grouped<T: Float>(
        &self,
        group: usize,
        rows: usize,
        x: &[T],
        dy: &[T],
        dw: &mut [T],
        accumulate: bool,
        scratch: &mut [T],
    ) {
        self.check(group, rows, x.len(), dw.len(), dy.len(), scratch.len());
        let (kd, pl, il, ol) = (self.kdim(), self.plane(), self.in_len(), self.out_len());
        if rows == 0 && !accumulate {
            dw[..self.weight_len()].fill(T::ZERO);
        }
        for (i, r0) in (0..rows).step_by(group.max(1)).enumerate() {
            let n = group.min(rows - r0);
            let (cols, side, pad) = self.split_scratch(n, scratch);
            self.im2row(n, &x[r0 * il..(r0 + n) * il], pad, cols);
            // dW [co × kdim] (+)= dy [co × n·plane] (channel-major) · cols
            let dyc = self.channel_major(n, &dy[r0 * ol..(r0 + n) * ol], side);
            matmul(Mat::n(dyc, self.co, n * pl), Mat::n(cols, n * pl, kd), dw, accumulate || i > 0);
        }
    }

    /// Whether `forward`'s GEMM computes a row per output position (then a
    /// transposition moves it to NCHW) rather than a row per channel: faster
    /// GEMMs, but the transposition costs as much as a GEMM with an inner
    /// dimension of a few dozen, so only for large `kdim`.
    fn positions_major_forward(&self) -> bool {
        self.kdim() >= LARGE_KDIM
    }

    /// The padded input planes' sizes: (h + 2p, w + 2p).
    fn padded(&self) -> (usize, usize) {
        (self.h + 2 * self.p, self.w + 2 * self.p)
    }

    /// Whether `im2row` reads (and `row2im` writes) copies of the input planes
    /// rather than x (dx) itself: with padding, zero-padded copies, so that
    /// nothing checks for the border; without, when x's planes are a multiple
    /// of 32 values apart (see `plane_stride`).
    fn copies_input(&self) -> bool {
        self.p > 0 || (self.h * self.w) % 32 == 0
    }

    /// The distance between the planes that `im2row` reads and `row2im`
    /// writes: x's own h·w, or for copies (h + 2p)(w + 2p) rounded up to an
    /// odd number of 16 values (64-byte lines in f32), so that the k rows of
    /// all channels that one output position reads spread over the L1 cache's
    /// sets (D conv2's 16×16 padded planes 1 KiB apart fell into few sets,
    /// and halved im2row's speed).
    fn plane_stride(&self) -> usize {
        let (hp, wp) = self.padded();
        if !self.copies_input() {
            return hp * wp;
        }
        16 * ((hp * wp).div_ceil(16) | 1)
    }

    /// Scratch for a group of `n`: cols `[n·plane × kdim]`, the GEMM's other
    /// side `[n·plane × co]`, and (`copies_input`) the copied input planes.
    fn split_scratch<'s, T>(&self, n: usize, scratch: &'s mut [T]) -> (&'s mut [T], &'s mut [T], &'s mut [T]) {
        let np = n * self.plane();
        let pad_len = if self.copies_input() { n * self.ci * self.plane_stride() } else { 0 };
        let (cols, rest) = scratch.split_at_mut(np * self.kdim());
        let (side, rest) = rest.split_at_mut(np * self.co);
        (cols, side, &mut rest[..pad_len])
    }

    /// cols `[n·oh·ow × ci·k·k]` of `n` samples x: row (sample, oy, ox), column
    /// (c, ki, kj) holds x[sample, c, oy·s + ki − p, ox·s + kj − p], or 0 in the
    /// padding.  Rows rather than im2col's columns, so that every kernel row is
    /// one run of k contiguous values of x whatever the stride.  When
    /// `copies_input`, x is first copied into zero-padded planes in `pad`.
    fn im2row<T: Float>(&self, n: usize, x: &[T], pad: &mut [T], cols: &mut [T]) {
        let x = &x[..n * self.in_len()];
        let src: &[T] = if self.copies_input() {
            self.pad(n, x, pad);
            pad
        } else {
            x
        };
        match self.k {
            1 => self.im2row_k::<T, 1>(n, src, cols),
            2 => self.im2row_k::<T, 2>(n, src, cols),
            3 => self.im2row_k::<T, 3>(n, src, cols),
            4 => self.im2row_k::<T, 4>(n, src, cols),
            5 => self.im2row_k::<T, 5>(n, src, cols),
            _ => self.im2row_k::<T, 0>(n, src, cols),
        }
    }

    /// `im2row` from padded planes (`padded()`), for kernel size `K` known at
    /// compile time (0: `self.k`).
    fn im2row_k<T: Float, const K: usize>(&self, n: usize, src: &[T], cols: &mut [T]) {
        let ConvGeom { ci, s, oh, ow, .. } = *self;
        let k = if K > 0 { K } else { self.k };
        let wp = self.padded().1;
        let (kk, hw) = (k * k, self.plane_stride());
        let mut rows = cols[..n * self.plane() * self.kdim()].chunks_exact_mut(self.kdim());
        for xs in src[..n * ci * hw].chunks_exact(ci * hw) {
            for oy in 0..oh {
                for ox in 0..ow {
                    let at = oy * s * wp + ox * s;
                    let row = rows.next().unwrap();
                    for (d, plane) in row.chunks_exact_mut(kk).zip(xs.chunks_exact(hw)) {
                        for (ki, dr) in d.chunks_exact_mut(k).enumerate() {
                            dr.copy_from_slice(&plane[at + ki * wp..at + ki * wp + k]);
                        }
                    }
                }
            }
        }
    }

    /// Copies `n` samples x into zero-padded planes of (h + 2p) × (w + 2p),
    /// `plane_stride` apart.
    fn pad<T: Float>(&self, n: usize, x: &[T], pad: &mut [T]) {
        let wp = self.padded().1;
        let (h, w, p) = (self.h, self.w, self.p);
        let pad = &mut pad[..n * self.ci * self.plane_stride()];
        pad.fill(T::ZERO);
        for (dst, plane) in pad.chunks_exact_mut(self.plane_stride()).zip(x.chunks_exact(h * w)) {
            for (d, r) in dst[p * wp..(p + h) * wp].chunks_exact_mut(wp).zip(plane.chunks_exact(w)) {
                // a loop rather than copy_from_slice: rows are too short for a call to memcpy
                for (d, &v) in d[p..p + w].iter_mut().zip(r) {
                    *d = v;
                }
            }
        }
    }

    /// The adjoint of `im2row`: dx (+)= the sum, at each input position, of the
    /// cols entries that `im2row` would have read from there (through padded
    /// planes in `pad` when `copies_input`).
    fn row2im<T: Float>(&self, n: usize, cols: &[T], pad: &mut [T], dx: &mut [T], accumulate: bool) {
        let dx = &mut dx[..n * self.in_len()];
        let dst: &mut [T] = if self.copies_input() {
            pad.fill(T::ZERO);
            &mut *pad
        } else {
            if !accumulate {
                dx.fill(T::ZERO);
            }
            &mut *dx
        };
        match self.k {
            1 => self.row2im_k::<T, 1>(n, cols, dst),
            2 => self.row2im_k::<T, 2>(n, cols, dst),
            3 => self.row2im_k::<T, 3>(n, cols, dst),
            4 => self.row2im_k::<T, 4>(n, cols, dst),
            5 => self.row2im_k::<T, 5>(n, cols, dst),
            _ => self.row2im_k::<T, 0>(n, cols, dst),
        }
        if self.copies_input() {
            self.unpad(n, pad, dx, accumulate);
        }
    }

    /// `row2im` into padded planes (`padded()`), for kernel size `K` known at
    /// compile time (0: `self.k`).
    fn row2im_k<T: Float, const K: usize>(&self, n: usize, cols: &[T], dst: &mut [T]) {
        let ConvGeom { ci, s, oh, ow, .. } = *self;
        let k = if K > 0 { K } else { self.k };
        let wp = self.padded().1;
        let (kk, hw) = (k * k, self.plane_stride());
        let mut rows = cols[..n * self.plane() * self.kdim()].chunks_exact(self.kdim());
        for xs in dst[..n * ci * hw].chunks_exact_mut(ci * hw) {
            for oy in 0..oh {
                for ox in 0..ow {
                    let at = oy * s * wp + ox * s;
                    let row = rows.next().unwrap();
                    for (d, plane) in row.chunks_exact(kk).zip(xs.chunks_exact_mut(hw)) {
                        for (ki, dr) in d.chunks_exact(k).enumerate() {
                            let o = &mut plane[at + ki * wp..at + ki * wp + k];
                            if K > 0 {
                                // through fixed-size arrays, which the compiler vectorises
                                let o: &mut [T; K] = o.try_into().unwrap();
                                let dr: &[T; K] = dr.try_into().unwrap();
                                *o = std::array::from_fn(|j| o[j] + dr[j]);
                            } else {
                                for (o, &v) in o.iter_mut().zip(dr) {
                                    *o += v;
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// dx (+)= the interiors of `n` samples' padded planes.
    fn unpad<T: Float>(&self, n: usize, pad: &[T], dx: &mut [T], accumulate: bool) {
        let wp = self.padded().1;
        let (h, w, p) = (self.h, self.w, self.p);
        let ps = self.plane_stride();
        for (src, plane) in pad[..n * self.ci * ps].chunks_exact(ps).zip(dx.chunks_exact_mut(h * w)) {
            for (s, d) in src[p * wp..(p + h) * wp].chunks_exact(wp).zip(plane.chunks_exact_mut(w)) {
                if accumulate {
                    for (d, &v) in d.iter_mut().zip(&s[p..p + w]) {
                        *d += v;
                    }
                } else {
                    for (d, &v) in d.iter_mut().zip(&s[p..p + w]) {
                        *d = v;
                    }
                }
            }
        }
    }

    /// `[n·plane × co]` (a row per output position) to `n` NCHW output samples,
    /// each sample's `[plane × co]` transposed; adds when `accumulate`.
    fn positions_to_nchw<T: Float>(&self, n: usize, t: &[T], y: &mut [T], accumulate: bool) {
        const TILE: usize = 16;
        let (pl, co) = (self.plane(), self.co);
        for (ts, ys) in t[..n * pl * co].chunks_exact(pl * co).zip(y.chunks_exact_mut(co * pl)) {
            for q0 in (0..pl).step_by(TILE) {
                let q1 = (q0 + TILE).min(pl);
                for c in 0..co {
                    let yc = &mut ys[c * pl + q0..c * pl + q1];
                    let src = ts[q0 * co + c..].iter().step_by(co);
                    if accumulate {
                        for (o, &v) in yc.iter_mut().zip(src) {
                            *o += v;
                        }
                    } else {
                        for (o, &v) in yc.iter_mut().zip(src) {
                            *o = v;
                        }
                    }
                }
            }
        }
    }

    /// `[co × n·plane]` (channel-major) to `n` NCHW output samples; adds when `accumulate`.
    fn channel_major_to_nchw<T: Float>(&self, n: usize, chw: &[T], y: &mut [T], accumulate: bool) {
        let (pl, np) = (self.plane(), n * self.plane());
        for (smp, ys) in y[..n * self.out_len()].chunks_exact_mut(self.out_len()).enumerate() {
            for (c, yc) in ys.chunks_exact_mut(pl).enumerate() {
                let src = &chw[c * np + smp * pl..][..pl];
                if accumulate {
                    for (d, &v) in yc.iter_mut().zip(src) {
                        *d += v;
                    }
                } else {
                    yc.copy_from_slice(src);
                }
            }
        }
    }

    /// `n` NCHW output samples as `[co × n·plane]` (channel-major): a single
    /// sample as it is, several copied into `chw`.
    fn channel_major<'s, T: Float>(&self, n: usize, y: &'s [T], chw: &'s mut [T]) -> &'s [T] {
        if n == 1 {
            return &y[..self.out_len()];
        }
        let (pl, np) = (self.plane(), n * self.plane());
        for (smp, ys) in y[..n * self.out_len()].chunks_exact(self.out_len()).enumerate() {
            for (c, yc) in ys.chunks_exact(pl).enumerate() {
                chw[c * np + smp * pl..][..pl].copy_from_slice(yc);
            }
        }
        &chw[..self.co * np]
    }
}

/// The geometry for PyTorch's `ConvTranspose2d(in_c, out_c, k, stride = s,
/// padding = p)` (output_padding 0) on `in_c×h×w` inputs: its output is
/// `out_c×H×W` with H = (h − 1)s − 2p + k, and the result is the ordinary
/// convolution from that output `out_c×H×W` back to the input `in_c×h×w`.
pub fn convt_geom(
    in_c: usize,
    h: usize,
    w: usize,
    out_c: usize,
    k: usize,
    s: usize,
    p: usize,
) -> Result<ConvGeom, String> {
    if h == 0 || w == 0 {
        return Err(format!("transposed convolution input {in_c}×{h}×{w} is empty"));
    }
    if k == 0 || s == 0 {
        return Err(format!("transposed convolution needs a positive kernel and stride (got kernel {k}, stride {s})"));
    }
    let out = |n: usize| ((n - 1) * s + k).checked_sub(2 * p).filter(|&v| v > 0);
    let (Some(oh), Some(ow)) = (out(h), out(w)) else {
        return Err(format!(
            "transposed convolution with kernel {k}, stride {s}, padding {p} of a {h}×{w} input has an empty output"
        ));
    };
    let g = ConvGeom::new(out_c, oh, ow, in_c, k, s, p)?;
    if (g.oh, g.ow) != (h, w) {
        return Err(format!(
            "transposed convolution {h}×{w} -> {oh}×{ow} does not map back to {h}×{w} (got {}×{})",
            g.oh, g.ow
        ));
    }
    Ok(g)
}

/// y[r, c, ·] += b[c]: `rows` samples of `channels` planes of `plane` values.
pub fn add_channel_bias<T: Float>(rows: usize, channels: usize, plane: usize, b: &[T], y: &mut [T]) {
    for ys in y[..rows * channels * plane].chunks_exact_mut(channels * plane) {
        for (yc, &bc) in ys.chunks_exact_mut(plane).zip(&b[..channels]) {
            for v in yc {
                *v += bc;
            }
        }
    }
}

/// y[r, c, ·] = b[c] (the bias written, for a pass that then accumulates).
fn set_channel_bias<T: Float>(rows: usize, channels: usize, plane: usize, b: &[T], y: &mut [T]) {
    for ys in y[..rows * channels * plane].chunks_exact_mut(channels * plane) {
        for (yc, &bc) in ys.chunks_exact_mut(plane).zip(&b[..channels]) {
            yc.fill(bc);
        }
    }
}

/// db[c] = Σ_r Σ_i dy[r, c, i] (written): `rows` samples of `channels` planes of `plane` values.
pub fn channel_sums<T: Float>(rows: usize, channels: usize, plane: usize, dy: &[T], db: &mut [T]) {
    let db = &mut db[..channels];
    db.fill(T::ZERO);
    for ys in dy[..rows * channels * plane].chunks_exact(channels * plane) {
        for (yc, d) in ys.chunks_exact(plane).zip(db.iter_mut()) {
            let mut acc = T::ZERO;
            for &v in yc {
                acc += v;
            }
            *d += acc;
        }
    }
}

/// A convolution layer's view of its parameters, PyTorch's
/// `Conv2d(g.ci, g.co, g.k, g.s, g.p)` (weight `[co, ci, k, k]`, bias `[co]`),
/// or with `transposed` its `ConvTranspose2d(g.co, g.ci, g.k, g.s, g.p)`
/// (output_padding 0; weight `[in, out, k, k]` = `[co, ci, k, k]` of `g`,
/// bias `[out]` = `[ci]`), where `g` (from `convt_geom`) is the ordinary
/// convolution from this layer's output to its input.
///
/// Either way the layer is a linear map A(x, W) plus a bias: A = conv_g for
/// Conv and A = convᵀ_g for ConvT, with Aᵀ the other one and the weight's
/// adjoint `backward_filter_g` (its arguments swapped for ConvT).  For
/// y = A(x, W) + b and direction (V, c): ẏ = A(ẋ, W) + A(x, V) + c, so
/// x̄ = Aᵀ(ȳ, W) + Aᵀ(ẏ̄, V) and ẋ̄ = Aᵀ(ẏ̄, W): the four passes below are
/// written once for both.
#[derive(Clone, Copy)]
pub struct Conv<'a, T> {
    /// The weight (`[co, ci, k, k]` of `g`).
    pub w: &'a [T],
    /// The bias, one value per output channel of the layer.
    pub b: &'a [T],
    /// The ordinary convolution (for ConvT: from the layer's output to its input).
    pub g: ConvGeom,
    /// A transposed convolution (PyTorch `ConvTranspose2d`).
    pub transposed: bool,
}

impl<'a, T: Float> Conv<'a, T> {
    /// Values per input sample.
    pub fn in_len(&self) -> usize {
        if self.transposed {
            self.g.out_len()
        } else {
            self.g.in_len()
        }
    }

    /// Values per output sample.
    pub fn out_len(&self) -> usize {
        if self.transposed {
            self.g.in_len()
        } else {
            self.g.out_len()
        }
    }

    /// The scratch every pass needs for chunks of up to `rows` samples.
    pub fn scratch_len(&self, rows: usize) -> usize {
        self.g.scratch_len(rows)
    }

    /// The output's (channels, values per channel), where the bias goes.
    fn bias_planes(&self) -> (usize, usize) {
        if self.transposed {
            (self.g.ci, self.g.h * self.g.w)
        } else {
            (self.g.co, self.g.plane())
        }
    }

    /// y (+)= A(x, w).
    #[allow(clippy::too_many_arguments)]
    fn apply(&self, rows: usize, x: &[T], w: &[T], y: &mut [T], accumulate: bool, scratch: &mut [T]) {
        if self.transposed {
            self.g.backward_data(rows, x, w, y, accumulate, scratch)
        } else {
            self.g.forward(rows, x, w, y, accumulate, scratch)
        }
    }

    /// dx (+)= Aᵀ(dy, w).
    #[allow(clippy::too_many_arguments)]
    fn adjoint(&self, rows: usize, dy: &[T], w: &[T], dx: &mut [T], accumulate: bool, scratch: &mut [T]) {
        if self.transposed {
            self.g.forward(rows, dy, w, dx, accumulate, scratch)
        } else {
            self.g.backward_data(rows, dy, w, dx, accumulate, scratch)
        }
    }

    /// y = A(x, W) + b.
    pub fn forward(&self, rows: usize, x: &[T], y: &mut [T], scratch: &mut [T]) {
        let (c, plane) = self.bias_planes();
        set_channel_bias(rows, c, plane, self.b, y);
        self.apply(rows, x, self.w, y, true, scratch);
    }

    /// dW = the weight's adjoint of (x, dy), db = Σ dy per channel (written,
    /// not accumulated); dx = Aᵀ(dy, W) when asked for.
    pub fn backward(
        &self,
        rows: usize,
        x: &[T],
        dy: &[T],
        grads: Option<(&mut [T], &mut [T])>,
        dx: Option<&mut [T]>,
        scratch: &mut [T],
    ) {
        if let Some((dw, db)) = grads {
            // The convolution's input is this layer's output for ConvT.
            let (input, output) = if self.transposed { (dy, x) } else { (x, dy) };
            self.g.backward_filter(rows, input, output, dw, false, scratch);
            let (c, plane) = self.bias_planes();
            channel_sums(rows, c, plane, dy, db);
        }
        if let Some(dx) = dx {
            self.adjoint(rows, dy, self.w, dx, false, scratch);
        }
    }

    /// ẏ = A(ẋ, W) + A(x, V) + c for the direction `dir` = (V, c) (ẋ = 0 when None).
    pub fn jvp(&self, dir: &Conv<T>, rows: usize, x: &[T], xdot: Option<&[T]>, ydot: &mut [T], scratch: &mut [T]) {
        let (c, plane) = self.bias_planes();
        set_channel_bias(rows, c, plane, dir.b, ydot);
        self.apply(rows, x, dir.w, ydot, true, scratch);
        if let Some(xdot) = xdot {
            self.apply(rows, xdot, self.w, ydot, true, scratch);
        }
    }

    /// x̄ = Aᵀ(ȳ, W) + Aᵀ(ẏ̄, V); ẋ̄ = Aᵀ(ẏ̄, W) when asked for.
    #[allow(clippy::too_many_arguments)]
    pub fn jvp_backward(
        &self,
        dir: &Conv<T>,
        rows: usize,
        ybar: &[T],
        ydotbar: &[T],
        xbar: &mut [T],
        xdotbar: Option<&mut [T]>,
        scratch: &mut [T],
    ) {
        self.adjoint(rows, ybar, self.w, xbar, false, scratch);
        self.adjoint(rows, ydotbar, dir.w, xbar, true, scratch);
        if let Some(xdotbar) = xdotbar {
            self.adjoint(rows, ydotbar, self.w, xdotbar, false, scratch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic stream of values in [-1, 1) (splitmix64).
    struct Rand(u64);

    impl Rand {
        fn next(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        }

        fn vec(&mut self, n: usize) -> Vec<f64> {
            (0..n).map(|_| self.next()).collect()
        }
    }

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(a, b)| a * b).sum()
    }

    /// max |got − want| / max |want|.
    fn rel_err(got: &[f64], want: &[f64]) -> f64 {
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
        got.iter().zip(want).fold(0.0f64, |m, (g, w)| m.max((g - w).abs())) / scale
    }

    /// Scratch full of NaN (so that reading what was not written shows) for
    /// `rows` samples in groups of up to `rows`.
    fn scratch(g: &ConvGeom, rows: usize) -> Vec<f64> {
        assert!(g.group_scratch_len(rows) >= g.scratch_len(rows));
        vec![f64::NAN; g.group_scratch_len(rows)]
    }

    /// The direct 7-loop convolution.
    fn naive_conv(g: &ConvGeom, rows: usize, x: &[f64], w: &[f64]) -> Vec<f64> {
        let ConvGeom { ci, h, w: iw, co, k, s, p, oh, ow } = *g;
        let mut y = vec![0.0; rows * g.out_len()];
        for n in 0..rows {
            for o in 0..co {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = 0.0;
                        for c in 0..ci {
                            for ki in 0..k {
                                for kj in 0..k {
                                    let iy = (oy * s + ki) as isize - p as isize;
                                    let ix = (ox * s + kj) as isize - p as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= iw as isize {
                                        continue;
                                    }
                                    let (iy, ix) = (iy as usize, ix as usize);
                                    acc += x[((n * ci + c) * h + iy) * iw + ix] * w[((o * ci + c) * k + ki) * k + kj];
                                }
                            }
                        }
                        y[((n * co + o) * oh + oy) * ow + ox] = acc;
                    }
                }
            }
        }
        y
    }

    /// PyTorch's ConvTranspose2d(in_c, out_c, k, s, p) computed directly in
    /// scatter form (weight `[in_c, out_c, k, k]`): returns y and its (H, W).
    #[allow(clippy::too_many_arguments)]
    fn naive_convt(
        (in_c, h, w, out_c, k, s, p): (usize, usize, usize, usize, usize, usize, usize),
        rows: usize,
        x: &[f64],
        wt: &[f64],
    ) -> (Vec<f64>, usize, usize) {
        let big_h = ((h - 1) * s + k) as isize - 2 * p as isize;
        let big_w = ((w - 1) * s + k) as isize - 2 * p as isize;
        assert!(big_h > 0 && big_w > 0);
        let (bh, bw) = (big_h as usize, big_w as usize);
        let mut y = vec![0.0; rows * out_c * bh * bw];
        for n in 0..rows {
            for i in 0..in_c {
                for iy in 0..h {
                    for ix in 0..w {
                        let xv = x[((n * in_c + i) * h + iy) * w + ix];
                        for o in 0..out_c {
                            for ki in 0..k {
                                for kj in 0..k {
                                    let oy = (iy * s + ki) as isize - p as isize;
                                    let ox = (ix * s + kj) as isize - p as isize;
                                    if oy < 0 || ox < 0 || oy >= big_h || ox >= big_w {
                                        continue;
                                    }
                                    y[((n * out_c + o) * bh + oy as usize) * bw + ox as usize] +=
                                        xv * wt[((i * out_c + o) * k + ki) * k + kj];
                                }
                            }
                        }
                    }
                }
            }
        }
        (y, bh, bw)
    }

    /// Every geometry of the sweep: odd sizes, stride 1–3, padding 0–2, k 1–5,
    /// ci and co 1–4 (those whose kernel does not fit are checked to be errors).
    fn sweep(mut f: impl FnMut(ConvGeom)) {
        let mut n = 0;
        for (h, w) in [(5, 7), (3, 4), (4, 8)] {
            for s in 1..=3 {
                for p in 0..=2 {
                    for k in 1..=5 {
                        for (ci, co) in [(1, 1), (1, 4), (2, 3), (4, 2), (3, 1)] {
                            match ConvGeom::new(ci, h, w, co, k, s, p) {
                                Ok(g) => {
                                    assert_eq!((g.oh, g.ow), ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1));
                                    f(g);
                                    n += 1;
                                }
                                Err(e) => assert!(h + 2 * p < k || w + 2 * p < k, "{e}"),
                            }
                        }
                    }
                }
            }
        }
        assert!(n > 300, "the sweep ran only {n} geometries");
        // inner dimensions large enough for the other layout (a GEMM row per
        // output position, and groups of several samples per GEMM)
        for (ci, h, w, co, k, s, p) in [(16, 7, 5, 3, 4, 2, 1), (29, 5, 6, 2, 3, 1, 0), (64, 4, 3, 2, 2, 3, 2)] {
            let g = ConvGeom::new(ci, h, w, co, k, s, p).unwrap();
            assert!(g.positions_major_forward() && g.samples_per_gemm(3) > 1, "{g:?}");
            f(g);
        }
    }

    /// The group sizes to try for `rows` samples: one per GEMM, two, all.
    fn groups(rows: usize) -> Vec<usize> {
        let mut g = vec![1, 2, rows];
        g.dedup();
        g
    }

    #[test]
    fn forward_matches_the_direct_convolution() {
        let mut rng = Rand(1);
        sweep(|g| {
            for rows in 1..=3 {
                let x = rng.vec(rows * g.in_len());
                let w = rng.vec(g.weight_len());
                let want = naive_conv(&g, rows, &x, &w);
                for group in groups(rows) {
                    let mut y = vec![f64::NAN; rows * g.out_len()];
                    g.forward_grouped(group, rows, &x, &w, &mut y, false, &mut scratch(&g, rows));
                    assert!(rel_err(&y, &want) < 1e-13, "{g:?} rows {rows} group {group}");
                }
                let mut y = vec![f64::NAN; rows * g.out_len()];
                g.forward(rows, &x, &w, &mut y, false, &mut scratch(&g, rows));
                assert!(rel_err(&y, &want) < 1e-13, "{g:?} rows {rows}");
            }
        });
    }

    #[test]
    fn conv_layer_forward_adds_the_bias() {
        let mut rng = Rand(2);
        let g = ConvGeom::new(3, 5, 7, 2, 3, 2, 1).unwrap();
        let rows = 2;
        let (x, w, b) = (rng.vec(rows * g.in_len()), rng.vec(g.weight_len()), rng.vec(g.co));
        let mut want = naive_conv(&g, rows, &x, &w);
        for (i, v) in want.iter_mut().enumerate() {
            *v += b[(i / g.plane()) % g.co];
        }
        let mut y = vec![f64::NAN; rows * g.out_len()];
        Conv { w: &w, b: &b, g, transposed: false }.forward(rows, &x, &mut y, &mut scratch(&g, rows));
        assert!(rel_err(&y, &want) < 1e-13);
        // bias_forward adds the same
        let mut y2 = naive_conv(&g, rows, &x, &w);
        g.bias_forward(rows, &b, &mut y2);
        assert!(rel_err(&y2, &want) < 1e-15);
    }

    #[test]
    fn convt_forward_matches_the_direct_transposed_convolution_and_pytorchs_shape() {
        let mut rng = Rand(3);
        // the dcgan28 generator's shapes, as PyTorch gives them
        let g = convt_geom(128, 7, 7, 64, 4, 2, 1).unwrap();
        assert_eq!((g.ci, g.h, g.w, g.co, g.oh, g.ow), (64, 14, 14, 128, 7, 7));
        let g = convt_geom(64, 14, 14, 1, 4, 2, 1).unwrap();
        assert_eq!((g.ci, g.h, g.w, g.co, g.oh, g.ow), (1, 28, 28, 64, 14, 14));
        let mut n = 0;
        for (h, w) in [(5, 7), (3, 2), (1, 1)] {
            for s in 1..=3 {
                for p in 0..=2 {
                    for k in 1..=5 {
                        for (in_c, out_c) in [(1, 1), (2, 3), (4, 1)] {
                            let pt = |n: usize| ((n - 1) * s + k) as isize - 2 * p as isize;
                            let g = match convt_geom(in_c, h, w, out_c, k, s, p) {
                                Ok(g) => g,
                                Err(e) => {
                                    assert!(pt(h) <= 0 || pt(w) <= 0, "{e}");
                                    continue;
                                }
                            };
                            assert_eq!((g.h as isize, g.w as isize), (pt(h), pt(w)), "PyTorch's output size");
                            assert_eq!((g.ci, g.co, g.oh, g.ow, g.k, g.s, g.p), (out_c, in_c, h, w, k, s, p));
                            for rows in [1, 3] {
                                let x = rng.vec(rows * in_c * h * w);
                                let wt = rng.vec(in_c * out_c * k * k);
                                let b = vec![0.0; out_c];
                                let (want, bh, bw) = naive_convt((in_c, h, w, out_c, k, s, p), rows, &x, &wt);
                                assert_eq!((bh, bw), (g.h, g.w));
                                let layer = Conv { w: &wt, b: &b, g, transposed: true };
                                let mut y = vec![f64::NAN; rows * layer.out_len()];
                                layer.forward(rows, &x, &mut y, &mut scratch(&g, rows));
                                assert!(rel_err(&y, &want) < 1e-13, "{g:?} rows {rows}");
                                for group in groups(rows) {
                                    let mut y = vec![f64::NAN; rows * layer.out_len()];
                                    g.backward_data_grouped(
                                        group,
                                        rows,
                                        &x,
                                        &wt,
                                        &mut y,
                                        false,
                                        &mut scratch(&g, rows),
                                    );
                                    assert!(rel_err(&y, &want) < 1e-13, "{g:?} rows {rows} group {group}");
                                }
                                n += 1;
                            }
                        }
                    }
                }
            }
        }
        assert!(n > 200, "only {n} cases");
    }

    #[test]
    fn the_three_operators_are_adjoint() {
        let mut rng = Rand(4);
        sweep(|g| {
            let rows = 3;
            let x = rng.vec(rows * g.in_len());
            let w = rng.vec(g.weight_len());
            let dy = rng.vec(rows * g.out_len());
            for group in groups(rows) {
                let mut y = vec![f64::NAN; rows * g.out_len()];
                let mut dx = vec![f64::NAN; rows * g.in_len()];
                let mut dw = vec![f64::NAN; g.weight_len()];
                let sc = &mut scratch(&g, rows);
                g.forward_grouped(group, rows, &x, &w, &mut y, false, sc);
                g.backward_data_grouped(group, rows, &dy, &w, &mut dx, false, sc);
                g.backward_filter_grouped(group, rows, &x, &dy, &mut dw, false, sc);
                let (a, b, c) = (dot(&y, &dy), dot(&x, &dx), dot(&w, &dw));
                // the scale: the sum of |terms| of ⟨forward(x), dy⟩ written out
                let scale: f64 = naive_conv(
                    &g,
                    rows,
                    &x.iter().map(|v| v.abs()).collect::<Vec<_>>(),
                    &w.iter().map(|v| v.abs()).collect::<Vec<_>>(),
                )
                .iter()
                .zip(&dy)
                .map(|(y, d)| y * d.abs())
                .sum();
                assert!(scale > 0.0);
                assert!((a - b).abs() <= 1e-12 * scale, "{g:?} group {group}: {a} vs {b}");
                assert!((a - c).abs() <= 1e-12 * scale, "{g:?} group {group}: {a} vs {c}");
            }
        });
    }

    #[test]
    fn bias_backward_is_the_adjoint_of_bias_forward() {
        let mut rng = Rand(5);
        let g = ConvGeom::new(2, 5, 7, 3, 3, 1, 1).unwrap();
        let rows = 3;
        let (b, dy) = (rng.vec(g.co), rng.vec(rows * g.out_len()));
        let mut y = vec![0.0; rows * g.out_len()];
        g.bias_forward(rows, &b, &mut y);
        let mut db = vec![f64::NAN; g.co];
        g.bias_backward(rows, &dy, &mut db);
        assert!((dot(&y, &dy) - dot(&b, &db)).abs() < 1e-12);
        let want: Vec<f64> = (0..g.co)
            .map(|c| {
                (0..rows)
                    .flat_map(|r| (0..g.plane()).map(move |i| (r, i)))
                    .map(|(r, i)| dy[(r * g.co + c) * g.plane() + i])
                    .sum()
            })
            .collect();
        assert!(rel_err(&db, &want) < 1e-14);
    }

    #[test]
    fn accumulate_adds_to_what_was_there() {
        let mut rng = Rand(6);
        for (g, rows) in [
            (ConvGeom::new(3, 5, 7, 2, 3, 2, 1).unwrap(), 5),
            (ConvGeom::new(1, 7, 5, 4, 2, 1, 0).unwrap(), 3),
            (ConvGeom::new(2, 6, 6, 3, 4, 2, 1).unwrap(), 4),
            (ConvGeom::new(16, 5, 4, 3, 4, 1, 1).unwrap(), 5),
        ] {
            let x = rng.vec(rows * g.in_len());
            let w = rng.vec(g.weight_len());
            let dy = rng.vec(rows * g.out_len());
            let mut groups = groups(rows);
            groups.push(g.samples_per_gemm(rows));
            for group in groups {
                let sc = &mut scratch(&g, rows);
                let check = |op: &mut dyn FnMut(&mut [f64], bool), len: usize, rng: &mut Rand| {
                    let mut fresh = vec![f64::NAN; len];
                    op(&mut fresh, false);
                    let before = rng.vec(len);
                    let mut acc = before.clone();
                    op(&mut acc, true);
                    let want: Vec<f64> = before.iter().zip(&fresh).map(|(a, b)| a + b).collect();
                    assert!(rel_err(&acc, &want) < 1e-14, "{g:?} rows {rows} group {group}");
                    assert!(rel_err(&acc, &fresh) > 1e-3, "the accumulated output must differ");
                };
                check(&mut |y, acc| g.forward_grouped(group, rows, &x, &w, y, acc, sc), rows * g.out_len(), &mut rng);
                check(
                    &mut |dx, acc| g.backward_data_grouped(group, rows, &dy, &w, dx, acc, sc),
                    rows * g.in_len(),
                    &mut rng,
                );
                check(
                    &mut |dw, acc| g.backward_filter_grouped(group, rows, &x, &dy, dw, acc, sc),
                    g.weight_len(),
                    &mut rng,
                );
            }
            // and through the public operators
            let sc = &mut scratch(&g, rows);
            let mut y = rng.vec(rows * g.out_len());
            let before = y.clone();
            g.forward(rows, &x, &w, &mut y, true, sc);
            let fresh = naive_conv(&g, rows, &x, &w);
            let want: Vec<f64> = before.iter().zip(&fresh).map(|(a, b)| a + b).collect();
            assert!(rel_err(&y, &want) < 1e-14);
        }
    }

    #[test]
    fn geometry_errors_say_why() {
        let e = ConvGeom::new(1, 3, 3, 1, 5, 1, 0).unwrap_err();
        assert_eq!(e, "kernel 5 does not fit a 3×3 input with padding 0 (output would be empty)");
        assert!(ConvGeom::new(1, 3, 3, 1, 5, 1, 1).is_ok(), "3 + 2 = 5 fits");
        assert!(ConvGeom::new(1, 8, 3, 1, 4, 1, 0).unwrap_err().contains("does not fit a 8×3 input"));
        assert!(ConvGeom::new(1, 3, 3, 1, 0, 1, 0).unwrap_err().contains("kernel size must be positive"));
        assert!(ConvGeom::new(1, 3, 3, 1, 3, 0, 0).unwrap_err().contains("stride must be positive"));
        assert!(ConvGeom::new(0, 3, 3, 1, 3, 1, 0).unwrap_err().contains("channel"));
        assert!(ConvGeom::new(1, 0, 3, 1, 1, 1, 0).unwrap_err().contains("empty"));
        // ConvTranspose2d(1, 1, 3, 1, 2) of 1×1: (1 − 1)·1 − 4 + 3 < 0
        assert!(convt_geom(1, 1, 1, 1, 3, 1, 2).unwrap_err().contains("empty output"));
        assert!(convt_geom(1, 2, 2, 1, 1, 1, 1).unwrap_err().contains("empty output"), "1·1 − 2 + 1 = 0");
        assert!(convt_geom(1, 3, 3, 1, 0, 1, 0).is_err());
        assert!(convt_geom(1, 3, 3, 1, 3, 0, 0).is_err());
    }

    #[test]
    fn scratch_len_grows_with_rows() {
        for g in [ConvGeom::new(64, 14, 14, 128, 4, 2, 1).unwrap(), ConvGeom::new(1, 28, 28, 64, 4, 2, 1).unwrap()] {
            for rows in 1..80 {
                assert!(g.scratch_len(rows) >= g.scratch_len(rows - 1).max(1));
                assert!((1..=rows).contains(&g.samples_per_gemm(rows)));
            }
        }
    }

    /// A layer under test: a Conv or a ConvT on `rows` samples.
    #[derive(Clone, Copy, Debug)]
    struct Case {
        transposed: bool,
        g: ConvGeom,
        rows: usize,
    }

    /// (x̄, ẋ̄) from (W, V, ȳ, ẏ̄).
    type JvpBackward = dyn Fn(&Case, &[f64], &[f64], &[f64], &[f64]) -> (Vec<f64>, Vec<f64>);

    impl Case {
        fn in_len(&self) -> usize {
            self.rows * if self.transposed { self.g.out_len() } else { self.g.in_len() }
        }

        fn out_len(&self) -> usize {
            self.rows * if self.transposed { self.g.in_len() } else { self.g.out_len() }
        }

        fn layer<'a>(&self, w: &'a [f64], b: &'a [f64]) -> Conv<'a, f64> {
            Conv { w, b, g: self.g, transposed: self.transposed }
        }

        fn b_len(&self) -> usize {
            if self.transposed {
                self.g.ci
            } else {
                self.g.co
            }
        }

        fn forward(&self, w: &[f64], b: &[f64], x: &[f64]) -> Vec<f64> {
            let (rows, sc) = (self.rows, &mut scratch(&self.g, self.rows));
            let mut y = vec![f64::NAN; self.out_len()];
            self.layer(w, b).forward(rows, x, &mut y, sc);
            y
        }

        /// (dW, db, dx)
        fn backward(&self, w: &[f64], b: &[f64], x: &[f64], dy: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
            let (g, rows, sc) = (self.g, self.rows, &mut scratch(&self.g, self.rows));
            let mut dw = vec![f64::NAN; g.weight_len()];
            let mut db = vec![f64::NAN; self.b_len()];
            let mut dx = vec![f64::NAN; self.in_len()];
            self.layer(w, b).backward(rows, x, dy, Some((&mut dw, &mut db)), Some(&mut dx), sc);
            // each half alone gives the same
            let (mut dw2, mut db2, mut dx2) = (dw.clone(), db.clone(), dx.clone());
            self.layer(w, b).backward(rows, x, dy, Some((&mut dw2, &mut db2)), None, sc);
            self.layer(w, b).backward(rows, x, dy, None, Some(&mut dx2), sc);
            assert_eq!((&dw, &db, &dx), (&dw2, &db2, &dx2));
            (dw, db, dx)
        }

        #[allow(clippy::too_many_arguments)]
        fn jvp(&self, w: &[f64], b: &[f64], v: &[f64], c: &[f64], x: &[f64], xdot: Option<&[f64]>) -> Vec<f64> {
            let (rows, sc) = (self.rows, &mut scratch(&self.g, self.rows));
            let mut ydot = vec![f64::NAN; self.out_len()];
            self.layer(w, b).jvp(&self.layer(v, c), rows, x, xdot, &mut ydot, sc);
            ydot
        }
    }

    /// The layer's own jvp_backward (and a check that leaving out ẋ̄ does not change x̄).
    fn jvp_backward(case: &Case, w: &[f64], v: &[f64], ybar: &[f64], ydotbar: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let (rows, sc) = (case.rows, &mut scratch(&case.g, case.rows));
        let (b, c) = (vec![f64::NAN; case.b_len()], vec![f64::NAN; case.b_len()]);
        let mut xbar = vec![f64::NAN; case.in_len()];
        let mut xdotbar = vec![f64::NAN; case.in_len()];
        let mut xbar2 = vec![f64::NAN; case.in_len()];
        let (l, d) = (case.layer(w, &b), case.layer(v, &c));
        l.jvp_backward(&d, rows, ybar, ydotbar, &mut xbar, Some(&mut xdotbar), sc);
        l.jvp_backward(&d, rows, ybar, ydotbar, &mut xbar2, None, sc);
        assert_eq!(xbar, xbar2);
        (xbar, xdotbar)
    }

    /// A wrong jvp_backward that leaves the convᵀ(ẏ̄, V) term out of x̄.
    fn jvp_backward_without_the_direction(
        case: &Case,
        w: &[f64],
        _v: &[f64],
        ybar: &[f64],
        ydotbar: &[f64],
    ) -> (Vec<f64>, Vec<f64>) {
        let (g, rows, sc) = (case.g, case.rows, &mut scratch(&case.g, case.rows));
        let mut xbar = vec![f64::NAN; case.in_len()];
        let mut xdotbar = vec![f64::NAN; case.in_len()];
        if case.transposed {
            g.forward(rows, ybar, w, &mut xbar, false, sc);
            g.forward(rows, ydotbar, w, &mut xdotbar, false, sc);
        } else {
            g.backward_data(rows, ybar, w, &mut xbar, false, sc);
            g.backward_data(rows, ydotbar, w, &mut xdotbar, false, sc);
        }
        (xbar, xdotbar)
    }

    const EPS: f64 = 1e-5;

    /// The central-difference gradient of `f` at `at`.
    fn fd_grad(at: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
        let mut p = at.to_vec();
        (0..at.len())
            .map(|i| {
                p[i] = at[i] + EPS;
                let up = f(&p);
                p[i] = at[i] - EPS;
                let down = f(&p);
                p[i] = at[i];
                (up - down) / (2.0 * EPS)
            })
            .collect()
    }

    struct Point {
        w: Vec<f64>,
        b: Vec<f64>,
        v: Vec<f64>,
        c: Vec<f64>,
        x: Vec<f64>,
        xdot: Vec<f64>,
        ybar: Vec<f64>,
        ydotbar: Vec<f64>,
    }

    fn point(case: &Case, rng: &mut Rand) -> Point {
        let (wl, bl) = (case.g.weight_len(), case.b_len());
        Point {
            w: rng.vec(wl),
            b: rng.vec(bl),
            v: rng.vec(wl),
            c: rng.vec(bl),
            x: rng.vec(case.in_len()),
            xdot: rng.vec(case.in_len()),
            ybar: rng.vec(case.out_len()),
            ydotbar: rng.vec(case.out_len()),
        }
    }

    /// The largest relative error of `jvpb`'s (x̄, ẋ̄) against central
    /// differences of L(x, ẋ) = ⟨ȳ, y(x)⟩ + ⟨ẏ̄, ẏ(x, ẋ)⟩.
    fn jvp_backward_error(case: &Case, pt: &Point, jvpb: &JvpBackward) -> f64 {
        let l = |x: &[f64], xdot: &[f64]| {
            dot(&pt.ybar, &case.forward(&pt.w, &pt.b, x))
                + dot(&pt.ydotbar, &case.jvp(&pt.w, &pt.b, &pt.v, &pt.c, x, Some(xdot)))
        };
        let (xbar, xdotbar) = jvpb(case, &pt.w, &pt.v, &pt.ybar, &pt.ydotbar);
        let fd_x = fd_grad(&pt.x, |x| l(x, &pt.xdot));
        let fd_xdot = fd_grad(&pt.xdot, |xdot| l(&pt.x, xdot));
        rel_err(&xbar, &fd_x).max(rel_err(&xdotbar, &fd_xdot))
    }

    /// backward, jvp (with and without ẋ) and jvp_backward against central differences.
    fn check_against_finite_differences(case: Case, rng: &mut Rand) {
        let pt = point(&case, rng);
        let tol = 1e-6;
        // backward: the gradient of ⟨dy, y(x, W, b)⟩ in W, b and x
        let dy = &pt.ybar;
        let (dw, db, dx) = case.backward(&pt.w, &pt.b, &pt.x, dy);
        let fd_w = fd_grad(&pt.w, |w| dot(dy, &case.forward(w, &pt.b, &pt.x)));
        let fd_b = fd_grad(&pt.b, |b| dot(dy, &case.forward(&pt.w, b, &pt.x)));
        let fd_x = fd_grad(&pt.x, |x| dot(dy, &case.forward(&pt.w, &pt.b, x)));
        assert!(rel_err(&dw, &fd_w) < tol, "{case:?} dW {}", rel_err(&dw, &fd_w));
        assert!(rel_err(&db, &fd_b) < tol, "{case:?} db {}", rel_err(&db, &fd_b));
        assert!(rel_err(&dx, &fd_x) < tol, "{case:?} dx {}", rel_err(&dx, &fd_x));
        // jvp: d/dt y(x + t ẋ, W + t V, b + t c) at t = 0, and with ẋ = 0
        for xdot in [Some(&pt.xdot[..]), None] {
            let along = |t: f64| {
                let shift = |a: &[f64], d: &[f64]| a.iter().zip(d).map(|(a, d)| a + t * d).collect::<Vec<_>>();
                let x = match xdot {
                    Some(xd) => shift(&pt.x, xd),
                    None => pt.x.clone(),
                };
                case.forward(&shift(&pt.w, &pt.v), &shift(&pt.b, &pt.c), &x)
            };
            let (up, down) = (along(EPS), along(-EPS));
            let fd: Vec<f64> = up.iter().zip(&down).map(|(u, d)| (u - d) / (2.0 * EPS)).collect();
            let ydot = case.jvp(&pt.w, &pt.b, &pt.v, &pt.c, &pt.x, xdot);
            assert!(rel_err(&ydot, &fd) < tol, "{case:?} jvp (ẋ given: {}) {}", xdot.is_some(), rel_err(&ydot, &fd));
        }
        let e = jvp_backward_error(&case, &pt, &jvp_backward);
        assert!(e < tol, "{case:?} jvp_backward {e}");
    }

    fn layer_cases(transposed: bool) -> Vec<Case> {
        let geoms = if transposed {
            vec![
                convt_geom(3, 3, 4, 2, 3, 2, 1).unwrap(),
                convt_geom(2, 4, 3, 3, 4, 2, 1).unwrap(),
                convt_geom(1, 2, 3, 2, 2, 3, 0).unwrap(),
                convt_geom(2, 3, 3, 1, 3, 1, 2).unwrap(),
                convt_geom(2, 2, 2, 16, 4, 2, 1).unwrap(),
            ]
        } else {
            vec![
                ConvGeom::new(3, 5, 7, 2, 3, 2, 1).unwrap(),
                ConvGeom::new(2, 7, 5, 3, 4, 2, 1).unwrap(),
                ConvGeom::new(1, 5, 5, 2, 2, 3, 0).unwrap(),
                ConvGeom::new(2, 4, 3, 1, 5, 1, 2).unwrap(),
                ConvGeom::new(16, 4, 3, 2, 4, 2, 1).unwrap(),
            ]
        };
        geoms.into_iter().flat_map(|g| [1, 3].map(|rows| Case { transposed, g, rows })).collect()
    }

    #[test]
    fn conv_layer_passes_match_finite_differences() {
        let mut rng = Rand(7);
        for case in layer_cases(false) {
            check_against_finite_differences(case, &mut rng);
        }
    }

    #[test]
    fn convt_layer_passes_match_finite_differences() {
        let mut rng = Rand(8);
        for case in layer_cases(true) {
            check_against_finite_differences(case, &mut rng);
        }
    }

    #[test]
    fn the_finite_difference_check_catches_a_missing_term() {
        let mut rng = Rand(9);
        for transposed in [false, true] {
            for case in layer_cases(transposed) {
                let pt = point(&case, &mut rng);
                let right = jvp_backward_error(&case, &pt, &jvp_backward);
                let wrong = jvp_backward_error(&case, &pt, &jvp_backward_without_the_direction);
                assert!(right < 1e-6, "{case:?}: {right}");
                assert!(wrong > 1e-2, "{case:?}: dropping convᵀ(ẏ̄, V) went unnoticed ({wrong})");
            }
        }
    }
}
