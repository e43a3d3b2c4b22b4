//! Orthogonal initialisation with gain (Saxe et al. 2014), as the authors and
//! `torch.nn.init.orthogonal_` do: weights are `gain · Q` with Q from the QR
//! decomposition of a Gaussian matrix; biases start at zero.

use super::network::Network;
use crate::rng::{Purpose, Stream};

/// Fresh parameters for `net`: orthogonal weights with `gain`, zero biases.
/// `stream_id` separates the networks of one run (0: generator, 1: discriminator).
pub fn orthogonal(net: &Network, gain: f64, seed: u64, stream_id: u64) -> Vec<f32> {
    let mut p = vec![0.0f32; net.n_params];
    for t in net.tensors().into_iter().filter(|t| t.name.ends_with(".weight")) {
        // torch.nn.init.orthogonal_ sees a weight as [shape[0], the rest].
        let l: u64 = t.name.split('.').next().and_then(|i| i.parse().ok()).expect("layer index");
        let rows = t.shape[0];
        let cols = t.shape[1..].iter().product();
        let stream = Stream::new(seed, Purpose::Init, stream_id << 16 | l);
        let w = orthogonal_matrix(rows, cols, gain, &stream);
        for (d, s) in p[t.range].iter_mut().zip(&w) {
            *d = *s as f32;
        }
    }
    p
}

/// A `rows × cols` row-major matrix whose rows (if rows <= cols) or columns
/// (otherwise) are orthonormal, times `gain`.
pub fn orthogonal_matrix(rows: usize, cols: usize, gain: f64, stream: &Stream) -> Vec<f64> {
    // Work on a tall matrix a (big × small) and orthonormalise its columns.
    let (big, small) = if rows >= cols { (rows, cols) } else { (cols, rows) };
    let mut a = vec![0.0f64; big * small];
    let mut col = vec![0.0f32; big];
    for j in 0..small {
        stream.normals(j as u32, &mut col);
        for i in 0..big {
            a[i * small + j] = col[i] as f64;
        }
    }
    // Modified Gram–Schmidt twice (for accuracy); R's diagonal is positive,
    // which is the sign convention torch applies after its QR.
    for _ in 0..2 {
        for j in 0..small {
            for k in 0..j {
                let dot: f64 = (0..big).map(|i| a[i * small + j] * a[i * small + k]).sum();
                for i in 0..big {
                    a[i * small + j] -= dot * a[i * small + k];
                }
            }
            let norm = (0..big).map(|i| a[i * small + j].powi(2)).sum::<f64>().sqrt();
            for i in 0..big {
                a[i * small + j] /= norm;
            }
        }
    }
    let mut w = vec![0.0f64; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            w[r * cols + c] = gain * if rows >= cols { a[r * small + c] } else { a[c * small + r] };
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_or_columns_are_orthonormal_times_gain() {
        for (r, c) in [(128, 256), (256, 128), (1, 128), (128, 2), (5, 5)] {
            let s = Stream::new(3, Purpose::Init, 0);
            let w = orthogonal_matrix(r, c, 0.8, &s);
            let (n, m) = if r <= c { (r, c) } else { (c, r) };
            // Row i of w when its rows are orthonormal, else column i.
            let at = |i: usize, k: usize| if r <= c { w[i * c + k] } else { w[k * c + i] };
            for i in 0..n {
                for j in 0..n {
                    let d: f64 = (0..m).map(|k| at(i, k) * at(j, k)).sum();
                    let want = if i == j { 0.64 } else { 0.0 };
                    assert!((d - want).abs() < 1e-9, "{r}x{c}: <{i},{j}> = {d}");
                }
            }
        }
    }
}
