//! One worker's WebSocket session: the hello handshake, then a reader that turns frames into coordinator
//! events and a writer that batches the coordinator's messages into frames.
//!
//! The session is written against a generic `Stream` of [`Incoming`] frames and a `Sink` of [`Outgoing`]
//! ones, so it does not depend on axum's socket type; `http::worker_socket` adapts the real socket.

use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use distributivecom_protocol::worker::{Hello, ServerMessage, WorkerMessage};
use distributivecom_protocol::{PROTOCOL_VERSION, decode, encode};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::mpsc;

use crate::coordinator::{Coordinator, Outbound};

/// How long a new connection may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The most slots one worker may announce.
pub const MAX_SLOTS: u32 = 4096;

/// A frame from the worker, reduced to what the session cares about.
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

/// Runs the session of worker `worker` (an id from `Coordinator::new_worker_id`) to its end. The worker's
/// replicas are requeued when it ends, however it ends.
pub async fn run<R, W>(coordinator: Arc<Coordinator>, worker: u64, mut incoming: R, mut outgoing: W)
where
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
    let identity = match coordinator.identify(hello.credential.clone()).await {
        Ok(identity) => identity,
        Err(refusal) => {
            refuse(&mut outgoing, refusal).await;
            return;
        }
    };
    let volunteer = identity.volunteer.clone();
    let (sender, mut receiver) = mpsc::unbounded_channel();
    coordinator.connect(worker, &hello, identity, sender.clone());

    tracing::info!(
        worker, slots = hello.slots, kind = ?hello.kind, agent = %hello.agent, %volunteer, "worker connected"
    );

    let reading = read_messages(&coordinator, worker, &mut incoming);
    let writing = write_messages(&mut receiver, &mut outgoing);
    tokio::pin!(reading, writing);
    tokio::select! {
        ended = &mut reading => {
            coordinator.disconnect(worker);
            if let Err(refusal) = ended {
                tracing::info!(worker, %refusal, "closing a worker that broke the protocol");
                // Let the writer flush what is queued and then the refusal.
                let _ = sender.send(Outbound::Close(refusal));
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
        }
    }
    Ok(())
}

/// Sends what the coordinator queues, merging everything queued at once into as few frames as possible.
/// Ends when the coordinator drops the session or asks to close it, or when the socket fails.
async fn write_messages<W>(receiver: &mut mpsc::UnboundedReceiver<Outbound>, outgoing: &mut W)
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
        let mut revoked = Vec::new();
        let mut close = None;
        let mut frames = Vec::new();
        for message in queued.drain(..) {
            match message {
                Outbound::Welcome(welcome) => frames.push(encode(&ServerMessage::Welcome(welcome))),
                Outbound::Assign { job, chunk, replica } => assignments.push(job.assignment(chunk, replica)),
                Outbound::Revoke(replica) => revoked.push(replica),
                Outbound::Close(reason) => close = Some(reason),
            }
        }
        // Every revoke refers to a replica assigned earlier, so assignments go first.
        if !assignments.is_empty() {
            frames.push(encode(&ServerMessage::Assign(assignments)));
        }
        if !revoked.is_empty() {
            frames.push(encode(&ServerMessage::Revoke(revoked)));
        }
        for frame in frames {
            if let Err(error) = outgoing.feed(Outgoing::Binary(frame)).await {
                tracing::debug!(%error, "could not send to a worker");
                return;
            }
        }
        if let Some(reason) = close {
            refuse(outgoing, reason).await;
            return;
        }
        if let Err(error) = outgoing.flush().await {
            tracing::debug!(%error, "could not send to a worker");
            return;
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
