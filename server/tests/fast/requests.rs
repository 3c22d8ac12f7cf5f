//! Bad requests get clear JSON answers from the headers alone where they can; each account's active work
//! and each page of results are bounded.

use distributivecom_protocol::Bytes;
use distributivecom_protocol::worker::{Output, RunStatus};
use distributivecom_server::store::{NewResult, Pricing};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn every_rejection_is_json_with_a_message_a_person_understands() {
    let app = TestApp::new().start().await;
    let cases: Vec<(Call, u16, &str)> = vec![
        (app.admin("GET", "/api/jobs/abc"), 400, "\"abc\" in the URL /api/jobs/abc is not a whole number from 0"),
        (app.admin("GET", "/api/jobs/1/results?offset=-1"), 400, "the query string is not valid: offset"),
        (app.admin("GET", "/api/jobs/1?wait_ms=soon"), 400, "the query string is not valid: wait_ms"),
        (app.admin("GET", "/api/account/ledger?limit=-5"), 400, "the query string is not valid: limit"),
        (app.admin("DELETE", "/api/account/tokens/x"), 400, "\"x\" in the URL"),
        (app.admin("DELETE", "/api/jobs"), 405, "/api/jobs does not take DELETE"),
        (app.request("PUT", "/api/health"), 405, "/api/health does not take PUT"),
        (app.get("/api/nothing/here"), 404, "nothing at /api/nothing/here"),
        (app.get("/modules/xyz"), 404, "xyz is not a module hash"),
        (app.get("/api/workers/ws"), 400, "send a WebSocket handshake"),
        (app.post("/api/auth/login").body(b"{}".to_vec()), 415, "Content-Type: application/json"),
        (
            app.post("/api/auth/login").header("content-type", "application/json").body(b"[".to_vec()),
            400,
            "could not read the request",
        ),
        (
            app.admin("POST", "/api/jobs").header("content-type", "application/json").body(b"{}".to_vec()),
            400,
            "could not read the job request",
        ),
        (app.get("/api/account").header("authorization", "Basic eA=="), 401, "unsupported Authorization header"),
    ];
    for (call, status, message) in cases {
        let answer = call.send().await;
        let error = answer.error();
        assert_eq!(answer.status, status, "{error}");
        assert!(error.contains(message), "{error:?} should contain {message:?}");
    }
}

#[tokio::test]
async fn declared_sizes_over_the_limit_and_undeclared_sizes_are_refused_from_the_headers() {
    let app = TestApp::new().with(|config| config.max_module_bytes = 1024 * 1024).start().await;
    // The bodies below are empty: the answers come from the declared sizes alone, before any body is read.
    for (path, length, message) in [
        ("/api/modules", "1048577", "the program is larger than the limit of 1 MiB"),
        ("/api/jobs", "1000000000000", "the job request is larger than the limit of 512 MiB"),
        ("/api/auth/signup", "9223372036854775807", "the request body is larger than the limit of 64 KiB"),
    ] {
        let answer = app.admin("POST", path).header("content-length", length).send().await;
        assert_eq!((answer.status, answer.error()), (413, message.to_owned()), "{path}");
        assert_eq!(answer.header("connection").as_deref(), Some("close"));
    }
    let chunked = app.admin("POST", "/api/modules").header("transfer-encoding", "chunked").send().await;
    assert_eq!(chunked.status, 411);
    assert!(chunked.error().contains("Content-Length"));
    let garbled = app.admin("POST", "/api/modules").header("content-length", "lots").send().await;
    assert_eq!(garbled.status, 400);
}

#[tokio::test]
async fn each_account_has_room_for_only_so_much_running_work() {
    let app = TestApp::new()
        .with(|config| {
            config.max_active_jobs_per_account = 2;
            config.max_active_chunks_per_account = 10;
        })
        .start()
        .await;
    let alice = app.user_token("alice").await;
    let cheap = json!({ "budget_millicredits": 10 });
    let first = app.submit_noop(&alice, 4, cheap.clone()).await;
    app.submit_noop(&alice, 4, cheap.clone()).await;
    let module = app.upload_noop(&alice).await;
    let job = |chunks: usize| json!({ "module": module, "chunks": vec![json!({}); chunks], "budget_millicredits": 10 });
    let third = app.post("/api/jobs").token(&alice).json(job(1)).send().await;
    assert_eq!(third.status, 429);
    assert!(third.error().contains("2 jobs running"), "{}", third.error());
    // Another account is not held back by Alice's.
    let bob = app.user_token("bob").await;
    app.submit_noop(&bob, 4, cheap).await;
    // Room comes back when a job ends; chunks count too.
    assert_eq!(app.post(&format!("/api/jobs/{first}/cancel")).token(&alice).send().await.status, 200);
    let big = app.post("/api/jobs").token(&alice).json(job(7)).send().await;
    assert_eq!(big.status, 429);
    assert!(big.error().contains("4 unfinished chunks and this one 7"), "{}", big.error());
    assert_eq!(app.post("/api/jobs").token(&alice).json(job(6)).send().await.status, 201);
}

