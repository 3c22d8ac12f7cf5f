//! The server's configuration: where it listens, where it keeps its data, and the limits it enforces.

use std::net::SocketAddr;
use std::path::PathBuf;

use distributivecom_protocol::worker::Limits;

const MIB: u64 = 1024 * 1024;

/// Everything `serve` can be told. [`ServerConfig::default`] is what `distributivecom serve` uses with no
/// flags.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The SQLite database and anything else the server keeps lives here.
    pub data_dir: PathBuf,
    /// The largest program `POST /api/modules` accepts.
    pub max_module_bytes: u64,
    /// The largest `POST /api/jobs` body (all chunk inputs, base64-encoded).
    pub max_job_request_bytes: u64,
    pub max_chunks_per_job: u32,
    /// Limits a job gets when it does not ask for others.
    pub default_limits: Limits,
    /// The most a job may ask for.
    pub max_limits: Limits,
    pub default_max_retries: u32,
    pub max_retries_cap: u32,
    /// Workers should send a heartbeat this often.
    pub heartbeat_interval_ms: u64,
    /// Silence longer than this loses a worker's leases.
    pub lease_timeout_ms: u64,
    /// Replicas queued at a worker beyond one per slot while a job's chunk time is unknown.
    pub prefetch_per_slot: u32,
    /// The most a worker may ask to have queued per slot.
    pub max_prefetch_per_slot: u32,
    /// Queued work per slot (by the job's measured chunk time) that hides a worker's round trip.
    pub prefetch_buffer_us: u64,
    /// How often leases are checked.
    pub tick_interval_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("distributivecom-data"),
            max_module_bytes: 128 * MIB,
            max_job_request_bytes: 512 * MIB,
            max_chunks_per_job: 1_000_000,
            default_limits: Limits {
                memory_bytes: 1024 * MIB,
                time_limit_ms: 60_000,
                max_stdout_bytes: MIB,
                max_stderr_bytes: MIB,
                max_data_bytes: 64 * MIB,
                // About ten minutes of work on a fast core: the wall-clock limit stops a run first.
                max_work_units: 1_000_000_000_000,
            },
            max_limits: Limits {
                // A wasm32 memory cannot grow past 4 GiB.
                memory_bytes: 4096 * MIB,
                time_limit_ms: 3_600_000,
                max_stdout_bytes: 64 * MIB,
                max_stderr_bytes: 64 * MIB,
                max_data_bytes: 256 * MIB,
                max_work_units: 1_000_000_000_000_000,
            },
            default_max_retries: 2,
            max_retries_cap: 10,
            heartbeat_interval_ms: 1_000,
            lease_timeout_ms: 5_000,
            prefetch_per_slot: 2,
            max_prefetch_per_slot: 16,
            prefetch_buffer_us: 20_000,
            tick_interval_ms: 250,
        }
    }
}
