//! What a chunk's final outcome leaves behind: its stored result, the payments to the volunteers whose
//! replicas agreed (never more than the job's work limit), what validation taught about each volunteer,
//! and the stop of a job whose budget is spent.

use distributivecom_protocol::api::ChunkResult;
use distributivecom_protocol::session::SessionServerMessage;
use distributivecom_protocol::worker::{Output, RunStatus};
use distributivecom_scheduler::{FailureReason, TrustChange, Validated};

use super::{Coordinator, Core, sessions};
use crate::clock::unix_ms;
use crate::store::{NewResult, Payment, ReputationChange, writes};

impl Coordinator {
    /// A quorum agreed on `canonical`'s result: store it, pay the validated replicas, record reputations.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn settle_result(
        &self,
        core: &mut Core,
        job: u64,
        chunk: u32,
        canonical: u64,
        validated: &[Validated],
        invalid: &[String],
        attempts: u32,
        trust: Vec<TrustChange>,
    ) {
        let mut reports = core.take_reports(job, chunk);
        // No replica is paid for more than the job's work limit, whatever it reports: the escrow was sized
        // by that limit. Its run time (a volunteer's word, counted in a site's statistics) is bounded by
        // the job's time limit likewise, before any arithmetic.
        let limits = core.jobs.get(&job).map(|active| active.row.limits);
        let max_work_units = limits.map_or(u64::MAX, |limits| limits.max_work_units);
        let max_compute_us = limits.map_or(0, |limits| limits.time_limit_ms.saturating_mul(1000));
        let payments = validated
            .iter()
            .map(|replica| Payment {
                volunteer: replica.volunteer.clone(),
                replica: replica.replica,
                work_units: replica.work_units.min(max_work_units),
                compute_us: reports.get(&replica.replica).map_or(0, |report| report.compute_us.min(max_compute_us)),
            })
            .collect();
        let Some(report) = reports.remove(&canonical) else {
            tracing::error!(job, chunk, canonical, "the accepted replica's report is missing");
            return;
        };
        if !invalid.is_empty() {
            tracing::warn!(job, chunk, ?invalid, "volunteers returned results the quorum contradicts");
        }
        let reputation = trust
            .into_iter()
            .map(|change| ReputationChange { volunteer: change.volunteer, valid: change.valid, run: change.run })
            .collect();
        let accepted = Accepted {
            status: report.status,
            output: report.output,
            work_units: report.work_units,
            payments,
            reputation,
        };
        self.persist_result(core, job, chunk, attempts, accepted);
    }

    /// The chunk failed for good: store why (with the last volunteer error's output, if it says best).
    pub(super) fn settle_failure(
        &self,
        core: &mut Core,
        job: u64,
        chunk: u32,
        replica: Option<u64>,
        reason: FailureReason,
        attempts: u32,
    ) {
        let mut reports = core.take_reports(job, chunk);
        let last = replica.and_then(|replica| reports.remove(&replica));
        tracing::warn!(job, chunk, attempts, ?reason, "a chunk failed");
        let failed = match (reason, last) {
            // The last volunteer error says best what went wrong (a timeout, a start failure).
            (FailureReason::Errors, Some(report)) => Accepted::unpaid(report.status, report.output, report.work_units),
            (reason, _) => {
                Accepted::unpaid(RunStatus::Failed { message: failure_message(reason, attempts) }, Output::default(), 0)
            }
        };
        self.persist_result(core, job, chunk, attempts, failed);
    }

    /// A volunteer's report broke its job's limits: its run of validated replicas is over.
    pub(super) fn record_invalid(&self, job: u64, chunk: u32, replica: u64, volunteer: String) {
        self.store.transact_then(
            move |connection| writes::record_validation(connection, &volunteer, false, 0),
            move |recorded| {
                if let Err(error) = recorded {
                    tracing::error!(job, chunk, replica, %error, "could not record an invalid replica");
                }
            },
        );
    }

    /// Writes a chunk's final result and its payments; once durable, clients see it. A job whose budget
    /// is spent is stopped.
    fn persist_result(&self, core: &Core, job: u64, chunk: u32, attempts: u32, accepted: Accepted) {
        let Some(active) = core.jobs.get(&job).cloned() else {
            return;
        };
        let finished_at_ms = unix_ms();
        let succeeded = accepted.status.is_success();
        // A session's consumer gets each result as soon as it is durable.
        let for_session = active.row.session_round.map(|(session, round)| {
            let result = ChunkResult {
                index: chunk,
                succeeded,
                reason: accepted.status.describe(),
                status: accepted.status.clone(),
                attempts,
                work_units: accepted.work_units,
                output: accepted.output.clone(),
            };
            (session, round, result)
        });
        let result = NewResult {
            job,
            chunk,
            status: accepted.status,
            attempts,
            work_units: accepted.work_units,
            output: accepted.output,
            finished_at_ms,
            payments: accepted.payments,
            reputation: accepted.reputation,
            pricing: self.config.pricing,
        };
        let coordinator = self.this.clone();
        self.store.insert_result(result, move |stored| {
            let settlement = match stored {
                Ok(settlement) => settlement,
                Err(error) => {
                    tracing::error!(job, chunk, %error, "could not store a result; the chunk stays unfinished");
                    return;
                }
            };
            // A result its budget could not pay for in full was stored failed, without its output.
            let succeeded = succeeded && !settlement.withheld;
            let mut complete = false;
            active.progress.send_modify(|progress| {
                if succeeded {
                    progress.succeeded += 1;
                } else {
                    progress.failed += 1;
                }
                progress.spent += settlement.paid;
                progress.last_finished_at_ms = Some(finished_at_ms);
                complete = progress.succeeded + progress.failed == active.row.chunk_count;
            });
            let Some(coordinator) = coordinator.upgrade() else { return };
            {
                let mut core = coordinator.lock();
                core.chunks_finished += 1;
                if complete {
                    core.forget_job(job);
                }
                if let Some((session, round, mut result)) = for_session {
                    if settlement.withheld {
                        result.status = writes::withheld_status();
                        result.succeeded = false;
                        result.reason = result.status.describe();
                        result.output = Output::default();
                    }
                    core.tell_session(session, sessions::round_result(round, result));
                    if complete && let Some((_, round)) = active.row.session_round {
                        let spent_millicredits = active.progress.borrow().spent;
                        core.tell_session(session, SessionServerMessage::RoundDone { round, spent_millicredits });
                    }
                }
            }
            if settlement.budget_spent {
                tracing::info!(job, "stopping a job whose budget is spent");
                let reason = if active.row.session_round.is_some() {
                    "the session's budget is spent: open a new session with a larger budget_millicredits"
                } else {
                    "its budget is spent: raise budget_millicredits to run it whole"
                };
                coordinator.stop(job, reason.to_owned());
            }
        });
    }
}

/// A chunk's final outcome, ready to store: the accepted replica's run, and who to pay and credit.
struct Accepted {
    status: RunStatus,
    output: Output,
    work_units: u64,
    payments: Vec<Payment>,
    reputation: Vec<ReputationChange>,
}

impl Accepted {
    fn unpaid(status: RunStatus, output: Output, work_units: u64) -> Accepted {
        Accepted { status, output, work_units, payments: Vec::new(), reputation: Vec::new() }
    }
}

fn failure_message(reason: FailureReason, attempts: u32) -> String {
    match reason {
        FailureReason::Disagreement { distinct_results } => format!(
            "volunteers disagreed: {attempts} replicas returned {distinct_results} different results and no \
             quorum agreed"
        ),
        FailureReason::Lost | FailureReason::Errors => {
            format!("no volunteer returned a result: {attempts} replicas were lost (disconnected or timed out)")
        }
    }
}
