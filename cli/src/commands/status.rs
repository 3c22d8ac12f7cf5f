//! `distributivecom status JOB`.

use clap::Args;
use distributivecom_client::Client;

use super::{describe, outcome_of};
use crate::Outcome;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The job's id.
    job: u64,
    /// Print the status as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(server: &str, args: StatusArgs) -> anyhow::Result<Outcome> {
    let client = Client::new(server)?;
    let status = client.status(args.job).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        println!("{}", describe(&status));
    }
    Ok(outcome_of(&status))
}
