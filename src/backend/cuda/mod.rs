//! The CUDA backend: fp16 weights and activations on one GPU, GEMMs through
//! cuBLAS (fp16 operands, fp32 accumulation), everything else through the
//! kernels in `kernels/*.cu`; partial sums in fp32, loss-scaled backward
//! passes unscaled on the device (see `gan::loss_scale`).  The fp32 master
//! weights and the optimizers stay with the trainer, as for every backend.
//!
//! Device layout: every activation-like buffer holds, per chunk, a block of
//! 2n rows (n = samples per chunk): rows 0..n are the chunk's real samples,
//! rows n..2n its fake ones.  G runs on rows n..2n, D on all 2n (phase 1) or
//! on the fake rows (phase 2), and D's input x is G's output buffer (the
//! real samples are drawn into its first n rows), so no copies are needed.

pub mod device;
pub mod kernels;
pub mod net;
pub mod resident;

use half::f16;

use super::{Backend, Draw, Setup, ShardTask};
use crate::error::{Error, Result};
use crate::gan::objective::Objective;
use crate::gan::phases::PartialLayout;
use crate::rng::Purpose;
use device::{DevBuf, Gpu, Rows};
use net::{DevNet, GradOut};

/// Why CUDA cannot be used here (None: the driver, NVRTC and cuBLAS load and
/// there is at least one device).  Probes with `is_culib_present` first:
/// cudarc panics when a library is missing.
pub fn unavailable() -> Option<String> {
    // SAFETY: each probe only tries to open a shared library.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Some("no CUDA driver found".into());
    }
    if !kernels::nvrtc_present() {
        return Some("the CUDA driver is present but NVRTC (libnvrtc) is not".into());
    }
    // SAFETY: as above.
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Some("the CUDA driver is present but cuBLAS (libcublas) is not".into());
    }
    match cudarc::driver::CudaContext::device_count() {
        Ok(n) if n > 0 => None,
        Ok(_) => Some("the CUDA driver reports no GPU".into()),
        Err(e) => Some(format!("the CUDA driver cannot list GPUs ({e})")),
    }
}

/// Checks that GPU `ordinal` exists (an input error naming the fix if not).
fn check_device(ordinal: usize) -> Result<()> {
    if let Some(why) = unavailable() {
        return Err(Error::input(format!("{why}; use --backend cpu")));
    }
    let count = cudarc::driver::CudaContext::device_count().unwrap_or(0) as usize;
    if ordinal >= count {
        return Err(Error::input(format!(
            "--device {ordinal}: this machine has {count} GPU(s), numbered 0 to {}",
            count.saturating_sub(1)
        )));
    }
    Ok(())
}

/// GPU `ordinal` in words, and its capacity for sizing shards (its number of SMs).
pub fn describe(ordinal: usize) -> Result<(String, f64)> {
    check_device(ordinal)?;
    let ctx = cudarc::driver::CudaContext::new(ordinal).map_err(device::cuda_err("context"))?;
    let name = ctx.name().map_err(device::cuda_err("device name"))?;
    let sms = ctx
        .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .map_err(device::cuda_err("attribute"))?;
    Ok((device_name(&name, ordinal), sms as f64))
}

fn device_name(name: &str, ordinal: usize) -> String {
    format!("{name} (cuda:{ordinal})")
}

/// The objective as kernels/objective.cu takes it.
pub fn objective_code(o: Objective) -> i32 {
    match o {
        Objective::Gan => 0,
        Objective::Nsgan => 1,
        Objective::Wgan => 2,
    }
}

pub struct CudaBackend {
    gpu: Gpu,
    setup: Setup,
    layout: PartialLayout,
    gen: DevNet,
    disc: DevNet,
    /// G's input: latents on rows n..2n of each block.
    z: DevBuf<f16>,
    /// The fp32 parameters as received ([gen | pad | disc]) and their fp16 copy.
    master: DevBuf<f32>,
    params: DevBuf<f16>,
    /// Where D's parameters start in `master`/`params` (aligned for cuBLAS).
    disc_at: usize,
    /// Host staging for `set_params` (every host-driven step), allocated once.
    staged: Vec<f32>,
    /// v = grad_D V of the minibatch, fp32 as received and fp16.
    v32: DevBuf<f32>,
    v16: DevBuf<f16>,
    /// Seeds of D's backward (ȳ) and of its tangent (ẏ̄), width 1.
    seed: DevBuf<f16>,
    seed_dot: DevBuf<f16>,
    /// D's input adjoint at the fake samples = G's output adjoint.
    xbar: DevBuf<f16>,
    /// One row of partial sums per chunk.
    partials: DevBuf<f32>,
    /// What a step reads on the device (`StepIn`) and reports (`StepOut`).
    step_in: DevBuf<u32>,
    step_out: DevBuf<u32>,
    centres: DevBuf<f64>,
    last: Option<ShardTask>,
    /// The whole step as one CUDA graph, once `DeviceStep::load` was called.
    resident: Option<resident::Resident>,
}

