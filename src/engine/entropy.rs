//! Shannon entropy of a candidate secret, in bits per byte.
//!
//! Used as a floor on keyword-context and generic rules: `password = "changeme"` scores ~2.8,
//! a random base62 token of 32 chars ~4.8. Computed over bytes with a fixed 256-entry table, so it
//! costs one pass over the (short) secret and no allocation.

pub fn shannon(bytes: &[u8]) -> f64 {
    if bytes.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in bytes {
        counts[b as usize] += 1;
    }
    let n = bytes.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::shannon;

    #[test]
    fn known_values() {
        assert_eq!(shannon(b""), 0.0);
        assert_eq!(shannon(b"aaaa"), 0.0);
        assert!((shannon(b"ab") - 1.0).abs() < 1e-9);
        assert!((shannon(b"abcd") - 2.0).abs() < 1e-9);
        assert!(shannon(b"changeme") < 3.0);
        assert!(shannon(b"q8Zr3LmX0pV7tYb2Nw5Kc9Hs1Dg4Fj6A") > 4.5);
    }
}
