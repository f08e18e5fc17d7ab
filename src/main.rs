//! The `memcrab` binary: parse memcached's flags, bind, serve until SIGTERM/SIGINT.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use memcrab::command::Context;
use memcrab::config::{Action, Cli, Config};
use memcrab::metrics::Exporter;
use memcrab::server::{self, Listener};
use memcrab::storage::snapshot::{self, Loaded};
use memcrab::storage::{Store, SystemClock};

/// Items the reaper checks per shard per tick, and the tick. A full pass over a million
/// items spread over 16 shards takes about six seconds.
const REAP_BUDGET: usize = 1000;
const REAP_TICK: Duration = Duration::from_millis(100);

fn main() -> ExitCode {
    let config = match Cli::parse_args(std::env::args_os()) {
        Ok(Action::Run(config)) => *config,
        Ok(Action::Print(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(e.exit_code());
        }
    };
    if let Err(e) = fit_file_limit(&config) {
        eprintln!("{e}");
        // memcached's EX_OSERR.
        return ExitCode::from(71);
    }
    tune_allocator();
    // The runtime runs the accept loops, signals and the metrics endpoint; clients are
    // served by the `-t` worker threads the server starts (src/server/worker.rs).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("failed to start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// glibc's malloc raises its mmap threshold as large blocks are freed, after which large
/// values come from the heap's arenas and fragment them (RSS past `-m`). A fixed threshold at
/// the large-item size keeps every segment and large item in its own mapping, returned to the
/// OS when freed.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(
            libc::M_MMAP_THRESHOLD,
            memcrab::storage::MMAP_THRESHOLD as libc::c_int,
        );
    }
}

