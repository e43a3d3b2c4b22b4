//! The game's objective: V(D, G) = E_data f(D(x)) + E_z f(-D(G(z))) with a
//! concave f, and the generator's loss.  D ascends V; G descends its loss plus
//! eta * ||grad_D V||^2.

use serde::{Deserialize, Serialize};

use crate::nn::layer::sigmoid;
use crate::nn::Float;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// f(t) = log sigmoid(t); G descends V (saturating, the paper's).
    Gan,
    /// As `gan` for D; G descends -E log sigmoid(D(G(z))) (non-saturating).
    Nsgan,
    /// f(t) = t (Wasserstein, no clipping).
    Wgan,
}

impl Objective {
    /// f(t).
    #[inline]
    pub fn f<T: Float>(self, t: T) -> T {
        match self {
            // log sigmoid(t) = -log(1 + e^{-t}), stable for both signs.
            Objective::Gan | Objective::Nsgan => {
                if t >= T::ZERO {
                    -(-t).exp().ln_1p()
                } else {
                    t - t.exp().ln_1p()
                }
            }
            Objective::Wgan => t,
        }
    }

    /// f'(t).
    #[inline]
    pub fn df<T: Float>(self, t: T) -> T {
        match self {
            Objective::Gan | Objective::Nsgan => sigmoid(-t),
            Objective::Wgan => T::ONE,
        }
    }

    /// f''(t).
    #[inline]
    pub fn d2f<T: Float>(self, t: T) -> T {
        match self {
            Objective::Gan | Objective::Nsgan => -(sigmoid(t) * sigmoid(-t)),
            Objective::Wgan => T::ZERO,
        }
    }

    /// The generator's loss for one fake sample with logit d (before the mean).
    #[inline]
    pub fn gen_loss<T: Float>(self, d: T) -> T {
        match self {
            Objective::Gan | Objective::Wgan => self.f(-d),
            Objective::Nsgan => -self.f(d),
        }
    }

    /// d gen_loss / d d.
    #[inline]
    pub fn gen_loss_grad<T: Float>(self, d: T) -> T {
        match self {
            Objective::Gan | Objective::Wgan => -self.df(-d),
            Objective::Nsgan => -self.df(d),
        }
    }

    /// Whether the generator's loss is V's fake half, f(-D(G(z))) (gan,
    /// wgan), so that its seeds at the fakes are those of grad_D V.
    pub fn gen_loss_is_value(self) -> bool {
        matches!(self, Objective::Gan | Objective::Wgan)
    }

    pub fn name(self) -> &'static str {
        match self {
            Objective::Gan => "gan",
            Objective::Nsgan => "nsgan",
            Objective::Wgan => "wgan",
        }
    }
}
