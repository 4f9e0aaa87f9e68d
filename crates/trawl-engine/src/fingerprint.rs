//! Stable fingerprints of findings.

use sha2::{Digest, Sha256};

/// The fingerprint of a secret found by a rule: SHA-256 over the rule id's
/// bytes, one NUL byte, then the secret's bytes.
///
/// The NUL separator keeps `("ab", "c")` and `("a", "bc")` apart (rule ids
/// never contain NUL). Fingerprints let a finding be recognised across scans,
/// chunkings and locations without storing the secret itself.
pub fn fingerprint(rule_id: &str, secret: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(rule_id.as_bytes());
    hasher.update([0u8]);
    hasher.update(secret);
    hasher.finalize().into()
}

/// [`fingerprint`] as 64 lowercase hex digits.
///
/// ```
/// let hex = trawl_engine::fingerprint_hex("jwt", b"secret");
/// assert_eq!(hex.len(), 64);
/// ```
pub fn fingerprint_hex(rule_id: &str, secret: &[u8]) -> String {
    use std::fmt::Write;
    fingerprint(rule_id, secret)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // SHA-256("a\0b"), as computed by `printf 'a\0b' | sha256sum`.
        assert_eq!(
            fingerprint_hex("a", b"b"),
            "59b271ae1bbcb1d31d41929817f4b16fb439eb4f31520b5ad1d5ce98920a7138"
        );
        assert_eq!(
            fingerprint_hex("github-pat", b"ghp_x"),
            "1c7d5d88d2b4c127a4982f8bbc040a8fab78a5c0c17db7963af1c47a37ae5b52"
        );
        assert_ne!(fingerprint("ab", b"c"), fingerprint("a", b"bc"));
    }
}
