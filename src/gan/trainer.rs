//! The trainer: drives the two phases of every step on the backend, reduces
//! the per-chunk partial sums in chunk order, skips a step with any
//! non-finite value, and runs the optimizers on fp32 master weights.

use serde::Serialize;

use super::optim::{Direction, Optimizer};
use super::phases::{stat, Game, PartialLayout};
use crate::backend::{Backend, Draw, Setup, ShardTask};
use crate::config::{Config, Update};
use crate::data::Mixture;
use crate::error::{Error, Result};
use crate::nn::{init, LayerSpec, Network};

/// Everything that defines where training stands (what a checkpoint holds).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainState {
    /// Steps completed.
    pub step: u64,
    pub gen: Vec<f32>,
    pub disc: Vec<f32>,
    pub opt_gen: Optimizer,
    pub opt_disc: Optimizer,
    /// Steps skipped for a non-finite value.
    pub skipped: u64,
}

impl TrainState {
    /// Fresh parameters (orthogonal init) and optimizer state.
    pub fn init(cfg: &Config, game: &Game) -> TrainState {
        let seed = cfg.train.seed;
        TrainState {
            step: 0,
            gen: init::orthogonal(&game.gen, cfg.generator.init_gain, seed, 0),
            disc: init::orthogonal(&game.disc, cfg.discriminator.init_gain, seed, 1),
            opt_gen: Optimizer::new(&cfg.optimizer, cfg.generator_lr(), game.gen.n_params, Direction::Descend),
            opt_disc: Optimizer::new(&cfg.optimizer, cfg.discriminator_lr(), game.disc.n_params, Direction::Ascend),
            skipped: 0,
        }
    }
}

/// The game and backend setup a config describes.
pub fn setup(cfg: &Config) -> Setup {
    let layers = |l: &[String]| LayerSpec::parse_all(l).expect("validated config");
    let game = Game {
        gen: Network::new(layers(&cfg.generator.layers), cfg.train.latent),
        disc: Network::new(layers(&cfg.discriminator.layers), 2),
        objective: cfg.train.objective,
        eta: cfg.train.eta,
        batch: cfg.train.batch,
    };
    Setup {
        game,
        data: Mixture::from_config(&cfg.data),
        seed: cfg.train.seed,
        chunk: cfg.train.chunk,
        chunks: cfg.chunks(),
    }
}

/// What one step measured (at the point the step started from).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StepReport {
    pub step: u64,
    /// V = E f(D(x)) + E f(-D(G(z))).
    pub value: f64,
    pub gen_loss: f64,
    pub grad_norm_disc: f64,
    pub grad_norm_gen: f64,
    /// ||grad_D V||^2 (the regularizer before eta).
    pub regularizer: f64,
    /// Fraction of real samples D judges real, and of fake samples it judges fake.
    pub d_accuracy_real: f64,
    pub d_accuracy_fake: f64,
    /// Whether the step was skipped for a non-finite value.
    pub skipped: bool,
}

pub struct Trainer {
    pub cfg: Config,
    pub game: Game,
    pub state: TrainState,
    backend: Box<dyn Backend>,
    layout: PartialLayout,
    partials: Vec<f32>,
    grad_disc: Vec<f32>,
    grad_gen: Vec<f32>,
    stats: [f32; stat::COUNT],
    /// Consecutive skipped steps (training stops after too many).
    skipped_in_a_row: u64,
}

/// Consecutive non-finite steps after which training stops with an error.
pub const MAX_SKIPS_IN_A_ROW: u64 = 100;

impl Trainer {
    pub fn new(cfg: Config, game: Game, state: TrainState, mut backend: Box<dyn Backend>) -> Result<Trainer> {
        backend.set_params(&state.gen, &state.disc)?;
        let layout = game.layout();
        Ok(Trainer {
            partials: vec![0.0; cfg.chunks() * layout.stride()],
            grad_disc: vec![0.0; layout.n_disc],
            grad_gen: vec![0.0; layout.n_gen],
            stats: [0.0; stat::COUNT],
            skipped_in_a_row: 0,
            layout,
            cfg,
            game,
            state,
            backend,
        })
    }

    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// Phase 1 on the whole minibatch, reduced: fills grad_disc, stats, and
    /// grad_gen when eta = 0 (else phase 2 does, with v = grad_disc).
    fn gradients(&mut self, draw: Draw, want_gen: bool) -> Result<()> {
        let with_gen_grad = want_gen && self.game.eta == 0.0;
        let task = ShardTask { step: self.state.step, draw, chunks: 0..self.cfg.chunks(), with_gen_grad };
        self.backend.phase1(&task, &mut self.partials)?;
        reduce(&self.partials, self.layout.stride(), self.layout.disc(), &mut self.grad_disc);
        reduce(&self.partials, self.layout.stride(), self.layout.stats(), &mut self.stats);
        if want_gen {
            if !with_gen_grad {
                self.backend.phase2(&self.grad_disc, &mut self.partials)?;
            }
            reduce(&self.partials, self.layout.stride(), self.layout.gen(), &mut self.grad_gen);
        }
        Ok(())
    }

