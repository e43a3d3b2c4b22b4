//! The paper's two-parameter toy games (PAPER.md, "The toy system").
//!
//! The state is `(psi, theta)`: `psi` is the discriminator parameter and
//! `theta` the generator parameter.  With `V(psi, theta)` the game value,
//! simultaneous gradient descent with the Nagarajan-Kolter regularizer, in
//! the small step limit, is the flow
//!
//! ```text
//! dpsi/dt   =   V_psi                                  (D ascends V)
//! dtheta/dt = -(V_theta + 2 eta V_psi V_psitheta)      (G descends V + eta |V_psi|^2)
//! ```
//!
//! Two systems:
//!
//! * `wgan-quadratic`: `D_psi(x) = psi x^2`, data `x ~ U(-1, 1)`, generator
//!   `G(z) = theta z`, `z ~ U(-1, 1)`;
//!   `V = E_x f(psi x^2) + E_z f(-psi theta^2 z^2)`.  Equilibria `(0, +-1)`.
//!   With the WGAN objective everything is closed form; otherwise the
//!   expectations of the hand-differentiated integrands are computed with
//!   64-node Gauss-Legendre quadrature (exact to rounding for polynomials of
//!   degree up to 127).
//! * `dirac`: data `delta_0`, generator `delta_theta`, `D_psi(x) = psi x`;
//!   `V = f(0) + f(-psi theta)`.  Equilibrium `(0, 0)`.
//!
//! Note on wgan-quadratic with the GAN objective: there `f''(0) = -1/4`
//! makes `V` strictly concave in `psi` at the equilibrium
//! (`V_psipsi = f''(0) (E x^4 + E z^4) = -1/10`), so the Jacobian at `(0, 1)`,
//! `[[V_pp, -2 f'(0)/3], [(2 f'(0)/3)(1 + 2 eta V_pp), -8 eta f'(0)^2 / 9]]`,
//! has eigenvalues with real part -1/20 even at `eta = 0`: that game
//! converges without the regularizer.  Only the WGAN objective (`f'' = 0`)
//! gives the paper's undamped orbits.
//!
//! [`simulate`] integrates the flow (RK4) or runs discrete simultaneous
//! gradient descent (Euler with step `dt`); [`run`] also writes
//! `trajectory.png` and `toy.json`.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::OnceLock;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::plot;

/// Which toy game.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToySystem {
    /// `D_psi(x) = psi x^2` against `G(z) = theta z`, uniform data and noise.
    WganQuadratic,
    /// Dirac-GAN (Mescheder et al. 2018): `D_psi(x) = psi x`, `G = delta_theta`.
    Dirac,
}

impl ToySystem {
    /// The accepted spellings, in order.
    pub const NAMES: [&'static str; 2] = ["wgan-quadratic", "dirac"];

    pub fn name(self) -> &'static str {
        match self {
            ToySystem::WganQuadratic => "wgan-quadratic",
            ToySystem::Dirac => "dirac",
        }
    }

    /// The system's name with its players, for plot titles.
    pub fn formula(self) -> &'static str {
        match self {
            ToySystem::WganQuadratic => "wgan-quadratic: D(x) = ψx², G(z) = θz",
            ToySystem::Dirac => "Dirac-GAN: D(x) = ψx, G = δ_θ",
        }
    }

    /// All equilibria of the game (the same for both objectives).
    pub fn equilibria(self) -> &'static [[f64; 2]] {
        match self {
            ToySystem::WganQuadratic => &[[0.0, 1.0], [0.0, -1.0]],
            ToySystem::Dirac => &[[0.0, 0.0]],
        }
    }

    /// The equilibrium at which the Jacobian is reported: `(0, 1)` for
    /// wgan-quadratic, `(0, 0)` for dirac.
    pub fn reference_equilibrium(self) -> [f64; 2] {
        self.equilibria()[0]
    }

    /// The equilibrium nearest to `state`.
    pub fn nearest_equilibrium(self, state: [f64; 2]) -> [f64; 2] {
        let d = |e: &[f64; 2]| (state[0] - e[0]).hypot(state[1] - e[1]);
        *self.equilibria().iter().min_by(|a, b| d(a).total_cmp(&d(b))).unwrap_or(&[0.0, 0.0])
    }

    /// Euclidean distance from `state` to the nearest equilibrium.
    pub fn distance_to_equilibrium(self, state: [f64; 2]) -> f64 {
        let e = self.nearest_equilibrium(state);
        (state[0] - e[0]).hypot(state[1] - e[1])
    }
}

impl fmt::Display for ToySystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ToySystem {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "wgan-quadratic" => Ok(ToySystem::WganQuadratic),
            "dirac" => Ok(ToySystem::Dirac),
            _ => Err(Error::input(format!("unknown toy system '{s}': expected one of wgan-quadratic, dirac"))),
        }
    }
}

/// The concave function `f` in `V = E f(D(x)) + E f(-D(G(z)))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToyObjective {
    /// `f(t) = -ln(1 + e^-t)`: the standard (saturating) GAN.
    Gan,
    /// `f(t) = t`: Wasserstein GAN.
    Wgan,
}

