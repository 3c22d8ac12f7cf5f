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
use distributivecom_protocol::api::{ChunkRequest, JobState, JobStatus, ServerStats, VolunteerCredential};
use distributivecom_protocol::encode;
use distributivecom_protocol::worker::{Assignment, Credential, Hello, Output, ReplicaReport, RunStatus, Welcome};
use distributivecom_scheduler::{
    Action, Event, FailureReason, JobParams, Millis, ReplicationPolicy, Report, Scheduler, Waiting, WorkerId,
};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};

use crate::auth;
use crate::config::ServerConfig;
use crate::http::human_bytes;
use crate::report_limits;
use crate::store::{JobRow, NewResult, Payment, Store, StoreError, accounts, ledger, queries, writes};

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
    /// Paid out of the job's escrow so far, in millicredits.
    pub spent: i64,
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
    /// The API token each worker connected with, if any.
    worker_tokens: HashMap<WorkerId, u64>,
    jobs: HashMap<u64, Arc<ActiveJob>>,
    /// Reports of replicas whose chunk is not final yet, by chunk: the accepted result's output is taken
    /// from here once a quorum agrees, and the rest are dropped.
    reports: HashMap<(u64, u32), HashMap<u64, ReplicaReport>>,
    next_worker: WorkerId,
    chunks_finished: u64,
}

/// Who a worker volunteers for, as its hello proved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The ledger account and volunteer key: `user:<id>` or `volunteer:<id>`.
    pub volunteer: String,
    /// Its current run of validated replicas.
    pub trust: u32,
    /// The API token it connected with, if any: revoking the token closes the connection.
    pub token: Option<u64>,
}

/// See the module documentation.
pub struct Coordinator {
    core: Mutex<Core>,
    store: Store,
    config: ServerConfig,
    origin: Instant,
    this: Weak<Coordinator>,
}

/// The digest replicas are compared by: everything a correct worker reproduces exactly (how the run ended,
/// its outputs and its work units), and nothing that varies between honest workers (run time).
pub fn result_digest(report: &ReplicaReport) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"distributivecom result v1");
    hasher.update(encode(&(&report.status, &report.output, report.work_units)));
    hasher.finalize().into()
}

/// How the scheduler sees a report: a result to validate, or an error to retry elsewhere.
fn scheduler_report(report: &ReplicaReport) -> Report {
    match report.status {
        RunStatus::Exited { .. } | RunStatus::Trapped { .. } | RunStatus::MemoryLimit | RunStatus::WorkLimit => {
            Report::Result { digest: result_digest(report), work_units: report.work_units }
        }
        // The wall clock and start-up failures depend on the volunteer's machine, not on the program.
        RunStatus::TimedOut | RunStatus::Failed { .. } => Report::Error,
    }
}

