//! The store's write operations. Each runs inside the writer thread's transaction (see `writer.rs`)
//! through `Store::transact`, so a write either happens whole or not at all, and is durable when its
//! caller hears back.

use std::collections::BTreeMap;

use distributivecom_protocol::embed::split_visitor_share;
use distributivecom_protocol::worker::{Output, RunStatus};
use rusqlite::{Connection, OptionalExtension, params};

use super::ledger::{self, BURN, MINT, Reference};
use super::{NewJob, NewModule, NewResult, StoreError, encoding, sessions, sites};

fn encoding_error(error: impl std::fmt::Display) -> StoreError {
    StoreError::Encoding(error.to_string())
}

/// Stores a module unless one with the same hash is there already, and records that `module.owner`
/// uploaded it, when and under which name.
pub fn insert_module(connection: &Connection, module: &NewModule) -> Result<(), StoreError> {
    let imports = serde_json::to_string(&module.imports).map_err(encoding_error)?;
    connection.execute(
        "INSERT INTO modules (sha256, size, imports, bytes, instrumented_sha256, instrumented_size, instrumented,
                              created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (sha256) DO NOTHING",
        params![
            module.sha256,
            module.bytes.len() as i64,
            imports,
            &module.bytes[..],
            module.instrumented_sha256,
            module.instrumented.len() as i64,
            &module.instrumented[..],
            module.created_at_ms as i64
        ],
    )?;
    // Uploading a program again brings it to the top of the uploader's list, under its new name if it has one.
    connection.execute(
        "INSERT INTO module_uploads (sha256, user_id, name, uploaded_at_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (sha256, user_id) DO UPDATE SET
           name = COALESCE(excluded.name, name), uploaded_at_ms = excluded.uploaded_at_ms",
        params![module.sha256, module.owner as i64, module.name, module.created_at_ms as i64],
    )?;
    Ok(())
}

/// Whether a job was accepted, and with which budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    Accepted {
        id: u64,
        budget: i64,
    },
    /// The owner (or, for a round, the session's escrow) cannot cover the budget (or has nothing at all).
    InsufficientCredits {
        balance: i64,
        budget: i64,
    },
    /// A round that its session cannot run now (closed, or not the next round); the message says why.
    RoundRefused(String),
}

/// Stores a job and its chunks, and moves its budget from the owner into the job's escrow, atomically:
/// a job is never stored without its escrow, nor escrow taken for a job that was not stored.
pub fn insert_job(connection: &Connection, job: &NewJob) -> Result<Admission, StoreError> {
    // A session's round is funded from the session's escrow, its owner's otherwise.
    let source = match &job.round {
        None => ledger::user(job.owner),
        Some(round) => sessions::escrow(round.session),
    };
    let balance = ledger::balance(connection, &source)?;
    let budget = job.budget.unwrap_or_else(|| balance.min(job.max_cost));
    if let Some(round) = &job.round {
        let state: Option<(i64, Option<i64>)> = connection
            .prepare_cached("SELECT next_round, closed_at_ms FROM compute_sessions WHERE id = ?1")?
            .query_row([round.session as i64], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        let refusal = match state {
            None => Some(format!("there is no session {}", round.session)),
            Some((_, Some(_))) => Some("the session is closed".to_owned()),
            Some((next, None)) if next as u64 != round.round => {
                Some(format!("round {} is out of order: the next round of this session is {next}", round.round))
            }
            Some(_) => None,
        };
        if let Some(message) = refusal {
            return Ok(Admission::RoundRefused(message));
        }
    }
    if budget <= 0 || balance < budget {
        return Ok(Admission::InsufficientCredits { balance, budget });
    }
    if let Some(round) = &job.round {
        connection
            .prepare_cached("UPDATE compute_sessions SET next_round = next_round + 1 WHERE id = ?1")?
            .execute([round.session as i64])?;
    }
    let env = serde_json::to_string(&job.env).map_err(encoding_error)?;
    let limits = encoding::limits_to_column(&job.limits)?;
    connection
        .prepare_cached(
            "INSERT INTO jobs (name, module, program_name, env, limits, max_retries, chunk_count, created_at_ms,
                           owner_id, budget, replicas, quorum, session_id, round, broadcast)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        )?
        .execute(params![
            job.name,
            job.module,
            job.program_name,
            env,
            limits,
            job.max_retries,
            job.chunks.len() as i64,
            job.created_at_ms as i64,
            job.owner as i64,
            budget,
            job.replicas,
            job.quorum,
            job.round.as_ref().map(|round| round.session as i64),
            job.round.as_ref().map(|round| round.round as i64),
            job.round.as_ref().map(|round| &round.broadcast.0[..])
        ])?;
    let id = connection.last_insert_rowid() as u64;
    // A round's chunks are its session's shards with its broadcast: stored once, not per chunk.
    if job.round.is_none() {
        let mut insert = connection.prepare_cached("INSERT INTO chunks (job_id, idx, spec) VALUES (?1, ?2, ?3)")?;
        for (index, chunk) in job.chunks.iter().enumerate() {
            let spec = encoding::chunk_to_column(chunk)?;
            insert.execute(params![id as i64, index as i64, spec])?;
        }
    }
    let escrow = ledger::escrow(id);
    ledger::record(
        connection,
        "escrow",
        &[(&source, -budget), (&escrow, budget)],
        Reference { job: Some(id), memo: "the job's budget", ..Reference::default() },
        job.created_at_ms,
    )?;
    Ok(Admission::Accepted { id, budget })
}