async fn serve(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let signal = signals(&config).map_err(|e| format!("failed to install signal handlers: {e}"))?;
    let store = Arc::new(Store::new(config.store.clone(), Arc::new(SystemClock)));
    let ctx = Arc::new(Context::new(store, config.clone()));
    if config.metrics_port != 0 {
        let exporter = Arc::new(Exporter::new(ctx.clone()));
        match metrics_listener(&config).await {
            Ok(listener) => {
                tokio::spawn(server::http::serve(listener, exporter));
            }
            // The cache still serves without its metrics.
            Err(e) => eprintln!(
                "failed to listen on metrics port {}: {e}",
                config.metrics_port
            ),
        }
    }
    // Root with `-u` binds and switches user first, so that the memory file is checked
    // (and later saved) as the user that will write it.
    // SAFETY: getuid has no preconditions.
    let switches_user = config.user.is_some() && unsafe { libc::getuid() } == 0;
    let mut bound = None;
    if switches_user {
        bound = Some(bind(&config).await?);
        drop_privileges(&config)?;
    }
    // A warm restart: the items come back before the first client does; `/readyz` says
    // "loading" meanwhile, and (unless bound above) the listeners are not bound yet, so a
    // TCP readiness probe fails too.
    if let Some(path) = config.memory_file.clone() {
        snapshot::check_writable(&path).map_err(|e| {
            format!(
                "failed to open memory file {}: {e}",
                snapshot::temp_path(&path).display()
            )
        })?;
        let store = ctx.store.clone();
        ctx.loading.store(true, Ordering::Relaxed);
        let loaded = tokio::task::spawn_blocking(move || store.load_file(&path)).await?;
        ctx.loading.store(false, Ordering::Relaxed);
        report_restore(&config, &loaded);
    }
    let listeners = match bound {
        Some(listeners) => listeners,
        None => {
            let listeners = bind(&config).await?;
            drop_privileges(&config)?;
            listeners
        }
    };
    if let Some(path) = &config.pidfile {
        std::fs::write(path, format!("{}\n", std::process::id()))?;
    }
    if let Ok(path) = std::env::var("MEMCACHED_PORT_FILENAME") {
        write_port_file(&path, &listeners);
    }
    let reaper = config.lru_crawler.then(|| spawn_reaper(ctx.clone()));
    server::run(listeners, ctx.clone(), signal).await;
    if let Some((stop, handle)) = reaper {
        stop.store(true, Ordering::Relaxed);
        let _ = handle.join();
    }
    // Every connection has been served and closed: save what the cache holds.
    if let Some(path) = &config.memory_file {
        match ctx.store.save_file(path) {
            Ok(saved) => eprintln!(
                "saved {} items ({:.1} MiB) to {} in {:.2} s",
                saved.items,
                saved.bytes as f64 / (1 << 20) as f64,
                path.display(),
                saved.elapsed.as_secs_f64()
            ),
            Err(e) => eprintln!("failed to save the cache to {}: {e}", path.display()),
        }
    }
    if let Some(path) = &config.pidfile {
        let _ = std::fs::remove_file(path);
    }
    if let Some(path) = &config.unix_socket {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// One line on what a warm restart brought back, or why it starts empty.
fn report_restore(config: &Config, loaded: &Loaded) {
    let path = config
        .memory_file
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    match loaded {
        Loaded::Missing => eprintln!("no saved cache at {path}: starting empty"),
        Loaded::Refused(why) => eprintln!("not restoring {path}: {why}; starting empty"),
        Loaded::Restored(r) => {
            let mut line = format!(
                "restored {} items from {path} in {:.2} s",
                r.items,
                r.elapsed.as_secs_f64()
            );
            for (n, what) in [
                (r.expired, "expired since the save"),
                (r.too_large, "over -I"),
                (r.no_memory, "beyond -m"),
            ] {
                if n > 0 {
                    line.push_str(&format!("; {n} {what} left out"));
                }
            }
            for note in &r.notes {
                line.push_str(&format!("; {note}"));
            }
            if let Some(problem) = &r.problem {
                line.push_str(&format!("; stopped early: {problem}"));
            }
            eprintln!("{line}");
        }
    }
}

/// Installs the signal handlers and returns a future that resolves on the first SIGTERM,
/// SIGINT or SIGUSR1 (memcached's graceful stop), which starts the drain. A second SIGTERM
/// or SIGINT exits at once with status 1, whatever the drain is waiting for (an operator's
/// second Ctrl-C, or a supervisor that gave up on the grace period). SIGHUP reloads the TLS
/// certificates, as `refresh_certs` does (memcached 1.6.45 does the same from its clock
/// tick); without `-Z` it does nothing.
fn signals(config: &Config) -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut hup = signal(SignalKind::hangup())?;
    let tls = config.tls.clone();
    let stop = Arc::new(tokio::sync::Notify::new());
    let notify = stop.clone();
    tokio::spawn(async move {
        let mut stopping = false;
        loop {
            let terminate = tokio::select! {
                _ = term.recv() => true,
                _ = int.recv() => true,
                _ = usr1.recv() => {
                    if !stopping {
                        eprintln!("Gracefully stopping");
                    }
                    false
                }
                _ = hup.recv() => {
                    // Off the runtime thread: the files are read from disk. A failure keeps
                    // the previous certificate serving, and says why in memcached's words.
                    if let Some(tls) = tls.clone() {
                        match tokio::task::spawn_blocking(move || tls.refresh()).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => {
                                eprintln!("Could not reload TLS certificates on SIGHUP: {}", e.0)
                            }
                            Err(e) => eprintln!("Could not reload TLS certificates on SIGHUP: {e}"),
                        }
                    }
                    continue;
                }
            };
            if stopping && terminate {
                eprintln!("second termination signal: exiting without finishing the drain");
                std::process::exit(1);
            }
            if !stopping {
                stopping = true;
                // Stored as a permit if the server is not waiting yet.
                notify.notify_one();
            }
        }
    });
    Ok(async move { stop.notified().await })
}

/// Raises the open-file limit to fit `-c` connections and the server's own descriptors, as
/// memcached does; refuses to start (memcached's message) when the hard limit cannot be
/// raised that far, rather than accept connections it could not serve.
fn fit_file_limit(config: &Config) -> Result<(), String> {
    // Listeners, a poller and a waker per worker, the metrics socket, std streams, slack.
    let need = (config.max_conns + 2 * config.threads + 64) as libc::rlim_t;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct, which `lim` is.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err("failed to getrlimit number of files".into());
    }
    if lim.rlim_cur >= need {
        return Ok(());
    }
    let raised = libc::rlimit {
        rlim_cur: need,
        rlim_max: lim.rlim_max.max(need),
    };
    // SAFETY: setrlimit reads one rlimit struct; failure is checked.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err("failed to set rlimit for open files. Try starting as root or requesting smaller maxconns value.".into());
    }
    Ok(())
}

/// memcached's `MEMCACHED_PORT_FILENAME`: one `TCP INET: <port>` or `TCP INET6: <port>` line
/// per TCP listener (both for the dual-stack socket that serves all interfaces), written to
/// `<path>.lck` and renamed into place, so a reader never sees half of it.
fn write_port_file(path: &str, listeners: &[Listener]) {
    let mut text = String::new();
    for addr in listeners.iter().filter_map(Listener::local_addr) {
        let port = addr.port();
        match addr.ip() {
            std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
                text.push_str(&format!("TCP INET: {port}\nTCP INET6: {port}\n"));
            }
            std::net::IpAddr::V6(_) => text.push_str(&format!("TCP INET6: {port}\n")),
            std::net::IpAddr::V4(_) => text.push_str(&format!("TCP INET: {port}\n")),
        }
    }
    let temp = format!("{path}.lck");
    let written = std::fs::write(&temp, text).and_then(|()| std::fs::rename(&temp, path));
    if let Err(e) = written {
        eprintln!("Failed to open \"{temp}\": {e}");
    }
}

