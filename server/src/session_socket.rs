//! The server's side of a consumer's session WebSocket (`GET /api/sessions/{id}/ws`): JSON text frames,
//! rounds in, validated results out, tagged by round.
//!
//! Like `worker_socket`, it is written against a generic `Stream` of [`Incoming`] frames and a `Sink` of
//! text frames, so `http::sessions` adapts the real socket and tests drive it with channels. Bad messages
//! get an `error` message and the conversation goes on.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use distributivecom_protocol::session::{SessionClientMessage, SessionServerMessage};
use futures_util::{Sink, SinkExt, Stream, StreamExt};

use crate::coordinator::{Coordinator, Refusal, SessionFeed};

/// A frame from the consumer.
#[derive(Debug)]
pub enum Incoming {
    Text(String),
    /// Binary frames are not part of this protocol.
    Binary,
    Closed,
}

/// How long any message may take to send, and the slowest rate a consumer may read at beyond that.
const SEND_GRACE: Duration = Duration::from_secs(30);
const SEND_BYTES_PER_SECOND: u64 = 256 * 1024;

/// How many finished rounds the conversation remembers, to drop a result it already sent when a
/// reconnect's backlog and the live feed overlap.
const REMEMBERED_ROUNDS: usize = 1024;

/// The most messages, and about the most bytes, from the feed written together (one round's results,
/// typically).
const MAX_BATCH: usize = 256;
const MAX_BATCH_BYTES: u64 = 1024 * 1024;

/// Runs the conversation with `owner`'s consumer of `session`, already attached with `feed`, replaying
/// results of rounds from `from_round` on first (if given). Detaches the session when it ends.
pub async fn run<R, W>(
    coordinator: Arc<Coordinator>,
    owner: u64,
    session: u64,
    from_round: Option<u64>,
    feed: SessionFeed,
    incoming: R,
    outgoing: W,
) where
    R: Stream<Item = Incoming> + Unpin,
    W: Sink<String> + Unpin,
{
    let mut conversation = Conversation {
        coordinator: coordinator.clone(),
        owner,
        session,
        outgoing,
        sent: Sent::default(),
        queued: Vec::new(),
    };
    let _ = conversation.serve(from_round, feed, incoming).await;
    coordinator.detach_session(session);
}

/// What was sent already, by round.
#[derive(Default)]
struct Sent {
    results: HashSet<(u64, u32)>,
    done: BTreeSet<u64>,
}

impl Sent {
    /// Whether `message` is new (and then remembers it).
    fn is_new(&mut self, message: &SessionServerMessage) -> bool {
        match message {
            SessionServerMessage::Result { round, result } => {
                !self.done.contains(round) && self.results.insert((*round, result.index))
            }
            SessionServerMessage::RoundDone { round, .. } => {
                if !self.done.insert(*round) {
                    return false;
                }
                self.results.retain(|(held, _)| held != round);
                while self.done.len() > REMEMBERED_ROUNDS {
                    self.done.pop_first();
                }
                true
            }
            _ => true,
        }
    }
}

struct Conversation<W> {
    coordinator: Arc<Coordinator>,
    owner: u64,
    session: u64,
    outgoing: W,
    sent: Sent,
    /// Messages from the feed waiting to be written together.
    queued: Vec<String>,
}

/// The conversation is over (the socket or the session closed).
struct Ended;

impl<W: Sink<String> + Unpin> Conversation<W> {
    async fn serve<R>(&mut self, from_round: Option<u64>, mut feed: SessionFeed, mut incoming: R) -> Result<(), Ended>
    where
        R: Stream<Item = Incoming> + Unpin,
    {
        let status = self.coordinator.session_status(self.owner, self.session).await.map_err(|_| Ended)?;
        let Some(status) = status else { return Err(Ended) };
        self.send(SessionServerMessage::Ready {
            session: self.session,
            shards: status.shards,
            next_round: status.next_round,
            rounds_running: status.rounds_running,
        })
        .await?;
        if let Some(from_round) = from_round {
            self.replay(from_round).await?;
        }
        loop {
            tokio::select! {
                message = feed.recv() => {
                    let Some(mut message) = message else { return Err(Ended) };
                    // What is waiting besides goes out with it, in one write: a round's results tend to
                    // become durable together, in one group commit.
                    for _ in 0..MAX_BATCH {
                        let closed = matches!(message, SessionServerMessage::Closed { .. });
                        self.queue(message)?;
                        if closed {
                            self.flush().await?;
                            return Ok(());
                        }
                        if self.queued_bytes() >= MAX_BATCH_BYTES {
                            break;
                        }
                        match feed.try_recv() {
                            Some(next) => message = next,
                            None => break,
                        }
                    }
                    self.flush().await?;
                }
                frame = incoming.next() => match frame {
                    Some(Incoming::Text(text)) => self.handle(&text).await?,
                    Some(Incoming::Binary) => {
                        self.error("send JSON in text frames (see docs/protocol.md, \"Sessions\")", None).await?;
                    }
                    Some(Incoming::Closed) | None => return Ok(()),
                },
            }
        }
    }

