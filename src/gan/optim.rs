//! Optimizers on fp32 master weights, over one flat parameter vector per
//! player: SGD and Adam (PyTorch's formulas).

use crate::config::{OptimizerConfig, OptimizerKind};

/// Whether a player descends (the generator) or ascends (the discriminator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Descend,
    Ascend,
}

/// One player's optimizer and its state.
#[derive(Debug, Clone, PartialEq)]
pub struct Optimizer {
    pub kind: OptimizerKind,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub dir: Direction,
    /// Adam's first and second moments (empty for SGD).
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    /// Steps taken (Adam's bias correction).
    pub t: u64,
}

impl Optimizer {
    pub fn new(c: &OptimizerConfig, lr: f64, n: usize, dir: Direction) -> Self {
        let adam = c.kind == OptimizerKind::Adam;
        Optimizer {
            kind: c.kind,
            lr,
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            dir,
            m: if adam { vec![0.0; n] } else { Vec::new() },
            v: if adam { vec![0.0; n] } else { Vec::new() },
            t: 0,
        }
    }

    /// The coefficients of the next update (step t + 1), as `step` and the
    /// CUDA kernels (kernels/optim.cu) use them: Adam (sign · lr / (1 −
    /// β1^t), 1 / √(1 − β2^t)); SGD (sign · lr, 0).  The sign is −1 for the
    /// ascending player.
    pub fn coefficients(&self) -> [f32; 2] {
        self.coefficients_of(self.t + 1)
    }

    /// The coefficients of update number `t` (1 is the first).
    pub fn coefficients_of(&self, t: u64) -> [f32; 2] {
        let sign: f32 = match self.dir {
            Direction::Descend => 1.0,
            Direction::Ascend => -1.0,
        };
        let t = t as f64;
        match self.kind {
            OptimizerKind::Sgd => [self.lr as f32 * sign, 0.0],
            OptimizerKind::Adam => {
                let bc1 = 1.0 - self.beta1.powf(t);
                let bc2 = 1.0 - self.beta2.powf(t);
                [(self.lr / bc1) as f32 * sign, (1.0 / bc2.sqrt()) as f32]
            }
        }
    }

    /// One update of `p` with gradient `g` (of the player's objective).
    /// Elementwise, so splitting it over threads (blocks of `PIECE`) changes no bit.
    pub fn step(&mut self, p: &mut [f32], g: &[f32]) {
        use rayon::prelude::*;
        const PIECE: usize = 1 << 15;
        assert_eq!(p.len(), g.len());
        let [a, b] = self.coefficients();
        self.t += 1;
        match self.kind {
            OptimizerKind::Sgd => p.par_chunks_mut(PIECE).zip(g.par_chunks(PIECE)).for_each(|(p, g)| {
                for (p, &g) in p.iter_mut().zip(g) {
                    *p -= a * g;
                }
            }),
            OptimizerKind::Adam => {
                let (b1, b2) = (self.beta1 as f32, self.beta2 as f32);
                let (step_size, inv_sqrt_bc2) = (a, b);
                let eps = self.eps as f32;
                let (m, v) = (self.m.par_chunks_mut(PIECE), self.v.par_chunks_mut(PIECE));
                p.par_chunks_mut(PIECE).zip(g.par_chunks(PIECE)).zip(m).zip(v).for_each(|(((p, g), m), v)| {
                    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                        *m = b1 * *m + (1.0 - b1) * g;
                        *v = b2 * *v + (1.0 - b2) * g * g;
                        *p -= step_size * *m / (v.sqrt() * inv_sqrt_bc2 + eps);
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adam_matches_pytorch_first_steps() {
        // torch.optim.Adam(lr=0.1, betas=(0.5, 0.999)) on p=1 with grads 2, -1:
        // step 1: p = 1 - 0.1 * 1 = 0.9 (Adam's first step is lr * sign(g));
        // step 2 with g = -1: m = 0.5 * m1 + 0.5 * g, v = 0.999 * v1 + 0.001 * g^2.
        let c = OptimizerConfig { lr: 0.1, beta1: 0.5, beta2: 0.999, ..OptimizerConfig::default() };
        let mut o = Optimizer::new(&c, 0.1, 1, Direction::Descend);
        let mut p = [1.0f32];
        o.step(&mut p, &[2.0]);
        assert!((p[0] - 0.9).abs() < 1e-6);
        o.step(&mut p, &[-1.0]);
        let (m1, v1) = (0.5 * 2.0, 0.001 * 4.0);
        let (m, v) = (0.5 * m1 - 0.5, 0.999 * v1 + 0.001);
        let want = 0.9 - 0.1 * (m / (1.0 - 0.25)) / ((v / (1.0f64 - 0.999 * 0.999)).sqrt() + 1e-8);
        assert!((p[0] as f64 - want).abs() < 1e-6, "{} vs {want}", p[0]);
        let mut a = Optimizer::new(&c, 0.1, 1, Direction::Ascend);
        let mut q = [1.0f32];
        a.step(&mut q, &[2.0]);
        assert!((q[0] - 1.1).abs() < 1e-6);
    }
}
