//! Dispatch and expiry: which replica goes to which worker, and what happens when leases lapse.

use crate::state::{Job, Replica, Worker};
use crate::{Action, ChunkIndex, Config, JobId, Scheduler, WorkerId};

/// How deep into a job's queue to look for a chunk the worker may take. Chunks already under way sit at
/// the front, so a short look suffices.
const ELIGIBILITY_SCAN: usize = 64;

impl Scheduler {
    /// Fills one worker's free capacity. Called when only that worker gained capacity.
    pub(crate) fn fill_worker(&mut self, worker: WorkerId, actions: &mut Vec<Action>) {
        while let Some((job, chunk, prefetch)) = self.next_chunk_for(worker) {
            self.assign(worker, job, chunk, prefetch, actions);
        }
    }

    /// Fills every worker's free capacity, one replica per worker per pass, so a small job spreads across
    /// all workers instead of filling the first one's queue.
    pub(crate) fn fill_all(&mut self, actions: &mut Vec<Action>) {
        loop {
            let hungry: Vec<WorkerId> = self
                .workers
                .iter()
                .filter(|(_, state)| state.has_room(state.max_prefetch_per_slot))
                .map(|(id, _)| *id)
                .collect();
            let mut assigned = false;
            for worker in hungry {
                if let Some((job, chunk, prefetch)) = self.next_chunk_for(worker) {
                    self.assign(worker, job, chunk, prefetch, actions);
                    assigned = true;
                }
            }
            if !assigned {
                return;
            }
        }
    }

    /// Takes the next chunk for `worker`, round-robin over jobs, with the prefetch depth it was taken under.
    ///
    /// A job is skipped if the worker cannot hold its memory, does not belong to its owner when the job
    /// is owner-only, is full (its own prefetch limit), or already holds as much of this job as
    /// [`prefetch_for`] allows. A chunk is skipped if the worker's volunteer already holds a replica of it
    /// or returned a result for it (replicas that must agree come from distinct volunteers), or if a
    /// replica of it errored on this volunteer while some other connected volunteer could take it.
    fn next_chunk_for(&mut self, worker: WorkerId) -> Option<(JobId, ChunkIndex, u32)> {
        for _ in 0..self.ring.len() {
            let job_id = *self.ring.front()?;
            let Some(job) = self.jobs.get_mut(&job_id) else {
                self.ring.pop_front();
                continue;
            };
            // Drop entries for chunks that need nothing (any more) from the front.
            while let Some(&front) = job.unsent.front() {
                if job.chunks[front as usize].needs_replica() {
                    break;
                }
                job.unsent.pop_front();
            }
            if job.unsent.is_empty() {
                job.in_ring = false;
                self.ring.pop_front();
                continue;
            }
            self.ring.rotate_left(1);
            let workers = &self.workers;
            let Some(state) = workers.get(&worker) else { return None };
            let can_run = |candidate: &Worker| {
                candidate.max_memory_bytes >= job.memory_bytes
                    && (!job.policy.owner_only || candidate.volunteer == job.owner)
            };
            let prefetch = prefetch_for(&self.config, job, state);
            let replicas = &self.replicas;
            let held_of_job =
                state.in_flight.iter().filter(|id| replicas.get(id).is_some_and(|held| held.job == job_id)).count();
            let job_room = held_of_job < state.slots as usize * (1 + prefetch as usize);
            if !can_run(state) || !job_room || !state.has_room(state.max_prefetch_per_slot) {
                continue;
            }
            let volunteer = &state.volunteer;
            let eligible = job.unsent.iter().take(ELIGIBILITY_SCAN).position(|&index| {
                let chunk = &job.chunks[index as usize];
                if !chunk.needs_replica() || chunk.holders.contains(volunteer) {
                    return false;
                }
                // A volunteer on whom a replica of this chunk errored gets it again only if nobody else
                // connected could take it.
                !chunk.errored_on.contains(volunteer)
                    || !workers.values().any(|other| {
                        can_run(other)
                            && !chunk.holders.contains(&other.volunteer)
                            && !chunk.errored_on.contains(&other.volunteer)
                    })
            });
            if let Some(position) = eligible {
                return job.unsent.remove(position).map(|chunk| (job_id, chunk, prefetch));
            }
        }
        None
    }

