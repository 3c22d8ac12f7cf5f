//! What an attacker who read only the public docs tried, each a regression test named after what it
//! guards: volunteers that fail other people's chunks or report more than a job allows, silent and
//! half-open connections, absurd declared sizes, failed claims that look like success, errors that are not
//! JSON, and a module hash that does not fetch. The server keeps serving through all of it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use distributivecom_protocol::api::{ChunkRequest, JobRequest, JobState, LimitsRequest, ReplicationRequest};
use distributivecom_protocol::worker::{
    Credential, Hello, Output, ReplicaReport, RunStatus, ServerMessage, WorkerKind, WorkerMessage,
};
use distributivecom_protocol::{Bytes, PROTOCOL_VERSION};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

/// A scripted worker under a fresh anonymous identity, connected and welcomed.
async fn scripted_worker(server: &TestServer, slots: u32) -> (Socket, String) {
    let identity = server.anonymous_client().register_volunteer().await.unwrap();
    let mut socket = connect(server).await;
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        kind: WorkerKind::Native,
        slots,
        agent: "hostile script".into(),
        max_memory_bytes: None,
        prefetch_per_slot: Some(0),
        credential: Some(Credential::Volunteer { id: identity.id.clone(), secret: identity.secret }),
        blobs: Vec::new(),
    };
    send(&mut socket, &WorkerMessage::Hello(hello)).await;
    assert!(matches!(receive(&mut socket).await, Some(ServerMessage::Welcome(_))));
    (socket, format!("volunteer:{}", identity.id))
}

/// The next assignments the server sends, skipping revokes.
async fn next_assignments(socket: &mut Socket) -> Vec<distributivecom_protocol::worker::Assignment> {
    loop {
        match receive(socket).await {
            Some(ServerMessage::Assign(assignments)) => return assignments,
            Some(ServerMessage::Revoke(_)) => continue,
            other => panic!("expected assignments, got {other:?}"),
        }
    }
}

