//! The edge around the scheduler: it feeds the scheduler events from sockets and HTTP, and carries out its
//! actions by sending messages to worker sessions and writes to the store.
//!
//! The scheduler is authoritative for dispatch and lives in memory behind one mutex. The store is
//! authoritative for what clients see: a chunk counts as finished for clients (status, results, waiting)
//! only once its result is durable. After a crash, every chunk without a durable result runs again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use distributivecom_protocol::Bytes;
use distributivecom_protocol::api::{ChunkRequest, JobState, JobStatus, ServerStats};
use distributivecom_protocol::worker::{Assignment, Hello, Output, ReplicaReport, RunStatus, Welcome};

use distributivecom_scheduler::{Action, ChunkOutcome, Event, JobParams, Millis, RetryPolicy, Scheduler, WorkerId};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};

use crate::config::ServerConfig;
use crate::store::{JobRow, NewResult, Store, StoreError, queries};

/// What a worker session is told to send.
#[derive(Debug)]
pub enum Outbound {
    Welcome(Welcome),
    Assign {
        job: Arc<ActiveJob>,
        chunk: u32,
        replica: u64,
    },
    Revoke(u64),
    /// Close the connection, telling the worker why.
    Close(String),
}

/// A job that still has chunks without a durable result: its description, inputs and durable progress.
#[derive(Debug)]
pub struct ActiveJob {
    pub row: JobRow,
    pub chunks: Arc<[ChunkRequest]>,
    progress: watch::Sender<Progress>,
}

/// Durable progress of a job, as clients see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub succeeded: u32,
    pub failed: u32,
    pub cancelled: bool,
    pub last_finished_at_ms: Option<u64>,
}

impl ActiveJob {
    /// The message that sends `replica` of `chunk` to a worker.
    pub fn assignment(&self, chunk: u32, replica: u64) -> Assignment {
        let spec = &self.chunks[chunk as usize];
        let mut args = Vec::with_capacity(spec.args.len() + 1);
        args.push(self.row.program_name.clone());
        args.extend(spec.args.iter().cloned());
        Assignment {
            replica,
            job: self.row.id,
            chunk,
            job_name: self.row.name.clone(),
            module: self.row.run_module.clone(),
            args,
            env: self.row.env.clone(),
            stdin: spec.stdin.clone(),
            files: spec.files.clone(),
            clock_start_ns: self.row.created_at_ms.saturating_mul(1_000_000),
            random_seed: Bytes(chunk_seed(self.row.id, chunk).to_vec()),
            limits: self.row.limits,
        }
    }
}

/// The ChaCha20 key of a chunk's `random_get`: it depends only on the chunk's identity, so every replica of
/// the chunk, on any worker, sees the same random bytes.
pub fn chunk_seed(job: u64, chunk: u32) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"distributivecom chunk seed v1");
    hasher.update(job.to_le_bytes());
    hasher.update(chunk.to_le_bytes());
    hasher.finalize().into()
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_millis() as u64).unwrap_or(0)
}

struct Core {
    scheduler: Scheduler,
    sessions: HashMap<WorkerId, mpsc::UnboundedSender<Outbound>>,
    jobs: HashMap<u64, Arc<ActiveJob>>,
    next_worker: WorkerId,
    chunks_finished: u64,
}

/// See the module documentation.
pub struct Coordinator {
    core: Mutex<Core>,
    store: Store,
    config: ServerConfig,
    origin: Instant,
    this: Weak<Coordinator>,
}

