//! Blobs end to end: a job whose input file is a blob gives the results of the same job with the file
//! inline, on native workers and in a browser tab, and each worker fetches the blob once and keeps it.

use distributivecom_protocol::api::{ChunkRequest, FileInput, JobRequest, ReplicationRequest};

use std::time::Duration;

use crate::support::*;

/// Two MiB that are not all alike.
fn shard() -> Vec<u8> {
    (0..2u32 << 20).map(|index| (index.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

fn fsops_job(input: FileInput, chunks: usize) -> JobRequest {
    let chunk = ChunkRequest { files: [("input.txt".to_owned(), input)].into(), ..ChunkRequest::default() };
    JobRequest {
        chunks: vec![chunk; chunks],
        replication: Some(ReplicationRequest { replicas: 1, quorum: 1 }),
        ..JobRequest::default()
    }
}

#[tokio::test]
async fn native_workers_fetch_a_blob_once_keep_it_and_give_the_results_of_the_inline_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let _worker = server.own_worker(2);
    let client = server.client();
    let bytes = shard();
    let blob = client.upload_blob(bytes.clone()).await.unwrap();

    let job = submit_request(&client, "fsops", fsops_job(FileInput::Blob { blob: blob.sha256.clone() }, 4)).await;
    let (status, from_blob) = finish(&client, job).await;
    assert_eq!(status.succeeded, 4, "{status:?}");
    let stdout = String::from_utf8_lossy(&from_blob[0].output.stdout).into_owned();
    assert!(stdout.contains(&format!("input: {} bytes", bytes.len())), "{stdout}");

    let inline = submit_request(&client, "fsops", fsops_job(FileInput::Inline(bytes.clone().into()), 4)).await;
    let (_, from_inline) = finish(&client, inline).await;
    for (blob, inline) in from_blob.iter().zip(&from_inline) {
        assert_eq!((&blob.status, &blob.output, blob.work_units), (&inline.status, &inline.output, inline.work_units));
    }
    assert_eq!(client.stats().await.unwrap().blob_bytes_served, bytes.len() as u64, "fetched once for 4 chunks");

    // A later job reads it from the worker's cache.
    let again = submit_request(&client, "fsops", fsops_job(FileInput::Blob { blob: blob.sha256.clone() }, 2)).await;
    assert_eq!(finish(&client, again).await.0.succeeded, 2);
    assert_eq!(client.stats().await.unwrap().blob_bytes_served, bytes.len() as u64, "not fetched again");
    let cached = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with("-blobs"))
        .map(|cache| cache.join(&blob.sha256))
        .find(|file| file.exists())
        .expect("the worker's cache holds the blob under its hash");
    assert_eq!(std::fs::read(cached).unwrap(), bytes);
}

#[tokio::test]
async fn chunks_go_to_the_workers_that_hold_their_blobs_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // A long affinity wait: the restarted worker compiles the program again before its first chunk, and
    // with the default (100 ms) the other worker, idle meanwhile, would rightly take a chunk and fetch its
    // blob. How long chunks wait is the scheduler's tests' business; here, where they go.
    let server = TestServer::start(dir.path(), &["--affinity-wait-ms", "60000"]);
    let client = server.client();
    let (shard_a, shard_b) = (shard(), shard().into_iter().rev().collect::<Vec<u8>>());
    let a = client.upload_blob(shard_a.clone()).await.unwrap().sha256;
    let b = client.upload_blob(shard_b.clone()).await.unwrap().sha256;
    let reading = |blobs: &[&str]| JobRequest {
        chunks: blobs
            .iter()
            .map(|blob| ChunkRequest {
                files: [("input.txt".to_owned(), FileInput::Blob { blob: blob.to_string() })].into(),
                ..ChunkRequest::default()
            })
            .collect(),
        replication: Some(ReplicationRequest { replicas: 1, quorum: 1 }),
        ..JobRequest::default()
    };
    // The first worker alone reads shard a, then the second alone reads shard b.
    let (first_cache, second_cache) = (server.worker_cache(9001), server.worker_cache(9002));
    let first = server.own_worker_caching(1, &first_cache);
    assert_eq!(finish(&client, submit_request(&client, "fsops", reading(&[&a])).await).await.0.succeeded, 1);
    first.kill();
    let _second = server.own_worker_caching(1, &second_cache);
    assert_eq!(finish(&client, submit_request(&client, "fsops", reading(&[&b])).await).await.0.succeeded, 1);
    let fetched = (shard_a.len() + shard_b.len()) as u64;
    assert_eq!(client.stats().await.unwrap().blob_bytes_served, fetched);

    // The first comes back and says what its disk cache holds. In queue order the second worker would
    // take shard-a chunks; affinity sends every chunk to the worker that holds its shard, so nothing is
    // fetched again.
    let _first = server.own_worker_caching(1, &first_cache);
    eventually("both workers to connect", Duration::from_secs(30), || async {
        client.stats().await.is_ok_and(|stats| stats.workers == 2)
    })
    .await;
    let job = submit_request(&client, "fsops", reading(&[&a, &a, &a, &a, &b, &b, &b, &b])).await;
    let (status, results) = finish(&client, job).await;
    assert_eq!(status.succeeded, 8, "{status:?}");
    for (index, result) in results.iter().enumerate() {
        let size = if index < 4 { shard_a.len() } else { shard_b.len() };
        let stdout = String::from_utf8_lossy(&result.output.stdout).into_owned();
        assert!(stdout.contains(&format!("input: {size} bytes")), "{stdout}");
    }
    assert_eq!(client.stats().await.unwrap().blob_bytes_served, fetched, "no blob was fetched again");
}

