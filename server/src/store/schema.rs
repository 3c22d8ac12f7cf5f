//! The database schema and its migrations, tracked with SQLite's `user_version`.

use rusqlite::Connection;

use super::StoreError;

/// Each entry migrates from version `index` to `index + 1`. Never edit a released entry: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: modules, jobs, their chunks and results.
    r#"
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    -- A program as uploaded, and the instrumented module workers run (see program::instrument).
    CREATE TABLE modules (
        sha256 TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        imports TEXT NOT NULL,          -- JSON array of WASI function names
        bytes BLOB NOT NULL,
        instrumented_sha256 TEXT NOT NULL UNIQUE,
        instrumented_size INTEGER NOT NULL,
        instrumented BLOB NOT NULL,
        created_at_ms INTEGER NOT NULL
    );
    -- AUTOINCREMENT: a job id is never reused, even after the newest job is deleted.
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT,                      -- NULL: shown as job-<id>
        module TEXT NOT NULL REFERENCES modules(sha256),
        program_name TEXT NOT NULL,
        env TEXT NOT NULL,              -- JSON object
        limits TEXT NOT NULL,           -- JSON of protocol::worker::Limits
        max_retries INTEGER NOT NULL,
        chunk_count INTEGER NOT NULL,
        created_at_ms INTEGER NOT NULL,
        cancelled_at_ms INTEGER
    );
    CREATE TABLE chunks (
        job_id INTEGER NOT NULL REFERENCES jobs(id),
        idx INTEGER NOT NULL,
        spec BLOB NOT NULL,             -- MessagePack of protocol::api::ChunkRequest
        PRIMARY KEY (job_id, idx)
    );
    -- One final result per chunk: the primary key makes a duplicate impossible.
    CREATE TABLE results (
        job_id INTEGER NOT NULL REFERENCES jobs(id),
        idx INTEGER NOT NULL,
        succeeded INTEGER NOT NULL,
        status TEXT NOT NULL,           -- JSON of protocol::worker::RunStatus
        attempts INTEGER NOT NULL,
        work_units INTEGER NOT NULL,
        output BLOB NOT NULL,           -- MessagePack of protocol::worker::Output
        finished_at_ms INTEGER NOT NULL,
        PRIMARY KEY (job_id, idx)
    );
    "#,
];

/// Settings of the writing connection: WAL so readers never block the writer, and `synchronous=NORMAL`,
/// which in WAL mode keeps every commit safe from a process crash (SIGKILL) and syncs at checkpoints.
pub(super) fn configure(connection: &Connection) -> Result<(), StoreError> {
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    connection.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(())
}

pub(super) fn configure_reader(connection: &Connection) -> Result<(), StoreError> {
    connection.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(())
}

/// Brings the database to the newest schema version, in one transaction.
pub(super) fn migrate(connection: &Connection) -> Result<(), StoreError> {
    let version: usize = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "the database has schema version {version}, newer than this program ({}); upgrade distributivecom",
            MIGRATIONS.len()
        )));
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version) {
        let transaction = connection.unchecked_transaction()?;
        transaction.execute_batch(migration)?;
        transaction.pragma_update(None, "user_version", index + 1)?;
        transaction.commit()?;
    }
    Ok(())
}
