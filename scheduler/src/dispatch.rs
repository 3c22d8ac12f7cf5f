//! Dispatch and expiry: which chunk goes to which worker, and what happens when leases lapse.

use crate::state::Replica;
use crate::{Action, ChunkIndex, JobId, Scheduler, WorkerId};

/// How deep into a job's queue to look for a chunk the worker has not already failed. Retries sit at the
/// front, so a short look suffices.
const ELIGIBILITY_SCAN: usize = 16;

impl Scheduler {
    /// Fills one worker's free capacity. Called when only that worker gained capacity.
    pub(crate) fn fill_worker(&mut self, worker: WorkerId, actions: &mut Vec<Action>) {
        let prefetch = self.config.prefetch_per_slot;
        while self.workers.get(&worker).is_some_and(|state| state.free(prefetch) > 0) {
            let Some((job, chunk)) = self.next_chunk_for(worker) else {
                return;
            };
            self.assign(worker, job, chunk, actions);
        }
    }

    /// Fills every worker's free capacity, one replica per worker per pass, so a small job spreads across
    /// all workers instead of filling the first one's queue.
    pub(crate) fn fill_all(&mut self, actions: &mut Vec<Action>) {
        let prefetch = self.config.prefetch_per_slot;
        loop {
            let hungry: Vec<WorkerId> =
                self.workers.iter().filter(|(_, state)| state.free(prefetch) > 0).map(|(id, _)| *id).collect();
            let mut assigned = false;
            for worker in hungry {
                if let Some((job, chunk)) = self.next_chunk_for(worker) {
                    self.assign(worker, job, chunk, actions);
                    assigned = true;
                }
            }
            if !assigned {
                return;
            }
        }
    }

    /// Takes the next chunk for `worker`, round-robin over jobs. A chunk that already failed on this worker
    /// is skipped while some other connected worker has not failed it.
    fn next_chunk_for(&mut self, worker: WorkerId) -> Option<(JobId, ChunkIndex)> {
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
            if !can_run(&worker) {
                continue;
            }
            let eligible = job.unsent.iter().take(ELIGIBILITY_SCAN).position(|&chunk| {
                let failed_on = &job.chunks[chunk as usize].failed_on;
                !failed_on.contains(&worker)
                    || !workers.keys().any(|other| can_run(other) && !failed_on.contains(other))
            });

            if let Some(position) = eligible {
                return job.unsent.remove(position).map(|chunk| (job_id, chunk));
            }
        }
        None
    }

    fn assign(&mut self, worker: WorkerId, job_id: JobId, chunk: ChunkIndex, actions: &mut Vec<Action>) {
        let replica = self.next_replica;
        self.next_replica += 1;
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        job.in_flight += 1;
        job.chunks[chunk as usize].total_replicas += 1;
        // A replica may wait behind the worker's whole prefetch queue before it runs for up to the time
        // limit; past that (plus the lease timeout for the report to arrive) it is overdue.
        let queue_depth = 1 + u64::from(self.config.prefetch_per_slot);
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
