//! The HTTP surface: the REST API, the worker WebSocket, module downloads, the API docs and the web app.
//!
//! `router` builds the whole app from its state, so tests can drive it with `oneshot` or on a real port.

mod account;
mod error;
mod jobs;
mod modules;
mod openapi;
mod web;
mod workers;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

pub use error::{AppError, human_bytes};

use crate::auth::Auth;
use crate::coordinator::Coordinator;

/// Modules kept in memory for downloads.
const MODULE_CACHE_BYTES: usize = 512 * 1024 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub coordinator: Arc<Coordinator>,
    pub auth: Arc<Auth>,
    modules: Arc<modules::ModuleCache>,
}

impl AppState {
    pub fn new(coordinator: Arc<Coordinator>) -> AppState {
        let auth = Arc::new(Auth::new(coordinator.config()));
        AppState { coordinator, auth, modules: Arc::new(modules::ModuleCache::new(MODULE_CACHE_BYTES)) }
    }
}

/// The whole HTTP app. Serve it with `into_make_service_with_connect_info::<SocketAddr>()` so that rate
/// limits see client addresses.
pub fn router(state: AppState) -> Router {
    // The upload handlers enforce their own limits while reading (see `error::read_body`).
    Router::new()
        .route("/api/health", get(|| async { "ok" }))
        .route("/api/auth/signup", post(account::signup))
        .route("/api/auth/login", post(account::login))
        .route("/api/auth/logout", post(account::logout))
        .route("/api/auth/session", get(account::session))
        .route("/api/account", get(account::account))
        .route("/api/account/ledger", get(account::ledger))
        .route("/api/account/tokens", get(account::tokens).post(account::create_token))
        .route("/api/account/tokens/{id}", delete(account::revoke_token))
        .route("/api/volunteers", post(account::register_volunteer))
        .route("/api/volunteers/me", get(account::volunteer_info))
        .route("/api/pricing", get(account::pricing))
        .route("/api/modules", post(modules::upload).layer(DefaultBodyLimit::disable()))
        .route("/modules/{sha256}", get(modules::download))
        .route("/api/jobs", post(jobs::submit).layer(DefaultBodyLimit::disable()).get(jobs::list))
        .route("/api/jobs/{id}", get(jobs::status))
        .route("/api/jobs/{id}/results", get(jobs::results))
        .route("/api/jobs/{id}/cancel", post(jobs::cancel))
        .route("/api/stats", get(workers::stats))
        .route("/api/workers/ws", get(workers::socket))
        .merge(SwaggerUi::new("/api/docs").url("/api/openapi.json", openapi::ApiDoc::openapi()))
        .merge(web::routes())
        .fallback(web::not_found)
        .with_state(state)
}
