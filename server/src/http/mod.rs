//! The HTTP surface: the REST API, the worker WebSocket, module downloads, the API docs, the web app and
//! the embed script's pages.
//!
//! `router` builds the whole app from its state, so tests can drive it with `oneshot` or on a real port.

mod account;
mod ads;
mod blobs;
mod community;
mod embed;
mod error;
pub mod extract;
mod frame_gate;
mod job_events;
mod jobs;
pub mod listener;
mod modules;
mod openapi;
mod page_memory;
mod results_zip;
mod sessions;
mod sites;
mod web;
mod workers;
mod zip;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

pub use error::AppError;

use crate::ads::Ads;
use crate::clock::Clock;
use crate::config::ServerConfig;
use crate::coordinator::Coordinator;
use crate::format::human_bytes;
use crate::identity::Identity;
use crate::store::Store;

/// Modules kept in memory for downloads.
const MODULE_CACHE_BYTES: usize = 512 * 1024 * 1024;
/// Memory for pages of results being built and sent, shared by all requests.
const RESULTS_MEMORY_BYTES: u64 = 256 * 1024 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<ServerConfig>,
    pub coordinator: Arc<Coordinator>,
    pub identity: Arc<Identity>,
    /// Rewarded ads, on the system clock unless a test gave it another ([`AppState::with_clock`]).
    pub ads: Arc<Ads>,
    modules: Arc<modules::ModuleCache>,
    uploads: Arc<modules::Uploads>,
    blob_uploads: Arc<blobs::UploadReservations>,
    results_memory: Arc<page_memory::PageMemory>,
    event_streams: Arc<job_events::EventStreams>,
    history: Arc<community::HistoryCache>,
}

impl AppState {
    pub fn new(store: Store, config: Arc<ServerConfig>, coordinator: Arc<Coordinator>) -> AppState {
        let identity = Arc::new(Identity::new(store.clone(), &config));
        let ads = Arc::new(Ads::new(store.clone(), config.clone(), Clock::system()));
        AppState {
            store,
            config,
            coordinator,
            identity,
            ads,
            modules: Arc::new(modules::ModuleCache::new(MODULE_CACHE_BYTES)),
            uploads: Arc::new(modules::Uploads::new()),
            blob_uploads: Arc::default(),
            results_memory: Arc::new(page_memory::PageMemory::new(RESULTS_MEMORY_BYTES)),
            event_streams: Arc::default(),
            history: Arc::default(),
        }
    }

    /// The same state with rewarded ads on `clock` (tests move a manual one instead of sleeping).
    pub fn with_clock(mut self, clock: Clock) -> AppState {
        self.ads = Arc::new(Ads::new(self.store.clone(), self.config.clone(), clock));
        self
    }
}

/// The whole HTTP app. Serve it with [`listener::serve`] (or with `ConnectInfo<SocketAddr>` in each
/// request's extensions) so that rate limits see client addresses.
pub fn router(state: AppState) -> Router {
    // Declared sizes are checked before any handler runs; handlers also enforce them while reading (see
    // `error::read_body`).
    Router::new()
        .route("/api/health", get(|| async { "ok" }))
        .route("/api/auth/signup", post(account::signup))
        .route("/api/auth/login", post(account::login))
        .route("/api/auth/logout", post(account::logout))
        .route("/api/auth/session", get(account::session))
        .route("/api/account", get(account::account))
        .route("/api/account/ledger", get(account::ledger))
        .route("/api/account/volunteering", get(account::volunteering))
        .route("/api/account/tokens", get(account::tokens).post(account::create_token))
        .route("/api/account/tokens/{id}", delete(account::revoke_token))
        .route("/api/sites", get(sites::list).post(sites::create))
        .route("/api/sites/{key}", delete(sites::revoke))
        .route("/api/sites/{key}/volunteers", post(sites::register_volunteer))
        .route("/api/embed/share-codes", post(sites::share_code))
        .route("/api/embed/shares", post(sites::take_share))
        .route("/api/embed/shares/preview", post(sites::preview_share))
        .route("/embed.js", get(embed::script))
        .route("/embed/frame", get(embed::frame))
        .route("/api/volunteers", post(account::register_volunteer))
        .route("/api/volunteers/me", get(account::volunteer_info))
        .route("/api/pricing", get(account::pricing))
        .route("/api/limits", get(account::limits))
        .route("/api/modules", post(modules::upload).layer(DefaultBodyLimit::disable()).get(modules::list))
        .route("/modules/{sha256}", get(modules::download))
        .route("/api/blobs", post(blobs::upload).layer(DefaultBodyLimit::disable()))
        .route("/api/blobs/{sha256}", get(blobs::download))
        .route("/blobs/{sha256}", get(blobs::fetch))
        .route("/api/jobs", post(jobs::submit).layer(DefaultBodyLimit::disable()).get(jobs::list))
        .route("/api/jobs/{id}", get(jobs::status))
        .route("/api/jobs/{id}/results", get(jobs::results))
        .route("/api/jobs/{id}/results.zip", get(results_zip::results_zip))
        .route("/api/jobs/{id}/events", get(job_events::events))
        .route("/api/jobs/{id}/cancel", post(jobs::cancel))
        .route("/api/sessions", post(sessions::open).layer(DefaultBodyLimit::disable()))
        .route("/api/sessions/{id}", get(sessions::status).delete(sessions::close))
        .route("/api/sessions/{id}/ws", get(sessions::socket))
        .route("/api/sessions/{id}/rounds", get(sessions::rounds))
        .route("/api/campaigns", post(ads::create).layer(DefaultBodyLimit::disable()).get(ads::list))
        .route("/api/campaigns/{id}/approve", post(ads::approve))
        .route("/api/campaigns/{id}/end", post(ads::end))
        .route("/api/campaigns/{id}/creative", get(ads::creative))
        .route("/api/ad-views", post(ads::start_view))
        .route("/api/ad-views/{token}/complete", post(ads::complete_view))
        .route("/api/stats", get(workers::stats))
        .route("/api/stats/history", get(community::history))
        .route("/api/workers/ws", get(workers::socket))
        .merge(SwaggerUi::new("/api/docs").url("/api/openapi.json", openapi::ApiDoc::openapi()))
        .merge(web::routes())
        .fallback(web::not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), refuse_undeclared_or_oversized_bodies))
        .layer(middleware::map_response(errors_as_json))
        .with_state(state)
}

