//! f32 tensors as little-endian bytes: the format of checkpoints and of
//! tensors on the wire.  On little-endian targets a tensor's bytes are its
//! memory, so encoding and decoding are one copy; elsewhere each float is
//! converted (the portable fallback, same bytes).

/// The bytes of `v`.
pub fn encode(v: &[f32]) -> Vec<u8> {
    let mut b = Vec::with_capacity(v.len() * 4);
    extend(&mut b, v);
    b
}

/// Appends the bytes of `v` to `b`.
pub fn extend(b: &mut Vec<u8>, v: &[f32]) {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: f32 has no padding and any initialized memory is valid as u8
        // (alignment 1); the slice covers exactly `v`'s bytes.
        let bytes = unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) };
        b.extend_from_slice(bytes);
    }
    #[cfg(not(target_endian = "little"))]
    for x in v {
        b.extend_from_slice(&x.to_le_bytes());
    }
}

/// Decodes exactly `out.len()` floats, or says what is wrong (`what` names the tensor).
pub fn decode(b: &[u8], out: &mut [f32], what: &str) -> Result<(), String> {
    if b.len() != out.len() * 4 {
        return Err(format!("{what}: {} bytes, expected {} ({} floats)", b.len(), out.len() * 4, out.len()));
    }
    copy_into(b, out);
    Ok(())
}

/// Decodes `b` into `out`; the lengths must already match (4 bytes per float).
pub(crate) fn copy_into(b: &[u8], out: &mut [f32]) {
    assert_eq!(b.len(), out.len() * 4, "f32le::copy_into: byte and float counts differ");
    #[cfg(target_endian = "little")]
    {
        // SAFETY: every bit pattern is a valid f32; the slice covers exactly
        // `out`'s bytes, and u8 has alignment 1.
        let dst = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(out)) };
        dst.copy_from_slice(b);
    }
    #[cfg(not(target_endian = "little"))]
    for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
        *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
}

/// The floats of `b` (whole floats only).
pub fn iter(b: &[u8]) -> impl Iterator<Item = f32> + '_ {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

/// The index and value of the first non-finite float in `b` (whole floats only).
pub fn first_non_finite(b: &[u8]) -> Option<(usize, f32)> {
    // All exponent bits set: inf or NaN.  Blocks are scanned without early
    // exit (which vectorizes); only a block with a hit is searched.
    const EXP: u32 = 0x7f80_0000;
    const BLOCK: usize = 1024;
    let bits = |c: &[u8]| u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    let whole = &b[..b.len() / 4 * 4];
    for (k, block) in whole.chunks(BLOCK * 4).enumerate() {
        let any = block.chunks_exact(4).fold(0u32, |a, c| a | u32::from(bits(c) & EXP == EXP));
        if any != 0 {
            let i = block.chunks_exact(4).position(|c| bits(c) & EXP == EXP).expect("a hit in this block");
            return Some((k * BLOCK + i, f32::from_bits(bits(&block[i * 4..]))));
        }
    }
    None
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

    #[test]
    fn bytes_are_little_endian_and_late_non_finite_values_are_found() {
        assert_eq!(encode(&[1.0f32, -2.5]), [1.0f32.to_le_bytes(), (-2.5f32).to_le_bytes()].concat());
        let mut v = vec![0.5f32; 5000];
        v[3001] = f32::NEG_INFINITY;
        v[4000] = f32::NAN;
        let got = first_non_finite(&encode(&v)).unwrap();
        assert_eq!((got.0, got.1), (3001, f32::NEG_INFINITY));
        // A trailing partial float is not a float.
        let mut b = encode(&v[..10]);
        b.push(0xff);
        assert_eq!(first_non_finite(&b), None);
        let mut out = vec![0.0f32; 5000];
        decode(&encode(&v), &mut out, "t").unwrap();
        assert_eq!(
            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            out.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }
}
