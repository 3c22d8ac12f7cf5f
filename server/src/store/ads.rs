//! Rewarded ads in the store: campaigns with their escrow, creatives, view tokens and the daily counts
//! of completed views.
//!
//! A campaign escrows its whole budget at creation (`escrow:campaign:<id>`, kind `escrow`); each
//! completed view moves its reward from that escrow to the viewer's account (kind `ad_reward`), and
//! when the campaign ends (its sponsor or an administrator ends it) or can no longer pay one more reward
//! (`exhausted`) the rest goes back to the sponsor (kind `refund`). So ad rewards are never minted: they
//! only move credits that a sponsor had. Every check that decides whether a view is paid ([`judge`]) runs
//! inside the writer's transaction that pays it, so two completions of one token cannot both pass.
//!
//! Nothing here reads history: a view token is found by its hash (unique), a viewer's open views through
//! a partial index of the views not completed, the day's completed views of a (campaign, account) pair
//! are one row, and the running campaigns are a partial index ordered by when each was last shown.

use rusqlite::{Connection, OptionalExtension, params};

use super::ledger::{self, Reference};
use super::{StoreError, writes};

/// The ledger account holding a campaign's escrow.
pub fn escrow(campaign: u64) -> String {
    format!("escrow:campaign:{campaign}")
}

/// The ledger kind of a completed view's reward.
pub const AD_REWARD: &str = "ad_reward";

/// Running campaigns considered for one view that names none (least recently shown first), so that
/// picking a campaign costs the same however many campaigns there are.
pub const CANDIDATES_PER_VIEW: u32 = 64;

/// Where a campaign stands, as stored in `campaigns.status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CampaignState {
    Pending,
    Approved,
    Ended,
    Exhausted,
}

impl CampaignState {
    fn to_column(self) -> &'static str {
        match self {
            CampaignState::Pending => "pending",
            CampaignState::Approved => "approved",
            CampaignState::Ended => "ended",
            CampaignState::Exhausted => "exhausted",
        }
    }

    fn from_column(text: &str) -> Result<CampaignState, StoreError> {
        Ok(match text {
            "pending" => CampaignState::Pending,
            "approved" => CampaignState::Approved,
            "ended" => CampaignState::Ended,
            "exhausted" => CampaignState::Exhausted,
            other => return Err(StoreError::Corrupt(format!("unknown campaign status {other:?}"))),
        })
    }

    /// Whether the campaign is over (ended or exhausted), its escrow refunded.
    pub fn is_over(self) -> bool {
        matches!(self, CampaignState::Ended | CampaignState::Exhausted)
    }
}

/// A campaign to store, checked by the caller (`ads`).
#[derive(Clone, Debug)]
pub struct NewCampaign {
    pub sponsor: u64,
    pub name: String,
    /// `image` or `video` (uploaded) or `vast`.
    pub source: String,
    pub mime: String,
    /// An upload's bytes, served from this origin.
    pub upload: Option<bytes::Bytes>,
    /// A VAST creative: its MediaFile URL, Duration, Impression URLs and the document itself.
    pub media_url: Option<String>,
    pub vast_duration_ms: Option<u64>,
    pub impression_urls: Vec<String>,
    pub vast: Option<String>,
    pub budget: i64,
    pub reward: i64,
    pub min_view_ms: u64,
    pub daily_cap_per_viewer: u32,
    pub created_at_ms: u64,
    /// The most campaigns a sponsor may have pending or running at once.
    pub max_open_per_sponsor: u32,
}

/// Whether a campaign was created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CampaignAdmission {
    Accepted { id: u64 },
    InsufficientCredits { balance: i64, budget: i64 },
    TooManyOpen { open: u32 },
}

