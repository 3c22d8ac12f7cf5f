//! The worker protocol: what the coordinator and a volunteer say to each other over one WebSocket.
//!
//! The conversation is:
//!
//! 1. The worker connects to `GET /api/workers/ws` and sends [`WorkerMessage::Hello`] with its free slots.
//! 2. The server answers [`ServerMessage::Welcome`] with the heartbeat interval and lease timeout.
//! 3. The server pushes [`ServerMessage::Assign`] batches and keeps up to `slots * (1 + prefetch_per_slot)`
//!    replicas in flight at the worker, so the worker never waits a round trip between chunks.
//! 4. The worker sends [`WorkerMessage::Results`] batches as replicas finish, and
//!    [`WorkerMessage::Heartbeat`] at least every `heartbeat_interval_ms`. Any message counts as a heartbeat.
//! 5. Each replica in flight holds a lease that lives as long as the worker keeps heartbeating. On close the
//!    server requeues the worker's replicas at once; after `lease_timeout_ms` of silence it requeues them and
//!    closes the socket. Results for replicas that are no longer leased to the sender are ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Bytes;

/// A message from a worker to the server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerMessage {
    /// The first message on a connection.
    Hello(Hello),
    /// The number of chunks the worker can run at once has changed (0 pauses it).
    Slots { slots: u32 },
    /// "I am alive": renews every lease the worker holds.
    Heartbeat,
    /// Finished replicas, in any order.
    Results(#[serde(deserialize_with = "crate::bounded::vec::<_, _, MAX_REPLICAS_PER_MESSAGE>")] Vec<ReplicaReport>),
    /// Replicas the worker received but will not run (it is pausing or stopping); they are requeued at once.
    Release(#[serde(deserialize_with = "crate::bounded::vec::<_, _, MAX_REPLICAS_PER_MESSAGE>")] Vec<u64>),
    /// The worker's blob cache gained `added` and lost `evicted` (SHA-256 hashes): the server prefers
    /// workers that hold a chunk's blobs.
    Cached {
        #[serde(deserialize_with = "crate::bounded::vec::<_, _, MAX_ANNOUNCED_BLOBS>")]
        added: Vec<String>,
        #[serde(deserialize_with = "crate::bounded::vec::<_, _, MAX_ANNOUNCED_BLOBS>")]
        evicted: Vec<String>,
    },
}

/// How a worker introduces itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Must equal [`crate::PROTOCOL_VERSION`].
    pub protocol_version: u32,
    pub kind: WorkerKind,
    /// How many chunks it runs at once.
    pub slots: u32,
    /// Free text for operators: host name, user agent, version.
    #[serde(default)]
    pub agent: String,
    /// The most memory one replica may use on this worker; jobs with a higher memory limit are not sent
    /// to it. Absent: no limit.
    #[serde(default)]
    pub max_memory_bytes: Option<u64>,
    /// The most replicas per slot the worker wants queued beyond the running ones (a worker with a slow
    /// round trip, such as a browser, asks for more). The server may grant fewer. Absent: the server's
    /// default.
    #[serde(default)]
    pub prefetch_per_slot: Option<u32>,
    /// Who is volunteering: an account's API token, or an anonymous volunteer identity issued by
    /// `POST /api/volunteers`. Credits for validated work go there. Required.
    #[serde(default)]
    pub credential: Option<Credential>,
    /// The blobs (SHA-256 hashes) the worker holds in its cache, most recently used first; the server
    /// remembers at most [`MAX_ANNOUNCED_BLOBS`] per worker and refuses a longer list.
    #[serde(default, deserialize_with = "crate::bounded::vec::<_, _, MAX_ANNOUNCED_BLOBS>")]
    pub blobs: Vec<String>,
}

/// The most replicas one [`WorkerMessage::Results`] or [`WorkerMessage::Release`] may name: more than a
/// worker can hold at once.
pub const MAX_REPLICAS_PER_MESSAGE: usize = 65_536;

/// The most slots one worker may announce: more cores than any one machine has, and few enough that one
/// worker's queue (slots × (1 + prefetch)) stays small for the scheduler and a native worker's instance
/// pool (an address-space reservation per slot) stays within any 64-bit process's reach.
pub const MAX_SLOTS: u32 = 256;

/// The most blobs the server remembers per worker (see [`Hello::blobs`] and [`WorkerMessage::Cached`]).
pub const MAX_ANNOUNCED_BLOBS: usize = 256;

