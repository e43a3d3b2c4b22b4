//! Leading eigenvalues of a real linear operator known only through its
//! products A·u: a restarted Arnoldi iteration, and the dense
//! eigen-decomposition (faer) that checks it on small operators.
//!
//! The iteration builds an orthonormal basis V of a Krylov space with
//! A V_m = V_m H_m + v_m bᵀ (modified Gram–Schmidt, twice), takes the Ritz
//! values of the small m × m matrix H_m, and when they have not converged
//! restarts thickly: it keeps an orthonormal basis S of the span of the
//! wanted Ritz vectors (the rightmost and the largest in modulus, with
//! their complex conjugates), which is invariant under H_m, so that
//! A (V S) = (V S)(Sᵀ H S) + v_m (bᵀ S) is again an Arnoldi relation
//! (Krylov–Schur in effect, without reordering a Schur form), and extends
//! it.  A Ritz pair's estimated residual is |bᵀ y|; the residuals reported
//! are computed afresh as ||A x − λ x|| for x = V y with ||x|| = 1.

use faer::c64;
use faer::Mat;

use crate::error::{Error, Result};
use crate::rng::{Purpose, Stream};

/// A real n × n linear operator, applied to vectors.
pub trait Operator {
    fn dim(&self) -> usize;
    /// out = A u.
    fn apply(&mut self, u: &[f64], out: &mut [f64]) -> Result<()>;
}

/// What to compute, and how hard to try.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// How many rightmost and how many largest-modulus eigenvalues.
    pub k: usize,
    /// The Krylov dimension m (the basis before a restart).
    pub krylov: usize,
    /// At most this many products A·u (the final residuals included).
    pub max_matvecs: usize,
    /// Converged when every wanted Ritz pair's residual is at most
    /// `tol` × the largest Ritz value's modulus (an estimate of ||A||).
    pub tol: f64,
    /// Keys the start vector (and fresh directions after a breakdown).
    pub seed: u64,
    /// Keep the eigenvectors (tests); otherwise they are dropped.
    pub vectors: bool,
    /// Report each eigenvector's share of its squared norm on coordinates
    /// 0..split (the discriminator's, for the game).
    pub split: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { k: 6, krylov: 40, max_matvecs: 2000, tol: 1e-8, seed: 0, vectors: false, split: 0 }
    }
}

impl Options {
    /// The Krylov dimension actually used for `n` unknowns: at least
    /// 4k + 4 (room for both wanted sets and their conjugates), at most n.
    pub fn krylov_for(&self, n: usize) -> usize {
        self.krylov.max(4 * self.k + 4).min(n)
    }
}

/// One computed eigenvalue.
#[derive(Debug, Clone, PartialEq)]
pub struct Eigenpair {
    pub value: c64,
    /// ||A x − λ x|| with ||x|| = 1, computed from fresh products.
    pub residual: f64,
    /// x's real and imaginary parts (empty unless `Options::vectors`).
    pub vector: (Vec<f64>, Vec<f64>),
    /// ||x[..split]||² (`Options::split`; x has norm 1).
    pub share: f64,
}

/// The result of [`eigs`].
#[derive(Debug, Clone, PartialEq)]
pub struct Spectrum {
    /// The k eigenvalues of largest real part, rightmost first (a complex
    /// pair's member with positive imaginary part first).
    pub rightmost: Vec<Eigenpair>,
    /// The k of largest modulus, largest first.
    pub largest: Vec<Eigenpair>,
    /// Products A·u computed.
    pub matvecs: usize,
    pub restarts: usize,
    /// Whether every wanted pair met the tolerance before the budget ran out.
    pub converged: bool,
}

impl Spectrum {
    /// The largest real part found (the spectral abscissa's estimate).
    pub fn abscissa(&self) -> f64 {
        self.rightmost.iter().map(|e| e.value.re).fold(f64::NEG_INFINITY, f64::max)
    }
}

