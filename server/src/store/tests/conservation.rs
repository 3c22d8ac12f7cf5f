//! The conservation law under load: accounts submitting, being paid, cancelling and claiming volunteers,
//! taking a share of a site's visitors' earnings, sponsoring rewarded-ad campaigns, watching ads (as themselves or as anonymous volunteers) and ending
//! campaigns, all at once, against a real SQLite file, while a reader keeps checking every committed
//! state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use proptest::prelude::*;

use super::*;

/// One thing an account does.
#[derive(Clone, Debug)]
enum Op {
    /// Submit a job of `chunks` chunks, with this budget (or the default when `None`).
    Submit {
        chunks: u32,
        budget: Option<i64>,
    },
    /// Store the result of one chunk of one of the account's jobs, paying these volunteers.
    Pay {
        job: usize,
        chunk: u32,
        volunteers: Vec<u8>,
        work_units: u64,
    },
    Cancel {
        job: usize,
    },
    /// Claim an anonymous volunteer (several accounts may race for the same one).
    Claim {
        volunteer: u8,
    },
    /// Take the visitor's share of one of the site's visitors (several accounts may race for it; the
    /// site's owner is refused).
    Share {
        visitor: u8,
    },
    /// Sponsor a rewarded-ad campaign, approved at once or left pending.
    Campaign {
        budget: i64,
        reward: i64,
        cap: u32,
        approve: bool,
    },
    /// Watch any running campaign, as the account or as an anonymous volunteer, and complete the view
    /// `elapsed_ms` later on the server's clock (too early, when shorter than the minimum view time), and
    /// maybe once more (a replay, which must not pay).
    Watch {
        volunteer: Option<u8>,
        elapsed_ms: u64,
        replay: bool,
    },
    /// End one of the account's campaigns, refunding its rest.
    EndCampaign {
        campaign: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u32..4, proptest::option::of(1i64..30_000)).prop_map(|(chunks, budget)| Op::Submit { chunks, budget }),
        (any::<usize>(), 0u32..4, proptest::collection::vec(0u8..VOLUNTEERS, 0..4), 0u64..8_000_000)
            .prop_map(|(job, chunk, volunteers, work_units)| Op::Pay { job, chunk, volunteers, work_units }),
        any::<usize>().prop_map(|job| Op::Cancel { job }),
        (0u8..6).prop_map(|volunteer| Op::Claim { volunteer }),
        (FIRST_VISITOR..VOLUNTEERS).prop_map(|visitor| Op::Share { visitor }),
        (1i64..20_000, 1i64..6_000, 1u32..4, any::<bool>()).prop_map(|(budget, reward, cap, approve)| {
            Op::Campaign { budget, reward: reward.min(budget), cap, approve }
        }),
        (proptest::option::of(0u8..3), 0u64..3_000, any::<bool>())
            .prop_map(|(volunteer, elapsed_ms, replay)| Op::Watch { volunteer, elapsed_ms, replay }),
        any::<usize>().prop_map(|campaign| Op::EndCampaign { campaign }),
    ]
}

/// A campaign's minimum view time, and how long its views stay open, in the property test.
const MIN_VIEW_MS: u64 = 1_000;
const VIEW_TTL_MS: u64 = 10_000;

fn campaign(sponsor: u64, budget: i64, reward: i64, cap: u32, at_ms: u64) -> ads::NewCampaign {
    ads::NewCampaign {
        sponsor,
        name: format!("campaign of {sponsor}"),
        source: "image".to_owned(),
        mime: "image/png".to_owned(),
        upload: Some(bytes::Bytes::from_static(b"\x89PNG\r\n\x1a\n")),
        media_url: None,
        vast_duration_ms: None,
        impression_urls: Vec::new(),
        vast: None,
        budget,
        reward,
        min_view_ms: MIN_VIEW_MS,
        daily_cap_per_viewer: cap,
        created_at_ms: at_ms,
        max_open_per_sponsor: 8,
    }
}

/// Volunteers 0..3 are anonymous identities; 3..6 are accounts' own workers; 6..8 are visitors of a site
/// of the first account's.
fn volunteer_key(volunteer: u8) -> String {
    if !(3..FIRST_VISITOR).contains(&volunteer) {
        ledger::volunteer(&format!("v-{volunteer}"))
    } else {
        ledger::user(u64::from(volunteer - 2))
    }
}
const FIRST_VISITOR: u8 = 6;
const VOLUNTEERS: u8 = 8;

