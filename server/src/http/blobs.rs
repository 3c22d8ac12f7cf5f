//! Blobs: upload (`POST /api/blobs`), the owner's `HEAD`/`GET /api/blobs/{sha256}`, and the workers'
//! `GET /blobs/{sha256}?capability=...` while they hold a replica that needs the blob.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use distributivecom_protocol::api::{BlobInfo, ErrorBody};
use distributivecom_protocol::is_sha256_hex;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::AppState;
use super::error::{AppError, BodyReader};
use super::extract::{Caller, Path, Query};
use crate::clock::unix_ms;
use crate::format::human_bytes;
use crate::store::blobs;

/// Stores a file under its SHA-256, streamed to disk as it arrives (never held whole in memory). The
/// size must be declared with Content-Length. Uploading bytes that are already stored costs the upload
/// only: the file is kept once.
#[utoipa::path(
    post, path = "/api/blobs", tag = "blobs",
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file's bytes"),
    responses(
        (status = 201, description = "Stored (or already stored)", body = BlobInfo),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 411, description = "No Content-Length", body = ErrorBody),
        (status = 413, description = "Larger than the server's blob limit, or than the account's blob quota", body = ErrorBody),
        (status = 429, description = "The account already has 4 blob uploads in progress", body = ErrorBody),
    )
)]
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<BlobInfo>), AppError> {
    let Some(declared) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<u64>().ok())
    else {
        return Err(AppError::LengthRequired("send the blob with a Content-Length header".to_owned()));
    };
    let user = caller.user.id;
    let quota = state.config.max_blob_bytes_per_account;
    let held = state.store.read(move |connection| blobs::owned_bytes(connection, user)).await?;
    // Held until this upload is recorded or refused: concurrent uploads cannot together pass the quota,
    // and an account's uploads in progress never stage more than its quota on disk.
    let reservation = state.blob_uploads.reserve(user, held, declared, quota)?;

    let files = state.store.blob_files();
    let mut staged = Staged { path: files.staging_path(), armed: true };
    let mut file = tokio::fs::File::create(&staged.path).await.map_err(|error| internal("create", &error))?;
    let mut hasher = Sha256::new();
    let mut reader = BodyReader::new(body, declared, "the blob");
    while let Some(frame) = reader.next().await? {
        hasher.update(&frame);
        file.write_all(&frame).await.map_err(|error| internal("write", &error))?;
    }
    let received = reader.received();
    if received != declared {
        return Err(AppError::BadRequest(format!(
            "the blob ended after {received} of the {declared} bytes its Content-Length declared"
        )));
    }
    file.sync_all().await.map_err(|error| internal("write", &error))?;
    drop(file);
    let sha256 = hex::encode(hasher.finalize());

    // From here the upload is complete: it is stored or refused even if the client hangs up now, so no
    // file is left in place without its row.
    let store = state.store.clone();
    let name = sha256.clone();
    let recorded = tokio::spawn(async move {
        let writing = store.clone();
        let recorded = writing
            .transact(move |connection| {
                if blobs::owned_size(connection, user, &name)?.is_some() {
                    return Ok(Ok(()));
                }
                let held = blobs::owned_bytes(connection, user)?;
                if held.saturating_add(received) > quota {
                    // `staged` is dropped with this write, and its file with it.
                    return Ok(Err(held));
                }
                store.blob_files().adopt(&staged.path, &name)?;
                staged.disarm();
                blobs::record_upload(connection, user, &name, received, unix_ms())?;
                Ok(Ok(()))
            })
            .await?;
        // Given back once the upload's row has committed (or was refused), not before.
        drop(reservation);
        if recorded.is_ok() {
            tokio::task::spawn_blocking(move || writing.blob_files().sync_directory())
                .await
                .map_err(|error| AppError::Internal(format!("syncing the blob directory panicked: {error}")))??;
        }
        Ok::<_, AppError>(recorded)
    })
    .await
    .map_err(|error| AppError::Internal(format!("storing a blob panicked: {error}")))??;
    if let Err(held) = recorded {
        return Err(over_quota(held, received, quota));
    }
    Ok((StatusCode::CREATED, Json(BlobInfo { sha256, size: received })))
}

/// Blob uploads in progress, by account: their declared bytes count toward the account's quota, and an
/// account may run only a few at once.
#[derive(Default)]
pub struct UploadReservations {
    by_account: Mutex<HashMap<u64, Reserved>>,
}

#[derive(Clone, Copy, Default)]
struct Reserved {
    bytes: u64,
    uploads: u32,
}

/// The most blob uploads one account may have in progress at once.
pub const MAX_UPLOADS_PER_ACCOUNT: u32 = 4;

