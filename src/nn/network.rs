//! A sequential network: its layers, the layout of its parameters in one flat
//! vector (PyTorch's order and shapes), and the four passes over all layers
//! for one chunk of samples.

use std::ops::Range;

use super::conv::{self, Conv, ConvGeom};
use super::float::Float;
use super::layer::{LayerSpec, Linear};
use super::shape::Shape;

/// One named parameter tensor inside the flat vector.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamTensor {
    /// PyTorch's name inside `nn.Sequential`, e.g. `0.weight`.
    pub name: String,
    pub shape: Vec<usize>,
    pub range: Range<usize>,
}

/// A layer's geometry, fixed by the shape of its input.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Geom {
    /// No parameters (activations, reshape, flatten).
    Plain,
    Linear,
    /// A convolution (`conv::Conv`'s geometry; transposed: `conv_t`, whose
    /// geometry is the ordinary convolution from its output to its input).
    Conv {
        g: ConvGeom,
        transposed: bool,
    },
}

#[derive(Debug, Clone)]
pub struct Network {
    pub layers: Vec<LayerSpec>,
    /// Input width (values per sample).
    pub input: usize,
    /// The shape of one input sample.
    pub input_shape: Shape,
    /// Output shape of each layer.
    shapes: Vec<Shape>,
    geoms: Vec<Geom>,
    /// Offset of each layer's weight (its bias follows it).
    offsets: Vec<usize>,
    pub n_params: usize,
    /// Index of the first layer with parameters (no input gradient is needed below it).
    first_linear: Option<usize>,
}

/// The most values one layer may give per sample (2^24), and the most
/// im2row values a convolution may need per sample (2^28).
pub const MAX_VALUES: usize = 1 << 24;
pub const MAX_SCRATCH: usize = 1 << 28;
/// The most parameters a network may have (2^28: 1 GiB of f32).
pub const MAX_PARAMS: usize = 1 << 28;

