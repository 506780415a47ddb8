//! The streams of the API as WebSockets, for browsers: exec, console and a VM's display, and
//! the event stream. Each is the same session as its upgraded-connection endpoint, carried
//! over a WebSocket by [`bridge`]: frames travel one per binary message (so a page need not
//! reassemble them), a display's raw bytes as they come. The instance is looked up and the
//! session opened before the upgrade, so a refusal is an HTTP answer with its message (a
//! missing instance is a 404 before a request that is no WebSocket is a 400, as elsewhere).

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

/// What a WebSocket endpoint's upgrade is, or the error of a request that is not one.
type Upgrade =
    std::result::Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>;

fn websocket(ws: Upgrade) -> Result<WebSocketUpgrade> {
    ws.map(|ws| ws.protocols([WS_PROTOCOL]).max_message_size(PIPE))
        .map_err(|e| {
            Error::invalid(format!(
                "this endpoint is a WebSocket (offer the subprotocol {WS_PROTOCOL}): {e}"
            ))
        })
}

/// Carries `socket` to a byte stream: the returned end reads what the browser sends and
/// writes what it receives. With `framed`, what the session writes is cut into one message
/// per frame. A browser cannot half-close a WebSocket: when it closes (or goes away), the
/// session reads the end of its input and the WebSocket is closed at once (a Close answered
/// by a Close), without waiting for the session's output to end; when the session ends its
/// output, the WebSocket is closed too.
fn bridge(socket: WebSocket, framed: bool) -> DuplexStream {
    let (session, theirs) = tokio::io::duplex(PIPE);
    let (mut rd, mut wr) = tokio::io::split(theirs);
    let (mut sink, mut stream) = socket.split();
    let (gone, mut left) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
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
        loop {
            let n = tokio::select! {
                r = rd.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                },
                _ = &mut left => break,
            };
            let mut out = Vec::new();
            if framed {
                pending.extend_from_slice(&buf[..n]);
                while let Some(frame) = take_frame(&mut pending) {
                    match frame {
                        Ok(f) => out.push(f),
                        Err(e) => {
                            tracing::warn!(error = %e, "a session wrote a bad frame");
                            return;
                        }
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
        }
        let _ = sink.send(Message::Close(None)).await;
    });
    session
}

/// Takes one whole frame (header and payload) off the front of `pending`.
fn take_frame(pending: &mut Vec<u8>) -> Option<std::io::Result<Vec<u8>>> {
    let head: [u8; 5] = pending.get(..5)?.try_into().ok()?;
    let len = match parse_header(&head) {
        Ok((_, len)) => len,
        Err(e) => return Some(Err(e)),
    };
    if pending.len() < 5 + len {
        return None;
    }
    Some(Ok(pending.drain(..5 + len).collect()))
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
        loop {
            tokio::select! {
                _ = &mut until => break,
                ev = stream.next() => {
                    let Some(ev) = ev else { break };
                    // A listener that lagged behind lost old events; it goes on with new ones.
                    let Some(ev) = ev.ok().and_then(|ev| scope.event(ev)) else { continue };
                    let Ok(text) = serde_json::to_string(&ev) else { continue };
                    if sink.send(Message::Text(text.into())).await.is_err() {
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
    let name = scope.q(&name)?;
    app.instances.get(&name).map_err(|e| scope.error(e))?;
    let ws = websocket(ws)?;
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
    let name = scope.q(&name)?;
    app.instances.get(&name).map_err(|e| scope.error(e))?;
    let ws = websocket(ws)?;
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
    let name = scope.q(&name)?;
    // The instance must be there before the upgrade; what runs comes in the first message.
    app.instances.get(&name).map_err(|e| scope.error(e))?;
    let ws = websocket(ws)?;
    Ok(ws.on_upgrade(move |mut socket| async move {
        let request = match socket.recv().await {
            Some(Ok(Message::Text(t))) => serde_json::from_str::<ExecRequest>(t.as_str())
                .map_err(|e| format!("invalid exec request: {e}")),
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
    }))
}