/// Stores a campaign and its creative, and moves its budget from the sponsor into its escrow, in one
/// write: a campaign never exists without its escrow.
pub fn insert_campaign(connection: &Connection, campaign: &NewCampaign) -> Result<CampaignAdmission, StoreError> {
    let open: u32 = connection
        .prepare_cached("SELECT COUNT(*) FROM campaigns WHERE sponsor_id = ?1 AND status IN ('pending', 'approved')")?
        .query_row([campaign.sponsor as i64], |row| row.get(0))?;
    if open >= campaign.max_open_per_sponsor {
        return Ok(CampaignAdmission::TooManyOpen { open });
    }
    let sponsor = ledger::user(campaign.sponsor);
    let balance = ledger::balance(connection, &sponsor)?;
    if campaign.budget <= 0 || balance < campaign.budget {
        return Ok(CampaignAdmission::InsufficientCredits { balance, budget: campaign.budget });
    }
    let impression_urls = serde_json::to_string(&campaign.impression_urls)
        .map_err(|error| StoreError::Encoding(format!("impression URLs: {error}")))?;
    connection
        .prepare_cached(
            "INSERT INTO campaigns (sponsor_id, name, status, source, mime, media_url, vast_duration_ms,
                 impression_urls, vast, creative_bytes, budget, reward, min_view_ms, daily_cap_per_viewer,
                 created_at_ms)
             VALUES (?1, ?2, 'pending', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )?
        .execute(params![
            campaign.sponsor as i64,
            campaign.name,
            campaign.source,
            campaign.mime,
            campaign.media_url,
            campaign.vast_duration_ms.map(sql_integer),
            impression_urls,
            campaign.vast,
            campaign.upload.as_ref().map_or(0, |bytes| bytes.len() as i64),
            campaign.budget,
            campaign.reward,
            sql_integer(campaign.min_view_ms),
            campaign.daily_cap_per_viewer,
            sql_integer(campaign.created_at_ms)
        ])?;
    let id = connection.last_insert_rowid() as u64;
    if let Some(upload) = &campaign.upload {
        connection
            .prepare_cached("INSERT INTO campaign_creatives (campaign_id, bytes) VALUES (?1, ?2)")?
            .execute(params![id as i64, &upload[..]])?;
    }
    let memo = format!("the budget of campaign {id}");
    ledger::record(
        connection,
        "escrow",
        &[(&sponsor, -campaign.budget), (&escrow(id), campaign.budget)],
        Reference { memo: &memo, ..Reference::default() },
        campaign.created_at_ms,
    )?;
    Ok(CampaignAdmission::Accepted { id })
}

/// A stored campaign, with what its escrow holds now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CampaignRow {
    pub id: u64,
    pub sponsor: u64,
    pub sponsor_name: String,
    pub name: String,
    pub status: CampaignState,
    pub source: String,
    pub mime: String,
    pub media_url: Option<String>,
    pub vast_duration_ms: Option<u64>,
    pub impression_urls: Vec<String>,
    pub creative_bytes: u64,
    pub budget: i64,
    pub reward: i64,
    pub min_view_ms: u64,
    pub daily_cap_per_viewer: u32,
    pub impressions: u64,
    pub completed_views: u64,
    pub spent: i64,
    pub refunded: i64,
    pub escrowed: i64,
    pub created_at_ms: u64,
    pub approved_at_ms: Option<u64>,
    pub ended_at_ms: Option<u64>,
}

const CAMPAIGN_COLUMNS: &str = "campaigns.id, campaigns.sponsor_id, users.username, campaigns.name, campaigns.status,
     campaigns.source, campaigns.mime, campaigns.media_url, campaigns.vast_duration_ms, campaigns.impression_urls,
     campaigns.creative_bytes, campaigns.budget, campaigns.reward, campaigns.min_view_ms,
     campaigns.daily_cap_per_viewer, campaigns.impressions, campaigns.completed_views, campaigns.spent,
     campaigns.refunded, COALESCE(ledger_accounts.balance, 0), campaigns.created_at_ms, campaigns.approved_at_ms,
     campaigns.ended_at_ms";

/// The tables a campaign row is read from: the campaign, its sponsor and its escrow's kept balance.
const CAMPAIGN_TABLES: &str = "campaigns JOIN users ON users.id = campaigns.sponsor_id
     LEFT JOIN ledger_accounts ON ledger_accounts.account = 'escrow:campaign:' || campaigns.id";

