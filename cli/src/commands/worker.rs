//! `distributivecom worker`: a native volunteer. With `--token` it earns credits for that account;
//! without, it volunteers under an anonymous identity kept in a file (registered on first use), whose
//! credits an account can claim later.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use distributivecom_client::Client;
use distributivecom_protocol::api::VolunteerCredential;
use distributivecom_protocol::worker::{Credential, MAX_SLOTS};
use distributivecom_worker::{Worker, WorkerConfig};

use super::Remote;
use crate::Outcome;

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// How many chunks to run at once (default: the number of cores).
    #[arg(long)]
    slots: Option<u32>,
    /// The file that keeps an anonymous volunteer identity (created on first use); given, it wins over a
    /// token (so one machine can run several distinct volunteers). Without it and without --token:
    /// $XDG_CONFIG_HOME/distributivecom/volunteer.json (or ~/.config/...).
    #[arg(long, value_name = "FILE")]
    identity: Option<PathBuf>,
    /// Where blobs (input files that jobs name by hash) are kept once fetched. Default:
    /// $XDG_CACHE_HOME/distributivecom/blobs (or ~/.cache/...).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// The most blobs the cache keeps, in MiB; the least recently used leave first.
    #[arg(long, default_value_t = 2048)]
    cache_mib: u64,
    /// For tests only: wait this many milliseconds before running each replica, to play a slow machine.
    #[arg(long, default_value_t = 0, hide = true)]
    delay_ms: u64,
}

pub async fn run(remote: &Remote, args: WorkerArgs) -> anyhow::Result<Outcome> {
    let cores = std::thread::available_parallelism().map(|cores| cores.get() as u32).unwrap_or(1);
    let slots = args.slots.unwrap_or(cores.min(MAX_SLOTS));
    anyhow::ensure!((1..=MAX_SLOTS).contains(&slots), "--slots must be between 1 and {MAX_SLOTS}");
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "native".to_owned());
    // An identity asked for by name wins over a token in the environment: `--identity` says "volunteer as
    // this anonymous volunteer", which is how one machine runs several distinct volunteers.
    let token = remote.token.as_deref().map(str::trim).filter(|token| !token.is_empty() && args.identity.is_none());
    let (credential, who) = match token {
        Some(token) => (Credential::Token(token.to_owned()), "your account".to_owned()),
        None => {
            let path = match args.identity {
                Some(path) => path,
                None => default_identity_path()?,
            };
            let identity = load_or_register(&remote.server, &path).await?;
            let who = format!("anonymous volunteer {} (kept in {})", identity.id, path.display());
            (Credential::Volunteer { id: identity.id, secret: identity.secret }, who)
        }
    };
    let cache_dir = match args.cache_dir {
        Some(dir) => dir,
        None => default_cache_dir()?,
    };
    let config = WorkerConfig {
        server: remote.server.clone(),
        slots,
        agent: format!("distributivecom-worker/{} on {host}", env!("CARGO_PKG_VERSION")),
        credential,
        cache_dir,
        cache_bytes: args.cache_mib.saturating_mul(1024 * 1024),
        delay: std::time::Duration::from_millis(args.delay_ms),
    };
    let worker = Worker::new(config)?;
    eprintln!("worker: {slots} slots, serving {} as {who}", remote.server);
    worker.run().await?;
    Ok(Outcome::Success)
}

fn default_cache_dir() -> anyhow::Result<PathBuf> {
    let cache = user_dir("XDG_CACHE_HOME", ".cache").context("nowhere to keep fetched blobs: pass --cache-dir DIR")?;
    Ok(cache.join("distributivecom").join("blobs"))
}

fn default_identity_path() -> anyhow::Result<PathBuf> {
    let config = user_dir("XDG_CONFIG_HOME", ".config")
        .context("no --token and nowhere to keep an anonymous identity: pass --identity FILE")?;
    Ok(config.join("distributivecom").join("volunteer.json"))
}

/// A base directory of the XDG specification: `$variable`, else `$HOME/fallback`.
fn user_dir(variable: &str, fallback: &str) -> Option<PathBuf> {
    std::env::var_os(variable)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(fallback)))
}

/// The identity saved at `path`, or a new one registered with the server and saved there (mode 0600).
async fn load_or_register(server: &str, path: &Path) -> anyhow::Result<VolunteerCredential> {
    match std::fs::read_to_string(path) {
        Ok(saved) => {
            return serde_json::from_str(&saved)
                .with_context(|| format!("{} does not hold a volunteer identity", path.display()));
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("could not read {}", path.display())),
    }
    let identity = Client::new(server)?
        .register_volunteer()
        .await
        .context("could not register an anonymous volunteer identity")?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("could not create {}", parent.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("could not create {}", path.display()))?;
    std::io::Write::write_all(&mut file, serde_json::to_string(&identity)?.as_bytes())
        .with_context(|| format!("could not write {}", path.display()))?;
    Ok(identity)
}
