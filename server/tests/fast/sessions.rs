//! Sessions in process: rounds over kept shards through the consumer's conversation (channels, no
//! socket), results tagged by round, pipelining, the escrow, bad input on the socket and over HTTP,
//! reconnecting, the idle close.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use distributivecom_protocol::worker::{Credential, Output, ReplicaReport, RunStatus, ServerMessage, WorkerMessage};
use distributivecom_server::session_socket::{self, Incoming};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::support::*;
use crate::worker_socket::FakeWorker;

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The consumer's end of an in-memory session conversation.
#[derive(Debug)]
struct FakeConsumer {
    to_server: mpsc::Sender<Incoming>,
    from_server: mpsc::Receiver<String>,
    conversation: tokio::task::JoinHandle<()>,
}

impl FakeConsumer {
    /// Attaches to `session` as `owner` (refused like a second socket would be) and starts the conversation.
    fn connect(app: &TestApp, owner: u64, session: u64, from_round: Option<u64>) -> Result<FakeConsumer, String> {
        FakeConsumer::start(app, owner, session, from_round, 1024)
    }

    /// The same, with room for `capacity` messages unread at the consumer.
    fn start(
        app: &TestApp,
        owner: u64,
        session: u64,
        from_round: Option<u64>,
        capacity: usize,
    ) -> Result<FakeConsumer, String> {
        let feed = app.coordinator.attach_session(owner, session).map_err(|refusal| refusal.to_string())?;
        let (to_server, incoming) = mpsc::channel(64);
        let (outgoing, from_server) = mpsc::channel(capacity);
        let stream =
            Box::pin(futures_util::stream::unfold(incoming, |mut incoming: mpsc::Receiver<Incoming>| async move {
                incoming.recv().await.map(|frame| (frame, incoming))
            }));
        let sink = Box::pin(futures_util::sink::unfold(outgoing, |outgoing: mpsc::Sender<String>, text| async move {
            outgoing.send(text).await.map_err(|_| "the consumer hung up".to_owned())?;
            Ok::<_, String>(outgoing)
        }));
        let coordinator = app.coordinator.clone();
        let conversation =
            tokio::spawn(session_socket::run(coordinator, owner, session, from_round, feed, stream, sink));
        Ok(FakeConsumer { to_server, from_server, conversation })
    }

    async fn send(&self, message: Value) {
        self.to_server.send(Incoming::Text(message.to_string())).await.unwrap();
    }

    async fn receive(&mut self) -> Value {
        let text = tokio::time::timeout(Duration::from_secs(30), self.from_server.recv())
            .await
            .expect("a message from the server")
            .expect("the conversation is still open");
        serde_json::from_str(&text).unwrap()
    }

    /// Sends round `round` and waits for the server to accept it.
    async fn round(&mut self, round: u64, broadcast: &[u8]) {
        self.send(json!({ "round": { "round": round, "broadcast": base64(broadcast) } })).await;
        assert_eq!(self.receive().await, json!({ "round_started": { "round": round } }));
    }
}

/// What the volunteer earns from `replicas` paid replicas of `work_units` each (rounded up, as paid).
fn shares(app: &TestApp, replicas: i64, work_units: u64) -> i64 {
    let amount = app.config.pricing.cost(work_units);
    let share = ((amount * i64::from(app.config.pricing.volunteer_share_percent) + 99) / 100).min(amount);
    replicas * share
}

/// What the admin's account holds.
async fn balance(app: &TestApp) -> i64 {
    app.admin("GET", "/api/account").send().await.json()["balance_millicredits"].as_i64().unwrap()
}

