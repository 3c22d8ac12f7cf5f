//! Every extractor handlers use, in one place: who is calling ([`Caller`], with the CSRF check on cookie
//! writes, and [`VolunteerCaller`]), path parameters, query strings, JSON bodies and the client's address.
//! Every refusal is an [`AppError`], so it reaches the client as `{"error": "..."}` with a message a
//! person can act on, never as the framework's plain text. Who a credential names is asked of
//! `identity`; only the HTTP shapes live here.
//!
//! Architecture Invariant: a handler that changes anything takes a [`Caller`], and one that reads a
//! user's data filters by `caller.user.id`; nothing else proves who is asking.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, OptionalFromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use distributivecom_protocol::api::VolunteerCredential;
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::{AppError, read_body};
use crate::config::ServerConfig;
use crate::identity::constant_time_eq;
use crate::store::accounts::{UserRow, VolunteerRow};
use crate::store::ledger;

/// The web session cookie's name.
pub const SESSION_COOKIE: &str = "dc_session";
/// The header a cookie-authenticated write must carry, equal to the web session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The signed-in user behind a request, and how they proved it.
#[derive(Clone, Debug)]
pub struct Caller {
    pub user: UserRow,
    pub via: Via,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Via {
    /// `Authorization: Bearer <token>`.
    Token { id: u64 },
    /// The web session's cookie; `cookie_hash` identifies the session for log-out.
    WebSession { cookie_hash: String, csrf_token: String },
}

impl Caller {
    /// The ledger account and volunteer key of this user.
    pub fn account(&self) -> String {
        ledger::user(self.user.id)
    }
}

/// Finds the caller of a request, if it carries credentials. Credentials that are present but wrong (a
/// revoked token, a cookie write without its CSRF token) are refused rather than treated as anonymous,
/// so that a client never silently acts as nobody.
async fn identify(parts: &Parts, state: &AppState) -> Result<Option<Caller>, AppError> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let value = value.to_str().unwrap_or_default();
        if let Some(token) = value.strip_prefix("Bearer ") {
            let Some((user, id)) = state.identity.api_token(token.trim()).await? else {
                return Err(AppError::Unauthorized(
                    "this API token is not valid: it was revoked or mistyped; create a new one on your account page"
                        .to_owned(),
                ));
            };
            return Ok(Some(Caller { user, via: Via::Token { id } }));
        }
        // `Volunteer id:secret` identifies an anonymous volunteer, not a user: the volunteer endpoints
        // read it themselves.
        if !value.starts_with("Volunteer ") {
            return Err(AppError::Unauthorized(
                "unsupported Authorization header: send `Authorization: Bearer <API token>`".to_owned(),
            ));
        }
    }
    let Some(cookie) = session_cookie(&parts.headers) else {
        return Ok(None);
    };
    // An expired or logged-out session is simply no session.
    let Some((user, csrf_token, cookie_hash)) = state.identity.web_session(&cookie).await? else {
        return Ok(None);
    };
    if !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        let sent = parts.headers.get(CSRF_HEADER).map(|value| value.as_bytes()).unwrap_or_default();
        if !constant_time_eq(sent, csrf_token.as_bytes()) {
            return Err(AppError::Forbidden(
                "this write is authenticated by the session cookie but lacks the session's X-CSRF-Token header"
                    .to_owned(),
            ));
        }
    }
    Ok(Some(Caller { user, via: Via::WebSession { cookie_hash, csrf_token } }))
}

/// The value of the web session cookie, if the request has one.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        identify(parts, state).await?.ok_or_else(|| {
            AppError::Unauthorized(
                "sign in first, or send an API token as `Authorization: Bearer <token>` (create one on your \
                 account page; `serve` writes the administrator's to DATA_DIR/admin-token)"
                    .to_owned(),
            )
        })
    }
}

impl OptionalFromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Option<Self>, Self::Rejection> {
        identify(parts, state).await
    }
}

