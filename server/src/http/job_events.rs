//! `GET /api/jobs/{id}/events`: a job's status as Server-Sent Events, for pages that follow a job live.
//!
//! The stream sends `event: status` with the job's status at once, then each time it changes, and ends
//! after a finished state. It looks at the status when a result is stored (the job's progress
//! notifications) and at least every [`CHECK_EVERY`] otherwise (the running and waiting counts move
//! without results), sends at most one event per [`MIN_GAP`], and a `: keep-alive` comment after
//! [`KEEP_ALIVE`] without one. Each account holds at most [`MAX_STREAMS_PER_ACCOUNT`] streams open.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use distributivecom_protocol::api::{ErrorBody, JobStatus};
use tokio::sync::watch;
use tokio::time::Instant;

use super::AppState;
use super::error::AppError;
use super::extract::{Caller, Path};
use super::jobs::no_job;
use crate::coordinator::{Coordinator, Progress};

/// The most event streams one account may hold open at once.
pub const MAX_STREAMS_PER_ACCOUNT: u32 = 16;
/// The status is looked at this often even without a result.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// Events are at least this far apart: at most four a second, however fast results arrive.
const MIN_GAP: Duration = Duration::from_millis(250);
/// A comment keeps a quiet stream's connection (and any proxy on the way) open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The event streams each account has open.
#[derive(Debug, Default)]
pub struct EventStreams {
    open: Mutex<HashMap<u64, u32>>,
}

impl EventStreams {
    /// Takes one of `account`'s streams, if it has one left.
    fn open(self: &Arc<Self>, account: u64) -> Option<StreamSlot> {
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = open.entry(account).or_default();
        if *count >= MAX_STREAMS_PER_ACCOUNT {
            return None;
        }
        *count += 1;
        Some(StreamSlot { streams: self.clone(), account })
    }
}

/// One open stream, given back when the stream ends or its client goes away.
#[derive(Debug)]
struct StreamSlot {
    streams: Arc<EventStreams>,
    account: u64,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = open.get_mut(&self.account) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.account);
            }
        }
    }
}

/// The job's status as Server-Sent Events (`text/event-stream`): `event: status` with a `JobStatus` as
/// JSON at once and after each change, ending after a finished state.
#[utoipa::path(
    get, path = "/api/jobs/{id}/events", tag = "jobs",
    params(("id" = u64, Path, description = "The job's id")),
    responses(
        (status = 200, description = "`event: status` events whose data is the job's status (JobStatus) as JSON", content_type = "text/event-stream", body = String),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "The caller has no such job", body = ErrorBody),
        (status = 429, description = "The account has 16 event streams open already", body = ErrorBody),
    )
)]
pub async fn events(State(state): State<AppState>, caller: Caller, Path(id): Path<u64>) -> Result<Response, AppError> {
    let owner = caller.user.id;
    let first = state.coordinator.job_status(id, owner).await?.ok_or_else(|| no_job(id))?;
    let slot = state.event_streams.open(owner).ok_or_else(|| AppError::TooManyRequests {
        message: format!(
            "you have {MAX_STREAMS_PER_ACCOUNT} event streams open, the most one account may have; close some \
             (another tab or program follows your jobs) and try again"
        ),
        retry_after_secs: 5,
    })?;
    let follow = Follow {
        updates: state.coordinator.progress_updates(id, owner),
        coordinator: state.coordinator.clone(),
        job: id,
        owner,
        next: Some(first),
        last: None,
        last_sent: None,
        finished: false,
        _slot: slot,
    };
    let events = futures_util::stream::unfold(follow, Follow::next_event);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive")).into_response())
}

/// One stream's state.
struct Follow {
    coordinator: Arc<Coordinator>,
    job: u64,
    owner: u64,
    /// Notifications of stored results while the job is active.
    updates: Option<watch::Receiver<Progress>>,
    /// A status to send at once (the first).
    next: Option<JobStatus>,
    /// The last status sent.
    last: Option<JobStatus>,
    last_sent: Option<Instant>,
    finished: bool,
    _slot: StreamSlot,
}

impl Follow {
    async fn next_event(mut self) -> Option<(Result<Event, Infallible>, Follow)> {
        if self.finished {
            return None;
        }
        let status = match self.next.take() {
            Some(status) => status,
            None => self.next_change().await?,
        };
        self.finished = status.state.is_finished();
        self.last_sent = Some(Instant::now());
        let event = match serde_json::to_string(&status) {
            Ok(json) => Event::default().event("status").data(json),
            Err(error) => {
                tracing::error!(job = self.job, %error, "could not encode a job's status");
                return None;
            }
        };
        self.last = Some(status);
        Some((Ok(event), self))
    }

    /// Waits for a status different from the last one sent; `None` if it cannot be read any more.
    async fn next_change(&mut self) -> Option<JobStatus> {
        loop {
            let check = tokio::time::sleep(CHECK_EVERY);
            match &mut self.updates {
                Some(updates) => {
                    tokio::select! {
                        changed = updates.changed() => {
                            // The job is no longer active: only the checks remain.
                            if changed.is_err() {
                                self.updates = None;
                            }
                        }
                        () = check => {}
                    }
                }
                None => check.await,
            }
            if let Some(sent) = self.last_sent {
                tokio::time::sleep_until(sent + MIN_GAP).await;
            }
            let status = match self.coordinator.job_status(self.job, self.owner).await {
                Ok(Some(status)) => status,
                Ok(None) => return None,
                Err(error) => {
                    tracing::error!(job = self.job, %error, "could not read a job's status for its event stream");
                    return None;
                }
            };
            if self.last.as_ref() != Some(&status) {
                return Some(status);
            }
        }
    }
}
