//! The server's memory for large answers (pages of results), shared by all requests: an answer takes room
//! before it is built and gives it back only once it has been sent, so that many clients that read
//! slowly, or never, wait for room instead of exhausting memory.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::AppError;

/// Room is counted in KiB.
const UNIT: u64 = 1024;
/// How long a request waits for room before it is told to come back later.
const WAIT_FOR_ROOM: Duration = Duration::from_secs(30);
/// The slices an answer is sent in: the next is taken only when the connection has sent the last.
const SLICE: usize = 64 * 1024;

#[derive(Debug)]
pub struct PageMemory {
    room: Arc<Semaphore>,
    total_units: u32,
}

impl PageMemory {
    pub fn new(total_bytes: u64) -> PageMemory {
        let total_units = u32::try_from(total_bytes / UNIT).unwrap_or(u32::MAX >> 3).max(1);
        PageMemory { room: Arc::new(Semaphore::new(total_units as usize)), total_units }
    }

    /// Takes room for an answer of about `bytes` (all of it, for an answer larger than the whole), or
    /// answers 503 when none frees up in time.
    pub async fn room_for(&self, bytes: u64) -> Result<Room, AppError> {
        let units = u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX).clamp(1, self.total_units);
        match tokio::time::timeout(WAIT_FOR_ROOM, self.room.clone().acquire_many_owned(units)).await {
            Ok(Ok(permit)) => Ok(Room { _permit: permit }),
            Ok(Err(_)) | Err(_) => Err(AppError::ServiceUnavailable(
                "the server is busy sending other large answers; try again in a minute".to_owned(),
            )),
        }
    }
}

/// Room taken for one answer; given back when the answer has been sent (or its connection dropped).
#[derive(Debug)]
pub struct Room {
    _permit: OwnedSemaphorePermit,
}

impl Room {
    /// A JSON answer that holds this room until its last slice is taken by the connection.
    pub fn json_body(self, json: Vec<u8>) -> Response {
        let length = json.len();
        let body = Body::new(SlicedBody { rest: Bytes::from(json), _room: self });
        let mut response = body.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        response
    }
}

struct SlicedBody {
    rest: Bytes,
    _room: Room,
}

impl http_body::Body for SlicedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _context: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.rest.is_empty() {
            return Poll::Ready(None);
        }
        let take = self.rest.len().min(SLICE);
        let slice = self.rest.split_to(take);
        Poll::Ready(Some(Ok(http_body::Frame::data(slice))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.rest.len() as u64)
    }
}
