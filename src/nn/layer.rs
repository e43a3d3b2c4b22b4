//! The layers and their four passes on one chunk of `rows` samples (row-major
//! `rows × width` buffers):
//!
//! * `forward`:      y = layer(x)
//! * `backward`:     given dL/dy, the parameter gradient and dL/dx
//! * `jvp`:          the tangent ẏ of y along a parameter direction v, given
//!   the input's tangent ẋ (None: ẋ = 0)
//! * `jvp_backward`: the adjoint of (x, ẋ) ↦ (y, ẏ): given (ȳ, ẏ̄), returns
//!   x̄ = ∂y/∂x ᵀ ȳ + ∂ẏ/∂x ᵀ ẏ̄ and ẋ̄ = ∂ẏ/∂ẋ ᵀ ẏ̄ (v and the parameters fixed)
//!
//! For an elementwise activation y = σ(a): ẏ = σ'(a) ȧ, so
//! ā = σ'(a) ȳ + σ''(a) ȧ ẏ̄ and ǡ = σ'(a) ẏ̄.  For Linear y = x Wᵀ + b and
//! direction (V, c): ẏ = ẋ Wᵀ + x Vᵀ + c, so x̄ = ȳ W + ẏ̄ V and ẋ̄ = ẏ̄ W.

use super::float::{matmul, Float, Mat};
use super::shape::Shape;

/// An elementwise activation with its first two derivatives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    Relu,
    LeakyRelu(f64),
    Tanh,
    Sigmoid,
    /// y = s·x (the discriminator's input scaling x/4).
    Scale(f64),
}

/// One layer of a sequential network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LayerSpec {
    /// A fully connected layer to `out` features (weight `[out, in]`, bias `[out]`) on a flat input.
    Linear { out: usize },
    /// PyTorch `Conv2d(in, out, k, s, p)`: weight `[out, in, k, k]`, bias `[out]`.
    Conv { out: usize, k: usize, s: usize, p: usize },
    /// PyTorch `ConvTranspose2d(in, out, k, s, p)`: weight `[in, out, k, k]`, bias `[out]`.
    ConvT { out: usize, k: usize, s: usize, p: usize },
    /// PyTorch `Unflatten(1, (c, h, w))`: a flat input of c·h·w features seen as c×h×w.
    Reshape(Shape),
    /// PyTorch `Flatten()`: c×h×w seen as c·h·w features.
    Flatten,
    /// An elementwise activation, on any shape.
    Act(Activation),
}

/// The largest number a layer takes (channels, widths, kernel sizes,
/// strides, paddings, reshape dimensions): 2^24.
pub const MAX_DIM: usize = 1 << 24;

