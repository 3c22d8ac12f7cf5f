//! The writer thread: group commit of everything queued since the last commit.
//!
//! A write is a closure over the connection (see `writes.rs` for the operations). The thread takes every
//! write queued and applies them in one transaction, then commits once and only then tells each caller how
//! its write went. A write that fails must leave nothing behind, but a savepoint per write costs a copy of
//! every page it touches (SQLite's sub-journal: about a fifth of the writer's time on the result path). So
//! the writes first run optimistically, with no savepoints; if one fails, the transaction is rolled back
//! and the whole batch runs again the careful way, each write in a savepoint of its own. That is why a
//! write may run twice and must not act outside the database except idempotently.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::Connection;

use super::StoreError;

/// A write waiting for the next group commit.
pub(super) trait Write: Send {
    /// Applies the write to the open transaction and returns whether it succeeded (its changes are to be
    /// kept). It may run again after a rollback, on the same state as before: `careful` the second time,
    /// when it runs in a savepoint of its own because a write of its group commit failed.
    fn apply(&mut self, connection: &Connection, careful: bool) -> bool;
    /// Tells the caller the write's fate once the transaction's is known: `committed` is the
    /// transaction's, the write's own outcome is what its last `apply` returned.
    fn finish(self: Box<Self>, committed: Result<(), StoreError>);
    /// Called when the writer takes the write from its queue: the write stops taking more work (see
    /// `gathering`) and says how much it holds, counted against [`MAX_BATCH`].
    fn take(&mut self) -> usize {
        1
    }
}

/// The most writes (results counted one by one) one commit takes, so a flood of results still gets
/// answered in bounded time.
const MAX_BATCH: usize = 4096;

pub(super) fn spawn(connection: Connection, path: &Path) -> Result<mpsc::Sender<Box<dyn Write>>, StoreError> {
    // The WAL is copied back into the database by a thread of its own, so a checkpoint (and its fsync,
    // milliseconds on a slow disk) never holds up the commits waiting behind it.
    connection.pragma_update(None, "wal_autocheckpoint", 0)?;
    // A WAL that was long is cut back to this when it starts over.
    connection.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT_BYTES)?;
    let checkpointer = Connection::open(path)?;
    checkpointer.busy_timeout(Duration::from_secs(10))?;
    let wal_frames = Arc::new(AtomicI64::new(0));
    let (committed, commits) = mpsc::sync_channel(1);
    let measured = wal_frames.clone();
    std::thread::Builder::new()
        .name("wal-checkpoint".into())
        .spawn(move || checkpoint(&checkpointer, &commits, &measured))
        .expect("the operating system can start the checkpoint thread");
    let (sender, receiver) = mpsc::channel();
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || run(connection, receiver, committed, &wal_frames))
        .expect("the operating system can start the store thread");
    Ok(sender)
}

fn run(
    connection: Connection,
    receiver: mpsc::Receiver<Box<dyn Write>>,
    committed: mpsc::SyncSender<()>,
    wal_frames: &AtomicI64,
) {
    let mut batch: Vec<Box<dyn Write>> = Vec::with_capacity(MAX_BATCH);
    // The thread ends when every Store handle is gone (and the checkpoint thread with it).
    while let Ok(mut first) = receiver.recv() {
        let mut taken = first.take();
        batch.push(first);
        while taken < MAX_BATCH {
            match receiver.try_recv() {
                Ok(mut write) => {
                    taken += write.take();
                    batch.push(write);
                }
                Err(_) => break,
            }
        }
        commit(&connection, &mut batch);
        if wal_frames.load(Ordering::Relaxed) >= WRITER_CHECKPOINT_FRAMES {
            start_the_wal_over(&connection, wal_frames);
        }
        // A full channel means a checkpoint is due already.
        let _ = committed.try_send(());
    }
}

/// The most often the WAL is copied back: each checkpoint syncs the database file, so under a steady flow
/// of commits one copies a batch of them.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// Past this many frames (about 40 MiB) the writer checkpoints the WAL itself, between two commits.
const WRITER_CHECKPOINT_FRAMES: i64 = 10_000;

/// What a WAL file is cut back to when it starts over (SQLite's `journal_size_limit`).
const WAL_SIZE_LIMIT_BYTES: i64 = 64 * 1024 * 1024;

/// Copies committed pages from the WAL into the database after commits, at most every
/// [`CHECKPOINT_INTERVAL`], and tells the writer how long the WAL is. Passive: it never waits for the
/// writer or readers.
fn checkpoint(connection: &Connection, commits: &mpsc::Receiver<()>, wal_frames: &AtomicI64) {
    while commits.recv().is_ok() {
        match passive_checkpoint(connection) {
            Ok(checkpointed) => wal_frames.store(checkpointed.frames, Ordering::Relaxed),
            Err(error) => tracing::warn!(%error, "a WAL checkpoint failed; the next commit tries again"),
        }
        std::thread::sleep(CHECKPOINT_INTERVAL);
    }
}