    /// Sends again what a reconnecting consumer may have missed: the stored results of rounds from
    /// `from_round` on, a page at a time, with `round_done` after each finished round and an `error` for
    /// each stopped one.
    async fn replay(&mut self, from_round: u64) -> Result<(), Ended> {
        let rounds = self.coordinator.session_backlog_rounds(self.session, from_round).await.map_err(|_| Ended)?;
        for row in rounds {
            let mut after = 0;
            loop {
                let page = self.coordinator.round_results(row.job, after).await.map_err(|_| Ended)?;
                let Some((last, _)) = page.last() else { break };
                after = *last;
                for (_, result) in page {
                    self.forward(SessionServerMessage::Result { round: row.round, result }).await?;
                }
            }
            if row.results_stored == row.chunk_count {
                self.forward(SessionServerMessage::RoundDone { round: row.round, spent_millicredits: row.spent })
                    .await?;
            } else if row.cancelled {
                let message = format!("round {} stopped", row.round);
                self.send(SessionServerMessage::Error { message, round: Some(row.round) }).await?;
            }
        }
        Ok(())
    }

    async fn handle(&mut self, text: &str) -> Result<(), Ended> {
        let message: SessionClientMessage = match serde_json::from_str(text) {
            Ok(message) => message,
            Err(error) => return self.error(&format!("could not read the message: {error}"), None).await,
        };
        match message {
            SessionClientMessage::Round { round, broadcast } => {
                match self.coordinator.start_round(self.owner, self.session, round, broadcast).await {
                    Ok(_) => self.send(SessionServerMessage::RoundStarted { round }).await,
                    Err(Refusal::Store(error)) => {
                        tracing::error!(session = self.session, round, %error, "could not start a round");
                        self.error("the server could not store the round; try again", Some(round)).await
                    }
                    Err(refusal) => self.error(&refusal.to_string(), Some(round)).await,
                }
            }
            SessionClientMessage::Note { round, metrics } => {
                match self.coordinator.note_round(self.owner, self.session, round, metrics).await {
                    Ok(()) => Ok(()),
                    Err(refusal) => {
                        self.send(SessionServerMessage::NoteRefused { round, message: refusal.to_string() }).await
                    }
                }
            }
            SessionClientMessage::Close {} => {
                match self.coordinator.close_session(self.session, "closed by its consumer").await {
                    // The feed carries the `closed` message.
                    Ok(_) => Ok(()),
                    Err(error) => {
                        tracing::error!(session = self.session, %error, "could not close a session");
                        self.error("the server could not close the session; try again", None).await
                    }
                }
            }
        }
    }

    /// Sends a result or a round's end unless it was sent already.
    async fn forward(&mut self, message: SessionServerMessage) -> Result<(), Ended> {
        self.queue(message)?;
        self.flush().await
    }

    /// Adds a message from the feed to what the next [`Conversation::flush`] writes, unless it was sent.
    fn queue(&mut self, message: SessionServerMessage) -> Result<(), Ended> {
        if self.sent.is_new(&message) {
            self.queued.push(serde_json::to_string(&message).map_err(|_| Ended)?);
        }
        Ok(())
    }

    fn queued_bytes(&self) -> u64 {
        self.queued.iter().map(|text| text.len() as u64).sum()
    }

    /// Writes the queued messages and flushes them, under one deadline for all of them.
    async fn flush(&mut self) -> Result<(), Ended> {
        let bytes = self.queued_bytes();
        let texts = std::mem::take(&mut self.queued);
        let outgoing = &mut self.outgoing;
        let write = async move {
            for text in texts {
                outgoing.feed(text).await?;
            }
            outgoing.flush().await
        };
        within_deadline(self.session, bytes, write).await
    }

    async fn error(&mut self, message: &str, round: Option<u64>) -> Result<(), Ended> {
        self.send(SessionServerMessage::Error { message: message.to_owned(), round }).await
    }

    /// Sends one message, giving up on a consumer that does not take it in time: one that stops reading
    /// cannot hold the conversation forever (its feed, meanwhile, is dropped once full).
    async fn send(&mut self, message: SessionServerMessage) -> Result<(), Ended> {
        let text = serde_json::to_string(&message).map_err(|_| Ended)?;
        let bytes = text.len() as u64;
        within_deadline(self.session, bytes, self.outgoing.send(text)).await
    }
}

/// Awaits `write` of `bytes`, giving up on a consumer that does not take them within [`SEND_GRACE`] plus a
/// second per [`SEND_BYTES_PER_SECOND`].
async fn within_deadline<E>(session: u64, bytes: u64, write: impl Future<Output = Result<(), E>>) -> Result<(), Ended> {
    let allowed = SEND_GRACE + Duration::from_secs(bytes / SEND_BYTES_PER_SECOND);
    match tokio::time::timeout(allowed, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Ended),
        Err(_) => {
            tracing::info!(session, "closing the socket of a session's consumer that does not read");
            Err(Ended)
        }
    }
}
