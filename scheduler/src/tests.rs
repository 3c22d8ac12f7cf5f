//! Step-by-step tests of the scheduler with a fake clock.

use std::collections::{BTreeMap, BTreeSet};

use crate::*;

const LEASE: u64 = 5_000;
const TIME_LIMIT: u64 = 60_000;
const MEMORY: u64 = 1 << 30;

/// A scheduler and a fake clock.
struct Harness {
    scheduler: Scheduler,
    now: u64,
    /// What joining workers ask for.
    prefetch: u32,
}

impl Harness {
    fn new() -> Harness {
        Harness::with_prefetch(2)
    }

    fn with_prefetch(prefetch_per_slot: u32) -> Harness {
        let config = Config { lease_timeout_ms: LEASE, prefetch_per_slot, prefetch_buffer_us: 20_000 };
        Harness { scheduler: Scheduler::new(config, 1000), now: 0, prefetch: prefetch_per_slot }
    }

    fn advance(&mut self, milliseconds: u64) {
        self.now += milliseconds;
    }

    fn feed(&mut self, event: Event) -> Vec<Action> {
        self.scheduler.handle_collect(Millis(self.now), event)
    }

    fn add_job(&mut self, id: JobId, chunk_count: u32, max_retries: u32) -> Vec<Action> {
        self.feed(Event::JobAdded(JobParams {
            id,
            chunk_count,
            policy: RetryPolicy::with_max_retries(max_retries),
            time_limit_ms: TIME_LIMIT,
            memory_bytes: MEMORY,
            program: "program".into(),
            finished: Vec::new(),
        }))
    }

    fn join(&mut self, worker: WorkerId, slots: u32) -> Vec<Action> {
        let max_prefetch_per_slot = self.prefetch;
        self.feed(Event::WorkerJoined { worker, slots, max_memory_bytes: u64::MAX, max_prefetch_per_slot })
    }

    fn report(&mut self, worker: WorkerId, replica: ReplicaId, success: bool) -> Vec<Action> {
        // One millisecond per chunk: short enough that workers keep the default queue.
        self.feed(Event::ReplicaReported { worker, replica, success, compute_us: 1_000 })
    }
}

/// The assignments among `actions`, as (worker, replica, job, chunk).
fn assigns(actions: &[Action]) -> Vec<(WorkerId, ReplicaId, JobId, ChunkIndex)> {
    actions
        .iter()
        .filter_map(|action| match *action {
            Action::Assign { worker, replica, job, chunk } => Some((worker, replica, job, chunk)),
            _ => None,
        })
        .collect()
}