/// A sponsor's campaigns older than `before`, newest first: one range of `campaigns_by_sponsor`.
pub(super) fn campaigns_of_sql() -> String {
    format!(
        "SELECT {CAMPAIGN_COLUMNS} FROM {CAMPAIGN_TABLES}
         WHERE campaigns.sponsor_id = ?1 AND campaigns.id < ?2 ORDER BY campaigns.id DESC LIMIT ?3"
    )
}

/// Every campaign waiting for approval older than `before`, newest first: the `campaigns_pending` index.
pub(super) fn pending_sql() -> String {
    format!(
        "SELECT {CAMPAIGN_COLUMNS} FROM {CAMPAIGN_TABLES}
         WHERE campaigns.status = 'pending' AND campaigns.id < ?1 ORDER BY campaigns.id DESC LIMIT ?2"
    )
}

/// The running campaigns least recently shown, for a view that names none: the `campaigns_running` index.
pub(super) const CANDIDATES_SQL: &str =
    "SELECT id FROM campaigns WHERE status = 'approved' ORDER BY last_shown_at_ms, id LIMIT ?1";

/// A viewer's open views: the `ad_views_open_by_viewer` index.
pub(super) const OPEN_VIEWS_SQL: &str = "SELECT COUNT(*), MIN(expires_at_ms) FROM ad_views
     WHERE viewer = ?1 AND completed_at_ms IS NULL AND expires_at_ms > ?2";

/// A view by its token's hash: the unique index on `token_hash`.
pub(super) const VIEW_BY_TOKEN_SQL: &str =
    "SELECT id, campaign_id, viewer, started_at_ms, expires_at_ms, completed_at_ms FROM ad_views WHERE token_hash = ?1";

/// The views of a campaign paid to an account on a day: `ad_view_days`' primary key.
pub(super) const COMPLETED_ON_SQL: &str =
    "SELECT completed FROM ad_view_days WHERE campaign_id = ?1 AND account = ?2 AND day = ?3";

fn campaign_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(CampaignRow, String, String)> {
    let unsigned = |index: usize| -> rusqlite::Result<u64> { Ok(row.get::<_, i64>(index)?.max(0) as u64) };
    let campaign = CampaignRow {
        id: unsigned(0)?,
        sponsor: unsigned(1)?,
        sponsor_name: row.get(2)?,
        name: row.get(3)?,
        // Decoded by the caller, which can fail with the store's error.
        status: CampaignState::Pending,
        source: row.get(5)?,
        mime: row.get(6)?,
        media_url: row.get(7)?,
        vast_duration_ms: row.get::<_, Option<i64>>(8)?.map(|ms| ms.max(0) as u64),
        impression_urls: Vec::new(),
        creative_bytes: unsigned(10)?,
        budget: row.get(11)?,
        reward: row.get(12)?,
        min_view_ms: unsigned(13)?,
        daily_cap_per_viewer: row.get(14)?,
        impressions: unsigned(15)?,
        completed_views: unsigned(16)?,
        spent: row.get(17)?,
        refunded: row.get(18)?,
        escrowed: row.get(19)?,
        created_at_ms: unsigned(20)?,
        approved_at_ms: row.get::<_, Option<i64>>(21)?.map(|ms| ms.max(0) as u64),
        ended_at_ms: row.get::<_, Option<i64>>(22)?.map(|ms| ms.max(0) as u64),
    };
    Ok((campaign, row.get(4)?, row.get(9)?))
}

fn decode((mut campaign, status, impression_urls): (CampaignRow, String, String)) -> Result<CampaignRow, StoreError> {
    campaign.status = CampaignState::from_column(&status)?;
    campaign.impression_urls = serde_json::from_str(&impression_urls)
        .map_err(|error| StoreError::Corrupt(format!("impression URLs of campaign {}: {error}", campaign.id)))?;
    Ok(campaign)
}

