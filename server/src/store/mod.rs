//! The durable store: one SQLite database in WAL mode, written by one thread in group commits.
//!
//! Writes go through a channel to the writer thread, which takes everything queued, applies it in one
//! transaction (each write in its own savepoint, so one bad write cannot undo the others), commits once and
//! then answers every write. So the cost of a commit is shared by all the writes that arrived while the
//! previous one was running, and persistence never becomes one fsync per chunk.
//!
//! Reads use a small pool of read-only connections on the blocking thread pool; WAL lets them run while the
//! writer writes.
//!
//! Architecture Invariant: only this module knows SQL. Everything it hands out is plain data.

pub mod queries;
mod schema;
mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use distributivecom_protocol::api::ChunkRequest;
use distributivecom_protocol::worker::{Limits, Output, RunStatus};
use rusqlite::{Connection, OpenFlags};

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
}

/// A program to store, with its instrumented form.
#[derive(Debug)]
pub struct NewModule {
    pub sha256: String,
    pub bytes: bytes::Bytes,
    pub imports: Vec<String>,
    pub instrumented_sha256: String,
    pub instrumented: bytes::Bytes,
    pub created_at_ms: u64,
}

/// A job to store, with all its chunks.
#[derive(Debug)]
pub struct NewJob {
    pub name: Option<String>,
    pub module: String,
    pub program_name: String,
    pub env: BTreeMap<String, String>,
    pub limits: Limits,
    pub max_retries: u32,
    pub created_at_ms: u64,
    pub chunks: std::sync::Arc<[ChunkRequest]>,
}

/// A chunk's final result.
#[derive(Debug)]
pub struct NewResult {
    pub job: u64,
    pub chunk: u32,
    pub status: RunStatus,
    pub attempts: u32,
    pub work_units: u64,
    pub output: Output,
    pub finished_at_ms: u64,
}

/// Called on the writer thread once a write is durable (or failed). Keep it short.
pub type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    writer: mpsc::Sender<Write>,
    readers: Arc<ReadPool>,
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
        let writer = writer::spawn(connection);
        Ok(Store { writer, readers: Arc::new(ReadPool { path, idle: Mutex::new(Vec::new()) }) })
    }

    fn send(&self, write: Write) -> Result<(), StoreError> {
        self.writer.send(write).map_err(|_| StoreError::Closed)
    }

    async fn write<T: Send + 'static>(
        &self,
        make: impl FnOnce(tokio::sync::oneshot::Sender<Result<T, StoreError>>) -> Write,
    ) -> Result<T, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.send(make(reply))?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Stores a module unless one with the same hash is already there.
    pub async fn put_module(&self, module: NewModule) -> Result<(), StoreError> {
        self.write(|reply| Write::Module { module, reply }).await
    }

    /// Stores a job and its chunks durably and returns its id.
    pub async fn insert_job(&self, job: NewJob) -> Result<u64, StoreError> {
        self.write(|reply| Write::Job { job: Box::new(job), reply }).await
    }

    /// Stores a chunk's final result; `done` runs once it is durable.
    pub fn insert_result(&self, result: NewResult, done: Done) {
        if let Err(Write::Result { done, .. }) =
            self.writer.send(Write::Result { result: Box::new(result), done }).map_err(|error| error.0)
        {
            done(Err(StoreError::Closed));
        }
    }

    /// Marks a job cancelled. Returns false if it was already cancelled or finished.
    pub async fn cancel_job(&self, job: u64, at_ms: u64) -> Result<bool, StoreError> {
        self.write(|reply| Write::Cancel { job, at_ms, reply }).await
    }

    /// Reserves the next block of replica ids. Every start takes a new block, so replica ids never repeat
    /// across restarts and a late result from an earlier run can never match a new lease.
    pub async fn next_replica_block(&self) -> Result<u64, StoreError> {
        self.write(|reply| Write::NextReplicaBlock { reply }).await
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
