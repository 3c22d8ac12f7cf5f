//! The web app's pages and the JSON 404 for unknown API paths.

use axum::Router;
use axum::http::Uri;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use super::error::AppError;

const INDEX_HTML: &str = include_str!("../../../static/index.html");

pub fn routes() -> Router<AppState> {
    Router::new().route("/", get(|| async { Html(INDEX_HTML) }))
}

pub async fn not_found(uri: Uri) -> Response {
    AppError::NotFound(format!("nothing at {}", uri.path())).into_response()
}
