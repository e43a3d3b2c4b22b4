//! The compute backends behind one interface.  A backend owns a replica of
//! both networks and computes, for a shard (a run of whole chunks of the
//! minibatch), the two phases of a step as per-chunk partial sums (see
//! `gan::phases::PartialLayout`); the caller reduces them exactly
//! (`gan::reduce`) and runs the optimizer on fp32 master weights.  The CPU backend is the
//! reference; a CUDA backend keeps device buffers, a stream and fp16 copies
//! behind the same calls (`cuda`).

pub mod cpu;
pub mod cuda;
pub mod synthetic;

use std::ops::Range;

use crate::error::{Error, Result};
use crate::gan::phases::{Game, PartialLayout};

pub use cpu::CpuBackend;
pub use synthetic::SyntheticBackend;

/// The checks every backend makes of what it is handed (`backend` names
/// it in the errors): a shard within the minibatch's `chunks`, a buffer of
/// one row of partial sums per chunk of it, parameters of the game's sizes.
pub(crate) fn check_shard(backend: &str, shard: &Range<usize>, chunks: usize) -> Result<()> {
    if shard.is_empty() || shard.end > chunks {
        return Err(Error::runtime(format!("{backend} backend: bad chunk range {shard:?}")));
    }
    Ok(())
}

pub(crate) fn check_rows(backend: &str, layout: &PartialLayout, chunks: usize, out: &[f32]) -> Result<()> {
    if out.len() != chunks * layout.stride() {
        return Err(Error::runtime(format!(
            "{backend} backend: partial-sum buffer holds {} values, expected {chunks} chunks × {}",
            out.len(),
            layout.stride()
        )));
    }
    Ok(())
}

pub(crate) fn check_params(backend: &str, layout: &PartialLayout, gen: &[f32], disc: &[f32]) -> Result<()> {
    if gen.len() != layout.n_gen || disc.len() != layout.n_disc {
        return Err(Error::runtime(format!(
            "{backend} backend: got {} + {} parameters, expected {} + {}",
            gen.len(),
            disc.len(),
            layout.n_gen,
            layout.n_disc
        )));
    }
    Ok(())
}

/// Which minibatch of a step a phase works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Draw {
    /// The step's minibatch (the only one of a simultaneous step; the D step of an alternating one).
    First,
    /// The fresh minibatch of an alternating step's G step.
    Second,
}

/// The work of one phase 1 on one backend.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardTask {
    pub step: u64,
    pub draw: Draw,
    /// The chunks of the global minibatch this backend computes.
    pub chunks: Range<usize>,
    /// Also compute grad_G in phase 1 (when eta = 0 there is no phase 2).
    pub with_gen_grad: bool,
    /// The loss scale fp16 backends multiply their backward seeds by (and
    /// divide the gradient sums by); see `gan::loss_scale`.
    pub loss_scale: f32,
}

/// Everything a backend needs to build its replica.
#[derive(Debug, Clone)]
pub struct Setup {
    pub game: Game,
    /// The real samples (shared by every backend of the process).
    pub data: std::sync::Arc<dyn crate::data::Dataset>,
    pub seed: u64,
    /// Samples per chunk.
    pub chunk: usize,
    /// Chunks per minibatch (the most one shard can hold).
    pub chunks: usize,
    /// Alternating updates (two draws per step).
    pub alternating: bool,
}

impl Setup {
    /// The key of a step's draw of real samples (`DrawKey::base` counts the
    /// draws before it: one per step, two with alternating updates).
    pub fn draw_key(&self, step: u64, draw: Draw) -> crate::data::DrawKey {
        let batch = (self.chunk * self.chunks) as u64;
        let (purpose, base) = match (draw, self.alternating) {
            (Draw::First, false) => (crate::rng::Purpose::Real, step * batch),
            (Draw::First, true) => (crate::rng::Purpose::Real, 2 * step * batch),
            (Draw::Second, _) => (crate::rng::Purpose::RealG, (2 * step + 1) * batch),
        };
        crate::data::DrawKey { seed: self.seed, step, purpose, base }
    }
}

