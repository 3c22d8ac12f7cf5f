//! Random interleavings of joins, leaves, reports, releases and ticks, with honest and cheating volunteers.

use super::*;
use crate::*;
use std::collections::{BTreeMap, BTreeSet};

/// A deterministic pseudo-random sequence for the simulation below.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

/// Random interleavings of joins, leaves, reports, releases, heartbeats and ticks never lose a chunk, never
/// finish one twice and never hold one replica at two workers, with backups of slow chunks or without.
#[test]
fn random_histories_finish_every_chunk_exactly_once() {
    let mut backups = 0;
    for seed in 0..200 {
        let mut random = Lcg(seed);
        let mut harness = Harness::new();
        let mut held: BTreeMap<ReplicaId, (WorkerId, JobId, ChunkIndex)> = BTreeMap::new();
        let mut final_outcomes: BTreeMap<(JobId, ChunkIndex), usize> = BTreeMap::new();
        let mut finished_jobs = BTreeSet::new();
        let mut workers: Vec<WorkerId> = Vec::new();
        let mut next_worker = 1;
        let jobs: Vec<(JobId, u32)> = vec![(1, 1 + random.below(20) as u32), (2, 1 + random.below(20) as u32)];
        for &(job, chunk_count) in &jobs {
            // Job 2 is a session's round: its slow chunks get backups, which must change none of this.
            let actions = if job == 2 {
                harness.add_round(
                    job,
                    chunk_count,
                    ReplicationPolicy { owner_only: false, ..ReplicationPolicy::new(1, 1, 1) },
                )
            } else {
                harness.add_job(job, chunk_count, 1)
            };
            apply(&actions, &mut held, &mut final_outcomes, &mut finished_jobs);
        }
        for _step in 0..2_000 {
            let actions = match random.below(10) {
                0 => {
                    workers.push(next_worker);
                    next_worker += 1;
                    harness.join(next_worker - 1, 1 + random.below(3) as u32)
                }
                1 if !workers.is_empty() => {
                    let worker = workers.remove(random.below(workers.len() as u64) as usize);
                    held.retain(|_, holder| holder.0 != worker);
                    harness.feed(Event::WorkerLeft { worker })
                }
                2 => {
                    harness.advance(random.below(3_000));
                    harness.feed(Event::Tick)
                }
                3 if !held.is_empty() => {
                    let (&replica, &(worker, _, _)) =
                        held.iter().nth(random.below(held.len() as u64) as usize).unwrap();
                    held.remove(&replica);
                    harness.feed(Event::ReplicaReleased { worker, replica })
                }
                _ if !held.is_empty() => {
                    let (&replica, &(worker, _, _)) =
                        held.iter().nth(random.below(held.len() as u64) as usize).unwrap();
                    // Sometimes the wrong worker claims the replica.
                    let sender = if random.below(10) == 0 { worker + 1 } else { worker };
                    if sender == worker {
                        held.remove(&replica);
                    }
                    for &alive in &workers {
                        harness.feed(Event::Heartbeat { worker: alive });
                    }
                    harness.report(sender, replica, random.below(4) != 0)
                }
                _ => Vec::new(),
            };
            for action in &actions {
                if let Action::Disconnect { worker } = action {
                    workers.retain(|alive| alive != worker);
                    held.retain(|_, holder| holder.0 != *worker);
                }
                if let Action::Revoke { replica, .. } = action {
                    held.remove(replica);
                }
            }
            apply(&actions, &mut held, &mut final_outcomes, &mut finished_jobs);
            // The progress kept incrementally agrees with a recount of what is out and what is final.
            for &(job, chunk_count) in &jobs {
                let Some(progress) = harness.scheduler.job_progress(job) else { continue };
                let running: BTreeSet<ChunkIndex> =
                    held.values().filter(|holder| holder.1 == job).map(|holder| holder.2).collect();
                let finished = final_outcomes.keys().filter(|(of, _)| *of == job).count() as u32;
                assert_eq!(progress.running, running.len() as u32, "seed {seed}: running chunks of job {job}");
                assert_eq!(progress.pending, chunk_count - finished - progress.running, "seed {seed}: job {job}");
                let volunteers: BTreeSet<&str> = harness
                    .scheduler
                    .replicas
                    .values()
                    .filter(|replica| replica.job == job)
                    .map(|replica| replica.volunteer.as_str())
                    .collect();
                assert_eq!(progress.volunteers, volunteers.len() as u32, "seed {seed}: volunteers of job {job}");
            }
        }
        // Finish everything with one reliable worker.
        harness.join(1_000, 4);
        for worker in workers.drain(..) {
            let actions = harness.feed(Event::WorkerLeft { worker });
            held.retain(|_, holder| holder.0 != worker);
            apply(&actions, &mut held, &mut final_outcomes, &mut finished_jobs);
        }
        let actions = harness.feed(Event::Tick);
        apply(&actions, &mut held, &mut final_outcomes, &mut finished_jobs);
        let mut rounds = 0;
        while let Some((&replica, &(worker, _, _))) = held.iter().next() {
            held.remove(&replica);
            let actions = harness.report(worker, replica, true);
            apply(&actions, &mut held, &mut final_outcomes, &mut finished_jobs);
            rounds += 1;
            assert!(rounds < 10_000, "seed {seed}: the simulation does not converge");
        }
        for &(job, chunk_count) in &jobs {
            for chunk in 0..chunk_count {
                assert_eq!(final_outcomes.get(&(job, chunk)), Some(&1), "seed {seed}: job {job} chunk {chunk}");
            }
            assert!(finished_jobs.contains(&job), "seed {seed}: job {job} never finished");
        }
        assert_eq!(harness.scheduler.stats().replicas_in_flight, 0);
        backups += harness.scheduler.stats().backup_replicas;
    }
    assert!(backups > 0, "the histories include backups");
}

