//! The exact, order-free sum of per-chunk partial sums (DESIGN.md,
//! "Randomness and exactness").  Every chunk's f32 row becomes int64 fixed
//! point with one scale per block (a parameter tensor, or one statistic),
//! chosen from the largest |value| of that block over every chunk of the
//! minibatch (a max, itself order-free); integer sums are exact in any
//! order and any grouping, and the f32 result is the integer sum correctly
//! rounded.  So a worker folds its whole shard into one row of integers,
//! and the result does not depend on the number of workers, the shard
//! sizes, the order results arrive in, or a step redone without a lost
//! worker.  docs/scaling.md states the error bound; tests hold it.
//!
//! Scales: with `C` chunks per minibatch and a block whose largest |value|
//! is below 2^e, values are multiplied by 2^(K - e), K = 62 - ceil(log2 C),
//! and rounded to integers (ties to even): each is below 2^K in magnitude,
//! their sum over C chunks below 2^62, so no sum of any subset overflows.
//! A block with a non-finite value comes out NaN (the step is skipped).

use std::ops::Range;

use super::phases::{stat, Game};

/// The blocks of a row of partial sums (`PartialLayout`): each parameter
/// tensor of the discriminator, then of the generator, then each statistic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocks {
    /// Block b is columns `bounds[b]..bounds[b + 1]`.
    bounds: Vec<usize>,
}

impl Blocks {
    pub fn of(game: &Game) -> Blocks {
        let mut bounds = vec![0];
        let mut push_net = |net: &crate::nn::Network, base: usize| {
            for t in net.tensors() {
                let (s, e) = (base + t.range.start, base + t.range.end);
                // Tensors tile a network's parameters; a gap would be its own block.
                if s > *bounds.last().expect("bounds start with 0") {
                    bounds.push(s);
                }
                if e > s {
                    bounds.push(e);
                }
            }
            if base + net.n_params > *bounds.last().expect("bounds start with 0") {
                bounds.push(base + net.n_params);
            }
        };
        push_net(&game.disc, 0);
        push_net(&game.gen, game.disc.n_params);
        let stats = game.disc.n_params + game.gen.n_params;
        bounds.extend((1..=stat::COUNT).map(|i| stats + i));
        Blocks { bounds }
    }

    /// Blocks of the given widths, in order (tests).
    pub fn of_widths(widths: &[usize]) -> Blocks {
        let mut bounds = vec![0];
        for w in widths {
            bounds.push(bounds.last().unwrap() + w);
        }
        Blocks { bounds }
    }

    pub fn len(&self) -> usize {
        self.bounds.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The columns of block `b`.
    pub fn columns(&self, b: usize) -> Range<usize> {
        self.bounds[b]..self.bounds[b + 1]
    }

    /// The blocks that make up the columns `cols` (whose ends are block bounds).
    pub fn within(&self, cols: &Range<usize>) -> Range<usize> {
        let first = self.bounds.partition_point(|&x| x < cols.start);
        let last = self.bounds.partition_point(|&x| x < cols.end);
        debug_assert!(self.bounds.get(first) == Some(&cols.start) && self.bounds.get(last) == Some(&cols.end));
        first..last
    }
}

/// The fixed-point format of one run: its blocks and the headroom its
/// chunk count needs.
#[derive(Debug, Clone)]
pub struct FixedPoint {
    pub blocks: Blocks,
    /// K: every quantised value is below 2^K in magnitude.
    k: i32,
}

/// The largest |x| of `xs`, or +inf when one is not finite.
fn max_abs(xs: &[f32]) -> f32 {
    // Branch-free (it vectorises): the largest |x| by bits (|x| as an
    // integer orders like |x|; +inf and NaN sit above every finite value).
    let m = xs.iter().map(|x| x.to_bits() & 0x7fff_ffff).fold(0u32, u32::max);
    if m >= f32::INFINITY.to_bits() {
        f32::INFINITY
    } else {
        f32::from_bits(m)
    }
}

impl FixedPoint {
    /// For minibatches of `chunks` chunks.
    pub fn new(blocks: Blocks, chunks: usize) -> FixedPoint {
        let headroom = (chunks.max(1) as u64).next_power_of_two().trailing_zeros() as i32;
        FixedPoint { blocks, k: 62 - headroom }
    }

