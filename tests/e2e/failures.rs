//! Programs that loop forever, allocate without bound or fail on purpose are reported with the right
//! reason, are retried a bounded number of times, and never take a worker down.

use std::time::Duration;

use distributivecom_protocol::api::{JobRequest, JobState, LimitsRequest};
use distributivecom_protocol::worker::RunStatus;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn loops_memory_hogs_and_bad_exits_are_reported_and_workers_stay_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let mut first = server.worker(1);
    let mut second = server.worker(1);
    let client = server.client();
    let limits = LimitsRequest {
        time_limit_ms: Some(500),
        memory_limit_bytes: Some(160 * 1024 * 1024),
        ..LimitsRequest::default()
    };
    let request = |retries, limits| JobRequest {
        chunks: vec![chunk(&[])],
        limits,
        max_retries: Some(retries),
        ..JobRequest::default()
    };
    // Only the loop meets the short wall-clock limit: the others have time to spare even on a machine
    // busy with the loop, so only their program decides how they end.
    let roomy = LimitsRequest { time_limit_ms: Some(60_000), ..limits };

    let spin = submit_request(&client, "spin", request(1, limits)).await;
    let hog = submit_request(&client, "hog", request(1, roomy)).await;
    let fail = submit_request(&client, "fail", request(2, roomy)).await;

    let (status, results) = finish(&client, spin).await;
    assert_eq!(status.state, JobState::Failed);
    assert_eq!(results[0].status, RunStatus::TimedOut);
    assert_eq!(results[0].reason, "timed out (exceeded the job's time limit)");
    // Two replicas go out (two volunteers must agree); a timeout depends on the volunteer's machine, so
    // it is retried, at most once here: the second timeout ends the chunk, whether or not the retry had
    // gone out yet.
    assert!((2..=3).contains(&results[0].attempts), "{} attempts", results[0].attempts);

    let (status, results) = finish(&client, hog).await;
    assert_eq!(status.state, JobState::Failed);
    assert_eq!(results[0].status, RunStatus::MemoryLimit);
    assert!(String::from_utf8_lossy(&results[0].output.stdout).contains("hog: allocated 64 MiB"));
    assert!(String::from_utf8_lossy(&results[0].output.stderr).contains("hog: allocation failed"));
    assert_eq!(results[0].attempts, 2, "the limit is deterministic: both volunteers agreed on it");

    let (status, results) = finish(&client, fail).await;
    assert_eq!(status.state, JobState::Failed);
    assert_eq!(results[0].status, RunStatus::Exited { code: 3 });
    assert_eq!(results[0].reason, "exited with status 3");
    // Exiting with 3 is the program's answer, the same on every volunteer: once two agree it is final.
    assert_eq!(results[0].attempts, 2);
    assert_eq!(results[0].output.stderr.as_ref(), b"fail: something went wrong (this is on purpose)\n");
    assert_eq!(results[0].output.stdout.as_ref(), b"partial output\n");
    assert_eq!(results[0].output.files["partial.txt"].as_ref(), b"partial");

    // Both workers are still alive and connected, and still do good work.
    assert!(first.is_running() && second.is_running());
    assert_eq!(client.stats().await.unwrap().workers, 2);
    let job = submit(&client, "primes", vec![chunk(&["0", "100000"]), chunk(&["100000", "200000"])]).await;
    let (status, results) = finish(&client, job).await;
    assert_eq!(status.state, JobState::Succeeded);
    assert_eq!(results[0].output.stdout.as_ref(), b"primes in [0, 100000): 9592\n");
    assert_eq!(results[1].output.stdout.as_ref(), b"primes in [100000, 200000): 8392\n");
    tokio::time::sleep(Duration::from_millis(10)).await;
}
