//! A sequential network's four passes on the GPU (the device twin of
//! `nn::Network`): fp16 activations kept per layer, products through cuBLAS
//! (batched over chunks, so every chunk is computed with the same shapes
//! whatever the shard), elementwise work through kernels/activation.cu and
//! kernels/linear.cu.  Parameter gradients are written in fp32, one row per
//! chunk, straight into the partial-sum rows.
//!
//! Row-major `rows × width` buffers are column-major `width × rows` matrices
//! to cuBLAS, so for a Linear layer (weight W `[out, in]`, row-major):
//! y = x Wᵀ is `C(out×rows) = Wᵀᵀ · X`, dW = dyᵀ x is `C(in×out) = X · dYᵀ`,
//! and dx = dy W is `C(in×rows) = W · dY` in cuBLAS's terms.

use half::f16;

use super::device::{DevBuf, Gemm, Gpu, Rows};
use crate::error::Result;
use crate::nn::layer::Activation;
use crate::nn::{LayerSpec, Network};

const F16: usize = 2;
const F32: usize = 4;

/// An activation as kernels/activation.cu takes it: (kind, parameter).
pub fn act_code(a: Activation) -> (i32, f32) {
    match a {
        Activation::Relu => (0, 0.0),
        Activation::LeakyRelu(s) => (1, s as f32),
        Activation::Tanh => (2, 0.0),
        Activation::Sigmoid => (3, 0.0),
        Activation::Scale(s) => (4, s as f32),
    }
}

/// Where the parameter gradients go: fp32 rows of partial sums, one per chunk.
#[derive(Debug, Clone, Copy)]
pub struct GradOut {
    /// Address of chunk 0's first gradient value of this network.
    pub base: u64,
    /// Row stride, in values.
    pub stride: usize,
}

pub struct DevNet {
    pub net: Network,
    /// Output of each layer, `chunks × block × width` fp16.
    acts: Vec<DevBuf<f16>>,
    /// Tangent of each layer's output (valid where `tan_some`).
    tans: Vec<DevBuf<f16>>,
    tan_some: Vec<bool>,
    /// Ping-pong adjoints (g) and tangent adjoints (t).
    g: [DevBuf<f16>; 2],
    t: [DevBuf<f16>; 2],
    /// fp32 accumulator for products that get a bias or a second term.
    acc: DevBuf<f32>,
}

/// The address of the selected rows' first value in a buffer of `width`-wide rows.
fn sel(ptr: u64, r: Rows, width: usize, elem: usize) -> u64 {
    ptr + (r.start * width * elem) as u64
}

impl DevNet {
    /// Buffers for `chunks` blocks of `block` rows.
    pub fn new(gpu: &Gpu, net: &Network, chunks: usize, block: usize) -> Result<DevNet> {
        let rows = chunks * block;
        let per_layer = |gpu: &Gpu| -> Result<Vec<DevBuf<f16>>> {
            (0..net.layers.len()).map(|l| gpu.alloc::<f16>(rows * net.width_out(l))).collect()
        };
        let mw = rows * net.max_width();
        Ok(DevNet {
            acts: per_layer(gpu)?,
            tans: per_layer(gpu)?,
            tan_some: vec![false; net.layers.len()],
            g: [gpu.alloc(mw)?, gpu.alloc(mw)?],
            t: [gpu.alloc(mw)?, gpu.alloc(mw)?],
            acc: gpu.alloc(mw)?,
            net: net.clone(),
        })
    }

    /// The network's output buffer (written by `forward`).
    pub fn output(&self) -> u64 {
        self.acts.last().expect("a network has layers").ptr
    }

    /// The output's tangent after `jvp` (None: identically zero).
    pub fn tangent(&self) -> Option<u64> {
        let l = self.net.layers.len() - 1;
        self.tan_some[l].then(|| self.tans[l].ptr)
    }

    fn input_of(&self, l: usize, x: u64) -> u64 {
        if l == 0 {
            x
        } else {
            self.acts[l - 1].ptr
        }
    }

