//! The CPU backend: f32, the chunks of a shard spread over threads (rayon),
//! every buffer allocated once.  Each chunk is computed the same way on any
//! thread, so results do not depend on the number of threads.

use rayon::prelude::*;

use super::{Backend, Draw, Setup, ShardTask};
use crate::error::{Error, Result};
use crate::gan::phases::{self, ChunkState, PartialLayout};
use crate::rng::{Purpose, Stream};

/// The CPU with `threads` threads, in words.
pub fn device_with(threads: usize) -> String {
    format!("{} ({threads} threads)", std::env::consts::ARCH)
}

/// The threads a backend asked for `threads` computes on (0: the process's pool).
pub fn threads(threads: usize) -> usize {
    if threads > 0 {
        threads
    } else {
        rayon::current_num_threads()
    }
}

pub struct CpuBackend {
    setup: Setup,
    layout: PartialLayout,
    gen: Vec<f32>,
    disc: Vec<f32>,
    states: Vec<ChunkState<f32>>,
    /// The shard of the last phase 1 (phase 2 continues it).
    last: Option<ShardTask>,
    /// This backend's own threads (one of several in-process workers);
    /// None: the process's pool.
    pool: Option<std::sync::Arc<rayon::ThreadPool>>,
}

impl CpuBackend {
    pub fn new(setup: &Setup) -> Self {
        let game = &setup.game;
        CpuBackend {
            layout: game.layout(),
            gen: vec![0.0; game.gen.n_params],
            disc: vec![0.0; game.disc.n_params],
            states: (0..setup.chunks).map(|_| ChunkState::new(game, setup.chunk)).collect(),
            last: None,
            setup: setup.clone(),
            pool: None,
        }
    }

    /// A backend computing on a pool of `threads` threads of its own (0:
    /// on the process's pool, as `new`).
    pub fn with_threads(setup: &Setup, threads: usize) -> Result<Self> {
        if threads == 0 {
            return Ok(CpuBackend::new(setup));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("lockstep-cpu-{i}"))
            .build()
            .map_err(|e| Error::runtime(format!("cannot start {threads} threads: {e}")))?;
        Ok(CpuBackend { pool: Some(std::sync::Arc::new(pool)), ..CpuBackend::new(setup) })
    }

    /// Runs `f` on this backend's threads.
    fn on_threads<R: Send>(&mut self, f: impl FnOnce(&mut Self) -> R + Send) -> R {
        match self.pool.clone() {
            Some(p) => p.install(|| f(self)),
            None => f(self),
        }
    }

    fn threads(&self) -> usize {
        self.pool.as_ref().map_or_else(rayon::current_num_threads, |p| p.current_num_threads())
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn device(&self) -> String {
        device_with(self.threads())
    }

    fn capacity(&self) -> f64 {
        self.threads() as f64
    }

    fn set_params(&mut self, gen: &[f32], disc: &[f32]) -> Result<()> {
        super::check_params("cpu", &self.layout, gen, disc)?;
        self.gen.copy_from_slice(gen);
        self.disc.copy_from_slice(disc);
        Ok(())
    }

    fn phase1(&mut self, task: &ShardTask, out: &mut [f32]) -> Result<()> {
        self.on_threads(|be| be.phase1_here(task, out))
    }

    fn phase2(&mut self, v: &[f32], out: &mut [f32]) -> Result<()> {
        self.on_threads(|be| be.phase2_here(v, out))
    }
}

impl CpuBackend {
    fn phase1_here(&mut self, task: &ShardTask, out: &mut [f32]) -> Result<()> {
        let n = task.chunks.len();
        super::check_shard("cpu", &task.chunks, self.setup.chunks)?;
        super::check_rows("cpu", &self.layout, n, out)?;
        let lat = match task.draw {
            Draw::First => Purpose::Latent,
            Draw::Second => Purpose::LatentG,
        };
        let s = &self.setup;
        let zs = Stream::new(s.seed, lat, task.step);
        let key = s.draw_key(task.step, task.draw);
        let (gen, disc, stride) = (&self.gen, &self.disc, self.layout.stride());
        let latent = s.game.gen.input;
        self.states[..n].par_iter_mut().zip(out.par_chunks_mut(stride)).enumerate().for_each(|(j, (st, o))| {
            let first = ((task.chunks.start + j) * s.chunk) as u32;
            for (r, z) in st.z.chunks_exact_mut(latent).enumerate() {
                zs.normals(first + r as u32, z);
            }
            s.data.fill(&key, first as u64, st.real_mut());
            phases::phase1(&s.game, gen, disc, st, o, task.with_gen_grad);
        });
        self.last = Some(task.clone());
        Ok(())
    }

    fn phase2_here(&mut self, v: &[f32], out: &mut [f32]) -> Result<()> {
        let task = self.last.as_ref().ok_or_else(|| Error::runtime("cpu backend: phase 2 before phase 1"))?;
        let n = task.chunks.len();
        super::check_rows("cpu", &self.layout, n, out)?;
        if v.len() != self.disc.len() {
            return Err(Error::runtime(format!("cpu backend: v has {} values, expected {}", v.len(), self.disc.len())));
        }
        let (gen, disc, stride, game) = (&self.gen, &self.disc, self.layout.stride(), &self.setup.game);
        self.states[..n]
            .par_iter_mut()
            .zip(out.par_chunks_mut(stride))
            .for_each(|(st, o)| phases::phase2(game, gen, disc, v, st, o));
        Ok(())
    }
}
