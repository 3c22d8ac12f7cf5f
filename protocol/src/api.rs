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
    /// Lowercase hex SHA-256 of the module's bytes as uploaded; jobs refer to the module by it, and its
    /// uploaders can download it as `GET /modules/{sha256}`.
    pub sha256: String,
    pub size: u64,
    /// The WASI functions the module imports.
    pub imports: Vec<String>,
    /// SHA-256 of the instrumented module that volunteers run (metering and memory limits added on
    /// upload): public, as `GET /modules/{instrumented_sha256}`, because workers fetch it.
    #[serde(default)]
    pub instrumented_sha256: String,
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
    /// How many times a chunk is sent out again after a volunteer could not run it (it timed out, lost
    /// its lease or could not start the program); default 2.
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// The most the job may cost, in millicredits; held in escrow while the job runs and the rest refunded.
    /// Default: the submitter's whole balance.
    #[serde(default)]
    pub budget_millicredits: Option<i64>,
    /// How results are validated. Default: 2 replicas on distinct volunteers that must agree.
    #[serde(default)]
    pub replication: Option<ReplicationRequest>,
}

/// Validation by replication: each chunk runs on `replicas` distinct volunteers (more if they disagree)
/// and a result is accepted once `quorum` of them agree byte for byte. `replicas: 1, quorum: 1` is allowed
/// only for jobs run by the submitter's own workers, which are then the only ones to get its chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReplicationRequest {
    pub replicas: u32,
    pub quorum: u32,
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
    /// Files by path relative to `/data` (for example `"in.ppm"` is `/data/in.ppm`): each either its bytes
    /// (base64) or `{"blob": "<sha256>"}`, a blob the job's owner uploaded with `POST /api/blobs`.
    #[serde(default)]
    pub files: BTreeMap<String, FileInput>,
}

impl ChunkRequest {
    /// The bytes the request itself carries: stdin, and the paths and contents of inline files (a blob
    /// counts only its path and hash).
    pub fn inline_bytes(&self) -> u64 {
        let files: usize = self
            .files
            .iter()
            .map(|(path, file)| {
                path.len()
                    + match file {
                        FileInput::Inline(contents) => contents.len(),
                        FileInput::Blob { blob } => blob.len(),
                    }
            })
            .sum();
        (self.stdin.len() + files) as u64
    }
}

/// One input file of a chunk: its bytes, or a reference to a blob stored on the server. In JSON the
/// bytes are a base64 string and a blob is `{"blob": "<sha256>"}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileInput {
    Inline(Bytes),
    Blob { blob: String },
}

impl FileInput {
    /// The bytes of an inline file; `None` for a blob.
    pub fn inline(&self) -> Option<&[u8]> {
        match self {
            FileInput::Inline(bytes) => Some(bytes),
            FileInput::Blob { .. } => None,
        }
    }
}

impl<T: Into<Bytes>> From<T> for FileInput {
    fn from(bytes: T) -> FileInput {
        FileInput::Inline(bytes.into())
    }
}