fn stored(actions: &[Action]) -> Vec<(ChunkIndex, ChunkOutcome)> {
    actions
        .iter()
        .filter_map(|action| match *action {
            Action::StoreResult { chunk, outcome, .. } => Some((chunk, outcome)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_worker_gets_one_replica_per_slot_plus_its_prefetch_queue() {
    let mut harness = Harness::new();
    harness.join(1, 2);
    let actions = harness.add_job(7, 100, 2);
    let sent = assigns(&actions);
    // 2 slots * (1 running + 2 prefetched).
    assert_eq!(sent.len(), 6);
    assert!(sent.iter().all(|&(worker, _, job, _)| worker == 1 && job == 7));
    let chunks: Vec<ChunkIndex> = sent.iter().map(|assignment| assignment.3).collect();
    assert_eq!(chunks, [0, 1, 2, 3, 4, 5]);
    // Replica ids start where the edge told the scheduler to start.
    assert_eq!(sent[0].1, 1000);
}

#[test]
fn each_report_refills_the_pipeline_and_the_job_finishes_once() {
    let mut harness = Harness::new();
    harness.join(1, 1);
    let mut in_flight = assigns(&harness.add_job(1, 10, 2));
    let mut finished_chunks = BTreeSet::new();
    let mut job_finished = 0;
    while let Some((worker, replica, _, chunk)) = in_flight.first().copied() {
        in_flight.remove(0);
        let actions = harness.report(worker, replica, true);
        assert_eq!(stored(&actions), [(chunk, ChunkOutcome::Succeeded)]);
        assert!(finished_chunks.insert(chunk), "chunk {chunk} finished twice");
        job_finished += actions.iter().filter(|action| matches!(action, Action::JobFinished { job: 1 })).count();
        in_flight.extend(assigns(&actions));
        // The pipeline never holds more than capacity.
        assert!(in_flight.len() <= 3);
    }
    assert_eq!(finished_chunks.len(), 10);
    assert_eq!(job_finished, 1);
    assert_eq!(harness.scheduler.job_progress(1), None);
}

#[test]
fn a_small_job_spreads_across_all_workers() {
    let mut harness = Harness::new();
    for worker in 1..=4 {
        harness.join(worker, 1);
    }
    let sent = assigns(&harness.add_job(1, 8, 2));
    let per_worker = sent.iter().fold(BTreeMap::<WorkerId, usize>::new(), |mut counts, assignment| {
        *counts.entry(assignment.0).or_default() += 1;
        counts
    });
    assert_eq!(per_worker, BTreeMap::from([(1, 2), (2, 2), (3, 2), (4, 2)]));
}

#[test]
fn two_jobs_are_served_round_robin() {
    let mut harness = Harness::with_prefetch(0);
    harness.join(1, 4);
    harness.add_job(1, 100, 2);
    // Job 1 took every slot; the newer job 2 gets the next freed slot, then they alternate.
    harness.add_job(2, 100, 2);
    let mut seen = Vec::new();
    for replica in 1000..1004 {
        let actions = harness.report(1, replica, true);
        seen.extend(assigns(&actions).iter().map(|a| a.2));
    }
    assert_eq!(seen, [2, 1, 2, 1]);
}

#[test]
fn a_closed_connection_requeues_its_replicas_at_once() {
    let mut harness = Harness::new();
    harness.join(1, 1);
    harness.join(2, 1);
    let sent = assigns(&harness.add_job(1, 4, 2));
    let held_by_one: BTreeSet<ChunkIndex> = sent.iter().filter(|assignment| assignment.0 == 1).map(|a| a.3).collect();
    assert_eq!(held_by_one.len(), 2);
    // Worker 2 finishes its two chunks, then worker 1 goes away.
    for (_, replica, _, _) in sent.iter().filter(|assignment| assignment.0 == 2) {
        harness.report(2, *replica, true);
    }
    let actions = harness.feed(Event::WorkerLeft { worker: 1 });
    let moved: BTreeSet<ChunkIndex> = assigns(&actions).iter().map(|a| a.3).collect();
    assert_eq!(moved, held_by_one);
    assert!(assigns(&actions).iter().all(|assignment| assignment.0 == 2));
}

#[test]
fn a_silent_worker_loses_its_leases_after_the_timeout_but_a_heartbeating_one_keeps_them() {
    let mut harness = Harness::new();
    harness.join(1, 1);
    harness.join(2, 1);
    harness.add_job(1, 2, 2);
    harness.advance(LEASE - 1);
    harness.feed(Event::Heartbeat { worker: 2 });
    assert!(harness.feed(Event::Tick).is_empty(), "nothing expires before the timeout");
    harness.advance(2);
    let actions = harness.feed(Event::Tick);
    assert_eq!(actions[0], Action::Disconnect { worker: 1 });
    assert!(!actions.contains(&Action::Disconnect { worker: 2 }));
    // The lost chunk goes to the worker that is still alive, but only when it has room: worker 2 holds
    // chunk 1 and had capacity 3, so it takes chunk 0 straight away.
    let moved = assigns(&actions);
    assert_eq!(moved.len(), 1);
    assert_eq!((moved[0].0, moved[0].3), (2, 0));
}

#[test]
fn results_for_leases_that_are_gone_or_held_by_someone_else_are_ignored() {
    let mut harness = Harness::new();
    harness.join(1, 1);
    harness.join(2, 1);
    let sent = assigns(&harness.add_job(1, 1, 2));
    let (holder, replica, _, _) = sent[0];
    let other = if holder == 1 { 2 } else { 1 };
    let forged = harness.report(other, replica, true);
    assert_eq!(forged, [Action::Ignored { replica, reason: IgnoredReason::NotLeasedToSender }]);
    assert_eq!(harness.scheduler.replica_holder(replica), Some(holder));
    let never_sent = harness.report(holder, 99, true);
    assert_eq!(never_sent, [Action::Ignored { replica: 99, reason: IgnoredReason::NotInFlight }]);
    // The holder's genuine report is accepted exactly once; a replay is ignored.
    assert_eq!(stored(&harness.report(holder, replica, true)), [(0, ChunkOutcome::Succeeded)]);
    assert_eq!(
        harness.report(holder, replica, true),
        [Action::Ignored { replica, reason: IgnoredReason::NotInFlight }]
    );
}

#[test]
fn a_report_after_the_lease_expired_is_ignored_and_the_new_holder_wins() {
    let mut harness = Harness::new();
    harness.join(1, 1);
    let (_, first, _, _) = assigns(&harness.add_job(1, 1, 2))[0];
    harness.advance(LEASE + 1);
    harness.feed(Event::Tick);
    let (_, second, _, _) = assigns(&harness.join(2, 1))[0];
    assert_ne!(first, second);
    let late = harness.report(1, first, true);
    assert_eq!(late, [Action::Ignored { replica: first, reason: IgnoredReason::NotInFlight }]);
    assert_eq!(stored(&harness.report(2, second, true)), [(0, ChunkOutcome::Succeeded)]);
}

#[test]
fn a_failed_chunk_is_retried_on_another_worker_then_failed_for_good() {
    let mut harness = Harness::with_prefetch(0);
    harness.join(1, 1);
    harness.join(2, 1);
    harness.join(3, 1);
    let sent = assigns(&harness.add_job(1, 1, 2));
    assert_eq!(sent.len(), 1);
    let mut holder = sent[0].0;
    let mut replica = sent[0].1;
    let mut tried = vec![holder];
    for attempt in 1..=3 {
        let actions = harness.report(holder, replica, false);
        if attempt < 3 {
            assert!(actions.iter().any(|action| matches!(action, Action::ReplicaFailed { .. })));
            let next = assigns(&actions);
            assert_eq!(next.len(), 1, "exactly one retry goes out");
            assert!(!tried.contains(&next[0].0), "the retry goes to a worker that has not failed it");
            holder = next[0].0;
            replica = next[0].1;
            tried.push(holder);
        } else {
            assert_eq!(stored(&actions), [(0, ChunkOutcome::Failed)]);
            assert!(actions.contains(&Action::JobFinished { job: 1 }));
            let attempts = actions.iter().find_map(|action| match action {
                Action::StoreResult { attempts, .. } => Some(*attempts),
                _ => None,
            });
            assert_eq!(attempts, Some(3));
        }
    }
}

#[test]
fn a_lone_worker_retries_a_failed_chunk_itself() {
    let mut harness = Harness::with_prefetch(0);
    harness.join(1, 1);
    let (_, replica, _, _) = assigns(&harness.add_job(1, 1, 1))[0];
    let retry = assigns(&harness.report(1, replica, false));
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0].0, 1);
    assert_eq!(stored(&harness.report(1, retry[0].1, false)), [(0, ChunkOutcome::Failed)]);
}

#[test]
fn a_chunk_that_is_lost_again_and_again_is_abandoned_not_retried_forever() {
    let mut harness = Harness::with_prefetch(0);
    harness.add_job(1, 1, 0);
    let policy = RetryPolicy::with_max_retries(0);
    let mut abandoned = false;
    for worker in 1..=u64::from(policy.max_total_replicas) + 1 {
        let actions = harness.join(worker, 1);
        let left = harness.feed(Event::WorkerLeft { worker });
        if left.iter().any(|action| matches!(action, Action::StoreAbandoned { .. })) {
            assert_eq!(worker, u64::from(policy.max_total_replicas));
            assert!(left.contains(&Action::JobFinished { job: 1 }));
            abandoned = true;
            break;
        }
        assert_eq!(assigns(&actions).len(), 1);
    }
    assert!(abandoned);
}

#[test]
fn an_overdue_replica_is_revoked_and_requeued_even_if_its_worker_heartbeats() {
    let mut harness = Harness::with_prefetch(0);
    harness.join(1, 1);
    let (_, replica, _, _) = assigns(&harness.add_job(1, 1, 2))[0];
    let overdue_after = TIME_LIMIT + LEASE;
    let mut elapsed = 0;
    while elapsed <= overdue_after {
        harness.advance(1_000);
        elapsed += 1_000;
        harness.feed(Event::Heartbeat { worker: 1 });
        let actions = harness.feed(Event::Tick);
        if elapsed <= overdue_after {
            assert!(actions.is_empty(), "nothing happens at {elapsed} ms");
        } else {
            assert_eq!(actions[0], Action::Revoke { worker: 1, replica });
            // The only worker gets the chunk again under a new replica id.
            let again = assigns(&actions);
            assert_eq!(again.len(), 1);
            assert_ne!(again[0].1, replica);
        }
    }
}

#[test]
fn released_replicas_go_back_without_counting_as_attempts() {
    let mut harness = Harness::new();
    harness.join(1, 1);
    let sent = assigns(&harness.add_job(1, 3, 0));
    harness.feed(Event::WorkerSlots { worker: 1, slots: 0 });
    for _ in 0..20 {
        for (_, replica, _, _) in &sent {
            harness.feed(Event::ReplicaReleased { worker: 1, replica: *replica });
        }
    }
    assert_eq!(harness.scheduler.job_progress(1), Some(JobProgress { pending: 3, running: 0 }));
    // Releasing many times never abandons anything, and a fresh worker gets all three chunks.
    let again = assigns(&harness.join(2, 1));
    assert_eq!(again.len(), 3);
}

#[test]
fn a_recovered_job_only_dispatches_unfinished_chunks() {
    let mut harness = Harness::new();
    harness.join(1, 4);
    let actions = harness.feed(Event::JobAdded(JobParams {
        id: 5,
        chunk_count: 6,
        policy: RetryPolicy::with_max_retries(2),
        time_limit_ms: TIME_LIMIT,
        memory_bytes: MEMORY,
        program: "program".into(),
        finished: vec![0, 2, 3],
    }));
    let chunks: BTreeSet<ChunkIndex> = assigns(&actions).iter().map(|a| a.3).collect();
    assert_eq!(chunks, BTreeSet::from([1, 4, 5]));
    let all_done = harness.feed(Event::JobAdded(JobParams {
        id: 6,
        chunk_count: 2,
        policy: RetryPolicy::with_max_retries(2),
        time_limit_ms: TIME_LIMIT,
        memory_bytes: MEMORY,
        program: "program".into(),
        finished: vec![0, 1],
    }));
    assert_eq!(all_done, [Action::JobFinished { job: 6 }]);
}

#[test]
fn cancelling_a_job_revokes_its_replicas_and_frees_the_workers() {
    let mut harness = Harness::with_prefetch(0);
    harness.join(1, 2);
    harness.add_job(1, 10, 2);
    harness.add_job(2, 10, 2);
    let actions = harness.feed(Event::JobCancelled { job: 1 });
    let revoked = actions.iter().filter(|action| matches!(action, Action::Revoke { .. })).count();
    let reassigned = assigns(&actions);
    assert!(revoked >= 1);
    assert_eq!(reassigned.len(), revoked);
    assert!(reassigned.iter().all(|assignment| assignment.2 == 2));
}

/// A deterministic pseudo-random sequence for the simulation below.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

/// Random interleavings of joins, leaves, reports, releases, heartbeats and ticks never lose a chunk, never
/// finish one twice and never hold one replica at two workers.
#[test]
fn random_histories_finish_every_chunk_exactly_once() {
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
            let actions = harness.add_job(job, chunk_count, 1);
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
    }
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
                let already = held.values().any(|holder| holder.1 == job && holder.2 == chunk);
                assert!(!already, "chunk {job}/{chunk} is in flight twice");
                held.insert(replica, (worker, job, chunk));
            }
            Action::StoreResult { job, chunk, .. } | Action::StoreAbandoned { job, chunk, .. } => {
                *final_outcomes.entry((job, chunk)).or_default() += 1;
            }
            Action::JobFinished { job } => {
                assert!(finished_jobs.insert(job), "job {job} finished twice");
            }
            _ => {}
        }
    }
}