/// An anonymous volunteer proving its identity with `Authorization: Volunteer <id>:<secret>`.
#[derive(Clone, Debug)]
pub struct VolunteerCaller(pub VolunteerRow);

impl FromRequestParts<AppState> for VolunteerCaller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let credential = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Volunteer "))
            .and_then(|value| value.split_once(':'))
            .map(|(id, secret)| VolunteerCredential { id: id.to_owned(), secret: secret.to_owned() });
        let Some(credential) = credential else {
            return Err(AppError::Unauthorized(
                "send the volunteer identity as `Authorization: Volunteer <id>:<secret>`".to_owned(),
            ));
        };
        match state.identity.volunteer(credential).await? {
            Some(volunteer) => Ok(VolunteerCaller(volunteer)),
            None => Err(AppError::Unauthorized("unknown volunteer identity or wrong secret".to_owned())),
        }
    }
}

/// Who watches a rewarded ad: a signed-in user (an API token, or the web session's cookie with its CSRF
/// header on writes) or an anonymous volunteer identity (`Authorization: Volunteer <id>:<secret>`).
#[derive(Clone, Debug)]
pub enum Viewer {
    User(Caller),
    Volunteer(VolunteerRow),
}

impl Viewer {
    /// The key views are bound to: `user:<id>` or `volunteer:<id>`.
    pub fn key(&self) -> String {
        match self {
            Viewer::User(caller) => caller.account(),
            Viewer::Volunteer(volunteer) => ledger::volunteer(&volunteer.id),
        }
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let volunteer =
            parts.headers.get(header::AUTHORIZATION).is_some_and(|value| value.as_bytes().starts_with(b"Volunteer "));
        if volunteer {
            let VolunteerCaller(volunteer) = VolunteerCaller::from_request_parts(parts, state).await?;
            return Ok(Viewer::Volunteer(volunteer));
        }
        match identify(parts, state).await? {
            Some(caller) => Ok(Viewer::User(caller)),
            None => Err(AppError::Unauthorized(
                "sign in, send an API token as `Authorization: Bearer <token>`, or an anonymous volunteer \
                 identity as `Authorization: Volunteer <id>:<secret>` (from POST /api/volunteers)"
                    .to_owned(),
            )),
        }
    }
}

/// The `Set-Cookie` value that starts a web session.
pub fn session_cookie_header(value: &str, config: &ServerConfig) -> String {
    let secure = if config.secure_cookies { "; Secure" } else { "" };
    format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        config.session_lifetime_ms / 1000
    )
}

/// The `Set-Cookie` value that ends one.
pub fn cleared_cookie_header(config: &ServerConfig) -> String {
    let secure = if config.secure_cookies { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
}

/// The largest JSON body of the small endpoints (sign-up, tokens, volunteers).
pub const SMALL_BODY_LIMIT: u64 = 64 * 1024;

/// Path parameters, refused with a message that names the bad part of the URL.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match <axum::extract::Path<T> as FromRequestParts<S>>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(path_refusal(&rejection, parts.uri.path())),
        }
    }
}

fn path_refusal(rejection: &PathRejection, path: &str) -> AppError {
    use axum::extract::path::ErrorKind;
    let PathRejection::FailedToDeserializePathParams(failed) = rejection else {
        return AppError::Internal(format!("path parameters of {path}: {}", rejection.body_text()));
    };
    let message = match failed.kind() {
        ErrorKind::ParseErrorAtKey { value, expected_type, .. }
        | ErrorKind::ParseErrorAtIndex { value, expected_type, .. }
        | ErrorKind::ParseError { value, expected_type } => {
            format!("{value:?} in the URL {path} is not {}", type_in_words(expected_type))
        }
        _ => format!("the URL {path} is not valid: {}", failed.body_text()),
    };
    AppError::BadRequest(message)
}

