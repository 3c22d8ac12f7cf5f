//! The Distributivecom coordinator: it accepts programs and jobs over HTTP, pushes chunks to volunteers
//! over WebSockets, and keeps every accepted job and every final result in SQLite.
//!
//! Layers, from the outside in; each uses only the layers below it (`tests/layers.rs` checks it):
//! - [`http`]: the REST API, the worker WebSocket endpoint, module downloads, API docs and web app, with
//!   `AppState`, `AppError` and every extractor;
//! - [`worker_socket`]: the server's side of one worker's WebSocket;
//! - [`coordinator`]: the edge around the IO-free scheduler (`distributivecom-scheduler`), which turns
//!   its actions into messages and store writes, and the read model clients see; beside it, [`ads`]:
//!   rewarded-ad campaigns and verified views, paid from sponsors' escrow, and [`sites`], the site keys
//!   of the embed script;
//! - [`identity`]: passwords, tokens, web sessions, volunteer credentials, the first administrator;
//! - [`store`]: the SQLite database, written in group commits;
//! - leaves anyone may use: [`config`], [`clock`], [`format`], [`report_limits`].
//!
//! Errors: the store's `StoreError`, the ads' `AdRefusal` and this crate's `ServerError` are `thiserror` types; HTTP handlers
//! convert everything into `http::AppError`, which picks the status code and the message users see.

pub mod ads;
pub mod clock;
pub mod config;
pub mod coordinator;
pub mod format;
pub mod http;
pub mod identity;
pub mod report_limits;
pub mod session_socket;
pub mod sites;
pub mod store;
pub mod worker_socket;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::time::Duration;

pub use config::ServerConfig;
use coordinator::Coordinator;
use store::{Store, StoreError};
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("could not listen on {address}: {source}")]
    Bind { address: SocketAddr, source: std::io::Error },
    #[error("the server stopped unexpectedly: {0}")]
    Stopped(String),
    #[error("could not create the administrator: {0}")]
    Bootstrap(#[from] identity::BootstrapError),
    #[error(
        "the ledger's kept balances disagree with its entries for {} account(s), first {:?}; the database was \
         changed outside distributivecom or is damaged: restore it from a backup",
        .0.len(), .0.first()
    )]
    LedgerDisagrees(Vec<store::ledger::Disagreement>),
}

/// A started server. Dropping it leaves the server running until the runtime stops; call
/// [`RunningServer::stop`] to stop it.
pub struct RunningServer {
    address: SocketAddr,
    coordinator: Arc<Coordinator>,
    serving: JoinHandle<std::io::Result<()>>,
    ticking: JoinHandle<()>,
    admin_token: Option<PathBuf>,
}

impl RunningServer {
    /// Where it listens (useful with port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn coordinator(&self) -> &Arc<Coordinator> {
        &self.coordinator
    }

    /// Where the administrator's API token was written, if this start created the administrator.
    pub fn admin_token_file(&self) -> Option<&Path> {
        self.admin_token.as_deref()
    }

    /// Serves until the server fails.
    pub async fn wait(self) -> Result<(), ServerError> {
        let outcome = self.serving.await;
        self.ticking.abort();
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(ServerError::Stopped(error.to_string())),
            Err(error) => Err(ServerError::Stopped(error.to_string())),
        }
    }

    /// Stops serving at once: open connections are dropped and workers requeue nothing, because their
    /// leases simply vanish with the process's memory. Durable state is untouched.
    pub fn stop(self) {
        self.serving.abort();
        self.ticking.abort();
    }
}

/// Opens the store, resumes unfinished jobs and starts listening.
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    let data_dir = config.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&data_dir))
        .await
        .map_err(|error| ServerError::Stopped(error.to_string()))??;
    // The proof that the balances read on every result are the ledger's: one pass over the entries.
    let auditing = store.clone();
    let audit_started = std::time::Instant::now();
    let disagreements = tokio::task::spawn_blocking(move || auditing.read_blocking(store::ledger::audit))
        .await
        .map_err(|error| ServerError::Stopped(error.to_string()))??;
    if !disagreements.is_empty() {
        return Err(ServerError::LedgerDisagrees(disagreements));
    }
    tracing::info!(
        elapsed_ms = audit_started.elapsed().as_millis() as u64,
        "the ledger's balances agree with its entries"
    );
    let block = store.next_replica_block().await?;
    let admin_token = identity::bootstrap(&store, &config).await?;
    if let Some(path) = &admin_token {
        tracing::info!(path = %path.display(), "created the administrator; its API token is in this file");
    }
    let listen = config.listen;
    let limits = http::listener::ConnectionLimits {
        header_read_timeout: Duration::from_millis(config.header_read_timeout_ms.max(1)),
        max_connections: http::listener::fit_to_open_file_limit(config.max_connections.max(1)),
        max_connections_per_address: config.max_connections_per_address.max(1),
    };
    let tick_interval = Duration::from_millis(config.tick_interval_ms.max(10));
    let config = Arc::new(config);
    let (starting, shared) = (store.clone(), config.clone());
    let coordinator = tokio::task::spawn_blocking(move || Coordinator::start(starting, shared, block << 32))
        .await
        .map_err(|error| ServerError::Stopped(error.to_string()))??;
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|source| ServerError::Bind { address: listen, source })?;
    let address = listener.local_addr().map_err(|source| ServerError::Bind { address: listen, source })?;

    let ticker = coordinator.clone();
    let ticking = tokio::spawn(async move {
        let mut interval = tokio::time::interval(tick_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            ticker.tick();
        }
    });
    let app = http::router(http::AppState::new(store, config, coordinator.clone()));
    let serving = tokio::spawn(async move {
        http::listener::serve(listener, app, limits).await;
        Ok(())
    });
    tracing::info!(%address, "serving");
    Ok(RunningServer { address, coordinator, serving, ticking, admin_token })
}
