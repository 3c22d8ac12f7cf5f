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
    /// What work costs and the volunteers' share (see the README's pricing section).
    pub pricing: Pricing,
    /// Credits a new account starts with, in millicredits.
    pub starter_grant_millicredits: i64,
    /// Credits the administrator created on first start gets, in millicredits.
    pub admin_grant_millicredits: i64,
    /// Replication of jobs that do not choose: replicas per chunk, and how many must agree.
    pub default_replicas: u32,
    pub default_quorum: u32,
    /// The most replicas per chunk a job may ask for.
    pub max_replicas: u32,
    /// Adaptive replication: a volunteer with at least this many validated results in a row may be
    /// trusted, with a probability that grows with the run, to run a chunk alone. `u32::MAX` turns it off.
    pub trust_after: u32,
    /// Whether the session cookie carries `Secure` (browsers then send it only over HTTPS, and to
    /// `localhost`). Turn off only for plain-HTTP deployments on a trusted network.
    pub secure_cookies: bool,
    /// How long a web session lasts.
    pub session_lifetime_ms: u64,
    /// Sign-up and log-in attempts allowed per client address per minute (with bursts of as many).
    pub auth_attempts_per_minute: u32,
    /// Anonymous volunteer identities one client address may register per minute.
    pub volunteer_registrations_per_minute: u32,
    /// A request head must arrive within this time, and an idle kept-alive connection is closed after it.
    pub header_read_timeout_ms: u64,
    /// Open connections in total (at most what the open-file limit allows, see `http::listener`).
    pub max_connections: usize,
    /// Open connections from one client address.
    pub max_connections_per_address: usize,
    /// Jobs one account may have running at once, their unfinished chunks and their inputs' bytes: active
    /// jobs live in the coordinator's memory.
    pub max_active_jobs_per_account: u32,
    pub max_active_chunks_per_account: u64,
    pub max_active_input_bytes_per_account: u64,
    /// The bytes of output one volunteer may have waiting for other replicas of their chunks.
    pub max_held_report_bytes_per_volunteer: u64,
    /// The largest blob (`POST /api/blobs`), and what all of one account's blobs may hold together.
    pub max_blob_bytes: u64,
    pub max_blob_bytes_per_account: u64,
    /// Affinity: how long a new job's chunks wait for the workers that hold their blobs (see
    /// `distributivecom_scheduler::Config::affinity_wait_ms`).
    pub affinity_wait_ms: u64,
    /// The largest broadcast of a session's round.
    pub max_broadcast_bytes: u64,
    /// A session whose consumer has been gone this long is closed and its escrow refunded.
    pub session_idle_ms: u64,
    /// Rounds of one session that may run at once (pipelining).
    pub max_rounds_running: u32,
    /// Sessions one account may have open at once.
    pub max_open_sessions_per_account: u32,
    /// Messages waiting for a session consumer's socket at most: a consumer that does not read loses its
    /// socket (it reconnects with `from_round` and gets the rest from the store), not the server its memory.
    pub session_feed_capacity: usize,
    /// The same in bytes of results (a result carries its output).
    pub session_feed_bytes: u64,
    /// Backups of a round's stragglers: once this percentage of its shards have answered, or once a
    /// replica has been out `backup_slowness` times the round's typical run time, the shard gets one
    /// backup replica on another volunteer (see `distributivecom_scheduler::Config`).
    pub backup_when_done_percent: u32,
    pub backup_slowness: u32,
    /// Rewarded ads: the largest uploaded creative (an image or a video, before base64).
    pub max_creative_bytes: u64,
    /// Campaigns one sponsor may have pending or running at once (each may hold a creative).
    pub max_open_campaigns_per_sponsor: u32,
    /// How long an ad view's token may be completed after it was issued.
    pub ad_view_ttl_ms: u64,
    /// Ad views one viewer may hold open (issued, not completed, not expired) at once, so that nobody
    /// can make the server store views without end.
    pub max_open_ad_views_per_viewer: u32,
    /// The origin people reach this server at (`https://compute.example`), for the snippet a site key
    /// gives its owner. `None`: `http://` and the Host header of the request that asks (right for a
    /// server reached directly; behind a TLS proxy, set it).
    pub public_origin: Option<String>,
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
                // About a minute of work on a fast core; it also bounds what a chunk can cost.
                max_work_units: 50_000_000_000,
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
            pricing: Pricing { millicredits_per_million_work_units: 1, volunteer_share_percent: 90 },
            starter_grant_millicredits: 100_000,
            admin_grant_millicredits: 1_000_000_000,
            default_replicas: 2,
            default_quorum: 2,
            max_replicas: 10,
            trust_after: 10,

            secure_cookies: true,
            session_lifetime_ms: 30 * 24 * 3600 * 1000,
            auth_attempts_per_minute: 20,
            volunteer_registrations_per_minute: 30,
            header_read_timeout_ms: 10_000,
            max_connections: 16_384,
            max_connections_per_address: 256,
            max_active_jobs_per_account: 1_000,
            max_active_chunks_per_account: 2_000_000,
            max_active_input_bytes_per_account: 4 * 1024 * MIB,
            max_held_report_bytes_per_volunteer: 1024 * MIB,
            max_blob_bytes: 1024 * MIB,
            max_blob_bytes_per_account: 16 * 1024 * MIB,
            affinity_wait_ms: 100,
            max_broadcast_bytes: 16 * MIB,
            session_idle_ms: 300_000,
            max_rounds_running: 16,
            max_open_sessions_per_account: 16,
            session_feed_capacity: 8192,
            session_feed_bytes: 64 * MIB,
            backup_when_done_percent: 90,
            backup_slowness: 3,
            max_creative_bytes: 8 * MIB,
            max_open_campaigns_per_sponsor: 16,
            ad_view_ttl_ms: 3_600_000,
            max_open_ad_views_per_viewer: 4,
            public_origin: None,
        }
    }
}

/// What work costs, and who gets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pricing {
    pub millicredits_per_million_work_units: u64,
    /// The volunteer's share of each payment; the rest is the platform's fee, burned.
    pub volunteer_share_percent: u32,
}

impl Pricing {
    /// What one replica that used `work_units` costs: rounded up, so that no work is free.
    pub fn cost(&self, work_units: u64) -> i64 {
        let scaled = u128::from(work_units) * u128::from(self.millicredits_per_million_work_units);
        i64::try_from(scaled.div_ceil(1_000_000)).unwrap_or(i64::MAX)
    }
}
