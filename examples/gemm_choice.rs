//! Measures the two candidate GEMM crates on the shapes of one training chunk
//! (64 rows) of the mog-ring generator, single-threaded (the CPU backend runs
//! one chunk per thread).  `cargo run --release --example gemm_choice`
use std::time::Instant;

/// C[m×n] = A[m×k] · op(B), with B stored [n×k] row-major when `bt`.
fn mm(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], bt: bool, c: &mut [f32]) {
    let (rsb, csb) = if bt { (1, k as isize) } else { (n as isize, 1) };
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            rsb,
            csb,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    }
}

fn gm(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], bt: bool, c: &mut [f32]) {
    let (rsb, csb) = if bt { (1, k as isize) } else { (n as isize, 1) };
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            csb,
            rsb,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

fn time(f: &mut dyn FnMut()) -> f64 {
    for _ in 0..50 {
        f()
    }
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        f()
    }
    t.elapsed().as_secs_f64() / n as f64 * 1e6
}

fn main() {
    // (name, m, k, n, b transposed)
    let shapes = [
        ("G1 fwd 64x256->128", 64, 256, 128, true),
        ("G1 dW 128x64x256", 128, 64, 256, false),
        ("G2 fwd 64x128->128", 64, 128, 128, true),
        ("G2 dX 64x128x128", 64, 128, 128, false),
        ("G1 fwd 512x256->128", 512, 256, 128, true),
    ];
    let mut tot = [0.0f64; 2];
    for (name, m, k, n, bt) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut c1 = vec![0.0f32; m * n];
        let mut c2 = vec![0.0f32; m * n];
        let t1 = time(&mut || mm(m, k, n, &a, &b, bt, &mut c1));
        let t2 = time(&mut || gm(m, k, n, &a, &b, bt, &mut c2));
        let err = c1.iter().zip(&c2).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        let gf = 2.0 * (m * k * n) as f64 / 1e3;
        println!(
            "{name:24} matrixmultiply {t1:7.2} us ({:5.1} GF/s)  gemm {t2:7.2} us ({:5.1} GF/s)  maxdiff {err:e}",
            gf / t1,
            gf / t2
        );
        tot[0] += t1;
        tot[1] += t2;
    }
    println!("total: matrixmultiply {:.1} us, gemm {:.1} us", tot[0], tot[1]);
}
