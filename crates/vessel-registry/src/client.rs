//! The HTTP side: options, plain HTTP or TLS per host, authentication and status mapping.

use std::collections::{BTreeMap, HashMap};
use std::error::Error as _;
use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

use tracing::debug;

use crate::auth::{parse_challenges, Challenge, Credentials, TokenResponse};
use crate::error::{RegistryError, Result};
use crate::reference::Reference;

/// Largest token server answer read.
const MAX_TOKEN_BYTES: u64 = 1 << 20;
/// Largest error body read for its message.
const MAX_ERROR_BYTES: u64 = 64 << 10;

/// How a [`Client`] talks to registries.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Registries spoken to over plain HTTP, as `host:port` (that port only) or `host` (any
    /// port). Every other registry, loopback ones included, is spoken to over TLS.
    pub insecure_hosts: Vec<String>,
    /// Credentials per registry (`host[:port]` as in references, `docker.io` for Docker Hub),
    /// sent as basic auth or to the registry's token server.
    pub credentials: BTreeMap<String, Credentials>,
    /// Longest wait for a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of an answer (blobs have no overall limit).
    pub read_timeout: Duration,
    /// Longest time for a whole small request (manifests, tokens).
    pub request_timeout: Duration,
    /// `User-Agent` header.
    pub user_agent: String,
    /// Largest manifest or index accepted, in bytes.
    pub max_manifest_bytes: u64,
    /// Largest image config accepted, in bytes.
    pub max_config_bytes: u64,
    /// How often a blob download interrupted by the network is resumed within one pull.
    pub retries: u32,
    /// Largest blob a manifest may announce.
    pub max_blob_bytes: u64,
    /// Most layers an image may have (more cannot be stacked into an instance's root).
    pub max_layers: usize,
    /// A blob must bring at least `min_window_bytes` in every window of this length.
    pub stall_window: Duration,
    /// Bytes expected per `stall_window` (a registry that trickles is stalled).
    pub min_window_bytes: u64,
    /// Time every blob may take, on top of its size at `min_average_rate`.
    pub blob_time_base: Duration,
    /// Slowest average rate, bytes per second, a blob download may have.
    pub min_average_rate: u64,
    /// Free space to keep on the store's file system.
    pub space: vessel_image::SpaceLimits,
    /// Most redirects followed for one request.
    pub max_redirects: u32,
    /// Downloads and verifies a blob the store has already too (a store several tenants
    /// share: a manifest naming a digest is not the registry having its content).
    pub verify_stored: bool,
    /// Whether a registry, a token server or a redirect's target may be at an address of
    /// this host (loopback, an interface's own) or of its link (link-local, the cloud's
    /// metadata service at 169.254.169.254), or at an unspecified, multicast or broadcast
    /// one. `false` for pulls made for a tenant: they must not reach the host's own
    /// services. Checked on every address a name resolves to, at each connection.
    pub reach_local: bool,
    /// Networks no registry, token server or redirect may be in, as (address, prefix
    /// length): for a tenant's pull, the networks of the host's instances (other
    /// projects', which their isolation keeps the tenant from).
    pub unreachable: Vec<(std::net::IpAddr, u8)>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            insecure_hosts: Vec::new(),
            credentials: BTreeMap::new(),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(120),
            user_agent: format!("vessel/{}", env!("CARGO_PKG_VERSION")),
            max_manifest_bytes: 4 << 20,
            max_config_bytes: 16 << 20,
            retries: 3,
            max_blob_bytes: 64 << 30,
            max_layers: vessel_image::archive::OVERLAY_MAX_STACK,
            stall_window: Duration::from_secs(30),
            min_window_bytes: 32 << 10,
            blob_time_base: Duration::from_secs(600),
            min_average_rate: 256 << 10,
            space: vessel_image::SpaceLimits::default(),
            max_redirects: 5,
            verify_stored: false,
            reach_local: true,
            unreachable: Vec::new(),
        }
    }
}

