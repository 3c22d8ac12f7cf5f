//! Site keys of the embed script: their rows (owner, name, origins, revocation), the anonymous volunteer
//! identities registered for a site, and the site's statistics.
//!
//! A site's statistics are counters on its row: `visitors` moves when an identity is registered for it
//! (`register_volunteer`), and `validated`, `compute_us`, `work_units` and `earned` move in the same
//! transaction as each payment for one of its identities' replicas (`writes::insert_result`, through
//! [`record_payment`]), so reading them is one row whatever the history.
//!
//! A visitor signed in on our origin may take a share of what their identity earns
//! ([`issue_share_code`], then [`take_share`]); the payment splits it (`writes::insert_result`).

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;

/// A site key as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteRow {
    pub id: u64,
    pub key: String,
    pub owner: u64,
    pub name: String,
    pub origins: Vec<String>,
    pub created_at_ms: u64,
    pub revoked_at_ms: Option<u64>,
    pub visitors: u64,
    pub validated: u64,
    pub compute_us: u64,
    pub work_units: u64,
    pub earned: i64,
}

impl SiteRow {
    pub fn is_active(&self) -> bool {
        self.revoked_at_ms.is_none()
    }
}

const COLUMNS: &str = "id, key, owner_id, name, origins, created_at_ms, revoked_at_ms, visitors, validated, \
                       compute_us, work_units, earned";

/// A stored count as a `u64`. SQLite turns an integer sum that overflows into a float (work units come
/// from volunteers, each capped by its job's limit, which may be huge), so such a value saturates.
fn count(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<u64> {
    Ok(match row.get::<_, rusqlite::types::Value>(index)? {
        rusqlite::types::Value::Integer(value) => value.max(0) as u64,
        rusqlite::types::Value::Real(value) => value as u64,
        _ => 0,
    })
}

fn site_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SiteRow> {
    let origins: String = row.get(4)?;
    let origins = serde_json::from_str(&origins)
        .map_err(|error| rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, Box::new(error)))?;
    Ok(SiteRow {
        id: count(row, 0)?,
        key: row.get(1)?,
        owner: count(row, 2)?,
        name: row.get(3)?,
        origins,
        created_at_ms: count(row, 5)?,
        revoked_at_ms: row.get::<_, Option<i64>>(6)?.map(|at| at.max(0) as u64),
        visitors: count(row, 7)?,
        validated: count(row, 8)?,
        compute_us: count(row, 9)?,
        work_units: count(row, 10)?,
        earned: i64::try_from(count(row, 11)?).unwrap_or(i64::MAX),
    })
}

/// What creating a site key did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SiteCreation {
    Created(SiteRow),
    /// The owner has `active` keys already, the most allowed.
    TooMany {
        active: u64,
    },
}

/// A site key to store.
#[derive(Clone, Debug)]
pub struct NewSite {
    pub key: String,
    pub owner: u64,
    pub name: String,
    pub origins: Vec<String>,
    pub created_at_ms: u64,
    /// Active keys the owner may have at most, this one included.
    pub max_active: u64,
}