async fn act(store: Store, owner: u64, module: String, ops: Vec<Op>) {
    let mut jobs: Vec<(u64, u32)> = Vec::new();
    let mut campaigns: Vec<u64> = Vec::new();
    let mut replica = owner << 32;
    // The server's clock as this account's requests see it: it only moves forward, across UTC days.
    let mut now: u64 = 20_000 * writes::MS_PER_DAY - 30_000;
    let mut views = 0u64;
    let mut settling = Vec::new();
    for op in ops {
        match op {
            Op::Submit { chunks, budget } => {
                let mut request = job(&module, owner, chunks as usize, budget);
                request.max_cost = i64::from(chunks) * 20_000;
                if let Admission::Accepted { id, .. } = store.insert_job(request).await.unwrap() {
                    jobs.push((id, chunks));
                }
            }
            Op::Pay { job, chunk, volunteers, work_units } if !jobs.is_empty() => {
                let (id, chunks) = jobs[job % jobs.len()];
                let payments = volunteers
                    .iter()
                    .map(|volunteer| {
                        replica += 1;
                        pay(&volunteer_key(*volunteer), replica, work_units)
                    })
                    .collect();
                let (done, settled) = tokio::sync::oneshot::channel();
                let status = RunStatus::Exited { code: u32::from(work_units % 3 == 0) };
                store.insert_result(result(id, chunk % chunks, status, payments), move |outcome| {
                    let _ = done.send(outcome);
                });
                // A second result for a chunk, or one for a chunk of a cancelled job, is refused or pays
                // only what escrow holds: either way the law must hold. Not awaited here, so that results
                // queued one after another are stored together (see `store::gathering`).
                settling.push(settled);
            }
            Op::Cancel { job } if !jobs.is_empty() => {
                let (id, _) = jobs[job % jobs.len()];
                store.cancel_job(id, "cancelled by its owner".to_owned(), 9).await.unwrap();
            }
            Op::Claim { volunteer } if volunteer < 3 => {
                let id = format!("v-{volunteer}");
                store.transact(move |connection| writes::claim_volunteer(connection, &id, owner, 9)).await.unwrap();
            }
            Op::Share { visitor } => {
                let (id, hash) = (format!("v-{visitor}"), format!("code-{owner}-{visitor}-{now}"));
                store
                    .transact(move |connection| {
                        sites::issue_share_code(connection, &id, &hash, u64::MAX >> 2, u64::MAX >> 1)?;
                        sites::take_share(connection, &hash, owner, 9)
                    })
                    .await
                    .unwrap();
                now += 1;
            }
            Op::Campaign { budget, reward, cap, approve } => {
                let new = campaign(owner, budget, reward, cap, now);
                let admitted = store.transact(move |connection| ads::insert_campaign(connection, &new)).await.unwrap();
                if let ads::CampaignAdmission::Accepted { id } = admitted {
                    campaigns.push(id);
                    if approve {
                        store.transact(move |connection| ads::approve(connection, id, now)).await.unwrap();
                    }
                }
            }
            Op::Watch { volunteer, elapsed_ms, replay } => {
                views += 1;
                now += 1;
                let viewer = match volunteer {
                    Some(volunteer) => ledger::volunteer(&format!("v-{volunteer}")),
                    None => ledger::user(owner),
                };
                let token_hash = format!("{owner}-{views}");
                let view = ads::NewView {
                    token_hash: token_hash.clone(),
                    viewer: viewer.clone(),
                    campaign: None,
                    now_ms: now,
                    ttl_ms: VIEW_TTL_MS,
                    max_open_per_viewer: 4,
                };
                let started = store.transact(move |connection| ads::start_view(connection, &view)).await.unwrap();
                if let ads::ViewStart::Started { .. } = started {
                    now += elapsed_ms;
                    let (hash, who) = (token_hash.clone(), viewer.clone());
                    let first = store
                        .transact(move |connection| ads::complete_view(connection, &hash, &who, now))
                        .await
                        .unwrap();
                    if let ads::Completion::Refused(ads::ViewRefusal::TooEarly { remaining_ms }) = first {
                        assert!(elapsed_ms < MIN_VIEW_MS && remaining_ms == MIN_VIEW_MS - elapsed_ms, "{first:?}");
                    }
                    if replay {
                        let again = store
                            .transact(move |connection| ads::complete_view(connection, &token_hash, &viewer, now))
                            .await
                            .unwrap();
                        assert!(matches!(again, ads::Completion::Refused(_)), "a replayed token paid: {again:?}");
                    }
                }
            }
            Op::EndCampaign { campaign } if !campaigns.is_empty() => {
                let id = campaigns[campaign % campaigns.len()];
                store.transact(move |connection| ads::end(connection, id, Some(owner), now)).await.unwrap();
            }
            _ => {}
        }
    }
    for settled in settling {
        let _ = settled.await.unwrap();
    }
}

