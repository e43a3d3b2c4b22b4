//! Image scores on feature vectors, as pure functions: the Fréchet distance
//! between Gaussians fitted to two feature sets (FID when the features are
//! Inception's), KID (Binkowski et al. 2018), improved precision and recall
//! (Kynkäänniemi et al. 2019) and the Stacked-MNIST mode count (Metz et al.
//! 2017).  Features are row-major `f32` matrices (`n × dim`, `x.len() == n *
//! dim`); statistics are accumulated in `f64`.  Random subsets come from the
//! counter-based generator, so every score is deterministic and independent
//! of the thread count.
//!
//! Non-finite features do not panic: `fit_gaussian`, `kid` and
//! `precision_recall` then return NaN scores (and `frechet_distance` returns
//! NaN for a Gaussian with a NaN entry).

use rayon::prelude::*;
use serde::Serialize;

use crate::rng::{Purpose, Stream};

/// Rows per block when `fit_gaussian` accumulates the covariance.
const COV_ROWS: usize = 1024;
/// Rows per block of KID's Gram products (the block times the subset is held).
const KID_ROWS: usize = 128;
/// Rows per block of precision and recall's distances (the block times the other set is held).
const PR_ROWS: usize = 256;
/// KID's subsets are drawn from the Eval stream at this step (plus 0 for the
/// real set, 1 for the generated one): the step's high bits, which no
/// training step reaches, keep them apart from the evaluation latents.
const KID_STEP: u64 = 0x00FF_FFFF_0000_0000;

/// A Gaussian fitted to `n` feature vectors of dimension `dim`: the mean and
/// the unbiased covariance (`dim × dim`, row-major), in f64.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gaussian {
    /// Number of feature vectors fitted.
    pub n: usize,
    /// Feature dimension.
    pub dim: usize,
    /// Mean (`dim` values).
    pub mean: Vec<f64>,
    /// Unbiased covariance (divided by n − 1), `dim × dim` row-major, exactly symmetric.
    pub cov: Vec<f64>,
}

/// The number of rows of the `? × dim` matrix `x`, checked.
fn rows_of(x: &[f32], dim: usize, what: &str) -> usize {
    assert!(dim > 0, "{what}: the feature dimension is 0");
    assert!(x.len() % dim == 0, "{what}: {} values are not a whole number of rows of {dim} features", x.len());
    x.len() / dim
}

fn all_finite(x: &[f32]) -> bool {
    x.iter().all(|v| v.is_finite())
}

/// `c[m×n] = a[m×k] · b[n×k]ᵀ`, every matrix row-major and contiguous, on
/// the calling thread (the callers run blocks in parallel).
fn abt<T: 'static + Copy>(m: usize, n: usize, k: usize, a: &[T], b: &[T], c: &mut [T], one: T) {
    assert!(a.len() >= m * k && b.len() >= n * k && c.len() >= m * n, "abt: buffers too small");
    if m == 0 || n == 0 || k == 0 {
        return; // callers never ask for k = 0 (dim > 0) and read nothing when m or n is 0
    }
    // SAFETY: the strides and sizes describe memory inside the slices (asserted above); `c` does not alias.
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
            k as isize,
            1,
            one,
            one,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Fits a Gaussian to the rows of `x` (`n × dim`): the mean, then the
