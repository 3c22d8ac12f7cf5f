//! The worker protocol over a real WebSocket: malformed frames are refused with a message, forged and late
//! results are ignored, and a worker that stops heartbeating loses its leases within seconds.

use std::time::Duration;

use distributivecom_protocol::api::{JobRequest, ReplicationRequest};
use distributivecom_protocol::worker::{
    Credential, Hello, Output, ReplicaReport, RunStatus, ServerMessage, WorkerKind, WorkerMessage,
};
use distributivecom_protocol::{PROTOCOL_VERSION, decode, encode};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

/// A hello volunteering for the administrator, who owns the tests' jobs.
fn hello(server: &TestServer, slots: u32) -> WorkerMessage {
    hello_as(Some(Credential::Token(server.admin_token.clone())), slots)
}

fn hello_as(credential: Option<Credential>, slots: u32) -> WorkerMessage {
    WorkerMessage::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        kind: WorkerKind::Native,
        slots,
        agent: "script".into(),
        max_memory_bytes: None,
        prefetch_per_slot: None,
        credential,
        blobs: Vec::new(),
    })
}

/// Sends `first` on a fresh connection and returns the server's refusal.
async fn refusal_of(server: &TestServer, first: Message) -> String {
    let mut socket = connect(server).await;
    socket.send(first).await.unwrap();
    match receive(&mut socket).await {
        Some(ServerMessage::Error { message }) => {
            assert!(receive(&mut socket).await.is_none(), "the server closes after refusing");
            message
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_frames_are_refused_with_a_message_and_the_server_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);

    let garbage = refusal_of(&server, Message::Binary(vec![0xc1, 0x00, 0x42].into())).await;
    assert!(garbage.starts_with("malformed message"), "{garbage}");
    let text = refusal_of(&server, Message::Text("{\"hello\": {}}".into())).await;
    assert_eq!(text, "text frames are not part of the protocol: send MessagePack in binary frames");
    let first = refusal_of(&server, Message::Binary(encode(&WorkerMessage::Heartbeat).into())).await;
    assert_eq!(first, "the first message must be hello");
    let WorkerMessage::Hello(mut version) = hello(&server, 1) else { unreachable!("hello builds a hello") };
    version.protocol_version = 99;
    let old = refusal_of(&server, Message::Binary(encode(&WorkerMessage::Hello(version)).into())).await;
    assert_eq!(old, format!("protocol version 99 is not supported; this server speaks version {PROTOCOL_VERSION}"));

    // A worker must say whom it volunteers for, with a credential that holds.
    let nobody = refusal_of(&server, Message::Binary(encode(&hello_as(None, 1)).into())).await;
    assert!(nobody.starts_with("say who you volunteer for"), "{nobody}");
    let mistyped = hello_as(Some(Credential::Token("dc_not-a-token".into())), 1);
    let mistyped = refusal_of(&server, Message::Binary(encode(&mistyped).into())).await;
    assert_eq!(mistyped, "this API token is not valid: it was revoked or mistyped");
    let stranger = Credential::Volunteer { id: "v-unknown".into(), secret: "guess".into() };
    let stranger = refusal_of(&server, Message::Binary(encode(&hello_as(Some(stranger), 1)).into())).await;
    assert_eq!(stranger, "unknown volunteer identity or wrong secret");

    // Garbage after a good hello is refused too.
    let mut socket = connect(&server).await;
    send(&mut socket, &hello(&server, 1)).await;
    assert!(matches!(receive(&mut socket).await, Some(ServerMessage::Welcome(_))));
    socket.send(Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    assert!(matches!(receive(&mut socket).await, Some(ServerMessage::Error { .. })));

    let health = reqwest::get(format!("{}/api/health", server.url)).await.unwrap();
    assert_eq!(health.text().await.unwrap(), "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_results_are_ignored_and_a_silent_worker_loses_its_lease_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--lease-timeout-ms", "1000"]);
    let client = server.client();

    let mut silent = connect(&server).await;
    send(&mut silent, &hello(&server, 1)).await;
    assert!(matches!(receive(&mut silent).await, Some(ServerMessage::Welcome(_))));
    // One replica, run only by the owner's workers: these scripted ones volunteer as the owner.
    let request = JobRequest {
        chunks: vec![chunk(&["hi"])],
        replication: Some(ReplicationRequest { replicas: 1, quorum: 1 }),
        ..JobRequest::default()
    };
    let job = submit_request(&client, "echo-args", request).await;
    let Some(ServerMessage::Assign(assigned)) = receive(&mut silent).await else { panic!("expected an assignment") };
    let first_lease = assigned[0].replica;
    assert_eq!(assigned[0].args, ["echo-args.wasm", "hi"]);

    // Another worker claims a replica it does not hold: ignored.
    let mut honest = connect(&server).await;
    send(&mut honest, &hello(&server, 1)).await;
    assert!(matches!(receive(&mut honest).await, Some(ServerMessage::Welcome(_))));
    let forged = ReplicaReport {
        replica: first_lease,
        status: RunStatus::Exited { code: 0 },
        output: Output { stdout: "forged".into(), ..Output::default() },
        compute_us: 1,
        work_units: 1,
    };
    send(&mut honest, &WorkerMessage::Results(vec![forged.clone()])).await;

    // The silent worker never heartbeats: within a few seconds its lease moves to the honest worker.
    let reassigned = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            send(&mut honest, &WorkerMessage::Heartbeat).await;
            if let Ok(Some(Ok(Message::Binary(bytes)))) =
                tokio::time::timeout(Duration::from_millis(200), honest.next()).await
                && let Ok(ServerMessage::Assign(assigned)) = decode::<ServerMessage>(&bytes)
            {
                return assigned;
            }
        }
    })
    .await
    .expect("the lease moves within five seconds");
    assert_ne!(reassigned[0].replica, first_lease);
    assert_eq!(client.status(job).await.unwrap().finished_chunks(), 0, "the forged result was not taken");

    // The silent worker was told why it was closed; its late result is ignored.
    let closing = receive(&mut silent).await;
    assert!(
        matches!(&closing, Some(ServerMessage::Error { message }) if message.contains("no heartbeat")),
        "{closing:?}"
    );
    let genuine = ReplicaReport {
        replica: reassigned[0].replica,
        output: Output { stdout: "hi\n".into(), ..Output::default() },
        ..forged
    };
    send(&mut honest, &WorkerMessage::Results(vec![genuine])).await;
    let (_, results) = finish(&client, job).await;
    assert_eq!(results[0].output.stdout.as_ref(), b"hi\n");
    assert_eq!(results[0].attempts, 2);
}