    /// The tangent of layer `l`'s input (None: zero).
    fn input_tangent(&self, l: usize, xdot: Option<u64>) -> Option<u64> {
        if l == 0 {
            xdot
        } else {
            self.tan_some[l - 1].then(|| self.tans[l - 1].ptr)
        }
    }

    /// (weight, bias) addresses of Linear layer `l` in the fp16 parameters at `p`.
    fn wb(&self, l: usize, p: u64) -> (u64, u64) {
        let (i, o) = (self.net.width_in(l), self.net.width_out(l));
        let off = self.net.offset(l);
        (p + (off * F16) as u64, p + ((off + o * i) * F16) as u64)
    }

    /// c = X · op(W) for the selected rows of `x` (`kx` wide) into those of
    /// `c` (`kc` wide, fp32 or fp16; beta 0 overwrites, 1 adds), W a weight
    /// `[out, inp]` and op(W) = Wᵀ (`transpose`, then kx = inp, kc = out) or W
    /// (kx = out, kc = inp).
    #[allow(clippy::too_many_arguments)]
    fn rows_times_weight(
        gpu: &Gpu,
        transpose: bool,
        w: u64,
        inp: usize,
        (x, kx): (u64, usize),
        (c, kc, c_f32): (u64, usize, bool),
        r: Rows,
        beta: f32,
    ) -> Result<()> {
        gpu.gemm(&Gemm {
            ta: transpose,
            tb: false,
            m: kc,
            n: r.count,
            k: kx,
            a: w,
            lda: inp,
            stride_a: 0,
            b: sel(x, r, kx, F16),
            ldb: kx,
            stride_b: r.block * kx,
            c: sel(c, r, kc, if c_f32 { F32 } else { F16 }),
            ldc: kc,
            stride_c: r.block * kc,
            c_f32,
            alpha: 1.0,
            beta,
            batch: r.chunks,
        })
    }

    /// acc (or `c` in fp16) = X · Wᵀ for the selected rows (beta: 0 overwrite, 1 add).
    #[allow(clippy::too_many_arguments)]
    fn xwt(gpu: &Gpu, w: u64, x: u64, c: u64, c_f32: bool, r: Rows, inp: usize, out: usize, beta: f32) -> Result<()> {
        Self::rows_times_weight(gpu, true, w, inp, (x, inp), (c, out, c_f32), r, beta)
    }

    /// c = G · W (adjoint of the input: rows × in) for the selected rows.
    #[allow(clippy::too_many_arguments)]
    fn gw(gpu: &Gpu, w: u64, g: u64, c: u64, c_f32: bool, r: Rows, inp: usize, out: usize, beta: f32) -> Result<()> {
        Self::rows_times_weight(gpu, false, w, inp, (g, out), (c, inp, c_f32), r, beta)
    }

    /// The activation right after layer `l`, when `l` is Linear (their
    /// elementwise halves run as one fused kernel).
    fn act_after(&self, l: usize) -> Option<Activation> {
        match (self.net.layers[l], self.net.layers.get(l + 1)) {
            (LayerSpec::Linear { .. }, Some(LayerSpec::Act(a))) => Some(*a),
            _ => None,
        }
    }

    /// y = net(x) on the selected rows (x: the input buffer, same layout).
    pub fn forward(&mut self, gpu: &Gpu, p: u64, x: u64, r: Rows) -> Result<()> {
        let mut l = 0;
        while l < self.net.layers.len() {
            let (wi, wo) = (self.net.width_in(l), self.net.width_out(l));
            let inp = self.input_of(l, x);
            let y = self.acts[l].ptr;
            match self.net.layers[l] {
                LayerSpec::Linear { .. } => {
                    let (w, b) = self.wb(l, p);
                    Self::xwt(gpu, w, inp, self.acc.ptr, true, r, wi, wo, 0.0)?;
                    if let Some(a) = self.act_after(l) {
                        gpu.bias_act_forward(act_code(a), self.acc.ptr, b, y, self.acts[l + 1].ptr, r, wo)?;
                        l += 1;
                    } else {
                        gpu.bias_cast(self.acc.ptr, b, y, r, wo)?;
                    }
                }
                LayerSpec::Conv { .. } | LayerSpec::ConvT { .. } | LayerSpec::Reshape(_) | LayerSpec::Flatten => {
                    unreachable!("CudaBackend::new accepts MLPs only")
                }
                LayerSpec::Act(a) => gpu.act_forward(act_code(a), inp, y, r, wo)?,
            }
            l += 1;
        }
        Ok(())
    }

