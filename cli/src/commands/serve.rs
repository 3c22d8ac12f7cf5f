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
}

pub async fn run(args: ServeArgs) -> anyhow::Result<Outcome> {
    let config = ServerConfig {
        listen: args.listen,
        data_dir: args.data.clone(),
        lease_timeout_ms: args.lease_timeout_ms,
        max_module_bytes: args.max_module_mib * 1024 * 1024,
        ..ServerConfig::default()
    };
    let server = distributivecom_server::start(config)
        .await
        .with_context(|| format!("could not start the server with data in {}", args.data.display()))?;
    eprintln!("distributivecom is serving on http://{} (data in {})", server.address(), args.data.display());
    server.wait().await?;
    Ok(Outcome::Success)
}