/// unbiased covariance of the centred rows (two passes, in f64; the
/// covariance through blocked GEMMs, summed in block order, so the result does
/// not depend on the thread count).  Non-finite features give a mean and
/// covariance of NaN.
///
/// Panics if `dim` is 0, `x.len()` is not a multiple of `dim`, or there are fewer than 2 rows.
pub fn fit_gaussian(x: &[f32], dim: usize) -> Gaussian {
    let n = rows_of(x, dim, "fit_gaussian");
    assert!(n >= 2, "fit_gaussian: {n} feature vector(s); a covariance needs at least 2");
    if !all_finite(x) {
        return Gaussian { n, dim, mean: vec![f64::NAN; dim], cov: vec![f64::NAN; dim * dim] };
    }
    // The mean: each block's sums in parallel, added in block order.
    let partial: Vec<Vec<f64>> = x
        .par_chunks(COV_ROWS * dim)
        .map(|blk| {
            let mut s = vec![0.0f64; dim];
            for row in blk.chunks_exact(dim) {
                for (s, &v) in s.iter_mut().zip(row) {
                    *s += v as f64;
                }
            }
            s
        })
        .collect();
    let mut mean = vec![0.0f64; dim];
    for p in &partial {
        for (m, s) in mean.iter_mut().zip(p) {
            *m += s;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    // The scatter matrix Σ (x−m)(x−m)ᵀ, a block of centred rows at a time
    // (gemm splits the output, never the sum, over threads).
    let mut cov = vec![0.0f64; dim * dim];
    let mut buf = vec![0.0f64; COV_ROWS.min(n) * dim];
    for (b, blk) in x.chunks(COV_ROWS * dim).enumerate() {
        let rows = blk.len() / dim;
        for (c, row) in buf.chunks_exact_mut(dim).zip(blk.chunks_exact(dim)) {
            for ((c, &v), m) in c.iter_mut().zip(row).zip(&mean) {
                *c = v as f64 - m;
            }
        }
        // cov (+)= Bᵀ B for the block B (rows × dim).
        // SAFETY: B is rows × dim and cov dim × dim, both inside their slices; they do not alias.
        unsafe {
            gemm::gemm(
                dim,
                dim,
                rows,
                cov.as_mut_ptr(),
                1,
                dim as isize,
                b > 0,
                buf.as_ptr(),
                dim as isize,
                1,
                buf.as_ptr(),
                1,
                dim as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(0),
            )
        }
    }
    let scale = 1.0 / (n - 1) as f64;
    for i in 0..dim {
        for j in i..dim {
            let v = 0.5 * (cov[i * dim + j] + cov[j * dim + i]) * scale;
            cov[i * dim + j] = v;
            cov[j * dim + i] = v;
        }
    }
    Gaussian { n, dim, mean, cov }
}

/// Asserts that `g`'s vectors have the lengths its `dim` says.
fn check_gaussian(g: &Gaussian, what: &str) {
    assert!(g.dim > 0, "frechet_distance: {what} has dimension 0");
    assert_eq!(g.mean.len(), g.dim, "frechet_distance: {what}'s mean has {} values, dim is {}", g.mean.len(), g.dim);
    assert_eq!(
        g.cov.len(),
        g.dim * g.dim,
        "frechet_distance: {what}'s covariance has {} values, dim {} needs {}",
        g.cov.len(),
        g.dim,
        g.dim * g.dim
    );
}

/// The Fréchet distance between two Gaussians,
/// `|m1 − m2|² + Tr(C1 + C2 − 2 (C1 C2)^{1/2})`, clamped at 0.
///
/// `Tr((C1 C2)^{1/2})` is `Σ sqrt(max(λ, 0))` over the eigenvalues λ of the
/// symmetric PSD matrix `C1^{1/2} C2 C1^{1/2}`, with `C1^{1/2} = U S^{1/2} Uᵀ`
/// from faer's self-adjoint eigendecomposition of C1 (eigenvalues clamped at
/// 0).  The eigenvalues are taken of the orthogonally similar `W ᵀ C2 W`, `W =
/// U S^{1/2}` (the same spectrum, one product fewer).  NaN when an entry of
/// either Gaussian is not finite (or an eigendecomposition does not converge).
///
/// Panics if the dimensions differ or a Gaussian's vectors do not match its `dim`.
pub fn frechet_distance(a: &Gaussian, b: &Gaussian) -> f64 {
    check_gaussian(a, "the first Gaussian");
    check_gaussian(b, "the second Gaussian");
    assert_eq!(a.dim, b.dim, "frechet_distance: dimensions differ ({} and {})", a.dim, b.dim);
    let finite = |g: &Gaussian| g.mean.iter().chain(&g.cov).all(|v| v.is_finite());
    if !finite(a) || !finite(b) {
        return f64::NAN;
    }
    let d = a.dim;
    let mean2: f64 = a.mean.iter().zip(&b.mean).map(|(x, y)| (x - y) * (x - y)).sum();
    let trace: f64 = (0..d).map(|i| a.cov[i * d + i] + b.cov[i * d + i]).sum();
    let c1 = faer::Mat::<f64>::from_fn(d, d, |i, j| a.cov[i * d + j]);
    let c2 = faer::Mat::<f64>::from_fn(d, d, |i, j| b.cov[i * d + j]);
    let Ok(e1) = c1.self_adjoint_eigen(faer::Side::Lower) else {
        return f64::NAN;
    };
    let (u, s) = (e1.U(), e1.S().column_vector());
    let w = faer::Mat::<f64>::from_fn(d, d, |i, j| u[(i, j)] * s[j].max(0.0).sqrt());
    let m = w.transpose() * &c2 * &w;
    let m = faer::Mat::<f64>::from_fn(d, d, |i, j| 0.5 * (m[(i, j)] + m[(j, i)]));
    let Ok(lambda) = m.self_adjoint_eigenvalues(faer::Side::Lower) else {
        return f64::NAN;
    };
    let tr_sqrt: f64 = lambda.iter().map(|&l| l.max(0.0).sqrt()).sum();
    (mean2 + trace - 2.0 * tr_sqrt).max(0.0)
}

/// KID: the unbiased MMD² estimate averaged over random subsets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Kid {
    /// Mean of MMD²_u over the subsets.
    pub mean: f64,
    /// Population standard deviation of MMD²_u over the subsets.
    pub std: f64,
    /// Number of subsets.
    pub subsets: usize,
    /// Rows per subset drawn from each set (after clamping to the smaller set).
    pub subset_size: usize,
}

/// `m` distinct rows of `0..n` (a partial Fisher–Yates shuffle), the
/// `subset`-th subset of set `side` (0 real, 1 generated) under `seed`: the
/// j-th swap takes the 64-bit number of words (2·(j mod 2), +1) of Philox
/// block j/2 at index `subset` of the Eval stream at step `KID_STEP + side`.
fn kid_subset(n: usize, m: usize, seed: u64, side: u64, subset: usize) -> Vec<usize> {
    debug_assert!(m <= n);
    let stream = Stream::new(seed, Purpose::Eval, KID_STEP + side);
    let mut perm: Vec<usize> = (0..n).collect();
    let mut w = [0u32; 4];
    for j in 0..m {
        if j % 2 == 0 {
            w = stream.words(subset as u32, (j / 2) as u32);
        }
        let r = ((w[2 * (j % 2)] as u64) << 32) | w[2 * (j % 2) + 1] as u64;
        // Lemire's multiply-shift: uniform in 0..n−j up to a bias under n / 2^64.
        let pick = j + ((r as u128 * (n - j) as u128) >> 64) as usize;
        perm.swap(j, pick);
    }
    perm.truncate(m);
    perm
}

/// The row indices KID uses: for each of `subsets` subsets, `[real rows,
/// generated rows]`, `subset_size` (clamped to `min(n_real, n_gen)`) distinct
/// rows each.  Panics if there are no subsets, more than 2³² of them, or the
/// clamped size is under 2.
pub(crate) fn kid_subsets(
    n_real: usize,
    n_gen: usize,
    subsets: usize,
    subset_size: usize,
    seed: u64,
) -> Vec<[Vec<usize>; 2]> {
    assert!(subsets >= 1, "kid: 0 subsets");
    assert!(subsets <= u32::MAX as usize, "kid: {subsets} subsets, at most 2^32 - 1");
    let m = subset_size.min(n_real).min(n_gen);
    assert!(
        m >= 2,
        "kid: subsets of {m} rows (subset_size {subset_size}, {n_real} real and {n_gen} generated rows); at least 2 needed"
    );
    (0..subsets).map(|s| [kid_subset(n_real, m, seed, 0, s), kid_subset(n_gen, m, seed, 1, s)]).collect()
}

/// Rows `idx` of `x` (`? × dim`), in f64.
fn gather(x: &[f32], dim: usize, idx: &[usize]) -> Vec<f64> {
    idx.iter().flat_map(|&i| x[i * dim..(i + 1) * dim].iter().map(|&v| v as f64)).collect()
}

/// The unbiased MMD² between the `m × d` sets `x` and `y` (f64) with the
/// cubic kernel `(x·y/d + 1)³`; the Gram matrices a block of `KID_ROWS` rows
/// at a time, of the symmetric ones only the part right of the diagonal.
fn mmd2_unbiased(x: &[f64], y: &[f64], m: usize, d: usize) -> f64 {
    let inv_d = 1.0 / d as f64;
    // Σ k over a row of dot products, in 4 interleaved partial sums (a fixed order that vectorises).
    let kern = |dots: &[f64]| {
        let k = |t: f64| {
            let u = t * inv_d + 1.0;
            u * u * u
        };
        let mut acc = [0.0f64; 4];
        let quads = dots.chunks_exact(4);
        let tail: f64 = quads.remainder().iter().map(|&t| k(t)).sum();
        for q in quads {
            for (a, &t) in acc.iter_mut().zip(q) {
                *a += k(t);
            }
        }
        (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
    };
    let mut buf = vec![0.0f64; KID_ROWS.min(m) * m];
    let mut off_diagonal = |z: &[f64]| {
        let mut total = 0.0f64;
        for i0 in (0..m).step_by(KID_ROWS) {
            let (rows, cols) = (KID_ROWS.min(m - i0), m - i0);
            let zi = &z[i0 * d..];
            abt(rows, cols, d, zi, zi, &mut buf, 1.0);
            for (r, row) in buf[..rows * cols].chunks_exact(cols).enumerate() {
                total += kern(&row[r + 1..]);
            }
        }
        2.0 * total
    };
    let (sxx, syy) = (off_diagonal(x), off_diagonal(y));
    let mut sxy = 0.0f64;
    for i0 in (0..m).step_by(KID_ROWS) {
        let rows = KID_ROWS.min(m - i0);
        abt(rows, m, d, &x[i0 * d..], y, &mut buf, 1.0);
        for row in buf[..rows * m].chunks_exact(m) {
            sxy += kern(row);
        }
    }
    let mf = m as f64;
    (sxx + syy) / (mf * (mf - 1.0)) - 2.0 * sxy / (mf * mf)
}

/// KID: the unbiased MMD² with the cubic polynomial kernel
/// `k(x, y) = (x·y/d + 1)³`, averaged over `subsets` random subsets of
/// `subset_size` rows (clamped to `min(n_real, n_gen)`) drawn without
/// replacement from each set.  The subsets are keyed by `seed` through the
/// counter-based generator (`Purpose::Eval`) and scored in parallel in f64,
/// so the result is deterministic and independent of the thread count; `std`
/// is the population standard deviation over subsets.  Non-finite features
/// give a mean and std of NaN.
///
/// Panics if `dim` is 0, a set's length is not a multiple of `dim`, `subsets` is 0,
/// or the clamped subset size is under 2.
pub fn kid(real: &[f32], gen: &[f32], dim: usize, subsets: usize, subset_size: usize, seed: u64) -> Kid {
    let nr = rows_of(real, dim, "kid (real features)");
    let ng = rows_of(gen, dim, "kid (generated features)");
    let draws = kid_subsets(nr, ng, subsets, subset_size, seed);
    let m = draws[0][0].len();
    if !all_finite(real) || !all_finite(gen) {
        return Kid { mean: f64::NAN, std: f64::NAN, subsets, subset_size: m };
    }
    let values: Vec<f64> =
        draws.par_iter().map(|[ri, gi]| mmd2_unbiased(&gather(real, dim, ri), &gather(gen, dim, gi), m, dim)).collect();
    let s = subsets as f64;
    let mean = values.iter().sum::<f64>() / s;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / s;
    Kid { mean, std: var.sqrt(), subsets, subset_size: m }
}

/// Improved precision and recall.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrecisionRecall {
    /// Fraction of generated features inside some real k-NN ball.
    pub precision: f64,
    /// Fraction of real features inside some generated k-NN ball.
    pub recall: f64,
    /// The k of the k-th nearest neighbour that sets each ball's radius.
    pub k: usize,
}

/// The exact squared distance, `Σ (a_t − b_t)²` in f64 in index order:
/// what every comparison is decided by.
#[inline]
fn dist2(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64) * (x as f64 - y as f64)).sum()
}

