//! What the consumer's web app reads: pages of jobs and of the ledger, a job's escrow and volunteers, its
//! status as Server-Sent Events (over a real loopback connection), its results as a ZIP archive, the
//! programs an account uploaded, what its volunteers did, and the public statistics and limits.

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use base64::Engine;
use distributivecom_protocol::Bytes;
use distributivecom_protocol::worker::WorkerMessage;
use distributivecom_protocol::worker::{Assignment, Credential, Output, ReplicaReport, RunStatus, ServerMessage};
use serde_json::{Value, json};

use crate::support::*;
use crate::worker_socket::FakeWorker;

fn base64_decode(value: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(value.as_str().expect("base64 text")).unwrap()
}

/// Takes assignments the worker is sent until it has `count`.
async fn assignments(worker: &mut FakeWorker, count: usize) -> Vec<Assignment> {
    let mut assigned = Vec::new();
    while assigned.len() < count {
        match worker.receive().await {
            Some(ServerMessage::Assign(more)) => assigned.extend(more),
            Some(_) => {}
            None => panic!("the server closed the worker after {} assignments", assigned.len()),
        }
    }
    assigned
}

/// A report of `assignment` that exited 0 with `stdout`.
fn exited(assignment: &Assignment, stdout: &[u8], work_units: u64) -> ReplicaReport {
    ReplicaReport {
        replica: assignment.replica,
        status: RunStatus::Exited { code: 0 },
        output: Output { stdout: stdout.into(), ..Output::default() },
        compute_us: 10,
        work_units,
    }
}

/// Follows the job until it is over; its last status.
async fn finished(app: &TestApp, token: &str, job: u64) -> Value {
    let mut known = 0;
    for _ in 0..50 {
        let path = format!("/api/jobs/{job}?wait_ms=2000&known_finished={known}");
        let status = app.get(&path).token(token).send().await.json();
        if status["state"] != "running" {
            return status;
        }
        known = status["succeeded"].as_u64().unwrap() + status["failed"].as_u64().unwrap();
    }
    panic!("job {job} did not finish");
}

/// A worker of the administrator's, connected and welcomed.
async fn admins_worker(app: &TestApp, slots: u32) -> FakeWorker {
    let mut worker = FakeWorker::connect(app, 256);
    let welcome = worker.hello(Credential::Token(app.admin_token.clone()), slots).await;
    assert!(matches!(welcome, Some(ServerMessage::Welcome(_))), "{welcome:?}");
    worker
}

