//! Tests of the store against real SQLite files in temporary directories.

use std::sync::mpsc as std_mpsc;

use distributivecom_protocol::Bytes;
use distributivecom_protocol::api::ChunkRequest;
use distributivecom_protocol::worker::{Limits, Output, RunStatus};

use super::*;

fn limits() -> Limits {
    Limits {
        memory_bytes: 1 << 30,
        time_limit_ms: 1000,
        max_stdout_bytes: 100,
        max_stderr_bytes: 100,
        max_data_bytes: 1000,
        max_work_units: 10_000,
    }
}

fn module(sha256: &str) -> NewModule {
    NewModule {
        sha256: sha256.to_owned(),
        bytes: bytes::Bytes::from_static(b"\0asm"),
        imports: vec![],
        instrumented_sha256: format!("{sha256}-instrumented"),
        instrumented: bytes::Bytes::from_static(b"\0asm instrumented"),
        created_at_ms: 1,
    }
}

fn job(module: &str, chunks: usize) -> NewJob {
    NewJob {
        name: None,
        module: module.to_owned(),
        program_name: "p.wasm".to_owned(),
        env: BTreeMap::from([("K".to_owned(), "V".to_owned())]),
        limits: limits(),
        max_retries: 2,
        created_at_ms: 42,
        chunks: (0..chunks)
            .map(|index| ChunkRequest { args: vec![index.to_string()], stdin: Bytes::from("in"), ..Default::default() })
            .collect::<Vec<_>>()
            .into(),
    }
}

/// Stores a result and waits until it is durable.
fn store_result(store: &Store, job: u64, chunk: u32, status: RunStatus) -> Result<(), StoreError> {
    let (done, durable) = std_mpsc::channel();
    let output = Output { stdout: Bytes::from(format!("out {chunk}").as_str()), ..Output::default() };
    store.insert_result(
        NewResult { job, chunk, status, attempts: 1, work_units: 7, output, finished_at_ms: 100 + u64::from(chunk) },
        Box::new(move |result| done.send(result).unwrap()),
    );
    durable.recv().unwrap()
}

#[tokio::test]
async fn jobs_and_results_survive_a_reopen() {
    let directory = tempfile::tempdir().unwrap();
    let sha = "a".repeat(64);
    let id = {
        let store = Store::open(directory.path()).unwrap();
        store.put_module(module(&sha)).await.unwrap();
        let id = store.insert_job(job(&sha, 3)).await.unwrap();
        store_result(&store, id, 1, RunStatus::Exited { code: 0 }).unwrap();
        store_result(&store, id, 0, RunStatus::Exited { code: 3 }).unwrap();
        id
    };
    let store = Store::open(directory.path()).unwrap();
    let (row, counts, results, specs, finished, unfinished) = store
        .read(move |connection| {
            Ok((
                queries::job(connection, id)?.unwrap(),
                queries::job_counts(connection, id)?,
                queries::results(connection, id, 0, 10)?,
                queries::chunk_specs(connection, id)?,
                queries::finished_chunks(connection, id)?,
                queries::unfinished_jobs(connection)?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(row.name, format!("job-{id}"));
    assert_eq!(row.env.get("K").map(String::as_str), Some("V"));
    assert_eq!(row.limits, limits());
    assert_eq!(row.run_module.size, "\0asm instrumented".len() as u64);
    assert_eq!(results[1].work_units, 7);
    assert_eq!(counts, JobCounts { succeeded: 1, failed: 1, last_finished_at_ms: Some(101) });
    assert_eq!(results.iter().map(|result| result.index).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(results[0].reason, "exited with status 3");
    assert!(!results[0].succeeded);
    assert_eq!(results[1].output.stdout, Bytes::from("out 1"));
    assert_eq!(specs.len(), 3);
    assert_eq!(specs[2].args, ["2"]);
    assert_eq!(finished, [0, 1]);
    assert_eq!(unfinished, [id]);
}

#[tokio::test]
async fn a_second_result_for_the_same_chunk_is_refused_and_does_not_disturb_others() {
    let directory = tempfile::tempdir().unwrap();
    let store = Store::open(directory.path()).unwrap();
    let sha = "b".repeat(64);
    store.put_module(module(&sha)).await.unwrap();
    let id = store.insert_job(job(&sha, 2)).await.unwrap();
    // Queue three writes at once so they share one commit: the duplicate fails in its own savepoint.
    let (done, durable) = std_mpsc::channel();
    for chunk in [0, 0, 1] {
        let done = done.clone();
        store.insert_result(
            NewResult {
                job: id,
                chunk,
                status: RunStatus::Exited { code: 0 },
                attempts: 1,
                work_units: 1,
                output: Output::default(),
                finished_at_ms: 1,
            },
            Box::new(move |result| done.send((chunk, result.is_ok())).unwrap()),
        );
    }
    let mut answers: Vec<(u32, bool)> = (0..3).map(|_| durable.recv().unwrap()).collect();
    answers.sort();
    assert_eq!(answers, [(0, false), (0, true), (1, true)]);
    let counts = store.read(move |connection| queries::job_counts(connection, id)).await.unwrap();
    assert_eq!((counts.succeeded, counts.failed), (2, 0));
}

#[tokio::test]
async fn replica_blocks_never_repeat_across_reopens() {
    let directory = tempfile::tempdir().unwrap();
    let first = Store::open(directory.path()).unwrap().next_replica_block().await.unwrap();
    let second = Store::open(directory.path()).unwrap().next_replica_block().await.unwrap();
    assert!(second > first);
}

#[tokio::test]
async fn cancelling_stops_a_job_from_being_resumed_but_not_a_finished_one() {
    let directory = tempfile::tempdir().unwrap();
    let store = Store::open(directory.path()).unwrap();
    let sha = "c".repeat(64);
    store.put_module(module(&sha)).await.unwrap();
    let running = store.insert_job(job(&sha, 2)).await.unwrap();
    let finished = store.insert_job(job(&sha, 1)).await.unwrap();
    store_result(&store, finished, 0, RunStatus::Exited { code: 0 }).unwrap();
    assert!(store.cancel_job(running, 7).await.unwrap());
    assert!(!store.cancel_job(running, 8).await.unwrap(), "cancelling twice changes nothing");
    assert!(!store.cancel_job(finished, 9).await.unwrap(), "a finished job cannot be cancelled");
    let unfinished = store.read(queries::unfinished_jobs).await.unwrap();
    assert!(unfinished.is_empty());
    let row = store.read(move |connection| queries::job(connection, running)).await.unwrap().unwrap();
    assert_eq!(row.cancelled_at_ms, Some(7));
}

#[tokio::test]
async fn a_job_for_a_missing_module_is_refused_by_the_database() {
    let directory = tempfile::tempdir().unwrap();
    let store = Store::open(directory.path()).unwrap();
    let error = store.insert_job(job(&"d".repeat(64), 1)).await.unwrap_err();
    assert!(error.to_string().contains("FOREIGN KEY"), "{error}");
}

#[test]
fn the_database_uses_write_ahead_logging() {
    let directory = tempfile::tempdir().unwrap();
    drop(Store::open(directory.path()).unwrap());
    let connection = rusqlite::Connection::open(directory.path().join(DATABASE_FILE)).unwrap();
    let mode: String = connection.pragma_query_value(None, "journal_mode", |row| row.get(0)).unwrap();
    assert_eq!(mode, "wal");
}