fn check(connection: &rusqlite::Connection) -> Result<(), String> {
    let totals = ledger::totals(connection).map_err(|error| error.to_string())?;
    if !totals.conserved() {
        return Err(format!("credits are not conserved: {totals:?}"));
    }
    let unbalanced: i64 = connection
        .query_row("SELECT COUNT(*) FROM (SELECT txn FROM ledger GROUP BY txn HAVING SUM(amount) != 0)", [], |row| {
            row.get(0)
        })
        .map_err(|error| error.to_string())?;
    if unbalanced != 0 {
        return Err(format!("{unbalanced} ledger transactions do not sum to zero"));
    }
    // A campaign's escrow is its budget less what it paid and refunded, in every committed state.
    let campaigns_off: i64 = connection
        .query_row(
            "SELECT COUNT(*) FROM campaigns
             LEFT JOIN ledger_accounts ON ledger_accounts.account = 'escrow:campaign:' || campaigns.id
             WHERE COALESCE(ledger_accounts.balance, 0) != campaigns.budget - campaigns.spent - campaigns.refunded",
            [],
            |row| row.get(0),
        )
        .map_err(|error| error.to_string())?;
    if campaigns_off != 0 {
        return Err(format!("{campaigns_off} campaigns' escrows disagree with their budget, spending and refunds"));
    }
    // The balances kept for the hot path are the sums of the entries, in every committed state.
    let disagreements = ledger::audit(connection).map_err(|error| error.to_string())?;
    if !disagreements.is_empty() {
        return Err(format!("kept balances disagree with the entries: {disagreements:?}"));
    }
    Ok(())
}

