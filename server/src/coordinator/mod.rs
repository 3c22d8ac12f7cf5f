//! The coordinator: the edge around the IO-free scheduler. It feeds the scheduler events from worker sockets
//! and HTTP, and carries out its actions by sending messages to worker sockets and writes to the store.
//!
//! - this module: driving the scheduler (jobs, workers, reports, recovery after a restart);
//! - [`admission`]: checking, pricing and admitting a job;
//! - [`settlement`]: what an accepted or failed chunk leaves behind (its result, payments, reputations,
//!   the budget's end);
//! - [`read_model`]: what clients see of jobs (status, waiting for progress, operator totals).
//!
//! The scheduler is authoritative for dispatch and lives in memory behind one mutex. The store is
//! authoritative for what clients see: a chunk counts as finished for clients (status, results, waiting)
//! only once its result is durable. After a crash, every chunk without a durable result runs again.

mod admission;
mod read_model;
mod sessions;
mod settlement;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use distributivecom_protocol::Bytes;
use distributivecom_protocol::api::{ChunkRequest, FileInput};
use distributivecom_protocol::determinism::{chunk_seed, result_digest};
use distributivecom_protocol::is_sha256_hex;
use distributivecom_protocol::session::SessionServerMessage;
use distributivecom_protocol::worker::MAX_ANNOUNCED_BLOBS;
use distributivecom_protocol::worker::{Assignment, BlobRef, Hello, ReplicaReport, RunStatus, Welcome};
use distributivecom_scheduler::{
    Action, BlobName, Event, JobParams, Millis, ReplicationPolicy, Report, Scheduler, WorkerId,
};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};

pub use admission::{Refusal, max_cost};
pub use read_model::Progress;
pub use sessions::SessionFeed;

use crate::clock::unix_ms;
use crate::config::ServerConfig;
use crate::format::human_bytes;
use crate::identity::{SITE_UNAVAILABLE, WorkerIdentity};
use crate::report_limits;
use crate::store::{JobRow, Store, StoreError, accounts, blobs, ledger, queries, writes};

/// What a worker's socket is told to send.
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
    /// The size of every blob its chunks name.
    blob_sizes: HashMap<String, u64>,
    /// The key of the capabilities that let a worker fetch a blob of this job while it holds a replica
    /// that needs it (random per activation: leases do not outlive the process either).
    blob_key: [u8; 32],
    progress: watch::Sender<Progress>,
    /// What it counts against its owner's limits while active.
    usage: Usage,
    /// A session's round: the broadcast, every chunk's stdin (kept once; the chunks are the session's
    /// shards, shared by its rounds).
    broadcast: Option<Bytes>,
}

impl ActiveJob {
    /// The bytes of a chunk's inputs that travel in its assignment, to size the frames that carry them.
    pub fn input_bytes(&self, chunk: u32) -> u64 {
        let broadcast = self.broadcast.as_ref().map_or(0, |broadcast| broadcast.len() as u64);
        self.chunks.get(chunk as usize).map_or(0, ChunkRequest::inline_bytes) + broadcast
    }

    /// The capability for fetching blob `sha256` as input of `replica`: the replica, and a keyed hash of
    /// the replica and the blob.
    fn blob_capability(&self, replica: u64, sha256: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.blob_key);
        hasher.update(replica.to_le_bytes());
        hasher.update(sha256.as_bytes());
        format!("{replica}.{}", hex::encode(&hasher.finalize()[..16]))
    }

    /// Whether `chunk` of this job names blob `sha256` among its files.
    fn chunk_needs_blob(&self, chunk: u32, sha256: &str) -> bool {
        self.chunks.get(chunk as usize).is_some_and(|spec| {
            spec.files.values().any(|file| matches!(file, FileInput::Blob { blob } if blob == sha256))
        })
    }

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
            stdin: self.broadcast.clone().unwrap_or_else(|| spec.stdin.clone()),
            files: spec
                .files
                .iter()
                .filter_map(|(path, file)| match file {
                    FileInput::Inline(contents) => Some((path.clone(), contents.clone())),
                    FileInput::Blob { .. } => None,
                })
                .collect(),
            blobs: spec
                .files
                .iter()
                .filter_map(|(path, file)| match file {
                    FileInput::Inline(_) => None,
                    FileInput::Blob { blob } => Some((
                        path.clone(),
                        BlobRef {
                            sha256: blob.clone(),
                            size: self.blob_sizes.get(blob).copied().unwrap_or(0),
                            capability: self.blob_capability(replica, blob),
                        },
                    )),
                })
                .collect(),
            clock_start_ns: self.row.created_at_ms.saturating_mul(1_000_000),
            random_seed: Bytes(chunk_seed(self.row.id, chunk).to_vec()),
            limits: self.row.limits,
        }
    }
}