impl Serialize for FileInput {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            FileInput::Inline(bytes) => bytes.serialize(serializer),
            FileInput::Blob { blob } => BlobName { blob: blob.clone() }.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for FileInput {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FileInputVisitor)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BlobName {
    blob: String,
}

struct FileInputVisitor;

impl<'de> serde::de::Visitor<'de> for FileInputVisitor {
    type Value = FileInput;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(r#"a file's bytes in base64, or {"blob": "<sha256>"}"#)
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<FileInput, E> {
        let bytes = Bytes::deserialize(serde::de::value::StrDeserializer::<E>::new(text))?;
        Ok(FileInput::Inline(bytes))
    }

    fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<FileInput, E> {
        Ok(FileInput::Inline(Bytes(bytes.to_vec())))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<FileInput, A::Error> {
        let BlobName { blob } = BlobName::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        Ok(FileInput::Blob { blob })
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for FileInput {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        let inline = ObjectBuilder::new()
            .schema_type(Type::String)
            .content_encoding("base64")
            .description(Some("The file's bytes, base64-encoded (standard alphabet, padded)."));
        let blob = ObjectBuilder::new()
            .property("blob", ObjectBuilder::new().schema_type(Type::String))
            .required("blob")
            .description(Some("A blob uploaded with POST /api/blobs by the job's owner, by its SHA-256."));
        OneOfBuilder::new().item(inline).item(blob).into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for FileInput {}

/// The answer to `POST /api/blobs` and `HEAD`/`GET /api/blobs/{sha256}`'s subject: a file stored under its
/// SHA-256, which chunks name as `{"blob": "<sha256>"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlobInfo {
    /// Lowercase hex SHA-256 of the blob's bytes.
    pub sha256: String,
    pub size: u64,
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
    /// The budget held in escrow at submission, in millicredits.
    pub budget_millicredits: i64,
    /// What the job has paid volunteers and the platform so far, in millicredits.
    pub spent_millicredits: i64,
    /// Replicas sent out for each chunk at first, and how many must agree.
    pub replicas: u32,
    pub quorum: u32,
    /// Why the job stopped before every chunk finished (cancelled by its owner, budget spent).
    #[serde(default)]
    pub stop_reason: Option<String>,
    /// Why chunks are waiting while none runs, in words: for example "each chunk needs 2 distinct
    /// volunteers; 1 is connected". Absent while the job runs or once it is over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_reason: Option<String>,
    /// Credits still held in escrow for this job, in millicredits (0 once it is over and refunded).
    #[serde(default)]
    pub escrowed_millicredits: i64,
    /// Distinct volunteers holding a replica of this job right now.
    #[serde(default)]
    pub volunteers: u32,
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
    /// With `completed_after`: the place in the job's order of completion of the last result here; pass
    /// it as `completed_after` for the results that complete next. Absent when the page is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_through: Option<u64>,
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
    /// Bytes of blobs sent to workers since the server started (each worker fetches a blob once and
    /// keeps it).
    #[serde(default)]
    pub blob_bytes_served: u64,
    /// Backup replicas sent for slow chunks of sessions' rounds since the server started.
    #[serde(default)]
    pub backup_replicas: u64,
    /// Bytes of WebSocket messages (assignments, revocations) sent to workers since the server started;
    /// with `blob_bytes_served`, what the server sent volunteers.
    #[serde(default)]
    pub bytes_to_workers: u64,
}

/// `POST /api/auth/signup` and `POST /api/auth/login`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// 3 to 64 characters: letters, digits, `.`, `_`, `-`.
    pub username: String,
    /// At least 10 characters.
    pub password: String,
    /// The anonymous volunteer identity of this browser: its credits move to the account, and what it
    /// earns from now on goes there too.
    #[serde(default)]
    pub volunteer: Option<VolunteerCredential>,
}

/// An anonymous volunteer's identity, as `POST /api/volunteers` issued it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VolunteerCredential {
    pub id: String,
    pub secret: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserInfo {
    pub id: u64,
    pub username: String,
    pub is_admin: bool,
}

/// The signed-in user and the token that cookie-authenticated writes must send as `X-CSRF-Token`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebSessionInfo {
    pub user: UserInfo,
    pub csrf_token: String,
    /// What became of the anonymous volunteer identity sent with the sign-up or log-in, if one was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volunteer_claim: Option<VolunteerClaim>,
}

/// What signing up or logging in did with the browser's anonymous volunteer identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VolunteerClaim {
    /// The identity's id, as sent.
    pub volunteer: String,
    /// Whether the identity now belongs to this account.
    pub claimed: bool,
    /// Credits moved from the identity to the account, in millicredits (0 when nothing was claimed).
    pub millicredits: i64,
    /// What happened, in words: why nothing was claimed, when it was not.
    pub message: String,
}

/// `GET /api/account`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccountInfo {
    pub user: UserInfo,
    /// Credits available to spend, in millicredits.
    pub balance_millicredits: i64,
    /// Credits held in escrow for the user's running jobs and open ad campaigns.
    pub escrowed_millicredits: i64,
}

/// One ledger entry as seen from one account: positive amounts came in, negative ones went out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LedgerEntry {
    pub id: u64,
    /// `grant`, `escrow`, `payment`, `refund`, `fee`, `claim` or `ad_reward` (a completed view of a
    /// rewarded ad, paid from its campaign's escrow).
    pub kind: String,
    pub amount_millicredits: i64,
    pub job: Option<u64>,
    pub chunk: Option<u32>,
    pub memo: String,
    pub created_at_ms: u64,
}

/// `GET /api/account/ledger`: the newest entries first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LedgerPage {
    pub balance_millicredits: i64,
    pub entries: Vec<LedgerEntry>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<u64>,
}

/// `GET /api/modules`: a program the caller uploaded, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModuleSummary {
    pub sha256: String,
    pub size: u64,
    /// The file name given at upload (`POST /api/modules?name=`), if any.
    pub name: Option<String>,
    pub uploaded_at_ms: u64,
}

