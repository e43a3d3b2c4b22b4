//! Tensors on the wire (little-endian f32 in `bytes` fields, `crate::f32le`;
//! a phase's integer sums as little-endian int64), the columns each phase's
//! result carries, and the sizes that both ends set explicitly.

use std::ops::Range;

use crate::gan::phases::{Game, PartialLayout};

/// HTTP/2 flow-control windows (stream and connection), set on both ends.
pub const WINDOW_BYTES: u32 = 16 << 20;

/// The largest HTTP/2 frame either end accepts (the default is 16 KiB): a
/// tensor of a few hundred KB then crosses as one or a few DATA frames
/// rather than dozens, which cut the communication time of a mog-ring step
/// on loopback by about a quarter (README, "Distributed training").
pub const MAX_FRAME_BYTES: u32 = 1 << 20;

/// The largest message a run needs: the whole training state (parameters
/// and moments), or one row of int64 sums, plus room for the framing.
pub fn max_message_bytes(game: &Game) -> usize {
    let row = game.layout().stride();
    let params = game.gen.n_params + game.disc.n_params;
    (row * 8).max(params * 4 * 3) + (1 << 20)
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

/// One row of integer sums (`gan::reduce`) as little-endian int64.
pub fn encode_i64(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// acc += the int64 row `b` (wrapping, as the reduction's sums are); the
/// lengths must already match (8 bytes per value).
pub fn add_i64(b: &[u8], acc: &mut [i64]) {
    assert_eq!(b.len(), acc.len() * 8, "wire::add_i64: byte and value counts differ");
    for (a, c) in acc.iter_mut().zip(b.chunks_exact(8)) {
        *a = a.wrapping_add(i64::from_le_bytes(c.try_into().expect("8 bytes")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int64_rows_round_trip_and_add_wrapping() {
        let v = [0i64, -1, i64::MAX, i64::MIN, 42];
        let mut acc = [1i64, 1, 1, 0, -42];
        add_i64(&encode_i64(&v), &mut acc);
        assert_eq!(acc, [1, 0, i64::MIN, i64::MIN, 0]);
    }
}
