//! Estimates during training (`log.stability_every`): the coordinator hands
//! a copy of the parameters to one background thread, which computes the
//! estimate in f64 on its own (not on the step's thread pool) at a low
//! priority, and the training loop picks the results up between steps.
//! While one estimate runs, the next is queued; a third is skipped.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;

use super::{estimate, Estimate, Options};
use crate::backend::Setup;
use crate::error::Result;

/// The niceness of the estimating thread: the lowest, so that it runs on
/// the time the training threads leave (at nice 10 it still took about 2 s
/// of a ring run's time per estimate, 8 % at log.stability_every = 10000).
/// Where training fills every core the estimates fall behind and are
/// skipped; the last one, at the end of training, has the cores to itself.
pub const NICENESS: i32 = 19;

/// The options of a live estimate: k = 6, a Krylov dimension of 40, at
/// most 600 products, tolerance 1e-8.
pub fn options() -> Options {
    Options { k: 6, krylov: 40, max_matvecs: 600, tol: 1e-8, seed: 0, vectors: false, split: 0 }
}

struct Job {
    step: u64,
    gen: Vec<f32>,
    disc: Vec<f32>,
}

/// The background estimator of a training run.
pub struct Live {
    jobs: Option<SyncSender<Job>>,
    results: Receiver<(u64, Result<Estimate>)>,
    thread: Option<JoinHandle<()>>,
    /// Due estimates that were skipped because two were already pending.
    pub skipped: u64,
}

impl Live {
    /// Starts the thread for the game of `setup` at `eta` (`lr`: the
    /// discrete map's rate).
    pub fn start(setup: Setup, eta: f64, lr: f64, options: Options) -> Live {
        let (jobs, queue) = mpsc::sync_channel::<Job>(1);
        let (done, results) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("lockstep-stability".into())
            .spawn(move || {
                lower_priority(NICENESS);
                for j in queue {
                    let r = estimate(&setup, &j.gen, &j.disc, j.step, eta, lr, &options, false, &mut |_| {});
                    if done.send((j.step, r)).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn the stability thread");
        Live { jobs: Some(jobs), results, thread: Some(thread), skipped: 0 }
    }

    /// Queues an estimate at `step` unless two are pending (then counts it skipped).
    pub fn offer(&mut self, step: u64, gen: &[f32], disc: &[f32]) -> bool {
        let Some(tx) = &self.jobs else { return false };
        match tx.try_send(Job { step, gen: gen.to_vec(), disc: disc.to_vec() }) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.skipped += 1;
                false
            }
        }
    }

    /// The estimates finished since the last call, by step.
    pub fn poll(&mut self) -> Vec<(u64, Result<Estimate>)> {
        self.results.try_iter().collect()
    }

    /// Queues a last estimate at `step` (waiting for room), then waits for
    /// every pending one.
    pub fn finish(&mut self, last: Option<(u64, &[f32], &[f32])>) -> Vec<(u64, Result<Estimate>)> {
        if let (Some(tx), Some((step, gen, disc))) = (&self.jobs, last) {
            let _ = tx.send(Job { step, gen: gen.to_vec(), disc: disc.to_vec() });
        }
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.poll()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        // A run that ends on an error does not wait for its estimates.
        self.jobs = None;
    }
}

/// Lowers the calling thread's scheduling priority (Linux keeps niceness
/// per thread); elsewhere, or when refused, the thread runs as it is.
fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread's own id.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}