fn apply(
    actions: &[Action],
    held: &mut BTreeMap<ReplicaId, (WorkerId, JobId, ChunkIndex)>,
    final_outcomes: &mut BTreeMap<(JobId, ChunkIndex), usize>,
    finished_jobs: &mut BTreeSet<JobId>,
) {
    for action in actions {
        match *action {
            Action::Assign { worker, replica, job, chunk } => {
                // One replica per chunk (these jobs want one result), but for one backup of a round's slow
                // chunk (job 2), never at the same worker.
                let out: Vec<WorkerId> = held
                    .values()
                    .filter(|holder| holder.1 == job && holder.2 == chunk)
                    .map(|holder| holder.0)
                    .collect();
                let allowed = if job == 2 { 1 } else { 0 };
                assert!(out.len() <= allowed, "chunk {job}/{chunk} is in flight {} times", out.len() + 1);
                assert!(!out.contains(&worker), "chunk {job}/{chunk} is in flight twice at worker {worker}");
                held.insert(replica, (worker, job, chunk));
            }
            Action::StoreResult { job, chunk, .. } | Action::StoreFailure { job, chunk, .. } => {
                *final_outcomes.entry((job, chunk)).or_default() += 1;
            }
            Action::JobFinished { job } => {
                assert!(finished_jobs.insert(job), "job {job} finished twice");
            }
            _ => {}
        }
    }
}

/// Random interleavings with replication, honest and cheating volunteers: every chunk is decided exactly
/// once, and an accepted result is always the honest one.
#[test]
fn random_histories_with_cheaters_accept_only_honest_results() {
    for seed in 0..100 {
        let mut random = Lcg(seed);
        let mut harness = Harness::with_prefetch(1);
        let mut held: BTreeMap<ReplicaId, WorkerId> = BTreeMap::new();
        let mut decided: BTreeMap<ChunkIndex, usize> = BTreeMap::new();
        let mut honest_replicas: BTreeSet<ReplicaId> = BTreeSet::new();
        let chunk_count = 1 + random.below(15) as u32;
        // Workers 1..=6; 5 and 6 cheat with garbage of their own (cheaters do not agree with each other).
        let cheaters = [5, 6];
        for worker in 1..=6 {
            for assignment in assigns(&harness.join(worker, 1)) {
                held.insert(assignment.1, assignment.0);
            }
        }
        let record = |actions: &[Action],
                      held: &mut BTreeMap<ReplicaId, WorkerId>,
                      decided: &mut BTreeMap<ChunkIndex, usize>,
                      honest: &BTreeSet<ReplicaId>| {
            for action in actions {
                match action {
                    Action::Assign { worker, replica, .. } => {
                        held.insert(*replica, *worker);
                    }
                    Action::Revoke { replica, .. } => {
                        held.remove(replica);
                    }
                    Action::StoreResult { chunk, validated, .. } => {
                        *decided.entry(*chunk).or_default() += 1;
                        assert!(
                            validated.iter().all(|replica| honest.contains(&replica.replica)),
                            "a forged result won"
                        );
                    }
                    Action::StoreFailure { chunk, .. } => *decided.entry(*chunk).or_default() += 1,
                    _ => {}
                }
            }
        };
        let actions = harness.add_job_with(1, chunk_count, replicated());
        record(&actions, &mut held, &mut decided, &honest_replicas);
        let mut garbage = 100u8;
        let mut steps = 0;
        while let Some((&replica, &worker)) = held.iter().nth(random.below(held.len().max(1) as u64) as usize) {
            held.remove(&replica);
            let report = if cheaters.contains(&worker) {
                garbage = garbage.wrapping_add(1);
                Report::Result { digest: [garbage; 32], work_units: 1 }
            } else if random.below(8) == 0 {
                Report::Error
            } else {
                honest_replicas.insert(replica);
                Report::Result { digest: HONEST, work_units: 1 }
            };
            let actions = harness.report_with(worker, replica, report);
            record(&actions, &mut held, &mut decided, &honest_replicas);
            steps += 1;
            assert!(steps < 10_000, "seed {seed}: no convergence");
        }
        for chunk in 0..chunk_count {
            assert_eq!(decided.get(&chunk), Some(&1), "seed {seed}: chunk {chunk}");
        }
    }
}
