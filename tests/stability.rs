//! The game Jacobian's eigenvalues (`lockstep::stability`): exact products
//! against central differences and a dense Jacobian, restarted Arnoldi
//! against the dense eigen-decomposition on a small MLP game, a linear game
//! whose Jacobian is derived by hand, and the `lockstep stability` command
//! and the live estimates of a training run.

use faer::{c64, Mat};
use lockstep::backend::Setup;
use lockstep::config::Config;
use lockstep::gan::objective::Objective;
use lockstep::gan::trainer::{self, TrainState};
use lockstep::stability::arnoldi::{self, Operator, Options};
use lockstep::stability::{Field, Jacobian};

mod common;

/// A small smooth game: G 8 → 16 → 2 and D 2 → 16 → 1 with tanh (243
/// parameters), batch 16 in chunks of 8, at its initial point nudged off it.
fn small_game(objective: &str, eta: f64) -> (Setup, Vec<f64>) {
    let mut cfg = Config::default();
    cfg.generator.layers = ["linear 16", "tanh", "linear 2"].map(String::from).to_vec();
    cfg.discriminator.layers = ["linear 16", "tanh", "linear 1"].map(String::from).to_vec();
    cfg.train.latent = 8;
    cfg.train.batch = 16;
    cfg.train.chunk = 8;
    cfg.train.eta = eta;
    cfg.train.objective = match objective {
        "gan" => Objective::Gan,
        "nsgan" => Objective::Nsgan,
        _ => Objective::Wgan,
    };
    cfg.generator.init_gain = 1.5;
    cfg.discriminator.init_gain = 1.5;
    let setup = trainer::setup(&cfg).unwrap();
    let st = TrainState::init(&cfg, &setup.game);
    let theta =
        st.disc.iter().chain(&st.gen).enumerate().map(|(i, &x)| x as f64 + 0.05 * ((i % 7) as f64 - 3.0)).collect();
    (setup, theta)
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// A direction with every coordinate nonzero.
fn direction(n: usize) -> Vec<f64> {
    (0..n).map(|i| ((i * 37 % 101) as f64 - 50.0) / 50.0).collect()
}

#[test]
fn exact_products_equal_central_differences_and_the_dense_jacobian() {
    for (objective, eta) in [("gan", 0.5), ("nsgan", 0.0), ("wgan", 0.3)] {
        let (setup, theta) = small_game(objective, eta);
        let mut dual = Field::new(&setup, 7, eta, false).unwrap();
        let mut jac = Jacobian::at(&mut dual, &theta).unwrap();
        let n = jac.dim();
        assert!((200..400).contains(&n), "{n} parameters");
        let u = direction(n);
        let mut ju = vec![0.0; n];
        jac.apply(&u, &mut ju).unwrap();

        // Central differences of the f64 field, at a step where both errors are small.
        let mut plain: Field<f64> = Field::new(&setup, 7, eta, true).unwrap();
        let h = 1e-5;
        let (mut fp, mut fm) = (vec![0.0; n], vec![0.0; n]);
        let tp: Vec<f64> = theta.iter().zip(&u).map(|(t, d)| t + h * d).collect();
        let tm: Vec<f64> = theta.iter().zip(&u).map(|(t, d)| t - h * d).collect();
        plain.eval(&tp, &mut fp);
        plain.eval(&tm, &mut fm);
        let fd: Vec<f64> = fp.iter().zip(&fm).map(|(a, b)| (a - b) / (2.0 * h)).collect();
        let diff: Vec<f64> = ju.iter().zip(&fd).map(|(a, b)| a - b).collect();
        assert!(norm(&diff) <= 1e-7 * norm(&ju), "{objective}: |Ju - FD| {} vs |Ju| {}", norm(&diff), norm(&ju));

        // F itself: the dual field's values are the f64 field's.
        let mut f = vec![0.0; n];
        plain.eval(&theta, &mut f);
        let fv = jac.value();
        assert!(f.iter().zip(&fv).all(|(a, b)| (a - b).abs() <= 1e-13 * (1.0 + a.abs())), "{objective}: F differs");

        // The dense Jacobian (column j = J e_j) times u.
        let dense = arnoldi::dense_matrix(&mut jac).unwrap();
        let du: Vec<f64> = (0..n).map(|i| (0..n).map(|j| dense[(i, j)] * u[j]).sum()).collect();
        let diff: Vec<f64> = ju.iter().zip(&du).map(|(a, b)| a - b).collect();
        assert!(norm(&diff) <= 1e-12 * norm(&ju), "{objective}: |Ju - J u| {}", norm(&diff));
    }
}

fn sorted(mut v: Vec<c64>, by_real: bool) -> Vec<c64> {
    if by_real {
        v.sort_by(|a, b| b.re.total_cmp(&a.re).then(b.im.total_cmp(&a.im)));
    } else {
        v.sort_by(|a, b| b.norm().total_cmp(&a.norm()).then(b.re.total_cmp(&a.re)).then(b.im.total_cmp(&a.im)));
    }
    v
}

#[test]
fn restarted_arnoldi_matches_the_dense_eigendecomposition_of_an_mlp_game() {
    for (objective, eta) in [("gan", 0.5), ("gan", 0.0)] {
        let (setup, theta) = small_game(objective, eta);
        let mut dual = Field::new(&setup, 3, eta, false).unwrap();
        let mut jac = Jacobian::at(&mut dual, &theta).unwrap();
        let n = jac.dim();
        let dense = arnoldi::dense_matrix(&mut jac).unwrap();
        let all = arnoldi::dense_eigenvalues(&dense).unwrap();
        let o = Options { k: 6, krylov: 40, max_matvecs: 5000, tol: 1e-12, seed: 11, vectors: true, split: 0 };
        assert!(o.krylov_for(n) < n / 4, "the Krylov space is a small part of the whole");
        let sp = arnoldi::eigs(&mut jac, &o).unwrap();
        assert!(sp.converged, "{objective} eta {eta}: not converged in {} products", sp.matvecs);
        assert!(sp.restarts > 0);
        for (got, want, what) in [
            (&sp.rightmost, sorted(all.clone(), true), "rightmost"),
            (&sp.largest, sorted(all.clone(), false), "largest"),
        ] {
            assert_eq!(got.len(), 6);
            for (e, d) in got.iter().zip(&want) {
                let rel = (e.value - d).norm() / d.norm();
                assert!(rel <= 1e-6, "{objective} eta {eta} {what}: {:?} vs dense {:?} ({rel:.1e})", e.value, d);
            }
        }
        // The reported residuals are ||J x - λ x|| with the dense J.
        for e in sp.rightmost.iter().chain(&sp.largest) {
            let (xr, xi) = &e.vector;
            let (a, b) = (e.value.re, e.value.im);
            let mut r2 = 0.0;
            for i in 0..n {
                let (jr, ji): (f64, f64) =
                    (0..n).fold((0.0, 0.0), |(s, t), j| (s + dense[(i, j)] * xr[j], t + dense[(i, j)] * xi[j]));
                r2 += (jr - a * xr[i] + b * xi[i]).powi(2) + (ji - b * xr[i] - a * xi[i]).powi(2);
            }
            let true_residual = r2.sqrt();
            assert!(
                (true_residual - e.residual).abs() <= 1e-12 + 1e-6 * true_residual,
                "{} vs {true_residual}",
                e.residual
            );
            assert!((norm(xr).powi(2) + norm(xi).powi(2) - 1.0).abs() < 1e-12);
        }
    }
}

/// The linear WGAN game: D(x) = w·x + c, G(z) = A z + b (latent 1, data
/// 2-D).  With r = μ̂ − A z̄ − b, F = (r, 0, z̄(w + 2η r), w + 2η r), so J is
/// constant; per data coordinate, on (w, a, b) with s = (z̄, 1):
/// [[0, −sᵀ], [s, −2η s sᵀ]], eigenvalues −η|s|² ± √(η²|s|⁴ − |s|²) and 0,
/// and 0 for c.
#[test]
fn a_linear_game_has_the_jacobian_and_eigenvalues_of_its_formula() {
    for eta in [0.0, 0.3, 2.0] {
        let mut cfg = Config::default();
        cfg.generator.layers = vec!["linear 2".into()];
        cfg.discriminator.layers = vec!["linear 1".into()];
        cfg.train.latent = 1;
        cfg.train.batch = 32;
        cfg.train.chunk = 8;
        cfg.train.objective = Objective::Wgan;
        let setup = trainer::setup(&cfg).unwrap();
        let step = 5;
        // z̄: the mean of the step's latents, drawn as the trainer draws them.
        let zs = lockstep::rng::Stream::new(cfg.train.seed, lockstep::rng::Purpose::Latent, step);
        let zbar = (0..32u32)
            .map(|r| {
                let mut z = [0f32];
                zs.normals(r, &mut z);
                z[0] as f64
            })
            .sum::<f64>()
            / 32.0;
        // θ = (w1, w2, c, a1, a2, b1, b2): D's weight row and bias, G's weight column and bias.
        let mut want = Mat::<f64>::zeros(7, 7);
        for i in 0..2 {
            let (w, a, b) = (i, 3 + i, 5 + i);
            want[(w, a)] = -zbar;
            want[(w, b)] = -1.0;
            want[(a, w)] = zbar;
            want[(a, a)] = -2.0 * eta * zbar * zbar;
            want[(a, b)] = -2.0 * eta * zbar;
            want[(b, w)] = 1.0;
            want[(b, a)] = -2.0 * eta * zbar;
            want[(b, b)] = -2.0 * eta;
        }
        let theta = [0.3, -0.7, 0.1, 0.9, -0.4, 0.2, 0.5];
        let mut dual = Field::new(&setup, step, eta, false).unwrap();
        let mut jac = Jacobian::at(&mut dual, &theta).unwrap();
        let got = arnoldi::dense_matrix(&mut jac).unwrap();
        for i in 0..7 {
            for j in 0..7 {
                assert!(
                    (got[(i, j)] - want[(i, j)]).abs() < 1e-12,
                    "eta {eta}: J[{i}][{j}] {} vs {}",
                    got[(i, j)],
                    want[(i, j)]
                );
            }
        }
        let s2 = 1.0 + zbar * zbar;
        let disc = c64::new(eta * eta * s2 * s2 - s2, 0.0).sqrt();
        let pair = [c64::new(-eta * s2, 0.0) + disc, c64::new(-eta * s2, 0.0) - disc];
        // Each of the pair's values is an eigenvalue twice (once per data
        // coordinate): the four largest are the pair's, whatever the order.
        let o = Options { k: 4, krylov: 7, max_matvecs: 200, tol: 1e-13, seed: 1, vectors: false, split: 3 };
        let sp = arnoldi::eigs(&mut jac, &o).unwrap();
        if eta == 0.0 {
            // A pure rotation: its eigenvectors lie half on D, half on G.
            assert!(sp.largest.iter().all(|e| (e.share - 0.5).abs() < 1e-10), "{:?}", sp.largest);
        }
        for e in &sp.largest {
            assert!(
                pair.iter().any(|p| (e.value - p).norm() < 1e-10),
                "eta {eta}: {:?} is not the formula's {pair:?}",
                e.value
            );
        }
        for p in &pair {
            assert!(sp.largest.iter().any(|e| (e.value - p).norm() < 1e-10), "eta {eta}: {p:?} not found");
        }
        let dense = arnoldi::dense_eigenvalues(&got).unwrap();
        for p in &pair {
            assert_eq!(dense.iter().filter(|d| (*d - p).norm() < 1e-10).count(), 2, "eta {eta}: {p:?} in {dense:?}");
        }
        // The rightmost eigenvalue is 0 (c, and the directions of G orthogonal to s).
        assert!(sp.abscissa().abs() < 1e-10, "eta {eta}: abscissa {}", sp.abscissa());
    }
}

fn tiny_ring_checkpoint(name: &str) -> std::path::PathBuf {
    let d = common::tmp("stability", name);
    let o = common::bin()
        .args(["train", "--quiet", "--config", "tests/data/tiny-ring.toml", "--steps", "200", "--out"])
        .arg(&d)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    d.join("checkpoints/step-0000200.safetensors")
}

#[test]
fn the_stability_command_prints_both_etas_and_draws_them() {
    let ck = tiny_ring_checkpoint("cli");
    let png = ck.with_file_name("spectrum.png");
    let o = common::bin()
        .args(["stability", "--checkpoint"])
        .arg(&ck)
        .args(["--k", "4", "--compare-eta", "0", "--plot"])
        .arg(&png)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    for (l, eta) in lines.iter().zip([0.5, 0.0]) {
        assert_eq!(l["eta"], eta);
        assert_eq!(l["step"], 200);
        assert_eq!(l["rightmost"].as_array().unwrap().len(), 4);
        assert_eq!(l["largest"].as_array().unwrap().len(), 4);
        assert!(l["converged"].as_bool().unwrap());
        let top = l["rightmost"][0][0].as_f64().unwrap();
        assert_eq!(l["spectral_abscissa"].as_f64().unwrap(), top);
        let big = l["largest"][0].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect::<Vec<_>>();
        assert!(big[0].hypot(big[1]) >= top.abs());
        let res = l["residuals"]["largest"].as_array().unwrap();
        assert!(res.iter().all(|r| r.as_f64().unwrap() < 1e-6), "{res:?}");
        assert!(l["discrete_radius"].as_f64().unwrap() > 0.0);
        for key in ["matvecs", "seconds", "parameters", "batch"] {
            assert!(l[key].as_f64().unwrap() > 0.0, "{key}");
        }
    }
    assert_eq!(lines[0]["parameters"], 1795);
    assert_eq!(image_size(&png), lockstep::plot::SPECTRUM_SIZE);

    // The run directory and its checkpoints/latest pointer mean its newest checkpoint.
    let run = ck.parent().unwrap().parent().unwrap();
    for given in [run.to_path_buf(), run.join("checkpoints/latest")] {
        let o = common::bin()
            .args(["stability", "--k", "4", "--compare-eta", "none", "--checkpoint"])
            .arg(&given)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}: {}", given.display(), String::from_utf8_lossy(&o.stderr));
        let l: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(l["rightmost"], lines[0]["rightmost"], "{}", given.display());
    }
    let o = common::bin().args(["stability", "--checkpoint"]).arg(run.join("samples")).output().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("no checkpoint there"));

    // Bad input: a clear error and nothing written.
    let _ = std::fs::remove_file(&png);
    for (args, says) in [
        (vec!["--k", "0"], "--k"),
        (vec!["--batch", "24"], "--batch 24"),
        (vec!["--compare-eta", "zero"], "--compare-eta"),
        (vec!["--eta=-1"], "eta -1"),
    ] {
        let o = common::bin()
            .args(["stability", "--checkpoint"])
            .arg(&ck)
            .args(&args)
            .arg("--plot")
            .arg(&png)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "{args:?}: {err}");
        assert!(o.stdout.is_empty() && !png.exists(), "{args:?}");
    }
    let o = common::bin().args(["stability", "--checkpoint", "no/such/file.safetensors"]).output().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("no/such/file.safetensors"));
}

