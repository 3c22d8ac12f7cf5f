//! A job's status as Server-Sent Events from a real server process, read over loopback by a raw HTTP/1.1
//! client (as a browser's EventSource reads it) while a real native worker runs the job.

use std::time::Duration;

use distributivecom_protocol::api::{ChunkRequest, JobRequest, JobStatus, ReplicationRequest};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::support::*;

/// A stream of events read from a raw connection: the status line, then the chunked body, event by event.
struct EventStream {
    reader: BufReader<TcpStream>,
    status: u16,
    text: String,
}

impl EventStream {
    async fn open(server: &TestServer, path: &str, authorization: &str) -> EventStream {
        let mut stream = TcpStream::connect(("127.0.0.1", server.port)).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nAuthorization: {authorization}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        let status = line.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or_else(|| panic!("{line:?}"));
        let mut chunked = false;
        loop {
            line.clear();
            reader.read_line(&mut line).await.unwrap();
            if line.trim_end().is_empty() {
                break;
            }
            chunked |= line.to_ascii_lowercase().starts_with("transfer-encoding: chunked");
        }
        assert!(chunked || status != 200, "a stream is sent in chunks");
        EventStream { reader, status, text: String::new() }
    }

    /// The data of the next `status` event, or `None` once the server ended the stream.
    async fn next_status(&mut self) -> Option<JobStatus> {
        loop {
            while let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                if block.starts_with(':') {
                    continue; // a keep-alive comment
                }
                assert!(block.starts_with("event: status\n"), "{block:?}");
                let data = block.lines().find_map(|line| line.strip_prefix("data: ")).expect("data");
                return Some(serde_json::from_str(data).unwrap());
            }
            let mut size = String::new();
            tokio::time::timeout(Duration::from_secs(60), self.reader.read_line(&mut size))
                .await
                .expect("the stream moves within a minute")
                .unwrap();
            let size = usize::from_str_radix(size.trim_end(), 16).unwrap_or_else(|_| panic!("chunk size {size:?}"));
            let mut chunk = vec![0; size + 2];
            self.reader.read_exact(&mut chunk).await.unwrap();
            if size == 0 {
                assert!(self.text.is_empty(), "the stream ended inside an event: {:?}", self.text);
                return None;
            }
            self.text.push_str(std::str::from_utf8(&chunk[..size]).unwrap());
        }
    }
}

#[tokio::test]
async fn a_jobs_event_stream_follows_it_on_a_real_worker_until_it_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let client = server.client();
    let program = wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_start")))"#).unwrap();
    let module = client.upload_module(program).await.unwrap();
    let request = JobRequest {
        module,
        chunks: vec![ChunkRequest::default(); 40],
        replication: Some(ReplicationRequest { replicas: 1, quorum: 1 }),
        ..JobRequest::default()
    };
    let job = client.submit(&request).await.unwrap().id;
    let path = format!("/api/jobs/{job}/events");
    let bearer = format!("Bearer {}", server.admin_token);

    // No worker yet: the first status says the job waits, and why.
    let mut events = EventStream::open(&server, &path, &bearer).await;
    assert_eq!(events.status, 200);
    let first = events.next_status().await.expect("the status at once");
    assert_eq!((first.id, first.state.is_finished(), first.succeeded), (job, false, 0));
    assert!(first.waiting_reason.is_some(), "{first:?}");

    let _worker = server.own_worker(2);
    let mut seen = vec![first];
    while let Some(status) = events.next_status().await {
        seen.push(status);
    }
    let last = seen.last().unwrap();
    assert_eq!(last.state, distributivecom_protocol::api::JobState::Succeeded, "{seen:#?}");
    assert_eq!((last.succeeded, last.escrowed_millicredits, last.volunteers), (40, 0, 0));
    assert!(seen.windows(2).all(|pair| pair[0] != pair[1]), "only changes are sent");
    assert!(seen.windows(2).all(|pair| pair[0].succeeded <= pair[1].succeeded), "progress only moves on");

    // Another account's request is answered as for a job that does not exist.
    let signed_up = reqwest::Client::new()
        .post(format!("{}/api/auth/signup", server.url))
        .json(&serde_json::json!({ "username": "mallory", "password": "correct horse battery" }))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_up.status(), 201);
    let cookie = signed_up.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains(&format!("you have no job {job}")), "{answer}");
}