/// One phase's work for one backend.
#[derive(Debug, Clone)]
pub enum PhaseWork<'a> {
    One(ShardTask),
    /// Phase 2 with v = grad_D V of the whole minibatch.
    Two(&'a [f32]),
}

pub trait Backend: Send {
    /// `cpu` or `cuda`.
    fn name(&self) -> &'static str;
    /// The device, in words (for logs, bench and summary.json).
    fn device(&self) -> String;
    /// Relative speed, for sizing shards (a CPU backend: its thread count).
    fn capacity(&self) -> f64;
    /// The compute time of the last phase as the backend measured it (a
    /// remote worker's own figure); None: the caller times the call.
    fn reported_compute_seconds(&self) -> Option<f64> {
        None
    }
    /// Takes the current fp32 master parameters (after every optimizer step).
    fn set_params(&mut self, gen: &[f32], disc: &[f32]) -> Result<()>;
    /// Phase 1 on `task`'s chunks: `out` holds one row of partial sums per chunk.
    fn phase1(&mut self, task: &ShardTask, out: &mut [f32]) -> Result<()>;
    /// Phase 2 on the chunks of the last phase 1: v = grad_D V of the whole
    /// minibatch; writes each chunk's grad_G into `out`.
    fn phase2(&mut self, v: &[f32], out: &mut [f32]) -> Result<()>;
    /// Runs `work`: `phase1` or `phase2`.
    fn run(&mut self, work: &PhaseWork<'_>, out: &mut [f32]) -> Result<()> {
        match work {
            PhaseWork::One(task) => self.phase1(task, out),
            PhaseWork::Two(v) => self.phase2(v, out),
        }
    }
    /// Sends `work` off without waiting for its result, when the backend
    /// computes elsewhere (a remote worker: its request goes out, and
    /// `finish` waits for the answer); false when it computes in `run`.  The
    /// trainer starts every remote worker's phase before it waits for any.
    fn start(&mut self, _work: &PhaseWork<'_>) -> Result<bool> {
        Ok(false)
    }
    /// Waits for the phase `start` sent off and writes its rows into `out`.
    fn finish(&mut self, _out: &mut [f32]) -> Result<()> {
        Err(Error::runtime("finish without a started phase"))
    }
    /// Some when the last phase's rows stayed where they were computed (a
    /// remote worker's): the shard's block maxima over the phase's result
    /// columns (`gan::reduce::FixedPoint::blocks_of`).  The caller then
    /// sends the run-wide maxima (`start_sum`) and adds the shard's one row
    /// of integer sums (`finish_sum`) instead of reading rows from `out`.
    fn shard_maxima(&self) -> Option<&[f32]> {
        None
    }
    /// Hands over the run-wide maxima of the last phase.
    fn start_sum(&mut self, _maxima: &[f32]) -> Result<()> {
        Err(Error::runtime("start_sum on a backend whose rows are local"))
    }
    /// Waits for the shard's integer sums over the phase's result columns
    /// and adds them into `acc` (wrapping).
    fn finish_sum(&mut self, _acc: &mut [i64]) -> Result<()> {
        Err(Error::runtime("finish_sum on a backend whose rows are local"))
    }
    /// Whether this backend steps its own replica from the reduced gradients
    /// (a remote worker among several): it is handed the whole state when it
    /// joins (`DeviceStep::load`, through `device_step`) and then every
    /// applied update (`apply`) instead of the parameters after every step.
    fn steps_itself(&self) -> bool {
        false
    }
    /// An applied update's reduced gradients, for a backend that steps itself.
    fn apply(&mut self, _u: &GradUpdate<'_>) -> Result<()> {
        Err(Error::runtime("apply on a backend that does not step itself"))
    }
    /// The digest (`gan::trainer::params_digest`) the parameters of the
    /// next phase 1 must have: a backend that steps itself checks its
    /// replica against it (every `gan::trainer::DIGEST_EVERY` steps).
    fn expect_digest(&mut self, _digest: [u8; 32]) {}
    /// The trainer evicts this backend (`why`, one line): a remote worker
    /// is told, so that it exits saying why instead of as if training had
    /// finished.
    fn evicted(&mut self, _why: &str) {}
    /// The whole step run by the backend itself, when it can (the CUDA
    /// backend: one CUDA graph per step); see `DeviceStep`.
    fn device_step(&mut self) -> Option<&mut dyn DeviceStep> {
        None
    }
}