/// How requests to one repository are authorised, once learnt from a challenge.
#[derive(Debug, Clone)]
enum Auth {
    Bearer(String),
    Basic,
}

/// A client of the OCI distribution API; cheap to share between threads.
#[derive(Debug)]
pub struct Client {
    agent: ureq::Agent,
    pub(crate) opts: ClientOptions,
    /// Authorisation per `host/repository`.
    auth: Mutex<HashMap<String, Auth>>,
}

/// The repository a request is about.
pub(crate) struct Target<'a> {
    pub reference: &'a Reference,
}

impl Target<'_> {
    fn host(&self) -> &str {
        self.reference.api_host()
    }
    fn repository(&self) -> &str {
        self.reference.repository()
    }
    fn key(&self) -> String {
        format!("{}/{}", self.host(), self.repository())
    }
}

impl Client {
    /// A client with these options.
    pub fn new(opts: ClientOptions) -> Result<Self> {
        if opts.user_agent.is_empty() || opts.user_agent.chars().any(|c| c.is_control()) {
            return Err(RegistryError::Options(
                "user agent must be non-empty printable text".into(),
            ));
        }
        let mut agent = ureq::AgentBuilder::new();
        if !opts.reach_local || !opts.unreachable.is_empty() {
            agent = agent.resolver(AwayFromHost {
                local: !opts.reach_local,
                unreachable: opts.unreachable.clone(),
            });
        }
        let agent = agent
            .timeout_connect(opts.connect_timeout)
            .timeout_read(opts.read_timeout)
            .timeout_write(opts.read_timeout)
            .user_agent(&opts.user_agent)
            // Redirects are followed by `call`, which refuses what is not HTTP(S).
            .redirects(0)
            .build();
        Ok(Self {
            agent,
            opts,
            auth: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `host` (`name[:port]`) is spoken to over plain HTTP.
    pub fn is_insecure(&self, host: &str) -> bool {
        let bare = strip_port(host);
        self.opts
            .insecure_hosts
            .iter()
            .any(|h| h == host || (strip_port(h) == h && h == bare))
    }

    fn scheme(&self, host: &str) -> &'static str {
        if self.is_insecure(host) {
            "http"
        } else {
            "https"
        }
    }

    fn credentials(&self, t: &Target<'_>) -> Option<&Credentials> {
        self.opts
            .credentials
            .get(t.reference.registry())
            .or_else(|| self.opts.credentials.get(t.host()))
    }

    /// `GET /v2/<repository>/<path>`, authenticating when challenged. Returns the answer
    /// whatever its status; transport failures become [`RegistryError::Unreachable`].
    pub(crate) fn get(
        &self,
        t: &Target<'_>,
        path: &str,
        headers: &[(&str, &str)],
        whole_timeout: bool,
    ) -> Result<ureq::Response> {
        let host = t.host();
        let url = format!(
            "{}://{host}/v2/{}/{path}",
            self.scheme(host),
            t.repository()
        );
        for attempt in 0..2 {
            let cached = self.cached_auth(t);
            let mut req = self.agent.get(&url);
            for (k, v) in headers {
                req = req.set(k, v);
            }
            if whole_timeout {
                req = req.timeout(self.opts.request_timeout);
            }
            match &cached {
                Some(Auth::Bearer(token)) => {
                    req = req.set("Authorization", &format!("Bearer {token}"))
                }
                Some(Auth::Basic) => {
                    if let Some(c) = self.credentials(t) {
                        req = req.set("Authorization", &c.basic_header());
                    }
                }
                None => {}
            }
            debug!(%url, attempt, "registry request");
            let resp = self.call(
                req,
                host,
                whole_timeout.then_some(self.opts.request_timeout),
            )?;
            if resp.status() != 401 || attempt == 1 {
                return Ok(resp);
            }
            let challenge = parse_challenges(resp.all("www-authenticate"));
            let auth = match challenge {
                Some(Challenge::Bearer {
                    realm,
                    service,
                    scope,
                }) => Auth::Bearer(self.fetch_token(t, &realm, service.as_deref(), scope.as_deref())?),
                Some(Challenge::Basic) if self.credentials(t).is_some() => {
                    if matches!(cached, Some(Auth::Basic)) {
                        return Ok(resp);
                    }
                    Auth::Basic
                }
                Some(Challenge::Basic) => {
                    return Err(self.unauthorized(t, "the registry wants a user name and password; none are configured for it"))
                }
                None => {
                    return Err(self.unauthorized(t, "the registry asks for an authentication scheme Vessel does not speak (only Bearer and Basic)"))
                }
            };
            self.lock_auth().insert(t.key(), auth);
        }
        Err(self.unauthorized(t, "authentication did not succeed"))
    }

    fn cached_auth(&self, t: &Target<'_>) -> Option<Auth> {
        self.lock_auth().get(&t.key()).cloned()
    }

    fn lock_auth(&self) -> std::sync::MutexGuard<'_, HashMap<String, Auth>> {
        self.auth.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `req`, following redirects to HTTP(S) URLs only (to plain HTTP only from plain
    /// HTTP or to an insecure host), without the `Authorization` header, at most
    /// `max_redirects` times. Anything else (`file://`, `ftp://`, a downgrade) is refused
    /// before a connection is made.
    fn call(
        &self,
        req: ureq::Request,
        host: &str,
        timeout: Option<Duration>,
    ) -> Result<ureq::Response> {
        let mut url = req.url().to_string();
        let headers: Vec<(String, String)> = req
            .header_names()
            .into_iter()
            .filter(|n| {
                !n.eq_ignore_ascii_case("authorization") && !n.eq_ignore_ascii_case("cookie")
            })
            .filter_map(|n| req.header(&n).map(|v| (n.clone(), v.to_string())))
            .collect();
        let mut resp = send(req, host)?;
        let mut hops = 0;
        while matches!(resp.status(), 301 | 302 | 303 | 307 | 308) {
            let what = url.split('?').next().unwrap_or_default().to_string();
            let refuse = |location: &str, reason: String| RegistryError::BadRedirect {
                host: host.to_string(),
                what: what.clone(),
                location: location.to_string(),
                reason,
            };
            let location = resp.header("location").unwrap_or_default().to_string();
            if hops == self.opts.max_redirects {
                return Err(refuse(
                    &location,
                    format!("more than {} redirects", self.opts.max_redirects),
                ));
            }
            let next = join_url(&url, &location).ok_or_else(|| {
                refuse(
                    &location,
                    "only http:// and https:// URLs are followed".into(),
                )
            })?;
            let next_host = url_host(&next).unwrap_or_default();
            if next.starts_with("http:")
                && url.starts_with("https:")
                && !self.is_insecure(next_host)
            {
                return Err(refuse(
                    &location,
                    format!("a redirect from HTTPS to plain HTTP (list {next_host} as insecure to allow it)"),
                ));
            }
            debug!(from = %url, to = %next, "following a redirect");
            let mut r = self.agent.get(&next);
            for (k, v) in &headers {
                r = r.set(k, v);
            }
            if let Some(t) = timeout {
                r = r.timeout(t);
            }
            resp = send(r, next_host)?;
            url = next;
            hops += 1;
        }
        Ok(resp)
    }

    /// Fetches an anonymous (or credentialed) token from a bearer challenge's realm.
    fn fetch_token(
        &self,
        t: &Target<'_>,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
    ) -> Result<String> {
        let realm_host = url_host(realm).ok_or_else(|| RegistryError::Protocol {
            host: t.host().to_string(),
            what: "an authentication challenge".into(),
            reason: format!("token realm {realm:?} is not an http(s) URL"),
        })?;
        let plain = realm.starts_with("http:");
        if plain && !self.is_insecure(realm_host) {
            return Err(RegistryError::InsecureRealm {
                host: t.reference.registry().to_string(),
                realm: realm.to_string(),
                realm_host: realm_host.to_string(),
            });
        }
        let mut req = self.agent.get(realm).timeout(self.opts.request_timeout);
        if let Some(s) = service {
            req = req.query("service", s);
        }
        let own_scope = format!("repository:{}:pull", t.repository());
        req = req.query("scope", &own_scope);
        if let Some(s) = scope.filter(|s| *s != own_scope) {
            req = req.query("scope", s);
        }
        let creds = self.credentials(t);
        if let Some(c) = creds {
            req = req.set("Authorization", &c.basic_header());
        }
        debug!(realm, ?service, "fetching a registry token");
        let resp = self.call(req, realm_host, Some(self.opts.request_timeout))?;
        match resp.status() {
            200 => {}
            401 | 403 => {
                let detail = if creds.is_some() {
                    "the token server refused the configured credentials"
                } else {
                    "the token server refused an anonymous token; configure credentials for it"
                };
                return Err(self.unauthorized(t, detail));
            }
            status => {
                return Err(RegistryError::Http {
                    host: realm_host.to_string(),
                    status,
                    what: "a token request".into(),
                    message: error_message(resp),
                })
            }
        }
        let body = read_limited(resp, MAX_TOKEN_BYTES, realm_host, "a token answer")?;
        let token: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                host: realm_host.to_string(),
                what: "a token request".into(),
                reason: e.to_string(),
            })?;
        let token = token.into_token().ok_or_else(|| RegistryError::Protocol {
            host: realm_host.to_string(),
            what: "a token request".into(),
            reason: "the answer has no token".into(),
        })?;
        if token.chars().any(|c| c.is_control() || c == ' ') {
            return Err(RegistryError::Protocol {
                host: realm_host.to_string(),
                what: "a token request".into(),
                reason: "the token contains spaces or control characters".into(),
            });
        }
        Ok(token)
    }

    fn unauthorized(&self, t: &Target<'_>, detail: &str) -> RegistryError {
        RegistryError::Unauthorized {
            host: t.reference.registry().to_string(),
            repository: t.repository().to_string(),
            detail: detail.to_string(),
        }
    }

    /// The error for an answer whose status the caller did not expect.
    pub(crate) fn status_error(
        &self,
        t: &Target<'_>,
        resp: ureq::Response,
        what: &str,
    ) -> RegistryError {
        match resp.status() {
            401 | 403 => {
                let detail = if self.credentials(t).is_some() {
                    "the configured credentials were refused, or the image does not exist"
                } else {
                    "the image does not exist or needs credentials (none are configured)"
                };
                self.unauthorized(t, detail)
            }
            status => RegistryError::Http {
                host: t.reference.registry().to_string(),
                status,
                what: what.to_string(),
                message: error_message(resp),
            },
        }
    }
}

/// One request, any status; transport failures become [`RegistryError::Unreachable`].
fn send(req: ureq::Request, host: &str) -> Result<ureq::Response> {
    let https = req.url().starts_with("https:");
    match req.call() {
        Ok(r) => Ok(r),
        Err(ureq::Error::Status(_, r)) => Ok(r),
        Err(ureq::Error::Transport(e)) => Err(unreachable_error(host, &e, https)),
    }
}

/// `location` resolved against `base` (absolute, scheme-relative, absolute-path or relative),
/// or `None` when it is not an `http(s)://` URL with a plain host.
fn join_url(base: &str, location: &str) -> Option<String> {
    let location = location.trim();
    let scheme_end = base.find("://")?;
    let scheme = &base[..scheme_end];
    let joined = if let Some(i) = location.find("://") {
        let given = location[..i].to_ascii_lowercase();
        if given != "http" && given != "https" {
            return None;
        }
        format!("{given}{}", &location[i..])
    } else if location.contains(':')
        && location
            .split(['/', '?', '#'])
            .next()
            .is_some_and(|first| first.contains(':'))
    {
        // `file:/etc/passwd`, `data:...`: a scheme without `//`.
        return None;
    } else if let Some(rest) = location.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else {
        let after = &base[scheme_end + 3..];
        let host_end = after.find(['/', '?', '#']).unwrap_or(after.len());
        let origin = &base[..scheme_end + 3 + host_end];
        if location.starts_with('/') {
            format!("{origin}{location}")
        } else {
            let path = after[host_end..].split(['?', '#']).next().unwrap_or("");
            let dir = path.rfind('/').map_or("/", |i| &path[..=i]);
            format!("{origin}{dir}{location}")
        }
    };
    url_host(&joined).is_some().then_some(joined)
}

/// Reads a whole answer of at most `limit` bytes.
pub(crate) fn read_limited(
    resp: ureq::Response,
    limit: u64,
    host: &str,
    what: &str,
) -> Result<Vec<u8>> {
    let too_large = || RegistryError::TooLarge {
        host: host.to_string(),
        what: what.to_string(),
        limit,
    };
    if let Some(len) = resp
        .header("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        if len > limit {
            return Err(too_large());
        }
    }
    let mut body = Vec::new();
    resp.into_reader()
        .take(limit + 1)
        .read_to_end(&mut body)
        .map_err(|e| RegistryError::Unreachable {
            host: host.to_string(),
            detail: format!("connection lost while reading {what}: {e}"),
            hint: String::new(),
        })?;
    if body.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(body)
}

