//! One module per subcommand: argument parsing (clap) and turning it into calls on the libraries.

pub mod account;
pub mod results;
pub mod serve;
pub mod status;
pub mod submit;
pub mod train;
pub mod worker;

use anyhow::Context;
use distributivecom_client::Client;
use distributivecom_protocol::api::{JobState, JobStatus};

use crate::Outcome;

/// Which coordinator to talk to, and as whom (`--server`, `--token`).
#[derive(Clone, Debug)]
pub struct Remote {
    pub server: String,
    pub token: Option<String>,
}

impl Remote {
    /// A client acting as the token's account: jobs and accounts need one.
    pub fn client(&self) -> anyhow::Result<Client> {
        let token = self.token.as_deref().map(str::trim).filter(|token| !token.is_empty()).context(
            "no API token: pass --token or set DISTRIBUTIVECOM_TOKEN (create one on your account page; on a \
             fresh local install the administrator's is in DATA_DIR/admin-token)",
        )?;
        Ok(Client::new(&self.server)?.with_token(token))
    }
}

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
    let mut line = format!(
        "job {} ({}): {state}; {} chunks: {} succeeded, {} failed, {} running, {} pending; spent {} of {}",
        status.id,
        status.name,
        status.chunks,
        status.succeeded,
        status.failed,
        status.running,
        status.pending,
        credits(status.spent_millicredits),
        credits(status.budget_millicredits),
    );
    if let Some(reason) = &status.stop_reason {
        line.push_str(&format!(" (stopped: {reason})"));
    }
    if let Some(reason) = &status.waiting_reason {
        line.push_str(&format!("\nwaiting: {reason}"));
    }
    line
}

/// "12.345 credits".
pub fn credits(millicredits: i64) -> String {
    let sign = if millicredits < 0 { "-" } else { "" };
    let value = millicredits.unsigned_abs();
    format!("{sign}{}.{:03} credits", value / 1000, value % 1000)
}

#[cfg(test)]
mod tests {
    #[test]
    fn credits_are_shown_to_the_millicredit() {
        assert_eq!(super::credits(0), "0.000 credits");
        assert_eq!(super::credits(1_234_567), "1234.567 credits");
        assert_eq!(super::credits(-500), "-0.500 credits");
    }
}