impl Coordinator {
    /// Starts the coordinator over an opened store, resuming every unfinished job. Blocking: call it before
    /// serving or from a blocking thread.
    pub fn start(store: Store, config: ServerConfig, first_replica_id: u64) -> Result<Arc<Coordinator>, StoreError> {
        let scheduler_config = distributivecom_scheduler::Config {
            lease_timeout_ms: config.lease_timeout_ms,
            prefetch_per_slot: config.prefetch_per_slot,
            prefetch_buffer_us: config.prefetch_buffer_us,
            trust_after: config.trust_after,
            seed: first_replica_id ^ unix_ms(),
        };
        let coordinator = Arc::new_cyclic(|this| Coordinator {
            core: Mutex::new(Core {
                scheduler: Scheduler::new(scheduler_config, first_replica_id),
                sessions: HashMap::new(),
                worker_tokens: HashMap::new(),
                jobs: HashMap::new(),
                reports: HashMap::new(),
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
            let (row, chunks, finished, counts, (_, spent)) = self.store.read_blocking(|connection| {
                let row = queries::job(connection, id)?
                    .ok_or_else(|| StoreError::Corrupt(format!("job {id} vanished during recovery")))?;
                Ok((
                    row,
                    queries::chunk_specs(connection, id)?,
                    queries::finished_chunks(connection, id)?,
                    queries::job_counts(connection, id)?,
                    accounts::job_money(connection, id)?,
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
                spent,
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
            policy: ReplicationPolicy::new(row.replicas, row.quorum, row.max_retries),
            time_limit_ms: row.limits.time_limit_ms,
            memory_bytes: row.limits.memory_bytes,
            program: row.module.clone(),
            owner: row.owner.map(ledger::user).unwrap_or_default(),
            finished,
        };
        let job = Arc::new(ActiveJob { row, chunks, progress: watch::Sender::new(progress) });
        let mut core = self.lock();
        core.jobs.insert(job.row.id, job);
        self.run(&mut core, Event::JobAdded(params));
    }

    /// Feeds one event to the scheduler and carries out its actions.
    fn run(&self, core: &mut Core, event: Event) {
        let mut actions = Vec::new();
        core.scheduler.handle(self.now(), event, &mut actions);
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
                Action::StoreResult { job, chunk, canonical, validated, invalid, attempts, checked, .. } => {
                    let mut reports = core.reports.remove(&(job, chunk)).unwrap_or_default();
                    let Some(report) = reports.remove(&canonical) else {
                        tracing::error!(job, chunk, canonical, "the accepted replica's report is missing");
                        continue;
                    };
                    if !invalid.is_empty() {
                        tracing::warn!(job, chunk, ?invalid, "volunteers returned results the quorum contradicts");
                    }
                    // No replica is paid for more than the job's work limit, whatever it reports: the
                    // escrow was sized by that limit.
                    let max_work_units =
                        core.jobs.get(&job).map_or(u64::MAX, |active| active.row.limits.max_work_units);
                    let payments = validated
                        .iter()
                        .map(|replica| Payment {
                            volunteer: replica.volunteer.clone(),
                            replica: replica.replica,
                            work_units: replica.work_units.min(max_work_units),
                        })
                        .collect();
                    let reputation = if checked {
                        validated
                            .into_iter()
                            .map(|replica| (replica.volunteer, true))
                            .chain(invalid.into_iter().map(|volunteer| (volunteer, false)))
                            .collect()
                    } else {
                        Vec::new()
                    };

                    let accepted = Accepted {
                        status: report.status,
                        output: report.output,
                        work_units: report.work_units,
                        payments,
                        reputation,
                    };
                    self.persist_result(core, job, chunk, attempts, accepted);
                }
                Action::StoreFailure { job, chunk, replica, reason, attempts, .. } => {
                    let mut reports = core.reports.remove(&(job, chunk)).unwrap_or_default();
                    let last = replica.and_then(|replica| reports.remove(&replica));
                    tracing::warn!(job, chunk, attempts, ?reason, "a chunk failed");
                    let failed = match (reason, last) {
                        // The last volunteer error says best what went wrong (a timeout, a start failure).
                        (FailureReason::Errors, Some(report)) => {
                            Accepted::unpaid(report.status, report.output, report.work_units)
                        }
                        (reason, _) => Accepted::unpaid(
                            RunStatus::Failed { message: failure_message(reason, attempts) },
                            Output::default(),
                            0,
                        ),
                    };
                    self.persist_result(core, job, chunk, attempts, failed);
                }
                Action::ReplicaFailed { job, chunk, replica, worker } => {
                    tracing::debug!(job, chunk, replica, worker, "a replica failed; the chunk will be retried");
                }
                Action::ReplicaInvalid { job, chunk, replica, volunteer } => {
                    self.store.transact_then(
                        move |connection| writes::record_validation(connection, &volunteer, false),
                        move |recorded| {
                            if let Err(error) = recorded {
                                tracing::error!(job, chunk, replica, %error, "could not record an invalid replica");
                            }
                        },
                    );
                }
                Action::Ignored { replica, reason } => {
                    tracing::debug!(replica, ?reason, "ignored a report for a replica the sender does not hold");
                }
                Action::JobFinished { job } => {
                    tracing::debug!(job, "every chunk has a final outcome");
                }
            }
        }
    }

    /// Writes a chunk's final result and its payments; once durable, clients see it. A job whose budget
    /// is spent is stopped.
    fn persist_result(&self, core: &Core, job: u64, chunk: u32, attempts: u32, accepted: Accepted) {
        let Some(active) = core.jobs.get(&job).cloned() else {
            return;
        };
        let finished_at_ms = unix_ms();
        let succeeded = accepted.status.is_success();
        let result = NewResult {
            job,
            chunk,
            status: accepted.status,
            attempts,
            work_units: accepted.work_units,
            output: accepted.output,
            finished_at_ms,
            payments: accepted.payments,
            reputation: accepted.reputation,
            pricing: self.config.pricing,
        };
        let coordinator = self.this.clone();
        self.store.insert_result(result, move |stored| {
            let settlement = match stored {
                Ok(settlement) => settlement,
                Err(error) => {
                    tracing::error!(job, chunk, %error, "could not store a result; the chunk stays unfinished");
                    return;
                }
            };
            let mut complete = false;
            active.progress.send_modify(|progress| {
                if succeeded {
                    progress.succeeded += 1;
                } else {
                    progress.failed += 1;
                }
                progress.spent += settlement.paid;
                progress.last_finished_at_ms = Some(finished_at_ms);
                complete = progress.succeeded + progress.failed == active.row.chunk_count;
            });
            let Some(coordinator) = coordinator.upgrade() else { return };
            {
                let mut core = coordinator.lock();
                core.chunks_finished += 1;
                if complete {
                    core.jobs.remove(&job);
                }
            }
            if settlement.budget_spent {
                tracing::info!(job, "stopping a job whose budget is spent");
                coordinator.stop(job, "its budget is spent: raise budget_millicredits to run it whole".to_owned());
            }
        });
    }

    /// Works out who a worker's hello says it volunteers for.
    pub async fn identify(&self, credential: Option<Credential>) -> Result<Identity, String> {
        let mut token_id = None;
        let volunteer = match credential {
            None => {
                return Err("say who you volunteer for: send an API token (`--token`) or an anonymous volunteer \
                            identity from POST /api/volunteers in hello's credential"
                    .to_owned());
            }
            Some(Credential::Token(token)) => {
                let hash = auth::sha256_hex(&token);
                let found = self.store.read(move |connection| accounts::token(connection, &hash)).await;
                match found {
                    Ok(Some((user, id))) => {
                        token_id = Some(id);
                        ledger::user(user.id)
                    }
                    Ok(None) => return Err("this API token is not valid: it was revoked or mistyped".to_owned()),
                    Err(error) => return Err(internal(error)),
                }
            }
            Some(Credential::Volunteer { id, secret }) => {
                match auth::check_volunteer(&self.store, VolunteerCredential { id, secret }).await {
                    Ok(Some(volunteer)) => match volunteer.user_id {
                        Some(user) => ledger::user(user),
                        None => ledger::volunteer(&volunteer.id),
                    },
                    Ok(None) => return Err("unknown volunteer identity or wrong secret".to_owned()),
                    Err(error) => return Err(internal(error)),
                }
            }
        };
        let key = volunteer.clone();
        let reputation = self.store.read(move |connection| accounts::reputation(connection, &key)).await;
        let trust = reputation.map_err(internal)?.consecutive_valid;
        Ok(Identity { volunteer, trust, token: token_id })
    }

    /// A fresh id for a worker connection, taken when its socket opens (before its hello).
    pub fn new_worker_id(&self) -> WorkerId {
        let mut core = self.lock();
        let worker = core.next_worker;
        core.next_worker += 1;
        worker
    }

    /// Registers worker `worker`'s connection. The welcome message goes out before any assignment.
    pub fn connect(
        &self,
        worker: WorkerId,
        hello: &Hello,
        identity: Identity,
        session: mpsc::UnboundedSender<Outbound>,
    ) {
        let (slots, max_memory_bytes) = (hello.slots, hello.max_memory_bytes.unwrap_or(u64::MAX));
        let max_prefetch_per_slot =
            hello.prefetch_per_slot.unwrap_or(self.config.prefetch_per_slot).min(self.config.max_prefetch_per_slot);
        let mut core = self.lock();
        let _ = session.send(Outbound::Welcome(Welcome {
            worker_id: worker,
            heartbeat_interval_ms: self.config.heartbeat_interval_ms,
            lease_timeout_ms: self.config.lease_timeout_ms,
            prefetch_per_slot: max_prefetch_per_slot,
        }));
        core.sessions.insert(worker, session);
        let Identity { volunteer, trust, token } = identity;
        if let Some(token) = token {
            core.worker_tokens.insert(worker, token);
        }
        self.run(
            &mut core,
            Event::WorkerJoined { worker, volunteer, trust, slots, max_memory_bytes, max_prefetch_per_slot },
        );
    }

    /// The session ended: everything the worker held is requeued at once.
    pub fn disconnect(&self, worker: WorkerId) {
        let mut core = self.lock();
        core.sessions.remove(&worker);
        core.worker_tokens.remove(&worker);
        self.run(&mut core, Event::WorkerLeft { worker });
    }

    /// An API token was revoked: the workers that connected with it are told so and closed (their
    /// sessions then end and their replicas are requeued).
    pub fn token_revoked(&self, token: u64) {
        let mut core = self.lock();
        let workers: Vec<WorkerId> =
            core.worker_tokens.iter().filter(|(_, held)| **held == token).map(|(worker, _)| *worker).collect();
        for worker in workers {
            core.worker_tokens.remove(&worker);
            if let Some(session) = core.sessions.remove(&worker) {
                tracing::info!(worker, token, "closing a worker whose API token was revoked");
                let _ = session.send(Outbound::Close("the API token this worker uses was revoked".to_owned()));
            }
        }
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

    /// A worker reports a finished replica. The report is held until its chunk is final; if this report
    /// completes a quorum, the chunk's result is stored. A report that breaks its job's limits is dropped
    /// at once and counts as invalid.
    pub fn report(&self, worker: WorkerId, report: ReplicaReport) {
        let replica = report.replica;
        let limits = {
            let core = self.lock();
            core.scheduler
                .lease(replica)
                .filter(|lease| lease.worker == worker)
                .and_then(|lease| core.jobs.get(&lease.job).map(|job| job.row.limits))
        };
        // Checking and hashing the outputs happen outside the lock: they may be large.
        let (verdict, kept) = match limits.map(|limits| report_limits::check_report(&report, &limits)) {
            Some(Ok(())) => (scheduler_report(&report), Some(report)),
            Some(Err(problem)) => {
                tracing::warn!(worker, replica, %problem, "dropped a report that breaks its job's limits");
                (Report::Invalid, None)
            }
            // Not leased to the sender: the scheduler ignores it whatever it says.
            None => (Report::Error, None),
        };
        let compute_us = kept.as_ref().map_or(0, |kept| kept.compute_us);
        let event = Event::ReplicaReported { worker, replica, report: verdict, compute_us };
        let mut core = self.lock();
        // Only reports for a replica leased to this worker are kept; the scheduler ignores the others
        // (forged, duplicated or late), so they never reach validation, the store or the ledger.
        if let Some(kept) = kept
            && let Some(lease) = core.scheduler.lease(replica)
            && lease.worker == worker
        {
            core.reports.entry((lease.job, lease.chunk)).or_default().insert(replica, kept);
        }
        self.run(&mut core, event);
    }

    /// The largest frame `worker` may send now: room for a valid report of every replica it holds, and
    /// for the small messages of the protocol. Read as each frame from the worker begins.
    pub fn frame_limit(&self, worker: WorkerId) -> u64 {
        let core = self.lock();
        core.scheduler.leases_of(worker).fold(report_limits::FRAME_BASE_BYTES, |limit, lease| {
            let bound = core.jobs.get(&lease.job).map_or(0, |job| report_limits::report_bound(&job.row.limits));
            limit.saturating_add(bound)
        })
    }

    /// Expires silent workers and overdue replicas.
    pub fn tick(&self) {
        let mut core = self.lock();
        self.run(&mut core, Event::Tick);
    }

    /// Cancels a job: its unfinished chunks will not run and its escrow is refunded. Returns false if it
    /// had already finished or stopped.
    pub async fn cancel(&self, job: u64, reason: &str) -> Result<bool, StoreError> {
        if !self.store.cancel_job(job, reason.to_owned(), unix_ms()).await? {
            return Ok(false);
        }
        self.stopped(job);
        Ok(true)
    }

    /// Stops a job from the store's writer thread (where nothing may wait): the store first, then memory.
    fn stop(&self, job: u64, reason: String) {
        let coordinator = self.this.clone();
        self.store.transact_then(
            move |connection| writes::cancel_job(connection, job, &reason, unix_ms()),
            move |stopped| match stopped {
                Ok(true) => {
                    if let Some(coordinator) = coordinator.upgrade() {
                        coordinator.stopped(job);
                    }
                }
                Ok(false) => {}
                Err(error) => tracing::error!(job, %error, "could not stop a job whose budget is spent"),
            },
        );
    }

    /// A job was durably stopped: forget it, and revoke its replicas.
    fn stopped(&self, job: u64) {
        let mut core = self.lock();
        if let Some(active) = core.jobs.remove(&job) {
            active.progress.send_modify(|progress| progress.cancelled = true);
        }
        core.reports.retain(|(held_job, _), _| *held_job != job);
        self.run(&mut core, Event::JobCancelled { job });
    }

    /// The job if it is still active.
    pub fn active_job(&self, job: u64) -> Option<Arc<ActiveJob>> {
        self.lock().jobs.get(&job).cloned()
    }

    /// The status of `owner`'s job `job`: from memory while it is active, from the store once it is over.
    /// `None` if there is no such job or it is someone else's.
    pub async fn job_status(&self, job: u64, owner: u64) -> Result<Option<JobStatus>, StoreError> {
        if let Some(active) = self.active_job(job) {
            if active.row.owner != Some(owner) {
                return Ok(None);
            }
            let progress = *active.progress.borrow();
            let (scheduled, waiting) = {
                let core = self.lock();
                (core.scheduler.job_progress(job).unwrap_or_default(), core.scheduler.waiting(job))
            };
            let mut status = status_of(&active.row, progress, scheduled.pending, scheduled.running);
            if status.state == JobState::Running {
                status.waiting_reason = waiting.map(|waiting| waiting_reason(&waiting));
            }
            return Ok(Some(status));
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
        Ok(stored.map(|(row, counts, spent)| {
            let progress = Progress {
                succeeded: counts.succeeded,
                failed: counts.failed,
                cancelled: row.cancelled_at_ms.is_some(),
                last_finished_at_ms: counts.last_finished_at_ms,
                spent,
            };
            // A job that is not active has no pending or running chunks, whatever the counts say: it is either
            // finished or cancelled (or, between a crash and the restart, about to be resumed).
            status_of(&row, progress, 0, 0)
        }))
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
        }
    }
}

/// A chunk's final outcome, ready to store: the accepted replica's run, and who to pay and credit.
struct Accepted {
    status: RunStatus,
    output: Output,
    work_units: u64,
    payments: Vec<Payment>,
    reputation: Vec<(String, bool)>,
}

impl Accepted {
    fn unpaid(status: RunStatus, output: Output, work_units: u64) -> Accepted {
        Accepted { status, output, work_units, payments: Vec::new(), reputation: Vec::new() }
    }
}

fn failure_message(reason: FailureReason, attempts: u32) -> String {
    match reason {
        FailureReason::Disagreement { distinct_results } => format!(
            "volunteers disagreed: {attempts} replicas returned {distinct_results} different results and no \
             quorum agreed"
        ),
        FailureReason::Lost | FailureReason::Errors => {
            format!("no volunteer returned a result: {attempts} replicas were lost (disconnected or timed out)")
        }
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

fn internal(error: StoreError) -> String {
    tracing::error!(%error, "could not check a worker's credential");
    "the server could not check your credential; try again later".to_owned()
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
        budget_millicredits: row.budget,
        spent_millicredits: progress.spent,
        replicas: row.replicas,
        quorum: row.quorum,
        stop_reason: row.stop_reason.clone().or_else(|| (state == JobState::Cancelled).then(|| "cancelled".to_owned())),
        waiting_reason: None,
    }
}
