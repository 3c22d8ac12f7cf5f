//! One module per subcommand: argument parsing (clap) and turning it into calls on the libraries.

pub mod results;
pub mod serve;
pub mod status;
pub mod submit;
pub mod worker;

use distributivecom_protocol::api::{JobState, JobStatus};

use crate::Outcome;

/// The exit outcome that a job's status calls for.
pub fn outcome_of(status: &JobStatus) -> Outcome {
    match status.state {
        JobState::Succeeded => Outcome::Success,
        JobState::Failed | JobState::Cancelled => Outcome::ChunksFailed,
        JobState::Running => Outcome::StillRunning,
    }
}

/// One line about a job, for people.
pub fn describe(status: &JobStatus) -> String {
    let state = match status.state {
        JobState::Running => "running",
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    };
    format!(
        "job {} ({}): {state}; {} chunks: {} succeeded, {} failed, {} running, {} pending",
        status.id, status.name, status.chunks, status.succeeded, status.failed, status.running, status.pending
    )
}