#[tokio::test]
async fn a_page_of_results_holds_at_most_16_mib_of_them() {
    let app = TestApp::new().start().await;
    let job = app.submit_noop(&app.admin_token, 12, json!({})).await;
    // Twelve results of 3 MiB of stdout each, stored as the coordinator would.
    for chunk in 0..12u32 {
        let result = NewResult {
            job,
            chunk,
            status: RunStatus::Exited { code: 0 },
            attempts: 1,
            work_units: 1,
            output: Output { stdout: Bytes(vec![b'x'; 3 << 20]), ..Output::default() },
            finished_at_ms: 1,
            payments: Vec::new(),
            reputation: Vec::new(),
            pricing: Pricing { millicredits_per_million_work_units: 1, volunteer_share_percent: 90 },
        };
        let (done, stored) = tokio::sync::oneshot::channel();
        app.store.insert_result(result, move |outcome| drop(done.send(outcome.map(drop))));
        stored.await.unwrap().unwrap();
    }
    let page = app.admin("GET", &format!("/api/jobs/{job}/results?limit=1000")).send().await;
    assert_eq!(page.status, 200);
    let page = page.json();
    let results = page["results"].as_array().unwrap();
    assert_eq!(results.len(), 5, "5 × 3 MiB fit in 16 MiB, 6 do not");
    assert_eq!(page["next_offset"], 5);
    let rest = app.admin("GET", &format!("/api/jobs/{job}/results?offset=10")).send().await.json();
    assert_eq!(rest["results"].as_array().unwrap().len(), 2);
    assert_eq!(rest["next_offset"], serde_json::Value::Null);
}

#[tokio::test]
async fn results_can_be_followed_in_the_order_chunks_complete() {
    use distributivecom_protocol::worker::{
        Credential, Output, ReplicaReport, RunStatus, ServerMessage, WorkerMessage,
    };
    let app = TestApp::new().start().await;
    let mut worker = crate::worker_socket::FakeWorker::connect(&app, 64);
    assert!(matches!(
        worker.hello(Credential::Token(app.admin_token.clone()), 3).await,
        Some(ServerMessage::Welcome(_))
    ));
    let job = app
        .submit_noop(&app.admin_token, 3, serde_json::json!({ "replication": { "replicas": 1, "quorum": 1 } }))
        .await;
    let Some(ServerMessage::Assign(assigned)) = worker.receive().await else { panic!("assignments expected") };
    let by_chunk = |chunk: u32| assigned.iter().find(|assignment| assignment.chunk == chunk).unwrap().replica;
    let page = |query: &str| app.admin("GET", &format!("/api/jobs/{job}/results?{query}")).send();
    assert_eq!(page("completed_after=0").await.json()["results"], serde_json::json!([]));
    // Chunk 2 finishes first, then 0, then 1.
    for chunk in [2, 0, 1] {
        let report = ReplicaReport {
            replica: by_chunk(chunk),
            status: RunStatus::Exited { code: 0 },
            output: Output::default(),
            compute_us: 1,
            work_units: 1,
        };
        worker.send(&WorkerMessage::Results(vec![report])).await;
        app.admin(
            "GET",
            &format!(
                "/api/jobs/{job}?wait_ms=10000&known_finished={}",
                [2, 0, 1].iter().position(|c| *c == chunk).unwrap()
            ),
        )
        .send()
        .await;
    }
    let indices = |answer: &serde_json::Value| {
        answer["results"].as_array().unwrap().iter().map(|result| result["index"].as_u64().unwrap()).collect::<Vec<_>>()
    };
    let all = page("completed_after=0").await.json();
    assert_eq!((indices(&all), all["completed_through"].as_u64()), (vec![2, 0, 1], Some(3)));
    let rest = page("completed_after=1&limit=1").await.json();
    assert_eq!((indices(&rest), rest["completed_through"].as_u64()), (vec![0], Some(2)));
    let none = page("completed_after=3").await.json();
    assert_eq!((indices(&none), none.get("completed_through")), (vec![], None));
    // In chunk order as before.
    assert_eq!(indices(&page("offset=0").await.json()), vec![0, 1, 2]);
}

/// The timer field ("tr") of a loopback TCP socket in `/proc/net/tcp`, found by its local and remote
/// ports: 0 for none, 2 for the keepalive timer of an established socket.
fn tcp_timer(local_port: u16, remote_port: u16) -> Option<u32> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let port = |address: &str| u16::from_str_radix(address.rsplit(':').next()?, 16).ok();
        let established = fields.get(3) == Some(&"01");
        (established && port(fields[1])? == local_port && port(fields[2])? == remote_port)
            .then(|| u32::from_str_radix(fields[5].split(':').next()?, 16).ok())
            .flatten()
    })
}

/// A WebSocket whose peer vanished without closing (a machine switched off, a NAT that forgot the flow)
/// must not hold its worker's leases or its session forever, however quiet both ends are: every accepted
/// connection has TCP keepalive, whose pending timer Linux shows for an idle socket. The client's own
/// socket, which has none, is the control.
#[tokio::test]
async fn every_connection_has_tcp_keepalive_so_a_vanished_peer_is_found() {
    let app = TestApp::new().start().await;
    let address = app.serve().await;
    let client = tokio::net::TcpStream::connect(address).await.unwrap();
    let client_port = client.local_addr().unwrap().port();
    let mut server_side = None;
    for _ in 0..200 {
        server_side = tcp_timer(address.port(), client_port);
        if server_side == Some(2) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(server_side, Some(2), "the server's side of the connection has no keepalive timer");
    assert_eq!(tcp_timer(client_port, address.port()), Some(0), "the client's side, without keepalive, has none");
    drop(client);
}
