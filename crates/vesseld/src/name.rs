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

/// The most `user.*` keys an object carries.
pub const MAX_USER_KEYS: usize = 256;
/// The longest `user.*` key.
pub const MAX_USER_KEY: usize = 128;
/// The longest value of a `user.*` key.
pub const MAX_USER_VALUE: usize = 4096;

/// Checks the free-form labels of a network, pool or volume (a project's settings use it for
/// their `user.*` keys): every key `user.` and then letters, digits, '.', '-' and '_', at
/// most [`MAX_USER_KEY`] characters; values at most [`MAX_USER_VALUE`] bytes; at most
/// [`MAX_USER_KEYS`] of them. Other keys are `kind`'s own settings, which it has none of.
pub fn validate_user_keys<'a>(
    kind: &str,
    keys: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<()> {
    let mut n = 0;
    for (k, v) in keys {
        n += 1;
        let rest = k.strip_prefix("user.").unwrap_or("");
        let ok = !rest.is_empty()
            && k.len() <= MAX_USER_KEY
            && rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !ok {
            return Err(Error::invalid(format!(
                "invalid {kind} key {:?}: a {kind}'s keys are labels, `user.` then letters,                  digits, '.', '-' and '_', {MAX_USER_KEY} characters in all",
                crate::error::truncated(k, 64)
            )));
        }
        if v.len() > MAX_USER_VALUE {
            return Err(Error::invalid(format!(
                "{k}: the value has {} bytes, at most {MAX_USER_VALUE} are allowed",
                v.len()
            )));
        }
    }
    if n > MAX_USER_KEYS {
        return Err(Error::invalid(format!(
            "at most {MAX_USER_KEYS} user.* keys per {kind}"
        )));
    }
    Ok(())
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

    #[test]
    fn labels_are_user_keys_only() {
        let m = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        validate_user_keys(
            "network",
            &m(&[("user.stack", "shop"), ("user.a-b_c.d", "")]),
        )
        .unwrap();
        for bad in [
            "stack",
            "user.",
            "user.a b",
            "limits.cpu",
            &format!("user.{}", "x".repeat(124)),
        ] {
            let e = validate_user_keys("pool", &m(&[(bad, "v")])).unwrap_err();
            assert!(e.message.contains("invalid pool key"), "{bad}: {e}");
        }
        let big = "v".repeat(MAX_USER_VALUE + 1);
        let e = validate_user_keys("volume", &m(&[("user.x", big.as_str())])).unwrap_err();
        assert!(e.message.contains("at most 4096"), "{e}");
        let many: std::collections::BTreeMap<String, String> = (0..=MAX_USER_KEYS)
            .map(|i| (format!("user.k{i}"), String::new()))
            .collect();
        let e = validate_user_keys("volume", &many).unwrap_err();
        assert!(e.message.contains("per volume"), "{e}");
    }
}