impl LayerSpec {
    /// Parses `"linear 128"`, `"conv 64 4 2 1"`, `"conv_t 1 4 2 1"`, `"reshape 128 7 7"`, `"flatten"`,
    /// `"relu"`, `"leaky_relu 0.2"`, `"tanh"`, `"sigmoid"`, `"scale 0.25"`.
    pub fn parse(s: &str) -> Result<LayerSpec, String> {
        let words: Vec<&str> = s.split_whitespace().collect();
        let name = words.first().copied().unwrap_or("");
        let args = words.get(1..).unwrap_or(&[]);
        let count = |n: usize, example: &str| -> Result<(), String> {
            if args.len() == n {
                Ok(())
            } else {
                Err(format!("layer `{s}`: `{name}` takes {n} argument(s), got {}; e.g. \"{example}\"", args.len()))
            }
        };
        let int = |a: &str, what: &str, min: usize| -> Result<usize, String> {
            a.parse::<usize>()
                .ok()
                .filter(|&v| v >= min && v <= MAX_DIM)
                .ok_or_else(|| format!("layer `{s}`: {what} `{a}` must be an integer in {min}..={MAX_DIM}"))
        };
        let num = |what: &str| -> Result<f64, String> {
            count(1, &format!("{name} 0.25")).map_err(|_| format!("layer `{s}` needs {what}, e.g. \"{name} 0.25\""))?;
            let a = args[0];
            a.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("layer `{s}`: `{a}` is not a finite number"))
        };
        let none = || count(0, name);
        let conv = |example: &str| -> Result<(usize, usize, usize, usize), String> {
            count(4, example)?;
            Ok((
                int(args[0], "channels", 1)?,
                int(args[1], "kernel size", 1)?,
                int(args[2], "stride", 1)?,
                int(args[3], "padding", 0)?,
            ))
        };
        Ok(match name {
            "linear" => {
                count(1, "linear 128").map_err(|_| format!("layer `{s}` needs a width, e.g. \"linear 128\""))?;
                let out = int(args[0], "width", 1)?;
                LayerSpec::Linear { out }
            }
            "conv" => {
                let (out, k, st, p) = conv("conv 64 4 2 1")?;
                LayerSpec::Conv { out, k, s: st, p }
            }
            "conv_t" => {
                let (out, k, st, p) = conv("conv_t 64 4 2 1")?;
                LayerSpec::ConvT { out, k, s: st, p }
            }
            "reshape" => {
                count(3, "reshape 128 7 7")?;
                let d = |i: usize, what: &str| int(args[i], what, 1);
                let (c, h, w) = (d(0, "channels")?, d(1, "height")?, d(2, "width")?);
                if (c as u128) * (h as u128) * (w as u128) > MAX_DIM as u128 {
                    return Err(format!("layer `{s}`: {c}×{h}×{w} is more than {MAX_DIM} values per sample"));
                }
                LayerSpec::Reshape(Shape::new(c, h, w))
            }
            "flatten" => none().map(|_| LayerSpec::Flatten)?,
            "relu" => none().map(|_| LayerSpec::Act(Activation::Relu))?,
            "tanh" => none().map(|_| LayerSpec::Act(Activation::Tanh))?,
            "sigmoid" => none().map(|_| LayerSpec::Act(Activation::Sigmoid))?,
            "leaky_relu" => LayerSpec::Act(Activation::LeakyRelu(num("a negative slope")?)),
            "scale" => LayerSpec::Act(Activation::Scale(num("a factor")?)),
            _ => {
                return Err(format!(
                    "unknown layer `{s}`; expected one of: linear N, conv C K S P, conv_t C K S P, reshape C H W, \
                     flatten, relu, leaky_relu S, tanh, sigmoid, scale S"
                ))
            }
        })
    }

    pub fn parse_all(layers: &[String]) -> Result<Vec<LayerSpec>, String> {
        if layers.is_empty() {
            return Err("no layers; give at least one, e.g. [\"linear 1\"]".into());
        }
        layers.iter().map(|s| LayerSpec::parse(s)).collect()
    }

    /// Whether the layer has parameters (a weight and a bias).
    pub fn has_params(&self) -> bool {
        matches!(self, LayerSpec::Linear { .. } | LayerSpec::Conv { .. } | LayerSpec::ConvT { .. })
    }

    /// The layer's name in a config (and PyTorch's module for it).
    pub fn describe(&self) -> String {
        match self {
            LayerSpec::Linear { out } => format!("linear {out}"),
            LayerSpec::Conv { out, k, s, p } => format!("conv {out} {k} {s} {p}"),
            LayerSpec::ConvT { out, k, s, p } => format!("conv_t {out} {k} {s} {p}"),
            LayerSpec::Reshape(sh) => format!("reshape {} {} {}", sh.c, sh.h, sh.w),
            LayerSpec::Flatten => "flatten".into(),
            LayerSpec::Act(Activation::Relu) => "relu".into(),
            LayerSpec::Act(Activation::LeakyRelu(s)) => format!("leaky_relu {s}"),
            LayerSpec::Act(Activation::Tanh) => "tanh".into(),
            LayerSpec::Act(Activation::Sigmoid) => "sigmoid".into(),
            LayerSpec::Act(Activation::Scale(s)) => format!("scale {s}"),
        }
    }
}

impl Activation {
    /// (σ(a), σ'(a), σ''(a)), using y = σ(a) where that is cheaper.
    #[inline]
    pub fn eval<T: Float>(self, a: T) -> (T, T, T) {
        let zero = T::ZERO;
        let one = T::ONE;
        match self {
            Activation::Relu => {
                if a > zero {
                    (a, one, zero)
                } else {
                    (zero, zero, zero)
                }
            }
            Activation::LeakyRelu(s) => {
                let s = T::from_f64(s);
                if a > zero {
                    (a, one, zero)
                } else {
                    (s * a, s, zero)
                }
            }
            Activation::Tanh => {
                let y = a.tanh();
                let d = one - y * y;
                (y, d, T::from_f64(-2.0) * y * d)
            }
            Activation::Sigmoid => {
                let y = sigmoid(a);
                let d = y * (one - y);
                (y, d, d * (one - T::from_f64(2.0) * y))
            }
            Activation::Scale(s) => {
                let s = T::from_f64(s);
                (s * a, s, zero)
            }
        }
    }

    /// Whether σ'' is identically zero (then jvp_backward's ā needs no tangent).
    pub fn is_piecewise_linear(self) -> bool {
        matches!(self, Activation::Relu | Activation::LeakyRelu(_) | Activation::Scale(_))
    }

    pub fn forward<T: Float>(self, a: &[T], y: &mut [T]) {
        match self {
            Activation::Relu => {
                for (y, &a) in y.iter_mut().zip(a) {
                    *y = if a > T::ZERO { a } else { T::ZERO };
                }
            }
            _ => {
                for (y, &a) in y.iter_mut().zip(a) {
                    *y = self.eval(a).0;
                }
            }
        }
    }

