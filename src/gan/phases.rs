//! The two phases of a training step on one chunk of the minibatch, on the
//! CPU (generic over f32 and f64).  A chunk's results are partial sums that
//! the coordinator adds in chunk order (see `PartialLayout`).
//!
//! Phase 1 (from the current parameters): G forward; D forward on the real
//! and fake samples; V's terms; grad_D V by one D backward; and, when eta = 0,
//! grad_G of the generator's loss.
//!
//! Phase 2 (eta > 0, given v = grad_D V of the whole minibatch): the
//! regularizer's generator gradient.  With h(x) = -f'(-D(x)) · Ḋ_v(x), the
//! generator's adjoint at a fake sample x is
//!
//!   x̄ = [ ℓ'(D) + 2η f''(-D) Ḋ_v ] ∂D/∂x  +  [ -2η f'(-D) ] ∂Ḋ_v/∂x   (per sample, / B)
//!
//! where ℓ is the generator's loss per sample: one jvp pass and one
//! jvp_backward pass through D give x̄, and one backward pass through G the
//! whole generator gradient (no double backprop, no finite differences).

use std::ops::Range;

use serde::Serialize;

use super::objective::Objective;
use crate::nn::{Float, Network, Workspace};

/// Statistics every chunk reports, as sums over its samples (already divided
/// by the global batch where they are means).
pub mod stat {
    /// E f(D(x_real)), the real half of V.
    pub const V_REAL: usize = 0;
    /// E f(-D(G(z))), the fake half of V.
    pub const V_FAKE: usize = 1;
    /// The generator's loss without the regularizer.
    pub const GEN_LOSS: usize = 2;
    /// Fraction of real samples judged real (D > 0).
    pub const REAL_CORRECT: usize = 3;
    /// Fraction of fake samples judged fake (D < 0).
    pub const FAKE_CORRECT: usize = 4;
    pub const COUNT: usize = 5;
}

/// Where each quantity sits in one chunk's row of partial sums:
/// `[grad_D | grad_G | stats]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialLayout {
    pub n_disc: usize,
    pub n_gen: usize,
}

impl PartialLayout {
    pub fn stride(&self) -> usize {
        self.n_disc + self.n_gen + stat::COUNT
    }
    pub fn disc(&self) -> Range<usize> {
        0..self.n_disc
    }
    pub fn gen(&self) -> Range<usize> {
        self.n_disc..self.n_disc + self.n_gen
    }
    pub fn stats(&self) -> Range<usize> {
        self.n_disc + self.n_gen..self.stride()
    }
}

/// What every chunk's computation needs to know about the game.
#[derive(Debug, Clone)]
pub struct Game {
    pub gen: Network,
    pub disc: Network,
    pub objective: Objective,
    pub eta: f64,
    /// The global minibatch size (means divide by it).
    pub batch: usize,
}

impl Game {
    pub fn layout(&self) -> PartialLayout {
        PartialLayout { n_disc: self.disc.n_params, n_gen: self.gen.n_params }
    }
}

/// Floating-point operations of one training step, by network, layer and
/// pass (each multiply-add counts 2; activations, the seeds and the
/// optimizer are left out, as PyTorch's FlopCounterMode does): the rows of
/// docs/perf.md's table and `lockstep bench`'s GFLOP/s.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepFlops {
    /// (network, layer index, layer, pass, FLOPs).
    pub rows: Vec<(&'static str, usize, String, &'static str, f64)>,
    pub total: f64,
}