/// `1 / (1 + e^-t)` without overflow.
fn sigmoid(t: f64) -> f64 {
    if t >= 0.0 {
        1.0 / (1.0 + (-t).exp())
    } else {
        let e = t.exp();
        e / (1.0 + e)
    }
}

/// `ln(1 + e^x)` without overflow.
fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

impl ToyObjective {
    /// The accepted spellings, in order.
    pub const NAMES: [&'static str; 2] = ["gan", "wgan"];

    pub fn name(self) -> &'static str {
        match self {
            ToyObjective::Gan => "gan",
            ToyObjective::Wgan => "wgan",
        }
    }

    /// `f(t)`.
    pub fn f(self, t: f64) -> f64 {
        match self {
            ToyObjective::Gan => -softplus(-t),
            ToyObjective::Wgan => t,
        }
    }

    /// `f'(t)`.
    pub fn df(self, t: f64) -> f64 {
        match self {
            ToyObjective::Gan => sigmoid(-t),
            ToyObjective::Wgan => 1.0,
        }
    }

    /// `f''(t)`.
    pub fn d2f(self, t: f64) -> f64 {
        match self {
            ToyObjective::Gan => -sigmoid(t) * sigmoid(-t),
            ToyObjective::Wgan => 0.0,
        }
    }
}

impl fmt::Display for ToyObjective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ToyObjective {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "gan" => Ok(ToyObjective::Gan),
            "wgan" => Ok(ToyObjective::Wgan),
            _ => Err(Error::input(format!("unknown toy objective '{s}': expected one of gan, wgan"))),
        }
    }
}

/// How the flow is stepped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integrator {
    /// Classical fourth-order Runge-Kutta: follows the continuous flow.
    Rk4,
    /// Explicit Euler: exactly discrete simultaneous gradient descent with
    /// learning rate `dt`.
    Euler,
}

impl Integrator {
    /// The accepted spellings, in order.
    pub const NAMES: [&'static str; 2] = ["rk4", "euler"];

    pub fn name(self) -> &'static str {
        match self {
            Integrator::Rk4 => "rk4",
            Integrator::Euler => "euler",
        }
    }
}

impl fmt::Display for Integrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Integrator {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "rk4" => Ok(Integrator::Rk4),
            "euler" => Ok(Integrator::Euler),
            _ => Err(Error::input(format!("unknown integrator '{s}': expected one of rk4, euler"))),
        }
    }
}

/// The largest `steps` accepted (the whole trajectory is kept in memory).
pub const MAX_STEPS: usize = 10_000_000;

/// Distance to the equilibrium below which a run counts as converged.
pub const CONVERGED_TOL: f64 = 1e-3;

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct ToyOptions {
    pub system: ToySystem,
    pub objective: ToyObjective,
    /// Regularizer weight, >= 0.
    pub eta: f64,
    /// Number of integration steps, >= 1.
    pub steps: usize,
    /// Step size (time step of RK4, learning rate of Euler), > 0.
    pub dt: f64,
    /// Initial `(psi, theta)`.
    pub init: (f64, f64),
    pub integrator: Integrator,
}

impl ToyOptions {
    /// Defaults: 4000 RK4 steps of 0.05; initial state `(0.3, 1.3)` for
    /// wgan-quadratic (its unregularized orbit stays in `theta` ~ [0.6, 1.5],
    /// away from `theta = 0`) and `(1, 1)` for dirac.
    pub fn new(system: ToySystem, objective: ToyObjective, eta: f64) -> Self {
        let init = match system {
            ToySystem::WganQuadratic => (0.3, 1.3),
            ToySystem::Dirac => (1.0, 1.0),
        };
        ToyOptions { system, objective, eta, steps: 4000, dt: 0.05, init, integrator: Integrator::Rk4 }
    }

    /// Check the numbers; a bad one is an input error naming its flag.
    pub fn validate(&self) -> Result<()> {
        if !self.eta.is_finite() || self.eta < 0.0 {
            return Err(Error::input(format!(
                "--eta must be a finite number >= 0 (got {}); pass e.g. --eta 0.5, or --eta 0 for no regularizer",
                self.eta
            )));
        }
        if self.steps == 0 || self.steps > MAX_STEPS {
            return Err(Error::input(format!(
                "--steps must be between 1 and {MAX_STEPS} (got {}); pass e.g. --steps 4000",
                self.steps
            )));
        }
        if !self.dt.is_finite() || self.dt <= 0.0 {
            return Err(Error::input(format!(
                "--dt must be a finite number > 0 (got {}); pass e.g. --dt 0.05",
                self.dt
            )));
        }
        if !self.init.0.is_finite() || !self.init.1.is_finite() {
            return Err(Error::input(format!(
                "--init must be two finite numbers psi,theta (got {},{}); pass e.g. --init 0.3,1.3",
                self.init.0, self.init.1
            )));
        }
        Ok(())
    }
}

