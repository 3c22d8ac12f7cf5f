//! The durable store: one SQLite database in WAL mode, written by one thread in group commits.
//!
//! Writes go through a channel to the writer thread, which takes everything queued, applies it in one
//! transaction (so that one bad write cannot undo the others, a batch with a failing write runs again with
//! a savepoint per write: see `writer`), commits once and then answers every write. So the cost of a
//! commit is shared by all the writes that arrived while the previous one was running, and persistence
//! never becomes one fsync per chunk. A thread of its own checkpoints the WAL.
//!
//! Reads use a small pool of read-only connections on the blocking thread pool; WAL lets them run while the
//! writer writes.
//!
//! Architecture Invariant: only this module knows SQL. Everything it hands out is plain data.

pub mod accounts;
pub mod ads;
pub mod blobs;
pub mod encoding;
mod gathering;
pub mod ledger;
pub mod queries;
mod schema;
pub mod sessions;
pub mod sites;
mod writer;
pub mod writes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use distributivecom_protocol::api::ChunkRequest;
use distributivecom_protocol::worker::{Limits, Output, RunStatus};
use rusqlite::{Connection, OpenFlags};

pub use crate::config::Pricing;
pub use queries::{JobCounts, JobRow};
use writer::Write;

/// The file name of the database inside the data directory.
pub const DATABASE_FILE: &str = "distributivecom.sqlite3";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("could not create the data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("could not encode a value for the database: {0}")]
    Encoding(String),
    #[error("the database transaction failed: {0}")]
    Transaction(String),
    #[error("the store has shut down")]
    Closed,
    #[error("a ledger transaction does not balance: {0}")]
    Unbalanced(String),
}

/// A program to store, with its instrumented form.
#[derive(Debug)]
pub struct NewModule {
    /// The account uploading it.
    pub owner: u64,
    pub sha256: String,
    pub bytes: bytes::Bytes,
    pub imports: Vec<String>,
    pub instrumented_sha256: String,
    pub instrumented: bytes::Bytes,
    /// When it was uploaded (the first upload's time is the module's; each upload's is its uploader's).
    pub created_at_ms: u64,
    /// The name the uploader lists it under (such as its file name), if given.
    pub name: Option<String>,
}

/// A job to store, with all its chunks.
#[derive(Debug)]
pub struct NewJob {
    /// The account that submits (and pays for) the job.
    pub owner: u64,
    /// The budget to escrow, in millicredits; `None`: the owner's balance, up to `max_cost`.
    pub budget: Option<i64>,
    /// The most the job could cost (every replica at its work limit).
    pub max_cost: i64,
    pub replicas: u32,
    pub quorum: u32,
    pub name: Option<String>,
    pub module: String,
    pub program_name: String,
    pub env: BTreeMap<String, String>,
    pub limits: Limits,
    pub max_retries: u32,
    pub created_at_ms: u64,
    pub chunks: std::sync::Arc<[ChunkRequest]>,
    /// The session round this job is, funded from the session's escrow; `None` for a job.
    pub round: Option<sessions::Round>,
}

/// A chunk's final result, with what its validation means for credits and reputations.
#[derive(Debug)]
pub struct NewResult {
    pub job: u64,
    pub chunk: u32,
    pub status: RunStatus,
    pub attempts: u32,
    pub work_units: u64,
    pub output: Output,
    pub finished_at_ms: u64,
    /// The volunteers whose replicas agreed on this result: they are paid for their work units.
    pub payments: Vec<Payment>,
    /// Volunteers whose replicas were validated or contradicted by the quorum, with their new runs.
    pub reputation: Vec<ReputationChange>,
    pub pricing: Pricing,
}

/// A volunteer's replica was validated (`valid`) or contradicted by a quorum, and its run of validated
/// replicas is now `run` (the scheduler decides it; the store records it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReputationChange {
    pub volunteer: String,
    pub valid: bool,
    pub run: u32,
}

/// A validated replica to pay for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    /// The volunteer's key (a ledger account: `user:<id>` or `volunteer:<id>`).
    pub volunteer: String,
    pub replica: u64,
    pub work_units: u64,
    /// How long it ran, as its volunteer reported (capped by the job's time limit): a site's statistics
    /// count it when the volunteer is one of the site's visitors.
    pub compute_us: u64,
}

/// Called on the writer thread once a write is durable (or failed). Keep it short.
pub type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    writer: mpsc::Sender<Box<dyn Write>>,
    /// The results write still gathering results, if any.
    gathering: gathering::Gathering,
    readers: Arc<ReadPool>,
    blobs: Arc<blobs::BlobFiles>,
}

