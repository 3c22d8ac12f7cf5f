//! Results gathered into one write: those that arrive while a results write waits in the writer's queue
//! join it, and are stored together by [`writes::insert_results`] (each job's counts, each account's
//! balance, each volunteer key's reputation moved once for all of them).
//!
//! Architecture Invariant: the writer still applies writes in the order they were queued. A results
//! write stops gathering when any other write is queued behind it (and when the writer takes it), so a
//! result never overtakes a write queued before it.

use std::sync::{Arc, Mutex, MutexGuard, mpsc};

use rusqlite::Connection;

use super::writer::{Write, execute};
use super::writes::{self, Settlement};
use super::{NewResult, StoreError};

/// The most results one write gathers; past it, the next result starts another write.
pub(super) const MAX_GATHERED: usize = 1024;

/// Who to tell how a stored result went.
pub(super) type Answer = Box<dyn FnOnce(Result<Settlement, StoreError>) + Send>;

/// The results a queued write has gathered and not yet taken.
type Gathered = Arc<Mutex<Vec<(NewResult, Answer)>>>;

/// The results write still gathering, if any (shared by every handle of the store).
#[derive(Clone, Default)]
pub(super) struct Gathering {
    open: Arc<Mutex<Option<Gathered>>>,
    /// Results writes queued so far, for tests to see that results were gathered.
    #[cfg(test)]
    pub(super) writes: Arc<std::sync::atomic::AtomicUsize>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Gathering {
    /// Queues the result: into the write gathering now, or in a new write queued behind every write
    /// queued so far (which then gathers until the writer takes it or another write is queued).
    pub(super) fn queue_result(&self, writer: &mpsc::Sender<Box<dyn Write>>, result: NewResult, answer: Answer) {
        let mut open = lock(&self.open);
        if let Some(gathered) = open.as_ref() {
            let mut gathered = lock(gathered);
            if gathered.len() < MAX_GATHERED {
                gathered.push((result, answer));
                return;
            }
        }
        let gathered: Gathered = Arc::new(Mutex::new(vec![(result, answer)]));
        *open = Some(gathered.clone());
        #[cfg(test)]
        self.writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let write = ResultsWrite { gathering: self.clone(), mine: gathered, results: Vec::new(), outcomes: Vec::new() };
        // Sent with the lock held: no other write can be queued between the new write and its opening.
        if let Err(refused) = writer.send(Box::new(write)) {
            *open = None;
            drop(open);
            // The writer has stopped: answer at once.
            refused.0.finish(Err(StoreError::Closed));
        }
    }

    /// Queues another write, behind the write gathering now, which stops gathering: a result queued
    /// after this write is stored after it.
    pub(super) fn queue_other(&self, writer: &mpsc::Sender<Box<dyn Write>>, write: Box<dyn Write>) {
        let mut open = lock(&self.open);
        *open = None;
        if let Err(refused) = writer.send(write) {
            drop(open);
            refused.0.finish(Err(StoreError::Closed));
        }
    }
}

/// A write of gathered results.
pub(super) struct ResultsWrite {
    gathering: Gathering,
    mine: Gathered,
    results: Vec<(NewResult, Answer)>,
    /// How each result's last application went.
    outcomes: Vec<Result<Settlement, StoreError>>,
}

impl ResultsWrite {
    /// Stops gathering (if still open) and takes what was gathered.
    fn take_gathered(&mut self) {
        {
            let mut open = lock(&self.gathering.open);
            if open.as_ref().is_some_and(|gathered| Arc::ptr_eq(gathered, &self.mine)) {
                *open = None;
            }
        }
        self.results.append(&mut lock(&self.mine));
    }
}

impl Write for ResultsWrite {
    fn take(&mut self) -> usize {
        self.take_gathered();
        self.results.len()
    }

    fn apply(&mut self, connection: &Connection, careful: bool) -> bool {
        self.take_gathered();
        let results: Vec<&NewResult> = self.results.iter().map(|(result, _)| result).collect();
        debug_assert!(!results.is_empty(), "a results write holds the result it was queued for");
        if !careful {
            return match writes::insert_results(connection, &results) {
                Ok(settled) => {
                    self.outcomes = settled.into_iter().map(Ok).collect();
                    true
                }
                Err(error) => {
                    let message = error.to_string();
                    self.outcomes = results.iter().map(|_| Err(StoreError::Transaction(message.clone()))).collect();
                    false
                }
            };
        }
        // The careful way (a write of the group commit failed): each result in a savepoint of its own, so
        // that one refused result (a second one for its chunk) leaves the others stored.
        self.outcomes.clear();
        for result in results {
            if connection.is_autocommit() {
                // SQLite rolled the transaction back itself; a savepoint now would be a transaction of its
                // own. The writer fails the whole group commit.
                self.outcomes.push(Err(StoreError::Transaction("the transaction was rolled back".into())));
                continue;
            }
            let outcome = savepoint(connection, |connection| writes::insert_result(connection, result));
            self.outcomes.push(outcome);
        }
        !connection.is_autocommit()
    }

    fn finish(mut self: Box<Self>, committed: Result<(), StoreError>) {
        // A write the writer never ran (it had stopped) still answers what it gathered.
        self.take_gathered();
        let mut outcomes = std::mem::take(&mut self.outcomes).into_iter();
        for (_, answer) in std::mem::take(&mut self.results) {
            let outcome =
                outcomes.next().unwrap_or_else(|| Err(StoreError::Transaction("the write did not run".into())));
            answer(match &committed {
                Ok(()) => outcome,
                Err(error) => Err(StoreError::Transaction(error.to_string())),
            });
        }
    }
}

impl Drop for ResultsWrite {
    /// A write dropped unfinished (the writer thread ended, by a panic in another write's callback) still
    /// answers what it gathered, and stops gathering.
    fn drop(&mut self) {
        self.take_gathered();
        for (_, answer) in std::mem::take(&mut self.results) {
            answer(Err(StoreError::Closed));
        }
    }
}

/// Runs `write` in a savepoint, undone alone if it fails.
fn savepoint<T>(
    connection: &Connection,
    write: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    execute(connection, "SAVEPOINT result")?;
    let outcome = write(connection);
    if !connection.is_autocommit() {
        if outcome.is_err() {
            execute(connection, "ROLLBACK TO result")?;
        }
        execute(connection, "RELEASE result")?;
    }
    outcome
}
