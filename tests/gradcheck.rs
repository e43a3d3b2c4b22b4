//! Every pass of every layer, the loss terms and the regularizer's gradient
//! against central finite differences in f64 (relative error under 1e-6), on
//! random shapes and inputs.

use lockstep::gan::objective::Objective;
use lockstep::gan::phases::{self, ChunkState, Game};
use lockstep::nn::layer::Linear;
use lockstep::nn::{Activation, LayerSpec, Network, Shape, Workspace};
use lockstep::rng::{Purpose, Stream};

const EPS: f64 = 1e-6;
const TOL: f64 = 1e-6;

/// Deterministic pseudo-random numbers for test inputs.
struct Gen(Stream, u32);
impl Gen {
    fn new(seed: u64) -> Gen {
        Gen(Stream::new(seed, Purpose::Eval, 999), 0)
    }
    fn vec(&mut self, n: usize, scale: f64) -> Vec<f64> {
        let mut v = vec![0.0f32; n];
        self.0.normals(self.1, &mut v);
        self.1 += 1;
        v.into_iter().map(|x| x as f64 * scale).collect()
    }
    fn int(&mut self, lo: usize, hi: usize) -> usize {
        let w = self.0.words(self.1, 0)[0];
        self.1 += 1;
        lo + (w as usize) % (hi - lo + 1)
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt();
    let scale = dot(a, a).sqrt().max(dot(b, b).sqrt()).max(1e-300);
    diff / scale
}

/// Central differences of a scalar function along every coordinate of `x`.
fn fd_grad(x: &[f64], f: &mut dyn FnMut(&[f64]) -> f64) -> Vec<f64> {
    let mut x = x.to_vec();
    (0..x.len())
        .map(|i| {
            let x0 = x[i];
            x[i] = x0 + EPS;
            let fp = f(&x);
            x[i] = x0 - EPS;
            let fm = f(&x);
            x[i] = x0;
            (fp - fm) / (2.0 * EPS)
        })
        .collect()
}

fn check(what: &str, analytic: &[f64], numeric: &[f64]) {
    let e = rel_err(analytic, numeric);
    assert!(e < TOL, "{what}: relative error {e:e}\n analytic {analytic:?}\n numeric  {numeric:?}");
}

const ACTS: [Activation; 5] =
    [Activation::Relu, Activation::LeakyRelu(0.2), Activation::Tanh, Activation::Sigmoid, Activation::Scale(0.25)];

#[test]
fn activation_passes_match_finite_differences() {
    let mut g = Gen::new(1);
    for act in ACTS {
        let n = g.int(3, 40);
        let a = g.vec(n, 1.5);
        let adot = g.vec(n, 1.0);
        let (ybar, ydotbar, w) = (g.vec(n, 1.0), g.vec(n, 1.0), g.vec(n, 1.0));
        let fwd = |a: &[f64]| {
            let mut y = vec![0.0; a.len()];
            act.forward(a, &mut y);
            y
        };
        // backward: d<w, y>/da
        let mut da = vec![0.0; n];
        act.backward(&a, &w, &mut da);
        check(&format!("{act:?} backward"), &da, &fd_grad(&a, &mut |a| dot(&w, &fwd(a))));
        // jvp: ydot = d/dt y(a + t adot)
        let mut ydot = vec![0.0; n];
        act.jvp(&a, &adot, &mut ydot);
        let num: Vec<f64> = {
            let p: Vec<f64> = a.iter().zip(&adot).map(|(x, d)| x + EPS * d).collect();
            let m: Vec<f64> = a.iter().zip(&adot).map(|(x, d)| x - EPS * d).collect();
            fwd(&p).iter().zip(fwd(&m)).map(|(p, m)| (p - m) / (2.0 * EPS)).collect()
        };
        check(&format!("{act:?} jvp"), &ydot, &num);
        // jvp_backward: gradient of M(a, adot) = <ybar, y> + <ydotbar, ydot> in a and adot.
        let m = |a: &[f64], adot: &[f64]| {
            let mut yd = vec![0.0; a.len()];
            act.jvp(a, adot, &mut yd);
            dot(&ybar, &fwd(a)) + dot(&ydotbar, &yd)
        };
        let (mut abar, mut adotbar) = (vec![0.0; n], vec![0.0; n]);
        act.jvp_backward(&a, Some(&adot), &ybar, &ydotbar, &mut abar, Some(&mut adotbar));
        check(&format!("{act:?} jvp_backward x̄"), &abar, &fd_grad(&a, &mut |a| m(a, &adot)));
        check(&format!("{act:?} jvp_backward ẋ̄"), &adotbar, &fd_grad(&adot, &mut |d| m(&a, d)));
    }
}

#[test]
fn linear_passes_match_finite_differences() {
    let mut g = Gen::new(2);
    for _ in 0..4 {
        let (rows, inp, out) = (g.int(1, 9), g.int(1, 13), g.int(1, 11));
        let (w, b) = (g.vec(out * inp, 0.7), g.vec(out, 0.5));
        let (vw, vb) = (g.vec(out * inp, 1.0), g.vec(out, 1.0));
        let (x, xdot) = (g.vec(rows * inp, 1.0), g.vec(rows * inp, 1.0));
        let (wy, ybar, ydotbar) = (g.vec(rows * out, 1.0), g.vec(rows * out, 1.0), g.vec(rows * out, 1.0));
        let fwd = |w: &[f64], b: &[f64], x: &[f64]| {
            let mut y = vec![0.0; rows * out];
            Linear { w, b, inp, out }.forward(rows, x, &mut y);
            y
        };
        // forward against the definition
        let y = fwd(&w, &b, &x);
        for r in 0..rows {
            for o in 0..out {
                let want = b[o] + (0..inp).map(|i| x[r * inp + i] * w[o * inp + i]).sum::<f64>();
                assert!((y[r * out + o] - want).abs() < 1e-12);
            }
        }
        // backward
        let lin = Linear { w: &w, b: &b, inp, out };
        let (mut dw, mut db, mut dx) = (vec![0.0; out * inp], vec![0.0; out], vec![0.0; rows * inp]);
        lin.backward(rows, &x, &wy, Some((&mut dw, &mut db)), Some(&mut dx));
        check("linear dW", &dw, &fd_grad(&w, &mut |w| dot(&wy, &fwd(w, &b, &x))));
        check("linear db", &db, &fd_grad(&b, &mut |b| dot(&wy, &fwd(&w, b, &x))));
        check("linear dx", &dx, &fd_grad(&x, &mut |x| dot(&wy, &fwd(&w, &b, x))));
        // jvp: d/dt y(x + t xdot; W + t V, b + t c)
        let dir = Linear { w: &vw, b: &vb, inp, out };
        let mut ydot = vec![0.0; rows * out];
        lin.jvp(&dir, rows, &x, Some(&xdot), &mut ydot);
        let at = |t: f64| {
            let w2: Vec<f64> = w.iter().zip(&vw).map(|(a, d)| a + t * d).collect();
            let b2: Vec<f64> = b.iter().zip(&vb).map(|(a, d)| a + t * d).collect();
            let x2: Vec<f64> = x.iter().zip(&xdot).map(|(a, d)| a + t * d).collect();
            fwd(&w2, &b2, &x2)
        };
        let num: Vec<f64> = at(EPS).iter().zip(at(-EPS)).map(|(p, m)| (p - m) / (2.0 * EPS)).collect();
        check("linear jvp", &ydot, &num);
        // jvp_backward
        let m = |x: &[f64], xd: &[f64]| {
            let mut yd = vec![0.0; rows * out];
            lin.jvp(&dir, rows, x, Some(xd), &mut yd);
            dot(&ybar, &fwd(&w, &b, x)) + dot(&ydotbar, &yd)
        };
        let (mut xbar, mut xdotbar) = (vec![0.0; rows * inp], vec![0.0; rows * inp]);
        lin.jvp_backward(&dir, rows, &ybar, &ydotbar, &mut xbar, Some(&mut xdotbar));
        check("linear jvp_backward x̄", &xbar, &fd_grad(&x, &mut |x| m(x, &xdot)));
        check("linear jvp_backward ẋ̄", &xdotbar, &fd_grad(&xdot, &mut |d| m(&x, d)));
    }
}

fn net(spec: &[&str], input: usize) -> Network {
    Network::new(spec.iter().map(|s| LayerSpec::parse(s).unwrap()).collect(), input)
}

fn shaped(spec: &[&str], input: Shape) -> Network {
    Network::build("test", spec.iter().map(|s| LayerSpec::parse(s).unwrap()).collect(), input).unwrap()
}

#[test]
fn network_passes_match_finite_differences() {
    let n = net(&["scale 0.5", "linear 7", "tanh", "linear 6", "leaky_relu 0.2", "linear 5", "sigmoid", "linear 3"], 4);
    check_network_passes(&n, 3, 5);
}

/// Networks of conv, conv_t, reshape and flatten layers (odd sizes, strides
/// 1 to 3, padding 0 to 2, several channels): every pass of the whole network.
#[test]
fn conv_network_passes_match_finite_differences() {
    let nets = [
        shaped(&["conv 3 3 2 1", "tanh", "conv_t 2 3 1 0", "sigmoid", "flatten", "linear 4"], Shape::new(2, 5, 7)),
        shaped(
            &["linear 12", "reshape 3 2 2", "conv_t 2 4 2 1", "leaky_relu 0.2", "conv 1 1 1 0", "tanh"],
            Shape::flat(5),
        ),
        shaped(&["conv 2 4 3 2", "sigmoid", "flatten", "linear 3"], Shape::new(1, 6, 6)),
        shaped(&["conv_t 3 3 2 2", "tanh", "conv 2 3 1 1", "scale 0.5"], Shape::new(2, 3, 4)),
    ];
    for (k, n) in nets.iter().enumerate() {
        check_network_passes(n, 30 + k as u64, 3);
    }
}

fn check_network_passes(n: &Network, seed: u64, rows: usize) {
    let mut g = Gen::new(seed);
    let (wi, wo) = (n.input, n.output());
    let p = g.vec(n.n_params, 0.6);
    let v = g.vec(n.n_params, 1.0);
    let (x, xdot) = (g.vec(rows * wi, 1.0), g.vec(rows * wi, 1.0));
    let (wy, ybar, ydotbar) = (g.vec(rows * wo, 1.0), g.vec(rows * wo, 1.0), g.vec(rows * wo, 1.0));
    let mut ws = Workspace::new(n, rows);
    let out = |p: &[f64], x: &[f64]| {
        let mut ws = Workspace::new(n, rows);
        n.forward(p, x, &mut ws, rows);
        n.output_of(&ws, 0..rows).to_vec()
    };
    n.forward(&p, &x, &mut ws, rows);
    let (mut gp, mut gx) = (vec![0.0; n.n_params], vec![0.0; rows * wi]);
    n.backward(&p, &x, &mut ws, 0..rows, &wy, Some(&mut gp), Some(&mut gx));
    check("network backward params", &gp, &fd_grad(&p, &mut |p| dot(&wy, &out(p, &x))));
    check("network backward input", &gx, &fd_grad(&x, &mut |x| dot(&wy, &out(&p, x))));
    // jvp along (v, xdot)
    n.jvp(&p, &v, &x, Some(&xdot), &mut ws, 0..rows);
    let ydot = n.tangent_of(&ws, rows).unwrap().to_vec();
    let at = |t: f64| {
        let p2: Vec<f64> = p.iter().zip(&v).map(|(a, d)| a + t * d).collect();
        let x2: Vec<f64> = x.iter().zip(&xdot).map(|(a, d)| a + t * d).collect();
        out(&p2, &x2)
    };
    let num: Vec<f64> = at(EPS).iter().zip(at(-EPS)).map(|(a, b)| (a - b) / (2.0 * EPS)).collect();
    check("network jvp", &ydot, &num);
    // jvp_backward, with and without an input tangent
    for with_xdot in [true, false] {
        let xd = with_xdot.then_some(xdot.as_slice());
        let m = |x: &[f64], xd: Option<&[f64]>| {
            let mut ws = Workspace::new(n, rows);
            n.forward(&p, x, &mut ws, rows);
            n.jvp(&p, &v, x, xd, &mut ws, 0..rows);
            dot(&ybar, n.output_of(&ws, 0..rows)) + dot(&ydotbar, n.tangent_of(&ws, rows).unwrap())
        };
        n.forward(&p, &x, &mut ws, rows);
        n.jvp(&p, &v, &x, xd, &mut ws, 0..rows);
        let (mut xbar, mut xdotbar) = (vec![0.0; rows * wi], vec![0.0; rows * wi]);
        n.jvp_backward(&p, &v, &x, xd, &mut ws, 0..rows, &ybar, &ydotbar, &mut xbar, Some(&mut xdotbar));
        check(&format!("network jvp_backward x̄ (xdot {with_xdot})"), &xbar, &fd_grad(&x, &mut |x| m(x, xd)));
        if with_xdot {
            check("network jvp_backward ẋ̄", &xdotbar, &fd_grad(&xdot, &mut |d| m(&x, Some(d))));
        }
    }
}

/// A small game whose D has curvature (tanh, sigmoid) so that σ'' matters.
fn small_game(objective: Objective, eta: f64, d_layers: &[&str]) -> Game {
    Game {
        gen: net(&["linear 6", "tanh", "linear 5", "relu", "linear 2"], 3),
        disc: net(d_layers, 2),
        objective,
        eta,
        batch: 7,
    }
}

struct Fixture {
    game: Game,
    pg: Vec<f64>,
    pd: Vec<f64>,
    z: Vec<f64>,
    real: Vec<f64>,
}

impl Fixture {
    fn new(game: Game, seed: u64) -> Fixture {
        let mut g = Gen::new(seed);
        let b = game.batch;
        Fixture {
            pg: g.vec(game.gen.n_params, 0.8),
            pd: g.vec(game.disc.n_params, 0.8),
            z: g.vec(b * game.gen.input, 1.0),
            real: g.vec(b * game.disc.input, 1.0),
            game,
        }
    }

