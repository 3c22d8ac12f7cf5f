//! Rewarded ads: sponsors' campaigns and viewers' verified views, with nothing of HTTP in it.
//!
//! A sponsor creates a campaign (a creative, a budget escrowed at once, a reward per completed view, a
//! minimum view time and a daily cap per viewer); an administrator approves it; viewers (signed-in
//! users or anonymous volunteer identities) start views and complete them. The server decides whether
//! a view is paid from its own records only: the token it issued (random, single use, stored hashed,
//! bound to the viewer and the campaign), the time *its* clock read when it issued the token, the
//! campaign's escrow and the viewer's count of paid views today. A client's word about how long it
//! watched counts for nothing. The rules themselves (`store::ads::judge`) run inside the transaction
//! that pays, so a token pays at most once.
//!
//! - [`creative`]: which uploads are accepted, and that their bytes are what their type says;
//! - [`vast`]: reading an IAB VAST 4 InLine document (its MediaFile, Duration and Impression URLs).
//!
//! Every number and size from a client is bounded here before it reaches the store.

pub mod creative;
pub mod vast;

use std::ops::RangeInclusive;
use std::sync::Arc;

use distributivecom_protocol::api::{
    AdViewCompleted, AdViewRequest, AdViewStarted, CampaignInfo, CampaignRequest, CampaignStatus, CampaignsQuery,
    CreativeInfo, CreativeRequest,
};

use crate::clock::Clock;
use crate::config::ServerConfig;
use crate::format::human_bytes;
use crate::identity::{random_secret, sha256_hex};
use crate::store::accounts::UserRow;
use crate::store::ads::{
    self as stored, CampaignAdmission, CampaignRow, CampaignState, Completion, NewCampaign, NewView, Transition,
    ViewRefusal, ViewStart,
};
use crate::store::writes::MS_PER_DAY;
use crate::store::{Store, StoreError};

/// A campaign's name has this many characters at most (and at least one).
pub const MAX_NAME_CHARS: usize = 100;
/// The minimum view time a campaign may ask for: at least a second, at most ten minutes.
pub const MIN_VIEW_MS: RangeInclusive<u64> = 1_000..=600_000;
/// Paid views per viewer per UTC day a campaign may allow.
pub const DAILY_CAP: RangeInclusive<u32> = 1..=100;
/// The largest budget (a billion credits): far above any balance, and far from overflowing.
pub const MAX_BUDGET_MILLICREDITS: i64 = 1_000_000_000_000;
/// Every view token starts with this.
pub const VIEW_TOKEN_PREFIX: &str = "av_";
/// A path segment longer than this is no token of ours, and is not even hashed.
const MAX_TOKEN_CHARS: usize = 128;
/// Campaigns per page of `GET /api/campaigns`.
const MAX_PAGE: u32 = 100;
/// Room in a campaign request for everything but the creative.
const REQUEST_ROOM_BYTES: u64 = 64 * 1024;

/// The largest `POST /api/campaigns` body: the largest creative in base64, or the largest VAST document
/// with every character escaped in JSON, whichever is larger, and the other fields.
pub fn max_request_bytes(config: &ServerConfig) -> u64 {
    let base64 = config.max_creative_bytes.div_ceil(3).saturating_mul(4);
    let vast = (vast::MAX_VAST_BYTES as u64).saturating_mul(6);
    base64.max(vast).saturating_add(REQUEST_ROOM_BYTES)
}

