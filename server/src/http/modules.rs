//! Programs: upload (`POST /api/modules`), the caller's list (`GET /api/modules`) and download by content
//! hash (`GET /modules/{sha256}`).

use std::collections::HashMap;
use std::sync::Mutex;

use axum::Json;
use axum::body::Body;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use distributivecom_protocol::api::{ErrorBody, ModuleInfo, ModuleSummary, ModuleUploadQuery};
use distributivecom_protocol::is_sha256_hex;
use distributivecom_protocol::worker::ModuleRef;
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::{AppError, read_body};
use super::extract::Caller;
use super::extract::{Path, Query};
use crate::clock::unix_ms;

use crate::store::{NewModule, Store, queries};

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

/// Which programs each account uploaded, and the instrumented module each runs as: facts that never
/// change once true (uploads are never withdrawn), kept so that submitting a job does not read them from
/// the database every time.
pub struct Uploads {
    known: Mutex<HashMap<(String, u64), ModuleRef>>,
}

/// Uploads remembered at most; past that the memory starts over.
const MAX_KNOWN_UPLOADS: usize = 100_000;

impl Uploads {
    pub fn new() -> Uploads {
        Uploads { known: Mutex::new(HashMap::new()) }
    }

    /// The instrumented module of program `sha256` if `user` uploaded it.
    pub async fn run_module(&self, store: &Store, sha256: &str, user: u64) -> Result<Option<ModuleRef>, AppError> {
        let key = (sha256.to_owned(), user);
        if let Some(known) = self.known.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&key) {
            return Ok(Some(known.clone()));
        }
        let lookup = sha256.to_owned();
        let found = store.read(move |connection| queries::module_info(connection, &lookup, user)).await?;
        let Some((run_module, _imports)) = found else { return Ok(None) };
        self.remember(key, run_module.clone());
        Ok(Some(run_module))
    }

    fn remember(&self, key: (String, u64), run_module: ModuleRef) {
        let mut known = self.known.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if known.len() >= MAX_KNOWN_UPLOADS {
            known.clear();
        }
        known.insert(key, run_module);
    }
}

/// The longest name a program may be listed under.
const MAX_PROGRAM_NAME_CHARS: usize = 128;
/// The most programs `GET /api/modules` lists.
const MAX_LISTED_PROGRAMS: u32 = 100;

/// The name to list an upload under, checked: 1 to 128 characters, none of them a control character.
fn program_name(query: ModuleUploadQuery) -> Result<Option<String>, AppError> {
    let Some(name) = query.name else { return Ok(None) };
    let characters = name.chars().count();
    if characters == 0 || characters > MAX_PROGRAM_NAME_CHARS {
        return Err(AppError::BadRequest(format!(
            "a program's name has 1 to {MAX_PROGRAM_NAME_CHARS} characters; this one has {characters}"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(AppError::BadRequest(
            "a program's name must be printable: no control characters such as line breaks or tabs".to_owned(),
        ));
    }
    Ok(Some(name))
}

/// Uploads a program. It must be a WASI preview 1 command module; otherwise the answer says why not.
/// `name` (such as its file name) lists it in `GET /api/modules`.
#[utoipa::path(
    post, path = "/api/modules", tag = "modules",
    params(ModuleUploadQuery),
    request_body(content = Vec<u8>, content_type = "application/wasm", description = "The program's bytes"),
    responses(
        (status = 201, description = "Stored (or already stored)", body = ModuleInfo),
        (status = 400, description = "The name is empty, longer than 128 characters or not printable", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 413, description = "Larger than the server's module limit", body = ErrorBody),
        (status = 422, description = "Not a WASI preview 1 command module; the message says why", body = ErrorBody),
    )
)]
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ModuleUploadQuery>,
    body: Body,
) -> Result<(StatusCode, Json<ModuleInfo>), AppError> {
    // The name is checked before the body is read: a bad one costs no upload.
    let name = program_name(query)?;
    let limit = state.config.max_module_bytes;
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
    let instrumented_sha256 = hex::encode(Sha256::digest(&instrumented));
    let instrumented_size = instrumented.len() as u64;
    let module = NewModule {
        owner: caller.user.id,
        sha256: sha256.clone(),
        bytes,
        imports: info.imports.clone(),
        instrumented_sha256: instrumented_sha256.clone(),
        instrumented: instrumented.into(),
        created_at_ms: unix_ms(),
        name,
    };
    state.store.put_module(module).await?;
    let run_module = ModuleRef { sha256: instrumented_sha256.clone(), size: instrumented_size };
    state.uploads.remember((sha256.clone(), caller.user.id), run_module);

    Ok((StatusCode::CREATED, Json(ModuleInfo { sha256, size, imports: info.imports, instrumented_sha256 })))
}

/// The programs the caller uploaded, the most recently uploaded first (at most 100).
#[utoipa::path(
    get, path = "/api/modules", tag = "modules",
    responses(
        (status = 200, description = "The caller's programs", body = [ModuleSummary]),
        (status = 401, description = "Not signed in", body = ErrorBody),
    )
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<ModuleSummary>>, AppError> {
    let user = caller.user.id;
    let programs =
        state.store.read(move |connection| queries::uploaded_programs(connection, user, MAX_LISTED_PROGRAMS)).await?;
    Ok(Json(
        programs
            .into_iter()
            .map(|program| ModuleSummary {
                sha256: program.sha256,
                size: program.size,
                name: program.name,
                uploaded_at_ms: program.uploaded_at_ms,
            })
            .collect(),
    ))
}

/// Downloads a module by its hash. The instrumented module (what workers run, `instrumented_sha256` in
/// the upload's answer) is public; the program as uploaded (`sha256`) is served only to the accounts
/// that uploaded it. The answer under a hash never changes, so it may be cached forever.
#[utoipa::path(
    get, path = "/modules/{sha256}", tag = "modules",
    params(("sha256" = String, Path, description = "Lowercase hex SHA-256 of the instrumented module, or of a program the caller uploaded")),
    responses(
        (status = 200, description = "The module", content_type = "application/wasm", body = Vec<u8>),
        (status = 404, description = "No such module (or a program someone else uploaded)", body = ErrorBody),
    )
)]
pub async fn download(
    State(state): State<AppState>,
    caller: Option<Caller>,
    Path(sha256): Path<String>,
) -> Result<Response, AppError> {
    if !is_sha256_hex(&sha256) {
        return Err(AppError::NotFound(format!("{sha256} is not a module hash (64 lowercase hex digits)")));
    }
    let (bytes, public) = match state.modules.get(&sha256) {
        Some(bytes) => (bytes, true),
        None => {
            let (key, uploader) = (sha256.clone(), caller.map(|caller| caller.user.id));
            let stored = state
                .store
                .read(move |connection| match queries::module_bytes(connection, &key)? {
                    Some(instrumented) => Ok(Some((instrumented, true))),
                    None => match uploader {
                        Some(user) => {
                            Ok(queries::uploaded_program(connection, &key, user)?.map(|bytes| (bytes, false)))
                        }
                        None => Ok(None),
                    },
                })
                .await?;
            let Some((stored, public)) = stored else {
                return Err(AppError::NotFound(format!("no module {sha256}")));
            };
            let bytes = Bytes::from(stored);
            if public {
                state.modules.put(sha256.clone(), bytes.clone());
            }
            (bytes, public)
        }
    };
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/wasm"));
    let cache = if public { "public, max-age=31536000, immutable" } else { "private, max-age=31536000, immutable" };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{sha256}\"")) {
        headers.insert(header::ETAG, etag);
    }
    Ok(response)
}
