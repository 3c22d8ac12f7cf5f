//! `distributivecom bench`: an in-process coordinator (with its SQLite store on disk) and N native workers
//! over loopback WebSockets, driven through the real REST API; optionally headless Chromium tabs too.
//!
//! It measures:
//! - throughput: one job of many no-op chunks, from submission to the last durable result;
//! - replicated throughput: the same with 2 replicas per chunk that must agree (quorum 2), run by distinct
//!   anonymous volunteers, counting chunks (each of them two runs) per second;
//! - round latency: jobs of 32 no-op chunks submitted one after another, from submission to the last
//!   durable result (what an iterative or interactive workload waits for each round);
//! - the instrumentation's cost: a CPU-bound program run natively with and without metering;
//! - the speed-up of that program's work split into chunks on the native workers over one local run;
//! - with `--browser-tabs N`: the round latency with N Chromium tabs as the only workers, and the speed
//!   of the CPU-bound program in a browser executor relative to the native worker.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use distributivecom_client::Client;
use distributivecom_protocol::Bytes;
use distributivecom_protocol::api::{ChunkRequest, FileInput, JobRequest, JobState, LimitsRequest, ReplicationRequest};
use distributivecom_protocol::session::SessionRequest;
use distributivecom_protocol::worker::{Assignment, Credential, MAX_SLOTS, ModuleRef};
use distributivecom_server::ServerConfig;
use distributivecom_worker::runtime::Runtime;
use distributivecom_worker::{Worker, WorkerConfig};
use serde::Serialize;

use crate::Outcome;
use crate::chromium::Chromium;

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
/// The CPU-bound chunk: count the primes below this (about a second natively on a 2026 laptop core).
const CPU_CHUNK_END: u64 = 400_000_000;
/// Blob cache of each in-process worker (the benchmark's jobs name no blobs yet).
const BENCH_CACHE_BYTES: u64 = 256 * 1024 * 1024;

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
    /// Rounds of the 32-shard session (after 10 untimed ones); more makes a longer run to profile.
    #[arg(long, default_value_t = 200)]
    session_rounds: u32,
    /// Chunks in the replicated job (2 replicas, quorum 2, distinct volunteers); 0 skips it.
    /// Default: --chunks, at most 20,000.
    #[arg(long)]
    replicated_chunks: Option<u32>,
    /// Also measure with this many headless Chromium tabs (each one thread) as the only workers.
    #[arg(long, default_value_t = 0)]
    browser_tabs: u32,
    /// The CPU-bound program (the `primes` example); found next to this binary when built by cargo xtask.
    #[arg(long)]
    cpu_program: Option<PathBuf>,
    /// Skip the CPU-bound figures (metering slowdown, browser CPU speed): a quicker run.
    #[arg(long)]
    no_cpu: bool,
    /// Keep the database here instead of in a temporary directory.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Default, Serialize)]
struct Figures {
    workers: u32,
    slots_per_worker: u32,
    throughput_chunks: u32,
    chunks_per_sec: f64,
    replicated_chunks: u32,
    /// Chunks per second of a job with 2 replicas per chunk and quorum 2, on distinct volunteers.
    replicated_chunks_per_sec: Option<f64>,
    rounds: u32,
    round_chunks: usize,
    round_p50_ms: f64,
    round_p90_ms: f64,
    round_p99_ms: f64,
    round_max_ms: f64,
    /// Native run time of the CPU-bound program with metering over without.
    instrumentation_slowdown: Option<f64>,
    /// The CPU-bound work split into chunks on the native workers (one slot each) against the whole of it
    /// in one local wasmtime run: wall time of the local run over the job's.
    cpu_speedup_2_workers: Option<f64>,
    browser_tabs: u32,
    browser_round_p50_ms: Option<f64>,
    browser_round_p99_ms: Option<f64>,
    /// Native run time of the CPU-bound program over its best time in a browser executor (1.0: as fast).
    browser_cpu_speed_ratio: Option<f64>,
    /// The same for the browser's first run, while V8 is still optimising the program.
    browser_cpu_speed_ratio_first_run: Option<f64>,
    /// A session of [`SESSION_SHARDS`] shards (each a cached blob of [`SHARD_BYTES`]) on the native workers:
    /// one round (a [`BROADCAST_BYTES`] broadcast, every shard's answer back), end to end through the SDK.
    session_shards: usize,
    session_round_p50_ms: f64,
    session_round_p99_ms: f64,
    /// Bytes the server sent volunteers per round (assignments and blobs), with the shards as cached blobs.
    session_bytes_per_round: u64,
    /// The same with the shards inline, as they would travel on every round without cached blobs and
    /// affinity.
    session_bytes_per_round_without_affinity: u64,
    /// CPU time the store's writer thread spent per session round (the round's admission and its
    /// shards' results with their payments), where the system tells a thread's CPU time.
    session_writer_cpu_ms_per_round: Option<f64>,
    /// CPU time the store's checkpoint thread (copying the WAL back into the database) spent per session
    /// round, measured the same way.
    session_checkpoint_cpu_ms_per_round: Option<f64>,
    /// Rounds of an 8-shard session (2 replicas, quorum 2) on the distinct volunteers plus one that takes
    /// [`SLOW_MS`] over each replica: with backups of stragglers, and without.
    session_slowed_round_p50_ms_with_backups: Option<f64>,
    session_slowed_round_p50_ms_without_backups: Option<f64>,
    browser_session_round_p50_ms: Option<f64>,
    browser_session_round_p99_ms: Option<f64>,
}