    fn assign(&mut self, worker: WorkerId, job_id: JobId, chunk: ChunkIndex, prefetch: u32, actions: &mut Vec<Action>) {
        let Some(volunteer) = self.workers.get(&worker).map(|state| state.volunteer.clone()) else {
            return;
        };
        let first = self.jobs.get(&job_id).is_some_and(|job| job.chunks[chunk as usize].issued == 0);
        // Adaptive replication: a volunteer with a long run of validated results may run a fresh chunk
        // alone; it is spot-checked (replicated anyway) with a probability that shrinks as its run grows.
        let trusted_alone = first && self.trusted(&volunteer);
        let replica = self.next_replica;
        self.next_replica += 1;
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let policy = job.policy;
        let record = &mut job.chunks[chunk as usize];
        if trusted_alone && policy.min_quorum > 1 {
            record.wanted = 1;
            record.quorum = 1;
        }
        record.issued += 1;
        record.in_flight.push(replica);
        record.holders.push(volunteer.clone());
        job.in_flight += 1;
        // A replica may wait behind the worker's whole prefetch queue before it runs for up to the time
        // limit; past that (plus the lease timeout for the report to arrive) it is overdue.
        let queue_depth = 1 + u64::from(prefetch);
        let deadline = self.now.plus(job.time_limit_ms.saturating_mul(queue_depth)).plus(self.config.lease_timeout_ms);
        self.replicas.insert(replica, Replica { job: job_id, chunk, worker, volunteer, deadline });
        if let Some(state) = self.workers.get_mut(&worker) {
            state.in_flight.insert(replica);
        }
        actions.push(Action::Assign { worker, replica, job: job_id, chunk });
        // The chunk's other replicas go out next, to other volunteers.
        self.requeue_if_needed(job_id, chunk);
    }

    /// Whether to trust `volunteer` with a chunk alone this time (a random draw; see `assign`).
    fn trusted(&mut self, volunteer: &str) -> bool {
        let run = self.trust.get(volunteer).copied().unwrap_or(0);
        if run < self.config.trust_after {
            return false;
        }
        // The chance of being trusted grows with the run: a third at the threshold (10), half at twice it,
        // at most 95%.
        let percent = (100 * u64::from(run) / (u64::from(run) + 20)).min(95);
        self.percent_draw() < percent
    }

    /// Forgets a worker and requeues everything it held, counting each as lost.
    pub(crate) fn remove_worker(&mut self, worker: WorkerId, actions: &mut Vec<Action>) {
        let Some(state) = self.workers.remove(&worker) else {
            return;
        };
        let mut held: Vec<_> = state.in_flight.into_iter().collect();
        // Requeue in id order so the oldest replicas go out again first.
        held.sort_unstable();
        for replica in held.into_iter().rev() {
            if let Some(lost) = self.replicas.remove(&replica) {
                self.lose(lost, replica, actions);
            }
        }
    }

    /// Disconnects workers that went silent and requeues replicas that are overdue.
    pub(crate) fn expire(&mut self, actions: &mut Vec<Action>) {
        let timeout = self.config.lease_timeout_ms;
        let now = self.now;
        let silent: Vec<WorkerId> =
            self.workers.iter().filter(|(_, state)| state.last_seen.plus(timeout) < now).map(|(id, _)| *id).collect();
        for worker in silent {
            actions.push(Action::Disconnect { worker });
            self.remove_worker(worker, actions);
        }
        let overdue: Vec<_> =
            self.replicas.iter().filter(|(_, replica)| replica.deadline < now).map(|(id, _)| *id).collect();
        for replica in overdue {
            if let Some(lost) = self.replicas.remove(&replica) {
                if let Some(state) = self.workers.get_mut(&lost.worker) {
                    state.in_flight.remove(&replica);
                }
                actions.push(Action::Revoke { worker: lost.worker, replica });
                self.lose(lost, replica, actions);
            }
        }
        self.fill_all(actions);
    }
}

/// How many replicas of `job` the worker may hold queued per slot: the default while the job's chunk
/// time is unknown, then enough to cover [`Config::prefetch_buffer_us`] of work, never more than the worker
/// asked for. Long chunks therefore get no queue at all (the round trip is negligible next to them), and
/// stay available to other volunteers.
fn prefetch_for(config: &Config, job: &Job, worker: &Worker) -> u32 {
    let wanted = match job.chunk_time_us {
        None => u64::from(config.prefetch_per_slot),
        Some(chunk_time_us) => config.prefetch_buffer_us / chunk_time_us.max(1),
    };
    wanted.min(u64::from(worker.max_prefetch_per_slot)) as u32
}
