//! The trainer (the coordinator's loop): cuts each minibatch into shards of
//! whole chunks, one per worker in proportion to its capacity, drives the two
//! phases of every step on the workers' backends, reduces the per-chunk
//! partial sums in chunk order (so the result does not depend on how many
//! workers there are), skips a step with any non-finite value, and runs the
//! optimizers on fp32 master weights.

use std::ops::Range;

use serde::Serialize;

use super::loss_scale::LossScale;
use super::optim::{Direction, Optimizer};
use super::phases::{stat, Game, PartialLayout};
use super::reduce::{Blocks, Contributors, FixedPoint, Scratch};
use crate::backend::{Backend, Draw, GradUpdate, PhaseWork, Setup, ShardTask};
use crate::config::{Config, Update};
use crate::error::{Error, Result};
use crate::nn::{init, LayerSpec, Network, Shape};

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
    /// The dynamic loss scale of fp16 backends.
    pub loss_scale: LossScale,
}

impl TrainState {
    /// Fresh parameters (orthogonal init) and optimizer state.
    pub fn init(cfg: &Config, game: &Game) -> TrainState {
        let seed = cfg.train.seed;
        let [opt_gen, opt_disc] = fresh_optimizers(cfg, game);
        TrainState {
            step: 0,
            gen: init::orthogonal(&game.gen, cfg.generator.init_gain, seed, 0),
            disc: init::orthogonal(&game.disc, cfg.discriminator.init_gain, seed, 1),
            opt_gen,
            opt_disc,
            skipped: 0,
            loss_scale: LossScale::default(),
        }
    }
}

/// Both players' optimizers as the config makes them, before any step
/// (generator, discriminator).
pub fn fresh_optimizers(cfg: &Config, game: &Game) -> [Optimizer; 2] {
    [
        Optimizer::new(&cfg.optimizer, cfg.generator_lr(), game.gen.n_params, Direction::Descend),
        Optimizer::new(&cfg.optimizer, cfg.discriminator_lr(), game.disc.n_params, Direction::Ascend),
    ]
}

/// The game a config describes on samples of shape `data`: both networks
/// built, G's output checked to be the data's shape and D's one logit.
pub fn game(cfg: &Config, data: Shape) -> Result<Game> {
    let net = |key: &str, name: &str, layers: &[String], input: Shape| {
        LayerSpec::parse_all(layers)
            .and_then(|l| Network::build(name, l, input))
            .map_err(|m| Error::input(format!("key `{key}`: {m}")))
    };
    let gen = net("generator.layers", "generator", &cfg.generator.layers, Shape::flat(cfg.train.latent))?;
    if gen.output_shape() != data {
        return Err(Error::input(format!(
            "key `generator.layers`: the generator's output is {} but the data's samples are {} (data.kind {}); \
             make its last layers give {}",
            gen.output_shape(),
            data,
            cfg.data.kind.name(),
            data
        )));
    }
    let disc = net("discriminator.layers", "discriminator", &cfg.discriminator.layers, data)?;
    if disc.output_shape() != Shape::flat(1) {
        return Err(Error::input(format!(
            "key `discriminator.layers`: the discriminator must end with one logit (e.g. \"linear 1\"), its output is {}",
            disc.output_shape()
        )));
    }
    // A chunk's buffers are allocated once; refuse those that could not be.
    for (key, net) in [("generator.layers", &gen), ("discriminator.layers", &disc)] {
        let per_sample = net.max_width().max(net.scratch_len(1));
        if cfg.train.chunk as u128 * per_sample as u128 > MAX_CHUNK_VALUES as u128 {
            return Err(Error::input(format!(
                "key `{key}`: a chunk of {} samples needs {} values per buffer (at most {MAX_CHUNK_VALUES}); lower train.chunk or the layers' sizes",
                cfg.train.chunk,
                cfg.train.chunk as u128 * per_sample as u128
            )));
        }
    }
    Ok(Game { gen, disc, objective: cfg.train.objective, eta: cfg.train.eta, batch: cfg.train.batch })
}

/// The most values one of a chunk's buffers may hold (2^28: 1 GiB of f32).
pub const MAX_CHUNK_VALUES: usize = 1 << 28;

/// The game a config describes, on the shape its data's samples have
/// (known without loading the dataset).
pub fn game_of(cfg: &Config) -> Result<Game> {
    game(cfg, crate::data::sample_shape(&cfg.data)?)
}

/// The game and backend setup a config describes: opens the dataset.
pub fn setup(cfg: &Config) -> Result<Setup> {
    setup_with(cfg, crate::data::open(&cfg.data)?)
}