impl Coordinator {
    /// Starts the coordinator over an opened store, resuming every unfinished job. Blocking: call it before
    /// serving or from a blocking thread.
    pub fn start(store: Store, config: ServerConfig, first_replica_id: u64) -> Result<Arc<Coordinator>, StoreError> {
        let scheduler_config = distributivecom_scheduler::Config {
            lease_timeout_ms: config.lease_timeout_ms,
            prefetch_per_slot: config.prefetch_per_slot,
            prefetch_buffer_us: config.prefetch_buffer_us,
        };
        let coordinator = Arc::new_cyclic(|this| Coordinator {
            core: Mutex::new(Core {
                scheduler: Scheduler::new(scheduler_config, first_replica_id),
                sessions: HashMap::new(),
                jobs: HashMap::new(),
                next_worker: 1,
                chunks_finished: 0,
            }),
            store,
            config,
            origin: Instant::now(),
            this: this.clone(),
        });
        coordinator.recover()?;
        Ok(coordinator)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    fn now(&self) -> Millis {
        Millis(self.origin.elapsed().as_millis() as u64)
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock is a bug, but the state machine never leaves a half-done
        // transition behind, so carrying on beats taking the whole server down.
        self.core.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reloads every unfinished job from the store. Replicas that were in flight when the server stopped
    /// are simply unsent again.
    fn recover(&self) -> Result<(), StoreError> {
        let unfinished = self.store.read_blocking(queries::unfinished_jobs)?;
        for id in unfinished {
            let (row, chunks, finished, counts) = self.store.read_blocking(|connection| {
                let row = queries::job(connection, id)?
                    .ok_or_else(|| StoreError::Corrupt(format!("job {id} vanished during recovery")))?;
                Ok((
                    row,
                    queries::chunk_specs(connection, id)?,
                    queries::finished_chunks(connection, id)?,
                    queries::job_counts(connection, id)?,
                ))
            })?;
            if chunks.len() != row.chunk_count as usize {
                return Err(StoreError::Corrupt(format!(
                    "job {id} has {} stored chunks but should have {}",
                    chunks.len(),
                    row.chunk_count
                )));
            }
            let progress = Progress {
                succeeded: counts.succeeded,
                failed: counts.failed,
                cancelled: false,
                last_finished_at_ms: counts.last_finished_at_ms,
            };
            tracing::info!(job = id, finished = finished.len(), chunks = row.chunk_count, "resuming job");
            self.activate(row, chunks.into(), progress, finished);
        }
        Ok(())
    }

    /// Makes a durably stored job active and hands it to the scheduler.
    pub fn activate(&self, row: JobRow, chunks: Arc<[ChunkRequest]>, progress: Progress, finished: Vec<u32>) {
        let params = JobParams {
            id: row.id,
            chunk_count: row.chunk_count,
            policy: RetryPolicy::with_max_retries(row.max_retries),
            time_limit_ms: row.limits.time_limit_ms,
            memory_bytes: row.limits.memory_bytes,
            program: row.module.clone(),

            finished,
        };
        let job = Arc::new(ActiveJob { row, chunks, progress: watch::Sender::new(progress) });
        let mut core = self.lock();
        core.jobs.insert(job.row.id, job);
        self.run(&mut core, Event::JobAdded(params));
    }

    /// Feeds one event to the scheduler and carries out the actions that need nothing from the caller.
    /// Returns the actions that do: `StoreResult` needs the reported output.
    fn run(&self, core: &mut Core, event: Event) -> Vec<Action> {
        let mut actions = Vec::new();
        core.scheduler.handle(self.now(), event, &mut actions);
        let mut for_caller = Vec::new();
        for action in actions {
            match action {
                Action::Assign { worker, replica, job, chunk } => {
                    let Some(active) = core.jobs.get(&job).cloned() else {
                        tracing::error!(job, chunk, "the scheduler assigned a chunk of a job that is not active");
                        continue;
                    };
                    if let Some(session) = core.sessions.get(&worker) {
                        // A session that just closed will send WorkerLeft, which requeues the replica.
                        let _ = session.send(Outbound::Assign { job: active, chunk, replica });
                    }
                }
                Action::Revoke { worker, replica } => {
                    if let Some(session) = core.sessions.get(&worker) {
                        let _ = session.send(Outbound::Revoke(replica));
                    }
                }
                Action::Disconnect { worker } => {
                    if let Some(session) = core.sessions.remove(&worker) {
                        tracing::info!(worker, "closing a worker that stopped sending heartbeats");
                        let _ = session.send(Outbound::Close(format!(
                            "no heartbeat for more than {} ms: your leases were given to other workers",
                            self.config.lease_timeout_ms
                        )));
                    }
                }
                Action::StoreAbandoned { job, chunk, attempts } => {
                    let message = format!(
                        "no volunteer returned a result: {attempts} replicas were lost (disconnected or timed out)"
                    );
                    tracing::warn!(job, chunk, attempts, "abandoning a chunk");
                    self.persist_result(
                        core,
                        job,
                        chunk,
                        attempts,
                        (RunStatus::Failed { message }, Output::default(), 0),
                    );
                }
                Action::ReplicaFailed { job, chunk, replica, worker } => {
                    tracing::debug!(job, chunk, replica, worker, "a replica failed; the chunk will be retried");
                }
                Action::Ignored { replica, reason } => {
                    tracing::debug!(replica, ?reason, "ignored a report for a replica the sender does not hold");
                }
                Action::JobFinished { job } => {
                    tracing::debug!(job, "every chunk has a final outcome");
                }
                Action::StoreResult { .. } => for_caller.push(action),
            }
        }
        for_caller
    }

    /// Writes a chunk's final result; once durable, clients see it.
    fn persist_result(&self, core: &Core, job: u64, chunk: u32, attempts: u32, report: (RunStatus, Output, u64)) {
        let (status, output, work_units) = report;
        let Some(active) = core.jobs.get(&job).cloned() else {
            return;
        };
        let finished_at_ms = unix_ms();
        let succeeded = status.is_success();
        let result = NewResult { job, chunk, status, attempts, work_units, output, finished_at_ms };
        let coordinator = self.this.clone();
        self.store.insert_result(
            result,
            Box::new(move |stored| {
                if let Err(error) = stored {
                    tracing::error!(job, chunk, %error, "could not store a result; the chunk stays unfinished");
                    return;
                }
                let mut complete = false;
                active.progress.send_modify(|progress| {
                    if succeeded {
                        progress.succeeded += 1;
                    } else {
                        progress.failed += 1;
                    }
                    progress.last_finished_at_ms = Some(finished_at_ms);
                    complete = progress.succeeded + progress.failed == active.row.chunk_count;
                });
                if let Some(coordinator) = coordinator.upgrade() {
                    let mut core = coordinator.lock();
                    core.chunks_finished += 1;
                    if complete {
                        core.jobs.remove(&job);
                    }
                }
            }),
        );
    }

    /// Registers a worker session and returns its id. The welcome message goes out before any assignment.
    pub fn connect(&self, hello: &Hello, session: mpsc::UnboundedSender<Outbound>) -> WorkerId {
        let (slots, max_memory_bytes) = (hello.slots, hello.max_memory_bytes.unwrap_or(u64::MAX));
        let max_prefetch_per_slot =
            hello.prefetch_per_slot.unwrap_or(self.config.prefetch_per_slot).min(self.config.max_prefetch_per_slot);
        let mut core = self.lock();
        let worker = core.next_worker;
        core.next_worker += 1;
        let _ = session.send(Outbound::Welcome(Welcome {
            worker_id: worker,
            heartbeat_interval_ms: self.config.heartbeat_interval_ms,
            lease_timeout_ms: self.config.lease_timeout_ms,
            prefetch_per_slot: max_prefetch_per_slot,
        }));
        core.sessions.insert(worker, session);
        self.run(&mut core, Event::WorkerJoined { worker, slots, max_memory_bytes, max_prefetch_per_slot });
        worker
    }

    /// The session ended: everything the worker held is requeued at once.
    pub fn disconnect(&self, worker: WorkerId) {
        let mut core = self.lock();
        core.sessions.remove(&worker);
        self.run(&mut core, Event::WorkerLeft { worker });
    }

    pub fn heartbeat(&self, worker: WorkerId) {
        let mut core = self.lock();
        self.run(&mut core, Event::Heartbeat { worker });
    }

    pub fn set_slots(&self, worker: WorkerId, slots: u32) {
        let mut core = self.lock();
        self.run(&mut core, Event::WorkerSlots { worker, slots });
    }

    pub fn release(&self, worker: WorkerId, replica: u64) {
        let mut core = self.lock();
        self.run(&mut core, Event::ReplicaReleased { worker, replica });
    }

    /// A worker reports a finished replica. If it is the chunk's final result, it is stored.
    pub fn report(&self, worker: WorkerId, report: ReplicaReport) {
        let success = report.status.is_success();
        let mut core = self.lock();
        let event = Event::ReplicaReported { worker, replica: report.replica, success, compute_us: report.compute_us };
        let for_caller = self.run(&mut core, event);
        // Only this report's own chunk can have become final.
        let stored = for_caller.into_iter().find_map(|action| match action {
            Action::StoreResult { job, chunk, replica, outcome, attempts } => {
                debug_assert_eq!(replica, report.replica);
                debug_assert_eq!(outcome == ChunkOutcome::Succeeded, success);
                Some((job, chunk, attempts))
            }
            _ => None,
        });
        if let Some((job, chunk, attempts)) = stored {
            self.persist_result(&core, job, chunk, attempts, (report.status, report.output, report.work_units));
        }
    }

    /// Expires silent workers and overdue replicas.
    pub fn tick(&self) {
        let mut core = self.lock();
        self.run(&mut core, Event::Tick);
    }

    /// Cancels a job: its unfinished chunks will not run. Returns false if it had already finished.
    pub async fn cancel(&self, job: u64) -> Result<bool, StoreError> {
        if !self.store.cancel_job(job, unix_ms()).await? {
            return Ok(false);
        }
        let mut core = self.lock();
        if let Some(active) = core.jobs.remove(&job) {
            active.progress.send_modify(|progress| progress.cancelled = true);
        }
        self.run(&mut core, Event::JobCancelled { job });
        Ok(true)
    }

    /// The job if it is still active.
    pub fn active_job(&self, job: u64) -> Option<Arc<ActiveJob>> {
        self.lock().jobs.get(&job).cloned()
    }

    /// A job's status: from memory while it is active, from the store once it is over.
    pub async fn job_status(&self, job: u64) -> Result<Option<JobStatus>, StoreError> {
        if let Some(active) = self.active_job(job) {
            let progress = *active.progress.borrow();
            let scheduled = self.lock().scheduler.job_progress(job).unwrap_or_default();
            return Ok(Some(status_of(&active.row, progress, scheduled.pending, scheduled.running)));
        }
        let stored = self
            .store
            .read(move |connection| {
                let Some(row) = queries::job(connection, job)? else {
                    return Ok(None);
                };
                let counts = queries::job_counts(connection, job)?;
                Ok(Some((row, counts)))
            })
            .await?;
        Ok(stored.map(|(row, counts)| {
            let progress = Progress {
                succeeded: counts.succeeded,
                failed: counts.failed,
                cancelled: row.cancelled_at_ms.is_some(),
                last_finished_at_ms: counts.last_finished_at_ms,
            };
            // A job that is not active has no pending or running chunks, whatever the counts say: it is either
            // finished or cancelled (or, between a crash and the restart, about to be resumed).
            status_of(&row, progress, 0, 0)
        }))
    }

    /// Waits until the job has more than `known_finished` durable results, finishes or is cancelled, or the
    /// timeout passes. Lets clients follow progress without polling hard.
    pub async fn wait_for_progress(&self, job: u64, known_finished: u32, timeout: std::time::Duration) {
        let Some(active) = self.active_job(job) else {
            return;
        };
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
        }
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
    }
}
