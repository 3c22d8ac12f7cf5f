//! The error type of HTTP handlers: a status and a message for people, as `{"error": "..."}`.
//!
//! Bad input gets a 4xx whose message says what is wrong. Internal failures get a 500 with a generic
//! message; the detail goes to the server log, never to the client.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};

use axum::response::{IntoResponse, Response};
use distributivecom_protocol::api::ErrorBody;

use crate::format::human_bytes;
use crate::identity::RateLimited;
use crate::store::StoreError;

#[derive(Debug)]
pub enum AppError {
    BadRequest(String),
    /// No credentials, or credentials that are not valid (401).
    Unauthorized(String),
    /// The job's owner cannot pay for it (402).
    PaymentRequired(String),
    /// Valid credentials that may not do this (403), for example a cookie write without its CSRF token.
    Forbidden(String),
    NotFound(String),
    /// The endpoint does not take this method (405).
    MethodNotAllowed(String),
    /// The body stopped arriving (408).
    RequestTimeout(String),
    /// The body's size was not declared with Content-Length (411).
    LengthRequired(String),
    /// The name is taken, the campaign is not in a state that allows it, the token was used (409).
    Conflict(String),
    /// It existed and is no more: an expired ad view, a campaign that ended (410).
    Gone(String),
    /// Asked before the server's clock allows it: an ad view completed before its minimum view time
    /// (425, with `Retry-After`).
    TooEarly {
        message: String,
        retry_after_secs: u64,
    },
    PayloadTooLarge(String),
    /// The body is not in the format the endpoint takes (415).
    UnsupportedMediaType(String),
    /// Well-formed input that cannot be accepted (an invalid program, an unknown module).
    Unprocessable(String),
    /// The server cannot take this now; try again later (503).
    ServiceUnavailable(String),
    TooManyRequests {
        message: String,
        retry_after_secs: u64,
    },
    Internal(String),
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::PaymentRequired(_) => StatusCode::PAYMENT_REQUIRED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            AppError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            AppError::LengthRequired(_) => StatusCode::LENGTH_REQUIRED,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::Gone(_) => StatusCode::GONE,
            AppError::TooEarly { .. } => StatusCode::TOO_EARLY,
            AppError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::ServiceUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut headers = HeaderMap::new();
        let message = match self {
            AppError::Internal(detail) => {
                tracing::error!(%detail, "internal error while handling a request");
                "internal server error; the details are in the server's log".to_owned()
            }
            AppError::Unauthorized(message) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                message
            }
            AppError::TooManyRequests { message, retry_after_secs }
            | AppError::TooEarly { message, retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
                message
            }
            AppError::BadRequest(message)
            | AppError::PaymentRequired(message)
            | AppError::Forbidden(message)
            | AppError::NotFound(message)
            | AppError::MethodNotAllowed(message)
            | AppError::RequestTimeout(message)
            | AppError::LengthRequired(message)
            | AppError::Conflict(message)
            | AppError::Gone(message)
            | AppError::PayloadTooLarge(message)
            | AppError::UnsupportedMediaType(message)
            | AppError::Unprocessable(message)
            | AppError::ServiceUnavailable(message) => message,
        };
        (status, headers, Json(ErrorBody { error: message })).into_response()
    }
}

impl From<RateLimited> for AppError {
    fn from(limited: RateLimited) -> Self {
        AppError::TooManyRequests { message: limited.message, retry_after_secs: limited.retry_after_secs }
    }
}

impl From<StoreError> for AppError {
    fn from(error: StoreError) -> Self {
        AppError::Internal(error.to_string())
    }
}

/// How long a body may pause before the request is given up: a client that declared a size and stopped
/// sending must not hold a handler forever.
const BODY_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads a request body of at most `limit` bytes. A larger body gets a 413 that names `what` and the
/// limit (declared sizes were refused before the handler ran; this guards the bytes that arrive), and a
/// body that pauses longer than [`BODY_IDLE_TIMEOUT`] gets a 408.
pub async fn read_body(body: axum::body::Body, limit: u64, what: &str) -> Result<bytes::Bytes, AppError> {
    let mut reader = BodyReader::new(body, limit, what);
    let mut collected = bytes::BytesMut::new();
    while let Some(frame) = reader.next().await? {
        collected.extend_from_slice(&frame);
    }
    Ok(collected.freeze())
}

/// A request body read piece by piece as it arrives, under the rules of [`read_body`].
pub struct BodyReader<'a> {
    stream: axum::body::BodyDataStream,
    limit: u64,
    what: &'a str,
    received: u64,
}

impl<'a> BodyReader<'a> {
    pub fn new(body: axum::body::Body, limit: u64, what: &'a str) -> BodyReader<'a> {
        BodyReader { stream: body.into_data_stream(), limit, what, received: 0 }
    }

    /// The bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The next piece, or `None` at the end of the body.
    pub async fn next(&mut self) -> Result<Option<bytes::Bytes>, AppError> {
        use futures_util::StreamExt;
        let what = self.what;
        let frame = match tokio::time::timeout(BODY_IDLE_TIMEOUT, self.stream.next()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(None),
            Err(_) => {
                return Err(AppError::RequestTimeout(format!(
                    "{what} stopped arriving: nothing came for {} seconds",
                    BODY_IDLE_TIMEOUT.as_secs()
                )));
            }
        };
        let frame = frame.map_err(|error| AppError::BadRequest(format!("could not read {what}: {error}")))?;
        self.received = self.received.saturating_add(frame.len() as u64);
        if self.received > self.limit {
            return Err(AppError::PayloadTooLarge(format!(
                "{what} is larger than the limit of {}",
                human_bytes(self.limit)
            )));
        }
        Ok(Some(frame))
    }
}

impl From<crate::coordinator::Refusal> for AppError {
    fn from(refusal: crate::coordinator::Refusal) -> AppError {
        use crate::coordinator::Refusal;
        match refusal {
            Refusal::Invalid(message) => AppError::BadRequest(message),
            Refusal::UnknownModule(message) | Refusal::UnknownBlob(message) => AppError::Unprocessable(message),
            Refusal::InsufficientCredits(message) => AppError::PaymentRequired(message),
            Refusal::TooMuchRunning(message) => AppError::TooManyRequests { message, retry_after_secs: 10 },
            Refusal::Round(message) => AppError::Conflict(message),
            Refusal::UnknownSession(message) => AppError::NotFound(message),
            Refusal::Store(error) => error.into(),
        }
    }
}

impl From<crate::ads::AdRefusal> for AppError {
    fn from(refusal: crate::ads::AdRefusal) -> AppError {
        use crate::ads::AdRefusal;
        match refusal {
            AdRefusal::Invalid(message) => AppError::BadRequest(message),
            AdRefusal::TooLarge(message) => AppError::PayloadTooLarge(message),
            AdRefusal::Unprocessable(message) => AppError::Unprocessable(message),
            AdRefusal::InsufficientCredits(message) => AppError::PaymentRequired(message),
            AdRefusal::Forbidden(message) => AppError::Forbidden(message),
            AdRefusal::NotFound(message) => AppError::NotFound(message),
            AdRefusal::Conflict(message) => AppError::Conflict(message),
            AdRefusal::Gone(message) => AppError::Gone(message),
            AdRefusal::TooEarly { message, remaining_ms } => {
                AppError::TooEarly { message, retry_after_secs: remaining_ms.div_ceil(1000).max(1) }
            }
            AdRefusal::TooMany { message, retry_after_secs } => AppError::TooManyRequests { message, retry_after_secs },
            AdRefusal::Store(error) => error.into(),
        }
    }
}
