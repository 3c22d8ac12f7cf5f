//! `distributivecom train`: the live demo of iterative work. Trains a softmax regression on the bundled
//! handwritten digits over whatever volunteers are connected, one session round per step of gradient
//! descent (the weights are the broadcast, the training set's shards stay cached on the volunteers as
//! blobs), then trains the same way in this one process and compares.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use distributivecom_examples::train::{self, Gradient, PARAMETERS};
use distributivecom_protocol::api::{ChunkRequest, FileInput, LimitsRequest, ReplicationRequest};
use distributivecom_protocol::session::SessionRequest;
use serde::Serialize;

use super::Remote;
use crate::Outcome;

/// The bundled data set (see `examples/data/README.md` for its origin and licence).
const DIGITS: &str = include_str!("../../../examples/data/digits.csv");

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Steps of gradient descent, each one round of the session.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    rounds: u32,
    /// Shards of the training set, each one run per round.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    shards: u32,
    /// Replicas of each shard's run per round, and how many must agree (1 and 1: only your own workers).
    #[arg(long, default_value_t = 2)]
    replicas: u32,
    #[arg(long, default_value_t = 2)]
    quorum: u32,
    /// The most the whole training may cost, in millicredits (default: every round at its work limit).
    #[arg(long)]
    budget: Option<i64>,
    /// The `gradient` program (default: the one built next to this binary).
    #[arg(long)]
    program: Option<PathBuf>,
    /// Print one JSON object at the end instead of the progress lines.
    #[arg(long)]
    json: bool,
}

/// The most work units one shard's gradient may take: a few times what it needs.
const MAX_WORK_UNITS: u64 = 200_000_000;

#[derive(Debug, Serialize)]
struct Report {
    rounds: u32,
    shards: u32,
    session: u64,
    round_p50_ms: f64,
    round_p99_ms: f64,
    final_loss: f32,
    local_final_loss: f32,
    accuracy: f32,
    local_accuracy: f32,
    /// Whether the distributed weights are the local ones, bit for bit.
    identical_to_local: bool,
    spent_millicredits: i64,
}

