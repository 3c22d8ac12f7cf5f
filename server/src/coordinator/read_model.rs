//! What clients see of jobs: their status (from memory while active, from the store once over), waiting
//! for progress without polling hard, why a job waits, and the operators' totals.

use distributivecom_protocol::api::{JobState, JobStatus, ServerStats};
use distributivecom_scheduler::Waiting;

use tokio::sync::watch;

use super::{ActiveJob, Coordinator};
use crate::format::human_bytes;
use crate::store::{JobCounts, JobRow, StoreError, accounts, queries};

/// Durable progress of a job, as clients see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub succeeded: u32,
    pub failed: u32,
    pub cancelled: bool,
    pub last_finished_at_ms: Option<u64>,
    /// Paid out of the job's escrow so far, in millicredits.
    pub spent: i64,
}

impl Coordinator {
    /// The status of `owner`'s job `job`: from memory while it is active, from the store once it is over.
    /// `None` if there is no such job or it is someone else's.
    pub async fn job_status(&self, job: u64, owner: u64) -> Result<Option<JobStatus>, StoreError> {
        if let Some(active) = self.active_job(job) {
            if active.row.owner != Some(owner) {
                return Ok(None);
            }
            return Ok(Some(self.active_status(&active)));
        }
        let stored = self
            .store
            .read(move |connection| {
                let Some(row) = queries::job(connection, job)? else {
                    return Ok(None);
                };
                if row.owner != Some(owner) {
                    return Ok(None);
                }
                let counts = queries::job_counts(connection, job)?;
                let (_, spent) = accounts::job_money(connection, job)?;
                Ok(Some((row, counts, spent)))
            })
            .await?;
        // A job that is not active has no pending or running chunks, whatever the counts say: it is either
        // finished or cancelled (or, between a crash and the restart, about to be resumed).
        Ok(stored.map(|(row, counts, spent)| status_of(&row, stored_progress(&row, counts, spent), 0, 0)))
    }

    /// The status of an active job: durable progress, and what the scheduler is doing with it now.
    fn active_status(&self, active: &ActiveJob) -> JobStatus {
        let job = active.row.id;
        let progress = *active.progress.borrow();
        let (scheduled, waiting) = {
            let core = self.lock();
            (core.scheduler.job_progress(job).unwrap_or_default(), core.scheduler.waiting(job))
        };
        let mut status = status_of(&active.row, progress, scheduled.pending, scheduled.running);
        if status.state == JobState::Running {
            status.waiting_reason = waiting.map(|waiting| waiting_reason(&waiting));
            status.volunteers = scheduled.volunteers;
        }
        status
    }

    /// A page of `owner`'s jobs (not sessions' rounds), newest first: at most `limit`, older than job
    /// `before`. One read of the store; active jobs then show their live progress.
    pub async fn jobs_page(&self, owner: u64, before: Option<u64>, limit: u32) -> Result<Vec<JobStatus>, StoreError> {
        let listed = self.store.read(move |connection| queries::list_jobs(connection, owner, before, limit)).await?;
        Ok(listed
            .into_iter()
            .map(|listed| match self.active_job(listed.row.id) {
                Some(active) => self.active_status(&active),
                None => status_of(&listed.row, stored_progress(&listed.row, listed.counts, listed.spent), 0, 0),
            })
            .collect())
    }

    /// Durable progress of `owner`'s job to follow without holding the job: `None` once the job is not
    /// active (its status then no longer changes but by a restart's recovery).
    pub fn progress_updates(&self, job: u64, owner: u64) -> Option<watch::Receiver<Progress>> {
        let core = self.lock();
        let active = core.jobs.get(&job)?;
        (active.row.owner == Some(owner)).then(|| active.progress.subscribe())
    }

    /// Waits until `owner`'s job has more than `known_finished` durable results, finishes or is cancelled,
    /// or the timeout passes. Lets clients follow progress without polling hard.
    pub async fn wait_for_progress(&self, job: u64, owner: u64, known_finished: u32, timeout: std::time::Duration) {
        let Some(active) = self.active_job(job) else {
            return;
        };
        if active.row.owner != Some(owner) {
            return;
        }
        let mut progress = active.progress.subscribe();
        let changed = progress.wait_for(|progress| {
            progress.cancelled
                || progress.succeeded + progress.failed > known_finished
                || progress.succeeded + progress.failed == active.row.chunk_count
        });
        let _ = tokio::time::timeout(timeout, changed).await;
    }

