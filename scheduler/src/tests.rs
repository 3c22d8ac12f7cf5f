//! Step-by-step tests of the scheduler with a fake clock.

use std::collections::{BTreeMap, BTreeSet};

use crate::*;

const LEASE: u64 = 5_000;
const TIME_LIMIT: u64 = 60_000;
const MEMORY: u64 = 1 << 30;
/// The digest of the honest result of every chunk in these tests.
const HONEST: Digest = [1; 32];
/// A wrong result's digest.
const FORGED: Digest = [2; 32];

/// What became of a chunk, as the tests care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkOutcome {
    Succeeded,
    Failed,
}

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
        let config = Config { lease_timeout_ms: LEASE, prefetch_per_slot, ..Config::default() };
        Harness { scheduler: Scheduler::new(config, 1000), now: 0, prefetch: prefetch_per_slot }
    }

    fn advance(&mut self, milliseconds: u64) {
        self.now += milliseconds;
    }

    fn feed(&mut self, event: Event) -> Vec<Action> {
        self.scheduler.handle_collect(Millis(self.now), event)
    }

    /// A job whose chunks each need one result, from anyone (the shape of the policy for a trusted pool).
    fn add_job(&mut self, id: JobId, chunk_count: u32, max_retries: u32) -> Vec<Action> {
        let policy = ReplicationPolicy { owner_only: false, ..ReplicationPolicy::new(1, 1, max_retries) };
        self.add_job_with(id, chunk_count, policy)
    }

    fn add_job_with(&mut self, id: JobId, chunk_count: u32, policy: ReplicationPolicy) -> Vec<Action> {
        self.feed(Event::JobAdded(JobParams {
            id,
            chunk_count,
            policy,
            time_limit_ms: TIME_LIMIT,
            memory_bytes: MEMORY,
            program: "program".into(),
            owner: "user:1".into(),
            finished: Vec::new(),
        }))
    }

    /// A worker of its own volunteer (`volunteer:<worker>`).
    fn join(&mut self, worker: WorkerId, slots: u32) -> Vec<Action> {
        self.join_as(worker, &format!("volunteer:{worker}"), slots)
    }

    fn join_as(&mut self, worker: WorkerId, volunteer: &str, slots: u32) -> Vec<Action> {
        self.join_trusted(worker, volunteer, 0, slots)
    }

    /// A worker of a volunteer whose run of validated replicas is `trust`.
    fn join_trusted(&mut self, worker: WorkerId, volunteer: &str, trust: u32, slots: u32) -> Vec<Action> {
        let max_prefetch_per_slot = self.prefetch;
        self.feed(Event::WorkerJoined {
            worker,
            volunteer: volunteer.into(),
            trust,
            slots,
            max_memory_bytes: u64::MAX,
            max_prefetch_per_slot,
        })
    }

    /// `success`: a result (all honest results have one digest); otherwise a volunteer error.
    fn report(&mut self, worker: WorkerId, replica: ReplicaId, success: bool) -> Vec<Action> {
        let report = if success { Report::Result { digest: HONEST, work_units: 10 } } else { Report::Error };
        self.report_with(worker, replica, report)
    }

    fn report_with(&mut self, worker: WorkerId, replica: ReplicaId, report: Report) -> Vec<Action> {
        // One millisecond per chunk: short enough that workers keep the default queue.
        self.feed(Event::ReplicaReported { worker, replica, report, compute_us: 1_000 })
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
            Action::StoreResult { chunk, .. } => Some((chunk, ChunkOutcome::Succeeded)),
            Action::StoreFailure { chunk, .. } => Some((chunk, ChunkOutcome::Failed)),
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
    assert_eq!(harness.scheduler.lease(replica).map(|lease| lease.worker), Some(holder));
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
            let failure = actions.iter().find_map(|action| match action {
                Action::StoreFailure { attempts, reason, replica: failed, .. } => Some((*attempts, *reason, *failed)),
                _ => None,
            });
            // The last error's replica is kept, so its output (a partial stdout, say) can be shown.
            assert_eq!(failure, Some((3, FailureReason::Errors, Some(replica))));
        }
    }
}

