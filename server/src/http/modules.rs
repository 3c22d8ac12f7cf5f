//! Programs: upload (`POST /api/modules`) and download by content hash (`GET /modules/{sha256}`).

use std::collections::HashMap;
use std::sync::Mutex;

use axum::Json;
use axum::body::Body;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use distributivecom_protocol::api::{ErrorBody, ModuleInfo};
use distributivecom_protocol::is_sha256_hex;
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::{AppError, read_body};
use crate::auth::Caller;
use crate::coordinator::unix_ms;

use crate::store::{NewModule, queries};

/// Recently served modules, so that a hundred workers joining at once read the database once.
pub struct ModuleCache {
    entries: Mutex<HashMap<String, Bytes>>,
    max_bytes: usize,
}

impl ModuleCache {
    pub fn new(max_bytes: usize) -> ModuleCache {
        ModuleCache { entries: Mutex::new(HashMap::new()), max_bytes }
    }

    fn get(&self, sha256: &str) -> Option<Bytes> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(sha256).cloned()
    }

    fn put(&self, sha256: String, bytes: Bytes) {
        if bytes.len() > self.max_bytes {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut total: usize = entries.values().map(Bytes::len).sum();
        // Evict arbitrary entries until the new one fits: modules are immutable, so a miss only costs a read.
        while total + bytes.len() > self.max_bytes {
            let Some(victim) = entries.keys().next().cloned() else { break };
            total -= entries.remove(&victim).map_or(0, |evicted| evicted.len());
        }
        entries.insert(sha256, bytes);
    }
}

/// Uploads a program. It must be a WASI preview 1 command module; otherwise the answer says why not.
#[utoipa::path(
    post, path = "/api/modules", tag = "modules",
    request_body(content = Vec<u8>, content_type = "application/wasm", description = "The program's bytes"),
    responses(
        (status = 201, description = "Stored (or already stored)", body = ModuleInfo),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 413, description = "Larger than the server's module limit", body = ErrorBody),
        (status = 422, description = "Not a WASI preview 1 command module; the message says why", body = ErrorBody),
    )
)]
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    body: Body,
) -> Result<(StatusCode, Json<ModuleInfo>), AppError> {
    let limit = state.coordinator.config().max_module_bytes;
    let bytes = read_body(body, limit, "the program").await?;
    // Validation parses the whole module: keep it off the async threads.
    let checked = bytes.clone();
    let (sha256, info, instrumented) = tokio::task::spawn_blocking(move || {
        let sha256 = hex::encode(Sha256::digest(&checked));
        let info = distributivecom_program::check(&checked)?;
        let instrumented = distributivecom_program::instrument::instrument(&checked)?;
        Ok::<_, distributivecom_program::ProgramError>((sha256, info, instrumented))
    })
    .await
    .map_err(|error| AppError::Internal(format!("module check panicked: {error}")))?
    .map_err(|error| AppError::Unprocessable(error.to_string()))?;
    let size = bytes.len() as u64;
    let module = NewModule {
        owner: caller.user.id,
        sha256: sha256.clone(),
        bytes,
        imports: info.imports.clone(),
        instrumented_sha256: hex::encode(Sha256::digest(&instrumented)),
        instrumented: instrumented.into(),
        created_at_ms: unix_ms(),
    };
    state.coordinator.store().put_module(module).await?;

    Ok((StatusCode::CREATED, Json(ModuleInfo { sha256, size, imports: info.imports })))
}

/// Downloads an instrumented module (what workers run) by its hash. The answer never changes, so it may
/// be cached forever. Programs as uploaded are not served.
#[utoipa::path(
    get, path = "/modules/{sha256}", tag = "modules",
    params(("sha256" = String, Path, description = "Lowercase hex SHA-256 of the instrumented module")),
    responses(
        (status = 200, description = "The module", content_type = "application/wasm", body = Vec<u8>),
        (status = 404, description = "No such module", body = ErrorBody),
    )
)]
pub async fn download(State(state): State<AppState>, Path(sha256): Path<String>) -> Result<Response, AppError> {
    if !is_sha256_hex(&sha256) {
        return Err(AppError::NotFound(format!("{sha256} is not a module hash (64 lowercase hex digits)")));
    }
    let bytes = match state.modules.get(&sha256) {
        Some(bytes) => bytes,
        None => {
            let key = sha256.clone();
            let stored =
                state.coordinator.store().read(move |connection| queries::module_bytes(connection, &key)).await?;
            let Some(stored) = stored else {
                return Err(AppError::NotFound(format!("no module {sha256}")));
            };
            let bytes = Bytes::from(stored);
            state.modules.put(sha256.clone(), bytes.clone());
            bytes
        }
    };
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/wasm"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{sha256}\"")) {
        headers.insert(header::ETAG, etag);
    }
    Ok(response)
}