impl UploadReservations {
    /// Reserves `declared` bytes for an upload by `user`, who holds `stored` bytes of blobs already.
    fn reserve(self: &Arc<Self>, user: u64, stored: u64, declared: u64, quota: u64) -> Result<Reservation, AppError> {
        let mut by_account = self.by_account.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let reserved = by_account.entry(user).or_default();
        if reserved.uploads >= MAX_UPLOADS_PER_ACCOUNT {
            return Err(AppError::TooManyRequests {
                message: format!(
                    "this account already has {MAX_UPLOADS_PER_ACCOUNT} blob uploads in progress, the most at \
                     once; wait for one to finish"
                ),
                retry_after_secs: 1,
            });
        }
        let pending = stored.saturating_add(reserved.bytes);
        if pending.saturating_add(declared) > quota {
            if reserved.uploads == 0 {
                by_account.remove(&user);
            }
            return Err(over_quota(pending, declared, quota));
        }
        reserved.bytes += declared;
        reserved.uploads += 1;
        Ok(Reservation { reservations: Arc::clone(self), user, bytes: declared })
    }
}

/// One upload's share of [`UploadReservations`], given back when dropped.
struct Reservation {
    reservations: Arc<UploadReservations>,
    user: u64,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut by_account = self.reservations.by_account.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(reserved) = by_account.get_mut(&self.user) {
            reserved.bytes -= self.bytes;
            reserved.uploads -= 1;
            if reserved.uploads == 0 {
                by_account.remove(&self.user);
            }
        }
    }
}

fn over_quota(held: u64, adding: u64, quota: u64) -> AppError {
    AppError::PayloadTooLarge(format!(
        "this account's blobs hold {} and this one is {}: together more than the account's quota of {}",
        human_bytes(held),
        human_bytes(adding),
        human_bytes(quota)
    ))
}

fn internal(doing: &str, error: &std::io::Error) -> AppError {
    AppError::Internal(format!("could not {doing} a blob file: {error}"))
}

/// An upload's file, removed unless it was moved into place.
struct Staged {
    path: std::path::PathBuf,
    /// Whether the file is still the upload's to remove.
    armed: bool,
}

impl Staged {
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Downloads a blob the caller uploaded (`HEAD` answers its size only). Anyone else gets 404, as for a
/// blob that does not exist.
#[utoipa::path(
    get, path = "/api/blobs/{sha256}", tag = "blobs",
    params(("sha256" = String, Path, description = "Lowercase hex SHA-256 of the blob")),
    responses(
        (status = 200, description = "The blob's bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "No such blob among the caller's", body = ErrorBody),
    )
)]
pub async fn download(
    State(state): State<AppState>,
    caller: Caller,
    Path(sha256): Path<String>,
) -> Result<Response, AppError> {
    let user = caller.user.id;
    let name = sha256.clone();
    let size = if is_sha256_hex(&sha256) {
        state.store.read(move |connection| blobs::owned_size(connection, user, &name)).await?
    } else {
        None
    };
    let Some(size) = size else { return Err(AppError::NotFound(format!("no blob {sha256}"))) };
    file_response(&state, &sha256, size, "private, max-age=31536000, immutable").await
}

/// The capability a worker was sent with an assignment.
#[derive(Debug, Deserialize)]
pub struct CapabilityQuery {
    #[serde(default)]
    capability: String,
}

/// A blob for a worker that holds a replica needing it, proven by the capability sent with the replica.
/// Without a valid capability for a replica still leased, the answer is 404.
#[utoipa::path(
    get, path = "/blobs/{sha256}", tag = "blobs",
    params(
        ("sha256" = String, Path, description = "Lowercase hex SHA-256 of the blob"),
        ("capability" = String, Query, description = "The capability of the assignment that names the blob"),
    ),
    responses(
        (status = 200, description = "The blob's bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, description = "No such blob for this capability", body = ErrorBody),
    )
)]
pub async fn fetch(
    State(state): State<AppState>,
    Path(sha256): Path<String>,
    Query(query): Query<CapabilityQuery>,
) -> Result<Response, AppError> {
    let not_found = || AppError::NotFound(format!("no blob {sha256} for this capability"));
    if !is_sha256_hex(&sha256) || !state.coordinator.blob_access(&sha256, &query.capability) {
        return Err(not_found());
    }
    let name = sha256.clone();
    let size = state.store.read(move |connection| blobs::size(connection, &name)).await?;
    let Some(size) = size else { return Err(not_found()) };
    let response = file_response(&state, &sha256, size, "private, no-store").await?;
    state.coordinator.blob_served(size);
    Ok(response)
}

/// Piece size when streaming a blob from disk.
const READ_BYTES: usize = 256 * 1024;

/// Streams blob `sha256`'s file, `size` bytes, with its hash as ETag.
async fn file_response(state: &AppState, sha256: &str, size: u64, cache: &'static str) -> Result<Response, AppError> {
    let path = state.store.blob_files().path(sha256);
    let file = tokio::fs::File::open(&path).await.map_err(|error| internal("open", &error))?;
    let stream = futures_util::stream::unfold(file, |mut file| async move {
        let mut buffer = vec![0; READ_BYTES];
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(read) => {
                buffer.truncate(read);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buffer)), file))
            }
            Err(error) => Some((Err(error), file)),
        }
    });
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{sha256}\"")) {
        headers.insert(header::ETAG, etag);
    }
    Ok(response)
}
