//! Jobs: submit, list, follow, fetch results, cancel.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use distributivecom_protocol::api::{
    ChunkRequest, ErrorBody, JobCreated, JobRequest, JobStatus, LimitsRequest, ReplicationRequest, ResultsPage,
};
use distributivecom_protocol::is_sha256_hex;
use distributivecom_protocol::worker::Limits;
use serde::Deserialize;

use super::AppState;
use super::error::{AppError, read_body};
use super::extract::Caller;
use super::extract::{Path, Query};
use crate::clock::unix_ms;
use crate::config::ServerConfig;
use crate::coordinator::{Progress, Usage};
use crate::format::human_bytes;
use crate::store::writes::Admission;
use crate::store::{JobRow, NewJob, queries};

/// The longest a status request may wait for progress.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// A results page stops growing past this many stored bytes (but always holds at least one result).
const MAX_PAGE_BYTES: u64 = 16 * 1024 * 1024;
const MAX_PAGE_RESULTS: u32 = 1000;
const MAX_NAME_CHARS: usize = 200;

/// Submits a job: its budget goes into escrow, and it is durable when the answer arrives; its chunks are
/// dispatched at once.
#[utoipa::path(
    post, path = "/api/jobs", tag = "jobs",
    request_body = JobRequest,
    responses(
        (status = 201, description = "Accepted", body = JobCreated),
        (status = 400, description = "Malformed or out-of-bounds request; the message names the field", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 402, description = "The account cannot cover the job's budget", body = ErrorBody),
        (status = 413, description = "Larger than the server's request limit", body = ErrorBody),
        (status = 422, description = "The module has not been uploaded by this account", body = ErrorBody),
    )
)]
pub async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    body: Body,
) -> Result<(StatusCode, Json<JobCreated>), AppError> {
    let config = &state.config;
    let body = read_body(body, config.max_job_request_bytes, "the job request").await?;
    let request: JobRequest = serde_json::from_slice(&body)
        .map_err(|error| AppError::BadRequest(format!("could not read the job request: {error}")))?;
    let limits = resolve_limits(&request.limits, config)?;
    let max_retries = request.max_retries.unwrap_or(config.default_max_retries);
    if max_retries > config.max_retries_cap {
        return Err(AppError::BadRequest(format!(
            "max_retries is {max_retries}, more than the server's maximum of {}",
            config.max_retries_cap
        )));
    }
    let (replicas, quorum) = resolve_replication(request.replication.as_ref(), config)?;
    let program_name = request.program_name.unwrap_or_else(|| "program.wasm".to_owned());
    check_request(
        &request.module,
        request.name.as_deref(),
        &program_name,
        &request.chunks,
        &request.env,
        &limits,
        config,
    )?;
    // The most the job can cost: every chunk accepted with a full quorum of replicas at the work limit.
    let max_cost = config
        .pricing
        .cost(limits.max_work_units)
        .saturating_mul(i64::from(quorum))
        .saturating_mul(request.chunks.len() as i64);
    if let Some(budget) = request.budget_millicredits
        && budget <= 0
    {
        return Err(AppError::BadRequest(format!("budget_millicredits must be more than 0, not {budget}")));
    }

    let owner = caller.user.id;
    let Some(run_module) = state.uploads.run_module(&state.store, &request.module, owner).await? else {
        return Err(AppError::Unprocessable(format!(
            "module {} has not been uploaded by this account; upload it with POST /api/modules first",
            request.module
        )));
    };

    let chunks: Arc<[ChunkRequest]> = request.chunks.into();
    let created_at_ms = unix_ms();
    let new_job = NewJob {
        owner,
        budget: request.budget_millicredits,
        max_cost,
        replicas,
        quorum,
        name: request.name.clone(),
        module: request.module.clone(),
        program_name: program_name.clone(),
        env: request.env.clone(),
        limits,
        max_retries,
        created_at_ms,
        chunks: chunks.clone(),
    };
    // Active jobs live in memory: each account has room for only so much at once.
    let usage = Usage::of_job(&chunks);
    state
        .coordinator
        .reserve(owner, usage)
        .map_err(|message| AppError::TooManyRequests { message, retry_after_secs: 10 })?;
    let admitted = state.store.insert_job(new_job).await;
    let (id, budget) = match admitted {
        Ok(Admission::Accepted { id, budget }) => (id, budget),
        Ok(Admission::InsufficientCredits { balance, budget }) => {
            state.coordinator.unreserve(owner, usage);
            return Err(AppError::PaymentRequired(insufficient_credits(balance, budget, max_cost)));
        }
        Err(error) => {
            state.coordinator.unreserve(owner, usage);
            return Err(error.into());
        }
    };
    let row = JobRow {
        id,
        name: request.name.unwrap_or_else(|| format!("job-{id}")),
        module: request.module,
        run_module,
        program_name,
        env: request.env,
        limits,
        max_retries,
        chunk_count: chunks.len() as u32,
        created_at_ms,
        cancelled_at_ms: None,
        owner: Some(owner),
        budget,
        replicas,
        quorum,
        stop_reason: None,
    };
    let created = JobCreated { id, chunks: row.chunk_count };
    state.coordinator.activate(row, chunks, Progress::default(), Vec::new(), usage);
    Ok((StatusCode::CREATED, Json(created)))
}