/// How a worker proves who it volunteers for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Credential {
    /// An account's API token.
    Token(String),
    /// An anonymous volunteer identity.
    Volunteer { id: String, secret: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerKind {
    Native,
    Browser,
}

/// A message from the server to a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerMessage {
    Welcome(Welcome),
    /// Replicas to run, in the order the server would like them run.
    Assign(Vec<Assignment>),
    /// Replicas the worker should drop without reporting (their job was cancelled or their lease lapsed).
    Revoke(Vec<u64>),
    /// The server refuses something the worker sent; it closes the connection after this message.
    Error {
        message: String,
    },
}

/// The server's answer to `Hello`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// This connection's identity, for logs.
    pub worker_id: u64,
    /// Send a heartbeat at least this often.
    pub heartbeat_interval_ms: u64,
    /// Silence longer than this loses every lease the worker holds.
    pub lease_timeout_ms: u64,
    /// The most replicas beyond one per slot the server queues at the worker. It queues fewer of a job
    /// whose chunks are long (see `docs/protocol.md`).
    pub prefetch_per_slot: u32,
}

/// One replica of one chunk, with everything needed to run it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// The replica's id: report results under it.
    pub replica: u64,
    pub job: u64,
    /// The chunk's index within its job.
    pub chunk: u32,
    /// The job's display name (browser volunteers show it).
    pub job_name: String,
    pub module: ModuleRef,
    /// The full argv, `argv[0]` included.
    pub args: Vec<String>,
    /// The only environment variables the program sees.
    pub env: BTreeMap<String, String>,
    pub stdin: Bytes,
    /// Input files under `/data`, by path relative to `/data`.
    pub files: BTreeMap<String, Bytes>,
    /// More input files under `/data` whose bytes the worker fetches (or finds in its cache): each a blob,
    /// fetched with `GET /blobs/{sha256}?capability=...` while the worker holds this replica's lease.
    #[serde(default)]
    pub blobs: BTreeMap<String, BlobRef>,
    /// The realtime clock's start: the job's submission time in nanoseconds since the Unix epoch.
    pub clock_start_ns: u64,
    /// 32 bytes: the ChaCha20 key of `random_get`, derived from the chunk's identity so every replica of a
    /// chunk sees the same random bytes.
    pub random_seed: Bytes,
    pub limits: Limits,
}

/// Where to fetch a module: `GET /modules/{sha256}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModuleRef {
    pub sha256: String,
    pub size: u64,
}

/// An input file the worker fetches: `GET /blobs/{sha256}?capability={capability}`. The bytes must hash
/// to `sha256`; a worker may keep them (by hash) for later replicas.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlobRef {
    pub sha256: String,
    pub size: u64,
    /// Proves that the fetch is for a replica the worker holds; valid only while it holds that replica.
    pub capability: String,
}

/// Per-chunk limits, set by the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// The most linear memory the program may have.
    pub memory_bytes: u64,
    /// The most wall-clock time one run may take.
    pub time_limit_ms: u64,
    pub max_stdout_bytes: u64,
    pub max_stderr_bytes: u64,
    /// The most bytes all files under `/data` may hold together.
    pub max_data_bytes: u64,
    /// The most work units (original WebAssembly instructions, see `program::instrument`) one run may use.
    pub max_work_units: u64,
}

/// What became of one replica.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplicaReport {
    pub replica: u64,
    pub status: RunStatus,
    pub output: Output,
    /// Time spent running the program, in microseconds (for statistics, never for credit).
    #[serde(default)]
    pub compute_us: u64,
    /// Work units the run used, read from the instrumented module: identical on every worker.
    #[serde(default)]
    pub work_units: u64,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// `_start` returned (status 0) or the program called `proc_exit`.
    Exited { code: u32 },
    /// The program trapped (for example `unreachable`, which is how a Rust panic ends).
    Trapped { message: String },
    /// The run exceeded the job's time limit.
    TimedOut,
    /// The program needed more memory than the job's limit.
    MemoryLimit,
    /// The run used more work units than the job's limit.
    WorkLimit,
    /// The worker could not run the program at all (for example the module could not be fetched).
    Failed { message: String },
}

impl RunStatus {
    /// Only a clean exit with status 0 is a success.
    pub fn is_success(&self) -> bool {
        matches!(self, RunStatus::Exited { code: 0 })
    }

