//! Image references (`HOST[:PORT]/NAME[:TAG|@sha256:...]`), parsed with Docker's rules.

use std::fmt;

use vessel_image::Digest;

/// The registry a reference without a host names.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that serves Docker Hub's distribution API.
const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// Tag used when a reference names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";
/// Longest repository name accepted (Docker's limit on a whole name).
const MAX_NAME: usize = 255;
/// Longest tag accepted.
const MAX_TAG: usize = 128;

/// A reference could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {reference:?}: {reason}")]
pub struct ReferenceError {
    /// The text given.
    pub reference: String,
    /// What is wrong with it, and what a valid one looks like.
    pub reason: String,
}

/// A parsed image reference: registry host, repository, and a tag or a digest (or both).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses `[HOST[:PORT]/]NAME[:TAG][@sha256:HEX]` the way Docker does: no host means
    /// `docker.io` (with `library/` for a single-component name); the first component is a
    /// host when it contains `.` or `:` or is `localhost`; no tag and no digest means `latest`.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let err = |reason: &str| ReferenceError {
            reference: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(err(
                "it is empty; expected HOST[:PORT]/NAME[:TAG|@sha256:DIGEST]",
            ));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err("it contains white space"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => {
                let digest = Digest::parse(d).map_err(|_| {
                    err("the digest after '@' must be sha256: followed by 64 lower-case hex digits")
                })?;
                (rest, Some(digest))
            }
            None => (s, None),
        };
        // A ':' after the last '/' starts the tag; one before it belongs to a host's port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].find(':') {
            Some(i) => {
                let (n, t) = rest.split_at(last_slash + i);
                (n, Some(&t[1..]))
            }
            None => (rest, None),
        };
        if let Some(t) = tag {
            validate_tag(t).map_err(|r| err(&r))?;
        }
        let (registry, repository) = split_host(name);
        let registry = match registry {
            Some(h) => {
                validate_host(h).map_err(|r| err(&r))?;
                if h == "index.docker.io" {
                    DOCKER_HUB.to_string()
                } else {
                    h.to_string()
                }
            }
            None => DOCKER_HUB.to_string(),
        };
        if repository.is_empty() {
            return Err(err("the image name is missing after the host"));
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository.to_string()
        };
        validate_repository(&repository).map_err(|r| err(&r))?;
        if registry.len() + 1 + repository.len() > MAX_NAME {
            return Err(err("the name is longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The registry as written (`docker.io`, `127.0.0.1:5000`, `ghcr.io`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host and port to send API requests to (Docker Hub's API lives on its own host).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// The repository inside the registry (`library/busybox`, `test/app`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, when the reference has one.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, when the reference pins one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to ask the registry's manifest endpoint for: the digest when pinned, else the tag.
    pub fn manifest_ref(&self) -> &str {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.as_str(),
            (None, Some(t)) => t,
            (None, None) => DEFAULT_TAG,
        }
    }

    /// The same repository pinned to `digest` (keeping the tag for display).
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            digest: Some(digest),
            ..self.clone()
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, ReferenceError> {
        Self::parse(s)
    }
}

/// Splits off the host: Docker's `splitDockerDomain`.
fn split_host(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn validate_tag(t: &str) -> Result<(), String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let ok = !t.is_empty()
        && t.len() <= MAX_TAG
        && t.starts_with(word)
        && t.chars().all(|c| word(c) || c == '.' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {t:?} must be 1 to {MAX_TAG} letters, digits, '_', '.' or '-', not starting with '.' or '-'"
        ))
    }
}

fn validate_host(h: &str) -> Result<(), String> {
    let bad =
        || format!("registry host {h:?} is not a host name or address with an optional :PORT");
    let (host, port) = if let Some(v6) = h.strip_prefix('[') {
        let (addr, rest) = v6.split_once(']').ok_or_else(bad)?;
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad());
        }
        match rest {
            "" => (None, None),
            p => (None, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match h.rsplit_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(h), None),
        }
    };
    if let Some(host) = host {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
            return Err(bad());
        }
    }
    if let Some(p) = port {
        if p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()) || p.parse::<u16>().is_err() {
            return Err(format!(
                "port {p:?} of registry {h:?} is not a number up to 65535"
            ));
        }
    }
    Ok(())
}

/// Path components: lower-case letters and digits, separated by one of `.`, `_`, `__` or a
/// run of `-`.
fn validate_repository(r: &str) -> Result<(), String> {
    if r.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("repository name {r:?} must be lower case"));
    }
    for comp in r.split('/') {
        if !component_ok(comp) {
            return Err(format!(
                "repository component {comp:?} must be lower-case letters and digits separated by '.', '_', '__' or '-'"
            ));
        }
    }
    Ok(())
}

fn component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn docker_hub_defaults() {
        let r = p("busybox");
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.repository(), "library/busybox");
        assert_eq!(r.tag(), Some("latest"));
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(p("user/app:1.0").repository(), "user/app");
        assert_eq!(
            p("index.docker.io/busybox").to_string(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(p("docker.io/busybox:1").repository(), "library/busybox");
    }

    #[test]
    fn hosts_ports_tags_and_digests() {
        let r = p("127.0.0.1:5000/test/busybox:1");
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("127.0.0.1:5000", "test/busybox", Some("1"))
        );
        let r = p("localhost/app");
        assert_eq!((r.registry(), r.repository()), ("localhost", "app"));
        let r = p("localhost:5000/app");
        assert_eq!(
            (r.registry(), r.manifest_ref()),
            ("localhost:5000", "latest")
        );
        let r = p("[::1]:5000/a/b:v2");
        assert_eq!((r.registry(), r.repository()), ("[::1]:5000", "a/b"));
        let hex = "a".repeat(64);
        let r = p(&format!("ghcr.io/o/app@sha256:{hex}"));
        assert_eq!(r.tag(), None);
        assert_eq!(r.manifest_ref(), format!("sha256:{hex}"));
        let r = p(&format!("ghcr.io/o/app:v1@sha256:{hex}"));
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.manifest_ref(), format!("sha256:{hex}"));
        assert_eq!(r.to_string(), format!("ghcr.io/o/app:v1@sha256:{hex}"));
        // A first component without '.', ':' or "localhost" is part of the name.
        assert_eq!(p("team/app").registry(), "docker.io");
        assert_eq!(p("ab-c__d/e-f--g.h").repository(), "ab-c__d/e-f--g.h");
    }

    #[test]
    fn bad_references_say_why() {
        for (s, why) in [
            ("", "empty"),
            ("Busybox", "lower case"),
            ("busybox:", "tag"),
            ("busybox:.x", "tag"),
            ("busybox@sha256:abc", "digest"),
            ("busybox@md5:00", "digest"),
            ("ghcr.io/", "missing"),
            ("ghcr.io:99999/a", "port"),
            ("ghcr.io:x/a", "port"),
            ("-bad.io/a", "registry host"),
            ("a//b", "component"),
            ("a/_b", "component"),
            ("a/b..c", "component"),
            ("a b", "white space"),
        ] {
            let e = Reference::parse(s).expect_err(s);
            assert!(e.to_string().contains(why), "{s}: {e}");
        }
        let long = format!("ghcr.io/{}", "a".repeat(260));
        assert!(Reference::parse(&long).is_err());
    }
}
