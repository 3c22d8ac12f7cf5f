//! Bodies of the REST API (JSON). Byte strings are base64; see [`crate::Bytes`].
//!
//! The endpoints are listed in `docs/api.md` and served as OpenAPI at `/api/openapi.json`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Bytes;
use crate::worker::{Output, RunStatus};

/// The answer to `POST /api/modules`: the module was valid and is stored under its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModuleInfo {
    /// Lowercase hex SHA-256 of the module's bytes; jobs refer to the module by it.
    pub sha256: String,
    pub size: u64,
    /// The WASI functions the module imports.
    pub imports: Vec<String>,
}

/// `POST /api/jobs`: a program run over many inputs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// The SHA-256 of a module uploaded with `POST /api/modules`.
    pub module: String,
    /// A name for people; defaults to `job-<id>`.
    #[serde(default)]
    pub name: Option<String>,
    /// `argv[0]` of every chunk; defaults to `program.wasm`.
    #[serde(default)]
    pub program_name: Option<String>,
    pub chunks: Vec<ChunkRequest>,
    /// Environment variables every chunk sees (and the only ones).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub limits: LimitsRequest,
    /// How many times a failed chunk is retried on another volunteer (default 2).
    #[serde(default)]
    pub max_retries: Option<u32>,
}

/// One chunk: the program's arguments (after `argv[0]`), stdin and files under `/data`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChunkRequest {
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub stdin: Bytes,
    /// Files by path relative to `/data` (for example `"in.ppm"` is `/data/in.ppm`).
    #[serde(default)]
    pub files: BTreeMap<String, Bytes>,
}

/// Optional per-job limits; the server's defaults fill the rest and its maxima bound them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LimitsRequest {
    #[serde(default)]
    pub time_limit_ms: Option<u64>,
    #[serde(default)]
    pub memory_limit_bytes: Option<u64>,
    #[serde(default)]
    pub max_stdout_bytes: Option<u64>,
    #[serde(default)]
    pub max_stderr_bytes: Option<u64>,
    #[serde(default)]
    pub max_data_bytes: Option<u64>,
    /// The most work units (original WebAssembly instructions) one run may use.
    #[serde(default)]
    pub max_work_units: Option<u64>,
}

/// The answer to `POST /api/jobs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobCreated {
    pub id: u64,
    pub chunks: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Some chunks have no final result yet.
    Running,
    /// Every chunk exited with status 0.
    Succeeded,
    /// Every chunk has a final result and at least one of them failed.
    Failed,
    /// The submitter cancelled the job; unfinished chunks will not run.
    Cancelled,
}

impl JobState {
    pub fn is_finished(self) -> bool {
        self != JobState::Running
    }
}

/// `GET /api/jobs/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobStatus {
    pub id: u64,
    pub name: String,
    pub module: String,
    pub state: JobState,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    pub chunks: u32,
    pub succeeded: u32,
    pub failed: u32,
    /// Chunks with at least one replica at a volunteer right now.
    pub running: u32,
    /// Chunks waiting for a volunteer.
    pub pending: u32,
}

impl JobStatus {
    /// Chunks with a final (stored) result.
    pub fn finished_chunks(&self) -> u32 {
        self.succeeded + self.failed
    }
}

/// One chunk's final result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChunkResult {
    pub index: u32,
    /// Whether the chunk exited with status 0.
    pub succeeded: bool,
    pub status: RunStatus,
    /// `status` in words, for example "exited with status 3".
    pub reason: String,
    /// How many replicas were sent out for this chunk.
    pub attempts: u32,
    /// Work units the accepted run used.
    pub work_units: u64,
    pub output: Output,
}

/// `GET /api/jobs/{id}/results?offset=N&limit=M`: results in chunk order, only the chunks that are finished.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResultsPage {
    pub job: u64,
    pub results: Vec<ChunkResult>,
    /// Pass as `offset` to get the next page; absent on the last page.
    pub next_offset: Option<u32>,
}

/// Every 4xx and 5xx answer carries this body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: String,
}

/// `GET /api/stats`: what the coordinator is doing right now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServerStats {
    pub workers: u32,
    pub slots: u32,
    pub running_jobs: u32,
    pub pending_chunks: u64,
    pub replicas_in_flight: u64,
    pub chunks_finished: u64,
}
