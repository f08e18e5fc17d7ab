//! Listeners, worker threads, the connection limit, shutdown.
//!
//! `main` binds the listeners first and hands them to [`run`] with a shutdown future (as
//! mini-redis does), so tests can bind port 0 and know the address before the server runs.
//! The accept loops and the metrics endpoint run on a small tokio runtime; client
//! connections are served by `-t` worker threads, each with its own poller (`worker`).

mod connection;
pub mod http;
mod secure;
pub mod shutdown;
mod table;
mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};

use crate::command::Context;
use crate::telemetry::ConnInfo;
use crate::telemetry::conns::state;
use connection::{Connection, Stream};
use shutdown::Shutdown;
use table::Table;

/// How long shutdown waits for connections to deliver replies already being written.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause between failed accepts (descriptors exhausted, say): the longest a client
/// waits to be turned away meanwhile.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Clients turned away per round while descriptors are exhausted.
const TURN_AWAY_MAX: usize = 1024;
/// What memcached answers a connection over the `-c` limit before closing it.
const TOO_MANY_CONNECTIONS: &[u8] = b"ERROR Too many open connections\r\n";
/// Connection slots beyond `-c`: a client may be admitted while the worker closing another
/// has not yet given its slot back.
const TABLE_SLACK: usize = 256;

/// A bound listening socket.
pub enum Listener {
    Tcp(TcpListener),
    /// A TCP listener whose connections speak TLS (`-Z`, all but `notls:` listeners).
    Tls(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// A TCP listener, speaking TLS or not.
    pub fn tcp(listener: TcpListener, tls: bool) -> Self {
        if tls {
            Listener::Tls(listener)
        } else {
            Listener::Tcp(listener)
        }
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(l) | Listener::Tls(l) => l.local_addr().ok(),
            Listener::Unix(..) => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) | Listener::Tls(l) => l
                .local_addr()
                .map(|a| format!("tcp:{a}"))
                .unwrap_or_else(|_| "tcp:?".into()),
            Listener::Unix(_, path) => format!("unix:{}", path.display()),
        }
    }

    fn fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        match self {
            Listener::Tcp(l) | Listener::Tls(l) => l.as_raw_fd(),
            Listener::Unix(l, _) => l.as_raw_fd(),
        }
    }
}

/// Serves until `signal` completes or a client sends `shutdown`, then stops accepting,
/// lets connections finish the replies they are writing, and returns.
pub async fn run(listeners: Vec<Listener>, ctx: Arc<Context>, signal: impl Future<Output = ()>) {
    let shutdown = Shutdown::new();
    let stop = Arc::new(AtomicBool::new(false));
    let request_stop: Arc<dyn Fn() + Send + Sync> = {
        let shutdown = shutdown.clone();
        Arc::new(move || shutdown.trigger())
    };
    // Room for every connection `-c` admits, and for those whose close is still under
    // way when the next is accepted.
    let table = match Table::new(ctx.config.max_conns.saturating_add(TABLE_SLACK)) {
        Ok(table) => Arc::new(table),
        Err(e) => {
            eprintln!("failed to create the connection poller: {e}");
            return;
        }
    };
    let shared = worker::Shared {
        table: table.clone(),
        ctx: ctx.clone(),
        stop: stop.clone(),
        stop_requested: request_stop,
        running: Arc::new(AtomicUsize::new(0)),
    };
    let mut threads = Vec::new();
    for index in 0..ctx.config.threads.max(1) {
        match worker::spawn(index, &shared) {
            Ok(thread) => threads.push(thread),
            Err(e) => eprintln!("failed to start worker thread {index}: {e}"),
        }
    }
    if threads.is_empty() {
        return;
    }
    // New certificates when the files change (a Kubernetes Secret update, say).
    let watcher = ctx
        .config
        .tls
        .as_ref()
        .and_then(|tls| match tls.spawn_watcher(stop.clone()) {
            Ok(thread) => Some(thread),
            Err(e) => {
                eprintln!("failed to start the TLS certificate watcher: {e}");
                None
            }
        });
    let mut accept_tasks = Vec::new();
    for listener in listeners {
        let info = Arc::new(ConnInfo::new(
            listener.fd(),
            listener.describe(),
            None,
            ctx.store.time().unix_now(),
        ));
        info.state.store(state::LISTENING, Ordering::Relaxed);
        ctx.register(info.clone());
        let dispatch = Dispatch {
            ctx: ctx.clone(),
            listen_addr: info.addr.clone().into(),
            table: table.clone(),
        };
        accept_tasks.push(tokio::spawn(accept_loop(listener, dispatch)));
    }
    tokio::select! {
        _ = signal => {}
        _ = shutdown.wait() => {}
    }
    ctx.draining.store(true, Ordering::Relaxed);
    // Stop accepting: the listeners close with their tasks.
    for task in &accept_tasks {
        task.abort();
    }
    for task in accept_tasks {
        let _ = task.await;
    }
    stop.store(true, Ordering::Release);
    // Each stopping worker wakes another; the last one drains, within DRAIN_TIMEOUT.
    table.wake();
    let _ = tokio::task::spawn_blocking(move || {
        for thread in threads.into_iter().chain(watcher) {
            let _ = thread.join();
        }
    })
    .await;
}