/// The first partial derivatives of `V` and the mixed second one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Partials {
    pub v_psi: f64,
    pub v_theta: f64,
    pub v_psi_theta: f64,
}

/// Nodes and weights of `n`-point Gauss-Legendre quadrature on [-1, 1]
/// (Newton's iteration on the Legendre polynomial `P_n`), nodes ascending.
pub fn gauss_legendre(n: usize) -> Vec<(f64, f64)> {
    // P_n(x) and P_n'(x) by the three-term recurrence.
    let legendre = |x: f64| {
        let (mut p0, mut p1) = (1.0, x);
        for k in 2..=n {
            let k = k as f64;
            let p2 = ((2.0 * k - 1.0) * x * p1 - (k - 1.0) * p0) / k;
            p0 = p1;
            p1 = p2;
        }
        if n == 0 {
            (1.0, 0.0)
        } else {
            (p1, n as f64 * (x * p1 - p0) / (x * x - 1.0))
        }
    };
    let mut out = Vec::with_capacity(n);
    for i in 0..n.div_ceil(2) {
        let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        for _ in 0..100 {
            let (p, dp) = legendre(x);
            let step = p / dp;
            x -= step;
            if step.abs() < 1e-16 {
                break;
            }
        }
        let (_, dp) = legendre(x);
        let w = 2.0 / ((1.0 - x * x) * dp * dp);
        if n % 2 == 1 && i == n / 2 {
            out.push((0.0, w));
        } else {
            out.push((x, w));
            out.push((-x, w));
        }
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// 64-point Gauss-Legendre rule, computed once.
fn gl64() -> &'static [(f64, f64)] {
    static NODES: OnceLock<Vec<(f64, f64)>> = OnceLock::new();
    NODES.get_or_init(|| gauss_legendre(64))
}

/// `E[g(s)]` for `s ~ U(-1, 1)` (density 1/2).
fn uniform_mean(g: impl Fn(f64) -> f64) -> f64 {
    0.5 * gl64().iter().map(|&(x, w)| w * g(x)).sum::<f64>()
}

/// The game value `V(psi, theta)`.
pub fn value(system: ToySystem, objective: ToyObjective, state: [f64; 2]) -> f64 {
    let [psi, theta] = state;
    match (system, objective) {
        (ToySystem::WganQuadratic, ToyObjective::Wgan) => psi * (1.0 - theta * theta) / 3.0,
        (ToySystem::WganQuadratic, obj) => uniform_mean(|s| {
            let s2 = s * s;
            obj.f(psi * s2) + obj.f(-psi * theta * theta * s2)
        }),
        (ToySystem::Dirac, obj) => obj.f(0.0) + obj.f(-psi * theta),
    }
}

/// `V_psi`, `V_theta`, `V_psitheta` for wgan-quadratic by quadrature.  With
/// `u = -psi theta^2 s^2` and both `x`, `z` uniform on [-1, 1]:
///
/// ```text
/// A = E[f'(psi s^2) s^2],  B = E[f'(u) s^2],  C = E[f''(u) s^4]
/// V_psi      = A - theta^2 B
/// V_theta    = -2 psi theta B
/// V_psitheta = d/dtheta (A - theta^2 B) = -2 theta B + 2 psi theta^3 C
/// ```
fn quadratic_partials_quadrature(objective: ToyObjective, psi: f64, theta: f64) -> Partials {
    let t2 = theta * theta;
    let (mut a, mut b, mut c) = (0.0, 0.0, 0.0);
    for &(s, w) in gl64() {
        let s2 = s * s;
        let u = -psi * t2 * s2;
        a += w * objective.df(psi * s2) * s2;
        b += w * objective.df(u) * s2;
        c += w * objective.d2f(u) * s2 * s2;
    }
    let (a, b, c) = (0.5 * a, 0.5 * b, 0.5 * c);
    Partials {
        v_psi: a - t2 * b,
        v_theta: -2.0 * psi * theta * b,
        v_psi_theta: -2.0 * theta * b + 2.0 * psi * theta * t2 * c,
    }
}

/// `V_psi`, `V_theta` and `V_psitheta` at `state`, from the analytic
/// derivatives (closed form where there is one, quadrature otherwise).
pub fn partials(system: ToySystem, objective: ToyObjective, state: [f64; 2]) -> Partials {
    let [psi, theta] = state;
    match (system, objective) {
        (ToySystem::WganQuadratic, ToyObjective::Wgan) => Partials {
            v_psi: (1.0 - theta * theta) / 3.0,
            v_theta: -2.0 * psi * theta / 3.0,
            v_psi_theta: -2.0 * theta / 3.0,
        },
        (ToySystem::WganQuadratic, obj) => quadratic_partials_quadrature(obj, psi, theta),
        (ToySystem::Dirac, obj) => {
            // V = f(0) + f(-psi theta)
            let t = -psi * theta;
            let d1 = obj.df(t);
            Partials { v_psi: -theta * d1, v_theta: -psi * d1, v_psi_theta: -d1 + psi * theta * obj.d2f(t) }
        }
    }
}

/// The regularized simultaneous-gradient flow
/// `(V_psi, -(V_theta + 2 eta V_psi V_psitheta))`.
pub fn vector_field(system: ToySystem, objective: ToyObjective, eta: f64, state: [f64; 2]) -> [f64; 2] {
    let p = partials(system, objective, state);
    [p.v_psi, -(p.v_theta + 2.0 * eta * p.v_psi * p.v_psi_theta)]
}

/// The Jacobian of [`vector_field`] at `state` by central differences with
/// step `h`: `J[i][j] = d field_i / d state_j`.
pub fn numerical_jacobian(
    system: ToySystem,
    objective: ToyObjective,
    eta: f64,
    state: [f64; 2],
    h: f64,
) -> [[f64; 2]; 2] {
    let mut j = [[0.0; 2]; 2];
    for col in 0..2 {
        let (mut plus, mut minus) = (state, state);
        plus[col] += h;
        minus[col] -= h;
        let fp = vector_field(system, objective, eta, plus);
        let fm = vector_field(system, objective, eta, minus);
        for row in 0..2 {
            j[row][col] = (fp[row] - fm[row]) / (2.0 * h);
        }
    }
    j
}

/// Eigenvalues of a real 2x2 matrix as `[re, im]` pairs: a conjugate pair
/// (positive imaginary part first) when the discriminant is negative, else
/// two real values, larger first.
pub fn eigenvalues_2x2(m: [[f64; 2]; 2]) -> Vec<[f64; 2]> {
    let half_trace = 0.5 * (m[0][0] + m[1][1]);
    let det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
    // (a - d)^2 / 4 + b c  is  half_trace^2 - det  without the cancellation.
    let half_diff = 0.5 * (m[0][0] - m[1][1]);
    let disc = half_diff * half_diff + m[0][1] * m[1][0];
    if disc < 0.0 {
        let im = (-disc).sqrt();
        vec![[half_trace, im], [half_trace, -im]]
    } else {
        let s = disc.sqrt();
        // The larger-magnitude root directly, the other from the determinant.
        let big = if half_trace >= 0.0 { half_trace + s } else { half_trace - s };
        let small = if big != 0.0 { det / big } else { half_trace - s };
        let (a, b) = if big >= small { (big, small) } else { (small, big) };
        vec![[a, 0.0], [b, 0.0]]
    }
}

/// The Jacobian's eigenvalues at the reference equilibrium, from central
/// differences of the vector field with `h = 1e-5`.
pub fn jacobian_eigenvalues(system: ToySystem, objective: ToyObjective, eta: f64) -> Vec<[f64; 2]> {
    let j = numerical_jacobian(system, objective, eta, system.reference_equilibrium(), 1e-5);
    eigenvalues_2x2(j)
}

/// The first integral of the unregularized wgan-quadratic flow with the WGAN
/// objective, `dpsi/dt = (1 - theta^2)/3`, `dtheta/dt = (2/3) psi theta`:
///
/// `H(psi, theta) = psi^2 - ln|theta| + theta^2 / 2`
///
/// (PAPER.md's expression, checked: `dH/dt = 2 psi (1 - theta^2)/3 +
/// (theta - 1/theta)(2/3) psi theta = 0` exactly).  Level sets are closed
/// orbits around `(0, +-1)`, where `H` has its minimum 1/2.
pub fn conserved_quantity(state: [f64; 2]) -> f64 {
    let [psi, theta] = state;
    psi * psi - theta.abs().ln() + 0.5 * theta * theta
}

/// The result of one toy run (written as `toy.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToyReport {
    pub system: String,
    pub objective: String,
    pub eta: f64,
    /// Steps requested.
    pub steps: usize,
    /// The last finite state `(psi, theta)`.
    pub final_state: [f64; 2],
    /// Distance from `final_state` to the nearest equilibrium.
    pub distance_to_equilibrium: f64,
    /// Eigenvalues `[re, im]` of the flow's Jacobian at the reference
    /// equilibrium (`(0, 1)` or `(0, 0)`), by central differences.
    pub jacobian_eigenvalues: Vec<[f64; 2]>,
    /// `distance_to_equilibrium < 1e-3` and no divergence.
    pub converged: bool,
    pub initial_distance: f64,
    /// [`conserved_quantity`] at the start and end, only for wgan-quadratic
    /// with the WGAN objective and `eta = 0`.
    pub conserved_initial: Option<f64>,
    pub conserved_final: Option<f64>,
    pub dt: f64,
    pub integrator: String,
    /// Steps actually taken (fewer than `steps` only after divergence).
    pub steps_taken: usize,
    /// The state became non-finite and the run stopped early.
    pub diverged: bool,
}