    /// dL/da = σ'(a) dL/dy.
    pub fn backward<T: Float>(self, a: &[T], dy: &[T], da: &mut [T]) {
        match self {
            Activation::Relu => {
                for ((da, &a), &dy) in da.iter_mut().zip(a).zip(dy) {
                    *da = if a > T::ZERO { dy } else { T::ZERO };
                }
            }
            _ => {
                for ((da, &a), &dy) in da.iter_mut().zip(a).zip(dy) {
                    *da = self.eval(a).1 * dy;
                }
            }
        }
    }

    /// ẏ = σ'(a) ȧ.
    pub fn jvp<T: Float>(self, a: &[T], adot: &[T], ydot: &mut [T]) {
        self.backward(a, adot, ydot)
    }

    /// ā = σ'(a) ȳ + σ''(a) ȧ ẏ̄ (ȧ = 0 when None); ǡ = σ'(a) ẏ̄ when asked for.
    pub fn jvp_backward<T: Float>(
        self,
        a: &[T],
        adot: Option<&[T]>,
        ybar: &[T],
        ydotbar: &[T],
        abar: &mut [T],
        adotbar: Option<&mut [T]>,
    ) {
        match adot {
            Some(adot) if !self.is_piecewise_linear() => {
                for i in 0..a.len() {
                    let (_, d1, d2) = self.eval(a[i]);
                    abar[i] = d1 * ybar[i] + d2 * adot[i] * ydotbar[i];
                }
            }
            _ => self.backward(a, ybar, abar),
        }
        if let Some(adotbar) = adotbar {
            self.backward(a, ydotbar, adotbar);
        }
    }
}

#[inline]
pub fn sigmoid<T: Float>(t: T) -> T {
    // Stable for both signs: never exponentiates a large positive number.
    if t >= T::ZERO {
        T::ONE / (T::ONE + (-t).exp())
    } else {
        let e = t.exp();
        e / (T::ONE + e)
    }
}

/// A linear layer's view of its parameters: weight `[out, inp]`, bias `[out]`.
#[derive(Clone, Copy)]
pub struct Linear<'a, T> {
    pub w: &'a [T],
    pub b: &'a [T],
    pub inp: usize,
    pub out: usize,
}

impl<'a, T: Float> Linear<'a, T> {
    /// y = x Wᵀ + b.
    pub fn forward(&self, rows: usize, x: &[T], y: &mut [T]) {
        for r in y[..rows * self.out].chunks_exact_mut(self.out) {
            r.copy_from_slice(self.b);
        }
        matmul(Mat::n(x, rows, self.inp), Mat::t(self.w, self.inp, self.out), y, true);
    }

    /// dW = dyᵀ x, db = Σ_rows dy (written, not accumulated); dx = dy W when asked for.
    pub fn backward(&self, rows: usize, x: &[T], dy: &[T], grads: Option<(&mut [T], &mut [T])>, dx: Option<&mut [T]>) {
        if let Some((dw, db)) = grads {
            matmul(Mat::t(dy, self.out, rows), Mat::n(x, rows, self.inp), dw, false);
            column_sums(rows, self.out, dy, db);
        }
        if let Some(dx) = dx {
            matmul(Mat::n(dy, rows, self.out), Mat::n(self.w, self.out, self.inp), dx, false);
        }
    }

    /// ẏ = ẋ Wᵀ + x Vᵀ + c for the direction `dir` = (V, c).
    pub fn jvp(&self, dir: &Linear<T>, rows: usize, x: &[T], xdot: Option<&[T]>, ydot: &mut [T]) {
        for r in ydot[..rows * self.out].chunks_exact_mut(self.out) {
            r.copy_from_slice(dir.b);
        }
        matmul(Mat::n(x, rows, self.inp), Mat::t(dir.w, self.inp, self.out), ydot, true);
        if let Some(xdot) = xdot {
            matmul(Mat::n(xdot, rows, self.inp), Mat::t(self.w, self.inp, self.out), ydot, true);
        }
    }

    /// x̄ = ȳ W + ẏ̄ V; ẋ̄ = ẏ̄ W when asked for.
    pub fn jvp_backward(
        &self,
        dir: &Linear<T>,
        rows: usize,
        ybar: &[T],
        ydotbar: &[T],
        xbar: &mut [T],
        xdotbar: Option<&mut [T]>,
    ) {
        matmul(Mat::n(ybar, rows, self.out), Mat::n(self.w, self.out, self.inp), xbar, false);
        matmul(Mat::n(ydotbar, rows, self.out), Mat::n(dir.w, self.out, self.inp), xbar, true);
        if let Some(xdotbar) = xdotbar {
            matmul(Mat::n(ydotbar, rows, self.out), Mat::n(self.w, self.out, self.inp), xdotbar, false);
        }
    }
}

/// out[j] = Σ_r m[r, j] for a row-major `rows × cols` matrix.
pub fn column_sums<T: Float>(rows: usize, cols: usize, m: &[T], out: &mut [T]) {
    out[..cols].fill(T::ZERO);
    for r in m[..rows * cols].chunks_exact(cols) {
        for (o, &v) in out.iter_mut().zip(r) {
            *o += v;
        }
    }
}