/// Inserts `v` into `best`, the ascending smallest values seen so far.
#[inline]
fn insert_smallest(best: &mut [f64], v: f64) {
    let last = best.len() - 1;
    if v < best[last] {
        let mut i = last;
        while i > 0 && best[i - 1] > v {
            best[i] = best[i - 1];
            i -= 1;
        }
        best[i] = v;
    }
}

/// One feature set as precision and recall use it: the original rows (for
/// the exact distances), the rows shifted by a common centre in f32 (for the
/// GEMMs) and their squared norms in f64.
struct Side<'a> {
    x: &'a [f32],
    shifted: &'a [f32],
    norms: &'a [f64],
    n: usize,
}

/// Rows of `x` shifted by `centre` (in f32) and their squared norms (f64).
fn shift(x: &[f32], dim: usize, centre: &[f64]) -> (Vec<f32>, Vec<f64>) {
    let shifted: Vec<f32> =
        x.chunks_exact(dim).flat_map(|r| r.iter().zip(centre).map(|(&v, c)| (v as f64 - c) as f32)).collect();
    let norms = shifted.chunks_exact(dim).map(|r| r.iter().map(|&v| v as f64 * v as f64).sum()).collect();
    (shifted, norms)
}

impl Side<'_> {
    fn row(&self, i: usize, dim: usize) -> &[f32] {
        &self.x[i * dim..(i + 1) * dim]
    }
}