fn is_finite(s: [f64; 2]) -> bool {
    s[0].is_finite() && s[1].is_finite()
}

fn axpy(a: f64, x: [f64; 2], y: [f64; 2]) -> [f64; 2] {
    [y[0] + a * x[0], y[1] + a * x[1]]
}

/// Integrate the flow; returns the report and the trajectory (the initial
/// state followed by one state per step taken).  A non-finite state stops
/// the run: the report then holds the last finite state, `diverged = true`
/// and `converged = false`.
pub fn simulate(opts: &ToyOptions) -> Result<(ToyReport, Vec<[f64; 2]>)> {
    opts.validate()?;
    let field = |s: [f64; 2]| vector_field(opts.system, opts.objective, opts.eta, s);
    let dt = opts.dt;
    let mut state = [opts.init.0, opts.init.1];
    let mut trajectory = Vec::with_capacity(opts.steps + 1);
    trajectory.push(state);
    let mut diverged = false;
    for _ in 0..opts.steps {
        let next = match opts.integrator {
            Integrator::Euler => axpy(dt, field(state), state),
            Integrator::Rk4 => {
                let k1 = field(state);
                let k2 = field(axpy(0.5 * dt, k1, state));
                let k3 = field(axpy(0.5 * dt, k2, state));
                let k4 = field(axpy(dt, k3, state));
                [
                    state[0] + dt / 6.0 * (k1[0] + 2.0 * k2[0] + 2.0 * k3[0] + k4[0]),
                    state[1] + dt / 6.0 * (k1[1] + 2.0 * k2[1] + 2.0 * k3[1] + k4[1]),
                ]
            }
        };
        if !is_finite(next) {
            diverged = true;
            break;
        }
        state = next;
        trajectory.push(state);
    }
    let initial = trajectory[0];
    let distance = opts.system.distance_to_equilibrium(state);
    let conserved = opts.system == ToySystem::WganQuadratic && opts.objective == ToyObjective::Wgan && opts.eta == 0.0;
    let report = ToyReport {
        system: opts.system.name().to_string(),
        objective: opts.objective.name().to_string(),
        eta: opts.eta,
        steps: opts.steps,
        final_state: state,
        distance_to_equilibrium: distance,
        jacobian_eigenvalues: jacobian_eigenvalues(opts.system, opts.objective, opts.eta),
        converged: !diverged && distance < CONVERGED_TOL,
        initial_distance: opts.system.distance_to_equilibrium(initial),
        conserved_initial: conserved.then(|| conserved_quantity(initial)),
        conserved_final: conserved.then(|| conserved_quantity(state)),
        dt,
        integrator: opts.integrator.name().to_string(),
        steps_taken: trajectory.len() - 1,
        diverged,
    };
    Ok((report, trajectory))
}

