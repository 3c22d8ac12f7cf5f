//! `distributivecom account`: the token's balance, escrow, pricing and newest ledger entries.

use clap::Args;

use super::{Remote, credits};
use crate::Outcome;

#[derive(Debug, Args)]
pub struct AccountArgs {
    /// How many ledger entries to show.
    #[arg(long, default_value_t = 10)]
    entries: u32,
    /// Print the account as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(remote: &Remote, args: AccountArgs) -> anyhow::Result<Outcome> {
    let client = remote.client()?;
    let account = client.account().await?;
    let ledger = client.ledger(args.entries.max(1)).await?;
    if args.json {
        let both = serde_json::json!({ "account": account, "ledger": ledger });
        println!("{}", serde_json::to_string_pretty(&both)?);
        return Ok(Outcome::Success);
    }
    let pricing = client.pricing().await?;
    println!("account: {}", account.user.username);
    println!("balance: {}", credits(account.balance_millicredits));
    println!("held in escrow for running jobs: {}", credits(account.escrowed_millicredits));
    println!(
        "pricing: {} per million work units of a validated replica; volunteers get {}%",
        credits(pricing.millicredits_per_million_work_units as i64),
        pricing.volunteer_share_percent
    );
    for entry in ledger.entries.iter().take(args.entries as usize) {
        let job = entry.job.map(|job| format!(" job {job}")).unwrap_or_default();
        println!("  {:>10} {:>20}{job}  {}", entry.kind, credits(entry.amount_millicredits), entry.memo);
    }
    Ok(Outcome::Success)
}