#[test]
fn an_owners_lone_worker_retries_its_owner_only_chunk_itself() {
    let mut harness = Harness::with_prefetch(0);
    harness.join_as(1, "user:1", 1);
    let (_, replica, _, _) = assigns(&harness.add_job_with(1, 1, ReplicationPolicy::new(1, 1, 1)))[0];
    let retry = assigns(&harness.report(1, replica, false));
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0].0, 1);
    assert_eq!(stored(&harness.report(1, retry[0].1, false)), [(0, ChunkOutcome::Failed)]);
}

/// Regression: a volunteer alone online that reported machine-side errors got the retries back until
/// they ran out, and failed other people's chunks for good.
#[test]
fn one_volunteer_cannot_use_up_a_chunks_retries_with_its_own_errors() {
    let mut harness = Harness::with_prefetch(0);
    harness.join(1, 1);
    let (_, replica, _, _) = assigns(&harness.add_job_with(1, 1, replicated()))[0];
    let after_error = harness.report(1, replica, false);
    assert!(assigns(&after_error).is_empty(), "the chunk never goes back to the volunteer it errored on");
    assert!(stored(&after_error).is_empty(), "one volunteer's error does not fail the chunk");
    assert_eq!(harness.scheduler.waiting(1), Some(Waiting::DistinctVolunteers { needed: 2, connected: 1 }));
    // Reconnecting does not help it either.
    harness.feed(Event::WorkerLeft { worker: 1 });
    assert!(assigns(&harness.join_as(4, "volunteer:1", 1)).is_empty());
    // Honest volunteers that join later validate it.
    let second = assigns(&harness.join(2, 1));
    let third = assigns(&harness.join(3, 1));
    assert_eq!((second.len(), third.len()), (1, 1));
    let mut outcomes = stored(&harness.report(2, second[0].1, true));
    outcomes.extend(stored(&harness.report(3, third[0].1, true)));
    assert_eq!(outcomes, [(0, ChunkOutcome::Succeeded)]);
}

/// Regression: chunks waiting for a second, distinct volunteer filled the front of the queue, so a lone
/// volunteer stopped getting work after 64 chunks although hundreds had not started.
#[test]
fn chunks_waiting_for_another_volunteer_never_hide_fresh_chunks_from_a_worker() {
    let mut harness = Harness::with_prefetch(0);
    let mut held: Vec<ReplicaId> = assigns(&harness.join(1, 1)).iter().map(|sent| sent.1).collect();
    held.extend(assigns(&harness.add_job_with(1, 200, replicated())).iter().map(|sent| sent.1));
    let mut ran = BTreeSet::new();
    while let Some(replica) = held.pop() {
        let chunk = harness.scheduler.lease(replica).unwrap().chunk;
        assert!(ran.insert(chunk), "chunk {chunk} went to the same volunteer twice");
        held.extend(assigns(&harness.report(1, replica, chunk % 2 == 0)).iter().map(|sent| sent.1));
    }
    assert_eq!(ran.len(), 200, "the lone volunteer ran every chunk's first replica");
    assert_eq!(harness.scheduler.job_progress(1), Some(JobProgress { pending: 200, running: 0 }));
    // A second volunteer then gets the chunks under way, each once.
    let mut second: Vec<ReplicaId> = assigns(&harness.join(2, 1)).iter().map(|sent| sent.1).collect();
    let mut finished = 0;
    for _tick in 0..10 {
        while let Some(replica) = second.pop() {
            let actions = harness.report(2, replica, true);
            finished += stored(&actions).len();
            second.extend(assigns(&actions).iter().map(|sent| sent.1));
        }
        // Each tick looks further through the chunks under way.
        harness.advance(250);
        harness.feed(Event::Heartbeat { worker: 1 });
        harness.feed(Event::Heartbeat { worker: 2 });
        second.extend(assigns(&harness.feed(Event::Tick)).iter().map(|sent| sent.1));
    }
    assert_eq!(finished, 100, "the chunks the first volunteer ran validate; the others wait for a third");
}

