//! Who is calling: identities (bearer tokens and trusted client certificates) kept in the
//! store, checked on every request of the HTTPS listener. The unix socket is host root and
//! needs none. A token is 256 random bits shown once; the store keeps its SHA-256 only.
//! Revoking an identity (deleting it) fails its next request, and [`AuthService::until_invalid`]
//! ends its open streams within a second.

pub mod limit;
pub mod tls;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use vessel_api::{CertificateTrust, Identity, IdentityKind, Role, TokenCreate, TokenCreated};

use crate::error::{Error, Result};
use crate::store::{Records, Store};

use vessel_api::DEFAULT_PROJECT;
/// Name of the unix socket's caller in the audit log.
pub const HOST_ROOT: &str = "host-root";
/// How often open streams re-check their identity (revocation also wakes them at once).
const STREAM_CHECK: Duration = Duration::from_secs(1);

/// Who made a request, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The identity's name.
    pub name: String,
    /// How it authenticated.
    pub kind: IdentityKind,
    /// The project it is bound to.
    pub project: String,
    /// What it may do.
    pub role: Role,
    /// The member of the cluster that authenticated it and forwarded its request here, if
    /// one did (the caller is that member's identity, vouched for by the member).
    pub via: Option<String>,
}

/// The header that carries, from one member to another, the caller a forwarded request is
/// made for: JSON of [`Delegated`]. Only a member's certificate makes it count.
pub const ON_BEHALF: &str = "x-vessel-on-behalf";

/// The caller of a forwarded request, as the forwarding member authorized it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Delegated {
    /// The identity's name.
    pub name: String,
    /// How it authenticated there.
    pub kind: IdentityKind,
    /// Its project.
    pub project: String,
    /// Its role.
    pub role: Role,
}

impl Caller {
    /// Whether this request came from another member (as itself or for a caller of its
    /// own): it is answered here and never forwarded again.
    pub fn forwarded(&self) -> bool {
        self.kind == IdentityKind::Member || self.via.is_some()
    }

    /// What a member forwarding this caller's request says of it.
    pub fn delegated(&self) -> Delegated {
        Delegated {
            name: self.name.clone(),
            kind: self.kind,
            project: self.project.clone(),
            role: self.role,
        }
    }

    /// The caller `d` that the member `self` forwarded a request for: its role is the
    /// caller's (never above the member's own).
    pub fn on_behalf(&self, d: Delegated) -> Caller {
        Caller {
            name: d.name,
            kind: d.kind,
            project: d.project,
            role: d.role.min(self.role),
            via: Some(self.name.clone()),
        }
    }

    /// Root on the host, over the unix socket.
    pub fn host_root() -> Self {
        Caller {
            name: HOST_ROOT.into(),
            kind: IdentityKind::Host,
            project: DEFAULT_PROJECT.into(),
            role: Role::Admin,
            via: None,
        }
    }

    /// The identity as the API shows it.
    pub fn identity(&self) -> Identity {
        Identity {
            name: self.name.clone(),
            kind: self.kind,
            project: self.project.clone(),
            role: self.role,
            fingerprint: None,
            created_at: String::new(),
            expires_at: None,
        }
    }
}

/// What the listener knows of a connection's other end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// The unix socket: root on the host.
    Local,
    /// A TLS client.
    Remote {
        /// Source address (rate limits are per address).
        addr: IpAddr,
        /// Fingerprint of the client certificate it presented, if any.
        certificate: Option<String>,
    },
}

/// An identity as stored: what the API shows plus the hash of its token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    identity: Identity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_sha256: Option<String>,
}

impl Stored {
    /// The key it is found by: `token:<sha256>` or `cert:<fingerprint>`.
    fn secret_key(&self) -> Option<String> {
        match (&self.token_sha256, &self.identity.fingerprint) {
            (Some(h), _) => Some(format!("token:{h}")),
            (None, Some(f)) => Some(format!("cert:{f}")),
            _ => None,
        }
    }

    fn expired(&self, now: OffsetDateTime) -> bool {
        self.identity
            .expires_at
            .as_deref()
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
            .is_some_and(|t| t <= now)
    }
}

#[derive(Default)]
struct Table {
    by_name: BTreeMap<String, Stored>,
    by_secret: HashMap<String, String>,
}