fn failed(replica: u64, message: &str) -> ReplicaReport {
    ReplicaReport {
        replica,
        status: RunStatus::Failed { message: message.to_owned() },
        output: Output::default(),
        compute_us: 1,
        work_units: 0,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_volunteer_alone_online_cannot_fail_other_peoples_chunks_with_machine_side_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let client = server.client();
    let (mut saboteur, _) = scripted_worker(&server, 4).await;
    let chunks: Vec<ChunkRequest> = (0..40).map(|index| chunk(&[&index.to_string()])).collect();
    let job = submit(&client, "echo-args", chunks.clone()).await;

    // Alone online, it errs on every replica it is given, alternately "could not fetch" and "timed out",
    // for as long as the server gives it any.
    let mut errors = 0;
    loop {
        let assigned = match tokio::time::timeout(Duration::from_secs(3), receive(&mut saboteur)).await {
            Ok(Some(ServerMessage::Assign(assigned))) => assigned,
            Ok(Some(ServerMessage::Revoke(_))) => continue,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => break,
        };
        let reports = assigned
            .iter()
            .map(|assignment| {
                errors += 1;
                if errors % 2 == 0 {
                    ReplicaReport { status: RunStatus::TimedOut, ..failed(assignment.replica, "") }
                } else {
                    failed(assignment.replica, "could not fetch the module")
                }
            })
            .collect();
        send(&mut saboteur, &WorkerMessage::Results(reports)).await;
    }
    assert_eq!(errors, 40, "each chunk went to the saboteur once, and never again");
    let status = client.status(job).await.unwrap();
    assert_eq!((status.failed, status.succeeded), (0, 0), "no chunk failed because of one volunteer");
    let reason = status.waiting_reason.expect("a waiting job says why");
    assert!(reason.contains("distinct volunteers") || reason.contains("failed on every"), "{reason}");

    // Honest volunteers who join later run every chunk, and every chunk succeeds.
    let _honest = [server.worker(1), server.worker(1)];
    let (status, results) = finish(&client, job).await;
    assert_eq!(status.state, JobState::Succeeded, "{status:?}");
    assert_results_match_native_runs(&status, "echo-args", &chunks, &results);
    drop(saboteur);
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_larger_than_the_jobs_limits_are_dropped_unpaid_and_counted_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--trust-after", "1000000"]);
    let client = server.client();
    let (mut liar, liar_key) = scripted_worker(&server, 1).await;
    let request = JobRequest {
        chunks: vec![chunk(&["small"])],
        limits: LimitsRequest { max_stdout_bytes: Some(1024), ..LimitsRequest::default() },
        ..JobRequest::default()
    };
    let job = submit_request(&client, "echo-args", request).await;
    let assigned = next_assignments(&mut liar).await;
    // 2 KiB of stdout for a job that keeps at most 1 KiB: no honest worker sends it.
    let oversized = ReplicaReport {
        replica: assigned[0].replica,
        status: RunStatus::Exited { code: 0 },
        output: Output { stdout: Bytes(vec![b'x'; 2048]), ..Output::default() },
        compute_us: 1,
        work_units: 1,
    };
    send(&mut liar, &WorkerMessage::Results(vec![oversized])).await;
    let _honest = [server.worker(1), server.worker(1)];
    let (status, results) = finish(&client, job).await;
    assert_eq!(status.state, JobState::Succeeded);
    assert_eq!(results[0].output.stdout.as_ref(), b"small\n");

    let database = read_only(&server.database());
    let (validated, invalid): (i64, i64) = database
        .query_row("SELECT validated, invalid FROM reputation WHERE volunteer = ?1", [&liar_key], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .unwrap();
    assert_eq!((validated, invalid), (0, 1), "the oversized report counts against its volunteer");
    assert_eq!(ledger_balance(&server.database(), &liar_key), 0, "and earns nothing");
    assert_ledger_conserved(&server.database());
    drop(liar);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_may_send_no_frame_larger_than_what_it_holds_and_every_number_in_a_report_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let client = server.client();

    // Holding nothing, a worker may send small messages only: 1 MiB is refused before it is read whole.
    let (mut idle, _) = scripted_worker(&server, 1).await;
    let padding = WorkerMessage::Release(vec![u64::MAX; 128 * 1024]);
    let _ = idle.send(Message::Binary(distributivecom_protocol::encode(&padding).into())).await;
    match receive(&mut idle).await {
        Some(ServerMessage::Error { message }) => {
            assert!(message.contains("larger than this worker may send"), "{message}")
        }
        None => {} // The refusal may not reach a peer still writing; the connection is closed either way.
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(receive(&mut idle).await.is_none(), "the connection is closed");

    // A worker that holds a replica may report it whole, and every number it sends is at its maximum:
    // the server stays correct, pays no more than the job's work limit and keeps serving.
    let (mut greedy, greedy_key) = scripted_worker(&server, 1).await;
    let request = JobRequest {
        chunks: vec![chunk(&["n"])],
        replication: Some(ReplicationRequest { replicas: 2, quorum: 2 }),
        ..JobRequest::default()
    };
    let job = submit_request(&client, "echo-args", request).await;
    let assigned = next_assignments(&mut greedy).await;
    let report = ReplicaReport {
        replica: assigned[0].replica,
        status: RunStatus::Exited { code: u32::MAX },
        output: Output::default(),
        compute_us: u64::MAX,
        work_units: u64::MAX,
    };
    send(&mut greedy, &WorkerMessage::Results(vec![report])).await;
    send(&mut greedy, &WorkerMessage::Slots { slots: u32::MAX }).await;
    assert!(matches!(receive(&mut greedy).await, Some(ServerMessage::Error { .. })), "u32::MAX slots is refused");
    let _honest = [server.worker(1), server.worker(1)];
    let (status, results) = finish(&client, job).await;
    assert_eq!(status.state, JobState::Succeeded);
    assert_eq!(results[0].output.stdout.as_ref(), b"n\n");
    assert_eq!(ledger_balance(&server.database(), &greedy_key), 0, "a contradicted report earns nothing");
    assert_ledger_conserved(&server.database());
    let health = reqwest::get(format!("{}/api/health", server.url)).await.unwrap();
    assert_eq!(health.status(), 200);
}

/// A blocking connection to the server from `source` (any address of 127.0.0.0/8: Linux routes all of it to
/// the loopback device), so that a test can be several clients at once.
async fn tcp_from(source: [u8; 4], server: &TestServer) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    let stream = socket.connect(SocketAddr::from(([127, 0, 0, 1], server.port))).await.unwrap();
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    // Liveness, not speed: far above every timeout configured in these tests.
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream
}

/// Sends a whole request for /api/health and says whether the server answered it (true) or closed the
/// connection without an answer (false).
fn answered(stream: &mut TcpStream) -> bool {
    if stream.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n").is_err() {
        return false;
    }
    let mut buffer = [0u8; 512];
    match stream.read(&mut buffer) {
        Ok(read) => String::from_utf8_lossy(&buffer[..read]).starts_with("HTTP/1.1 200"),
        Err(_) => false,
    }
}

/// Whether the server closes `stream` (within the read timeout): a read returns end of file or a reset.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_and_half_open_connections_are_closed_and_capped_per_address_and_in_total() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        dir.path(),
        &["--header-read-timeout-ms", "3000", "--max-connections-per-address", "20", "--max-connections", "30"],
    );
    // Its soft open-file limit was raised to the hard limit at start.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.process.id())).unwrap();
    let open_files = limits.lines().find(|line| line.starts_with("Max open files")).unwrap();
    let numbers: Vec<&str> = open_files.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers[0], numbers[1], "soft limit raised to the hard one: {open_files}");

    // 25 connections from one address: 20 are served, 5 are closed at once without an answer.
    let mut first = Vec::new();
    for _ in 0..25 {
        first.push(tcp_from([127, 0, 0, 1], &server).await);
    }
    let served = first.iter_mut().map(answered).filter(|served| *served).count();
    assert_eq!(served, 20, "at most 20 connections per address");
    // 5 from a second address are served; of 10 from a third, 5 fit under the total of 30.
    let mut second = Vec::new();
    for _ in 0..5 {
        second.push(tcp_from([127, 0, 0, 2], &server).await);
    }
    assert!(second.iter_mut().all(answered), "another address is served");
    let mut third = Vec::new();
    for _ in 0..10 {
        third.push(tcp_from([127, 0, 0, 3], &server).await);
    }
    assert_eq!(third.iter_mut().map(answered).filter(|served| *served).count(), 5, "at most 30 in total");

    // Silence, half a request head, and a kept-alive connection gone idle are all closed at the timeout.
    let mut silent = tcp_from([127, 0, 0, 4], &server).await;
    let mut half = tcp_from([127, 0, 0, 4], &server).await;
    half.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n").unwrap();
    for stream in first.iter_mut().chain(&mut second).chain(&mut third) {
        assert!(closed_by_server(stream), "an idle kept-alive connection is closed");
    }
    assert!(closed_by_server(&mut silent), "a silent connection is closed");
    assert!(closed_by_server(&mut half), "half a request head is not waited for forever");

    // Closed connections linger a moment (reading what their clients still send) before their places in
    // the counts come back; then the server serves that address again.
    let url = format!("{}/api/health", server.url);
    eventually("the server to serve again", Duration::from_secs(30), || async {
        reqwest::get(&url).await.is_ok_and(|answer| answer.status() == 200)
    })
    .await;
}