/// Bounds the error of the GEMM estimate `|a|² + |b|² − 2 fl32(a·b)` of the
/// exact squared distance (`dist2`) between two rows with shifted squared
/// norms summing to `norms`.  The f32 dot product errs by at most
/// `γ_d |a||b| ≤ γ_d (|a|² + |b|²)/2` (γ_d ≈ d·2⁻²⁴, any summation order,
/// FMA or not), so the estimate by `γ_d (|a|² + |b|²)`; rounding the shifted
/// rows to f32 moves the squared distance by at most `≈ 4·2⁻²⁴ (|a|² + |b|²)`.
/// The margin is twice their sum, plus an absolute term for underflow.
#[derive(Clone, Copy)]
struct Margin {
    rel: f64,
    abs: f64,
}

impl Margin {
    fn new(dim: usize) -> Margin {
        Margin { rel: (dim as f64 + 8.0) * f32::EPSILON as f64, abs: dim as f64 * 4.0 * f32::MIN_POSITIVE as f64 }
    }

    #[inline]
    fn of(self, norms: f64) -> f64 {
        self.rel * norms + self.abs
    }
}

/// The squared distance from each row of `s` to its k-th nearest other row
/// (itself not counted; equal rows are), exact (`dist2`): the GEMM estimates
/// give an upper bound `u` on it (the k-th smallest estimate plus margin),
/// and only the rows whose estimate minus margin is not above `u` are
/// measured exactly.
fn knn_radii2(s: &Side, dim: usize, k: usize, margin: Margin) -> Vec<f64> {
    let n = s.n;
    let blocks: Vec<usize> = (0..n).step_by(PR_ROWS).collect();
    let per_block: Vec<Vec<f64>> = blocks
        .par_iter()
        .map(|&i0| {
            let rows = PR_ROWS.min(n - i0);
            let mut buf = vec![0.0f32; rows * n];
            abt(rows, n, dim, &s.shifted[i0 * dim..], s.shifted, &mut buf, 1.0);
            let mut out = Vec::with_capacity(rows);
            let mut best = vec![f64::INFINITY; k];
            for (r, dots) in buf.chunks_exact(n).enumerate() {
                let i = i0 + r;
                let ni = s.norms[i];
                let est = |j: usize| (ni + s.norms[j] - 2.0 * dots[j] as f64, margin.of(ni + s.norms[j]));
                best.fill(f64::INFINITY);
                for j in (0..n).filter(|&j| j != i) {
                    let (e, m) = est(j);
                    let hi = e + m;
                    if !hi.is_nan() {
                        insert_smallest(&mut best, hi);
                    }
                }
                let u = best[k - 1];
                best.fill(f64::INFINITY);
                let xi = s.row(i, dim);
                for j in (0..n).filter(|&j| j != i) {
                    let (e, m) = est(j);
                    if e - m > u {
                        continue; // farther than u for sure (a NaN estimate is measured)
                    }
                    insert_smallest(&mut best, dist2(xi, s.row(j, dim)));
                }
                out.push(best[k - 1]);
            }
            out
        })
        .collect();
    per_block.concat()
}

/// Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN
/// balls: each real feature's ball reaches its k-th nearest other real
/// feature (itself not counted), likewise for the generated ones; precision
/// is the fraction of generated features inside some real ball
/// (`|g − r| ≤ ρ(r)`, ties inside), recall the fraction of real features
/// inside some generated ball.
///
/// Every comparison is decided by the exact squared distance (f64, summed in
/// feature order): squared distances are estimated by blocked f32 GEMMs
/// (`|a|² + |b|² − 2 a·b` on both sets shifted by the real mean), and only
/// the pairs within the estimate's error bound of a threshold are measured
/// exactly.  Blocks of rows against the other set run in parallel; no n × n
/// matrix is held.  Non-finite features give a precision and recall of NaN.
///
/// Panics if `dim` or `k` is 0, a set's length is not a multiple of `dim`,
/// or a set has k rows or fewer.
pub fn precision_recall(real: &[f32], gen: &[f32], dim: usize, k: usize) -> PrecisionRecall {
    precision_recall_against(real, &RealBalls::new(real, dim, k), gen)
}

/// The real side of [`precision_recall`], which does not depend on the
/// generated features: the real mean, the rows shifted by it and their
/// norms, and each real row's k-NN radius.  Built once per real set.
pub struct RealBalls {
    dim: usize,
    k: usize,
    centre: Vec<f64>,
    shifted: Vec<f32>,
    norms: Vec<f64>,
    rho: Vec<f64>,
    finite: bool,
}

impl RealBalls {
    /// Panics as [`precision_recall`] does on the real set.
    pub fn new(real: &[f32], dim: usize, k: usize) -> RealBalls {
        let nr = rows_of(real, dim, "precision_recall (real features)");
        assert!(k >= 1, "precision_recall: k is 0");
        assert!(
            nr > k,
            "precision_recall: {nr} real feature vector(s); the {k}-th nearest neighbour needs more than {k}"
        );
        let finite = all_finite(real);
        let mut centre = vec![0.0f64; dim];
        let (mut shifted, mut norms, mut rho) = (Vec::new(), Vec::new(), Vec::new());
        if finite {
            for row in real.chunks_exact(dim) {
                for (c, &v) in centre.iter_mut().zip(row) {
                    *c += v as f64;
                }
            }
            centre.iter_mut().for_each(|c| *c /= nr as f64);
            (shifted, norms) = shift(real, dim, &centre);
            rho = knn_radii2(&Side { x: real, shifted: &shifted, norms: &norms, n: nr }, dim, k, Margin::new(dim));
        }
        RealBalls { dim, k, centre, shifted, norms, rho, finite }
    }
}

