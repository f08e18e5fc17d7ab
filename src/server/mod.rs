//! Everything tokio: listeners, one task per connection, the connection limit, shutdown.
//!
//! `main` binds the listeners first and hands them to [`run`] with a shutdown future (as
//! mini-redis does), so tests can bind port 0 and know the address before the server runs.

mod connection;
pub mod http;
pub mod shutdown;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc;

use crate::command::{ConnInfo, Context};
use connection::Connection;
use shutdown::Shutdown;

/// How long shutdown waits for connections to deliver replies already being written.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause between failed accepts (descriptors exhausted, say).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// What memcached answers a connection over the `-c` limit before closing it.
const TOO_MANY_CONNECTIONS: &[u8] = b"ERROR Too many open connections\r\n";

/// A bound listening socket.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Unix(..) => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map(|a| format!("tcp:{a}"))
                .unwrap_or_else(|_| "tcp:?".into()),
            Listener::Unix(_, path) => format!("unix:{}", path.display()),
        }
    }

    fn fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l, _) => l.as_raw_fd(),
        }
    }
}

/// Serves until `signal` completes or a client sends `shutdown`, then stops accepting,
/// lets connections finish the replies they are writing, and returns.
pub async fn run(listeners: Vec<Listener>, ctx: Arc<Context>, signal: impl Future<Output = ()>) {
    let shutdown = Shutdown::new();
    // Each connection task holds a sender; when all are dropped, `done` resolves.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let mut accept_tasks = Vec::new();
    for listener in listeners {
        let info = Arc::new(ConnInfo::new(
            listener.fd(),
            listener.describe(),
            None,
            ctx.store.time().unix_now(),
        ));
        info.state
            .store(crate::command::conn_state::LISTENING, Ordering::Relaxed);
        ctx.register(info.clone());
        accept_tasks.push(tokio::spawn(accept_loop(
            listener,
            info,
            ctx.clone(),
            shutdown.clone(),
            done_tx.clone(),
        )));
    }
    drop(done_tx);
    tokio::select! {
        _ = signal => {}
        _ = shutdown.wait() => {}
    }
    ctx.draining.store(true, Ordering::Relaxed);
    shutdown.trigger();
    for task in accept_tasks {
        task.abort();
    }
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, done_rx.recv()).await;
}

async fn accept_loop(
    listener: Listener,
    info: Arc<ConnInfo>,
    ctx: Arc<Context>,
    shutdown: Shutdown,
    done: mpsc::Sender<()>,
) {
    use std::os::fd::AsRawFd;
    let listen_addr = info.addr.clone();
    let mut backoff = Duration::from_millis(1);
    loop {
        let result = match &listener {
            Listener::Tcp(l) => l.accept().await.map(|(s, peer)| {
                let _ = s.set_nodelay(true);
                let fd = s.as_raw_fd();
                let peer = format!("tcp:{peer}");
                admit(s, fd, peer, &listen_addr, &ctx, &shutdown, &done);
            }),
            Listener::Unix(l, path) => l.accept().await.map(|(s, _)| {
                let fd = s.as_raw_fd();
                let peer = format!("unix:{}", path.display());
                admit(s, fd, peer, &listen_addr, &ctx, &shutdown, &done);
            }),
        };
        match result {
            Ok(()) => backoff = Duration::from_millis(1),
            Err(e) => {
                // Out of descriptors, say: back off instead of spinning.
                if ctx.verbosity.load(Ordering::Relaxed) > 0 {
                    eprintln!("accept failed on {listen_addr}: {e}");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
            }
        }
    }
}

/// Starts a connection task, or turns the client away when `-c` connections are open.
fn admit<S>(
    stream: S,
    fd: i32,
    peer: String,
    listen_addr: &str,
    ctx: &Arc<Context>,
    shutdown: &Shutdown,
    done: &mpsc::Sender<()>,
) where
    S: AsyncRead + AsyncWrite + connection::Readiness + Unpin + Send + Sync + 'static,
{
    let counters = &ctx.counters;
    let current = counters.curr_connections.fetch_add(1, Ordering::Relaxed);
    if current >= ctx.config.max_conns as u64 {
        counters.curr_connections.fetch_sub(1, Ordering::Relaxed);
        counters
            .rejected_connections
            .fetch_add(1, Ordering::Relaxed);
        if ctx.verbosity.load(Ordering::Relaxed) > 0 {
            eprintln!(
                "Too many open connections (-c {}): refused {peer}",
                ctx.config.max_conns
            );
        }
        tokio::spawn(reject(stream));
        return;
    }
    counters.total_connections.fetch_add(1, Ordering::Relaxed);
    let conn = Connection::new(
        stream,
        fd,
        peer,
        listen_addr.to_string(),
        ctx.clone(),
        shutdown.clone(),
    );
    let done = done.clone();
    tokio::spawn(async move {
        conn.serve().await;
        drop(done);
    });
}

/// Tells a client over the `-c` limit, then closes (memcached's `maxconns_fast`).
async fn reject<S: AsyncWrite + Unpin>(mut stream: S) {
    let _ = stream.write_all(TOO_MANY_CONNECTIONS).await;
    let _ = stream.shutdown().await;
}