/// Opens a session of `shards` shards (each with a file `shard.txt` holding its number) as the admin.
async fn open(app: &TestApp, shards: usize, extra: Value) -> u64 {
    let module = app.upload_noop(&app.admin_token).await;
    let shards: Vec<Value> = (0..shards)
        .map(|index| json!({ "args": [index.to_string()], "files": { "shard.txt": base64(index.to_string().as_bytes()) } }))
        .collect();
    let mut request = json!({ "module": module, "shards": shards, "budget_millicredits": 1_000_000,
                              "replication": { "replicas": 1, "quorum": 1 } });
    request.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let answer = app.admin("POST", "/api/sessions").json(request).send().await;
    assert_eq!(answer.status, 201, "{}", answer.error());
    answer.json()["id"].as_u64().unwrap()
}

/// The worker answers each assignment with its stdin and its shard file, as a program would.
fn answer(assignment: &distributivecom_protocol::worker::Assignment) -> ReplicaReport {
    let mut stdout = assignment.stdin.0.clone();
    stdout.extend_from_slice(b"|");
    stdout.extend_from_slice(&assignment.files["shard.txt"].0);
    ReplicaReport {
        replica: assignment.replica,
        status: RunStatus::Exited { code: 0 },
        output: Output { stdout: stdout.into(), ..Output::default() },
        compute_us: 10,
        work_units: 5_000_000,
    }
}

async fn assignments(worker: &mut FakeWorker) -> Vec<distributivecom_protocol::worker::Assignment> {
    match worker.receive().await {
        Some(ServerMessage::Assign(assigned)) => assigned,
        other => panic!("assignments expected, not {other:?}"),
    }
}

/// Collects results by (round, shard) until every round in `rounds` is done.
async fn until_done(consumer: &mut FakeConsumer, rounds: &[u64]) -> BTreeMap<(u64, u64), String> {
    let mut results = BTreeMap::new();
    let mut done = Vec::new();
    while done.len() < rounds.len() {
        let message = consumer.receive().await;
        if let Some(result) = message.get("result") {
            let stdout = base64::engine::general_purpose::STANDARD
                .decode(result["result"]["output"]["stdout"].as_str().unwrap())
                .unwrap();
            let key = (result["round"].as_u64().unwrap(), result["result"]["index"].as_u64().unwrap());
            assert!(results.insert(key, String::from_utf8(stdout).unwrap()).is_none(), "{key:?} twice");
        } else if let Some(round) = message.get("round_done") {
            done.push(round["round"].as_u64().unwrap());
        } else {
            panic!("unexpected {message}");
        }
    }
    done.sort();
    assert_eq!(done, rounds);
    results
}