/// Why a request about ads was refused; each message says why, and what to do where something can be
/// done. None of them moved anything.
#[derive(Debug, thiserror::Error)]
pub enum AdRefusal {
    /// Malformed or out of bounds: a name, a number.
    #[error("{0}")]
    Invalid(String),
    /// An uploaded creative larger than the server takes.
    #[error("{0}")]
    TooLarge(String),
    /// Well-formed but unusable: a creative whose bytes are not its type, a VAST document without what
    /// the server needs.
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    InsufficientCredits(String),
    /// Only administrators may do this.
    #[error("{0}")]
    Forbidden(String),
    /// No such campaign or view token among what the caller may see.
    #[error("{0}")]
    NotFound(String),
    /// The campaign is not in a state that allows this, or the token was completed already.
    #[error("{0}")]
    Conflict(String),
    /// The token expired, or its campaign is over.
    #[error("{0}")]
    Gone(String),
    /// The minimum view time has not passed on the server's clock yet.
    #[error("{message}")]
    TooEarly { message: String, remaining_ms: u64 },
    /// A cap: campaigns open per sponsor, views open per viewer, paid views per viewer per day.
    #[error("{message}")]
    TooMany { message: String, retry_after_secs: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The rewarded-ads service: the store, the limits, and the clock whose readings decide views.
#[derive(Debug)]
pub struct Ads {
    store: Store,
    config: Arc<ServerConfig>,
    clock: Clock,
}

impl Ads {
    pub fn new(store: Store, config: Arc<ServerConfig>, clock: Clock) -> Ads {
        Ads { store, config, clock }
    }

    /// Checks a campaign, stores it with its creative and escrows its budget, in one durable write.
    pub async fn create_campaign(
        &self,
        sponsor: &UserRow,
        request: CampaignRequest,
    ) -> Result<CampaignInfo, AdRefusal> {
        let name = request.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
            return Err(AdRefusal::Invalid(format!(
                "a campaign's name has 1 to {MAX_NAME_CHARS} characters, none of them control characters"
            )));
        }
        let (budget, reward) = (request.budget_millicredits, request.reward_millicredits);
        if !(1..=MAX_BUDGET_MILLICREDITS).contains(&budget) {
            return Err(AdRefusal::Invalid(format!(
                "budget_millicredits is {budget}; it must be from 1 to {MAX_BUDGET_MILLICREDITS}"
            )));
        }
        if !(1..=budget).contains(&reward) {
            return Err(AdRefusal::Invalid(format!(
                "reward_millicredits is {reward}; it must be from 1 to the budget ({budget})"
            )));
        }
        if !MIN_VIEW_MS.contains(&request.min_view_ms) {
            return Err(AdRefusal::Invalid(format!(
                "min_view_ms is {}; it must be from {} (a second) to {} (ten minutes)",
                request.min_view_ms,
                MIN_VIEW_MS.start(),
                MIN_VIEW_MS.end()
            )));
        }
        if !DAILY_CAP.contains(&request.daily_cap_per_viewer) {
            return Err(AdRefusal::Invalid(format!(
                "daily_cap_per_viewer is {}; it must be from {} to {}",
                request.daily_cap_per_viewer,
                DAILY_CAP.start(),
                DAILY_CAP.end()
            )));
        }
        let mut campaign = NewCampaign {
            sponsor: sponsor.id,
            name,
            source: String::new(),
            mime: String::new(),
            upload: None,
            media_url: None,
            vast_duration_ms: None,
            impression_urls: Vec::new(),
            vast: None,
            budget,
            reward,
            min_view_ms: request.min_view_ms,
            daily_cap_per_viewer: request.daily_cap_per_viewer,
            created_at_ms: self.clock.now_ms(),
            max_open_per_sponsor: self.config.max_open_campaigns_per_sponsor,
        };
        match request.creative {
            CreativeRequest::Uploaded { kind, mime, data } => {
                if data.len() as u64 > self.config.max_creative_bytes {
                    return Err(AdRefusal::TooLarge(format!(
                        "the creative is {}, more than the limit of {}",
                        human_bytes(data.len() as u64),
                        human_bytes(self.config.max_creative_bytes)
                    )));
                }
                campaign.mime = creative::check_upload(kind, &mime, &data).map_err(AdRefusal::Unprocessable)?;
                campaign.source = creative::kind_name(kind).to_owned();
                campaign.upload = Some(bytes::Bytes::from(data.into_vec()));
            }
            CreativeRequest::Vast { vast: document } => {
                let parsed = vast::parse(&document).map_err(|error| match error {
                    vast::VastError::TooLarge { .. } => AdRefusal::TooLarge(error.to_string()),
                    _ => AdRefusal::Unprocessable(error.to_string()),
                })?;
                // A completed view is one the creative could have played to its end: a campaign cannot
                // pay for less watching than its video lasts.
                if request.min_view_ms < parsed.duration_ms {
                    return Err(AdRefusal::Unprocessable(format!(
                        "min_view_ms is {}, shorter than the VAST creative's <Duration> of {} ms; a view is \
                         complete only once the whole creative could have played, so ask for at least {}",
                        request.min_view_ms, parsed.duration_ms, parsed.duration_ms
                    )));
                }
                campaign.source = "vast".to_owned();
                campaign.mime = parsed.mime;
                campaign.media_url = Some(parsed.media_url);
                campaign.vast_duration_ms = Some(parsed.duration_ms);
                campaign.impression_urls = parsed.impression_urls;
                campaign.vast = Some(document);
            }
        }
        let max_open = campaign.max_open_per_sponsor;
        let admission = self.store.transact(move |connection| stored::insert_campaign(connection, &campaign)).await?;
        let id = match admission {
            CampaignAdmission::Accepted { id } => id,
            CampaignAdmission::InsufficientCredits { balance, budget } => {
                return Err(AdRefusal::InsufficientCredits(format!(
                    "the campaign's budget is {} credits but your balance is {} credits; lower the budget or \
                     get more credits (volunteer, or ask an administrator)",
                    credits(budget),
                    credits(balance)
                )));
            }
            CampaignAdmission::TooManyOpen { open } => {
                return Err(AdRefusal::TooMany {
                    message: format!(
                        "you have {open} campaigns pending or running, the most one sponsor may have ({max_open}); \
                         end one first"
                    ),
                    retry_after_secs: 60,
                });
            }
        };
        self.campaign_info(id).await
    }

    async fn campaign_info(&self, id: u64) -> Result<CampaignInfo, AdRefusal> {
        let row = self.store.read(move |connection| stored::campaign(connection, id)).await?;
        row.map(|row| info(&row)).ok_or_else(|| AdRefusal::NotFound(format!("no campaign {id}")))
    }

    /// Approves a pending campaign (administrators only): from now on viewers are shown it.
    pub async fn approve(&self, caller: &UserRow, id: u64) -> Result<CampaignInfo, AdRefusal> {
        if !caller.is_admin {
            return Err(AdRefusal::Forbidden("only administrators approve campaigns".to_owned()));
        }
        let now = self.clock.now_ms();
        match self.store.transact(move |connection| stored::approve(connection, id, now)).await? {
            Transition::Done { .. } => self.campaign_info(id).await,
            Transition::NotFound => Err(AdRefusal::NotFound(format!("no campaign {id}"))),
            Transition::Refused(state) => Err(AdRefusal::Conflict(format!(
                "campaign {id} is {}, not pending: there is nothing to approve",
                state_name(state)
            ))),
        }
    }

    /// Ends a campaign (its sponsor, or an administrator rejecting or stopping it) and refunds the rest of
    /// its escrow to its sponsor. Another sponsor's campaign is "not found", as one that does not exist.
    pub async fn end(&self, caller: &UserRow, id: u64) -> Result<CampaignInfo, AdRefusal> {
        let sponsor = (!caller.is_admin).then_some(caller.id);
        let now = self.clock.now_ms();
        match self.store.transact(move |connection| stored::end(connection, id, sponsor, now)).await? {
            Transition::Done { .. } => self.campaign_info(id).await,
            Transition::NotFound => Err(AdRefusal::NotFound(format!("you have no campaign {id}"))),
            Transition::Refused(state) => Err(AdRefusal::Conflict(format!(
                "campaign {id} is {} already; its escrow was refunded then",
                state_name(state)
            ))),
        }
    }

    /// The caller's campaigns, newest first; or, for an administrator asking `pending=true`, every
    /// campaign waiting for approval.
    pub async fn list(&self, caller: &UserRow, query: CampaignsQuery) -> Result<Vec<CampaignInfo>, AdRefusal> {
        let limit = query.limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
        let before = query.before;
        let rows = if query.pending == Some(true) {
            if !caller.is_admin {
                return Err(AdRefusal::Forbidden(
                    "only administrators list the campaigns waiting for approval; without pending=true you get \
                     your own"
                        .to_owned(),
                ));
            }
            self.store.read(move |connection| stored::pending_campaigns(connection, before, limit)).await?
        } else {
            let sponsor = caller.id;
            self.store.read(move |connection| stored::campaigns_of(connection, sponsor, before, limit)).await?
        };
        Ok(rows.iter().map(info).collect())
    }

    /// An uploaded creative's media type and bytes: anyone's while its campaign runs (viewers' browsers
    /// load it without credentials), otherwise only its sponsor's and administrators' (until the campaign
    /// ends: then its bytes are deleted).
    pub async fn creative(&self, caller: Option<&UserRow>, id: u64) -> Result<(String, Vec<u8>), AdRefusal> {
        let not_found = || AdRefusal::NotFound(format!("no campaign {id} with a creative you may see"));
        let Some(row) = self.store.read(move |connection| stored::campaign(connection, id)).await? else {
            return Err(not_found());
        };
        let allowed = row.status == CampaignState::Approved
            || caller.is_some_and(|caller| caller.is_admin || caller.id == row.sponsor);
        if !allowed {
            return Err(not_found());
        }
        if row.media_url.is_some() {
            return Err(AdRefusal::NotFound(format!(
                "campaign {id}'s creative is a VAST MediaFile, played from its own URL; this server keeps no copy"
            )));
        }
        if row.status.is_over() {
            return Err(AdRefusal::NotFound(format!(
                "campaign {id} is {}; its creative was deleted when it ended",
                state_name(row.status)
            )));
        }
        let bytes = self.store.read(move |connection| stored::creative(connection, id)).await?.ok_or_else(not_found)?;
        Ok((row.mime, bytes))
    }

    /// Starts a view for `viewer` (`user:<id>` or `volunteer:<id>`): picks the campaign, issues a token
    /// (256 random bits, stored hashed) with the server's time, and counts an impression.
    pub async fn start_view(&self, viewer: String, request: AdViewRequest) -> Result<AdViewStarted, AdRefusal> {
        let token = format!("{VIEW_TOKEN_PREFIX}{}", random_secret());
        let now = self.clock.now_ms();
        let view = NewView {
            token_hash: sha256_hex(&token),
            viewer,
            campaign: request.campaign,
            now_ms: now,
            ttl_ms: self.config.ad_view_ttl_ms,
            max_open_per_viewer: self.config.max_open_ad_views_per_viewer,
        };
        let named = request.campaign;
        let started = self.store.transact(move |connection| stored::start_view(connection, &view)).await?;
        let (campaign, expires_at_ms) = match started {
            ViewStart::Started { campaign, expires_at_ms } => (campaign, expires_at_ms),
            ViewStart::TooManyOpen { open, next_expiry_ms } => {
                let wait_secs = next_expiry_ms.saturating_sub(now).div_ceil(1000).max(1);
                return Err(AdRefusal::TooMany {
                    message: format!(
                        "you have {open} ad views open, the most one viewer may have; complete one, or wait \
                         {wait_secs} s until the oldest expires"
                    ),
                    retry_after_secs: wait_secs,
                });
            }
            ViewStart::NothingToShow => {
                return Err(AdRefusal::NotFound(
                    "there is no ad for you to watch now: no running campaign has a view left for you today".to_owned(),
                ));
            }
            ViewStart::UnknownCampaign => {
                return Err(AdRefusal::NotFound(format!("no running campaign {}", named.unwrap_or_default())));
            }
            ViewStart::CampaignOver(state) => {
                return Err(AdRefusal::Gone(format!(
                    "campaign {} is {}: it shows no more ads",
                    named.unwrap_or_default(),
                    state_name(state)
                )));
            }
            ViewStart::OwnCampaign => {
                return Err(AdRefusal::Conflict(format!(
                    "campaign {} is yours: its rewards would only give you back your own escrow",
                    named.unwrap_or_default()
                )));
            }
            ViewStart::OverCap { cap } => {
                return Err(AdRefusal::TooMany {
                    message: format!(
                        "you were paid for {cap} views of campaign {} today, its daily cap per viewer; try again \
                         after midnight UTC",
                        named.unwrap_or_default()
                    ),
                    retry_after_secs: seconds_to_next_utc_day(now),
                });
            }
        };
        let creative = creative_info(&campaign);
        Ok(AdViewStarted {
            token,
            campaign: campaign.id,
            creative_url: creative.url,
            creative_source: creative.source,
            creative_mime: creative.mime,
            impression_urls: creative.impression_urls,
            min_view_ms: campaign.min_view_ms,
            reward_millicredits: campaign.reward,
            started_at_ms: now,
            expires_at_ms,
        })
    }

    /// Completes `viewer`'s view: pays its reward from the campaign's escrow if every rule holds on the
    /// server's own records and clock, in one durable write; otherwise says which rule failed.
    pub async fn complete_view(&self, viewer: String, token: &str) -> Result<AdViewCompleted, AdRefusal> {
        let unknown = || AdRefusal::NotFound("unknown ad view token: it was never issued, or not to you".to_owned());
        if token.len() > MAX_TOKEN_CHARS || !token.starts_with(VIEW_TOKEN_PREFIX) {
            return Err(unknown());
        }
        let token_hash = sha256_hex(token);
        let now = self.clock.now_ms();
        let completion =
            self.store.transact(move |connection| stored::complete_view(connection, &token_hash, &viewer, now)).await?;
        match completion {
            Completion::Credited { campaign, amount, .. } => {
                Ok(AdViewCompleted { credited_millicredits: amount, campaign })
            }
            Completion::Refused(refusal) => Err(match refusal {
                ViewRefusal::Unknown => unknown(),
                ViewRefusal::AlreadyCompleted { .. } => {
                    AdRefusal::Conflict("this ad view was completed already: each token pays once".to_owned())
                }
                ViewRefusal::Expired { .. } => AdRefusal::Gone(format!(
                    "this ad view expired: a view must be completed within {} s of its start; start a new one",
                    self.config.ad_view_ttl_ms / 1000
                )),
                ViewRefusal::TooEarly { remaining_ms } => AdRefusal::TooEarly {
                    message: format!(
                        "too early: {remaining_ms} ms of the campaign's minimum view time remain on the server's clock"
                    ),
                    remaining_ms,
                },
                ViewRefusal::CampaignOver { campaign, state } => AdRefusal::Gone(format!(
                    "campaign {campaign} is {}: its budget pays no more views",
                    state_name(state)
                )),
                ViewRefusal::OverCap { campaign, cap } => AdRefusal::TooMany {
                    message: format!(
                        "you were paid for {cap} views of campaign {campaign} today, its daily cap per viewer; try \
                         again after midnight UTC"
                    ),
                    retry_after_secs: seconds_to_next_utc_day(now),
                },
            }),
        }
    }
}

/// Seconds from `now_ms` to the next midnight UTC, at least one.
fn seconds_to_next_utc_day(now_ms: u64) -> u64 {
    let next = (now_ms / MS_PER_DAY + 1) * MS_PER_DAY;
    (next - now_ms).div_ceil(1000).max(1)
}

fn credits(millicredits: i64) -> String {
    format!("{:.3}", millicredits as f64 / 1000.0)
}

fn state_name(state: CampaignState) -> &'static str {
    match state {
        CampaignState::Pending => "pending",
        CampaignState::Approved => "running",
        CampaignState::Ended => "ended",
        CampaignState::Exhausted => "exhausted (its budget is spent)",
    }
}

