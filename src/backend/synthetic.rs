//! The synthetic backend, for load tests of the control plane only
//! (`--backend synthetic`): it trains nothing.  A phase fills each chunk's
//! row with deterministic pseudo-gradients of the game's real size (so the
//! wire, the reduction and the optimizers do their real work) and returns
//! after a configured compute time, its shard's share of `--synthetic-ms`
//! per phase of a whole minibatch.  Only sleeping, so that 32 workers fit
//! on a two-core machine.
//!
//! A chunk's row depends only on the seed, the step, the draw, the chunk
//! index and the replica's parameters, never on which worker computes it,
//! so a synthetic run is bitwise independent of the worker count like a
//! real one, and a replica that drifted from the coordinator's parameters
//! is caught by the digest check.

use std::time::{Duration, Instant};

use super::{Backend, Draw, Setup, ShardTask};
use crate::error::{Error, Result};
use crate::gan::phases::{stat, PartialLayout};

/// The default of `--synthetic-ms`.
pub const DEFAULT_MS: f64 = 2.0;

pub struct SyntheticBackend {
    setup: Setup,
    layout: PartialLayout,
    /// The compute time of one phase on the whole minibatch.
    compute: Duration,
    gen: Vec<f32>,
    disc: Vec<f32>,
    /// The shard of the last phase 1 (phase 2 continues it).
    last: Option<ShardTask>,
    /// `noise` of one row's columns.
    table: Vec<f32>,
}

/// A 64-bit hash (splitmix64's finaliser) of one value.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A value in [-1, 1) for one column of one chunk's row.
fn noise(key: u64, column: usize) -> f32 {
    let h = mix(key ^ mix(column as u64));
    ((h >> 40) as f32) * (2.0 / (1u64 << 24) as f32) - 1.0
}

/// The noise of one chunk's row: a fixed table of one row's length read from
/// an offset the row's key picks (a copy, not a hash per value: the
/// workers' time goes to sleeping and to the real wire and reduction).
fn noisy(table: &[f32], key: u64) -> impl Iterator<Item = f32> + '_ {
    let at = (key % table.len() as u64) as usize;
    table[at..].iter().chain(&table[..at]).copied()
}

/// The synthetic backend with this compute time, in words.
pub fn device(compute: Duration) -> String {
    format!("synthetic, {:.3} ms a phase of the whole minibatch", compute.as_secs_f64() * 1e3)
}

impl SyntheticBackend {
    pub fn new(setup: &Setup, compute: Duration) -> Self {
        let layout = setup.game.layout();
        SyntheticBackend {
            gen: vec![0.0; layout.n_gen],
            disc: vec![0.0; layout.n_disc],
            layout,
            compute,
            last: None,
            table: (0..layout.stride()).map(|i| noise(setup.seed, i)).collect(),
            setup: setup.clone(),
        }
    }

    /// The key of one chunk's row in one phase.
    fn key(&self, step: u64, draw: Draw, phase: u64, chunk: usize) -> u64 {
        let draw = match draw {
            Draw::First => 0,
            Draw::Second => 1,
        };
        mix(self.setup.seed ^ mix(step ^ mix((draw << 1 | phase) ^ mix(chunk as u64))))
    }

    /// Waits out the shard's share of the configured compute time.
    fn wait(&self, started: Instant, chunks: usize) {
        let share = self.compute.mul_f64(chunks as f64 / self.setup.chunks as f64);
        if let Some(left) = share.checked_sub(started.elapsed()) {
            std::thread::sleep(left);
        }
    }
}

impl Backend for SyntheticBackend {
    fn name(&self) -> &'static str {
        "synthetic"
    }

    fn device(&self) -> String {
        device(self.compute)
    }

    fn capacity(&self) -> f64 {
        1.0
    }

    fn set_params(&mut self, gen: &[f32], disc: &[f32]) -> Result<()> {
        super::check_params("synthetic", &self.layout, gen, disc)?;
        self.gen.copy_from_slice(gen);
        self.disc.copy_from_slice(disc);
        Ok(())
    }

    /// Per chunk: grad_D = share × (0.01 noise + 0.001 D's parameter), the
    /// same for grad_G when asked, and each stat its share of 0.5.
    fn phase1(&mut self, task: &ShardTask, out: &mut [f32]) -> Result<()> {
        let started = Instant::now();
        let n = task.chunks.len();
        super::check_shard("synthetic", &task.chunks, self.setup.chunks)?;
        super::check_rows("synthetic", &self.layout, n, out)?;
        let share = 1.0 / self.setup.chunks as f32;
        let l = self.layout;
        for (j, row) in out.chunks_exact_mut(l.stride()).enumerate() {
            let mut noise = noisy(&self.table, self.key(task.step, task.draw, 0, task.chunks.start + j));
            let params = self.disc.iter().chain(&self.gen);
            for ((o, p), x) in row[..l.n_disc + l.n_gen].iter_mut().zip(params).zip(&mut noise) {
                *o = share * (0.01 * x + 0.001 * p);
            }
            if !task.with_gen_grad {
                row[l.gen()].fill(0.0);
            }
            row[l.stats()].fill(share * 0.5);
            debug_assert_eq!(l.stats().len(), stat::COUNT);
        }
        self.last = Some(task.clone());
        self.wait(started, n);
        Ok(())
    }

    /// Per chunk: grad_G = share × (0.01 noise + 0.001 G's parameter + 0.001 v).
    fn phase2(&mut self, v: &[f32], out: &mut [f32]) -> Result<()> {
        let started = Instant::now();
        let task = self.last.as_ref().ok_or_else(|| Error::runtime("synthetic backend: phase 2 before phase 1"))?;
        let n = task.chunks.len();
        super::check_rows("synthetic", &self.layout, n, out)?;
        if v.len() != self.disc.len() || v.is_empty() {
            return Err(Error::runtime(format!(
                "synthetic backend: v has {} values, expected {}",
                v.len(),
                self.disc.len()
            )));
        }
        let share = 1.0 / self.setup.chunks as f32;
        let l = self.layout;
        for (j, row) in out.chunks_exact_mut(l.stride()).enumerate() {
            let noise = noisy(&self.table, self.key(task.step, task.draw, 1, task.chunks.start + j));
            row.fill(0.0);
            for (i, ((o, p), x)) in row[l.gen()].iter_mut().zip(&self.gen).zip(noise).enumerate() {
                *o = share * (0.01 * x + 0.001 * p + 0.001 * v[i % v.len()]);
            }
        }
        self.wait(started, n);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_spread_over_minus_one_to_one() {
        let xs: Vec<f32> = (0..10_000).map(|i| noise(7, i)).collect();
        assert!(xs.iter().all(|x| (-1.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f32>() / xs.len() as f32;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!(xs.iter().any(|&x| x < -0.9) && xs.iter().any(|&x| x > 0.9));
        assert_ne!(noise(7, 0), noise(8, 0));
    }

    #[test]
    fn a_row_reads_the_table_from_its_key_around_the_end() {
        let t = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(noisy(&t, 6).collect::<Vec<_>>(), [3.0, 4.0, 1.0, 2.0]);
        assert_eq!(noisy(&t, 0).collect::<Vec<_>>(), t);
    }
}
