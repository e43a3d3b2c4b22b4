//! The scalar types the CPU passes run in: f32 for training, f64 for
//! gradient checks, and [`Dual`] (f64 with a tangent) for exact
//! Jacobian-vector products of anything computed by the passes.  Matrix products go through the `gemm` crate (measured
//! faster than `matrixmultiply` on our shapes: `cargo run --release --example
//! gemm_choice`), always single-threaded: parallelism is over chunks.

use std::fmt::Debug;
use std::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub};

pub trait Float:
    Copy
    + Debug
    + Default
    + PartialOrd
    + Send
    + Sync
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + MulAssign
{
    const ZERO: Self;
    const ONE: Self;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    fn exp(self) -> Self;
    fn ln_1p(self) -> Self;
    fn tanh(self) -> Self;
    fn is_finite(self) -> bool;
}

macro_rules! impl_float {
    ($t:ty) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            #[inline]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline]
            fn ln_1p(self) -> Self {
                <$t>::ln_1p(self)
            }
            #[inline]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
        }
    };
}
impl_float!(f32);
impl_float!(f64);

/// A dual number v + d·ε with ε² = 0: running the passes on Dual values
/// seeded with tangents u gives each result's value and its exact
/// directional derivative along u (forward-mode differentiation).
/// Comparisons (ReLU, the stable forms of sigmoid) look at the value only,
/// so a kink takes the side the value is on.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct Dual {
    pub v: f64,
    pub d: f64,
}

impl Dual {
    pub const fn new(v: f64, d: f64) -> Dual {
        Dual { v, d }
    }
}

impl PartialEq for Dual {
    fn eq(&self, o: &Dual) -> bool {
        self.v == o.v && self.d == o.d
    }
}

impl PartialOrd for Dual {
    fn partial_cmp(&self, o: &Dual) -> Option<std::cmp::Ordering> {
        self.v.partial_cmp(&o.v)
    }
}

impl Add for Dual {
    type Output = Dual;
    #[inline]
    fn add(self, o: Dual) -> Dual {
        Dual::new(self.v + o.v, self.d + o.d)
    }
}
impl Sub for Dual {
    type Output = Dual;
    #[inline]
    fn sub(self, o: Dual) -> Dual {
        Dual::new(self.v - o.v, self.d - o.d)
    }
}
impl Mul for Dual {
    type Output = Dual;
    #[inline]
    fn mul(self, o: Dual) -> Dual {
        Dual::new(self.v * o.v, self.v * o.d + self.d * o.v)
    }
}
impl Div for Dual {
    type Output = Dual;
    #[inline]
    fn div(self, o: Dual) -> Dual {
        let q = self.v / o.v;
        Dual::new(q, (self.d - q * o.d) / o.v)
    }
}
impl Neg for Dual {
    type Output = Dual;
    #[inline]
    fn neg(self) -> Dual {
        Dual::new(-self.v, -self.d)
    }
}
impl AddAssign for Dual {
    #[inline]
    fn add_assign(&mut self, o: Dual) {
        *self = *self + o;
    }
}
impl MulAssign for Dual {
    #[inline]
    fn mul_assign(&mut self, o: Dual) {
        *self = *self * o;
    }
}

impl Float for Dual {
    const ZERO: Self = Dual::new(0.0, 0.0);
    const ONE: Self = Dual::new(1.0, 0.0);
    #[inline]
    fn from_f64(v: f64) -> Self {
        Dual::new(v, 0.0)
    }
    #[inline]
    fn to_f64(self) -> f64 {
        self.v
    }
    #[inline]
    fn exp(self) -> Self {
        let e = self.v.exp();
        Dual::new(e, self.d * e)
    }
    #[inline]
    fn ln_1p(self) -> Self {
        Dual::new(self.v.ln_1p(), self.d / (1.0 + self.v))
    }
    #[inline]
    fn tanh(self) -> Self {
        let t = self.v.tanh();
        Dual::new(t, self.d * (1.0 - t * t))
    }
    #[inline]
    fn is_finite(self) -> bool {
        self.v.is_finite() && self.d.is_finite()
    }
}

/// A row-major matrix view: `rows × cols` with row stride `cols`, or its
/// transpose when `t` is set (then the stored matrix is `cols × rows`).
#[derive(Clone, Copy)]
pub struct Mat<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub t: bool,
}

impl<'a, T> Mat<'a, T> {
    /// The stored row-major `rows × cols` matrix.
    pub fn n(data: &'a [T], rows: usize, cols: usize) -> Self {
        debug_assert!(data.len() >= rows * cols);
        Mat { data, rows, cols, t: false }
    }

    /// The transpose of the stored row-major `cols × rows` matrix.
    pub fn t(data: &'a [T], rows: usize, cols: usize) -> Self {
        debug_assert!(data.len() >= rows * cols);
        Mat { data, rows, cols, t: true }
    }

    fn strides(&self) -> (isize, isize) {
        // (row stride, column stride) in elements
        if self.t {
            (1, self.rows as isize)
        } else {
            (self.cols as isize, 1)
        }
    }
}

static MATMULS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Matrix products computed so far by this process (for bench and tests).
pub fn matmul_count() -> u64 {
    MATMULS.load(std::sync::atomic::Ordering::Relaxed)
}

