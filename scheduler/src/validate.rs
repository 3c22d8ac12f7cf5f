//! Reports, validation by replication, retries and trust.
//!
//! A result is accepted once `quorum` results of a chunk have the same digest: those replicas are
//! validated (paid, and their volunteers' runs of validated results grow), the others are invalid (their
//! volunteers' runs start over). Results that disagree bring in one more replica each time, up to the
//! policy's total. Errors (a volunteer could not run the replica) and lost replicas are sent out again,
//! within the policy's bounds.

use crate::state::{Chunk, Replica};
use crate::{
    Action, ChunkIndex, Digest, FailureReason, JobId, ReplicaId, ReplicationPolicy, Report, Scheduler, TrustChange,
    Validated, Volunteer, WorkerId,
};

impl Scheduler {
    pub(crate) fn report(
        &mut self,
        worker: WorkerId,
        replica: ReplicaId,
        report: Report,
        compute_us: u64,
        actions: &mut Vec<Action>,
    ) {
        let Some(held) = self.take_replica(worker, replica, actions) else {
            return;
        };
        let Some(job) = self.jobs.get_mut(&held.job) else {
            return;
        };
        let chunk = &mut job.chunks[held.chunk as usize];
        if chunk.finished {
            return;
        }
        match report {
            Report::Result { digest, work_units } => {
                // Whatever validation makes of it, the volunteer's machine did its part.
                self.error_runs.remove(&held.volunteer);
                chunk.results.push(crate::state::Reported {
                    replica,
                    volunteer: held.volunteer.clone(),
                    digest,
                    work_units,
                });
                job.observe_chunk_time(compute_us);
                if job.backups {
                    job.observe_round_trip(self.now.0.saturating_sub(held.sent_at.0));
                }
                if let Some(estimate) = job.chunk_time_us {
                    self.program_chunk_time_us.insert(job.program.clone(), estimate);
                }
                self.evaluate(held.job, held.chunk, actions);
                self.back_up_stragglers(held.job, actions);
            }
            Report::Error => {
                withdraw_trust(chunk, job.policy);
                // One volunteer's errors use up one of the chunk's retries, however often it errs: otherwise
                // a volunteer alone online could fail other people's chunks for good. (An owner-only job
                // has only its owner to run it, and the owner is not attacking itself.)
                let again = chunk.errored_on.contains(&held.volunteer);
                if !again || job.policy.owner_only {
                    chunk.errors += 1;
                }
                forget_holder(&mut chunk.holders, &held.volunteer);
                if !again {
                    chunk.errored_on.push(held.volunteer.clone());
                }
                let run = self.error_runs.entry(held.volunteer.clone()).or_default();
                *run = run.saturating_add(1);
                if chunk.errors >= job.policy.max_error_replicas {
                    self.fail_chunk(held.job, held.chunk, Some(replica), FailureReason::Errors, actions);
                } else {
                    actions.push(Action::ReplicaFailed { job: held.job, chunk: held.chunk, replica, worker });
                    self.settle(held.job, held.chunk, Some(replica), actions);
                }
            }
            Report::Invalid => {
                withdraw_trust(chunk, job.policy);
                // The volunteer stays among the chunk's holders, so it never gets this chunk again.
                self.trust.insert(held.volunteer.clone(), 0);
                let run = self.error_runs.entry(held.volunteer.clone()).or_default();
                *run = run.saturating_add(1);
                actions.push(Action::ReplicaInvalid {
                    job: held.job,
                    chunk: held.chunk,
                    replica,
                    volunteer: held.volunteer.clone(),
                });
                self.settle(held.job, held.chunk, None, actions);
            }
        }
        self.fill_all(actions);
    }

