//! `distributivecom results JOB --out DIR`.

use std::path::PathBuf;

use super::{Remote, describe, outcome_of};
use crate::Outcome;
use crate::output::{report_failures, write_results};
use clap::Args;

#[derive(Debug, Args)]
pub struct ResultsArgs {
    /// The job's id.
    job: u64,
    /// Write each chunk's result to DIR/<chunk index>/.
    #[arg(long)]
    out: PathBuf,
    /// Wait for the job to finish first.
    #[arg(long)]
    wait: bool,
}

pub async fn run(remote: &Remote, args: ResultsArgs) -> anyhow::Result<Outcome> {
    let client = remote.client()?;
    let status = if args.wait { client.wait_until_finished(args.job).await? } else { client.status(args.job).await? };
    let results = client.all_results(args.job).await?;
    write_results(&args.out, &results)?;
    eprintln!("{}", describe(&status));
    eprintln!("wrote {} results to {}", results.len(), args.out.display());
    report_failures(&results);
    Ok(outcome_of(&status))
}