    /// A sentence for people: "exited with status 3", "timed out", ...
    pub fn describe(&self) -> String {
        match self {
            RunStatus::Exited { code } => format!("exited with status {code}"),
            RunStatus::Trapped { message } => format!("trapped: {message}"),
            RunStatus::TimedOut => "timed out (exceeded the job's time limit)".to_owned(),
            RunStatus::MemoryLimit => "exceeded the job's memory limit".to_owned(),
            RunStatus::WorkLimit => "exceeded the job's work-unit limit".to_owned(),
            RunStatus::Failed { message } => format!("could not be run: {message}"),
        }
    }
}

/// The traps a program can hit. Every worker reports a trap with its kind's canonical [`TrapKind::message`],
/// whatever its engine calls it, so that replicas of a chunk on different engines agree byte for byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrapKind {
    Unreachable,
    MemoryOutOfBounds,
    TableOutOfBounds,
    /// A `call_indirect` to a null entry or to a function of another type (engines do not all tell these
    /// apart, so neither do we).
    BadIndirectCall,
    /// Integer overflow in a division (`i32.div_s` of the minimum by -1) or a float-to-integer conversion
    /// of NaN or an out-of-range value: engines report these differently, so they are one kind.
    IntegerOverflow,
    IntegerDivisionByZero,
    StackOverflow,
    /// A trap no other kind describes; the engine's own words are kept.
    Other,
}

impl TrapKind {
    pub fn message(self) -> &'static str {
        match self {
            TrapKind::Unreachable => "unreachable instruction executed",
            TrapKind::MemoryOutOfBounds => "out of bounds memory access",
            TrapKind::TableOutOfBounds => "out of bounds table access",
            TrapKind::BadIndirectCall => "indirect call to a null or mismatched function",
            TrapKind::IntegerOverflow => "integer overflow or invalid conversion to integer",
            TrapKind::IntegerDivisionByZero => "integer divide by zero",

            TrapKind::StackOverflow => "call stack exhausted",
            TrapKind::Other => "trap",
        }
    }

    /// The status of a run that ended in this trap.
    pub fn status(self) -> RunStatus {
        RunStatus::Trapped { message: self.message().to_owned() }
    }
}

/// What a run produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Output {
    pub stdout: Bytes,
    pub stderr: Bytes,
    /// Whether stdout was cut at the job's `max_stdout_bytes`.
    #[serde(default)]
    pub stdout_truncated: bool,
    #[serde(default)]
    pub stderr_truncated: bool,
    /// Every file the program created or changed under `/data`, by path relative to `/data`.
    #[serde(default, deserialize_with = "crate::bounded::map::<_, _, _, MAX_OUTPUT_FILES>")]
    pub files: BTreeMap<String, Bytes>,
}

/// The most output files one report may carry (a run cannot create more).
pub const MAX_OUTPUT_FILES: usize = 65_536;

impl Output {
    /// The bytes this output holds, for size accounting.
    pub fn total_bytes(&self) -> u64 {
        let files: usize = self.files.iter().map(|(path, contents)| path.len() + contents.len()).sum();
        (self.stdout.len() + self.stderr.len() + files) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, encode};

    #[test]
    fn messages_round_trip_through_messagepack() {
        let assignment = Assignment {
            replica: 7,
            job: 1,
            chunk: 2,
            job_name: "demo".into(),
            module: ModuleRef { sha256: "ab".repeat(32), size: 10 },
            args: vec!["main.wasm".into(), "-x".into()],
            env: BTreeMap::from([("K".into(), "V".into())]),
            stdin: Bytes::from("in"),
            files: BTreeMap::from([("a/b.bin".into(), Bytes(vec![0, 1, 2]))]),
            blobs: BTreeMap::from([(
                "shard".into(),
                BlobRef { sha256: "cd".repeat(32), size: 5, capability: "7.abc".into() },
            )]),
            clock_start_ns: 1,
            random_seed: Bytes(vec![9; 32]),
            limits: Limits {
                memory_bytes: 1 << 30,
                time_limit_ms: 60_000,
                max_stdout_bytes: 1 << 20,
                max_stderr_bytes: 1 << 20,
                max_data_bytes: 1 << 28,
                max_work_units: 1 << 40,
            },
        };
        let message = ServerMessage::Assign(vec![assignment]);
        assert_eq!(decode::<ServerMessage>(&encode(&message)).unwrap(), message);

        let report = WorkerMessage::Results(vec![ReplicaReport {
            replica: 7,
            status: RunStatus::Trapped { message: "unreachable".into() },
            output: Output { stderr: Bytes::from("panicked"), ..Output::default() },
            compute_us: 12,
            work_units: 34,
        }]);
        assert_eq!(decode::<WorkerMessage>(&encode(&report)).unwrap(), report);
        assert_eq!(decode::<WorkerMessage>(&encode(&WorkerMessage::Heartbeat)).unwrap(), WorkerMessage::Heartbeat);
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        assert!(decode::<WorkerMessage>(b"\xc1\x00garbage").is_err());
        assert!(decode::<WorkerMessage>(&[]).is_err());
    }