/// The game and backend setup a config describes, on `data` (already open).
pub fn setup_with(cfg: &Config, data: std::sync::Arc<dyn crate::data::Dataset>) -> Result<Setup> {
    let game = game(cfg, data.shape())?;
    Ok(Setup {
        game,
        data,
        seed: cfg.train.seed,
        chunk: cfg.train.chunk,
        chunks: cfg.chunks(),
        alternating: cfg.train.update == Update::Alternating,
    })
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

impl StepReport {
    /// The report of step `step` from its reduced stats and the squared
    /// norms of the two gradients (the regularizer is ||grad_D V||²).
    fn new(step: u64, s: &[f32; stat::COUNT], sq_disc: f64, sq_gen: f64) -> StepReport {
        StepReport {
            step,
            value: (s[stat::V_REAL] + s[stat::V_FAKE]) as f64,
            gen_loss: s[stat::GEN_LOSS] as f64,
            grad_norm_disc: sq_disc.sqrt(),
            grad_norm_gen: sq_gen.sqrt(),
            regularizer: sq_disc,
            d_accuracy_real: s[stat::REAL_CORRECT] as f64,
            d_accuracy_fake: s[stat::FAKE_CORRECT] as f64,
            skipped: false,
        }
    }
}

/// The trainer's Prometheus series, registered once (no work per step when
/// no exporter is installed).
struct Meters {
    steps: metrics::Counter,
    samples: metrics::Counter,
    skipped: metrics::Counter,
    value: metrics::Gauge,
    grad_gen: metrics::Gauge,
    grad_disc: metrics::Gauge,
    regularizer: metrics::Gauge,
    loss_scale: metrics::Gauge,
    phase_one: metrics::Histogram,
    phase_two: metrics::Histogram,
    optimizer: metrics::Histogram,
    step: metrics::Histogram,
    /// Per worker: its compute time in phase one and two.
    compute: Vec<[metrics::Histogram; 2]>,
    /// The label of the next worker to join.
    next_label: usize,
    evicted: metrics::Counter,
}

impl Meters {
    fn new(workers: usize) -> Meters {
        use crate::telemetry::names as n;
        metrics::gauge!(n::WORKERS).set(workers as f64);
        let compute = (0..workers).map(|i| Meters::compute_for(&i.to_string())).collect();
        Meters {
            steps: metrics::counter!(n::STEPS),
            samples: metrics::counter!(n::SAMPLES),
            skipped: metrics::counter!(n::SKIPPED, "reason" => "non_finite"),
            value: metrics::gauge!(n::VALUE),
            grad_gen: metrics::gauge!(n::GRAD_NORM, "player" => "generator"),
            grad_disc: metrics::gauge!(n::GRAD_NORM, "player" => "discriminator"),
            regularizer: metrics::gauge!(n::REGULARIZER),
            loss_scale: metrics::gauge!(n::LOSS_SCALE),
            phase_one: metrics::histogram!(n::STEP_DURATION, "phase" => "one"),
            phase_two: metrics::histogram!(n::STEP_DURATION, "phase" => "two"),
            optimizer: metrics::histogram!(n::STEP_DURATION, "phase" => "optimizer"),
            step: metrics::histogram!(n::STEP_DURATION, "phase" => "step"),
            compute,
            next_label: workers,
            evicted: metrics::counter!(n::EVICTED),
        }
    }

    fn compute_for(worker: &str) -> [metrics::Histogram; 2] {
        use crate::telemetry::names as n;
        [
            metrics::histogram!(n::WORKER_COMPUTE, "worker" => worker.to_string(), "phase" => "one"),
            metrics::histogram!(n::WORKER_COMPUTE, "worker" => worker.to_string(), "phase" => "two"),
        ]
    }
}

pub struct Trainer {
    pub cfg: Config,
    pub game: Game,
    pub state: TrainState,
    /// The workers' backends and the chunks each computes.
    workers: Vec<Box<dyn Backend>>,
    shards: Vec<Range<usize>>,
    layout: PartialLayout,
    partials: Vec<f32>,
    /// The rows of `partials` the last phase wrote (the shards of workers
    /// whose rows are here; a remote worker's stay on the worker).
    live_rows: Vec<usize>,
    /// The exact reduction (`gan::reduce`) and its buffers.
    fixed: FixedPoint,
    scratch: Scratch,
    grad_disc: Vec<f32>,
    grad_gen: Vec<f32>,
    stats: [f32; stat::COUNT],
    /// Consecutive skipped steps (training stops after too many).
    skipped_in_a_row: u64,
    meters: Meters,
    /// Workers whose last job failed (indices into `workers`).
    lost: Vec<(usize, String)>,
    /// Where workers that join mid-run come from (the coordinator's lobby).
    joiner: Option<Joiner>,
    /// The only worker runs whole steps itself (`DeviceStep`); `state`'s
    /// parameters and moments are then behind until `sync`.
    device_step: bool,
    state_behind: bool,
    /// Whole steps whenever the workers allow them (`set_device_step`).
    want_device_step: bool,
    /// The step boundaries at which the caller reads the state (`sync`);
    /// None: any (then no step is sent ahead).
    sync_points: Option<SyncPoints>,
    /// The next whole step was sent ahead (`DeviceStep::step_ahead`).
    ahead: bool,
    /// Workers that joined and wait for the step sent ahead to finish.
    joining: Vec<Box<dyn Backend>>,
}

/// Whether the caller reads the state at a step boundary (after that many steps).
pub type SyncPoints = Box<dyn Fn(u64) -> bool + Send>;

/// Hands over the workers that have joined since it was last asked.
pub type Joiner = Box<dyn FnMut() -> Vec<Box<dyn Backend>> + Send>;

/// Consecutive non-finite steps after which training stops with an error.
pub const MAX_SKIPS_IN_A_ROW: u64 = 100;

impl Trainer {
    /// A trainer over `workers` (at least one), in local mode.
    pub fn new(cfg: Config, game: Game, state: TrainState, mut workers: Vec<Box<dyn Backend>>) -> Result<Trainer> {
        if workers.is_empty() {
            return Err(Error::input("no workers; use --workers 1 or more"));
        }
        // A worker gone before it took the state is left out (told why), not fatal.
        let mut last_err = None;
        workers.retain_mut(|w| take_state(&state, w.as_mut()).map_err(|e| last_err = Some(e)).is_ok());
        if let (true, Some(e)) = (workers.is_empty(), last_err) {
            return Err(Error::runtime(format!(
                "no worker could take the training state (last: {e}); start workers again"
            )));
        }
        let capacities: Vec<f64> = workers.iter().map(|w| w.capacity()).collect();
        let shards = assign_shards(cfg.chunks(), &capacities);
        let layout = game.layout();
        let mut t = Trainer {
            partials: vec![0.0; cfg.chunks() * layout.stride()],
            live_rows: Vec::new(),
            fixed: FixedPoint::new(Blocks::of(&game), cfg.chunks()),
            scratch: Scratch::default(),
            grad_disc: vec![0.0; layout.n_disc],
            grad_gen: vec![0.0; layout.n_gen],
            stats: [0.0; stat::COUNT],
            skipped_in_a_row: 0,
            meters: Meters::new(workers.len()),
            lost: Vec::new(),
            joiner: None,
            device_step: false,
            state_behind: false,
            want_device_step: true,
            sync_points: None,
            ahead: false,
            joining: Vec::new(),
            layout,
            cfg,
            game,
            state,
            workers,
            shards,
        };
        t.set_device_step(true)?;
        Ok(t)
    }

    /// Uses (`on`) the only worker's own whole-step path when it has one and
    /// the update is simultaneous (the default), or the host-driven step.
    /// Both give bitwise the same results on the same backend.  With `on`,
    /// the trainer also switches to whole steps whenever workers drop back
    /// to one, and off whenever others join.
    pub fn set_device_step(&mut self, on: bool) -> Result<()> {
        self.want_device_step = on;
        self.use_device_step(on)
    }

    /// Whether the only worker can run whole steps (`DeviceStep`) in this run.
    fn device_step_eligible(&mut self) -> bool {
        self.workers.len() == 1
            && self.cfg.train.update == Update::Simultaneous
            && self.workers[0].device_step().is_some()
    }

    fn use_device_step(&mut self, on: bool) -> Result<()> {
        self.sync()?;
        let whole = on && self.device_step_eligible();
        let st = &self.state;
        if whole {
            if !self.device_step {
                let d = self.workers[0].device_step().expect("eligible");
                d.load(&st.gen, &st.disc, [&st.opt_gen, &st.opt_disc])?;
            }
            self.device_step = true;
        } else {
            if self.device_step {
                hand_state(st, self.workers[0].as_mut())?;
            }
            self.device_step = false;
        }
        Ok(())
    }

    /// Whether steps run as the worker's own device step.
    pub fn uses_device_step(&self) -> bool {
        self.device_step
    }

    /// Brings `state`'s parameters and optimizer moments up to date (after
    /// device steps); a no-op otherwise.  Call before reading them.
    pub fn sync(&mut self) -> Result<()> {
        if self.state_behind {
            let st = &mut self.state;
            let d = self.workers[0].device_step().expect("device step in use");
            d.store(&mut st.gen, &mut st.disc, [&mut st.opt_gen, &mut st.opt_disc]).map_err(|e| {
                Error::runtime(format!(
                    "cannot fetch the training state of step {} from the worker running whole steps: {e}; \
                     resume from the last checkpoint (with a worker running)",
                    st.step
                ))
            })?;
            self.state_behind = false;
        }
        Ok(())
    }

    /// The device step's profile (graph size; phase times after `steps`
    /// more steps timed part by part), when one is in use.
    pub fn device_profile(&mut self, steps: u64) -> Result<Option<crate::backend::StepProfile>> {
        if !self.device_step {
            return Ok(None);
        }
        self.workers[0].device_step().expect("device step in use").set_profiling(true)?;
        for _ in 0..steps {
            self.step()?;
        }
        let d = self.workers[0].device_step().expect("device step in use");
        let p = d.profile();
        d.set_profiling(false)?;
        p.map(Some)
    }

    /// The first worker's backend (they are all of one kind in local mode).
    pub fn backend(&self) -> &dyn Backend {
        self.workers[0].as_ref()
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// The chunks each worker computes.
    pub fn shards(&self) -> &[Range<usize>] {
        &self.shards
    }

    /// Runs `work(shard)` on every worker with a shard, each with its rows
    /// of the partial sums, and records each worker's compute time for
    /// `phase` (0: one, 1: two): the time the worker reports, else the
    /// call's own, measured before any synchronization.  Remote workers'
    /// requests all go out first and their answers are awaited in order on
    /// this thread (which drives their sessions meanwhile); local backends
    /// compute concurrently, one thread each, when there are several.  Every
    /// started phase is awaited even after a failure, so that no answer is
    /// left behind on a session.
    fn on_workers<'v>(&mut self, phase: usize, work: &dyn Fn(Range<usize>) -> PhaseWork<'v>) -> Result<()> {
        let stride = self.layout.stride();
        let timed = |w: &mut Box<dyn Backend>, job: &PhaseWork<'_>, out: &mut [f32]| -> Result<f64> {
            let t = std::time::Instant::now();
            w.run(job, out)?;
            Ok(w.reported_compute_seconds().unwrap_or_else(|| t.elapsed().as_secs_f64()))
        };
        if let ([w], [shard]) = (&mut self.workers[..], &self.shards[..]) {
            // One worker: no bookkeeping (and no allocation) per phase.
            let job = work(shard.clone());
            let secs = timed(w, &job, &mut self.partials[..shard.len() * stride])
                .inspect_err(|e| self.lost.push((0, e.to_string())))?;
            self.meters.compute[0][phase].record(secs);
            self.note_live_rows();
            return Ok(());
        }
        let mut rest: &mut [f32] = &mut self.partials;
        let (mut remote, mut local) = (Vec::new(), Vec::new());
        let mut failed: Vec<(usize, Error)> = Vec::new();
        for (i, (w, shard)) in self.workers.iter_mut().zip(&self.shards).enumerate() {
            let (mine, tail) = std::mem::take(&mut rest).split_at_mut(shard.len() * stride);
            rest = tail;
            if shard.is_empty() {
                continue;
            }
            let job = work(shard.clone());
            match w.start(&job) {
                Ok(true) => remote.push((i, w, mine)),
                Ok(false) => local.push((i, w, job, mine)),
                Err(e) => failed.push((i, e)),
            }
        }
        let mut done: Vec<(usize, Result<f64>)> = if local.len() == 1 {
            local.into_iter().map(|(i, w, job, out)| (i, timed(w, &job, out))).collect()
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> =
                    local.into_iter().map(|(i, w, job, out)| (i, s.spawn(move || timed(w, &job, out)))).collect();
                handles
                    .into_iter()
                    .map(|(i, h)| (i, h.join().unwrap_or_else(|_| Err(Error::runtime("a worker panicked")))))
                    .collect()
            })
        };
        for (i, w, out) in remote {
            let r = w.finish(out).map(|()| w.reported_compute_seconds().unwrap_or(0.0));
            done.push((i, r));
        }
        done.extend(failed.into_iter().map(|(i, e)| (i, Err(e))));
        done.sort_by_key(|(i, _)| *i);
        let mut first_err = None;
        for (i, r) in done {
            match r {
                Ok(secs) => self.meters.compute[i][phase].record(secs),
                Err(e) => {
                    self.lost.push((i, e.to_string()));
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)?;
        self.note_live_rows();
        Ok(())
    }

    /// Records which rows of `partials` the phase just run wrote.
    fn note_live_rows(&mut self) {
        self.live_rows.clear();
        for (w, shard) in self.workers.iter().zip(&self.shards) {
            if shard.is_empty() {
                continue;
            }
            if w.shard_maxima().is_none() {
                self.live_rows.extend(shard.clone());
            }
        }
    }

    /// Brings every worker's parameters up to date after an update: a
    /// worker that steps itself gets the update's gradients (`moved`: the
    /// generator moved, the discriminator moved, its gradient was phase 2's
    /// v; None: a skipped step, nothing moved), the others the parameters.
    /// One that cannot take them is evicted.
    fn push_update(&mut self, moved: Option<(bool, bool, bool)>) -> Result<()> {
        let upd = moved.map(|(gen, disc, disc_is_v)| GradUpdate {
            step: self.state.step,
            gen: gen.then_some(&self.grad_gen[..]),
            disc: disc.then_some(&self.grad_disc[..]),
            disc_is_v,
            t: [self.state.opt_gen.t, self.state.opt_disc.t],
        });
        let mut lost = Vec::new();
        let mut last_err = None;
        for (i, w) in self.workers.iter_mut().enumerate() {
            let r = match (w.steps_itself(), &upd) {
                (true, Some(u)) => w.apply(u),
                (true, None) => Ok(()),
                (false, _) => w.set_params(&self.state.gen, &self.state.disc),
            };
            if let Err(e) = r {
                lost.push((i, e.to_string()));
                last_err = Some(e);
            }
        }
        match last_err {
            Some(e) => self.evict(lost, &e),
            None => Ok(()),
        }
    }

    /// Removes the workers at `lost`, each with what failed it (logged and
    /// counted), and shares their chunks out again; an error when none is left.
    fn evict(&mut self, mut lost: Vec<(usize, String)>, why: &Error) -> Result<()> {
        lost.sort_by_key(|(i, _)| *i);
        lost.dedup_by_key(|(i, _)| *i);
        for &(i, ref why) in lost.iter().rev() {
            let mut w = self.workers.remove(i);
            drop(self.meters.compute.remove(i));
            self.meters.evicted.increment(1);
            w.evicted(&format!("at step {}: {why}", self.state.step));
            eprintln!(
                "lockstep: evicted worker {} at step {}: {why}; its chunks are redone by the others",
                w.device(),
                self.state.step
            );
        }
        if self.workers.is_empty() && !self.state_behind {
            // Workers waiting to join take over from the coordinator's copy
            // of the state (not after whole steps: their state was the
            // lost worker's).
            self.device_step = false;
            self.poll_joiner();
            self.take_joining();
        }
        if self.workers.is_empty() {
            return Err(Error::runtime(format!(
                "every worker is lost (last: {why}); start workers and resume from the last checkpoint"
            )));
        }
        self.reshard();
        Ok(())
    }

    /// `gradients`, redone on the remaining workers whenever one is lost:
    /// the lost worker is evicted (logged and counted), its chunks are
    /// shared out again, and the result does not change.
    fn gradients(&mut self, draw: Draw, want_gen: bool) -> Result<()> {
        loop {
            self.lost.clear();
            match self.gradients_once(draw, want_gen) {
                Ok(()) => return Ok(()),
                Err(e) if !self.lost.is_empty() => {
                    let lost = std::mem::take(&mut self.lost);
                    self.evict(lost, &e)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Shards for the current workers, by capacity.
    fn reshard(&mut self) {
        let capacities: Vec<f64> = self.workers.iter().map(|w| w.capacity()).collect();
        self.shards = assign_shards(self.cfg.chunks(), &capacities);
        metrics::gauge!(crate::telemetry::names::WORKERS).set(self.workers.len() as f64);
    }

    /// Takes the workers that joined since the last step (from the
    /// `joiner`), gives them the current parameters, and reshards.
    fn admit(&mut self) -> Result<()> {
        self.poll_joiner();
        if self.joining.is_empty() {
            // Back to one worker after an eviction: whole steps again.
            if self.want_device_step && !self.device_step && self.device_step_eligible() {
                if let Err(e) = self.use_device_step(true) {
                    // The worker is gone too (its replacement, if any, takes over).
                    self.evict(vec![(0, e.to_string())], &e)?;
                }
            }
            return Ok(());
        }
        if self.ahead {
            // The step sent ahead runs first (nothing more is sent ahead
            // while workers wait): they join at the next step boundary.
            return Ok(());
        }
        // The state comes back from a worker running whole steps first.
        self.use_device_step(false)?;
        self.take_joining();
        self.reshard();
        Ok(())
    }

    /// Adds the workers that joined since it was last asked to `joining`.
    fn poll_joiner(&mut self) {
        let new = self.joiner.as_mut().map(|j| j()).unwrap_or_default();
        self.joining.extend(new);
    }

    /// Hands the state to the workers waiting to join and takes them in
    /// (those that cannot take it are told and dropped).
    fn take_joining(&mut self) {
        for mut w in std::mem::take(&mut self.joining) {
            if take_state(&self.state, w.as_mut()).is_err() {
                continue;
            }
            eprintln!("lockstep: {} joins at step {}", w.device(), self.state.step);
            self.meters.compute.push(Meters::compute_for(&format!("{}", self.meters.next_label)));
            self.meters.next_label += 1;
            self.workers.push(w);
        }
    }

    /// Lets workers join at step boundaries (whole steps stop while there
    /// are several).
    pub fn set_joiner(&mut self, j: Joiner) {
        self.joiner = Some(j);
    }

    /// Says at which step boundaries the caller will `sync` (read the
    /// state): between two others, a worker running whole steps gets the
    /// next step's request ahead of the current step's answer.
    pub fn set_sync_points(&mut self, f: SyncPoints) {
        self.sync_points = Some(f);
    }

    /// Phase 1 on the whole minibatch, reduced: fills grad_disc, stats, and
    /// grad_gen when eta = 0 (else phase 2 does, with v = grad_disc).
    fn gradients_once(&mut self, draw: Draw, want_gen: bool) -> Result<()> {
        let with_gen_grad = want_gen && self.game.eta == 0.0;
        let (step, loss_scale) = (self.state.step, self.state.loss_scale.scale);
        if step % DIGEST_EVERY == 0 && draw == Draw::First && self.workers.iter().any(|w| w.steps_itself()) {
            let d = params_digest(&self.state.gen, &self.state.disc);
            for w in self.workers.iter_mut().filter(|w| w.steps_itself()) {
                w.expect_digest(d);
            }
        }
        let t = std::time::Instant::now();
        self.on_workers(0, &|chunks| PhaseWork::One(ShardTask { step, draw, chunks, with_gen_grad, loss_scale }))?;
        self.reduce_phase(false, with_gen_grad)?;
        self.meters.phase_one.record(t.elapsed().as_secs_f64());
        if want_gen && !with_gen_grad {
            let t = std::time::Instant::now();
            let v = std::mem::take(&mut self.grad_disc);
            let r = self.on_workers(1, &|_| PhaseWork::Two(&v));
            self.grad_disc = v;
            r?;
            self.reduce_phase(true, false)?;
            self.meters.phase_two.record(t.elapsed().as_secs_f64());
        }
        Ok(())
    }

    /// The exact reduction of the phase just run (`gan::reduce`): the rows
    /// held here and, from each remote worker, its shard's block maxima and
    /// then its one row of integer sums.  Its results land in grad_disc,
    /// grad_gen and stats, by the phase's columns.  A worker that fails is
    /// marked lost.
    fn reduce_phase(&mut self, phase_two: bool, with_gen_grad: bool) -> Result<()> {
        let cols = crate::dist::wire::result_columns(&self.layout, phase_two, with_gen_grad);
        let stride = self.layout.stride();
        let (disc, gen, stats) = (self.layout.disc(), self.layout.gen(), self.layout.stats());
        let mut outs: Vec<&mut [f32]> = Vec::with_capacity(3);
        let (mut gd, mut gg, mut st) =
            (Some(&mut self.grad_disc[..]), Some(&mut self.grad_gen[..]), Some(&mut self.stats[..]));
        for c in &cols {
            let o = if *c == disc {
                gd.take()
            } else if *c == gen {
                gg.take()
            } else {
                debug_assert_eq!(*c, stats);
                st.take()
            };
            outs.push(o.expect("each column range once"));
        }
        let mut others = Remote { workers: &mut self.workers, shards: &self.shards, lost: &mut self.lost };
        self.fixed.reduce_with(
            &self.partials,
            stride,
            &self.live_rows,
            &cols,
            &mut others,
            &mut self.scratch,
            &mut outs,
        )
    }

    fn report(&self) -> StepReport {
        StepReport::new(self.state.step, &self.stats, sum_sq(&self.grad_disc), sum_sq(&self.grad_gen))
    }

    fn finite(&self) -> bool {
        all_finite(&self.grad_disc) && all_finite(&self.grad_gen) && all_finite(&self.stats)
    }

    /// One training step.  A step with a non-finite value changes nothing
    /// and is reported as skipped; too many in a row is an error.
    pub fn step(&mut self) -> Result<StepReport> {
        let started = std::time::Instant::now();
        self.admit()?;
        let mut rep;
        let mut ok;
        // What the last update moved, for the workers that step themselves.
        let (mut gen_moved, mut disc_moved, mut disc_is_v) = (false, false, false);
        match self.cfg.train.update {
            Update::Simultaneous if self.device_step => {
                (rep, ok) = self.device_step_once()?;
            }
            Update::Simultaneous => {
                self.gradients(Draw::First, true)?;
                rep = self.report();
                ok = self.finite();
                if ok {
                    let t = std::time::Instant::now();
                    self.state.opt_disc.step(&mut self.state.disc, &self.grad_disc);
                    self.state.opt_gen.step(&mut self.state.gen, &self.grad_gen);
                    self.meters.optimizer.record(t.elapsed().as_secs_f64());
                    (gen_moved, disc_moved, disc_is_v) = (true, true, self.game.eta != 0.0);
                }
            }
            Update::Alternating => {
                self.grad_gen.fill(0.0);
                self.gradients(Draw::First, false)?;
                rep = self.report();
                ok = self.finite();
                if ok {
                    self.state.opt_disc.step(&mut self.state.disc, &self.grad_disc);
                    self.push_update(Some((false, true, false)))?;
                    self.gradients(Draw::Second, true)?;
                    rep.grad_norm_gen = sum_sq(&self.grad_gen).sqrt();
                    ok = self.finite();
                    // A non-finite G phase skips the G step; the D step stands.
                    if ok {
                        self.state.opt_gen.step(&mut self.state.gen, &self.grad_gen);
                        gen_moved = true;
                    }
                }
            }
        }
        self.state.loss_scale.update(!ok);
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
        if self.device_step {
            self.meters.step.record(started.elapsed().as_secs_f64());
            return self.finish_step(rep);
        }
        if !(all_finite(&self.state.gen) && all_finite(&self.state.disc)) {
            return Err(Error::runtime(format!(
                "training diverged: the parameters became non-finite at step {} (from finite gradients: the \
                 learning rate is too large); lower optimizer.lr and resume from the last checkpoint or start again",
                self.state.step
            )));
        }
        self.push_update((gen_moved || disc_moved).then_some((gen_moved, disc_moved, disc_is_v)))?;
        self.meters.step.record(started.elapsed().as_secs_f64());
        self.finish_step(rep)
    }

    /// One step as the only worker's device step: the host supplies the
    /// step, the loss scale and the optimizer coefficients, and mirrors the
    /// optimizers' step counts when the step was taken.
    fn device_step_once(&mut self) -> Result<(StepReport, bool)> {
        let input = self.step_input(0, self.state.loss_scale);
        let with_gen_grad = self.game.eta == 0.0;
        // The next step's inputs if this one is applied, sent ahead unless
        // the state is needed at the boundary between them (a sync) or
        // workers wait to join.
        let boundary = self.state.step + 1;
        let next =
            (self.joining.is_empty() && self.sync_points.as_ref().is_some_and(|needs| !needs(boundary))).then(|| {
                let mut scale = self.state.loss_scale;
                scale.update(false);
                self.step_input(1, scale)
            });
        self.ahead = next.is_some();
        let t = std::time::Instant::now();
        let d = self.workers[0].device_step().expect("device step in use");
        let out = d.step_ahead(&input, with_gen_grad, next.as_ref()).map_err(|e| {
            Error::runtime(format!(
                "step {} failed on the only worker: {e}; start a worker and resume from the last checkpoint",
                self.state.step
            ))
        })?;
        match d.part_seconds() {
            // A remote worker's own times for phase 1, phase 2 and the optimizer.
            Some([one, two, opt]) => {
                let m = &self.meters;
                m.compute[0][0].record(one);
                m.compute[0][1].record(two);
                m.phase_one.record(one);
                m.phase_two.record(two);
                m.optimizer.record(opt);
            }
            None => {
                let secs = self.workers[0].reported_compute_seconds().unwrap_or_else(|| t.elapsed().as_secs_f64());
                self.meters.compute[0][0].record(secs);
            }
        }
        self.state_behind = true;
        let rep = StepReport::new(self.state.step, &out.stats, out.sq_norm_disc, out.sq_norm_gen);
        let ok = out.nonfinite == 0;
        if ok {
            self.state.opt_gen.t += 1;
            self.state.opt_disc.t += 1;
        }
        if out.bad_params > 0 {
            return Err(Error::runtime(format!(
                "training diverged: {} parameters became non-finite at step {} (from finite gradients: the \
                 learning rate is too large); lower optimizer.lr and resume from the last checkpoint or start again",
                out.bad_params, self.state.step
            )));
        }
        Ok((rep, ok))
    }

    /// The inputs of the step `ahead` steps from now, every step before it
    /// applied, under loss scale `scale`.
    fn step_input(&self, ahead: u64, scale: LossScale) -> crate::backend::StepInput {
        let (g, d) = (&self.state.opt_gen, &self.state.opt_disc);
        crate::backend::StepInput {
            step: self.state.step + ahead,
            loss_scale: scale.scale,
            gen: g.coefficients_of(g.t + 1 + ahead),
            disc: d.coefficients_of(d.t + 1 + ahead),
        }
    }

    /// The bookkeeping after every step: the step count and the meters.
    fn finish_step(&mut self, rep: StepReport) -> Result<StepReport> {
        self.state.step += 1;
        let m = &self.meters;
        m.steps.increment(1);
        m.samples.increment(self.cfg.train.batch as u64);
        if rep.skipped {
            m.skipped.increment(1);
        }
        m.value.set(rep.value);
        m.grad_gen.set(rep.grad_norm_gen);
        m.grad_disc.set(rep.grad_norm_disc);
        m.regularizer.set(rep.regularizer);
        m.loss_scale.set(self.state.loss_scale.scale as f64);
        Ok(rep)
    }
}

/// Steps between checks that every worker stepping its own replica holds
/// the coordinator's parameters (`params_digest`, compared at phase 1).
pub const DIGEST_EVERY: u64 = 100;

/// SHA-256 of the generator's then the discriminator's parameters
/// (little-endian f32 bytes).
pub fn params_digest(gen: &[f32], disc: &[f32]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(crate::f32le::encode(gen));
    h.update(crate::f32le::encode(disc));
    h.finalize().into()
}

/// Gives `w` the state: the whole of it to a worker that steps itself, the
/// parameters to the others.
fn hand_state(st: &TrainState, w: &mut dyn Backend) -> Result<()> {
    if w.steps_itself() {
        let d = w.device_step().ok_or_else(|| Error::runtime("a worker that steps itself takes the state"))?;
        d.load(&st.gen, &st.disc, [&st.opt_gen, &st.opt_disc])
    } else {
        w.set_params(&st.gen, &st.disc)
    }
}

/// `hand_state`, and when it fails: the worker is told it is left out and
/// why, and the line is logged.
fn take_state(st: &TrainState, w: &mut dyn Backend) -> Result<()> {
    hand_state(st, w).inspect_err(|e| {
        eprintln!("lockstep: {} could not join at step {}: {e}", w.device(), st.step);
        w.evicted(&format!("at step {}: it could not take the training state: {e}", st.step));
    })
}

/// The workers of a phase whose rows stayed on them, as the reduction's
/// contributors; every one is asked even after a failure (so that no answer
/// is left behind), and those that fail are marked lost.
struct Remote<'a> {
    workers: &'a mut [Box<dyn Backend>],
    shards: &'a [Range<usize>],
    lost: &'a mut Vec<(usize, String)>,
}

impl Remote<'_> {
    /// Runs `f` on every such worker; returns those it succeeded on, and the first error.
    fn each(&mut self, mut f: impl FnMut(&mut Box<dyn Backend>) -> Result<()>) -> (Vec<usize>, Result<()>) {
        let (mut ok, mut first_err) = (Vec::new(), None);
        for (i, (w, shard)) in self.workers.iter_mut().zip(self.shards).enumerate() {
            if shard.is_empty() || w.shard_maxima().is_none() {
                continue;
            }
            match f(w) {
                Ok(()) => ok.push(i),
                Err(e) => {
                    self.lost.push((i, e.to_string()));
                    first_err.get_or_insert(e);
                }
            }
        }
        (ok, first_err.map_or(Ok(()), Err))
    }
}

impl Contributors<Error> for Remote<'_> {
    fn maxima(&mut self, add: &mut dyn FnMut(&[f32])) -> Result<()> {
        self.each(|w| {
            add(w.shard_maxima().expect("a remote shard"));
            Ok(())
        })
        .1
    }

    fn sums(&mut self, maxima: &[f32], acc: &mut [i64]) -> Result<()> {
        // Every request goes out before any answer is awaited.
        let (started, r) = self.each(|w| w.start_sum(maxima));
        let mut first_err = r.err();
        for i in started {
            if let Err(e) = self.workers[i].finish_sum(acc) {
                self.lost.push((i, e.to_string()));
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Cuts `chunks` chunks into one contiguous run per worker, in proportion to
/// the workers' capacities (largest remainders first, ties to the earlier
/// worker); a worker may get none when there are more workers than chunks.
pub fn assign_shards(chunks: usize, capacities: &[f64]) -> Vec<Range<usize>> {
    let total: f64 = capacities.iter().map(|c| c.max(0.0)).sum();
    let share = |c: f64| if total > 0.0 { c.max(0.0) / total } else { 1.0 / capacities.len() as f64 };
    let exact: Vec<f64> = capacities.iter().map(|&c| share(c) * chunks as f64).collect();
    let mut counts: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    let mut order: Vec<usize> = (0..capacities.len()).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())).then(a.cmp(&b)));
    let mut left = chunks - counts.iter().sum::<usize>();
    for &i in order.iter().cycle() {
        if left == 0 {
            break;
        }
        counts[i] += 1;
        left -= 1;
    }
    let mut start = 0;
    counts
        .into_iter()
        .map(|n| {
            start += n;
            start - n..start
        })
        .collect()
}

/// out = the rows' columns `range` added in row (chunk) order: row 0, then
/// += row 1, ...  (split over threads by element, which does not change any
/// sum).  With each row unscaled first, the CPU twin of kernels/reduce.cu's
/// `reduce_unscale`.
pub fn reduce_rows(partials: &[f32], stride: usize, range: std::ops::Range<usize>, out: &mut [f32]) {
    let rows: Vec<usize> = (0..partials.len() / stride).collect();
    reduce_rows_in(partials, stride, &rows, range, out);
}

/// `reduce_rows` over the rows `rows` (in that order) of `partials`.  A
/// folded shard's first row is its rows' sum in chunk order, so skipping the
/// rest of the shard leaves every sum bit for bit as it was.
pub fn reduce_rows_in(partials: &[f32], stride: usize, rows: &[usize], range: std::ops::Range<usize>, out: &mut [f32]) {
    use rayon::prelude::*;
    const PIECE: usize = 4096;
    let row = |r: usize, start: usize, len: usize| &partials[r * stride + start..r * stride + start + len];
    let (&first, rest) = rows.split_first().expect("at least one chunk");
    out.par_chunks_mut(PIECE).enumerate().for_each(|(i, o)| {
        let start = range.start + i * PIECE;
        o.copy_from_slice(row(first, start, o.len()));
        let len = o.len();
        for &r in rest {
            for (o, v) in o.iter_mut().zip(row(r, start, len)) {
                *o += v;
            }
        }
    });
}

/// Whether every value of `v` is finite (split over threads).
pub fn all_finite(v: &[f32]) -> bool {
    use rayon::prelude::*;
    v.par_chunks(1 << 15).all(|c| c.iter().all(|x| x.is_finite()))
}

/// Σ v² in f64 (for the step's report): blocks of 2^15 values summed over
/// threads, then the blocks' sums added in order, so the bits do not depend
/// on the thread count.  Twin of kernels/reduce.cu's `step_report` (to 1e-12).
pub fn sum_sq(v: &[f32]) -> f64 {
    use rayon::prelude::*;
    const BLOCK: usize = 1 << 15;
    let block = |c: &[f32]| c.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
    let n = v.len().div_ceil(BLOCK);
    // The blocks' sums on the stack (no allocation per step) up to 8 M values.
    let mut small = [0.0f64; 256];
    let mut large = Vec::new();
    let sums: &mut [f64] = if n <= small.len() {
        &mut small[..n]
    } else {
        large.resize(n, 0.0);
        &mut large
    };
    sums.par_iter_mut().zip(v.par_chunks(BLOCK)).for_each(|(s, c)| *s = block(c));
    sums.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::assign_shards;

    #[test]
    fn shards_follow_capacity_and_cover_every_chunk_once() {
        assert_eq!(assign_shards(8, &[1.0]), vec![0..8]);
        assert_eq!(assign_shards(8, &[1.0, 1.0]), vec![0..4, 4..8]);
        assert_eq!(assign_shards(8, &[1.0, 1.0, 1.0]), vec![0..3, 3..6, 6..8]);
        assert_eq!(assign_shards(8, &[3.0, 1.0]), vec![0..6, 6..8]);
        assert_eq!(assign_shards(2, &[1.0, 1.0, 1.0]), vec![0..1, 1..2, 2..2]);
        for n in 1..40 {
            for caps in [vec![1.0, 2.0, 3.0], vec![5.0, 0.5], vec![1.0; 7]] {
                let s = assign_shards(n, &caps);
                assert_eq!(s.len(), caps.len());
                assert_eq!(s[0].start, 0);
                assert_eq!(s.last().unwrap().end, n);
                assert!(s.windows(2).all(|w| w[0].end == w[1].start));
            }
        }
    }
}