/// A report kept until its chunk is final.
#[derive(Debug)]
struct HeldReport {
    volunteer: String,
    report: ReplicaReport,
}

/// What one account's active jobs and open sessions hold in the coordinator's memory; bounded per account
/// (see `ServerConfig::max_active_jobs_per_account` and its neighbours).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub jobs: u32,
    pub sessions: u32,
    pub chunks: u64,
    pub input_bytes: u64,
}

impl Usage {
    /// The usage of one job of these chunks.
    pub fn of_job(chunks: &[ChunkRequest], broadcast: Option<&Bytes>) -> Usage {
        let input_bytes = chunks.iter().map(ChunkRequest::inline_bytes).sum::<u64>()
            + broadcast.map_or(0, |broadcast| broadcast.len() as u64);
        Usage { jobs: 1, sessions: 0, chunks: chunks.len() as u64, input_bytes }
    }

    /// The usage of an open session of these shards, between its rounds (each round is a job besides).
    pub fn of_session(shards: &[ChunkRequest]) -> Usage {
        let input_bytes = shards.iter().map(ChunkRequest::inline_bytes).sum::<u64>();
        Usage { jobs: 0, sessions: 1, chunks: 0, input_bytes }
    }

    fn add(&mut self, other: Usage) {
        self.jobs = self.jobs.saturating_add(other.jobs);
        self.sessions = self.sessions.saturating_add(other.sessions);
        self.chunks = self.chunks.saturating_add(other.chunks);
        self.input_bytes = self.input_bytes.saturating_add(other.input_bytes);
    }

    fn subtract(&mut self, other: Usage) {
        self.jobs = self.jobs.saturating_sub(other.jobs);
        self.sessions = self.sessions.saturating_sub(other.sessions);
        self.chunks = self.chunks.saturating_sub(other.chunks);
        self.input_bytes = self.input_bytes.saturating_sub(other.input_bytes);
    }

    fn is_empty(&self) -> bool {
        *self == Usage::default()
    }
}

/// Room taken in an account's [`Usage`], given back when dropped unless [`Reservation::keep`] hands it
/// over: a request dropped half-way (its client gone) gives its room back too.
#[must_use]
pub struct Reservation<'a> {
    coordinator: &'a Coordinator,
    owner: u64,
    usage: Usage,
    kept: bool,
}

impl Reservation<'_> {
    /// The room now belongs to what was admitted (a job, a session), which gives it back when it ends.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.coordinator.lock().give_back(self.owner, self.usage);
        }
    }
}

/// The blobs each chunk reads, for affinity; empty if none reads any. Each blob's name is allocated once.
fn chunk_blobs(chunks: &[ChunkRequest]) -> Vec<Vec<BlobName>> {
    if named_blobs(chunks).is_empty() {
        return Vec::new();
    }
    let mut names: HashMap<&str, BlobName> = HashMap::new();
    chunks
        .iter()
        .map(|chunk| {
            chunk
                .files
                .values()
                .filter_map(|file| match file {
                    FileInput::Blob { blob } => Some(names.entry(blob).or_insert_with(|| blob.as_str().into()).clone()),
                    FileInput::Inline(_) => None,
                })
                .collect()
        })
        .collect()
}

