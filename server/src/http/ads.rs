//! Rewarded ads over HTTP: campaigns (`/api/campaigns`: create, list, approve, end, the creative) and
//! views (`/api/ad-views`: start, complete). Each handler extracts, calls one `ads::Ads` method and maps
//! its refusal.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use distributivecom_protocol::api::{
    AdViewCompleted, AdViewRequest, AdViewStarted, CampaignInfo, CampaignRequest, CampaignsQuery, ErrorBody,
};

use super::AppState;
use super::error::{AppError, read_body};
use super::extract::{Caller, OptionalJsonBody, Path, Query, Viewer};
use crate::ads;

/// Creates a campaign: checks its creative, stores it, and moves its budget into escrow, durably.
#[utoipa::path(
    post, path = "/api/campaigns", tag = "ads",
    request_body = CampaignRequest,
    responses(
        (status = 201, description = "Created, pending approval; the budget is in escrow", body = CampaignInfo),
        (status = 400, description = "Malformed, or a name or number out of bounds; the message says which", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 402, description = "The balance cannot cover the budget", body = ErrorBody),
        (status = 413, description = "The request, the creative or the VAST document is too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "The creative's bytes are not its type, or the VAST document lacks what is needed (named)", body = ErrorBody),
        (status = 429, description = "The sponsor has as many campaigns pending or running as allowed", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<CampaignInfo>), AppError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.split(';').next().is_some_and(|media| media.trim() == "application/json"));
    if !json {
        return Err(AppError::UnsupportedMediaType(
            "send the campaign as JSON, with Content-Type: application/json".to_owned(),
        ));
    }
    let body = read_body(body, ads::max_request_bytes(&state.config), "the campaign request").await?;
    let request: CampaignRequest = serde_json::from_slice(&body)
        .map_err(|error| AppError::BadRequest(format!("could not read the campaign request: {error}")))?;
    let created = state.ads.create_campaign(&caller.user, request).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// The caller's campaigns with their impressions, completed views and spending, newest first; with
/// `pending=true`, an administrator's list of the campaigns waiting for approval.
#[utoipa::path(
    get, path = "/api/campaigns", tag = "ads",
    params(CampaignsQuery),
    responses(
        (status = 200, description = "The campaigns", body = [CampaignInfo]),
        (status = 400, description = "A query parameter is not valid", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "pending=true from someone who is not an administrator", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<CampaignsQuery>,
) -> Result<Json<Vec<CampaignInfo>>, AppError> {
    Ok(Json(state.ads.list(&caller.user, query).await?))
}

/// Approves a pending campaign: viewers are shown it from now on. Administrators only.
#[utoipa::path(
    post, path = "/api/campaigns/{id}/approve", tag = "ads",
    params(("id" = u64, Path, description = "The campaign's id")),
    responses(
        (status = 200, description = "Approved", body = CampaignInfo),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Not an administrator", body = ErrorBody),
        (status = 404, description = "No such campaign", body = ErrorBody),
        (status = 409, description = "The campaign is not pending", body = ErrorBody),
    )
)]
pub async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<u64>,
) -> Result<Json<CampaignInfo>, AppError> {
    Ok(Json(state.ads.approve(&caller.user, id).await?))
}

/// Ends a campaign and refunds the rest of its escrow to its sponsor. Its sponsor, or an administrator
/// (rejecting or stopping it).
#[utoipa::path(
    post, path = "/api/campaigns/{id}/end", tag = "ads",
    params(("id" = u64, Path, description = "The campaign's id")),
    responses(
        (status = 200, description = "Ended; `refunded_millicredits` says what went back", body = CampaignInfo),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "The caller has no such campaign", body = ErrorBody),
        (status = 409, description = "The campaign ended already", body = ErrorBody),
    )
)]
pub async fn end(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<u64>,
) -> Result<Json<CampaignInfo>, AppError> {
    Ok(Json(state.ads.end(&caller.user, id).await?))
}

/// An uploaded creative, from this origin: to anyone while its campaign runs, else to its sponsor and
/// administrators. Served with its own type and `X-Content-Type-Options: nosniff`.
#[utoipa::path(
    get, path = "/api/campaigns/{id}/creative", tag = "ads",
    params(("id" = u64, Path, description = "The campaign's id")),
    responses(
        (status = 200, description = "The image or video, as uploaded"),
        (status = 404, description = "No such running campaign (or not the caller's), or a VAST creative", body = ErrorBody),
    )
)]
pub async fn creative(
    State(state): State<AppState>,
    caller: Option<Caller>,
    Path(id): Path<u64>,
) -> Result<Response, AppError> {
    let (mime, bytes) = state.ads.creative(caller.as_ref().map(|caller| &caller.user), id).await?;
    let content_type =
        HeaderValue::from_str(&mime).map_err(|error| AppError::Internal(format!("stored media type: {error}")))?;
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Only pages of this origin (the donate and account pages, the embed frame) show it; nothing in it
    // may run or load anything.
    headers.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; sandbox"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=300"));
    Ok(response)
}

/// Starts a view of a rewarded ad: picks the named campaign (or one the viewer may watch), issues a
/// single-use token bound to the viewer with the server's time, and counts an impression.
#[utoipa::path(
    post, path = "/api/ad-views", tag = "ads",
    request_body(content = Option<AdViewRequest>, description = "`{}` or no body: any campaign; `{\"campaign\": 3}`: that one"),
    responses(
        (status = 201, description = "The view's token and what to play", body = AdViewStarted),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "No user or volunteer credentials", body = ErrorBody),
        (status = 403, description = "A cookie write without its X-CSRF-Token", body = ErrorBody),
        (status = 404, description = "No such running campaign, or none to watch now", body = ErrorBody),
        (status = 409, description = "The named campaign is the viewer's own", body = ErrorBody),
        (status = 410, description = "The named campaign is over", body = ErrorBody),
        (status = 429, description = "Too many views open, or the named campaign's daily cap reached (`Retry-After`)", body = ErrorBody),
    )
)]
pub async fn start_view(
    State(state): State<AppState>,
    viewer: Viewer,
    OptionalJsonBody(request): OptionalJsonBody<AdViewRequest>,
) -> Result<(StatusCode, Json<AdViewStarted>), AppError> {
    let started = state.ads.start_view(viewer.key(), request).await?;
    Ok((StatusCode::CREATED, Json(started)))
}

/// Completes a view: the server pays the reward from the campaign's escrow if its own records and clock
/// allow it, and otherwise says why not (moving nothing).
#[utoipa::path(
    post, path = "/api/ad-views/{token}/complete", tag = "ads",
    params(("token" = String, Path, description = "The view's token")),
    responses(
        (status = 200, description = "Paid", body = AdViewCompleted),
        (status = 401, description = "No user or volunteer credentials", body = ErrorBody),
        (status = 403, description = "A cookie write without its X-CSRF-Token", body = ErrorBody),
        (status = 404, description = "Unknown token, or another viewer's", body = ErrorBody),
        (status = 409, description = "The token was completed already", body = ErrorBody),
        (status = 410, description = "The token expired, or the campaign is over (ended, or its budget spent)", body = ErrorBody),
        (status = 425, description = "Too early: the message says how many ms remain (`Retry-After` in seconds)", body = ErrorBody),
        (status = 429, description = "The viewer reached the campaign's daily cap (`Retry-After`: until midnight UTC)", body = ErrorBody),
    )
)]
pub async fn complete_view(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(token): Path<String>,
) -> Result<Json<AdViewCompleted>, AppError> {
    Ok(Json(state.ads.complete_view(viewer.key(), &token).await?))
}