#[tokio::test]
async fn a_session_maps_each_round_over_its_shards_and_streams_results_tagged_by_round() {
    let app = TestApp::new().with(|config| config.max_broadcast_bytes = 1000).start().await;
    let before = balance(&app).await;
    let session = open(&app, 2, json!({})).await;
    assert_eq!(balance(&app).await, before - 1_000_000, "the budget is escrowed at open");
    let escrowed = || async { app.admin("GET", "/api/account").send().await.json()["escrowed_millicredits"].as_i64() };
    assert_eq!(escrowed().await, Some(1_000_000), "the account shows its session's escrow");
    let mut worker = FakeWorker::connect(&app, 64);
    assert!(matches!(
        worker.hello(Credential::Token(app.admin_token.clone()), 4).await,
        Some(ServerMessage::Welcome(_))
    ));
    let mut consumer = FakeConsumer::connect(&app, 1, session, None).unwrap();
    assert_eq!(
        consumer.receive().await,
        json!({ "ready": { "session": session, "shards": 2, "next_round": 1, "rounds_running": [] } })
    );
    assert!(
        FakeConsumer::connect(&app, 1, session, None).unwrap_err().contains("another socket"),
        "one consumer per session"
    );

    // Round 2 is sent before round 1 has answered (pipelining).
    consumer.round(1, b"weights-1").await;
    let first = assignments(&mut worker).await;
    consumer.round(2, b"weights-2").await;
    let second = assignments(&mut worker).await;
    for (assigned, broadcast) in [(&first, "weights-1"), (&second, "weights-2")] {
        assert_eq!(assigned.len(), 2);
        assert!(
            assigned.iter().all(|assignment| assignment.stdin.0 == broadcast.as_bytes()),
            "only the broadcast varies"
        );
    }
    // Out of order, too large, malformed, binary: each an error, and the session goes on.
    consumer.send(json!({ "round": { "round": 7, "broadcast": "" } })).await;
    let error = consumer.receive().await;
    assert_eq!(error["error"]["round"], 7);
    assert!(
        error["error"]["message"].as_str().unwrap().contains("out of order: the next round of this session is 3"),
        "{error}"
    );
    consumer.send(json!({ "round": { "round": 3, "broadcast": base64(&[0; 1001]) } })).await;
    let error = consumer.receive().await;
    assert!(error["error"]["message"].as_str().unwrap().contains("more than the limit of 1000 bytes"), "{error}");
    consumer.to_server.send(Incoming::Text("{\"round\": 3}".into())).await.unwrap();
    assert!(consumer.receive().await["error"]["message"].as_str().unwrap().contains("could not read the message"));
    consumer.to_server.send(Incoming::Binary).await.unwrap();
    assert!(consumer.receive().await["error"]["message"].as_str().unwrap().contains("text frames"));

    // Answers come back in any order; each result says its round and shard.
    let reports: Vec<ReplicaReport> = second.iter().chain(first.iter()).map(answer).collect();
    worker.send(&WorkerMessage::Results(reports)).await;
    let results = until_done(&mut consumer, &[1, 2]).await;
    let expected: BTreeMap<(u64, u64), String> =
        [((1, 0), "weights-1|0"), ((1, 1), "weights-1|1"), ((2, 0), "weights-2|0"), ((2, 1), "weights-2|1")]
            .into_iter()
            .map(|(key, value)| (key, value.to_owned()))
            .collect();
    assert_eq!(results, expected);

    // The round after the out-of-order and refused ones is still 3.
    consumer.round(3, b"weights-3").await;
    let third = assignments(&mut worker).await;
    assert_eq!(third.len(), 2);
    let status = app.admin("GET", &format!("/api/sessions/{session}")).send().await.json();
    assert_eq!((status["next_round"].as_u64(), status["rounds_running"].clone()), (Some(4), json!([3])));

    // Closing stops round 3 and refunds everything not paid.
    consumer.send(json!({ "close": {} })).await;
    let closed = consumer.receive().await;
    assert_eq!(closed["closed"]["reason"], "closed by its consumer", "{closed}");
    let status = app.admin("GET", &format!("/api/sessions/{session}")).send().await.json();
    assert_eq!(status["state"], "closed");
    let spent = status["spent_millicredits"].as_i64().unwrap();
    assert_eq!(spent, 4 * app.config.pricing.cost(5_000_000), "four validated replicas");
    assert_eq!(closed["closed"]["refunded_millicredits"].as_i64(), Some(1_000_000 - spent));
    assert_eq!(status["escrowed_millicredits"], 0);
    assert_eq!(escrowed().await, Some(0), "a closed session holds nothing");
    // The owner's own worker ran the replicas (1 replica, quorum 1), so it earned the volunteer's shares.
    assert_eq!(balance(&app).await, before - spent + shares(&app, 4, 5_000_000), "only validated replicas were paid");
    let revoked = worker.receive().await;
    assert!(matches!(revoked, Some(ServerMessage::Revoke(_))), "round 3's replicas are taken back: {revoked:?}");
    let connection = rusqlite::Connection::open(app.database()).unwrap();
    let totals = distributivecom_server::store::ledger::totals(&connection).unwrap();
    assert!(totals.conserved(), "{totals:?}");
    assert_eq!(distributivecom_server::store::ledger::audit(&connection).unwrap(), vec![]);
    let again = app.admin("DELETE", &format!("/api/sessions/{session}")).send().await;
    assert_eq!(again.status, 409, "{}", again.error());
}