impl Game {
    /// The FLOPs of one simultaneous step on a minibatch of `batch`.
    pub fn step_flops(&self) -> StepFlops {
        let b = self.batch as f64;
        let mut rows = Vec::new();
        let mut add =
            |net: &'static str, n: &Network, pass: &'static str, samples: f64, products: &dyn Fn(usize) -> f64| {
                for l in 0..n.layers.len() {
                    let p = products(l);
                    if n.macs(l) > 0 && p > 0.0 {
                        rows.push((net, l, n.layers[l].describe(), pass, 2.0 * n.macs(l) as f64 * samples * p));
                    }
                }
            };
        let (g, d) = (&self.gen, &self.disc);
        // Below the first layer with parameters no input gradient is computed.
        let first = |n: &Network, l: usize| n.first_linear() == Some(l);
        add("generator", g, "forward", b, &|_| 1.0);
        add("discriminator", d, "forward (real and fake)", 2.0 * b, &|_| 1.0);
        add("discriminator", d, "backward (real and fake)", 2.0 * b, &|l| if first(d, l) { 1.0 } else { 2.0 });
        if self.eta == 0.0 && self.objective.gen_loss_is_value() {
            // The same backward pass gives the input's adjoint (`phase1`).
            add("discriminator", d, "backward to the input", 2.0 * b, &|l| if first(d, l) { 1.0 } else { 0.0 });
        } else if self.eta == 0.0 {
            add("discriminator", d, "backward to the fakes", b, &|_| 1.0);
        } else {
            // ẏ = conv(ẋ, W) + conv(x, V); x̄ = convᵀ(ȳ, W) + convᵀ(ẏ̄, V), ẋ̄ = convᵀ(ẏ̄, W).
            add("discriminator", d, "jvp", b, &|l| if first(d, l) { 1.0 } else { 2.0 });
            add("discriminator", d, "jvp_backward", b, &|l| if first(d, l) { 2.0 } else { 3.0 });
        }
        add("generator", g, "backward", b, &|l| if first(g, l) { 1.0 } else { 2.0 });
        let total = rows.iter().map(|r| r.4).sum();
        StepFlops { rows, total }
    }
}

/// The buffers of one chunk, allocated once.
#[derive(Debug, Clone)]
pub struct ChunkState<T> {
    pub rows: usize,
    /// Latents, rows × latent.
    pub z: Vec<T>,
    /// D's input: the real samples (rows 0..n) then the fake ones (n..2n).
    pub x: Vec<T>,
    gws: Workspace<T>,
    dws: Workspace<T>,
    /// Adjoints of D's output (2n), and of its tangent (n).
    ybar: Vec<T>,
    ydotbar: Vec<T>,
    /// The adjoint of D's input (phase 1 at eta 0: real rows then fake
    /// ones), whose fake rows are the generator's adjoint (phase 2: rows 0..n).
    xbar: Vec<T>,
}

impl<T: Float> ChunkState<T> {
    pub fn new(game: &Game, rows: usize) -> Self {
        let dim = game.disc.input;
        ChunkState {
            rows,
            z: vec![T::ZERO; rows * game.gen.input],
            x: vec![T::ZERO; 2 * rows * dim],
            gws: Workspace::new(&game.gen, rows),
            dws: Workspace::new(&game.disc, 2 * rows),
            ybar: vec![T::ZERO; 2 * rows],
            ydotbar: vec![T::ZERO; rows],
            xbar: vec![T::ZERO; 2 * rows * dim],
        }
    }

    /// The real samples (fill before phase 1).
    pub fn real_mut(&mut self) -> &mut [T] {
        let half = self.x.len() / 2;
        &mut self.x[..half]
    }

    /// The fake samples of the last phase 1.
    pub fn fake(&self) -> &[T] {
        &self.x[self.x.len() / 2..]
    }
}

/// Phase 1 on one chunk; `out` is the chunk's row of partial sums.  Writes
/// grad_D V and the stats; grad_G too when `with_gen_grad` (eta = 0).
pub fn phase1<T: Float>(game: &Game, pg: &[T], pd: &[T], st: &mut ChunkState<T>, out: &mut [T], with_gen_grad: bool) {
    let n = st.rows;
    let lay = game.layout();
    let dim = game.disc.input;
    let inv_b = T::ONE / T::from_f64(game.batch as f64);
    let obj = game.objective;

    game.gen.forward(pg, &st.z, &mut st.gws, n);
    let half = n * dim;
    st.x[half..].copy_from_slice(game.gen.output_of(&st.gws, 0..n));
    game.disc.forward(pd, &st.x, &mut st.dws, 2 * n);

    let d = game.disc.output_of(&st.dws, 0..2 * n);
    phase1_seeds(obj, d, inv_b, T::ONE, &mut st.ybar, &mut out[lay.stats()]);
    // For gan and wgan the generator's loss is V's fake half, so D's seeds
    // at the fakes are the generator's too: one backward gives grad_D V and
    // the generator's adjoint at the fakes.
    let shared = with_gen_grad && obj.gen_loss_is_value();
    let dx = shared.then_some(&mut st.xbar[..2 * half]);
    game.disc.backward(pd, &st.x, &mut st.dws, 0..2 * n, &st.ybar, Some(&mut out[lay.disc()]), dx);

    if with_gen_grad {
        if !shared {
            gen_loss_seeds(obj, game.disc.output_of(&st.dws, n..2 * n), inv_b, T::ONE, &mut st.ybar[..n]);
            let fake = &st.x[half..];
            let xbar = Some(&mut st.xbar[half..2 * half]);
            game.disc.backward(pd, fake, &mut st.dws, n..2 * n, &st.ybar[..n], None, xbar);
        }
        game.gen.backward(pg, &st.z, &mut st.gws, 0..n, &st.xbar[half..2 * half], Some(&mut out[lay.gen()]), None);
    }
}

