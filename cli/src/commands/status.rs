//! `distributivecom status JOB`.

use super::{Remote, describe, outcome_of};
use crate::Outcome;
use clap::Args;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The job's id.
    job: u64,
    /// Print the status as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(remote: &Remote, args: StatusArgs) -> anyhow::Result<Outcome> {
    let client = remote.client()?;
    let status = client.status(args.job).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        println!("{}", describe(&status));
    }
    Ok(outcome_of(&status))
}