impl Network {
    /// A network of `layers` on flat inputs of `input` features (an MLP);
    /// panics if a layer does not fit (use `build` for a config's layers).
    pub fn new(layers: Vec<LayerSpec>, input: usize) -> Network {
        Network::build("network", layers, Shape::flat(input)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A network of `layers` on inputs of shape `input`.  A layer that does
    /// not fit its input is an error naming the network (`name`), the
    /// layer's index and text, its input shape and what it needs.
    pub fn build(name: &str, layers: Vec<LayerSpec>, input: Shape) -> Result<Network, String> {
        let mut shapes = Vec::with_capacity(layers.len());
        let mut geoms = Vec::with_capacity(layers.len());
        let mut offsets = Vec::with_capacity(layers.len());
        let (mut sh, mut n) = (input, 0usize);
        for (l, spec) in layers.iter().enumerate() {
            let fail = |why: String| format!("{name} layer {l} \"{}\": input {}: {why}", spec.describe(), sh);
            offsets.push(n);
            // The layer's parameters (weights and bias) first, in u128, so
            // that no product below overflows.
            let weights: u128 = match *spec {
                LayerSpec::Linear { out } => out as u128 * (sh.len() as u128 + 1),
                LayerSpec::Conv { out, k, .. } | LayerSpec::ConvT { out, k, .. } => {
                    out as u128 * (sh.c as u128 * k as u128 * k as u128 + 1)
                }
                _ => 0,
            };
            if weights > MAX_PARAMS as u128 {
                return Err(fail(format!("{weights} parameters is more than a network may have ({MAX_PARAMS})")));
            }
            let (out, geom) = match *spec {
                LayerSpec::Linear { out } => {
                    if !sh.is_flat() {
                        return Err(fail(format!(
                            "{} features are not flat; put \"flatten\" before this layer",
                            sh.len()
                        )));
                    }
                    (Shape::flat(out), Geom::Linear)
                }
                LayerSpec::Conv { out, k, s, p } => {
                    let g = ConvGeom::new(sh.c, sh.h, sh.w, out, k, s, p).map_err(fail)?;
                    (Shape::new(out, g.oh, g.ow), Geom::Conv { g, transposed: false })
                }
                LayerSpec::ConvT { out, k, s, p } => {
                    let g = conv::convt_geom(sh.c, sh.h, sh.w, out, k, s, p).map_err(fail)?;
                    (Shape::new(out, g.h, g.w), Geom::Conv { g, transposed: true })
                }
                LayerSpec::Reshape(to) => {
                    if to.len() != sh.len() {
                        return Err(fail(format!(
                            "{} features cannot be seen as {} = {}; the previous layer must give {} features",
                            sh.len(),
                            to,
                            to.len(),
                            to.len()
                        )));
                    }
                    (to, Geom::Plain)
                }
                LayerSpec::Flatten => (Shape::flat(sh.len()), Geom::Plain),
                LayerSpec::Act(_) => (sh, Geom::Plain),
            };
            n = n.checked_add(weights as usize).filter(|&n| n <= MAX_PARAMS).ok_or_else(|| {
                fail(format!("the network has more than {MAX_PARAMS} parameters; make its layers narrower"))
            })?;
            if out.c as u128 * out.h as u128 * out.w as u128 > MAX_VALUES as u128 {
                return Err(fail(format!(
                    "its output {} is more than {MAX_VALUES} values per sample; make it smaller",
                    out
                )));
            }
            if let Geom::Conv { g, .. } = geom {
                if g.scratch_len(1) > MAX_SCRATCH {
                    return Err(fail(format!(
                        "it needs {} im2row values per sample, more than {MAX_SCRATCH}; use a smaller kernel or fewer channels",
                        g.scratch_len(1)
                    )));
                }
            }
            sh = out;
            shapes.push(out);
            geoms.push(geom);
        }
        let first_linear = layers.iter().position(|l| l.has_params());
        Ok(Network {
            layers,
            input: input.len(),
            input_shape: input,
            shapes,
            geoms,
            offsets,
            n_params: n,
            first_linear,
        })
    }

    pub fn output(&self) -> usize {
        self.output_shape().len()
    }

    /// The shape of one output sample.
    pub fn output_shape(&self) -> Shape {
        *self.shapes.last().unwrap_or(&self.input_shape)
    }

    /// The shape of layer `l`'s input.
    pub fn shape_in(&self, l: usize) -> Shape {
        if l == 0 {
            self.input_shape
        } else {
            self.shapes[l - 1]
        }
    }

    pub fn width_in(&self, l: usize) -> usize {
        self.shape_in(l).len()
    }

    pub fn width_out(&self, l: usize) -> usize {
        self.shapes[l].len()
    }

    pub fn max_width(&self) -> usize {
        self.shapes.iter().map(|s| s.len()).chain([self.input]).max().unwrap_or(1)
    }

    /// Where layer `l`'s parameters start in the flat vector (its weight,
    /// then its bias).
    pub fn offset(&self, l: usize) -> usize {
        self.offsets[l]
    }

    /// The first layer with parameters (below it no input gradient is needed).
    pub fn first_linear(&self) -> Option<usize> {
        self.first_linear
    }

    /// Whether every layer is Linear or an activation (what the CUDA backend runs today).
    pub fn is_mlp(&self) -> bool {
        self.layers.iter().all(|l| matches!(l, LayerSpec::Linear { .. } | LayerSpec::Act(_)))
    }

    /// Layer `l`'s (weight, bias) in the flat vector `p` (a layer with parameters).
    fn weight_bias<'a, T>(&self, l: usize, p: &'a [T]) -> (&'a [T], &'a [T]) {
        let (o, wl, bl) = self.param_lens(l);
        (&p[o..o + wl], &p[o + wl..o + wl + bl])
    }

    /// (offset, weight length, bias length) of layer `l`.
    fn param_lens(&self, l: usize) -> (usize, usize, usize) {
        let o = self.offsets[l];
        match (self.geoms[l], self.layers[l]) {
            (Geom::Linear, LayerSpec::Linear { out }) => (o, out * self.width_in(l), out),
            (Geom::Conv { g, transposed }, _) => (o, g.weight_len(), if transposed { g.ci } else { g.co }),
            _ => (o, 0, 0),
        }
    }

    /// Layer `l`'s view of the flat vector `p` (a Linear layer only).
    pub fn linear<'a, T: Float>(&self, l: usize, p: &'a [T]) -> Linear<'a, T> {
        let (w, b) = self.weight_bias(l, p);
        Linear { w, b, inp: self.width_in(l), out: self.width_out(l) }
    }

    /// Layer `l`'s parameters as a layer with its four passes.
    fn op<'a, T: Float>(&self, l: usize, p: &'a [T]) -> Op<'a, T> {
        let (w, b) = self.weight_bias(l, p);
        match self.geoms[l] {
            Geom::Plain => Op::Plain,
            Geom::Linear => Op::Linear(Linear { w, b, inp: self.width_in(l), out: self.width_out(l) }),
            Geom::Conv { g, transposed } => Op::Conv(Conv { w, b, g, transposed }),
        }
    }

    /// The parameter tensors in PyTorch's `nn.Sequential` naming and shapes
    /// (Linear `[out, in]`, Conv2d `[out, in, k, k]`, ConvTranspose2d `[in, out, k, k]`).
    pub fn tensors(&self) -> Vec<ParamTensor> {
        let mut v = Vec::new();
        for l in 0..self.layers.len() {
            let shape = match self.geoms[l] {
                Geom::Plain => continue,
                Geom::Linear => vec![self.width_out(l), self.width_in(l)],
                Geom::Conv { g, .. } => vec![g.co, g.ci, g.k, g.k],
            };
            let (o, wl, bl) = self.param_lens(l);
            v.push(ParamTensor { name: format!("{l}.weight"), shape, range: o..o + wl });
            v.push(ParamTensor { name: format!("{l}.bias"), shape: vec![bl], range: o + wl..o + wl + bl });
        }
        v
    }

    /// Multiply-adds of layer `l`'s product with its weight for one sample
    /// (0 for a layer without parameters): every pass of a layer with
    /// parameters is a few such products.
    pub fn macs(&self, l: usize) -> u64 {
        match self.geoms[l] {
            Geom::Plain => 0,
            Geom::Linear => (self.width_in(l) * self.width_out(l)) as u64,
            Geom::Conv { g, .. } => (g.weight_len() * g.oh * g.ow) as u64,
        }
    }

    /// The scratch one pass over `rows` samples needs (the convolutions' im2col buffers).
    pub fn scratch_len(&self, rows: usize) -> usize {
        self.geoms
            .iter()
            .map(|g| match g {
                Geom::Conv { g, .. } => g.scratch_len(rows),
                _ => 0,
            })
            .max()
            .unwrap_or(0)
    }

    /// y = net(x) for `rows` samples; activations kept in `ws` (rows 0..rows).
    pub fn forward<T: Float>(&self, p: &[T], x: &[T], ws: &mut Workspace<T>, rows: usize) {
        debug_assert!(rows <= ws.rows);
        for l in 0..self.layers.len() {
            let (before, after) = ws.acts.split_at_mut(l);
            let (wi, wo) = (self.width_in(l), self.width_out(l));
            let inp = if l == 0 { &x[..rows * wi] } else { &before[l - 1][..rows * wi] };
            let y = &mut after[0][..rows * wo];
            match (self.op(l, p), self.layers[l]) {
                (Op::Linear(lin), _) => lin.forward(rows, inp, y),
                (Op::Conv(c), _) => c.forward(rows, inp, y, &mut ws.scratch),
                (Op::Plain, LayerSpec::Act(a)) => a.forward(inp, y),
                (Op::Plain, _) => y.copy_from_slice(inp),
            }
        }
    }

    /// The network's output after `forward`.
    pub fn output_of<'w, T: Float>(&self, ws: &'w Workspace<T>, rows: Range<usize>) -> &'w [T] {
        let w = self.output();
        &ws.acts[self.layers.len() - 1][rows.start * w..rows.end * w]
    }

    /// The output of layer `l` after `forward` (rows `rows`), e.g. a
    /// classifier's penultimate features.
    pub fn layer_output<'w, T: Float>(&self, ws: &'w Workspace<T>, l: usize, rows: Range<usize>) -> &'w [T] {
        let w = self.width_out(l);
        &ws.acts[l][rows.start * w..rows.end * w]
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
            let (o, wl, bl) = self.param_lens(l);
            let pg = grads.as_deref_mut().filter(|_| wl > 0).map(|gr| gr[o..o + wl + bl].split_at_mut(wl));
            let gx = need_dx.then_some(gx);
            match (self.op(l, p), self.layers[l]) {
                (Op::Linear(lin), _) => lin.backward(n, inp, g, pg, gx),
                (Op::Conv(c), _) => c.backward(n, inp, g, pg, gx, &mut ws.scratch),
                (Op::Plain, LayerSpec::Act(a)) => {
                    if let Some(gx) = gx {
                        a.backward(inp, g, gx)
                    }
                }
                (Op::Plain, _) => {
                    if let Some(gx) = gx {
                        gx.copy_from_slice(g)
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
            let some = match (self.op(l, p), self.op(l, dir), self.layers[l]) {
                (Op::Linear(lin), Op::Linear(d), _) => {
                    lin.jvp(&d, n, inp, tin, tout);
                    true
                }
                (Op::Conv(c), Op::Conv(d), _) => {
                    c.jvp(&d, n, inp, tin, tout, &mut ws.scratch);
                    true
                }
                (_, _, spec) => match tin {
                    Some(t) => {
                        match spec {
                            LayerSpec::Act(a) => a.jvp(inp, t, tout),
                            _ => tout.copy_from_slice(t),
                        }
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
            let want_tan = tin.is_some().then_some(xtb);
            let sc = &mut ws.scratch;
            match (self.op(l, p), self.op(l, dir), self.layers[l]) {
                (Op::Linear(lin), Op::Linear(d), _) => lin.jvp_backward(&d, n, yb, tb, xb, want_tan),
                (Op::Conv(c), Op::Conv(d), _) => c.jvp_backward(&d, n, yb, tb, xb, want_tan, sc),
                (_, _, LayerSpec::Act(a)) => {
                    if out_some {
                        a.jvp_backward(inp, tin, yb, tb, xb, want_tan);
                    } else {
                        a.backward(inp, yb, xb);
                    }
                }
                (_, _, _) => {
                    xb.copy_from_slice(yb);
                    if let Some(xtb) = want_tan {
                        xtb.copy_from_slice(tb);
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

/// A layer's parameters with its passes.
enum Op<'a, T> {
    Plain,
    Linear(Linear<'a, T>),
    /// Conv2d or ConvTranspose2d.
    Conv(Conv<'a, T>),
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
    /// The convolutions' im2col buffers.
    scratch: Vec<T>,
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
            scratch: vec![T::ZERO; net.scratch_len(rows)],
        }
    }
}