/// A campaign by id.
pub fn campaign(connection: &Connection, id: u64) -> Result<Option<CampaignRow>, StoreError> {
    let sql = format!("SELECT {CAMPAIGN_COLUMNS} FROM {CAMPAIGN_TABLES} WHERE campaigns.id = ?1");
    let raw = connection.prepare_cached(&sql)?.query_row([sql_integer(id)], campaign_from_row).optional()?;
    raw.map(decode).transpose()
}

fn bound(before: Option<u64>) -> i64 {
    before.map_or(i64::MAX, sql_integer)
}

/// At most `limit` of a sponsor's campaigns older than campaign `before` (all, without it), newest first.
pub fn campaigns_of(
    connection: &Connection,
    sponsor: u64,
    before: Option<u64>,
    limit: u32,
) -> Result<Vec<CampaignRow>, StoreError> {
    let mut statement = connection.prepare_cached(&campaigns_of_sql())?;
    let rows = statement.query_map(params![sponsor as i64, bound(before), limit], campaign_from_row)?;
    rows.map(|row| decode(row?)).collect()
}

/// At most `limit` campaigns waiting for approval, older than campaign `before`, newest first.
pub fn pending_campaigns(
    connection: &Connection,
    before: Option<u64>,
    limit: u32,
) -> Result<Vec<CampaignRow>, StoreError> {
    let mut statement = connection.prepare_cached(&pending_sql())?;
    let rows = statement.query_map(params![bound(before), limit], campaign_from_row)?;
    rows.map(|row| decode(row?)).collect()
}

/// An uploaded creative's bytes.
pub fn creative(connection: &Connection, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(connection
        .prepare_cached("SELECT bytes FROM campaign_creatives WHERE campaign_id = ?1")?
        .query_row([sql_integer(id)], |row| row.get(0))
        .optional()?)
}

/// What a change of a campaign's status did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Done; for an end, what was refunded to the sponsor.
    Done {
        refunded: i64,
    },
    NotFound,
    /// The campaign is not in a status that allows it (approving a running or finished one, ending a
    /// finished one).
    Refused(CampaignState),
}

/// Approves a pending campaign: from now on it is shown.
pub fn approve(connection: &Connection, id: u64, at_ms: u64) -> Result<Transition, StoreError> {
    let changed = connection
        .prepare_cached(
            "UPDATE campaigns SET status = 'approved', approved_at_ms = ?2 WHERE id = ?1 AND status = 'pending'",
        )?
        .execute(params![sql_integer(id), sql_integer(at_ms)])?;
    if changed == 1 {
        return Ok(Transition::Done { refunded: 0 });
    }
    status_refusal(connection, id)
}

fn status_refusal(connection: &Connection, id: u64) -> Result<Transition, StoreError> {
    let status: Option<String> = connection
        .prepare_cached("SELECT status FROM campaigns WHERE id = ?1")?
        .query_row([sql_integer(id)], |row| row.get(0))
        .optional()?;
    match status {
        None => Ok(Transition::NotFound),
        Some(status) => Ok(Transition::Refused(CampaignState::from_column(&status)?)),
    }
}

/// Ends a pending or running campaign and refunds its escrow to its sponsor. `sponsor`: only if the
/// campaign is this account's (an administrator passes `None`); another's answers `NotFound`.
pub fn end(connection: &Connection, id: u64, sponsor: Option<u64>, at_ms: u64) -> Result<Transition, StoreError> {
    let owner: Option<i64> = connection
        .prepare_cached("SELECT sponsor_id FROM campaigns WHERE id = ?1")?
        .query_row([sql_integer(id)], |row| row.get(0))
        .optional()?;
    match (owner, sponsor) {
        (None, _) => return Ok(Transition::NotFound),
        (Some(owner), Some(sponsor)) if owner as u64 != sponsor => return Ok(Transition::NotFound),
        _ => {}
    }
    match finish(connection, id, CampaignState::Ended, at_ms)? {
        Some(refunded) => Ok(Transition::Done { refunded }),
        None => status_refusal(connection, id),
    }
}

