//! Accounts: sign-up, log-in and log-out, the account's balance, ledger and API tokens, anonymous
//! volunteer identities, and the published pricing.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use distributivecom_protocol::api::{
    AccountInfo, Credentials, ErrorBody, LedgerEntry, LedgerPage, NewToken, Pricing, SessionInfo, TokenCreated,
    TokenInfo, UserInfo, VolunteerClaim, VolunteerCredential, VolunteerInfo,
};
use serde::Deserialize;

use super::AppState;
use super::error::AppError;
use super::extract::{ClientAddress, JsonBody, Path, Query};
use crate::auth::{self, Caller, Via, VolunteerCaller};
use crate::coordinator::unix_ms;
use crate::store::accounts::{self, UserRow};
use crate::store::{ledger, writes};

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
        (status = 201, description = "Created and signed in; the session cookie is set", body = SessionInfo),
        (status = 400, description = "The username or password breaks the rules", body = ErrorBody),
        (status = 409, description = "The username is taken", body = ErrorBody),
        (status = 429, description = "Too many attempts from this address", body = ErrorBody),
    )
)]
pub async fn signup(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    JsonBody(credentials): JsonBody<Credentials>,
) -> Result<Response, AppError> {
    state.auth.logins.check(address, "sign-up and log-in attempts")?;
    if let Some(problem) = auth::credentials_problem(&credentials.username, &credentials.password) {
        return Err(AppError::BadRequest(problem));
    }
    let password = credentials.password.clone();
    let password_hash = tokio::task::spawn_blocking(move || auth::hash_password(&password))
        .await
        .map_err(|error| AppError::Internal(format!("password hashing panicked: {error}")))?;
    let config = state.coordinator.config();
    let (username, grant, now) = (credentials.username.clone(), config.starter_grant_millicredits, unix_ms());
    let created = state
        .coordinator
        .store()
        .transact(move |connection| writes::create_user(connection, &username, &password_hash, false, grant, now))
        .await?;
    let Some(id) = created else {
        return Err(AppError::Conflict(format!("the username {} is taken", credentials.username)));
    };
    let user = UserRow { id, username: credentials.username, password_hash: String::new(), is_admin: false };
    start_session(&state, user, credentials.volunteer, StatusCode::CREATED).await
}

/// Signs in. The browser's anonymous volunteer identity, if sent and not someone else's, becomes the
/// account's, with what it earned.
#[utoipa::path(
    post, path = "/api/auth/login", tag = "accounts",
    request_body = Credentials,
    responses(
        (status = 200, description = "Signed in; the session cookie is set", body = SessionInfo),
        (status = 401, description = "Wrong username or password", body = ErrorBody),
        (status = 429, description = "Too many attempts from this address", body = ErrorBody),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    JsonBody(credentials): JsonBody<Credentials>,
) -> Result<Response, AppError> {
    state.auth.logins.check(address, "sign-up and log-in attempts")?;
    if credentials.password.len() > auth::MAX_PASSWORD_BYTES {
        return Err(AppError::Unauthorized("wrong username or password".to_owned()));
    }
    let username = credentials.username.clone();
    let user = state.coordinator.store().read(move |connection| accounts::user_by_name(connection, &username)).await?;
    let (password, hash) = (credentials.password.clone(), user.as_ref().map(|user| user.password_hash.clone()));
    let verified = tokio::task::spawn_blocking(move || auth::verify_login(&password, hash.as_deref()))
        .await
        .map_err(|error| AppError::Internal(format!("password verification panicked: {error}")))?;
    match user {
        Some(user) if verified => start_session(&state, user, credentials.volunteer, StatusCode::OK).await,
        _ => Err(AppError::Unauthorized("wrong username or password".to_owned())),
    }
}

