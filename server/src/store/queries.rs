//! Reads. Each takes a connection from [`super::Store::read`] and returns plain data.

use std::collections::BTreeMap;

use distributivecom_protocol::api::{ChunkRequest, ChunkResult};
use distributivecom_protocol::worker::{Limits, ModuleRef};
use rusqlite::{Connection, OptionalExtension, params};

use super::{StoreError, encoding};

/// A job as stored.
#[derive(Clone, Debug)]
pub struct JobRow {
    pub id: u64,
    pub name: String,
    /// The program as uploaded (its hash).
    pub module: String,
    /// The instrumented module workers run.
    pub run_module: ModuleRef,
    pub program_name: String,
    pub env: BTreeMap<String, String>,
    pub limits: Limits,
    pub max_retries: u32,
    pub chunk_count: u32,
    pub created_at_ms: u64,
    pub cancelled_at_ms: Option<u64>,
    /// The account that submitted it (`None` only for jobs stored before accounts existed and not yet
    /// adopted).
    pub owner: Option<u64>,
    /// Escrowed at submission, in millicredits.
    pub budget: i64,
    pub replicas: u32,
    pub quorum: u32,
    pub stop_reason: Option<String>,
    /// The session and round this job is, if it is a session's round.
    pub session_round: Option<(u64, u64)>,
}

/// How many of a job's chunks have a stored result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobCounts {
    pub succeeded: u32,
    pub failed: u32,
    pub last_finished_at_ms: Option<u64>,
}

fn corrupt(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {error}"))
}

/// The bytes of an instrumented module (what workers run) by hash. Programs as uploaded are never
/// served: only their owners' jobs use them, and only in instrumented form.
pub fn module_bytes(connection: &Connection, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(connection
        .prepare_cached("SELECT instrumented FROM modules WHERE instrumented_sha256 = ?1")?
        .query_row([sha256], |row| row.get(0))
        .optional()?)
}

/// The bytes of a program as uploaded, if `user` uploaded it.
pub fn uploaded_program(connection: &Connection, sha256: &str, user: u64) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(connection
        .prepare_cached(
            "SELECT modules.bytes FROM modules
             JOIN module_uploads ON module_uploads.sha256 = modules.sha256
             WHERE modules.sha256 = ?1 AND module_uploads.user_id = ?2",
        )?
        .query_row(params![sha256, user as i64], |row| row.get(0))
        .optional()?)
}