/// Stops a pending or running campaign as `state`, refunds what its escrow holds to its sponsor and
/// deletes its creative's bytes (its numbers stay). `None` if it was over already.
fn finish(connection: &Connection, id: u64, state: CampaignState, at_ms: u64) -> Result<Option<i64>, StoreError> {
    let escrow = escrow(id);
    let left = ledger::balance(connection, &escrow)?;
    let sponsor: Option<i64> = connection
        .prepare_cached(
            "UPDATE campaigns SET status = ?2, ended_at_ms = ?3, refunded = refunded + ?4
             WHERE id = ?1 AND status IN ('pending', 'approved')
             RETURNING sponsor_id",
        )?
        .query_row(params![sql_integer(id), state.to_column(), sql_integer(at_ms), left], |row| row.get(0))
        .optional()?;
    let Some(sponsor) = sponsor else {
        return Ok(None);
    };
    // A finished campaign is shown to nobody: its uploaded bytes and its VAST document go, so that what a
    // sponsor keeps stored is bounded by its open campaigns, however many it has run.
    connection.prepare_cached("DELETE FROM campaign_creatives WHERE campaign_id = ?1")?.execute([sql_integer(id)])?;
    connection.prepare_cached("UPDATE campaigns SET vast = NULL WHERE id = ?1")?.execute([sql_integer(id)])?;
    let memo = match state {
        CampaignState::Exhausted => format!("the rest of campaign {id}'s budget, too little for one more reward"),
        _ => format!("the rest of campaign {id}'s budget"),
    };
    ledger::record(
        connection,
        "refund",
        &[(&escrow, -left), (&ledger::user(sponsor as u64), left)],
        Reference { memo: &memo, ..Reference::default() },
        at_ms,
    )?;
    Ok(Some(left))
}

/// A view to start: its token's hash, who watches, which campaign (or any), and the server's time.
#[derive(Clone, Debug)]
pub struct NewView {
    pub token_hash: String,
    /// `user:<id>` or `volunteer:<id>`, as the viewer authenticated.
    pub viewer: String,
    pub campaign: Option<u64>,
    pub now_ms: u64,
    pub ttl_ms: u64,
    pub max_open_per_viewer: u32,
}

/// What starting a view did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ViewStart {
    /// The view is stored and counted as an impression of `campaign` (the row before the impression).
    Started { campaign: Box<CampaignRow>, expires_at_ms: u64 },
    /// The viewer holds `open` views already; the first of them expires at `next_expiry_ms`.
    TooManyOpen { open: u32, next_expiry_ms: u64 },
    /// No running campaign can be shown to this viewer now (none, all capped for them today, or theirs).
    NothingToShow,
    /// The named campaign does not exist or is not approved yet.
    UnknownCampaign,
    /// The named campaign is over.
    CampaignOver(CampaignState),
    /// The named campaign is the viewer's own (its rewards would pay its sponsor from its own escrow).
    OwnCampaign,
    /// The viewer was paid for the named campaign's daily cap of views today.
    OverCap { cap: u32 },
}

