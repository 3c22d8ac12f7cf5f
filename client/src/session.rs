//! Sessions from Rust: open one over shards, run rounds (each one broadcast, one result per shard),
//! pipelined or one at a time, over the session's WebSocket; reconnects after the connection or the
//! server goes away, and picks up the round that was in flight without running it twice.
//!
//! ```no_run
//! # async fn demo() -> Result<(), distributivecom_client::ClientError> {
//! use distributivecom_client::Client;
//! use distributivecom_protocol::api::ChunkRequest;
//! use distributivecom_protocol::session::SessionRequest;
//!
//! let client = Client::new("http://127.0.0.1:8080")?.with_token("dc_...");
//! let module = client.upload_module(std::fs::read("gradient.wasm").unwrap()).await?;
//! let shards = (0..8).map(|i| ChunkRequest { args: vec![i.to_string()], ..Default::default() }).collect();
//! let request = SessionRequest { module, shards, budget_millicredits: 1_000_000, ..Default::default() };
//! let mut session = client.open_session(&request).await?;
//! let mut weights = vec![0u8; 16];
//! for _ in 0..10 {
//!     let results = session.round(weights.clone()).await?; // one per shard, in shard order
//!     weights = results[0].output.stdout.0.clone();
//! }
//! let refunded = session.close().await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use distributivecom_protocol::api::ChunkResult;
use distributivecom_protocol::backoff::Backoff;
use distributivecom_protocol::session::{
    SessionClientMessage, SessionCreated, SessionRequest, SessionRounds, SessionServerMessage, SessionStatus,
};
use distributivecom_protocol::{Bytes, SOCKET_READ_BUFFER_BYTES};
use futures_util::{SinkExt, Stream, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::{Client, ClientError};

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long the SDK keeps trying to reconnect to a session before it gives up.
const RECONNECT_FOR: Duration = Duration::from_secs(120);

/// What a session's socket says, as the SDK hands it on.
#[derive(Clone, Debug, PartialEq)]
pub enum SessionEvent {
    /// A shard's validated result.
    Result { round: u64, result: ChunkResult },
    /// Every shard of the round has answered.
    RoundDone { round: u64, spent_millicredits: i64 },
}

/// An open session; see the module documentation.
pub struct Session {
    client: Client,
    id: u64,
    shards: u32,
    socket: Socket,
    /// The number the next round gets.
    next_round: u64,
    /// Rounds sent and not done yet, with the results they have so far, by shard.
    running: BTreeMap<u64, Running>,
    /// Events read while waiting for something else, handed out first.
    queued: std::collections::VecDeque<SessionEvent>,
}

struct Running {
    broadcast: Bytes,
    /// Whether the server accepted the round.
    started: bool,
    results: BTreeMap<u32, ChunkResult>,
}

impl Client {
    /// Where a person can watch session `id` live in the web app.
    pub fn session_page(&self, id: u64) -> String {
        format!("{}/sessions/{id}", self.base)
    }

    /// The session and its rounds from `from` on (see `GET /api/sessions/{id}/rounds`).
    pub async fn session_rounds(&self, id: u64, from: u64) -> Result<SessionRounds, ClientError> {
        let url = self.url(&format!("/api/sessions/{id}/rounds?from={from}"));
        self.send(self.http.get(&url), url).await
    }

    /// Opens a session (escrowing its budget) and connects to it.
    pub async fn open_session(&self, request: &SessionRequest) -> Result<Session, ClientError> {
        let url = self.url("/api/sessions");
        let created: SessionCreated = self.send(self.http.post(&url).json(request), url).await?;
        let (socket, ready) = self.connect_session(created.id, None).await?;
        Ok(Session {
            client: self.clone(),
            id: created.id,
            shards: created.shards,
            socket,
            next_round: ready.0,
            running: BTreeMap::new(),
            queued: Default::default(),
        })
    }

    /// A session of this account's as it stands.
    pub async fn session_status(&self, id: u64) -> Result<SessionStatus, ClientError> {
        let url = self.url(&format!("/api/sessions/{id}"));
        self.send(self.http.get(&url), url).await
    }

    /// Connects to session `id`'s socket, asking for the results of rounds from `from_round` on again.
    /// Returns the socket and (next round, shards).
    async fn connect_session(&self, id: u64, from_round: Option<u64>) -> Result<(Socket, (u64, u32)), ClientError> {
        let mut url = format!("{}/api/sessions/{id}/ws", self.base.replacen("http", "ws", 1));
        if let Some(from_round) = from_round {
            url.push_str(&format!("?from_round={from_round}"));
        }
        let unreachable = |message: String| ClientError::Session { session: id, message };
        let mut request = url.as_str().into_client_request().map_err(|error| unreachable(error.to_string()))?;
        if let Some(token) = &self.token {
            let value =
                format!("Bearer {token}").parse().map_err(|_| unreachable("the token is not a header".into()))?;
            request.headers_mut().insert("authorization", value);
        }
        // Without Nagle's delay (`true`): a round's broadcast is one small write, waiting for nothing.
        let config = WebSocketConfig::default().read_buffer_size(SOCKET_READ_BUFFER_BYTES);
        let (mut socket, _) = match tokio_tungstenite::connect_async_with_config(request, Some(config), true).await {
            Ok(connected) => connected,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = response.status();
                let body = response.body().clone().unwrap_or_default();
                return Err(crate::api_error(status, &body));
            }
            Err(error) => return Err(unreachable(format!("could not connect to {url}: {error}"))),
        };
        match read(&mut socket, id).await? {
            SessionServerMessage::Ready { next_round, shards, .. } => Ok((socket, (next_round, shards))),
            other => Err(unreachable(format!("the server began with {other:?}, not ready"))),
        }
    }
}