    /// The scale exponent s of a block whose largest |value| is `max`
    /// (values are multiplied by 2^s): K − e, e the smallest exponent of the
    /// grid 8k + 4 with max < 2^e; None when `max` is not finite.
    pub fn scale(&self, max: f32) -> Option<i32> {
        if !max.is_finite() {
            return None;
        }
        if max == 0.0 {
            return Some(0);
        }
        // max < 2^exp: floor(log2 max) + 1, exact from the bits.
        let (mant, exp) = frexp(max);
        debug_assert!((0.5..1.0).contains(&mant));
        let e = (exp - EXPONENT_OFFSET + EXPONENT_STEP - 1).div_euclid(EXPONENT_STEP) * EXPONENT_STEP + EXPONENT_OFFSET;
        Some(self.k - e)
    }

    /// Whether values quantised with the scale of `guess` are those the
    /// run-wide maximum `max` asks for: the same scale, or a block whose
    /// values are all zero (any scale) or not all finite (NaN anyway).
    pub fn same_scale(&self, guess: f32, max: f32) -> bool {
        max == 0.0 || !max.is_finite() || self.scale(guess) == self.scale(max)
    }

    /// maxima[b] = max(maxima[b], max |x| over `rows` of `partials` in
    /// block b), for the blocks of `cols` (an order-free reduction: the
    /// coordinator combines workers' maxima the same way).
    pub fn max_into(&self, partials: &[f32], stride: usize, rows: &[usize], cols: &Range<usize>, maxima: &mut [f32]) {
        use rayon::prelude::*;
        let blocks = self.blocks.within(cols);
        let block_max = |b: usize| {
            let c = self.blocks.columns(b);
            rows.iter().map(|&r| max_abs(&partials[r * stride + c.start..r * stride + c.end])).fold(0.0, f32::max)
        };
        if rows.len() * cols.len() < PARALLEL_FROM {
            for b in blocks {
                maxima[b] = maxima[b].max(block_max(b));
            }
            return;
        }
        let found: Vec<f32> = blocks.clone().into_par_iter().map(block_max).collect();
        for (b, m) in blocks.zip(found) {
            maxima[b] = maxima[b].max(m);
        }
    }

    /// acc[j] += the quantised value of column `cols.start + j` of every row
    /// of `rows` (wrapping: the true sum never overflows, see the module),
    /// with the scales of `maxima`.  Blocks whose maximum is not finite are
    /// left alone (`finish` makes them NaN).
    pub fn add_into(
        &self,
        partials: &[f32],
        stride: usize,
        rows: &[usize],
        cols: &Range<usize>,
        maxima: &[f32],
        acc: &mut [i64],
    ) {
        use rayon::prelude::*;
        debug_assert_eq!(acc.len(), cols.len());
        let blocks = self.blocks.within(cols);
        // Each block's slice of `acc`, in parallel over blocks and within large ones.
        let mut parts: Vec<(usize, &mut [i64])> = Vec::with_capacity(blocks.len());
        let mut rest = acc;
        for b in blocks {
            let (mine, tail) = std::mem::take(&mut rest).split_at_mut(self.blocks.columns(b).len());
            parts.push((b, mine));
            rest = tail;
        }
        const PIECE: usize = 4096;
        let piece = |start: usize, mul: f64, a: &mut [i64]| {
            for &r in rows {
                let row = &partials[r * stride + start..r * stride + start + a.len()];
                for (q, &x) in a.iter_mut().zip(row) {
                    *q = q.wrapping_add(quantise(x, mul));
                }
            }
        };
        let serial = rows.len() * cols.len() < PARALLEL_FROM;
        let block = |(b, a): (usize, &mut [i64])| {
            let Some(s) = self.scale(maxima[b]) else { return };
            let (mul, start) = (exp2(s), self.blocks.columns(b).start);
            if serial {
                piece(start, mul, a);
            } else {
                a.par_chunks_mut(PIECE).enumerate().for_each(|(i, a)| piece(start + i * PIECE, mul, a));
            }
        };
        if serial {
            parts.into_iter().for_each(block);
        } else {
            parts.into_par_iter().for_each(block);
        }
    }