    /// Accepts the chunk's result if a quorum agrees; asks for another replica if the results in hand
    /// disagree; otherwise waits for the replicas still out.
    fn evaluate(&mut self, job_id: JobId, index: ChunkIndex, actions: &mut Vec<Action>) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let chunk = &mut job.chunks[index as usize];
        let agreed: Option<Digest> = chunk.results.iter().map(|result| result.digest).find(|digest| {
            chunk.results.iter().filter(|other| other.digest == *digest).count() >= chunk.quorum as usize
        });
        let Some(digest) = agreed else {
            if chunk.in_flight.is_empty() && chunk.results.len() >= chunk.wanted as usize {
                // Every result is in and there is no quorum: one more opinion is needed.
                chunk.wanted += 1;
            }
            self.settle(job_id, index, None, actions);
            return;
        };
        let validated: Vec<Validated> = chunk
            .results
            .iter()
            .filter(|result| result.digest == digest)
            .map(|result| Validated {
                replica: result.replica,
                volunteer: result.volunteer.clone(),
                work_units: result.work_units,
            })
            .collect();
        let invalid: Vec<Volunteer> = chunk
            .results
            .iter()
            .filter(|result| result.digest != digest)
            .map(|result| result.volunteer.clone())
            .collect();
        let canonical = validated[0].replica;
        // Trust grows only from results other volunteers confirmed; otherwise a volunteer could earn it
        // by running its owner's own single-replica jobs, or by being trusted.
        let checked = chunk.quorum >= 2;
        let mut trust = Vec::new();
        if checked {
            for result in &validated {
                let run = self.trust.entry(result.volunteer.clone()).or_default();
                *run = run.saturating_add(1);
                trust.push(TrustChange { volunteer: result.volunteer.clone(), valid: true, run: *run });
            }
            for volunteer in &invalid {
                self.trust.insert(volunteer.clone(), 0);
                trust.push(TrustChange { volunteer: volunteer.clone(), valid: false, run: 0 });
            }
        }
        let reported = self.close_chunk(job_id, index, actions);
        let attempts = self.jobs.get(&job_id).map_or(0, |job| job.chunks[index as usize].issued);
        actions.push(Action::StoreResult {
            job: job_id,
            chunk: index,
            canonical,
            validated,
            invalid,
            reported,
            attempts,
            checked,
            trust,
        });
        self.finish_chunk(job_id, actions);
    }

    /// A replica was lost: its lease lapsed or its worker went away.
    pub(crate) fn lose(&mut self, lost: Replica, replica: ReplicaId, actions: &mut Vec<Action>) {
        let Some(job) = self.jobs.get_mut(&lost.job) else {
            return;
        };
        job.remove_replica(lost.chunk, replica);
        let chunk = &mut job.chunks[lost.chunk as usize];
        withdraw_trust(chunk, job.policy);
        forget_holder(&mut chunk.holders, &lost.volunteer);
        if chunk.lost_on.contains(&lost.volunteer) {
            // A volunteer that keeps taking the chunk and dropping it (reconnecting, letting leases lapse)
            // uses up one of its replicas, not all of them.
            chunk.issued = chunk.issued.saturating_sub(1);
        } else {
            chunk.lost_on.push(lost.volunteer);
        }
        self.settle(lost.job, lost.chunk, None, actions);
    }

    /// A replica came back unstarted: it does not count as an attempt.
    pub(crate) fn unissue(&mut self, released: &Replica) {
        let Some(job) = self.jobs.get_mut(&released.job) else {
            return;
        };
        let chunk = &mut job.chunks[released.chunk as usize];
        withdraw_trust(chunk, job.policy);
        chunk.issued = chunk.issued.saturating_sub(1);
        forget_holder(&mut chunk.holders, &released.volunteer);
        // The volunteer did not want it: it goes to someone else if anyone else can take it (a worker that
        // handed back everything it got would otherwise be given the same chunks again at once).
        if !chunk.lost_on.contains(&released.volunteer) {
            chunk.lost_on.push(released.volunteer.clone());
        }
        self.requeue_if_needed(released.job, released.chunk);
    }

    /// After a change to a chunk: fails it if it can get no further (nothing out and no replica left to
    /// send), otherwise puts it back in the queue if it needs another replica.
    fn settle(&mut self, job_id: JobId, index: ChunkIndex, last_error: Option<ReplicaId>, actions: &mut Vec<Action>) {
        let Some(job) = self.jobs.get(&job_id) else {
            return;
        };
        let chunk = &job.chunks[index as usize];
        // Stuck: it needs more than it has and is allowed to send, and nothing is out.
        if chunk.short_of_results() && !chunk.needs_replica() && chunk.in_flight.is_empty() {
            let reason = if !chunk.results.is_empty() {
                let mut digests: Vec<Digest> = chunk.results.iter().map(|result| result.digest).collect();
                digests.sort_unstable();
                digests.dedup();
                FailureReason::Disagreement { distinct_results: digests.len() as u32 }
            } else if chunk.errors > 0 {
                FailureReason::Errors
            } else {
                FailureReason::Lost
            };
            let replica = if reason == FailureReason::Errors { last_error } else { None };
            self.fail_chunk(job_id, index, replica, reason, actions);
            return;
        }
        self.requeue_if_needed(job_id, index);
    }

    fn fail_chunk(
        &mut self,
        job_id: JobId,
        index: ChunkIndex,
        replica: Option<ReplicaId>,
        reason: FailureReason,
        actions: &mut Vec<Action>,
    ) {
        let reported = self.close_chunk(job_id, index, actions);
        let attempts = self.jobs.get(&job_id).map_or(0, |job| job.chunks[index as usize].issued);
        actions.push(Action::StoreFailure { job: job_id, chunk: index, replica, reason, reported, attempts });
        self.finish_chunk(job_id, actions);
    }

    /// Marks the chunk final, revokes its replicas still out, and returns the replicas whose reports the
    /// edge may hold.
    fn close_chunk(&mut self, job_id: JobId, index: ChunkIndex, actions: &mut Vec<Action>) -> Vec<ReplicaId> {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return Vec::new();
        };
        let chunk = &mut job.chunks[index as usize];
        chunk.finished = true;
        let reported = chunk.results.iter().map(|result| result.replica).collect();
        let out = job.take_replicas(index);
        for replica in out {
            if let Some(held) = self.unhold_replica(replica) {
                actions.push(Action::Revoke { worker: held.worker, replica });
            }
        }
        reported
    }
}

/// Removes one occurrence of `volunteer` from a chunk's holders.
fn forget_holder(holders: &mut Vec<Volunteer>, volunteer: &Volunteer) {
    if let Some(position) = holders.iter().position(|holder| holder == volunteer) {
        holders.remove(position);
    }
}

/// A chunk given to one trusted volunteer alone whose replica came to nothing (lost, errored, handed
/// back) goes back to the job's replication: the trust was in that volunteer, not in whoever runs the
/// chunk next.
fn withdraw_trust(chunk: &mut Chunk, policy: ReplicationPolicy) {
    if chunk.results.is_empty() && chunk.quorum < policy.min_quorum {
        chunk.wanted = policy.target_replicas;
        chunk.quorum = policy.min_quorum;
    }
}