#[test]
fn a_chunk_that_errored_on_every_connected_volunteer_says_so_and_waits() {
    let mut harness = Harness::with_prefetch(0);
    harness.join(1, 1);
    harness.join(2, 1);
    let sent = assigns(&harness.add_job(1, 1, 5));
    let actions = harness.report(sent[0].0, sent[0].1, false);
    let retry = assigns(&actions);
    assert_eq!(retry.len(), 1);
    assert_ne!(retry[0].0, sent[0].0);
    assert!(assigns(&harness.report(retry[0].0, retry[0].1, false)).is_empty());
    assert_eq!(harness.scheduler.waiting(1), Some(Waiting::TriedEverywhere));
    assert_eq!(harness.scheduler.job_progress(1), Some(JobProgress { pending: 1, running: 0 }));
}

#[test]
fn a_volunteer_that_keeps_dropping_a_chunk_uses_up_one_of_its_replicas() {
    let mut harness = Harness::with_prefetch(0);
    let policy = ReplicationPolicy { owner_only: false, ..ReplicationPolicy::new(1, 1, 0) };
    harness.add_job_with(1, 1, policy);
    for round in 0..u64::from(policy.max_total_replicas) * 3 {
        let worker = 10 + round;
        let sent = assigns(&harness.join_as(worker, "volunteer:flaky", 1));
        assert_eq!(sent.len(), 1, "alone online, the flaky volunteer gets the chunk back");
        let left = harness.feed(Event::WorkerLeft { worker });
        assert!(stored(&left).is_empty(), "round {round}: the chunk is not abandoned because of one volunteer");
    }
    let honest = assigns(&harness.join(2, 1));
    assert_eq!(stored(&harness.report(2, honest[0].1, true)), [(0, ChunkOutcome::Succeeded)]);
}

#[test]
fn a_volunteer_with_a_run_of_errors_gets_one_replica_at_a_time_until_it_returns_a_result() {
    let mut harness = Harness::new();
    let sent = assigns(&harness.join(1, 2));
    assert!(sent.is_empty());
    let sent = assigns(&harness.add_job(1, 40, 5));
    assert_eq!(sent.len(), 6, "2 slots and a queue of 2 each");
    let mut held: Vec<ReplicaId> = sent.iter().map(|assignment| assignment.1).collect();
    for _ in 0..PROBATION_AFTER {
        let replica = held.remove(0);
        held.extend(assigns(&harness.report(1, replica, false)).iter().map(|assignment| assignment.1));
    }
    // On probation: what it holds drains and nothing new comes until it holds nothing.
    while held.len() > 1 {
        let replica = held.remove(0);
        assert!(assigns(&harness.report(1, replica, false)).is_empty(), "no new work while it holds some");
    }
    let last = held.remove(0);
    let next = assigns(&harness.report(1, last, false));
    assert_eq!(next.len(), 1, "one replica at a time");
    // A result ends the probation: the full queue comes back.
    let refilled = assigns(&harness.report(1, next[0].1, true));
    assert_eq!(refilled.len(), 6);
}

/// Regression: reports far over the job's limits were held whole in memory and paid.
#[test]
fn an_invalid_report_earns_nothing_resets_trust_and_the_chunk_goes_elsewhere() {
    let mut harness = Harness::with_prefetch(0);
    harness.join_trusted(1, "volunteer:big", 5, 1);
    harness.join(2, 1);
    let sent = assigns(&harness.add_job_with(1, 1, replicated()));
    assert_eq!(sent.len(), 2);
    let (cheat, replica) = sent.iter().find(|assignment| assignment.0 == 1).map(|a| (a.0, a.1)).unwrap();
    let actions = harness.report_with(cheat, replica, Report::Invalid);
    assert!(actions.contains(&Action::ReplicaInvalid { job: 1, chunk: 0, replica, volunteer: "volunteer:big".into() }));
    assert_eq!(harness.scheduler.trust["volunteer:big"], 0);
    assert!(assigns(&actions).is_empty(), "the invalid volunteer never gets the chunk again");
    let honest = sent.iter().find(|assignment| assignment.0 == 2).unwrap().1;
    harness.report(2, honest, true);
    let third = assigns(&harness.join(3, 1));
    assert_eq!(third.len(), 1);
    let validated = accepted(&harness.report(3, third[0].1, true));
    assert_eq!(validated.len(), 1);
    assert!(!validated[0].2.contains(&replica), "the invalid replica is not among those paid");
}

