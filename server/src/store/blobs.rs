//! Blobs: files stored under their SHA-256 in `DATA_DIR/blobs/`, and which accounts uploaded each.
//!
//! The bytes live in files (an upload streams into `blobs/staging/` and is renamed into place once its
//! hash is known), the facts in the database. A file is renamed into place on the writer thread in the
//! same write that records its row, so no upload is refused after its file is in place. A crash or a
//! failed commit in between leaves a file without a row: the next upload of the same bytes adopts it,
//! and opening the store removes any that remain.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, OptionalExtension, params};

use distributivecom_protocol::is_sha256_hex;

use super::StoreError;

/// Where blob files live.
#[derive(Debug)]
pub struct BlobFiles {
    root: PathBuf,
    staging: PathBuf,
    next_staging: AtomicU64,
}

impl BlobFiles {
    /// Creates `data_dir/blobs/`, empties its staging directory (uploads that a crash interrupted) and
    /// removes blob files that no row names (a crash between the rename and the commit).
    pub(super) fn open(data_dir: &Path, connection: &Connection) -> Result<BlobFiles, StoreError> {
        let root = data_dir.join("blobs");
        let staging = root.join("staging");
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).map_err(|source| StoreError::DataDir { path: staging.clone(), source })?;
        let files = BlobFiles { root, staging, next_staging: AtomicU64::new(0) };
        files.remove_unrecorded(connection)?;
        Ok(files)
    }

    fn remove_unrecorded(&self, connection: &Connection) -> Result<(), StoreError> {
        let io = |source| StoreError::DataDir { path: self.root.clone(), source };
        for entry in std::fs::read_dir(&self.root).map_err(io)? {
            let entry = entry.map_err(io)?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
            if is_sha256_hex(&name) && size(connection, &name)?.is_none() {
                tracing::info!(sha256 = %name, "removing a blob file that no upload recorded");
                std::fs::remove_file(entry.path()).map_err(io)?;
            }
        }
        Ok(())
    }

    /// The file of blob `sha256` (a lowercase hex SHA-256, checked by the caller).
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.root.join(sha256)
    }

    /// A fresh file name for an upload in progress.
    pub fn staging_path(&self) -> PathBuf {
        let number = self.next_staging.fetch_add(1, Ordering::Relaxed);
        self.staging.join(format!("{}-{number}", std::process::id()))
    }

    /// Moves a complete upload, already synced to disk, into place as blob `sha256`: on the writer thread,
    /// in the write that records it. If the blob's file is already there (the same bytes, by their hash),
    /// the upload is simply dropped. Idempotent, as a write must be: the upload may be adopted already.
    pub fn adopt(&self, staged: &Path, sha256: &str) -> Result<(), StoreError> {
        let target = self.path(sha256);
        let io = |source| StoreError::DataDir { path: target.clone(), source };
        if target.exists() {
            return match std::fs::remove_file(staged) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(io(error)),
                _ => Ok(()),
            };
        }
        std::fs::rename(staged, &target).map_err(io)
    }

    /// Makes the renames into the blob directory durable.
    pub fn sync_directory(&self) -> Result<(), StoreError> {
        let io = |source| StoreError::DataDir { path: self.root.clone(), source };
        std::fs::File::open(&self.root).and_then(|directory| directory.sync_all()).map_err(io)
    }
}

/// Records that `user` holds blob `sha256` of `size` bytes.
pub fn record_upload(
    connection: &Connection,
    user: u64,
    sha256: &str,
    size: u64,
    at_ms: u64,
) -> Result<(), StoreError> {
    connection
        .prepare_cached("INSERT INTO blobs (sha256, size, created_at_ms) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING")?
        .execute(params![sha256, size as i64, at_ms as i64])?;
    connection
        .prepare_cached(
            "INSERT INTO blob_owners (user_id, sha256, created_at_ms) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        )?
        .execute(params![user as i64, sha256, at_ms as i64])?;
    Ok(())
}

/// The size of blob `sha256` if `user` uploaded it.
pub fn owned_size(connection: &Connection, user: u64, sha256: &str) -> Result<Option<u64>, StoreError> {
    let size: Option<i64> = connection
        .prepare_cached(
            "SELECT blobs.size FROM blob_owners JOIN blobs ON blobs.sha256 = blob_owners.sha256
             WHERE blob_owners.user_id = ?1 AND blob_owners.sha256 = ?2",
        )?
        .query_row(params![user as i64, sha256], |row| row.get(0))
        .optional()?;
    Ok(size.map(|size| size as u64))
}

/// The bytes of all the blobs `user` uploaded, for the account's quota.
pub fn owned_bytes(connection: &Connection, user: u64) -> Result<u64, StoreError> {
    let total: i64 = connection
        .prepare_cached(
            "SELECT COALESCE(SUM(blobs.size), 0) FROM blob_owners JOIN blobs ON blobs.sha256 = blob_owners.sha256
             WHERE blob_owners.user_id = ?1",
        )?
        .query_row(params![user as i64], |row| row.get(0))?;
    Ok(total as u64)
}

/// The size of blob `sha256`, whoever uploaded it.
pub fn size(connection: &Connection, sha256: &str) -> Result<Option<u64>, StoreError> {
    let size: Option<i64> = connection
        .prepare_cached("SELECT size FROM blobs WHERE sha256 = ?1")?
        .query_row(params![sha256], |row| row.get(0))
        .optional()?;
    Ok(size.map(|size| size as u64))
}