    #[test]
    fn variants_are_tagged_by_snake_case_name() {
        // Third-party workers rely on this shape: a one-key map from the variant name to its fields.
        let frame = encode(&WorkerMessage::Slots { slots: 3 });
        let value: serde_json::Value = rmp_serde::from_slice(&frame).unwrap();
        assert_eq!(value, serde_json::json!({"slots": {"slots": 3}}));
    }

    #[test]
    fn lists_from_workers_longer_than_their_bound_are_refused_while_decoding() {
        // Empty strings are one byte each on the wire and 24 bytes decoded: the bound keeps a frame of them
        // from multiplying into gigabytes.
        let hashes = |count: usize| vec![String::new(); count];
        let cached = |count| WorkerMessage::Cached { added: hashes(count), evicted: Vec::new() };
        assert!(decode::<WorkerMessage>(&encode(&cached(MAX_ANNOUNCED_BLOBS))).is_ok());
        let refused = decode::<WorkerMessage>(&encode(&cached(MAX_ANNOUNCED_BLOBS + 1))).unwrap_err();
        assert!(refused.to_string().contains("more than 256 entries"), "{refused}");

        let hello = |count| {
            WorkerMessage::Hello(Hello {
                protocol_version: crate::PROTOCOL_VERSION,
                kind: WorkerKind::Native,
                slots: 1,
                agent: String::new(),
                max_memory_bytes: None,
                prefetch_per_slot: None,
                credential: None,
                blobs: hashes(count),
            })
        };
        assert!(decode::<WorkerMessage>(&encode(&hello(MAX_ANNOUNCED_BLOBS))).is_ok());
        assert!(decode::<WorkerMessage>(&encode(&hello(MAX_ANNOUNCED_BLOBS + 1))).is_err());

        let release = |count| WorkerMessage::Release(vec![0; count]);
        assert!(decode::<WorkerMessage>(&encode(&release(MAX_REPLICAS_PER_MESSAGE))).is_ok());
        assert!(decode::<WorkerMessage>(&encode(&release(MAX_REPLICAS_PER_MESSAGE + 1))).is_err());

        let report = |replica| ReplicaReport {
            replica,
            status: RunStatus::TimedOut,
            output: Output::default(),
            compute_us: 0,
            work_units: 0,
        };
        let results = |count: usize| WorkerMessage::Results((0..count as u64).map(report).collect());
        assert!(decode::<WorkerMessage>(&encode(&results(MAX_REPLICAS_PER_MESSAGE))).is_ok());
        assert!(decode::<WorkerMessage>(&encode(&results(MAX_REPLICAS_PER_MESSAGE + 1))).is_err());

        let files = |count: usize| {
            let files = (0..count).map(|index| (index.to_string(), Bytes::default())).collect();
            WorkerMessage::Results(vec![ReplicaReport { output: Output { files, ..Output::default() }, ..report(1) }])
        };
        assert!(decode::<WorkerMessage>(&encode(&files(MAX_OUTPUT_FILES))).is_ok());
        assert!(decode::<WorkerMessage>(&encode(&files(MAX_OUTPUT_FILES + 1))).is_err());
    }

    #[test]
    fn only_exit_zero_is_success() {
        assert!(RunStatus::Exited { code: 0 }.is_success());
        assert!(!RunStatus::Exited { code: 3 }.is_success());
        assert!(!RunStatus::TimedOut.is_success());
        assert_eq!(RunStatus::Exited { code: 3 }.describe(), "exited with status 3");
    }
}