/// A padded plot range covering `lo..hi`, at least `min_span` wide.
fn padded(lo: f64, hi: f64, min_span: f64) -> (f64, f64) {
    let (lo, hi) = (lo.clamp(-1e150, 1e150), hi.clamp(-1e150, 1e150));
    let span = (hi - lo).max(min_span);
    let mid = 0.5 * (lo + hi);
    let half = 0.5 * span * 1.1;
    (mid - half, mid + half)
}

/// The title of [`plot_trajectory`]: the system, the objective, eta, the
/// steps and how the run ended.
fn plot_title(opts: &ToyOptions, report: &ToyReport) -> String {
    let ending = if report.diverged {
        format!("diverged after {} steps", report.steps_taken)
    } else if report.converged {
        format!("converged: distance to equilibrium {}", sci(report.distance_to_equilibrium))
    } else {
        format!(
            "not converged: distance to equilibrium {} (from {})",
            sci(report.distance_to_equilibrium),
            sci(report.initial_distance)
        )
    };
    format!(
        "{} · {} objective · η = {} · {} {} steps of {} · {ending}",
        opts.system.formula(),
        opts.objective,
        opts.eta,
        report.steps_taken,
        match opts.integrator {
            Integrator::Rk4 => "RK4",
            Integrator::Euler => "Euler (discrete GD)",
        },
        opts.dt,
    )
}

/// `v` to 3 significant digits, in scientific notation below 0.01.
fn sci(v: f64) -> String {
    if v != 0.0 && v.abs() < 0.01 {
        format!("{v:.2e}")
    } else {
        format!("{v:.3}")
    }
}

/// Draws `trajectory` (blue) over the flow's normalised vector field (light
/// grey arrows on a 20x20 grid), the start as a green dot and the
/// equilibria as red crosses, with axes ψ (the discriminator's parameter)
/// and θ (the generator's) covering the trajectory and its nearest
/// equilibrium, a legend, and a title naming the system, the objective,
/// eta, the steps and how `report` says the run ended.
pub fn plot_trajectory(opts: &ToyOptions, report: &ToyReport, trajectory: &[[f64; 2]], path: &Path) -> Result<()> {
    let last = trajectory.iter().rev().find(|s| is_finite(**s)).copied().unwrap_or([opts.init.0, opts.init.1]);
    let eq = opts.system.nearest_equilibrium(last);
    let mut b = [eq[0], eq[0], eq[1], eq[1]];
    for s in trajectory.iter().filter(|s| is_finite(**s)) {
        b[0] = b[0].min(s[0]);
        b[1] = b[1].max(s[0]);
        b[2] = b[2].min(s[1]);
        b[3] = b[3].max(s[1]);
    }
    let field = |s: [f64; 2]| vector_field(opts.system, opts.objective, opts.eta, s);
    plot::flow(
        path,
        &plot::Flow {
            title: &plot_title(opts, report),
            x_desc: "ψ (discriminator parameter)",
            y_desc: "θ (generator parameter)",
            x_range: padded(b[0], b[1], 0.5),
            y_range: padded(b[2], b[3], 0.5),
            field: &field,
            trajectory,
            equilibria: opts.system.equilibria(),
        },
    )
}

