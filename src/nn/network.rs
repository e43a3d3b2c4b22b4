//! A sequential network: its layers, the layout of its parameters in one flat
//! vector (PyTorch's order and shapes), and the four passes over all layers
//! for one chunk of samples.

use std::ops::Range;

use super::float::Float;
use super::layer::{LayerSpec, Linear};

/// One named parameter tensor inside the flat vector.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamTensor {
    /// PyTorch's name inside `nn.Sequential`, e.g. `0.weight`.
    pub name: String,
    pub shape: Vec<usize>,
    pub range: Range<usize>,
}

#[derive(Debug, Clone)]
pub struct Network {
    pub layers: Vec<LayerSpec>,
    /// Input width.
    pub input: usize,
    /// Output width of each layer.
    widths: Vec<usize>,
    /// Offset of each Linear layer's weight (its bias follows it).
    offsets: Vec<usize>,
    pub n_params: usize,
    /// Index of the first Linear layer (no input gradient is needed below it).
    first_linear: Option<usize>,
}

impl Network {
    pub fn new(layers: Vec<LayerSpec>, input: usize) -> Network {
        let mut widths = Vec::with_capacity(layers.len());
        let mut offsets = Vec::with_capacity(layers.len());
        let (mut w, mut n) = (input, 0);
        for l in &layers {
            offsets.push(n);
            if let LayerSpec::Linear { out } = *l {
                n += out * w + out;
                w = out;
            }
            widths.push(w);
        }
        let first_linear = layers.iter().position(|l| matches!(l, LayerSpec::Linear { .. }));
        Network { layers, input, widths, offsets, n_params: n, first_linear }
    }

    pub fn output(&self) -> usize {
        *self.widths.last().unwrap_or(&self.input)
    }

    pub fn width_in(&self, l: usize) -> usize {
        if l == 0 {
            self.input
        } else {
            self.widths[l - 1]
        }
    }

    pub fn width_out(&self, l: usize) -> usize {
        self.widths[l]
    }

    pub fn max_width(&self) -> usize {
        self.widths.iter().copied().chain([self.input]).max().unwrap_or(1)
    }

    /// Where layer `l`'s parameters start in the flat vector (its weight,
    /// then its bias).
    pub fn offset(&self, l: usize) -> usize {
        self.offsets[l]
    }

    /// The first Linear layer (below it no input gradient is needed).
    pub fn first_linear(&self) -> Option<usize> {
        self.first_linear
    }

