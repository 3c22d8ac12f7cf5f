//! Blobs over HTTP: stored once under their hash, read only by the accounts that uploaded them and by a
//! worker while it holds a replica that needs them; jobs may name only their owner's blobs.

use distributivecom_protocol::worker::{Credential, Output, ReplicaReport, RunStatus, ServerMessage, WorkerMessage};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::support::*;
use crate::worker_socket::FakeWorker;

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Uploads `bytes` as the token's account and returns the answer.
async fn upload(app: &TestApp, token: &str, bytes: &[u8]) -> Answer {
    app.post("/api/blobs")
        .token(token)
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
}

#[tokio::test]
async fn blobs_are_stored_by_hash_once_and_only_their_uploaders_read_them() {
    let app = TestApp::new().start().await;
    let bytes: Vec<u8> = (0..300_000u32).map(|index| (index % 251) as u8).collect();
    let sha = sha256(&bytes);

    assert_eq!(app.post("/api/blobs").body(bytes.clone()).send().await.status, 401, "no credentials, no upload");
    let answer = upload(&app, &app.admin_token, &bytes).await;
    assert_eq!(answer.status, 201, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.json(), json!({ "sha256": sha, "size": bytes.len() }));
    let again = upload(&app, &app.admin_token, &bytes).await;
    assert_eq!((again.status, again.json()["sha256"].as_str()), (201, Some(sha.as_str())), "the same bytes again");
    let stored: Vec<_> = std::fs::read_dir(app.config.data_dir.join("blobs"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != "staging")
        .collect();
    assert_eq!(stored, vec![sha.clone()], "kept once, under its hash");
    assert_eq!(std::fs::read_dir(app.config.data_dir.join("blobs/staging")).unwrap().count(), 0, "no leftovers");

    let read = app.admin("GET", &format!("/api/blobs/{sha}")).send().await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body, bytes);
    assert_eq!(read.header("etag"), Some(format!("\"{sha}\"")));
    let head = app.admin("HEAD", &format!("/api/blobs/{sha}")).send().await;
    assert_eq!((head.status, head.header("content-length")), (200, Some(bytes.len().to_string())));
    assert!(head.body.is_empty());

    // Another account: the same answer as for a blob that does not exist, until it uploads the bytes too.
    let bob = app.user_token("bob").await;
    let missing = app.request("GET", &format!("/api/blobs/{}", sha256(b"nothing"))).token(&bob).send().await;
    let foreign = app.request("GET", &format!("/api/blobs/{sha}")).token(&bob).send().await;
    assert_eq!((foreign.status, missing.status), (404, 404));
    assert!(foreign.error().starts_with("no blob"), "{}", foreign.error());
    assert_eq!(app.request("HEAD", &format!("/api/blobs/{sha}")).token(&bob).send().await.status, 404);
    assert_eq!(app.get(&format!("/api/blobs/{sha}")).send().await.status, 401);
    assert_eq!(upload(&app, &bob, &bytes).await.status, 201);
    assert_eq!(app.request("GET", &format!("/api/blobs/{sha}")).token(&bob).send().await.body, bytes);
    // Not public as a worker download either.
    assert_eq!(app.get(&format!("/blobs/{sha}")).send().await.status, 404);
}

#[tokio::test]
async fn a_blob_over_the_limit_or_the_quota_or_shorter_than_declared_is_refused() {
    let app = TestApp::new()
        .with(|config| {
            config.max_blob_bytes = 1000;
            config.max_blob_bytes_per_account = 1500;
        })
        .start()
        .await;
    let declared = app
        .post("/api/blobs")
        .token(&app.admin_token)
        .header("content-length", "1000000000000")
        .body(vec![0; 10])
        .send()
        .await;
    assert_eq!(declared.status, 413);
    assert!(declared.error().contains("the blob is larger than the limit"), "{}", declared.error());

    assert_eq!(upload(&app, &app.admin_token, &[1; 1000]).await.status, 201);
    let over_quota = upload(&app, &app.admin_token, &[2; 600]).await;
    assert_eq!(over_quota.status, 413);
    assert!(over_quota.error().contains("quota"), "{}", over_quota.error());

    let short =
        app.post("/api/blobs").token(&app.admin_token).header("content-length", "500").body(vec![3; 10]).send().await;
    assert_eq!(short.status, 400, "{}", short.error());
    assert!(short.error().contains("10 of the 500 bytes"), "{}", short.error());
    assert_eq!(std::fs::read_dir(app.config.data_dir.join("blobs/staging")).unwrap().count(), 0, "no leftovers");
}

