//! The scheduling core of Distributivecom: an IO-free state machine over jobs, chunks, replicas and leases.
//!
//! The coordinator feeds it [`Event`]s (a worker joined, a replica finished, time passed) together with the
//! current time, and carries out the [`Action`]s it returns (send an assignment, store a result, close a
//! silent worker). Sockets, SQL and clocks stay outside, so tests drive it step by step with a fake clock.
//!
//! Vocabulary (after BOINC): a *job* has *chunks*; a chunk is sent out as *replicas*, each held by one
//! worker under a *lease*. A replica moves `Unsent -> InProgress(lease) -> Over(outcome)`.
//!
//! Architecture Invariant: this crate does no IO, reads no clock and cannot fail: every event is valid in
//! every state (stale or forged ones become [`Action::Ignored`]).

mod dispatch;
mod state;

use std::collections::{BTreeMap, HashMap, VecDeque};

pub use state::{JobProgress, Stats};

pub type JobId = u64;
pub type ChunkIndex = u32;
pub type ReplicaId = u64;
pub type WorkerId = u64;

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
}

impl Default for Config {
    fn default() -> Self {
        Config { lease_timeout_ms: 5_000, prefetch_per_slot: 2, prefetch_buffer_us: 20_000 }
    }
}

/// How hard the scheduler tries before a chunk is given up (BOINC's `max_error_results` and
/// `max_total_results`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Failed replicas (bad exit, trap, limit exceeded) after which the chunk is failed.
    pub max_error_replicas: u32,
    /// Replicas of any kind, lost ones included, after which the chunk is abandoned. This bounds chunks that
    /// crash or hang every volunteer they reach.
    pub max_total_replicas: u32,
}

impl RetryPolicy {
    /// A chunk may fail `max_retries + 1` times; lost replicas get a few more chances on top.
    pub fn with_max_retries(max_retries: u32) -> RetryPolicy {
        let max_error_replicas = max_retries.saturating_add(1);
        RetryPolicy { max_error_replicas, max_total_replicas: max_error_replicas.saturating_add(5) }
    }
}

/// A job as the scheduler sees it: only counts and policies, never inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobParams {
    pub id: JobId,
    pub chunk_count: u32,
    pub policy: RetryPolicy,
    /// The job's per-run time limit; with the lease timeout it bounds how long a replica may stay out.
    pub time_limit_ms: u64,
    /// The job's memory limit: only workers that can offer this much get its chunks.
    pub memory_bytes: u64,
    /// The program the job runs. Chunks of the same program tend to take similar times, so a new job
    /// starts from what the program's earlier jobs measured.
    pub program: String,
    /// Chunks that already have a stored final result (after a restart).
    pub finished: Vec<ChunkIndex>,
}

/// Something that happened at the edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A job was durably accepted (or recovered after a restart).
    JobAdded(JobParams),
    JobCancelled {
        job: JobId,
    },
    /// A worker connected. It runs `slots` replicas at once, each with at most `max_memory_bytes`, and
    /// wants at most `max_prefetch_per_slot` replicas queued per slot.
    WorkerJoined {
        worker: WorkerId,
        slots: u32,
        max_memory_bytes: u64,
        max_prefetch_per_slot: u32,
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
    /// The worker reports a finished replica; `success` means it exited with status 0, `compute_us` is how
    /// long it ran (it tunes how much of the job workers queue).
    ReplicaReported {
        worker: WorkerId,
        replica: ReplicaId,
        success: bool,
        compute_us: u64,
    },
    /// Time passed: expire silent workers and overdue replicas.
    Tick,
}

/// The final outcome of a chunk whose result the edge must store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkOutcome {
    Succeeded,
    Failed,
}