/// What storing a result did to the job's escrow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settlement {
    /// Paid out of escrow for this chunk (volunteers' shares and the fee).
    pub paid: i64,
    /// The escrow cannot pay for more work: a payment fell short, or nothing is left while chunks remain.
    pub budget_spent: bool,
    /// A payment fell short, so the result was stored as failed with [`WITHHELD`] and no output: the owner
    /// does not get work its budget did not pay for in full.
    pub withheld: bool,
}

/// Why a result is stored without its output: its volunteers could not be paid in full.
pub const WITHHELD: &str = "the budget ran out before this chunk's volunteers could be paid in full, so its result \
                            is withheld; raise the budget to run it whole";

/// The status a withheld result is stored with, and its consumer told.
pub fn withheld_status() -> RunStatus {
    RunStatus::Failed { message: WITHHELD.to_owned() }
}

/// Stores a chunk's final result, pays the volunteers whose replicas validated it (from the job's escrow,
/// the platform's fee burned), records what validation taught about each volunteer, and refunds the
/// escrow's rest when this was the job's last chunk.
pub fn insert_result(connection: &Connection, result: &NewResult) -> Result<Settlement, StoreError> {
    let mut settled = insert_results(connection, &[result])?;
    Ok(settled.pop().unwrap_or_default())
}

