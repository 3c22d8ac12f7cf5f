//! `GET /api/jobs/{id}/results.zip`: a job's results as one ZIP archive in the layout of the CLI's `--out`
//! directory (`distributivecom_protocol::layout`), streamed as the results are read.
//!
//! The archive is a snapshot: the results that completed before the request, in completion order. They
//! are read a page at a time within the server's page memory, their files written as stored entries,
//! and then read again, in the same order, for the central directory (see `zip.rs`): memory stays at a
//! page and a few slices whatever the job's size, at the price of reading the results twice.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use distributivecom_protocol::api::ErrorBody;
use distributivecom_protocol::layout::result_files;
use tokio::sync::mpsc;

use super::AppState;
use super::error::AppError;
use super::extract::{Caller, Path};
use super::jobs::no_job;
use super::page_memory::PageMemory;
use super::zip::{DosTime, MAX_NAME_BYTES, ZipError, ZipStream};
use crate::store::{Store, StoreError, queries};

/// The pieces the archive is sent in.
const SLICE: usize = 64 * 1024;
/// Pieces made but not yet taken by the connection: a slow reader holds at most this many.
const PIECES_AHEAD: usize = 4;
/// A page of results read at once: at most this many, and as many as fit this many stored bytes (but
/// always one).
const PAGE_RESULTS: u32 = 1000;
const PAGE_BYTES: u64 = 16 * 1024 * 1024;

/// The job's results as a ZIP archive (stored, not compressed), in the layout of the CLI's `--out`
/// directory: `<index>/stdout`, `<index>/stderr`, `<index>/exit_code` (if it exited), `<index>/status` and
/// `<index>/files/<name>`. A running job's archive holds the results completed when it was asked for.
#[utoipa::path(
    get, path = "/api/jobs/{id}/results.zip", tag = "jobs",
    params(("id" = u64, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The archive, streamed", content_type = "application/zip", body = Vec<u8>),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "The caller has no such job", body = ErrorBody),
    )
)]
pub async fn results_zip(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<u64>,
) -> Result<Response, AppError> {
    let owner = caller.user.id;
    let snapshot = state
        .store
        .read(move |connection| {
            let Some(job) = queries::job(connection, id)?.filter(|job| job.owner == Some(owner)) else {
                return Ok(None);
            };
            let counts = queries::job_counts(connection, id)?;
            Ok(Some((job.created_at_ms, u64::from(counts.succeeded) + u64::from(counts.failed))))
        })
        .await?;
    let Some((created_at_ms, completed)) = snapshot else {
        return Err(no_job(id));
    };
    let (sender, receiver) = mpsc::channel(PIECES_AHEAD);
    let archive = Archive {
        store: state.store.clone(),
        memory: state.results_memory.clone(),
        job: id,
        completed,
        zip: ZipStream::new(DosTime::from_unix_ms(created_at_ms)),
        outbox: Outbox { sender, buffer: Vec::with_capacity(SLICE) },
    };
    tokio::spawn(archive.write());
    let pieces = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|piece| (piece, receiver))
    });
    let mut response = Body::from_stream(pieces).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/zip"));
    let disposition = format!("attachment; filename=\"job-{id}-results.zip\"");
    let disposition =
        HeaderValue::from_str(&disposition).map_err(|error| AppError::Internal(format!("bad header: {error}")))?;
    headers.insert(header::CONTENT_DISPOSITION, disposition);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Why writing the archive stopped early.
#[derive(Debug, thiserror::Error)]
enum Stop {
    #[error("the client went away")]
    Closed,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Zip(#[from] ZipError),
    #[error("no page memory: {0:?}")]
    Busy(AppError),
}

/// What the connection has not taken yet, in pieces of [`SLICE`] bytes.
struct Outbox {
    sender: mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
    buffer: Vec<u8>,
}

impl Outbox {
    async fn write(&mut self, mut bytes: &[u8]) -> Result<(), Stop> {
        while !bytes.is_empty() {
            let take = (SLICE - self.buffer.len()).min(bytes.len());
            self.buffer.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.buffer.len() == SLICE {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), Stop> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let piece = std::mem::replace(&mut self.buffer, Vec::with_capacity(SLICE));
        self.sender.send(Ok(piece.into())).await.map_err(|_| Stop::Closed)
    }
}

/// The archive of one request, written by its own task into the response's pieces.
struct Archive {
    store: Store,
    memory: std::sync::Arc<PageMemory>,
    job: u64,
    /// The results in the snapshot: completion places 1 to `completed`.
    completed: u64,
    zip: ZipStream,
    outbox: Outbox,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    Files,
    Directory,
}

impl Archive {
    async fn write(mut self) {
        let job = self.job;
        match self.write_all().await {
            Ok(()) | Err(Stop::Closed) => {}
            Err(error) => {
                tracing::error!(job, %error, "could not finish a results archive");
                // The download ends in an error rather than as a ZIP that looks whole.
                let _ = self.outbox.sender.send(Err(std::io::Error::other(error.to_string()))).await;
            }
        }
    }

    async fn write_all(&mut self) -> Result<(), Stop> {
        self.pass(Pass::Files).await?;
        self.pass(Pass::Directory).await?;
        let zip = std::mem::replace(&mut self.zip, ZipStream::new(DosTime::from_unix_ms(0)));
        self.outbox.write(&zip.end()?).await?;
        self.outbox.flush().await
    }

    /// One pass over the snapshot's results in completion order, a page at a time.
    async fn pass(&mut self, pass: Pass) -> Result<(), Stop> {
        let (job, through) = (self.job, self.completed);
        let mut after = 0;
        while after < through {
            let span = self
                .store
                .read(move |connection| {
                    queries::completed_span_through(connection, job, after, through, PAGE_RESULTS, PAGE_BYTES)
                })
                .await?;
            let Some((last, bytes)) = span else { break };
            // The stored bytes, and their decoded copy while the page is written.
            let _room = self.memory.room_for(bytes.saturating_mul(2)).await.map_err(Stop::Busy)?;
            let page = self
                .store
                .read(move |connection| queries::results_completed_between(connection, job, after, last))
                .await?;
            for (_, result) in &page {
                let laid_out = result_files(result);
                for file in laid_out.files.iter().filter(|file| file.path.len() <= MAX_NAME_BYTES) {
                    match pass {
                        Pass::Files => {
                            let header = self.zip.file_header(&file.path, &file.contents)?;
                            self.outbox.write(&header).await?;
                            self.outbox.write(&file.contents).await?;
                        }
                        Pass::Directory => {
                            let record = self.zip.directory_record(&file.path, &file.contents)?;
                            self.outbox.write(&record).await?;
                        }
                    }
                }
            }
            after = last;
        }
        Ok(())
    }
}
