//! Dispatch: queues at workers, leases and their expiry, memory and owners, probation, and fresh chunks
//! never hidden behind chunks waiting for someone else.

use super::*;
use crate::*;
use std::collections::{BTreeMap, BTreeSet};

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
        held.extend(assigns(&harness.report(1, replica, chunk.is_multiple_of(2))).iter().map(|sent| sent.1));
    }
    assert_eq!(ran.len(), 200, "the lone volunteer ran every chunk's first replica");
    assert_eq!(harness.scheduler.job_progress(1), Some(JobProgress { pending: 200, running: 0, volunteers: 0 }));
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

/// Regression: a worker that handed back everything it got was given the same chunks back at once, which
/// let it make the server build assignment after assignment of the same large inputs.
#[test]
fn a_handed_back_replica_goes_to_another_volunteer_when_one_can_take_it() {
    let mut harness = Harness::with_prefetch(0);
    harness.join(1, 1);
    harness.join(2, 1);
    let sent = assigns(&harness.add_job(1, 2, 0));
    let (_, first, _, chunk) = *sent.iter().find(|assignment| assignment.0 == 1).unwrap();
    let busy = sent.iter().find(|assignment| assignment.0 == 2).unwrap().1;
    let again = assigns(&harness.feed(Event::ReplicaReleased { worker: 1, replica: first }));
    assert!(again.is_empty(), "not straight back to the worker that handed it back: {again:?}");
    let next = assigns(&harness.report(2, busy, true));
    assert_eq!(next.iter().map(|assignment| (assignment.0, assignment.3)).collect::<Vec<_>>(), [(2, chunk)]);
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
    assert_eq!(harness.scheduler.job_progress(1), Some(JobProgress { pending: 3, running: 0, volunteers: 0 }));
    // Releasing many times never abandons anything, and a fresh worker gets all three chunks.
    let again = assigns(&harness.join(2, 1));
    assert_eq!(again.len(), 3);
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
        blobs: Vec::new(),
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
        blobs: Vec::new(),
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
    harness.prefetch = 8;
    harness.join(1, 1);
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
    harness.prefetch = 8;
    harness.join(1, 1);
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

fn blob(name: &str) -> BlobName {
    name.into()
}

#[test]
fn a_fresh_chunk_goes_to_the_worker_that_holds_its_blobs() {
    let mut harness = Harness::with_prefetch(0);
    harness.join_holding(1, "volunteer:1", 0, 1, vec![blob("a")]);
    harness.join_holding(2, "volunteer:2", 0, 1, vec![blob("b")]);
    // Chunks 0-2 read shard `a`, 3-5 shard `b`: each goes to the worker that holds its shard, although
    // in queue order the second worker would take an `a` chunk.
    let reading = (0..6).map(|chunk| vec![blob(if chunk < 3 { "a" } else { "b" })]).collect();
    let policy = ReplicationPolicy { owner_only: false, ..ReplicationPolicy::new(1, 1, 0) };
    let mut outstanding: std::collections::VecDeque<_> =
        assigns(&harness.add_job_reading(1, 6, policy, reading)).into();
    let mut placed: Vec<(WorkerId, ChunkIndex)> = Vec::new();
    // Each worker finishes its chunk and gets its next one, in turn.
    while let Some((worker, replica, _, chunk)) = outstanding.pop_front() {
        placed.push((worker, chunk));
        outstanding.extend(assigns(&harness.report(worker, replica, true)));
    }
    assert_eq!(placed.len(), 6, "{placed:?}");
    assert!(placed.iter().all(|(worker, chunk)| *worker == if *chunk < 3 { 1 } else { 2 }), "{placed:?}");
}

#[test]
fn a_worker_without_the_blobs_waits_briefly_then_takes_chunks_held_elsewhere() {
    let mut harness = Harness::with_prefetch(0);
    harness.join_holding(1, "volunteer:1", 0, 1, vec![blob("a")]);
    let policy = ReplicationPolicy { owner_only: false, ..ReplicationPolicy::new(1, 1, 0) };
    let reading = vec![vec![blob("a")]; 4];
    let first = assigns(&harness.add_job_reading(1, 4, policy, reading));
    assert_eq!(first.iter().map(|sent| sent.0).collect::<Vec<_>>(), [1], "the holder takes one (its only slot)");
    // A busy holder does not starve a newcomer for long: within the wait the newcomer gets nothing of the
    // chunks the holder could run...
    assert!(assigns(&harness.join(2, 1)).is_empty(), "within the affinity wait, the chunks wait for the holder");
    // ...and past it, the next tick hands it one.
    harness.advance(Config::default().affinity_wait_ms);
    let later = assigns(&harness.feed(Event::Tick));
    assert_eq!(later.iter().map(|sent| sent.0).collect::<Vec<_>>(), [2]);
    // Chunks that read a blob nobody holds, or none, never wait.
    let mut fresh = Harness::with_prefetch(0);
    fresh.join_holding(1, "volunteer:1", 0, 1, vec![blob("a")]);
    fresh.join(2, 1);
    let reading = vec![vec![blob("a")], vec![blob("a")], vec![blob("c")], vec![]];
    let sent = assigns(&fresh.add_job_reading(1, 4, policy, reading));
    let placed: Vec<(WorkerId, ChunkIndex)> = sent.iter().map(|sent| (sent.0, sent.3)).collect();
    assert_eq!(placed, [(1, 0), (2, 2)], "the holder takes an `a` chunk, the other the `c` chunk");
}

#[test]
fn past_the_affinity_wait_every_waiting_chunk_is_released_not_one_per_wait() {
    let mut harness = Harness::with_prefetch(0);
    harness.join_holding(1, "volunteer:1", 0, 1, vec![blob("a")]);
    let policy = ReplicationPolicy { owner_only: false, ..ReplicationPolicy::new(1, 1, 0) };
    let first = assigns(&harness.add_job_reading(1, 6, policy, vec![vec![blob("a")]; 6]));
    assert_eq!(first.len(), 1, "the holder's only slot");
    assert!(assigns(&harness.join(2, 3)).is_empty(), "within the wait");
    harness.advance(Config::default().affinity_wait_ms);
    let later = assigns(&harness.feed(Event::Tick));
    assert_eq!(later.iter().map(|sent| sent.0).collect::<Vec<_>>(), [2, 2, 2], "all three of its slots fill");
    // Once the job's fresh chunks are gone, a new batch of work would wait again: nothing stale lingers.
    let rest: Vec<_> = later.iter().map(|sent| sent.1).collect();
    for replica in rest {
        harness.report(2, replica, true);
    }
    assert!(harness.scheduler.jobs[&1].fresh.is_empty());
    assert_eq!(harness.scheduler.jobs[&1].affinity_waiting_since, None);
}

#[test]
fn chunks_do_not_wait_for_a_holder_that_could_not_run_them() {
    let policy = ReplicationPolicy { owner_only: false, ..ReplicationPolicy::new(1, 1, 0) };
    let reading = || vec![vec![blob("a")]; 2];
    // A paused holder (no slots).
    let mut paused = Harness::with_prefetch(0);
    paused.join_holding(1, "volunteer:1", 0, 0, vec![blob("a")]);
    paused.join(2, 2);
    let sent = assigns(&paused.add_job_reading(1, 2, policy, reading()));
    assert_eq!(sent.iter().map(|sent| sent.0).collect::<Vec<_>>(), [2, 2], "nobody waits for a paused worker");

    // A holder without the memory the job needs.
    let mut small = Harness::with_prefetch(0);
    small.feed(Event::WorkerJoined {
        worker: 1,
        volunteer: "volunteer:1".into(),
        trust: 0,
        slots: 1,
        max_memory_bytes: 1,
        max_prefetch_per_slot: 0,
        blobs: vec![blob("a")],
    });
    small.join(2, 2);
    let sent = assigns(&small.add_job_reading(1, 2, policy, reading()));
    assert_eq!(sent.iter().map(|sent| sent.0).collect::<Vec<_>>(), [2, 2], "nor for one that cannot run the job");

    // A holder that is someone else for an owner-only job.
    let mut foreign = Harness::with_prefetch(0);
    foreign.join_holding(1, "user:9", 0, 1, vec![blob("a")]);
    foreign.join_as(2, "user:1", 2);
    let owner_only = ReplicationPolicy::new(1, 1, 0);
    assert!(owner_only.owner_only);
    let sent = assigns(&foreign.add_job_reading(1, 2, owner_only, reading()));
    assert_eq!(sent.iter().map(|sent| sent.0).collect::<Vec<_>>(), [2, 2], "nor for one the job may not use");
}

#[test]
fn workers_announce_blobs_they_gain_and_lose_within_a_bound() {
    let mut harness = Harness::with_prefetch(0);
    harness.join(1, 1);
    harness.join(2, 1);
    let many: Vec<BlobName> = (0..MAX_WORKER_BLOBS + 10).map(|index| blob(&format!("x{index}"))).collect();
    harness.feed(Event::WorkerBlobs { worker: 2, added: many, evicted: Vec::new() });
    harness.feed(Event::WorkerBlobs { worker: 2, added: vec![blob("b")], evicted: vec![blob("x0")] });
    assert_eq!(harness.scheduler.workers[&2].blobs.len(), MAX_WORKER_BLOBS, "the bound holds");
    assert!(harness.scheduler.workers[&2].blobs.contains(&blob("b")), "room made by an eviction is used");
    let policy = ReplicationPolicy { owner_only: false, ..ReplicationPolicy::new(1, 1, 0) };
    let sent = assigns(&harness.add_job_reading(1, 1, policy, vec![vec![blob("b")]]));
    assert_eq!(sent.iter().map(|sent| sent.0).collect::<Vec<_>>(), [2]);
    // Once its holder leaves, nobody holds the blob and nothing waits for it.
    harness.feed(Event::WorkerLeft { worker: 2 });
    assert!(harness.scheduler.blob_holders.is_empty(), "{:?}", harness.scheduler.blob_holders.len());
}

fn revokes(actions: &[Action]) -> Vec<(WorkerId, ReplicaId)> {
    actions
        .iter()
        .filter_map(|action| match *action {
            Action::Revoke { worker, replica } => Some((worker, replica)),
            _ => None,
        })
        .collect()
}

#[test]
fn near_the_end_of_a_round_the_chunks_still_out_get_backups_and_the_first_answer_wins() {
    let single = ReplicationPolicy { owner_only: false, ..ReplicationPolicy::new(1, 1, 0) };
    for backups in [true, false] {
        let mut harness = Harness::with_prefetch(0);
        // The slow volunteer takes chunk 0; the other joins and takes the other nine.
        harness.join(1, 1);
        let sent = if backups { harness.add_round(1, 10, single) } else { harness.add_job_with(1, 10, single) };
        let slow = assigns(&sent);
        assert_eq!(slow.iter().map(|sent| (sent.0, sent.3)).collect::<Vec<_>>(), [(1, 0)]);
        let fast = assigns(&harness.join(2, 10));
        assert_eq!(fast.len(), 9);
        let mut later = Vec::new();
        for (worker, replica, _, _) in fast {
            later.extend(harness.report(worker, replica, true));
        }
        let backup = assigns(&later);
        if !backups {
            assert!(backup.is_empty(), "a batch job's chunks get no backups: {backup:?}");
            assert_eq!(harness.scheduler.stats().backup_replicas, 0);
            continue;
        }
        // At 90% finished, chunk 0 (still out at the slow volunteer) goes to the other one as well.
        assert_eq!(backup.iter().map(|sent| (sent.0, sent.3)).collect::<Vec<_>>(), [(2, 0)]);
        let answered = harness.report(2, backup[0].1, true);
        let won = accepted(&answered);
        assert_eq!(won.len(), 1);
        assert_eq!(won[0].2, [backup[0].1], "only the backup's replica counts (and is paid)");
        assert_eq!(revokes(&answered), [(1, slow[0].1)], "the straggler's replica is revoked");
        assert!(answered.contains(&Action::JobFinished { job: 1 }));
        // Its late answer is ignored.
        assert!(accepted(&harness.report(1, slow[0].1, true)).is_empty());
        assert_eq!(harness.scheduler.stats().backup_replicas, 1);
    }
}

#[test]
fn a_replica_out_three_times_longer_than_the_rounds_chunks_gets_a_backup() {
    let single = ReplicationPolicy { owner_only: false, ..ReplicationPolicy::new(1, 1, 0) };
    let mut harness = Harness::with_prefetch(0);
    harness.join(1, 1);
    let slow = assigns(&harness.add_round(1, 4, single));
    let fast = assigns(&harness.join(2, 3));
    assert_eq!(fast.len(), 3);
    // Two of four done (not near the end), each 10 ms after it went out, as the scheduler's clock says
    // (what a volunteer reports about its own time does not count).
    harness.advance(10);
    let mut wake = None;
    for (worker, replica, _, _) in &fast[..2] {
        let answered = harness.feed(Event::ReplicaReported {
            worker: *worker,
            replica: *replica,
            report: Report::Result { digest: HONEST, work_units: 1 },
            compute_us: 0,
        });
        assert!(assigns(&answered).is_empty());
        wake = answered.iter().find_map(|action| match action {
            Action::WakeAt { at } => Some(*at),
            _ => None,
        });
    }
    // The edge is asked to look again when the slow replica is due: three round trips after it left.
    assert_eq!(wake, Some(harness.now_at(-10).plus(30)));
    harness.advance(19);
    assert!(assigns(&harness.feed(Event::Tick)).is_empty(), "29 ms is not yet three times 10 ms");
    harness.advance(2);
    let backup = assigns(&harness.feed(Event::Tick));
    assert_eq!(backup.iter().map(|sent| (sent.0, sent.3)).collect::<Vec<_>>(), [(2, 0)], "{slow:?}");
    // One backup per chunk, however long it stays out.
    harness.advance(100);
    assert!(assigns(&harness.feed(Event::Tick)).is_empty());
}

#[test]
fn a_backup_of_a_chunk_a_trusted_volunteer_runs_alone_must_agree_with_it() {
    let mut harness = Harness::with_prefetch(0);
    harness.join_trusted(1, "volunteer:1", 1_000_000, 1);
    let alone = assigns(&harness.add_round(1, 1, replicated()));
    assert_eq!(alone.len(), 1);
    assert!(assigns(&harness.join(2, 1)).is_empty(), "trusted to run it alone");
    // Out far longer than anything: the slowness rule needs a measured round trip, so the end-of-round
    // rule (0 of 1 done) does not fire either; force the backup as the scheduler would.
    harness.scheduler.back_up(1, 0);
    let backup = assigns(&harness.feed(Event::Tick));
    assert_eq!(backup.iter().map(|sent| sent.0).collect::<Vec<_>>(), [2]);
    // The backup's answer alone is not accepted (anyone may take a backup)...
    assert!(accepted(&harness.report(2, backup[0].1, true)).is_empty());
    // ...only once it agrees with the trusted volunteer's.
    let both = accepted(&harness.report(1, alone[0].1, true));
    assert_eq!(both.len(), 1);
    assert_eq!(both[0].2.len(), 2);
}
