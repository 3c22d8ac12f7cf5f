//! The scheduler's internal records of jobs, chunks, workers and replicas, and the read-only views of them.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use crate::{
    BlobName, ChunkIndex, Digest, JobId, JobParams, Millis, ReplicaId, ReplicationPolicy, Scheduler, Volunteer,
    WorkerId,
};

#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) policy: ReplicationPolicy,
    pub(crate) owner: Volunteer,
    pub(crate) time_limit_ms: u64,
    pub(crate) memory_bytes: u64,
    pub(crate) program: String,
    /// A moving average of how long the job's chunks run, once any has returned a result.
    pub(crate) chunk_time_us: Option<u64>,
    pub(crate) chunks: Vec<Chunk>,
    /// Chunks no replica has gone out for yet, in order: any worker that can run the job may take one.
    pub(crate) fresh: VecDeque<ChunkIndex>,
    /// Chunks under way that may need another replica (each at most once, see `Chunk::queued`); the most
    /// recent at the front. Entries that turn out to need nothing (any more) are skipped when found.
    /// Kept apart from `fresh` so that chunks waiting for some *other* volunteer never hide the fresh
    /// ones from a worker.
    pub(crate) under_way: VecDeque<ChunkIndex>,
    /// Chunks without a final outcome yet.
    pub(crate) unfinished: u32,
    /// Replicas of this job in flight.
    pub(crate) in_flight: u32,
    /// Chunks with at least one replica in flight, kept as replicas come and go so that progress is O(1).
    pub(crate) running_chunks: u32,
    /// How many of this job's replicas in flight each volunteer holds, kept as replicas go out and come
    /// back (see `Scheduler::hold_replica`), so that the volunteers working on a job are counted in O(1).
    pub(crate) volunteers: HashMap<Volunteer, u32>,
    /// Whether the job is in the scheduler's round-robin ring.
    pub(crate) in_ring: bool,
    /// The blobs each chunk reads (empty if none does), for affinity.
    pub(crate) chunk_blobs: Vec<Box<[BlobName]>>,
    /// Since when a worker has been refused chunks that wait for the workers holding their blobs: past
    /// the affinity wait, any worker takes them, until the job's fresh chunks run out.
    pub(crate) affinity_waiting_since: Option<Millis>,
    /// Whether slow chunks get backup replicas (see [`crate::Config::backup_when_done_percent`]).
    pub(crate) backups: bool,
    /// Whether the job has passed the share of finished chunks past which every chunk still out got a
    /// backup.
    pub(crate) backed_up: bool,
    /// The replicas out, kept only for a job with backups (to find its stragglers without a scan).
    pub(crate) out: BTreeSet<ReplicaId>,
    /// How long its replicas take from going out to their report, as the scheduler's own clock saw it
    /// (a moving average): what backups measure stragglers against, which no volunteer can forge.
    pub(crate) round_trip_ms: Option<u64>,
}

impl Job {
    pub(crate) fn new(params: &JobParams) -> Job {
        let policy = params.policy;
        let mut chunks: Vec<Chunk> = (0..params.chunk_count).map(|_| Chunk::new(policy)).collect();
        for &index in &params.finished {
            if let Some(chunk) = chunks.get_mut(index as usize) {
                chunk.finished = true;
            }
        }
        let fresh: VecDeque<ChunkIndex> =
            (0..params.chunk_count).filter(|&index| !chunks[index as usize].finished).collect();
        Job {
            policy,
            owner: params.owner.clone(),
            time_limit_ms: params.time_limit_ms,
            memory_bytes: params.memory_bytes,
            program: params.program.clone(),
            chunk_time_us: None,
            unfinished: fresh.len() as u32,
            chunks,
            fresh,
            under_way: VecDeque::new(),
            in_flight: 0,
            running_chunks: 0,
            volunteers: HashMap::new(),
            in_ring: true,
            chunk_blobs: params.chunk_blobs.iter().map(|blobs| blobs.clone().into_boxed_slice()).collect(),
            affinity_waiting_since: None,
            backups: params.backups,
            backed_up: false,
            out: BTreeSet::new(),
            round_trip_ms: None,
        }
    }

    /// Records that `replica` of `chunk` went out.
    pub(crate) fn add_replica(&mut self, chunk: ChunkIndex, replica: ReplicaId) {
        let record = &mut self.chunks[chunk as usize];
        if record.in_flight.is_empty() {
            self.running_chunks += 1;
        }
        record.in_flight.push(replica);
        self.in_flight += 1;
        if self.backups {
            self.out.insert(replica);
        }
    }

    /// Records that `replica` of `chunk` is no longer out (reported, lost or handed back).
    pub(crate) fn remove_replica(&mut self, chunk: ChunkIndex, replica: ReplicaId) {
        let record = &mut self.chunks[chunk as usize];
        let before = record.in_flight.len();
        record.in_flight.retain(|id| *id != replica);
        let removed = (before - record.in_flight.len()) as u32;
        if self.backups {
            self.out.remove(&replica);
        }
        self.in_flight -= removed;
        if removed > 0 && record.in_flight.is_empty() {
            self.running_chunks -= 1;
        }
    }