    pub fn stats(&self) -> ServerStats {
        let core = self.lock();
        let stats = core.scheduler.stats();
        ServerStats {
            workers: stats.workers,
            slots: stats.slots,
            running_jobs: core.jobs.len() as u32,
            pending_chunks: stats.pending_chunks,
            replicas_in_flight: stats.replicas_in_flight,
            chunks_finished: core.chunks_finished,
            blob_bytes_served: self.blob_bytes_served.load(std::sync::atomic::Ordering::Relaxed),
            backup_replicas: stats.backup_replicas,
            bytes_to_workers: self.bytes_to_workers.load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// A job's progress as its row keeps it.
fn stored_progress(row: &JobRow, counts: JobCounts, spent: i64) -> Progress {
    Progress {
        succeeded: counts.succeeded,
        failed: counts.failed,
        cancelled: row.cancelled_at_ms.is_some(),
        last_finished_at_ms: counts.last_finished_at_ms,
        spent,
    }
}

/// Why a job waits, in words a consumer can act on.
fn waiting_reason(waiting: &Waiting) -> String {
    match waiting {
        Waiting::NoVolunteers => "no volunteer is connected: start a worker or open the donate page".to_owned(),
        Waiting::NoOwnWorkers => "a job with 1 replica runs only on your own workers (started with your API \
                                  token), and none is connected"
            .to_owned(),
        Waiting::NotEnoughMemory { memory_bytes } => {
            format!("no connected volunteer offers {} of memory (the job's memory limit)", human_bytes(*memory_bytes))
        }
        Waiting::DistinctVolunteers { needed, connected } => format!(
            "each chunk needs {needed} distinct volunteers; {connected} {} connected",
            if *connected == 1 { "is" } else { "are" }
        ),
        Waiting::Paused => "every connected volunteer that can run it has paused".to_owned(),
        Waiting::Busy { slots } => {
            format!("queued: all {slots} slots of the volunteers that can run it are busy with other work")
        }
        Waiting::TriedEverywhere => "the waiting chunks failed on every connected volunteer that can run them, \
                                     or already ran there; they wait for another volunteer"
            .to_owned(),
    }
}

fn status_of(row: &JobRow, progress: Progress, pending: u32, running: u32) -> JobStatus {
    let finished = progress.succeeded + progress.failed;
    let state = if progress.cancelled || row.cancelled_at_ms.is_some() {
        JobState::Cancelled
    } else if finished < row.chunk_count {
        JobState::Running
    } else if progress.failed == 0 {
        JobState::Succeeded
    } else {
        JobState::Failed
    };
    let finished_at_ms = match state {
        JobState::Running => None,
        JobState::Cancelled => row.cancelled_at_ms.or(progress.last_finished_at_ms),
        JobState::Succeeded | JobState::Failed => progress.last_finished_at_ms,
    };
    // While the job runs its escrow holds the budget less what it paid (the store moves both in the result's
    // transaction); once it is over the rest was refunded.
    let escrowed_millicredits = match state {
        JobState::Running => row.budget.saturating_sub(progress.spent).max(0),
        JobState::Succeeded | JobState::Failed | JobState::Cancelled => 0,
    };
    JobStatus {
        id: row.id,
        name: row.name.clone(),
        module: row.module.clone(),
        state,
        created_at_ms: row.created_at_ms,
        finished_at_ms,
        chunks: row.chunk_count,
        succeeded: progress.succeeded,
        failed: progress.failed,
        running,
        pending,
        budget_millicredits: row.budget,
        spent_millicredits: progress.spent,
        replicas: row.replicas,
        quorum: row.quorum,
        stop_reason: row.stop_reason.clone().or_else(|| (state == JobState::Cancelled).then(|| "cancelled".to_owned())),
        waiting_reason: None,
        escrowed_millicredits,
        volunteers: 0,
    }
}
