//! Names of objects. Instances, networks, pools, volumes, snapshots and exports share one
//! rule, what DNS allows in one label, so a name can become a host name, a path component
//! and part of a kernel object's name.

use crate::error::{Error, Result};

/// The longest name: one DNS label.
pub const MAX_NAME: usize = 63;

/// Checks the name of an object of `kind` ("instance", "volume", ...): 1-63 letters, digits
/// and '-', starting with a letter and not ending with '-'.
pub fn validate_name(kind: &str, name: &str) -> Result<()> {
    validate_name_within(kind, name, MAX_NAME)
}

/// The same rule for a kind whose names become part of a kernel object's name, and so must
/// be shorter: at most `max` bytes.
pub fn validate_name_within(kind: &str, name: &str, max: usize) -> Result<()> {
    let ok = (1..=max.min(MAX_NAME)).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && !name.ends_with('-')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid {kind} name {:?}: use 1-{max} letters, digits and '-', starting with \
             a letter and not ending with '-'",
            crate::error::truncated(name, MAX_NAME + 1)
        )))
    }
}

/// Checks a qualified name (`NAME`, or `PROJECT.NAME` for a project other than `default`,
/// see `project::qualify`): each part follows the rule of names.
pub fn validate_qualified(kind: &str, qualified: &str) -> Result<()> {
    let (project, name) = crate::project::split(qualified);
    if project != vessel_api::DEFAULT_PROJECT || qualified.contains('.') {
        validate_name_within("project", project, crate::project::MAX_PROJECT_NAME)?;
    }
    validate_name(kind, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_dns_label() {
        for ok in ["c1", "web-01", "a", &"x".repeat(63)] {
            validate_name("instance", ok).unwrap();
        }
        for bad in [
            "",
            "1c",
            "c_1",
            "c-",
            "a/b",
            &"x".repeat(64),
            "..",
            "c 1",
            "-a",
            "é",
        ] {
            assert!(validate_name("instance", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_error_names_the_kind() {
        let e = validate_name("volume", "a_b").unwrap_err();
        assert!(e.message.starts_with("invalid volume name \"a_b\""), "{e}");
        assert_eq!(e.kind, crate::error::ErrorKind::Invalid);
        let e = validate_name_within("network", "abcdefghijkl", 11).unwrap_err();
        assert!(e.message.contains("use 1-11 letters"), "{e}");
        validate_name_within("network", "abcdefghijk", 11).unwrap();
    }
}
