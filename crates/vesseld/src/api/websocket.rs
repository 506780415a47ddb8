//! The streams of the API as WebSockets, for browsers: exec, console and a VM's display, and
//! the event stream. Each is the same session as its upgraded-connection endpoint, carried
//! over a WebSocket by [`bridge`]: frames travel one per binary message (so a page need not
//! reassemble them), a display's raw bytes as they come. The instance is looked up and the
//! session opened before the upgrade, so a refusal is an HTTP answer with its message (a
//! missing instance is a 404 before a request that is no WebSocket is a 400, as elsewhere).

use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::Extension;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_stream::wrappers::BroadcastStream;
use vessel_api::stream::{encode, parse_header, FrameKind};
use vessel_api::{ExecRequest, WS_PROTOCOL};

use super::scope::ProjectScope;
use super::upgrade::{spawn_guarded, vnc_display, ConsoleAttach};
use super::App;
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::instance::exec;

/// Bytes in flight between a WebSocket and its session, each way.
const PIPE: usize = 256 << 10;

/// How long an exec WebSocket waits for its request.
const FIRST_MESSAGE: Duration = Duration::from_secs(30);

/// What a WebSocket endpoint's upgrade is, or the error of a request that is not one.
type Upgrade =
    std::result::Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>;

fn websocket(ws: Upgrade) -> Result<WebSocketUpgrade> {
    ws.map(|ws| {
        ws.protocols([WS_PROTOCOL])
            .max_message_size(PIPE)
            .max_frame_size(PIPE)
    })
    .map_err(|e| {
        Error::invalid(format!(
            "this endpoint is a WebSocket (offer the subprotocol {WS_PROTOCOL}): {e}"
        ))
    })
}

/// How often the daemon pings a WebSocket's browser.
const PING_EVERY: Duration = Duration::from_secs(30);

/// Silence after which a browser is taken for gone (a laptop that slept, a dropped
/// network): its session ends as if it had closed.
const GONE_AFTER: Duration = Duration::from_secs(75);

/// Carries `socket` to a byte stream: the returned end reads what the browser sends and
/// writes what it receives. With `framed`, what the session writes is cut into one message
/// per frame. A browser cannot half-close a WebSocket: when it closes, goes silent for
/// [`GONE_AFTER`] (it is pinged every [`PING_EVERY`]), or goes away, the session reads the
/// end of its input and the WebSocket is closed at once (a Close answered by a Close),
/// without waiting for the session's output to end; when the session ends its output, or
/// writes a bad frame, the WebSocket is closed too.
fn bridge(socket: WebSocket, framed: bool) -> DuplexStream {
    let (session, theirs) = tokio::io::duplex(PIPE);
    let (mut rd, mut wr) = tokio::io::split(theirs);
    let (mut sink, mut stream) = socket.split();
    let (gone, mut left) = tokio::sync::oneshot::channel::<()>();
    let heard = std::sync::Arc::new(std::sync::Mutex::new(Instant::now()));
    let heard_by_reader = heard.clone();
    tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                m = stream.next() => m,
                _ = tokio::time::sleep(GONE_AFTER) => {
                    let last = *heard_by_reader.lock().unwrap_or_else(|p| p.into_inner());
                    if last.elapsed() >= GONE_AFTER {
                        tracing::info!("a WebSocket's browser went silent: ending its session");
                        break;
                    }
                    continue;
                }
            };
            let Some(Ok(msg)) = msg else { break };
            *heard_by_reader.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
            let bytes = match msg {
                Message::Binary(b) => b,
                Message::Text(t) => t.as_bytes().to_vec().into(),
                // Reading on after a Close sends the answering Close (the library queues it
                // and writes it at the next read), then ends the stream.
                Message::Close(_) | Message::Ping(_) | Message::Pong(_) => continue,
            };
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
        }
        // The session reads the end of its input (an exec's terminal hangs up).
        let _ = wr.shutdown().await;
        drop(gone);
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 << 10];
        let mut pending: Vec<u8> = Vec::new();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.reset();
        let close = loop {
            let n = tokio::select! {
                r = rd.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => n,
                },
                _ = &mut left => break None,
                _ = ping.tick() => {
                    if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let mut out = Vec::new();
            if framed {
                pending.extend_from_slice(&buf[..n]);
                match take_frames(&mut pending) {
                    Ok(frames) => out = frames,
                    Err(e) => {
                        tracing::warn!(error = %e, "a session wrote a bad frame");
                        break Some(axum::extract::ws::CloseFrame {
                            code: 1011,
                            reason: "the session sent a bad frame".into(),
                        });
                    }
                }
            } else {
                out.push(buf[..n].to_vec());
            }
            for m in out {
                if sink.send(Message::Binary(m.into())).await.is_err() {
                    return;
                }
            }
        };
        let _ = sink.send(Message::Close(close)).await;
    });
    session
}

