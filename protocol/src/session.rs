//! Sessions: iterative work over kept shards. The REST bodies that open and describe a session, and the
//! JSON messages of the consumer's WebSocket (`GET /api/sessions/{id}/ws`), documented in
//! `docs/protocol.md`.
//!
//! A session holds a program and its shards. Each *round* sends one broadcast, which every shard's run
//! reads on stdin; the round's results come back shard by shard as they are validated, tagged by round.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Bytes;
use crate::api::{ChunkRequest, ChunkResult, LimitsRequest, ReplicationRequest};

/// `POST /api/sessions`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    /// The SHA-256 of a module uploaded with `POST /api/modules`.
    pub module: String,
    /// A name for people; defaults to `session-<id>`.
    #[serde(default)]
    pub name: Option<String>,
    /// `argv[0]` of every run; defaults to `program.wasm`.
    #[serde(default)]
    pub program_name: Option<String>,
    /// The shards: each one run of every round, with its arguments and files (inline or blobs). Their
    /// stdin must be empty: each round's broadcast is the stdin of every run.
    pub shards: Vec<ChunkRequest>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Limits of every run, as for jobs.
    #[serde(default)]
    pub limits: LimitsRequest,
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// Escrowed at open; each round's validated replicas are paid from it and the rest is refunded when
    /// the session closes. Required.
    pub budget_millicredits: i64,
    /// As for jobs; default 2 replicas, quorum 2.
    #[serde(default)]
    pub replication: Option<ReplicationRequest>,
    /// Whether a round's slow shards get backup replicas on other volunteers (default: yes).
    #[serde(default)]
    pub backups: Option<bool>,
}

/// Answer to `POST /api/sessions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionCreated {
    pub id: u64,
    pub shards: u32,
    /// What was escrowed.
    pub budget_millicredits: i64,
    /// The most one round can cost (every replica at its work limit).
    pub max_round_cost_millicredits: i64,
}

/// `GET /api/sessions/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionStatus {
    pub id: u64,
    pub name: String,
    pub module: String,
    pub shards: u32,
    /// `open` or `closed`.
    pub state: String,
    /// Why it closed, once it has.
    pub close_reason: Option<String>,
    /// The number the next round must carry (rounds are numbered from 1).
    pub next_round: u64,
    /// Rounds still running.
    pub rounds_running: Vec<u64>,
    pub budget_millicredits: i64,
    /// Paid to volunteers and fees so far.
    pub spent_millicredits: i64,
    /// Held for rounds running and rounds to come.
    pub escrowed_millicredits: i64,
    pub created_at_ms: u64,
    pub closed_at_ms: Option<u64>,
}

/// A message from the consumer on the session's socket (a WebSocket text frame of JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SessionClientMessage {
    /// Starts round `round` (the session's `next_round`: 1, 2, ...) with `broadcast` (base64) as every
    /// run's stdin. A round may start before the previous ones finish.
    Round { round: u64, broadcast: Bytes },
    /// Attaches the consumer's own figures to a round it started (say the model's loss after it), for
    /// the session's live page: at most [`MAX_METRICS`] names of at most [`MAX_METRIC_NAME`] bytes, each
    /// with a finite number. A later note replaces an earlier one.
    Note { round: u64, metrics: BTreeMap<String, f64> },
    /// Closes the session: rounds still running are cancelled and the escrow's rest is refunded.
    Close {},
}

/// Figures one note may carry, and the longest name of one.
pub const MAX_METRICS: usize = 16;
pub const MAX_METRIC_NAME: usize = 32;

/// `GET /api/sessions/{id}/rounds?from=N&version=V&wait_ms=W`: the session and its rounds from `from`
/// on, for its live page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionRounds {
    /// Changes whenever a round starts, finishes, stops or is noted: pass it back as `version` to wait
    /// for the next change.
    pub version: u64,
    pub session: SessionStatus,
    /// Volunteers holding replicas of the session's running rounds right now.
    pub volunteers_working: u32,
    /// At most 1000, in order.
    pub rounds: Vec<RoundInfo>,
}

/// One round as the live page shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoundInfo {
    pub round: u64,
    /// The job that ran it.
    pub job: u64,
    /// `running`, `done` or `stopped`.
    pub state: String,
    pub shards_done: u32,
    pub started_at_ms: u64,
    /// When its last shard's result was stored.
    pub finished_at_ms: Option<u64>,
    pub spent_millicredits: i64,
    /// What the consumer noted about it.
    pub metrics: BTreeMap<String, f64>,
}

/// A message from the server on the session's socket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionServerMessage {
    /// First message: the session as it stands. After a reconnect, the results of rounds still
    /// running that were already validated follow at once.
    Ready { session: u64, shards: u32, next_round: u64, rounds_running: Vec<u64> },
    /// The round was accepted and its runs are on their way to volunteers.
    RoundStarted { round: u64 },
    /// One shard's validated result (`result.index` is the shard).
    Result { round: u64, result: ChunkResult },
    /// Every shard of the round has answered.
    RoundDone { round: u64, spent_millicredits: i64 },
    /// A `note` was refused (the round's results are unaffected).
    NoteRefused { round: u64, message: String },
    /// A message was refused (`round` says which round it concerned, if any); the session goes on.
    Error { message: String, round: Option<u64> },
    /// The session closed (by the consumer over the socket or with `DELETE`, or after its idle time).
    Closed { reason: String, refunded_millicredits: i64 },
}
