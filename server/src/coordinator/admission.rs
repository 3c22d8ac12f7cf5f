//! Admission of a job: the request checked against the server's rules and limits, its price bounded, its
//! owner's credits escrowed and room reserved among the owner's active work, then stored durably and
//! handed to the scheduler. The HTTP handler only reads the body and maps the refusal.

use std::collections::HashMap;
use std::sync::Arc;

use distributivecom_protocol::api::{
    ChunkRequest, FileInput, JobCreated, JobRequest, LimitsRequest, ReplicationRequest,
};
use distributivecom_protocol::is_sha256_hex;
use distributivecom_protocol::worker::{Limits, ModuleRef};

use super::{Coordinator, Progress, Usage, named_blobs};
use crate::clock::unix_ms;
use crate::config::ServerConfig;
use crate::format::human_bytes;
use crate::store::sessions::Round;
use crate::store::writes::Admission;
use crate::store::{JobRow, NewJob, StoreError, blobs};

const MAX_NAME_CHARS: usize = 200;

/// Why a job was not admitted; each message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Malformed or out of bounds (a limit, the replication, a file path).
    #[error("{0}")]
    Invalid(String),
    /// The program was not uploaded by the job's owner.
    #[error("{0}")]
    UnknownModule(String),
    /// A chunk names a blob the job's owner has not uploaded.
    #[error("{0}")]
    UnknownBlob(String),
    /// The owner cannot cover the budget.
    #[error("{0}")]
    InsufficientCredits(String),
    /// The owner's active work is at its limit.
    #[error("{0}")]
    TooMuchRunning(String),
    /// A round its session cannot run now: closed, or out of order.
    #[error("{0}")]
    Round(String),
    /// No such session among the caller's.
    #[error("{0}")]
    UnknownSession(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Coordinator {
    /// Admits `owner`'s job: checks it, escrows its budget and stores it with its chunks in one durable
    /// transaction, then dispatches it. `run_module` is the instrumented module of the program `owner`
    /// uploaded under `request.module`, if they did.
    pub async fn submit(
        &self,
        owner: u64,
        request: JobRequest,
        run_module: Option<ModuleRef>,
    ) -> Result<JobCreated, Refusal> {
        let checked = self.check(owner, &request, run_module).await?;
        let mut request = request;
        let chunks: Arc<[ChunkRequest]> = std::mem::take(&mut request.chunks).into();
        self.admit(owner, request, chunks, checked, None).await
    }

    /// Admits a checked job, or a session's round (funded from the session's escrow) when `round` is
    /// given (its shards were checked when the session opened).
    pub(super) async fn admit(
        &self,
        owner: u64,
        request: JobRequest,
        chunks: Arc<[ChunkRequest]>,
        checked: Checked,
        round: Option<Round>,
    ) -> Result<JobCreated, Refusal> {
        let Checked { limits, max_retries, replicas, quorum, program_name, blob_sizes, max_cost, run_module } = checked;

        let created_at_ms = unix_ms();
        let new_job = NewJob {
            owner,
            budget: request.budget_millicredits,
            max_cost,
            replicas,
            quorum,
            name: request.name.clone(),
            module: request.module.clone(),
            program_name: program_name.clone(),
            env: request.env.clone(),
            limits,
            max_retries,
            created_at_ms,
            chunks: chunks.clone(),
            round: round.clone(),
        };
        // Active jobs live in memory: each account has room for only so much at once.
        let broadcast = round.as_ref().map(|round| round.broadcast.clone());
        let usage = Usage::of_job(&chunks, broadcast.as_ref());
        let reservation = self.reserve(owner, usage).map_err(Refusal::TooMuchRunning)?;
        let (id, budget) = match self.store.insert_job(new_job).await {
            Ok(Admission::Accepted { id, budget }) => (id, budget),
            Ok(Admission::InsufficientCredits { balance, budget }) => {
                return Err(Refusal::InsufficientCredits(match &round {
                    None => insufficient_credits(balance, budget, max_cost),
                    Some(_) => format!(
                        "the session's escrow holds {balance} millicredits, not enough for another round; open a \
                         new session with a larger budget"
                    ),
                }));
            }
            Ok(Admission::RoundRefused(message)) => return Err(Refusal::Round(message)),
            Err(error) => return Err(error.into()),
        };
        // The job is stored: `activate` holds its room from here on (and gives it back if it cannot run).
        reservation.keep();
        let row = JobRow {
            id,
            name: request.name.unwrap_or_else(|| format!("job-{id}")),
            module: request.module,
            run_module,
            program_name,
            env: request.env,
            limits,
            max_retries,
            chunk_count: chunks.len() as u32,
            created_at_ms,
            cancelled_at_ms: None,
            owner: Some(owner),
            budget,
            replicas,
            quorum,
            stop_reason: None,
            session_round: round.as_ref().map(|round| (round.session, round.round)),
        };
        let created = JobCreated { id, chunks: row.chunk_count };
        if !self.activate(row, chunks, blob_sizes, Progress::default(), Vec::new(), usage, broadcast) {
            // Its session closed while it was being stored: the close cancelled it and refunded its escrow.
            return Err(Refusal::Round("the session closed".to_owned()));
        }
        Ok(created)
    }

    /// Checks a job request (or a session's shards, as a job) against the server's rules and limits.
    pub(super) async fn check(
        &self,
        owner: u64,
        request: &JobRequest,
        run_module: Option<ModuleRef>,
    ) -> Result<Checked, Refusal> {
        let config = &self.config;
        let limits = resolve_limits(&request.limits, config)?;
        let max_retries = request.max_retries.unwrap_or(config.default_max_retries);
        if max_retries > config.max_retries_cap {
            return Err(Refusal::Invalid(format!(
                "max_retries is {max_retries}, more than the server's maximum of {}",
                config.max_retries_cap
            )));
        }
        let (replicas, quorum) = resolve_replication(request.replication.as_ref(), config)?;
        let program_name = request.program_name.clone().unwrap_or_else(|| "program.wasm".to_owned());
        let blob_sizes = self.owned_blobs(owner, &request.chunks).await?;
        check_request(request, &program_name, &blob_sizes, &limits, config)?;
        let max_cost = max_cost(config, &limits, quorum, request.chunks.len());
        if let Some(budget) = request.budget_millicredits
            && budget <= 0
        {
            return Err(Refusal::Invalid(format!("budget_millicredits must be more than 0, not {budget}")));
        }
        let Some(run_module) = run_module else {
            return Err(Refusal::UnknownModule(format!(
                "module {} has not been uploaded by this account; upload it with POST /api/modules first",
                request.module
            )));
        };
        Ok(Checked { limits, max_retries, replicas, quorum, program_name, blob_sizes, max_cost, run_module })
    }

    /// The sizes of the blobs the chunks name, each of which `owner` must have uploaded; otherwise the
    /// refusal names the first chunk, file and hash that is not.
    async fn owned_blobs(&self, owner: u64, chunks: &[ChunkRequest]) -> Result<HashMap<String, u64>, Refusal> {
        let named: Vec<String> = named_blobs(chunks).into_iter().map(str::to_owned).collect();
        if named.is_empty() {
            return Ok(HashMap::new());
        }
        if let Some(bad) = named.iter().find(|sha256| !is_sha256_hex(sha256)) {
            let (chunk, path) = naming(chunks, bad);
            return Err(Refusal::Invalid(format!(
                "chunk {chunk}: file {path:?} names blob {bad:?}, which is not a SHA-256 (64 lowercase hex digits)"
            )));
        }
        let sizes = self
            .store
            .read(move |connection| {
                let mut sizes = HashMap::new();
                for sha256 in named {
                    let size = blobs::owned_size(connection, owner, &sha256)?;
                    sizes.insert(sha256, size);
                }
                Ok(sizes)
            })
            .await?;
        if let Some((missing, _)) = sizes.iter().find(|(_, size)| size.is_none()) {
            let (chunk, path) = naming(chunks, missing);
            return Err(Refusal::UnknownBlob(format!(
                "chunk {chunk}: file {path:?} names blob {missing}, which this account has not uploaded; \
                 upload it with POST /api/blobs first"
            )));
        }
        Ok(sizes.into_iter().map(|(sha256, size)| (sha256, size.unwrap_or_default())).collect())
    }
}

/// A request that passed [`Coordinator::check`], with everything resolved.
#[derive(Clone)]
pub(super) struct Checked {
    pub limits: Limits,
    pub max_retries: u32,
    pub replicas: u32,
    pub quorum: u32,
    pub program_name: String,
    pub blob_sizes: HashMap<String, u64>,
    pub max_cost: i64,
    pub run_module: ModuleRef,
}

/// The first chunk and file that name blob `sha256`.
fn naming<'a>(chunks: &'a [ChunkRequest], sha256: &str) -> (usize, &'a str) {
    chunks
        .iter()
        .enumerate()
        .find_map(|(index, chunk)| {
            chunk.files.iter().find_map(|(path, file)| {
                matches!(file, FileInput::Blob { blob } if blob == sha256).then_some((index, path.as_str()))
            })
        })
        .unwrap_or((0, ""))
}

