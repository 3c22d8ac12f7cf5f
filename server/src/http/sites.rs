//! Site keys over HTTP: create (`POST /api/sites`), list with statistics (`GET /api/sites`) and revoke
//! (`DELETE /api/sites/{key}`) for the signed-in owner, and the registration of a site's visitor
//! (`POST /api/sites/{key}/volunteers`), the one anonymous write of the embed widget, rate-limited like
//! `POST /api/volunteers`; and a visitor's share: a code for the widget's identity
//! (`POST /api/embed/share-codes`) that the visitor, signed in, exchanges (`POST /api/embed/shares`). The
//! rules are `crate::sites`'s.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use distributivecom_protocol::api::{ErrorBody, VolunteerCredential};
use distributivecom_protocol::embed::{
    SHARE_CODE_INTERVAL_MS, ShareCode, ShareRequest, ShareTaken, SiteInfo, SiteRequest, VISITOR_SHARE_PERCENT,
    is_site_key, normalize_origin,
};

use super::AppState;
use super::error::AppError;
use super::extract::{Caller, JsonBody, Path, VolunteerCaller, VolunteerRegistration};
use crate::config::ServerConfig;
use crate::identity::SITE_UNAVAILABLE;
use crate::sites::{self, ShareCodeRefusal, SiteRefusal};
use crate::store::sites::ShareOutcome;

/// The origin this server is reached at, for snippets: `--public-origin` if set, otherwise `http://` and
/// the request's Host header (if it is a valid host and port), otherwise the address it listens on.
pub fn public_origin(config: &ServerConfig, headers: &HeaderMap) -> String {
    if let Some(origin) = &config.public_origin {
        return origin.clone();
    }
    headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .and_then(|host| normalize_origin(&format!("http://{host}")).ok())
        .unwrap_or_else(|| format!("http://{}", config.listen))
}

impl From<SiteRefusal> for AppError {
    fn from(refusal: SiteRefusal) -> AppError {
        match refusal {
            SiteRefusal::Invalid(message) => AppError::BadRequest(message),
            too_many @ SiteRefusal::TooMany(_) => AppError::Conflict(too_many.to_string()),
            SiteRefusal::Store(error) => error.into(),
        }
    }
}

/// Creates a site key: the snippet in the answer goes into the site's pages.
#[utoipa::path(
    post, path = "/api/sites", tag = "sites",
    request_body = SiteRequest,
    responses(
        (status = 201, description = "Created", body = SiteInfo),
        (status = 400, description = "The name or an origin breaks the rules; the message says which", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 409, description = "The account has the most active site keys allowed", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    caller: Caller,
    JsonBody(request): JsonBody<SiteRequest>,
) -> Result<(StatusCode, Json<SiteInfo>), AppError> {
    let origin = public_origin(&state.config, &headers);
    let site = sites::create(&state.store, caller.user.id, request, &origin).await?;
    Ok((StatusCode::CREATED, Json(site)))
}

/// The caller's site keys, newest first (at most 200, revoked ones included), with their statistics.
#[utoipa::path(
    get, path = "/api/sites", tag = "sites",
    responses(
        (status = 200, description = "The site keys", body = [SiteInfo]),
        (status = 401, description = "Not signed in", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    caller: Caller,
) -> Result<Json<Vec<SiteInfo>>, AppError> {
    let origin = public_origin(&state.config, &headers);
    Ok(Json(sites::list(&state.store, caller.user.id, &origin).await?))
}

/// Revokes one of the caller's site keys: its widget shows a neutral message from now on, its visitors'
/// connections are closed and refused.
#[utoipa::path(
    delete, path = "/api/sites/{key}", tag = "sites",
    params(("key" = String, Path, description = "The site key")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "The caller has no such active site key", body = ErrorBody),
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> Result<StatusCode, AppError> {
    let Some(site) = sites::revoke(&state.store, caller.user.id, &key).await? else {
        return Err(AppError::NotFound("you have no active site key with this value".to_owned()));
    };
    state.coordinator.site_revoked(site);
    Ok(StatusCode::NO_CONTENT)
}

/// Issues an anonymous volunteer identity for a visitor of the site, once they opted in in the widget:
/// what it earns goes to the site's owner (it cannot be claimed by any account). Unknown and revoked keys
/// get the same neutral 404.
#[utoipa::path(
    post, path = "/api/sites/{key}/volunteers", tag = "sites",
    params(("key" = String, Path, description = "The site key")),
    responses(
        (status = 201, description = "The identity; the widget keeps it", body = VolunteerCredential),
        (status = 404, description = "The site's widget is not available (unknown or revoked key)", body = ErrorBody),
        (status = 429, description = "Too many identities from this address", body = ErrorBody),
    )
)]
pub async fn register_volunteer(
    State(state): State<AppState>,
    _registration: VolunteerRegistration,
    Path(key): Path<String>,
) -> Result<(StatusCode, Json<VolunteerCredential>), AppError> {
    let registered = match is_site_key(&key) {
        true => state.identity.register_site_volunteer(&key).await?,
        false => None,
    };
    let credential = registered.ok_or_else(|| AppError::NotFound(SITE_UNAVAILABLE.to_owned()))?;
    Ok((StatusCode::CREATED, Json(credential)))
}