/// `c = a · b` (`accumulate`: `c += a · b`), c row-major `a.rows × b.cols`.
///
/// The `gemm` crate allocates its packing scratch on every call (a flag
/// vector and, when it packs, the packed panel); everything else in a
/// training step is allocated once.
pub fn matmul<T: Float>(a: Mat<T>, b: Mat<T>, c: &mut [T], accumulate: bool) {
    assert_eq!(a.cols, b.rows, "matmul: inner dimensions differ");
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(c.len() >= m * n, "matmul: output too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(T::ZERO);
        }
        return;
    }
    let (ars, acs) = a.strides();
    let (brs, bcs) = b.strides();
    MATMULS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<Dual>() {
        // Values and tangents are interleaved f64s: three strided f64
        // products, c.v = a.v b.v and c.d = a.v b.d + a.d b.v.
        let (a, b) = (a.data.as_ptr() as *const f64, b.data.as_ptr() as *const f64);
        let c = c.as_mut_ptr() as *mut f64;
        let run = |c: *mut f64, acc: bool, a: *const f64, b: *const f64| {
            // SAFETY: a Dual is two f64s (repr(C)); doubling every stride
            // walks the values (offset 0) or the tangents (offset 1) of the
            // same elements the checked Dual strides describe.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c,
                    2,
                    2 * n as isize,
                    acc,
                    a,
                    2 * acs,
                    2 * ars,
                    b,
                    2 * bcs,
                    2 * brs,
                    1.0f64,
                    1.0f64,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            }
        };
        // SAFETY (offsets): one f64 into a Dual slice stays inside it.
        let (ad, bd, cd) = unsafe { (a.add(1), b.add(1), c.add(1)) };
        run(c, accumulate, a, b);
        run(cd, accumulate, a, bd);
        run(cd, true, ad, b);
        return;
    }
    // SAFETY: the strides and sizes describe memory inside the slices, which
    // the asserts above and the Mat constructors check; `c` does not alias.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            acs,
            ars,
            b.data.as_ptr(),
            bcs,
            brs,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dual products: values as f64 products, tangents by the product rule.
    #[test]
    fn dual_matmul_is_the_product_rule() {
        let val = |s: usize, i: usize| ((i * 7 + s * 13) % 11) as f64 * 0.25 - 1.0;
        for (m, k, n) in [(5, 7, 3), (64, 9, 33), (1, 3, 9)] {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let a: Vec<Dual> = (0..m * k).map(|i| Dual::new(val(1, i), val(3, i))).collect();
                let b: Vec<Dual> = (0..k * n).map(|i| Dual::new(val(2, i), val(4, i))).collect();
                let am = if ta { Mat::t(&a, m, k) } else { Mat::n(&a, m, k) };
                let bm = if tb { Mat::t(&b, k, n) } else { Mat::n(&b, k, n) };
                let ga = |i: usize, p: usize| if ta { a[p * m + i] } else { a[i * k + p] };
                let gb = |p: usize, j: usize| if tb { b[j * k + p] } else { b[p * n + j] };
                for acc in [false, true] {
                    let mut c = vec![Dual::new(0.5, -0.25); m * n];
                    matmul(am, bm, &mut c, acc);
                    for i in 0..m {
                        for j in 0..n {
                            let mut want = if acc { Dual::new(0.5, -0.25) } else { Dual::ZERO };
                            for p in 0..k {
                                want += ga(i, p) * gb(p, j);
                            }
                            let got = c[i * n + j];
                            assert!((got.v - want.v).abs() < 1e-12 && (got.d - want.d).abs() < 1e-12, "{m}x{k}x{n}");
                        }
                    }
                }
            }
        }
    }

    /// `matmul` with every combination of transposes, against the definition.
    #[test]
    fn matmul_matches_the_definition() {
        let val = |s: usize, i: usize| ((i * 7 + s * 13) % 11) as f64 * 0.25 - 1.0;
        for (m, k, n) in [(5, 7, 3), (64, 2, 128), (128, 64, 2), (64, 128, 1), (1, 3, 9), (9, 1, 4), (3, 0, 2)] {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let a: Vec<f64> = (0..m * k).map(|i| val(1, i)).collect();
                let b: Vec<f64> = (0..k * n).map(|i| val(2, i)).collect();
                let am = if ta { Mat::t(&a, m, k) } else { Mat::n(&a, m, k) };
                let bm = if tb { Mat::t(&b, k, n) } else { Mat::n(&b, k, n) };
                let ga = |i: usize, p: usize| if ta { a[p * m + i] } else { a[i * k + p] };
                let gb = |p: usize, j: usize| if tb { b[j * k + p] } else { b[p * n + j] };
                for acc in [false, true] {
                    let mut c = vec![0.5; m * n];
                    matmul(am, bm, &mut c, acc);
                    for i in 0..m {
                        for j in 0..n {
                            let want = (0..k).map(|p| ga(i, p) * gb(p, j)).sum::<f64>() + if acc { 0.5 } else { 0.0 };
                            assert!((c[i * n + j] - want).abs() < 1e-12, "{m}x{k}x{n} ta {ta} tb {tb} acc {acc}");
                        }
                    }
                }
            }
        }
    }
}