pub fn create(connection: &Connection, site: &NewSite) -> Result<SiteCreation, StoreError> {
    let active: i64 = connection
        .prepare_cached("SELECT COUNT(*) FROM sites WHERE owner_id = ?1 AND revoked_at_ms IS NULL")?
        .query_row([site.owner as i64], |row| row.get(0))?;
    let active = active.max(0) as u64;
    if active >= site.max_active {
        return Ok(SiteCreation::TooMany { active });
    }
    let origins = serde_json::to_string(&site.origins).map_err(|error| StoreError::Encoding(error.to_string()))?;
    connection
        .prepare_cached("INSERT INTO sites (key, owner_id, name, origins, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![site.key, site.owner as i64, site.name, origins, site.created_at_ms as i64])?;
    let id = connection.last_insert_rowid() as u64;
    Ok(SiteCreation::Created(SiteRow {
        id,
        key: site.key.clone(),
        owner: site.owner,
        name: site.name.clone(),
        origins: site.origins.clone(),
        created_at_ms: site.created_at_ms,
        revoked_at_ms: None,
        visitors: 0,
        validated: 0,
        compute_us: 0,
        work_units: 0,
        earned: 0,
    }))
}

/// The owner's site keys, newest first, at most `limit` of them (revoked ones included, with their
/// statistics).
pub fn of_owner(connection: &Connection, owner: u64, limit: u32) -> Result<Vec<SiteRow>, StoreError> {
    let mut statement = connection
        .prepare_cached(&format!("SELECT {COLUMNS} FROM sites WHERE owner_id = ?1 ORDER BY id DESC LIMIT ?2"))?;
    let rows = statement.query_map(params![owner as i64, limit], site_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The site of a key, revoked or not.
pub fn by_key(connection: &Connection, key: &str) -> Result<Option<SiteRow>, StoreError> {
    Ok(connection
        .prepare_cached(&format!("SELECT {COLUMNS} FROM sites WHERE key = ?1"))?
        .query_row([key], site_from_row)
        .optional()?)
}

/// Revokes one of the owner's active keys; its id, or `None` if the owner has no such active key.
pub fn revoke(connection: &Connection, owner: u64, key: &str, at_ms: u64) -> Result<Option<u64>, StoreError> {
    Ok(connection
        .prepare_cached(
            "UPDATE sites SET revoked_at_ms = ?3 WHERE key = ?1 AND owner_id = ?2 AND revoked_at_ms IS NULL
             RETURNING id",
        )?
        .query_row(params![key, owner as i64, at_ms as i64], |row| row.get::<_, i64>(0))
        .optional()?
        .map(|id| id as u64))
}

/// Registers an anonymous volunteer identity bound to the active site of `key`, counting the site's
/// visitor; `None` (and nothing written) if the key is unknown or revoked.
pub fn register_volunteer(
    connection: &Connection,
    key: &str,
    volunteer: &str,
    secret_hash: &str,
    at_ms: u64,
) -> Result<Option<SiteRow>, StoreError> {
    let Some(site) = by_key(connection, key)?.filter(SiteRow::is_active) else {
        return Ok(None);
    };
    connection
        .prepare_cached("INSERT INTO volunteers (id, secret_hash, created_at_ms, site_id) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![volunteer, secret_hash, at_ms as i64, site.id as i64])?;
    connection.prepare_cached("UPDATE sites SET visitors = visitors + 1 WHERE id = ?1")?.execute([site.id as i64])?;
    Ok(Some(SiteRow { visitors: site.visitors + 1, ..site }))
}

/// A validated replica of one of the site's identities was paid `earned` (to the site's owner): the
/// site's counters move with the payment, in its transaction.
pub fn record_payment(
    connection: &Connection,
    site: u64,
    work_units: u64,
    compute_us: u64,
    earned: i64,
) -> Result<(), StoreError> {
    let integer = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
    connection
        .prepare_cached(
            "UPDATE sites SET validated = validated + 1, work_units = work_units + ?2,
                 compute_us = compute_us + ?3, earned = earned + ?4
             WHERE id = ?1",
        )?
        .execute(params![site as i64, integer(work_units), integer(compute_us), earned])?;
    Ok(())
}

/// Keeps `code_hash` as the identity's one share code until `expires_at_ms`, replacing any earlier one
/// unless that one expires after `replaceable_before_ms` (it was issued too recently). The name of its
/// site, or `None` (and nothing written) if the identity is not a visitor of an active site or its last
/// code is too recent.
pub fn issue_share_code(
    connection: &Connection,
    volunteer: &str,
    code_hash: &str,
    expires_at_ms: u64,
    replaceable_before_ms: u64,
) -> Result<Option<String>, StoreError> {
    Ok(connection
        .prepare_cached(
            "UPDATE volunteers SET share_code_hash = ?2, share_code_expires_at_ms = ?3
             WHERE id = ?1 AND site_id IN (SELECT id FROM sites WHERE revoked_at_ms IS NULL)
               AND COALESCE(share_code_expires_at_ms, 0) <= ?4
             RETURNING (SELECT name FROM sites WHERE sites.id = volunteers.site_id)",
        )?
        .query_row(params![volunteer, code_hash, expires_at_ms as i64, replaceable_before_ms as i64], |row| row.get(0))
        .optional()?)
}

/// The name of the site whose visitor's share `code_hash` would give, if it is live (known, unexpired,
/// its key active); nothing is used up.
pub fn share_code_site(connection: &Connection, code_hash: &str, at_ms: u64) -> Result<Option<String>, StoreError> {
    Ok(connection
        .prepare_cached(
            "SELECT sites.name FROM volunteers JOIN sites ON sites.id = volunteers.site_id
             WHERE volunteers.share_code_hash = ?1 AND volunteers.share_code_expires_at_ms >= ?2
               AND sites.revoked_at_ms IS NULL",
        )?
        .query_row(params![code_hash, at_ms as i64], |row| row.get(0))
        .optional()?)
}

/// What exchanging a share code did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShareOutcome {
    /// The caller now takes the published share of what the identity earns for the site.
    Taken { site_name: String },
    /// No such code, or it expired or was used, or its site's key was revoked.
    Unknown,
    /// The identity's share already goes to another account.
    TakenByAnother,
    /// The caller owns the site: its visitors' credits are theirs already.
    OwnSite,
}

/// Exchanges a share code for `user`'s share of what its identity earns from now on. The code is used up
/// whatever the outcome, so it is tried once.
pub fn take_share(connection: &Connection, code_hash: &str, user: u64, at_ms: u64) -> Result<ShareOutcome, StoreError> {
    let found: Option<(String, Option<i64>, i64, String, i64, bool)> = connection
        .prepare_cached(
            "SELECT volunteers.id, volunteers.visitor_user_id, volunteers.share_code_expires_at_ms, sites.name,
                    sites.owner_id, sites.revoked_at_ms IS NULL
             FROM volunteers JOIN sites ON sites.id = volunteers.site_id
             WHERE volunteers.share_code_hash = ?1",
        )?
        .query_row([code_hash], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?))
        })
        .optional()?;
    let Some((volunteer, visitor, expires_at_ms, site_name, owner, active)) = found else {
        return Ok(ShareOutcome::Unknown);
    };
    connection
        .prepare_cached("UPDATE volunteers SET share_code_hash = NULL, share_code_expires_at_ms = NULL WHERE id = ?1")?
        .execute([&volunteer])?;
    let outcome = if !active || expires_at_ms < at_ms as i64 {
        ShareOutcome::Unknown
    } else if owner as u64 == user {
        ShareOutcome::OwnSite
    } else if visitor.is_some_and(|visitor| visitor as u64 != user) {
        ShareOutcome::TakenByAnother
    } else {
        connection
            .prepare_cached("UPDATE volunteers SET visitor_user_id = ?2 WHERE id = ?1")?
            .execute(params![volunteer, user as i64])?;
        ShareOutcome::Taken { site_name }
    };
    Ok(outcome)
}
