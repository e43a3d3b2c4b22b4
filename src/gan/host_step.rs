//! A whole simultaneous step on one backend, driven from the host: phase 1
//! on every chunk, the exact reduction (`gan::reduce`), phase 2 with the reduced
//! v = grad_D V, the non-finite check and both optimizers.  It is the
//! trainer's host-driven step for a single worker, computed by the same
//! functions in the same order, so the two agree bit for bit (tested through
//! `tests/cluster.rs`, gRPC against in-process).  A remote worker whose
//! backend has no step of its own (the CPU) runs it when it is the only
//! worker (`dist::worker`); a CUDA backend runs its graph instead.

use std::time::Instant;

use super::optim::Optimizer;
use super::phases::{stat, Game, PartialLayout};
use super::reduce::{Blocks, FixedPoint, Scratch};
use super::trainer::sum_sq;
use crate::backend::{Backend, Draw, ShardTask, StepInput, StepOutput};
use crate::error::{Error, Result};

pub struct HostStep {
    layout: PartialLayout,
    fixed: FixedPoint,
    scratch: Scratch,
    /// Rows of partial sums: one per chunk of the minibatch.
    partials: Vec<f32>,
    rows: Vec<usize>,
    gen: Vec<f32>,
    disc: Vec<f32>,
    grad_gen: Vec<f32>,
    grad_disc: Vec<f32>,
    stats: [f32; stat::COUNT],
    /// The generator's and the discriminator's optimizer (None before `load`).
    opt: Option<[Optimizer; 2]>,
    /// Seconds of the last step's phase 1, phase 2 and optimizer.
    pub part_seconds: [f64; 3],
}

impl HostStep {
    /// Buffers for `chunks` chunks of a replica of `game`.
    pub fn new(game: &Game, chunks: usize) -> HostStep {
        let layout = game.layout();
        HostStep {
            fixed: FixedPoint::new(Blocks::of(game), chunks),
            scratch: Scratch::default(),
            partials: vec![0.0; chunks * layout.stride()],
            rows: (0..chunks).collect(),
            gen: vec![0.0; layout.n_gen],
            disc: vec![0.0; layout.n_disc],
            grad_gen: vec![0.0; layout.n_gen],
            grad_disc: vec![0.0; layout.n_disc],
            stats: [0.0; stat::COUNT],
            opt: None,
            part_seconds: [0.0; 3],
            layout,
        }
    }

    /// Takes over the parameters and the optimizers' state.
    pub fn load(&mut self, be: &mut dyn Backend, gen: &[f32], disc: &[f32], opt: [&Optimizer; 2]) -> Result<()> {
        // The backend refuses parameters that do not fit its replica.
        be.set_params(gen, disc)?;
        self.gen = gen.to_vec();
        self.disc = disc.to_vec();
        self.opt = Some([opt[0].clone(), opt[1].clone()]);
        Ok(())
    }

    /// Copies the parameters and the optimizers' state back.
    pub fn store(&self, gen: &mut [f32], disc: &mut [f32], opt: [&mut Optimizer; 2]) -> Result<()> {
        let mine = self.opt.as_ref().ok_or_else(|| Error::runtime("store before load"))?;
        gen.copy_from_slice(&self.gen);
        disc.copy_from_slice(&self.disc);
        let [g, d] = opt;
        *g = mine[0].clone();
        *d = mine[1].clone();
        Ok(())
    }

    /// Applies an update computed elsewhere (a worker among several steps
    /// its replica with the reduced gradients): the same optimizer code, so
    /// the same bits as the coordinator's copy; `t`, the optimizers' step
    /// counts after it, must agree.
    pub fn apply(
        &mut self,
        be: &mut dyn Backend,
        gen: Option<&[f32]>,
        disc: Option<&[f32]>,
        t: [u64; 2],
    ) -> Result<()> {
        let [opt_gen, opt_disc] = self.opt.as_mut().ok_or_else(|| Error::runtime("an update before the state"))?;
        let after = [opt_gen.t + u64::from(gen.is_some()), opt_disc.t + u64::from(disc.is_some())];
        if after != t {
            return Err(Error::runtime(format!(
                "the update takes the optimizers to steps {t:?}, this replica's would be at {after:?}"
            )));
        }
        for (g, n, what) in [(gen, self.gen.len(), "generator"), (disc, self.disc.len(), "discriminator")] {
            if let Some(g) = g {
                if g.len() != n {
                    return Err(Error::runtime(format!("the {what}'s gradient has {} values, expected {n}", g.len())));
                }
            }
        }
        if let Some(g) = disc {
            opt_disc.step(&mut self.disc, g);
        }
        if let Some(g) = gen {
            opt_gen.step(&mut self.gen, g);
        }
        be.set_params(&self.gen, &self.disc)
    }

    /// The digest of the parameters held (`gan::trainer::params_digest`).
    pub fn digest(&self) -> [u8; 32] {
        super::trainer::params_digest(&self.gen, &self.disc)
    }

    /// One step on `be` (which holds this state's parameters).
    pub fn step(&mut self, be: &mut dyn Backend, input: &StepInput, with_gen_grad: bool) -> Result<StepOutput> {
        let [opt_gen, opt_disc] = self.opt.as_mut().ok_or_else(|| Error::runtime("step before load"))?;
        if opt_gen.coefficients() != input.gen || opt_disc.coefficients() != input.disc {
            return Err(Error::runtime(format!(
                "step {}: the optimizers are out of step with the coordinator's (at step {} and {} here)",
                input.step, opt_gen.t, opt_disc.t
            )));
        }
        let stride = self.layout.stride();
        let chunks = self.rows.len();
        let task = ShardTask {
            step: input.step,
            draw: Draw::First,
            chunks: 0..chunks,
            with_gen_grad,
            loss_scale: input.loss_scale,
        };
        let t = Instant::now();
        be.phase1(&task, &mut self.partials)?;
        let rows = &self.rows;
        let (fixed, sc) = (&self.fixed, &mut self.scratch);
        fixed.reduce(&self.partials, stride, rows, self.layout.disc(), sc, &mut self.grad_disc);
        fixed.reduce(&self.partials, stride, rows, self.layout.stats(), sc, &mut self.stats);
        let t1 = t.elapsed().as_secs_f64();
        if !with_gen_grad {
            be.phase2(&self.grad_disc, &mut self.partials)?;
        }
        self.fixed.reduce(&self.partials, stride, &self.rows, self.layout.gen(), &mut self.scratch, &mut self.grad_gen);
        let t2 = t.elapsed().as_secs_f64();
        let count_bad = |v: &[f32]| v.iter().filter(|x| !x.is_finite()).count() as u32;
        let mut out = StepOutput {
            nonfinite: count_bad(&self.grad_disc) + count_bad(&self.grad_gen) + count_bad(&self.stats),
            bad_params: 0,
            stats: self.stats,
            sq_norm_disc: sum_sq(&self.grad_disc),
            sq_norm_gen: sum_sq(&self.grad_gen),
        };
        if out.nonfinite == 0 {
            opt_disc.step(&mut self.disc, &self.grad_disc);
            opt_gen.step(&mut self.gen, &self.grad_gen);
            out.bad_params = count_bad(&self.gen) + count_bad(&self.disc);
            be.set_params(&self.gen, &self.disc)?;
        }
        let t3 = t.elapsed().as_secs_f64();
        self.part_seconds = [t1, t2 - t1, t3 - t2];
        Ok(out)
    }
}