/// The next message on the socket (skipping pings).
async fn read(socket: &mut Socket, session: u64) -> Result<SessionServerMessage, ClientError> {
    loop {
        let frame = socket.next().await;
        let lost = |message: String| ClientError::Session { session, message };
        match frame {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(&text).map_err(|error| lost(format!("an unreadable message: {error}")));
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Binary(_))) => return Err(lost("a binary message".to_owned())),
            Some(Ok(Message::Close(_))) | None => return Err(Disconnected.into_error(session)),
            Some(Err(error)) => return Err(lost(format!("the connection broke: {error}"))),
        }
    }
}

/// The socket closed under the SDK (worth reconnecting).
struct Disconnected;

impl Disconnected {
    fn into_error(self, session: u64) -> ClientError {
        ClientError::Session { session, message: "the connection closed".to_owned() }
    }
}

impl Session {
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// Runs one round: sends `broadcast` and returns every shard's result, in shard order.
    pub async fn round(&mut self, broadcast: Vec<u8>) -> Result<Vec<ChunkResult>, ClientError> {
        let round = self.start_round(broadcast).await?;
        self.finish_round(round).await
    }

    /// Runs one round, handing out each shard's result as it is validated (in completion order).
    pub fn round_stream(&mut self, broadcast: Vec<u8>) -> impl Stream<Item = Result<ChunkResult, ClientError>> + '_ {
        let start = Some(broadcast);
        futures_util::stream::unfold((self, start, None::<u64>, false), |(session, start, round, over)| async move {
            if over {
                return None;
            }
            let round = match (start, round) {
                (Some(broadcast), _) => match session.start_round(broadcast).await {
                    Ok(round) => round,
                    Err(error) => return Some((Err(error), (session, None, None, true))),
                },
                (None, Some(round)) => round,
                (None, None) => return None,
            };
            loop {
                match session.next_event().await {
                    Ok(SessionEvent::Result { round: of, result }) if of == round => {
                        return Some((Ok(result), (session, None, Some(round), false)));
                    }
                    Ok(SessionEvent::RoundDone { round: of, .. }) if of == round => return None,
                    Ok(other) => session.queued.push_back(other),
                    Err(error) => return Some((Err(error), (session, None, Some(round), true))),
                }
            }
        })
    }

    /// Sends round `next` without waiting for earlier rounds (pipelining); returns its number once the
    /// server accepted it.
    pub async fn start_round(&mut self, broadcast: Vec<u8>) -> Result<u64, ClientError> {
        let round = self.next_round;
        self.next_round += 1;
        self.running.insert(round, Running { broadcast: Bytes(broadcast), started: false, results: BTreeMap::new() });
        let accepted = async {
            self.send_round(round).await?;
            while !self.running.get(&round).is_some_and(|running| running.started) {
                let event = self.next_event().await?;
                self.queued.push_back(event);
            }
            Ok(round)
        }
        .await;
        if accepted.is_err() && !self.running.contains_key(&round) && self.next_round == round + 1 {
            // Refused: the number is free for the next round.
            self.next_round = round;
        }
        accepted
    }

    /// Waits until every shard of `round` has answered; returns the results in shard order.
    pub async fn finish_round(&mut self, round: u64) -> Result<Vec<ChunkResult>, ClientError> {
        // Events queued for this round were already recorded when they were read.
        self.queued.retain(|event| !matches!(event, SessionEvent::Result { round: of, .. } | SessionEvent::RoundDone { round: of, .. } if *of == round));
        loop {
            if self.running.get(&round).is_none_or(|running| running.results.len() as u32 == self.shards) {
                break;
            }
            let event = self.read_event().await?;
            if !matches!(&event, SessionEvent::Result { round: of, .. } | SessionEvent::RoundDone { round: of, .. } if *of == round)
            {
                self.queued.push_back(event);
            }
        }
        let running = self.running.remove(&round).ok_or_else(|| ClientError::Session {
            session: self.id,
            message: format!("round {round} was not sent on this session"),
        })?;
        Ok(running.results.into_values().collect())
    }

    /// The next result or finished round of any running round.
    pub async fn next_event(&mut self) -> Result<SessionEvent, ClientError> {
        if let Some(event) = self.queued.pop_front() {
            return Ok(event);
        }
        self.read_event().await
    }

    async fn send_round(&mut self, round: u64) -> Result<(), ClientError> {
        let broadcast = self.running[&round].broadcast.clone();
        let text = serde_json::to_string(&SessionClientMessage::Round { round, broadcast })
            .map_err(|error| ClientError::Session { session: self.id, message: error.to_string() })?;
        if self.socket.send(Message::Text(text.into())).await.is_err() {
            // The reconnect resends what the server did not take.
            self.reconnect().await?;
        }
        Ok(())
    }

    /// Reads events off the socket, recording results, until one is worth handing out; reconnects when the
    /// connection goes away.
    async fn read_event(&mut self) -> Result<SessionEvent, ClientError> {
        loop {
            let message = match read(&mut self.socket, self.id).await {
                Ok(message) => message,
                Err(_) => {
                    self.reconnect().await?;
                    continue;
                }
            };
            match message {
                SessionServerMessage::RoundStarted { round } => {
                    if let Some(running) = self.running.get_mut(&round) {
                        running.started = true;
                    }
                }
                SessionServerMessage::Result { round, result } => {
                    if let Some(running) = self.running.get_mut(&round) {
                        running.started = true;
                        if running.results.insert(result.index, result.clone()).is_none() {
                            return Ok(SessionEvent::Result { round, result });
                        }
                    }
                }
                SessionServerMessage::RoundDone { round, spent_millicredits } => {
                    if self.running.contains_key(&round) {
                        return Ok(SessionEvent::RoundDone { round, spent_millicredits });
                    }
                }
                SessionServerMessage::Error { message, round } => {
                    if let Some(round) = round {
                        self.running.remove(&round);
                    }
                    return Err(ClientError::Session { session: self.id, message });
                }
                SessionServerMessage::Closed { reason, .. } => {
                    return Err(ClientError::Session {
                        session: self.id,
                        message: format!("the session closed: {reason}"),
                    });
                }
                SessionServerMessage::Ready { .. } => {}
                // A figure for the live page that the server would not take: the rounds are unaffected.
                SessionServerMessage::NoteRefused { .. } => {}
            }
        }
    }

    /// Connects again (the server may be restarting), asks for the results of the rounds still running,
    /// and sends again the rounds the server never took.
    async fn reconnect(&mut self) -> Result<(), ClientError> {
        let mut backoff = Backoff::new();
        let started = std::time::Instant::now();
        let from_round = self.running.keys().next().copied();
        let (socket, (next_round, _)) = loop {
            match self.client.connect_session(self.id, from_round).await {
                Ok(connected) => break connected,
                // The session itself is gone or refused: nothing to retry.
                Err(error @ ClientError::Api { status: 404 | 401 | 403, .. }) => return Err(error),
                Err(error) if started.elapsed() > RECONNECT_FOR => return Err(error),
                Err(_) => {
                    let jitter = u64::from(started.elapsed().subsec_nanos());
                    tokio::time::sleep(Duration::from_millis(backoff.next_delay_ms(jitter))).await;
                }
            }
        };
        self.socket = socket;
        // Rounds below `next_round` were stored by the server: their results come from it again. The
        // rest never arrived, and are sent again, in order.
        let unsent: Vec<u64> = self.running.keys().copied().filter(|round| *round >= next_round).collect();
        for round in unsent {
            let broadcast = self.running[&round].broadcast.clone();
            let text = serde_json::to_string(&SessionClientMessage::Round { round, broadcast })
                .map_err(|error| ClientError::Session { session: self.id, message: error.to_string() })?;
            self.socket
                .send(Message::Text(text.into()))
                .await
                .map_err(|error| ClientError::Session { session: self.id, message: error.to_string() })?;
        }
        Ok(())
    }

    /// Attaches figures to a round (say the model's loss after it) for the session's live page.
    pub async fn note(&mut self, round: u64, mut metrics: BTreeMap<String, f64>) -> Result<(), ClientError> {
        // JSON has no NaN or infinity: such figures are left out rather than refused.
        metrics.retain(|_, value| value.is_finite());
        let text = serde_json::to_string(&SessionClientMessage::Note { round, metrics })
            .map_err(|error| ClientError::Session { session: self.id, message: error.to_string() })?;
        if self.socket.send(Message::Text(text.into())).await.is_err() {
            // A note is worth no reconnect of its own; the next round's reconnect will do.
            return Err(ClientError::Session { session: self.id, message: "the connection closed".to_owned() });
        }
        Ok(())
    }

    /// The number the last round got (0 before the first).
    pub fn last_round(&self) -> u64 {
        self.next_round - 1
    }

    /// Closes the session: running rounds stop and the rest of the escrow is refunded (returned).
    pub async fn close(mut self) -> Result<i64, ClientError> {
        let text = serde_json::to_string(&SessionClientMessage::Close {})
            .map_err(|error| ClientError::Session { session: self.id, message: error.to_string() })?;
        self.socket
            .send(Message::Text(text.into()))
            .await
            .map_err(|error| ClientError::Session { session: self.id, message: error.to_string() })?;
        loop {
            match read(&mut self.socket, self.id).await? {
                SessionServerMessage::Closed { refunded_millicredits, .. } => return Ok(refunded_millicredits),
                SessionServerMessage::Error { message, round: None } => {
                    return Err(ClientError::Session { session: self.id, message });
                }
                _ => {}
            }
        }
    }
}
