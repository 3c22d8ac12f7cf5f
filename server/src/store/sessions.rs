//! Sessions of rounds over kept shards: the session's row and shards, its escrow, and its closing.
//!
//! A session escrows its budget at open (`escrow:session:<id>`). Each round is a job (see
//! `writes::insert_job` with a [`Round`]) whose escrow is drawn from the session's, and whose rest goes back
//! to the session's escrow when the round ends; closing the session cancels its running rounds and refunds
//! the session's escrow to its owner. The ledger's conservation holds throughout: credits only move.

use std::collections::BTreeMap;
use std::sync::Arc;

use distributivecom_protocol::Bytes;
use distributivecom_protocol::api::ChunkRequest;
use distributivecom_protocol::worker::Limits;
use rusqlite::{Connection, OptionalExtension, params};

use super::ledger::{self, Reference};
use super::{StoreError, encoding, writes};

/// A session to open.
#[derive(Debug)]
pub struct NewSession {
    pub owner: u64,
    pub name: Option<String>,
    pub module: String,
    pub program_name: String,
    pub env: BTreeMap<String, String>,
    pub limits: Limits,
    pub max_retries: u32,
    pub replicas: u32,
    pub quorum: u32,
    pub shards: Arc<[ChunkRequest]>,
    pub budget: i64,
    pub backups: bool,
    pub created_at_ms: u64,
}

/// A round to start: which session funds it, and its broadcast (every run's stdin), stored once.
#[derive(Clone, Debug)]
pub struct Round {
    pub session: u64,
    pub round: u64,
    pub broadcast: Bytes,
}

/// Whether a session was opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionAdmission {
    Accepted { id: u64 },
    InsufficientCredits { balance: i64, budget: i64 },
}

/// A stored session.
#[derive(Clone, Debug)]
pub struct SessionRow {
    pub id: u64,
    pub owner: u64,
    pub name: String,
    pub module: String,
    pub program_name: String,
    pub env: BTreeMap<String, String>,
    pub limits: Limits,
    pub max_retries: u32,
    pub replicas: u32,
    pub quorum: u32,
    pub shard_count: u32,
    pub budget: i64,
    pub next_round: u64,
    pub created_at_ms: u64,
    pub closed_at_ms: Option<u64>,
    pub close_reason: Option<String>,
    pub backups: bool,
}

/// The ledger account holding a session's escrow.
pub fn escrow(session: u64) -> String {
    format!("escrow:session:{session}")
}

fn encoding_error(error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("could not encode a session: {error}"))
}

/// Stores a session and its shards, and moves its budget from its owner into its escrow.
pub fn insert(connection: &Connection, session: &NewSession) -> Result<SessionAdmission, StoreError> {
    let owner = ledger::user(session.owner);
    let balance = ledger::balance(connection, &owner)?;
    if session.budget <= 0 || balance < session.budget {
        return Ok(SessionAdmission::InsufficientCredits { balance, budget: session.budget });
    }
    let env = serde_json::to_string(&session.env).map_err(encoding_error)?;
    let limits = encoding::limits_to_column(&session.limits)?;
    connection
        .prepare_cached(
            "INSERT INTO compute_sessions (owner_id, name, module, program_name, env, limits, max_retries,
                 replicas, quorum, shard_count, budget, next_round, created_at_ms, backups)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 1, ?12, ?13)",
        )?
        .execute(params![
            session.owner as i64,
            session.name,
            session.module,
            session.program_name,
            env,
            limits,
            session.max_retries,
            session.replicas,
            session.quorum,
            session.shards.len() as i64,
            session.budget,
            session.created_at_ms as i64,
            session.backups
        ])?;
    let id = connection.last_insert_rowid() as u64;
    let mut insert =
        connection.prepare_cached("INSERT INTO session_shards (session_id, idx, spec) VALUES (?1, ?2, ?3)")?;
    for (index, shard) in session.shards.iter().enumerate() {
        insert.execute(params![id as i64, index as i64, encoding::chunk_to_column(shard)?])?;
    }
    ledger::record(
        connection,
        "escrow",
        &[(&owner, -session.budget), (&escrow(id), session.budget)],
        Reference { memo: "a session's budget", ..Reference::default() },
        session.created_at_ms,
    )?;
    Ok(SessionAdmission::Accepted { id })
}