/// [`precision_recall`] of `gen` against the balls of `real` built once
/// (`RealBalls::new(real, ..)`).
pub fn precision_recall_against(real: &[f32], balls: &RealBalls, gen: &[f32]) -> PrecisionRecall {
    let (dim, k) = (balls.dim, balls.k);
    let nr = real.len() / dim;
    let ng = rows_of(gen, dim, "precision_recall (generated features)");
    assert!(
        ng > k,
        "precision_recall: {ng} generated feature vector(s); the {k}-th nearest neighbour needs more than {k}"
    );
    if !balls.finite || !all_finite(gen) {
        return PrecisionRecall { precision: f64::NAN, recall: f64::NAN, k };
    }
    let r = Side { x: real, shifted: &balls.shifted, norms: &balls.norms, n: nr };
    let (g_shifted, g_norms) = shift(gen, dim, &balls.centre);
    let g = Side { x: gen, shifted: &g_shifted, norms: &g_norms, n: ng };
    let margin = Margin::new(dim);
    let (rho_r, rho_g) = (&balls.rho, knn_radii2(&g, dim, k, margin));
    // Blocks of generated rows against every real row: a generated row is
    // inside when some real ball holds it, and marks each real row its own
    // ball holds.
    let blocks: Vec<usize> = (0..ng).step_by(PR_ROWS).collect();
    let (inside, covered) = blocks
        .par_iter()
        .map(|&i0| {
            let rows = PR_ROWS.min(ng - i0);
            let mut buf = vec![0.0f32; rows * nr];
            abt(rows, nr, dim, &g.shifted[i0 * dim..], r.shifted, &mut buf, 1.0);
            let mut covered = vec![false; nr];
            let mut inside = 0usize;
            for (q, dots) in buf.chunks_exact(nr).enumerate() {
                let i = i0 + q;
                let (ni, gi, rho) = (g.norms[i], g.row(i, dim), rho_g[i]);
                let mut is_in = false;
                for j in 0..nr {
                    let (want_in, want_cov) = (!is_in, !covered[j]);
                    if !want_in && !want_cov {
                        continue;
                    }
                    let e = ni + r.norms[j] - 2.0 * dots[j] as f64;
                    let m = margin.of(ni + r.norms[j]);
                    let (lo, hi) = (e - m, e + m);
                    let mut exact = None;
                    let mut within = |radius2: f64| {
                        if lo > radius2 {
                            false
                        } else if hi <= radius2 {
                            true
                        } else {
                            *exact.get_or_insert_with(|| dist2(gi, r.row(j, dim))) <= radius2
                        }
                    };
                    if want_in && within(rho_r[j]) {
                        is_in = true;
                    }
                    if want_cov && within(rho) {
                        covered[j] = true;
                    }
                }
                inside += is_in as usize;
            }
            (inside, covered)
        })
        .reduce(
            || (0, vec![false; nr]),
            |(a, mut ca), (b, cb)| {
                ca.iter_mut().zip(cb).for_each(|(x, y)| *x |= y);
                (a + b, ca)
            },
        );
    let recalled = covered.iter().filter(|&&c| c).count();
    PrecisionRecall { precision: inside as f64 / ng as f64, recall: recalled as f64 / nr as f64, k }
}

/// The Stacked-MNIST mode count.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModeCount {
    /// Number of labelled samples.
    pub samples: usize,
    /// Distinct labels among them (modes captured).
    pub modes: usize,
    /// Number of possible labels (1000 for Stacked MNIST).
    pub modes_total: usize,
    /// KL(p_gen ‖ uniform over `modes_total`), in nats.
    pub kl: f64,
}