/// Orders for the two wanted sets: by real part, by modulus (ties by the
/// imaginary part, so a pair's upper member comes first).
fn by_real(a: &c64, b: &c64) -> std::cmp::Ordering {
    b.re.total_cmp(&a.re).then(b.im.total_cmp(&a.im))
}
fn by_modulus(a: &c64, b: &c64) -> std::cmp::Ordering {
    b.norm().total_cmp(&a.norm()).then(b.re.total_cmp(&a.re)).then(b.im.total_cmp(&a.im))
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}
fn axpy(alpha: f64, x: &[f64], y: &mut [f64]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += alpha * x;
    }
}

/// Removes from `w` its components along `basis` (orthonormal), twice;
/// adds the coefficients into `coef` when given.  Returns ||w|| after.
fn orthogonalize(basis: &[Vec<f64>], w: &mut [f64], mut coef: Option<&mut [f64]>) -> f64 {
    for _ in 0..2 {
        for (i, v) in basis.iter().enumerate() {
            let c = dot(v, w);
            axpy(-c, v, w);
            if let Some(h) = coef.as_deref_mut() {
                h[i] += c;
            }
        }
    }
    norm(w)
}

/// A unit vector orthogonal to `basis`, keyed by (seed, draw).
fn fresh_direction(n: usize, basis: &[Vec<f64>], seed: u64, draw: u32) -> Option<Vec<f64>> {
    let s = Stream::new(seed, Purpose::Krylov, 0);
    let mut z = vec![0f32; n];
    s.normals(draw, &mut z);
    let mut w: Vec<f64> = z.iter().map(|&x| x as f64).collect();
    let before = norm(&w);
    let after = orthogonalize(basis, &mut w, None);
    if after.is_nan() || after <= 1e-8 * before {
        return None;
    }
    w.iter_mut().for_each(|x| *x /= after);
    Some(w)
}

/// The eigenvalues and unit eigenvectors (columns) of a small real matrix.
fn small_eig(h: &Mat<f64>) -> Result<(Vec<c64>, Mat<c64>)> {
    let e = faer::linalg::solvers::Eigen::new_from_real(h.as_ref()).map_err(|e| {
        Error::runtime(format!("eigen-decomposition of the {0}×{0} Hessenberg matrix: {e:?}", h.nrows()))
    })?;
    let (s, u) = (e.S(), e.U());
    let n = h.nrows();
    let values: Vec<c64> = (0..n).map(|i| s.column_vector()[i]).collect();
    let mut vecs = Mat::<c64>::zeros(n, n);
    for j in 0..n {
        let nrm = (0..n).map(|i| u[(i, j)].norm_sqr()).sum::<f64>().sqrt().max(f64::MIN_POSITIVE);
        for i in 0..n {
            vecs[(i, j)] = u[(i, j)] / nrm;
        }
    }
    Ok((values, vecs))
}

/// The eigenvalues of a dense real matrix (the check on small operators).
pub fn dense_eigenvalues(a: &Mat<f64>) -> Result<Vec<c64>> {
    a.eigenvalues().map_err(|e| Error::runtime(format!("dense eigen-decomposition: {e:?}")))
}

/// The dense matrix of `op` (column j = A e_j): n products.
pub fn dense_matrix(op: &mut dyn Operator) -> Result<Mat<f64>> {
    let n = op.dim();
    let mut a = Mat::<f64>::zeros(n, n);
    let (mut e, mut col) = (vec![0.0; n], vec![0.0; n]);
    for j in 0..n {
        e[j] = 1.0;
        op.apply(&e, &mut col)?;
        e[j] = 0.0;
        for i in 0..n {
            a[(i, j)] = col[i];
        }
    }
    Ok(a)
}

/// Indices of the k first of `values` in `order`.
fn first_k(values: &[c64], k: usize, order: fn(&c64, &c64) -> std::cmp::Ordering) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| order(&values[a], &values[b]));
    idx.truncate(k);
    idx
}

/// The index of `i`'s complex conjugate among `values` (itself when real).
fn conjugate_of(values: &[c64], i: usize) -> usize {
    let v = values[i];
    if v.im == 0.0 {
        return i;
    }
    let mut best = i;
    let mut dist = f64::INFINITY;
    for (j, w) in values.iter().enumerate() {
        let d = (w.re - v.re).abs() + (w.im + v.im).abs();
        if j != i && d < dist {
            (best, dist) = (j, d);
        }
    }
    best
}