/// A single-use code, valid for 10 minutes, with which the visitor of a site, signed in on this origin,
/// takes their share of what this identity earns (the widget opens `/share` with it). The caller is the
/// widget's identity: `Authorization: Volunteer <id>:<secret>`.
#[utoipa::path(
    post, path = "/api/embed/share-codes", tag = "sites",
    responses(
        (status = 201, description = "The code; a new one replaces the identity's earlier one", body = ShareCode),
        (status = 401, description = "No volunteer identity, or a wrong secret", body = ErrorBody),
        (status = 404, description = "The identity is not a visitor of an active site", body = ErrorBody),
        (status = 429, description = "The identity got a code less than 5 s ago", body = ErrorBody),
    )
)]
pub async fn share_code(
    State(state): State<AppState>,
    VolunteerCaller(volunteer): VolunteerCaller,
) -> Result<(StatusCode, Json<ShareCode>), AppError> {
    match sites::issue_share_code(&state.store, &volunteer).await {
        Ok(code) => Ok((StatusCode::CREATED, Json(code))),
        Err(refusal @ ShareCodeRefusal::NotAVisitor) => Err(AppError::NotFound(refusal.to_string())),
        Err(refusal @ ShareCodeRefusal::TooSoon) => Err(AppError::TooManyRequests {
            message: refusal.to_string(),
            retry_after_secs: SHARE_CODE_INTERVAL_MS.div_ceil(1000),
        }),
        Err(ShareCodeRefusal::Store(error)) => Err(error.into()),
    }
}

/// The message for a share code that is not live.
const SHARE_CODE_UNKNOWN: &str = "this share code is unknown, used or expired (codes last 10 minutes and work once): \
                                  open the link in the site's widget again";

/// What handing in this code would do, without using it up: the page that asks the visitor to confirm
/// names the site from here, not from its link.
#[utoipa::path(
    post, path = "/api/embed/shares/preview", tag = "sites",
    request_body = ShareRequest,
    responses(
        (status = 200, description = "The code is live; this is the share it gives", body = ShareTaken),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "Unknown, used or expired code, or the site's key was revoked", body = ErrorBody),
    )
)]
pub async fn preview_share(
    State(state): State<AppState>,
    _caller: Caller,
    JsonBody(request): JsonBody<ShareRequest>,
) -> Result<Json<ShareTaken>, AppError> {
    let site_name = sites::share_code_site(&state.store, &request.code).await?;
    let site_name = site_name.ok_or_else(|| AppError::NotFound(SHARE_CODE_UNKNOWN.to_owned()))?;
    Ok(Json(ShareTaken { site_name, share_percent: VISITOR_SHARE_PERCENT }))
}

/// The signed-in caller takes the visitor's share (`share_percent` of the volunteer side of each payment;
/// the site's owner keeps the rest) of what the identity that issued the code earns from now on. A code
/// is good for one try.
#[utoipa::path(
    post, path = "/api/embed/shares", tag = "sites",
    request_body = ShareRequest,
    responses(
        (status = 200, description = "The share is the caller's", body = ShareTaken),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "Unknown, used or expired code, or the site's key was revoked", body = ErrorBody),
        (status = 409, description = "The share goes to another account already, or the caller owns the site", body = ErrorBody),
    )
)]
pub async fn take_share(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<ShareRequest>,
) -> Result<Json<ShareTaken>, AppError> {
    match sites::take_share(&state.store, caller.user.id, &request.code).await? {
        ShareOutcome::Taken { site_name } => Ok(Json(ShareTaken { site_name, share_percent: VISITOR_SHARE_PERCENT })),
        ShareOutcome::Unknown => Err(AppError::NotFound(SHARE_CODE_UNKNOWN.to_owned())),
        ShareOutcome::TakenByAnother => {
            Err(AppError::Conflict("this browser's share on that site already goes to another account".to_owned()))
        }
        ShareOutcome::OwnSite => {
            Err(AppError::Conflict("you own this site: everything its visitors earn is yours already".to_owned()))
        }
    }
}