/// Starts a view: checks the viewer's open views, picks the campaign (the named one, or the running
/// campaign least recently shown that this viewer may watch), stores the view with the server's time and
/// counts an impression.
pub fn start_view(connection: &Connection, view: &NewView) -> Result<ViewStart, StoreError> {
    let (open, next_expiry): (u32, Option<i64>) = connection
        .prepare_cached(OPEN_VIEWS_SQL)?
        .query_row(params![view.viewer, sql_integer(view.now_ms)], |row| Ok((row.get(0)?, row.get(1)?)))?;
    if open >= view.max_open_per_viewer {
        return Ok(ViewStart::TooManyOpen { open, next_expiry_ms: next_expiry.unwrap_or(0).max(0) as u64 });
    }
    let account = writes::payee(connection, &view.viewer)?;
    let day = view.now_ms / writes::MS_PER_DAY;
    let chosen = match view.campaign {
        Some(id) => {
            let Some(campaign) = campaign(connection, id)? else {
                return Ok(ViewStart::UnknownCampaign);
            };
            match campaign.status {
                CampaignState::Pending => return Ok(ViewStart::UnknownCampaign),
                state if state.is_over() => return Ok(ViewStart::CampaignOver(state)),
                _ if campaign.escrowed < campaign.reward => {
                    return Ok(ViewStart::CampaignOver(CampaignState::Exhausted));
                }
                _ => {}
            }
            if account == ledger::user(campaign.sponsor) {
                return Ok(ViewStart::OwnCampaign);
            }
            if completed_on(connection, id, &account, day)? >= campaign.daily_cap_per_viewer {
                return Ok(ViewStart::OverCap { cap: campaign.daily_cap_per_viewer });
            }
            campaign
        }
        None => {
            let candidates: Vec<i64> = connection
                .prepare_cached(CANDIDATES_SQL)?
                .query_map([CANDIDATES_PER_VIEW], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            let mut chosen = None;
            for id in candidates {
                let Some(campaign) = campaign(connection, id as u64)? else { continue };
                if account != ledger::user(campaign.sponsor)
                    && campaign.escrowed >= campaign.reward
                    && completed_on(connection, campaign.id, &account, day)? < campaign.daily_cap_per_viewer
                {
                    chosen = Some(campaign);
                    break;
                }
            }
            match chosen {
                Some(campaign) => campaign,
                None => return Ok(ViewStart::NothingToShow),
            }
        }
    };
    let expires_at_ms = view.now_ms.saturating_add(view.ttl_ms);
    connection
        .prepare_cached(
            "INSERT INTO ad_views (token_hash, campaign_id, viewer, started_at_ms, expires_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            view.token_hash,
            chosen.id as i64,
            view.viewer,
            sql_integer(view.now_ms),
            sql_integer(expires_at_ms)
        ])?;
    connection
        .prepare_cached("UPDATE campaigns SET impressions = impressions + 1, last_shown_at_ms = ?2 WHERE id = ?1")?
        .execute(params![chosen.id as i64, sql_integer(view.now_ms)])?;
    Ok(ViewStart::Started { campaign: Box::new(chosen), expires_at_ms })
}

/// The views of `campaign` paid to `account` on UTC day `day`: one primary-key lookup.
fn completed_on(connection: &Connection, campaign: u64, account: &str, day: u64) -> Result<u32, StoreError> {
    Ok(connection
        .prepare_cached(COMPLETED_ON_SQL)?
        .query_row(params![sql_integer(campaign), account, sql_integer(day)], |row| row.get(0))
        .optional()?
        .unwrap_or(0))
}

/// Why a completion is refused. Each moves nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewRefusal {
    /// No such token, or another viewer's (the same answer, so tokens cannot be probed).
    Unknown,
    AlreadyCompleted {
        at_ms: u64,
    },
    Expired {
        at_ms: u64,
    },
    /// Less than the campaign's minimum view time has passed on the server's clock since the token was
    /// issued.
    TooEarly {
        remaining_ms: u64,
    },
    /// The campaign ended, or its escrow cannot pay the reward.
    CampaignOver {
        campaign: u64,
        state: CampaignState,
    },
    /// The viewer was paid for the campaign's daily cap of views today (UTC).
    OverCap {
        campaign: u64,
        cap: u32,
    },
}

/// A view as stored, for [`judge`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewState {
    pub viewer: String,
    pub started_at_ms: u64,
    pub expires_at_ms: u64,
    pub completed_at_ms: Option<u64>,
}

