//! The native Distributivecom volunteer: it connects to a coordinator over WebSocket, runs the chunks it is
//! pushed with wasmtime, N at a time, and reconnects with backoff whenever the coordinator goes away.
//!
//! - [`runtime`]: one run of one replica (wasmtime + the shared WASI implementation);
//! - [`pool`]: the slot threads and their queue;
//! - [`blob_cache`]: input files fetched once by hash and kept on disk;
//! - this module: the connection, module fetching and the reconnect loop.
//!
//! Architecture Invariant: the worker runs programs only through `distributivecom-wasi`, the same WASI
//! implementation the browser worker uses, so a chunk gives the same bytes on either.

pub mod blob_cache;
pub mod pool;
pub mod runtime;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distributivecom_protocol::backoff::Backoff;
use distributivecom_protocol::worker::{
    Assignment, Credential, Hello, MAX_ANNOUNCED_BLOBS, MAX_SLOTS, ModuleRef, Output, ReplicaReport, RunStatus,
    ServerMessage, WorkerKind, WorkerMessage,
};
use distributivecom_protocol::{MAX_MESSAGE_BYTES, PROTOCOL_VERSION, SOCKET_READ_BUFFER_BYTES, decode, encode};
use futures_util::{SinkExt, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::{OnceCell, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use blob_cache::BlobCache;
use pool::{Pool, Task};
use runtime::{CompiledModule, Runtime, RuntimeError};

/// Replicas per slot the worker asks the server to queue beyond the running ones.
pub const NATIVE_PREFETCH_PER_SLOT: u32 = 16;

/// How to reach the coordinator and how much to give it.

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The coordinator's base URL, such as `http://127.0.0.1:8080`.
    pub server: String,
    pub slots: u32,
    /// Shown to operators.
    pub agent: String,
    /// Who this worker volunteers for: an account's API token, or an anonymous volunteer identity.
    pub credential: Credential,
    /// Where fetched blobs are kept, and how many bytes of them at most.
    pub cache_dir: PathBuf,
    pub cache_bytes: u64,
    /// For tests: a wait before each replica runs, to play a slow machine (zero otherwise).
    pub delay: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    #[error("the server URL {0:?} must start with http:// or https://")]
    BadServerUrl(String),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("could not open the blob cache in {path}: {source}")]
    Cache { path: PathBuf, source: std::io::Error },
    /// The server refused the worker's hello (a revoked token, an unknown identity, an old protocol).
    #[error("the server refused this worker: {0}")]
    Refused(String),
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("the connection failed: {0}")]
    Socket(String),
    #[error("the server refused this worker: {0}")]
    Refused(String),
    /// Refused before the welcome: retrying the same hello cannot help.
    #[error("the server refused this worker's hello: {0}")]
    RefusedHello(String),
    #[error("the server closed the connection")]
    Closed,
    #[error("the server sent something this worker does not understand: {0}")]
    Protocol(String),
}

/// A running worker.
pub struct Worker {
    config: WorkerConfig,
    socket_url: String,
    http: reqwest::Client,
    runtime: Arc<Runtime>,
    pool: Arc<Pool>,
    modules: Mutex<HashMap<String, Arc<OnceCell<Arc<CompiledModule>>>>>,
    blobs: BlobCache,
}

