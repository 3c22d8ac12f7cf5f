//! The worker WebSocket endpoint and the operator statistics.

use axum::Json;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use distributivecom_protocol::MAX_MESSAGE_BYTES;
use distributivecom_protocol::api::ServerStats;
use futures_util::{SinkExt, StreamExt};

use super::AppState;
use crate::session::{self, Incoming, Outgoing};

/// Upgrades to the worker protocol (see `docs/protocol.md`).
#[utoipa::path(
    get, path = "/api/workers/ws", tag = "workers",
    responses((status = 101, description = "Switching to the worker WebSocket protocol"))
)]
pub async fn socket(State(state): State<AppState>, upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| serve_socket(state, socket))
}

async fn serve_socket(state: AppState, socket: WebSocket) {
    let (sink, stream) = socket.split();
    let incoming = stream.map(|frame| match frame {
        Ok(Message::Binary(bytes)) => Incoming::Binary(bytes.to_vec()),
        Ok(Message::Text(_)) => Incoming::Text,
        Ok(Message::Ping(_) | Message::Pong(_)) => Incoming::Control,
        Ok(Message::Close(_)) | Err(_) => Incoming::Closed,
    });
    let outgoing = sink.with(|frame: Outgoing| async move {
        Ok::<_, axum::Error>(match frame {
            Outgoing::Binary(bytes) => Message::Binary(bytes.into()),
            Outgoing::Close(reason) => Message::Close(Some(axum::extract::ws::CloseFrame {
                code: axum::extract::ws::close_code::POLICY,
                // A close reason may hold at most 123 bytes.
                reason: truncate_utf8(&reason, 123).into(),
            })),
        })
    });
    session::run(state.coordinator, Box::pin(incoming), Box::pin(outgoing)).await;
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