#[test]
fn a_training_run_logs_live_estimates() {
    let d = common::tmp("stability", "live");
    let o = common::bin()
        .args([
            "train",
            "--quiet",
            "--config",
            "tests/data/tiny-ring.toml",
            "--set",
            "log.stability_every=100",
            "--out",
        ])
        .arg(&d)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows = lockstep::telemetry::read_metrics(&d.join("metrics.jsonl")).unwrap();
    let est: Vec<&serde_json::Value> = rows.iter().filter(|r| r.get("stability").is_some()).collect();
    let steps: Vec<u64> = est.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert!(steps.contains(&400), "the last step is always estimated: {steps:?}");
    assert!(steps.windows(2).all(|w| w[0] < w[1]) && steps.iter().all(|s| s % 100 == 0), "{steps:?}");
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("summary.json")).unwrap()).unwrap();
    let skipped = summary["stability_estimates_skipped"].as_u64().unwrap();
    assert_eq!(steps.len() as u64 + skipped, 4, "{steps:?}, {skipped} skipped");
    for r in est {
        let s = &r["stability"];
        assert!(s["spectral_abscissa"].as_f64().unwrap().is_finite());
        assert_eq!(s["eta"], 0.5);
        assert_eq!(s["step"], r["step"]);
    }
    // The same estimate as the command's on the checkpoint of the same step.
    let o = common::bin()
        .args(["stability", "--compare-eta", "none", "--checkpoint"])
        .arg(d.join("checkpoints/step-0000400.safetensors"))
        .output()
        .unwrap();
    let cli: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let live = &rows.iter().rev().find(|r| r.get("stability").is_some()).unwrap()["stability"];
    let (a, b) = (cli["spectral_abscissa"].as_f64().unwrap(), live["spectral_abscissa"].as_f64().unwrap());
    assert!((a - b).abs() <= 1e-8 * a.abs().max(1e-3), "command {a} vs live {b}");

    // The abscissa along training, as a picture; a run without estimates is refused.
    let png = d.join("abscissa.png");
    let o = common::bin().args(["plot", "--stability"]).arg(&d).arg("--out").arg(&png).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let img = image_size(&png);
    assert_eq!(img, (900, 560));
    let plain = common::tmp("stability", "plain");
    let o = common::bin()
        .args(["train", "--quiet", "--config", "tests/data/tiny-ring.toml", "--steps", "100", "--out"])
        .arg(&plain)
        .output()
        .unwrap();
    assert!(o.status.success());
    let o =
        common::bin().args(["plot", "--stability"]).arg(&plain).arg("--out").arg(d.join("no.png")).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("log.stability_every"), "{err}");
    assert!(!d.join("no.png").exists());
}

/// A PNG's width and height, from its header.
fn image_size(p: &std::path::Path) -> (u32, u32) {
    let b = std::fs::read(p).unwrap();
    assert_eq!(&b[1..4], b"PNG");
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (be(16), be(20))
}
