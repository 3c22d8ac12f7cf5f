//! The scheduling core of Distributivecom: an IO-free state machine over jobs, chunks, replicas, leases and
//! validation by replication.
//!
//! The coordinator feeds it [`Event`]s (a worker joined, a replica finished, time passed) together with the
//! current time, and carries out the [`Action`]s it returns (send an assignment, store a validated result
//! and pay for it, close a silent worker). Sockets, SQL, clocks and randomness stay outside (the random
//! spot checks come from a seeded generator in [`Config`]), so tests drive it step by step.
//!
//! Vocabulary (after BOINC): a *job* has *chunks*; a chunk is sent out as *replicas*, each held by one
//! worker under a *lease*, on behalf of a *volunteer* (an account or an anonymous identity; one volunteer
//! may run several workers). A replica moves `Unsent -> InProgress(lease) -> Over(outcome)`, the outcome
//! being a *result* (the program ran: its digest is compared with other replicas'), an *error* (the
//! volunteer could not run it: timeout, start failure), or *lost* (lease lapsed, connection closed).
//!
//! Modules: `dispatch` (which replica goes where, leases and expiry), `validate` (reports, quorum,
//! retries, trust), `state` (the records).
//!
//! Architecture Invariant: this crate does no IO, reads no clock and cannot fail: every event is valid in
//! every state (stale or forged ones become [`Action::Ignored`]).

mod dispatch;
mod state;
mod validate;
mod waiting;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

pub use state::{JobProgress, Lease, Stats};
pub use waiting::Waiting;

/// A volunteer whose last this-many replicas all came to nothing on its side (errors, invalid reports) is
/// on probation: each of its workers holds one replica at a time until it returns a result.
pub const PROBATION_AFTER: u32 = 3;

pub type JobId = u64;
pub type ChunkIndex = u32;
pub type ReplicaId = u64;
pub type WorkerId = u64;
/// Who volunteers a worker: `user:<id>` or `volunteer:<id>`. Replicas of one chunk that must agree go
/// to distinct volunteers.
pub type Volunteer = String;
/// The SHA-256 of a replica's result (status, outputs, work units): equal digests mean equal results.
pub type Digest = [u8; 32];

/// A point on a monotonic clock, in milliseconds from an arbitrary origin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub u64);

impl Millis {
    pub fn plus(self, milliseconds: u64) -> Millis {
        Millis(self.0.saturating_add(milliseconds))
    }
}

/// Settings of the whole scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// A worker silent for longer than this loses all its leases and is disconnected.
    pub lease_timeout_ms: u64,
    /// Replicas queued at a worker beyond one per slot, for a job whose chunk time is not known yet.
    pub prefetch_per_slot: u32,
    /// Once a job's chunk time is known, a worker holds about this much of the job's work per slot beyond
    /// what runs (within the prefetch the worker asked for): enough to hide the round trip between
    /// chunks, without hoarding long chunks that other volunteers could run.
    pub prefetch_buffer_us: u64,
    /// Adaptive replication: a volunteer with at least this many validated replicas in a row may be
    /// trusted to run a chunk alone.
    pub trust_after: u32,
    /// Seeds the generator behind the random choice between trusting and spot-checking.
    pub seed: u64,
    /// Affinity: a fresh chunk whose blobs another connected worker holds (one that could run it: with
    /// slots, enough memory, the right owner, not on probation) waits for such a worker, which takes it as
    /// soon as it has room, rather than going to a worker that would have to fetch them; but for at most
    /// this long after a worker was first refused it. Past that, any capable worker takes any of the job's
    /// fresh chunks, still preferring the ones whose blobs it holds, until they run out.
    pub affinity_wait_ms: u64,
    /// Backups: once this share (in percent) of a job's chunks are finished, every chunk still out gets
    /// one backup replica on another volunteer (for jobs with backups).
    pub backup_when_done_percent: u32,
    /// Backups: a replica out this many times the job's typical chunk time (a moving average of its
    /// results) gets its chunk a backup replica.
    pub backup_slowness: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            lease_timeout_ms: 5_000,
            prefetch_per_slot: 2,
            prefetch_buffer_us: 20_000,
            trust_after: 10,
            seed: 1,
            affinity_wait_ms: 100,
            backup_when_done_percent: 90,
            backup_slowness: 3,
        }
    }
}