/// Something the edge must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this replica of this chunk to the worker.
    Assign { worker: WorkerId, replica: ReplicaId, job: JobId, chunk: ChunkIndex },
    /// Tell the worker to drop the replica without reporting it.
    Revoke { worker: WorkerId, replica: ReplicaId },
    /// Close the worker's connection: it went silent and its leases are gone.
    Disconnect { worker: WorkerId },
    /// The report of `replica` is the chunk's final result: store its output.
    StoreResult { job: JobId, chunk: ChunkIndex, replica: ReplicaId, outcome: ChunkOutcome, attempts: u32 },
    /// The chunk's replicas were all lost (no report ever came back): store a failure without output.
    StoreAbandoned { job: JobId, chunk: ChunkIndex, attempts: u32 },
    /// A replica failed and its chunk goes back in the queue for another volunteer.
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
    /// Jobs that may have unsent chunks, served round-robin so a small job never waits behind a big one.
    ring: VecDeque<JobId>,
    workers: BTreeMap<WorkerId, state::Worker>,
    replicas: BTreeMap<ReplicaId, state::Replica>,
    /// The latest chunk-time estimate of each program, for its next jobs.
    program_chunk_time_us: HashMap<String, u64>,
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
            program_chunk_time_us: HashMap::new(),
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
            Event::WorkerJoined { worker, slots, max_memory_bytes, max_prefetch_per_slot } => {
                let state = state::Worker::new(slots, max_memory_bytes, max_prefetch_per_slot, self.now);
                self.workers.insert(worker, state);

                self.fill_worker(worker, actions);
            }
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
                    self.requeue(held, false, actions);
                    self.fill_all(actions);
                }
            }
            Event::ReplicaReported { worker, replica, success, compute_us } => {
                self.report(worker, replica, success, compute_us, actions);
            }
            Event::Tick => self.expire(actions),
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
            self.replicas.remove(&replica);
            if let Some(state) = self.workers.get_mut(&worker) {
                state.in_flight.remove(&replica);
            }
            actions.push(Action::Revoke { worker, replica });
        }
        self.fill_all(actions);
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
                let held = self.replicas.remove(&replica)?;
                if let Some(state) = self.workers.get_mut(&worker) {
                    state.in_flight.remove(&replica);
                    state.last_seen = self.now;
                }
                if let Some(job) = self.jobs.get_mut(&held.job) {
                    job.in_flight -= 1;
                }
                return Some(held);
            }
        };
        actions.push(Action::Ignored { replica, reason });
        None
    }

    fn report(
        &mut self,
        worker: WorkerId,
        replica: ReplicaId,
        success: bool,
        compute_us: u64,
        actions: &mut Vec<Action>,
    ) {
        let Some(held) = self.take_replica(worker, replica, actions) else {
            return;
        };
        let Some(job) = self.jobs.get_mut(&held.job) else {
            return;
        };
        let policy = job.policy;
        if success {
            job.observe_chunk_time(compute_us);
            if let Some(estimate) = job.chunk_time_us {
                self.program_chunk_time_us.insert(job.program.clone(), estimate);
            }
        }
        let chunk = &mut job.chunks[held.chunk as usize];
        let attempts = chunk.total_replicas;
        if success {
            chunk.finished = true;
            actions.push(Action::StoreResult {
                job: held.job,
                chunk: held.chunk,
                replica,
                outcome: ChunkOutcome::Succeeded,
                attempts,
            });
            self.finish_chunk(held.job, actions);
            self.fill_worker(worker, actions);
            return;
        }
        chunk.error_replicas += 1;
        chunk.failed_on.push(worker);
        if chunk.error_replicas >= policy.max_error_replicas || chunk.total_replicas >= policy.max_total_replicas {
            chunk.finished = true;
            actions.push(Action::StoreResult {
                job: held.job,
                chunk: held.chunk,
                replica,
                outcome: ChunkOutcome::Failed,
                attempts,
            });
            self.finish_chunk(held.job, actions);
            self.fill_worker(worker, actions);
        } else {
            actions.push(Action::ReplicaFailed { job: held.job, chunk: held.chunk, replica, worker });
            job.unsent.push_front(held.chunk);
            self.ensure_in_ring(held.job);
            self.fill_all(actions);
        }
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
        }
    }

    /// Puts the chunk of a replica that is no longer in flight back at the front of its job's queue.
    /// `counts` says whether the replica counts as an attempt: a lost one does, a released one does not.
    /// A chunk that has used up `max_total_replicas` is abandoned instead of requeued.
    fn requeue(&mut self, held: state::Replica, counts: bool, actions: &mut Vec<Action>) {
        let Some(job) = self.jobs.get_mut(&held.job) else {
            return;
        };
        let policy = job.policy;
        let chunk = &mut job.chunks[held.chunk as usize];
        if !counts {
            chunk.total_replicas -= 1;
        } else if chunk.total_replicas >= policy.max_total_replicas {
            chunk.finished = true;
            let attempts = chunk.total_replicas;
            actions.push(Action::StoreAbandoned { job: held.job, chunk: held.chunk, attempts });
            self.finish_chunk(held.job, actions);
            return;
        }
        job.unsent.push_front(held.chunk);
        self.ensure_in_ring(held.job);
    }

    fn ensure_in_ring(&mut self, job_id: JobId) {
        if let Some(job) = self.jobs.get_mut(&job_id)
            && !job.in_ring
        {
            job.in_ring = true;
            self.ring.push_back(job_id);
        }
    }
}

#[cfg(test)]
mod tests;