impl Table {
    fn add(&mut self, s: Stored) {
        if let Some(k) = s.secret_key() {
            self.by_secret.insert(k, s.identity.name.clone());
        }
        self.by_name.insert(s.identity.name.clone(), s);
    }
}

/// Identities and the checks made with them.
#[derive(Clone)]
pub struct AuthService {
    records: Records<Stored>,
    table: Arc<RwLock<Table>>,
    revoked: Arc<tokio::sync::watch::Sender<u64>>,
    failures: Arc<limit::FailureLimiter>,
    /// The cluster's members by certificate fingerprint (none outside a cluster).
    members: Arc<RwLock<HashMap<String, String>>>,
}

/// Why a remote request was turned away before its handler.
#[derive(Debug)]
pub enum Denied {
    /// No valid credentials (401).
    Unauthenticated(String),
    /// Too many failures from this address (429), for this long.
    TooMany(Duration),
}

impl AuthService {
    /// The identities in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        let records = Records::new(store, "identity");
        let (revoked, _) = tokio::sync::watch::channel(0);
        let s = AuthService {
            records,
            table: Arc::default(),
            revoked: Arc::new(revoked),
            failures: Arc::default(),
            members: Arc::default(),
        };
        s.reload();
        s
    }

    fn reload(&self) {
        // Read under the table's lock: a revocation here (which changes the table under
        // it, after the store) cannot be undone by a reload that read the store before it.
        let mut held = self.table.write().unwrap_or_else(|p| p.into_inner());
        let mut table = Table::default();
        match self.records.entries() {
            Ok(entries) => {
                for (key, v) in entries {
                    match v {
                        Ok(s) => table.add(s),
                        Err(e) => {
                            tracing::warn!(identity = %key, error = %e, "unreadable identity ignored")
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read identities; remote access is closed")
            }
        }
        *held = table;
    }

    /// Reads the identities again after another cluster member changed them; open streams
    /// of an identity revoked there close.
    pub fn reload_shared(&self) {
        self.reload();
        self.revoked.send_modify(|n| *n += 1);
    }

    /// The cluster's members, by the fingerprint of the certificate each one's record pins:
    /// a client presenting one of them is that member, an administrator. Replaces the
    /// previous set (a removed member is refused from then on).
    pub fn set_members(&self, members: HashMap<String, String>) {
        *self.members.write().unwrap_or_else(|p| p.into_inner()) = members;
    }

    fn member(&self, fingerprint: &str) -> Option<Caller> {
        let members = self.members.read().unwrap_or_else(|p| p.into_inner());
        members.get(fingerprint).map(|name| Caller {
            name: name.clone(),
            kind: IdentityKind::Member,
            project: DEFAULT_PROJECT.into(),
            role: Role::Member,
            via: None,
        })
    }

    /// The caller of a request from `peer` carrying `authorization` (the header's value).
    pub fn authenticate(
        &self,
        peer: &Peer,
        authorization: Option<&[u8]>,
    ) -> std::result::Result<Caller, Denied> {
        let (addr, certificate) = match peer {
            Peer::Local => return Ok(Caller::host_root()),
            Peer::Remote { addr, certificate } => (*addr, certificate),
        };
        let now = Instant::now();
        if let Some(wait) = self.failures.blocked(addr, now) {
            return Err(Denied::TooMany(wait));
        }
        if let (None, Some(f)) = (authorization, certificate) {
            if let Some(member) = self.member(f) {
                return Ok(member);
            }
        }
        let found = match (authorization, certificate) {
            (Some(h), _) => bearer(h).map(|t| format!("token:{}", token_hash(t))),
            (None, Some(f)) => Ok(format!("cert:{f}")),
            (None, None) => Err(
                "authentication required: send `Authorization: Bearer TOKEN` or a trusted client \
                 certificate (see `vessel remote add --help`)"
                    .to_string(),
            ),
        }
        .and_then(|key| self.lookup(&key, authorization.is_some()));
        found.map_err(|m| {
            self.failures.failed(addr, now);
            Denied::Unauthenticated(m)
        })
    }

    fn lookup(&self, key: &str, token: bool) -> std::result::Result<Caller, String> {
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        let stored = table
            .by_secret
            .get(key)
            .and_then(|name| table.by_name.get(name));
        let Some(s) = stored else {
            return Err(if token {
                "the bearer token is not valid (mistyped, revoked or never made); ask an admin for \
                 one: vessel auth token create"
                    .into()
            } else {
                "the client certificate is not trusted; an admin trusts it with: vessel auth trust \
                 add CERT.pem"
                    .into()
            });
        };
        if s.expired(OffsetDateTime::now_utc()) {
            return Err(format!(
                "the identity {:?} expired at {}; ask an admin for a new one",
                s.identity.name,
                s.identity.expires_at.as_deref().unwrap_or("?")
            ));
        }
        Ok(caller_of(&s.identity))
    }

    /// Whether `caller` is still who it was: not revoked, not expired.
    pub fn still_valid(&self, caller: &Caller) -> bool {
        // A caller another member vouches for: valid while that member is (its own
        // streams there end when the caller is revoked there).
        if let Some(member) = &caller.via {
            let members = self.members.read().unwrap_or_else(|p| p.into_inner());
            return members.values().any(|n| n == member);
        }
        if caller.kind == IdentityKind::Host {
            return true;
        }
        if caller.kind == IdentityKind::Member {
            let members = self.members.read().unwrap_or_else(|p| p.into_inner());
            return members.values().any(|n| *n == caller.name);
        }
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        table.by_name.get(&caller.name).is_some_and(|s| {
            !s.expired(OffsetDateTime::now_utc()) && caller_of(&s.identity) == *caller
        })
    }

    /// Completes once `caller` is revoked or expires (never for host root): open streams
    /// select on it and close.
    pub async fn until_invalid(&self, caller: Caller) {
        if caller.kind == IdentityKind::Host && caller.via.is_none() {
            return std::future::pending().await;
        }
        let mut revoked = self.revoked.subscribe();
        while self.still_valid(&caller) {
            tokio::select! {
                _ = revoked.changed() => {}
                _ = tokio::time::sleep(STREAM_CHECK) => {}
            }
        }
        tracing::info!(identity = %caller.name, "closing a stream: its identity was revoked or expired");
    }

    /// Every identity, by name.
    pub fn list(&self) -> Vec<Identity> {
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        table.by_name.values().map(|s| s.identity.clone()).collect()
    }

    /// Makes a token identity; the answer carries the token, which is not kept.
    pub fn create_token(&self, req: &TokenCreate) -> Result<TokenCreated> {
        let mut identity = self.new_identity(
            &req.name,
            IdentityKind::Token,
            req.project.as_deref(),
            &req.role,
            req.expires.as_deref(),
        )?;
        let token = new_token()?;
        identity.fingerprint = None;
        let stored = Stored {
            identity: identity.clone(),
            token_sha256: Some(token_hash(&token)),
        };
        self.insert(stored)?;
        Ok(TokenCreated { identity, token })
    }

    /// Trusts a client certificate by its fingerprint.
    pub fn trust_certificate(&self, req: &CertificateTrust) -> Result<Identity> {
        let certs = tls::certificates_from_pem(req.certificate.as_bytes())?;
        let fingerprint = tls::fingerprint(&certs[0]);
        let mut identity = self.new_identity(
            &req.name,
            IdentityKind::Certificate,
            req.project.as_deref(),
            &req.role,
            req.expires.as_deref(),
        )?;
        {
            let table = self.table.read().unwrap_or_else(|p| p.into_inner());
            if let Some(other) = table.by_secret.get(&format!("cert:{fingerprint}")) {
                return Err(Error::conflict(format!(
                    "this certificate is trusted already, as {other:?}; revoke that first to \
                     change its role"
                )));
            }
        }
        identity.fingerprint = Some(fingerprint);
        self.insert(Stored {
            identity: identity.clone(),
            token_sha256: None,
        })?;
        Ok(identity)
    }

    fn new_identity(
        &self,
        name: &str,
        kind: IdentityKind,
        project: Option<&str>,
        role: &str,
        expires: Option<&str>,
    ) -> Result<Identity> {
        crate::name::validate_name("identity", name)?;
        if name == HOST_ROOT {
            return Err(Error::invalid(format!(
                "{HOST_ROOT} is the unix socket's name; pick another"
            )));
        }
        let role = Role::parse(role).map_err(Error::invalid)?;
        // That the project exists is the caller's to check (`ProjectService`).
        let project = project.unwrap_or(DEFAULT_PROJECT);
        crate::name::validate_name_within("project", project, crate::project::MAX_PROJECT_NAME)?;
        let now = OffsetDateTime::now_utc();
        let expires_at = match expires {
            None => None,
            Some(e) => Some(rfc3339(now + parse_lifetime(e)?)),
        };
        Ok(Identity {
            name: name.into(),
            kind,
            project: project.into(),
            role,
            fingerprint: None,
            created_at: rfc3339(now),
            expires_at,
        })
    }

    // The store is written without the table's lock held: in a cluster that write waits
    // for etcd, and every request's authentication reads the table meanwhile. The store
    // refuses a name taken meanwhile (here or on another member).
    fn insert(&self, s: Stored) -> Result<()> {
        let exists = || {
            Error::conflict(format!(
                "an identity named {:?} exists already; pick another name or revoke it first",
                s.identity.name
            ))
        };
        if self
            .table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_name
            .contains_key(&s.identity.name)
        {
            return Err(exists());
        }
        self.records
            .insert(&s.identity.name, &s)
            .map_err(|e| match e {
                crate::store::StoreError::Exists(_) => exists(),
                e => stored(e, "storing the identity"),
            })?;
        self.table.write().unwrap_or_else(|p| p.into_inner()).add(s);
        Ok(())
    }

    /// Revokes an identity: its next request fails and its open streams close.
    pub fn revoke(&self, name: &str) -> Result<Identity> {
        let Some(s) = self
            .table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_name
            .get(name)
            .cloned()
        else {
            return Err(Error::not_found(format!("identity {name:?} not found")));
        };
        self.records
            .delete(name)
            .map_err(|e| stored(e, "removing the identity"))?;
        let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = s.secret_key() {
            table.by_secret.remove(&k);
        }
        table.by_name.remove(name);
        drop(table);
        self.revoked.send_modify(|n| *n += 1);
        Ok(s.identity)
    }
}

/// A store error of an identity's change: as it is (a name taken on another member, etcd
/// out of reach, ...), with `what` said of a failure of the host.
fn stored(e: crate::store::StoreError, what: &str) -> Error {
    let mut e: Error = e.into();
    if e.kind == crate::error::ErrorKind::Internal {
        e.message = format!("{what}: {}", e.message);
    }
    e
}

fn caller_of(i: &Identity) -> Caller {
    Caller {
        name: i.name.clone(),
        kind: i.kind,
        project: i.project.clone(),
        role: i.role,
        via: None,
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// The token of an `Authorization` header's value, which must be `Bearer TOKEN`.
fn bearer(header: &[u8]) -> std::result::Result<&str, String> {
    let bad = || {
        "the Authorization header must be `Bearer TOKEN` (the token `vessel auth token create` \
         printed)"
            .to_string()
    };
    let text = std::str::from_utf8(header).map_err(|_| bad())?;
    let (scheme, token) = text.split_once(' ').ok_or_else(bad)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case(vessel_api::AUTHORIZATION_SCHEME) || token.is_empty() {
        return Err(bad());
    }
    Ok(token)
}

/// What the store keeps of a token.
fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// 256 random bits as hex behind a recognisable prefix.
fn new_token() -> Result<String> {
    Ok(format!("vessel_{}", random_hex(32)?))
}

/// `n` random bytes from the ring provider's generator, as hex.
pub fn random_hex(n: usize) -> Result<String> {
    let mut bytes = vec![0u8; n];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| Error::internal("the system's random generator failed"))?;
    Ok(hex::encode(bytes))
}

/// A lifetime such as `30d`, `12h`, `15m` or `90s`.
pub fn parse_lifetime(s: &str) -> Result<time::Duration> {
    let bad = || {
        Error::invalid(format!(
            "the lifetime {s:?} does not parse: give a whole number and a unit (s, m, h or d), \
             e.g. 30d"
        ))
    };
    let unit = s.chars().last().ok_or_else(bad)?;
    let n: i64 = s[..s.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
    let secs = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    if n <= 0 || n > 100 * 365 * 86_400 / secs {
        return Err(bad());
    }
    Ok(time::Duration::seconds(n * secs))
}

#[cfg(test)]
mod tests;
