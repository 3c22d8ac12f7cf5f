//! The scheduler's view of its jobs: recovery after a restart, progress, and why chunks wait.

use super::*;
use crate::*;
use std::collections::BTreeSet;

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
    assert_eq!(harness.scheduler.job_progress(1), Some(JobProgress { pending: 1, running: 0, volunteers: 0 }));
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
        chunk_blobs: Vec::new(),
        backups: false,
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
        chunk_blobs: Vec::new(),
        backups: false,
    }));
    assert_eq!(all_done, [Action::JobFinished { job: 6 }]);
}

#[test]
fn a_jobs_volunteers_are_the_distinct_volunteers_holding_its_replicas_now() {
    let mut harness = Harness::with_prefetch(0);
    // Two workers of one account and one of another volunteer.
    harness.join_as(1, "user:7", 2);
    harness.join_as(2, "user:7", 1);
    harness.join(3, 1);
    let sent = assigns(&harness.add_job_with(1, 4, replicated()));
    assert!(sent.iter().any(|assigned| assigned.0 == 3) && sent.iter().any(|assigned| assigned.0 != 3));
    assert_eq!(harness.scheduler.job_progress(1).unwrap().volunteers, 2, "user:7 counts once");
    harness.feed(Event::WorkerLeft { worker: 3 });
    assert_eq!(harness.scheduler.job_progress(1).unwrap().volunteers, 1);
    harness.feed(Event::WorkerLeft { worker: 1 });
    harness.feed(Event::WorkerLeft { worker: 2 });
    assert_eq!(harness.scheduler.job_progress(1).unwrap().volunteers, 0);
}
