//! What the donate page, the browser volunteer's courier worker and its executor workers say to each
//! other with `postMessage`.
//!
//! Every message is a `Uint8Array` holding MessagePack (the same encoding as the worker protocol), so the
//! page (Leptos, Rust) and both worker kinds (Rust) share these types and nothing is hand-written in JS.

use crate::worker::{Assignment, Credential, ReplicaReport};
use serde::{Deserialize, Serialize};

/// What the volunteer should do; chosen by the person on the donate page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Executor workers: chunks run at once.
    pub threads: u32,
    /// Share of the time the executors compute, from 10 to 100: after a chunk that took `t`, an executor
    /// rests `t × (100 − p) / p`.
    pub throttle_percent: u32,
}

impl Settings {
    pub const MIN_THROTTLE: u32 = 10;
    pub const MAX_THREADS: u32 = 64;

    /// The settings with every value within bounds.
    pub fn clamped(self) -> Settings {
        Settings {
            threads: self.threads.clamp(1, Self::MAX_THREADS),
            throttle_percent: self.throttle_percent.clamp(Self::MIN_THROTTLE, 100),
        }
    }

    /// `navigator.hardwareConcurrency - 1` threads (at least 1) at 50%.
    pub fn default_for(cores: u32) -> Settings {
        Settings { threads: cores.saturating_sub(1).max(1), throttle_percent: 50 }
    }
}

/// From the page to the courier worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PageCommand {
    /// Connect to `server` (an `http(s)://` origin) and start computing, volunteering as `credential`
    /// (the browser's anonymous volunteer identity).
    Start {
        server: String,
        settings: Settings,
        credential: Credential,
    },
    Settings(Settings),
    /// Finish what is running, hand queued chunks back, take no new ones.
    Pause,
    Resume,
    /// Disconnect and stop every executor at once (the server requeues what was running).
    Stop,
}

/// The connection as the donate page shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConnectionState {
    #[default]
    Stopped,
    Connecting,
    Connected,
    /// Lost; trying again after this many milliseconds.
    Reconnecting {
        retry_in_ms: u64,
    },
}

/// Live statistics for the donate page.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub connection: ConnectionState,
    pub paused: bool,
    pub threads: u32,
    /// Chunks finished and reported (successfully or not).
    pub chunks_done: u64,
    pub chunks_failed: u64,
    /// Time the executors spent computing.
    pub compute_ms: u64,
    /// Work units of the reported chunks.
    pub work_units: u64,
    /// The job of the chunk that started last.
    pub current_job: Option<String>,
    pub running: u32,
    pub queued: u32,
    /// Blobs (input files fetched by hash) this browser keeps for later chunks, and their bytes.
    #[serde(default)]
    pub cached_blobs: u32,
    #[serde(default)]
    pub cached_bytes: u64,
}

/// From the courier worker to the page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CourierEvent {
    Stats(Stats),
    /// Something the person should know (for example the server refused the connection).
    Notice(String),
}

/// From the courier worker to an executor worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ExecutorCommand {
    /// Run this replica; fetch its module from `server` if it is not cached.
    Run { server: String, assignment: Box<Assignment> },
}

/// From an executor worker to the courier worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ExecutorEvent {
    /// The executor's wasm is loaded; it can take work.
    Ready,
    /// The run of this replica begins only now, because its module had to be fetched or compiled first:
    /// its time limit starts now. (Otherwise a replica starts when it reaches the front of the
    /// executor's queue.)
    Started {
        replica: u64,
    },
    Finished(Box<ReplicaReport>),
    /// The browser's blob cache (shared by every executor of the origin) holds `added` (hash and size)
    /// and no longer holds `evicted`. Each executor reports what it finds there when it starts, and what
    /// it adds and evicts.
    Cached {
        added: Vec<(String, u64)>,
        evicted: Vec<String>,
    },
}
