//! The test harness: real `distributivecom` processes (server and native workers) on loopback ports, with
//! their SQLite databases in temporary directories, and helpers to drive them through the REST API.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;

use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use distributivecom_client::Client;
use distributivecom_protocol::Bytes;
use distributivecom_protocol::api::{ChunkRequest, ChunkResult, FileInput, JobRequest, JobStatus};
use distributivecom_protocol::determinism::chunk_seed;
use distributivecom_protocol::worker::{Assignment, ModuleRef};
use distributivecom_protocol::worker::{ServerMessage, WorkerMessage};
use distributivecom_protocol::{decode, encode};
use distributivecom_server::ServerConfig;
use distributivecom_server::store::ledger::{self, Totals};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use distributivecom_worker::runtime::Runtime;

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_distributivecom")
}

/// A wasm32-wasip1 program from `examples/` or `tests/programs/`, built by `cargo xtask build-programs`.
pub fn program(name: &str) -> Vec<u8> {
    std::fs::read(program_path(name)).unwrap_or_else(|error| {
        panic!(
            "{} is missing ({error}): build the programs first with `cargo xtask build-programs`",
            program_path(name).display()
        )
    })
}

/// A program instrumented as the coordinator does on upload: what workers actually run.
pub fn instrumented(name: &str) -> Vec<u8> {
    distributivecom_program::instrument::instrument(&program(name)).expect("the test programs instrument")
}

pub fn program_path(name: &str) -> PathBuf {
    target_dir().join("wasm32-wasip1/wasi-release").join(format!("{name}.wasm"))
}

/// Where cargo builds: `CARGO_TARGET_DIR` when set (as `.ci/run` does), otherwise the workspace's `target/`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

pub fn workspace_root() -> PathBuf {
    // Read at run time (`cargo test` sets it): a build cache shared between clones may hold a test
    // binary compiled in another clone, whose compile-time path is gone.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    Path::new(&manifest).parent().expect("the cli crate sits in the workspace").to_owned()
}

/// A port that was free a moment ago, for servers that must come back on the same address.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).map(|address| address.port()).unwrap()
}

/// A child process that is killed when dropped, with its stderr forwarded to the test's output.
pub struct Process {
    child: Child,
    name: String,
}

impl Process {
    /// Starts the binary with `args` and waits until a line of its stderr contains `ready` (if given),
    /// returning that line.
    fn start(name: &str, args: &[&str], ready: Option<&str>) -> (Process, String) {
        let mut child = Command::new(binary())
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("DISTRIBUTIVECOM_TOKEN")
            .env_remove("DISTRIBUTIVECOM_SERVER")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("could not start {name}: {error}"));
        let stderr = child.stderr.take().expect("stderr is piped");
        let (found, lines) = mpsc::channel();
        let marker = ready.map(str::to_owned);
        let label = name.to_owned();
        // Keep draining stderr for the process's whole life, so that it never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut waiting = marker;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[{label}] {line}");
                if waiting.as_deref().is_some_and(|marker| line.contains(marker)) {
                    waiting = None;
                    let _ = found.send(line);
                }
            }
        });
        let line = match ready {
            Some(marker) => lines
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("{name} did not print {marker:?} within 60 s")),
            None => String::new(),
        };
        (Process { child, name: name.to_owned() }, line)
    }

    /// SIGKILL: no chance to clean up, as in a crash or an OOM kill.
    pub fn kill(mut self) {
        self.child.kill().unwrap_or_else(|error| panic!("could not kill {}: {error}", self.name));
        let _ = self.child.wait();
    }

    /// The operating system's id of the process.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().map(|status| status.is_none()).unwrap_or(false)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A coordinator process with its data directory.
pub struct TestServer {
    pub process: Process,
    pub url: String,
    pub port: u16,
    pub data: PathBuf,
    /// The administrator's API token, which the server wrote on its first start.
    pub admin_token: String,
}

/// Numbers the anonymous identities of native workers, so that each is a distinct volunteer.
static NEXT_IDENTITY: AtomicU32 = AtomicU32::new(0);

impl TestServer {
    /// Starts `distributivecom serve` on a fresh port with a fresh data directory under `dir`.
    pub fn start(dir: &Path, extra: &[&str]) -> TestServer {
        TestServer::start_on(free_port(), &dir.join("data"), extra)
    }

    /// Starts it on a given port and data directory (for restarts).
    pub fn start_on(port: u16, data: &Path, extra: &[&str]) -> TestServer {
        let listen = format!("127.0.0.1:{port}");
        let data_arg = data.to_str().expect("temporary paths are UTF-8");
        let mut args = vec!["serve", "--listen", &listen, "--data", data_arg];
        args.extend_from_slice(extra);
        let (process, _) = Process::start("server", &args, Some("is serving on"));
        let token = std::fs::read_to_string(data.join("admin-token")).expect("serve writes the admin token");
        TestServer {
            process,
            url: format!("http://127.0.0.1:{port}"),
            port,
            data: data.to_owned(),
            admin_token: token.trim().to_owned(),
        }
    }

