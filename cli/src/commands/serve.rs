//! `distributivecom serve`: the coordinator.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use distributivecom_server::ServerConfig;

use crate::Outcome;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where the SQLite database lives (created if missing).
    #[arg(long, default_value = "distributivecom-data")]
    data: PathBuf,
    /// Silence (in milliseconds) after which a worker loses its leases.
    #[arg(long, default_value_t = ServerConfig::default().lease_timeout_ms)]
    lease_timeout_ms: u64,
    /// The largest program accepted, in MiB.
    #[arg(long, default_value_t = ServerConfig::default().max_module_bytes / (1024 * 1024))]
    max_module_mib: u64,
    /// Affinity: how long (in milliseconds) a chunk waits for a worker that already holds its blobs,
    /// once another worker would take it, before that one takes it and fetches them.
    #[arg(long, default_value_t = ServerConfig::default().affinity_wait_ms)]
    affinity_wait_ms: u64,
    /// Close a session (refunding its escrow) once its consumer has been gone this long.
    #[arg(long, default_value_t = ServerConfig::default().session_idle_ms / 1000)]
    session_idle_secs: u64,
    /// Backups of a round's stragglers: once this percentage of its shards have answered, the shards still
    /// out get a backup replica on another volunteer (100: only by --backup-slowness).
    #[arg(long, default_value_t = ServerConfig::default().backup_when_done_percent, value_parser = clap::value_parser!(u32).range(1..=100))]
    backup_when_done_percent: u32,
    /// Backups: a shard's replica out this many times the round's typical run time gets a backup.
    #[arg(long, default_value_t = ServerConfig::default().backup_slowness, value_parser = clap::value_parser!(u32).range(1..=1000))]
    backup_slowness: u32,
    /// The largest broadcast of a session's round, in MiB.
    #[arg(long, default_value_t = ServerConfig::default().max_broadcast_bytes / (1024 * 1024))]
    max_broadcast_mib: u64,
    /// The largest blob accepted (`POST /api/blobs`), in MiB.
    #[arg(long, default_value_t = ServerConfig::default().max_blob_bytes / (1024 * 1024))]
    max_blob_mib: u64,
    /// What all of one account's blobs may hold together, in MiB.
    #[arg(long, default_value_t = ServerConfig::default().max_blob_bytes_per_account / (1024 * 1024))]
    max_blob_mib_per_account: u64,
    /// Credits a new account starts with (in millicredits: 1000 = one credit).
    #[arg(long, default_value_t = ServerConfig::default().starter_grant_millicredits)]
    starter_millicredits: i64,
    /// Sign-ups and log-ins allowed per minute from one address.
    #[arg(long, default_value_t = ServerConfig::default().auth_attempts_per_minute)]
    auth_attempts_per_minute: u32,
    /// Send session cookies without the Secure attribute, for serving plain HTTP to other machines.
    /// Browsers keep Secure cookies over plain HTTP only from localhost and 127.0.0.1.
    #[arg(long)]
    insecure_cookies: bool,
    /// Adaptive replication: validated results in a row after which a volunteer may be trusted to run
    /// a chunk alone (with random spot checks). A huge number turns it off.
    #[arg(long, default_value_t = ServerConfig::default().trust_after)]
    trust_after: u32,
    /// A request's head must arrive within this many milliseconds, and an idle kept-alive connection is
    /// closed after as long.
    #[arg(long, default_value_t = ServerConfig::default().header_read_timeout_ms)]
    header_read_timeout_ms: u64,
    /// Open connections in total, WebSockets included (at most what the open-file limit allows).
    #[arg(long, default_value_t = ServerConfig::default().max_connections)]
    max_connections: usize,
    /// Open connections from one client address.
    #[arg(long, default_value_t = ServerConfig::default().max_connections_per_address)]
    max_connections_per_address: usize,
    /// The origin people reach this server at, such as https://compute.example: site keys' snippets
    /// load the embed script from it. By default, http:// and the Host header of the request.
    #[arg(long)]
    public_origin: Option<String>,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<Outcome> {
    let public_origin = match &args.public_origin {
        Some(origin) => Some(
            distributivecom_protocol::embed::normalize_origin(origin)
                .map_err(|problem| anyhow::anyhow!("--public-origin: {problem}"))?,
        ),
        None => None,
    };
    let config = ServerConfig {
        listen: args.listen,
        data_dir: args.data.clone(),
        lease_timeout_ms: args.lease_timeout_ms,
        max_module_bytes: args.max_module_mib.saturating_mul(1024 * 1024),
        max_blob_bytes: args.max_blob_mib.saturating_mul(1024 * 1024),
        affinity_wait_ms: args.affinity_wait_ms,
        session_idle_ms: args.session_idle_secs.saturating_mul(1000),
        max_broadcast_bytes: args.max_broadcast_mib.saturating_mul(1024 * 1024),
        backup_when_done_percent: args.backup_when_done_percent,
        backup_slowness: args.backup_slowness,
        max_blob_bytes_per_account: args.max_blob_mib_per_account.saturating_mul(1024 * 1024),
        starter_grant_millicredits: args.starter_millicredits,
        auth_attempts_per_minute: args.auth_attempts_per_minute,
        secure_cookies: !args.insecure_cookies,
        trust_after: args.trust_after,
        header_read_timeout_ms: args.header_read_timeout_ms,
        max_connections: args.max_connections,
        max_connections_per_address: args.max_connections_per_address,
        public_origin,
        ..ServerConfig::default()
    };
    anyhow::ensure!(args.header_read_timeout_ms > 0, "--header-read-timeout-ms must be at least 1");
    anyhow::ensure!(
        args.max_connections > 0 && args.max_connections_per_address > 0,
        "--max-connections and --max-connections-per-address must be at least 1"
    );
    anyhow::ensure!(args.starter_millicredits >= 0, "--starter-millicredits cannot be negative");
    anyhow::ensure!(args.auth_attempts_per_minute > 0, "--auth-attempts-per-minute must be at least 1");
    let server = distributivecom_server::start(config)
        .await
        .with_context(|| format!("could not start the server with data in {}", args.data.display()))?;
    match server.admin_token_file() {
        Some(path) => eprintln!(
            "created the administrator account \"admin\"; its API token is in {} (use it with --token or \
             DISTRIBUTIVECOM_TOKEN)",
            path.display()
        ),
        None => eprintln!(
            "the administrator's API token was written to {} on first start",
            args.data.join("admin-token").display()
        ),
    }
    eprintln!("distributivecom is serving on http://{} (data in {})", server.address(), args.data.display());

    server.wait().await?;
    Ok(Outcome::Success)
}
