//! `distributivecom submit PROGRAM.wasm [--chunks FILE.jsonl | INPUT_FILE...] [--wait] [--out DIR]`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use distributivecom_protocol::Bytes;
use distributivecom_protocol::api::{ChunkRequest, FileInput, JobRequest, LimitsRequest, ReplicationRequest};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;

use super::{Remote, describe, outcome_of};
use crate::Outcome;
use crate::output::{report_failures, write_results};

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The program: a WASI preview 1 command module (for example built with --target wasm32-wasip1).
    program: PathBuf,
    /// Each input file becomes one chunk whose stdin is that file.
    #[arg(conflicts_with = "chunks")]
    inputs: Vec<PathBuf>,
    /// A JSON Lines file, one chunk per line:
    /// {"args": [...], "stdin": "text" | "stdin_file": "path", "files": {"name.bin": "local/path"}}.
    /// Relative paths are resolved against the directory of FILE.
    #[arg(long, value_name = "FILE")]
    chunks: Option<PathBuf>,
    /// An argument for every chunk made from INPUT_FILEs (repeat for more).
    #[arg(long = "arg", value_name = "ARG", allow_hyphen_values = true)]
    args: Vec<String>,
    /// An environment variable for every chunk, as KEY=VALUE (repeat for more).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// A name for the job.
    #[arg(long)]
    name: Option<String>,
    /// Time limit per chunk, in seconds.
    #[arg(long, value_name = "SECONDS")]
    time_limit: Option<f64>,
    /// Memory limit per chunk, in MiB.
    #[arg(long, value_name = "MIB")]
    memory_limit: Option<u64>,
    /// How many times a failed chunk is retried on another volunteer.
    #[arg(long)]
    max_retries: Option<u32>,
    /// The most work units one run of a chunk may use (the instruction limit; it also bounds the price).
    #[arg(long, value_name = "UNITS")]
    max_work_units: Option<u64>,
    /// The most stdout one run keeps, in MiB (default 1; more is cut and flagged as truncated).
    #[arg(long, value_name = "MIB")]
    max_stdout_mib: Option<f64>,
    /// The most stderr one run keeps, in MiB (default 1).
    #[arg(long, value_name = "MIB")]
    max_stderr_mib: Option<f64>,
    /// The most bytes all files under /data may hold together, inputs and outputs, in MiB (default 64).
    #[arg(long, value_name = "MIB")]
    max_data_mib: Option<f64>,
    /// The most the job may cost, in credits: held in escrow while it runs, the rest refunded.
    /// Default: your balance, up to the job's maximum cost.
    #[arg(long, value_name = "CREDITS")]
    budget: Option<f64>,
    /// Replicas of each chunk, run by distinct volunteers (default 2). 1: no validation, and only your
    /// own workers (started with your token) run the job.
    #[arg(long)]
    replicas: Option<u32>,
    /// How many replicas must return identical results (default: 2, or 1 with --replicas 1).
    #[arg(long, requires = "replicas")]
    quorum: Option<u32>,
    /// Wait for the job to finish, showing progress.
    #[arg(long)]
    wait: bool,
    /// With --wait, write each chunk's result to DIR/<chunk index>/.
    #[arg(long, value_name = "DIR", requires = "wait")]
    out: Option<PathBuf>,
    /// Files of a --chunks file larger than this (in KiB) are uploaded once as blobs (`POST /api/blobs`)
    /// and named by hash, instead of travelling inside the job request: volunteers fetch each once and
    /// keep it.
    #[arg(long, value_name = "KIB", default_value_t = 1024)]
    blob_threshold_kib: u64,
}

/// One line of a `--chunks` file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChunkLine {
    #[serde(default)]
    args: Vec<String>,
    stdin: Option<String>,
    stdin_file: Option<PathBuf>,
    #[serde(default)]
    files: BTreeMap<String, PathBuf>,
}

