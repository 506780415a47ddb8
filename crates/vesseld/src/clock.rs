//! Time stamps of records and events.

/// Current time, RFC 3339, UTC.
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A time in seconds since the epoch, RFC 3339, UTC.
pub fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn now_is_rfc3339_utc() {
        let t = super::now();
        // 2024-05-01T12:34:56.789Z
        assert_eq!(t.get(4..5), Some("-"), "{t}");
        assert_eq!(t.get(10..11), Some("T"), "{t}");
        assert!(t.ends_with('Z'), "{t}");
    }
}