// The protocol's promise to workers is the scheduler's bound.
const _: () = assert!(MAX_ANNOUNCED_BLOBS == distributivecom_scheduler::MAX_WORKER_BLOBS);

/// Blob hashes a worker announced, as the scheduler takes them: well-formed ones, at most as many as it
/// remembers.
fn blob_names(announced: &[String]) -> Vec<BlobName> {
    announced
        .iter()
        .filter(|sha256| is_sha256_hex(sha256))
        .take(MAX_ANNOUNCED_BLOBS)
        .map(|sha256| BlobName::from(sha256.as_str()))
        .collect()
}

/// Every blob the chunks name, each once.
pub fn named_blobs(chunks: &[ChunkRequest]) -> std::collections::BTreeSet<&str> {
    chunks
        .iter()
        .flat_map(|chunk| chunk.files.values())
        .filter_map(|file| match file {
            FileInput::Blob { blob } => Some(blob.as_str()),
            FileInput::Inline(_) => None,
        })
        .collect()
}

/// How many times one replica's capability may fetch one blob: a worker needs it once, and a retry or two
/// after a broken download; a capability is not a way to download a blob over and over.
pub const MAX_BLOB_FETCHES: u32 = 3;

struct Core {
    scheduler: Scheduler,
    /// Each connected worker's outbox, read by its socket's writer.
    outboxes: HashMap<WorkerId, mpsc::Sender<Outbound>>,
    /// The API token each worker connected with, if any.
    worker_tokens: HashMap<WorkerId, u64>,
    /// The site each worker volunteers for as one of its visitors, if any.
    worker_sites: HashMap<WorkerId, u64>,
    jobs: HashMap<u64, Arc<ActiveJob>>,
    /// Reports of replicas whose chunk is not final yet, by chunk, with the volunteer who sent each: the
    /// accepted result's output is taken from here once a quorum agrees, and the rest are dropped.
    reports: HashMap<(u64, u32), HashMap<u64, HeldReport>>,
    /// The bytes of output each volunteer has waiting in `reports`.
    held_report_bytes: HashMap<String, u64>,
    /// Who each connected worker volunteers for.
    worker_volunteers: HashMap<WorkerId, String>,
    /// What each account's active jobs hold in memory.
    usage: HashMap<u64, Usage>,
    /// The open sessions.
    sessions: HashMap<u64, sessions::LiveSession>,
    /// When the scheduler asked to be woken next (see `Action::WakeAt`).
    next_wake: Option<Millis>,
    /// How often each leased replica's capability fetched each blob (see [`MAX_BLOB_FETCHES`]); entries of
    /// replicas no longer leased are dropped on each tick.
    blob_fetches: HashMap<(u64, String), u32>,
    next_worker: WorkerId,
    chunks_finished: u64,
}

impl Core {
    /// Takes a chunk's held reports out, giving their volunteers' bytes back.
    fn take_reports(&mut self, job: u64, chunk: u32) -> HashMap<u64, ReplicaReport> {
        let held = self.reports.remove(&(job, chunk)).unwrap_or_default();
        held.into_iter()
            .map(|(replica, held)| {
                self.release_report_bytes(&held.volunteer, held.report.output.total_bytes());
                (replica, held.report)
            })
            .collect()
    }

    fn release_report_bytes(&mut self, volunteer: &str, bytes: u64) {
        if let Some(held) = self.held_report_bytes.get_mut(volunteer) {
            *held = held.saturating_sub(bytes);
            if *held == 0 {
                self.held_report_bytes.remove(volunteer);
            }
        }
    }

    /// Forgets a job that finished or stopped, giving its account's usage back.
    fn forget_job(&mut self, job: u64) -> Option<Arc<ActiveJob>> {
        let active = self.jobs.remove(&job)?;
        if let Some(owner) = active.row.owner {
            self.give_back(owner, active.usage);
        }
        Some(active)
    }