    fn report(&self) -> StepReport {
        let s = &self.stats;
        let reg = sum_sq(&self.grad_disc);
        StepReport {
            step: self.state.step,
            value: (s[stat::V_REAL] + s[stat::V_FAKE]) as f64,
            gen_loss: s[stat::GEN_LOSS] as f64,
            grad_norm_disc: reg.sqrt(),
            grad_norm_gen: sum_sq(&self.grad_gen).sqrt(),
            regularizer: reg,
            d_accuracy_real: s[stat::REAL_CORRECT] as f64,
            d_accuracy_fake: s[stat::FAKE_CORRECT] as f64,
            skipped: false,
        }
    }

    fn finite(&self) -> bool {
        self.grad_disc.iter().chain(&self.grad_gen).chain(&self.stats).all(|v| v.is_finite())
    }

    /// One training step.  A step with a non-finite value changes nothing
    /// and is reported as skipped; too many in a row is an error.
    pub fn step(&mut self) -> Result<StepReport> {
        let mut rep;
        let mut ok;
        match self.cfg.train.update {
            Update::Simultaneous => {
                self.gradients(Draw::First, true)?;
                rep = self.report();
                ok = self.finite();
                if ok {
                    self.state.opt_disc.step(&mut self.state.disc, &self.grad_disc);
                    self.state.opt_gen.step(&mut self.state.gen, &self.grad_gen);
                }
            }
            Update::Alternating => {
                self.grad_gen.fill(0.0);
                self.gradients(Draw::First, false)?;
                rep = self.report();
                ok = self.finite();
                if ok {
                    self.state.opt_disc.step(&mut self.state.disc, &self.grad_disc);
                    self.backend.set_params(&self.state.gen, &self.state.disc)?;
                    self.gradients(Draw::Second, true)?;
                    rep.grad_norm_gen = sum_sq(&self.grad_gen).sqrt();
                    ok = self.finite();
                    // A non-finite G phase skips the G step; the D step stands.
                    if ok {
                        self.state.opt_gen.step(&mut self.state.gen, &self.grad_gen);
                    }
                }
            }
        }
        if ok {
            self.skipped_in_a_row = 0;
        } else {
            rep.skipped = true;
            self.skipped_in_a_row += 1;
            self.state.skipped += 1;
            if self.skipped_in_a_row >= MAX_SKIPS_IN_A_ROW {
                return Err(Error::runtime(format!(
                    "training diverged: {MAX_SKIPS_IN_A_ROW} steps in a row had non-finite values (last at step {}); \
                     lower optimizer.lr or train.eta and start again, or resume from an earlier checkpoint",
                    self.state.step
                )));
            }
        }
        if !self.state.gen.iter().chain(&self.state.disc).all(|v| v.is_finite()) {
            return Err(Error::runtime(format!(
                "training diverged: the parameters became non-finite at step {} (from finite gradients: the \
                 learning rate is too large); lower optimizer.lr and resume from the last checkpoint or start again",
                self.state.step
            )));
        }
        self.backend.set_params(&self.state.gen, &self.state.disc)?;
        self.state.step += 1;
        Ok(rep)
    }
}

/// out = Σ_chunks rows[c][range], added in chunk order for every element
/// (split over threads by element, which does not change any sum).
fn reduce(partials: &[f32], stride: usize, range: std::ops::Range<usize>, out: &mut [f32]) {
    use rayon::prelude::*;
    const PIECE: usize = 4096;
    out.par_chunks_mut(PIECE).enumerate().for_each(|(i, o)| {
        let start = range.start + i * PIECE;
        let mut rows = partials.chunks_exact(stride);
        o.copy_from_slice(&rows.next().expect("at least one chunk")[start..start + o.len()]);
        for r in rows {
            for (o, v) in o.iter_mut().zip(&r[start..]) {
                *o += v;
            }
        }
    });
}

fn sum_sq(v: &[f32]) -> f64 {
    v.iter().map(|&x| (x as f64) * (x as f64)).sum()
}
