//! Wire types of Distributivecom, and the only crate that knows the wire formats.
//!
//! Two formats cross process boundaries:
//!
//! - [`worker`]: the WebSocket protocol between the coordinator and volunteers (native or browser). Every
//!   WebSocket *binary* message carries one MessagePack-encoded [`worker::WorkerMessage`] or
//!   [`worker::ServerMessage`] (see [`encode`] and [`decode`]). It is documented in `docs/protocol.md`.
//! - [`api`]: the JSON bodies of the REST API used by the CLI, the SDK and the web app.
//!
//! [`embed`] holds the bodies of site keys and the rules every end applies to what a site or a host page
//! may ask of the embedded widget.
//!
//! [`layout`] is how a chunk's result is laid out as files, shared by the CLI's `--out` directory and the
//! server's ZIP of a job's results.
//!
//! Byte strings use [`Bytes`]: raw binary in MessagePack, base64 in JSON.
//!
//! Architecture Invariant: internal state (scheduler, store) never derives `Serialize`; it converts to and
//! from these types at the edge.

pub mod api;
pub mod backoff;
mod bounded;
pub mod browser;
mod bytes;
pub mod determinism;
pub mod embed;
pub mod layout;

pub mod metering;
pub mod session;
pub mod worker;

pub use bytes::Bytes;

/// The version of the worker protocol. A worker announces it in `Hello`; the server refuses other versions.
pub const PROTOCOL_VERSION: u32 = 2;

/// The largest WebSocket message either side accepts (inputs and outputs travel inline).
pub const MAX_MESSAGE_BYTES: usize = 512 * 1024 * 1024;

/// How much a WebSocket end reads from its connection at a time. tungstenite zeroes this much of its read
/// buffer before every read, and its default of 128 KiB made that `memset` a tenth of the coordinator's
/// and native workers' async threads' time on a round of small messages; larger frames just take more
/// reads.
pub const SOCKET_READ_BUFFER_BYTES: usize = 16 * 1024;

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("malformed message: {0}")]
pub struct DecodeError(#[from] rmp_serde::decode::Error);

/// Encodes a worker-protocol message as MessagePack, with struct fields as maps keyed by name so that
/// other languages can read it without knowing the field order.
pub fn encode<T: serde::Serialize>(message: &T) -> Vec<u8> {
    // Serializing our own plain data types into a Vec cannot fail: there are no maps with non-string keys
    // and no custom serializers that error.
    rmp_serde::to_vec_named(message).expect("protocol messages always serialize")
}

/// Decodes a worker-protocol message.
pub fn decode<'a, T: serde::Deserialize<'a>>(frame: &'a [u8]) -> Result<T, DecodeError> {
    Ok(rmp_serde::from_slice(frame)?)
}

/// The lowercase hex SHA-256 of a module or blob: its identity everywhere.
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