/// An optimizer update as the gradients it applies (`Backend::apply`).
#[derive(Debug, Clone, Copy)]
pub struct GradUpdate<'a> {
    pub step: u64,
    /// The reduced gradients; None: that player did not move.
    pub gen: Option<&'a [f32]>,
    pub disc: Option<&'a [f32]>,
    /// The discriminator's gradient is the v of this step's phase 2.
    pub disc_is_v: bool,
    /// The optimizers' step counts (generator, discriminator) after it.
    pub t: [u64; 2],
}

/// What the trainer hands a device-resident step: the step, the loss scale,
/// and each player's optimizer coefficients (`Optimizer::coefficients`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepInput {
    pub step: u64,
    pub loss_scale: f32,
    pub gen: [f32; 2],
    pub disc: [f32; 2],
}

/// What a device-resident step reports back.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StepOutput {
    /// Non-finite values among the reduced gradients and stats (then nothing was updated).
    pub nonfinite: u32,
    /// Parameters that came out of the update non-finite.
    pub bad_params: u32,
    pub stats: [f32; crate::gan::phases::stat::COUNT],
    pub sq_norm_disc: f64,
    pub sq_norm_gen: f64,
}

/// Per-step figures of a device-resident step (for `lockstep bench`).
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct StepProfile {
    /// Nodes of the captured graph, and how many of them are kernels.
    pub graph_nodes: usize,
    pub graph_kernels: usize,
    /// Mean milliseconds of phase 1, phase 2 and the optimizer over the profiled steps (CUDA events).
    pub phase_ms: [f32; 3],
    pub device_memory_mib: f64,
}

/// A whole simultaneous step on one backend: both phases on the full
/// minibatch, the reduction in chunk order, the non-finite check, and the
/// optimizers on fp32 master weights and moments the backend keeps.  The
/// trainer uses it when that backend is its only worker; the results are bit
/// for bit those of the host-driven step on the same backend (tested).
pub trait DeviceStep {
    /// Takes over the parameters and optimizer moments (m, v: empty for SGD).
    fn load(&mut self, gen: &[f32], disc: &[f32], opt: [&crate::gan::optim::Optimizer; 2]) -> Result<()>;
    /// One step (the caller skips the update's bookkeeping when `nonfinite` > 0).
    fn step(&mut self, input: &StepInput, with_gen_grad: bool) -> Result<StepOutput>;
    /// `step`, with the inputs the next step will have if this one is
    /// applied (`next`, when the caller will not need the state between
    /// them): a remote worker sends that request ahead and starts it without
    /// waiting for the round trip.  The default ignores `next`.
    fn step_ahead(&mut self, input: &StepInput, with_gen_grad: bool, next: Option<&StepInput>) -> Result<StepOutput> {
        let _ = next;
        self.step(input, with_gen_grad)
    }
    /// Copies the parameters and moments back.
    fn store(&mut self, gen: &mut [f32], disc: &mut [f32], opt: [&mut crate::gan::optim::Optimizer; 2]) -> Result<()>;
    /// Times the step's parts (phase 1, phase 2, optimizer) with CUDA events
    /// between them (three graph launches per step instead of one).
    fn set_profiling(&mut self, on: bool) -> Result<()>;
    fn profile(&mut self) -> Result<StepProfile>;
    /// Seconds of the last step's phase 1, phase 2 and optimizer, when the
    /// step measures them as it goes (a remote worker's own figures).
    fn part_seconds(&self) -> Option<[f64; 3]> {
        None
    }
}