/// The session benchmark: shards, the size of each shard's blob, and the broadcast.
const SESSION_SHARDS: usize = 32;
const SHARD_BYTES: usize = 64 * 1024;
const BROADCAST_BYTES: usize = 1024;
/// How long the deliberately slow volunteer takes over each replica.
const SLOW_MS: u64 = 200;

/// Blobs of distinct bytes, one per shard, uploaded; the shards that read them (or hold them inline).
async fn session_shards(client: &Client, count: usize, inline: bool) -> anyhow::Result<Vec<ChunkRequest>> {
    let mut shards = Vec::with_capacity(count);
    for index in 0..count {
        let bytes: Vec<u8> = (0..SHARD_BYTES).map(|at| (at * 31 + index * 7919) as u8).collect();
        let file = if inline {
            FileInput::Inline(bytes.into())
        } else {
            FileInput::Blob { blob: client.upload_blob(bytes).await?.sha256 }
        };
        shards.push(ChunkRequest { files: [("shard.bin".to_owned(), file)].into(), ..ChunkRequest::default() });
    }
    Ok(shards)
}

/// Opens a session of these shards running the no-op program, with small limits (its escrow stays small).
async fn open_session(
    client: &Client,
    module: &str,
    shards: Vec<ChunkRequest>,
    replication: (u32, u32),
    backups: bool,
) -> anyhow::Result<distributivecom_client::Session> {
    let request = SessionRequest {
        module: module.to_owned(),
        shards,
        limits: LimitsRequest { max_work_units: Some(1_000_000), ..LimitsRequest::default() },
        budget_millicredits: 100_000_000,
        replication: Some(ReplicationRequest { replicas: replication.0, quorum: replication.1 }),
        backups: Some(backups),
        ..SessionRequest::default()
    };
    Ok(client.open_session(&request).await?)
}

/// Times `rounds` rounds of the session (after `warm_up` untimed ones); returns the sorted times and the
/// bytes the server sent volunteers per timed round.
async fn time_session(
    client: &Client,
    session: &mut distributivecom_client::Session,
    warm_up: u32,
    rounds: u32,
) -> anyhow::Result<(Vec<Duration>, u64)> {
    let broadcast = vec![7u8; BROADCAST_BYTES];
    for _ in 0..warm_up {
        session.round(broadcast.clone()).await?;
    }
    let sent = |stats: &distributivecom_protocol::api::ServerStats| stats.bytes_to_workers + stats.blob_bytes_served;
    let before = sent(&client.stats().await?);
    let mut times = Vec::with_capacity(rounds as usize);
    for _ in 0..rounds {
        let started = Instant::now();
        let results = session.round(broadcast.clone()).await?;
        times.push(started.elapsed());
        if results.len() != session.shards() as usize || results.iter().any(|result| !result.succeeded) {
            bail!("a session round came back incomplete or failed");
        }
    }
    let after = sent(&client.stats().await?);
    times.sort();
    Ok((times, (after - before) / u64::from(rounds.max(1))))
}