/// What an accept loop needs to hand connections to the workers.
struct Dispatch {
    ctx: Arc<Context>,
    listen_addr: Arc<str>,
    table: Arc<Table<Connection>>,
}

async fn accept_loop(listener: Listener, dispatch: Dispatch) {
    let ctx = &dispatch.ctx;
    let mut backoff = Duration::from_millis(1);
    // A descriptor held in reserve: when the process runs out, it is closed to accept and
    // turn away one waiting client, so clients are told instead of left hanging.
    let mut reserve = std::fs::File::open("/dev/null").ok();
    loop {
        let accepted = match &listener {
            Listener::Tcp(l) | Listener::Tls(l) => l.accept().await.and_then(|(s, peer)| {
                let _ = s.set_nodelay(true);
                let stream = mio::net::TcpStream::from_std(s.into_std()?);
                Ok((Stream::Tcp(stream), format!("tcp:{peer}")))
            }),
            Listener::Unix(l, path) => l.accept().await.and_then(|(s, _)| {
                let stream = mio::net::UnixStream::from_std(s.into_std()?);
                Ok((Stream::Unix(stream), format!("unix:{}", path.display())))
            }),
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(1);
                dispatch.admit(stream, peer, matches!(listener, Listener::Tls(_)));
            }
            Err(e) => {
                if ctx.verbosity.load(Ordering::Relaxed) > 0 {
                    eprintln!("accept failed on {}: {e}", dispatch.listen_addr);
                }
                let out_of_fds = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                if out_of_fds && reserve.take().is_some() {
                    ctx.counters
                        .listen_disabled_num
                        .fetch_add(1, Ordering::Relaxed);
                    turn_away_waiting(&listener, ctx).await;
                    reserve = std::fs::File::open("/dev/null").ok();
                }
                // Back off instead of spinning while descriptors are short.
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
            }
        }
    }
}

impl Dispatch {
    /// Hands a connection to the next worker, or turns the client away when `-c`
    /// connections are open.
    fn admit(&self, stream: Stream, peer: String, tls: bool) {
        let ctx = &self.ctx;
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
            reject(stream);
            return;
        }
        counters.total_connections.fetch_add(1, Ordering::Relaxed);
        let info = Arc::new(ConnInfo::new(
            stream.fd(),
            peer,
            Some(self.listen_addr.clone()),
            ctx.store.time().unix_now(),
        ));
        if ctx.verbosity.load(Ordering::Relaxed) > 1 {
            eprintln!("<{} new auto-negotiating client connection", info.fd);
        }
        // The TLS state itself is made when the client first speaks (`secure.rs`).
        let tls = ctx.config.tls.clone().filter(|_| tls);
        ctx.register(info.clone());
        let fd = stream.fd();
        let conn = Connection::new(stream, info, tls, ctx.limits());
        if let Err((conn, e)) = self.table.admit(conn, fd) {
            eprintln!("failed to register a connection: {e}");
            ctx.unregister(&conn.info);
            conn.close(ctx);
            counters.curr_connections.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// With the reserve descriptor freed: accepts the clients waiting right now, one at a time
/// (each closed before the next is accepted, so one descriptor serves them all), and turns
/// them away with memcached's `-c` answer.
async fn turn_away_waiting(listener: &Listener, ctx: &Context) {
    for _ in 0..TURN_AWAY_MAX {
        if !turn_away_one(listener, ctx).await {
            break;
        }
    }
}

/// Accepts one client if one is waiting and turns it away; whether there was one.
async fn turn_away_one(listener: &Listener, ctx: &Context) -> bool {
    let now = std::future::ready(());
    let stream = match listener {
        Listener::Tcp(l) | Listener::Tls(l) => tokio::select! {
            biased;
            r = l.accept() => r.ok().and_then(|(s, _)| s.into_std().ok()).map(|s| {
                Stream::Tcp(mio::net::TcpStream::from_std(s))
            }),
            _ = now => None,
        },
        Listener::Unix(l, _) => tokio::select! {
            biased;
            r = l.accept() => r.ok().and_then(|(s, _)| s.into_std().ok()).map(|s| {
                Stream::Unix(mio::net::UnixStream::from_std(s))
            }),
            _ = now => None,
        },
    };
    let Some(stream) = stream else {
        return false;
    };
    ctx.counters
        .rejected_connections
        .fetch_add(1, Ordering::Relaxed);
    reject(stream);
    true
}

/// Tells a client over the `-c` limit, then closes (memcached's `maxconns_fast`): one
/// non-blocking write into an empty socket buffer, which always has room for the line.
fn reject(stream: Stream) {
    // SAFETY: a valid buffer of its length on an open descriptor; the result is ignored.
    unsafe {
        libc::send(
            stream.fd(),
            TOO_MANY_CONNECTIONS.as_ptr().cast(),
            TOO_MANY_CONNECTIONS.len(),
            libc::MSG_NOSIGNAL,
        );
    }
}
