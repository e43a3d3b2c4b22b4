//! `eval::scores::frechet_distance` against the classic pytorch-fid
//! computation in NumPy/SciPy: `scipy.linalg.sqrtm(C1 @ C2)` (real part) on
//! `np.cov(x, rowvar=False)`, on the same features written as .npy files.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use lockstep::eval::scores;

mod common;

/// The FID formula as pytorch-fid writes it (without its singular-product retry).
const SCRIPT: &str = r#"
import sys
import numpy as np
from scipy import linalg
a = np.load(sys.argv[1]).astype(np.float64)
b = np.load(sys.argv[2]).astype(np.float64)
mu1, mu2 = a.mean(axis=0), b.mean(axis=0)
s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
covmean = linalg.sqrtm(s1.dot(s2))
if isinstance(covmean, tuple):
    covmean = covmean[0]
covmean = np.real(covmean)
diff = mu1 - mu2
print(repr(float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))))
"#;

/// A deterministic LCG's uniforms in [−1, 1) (Knuth's MMIX constants).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// `n × d` features with correlated columns: each row is a fixed random
/// mixing matrix (seeded by `mix`) times a row of uniforms, plus `shift`.
fn features(rng: &mut Lcg, mix: u64, n: usize, d: usize, shift: f32) -> Vec<f32> {
    let mut m = Lcg(mix);
    let a: Vec<f32> = (0..d * d).map(|ij| if ij / d == ij % d { 1.0 } else { 0.4 * m.next() }).collect();
    let mut x = Vec::with_capacity(n * d);
    let mut u = vec![0.0f32; d];
    for _ in 0..n {
        u.iter_mut().for_each(|v| *v = rng.next());
        for i in 0..d {
            x.push((0..d).map(|j| a[i * d + j] * u[j]).sum::<f32>() + shift * (i % 3) as f32);
        }
    }
    x
}

fn python_has_scipy() -> Result<(), String> {
    let out = Command::new("python3").args(["-c", "import numpy, scipy"]).output();
    match out {
        Err(e) => Err(format!("python3 could not be run ({e})")),
        Ok(o) if !o.status.success() => {
            let err = String::from_utf8_lossy(&o.stderr);
            Err(format!("numpy or scipy is missing ({})", err.trim().lines().last().unwrap_or("no message")))
        }
        Ok(_) => Ok(()),
    }
}

#[test]
fn frechet_distance_matches_scipy_sqrtm() {
    if let Err(why) = python_has_scipy() {
        eprintln!("SKIPPED: scores_scipy: {why} (pip install numpy scipy)");
        return;
    }
    let (n, d) = (2000, 64);
    let dir = common::tmp("scores", "scipy");
    // Different mixing matrices (FD dominated by the covariances' square-root
    // term), then the same one with a small shift (FD near its sampling noise).
    for (name, mix_gen, shift) in [("different covariances", 2, 0.1), ("same distribution", 1, 0.02)] {
        let mut rng = Lcg(12345);
        let real = features(&mut rng, 1, n, d, 0.0);
        let gen = features(&mut rng, mix_gen, n, d, shift);
        let (pa, pb) = (dir.join("real.npy"), dir.join("gen.npy"));
        lockstep::npy::write_f32(&pa, &real, &[n, d]).unwrap();
        lockstep::npy::write_f32(&pb, &gen, &[n, d]).unwrap();
        let theirs = python_fd(&pa, &pb);
        let ours = scores::frechet_distance(&scores::fit_gaussian(&real, d), &scores::fit_gaussian(&gen, d));
        let rel = (ours - theirs).abs() / theirs.abs();
        eprintln!("{name}: FD lockstep {ours}, scipy {theirs}, relative difference {rel:.2e}");
        assert!(theirs > 0.01, "{name}: a trivial comparison, FD {theirs}");
        assert!(rel < 1e-6, "{name}: FD lockstep {ours}, scipy {theirs}, relative difference {rel:.2e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// SCRIPT's FD of the two .npy files, through `python3 -` with the script on stdin.
fn python_fd(a: &Path, b: &Path) -> f64 {
    let mut child = Command::new("python3")
        .arg("-")
        .arg(a)
        .arg(b)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(SCRIPT.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}
