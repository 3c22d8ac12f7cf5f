//! Reads about accounts: users, sessions, API tokens, volunteers, reputations and ledger entries.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;

/// An account as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRow {
    pub id: u64,
    pub username: String,
    pub password_hash: String,
    pub is_admin: bool,
}

fn user_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        id: row.get::<_, i64>(0)? as u64,
        username: row.get(1)?,
        password_hash: row.get(2)?,
        is_admin: row.get(3)?,
    })
}

pub fn user_by_name(connection: &Connection, username: &str) -> Result<Option<UserRow>, StoreError> {
    Ok(connection
        .prepare_cached("SELECT id, username, password_hash, is_admin FROM users WHERE username = ?1")?
        .query_row([username], user_from_row)
        .optional()?)
}

pub fn user_by_id(connection: &Connection, id: u64) -> Result<Option<UserRow>, StoreError> {
    Ok(connection
        .prepare_cached("SELECT id, username, password_hash, is_admin FROM users WHERE id = ?1")?
        .query_row([id as i64], user_from_row)
        .optional()?)
}

pub fn user_count(connection: &Connection) -> Result<u64, StoreError> {
    Ok(connection.prepare_cached("SELECT COUNT(*) FROM users")?.query_row([], |row| row.get::<_, i64>(0))? as u64)
}

/// The user and CSRF token of a session that has not expired.
pub fn web_session(
    connection: &Connection,
    token_hash: &str,
    now_ms: u64,
) -> Result<Option<(UserRow, String)>, StoreError> {
    Ok(connection
        .prepare_cached(
            "SELECT users.id, users.username, users.password_hash, users.is_admin, sessions.csrf_token
             FROM sessions JOIN users ON users.id = sessions.user_id
             WHERE sessions.token_hash = ?1 AND sessions.expires_at_ms > ?2",
        )?
        .query_row(params![token_hash, now_ms as i64], |row| Ok((user_from_row(row)?, row.get::<_, String>(4)?)))
        .optional()?)
}

/// The user and id of an API token that has not been revoked.
pub fn token(connection: &Connection, token_hash: &str) -> Result<Option<(UserRow, u64)>, StoreError> {
    Ok(connection
        .prepare_cached(
            "SELECT users.id, users.username, users.password_hash, users.is_admin, api_tokens.id
             FROM api_tokens JOIN users ON users.id = api_tokens.user_id
             WHERE api_tokens.token_hash = ?1 AND api_tokens.revoked_at_ms IS NULL",
        )?
        .query_row([token_hash], |row| Ok((user_from_row(row)?, row.get::<_, i64>(4)? as u64)))
        .optional()?)
}

/// A token as listed on the account page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRow {
    pub id: u64,
    pub name: String,
    pub prefix: String,
    pub created_at_ms: u64,
    pub last_used_at_ms: Option<u64>,
    pub revoked: bool,
}