/// How a job's chunks are validated and how hard the scheduler tries (BOINC's `target_nresults`,
/// `min_quorum`, `max_error_results` and `max_total_results` in one place).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicationPolicy {
    /// Replicas sent out for each chunk at first, to distinct volunteers.
    pub target_replicas: u32,
    /// Results with the same digest needed to accept one.
    pub min_quorum: u32,
    /// Volunteer errors (timeouts, programs that could not start) after which the chunk fails.
    pub max_error_replicas: u32,
    /// Replicas of any kind, lost ones included, after which the chunk fails: this bounds chunks that
    /// crash or hang every volunteer they reach, and replicas that keep disagreeing.
    pub max_total_replicas: u32,
    /// Only the job owner's own workers run it (a quorum of one is only allowed there).
    pub owner_only: bool,
}

impl ReplicationPolicy {
    /// `replicas` replicas per chunk, `quorum` of which must agree; `max_retries` volunteer errors are
    /// retried. Disagreements may bring in as many extra replicas as the first round had.
    pub fn new(replicas: u32, quorum: u32, max_retries: u32) -> ReplicationPolicy {
        let replicas = replicas.max(1);
        let max_error_replicas = max_retries.saturating_add(1);
        ReplicationPolicy {
            target_replicas: replicas,
            min_quorum: quorum.clamp(1, replicas),
            max_error_replicas,
            max_total_replicas: replicas.saturating_mul(2).saturating_add(max_error_replicas).saturating_add(4),
            owner_only: replicas == 1,
        }
    }
}

/// A job as the scheduler sees it: only counts and policies, never inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobParams {
    pub id: JobId,
    pub chunk_count: u32,
    pub policy: ReplicationPolicy,
    /// The job's per-run time limit; with the lease timeout it bounds how long a replica may stay out.
    pub time_limit_ms: u64,
    /// The job's memory limit: only workers that can offer this much get its chunks.
    pub memory_bytes: u64,
    /// The program the job runs. Chunks of the same program tend to take similar times, so a new job
    /// starts from what the program's earlier jobs measured.
    pub program: String,
    /// The volunteer key of the job's owner (for owner-only jobs).
    pub owner: Volunteer,
    /// Chunks that already have a stored final result (after a restart).
    pub finished: Vec<ChunkIndex>,
    /// The blobs each chunk reads, one list per chunk; empty if no chunk reads any.
    pub chunk_blobs: Vec<Vec<BlobName>>,
    /// Whether slow chunks get backup replicas (a session's rounds, which wait for their last chunk).
    pub backups: bool,
}

/// A blob, by its hash: workers that hold a chunk's blobs are preferred for it (affinity).
pub type BlobName = std::sync::Arc<str>;

/// The most blobs the scheduler remembers per worker; what a worker announces beyond is ignored.
pub const MAX_WORKER_BLOBS: usize = 256;

/// What a worker reported about one replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Report {
    /// The program ran to an end that any correct worker reproduces (an exit status, a trap, the memory or
    /// work limit): its digest takes part in validation.
    Result { digest: Digest, work_units: u64 },
    /// The volunteer could not give a result (time limit, the program could not start): retried on another
    /// volunteer. It counts against the chunk's retries once per volunteer.
    Error,
    /// The report broke the job's limits (outputs larger than the job allows): no honest worker sends one.
    /// It is worth nothing, its volunteer loses its run of validated results, and the chunk goes to
    /// another volunteer.
    Invalid,
}

/// Something that happened at the edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A job was durably accepted (or recovered after a restart).
    JobAdded(JobParams),
    JobCancelled {
        job: JobId,
    },
    /// A worker connected for `volunteer`, whose current run of validated replicas is `trust`. It runs
    /// `slots` replicas at once, each with at most `max_memory_bytes`, and wants at most
    /// `max_prefetch_per_slot` replicas queued per slot.
    WorkerJoined {
        worker: WorkerId,
        volunteer: Volunteer,
        trust: u32,
        slots: u32,
        max_memory_bytes: u64,
        max_prefetch_per_slot: u32,
        /// The blobs it holds (at most [`MAX_WORKER_BLOBS`] are kept).
        blobs: Vec<BlobName>,
    },
    /// The worker now also holds `added` and no longer holds `evicted`.
    WorkerBlobs {
        worker: WorkerId,
        added: Vec<BlobName>,
        evicted: Vec<BlobName>,
    },
    WorkerSlots {
        worker: WorkerId,
        slots: u32,
    },
    WorkerLeft {
        worker: WorkerId,
    },
    Heartbeat {
        worker: WorkerId,
    },
    /// The worker hands back a replica it has not started.
    ReplicaReleased {
        worker: WorkerId,
        replica: ReplicaId,
    },
    /// The worker reports a finished replica; `compute_us` is how long it ran (it tunes how much of the
    /// job workers queue).
    ReplicaReported {
        worker: WorkerId,
        replica: ReplicaId,
        report: Report,
        compute_us: u64,
    },
    /// Time passed: expire silent workers and overdue replicas.
    Tick,
}