pub async fn run(args: BenchArgs) -> anyhow::Result<Outcome> {
    if args.workers == 0 || args.slots == 0 || args.chunks == 0 || args.rounds == 0 || args.session_rounds == 0 {
        bail!("--workers, --slots, --chunks, --rounds and --session-rounds must be at least 1");
    }
    if args.slots > MAX_SLOTS {
        bail!("--slots must be at most {MAX_SLOTS}");
    }
    let temporary = tempfile::tempdir().context("could not create a temporary directory")?;
    let data_dir = args.data.clone().unwrap_or_else(|| temporary.path().to_owned());
    let config = ServerConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        data_dir: data_dir.clone(),
        // Every replicated chunk runs twice: no volunteer earns the trust to run one alone.
        trust_after: u32::MAX,
        ..ServerConfig::default()
    };
    let server = distributivecom_server::start(config).await.context("could not start the server")?;
    let base = format!("http://{}", server.address());
    // The administrator submits, and its own workers run the jobs with one replica each: the figures
    // measure the coordinator, not how many volunteers agree.
    let token_file = data_dir.join("admin-token");
    let token = std::fs::read_to_string(&token_file)
        .with_context(|| format!("could not read the administrator's token from {}", token_file.display()))?;
    let token = token.trim().to_owned();
    let mut native_workers = Vec::new();
    for index in 0..args.workers {
        let worker = Worker::new(WorkerConfig {
            server: base.clone(),
            slots: args.slots,
            agent: format!("bench-worker-{index}"),
            credential: Credential::Token(token.clone()),
            cache_dir: data_dir.join(format!("worker-{index}-blobs")),
            cache_bytes: BENCH_CACHE_BYTES,
            delay: Duration::ZERO,
        })?;
        native_workers.push(tokio::spawn(worker.run()));
    }
    let client = Client::new(&base)?.with_token(token.clone());
    let noop = client.upload_module(NOOP_MODULE.to_vec()).await?;
    wait_for_workers(&client, args.workers).await?;

    // Warm up: every worker fetches and compiles the module, and the connections settle.
    run_job(&client, &noop, vec![ChunkRequest::default(); 256]).await?;
    let started = Instant::now();
    run_job(&client, &noop, vec![ChunkRequest::default(); args.chunks as usize]).await?;
    let mut figures = Figures {
        workers: args.workers,
        slots_per_worker: args.slots,
        throughput_chunks: args.chunks,
        chunks_per_sec: (f64::from(args.chunks) / started.elapsed().as_secs_f64()).round(),
        rounds: args.rounds,
        round_chunks: ROUND_CHUNKS,
        browser_tabs: args.browser_tabs,
        ..Figures::default()
    };
    let rounds = time_rounds(&client, &noop, args.rounds).await?;
    figures.round_p50_ms = percentile_ms(&rounds, 0.50);
    figures.round_p90_ms = percentile_ms(&rounds, 0.90);
    figures.round_p99_ms = percentile_ms(&rounds, 0.99);
    figures.round_max_ms = percentile_ms(&rounds, 1.0);

    // Sessions on the same native workers (the administrator's own: one replica each).
    let session_rounds = args.session_rounds;
    let mut session =
        open_session(&client, &noop, session_shards(&client, SESSION_SHARDS, false).await?, (1, 1), true).await?;
    let before = (thread_cpu("store-writer"), thread_cpu("wal-checkpoint"));
    let (times, bytes) = time_session(&client, &mut session, 10, session_rounds).await?;
    let per_round = |before: Option<Duration>, after: Option<Duration>| {
        Some(round2((after? - before?).as_secs_f64() * 1000.0 / f64::from(10 + session_rounds)))
    };
    figures.session_writer_cpu_ms_per_round = per_round(before.0, thread_cpu("store-writer"));
    figures.session_checkpoint_cpu_ms_per_round = per_round(before.1, thread_cpu("wal-checkpoint"));
    session.close().await?;
    figures.session_shards = SESSION_SHARDS;
    figures.session_round_p50_ms = percentile_ms(&times, 0.50);
    figures.session_round_p99_ms = percentile_ms(&times, 0.99);
    figures.session_bytes_per_round = bytes;
    let mut inline =
        open_session(&client, &noop, session_shards(&client, SESSION_SHARDS, true).await?, (1, 1), true).await?;
    let (_, bytes) = time_session(&client, &mut inline, 2, 20).await?;
    inline.close().await?;
    figures.session_bytes_per_round_without_affinity = bytes;

    let cpu_program = if args.no_cpu { None } else { cpu_program(args.cpu_program.as_deref()) };
    let native_cpu = match &cpu_program {
        Some(program) => {
            let native = native_cpu(program)?;
            figures.instrumentation_slowdown = Some(round2(native.instrumented_seconds / native.raw_seconds));
            let primes = client.upload_module(std::fs::read(program)?).await?;
            figures.cpu_speedup_2_workers = Some(cpu_speedup(&client, &primes, &native).await?);
            Some(native)
        }
        None => None,
    };

    let replicated_chunks = args.replicated_chunks.unwrap_or(args.chunks.min(20_000));
    figures.replicated_chunks = replicated_chunks;
    if replicated_chunks > 0 {
        // Only anonymous volunteers now, each a distinct one: replicas must go to distinct volunteers.
        for worker in &native_workers {
            worker.abort();
        }
        native_workers.clear();
        wait_for_workers_exactly(&client, 0).await?;
        // Registered without the administrator's token, so that each stays a volunteer of its own.
        let anonymous = Client::new(&base)?;
        for index in 0..args.workers {
            let identity = anonymous.register_volunteer().await?;
            let worker = Worker::new(WorkerConfig {
                server: base.clone(),
                slots: args.slots,
                agent: format!("bench-volunteer-{index}"),
                credential: Credential::Volunteer { id: identity.id, secret: identity.secret },
                cache_dir: data_dir.join(format!("volunteer-{index}-blobs")),
                cache_bytes: BENCH_CACHE_BYTES,
                delay: Duration::ZERO,
            })?;
            native_workers.push(tokio::spawn(worker.run()));
        }
        wait_for_workers_exactly(&client, args.workers).await?;
        let replicated = |chunks: u32| JobRequest {
            module: noop.clone(),
            chunks: vec![ChunkRequest::default(); chunks as usize],
            replication: Some(ReplicationRequest { replicas: 2, quorum: 2 }),
            ..JobRequest::default()
        };
        run_request(&client, &replicated(256)).await?;
        let started = Instant::now();
        run_request(&client, &replicated(replicated_chunks)).await?;
        figures.replicated_chunks_per_sec =
            Some((f64::from(replicated_chunks) / started.elapsed().as_secs_f64()).round());

        // One more volunteer, deliberately slow: rounds with backups of stragglers, and without.
        let identity = anonymous.register_volunteer().await?;
        let slow = Worker::new(WorkerConfig {
            server: base.clone(),
            slots: 1,
            agent: "bench-slow-volunteer".to_owned(),
            credential: Credential::Volunteer { id: identity.id, secret: identity.secret },
            cache_dir: data_dir.join("slow-volunteer-blobs"),
            cache_bytes: BENCH_CACHE_BYTES,
            delay: Duration::from_millis(SLOW_MS),
        })?;
        native_workers.push(tokio::spawn(slow.run()));
        wait_for_workers_exactly(&client, args.workers + 1).await?;
        for backups in [true, false] {
            let shards = session_shards(&client, 8, false).await?;
            let mut session = open_session(&client, &noop, shards, (2, 2), backups).await?;
            let (times, _) = time_session(&client, &mut session, 2, 10).await?;
            session.close().await?;
            let p50 = Some(percentile_ms(&times, 0.50));
            if backups {
                figures.session_slowed_round_p50_ms_with_backups = p50;
            } else {
                figures.session_slowed_round_p50_ms_without_backups = p50;
            }
        }
    }

    if args.browser_tabs > 0 {
        // Only the tabs may work now.
        for worker in &native_workers {
            worker.abort();
        }
        wait_for_workers_exactly(&client, 0).await?;
        let chromium = Chromium::start().await?;
        for _ in 0..args.browser_tabs {
            // Each tab volunteers as an identity of the administrator's, so owner-only jobs reach it.
            let identity = client.register_volunteer().await?;
            let tab = chromium.open_donate_page(&base).await?;
            chromium.start_volunteering_as(&tab, &identity, 1, 100).await?;
        }
        wait_for_workers_exactly(&client, args.browser_tabs).await?;
        for _ in 0..10 {
            run_job(&client, &noop, vec![ChunkRequest::default(); ROUND_CHUNKS]).await?;
        }
        let rounds = time_rounds(&client, &noop, args.rounds).await?;
        figures.browser_round_p50_ms = Some(percentile_ms(&rounds, 0.50));
        figures.browser_round_p99_ms = Some(percentile_ms(&rounds, 0.99));
        let shards = session_shards(&client, SESSION_SHARDS, false).await?;
        let mut session = open_session(&client, &noop, shards, (1, 1), true).await?;
        let (times, _) = time_session(&client, &mut session, 10, args.session_rounds).await?;
        session.close().await?;
        figures.browser_session_round_p50_ms = Some(percentile_ms(&times, 0.50));
        figures.browser_session_round_p99_ms = Some(percentile_ms(&times, 0.99));
        if let (Some(program), Some(native)) = (&cpu_program, &native_cpu) {
            let primes = client.upload_module(std::fs::read(program)?).await?;
            // Every tab compiles the program first, then one chunk is timed end to end.
            let warm_up = (0..args.browser_tabs * 2).map(|index| primes_chunk(u64::from(index) * 1000, 1000)).collect();
            run_job(&client, &primes, warm_up).await?;
            // Best of three, as natively: the machine's other work only ever slows a run down.
            let mut fastest = f64::MAX;
            for run in 0..3 {
                let started = Instant::now();
                let job = run_job(&client, &primes, vec![primes_chunk(0, CPU_CHUNK_END)]).await?;
                let seconds = started.elapsed().as_secs_f64();
                if run == 0 {
                    figures.browser_cpu_speed_ratio_first_run = Some(round2(native.instrumented_seconds / seconds));
                }
                fastest = fastest.min(seconds);
                // A benchmark of a wrong answer is worthless: the browser must agree with the native run.
                let results = client.all_results(job).await?;
                if results.first().map(|result| &result.output.stdout.0) != Some(&native.stdout) {
                    bail!("the browser's result of the CPU-bound chunk differs from the native run's");
                }
            }
            figures.browser_cpu_speed_ratio = Some(round2(native.instrumented_seconds / fastest));
        }
    }
    print(&figures, args.json, cpu_program.is_none() && !args.no_cpu)?;
    server.stop();
    Ok(Outcome::Success)
}