/// The 402 message: what the account has, what the job needs, and what to do about it.
fn insufficient_credits(balance: i64, budget: i64, max_cost: i64) -> String {
    let credits = |millicredits: i64| format!("{:.3} credits", millicredits as f64 / 1000.0);
    if balance <= 0 {
        return format!(
            "your balance is {}: earn credits by volunteering (or wait for your running jobs to return their \
             escrow) before submitting",
            credits(balance)
        );
    }
    format!(
        "the job's budget is {} but your balance is {}; lower budget_millicredits (the job can cost at most {} \
         with its work limit), or wait for your running jobs to return their escrow",
        credits(budget),
        credits(balance),
        credits(max_cost)
    )
}

/// The job's replication: the request's, or the server's default. One replica (no validation) is only
/// run by the owner's own workers.
fn resolve_replication(requested: Option<&ReplicationRequest>, config: &ServerConfig) -> Result<(u32, u32), AppError> {
    let Some(requested) = requested else {
        return Ok((config.default_replicas, config.default_quorum));
    };
    let ReplicationRequest { replicas, quorum } = *requested;
    if replicas == 0 || replicas > config.max_replicas {
        return Err(AppError::BadRequest(format!(
            "replication.replicas must be 1 to {}, not {replicas}",
            config.max_replicas
        )));
    }
    if quorum == 0 || quorum > replicas {
        return Err(AppError::BadRequest(format!(
            "replication.quorum must be 1 to replication.replicas ({replicas}), not {quorum}"
        )));
    }
    if quorum == 1 && replicas > 1 {
        return Err(AppError::BadRequest(
            "a quorum of 1 with several replicas validates nothing; use replicas 1 (run by your own workers only) \
             or a quorum of at least 2"
                .to_owned(),
        ));
    }
    Ok((replicas, quorum))
}

/// The job's limits: the request's where given, the server's defaults elsewhere, all within the maxima.
fn resolve_limits(requested: &LimitsRequest, config: &ServerConfig) -> Result<Limits, AppError> {
    let pick = |name: &str, value: Option<u64>, default: u64, max: u64| {
        let value = value.unwrap_or(default);
        if value == 0 {
            return Err(AppError::BadRequest(format!("limits.{name} must be more than 0")));
        }
        if value > max {
            return Err(AppError::BadRequest(format!(
                "limits.{name} is {value}, more than the server's maximum of {max}"
            )));
        }
        Ok(value)
    };
    let (defaults, maxima) = (&config.default_limits, &config.max_limits);
    Ok(Limits {
        memory_bytes: pick(
            "memory_limit_bytes",
            requested.memory_limit_bytes,
            defaults.memory_bytes,
            maxima.memory_bytes,
        )?,
        time_limit_ms: pick("time_limit_ms", requested.time_limit_ms, defaults.time_limit_ms, maxima.time_limit_ms)?,
        max_stdout_bytes: pick(
            "max_stdout_bytes",
            requested.max_stdout_bytes,
            defaults.max_stdout_bytes,
            maxima.max_stdout_bytes,
        )?,
        max_stderr_bytes: pick(
            "max_stderr_bytes",
            requested.max_stderr_bytes,
            defaults.max_stderr_bytes,
            maxima.max_stderr_bytes,
        )?,
        max_data_bytes: pick(
            "max_data_bytes",
            requested.max_data_bytes,
            defaults.max_data_bytes,
            maxima.max_data_bytes,
        )?,
        max_work_units: pick(
            "max_work_units",
            requested.max_work_units,
            defaults.max_work_units,
            maxima.max_work_units,
        )?,
    })
}

