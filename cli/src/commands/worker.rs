//! `distributivecom worker`: a native volunteer.

use clap::Args;
use distributivecom_worker::{Worker, WorkerConfig};

use crate::Outcome;

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// How many chunks to run at once (default: the number of cores).
    #[arg(long)]
    slots: Option<u32>,
}

pub async fn run(server: &str, args: WorkerArgs) -> anyhow::Result<Outcome> {
    let cores = std::thread::available_parallelism().map(|cores| cores.get() as u32).unwrap_or(1);
    let slots = args.slots.unwrap_or(cores);
    anyhow::ensure!(slots > 0, "--slots must be at least 1");
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "native".to_owned());
    let config = WorkerConfig {
        server: server.to_owned(),
        slots,
        agent: format!("distributivecom-worker/{} on {host}", env!("CARGO_PKG_VERSION")),
    };
    let worker = Worker::new(config)?;
    eprintln!("worker: {slots} slots, serving {server}");
    worker.run().await;
    Ok(Outcome::Success)
}
