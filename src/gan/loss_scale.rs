//! Dynamic loss scaling (Micikevicius et al. 2018, PyTorch's GradScaler):
//! fp16 backends multiply the seeds of every backward pass by the scale and
//! divide the fp32 gradient sums by it.  Any inf/NaN skips the step for
//! every worker and halves the scale; `WINDOW` clean steps in a row double
//! it.  The regularizer's inner gradient v = grad_D V is unscaled (a reduced
//! fp32 sum) before it enters the penalty.  The CPU backend computes in f32
//! and ignores the scale; the bookkeeping is the same for both.

use serde::Serialize;

/// The scale a run starts from.
pub const INITIAL: f32 = 65_536.0;
/// Clean steps in a row after which the scale doubles.
pub const WINDOW: u64 = 2000;
/// Bounds: 2^-24 (an fp16 subnormal seed) to 2^24 (beyond it every fp16 seed overflows).
pub const MIN: f32 = 1.0 / 16_777_216.0;
pub const MAX: f32 = 16_777_216.0;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LossScale {
    pub scale: f32,
    /// Clean steps since the scale last changed.
    pub clean: u64,
}

impl Default for LossScale {
    fn default() -> Self {
        LossScale { scale: INITIAL, clean: 0 }
    }
}

impl LossScale {
    /// Records a step's outcome: a skipped step halves the scale, the
    /// `WINDOW`-th clean step in a row doubles it.
    pub fn update(&mut self, skipped: bool) {
        if skipped {
            self.scale = (self.scale * 0.5).max(MIN);
            self.clean = 0;
        } else {
            self.clean += 1;
            if self.clean >= WINDOW {
                self.scale = (self.scale * 2.0).min(MAX);
                self.clean = 0;
            }
        }
    }
}

/// x[r * stride + j] *= inv_scale for the first `rows` rows and j < len;
/// returns how many results are not finite.  The CPU twin of
/// kernels/loss_scale.cu's `unscale_check`.
pub fn unscale_check(x: &mut [f32], stride: usize, rows: usize, len: usize, inv_scale: f32) -> usize {
    let mut bad = 0;
    for r in 0..rows {
        for v in &mut x[r * stride..r * stride + len] {
            *v *= inv_scale;
            bad += !v.is_finite() as usize;
        }
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_on_skip_doubles_after_a_clean_window() {
        let mut s = LossScale::default();
        s.update(true);
        assert_eq!(s.scale, INITIAL / 2.0);
        for _ in 0..WINDOW - 1 {
            s.update(false);
        }
        assert_eq!(s.scale, INITIAL / 2.0);
        s.update(false);
        assert_eq!((s.scale, s.clean), (INITIAL, 0));
        s.update(false);
        s.update(true);
        assert_eq!((s.scale, s.clean), (INITIAL / 2.0, 0));
        let mut low = LossScale { scale: MIN, clean: 0 };
        low.update(true);
        assert_eq!(low.scale, MIN);
    }

    #[test]
    fn unscale_counts_non_finite() {
        let mut x = vec![2.0, f32::INFINITY, 4.0, 9.0, 8.0, f32::NAN];
        assert_eq!(unscale_check(&mut x, 3, 2, 2, 0.5), 1);
        assert_eq!(&x[..2], &[1.0, f32::INFINITY]);
        assert_eq!(x[2], 4.0, "outside `len` is left alone");
        assert_eq!(&x[3..5], &[4.5, 4.0]);
        assert!(x[5].is_nan());
    }
}
