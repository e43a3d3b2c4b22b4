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

use half::f16;

use super::{Backend, Draw, Setup, ShardTask};
use crate::error::{Error, Result};
use crate::gan::objective::Objective;
use crate::gan::phases::PartialLayout;
use crate::rng::{Purpose, Stream};
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
    /// Count of non-finite gradient sums (unscale_check).
    nonfinite: DevBuf<u32>,
    centres: DevBuf<f64>,
    last: Option<ShardTask>,
}

impl CudaBackend {
    /// Opens GPU `ordinal` and allocates every buffer for up to `setup.chunks` chunks.
    pub fn new(setup: &Setup, ordinal: usize) -> Result<CudaBackend> {
        check_device(ordinal)?;
        let game = &setup.game;
        let (n, k) = (setup.chunk, setup.chunks);
        let rows = k * 2 * n;
        if rows * game.gen.max_width().max(game.disc.max_width()) >= i32::MAX as usize {
            return Err(Error::input("the batch is too large for the CUDA backend's 32-bit indexing"));
        }
        let gpu = Gpu::open(ordinal)?;
        let layout = game.layout();
        let disc_at = layout.n_gen.next_multiple_of(64);
        let total = disc_at + layout.n_disc;
        let centres: Vec<f64> = setup.data.centres.iter().flat_map(|c| [c[0], c[1]]).collect();
        let mut centres_dev = gpu.alloc::<f64>(centres.len())?;
        gpu.upload(&centres, &mut centres_dev)?;
        Ok(CudaBackend {
            gen: DevNet::new(&gpu, &game.gen, k, 2 * n)?,
            disc: DevNet::new(&gpu, &game.disc, k, 2 * n)?,
            z: gpu.alloc(rows * game.gen.input)?,
            master: gpu.alloc(total)?,
            params: gpu.alloc(total)?,
            disc_at,
            v32: gpu.alloc(layout.n_disc)?,
            v16: gpu.alloc(layout.n_disc)?,
            seed: gpu.alloc(rows)?,
            seed_dot: gpu.alloc(rows)?,
            xbar: gpu.alloc(rows * game.disc.input)?,
            partials: gpu.alloc(k * layout.stride())?,
            nonfinite: gpu.alloc(1)?,
            centres: centres_dev,
            last: None,
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

    fn check_out(&self, chunks: usize, out: &[f32]) -> Result<()> {
        if out.len() != chunks * self.layout.stride() {
            return Err(Error::runtime(format!(
                "cuda backend: partial-sum buffer holds {} values, expected {} chunks × {}",
                out.len(),
                chunks,
                self.layout.stride()
            )));
        }
        Ok(())
    }

    /// Divides the gradient columns `cols` of the first `chunks` rows by the
    /// loss scale, copies the rows to `out`, and says whether any sum
    /// overflowed (then the caller's non-finite check skips the step).
    fn finish(&mut self, chunks: usize, cols: std::ops::Range<usize>, scale: f32, out: &mut [f32]) -> Result<()> {
        let stride = self.layout.stride();
        self.gpu.upload(&[0u32], &mut self.nonfinite)?;
        self.gpu.unscale_check(
            self.partials.at(cols.start),
            stride,
            chunks,
            cols.len(),
            1.0 / scale,
            self.nonfinite.ptr,
        )?;
        self.gpu.download(&self.partials, out)?;
        Ok(())
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
        if gen.len() != self.layout.n_gen || disc.len() != self.layout.n_disc {
            return Err(Error::runtime(format!(
                "cuda backend: got {} + {} parameters, expected {} + {}",
                gen.len(),
                disc.len(),
                self.layout.n_gen,
                self.layout.n_disc
            )));
        }
        let mut staged = vec![0.0f32; self.master.len()];
        staged[..gen.len()].copy_from_slice(gen);
        staged[self.disc_at..self.disc_at + disc.len()].copy_from_slice(disc);
        self.gpu.upload(&staged, &mut self.master)?;
        self.gpu.f32_to_f16(self.master.ptr, self.params.ptr, self.master.len())
    }

    fn phase1(&mut self, task: &ShardTask, out: &mut [f32]) -> Result<()> {
        let k = task.chunks.len();
        if k == 0 || task.chunks.end > self.setup.chunks {
            return Err(Error::runtime(format!("cuda backend: bad chunk range {:?}", task.chunks)));
        }
        self.check_out(k, out)?;
        let (all, real, fake) = self.rows(k);
        let s = &self.setup;
        let n = s.chunk;
        let (lat, rl) = match task.draw {
            Draw::First => (Purpose::Latent, Purpose::Real),
            Draw::Second => (Purpose::LatentG, Purpose::RealG),
        };
        let first = (task.chunks.start * n) as u32;
        let x = self.gen.output();
        let gpu = &self.gpu;
        gpu.normals(false, self.z.ptr, &Stream::new(s.seed, lat, task.step), first, fake, s.game.gen.input)?;
        gpu.mixture(false, x, &Stream::new(s.seed, rl, task.step), first, &self.centres, s.data.std, real)?;
        let (pg, pd) = (self.pg(), self.pd());
        self.gen.forward(gpu, pg, self.z.ptr, fake)?;
        self.disc.forward(gpu, pd, x, all)?;
        let obj = objective_code(s.game.objective);
        let (stride, scale, inv_b) = (self.layout.stride(), task.loss_scale, self.inv_b());
        let stats = self.partials.at(self.layout.stats().start);
        gpu.phase1_seeds(self.disc.output(), self.seed.ptr, stats, stride, k, n, obj, inv_b, scale)?;
        let dgrads = GradOut { base: self.partials.ptr, stride };
        self.disc.backward(gpu, pd, x, all, self.seed.ptr, Some(dgrads), None)?;
        let mut cols = self.layout.disc();
        if task.with_gen_grad {
            gpu.gen_loss_seeds(self.disc.output(), self.seed.ptr, k, n, obj, inv_b, scale)?;
            self.disc.backward(gpu, pd, x, fake, self.seed.ptr, None, Some(self.xbar.ptr))?;
            let ggrads = GradOut { base: self.partials.at(self.layout.n_disc), stride };
            self.gen.backward(gpu, pg, self.z.ptr, fake, self.xbar.ptr, Some(ggrads), None)?;
            cols = 0..self.layout.n_disc + self.layout.n_gen;
        }
        self.finish(k, cols, scale, out)?;
        self.last = Some(task.clone());
        Ok(())
    }

    fn phase2(&mut self, v: &[f32], out: &mut [f32]) -> Result<()> {
        let task = self.last.clone().ok_or_else(|| Error::runtime("cuda backend: phase 2 before phase 1"))?;
        let k = task.chunks.len();
        self.check_out(k, out)?;
        if v.len() != self.layout.n_disc {
            return Err(Error::runtime(format!(
                "cuda backend: v has {} values, expected {}",
                v.len(),
                self.layout.n_disc
            )));
        }
        let (_, _, fake) = self.rows(k);
        let s = &self.setup;
        let n = s.chunk;
        let gpu = &self.gpu;
        gpu.upload(v, &mut self.v32)?;
        gpu.f32_to_f16(self.v32.ptr, self.v16.ptr, v.len())?;
        let x = self.gen.output();
        let (pg, pd) = (self.pg(), self.pd());
        self.disc.jvp(gpu, pd, self.v16.ptr, x, None, fake)?;
        let ddot =
            self.disc.tangent().ok_or_else(|| Error::runtime("cuda backend: D's output has no tangent along v"))?;
        let obj = objective_code(s.game.objective);
        let two_eta = (2.0 * s.game.eta) as f32;
        let (scale, inv_b) = (task.loss_scale, self.inv_b());
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
        self.finish(k, self.layout.gen(), scale, out)
    }
}