    /// out[j] = the f32 value of acc[j] (column `cols.start + j`), correctly
    /// rounded; NaN in blocks whose maximum is not finite.
    pub fn finish(&self, acc: &[i64], cols: &Range<usize>, maxima: &[f32], out: &mut [f32]) {
        debug_assert_eq!(acc.len(), cols.len());
        debug_assert_eq!(out.len(), cols.len());
        for b in self.blocks.within(cols) {
            let c = self.blocks.columns(b);
            let (a, o) =
                (&acc[c.start - cols.start..c.end - cols.start], &mut out[c.start - cols.start..c.end - cols.start]);
            match self.scale(maxima[b]) {
                None => o.fill(f32::NAN),
                Some(s) => {
                    let div = exp2(-s);
                    for (o, &q) in o.iter_mut().zip(a) {
                        *o = dequantise(q, div);
                    }
                }
            }
        }
    }

    /// The blocks of `cols` (a phase's result columns), in order: the order
    /// of the maxima on the wire.
    pub fn blocks_of(&self, cols: &[Range<usize>]) -> Vec<usize> {
        cols.iter().flat_map(|c| self.blocks.within(c)).collect()
    }

    /// Reduces `rows` of `partials` over each of `cols` into `outs` (one
    /// slice per range): rows held here, plus, from `others` (workers whose
    /// rows are elsewhere), their maxima over `blocks_of(cols)` and then,
    /// told the run-wide maxima, their integer sums over `cols` in order.
    /// A block with a non-finite value anywhere comes out NaN.
    #[allow(clippy::too_many_arguments)]
    pub fn reduce_with<E>(
        &self,
        partials: &[f32],
        stride: usize,
        rows: &[usize],
        cols: &[Range<usize>],
        others: &mut dyn Contributors<E>,
        scratch: &mut Scratch,
        outs: &mut [&mut [f32]],
    ) -> std::result::Result<(), E> {
        let blocks = self.blocks_of(cols);
        self.maxima_over(partials, stride, rows, cols, &mut scratch.maxima);
        others.maxima(&mut |theirs: &[f32]| {
            for (&b, &m) in blocks.iter().zip(theirs) {
                scratch.maxima[b] = scratch.maxima[b].max(m);
            }
        })?;
        self.sum_over(partials, stride, rows, cols, &scratch.maxima, &mut scratch.acc);
        let compact: Vec<f32> = blocks.iter().map(|&b| scratch.maxima[b]).collect();
        others.sums(&compact, &mut scratch.acc)?;
        let mut off = 0;
        for (c, o) in cols.iter().zip(outs.iter_mut()) {
            self.finish(&scratch.acc[off..off + c.len()], c, &scratch.maxima, o);
            off += c.len();
        }
        Ok(())
    }

    /// The whole reduction of `rows` of `partials` over `cols` into `out`
    /// (one process holding every row: maxima, then the integer sum), in
    /// the buffers of `scratch`.
    pub fn reduce(
        &self,
        partials: &[f32],
        stride: usize,
        rows: &[usize],
        cols: Range<usize>,
        scratch: &mut Scratch,
        out: &mut [f32],
    ) {
        let cols = [cols];
        self.maxima_over(partials, stride, rows, &cols, &mut scratch.maxima);
        self.sum_over(partials, stride, rows, &cols, &scratch.maxima, &mut scratch.acc);
        self.finish(&scratch.acc, &cols[0], &scratch.maxima, out);
    }

    /// maxima = the largest |value| of every block of `cols` over `rows`
    /// (0 for the other blocks), by block.
    pub fn maxima_over(
        &self,
        partials: &[f32],
        stride: usize,
        rows: &[usize],
        cols: &[Range<usize>],
        maxima: &mut Vec<f32>,
    ) {
        maxima.clear();
        maxima.resize(self.blocks.len(), 0.0);
        for c in cols {
            self.max_into(partials, stride, rows, c, maxima);
        }
    }