    /// Takes every replica of `chunk` out of flight and returns them.
    pub(crate) fn take_replicas(&mut self, chunk: ChunkIndex) -> Vec<ReplicaId> {
        let out = std::mem::take(&mut self.chunks[chunk as usize].in_flight);
        self.in_flight -= out.len() as u32;
        if self.backups {
            for replica in &out {
                self.out.remove(replica);
            }
        }
        if !out.is_empty() {
            self.running_chunks -= 1;
        }
        out
    }

    /// Counts a replica of this job that went out to `volunteer`.
    pub(crate) fn volunteer_holds(&mut self, volunteer: &Volunteer) {
        match self.volunteers.get_mut(volunteer) {
            Some(held) => *held += 1,
            None => {
                self.volunteers.insert(volunteer.clone(), 1);
            }
        }
    }

    /// Counts a replica of this job that `volunteer` no longer holds.
    pub(crate) fn volunteer_released(&mut self, volunteer: &Volunteer) {
        if let Some(held) = self.volunteers.get_mut(volunteer) {
            *held -= 1;
            if *held == 0 {
                self.volunteers.remove(volunteer);
            }
        }
    }

    /// Folds a replica's run time into the job's estimate (weight 1/8, so one odd chunk does not swing it).
    /// The time comes from a volunteer: it is capped at the job's time limit (no honest run is longer) and
    /// the arithmetic saturates, so a forged value can neither wrap nor panic.
    /// Folds a replica's round trip, measured by the scheduler, into the job's estimate (weight 1/8).
    pub(crate) fn observe_round_trip(&mut self, milliseconds: u64) {
        self.round_trip_ms = Some(match self.round_trip_ms {
            None => milliseconds,
            Some(estimate) => estimate.saturating_mul(7).saturating_add(milliseconds) / 8,
        });
    }

    pub(crate) fn observe_chunk_time(&mut self, compute_us: u64) {
        let compute_us = compute_us.min(self.time_limit_ms.saturating_mul(1000));
        self.chunk_time_us = Some(match self.chunk_time_us {
            None => compute_us,
            Some(estimate) => estimate.saturating_mul(7).saturating_add(compute_us) / 8,
        });
    }
}

/// A result reported for a chunk, waiting for validation.
#[derive(Clone, Debug)]
pub(crate) struct Reported {
    pub(crate) replica: ReplicaId,
    pub(crate) volunteer: Volunteer,
    pub(crate) digest: Digest,
    pub(crate) work_units: u64,
}

#[derive(Debug)]
pub(crate) struct Chunk {
    pub(crate) finished: bool,
    /// Results wanted in hand: the policy's replicas at first (one if a trusted volunteer runs it alone),
    /// one more each time the results in hand disagree.
    pub(crate) wanted: u32,
    /// Results with one digest needed to accept it.
    pub(crate) quorum: u32,
    /// Replicas ever sent out (released ones excepted).
    pub(crate) issued: u32,
    /// The most replicas it may ever have (the policy's total).
    pub(crate) max_issued: u32,
    /// Volunteer errors counted against the chunk's retries: once per volunteer (every error, for an
    /// owner-only job, whose only volunteer is its owner).
    pub(crate) errors: u32,
    pub(crate) in_flight: Vec<ReplicaId>,
    pub(crate) results: Vec<Reported>,
    /// Volunteers holding a replica of it or who returned a result: another replica must go elsewhere.
    pub(crate) holders: Vec<Volunteer>,
    /// Volunteers on whom a replica errored: the chunk never goes back to them (but for owner-only jobs),
    /// so one volunteer cannot use up its retries; it waits for another volunteer instead.
    pub(crate) errored_on: Vec<Volunteer>,
    /// Volunteers who lost a replica of it (disconnected, overran the lease): retries go elsewhere while
    /// anyone else can take them, and a volunteer's repeated losses count against the chunk only once.
    pub(crate) lost_on: Vec<Volunteer>,
    /// Whether the chunk has an entry in its job's `under_way` queue.
    pub(crate) queued: bool,
    /// Whether a backup replica was sent out for it (at most one).
    pub(crate) backup: bool,
}

impl Chunk {
    fn new(policy: ReplicationPolicy) -> Chunk {
        Chunk {
            finished: false,
            wanted: policy.target_replicas,
            quorum: policy.min_quorum,
            issued: 0,
            max_issued: policy.max_total_replicas,
            errors: 0,
            in_flight: Vec::new(),
            results: Vec::new(),
            holders: Vec::new(),
            errored_on: Vec::new(),
            lost_on: Vec::new(),
            queued: false,
            backup: false,
        }
    }

    /// Whether another replica should and may go out now.
    pub(crate) fn needs_replica(&self) -> bool {
        self.short_of_results() && self.issued < self.max_issued
    }

    /// Whether the results in hand and the replicas out fall short of what the chunk needs.
    pub(crate) fn short_of_results(&self) -> bool {
        !self.finished && self.results.len() + self.in_flight.len() < self.wanted as usize
    }
}