#[test]
fn a_job_needing_more_memory_than_a_worker_offers_goes_to_workers_that_have_it() {
    let mut harness = Harness::new();
    harness.feed(Event::WorkerJoined { worker: 1, slots: 1, max_memory_bytes: MEMORY / 2, max_prefetch_per_slot: 2 });
    let none = harness.add_job(1, 4, 0);
    assert!(assigns(&none).is_empty(), "the small worker gets nothing of a job it cannot hold");
    let big = assigns(&harness.feed(Event::WorkerJoined {
        worker: 2,
        slots: 1,
        max_memory_bytes: MEMORY,
        max_prefetch_per_slot: 2,
    }));
    assert_eq!(big.len(), 3);
    assert!(big.iter().all(|assignment| assignment.0 == 2));
    // A failed chunk is retried by the same big worker rather than waiting for the small one.
    let retry = assigns(&harness.report(2, big[0].1, false));
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0].0, 2);
}

#[test]
fn workers_queue_more_of_short_chunks_and_none_of_long_ones() {
    let mut harness = Harness::new();
    // A worker with a slow round trip (a browser) asks for a deep queue.
    harness.feed(Event::WorkerJoined { worker: 1, slots: 1, max_memory_bytes: u64::MAX, max_prefetch_per_slot: 8 });
    let first = assigns(&harness.add_job(1, 100, 0));
    assert_eq!(first.len(), 3, "while the chunk time is unknown, the default queue of 2");
    // Job 1's chunks turn out to take 100 µs: 20 ms of them is more than the worker's 8.
    let refill = assigns(&harness.feed(Event::ReplicaReported {
        worker: 1,
        replica: first[0].1,
        success: true,
        compute_us: 100,
    }));
    assert_eq!(refill.len(), 7);
    assert_eq!(harness.scheduler.stats().replicas_in_flight, 9, "the worker now holds 1 + 8");
    // A job with 10-second chunks still gets the running slot when one frees up...
    harness.add_job(2, 100, 0);
    let next = assigns(&harness.feed(Event::ReplicaReported {
        worker: 1,
        replica: refill[0].1,
        success: true,
        compute_us: 100,
    }));
    let long = next.iter().find(|assignment| assignment.2 == 2).expect("job 2 gets a chunk").1;
    // ...but once its chunk time is known, none of it is queued: the worker never holds two of it, while it
    // keeps a deep queue of the short job.
    let mut job_two_chunks = 1;
    let mut outstanding: Vec<ReplicaId> = refill[1..].iter().map(|assignment| assignment.1).collect();
    outstanding.extend(next.iter().filter(|assignment| assignment.2 == 1).map(|assignment| assignment.1));
    let mut finished_long = Some(long);
    for _ in 0..6 {
        let actions = match finished_long.take() {
            Some(replica) => {
                harness.feed(Event::ReplicaReported { worker: 1, replica, success: true, compute_us: 10_000_000 })
            }
            None => {
                let replica = outstanding.remove(0);
                harness.feed(Event::ReplicaReported { worker: 1, replica, success: true, compute_us: 100 })
            }
        };
        for assignment in assigns(&actions) {
            if assignment.2 == 2 {
                job_two_chunks += 1;
                finished_long = Some(assignment.1);
            } else {
                outstanding.push(assignment.1);
            }
        }
        let job_two_held = harness.scheduler.replicas.values().filter(|held| held.job == 2).count();
        assert!(job_two_held <= 1, "the long job is never queued");
    }
    assert!(job_two_chunks >= 2, "the long job keeps running on the worker");
}

#[test]
fn a_new_job_starts_from_what_its_program_measured_before() {
    let mut harness = Harness::new();
    harness.feed(Event::WorkerJoined { worker: 1, slots: 1, max_memory_bytes: u64::MAX, max_prefetch_per_slot: 8 });
    let first = assigns(&harness.add_job(1, 4, 0));
    assert_eq!(first.len(), 3, "nothing known yet: the default queue");
    for (_, replica, _, _) in &first {
        harness.feed(Event::ReplicaReported { worker: 1, replica: *replica, success: true, compute_us: 50 });
    }
    let rest: Vec<ReplicaId> = harness.scheduler.replicas.keys().copied().collect();
    for replica in rest {
        harness.feed(Event::ReplicaReported { worker: 1, replica, success: true, compute_us: 50 });
    }
    // The next round of the same program is queued 1 + 8 deep at once.
    assert_eq!(assigns(&harness.add_job(2, 32, 0)).len(), 9);
}
