//! Accounts: sign-up, log-in and log-out, the account's balance, ledger, API tokens and volunteering,
//! anonymous volunteer identities, and the published pricing and limits.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use distributivecom_protocol::api::{
    AccountInfo, Credentials, ErrorBody, LedgerEntry, LedgerPage, LedgerQuery, LimitsRequest, NewToken, Pricing,
    ServerLimits, TokenCreated, TokenInfo, UserInfo, VolunteerClaim, VolunteerCredential, VolunteerInfo,
    VolunteeringStats, WebSessionInfo,
};

use super::AppState;
use super::error::AppError;
use super::extract::{Caller, Via, VolunteerCaller, cleared_cookie_header, session_cookie_header};
use super::extract::{JsonBody, LoginAttempt, Path, Query, VolunteerRegistration};
use crate::identity::{SignUpError, StartedSession};
use crate::store::accounts::{self, UserRow};
use crate::store::ledger;

const MAX_TOKEN_NAME_CHARS: usize = 100;
const MAX_LEDGER_ENTRIES: u32 = 500;

fn user_info(user: &UserRow) -> UserInfo {
    UserInfo { id: user.id, username: user.username.clone(), is_admin: user.is_admin }
}

/// Creates an account with the starter grant and signs it in. The browser's anonymous volunteer identity,
/// if sent, becomes the account's.
#[utoipa::path(
    post, path = "/api/auth/signup", tag = "accounts",
    request_body = Credentials,
    responses(
        (status = 201, description = "Created and signed in; the session cookie is set", body = WebSessionInfo),
        (status = 400, description = "The username or password breaks the rules", body = ErrorBody),
        (status = 409, description = "The username is taken", body = ErrorBody),
        (status = 429, description = "Too many attempts from this address", body = ErrorBody),
    )
)]
pub async fn signup(
    State(state): State<AppState>,
    _attempt: LoginAttempt,
    JsonBody(credentials): JsonBody<Credentials>,
) -> Result<Response, AppError> {
    let started =
        state.identity.sign_up(&credentials.username, &credentials.password, credentials.volunteer).await.map_err(
            |refusal| match refusal {
                SignUpError::Invalid(problem) => AppError::BadRequest(problem),
                taken @ SignUpError::Taken(_) => AppError::Conflict(taken.to_string()),
                SignUpError::Store(error) => error.into(),
            },
        )?;
    session_started(&state, started, StatusCode::CREATED)
}

/// Signs in. The browser's anonymous volunteer identity, if sent and not someone else's, becomes the
/// account's, with what it earned.
#[utoipa::path(
    post, path = "/api/auth/login", tag = "accounts",
    request_body = Credentials,
    responses(
        (status = 200, description = "Signed in; the session cookie is set", body = WebSessionInfo),
        (status = 401, description = "Wrong username or password", body = ErrorBody),
        (status = 429, description = "Too many attempts from this address", body = ErrorBody),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    _attempt: LoginAttempt,
    JsonBody(credentials): JsonBody<Credentials>,
) -> Result<Response, AppError> {
    match state.identity.log_in(&credentials.username, &credentials.password, credentials.volunteer).await? {
        Some(started) => session_started(&state, started, StatusCode::OK),
        None => Err(AppError::Unauthorized("wrong username or password".to_owned())),
    }
}

/// The answer that starts a web session: who, the CSRF token, what was claimed, and the cookie.
fn session_started(state: &AppState, started: StartedSession, status: StatusCode) -> Result<Response, AppError> {
    let volunteer_claim = started.claim.map(|claim| match claim.moved {
        Some(millicredits) => VolunteerClaim {
            volunteer: claim.volunteer,
            claimed: true,
            millicredits,
            message: format!(
                "this browser's volunteer identity is now this account's, with the {:.3} credits it earned",
                millicredits as f64 / 1000.0
            ),
        },
        None => VolunteerClaim {
            volunteer: claim.volunteer,
            claimed: false,
            millicredits: 0,
            message: "nothing was claimed: the volunteer identity sent is unknown, its secret is wrong, or it \
                      belongs to another account"
                .to_owned(),
        },
    });
    let info = WebSessionInfo { user: user_info(&started.user), csrf_token: started.csrf_token, volunteer_claim };
    let mut response = (status, Json(info)).into_response();
    set_cookie(&mut response, &session_cookie_header(&started.cookie, &state.config))?;
    Ok(response)
}

