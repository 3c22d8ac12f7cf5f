//! Sessions over HTTP: open (`POST /api/sessions`), read (`GET /api/sessions/{id}`), close
//! (`DELETE /api/sessions/{id}`), and the consumer's WebSocket (`GET /api/sessions/{id}/ws`), whose
//! conversation is `session_socket`'s.

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use distributivecom_protocol::SOCKET_READ_BUFFER_BYTES;
use distributivecom_protocol::api::ErrorBody;
use distributivecom_protocol::session::{SessionCreated, SessionRequest, SessionRounds, SessionStatus};
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};

use super::AppState;
use super::error::{AppError, read_body};
use super::extract::{Caller, Path, Query, Via};
use super::workers::{handshake_accept_key, switching_protocols};
use crate::session_socket::{self, Incoming};

/// Opens a session: its shards are checked as a job's chunks would be and its budget is escrowed.
#[utoipa::path(
    post, path = "/api/sessions", tag = "sessions",
    request_body = SessionRequest,
    responses(
        (status = 201, description = "Opened", body = SessionCreated),
        (status = 400, description = "Malformed or out of bounds; the message says what", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 402, description = "The balance cannot cover the budget", body = ErrorBody),
        (status = 422, description = "A program or blob this account has not uploaded", body = ErrorBody),
        (status = 429, description = "Too many sessions open", body = ErrorBody),
    )
)]
pub async fn open(
    State(state): State<AppState>,
    caller: Caller,
    body: Body,
) -> Result<(StatusCode, Json<SessionCreated>), AppError> {
    let body = read_body(body, state.config.max_job_request_bytes, "the session request").await?;
    let request: SessionRequest = serde_json::from_slice(&body)
        .map_err(|error| AppError::BadRequest(format!("could not read the session request: {error}")))?;
    let owner = caller.user.id;
    let run_module = state.uploads.run_module(&state.store, &request.module, owner).await?;
    let created = state.coordinator.open_session(owner, request, run_module).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// A session as it stands. Another account's session is "not found", as one that does not exist.
#[utoipa::path(
    get, path = "/api/sessions/{id}", tag = "sessions",
    params(("id" = u64, Path, description = "The session's id")),
    responses(
        (status = 200, description = "The session", body = SessionStatus),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "The caller has no such session", body = ErrorBody),
    )
)]
pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<u64>,
) -> Result<Json<SessionStatus>, AppError> {
    let status = state.coordinator.session_status(caller.user.id, id).await?;
    status.map(Json).ok_or_else(|| AppError::NotFound(format!("no session {id}")))
}

/// Which rounds, and whether to wait for a change.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct RoundsQuery {
    /// The first round wanted (default 1); at most 1000 are answered.
    #[serde(default)]
    from: Option<u64>,
    /// The `version` of an earlier answer: wait until the session changes from it.
    #[serde(default)]
    version: Option<u64>,
    /// How long to wait for a change, at most 25 000 (default 0: answer at once).
    #[serde(default)]
    wait_ms: Option<u64>,
}

/// The session and its rounds (with the consumer's figures, such as a model's loss), for its live page.
/// With `version` and `wait_ms`, answers once something changed: a cheap way to follow a session.
#[utoipa::path(
    get, path = "/api/sessions/{id}/rounds", tag = "sessions",
    params(("id" = u64, Path, description = "The session's id"), RoundsQuery),
    responses(
        (status = 200, description = "The session and its rounds", body = SessionRounds),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "The caller has no such session", body = ErrorBody),
    )
)]
pub async fn rounds(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<u64>,
    Query(query): Query<RoundsQuery>,
) -> Result<Json<SessionRounds>, AppError> {
    let wait = std::time::Duration::from_millis(query.wait_ms.unwrap_or(0).min(25_000));
    let from = query.from.unwrap_or(1);
    let rounds = state.coordinator.session_rounds(caller.user.id, id, from, query.version, wait).await?;
    rounds.map(Json).ok_or_else(|| AppError::NotFound(format!("no session {id}")))
}