/// The query of `POST /api/modules`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
pub struct ModuleUploadQuery {
    /// A name to list the program under, such as its file name (at most 128 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `GET /api/account/volunteering`: what the account's volunteers (its workers and the anonymous
/// identities it claimed) have done.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VolunteeringStats {
    /// Replicas whose result agreed with the quorum (and were paid).
    pub validated_replicas: u64,
    /// Replicas whose result disagreed with the quorum, or was malformed.
    pub invalid_replicas: u64,
    /// Work units of the validated replicas.
    pub work_units: u64,
    /// Validated replicas in a row since the last invalid one: the reputation the scheduler trusts.
    pub consecutive_valid: u64,
    /// Credits earned by volunteering, in millicredits.
    pub earned_millicredits: i64,
}

/// `GET /api/stats/history`: the public statistics page.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommunityStats {
    /// Volunteers (worker connections and browser tabs) connected now.
    pub volunteers_online: u32,
    pub slots: u32,
    pub running_jobs: u32,
    /// The last 30 days (UTC), oldest first, days without work included.
    pub days: Vec<DayTotals>,
    /// The volunteers with the most validated work units, best first (at most 20).
    pub leaderboard: Vec<LeaderboardEntry>,
}

/// One UTC day's validated work.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DayTotals {
    /// `YYYY-MM-DD`.
    pub day: String,
    /// Chunks that got their final result that day.
    pub chunks: u64,
    /// Work units of the replicas validated that day.
    pub work_units: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaderboardEntry {
    pub rank: u32,
    /// The account's username, or `anonymous <first 8 characters of the identity>`.
    pub name: String,
    pub validated_replicas: u64,
    pub work_units: u64,
}

/// `POST /api/account/tokens`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub name: String,
}

/// A token just created: the only time its secret is shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenCreated {
    pub id: u64,
    pub name: String,
    pub token: String,
}

/// `GET /api/account/tokens`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenInfo {
    pub id: u64,
    pub name: String,
    /// The token's first characters, to tell tokens apart.
    pub prefix: String,
    pub created_at_ms: u64,
    pub last_used_at_ms: Option<u64>,
    pub revoked: bool,
}

/// `GET /api/volunteers/me`: an anonymous volunteer's standing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VolunteerInfo {
    pub id: String,
    /// Credits earned and not yet moved to an account.
    pub balance_millicredits: i64,
    pub validated_replicas: u64,
    pub invalid_replicas: u64,
    /// The account this identity belongs to once claimed; its credits go there.
    pub claimed_by: Option<String>,
}

/// `GET /api/pricing`: what work costs and who gets it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Pricing {
    /// A validated replica costs `ceil(work_units × this / 1,000,000)` millicredits.
    pub millicredits_per_million_work_units: u64,
    /// The volunteer's share of each payment, in percent; the rest is the platform's fee (burned).
    pub volunteer_share_percent: u32,
    /// What a new account receives.
    pub starter_grant_millicredits: i64,
    pub default_replicas: u32,
    pub default_quorum: u32,
}

/// `GET /api/limits`: what the server accepts, so that a client can say so before an upload.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServerLimits {
    /// The largest program `POST /api/modules` takes.
    pub max_module_bytes: u64,
    /// The largest body `POST /api/jobs` takes (inline inputs included).
    pub max_job_request_bytes: u64,
    pub max_chunks_per_job: u32,
    /// The largest blob `POST /api/blobs` takes, and how many blob bytes one account may keep.
    pub max_blob_bytes: u64,
    pub max_blob_bytes_per_account: u64,
    /// A job's limits when its request names none, and the most it may ask for.
    pub default_limits: LimitsRequest,
    pub max_limits: LimitsRequest,
    pub default_max_retries: u32,
    pub max_retries: u32,
    pub max_replicas: u32,
}

/// The query of `GET /api/jobs/{id}`: wait for progress instead of polling.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
pub struct StatusQuery {
    /// Wait up to this many milliseconds (at most 60000) for more chunks than `known_finished` to finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
    /// How many finished chunks the caller already knows about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_finished: Option<u32>,
}

