//! The writer thread: group commit of everything queued since the last commit.
//!
//! A write is a closure over the connection (see `writes.rs` for the operations). The thread takes every
//! write queued, applies each in a savepoint of its own (a failing write rolls back alone), commits once,
//! and only then tells each caller how its write went.

use std::sync::mpsc;

use rusqlite::Connection;

use super::{Done, StoreError};

/// A write applied inside the batch's transaction (or told why there is none). It returns whether to keep
/// its changes, and what to call once the transaction's fate is known.
pub(super) type Write = Box<dyn FnOnce(Result<&Connection, StoreError>) -> (bool, Done) + Send>;

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

fn run(mut connection: Connection, receiver: mpsc::Receiver<Write>) {
    let mut batch: Vec<Write> = Vec::with_capacity(MAX_BATCH);
    // The thread ends when every Store handle is gone.
    while let Ok(first) = receiver.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        commit(&mut connection, &mut batch);
    }
}

/// Runs one of the few fixed statements of the commit protocol, parsed once per connection.
fn execute(connection: &Connection, sql: &str) -> Result<(), StoreError> {
    connection.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// Applies the batch in one transaction, each write in a savepoint of its own, and answers every write
/// once the transaction committed (or with the error if it could not begin or commit). The transaction
/// and savepoint statements are cached, not parsed anew for every write.
fn commit(connection: &mut Connection, batch: &mut Vec<Write>) {
    if let Err(error) = execute(connection, "BEGIN IMMEDIATE") {
        tracing::error!(%error, "could not begin a group commit; its writes are lost");
        for write in batch.drain(..) {
            let (_, done) = write(Err(StoreError::Transaction(error.to_string())));
            done(Ok(()));
        }
        return;
    }
    let mut answers = Vec::with_capacity(batch.len());
    for write in batch.drain(..) {
        let answer = match execute(connection, "SAVEPOINT write") {
            Ok(()) => {
                let (keep, done) = write(Ok(connection));
                let ended = if keep {
                    execute(connection, "RELEASE write")
                } else {
                    // Undo this write alone, then end its savepoint.
                    execute(connection, "ROLLBACK TO write").and_then(|()| execute(connection, "RELEASE write"))
                };
                (ended, done)
            }
            Err(error) => {
                let (_, done) = write(Err(error));
                (Ok(()), done)
            }
        };
        answers.push(answer);
    }
    match execute(connection, "COMMIT") {
        Ok(()) => {
            for (kept, done) in answers {
                done(kept);
            }
        }
        Err(error) => {
            tracing::error!(%error, "a group commit failed; its writes are lost");
            if let Err(error) = execute(connection, "ROLLBACK") {
                tracing::error!(%error, "could not roll back a failed group commit");
            }
            for (_, done) in answers {
                done(Err(StoreError::Transaction(error.to_string())));
            }
        }
    }
}
