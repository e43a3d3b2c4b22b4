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
    /// A fully connected layer to `out` features (weight `[out, in]`, bias `[out]`).
    Linear {
        out: usize,
    },
    Act(Activation),
}

impl LayerSpec {
    /// Parses `"linear 128"`, `"relu"`, `"leaky_relu 0.2"`, `"tanh"`, `"sigmoid"`, `"scale 0.25"`.
    pub fn parse(s: &str) -> Result<LayerSpec, String> {
        let mut it = s.split_whitespace();
        let name = it.next().unwrap_or("");
        let arg = it.next();
        if it.next().is_some() {
            return Err(format!("layer `{s}`: too many words; expected e.g. \"linear 128\" or \"relu\""));
        }
        let num = |what: &str| -> Result<f64, String> {
            let a = arg.ok_or_else(|| format!("layer `{s}` needs {what}, e.g. \"{name} 0.25\""))?;
            a.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("layer `{s}`: `{a}` is not a finite number"))
        };
        let none = || -> Result<(), String> {
            match arg {
                Some(a) => Err(format!("layer `{s}`: `{name}` takes no argument, got `{a}`")),
                None => Ok(()),
            }
        };
        Ok(match name {
            "linear" => {
                let a = arg.ok_or_else(|| format!("layer `{s}` needs a width, e.g. \"linear 128\""))?;
                let out = a
                    .parse::<usize>()
                    .ok()
                    .filter(|&v| v > 0)
                    .ok_or_else(|| format!("layer `{s}`: width `{a}` must be a positive integer"))?;
                LayerSpec::Linear { out }
            }
            "relu" => none().map(|_| LayerSpec::Act(Activation::Relu))?,
            "tanh" => none().map(|_| LayerSpec::Act(Activation::Tanh))?,
            "sigmoid" => none().map(|_| LayerSpec::Act(Activation::Sigmoid))?,
            "leaky_relu" => LayerSpec::Act(Activation::LeakyRelu(num("a negative slope")?)),
            "scale" => LayerSpec::Act(Activation::Scale(num("a factor")?)),
            _ => {
                return Err(format!(
                    "unknown layer `{s}`; expected one of: linear N, relu, leaky_relu S, tanh, sigmoid, scale S"
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

    /// The width after all `layers`, starting from `input` features.
    pub fn output_width(layers: &[LayerSpec], input: usize) -> Result<usize, String> {
        Ok(layers.iter().fold(input, |w, l| match l {
            LayerSpec::Linear { out } => *out,
            LayerSpec::Act(_) => w,
        }))
    }

    /// The layer's name in a config (and PyTorch's module for it).
    pub fn describe(&self) -> String {
        match self {
            LayerSpec::Linear { out } => format!("linear {out}"),
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