/// Everything about a job request that can be checked without the database.
fn check_request(
    module: &str,
    name: Option<&str>,
    program_name: &str,
    chunks: &[ChunkRequest],
    env: &std::collections::BTreeMap<String, String>,
    limits: &Limits,
    config: &ServerConfig,
) -> Result<(), AppError> {
    if !is_sha256_hex(module) {
        return Err(AppError::BadRequest(format!(
            "module must be the SHA-256 (64 lowercase hex digits) of an uploaded module, not {module:?}"
        )));
    }
    if let Some(name) = name
        && (name.trim().is_empty() || name.chars().count() > MAX_NAME_CHARS)
    {
        return Err(AppError::BadRequest(format!("name must have 1 to {MAX_NAME_CHARS} characters")));
    }
    if program_name.is_empty() || program_name.chars().count() > MAX_NAME_CHARS || program_name.contains('\0') {
        return Err(AppError::BadRequest(format!(
            "program_name must have 1 to {MAX_NAME_CHARS} characters and no NUL"
        )));
    }
    if chunks.is_empty() {
        return Err(AppError::BadRequest("a job needs at least one chunk".to_owned()));
    }
    if chunks.len() > config.max_chunks_per_job as usize {
        return Err(AppError::BadRequest(format!(
            "the job has {} chunks, more than the server's maximum of {}",
            chunks.len(),
            config.max_chunks_per_job
        )));
    }
    for (index, chunk) in chunks.iter().enumerate() {
        let args = std::iter::once(program_name).chain(chunk.args.iter().map(String::as_str));
        let env = env.iter().map(|(name, value)| (name.as_str(), value.as_str()));
        let files = chunk.files.iter().map(|(path, contents)| (path.as_str(), contents.len() as u64));
        distributivecom_wasi::check_inputs(args, env, files, limits.max_data_bytes)
            .map_err(|error| AppError::BadRequest(format!("chunk {index}: {error}")))?;
        if chunk.stdin.len() as u64 > limits.max_data_bytes {
            return Err(AppError::BadRequest(format!(
                "chunk {index}: stdin holds {}, more than the job's data limit of {}",
                human_bytes(chunk.stdin.len() as u64),
                human_bytes(limits.max_data_bytes)
            )));
        }
    }
    Ok(())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct StatusQuery {
    /// Wait up to this many milliseconds (at most 60000) for more chunks than `known_finished` to finish.
    #[serde(default)]
    wait_ms: Option<u64>,
    /// How many finished chunks the caller already knows about.
    #[serde(default)]
    known_finished: Option<u32>,
}

/// A job's progress. With `wait_ms`, the answer waits for progress: a cheap way to follow a job.
#[utoipa::path(
    get, path = "/api/jobs/{id}", tag = "jobs",
    params(("id" = u64, Path, description = "The job's id"), StatusQuery),
    responses(
        (status = 200, description = "The job's status", body = JobStatus),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "The caller has no such job", body = ErrorBody),
    )
)]
pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<u64>,
    Query(query): Query<StatusQuery>,
) -> Result<Json<JobStatus>, AppError> {
    let owner = caller.user.id;
    if let Some(wait_ms) = query.wait_ms {
        let timeout = Duration::from_millis(wait_ms).min(MAX_WAIT);
        state.coordinator.wait_for_progress(id, owner, query.known_finished.unwrap_or(0), timeout).await;
    }
    let status = state.coordinator.job_status(id, owner).await?;
    status.map(Json).ok_or_else(|| no_job(id))
}