impl Store {
    /// Opens (creating if needed) the database in `data_dir` and starts the writer thread.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|source| StoreError::DataDir { path: data_dir.to_owned(), source })?;
        let path = data_dir.join(DATABASE_FILE);
        let connection = Connection::open(&path)?;
        schema::configure(&connection)?;
        schema::migrate(&connection)?;
        let blobs = Arc::new(blobs::BlobFiles::open(data_dir, &connection)?);
        let writer = writer::spawn(connection, &path)?;
        Ok(Store {
            writer,
            gathering: gathering::Gathering::default(),
            readers: Arc::new(ReadPool { path, idle: Mutex::new(Vec::new()) }),
            blobs,
        })
    }

    /// Where blob files live.
    pub fn blob_files(&self) -> &blobs::BlobFiles {
        &self.blobs
    }

    /// Runs `write` in the next group commit and answers once it is durable (or failed). A write that
    /// returns an error leaves nothing behind. It may run twice (see `writer`).
    pub async fn transact<T: Send + 'static>(
        &self,
        write: impl FnMut(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.transact_then(write, move |outcome| {
            // A caller that stopped waiting (for example a client that hung up) is not an error.
            let _ = reply.send(outcome);
        });
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `write` in the next group commit and calls `then` on the writer thread once its fate is known.
    /// Keep `then` short: the next commit waits for it. `write` may run twice (see `writer`): what it does
    /// outside the database must be idempotent.
    pub fn transact_then<T: Send + 'static>(
        &self,
        write: impl FnMut(&Connection) -> Result<T, StoreError> + Send + 'static,
        then: impl FnOnce(Result<T, StoreError>) + Send + 'static,
    ) {
        self.gathering.queue_other(&self.writer, Box::new(Queued { write, then, outcome: None }));
    }

    /// Stores a module unless one with the same hash is already there.
    pub async fn put_module(&self, module: NewModule) -> Result<(), StoreError> {
        self.transact(move |connection| writes::insert_module(connection, &module)).await
    }

    /// Stores a job and its chunks and escrows its budget, durably, or says the owner cannot afford it.
    pub async fn insert_job(&self, job: NewJob) -> Result<writes::Admission, StoreError> {
        self.transact(move |connection| writes::insert_job(connection, &job)).await
    }

    /// Stores a chunk's final result and its payments; `done` runs on the writer thread once it is
    /// durable, with what the payments did to the job's escrow. Results queued while an earlier one waits
    /// for the writer are stored with it in one write (see `gathering`), still in the order queued.
    pub fn insert_result(
        &self,
        result: NewResult,
        done: impl FnOnce(Result<writes::Settlement, StoreError>) + Send + 'static,
    ) {
        self.gathering.queue_result(&self.writer, result, Box::new(done));
    }

    /// Stops a job and refunds its escrow. Returns false if it was already stopped or finished.
    pub async fn cancel_job(&self, job: u64, reason: String, at_ms: u64) -> Result<bool, StoreError> {
        self.transact(move |connection| writes::cancel_job(connection, job, &reason, at_ms)).await
    }

    /// Reserves the next block of replica ids. Every start takes a new block, so replica ids never repeat
    /// across restarts and a late result from an earlier run can never match a new lease.
    pub async fn next_replica_block(&self) -> Result<u64, StoreError> {
        self.transact(writes::next_replica_block).await
    }

    /// Runs a read on a pooled read-only connection, off the async threads.
    pub async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || readers.with(read)).await.map_err(|_| StoreError::Closed)?
    }

    /// The same read, for callers already on a blocking thread (start-up, recovery).
    pub fn read_blocking<T>(&self, read: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.readers.with(read)
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Store").field("path", &self.readers.path).finish_non_exhaustive()
    }
}

/// A write in the writer's queue: the caller's closure, what to call with its fate, and the outcome of
/// its last run.
struct Queued<W, T, Then> {
    write: W,
    then: Then,
    outcome: Option<Result<T, StoreError>>,
}

impl<W, T, Then> Write for Queued<W, T, Then>
where
    W: FnMut(&Connection) -> Result<T, StoreError> + Send,
    T: Send,
    Then: FnOnce(Result<T, StoreError>) + Send,
{
    fn apply(&mut self, connection: &Connection, _careful: bool) -> bool {
        let outcome = (self.write)(connection);
        let applied = outcome.is_ok();
        self.outcome = Some(outcome);
        applied
    }

    fn finish(self: Box<Self>, committed: Result<(), StoreError>) {
        let outcome = self.outcome.unwrap_or_else(|| Err(StoreError::Transaction("the write did not run".into())));
        (self.then)(committed.and(outcome));
    }
}

/// Read-only connections kept open between reads.
struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

/// More idle connections than this are closed after use.
const MAX_IDLE_READERS: usize = 4;

impl ReadPool {
    fn with<T>(&self, read: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let pooled = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
        let connection = match pooled {
            Some(connection) => connection,
            None => {
                let connection = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
                )?;
                schema::configure_reader(&connection)?;
                connection
            }
        };
        let answer = read(&connection);
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < MAX_IDLE_READERS {
            idle.push(connection);
        }
        answer
    }
}

#[cfg(test)]
mod tests;
