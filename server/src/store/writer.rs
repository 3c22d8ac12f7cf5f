//! The writer thread: group commit of everything queued since the last commit.

use std::sync::mpsc;

use rusqlite::{Connection, Transaction, params};
use tokio::sync::oneshot;

use super::{Done, NewJob, NewModule, NewResult, StoreError};

pub(super) enum Write {
    Module { module: NewModule, reply: oneshot::Sender<Result<(), StoreError>> },
    Job { job: Box<NewJob>, reply: oneshot::Sender<Result<u64, StoreError>> },
    Result { result: Box<NewResult>, done: Done },
    Cancel { job: u64, at_ms: u64, reply: oneshot::Sender<Result<bool, StoreError>> },
    NextReplicaBlock { reply: oneshot::Sender<Result<u64, StoreError>> },
}

/// The most writes one commit takes, so a flood of results still gets answered in bounded time.
const MAX_BATCH: usize = 4096;

pub(super) fn spawn(connection: Connection) -> mpsc::Sender<Write> {
    let (sender, receiver) = mpsc::channel();
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || run(connection, receiver))
        .expect("the operating system can start the store thread");
    sender
}

/// An applied write waiting for the commit before it is answered.
enum Answer {
    Module(oneshot::Sender<Result<(), StoreError>>, Result<(), StoreError>),
    Job(oneshot::Sender<Result<u64, StoreError>>, Result<u64, StoreError>),
    Result(Done, Result<(), StoreError>),
    Cancel(oneshot::Sender<Result<bool, StoreError>>, Result<bool, StoreError>),
    NextReplicaBlock(oneshot::Sender<Result<u64, StoreError>>, Result<u64, StoreError>),
}

fn run(mut connection: Connection, receiver: mpsc::Receiver<Write>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // The thread ends when every Store handle is gone.
    while let Ok(first) = receiver.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        let answers = commit(&mut connection, &mut batch);
        for answer in answers {
            deliver(answer);
        }
    }
}

/// Applies the batch in one transaction, each write in a savepoint of its own. If the transaction cannot
/// begin or commit, every write in it is answered with the error.
fn commit(connection: &mut Connection, batch: &mut Vec<Write>) -> Vec<Answer> {
    let mut transaction = match connection.transaction() {
        Ok(transaction) => transaction,
        Err(error) => {
            let error = StoreError::from(error);
            tracing::error!(%error, "could not begin a group commit; its writes are lost");
            return batch.drain(..).map(|write| fail(unapplied(write), &error)).collect();
        }
    };
    let answers: Vec<Answer> = batch.drain(..).map(|write| apply(&mut transaction, write)).collect();
    match transaction.commit() {
        Ok(()) => answers,
        Err(error) => {
            let error = StoreError::from(error);
            tracing::error!(%error, "a group commit failed; its writes are lost");
            answers.into_iter().map(|answer| fail(answer, &error)).collect()
        }
    }
}

fn apply(transaction: &mut Transaction<'_>, write: Write) -> Answer {
    match write {
        Write::Module { module, reply } => {
            Answer::Module(reply, in_savepoint(transaction, |tx| insert_module(tx, &module)))
        }
        Write::Job { job, reply } => Answer::Job(reply, in_savepoint(transaction, |tx| insert_job(tx, &job))),
        Write::Result { result, done } => {
            Answer::Result(done, in_savepoint(transaction, |tx| insert_result(tx, &result)))
        }
        Write::Cancel { job, at_ms, reply } => {
            Answer::Cancel(reply, in_savepoint(transaction, |tx| cancel(tx, job, at_ms)))
        }
        Write::NextReplicaBlock { reply } => {
            Answer::NextReplicaBlock(reply, in_savepoint(transaction, next_replica_block))
        }
    }
}

fn in_savepoint<T>(
    transaction: &mut Transaction<'_>,
    write: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let savepoint = transaction.savepoint()?;
    let value = write(&savepoint)?;
    savepoint.commit()?;
    Ok(value)
}

fn insert_module(tx: &Connection, module: &NewModule) -> Result<(), StoreError> {
    let imports = serde_json::to_string(&module.imports).map_err(encoding)?;
    tx.execute(
        "INSERT INTO modules (sha256, size, imports, bytes, instrumented_sha256, instrumented_size, instrumented,
                              created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (sha256) DO NOTHING",
        params![
            module.sha256,
            module.bytes.len() as i64,
            imports,
            &module.bytes[..],
            module.instrumented_sha256,
            module.instrumented.len() as i64,
            &module.instrumented[..],
            module.created_at_ms as i64
        ],
    )?;
    Ok(())
}

