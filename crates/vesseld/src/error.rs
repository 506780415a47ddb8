//! Errors of the daemon's services. Each kind maps to one HTTP status in the API layer; the
//! message is shown to the user as is, so it says what failed and what to do.

/// What kind of failure, which decides the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or a value is out of range (400).
    Invalid,
    /// No such object (404).
    NotFound,
    /// The object's current state forbids the request, or the name is taken (409).
    Conflict,
    /// Something on the host failed (500).
    Internal,
}

/// A service error with a message for people.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    /// Kind of failure.
    pub kind: ErrorKind,
    /// What failed and what to do.
    pub message: String,
}

impl Error {
    /// A 400-class error.
    pub fn invalid(m: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Invalid,
            message: m.into(),
        }
    }
    /// A 404-class error.
    pub fn not_found(m: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::NotFound,
            message: m.into(),
        }
    }
    /// A 409-class error.
    pub fn conflict(m: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Conflict,
            message: m.into(),
        }
    }
    /// A 500-class error.
    pub fn internal(m: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Internal,
            message: m.into(),
        }
    }
}

/// `s` cut to at most `max` characters (with "…" and the full length when cut), for error
/// messages that quote user input: no message echoes an unbounded field back.
pub fn truncated(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((end, _)) => format!("{}… ({} bytes)", &s[..end], s.len()),
    }
}

/// Formats an error and its sources as one line ("a: b: c").
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = c.source();
    }
    s
}

impl From<crate::store::StoreError> for Error {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError as S;
        let kind = match &e {
            S::NotFound(_) => ErrorKind::NotFound,
            S::Exists(_) | S::Exhausted(_) => ErrorKind::Conflict,
            _ => ErrorKind::Internal,
        };
        Self {
            kind,
            message: chain(&e),
        }
    }
}

/// Result of service calls.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_input_is_bounded() {
        assert_eq!(truncated("web", 8), "web");
        let long = "x".repeat(100_000_000 / 1000);
        let t = truncated(&long, 64);
        assert!(t.len() < 100 && t.ends_with("(100000 bytes)"), "{t}");
        assert_eq!(truncated("äöü", 2), "äö… (6 bytes)");
    }
}