/// The metrics port listens on the first `-l` address, or on all interfaces.
async fn metrics_listener(config: &Config) -> std::io::Result<tokio::net::TcpListener> {
    let port = config.metrics_port;
    let first = config
        .listen_specs()
        .first()
        .and_then(|(spec, _)| resolve(spec, port));
    match first.and_then(|addrs| addrs.into_iter().next()) {
        Some(addr) => listen(SocketAddr::new(addr.ip(), port), 128),
        None => listen(SocketAddr::from(([0u16; 8], port)), 128)
            .or_else(|_| listen(SocketAddr::from(([0u8; 4], port)), 128)),
    }
}

fn spawn_reaper(ctx: Arc<Context>) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::Builder::new()
        .name("memcrab-reaper".into())
        .spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                ctx.store.reap(REAP_BUDGET);
                ctx.counters.reaper_runs.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(REAP_TICK);
            }
        })
        .expect("spawning the reaper thread");
    (stop, handle)
}

async fn bind(config: &Config) -> Result<Vec<Listener>, Box<dyn std::error::Error>> {
    if let Some(path) = &config.unix_socket {
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path)
            .map_err(|e| format!("failed to listen on UNIX socket {}: {e}", path.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(config.unix_mask))?;
        return Ok(vec![Listener::Unix(listener, path.clone())]);
    }
    if config.port == 0 && !config.random_port {
        return Err("no TCP port to listen on (-p 0) and no UNIX socket (-s)".into());
    }
    let mut listeners = Vec::new();
    if config.listen.is_empty() {
        // All interfaces: IPv6 any is dual-stack on Linux; fall back to IPv4 without IPv6.
        let v6 = SocketAddr::from(([0u16; 8], config.port));
        let v4 = SocketAddr::from(([0u8; 4], config.port));
        let listener = match listen(v6, config.backlog) {
            Ok(l) => l,
            Err(_) => listen(v4, config.backlog)
                .map_err(|e| format!("failed to listen on TCP port {}: {e}", config.port))?,
        };
        listeners.push(Listener::tcp(listener, config.tls.is_some()));
        return Ok(listeners);
    }
    for (spec, tls) in config.listen_specs() {
        let addrs = resolve(spec, config.port)
            .ok_or_else(|| format!("failed to listen on one of interface(s) {spec}"))?;
        for addr in addrs {
            let listener = listen(addr, config.backlog)
                .map_err(|e| format!("failed to listen on one of interface(s) {spec}: {e}"))?;
            listeners.push(Listener::tcp(listener, tls));
        }
    }
    Ok(listeners)
}

/// `-l` forms: `ip`, `host`, `ip:port`, `[v6]:port`.
fn resolve(spec: &str, port: u16) -> Option<Vec<SocketAddr>> {
    if let Ok(addr) = spec.parse::<SocketAddr>() {
        return Some(vec![addr]);
    }
    let host = spec.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Some(vec![SocketAddr::new(ip, port)]);
    }
    let addrs: Vec<_> = (host, port).to_socket_addrs().ok()?.collect();
    (!addrs.is_empty()).then_some(addrs)
}

fn listen(addr: SocketAddr, backlog: i32) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv6() {
        tokio::net::TcpSocket::new_v6()?
    } else {
        tokio::net::TcpSocket::new_v4()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog.max(1) as u32)
}

/// memcached's `-u`: when started as root, switch to that user after binding. Unlike
/// memcached, running as root without `-u` is allowed (containers often do).
fn drop_privileges(config: &Config) -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return Ok(());
    }
    let Some(user) = &config.user else {
        return Ok(());
    };
    let name = std::ffi::CString::new(user.as_str())?;
    // SAFETY: a valid C string; the returned record is read before any other getpw call.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(format!("can't find the user {user} to switch to").into());
    }
    // SAFETY: pw is non-null and points at libc's static passwd record.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    // SAFETY: plain syscalls on ids read above; failure is checked.
    if unsafe { libc::setgid(gid) } != 0 || unsafe { libc::setuid(uid) } != 0 {
        return Err(format!("failed to assume identity of user {user}").into());
    }
    Ok(())
}
