//! Validation: leases on reports, quorum and disagreement, retries on distinct volunteers, losses, invalid
//! reports, and trust.

use super::*;
use crate::*;
use std::collections::BTreeSet;

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