    /// Back-propagates `dy` (the output's adjoint) through the last forward
    /// on the selected rows: parameter gradients (as loss-scaled fp32 sums
    /// per chunk) into `grads`, dL/dx into `dx` when given.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &mut self,
        gpu: &Gpu,
        p: u64,
        x: u64,
        r: Rows,
        dy: u64,
        grads: Option<GradOut>,
        dx: Option<u64>,
    ) -> Result<()> {
        let mut cur = dy;
        for l in (0..self.net.layers.len()).rev() {
            let (wi, wo) = (self.net.width_in(l), self.net.width_out(l));
            let inp = self.input_of(l, x);
            let need_dx = dx.is_some() || self.net.first_linear().is_some_and(|f| f < l);
            let out = if l == 0 { dx.unwrap_or(0) } else { self.g[l % 2].ptr };
            match self.net.layers[l] {
                LayerSpec::Linear { .. } => {
                    let (w, _) = self.wb(l, p);
                    if let Some(gr) = grads {
                        let off = self.net.offset(l);
                        // dW_c = dY_cᵀ X_c, one [out, in] block per chunk.
                        gpu.gemm(&Gemm {
                            ta: false,
                            tb: true,
                            m: wi,
                            n: wo,
                            k: r.count,
                            a: sel(inp, r, wi, F16),
                            lda: wi,
                            stride_a: r.block * wi,
                            b: sel(cur, r, wo, F16),
                            ldb: wo,
                            stride_b: r.block * wo,
                            c: gr.base + (off * F32) as u64,
                            ldc: wi,
                            stride_c: gr.stride,
                            c_f32: true,
                            alpha: 1.0,
                            beta: 0.0,
                            batch: r.chunks,
                        })?;
                        gpu.colsum_chunks(cur, gr.base + ((off + wo * wi) * F32) as u64, gr.stride, 1.0, r, wo)?;
                    }
                    if need_dx {
                        Self::gw(gpu, w, cur, out, false, r, wi, wo, 0.0)?;
                    }
                }
                LayerSpec::Conv { .. } | LayerSpec::ConvT { .. } | LayerSpec::Reshape(_) | LayerSpec::Flatten => {
                    unreachable!("CudaBackend::new accepts MLPs only")
                }
                LayerSpec::Act(a) => {
                    if need_dx {
                        gpu.act_backward(act_code(a), inp, cur, out, r, wo)?;
                    }
                }
            }
            if !need_dx {
                break;
            }
            cur = out;
        }
        Ok(())
    }

    /// Tangents of every layer's output along the parameter direction `dir`
    /// (fp16, the same layout as the parameters) on the selected rows of the
    /// last forward; `xdot` is the input's tangent (None: zero).
    pub fn jvp(&mut self, gpu: &Gpu, p: u64, dir: u64, x: u64, xdot: Option<u64>, r: Rows) -> Result<()> {
        let mut l = 0;
        while l < self.net.layers.len() {
            let (wi, wo) = (self.net.width_in(l), self.net.width_out(l));
            let inp = self.input_of(l, x);
            let tin = self.input_tangent(l, xdot);
            let tout = self.tans[l].ptr;
            let at = l;
            self.tan_some[at] = match self.net.layers[l] {
                LayerSpec::Linear { .. } => {
                    let (w, _) = self.wb(l, p);
                    let (v, c) = self.wb(l, dir);
                    // ẏ = x Vᵀ + ẋ Wᵀ + c.
                    Self::xwt(gpu, v, inp, self.acc.ptr, true, r, wi, wo, 0.0)?;
                    if let Some(t) = tin {
                        Self::xwt(gpu, w, t, self.acc.ptr, true, r, wi, wo, 1.0)?;
                    }
                    if let Some(a) = self.act_after(l) {
                        let (y, t_act) = (self.acts[l].ptr, self.tans[l + 1].ptr);
                        gpu.bias_act_jvp(act_code(a), self.acc.ptr, c, y, tout, t_act, r, wo)?;
                        self.tan_some[l + 1] = true;
                        l += 1;
                    } else {
                        gpu.bias_cast(self.acc.ptr, c, tout, r, wo)?;
                    }
                    true
                }
                LayerSpec::Conv { .. } | LayerSpec::ConvT { .. } | LayerSpec::Reshape(_) | LayerSpec::Flatten => {
                    unreachable!("CudaBackend::new accepts MLPs only")
                }
                LayerSpec::Act(a) => match tin {
                    Some(t) => {
                        gpu.act_backward(act_code(a), inp, t, tout, r, wo)?;
                        true
                    }
                    None => false,
                },
            };
            l += 1;
        }
        Ok(())
    }

    /// The adjoint of the jvp pass (after `forward` and `jvp` on the same
    /// rows): given the output adjoints (ybar, ydotbar), writes x̄ into `xbar`
    /// and, when the input tangent is not zero and `xdotbar` is given, ẋ̄.
    #[allow(clippy::too_many_arguments)]
    pub fn jvp_backward(
        &mut self,
        gpu: &Gpu,
        p: u64,
        dir: u64,
        x: u64,
        xdot: Option<u64>,
        r: Rows,
        ybar: u64,
        ydotbar: u64,
        xbar: u64,
        xdotbar: Option<u64>,
    ) -> Result<()> {
        let (mut yb, mut tb) = (ybar, ydotbar);
        for l in (0..self.net.layers.len()).rev() {
            let (wi, wo) = (self.net.width_in(l), self.net.width_out(l));
            let inp = self.input_of(l, x);
            let tin = self.input_tangent(l, xdot);
            let (xb, xtb) = if l == 0 {
                (xbar, if xdot.is_some() { xdotbar.unwrap_or(0) } else { 0 })
            } else {
                (self.g[l % 2].ptr, self.t[l % 2].ptr)
            };
            let want_tan = tin.is_some() && xtb != 0;
            match self.net.layers[l] {
                LayerSpec::Linear { .. } => {
                    let (w, _) = self.wb(l, p);
                    let (v, _) = self.wb(l, dir);
                    // x̄ = ȳ W + ẏ̄ V; ẋ̄ = ẏ̄ W.
                    Self::gw(gpu, w, yb, self.acc.ptr, true, r, wi, wo, 0.0)?;
                    Self::gw(gpu, v, tb, self.acc.ptr, true, r, wi, wo, 1.0)?;
                    gpu.bias_cast(self.acc.ptr, 0, xb, r, wi)?;
                    if want_tan {
                        Self::gw(gpu, w, tb, xtb, false, r, wi, wo, 0.0)?;
                    }
                }
                LayerSpec::Conv { .. } | LayerSpec::ConvT { .. } | LayerSpec::Reshape(_) | LayerSpec::Flatten => {
                    unreachable!("CudaBackend::new accepts MLPs only")
                }
                LayerSpec::Act(a) => {
                    if self.tan_some[l] {
                        let adotbar = if want_tan { xtb } else { 0 };
                        gpu.act_jvp_backward(act_code(a), inp, tin.unwrap_or(0), yb, tb, xb, adotbar, r, wo)?;
                    } else {
                        gpu.act_backward(act_code(a), inp, yb, xb, r, wo)?;
                    }
                }
            }
            (yb, tb) = (xb, xtb);
        }
        Ok(())
    }
}
