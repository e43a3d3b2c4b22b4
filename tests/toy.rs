//! The toy systems through the public API: the paper's claims about which
//! dynamics converge, and the files `run` writes.

use lockstep::toy::{self, Integrator, ToyObjective, ToyOptions, ToyReport, ToySystem};

fn simulate(system: ToySystem, objective: ToyObjective, eta: f64) -> ToyReport {
    toy::simulate(&ToyOptions::new(system, objective, eta)).unwrap().0
}

/// The two eigenvalues as (re, im), sorted by imaginary then real part.
fn sorted(mut e: Vec<[f64; 2]>) -> Vec<[f64; 2]> {
    assert_eq!(e.len(), 2, "{e:?}");
    e.sort_by(|a, b| a[1].total_cmp(&b[1]).then(a[0].total_cmp(&b[0])));
    e
}

/// Eigenvalues of [[a, b], [c, d]] in closed form, independently of the crate.
fn eig(a: f64, b: f64, c: f64, d: f64) -> Vec<[f64; 2]> {
    let tr = a + d;
    let det = a * d - b * c;
    let disc = tr * tr / 4.0 - det;
    if disc < 0.0 {
        vec![[tr / 2.0, (-disc).sqrt()], [tr / 2.0, -(-disc).sqrt()]]
    } else {
        vec![[tr / 2.0 + disc.sqrt(), 0.0], [tr / 2.0 - disc.sqrt(), 0.0]]
    }
}

fn assert_eigs(got: &[[f64; 2]], want: Vec<[f64; 2]>, what: &str) {
    let (got, want) = (sorted(got.to_vec()), sorted(want));
    for (g, w) in got.iter().zip(&want) {
        assert!(
            (g[0] - w[0]).abs() < 1e-6 && (g[1] - w[1]).abs() < 1e-6,
            "{what}: eigenvalues {got:?}, expected {want:?}"
        );
    }
}

#[test]
fn wgan_quadratic_unregularized_orbits_forever() {
    let r = simulate(ToySystem::WganQuadratic, ToyObjective::Wgan, 0.0);
    assert!(!r.converged, "{r:?}");
    assert!(!r.diverged);
    assert_eq!(r.steps_taken, r.steps);
    let (h0, h1) = (r.conserved_initial.unwrap(), r.conserved_final.unwrap());
    assert!((h1 - h0).abs() <= 1e-6 * h0.abs(), "conserved quantity drifted: {h0} -> {h1}");
    assert!(
        r.distance_to_equilibrium >= 0.5 * r.initial_distance,
        "{} vs initial {}",
        r.distance_to_equilibrium,
        r.initial_distance
    );
    assert_eigs(&r.jacobian_eigenvalues, vec![[0.0, 2.0 / 3.0], [0.0, -2.0 / 3.0]], "eta 0");
}

#[test]
fn wgan_quadratic_regularized_converges() {
    let eta = 0.5;
    let r = simulate(ToySystem::WganQuadratic, ToyObjective::Wgan, eta);
    assert!(r.converged, "{r:?}");
    assert!(r.distance_to_equilibrium < 1e-3);
    assert!((r.final_state[1] - 1.0).abs() < 1e-3, "{:?}", r.final_state);
    assert_eq!(r.conserved_initial, None);
    assert_eq!(r.conserved_final, None);
    assert_eigs(&r.jacobian_eigenvalues, eig(0.0, -2.0 / 3.0, 2.0 / 3.0, -8.0 * eta / 9.0), "eta 0.5");
    // Every eigenvalue has a negative real part.
    assert!(r.jacobian_eigenvalues.iter().all(|e| e[0] < 0.0));
}

#[test]
fn wgan_quadratic_with_gan_objective() {
    // With f = log sigmoid, f''(0) = -1/4 != 0 makes V strictly concave in
    // psi at the equilibrium: V_psipsi = f''(0) (E x^4 + E z^4) = -1/10.  The
    // Jacobian at (0, 1) is
    //   [[V_psipsi, -2 f'(0)/3], [(2 f'(0)/3)(1 + 2 eta V_psipsi), -8 eta f'(0)^2 / 9]]
    // so this game is locally stable even without the regularizer (real
    // parts -1/20 at eta = 0); only the WGAN objective (f'' = 0) needs it.
    let d = 0.5;
    let vpp = 2.0 * -0.25 / 5.0;
    for eta in [0.0, 0.5] {
        let r = simulate(ToySystem::WganQuadratic, ToyObjective::Gan, eta);
        assert!(r.converged, "eta {eta}: {r:?}");
        assert_eigs(
            &r.jacobian_eigenvalues,
            eig(vpp, -2.0 * d / 3.0, 2.0 * d / 3.0 * (1.0 + 2.0 * eta * vpp), -8.0 * eta * d * d / 9.0),
            "gan",
        );
        assert!(r.jacobian_eigenvalues.iter().all(|e| e[0] < 0.0));
    }
}

