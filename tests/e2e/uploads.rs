//! Bad input gets a clear 4xx that names the problem, and the server keeps running.

use distributivecom_client::ClientError;
use distributivecom_protocol::api::{ChunkRequest, JobRequest, ReplicationRequest};

use crate::support::*;

fn refusal(result: Result<impl std::fmt::Debug, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Api { status, message }) => (status, message),
        other => panic!("expected an error answer, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_programs_are_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--max-module-mib", "1"]);
    let client = server.client();

    let (status, message) = refusal(client.upload_module_info(b"#!/bin/sh\necho not wasm\n".to_vec()).await);
    assert_eq!(status, 422);
    assert!(message.contains("not a WebAssembly module"), "{message}");

    let forbidden =
        wat::parse_str(r#"(module (import "env" "foo" (func)) (memory (export "memory") 1) (func (export "_start")))"#)
            .unwrap();
    let (status, message) = refusal(client.upload_module_info(forbidden).await);
    assert_eq!(status, 422);
    assert_eq!(message, "import env.foo is not allowed: programs may import only functions of wasi_snapshot_preview1");

    let no_start = wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "main")))"#).unwrap();
    let (status, message) = refusal(client.upload_module_info(no_start).await);
    assert_eq!(status, 422);
    assert!(message.contains("no `_start`"), "{message}");

    let mut oversized = program("spin");
    oversized.resize(2 * 1024 * 1024, 0);
    let (status, message) = refusal(client.upload_module_info(oversized).await);
    assert_eq!(status, 413);
    assert_eq!(message, "the program is larger than the limit of 1 MiB");

    // After all that the server still accepts a good program.
    let info = client.upload_module_info(program("spin")).await.unwrap();
    assert_eq!(info.sha256.len(), 64);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_job_requests_are_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let client = server.client();
    let module = client.upload_module(program("echo-args")).await.unwrap();
    let valid = JobRequest { module: module.clone(), chunks: vec![chunk(&["a"])], ..JobRequest::default() };

    let unknown = JobRequest { module: "0".repeat(64), ..valid.clone() };
    let (status, message) = refusal(client.submit(&unknown).await);
    assert_eq!(status, 422);
    assert!(message.contains("has not been uploaded"), "{message}");

    let no_chunks = JobRequest { chunks: vec![], ..valid.clone() };
    assert_eq!(refusal(client.submit(&no_chunks).await), (400, "a job needs at least one chunk".to_owned()));

    let mut escaping = valid.clone();
    escaping.chunks =
        vec![ChunkRequest { files: [("../etc/passwd".to_owned(), "x".into())].into(), ..Default::default() }];
    let (status, message) = refusal(client.submit(&escaping).await);
    assert_eq!(status, 400);
    assert!(message.starts_with("chunk 0: input file path \"../etc/passwd\" is invalid"), "{message}");

    let mut greedy = valid.clone();
    greedy.limits.memory_limit_bytes = Some(1 << 40);
    let (status, message) = refusal(client.submit(&greedy).await);
    assert_eq!(status, 400);
    assert!(message.starts_with("limits.memory_limit_bytes is 1099511627776, more than"), "{message}");

    // Raw HTTP: malformed JSON and unknown fields.
    let http = reqwest::Client::new();
    let response = http
        .post(format!("{}/api/jobs", server.url))
        .bearer_auth(&server.admin_token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("could not read the job request"), "{body}");

    let response =
        http.get(format!("{}/api/jobs/999999", server.url)).bearer_auth(&server.admin_token).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["error"], "you have no job 999999");

    // And a valid job still goes through.
    assert!(client.submit(&valid).await.is_ok());
}

/// The bytes of a LEB128-encoded unsigned number.
fn leb128(mut value: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            bytes.push(byte);
            return bytes;
        }
        bytes.push(byte | 0x80);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_64_mib_program_is_accepted_fetched_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    // The owner's own worker, and one replica: the program is fetched once.
    let _worker = server.own_worker(1);
    let client = server.client();
    // echo-args plus a 64 MiB custom section: a real program of the size large toolchains produce.
    let mut big = program("echo-args");
    let name = b"padding";
    let payload_len = 64 * 1024 * 1024;
    let mut section = leb128(name.len());
    section.extend_from_slice(name);
    let content_len = section.len() + payload_len;
    big.push(0);
    big.extend(leb128(content_len));
    big.extend(section);
    big.resize(big.len() + payload_len, 0xab);
    assert!(big.len() > 64 * 1024 * 1024);

    let module = client.upload_module(big).await.expect("a 64 MiB program is accepted");
    let request = JobRequest {
        module,
        chunks: vec![chunk(&["big", "program"])],
        replication: Some(ReplicationRequest { replicas: 1, quorum: 1 }),
        ..JobRequest::default()
    };
    let job = client.submit(&request).await.unwrap().id;
    let (status, results) = finish(&client, job).await;
    assert_eq!(status.state, distributivecom_protocol::api::JobState::Succeeded);
    assert_eq!(results[0].output.stdout.as_ref(), b"big\nprogram\n");
}
