//! The worker socket's conversation over in-memory channels (no WebSocket, no port): hello and welcome,
//! assignments and reports, a report with every number at its maximum, a revoked token, and a worker that
//! stops reading.

use std::time::Duration;

use distributivecom_protocol::worker::{
    Credential, Hello, Output, ReplicaReport, RunStatus, ServerMessage, WorkerKind, WorkerMessage,
};
use distributivecom_protocol::{PROTOCOL_VERSION, decode, encode};
use distributivecom_server::worker_socket::{self, Incoming, Outgoing};
use futures_util::{Sink, Stream};
use serde_json::json;
use tokio::sync::mpsc;

use crate::support::*;

/// The worker's end of an in-memory conversation.
pub(crate) struct FakeWorker {
    to_server: mpsc::Sender<Incoming>,
    from_server: mpsc::Receiver<Outgoing>,
    conversation: tokio::task::JoinHandle<()>,
}

/// The server's end: a stream of what the worker sends and a sink for what the server sends.
fn channels(
    capacity: usize,
) -> (FakeWorker, impl Stream<Item = Incoming> + Unpin, impl Sink<Outgoing, Error = String> + Unpin) {
    let (to_server, incoming) = mpsc::channel(64);
    let (outgoing, from_server) = mpsc::channel(capacity);
    let stream =
        Box::pin(futures_util::stream::unfold(incoming, |mut incoming: mpsc::Receiver<Incoming>| async move {
            incoming.recv().await.map(|frame| (frame, incoming))
        }));
    let sink = Box::pin(futures_util::sink::unfold(outgoing, |outgoing: mpsc::Sender<Outgoing>, frame| async move {
        outgoing.send(frame).await.map_err(|_| "the worker hung up".to_owned())?;
        Ok::<_, String>(outgoing)
    }));
    let worker = FakeWorker { to_server, from_server, conversation: tokio::spawn(async {}) };
    (worker, stream, sink)
}

impl FakeWorker {
    /// Starts a conversation with `app`; `capacity` frames may wait unread at the worker.
    pub(crate) fn connect(app: &TestApp, capacity: usize) -> FakeWorker {
        let (mut worker, incoming, outgoing) = channels(capacity);
        let (coordinator, identity) = (app.coordinator.clone(), app.identity.clone());
        let id = coordinator.new_worker_id();
        worker.conversation = tokio::spawn(worker_socket::run(coordinator, identity, id, incoming, outgoing));
        worker
    }

    pub(crate) async fn send(&self, message: &WorkerMessage) {
        self.to_server.send(Incoming::Binary(encode(message))).await.unwrap();
    }

    /// The next protocol message, or `None` when the server closed.
    pub(crate) async fn receive(&mut self) -> Option<ServerMessage> {
        match tokio::time::timeout(Duration::from_secs(30), self.from_server.recv()).await.expect("an answer") {
            Some(Outgoing::Binary(frame)) => Some(decode(&frame).unwrap()),
            Some(Outgoing::Close(_)) | None => None,
        }
    }

    pub(crate) async fn hello(&mut self, credential: Credential, slots: u32) -> Option<ServerMessage> {
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            kind: WorkerKind::Native,
            slots,
            agent: "in memory".into(),
            max_memory_bytes: Some(u64::MAX),
            prefetch_per_slot: Some(u32::MAX),
            credential: Some(credential),
            blobs: Vec::new(),
        };
        self.send(&WorkerMessage::Hello(hello)).await;
        self.receive().await
    }
}