impl Worker {
    pub fn new(config: WorkerConfig) -> Result<Arc<Worker>, WorkerError> {
        let base = config.server.trim_end_matches('/');
        let socket_url = if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}/api/workers/ws")
        } else if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}/api/workers/ws")
        } else {
            return Err(WorkerError::BadServerUrl(config.server.clone()));
        };
        let blobs = BlobCache::open(&config.cache_dir, config.cache_bytes)
            .map_err(|source| WorkerError::Cache { path: config.cache_dir.clone(), source })?;
        // The server refuses more than MAX_SLOTS; so does the pool, which reserves address space per slot.
        let slots = config.slots.clamp(1, MAX_SLOTS);
        let runtime = Arc::new(Runtime::new(slots)?);
        let pool = Pool::start(runtime.clone(), slots, config.delay);
        Ok(Arc::new(Worker {
            config,
            socket_url,
            http: reqwest::Client::new(),
            runtime,
            pool,
            modules: Mutex::new(HashMap::new()),
            blobs,
        }))
    }

    /// Works until the process ends, reconnecting with backoff whenever the connection ends. Returns only
    /// if the server refuses the worker's hello, which retrying cannot change.
    pub async fn run(self: Arc<Worker>) -> Result<(), WorkerError> {
        let mut backoff = Backoff::new();
        loop {
            let started = std::time::Instant::now();
            let ended = self.session().await;
            // A connection that lasted a while was healthy: start the backoff over.
            if started.elapsed() > Duration::from_secs(10) {
                backoff.reset();
            }
            // The clock's low bits are jitter enough to spread reconnects.
            let jitter = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|elapsed| u64::from(elapsed.subsec_nanos()))
                .unwrap_or(0);
            let delay = Duration::from_millis(backoff.next_delay_ms(jitter));
            match ended {
                Err(SessionError::RefusedHello(reason)) => return Err(WorkerError::Refused(reason)),
                Err(SessionError::Refused(reason)) => tracing::error!(%reason, "the server refused this worker"),
                Err(error) => tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "disconnected"),
                Ok(()) => tracing::info!(retry_in_ms = delay.as_millis() as u64, "disconnected"),
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// One connection, from hello to its end.
    async fn session(self: &Arc<Worker>) -> Result<(), SessionError> {
        let mut socket_config = WebSocketConfig::default();
        socket_config.max_message_size = Some(MAX_MESSAGE_BYTES);
        socket_config.max_frame_size = Some(MAX_MESSAGE_BYTES);
        socket_config.read_buffer_size = SOCKET_READ_BUFFER_BYTES;
        let (socket, _) =
            tokio_tungstenite::connect_async_with_config(self.socket_url.as_str(), Some(socket_config), true)
                .await
                .map_err(|error| SessionError::Connect(error.to_string()))?;
        let (mut sink, mut stream) = socket.split();
        let mut cache_changes = self.blobs.subscribe();
        let hello = WorkerMessage::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            kind: WorkerKind::Native,
            slots: self.pool.slots(),
            agent: self.config.agent.clone(),
            // The runtime enforces each job's limit; the machine's memory is the operator's business.
            max_memory_bytes: None,
            // Deep enough for very short chunks; the server queues less of long ones.
            prefetch_per_slot: Some(NATIVE_PREFETCH_PER_SLOT),
            credential: Some(self.config.credential.clone()),
            blobs: self.blobs.recent(MAX_ANNOUNCED_BLOBS),
        });

        sink.send(Message::Binary(encode(&hello).into()))
            .await
            .map_err(|error| SessionError::Socket(error.to_string()))?;
        let welcome = match next_message(&mut stream).await? {
            ServerMessage::Welcome(welcome) => welcome,
            ServerMessage::Error { message } => return Err(SessionError::RefusedHello(message)),
            other => return Err(SessionError::Protocol(format!("expected welcome, got {other:?}"))),
        };
        tracing::info!(worker = welcome.worker_id, slots = self.pool.slots(), "connected to the server");
        let generation = self.pool.new_generation();
        let (reports_sender, mut reports) = mpsc::unbounded_channel::<ReplicaReport>();
        let mut heartbeat = tokio::time::interval(Duration::from_millis(welcome.heartbeat_interval_ms.max(50)));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let send_error = |error: tokio_tungstenite::tungstenite::Error| SessionError::Socket(error.to_string());
        loop {
            tokio::select! {
                message = next_message(&mut stream) => match message? {
                    ServerMessage::Assign(assignments) => {
                        for assignment in assignments {
                            self.accept(assignment, generation, reports_sender.clone());
                        }
                    }
                    ServerMessage::Revoke(replicas) => self.pool.revoke(&replicas),
                    ServerMessage::Error { message } => return Err(SessionError::Refused(message)),
                    ServerMessage::Welcome(_) => {
                        return Err(SessionError::Protocol("welcome sent twice".to_owned()));
                    }
                },
                Some(first) = reports.recv() => {
                    // Everything finished meanwhile goes in the same frame.
                    let mut batch = vec![first];
                    while let Ok(report) = reports.try_recv() {
                        batch.push(report);
                    }
                    sink.send(Message::Binary(encode(&WorkerMessage::Results(batch)).into())).await.map_err(send_error)?;
                    // A frame of results counts as a heartbeat.
                    heartbeat.reset();
                }
                Some((added, evicted)) = cache_changes.recv() => {
                    let cached = WorkerMessage::Cached { added, evicted };
                    sink.send(Message::Binary(encode(&cached).into())).await.map_err(send_error)?;
                }
                _ = heartbeat.tick() => {
                    sink.send(Message::Binary(encode(&WorkerMessage::Heartbeat).into())).await.map_err(send_error)?;
                }
            }
        }
    }

    /// Gets the assignment's module (fetching and compiling it the first time) and queues it for a slot.
    fn accept(
        self: &Arc<Worker>,
        assignment: Assignment,
        generation: u64,
        reports: mpsc::UnboundedSender<ReplicaReport>,
    ) {
        let cell = self.module_cell(&assignment.module.sha256);
        // The usual case after the first round: the module compiled and every blob in the cache, opened
        // here rather than in a task of its own.
        if let Some(module) = cell.get()
            && let Some(blobs) = self.blobs.open_all(&assignment.blobs)
        {
            let mut assignment = assignment;
            assignment.blobs.clear();
            self.pool.submit(Task { assignment, module: module.clone(), blobs, generation, reports });
            return;
        }
        let worker = self.clone();
        tokio::spawn(async move {
            let mut assignment = assignment;
            let ready = async {
                let module = cell.get_or_try_init(|| worker.load_module(&assignment.module)).await?.clone();
                // Open files, read only when the replica runs: a queued replica holds no blob in memory.
                let mut blobs = Vec::with_capacity(assignment.blobs.len());
                for (path, blob) in std::mem::take(&mut assignment.blobs) {
                    blobs.push((path, worker.blobs.get(&worker.http, &worker.config.server, &blob).await?));
                }
                Ok::<_, String>((module, blobs))
            }
            .await;
            match ready {
                Ok((module, blobs)) => worker.pool.submit(Task { assignment, module, blobs, generation, reports }),
                Err(message) => {
                    tracing::warn!(job = assignment.job, chunk = assignment.chunk, %message, "cannot run a replica");
                    let _ = reports.send(ReplicaReport {
                        replica: assignment.replica,
                        status: RunStatus::Failed { message },
                        output: Output::default(),
                        compute_us: 0,
                        work_units: 0,
                    });
                }
            }
        });
    }

    fn module_cell(&self, sha256: &str) -> Arc<OnceCell<Arc<CompiledModule>>> {
        let mut modules = self.modules.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        modules.entry(sha256.to_owned()).or_default().clone()
    }

    /// Downloads a module by hash, checks the hash, and compiles it.
    async fn load_module(&self, module: &ModuleRef) -> Result<Arc<CompiledModule>, String> {
        let url = format!("{}/modules/{}", self.config.server.trim_end_matches('/'), module.sha256);
        let response = self.http.get(&url).send().await.map_err(|error| format!("could not fetch {url}: {error}"))?;
        if !response.status().is_success() {
            return Err(format!("could not fetch {url}: {}", response.status()));
        }
        let bytes = response.bytes().await.map_err(|error| format!("could not fetch {url}: {error}"))?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if actual != module.sha256 {
            return Err(format!("the module fetched from {url} has hash {actual}, not {}", module.sha256));
        }
        let runtime = self.runtime.clone();
        let compiled = tokio::task::spawn_blocking(move || runtime.compile(&bytes))
            .await
            .map_err(|error| format!("compiling panicked: {error}"))?
            .map_err(|error| error.to_string())?;
        Ok(Arc::new(compiled))
    }
}

/// The next protocol message, skipping control frames.
async fn next_message<S>(stream: &mut S) -> Result<ServerMessage, SessionError>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match stream.next().await {
            Some(Ok(Message::Binary(frame))) => {
                return decode(&frame).map_err(|error| SessionError::Protocol(error.to_string()));
            }
            Some(Ok(Message::Close(_))) | None => return Err(SessionError::Closed),
            Some(Ok(Message::Text(_))) => return Err(SessionError::Protocol("unexpected text frame".to_owned())),
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(SessionError::Socket(error.to_string())),
        }
    }
}