fn set_cookie(response: &mut Response, value: &str) -> Result<(), AppError> {
    let value = HeaderValue::from_str(value).map_err(|error| AppError::Internal(format!("bad cookie: {error}")))?;
    response.headers_mut().insert(header::SET_COOKIE, value);
    Ok(())
}

/// Ends the session of the cookie sent.
#[utoipa::path(
    post, path = "/api/auth/logout", tag = "accounts",
    responses(
        (status = 204, description = "Signed out; the cookie is cleared"),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "The X-CSRF-Token header is missing or wrong", body = ErrorBody),
    )
)]
pub async fn logout(State(state): State<AppState>, caller: Caller) -> Result<Response, AppError> {
    if let Via::WebSession { cookie_hash, .. } = caller.via {
        state.identity.end_web_session(cookie_hash).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    set_cookie(&mut response, &cleared_cookie_header(&state.config))?;
    Ok(response)
}

/// Who is signed in with the session cookie, and the CSRF token writes must send.
#[utoipa::path(
    get, path = "/api/auth/session", tag = "accounts",
    responses(
        (status = 200, description = "The signed-in user", body = WebSessionInfo),
        (status = 401, description = "Not signed in", body = ErrorBody),
    )
)]
pub async fn session(caller: Caller) -> Result<Json<WebSessionInfo>, AppError> {
    match caller.via {
        Via::WebSession { csrf_token, .. } => {
            Ok(Json(WebSessionInfo { user: user_info(&caller.user), csrf_token, volunteer_claim: None }))
        }
        Via::Token { .. } => {
            Err(AppError::BadRequest("API tokens have no web session; use GET /api/account".to_owned()))
        }
    }
}

/// The caller's balance and what their running jobs hold in escrow.
#[utoipa::path(
    get, path = "/api/account", tag = "accounts",
    responses(
        (status = 200, description = "The account", body = AccountInfo),
        (status = 401, description = "Not signed in", body = ErrorBody),
    )
)]
pub async fn account(State(state): State<AppState>, caller: Caller) -> Result<Json<AccountInfo>, AppError> {
    let (id, account) = (caller.user.id, caller.account());
    let (balance, escrowed) = state
        .store
        .read(move |connection| Ok((ledger::balance(connection, &account)?, accounts::escrowed(connection, id)?)))
        .await?;
    Ok(Json(AccountInfo {
        user: user_info(&caller.user),
        balance_millicredits: balance,
        escrowed_millicredits: escrowed,
    }))
}

/// The caller's ledger entries, newest first, a page at a time: pass a page's `next_before` as `before`
/// for the next (older) page.
#[utoipa::path(
    get, path = "/api/account/ledger", tag = "accounts",
    params(LedgerQuery),
    responses(
        (status = 200, description = "The newest entries older than `before`", body = LedgerPage),
        (status = 400, description = "A query parameter is not a whole number", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
    )
)]
pub async fn ledger(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<LedgerQuery>,
) -> Result<Json<LedgerPage>, AppError> {
    let account = caller.account();
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_LEDGER_ENTRIES);
    let before = query.before;
    let (balance, entries) = state
        .store
        .read(move |connection| {
            Ok((ledger::balance(connection, &account)?, accounts::entries(connection, &account, before, limit)?))
        })
        .await?;
    // A full page may have older entries after it; a short one is the last.
    let next_before = (entries.len() == limit as usize).then(|| entries.last().map(|entry| entry.id)).flatten();
    let entries = entries
        .into_iter()
        .map(|entry| LedgerEntry {
            id: entry.id,
            kind: entry.kind,
            amount_millicredits: entry.amount,
            job: entry.job,
            chunk: entry.chunk,
            memo: entry.memo,
            created_at_ms: entry.created_at_ms,
        })
        .collect();
    Ok(Json(LedgerPage { balance_millicredits: balance, entries, next_before }))
}