#[test]
fn forged_huge_compute_times_neither_overflow_nor_distort_the_queue() {
    let mut harness = Harness::new();
    harness.join(1, 1);
    let mut held: Vec<ReplicaId> = assigns(&harness.add_job(1, 100, 2)).iter().map(|sent| sent.1).collect();
    for _ in 0..5 {
        let replica = held.remove(0);
        let report = Report::Result { digest: HONEST, work_units: 1 };
        let actions = harness.feed(Event::ReplicaReported { worker: 1, replica, report, compute_us: u64::MAX });
        assert!(stored(&actions).len() == 1, "the chunk's result is accepted as usual");
        held.extend(assigns(&actions).iter().map(|sent| sent.1));
        let estimate = harness.scheduler.jobs[&1].chunk_time_us.unwrap();
        assert_eq!(estimate, TIME_LIMIT * 1000, "the estimate is capped at the time limit");
    }
    assert!(!held.is_empty(), "the worker still gets work");
}

#[test]
fn a_chunk_that_is_lost_again_and_again_is_abandoned_not_retried_forever() {
    let mut harness = Harness::with_prefetch(0);
    harness.add_job(1, 1, 0);
    let policy = ReplicationPolicy::new(1, 1, 0);
    let mut abandoned = false;
    for worker in 1..=u64::from(policy.max_total_replicas) + 1 {
        let actions = harness.join(worker, 1);
        let left = harness.feed(Event::WorkerLeft { worker });
        if left
            .iter()
            .any(|action| matches!(action, Action::StoreFailure { reason: FailureReason::Lost, replica: None, .. }))
        {
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
        policy: ReplicationPolicy { owner_only: false, ..ReplicationPolicy::new(1, 1, 2) },
        time_limit_ms: TIME_LIMIT,
        memory_bytes: MEMORY,
        program: "program".into(),
        owner: "user:1".into(),
        finished: vec![0, 2, 3],
    }));
    let chunks: BTreeSet<ChunkIndex> = assigns(&actions).iter().map(|a| a.3).collect();
    assert_eq!(chunks, BTreeSet::from([1, 4, 5]));
    let all_done = harness.feed(Event::JobAdded(JobParams {
        id: 6,
        chunk_count: 2,
        policy: ReplicationPolicy { owner_only: false, ..ReplicationPolicy::new(1, 1, 2) },
        time_limit_ms: TIME_LIMIT,
        memory_bytes: MEMORY,
        program: "program".into(),
        owner: "user:1".into(),
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
            // The progress kept incrementally agrees with a recount of what is out and what is final.
            for &(job, chunk_count) in &jobs {
                let Some(progress) = harness.scheduler.job_progress(job) else { continue };
                let running: BTreeSet<ChunkIndex> =
                    held.values().filter(|holder| holder.1 == job).map(|holder| holder.2).collect();
                let finished = final_outcomes.keys().filter(|(of, _)| *of == job).count() as u32;
                assert_eq!(progress.running, running.len() as u32, "seed {seed}: running chunks of job {job}");
                assert_eq!(progress.pending, chunk_count - finished - progress.running, "seed {seed}: job {job}");
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

#[test]
fn a_job_needing_more_memory_than_a_worker_offers_goes_to_workers_that_have_it() {
    let mut harness = Harness::new();
    harness.feed(Event::WorkerJoined {
        worker: 1,
        volunteer: "volunteer:1".into(),
        trust: 0,
        slots: 1,
        max_memory_bytes: MEMORY / 2,
        max_prefetch_per_slot: 2,
    });
    let none = harness.add_job(1, 4, 0);
    assert!(assigns(&none).is_empty(), "the small worker gets nothing of a job it cannot hold");
    let big = assigns(&harness.feed(Event::WorkerJoined {
        worker: 2,
        volunteer: "volunteer:2".into(),
        trust: 0,
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
    harness.feed(Event::WorkerJoined {
        worker: 1,
        volunteer: "volunteer:1".into(),
        trust: 0,
        slots: 1,
        max_memory_bytes: u64::MAX,
        max_prefetch_per_slot: 8,
    });
    let first = assigns(&harness.add_job(1, 100, 0));
    assert_eq!(first.len(), 3, "while the chunk time is unknown, the default queue of 2");
    // Job 1's chunks turn out to take 100 µs: 20 ms of them is more than the worker's 8.
    let refill = assigns(&harness.feed(Event::ReplicaReported {
        worker: 1,
        replica: first[0].1,
        report: Report::Result { digest: HONEST, work_units: 10 },
        compute_us: 100,
    }));
    assert_eq!(refill.len(), 7);
    assert_eq!(harness.scheduler.stats().replicas_in_flight, 9, "the worker now holds 1 + 8");
    // A job with 10-second chunks still gets the running slot when one frees up...
    harness.add_job(2, 100, 0);
    let next = assigns(&harness.feed(Event::ReplicaReported {
        worker: 1,
        replica: refill[0].1,
        report: Report::Result { digest: HONEST, work_units: 10 },
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
            Some(replica) => harness.feed(Event::ReplicaReported {
                worker: 1,
                replica,
                report: Report::Result { digest: HONEST, work_units: 10 },
                compute_us: 10_000_000,
            }),
            None => {
                let replica = outstanding.remove(0);
                harness.feed(Event::ReplicaReported {
                    worker: 1,
                    replica,
                    report: Report::Result { digest: HONEST, work_units: 10 },
                    compute_us: 100,
                })
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
    harness.feed(Event::WorkerJoined {
        worker: 1,
        volunteer: "volunteer:1".into(),
        trust: 0,
        slots: 1,
        max_memory_bytes: u64::MAX,
        max_prefetch_per_slot: 8,
    });
    let first = assigns(&harness.add_job(1, 4, 0));
    assert_eq!(first.len(), 3, "nothing known yet: the default queue");
    for (_, replica, _, _) in &first {
        harness.feed(Event::ReplicaReported {
            worker: 1,
            replica: *replica,
            report: Report::Result { digest: HONEST, work_units: 10 },
            compute_us: 50,
        });
    }
    let rest: Vec<ReplicaId> = harness.scheduler.replicas.keys().copied().collect();
    for replica in rest {
        harness.feed(Event::ReplicaReported {
            worker: 1,
            replica,
            report: Report::Result { digest: HONEST, work_units: 10 },
            compute_us: 50,
        });
    }
    // The next round of the same program is queued 1 + 8 deep at once.
    assert_eq!(assigns(&harness.add_job(2, 32, 0)).len(), 9);
}

/// Two replicas that must agree, up to six in all, errors retried twice.
fn replicated() -> ReplicationPolicy {
    ReplicationPolicy::new(2, 2, 2)
}

fn accepted(actions: &[Action]) -> Vec<(ChunkIndex, ReplicaId, Vec<ReplicaId>, Vec<Volunteer>)> {
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

#[test]
fn replicas_of_a_chunk_go_to_distinct_volunteers_and_are_accepted_when_they_agree() {
    let mut harness = Harness::with_prefetch(0);
    // Workers 1 and 2 belong to the same volunteer; worker 3 to another.
    harness.join_as(1, "user:7", 1);
    harness.join_as(2, "user:7", 1);
    harness.join_as(3, "user:8", 1);
    let sent = assigns(&harness.add_job_with(1, 1, replicated()));
    assert_eq!(sent.len(), 2, "two replicas of the one chunk");
    let workers: BTreeSet<WorkerId> = sent.iter().map(|assignment| assignment.0).collect();
    assert!(workers.contains(&3), "one replica goes to the other volunteer: {workers:?}");
    let first = harness.report(sent[0].0, sent[0].1, true);
    assert!(accepted(&first).is_empty(), "one result is not a quorum");
    let second = harness.report(sent[1].0, sent[1].1, true);
    let accepted = accepted(&second);
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].1, sent[0].1, "the first agreeing replica is canonical");
    assert_eq!(accepted[0].2, [sent[0].1, sent[1].1], "both replicas are validated (and paid)");
    assert!(accepted[0].3.is_empty());
}

#[test]
fn a_disagreement_brings_a_third_replica_and_the_odd_one_out_is_invalid() {
    let mut harness = Harness::with_prefetch(0);
    for worker in 1..=3 {
        harness.join(worker, 1);
    }
    let sent = assigns(&harness.add_job_with(1, 1, replicated()));
    let (honest, cheater) = (sent[0], sent[1]);
    harness.report(honest.0, honest.1, true);
    let disagreement = harness.report_with(cheater.0, cheater.1, Report::Result { digest: FORGED, work_units: 1 });
    let third = assigns(&disagreement);
    assert_eq!(third.len(), 1, "one more opinion is needed");
    assert!(third[0].0 != honest.0 && third[0].0 != cheater.0, "it goes to a volunteer who has not seen the chunk");
    let decided = harness.report(third[0].0, third[0].1, true);
    let accepted = accepted(&decided);
    assert_eq!(accepted[0].2, [honest.1, third[0].1]);
    assert_eq!(accepted[0].3, [format!("volunteer:{}", cheater.0)], "the cheater is invalid: no credit");
    assert_eq!(harness.scheduler.trust[&format!("volunteer:{}", cheater.0)], 0);
    assert_eq!(harness.scheduler.trust[&format!("volunteer:{}", honest.0)], 1);
}

#[test]
fn replicas_that_keep_disagreeing_fail_the_chunk_within_the_policy() {
    let mut harness = Harness::with_prefetch(0);
    // More volunteers than the policy allows replicas, so the bound and not the crowd ends it.
    for worker in 1..=u64::from(replicated().max_total_replicas) + 2 {
        harness.join(worker, 1);
    }
    let mut out = assigns(&harness.add_job_with(1, 1, replicated()));
    let mut failure = None;
    let mut digest = 10u8;
    while let Some((worker, replica, _, _)) = out.pop() {
        digest += 1;
        let actions = harness.report_with(worker, replica, Report::Result { digest: [digest; 32], work_units: 1 });
        out.extend(assigns(&actions));
        failure = failure.or_else(|| {
            actions.iter().find_map(|action| match action {
                Action::StoreFailure { reason, attempts, .. } => Some((*reason, *attempts)),
                _ => None,
            })
        });
    }
    let policy = replicated();
    assert_eq!(
        failure,
        Some((FailureReason::Disagreement { distinct_results: policy.max_total_replicas }, policy.max_total_replicas))
    );
}

#[test]
fn a_replicated_job_waits_for_a_second_volunteer_rather_than_asking_the_first_twice() {
    let mut harness = Harness::with_prefetch(0);
    harness.join(1, 1);
    let sent = assigns(&harness.add_job_with(1, 1, replicated()));
    assert_eq!(sent.len(), 1);
    let first = harness.report(1, sent[0].1, true);
    assert!(assigns(&first).is_empty(), "the same volunteer never validates itself");
    let second = assigns(&harness.join(2, 1));
    assert_eq!(second.len(), 1);
    assert_eq!(accepted(&harness.report(2, second[0].1, true)).len(), 1);
}

#[test]
fn an_owner_only_job_runs_only_on_the_owners_workers() {
    let mut harness = Harness::new();
    harness.join_as(1, "user:9", 1);
    let policy = ReplicationPolicy::new(1, 1, 2);
    assert!(policy.owner_only);
    assert!(assigns(&harness.add_job_with(1, 4, policy)).is_empty(), "user:9 does not own it");
    let owners = assigns(&harness.join_as(2, "user:1", 1));
    assert_eq!(owners.len(), 3);
    assert!(owners.iter().all(|assignment| assignment.0 == 2));
    // A single result from the owner's own worker is accepted.
    assert_eq!(accepted(&harness.report(2, owners[0].1, true)).len(), 1);
}

#[test]
fn a_volunteer_with_a_long_run_of_valid_results_is_often_trusted_alone_and_sometimes_spot_checked() {
    let mut harness = Harness::with_prefetch(0);
    let mut config = harness.scheduler.config();
    config.seed = 42;
    harness.scheduler = Scheduler::new(config, 1);
    harness.join_trusted(1, "user:5", 200, 1);
    harness.add_job_with(1, 200, replicated());
    // Run everything with the trusted volunteer alone first, then a second volunteer for the spot checks;
    // count the chunks the trusted volunteer validated alone.
    let mut alone = 0;
    let mut spot_checked = 0;
    let mut out: Vec<(WorkerId, ReplicaId)> =
        harness.scheduler.replicas.iter().map(|(id, replica)| (replica.worker, *id)).collect();
    while let Some((worker, replica)) = out.pop() {
        let actions = harness.report(worker, replica, true);
        for action in &actions {
            if let Action::StoreResult { validated, .. } = action {
                if validated.len() == 1 {
                    // The other volunteer earns trust along the way and may run alone later on.
                    if validated[0].volunteer == "user:5" {
                        alone += 1;
                    }
                } else if validated.iter().any(|replica| replica.volunteer == "user:5") {
                    spot_checked += 1;
                }
            }
        }
        out.extend(assigns(&actions).iter().map(|assignment| (assignment.0, assignment.1)));
        if out.is_empty() && harness.scheduler.workers.len() == 1 {
            out.extend(assigns(&harness.join(2, 1)).iter().map(|assignment| (assignment.0, assignment.1)));
        }
    }
    assert_eq!(harness.scheduler.jobs.len(), 0, "every chunk was decided");
    assert!(alone > 100, "trusted often: {alone} of 200");
    assert!(spot_checked > 0, "but spot-checked too");
}

#[test]
fn results_nobody_checked_earn_no_trust() {
    let mut harness = Harness::new();
    harness.join_as(1, "user:1", 1);
    harness.join(2, 1);
    // The owner's own single-replica jobs: accepted, but proof of nothing about its volunteer.
    let mut out = assigns(&harness.add_job_with(1, 12, ReplicationPolicy::new(1, 1, 2)));
    while let Some((worker, replica, _, _)) = out.pop() {
        let actions = harness.report(worker, replica, true);
        for action in &actions {
            if let Action::StoreResult { checked, .. } = action {
                assert!(!checked);
            }
        }
        out.extend(assigns(&actions));
    }
    assert_eq!(harness.scheduler.jobs.len(), 0, "every chunk was decided");
    assert_eq!(harness.scheduler.trust.get("user:1").copied().unwrap_or(0), 0);
    // Agreement between two volunteers is a check.
    let sent = assigns(&harness.add_job_with(2, 1, replicated()));
    harness.report(sent[0].0, sent[0].1, true);
    let decided = harness.report(sent[1].0, sent[1].1, true);
    assert!(decided.iter().any(|action| matches!(action, Action::StoreResult { checked: true, .. })));
    assert_eq!(harness.scheduler.trust["user:1"], 1);
}

#[test]
fn a_chunk_trusted_to_a_volunteer_who_leaves_is_replicated_again() {
    let mut harness = Harness::with_prefetch(0);
    harness.join_trusted(1, "user:5", 10_000, 1);
    // Draw until the trusted volunteer gets a chunk alone (95% of draws at this run).
    let mut job = 0;
    loop {
        job += 1;
        assert!(job < 50, "a volunteer this trusted is trusted alone at times");
        let sent = assigns(&harness.add_job_with(job, 1, replicated()));
        assert_eq!(sent.len(), 1);
        if harness.scheduler.jobs[&job].chunks[0].quorum == 1 {
            break;
        }
        harness.feed(Event::JobCancelled { job });
    }
    // It leaves before reporting: the next volunteers, untrusted, must agree with each other.
    harness.feed(Event::WorkerLeft { worker: 1 });
    let second = assigns(&harness.join(2, 1));
    let third = assigns(&harness.join(3, 1));
    assert_eq!((second.len(), third.len()), (1, 1));
    assert!(accepted(&harness.report(2, second[0].1, true)).is_empty(), "one untrusted result is not enough");
    assert_eq!(accepted(&harness.report(3, third[0].1, true)).len(), 1);
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
