//! Times the image scores of `eval::scores` on 10,000 real against 10,000
//! generated feature vectors of dimension 128 (correlated Gaussians, the
//! generated ones shifted and scaled): FD (both fits and the distance), KID
//! (100 subsets of 1000) and precision/recall (k = 3).  Prints one JSON line:
//! the scores, wall seconds (`*_s`) and this process's CPU seconds (`*_cpu_s`).
//! `cargo run --release --example score_bench`
use std::time::Instant;

use lockstep::eval::scores;
use lockstep::rng::{Purpose, Stream};

/// `n × d` normals with feature j mixed into j+1 (a correlated covariance).
fn features(seed: u64, n: usize, d: usize, scale: f32, shift: f32) -> Vec<f32> {
    let s = Stream::new(seed, Purpose::Init, 0);
    let mut x = vec![0.0f32; n * d];
    for (i, row) in x.chunks_exact_mut(d).enumerate() {
        s.normals(i as u32, row);
        for j in 1..d {
            row[j] += 0.6 * row[j - 1];
        }
        row.iter_mut().for_each(|v| *v = *v * scale + shift);
    }
    x
}

/// This process's CPU time (user + system) in seconds, from /proc/self/stat
/// (None elsewhere): with other work on the machine, wall time overstates.
fn cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ
}

/// Runs `f`, returning its value, wall seconds and CPU seconds.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64, Option<f64>) {
    let (t, c) = (Instant::now(), cpu_s());
    let v = f();
    (v, t.elapsed().as_secs_f64(), cpu_s().zip(c).map(|(b, a)| b - a))
}

fn main() {
    let (n, d) = (10_000, 128);
    let real = features(1, n, d, 1.0, 0.0);
    let gen = features(2, n, d, 1.1, 0.05);
    let (fd, fd_s, fd_cpu) =
        timed(|| scores::frechet_distance(&scores::fit_gaussian(&real, d), &scores::fit_gaussian(&gen, d)));
    let (kid, kid_s, kid_cpu) = timed(|| scores::kid(&real, &gen, d, 100, 1000, 7));
    let (pr, pr_s, pr_cpu) = timed(|| scores::precision_recall(&real, &gen, d, 3));
    let out = serde_json::json!({
        "n": n, "dim": d, "threads": rayon::current_num_threads(),
        "fd": fd, "fd_s": fd_s, "fd_cpu_s": fd_cpu,
        "kid": kid, "kid_s": kid_s, "kid_cpu_s": kid_cpu,
        "pr": pr, "pr_s": pr_s, "pr_cpu_s": pr_cpu,
    });
    println!("{out}");
}
