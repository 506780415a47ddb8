//! Percent-encoding of path segments and query values for the API's request targets.

use std::fmt::Write as _;

/// Characters left as they are in a query value; everything else is percent-encoded.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/')
}

/// Percent-encodes a query value or a path segment (RFC 3986 unreserved set, plus `/`).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if is_unreserved(b) {
            out.push(b as char);
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Percent-encodes one path segment: like [`percent_encode`] but `/` is encoded too.
pub fn encode_segment(s: &str) -> String {
    percent_encode(s).replace('/', "%2F")
}

/// Builds `path?k=v&...` with every value percent-encoded.
pub fn with_query(path: &str, query: &[(&str, String)]) -> String {
    let mut out = path.to_string();
    for (i, (k, v)) in query.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(k);
        out.push('=');
        out.push_str(&percent_encode(v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            with_query(
                "/1.0/instances/c1/files",
                &[("path", "/tmp/a b&c=d%é".into()), ("mode", "0644".into())]
            ),
            "/1.0/instances/c1/files?path=/tmp/a%20b%26c%3Dd%25%C3%A9&mode=0644"
        );
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
    }
}