#[tokio::test]
async fn the_cli_uploads_large_input_files_as_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let _worker = server.own_worker(1);
    let bytes = shard();
    std::fs::write(dir.path().join("big.bin"), &bytes).unwrap();
    std::fs::write(dir.path().join("small.txt"), b"small").unwrap();
    let lines = r#"{"files": {"input.txt": "big.bin"}}
{"files": {"input.txt": "small.txt"}}
{"files": {"input.txt": "big.bin"}}
"#;
    std::fs::write(dir.path().join("chunks.jsonl"), lines).unwrap();
    let program = program_path("fsops");
    let out = dir.path().join("out");
    let output = std::process::Command::new(binary())
        .args(["submit", program.to_str().unwrap(), "--chunks", dir.path().join("chunks.jsonl").to_str().unwrap()])
        .args(["--replicas", "1", "--wait", "--out", out.to_str().unwrap(), "--server", &server.url])
        .env("DISTRIBUTIVECOM_TOKEN", &server.admin_token)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    for (chunk, size) in [(0, bytes.len()), (1, 5), (2, bytes.len())] {
        let stdout = std::fs::read_to_string(out.join(chunk.to_string()).join("stdout")).unwrap();
        assert!(stdout.contains(&format!("input: {size} bytes")), "chunk {chunk}: {stdout}");
    }
    // The 2 MiB file went up once, as a blob the account holds, not inside the job request.
    let sha256 = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    assert!(server.client().has_blob(&sha256).await.unwrap());
    assert_eq!(server.client().stats().await.unwrap().blob_bytes_served, bytes.len() as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_browser_tab_and_a_native_worker_agree_on_a_blob_input_fetching_it_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--trust-after", "1000000"]);
    let client = server.client();
    let (browser, tabs) = crate::browser::volunteering_tabs(&server, 1).await;
    let _native = server.worker(1);
    crate::browser::wait_for_workers(&client, 2).await;
    let bytes = shard();
    let blob = client.upload_blob(bytes.clone()).await.unwrap();
    // Two replicas per chunk on two volunteers: each chunk runs in the tab and natively, and is accepted
    // only if both read the same bytes.
    let mut request = fsops_job(FileInput::Blob { blob: blob.sha256 }, 3);
    request.replication = None;
    let job = submit_request(&client, "fsops", request).await;
    let (status, results) = finish(&client, job).await;
    assert_eq!(status.succeeded, 3, "{status:?}");
    assert!(results.iter().all(|result| result.attempts == 2), "no replica disagreed or failed");
    let stdout = String::from_utf8_lossy(&results[0].output.stdout).into_owned();
    assert!(stdout.contains(&format!("input: {} bytes", bytes.len())), "{stdout}");
    let served = client.stats().await.unwrap().blob_bytes_served;
    assert_eq!(served, 2 * bytes.len() as u64, "each volunteer fetched the blob once for three chunks");
    // The donate page shows what the browser keeps.
    eventually("the donate page to show the cached blob", Duration::from_secs(10), || async {
        browser.text(&tabs[0], "cached-data").await.unwrap().starts_with("2.0 MiB (1 files")
    })
    .await;
}