pub async fn run(remote: &Remote, args: TrainArgs) -> anyhow::Result<Outcome> {
    let client = remote.client()?;
    let program = match &args.program {
        Some(path) => path.clone(),
        None => built_program().context(
            "the gradient program was not found next to this binary: build it with `cargo xtask build`, or pass \
             --program PATH",
        )?,
    };
    let bytes = std::fs::read(&program).with_context(|| format!("could not read {}", program.display()))?;
    let samples = train::parse_csv(DIGITS)?;
    let (shards, test) = train::split(&samples, args.shards as usize);

    let module = client.upload_module(bytes).await?;
    let mut files = Vec::new();
    for shard in &shards {
        let blob = client.upload_blob(train::encode_shard(shard)).await?;
        let files_of = [("shard.bin".to_owned(), FileInput::Blob { blob: blob.sha256 })].into();
        files.push(ChunkRequest { files: files_of, ..ChunkRequest::default() });
    }
    let pricing = client.pricing().await?;
    let max_round = ((MAX_WORK_UNITS / 1_000_000).saturating_mul(pricing.millicredits_per_million_work_units) as i64)
        .max(1)
        .saturating_mul(i64::from(args.quorum) * shards.len() as i64);
    let budget = match args.budget {
        Some(budget) => budget,
        None => max_round.saturating_mul(i64::from(args.rounds)).min(client.account().await?.balance_millicredits),
    };
    let request = SessionRequest {
        module,
        name: Some("digits".to_owned()),
        program_name: Some("gradient.wasm".to_owned()),
        shards: files,
        limits: LimitsRequest { max_work_units: Some(MAX_WORK_UNITS), ..LimitsRequest::default() },
        budget_millicredits: budget,
        replication: Some(ReplicationRequest { replicas: args.replicas, quorum: args.quorum }),
        ..SessionRequest::default()
    };
    let mut session = client.open_session(&request).await?;
    if !args.json {
        eprintln!(
            "session {}: {} shards of the digits, {} rounds; watch it live at {}",
            session.id(),
            shards.len(),
            args.rounds,
            client.session_page(session.id())
        );
    }

    // A round that waits says why (too few distinct volunteers for the replication, say), once in a while.
    let watchdog = (!args.json).then(|| tokio::spawn(explain_waits(client.clone(), session.id())));
    let mut weights = vec![0f32; PARAMETERS];
    let mut loss = f32::NAN;
    let mut round_ms = Vec::new();
    for round in 1..=args.rounds {
        let started = Instant::now();
        let results = session.round(train::encode_weights(&weights)).await?;
        round_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        let mut answers = Vec::with_capacity(results.len());
        for result in &results {
            anyhow::ensure!(
                result.succeeded,
                "shard {} failed in round {round}: {}: {}",
                result.index,
                result.reason,
                String::from_utf8_lossy(&result.output.stderr)
            );
            answers.push(Gradient::decode(&result.output.stdout).with_context(|| format!("shard {}", result.index))?);
        }
        (weights, loss) = train::step(&weights, &answers);
        // For the live page: the loss of the weights this round measured.
        session.note(round.into(), [("loss".to_owned(), f64::from(loss))].into()).await?;
        if !args.json {
            eprintln!(
                "{} round {round}/{}  loss {loss:.4}  {:.1} ms",
                bar(round, args.rounds),
                args.rounds,
                round_ms[round as usize - 1]
            );
        }
    }
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    let session_id = session.id();
    session.close().await?;
    let spent = client.session_status(session_id).await?.spent_millicredits;

    let (local_weights, local_losses) = train::train_locally(&shards, args.rounds);
    let report = Report {
        rounds: args.rounds,
        shards: shards.len() as u32,
        session: session_id,
        round_p50_ms: percentile(&round_ms, 50.0),
        round_p99_ms: percentile(&round_ms, 99.0),
        final_loss: loss,
        local_final_loss: local_losses.last().copied().unwrap_or(f32::NAN),
        accuracy: train::accuracy(&weights, &test),
        local_accuracy: train::accuracy(&local_weights, &test),
        identical_to_local: weights == local_weights,
        spent_millicredits: spent,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "trained over volunteers: loss {:.4}, test accuracy {:.1}%; in one process: loss {:.4}, accuracy {:.1}% \
             ({}); rounds p50 {:.1} ms, p99 {:.1} ms; spent {}",
            report.final_loss,
            report.accuracy * 100.0,
            report.local_final_loss,
            report.local_accuracy * 100.0,
            if report.identical_to_local { "the same weights, bit for bit" } else { "the weights differ" },
            report.round_p50_ms,
            report.round_p99_ms,
            super::credits(spent)
        );
    }
    Ok(if report.identical_to_local { Outcome::Success } else { Outcome::ChunksFailed })
}

/// Every 5 s, says why a round that has been running that long waits.
async fn explain_waits(client: distributivecom_client::Client, session: u64) {
    let mut said = String::new();
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        let Ok(rounds) = client.session_rounds(session, 1).await else { continue };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        let stuck = rounds
            .rounds
            .iter()
            .find(|round| round.state == "running" && now.saturating_sub(round.started_at_ms) > 5_000);
        let Some(round) = stuck else { continue };
        let Ok(status) = client.status(round.job).await else { continue };
        let reason = status.waiting_reason.unwrap_or_else(|| "its shards are still running".to_owned());
        if reason != said {
            eprintln!("round {} is waiting: {reason}", round.round);
            said = reason;
        }
    }
}

fn bar(done: u32, total: u32) -> String {
    let filled = (done as usize * 20) / total.max(1) as usize;
    format!("[{}{}]", "#".repeat(filled), ".".repeat(20 - filled))
}

fn percentile(values: &[f64], percent: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((percent / 100.0) * sorted.len() as f64).ceil() as usize;
    let value = sorted.get(rank.saturating_sub(1).min(sorted.len().saturating_sub(1))).copied().unwrap_or(f64::NAN);
    (value * 100.0).round() / 100.0
}

/// `gradient.wasm` as `cargo xtask build` leaves it next to this binary's target directory.
fn built_program() -> Option<PathBuf> {
    let executable = std::env::current_exe().ok()?;
    let target = executable.parent()?.parent()?;
    let path = target.join("wasm32-wasip1/wasi-release/gradient.wasm");
    path.exists().then_some(path)
}