#[derive(Debug)]
pub(crate) struct Worker {
    pub(crate) volunteer: Volunteer,
    pub(crate) slots: u32,
    pub(crate) max_memory_bytes: u64,
    pub(crate) max_prefetch_per_slot: u32,
    pub(crate) in_flight: HashSet<ReplicaId>,
    /// How many of `in_flight` belong to each job, so that a job's share is known without a scan.
    pub(crate) held_by_job: HashMap<JobId, u32>,
    pub(crate) last_seen: Millis,
    /// The blobs it says it holds (at most [`crate::MAX_WORKER_BLOBS`]).
    pub(crate) blobs: HashSet<BlobName>,
}

impl Worker {
    pub(crate) fn new(
        volunteer: Volunteer,
        slots: u32,
        max_memory_bytes: u64,
        max_prefetch_per_slot: u32,
        now: Millis,
    ) -> Worker {
        Worker {
            volunteer,
            slots,
            max_memory_bytes,
            max_prefetch_per_slot,
            in_flight: HashSet::new(),
            held_by_job: HashMap::new(),
            last_seen: now,
            blobs: HashSet::new(),
        }
    }

    /// The worker now holds `replica` of `job`.
    pub(crate) fn hold(&mut self, replica: ReplicaId, job: JobId) {
        if self.in_flight.insert(replica) {
            *self.held_by_job.entry(job).or_default() += 1;
        }
    }

    /// The worker no longer holds `replica` of `job`.
    pub(crate) fn unhold(&mut self, replica: ReplicaId, job: JobId) {
        if self.in_flight.remove(&replica)
            && let Some(count) = self.held_by_job.get_mut(&job)
        {
            *count -= 1;
            if *count == 0 {
                self.held_by_job.remove(&job);
            }
        }
    }

    /// How many replicas of `job` the worker holds.
    pub(crate) fn held_of_job(&self, job: JobId) -> usize {
        self.held_by_job.get(&job).map_or(0, |count| *count as usize)
    }

    /// Whether the worker holds fewer replicas than `prefetch_per_slot` allows: one running per slot
    /// plus that many queued; one in all while its volunteer is on probation.
    pub(crate) fn has_room(&self, prefetch_per_slot: u32, on_probation: bool) -> bool {
        let capacity = if on_probation {
            usize::from(self.slots > 0)
        } else {
            self.slots as usize * (1 + prefetch_per_slot as usize)
        };
        self.in_flight.len() < capacity
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Replica {
    pub(crate) job: JobId,
    pub(crate) chunk: ChunkIndex,
    pub(crate) worker: WorkerId,
    pub(crate) volunteer: Volunteer,
    /// The replica is requeued if no report arrives by then, even from a worker that keeps heartbeating.
    pub(crate) deadline: Millis,
    /// When it went out.
    pub(crate) sent_at: Millis,
}

/// A job's chunks as the scheduler sees them right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobProgress {
    /// Chunks waiting for a volunteer (with no replica out).
    pub pending: u32,
    /// Chunks with a replica at a volunteer.
    pub running: u32,
    /// Distinct volunteers holding a replica of the job.
    pub volunteers: u32,
}

/// Totals for operators.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub workers: u32,
    pub slots: u32,
    pub jobs: u32,
    pub pending_chunks: u64,
    pub replicas_in_flight: u64,
    /// Backup replicas sent for slow chunks since the start.
    pub backup_replicas: u64,
}

impl Scheduler {
    /// Pending and running chunks of a job that is still active; `None` once every chunk is final.
    pub fn job_progress(&self, job: JobId) -> Option<JobProgress> {
        self.jobs.get(&job).map(|job| JobProgress {
            pending: job.unfinished - job.running_chunks,
            running: job.running_chunks,
            volunteers: job.volunteers.len() as u32,
        })
    }

    pub fn stats(&self) -> Stats {
        Stats {
            workers: self.workers.len() as u32,
            slots: self.workers.values().map(|worker| worker.slots).sum(),
            jobs: self.jobs.len() as u32,
            pending_chunks: self.jobs.values().map(|job| (job.fresh.len() + job.under_way.len()) as u64).sum(),
            replicas_in_flight: self.replicas.len() as u64,
            backup_replicas: self.backups_sent,
        }
    }

    /// How many replicas of each job `worker` holds.
    pub fn held_by_job(&self, worker: WorkerId) -> impl Iterator<Item = (JobId, u32)> + '_ {
        self.workers
            .get(&worker)
            .into_iter()
            .flat_map(|state| state.held_by_job.iter().map(|(job, count)| (*job, *count)))
    }

    /// The lease on a replica, if it is in flight.
    pub fn lease(&self, replica: ReplicaId) -> Option<Lease> {
        self.replicas.get(&replica).map(|held| Lease { worker: held.worker, job: held.job, chunk: held.chunk })
    }
}

/// Who holds a replica in flight, and of what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub worker: WorkerId,
    pub job: JobId,
    pub chunk: ChunkIndex,
}