/// The rules a completion must pass, in the order they are told (what waiting cannot fix first), with
/// nothing of IO: `view` is the token's row (none: unknown), `viewer` who completes it, `campaign` its
/// campaign, `completed_today` the views of the campaign already paid to the viewer's account today.
pub fn judge(
    now_ms: u64,
    view: Option<&ViewState>,
    viewer: &str,
    campaign: &CampaignRow,
    completed_today: u32,
) -> Result<(), ViewRefusal> {
    let Some(view) = view.filter(|view| view.viewer == viewer) else {
        return Err(ViewRefusal::Unknown);
    };
    if let Some(at_ms) = view.completed_at_ms {
        return Err(ViewRefusal::AlreadyCompleted { at_ms });
    }
    if now_ms >= view.expires_at_ms {
        return Err(ViewRefusal::Expired { at_ms: view.expires_at_ms });
    }
    if campaign.status != CampaignState::Approved || campaign.escrowed < campaign.reward {
        let state = if campaign.status == CampaignState::Approved { CampaignState::Exhausted } else { campaign.status };
        return Err(ViewRefusal::CampaignOver { campaign: campaign.id, state });
    }
    if completed_today >= campaign.daily_cap_per_viewer {
        return Err(ViewRefusal::OverCap { campaign: campaign.id, cap: campaign.daily_cap_per_viewer });
    }
    // A clock that went backwards counts as no time elapsed.
    let elapsed = now_ms.saturating_sub(view.started_at_ms);
    if elapsed < campaign.min_view_ms {
        return Err(ViewRefusal::TooEarly { remaining_ms: campaign.min_view_ms - elapsed });
    }
    Ok(())
}

/// What completing a view did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    Credited {
        campaign: u64,
        amount: i64,
        /// The ledger account paid.
        account: String,
        /// The escrow could not pay one more reward, so the campaign stopped and the rest was refunded.
        exhausted: bool,
    },
    Refused(ViewRefusal),
}

/// Completes a view if [`judge`] allows it: marks the token used, moves the reward from the campaign's
/// escrow to the viewer's account (a claimed identity's is its user's), counts the view on the
/// campaign and the day, and stops the campaign, refunding the rest, when its escrow cannot pay one more
/// reward. All in the caller's one write; a refusal writes nothing.
pub fn complete_view(
    connection: &Connection,
    token_hash: &str,
    viewer: &str,
    now_ms: u64,
) -> Result<Completion, StoreError> {
    let row: Option<(i64, i64, String, i64, i64, Option<i64>)> = connection
        .prepare_cached(VIEW_BY_TOKEN_SQL)?
        .query_row([token_hash], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?))
        })
        .optional()?;
    let Some((view_id, campaign_id, view_viewer, started, expires, completed)) = row else {
        return Ok(Completion::Refused(ViewRefusal::Unknown));
    };
    let view = ViewState {
        viewer: view_viewer,
        started_at_ms: started.max(0) as u64,
        expires_at_ms: expires.max(0) as u64,
        completed_at_ms: completed.map(|at| at.max(0) as u64),
    };
    let Some(campaign) = campaign(connection, campaign_id as u64)? else {
        return Err(StoreError::Corrupt(format!(
            "ad view {view_id} names campaign {campaign_id}, which is not stored"
        )));
    };
    let account = writes::payee(connection, &view.viewer)?;
    let day = now_ms / writes::MS_PER_DAY;
    let completed_today = completed_on(connection, campaign.id, &account, day)?;
    if let Err(refusal) = judge(now_ms, Some(&view), viewer, &campaign, completed_today) {
        return Ok(Completion::Refused(refusal));
    }
    let reward = campaign.reward;
    let marked = connection
        .prepare_cached(
            "UPDATE ad_views SET completed_at_ms = ?2, credited = ?3 WHERE id = ?1 AND completed_at_ms IS NULL",
        )?
        .execute(params![view_id, sql_integer(now_ms), reward])?;
    if marked != 1 {
        // Writes are serialised and the row was just read unused: this cannot happen, and must not pay.
        return Err(StoreError::Transaction(format!("ad view {view_id} was completed twice in one write")));
    }
    let memo = format!("a completed view of campaign {} ({})", campaign.id, campaign.name);
    ledger::record(
        connection,
        AD_REWARD,
        &[(&escrow(campaign.id), -reward), (&account, reward)],
        Reference { memo: &memo, ..Reference::default() },
        now_ms,
    )?;
    connection
        .prepare_cached(
            "INSERT INTO ad_view_days (campaign_id, account, day, completed) VALUES (?1, ?2, ?3, 1)
             ON CONFLICT (campaign_id, account, day) DO UPDATE SET completed = completed + 1",
        )?
        .execute(params![campaign.id as i64, account, sql_integer(day)])?;
    connection
        .prepare_cached("UPDATE campaigns SET completed_views = completed_views + 1, spent = spent + ?2 WHERE id = ?1")?
        .execute(params![campaign.id as i64, reward])?;
    let exhausted = campaign.escrowed - reward < reward;
    if exhausted {
        finish(connection, campaign.id, CampaignState::Exhausted, now_ms)?;
    }
    Ok(Completion::Credited { campaign: campaign.id, amount: reward, account, exhausted })
}

