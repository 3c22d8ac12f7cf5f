//! The browser volunteer. Each tab runs one *courier* Web Worker (the tab's WebSocket to the
//! coordinator server, leases, heartbeats, supervision, throttling) and one *executor* Web Worker per
//! thread (fetch, cache and compile modules; run replicas over the shared WASI implementation).
//!
//! - [`messages`]: what the page, the courier and the executors say to each other (they live in
//!   `distributivecom-protocol` so that the page can use them without linking the volunteer);
//! - [`volunteer`]: the courier as an IO-free state machine (tested on the host);
//! - [`recent`]: the blobs an executor used last, kept in its memory;
//! - [`bridge`]: page commands and courier events for the embed widget's plain JavaScript
//!   (`encode_start`, `encode_command`, `decode_courier_event`);
//! - `courier` and `executor` (wasm32 only): the glue to `web-sys`, with the entry points
//!   `start_courier` and `start_executor` called by `volunteer-worker.js`.
//!
//! Architecture Invariant: executors run programs only through `distributivecom-wasi`, the same WASI
//! implementation as the native worker, so a chunk gives the same bytes in a browser and natively.

pub use distributivecom_protocol::browser as messages;
pub mod bridge;
pub mod recent;
pub mod traps;

pub mod volunteer;

#[cfg(target_arch = "wasm32")]
mod courier;
#[cfg(target_arch = "wasm32")]
pub mod executor;
#[cfg(target_arch = "wasm32")]
mod js_memory;
