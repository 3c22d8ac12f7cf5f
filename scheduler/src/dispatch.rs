//! Dispatch and expiry: which replica goes to which worker, and what happens when leases lapse.

use std::collections::HashMap;

use crate::state::{Job, Replica, Worker};
use crate::{
    Action, BlobName, ChunkIndex, Config, JobId, Millis, PROBATION_AFTER, ReplicaId, Scheduler, Volunteer, WorkerId,
    release_holder,
};

/// How many chunks under way one look examines for one the worker may take; past them, the worker takes a
/// fresh chunk. The look rotates the queue, so the next one examines others.
pub(crate) const ELIGIBILITY_SCAN: usize = 64;

/// Backups: the least a replica is waited for before its chunk gets a backup for being slow.
pub(crate) const MIN_BACKUP_PATIENCE_MS: u64 = 5;

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
            let error_runs = &self.error_runs;
            let hungry: Vec<WorkerId> = self
                .workers
                .iter()
                .filter(|(_, state)| {
                    state.has_room(state.max_prefetch_per_slot, on_probation(error_runs, &state.volunteer))
                })
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
    /// is owner-only, is full (its own prefetch limit, or one replica while its volunteer is on
    /// probation), or already holds as much of this job as [`prefetch_for`] allows. A chunk is skipped if
    /// the worker's volunteer already holds a replica of it or returned a result for it (replicas that must
    /// agree come from distinct volunteers), if a replica of it errored on this volunteer (it waits for
    /// another volunteer; an owner-only job's only volunteer is its owner, who may retry), or if this
    /// volunteer lost a replica of it while some other connected volunteer could take it.
    fn next_chunk_for(&mut self, worker: WorkerId) -> Option<(JobId, ChunkIndex, u32)> {
        for _ in 0..self.ring.len() {
            let job_id = *self.ring.front()?;
            let Some(job) = self.jobs.get_mut(&job_id) else {
                self.ring.pop_front();
                continue;
            };
            if job.under_way.is_empty() && job.fresh.is_empty() {
                job.in_ring = false;
                self.ring.pop_front();
                continue;
            }
            self.ring.rotate_left(1);
            let workers = &self.workers;
            let state = workers.get(&worker)?;
            // Field by field (not `can_run(job, ..)`), so that the closure leaves the job's queues free.
            let may_run = |candidate: &Worker| fits(job.memory_bytes, job.policy.owner_only, &job.owner, candidate);
            let prefetch = prefetch_for(&self.config, job, state);
            if !may_run(state) {
                continue;
            }
            let job_room = state.held_of_job(job_id) < state.slots as usize * (1 + prefetch as usize);
            let probation = on_probation(&self.error_runs, &state.volunteer);
            if !job_room || !state.has_room(state.max_prefetch_per_slot, probation) {
                continue;
            }
            let volunteer = &state.volunteer;
            let owner_only = job.policy.owner_only;
            // Chunks under way first, so that started chunks finish; then a fresh one, which anyone who
            // can run the job may take. A chunk under way that this worker may not take goes to the back
            // of the queue, so that the next look (at the latest on the next tick) sees other chunks:
            // chunks waiting for some other volunteer never hide the rest for long.
            let eligible = |chunk: &crate::state::Chunk| {
                if chunk.holders.contains(volunteer) {
                    return false;
                }
                let errored_here = chunk.errored_on.contains(volunteer);
                if errored_here && !owner_only {
                    return false;
                }
                // A volunteer who lost a replica of this chunk (or, for an owner-only job, errored on it)
                // gets it again only if nobody else connected could take it.
                !(errored_here || chunk.lost_on.contains(volunteer))
                    || !workers.values().any(|other| {
                        may_run(other)
                            && !chunk.holders.contains(&other.volunteer)
                            && !chunk.errored_on.contains(&other.volunteer)
                            && !chunk.lost_on.contains(&other.volunteer)
                    })
            };
            let mut examined = 0;
            while examined < ELIGIBILITY_SCAN {
                let Some(index) = job.under_way.pop_front() else { break };
                let chunk = &mut job.chunks[index as usize];
                examined += 1;
                if !chunk.needs_replica() {
                    chunk.queued = false;
                    continue;
                }
                if eligible(chunk) {
                    chunk.queued = false;
                    return Some((job_id, index, prefetch));
                }
                job.under_way.push_back(index);
            }
            // Whether some other worker that could run this chunk now holds all of `blobs`. Only a worker
            // with slots, the memory and the right owner, and not on probation, is worth waiting for.
            let error_runs = &self.error_runs;
            let blob_holders = &self.blob_holders;
            let held_elsewhere = |job: &Job, blobs: &[BlobName]| {
                let counted = |blob: &BlobName| blob_holders.get(blob).copied().unwrap_or(0);
                // Fast path: some blob is held by nobody but this worker.
                if blobs.iter().any(|blob| counted(blob) <= u32::from(state.blobs.contains(blob))) {
                    return false;
                }
                workers.iter().any(|(&other, holder)| {
                    other != worker
                        && holder.slots > 0
                        && can_run(job, holder)
                        && !on_probation(error_runs, &holder.volunteer)
                        && blobs.iter().all(|blob| holder.blobs.contains(blob))
                })
            };
            if let Some(chunk) = take_fresh(job, state, &held_elsewhere, self.now, self.config.affinity_wait_ms) {
                return Some((job_id, chunk, prefetch));
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
        record.holders.push(volunteer.clone());
        job.add_replica(chunk, replica);
        // A replica may wait behind the worker's whole prefetch queue before it runs for up to the time
        // limit; past that (plus the lease timeout for the report to arrive) it is overdue.
        let queue_depth = 1 + u64::from(prefetch);
        let deadline = self.now.plus(job.time_limit_ms.saturating_mul(queue_depth)).plus(self.config.lease_timeout_ms);
        let sent_at = self.now;
        self.hold_replica(replica, Replica { job: job_id, chunk, worker, volunteer, deadline, sent_at });
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
        for blob in &state.blobs {
            release_holder(&mut self.blob_holders, blob);
        }
        let mut held: Vec<_> = state.in_flight.into_iter().collect();
        // Requeue in id order so the oldest replicas go out again first.
        held.sort_unstable();
        for replica in held.into_iter().rev() {
            if let Some(lost) = self.unhold_replica(replica) {
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
        let overdue: Vec<ReplicaId> = self.deadlines.range(..(now, 0)).map(|(_, replica)| *replica).collect();
        for replica in overdue {
            if let Some(lost) = self.unhold_replica(replica) {
                actions.push(Action::Revoke { worker: lost.worker, replica });
                self.lose(lost, replica, actions);
            }
        }
        self.back_up_slow_replicas(actions);
        self.fill_all(actions);
    }
}

impl Scheduler {
    /// Backups for stragglers (as MapReduce's backup tasks): a replica of a job with backups that has been
    /// out [`Config::backup_slowness`] times the job's typical chunk time gets its chunk one backup
    /// replica, for another volunteer. Whichever agreeing results come first are accepted; the rest are
    /// revoked and not paid. Checked on every tick for every job, and on each report for its job.
    fn back_up_slow_replicas(&mut self, actions: &mut Vec<Action>) {
        let jobs: Vec<JobId> = self.jobs.iter().filter(|(_, job)| job.backups).map(|(id, _)| *id).collect();
        for job in jobs {
            self.back_up_stragglers(job, actions);
        }
    }

    /// [`Self::back_up_slow_replicas`] for one job: O(its replicas out). The typical time is the job's
    /// round trips as the scheduler measured them (never a volunteer's word), and patience is at least
    /// [`MIN_BACKUP_PATIENCE_MS`].
    pub(crate) fn back_up_stragglers(&mut self, job_id: JobId, actions: &mut Vec<Action>) {
        let Some(job) = self.jobs.get(&job_id) else { return };
        let Some(typical_ms) = job.round_trip_ms.filter(|_| job.backups) else { return };
        let patience_ms = typical_ms.saturating_mul(u64::from(self.config.backup_slowness)).max(MIN_BACKUP_PATIENCE_MS);
        let now = self.now;
        let mut slow = Vec::new();
        let mut next_check: Option<Millis> = None;
        for replica in job.out.iter().filter_map(|replica| self.replicas.get(replica)) {
            let due = replica.sent_at.plus(patience_ms);
            if now >= due {
                slow.push(replica.chunk);
            } else if !job.chunks[replica.chunk as usize].backup {
                next_check = Some(next_check.map_or(due, |earliest| earliest.min(due)));
            }
        }
        for chunk in slow {
            self.back_up(job_id, chunk);
        }
        // Without a report to look again, the edge wakes the scheduler when the next one is due.
        if let Some(at) = next_check {
            actions.push(Action::WakeAt { at });
        }
    }

    /// Sends one backup replica of the chunk (if it is still out and has had none).
    pub(crate) fn back_up(&mut self, job_id: JobId, chunk: ChunkIndex) {
        let Some(job) = self.jobs.get_mut(&job_id) else { return };
        let record = &mut job.chunks[chunk as usize];
        if record.finished || record.backup || record.in_flight.is_empty() {
            return;
        }
        record.backup = true;
        // A chunk a trusted volunteer runs alone is not accepted on one result once it has a backup: the
        // backup may come from anyone, so the two must agree as the job's quorum says.
        let quorum = job.policy.min_quorum.max(record.quorum);
        record.quorum = quorum;
        record.wanted = (record.wanted + 1).max(quorum);
        record.max_issued += 1;
        self.backups_sent += 1;
        self.requeue_if_needed(job_id, chunk);
    }

    /// Once a job with backups has [`Config::backup_when_done_percent`] of its chunks finished, every chunk
    /// still out gets a backup.
    pub(crate) fn back_up_the_last(&mut self, job_id: JobId) {
        let Some(job) = self.jobs.get_mut(&job_id) else { return };
        let total = job.chunks.len() as u64;
        let done = total - u64::from(job.unfinished);
        if !job.backups || job.backed_up || done * 100 < total * u64::from(self.config.backup_when_done_percent) {
            return;
        }
        job.backed_up = true;
        let out: Vec<ChunkIndex> = job
            .chunks
            .iter()
            .enumerate()
            .filter(|(_, chunk)| !chunk.finished && !chunk.in_flight.is_empty())
            .map(|(index, _)| index as ChunkIndex)
            .collect();
        for chunk in out {
            self.back_up(job_id, chunk);
        }
    }
}

/// The fresh chunk a worker takes from a job (affinity): among the first [`ELIGIBILITY_SCAN`], one whose
/// blobs the worker holds; else the first that no other capable worker is better placed for (one that
/// reads no blob, or blobs that no other worker able to run it holds: see `held_elsewhere`); else, once
/// the job's chunks have waited `wait_ms` since the first refusal, the first. The wait then stays over
/// until the job's fresh chunks run out, so every waiting chunk is released, not one per wait. `None`:
/// the chunks it looked at wait for the workers that hold their blobs.
fn take_fresh(
    job: &mut Job,
    worker: &Worker,
    held_elsewhere: &dyn Fn(&Job, &[BlobName]) -> bool,
    now: Millis,
    wait_ms: u64,
) -> Option<ChunkIndex> {
    if job.chunk_blobs.is_empty() {
        return job.fresh.pop_front();
    }
    let scan = job.fresh.len().min(ELIGIBILITY_SCAN);
    let chunk_blobs = &job.chunk_blobs;
    let blobs_of = |chunk: ChunkIndex| chunk_blobs.get(chunk as usize).map_or(&[][..], |blobs| &blobs[..]);
    let held_here = (0..scan).find(|&at| {
        let blobs = blobs_of(job.fresh[at]);
        !blobs.is_empty() && blobs.iter().all(|blob| worker.blobs.contains(blob))
    });
    let affinity_over = job.affinity_waiting_since.is_some_and(|since| now >= since.plus(wait_ms));
    let at = match held_here {
        Some(at) => at,
        None if affinity_over => 0,
        None => {
            let contested = |chunk: ChunkIndex| {
                let blobs = blobs_of(chunk);
                !blobs.is_empty() && held_elsewhere(job, blobs)
            };
            match (0..scan).find(|&at| !contested(job.fresh[at])) {
                Some(at) => at,
                None => {
                    job.affinity_waiting_since.get_or_insert(now);
                    return None;
                }
            }
        }
    };
    let taken = job.fresh.remove(at);
    if job.fresh.is_empty() {
        // Nothing is left to wait: the next chunks (if the job ever gets more) start a new wait.
        job.affinity_waiting_since = None;
    }
    taken
}

/// Whether `worker` may run `job`'s chunks at all: enough memory, and the owner's own worker if the job
/// is owner-only.
fn can_run(job: &Job, worker: &Worker) -> bool {
    fits(job.memory_bytes, job.policy.owner_only, &job.owner, worker)
}

fn fits(memory_bytes: u64, owner_only: bool, owner: &str, worker: &Worker) -> bool {
    worker.max_memory_bytes >= memory_bytes && (!owner_only || worker.volunteer == owner)
}

/// Whether `volunteer`'s last replicas all came to nothing on its side (see [`PROBATION_AFTER`]).
pub(crate) fn on_probation(error_runs: &HashMap<Volunteer, u32>, volunteer: &str) -> bool {
    error_runs.get(volunteer).is_some_and(|run| *run >= PROBATION_AFTER)
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