/// Phase 2 on one chunk, after its phase 1: writes the generator gradient of
/// its loss plus eta * ||v||^2 into `out`'s grad_G, where v = grad_D V of the
/// whole minibatch (the discriminator's parameter direction).
pub fn phase2<T: Float>(game: &Game, pg: &[T], pd: &[T], v: &[T], st: &mut ChunkState<T>, out: &mut [T]) {
    let n = st.rows;
    let lay = game.layout();
    let half = n * game.disc.input;
    let inv_b = T::ONE / T::from_f64(game.batch as f64);
    let two_eta = T::from_f64(2.0 * game.eta);
    let obj = game.objective;

    let fake = &st.x[half..];
    game.disc.jvp(pd, v, fake, None, &mut st.dws, n..2 * n);
    let d = game.disc.output_of(&st.dws, n..2 * n);
    let ddot = game.disc.tangent_of(&st.dws, n).expect("D's output tangent along v");
    phase2_seeds(obj, two_eta, d, ddot, inv_b, T::ONE, &mut st.ybar[..n], &mut st.ydotbar);
    game.disc.jvp_backward(pd, v, fake, None, &mut st.dws, n..2 * n, &st.ybar[..n], &st.ydotbar, &mut st.xbar, None);
    game.gen.backward(pg, &st.z, &mut st.gws, 0..n, &st.xbar, Some(&mut out[lay.gen()]), None);
}

/// Phase 1's per-sample terms of one chunk, from D's outputs `d` at its n
/// real then n fake samples: the seeds of D's backward pass (ybar = f'(D)/B
/// at a real sample, -f'(-D)/B at a fake one, times `scale`) and the chunk's
/// statistics (sums / B) written to `stats`.  The CPU twin of
/// kernels/objective.cu's `phase1_seeds`.
pub fn phase1_seeds<T: Float>(obj: Objective, d: &[T], inv_b: T, scale: T, ybar: &mut [T], stats: &mut [T]) {
    let n = d.len() / 2;
    let mut s = [T::ZERO; stat::COUNT];
    for i in 0..n {
        let (dr, df) = (d[i], d[n + i]);
        ybar[i] = obj.df(dr) * inv_b * scale;
        ybar[n + i] = -obj.df(-df) * inv_b * scale;
        s[stat::V_REAL] += obj.f(dr);
        s[stat::V_FAKE] += obj.f(-df);
        s[stat::GEN_LOSS] += obj.gen_loss(df);
        if dr > T::ZERO {
            s[stat::REAL_CORRECT] += T::ONE;
        }
        if df < T::ZERO {
            s[stat::FAKE_CORRECT] += T::ONE;
        }
    }
    for (o, v) in stats.iter_mut().zip(s) {
        *o = v * inv_b;
    }
}

/// The seeds of the generator's loss at the fake samples (eta = 0):
/// ybar = gen_loss'(D)/B times `scale`.  Twin of `gen_loss_seeds`.
pub fn gen_loss_seeds<T: Float>(obj: Objective, d_fake: &[T], inv_b: T, scale: T, ybar: &mut [T]) {
    for (yb, &d) in ybar.iter_mut().zip(d_fake) {
        *yb = obj.gen_loss_grad(d) * inv_b * scale;
    }
}

/// Phase 2's seeds at the fake samples from D and its tangent along v:
/// ybar = (gen_loss'(D) + 2 eta f''(-D) Ddot)/B and ydotbar = -2 eta f'(-D)/B,
/// both times `scale`.  Twin of `phase2_seeds`.
#[allow(clippy::too_many_arguments)]
pub fn phase2_seeds<T: Float>(
    obj: Objective,
    two_eta: T,
    d_fake: &[T],
    ddot: &[T],
    inv_b: T,
    scale: T,
    ybar: &mut [T],
    ydotbar: &mut [T],
) {
    for i in 0..d_fake.len() {
        let d = d_fake[i];
        ybar[i] = (obj.gen_loss_grad(d) + two_eta * obj.d2f(-d) * ddot[i]) * inv_b * scale;
        ydotbar[i] = -two_eta * obj.df(-d) * inv_b * scale;
    }
}