/// The instrumented module and imports of a program `user` uploaded, if they did.
pub fn module_info(
    connection: &Connection,
    sha256: &str,
    user: u64,
) -> Result<Option<(ModuleRef, Vec<String>)>, StoreError> {
    let row: Option<(String, i64, String)> = connection
        .prepare_cached(
            "SELECT instrumented_sha256, instrumented_size, imports FROM modules
             JOIN module_uploads ON module_uploads.sha256 = modules.sha256
             WHERE modules.sha256 = ?1 AND module_uploads.user_id = ?2",
        )?
        .query_row(params![sha256, user as i64], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .optional()?;
    row.map(|(sha256, size, imports)| {
        let imports = serde_json::from_str(&imports).map_err(|error| corrupt("module imports", error))?;
        Ok((ModuleRef { sha256, size: size as u64 }, imports))
    })
    .transpose()
}

const JOB_COLUMNS: &str = "jobs.id, jobs.name, jobs.module, modules.instrumented_sha256, modules.instrumented_size,
     jobs.program_name, jobs.env, jobs.limits, jobs.max_retries, jobs.chunk_count, jobs.created_at_ms,
     jobs.cancelled_at_ms, jobs.owner_id, jobs.budget, jobs.replicas, jobs.quorum, jobs.stop_reason,
     jobs.session_id, jobs.round";

/// A jobs row before its JSON columns are decoded.
struct RawJob {
    id: i64,
    name: Option<String>,
    module: String,
    run_module: String,
    run_module_size: i64,
    program_name: String,
    env: String,
    limits: String,
    max_retries: u32,
    chunk_count: u32,
    created_at_ms: i64,
    cancelled_at_ms: Option<i64>,
    owner: Option<i64>,
    budget: i64,
    replicas: u32,
    quorum: u32,
    stop_reason: Option<String>,
    session: Option<i64>,
    round: Option<i64>,
}

fn raw_job(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawJob> {
    Ok(RawJob {
        id: row.get(0)?,
        name: row.get(1)?,
        module: row.get(2)?,
        run_module: row.get(3)?,
        run_module_size: row.get(4)?,
        program_name: row.get(5)?,
        env: row.get(6)?,
        limits: row.get(7)?,
        max_retries: row.get(8)?,
        chunk_count: row.get(9)?,
        created_at_ms: row.get(10)?,
        cancelled_at_ms: row.get(11)?,
        owner: row.get(12)?,
        budget: row.get(13)?,
        replicas: row.get(14)?,
        quorum: row.get(15)?,
        stop_reason: row.get(16)?,
        session: row.get(17)?,
        round: row.get(18)?,
    })
}

impl RawJob {
    fn decode(self) -> Result<JobRow, StoreError> {
        Ok(JobRow {
            id: self.id as u64,
            name: self.name.unwrap_or_else(|| format!("job-{}", self.id)),
            module: self.module,
            run_module: ModuleRef { sha256: self.run_module, size: self.run_module_size as u64 },
            program_name: self.program_name,
            env: serde_json::from_str(&self.env).map_err(|error| corrupt("job environment", error))?,
            limits: encoding::limits_from_column(&self.limits)?,
            max_retries: self.max_retries,
            chunk_count: self.chunk_count,
            created_at_ms: self.created_at_ms as u64,
            cancelled_at_ms: self.cancelled_at_ms.map(|at| at as u64),
            owner: self.owner.map(|owner| owner as u64),
            budget: self.budget,
            replicas: self.replicas,
            quorum: self.quorum,
            stop_reason: self.stop_reason,
            session_round: self.session.zip(self.round).map(|(session, round)| (session as u64, round as u64)),
        })
    }
}

pub fn job(connection: &Connection, id: u64) -> Result<Option<JobRow>, StoreError> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs JOIN modules ON modules.sha256 = jobs.module WHERE jobs.id = ?1");
    connection.prepare_cached(&sql)?.query_row([id as i64], raw_job).optional()?.map(RawJob::decode).transpose()
}

/// A job as listed: its row, its counts and what it paid, all kept on the row.
#[derive(Clone, Debug)]
pub struct ListedJob {
    pub row: JobRow,
    pub counts: JobCounts,
    pub spent: i64,
}

/// A user's newest jobs first, older than job `before` (all, without it), at most `limit`. Sessions'
/// rounds are not listed (they are their session's). One range of the `jobs_by_owner_without_rounds`
/// index, each row carrying its counts, so a page costs the same whatever the account's history.
pub fn list_jobs(
    connection: &Connection,
    owner: u64,
    before: Option<u64>,
    limit: u32,
) -> Result<Vec<ListedJob>, StoreError> {
    let sql = list_jobs_sql();
    let before = before.map_or(i64::MAX, |before| i64::try_from(before).unwrap_or(i64::MAX));
    let mut statement = connection.prepare_cached(&sql)?;
    let rows = statement.query_map(params![owner as i64, before, limit], |row| {
        let counts = JobCounts {
            succeeded: row.get(19)?,
            failed: row.get(20)?,
            last_finished_at_ms: row.get::<_, Option<i64>>(21)?.map(|at| at as u64),
        };
        Ok((raw_job(row)?, counts, row.get::<_, i64>(22)?))
    })?;
    rows.map(|row| {
        let (raw, counts, spent) = row?;
        Ok(ListedJob { row: raw.decode()?, counts, spent })
    })
    .collect()
}

/// The statement of [`list_jobs`] (its query plan is tested).
pub(super) fn list_jobs_sql() -> String {
    format!(
        "SELECT {JOB_COLUMNS}, jobs.results_succeeded, jobs.results_stored - jobs.results_succeeded,
                jobs.last_finished_at_ms, jobs.spent
         FROM jobs JOIN modules ON modules.sha256 = jobs.module
         WHERE jobs.owner_id = ?1 AND jobs.session_id IS NULL AND jobs.id < ?2
         ORDER BY jobs.id DESC LIMIT ?3"
    )
}

/// A program as its uploader lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadedProgram {
    pub sha256: String,
    pub size: u64,
    pub name: Option<String>,
    pub uploaded_at_ms: u64,
}

pub(super) const UPLOADED_PROGRAMS_SQL: &str =
    "SELECT module_uploads.sha256, modules.size, module_uploads.name, module_uploads.uploaded_at_ms
     FROM module_uploads JOIN modules ON modules.sha256 = module_uploads.sha256
     WHERE module_uploads.user_id = ?1
     ORDER BY module_uploads.uploaded_at_ms DESC, module_uploads.sha256 DESC LIMIT ?2";

