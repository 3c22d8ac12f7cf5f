//! The server's side of one worker's WebSocket: the hello handshake (its credential checked by `identity`
//! before anything else), then a reader that turns frames into coordinator events and a writer that
//! batches the coordinator's messages into frames.
//!
//! It is written against a generic `Stream` of [`Incoming`] frames and a `Sink` of [`Outgoing`] ones, so
//! it does not depend on the socket library; `http::workers` adapts the real socket, and the tests drive
//! it with in-memory channels.

use std::fmt::Display;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use distributivecom_protocol::worker::{Hello, ServerMessage, WorkerMessage};
use distributivecom_protocol::{PROTOCOL_VERSION, decode, encode};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::mpsc;

use crate::coordinator::{Coordinator, Outbound};
use crate::identity::Identity;

/// How long a new connection may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Messages queued for one worker at most; a worker whose queue is full does not read, and is closed.
pub const OUTBOX_CAPACITY: usize = 16_384;
/// About how many bytes of inputs one frame of assignments carries (one assignment may hold more).
const ASSIGN_FRAME_BYTES: u64 = 16 * 1024 * 1024;
/// How long any frame may take to send, and the slowest rate a worker may read at beyond that.
const WRITE_GRACE: Duration = Duration::from_secs(30);
const WRITE_BYTES_PER_SECOND: u64 = 256 * 1024;

use distributivecom_protocol::worker::MAX_SLOTS;

/// A frame from the worker, reduced to what the conversation cares about.
#[derive(Debug)]
pub enum Incoming {
    Binary(Vec<u8>),
    /// Text frames are not part of the protocol.
    Text,
    /// Ping, pong: the socket layer answers pings itself.
    Control,
    Closed,
    /// The connection broke, or the worker broke a rule of the socket layer (a message larger than it
    /// may send): the reason is told to the worker if the connection still takes it.
    Failed(String),
}

/// A frame to the worker.
#[derive(Debug)]
pub enum Outgoing {
    Binary(Vec<u8>),
    /// Close the connection with this reason.
    Close(String),
}

/// Runs the conversation of worker `worker` (an id from `Coordinator::new_worker_id`) to its end. The
/// worker's replicas are requeued when it ends, however it ends.
pub async fn run<R, W>(
    coordinator: Arc<Coordinator>,
    identity: Arc<Identity>,
    worker: u64,
    mut incoming: R,
    mut outgoing: W,
) where
    R: Stream<Item = Incoming> + Unpin,
    W: Sink<Outgoing> + Unpin,
    W::Error: Display,
{
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, read_hello(&mut incoming)).await {
        Ok(Ok(hello)) => hello,
        Ok(Err(refusal)) => {
            refuse(&mut outgoing, refusal).await;
            return;
        }
        Err(_) => {
            refuse(&mut outgoing, format!("no hello within {} seconds", HELLO_TIMEOUT.as_secs())).await;
            return;
        }
    };
    let identity = match identity.worker(hello.credential.clone()).await {
        Ok(identity) => identity,
        Err(refusal) => {
            refuse(&mut outgoing, refusal).await;
            return;
        }
    };
    let volunteer = identity.volunteer.clone();
    let (sender, mut receiver) = mpsc::channel(OUTBOX_CAPACITY);
    coordinator.connect(worker, &hello, identity, sender.clone());

    tracing::info!(
        worker, slots = hello.slots, kind = ?hello.kind, agent = %hello.agent, %volunteer, "worker connected"
    );

    let reading = read_messages(&coordinator, worker, &mut incoming);
    let writing = write_messages(&mut receiver, &mut outgoing, coordinator.bytes_to_workers());
    tokio::pin!(reading, writing);
    tokio::select! {
        ended = &mut reading => {
            coordinator.disconnect(worker);
            if let Err(refusal) = ended {
                tracing::info!(worker, %refusal, "closing a worker that broke the protocol");
                // Let the writer flush what is queued and then the refusal.
                let _ = sender.try_send(Outbound::Close(refusal));
                drop(sender);
                let _ = tokio::time::timeout(Duration::from_secs(5), writing).await;
            }
        }
        () = &mut writing => coordinator.disconnect(worker),
    }
    tracing::info!(worker, "worker disconnected");
}

/// Waits for the first binary frame and checks that it is an acceptable hello.
async fn read_hello<R: Stream<Item = Incoming> + Unpin>(incoming: &mut R) -> Result<Hello, String> {
    loop {
        match incoming.next().await {
            Some(Incoming::Binary(frame)) => {
                let message: WorkerMessage = decode(&frame).map_err(|error| error.to_string())?;
                let WorkerMessage::Hello(hello) = message else {
                    return Err("the first message must be hello".to_owned());
                };
                if hello.protocol_version != PROTOCOL_VERSION {
                    return Err(format!(
                        "protocol version {} is not supported; this server speaks version {PROTOCOL_VERSION}",
                        hello.protocol_version
                    ));
                }
                if hello.slots > MAX_SLOTS {
                    return Err(format!("{} slots is more than the maximum of {MAX_SLOTS}", hello.slots));
                }
                return Ok(hello);
            }
            Some(Incoming::Text) => return Err(text_refusal()),
            Some(Incoming::Control) => continue,
            Some(Incoming::Failed(reason)) => return Err(reason),
            Some(Incoming::Closed) | None => return Err("the connection closed before hello".to_owned()),
        }
    }
}