pub fn tokens(connection: &Connection, user: u64) -> Result<Vec<TokenRow>, StoreError> {
    let mut statement = connection.prepare(
        "SELECT id, name, prefix, created_at_ms, last_used_at_ms, revoked_at_ms IS NOT NULL
         FROM api_tokens WHERE user_id = ?1 ORDER BY id DESC",
    )?;
    let rows = statement.query_map([user as i64], |row| {
        Ok(TokenRow {
            id: row.get::<_, i64>(0)? as u64,
            name: row.get(1)?,
            prefix: row.get(2)?,
            created_at_ms: row.get::<_, i64>(3)? as u64,
            last_used_at_ms: row.get::<_, Option<i64>>(4)?.map(|at| at as u64),
            revoked: row.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// An anonymous volunteer as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolunteerRow {
    pub id: String,
    pub secret_hash: String,
    pub user_id: Option<u64>,
    /// The site whose visitor this identity is (its credits go to the site's owner), and whether the
    /// site's key is still active.
    pub site: Option<VolunteerSite>,
}

/// The site an identity was registered for by the embed widget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VolunteerSite {
    pub id: u64,
    pub active: bool,
}

pub fn volunteer(connection: &Connection, id: &str) -> Result<Option<VolunteerRow>, StoreError> {
    Ok(connection
        .prepare_cached(
            "SELECT volunteers.id, volunteers.secret_hash, volunteers.user_id, sites.id, sites.revoked_at_ms IS NULL
             FROM volunteers LEFT JOIN sites ON sites.id = volunteers.site_id WHERE volunteers.id = ?1",
        )?
        .query_row([id], |row| {
            let site = row.get::<_, Option<i64>>(3)?;
            Ok(VolunteerRow {
                id: row.get(0)?,
                secret_hash: row.get(1)?,
                user_id: row.get::<_, Option<i64>>(2)?.map(|user| user as u64),
                site: match site {
                    Some(site) => Some(VolunteerSite { id: site as u64, active: row.get(4)? }),
                    None => None,
                },
            })
        })
        .optional()?)
}

/// A volunteer's standing: its run of validated replicas, validated and invalid totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reputation {
    pub consecutive_valid: u32,
    pub validated: u64,
    pub invalid: u64,
}

pub fn reputation(connection: &Connection, volunteer: &str) -> Result<Reputation, StoreError> {
    Ok(connection
        .prepare_cached("SELECT consecutive_valid, validated, invalid FROM reputation WHERE volunteer = ?1")?
        .query_row([volunteer], |row| {
            Ok(Reputation {
                consecutive_valid: row.get::<_, i64>(0)?.clamp(0, i64::from(u32::MAX)) as u32,
                validated: row.get::<_, i64>(1)? as u64,
                invalid: row.get::<_, i64>(2)? as u64,
            })
        })
        .optional()?
        .unwrap_or_default())
}

/// A ledger entry of one account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryRow {
    pub id: u64,
    pub kind: String,
    pub amount: i64,
    pub job: Option<u64>,
    pub chunk: Option<u32>,
    pub memo: String,
    pub created_at_ms: u64,
}

pub(super) const ENTRIES_SQL: &str = "SELECT id, kind, amount, job_id, chunk, memo, created_at_ms FROM ledger
     WHERE account = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3";

/// The newest `limit` entries of an account older than entry `before` (all, without it): one range of
/// the `ledger_by_account` index.
pub fn entries(
    connection: &Connection,
    account: &str,
    before: Option<u64>,
    limit: u32,
) -> Result<Vec<EntryRow>, StoreError> {
    let before = before.map_or(i64::MAX, |before| i64::try_from(before).unwrap_or(i64::MAX));
    let mut statement = connection.prepare_cached(ENTRIES_SQL)?;
    let rows = statement.query_map(params![account, before, limit], |row| {
        Ok(EntryRow {
            id: row.get::<_, i64>(0)? as u64,
            kind: row.get(1)?,
            amount: row.get(2)?,
            job: row.get::<_, Option<i64>>(3)?.map(|job| job as u64),
            chunk: row.get(4)?,
            memo: row.get(5)?,
            created_at_ms: row.get::<_, i64>(6)? as u64,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// What a user's running jobs (sessions' rounds among them), open sessions and open ad campaigns hold in
/// escrow. Only open ones hold any (an escrow is refunded when its job, session or campaign ends), so
/// this reads the open ones' kept balances, not the account's history.
pub fn escrowed(connection: &Connection, user: u64) -> Result<i64, StoreError> {
    Ok(connection
        .prepare_cached(
            "SELECT (SELECT COALESCE(SUM(ledger_accounts.balance), 0) FROM jobs
                     JOIN ledger_accounts ON ledger_accounts.account = 'escrow:job:' || jobs.id
                     WHERE jobs.owner_id = ?1 AND jobs.cancelled_at_ms IS NULL
                       AND jobs.results_stored < jobs.chunk_count)
                  + (SELECT COALESCE(SUM(ledger_accounts.balance), 0) FROM campaigns
                     JOIN ledger_accounts ON ledger_accounts.account = 'escrow:campaign:' || campaigns.id
                     WHERE campaigns.sponsor_id = ?1 AND campaigns.status IN ('pending', 'approved'))
                  + (SELECT COALESCE(SUM(ledger_accounts.balance), 0) FROM compute_sessions
                     JOIN ledger_accounts ON ledger_accounts.account = 'escrow:session:' || compute_sessions.id
                     WHERE compute_sessions.owner_id = ?1 AND compute_sessions.closed_at_ms IS NULL)",
        )?
        .query_row([user as i64], |row| row.get(0))?)
}

/// A job's budget and what it has paid so far (payments to volunteers and fees, not refunds).
pub fn job_money(connection: &Connection, job: u64) -> Result<(i64, i64), StoreError> {
    Ok(connection
        .prepare_cached("SELECT budget, spent FROM jobs WHERE id = ?1")?
        .query_row([job as i64], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?
        .unwrap_or((0, 0)))
}

/// A stored count read as a `u64`: SQLite turns an integer sum that overflows into a float, and a forged
/// report could push a volunteer's work units that far, so such a value saturates instead of failing.
fn count(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<u64> {
    Ok(match row.get::<_, rusqlite::types::Value>(index)? {
        rusqlite::types::Value::Integer(value) => value.max(0) as u64,
        rusqlite::types::Value::Real(value) => value as u64,
        _ => 0,
    })
}

/// What an account's volunteers did: its own key's and those of the anonymous identities it claimed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Volunteering {
    pub validated: u64,
    pub invalid: u64,
    pub work_units: u64,
    /// The run of validated replicas of the account's own key (the one its workers use).
    pub consecutive_valid: u64,
    pub earned: i64,
}

pub(super) const VOLUNTEERING_SQL: &str =
    "SELECT volunteer, consecutive_valid, validated, invalid, work_units, earned FROM reputation
     WHERE volunteer = 'user:' || ?1
        OR volunteer IN (SELECT 'volunteer:' || id FROM volunteers WHERE user_id = ?1)";

/// The sums over the account's volunteer keys (`user:<id>` and each claimed `volunteer:<id>`): one row per
/// key, each kept as results are stored, so this reads as many rows as the account has keys, never their
/// history.
pub fn volunteering(connection: &Connection, user: u64) -> Result<Volunteering, StoreError> {
    let mut statement = connection.prepare_cached(VOLUNTEERING_SQL)?;
    let own = super::ledger::user(user);
    let mut rows = statement.query([user as i64])?;
    let mut totals = Volunteering::default();
    while let Some(row) = rows.next()? {
        totals.validated = totals.validated.saturating_add(count(row, 2)?);
        totals.invalid = totals.invalid.saturating_add(count(row, 3)?);
        totals.work_units = totals.work_units.saturating_add(count(row, 4)?);
        totals.earned = totals.earned.saturating_add(i64::try_from(count(row, 5)?).unwrap_or(i64::MAX));
        if row.get::<_, String>(0)? == own {
            totals.consecutive_valid = count(row, 1)?;
        }
    }
    Ok(totals)
}

/// A place on the leaderboard: a volunteer key and who it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    pub volunteer: String,
    /// The account's username: the key's own (`user:<id>`) or the one that claimed the identity.
    pub username: Option<String>,
    pub validated: u64,
    pub work_units: u64,
}

pub(super) const LEADERBOARD_SQL: &str = "SELECT reputation.volunteer, reputation.validated, reputation.work_units,
            COALESCE(own.username, claimer.username)
     FROM reputation
     LEFT JOIN users AS own
       ON reputation.volunteer LIKE 'user:%' AND own.id = CAST(substr(reputation.volunteer, 6) AS INTEGER)
     LEFT JOIN volunteers
       ON reputation.volunteer LIKE 'volunteer:%' AND volunteers.id = substr(reputation.volunteer, 11)
     LEFT JOIN users AS claimer ON claimer.id = volunteers.user_id
     WHERE reputation.work_units > 0
     ORDER BY reputation.work_units DESC LIMIT ?1";

/// The `limit` volunteer keys with the most validated work units, best first (read down the
/// `reputation_by_work_units` index).
pub fn leaderboard(connection: &Connection, limit: u32) -> Result<Vec<Leader>, StoreError> {
    let mut statement = connection.prepare_cached(LEADERBOARD_SQL)?;
    let rows = statement.query_map([limit], |row| {
        Ok(Leader {
            volunteer: row.get(0)?,
            validated: count(row, 1)?,
            work_units: count(row, 2)?,
            username: row.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One UTC day's totals: results stored and validated work units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DayTotals {
    /// Days since the Unix epoch.
    pub day: u64,
    pub chunks: u64,
    pub work_units: u64,
}

/// The days from `first` to `last` that had results, oldest first (days without any have no row).
pub fn daily_totals(connection: &Connection, first: u64, last: u64) -> Result<Vec<DayTotals>, StoreError> {
    let bound = |day: u64| i64::try_from(day).unwrap_or(i64::MAX);
    let mut statement = connection.prepare_cached(
        "SELECT day, chunks, work_units FROM daily_totals WHERE day >= ?1 AND day <= ?2 ORDER BY day",
    )?;
    let rows = statement.query_map(params![bound(first), bound(last)], |row| {
        Ok(DayTotals { day: count(row, 0)?, chunks: count(row, 1)?, work_units: count(row, 2)? })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
