//! The library behind the `distributivecom` binary: one module per subcommand, the benchmark, the
//! Chromium driver used by the browser benchmark and the end-to-end tests, and result writing.
//! `main.rs` only parses arguments and dispatches.

pub mod bench;
pub mod chromium;
pub mod commands;
pub mod output;

use std::process::ExitCode;

/// What a command reports to the shell; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    ChunksFailed,
    StillRunning,
}

impl From<Outcome> for ExitCode {
    fn from(outcome: Outcome) -> ExitCode {
        match outcome {
            Outcome::Success => ExitCode::SUCCESS,
            Outcome::ChunksFailed => ExitCode::from(1),
            Outcome::StillRunning => ExitCode::from(3),
        }
    }
}
