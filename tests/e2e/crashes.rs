//! Crashes lose nothing: a worker killed mid-job has its chunks moved to another worker, and a
//! coordinator SIGKILLed mid-job comes back with every accepted job and every stored result, requeues
//! what was in flight, and finishes the job without losing or duplicating a result.

use std::collections::BTreeMap;
use std::time::Duration;

use distributivecom_protocol::api::{ChunkRequest, JobState};
use distributivecom_protocol::worker::RunStatus;

use crate::support::*;

/// Chunks of the prime counter that take a noticeable moment each, so crashes land mid-job.
fn prime_chunks(count: u64, width: u64) -> Vec<ChunkRequest> {
    (0..count).map(|index| chunk(&[&(index * width).to_string(), &((index + 1) * width).to_string()])).collect()
}

/// What the prime counter prints for each chunk, computed by a local run.
fn expected_outputs(chunks: &[ChunkRequest]) -> Vec<Vec<u8>> {
    let runtime = distributivecom_worker::runtime::Runtime::new(1).unwrap();
    let module = runtime.compile(&instrumented("primes")).unwrap();
    let mut assignment = distributivecom_protocol::worker::Assignment {
        replica: 0,
        job: 0,
        chunk: 0,
        job_name: String::new(),
        module: distributivecom_protocol::worker::ModuleRef { sha256: String::new(), size: 0 },
        args: Vec::new(),
        env: BTreeMap::new(),
        stdin: Default::default(),
        files: BTreeMap::new(),
        blobs: BTreeMap::new(),
        clock_start_ns: 0,
        random_seed: vec![0; 32].into(),
        limits: distributivecom_server::ServerConfig::default().default_limits,
    };
    chunks
        .iter()
        .map(|chunk| {
            assignment.args = std::iter::once("primes.wasm".to_owned()).chain(chunk.args.iter().cloned()).collect();
            let run = runtime.run(&module, assignment.clone());
            assert_eq!(run.status, RunStatus::Exited { code: 0 });
            run.output.stdout.0
        })
        .collect()
}

/// Every chunk runs on two volunteers: none is trusted to run one alone, so the counts below are exact.
const ALWAYS_REPLICATE: &[&str] = &["--trust-after", "1000000"];

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_job_loses_nothing_and_its_chunks_move_to_another_worker() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), ALWAYS_REPLICATE);
    let doomed = server.worker(1);
    let _survivors = [server.worker(1), server.worker(1)];
    let client = server.client();
    let chunks = prime_chunks(24, 20_000_000);
    let expected = expected_outputs(&chunks);
    let job = submit(&client, "primes", chunks).await;

    eventually("the first results", Duration::from_secs(60), || async {
        client.status(job).await.unwrap().finished_chunks() >= 2
    })
    .await;
    doomed.kill();

    let (status, results) = finish(&client, job).await;
    assert_eq!(status.state, JobState::Succeeded);
    assert_eq!(results.len(), 24);
    for (result, expected) in results.iter().zip(&expected) {
        assert_eq!(&result.output.stdout.0, expected, "chunk {}", result.index);
    }
    // Two replicas per chunk; the ones the killed worker held were sent out again, to a third volunteer.
    assert!(results.iter().all(|result| result.attempts >= 2));
    assert!(results.iter().any(|result| result.attempts >= 3), "some replica moved to a surviving worker");
    assert_eq!(client.stats().await.unwrap().workers, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_coordinator_killed_mid_job_resumes_and_finishes_without_losing_or_duplicating_results() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let mut server = TestServer::start_on(port, &data, ALWAYS_REPLICATE);
    let database = server.database();
    let _workers = [server.worker(1), server.worker(1)];
    let client = server.client();
    let chunks = prime_chunks(40, 15_000_000);
    let expected = expected_outputs(&chunks);
    let job = submit(&client, "primes", chunks.clone()).await;

    eventually("some results", Duration::from_secs(60), || async {
        client.status(job).await.unwrap().finished_chunks() >= 5
    })
    .await;
    let before = client.all_results(job).await.unwrap();
    // A second job is accepted just before the crash: it must survive it too.
    let second = submit(&client, "primes", prime_chunks(6, 1_000_000)).await;
    server.process.kill();
    // Killed while paying volunteers: the ledger on disk still balances.
    let at_first_crash = assert_ledger_conserved(&database);

    // The workers keep trying to reconnect while the server is down.
    server = TestServer::start_on(port, &data, ALWAYS_REPLICATE);
    let client = server.client();
    // Kill it once more while results are flowing, right after they resume.
    eventually("results after the restart", Duration::from_secs(60), || async {
        client.status(job).await.unwrap().finished_chunks() > before.len() as u32
    })
    .await;
    server.process.kill();
    let at_second_crash = assert_ledger_conserved(&database);
    assert_eq!(at_second_crash.minted, at_first_crash.minted, "a restart mints nothing");
    server = TestServer::start_on(port, &data, ALWAYS_REPLICATE);
    let client = server.client();

    let (status, results) = finish(&client, job).await;
    assert_eq!(status.state, JobState::Succeeded);
    let indices: Vec<u32> = results.iter().map(|result| result.index).collect();
    assert_eq!(indices, (0..40).collect::<Vec<u32>>(), "every chunk exactly once");
    for (result, expected) in results.iter().zip(&expected) {
        assert_eq!(&result.output.stdout.0, expected, "chunk {}", result.index);
    }
    // Everything reported before the crash is still there, unchanged.
    for old in &before {
        assert_eq!(&results[old.index as usize], old, "chunk {} changed across the crash", old.index);
    }
    let (second_status, second_results) = finish(&client, second).await;
    assert_eq!(second_status.state, JobState::Succeeded);
    assert_eq!(second_results.len(), 6);

    // The database itself holds one row per chunk.
    let connection = rusqlite::Connection::open(server.database()).unwrap();
    let (rows, distinct): (u32, u32) = connection
        .query_row("SELECT COUNT(*), COUNT(DISTINCT idx) FROM results WHERE job_id = ?1", [job], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .unwrap();
    assert_eq!((rows, distinct), (40, 40));

    // Each validated replica was paid exactly once, the jobs' escrows were refunded to zero, and
    // credits were conserved through both crashes.
    let (payments, paid_replicas): (u32, u32) = connection
        .query_row(
            "SELECT COUNT(*), COUNT(DISTINCT replica) FROM ledger WHERE kind = 'payment' AND job_id = ?1 AND amount < 0",
            [job],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!(payments, paid_replicas, "no replica is paid twice");
    assert!(payments >= 40 * 2, "every chunk paid its two agreeing volunteers ({payments} payments)");
    assert_eq!(ledger_balance(&database, &format!("escrow:job:{job}")), 0);
    assert_eq!(ledger_balance(&database, &format!("escrow:job:{second}")), 0);
    let end = assert_ledger_conserved(&database);
    assert_eq!(end.minted, at_first_crash.minted);
    assert!(end.burned > 0, "the platform's fee was burned");
}