    /// Holds room of `usage` for `owner` without checking the limits: for work admitted before a restart.
    fn hold(&mut self, owner: u64, usage: Usage) {
        self.usage.entry(owner).or_default().add(usage);
    }

    /// Gives `owner`'s room of `usage` back, forgetting an account that holds nothing any more.
    fn give_back(&mut self, owner: u64, usage: Usage) {
        if let Some(held) = self.usage.get_mut(&owner) {
            held.subtract(usage);
            if held.is_empty() {
                self.usage.remove(&owner);
            }
        }
    }
}

/// See the module documentation.
pub struct Coordinator {
    core: Mutex<Core>,
    store: Store,
    config: Arc<ServerConfig>,
    origin: Instant,
    this: Weak<Coordinator>,
    /// Bytes of blobs sent to workers (see [`Coordinator::blob_access`]).
    blob_bytes_served: std::sync::atomic::AtomicU64,
    /// Bytes of WebSocket messages sent to workers.
    bytes_to_workers: std::sync::atomic::AtomicU64,
}

/// Queues a message for a worker. A worker whose queue is full does not read what it is sent: its outbox
/// is dropped, so its socket closes once the writer has sent what it can (or gives up on the worker), and
/// its replicas go to others.
fn post(core: &mut Core, worker: WorkerId, message: Outbound) {
    let Some(outbox) = core.outboxes.get(&worker) else { return };
    if let Err(mpsc::error::TrySendError::Full(_)) = outbox.try_send(message) {
        tracing::warn!(worker, "closing a worker that does not read what it is sent");
        core.outboxes.remove(&worker);
    }
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
    pub fn start(
        store: Store,
        config: Arc<ServerConfig>,
        first_replica_id: u64,
    ) -> Result<Arc<Coordinator>, StoreError> {
        let scheduler_config = distributivecom_scheduler::Config {
            lease_timeout_ms: config.lease_timeout_ms,
            prefetch_per_slot: config.prefetch_per_slot,
            prefetch_buffer_us: config.prefetch_buffer_us,
            trust_after: config.trust_after,
            seed: first_replica_id ^ unix_ms(),
            affinity_wait_ms: config.affinity_wait_ms,
            backup_when_done_percent: config.backup_when_done_percent,
            backup_slowness: config.backup_slowness,
        };
        let coordinator = Arc::new_cyclic(|this| Coordinator {
            core: Mutex::new(Core {
                scheduler: Scheduler::new(scheduler_config, first_replica_id),
                outboxes: HashMap::new(),
                worker_tokens: HashMap::new(),
                worker_sites: HashMap::new(),
                jobs: HashMap::new(),
                reports: HashMap::new(),
                held_report_bytes: HashMap::new(),
                blob_fetches: HashMap::new(),
                sessions: HashMap::new(),
                next_wake: None,
                worker_volunteers: HashMap::new(),
                usage: HashMap::new(),
                next_worker: 1,
                chunks_finished: 0,
            }),
            store,
            config,
            origin: Instant::now(),
            this: this.clone(),
            blob_bytes_served: std::sync::atomic::AtomicU64::new(0),
            bytes_to_workers: std::sync::atomic::AtomicU64::new(0),
        });
        // Sessions first: their rounds, recovered as jobs, follow their settings.
        coordinator.recover_sessions()?;
        coordinator.recover()?;
        Ok(coordinator)
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
            let (row, chunks, blob_sizes, finished, counts, (_, spent), broadcast) =
                self.store.read_blocking(|connection| {
                    let row = queries::job(connection, id)?
                        .ok_or_else(|| StoreError::Corrupt(format!("job {id} vanished during recovery")))?;
                    let chunks = queries::chunk_specs(connection, id)?;
                    let mut blob_sizes = HashMap::new();
                    for sha256 in named_blobs(&chunks) {
                        let size = blobs::size(connection, sha256)?.ok_or_else(|| {
                            StoreError::Corrupt(format!("job {id} names blob {sha256}, which is gone"))
                        })?;
                        blob_sizes.insert(sha256.to_owned(), size);
                    }
                    Ok((
                        row,
                        chunks,
                        blob_sizes,
                        queries::finished_chunks(connection, id)?,
                        queries::job_counts(connection, id)?,
                        accounts::job_money(connection, id)?,
                        queries::round_broadcast(connection, id)?,
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
            // A job admitted before a restart stays admitted, whatever the limits say now.
            let usage = Usage::of_job(&chunks, broadcast.as_ref());
            if let Some(owner) = row.owner {
                self.lock().hold(owner, usage);
            }
            self.activate(row, chunks.into(), blob_sizes, progress, finished, usage, broadcast);
        }
        Ok(())
    }

    /// Takes room for a job or a session of `usage` in `owner`'s limits of active work, or says which limit
    /// it would break. The room comes back when the reservation is dropped, unless it is kept: then
    /// [`Coordinator::activate`] (for a job) or the session holds it.
    pub fn reserve(&self, owner: u64, usage: Usage) -> Result<Reservation<'_>, String> {
        let config = &self.config;
        let mut core = self.lock();
        let current = core.usage.get(&owner).copied().unwrap_or_default();
        let mut after = current;
        after.add(usage);
        if after.jobs > config.max_active_jobs_per_account {
            return Err(format!(
                "you have {} jobs running, the most one account may have at once; wait for some to finish",
                current.jobs
            ));
        }
        if after.sessions > config.max_open_sessions_per_account {
            return Err(format!(
                "this account has {} sessions open, the most at once; close one first",
                current.sessions
            ));
        }
        if after.chunks > config.max_active_chunks_per_account {
            return Err(format!(
                "your running jobs have {} unfinished chunks and this one {}: at most {} may wait at once",
                current.chunks, usage.chunks, config.max_active_chunks_per_account
            ));
        }
        if after.input_bytes > config.max_active_input_bytes_per_account {
            return Err(format!(
                "your running jobs' inputs take {} and this one's {}: at most {} may wait at once",
                human_bytes(current.input_bytes),
                human_bytes(usage.input_bytes),
                human_bytes(config.max_active_input_bytes_per_account)
            ));
        }
        core.usage.insert(owner, after);
        Ok(Reservation { coordinator: self, owner, usage, kept: false })
    }

    /// Makes a durably stored job active and hands it to the scheduler; `usage` was reserved for it.
    #[allow(clippy::too_many_arguments)]
    pub fn activate(
        &self,
        row: JobRow,
        chunks: Arc<[ChunkRequest]>,
        blob_sizes: HashMap<String, u64>,
        progress: Progress,
        finished: Vec<u32>,
        usage: Usage,
        broadcast: Option<Bytes>,
    ) -> bool {
        // A round waits for its last shard: its slow ones get backups, unless its session said not to.
        let backups = row
            .session_round
            .is_some_and(|(session, _)| self.lock().sessions.get(&session).is_none_or(|live| live.backups));
        let params = JobParams {
            id: row.id,
            chunk_count: row.chunk_count,
            policy: ReplicationPolicy::new(row.replicas, row.quorum, row.max_retries),
            time_limit_ms: row.limits.time_limit_ms,
            memory_bytes: row.limits.memory_bytes,
            program: row.module.clone(),
            owner: row.owner.map(ledger::user).unwrap_or_default(),
            finished,
            chunk_blobs: chunk_blobs(&chunks),
            backups,
        };
        let mut blob_key = [0; 32];
        getrandom::fill(&mut blob_key).expect("the operating system provides random bytes");
        let job = Arc::new(ActiveJob {
            row,
            chunks,
            blob_sizes,
            blob_key,
            progress: watch::Sender::new(progress),
            usage,
            broadcast,
        });
        let mut core = self.lock();
        // A round whose session closed while it was stored was cancelled by the close: it does not run.
        if let Some((session, _)) = job.row.session_round
            && !core.sessions.contains_key(&session)
        {
            if let Some(owner) = job.row.owner {
                core.give_back(owner, usage);
            }
            return false;
        }
        core.jobs.insert(job.row.id, job);
        self.run(&mut core, Event::JobAdded(params));
        true
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
                    // A socket that just closed will send WorkerLeft, which requeues the replica.
                    post(core, worker, Outbound::Assign { job: active, chunk, replica });
                }
                Action::Revoke { worker, replica } => {
                    post(core, worker, Outbound::Revoke(replica));
                }
                Action::Disconnect { worker } => {
                    if let Some(outbox) = core.outboxes.remove(&worker) {
                        tracing::info!(worker, "closing a worker that stopped sending heartbeats");
                        let _ = outbox.try_send(Outbound::Close(format!(
                            "no heartbeat for more than {} ms: your leases were given to other workers",
                            self.config.lease_timeout_ms
                        )));
                    }
                }
                Action::StoreResult { job, chunk, canonical, validated, invalid, attempts, trust, .. } => {
                    self.settle_result(core, job, chunk, canonical, &validated, &invalid, attempts, trust);
                }
                Action::StoreFailure { job, chunk, replica, reason, attempts, .. } => {
                    self.settle_failure(core, job, chunk, replica, reason, attempts);
                }
                Action::ReplicaFailed { job, chunk, replica, worker } => {
                    tracing::debug!(job, chunk, replica, worker, "a replica failed; the chunk will be retried");
                }
                Action::ReplicaInvalid { job, chunk, replica, volunteer } => {
                    self.record_invalid(job, chunk, replica, volunteer);
                }
                Action::Ignored { replica, reason } => {
                    tracing::debug!(replica, ?reason, "ignored a report for a replica the sender does not hold");
                }
                Action::JobFinished { job } => {
                    tracing::debug!(job, "every chunk has a final outcome");
                }
                Action::WakeAt { at } => self.wake_at(core, at),
            }
        }
    }

    /// Ticks the scheduler at `at` (a straggler then becomes due for a backup), unless a wake-up at or
    /// before it is already set.
    fn wake_at(&self, core: &mut Core, at: Millis) {
        if core.next_wake.is_some_and(|set| set <= at && set >= self.now()) {
            return;
        }
        core.next_wake = Some(at);
        let Some(coordinator) = self.this.upgrade() else { return };
        let delay = std::time::Duration::from_millis(at.0.saturating_sub(self.now().0));
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut core = coordinator.lock();
            if core.next_wake == Some(at) {
                core.next_wake = None;
            }
            coordinator.run(&mut core, Event::Tick);
        });
    }

    /// A fresh id for a worker connection, taken when its socket opens (before its hello).
    pub fn new_worker_id(&self) -> WorkerId {
        let mut core = self.lock();
        let worker = core.next_worker;
        core.next_worker += 1;
        worker
    }

    /// Registers worker `worker`'s connection. The welcome message goes out before any assignment.
    pub fn connect(&self, worker: WorkerId, hello: &Hello, identity: WorkerIdentity, outbox: mpsc::Sender<Outbound>) {
        let (slots, max_memory_bytes) = (hello.slots, hello.max_memory_bytes.unwrap_or(u64::MAX));
        let max_prefetch_per_slot =
            hello.prefetch_per_slot.unwrap_or(self.config.prefetch_per_slot).min(self.config.max_prefetch_per_slot);
        let mut core = self.lock();
        let _ = outbox.try_send(Outbound::Welcome(Welcome {
            worker_id: worker,
            heartbeat_interval_ms: self.config.heartbeat_interval_ms,
            lease_timeout_ms: self.config.lease_timeout_ms,
            prefetch_per_slot: max_prefetch_per_slot,
        }));
        core.outboxes.insert(worker, outbox);
        let WorkerIdentity { volunteer, trust, token, site } = identity;
        core.worker_volunteers.insert(worker, volunteer.clone());
        if let Some(token) = token {
            core.worker_tokens.insert(worker, token);
        }
        if let Some(site) = site {
            core.worker_sites.insert(worker, site);
        }
        let blobs = blob_names(&hello.blobs);
        self.run(
            &mut core,
            Event::WorkerJoined { worker, volunteer, trust, slots, max_memory_bytes, max_prefetch_per_slot, blobs },
        );
    }

    /// The worker's blob cache gained and lost blobs.
    pub fn cached(&self, worker: WorkerId, added: &[String], evicted: &[String]) {
        let (added, evicted) = (blob_names(added), blob_names(evicted));
        self.run(&mut self.lock(), Event::WorkerBlobs { worker, added, evicted });
    }

    /// The worker's socket closed: everything it held is requeued at once.
    pub fn disconnect(&self, worker: WorkerId) {
        let mut core = self.lock();
        core.outboxes.remove(&worker);
        core.worker_tokens.remove(&worker);
        core.worker_sites.remove(&worker);
        core.worker_volunteers.remove(&worker);
        self.run(&mut core, Event::WorkerLeft { worker });
    }

    /// An API token was revoked: the workers that connected with it are told so and closed (their
    /// sockets then close and their replicas are requeued).
    pub fn token_revoked(&self, token: u64) {
        let mut core = self.lock();
        let workers: Vec<WorkerId> =
            core.worker_tokens.iter().filter(|(_, held)| **held == token).map(|(worker, _)| *worker).collect();
        for worker in workers {
            core.worker_tokens.remove(&worker);
            if let Some(outbox) = core.outboxes.remove(&worker) {
                tracing::info!(worker, token, "closing a worker whose API token was revoked");
                let _ = outbox.try_send(Outbound::Close("the API token this worker uses was revoked".to_owned()));
            }
        }
    }

    /// A site's key was revoked: its visitors' workers are told so and closed (their sockets then close
    /// and their replicas are requeued); their hellos are refused from now on (see `identity`).
    pub fn site_revoked(&self, site: u64) {
        let mut core = self.lock();
        let workers: Vec<WorkerId> =
            core.worker_sites.iter().filter(|(_, held)| **held == site).map(|(worker, _)| *worker).collect();
        for worker in workers {
            core.worker_sites.remove(&worker);
            if let Some(outbox) = core.outboxes.remove(&worker) {
                tracing::info!(worker, site, "closing a site visitor's worker whose site key was revoked");
                let _ = outbox.try_send(Outbound::Close(SITE_UNAVAILABLE.to_owned()));
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
            let volunteer = core.worker_volunteers.get(&worker).cloned().unwrap_or_default();
            let bytes = kept.output.total_bytes();
            let held = core.held_report_bytes.get(&volunteer).copied().unwrap_or(0);
            if held.saturating_add(bytes) > self.config.max_held_report_bytes_per_volunteer {
                // Its outputs waiting for other replicas fill what one volunteer may have held: this one
                // goes to another volunteer, uncounted, rather than into memory.
                tracing::warn!(worker, replica, %volunteer, held, "a volunteer's waiting reports are at their limit");
                self.run(&mut core, Event::ReplicaReleased { worker, replica });
                return;
            }
            *core.held_report_bytes.entry(volunteer.clone()).or_default() += bytes;
            core.reports
                .entry((lease.job, lease.chunk))
                .or_default()
                .insert(replica, HeldReport { volunteer, report: kept });
        }
        self.run(&mut core, event);
    }

    /// The largest frame `worker` may send now: room for a valid report of every replica it holds, and
    /// for the small messages of the protocol. Read as each frame from the worker begins.
    pub fn frame_limit(&self, worker: WorkerId) -> u64 {
        let core = self.lock();
        core.scheduler.held_by_job(worker).fold(report_limits::FRAME_BASE_BYTES, |limit, (job, held)| {
            let bound = core.jobs.get(&job).map_or(0, |job| report_limits::report_bound(&job.row.limits));
            limit.saturating_add(bound.saturating_mul(u64::from(held)))
        })
    }

    /// Expires silent workers and overdue replicas.
    pub fn tick(&self) {
        let mut core = self.lock();
        self.run(&mut core, Event::Tick);
        let Core { blob_fetches, scheduler, .. } = &mut *core;
        blob_fetches.retain(|(replica, _), _| scheduler.lease(*replica).is_some());
        self.close_idle_sessions(&core);
    }

    /// Cancels a job: its unfinished chunks will not run and its escrow is refunded. Returns false if it
    /// had already finished or stopped.
    pub async fn cancel(&self, job: u64, reason: &str) -> Result<bool, StoreError> {
        if !self.store.cancel_job(job, reason.to_owned(), unix_ms()).await? {
            return Ok(false);
        }
        self.stopped(job, reason);
        Ok(true)
    }

    /// Stops a job from the store's writer thread (where nothing may wait): the store first, then memory.
    fn stop(&self, job: u64, reason: String) {
        let coordinator = self.this.clone();
        self.store.transact_then(
            {
                let reason = reason.clone();
                move |connection| writes::cancel_job(connection, job, &reason, unix_ms())
            },
            move |stopped| match stopped {
                Ok(true) => {
                    if let Some(coordinator) = coordinator.upgrade() {
                        coordinator.stopped(job, &reason);
                    }
                }
                // Stopped or finished already in the store: make sure memory agrees.
                Ok(false) => {
                    if let Some(coordinator) = coordinator.upgrade() {
                        coordinator.stopped(job, &reason);
                    }
                }
                Err(error) => tracing::error!(job, %error, "could not stop a job whose budget is spent"),
            },
        );
    }

    /// A job was durably stopped: forget it, and revoke its replicas.
    fn stopped(&self, job: u64, reason: &str) {
        let mut core = self.lock();
        if let Some(active) = core.forget_job(job) {
            active.progress.send_modify(|progress| progress.cancelled = true);
            if let Some((session, round)) = active.row.session_round {
                let message = format!("round {round} stopped: {reason}");
                core.tell_session(session, SessionServerMessage::Error { message, round: Some(round) });
            }
        }
        let held: Vec<(u64, u32)> = core.reports.keys().filter(|(held_job, _)| *held_job == job).copied().collect();
        for (job, chunk) in held {
            core.take_reports(job, chunk);
        }
        self.run(&mut core, Event::JobCancelled { job });
    }

    /// Whether `capability` lets its bearer fetch blob `sha256` now: it was issued for a replica that is
    /// still leased and whose chunk names that blob (only the worker holding the lease was sent it), and
    /// has fetched it fewer than [`MAX_BLOB_FETCHES`] times.
    pub fn blob_access(&self, sha256: &str, capability: &str) -> bool {
        let Some(replica) = capability.split_once('.').and_then(|(replica, _)| replica.parse::<u64>().ok()) else {
            return false;
        };
        let mut core = self.lock();
        let Some(lease) = core.scheduler.lease(replica) else { return false };
        let Some(job) = core.jobs.get(&lease.job) else { return false };
        let expected = job.blob_capability(replica, sha256);
        // Compared in constant time: the capability is a secret.
        let same = expected.len() == capability.len()
            && expected.bytes().zip(capability.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        if !(same && job.chunk_needs_blob(lease.chunk, sha256)) {
            return false;
        }
        let fetches = core.blob_fetches.entry((replica, sha256.to_owned())).or_default();
        *fetches += 1;
        *fetches <= MAX_BLOB_FETCHES
    }

    /// The count of bytes of messages sent to workers, which their sockets' writers add to.
    pub fn bytes_to_workers(&self) -> &std::sync::atomic::AtomicU64 {
        &self.bytes_to_workers
    }

    /// Counts bytes of a blob sent to a worker.
    pub fn blob_served(&self, bytes: u64) {
        self.blob_bytes_served.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// The job if it is still active.
    pub fn active_job(&self, job: u64) -> Option<Arc<ActiveJob>> {
        self.lock().jobs.get(&job).cloned()
    }
}
