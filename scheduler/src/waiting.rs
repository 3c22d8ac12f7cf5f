//! Why a job's chunks are waiting: the explanation a consumer sees instead of "0 running, 8 pending".

use std::collections::BTreeSet;

use crate::dispatch::{ELIGIBILITY_SCAN, on_probation};
use crate::{JobId, Scheduler};

/// Why an active job has chunks waiting and none running. The edge turns it into words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// No worker is connected at all.
    NoVolunteers,
    /// The job runs only on its owner's own workers (one replica, no validation) and none is connected.
    NoOwnWorkers,
    /// No connected worker offers the job's memory limit.
    NotEnoughMemory { memory_bytes: u64 },
    /// Each chunk needs replicas from `needed` distinct volunteers; only `connected` that can run it are
    /// connected.
    DistinctVolunteers { needed: u32, connected: u32 },
    /// Every worker that could run it has paused (0 slots).
    Paused,
    /// Every slot that could run it is busy with other work.
    Busy { slots: u32 },
    /// The waiting chunks failed on (or were already run by) every volunteer connected that could run
    /// them: they wait for another volunteer.
    TriedEverywhere,
}

impl Scheduler {
    /// Why `job` has chunks waiting and none running, or `None` if it is running (or finished). Costs a
    /// pass over the connected workers and a look at the first few waiting chunks: cheap enough for every
    /// status request.
    pub fn waiting(&self, job: JobId) -> Option<Waiting> {
        let record = self.jobs.get(&job)?;
        if record.running_chunks > 0 || record.unfinished == 0 {
            return None;
        }
        if self.workers.is_empty() {
            return Some(Waiting::NoVolunteers);
        }
        let policy = record.policy;
        let own = |volunteer: &str| !policy.owner_only || volunteer == record.owner;
        if !self.workers.values().any(|worker| own(&worker.volunteer)) {
            return Some(Waiting::NoOwnWorkers);
        }
        let capable: Vec<_> = self
            .workers
            .values()
            .filter(|worker| own(&worker.volunteer) && worker.max_memory_bytes >= record.memory_bytes)
            .collect();
        if capable.is_empty() {
            return Some(Waiting::NotEnoughMemory { memory_bytes: record.memory_bytes });
        }
        let volunteers: BTreeSet<&str> = capable.iter().map(|worker| worker.volunteer.as_str()).collect();
        let needed = policy.target_replicas;
        if !policy.owner_only && (volunteers.len() as u32) < needed {
            return Some(Waiting::DistinctVolunteers { needed, connected: volunteers.len() as u32 });
        }
        let slots: u32 = capable.iter().map(|worker| worker.slots).sum();
        if slots == 0 {
            return Some(Waiting::Paused);
        }
        // A chunk some capable volunteer may still take is only waiting for room; fresh ones anyone may.
        let takeable = !record.fresh.is_empty()
            || record.under_way.iter().take(ELIGIBILITY_SCAN).any(|&index| {
                let chunk = &record.chunks[index as usize];
                chunk.needs_replica()
                    && volunteers.iter().any(|volunteer| {
                        !chunk.holders.iter().any(|holder| holder == volunteer)
                            && (policy.owner_only || !chunk.errored_on.iter().any(|errored| errored == volunteer))
                    })
            });
        if !takeable && !record.under_way.is_empty() {
            return Some(Waiting::TriedEverywhere);
        }
        let error_runs = &self.error_runs;
        let full = capable
            .iter()
            .all(|worker| !worker.has_room(worker.max_prefetch_per_slot, on_probation(error_runs, &worker.volunteer)));
        full.then_some(Waiting::Busy { slots })
    }
}