    /// Layer `l`'s view of the flat vector `p` (a Linear layer only).
    pub fn linear<'a, T: Float>(&self, l: usize, p: &'a [T]) -> Linear<'a, T> {
        let (inp, out) = (self.width_in(l), self.width_out(l));
        let o = self.offsets[l];
        Linear { w: &p[o..o + out * inp], b: &p[o + out * inp..o + out * inp + out], inp, out }
    }

    /// The parameter tensors in PyTorch's `nn.Sequential` naming.
    pub fn tensors(&self) -> Vec<ParamTensor> {
        let mut v = Vec::new();
        for (l, spec) in self.layers.iter().enumerate() {
            if let LayerSpec::Linear { out } = *spec {
                let inp = self.width_in(l);
                let o = self.offsets[l];
                v.push(ParamTensor { name: format!("{l}.weight"), shape: vec![out, inp], range: o..o + out * inp });
                v.push(ParamTensor {
                    name: format!("{l}.bias"),
                    shape: vec![out],
                    range: o + out * inp..o + out * inp + out,
                });
            }
        }
        v
    }

    /// y = net(x) for `rows` samples; activations kept in `ws` (rows 0..rows).
    pub fn forward<T: Float>(&self, p: &[T], x: &[T], ws: &mut Workspace<T>, rows: usize) {
        debug_assert!(rows <= ws.rows);
        for l in 0..self.layers.len() {
            let (before, after) = ws.acts.split_at_mut(l);
            let (wi, wo) = (self.width_in(l), self.width_out(l));
            let inp = if l == 0 { &x[..rows * wi] } else { &before[l - 1][..rows * wi] };
            let y = &mut after[0][..rows * wo];
            match self.layers[l] {
                LayerSpec::Linear { .. } => self.linear(l, p).forward(rows, inp, y),
                LayerSpec::Act(a) => a.forward(inp, y),
            }
        }
    }

    /// The network's output after `forward`.
    pub fn output_of<'w, T: Float>(&self, ws: &'w Workspace<T>, rows: Range<usize>) -> &'w [T] {
        let w = self.output();
        &ws.acts[self.layers.len() - 1][rows.start * w..rows.end * w]
    }

    /// Back-propagates `dy` (the adjoint of the output, rows `rows` of the
    /// last forward; `x` is the input of those rows).  Writes the parameter
    /// gradient into `grads` (length n_params) and dL/dx into `dx`, when given.
    #[allow(clippy::too_many_arguments)]
    pub fn backward<T: Float>(
        &self,
        p: &[T],
        x: &[T],
        ws: &mut Workspace<T>,
        rows: Range<usize>,
        dy: &[T],
        mut grads: Option<&mut [T]>,
        dx: Option<&mut [T]>,
    ) {
        let n = rows.len();
        ws.ga[..n * self.output()].copy_from_slice(&dy[..n * self.output()]);
        for l in (0..self.layers.len()).rev() {
            let (wi, wo) = (self.width_in(l), self.width_out(l));
            let inp = if l == 0 { &x[..n * wi] } else { &ws.acts[l - 1][rows.start * wi..rows.end * wi] };
            // dL/d(input) only where a parameter or the caller needs it.
            let need_dx = dx.is_some() || self.first_linear.is_some_and(|f| f < l);
            let g = &ws.ga[..n * wo];
            let gx = &mut ws.gb[..n * wi];
            match self.layers[l] {
                LayerSpec::Linear { out } => {
                    let lin = self.linear(l, p);
                    let pg = grads.as_deref_mut().map(|gr| {
                        let o = self.offsets[l];
                        gr[o..o + out * wi + out].split_at_mut(out * wi)
                    });
                    lin.backward(n, inp, g, pg, need_dx.then_some(gx));
                }
                LayerSpec::Act(a) => {
                    if need_dx {
                        a.backward(inp, g, gx)
                    }
                }
            }
            std::mem::swap(&mut ws.ga, &mut ws.gb);
        }
        if let Some(dx) = dx {
            dx[..n * self.input].copy_from_slice(&ws.ga[..n * self.input]);
        }
    }

    /// Tangents of every layer's output along the parameter direction `dir`,
    /// for rows `rows` of the last forward; `xdot` is the input's tangent
    /// (None: zero).  Stored in `ws` at rows 0..rows.len().
    pub fn jvp<T: Float>(
        &self,
        p: &[T],
        dir: &[T],
        x: &[T],
        xdot: Option<&[T]>,
        ws: &mut Workspace<T>,
        rows: Range<usize>,
    ) {
        let n = rows.len();
        for l in 0..self.layers.len() {
            let (wi, wo) = (self.width_in(l), self.width_out(l));
            let inp = if l == 0 { &x[..n * wi] } else { &ws.acts[l - 1][rows.start * wi..rows.end * wi] };
            let (before, after) = ws.tans.split_at_mut(l);
            let tin = input_tangent(l, xdot, before, &ws.tan_some, n * wi);
            let tout = &mut after[0][..n * wo];
            let some = match self.layers[l] {
                LayerSpec::Linear { .. } => {
                    self.linear(l, p).jvp(&self.linear(l, dir), n, inp, tin, tout);
                    true
                }
                LayerSpec::Act(a) => match tin {
                    Some(t) => {
                        a.jvp(inp, t, tout);
                        true
                    }
                    None => false,
                },
            };
            ws.tan_some[l] = some;
        }
    }

    /// The network's output tangent after `jvp` (None: identically zero).
    pub fn tangent_of<'w, T: Float>(&self, ws: &'w Workspace<T>, n: usize) -> Option<&'w [T]> {
        let l = self.layers.len() - 1;
        ws.tan_some[l].then(|| &ws.tans[l][..n * self.output()])
    }

    /// The adjoint of the jvp pass (after `forward` and `jvp` on the same
    /// rows): given the output adjoints (ȳ, ẏ̄), writes x̄ and, when asked for
    /// and the input tangent is not zero, ẋ̄.
    #[allow(clippy::too_many_arguments)]
    pub fn jvp_backward<T: Float>(
        &self,
        p: &[T],
        dir: &[T],
        x: &[T],
        xdot: Option<&[T]>,
        ws: &mut Workspace<T>,
        rows: Range<usize>,
        ybar: &[T],
        ydotbar: &[T],
        xbar: &mut [T],
        xdotbar: Option<&mut [T]>,
    ) {
        let n = rows.len();
        let wl = self.output();
        ws.ga[..n * wl].copy_from_slice(&ybar[..n * wl]);
        ws.ta[..n * wl].copy_from_slice(&ydotbar[..n * wl]);
        for l in (0..self.layers.len()).rev() {
            let (wi, wo) = (self.width_in(l), self.width_out(l));
            let inp = if l == 0 { &x[..n * wi] } else { &ws.acts[l - 1][rows.start * wi..rows.end * wi] };
            let tin = input_tangent(l, xdot, &ws.tans, &ws.tan_some, n * wi);
            let out_some = ws.tan_some[l];
            let (yb, xb) = (&ws.ga[..n * wo], &mut ws.gb[..n * wi]);
            let (tb, xtb) = (&ws.ta[..n * wo], &mut ws.tb[..n * wi]);
            let want_tan = tin.is_some();
            match self.layers[l] {
                LayerSpec::Linear { .. } => {
                    let lin = self.linear(l, p);
                    lin.jvp_backward(&self.linear(l, dir), n, yb, tb, xb, want_tan.then_some(xtb));
                }
                LayerSpec::Act(a) => {
                    if out_some {
                        a.jvp_backward(inp, tin, yb, tb, xb, want_tan.then_some(xtb));
                    } else {
                        a.backward(inp, yb, xb);
                    }
                }
            }
            std::mem::swap(&mut ws.ga, &mut ws.gb);
            std::mem::swap(&mut ws.ta, &mut ws.tb);
        }
        xbar[..n * self.input].copy_from_slice(&ws.ga[..n * self.input]);
        if let Some(xdb) = xdotbar {
            if xdot.is_some() {
                xdb[..n * self.input].copy_from_slice(&ws.ta[..n * self.input]);
            } else {
                xdb[..n * self.input].fill(T::ZERO);
            }
        }
    }
}