/// The WAL starts over from its beginning only when a write transaction begins while every frame in it
/// is already in the database. A checkpoint on another thread always runs a commit behind the writer, so
/// under a steady flow of commits that moment never comes and the WAL would grow without end: past
/// [`WRITER_CHECKPOINT_FRAMES`] the writer, between two commits, finishes the copy itself (the checkpoint
/// thread has copied most of it), and its next transaction starts the WAL over.
fn start_the_wal_over(connection: &Connection, wal_frames: &AtomicI64) {
    match passive_checkpoint(connection) {
        Ok(checkpointed) if checkpointed.complete => wal_frames.store(0, Ordering::Relaxed),
        // A reader holds an old snapshot (or the other thread is checkpointing): the next commit retries.
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "the writer's WAL checkpoint failed; the next commit retries"),
    }
}

/// What a passive checkpoint did.
struct Checkpointed {
    /// Frames in the WAL.
    frames: i64,
    /// Whether every frame is now in the database.
    complete: bool,
}

fn passive_checkpoint(connection: &Connection) -> Result<Checkpointed, StoreError> {
    let (busy, frames, copied): (i64, i64, i64) =
        connection
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
    Ok(Checkpointed { frames, complete: busy == 0 && frames == copied })
}

/// Runs one of the few fixed statements of the commit protocol, parsed once per connection (not anew for
/// every write).
pub(super) fn execute(connection: &Connection, sql: &str) -> Result<(), StoreError> {
    connection.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// Applies the batch in one transaction and answers every write once the transaction committed (or with
/// the error if it could not begin or commit).
fn commit(connection: &Connection, batch: &mut Vec<Box<dyn Write>>) {
    match apply_all(connection, batch) {
        Ok(ended) => {
            for (write, ended) in batch.drain(..).zip(ended) {
                write.finish(ended);
            }
        }
        Err(error) => {
            tracing::error!(%error, "a group commit failed; its writes are lost");
            if !connection.is_autocommit()
                && let Err(error) = execute(connection, "ROLLBACK")
            {
                tracing::error!(%error, "could not roll back a failed group commit");
            }
            for write in batch.drain(..) {
                write.finish(Err(StoreError::Transaction(error.to_string())));
            }
        }
    }
}

/// Applies and commits the batch: optimistically, or if a write fails, again with a savepoint per write.
/// Returns how each write's savepoint ended (all well, on the optimistic way).
fn apply_all(connection: &Connection, batch: &mut [Box<dyn Write>]) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    begin(connection)?;
    if batch.iter_mut().all(|write| write.apply(connection, false)) {
        execute(connection, "COMMIT")?;
        return Ok(batch.iter().map(|_| Ok(())).collect());
    }
    // A write failed, and with no savepoints its partial changes cannot be undone alone. (Some errors,
    // such as a full disk, make SQLite roll the transaction back itself.)
    if !connection.is_autocommit() {
        execute(connection, "ROLLBACK")?;
    }
    begin(connection)?;
    let mut ended = Vec::with_capacity(batch.len());
    for write in batch.iter_mut() {
        ended.push(apply_alone(connection, write.as_mut()));
        if connection.is_autocommit() {
            // SQLite rolled everything back: the writes before this one are gone too, and a savepoint
            // opened now would be a transaction of its own.
            return Err(StoreError::Transaction(
                "SQLite rolled the whole transaction back after a write failed".into(),
            ));
        }
    }
    execute(connection, "COMMIT")?;
    Ok(ended)
}

fn begin(connection: &Connection) -> Result<(), StoreError> {
    execute(connection, "BEGIN IMMEDIATE")
}

