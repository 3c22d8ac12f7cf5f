//! Site keys over HTTP: create (`POST /api/sites`), list with statistics (`GET /api/sites`) and revoke
//! (`DELETE /api/sites/{key}`) for the signed-in owner, and the registration of a site's visitor
//! (`POST /api/sites/{key}/volunteers`), the one anonymous write of the embed widget, rate-limited like
//! `POST /api/volunteers`. The rules are `crate::sites`'s.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use distributivecom_protocol::api::{ErrorBody, VolunteerCredential};
use distributivecom_protocol::embed::{SiteInfo, SiteRequest, is_site_key, normalize_origin};

use super::AppState;
use super::error::AppError;
use super::extract::{Caller, JsonBody, Path, VolunteerRegistration};
use crate::config::ServerConfig;
use crate::identity::SITE_UNAVAILABLE;
use crate::sites::{self, SiteRefusal};

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
