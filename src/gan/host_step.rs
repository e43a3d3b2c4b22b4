//! A whole simultaneous step on one backend, driven from the host: phase 1
//! on every chunk, the reduction in chunk order, phase 2 with the reduced
//! v = grad_D V, the non-finite check and both optimizers.  It is the
//! trainer's host-driven step for a single worker, computed by the same
//! functions in the same order, so the two agree bit for bit (tested through
//! `tests/cluster.rs`, gRPC against in-process).  A remote worker whose
//! backend has no step of its own (the CPU) runs it when it is the only
//! worker (`dist::worker`); a CUDA backend runs its graph instead.

use std::time::Instant;

use super::optim::Optimizer;
use super::phases::{stat, PartialLayout};
use super::trainer::{reduce_rows_in, sum_sq};
use crate::backend::{Backend, Draw, ShardTask, StepInput, StepOutput};
use crate::error::{Error, Result};

pub struct HostStep {
    layout: PartialLayout,
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
    /// Buffers for `chunks` chunks of a replica of `layout`.
    pub fn new(layout: PartialLayout, chunks: usize) -> HostStep {
        HostStep {
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
        let rows: &[usize] = if be.folded() { &self.rows[..1] } else { &self.rows };
        reduce_rows_in(&self.partials, stride, rows, self.layout.disc(), &mut self.grad_disc);
        reduce_rows_in(&self.partials, stride, rows, self.layout.stats(), &mut self.stats);
        let t1 = t.elapsed().as_secs_f64();
        if !with_gen_grad {
            be.phase2(&self.grad_disc, &mut self.partials)?;
        }
        let rows: &[usize] = if be.folded() { &self.rows[..1] } else { &self.rows };
        reduce_rows_in(&self.partials, stride, rows, self.layout.gen(), &mut self.grad_gen);
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