/// What the caller's volunteers did: the account's own workers and the anonymous identities it claimed.
#[utoipa::path(
    get, path = "/api/account/volunteering", tag = "accounts",
    responses(
        (status = 200, description = "Validated and invalid replicas, work units and credits earned", body = VolunteeringStats),
        (status = 401, description = "Not signed in", body = ErrorBody),
    )
)]
pub async fn volunteering(State(state): State<AppState>, caller: Caller) -> Result<Json<VolunteeringStats>, AppError> {
    let id = caller.user.id;
    let totals = state.store.read(move |connection| accounts::volunteering(connection, id)).await?;
    Ok(Json(VolunteeringStats {
        validated_replicas: totals.validated,
        invalid_replicas: totals.invalid,
        work_units: totals.work_units,
        consecutive_valid: totals.consecutive_valid,
        earned_millicredits: totals.earned,
    }))
}

/// The caller's API tokens (never their secrets), newest first.
#[utoipa::path(
    get, path = "/api/account/tokens", tag = "accounts",
    responses(
        (status = 200, description = "The tokens", body = [TokenInfo]),
        (status = 401, description = "Not signed in", body = ErrorBody),
    )
)]
pub async fn tokens(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<TokenInfo>>, AppError> {
    let id = caller.user.id;
    let rows = state.store.read(move |connection| accounts::tokens(connection, id)).await?;
    Ok(Json(
        rows.into_iter()
            .map(|row| TokenInfo {
                id: row.id,
                name: row.name,
                prefix: row.prefix,
                created_at_ms: row.created_at_ms,
                last_used_at_ms: row.last_used_at_ms,
                revoked: row.revoked,
            })
            .collect(),
    ))
}

/// Creates an API token. Its secret is in this answer only: the server keeps only its hash.
#[utoipa::path(
    post, path = "/api/account/tokens", tag = "accounts",
    request_body = NewToken,
    responses(
        (status = 201, description = "Created", body = TokenCreated),
        (status = 400, description = "The name is empty or too long", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
    )
)]
pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<NewToken>,
) -> Result<(StatusCode, Json<TokenCreated>), AppError> {
    let name = request.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > MAX_TOKEN_NAME_CHARS {
        return Err(AppError::BadRequest(format!("a token's name has 1 to {MAX_TOKEN_NAME_CHARS} characters")));
    }
    let (id, token) = state.identity.create_api_token(caller.user.id, &name).await?;
    Ok((StatusCode::CREATED, Json(TokenCreated { id, name, token })))
}

/// Revokes one of the caller's tokens; requests with it fail from now on.
#[utoipa::path(
    delete, path = "/api/account/tokens/{id}", tag = "accounts",
    params(("id" = u64, Path, description = "The token's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "The caller has no such active token", body = ErrorBody),
    )
)]
pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<u64>,
) -> Result<StatusCode, AppError> {
    if !state.identity.revoke_api_token(caller.user.id, id).await? {
        return Err(AppError::NotFound(format!("you have no active token {id}")));
    }
    // Workers connected with the token stop too: a revoked token does nothing more for anyone.
    state.coordinator.token_revoked(id);
    Ok(StatusCode::NO_CONTENT)
}