/// The query of `GET /api/jobs/{id}/results`: one page at a time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
pub struct ResultsQuery {
    /// The first chunk index to return.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u32>,
    /// Instead of chunk order: the results that completed after the `N`-th to complete (0: from the
    /// first), in the order they completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_after: Option<u64>,
    /// The most results to return (at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// The query of `GET /api/account/ledger`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
pub struct LedgerQuery {
    /// The most entries to return (at most 500; 100 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Only entries older than this entry id (a page's `next_before`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
}

/// The query of `GET /api/jobs`: the caller's jobs, newest first, a page at a time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
pub struct JobsQuery {
    /// Only jobs older than this job id (the last id of the previous page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
    /// The most jobs to return (at most 100, the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// `POST /api/campaigns`: a sponsor's rewarded-ad campaign. Its budget moves into escrow at once; each
/// completed view pays `reward_millicredits` from it to the viewer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CampaignRequest {
    /// 1 to 100 characters, shown to the administrator who approves it.
    pub name: String,
    pub creative: CreativeRequest,
    /// Moved from the sponsor's balance into the campaign's escrow; what is left when the campaign ends
    /// is refunded.
    pub budget_millicredits: i64,
    /// Paid from the escrow to the viewer for each completed view; at most the budget.
    pub reward_millicredits: i64,
    /// How long a view must last on the server's clock before it can be completed (1 000 to 600 000).
    pub min_view_ms: u64,
    /// Completed views one viewer may be paid for per UTC day (1 to 100).
    pub daily_cap_per_viewer: u32,
}

/// The creative of a campaign: an image or video uploaded with the campaign (served from this server's
/// origin), or an IAB VAST 4 InLine document whose `MediaFile` the viewer's browser plays. In JSON:
/// `{"kind": "image" | "video", "mime": "image/png", "data": "<base64>"}` or `{"vast": "<VAST XML>"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged, try_from = "CreativeFields")]
pub enum CreativeRequest {
    Uploaded {
        kind: CreativeKind,
        /// `image/png`, `image/jpeg`, `image/gif`, `image/webp`, `video/mp4` or `video/webm`; the bytes
        /// must be of that type.
        mime: String,
        data: Bytes,
    },
    Vast {
        /// A VAST 4 (or 3) document with an `<InLine>` linear ad.
        vast: String,
    },
}

/// The fields either form of a creative may have, read first so that a mix of the two is refused with
/// a message that says which forms there are.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreativeFields {
    #[serde(default)]
    kind: Option<CreativeKind>,
    #[serde(default)]
    mime: Option<String>,
    #[serde(default)]
    data: Option<Bytes>,
    #[serde(default)]
    vast: Option<String>,
}

impl TryFrom<CreativeFields> for CreativeRequest {
    type Error = String;

    fn try_from(fields: CreativeFields) -> Result<CreativeRequest, String> {
        match fields {
            CreativeFields { kind: Some(kind), mime: Some(mime), data: Some(data), vast: None } => {
                Ok(CreativeRequest::Uploaded { kind, mime, data })
            }
            CreativeFields { kind: None, mime: None, data: None, vast: Some(vast) } => Ok(CreativeRequest::Vast { vast }),
            _ => Err(
                r#"a creative is either {"kind": "image" | "video", "mime", "data": "<base64>"} or {"vast": "<VAST XML>"}"#
                    .to_owned(),
            ),
        }
    }
}

/// What a creative shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CreativeKind {
    Image,
    Video,
}

/// Where a campaign stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CampaignStatus {
    /// Waiting for an administrator's approval; shown to nobody.
    Pending,
    /// Shown to viewers while its escrow can pay a reward.
    Approved,
    /// Ended by its sponsor (or an administrator); the rest of its escrow was refunded.
    Ended,
    /// Its escrow could not pay one more reward; the rest was refunded.
    Exhausted,
}

/// A campaign's creative as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreativeInfo {
    /// `image` or `video` for an upload, `vast` for a VAST document.
    pub source: String,
    /// The media type the viewer's browser plays.
    pub mime: String,
    /// What to play: this server's `/api/campaigns/{id}/creative` for an upload, the `MediaFile` URL of
    /// a VAST document (which this server never fetches).
    pub url: String,
    /// An upload's size in bytes (0 for VAST).
    pub bytes: u64,
    /// The VAST `<Duration>` in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The VAST `<Impression>` URLs (empty for an upload).
    #[serde(default)]
    pub impression_urls: Vec<String>,
}

/// A campaign: `201` to `POST /api/campaigns`, and an entry of `GET /api/campaigns`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CampaignInfo {
    pub id: u64,
    pub name: String,
    /// The sponsor's username.
    pub sponsor: String,
    pub status: CampaignStatus,
    pub creative: CreativeInfo,
    pub budget_millicredits: i64,
    pub reward_millicredits: i64,
    pub min_view_ms: u64,
    pub daily_cap_per_viewer: u32,
    /// Views issued (`POST /api/ad-views`).
    pub impressions: u64,
    /// Views completed and paid.
    pub completed_views: u64,
    /// Paid to viewers from the escrow.
    pub spent_millicredits: i64,
    /// What the escrow holds now (0 once the campaign is over).
    pub escrowed_millicredits: i64,
    /// Given back to the sponsor when the campaign ended.
    pub refunded_millicredits: i64,
    pub created_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at_ms: Option<u64>,
}

