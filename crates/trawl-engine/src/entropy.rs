//! Shannon entropy of a byte string.

/// The Shannon entropy of `bytes`, in bits per byte (0.0 to 8.0).
///
/// Computed over the byte-value distribution, as gitleaks does over the
/// characters of a secret: `"aaaa"` has entropy 0, `"abcd"` has 2. An empty
/// input has entropy 0.
///
/// ```
/// use trawl_engine::shannon_entropy;
/// assert_eq!(shannon_entropy(b"aaaa"), 0.0);
/// assert!((shannon_entropy(b"abcd") - 2.0).abs() < 1e-9);
/// ```
pub fn shannon_entropy(bytes: &[u8]) -> f64 {
    if bytes.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in bytes {
        counts[usize::from(b)] += 1;
    }
    let len = bytes.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / len;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::shannon_entropy;

    #[test]
    fn known_values() {
        assert_eq!(shannon_entropy(b""), 0.0);
        assert_eq!(shannon_entropy(b"zzzzzzzz"), 0.0);
        assert!((shannon_entropy(b"ab") - 1.0).abs() < 1e-12);
        assert!((shannon_entropy(b"abcdefgh") - 3.0).abs() < 1e-12);
        let all: Vec<u8> = (0..=255).collect();
        assert!((shannon_entropy(&all) - 8.0).abs() < 1e-12);
        // Order does not matter, only the distribution.
        assert_eq!(shannon_entropy(b"aabbc"), shannon_entropy(b"cbaba"));
    }
}