/// The k rightmost and k largest-modulus eigenvalues of `op`.
///
/// # Errors
/// A runtime error when a product is not finite (the operator's own
/// error, or a NaN in its output), or the small eigen-problem fails.
pub fn eigs(op: &mut dyn Operator, o: &Options) -> Result<Spectrum> {
    let n = op.dim();
    if n == 0 {
        return Err(Error::input("no parameters: there is no Jacobian to take eigenvalues of"));
    }
    let m = o.krylov_for(n);
    let k = o.k.clamp(1, n);
    let mut draws = 0u32;
    let mut basis: Vec<Vec<f64>> = vec![fresh_direction(n, &[], o.seed, draws).expect("a nonzero start vector")];
    // H̄ as (m + 1) rows of m columns.
    let mut h = vec![vec![0.0; m]; m + 1];
    let (mut p, mut matvecs, mut restarts) = (0usize, 0usize, 0usize);
    let mut w = vec![0.0; n];
    let mut apply = |u: &[f64], out: &mut [f64], count: &mut usize| -> Result<()> {
        op.apply(u, out)?;
        *count += 1;
        if out.iter().all(|x| x.is_finite()) {
            Ok(())
        } else {
            Err(Error::runtime("the Jacobian product is not finite (NaN or infinity in the gradient field)"))
        }
    };
    loop {
        // Extend the relation from p to m columns.
        let mut whole = false;
        let mut cols = m;
        for j in p..m {
            apply(&basis[j], &mut w, &mut matvecs)?;
            let mut coef = vec![0.0; j + 1];
            let before = norm(&w);
            let beta = orthogonalize(&basis[..=j], &mut w, Some(&mut coef));
            for (i, c) in coef.into_iter().enumerate() {
                h[i][j] = c;
            }
            if beta > 1e-12 * before.max(f64::MIN_POSITIVE) {
                h[j + 1][j] = beta;
                w.iter_mut().for_each(|x| *x /= beta);
                basis.push(w.clone());
                continue;
            }
            // An invariant subspace: its Ritz values are exact.  Go on
            // along a fresh direction, coupled to nothing (h = 0).
            h[j + 1][j] = 0.0;
            draws += 1;
            match fresh_direction(n, &basis, o.seed, draws) {
                Some(v) => basis.push(v),
                None => {
                    whole = true;
                    cols = j + 1;
                    break;
                }
            }
        }
        let mut hm = Mat::<f64>::zeros(cols, cols);
        for i in 0..cols {
            for j in 0..cols {
                hm[(i, j)] = h[i][j];
            }
        }
        let b: Vec<f64> = if whole { vec![0.0; cols] } else { h[cols][..cols].to_vec() };
        let (values, y) = small_eig(&hm)?;
        let scale = values.iter().map(|v| v.norm()).fold(0.0, f64::max).max(f64::MIN_POSITIVE);
        let estimate = |j: usize| {
            let mut s = c64::new(0.0, 0.0);
            for (i, &bi) in b.iter().enumerate() {
                s += y[(i, j)] * bi;
            }
            s.norm()
        };
        let kk = k.min(cols);
        // Every Ritz value in each order; the wanted are the first kk.
        let order_r = first_k(&values, cols, by_real);
        let order_l = first_k(&values, cols, by_modulus);
        let (right, large) = (&order_r[..kk], &order_l[..kk]);
        let converged = right.iter().chain(large).all(|&j| estimate(j) <= o.tol * scale);
        let next_cost = (m - (2 * kk + 2).min(m - 1)) + 4 * kk;
        if converged || whole || matvecs + next_cost > o.max_matvecs {
            return finish(
                &mut apply,
                &basis[..cols],
                &values,
                &y,
                right,
                large,
                o,
                matvecs,
                restarts,
                converged || whole,
            );
        }
        // Thick restart on the wanted Ritz vectors: alternately the next
        // rightmost and the next largest, with their conjugates, up to
        // about half the basis plus k.
        let p_max = (m / 2 + kk).max(2 * kk + 2).min(m.saturating_sub(2)).max(1);
        let mut chosen: Vec<usize> = Vec::new();
        let mut dims = 0;
        for idx in order_r.iter().zip(&order_l).flat_map(|(a, b)| [*a, *b]) {
            let c = conjugate_of(&values, idx);
            if chosen.contains(&idx) || chosen.contains(&c) {
                continue;
            }
            let d = if c == idx { 1 } else { 2 };
            if dims + d > p_max {
                if dims >= 2 * kk {
                    break;
                }
                continue;
            }
            chosen.push(if values[idx].im >= 0.0 { idx } else { c });
            dims += d;
        }
        // A real orthonormal basis S (cols × p) of their span.
        let mut s: Vec<Vec<f64>> = Vec::new();
        for &j in &chosen {
            let parts: &[fn(c64) -> f64] = if values[j].im == 0.0 { &[|c| c.re] } else { &[|c| c.re, |c| c.im] };
            for part in parts {
                let mut col: Vec<f64> = (0..cols).map(|i| part(y[(i, j)])).collect();
                let before = norm(&col);
                let after = orthogonalize(&s, &mut col, None);
                if after > 1e-10 * before.max(f64::MIN_POSITIVE) {
                    col.iter_mut().for_each(|x| *x /= after);
                    s.push(col);
                }
            }
        }
        let q = s.len();
        // New basis V S, then the old last vector.
        let mut next: Vec<Vec<f64>> = (0..q).map(|_| vec![0.0; n]).collect();
        for (c, nv) in s.iter().zip(next.iter_mut()) {
            for (i, &ci) in c.iter().enumerate() {
                if ci != 0.0 {
                    axpy(ci, &basis[i], nv);
                }
            }
        }
        next.push(basis[cols].clone());
        // New H̄: Sᵀ H S on top, bᵀ S below.
        let mut hn = vec![vec![0.0; m]; m + 1];
        for a in 0..q {
            for c in 0..q {
                let mut t = 0.0;
                for i in 0..cols {
                    let hs: f64 = (0..cols).map(|j| h[i][j] * s[c][j]).sum();
                    t += s[a][i] * hs;
                }
                hn[a][c] = t;
            }
            hn[q][a] = dot(&b, &s[a]);
        }
        h = hn;
        basis = next;
        p = q;
        restarts += 1;
    }
}

