//! The scheduler's internal records of jobs, chunks, workers and replicas, and the read-only views of them.

use std::collections::{HashSet, VecDeque};

use crate::{ChunkIndex, JobId, JobParams, Millis, ReplicaId, RetryPolicy, Scheduler, WorkerId};

#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) policy: RetryPolicy,
    pub(crate) time_limit_ms: u64,
    pub(crate) memory_bytes: u64,
    pub(crate) program: String,
    /// A moving average of how long the job's chunks run, once any has succeeded.
    pub(crate) chunk_time_us: Option<u64>,
    pub(crate) chunks: Vec<Chunk>,
    /// Chunks waiting for a volunteer; retries go to the front.
    pub(crate) unsent: VecDeque<ChunkIndex>,
    /// Chunks without a final outcome yet.
    pub(crate) unfinished: u32,
    /// Replicas of this job in flight.
    pub(crate) in_flight: u32,
    /// Whether the job is in the scheduler's round-robin ring.
    pub(crate) in_ring: bool,
}

impl Job {
    pub(crate) fn new(params: &JobParams) -> Job {
        let mut chunks: Vec<Chunk> = (0..params.chunk_count).map(|_| Chunk::default()).collect();
        for &index in &params.finished {
            if let Some(chunk) = chunks.get_mut(index as usize) {
                chunk.finished = true;
            }
        }
        let unsent: VecDeque<ChunkIndex> =
            (0..params.chunk_count).filter(|&index| !chunks[index as usize].finished).collect();
        Job {
            policy: params.policy,
            time_limit_ms: params.time_limit_ms,
            memory_bytes: params.memory_bytes,
            program: params.program.clone(),
            chunk_time_us: None,
            unfinished: unsent.len() as u32,
            chunks,
            unsent,
            in_flight: 0,
            in_ring: true,
        }
    }
}

impl Job {
    /// Folds a successful replica's run time into the job's estimate (weight 1/8, so one odd chunk does
    /// not swing it).
    pub(crate) fn observe_chunk_time(&mut self, compute_us: u64) {
        self.chunk_time_us = Some(match self.chunk_time_us {
            None => compute_us,
            Some(estimate) => (estimate * 7 + compute_us) / 8,
        });
    }
}

#[derive(Debug, Default)]
pub(crate) struct Chunk {
    pub(crate) finished: bool,
    pub(crate) error_replicas: u32,
    pub(crate) total_replicas: u32,
    /// Workers on which a replica of this chunk failed: retries go elsewhere when anyone else is there.
    pub(crate) failed_on: Vec<WorkerId>,
}

#[derive(Debug)]
pub(crate) struct Worker {
    pub(crate) slots: u32,
    pub(crate) max_memory_bytes: u64,
    pub(crate) max_prefetch_per_slot: u32,
    pub(crate) in_flight: HashSet<ReplicaId>,
    pub(crate) last_seen: Millis,
}

impl Worker {
    pub(crate) fn new(slots: u32, max_memory_bytes: u64, max_prefetch_per_slot: u32, now: Millis) -> Worker {
        Worker { slots, max_memory_bytes, max_prefetch_per_slot, in_flight: HashSet::new(), last_seen: now }
    }

    /// Whether the worker holds fewer replicas than `prefetch_per_slot` allows: one running per slot
    /// plus that many queued.
    pub(crate) fn has_room(&self, prefetch_per_slot: u32) -> bool {
        self.in_flight.len() < self.slots as usize * (1 + prefetch_per_slot as usize)
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Replica {
    pub(crate) job: JobId,
    pub(crate) chunk: ChunkIndex,
    pub(crate) worker: WorkerId,
    /// The replica is requeued if no report arrives by then, even from a worker that keeps heartbeating.
    pub(crate) deadline: Millis,
}

/// A job's chunks as the scheduler sees them right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobProgress {
    /// Chunks waiting for a volunteer.
    pub pending: u32,
    /// Chunks with a replica at a volunteer.
    pub running: u32,
}

/// Totals for operators.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub workers: u32,
    pub slots: u32,
    pub jobs: u32,
    pub pending_chunks: u64,
    pub replicas_in_flight: u64,
}

impl Scheduler {
    /// Pending and running chunks of a job that is still active; `None` once every chunk is final.
    pub fn job_progress(&self, job: JobId) -> Option<JobProgress> {
        self.jobs.get(&job).map(|job| JobProgress { pending: job.unsent.len() as u32, running: job.in_flight })
    }

    pub fn stats(&self) -> Stats {
        Stats {
            workers: self.workers.len() as u32,
            slots: self.workers.values().map(|worker| worker.slots).sum(),
            jobs: self.jobs.len() as u32,
            pending_chunks: self.jobs.values().map(|job| job.unsent.len() as u64).sum(),
            replicas_in_flight: self.replicas.len() as u64,
        }
    }

    /// The worker holding a replica, if it is in flight.
    pub fn replica_holder(&self, replica: ReplicaId) -> Option<WorkerId> {
        self.replicas.get(&replica).map(|held| held.worker)
    }
}
