//! Times the CPU convolution operators in f32 on one thread (the CPU backend
//! runs one chunk per thread) on the dcgan28 shapes, beside a plain large
//! SGEMM through `matmul` as the machine's single-thread ceiling.
//! `cargo run --release --example conv_bench [-- --sweep]`
//!
//! Each layer's three passes (forward, dx, dW) are one operator each of its
//! ordinary convolution `g` (a ConvTranspose2d's forward is `g`'s
//! backward_data, its dx `g`'s forward; G convT1's `g` is D conv2's geometry
//! and G convT2's is D conv1's, so equal operators time the same work twice).
//! Two layouts are timed: one GEMM per sample (the operators called on one
//! sample at a time) and the kept one, the operators' own grouping of
//! `samples_per_gemm` samples per GEMM; `--sweep` also times the operators
//! called on chunks of 2, 4, 8, … samples (as many per GEMM, up to
//! `samples_per_gemm`).  GFLOP/s count 2 per multiply-add.  Each figure is the
//! best call over four rounds through all configurations, so that another
//! process's burst of work on a shared machine spoils a round rather than a
//! figure.
use std::time::Instant;

use lockstep::nn::conv::{convt_geom, ConvGeom};
use lockstep::nn::float::{matmul, Mat};

/// The best seconds per call of `f` over repeated runs lasting about `budget` seconds.
fn time(budget: f64, f: &mut dyn FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut best = f64::INFINITY;
    while start.elapsed().as_secs_f64() < budget || best == f64::INFINITY {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Forward,
    BackwardData,
    BackwardFilter,
}

/// Runs `op` of `g` on `rows` samples, `chunk` samples per call.
#[allow(clippy::too_many_arguments)]
fn run(g: &ConvGeom, op: Op, rows: usize, chunk: usize, x: &mut [f32], w: &mut [f32], y: &mut [f32], sc: &mut [f32]) {
    let (il, ol) = (g.in_len(), g.out_len());
    for r0 in (0..rows).step_by(chunk) {
        let n = chunk.min(rows - r0);
        let (xs, ys) = (&mut x[r0 * il..(r0 + n) * il], &mut y[r0 * ol..(r0 + n) * ol]);
        match op {
            Op::Forward => g.forward(n, xs, w, ys, false, sc),
            Op::BackwardData => g.backward_data(n, ys, w, xs, false, sc),
            Op::BackwardFilter => g.backward_filter(n, xs, ys, w, r0 > 0, sc),
        }
    }
}

/// One timed configuration: a layer's pass on `rows` samples, `chunk` per call.
struct Case {
    layer: usize,
    rows: usize,
    op: usize,
    chunk: usize,
    best: f64,
}

fn main() {
    let sweep = std::env::args().any(|a| a == "--sweep");
    // Every configuration is timed in each of `ROUNDS` rounds (best of
    // repeated calls for `BUDGET` seconds each time), the rounds one after
    // another, so that a burst of another process's work spoils one round of
    // a configuration rather than its only measurement.
    const ROUNDS: usize = 4;
    const BUDGET: f64 = 0.06;
    let load = || std::fs::read_to_string("/proc/loadavg").map(|l| l.trim().to_string()).unwrap_or_default();
    println!("load average before: {}", load());

    // (layer, geometry, names of the forward, backward_data and backward_filter passes)
    let layers: [(&str, ConvGeom, [&str; 3]); 4] = [
        ("D conv1  Conv2d(1, 64, 4, 2, 1) 1×28×28", ConvGeom::new(1, 28, 28, 64, 4, 2, 1).unwrap(), ["y", "dx", "dW"]),
        (
            "D conv2  Conv2d(64, 128, 4, 2, 1) 64×14×14",
            ConvGeom::new(64, 14, 14, 128, 4, 2, 1).unwrap(),
            ["y", "dx", "dW"],
        ),
        (
            "G convT1 ConvTranspose2d(128, 64, 4, 2, 1) 128×7×7",
            convt_geom(128, 7, 7, 64, 4, 2, 1).unwrap(),
            ["dx", "y", "dW"],
        ),
        (
            "G convT2 ConvTranspose2d(64, 1, 4, 2, 1) 64×14×14",
            convt_geom(64, 14, 14, 1, 4, 2, 1).unwrap(),
            ["dx", "y", "dW"],
        ),
    ];
    let ops = [(Op::Forward, "forward"), (Op::BackwardData, "backward_data"), (Op::BackwardFilter, "backward_filter")];
    let mut cases = vec![];
    for layer in 0..layers.len() {
        for rows in [32, 64] {
            for op in 0..ops.len() {
                let mut chunks = vec![1, rows];
                if sweep {
                    chunks.extend((1..).map(|i| 1 << i).take_while(|&c| c < rows));
                }
                for chunk in chunks {
                    cases.push(Case { layer, rows, op, chunk, best: f64::INFINITY });
                }
            }
        }
    }

    // The ceiling: plain SGEMMs, timed in the same rounds (512³ runs in calls
    // as short as the convolutions', so it suffers as little from a shared machine).
    let sgemm_sizes = [512, 1024];
    let mut sgemm = [f64::INFINITY; 2];
    let mut mats: Vec<_> = sgemm_sizes
        .iter()
        .map(|&n| {
            let a: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.1).collect();
            let b: Vec<f32> = (0..n * n).map(|i| (i % 5) as f32 * 0.1).collect();
            (a, b, vec![0.0f32; n * n])
        })
        .collect();
    let mut bufs: Vec<_> = layers
        .iter()
        .map(|(_, g, _)| {
            let rows = 64;
            let x: Vec<f32> = (0..rows * g.in_len()).map(|i| (i % 13) as f32 * 0.05 - 0.3).collect();
            let w: Vec<f32> = (0..g.weight_len()).map(|i| (i % 11) as f32 * 0.02 - 0.1).collect();
            let y: Vec<f32> = (0..rows * g.out_len()).map(|i| (i % 9) as f32 * 0.03 - 0.1).collect();
            (x, w, y, vec![0.0f32; g.scratch_len(rows)])
        })
        .collect();
    for _ in 0..ROUNDS {
        for (i, (a, b, c)) in mats.iter_mut().enumerate() {
            let n = sgemm_sizes[i];
            sgemm[i] = sgemm[i].min(time(4.0 * BUDGET, &mut || matmul(Mat::n(a, n, n), Mat::n(b, n, n), c, false)));
        }
        for c in &mut cases {
            let g = &layers[c.layer].1;
            let (x, w, y, sc) = &mut bufs[c.layer];
            let (op, rows, chunk) = (ops[c.op].0, c.rows, c.chunk);
            c.best = c.best.min(time(BUDGET, &mut || run(g, op, rows, chunk, x, w, y, sc)));
        }
    }

    let mut ceiling = 0.0f64;
    for (i, &n) in sgemm_sizes.iter().enumerate() {
        let gflops = 2.0 * (n * n * n) as f64 / sgemm[i] / 1e9;
        println!("plain SGEMM {n}×{n}×{n} through matmul: {gflops:.1} GFLOP/s");
        ceiling = ceiling.max(gflops);
    }
    println!("single-thread ceiling: {ceiling:.1} GFLOP/s\n");
    println!(
        "{:<52} {:>4} {:<4} {:<16} {:>6} {:>10} {:>10} {:>8}",
        "layer", "rows", "pass", "operator", "group", "per-sample", "kept", "% SGEMM"
    );
    let gflops = |c: &Case| layers[c.layer].1.flops_forward(c.rows) as f64 / c.best / 1e9;
    for c in cases.iter().filter(|c| c.chunk == c.rows) {
        let (name, g, passes) = &layers[c.layer];
        let same = |d: &&Case| (d.layer, d.rows, d.op) == (c.layer, c.rows, c.op);
        let one = cases.iter().filter(same).find(|d| d.chunk == 1).map(gflops).unwrap();
        let kept = gflops(c);
        println!(
            "{name:<52} {:>4} {:<4} {:<16} {:>6} {one:>10.1} {kept:>10.1} {:>7.0}%",
            c.rows,
            passes[c.op],
            ops[c.op].1,
            g.samples_per_gemm(c.rows),
            100.0 * kept / ceiling
        );
        for d in cases.iter().filter(same).filter(|d| d.chunk > 1 && d.chunk < d.rows) {
            let group = g.samples_per_gemm(d.chunk);
            println!("{:>75} {:>2}: {group:>6} {:>21.1}", "called on chunks of", d.chunk, gflops(d));
        }
    }
    println!("\nload average after: {}", load());
}