fn insert_job(tx: &Connection, job: &NewJob) -> Result<u64, StoreError> {
    let env = serde_json::to_string(&job.env).map_err(encoding)?;
    let limits = serde_json::to_string(&job.limits).map_err(encoding)?;
    tx.execute(
        "INSERT INTO jobs (name, module, program_name, env, limits, max_retries, chunk_count, created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            job.name,
            job.module,
            job.program_name,
            env,
            limits,
            job.max_retries,
            job.chunks.len() as i64,
            job.created_at_ms as i64
        ],
    )?;
    let id = tx.last_insert_rowid();
    let mut insert = tx.prepare_cached("INSERT INTO chunks (job_id, idx, spec) VALUES (?1, ?2, ?3)")?;
    for (index, chunk) in job.chunks.iter().enumerate() {
        let spec = rmp_serde::to_vec_named(chunk).map_err(encoding)?;
        insert.execute(params![id, index as i64, spec])?;
    }
    Ok(id as u64)
}

fn insert_result(tx: &Connection, result: &NewResult) -> Result<(), StoreError> {
    let status = serde_json::to_string(&result.status).map_err(encoding)?;
    let output = rmp_serde::to_vec_named(&result.output).map_err(encoding)?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO results (job_id, idx, succeeded, status, attempts, work_units, output, finished_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    insert.execute(params![
        result.job as i64,
        result.chunk,
        result.status.is_success(),
        status,
        result.attempts,
        result.work_units as i64,
        output,
        result.finished_at_ms as i64
    ])?;
    Ok(())
}

fn cancel(tx: &Connection, job: u64, at_ms: u64) -> Result<bool, StoreError> {
    let changed = tx.execute(
        "UPDATE jobs SET cancelled_at_ms = ?2
         WHERE id = ?1 AND cancelled_at_ms IS NULL
           AND (SELECT COUNT(*) FROM results WHERE job_id = ?1) < chunk_count",
        params![job as i64, at_ms as i64],
    )?;
    Ok(changed == 1)
}

fn next_replica_block(tx: &Connection) -> Result<u64, StoreError> {
    let block: u64 = tx.query_row(
        "INSERT INTO meta (key, value) VALUES ('replica_block', 1)
         ON CONFLICT (key) DO UPDATE SET value = value + 1
         RETURNING value",
        [],
        |row| row.get::<_, i64>(0),
    )? as u64;
    Ok(block)
}

fn deliver(answer: Answer) {
    // A caller that stopped waiting (for example a client that hung up) is not an error.
    match answer {
        Answer::Module(reply, value) => drop(reply.send(value)),
        Answer::Job(reply, value) => drop(reply.send(value)),
        Answer::Result(done, value) => done(value),
        Answer::Cancel(reply, value) => drop(reply.send(value)),
        Answer::NextReplicaBlock(reply, value) => drop(reply.send(value)),
    }
}

/// A write that was never applied, as an answer whose value `fail` will replace.
fn unapplied(write: Write) -> Answer {
    match write {
        Write::Module { reply, .. } => Answer::Module(reply, Err(StoreError::Closed)),
        Write::Job { reply, .. } => Answer::Job(reply, Err(StoreError::Closed)),
        Write::Result { done, .. } => Answer::Result(done, Err(StoreError::Closed)),
        Write::Cancel { reply, .. } => Answer::Cancel(reply, Err(StoreError::Closed)),
        Write::NextReplicaBlock { reply } => Answer::NextReplicaBlock(reply, Err(StoreError::Closed)),
    }
}

/// Replaces an answer's value with the failure of the whole transaction.
fn fail(answer: Answer, error: &StoreError) -> Answer {
    let error = || StoreError::Transaction(error.to_string());
    match answer {
        Answer::Module(reply, _) => Answer::Module(reply, Err(error())),
        Answer::Job(reply, _) => Answer::Job(reply, Err(error())),
        Answer::Result(done, _) => Answer::Result(done, Err(error())),
        Answer::Cancel(reply, _) => Answer::Cancel(reply, Err(error())),
        Answer::NextReplicaBlock(reply, _) => Answer::NextReplicaBlock(reply, Err(error())),
    }
}

fn encoding(error: impl std::fmt::Display) -> StoreError {
    StoreError::Encoding(error.to_string())
}