/// The CPU time a thread of this process (such as the store's writer) has used so far, from Linux's
/// `/proc/self/task/*/schedstat`; `None` where there is no such file or no such thread.
fn thread_cpu(name: &str) -> Option<Duration> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    let thread = tasks
        .flatten()
        .map(|task| task.path())
        .find(|task| std::fs::read_to_string(task.join("comm")).is_ok_and(|comm| comm.trim() == name))?;
    let schedstat = std::fs::read_to_string(thread.join("schedstat")).ok()?;
    let nanos: u64 = schedstat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

fn print(figures: &Figures, json: bool, no_cpu_program: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(figures)?);
        return Ok(());
    }
    println!(
        "{} native workers x {} slots, SQLite store on, loopback WebSockets",
        figures.workers, figures.slots_per_worker
    );
    println!("no-op throughput: {:.0} chunks/s ({} chunks)", figures.chunks_per_sec, figures.throughput_chunks);
    if let Some(replicated) = figures.replicated_chunks_per_sec {
        println!(
            "replicated no-op throughput (2 replicas, quorum 2, distinct volunteers): {replicated:.0} chunks/s ({} \
             chunks)",
            figures.replicated_chunks
        );
    }
    println!(
        "{}-chunk round latency: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} rounds)",
        figures.round_chunks,
        figures.round_p50_ms,
        figures.round_p90_ms,
        figures.round_p99_ms,
        figures.round_max_ms,
        figures.rounds
    );
    println!(
        "{}-shard session round (blobs cached, {} B broadcast): p50 {:.2} ms, p99 {:.2} ms; sent to volunteers \
         per round: {} B, or {} B with the shards inline",
        figures.session_shards,
        BROADCAST_BYTES,
        figures.session_round_p50_ms,
        figures.session_round_p99_ms,
        figures.session_bytes_per_round,
        figures.session_bytes_per_round_without_affinity
    );
    if let Some(writer) = figures.session_writer_cpu_ms_per_round {
        println!(
            "store writer CPU per session round: {writer:.2} ms ({:.0} us per shard's result, the round's \
             admission included){}",
            writer * 1000.0 / figures.session_shards as f64,
            figures
                .session_checkpoint_cpu_ms_per_round
                .map(|checkpoint| format!("; its checkpoint thread's: {checkpoint:.2} ms"))
                .unwrap_or_default()
        );
    }
    if let (Some(with), Some(without)) =
        (figures.session_slowed_round_p50_ms_with_backups, figures.session_slowed_round_p50_ms_without_backups)
    {
        println!(
            "8-shard session round with one volunteer {SLOW_MS} ms slow per replica: p50 {with:.2} ms with backups, \
             {without:.2} ms without"
        );
    }
    match figures.instrumentation_slowdown {
        Some(slowdown) => println!("metering slowdown (CPU-bound program, native): {slowdown:.2}x"),
        None if no_cpu_program => println!("metering slowdown: not measured (pass --cpu-program, the primes example)"),
        None => {}
    }
    if let Some(speedup) = figures.cpu_speedup_2_workers {
        println!(
            "CPU-bound work in {CPU_SLICES} chunks on {} native workers x {} slots against one local run: {speedup:.2}x faster",
            figures.workers, figures.slots_per_worker
        );
    }
    if let (Some(p50), Some(p99)) = (figures.browser_round_p50_ms, figures.browser_round_p99_ms) {
        println!(
            "{}-chunk round latency with {} Chromium tabs: p50 {p50:.2} ms, p99 {p99:.2} ms",
            figures.round_chunks, figures.browser_tabs
        );
    }
    if let (Some(p50), Some(p99)) = (figures.browser_session_round_p50_ms, figures.browser_session_round_p99_ms) {
        println!(
            "{}-shard session round with {} Chromium tabs: p50 {p50:.2} ms, p99 {p99:.2} ms",
            figures.session_shards, figures.browser_tabs
        );
    }
    if let (Some(best), Some(first)) = (figures.browser_cpu_speed_ratio, figures.browser_cpu_speed_ratio_first_run) {
        println!("CPU-bound speed in the browser relative to native: {best:.2} (first run: {first:.2})");
    }
    Ok(())
}

