//! Site keys of the embed script, with nothing of HTTP in it: creating one (name and origins checked by
//! the rules in `protocol::embed`, at most [`MAX_ACTIVE_SITES_PER_ACCOUNT`] active per account), listing
//! an owner's with their statistics, revoking one, and deciding what the embed frame shows for a request:
//! the consent widget of an active key framed by one of its origins, or the neutral message.
//!
//! A site's visitor signed in on our origin may take a share of what their identity earns: the widget
//! gets a single-use code as the identity ([`issue_share_code`]) and opens a page of ours where the
//! signed-in visitor hands it in ([`take_share`]). Only the code's hash is stored.
//!
//! Revoking a key also closes its visitors' connections; the handler asks the coordinator for that, as it
//! does for revoked API tokens. Payments for a site's visitors are routed in the store
//! (`store::writes::insert_result`).

use distributivecom_protocol::embed::{
    EmbedSettings, FrameQuery, SHARE_CODE_INTERVAL_MS, SHARE_CODE_PREFIX, SHARE_CODE_TTL_MS, SITE_KEY_PREFIX,
    ShareCode, SiteInfo, SiteRequest, VISITOR_SHARE_PERCENT, is_share_code, is_site_key, normalize_origin,
    normalize_origins, site_name_problem, snippet,
};

use crate::clock::unix_ms;
use crate::identity::{random_secret, sha256_hex};
use crate::store::accounts::VolunteerRow;
use crate::store::sites::{self, NewSite, ShareOutcome, SiteCreation, SiteRow};
use crate::store::{Store, StoreError};

/// Active site keys one account may have at once.
pub const MAX_ACTIVE_SITES_PER_ACCOUNT: u64 = 100;
/// Site keys listed at most, newest first (revoked ones included).
pub const MAX_LISTED_SITES: u32 = 200;

