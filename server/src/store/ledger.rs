//! The credit ledger: double-entry and append-only.
//!
//! Every movement of credits is a *transaction* of entries whose amounts sum to zero. The entries are the
//! append-only audit trail; each account's balance (the sum of its entries) is also kept in
//! `ledger_accounts`, posted by [`record`] in the same write as each entry, as TigerBeetle keeps posted
//! amounts on its accounts. So reading a balance costs the same on the first day and after a million
//! results, and [`audit`] proves the kept balances equal the sums of the entries. Architecture
//! Invariant: [`Postings::record`] (which [`record`] calls) is the only writer of entries, and what it
//! records is posted in the same write; a write that records many transactions (a group commit's
//! results) posts each account once. (Schema versions 3 to 9 posted by a trigger,
//! which made SQLite open a statement journal for every entry.) Accounts are named:
//!
//! - `mint`: where credits come from (its balance is minus everything ever minted);
//! - `burn`: where fees go (its balance is everything ever burned);
//! - `user:<id>`: an account's spendable credits;
//! - `volunteer:<id>`: what an anonymous volunteer earned and has not yet moved to an account;
//! - `escrow:job:<id>`: a job's budget, held while it runs;
//! - `escrow:session:<id>`: a session's budget, from which its rounds' escrows are drawn;
//! - `escrow:campaign:<id>`: a rewarded-ad campaign's budget, from which each completed view's reward is
//!   paid (kind `ad_reward`), the rest refunded when the campaign ends (see `store::ads`).
//!
//! So the sum of all entries is always zero, which is the conservation law: the balances of users,
//! volunteers and escrows together equal minted minus burned. Triggers in the schema refuse any update or
//! delete of an entry.
//!
//! Amounts are integers in millicredits.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;

pub const MINT: &str = "mint";
pub const BURN: &str = "burn";

pub fn user(id: u64) -> String {
    format!("user:{id}")
}

pub fn volunteer(id: &str) -> String {
    format!("volunteer:{id}")
}

pub fn escrow(job: u64) -> String {
    format!("escrow:job:{job}")
}

/// What a transaction is about, recorded on each of its entries.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reference<'a> {
    pub job: Option<u64>,
    pub chunk: Option<u32>,
    pub replica: Option<u64>,
    pub memo: &'a str,
}

/// Records one transaction and posts it to its accounts' kept balances. The legs must sum to zero; zero
/// legs are left out, and a transaction with nothing left to record records nothing.
pub fn record(
    connection: &Connection,
    kind: &str,
    legs: &[(&str, i64)],
    reference: Reference<'_>,
    at_ms: u64,
) -> Result<(), StoreError> {
    let mut postings = Postings::default();
    postings.record(connection, kind, legs, reference, at_ms)?;
    postings.post(connection)
}

/// Transactions recorded (their entries written) whose postings to the kept balances wait, so that a
/// write recording many of them updates each account's balance once. Architecture Invariant: posted
/// before the write ends ([`Postings::post`]), and every balance read in between goes through
/// [`Postings::balance`].
#[derive(Debug, Default)]
pub struct Postings {
    /// Per account: the amount and the number of entries not yet posted.
    unposted: BTreeMap<String, (i64, i64)>,
}

impl Postings {
    /// Records one transaction's entries; its postings wait for [`Postings::post`].
    pub fn record(
        &mut self,
        connection: &Connection,
        kind: &str,
        legs: &[(&str, i64)],
        reference: Reference<'_>,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        let sum: i128 = legs.iter().map(|(_, amount)| i128::from(*amount)).sum();
        if sum != 0 {
            // A bug in the caller: refuse before anything is written.
            return Err(StoreError::Unbalanced(format!("{kind} transaction sums to {sum}")));
        }
        let legs: Vec<&(&str, i64)> = legs.iter().filter(|(_, amount)| *amount != 0).collect();
        if legs.is_empty() {
            return Ok(());
        }
        // Numbered past every entry's id, so past every transaction's number (each is at most its entries'
        // ids): found by the primary key, with no index on `txn` to keep up on every entry.
        let txn: i64 = connection
            .prepare_cached("SELECT COALESCE(MAX(id), 0) + 1 FROM ledger")?
            .query_row([], |row| row.get(0))?;
        let mut insert = connection.prepare_cached(
            "INSERT INTO ledger (txn, account, amount, kind, job_id, chunk, replica, memo, created_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for (account, amount) in legs {
            insert.execute(params![
                txn,
                account,
                amount,
                kind,
                reference.job.map(|job| job as i64),
                reference.chunk,
                reference.replica.map(|replica| replica as i64),
                reference.memo,
                at_ms as i64
            ])?;
            let unposted = self.unposted.entry((*account).to_owned()).or_default();
            unposted.0 += amount;
            unposted.1 += 1;
        }
        Ok(())
    }

    /// An account's balance with what is recorded and not yet posted.
    pub fn balance(&self, connection: &Connection, account: &str) -> Result<i64, StoreError> {
        Ok(balance(connection, account)? + self.unposted.get(account).map_or(0, |(amount, _)| *amount))
    }

