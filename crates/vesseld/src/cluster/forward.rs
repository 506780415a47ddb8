//! A request forwarded to another member over the members' mutual TLS: this member presents
//! its own certificate (which the other trusts as a member's, see `AuthService::set_members`)
//! and accepts only the certificate pinned in the other's record. Upgraded connections
//! (exec, console, VNC, WebSockets) are spliced through: the client's connection to this
//! member on one side, this member's to the other on the other.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

use crate::error::{Error, Result};

/// The member a request goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Its name.
    pub name: String,
    /// Its HTTPS API, `IP:PORT`.
    pub address: String,
    /// The SHA-256 of its certificate.
    pub fingerprint: String,
}

/// The header that names the member a forwarded request came through (for the logs).
pub const FORWARDED_BY: &str = "x-vessel-forwarded-by";

/// How long a member may take to accept the connection, and then the TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a member may take to answer a request without a body to send (a read); an
/// upload or an upgrade waits as long as it lasts.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Work that carries an upgraded connection until one side closes it.
pub type Splice = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Drops what must not travel to another member: the caller's own credentials (this member
/// authenticated and authorized the caller; the other trusts this member), whether in
/// `Authorization` or in a WebSocket's token subprotocol.
fn strip_credentials(req: &mut Request) {
    let headers = req.headers_mut();
    headers.remove(header::AUTHORIZATION);
    let protocols: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty() && !p.starts_with(vessel_api::WS_TOKEN_PREFIX))
        .map(str::to_string)
        .collect();
    headers.remove(header::SEC_WEBSOCKET_PROTOCOL);
    if !protocols.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&protocols.join(", ")) {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
        }
    }
}

/// Sends `req` to `to` as the member `me` whose identity is under `root`, and answers with
/// the other's response. An upgraded response comes with the work that splices the two
/// connections, for the caller to run (and to stop when the caller's identity goes).
pub async fn send(
    root: &Path,
    me: &str,
    to: &Target,
    mut req: Request,
) -> Result<(Response, Option<Splice>)> {
    let unreachable = unreachable(to);
    let mut sender = connect(root, to).await?;
    strip_credentials(&mut req);
    if let Ok(v) = HeaderValue::from_str(me) {
        req.headers_mut().insert(FORWARDED_BY, v);
    }
    let client_side = req
        .headers()
        .contains_key(header::UPGRADE)
        .then(|| hyper::upgrade::on(&mut req));
    let bounded = req.method() == axum::http::Method::GET && client_side.is_none();
    let answer = sender.send_request(req);
    let mut resp = if bounded {
        tokio::time::timeout(ANSWER_TIMEOUT, answer)
            .await
            .map_err(|_| unreachable(format!("no answer in {} s", ANSWER_TIMEOUT.as_secs())))?
    } else {
        answer.await
    }
    .map_err(|e| unreachable(e.to_string()))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok((resp.map(Body::new), None));
    }
    let Some(client_side) = client_side else {
        return Err(Error::internal(format!(
            "member {} switched protocols unasked",
            to.name
        )));
    };
    let member_side = hyper::upgrade::on(&mut resp);
    let name = to.name.clone();
    let splice: Splice = Box::pin(async move {
        let (client, member) = match tokio::try_join!(client_side, member_side) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(member = %name, error = %e, "forwarded upgrade failed");
                return;
            }
        };
        let (mut client, mut member) = (TokioIo::new(client), TokioIo::new(member));
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut member).await {
            tracing::debug!(member = %name, error = %e, "forwarded stream ended");
        }
    });
    Ok((resp.map(|_| Body::empty()), Some(splice)))
}

/// The error for `to` that cannot be reached.
fn unreachable(to: &Target) -> impl Fn(String) -> Error + '_ {
    move |what: String| {
        Error::internal(format!(
            "member {} at {} cannot be reached: {what}",
            to.name, to.address
        ))
    }
}