pub async fn run(remote: &Remote, args: SubmitArgs) -> anyhow::Result<Outcome> {
    let client = remote.client()?;
    let program =
        fs::read(&args.program).with_context(|| format!("could not read the program {}", args.program.display()))?;
    let chunks = match &args.chunks {
        Some(path) => chunks_from_lines(path)?,
        None => chunks_from_inputs(&args.inputs, &args.args)?,
    };
    let env = parse_env(&args.env)?;
    let limits = LimitsRequest {
        time_limit_ms: args.time_limit.map(|seconds| (seconds * 1000.0).round() as u64),
        memory_limit_bytes: args.memory_limit.map(|mib| mib.saturating_mul(1024 * 1024)),
        max_work_units: args.max_work_units,
        max_stdout_bytes: mebibytes("--max-stdout-mib", args.max_stdout_mib)?,
        max_stderr_bytes: mebibytes("--max-stderr-mib", args.max_stderr_mib)?,
        max_data_bytes: mebibytes("--max-data-mib", args.max_data_mib)?,
    };
    let budget_millicredits = match args.budget {
        Some(credits) if !(credits > 0.0 && credits.is_finite()) => {
            bail!("--budget must be a positive number of credits")
        }
        Some(credits) => Some((credits * 1000.0).round() as i64),
        None => None,
    };
    let replication = args.replicas.map(|replicas| ReplicationRequest {
        replicas,
        quorum: args.quorum.unwrap_or(if replicas == 1 { 1 } else { 2 }),
    });
    let program_name = args.program.file_name().map(|name| name.to_string_lossy().into_owned());

    let module = client.upload_module(program).await.context("could not upload the program")?;
    let chunks = upload_large_files(&client, chunks, args.blob_threshold_kib.saturating_mul(1024)).await?;
    let request = JobRequest {
        module,
        name: args.name.clone(),
        program_name,
        chunks,
        env,
        limits,
        max_retries: args.max_retries,
        budget_millicredits,
        replication,
    };
    let created = client.submit(&request).await.context("could not submit the job")?;
    println!("{}", created.id);
    if !args.wait {
        return Ok(Outcome::Success);
    }

    let bar = ProgressBar::new(u64::from(created.chunks));
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} chunks ({msg})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let status = client
        .wait(created.id, |status| {
            bar.set_position(u64::from(status.finished_chunks()));
            let mut message = format!("{} failed, {} running", status.failed, status.running);
            if let Some(reason) = &status.waiting_reason {
                message.push_str(&format!("; waiting: {reason}"));
            }
            bar.set_message(message);
        })
        .await?;
    bar.finish_and_clear();
    eprintln!("{}", describe(&status));
    let results = client.all_results(created.id).await?;
    if let Some(dir) = &args.out {
        write_results(dir, &results)?;
        eprintln!("wrote {} results to {}", results.len(), dir.display());
    }
    report_failures(&results);
    Ok(outcome_of(&status))
}

/// Replaces every input file larger than `threshold` bytes by a blob. Each distinct file is sent once:
/// `upload_blob` asks first whether the account already holds the bytes.
async fn upload_large_files(
    client: &distributivecom_client::Client,
    mut chunks: Vec<ChunkRequest>,
    threshold: u64,
) -> anyhow::Result<Vec<ChunkRequest>> {
    for chunk in &mut chunks {
        for (path, file) in chunk.files.iter_mut() {
            let FileInput::Inline(contents) = file else { continue };
            if contents.len() as u64 <= threshold {
                continue;
            }
            let bytes = std::mem::take(&mut contents.0);
            let info = client.upload_blob(bytes).await.with_context(|| format!("could not upload {path} as a blob"))?;
            *file = FileInput::Blob { blob: info.sha256 };
        }
    }
    Ok(chunks)
}

fn chunks_from_inputs(inputs: &[PathBuf], args: &[String]) -> anyhow::Result<Vec<ChunkRequest>> {
    if inputs.is_empty() {
        // No inputs at all: one chunk with the given arguments and empty stdin.
        return Ok(vec![ChunkRequest { args: args.to_vec(), ..ChunkRequest::default() }]);
    }
    inputs
        .iter()
        .map(|path| {
            let stdin = fs::read(path).with_context(|| format!("could not read the input {}", path.display()))?;
            Ok(ChunkRequest { args: args.to_vec(), stdin: Bytes(stdin), files: BTreeMap::new() })
        })
        .collect()
}

fn chunks_from_lines(path: &Path) -> anyhow::Result<Vec<ChunkRequest>> {
    let text = fs::read_to_string(path).with_context(|| format!("could not read {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut chunks = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), number + 1);
        let parsed: ChunkLine = serde_json::from_str(line).with_context(|| format!("{}: not a chunk", at()))?;
        let stdin = match (parsed.stdin, parsed.stdin_file) {
            (Some(_), Some(_)) => bail!("{}: give either stdin or stdin_file, not both", at()),
            (Some(text), None) => text.into_bytes(),
            (None, Some(file)) => {
                let file = base.join(file);
                fs::read(&file).with_context(|| format!("{}: could not read {}", at(), file.display()))?
            }
            (None, None) => Vec::new(),
        };
        let mut files = BTreeMap::new();
        for (name, local) in parsed.files {
            let local = base.join(local);
            let contents = fs::read(&local).with_context(|| format!("{}: could not read {}", at(), local.display()))?;
            files.insert(name, FileInput::Inline(Bytes(contents)));
        }
        chunks.push(ChunkRequest { args: parsed.args, stdin: Bytes(stdin), files });
    }
    if chunks.is_empty() {
        bail!("{} holds no chunks", path.display());
    }
    Ok(chunks)
}

/// A size given in MiB (fractions allowed, such as 1.5), in bytes.
fn mebibytes(flag: &str, mib: Option<f64>) -> anyhow::Result<Option<u64>> {
    match mib {
        None => Ok(None),
        Some(mib) if mib > 0.0 && mib.is_finite() => Ok(Some((mib * 1024.0 * 1024.0).round() as u64)),
        Some(mib) => bail!("{flag} must be a positive number of MiB, not {mib}"),
    }
}

fn parse_env(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
            _ => bail!("--env {pair:?} must look like KEY=VALUE"),
        })
        .collect()
}