/// A replica whose result the accepted result's quorum included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validated {
    pub replica: ReplicaId,
    pub volunteer: Volunteer,
    pub work_units: u64,
}

/// A volunteer's replica was validated or contradicted by a quorum, and its run of validated replicas is
/// now `run` (the trust rule: one more for a validated replica, back to 0 for an invalid one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustChange {
    pub volunteer: Volunteer,
    pub valid: bool,
    pub run: u32,
}

/// Why a chunk failed without an accepted result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureReason {
    /// Volunteers kept failing to run it (the last error's replica is kept).
    Errors,
    /// Its replicas kept disagreeing: this many different results and no quorum.
    Disagreement { distinct_results: u32 },
    /// Its replicas were all lost (no report ever came back).
    Lost,
}

/// Something the edge must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this replica of this chunk to the worker.
    Assign { worker: WorkerId, replica: ReplicaId, job: JobId, chunk: ChunkIndex },
    /// Send a [`Event::Tick`] at `at` (or soon after): a replica then becomes a straggler to back up.
    WakeAt { at: Millis },
    /// Tell the worker to drop the replica without reporting it.
    Revoke { worker: WorkerId, replica: ReplicaId },
    /// Close the worker's connection: it went silent and its leases are gone.
    Disconnect { worker: WorkerId },
    /// The chunk's result is accepted: store the output of `canonical`, pay the `validated` replicas, and
    /// record that the `invalid` volunteers returned something else. `reported` lists every replica of the
    /// chunk whose report the edge may still hold.
    StoreResult {
        job: JobId,
        chunk: ChunkIndex,
        canonical: ReplicaId,
        validated: Vec<Validated>,
        invalid: Vec<Volunteer>,
        reported: Vec<ReplicaId>,
        attempts: u32,
        /// Whether distinct volunteers agreed on the result (a quorum of at least 2). Only such results
        /// change reputations: a result nobody checked (an owner-only job's, a trusted volunteer's alone)
        /// proves nothing about its volunteer.
        checked: bool,
        /// What the result did to its volunteers' runs of validated replicas (empty unless `checked`):
        /// the scheduler alone applies the trust rule, and the store records its outcome.
        trust: Vec<TrustChange>,
    },
    /// A volunteer sent a report that broke the job's limits: record it as invalid (its run of validated
    /// results is over). Nothing of the report is kept.
    ReplicaInvalid { job: JobId, chunk: ChunkIndex, replica: ReplicaId, volunteer: Volunteer },
    /// The chunk failed for good: store a failure (with the output of `replica`, if any).
    StoreFailure {
        job: JobId,
        chunk: ChunkIndex,
        replica: Option<ReplicaId>,
        reason: FailureReason,
        reported: Vec<ReplicaId>,
        attempts: u32,
    },
    /// A replica was lost or could not be run; its chunk goes back in the queue for another volunteer.
    ReplicaFailed { job: JobId, chunk: ChunkIndex, replica: ReplicaId, worker: WorkerId },
    /// Every chunk of the job has a final outcome; the edge may drop the job's inputs.
    JobFinished { job: JobId },
    /// An event referred to a replica the sender does not hold; nothing changed.
    Ignored { replica: ReplicaId, reason: IgnoredReason },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IgnoredReason {
    /// No such replica is in flight: it finished, expired, was revoked, or never existed.
    NotInFlight,
    /// The replica is leased to another worker.
    NotLeasedToSender,
}

/// The scheduler. See the crate documentation.
#[derive(Debug)]
pub struct Scheduler {
    config: Config,
    now: Millis,
    next_replica: ReplicaId,
    jobs: HashMap<JobId, state::Job>,
    /// Jobs that may have chunks waiting, served round-robin so a small job never waits behind a big one.
    ring: VecDeque<JobId>,
    workers: BTreeMap<WorkerId, state::Worker>,
    replicas: BTreeMap<ReplicaId, state::Replica>,
    /// The replicas in flight by deadline, so that expiry looks only at the overdue ones.
    deadlines: BTreeSet<(Millis, ReplicaId)>,
    /// The latest chunk-time estimate of each program, for its next jobs.
    program_chunk_time_us: HashMap<String, u64>,
    /// Each volunteer's run of validated replicas.
    trust: HashMap<Volunteer, u32>,
    /// Each volunteer's run of replicas that came to nothing on its side (errors, invalid reports): at
    /// [`PROBATION_AFTER`] its workers get one replica at a time until it returns a result again.
    error_runs: HashMap<Volunteer, u32>,
    /// xorshift64* state for the trust-or-spot-check draws.
    random: u64,
    /// How many connected workers hold each blob.
    blob_holders: HashMap<BlobName, u32>,
    /// Backup replicas sent since the start.
    backups_sent: u64,
}