/// Takes every whole frame (header and payload) off the front of `pending`, in one pass.
fn take_frames(pending: &mut Vec<u8>) -> std::io::Result<Vec<Vec<u8>>> {
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some(head) = pending.get(at..at + 5) {
        let head: [u8; 5] = head.try_into().map_err(std::io::Error::other)?;
        let (_, len) = parse_header(&head)?;
        let Some(frame) = pending.get(at..at + 5 + len) else {
            break;
        };
        frames.push(frame.to_vec());
        at += 5 + len;
    }
    pending.drain(..at);
    Ok(frames)
}

/// The qualified name of an instance of the caller's project and the upgrade to a
/// WebSocket: a missing instance is a 404 before a request that is no WebSocket is a 400.
fn instance_websocket(
    app: &App,
    scope: &ProjectScope,
    name: &str,
    ws: Upgrade,
) -> Result<(String, WebSocketUpgrade)> {
    let name = scope.q(name)?;
    app.instances.get(&name).map_err(|e| scope.error(e))?;
    Ok((name, websocket(ws)?))
}

pub async fn events(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Extension(scope): Extension<ProjectScope>,
    ws: Upgrade,
) -> Result<Response> {
    let ws = websocket(ws)?;
    let auth = app.auth.clone();
    let events = app.events.subscribe();
    Ok(ws.on_upgrade(move |socket| async move {
        let (mut sink, mut incoming) = socket.split();
        let mut stream = BroadcastStream::new(events);
        let until = auth.until_invalid(caller);
        tokio::pin!(until);
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.reset();
        loop {
            tokio::select! {
                _ = &mut until => break,
                ev = stream.next() => {
                    let Some(ev) = ev else { break };
                    // A listener that lagged behind lost old events; it goes on with new ones.
                    let Some(ev) = ev.ok().and_then(|ev| scope.event(ev)) else { continue };
                    let Ok(text) = serde_json::to_string(&ev) else { continue };
                    // A browser that reads nothing is not waited for past a while.
                    let sent = tokio::time::timeout(
                        GONE_AFTER,
                        sink.send(Message::Text(text.into())),
                    );
                    if !matches!(sent.await, Ok(Ok(()))) {
                        break;
                    }
                }
                _ = ping.tick() => {
                    if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                        break;
                    }
                }
                // After a Close, the next read sends the answering Close and ends the stream.
                msg = incoming.next() => match msg {
                    None | Some(Err(_)) => break,
                    _ => {}
                },
            }
        }
        let _ = sink.send(Message::Close(None)).await;
    }))
}

pub async fn console(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
    ws: Upgrade,
) -> Result<Response> {
    let (name, ws) = instance_websocket(&app, &scope, &name, ws)?;
    let attach = ConsoleAttach::open(&app, &name)
        .await
        .map_err(|e| scope.error(e))?;
    Ok(ws.on_upgrade(move |socket| async move {
        spawn_guarded(&app, caller, attach.run(bridge(socket, true)));
    }))
}

pub async fn vnc(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
    ws: Upgrade,
) -> Result<Response> {
    let (name, ws) = instance_websocket(&app, &scope, &name, ws)?;
    let mut display = vnc_display(&app, &name).await.map_err(|e| scope.error(e))?;
    Ok(ws.on_upgrade(move |socket| async move {
        spawn_guarded(&app, caller, async move {
            let mut client = bridge(socket, false);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut display).await;
        });
    }))
}

pub async fn exec(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
    ws: Upgrade,
) -> Result<Response> {
    // The instance must be there before the upgrade; what runs comes in the first message.
    let (name, ws) = instance_websocket(&app, &scope, &name, ws)?;
    let auth = app.auth.clone();
    Ok(ws.on_upgrade(move |mut socket| async move {
        // The whole session, its first message included, ends with the caller's identity.
        let guarded = caller.clone();
        let work = async move {
            let first = tokio::time::timeout(FIRST_MESSAGE, socket.recv()).await;
            let request = match first {
                Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str::<ExecRequest>(t.as_str())
                    .map_err(|e| format!("invalid exec request: {e}")),
                Err(_) => Err(format!(
                    "no exec request within {} s: send it as the first message",
                    FIRST_MESSAGE.as_secs()
                )),
                _ => Err("the first message must be the exec request's JSON".into()),
            };
            let session = match request {
                Ok(req) => {
                    let (app, name) = (app.clone(), name.clone());
                    tokio::task::spawn_blocking(move || app.instances.exec(&name, req))
                        .await
                        .map_err(|e| format!("exec task: {e}"))
                        .and_then(|r| r.map_err(|e| scope.error(e).message))
                }
                Err(m) => Err(m),
            };
            match session {
                Ok(session) => {
                    spawn_guarded(&app, caller, exec::serve(bridge(socket, true), session));
                }
                Err(m) => {
                    let frame = encode(FrameKind::Error, m.as_bytes());
                    let _ = socket.send(Message::Binary(frame.into())).await;
                    let _ = socket.send(Message::Close(None)).await;
                }
            }
        };
        tokio::select! {
            _ = work => {}
            _ = auth.until_invalid(guarded) => {}
        }
    }))
}
