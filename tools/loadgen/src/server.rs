//! The two servers: started here on a free port, killed (by PID) when dropped.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Res;
use crate::machine::{
    SchedSnapshot, cpu_set, process_cpu_seconds, process_cpu_split, set_affinity,
};
use crate::options::Opts;
use crate::tls::{self, Tls};
use crate::wire::Conn;

/// How long a server may take to accept its first connection.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Memcrab,
    Memcached,
}

pub const TARGETS: [Target; 2] = [Target::Memcrab, Target::Memcached];

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Memcrab => "memcrab",
            Target::Memcached => "memcached",
        }
    }
    pub fn bin(self, opts: &Opts) -> &PathBuf {
        match self {
            Target::Memcrab => &opts.memcrab_bin,
            Target::Memcached => &opts.memcached_bin,
        }
    }
}

/// A server process started by this bench; killed (SIGKILL, by its PID) and reaped when
/// dropped, also when a run panics. SIGKILL rather than SIGTERM: memcached takes up to a
/// second to notice SIGTERM, which would only add wall time.
pub struct Server {
    pub child: Child,
    pub pid: u32,
    pub port: u16,
    pub target: Target,
    /// For a TLS workload: how the client starts TLS (a session store of this run's own).
    pub tls: Option<tls::Client>,
    /// With `--metrics`: the scraper thread and its stop flag.
    pub scraper: Option<(
        Arc<std::sync::atomic::AtomicBool>,
        std::thread::JoinHandle<()>,
    )>,
}

impl Server {
    pub fn start(
        target: Target,
        opts: &Opts,
        mem_mb: usize,
        threads: usize,
        extra: &[&str],
        tls: Tls,
    ) -> Res<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("finding a free port: {e}"))?
            .port();
        let mut cmd = Command::new(target.bin(opts));
        cmd.args(["-p", &port.to_string(), "-U", "0", "-l", "127.0.0.1"])
            .args(["-m", &mem_mb.to_string(), "-t", &threads.to_string()])
            .args(extra)
            .args(tls::server_args(tls, opts.tls_key)?);
        if target == Target::Memcached {
            // memcached refuses to run as root without a user to switch to.
            cmd.args(["-u", "nobody"]);
        }
        let metrics_port = (opts.metrics && target == Target::Memcrab)
            .then(|| {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .map(|a| a.port())
            })
            .transpose()
            .map_err(|e| format!("finding a free port: {e}"))?;
        if let Some(mport) = metrics_port {
            cmd.args(["--metrics-port", &mport.to_string()]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // Placement: the server's CPUs, or when only the client is pinned (which this child
        // would inherit) the ones this process started with. Threads inherit the mask.
        let cpus =
            (opts.server_cpus.as_ref()).or(opts.client_cpus.as_ref().map(|_| &opts.startup_cpus));
        if let Some(cpus) = cpus {
            let set = cpu_set(cpus);
            // SAFETY: the closure runs in the child between fork and exec; it makes one
            // system call (async-signal-safe) on a mask copied in, and allocates nothing.
            unsafe {
                cmd.pre_exec(move || set_affinity(&set));
            }
        }
        let client = tls::client_config(tls, opts.tls_key)?;
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting {}: {e}", target.bin(opts).display()))?;
        let mut server = Server {
            pid: child.id(),
            child,
            port,
            target,
            tls: client,
            scraper: metrics_port.map(spawn_scraper),
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("{} exited at startup: {status}", target.name()));
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not accept connections on port {port} within {STARTUP_TIMEOUT:?}",
                    target.name()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A client connection: plaintext, or TLS for a TLS workload.
    pub async fn connect(&self) -> Res<Conn> {
        Conn::open(self.port, self.tls.as_ref()).await
    }

    /// utime + stime of the server process, in seconds.
    pub fn cpu_seconds(&self) -> Res<f64> {
        process_cpu_seconds(&format!("/proc/{}/stat", self.pid))
    }

    /// utime of the server process alone (user space: parsing, the engine, the event
    /// loop), in seconds; the rest of its CPU is the kernel serving its system calls.
    pub fn user_cpu_seconds(&self) -> Res<f64> {
        Ok(process_cpu_split(&format!("/proc/{}/stat", self.pid))?.0)
    }

    /// What the scheduler has done with each of the server's threads so far.
    pub fn sched(&self) -> Res<SchedSnapshot> {
        SchedSnapshot::take(&self.pid.to_string())
    }

    /// Resident set size in MiB, from VmRSS in `/proc/<pid>/status`.
    pub fn rss_mib(&self) -> Res<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .map_err(|e| format!("reading /proc/{}/status: {e}", self.pid))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .ok_or_else(|| format!("no VmRSS in /proc/{}/status", self.pid))
    }
}

/// Scrapes `/metrics` once a second, as Prometheus would, until told to stop.
fn spawn_scraper(
    port: u16,
) -> (
    Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<()>,
) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ =
                    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let mut body = Vec::new();
                let _ = s.read_to_end(&mut body);
            }
            for _ in 0..10 {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
    (stop, handle)
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some((stop, handle)) = self.scraper.take() {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = handle.join();
        }
        if let Ok(Some(_)) = self.child.try_wait() {
            eprintln!(
                "note: {} (pid {}) had already exited before the bench stopped it",
                self.target.name(),
                self.pid
            );
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The workspace root (this crate is `tools/loadgen` in it): where `docs/bench/` is and the
/// manifest that builds memcrab.
pub fn workspace_root() -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    dir.parent()
        .and_then(std::path::Path::parent)
        .unwrap_or(dir)
        .to_path_buf()
}

/// Without `MEMCRAB_BIN`: builds the workspace's memcrab (`cargo build --release --bin
/// memcrab`, a no-op when it is up to date) and returns the binary's path, so that a run
/// measures the code in the tree. The same cargo and target directory as the one that ran
/// this program (`CARGO`, `CARGO_TARGET_DIR` are inherited); cargo's messages go to stderr.
pub fn build_memcrab() -> Res<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = workspace_root().join("Cargo.toml");
    let hint = "(or set MEMCRAB_BIN to the binary to run)";
    let out = Command::new(&cargo)
        .args(["build", "--release", "--bin", "memcrab"])
        .args([
            "--message-format",
            "json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running {}: {e} {hint}", cargo.to_string_lossy()))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build --release --bin memcrab --manifest-path {} failed: {} {hint}",
            manifest.display(),
            out.status
        ));
    }
    // One JSON message a line; the binary is the one artifact with an "executable" path.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| json_str(line, "executable"))
        .map(PathBuf::from)
        .ok_or_else(|| format!("cargo built memcrab but named no executable {hint}"))
}

/// The string value of `"key":"..."` in a line of cargo's JSON, unescaped (`null` or absent:
/// `None`).
fn json_str(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let mut out = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => out.push(chars.next()?),
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_str_reads_the_executable_of_cargo_messages() {
        let lib = r#"{"reason":"compiler-artifact","executable":null,"fresh":true}"#;
        assert_eq!(json_str(lib, "executable"), None);
        let bin = r#"{"reason":"compiler-artifact","executable":"/t/a \"b\"\\c/memcrab","x":1}"#;
        assert_eq!(
            json_str(bin, "executable").as_deref(),
            Some(r#"/t/a "b"\c/memcrab"#)
        );
    }

    #[test]
    fn the_workspace_root_holds_the_server_and_the_charts() {
        let root = workspace_root();
        assert!(root.join("src/main.rs").is_file(), "{}", root.display());
        assert!(root.join("docs").is_dir(), "{}", root.display());
    }
}