/// The programs `user` uploaded, the most recently uploaded first, at most `limit`.
pub fn uploaded_programs(connection: &Connection, user: u64, limit: u32) -> Result<Vec<UploadedProgram>, StoreError> {
    let mut statement = connection.prepare_cached(UPLOADED_PROGRAMS_SQL)?;
    let rows = statement.query_map(params![user as i64, limit], |row| {
        Ok(UploadedProgram {
            sha256: row.get(0)?,
            size: row.get::<_, i64>(1)?.max(0) as u64,
            name: row.get(2)?,
            uploaded_at_ms: row.get::<_, i64>(3)?.max(0) as u64,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The job's counts, kept on its row as results are stored.
pub fn job_counts(connection: &Connection, id: u64) -> Result<JobCounts, StoreError> {
    Ok(connection
        .prepare_cached(
            "SELECT results_succeeded, results_stored - results_succeeded, last_finished_at_ms FROM jobs WHERE id = ?1",
        )?
        .query_row([id as i64], |row| {
            Ok(JobCounts {
                succeeded: row.get(0)?,
                failed: row.get(1)?,
                last_finished_at_ms: row.get::<_, Option<i64>>(2)?.map(|at| at as u64),
            })
        })
        .optional()?
        .unwrap_or_default())
}

/// Which of the (at most `limit`) stored results with index `>= offset` fit in about `max_bytes`: the
/// index of the last one that fits (always at least the first), the bytes they take, and whether more may
/// follow. Reads only the results' sizes, never their outputs.
pub fn results_that_fit(
    connection: &Connection,
    id: u64,
    offset: u32,
    limit: u32,
    max_bytes: u64,
) -> Result<Option<ResultsSpan>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT idx, length(output) + length(status) FROM results
         WHERE job_id = ?1 AND idx >= ?2 ORDER BY idx LIMIT ?3",
    )?;
    let mut rows = statement.query(params![id as i64, offset, limit])?;
    let mut span: Option<ResultsSpan> = None;
    let mut count = 0;
    while let Some(row) = rows.next()? {
        let (index, size) = (row.get::<_, u32>(0)?, row.get::<_, i64>(1)?.max(0) as u64);
        count += 1;
        match &mut span {
            None => span = Some(ResultsSpan { last: index, bytes: size, more: false }),
            Some(span) if span.bytes.saturating_add(size) <= max_bytes => {
                span.last = index;
                span.bytes += size;
            }
            Some(span) => {
                span.more = true;
                return Ok(Some(*span));
            }
        }
    }
    if let Some(span) = &mut span {
        span.more = count == limit;
    }
    Ok(span)
}

/// A run of results that fit a page: up to index `last`, taking about `bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResultsSpan {
    pub last: u32,
    pub bytes: u64,
    /// Whether results may follow `last`.
    pub more: bool,
}

/// The stored results with index from `first` to `last`, in chunk order.
pub fn results(connection: &Connection, id: u64, first: u32, last: u32) -> Result<Vec<ChunkResult>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT 0, idx, status, attempts, work_units, output FROM results
         WHERE job_id = ?1 AND idx >= ?2 AND idx <= ?3 ORDER BY idx",
    )?;
    let rows = statement.query_map(params![id as i64, first, last], raw_result)?;
    rows.map(|row| Ok(row?.decode()?.1)).collect()
}

/// A results row (its place in completion order first) before its columns are decoded.
struct RawResult {
    seq: i64,
    index: u32,
    status: String,
    attempts: u32,
    work_units: i64,
    output: Vec<u8>,
}