/// The most a job can cost: every chunk accepted with a full quorum of replicas at the work limit.
pub fn max_cost(config: &ServerConfig, limits: &Limits, quorum: u32, chunks: usize) -> i64 {
    config.pricing.cost(limits.max_work_units).saturating_mul(i64::from(quorum)).saturating_mul(chunks as i64)
}

/// The 402 message: what the account has, what the job needs, and what to do about it.
fn insufficient_credits(balance: i64, budget: i64, max_cost: i64) -> String {
    let credits = |millicredits: i64| format!("{:.3} credits", millicredits as f64 / 1000.0);
    if balance <= 0 {
        return format!(
            "your balance is {}: earn credits by volunteering (or wait for your running jobs to return their \
             escrow) before submitting",
            credits(balance)
        );
    }
    format!(
        "the job's budget is {} but your balance is {}; lower budget_millicredits (the job can cost at most {} \
         with its work limit), or wait for your running jobs to return their escrow",
        credits(budget),
        credits(balance),
        credits(max_cost)
    )
}

/// The job's replication: the request's, or the server's default. One replica (no validation) is only
/// run by the owner's own workers.
fn resolve_replication(requested: Option<&ReplicationRequest>, config: &ServerConfig) -> Result<(u32, u32), Refusal> {
    let Some(requested) = requested else {
        return Ok((config.default_replicas, config.default_quorum));
    };
    let ReplicationRequest { replicas, quorum } = *requested;
    if replicas == 0 || replicas > config.max_replicas {
        return Err(Refusal::Invalid(format!(
            "replication.replicas must be 1 to {}, not {replicas}",
            config.max_replicas
        )));
    }
    if quorum == 0 || quorum > replicas {
        return Err(Refusal::Invalid(format!(
            "replication.quorum must be 1 to replication.replicas ({replicas}), not {quorum}"
        )));
    }
    if quorum == 1 && replicas > 1 {
        return Err(Refusal::Invalid(
            "a quorum of 1 with several replicas validates nothing; use replicas 1 (run by your own workers only) \
             or a quorum of at least 2"
                .to_owned(),
        ));
    }
    Ok((replicas, quorum))
}

