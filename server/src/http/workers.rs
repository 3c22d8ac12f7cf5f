//! The worker WebSocket endpoint and the operator statistics.
//!
//! The endpoint does the WebSocket handshake itself (rather than with axum's extractor) so that a
//! [`FrameGate`] sits under the socket: a worker may send a message only as large as a valid report of
//! every replica it holds, decided as each message begins.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use distributivecom_protocol::api::ServerStats;
use distributivecom_protocol::{MAX_MESSAGE_BYTES, SOCKET_READ_BUFFER_BYTES};
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};

use super::AppState;
use super::error::AppError;
use super::frame_gate::{FrameGate, MessageLimit};
use crate::coordinator::Coordinator;
use crate::identity::Identity;
use crate::worker_socket::{self, Incoming, Outgoing};

/// Upgrades to the worker protocol (see `docs/protocol.md`).
#[utoipa::path(
    get, path = "/api/workers/ws", tag = "workers",
    responses(
        (status = 101, description = "Switching to the worker WebSocket protocol"),
        (status = 400, description = "Not a WebSocket handshake; the message says what is missing", body = distributivecom_protocol::api::ErrorBody),
    )
)]
pub async fn socket(State(state): State<AppState>, mut request: Request) -> Result<Response, AppError> {
    let accept = handshake_accept_key(request.headers())?;
    let upgrading = hyper::upgrade::on(&mut request);
    let (coordinator, identity) = (state.coordinator.clone(), state.identity.clone());
    tokio::spawn(async move {
        let upgraded = match upgrading.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, "a worker's WebSocket upgrade failed");
                return;
            }
        };
        let worker = coordinator.new_worker_id();
        let limiting = coordinator.clone();
        let limit: MessageLimit = Arc::new(move || limiting.frame_limit(worker));
        let gated = FrameGate::new(TokioIo::new(upgraded), limit);
        // The library's own ceilings stay as a backstop; the gate is what decides.
        let config = WebSocketConfig::default()
            .read_buffer_size(SOCKET_READ_BUFFER_BYTES)
            .max_message_size(Some(MAX_MESSAGE_BYTES))
            .max_frame_size(Some(MAX_MESSAGE_BYTES));
        let socket = WebSocketStream::from_raw_socket(gated, Role::Server, Some(config)).await;
        serve_socket(coordinator, identity, worker, socket).await;
    });
    switching_protocols(&accept)
}

/// The answer that completes a WebSocket handshake whose `Sec-WebSocket-Accept` is `accept`.
pub(super) fn switching_protocols(accept: &str) -> Result<Response, AppError> {
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(accept).map_err(|error| AppError::Internal(error.to_string()))?,
    );
    Ok(response)
}

/// Checks that the request is a WebSocket handshake (RFC 6455, section 4.2.1) and returns the
/// `Sec-WebSocket-Accept` value for it.
pub(super) fn handshake_accept_key(headers: &HeaderMap) -> Result<String, AppError> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .any(|value| value.split(',').any(|part| part.trim().eq_ignore_ascii_case(token)))
    };
    let refuse =
        |what: &str| AppError::BadRequest(format!("this endpoint speaks WebSocket: {what} (see docs/protocol.md)"));
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Err(refuse("send a WebSocket handshake (Connection: Upgrade, Upgrade: websocket)"));
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|version| version.as_bytes() != b"13") {
        return Err(refuse("only WebSocket version 13 is supported (Sec-WebSocket-Version: 13)"));
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY).ok_or_else(|| refuse("Sec-WebSocket-Key is missing"))?;
    Ok(derive_accept_key(key.as_bytes()))
}

async fn serve_socket<S>(
    coordinator: Arc<Coordinator>,
    identity: Arc<Identity>,
    worker: u64,
    socket: WebSocketStream<S>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (sink, stream) = socket.split();
    let incoming = stream.map(|frame| match frame {
        Ok(Message::Binary(bytes)) => Incoming::Binary(bytes.to_vec()),
        Ok(Message::Text(_)) => Incoming::Text,
        Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => Incoming::Control,
        Ok(Message::Close(_)) => Incoming::Closed,
        // The gate refused a message, or the library did (malformed, over its ceiling): tell the worker.
        Err(tungstenite::Error::Io(error)) if error.kind() == std::io::ErrorKind::InvalidData => {
            Incoming::Failed(error.to_string())
        }
        Err(tungstenite::Error::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake)) => {
            Incoming::Closed
        }
        Err(error @ (tungstenite::Error::Capacity(_) | tungstenite::Error::Protocol(_))) => {
            Incoming::Failed(error.to_string())
        }
        // A connection that dropped has nobody left to tell.
        Err(_) => Incoming::Closed,
    });
    let outgoing = sink.with(|frame: Outgoing| async move {
        Ok::<_, tokio_tungstenite::tungstenite::Error>(match frame {
            Outgoing::Binary(bytes) => Message::Binary(bytes.into()),
            Outgoing::Close(reason) => Message::Close(Some(CloseFrame {
                code: CloseCode::Policy,
                // A close reason may hold at most 123 bytes.
                reason: truncate_utf8(&reason, 123).into(),
            })),
        })
    });
    worker_socket::run(coordinator, identity, worker, Box::pin(incoming), Box::pin(outgoing)).await;
}

fn truncate_utf8(text: &str, max_bytes: usize) -> &str {
    let mut end = text.len().min(max_bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// What the coordinator is doing right now.
#[utoipa::path(
    get, path = "/api/stats", tag = "workers",
    responses((status = 200, description = "Current totals", body = ServerStats))
)]
pub async fn stats(State(state): State<AppState>) -> Json<ServerStats> {
    Json(state.coordinator.stats())
}