/// "a whole number from 0" for `u64`, and so on.
fn type_in_words(type_name: &str) -> String {
    match type_name {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number from 0".to_owned(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".to_owned(),
        "bool" => "true or false".to_owned(),
        other => format!("a valid {other}"),
    }
}

/// A query string, refused with a message that names the bad parameter.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match <axum::extract::Query<T> as FromRequestParts<S>>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(failed)) => {
                // serde names the parameter and the problem: "offset: invalid digit found in string".
                let detail = failed.body_text();
                let detail = detail.strip_prefix("Failed to deserialize query string: ").unwrap_or(&detail);
                Err(AppError::BadRequest(format!(
                    "the query string is not valid: {detail} (numbers are whole numbers from 0)"
                )))
            }
            Err(other) => Err(AppError::BadRequest(format!("the query string is not valid: {}", other.body_text()))),
        }
    }
}

/// A JSON request body, refused with a message that names the problem. `Content-Type: application/json`
/// is required: browsers cannot send it across origins without asking first (CORS preflight, which this
/// server never grants), so no other site can make a visitor's browser post these forms.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = AppError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(AppError::UnsupportedMediaType(
                "send the body as JSON, with Content-Type: application/json".to_owned(),
            ));
        }
        let body = read_body(request.into_body(), SMALL_BODY_LIMIT, "the request body").await?;
        serde_json::from_slice(&body)
            .map(JsonBody)
            .map_err(|error| AppError::BadRequest(format!("could not read the request: {error}")))
    }
}

/// A JSON body that may be left out: an empty body is `T::default()`; any other is read as [`JsonBody`]
/// reads it (JSON, with its content type).
#[derive(Debug)]
pub struct OptionalJsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = AppError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(request.headers());
        let body = read_body(request.into_body(), SMALL_BODY_LIMIT, "the request body").await?;
        if body.is_empty() {
            return Ok(OptionalJsonBody(T::default()));
        }
        if !json {
            return Err(AppError::UnsupportedMediaType(
                "send the body as JSON, with Content-Type: application/json".to_owned(),
            ));
        }
        serde_json::from_slice(&body)
            .map(OptionalJsonBody)
            .map_err(|error| AppError::BadRequest(format!("could not read the request: {error}")))
    }
}

fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.split(';').next().is_some_and(|media| media.trim() == "application/json"))
}

/// One sign-up or log-in attempt, taken from the client address's allowance before anything else of the
/// request is read (so a refused client costs no body read and no password hash).
#[derive(Clone, Copy, Debug)]
pub struct LoginAttempt;

impl FromRequestParts<AppState> for LoginAttempt {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        state.identity.logins.check(client_address(parts), "sign-up and log-in attempts")?;
        Ok(LoginAttempt)
    }
}

/// One registration of an anonymous volunteer identity, taken from the client address's allowance.
#[derive(Clone, Copy, Debug)]
pub struct VolunteerRegistration;

impl FromRequestParts<AppState> for VolunteerRegistration {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        state.identity.volunteer_registrations.check(client_address(parts), "volunteer identities")?;
        Ok(VolunteerRegistration)
    }
}

/// The client's address, where the server knows it (tests that call the router directly have none).
pub fn client_address(parts: &Parts) -> std::net::IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |ConnectInfo(address)| address.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, "theme=dark; dc_session=abc; other=1".parse().unwrap());
        assert_eq!(session_cookie(&headers).as_deref(), Some("abc"));
        headers.insert(header::COOKIE, "dc_sessionx=abc".parse().unwrap());
        assert_eq!(session_cookie(&headers), None);
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_by_default() {
        let config = ServerConfig::default();
        let cookie = session_cookie_header("v", &config);
        for part in ["dc_session=v", "HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
            assert!(cookie.contains(part), "{cookie}");
        }
        let plain = ServerConfig { secure_cookies: false, ..ServerConfig::default() };
        assert!(!session_cookie_header("v", &plain).contains("Secure"));
        assert!(cleared_cookie_header(&config).contains("Max-Age=0"));
    }
}