/// The words of the device's step input (kernels read the step, the loss
/// scale and the optimizer coefficients here, so that a captured graph
/// replays with fresh values): step (u64), loss scale, 1 / loss scale, 1.0,
/// the generator's two optimizer coefficients, the discriminator's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepIn {
    pub step: u64,
    pub loss_scale: f32,
    pub gen: [f32; 2],
    pub disc: [f32; 2],
}

impl StepIn {
    pub const WORDS: usize = 10;
    const STEP: u64 = 0;
    const SCALE: u64 = 8;
    const INV_SCALE: u64 = 12;
    const ONE: u64 = 16;
    const GEN: u64 = 20;
    const DISC: u64 = 28;

    pub fn words(&self) -> [u32; Self::WORDS] {
        let f = |x: f32| x.to_bits();
        [
            self.step as u32,
            (self.step >> 32) as u32,
            f(self.loss_scale),
            f(1.0 / self.loss_scale),
            f(1.0),
            f(self.gen[0]),
            f(self.gen[1]),
            f(self.disc[0]),
            f(self.disc[1]),
            0,
        ]
    }
}

/// Byte offsets in the device's step output: non-finite gradient sums
/// (u32), non-finite parameters after the update (u32), the stats (f32 ×
/// 5), ||grad_D||² and ||grad_G||² (f64).
pub struct StepOut;

impl StepOut {
    pub const WORDS: usize = 12;
    pub const NONFINITE: u64 = 0;
    pub const BAD_PARAMS: u64 = 4;
    pub const STATS: u64 = 8;
    pub const SQ_DISC: u64 = 32;
    pub const SQ_GEN: u64 = 40;
}

/// Why the CUDA backend cannot run `setup`'s game (None: it can): today it
/// runs MLPs on mixtures of Gaussians only.
pub fn unsupported(setup: &Setup) -> Option<String> {
    let game = &setup.game;
    match setup.data.mixture() {
        Some(_) if game.gen.is_mlp() && game.disc.is_mlp() => None,
        _ => Some(format!(
            "the CUDA backend runs MLPs on mixtures of Gaussians only for now ({}; conv, conv_t, reshape and \
             flatten layers and image data run on the CPU)",
            setup.data.describe()
        )),
    }
}

impl CudaBackend {
    /// Opens GPU `ordinal` and allocates every buffer for up to `setup.chunks` chunks.
    pub fn new(setup: &Setup, ordinal: usize) -> Result<CudaBackend> {
        let game = &setup.game;
        if let Some(why) = unsupported(setup) {
            return Err(Error::input(format!("{why}; use --backend cpu")));
        }
        let mixture = setup.data.mixture().expect("checked by unsupported");
        check_device(ordinal)?;
        let (n, k) = (setup.chunk, setup.chunks);
        let rows = k * 2 * n;
        if rows * game.gen.max_width().max(game.disc.max_width()) >= i32::MAX as usize {
            return Err(Error::input("the batch is too large for the CUDA backend's 32-bit indexing"));
        }
        let gpu = Gpu::open(ordinal)?;
        let layout = game.layout();
        let disc_at = layout.n_gen.next_multiple_of(64);
        let total = disc_at + layout.n_disc;
        let centres: Vec<f64> = mixture.centres.iter().flat_map(|c| [c[0], c[1]]).collect();
        let mut centres_dev = gpu.alloc::<f64>(centres.len())?;
        gpu.upload(&centres, &mut centres_dev)?;
        Ok(CudaBackend {
            gen: DevNet::new(&gpu, &game.gen, k, 2 * n)?,
            disc: DevNet::new(&gpu, &game.disc, k, 2 * n)?,
            z: gpu.alloc(rows * game.gen.input)?,
            master: gpu.alloc(total)?,
            params: gpu.alloc(total)?,
            disc_at,
            staged: vec![0.0; total],
            v32: gpu.alloc(layout.n_disc)?,
            v16: gpu.alloc(layout.n_disc)?,
            seed: gpu.alloc(rows)?,
            seed_dot: gpu.alloc(rows)?,
            xbar: gpu.alloc(rows * game.disc.input)?,
            partials: gpu.alloc(k * layout.stride())?,
            step_in: gpu.alloc(StepIn::WORDS)?,
            step_out: gpu.alloc(StepOut::WORDS)?,
            centres: centres_dev,
            last: None,
            resident: None,
            layout,
            setup: setup.clone(),
            gpu,
        })
    }

    fn pg(&self) -> u64 {
        self.params.ptr
    }

