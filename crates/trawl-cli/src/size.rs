//! Human byte sizes on the command line: `4096`, `256KiB`, `1MiB`, `2G`.

/// Parses a byte size: a number with an optional unit (`B`, `K`/`KiB`,
/// `M`/`MiB`, `G`/`GiB`; powers of 1024, case-insensitive).
pub(crate) fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: usize = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a size (try 4096, 256KiB or 1MiB)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => {
            return Err(format!(
                "unknown size unit '{other}' in '{text}' (use B, KiB, MiB or GiB)"
            ));
        }
    };
    number
        .checked_mul(1usize << shift)
        .ok_or_else(|| format!("'{text}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("256KiB"), Ok(256 * 1024));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert!(parse_size("12XB").unwrap_err().contains("unit"));
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
        assert!(parse_size("").is_err());
    }
}