/// The registry's own error text (`{"errors":[{"code":..,"message":..}]}`), or the status text.
fn error_message(resp: ureq::Response) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorItem {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let status_text = resp.status_text().to_string();
    let mut body = Vec::new();
    let _ = resp
        .into_reader()
        .take(MAX_ERROR_BYTES)
        .read_to_end(&mut body);
    match serde_json::from_slice::<Errors>(&body) {
        Ok(e) if !e.errors.is_empty() => e
            .errors
            .iter()
            .map(|i| format!("{} {}", i.code, i.message).trim().to_string())
            .collect::<Vec<_>>()
            .join("; "),
        _ => status_text,
    }
}

/// Turns a transport failure into "cannot reach HOST: ...", with a hint when TLS failed.
fn unreachable_error(host: &str, e: &ureq::Transport, https: bool) -> RegistryError {
    let mut detail = e.kind().to_string();
    if let Some(m) = e.message() {
        detail = format!("{detail}: {m}");
    }
    let mut source = e.source();
    let mut innermost = None;
    while let Some(s) = source {
        innermost = Some(s.to_string());
        source = s.source();
    }
    if let Some(s) = innermost {
        if s.ends_with(REFUSED_LOCAL) {
            // Refused before any connection: the name resolving is not what failed.
            detail = s;
        } else if !detail.contains(&s) {
            detail = format!("{detail}: {s}");
        }
    }
    let lower = detail.to_ascii_lowercase();
    let tls_failed = https
        && ["tls", "handshake", "certificate", "corrupt message"]
            .iter()
            .any(|w| lower.contains(w));
    let hint = if tls_failed {
        format!("; if {host} serves plain HTTP, pull with --insecure")
    } else {
        String::new()
    };
    RegistryError::Unreachable {
        host: host.to_string(),
        detail,
        hint,
    }
}