#[tokio::test]
async fn a_result_the_budget_cannot_pay_in_full_is_withheld_from_the_consumer() {
    let app = TestApp::new().start().await;
    // Enough for one shard's replica and part of the other's.
    let cost = app.config.pricing.cost(5_000_000);
    let session = open(&app, 2, json!({ "budget_millicredits": cost + cost / 2 })).await;
    let mut worker = FakeWorker::connect(&app, 64);
    assert!(matches!(
        worker.hello(Credential::Token(app.admin_token.clone()), 4).await,
        Some(ServerMessage::Welcome(_))
    ));
    let mut consumer = FakeConsumer::connect(&app, 1, session, None).unwrap();
    assert!(consumer.receive().await.get("ready").is_some());
    consumer.round(1, b"w").await;
    let assigned = assignments(&mut worker).await;
    assert_eq!(assigned.len(), 2);
    worker.send(&WorkerMessage::Results(assigned.iter().map(answer).collect())).await;
    let mut results = Vec::new();
    while results.len() < 2 {
        let message = consumer.receive().await;
        if let Some(result) = message.get("result") {
            results.push(result["result"].clone());
        }
    }
    results.sort_by_key(|result| !result["succeeded"].as_bool().unwrap());
    assert_eq!(results[0]["succeeded"], true, "{results:?}");
    assert_eq!(results[1]["succeeded"], false, "{results:?}");
    assert!(results[1]["reason"].as_str().unwrap().contains("the budget ran out"), "{results:?}");
    assert_eq!(results[1]["output"]["stdout"], "", "the consumer does not get what it did not pay for: {results:?}");
    // The stored result is the same, and the volunteer kept what was left.
    let spent = app.admin("GET", &format!("/api/sessions/{session}")).send().await.json()["spent_millicredits"].clone();
    assert_eq!(spent.as_i64(), Some(cost + cost / 2), "the volunteer was paid what the budget held");
    let connection = rusqlite::Connection::open(app.database()).unwrap();
    let rows: Vec<(bool, String, i64)> = connection
        .prepare("SELECT succeeded, status, length(output) FROM results ORDER BY succeeded DESC")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows[0].0 && !rows[1].0 && rows[1].1.contains("the budget ran out"), "{rows:?}");
    assert!(rows[1].2 < rows[0].2, "the withheld result is stored without its output: {rows:?}");
    assert!(distributivecom_server::store::ledger::totals(&connection).unwrap().conserved());
}

