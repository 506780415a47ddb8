//! Identities, settings and the audit log: who may call the API and what they changed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use crate::endpoints::Role;

/// How an identity proves itself.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IdentityKind {
    /// `Authorization: Bearer TOKEN`.
    Token,
    /// A client certificate presented in the TLS handshake (mutual TLS).
    Certificate,
    /// Root on the daemon's host, over the unix socket.
    Host,
    /// Another member of this server's cluster, by the certificate its record in etcd pins
    /// (mutual TLS); an administrator.
    Member,
}

/// One identity (a token or a trusted client certificate); never its secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct Identity {
    /// Unique name.
    pub name: String,
    /// How it authenticates.
    pub kind: IdentityKind,
    /// The project it is bound to (admins reach every project).
    pub project: String,
    /// What it may do.
    #[schema(value_type = String)]
    pub role: Role,
    /// SHA-256 of the client certificate (64 lowercase hex characters), for certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// When it was made (RFC 3339).
    pub created_at: String,
    /// When it stops working (RFC 3339), if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// Request to create a bearer token.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct TokenCreate {
    /// Name of the new identity.
    pub name: String,
    /// Project it is bound to (default "default").
    #[serde(default)]
    pub project: Option<String>,
    /// Role (viewer, user, operator, admin).
    pub role: String,
    /// Lifetime: a number and a unit (s, m, h, d), e.g. "30d"; none means no expiry.
    #[serde(default)]
    pub expires: Option<String>,
}

/// A token just made: the only time the secret is shown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct TokenCreated {
    /// The identity it belongs to.
    pub identity: Identity,
    /// The bearer token (256 random bits, hex); the daemon keeps only its hash.
    pub token: String,
}

/// Request to trust a client certificate.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct CertificateTrust {
    /// Name of the new identity.
    pub name: String,
    /// The certificate, PEM.
    pub certificate: String,
    /// Project it is bound to (default "default").
    #[serde(default)]
    pub project: Option<String>,
    /// Role (viewer, user, operator, admin).
    pub role: String,
    /// Lifetime, as for tokens.
    #[serde(default)]
    pub expires: Option<String>,
}

/// One change recorded in the audit log.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct AuditEntry {
    /// Position in the log.
    pub seq: i64,
    /// When the answer was given (RFC 3339, UTC).
    pub time: String,
    /// Who asked (an identity's name, or "host-root" for the unix socket).
    pub identity: String,
    /// The project the change was made in.
    pub project: String,
    /// The endpoint called (its id in the endpoint table, e.g. "instances_create").
    pub action: String,
    /// Method and path of the request.
    pub target: String,
    /// HTTP status of the answer (2xx done or accepted, 4xx refused, 5xx failed).
    pub status: u16,
}

/// The server's settings, by key; `PATCH /1.0/config` with an empty value unsets a key.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct ServerConfig {
    /// Key to value, e.g. `core.https_address` = `0.0.0.0:8443`.
    #[serde(flatten)]
    pub values: BTreeMap<String, String>,
}

/// Settings the server knows.
pub const CONFIG_KEYS: &[(&str, &str)] = &[(
    "core.https_address",
    "address and port the HTTPS API listens on, e.g. 0.0.0.0:8443 or [::]:8443",
)];

/// Header a remote client sends its token in (`Authorization: Bearer TOKEN`).
pub const AUTHORIZATION_SCHEME: &str = "Bearer";

/// The WebSocket subprotocol the daemon selects on its WebSocket endpoints. A browser, which
/// cannot set an `Authorization` header on a WebSocket, offers it together with
/// [`WS_TOKEN_PREFIX`] followed by its token.
pub const WS_PROTOCOL: &str = "vessel.v1";

/// Prefix of the subprotocol that carries a bearer token on a WebSocket request.
pub const WS_TOKEN_PREFIX: &str = "vessel.token.";