/// How a refusal by [`AwayFromHost`] ends.
const REFUSED_LOCAL: &str = ": only an admin pulls from there";

/// Resolves names as the system does, keeping only addresses away from this host and its
/// link ([`is_local`], with `local`) and outside `unreachable`; a name with none left is
/// refused.
struct AwayFromHost {
    local: bool,
    unreachable: Vec<(std::net::IpAddr, u8)>,
}

impl AwayFromHost {
    fn refuses(&self, ip: std::net::IpAddr) -> bool {
        let ip = canonical(ip);
        (self.local && is_local(ip))
            || self
                .unreachable
                .iter()
                .any(|&(net, len)| within(ip, canonical(net), len))
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `ip` lies in `net`/`len` (of the same family).
fn within(ip: std::net::IpAddr, net: std::net::IpAddr, len: u8) -> bool {
    use std::net::IpAddr;
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

impl ureq::Resolver for AwayFromHost {
    fn resolve(&self, netloc: &str) -> std::io::Result<Vec<std::net::SocketAddr>> {
        let all: Vec<std::net::SocketAddr> =
            std::net::ToSocketAddrs::to_socket_addrs(netloc)?.collect();
        let away: Vec<std::net::SocketAddr> = all
            .iter()
            .filter(|a| !self.refuses(a.ip()))
            .copied()
            .collect();
        match all.first() {
            Some(first) if away.is_empty() => Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "{} is an address of this host, its link (loopback, an interface's own, \
                     link-local) or its instances{REFUSED_LOCAL}",
                    first.ip()
                ),
            )),
            _ => Ok(away),
        }
    }
}