    /// A client signed in as the administrator.
    pub fn client(&self) -> Client {
        self.anonymous_client().with_token(self.admin_token.clone())
    }

    /// A client with no credentials.
    pub fn anonymous_client(&self) -> Client {
        Client::new(&self.url).unwrap()
    }

    /// Starts a native worker process volunteering under a fresh anonymous identity: every worker is a
    /// distinct volunteer, so replicated jobs validate across them.
    pub fn worker(&self, slots: u32) -> Process {
        self.worker_with(slots, &[])
    }

    /// The same, with more arguments (such as the test-only `--delay-ms`).
    pub fn worker_with(&self, slots: u32, extra: &[&str]) -> Process {
        let number = NEXT_IDENTITY.fetch_add(1, Ordering::Relaxed);
        let identity = self.data.with_extension(format!("volunteer-{number}.json"));
        let identity = identity.to_str().expect("temporary paths are UTF-8");
        let cache = self.worker_cache(number);
        let slots = slots.to_string();
        let mut args =
            vec!["worker", "--server", &self.url, "--slots", &slots, "--identity", identity, "--cache-dir", &cache];
        args.extend_from_slice(extra);
        Process::start("worker", &args, Some("connected to the server")).0
    }

    /// Starts a native worker process volunteering for the administrator, the owner of the tests' jobs:
    /// the only kind that runs owner-only (single-replica) jobs.
    pub fn own_worker(&self, slots: u32) -> Process {
        self.own_worker_caching(slots, &self.worker_cache(NEXT_IDENTITY.fetch_add(1, Ordering::Relaxed)))
    }

    /// The same, keeping its blobs in `cache` (which a restarted worker finds again).
    pub fn own_worker_caching(&self, slots: u32, cache: &str) -> Process {
        let slots = slots.to_string();
        let args =
            ["worker", "--server", &self.url, "--slots", &slots, "--token", &self.admin_token, "--cache-dir", cache];
        Process::start("worker", &args, Some("connected to the server")).0
    }

    /// A blob cache directory of a worker's own, beside the data directory.
    pub fn worker_cache(&self, number: u32) -> String {
        let cache = self.data.with_extension(format!("worker-{number}-blobs"));
        cache.to_str().expect("temporary paths are UTF-8").to_owned()
    }

    pub fn database(&self) -> PathBuf {
        self.data.join("distributivecom.sqlite3")
    }
}