/// Slices of the CPU-bound range, one chunk each, for the speed-up figure.
const CPU_SLICES: u64 = 16;

/// The CPU-bound range split into [`CPU_SLICES`] chunks on the workers connected now, best of three, as
/// a speed-up over one local run of the whole range; the chunks' counts must add up to the local one.
async fn cpu_speedup(client: &Client, primes: &str, native: &NativeCpu) -> anyhow::Result<f64> {
    let slice = CPU_CHUNK_END / CPU_SLICES;
    let chunks: Vec<ChunkRequest> =
        (0..CPU_SLICES).map(|index| primes_chunk(index * slice, (index + 1) * slice)).collect();
    let expected = prime_count(&native.stdout)?;
    // Every worker compiles the program first.
    run_job(client, primes, (0..4).map(|index| primes_chunk(index * 1000, (index + 1) * 1000)).collect()).await?;
    let mut fastest = f64::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let job = run_job(client, primes, chunks.clone()).await?;
        fastest = fastest.min(started.elapsed().as_secs_f64());
        let mut total = 0;
        for result in client.all_results(job).await? {
            total += prime_count(&result.output.stdout.0)?;
        }
        if total != expected {
            bail!("the chunks counted {total} primes, the local run {expected}");
        }
    }
    Ok(round2(native.instrumented_seconds / fastest))
}