#[tokio::test]
async fn a_chunk_naming_a_blob_its_owner_did_not_upload_is_refused_with_the_file_and_the_hash() {
    let app = TestApp::new().start().await;
    let bob = app.user_token("bob").await;
    let bobs = upload(&app, &bob, b"bob's data").await.json()["sha256"].as_str().unwrap().to_owned();
    let module = app.upload_noop(&app.admin_token).await;
    let unknown = sha256(b"never uploaded");
    for (blob, status, expected) in [
        (
            unknown.as_str(),
            422,
            format!("chunk 1: file \"shard.bin\" names blob {unknown}, which this account has not uploaded"),
        ),
        (
            bobs.as_str(),
            422,
            format!("chunk 1: file \"shard.bin\" names blob {bobs}, which this account has not uploaded"),
        ),
        ("../etc", 400, "chunk 1: file \"shard.bin\" names blob \"../etc\", which is not a SHA-256".to_owned()),
    ] {
        let request = json!({ "module": module, "chunks": [{}, { "files": { "shard.bin": { "blob": blob } } }] });
        let answer = app.admin("POST", "/api/jobs").json(request).send().await;
        assert_eq!(answer.status, status, "{}", answer.error());
        assert!(answer.error().contains(&expected), "{}", answer.error());
    }
    let malformed = json!({ "module": module, "chunks": [{ "files": { "a": { "blob": unknown, "size": 3 } } }] });
    let answer = app.admin("POST", "/api/jobs").json(malformed).send().await;
    assert_eq!(answer.status, 400);
    assert!(answer.error().contains("unknown field `size`"), "{}", answer.error());

    // A blob larger than the job's data limit is refused like an inline file would be.
    let big = upload(&app, &app.admin_token, &vec![7; 2048]).await.json()["sha256"].as_str().unwrap().to_owned();
    let request = json!({
        "module": module,
        "limits": { "max_data_bytes": 1024 },
        "chunks": [{ "files": { "big.bin": { "blob": big } } }],
    });
    let answer = app.admin("POST", "/api/jobs").json(request).send().await;
    assert_eq!(answer.status, 400, "{}", answer.error());
    assert!(answer.error().contains("chunk 0"), "{}", answer.error());
}

#[tokio::test]
async fn a_blob_is_served_to_a_worker_only_while_it_holds_a_replica_that_needs_it() {
    let app = TestApp::new().start().await;
    let shard = b"the shard's bytes".to_vec();
    let other = b"another blob of the same account".to_vec();
    let sha = upload(&app, &app.admin_token, &shard).await.json()["sha256"].as_str().unwrap().to_owned();
    let other_sha = upload(&app, &app.admin_token, &other).await.json()["sha256"].as_str().unwrap().to_owned();
    let mut worker = FakeWorker::connect(&app, 64);
    assert!(matches!(
        worker.hello(Credential::Token(app.admin_token.clone()), 1).await,
        Some(ServerMessage::Welcome(_))
    ));
    let module = app.upload_noop(&app.admin_token).await;
    let request = json!({
        "module": module,
        "replication": { "replicas": 1, "quorum": 1 },
        "chunks": [{ "files": { "shard.bin": { "blob": sha }, "small.txt": "aGk=" } }],
    });
    let job = app.admin("POST", "/api/jobs").json(request).send().await;
    assert_eq!(job.status, 201, "{}", job.error());
    let Some(ServerMessage::Assign(assigned)) = worker.receive().await else { panic!("an assignment expected") };
    let assignment = &assigned[0];
    assert_eq!(assignment.files.keys().collect::<Vec<_>>(), ["small.txt"], "inline files travel inline");
    let blob = &assignment.blobs["shard.bin"];
    assert_eq!((blob.sha256.as_str(), blob.size), (sha.as_str(), shard.len() as u64));

    let fetch = |sha: &str, capability: &str| app.get(&format!("/blobs/{sha}?capability={capability}")).send();
    let fetched = fetch(&sha, &blob.capability).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.body, shard);
    assert_eq!(fetch(&other_sha, &blob.capability).await.status, 404, "a blob the replica does not need");
    let (replica, token) = blob.capability.split_once('.').unwrap();
    let forged = format!("{replica}.{}", "0".repeat(token.len()));
    assert_eq!(fetch(&sha, &forged).await.status, 404, "a forged capability");
    let other_replica = format!("{}.{token}", assignment.replica + 1);
    assert_eq!(fetch(&sha, &other_replica).await.status, 404, "another replica's capability");
    assert_eq!(app.get(&format!("/blobs/{sha}")).send().await.status, 404, "no capability");
    // A retry or two after a broken download, but not a way to download the blob over and over.
    for _ in 1..distributivecom_server::coordinator::MAX_BLOB_FETCHES {
        assert_eq!(fetch(&sha, &blob.capability).await.status, 200);
    }
    assert_eq!(fetch(&sha, &blob.capability).await.status, 404, "one fetch more than a replica needs");

    let report = ReplicaReport {
        replica: assignment.replica,
        status: RunStatus::Exited { code: 0 },
        output: Output::default(),
        compute_us: 1,
        work_units: 1,
    };
    worker.send(&WorkerMessage::Results(vec![report])).await;
    let id = job.json()["id"].as_u64().unwrap();
    let status = app.admin("GET", &format!("/api/jobs/{id}?wait_ms=10000&known_finished=0")).send().await.json();
    assert_eq!(status["state"], "succeeded");
    assert_eq!(fetch(&sha, &blob.capability).await.status, 404, "the lease is over, and so is the capability");
}