/// Reads the ledger straight from a database file (read-only, beside the running server or after it
/// died) and checks that credits are conserved: every transaction sums to zero, no account is overdrawn,
/// and users, volunteers and escrows hold what was minted and not burned.
pub fn assert_ledger_conserved(database: &Path) -> Totals {
    let connection = read_only(database);
    let totals = ledger::totals(&connection).expect("the ledger reads");
    assert!(totals.conserved(), "credits are not conserved: {totals:?}");
    let unbalanced: i64 = connection
        .query_row("SELECT COUNT(*) FROM (SELECT txn FROM ledger GROUP BY txn HAVING SUM(amount) != 0)", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert_eq!(unbalanced, 0, "every ledger transaction sums to zero");
    let disagreements = ledger::audit(&connection).expect("the ledger reads");
    assert!(disagreements.is_empty(), "kept balances disagree with the entries: {disagreements:?}");
    totals
}

/// What an account of the ledger (`user:1`, `volunteer:<id>`, `escrow:job:<id>`) holds.
pub fn ledger_balance(database: &Path, account: &str) -> i64 {
    ledger::balance(&read_only(database), account).unwrap()
}

pub fn read_only(database: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(database, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("the database opens read-only")
}

/// Waits until `condition` holds, checking every 20 ms, or panics after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Uploads a program and submits one job of these chunks.
pub async fn submit(client: &Client, program_name: &str, chunks: Vec<ChunkRequest>) -> u64 {
    submit_request(client, program_name, JobRequest { chunks, ..JobRequest::default() }).await
}

pub async fn submit_request(client: &Client, program_name: &str, mut request: JobRequest) -> u64 {
    request.module = client.upload_module(program(program_name)).await.expect("the program uploads");
    request.program_name.get_or_insert_with(|| format!("{program_name}.wasm"));
    client.submit(&request).await.expect("the job is accepted").id
}

/// Waits for the job to finish (at most two minutes) and returns its status and every result.
pub async fn finish(client: &Client, job: u64) -> (JobStatus, Vec<ChunkResult>) {
    let status = tokio::time::timeout(Duration::from_secs(120), client.wait_until_finished(job))
        .await
        .expect("the job finishes within two minutes")
        .expect("the server answers");
    let results = client.all_results(job).await.expect("the results are readable");
    (status, results)
}

/// A chunk with these arguments (after argv[0]).
pub fn chunk(args: &[&str]) -> ChunkRequest {
    ChunkRequest { args: args.iter().map(|arg| arg.to_string()).collect(), ..ChunkRequest::default() }
}

/// The assignment the server sends for a chunk of a job, rebuilt from what the job says.
pub fn server_assignment(status: &JobStatus, program_name: &str, index: u32, chunk: &ChunkRequest) -> Assignment {
    let mut args = vec![format!("{program_name}.wasm")];
    args.extend(chunk.args.iter().cloned());
    Assignment {
        replica: 0,
        job: status.id,
        chunk: index,
        job_name: status.name.clone(),
        module: ModuleRef { sha256: String::new(), size: 0 },
        args,
        env: BTreeMap::new(),
        stdin: chunk.stdin.clone(),
        files: chunk
            .files
            .iter()
            .map(|(path, file)| match file {
                FileInput::Inline(contents) => (path.clone(), contents.clone()),
                FileInput::Blob { .. } => panic!("rebuilding an assignment takes inline files only ({path})"),
            })
            .collect(),
        blobs: BTreeMap::new(),
        clock_start_ns: status.created_at_ms * 1_000_000,
        random_seed: Bytes(chunk_seed(status.id, index).to_vec()),
        limits: ServerConfig::default().default_limits,
    }
}

/// Checks every result against a local run of the same chunk, as the server assigned it, with the
/// native runtime: status, outputs (random bytes and clocks included) and work units.
pub fn assert_results_match_native_runs(
    status: &JobStatus,
    program_name: &str,
    chunks: &[ChunkRequest],
    results: &[ChunkResult],
) {
    assert_eq!(results.len(), chunks.len(), "{program_name}: every chunk has a result");
    let runtime = Runtime::new(1).unwrap();
    let module = runtime.compile(&instrumented(program_name)).unwrap();
    for (result, chunk) in results.iter().zip(chunks) {
        let local = runtime.run(&module, server_assignment(status, program_name, result.index, chunk));
        let what = format!("{program_name} chunk {}", result.index);
        assert_eq!(result.status, local.status, "{what}: status");
        assert_eq!(result.output, local.output, "{what}: output");
        assert_eq!(result.work_units, local.work_units, "{what}: work units");
        assert!(result.work_units > 0, "{what}: work units are counted");
    }
}

/// A raw worker connection, for scripted workers.
pub type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn connect(server: &TestServer) -> Socket {
    let url = format!("ws://127.0.0.1:{}/api/workers/ws", server.port);
    tokio_tungstenite::connect_async(url).await.expect("the worker endpoint accepts WebSockets").0
}

pub async fn send(socket: &mut Socket, message: &WorkerMessage) {
    socket.send(Message::Binary(encode(message).into())).await.unwrap();
}

/// The next protocol message, or None when the server closed the connection.
pub async fn receive(socket: &mut Socket) -> Option<ServerMessage> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), socket.next()).await.expect("the server answers");
        match frame {
            Some(Ok(Message::Binary(bytes))) => return Some(decode(&bytes).expect("the server speaks the protocol")),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

/// A phone's viewport, where every page must fit.
pub const PHONE: (u32, u32) = (360, 780);

/// Every form control on the page has a label, and at a phone's width nothing sticks out sideways.
pub async fn assert_labelled_and_narrow(
    browser: &distributivecom_cli::chromium::Chromium,
    tab: &fantoccini::wd::WindowHandle,
    page: &str,
) {
    let unlabelled = browser
        .run_script(
            tab,
            "return Array.from(document.querySelectorAll('input, select, textarea')) \
               .filter(control => (!control.labels || control.labels.length === 0) && !control.getAttribute('aria-label')) \
               .map(control => control.id || control.outerHTML);",
        )
        .await
        .unwrap();
    assert_eq!(unlabelled, serde_json::json!([]), "{page}: controls without a label");
    browser.set_window_size(PHONE.0, PHONE.1).await.unwrap();
    // The widths, and what sticks out (the innermost elements past the edge) to say what to fix.
    let overflow = browser
        .run_script(
            tab,
            "const width = document.documentElement.clientWidth;              const out = Array.from(document.querySelectorAll('body *'))                .filter(e => e.getBoundingClientRect().right > width + 0.5 && !e.closest('.table-scroll'))                .filter(e => !Array.from(e.children).some(c => c.getBoundingClientRect().right > width + 0.5))                .slice(0, 5).map(e => e.tagName + '#' + e.id + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right));              return [document.documentElement.scrollWidth, width, out];",
        )
        .await
        .unwrap();
    let (scroll, client) = (overflow[0].as_u64().unwrap(), overflow[1].as_u64().unwrap());
    assert!(scroll <= client, "{page}: {scroll} px wide in a {client} px viewport: {}", overflow[2]);
}
