//! Tensors on the wire (little-endian f32 in `bytes` fields, `crate::f32le`),
//! the columns each phase's result carries, and the sizes that both ends set
//! explicitly.

use std::ops::Range;

use crate::config::Config;
use crate::f32le;
use crate::gan::phases::{Game, PartialLayout};

/// HTTP/2 flow-control windows (stream and connection), set on both ends.
pub const WINDOW_BYTES: u32 = 16 << 20;

/// The largest HTTP/2 frame either end accepts (the default is 16 KiB): a
/// tensor of a few hundred KB then crosses as one or a few DATA frames
/// rather than dozens, which cut the communication time of a mog-ring step
/// on loopback by about a quarter (README, "Distributed training").
pub const MAX_FRAME_BYTES: u32 = 1 << 20;

/// The largest message a run needs: a phase result with one row per chunk,
/// or the parameters, plus room for the framing.
pub fn max_message_bytes(cfg: &Config, game: &Game) -> usize {
    let row = game.layout().stride();
    let floats = (row * cfg.chunks()).max(game.gen.n_params + game.disc.n_params);
    floats * 4 + (1 << 20)
}

/// The columns of a row of partial sums that a phase's result carries:
/// phase 1 the discriminator's gradient and the stats (and the generator's
/// gradient when eta = 0), phase 2 the generator's gradient.
pub fn result_columns(layout: &PartialLayout, phase_two: bool, with_gen_grad: bool) -> Vec<Range<usize>> {
    if phase_two {
        vec![layout.gen()]
    } else if with_gen_grad {
        vec![layout.disc(), layout.gen(), layout.stats()]
    } else {
        vec![layout.disc(), layout.stats()]
    }
}

/// Packs `cols` of every row (`stride` floats each) into bytes.
pub fn pack_columns(rows: &[f32], stride: usize, cols: &[Range<usize>]) -> Vec<u8> {
    let width: usize = cols.iter().map(|c| c.len()).sum();
    let mut b = Vec::with_capacity(rows.len() / stride * width * 4);
    for r in rows.chunks_exact(stride) {
        for c in cols {
            f32le::extend(&mut b, &r[c.clone()]);
        }
    }
    b
}

/// Packs `cols` of the rows folded into one (`fold_rows`, then
/// `pack_columns`, bit for bit), adding only the columns that are sent.
pub fn pack_folded(rows: &[f32], stride: usize, cols: &[Range<usize>]) -> Vec<u8> {
    let mut it = rows.chunks_exact(stride);
    let Some(first) = it.next() else { return Vec::new() };
    let mut acc: Vec<f32> = cols.iter().flat_map(|c| first[c.clone()].iter().copied()).collect();
    for r in it {
        let mut a = acc.as_mut_slice();
        for c in cols {
            let (head, tail) = a.split_at_mut(c.len());
            for (x, v) in head.iter_mut().zip(&r[c.clone()]) {
                *x += v;
            }
            a = tail;
        }
    }
    f32le::encode(&acc)
}

/// Unpacks bytes made by `pack_columns` into `cols` of `rows`; the other
/// columns are left as they are.
pub fn unpack_columns(
    b: &[u8],
    rows: &mut [f32],
    stride: usize,
    cols: &[Range<usize>],
    what: &str,
) -> Result<(), String> {
    let width: usize = cols.iter().map(|c| c.len()).sum();
    let n = rows.len() / stride;
    if b.len() != n * width * 4 {
        return Err(format!("{what}: {} bytes, expected {} ({n} rows of {width} floats)", b.len(), n * width * 4));
    }
    let mut at = 0;
    for r in rows.chunks_exact_mut(stride) {
        for c in cols {
            let len = c.len() * 4;
            f32le::copy_into(&b[at..at + len], &mut r[c.clone()]);
            at += len;
        }
    }
    Ok(())
}

/// The rows of a shard folded into one: row 0, then each further row added
/// in chunk order, exactly as the trainer's reduction adds them.
pub fn fold_rows(rows: &[f32], stride: usize) -> Vec<f32> {
    let mut it = rows.chunks_exact(stride);
    let mut acc = it.next().map(|r| r.to_vec()).unwrap_or_default();
    for r in it {
        for (a, v) in acc.iter_mut().zip(r) {
            *a += v;
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_round_trip_and_leave_the_rest() {
        let layout = PartialLayout { n_disc: 3, n_gen: 4 };
        let stride = layout.stride();
        let rows: Vec<f32> = (0..2 * stride).map(|i| i as f32).collect();
        for (two, gen) in [(false, false), (false, true), (true, false)] {
            let cols = result_columns(&layout, two, gen);
            let b = pack_columns(&rows, stride, &cols);
            let mut got = vec![-1.0f32; rows.len()];
            unpack_columns(&b, &mut got, stride, &cols, "t").unwrap();
            for (i, (g, r)) in got.iter().zip(&rows).enumerate() {
                let inside = cols.iter().any(|c| c.contains(&(i % stride)));
                assert_eq!(*g, if inside { *r } else { -1.0 });
            }
            assert!(unpack_columns(&b[1..], &mut got, stride, &cols, "t").is_err());
            let folded = pack_folded(&rows, stride, &cols);
            assert_eq!(folded, pack_columns(&fold_rows(&rows, stride), stride, &cols));
        }
    }

    #[test]
    fn a_folded_row_padded_with_negative_zeros_reduces_to_the_same_bits() {
        // The trainer adds rows in order; a folded prefix followed by rows of
        // -0.0 must give exactly the same sums.
        let stride = 5;
        let rows: Vec<f32> = (0..4 * stride).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.1 + 1e-7 * i as f32).collect();
        let plain = fold_rows(&rows, stride);
        let mut padded = fold_rows(&rows[..3 * stride], stride);
        padded.extend(vec![-0.0f32; 2 * stride]);
        padded.extend_from_slice(&rows[3 * stride..]);
        let got = fold_rows(&padded, stride);
        assert_eq!(
            plain.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            got.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!((0.0f32 + -0.0).to_bits(), 0.0f32.to_bits());
        assert_eq!((-0.0f32 + -0.0).to_bits(), (-0.0f32).to_bits());
    }
}
