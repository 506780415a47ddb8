//! Sizes as people write them (`256MiB`, `1.5GB`, `4096`), for limits and quotas.

/// Parses a size such as `256MiB`, `1.5GB` or `4096` (bytes).
pub fn parse_size(value: &str) -> Result<u64, String> {
    let value = value.trim();
    let split = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1000,
        "KiB" => 1 << 10,
        "MB" => 1000 * 1000,
        "MiB" => 1 << 20,
        "GB" => 1000 * 1000 * 1000,
        "GiB" => 1 << 30,
        "TB" => 1000 * 1000 * 1000 * 1000,
        "TiB" => 1 << 40,
        other => {
            return Err(format!(
                "unknown unit '{other}'; use B, KiB, MiB, GiB, TiB (or KB, MB, GB, TB for powers of 1000)"
            ))
        }
    };
    if number.is_empty() {
        return Err(format!("'{value}' has no number; use e.g. 256MiB"));
    }
    if let Ok(n) = number.parse::<u64>() {
        return n
            .checked_mul(multiplier)
            .ok_or_else(|| format!("'{value}' is too large"));
    }
    let n: f64 = number
        .parse()
        .map_err(|_| format!("'{number}' is not a number"))?;
    let bytes = n * multiplier as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("'{value}' is too large"));
    }
    if bytes.fract() != 0.0 {
        return Err(format!("'{value}' is not a whole number of bytes"));
    }
    Ok(bytes as u64)
}

/// A size written back exactly, in the largest binary unit that divides it (`256MiB`,
/// `1536KiB`, `1000`): what [`parse_size`] reads back to the same number.
pub fn format_size(n: u64) -> String {
    const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
    for (unit, shift) in UNITS {
        if n != 0 && n.is_multiple_of(1u64 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

#[cfg(test)]
mod format_tests {
    use super::*;

    #[test]
    fn sizes_written_back_read_back_the_same() {
        for (n, s) in [
            (256 << 20, "256MiB"),
            (1536 << 10, "1536KiB"),
            (1000, "1000"),
            (0, "0"),
            (3 << 40, "3TiB"),
        ] {
            assert_eq!(format_size(n), s);
            assert_eq!(parse_size(s).unwrap(), n);
        }
    }
}
