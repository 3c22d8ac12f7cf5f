//! The web app: its pages (`/`, `/donate`, `/signup`, `/login`, `/account`, `/submit`, `/jobs`, `/jobs/{id}`, `/stats`, `/sessions/{id}`, `/share`, all one Leptos app) and
//! assets (`/assets/...`, the embed widget's included), embedded in the binary from `target/web/dist`
//! (built by `cargo xtask build`), and the JSON 404 for unknown paths.

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tower_http::compression::CompressionLayer;

use super::AppState;
use super::error::AppError;
use super::extract::Path;

/// The built web app. A binary built without it (plain `cargo build`) serves [`NOT_BUILT`] instead.
#[derive(rust_embed::Embed)]
#[folder = "../target/web/dist/"]
#[allow_missing = true]
struct WebApp;

const NOT_BUILT: &str = "<!doctype html><title>Distributivecom</title><h1>Distributivecom</h1>\
<p>This binary was built without its web app. Build it with <code>cargo xtask build</code> (or run \
<code>cargo xtask serve</code>). The REST API is at <a href=\"/api/docs/\">/api/docs</a>.</p>";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(page))
        .route("/donate", get(page))
        .route("/signup", get(page))
        .route("/login", get(page))
        .route("/account", get(page))
        .route("/submit", get(page))
        .route("/jobs", get(page))
        .route("/jobs/{id}", get(page))
        .route("/stats", get(page))
        .route("/sessions/{id}", get(page))
        .route("/share", get(page))
        .route("/assets/{*path}", get(asset))
        .layer(CompressionLayer::new())
}

/// A page of the app. No other site may frame it (clickjacking): only the embed widget is meant to be
/// framed, and it is served apart (`embed.rs`).
async fn page() -> Response {
    let mut response = match WebApp::get("index.html") {
        Some(file) => Html(file.data).into_response(),
        None => Html(NOT_BUILT).into_response(),
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("frame-ancestors 'none'"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve_asset(&path, &headers)
}

/// Answers a file of the built app's `assets/`, revalidated by ETag (a 404 if the build has none).
pub(super) fn serve_asset(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = WebApp::get(&format!("assets/{path}")) else {
        return AppError::NotFound(format!("no asset {path}")).into_response();
    };
    let etag = format!("\"{}\"", hex::encode(file.metadata.sha256_hash()));
    let content_type = match path.rsplit_once('.').map(|(_, extension)| extension) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("css") => "text/css; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        _ => "application/octet-stream",
    };
    // The files keep their names across builds, so browsers revalidate them (cheaply, by ETag).
    let mut response = if headers.get(header::IF_NONE_MATCH).is_some_and(|value| value.as_bytes() == etag.as_bytes()) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        file.data.into_owned().into_response()
    };
    let response_headers = response.headers_mut();
    response_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        response_headers.insert(header::ETAG, etag);
    }
    response
}

pub async fn not_found(uri: Uri) -> Response {
    AppError::NotFound(format!("nothing at {}", uri.path())).into_response()
}