/// Stores results in order, as [`insert_result`] would one after the other, with the same rows, but
/// moves each job's counts, each ledger account's kept balance, each volunteer key's reputation and each
/// day's totals once for all of them: a group commit's results cost a statement or two each, not a dozen.
/// All or nothing: an error leaves the caller to roll the transaction back.
pub fn insert_results(connection: &Connection, results: &[&NewResult]) -> Result<Vec<Settlement>, StoreError> {
    let mut postings = ledger::Postings::default();
    let mut jobs: BTreeMap<u64, JobTally> = BTreeMap::new();
    let mut reputations: BTreeMap<&str, ReputationTally> = BTreeMap::new();
    let mut days: BTreeMap<u64, (i64, i64)> = BTreeMap::new();
    let mut settled = Vec::with_capacity(results.len());
    for result in results {
        let escrow = ledger::escrow(result.job);
        let job = match jobs.entry(result.job) {
            std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::btree_map::Entry::Vacant(entry) => {
                entry.insert(JobTally::read(connection, result.job, postings.balance(connection, &escrow)?)?)
            }
        };
        let mut paid = 0;
        let mut paid_work_units = 0u64;
        let mut short = false;
        let mut validation_recorded = vec![false; result.reputation.len()];
        for payment in &result.payments {
            let cost = result.pricing.cost(payment.work_units);
            // The budget is the owner's maximum price: what it cannot cover is not paid (and stops the job).
            let amount = cost.min(job.available).max(0);
            job.available -= amount;
            short |= amount < cost;
            // Rounded up, so that even the smallest paid replica gives its volunteer something.
            let share = ((amount * i64::from(result.pricing.volunteer_share_percent) + 99) / 100).min(amount);

            let payee = payee_and_site(connection, &payment.volunteer)?;
            // A site's visitor who took their share gets its published part of the volunteer side.
            let (account_share, visitor_share) = match &payee.visitor {
                Some(_) => split_visitor_share(share),
                None => (share, 0),
            };
            let mut legs = vec![(escrow.as_str(), -amount), (payee.account.as_str(), account_share)];
            if let Some(visitor) = &payee.visitor {
                legs.push((visitor.as_str(), visitor_share));
            }
            legs.push((BURN, amount - share));
            postings.record(
                connection,
                "payment",
                &legs,
                Reference {
                    job: Some(result.job),
                    chunk: Some(result.chunk),
                    replica: Some(payment.replica),
                    memo: "a validated replica",
                },
                result.finished_at_ms,
            )?;
            paid += amount;
            paid_work_units = paid_work_units.saturating_add(payment.work_units);
            // The volunteer key's validated work and earnings, kept as they happen (see
            // `accounts::volunteering`), with its validation when it has one.
            let validation = result
                .reputation
                .iter()
                .zip(&mut validation_recorded)
                .find(|(change, recorded)| !**recorded && change.volunteer == payment.volunteer)
                .map(|(change, recorded)| {
                    *recorded = true;
                    (change.valid, change.run)
                });
            reputations.entry(&payment.volunteer).or_default().add(validation, sql_integer(payment.work_units), share);
            if let Some(site) = payee.site {
                sites::record_payment(connection, site, payment.work_units, payment.compute_us, account_share)?;
            }
        }
        // The day's totals move with the result, for the statistics page.
        let day = days.entry(result.finished_at_ms / MS_PER_DAY).or_default();
        day.0 += 1;
        day.1 = day.1.saturating_add(sql_integer(paid_work_units));
        for (change, _) in result.reputation.iter().zip(&validation_recorded).filter(|(_, recorded)| !**recorded) {
            reputations.entry(&change.volunteer).or_default().add(Some((change.valid, change.run)), 0, 0);
        }
        // What a short budget did not pay for in full, its owner does not get (its volunteers keep what
        // was paid). Jobs stored before the ledger existed have no budget and finish unpaid, as below.
        let withheld = short && job.budget > 0;
        let stored_status;
        let empty = Output::default();
        let (status, output) = if withheld {
            stored_status = withheld_status();
            (&stored_status, &empty)
        } else {
            (&result.status, &result.output)
        };
        // The job's counts move with the result (the results row's primary key refuses a second one below),
        // so nothing here counts the job's results.
        job.stored += 1;
        job.added_stored += 1;
        job.added_succeeded += i64::from(status.is_success());
        job.last_finished_at_ms = job.last_finished_at_ms.max(sql_integer(result.finished_at_ms));
        job.added_spent += paid;
        let succeeded = status.is_success();
        let status = encoding::status_to_column(status)?;
        let output = encoding::output_to_column(output)?;
        connection
            .prepare_cached(
                "INSERT INTO results (job_id, idx, succeeded, status, attempts, work_units, output, finished_at_ms, seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                result.job as i64,
                result.chunk,
                succeeded,
                status,
                result.attempts,
                result.work_units as i64,
                output,
                result.finished_at_ms as i64,
                job.stored
            ])?;
        let complete = job.stored == job.chunk_count;
        if complete && let Some(owner) = job.owner {
            // The refund reads the escrow's kept balance: post what is pending first.
            postings.post(connection)?;
            ledger::refund(connection, result.job, owner, "the rest of the budget", result.finished_at_ms)?;
            job.available = 0;
        }
        // Jobs stored before the ledger existed have no budget: they finish unpaid rather than stop.
        let budget_spent = job.budget > 0 && !complete && (short || job.available <= 0);
        settled.push(Settlement { paid, budget_spent, withheld });
    }
    postings.post(connection)?;
    for (id, job) in &jobs {
        connection
            .prepare_cached(
                "UPDATE jobs SET results_stored = results_stored + ?2, results_succeeded = results_succeeded + ?3,
                     last_finished_at_ms = MAX(COALESCE(last_finished_at_ms, 0), ?4), spent = spent + ?5
                 WHERE id = ?1",
            )?
            .execute(params![
                *id as i64,
                job.added_stored,
                job.added_succeeded,
                job.last_finished_at_ms,
                job.added_spent
            ])?;
    }
    for (volunteer, tally) in &reputations {
        record_reputation(connection, volunteer, tally)?;
    }
    for (day, (chunks, work_units)) in days {
        connection
            .prepare_cached(
                "INSERT INTO daily_totals (day, chunks, work_units) VALUES (?1, ?2, ?3)
                 ON CONFLICT (day) DO UPDATE SET
                   chunks = chunks + excluded.chunks, work_units = work_units + excluded.work_units",
            )?
            .execute(params![sql_integer(day), chunks, work_units])?;
    }
    Ok(settled)
}

