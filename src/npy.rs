//! NumPy's `.npy` format (version 1.0), for samples a user loads with
//! `numpy.load`: little-endian float32, C order.

use std::path::Path;

use crate::error::Result;

/// The bytes of a `.npy` file holding `values` as float32 of `shape`.
pub fn encode_f32(values: &[f32], shape: &[usize]) -> Vec<u8> {
    debug_assert_eq!(values.len(), shape.iter().product::<usize>());
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple}, }}");
    // Magic (6) + version (2) + header length (2) + header, padded with
    // spaces and ended by a newline to a multiple of 64 bytes.
    let total = (10 + header.len() + 1).next_multiple_of(64);
    header.push_str(&" ".repeat(total - 10 - header.len() - 1));
    header.push('\n');
    let mut out = Vec::with_capacity(total + 4 * values.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&crate::f32le::encode(values));
    out
}

/// Writes `values` of `shape` to `path` as a `.npy` file, atomically.
pub fn write_f32(path: &Path, values: &[f32], shape: &[usize]) -> Result<()> {
    crate::fsutil::write_atomic(path, &encode_f32(values, shape))
}

#[cfg(test)]
mod tests {
    #[test]
    fn header_is_aligned_and_describes_the_array() {
        let b = super::encode_f32(&[1.0, -2.5, 0.0, 3.0, 4.0, 5.0], &[2, 1, 1, 3]);
        assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
        let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hl) % 64, 0);
        let h = std::str::from_utf8(&b[10..10 + hl]).unwrap();
        assert!(h.contains("'shape': (2, 1, 1, 3)") && h.contains("'<f4'") && h.ends_with('\n'), "{h}");
        assert_eq!(b.len(), 10 + hl + 24);
        assert_eq!(f32::from_le_bytes(b[10 + hl + 4..10 + hl + 8].try_into().unwrap()), -2.5);
    }
}
