//! One GPU as the CUDA backend uses it: the context, one stream, a cuBLAS
//! handle on that stream, the loaded kernels, device buffers, and typed
//! launchers for every kernel and for the strided-batched GEMM.

use std::sync::Arc;

use cudarc::cublas::{result as blas, sys as blas_sys, CudaBlas};
use cudarc::driver::{
    CudaContext, CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits,
};

use super::kernels::{Kernels, HEAD_THREADS};
use crate::error::{Error, Result};

pub(crate) fn cuda_err(what: &str) -> impl Fn(cudarc::driver::DriverError) -> Error + '_ {
    move |e| Error::runtime(format!("CUDA {what}: {e}"))
}

/// A device buffer with its raw address (kernels and cuBLAS take addresses,
/// offsets into a buffer are added to it).
pub struct DevBuf<T> {
    slice: CudaSlice<T>,
    pub ptr: u64,
}

impl<T: DeviceRepr + ValidAsZeroBits> DevBuf<T> {
    pub fn len(&self) -> usize {
        self.slice.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slice.is_empty()
    }

    /// The address of element `i`.
    pub fn at(&self, i: usize) -> u64 {
        self.ptr + (i * std::mem::size_of::<T>()) as u64
    }
}

/// Rows `start..start + count` of every block of `block` rows, for `chunks`
/// blocks (see kernels/common.cuh).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rows {
    pub chunks: usize,
    pub block: usize,
    pub start: usize,
    pub count: usize,
}

impl Rows {
    pub fn elems(&self, width: usize) -> usize {
        self.chunks * self.count * width
    }

    /// The selection of `width`-wide rows as the kernels take it.
    pub fn arg(&self, width: usize) -> RowsArg {
        RowsArg {
            chunks: i32_of(self.chunks),
            block: i32_of(self.block),
            start: i32_of(self.start),
            count: i32_of(self.count),
            width: i32_of(width),
        }
    }
}

/// kernels/common.cuh's `Rows`, passed by value.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RowsArg {
    chunks: i32,
    block: i32,
    start: i32,
    count: i32,
    width: i32,
}

// SAFETY: a plain #[repr(C)] struct of i32s, laid out as the C struct.
unsafe impl DeviceRepr for RowsArg {}

/// One strided-batched GEMM (cuBLAS's column-major convention), fp16
/// operands, fp32 accumulation; C in fp32 or fp16.
#[derive(Debug, Clone, Copy)]
pub struct Gemm {
    pub ta: bool,
    pub tb: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: u64,
    pub lda: usize,
    pub stride_a: usize,
    pub b: u64,
    pub ldb: usize,
    pub stride_b: usize,
    pub c: u64,
    pub ldc: usize,
    pub stride_c: usize,
    pub c_f32: bool,
    pub alpha: f32,
    pub beta: f32,
    pub batch: usize,
}

pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    blas: CudaBlas,
    /// cuBLAS's workspace, fixed so that a captured graph never allocates.
    _blas_workspace: CudaSlice<u8>,
    kernels: Kernels,
    pub ordinal: usize,
    pub name: String,
    pub sms: usize,
    /// Bytes of device memory allocated through `alloc` (and the workspace).
    allocated: std::sync::atomic::AtomicUsize,
}

/// cuBLAS workspace size (its documented recommendation for Hopper).
const BLAS_WORKSPACE: usize = 32 << 20;

/// Threads per block of the elementwise kernels.
const THREADS: u32 = 256;

fn grid_for(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(THREADS as usize).clamp(1, 65_535) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
}

macro_rules! launch {
    ($gpu:expr, $name:expr, $cfg:expr $(, $arg:expr)* $(,)?) => {{
        let name: &str = $name;
        let f = $gpu.kernels.get(name);
        let mut b = $gpu.stream.launch_builder(f);
        $( let a = $arg; b.arg(&a); )*
        // SAFETY: the argument list matches the kernel's signature in
        // kernels/*.cu, and every address points into a live buffer of the
        // size the kernel indexes (checked by the callers' layouts).
        unsafe { b.launch($cfg) }.map(|_| ()).map_err(|e| Error::runtime(format!("CUDA launch of {name}: {e}")))
    }};
}

fn i32_of(v: usize) -> i32 {
    i32::try_from(v).expect("sizes fit in i32 (checked when the backend is built)")
}

