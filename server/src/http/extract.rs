//! The extractors handlers use for what the request carries: path parameters, query strings, JSON bodies
//! and the client's address. Every refusal is an [`AppError`], so it reaches the client as
//! `{"error": "..."}` with a message a person can act on, never as the framework's plain text.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::{AppError, read_body};

/// The largest JSON body of the small endpoints (sign-up, tokens, volunteers).
pub const SMALL_BODY_LIMIT: u64 = 64 * 1024;

/// Path parameters, refused with a message that names the bad part of the URL.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
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
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
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

fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.split(';').next().is_some_and(|media| media.trim() == "application/json"))
}

/// The client's address, for rate limits.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddress(pub std::net::IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddress(client_address(parts)))
    }
}

/// The client's address, where the server knows it (tests that call the router directly have none).
pub fn client_address(parts: &Parts) -> std::net::IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |ConnectInfo(address)| address.ip())
}