const COLUMNS: &str = "id, owner_id, name, module, program_name, env, limits, max_retries, replicas, quorum,
     shard_count, budget, next_round, created_at_ms, closed_at_ms, close_reason, backups";

/// A session by id.
pub fn get(connection: &Connection, id: u64) -> Result<Option<SessionRow>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM compute_sessions WHERE id = ?1");
    let raw = connection
        .prepare_cached(&sql)?
        .query_row([id as i64], |row| {
            Ok((
                (row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, row.get::<_, Option<String>>(2)?, row.get(3)?),
                (row.get::<_, String>(4)?, row.get::<_, String>(5)?, row.get::<_, String>(6)?, row.get(7)?),
                (row.get(8)?, row.get(9)?, row.get(10)?, row.get(11)?),
                (row.get::<_, i64>(12)?, row.get::<_, i64>(13)?, row.get::<_, Option<i64>>(14)?, row.get(15)?),
                row.get::<_, bool>(16)?,
            ))
        })
        .optional()?;
    let Some(((id, owner, name, module), (program_name, env, limits, max_retries), counts, times, backups)) = raw
    else {
        return Ok(None);
    };
    let (replicas, quorum, shard_count, budget) = counts;
    let (next_round, created_at_ms, closed_at_ms, close_reason) = times;
    Ok(Some(SessionRow {
        id: id as u64,
        owner: owner as u64,
        name: name.unwrap_or_else(|| format!("session-{id}")),
        module,
        program_name,
        env: serde_json::from_str(&env).map_err(|error| StoreError::Corrupt(format!("session env: {error}")))?,
        limits: encoding::limits_from_column(&limits)?,
        max_retries,
        replicas,
        quorum,
        shard_count,
        budget,
        next_round: next_round as u64,
        created_at_ms: created_at_ms as u64,
        closed_at_ms: closed_at_ms.map(|at| at as u64),
        close_reason,
        backups,
    }))
}

/// A session's shards, in order.
pub fn shards(connection: &Connection, id: u64) -> Result<Vec<ChunkRequest>, StoreError> {
    let mut statement =
        connection.prepare_cached("SELECT spec FROM session_shards WHERE session_id = ?1 ORDER BY idx")?;
    let rows = statement.query_map([id as i64], |row| row.get::<_, Vec<u8>>(0))?;
    rows.map(|row| encoding::chunk_from_column(&row?)).collect()
}

/// The sessions not closed yet.
pub fn open_ids(connection: &Connection) -> Result<Vec<u64>, StoreError> {
    let mut statement = connection.prepare("SELECT id FROM compute_sessions WHERE closed_at_ms IS NULL ORDER BY id")?;
    let rows = statement.query_map([], |row| row.get::<_, i64>(0))?;
    rows.map(|row| Ok(row? as u64)).collect()
}

/// A session's rounds that are still running: (round, job).
pub fn running_rounds(connection: &Connection, id: u64) -> Result<Vec<(u64, u64)>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT round, id FROM jobs WHERE session_id = ?1 AND cancelled_at_ms IS NULL AND results_stored < chunk_count
         ORDER BY round",
    )?;
    let rows =
        statement.query_map([id as i64], |row| Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? as u64)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// What a session's rounds have paid (volunteers and fees), and what its escrows hold now (its own and
/// its running rounds').
pub fn money(connection: &Connection, id: u64) -> Result<(i64, i64), StoreError> {
    let spent: i64 = connection
        .prepare_cached("SELECT COALESCE(SUM(spent), 0) FROM jobs WHERE session_id = ?1")?
        .query_row([id as i64], |row| row.get(0))?;
    let mut escrowed = ledger::balance(connection, &escrow(id))?;
    for (_, job) in running_rounds(connection, id)? {
        escrowed += ledger::balance(connection, &ledger::escrow(job))?;
    }
    Ok((spent, escrowed))
}