impl Gpu {
    /// Opens device `ordinal`: context, stream, cuBLAS, kernels.
    pub fn open(ordinal: usize) -> Result<Gpu> {
        let ctx = CudaContext::new(ordinal).map_err(cuda_err("context"))?;
        // One stream: no cross-stream event bookkeeping needed.
        // SAFETY: every buffer is used on this one stream only.
        unsafe { ctx.disable_event_tracking() };
        // A stream of our own: the legacy default stream cannot be captured into a graph.
        let stream = ctx.new_stream().map_err(cuda_err("stream"))?;
        let blas = CudaBlas::new(stream.clone()).map_err(|e| Error::runtime(format!("cuBLAS: {e}")))?;
        let ws = stream.alloc_zeros::<u8>(BLAS_WORKSPACE).map_err(cuda_err("allocation"))?;
        {
            let (wp, _) = ws.device_ptr(&stream);
            // SAFETY: the workspace lives as long as the handle (both in this Gpu).
            unsafe { blas_sys::cublasSetWorkspace_v2(*blas.handle(), wp as *mut _, BLAS_WORKSPACE) }
                .result()
                .map_err(|e| Error::runtime(format!("cuBLAS workspace: {e}")))?;
        }
        let kernels = Kernels::load(&ctx)?;
        let name = ctx.name().map_err(cuda_err("device name"))?;
        let sms = ctx
            .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(cuda_err("attribute"))? as usize;
        Ok(Gpu {
            ctx,
            stream,
            blas,
            _blas_workspace: ws,
            kernels,
            ordinal,
            name,
            sms,
            allocated: std::sync::atomic::AtomicUsize::new(BLAS_WORKSPACE),
        })
    }

    pub fn alloc<T: DeviceRepr + ValidAsZeroBits>(&self, len: usize) -> Result<DevBuf<T>> {
        let slice = self.stream.alloc_zeros::<T>(len.max(1)).map_err(cuda_err("allocation"))?;
        self.allocated.fetch_add(len.max(1) * std::mem::size_of::<T>(), std::sync::atomic::Ordering::Relaxed);
        let (ptr, _) = slice.device_ptr(&self.stream);
        Ok(DevBuf { slice, ptr })
    }