/// The most a request to `path` may carry, and what to call it in a refusal.
fn body_limit(config: &crate::config::ServerConfig, path: &str) -> (u64, &'static str) {
    match path {
        "/api/modules" => (config.max_module_bytes, "the program"),
        "/api/jobs" => (config.max_job_request_bytes, "the job request"),
        "/api/sessions" => (config.max_job_request_bytes, "the session request"),
        "/api/blobs" => (config.max_blob_bytes, "the blob"),
        "/api/campaigns" => (crate::ads::max_request_bytes(config), "the campaign request"),
        _ => (extract::SMALL_BODY_LIMIT, "the request body"),
    }
}

/// Answers at once, from the headers alone, a request whose body is larger than its endpoint takes
/// (413) or whose size is not declared (411: a chunked body could announce any size and then send
/// nothing, holding a handler forever). The connection is closed after the answer: its body is not read.
async fn refuse_undeclared_or_oversized_bodies(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let (limit, what) = body_limit(&state.config, request.uri().path());
    let headers = request.headers();
    let refusal = if headers.contains_key(header::TRANSFER_ENCODING) {
        Some(AppError::LengthRequired(
            "send the body with a Content-Length header; chunked uploads are not accepted".to_owned(),
        ))
    } else {
        match headers
            .get(header::CONTENT_LENGTH)
            .map(|value| value.to_str().ok().and_then(|text| text.parse::<u64>().ok()))
        {
            None => None,
            Some(None) => Some(AppError::BadRequest("Content-Length must be a whole number of bytes".to_owned())),
            Some(Some(declared)) if declared > limit => {
                Some(AppError::PayloadTooLarge(format!("{what} is larger than the limit of {}", human_bytes(limit))))
            }
            Some(Some(_)) => None,
        }
    };
    match refusal {
        None => next.run(request).await,
        Some(refusal) => {
            let mut response = refusal.into_response();
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

async fn method_not_allowed(method: Method, uri: Uri) -> AppError {
    AppError::MethodNotAllowed(format!("{} does not take {method}; the Allow header lists what it takes", uri.path()))
}

/// Every error answer is JSON, `{"error": "..."}`, whoever produced it: the handlers' `AppError`s already
/// are, and this turns any other (a rejection of the framework's, a layer's) into the same shape.
async fn errors_as_json(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(bytes) if !bytes.is_empty() => String::from_utf8_lossy(&bytes).trim().to_owned(),
        _ => status.canonical_reason().unwrap_or("error").to_owned(),
    };
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    let json = axum::Json(distributivecom_protocol::api::ErrorBody { error: text }).into_response();
    let (json_parts, json_body) = json.into_parts();
    parts.headers.extend(json_parts.headers);
    Response::from_parts(parts, json_body)
}
