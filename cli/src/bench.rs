//! `distributivecom bench`: an in-process coordinator (with its SQLite store on disk) and N native workers
//! over loopback WebSockets, driven through the real REST API.
//!
//! It measures two things:
//! - throughput: one job of many no-op chunks, from submission to the last durable result;
//! - round latency: jobs of 32 no-op chunks submitted one after another, from submission to the last
//!   durable result (what an iterative or interactive workload waits for each round).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use distributivecom_client::Client;
use distributivecom_protocol::api::{ChunkRequest, JobRequest, JobState};
use distributivecom_server::ServerConfig;
use distributivecom_worker::{Worker, WorkerConfig};
use serde::Serialize;

use crate::Outcome;

/// `(module (memory (export "memory") 1) (func (export "_start")))`: the smallest WASI command module.
pub const NOOP_MODULE: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
    0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: one type, () -> ()
    0x03, 0x02, 0x01, 0x00, // function section: one function of type 0
    0x05, 0x03, 0x01, 0x00, 0x01, // memory section: one memory, at least 1 page
    0x07, 0x13, 0x02, // export section: two exports
    0x06, b'm', b'e', b'm', b'o', b'r', b'y', 0x02, 0x00, // "memory" -> memory 0
    0x06, b'_', b's', b't', b'a', b'r', b't', 0x00, 0x00, // "_start" -> function 0
    0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // code section: one empty body
];

const ROUND_CHUNKS: usize = 32;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Native workers to start.
    #[arg(long, default_value_t = 2)]
    workers: u32,
    /// Slots per worker.
    #[arg(long, default_value_t = 1)]
    slots: u32,
    /// Chunks in the throughput job.
    #[arg(long, default_value_t = 20_000)]
    chunks: u32,
    /// Rounds of 32 chunks for the latency figures.
    #[arg(long, default_value_t = 200)]
    rounds: u32,
    /// Keep the database here instead of in a temporary directory.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Figures {
    workers: u32,
    slots_per_worker: u32,
    throughput_chunks: u32,
    chunks_per_sec: f64,
    rounds: u32,
    round_chunks: usize,
    round_p50_ms: f64,
    round_p90_ms: f64,
    round_p99_ms: f64,
    round_max_ms: f64,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<Outcome> {
    if args.workers == 0 || args.slots == 0 || args.chunks == 0 || args.rounds == 0 {
        bail!("--workers, --slots, --chunks and --rounds must be at least 1");
    }
    let temporary = tempfile::tempdir().context("could not create a temporary directory")?;
    let data_dir = args.data.clone().unwrap_or_else(|| temporary.path().to_owned());
    let config = ServerConfig { listen: ([127, 0, 0, 1], 0).into(), data_dir, ..ServerConfig::default() };
    let server = distributivecom_server::start(config).await.context("could not start the server")?;
    let base = format!("http://{}", server.address());
    for index in 0..args.workers {
        let worker = Worker::new(WorkerConfig {
            server: base.clone(),
            slots: args.slots,
            agent: format!("bench-worker-{index}"),
        })?;
        tokio::spawn(worker.run());
    }
    let client = Client::new(&base)?;
    let module = client.upload_module(NOOP_MODULE.to_vec()).await?;
    wait_for_workers(&client, args.workers).await?;

    // Warm up: every worker fetches and compiles the module, and the connections settle.
    run_job(&client, &module, 256).await?;

    let started = Instant::now();
    run_job(&client, &module, args.chunks as usize).await?;
    let throughput = f64::from(args.chunks) / started.elapsed().as_secs_f64();

    let mut rounds = Vec::with_capacity(args.rounds as usize);
    for _ in 0..args.rounds {
        let started = Instant::now();
        run_job(&client, &module, ROUND_CHUNKS).await?;
        rounds.push(started.elapsed());
    }
    rounds.sort();
    let figures = Figures {
        workers: args.workers,
        slots_per_worker: args.slots,
        throughput_chunks: args.chunks,
        chunks_per_sec: throughput.round(),
        rounds: args.rounds,
        round_chunks: ROUND_CHUNKS,
        round_p50_ms: percentile_ms(&rounds, 0.50),
        round_p90_ms: percentile_ms(&rounds, 0.90),
        round_p99_ms: percentile_ms(&rounds, 0.99),
        round_max_ms: percentile_ms(&rounds, 1.0),
    };
    if args.json {
        println!("{}", serde_json::to_string(&figures)?);
    } else {
        println!(
            "{} native workers x {} slots, SQLite store on, loopback WebSockets",
            figures.workers, figures.slots_per_worker
        );
        println!("no-op throughput: {:.0} chunks/s ({} chunks)", figures.chunks_per_sec, figures.throughput_chunks);
        println!(
            "{}-chunk round latency: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} rounds)",
            figures.round_chunks,
            figures.round_p50_ms,
            figures.round_p90_ms,
            figures.round_p99_ms,
            figures.round_max_ms,
            figures.rounds
        );
    }
    server.stop();
    Ok(Outcome::Success)
}

async fn wait_for_workers(client: &Client, workers: u32) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.stats().await?.workers < workers {
        if Instant::now() > deadline {
            bail!("the workers did not connect within 30 seconds");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

async fn run_job(client: &Client, module: &str, chunks: usize) -> anyhow::Result<()> {
    let request = JobRequest {
        module: module.to_owned(),
        chunks: vec![ChunkRequest::default(); chunks],
        ..JobRequest::default()
    };
    let created = client.submit(&request).await?;
    let status = client.wait_until_finished(created.id).await?;
    if status.state != JobState::Succeeded {
        bail!("a benchmark job did not succeed: {status:?}");
    }
    Ok(())
}

/// The value at quantile `q` (nearest rank) of sorted durations, in milliseconds.
fn percentile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&sorted, 0.5), 50.0);
        assert_eq!(percentile_ms(&sorted, 0.99), 99.0);
        assert_eq!(percentile_ms(&sorted, 1.0), 100.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }
}