/// The Stacked-MNIST protocol on the samples' mode labels (each in
/// `0..modes_total`): `modes` is the number of distinct labels, `kl` is
/// `KL(p_gen ‖ uniform) = Σ p ln(p · modes_total)` over the labels' histogram
/// p (PacGAN's "reverse KL"), clamped at 0 against rounding.
///
/// Panics if `labels` is empty, `modes_total` is 0, or a label is out of range.
pub fn mode_count(labels: &[usize], modes_total: usize) -> ModeCount {
    assert!(modes_total >= 1, "mode_count: modes_total is 0");
    assert!(!labels.is_empty(), "mode_count: no labels");
    let mut counts = vec![0usize; modes_total];
    for &l in labels {
        assert!(l < modes_total, "mode_count: label {l} is not in 0..{modes_total}");
        counts[l] += 1;
    }
    let n = labels.len() as f64;
    let kl = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            p * (p * modes_total as f64).ln()
        })
        .sum::<f64>();
    ModeCount { samples: labels.len(), modes: counts.iter().filter(|&&c| c > 0).count(), modes_total, kl: kl.max(0.0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n × d` standard normals (row i from Philox index i under `seed`), scaled and shifted.
    fn normals(seed: u64, n: usize, d: usize, scale: f32, shift: f32) -> Vec<f32> {
        let s = Stream::new(seed, Purpose::Init, 0);
        let mut x = vec![0.0f32; n * d];
        for (i, row) in x.chunks_exact_mut(d).enumerate() {
            s.normals(i as u32, row);
            row.iter_mut().for_each(|v| *v = *v * scale + shift);
        }
        x
    }

    fn rel(got: f64, want: f64) -> f64 {
        (got - want).abs() / want.abs().max(1e-300)
    }

    fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(f)
    }

    fn bits(v: &[f64]) -> Vec<u64> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// The Gaussian with mean `mean` and covariance `Q diag(eig) Qᵀ`.
    fn gaussian(mean: &[f64], q: &[f64], eig: &[f64]) -> Gaussian {
        let d = mean.len();
        let cov = (0..d * d)
            .map(|ij| {
                let (i, j) = (ij / d, ij % d);
                (0..d).map(|l| q[i * d + l] * eig[l] * q[j * d + l]).sum()
            })
            .collect();
        Gaussian { n: 100, dim: d, mean: mean.to_vec(), cov }
    }

    fn identity(d: usize) -> Vec<f64> {
        (0..d * d).map(|ij| if ij / d == ij % d { 1.0 } else { 0.0 }).collect()
    }

    /// An orthogonal d × d matrix: the product of two Householder reflections.
    fn orthogonal(d: usize) -> Vec<f64> {
        let house = |v: &[f64]| {
            let vv: f64 = v.iter().map(|x| x * x).sum();
            (0..d * d).map(|ij| identity(d)[ij] - 2.0 * v[ij / d] * v[ij % d] / vv).collect::<Vec<f64>>()
        };
        let h1 = house(&(0..d).map(|i| (i as f64 * 0.7).sin() + 0.3).collect::<Vec<_>>());
        let h2 = house(&(0..d).map(|i| (i as f64 * 1.3).cos() - 0.1).collect::<Vec<_>>());
        (0..d * d).map(|ij| (0..d).map(|l| h1[(ij / d) * d + l] * h2[l * d + ij % d]).sum()).collect()
    }

    #[test]
    fn fd_of_diagonal_gaussians_is_the_closed_form() {
        let (m1, m2) = ([0.5, -1.0, 2.0, 0.0, 3.0, 1.5], [0.0, 1.0, 2.5, -0.5, 3.0, 0.0]);
        let (v1, v2) = ([1.0, 4.0, 0.25, 9.0, 2.0, 0.01], [2.0, 1.0, 0.25, 16.0, 0.5, 3.0]);
        let id = identity(6);
        let fd = frechet_distance(&gaussian(&m1, &id, &v1), &gaussian(&m2, &id, &v2));
        let want: f64 = m1.iter().zip(&m2).map(|(a, b)| (a - b) * (a - b)).sum::<f64>()
            + v1.iter().zip(&v2).map(|(a, b): (&f64, &f64)| (a.sqrt() - b.sqrt()).powi(2)).sum::<f64>();
        assert!(rel(fd, want) < 1e-10, "fd {fd} want {want}");
    }

    #[test]
    fn fd_of_commuting_covariances_is_the_closed_form() {
        // C1 = Q diag(a) Qᵀ and C2 = Q diag(b) Qᵀ share their eigenvectors:
        // FD = |Δm|² + Σ (√a − √b)².
        let d = 8;
        let q = orthogonal(d);
        let (m1, m2): (Vec<f64>, Vec<f64>) = ((0..d).map(|i| i as f64 * 0.1).collect(), vec![0.2; d]);
        let a: Vec<f64> = (0..d).map(|i| 0.5 + i as f64).collect();
        let b: Vec<f64> = (0..d).map(|i| 3.0 / (1.0 + i as f64)).collect();
        let dm: f64 = m1.iter().zip(&m2).map(|(x, y)| (x - y) * (x - y)).sum();
        let want = dm + a.iter().zip(&b).map(|(x, y)| (x.sqrt() - y.sqrt()).powi(2)).sum::<f64>();
        let fd = frechet_distance(&gaussian(&m1, &q, &a), &gaussian(&m2, &q, &b));
        assert!(rel(fd, want) < 1e-10, "fd {fd} want {want}");
        // A singular C1 (rank d − 2): its rounding-negative eigenvalues are clamped, not NaN.
        let mut a0 = a.clone();
        (a0[1], a0[5]) = (0.0, 0.0);
        let want = dm + a0.iter().zip(&b).map(|(x, y)| (x.sqrt() - y.sqrt()).powi(2)).sum::<f64>();
        let fd = frechet_distance(&gaussian(&m1, &q, &a0), &gaussian(&m2, &q, &b));
        assert!(rel(fd, want) < 1e-6, "singular: fd {fd} want {want}");
    }

    #[test]
    fn fd_of_non_commuting_2x2_covariances_is_the_closed_form() {
        // For 2 × 2, Tr (C1 C2)^{1/2} = sqrt(Tr(C1 C2) + 2 sqrt(det C1 det C2)).
        let c1 = [2.0, 0.6, 0.6, 1.0];
        let c2 = [0.5, -0.3, -0.3, 3.0];
        let g = |cov: &[f64], m: [f64; 2]| Gaussian { n: 10, dim: 2, mean: m.to_vec(), cov: cov.to_vec() };
        let tr12 = c1[0] * c2[0] + c1[1] * c2[2] + c1[2] * c2[1] + c1[3] * c2[3];
        let det = |c: &[f64]| c[0] * c[3] - c[1] * c[2];
        let tr_sqrt = (tr12 + 2.0 * (det(&c1) * det(&c2)).sqrt()).sqrt();
        let want = 1.0 + 0.25 + c1[0] + c1[3] + c2[0] + c2[3] - 2.0 * tr_sqrt;
        let fd = frechet_distance(&g(&c1, [1.0, 0.0]), &g(&c2, [0.0, 0.5]));
        assert!(rel(fd, want) < 1e-10, "fd {fd} want {want}");
        // Not symmetric in the means only: swapping the Gaussians gives the same distance.
        let back = frechet_distance(&g(&c2, [0.0, 0.5]), &g(&c1, [1.0, 0.0]));
        assert!(rel(back, want) < 1e-10, "swapped fd {back} want {want}");
    }

    #[test]
    fn fd_of_a_gaussian_with_itself_is_zero_and_nan_propagates() {
        let d = 20;
        let mut x = normals(3, 300, d, 1.0, 0.0);
        // Correlate the features: x_j += 0.5 x_{j−1}.
        for row in x.chunks_exact_mut(d) {
            for j in 1..d {
                row[j] += 0.5 * row[j - 1];
            }
        }
        let g = fit_gaussian(&x, d);
        let trace: f64 = (0..d).map(|i| g.cov[i * d + i]).sum();
        let fd = frechet_distance(&g, &g);
        assert!(fd < 1e-8 * trace, "FD(a, a) = {fd}, trace {trace}");
        let mut bad = g.clone();
        bad.cov[7] = f64::NAN;
        assert!(frechet_distance(&g, &bad).is_nan());
        x[5] = f32::INFINITY;
        let gi = fit_gaussian(&x, d);
        assert!(gi.mean.iter().chain(&gi.cov).all(|v| v.is_nan()));
        assert!(frechet_distance(&gi, &g).is_nan());
    }

    /// The mean and unbiased covariance by the textbook two-pass loops in f64.
    fn naive_gaussian(x: &[f32], d: usize) -> (Vec<f64>, Vec<f64>) {
        let n = x.len() / d;
        let mut mean = vec![0.0; d];
        for row in x.chunks_exact(d) {
            for j in 0..d {
                mean[j] += row[j] as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut cov = vec![0.0; d * d];
        for row in x.chunks_exact(d) {
            for i in 0..d {
                for j in 0..d {
                    cov[i * d + j] += (row[i] as f64 - mean[i]) * (row[j] as f64 - mean[j]);
                }
            }
        }
        cov.iter_mut().for_each(|c| *c /= (n - 1) as f64);
        (mean, cov)
    }

    #[test]
    fn fit_gaussian_matches_the_two_pass_definition() {
        // 2500 rows cross the 1024-row blocks; the offset makes centring matter.
        for (n, d) in [(2, 3), (5, 4), (2500, 7)] {
            let mut x = normals(9, n, d, 2.0, 3.0);
            for row in x.chunks_exact_mut(d) {
                row[d - 1] = 0.3 * row[0] - row[1];
            }
            let g = fit_gaussian(&x, d);
            let (mean, cov) = naive_gaussian(&x, d);
            assert_eq!((g.n, g.dim), (n, d));
            for (a, b) in g.mean.iter().zip(&mean) {
                assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()), "n {n}: mean {a} vs {b}");
            }
            for (a, b) in g.cov.iter().zip(&cov) {
                assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()), "n {n}: cov {a} vs {b}");
            }
            for i in 0..d {
                for j in 0..d {
                    assert_eq!(g.cov[i * d + j], g.cov[j * d + i]);
                }
            }
        }
    }

    #[test]
    fn fit_gaussian_does_not_depend_on_the_thread_count() {
        let x = normals(4, 3000, 64, 1.0, 0.5);
        let a = in_pool(1, || fit_gaussian(&x, 64));
        let b = in_pool(2, || fit_gaussian(&x, 64));
        assert_eq!(bits(&a.mean), bits(&b.mean));
        assert_eq!(bits(&a.cov), bits(&b.cov));
    }

    /// MMD²_u by its definition, double loops in f64.
    fn naive_mmd2(real: &[f32], gen: &[f32], d: usize, ri: &[usize], gi: &[usize]) -> f64 {
        let k = |a: &[f32], b: &[f32]| {
            let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
            (dot / d as f64 + 1.0).powi(3)
        };
        let row =
            |x: &'static str, i: usize| if x == "r" { &real[i * d..(i + 1) * d] } else { &gen[i * d..(i + 1) * d] };
        let m = ri.len() as f64;
        let (mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0);
        for a in 0..ri.len() {
            for b in 0..ri.len() {
                if a != b {
                    sxx += k(row("r", ri[a]), row("r", ri[b]));
                    syy += k(row("g", gi[a]), row("g", gi[b]));
                }
                sxy += k(row("r", ri[a]), row("g", gi[b]));
            }
        }
        (sxx + syy) / (m * (m - 1.0)) - 2.0 * sxy / (m * m)
    }

    #[test]
    fn kid_matches_a_naive_reference_on_the_same_subsets() {
        let d = 5;
        let real = normals(1, 60, d, 1.0, 0.0);
        let gen = normals(2, 70, d, 1.3, 0.2);
        let (subsets, m, seed) = (4, 20, 77);
        let draws = kid_subsets(60, 70, subsets, m, seed);
        assert_eq!(draws.len(), subsets);
        for [ri, gi] in &draws {
            for (idx, n) in [(ri, 60), (gi, 70)] {
                assert_eq!(idx.len(), m);
                assert!(idx.iter().all(|&i| i < n));
                let mut s = idx.clone();
                s.sort();
                s.dedup();
                assert_eq!(s.len(), m, "repeated rows in a subset");
            }
        }
        assert_ne!(draws[0], draws[1], "subsets repeat");
        assert_eq!(draws, kid_subsets(60, 70, subsets, m, seed));
        assert_ne!(draws, kid_subsets(60, 70, subsets, m, seed + 1));
        let vals: Vec<f64> = draws.iter().map(|[ri, gi]| naive_mmd2(&real, &gen, d, ri, gi)).collect();
        let mean = vals.iter().sum::<f64>() / subsets as f64;
        let std = (vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / subsets as f64).sqrt();
        let got = kid(&real, &gen, d, subsets, m, seed);
        assert_eq!((got.subsets, got.subset_size), (subsets, m));
        assert!(rel(got.mean, mean) < 1e-9, "kid mean {} want {mean}", got.mean);
        assert!(rel(got.std, std) < 1e-9, "kid std {} want {std}", got.std);
        assert!(std > 0.0);
        // subset_size is clamped to the smaller set.
        let all = kid(&real, &gen, d, 2, 1000, seed);
        assert_eq!(all.subset_size, 60);
        let [ri, gi] = &kid_subsets(60, 70, 2, 1000, seed)[1];
        let v1 = naive_mmd2(&real, &gen, d, ri, gi);
        let [ri, gi] = &kid_subsets(60, 70, 2, 1000, seed)[0];
        let v0 = naive_mmd2(&real, &gen, d, ri, gi);
        assert!(rel(all.mean, 0.5 * (v0 + v1)) < 1e-9);
    }

    #[test]
    fn kid_is_near_zero_within_a_distribution_and_positive_across_a_shift() {
        let d = 16;
        let x = normals(5, 2000, d, 1.0, 0.0);
        let (a, b) = x.split_at(1000 * d);
        let shifted: Vec<f32> = b.iter().map(|v| v + 0.5).collect();
        let same = kid(a, b, d, 20, 500, 1);
        let apart = kid(a, &shifted, d, 20, 500, 1);
        // Measured: 0.001 ± 0.004 within the distribution, 1.06 ± 0.04 across the shift.
        assert!(same.mean.abs() < 0.02, "same distribution: {same:?}");
        assert!(apart.mean > 0.3, "shifted: {apart:?}");
        assert!(apart.mean > 20.0 * same.mean.abs().max(same.std));
    }

    #[test]
    fn kid_does_not_depend_on_the_thread_count_and_nan_propagates() {
        let d = 12;
        let real = normals(6, 300, d, 1.0, 0.0);
        let mut gen = normals(7, 250, d, 1.1, 0.1);
        let a = in_pool(1, || kid(&real, &gen, d, 9, 100, 3));
        let b = in_pool(2, || kid(&real, &gen, d, 9, 100, 3));
        assert_eq!((a.mean.to_bits(), a.std.to_bits()), (b.mean.to_bits(), b.std.to_bits()));
        gen[17] = f32::NAN;
        let n = kid(&real, &gen, d, 9, 100, 3);
        assert!(n.mean.is_nan() && n.std.is_nan());
    }

    /// Precision and recall by their definition: every squared distance in f64, radii by sorting.
    fn naive_pr(real: &[f32], gen: &[f32], d: usize, k: usize) -> (f64, f64) {
        let dist = |a: &[f32], b: &[f32]| -> f64 {
            a.iter()
                .zip(b)
                .map(|(&x, &y)| {
                    let t = x as f64 - y as f64;
                    t * t
                })
                .sum()
        };
        let rows = |x: &[f32]| x.chunks_exact(d).map(|r| r.to_vec()).collect::<Vec<_>>();
        let (r, g) = (rows(real), rows(gen));
        let radii = |s: &[Vec<f32>]| -> Vec<f64> {
            (0..s.len())
                .map(|i| {
                    let mut v: Vec<f64> = (0..s.len()).filter(|&j| j != i).map(|j| dist(&s[i], &s[j])).collect();
                    v.sort_by(f64::total_cmp);
                    v[k - 1]
                })
                .collect()
        };
        let (rr, rg) = (radii(&r), radii(&g));
        let p = g.iter().filter(|gi| r.iter().zip(&rr).any(|(ri, &rho)| dist(gi, ri) <= rho)).count();
        let q = r.iter().filter(|ri| g.iter().zip(&rg).any(|(gi, &rho)| dist(gi, ri) <= rho)).count();
        (p as f64 / g.len() as f64, q as f64 / r.len() as f64)
    }

    #[test]
    fn precision_recall_match_a_naive_reference_exactly() {
        let d = 4;
        let quantised = |x: Vec<f32>| x.iter().map(|v| (v * 1.2).round()).collect::<Vec<f32>>();
        let cases: Vec<(&str, Vec<f32>, Vec<f32>)> = vec![
            ("continuous", normals(1, 150, d, 1.0, 0.0), normals(2, 120, d, 1.2, 0.3)),
            // Small integers: many exactly equal distances and duplicate rows (ties are inside).
            ("ties", quantised(normals(3, 200, d, 1.0, 0.0)), quantised(normals(4, 180, d, 1.0, 0.4))),
            // Far from the origin: the f32 norms would swamp the distances without the shift.
            ("offset", normals(5, 90, d, 1.0, 1000.0), normals(6, 110, d, 0.8, 1000.5)),
            // Several 256-row blocks on both sides.
            ("blocks", normals(7, 600, d, 1.0, 0.0), normals(8, 530, d, 1.5, -0.2)),
        ];
        for (name, real, gen) in &cases {
            for k in [1, 3, 5] {
                let got = precision_recall(real, gen, d, k);
                let (p, r) = naive_pr(real, gen, d, k);
                assert_eq!((got.precision, got.recall, got.k), (p, r, k), "{name}, k {k}");
                assert!(p > 0.0 && r > 0.0 && p.min(r) < 1.0, "{name}, k {k}: a trivial case ({p}, {r})");
            }
        }
    }

    #[test]
    fn precision_recall_of_identical_and_of_far_sets() {
        let d = 6;
        let x = normals(11, 300, d, 1.0, 0.0);
        let same = precision_recall(&x, &x, d, 3);
        assert_eq!((same.precision, same.recall), (1.0, 1.0));
        let far: Vec<f32> = normals(12, 200, d, 1.0, 0.0).iter().map(|v| v + 50.0).collect();
        let apart = precision_recall(&x, &far, d, 3);
        assert_eq!((apart.precision, apart.recall), (0.0, 0.0));
        let a = in_pool(1, || precision_recall(&x, &normals(13, 700, d, 1.2, 0.0), d, 3));
        let b = in_pool(2, || precision_recall(&x, &normals(13, 700, d, 1.2, 0.0), d, 3));
        assert_eq!(a, b);
        let mut bad = x.clone();
        bad[3] = f32::NEG_INFINITY;
        let n = precision_recall(&bad, &far, d, 3);
        assert!(n.precision.is_nan() && n.recall.is_nan());
    }

    #[test]
    fn mode_count_of_known_label_lists() {
        let all: Vec<usize> = (0..1000).collect();
        let m = mode_count(&all, 1000);
        assert_eq!((m.samples, m.modes, m.modes_total), (1000, 1000, 1000));
        assert!(m.kl.abs() < 1e-12, "uniform kl {}", m.kl);
        let one = mode_count(&[42; 26_000], 1000);
        assert_eq!((one.samples, one.modes), (26_000, 1));
        assert!(rel(one.kl, 1000f64.ln()) < 1e-12, "one-mode kl {}", one.kl);
        // Half the samples on mode 0, the rest spread over 0..4 of 10: p = (5/8, 1/8, 1/8, 1/8).
        let mixed = mode_count(&[0, 0, 0, 0, 0, 1, 2, 3], 10);
        let want = 0.625 * (6.25f64).ln() + 3.0 * 0.125 * (1.25f64).ln();
        assert_eq!(mixed.modes, 4);
        assert!(rel(mixed.kl, want) < 1e-12, "mixed kl {} want {want}", mixed.kl);
    }

    #[test]
    #[should_panic(expected = "label 1000 is not in 0..1000")]
    fn mode_count_rejects_out_of_range_labels() {
        mode_count(&[3, 1000], 1000);
    }

    #[test]
    #[should_panic(expected = "not a whole number of rows")]
    fn ragged_features_are_rejected() {
        fit_gaussian(&[1.0; 7], 3);
    }
}