    /// Phase 1 (and 2 if eta > 0) on one chunk holding the whole batch.
    fn run(&self, pg: &[f64], pd: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let lay = self.game.layout();
        let mut st = ChunkState::new(&self.game, self.game.batch);
        st.z.copy_from_slice(&self.z);
        st.real_mut().copy_from_slice(&self.real);
        let mut out = vec![0.0; lay.stride()];
        phases::phase1(&self.game, pg, pd, &mut st, &mut out, self.game.eta == 0.0);
        if self.game.eta > 0.0 {
            let v = out[lay.disc()].to_vec();
            phases::phase2(&self.game, pg, pd, &v, &mut st, &mut out);
        }
        (out[lay.disc()].to_vec(), out[lay.gen()].to_vec(), out[lay.stats()].to_vec())
    }

    fn value(&self, pg: &[f64], pd: &[f64]) -> f64 {
        let s = self.run(pg, pd).2;
        s[phases::stat::V_REAL] + s[phases::stat::V_FAKE]
    }

    /// The generator's whole loss: its loss term plus eta * ||grad_D V||^2,
    /// with grad_D V from phase 1 (itself checked against differences of V).
    fn gen_objective(&self, pg: &[f64]) -> f64 {
        let (gd, _, s) = self.run(pg, &self.pd);
        s[phases::stat::GEN_LOSS] + self.game.eta * dot(&gd, &gd)
    }
}

#[test]
fn loss_terms_and_regularizer_gradient_match_finite_differences() {
    let dls: [&[&str]; 2] = [
        &["scale 0.25", "linear 6", "tanh", "linear 5", "sigmoid", "linear 1"],
        &["scale 0.25", "linear 8", "relu", "linear 1"],
    ];
    for (k, dl) in dls.iter().enumerate() {
        for obj in [Objective::Gan, Objective::Nsgan, Objective::Wgan] {
            for eta in [0.0, 0.5] {
                let fx = Fixture::new(small_game(obj, eta, dl), 10 + k as u64);
                let (gd, gg, _) = fx.run(&fx.pg, &fx.pd);
                let what = format!("D {k}, {obj:?}, eta {eta}");
                check(&format!("grad_D V ({what})"), &gd, &fd_grad(&fx.pd, &mut |pd| fx.value(&fx.pg, pd)));
                check(&format!("grad_G ({what})"), &gg, &fd_grad(&fx.pg, &mut |pg| fx.gen_objective(pg)));
            }
        }
    }
}

/// The regularized generator gradient of a whole conv game (G: linear,
/// reshape, conv_t; D: conv, conv, flatten, linear) against differences of
/// the generator's loss + eta ||grad_D V||², for each objective.  Dropping
/// the regularizer's term (eta 0 in the analytic gradient) must fail the
/// same comparison, so the check can tell.
#[test]
fn conv_game_regularizer_gradient_matches_finite_differences() {
    let gen = shaped(&["linear 8", "tanh", "reshape 2 2 2", "conv_t 1 3 2 1", "tanh"], Shape::flat(3));
    let disc = shaped(&["conv 3 2 1 0", "tanh", "conv 2 2 2 1", "sigmoid", "flatten", "linear 1"], Shape::new(1, 3, 3));
    for obj in [Objective::Gan, Objective::Nsgan, Objective::Wgan] {
        let game = Game { gen: gen.clone(), disc: disc.clone(), objective: obj, eta: 0.5, batch: 5 };
        let fx = Fixture::new(game, 40);
        let (gd, gg, _) = fx.run(&fx.pg, &fx.pd);
        check(&format!("conv grad_D V ({obj:?})"), &gd, &fd_grad(&fx.pd, &mut |pd| fx.value(&fx.pg, pd)));
        let numeric = fd_grad(&fx.pg, &mut |pg| fx.gen_objective(pg));
        check(&format!("conv grad_G with the regularizer ({obj:?})"), &gg, &numeric);
        let without = Fixture::new(Game { eta: 0.0, ..fx.game.clone() }, 40);
        let (_, gg0, _) = without.run(&fx.pg, &fx.pd);
        let e = rel_err(&gg0, &numeric);
        assert!(e > 1e-3, "{obj:?}: the gradient without the regularizer also passes ({e:e}): the check is blind");
    }
}