    fn pd(&self) -> u64 {
        self.params.at(self.disc_at)
    }

    /// Fills `staged` in the layout of the master weights (and of their fp16
    /// copy and Adam's moments): the generator's values, zeros up to
    /// `disc_at`, the discriminator's.  An empty slice stages zeros (SGD has
    /// no moments).
    fn stage_players(&mut self, gen: &[f32], disc: &[f32]) {
        self.staged.fill(0.0);
        if !gen.is_empty() {
            self.staged[..gen.len()].copy_from_slice(gen);
        }
        if !disc.is_empty() {
            self.staged[self.disc_at..self.disc_at + disc.len()].copy_from_slice(disc);
        }
    }

    /// The generator's and the discriminator's parts of a buffer in that layout.
    fn players<'a>(&self, host: &'a [f32]) -> (&'a [f32], &'a [f32]) {
        (&host[..self.layout.n_gen], &host[self.disc_at..self.disc_at + self.layout.n_disc])
    }

    fn write_step_in(&mut self, s: &StepIn) -> Result<()> {
        self.gpu.upload(&s.words(), &mut self.step_in)
    }

    fn step_in_at(&self, offset: u64) -> u64 {
        self.step_in.ptr + offset
    }

    /// Enqueues phase 1 on `chunks` (their rows of partial sums at the start
    /// of `partials`), with the step and loss scale read from `step_in`: the
    /// draws, both forward passes, the seeds and stats, D's backward (and the
    /// generator's gradient when `with_gen_grad`), then, when `unscale`, the
    /// gradient columns unscaled, their non-finite values counted at
    /// StepOut::NONFINITE (the resident step unscales while it reduces).
    fn enqueue_phase1(
        &mut self,
        chunks: std::ops::Range<usize>,
        draw: Draw,
        with_gen_grad: bool,
        unscale: bool,
    ) -> Result<()> {
        let k = chunks.len();
        let (all, real, fake) = self.rows(k);
        let s = &self.setup;
        let n = s.chunk;
        let (lat, rl) = match draw {
            Draw::First => (Purpose::Latent, Purpose::Real),
            Draw::Second => (Purpose::LatentG, Purpose::RealG),
        };
        let key = [s.seed as u32, (s.seed >> 32) as u32];
        let first = (chunks.start * n) as u32;
        let (step, scale) = (self.step_in_at(StepIn::STEP), self.step_in_at(StepIn::SCALE));
        let x = self.gen.output();
        let gpu = &self.gpu;
        gpu.normals(false, self.z.ptr, key, lat as u32, step, first, fake, s.game.gen.input)?;
        gpu.mixture(
            false,
            x,
            key,
            rl as u32,
            step,
            first,
            &self.centres,
            s.data.mixture().expect("checked by unsupported").std,
            real,
        )?;
        let (pg, pd) = (self.pg(), self.pd());
        self.gen.forward(gpu, pg, self.z.ptr, fake)?;
        self.disc.forward(gpu, pd, x, all)?;
        let obj = objective_code(s.game.objective);
        let (stride, inv_b) = (self.layout.stride(), self.inv_b());
        let stats = self.partials.at(self.layout.stats().start);
        gpu.phase1_seeds(self.disc.output(), self.seed.ptr, stats, stride, k, n, obj, inv_b, scale)?;
        let dgrads = GradOut { base: self.partials.ptr, stride };
        self.disc.backward(gpu, pd, x, all, self.seed.ptr, Some(dgrads), None)?;
        let mut cols = self.layout.disc();
        if with_gen_grad {
            gpu.gen_loss_seeds(self.disc.output(), self.seed.ptr, k, n, obj, inv_b, scale)?;
            self.disc.backward(gpu, pd, x, fake, self.seed.ptr, None, Some(self.xbar.ptr))?;
            let ggrads = GradOut { base: self.partials.at(self.layout.n_disc), stride };
            self.gen.backward(gpu, pg, self.z.ptr, fake, self.xbar.ptr, Some(ggrads), None)?;
            cols = 0..self.layout.n_disc + self.layout.n_gen;
        }
        if unscale {
            self.unscale(k, cols)?;
        }
        Ok(())
    }

    /// Enqueues phase 2 on the `k` chunks of the last phase 1, with v (the
    /// whole minibatch's grad_D V) cast from fp32 at `v32` (None: already in
    /// `v16`): D's jvp along v, the seeds, D's jvp_backward and G's backward,
    /// and, when `unscale`, the generator's gradient columns unscaled and checked.
    fn enqueue_phase2(&mut self, k: usize, v32: Option<u64>, unscale: bool) -> Result<()> {
        let (_, _, fake) = self.rows(k);
        let s = &self.setup;
        let n = s.chunk;
        let gpu = &self.gpu;
        if let Some(v32) = v32 {
            gpu.f32_to_f16(v32, self.v16.ptr, self.layout.n_disc)?;
        }
        let x = self.gen.output();
        let (pg, pd) = (self.pg(), self.pd());
        self.disc.jvp(gpu, pd, self.v16.ptr, x, None, fake)?;
        let ddot =
            self.disc.tangent().ok_or_else(|| Error::runtime("cuda backend: D's output has no tangent along v"))?;
        let obj = objective_code(s.game.objective);
        let two_eta = (2.0 * s.game.eta) as f32;
        let (scale, inv_b) = (self.step_in_at(StepIn::SCALE), self.inv_b());
        gpu.phase2_seeds(self.disc.output(), ddot, self.seed.ptr, self.seed_dot.ptr, k, n, obj, two_eta, inv_b, scale)?;
        self.disc.jvp_backward(
            gpu,
            pd,
            self.v16.ptr,
            x,
            None,
            fake,
            self.seed.ptr,
            self.seed_dot.ptr,
            self.xbar.ptr,
            None,
        )?;
        let ggrads = GradOut { base: self.partials.at(self.layout.n_disc), stride: self.layout.stride() };
        self.gen.backward(gpu, pg, self.z.ptr, fake, self.xbar.ptr, Some(ggrads), None)?;
        if unscale {
            self.unscale(k, self.layout.gen())?;
        }
        Ok(())
    }

    /// Divides the gradient columns `cols` of the first `k` rows by the loss
    /// scale and counts the non-finite results at StepOut::NONFINITE.
    fn unscale(&self, k: usize, cols: std::ops::Range<usize>) -> Result<()> {
        let flag = self.step_out.ptr + StepOut::NONFINITE;
        let inv = self.step_in_at(StepIn::INV_SCALE);
        self.gpu.unscale_check(self.partials.at(cols.start), self.layout.stride(), k, cols.len(), inv, flag)
    }

    /// The row selections of a phase on `chunks` chunks: (all 2n rows, real, fake).
    fn rows(&self, chunks: usize) -> (Rows, Rows, Rows) {
        let n = self.setup.chunk;
        let r = |start, count| Rows { chunks, block: 2 * n, start, count };
        (r(0, 2 * n), r(0, n), r(n, n))
    }

    fn inv_b(&self) -> f32 {
        1.0 / self.setup.game.batch as f32
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn device(&self) -> String {
        device_name(&self.gpu.name, self.gpu.ordinal)
    }

    fn capacity(&self) -> f64 {
        // Shards are sized by capacity; a CPU backend counts its threads.
        self.gpu.sms as f64
    }

    fn set_params(&mut self, gen: &[f32], disc: &[f32]) -> Result<()> {
        super::check_params("cuda", &self.layout, gen, disc)?;
        self.stage_players(gen, disc);
        self.gpu.upload(&self.staged, &mut self.master)?;
        self.gpu.f32_to_f16(self.master.ptr, self.params.ptr, self.master.len())
    }

    fn phase1(&mut self, task: &ShardTask, out: &mut [f32]) -> Result<()> {
        let k = task.chunks.len();
        super::check_shard("cuda", &task.chunks, self.setup.chunks)?;
        if !(task.loss_scale.is_finite() && task.loss_scale > 0.0) {
            return Err(Error::runtime(format!(
                "cuda backend: loss scale {} is not a positive number",
                task.loss_scale
            )));
        }
        super::check_rows("cuda", &self.layout, k, out)?;
        self.write_step_in(&StepIn { step: task.step, loss_scale: task.loss_scale, gen: [0.0; 2], disc: [0.0; 2] })?;
        self.gpu.zero(self.step_out.ptr, StepOut::WORDS * 4)?;
        self.enqueue_phase1(task.chunks.clone(), task.draw, task.with_gen_grad, true)?;
        self.gpu.download(&self.partials, out)?;
        self.last = Some(task.clone());
        Ok(())
    }

    fn phase2(&mut self, v: &[f32], out: &mut [f32]) -> Result<()> {
        let task = self.last.clone().ok_or_else(|| Error::runtime("cuda backend: phase 2 before phase 1"))?;
        super::check_rows("cuda", &self.layout, task.chunks.len(), out)?;
        if v.len() != self.layout.n_disc {
            return Err(Error::runtime(format!(
                "cuda backend: v has {} values, expected {}",
                v.len(),
                self.layout.n_disc
            )));
        }
        self.gpu.upload(v, &mut self.v32)?;
        self.enqueue_phase2(task.chunks.len(), Some(self.v32.ptr), true)?;
        self.gpu.download(&self.partials, out)
    }

    fn device_step(&mut self) -> Option<&mut dyn super::DeviceStep> {
        Some(self)
    }
}