/// One worker fewer holds `blob`.
pub(crate) fn release_holder(holders: &mut HashMap<BlobName, u32>, blob: &BlobName) {
    if let Some(count) = holders.get_mut(blob) {
        *count -= 1;
        if *count == 0 {
            holders.remove(blob);
        }
    }
}

impl Scheduler {
    /// A scheduler whose replica ids start at `first_replica_id`. The edge makes ids unique across restarts,
    /// so that a result for a replica of an earlier run can never match a new lease.
    pub fn new(config: Config, first_replica_id: ReplicaId) -> Scheduler {
        Scheduler {
            config,
            now: Millis(0),
            next_replica: first_replica_id,
            jobs: HashMap::new(),
            ring: VecDeque::new(),
            workers: BTreeMap::new(),
            replicas: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            program_chunk_time_us: HashMap::new(),
            trust: HashMap::new(),
            error_runs: HashMap::new(),
            random: config.seed.max(1),
            blob_holders: HashMap::new(),
            backups_sent: 0,
        }
    }

    pub fn config(&self) -> Config {
        self.config
    }

    /// Feeds one event that happened at `now` and appends the resulting actions to `actions`.
    pub fn handle(&mut self, now: Millis, event: Event, actions: &mut Vec<Action>) {
        // The edge's clock is monotonic, but never let a late caller move time backwards.
        self.now = self.now.max(now);
        match event {
            Event::JobAdded(params) => self.add_job(params, actions),
            Event::JobCancelled { job } => self.cancel_job(job, actions),
            Event::WorkerJoined { worker, volunteer, trust, slots, max_memory_bytes, max_prefetch_per_slot, blobs } => {
                self.trust.insert(volunteer.clone(), trust);
                let state = state::Worker::new(volunteer, slots, max_memory_bytes, max_prefetch_per_slot, self.now);
                self.remove_worker(worker, actions);
                self.workers.insert(worker, state);
                self.worker_blobs(worker, blobs, Vec::new());
                self.fill_worker(worker, actions);
            }
            Event::WorkerBlobs { worker, added, evicted } => self.worker_blobs(worker, added, evicted),
            Event::WorkerSlots { worker, slots } => {
                if let Some(state) = self.workers.get_mut(&worker) {
                    state.slots = slots;
                    state.last_seen = self.now;
                    self.fill_worker(worker, actions);
                }
            }
            Event::WorkerLeft { worker } => {
                self.remove_worker(worker, actions);
                self.fill_all(actions);
            }
            Event::Heartbeat { worker } => {
                if let Some(state) = self.workers.get_mut(&worker) {
                    state.last_seen = self.now;
                }
            }
            Event::ReplicaReleased { worker, replica } => {
                if let Some(held) = self.take_replica(worker, replica, actions) {
                    // Handing back unstarted work is not the chunk's fault: it does not count as an attempt.
                    self.unissue(&held);
                    self.fill_all(actions);
                }
            }
            Event::ReplicaReported { worker, replica, report, compute_us } => {
                self.report(worker, replica, report, compute_us, actions);
            }
            Event::Tick => self.expire(actions),
        }
    }

    /// Records the blobs a worker gained and lost, within [`MAX_WORKER_BLOBS`].
    fn worker_blobs(&mut self, worker: WorkerId, added: Vec<BlobName>, evicted: Vec<BlobName>) {
        let Some(state) = self.workers.get_mut(&worker) else { return };
        for blob in evicted {
            if state.blobs.remove(&blob) {
                release_holder(&mut self.blob_holders, &blob);
            }
        }
        for blob in added {
            if state.blobs.len() >= MAX_WORKER_BLOBS {
                break;
            }
            if state.blobs.insert(blob.clone()) {
                *self.blob_holders.entry(blob).or_default() += 1;
            }
        }
    }

    /// A convenience for tests and callers that want the actions as a fresh vector.
    pub fn handle_collect(&mut self, now: Millis, event: Event) -> Vec<Action> {
        let mut actions = Vec::new();
        self.handle(now, event, &mut actions);
        actions
    }