/// A product A·u that counts itself.
type Apply<'a> = dyn FnMut(&[f64], &mut [f64], &mut usize) -> Result<()> + 'a;

/// The wanted Ritz pairs with their true residuals (one or two products each).
#[allow(clippy::too_many_arguments)]
fn finish(
    apply: &mut Apply<'_>,
    basis: &[Vec<f64>],
    values: &[c64],
    y: &Mat<c64>,
    right: &[usize],
    large: &[usize],
    o: &Options,
    mut matvecs: usize,
    restarts: usize,
    converged: bool,
) -> Result<Spectrum> {
    let n = basis[0].len();
    let mut done: Vec<(usize, Eigenpair)> = Vec::new();
    let mut pair = |j: usize, matvecs: &mut usize| -> Result<Eigenpair> {
        // A conjugate's residual is its partner's.
        let c = conjugate_of(values, j);
        if let Some((_, e)) = done.iter().find(|(i, _)| *i == j || *i == c) {
            let mut e = e.clone();
            if e.value != values[j] {
                e.value = values[j];
                e.vector.1.iter_mut().for_each(|x| *x = -*x);
            }
            return Ok(e);
        }
        let lam = values[j];
        let (mut xr, mut xi) = (vec![0.0; n], vec![0.0; n]);
        for (i, v) in basis.iter().enumerate() {
            axpy(y[(i, j)].re, v, &mut xr);
            axpy(y[(i, j)].im, v, &mut xi);
        }
        let nrm = (dot(&xr, &xr) + dot(&xi, &xi)).sqrt().max(f64::MIN_POSITIVE);
        xr.iter_mut().chain(xi.iter_mut()).for_each(|x| *x /= nrm);
        let mut ar = vec![0.0; n];
        apply(&xr, &mut ar, matvecs)?;
        // (A − λ)(xr + i xi) = (A xr − a xr + b xi) + i (A xi − b xr − a xi).
        let mut r2: f64 = (0..n).map(|t| (ar[t] - lam.re * xr[t] + lam.im * xi[t]).powi(2)).sum();
        if lam.im != 0.0 {
            let mut ai = vec![0.0; n];
            apply(&xi, &mut ai, matvecs)?;
            r2 += (0..n).map(|t| (ai[t] - lam.im * xr[t] - lam.re * xi[t]).powi(2)).sum::<f64>();
        }
        let s = o.split.min(n);
        let share = dot(&xr[..s], &xr[..s]) + dot(&xi[..s], &xi[..s]);
        let vector = if o.vectors { (xr, xi) } else { (Vec::new(), Vec::new()) };
        let e = Eigenpair { value: lam, residual: r2.sqrt(), vector, share };
        done.push((j, e.clone()));
        Ok(e)
    };
    let rightmost = right.iter().map(|&j| pair(j, &mut matvecs)).collect::<Result<Vec<_>>>()?;
    let largest = large.iter().map(|&j| pair(j, &mut matvecs)).collect::<Result<Vec<_>>>()?;
    Ok(Spectrum { rightmost, largest, matvecs, restarts, converged })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dense(Mat<f64>);
    impl Operator for Dense {
        fn dim(&self) -> usize {
            self.0.nrows()
        }
        fn apply(&mut self, u: &[f64], out: &mut [f64]) -> Result<()> {
            for (i, o) in out.iter_mut().enumerate() {
                *o = (0..u.len()).map(|j| self.0[(i, j)] * u[j]).sum();
            }
            Ok(())
        }
    }

    /// A random non-symmetric matrix with a known spread of eigenvalues.
    fn random(n: usize, seed: u64) -> Mat<f64> {
        let s = Stream::new(seed, Purpose::Krylov, 1);
        let mut z = vec![0f32; n * n];
        s.normals(0, &mut z);
        Mat::from_fn(n, n, |i, j| {
            z[i * n + j] as f64 / (n as f64).sqrt() - if i == j { 0.3 * i as f64 / n as f64 } else { 0.0 }
        })
    }

    #[test]
    fn restarted_arnoldi_finds_the_dense_leading_eigenvalues() {
        let a = random(150, 3);
        let mut dense = dense_eigenvalues(&a).unwrap();
        let o = Options { k: 5, krylov: 30, max_matvecs: 20_000, tol: 1e-12, seed: 1, vectors: true, split: 0 };
        let sp = eigs(&mut Dense(a.clone()), &o).unwrap();
        assert!(sp.converged && sp.restarts > 0, "{} restarts, converged {}", sp.restarts, sp.converged);
        dense.sort_by(by_real);
        for (e, d) in sp.rightmost.iter().zip(&dense) {
            assert!((e.value - d).norm() <= 1e-9 * d.norm(), "{:?} vs {:?}", e.value, d);
            assert!(e.residual < 1e-9, "{}", e.residual);
        }
        dense.sort_by(by_modulus);
        for (e, d) in sp.largest.iter().zip(&dense) {
            assert!((e.value - d).norm() <= 1e-9 * d.norm(), "{:?} vs {:?}", e.value, d);
        }
    }

    #[test]
    fn an_invariant_start_goes_on_along_fresh_directions() {
        // Block diagonal: the start vector's Krylov space is all of it only
        // by chance; a 1-D operator breaks down at once.
        let mut a = Mat::<f64>::zeros(6, 6);
        for i in 0..6 {
            a[(i, i)] = i as f64 - 2.0;
        }
        let o = Options { k: 2, krylov: 6, max_matvecs: 100, tol: 1e-12, seed: 0, vectors: false, split: 0 };
        let sp = eigs(&mut Dense(a), &o).unwrap();
        let re: Vec<f64> = sp.rightmost.iter().map(|e| e.value.re).collect();
        assert!((re[0] - 3.0).abs() < 1e-12 && (re[1] - 2.0).abs() < 1e-12, "{re:?}");
        let big: Vec<f64> = sp.largest.iter().map(|e| e.value.re).collect();
        assert!((big[0] - 3.0).abs() < 1e-12 && (big[1] - 2.0).abs() < 1e-12, "{big:?}");
    }
}