/// A job's counts as results are stored, moved in the database once at the end of the write.
struct JobTally {
    /// Results stored, these included (each new result's place in the order of completion).
    stored: u32,
    chunk_count: u32,
    owner: Option<u64>,
    budget: i64,
    /// What is left in its escrow.
    available: i64,
    added_stored: i64,
    added_succeeded: i64,
    last_finished_at_ms: i64,
    added_spent: i64,
}

impl JobTally {
    fn read(connection: &Connection, job: u64, available: i64) -> Result<JobTally, StoreError> {
        let (stored, chunk_count, owner, budget): (u32, u32, Option<i64>, i64) = connection
            .prepare_cached("SELECT results_stored, chunk_count, owner_id, budget FROM jobs WHERE id = ?1")?
            .query_row([job as i64], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))?;
        Ok(JobTally {
            stored,
            chunk_count,
            owner: owner.map(|owner| owner as u64),
            budget,
            available,
            added_stored: 0,
            added_succeeded: 0,
            last_finished_at_ms: 0,
            added_spent: 0,
        })
    }
}

/// What a write teaches about one volunteer key: its validations (the last run wins), work and earnings.
#[derive(Debug, Default)]
struct ReputationTally {
    run: Option<u32>,
    validated: i64,
    invalid: i64,
    work_units: i64,
    earned: i64,
}

impl ReputationTally {
    fn add(&mut self, validation: Option<(bool, u32)>, work_units: i64, earned: i64) {
        if let Some((valid, run)) = validation {
            self.run = Some(run);
            self.validated += i64::from(valid);
            self.invalid += i64::from(!valid);
        }
        self.work_units = self.work_units.saturating_add(work_units);
        self.earned += earned;
    }
}

/// Milliseconds in a UTC day: `daily_totals` is keyed by days since the Unix epoch.
pub const MS_PER_DAY: u64 = 86_400_000;