    fn add_job(&mut self, params: JobParams, actions: &mut Vec<Action>) {
        if self.jobs.contains_key(&params.id) {
            return;
        }
        let mut job = state::Job::new(&params);
        job.chunk_time_us = self.program_chunk_time_us.get(&params.program).copied();
        let finished = job.unfinished == 0;
        self.jobs.insert(params.id, job);
        if finished {
            self.jobs.remove(&params.id);
            actions.push(Action::JobFinished { job: params.id });
            return;
        }
        // A new job goes to the front of the ring: it gets the next free slot, which keeps small interactive
        // rounds fast while a big job is running. Round-robin then shares the workers fairly.
        self.ring.push_front(params.id);
        self.fill_all(actions);
    }

    fn cancel_job(&mut self, job: JobId, actions: &mut Vec<Action>) {
        if self.jobs.remove(&job).is_none() {
            return;
        }
        let revoked: Vec<(ReplicaId, WorkerId)> = self
            .replicas
            .iter()
            .filter(|(_, replica)| replica.job == job)
            .map(|(id, replica)| (*id, replica.worker))
            .collect();
        for (replica, worker) in revoked {
            self.unhold_replica(replica);
            actions.push(Action::Revoke { worker, replica });
        }
        self.fill_all(actions);
    }

    /// Records a replica sent out: in flight, by deadline, at its worker and among its job's volunteers.
    /// Every replica enters flight here and leaves it in [`Scheduler::unhold_replica`].
    fn hold_replica(&mut self, replica: ReplicaId, record: state::Replica) {
        self.deadlines.insert((record.deadline, replica));
        if let Some(state) = self.workers.get_mut(&record.worker) {
            state.hold(replica, record.job);
        }
        if let Some(job) = self.jobs.get_mut(&record.job) {
            job.volunteer_holds(&record.volunteer);
        }
        self.replicas.insert(replica, record);
    }

    /// Forgets a replica in flight everywhere but in its job's chunk records (which the caller updates);
    /// its job's count of volunteers follows here.
    fn unhold_replica(&mut self, replica: ReplicaId) -> Option<state::Replica> {
        let record = self.replicas.remove(&replica)?;
        self.deadlines.remove(&(record.deadline, replica));
        if let Some(state) = self.workers.get_mut(&record.worker) {
            state.unhold(replica, record.job);
        }
        if let Some(job) = self.jobs.get_mut(&record.job) {
            job.volunteer_released(&record.volunteer);
        }
        Some(record)
    }

    /// Removes `replica` from flight if `worker` holds it; otherwise records why the event was ignored.
    fn take_replica(
        &mut self,
        worker: WorkerId,
        replica: ReplicaId,
        actions: &mut Vec<Action>,
    ) -> Option<state::Replica> {
        let reason = match self.replicas.get(&replica) {
            None => IgnoredReason::NotInFlight,
            Some(held) if held.worker != worker => IgnoredReason::NotLeasedToSender,
            Some(_) => {
                let held = self.unhold_replica(replica)?;
                if let Some(state) = self.workers.get_mut(&worker) {
                    state.last_seen = self.now;
                }
                if let Some(job) = self.jobs.get_mut(&held.job) {
                    job.remove_replica(held.chunk, replica);
                }
                return Some(held);
            }
        };
        actions.push(Action::Ignored { replica, reason });
        None
    }

    /// Counts down the job's unfinished chunks after one became final.
    fn finish_chunk(&mut self, job_id: JobId, actions: &mut Vec<Action>) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        job.unfinished -= 1;
        if job.unfinished == 0 {
            self.jobs.remove(&job_id);
            actions.push(Action::JobFinished { job: job_id });
            return;
        }
        self.back_up_the_last(job_id);
    }

    /// Puts a chunk in its job's queue of chunks under way (once) if it needs another replica now.
    fn requeue_if_needed(&mut self, job_id: JobId, chunk: ChunkIndex) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let record = &mut job.chunks[chunk as usize];
        if record.needs_replica() && !record.queued {
            record.queued = true;
            job.under_way.push_back(chunk);
            if !job.in_ring {
                job.in_ring = true;
                self.ring.push_back(job_id);
            }
        }
    }

    /// The next draw of the scheduler's generator, uniform in `0..100`.
    fn percent_draw(&mut self) -> u64 {
        // xorshift64*: deterministic for a given seed, which keeps tests reproducible.
        self.random ^= self.random >> 12;
        self.random ^= self.random << 25;
        self.random ^= self.random >> 27;
        self.random.wrapping_mul(0x2545_F491_4F6C_DD1D) % 100
    }
}

#[cfg(test)]
mod tests;
