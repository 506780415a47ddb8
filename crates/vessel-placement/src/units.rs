//! How figures read in messages: cores with up to two decimals, bytes in binary units.

/// Cores for a message: "1 core", "0.31 cores", "4 cores".
pub(crate) fn cores(x: f64) -> String {
    let s = trimmed(x, 2);
    if s == "1" {
        "1 core".to_string()
    } else {
        format!("{s} cores")
    }
}

/// Bytes for a message in binary units: "512 MiB", "1.5 GiB", "0 B".
pub(crate) fn bytes(b: u64) -> String {
    bytes_f(b as f64)
}

/// [`bytes`] of a figure that may have a fraction (a percentile of samples).
pub(crate) fn bytes_f(b: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b;
    let mut unit = 0;
    while v.abs() >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    let decimals = if unit == 0 || v.abs() >= 100.0 { 0 } else { 1 };
    format!("{} {}", trimmed(v, decimals), UNITS[unit])
}

/// A fraction as a whole percentage: 0.2 → "20 %".
pub(crate) fn percent(f: f64) -> String {
    format!("{} %", trimmed(f * 100.0, 0))
}

/// `x` with at most `decimals` decimals, trailing zeros dropped.
pub(crate) fn trimmed(x: f64, decimals: usize) -> String {
    let s = format!("{x:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    if s == "-0" {
        "0".to_string()
    } else {
        s
    }
}

/// A count with its noun, plural when it is not one: "1 member", "3 members".
pub(crate) fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_as_a_person_writes_them() {
        assert_eq!(cores(1.0), "1 core");
        assert_eq!(cores(0.314), "0.31 cores");
        assert_eq!(cores(4.0), "4 cores");
        assert_eq!(cores(-0.0001), "0 cores");
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(512 << 20), "512 MiB");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
        assert_eq!(bytes(1000), "1000 B");
        assert_eq!(bytes(4 << 30), "4 GiB");
        assert_eq!(percent(0.2), "20 %");
        assert_eq!(count(1, "member"), "1 member");
        assert_eq!(count(2, "member"), "2 members");
    }
}