/// A connection to `to` over the members' mutual TLS, as the member whose identity is
/// under `root`.
async fn connect(
    root: &Path,
    to: &Target,
) -> Result<hyper::client::conn::http1::SendRequest<Body>> {
    let unreachable = unreachable(to);
    let identity = crate::auth::tls::server_identity(root)?;
    let config = vessel_tls::client_config(
        vessel_tls::Pin::Fingerprint(to.fingerprint.clone()),
        Some(identity),
    )
    .map_err(|e| Error::internal(e.to_string()))?;
    let addr: std::net::SocketAddr = to
        .address
        .parse()
        .map_err(|_| unreachable("its address is not IP:PORT".into()))?;
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| unreachable(format!("no answer in {} s", CONNECT_TIMEOUT.as_secs())))?
        .map_err(|e| unreachable(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let handshake = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::IpAddress(addr.ip().into()), tcp);
    let tls = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
        .await
        .map_err(|_| unreachable("no TLS handshake in time".into()))?
        .map_err(|e| match vessel_tls::mismatch_in(&e) {
            Some(m) => unreachable(format!("it is not the member the cluster knows ({m})")),
            None => unreachable(format!("TLS: {e}")),
        })?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "forwarded connection ended");
        }
    });
    Ok(sender)
}

/// A raw byte stream to `to`: `uri` (an endpoint answering `Upgrade: vessel-raw/1`) asked
/// as the member `me` whose identity is under `root`, the connection upgraded.
pub async fn open(
    root: &Path,
    me: &str,
    to: &Target,
    uri: &str,
) -> Result<TokioIo<hyper::upgrade::Upgraded>> {
    let unreachable = unreachable(to);
    let mut sender = connect(root, to).await?;
    let req = Request::builder()
        .method("GET")
        .uri(uri)
        .header(header::HOST, to.address.as_str())
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, vessel_api::stream::RAW_PROTOCOL)
        .header(FORWARDED_BY, me)
        .body(Body::empty())
        .map_err(|e| Error::internal(e.to_string()))?;
    let mut resp = tokio::time::timeout(ANSWER_TIMEOUT, sender.send_request(req))
        .await
        .map_err(|_| unreachable(format!("no answer in {} s", ANSWER_TIMEOUT.as_secs())))?
        .map_err(|e| unreachable(e.to_string()))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let bytes = axum::body::to_bytes(Body::new(resp.into_body()), 64 << 10)
            .await
            .unwrap_or_default();
        return Err(Error::conflict(format!(
            "member {} answered {status}: {}",
            to.name,
            super::instances::error_text(&bytes)
        )));
    }
    let upgraded = hyper::upgrade::on(&mut resp)
        .await
        .map_err(|e| unreachable(format!("upgrade: {e}")))?;
    Ok(TokioIo::new(upgraded))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_callers_credentials_stay_here() {
        let mut req = Request::builder()
            .uri("/1.0/instances/c1/console")
            .header(header::AUTHORIZATION, "Bearer secret")
            .header(
                header::SEC_WEBSOCKET_PROTOCOL,
                format!("{}secret, vessel.stream", vessel_api::WS_TOKEN_PREFIX),
            )
            .body(Body::empty())
            .unwrap();
        strip_credentials(&mut req);
        assert!(req.headers().get(header::AUTHORIZATION).is_none());
        assert_eq!(
            req.headers().get(header::SEC_WEBSOCKET_PROTOCOL).unwrap(),
            "vessel.stream"
        );
        let mut only_token = Request::builder()
            .header(
                header::SEC_WEBSOCKET_PROTOCOL,
                format!("{}secret", vessel_api::WS_TOKEN_PREFIX),
            )
            .body(Body::empty())
            .unwrap();
        strip_credentials(&mut only_token);
        assert!(only_token
            .headers()
            .get(header::SEC_WEBSOCKET_PROTOCOL)
            .is_none());
    }
}