/// Issues an anonymous volunteer identity: what it earns is kept for it until an account claims it (by
/// signing up or logging in with it). Signed-in callers get an identity that is theirs at once.
#[utoipa::path(
    post, path = "/api/volunteers", tag = "volunteers",
    responses(
        (status = 201, description = "The identity; keep the secret", body = VolunteerCredential),
        (status = 429, description = "Too many identities from this address", body = ErrorBody),
    )
)]
pub async fn register_volunteer(
    State(state): State<AppState>,
    _registration: VolunteerRegistration,
    caller: Option<Caller>,
) -> Result<(StatusCode, Json<VolunteerCredential>), AppError> {
    let credential = state.identity.register_volunteer(caller.map(|caller| caller.user.id)).await?;
    Ok((StatusCode::CREATED, Json(credential)))
}

/// What an anonymous volunteer identity has earned and how its results fared.
#[utoipa::path(
    get, path = "/api/volunteers/me", tag = "volunteers",
    responses(
        (status = 200, description = "The identity's standing", body = VolunteerInfo),
        (status = 401, description = "Missing or wrong `Authorization: Volunteer <id>:<secret>`", body = ErrorBody),
    )
)]
pub async fn volunteer_info(
    State(state): State<AppState>,
    VolunteerCaller(volunteer): VolunteerCaller,
) -> Result<Json<VolunteerInfo>, AppError> {
    let info = state
        .store
        .read(move |connection| {
            // A claimed identity works for its account: its reputation is the account's, and what it earns
            // goes straight there, so its own balance (what is not yet claimed) stays 0.

            let (key, claimed_by) = match volunteer.user_id {
                Some(user) => (ledger::user(user), accounts::user_by_id(connection, user)?.map(|user| user.username)),
                None => (ledger::volunteer(&volunteer.id), None),
            };
            let reputation = accounts::reputation(connection, &key)?;
            Ok(VolunteerInfo {
                id: volunteer.id.clone(),
                balance_millicredits: ledger::balance(connection, &ledger::volunteer(&volunteer.id))?,
                validated_replicas: reputation.validated,
                invalid_replicas: reputation.invalid,
                claimed_by,
            })
        })
        .await?;
    Ok(Json(info))
}

/// What work costs, who gets it, and what a new account starts with.
#[utoipa::path(
    get, path = "/api/pricing", tag = "accounts",
    responses((status = 200, description = "The pricing", body = Pricing))
)]
pub async fn pricing(State(state): State<AppState>) -> Json<Pricing> {
    let config = &state.config;
    Json(Pricing {
        millicredits_per_million_work_units: config.pricing.millicredits_per_million_work_units,
        volunteer_share_percent: config.pricing.volunteer_share_percent,
        starter_grant_millicredits: config.starter_grant_millicredits,
        default_replicas: config.default_replicas,
        default_quorum: config.default_quorum,
    })
}

/// What the server accepts: the largest program, job request, blob and job, and the limits a job gets by
/// default and may ask for, so that a client can tell before an upload.
#[utoipa::path(
    get, path = "/api/limits", tag = "accounts",
    responses((status = 200, description = "The server's limits", body = ServerLimits))
)]
pub async fn limits(State(state): State<AppState>) -> Json<ServerLimits> {
    let config = &state.config;
    let limits_of = |limits: &distributivecom_protocol::worker::Limits| LimitsRequest {
        time_limit_ms: Some(limits.time_limit_ms),
        memory_limit_bytes: Some(limits.memory_bytes),
        max_stdout_bytes: Some(limits.max_stdout_bytes),
        max_stderr_bytes: Some(limits.max_stderr_bytes),
        max_data_bytes: Some(limits.max_data_bytes),
        max_work_units: Some(limits.max_work_units),
    };
    Json(ServerLimits {
        max_module_bytes: config.max_module_bytes,
        max_job_request_bytes: config.max_job_request_bytes,
        max_chunks_per_job: config.max_chunks_per_job,
        max_blob_bytes: config.max_blob_bytes,
        max_blob_bytes_per_account: config.max_blob_bytes_per_account,
        default_limits: limits_of(&config.default_limits),
        max_limits: limits_of(&config.max_limits),
        default_max_retries: config.default_max_retries,
        max_retries: config.max_retries_cap,
        max_replicas: config.max_replicas,
    })
}