/// The job's limits: the request's where given, the server's defaults elsewhere, all within the maxima.
fn resolve_limits(requested: &LimitsRequest, config: &ServerConfig) -> Result<Limits, Refusal> {
    let pick = |name: &str, value: Option<u64>, default: u64, max: u64| {
        let value = value.unwrap_or(default);
        if value == 0 {
            return Err(Refusal::Invalid(format!("limits.{name} must be more than 0")));
        }
        if value > max {
            return Err(Refusal::Invalid(format!("limits.{name} is {value}, more than the server's maximum of {max}")));
        }
        Ok(value)
    };
    let (defaults, maxima) = (&config.default_limits, &config.max_limits);
    Ok(Limits {
        memory_bytes: pick(
            "memory_limit_bytes",
            requested.memory_limit_bytes,
            defaults.memory_bytes,
            maxima.memory_bytes,
        )?,
        time_limit_ms: pick("time_limit_ms", requested.time_limit_ms, defaults.time_limit_ms, maxima.time_limit_ms)?,
        max_stdout_bytes: pick(
            "max_stdout_bytes",
            requested.max_stdout_bytes,
            defaults.max_stdout_bytes,
            maxima.max_stdout_bytes,
        )?,
        max_stderr_bytes: pick(
            "max_stderr_bytes",
            requested.max_stderr_bytes,
            defaults.max_stderr_bytes,
            maxima.max_stderr_bytes,
        )?,
        max_data_bytes: pick(
            "max_data_bytes",
            requested.max_data_bytes,
            defaults.max_data_bytes,
            maxima.max_data_bytes,
        )?,
        max_work_units: pick(
            "max_work_units",
            requested.max_work_units,
            defaults.max_work_units,
            maxima.max_work_units,
        )?,
    })
}