/// Someone else's job and a job that does not exist get the same answer: nothing shows which ids exist.
fn no_job(id: u64) -> AppError {
    AppError::NotFound(format!("you have no job {id}"))
}

/// The caller's newest jobs first (at most 100).
#[utoipa::path(
    get, path = "/api/jobs", tag = "jobs",
    responses(
        (status = 200, description = "The caller's recent jobs, newest first", body = [JobStatus]),
        (status = 401, description = "Not signed in", body = ErrorBody),
    )
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<JobStatus>>, AppError> {
    let owner = caller.user.id;
    let rows = state.store.read(move |connection| queries::list_jobs(connection, owner, 100)).await?;
    let mut statuses = Vec::with_capacity(rows.len());
    for row in rows {
        if let Some(status) = state.coordinator.job_status(row.id, owner).await? {
            statuses.push(status);
        }
    }
    Ok(Json(statuses))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ResultsQuery {
    /// The first chunk index to return.
    #[serde(default)]
    offset: Option<u32>,
    /// The most results to return (at most 1000).
    #[serde(default)]
    limit: Option<u32>,
}

/// Finished chunks' results in chunk order, one page at a time.
#[utoipa::path(
    get, path = "/api/jobs/{id}/results", tag = "jobs",
    params(("id" = u64, Path, description = "The job's id"), ResultsQuery),
    responses(
        (status = 200, description = "A page of results", body = ResultsPage),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "The caller has no such job", body = ErrorBody),
    )
)]
pub async fn results(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<u64>,
    Query(query): Query<ResultsQuery>,
) -> Result<Response, AppError> {
    let offset = query.offset.unwrap_or(0);
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_PAGE_RESULTS);
    let owner = caller.user.id;
    // First only the sizes: which results fit the page.
    let span = state
        .store
        .read(move |connection| {
            if !queries::job(connection, id)?.is_some_and(|job| job.owner == Some(owner)) {
                return Ok(None);
            }
            Ok(Some(queries::results_that_fit(connection, id, offset, limit, MAX_PAGE_BYTES)?))
        })
        .await?;
    let Some(span) = span else {
        return Err(no_job(id));
    };
    let Some(span) = span else {
        return Ok(Json(ResultsPage { job: id, results: Vec::new(), next_offset: None }).into_response());
    };
    // Then room for them in the server's memory for pages (the stored bytes, and base64 in JSON), shared
    // by all requests: many slow readers wait for room, they cannot exhaust memory.
    let room = state.results_memory.room_for(span.bytes.saturating_mul(3)).await?;
    let results = state.store.read(move |connection| queries::results(connection, id, offset, span.last)).await?;
    let next_offset = span.more.then(|| results.last().map(|last| last.index + 1)).flatten();
    let page = serde_json::to_vec(&ResultsPage { job: id, results, next_offset })
        .map_err(|error| AppError::Internal(format!("could not encode a results page: {error}")))?;
    Ok(room.json_body(page))
}

/// Cancels a job: chunks without a result will not run. Finished results stay.
#[utoipa::path(
    post, path = "/api/jobs/{id}/cancel", tag = "jobs",
    params(("id" = u64, Path, description = "The job's id")),
    responses(
        (status = 200, description = "Cancelled (or already over); the job's status", body = JobStatus),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "The caller has no such job", body = ErrorBody),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<u64>,
) -> Result<Json<JobStatus>, AppError> {
    let owner = caller.user.id;
    // Check ownership first: cancelling is a write, and someone else's job must not even be touched.
    if state.coordinator.job_status(id, owner).await?.is_none() {
        return Err(no_job(id));
    }
    state.coordinator.cancel(id, "cancelled by its owner").await?;
    let status = state.coordinator.job_status(id, owner).await?;
    status.map(Json).ok_or_else(|| no_job(id))
}