/// Why a site key was not created.
#[derive(Debug, thiserror::Error)]
pub enum SiteRefusal {
    /// The name or an origin breaks the rules; the message says which and how.
    #[error("{0}")]
    Invalid(String),
    #[error("you have {0} active site keys, the most an account may have; revoke one you no longer use first")]
    TooMany(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A new random key: unguessable (256 bits) and safe in URLs and HTML attributes.
pub fn new_site_key() -> String {
    format!("{SITE_KEY_PREFIX}{}", random_secret())
}

/// A stored site as its owner sees it, with the snippet for a server reached at `public_origin`.
pub fn site_info(row: SiteRow, public_origin: &str) -> SiteInfo {
    SiteInfo {
        snippet: snippet(public_origin, &row.key),
        key: row.key,
        name: row.name,
        origins: row.origins,
        created_at_ms: row.created_at_ms,
        revoked_at_ms: row.revoked_at_ms,
        visitors: row.visitors,
        validated_replicas: row.validated,
        compute_ms: row.compute_us / 1000,
        work_units: row.work_units,
        earned_millicredits: row.earned,
    }
}

/// Creates a site key for `owner` after checking its name and origins.
pub async fn create(
    store: &Store,
    owner: u64,
    request: SiteRequest,
    public_origin: &str,
) -> Result<SiteInfo, SiteRefusal> {
    if let Some(problem) = site_name_problem(&request.name) {
        return Err(SiteRefusal::Invalid(problem));
    }
    let origins = normalize_origins(&request.origins).map_err(SiteRefusal::Invalid)?;
    let site = NewSite {
        key: new_site_key(),
        owner,
        name: request.name.trim().to_owned(),
        origins,
        created_at_ms: unix_ms(),
        max_active: MAX_ACTIVE_SITES_PER_ACCOUNT,
    };
    match store.transact(move |connection| sites::create(connection, &site)).await? {
        SiteCreation::Created(row) => Ok(site_info(row, public_origin)),
        SiteCreation::TooMany { active } => Err(SiteRefusal::TooMany(active)),
    }
}

/// The owner's site keys, newest first, with their statistics.
pub async fn list(store: &Store, owner: u64, public_origin: &str) -> Result<Vec<SiteInfo>, StoreError> {
    let rows = store.read(move |connection| sites::of_owner(connection, owner, MAX_LISTED_SITES)).await?;
    Ok(rows.into_iter().map(|row| site_info(row, public_origin)).collect())
}

/// Revokes one of the owner's active keys: its id (to close its visitors' connections), or `None` if the
/// owner has no such active key (another account's key is as unknown as a made-up one).
pub async fn revoke(store: &Store, owner: u64, key: &str) -> Result<Option<u64>, StoreError> {
    if !is_site_key(key) {
        return Ok(None);
    }
    let (key, now) = (key.to_owned(), unix_ms());
    store.transact(move |connection| sites::revoke(connection, owner, &key, now)).await
}

/// What the embed frame shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// The consent widget of an active key, which only its origins may frame (`frame-ancestors`).
    Widget { key: String, name: String, origins: Vec<String>, settings: EmbedSettings },
    /// The neutral message: an unknown or revoked key, or a host page whose origin is not on the key's list.
    Unavailable,
}

/// Decides what `GET /embed/frame` shows. The origin the host page's script reported is only a courtesy
/// (a page not on the list gets the neutral message rather than a frame the browser refuses): the
/// browser enforces the list itself with `frame-ancestors`, whatever a page claims.
pub async fn frame(store: &Store, query: &FrameQuery) -> Result<Frame, StoreError> {
    let Some(key) = query.site.as_deref().filter(|key| is_site_key(key)) else {
        return Ok(Frame::Unavailable);
    };
    let lookup = key.to_owned();
    let Some(site) = store.read(move |connection| sites::by_key(connection, &lookup)).await? else {
        return Ok(Frame::Unavailable);
    };
    let claimed_origin = query.origin.as_deref().and_then(|origin| normalize_origin(origin).ok());
    let listed = claimed_origin.is_some_and(|origin| site.origins.contains(&origin));
    if !site.is_active() || !listed {
        return Ok(Frame::Unavailable);
    }
    let settings = EmbedSettings::from_options(query.throttle.as_deref(), query.threads.as_deref());
    Ok(Frame::Widget { key: site.key, name: site.name, origins: site.origins, settings })
}

/// Why no share code was issued.
#[derive(Debug, thiserror::Error)]
pub enum ShareCodeRefusal {
    #[error("only the identity of an active site's visitor (from the embed widget) has a share to give")]
    NotAVisitor,
    #[error("a share code was issued for this identity a moment ago; ask again in a few seconds")]
    TooSoon,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A single-use share code for a site visitor's identity, valid for [`SHARE_CODE_TTL_MS`], replacing any
/// earlier one (at most one every [`SHARE_CODE_INTERVAL_MS`]: each is a write).
pub async fn issue_share_code(store: &Store, volunteer: &VolunteerRow) -> Result<ShareCode, ShareCodeRefusal> {
    if volunteer.site.is_none_or(|site| !site.active) {
        return Err(ShareCodeRefusal::NotAVisitor);
    }
    let code = format!("{SHARE_CODE_PREFIX}{}", random_secret());
    let now = unix_ms();
    let (id, code_hash, expires_at_ms) = (volunteer.id.clone(), sha256_hex(&code), now + SHARE_CODE_TTL_MS);
    let replaceable_before_ms = expires_at_ms - SHARE_CODE_INTERVAL_MS;
    let site_name = store
        .transact(move |connection| {
            sites::issue_share_code(connection, &id, &code_hash, expires_at_ms, replaceable_before_ms)
        })
        .await?;
    // The identity was an active site's visitor a moment ago: no row means its last code is too recent
    // (or the key was revoked in between, which the next request tells).
    let site_name = site_name.ok_or(ShareCodeRefusal::TooSoon)?;
    Ok(ShareCode { code, expires_at_ms, site_name, share_percent: VISITOR_SHARE_PERCENT })
}

/// Gives `user` the visitor's share of what the identity that issued `code` earns from now on.
pub async fn take_share(store: &Store, user: u64, code: &str) -> Result<ShareOutcome, StoreError> {
    if !is_share_code(code) {
        return Ok(ShareOutcome::Unknown);
    }
    let (code_hash, now) = (sha256_hex(code), unix_ms());
    store.transact(move |connection| sites::take_share(connection, &code_hash, user, now)).await
}

/// The site a live share code is for, without using it up (for the page that asks to confirm).
pub async fn share_code_site(store: &Store, code: &str) -> Result<Option<String>, StoreError> {
    if !is_share_code(code) {
        return Ok(None);
    }
    let (code_hash, now) = (sha256_hex(code), unix_ms());
    store.read(move |connection| sites::share_code_site(connection, &code_hash, now)).await
}