fn text_refusal() -> String {
    "text frames are not part of the protocol: send MessagePack in binary frames".to_owned()
}

/// Reads until the worker closes (Ok) or breaks the protocol (Err with the reason to tell it).
async fn read_messages<R: Stream<Item = Incoming> + Unpin>(
    coordinator: &Coordinator,
    worker: u64,
    incoming: &mut R,
) -> Result<(), String> {
    while let Some(frame) = incoming.next().await {
        let frame = match frame {
            Incoming::Binary(frame) => frame,
            Incoming::Text => return Err(text_refusal()),
            Incoming::Control => continue,
            Incoming::Closed => return Ok(()),
            Incoming::Failed(reason) => return Err(reason),
        };
        let message: WorkerMessage = decode(&frame).map_err(|error| error.to_string())?;
        match message {
            WorkerMessage::Hello(_) => return Err("hello was already sent on this connection".to_owned()),
            WorkerMessage::Heartbeat => coordinator.heartbeat(worker),
            WorkerMessage::Slots { slots } => {
                if slots > MAX_SLOTS {
                    return Err(format!("{slots} slots is more than the maximum of {MAX_SLOTS}"));
                }
                coordinator.set_slots(worker, slots);
            }
            WorkerMessage::Results(reports) => {
                coordinator.heartbeat(worker);
                for report in reports {
                    coordinator.report(worker, report);
                }
            }
            WorkerMessage::Release(replicas) => {
                for replica in replicas {
                    coordinator.release(worker, replica);
                }
            }
            WorkerMessage::Cached { added, evicted } => coordinator.cached(worker, &added, &evicted),
        }
    }
    Ok(())
}

/// Sends what the coordinator queues, merging everything queued at once into as few frames as possible,
/// but no frame carries much more than [`ASSIGN_FRAME_BYTES`] of inputs. Ends when the coordinator drops
/// the worker or asks to close it, when the socket fails, or when the worker reads too slowly.
async fn write_messages<W>(receiver: &mut mpsc::Receiver<Outbound>, outgoing: &mut W, sent: &AtomicU64)
where
    W: Sink<Outgoing> + Unpin,
    W::Error: Display,
{
    let mut queued = Vec::new();
    loop {
        if receiver.recv_many(&mut queued, 1024).await == 0 {
            let _ = outgoing.close().await;
            return;
        }
        let mut assignments = Vec::new();
        let mut assignment_bytes = 0u64;
        let mut revoked = Vec::new();
        let mut close = None;
        for message in queued.drain(..) {
            let frame = match message {
                Outbound::Welcome(welcome) => Some(encode(&ServerMessage::Welcome(welcome))),
                Outbound::Assign { job, chunk, replica } => {
                    assignment_bytes = assignment_bytes.saturating_add(job.input_bytes(chunk));
                    assignments.push(job.assignment(chunk, replica));
                    (assignment_bytes >= ASSIGN_FRAME_BYTES).then(|| {
                        assignment_bytes = 0;
                        encode(&ServerMessage::Assign(std::mem::take(&mut assignments)))
                    })
                }
                Outbound::Revoke(replica) => {
                    revoked.push(replica);
                    None
                }
                Outbound::Close(reason) => {
                    close = Some(reason);
                    None
                }
            };
            if let Some(frame) = frame
                && send_frame(outgoing, frame, sent).await.is_err()
            {
                return;
            }
        }
        // Every revoke refers to a replica assigned earlier, so assignments go first.
        if !assignments.is_empty()
            && send_frame(outgoing, encode(&ServerMessage::Assign(assignments)), sent).await.is_err()
        {
            return;
        }
        if !revoked.is_empty() && send_frame(outgoing, encode(&ServerMessage::Revoke(revoked)), sent).await.is_err() {
            return;
        }
        if let Some(reason) = close {
            refuse(outgoing, reason).await;
            return;
        }
    }
}

/// Sends one frame, giving up on a worker that does not take it within [`WRITE_GRACE`] plus a second per
/// [`WRITE_BYTES_PER_SECOND`] it holds: a worker that stops reading cannot hold the server's memory.
async fn send_frame<W>(outgoing: &mut W, frame: Vec<u8>, sent: &AtomicU64) -> Result<(), ()>
where
    W: Sink<Outgoing> + Unpin,
    W::Error: Display,
{
    sent.fetch_add(frame.len() as u64, Ordering::Relaxed);
    let allowed = WRITE_GRACE + Duration::from_secs(frame.len() as u64 / WRITE_BYTES_PER_SECOND);
    match tokio::time::timeout(allowed, outgoing.send(Outgoing::Binary(frame))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => {
            tracing::debug!(%error, "could not send to a worker");
            Err(())
        }
        Err(_) => {
            tracing::info!(seconds = allowed.as_secs(), "closing a worker that does not read what it is sent");
            Err(())
        }
    }
}

/// Tells the worker why it is being closed, then closes.
async fn refuse<W>(outgoing: &mut W, reason: String)
where
    W: Sink<Outgoing> + Unpin,
    W::Error: Display,
{
    let _ = outgoing.feed(Outgoing::Binary(encode(&ServerMessage::Error { message: reason.clone() }))).await;
    let _ = outgoing.send(Outgoing::Close(reason)).await;
    let _ = outgoing.close().await;
}
