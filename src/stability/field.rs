//! The game's joint gradient field on one fixed minibatch, in f64, and its
//! Jacobian's products.
//!
//! F(θ) = (grad_D V, −grad_G (L_G + eta·||grad_D V||²)) at θ = (θ_D, θ_G):
//! simultaneous gradient descent is θ' = θ + lr·F(θ), locally stable where
//! every eigenvalue of J = ∂F/∂θ has a negative real part.  The minibatch
//! is the one the trainer draws for a step (the same latents and real
//! samples, from the same keyed streams), and F is computed by the step's
//! own phases (`gan::phases`) in f64, chunk by chunk, reduced in chunk order.
//! J·u is exact: the same computation on dual numbers seeded with u
//! (forward mode over the passes), no finite-difference step to choose.

use rayon::prelude::*;

use super::arnoldi::Operator;
use crate::backend::{Draw, Setup};
use crate::error::{Error, Result};
use crate::gan::phases::{self, ChunkState, Game, PartialLayout};
use crate::nn::{Dual, Float};
use crate::rng::{Purpose, Stream};

/// F on one minibatch in `T` (f64, or [`Dual`] for its derivatives):
/// its buffers, allocated once.
pub struct Field<T = f64> {
    game: Game,
    layout: PartialLayout,
    states: Vec<ChunkState<T>>,
    partials: Vec<T>,
    v: Vec<T>,
    /// Chunks over threads (rayon) or one after another (off a training
    /// run's hot path, where the pool belongs to the step).
    parallel: bool,
    /// Evaluations of F so far.
    pub evaluations: usize,
}

impl<T: Float> Field<T> {
    /// The field at `eta` on step `step`'s first minibatch of `setup`
    /// (`setup.chunks` chunks of `setup.chunk` samples).
    pub fn new(setup: &Setup, step: u64, eta: f64, parallel: bool) -> Result<Field<T>> {
        if !eta.is_finite() || eta < 0.0 {
            return Err(Error::input(format!("eta {eta}: expected a finite value >= 0")));
        }
        let mut game = setup.game.clone();
        game.eta = eta;
        game.batch = setup.chunk * setup.chunks;
        let latent = game.gen.input;
        let zs = Stream::new(setup.seed, Purpose::Latent, step);
        let key = setup.draw_key(step, Draw::First);
        let mut real = vec![0f32; setup.chunk * game.disc.input];
        let mut z = vec![0f32; latent];
        let mut states = Vec::with_capacity(setup.chunks);
        for c in 0..setup.chunks {
            let mut st = ChunkState::<T>::new(&game, setup.chunk);
            let first = c * setup.chunk;
            for (r, row) in st.z.chunks_exact_mut(latent).enumerate() {
                zs.normals((first + r) as u32, &mut z);
                row.iter_mut().zip(&z).for_each(|(o, &x)| *o = T::from_f64(x as f64));
            }
            setup.data.fill(&key, first as u64, &mut real);
            st.real_mut().iter_mut().zip(&real).for_each(|(o, &x)| *o = T::from_f64(x as f64));
            states.push(st);
        }
        let layout = game.layout();
        Ok(Field {
            partials: vec![T::ZERO; setup.chunks * layout.stride()],
            v: vec![T::ZERO; layout.n_disc],
            layout,
            game,
            states,
            parallel,
            evaluations: 0,
        })
    }

    /// The number of parameters, discriminator's first.
    pub fn dim(&self) -> usize {
        self.layout.n_disc + self.layout.n_gen
    }

    /// out = F(theta), theta = (θ_D, θ_G).
    pub fn eval(&mut self, theta: &[T], out: &mut [T]) {
        assert!(theta.len() == self.dim() && out.len() == self.dim(), "field: wrong length");
        let (pd, pg) = theta.split_at(self.layout.n_disc);
        let (game, lay, par) = (&self.game, self.layout, self.parallel);
        let with_gen = game.eta == 0.0;
        let (states, partials) = (&mut self.states, &mut self.partials);
        on_chunks(states, partials, lay.stride(), par, |st, o| phases::phase1(game, pg, pd, st, o, with_gen));
        reduce(partials, lay.stride(), lay.disc(), &mut self.v);
        if !with_gen {
            let v = &self.v;
            on_chunks(states, partials, lay.stride(), par, |st, o| phases::phase2(game, pg, pd, v, st, o));
        }
        let (od, og) = out.split_at_mut(lay.n_disc);
        od.copy_from_slice(&self.v);
        reduce(partials, lay.stride(), lay.gen(), og);
        og.iter_mut().for_each(|g| *g = -*g);
        self.evaluations += 1;
    }
}

/// `each` on every chunk and its row of partial sums: over threads, or in turn.
fn on_chunks<T: Float>(
    states: &mut [ChunkState<T>],
    partials: &mut [T],
    stride: usize,
    parallel: bool,
    each: impl Fn(&mut ChunkState<T>, &mut [T]) + Sync,
) {
    if parallel {
        states.par_iter_mut().zip(partials.par_chunks_mut(stride)).for_each(|(st, o)| each(st, o));
    } else {
        states.iter_mut().zip(partials.chunks_mut(stride)).for_each(|(st, o)| each(st, o));
    }
}

/// out = the sum of `range` over the rows of `partials`, in row order.
fn reduce<T: Float>(partials: &[T], stride: usize, range: std::ops::Range<usize>, out: &mut [T]) {
    out.iter_mut().for_each(|x| *x = T::ZERO);
    for row in partials.chunks_exact(stride) {
        out.iter_mut().zip(&row[range.clone()]).for_each(|(o, &x)| *o += x);
    }
}

/// J = ∂F/∂θ at a point, as an operator: J·u is the tangent of F along u,
/// from the field on dual numbers θ + u·ε.
pub struct Jacobian<'f> {
    pub field: &'f mut Field<Dual>,
    theta: Vec<Dual>,
    out: Vec<Dual>,
}

impl<'f> Jacobian<'f> {
    pub fn at(field: &'f mut Field<Dual>, theta: &[f64]) -> Result<Jacobian<'f>> {
        let n = field.dim();
        if theta.len() != n {
            return Err(Error::input(format!("the point has {} parameters, the game {n}", theta.len())));
        }
        if let Some(i) = theta.iter().position(|x| !x.is_finite()) {
            return Err(Error::input(format!("parameter {i} is not finite ({}): no Jacobian there", theta[i])));
        }
        let theta = theta.iter().map(|&v| Dual::new(v, 0.0)).collect();
        Ok(Jacobian { field, theta, out: vec![Dual::ZERO; n] })
    }

    /// F at the point (a fresh evaluation, tangents zero).
    pub fn value(&mut self) -> Vec<f64> {
        self.theta.iter_mut().for_each(|t| t.d = 0.0);
        self.field.eval(&self.theta, &mut self.out);
        self.out.iter().map(|o| o.v).collect()
    }
}

impl Operator for Jacobian<'_> {
    fn dim(&self) -> usize {
        self.theta.len()
    }

    fn apply(&mut self, u: &[f64], out: &mut [f64]) -> Result<()> {
        for (t, &d) in self.theta.iter_mut().zip(u) {
            t.d = d;
        }
        self.field.eval(&self.theta, &mut self.out);
        for (o, r) in out.iter_mut().zip(&self.out) {
            *o = r.d;
        }
        Ok(())
    }
}