/// Whether `ip` is this host's (loopback, unspecified, or held by one of its interfaces)
/// or its link's (link-local, multicast, broadcast).
pub fn is_local(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    let ip = canonical(ip);
    let special = match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    };
    // The interfaces' own addresses (not a trial bind: with `ip_nonlocal_bind` set, as
    // keepalived hosts have it, any address binds).
    special
        || nix::ifaddrs::getifaddrs().is_ok_and(|mut addrs| {
            addrs.any(|a| {
                let held = a.address.and_then(|s| {
                    s.as_sockaddr_in()
                        .map(|v4| IpAddr::V4(v4.ip()))
                        .or_else(|| s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
                });
                held == Some(ip)
            })
        })
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// The `host[:port]` of an `http(s)://` URL.
fn url_host(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = &rest[..end];
    (!host.is_empty() && !host.contains('@')).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_is_shareable_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Client>();
    }

    #[test]
    fn addresses_of_this_host_and_its_link_are_local() {
        let local = [
            "127.0.0.1",
            "127.8.9.10",
            "0.0.0.0",
            "169.254.169.254",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "fe80::1",
            "ff02::1",
        ];
        for a in local {
            assert!(super::is_local(a.parse().unwrap()), "{a}");
        }
        // Documentation ranges: no interface here has them.
        for a in [
            "192.0.2.1",
            "198.51.100.7",
            "2001:db8::1",
            "::ffff:203.0.113.9",
        ] {
            assert!(!super::is_local(a.parse().unwrap()), "{a}");
        }
        // Every address an interface of this host has (its own, not loopback) is local.
        let out = std::process::Command::new("ip")
            .args(["-o", "addr", "show"])
            .output()
            .expect("ip (iproute2)");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut seen = 0;
        for line in text.lines() {
            let mut w = line.split_whitespace();
            while let Some(word) = w.next() {
                if word == "inet" || word == "inet6" {
                    let addr = w.next().unwrap().split('/').next().unwrap();
                    let ip: std::net::IpAddr = addr.parse().unwrap();
                    assert!(super::is_local(ip), "{ip} of {line}");
                    seen += 1;
                }
            }
        }
        assert!(seen > 0, "no address in {text}");
    }

    #[test]
    fn a_client_away_from_the_host_refuses_its_addresses() {
        use super::{Client, ClientOptions};
        // A listener on loopback, which the refusal must come before.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
            let c = Client::new(ClientOptions {
                reach_local: false,
                insecure_hosts: vec![host.clone()],
                connect_timeout: std::time::Duration::from_secs(5),
                ..ClientOptions::default()
            })
            .unwrap();
            let r = crate::reference::Reference::parse(&format!("{host}/a/b:1")).unwrap();
            let t = super::Target { reference: &r };
            let err = c.get(&t, "manifests/1", &[], true).unwrap_err().to_string();
            assert!(err.contains("only an admin pulls from there"), "{err}");
        }
        // A network of the host's instances is refused as the host's own addresses are.
        let c = Client::new(ClientOptions {
            unreachable: vec![("127.0.0.0".parse().unwrap(), 8)],
            insecure_hosts: vec![format!("127.0.0.1:{port}")],
            ..ClientOptions::default()
        })
        .unwrap();
        let r = crate::reference::Reference::parse(&format!("127.0.0.1:{port}/a/b:1")).unwrap();
        let t = super::Target { reference: &r };
        let err = c.get(&t, "manifests/1", &[], true).unwrap_err().to_string();
        assert!(err.contains("its instances"), "{err}");
        listener.set_nonblocking(true).unwrap();
        assert!(listener.accept().is_err(), "a connection was made");
    }

    #[test]
    fn networks_contain_their_addresses_only() {
        use super::within;
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(within(ip("10.61.0.7"), ip("10.61.0.0"), 24));
        assert!(!within(ip("10.61.1.7"), ip("10.61.0.0"), 24));
        assert!(within(ip("fd00:70::5"), ip("fd00:70::"), 64));
        assert!(!within(ip("fd00:71::5"), ip("fd00:70::"), 64));
        assert!(!within(ip("10.61.0.7"), ip("fd00:70::"), 64));
        assert!(within(ip("1.2.3.4"), ip("0.0.0.0"), 0));
    }

    #[test]
    fn insecure_hosts_match_host_and_port() {
        let c = Client::new(ClientOptions {
            insecure_hosts: vec!["127.0.0.1:5000".into(), "reg.local".into(), "[::1]".into()],
            ..Default::default()
        })
        .unwrap();
        assert!(c.is_insecure("127.0.0.1:5000"));
        assert!(!c.is_insecure("127.0.0.1:5001"));
        assert!(!c.is_insecure("127.0.0.1"));
        assert!(c.is_insecure("reg.local:8080"));
        assert!(c.is_insecure("reg.local"));
        assert!(c.is_insecure("[::1]:5000"));
        assert!(!c.is_insecure("localhost"));
    }

    #[test]
    fn redirects_resolve_to_http_urls_only() {
        let base = "https://reg.example/v2/a/blobs/sha256:1?x=1";
        assert_eq!(
            join_url(base, "https://s3.example/b?sig=2").as_deref(),
            Some("https://s3.example/b?sig=2")
        );
        assert_eq!(
            join_url(base, "HTTP://s3.example/b").as_deref(),
            Some("http://s3.example/b")
        );
        assert_eq!(
            join_url(base, "//cdn.example/c").as_deref(),
            Some("https://cdn.example/c")
        );
        assert_eq!(
            join_url(base, "/other").as_deref(),
            Some("https://reg.example/other")
        );
        assert_eq!(
            join_url(base, "next").as_deref(),
            Some("https://reg.example/v2/a/blobs/next")
        );
        for bad in [
            "file:///etc/passwd",
            "file:/etc/passwd",
            "ftp://x/y",
            "data:text/plain,hi",
            "https://user@host/",
            "https:///nohost",
            "gopher://x",
        ] {
            assert_eq!(join_url(base, bad), None, "{bad}");
        }
    }

    #[test]
    fn url_hosts() {
        assert_eq!(
            url_host("https://auth.docker.io/token"),
            Some("auth.docker.io")
        );
        assert_eq!(url_host("http://127.0.0.1:5/t?x=1"), Some("127.0.0.1:5"));
        assert_eq!(url_host("ftp://x/"), None);
        assert_eq!(url_host("https://u@x/"), None);
    }
}
