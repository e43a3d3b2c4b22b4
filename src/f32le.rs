//! f32 tensors as little-endian bytes: the format of checkpoints and of
//! tensors on the wire.

/// The bytes of `v`.
pub fn encode(v: &[f32]) -> Vec<u8> {
    let mut b = Vec::with_capacity(v.len() * 4);
    for x in v {
        b.extend_from_slice(&x.to_le_bytes());
    }
    b
}

/// Decodes exactly `out.len()` floats, or says what is wrong (`what` names the tensor).
pub fn decode(b: &[u8], out: &mut [f32], what: &str) -> Result<(), String> {
    if b.len() != out.len() * 4 {
        return Err(format!("{what}: {} bytes, expected {} ({} floats)", b.len(), out.len() * 4, out.len()));
    }
    for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
        *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
    Ok(())
}

/// The index and value of the first non-finite float in `b` (whole floats only).
pub fn first_non_finite(b: &[u8]) -> Option<(usize, f32)> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).enumerate().find(|(_, x)| !x.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_round_trip_and_sizes_are_checked() {
        let v = [1.5f32, -0.0, f32::MAX, 3e-40];
        let mut out = [0.0f32; 4];
        decode(&encode(&v), &mut out, "t").unwrap();
        assert_eq!(v.map(f32::to_bits), out.map(f32::to_bits));
        assert!(decode(&[0u8; 15], &mut out, "t").unwrap_err().contains("15 bytes"));
        assert_eq!(first_non_finite(&encode(&v)), None);
        let got = first_non_finite(&encode(&[1.0, f32::INFINITY, f32::NAN])).unwrap();
        assert_eq!((got.0, got.1.to_bits()), (1, f32::INFINITY.to_bits()));
    }
}