    /// Posts every recorded entry to its account's kept balance: one statement per account.
    pub fn post(&mut self, connection: &Connection) -> Result<(), StoreError> {
        let mut post = connection.prepare_cached(
            "UPDATE ledger_accounts SET balance = balance + ?2, entries = entries + ?3 WHERE account = ?1",
        )?;
        for (account, (amount, entries)) in std::mem::take(&mut self.unposted) {
            if post.execute(params![account, amount, entries])? == 0 {
                connection
                    .prepare_cached("INSERT INTO ledger_accounts (account, balance, entries) VALUES (?1, ?2, ?3)")?
                    .execute(params![account, amount, entries])?;
            }
        }
        Ok(())
    }
}

/// An account's balance (the sum of its entries, kept as they are posted): one primary-key lookup.
pub fn balance(connection: &Connection, account: &str) -> Result<i64, StoreError> {
    let mut statement = connection.prepare_cached("SELECT balance FROM ledger_accounts WHERE account = ?1")?;
    Ok(statement.query_row([account], |row| row.get(0)).optional()?.unwrap_or(0))
}

/// An account whose kept balance is not the sum of its entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disagreement {
    pub account: String,
    /// The sum of the account's entries (the truth).
    pub entries_sum: i64,
    pub entries: i64,
    /// What `ledger_accounts` says.
    pub kept_balance: i64,
    pub kept_entries: i64,
}

/// Checks every kept balance against the sum of the account's entries (and the other way round): the
/// proof that the balances read on the hot path are the ledger's. One pass over the ledger, so it runs at
/// start-up and in tests, not per request. Returns the accounts that disagree (none, normally).
pub fn audit(connection: &Connection) -> Result<Vec<Disagreement>, StoreError> {
    let mut statement = connection.prepare(
        "SELECT account, SUM(entries_sum), SUM(entries), SUM(kept_balance), SUM(kept_entries) FROM (
             SELECT account, SUM(amount) AS entries_sum, COUNT(*) AS entries, 0 AS kept_balance, 0 AS kept_entries
             FROM ledger GROUP BY account
             UNION ALL
             SELECT account, 0, 0, balance, entries FROM ledger_accounts
         ) GROUP BY account
         HAVING SUM(entries_sum) != SUM(kept_balance) OR SUM(entries) != SUM(kept_entries)
         ORDER BY account",
    )?;
    let rows = statement.query_map([], |row| {
        Ok(Disagreement {
            account: row.get(0)?,
            entries_sum: row.get(1)?,
            entries: row.get(2)?,
            kept_balance: row.get(3)?,
            kept_entries: row.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The ledger's totals, for the conservation check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub minted: i64,
    pub burned: i64,
    /// Users' and volunteers' balances together.
    pub held: i64,
    pub escrowed: i64,
    /// Accounts whose balance is below zero (other than `mint`).
    pub negative_accounts: u64,
}

impl Totals {
    /// Whether credits are conserved: what users, volunteers and escrows hold is what was minted and not
    /// burned, and no account is overdrawn.
    pub fn conserved(&self) -> bool {
        self.held + self.escrowed == self.minted - self.burned && self.negative_accounts == 0
    }
}

/// The totals from the entries themselves (the audit trail), not from the kept balances.
pub fn totals(connection: &Connection) -> Result<Totals, StoreError> {
    let mut statement = connection.prepare("SELECT account, SUM(amount) FROM ledger GROUP BY account")?;
    let rows = statement.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))?;
    let mut totals = Totals::default();
    for row in rows {
        let (account, amount) = row?;
        match account.as_str() {
            MINT => totals.minted = -amount,
            BURN => totals.burned = amount,
            _ if account.starts_with("escrow:") => totals.escrowed += amount,
            _ => totals.held += amount,
        }
        if account != MINT && amount < 0 {
            totals.negative_accounts += 1;
        }
    }
    Ok(totals)
}

/// Moves everything left in a job's escrow back to its owner.
pub fn refund(connection: &Connection, job: u64, owner: u64, memo: &str, at_ms: u64) -> Result<i64, StoreError> {
    let escrow = escrow(job);
    let left = balance(connection, &escrow)?;
    // A session's round gives its rest back to the session, which refunds its owner when it closes.
    let session: Option<i64> = connection
        .prepare_cached("SELECT session_id FROM jobs WHERE id = ?1")?
        .query_row([job as i64], |row| row.get(0))
        .optional()?
        .flatten();
    let owner = match session {
        Some(session) => super::sessions::escrow(session as u64),
        None => user(owner),
    };
    record(
        connection,
        "refund",
        &[(&escrow, -left), (&owner, left)],
        Reference { job: Some(job), memo, ..Reference::default() },
        at_ms,
    )?;
    Ok(left)
}

/// The owner of a job, if it has one.
pub fn job_owner(connection: &Connection, job: u64) -> Result<Option<u64>, StoreError> {
    let owner: Option<Option<i64>> = connection
        .prepare_cached("SELECT owner_id FROM jobs WHERE id = ?1")?
        .query_row([job as i64], |row| row.get(0))
        .optional()?;
    Ok(owner.flatten().map(|id| id as u64))
}