/// The count `primes` printed: "primes in [0, 25000000): 1565927".
fn prime_count(stdout: &[u8]) -> anyhow::Result<u64> {
    let text = String::from_utf8_lossy(stdout);
    text.trim()
        .rsplit(": ")
        .next()
        .and_then(|count| count.parse().ok())
        .with_context(|| format!("the primes program printed {text:?}"))
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// The `primes` example, from `--cpu-program` or next to this binary (`target/release/..`).
fn cpu_program(given: Option<&std::path::Path>) -> Option<PathBuf> {
    if let Some(path) = given {
        return Some(path.to_owned());
    }
    let executable = std::env::current_exe().ok()?;
    let target = executable.parent()?.parent()?;
    let path = target.join("wasm32-wasip1/wasi-release/primes.wasm");
    path.exists().then_some(path)
}

fn primes_chunk(from: u64, to: u64) -> ChunkRequest {
    ChunkRequest { args: vec![from.to_string(), to.to_string()], ..ChunkRequest::default() }
}

/// The CPU-bound chunk run natively: best of three, instrumented and not, and what it printed.
struct NativeCpu {
    instrumented_seconds: f64,
    raw_seconds: f64,
    stdout: Vec<u8>,
}

fn native_cpu(program: &std::path::Path) -> anyhow::Result<NativeCpu> {
    let original = std::fs::read(program).with_context(|| format!("could not read {}", program.display()))?;
    let instrumented = distributivecom_program::instrument::instrument(&original)?;
    let runtime = Runtime::new(1)?;
    let assignment = Assignment {
        replica: 0,
        job: 0,
        chunk: 0,
        job_name: "bench".into(),
        module: ModuleRef { sha256: String::new(), size: 0 },
        args: vec!["primes.wasm".into(), "0".into(), CPU_CHUNK_END.to_string()],
        env: Default::default(),
        stdin: Bytes::default(),
        files: Default::default(),
        blobs: Default::default(),
        clock_start_ns: 0,
        random_seed: Bytes(vec![0; 32]),
        limits: ServerConfig::default().default_limits,
    };
    let best = |bytes: &[u8]| -> anyhow::Result<(f64, Vec<u8>)> {
        let module = runtime.compile(bytes)?;
        let mut fastest = f64::MAX;
        let mut stdout = Vec::new();
        for _ in 0..3 {
            let outcome = runtime.run(&module, assignment.clone());
            if !outcome.status.is_success() {
                bail!("the CPU-bound program failed: {}", outcome.status.describe());
            }
            fastest = fastest.min(outcome.elapsed.as_secs_f64());
            stdout = outcome.output.stdout.0;
        }
        Ok((fastest, stdout))
    };
    let (instrumented_seconds, stdout) = best(&instrumented)?;
    let (raw_seconds, _) = best(&original)?;
    Ok(NativeCpu { instrumented_seconds, raw_seconds, stdout })
}

async fn time_rounds(client: &Client, module: &str, rounds: u32) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(rounds as usize);
    for _ in 0..rounds {
        let started = Instant::now();
        run_job(client, module, vec![ChunkRequest::default(); ROUND_CHUNKS]).await?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok(times)
}

async fn wait_for_workers(client: &Client, workers: u32) -> anyhow::Result<()> {
    wait_until(client, |connected| connected >= workers, "the workers did not connect within 60 seconds").await
}

async fn wait_for_workers_exactly(client: &Client, workers: u32) -> anyhow::Result<()> {
    wait_until(client, |connected| connected == workers, "the expected workers did not connect within 60 seconds").await
}

async fn wait_until(client: &Client, done: impl Fn(u32) -> bool, failure: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(client.stats().await?.workers) {
        if Instant::now() > deadline {
            bail!("{failure}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Runs a job of one replica per chunk (on the administrator's own workers) to its end and returns its id.
async fn run_job(client: &Client, module: &str, chunks: Vec<ChunkRequest>) -> anyhow::Result<u64> {
    let request = JobRequest {
        module: module.to_owned(),
        chunks,
        replication: Some(ReplicationRequest { replicas: 1, quorum: 1 }),
        ..JobRequest::default()
    };
    run_request(client, &request).await
}

/// Submits a job, waits for its end and returns its id; anything but success is an error.
async fn run_request(client: &Client, request: &JobRequest) -> anyhow::Result<u64> {
    let created = client.submit(request).await?;
    let status = client.wait_until_finished(created.id).await?;
    if status.state != JobState::Succeeded {
        bail!("a benchmark job did not succeed: {status:?}");
    }
    Ok(created.id)
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
