//! Dispatch and expiry: which chunk goes to which worker, and what happens when leases lapse.

use crate::state::{Job, Replica, Worker};
use crate::{Action, ChunkIndex, Config, JobId, Scheduler, WorkerId};

/// How deep into a job's queue to look for a chunk the worker has not already failed. Retries sit at the
/// front, so a short look suffices.
const ELIGIBILITY_SCAN: usize = 16;

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
    /// A job is skipped if the worker cannot hold its memory, is full (its own prefetch limit), or already
    /// holds as much of this job as [`prefetch_for`] allows; a chunk that already failed on this worker is
    /// skipped while some other connected worker could take it.
    fn next_chunk_for(&mut self, worker: WorkerId) -> Option<(JobId, ChunkIndex, u32)> {
        for _ in 0..self.ring.len() {
            let job_id = *self.ring.front()?;
            let Some(job) = self.jobs.get_mut(&job_id) else {
                self.ring.pop_front();
                continue;
            };
            if job.unsent.is_empty() {
                job.in_ring = false;
                self.ring.pop_front();
                continue;
            }
            let workers = &self.workers;
            let memory = job.memory_bytes;
            let can_run = |id: &WorkerId| workers.get(id).is_some_and(|state| state.max_memory_bytes >= memory);
            self.ring.rotate_left(1);
            let Some(state) = workers.get(&worker) else { return None };
            let prefetch = prefetch_for(&self.config, job, state);
            let replicas = &self.replicas;
            let held_of_job =
                state.in_flight.iter().filter(|id| replicas.get(id).is_some_and(|held| held.job == job_id)).count();
            let job_room = held_of_job < state.slots as usize * (1 + prefetch as usize);
            if !can_run(&worker) || !job_room || !state.has_room(state.max_prefetch_per_slot) {
                continue;
            }
            let eligible = job.unsent.iter().take(ELIGIBILITY_SCAN).position(|&chunk| {
                let failed_on = &job.chunks[chunk as usize].failed_on;
                !failed_on.contains(&worker)
                    || !workers.keys().any(|other| can_run(other) && !failed_on.contains(other))
            });

            if let Some(position) = eligible {
                return job.unsent.remove(position).map(|chunk| (job_id, chunk, prefetch));
            }
        }
        None
    }

    fn assign(&mut self, worker: WorkerId, job_id: JobId, chunk: ChunkIndex, prefetch: u32, actions: &mut Vec<Action>) {
        let replica = self.next_replica;
        self.next_replica += 1;
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        job.in_flight += 1;
        job.chunks[chunk as usize].total_replicas += 1;
        // A replica may wait behind the worker's whole prefetch queue before it runs for up to the time
        // limit; past that (plus the lease timeout for the report to arrive) it is overdue.
        let queue_depth = 1 + u64::from(prefetch);
        let deadline = self.now.plus(job.time_limit_ms.saturating_mul(queue_depth)).plus(self.config.lease_timeout_ms);
        self.replicas.insert(replica, Replica { job: job_id, chunk, worker, deadline });
        if let Some(state) = self.workers.get_mut(&worker) {
            state.in_flight.insert(replica);
        }
        actions.push(Action::Assign { worker, replica, job: job_id, chunk });
    }

    /// Forgets a worker and requeues everything it held, counting each as an attempt.
    pub(crate) fn remove_worker(&mut self, worker: WorkerId, actions: &mut Vec<Action>) {
        let Some(state) = self.workers.remove(&worker) else {
            return;
        };
        let mut held: Vec<_> = state.in_flight.into_iter().collect();
        // Requeue in id order so the oldest replicas go out again first.
        held.sort_unstable();
        for replica in held.into_iter().rev() {
            if let Some(lost) = self.replicas.remove(&replica) {
                if let Some(job) = self.jobs.get_mut(&lost.job) {
                    job.in_flight -= 1;
                }
                self.requeue(lost, true, actions);
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
                if let Some(job) = self.jobs.get_mut(&lost.job) {
                    job.in_flight -= 1;
                }
                actions.push(Action::Revoke { worker: lost.worker, replica });
                self.requeue(lost, true, actions);
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