#[test]
fn dirac_needs_the_regularizer() {
    for (objective, d) in [(ToyObjective::Gan, 0.5), (ToyObjective::Wgan, 1.0)] {
        let r = simulate(ToySystem::Dirac, objective, 0.0);
        assert!(!r.converged, "{objective}: {r:?}");
        // RK4 follows the circular orbit (RK4 damps it only by ~1e-7 here).
        assert!(
            r.distance_to_equilibrium >= 0.99 * r.initial_distance,
            "{objective}: {} vs initial {}",
            r.distance_to_equilibrium,
            r.initial_distance
        );
        assert_eigs(&r.jacobian_eigenvalues, eig(0.0, -d, d, 0.0), "dirac eta 0");

        let eta = 0.5;
        let r = simulate(ToySystem::Dirac, objective, eta);
        assert!(r.converged, "{objective}: {r:?}");
        assert_eigs(&r.jacobian_eigenvalues, eig(0.0, -d, d, -2.0 * eta * d * d), "dirac eta 0.5");
    }
}

#[test]
fn euler_on_dirac_spirals_outwards() {
    for objective in [ToyObjective::Gan, ToyObjective::Wgan] {
        let opts = ToyOptions { integrator: Integrator::Euler, ..ToyOptions::new(ToySystem::Dirac, objective, 0.0) };
        let (r, traj) = toy::simulate(&opts).unwrap();
        assert_eq!(r.integrator, "euler");
        assert!(!r.converged);
        assert!(
            r.distance_to_equilibrium > 1.5 * r.initial_distance,
            "{objective}: {} vs initial {}",
            r.distance_to_equilibrium,
            r.initial_distance
        );
        // Monotonically: simultaneous GD gains radius every step.
        let radius = |s: &[f64; 2]| s[0].hypot(s[1]);
        assert!(traj.windows(2).all(|w| radius(&w[1]) >= radius(&w[0])));

        // The regularizer fixes discrete GD too.
        let opts = ToyOptions { integrator: Integrator::Euler, ..ToyOptions::new(ToySystem::Dirac, objective, 0.5) };
        assert!(toy::simulate(&opts).unwrap().0.converged);
    }
}

#[test]
fn run_writes_png_and_json() {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("lockstep-toy-{}-{nanos}", std::process::id()));
    let opts = ToyOptions { steps: 500, ..ToyOptions::new(ToySystem::WganQuadratic, ToyObjective::Wgan, 0.5) };
    let report = toy::run(&opts, &dir.join("nested")).unwrap();
    let out = dir.join("nested");

    let file = std::fs::File::open(out.join("trajectory.png")).unwrap();
    let mut reader = png::Decoder::new(std::io::BufReader::new(file)).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), lockstep::plot::FLOW_SIZE);
    buf.truncate(info.buffer_size());
    // Not blank: the field, the trajectory, the markers and anti-aliased text.
    let colours: std::collections::HashSet<&[u8]> = buf.chunks_exact(3).collect();
    assert!(colours.len() > 50, "{} colours", colours.len());

    let text = std::fs::read_to_string(out.join("toy.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    for key in [
        "system",
        "objective",
        "eta",
        "steps",
        "final_state",
        "distance_to_equilibrium",
        "jacobian_eigenvalues",
        "converged",
    ] {
        assert!(json.get(key).is_some(), "toy.json lacks '{key}': {text}");
    }
    assert_eq!(json["system"], "wgan-quadratic");
    assert_eq!(json["objective"], "wgan");
    assert_eq!(json["steps"], 500);
    assert_eq!(json["eta"], 0.5);
    assert_eq!(json["converged"], report.converged);
    assert_eq!(json["jacobian_eigenvalues"].as_array().unwrap().len(), 2);
    // serde_json parses floats to within an ulp or so.
    let theta = json["final_state"][1].as_f64().unwrap();
    assert!((theta - report.final_state[1]).abs() < 1e-12);
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn negative_eta_is_an_input_error() {
    let opts = ToyOptions::new(ToySystem::Dirac, ToyObjective::Gan, -0.5);
    let err = toy::simulate(&opts).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("--eta"), "{err}");
    let dir = std::env::temp_dir().join("lockstep-toy-never-created");
    let err = toy::run(&opts, &dir).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(!dir.exists());
}