    /// acc = the quantised sums of `rows` over `cols` one after the other
    /// (the layout of a phase's int64 row), with the scales of `maxima`.
    pub fn sum_over(
        &self,
        partials: &[f32],
        stride: usize,
        rows: &[usize],
        cols: &[Range<usize>],
        maxima: &[f32],
        acc: &mut Vec<i64>,
    ) {
        acc.clear();
        acc.resize(cols.iter().map(|c| c.len()).sum(), 0);
        let mut off = 0;
        for c in cols {
            self.add_into(partials, stride, rows, c, maxima, &mut acc[off..off + c.len()]);
            off += c.len();
        }
    }
}

/// The maxima a worker quantises with before it knows the run-wide ones:
/// its own, or the hint (the previous step's run-wide maximum) where that is
/// larger.  The coordinator works out the same guess to check it.
pub fn guess(own: f32, hint: f32) -> f32 {
    if hint.is_finite() && hint > own {
        hint
    } else {
        own
    }
}

/// Buffers `FixedPoint::reduce_with` reuses from step to step.
#[derive(Debug, Default)]
pub struct Scratch {
    maxima: Vec<f32>,
    acc: Vec<i64>,
}

/// The workers whose rows are elsewhere, seen by the reduction.
pub trait Contributors<E> {
    /// Calls `add` with each one's block maxima (over `blocks_of(cols)`).
    fn maxima(&mut self, add: &mut dyn FnMut(&[f32])) -> std::result::Result<(), E>;
    /// Hands each the run-wide maxima and adds its integer sums into `acc` (wrapping).
    fn sums(&mut self, maxima: &[f32], acc: &mut [i64]) -> std::result::Result<(), E>;
}

/// No workers elsewhere.
pub struct NoOthers;

impl<E> Contributors<E> for NoOthers {
    fn maxima(&mut self, _add: &mut dyn FnMut(&[f32])) -> std::result::Result<(), E> {
        Ok(())
    }
    fn sums(&mut self, _maxima: &[f32], _acc: &mut [i64]) -> std::result::Result<(), E> {
        Ok(())
    }
}

/// Binades between the exponents a block's scale can take: the scale moves
/// only when the block's largest |value| crosses a power of 2^8, so a
/// worker's guess from the previous step's maxima (which lets it send its
/// integer sums with its maxima, in one message) is almost always right.
/// The price is up to 7 binades of the 62 bits' headroom (docs/scaling.md).
/// The grid is offset by 4 binades: fractions k / 2^n (the statistics of
/// minibatches of a power of two) then sit mid-way between its exponents
/// rather than on them.
pub const EXPONENT_STEP: i32 = 8;
const EXPONENT_OFFSET: i32 = 4;

/// Values (rows × columns) from which the maxima and the sums are split
/// over threads; below, a thread pool's hand-overs would cost more.
const PARALLEL_FROM: usize = 1 << 16;

/// 2^s in f64 (exact for the scales used: |s| < 300).
fn exp2(s: i32) -> f64 {
    f64::from_bits(((1023 + s as i64) as u64) << 52)
}

/// round(x · mul) to the nearest integer, ties to even (x · mul is exact in
/// f64: mul is a power of two).  Twin of kernels/reduce.cu's `quantise`.
#[inline]
pub fn quantise(x: f32, mul: f64) -> i64 {
    round_ties_even(x as f64 * mul) as i64
}

/// `f64::round_ties_even` without the library call it is on baseline
/// x86-64 (no SSE4.1 `roundsd`): adding and taking away 2^52 rounds to an
/// integer in the default rounding mode (to nearest, ties to even), and
/// every f64 of magnitude 2^52 or more is an integer already.  Branch-free,
/// so the quantising loops vectorise.
#[inline]
fn round_ties_even(v: f64) -> f64 {
    const TWO_52: f64 = 4_503_599_627_370_496.0;
    let m = TWO_52.copysign(v);
    if v.abs() < TWO_52 {
        (v + m) - m
    } else {
        v
    }
}

/// q · div as f32: q rounded to f32 (to nearest, ties to even), then scaled
/// by the power of two `div` in f64, exact unless the result is subnormal.
#[inline]
pub fn dequantise(q: i64, div: f64) -> f32 {
    ((q as f32) as f64 * div) as f32
}

/// (m, e) with x = m · 2^e and 0.5 <= m < 1, for finite x > 0.
fn frexp(x: f32) -> (f32, i32) {
    let bits = x.to_bits();
    let exp = ((bits >> 23) & 0xff) as i32;
    if exp == 0 {
        // Subnormal: scale into the normal range first.
        let (m, e) = frexp(x * (1u64 << 32) as f32);
        return (m, e - 32);
    }
    let m = f32::from_bits((bits & 0x807f_ffff) | (126 << 23));
    (m, exp - 126)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_ties_even_is_the_library_s() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let check = |v: f64| {
            let (a, b) = (round_ties_even(v), v.round_ties_even());
            // Equal as numbers (a zero's sign may differ; quantise casts it to 0 either way).
            assert!(a == b, "{v}: {a} {b}");
        };
        for k in 0..64 {
            let p = 2f64.powi(k);
            for v in [p, p + 0.5, p - 0.5, p + 1.5, p * 1.25, p * 1.75, p - 1.0] {
                check(v);
                check(-v);
            }
        }
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = f64::from_bits(x);
            if v.is_finite() {
                check(v);
            }
            // Values near the scaled range: |v| up to 2^63.
            check((x as i64 as f64) / 2f64.powi((x % 64) as i32));
        }
        for v in [0.5, 1.5, 2.5, -0.5, -2.5, 4_503_599_627_370_495.5, -4_503_599_627_370_495.5] {
            check(v);
        }
    }

    #[test]
    fn max_abs_is_the_largest_magnitude_or_inf_for_a_non_finite_value() {
        assert_eq!(max_abs(&[]), 0.0);
        assert_eq!(max_abs(&[1.0, -3.0, 2.0]), 3.0);
        assert_eq!(max_abs(&[-0.0, 1e-45]), 1e-45);
        assert_eq!(max_abs(&[1.0, f32::NAN, 2.0]), f32::INFINITY);
        assert_eq!(max_abs(&[f32::NEG_INFINITY]), f32::INFINITY);
        assert_eq!(max_abs(&[f32::MAX, -f32::MAX]), f32::MAX);
    }

    fn rows(n: usize, stride: usize, seed: u64) -> Vec<f32> {
        // Values over many magnitudes, both signs, some exact zeros.
        let mut s = seed;
        (0..n * stride)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let u = (s >> 11) as f64 / (1u64 << 53) as f64;
                let e = ((s >> 3) % 12) as i32 - 6;
                if s % 17 == 0 {
                    0.0
                } else {
                    ((u - 0.5) * 2f64.powi(e)) as f32
                }
            })
            .collect()
    }

    #[test]
    fn frexp_and_scales_bracket_the_maximum() {
        for &x in &[1.0f32, 0.75, 3.0, 1e-30, 1e30, f32::MIN_POSITIVE, 1e-45, f32::MAX] {
            let (m, e) = frexp(x);
            assert!((0.5..1.0).contains(&m), "{x}: {m}");
            assert_eq!(m as f64 * 2f64.powi(e), x as f64, "{x}");
        }
        let fp = FixedPoint::new(Blocks::of_widths(&[1]), 64);
        // 3 < 2^2, and 2 rounds up the grid 8k + 4 to 4.
        let s = fp.scale(3.0).unwrap();
        assert_eq!(s, 62 - 6 - 4);
        assert!(3.0 * exp2(s) < 2f64.powi(56));
        assert_eq!(fp.scale(15.0), Some(62 - 6 - 4));
        assert_eq!(fp.scale(16.0), Some(62 - 6 - 12));
        assert_eq!(fp.scale(4095.0), Some(62 - 6 - 12));
        assert_eq!(fp.scale(1.0 / 16.0), Some(62 - 6 - 4));
        assert_eq!(fp.scale(1.0 / 17.0), Some(62 - 6 + 4));
        // 16 / 4096 and 15 / 4096 (a count over a batch) have one scale.
        assert_eq!(fp.scale(16.0 / 4096.0), fp.scale(15.0 / 4096.0));
        assert!(fp.same_scale(3.0, 10.0) && !fp.same_scale(3.0, 20.0));
        assert!(fp.same_scale(3.0, 0.0) && fp.same_scale(3.0, f32::INFINITY));
        assert_eq!(fp.scale(f32::NAN), None);
        assert_eq!(fp.scale(0.0), Some(0));
    }

    #[test]
    fn any_grouping_and_order_gives_the_same_bits() {
        let widths = [7, 300, 1, 5000, 3];
        let stride: usize = widths.iter().sum();
        let n = 13;
        let p = rows(n, stride, 1);
        let fp = FixedPoint::new(Blocks::of_widths(&widths), n);
        let cols = 0..stride;
        let all: Vec<usize> = (0..n).collect();
        let mut want = vec![0.0; stride];
        fp.reduce(&p, stride, &all, cols.clone(), &mut Scratch::default(), &mut want);
        // Maxima per group combined, integer rows per group added in another order.
        let whole: Vec<std::ops::Range<usize>> = std::iter::once(0..n).collect();
        for groups in [whole, vec![0..5, 5..6, 6..13], vec![0..1, 1..12, 12..13]] {
            let mut maxima = vec![0.0; fp.blocks.len()];
            for g in groups.iter().rev() {
                fp.max_into(&p, stride, &g.clone().collect::<Vec<_>>(), &cols, &mut maxima);
            }
            let mut acc = vec![0i64; stride];
            for g in &groups {
                let mut mine = vec![0i64; stride];
                let rs: Vec<usize> = g.clone().rev().collect();
                fp.add_into(&p, stride, &rs, &cols, &maxima, &mut mine);
                for (a, m) in acc.iter_mut().zip(mine) {
                    *a = a.wrapping_add(m);
                }
            }
            let mut got = vec![0.0; stride];
            fp.finish(&acc, &cols, &maxima, &mut got);
            assert_eq!(
                got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    /// The error bound of docs/scaling.md: against the exact sum (f64 of the
    /// same f32 partials, exact here), at most half an f32 ulp of the result
    /// (the final rounding) plus C quantisation steps of half 2^-s.
    #[test]
    fn the_error_is_the_final_rounding_plus_the_quantisation_bound() {
        let widths = [64, 1000, 5];
        let stride: usize = widths.iter().sum();
        for n in [1, 2, 3, 64] {
            let p = rows(n, stride, n as u64 + 7);
            let fp = FixedPoint::new(Blocks::of_widths(&widths), n);
            let all: Vec<usize> = (0..n).collect();
            let mut got = vec![0.0; stride];
            fp.reduce(&p, stride, &all, 0..stride, &mut Scratch::default(), &mut got);
            let mut maxima = vec![0.0; fp.blocks.len()];
            fp.max_into(&p, stride, &all, &(0..stride), &mut maxima);
            let mut within_rounding = 0;
            for (b, &m) in maxima.iter().enumerate() {
                let s = fp.scale(m).unwrap();
                for j in fp.blocks.columns(b) {
                    // Exact: at most 64 f32 values of 24 bits within 2^12 of each other.
                    let exact: f64 = all.iter().map(|&r| p[r * stride + j] as f64).sum();
                    let half_ulp = (exact as f32).abs().max(f32::MIN_POSITIVE) as f64 * f32::EPSILON as f64 / 2.0;
                    let quant = n as f64 * 0.5 * 2f64.powi(-s);
                    let err = (got[j] as f64 - exact).abs();
                    assert!(
                        err <= half_ulp * 1.0000001 + quant,
                        "n {n} col {j}: err {err:e}, half ulp {half_ulp:e}, quant {quant:e}"
                    );
                    within_rounding += usize::from(err <= half_ulp * 1.0000001);
                }
            }
            // The quantisation term matters only for values far below their block's largest.
            assert!(within_rounding as f64 >= 0.999 * stride as f64, "n {n}: {within_rounding} of {stride}");
        }
    }

    #[test]
    fn a_non_finite_value_makes_its_block_nan_and_leaves_the_others() {
        let widths = [3, 4];
        let stride = 7;
        let mut p = rows(2, stride, 3);
        p[stride + 1] = f32::INFINITY;
        let fp = FixedPoint::new(Blocks::of_widths(&widths), 2);
        let mut out = vec![0.0; stride];
        fp.reduce(&p, stride, &[0, 1], 0..stride, &mut Scratch::default(), &mut out);
        assert!(out[..3].iter().all(|x| x.is_nan()));
        assert!(out[3..].iter().all(|x| x.is_finite()));
    }
}