fn ids(listed: &Value) -> Vec<u64> {
    listed
        .as_array()
        .unwrap_or_else(|| panic!("a list: {listed}"))
        .iter()
        .map(|job| job["id"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_page_of_jobs_lists_the_newest_first_older_than_before_and_leaves_rounds_out() {
    let app = TestApp::new().start().await;
    let token = app.admin_token.clone();
    let mut submitted = Vec::new();
    for _ in 0..5 {
        submitted.push(app.submit_noop(&token, 1, json!({ "budget_millicredits": 1000 })).await);
    }
    // A session's round is an ordinary job underneath, but it is the session's: it is not listed.
    let module = app.upload_noop(&token).await;
    let session = json!({ "module": module, "shards": [{}], "budget_millicredits": 10_000,
                          "replication": { "replicas": 1, "quorum": 1 } });
    let opened = app.admin("POST", "/api/sessions").json(session).send().await;
    assert_eq!(opened.status, 201, "{}", opened.error());
    let admin = app.admin("GET", "/api/account").send().await.json()["user"]["id"].as_u64().unwrap();
    let round_job = app
        .coordinator
        .start_round(admin, opened.json()["id"].as_u64().unwrap(), 1, Bytes(b"weights".to_vec()))
        .await
        .unwrap();
    assert_eq!(app.admin("GET", &format!("/api/jobs/{round_job}")).send().await.status, 200);

    let newest_first: Vec<u64> = submitted.iter().rev().copied().collect();
    let page = |query: &str| app.admin("GET", &format!("/api/jobs{query}")).send();
    assert_eq!(ids(&page("").await.json()), newest_first);
    assert_eq!(ids(&page("?limit=2").await.json()), newest_first[..2]);
    let before = newest_first[1];
    assert_eq!(ids(&page(&format!("?limit=2&before={before}")).await.json()), newest_first[2..4]);
    assert_eq!(ids(&page(&format!("?before={}", newest_first[3])).await.json()), newest_first[4..]);
    assert_eq!(ids(&page(&format!("?before={}", newest_first[4])).await.json()), Vec::<u64>::new());
    // Limits are bounded, not trusted: 0 lists one, a huge one lists at most 100.
    assert_eq!(ids(&page("?limit=0").await.json()), newest_first[..1]);
    assert_eq!(ids(&page("?limit=4294967295&before=18446744073709551615").await.json()), newest_first);
    for bad in ["?limit=-1", "?limit=many", "?before=1e3", "?limit=4294967296"] {
        let refused = page(bad).await;
        assert_eq!(refused.status, 400, "{bad}");
        assert!(refused.error().contains("query string"), "{bad}: {}", refused.error());
    }
    // Each is a JobStatus, with its escrow: nothing ran, so all of its budget.
    let listed = page("?limit=1").await.json();
    assert_eq!(listed[0]["escrowed_millicredits"], 1000);
    assert_eq!(listed[0]["volunteers"], 0);
}

#[tokio::test]
async fn a_job_shows_the_escrow_it_still_holds_and_the_volunteers_running_it_now() {
    let app = TestApp::new().start().await;
    let mut own = admins_worker(&app, 1).await;
    let credential = app.post("/api/volunteers").send().await.json();
    let (id, secret) = (credential["id"].as_str().unwrap(), credential["secret"].as_str().unwrap());
    let mut anonymous = FakeWorker::connect(&app, 256);
    anonymous.hello(Credential::Volunteer { id: id.to_owned(), secret: secret.to_owned() }, 1).await;
    let job = app.submit_noop(&app.admin_token, 2, json!({ "budget_millicredits": 10_000 })).await;
    // Each chunk goes to both volunteers (two replicas that must agree).
    let (mine, theirs) = (assignments(&mut own, 2).await, assignments(&mut anonymous, 2).await);
    let status = app.admin("GET", &format!("/api/jobs/{job}")).send().await.json();
    assert_eq!((status["running"].as_u64(), status["volunteers"].as_u64()), (Some(2), Some(2)), "{status}");
    assert_eq!(status["escrowed_millicredits"], 10_000);

    // One volunteer reports: its replicas are no longer out, the other's are.
    own.send(&WorkerMessage::Results(mine.iter().map(|a| exited(a, b"same", 20_000_000)).collect())).await;
    let mut status = Value::Null;
    for _ in 0..100 {
        status = app.admin("GET", &format!("/api/jobs/{job}")).send().await.json();
        if status["volunteers"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status["volunteers"], 1, "{status}");
    anonymous.send(&WorkerMessage::Results(theirs.iter().map(|a| exited(a, b"same", 20_000_000)).collect())).await;
    let status = finished(&app, &app.admin_token, job).await;
    assert_eq!(status["state"], "succeeded");
    // Paid for four replicas of 20 million work units; the rest was refunded.
    assert_eq!(status["spent_millicredits"], 4 * app.config.pricing.cost(20_000_000));
    assert_eq!((status["escrowed_millicredits"].as_i64(), status["volunteers"].as_u64()), (Some(0), Some(0)));
    let listed = app.admin("GET", "/api/jobs").send().await.json();
    assert_eq!(listed[0]["escrowed_millicredits"], 0);
}

#[tokio::test]
async fn volunteering_and_the_statistics_page_count_validated_work_as_it_is_paid() {
    let app = TestApp::new().start().await;
    let mut own = admins_worker(&app, 1).await;
    let credential = app.post("/api/volunteers").send().await.json();
    let (id, secret) = (credential["id"].as_str().unwrap().to_owned(), credential["secret"].as_str().unwrap());
    let mut anonymous = FakeWorker::connect(&app, 256);
    anonymous.hello(Credential::Volunteer { id: id.clone(), secret: secret.to_owned() }, 1).await;
    let job = app.submit_noop(&app.admin_token, 2, json!({})).await;
    let (mine, theirs) = (assignments(&mut own, 2).await, assignments(&mut anonymous, 2).await);
    own.send(&WorkerMessage::Results(mine.iter().map(|a| exited(a, b"same", 20_000_000)).collect())).await;
    anonymous.send(&WorkerMessage::Results(theirs.iter().map(|a| exited(a, b"same", 20_000_000)).collect())).await;
    assert_eq!(finished(&app, &app.admin_token, job).await["state"], "succeeded");

    let cost = app.config.pricing.cost(20_000_000);
    let share = (cost * i64::from(app.config.pricing.volunteer_share_percent) + 99) / 100;
    let expected = json!({ "validated_replicas": 2, "invalid_replicas": 0, "work_units": 40_000_000,
                           "consecutive_valid": 2, "earned_millicredits": 2 * share });
    assert_eq!(app.admin("GET", "/api/account/volunteering").send().await.json(), expected);
    let history = app.get("/api/stats/history").send().await.json();
    let today = history["days"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((today["chunks"].as_u64(), today["work_units"].as_u64()), (Some(2), Some(80_000_000)), "{today}");
    assert_eq!(history["volunteers_online"], 2);
    let names: Vec<&str> =
        history["leaderboard"].as_array().unwrap().iter().map(|entry| entry["name"].as_str().unwrap()).collect();
    let anonymous_name = format!("anonymous {}", &id[..8]);
    assert!(names.contains(&"admin") && names.contains(&anonymous_name.as_str()), "{names:?}");

    // An account that claims the identity counts its work as its own, and shows on the leaderboard.
    let claim = json!({ "username": "carol", "password": "correct horse battery",
                        "volunteer": { "id": id, "secret": secret } });
    let signed_up = app.post("/api/auth/signup").json(claim).send().await;
    assert_eq!(signed_up.json()["volunteer_claim"]["claimed"], true);
    let cookie = signed_up.header("set-cookie").unwrap().split(';').next().unwrap().to_owned();
    let carols = app.get("/api/account/volunteering").header("cookie", &cookie).send().await.json();
    assert_eq!((carols["validated_replicas"].as_u64(), carols["work_units"].as_u64()), (Some(2), Some(40_000_000)));
    assert_eq!(
        (carols["earned_millicredits"].as_i64(), carols["consecutive_valid"].as_u64()),
        (Some(2 * share), Some(0))
    );
    // The page is remembered for a moment; the next read names carol.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let history = app.get("/api/stats/history").send().await.json();
    let names: Vec<&str> =
        history["leaderboard"].as_array().unwrap().iter().map(|entry| entry["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"admin") && names.contains(&"carol"), "{names:?}");
    assert_eq!(history["leaderboard"][0]["rank"], 1);
}

#[tokio::test]
async fn the_ledger_pages_back_by_entry_id() {
    let app = TestApp::new().start().await;
    let token = app.user_token("alice").await;
    for _ in 0..3 {
        app.submit_noop(&token, 1, json!({ "budget_millicredits": 100 })).await;
    }
    // The starting grant and three escrows.
    let everything = app.get("/api/account/ledger").token(&token).send().await.json();
    let all: Vec<u64> = everything["entries"].as_array().unwrap().iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|pair| pair[0] > pair[1]), "newest first: {all:?}");
    assert_eq!(everything.get("next_before"), None, "a short page is the last");

    let mut paged = Vec::new();
    let mut query = "?limit=2".to_owned();
    loop {
        let page = app.get(&format!("/api/account/ledger{query}")).token(&token).send().await.json();
        assert_eq!(page["balance_millicredits"], everything["balance_millicredits"]);
        paged.extend(page["entries"].as_array().unwrap().iter().map(|e| e["id"].as_u64().unwrap()));
        match page["next_before"].as_u64() {
            Some(before) => query = format!("?limit=2&before={before}"),
            None => break,
        }
    }
    assert_eq!(paged, all);
    for bad in ["?before=-3", "?before=x", "?limit=1.5"] {
        let refused = app.get(&format!("/api/account/ledger{bad}")).token(&token).send().await;
        assert_eq!(refused.status, 400, "{bad}");
        assert!(refused.error().contains("query string"));
    }
}

/// A copy of the no-op program with a custom section: another program, with another hash.
fn another_program() -> Vec<u8> {
    let mut program = NOOP_MODULE.to_vec();
    program.extend_from_slice(&[0x00, 0x05, 0x04, b't', b'e', b's', b't']);
    program
}

#[tokio::test]
async fn uploaded_programs_are_listed_newest_first_under_their_names() {
    let app = TestApp::new().start().await;
    let alice = app.user_token("alice").await;
    let upload = |path: &str, program: Vec<u8>, token: &str| {
        app.post(path).token(token).header("content-type", "application/wasm").body(program).send()
    };
    let first = upload("/api/modules?name=noop.wasm", NOOP_MODULE.to_vec(), &alice).await.json();
    // Uploads are ordered by their time in milliseconds.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = upload("/api/modules", another_program(), &alice).await.json();
    let listed = app.get("/api/modules").token(&alice).send().await.json();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(listed[0]["sha256"], second["sha256"], "newest first");
    assert_eq!(listed[0]["name"], Value::Null);
    assert_eq!((&listed[1]["sha256"], &listed[1]["name"]), (&first["sha256"], &json!("noop.wasm")));
    assert_eq!(listed[1]["size"], NOOP_MODULE.len());
    assert!(listed[1]["uploaded_at_ms"].as_u64().unwrap() > 1_700_000_000_000);

    // Uploading again brings it to the top under its new name; another account sees only its own.
    tokio::time::sleep(Duration::from_millis(5)).await;
    upload("/api/modules?name=r%C3%A9sum%C3%A9%20v2.wasm", NOOP_MODULE.to_vec(), &alice).await;
    let listed = app.get("/api/modules").token(&alice).send().await.json();
    assert_eq!((&listed[0]["sha256"], &listed[0]["name"]), (&first["sha256"], &json!("résumé v2.wasm")));
    let bob = app.user_token("bob").await;
    assert_eq!(app.get("/api/modules").token(&bob).send().await.json(), json!([]));
    upload("/api/modules?name=mine.wasm", NOOP_MODULE.to_vec(), &bob).await;
    let bobs = app.get("/api/modules").token(&bob).send().await.json();
    assert_eq!(bobs[0]["name"], "mine.wasm", "each uploader names a program for themselves");

    // A name is 1 to 128 printable characters; anything else is refused before the upload is read.
    let long = "é".repeat(128);
    assert_eq!(upload(&format!("/api/modules?name={long}"), another_program(), &alice).await.status, 201);
    for bad in [String::new(), "é".repeat(129), "a%0Ab".to_owned(), "tab%09.wasm".to_owned()] {
        let refused = upload(&format!("/api/modules?name={bad}"), another_program(), &alice).await;
        assert_eq!(refused.status, 400, "{bad:?}");
        assert!(refused.error().contains("name"), "{}", refused.error());
    }
}

#[tokio::test]
async fn the_statistics_page_is_public_and_shows_thirty_days_even_without_work() {
    let app = TestApp::new().start().await;
    let history = app.get("/api/stats/history").send().await;
    assert_eq!(history.status, 200, "public, no credentials");
    let history = history.json();
    let days = history["days"].as_array().unwrap();
    assert_eq!(days.len(), 30);
    assert!(days.iter().all(|day| day["chunks"] == 0 && day["work_units"] == 0));
    let dates: Vec<&str> = days.iter().map(|day| day["day"].as_str().unwrap()).collect();
    assert!(dates.windows(2).all(|pair| pair[0] < pair[1]), "oldest first: {dates:?}");
    assert_eq!(history["leaderboard"], json!([]));
    assert_eq!((history["volunteers_online"].as_u64(), history["running_jobs"].as_u64()), (Some(0), Some(0)));
}

#[tokio::test]
async fn the_limits_are_public_and_are_the_servers() {
    let app = TestApp::new().with(|config| config.max_chunks_per_job = 77).start().await;
    let limits = app.get("/api/limits").send().await;
    assert_eq!(limits.status, 200);
    let limits = limits.json();
    assert_eq!(limits["max_chunks_per_job"], 77);
    assert_eq!(limits["max_module_bytes"], app.config.max_module_bytes);
    assert_eq!(limits["default_limits"]["memory_limit_bytes"], app.config.default_limits.memory_bytes);
    assert_eq!(limits["max_limits"]["max_work_units"], app.config.max_limits.max_work_units);
    assert_eq!(limits["max_retries"], app.config.max_retries_cap);
    assert_eq!(limits["max_replicas"], app.config.max_replicas);
}

/// The files a result should have in the archive, from its JSON: the `--out` directory's layout.
fn expected_files(result: &Value) -> BTreeMap<String, Vec<u8>> {
    let index = result["index"].as_u64().unwrap();
    let output = &result["output"];
    let mut files = BTreeMap::from([
        (format!("{index}/stdout"), base64_decode(&output["stdout"])),
        (format!("{index}/stderr"), base64_decode(&output["stderr"])),
    ]);
    if let Some(code) = result["status"]["exited"]["code"].as_u64() {
        files.insert(format!("{index}/exit_code"), format!("{code}\n").into_bytes());
    }
    for (name, contents) in output["files"].as_object().unwrap() {
        if !name.contains("..") {
            files.insert(format!("{index}/files/{name}"), base64_decode(contents));
        }
    }
    files
}

#[tokio::test]
async fn the_results_archive_holds_each_result_as_the_out_directory_lays_it_out() {
    let app = TestApp::new().start().await;
    let mut worker = admins_worker(&app, 4).await;
    let job = app
        .submit_noop(&app.admin_token, 4, json!({ "name": "archive", "replication": { "replicas": 1, "quorum": 1 } }))
        .await;
    let assigned = assignments(&mut worker, 4).await;
    let report = |assignment: &Assignment| {
        let (status, files): (RunStatus, Vec<(&str, Vec<u8>)>) = match assignment.chunk {
            0 => (RunStatus::Exited { code: 0 }, vec![("a.txt", b"A".to_vec()), ("sub/b.bin", vec![0, 1, 2, 255])]),
            1 => (RunStatus::Exited { code: 3 }, vec![("../evil", b"x".to_vec()), ("ok", Vec::new())]),
            _ => (RunStatus::Trapped { message: "unreachable executed".to_owned() }, Vec::new()),
        };
        ReplicaReport {
            replica: assignment.replica,
            status,
            output: Output {
                stdout: format!("stdout of {}", assignment.chunk).as_bytes().into(),
                stderr: vec![assignment.chunk as u8; 3].into(),
                stdout_truncated: assignment.chunk == 1,
                stderr_truncated: false,
                files: files.into_iter().map(|(name, bytes)| (name.to_owned(), bytes.into())).collect(),
            },
            compute_us: 10,
            work_units: 1_000,
        }
    };
    // Three of the four chunks finish: a running job's archive holds what completed when it was asked for.
    let (done, waiting): (Vec<&Assignment>, Vec<&Assignment>) = assigned.iter().partition(|a| a.chunk < 3);
    worker.send(&WorkerMessage::Results(done.iter().map(|a| report(a)).collect())).await;
    let mut known = 0;
    while known < 3 {
        let status =
            app.admin("GET", &format!("/api/jobs/{job}?wait_ms=5000&known_finished={known}")).send().await.json();
        known = status["succeeded"].as_u64().unwrap() + status["failed"].as_u64().unwrap();
    }
    let answer = app.admin("GET", &format!("/api/jobs/{job}/results.zip")).send().await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type").as_deref(), Some("application/zip"));
    assert_eq!(
        answer.header("content-disposition").as_deref(),
        Some(format!("attachment; filename=\"job-{job}-results.zip\"").as_str())
    );
    let results = app.admin("GET", &format!("/api/jobs/{job}/results")).send().await.json();
    let results = results["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 3);

    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(answer.body)).unwrap();
    let mut archived = BTreeMap::new();
    for index in 0..archive.len() {
        let mut file = archive.by_index(index).unwrap();
        let mut contents = Vec::new();
        file.read_to_end(&mut contents).unwrap();
        archived.insert(file.name().to_owned(), contents);
    }
    let mut expected = BTreeMap::new();
    for result in &results {
        expected.extend(expected_files(result));
        // The status file says how the run ended, and what was truncated or left out.
        let index = result["index"].as_u64().unwrap();
        let status = String::from_utf8(archived.remove(&format!("{index}/status")).unwrap()).unwrap();
        assert!(status.starts_with(&format!("{}\n", result["reason"].as_str().unwrap())), "{status}");
        assert_eq!(status.contains("stdout was truncated"), index == 1, "{status}");
        assert_eq!(status.contains(r#""../evil" was left out"#), index == 1, "{status}");
    }
    assert_eq!(archived, expected, "every entry, byte for byte");
    assert!(archived.contains_key("0/files/sub/b.bin") && archived.contains_key("1/files/ok"));
    assert!(!archived.contains_key("2/exit_code"), "a trapped run has no exit code");

    // Not someone else's, and not without credentials.
    let bob = app.user_token("bob").await;
    let refused = app.get(&format!("/api/jobs/{job}/results.zip")).token(&bob).send().await;
    assert_eq!((refused.status, refused.error()), (404, format!("you have no job {job}")));
    assert_eq!(app.get(&format!("/api/jobs/{job}/results.zip")).send().await.status, 401);

    // Once the last chunk is in, the archive has all four.
    worker.send(&WorkerMessage::Results(waiting.iter().map(|a| report(a)).collect())).await;
    finished(&app, &app.admin_token, job).await;
    let whole = app.admin("GET", &format!("/api/jobs/{job}/results.zip")).send().await;
    let archive = zip::ZipArchive::new(std::io::Cursor::new(whole.body)).unwrap();
    assert!(archive.file_names().any(|name| name == "3/stdout"));
}

#[tokio::test]
async fn the_results_archive_of_a_job_without_results_is_an_empty_zip() {
    let app = TestApp::new().start().await;
    let job = app.submit_noop(&app.admin_token, 2, json!({})).await;
    let answer = app.admin("GET", &format!("/api/jobs/{job}/results.zip")).send().await;
    assert_eq!(answer.status, 200);
    assert_eq!(zip::ZipArchive::new(std::io::Cursor::new(answer.body)).unwrap().len(), 0);
}

/// The next status event of a stream, skipping keep-alive comments; `None` once the stream ended.
async fn next_status(stream: &mut RawResponse) -> Option<Value> {
    loop {
        let item = tokio::time::timeout(Duration::from_secs(30), stream.next_event()).await.expect("an event")?;
        match item {
            Sse::Event { name, data } => {
                assert_eq!(name, "status");
                return Some(serde_json::from_str(&data).unwrap());
            }
            Sse::Comment(_) => continue,
        }
    }
}

#[tokio::test]
async fn a_jobs_events_follow_it_to_its_end_for_its_owner_only() {
    let app = TestApp::new().with(|config| config.header_read_timeout_ms = 300).start().await;
    let address = app.serve().await;
    let mut worker = admins_worker(&app, 2).await;
    let job = app.submit_noop(&app.admin_token, 2, json!({ "replication": { "replicas": 1, "quorum": 1 } })).await;
    let assigned = assignments(&mut worker, 2).await;
    let bearer = format!("Bearer {}", app.admin_token);
    let path = format!("/api/jobs/{job}/events");
    let mut stream = RawResponse::get(address, &path, &[("Authorization", &bearer)]).await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    let first = next_status(&mut stream).await.expect("the status at once");
    assert_eq!((first["id"].as_u64(), first["state"].as_str()), (Some(job), Some("running")));
    assert_eq!(first["running"], 2);

    // The stream outlives the header read timeout; each result changes the status.
    tokio::time::sleep(Duration::from_millis(600)).await;
    worker.send(&WorkerMessage::Results(vec![exited(&assigned[0], b"", 10)])).await;
    let mut seen = vec![first];
    let mut times = Vec::new();
    while let Some(status) = next_status(&mut stream).await {
        times.push(tokio::time::Instant::now());
        if status["succeeded"] == 1 && seen.iter().all(|seen| seen["succeeded"] != 1) {
            worker.send(&WorkerMessage::Results(vec![exited(&assigned[1], b"", 10)])).await;
        }
        seen.push(status);
    }
    let last = seen.last().unwrap();
    assert_eq!((last["state"].as_str(), last["succeeded"].as_u64()), (Some("succeeded"), Some(2)), "{seen:?}");
    assert!(seen.windows(2).all(|pair| pair[0] != pair[1]), "only changes are sent: {seen:?}");
    assert!(times.windows(2).all(|pair| pair[1] - pair[0] >= Duration::from_millis(240)), "at most four a second");

    // A finished job's stream sends its state and ends; another account's job is not found.
    let mut again = RawResponse::get(address, &path, &[("Authorization", &bearer)]).await;
    assert_eq!(next_status(&mut again).await.unwrap()["state"], "succeeded");
    assert_eq!(next_status(&mut again).await, None);
    let bob = app.user_token("bob").await;
    let mut refused = RawResponse::get(address, &path, &[("Authorization", &format!("Bearer {bob}"))]).await;
    assert_eq!(refused.status, 404);
    assert_eq!(
        serde_json::from_str::<Value>(&refused.body().await).unwrap()["error"],
        format!("you have no job {job}")
    );
    let anonymous = RawResponse::get(address, &path, &[]).await;
    assert_eq!(anonymous.status, 401);
}

#[tokio::test]
async fn an_account_holds_at_most_sixteen_event_streams_and_a_browser_opens_them_with_its_cookie() {
    let app = TestApp::new().start().await;
    let address = app.serve().await;
    let (cookie, csrf) = app.sign_up("alice").await;
    let (_, token) = app.create_token(&cookie, &csrf, "tests").await;
    let job = app.submit_noop(&token, 1, json!({})).await;
    let path = format!("/api/jobs/{job}/events");
    let mut open = Vec::new();
    for _ in 0..16 {
        // An EventSource sends the session cookie, and a GET needs no CSRF token.
        let mut stream = RawResponse::get(address, &path, &[("Cookie", &cookie)]).await;
        assert_eq!(stream.status, 200);
        assert_eq!(next_status(&mut stream).await.unwrap()["state"], "running");
        open.push(stream);
    }
    let mut refused = RawResponse::get(address, &path, &[("Authorization", &format!("Bearer {token}"))]).await;
    assert_eq!(refused.status, 429);
    let message = serde_json::from_str::<Value>(&refused.body().await).unwrap()["error"].as_str().unwrap().to_owned();
    assert!(message.contains("16 event streams open"), "{message}");
    // Other accounts have their own.
    let others = app.admin("GET", "/api/jobs").send().await;
    assert_eq!(others.status, 200);
    // Cancelling ends every stream (after its final state), and gives their places back.
    let cancelled = app.post(&format!("/api/jobs/{job}/cancel")).token(&token).send().await;
    assert_eq!(cancelled.status, 200);
    for stream in &mut open {
        let mut last = Value::Null;
        while let Some(status) = next_status(stream).await {
            last = status;
        }
        assert_eq!(last["state"], "cancelled");
    }
    let mut after = RawResponse::get(address, &path, &[("Authorization", &format!("Bearer {token}"))]).await;
    for _ in 0..50 {
        if after.status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        after = RawResponse::get(address, &path, &[("Authorization", &format!("Bearer {token}"))]).await;
    }
    assert_eq!(after.status, 200);
    assert_eq!(next_status(&mut after).await.unwrap()["state"], "cancelled");
}

#[tokio::test]
async fn the_openapi_document_describes_the_web_apps_endpoints() {
    let app = TestApp::new().start().await;
    let document = app.get("/api/openapi.json").send().await.json();
    let paths = document["paths"].as_object().unwrap();
    for (method, path) in [
        ("get", "/api/jobs"),
        ("get", "/api/jobs/{id}/events"),
        ("get", "/api/jobs/{id}/results.zip"),
        ("get", "/api/modules"),
        ("post", "/api/modules"),
        ("get", "/api/account/ledger"),
        ("get", "/api/account/volunteering"),
        ("get", "/api/stats/history"),
        ("get", "/api/limits"),
    ] {
        assert!(paths.get(path).and_then(|operations| operations.get(method)).is_some(), "{method} {path}");
    }
    let parameters = |path: &str, method: &str| -> Vec<String> {
        paths[path][method]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|parameter| parameter["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(parameters("/api/jobs", "get"), ["before", "limit"]);
    assert_eq!(parameters("/api/account/ledger", "get"), ["limit", "before"]);
    assert_eq!(parameters("/api/modules", "post"), ["name"]);
    let schemas = document["components"]["schemas"].as_object().unwrap();
    for schema in ["JobStatus", "ModuleSummary", "LedgerPage", "VolunteeringStats", "CommunityStats", "ServerLimits"] {
        assert!(schemas.contains_key(schema), "{schema}");
    }
    assert!(schemas["JobStatus"]["properties"].get("escrowed_millicredits").is_some());
}