/// Claims the volunteer identity (if any), stores a new session and answers with its cookie.
async fn start_session(
    state: &AppState,
    user: UserRow,
    volunteer: Option<VolunteerCredential>,
    status: StatusCode,
) -> Result<Response, AppError> {
    let store = state.coordinator.store();
    let config = state.coordinator.config();
    // An identity with a wrong secret, or that belongs to another account, is left alone (signing in must
    // not fail because of what an old browser remembers), and the answer says that nothing was claimed.
    let sent = volunteer.as_ref().map(|credential| credential.id.clone());
    let verified = match volunteer {
        Some(credential) => auth::check_volunteer(store, credential).await?.map(|volunteer| volunteer.id),
        None => None,
    };
    let (cookie, csrf_token) = (auth::random_secret(), auth::random_secret());
    let (cookie_hash, csrf, id) = (auth::sha256_hex(&cookie), csrf_token.clone(), user.id);
    let (now, expires) = (unix_ms(), unix_ms().saturating_add(config.session_lifetime_ms));
    let claimed = store
        .transact(move |connection| {
            let claimed = match verified {
                Some(volunteer) => writes::claim_volunteer(connection, &volunteer, id, now)?,
                None => None,
            };
            writes::create_session(connection, &cookie_hash, id, &csrf, now, expires)?;
            Ok(claimed)
        })
        .await?;
    let volunteer_claim = sent.map(|volunteer| match claimed {
        Some(millicredits) => VolunteerClaim {
            volunteer,
            claimed: true,
            millicredits,
            message: format!(
                "this browser's volunteer identity is now this account's, with the {:.3} credits it earned",
                millicredits as f64 / 1000.0
            ),
        },
        None => VolunteerClaim {
            volunteer,
            claimed: false,
            millicredits: 0,
            message: "nothing was claimed: the volunteer identity sent is unknown, its secret is wrong, or it \
                      belongs to another account"
                .to_owned(),
        },
    });
    let info = SessionInfo { user: user_info(&user), csrf_token, volunteer_claim };
    let mut response = (status, Json(info)).into_response();
    set_cookie(&mut response, &auth::session_cookie_header(&cookie, config))?;
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
    if let Via::Session { cookie_hash, .. } = caller.via {
        state.coordinator.store().transact(move |connection| writes::delete_session(connection, &cookie_hash)).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    set_cookie(&mut response, &auth::cleared_cookie_header(state.coordinator.config()))?;
    Ok(response)
}

/// Who is signed in with the session cookie, and the CSRF token writes must send.
#[utoipa::path(
    get, path = "/api/auth/session", tag = "accounts",
    responses(
        (status = 200, description = "The signed-in user", body = SessionInfo),
        (status = 401, description = "Not signed in", body = ErrorBody),
    )
)]
pub async fn session(caller: Caller) -> Result<Json<SessionInfo>, AppError> {
    match caller.via {
        Via::Session { csrf_token, .. } => {
            Ok(Json(SessionInfo { user: user_info(&caller.user), csrf_token, volunteer_claim: None }))
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
        .coordinator
        .store()
        .read(move |connection| Ok((ledger::balance(connection, &account)?, accounts::escrowed(connection, id)?)))
        .await?;
    Ok(Json(AccountInfo {
        user: user_info(&caller.user),
        balance_millicredits: balance,
        escrowed_millicredits: escrowed,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct LedgerQuery {
    /// The most entries to return (at most 500; 100 by default).
    #[serde(default)]
    limit: Option<u32>,
}

/// The caller's ledger entries, newest first.
#[utoipa::path(
    get, path = "/api/account/ledger", tag = "accounts",
    params(LedgerQuery),
    responses(
        (status = 200, description = "The newest entries", body = LedgerPage),
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
    let (balance, entries) = state
        .coordinator
        .store()
        .read(move |connection| {
            Ok((ledger::balance(connection, &account)?, accounts::entries(connection, &account, limit)?))
        })
        .await?;
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
    Ok(Json(LedgerPage { balance_millicredits: balance, entries }))
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
    let rows = state.coordinator.store().read(move |connection| accounts::tokens(connection, id)).await?;
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
    let token = auth::new_api_token();
    let (user, stored_name, prefix, hash, now) =
        (caller.user.id, name.clone(), auth::shown_prefix(&token), auth::sha256_hex(&token), unix_ms());
    let id = state
        .coordinator
        .store()
        .transact(move |connection| writes::create_token(connection, user, &stored_name, &prefix, &hash, now))
        .await?;
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
    let (user, now) = (caller.user.id, unix_ms());
    let revoked =
        state.coordinator.store().transact(move |connection| writes::revoke_token(connection, user, id, now)).await?;
    if !revoked {
        return Err(AppError::NotFound(format!("you have no active token {id}")));
    }
    // Workers connected with the token stop too: a revoked token does nothing more for anyone.
    state.auth.forget_token(id);
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
    ClientAddress(address): ClientAddress,
    caller: Option<Caller>,
) -> Result<(StatusCode, Json<VolunteerCredential>), AppError> {
    state.auth.volunteer_registrations.check(address, "volunteer identities")?;
    let credential =
        VolunteerCredential { id: format!("v-{}", &auth::random_secret()[..22]), secret: auth::random_secret() };
    let (id, hash, owner, now) =
        (credential.id.clone(), auth::sha256_hex(&credential.secret), caller.map(|caller| caller.user.id), unix_ms());
    state
        .coordinator
        .store()
        .transact(move |connection| {
            writes::register_volunteer(connection, &id, &hash, now)?;
            if let Some(owner) = owner {
                writes::claim_volunteer(connection, &id, owner, now)?;
            }
            Ok(())
        })
        .await?;
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
        .coordinator
        .store()
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
    let config = state.coordinator.config();
    Json(Pricing {
        millicredits_per_million_work_units: config.pricing.millicredits_per_million_work_units,
        volunteer_share_percent: config.pricing.volunteer_share_percent,
        starter_grant_millicredits: config.starter_grant_millicredits,
        default_replicas: config.default_replicas,
        default_quorum: config.default_quorum,
    })
}
