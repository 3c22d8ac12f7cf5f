//! Step-by-step tests of the scheduler with a fake clock: the harness here, the tests by area beside it.

// Which replica goes where: queues, leases, expiry, memory, owners, probation.
mod dispatch;
// Reports, quorum, retries, losses, invalid reports and trust.
mod validate;
// What the scheduler says about its jobs: recovery, progress and why chunks wait.
mod state;
// Random interleavings of everything, with and without cheaters.
mod histories;

use crate::*;

pub(super) const LEASE: u64 = 5_000;
pub(super) const TIME_LIMIT: u64 = 60_000;
pub(super) const MEMORY: u64 = 1 << 30;
/// The digest of the honest result of every chunk in these tests.
pub(super) const HONEST: Digest = [1; 32];
/// A wrong result's digest.
pub(super) const FORGED: Digest = [2; 32];

/// What became of a chunk, as the tests care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ChunkOutcome {
    Succeeded,
    Failed,
}

/// A scheduler and a fake clock.
pub(super) struct Harness {
    pub(super) scheduler: Scheduler,
    pub(super) now: u64,
    /// What joining workers ask for.
    pub(super) prefetch: u32,
}

impl Harness {
    pub(super) fn new() -> Harness {
        Harness::with_prefetch(2)
    }

    pub(super) fn with_prefetch(prefetch_per_slot: u32) -> Harness {
        let config = Config { lease_timeout_ms: LEASE, prefetch_per_slot, ..Config::default() };
        Harness { scheduler: Scheduler::new(config, 1000), now: 0, prefetch: prefetch_per_slot }
    }

    /// The harness's clock, moved by `offset` milliseconds.
    pub(super) fn now_at(&self, offset: i64) -> Millis {
        Millis(self.now.saturating_add_signed(offset))
    }

    pub(super) fn advance(&mut self, milliseconds: u64) {
        self.now += milliseconds;
    }

    pub(super) fn feed(&mut self, event: Event) -> Vec<Action> {
        self.scheduler.handle_collect(Millis(self.now), event)
    }

    /// A job whose chunks each need one result, from anyone (the shape of the policy for a trusted pool).
    pub(super) fn add_job(&mut self, id: JobId, chunk_count: u32, max_retries: u32) -> Vec<Action> {
        let policy = ReplicationPolicy { owner_only: false, ..ReplicationPolicy::new(1, 1, max_retries) };
        self.add_job_with(id, chunk_count, policy)
    }

    pub(super) fn add_job_with(&mut self, id: JobId, chunk_count: u32, policy: ReplicationPolicy) -> Vec<Action> {
        self.add_job_reading(id, chunk_count, policy, Vec::new())
    }

    /// A job whose chunks read these blobs (one list per chunk, or none).
    pub(super) fn add_job_reading(
        &mut self,
        id: JobId,
        chunk_count: u32,
        policy: ReplicationPolicy,
        chunk_blobs: Vec<Vec<BlobName>>,
    ) -> Vec<Action> {
        self.add("program", id, chunk_count, policy, chunk_blobs, false)
    }

    /// A session's round: a job whose slow chunks get backups (a program of its own, so that other jobs'
    /// chunk times do not carry over).
    pub(super) fn add_round(&mut self, id: JobId, chunk_count: u32, policy: ReplicationPolicy) -> Vec<Action> {
        self.add("round", id, chunk_count, policy, Vec::new(), true)
    }

    fn add(
        &mut self,
        program: &str,
        id: JobId,
        chunk_count: u32,
        policy: ReplicationPolicy,
        chunk_blobs: Vec<Vec<BlobName>>,
        backups: bool,
    ) -> Vec<Action> {
        self.feed(Event::JobAdded(JobParams {
            id,
            chunk_count,
            policy,
            time_limit_ms: TIME_LIMIT,
            memory_bytes: MEMORY,
            program: program.into(),
            owner: "user:1".into(),
            finished: Vec::new(),
            chunk_blobs,
            backups,
        }))
    }

    /// A worker of its own volunteer (`volunteer:<worker>`).
    pub(super) fn join(&mut self, worker: WorkerId, slots: u32) -> Vec<Action> {
        self.join_as(worker, &format!("volunteer:{worker}"), slots)
    }

    pub(super) fn join_as(&mut self, worker: WorkerId, volunteer: &str, slots: u32) -> Vec<Action> {
        self.join_trusted(worker, volunteer, 0, slots)
    }

    /// A worker of a volunteer whose run of validated replicas is `trust`.
    pub(super) fn join_trusted(&mut self, worker: WorkerId, volunteer: &str, trust: u32, slots: u32) -> Vec<Action> {
        self.join_holding(worker, volunteer, trust, slots, Vec::new())
    }

    /// A worker that already holds these blobs.
    pub(super) fn join_holding(
        &mut self,
        worker: WorkerId,
        volunteer: &str,
        trust: u32,
        slots: u32,
        blobs: Vec<BlobName>,
    ) -> Vec<Action> {
        let max_prefetch_per_slot = self.prefetch;
        self.feed(Event::WorkerJoined {
            worker,
            volunteer: volunteer.into(),
            trust,
            slots,
            max_memory_bytes: u64::MAX,
            max_prefetch_per_slot,
            blobs,
        })
    }

    /// `success`: a result (all honest results have one digest); otherwise a volunteer error.
    pub(super) fn report(&mut self, worker: WorkerId, replica: ReplicaId, success: bool) -> Vec<Action> {
        let report = if success { Report::Result { digest: HONEST, work_units: 10 } } else { Report::Error };
        self.report_with(worker, replica, report)
    }

    pub(super) fn report_with(&mut self, worker: WorkerId, replica: ReplicaId, report: Report) -> Vec<Action> {
        // One millisecond per chunk: short enough that workers keep the default queue.
        self.feed(Event::ReplicaReported { worker, replica, report, compute_us: 1_000 })
    }
}

/// The assignments among `actions`, as (worker, replica, job, chunk).
pub(super) fn assigns(actions: &[Action]) -> Vec<(WorkerId, ReplicaId, JobId, ChunkIndex)> {
    actions
        .iter()
        .filter_map(|action| match *action {
            Action::Assign { worker, replica, job, chunk } => Some((worker, replica, job, chunk)),
            _ => None,
        })
        .collect()
}

pub(super) fn stored(actions: &[Action]) -> Vec<(ChunkIndex, ChunkOutcome)> {
    actions
        .iter()
        .filter_map(|action| match *action {
            Action::StoreResult { chunk, .. } => Some((chunk, ChunkOutcome::Succeeded)),
            Action::StoreFailure { chunk, .. } => Some((chunk, ChunkOutcome::Failed)),
            _ => None,
        })
        .collect()
}

/// Two replicas that must agree, up to six in all, errors retried twice.
pub(super) fn replicated() -> ReplicationPolicy {
    ReplicationPolicy::new(2, 2, 2)
}

pub(super) fn accepted(actions: &[Action]) -> Vec<(ChunkIndex, ReplicaId, Vec<ReplicaId>, Vec<Volunteer>)> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::StoreResult { chunk, canonical, validated, invalid, .. } => {
                Some((*chunk, *canonical, validated.iter().map(|replica| replica.replica).collect(), invalid.clone()))
            }
            _ => None,
        })
        .collect()
}