/// Applies one write in a savepoint of its own, undone alone if it fails. Returns how its savepoint ended.
fn apply_alone(connection: &Connection, write: &mut dyn Write) -> Result<(), StoreError> {
    execute(connection, "SAVEPOINT write")?;
    if write.apply(connection, true) {
        execute(connection, "RELEASE write")
    } else {
        execute(connection, "ROLLBACK TO write").and_then(|()| execute(connection, "RELEASE write"))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Each finished write: its rows, how many times it ran, and whether it was kept.
    type Log = Arc<Mutex<Vec<(Vec<i64>, u32, bool)>>>;

    /// How a test write ends.
    #[derive(Clone, Copy)]
    enum End {
        Kept,
        /// It fails, after changing the table.
        Fails,
        /// It fails in a way that makes SQLite roll the whole transaction back (as a full disk does).
        RollsAllBack,
    }

    /// A write that inserts `rows` one by one into `t`, then ends as its `end` says, and records how many
    /// times it ran and how it finished.
    struct Insert {
        rows: Vec<i64>,
        end: End,
        runs: u32,
        log: Log,
        outcome: bool,
    }

    impl Write for Insert {
        fn apply(&mut self, connection: &Connection, _careful: bool) -> bool {
            self.runs += 1;
            for row in &self.rows {
                connection.execute("INSERT INTO t (x) VALUES (?1)", [row]).unwrap();
            }
            if let End::RollsAllBack = self.end {
                // Row 1 is there: the conflict rolls the transaction back.
                connection.execute("INSERT OR ROLLBACK INTO t (x) VALUES (1)", []).unwrap_err();
                assert!(connection.is_autocommit());
            }
            self.outcome = matches!(self.end, End::Kept);
            self.outcome
        }

        fn finish(self: Box<Self>, committed: Result<(), StoreError>) {
            self.log.lock().unwrap().push((self.rows.clone(), self.runs, committed.is_ok() && self.outcome));
        }
    }

    fn batch(log: &Log, writes: &[(&[i64], End)]) -> Vec<Box<dyn Write>> {
        let write = |(rows, end): &(&[i64], End)| {
            Box::new(Insert { rows: rows.to_vec(), end: *end, runs: 0, log: log.clone(), outcome: false })
                as Box<dyn Write>
        };
        writes.iter().map(write).collect()
    }

    fn rows(connection: &Connection) -> Vec<i64> {
        let mut statement = connection.prepare("SELECT x FROM t ORDER BY x").unwrap();
        statement.query_map([], |row| row.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn a_failing_write_leaves_nothing_behind_and_the_others_of_its_commit_are_kept() {
        let directory = tempfile::tempdir().unwrap();
        let connection = Connection::open(directory.path().join("t.sqlite3")).unwrap();
        connection.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER PRIMARY KEY)").unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));

        // All well: one run each, no savepoints needed.
        let mut writes = batch(&log, &[(&[1, 2], End::Kept), (&[3], End::Kept)]);
        commit(&connection, &mut writes);
        assert_eq!(rows(&connection), [1, 2, 3]);
        assert_eq!(*log.lock().unwrap(), [(vec![1, 2], 1, true), (vec![3], 1, true)]);
        log.lock().unwrap().clear();

        // The middle write changes the table and then fails: the batch runs again the careful way, and
        // only that write's rows are gone (the last one never ran on the optimistic pass).
        let mut writes = batch(&log, &[(&[4], End::Kept), (&[5, 6], End::Fails), (&[7], End::Kept)]);
        commit(&connection, &mut writes);
        assert!(writes.is_empty());
        assert_eq!(rows(&connection), [1, 2, 3, 4, 7]);
        assert_eq!(*log.lock().unwrap(), [(vec![4], 2, true), (vec![5, 6], 2, false), (vec![7], 1, true)]);
        assert!(connection.is_autocommit(), "no transaction is left open");
        log.lock().unwrap().clear();

        // SQLite itself rolls the transaction back when the middle write fails: nothing of the batch may
        // be committed, neither the write before it nor the one after it, and every caller hears so.
        let mut writes = batch(&log, &[(&[20], End::Kept), (&[21], End::RollsAllBack), (&[22], End::Kept)]);
        commit(&connection, &mut writes);
        assert_eq!(rows(&connection), [1, 2, 3, 4, 7]);
        let finished: Vec<bool> = log.lock().unwrap().iter().map(|(_, _, kept)| *kept).collect();
        assert_eq!(finished, [false, false, false]);
        assert!(connection.is_autocommit(), "no transaction is left open");
    }

    #[test]
    fn past_its_limit_the_writer_checkpoints_and_the_wal_starts_over() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("t.sqlite3");
        let connection = Connection::open(&path).unwrap();
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 0;
                 CREATE TABLE t (x INTEGER)",
            )
            .unwrap();
        let write = |x: i64| connection.execute("INSERT INTO t (x) VALUES (?1)", [x]).unwrap();
        let wal_bytes = || std::fs::metadata(path.with_extension("sqlite3-wal")).unwrap().len();
        // With no checkpoint, every commit appends to the WAL.
        for x in 0..500 {
            write(x);
        }
        let long = wal_bytes();
        assert!(long > 500 * 4096, "{long} bytes");

        let wal_frames = AtomicI64::new(WRITER_CHECKPOINT_FRAMES);
        start_the_wal_over(&connection, &wal_frames);
        assert_eq!(wal_frames.load(Ordering::Relaxed), 0, "the checkpoint copied every frame");
        write(500);
        assert!(wal_bytes() < 10 * 4096, "the WAL started over and was cut back: {} bytes", wal_bytes());
        let rows: i64 = connection.query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0)).unwrap();
        assert_eq!(rows, 501);
    }
}