/// The query of `GET /api/campaigns`: the caller's campaigns (or, for administrators with
/// `pending=true`, every campaign waiting for approval), newest first, a page at a time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
pub struct CampaignsQuery {
    /// Administrators only: every sponsor's campaigns waiting for approval instead of the caller's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<bool>,
    /// Only campaigns older than this campaign id (the last id of the previous page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
    /// The most campaigns to return (at most 100, the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// `POST /api/ad-views`: start watching an ad, of the named campaign or of any the viewer may watch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AdViewRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<u64>,
}

/// `201` to `POST /api/ad-views`: a view token, valid once, for this viewer, until `expires_at_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdViewStarted {
    /// Send it back with `POST /api/ad-views/{token}/complete` once the creative has played for
    /// `min_view_ms`; the server keeps only its hash.
    pub token: String,
    pub campaign: u64,
    /// What to play: this server's `/api/campaigns/{id}/creative`, or a VAST creative's `MediaFile` URL.
    pub creative_url: String,
    /// `image`, `video` or `vast`.
    pub creative_source: String,
    pub creative_mime: String,
    /// A VAST creative's `<Impression>` URLs, for the player to request as VAST says (the server never
    /// does).
    #[serde(default)]
    pub impression_urls: Vec<String>,
    pub min_view_ms: u64,
    pub reward_millicredits: i64,
    /// The server's clock when it issued the token, and when the token stops being accepted.
    pub started_at_ms: u64,
    pub expires_at_ms: u64,
}

/// `200` to `POST /api/ad-views/{token}/complete`: what the viewer was paid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdViewCompleted {
    pub credited_millicredits: i64,
    pub campaign: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunks_files_are_base64_bytes_or_named_blobs() {
        let sha = "ab".repeat(32);
        let json = format!(r#"{{"files": {{"a.txt": "aGk=", "shard.bin": {{"blob": "{sha}"}}}}}}"#);
        let chunk: ChunkRequest = serde_json::from_str(&json).unwrap();
        assert_eq!(chunk.files["a.txt"], FileInput::Inline(Bytes::from("hi")));
        assert_eq!(chunk.files["shard.bin"], FileInput::Blob { blob: sha.clone() });
        let back: ChunkRequest = serde_json::from_str(&serde_json::to_string(&chunk).unwrap()).unwrap();
        assert_eq!(back, chunk);
        assert_eq!(chunk.inline_bytes(), (5 + 2 + 9 + 64) as u64);
    }

    #[test]
    fn a_creative_is_an_upload_or_a_vast_document_and_never_a_mix() {
        let upload: CreativeRequest =
            serde_json::from_str(r#"{"kind": "image", "mime": "image/png", "data": "iVBORw=="}"#).unwrap();
        assert!(matches!(upload, CreativeRequest::Uploaded { kind: CreativeKind::Image, .. }));
        let back: CreativeRequest = serde_json::from_str(&serde_json::to_string(&upload).unwrap()).unwrap();
        assert_eq!(back, upload);
        let vast: CreativeRequest = serde_json::from_str(r#"{"vast": "<VAST/>"}"#).unwrap();
        assert_eq!(vast, CreativeRequest::Vast { vast: "<VAST/>".to_owned() });
        for json in [
            r#"{"kind": "image", "mime": "image/png", "data": "", "vast": "<VAST/>"}"#,
            r#"{"kind": "image", "data": ""}"#,
            r#"{}"#,
        ] {
            let error = serde_json::from_str::<CreativeRequest>(json).unwrap_err().to_string();
            assert!(error.contains(r#"a creative is either {"kind""#), "{json}: {error}");
        }
        let error = serde_json::from_str::<CreativeRequest>(r#"{"url": "x"}"#).unwrap_err().to_string();
        assert!(error.contains("unknown field `url`"), "{error}");
    }

    #[test]
    fn a_malformed_file_is_refused_with_what_was_expected() {
        for (json, expected) in [
            (r#"{"files": {"a": {"blob": "x", "extra": 1}}}"#, "unknown field `extra`"),
            (r#"{"files": {"a": {"sha": "x"}}}"#, "unknown field `sha`"),
            (r#"{"files": {"a": 12}}"#, "a file's bytes in base64, or {\"blob\": \"<sha256>\"}"),
            (r#"{"files": {"a": "not base64!"}}"#, "invalid base64"),
        ] {
            let error = serde_json::from_str::<ChunkRequest>(json).unwrap_err().to_string();
            assert!(error.contains(expected), "{json}: {error}");
        }
    }
}