/// Reads `seq, idx, status, attempts, work_units, output`.
fn raw_result(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawResult> {
    Ok(RawResult {
        seq: row.get(0)?,
        index: row.get(1)?,
        status: row.get(2)?,
        attempts: row.get(3)?,
        work_units: row.get(4)?,
        output: row.get(5)?,
    })
}

impl RawResult {
    fn decode(self) -> Result<(u64, ChunkResult), StoreError> {
        let status = encoding::status_from_column(&self.status)?;
        let output = encoding::output_from_column(&self.output)?;
        let result = ChunkResult {
            index: self.index,
            succeeded: status.is_success(),
            reason: status.describe(),
            status,
            attempts: self.attempts,
            work_units: self.work_units as u64,
            output,
        };
        Ok((self.seq as u64, result))
    }
}

/// Which of the job's results that completed after the `after`-th fit a page: at most `limit`, and as
/// many as fit `max_bytes` of stored output (always at least one). Returns the last one's place and the
/// bytes, or `None` if none completed after it.
pub fn completed_span(
    connection: &Connection,
    id: u64,
    after: u64,
    limit: u32,
    max_bytes: u64,
) -> Result<Option<(u64, u64)>, StoreError> {
    completed_span_through(connection, id, after, u64::MAX, limit, max_bytes)
}

/// The same among the results that completed up to the `through`-th: a snapshot of a job that may still
/// be running.
pub fn completed_span_through(
    connection: &Connection,
    id: u64,
    after: u64,
    through: u64,
    limit: u32,
    max_bytes: u64,
) -> Result<Option<(u64, u64)>, StoreError> {
    let mut sizes = connection.prepare_cached(
        "SELECT seq, length(output) + length(status) FROM results WHERE job_id = ?1 AND seq > ?2 AND seq <= ?3
         ORDER BY seq LIMIT ?4",
    )?;
    let bound = |place: u64| place.min(i64::MAX as u64) as i64;
    let mut rows = sizes.query(params![id as i64, bound(after), bound(through), limit])?;
    let (mut last, mut bytes) = (None, 0u64);
    while let Some(row) = rows.next()? {
        let (seq, size) = (row.get::<_, i64>(0)?, row.get::<_, i64>(1)?.max(0) as u64);
        if last.is_some() && bytes.saturating_add(size) > max_bytes {
            break;
        }
        bytes = bytes.saturating_add(size);
        last = Some(seq as u64);
    }
    Ok(last.map(|last| (last, bytes)))
}

/// The job's results that completed after the `after`-th up to the `last`-th, in the order they
/// completed, each with its place.
pub fn results_completed_between(
    connection: &Connection,
    id: u64,
    after: u64,
    last: u64,
) -> Result<Vec<(u64, ChunkResult)>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT seq, idx, status, attempts, work_units, output FROM results
         WHERE job_id = ?1 AND seq > ?2 AND seq <= ?3 ORDER BY seq",
    )?;
    let bound = |place: u64| place.min(i64::MAX as u64) as i64;
    let rows = statement.query_map(params![id as i64, bound(after), bound(last)], raw_result)?;
    rows.map(|row| row?.decode()).collect()
}

/// A session round's broadcast (every chunk's stdin), or `None` for a job that is not a round.
pub fn round_broadcast(
    connection: &Connection,
    id: u64,
) -> Result<Option<distributivecom_protocol::Bytes>, StoreError> {
    let broadcast: Option<Option<Vec<u8>>> = connection
        .prepare_cached(
            "SELECT CASE WHEN session_id IS NULL THEN NULL ELSE COALESCE(broadcast, x'') END FROM jobs WHERE id = ?1",
        )?
        .query_row([id as i64], |row| row.get(0))
        .optional()?;
    Ok(broadcast.flatten().map(distributivecom_protocol::Bytes))
}

/// Every chunk's inputs, in chunk order (for a session's round: the shards, see `round_broadcast`).
pub fn chunk_specs(connection: &Connection, id: u64) -> Result<Vec<ChunkRequest>, StoreError> {
    let session: Option<Option<i64>> = connection
        .prepare_cached("SELECT session_id FROM jobs WHERE id = ?1")?
        .query_row([id as i64], |row| row.get(0))
        .optional()?;
    if let Some(Some(session)) = session {
        // A round: its session's shards, whose stdin is the round's broadcast (`round_broadcast`).
        return super::sessions::shards(connection, session as u64);
    }
    let mut statement = connection.prepare("SELECT spec FROM chunks WHERE job_id = ?1 ORDER BY idx")?;
    let rows = statement.query_map([id as i64], |row| row.get::<_, Vec<u8>>(0))?;
    let mut specs = Vec::new();
    for row in rows {
        specs.push(encoding::chunk_from_column(&row?)?);
    }
    Ok(specs)
}

/// The chunks of a job that have a stored result.
pub fn finished_chunks(connection: &Connection, id: u64) -> Result<Vec<u32>, StoreError> {
    let mut statement = connection.prepare("SELECT idx FROM results WHERE job_id = ?1 ORDER BY idx")?;
    let rows = statement.query_map([id as i64], |row| row.get::<_, u32>(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Jobs that are neither cancelled nor finished: the ones to resume after a restart.
pub fn unfinished_jobs(connection: &Connection) -> Result<Vec<u64>, StoreError> {
    let mut statement = connection
        .prepare("SELECT id FROM jobs WHERE cancelled_at_ms IS NULL AND results_stored < chunk_count ORDER BY id")?;
    let rows = statement.query_map([], |row| row.get::<_, i64>(0))?;
    Ok(rows.map(|row| row.map(|id| id as u64)).collect::<Result<_, _>>()?)
}