    /// Device memory allocated by this Gpu, in bytes.
    pub fn allocated_bytes(&self) -> usize {
        self.allocated.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn upload<T: DeviceRepr + ValidAsZeroBits>(&self, src: &[T], dst: &mut DevBuf<T>) -> Result<()> {
        assert!(src.len() <= dst.len());
        self.stream.memcpy_htod(src, &mut dst.slice).map_err(cuda_err("copy to device"))
    }

    /// Copies the first `dst.len()` elements of `src` to the host (waits for the stream).
    pub fn download<T: DeviceRepr + ValidAsZeroBits>(&self, src: &DevBuf<T>, dst: &mut [T]) -> Result<()> {
        assert!(dst.len() <= src.len());
        let view = src.slice.slice(..dst.len());
        self.stream.memcpy_dtoh(&view, dst).map_err(cuda_err("copy to host"))
    }

    /// Reads `n` values at device address `ptr` (after the stream's work).
    pub fn read<T: DeviceRepr + Default + Clone>(&self, ptr: u64, n: usize) -> Result<Vec<T>> {
        self.sync()?;
        self.ctx.bind_to_thread().map_err(cuda_err("context"))?;
        let mut v = vec![T::default(); n];
        // SAFETY: `ptr` addresses at least `n` values of a live buffer (the caller's layout).
        unsafe { cudarc::driver::result::memcpy_dtoh_sync(&mut v, ptr) }.map_err(cuda_err("copy to host"))?;
        Ok(v)
    }

    /// Stream-ordered zeroing of `bytes` bytes at `dst`.
    pub fn zero(&self, dst: u64, bytes: usize) -> Result<()> {
        // SAFETY: `dst` spans `bytes` bytes of a live buffer.
        unsafe { cudarc::driver::result::memset_d8_async(dst, 0, bytes, self.stream.cu_stream()) }
            .map_err(cuda_err("memset"))
    }

    /// Stream-ordered copy from pinned host memory (read when the copy runs,
    /// also on every replay of a captured graph).
    pub fn copy_from_pinned(&self, dst: u64, src: &Pinned) -> Result<()> {
        // SAFETY: `src` is pinned and lives as long as the graph that may replay this copy.
        unsafe { cudarc::driver::result::memcpy_htod_async(dst, src.words(), self.stream.cu_stream()) }
            .map_err(cuda_err("copy to device"))
    }

    /// Stream-ordered copy into pinned host memory.
    pub fn copy_to_pinned(&self, dst: &mut Pinned, src: u64) -> Result<()> {
        // SAFETY: as above; the host reads `dst` only after synchronizing.
        unsafe { cudarc::driver::result::memcpy_dtoh_async(dst.words_mut(), src, self.stream.cu_stream()) }
            .map_err(cuda_err("copy to host"))
    }

    pub fn sync(&self) -> Result<()> {
        self.stream.synchronize().map_err(cuda_err("synchronize"))
    }

    pub fn gemm(&self, g: &Gemm) -> Result<()> {
        use blas_sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
        use blas_sys::cudaDataType_t::{CUDA_R_16F, CUDA_R_32F};
        let op = |t: bool| if t { CUBLAS_OP_T } else { CUBLAS_OP_N };
        // The trainer may call from any thread; cuBLAS uses the thread's current context.
        self.ctx.bind_to_thread().map_err(cuda_err("context"))?;
        let (alpha, beta) = (g.alpha, g.beta);
        // SAFETY: the operands are live device buffers sized for the
        // strided batch described by `g` (the callers' layouts).
        unsafe {
            blas::gemm_strided_batched_ex(
                *self.blas.handle(),
                op(g.ta),
                op(g.tb),
                i32_of(g.m),
                i32_of(g.n),
                i32_of(g.k),
                &alpha as *const f32 as *const _,
                g.a as *const _,
                CUDA_R_16F,
                i32_of(g.lda),
                g.stride_a as i64,
                g.b as *const _,
                CUDA_R_16F,
                i32_of(g.ldb),
                g.stride_b as i64,
                &beta as *const f32 as *const _,
                g.c as *mut _,
                if g.c_f32 { CUDA_R_32F } else { CUDA_R_16F },
                i32_of(g.ldc),
                g.stride_c as i64,
                i32_of(g.batch),
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| Error::runtime(format!("cuBLAS GEMM {g:?}: {e}")))
    }

    // ---- activation.cu ----

    pub fn act_forward(&self, kind: (i32, f32), a: u64, y: u64, r: Rows, width: usize) -> Result<()> {
        launch!(self, "act_forward", grid_for(r.elems(width)), a, y, kind.0, kind.1, r.arg(width))
    }

    pub fn act_backward(&self, kind: (i32, f32), a: u64, dy: u64, da: u64, r: Rows, width: usize) -> Result<()> {
        launch!(self, "act_backward", grid_for(r.elems(width)), a, dy, da, kind.0, kind.1, r.arg(width))
    }

    /// `adot` and `adotbar` may be 0 (none).
    #[allow(clippy::too_many_arguments)]
    pub fn act_jvp_backward(
        &self,
        kind: (i32, f32),
        a: u64,
        adot: u64,
        ybar: u64,
        ydotbar: u64,
        abar: u64,
        adotbar: u64,
        r: Rows,
        width: usize,
    ) -> Result<()> {
        launch!(
            self,
            "act_jvp_backward",
            grid_for(r.elems(width)),
            a,
            adot,
            ybar,
            ydotbar,
            abar,
            adotbar,
            kind.0,
            kind.1,
            r.arg(width)
        )
    }

    /// Fused Linear bias + activation (forward): y_lin = half(acc + b), y = σ(y_lin).
    #[allow(clippy::too_many_arguments)]
    pub fn bias_act_forward(
        &self,
        kind: (i32, f32),
        acc: u64,
        b: u64,
        y_lin: u64,
        y: u64,
        r: Rows,
        width: usize,
    ) -> Result<()> {
        launch!(self, "bias_act_forward", grid_for(r.elems(width)), acc, b, y_lin, y, kind.0, kind.1, r.arg(width))
    }

    /// Fused tangents of Linear + activation: t_lin = half(acc + c), t = σ'(a) t_lin.
    #[allow(clippy::too_many_arguments)]
    pub fn bias_act_jvp(
        &self,
        kind: (i32, f32),
        acc: u64,
        c: u64,
        a: u64,
        t_lin: u64,
        t: u64,
        r: Rows,
        width: usize,
    ) -> Result<()> {
        launch!(self, "bias_act_jvp", grid_for(r.elems(width)), acc, c, a, t_lin, t, kind.0, kind.1, r.arg(width))
    }

    // ---- linear.cu ----

    /// y = half(acc + b) (b may be 0: none).
    pub fn bias_cast(&self, acc: u64, b: u64, y: u64, r: Rows, width: usize) -> Result<()> {
        launch!(self, "bias_cast", grid_for(r.elems(width)), acc, b, y, r.arg(width))
    }

    /// out[c * out_stride + j] = scale * Σ_rows dy[., j], one sum per chunk.
    pub fn colsum_chunks(&self, dy: u64, out: u64, out_stride: usize, scale: f32, r: Rows, width: usize) -> Result<()> {
        let cfg = LaunchConfig {
            grid_dim: (width.div_ceil(128) as u32, r.chunks as u32, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(self, "colsum_chunks", cfg, dy, out, out_stride as i64, scale, r.arg(width))
    }

    // ---- objective.cu ----

    /// Seeds of D's backward (rows 0..2n of each chunk) and each chunk's stats at
    /// `stats + c * stride`; the loss scale is read at `scale`.
    #[allow(clippy::too_many_arguments)]
    pub fn phase1_seeds(
        &self,
        d: u64,
        ybar: u64,
        stats: u64,
        stride: usize,
        chunks: usize,
        n: usize,
        obj: i32,
        inv_b: f32,
        scale: u64,
    ) -> Result<()> {
        let cfg =
            LaunchConfig { grid_dim: (chunks as u32, 1, 1), block_dim: (HEAD_THREADS, 1, 1), shared_mem_bytes: 0 };
        launch!(self, "phase1_seeds", cfg, d, ybar, stats, stride as i64, i32_of(n), obj, inv_b, scale)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn gen_loss_seeds(
        &self,
        d: u64,
        ybar: u64,
        chunks: usize,
        n: usize,
        obj: i32,
        inv_b: f32,
        scale: u64,
    ) -> Result<()> {
        launch!(self, "gen_loss_seeds", grid_for(chunks * n), d, ybar, i32_of(chunks), i32_of(n), obj, inv_b, scale)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn phase2_seeds(
        &self,
        d: u64,
        ddot: u64,
        ybar: u64,
        ydotbar: u64,
        chunks: usize,
        n: usize,
        obj: i32,
        two_eta: f32,
        inv_b: f32,
        scale: u64,
    ) -> Result<()> {
        launch!(
            self,
            "phase2_seeds",
            grid_for(chunks * n),
            d,
            ddot,
            ybar,
            ydotbar,
            i32_of(chunks),
            i32_of(n),
            obj,
            two_eta,
            inv_b,
            scale
        )
    }

    // ---- rng.cu ----

    /// N(0, 1) numbers for the selected rows (`f32_out`: fp32, else fp16), for
    /// the stream (seed `key`, `purpose`, the step read at `step`).
    #[allow(clippy::too_many_arguments)]
    pub fn normals(
        &self,
        f32_out: bool,
        out: u64,
        key: [u32; 2],
        purpose: u32,
        step: u64,
        first: u32,
        r: Rows,
        width: usize,
    ) -> Result<()> {
        let cfg = grid_for(r.chunks * r.count * width.div_ceil(4));
        let name = if f32_out { "normals_f32" } else { "normals_f16" };
        launch!(self, name, cfg, out, key[0], key[1], purpose, step, first, r.arg(width))
    }

    /// Mixture samples (width 2) for the selected rows; `centres` holds (x, y) pairs in f64.
    #[allow(clippy::too_many_arguments)]
    pub fn mixture(
        &self,
        f32_out: bool,
        out: u64,
        key: [u32; 2],
        purpose: u32,
        step: u64,
        first: u32,
        centres: &DevBuf<f64>,
        sd: f64,
        r: Rows,
    ) -> Result<()> {
        let cfg = grid_for(r.chunks * r.count);
        let nc = i32_of(centres.len() / 2);
        let name = if f32_out { "mixture_f32" } else { "mixture_f16" };
        launch!(self, name, cfg, out, key[0], key[1], purpose, step, first, centres.ptr, nc, sd, r.arg(2))
    }

    // ---- cast.cu ----

    pub fn f32_to_f16(&self, x: u64, y: u64, n: usize) -> Result<()> {
        launch!(self, "f32_to_f16", grid_for(n), x, y, n as i64)
    }

    pub fn f16_to_f32(&self, x: u64, y: u64, n: usize) -> Result<()> {
        launch!(self, "f16_to_f32", grid_for(n), x, y, n as i64)
    }

    // ---- loss_scale.cu ----

    /// x[r * stride + j] *= *inv_scale for r < rows, j < len; adds the count of
    /// non-finite results to `*flag`.
    pub fn unscale_check(
        &self,
        x: u64,
        stride: usize,
        rows: usize,
        len: usize,
        inv_scale: u64,
        flag: u64,
    ) -> Result<()> {
        launch!(
            self,
            "unscale_check",
            grid_for(rows * len),
            x,
            stride as i64,
            i32_of(rows),
            i32_of(len),
            inv_scale,
            flag
        )
    }

    // ---- optim.cu ----

    // ---- reduce.cu ----

    /// The resident step's reduction: out[c] = Σ_r rows[r * stride + c] · s
    /// in row order for the columns `r0` (scale at `s0`) and `r1` (at `s1`);
    /// an fp16 copy of range 0 to `out16` (0: none); non-finite sums counted at `flag`.
    #[allow(clippy::too_many_arguments)]
    pub fn reduce_unscale(
        &self,
        rows: u64,
        stride: usize,
        nrows: usize,
        r0: std::ops::Range<usize>,
        s0: u64,
        r1: std::ops::Range<usize>,
        s1: u64,
        out: u64,
        out16: u64,
        flag: u64,
    ) -> Result<()> {
        let (c0, n0, c1, n1) = (i32_of(r0.start), i32_of(r0.len()), i32_of(r1.start), i32_of(r1.len()));
        let cfg = grid_for(r0.len() + r1.len());
        launch!(
            self,
            "reduce_unscale",
            cfg,
            rows,
            stride as i64,
            i32_of(nrows),
            c0,
            n0,
            s0,
            c1,
            n1,
            s1,
            out,
            out16,
            flag
        )
    }

    /// *sq0 = Σ x0², *sq1 = Σ x1² (f64, a fixed order), and `nstats` floats copied from `stats` to `stats_out`.
    #[allow(clippy::too_many_arguments)]
    pub fn step_report(
        &self,
        x0: u64,
        n0: usize,
        x1: u64,
        n1: usize,
        sq0: u64,
        sq1: u64,
        stats: u64,
        stats_out: u64,
        nstats: usize,
    ) -> Result<()> {
        let cfg = LaunchConfig { grid_dim: (2, 1, 1), block_dim: (1024, 1, 1), shared_mem_bytes: 0 };
        launch!(self, "step_report", cfg, x0, n0 as i64, x1, n1 as i64, sq0, sq1, stats, stats_out, i32_of(nstats))
    }

    /// Both players' optimizer step in one launch (see kernels/optim.cu):
    /// `p`, `m`, `v`, `p16` in the master layout, `g` the reduced row.
    #[allow(clippy::too_many_arguments)]
    pub fn players_step(
        &self,
        adam: Option<(u64, u64, f32, f32, f32)>,
        p: u64,
        g: u64,
        p16: u64,
        (n_gen, n_disc, disc_at): (usize, usize, usize),
        (g_gen, g_disc): (usize, usize),
        (coef_gen, coef_disc): (u64, u64),
        skip: u64,
        bad: u64,
    ) -> Result<()> {
        let cfg = grid_for(n_gen + n_disc);
        let (ng, nd, da, gg, gd) = (n_gen as i64, n_disc as i64, disc_at as i64, g_gen as i64, g_disc as i64);
        match adam {
            Some((m, v, b1, b2, eps)) => launch!(
                self,
                "adam_players",
                cfg,
                p,
                g,
                m,
                v,
                p16,
                ng,
                nd,
                da,
                gg,
                gd,
                b1,
                b2,
                coef_gen,
                coef_disc,
                eps,
                skip,
                bad
            ),
            None => launch!(self, "sgd_players", cfg, p, g, p16, ng, nd, da, gg, gd, coef_gen, coef_disc, skip, bad),
        }
    }
}

/// Page-locked host memory, for copies that a captured graph replays.
pub struct Pinned {
    ptr: *mut u32,
    words: usize,
}

// SAFETY: the memory is owned by this value and only accessed through it.
unsafe impl Send for Pinned {}

impl Pinned {
    pub fn new(gpu: &Gpu, words: usize) -> Result<Pinned> {
        gpu.ctx.bind_to_thread().map_err(cuda_err("context"))?;
        // SAFETY: a fresh allocation of `words` u32s, zeroed below.
        let ptr = unsafe { cudarc::driver::result::malloc_host(words * 4, 0) }.map_err(cuda_err("pinned allocation"))?
            as *mut u32;
        let mut p = Pinned { ptr, words };
        p.words_mut().fill(0);
        Ok(p)
    }

    pub fn words(&self) -> &[u32] {
        // SAFETY: `ptr` holds `words` initialised u32s owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.words) }
    }

    pub fn words_mut(&mut self) -> &mut [u32] {
        // SAFETY: as above, borrowed mutably through self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.words) }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // SAFETY: allocated by malloc_host in `new`, freed once.
        let _ = unsafe { cudarc::driver::result::free_host(self.ptr as *mut _) };
    }
}