/// Which backend a command asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    Auto,
    Cpu,
    Cuda,
    /// Pseudo-gradients after a configured time: load tests of the control plane, no training.
    Synthetic,
}

impl std::str::FromStr for BackendChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(BackendChoice::Auto),
            "cpu" => Ok(BackendChoice::Cpu),
            "cuda" => Ok(BackendChoice::Cuda),
            "synthetic" => Ok(BackendChoice::Synthetic),
            _ => Err(Error::input(format!("--backend {s}: expected auto, cpu, cuda or synthetic"))),
        }
    }
}

/// A backend and the device it runs on (`--backend`, `--device`,
/// `--synthetic-ms`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackendSpec {
    pub choice: BackendChoice,
    /// The GPU's index, for `cuda` (and `auto` when it picks CUDA).
    pub device: usize,
    /// A CPU backend's own thread pool of this many threads (each of
    /// several in-process workers); 0: the process's pool.
    pub threads: usize,
    /// `synthetic`: the compute time of one phase on the whole minibatch.
    pub synthetic: std::time::Duration,
}

impl BackendSpec {
    pub fn new(choice: BackendChoice, device: usize) -> BackendSpec {
        BackendSpec {
            choice,
            device,
            threads: 0,
            synthetic: std::time::Duration::from_secs_f64(synthetic::DEFAULT_MS * 1e-3),
        }
    }

    pub fn cpu() -> BackendSpec {
        BackendSpec::new(BackendChoice::Cpu, 0)
    }
}

/// The backend `choice` stands for here: `auto` is CUDA when a driver,
/// NVRTC, cuBLAS and a GPU are present, else the CPU (saying why, once).
pub fn resolve(choice: BackendChoice) -> BackendChoice {
    match choice {
        BackendChoice::Auto => match cuda::unavailable() {
            None => BackendChoice::Cuda,
            Some(why) => {
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| eprintln!("lockstep: backend auto: {why}; using the CPU backend"));
                BackendChoice::Cpu
            }
        },
        c => c,
    }
}

/// (name, device, capacity) of the backend `spec` will build, known before
/// its replica is (a worker describes itself when it joins).
pub fn describe(spec: BackendSpec) -> Result<(&'static str, String, f64)> {
    Ok(match resolve(spec.choice) {
        BackendChoice::Cuda => {
            let (device, capacity) = cuda::describe(spec.device)?;
            ("cuda", device, capacity)
        }
        BackendChoice::Synthetic => ("synthetic", synthetic::device(spec.synthetic), 1.0),
        _ => {
            let threads = cpu::threads(spec.threads);
            ("cpu", cpu::device_with(threads), threads as f64)
        }
    })
}

/// Builds the backend asked for; `cuda` without a usable GPU is an input
/// error naming what is missing.
pub fn create(spec: BackendSpec, setup: &Setup) -> Result<Box<dyn Backend>> {
    let choice = match (spec.choice, resolve(spec.choice)) {
        // `auto` runs what the GPU cannot on the CPU, saying so once.
        (BackendChoice::Auto, BackendChoice::Cuda) => match cuda::unsupported(setup) {
            Some(why) => {
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| eprintln!("lockstep: backend auto: {why}; using the CPU backend"));
                BackendChoice::Cpu
            }
            None => BackendChoice::Cuda,
        },
        (_, c) => c,
    };
    Ok(match choice {
        BackendChoice::Cuda => Box::new(cuda::CudaBackend::new(setup, spec.device)?),
        BackendChoice::Synthetic => Box::new(SyntheticBackend::new(setup, spec.synthetic)),
        _ => Box::new(CpuBackend::with_threads(setup, spec.threads)?),
    })
}
