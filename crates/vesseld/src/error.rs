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
    /// The caller did not prove who it is (401).
    Unauthenticated,
    /// The caller's role does not allow the request (403).
    Forbidden,
    /// A store the request needs does not answer for now; try again later (503).
    Unavailable,
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
    /// A 401: no valid credentials.
    pub fn unauthenticated(m: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Unauthenticated,
            message: m.into(),
        }
    }
    /// A 403: credentials valid, role insufficient.
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Forbidden,
            message: m.into(),
        }
    }
    /// A 503: something the request needs does not answer for now.
    pub fn unavailable(m: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Unavailable,
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

/// Directories of the host whose paths never reach a client: the daemon's own root and run
/// directories (set once at start). Paths like `/proc` or `/sys` are not among them: they
/// name places inside instances too.
static HOST_DIRS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// Records the daemon's directories for [`redact_host_paths`] (first call wins).
pub fn set_host_dirs(dirs: &[&std::path::Path]) {
    let mut v: Vec<String> = dirs
        .iter()
        .map(|d| d.to_string_lossy().trim_end_matches('/').to_string())
        .filter(|d| d.len() > 1)
        .collect();
    // Longest first, so that a nested directory is matched whole.
    v.sort_by_key(|d| std::cmp::Reverse(d.len()));
    let _ = HOST_DIRS.set(v);
}

/// `msg` with every path under the daemon's directories cut to `…/` and its last component:
/// messages say what failed (and which file by name); where, on the host, is for the
/// daemon's log.
pub fn redact_host_paths(msg: &str) -> std::borrow::Cow<'_, str> {
    let Some(dirs) = HOST_DIRS.get() else {
        return msg.into();
    };
    redact_with(msg, dirs)
}

fn redact_with<'a>(msg: &'a str, dirs: &[String]) -> std::borrow::Cow<'a, str> {
    let mut out = String::new();
    let mut rest = msg;
    let mut changed = false;
    'scan: while !rest.is_empty() {
        for d in dirs {
            if let Some(after) = rest.strip_prefix(d.as_str()) {
                let at_boundary = after.is_empty() || after.starts_with('/');
                let before_ok = out
                    .chars()
                    .last()
                    .is_none_or(|c| !(c.is_alphanumeric() || c == '/' || c == '.' || c == '-'));
                if at_boundary && before_ok {
                    let end = after
                        .find(|c: char| {
                            c.is_whitespace() || matches!(c, ':' | '"' | '\'' | ')' | ',')
                        })
                        .unwrap_or(after.len());
                    let last = after[..end]
                        .trim_end_matches('/')
                        .rsplit('/')
                        .next()
                        .unwrap_or_default();
                    out.push_str("…/");
                    out.push_str(last);
                    rest = &after[end..];
                    changed = true;
                    continue 'scan;
                }
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    if changed {
        out.into()
    } else {
        msg.into()
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
            S::Exists(_) | S::Exhausted(_) | S::Changed(_) => ErrorKind::Conflict,
            S::Unavailable(_) => ErrorKind::Unavailable,
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
    fn host_paths_are_hidden() {
        let dirs = vec!["/var/lib/vessel".to_string(), "/run/vessel".to_string()];
        assert_eq!(
            redact_with("writing /run/vessel/monitors/s1.pid: No space left", &dirs),
            "writing …/s1.pid: No space left"
        );
        assert_eq!(
            redact_with("\"/var/lib/vessel/instances/c1\" and /run/vessel", &dirs),
            "\"…/c1\" and …/"
        );
        // Paths inside instances, look-alikes and user paths stay.
        for keep in [
            "cannot open /etc/passwd in c1",
            "volumes cannot be mounted under /proc",
            "/var/lib/vesselx/y",
            "/tmp/run/vessel/x",
            "no such file /home/me/disk.qcow2",
        ] {
            assert_eq!(redact_with(keep, &dirs), keep);
        }
    }

    #[test]
    fn quoted_input_is_bounded() {
        assert_eq!(truncated("web", 8), "web");
        let long = "x".repeat(100_000_000 / 1000);
        let t = truncated(&long, 64);
        assert!(t.len() < 100 && t.ends_with("(100000 bytes)"), "{t}");
        assert_eq!(truncated("äöü", 2), "äö… (6 bytes)");
    }
}