/// Simulate, then write `out_dir/trajectory.png` and `out_dir/toy.json`
/// (the report, pretty-printed), creating `out_dir` if needed.
pub fn run(opts: &ToyOptions, out_dir: &Path) -> Result<ToyReport> {
    let (report, trajectory) = simulate(opts)?;
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, "create directory", e))?;
    plot_trajectory(opts, &report, &trajectory, &out_dir.join("trajectory.png"))?;
    let json = serde_json::to_string_pretty(&report)
        .map_err(|e| Error::runtime(format!("cannot serialize the toy report: {e}")))?;
    crate::fsutil::write_atomic(&out_dir.join("toy.json"), format!("{json}\n").as_bytes())?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYSTEMS: [ToySystem; 2] = [ToySystem::WganQuadratic, ToySystem::Dirac];
    const OBJECTIVES: [ToyObjective; 2] = [ToyObjective::Gan, ToyObjective::Wgan];

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + b.abs())
    }

    #[test]
    fn gauss_legendre_is_exact_for_polynomials() {
        for n in [1, 2, 5, 16, 64] {
            let rule = gauss_legendre(n);
            assert_eq!(rule.len(), n);
            let total: f64 = rule.iter().map(|r| r.1).sum();
            assert!(close(total, 2.0, 1e-14), "n={n}: {total}");
            for deg in (0..2 * n).step_by(2) {
                let got: f64 = rule.iter().map(|&(x, w)| w * x.powi(deg as i32)).sum();
                let want = 2.0 / (deg as f64 + 1.0);
                assert!(close(got, want, 1e-13), "n={n} deg={deg}: {got} vs {want}");
            }
        }
        // Not just polynomials: E[cos(s)] = sin(1).
        assert!(close(uniform_mean(f64::cos), 1f64.sin(), 1e-15));
    }

    #[test]
    fn objective_derivatives() {
        for obj in OBJECTIVES {
            for t in [-30.0, -2.0, -0.3, 0.0, 0.7, 3.0, 40.0] {
                let h = 1e-5;
                let d1 = (obj.f(t + h) - obj.f(t - h)) / (2.0 * h);
                let d2 = (obj.df(t + h) - obj.df(t - h)) / (2.0 * h);
                assert!(close(obj.df(t), d1, 1e-8), "{obj} f' at {t}");
                assert!(close(obj.d2f(t), d2, 1e-8), "{obj} f'' at {t}");
            }
        }
        assert_eq!(ToyObjective::Gan.df(0.0), 0.5);
        assert!(ToyObjective::Gan.f(-800.0).is_finite());
        assert!(ToyObjective::Gan.f(800.0).abs() < 1e-300);
    }

    #[test]
    fn partials_match_finite_differences_of_value() {
        let points = [[0.3, 1.3], [-0.7, 0.4], [1.5, -2.0], [0.0, 1.0], [2.0, 0.1], [-1.2, -0.8]];
        let h = 1e-4;
        for sys in SYSTEMS {
            for obj in OBJECTIVES {
                for s in points {
                    let v = |p: f64, t: f64| value(sys, obj, [p, t]);
                    let [p, t] = s;
                    let v_psi = (v(p + h, t) - v(p - h, t)) / (2.0 * h);
                    let v_theta = (v(p, t + h) - v(p, t - h)) / (2.0 * h);
                    let v_pt = (v(p + h, t + h) - v(p + h, t - h) - v(p - h, t + h) + v(p - h, t - h)) / (4.0 * h * h);
                    let got = partials(sys, obj, s);
                    let tag = format!("{sys} {obj} at {s:?}: {got:?}");
                    assert!(close(got.v_psi, v_psi, 1e-7), "V_psi {tag} vs {v_psi}");
                    assert!(close(got.v_theta, v_theta, 1e-7), "V_theta {tag} vs {v_theta}");
                    assert!(close(got.v_psi_theta, v_pt, 1e-5), "V_pt {tag} vs {v_pt}");
                }
            }
        }
    }

    #[test]
    fn quadrature_matches_closed_form_for_wgan() {
        for s in [[0.3, 1.3], [-0.7, 0.4], [1.5, -2.0]] {
            let q = quadratic_partials_quadrature(ToyObjective::Wgan, s[0], s[1]);
            let c = partials(ToySystem::WganQuadratic, ToyObjective::Wgan, s);
            assert!(close(q.v_psi, c.v_psi, 1e-14));
            assert!(close(q.v_theta, c.v_theta, 1e-14));
            assert!(close(q.v_psi_theta, c.v_psi_theta, 1e-14));
            let v = uniform_mean(|x| s[0] * x * x - s[0] * s[1] * s[1] * x * x);
            let closed = value(ToySystem::WganQuadratic, ToyObjective::Wgan, s);
            assert!(close(v, closed, 1e-14));
            assert!(close(closed, s[0] * (1.0 - s[1] * s[1]) / 3.0, 1e-15));
        }
    }

    #[test]
    fn wgan_quadratic_theta_dynamics_match_paper() {
        for eta in [0.0, 0.25, 0.5, 2.0] {
            for s in [[0.3, 1.3], [-0.7, 0.4], [1.5, -2.0], [0.0, 1.0]] {
                let [psi, theta] = s;
                let f = vector_field(ToySystem::WganQuadratic, ToyObjective::Wgan, eta, s);
                assert!(close(f[0], (1.0 - theta * theta) / 3.0, 1e-15));
                let want = 2.0 / 3.0 * psi * theta + 4.0 * eta / 9.0 * theta * (1.0 - theta * theta);
                assert!(close(f[1], want, 1e-14), "eta={eta} {s:?}: {} vs {want}", f[1]);
            }
        }
    }

    #[test]
    fn equilibria_are_stationary() {
        for sys in SYSTEMS {
            for obj in OBJECTIVES {
                for &e in sys.equilibria() {
                    let f = vector_field(sys, obj, 0.7, e);
                    assert!(f[0].abs() < 1e-15 && f[1].abs() < 1e-15, "{sys} {obj} {e:?}");
                }
            }
        }
    }

    #[test]
    fn jacobians_match_closed_forms() {
        for eta in [0.0, 0.5, 3.0] {
            for obj in OBJECTIVES {
                let d = obj.df(0.0);
                let j = numerical_jacobian(ToySystem::Dirac, obj, eta, [0.0, 0.0], 1e-5);
                let want = [[0.0, -d], [d, -2.0 * eta * d * d]];
                for r in 0..2 {
                    for c in 0..2 {
                        assert!((j[r][c] - want[r][c]).abs() < 1e-9, "dirac {obj} {j:?}");
                    }
                }
                // wgan-quadratic at (0, 1), with V_psipsi = f''(0) (E x^4 + E z^4):
                // [[V_pp, -2 f'(0)/3], [(2 f'(0)/3)(1 + 2 eta V_pp), -8 eta f'(0)^2 / 9]].
                let vpp = 2.0 * obj.d2f(0.0) / 5.0;
                let j = numerical_jacobian(ToySystem::WganQuadratic, obj, eta, [0.0, 1.0], 1e-5);
                let want = [[vpp, -2.0 * d / 3.0], [2.0 * d / 3.0 * (1.0 + 2.0 * eta * vpp), -8.0 * eta * d * d / 9.0]];
                for r in 0..2 {
                    for c in 0..2 {
                        assert!((j[r][c] - want[r][c]).abs() < 1e-9, "quad {obj} {j:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn eigenvalues_of_2x2() {
        let e = eigenvalues_2x2([[0.0, -2.0 / 3.0], [2.0 / 3.0, 0.0]]);
        assert_eq!(e.len(), 2);
        assert!(e[0][0].abs() < 1e-15 && close(e[0][1], 2.0 / 3.0, 1e-15));
        assert!(close(e[1][1], -2.0 / 3.0, 1e-15));
        let e = eigenvalues_2x2([[2.0, 0.0], [0.0, -3.0]]);
        assert_eq!(e, vec![[2.0, 0.0], [-3.0, 0.0]]);
        let e = eigenvalues_2x2([[1.0, 2.0], [3.0, 4.0]]);
        let s = 33f64.sqrt();
        assert!(close(e[0][0], 2.5 + s / 2.0, 1e-14) && close(e[1][0], 2.5 - s / 2.0, 1e-14));
        assert_eq!(eigenvalues_2x2([[0.0; 2]; 2]), vec![[0.0, 0.0], [0.0, 0.0]]);
    }

    #[test]
    fn conserved_quantity_is_a_first_integral() {
        // grad H . field == 0 at arbitrary points (theta != 0).
        for s in [[0.3, 1.3], [-0.7, 0.4], [1.5, -2.0], [0.1, -0.6]] {
            let [psi, theta] = s;
            let f = vector_field(ToySystem::WganQuadratic, ToyObjective::Wgan, 0.0, s);
            let grad = [2.0 * psi, theta - 1.0 / theta];
            let dh = grad[0] * f[0] + grad[1] * f[1];
            assert!(dh.abs() < 1e-14, "{s:?}: dH/dt = {dh}");
        }
        assert_eq!(conserved_quantity([0.0, 1.0]), 0.5);
    }

    #[test]
    fn names_round_trip_and_errors() {
        for name in ToySystem::NAMES {
            assert_eq!(name.parse::<ToySystem>().unwrap().name(), name);
        }
        for name in ToyObjective::NAMES {
            assert_eq!(name.parse::<ToyObjective>().unwrap().to_string(), name);
        }
        for name in Integrator::NAMES {
            assert_eq!(name.parse::<Integrator>().unwrap().to_string(), name);
        }
        let e = "quadratic".parse::<ToySystem>().unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("wgan-quadratic") && e.to_string().contains("dirac"));
        let e = "lsgan".parse::<ToyObjective>().unwrap_err();
        assert!(e.to_string().contains("gan, wgan"));
        assert!("rk2".parse::<Integrator>().is_err());
    }

    #[test]
    fn validation_names_the_flag() {
        let base = ToyOptions::new(ToySystem::Dirac, ToyObjective::Gan, 0.5);
        assert!(base.validate().is_ok());
        let cases: Vec<(ToyOptions, &str)> = vec![
            (ToyOptions { eta: -1.0, ..base.clone() }, "--eta"),
            (ToyOptions { eta: f64::NAN, ..base.clone() }, "--eta"),
            (ToyOptions { eta: f64::INFINITY, ..base.clone() }, "--eta"),
            (ToyOptions { steps: 0, ..base.clone() }, "--steps"),
            (ToyOptions { steps: MAX_STEPS + 1, ..base.clone() }, "--steps"),
            (ToyOptions { dt: 0.0, ..base.clone() }, "--dt"),
            (ToyOptions { dt: -0.1, ..base.clone() }, "--dt"),
            (ToyOptions { dt: f64::NAN, ..base.clone() }, "--dt"),
            (ToyOptions { init: (f64::NAN, 0.0), ..base.clone() }, "--init"),
        ];
        for (opts, flag) in cases {
            let e = simulate(&opts).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains(flag), "{e}");
        }
    }

    #[test]
    fn divergence_stops_without_panicking() {
        // Euler with a huge step on the unregularized Dirac game blows up.
        let opts = ToyOptions {
            dt: 1e3,
            steps: 500,
            integrator: Integrator::Euler,
            ..ToyOptions::new(ToySystem::Dirac, ToyObjective::Wgan, 0.0)
        };
        let (report, traj) = simulate(&opts).unwrap();
        assert!(report.diverged && !report.converged);
        assert!(report.steps_taken < 500);
        assert_eq!(traj.len(), report.steps_taken + 1);
        assert!(report.final_state.iter().all(|v| v.is_finite()));
        assert_eq!(report.final_state, *traj.last().unwrap());
        // Serializes (infinite distances become null, not an error).
        serde_json::to_string(&report).unwrap();
    }

    #[test]
    fn trajectory_plot_has_a_title() {
        let dir = std::env::temp_dir().join(format!("lockstep-toy-unit-{}", std::process::id()));
        for (eta, words) in [(0.5, "converged"), (0.0, "not converged")] {
            let opts = ToyOptions { steps: 300, ..ToyOptions::new(ToySystem::Dirac, ToyObjective::Gan, eta) };
            let (report, traj) = simulate(&opts).unwrap();
            let title = plot_title(&opts, &report);
            assert!(title.contains("Dirac-GAN") && title.contains("gan objective") && title.contains(words), "{title}");
            assert!(title.contains(&format!("η = {eta}")) && title.contains("300 RK4 steps of 0.05"), "{title}");
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("t.png");
            plot_trajectory(&opts, &report, &traj, &path).unwrap();
            let file = std::fs::File::open(&path).unwrap();
            let mut reader = png::Decoder::new(std::io::BufReader::new(file)).read_info().unwrap();
            let mut buf = vec![0; reader.output_buffer_size()];
            let info = reader.next_frame(&mut buf).unwrap();
            assert_eq!((info.width, info.height), crate::plot::FLOW_SIZE);
            // The title band (the top 40 rows) holds dark text pixels.
            let band = &buf[..40 * info.width as usize * 3];
            let dark = band.chunks_exact(3).filter(|p| p.iter().all(|&c| c < 100)).count();
            assert!(dark > 100, "{dark} dark pixels in the title band");
        }
        let diverged = ToyReport {
            diverged: true,
            converged: false,
            steps_taken: 17,
            ..simulate(&ToyOptions::new(ToySystem::Dirac, ToyObjective::Wgan, 0.0)).unwrap().0
        };
        let opts = ToyOptions {
            integrator: Integrator::Euler,
            ..ToyOptions::new(ToySystem::WganQuadratic, ToyObjective::Wgan, 0.0)
        };
        let title = plot_title(&opts, &diverged);
        assert!(
            title.contains("wgan-quadratic") && title.contains("diverged after 17 steps") && title.contains("Euler"),
            "{title}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn nearest_equilibrium_distance() {
        let s = ToySystem::WganQuadratic;
        assert_eq!(s.nearest_equilibrium([0.1, -0.9]), [0.0, -1.0]);
        assert!(close(s.distance_to_equilibrium([0.3, -1.4]), 0.5, 1e-15));
        assert!(close(ToySystem::Dirac.distance_to_equilibrium([3.0, 4.0]), 5.0, 1e-15));
    }
}