fn run(actors: Vec<Vec<Op>>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        let directory = tempfile::tempdir().unwrap();
        let store = Store::open(directory.path()).unwrap();
        let sha = "9".repeat(64);
        let mut owners = Vec::new();
        for index in 0..actors.len() {
            owners.push(user(&store, &format!("actor{index}"), 50_000).await);
        }
        for volunteer in 0..3 {
            let id = format!("v-{volunteer}");
            store.transact(move |connection| writes::register_volunteer(connection, &id, "hash", 1)).await.unwrap();
        }
        let site = sites::NewSite {
            key: "site_blog".to_owned(),
            owner: owners[0],
            name: "a blog".to_owned(),
            origins: vec!["https://blog.example".to_owned()],
            created_at_ms: 1,
            max_active: 1,
        };
        store.transact(move |connection| sites::create(connection, &site)).await.unwrap();
        for visitor in FIRST_VISITOR..VOLUNTEERS {
            let id = format!("v-{visitor}");
            let registered =
                store.transact(move |connection| sites::register_volunteer(connection, "site_blog", &id, "hash", 1));
            assert!(registered.await.unwrap().is_some());
        }
        for owner in &owners {
            store.put_module(module(&sha, *owner)).await.unwrap();
        }

        // A reader checks the law on every committed state it sees while the actors write.
        let writing = Arc::new(AtomicBool::new(true));
        let reader = {
            let (store, writing) = (store.clone(), writing.clone());
            tokio::spawn(async move {
                let mut checks = 0;
                while writing.load(Ordering::Relaxed) || checks == 0 {
                    store.read(|connection| Ok(check(connection))).await.unwrap()?;
                    checks += 1;
                    tokio::task::yield_now().await;
                }
                Ok::<_, String>(checks)
            })
        };
        let tasks: Vec<_> = owners
            .iter()
            .zip(actors)
            .map(|(owner, ops)| tokio::spawn(act(store.clone(), *owner, sha.clone(), ops)))
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        writing.store(false, Ordering::Relaxed);
        let checks = reader.await.unwrap().map_err(TestCaseError::fail)?;
        prop_assert!(checks > 0);

        store.read(|connection| Ok(check(connection))).await.unwrap().map_err(TestCaseError::fail)?;
        // Jobs that are over hold nothing in escrow.
        let stuck: i64 = store
            .read(|connection| {
                Ok(connection.query_row(
                    "SELECT COALESCE(SUM(ledger.amount), 0) FROM ledger JOIN jobs ON ledger.account = 'escrow:job:' || jobs.id
                     WHERE jobs.cancelled_at_ms IS NOT NULL
                        OR (SELECT COUNT(*) FROM results WHERE results.job_id = jobs.id) = jobs.chunk_count",
                    [],
                    |row| row.get(0),
                )?)
            })
            .await
            .unwrap();
        prop_assert_eq!(stuck, 0);
        // The counts and spending kept on each job row agree with its results and its escrow's payments.
        let miscounted: i64 = store
            .read(|connection| {
                Ok(connection.query_row(
                    "SELECT COUNT(*) FROM jobs WHERE
                        results_stored != (SELECT COUNT(*) FROM results WHERE results.job_id = jobs.id)
                     OR results_succeeded != (SELECT COALESCE(SUM(succeeded), 0) FROM results
                                              WHERE results.job_id = jobs.id)
                     OR spent != -(SELECT COALESCE(SUM(amount), 0) FROM ledger
                                   WHERE ledger.account = 'escrow:job:' || jobs.id AND ledger.kind = 'payment')",
                    [],
                    |row| row.get(0),
                )?)
            })
            .await
            .unwrap();
        prop_assert_eq!(miscounted, 0);
        // What volunteers earned and each day's totals, kept with each result, agree with the history: the
        // volunteers' shares of payments in the ledger, the stored results, and the same work units.
        let (earned, shares, days_chunks, results, volunteers_work, days_work): (i64, i64, i64, i64, i64, i64) = store
            .read(|connection| {
                Ok(connection.query_row(
                    "SELECT (SELECT COALESCE(SUM(earned), 0) FROM reputation),
                            (SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE kind = 'payment'
                               AND (account LIKE 'user:%' OR account LIKE 'volunteer:%')),
                            (SELECT COALESCE(SUM(chunks), 0) FROM daily_totals),
                            (SELECT COUNT(*) FROM results),
                            (SELECT COALESCE(SUM(work_units), 0) FROM reputation),
                            (SELECT COALESCE(SUM(work_units), 0) FROM daily_totals)",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?)),
                )?)
            })
            .await
            .unwrap();
        prop_assert_eq!(earned, shares);
        prop_assert_eq!(days_chunks, results);
        prop_assert_eq!(volunteers_work, days_work);
        // Campaigns: what each kept on its row agrees with the ledger and its views, a campaign that is
        // over holds nothing, and a running one can always pay one more reward.
        let campaign_problems: Vec<(i64, String)> = store
            .read(|connection| {
                let mut statement = connection.prepare(
                    "SELECT campaigns.id, campaigns.status FROM campaigns
                     LEFT JOIN ledger_accounts ON ledger_accounts.account = 'escrow:campaign:' || campaigns.id
                     WHERE COALESCE(ledger_accounts.balance, 0) != campaigns.budget - campaigns.spent - campaigns.refunded
                        OR (campaigns.status IN ('ended', 'exhausted') AND COALESCE(ledger_accounts.balance, 0) != 0)
                        OR (campaigns.status = 'approved' AND COALESCE(ledger_accounts.balance, 0) < campaigns.reward)
                        OR campaigns.spent != -(SELECT COALESCE(SUM(amount), 0) FROM ledger
                               WHERE account = 'escrow:campaign:' || campaigns.id AND kind = 'ad_reward')
                        OR campaigns.spent != campaigns.reward * campaigns.completed_views
                        OR campaigns.completed_views != (SELECT COUNT(*) FROM ad_views
                               WHERE ad_views.campaign_id = campaigns.id AND completed_at_ms IS NOT NULL)
                        OR campaigns.completed_views != (SELECT COALESCE(SUM(completed), 0) FROM ad_view_days
                               WHERE ad_view_days.campaign_id = campaigns.id)
                        OR campaigns.impressions != (SELECT COUNT(*) FROM ad_views
                               WHERE ad_views.campaign_id = campaigns.id)",
                )?;
                let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
            .unwrap();
        prop_assert_eq!(campaign_problems, vec![]);
        // No viewer was paid beyond a campaign's daily cap.
        let over_cap: i64 = store
            .read(|connection| {
                Ok(connection.query_row(
                    "SELECT COUNT(*) FROM ad_view_days JOIN campaigns ON campaigns.id = ad_view_days.campaign_id
                     WHERE ad_view_days.completed > campaigns.daily_cap_per_viewer",
                    [],
                    |row| row.get(0),
                )?)
            })
            .await
            .unwrap();
        prop_assert_eq!(over_cap, 0);
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn credits_are_conserved_under_concurrent_submissions_payouts_cancellations_claims_shares_and_ad_views(
        actors in proptest::collection::vec(proptest::collection::vec(op(), 1..40), 2..5)
    ) {
        run(actors)?;
    }
}