fn status(state: CampaignState) -> CampaignStatus {
    match state {
        CampaignState::Pending => CampaignStatus::Pending,
        CampaignState::Approved => CampaignStatus::Approved,
        CampaignState::Ended => CampaignStatus::Ended,
        CampaignState::Exhausted => CampaignStatus::Exhausted,
    }
}

/// The URL an uploaded creative is served at.
pub fn creative_path(campaign: u64) -> String {
    format!("/api/campaigns/{campaign}/creative")
}

fn creative_info(row: &CampaignRow) -> CreativeInfo {
    CreativeInfo {
        source: row.source.clone(),
        mime: row.mime.clone(),
        url: row.media_url.clone().unwrap_or_else(|| creative_path(row.id)),
        bytes: row.creative_bytes,
        duration_ms: row.vast_duration_ms,
        impression_urls: row.impression_urls.clone(),
    }
}

fn info(row: &CampaignRow) -> CampaignInfo {
    CampaignInfo {
        id: row.id,
        name: row.name.clone(),
        sponsor: row.sponsor_name.clone(),
        status: status(row.status),
        creative: creative_info(row),
        budget_millicredits: row.budget,
        reward_millicredits: row.reward,
        min_view_ms: row.min_view_ms,
        daily_cap_per_viewer: row.daily_cap_per_viewer,
        impressions: row.impressions,
        completed_views: row.completed_views,
        spent_millicredits: row.spent,
        escrowed_millicredits: row.escrowed,
        refunded_millicredits: row.refunded,
        created_at_ms: row.created_at_ms,
        approved_at_ms: row.approved_at_ms,
        ended_at_ms: row.ended_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_campaign_request_has_room_for_the_largest_creative_in_base64() {
        let config = ServerConfig::default();
        assert!(max_request_bytes(&config) >= config.max_creative_bytes / 3 * 4 + REQUEST_ROOM_BYTES);
        assert!(max_request_bytes(&config) < 2 * config.max_creative_bytes, "but not much more");
    }

    #[test]
    fn the_daily_cap_waits_until_midnight_utc() {
        assert_eq!(seconds_to_next_utc_day(0), 86_400);
        assert_eq!(seconds_to_next_utc_day(MS_PER_DAY - 1), 1);
        assert_eq!(seconds_to_next_utc_day(MS_PER_DAY + 3_600_000), 82_800);
    }
}
