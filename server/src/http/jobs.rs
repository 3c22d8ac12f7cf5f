//! Jobs: submit, list, follow, fetch results, cancel. A job's event stream is `job_events.rs`, its results
//! as a ZIP archive `results_zip.rs`.

use std::time::Duration;

use axum::Json;
use axum::body::Body;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use distributivecom_protocol::api::{
    ErrorBody, JobCreated, JobRequest, JobStatus, JobsQuery, ResultsPage, ResultsQuery, StatusQuery,
};

use super::AppState;
use super::error::{AppError, read_body};
use super::extract::Caller;
use super::extract::{Path, Query};
use crate::store::queries;

/// The longest a status request may wait for progress.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// A results page stops growing past this many stored bytes (but always holds at least one result).
const MAX_PAGE_BYTES: u64 = 16 * 1024 * 1024;
const MAX_PAGE_RESULTS: u32 = 1000;

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
    let body = read_body(body, state.config.max_job_request_bytes, "the job request").await?;
    let request: JobRequest = serde_json::from_slice(&body)
        .map_err(|error| AppError::BadRequest(format!("could not read the job request: {error}")))?;
    let owner = caller.user.id;
    let run_module = state.uploads.run_module(&state.store, &request.module, owner).await?;
    let created = state.coordinator.submit(owner, request, run_module).await?;
    Ok((StatusCode::CREATED, Json(created)))
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
pub(super) fn no_job(id: u64) -> AppError {
    AppError::NotFound(format!("you have no job {id}"))
}

/// The most jobs one page lists (and the default).
const MAX_JOBS_PAGE: u32 = 100;

/// The caller's jobs, newest first, a page at a time: at most `limit` (100 by default and at most), older
/// than job `before` (pass the last id of a page for the next). Sessions' rounds are their session's and
/// are not listed.
#[utoipa::path(
    get, path = "/api/jobs", tag = "jobs",
    params(JobsQuery),
    responses(
        (status = 200, description = "The caller's jobs older than `before`, newest first", body = [JobStatus]),
        (status = 400, description = "A query parameter is not a whole number", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<JobsQuery>,
) -> Result<Json<Vec<JobStatus>>, AppError> {
    let limit = query.limit.unwrap_or(MAX_JOBS_PAGE).clamp(1, MAX_JOBS_PAGE);
    Ok(Json(state.coordinator.jobs_page(caller.user.id, query.before, limit).await?))
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
    if let Some(after) = query.completed_after {
        return completed_results(&state, owner, id, after, limit).await;
    }
    // First only the sizes: which results fit the page.
    let span = state
        .store
        .read(move |connection| {
            if queries::job(connection, id)?.is_none_or(|job| job.owner != Some(owner)) {
                return Ok(None);
            }
            Ok(Some(queries::results_that_fit(connection, id, offset, limit, MAX_PAGE_BYTES)?))
        })
        .await?;
    let Some(span) = span else {
        return Err(no_job(id));
    };
    let Some(span) = span else {
        return Ok(Json(ResultsPage { job: id, results: Vec::new(), next_offset: None, completed_through: None })
            .into_response());
    };
    // Then room for them in the server's memory for pages (the stored bytes, and base64 in JSON), shared
    // by all requests: many slow readers wait for room, they cannot exhaust memory.
    let room = state.results_memory.room_for(span.bytes.saturating_mul(3)).await?;
    let results = state.store.read(move |connection| queries::results(connection, id, offset, span.last)).await?;
    let next_offset = span.more.then(|| results.last().map(|last| last.index + 1)).flatten();
    let page = serde_json::to_vec(&ResultsPage { job: id, results, next_offset, completed_through: None })
        .map_err(|error| AppError::Internal(format!("could not encode a results page: {error}")))?;
    Ok(room.json_body(page))
}

/// The results that completed after the `after`-th, in completion order: the page is held within the
/// shared page memory like a chunk-order page.
async fn completed_results(
    state: &AppState,
    owner: u64,
    id: u64,
    after: u64,
    limit: u32,
) -> Result<Response, AppError> {
    let owned = state
        .store
        .read(move |connection| Ok(queries::job(connection, id)?.is_some_and(|job| job.owner == Some(owner))))
        .await?;
    if !owned {
        return Err(no_job(id));
    }
    let span = state
        .store
        .read(move |connection| queries::completed_span(connection, id, after, limit, MAX_PAGE_BYTES))
        .await?;
    let Some((last, bytes)) = span else {
        let empty = ResultsPage { job: id, results: Vec::new(), next_offset: None, completed_through: None };
        return Ok(Json(empty).into_response());
    };
    let room = state.results_memory.room_for(bytes.saturating_mul(3)).await?;
    let completed =
        state.store.read(move |connection| queries::results_completed_between(connection, id, after, last)).await?;
    let completed_through = completed.last().map(|(seq, _)| *seq);
    let results = completed.into_iter().map(|(_, result)| result).collect();
    let page = serde_json::to_vec(&ResultsPage { job: id, results, next_offset: None, completed_through })
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