/// The tangent of layer `l`'s input (its first `len` values): the network's
/// input tangent for layer 0, else the previous layer's output tangent; None
/// where it is identically zero.
fn input_tangent<'a, T>(
    l: usize,
    xdot: Option<&'a [T]>,
    tans: &'a [Vec<T>],
    some: &[bool],
    len: usize,
) -> Option<&'a [T]> {
    if l == 0 {
        xdot.map(|t| &t[..len])
    } else {
        some[l - 1].then(|| &tans[l - 1][..len])
    }
}

/// Buffers for the passes over one chunk of up to `rows` samples, allocated
/// once and reused every step.
#[derive(Debug, Clone)]
pub struct Workspace<T> {
    pub rows: usize,
    /// Output of each layer.
    acts: Vec<Vec<T>>,
    /// Tangent of each layer's output (valid where `tan_some`).
    tans: Vec<Vec<T>>,
    tan_some: Vec<bool>,
    /// Ping-pong buffers for adjoints (ga/gb) and tangent adjoints (ta/tb).
    ga: Vec<T>,
    gb: Vec<T>,
    ta: Vec<T>,
    tb: Vec<T>,
}

impl<T: Float> Workspace<T> {
    pub fn new(net: &Network, rows: usize) -> Self {
        let mw = net.max_width() * rows;
        Workspace {
            rows,
            acts: (0..net.layers.len()).map(|l| vec![T::ZERO; rows * net.width_out(l)]).collect(),
            tans: (0..net.layers.len()).map(|l| vec![T::ZERO; rows * net.width_out(l)]).collect(),
            tan_some: vec![false; net.layers.len()],
            ga: vec![T::ZERO; mw],
            gb: vec![T::ZERO; mw],
            ta: vec![T::ZERO; mw],
            tb: vec![T::ZERO; mw],
        }
    }
}