/// Waits until `count` uploads are streaming into the staging directory.
async fn until_staging_holds(app: &TestApp, count: usize) {
    let staging = app.config.data_dir.join("blobs/staging");
    for _ in 0..500 {
        if std::fs::read_dir(&staging).unwrap().count() == count {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{count} uploads never reached the staging directory");
}

#[tokio::test]
async fn uploads_in_progress_count_toward_the_quota_and_an_account_runs_at_most_four() {
    let app = TestApp::new()
        .with(|config| {
            config.max_blob_bytes = 1000;
            config.max_blob_bytes_per_account = 1500;
        })
        .start()
        .await;
    // An upload that declared 1000 bytes and has sent 10 of them holds its 1000 bytes of the quota.
    let (sender, body) = streamed_body();
    sender.send(vec![1; 10]).await.unwrap();
    let call = app.post("/api/blobs").token(&app.admin_token).header("content-length", "1000");
    let slow = tokio::spawn(call.send_body(body, 1000));
    until_staging_holds(&app, 1).await;
    let meanwhile = upload(&app, &app.admin_token, &[2; 600]).await;
    assert_eq!(meanwhile.status, 413, "{}", meanwhile.error());
    assert!(meanwhile.error().contains("quota"), "{}", meanwhile.error());
    // Another account's quota is its own.
    let bob = app.user_token("bob").await;
    assert_eq!(upload(&app, &bob, &[2; 600]).await.status, 201);

    sender.send(vec![1; 990]).await.unwrap();
    drop(sender);
    let finished = slow.await.unwrap();
    assert_eq!(finished.status, 201, "{}", finished.error());
    assert_eq!(upload(&app, &app.admin_token, &[3; 500]).await.status, 201, "1500 bytes in all fit the quota");

    // At most four uploads at once per account; a fifth waits its turn.
    let app = TestApp::new().start().await;
    let mut senders = Vec::new();
    let mut calls = Vec::new();
    for _ in 0..4 {
        let (sender, body) = streamed_body();
        let call = app.post("/api/blobs").token(&app.admin_token).header("content-length", "100");
        calls.push(tokio::spawn(call.send_body(body, 100)));
        senders.push(sender);
    }
    until_staging_holds(&app, 4).await;
    let fifth = upload(&app, &app.admin_token, &[4; 100]).await;
    assert_eq!(fifth.status, 429, "{}", fifth.error());
    assert!(fifth.error().contains("4 blob uploads in progress"), "{}", fifth.error());
    drop(senders);
    for call in calls {
        assert_eq!(call.await.unwrap().status, 400, "an upload cut short is refused");
    }
    assert_eq!(upload(&app, &app.admin_token, &[4; 100]).await.status, 201, "the turn came");
    until_staging_holds(&app, 0).await;
}