#[tokio::test]
async fn a_consumer_that_reconnects_gets_what_it_missed_and_a_session_left_alone_closes() {
    let app = TestApp::new().with(|config| config.session_idle_ms = 200).start().await;
    let before = balance(&app).await;
    let session = open(&app, 2, json!({})).await;
    let mut worker = FakeWorker::connect(&app, 64);
    assert!(matches!(
        worker.hello(Credential::Token(app.admin_token.clone()), 2).await,
        Some(ServerMessage::Welcome(_))
    ));
    let mut consumer = FakeConsumer::connect(&app, 1, session, None).unwrap();
    consumer.receive().await;
    consumer.round(1, b"w").await;
    let assigned = assignments(&mut worker).await;
    worker.send(&WorkerMessage::Results(vec![answer(&assigned[0])])).await;
    let first = consumer.receive().await;
    assert_eq!(first["result"]["round"], 1);
    // The consumer goes away; the other shard answers meanwhile.
    drop(consumer);
    worker.send(&WorkerMessage::Results(vec![answer(&assigned[1])])).await;
    let mut reconnected = None;
    for _ in 0..500 {
        // Until the conversation has noticed the consumer left.
        match FakeConsumer::connect(&app, 1, session, Some(1)) {
            Ok(consumer) => {
                reconnected = Some(consumer);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    let mut consumer = reconnected.expect("the consumer reconnects");
    let ready = consumer.receive().await;
    assert_eq!(ready["ready"]["next_round"], 2);
    let results = until_done(&mut consumer, &[1]).await;
    assert_eq!(results.values().collect::<Vec<_>>(), ["w|0", "w|1"], "both shards, each once");

    // Gone for longer than the idle time: the session closes and refunds.
    drop(consumer);
    let mut state = Value::Null;
    for _ in 0..500 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        app.coordinator.tick();
        state = app.admin("GET", &format!("/api/sessions/{session}")).send().await.json();
        if state["state"] == "closed" {
            break;
        }
    }
    assert_eq!(state["state"], "closed", "{state}");
    assert_eq!(state["close_reason"], "no consumer was connected for the session's idle time");
    let spent = state["spent_millicredits"].as_i64().unwrap();
    assert_eq!(spent, 2 * app.config.pricing.cost(5_000_000));
    assert_eq!(balance(&app).await, before - spent + shares(&app, 2, 5_000_000));
    assert!(FakeConsumer::connect(&app, 1, session, Some(1)).unwrap_err().contains("no open session"));
}

#[tokio::test]
async fn bad_session_requests_get_clear_answers() {
    let app = TestApp::new().start().await;
    let module = app.upload_noop(&app.admin_token).await;
    let post = |request: Value| app.admin("POST", "/api/sessions").json(request).send();
    let base = json!({ "module": module, "shards": [{}], "budget_millicredits": 1000 });
    let with = |field: &str, value: Value| {
        let mut request = base.clone();
        request[field] = value;
        request
    };
    let cases = [
        (with("shards", json!([{}, { "stdin": "aGk=" }])), 400, "shard 1: stdin must be empty"),
        (with("budget_millicredits", json!(0)), 400, "budget_millicredits must be more than 0"),
        (with("budget_millicredits", json!(i64::MAX)), 402, "your balance is"),
        (with("module", json!("ab".repeat(32))), 422, "has not been uploaded by this account"),
        (
            with("shards", json!([{ "files": { "d": { "blob": "cd".repeat(32) } } }])),
            422,
            "shard 0: file \"d\" names blob",
        ),
        (with("shards", json!([])), 400, "at least one chunk"),
    ];
    for (request, status, message) in cases {
        let answer = post(request).await;
        assert_eq!(answer.status, status, "{}", answer.error());
        assert!(answer.error().contains(message), "{} does not say {message:?}", answer.error());
    }
    // Inline shards may be as large as a job's chunks (not held to the small-body limit).
    let large = with("shards", json!([{ "files": { "big.bin": base64(&vec![1; 200 * 1024]) } }]));
    let answer = post(large).await;
    assert_eq!(answer.status, 201, "{}", answer.error());
    let missing_budget =
        app.admin("POST", "/api/sessions").json(json!({ "module": module, "shards": [{}] })).send().await;
    assert_eq!(missing_budget.status, 400);
    assert!(missing_budget.error().contains("budget_millicredits"), "{}", missing_budget.error());
    assert_eq!(app.post("/api/sessions").json(base.clone()).send().await.status, 401);

    // Another account sees no session, and cannot use or close one.
    let session = post(base).await.json()["id"].as_u64().unwrap();
    let bob = app.user_token("bob").await;
    for (method, path) in [("GET", format!("/api/sessions/{session}")), ("DELETE", format!("/api/sessions/{session}"))]
    {
        let answer = app.request(method, &path).token(&bob).send().await;
        assert_eq!(answer.status, 404, "{method} {path}");
    }
    let bobs_id = app.identity.api_token(&bob).await.unwrap().unwrap().0.id;
    assert!(FakeConsumer::connect(&app, bobs_id, session, Some(1)).unwrap_err().contains("no open session"));
    let closed = app.admin("DELETE", &format!("/api/sessions/{session}")).send().await;
    assert_eq!((closed.status, closed.json()["state"].as_str()), (200, Some("closed")));
    // A WebSocket handshake is required for the socket.
    let plain = app.admin("GET", &format!("/api/sessions/{session}/ws")).send().await;
    assert_eq!(plain.status, 400, "{}", plain.error());
}

#[tokio::test]
async fn requests_racing_each_other_open_no_more_sessions_than_the_limit_and_a_close_makes_room() {
    let app = TestApp::new().with(|config| config.max_open_sessions_per_account = 2).start().await;
    let module = app.upload_noop(&app.admin_token).await;
    let request = json!({ "module": module, "shards": [{}], "budget_millicredits": 1000,
                          "replication": { "replicas": 1, "quorum": 1 } });
    // Six at once: each awaits the store (the module, the escrow) between its check and its insert.
    let answers =
        futures_util::future::join_all((0..6).map(|_| app.admin("POST", "/api/sessions").json(request.clone()).send()))
            .await;
    let opened: Vec<u64> =
        answers.iter().filter(|a| a.status == 201).map(|a| a.json()["id"].as_u64().unwrap()).collect();
    assert_eq!(opened.len(), 2, "{:?}", answers.iter().map(|a| (a.status, a.error())).collect::<Vec<_>>());
    for refused in answers.iter().filter(|answer| answer.status != 201) {
        assert_eq!(refused.status, 429, "{}", refused.error());
        assert!(refused.error().contains("2 sessions open, the most at once"), "{}", refused.error());
    }
    let closed = app.admin("DELETE", &format!("/api/sessions/{}", opened[0])).send().await;
    assert_eq!(closed.status, 200, "{}", closed.error());
    let again = app.admin("POST", "/api/sessions").json(request.clone()).send().await;
    assert_eq!(again.status, 201, "closing a session gives its room back: {}", again.error());
    // A refused open (here: more than the balance) holds no room either.
    let mut unaffordable = request.clone();
    unaffordable["budget_millicredits"] = json!(i64::MAX);
    app.admin("DELETE", &format!("/api/sessions/{}", opened[1])).send().await;
    assert_eq!(app.admin("POST", "/api/sessions").json(unaffordable).send().await.status, 402);
    assert_eq!(app.admin("POST", "/api/sessions").json(request).send().await.status, 201);
}

#[tokio::test]
async fn the_live_view_shows_each_round_with_the_consumers_figures_and_waits_for_changes() {
    let app = TestApp::new().start().await;
    let session = open(&app, 2, json!({})).await;
    let mut worker = FakeWorker::connect(&app, 64);
    assert!(matches!(
        worker.hello(Credential::Token(app.admin_token.clone()), 2).await,
        Some(ServerMessage::Welcome(_))
    ));
    let mut consumer = FakeConsumer::connect(&app, 1, session, None).unwrap();
    consumer.receive().await;
    let rounds = |query: String| app.admin("GET", &format!("/api/sessions/{session}/rounds{query}")).send();
    let empty = rounds(String::new()).await.json();
    assert_eq!((empty["rounds"].clone(), empty["session"]["next_round"].as_u64()), (json!([]), Some(1)));

    consumer.round(1, b"w").await;
    let assigned = assignments(&mut worker).await;
    let running = rounds(String::new()).await.json();
    assert_eq!(running["rounds"][0]["state"], "running");
    assert_eq!(running["volunteers_working"], 1);
    // A page waiting on the version it has is answered as soon as the round moves on.
    let version = running["version"].as_u64().unwrap();
    let waiting = tokio::spawn(rounds(format!("?version={version}&wait_ms=20000")));
    worker.send(&WorkerMessage::Results(assigned.iter().map(answer).collect())).await;
    until_done(&mut consumer, &[1]).await;
    let changed = waiting.await.unwrap().json();
    assert!(changed["version"].as_u64().unwrap() > version, "{changed}");
    let done = rounds(String::new()).await.json();
    assert_eq!(
        (done["rounds"][0]["state"].as_str(), done["rounds"][0]["shards_done"].as_u64()),
        (Some("done"), Some(2))
    );
    assert!(done["rounds"][0]["finished_at_ms"].as_u64().is_some());

    // The consumer's figures for the round; bad ones are refused on the socket.
    consumer.send(json!({ "note": { "round": 1, "metrics": { "loss": 0.25, "accuracy": 0.875 } } })).await;
    consumer.send(json!({ "note": { "round": 9, "metrics": { "loss": 1.0 } } })).await;
    let refused = consumer.receive().await;
    assert!(refused["note_refused"]["message"].as_str().unwrap().contains("round 9 has not been started"), "{refused}");
    let many: serde_json::Map<String, Value> = (0..17).map(|index| (format!("m{index}"), json!(1.0))).collect();
    consumer.send(json!({ "note": { "round": 1, "metrics": many } })).await;
    let refused = consumer.receive().await;
    assert!(refused["note_refused"]["message"].as_str().unwrap().contains("at most 16 figures"), "{refused}");
    consumer.send(json!({ "note": { "round": 1, "metrics": { "x\u{0}y": 1.0 } } })).await;
    let refused = consumer.receive().await;
    assert!(refused["note_refused"]["message"].as_str().unwrap().contains("no control characters"), "{refused}");
    let noted = rounds("?from=1".to_owned()).await.json();
    assert_eq!(noted["rounds"][0]["metrics"], json!({ "accuracy": 0.875, "loss": 0.25 }));
    // Nobody else's.
    let bob = app.user_token("bob").await;
    let foreign = app.request("GET", &format!("/api/sessions/{session}/rounds")).token(&bob).send().await;
    assert_eq!(foreign.status, 404);
}

#[tokio::test]
async fn a_consumer_that_does_not_read_loses_its_socket_not_the_servers_memory_and_catches_up() {
    // Its feed fills by count, or by bytes (each result is about 256 bytes and its output here).
    for (capacity, bytes) in [(2, 64 << 20), (10_000, 1_000)] {
        behind_by(capacity, bytes).await;
    }
}

async fn behind_by(capacity: usize, bytes: u64) {
    let app = TestApp::new()
        .with(|config| {
            config.session_feed_capacity = capacity;
            config.session_feed_bytes = bytes;
        })
        .start()
        .await;
    let session = open(&app, 6, json!({})).await;
    let mut worker = FakeWorker::connect(&app, 64);
    assert!(matches!(
        worker.hello(Credential::Token(app.admin_token.clone()), 6).await,
        Some(ServerMessage::Welcome(_))
    ));
    // A consumer whose socket takes one message and then is never read.
    let mut behind = FakeConsumer::start(&app, 1, session, None, 1).unwrap();
    behind.from_server.recv().await.unwrap(); // ready
    behind.send(json!({ "round": { "round": 1, "broadcast": "" } })).await;
    let assigned = assignments(&mut worker).await;
    worker.send(&WorkerMessage::Results(assigned.iter().map(answer).collect())).await;
    // Six results and a round_done do not fit: the server drops the feed, and the conversation, stuck on a
    // message the consumer never takes, ends at its send deadline. (Paused time runs ahead whenever every
    // task waits; it is paused only once every result is stored.)
    eventually_stored(&app, session).await;
    tokio::time::pause();
    tokio::time::timeout(Duration::from_secs(600), behind.conversation).await.expect("the conversation ends").unwrap();
    tokio::time::resume();
    drop(behind.from_server);
    // Reconnected, the consumer gets every result of the round from the store.
    let mut consumer = FakeConsumer::connect(&app, 1, session, Some(1)).expect("the session takes a new socket");
    consumer.receive().await;
    let results = until_done(&mut consumer, &[1]).await;
    assert_eq!(results.len(), 6);
}

/// Waits until round 1 of the session has every result stored.
async fn eventually_stored(app: &TestApp, session: u64) {
    for _ in 0..1000 {
        let rounds = app.admin("GET", &format!("/api/sessions/{session}/rounds")).send().await.json();
        if rounds["rounds"][0]["state"] == "done" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("round 1 never finished");
}