/// Closes a session: cancels its running rounds (their escrow returns to the session's) and refunds the
/// session's escrow to its owner. `None` if it was closed already; else what was refunded.
pub fn close(connection: &Connection, id: u64, reason: &str, at_ms: u64) -> Result<Option<i64>, StoreError> {
    let changed = connection
        .prepare_cached(
            "UPDATE compute_sessions SET closed_at_ms = ?2, close_reason = ?3 WHERE id = ?1 AND closed_at_ms IS NULL",
        )?
        .execute(params![id as i64, at_ms as i64, reason])?;
    if changed == 0 {
        return Ok(None);
    }
    for (_, job) in running_rounds(connection, id)? {
        writes::cancel_job(connection, job, reason, at_ms)?;
    }
    let owner: i64 = connection
        .prepare_cached("SELECT owner_id FROM compute_sessions WHERE id = ?1")?
        .query_row([id as i64], |row| row.get(0))?;
    let escrow = escrow(id);
    let left = ledger::balance(connection, &escrow)?;
    ledger::record(
        connection,
        "refund",
        &[(&escrow, -left), (&ledger::user(owner as u64), left)],
        Reference { memo: "the rest of a session's budget", ..Reference::default() },
        at_ms,
    )?;
    Ok(Some(left))
}

/// A round's row, for the live page.
#[derive(Clone, Debug)]
pub struct RoundRow {
    pub round: u64,
    pub job: u64,
    pub chunk_count: u32,
    pub results_stored: u32,
    pub cancelled: bool,
    pub created_at_ms: u64,
    pub last_finished_at_ms: Option<u64>,
    pub spent: i64,
    pub metrics: BTreeMap<String, f64>,
}

/// At most `limit` rounds of the session from `from` on, in order.
pub fn round_rows(connection: &Connection, id: u64, from: u64, limit: u32) -> Result<Vec<RoundRow>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT round, id, chunk_count, results_stored, cancelled_at_ms IS NOT NULL, created_at_ms,
                last_finished_at_ms, spent, metrics
         FROM jobs WHERE session_id = ?1 AND round >= ?2 ORDER BY round LIMIT ?3",
    )?;
    let rows = statement.query_map(params![id as i64, from.min(i64::MAX as u64) as i64, limit], |row| {
        Ok((
            (row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, row.get::<_, u32>(2)?, row.get::<_, u32>(3)?),
            (row.get::<_, bool>(4)?, row.get::<_, i64>(5)?, row.get::<_, Option<i64>>(6)?, row.get::<_, i64>(7)?),
            row.get::<_, Option<String>>(8)?,
        ))
    })?;
    let mut rounds = Vec::new();
    for row in rows {
        let ((round, job, chunk_count, results_stored), (cancelled, created, finished, spent), metrics) = row?;
        let metrics = match metrics {
            Some(text) => {
                serde_json::from_str(&text).map_err(|error| StoreError::Corrupt(format!("round metrics: {error}")))?
            }
            None => BTreeMap::new(),
        };
        rounds.push(RoundRow {
            round: round as u64,
            job: job as u64,
            chunk_count,
            results_stored,
            cancelled,
            created_at_ms: created as u64,
            last_finished_at_ms: finished.map(|at| at as u64),
            spent,
            metrics,
        });
    }
    Ok(rounds)
}

/// Stores what the consumer noted about a round of its session; false if the session has no such round.
pub fn note(connection: &Connection, id: u64, round: u64, metrics: &BTreeMap<String, f64>) -> Result<bool, StoreError> {
    let text = serde_json::to_string(metrics).map_err(encoding_error)?;
    let changed = connection
        .prepare_cached("UPDATE jobs SET metrics = ?3 WHERE session_id = ?1 AND round = ?2")?
        .execute(params![id as i64, round.min(i64::MAX as u64) as i64, text])?;
    Ok(changed > 0)
}