/// Sends raw bytes on a fresh connection and returns the status line and body of the answer.
async fn raw_exchange(server: &TestServer, request: &[u8]) -> (String, serde_json::Value) {
    let mut stream = tcp_from([127, 0, 0, 1], server).await;
    stream.write_all(request).unwrap();
    let mut received = Vec::new();
    let _ = stream.read_to_end(&mut received);
    let text = String::from_utf8_lossy(&received).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no answer: {text:?}"));
    let status = head.lines().next().unwrap().to_owned();
    assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
    (status, serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}")))
}

#[tokio::test(flavor = "multi_thread")]
async fn absurd_declared_sizes_are_refused_at_once_without_reading_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let token = &server.admin_token;
    for (path, length) in [
        ("/api/modules", "1000000000000"),
        ("/api/jobs", "1000000000000"),
        ("/api/auth/signup", "1000000000000"),
        ("/api/modules", "9223372036854775807"),
    ] {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n\
             Content-Length: {length}\r\n\r\n"
        );
        let (status, body) = raw_exchange(&server, request.as_bytes()).await;
        assert!(status.contains(" 413 "), "{path} with {length}: {status}");
        assert!(body["error"].as_str().unwrap().contains("larger than the limit of"), "{body}");
    }
    // A chunked body could announce 2^64 - 1 bytes in its first chunk and then send nothing.
    let chunked = format!(
        "POST /api/modules HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n\
         ffffffffffffffff\r\n"
    );
    let (status, body) = raw_exchange(&server, chunked.as_bytes()).await;
    assert!(status.contains(" 411 "), "{status}");
    assert!(body["error"].as_str().unwrap().contains("Content-Length"), "{body}");
    let health = reqwest::get(format!("{}/api/health", server.url)).await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sign_up_that_claims_nothing_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let someone = server.anonymous_client().register_volunteer().await.unwrap();
    let http = reqwest::Client::new();
    let body = serde_json::json!({
        "username": "mallory",
        "password": "correct horse battery",
        "volunteer": {"id": someone.id, "secret": "a wrong secret"},
    });
    let answer = http.post(format!("{}/api/auth/signup", server.url)).json(&body).send().await.unwrap();
    assert_eq!(answer.status(), 201);
    let session: serde_json::Value = answer.json().await.unwrap();
    let claim = &session["volunteer_claim"];
    assert_eq!(claim["claimed"], false, "{session}");
    assert_eq!(claim["millicredits"], 0);
    assert!(claim["message"].as_str().unwrap().starts_with("nothing was claimed"), "{claim}");

    // The right secret claims it, and says so.
    let body = serde_json::json!({
        "username": "owner",
        "password": "correct horse battery",
        "volunteer": {"id": someone.id, "secret": someone.secret},
    });
    let session: serde_json::Value =
        http.post(format!("{}/api/auth/signup", server.url)).json(&body).send().await.unwrap().json().await.unwrap();
    assert_eq!(session["volunteer_claim"]["claimed"], true, "{session}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_rejection_is_json_with_a_message_a_person_understands() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.url);
    let token = server.admin_token.clone();
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            http.get(url("/api/jobs/abc")).bearer_auth(&token),
            400,
            "\"abc\" in the URL /api/jobs/abc is not a whole number",
        ),
        (
            http.get(url("/api/jobs/1/results?offset=-1")).bearer_auth(&token),
            400,
            "the query string is not valid: offset",
        ),
        (
            http.get(url("/api/jobs/1/results?limit=many")).bearer_auth(&token),
            400,
            "the query string is not valid: limit",
        ),
        (http.get(url("/api/jobs/1?wait_ms=-5")).bearer_auth(&token), 400, "the query string is not valid: wait_ms"),
        (http.get(url("/api/account/ledger?limit=x")).bearer_auth(&token), 400, "the query string is not valid: limit"),
        (http.delete(url("/api/account/tokens/abc")).bearer_auth(&token), 400, "\"abc\" in the URL"),
        (http.delete(url("/api/jobs")).bearer_auth(&token), 405, "/api/jobs does not take DELETE"),
        (http.put(url("/api/health")), 405, "/api/health does not take PUT"),
        (http.get(url("/api/no-such-thing")), 404, "nothing at /api/no-such-thing"),
        (http.get(url("/modules/zzz")), 404, "is not a module hash"),
        (http.get(url("/api/workers/ws")), 400, "send a WebSocket handshake"),
        (http.post(url("/api/auth/login")).body("{}"), 415, "Content-Type: application/json"),
        (
            http.post(url("/api/auth/login")).header("content-type", "application/json").body("{not json"),
            400,
            "could not read the request",
        ),
        (
            http.post(url("/api/jobs")).bearer_auth(&token).header("content-type", "application/json").body("[]"),
            400,
            "could not read the job request",
        ),
        (http.get(url("/api/account")).header("authorization", "Basic eA=="), 401, "unsupported Authorization header"),
    ];
    for (request, status, message) in cases {
        let request = request.build().unwrap();
        let what = format!("{} {}", request.method(), request.url().path());
        let answer = http.execute(request).await.unwrap();
        assert_eq!(answer.status().as_u16(), status, "{what}");
        let content_type = answer.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("application/json"), "{what}: {content_type}");
        let body: serde_json::Value = answer.json().await.unwrap();
        let error = body["error"].as_str().unwrap_or_else(|| panic!("{what}: {body}"));
        assert!(error.contains(message), "{what}: {error:?} should contain {message:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_hash_an_upload_answers_fetches_the_program_for_its_uploader_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let client = server.client();
    let program = program("echo-args");
    let info = client.upload_module_info(program.clone()).await.unwrap();
    let http = reqwest::Client::new();
    let fetch = |hash: &str, token: Option<&str>| {
        let mut request = http.get(format!("{}/modules/{hash}", server.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let mine = fetch(&info.sha256, Some(&server.admin_token)).await.unwrap();
    assert_eq!(mine.status(), 200);
    assert_eq!(mine.bytes().await.unwrap().as_ref(), program.as_slice(), "the program as uploaded");
    assert_eq!(fetch(&info.sha256, None).await.unwrap().status(), 404, "not to anyone else");

    // What volunteers run is public under the other hash the upload answered.
    let run = fetch(&info.instrumented_sha256, None).await.unwrap();
    assert_eq!(run.status(), 200);
    let bytes = run.bytes().await.unwrap();
    use sha2::Digest as _;
    assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), info.instrumented_sha256);
    assert_ne!(info.instrumented_sha256, info.sha256);
}