#[tokio::test]
async fn a_report_with_every_number_at_its_maximum_leaves_the_server_correct() {
    let app = TestApp::new().start().await;
    let mut worker = FakeWorker::connect(&app, 64);
    let Some(ServerMessage::Welcome(welcome)) = worker.hello(Credential::Token(app.admin_token.clone()), 1).await
    else {
        panic!("welcome expected")
    };
    assert_eq!(welcome.prefetch_per_slot, app.config.max_prefetch_per_slot, "u32::MAX prefetch is capped");
    let job = app.submit_noop(&app.admin_token, 1, json!({ "replication": { "replicas": 1, "quorum": 1 } })).await;
    let Some(ServerMessage::Assign(assigned)) = worker.receive().await else { panic!("an assignment expected") };
    let report = ReplicaReport {
        replica: assigned[0].replica,
        status: RunStatus::Exited { code: u32::MAX },
        output: Output::default(),
        compute_us: u64::MAX,
        work_units: u64::MAX,
    };
    // Releases of replicas it never held, and slot counts past the maximum, are refused or ignored.
    worker.send(&WorkerMessage::Release(vec![u64::MAX, 0])).await;
    worker.send(&WorkerMessage::Results(vec![report])).await;
    let mut status = serde_json::Value::Null;
    for _ in 0..20 {
        status = app.admin("GET", &format!("/api/jobs/{job}?wait_ms=5000&known_finished=0")).send().await.json();
        if status["state"] != "running" {
            break;
        }
    }
    assert_eq!(status["state"], "failed", "exit status u32::MAX is a failure, stored as reported");
    let results = app.admin("GET", &format!("/api/jobs/{job}/results")).send().await.json();
    assert_eq!(results["results"][0]["work_units"], u64::MAX);
    assert_eq!(results["results"][0]["reason"], format!("exited with status {}", u32::MAX));
    // Paid for the job's work limit at most, out of an escrow that stays whole.
    let limit = app.config.default_limits.max_work_units;
    assert_eq!(status["spent_millicredits"].as_i64(), Some(app.config.pricing.cost(limit)));
    let connection = rusqlite::Connection::open(app.database()).unwrap();
    let totals = distributivecom_server::store::ledger::totals(&connection).unwrap();
    assert!(totals.conserved(), "{totals:?}");
    assert_eq!(distributivecom_server::store::ledger::audit(&connection).unwrap(), vec![]);

    worker.send(&WorkerMessage::Slots { slots: u32::MAX }).await;
    let refusal = worker.receive().await;
    assert!(
        matches!(&refusal, Some(ServerMessage::Error { message }) if message.contains("more than the maximum")),
        "{refusal:?}"
    );
    assert_eq!(worker.receive().await, None, "and the connection closes");
}

#[tokio::test]
async fn a_revoked_token_closes_the_workers_that_use_it_and_refuses_new_ones() {
    let app = TestApp::new().start().await;
    let (cookie, csrf) = app.sign_up("alice").await;
    let (id, token) = app.create_token(&cookie, &csrf, "workers").await;
    let mut connected = FakeWorker::connect(&app, 64);
    assert!(matches!(connected.hello(Credential::Token(token.clone()), 1).await, Some(ServerMessage::Welcome(_))));
    let revoke = app.request("DELETE", &format!("/api/account/tokens/{id}"));
    assert_eq!(revoke.header("cookie", &cookie).header("x-csrf-token", &csrf).send().await.status, 204);
    let closed = connected.receive().await;
    assert!(matches!(&closed, Some(ServerMessage::Error { message }) if message.contains("revoked")), "{closed:?}");
    assert_eq!(connected.receive().await, None);
    let mut later = FakeWorker::connect(&app, 64);
    let refused = later.hello(Credential::Token(token), 1).await;
    assert!(matches!(&refused, Some(ServerMessage::Error { message }) if message.contains("revoked")), "{refused:?}");
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_stops_reading_is_closed_and_its_replicas_go_to_others() {
    let app = TestApp::new().start().await;
    // Room for the welcome and one frame, then nothing more is read.
    let mut stalled = FakeWorker::connect(&app, 1);
    assert!(matches!(
        stalled.hello(Credential::Token(app.admin_token.clone()), 4).await,
        Some(ServerMessage::Welcome(_))
    ));
    app.submit_noop(&app.admin_token, 200, json!({ "replication": { "replicas": 1, "quorum": 1 } })).await;
    // It hands back what it was given (replica ids start at the block the app was started with), so the
    // server has more to send it; it keeps heartbeating (its leases would otherwise lapse) but reads
    // nothing: only the write deadline can end it. Paused time runs ahead whenever every task waits.
    // (Once its assignments wait for it unread: a release read before they were sent would only be merged
    // into the same frame.)
    while stalled.from_server.is_empty() {
        tokio::task::yield_now().await;
    }
    stalled.send(&WorkerMessage::Release(((1u64 << 32)..(1u64 << 32) + 68).collect())).await;
    let beating = {
        let to_server = stalled.to_server.clone();
        tokio::spawn(async move {
            loop {
                if to_server.send(Incoming::Binary(encode(&WorkerMessage::Heartbeat))).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    tokio::time::timeout(Duration::from_secs(600), &mut stalled.conversation)
        .await
        .expect("the conversation ends within the write deadline")
        .unwrap();
    beating.abort();
    let stats = app.coordinator.stats();
    assert_eq!(stats.workers, 0, "the worker was let go");
    assert_eq!((stats.replicas_in_flight, stats.pending_chunks), (0, 200), "what it held went back to the queue");
}