/// A number as SQLite's signed integer, saturating rather than wrapping.
fn sql_integer(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(reward: i64, escrowed: i64) -> CampaignRow {
        CampaignRow {
            id: 3,
            sponsor: 1,
            sponsor_name: "sponsor".to_owned(),
            name: "spring".to_owned(),
            status: CampaignState::Approved,
            source: "image".to_owned(),
            mime: "image/png".to_owned(),
            media_url: None,
            vast_duration_ms: None,
            impression_urls: Vec::new(),
            creative_bytes: 10,
            budget: 1_000,
            reward,
            min_view_ms: 5_000,
            daily_cap_per_viewer: 2,
            impressions: 0,
            completed_views: 0,
            spent: 0,
            refunded: 0,
            escrowed,
            created_at_ms: 0,
            approved_at_ms: Some(0),
            ended_at_ms: None,
        }
    }

    fn issued(at_ms: u64) -> ViewState {
        ViewState {
            viewer: "user:2".to_owned(),
            started_at_ms: at_ms,
            expires_at_ms: at_ms + 60_000,
            completed_at_ms: None,
        }
    }

    #[test]
    fn a_view_is_paid_only_by_its_own_viewer_once_in_time_within_the_cap_and_the_budget() {
        let campaign = running(100, 1_000);
        let view = issued(10_000);
        assert_eq!(judge(15_000, Some(&view), "user:2", &campaign, 1), Ok(()));
        assert_eq!(judge(15_000, None, "user:2", &campaign, 0), Err(ViewRefusal::Unknown));
        assert_eq!(judge(15_000, Some(&view), "user:9", &campaign, 0), Err(ViewRefusal::Unknown), "another's token");
        let used = ViewState { completed_at_ms: Some(14_000), ..view.clone() };
        assert_eq!(
            judge(15_000, Some(&used), "user:2", &campaign, 0),
            Err(ViewRefusal::AlreadyCompleted { at_ms: 14_000 })
        );
        assert_eq!(judge(70_000, Some(&view), "user:2", &campaign, 0), Err(ViewRefusal::Expired { at_ms: 70_000 }));
        assert_eq!(judge(14_999, Some(&view), "user:2", &campaign, 0), Err(ViewRefusal::TooEarly { remaining_ms: 1 }));
        assert_eq!(
            judge(9_000, Some(&view), "user:2", &campaign, 0),
            Err(ViewRefusal::TooEarly { remaining_ms: 5_000 }),
            "a clock that went back counts no time"
        );
        assert_eq!(
            judge(15_000, Some(&view), "user:2", &campaign, 2),
            Err(ViewRefusal::OverCap { campaign: 3, cap: 2 })
        );
        let poor = running(100, 99);
        assert_eq!(
            judge(15_000, Some(&view), "user:2", &poor, 0),
            Err(ViewRefusal::CampaignOver { campaign: 3, state: CampaignState::Exhausted })
        );
        let ended = CampaignRow { status: CampaignState::Ended, ..campaign };
        assert_eq!(
            judge(15_000, Some(&view), "user:2", &ended, 0),
            Err(ViewRefusal::CampaignOver { campaign: 3, state: CampaignState::Ended })
        );
    }
}
