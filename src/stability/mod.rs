//! Local stability, measured: the leading eigenvalues of the Jacobian of the
//! game's joint gradient field at the iterate (DESIGN.md, "Local stability,
//! measured").  `field` is F and its exact products J·u (forward mode on
//! dual numbers) on a fixed minibatch,
//! `arnoldi` the eigenvalues from those products; [`estimate`] puts them
//! together into the report `lockstep stability` prints and a run with
//! `log.stability_every` logs (`live`).

pub mod arnoldi;
pub mod field;
pub mod live;

use std::time::Instant;

use serde::Serialize;

use crate::backend::Setup;
use crate::error::Result;
pub use arnoldi::{Options, Spectrum};
pub use field::{Field, Jacobian};

/// The learning rate of the discrete map θ + lr·F(θ): the optimizer's, or
/// the larger of the two networks' when they differ.
pub fn map_lr(cfg: &crate::config::Config) -> f64 {
    cfg.discriminator_lr().max(cfg.generator_lr())
}

/// One estimate: what `lockstep stability` prints as a JSON line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    pub step: u64,
    pub eta: f64,
    /// The k eigenvalues of largest real part, [re, im], rightmost first.
    pub rightmost: Vec<[f64; 2]>,
    /// The k of largest modulus, largest first.
    pub largest: Vec<[f64; 2]>,
    /// max Re λ over the computed eigenvalues: < 0 is locally stable.
    pub spectral_abscissa: f64,
    /// max |1 + lr·λ| over the computed eigenvalues: the spectral radius
    /// of the linearised map θ ← θ + lr·F(θ) (plain gradient steps at
    /// `lr`), < 1 is stable.
    pub discrete_radius: f64,
    pub lr: f64,
    /// ||J x − λ x|| (||x|| = 1) of each reported eigenvalue, from fresh products.
    pub residuals: PerEigenvalue,
    /// The share of each eigenvector's squared norm on the discriminator's
    /// parameters (1: a discriminator mode, 0: a generator mode).
    pub disc_share: PerEigenvalue,
    pub converged: bool,
    /// Products J·u (each two evaluations of the field).
    pub matvecs: usize,
    pub restarts: usize,
    pub parameters: usize,
    pub batch: usize,
    pub seconds: f64,
}

/// One number per reported eigenvalue, in the order of `rightmost` and `largest`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerEigenvalue {
    pub rightmost: Vec<f64>,
    pub largest: Vec<f64>,
}

/// The eigenvalue estimate at parameters (`gen`, `disc`) on step `step`'s
/// minibatch of `setup`, at `eta`, with `lr` for the discrete map's radius;
/// the start vector is keyed by the run's seed and the step (`o.seed` is
/// not used), so the command and a live estimate of one point agree.
/// `tick` is called after each product (progress).
#[allow(clippy::too_many_arguments)]
pub fn estimate(
    setup: &Setup,
    gen: &[f32],
    disc: &[f32],
    step: u64,
    eta: f64,
    lr: f64,
    o: &Options,
    parallel: bool,
    tick: &mut dyn FnMut(usize),
) -> Result<Estimate> {
    let t = Instant::now();
    let mut field = Field::<crate::nn::Dual>::new(setup, step, eta, parallel)?;
    let theta: Vec<f64> = disc.iter().chain(gen).map(|&x| x as f64).collect();
    let mut jac = Jacobian::at(&mut field, &theta)?;
    let mut counted = Counted { op: &mut jac, count: 0, tick };
    let sp = arnoldi::eigs(&mut counted, &Options { seed: setup.seed ^ step, split: disc.len(), ..*o })?;
    let size = (setup.chunk * setup.chunks, gen.len() + disc.len());
    Ok(report(&sp, step, eta, lr, size, t.elapsed().as_secs_f64()))
}

/// The report of a computed spectrum; `size` is (batch, parameters).
pub fn report(sp: &Spectrum, step: u64, eta: f64, lr: f64, size: (usize, usize), seconds: f64) -> Estimate {
    let (batch, parameters) = size;
    let pairs = |v: &[arnoldi::Eigenpair]| v.iter().map(|e| [e.value.re, e.value.im]).collect::<Vec<_>>();
    let discrete_radius =
        sp.rightmost.iter().chain(&sp.largest).map(|e| (1.0 + lr * e.value).norm()).fold(0.0, f64::max);
    Estimate {
        step,
        eta,
        rightmost: pairs(&sp.rightmost),
        largest: pairs(&sp.largest),
        spectral_abscissa: sp.abscissa(),
        discrete_radius,
        lr,
        residuals: PerEigenvalue {
            rightmost: sp.rightmost.iter().map(|e| e.residual).collect(),
            largest: sp.largest.iter().map(|e| e.residual).collect(),
        },
        disc_share: PerEigenvalue {
            rightmost: sp.rightmost.iter().map(|e| e.share).collect(),
            largest: sp.largest.iter().map(|e| e.share).collect(),
        },
        converged: sp.converged,
        matvecs: sp.matvecs,
        restarts: sp.restarts,
        parameters,
        batch,
        seconds,
    }
}

/// An operator that counts its products and reports each.
struct Counted<'a, 'b> {
    op: &'a mut dyn arnoldi::Operator,
    count: usize,
    tick: &'b mut dyn FnMut(usize),
}

impl arnoldi::Operator for Counted<'_, '_> {
    fn dim(&self) -> usize {
        self.op.dim()
    }
    fn apply(&mut self, u: &[f64], out: &mut [f64]) -> Result<()> {
        self.op.apply(u, out)?;
        self.count += 1;
        (self.tick)(self.count);
        Ok(())
    }
}