/// Everything about a job request that can be checked without the database.
fn check_request(
    request: &JobRequest,
    program_name: &str,
    blob_sizes: &HashMap<String, u64>,
    limits: &Limits,
    config: &ServerConfig,
) -> Result<(), Refusal> {
    let JobRequest { module, name, chunks, env, .. } = request;
    let name = name.as_deref();
    if !is_sha256_hex(module) {
        return Err(Refusal::Invalid(format!(
            "module must be the SHA-256 (64 lowercase hex digits) of an uploaded module, not {module:?}"
        )));
    }
    if let Some(name) = name
        && (name.trim().is_empty() || name.chars().count() > MAX_NAME_CHARS)
    {
        return Err(Refusal::Invalid(format!("name must have 1 to {MAX_NAME_CHARS} characters")));
    }
    if program_name.is_empty() || program_name.chars().count() > MAX_NAME_CHARS || program_name.contains('\0') {
        return Err(Refusal::Invalid(format!("program_name must have 1 to {MAX_NAME_CHARS} characters and no NUL")));
    }
    if chunks.is_empty() {
        return Err(Refusal::Invalid("a job needs at least one chunk".to_owned()));
    }
    if chunks.len() > config.max_chunks_per_job as usize {
        return Err(Refusal::Invalid(format!(
            "the job has {} chunks, more than the server's maximum of {}",
            chunks.len(),
            config.max_chunks_per_job
        )));
    }
    for (index, chunk) in chunks.iter().enumerate() {
        let args = std::iter::once(program_name).chain(chunk.args.iter().map(String::as_str));
        let env = env.iter().map(|(name, value)| (name.as_str(), value.as_str()));
        let files = chunk.files.iter().map(|(path, file)| {
            let size = match file {
                FileInput::Inline(contents) => contents.len() as u64,
                FileInput::Blob { blob } => blob_sizes.get(blob).copied().unwrap_or_default(),
            };
            (path.as_str(), size)
        });
        distributivecom_wasi::check_inputs(args, env, files, limits.max_data_bytes)
            .map_err(|error| Refusal::Invalid(format!("chunk {index}: {error}")))?;
        if chunk.stdin.len() as u64 > limits.max_data_bytes {
            return Err(Refusal::Invalid(format!(
                "chunk {index}: stdin holds {}, more than the job's data limit of {}",
                human_bytes(chunk.stdin.len() as u64),
                human_bytes(limits.max_data_bytes)
            )));
        }
    }
    Ok(())
}
