//! The connection edge: the accept loop that hands each TCP connection to hyper, with the bounds an open
//! server needs. A request head must arrive within the header-read timeout (hyper restarts that timer
//! whenever a kept-alive connection goes idle, so it is also the idle keep-alive timeout); connections are
//! capped per client address and in total (WebSockets included: the caps travel with the socket into the
//! upgrade; an IPv6 client counts by its /64); and the process's soft open-file limit is raised at start so
//! the caps, not the kernel, decide. Every connection has TCP keepalive (`keepalive`): a WebSocket whose
//! peer vanished without closing (a machine switched off, a NAT that forgot the flow) is found by the
//! kernel's probes and closed, so the worker's leases and the session consumer's attachment are let go,
//! however long the application stays quiet.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use crate::identity::address_group;

/// Bounds on connections, from the server's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A request head (and the first one on a new connection) must arrive within this time; an idle
    /// kept-alive connection is closed after it too.
    pub header_read_timeout: Duration,
    /// Open connections in total (HTTP and WebSocket).
    pub max_connections: usize,
    /// Open connections from one client address.
    pub max_connections_per_address: usize,
}

/// Probes after 30 s of silence, every 10 s, 3 unanswered: a vanished peer is found within about a minute.
/// The peer's kernel answers the probes, so an application that merely stops reading is not affected.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_RETRIES: u32 = 3;

/// TCP keepalive as every accepted connection gets it.
fn keepalive() -> socket2::TcpKeepalive {
    socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES)
}

/// File descriptors kept free for everything but connections: the database, its WAL, modules, logs.
const RESERVED_FILES: u64 = 128;

/// Raises the soft open-file limit to the hard limit and returns the connection cap that fits under it,
/// logging both. A server that cannot raise it keeps its limit and a cap that fits.
pub fn fit_to_open_file_limit(wanted: usize) -> usize {
    let soft = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(soft) => {
            tracing::info!(open_files = soft, "raised the soft open-file limit");
            soft
        }
        Err(error) => {
            let soft = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
            tracing::warn!(%error, open_files = soft, "could not raise the soft open-file limit");
            soft
        }
    };
    let fits = usize::try_from(soft.saturating_sub(RESERVED_FILES).max(16)).unwrap_or(usize::MAX);
    let cap = wanted.min(fits);
    if cap < wanted {
        tracing::warn!(wanted, cap, "the open-file limit caps connections below the configured maximum");
    }
    cap
}

/// Counts connections per client address.
#[derive(Debug)]
struct PerAddress {
    open: Mutex<HashMap<IpAddr, usize>>,
    max: usize,
}

/// One connection's place in its address's count; given back when the connection closes.
#[derive(Debug)]
struct AddressSlot {
    counts: Arc<PerAddress>,
    address: IpAddr,
}

impl AddressSlot {
    fn take(counts: &Arc<PerAddress>, address: IpAddr) -> Option<AddressSlot> {
        let mut open = counts.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = open.entry(address).or_default();
        if *count >= counts.max {
            return None;
        }
        *count += 1;
        Some(AddressSlot { counts: counts.clone(), address })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = open.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

/// A TCP stream that holds its places in the connection counts, so that they are given back when the
/// stream closes, after an upgrade to a WebSocket as well. When the server is done with it, it lingers
/// (see [`linger`]) before it closes.
#[derive(Debug)]
struct CountedStream {
    held: Option<Held>,
}

#[derive(Debug)]
struct Held {
    stream: TcpStream,
    _total: OwnedSemaphorePermit,
    _address: AddressSlot,
}

impl CountedStream {
    fn stream(&mut self) -> &mut TcpStream {
        &mut self.held.as_mut().expect("the stream is held until the connection is dropped").stream
    }
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        if let Some(held) = self.held.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(linger(held));
        }
    }
}

/// The most a closing connection reads and throws away, and for how long.
const LINGER_BYTES: u64 = 256 * 1024 * 1024;
const LINGER_IDLE: Duration = Duration::from_secs(2);
const LINGER_TOTAL: Duration = Duration::from_secs(30);

/// A lingering close (as web servers do): the server has answered, perhaps refusing a body it did not
/// read (413 from the declared size); closing at once with that body's bytes unread would reset the
/// connection and destroy the answer before the client reads it. So the write side is closed and what the
/// client still sends is read and thrown away, within bounds, until it stops or closes; only then is the
/// socket closed and its places in the counts given back.
async fn linger(mut held: Held) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = held.stream.shutdown().await;
    let deadline = tokio::time::Instant::now() + LINGER_TOTAL;
    let mut buffer = vec![0u8; 64 * 1024];
    let mut discarded = 0u64;
    while discarded < LINGER_BYTES {
        let idle = (tokio::time::Instant::now() + LINGER_IDLE).min(deadline);
        match tokio::time::timeout_at(idle, held.stream.read(&mut buffer)).await {
            Ok(Ok(read)) if read > 0 => discarded += read as u64,
            _ => break,
        }
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(mut self: Pin<&mut Self>, context: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream()).poll_read(context, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(mut self: Pin<&mut Self>, context: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(self.stream()).poll_write(context, bytes)
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream()).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream()).poll_shutdown(context)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.stream()).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.held.as_ref().is_some_and(|held| held.stream.is_write_vectored())
    }
}

/// Accepts connections until the task is aborted, serving each with `app` under `limits`. Handlers see
/// the client's address as `ConnectInfo<SocketAddr>`.
pub async fn serve(listener: TcpListener, app: Router, limits: ConnectionLimits) {
    let total = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = Arc::new(PerAddress { open: Mutex::default(), max: limits.max_connections_per_address });
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, most likely: wait for some to close instead of spinning.
                tracing::warn!(%error, "could not accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Over a cap, the connection is closed at once (dropped): nothing is read from it.
        let Ok(permit) = total.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "refused a connection: the server has as many as it takes");
            continue;
        };
        let Some(slot) = AddressSlot::take(&per_address, address_group(peer.ip())) else {
            tracing::debug!(%peer, "refused a connection: its address has as many open as it may");
            continue;
        };
        let _ = stream.set_nodelay(true);
        if let Err(error) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive()) {
            tracing::debug!(%peer, %error, "could not turn on TCP keepalive");
        }
        let io = TokioIo::new(CountedStream { held: Some(Held { stream, _total: permit, _address: slot }) });
        let app = app.clone();
        tokio::spawn(serve_connection(io, peer, app, limits));
    }
}

async fn serve_connection(io: TokioIo<CountedStream>, peer: SocketAddr, app: Router, limits: ConnectionLimits) {
    let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(request)
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(io, service)
        .with_upgrades();
    if let Err(error) = connection.await {
        tracing::debug!(%peer, %error, "a connection ended with an error");
    }
}