/// A count as SQLite's signed integer, saturating rather than wrapping (work units come from volunteers,
/// capped by the job's limit, which may be near `u64::MAX` only in a forged report).
fn sql_integer(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The account a volunteer's credits go to (see [`payee_and_site`]); ad rewards go there too, whole.
pub(super) fn payee(connection: &Connection, volunteer: &str) -> Result<String, StoreError> {
    payee_and_site(connection, volunteer).map(|payee| payee.account)
}

/// Who a volunteer's validated replica pays.
struct Payee {
    /// The ledger account that gets the volunteer side (all of it, or the owner's part of a shared one).
    account: String,
    /// The site whose statistics count the replica.
    site: Option<u64>,
    /// The account of a site's visitor who took their share (`protocol::embed::VISITOR_SHARE_PERCENT`).
    visitor: Option<String>,
}

/// A site's visitor's credits go to the site's owner (whether or not its key was revoked since: the work
/// was done and validated), shared with the visitor if they took their share; a claimed anonymous
/// volunteer's go to its account; anyone else's to its own key's account.
fn payee_and_site(connection: &Connection, volunteer: &str) -> Result<Payee, StoreError> {
    let own = || Payee { account: volunteer.to_owned(), site: None, visitor: None };
    let Some(id) = volunteer.strip_prefix("volunteer:") else { return Ok(own()) };
    let found = connection
        .prepare_cached(
            "SELECT volunteers.user_id, sites.id, sites.owner_id, volunteers.visitor_user_id
             FROM volunteers LEFT JOIN sites ON sites.id = volunteers.site_id WHERE volunteers.id = ?1",
        )?
        .query_row([id], |row| {
            let user = |index| row.get::<_, Option<i64>>(index).map(|id| id.map(|id| ledger::user(id as u64)));
            Ok(match (user(0)?, row.get::<_, Option<i64>>(1)?, user(2)?) {
                (_, Some(site), Some(owner)) => {
                    Some(Payee { account: owner, site: Some(site as u64), visitor: user(3)? })
                }
                (Some(user), _, _) => Some(Payee { account: user, site: None, visitor: None }),
                _ => None,
            })
        })
        .optional()?
        .flatten();
    Ok(found.unwrap_or_else(own))
}

/// A volunteer's replica was validated (`valid`) or contradicted by a quorum, and its run of validated
/// replicas is now `run`. The rule that computes the run is the scheduler's; this only records it.
pub fn record_validation(connection: &Connection, volunteer: &str, valid: bool, run: u32) -> Result<(), StoreError> {
    let mut tally = ReputationTally::default();
    tally.add(Some((valid, run)), 0, 0);
    record_reputation(connection, volunteer, &tally)
}

/// Moves a volunteer key's reputation row: its validations, and the work units and credits it earned.
fn record_reputation(connection: &Connection, volunteer: &str, tally: &ReputationTally) -> Result<(), StoreError> {
    connection
        .prepare_cached(
            "INSERT INTO reputation (volunteer, consecutive_valid, validated, invalid, work_units, earned)
             VALUES (?1, COALESCE(?2, 0), ?3, ?4, ?5, ?6)
             ON CONFLICT (volunteer) DO UPDATE SET
               consecutive_valid = COALESCE(?2, consecutive_valid),
               validated = validated + excluded.validated, invalid = invalid + excluded.invalid,
               work_units = work_units + excluded.work_units, earned = earned + excluded.earned",
        )?
        .execute(params![volunteer, tally.run, tally.validated, tally.invalid, tally.work_units, tally.earned])?;
    Ok(())
}

/// Stops a job (its owner cancelled it, or its budget is spent) and refunds its escrow. Returns false if
/// it was already stopped or finished.
pub fn cancel_job(connection: &Connection, job: u64, reason: &str, at_ms: u64) -> Result<bool, StoreError> {
    let changed = connection.execute(
        "UPDATE jobs SET cancelled_at_ms = ?2, stop_reason = ?3
         WHERE id = ?1 AND cancelled_at_ms IS NULL AND results_stored < chunk_count",
        params![job as i64, at_ms as i64, reason],
    )?;
    if changed == 1
        && let Some(owner) = ledger::job_owner(connection, job)?
    {
        ledger::refund(connection, job, owner, reason, at_ms)?;
    }
    Ok(changed == 1)
}

/// Reserves the next block of replica ids (see `Store::next_replica_block`).
pub fn next_replica_block(connection: &Connection) -> Result<u64, StoreError> {
    Ok(connection.query_row(
        "INSERT INTO meta (key, value) VALUES ('replica_block', 1)
         ON CONFLICT (key) DO UPDATE SET value = value + 1
         RETURNING value",
        [],
        |row| row.get::<_, i64>(0),
    )? as u64)
}

/// Creates an account and grants it its starting credits. `None` if the name is taken.
pub fn create_user(
    connection: &Connection,
    username: &str,
    password_hash: &str,
    is_admin: bool,
    grant: i64,
    at_ms: u64,
) -> Result<Option<u64>, StoreError> {
    let inserted = connection.execute(
        "INSERT INTO users (username, password_hash, is_admin, created_at_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (username) DO NOTHING",
        params![username, password_hash, is_admin, at_ms as i64],
    )?;
    if inserted == 0 {
        return Ok(None);
    }
    let id = connection.last_insert_rowid() as u64;
    let account = ledger::user(id);
    ledger::record(
        connection,
        "grant",
        &[(MINT, -grant), (&account, grant)],
        Reference { memo: "starting credits", ..Reference::default() },
        at_ms,
    )?;
    Ok(Some(id))
}

pub fn create_web_session(
    connection: &Connection,
    token_hash: &str,
    user: u64,
    csrf_token: &str,
    at_ms: u64,
    expires_at_ms: u64,
) -> Result<(), StoreError> {
    connection.execute(
        "INSERT INTO sessions (token_hash, user_id, csrf_token, created_at_ms, expires_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![token_hash, user as i64, csrf_token, at_ms as i64, expires_at_ms as i64],
    )?;
    // Forget sessions that expired, so the table does not grow forever.
    connection.execute("DELETE FROM sessions WHERE expires_at_ms < ?1", [at_ms as i64])?;
    Ok(())
}

pub fn delete_web_session(connection: &Connection, token_hash: &str) -> Result<(), StoreError> {
    connection.execute("DELETE FROM sessions WHERE token_hash = ?1", [token_hash])?;
    Ok(())
}

pub fn create_token(
    connection: &Connection,
    user: u64,
    name: &str,
    prefix: &str,
    token_hash: &str,
    at_ms: u64,
) -> Result<u64, StoreError> {
    connection.execute(
        "INSERT INTO api_tokens (user_id, name, prefix, token_hash, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![user as i64, name, prefix, token_hash, at_ms as i64],
    )?;
    Ok(connection.last_insert_rowid() as u64)
}

/// Revokes one of the user's tokens. False if the user has no such active token.
pub fn revoke_token(connection: &Connection, user: u64, id: u64, at_ms: u64) -> Result<bool, StoreError> {
    let changed = connection.execute(
        "UPDATE api_tokens SET revoked_at_ms = ?3 WHERE id = ?1 AND user_id = ?2 AND revoked_at_ms IS NULL",
        params![id as i64, user as i64, at_ms as i64],
    )?;
    Ok(changed == 1)
}

pub fn touch_token(connection: &Connection, id: u64, at_ms: u64) -> Result<(), StoreError> {
    connection.execute("UPDATE api_tokens SET last_used_at_ms = ?2 WHERE id = ?1", params![id as i64, at_ms as i64])?;
    Ok(())
}

pub fn register_volunteer(connection: &Connection, id: &str, secret_hash: &str, at_ms: u64) -> Result<(), StoreError> {
    connection.execute(
        "INSERT INTO volunteers (id, secret_hash, created_at_ms) VALUES (?1, ?2, ?3)",
        params![id, secret_hash, at_ms as i64],
    )?;
    Ok(())
}

/// Links an anonymous volunteer to an account and moves what it earned there. Returns the amount moved,
/// or `None` if the volunteer belongs to another account already or is a site's visitor.
pub fn claim_volunteer(
    connection: &Connection,
    volunteer: &str,
    user: u64,
    at_ms: u64,
) -> Result<Option<i64>, StoreError> {
    let owner: Option<(Option<i64>, Option<i64>)> = connection
        .query_row("SELECT user_id, site_id FROM volunteers WHERE id = ?1", [volunteer], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    match owner {
        None => return Ok(None),
        // A site's visitor works for the site's owner: nobody claims it (its credential lives in the
        // widget's storage, and whoever read it there must not turn the site's earnings into their own).
        Some((_, Some(_))) => return Ok(None),
        Some((Some(other), None)) if other as u64 != user => return Ok(None),
        Some(_) => {}
    }
    connection.execute("UPDATE volunteers SET user_id = ?2 WHERE id = ?1", params![volunteer, user as i64])?;
    let from = ledger::volunteer(volunteer);
    let earned = ledger::balance(connection, &from)?;
    let to = ledger::user(user);
    ledger::record(
        connection,
        "claim",
        &[(&from, -earned), (&to, earned)],
        Reference { memo: "credits earned by this browser before signing in", ..Reference::default() },
        at_ms,
    )?;
    Ok(Some(earned))
}

/// Gives jobs and programs stored before accounts existed to the first administrator.
pub fn adopt_orphans(connection: &Connection, admin: u64) -> Result<(), StoreError> {
    connection.execute("UPDATE jobs SET owner_id = ?1 WHERE owner_id IS NULL", [admin as i64])?;
    connection.execute(
        "INSERT INTO module_uploads (sha256, user_id, uploaded_at_ms)
         SELECT sha256, ?1, created_at_ms FROM modules WHERE sha256 NOT IN (SELECT sha256 FROM module_uploads)",
        [admin as i64],
    )?;
    Ok(())
}