/// Closes a session: running rounds stop, and the rest of the escrow is refunded.
#[utoipa::path(
    delete, path = "/api/sessions/{id}", tag = "sessions",
    params(("id" = u64, Path, description = "The session's id")),
    responses(
        (status = 200, description = "Closed; the session as it now stands", body = SessionStatus),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "The caller has no such session", body = ErrorBody),
        (status = 409, description = "Closed already", body = ErrorBody),
    )
)]
pub async fn close(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<u64>,
) -> Result<Json<SessionStatus>, AppError> {
    let owner = caller.user.id;
    let Some(before) = state.coordinator.session_status(owner, id).await? else {
        return Err(AppError::NotFound(format!("no session {id}")));
    };
    if before.state == "closed" {
        return Err(AppError::Conflict(format!("session {id} is closed already")));
    }
    state.coordinator.close_session(id, "closed by its consumer").await?;
    let after = state.coordinator.session_status(owner, id).await?;
    after.map(Json).ok_or_else(|| AppError::NotFound(format!("no session {id}")))
}

/// Where a reconnecting consumer picks up.
#[derive(Debug, Deserialize)]
pub struct SocketQuery {
    /// Results of rounds from this one on are sent again at once (default: none).
    #[serde(default)]
    from_round: Option<u64>,
    /// With the session cookie (browsers cannot set headers on a WebSocket): the session's CSRF token.
    #[serde(default)]
    csrf: Option<String>,
}

/// Upgrades to the session's WebSocket (see `docs/protocol.md`, "Sessions"). One socket per session.
#[utoipa::path(
    get, path = "/api/sessions/{id}/ws", tag = "sessions",
    params(
        ("id" = u64, Path, description = "The session's id"),
        ("from_round" = Option<u64>, Query, description = "Send the results of rounds from this one on again"),
        ("csrf" = Option<String>, Query, description = "The CSRF token, when signed in by cookie"),
    ),
    responses(
        (status = 101, description = "Switching to the session's WebSocket"),
        (status = 400, description = "Not a WebSocket handshake", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Signed in by cookie without the CSRF token", body = ErrorBody),
        (status = 404, description = "The caller has no such open session", body = ErrorBody),
        (status = 409, description = "Another socket is connected to the session", body = ErrorBody),
    )
)]
pub async fn socket(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<u64>,
    Query(query): Query<SocketQuery>,
    mut request: Request,
) -> Result<Response, AppError> {
    // A cookie rides along on a WebSocket opened by any site: it must prove it is ours.
    if let Via::WebSession { csrf_token, .. } = &caller.via
        && query
            .csrf
            .as_deref()
            .is_none_or(|sent| !crate::identity::constant_time_eq(sent.as_bytes(), csrf_token.as_bytes()))
    {
        return Err(AppError::Forbidden(
            "a session socket authenticated by the session cookie needs the session's CSRF token as ?csrf=".to_owned(),
        ));
    }
    let accept = handshake_accept_key(request.headers())?;
    let owner = caller.user.id;
    let feed = state.coordinator.attach_session(owner, id)?;
    let upgrading = hyper::upgrade::on(&mut request);
    let coordinator = state.coordinator.clone();
    // Base64 makes a broadcast a third larger; the rest of a message is small.
    let max_message = (state.config.max_broadcast_bytes / 3 * 4 + 64 * 1024) as usize;
    let from_round = query.from_round;
    tokio::spawn(async move {
        let upgraded = match upgrading.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, "a session's WebSocket upgrade failed");
                coordinator.detach_session(id);
                return;
            }
        };
        let config = WebSocketConfig::default()
            .read_buffer_size(SOCKET_READ_BUFFER_BYTES)
            .max_message_size(Some(max_message))
            .max_frame_size(Some(max_message));
        let socket = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
        let (sink, stream) = socket.split();
        let incoming = stream.filter_map(|frame| async move {
            match frame {
                Ok(Message::Text(text)) => Some(Incoming::Text(text.to_string())),
                Ok(Message::Binary(_)) => Some(Incoming::Binary),
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => None,
                Ok(Message::Close(_)) | Err(_) => Some(Incoming::Closed),
            }
        });
        let outgoing = sink.with(|text: String| async move { Ok::<_, tungstenite::Error>(Message::Text(text.into())) });
        session_socket::run(coordinator, owner, id, from_round, feed, Box::pin(incoming), Box::pin(outgoing)).await;
    });
    switching_protocols(&accept)
}
