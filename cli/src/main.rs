//! The `distributivecom` command: the coordinator (`serve`), a native volunteer (`worker`), job submission
//! and retrieval (`submit`, `status`, `results`), the training demo (`train`) and the benchmark (`bench`).
//!
//! Exit codes: 0 when everything asked for succeeded (for job commands: every chunk exited with status 0);
//! 1 when a job finished with failed chunks or was cancelled; 2 on errors (bad arguments, unreachable
//! server, refused upload); 3 when the job is still running (`status`, `results` without `--wait`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use distributivecom_cli::{bench, commands};

/// Volunteer computing for WASI programs: run a coordinator, donate compute, or submit jobs.
#[derive(Debug, Parser)]
#[command(name = "distributivecom", version, about, long_about = None)]
struct Cli {
    /// The coordinator to talk to.
    #[arg(long, global = true, env = "DISTRIBUTIVECOM_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// An API token of your account (from the account page; `serve` writes the administrator's to
    /// DATA_DIR/admin-token). Jobs need one; a worker with one earns credits for your account.
    #[arg(long, global = true, env = "DISTRIBUTIVECOM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the coordinator: REST API, worker WebSockets, web app and an embedded SQLite database.
    Serve(commands::serve::ServeArgs),
    /// Run a native volunteer that executes chunks with wasmtime.
    Worker(commands::worker::WorkerArgs),
    /// Submit a program and its inputs as a job; prints the job's id.
    Submit(commands::submit::SubmitArgs),
    /// Show a job's progress.
    Status(commands::status::StatusArgs),
    /// Write a job's results to a directory.
    Results(commands::results::ResultsArgs),
    /// Show your balance, escrow, the pricing and your newest ledger entries.
    Account(commands::account::AccountArgs),
    /// Train a digit classifier over the connected volunteers, one session round per step, and compare
    /// it with the same training in this process.
    Train(commands::train::TrainArgs),
    /// Measure throughput and round latency with an in-process server and native workers.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.command);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: could not start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let remote = commands::Remote { server: cli.server, token: cli.token };
    let outcome = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => commands::serve::run(args).await,
            Command::Worker(args) => commands::worker::run(&remote, args).await,
            Command::Submit(args) => commands::submit::run(&remote, args).await,
            Command::Status(args) => commands::status::run(&remote, args).await,
            Command::Results(args) => commands::results::run(&remote, args).await,
            Command::Account(args) => commands::account::run(&remote, args).await,
            Command::Train(args) => commands::train::run(&remote, args).await,
            Command::Bench(args) => bench::run(args).await,
        }
    });
    match outcome {
        Ok(outcome) => outcome.into(),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Logs go to stderr. Long-running commands log at info; the others only warn, so that their stdout
/// stays clean for scripts. `RUST_LOG` overrides both.
fn init_logging(command: &Command) {
    let default = match command {
        Command::Serve(_) | Command::Worker(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
