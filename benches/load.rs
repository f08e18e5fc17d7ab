//! Side-by-side load benchmark: memcrab against Debian's memcached, both started here on
//! 127.0.0.1 with the same `-m` and `-t`, driven by a load generator of our own.
//!
//! ```text
//! cargo bench --bench load -- [--quick] [--rounds N] [--duration SECS] [--conns N]
//!                             [--threads N] [--fill-threads N] [--mem MB] [--only NAME,...]
//!                             [--items-scale F] [--wait-quiet SECS] [--metrics]
//!                             [--no-charts] [--charts]
//! ```
//!
//! Each workload runs against the two servers alternately (memcrab, memcached, memcrab, ...),
//! each run on a freshly started server, and the summary reports per-server medians and the
//! ratio memcrab/memcached, then the targets judged from those medians; full runs (no
//! `--quick`, no `--only`) also write SVG charts to `docs/bench/` with plotters. Servers:
//! `MEMCRAB_BIN` (default: the `memcrab` binary cargo just built, `target/release/memcrab`)
//! and `MEMCACHED_BIN` (default `/usr/bin/memcached`).
//!
//! All traffic goes only to the two servers started here on 127.0.0.1; every loop is bounded
//! by a count or a deadline, and every read by a timeout.
//!
//! To add a workload: add a variant to [`Kind`] (or reuse one with new parameters), an entry
//! in [`workloads`], and a branch in [`run_once`] returning its [`Metric`]s.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plotters::style::RGBColor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Res<T> = Result<T, String>;

/// Seed of every generated key, length and value: runs are repeatable.
const SEED: u64 = 0x6d65_6d63_7261_6221;
/// How long one read or write may wait before the run is declared hung.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server may take to accept its first connection.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests per pipelined batch in the fill and preload phases.
const FILL_BATCH: usize = 100;
/// Upper bound on requests one client connection sends in one timed run.
const MAX_OPS_PER_CONN: u64 = 50_000_000;

// ---------------------------------------------------------------------------------------------
// PRNG: splitmix64, no external crate.

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(mix64(seed ^ 0x9e37_79b9_7f4a_7c15))
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }
    /// Uniform in `0..n` (n > 0), by multiply-shift.
    fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo + 1) as u64) as usize
    }
    /// Appends `n` random bytes drawn from `alphabet` (length a power of two up to 256, or
    /// any length with a slight bias, which does not matter here).
    fn push_chars(&mut self, out: &mut Vec<u8>, n: usize, alphabet: &[u8]) {
        let mut left = n;
        while left > 0 {
            let word = self.next_u64().to_le_bytes();
            for &b in word.iter().take(left) {
                out.push(alphabet[b as usize % alphabet.len()]);
            }
            left = left.saturating_sub(8);
        }
    }
}

const KEY_CHARS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const VALUE_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// ---------------------------------------------------------------------------------------------
// Options.

#[derive(Clone, Debug)]
struct Opts {
    quick: bool,
    rounds: usize,
    duration: Duration,
    conns: usize,
    /// Server `-t` for the throughput workloads.
    threads: usize,
    /// Server `-t` for the fill workloads.
    fill_threads: usize,
    /// Server `-m` for every workload.
    mem_mb: usize,
    /// Offered load of get-set-rate, requests/s in all (`--rate`); 0: half of the slower
    /// server's closed-loop get-set rate in this run, else [`PACED_RATE`].
    rate: u64,
    /// Divides both `-m` and the number of items for the fill workloads (the quick run uses
    /// 4: `-m 16` and a quarter of the items, so the cache still overflows as many times).
    fill_divisor: usize,
    /// Multiplies the number of items the fill workloads write (`--items-scale`).
    items_scale: f64,
    only: Vec<String>,
    /// Before each run, wait up to this long for other processes to go quiet.
    wait_quiet: Option<Duration>,
    memcrab_bin: PathBuf,
    memcached_bin: PathBuf,
    /// Run memcrab with its metrics endpoint on, scraped every second (`--metrics`).
    metrics: bool,
    /// Write the SVG charts to [`CHART_DIR`] (full runs of every workload only).
    charts: bool,
    /// `--charts`: write them even with `--quick` or `--only`.
    force_charts: bool,
}

const USAGE: &str = "\
usage: cargo bench --bench load -- [options]
  --quick            smoke run (~20 s): 1 round, 1 s runs; fills at a quarter of -m and items
  --rounds N         runs per server per workload, alternating memcrab/memcached (default 3)
  --duration SECS    length of each throughput run (default 5)
  --conns N          client connections for the throughput workloads (default 50)
  --threads N        server -t for the throughput workloads (default 2)
  --fill-threads N   server -t for the fill workloads (default 4)
  --mem MB           server -m for every workload (default 64)
  --rate N           requests/s offered in all by get-set-rate (default: half of the slower
                     server's get-set rate in this run, or 25000 when get-set did not run)
  --only A,B         run only the named workloads (see the list below)
  --items-scale F    multiply the items the fill workloads write by F (default 1, at most 4)
  --wait-quiet SECS  before each run, wait up to SECS for other processes to use < 0.1 core
  --metrics          run memcrab with --metrics-port (latency timing on) and scrape it every 1 s
  --no-charts        do not write the SVG charts (written to docs/bench/ on full runs without
                     --quick and --only)
  --charts           write them anyway (also with --quick or --only)
env: MEMCRAB_BIN (default target/release/memcrab), MEMCACHED_BIN (default /usr/bin/memcached)";

fn parse_args(args: &[String]) -> Res<Opts> {
    let mut opts = Opts {
        quick: false,
        rounds: 3,
        duration: Duration::from_secs(5),
        conns: 50,
        threads: 2,
        fill_threads: 4,
        mem_mb: 64,
        rate: 0,
        fill_divisor: 1,
        items_scale: 1.0,
        only: Vec::new(),
        wait_quiet: None,
        memcrab_bin: std::env::var_os("MEMCRAB_BIN")
            .map(PathBuf::from)
            .or_else(|| option_env!("CARGO_BIN_EXE_memcrab").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("target/release/memcrab")),
        memcached_bin: std::env::var_os("MEMCACHED_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/memcached")),
        metrics: false,
        charts: true,
        force_charts: false,
    };
    // First pass: --quick sets defaults that explicit flags then override.
    if args.iter().any(|a| a == "--quick") {
        opts.quick = true;
        opts.rounds = 1;
        opts.duration = Duration::from_secs(1);
        opts.fill_divisor = 4;
        opts.charts = false;
    }
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> Res<String> {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        let num = |name: &str, v: String| -> Res<usize> {
            v.parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{name}: not a positive integer: {v}"))
        };
        match arg.as_str() {
            // cargo bench passes --bench to harness = false targets.
            "--bench" | "--quick" => {}
            "--metrics" => opts.metrics = true,
            "--no-charts" => opts.charts = false,
            "--charts" => opts.force_charts = true,
            "--rounds" => opts.rounds = num(arg, value(arg)?)?,
            "--duration" => {
                let v = value(arg)?;
                let secs = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| *s > 0.0 && *s <= 600.0)
                    .ok_or_else(|| format!("--duration: want seconds in (0, 600]: {v}"))?;
                opts.duration = Duration::from_secs_f64(secs);
            }
            "--conns" => opts.conns = num(arg, value(arg)?)?.min(1000),
            "--threads" => opts.threads = num(arg, value(arg)?)?,
            "--fill-threads" => opts.fill_threads = num(arg, value(arg)?)?,
            "--mem" => opts.mem_mb = num(arg, value(arg)?)?,
            "--rate" => opts.rate = num(arg, value(arg)?)?.max(1) as u64,
            "--items-scale" => {
                let v = value(arg)?;
                opts.items_scale = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| *s > 0.0 && *s <= 4.0)
                    .ok_or_else(|| format!("--items-scale: want a factor in (0, 4]: {v}"))?;
            }
            "--wait-quiet" => {
                opts.wait_quiet = Some(Duration::from_secs(num(arg, value(arg)?)?.min(600) as u64))
            }
            "--only" => {
                opts.only = value(arg)?
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    Ok(opts)
}

// ---------------------------------------------------------------------------------------------
// Servers.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Memcrab,
    Memcached,
}

const TARGETS: [Target; 2] = [Target::Memcrab, Target::Memcached];

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Memcrab => "memcrab",
            Target::Memcached => "memcached",
        }
    }
    fn bin(self, opts: &Opts) -> &PathBuf {
        match self {
            Target::Memcrab => &opts.memcrab_bin,
            Target::Memcached => &opts.memcached_bin,
        }
    }
}

/// A server process started by this bench; killed (SIGKILL, by its PID) and reaped when
/// dropped, also when a run panics. SIGKILL rather than SIGTERM: memcached takes up to a
/// second to notice SIGTERM, which would only add wall time.
struct Server {
    child: Child,
    pid: u32,
    port: u16,
    target: Target,
    /// With `--metrics`: the scraper thread and its stop flag.
    scraper: Option<(
        Arc<std::sync::atomic::AtomicBool>,
        std::thread::JoinHandle<()>,
    )>,
}

impl Server {
    fn start(
        target: Target,
        opts: &Opts,
        mem_mb: usize,
        threads: usize,
        extra: &[&str],
    ) -> Res<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("finding a free port: {e}"))?
            .port();
        let mut cmd = Command::new(target.bin(opts));
        cmd.args(["-p", &port.to_string(), "-U", "0", "-l", "127.0.0.1"])
            .args(["-m", &mem_mb.to_string(), "-t", &threads.to_string()])
            .args(extra);
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
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting {}: {e}", target.bin(opts).display()))?;
        let mut server = Server {
            pid: child.id(),
            child,
            port,
            target,
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

    /// utime + stime of the server process, in seconds.
    fn cpu_seconds(&self) -> Res<f64> {
        process_cpu_seconds(&format!("/proc/{}/stat", self.pid))
    }

    /// utime of the server process alone (user space: parsing, the engine, the event
    /// loop), in seconds; the rest of its CPU is the kernel serving its system calls.
    fn user_cpu_seconds(&self) -> Res<f64> {
        Ok(process_cpu_split(&format!("/proc/{}/stat", self.pid))?.0)
    }

    /// Resident set size in MiB, from VmRSS in /proc/<pid>/status.
    fn rss_mib(&self) -> Res<f64> {
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

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// utime + stime, in seconds, from a `/proc/<pid>/stat` file (all threads of the process).
fn process_cpu_seconds(path: &str) -> Res<f64> {
    let (user, system) = process_cpu_split(path)?;
    Ok(user + system)
}

/// (utime, stime), in seconds, from a `/proc/<pid>/stat` file (all threads of the process).
fn process_cpu_split(path: &str) -> Res<(f64, f64)> {
    let stat = std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Res<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("unparsable {path}: {stat}"))
    };
    Ok((
        ticks(11)? as f64 / clock_ticks(),
        ticks(12)? as f64 / clock_ticks(),
    ))
}

/// CPU time all CPUs spent busy (not idle or iowait) since boot, in seconds, from /proc/stat.
fn machine_busy_seconds() -> Res<f64> {
    let stat = std::fs::read_to_string("/proc/stat").map_err(|e| format!("/proc/stat: {e}"))?;
    let line = stat.lines().next().unwrap_or("");
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    if line.split_whitespace().next() != Some("cpu") || f.len() < 8 {
        return Err(format!("unparsable /proc/stat line: {line}"));
    }
    // user nice system idle iowait irq softirq steal
    let busy = f[0] + f[1] + f[2] + f[5] + f[6] + f[7];
    Ok(busy as f64 / clock_ticks())
}

/// CPU used by the bench process, the server and everything else on the machine.
struct CpuSnapshot {
    at: Instant,
    machine: f64,
    bench: f64,
    server: f64,
}

impl CpuSnapshot {
    fn take(server: &Server) -> Res<CpuSnapshot> {
        Ok(CpuSnapshot {
            at: Instant::now(),
            machine: machine_busy_seconds()?,
            bench: process_cpu_seconds("/proc/self/stat")?,
            server: server.cpu_seconds()?,
        })
    }

    /// Cores' worth of CPU that processes other than this bench and its server used since
    /// `self`: another build or test run on the machine makes the figures unreliable.
    fn others_since(&self, later: &CpuSnapshot) -> f64 {
        let secs = later.at.duration_since(self.at).as_secs_f64().max(1e-3);
        let others = (later.machine - self.machine)
            - (later.bench - self.bench)
            - (later.server - self.server);
        // Round to 0.01 core: the tick-based counters leave noise below that.
        ((others / secs).max(0.0) * 100.0).round() / 100.0
    }
}

/// Waits, at most `max`, until processes other than this bench use under 0.1 core over a
/// half-second window (another build or test run sharing the machine distorts every figure).
fn wait_quiet(max: Duration) {
    let deadline = Instant::now() + max;
    let mut last = f64::NAN;
    while Instant::now() < deadline {
        let (Ok(m0), Ok(s0)) = (
            machine_busy_seconds(),
            process_cpu_seconds("/proc/self/stat"),
        ) else {
            return;
        };
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_millis(500));
        let (Ok(m1), Ok(s1)) = (
            machine_busy_seconds(),
            process_cpu_seconds("/proc/self/stat"),
        ) else {
            return;
        };
        last = ((m1 - m0) - (s1 - s0)) / t0.elapsed().as_secs_f64();
        if last < 0.1 {
            return;
        }
    }
    println!("    (machine still busy after waiting {max:?}: {last:.2} cores used by others)");
}

/// Above this many cores' worth of other processes' CPU during a run, the run is flagged.
const BUSY_OTHERS: f64 = 0.15;

// ---------------------------------------------------------------------------------------------
// Wire: a buffered connection with a small, strict reply reader.

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    key: Vec<u8>,
}

fn show(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(120)];
    format!("{:?}", String::from_utf8_lossy(cut))
}

impl Conn {
    async fn connect(port: u16) -> Res<Conn> {
        let stream = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(("127.0.0.1", port)))
            .await
            .map_err(|_| format!("connect to 127.0.0.1:{port} timed out"))?
            .map_err(|e| format!("connect to 127.0.0.1:{port}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(Conn {
            stream,
            buf: vec![0; 64 * 1024],
            start: 0,
            end: 0,
            key: Vec::with_capacity(256),
        })
    }

    async fn send(&mut self, data: &[u8]) -> Res<()> {
        tokio::time::timeout(IO_TIMEOUT, self.stream.write_all(data))
            .await
            .map_err(|_| format!("write blocked for {IO_TIMEOUT:?} (server not reading)"))?
            .map_err(|e| format!("write: {e}"))
    }

    /// Reads more bytes into the buffer; compacts or grows it first when needed.
    async fn fill(&mut self) -> Res<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && self.buf.len() - self.end < 16 * 1024 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < 16 * 1024 {
            let len = self.buf.len() * 2;
            self.buf.resize(len, 0);
        }
        let read = self.stream.read(&mut self.buf[self.end..]);
        let n = tokio::time::timeout(IO_TIMEOUT, read)
            .await
            .map_err(|_| {
                format!(
                    "no reply within {IO_TIMEOUT:?}; unparsed bytes so far: {}",
                    show(&self.buf[self.start..self.end])
                )
            })?
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!(
                "server closed the connection; unparsed bytes: {}",
                show(&self.buf[self.start..self.end])
            ));
        }
        self.end += n;
        Ok(())
    }

    /// The next reply line, without its `\r\n`, as a range of `buf` valid until the next read.
    async fn line(&mut self) -> Res<(usize, usize)> {
        let mut scanned = 0; // bytes after `start` known to hold no '\n'
        loop {
            let from = self.start + scanned;
            if let Some(i) = memchr::memchr(b'\n', &self.buf[from..self.end]) {
                let nl = from + i;
                if nl == self.start || self.buf[nl - 1] != b'\r' {
                    return Err(format!(
                        "reply line not ended by \\r\\n: {}",
                        show(&self.buf[self.start..=nl])
                    ));
                }
                let range = (self.start, nl - 1);
                self.start = nl + 1;
                return Ok(range);
            }
            scanned = self.end - self.start;
            if scanned > 1 << 20 {
                return Err("reply line longer than 1 MiB".into());
            }
            self.fill().await?;
        }
    }

    /// A data block of `n` bytes and its `\r\n`, as a range valid until the next read.
    async fn block(&mut self, n: usize) -> Res<(usize, usize)> {
        while self.end - self.start < n + 2 {
            self.fill().await?;
        }
        let (a, b) = (self.start, self.start + n);
        if &self.buf[b..b + 2] != b"\r\n" {
            return Err(format!(
                "data block of {n} bytes not followed by \\r\\n: {}",
                show(&self.buf[b..(b + 40).min(self.end)])
            ));
        }
        self.start = b + 2;
        Ok((a, b))
    }

    /// Reads one line and checks it is `want`.
    async fn expect(&mut self, want: &[u8]) -> Res<()> {
        let (a, b) = self.line().await?;
        if &self.buf[a..b] != want {
            return Err(format!(
                "expected {}, got {}",
                show(want),
                show(&self.buf[a..b])
            ));
        }
        Ok(())
    }

    /// Reads a `get` reply: `VALUE <key> <flags> <bytes> [<cas>]\r\n<data>\r\n` blocks, then
    /// `END\r\n`. Calls `each(key, data)` per block; returns how many blocks there were.
    async fn values(
        &mut self,
        max: usize,
        mut each: impl FnMut(&[u8], &[u8]) -> Res<()>,
    ) -> Res<usize> {
        let mut count = 0;
        while count <= max {
            let (a, b) = self.line().await?;
            let line = &self.buf[a..b];
            if line == b"END" {
                return Ok(count);
            }
            let parsed = line.strip_prefix(b"VALUE ").and_then(|rest| {
                let mut parts = rest.split(|&c| c == b' ');
                let key = parts.next()?;
                let _flags = std::str::from_utf8(parts.next()?)
                    .ok()?
                    .parse::<u32>()
                    .ok()?;
                let bytes = std::str::from_utf8(parts.next()?)
                    .ok()?
                    .parse::<usize>()
                    .ok()?;
                Some((key, bytes))
            });
            let Some((key, bytes)) = parsed else {
                return Err(format!("expected VALUE or END, got {}", show(line)));
            };
            self.key.clear();
            self.key.extend_from_slice(key);
            let (da, db) = self.block(bytes).await?;
            each(&self.key, &self.buf[da..db])?;
            count += 1;
        }
        Err(format!("more than {max} VALUE blocks in one get reply"))
    }

    /// `stats`: every `STAT name value` line up to `END`.
    async fn stats(&mut self) -> Res<Vec<(String, String)>> {
        self.send(b"stats\r\n").await?;
        let mut out = Vec::new();
        for _ in 0..1000 {
            let (a, b) = self.line().await?;
            let line = String::from_utf8_lossy(&self.buf[a..b]).into_owned();
            if line == "END" {
                return Ok(out);
            }
            let mut parts = line.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("STAT"), Some(name), Some(value)) => {
                    out.push((name.to_string(), value.to_string()))
                }
                _ => {
                    return Err(format!(
                        "unexpected line in stats reply: {}",
                        show(line.as_bytes())
                    ));
                }
            }
        }
        Err("stats reply longer than 1000 lines".into())
    }
}

fn stat_u64(stats: &[(String, String)], name: &str) -> Res<u64> {
    stats
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| format!("no numeric {name} in stats"))
}

fn push_set(req: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    req.extend_from_slice(b"set ");
    req.extend_from_slice(key);
    req.extend_from_slice(b" 0 0 ");
    req.extend_from_slice(itoa::Buffer::new().format(value.len()).as_bytes());
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(value);
    req.extend_from_slice(b"\r\n");
}

// ---------------------------------------------------------------------------------------------
// Workloads and their results.

#[derive(Clone, Debug)]
enum Kind {
    /// Write `items` distinct items of random key and value lengths (one connection, batches
    /// of [`FILL_BATCH`] sets, each reply read), then multi-get every written key back.
    Fill {
        items: usize,
        key_len: (usize, usize),
        value_len: (usize, usize),
    },
    /// Timed load from `--conns` connections over `keys` preloaded items: closed loop, or with
    /// `rate` > 0 paced to `rate` requests/s in all (the same offered load for both servers).
    Throughput {
        keys: u64,
        value_len: usize,
        mode: Mode,
        rate: u64,
        duration: Duration,
    },
    /// [`Kind::Fill`] with 20-40 B keys once per value size `(value_len, items)`, each size on
    /// a fresh server.
    FillSizes { sizes: Vec<(usize, usize)> },
    /// Cache-aside clients over `keys` keys drawn by zipf(`theta`): `get`, and on a miss `set`
    /// the key's value (length in `value_len`, derived from the key). `warmup` then `measured`
    /// gets in all, split evenly over the `--conns` connections.
    Zipf {
        keys: u64,
        theta: f64,
        value_len: (usize, usize),
        warmup: u64,
        measured: u64,
    },
    /// `conns` idle connections; the server's RSS before and after.
    Idle { conns: usize },
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    /// `get_pct`% get, the rest set, `depth` requests written at once then `depth` replies
    /// read (depth 1: one request in flight per connection).
    Mixed { get_pct: u64, depth: usize },
    /// One `get` naming `keys` random keys per request.
    Multiget { keys: usize },
}

#[derive(Clone, Debug)]
struct Workload {
    name: &'static str,
    mem_mb: usize,
    threads: usize,
    /// More server options, the same for both servers.
    extra: &'static [&'static str],
    kind: Kind,
}

impl Workload {
    fn describe(&self, opts: &Opts) -> String {
        let mut server = format!("-m {} -t {}", self.mem_mb, self.threads);
        for a in self.extra {
            server.push(' ');
            server.push_str(a);
        }
        match &self.kind {
            Kind::Fill {
                items,
                key_len,
                value_len,
            } => format!(
                "{server}; {items} sets of {}-{} B keys and {}-{} B random printable values \
                 (uniform lengths, fixed seed), 1 connection, batches of {FILL_BATCH} sets with \
                 replies; then get every key back in {FILL_BATCH}-key multigets",
                key_len.0, key_len.1, value_len.0, value_len.1
            ),
            Kind::FillSizes { sizes } => {
                let list: Vec<String> = sizes
                    .iter()
                    .map(|(v, n)| format!("{} x {n}", size_label(*v)))
                    .collect();
                format!(
                    "{server}; per value size, on a fresh server: sets of 20-40 B keys and \
                     values of that size (~3x what fits), 1 connection, batches of \
                     {FILL_BATCH} with replies, then every key read back; sizes x sets: {}",
                    list.join(", ")
                )
            }
            Kind::Zipf {
                keys,
                theta,
                value_len,
                warmup,
                measured,
            } => format!(
                "{server}; cache-aside over {keys} keys drawn by zipf({theta}) (fixed seed, one \
                 sequence per connection, the same for both servers): get, and on a miss set \
                 the key's {}-{} B value (length derived from the key); {} connections, one \
                 request in flight each; {warmup} gets of warm-up, then {measured} gets measured",
                value_len.0, value_len.1, opts.conns
            ),
            Kind::Idle { conns } => format!(
                "{server}; open {conns} connections and leave them idle; VmRSS before, with \
                 them open, and after one `version` on each"
            ),
            Kind::Throughput {
                keys,
                value_len,
                mode,
                rate,
                duration,
            } => {
                let what = match mode {
                    Mode::Mixed { get_pct, depth: 1 } => format!(
                        "{get_pct}% get / {}% set, one request in flight per connection",
                        100 - get_pct
                    ),
                    Mode::Mixed { get_pct, depth } => format!(
                        "{get_pct}% get / {}% set, pipelined: {depth} requests per write, then \
                         {depth} replies read",
                        100 - get_pct
                    ),
                    Mode::Multiget { keys } => {
                        format!("{keys}-key multiget, one request in flight per connection")
                    }
                };
                let paced = if *rate > 0 {
                    format!(
                        "; paced: {} requests/s offered in all (each connection on its own \
                         schedule), latency from the actual send",
                        fmt_num(*rate as f64)
                    )
                } else {
                    String::new()
                };
                format!(
                    "{server}; {keys} keys preloaded with {value_len} B values; {} connections \
                     on a 2-thread tokio client for {:.1} s; {what}{paced}",
                    opts.conns,
                    duration.as_secs_f64()
                )
            }
        }
    }
}

/// Value sizes of fill-sizes.
const FILL_SIZES: [usize; 6] = [10, 100, 1024, 10 * 1024, 100 * 1024, 512 * 1024];

/// The closed-loop throughput workloads, whose requests/s and CPU per request the targets
/// compare.
const THROUGHPUT_WORKLOADS: [&str; 5] = [
    "get-set",
    "get-set-pipe16",
    "multiget-10",
    "value-4k",
    "set-heavy",
];

fn size_label(v: usize) -> String {
    if v >= 1024 && v.is_multiple_of(1024) {
        format!("{} KiB", v / 1024)
    } else {
        format!("{v} B")
    }
}

fn workloads(opts: &Opts) -> Vec<Workload> {
    let fill_mem = (opts.mem_mb / opts.fill_divisor).max(1);
    let fill = |name, items: usize, key_len, value_len| Workload {
        name,
        mem_mb: fill_mem,
        threads: opts.fill_threads,
        extra: &[],
        kind: Kind::Fill {
            items: ((items as f64 * opts.items_scale) as usize / opts.fill_divisor).max(1),
            key_len,
            value_len,
        },
    };
    // The workloads added later run for half of --duration in the quick run, which keeps it
    // near 25 s.
    let short = if opts.quick { 0.5 } else { 1.0 };
    let load = |name, keys, value_len, mode, rate, scale: f64| Workload {
        name,
        mem_mb: opts.mem_mb,
        threads: opts.threads,
        extra: &[],
        kind: Kind::Throughput {
            keys,
            value_len,
            mode,
            rate,
            duration: opts.duration.mul_f64(scale),
        },
    };
    let mixed = |get_pct, depth| Mode::Mixed { get_pct, depth };
    // fill-sizes: ~3x what fits in -m, assuming ~80 B of key and overhead per item; the
    // quick run writes half of that (1.5x, still overflowing) at half the quick -m.
    let sizes_mem = if opts.quick { fill_mem / 2 } else { fill_mem }.max(2);
    let sizes = FILL_SIZES
        .iter()
        .map(|&v| {
            let fits = sizes_mem as f64 * 1048576.0 / (v + 80) as f64;
            let times = if opts.quick { 1.5 } else { 3.0 };
            (v, ((fits * times * opts.items_scale) as usize).max(8))
        })
        .collect();
    // zipf: ten times the keys that fit (~300 B values: ~220k items in 64 MiB); the quick run
    // at a quarter of the quick -m.
    let zipf_mem = if opts.quick { fill_mem / 4 } else { fill_mem }.max(2);
    let zipf_keys = 2_200_000 * zipf_mem as u64 / 64;
    let (warmup, measured) = if opts.quick {
        (zipf_keys / 4, zipf_keys / 4)
    } else {
        (
            1_000_000 * zipf_mem as u64 / 64,
            1_000_000 * zipf_mem as u64 / 64,
        )
    };
    vec![
        fill("fill-mixed", 800_000, (20, 40), (50, 300)),
        fill("fill-tiny", 3_000_000, (10, 10), (10, 10)),
        Workload {
            name: "fill-sizes",
            mem_mb: sizes_mem,
            threads: opts.fill_threads,
            extra: &["-I", "1m"],
            kind: Kind::FillSizes { sizes },
        },
        load("get-set", 100_000, 100, mixed(90, 1), 0, 1.0),
        load("get-set-pipe16", 100_000, 100, mixed(90, 16), 0, 1.0),
        load(
            "multiget-10",
            100_000,
            100,
            Mode::Multiget { keys: 10 },
            0,
            1.0,
        ),
        // 8,000 x 4 KiB = 32 MiB: fits in -m 64 on both.
        load(
            "value-4k",
            8_000 * opts.mem_mb as u64 / 64,
            4096,
            mixed(90, 1),
            0,
            short,
        ),
        load("set-heavy", 100_000, 100, mixed(10, 1), 0, short),
        load("get-set-rate", 100_000, 100, mixed(90, 1), opts.rate, short),
        Workload {
            name: "zipf-cache-aside",
            mem_mb: zipf_mem,
            threads: opts.threads,
            extra: &[],
            kind: Kind::Zipf {
                keys: zipf_keys,
                theta: 0.99,
                value_len: (200, 400),
                warmup,
                measured,
            },
        },
        Workload {
            name: "idle-5000",
            mem_mb: opts.mem_mb,
            threads: opts.threads,
            extra: &["-c", "6000"],
            kind: Kind::Idle {
                conns: if opts.quick { 1000 } else { 5000 },
            },
        },
    ]
}

/// Offered load of get-set-rate, requests/s in all, when neither `--rate` nor a get-set run
/// in the same invocation gives one: well under what either server does closed-loop on the
/// 2-core machine (50-140k, depending on the machine), so that both keep up.
const PACED_RATE: u64 = 25_000;

/// The offered load for get-set-rate: `--rate`, else half of the slower server's median
/// closed-loop get-set rate in this run (so that neither is saturated on any machine), in
/// thousands, else [`PACED_RATE`].
fn paced_rate(opts: &Opts, results: &Results) -> u64 {
    if opts.rate > 0 {
        return opts.rate;
    }
    match medians(results, "get-set", is_rate) {
        Some(m) => ((m[0].min(m[1]) / 2.0 / 1000.0).floor() as u64).max(1) * 1000,
        None => PACED_RATE,
    }
}

/// The offered load get-set-rate ran at, if it ran.
fn ran_rate(results: &Results) -> Option<u64> {
    results.iter().find_map(|(w, _)| match w.kind {
        Kind::Throughput { rate, .. } if w.name == "get-set-rate" => Some(rate),
        _ => None,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Better {
    Higher,
    Lower,
    Neither,
}

#[derive(Clone, Debug)]
struct Metric {
    name: String,
    value: f64,
    better: Better,
}

fn metric(name: impl Into<String>, value: f64, better: Better) -> Metric {
    Metric {
        name: name.into(),
        value,
        better,
    }
}

// ---------------------------------------------------------------------------------------------
// Fill.

/// Item `i` of a fill: its key (random characters, then `i` in 4 base-62 digits, so keys are
/// distinct) and value, both regenerated from `i` alone.
fn fill_item(
    i: usize,
    key_len: (usize, usize),
    value_len: (usize, usize),
    out: &mut Vec<u8>,
) -> usize {
    let mut rng = Rng::new(SEED ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let klen = rng.range(key_len.0, key_len.1);
    rng.push_chars(out, klen - 4, KEY_CHARS);
    let mut n = i;
    for _ in 0..4 {
        out.push(KEY_CHARS[n % 62]);
        n /= 62;
    }
    let vlen = rng.range(value_len.0, value_len.1);
    rng.push_chars(out, vlen, VALUE_CHARS);
    klen
}

async fn run_fill(
    server: &Server,
    items: usize,
    key_len: (usize, usize),
    value_len: (usize, usize),
) -> Res<Vec<Metric>> {
    assert!(
        items <= 62usize.pow(4) && key_len.0 >= 5,
        "fill keys need 4 index digits"
    );
    let mut conn = Conn::connect(server.port).await?;
    let mut req = Vec::with_capacity(FILL_BATCH * 400);
    let mut item = Vec::with_capacity(400);
    let mut stored = 0u64;
    let mut set_errors = 0u64;
    let mut first_error = None;

    let t0 = Instant::now();
    let mut i = 0;
    while i < items {
        let n = FILL_BATCH.min(items - i);
        req.clear();
        for j in i..i + n {
            item.clear();
            let klen = fill_item(j, key_len, value_len, &mut item);
            push_set(&mut req, &item[..klen], &item[klen..]);
        }
        conn.send(&req).await?;
        for _ in 0..n {
            let (a, b) = conn.line().await?;
            let line = &conn.buf[a..b];
            if line == b"STORED" {
                stored += 1;
            } else if line.starts_with(b"SERVER_ERROR") {
                set_errors += 1;
                first_error.get_or_insert_with(|| show(line));
            } else {
                return Err(format!(
                    "set of item {i}..: unexpected reply {}",
                    show(line)
                ));
            }
        }
        i += n;
    }
    let fill_secs = t0.elapsed().as_secs_f64();

    // Read every key back; check each returned value is the one written.
    let mut expected: Vec<(usize, usize, usize)> = Vec::with_capacity(FILL_BATCH); // (start, klen, end)
    let mut items_buf = Vec::with_capacity(FILL_BATCH * 400);
    let mut retained = 0u64;
    let mut corrupt = 0u64;
    let mut i = 0;
    while i < items {
        let n = FILL_BATCH.min(items - i);
        req.clear();
        req.extend_from_slice(b"get");
        items_buf.clear();
        expected.clear();
        for j in i..i + n {
            let start = items_buf.len();
            let klen = fill_item(j, key_len, value_len, &mut items_buf);
            expected.push((start, klen, items_buf.len()));
            req.push(b' ');
            req.extend_from_slice(&items_buf[start..start + klen]);
        }
        req.extend_from_slice(b"\r\n");
        conn.send(&req).await?;
        let mut next = 0; // replies come in request order, misses left out
        let hits = conn
            .values(n, |key, data| {
                while next < expected.len() {
                    let (s, k, e) = expected[next];
                    next += 1;
                    if &items_buf[s..s + k] == key {
                        if &items_buf[s + k..e] != data {
                            corrupt += 1;
                        }
                        return Ok(());
                    }
                }
                Err(format!(
                    "get reply has key {} which was not asked for (or is out of order)",
                    show(key)
                ))
            })
            .await?;
        retained += hits as u64;
        i += n;
    }
    let stats = conn.stats().await?;
    let curr_items = stat_u64(&stats, "curr_items")?;
    let evictions = stat_u64(&stats, "evictions")?;
    let rss = server.rss_mib()?;
    if corrupt > 0 {
        eprintln!("  !! {corrupt} values read back differ from what was written");
    }
    if let Some(e) = first_error {
        eprintln!("  !! {set_errors} sets failed; first reply: {e}");
    }
    Ok(vec![
        metric("items retained", retained as f64, Better::Higher),
        metric("curr_items (stats)", curr_items as f64, Better::Higher),
        metric("evictions (stats)", evictions as f64, Better::Neither),
        metric("RSS after fill (MiB)", rss, Better::Lower),
        metric(
            "RSS bytes per retained item",
            if retained > 0 {
                rss * 1048576.0 / retained as f64
            } else {
                f64::NAN
            },
            Better::Lower,
        ),
        metric("sets STORED", stored as f64, Better::Neither),
        metric(
            "sets failed (SERVER_ERROR)",
            set_errors as f64,
            Better::Neither,
        ),
        metric("values read back corrupt", corrupt as f64, Better::Lower),
        metric(
            "fill rate (sets/s, 1 conn)",
            items as f64 / fill_secs,
            Better::Higher,
        ),
    ])
}

// ---------------------------------------------------------------------------------------------
// Throughput.

fn load_key(out: &mut Vec<u8>, i: u64) {
    out.extend_from_slice(b"key:");
    out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
}

/// Random printable bytes; values are slices of it at random offsets.
fn value_pool() -> Vec<u8> {
    let mut pool = Vec::with_capacity(1 << 20);
    Rng::new(SEED ^ 0x706f_6f6c).push_chars(&mut pool, 1 << 20, VALUE_CHARS);
    pool
}

fn pick_value<'a>(rng: &mut Rng, pool: &'a [u8], len: usize) -> &'a [u8] {
    let off = rng.below((pool.len() - len) as u64) as usize;
    &pool[off..off + len]
}

async fn preload(port: u16, keys: u64, value_len: usize, pool: &[u8]) -> Res<()> {
    let mut conn = Conn::connect(port).await?;
    let mut rng = Rng::new(SEED ^ 0x7072_656c);
    let mut req = Vec::new();
    let mut key = Vec::new();
    let mut i = 0;
    while i < keys {
        let n = (FILL_BATCH as u64).min(keys - i);
        req.clear();
        for k in i..i + n {
            key.clear();
            load_key(&mut key, k);
            push_set(&mut req, &key, pick_value(&mut rng, pool, value_len));
        }
        conn.send(&req).await?;
        for _ in 0..n {
            conn.expect(b"STORED")
                .await
                .map_err(|e| format!("preload: {e}"))?;
        }
        i += n;
    }
    Ok(())
}

#[derive(Default)]
struct ClientStats {
    /// Requests completed (for multiget: multigets).
    requests: u64,
    /// Nanoseconds per request (depth 1) or per batch (pipelined).
    latencies: Vec<u64>,
    /// Keys asked for and not returned: every key is preloaded, so this should stay 0.
    misses: u64,
}

struct ClientParams {
    keys: u64,
    value_len: usize,
    mode: Mode,
    deadline: Instant,
    pool: Arc<Vec<u8>>,
}

/// `pace`, for paced runs: time between two requests of this connection, and when its first
/// is due.
async fn client(
    mut conn: Conn,
    id: usize,
    p: Arc<ClientParams>,
    pace: Option<(Duration, Instant)>,
) -> Res<ClientStats> {
    let mut rng = Rng::new(SEED ^ 0xc11e_0000 ^ id as u64);
    let mut st = ClientStats {
        latencies: Vec::with_capacity(1 << 16),
        ..Default::default()
    };
    let mut req = Vec::with_capacity(16 * 256);
    let mut want = Vec::with_capacity(16); // (is_get, key start, key end) into `keys`
    let mut keys = Vec::with_capacity(16 * 16);
    let value_len = p.value_len;
    let mut due = pace.map(|(_, first)| first);
    while Instant::now() < p.deadline && st.requests < MAX_OPS_PER_CONN {
        if let (Some(at), Some((every, _))) = (due.as_mut(), pace) {
            // Open loop per connection: the next request is due on a fixed schedule, not
            // when the previous reply came (a late one is sent at once, catching up).
            if *at >= p.deadline {
                break;
            }
            tokio::time::sleep_until((*at).into()).await;
            *at += every;
        }
        req.clear();
        want.clear();
        keys.clear();
        match p.mode {
            Mode::Mixed { get_pct, depth } => {
                for _ in 0..depth {
                    let k = rng.below(p.keys);
                    let ks = keys.len();
                    load_key(&mut keys, k);
                    let is_get = rng.below(100) < get_pct;
                    if is_get {
                        req.extend_from_slice(b"get ");
                        req.extend_from_slice(&keys[ks..]);
                        req.extend_from_slice(b"\r\n");
                    } else {
                        let value = pick_value(&mut rng, &p.pool, value_len);
                        push_set(&mut req, &keys[ks..], value);
                    }
                    want.push((is_get, ks, keys.len()));
                }
            }
            Mode::Multiget { keys: n } => {
                req.extend_from_slice(b"get");
                for _ in 0..n {
                    let ks = keys.len();
                    load_key(&mut keys, rng.below(p.keys));
                    req.push(b' ');
                    req.extend_from_slice(&keys[ks..]);
                }
                req.extend_from_slice(b"\r\n");
            }
        }
        let t0 = Instant::now();
        conn.send(&req).await?;
        match p.mode {
            Mode::Mixed { .. } => {
                for &(is_get, ks, ke) in &want {
                    if is_get {
                        let asked = &keys[ks..ke];
                        let hits = conn
                            .values(1, |key, data| {
                                if key != asked || data.len() != value_len {
                                    return Err(format!(
                                        "get {}: got VALUE {} with {} bytes",
                                        show(asked),
                                        show(key),
                                        data.len()
                                    ));
                                }
                                Ok(())
                            })
                            .await?;
                        st.misses += 1 - hits as u64;
                    } else {
                        conn.expect(b"STORED").await?;
                    }
                }
                st.requests += want.len() as u64;
            }
            Mode::Multiget { keys: n } => {
                let hits = conn
                    .values(n, |key, data| {
                        if data.len() != value_len {
                            return Err(format!(
                                "multiget: VALUE {} with {} bytes, want {value_len}",
                                show(key),
                                data.len()
                            ));
                        }
                        Ok(())
                    })
                    .await?;
                st.misses += (n - hits) as u64;
                st.requests += 1;
            }
        }
        st.latencies.push(t0.elapsed().as_nanos() as u64);
    }
    Ok(st)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p * sorted.len() as f64) as usize).min(sorted.len() - 1);
    sorted[i] as f64
}

#[derive(Clone, Copy, Debug)]
struct ThroughputRun {
    keys: u64,
    value_len: usize,
    mode: Mode,
    rate: u64,
    duration: Duration,
}

async fn run_throughput(server: &Server, opts: &Opts, run: ThroughputRun) -> Res<Vec<Metric>> {
    let ThroughputRun {
        keys,
        value_len,
        mode,
        rate,
        duration,
    } = run;
    let pool = Arc::new(value_pool());
    preload(server.port, keys, value_len, &pool).await?;
    let mut conns = Vec::with_capacity(opts.conns);
    for _ in 0..opts.conns {
        conns.push(Conn::connect(server.port).await?);
    }
    let cpu0 = server.cpu_seconds()?;
    let user0 = server.user_cpu_seconds()?;
    let t0 = Instant::now();
    let params = Arc::new(ClientParams {
        keys,
        value_len,
        mode,
        deadline: t0 + duration,
        pool,
    });
    let every = (rate > 0).then(|| Duration::from_secs_f64(opts.conns as f64 / rate as f64));
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(id, conn)| {
            // Paced: the connections' schedules staggered evenly over one interval.
            let pace =
                every.map(|every| (every, t0 + every.mul_f64(id as f64 / opts.conns as f64)));
            tokio::spawn(client(conn, id, params.clone(), pace))
        })
        .collect();
    let mut total = ClientStats::default();
    let mut first_error = None;
    for (id, task) in tasks.into_iter().enumerate() {
        match task.await {
            Ok(Ok(st)) => {
                total.requests += st.requests;
                total.misses += st.misses;
                total.latencies.extend_from_slice(&st.latencies);
            }
            Ok(Err(e)) => {
                first_error.get_or_insert(format!("connection {id}: {e}"));
            }
            Err(e) => {
                first_error.get_or_insert(format!("connection {id}: client task failed: {e}"));
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds()? - cpu0;
    let user = server.user_cpu_seconds()? - user0;
    if let Some(e) = first_error {
        return Err(e);
    }
    total.latencies.sort_unstable();
    let lat = &total.latencies;
    let (rate_name, per, cpu_name) = match mode {
        Mode::Mixed { depth: 1, .. } if rate > 0 => (
            format!("requests/s (offered {})", fmt_num(rate as f64)),
            "per request".to_string(),
            "server CPU per request (us)".to_string(),
        ),
        Mode::Mixed { depth: 1, .. } => (
            "requests/s".to_string(),
            "per request".to_string(),
            "server CPU per request (us)".to_string(),
        ),
        Mode::Mixed { depth, .. } => (
            "requests/s".to_string(),
            format!("per batch of {depth}"),
            "server CPU per request (us)".to_string(),
        ),
        Mode::Multiget { keys } => (
            format!("multigets/s ({keys} keys each)"),
            "per multiget".to_string(),
            "server CPU per multiget (us)".to_string(),
        ),
    };
    let us = |ns: f64| ns / 1000.0;
    Ok(vec![
        metric(rate_name, total.requests as f64 / secs, Better::Higher),
        metric(
            format!("p50 latency {per} (us)"),
            us(percentile(lat, 0.50)),
            Better::Lower,
        ),
        metric(
            format!("p99 latency {per} (us)"),
            us(percentile(lat, 0.99)),
            Better::Lower,
        ),
        metric(
            format!("p99.9 latency {per} (us)"),
            us(percentile(lat, 0.999)),
            Better::Lower,
        ),
        metric(
            cpu_name,
            if total.requests > 0 {
                cpu * 1e6 / total.requests as f64
            } else {
                f64::NAN
            },
            Better::Lower,
        ),
        metric(
            "  of it in user space (us)",
            if total.requests > 0 {
                user * 1e6 / total.requests as f64
            } else {
                f64::NAN
            },
            Better::Lower,
        ),
        metric("server CPU (cores busy)", cpu / secs, Better::Neither),
        metric("get misses (want 0)", total.misses as f64, Better::Lower),
    ])
}

// ---------------------------------------------------------------------------------------------
// Fill per value size.

fn run_fill_sizes(
    rt: &tokio::runtime::Runtime,
    opts: &Opts,
    wl: &Workload,
    target: Target,
    sizes: &[(usize, usize)],
) -> Res<Vec<Metric>> {
    let mut out = Vec::new();
    let mut others: f64 = 0.0;
    for &(vlen, items) in sizes {
        let label = size_label(vlen);
        let mut server = Server::start(target, opts, wl.mem_mb, wl.threads, wl.extra)?;
        let before = CpuSnapshot::take(&server)?;
        let result = rt.block_on(run_fill(&server, items, (20, 40), (vlen, vlen)));
        if let Ok(after) = CpuSnapshot::take(&server) {
            others = others.max(before.others_since(&after));
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(format!(
                "{label} values: server exited during the run: {status}"
            ));
        }
        drop(server);
        let m = result.map_err(|e| format!("{label} values: {e}"))?;
        let get = |name: &str| {
            m.iter()
                .find(|x| x.name == name)
                .map(|x| x.value)
                .unwrap_or(f64::NAN)
        };
        out.push(metric(
            format!("items retained, {label}"),
            get("items retained"),
            Better::Higher,
        ));
        out.push(metric(
            format!("RSS after fill (MiB), {label}"),
            get("RSS after fill (MiB)"),
            Better::Lower,
        ));
        out.push(metric(
            format!("sets failed, {label}"),
            get("sets failed (SERVER_ERROR)"),
            Better::Neither,
        ));
        out.push(metric(
            format!("values corrupt, {label}"),
            get("values read back corrupt"),
            Better::Lower,
        ));
    }
    // Ordered: every size's retained items first, then RSS, then the error counts.
    out.sort_by_key(|x| {
        ["items", "RSS", "sets", "values"]
            .iter()
            .position(|p| x.name.starts_with(p))
    });
    out.push(metric(
        "other processes' CPU (cores, max)",
        others,
        Better::Neither,
    ));
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Zipf cache-aside.

/// Zipf(theta) over ranks `0..n` (rank 0 the most popular): the exact CDF, sampled by binary
/// search (~21 steps for 2.2M keys).
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: u64, theta: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n as usize);
        let mut sum = 0.0;
        for i in 0..n {
            sum += ((i + 1) as f64).powf(-theta);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Zipf { cdf }
    }

    fn sample(&self, rng: &mut Rng) -> u64 {
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1) as u64
    }
}

/// Key of zipf rank `r`: 21 B, `zipf:` and 16 hex digits of a bijective hash of the rank.
fn zipf_key(out: &mut Vec<u8>, r: u64) {
    let _ = write!(ByteWriter(out), "zipf:{:016x}", mix64(r ^ SEED));
}

/// The value of zipf rank `r`: a slice of the pool whose length and offset derive from `r`.
fn zipf_value(pool: &[u8], r: u64, len: (usize, usize)) -> &[u8] {
    let h = mix64(r.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x7661_6c75_6573);
    let n = len.0 + (h % (len.1 - len.0 + 1) as u64) as usize;
    let off = ((h >> 24) % (pool.len() - n) as u64) as usize;
    &pool[off..off + n]
}

struct ByteWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[derive(Clone, Copy, Debug)]
struct ZipfRun {
    keys: u64,
    theta: f64,
    value_len: (usize, usize),
    warmup: u64,
    measured: u64,
}

#[derive(Default, Clone, Copy)]
struct ZipfStats {
    gets: u64,
    hits: u64,
    sets: u64,
    /// Hits whose value is not the key's value (want 0).
    wrong: u64,
}

struct ZipfShared {
    zipf: Zipf,
    run: ZipfRun,
    pool: Vec<u8>,
    /// Every client and the driver meet here between warm-up and the measured phase.
    barrier: tokio::sync::Barrier,
}

async fn zipf_phase(
    conn: &mut Conn,
    rng: &mut Rng,
    sh: &ZipfShared,
    gets: u64,
    st: &mut ZipfStats,
) -> Res<()> {
    let mut req = Vec::with_capacity(512);
    let mut key = Vec::with_capacity(32);
    for _ in 0..gets {
        let r = sh.zipf.sample(rng);
        key.clear();
        zipf_key(&mut key, r);
        let value = zipf_value(&sh.pool, r, sh.run.value_len);
        req.clear();
        req.extend_from_slice(b"get ");
        req.extend_from_slice(&key);
        req.extend_from_slice(b"\r\n");
        conn.send(&req).await?;
        let mut wrong = 0;
        let hits = conn
            .values(1, |k, data| {
                if k != key.as_slice() {
                    return Err(format!("get {}: got VALUE {}", show(&key), show(k)));
                }
                if data != value {
                    wrong += 1;
                }
                Ok(())
            })
            .await?;
        st.gets += 1;
        st.hits += hits as u64;
        st.wrong += wrong;
        if hits == 0 {
            req.clear();
            push_set(&mut req, &key, value);
            conn.send(&req).await?;
            conn.expect(b"STORED")
                .await
                .map_err(|e| format!("set after miss: {e}"))?;
            st.sets += 1;
        }
    }
    Ok(())
}

async fn zipf_client(
    mut conn: Conn,
    id: usize,
    conns: u64,
    sh: Arc<ZipfShared>,
) -> Res<(ZipfStats, ZipfStats)> {
    let mut rng = Rng::new(SEED ^ 0x7a69_7066_0000_0000 ^ id as u64);
    let share = |total: u64| total / conns + u64::from((id as u64) < total % conns);
    let mut warm = ZipfStats::default();
    let warmed = zipf_phase(&mut conn, &mut rng, &sh, share(sh.run.warmup), &mut warm).await;
    // Meet the others even after a failure, so that nobody waits forever.
    sh.barrier.wait().await;
    warmed.map_err(|e| format!("warm-up: {e}"))?;
    let mut st = ZipfStats::default();
    zipf_phase(&mut conn, &mut rng, &sh, share(sh.run.measured), &mut st).await?;
    Ok((warm, st))
}

async fn run_zipf(server: &Server, opts: &Opts, run: ZipfRun) -> Res<Vec<Metric>> {
    let sh = Arc::new(ZipfShared {
        zipf: Zipf::new(run.keys, run.theta),
        run,
        pool: value_pool(),
        barrier: tokio::sync::Barrier::new(opts.conns + 1),
    });
    let mut conns = Vec::with_capacity(opts.conns);
    for _ in 0..opts.conns {
        conns.push(Conn::connect(server.port).await?);
    }
    let mut ctl = Conn::connect(server.port).await?;
    let t_warm = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(id, conn)| tokio::spawn(zipf_client(conn, id, opts.conns as u64, sh.clone())))
        .collect();
    sh.barrier.wait().await;
    let warm_secs = t_warm.elapsed().as_secs_f64();
    let cpu0 = server.cpu_seconds()?;
    let t0 = Instant::now();
    let mut warm = ZipfStats::default();
    let mut st = ZipfStats::default();
    let mut first_error = None;
    for (id, task) in tasks.into_iter().enumerate() {
        match task.await {
            Ok(Ok((w, m))) => {
                for (acc, x) in [(&mut warm, w), (&mut st, m)] {
                    acc.gets += x.gets;
                    acc.hits += x.hits;
                    acc.sets += x.sets;
                    acc.wrong += x.wrong;
                }
            }
            Ok(Err(e)) => {
                first_error.get_or_insert(format!("connection {id}: {e}"));
            }
            Err(e) => {
                first_error.get_or_insert(format!("connection {id}: client task failed: {e}"));
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds()? - cpu0;
    if let Some(e) = first_error {
        return Err(e);
    }
    let stats = ctl.stats().await?;
    let pct = |s: &ZipfStats| 100.0 * s.hits as f64 / s.gets.max(1) as f64;
    if st.wrong + warm.wrong > 0 {
        eprintln!(
            "  !! {} hits returned a value other than the key's",
            st.wrong + warm.wrong
        );
    }
    Ok(vec![
        metric("hit ratio, measured (%)", pct(&st), Better::Higher),
        metric("hit ratio, warm-up (%)", pct(&warm), Better::Higher),
        metric("gets measured", st.gets as f64, Better::Neither),
        metric("sets after a miss, measured", st.sets as f64, Better::Lower),
        metric(
            "hits with a wrong value (want 0)",
            (st.wrong + warm.wrong) as f64,
            Better::Lower,
        ),
        metric("gets/s, measured", st.gets as f64 / secs, Better::Higher),
        metric(
            "gets/s, warm-up",
            warm.gets as f64 / warm_secs,
            Better::Higher,
        ),
        metric(
            "server CPU per get, measured (us)",
            cpu * 1e6 / st.gets.max(1) as f64,
            Better::Lower,
        ),
        metric(
            "curr_items at the end",
            stat_u64(&stats, "curr_items")? as f64,
            Better::Higher,
        ),
        metric(
            "evictions (stats)",
            stat_u64(&stats, "evictions")? as f64,
            Better::Neither,
        ),
        metric("RSS at the end (MiB)", server.rss_mib()?, Better::Lower),
    ])
}

// ---------------------------------------------------------------------------------------------
// Idle connections.

async fn run_idle(server: &Server, n: usize) -> Res<Vec<Metric>> {
    let mut ctl = Conn::connect(server.port).await?;
    let curr = |stats: &[(String, String)]| stat_u64(stats, "curr_connections");
    // Not a count taken now: the connection that probed the server at startup may still be
    // counted (memcached, sometimes) and go away while these are opened.
    let base = 1; // this control connection
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rss0 = server.rss_mib()?;
    let t0 = Instant::now();
    let mut socks = Vec::with_capacity(n);
    for i in 0..n {
        let s = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(("127.0.0.1", server.port)))
            .await
            .map_err(|_| format!("connection {i} of {n}: connect timed out"))?
            .map_err(|e| format!("connection {i} of {n}: connect: {e}"))?;
        socks.push(s);
    }
    // Wait until the server has accepted them all (connect returns once the kernel has).
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let now = curr(&ctl.stats().await?)?;
        if now >= base + n as u64 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "curr_connections {now} after {IO_TIMEOUT:?}, want {} ({base} + {n})",
                base + n as u64
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open_ms = t0.elapsed().as_secs_f64() * 1e3;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss1 = server.rss_mib()?;
    // One request on each, then idle again.
    let mut buf = [0u8; 256];
    for (i, s) in socks.iter_mut().enumerate() {
        tokio::time::timeout(IO_TIMEOUT, s.write_all(b"version\r\n"))
            .await
            .map_err(|_| format!("connection {i}: write timed out"))?
            .map_err(|e| format!("connection {i}: write: {e}"))?;
        let mut got = 0;
        while !buf[..got].ends_with(b"\r\n") {
            if got == buf.len() {
                return Err(format!("connection {i}: version reply too long"));
            }
            let k = tokio::time::timeout(IO_TIMEOUT, s.read(&mut buf[got..]))
                .await
                .map_err(|_| format!("connection {i}: no version reply"))?
                .map_err(|e| format!("connection {i}: read: {e}"))?;
            if k == 0 {
                return Err(format!("connection {i}: closed by the server"));
            }
            got += k;
        }
        if !buf.starts_with(b"VERSION ") {
            return Err(format!(
                "connection {i}: version reply {}",
                show(&buf[..got])
            ));
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss2 = server.rss_mib()?;
    let still = curr(&ctl.stats().await?)?;
    drop(socks);
    let per = |a: f64, b: f64| (b - a) * 1024.0 / n as f64;
    Ok(vec![
        metric("RSS before (MiB)", rss0, Better::Lower),
        metric(
            format!("RSS with {n} idle conns (MiB)"),
            rss1,
            Better::Lower,
        ),
        metric("RSS per idle conn (KiB)", per(rss0, rss1), Better::Lower),
        metric("RSS after a request on each (MiB)", rss2, Better::Lower),
        metric(
            "RSS per used-then-idle conn (KiB)",
            per(rss0, rss2),
            Better::Lower,
        ),
        metric("curr_connections (stats)", still as f64, Better::Neither),
        metric("time to open and accept all (ms)", open_ms, Better::Lower),
    ])
}

/// Raises this process's soft RLIMIT_NOFILE (the servers inherit it) so that idle-5000 fits.
fn raise_fd_limit(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur >= want {
            return;
        }
        lim.rlim_cur = want.min(lim.rlim_max);
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            eprintln!("note: could not raise RLIMIT_NOFILE to {}", lim.rlim_cur);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Targets and charts, from the medians of a run.

/// Where full runs write their SVG charts, relative to the package root.
const CHART_DIR: &str = "docs/bench";

type Results = [(Workload, Runs)];

/// Per server, the median over the rounds of the first metric of workload `wl` whose name
/// `is`; `None` if the workload did not run, a round failed or there is no such metric.
fn medians(results: &Results, wl: &str, is: impl Fn(&str) -> bool) -> Option<[f64; 2]> {
    let (_, runs) = results.iter().find(|(w, _)| w.name == wl)?;
    let mut out = [f64::NAN; 2];
    for (t, slot) in out.iter_mut().enumerate() {
        let mut vals = Vec::new();
        for r in &runs[t] {
            let m = r.as_ref().ok()?;
            vals.push(m.iter().find(|x| is(&x.name))?.value);
        }
        *slot = median(vals);
    }
    out.iter().all(|v| v.is_finite()).then_some(out)
}

fn is_rate(name: &str) -> bool {
    name.starts_with("requests/s") || name.starts_with("multigets/s")
}

fn geomean(v: &[f64]) -> f64 {
    (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp()
}

/// Prints the targets with met / missed and the measured value.
fn print_targets(results: &Results, rate: u64) {
    let mut rows: Vec<(String, String, Option<bool>)> = Vec::new();
    let ratio = |m: [f64; 2]| m[0] / m[1];
    let per_wl = |is: &dyn Fn(&str) -> bool| -> Vec<(&str, f64)> {
        THROUGHPUT_WORKLOADS
            .iter()
            .filter_map(|w| medians(results, w, is).map(|m| (*w, ratio(m))))
            .collect()
    };
    let list = |v: &[(&str, f64)]| {
        v.iter()
            .map(|(w, r)| format!("{w} {r:.2}x"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rates = per_wl(&is_rate);
    let all = rates.len() == THROUGHPUT_WORKLOADS.len();
    if !rates.is_empty() {
        let g = geomean(&rates.iter().map(|x| x.1).collect::<Vec<_>>());
        rows.push((
            format!(
                "requests/s, geometric mean over {} ≥ 1.25x",
                THROUGHPUT_WORKLOADS.join(", ")
            ),
            format!("{g:.3}x ({})", list(&rates)),
            all.then_some(g >= 1.25),
        ));
        let (w, lo) = rates
            .iter()
            .copied()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("not empty");
        rows.push((
            "requests/s, no throughput workload below 1.0x".into(),
            format!("lowest {lo:.3}x ({w})"),
            all.then_some(lo >= 1.0),
        ));
    }
    if let Some(m) = medians(results, "get-set-pipe16", is_rate) {
        rows.push((
            "requests/s, pipelined get-set-pipe16 ≥ 2x".into(),
            format!("{:.3}x", ratio(m)),
            Some(ratio(m) >= 2.0),
        ));
    }
    let cpu = per_wl(&|n: &str| n.starts_with("server CPU per"));
    if !cpu.is_empty() {
        let g = geomean(&cpu.iter().map(|x| x.1).collect::<Vec<_>>());
        let (w, hi) = cpu
            .iter()
            .copied()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .expect("not empty");
        rows.push((
            "server CPU per request ≤ 0.8x (every throughput workload)".into(),
            format!(
                "geometric mean {g:.3}x; highest {hi:.3}x ({w}); {}",
                list(&cpu)
            ),
            all.then_some(hi <= 0.8),
        ));
    }
    if let Some(m) = medians(results, "get-set-rate", |n| n.starts_with("p99 latency")) {
        rows.push((
            format!(
                "p99 latency at the same offered load ({} req/s, get-set-rate) ≤ 1.0x",
                fmt_num(rate as f64)
            ),
            format!(
                "{:.3}x ({} against {} us)",
                ratio(m),
                fmt_num(m[0]),
                fmt_num(m[1])
            ),
            Some(m[0] <= m[1]),
        ));
    }
    let fill = |wl: &str, want: f64, rows: &mut Vec<(String, String, Option<bool>)>| {
        let items = medians(results, wl, |n| n == "items retained");
        let rss = medians(results, wl, |n| n == "RSS after fill (MiB)");
        if let (Some(i), Some(r)) = (items, rss) {
            rows.push((
                format!("{wl}: items retained ≥ {want}x with RSS ≤ memcached's"),
                format!(
                    "{:.3}x items ({} against {}), RSS {:.3}x ({:.1} against {:.1} MiB)",
                    ratio(i),
                    fmt_num(i[0]),
                    fmt_num(i[1]),
                    ratio(r),
                    r[0],
                    r[1]
                ),
                Some(ratio(i) >= want && r[0] <= r[1]),
            ));
        }
    };
    fill("fill-mixed", 1.25, &mut rows);
    fill("fill-tiny", 2.0, &mut rows);
    let sizes: Vec<(usize, [f64; 2], Option<[f64; 2]>)> = FILL_SIZES
        .iter()
        .filter_map(|&v| {
            let label = size_label(v);
            let items = medians(results, "fill-sizes", |n| {
                n == format!("items retained, {label}")
            })?;
            let rss = medians(results, "fill-sizes", |n| {
                n == format!("RSS after fill (MiB), {label}")
            });
            Some((v, items, rss))
        })
        .collect();
    if sizes.len() == FILL_SIZES.len() {
        let fewer: Vec<String> = sizes
            .iter()
            .filter(|(_, i, _)| i[0] < i[1])
            .map(|(v, i, _)| format!("{} {:.3}x", size_label(*v), ratio(*i)))
            .collect();
        let higher_rss: Vec<String> = sizes
            .iter()
            .filter_map(|(v, _, r)| {
                let r = (*r)?;
                (r[0] > r[1]).then(|| format!("{} {:.3}x", size_label(*v), ratio(r)))
            })
            .collect();
        let all: Vec<String> = sizes
            .iter()
            .map(|(v, i, _)| format!("{} {:.3}x", size_label(*v), ratio(*i)))
            .collect();
        rows.push((
            "fill-sizes: never fewer items than memcached, 10 B..512 KiB, RSS no higher".into(),
            format!(
                "{}; fewer at: {}; RSS higher at: {}",
                all.join(", "),
                if fewer.is_empty() {
                    "none".into()
                } else {
                    fewer.join(", ")
                },
                if higher_rss.is_empty() {
                    "none".into()
                } else {
                    higher_rss.join(", ")
                }
            ),
            Some(fewer.is_empty() && higher_rss.is_empty()),
        ));
    }
    let idle_conns = results
        .iter()
        .find_map(|(w, _)| match w.kind {
            Kind::Idle { conns } => Some(conns),
            _ => None,
        })
        .unwrap_or(0);
    if let Some(m) = medians(results, "idle-5000", |n| n.starts_with("RSS with")) {
        let per = medians(results, "idle-5000", |n| n == "RSS per idle conn (KiB)");
        rows.push((
            format!(
                "RSS with {} idle connections ≤ memcached's",
                fmt_num(idle_conns as f64)
            ),
            format!(
                "{:.3}x ({:.1} against {:.1} MiB{})",
                ratio(m),
                m[0],
                m[1],
                per.map(|p| format!("; {:.2} against {:.2} KiB per connection", p[0], p[1]))
                    .unwrap_or_default()
            ),
            Some(m[0] <= m[1]),
        ));
    }
    if let Some(m) = medians(results, "zipf-cache-aside", |n| {
        n == "hit ratio, measured (%)"
    }) {
        let pp = m[0] - m[1];
        rows.push((
            "zipf cache-aside hit ratio ≥ memcached's + 2 percentage points".into(),
            format!("{:.2}% against {:.2}%: {pp:+.2} pp", m[0], m[1]),
            Some(pp >= 2.0),
        ));
    }
    if rows.is_empty() {
        return;
    }
    println!();
    println!("==== targets (from the medians above) ====");
    println!();
    for (what, value, ok) in rows {
        let verdict = match ok {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "(partial run)",
        };
        println!("  [{verdict}] {what}: {value}");
    }
}

const MEMCRAB_COLOR: RGBColor = RGBColor(222, 98, 34);
const MEMCACHED_COLOR: RGBColor = RGBColor(52, 101, 164);

struct BarChart<'a> {
    file: &'a str,
    title: String,
    y_desc: &'a str,
    /// Per group: its label and (memcrab, memcached).
    groups: Vec<(String, [f64; 2])>,
    /// log10 y axis (values spanning decades).
    log: bool,
    /// Label above each bar.
    fmt: fn(f64) -> String,
}

/// Draws a grouped bar chart, memcrab's bar left of memcached's. Labels are SVG `<text>`
/// elements (plotters without its `ttf` feature measures text with a fixed estimate and needs
/// no fonts), so the output is the same on every machine.
fn draw_bars(dir: &std::path::Path, c: &BarChart) -> Res<()> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let path = dir.join(c.file);
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let groups: Vec<&(String, [f64; 2])> = c
        .groups
        .iter()
        .filter(|g| g.1.iter().all(|v| v.is_finite() && *v > 0.0))
        .collect();
    if groups.is_empty() {
        return Ok(());
    }
    let vals = groups.iter().flat_map(|g| g.1);
    let (min, max) = vals.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let tr = |v: f64| if c.log { v.log10() } else { v };
    let (lo, hi) = if c.log {
        (min.log10().floor().min(0.0), (max * 3.0).log10().ceil())
    } else {
        (0.0, max * 1.15)
    };
    let width = (180 + 170 * groups.len() as u32).max(11 * c.title.len() as u32 + 60);
    let root = SVGBackend::new(&path, (width, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&c.title, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(34)
        .y_label_area_size(84)
        .build_cartesian_2d(0f64..groups.len() as f64, lo..hi)
        .map_err(|e| err(&e))?;
    let y_fmt = |v: &f64| {
        if c.log {
            fmt_num(10f64.powf(*v))
        } else {
            fmt_num(*v)
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_label_formatter(&|_| String::new())
        .y_labels(if c.log { (hi - lo) as usize + 1 } else { 8 })
        .y_label_formatter(&y_fmt)
        .y_desc(c.y_desc)
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| err(&e))?;
    let value_style =
        TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    for (t, (name, color)) in [("memcrab", MEMCRAB_COLOR), ("memcached", MEMCACHED_COLOR)]
        .into_iter()
        .enumerate()
    {
        let x0 = |i: usize| i as f64 + 0.1 + 0.41 * t as f64;
        chart
            .draw_series(groups.iter().enumerate().map(|(i, g)| {
                Rectangle::new([(x0(i), lo), (x0(i) + 0.39, tr(g.1[t]))], color.filled())
            }))
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
        chart
            .draw_series(groups.iter().enumerate().map(|(i, g)| {
                Text::new(
                    (c.fmt)(g.1[t]),
                    (x0(i) + 0.195, tr(g.1[t])),
                    value_style.clone(),
                )
            }))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 12))
        .margin(12)
        .draw()
        .map_err(|e| err(&e))?;
    let label_style =
        TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    for (i, g) in groups.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(i as f64 + 0.5, lo));
        root.draw(&Text::new(g.0.clone(), (px, py + 8), label_style.clone()))
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// Writes the charts of a full run to [`CHART_DIR`].
fn write_charts(results: &Results, rate: u64) -> Res<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(CHART_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let groups = |names: &[&str], is: &dyn Fn(&str) -> bool| -> Vec<(String, [f64; 2])> {
        names
            .iter()
            .filter_map(|w| {
                let m = medians(results, w, is)?;
                let label = match *w {
                    "multiget-10" => "multiget-10 (multigets)".to_string(),
                    "get-set-pipe16" => "get-set-pipe16 (batch)".to_string(),
                    "get-set-rate" => format!("get-set-rate ({}k/s)", rate / 1000),
                    w => w.to_string(),
                };
                Some((label, m))
            })
            .collect()
    };
    let sizes_mem = results
        .iter()
        .find(|(w, _)| w.name == "fill-sizes")
        .map(|(w, _)| w.mem_mb)
        .unwrap_or(0);
    let mut latency_wls = THROUGHPUT_WORKLOADS.to_vec();
    latency_wls.push("get-set-rate");
    let charts = [
        BarChart {
            file: "throughput.svg",
            title: "Requests/s (closed loop, one request in flight per connection; median)".into(),
            y_desc: "requests/s",
            groups: groups(&THROUGHPUT_WORKLOADS, &is_rate),
            log: false,
            fmt: fmt_num,
        },
        BarChart {
            file: "p99-latency.svg",
            title: "p99 latency (per request; pipelined: per batch of 16; median)".into(),
            y_desc: "microseconds (log scale)",
            groups: groups(&latency_wls, &|n: &str| n.starts_with("p99 latency")),
            log: true,
            fmt: fmt_num,
        },
        BarChart {
            file: "fill-sizes.svg",
            title: format!("Items retained at -m {sizes_mem} by value size (20-40 B keys)"),
            y_desc: "items retained (log scale)",
            groups: FILL_SIZES
                .iter()
                .filter_map(|&v| {
                    let label = size_label(v);
                    let want = format!("items retained, {label}");
                    medians(results, "fill-sizes", |n| n == want).map(|m| (label, m))
                })
                .collect(),
            log: true,
            fmt: fmt_num,
        },
        BarChart {
            file: "zipf-hit-ratio.svg",
            title: "Hit ratio, zipf(0.99) cache-aside, 10x the keys that fit (measured phase)"
                .into(),
            y_desc: "hit ratio (%)",
            groups: groups(&["zipf-cache-aside"], &|n: &str| {
                n == "hit ratio, measured (%)"
            }),
            log: false,
            fmt: |v| format!("{v:.2}%"),
        },
    ];
    for c in &charts {
        draw_bars(&dir, c)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Driver.

fn run_once(
    rt: &tokio::runtime::Runtime,
    opts: &Opts,
    wl: &Workload,
    target: Target,
) -> Res<Vec<Metric>> {
    if let Kind::FillSizes { sizes } = &wl.kind {
        return run_fill_sizes(rt, opts, wl, target, sizes);
    }
    let mut server = Server::start(target, opts, wl.mem_mb, wl.threads, wl.extra)?;
    let before = CpuSnapshot::take(&server)?;
    let mut result = rt.block_on(async {
        match &wl.kind {
            Kind::Fill {
                items,
                key_len,
                value_len,
            } => run_fill(&server, *items, *key_len, *value_len).await,
            Kind::Throughput {
                keys,
                value_len,
                mode,
                rate,
                duration,
            } => {
                let t = ThroughputRun {
                    keys: *keys,
                    value_len: *value_len,
                    mode: *mode,
                    rate: *rate,
                    duration: *duration,
                };
                run_throughput(&server, opts, t).await
            }
            Kind::Zipf {
                keys,
                theta,
                value_len,
                warmup,
                measured,
            } => {
                let z = ZipfRun {
                    keys: *keys,
                    theta: *theta,
                    value_len: *value_len,
                    warmup: *warmup,
                    measured: *measured,
                };
                run_zipf(&server, opts, z).await
            }
            Kind::Idle { conns } => run_idle(&server, *conns).await,
            Kind::FillSizes { .. } => unreachable!("handled above"),
        }
    });
    if let (Ok(metrics), Ok(after)) = (&mut result, CpuSnapshot::take(&server)) {
        metrics.push(metric(
            "other processes' CPU (cores)",
            before.others_since(&after),
            Better::Neither,
        ));
    }
    let exited = server.child.try_wait().ok().flatten();
    drop(server);
    match (result, exited) {
        (Ok(_), Some(status)) => Err(format!("server exited during the run: {status}")),
        (Err(e), Some(status)) => Err(format!("{e} (server exited: {status})")),
        (result, None) => result,
    }
}

fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    if v.abs() >= 1000.0 {
        let digits = format!("{:.0}", v.abs());
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        return if v < 0.0 { format!("-{out}") } else { out };
    }
    if v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

type Runs = [Vec<Res<Vec<Metric>>>; 2];

fn run_line(m: &[Metric]) -> String {
    let mut s = String::new();
    for x in m {
        let _ = write!(s, "{} {}; ", x.name, fmt_num(x.value));
    }
    s.trim_end_matches("; ").to_string()
}

fn print_table(wl: &Workload, opts: &Opts, runs: &Runs) -> bool {
    println!();
    println!("{}: {}", wl.name, wl.describe(opts));
    let failed: Vec<bool> = runs.iter().map(|r| r.iter().any(|x| x.is_err())).collect();
    // Metric names in order, from the first successful run of either server.
    let names: Vec<(String, Better)> = runs
        .iter()
        .flatten()
        .find_map(|r| r.as_ref().ok())
        .map(|m| m.iter().map(|x| (x.name.clone(), x.better)).collect())
        .unwrap_or_default();
    let width = names.iter().map(|(n, _)| n.len()).max().unwrap_or(6).max(6);
    println!(
        "  {:<width$}  {:>13}  {:>13}  {:>7}  {:<6}  {:>11}",
        "metric", "memcrab", "memcached", "ratio", "better", "spread mc/md"
    );
    for (name, better) in &names {
        // Per server: (median, min, max) over its rounds, or None when a round failed.
        let agg: Vec<Option<(f64, f64, f64)>> = (0..2)
            .map(|t| {
                (!failed[t]).then(|| {
                    let vals: Vec<f64> = runs[t]
                        .iter()
                        .filter_map(|r| r.as_ref().ok())
                        .filter_map(|m| m.iter().find(|x| &x.name == name))
                        .map(|x| x.value)
                        .collect();
                    let min = vals.iter().copied().fold(f64::INFINITY, f64::min);
                    let max = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    (median(vals), min, max)
                })
            })
            .collect();
        let cell = |v: Option<(f64, f64, f64)>| {
            v.map(|(m, _, _)| fmt_num(m))
                .unwrap_or_else(|| "FAILED".into())
        };
        let spread = |v: Option<(f64, f64, f64)>| match v {
            Some((m, lo, hi)) if m.abs() > 1e-9 && m.is_finite() && opts.rounds > 1 => {
                format!("{:.0}%", (hi - lo) / m.abs() * 100.0)
            }
            _ => "-".into(),
        };
        let ratio = match (agg[0], agg[1]) {
            (Some((a, _, _)), Some((b, _, _)))
                if b.abs() > 1e-9 && a.is_finite() && b.is_finite() =>
            {
                format!("{:.3}", a / b)
            }
            _ => "-".into(),
        };
        let better = match better {
            Better::Higher => "higher",
            Better::Lower => "lower",
            Better::Neither => "",
        };
        println!(
            "  {name:<width$}  {:>13}  {:>13}  {ratio:>7}  {better:<6}  {:>5} {:>5}",
            cell(agg[0]),
            cell(agg[1]),
            spread(agg[0]),
            spread(agg[1])
        );
    }
    for (t, target) in TARGETS.iter().enumerate() {
        for (round, r) in runs[t].iter().enumerate() {
            if let Err(e) = r {
                println!("  {} round {} FAILED: {e}", target.name(), round + 1);
            }
        }
    }
    failed.iter().any(|&f| f)
}

fn command_output(bin: &std::path::Path, arg: &str) -> String {
    Command::new(bin)
        .arg(arg)
        .stdin(Stdio::null())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "(unknown)".into())
}

fn print_header(opts: &Opts, args: &[String]) {
    let shown: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--bench")
        .collect();
    let mut cmd = "cargo bench --bench load".to_string();
    if !shown.is_empty() {
        cmd.push_str(" -- ");
        cmd.push_str(&shown.join(" "));
    }
    for var in ["MEMCRAB_BIN", "MEMCACHED_BIN"] {
        if let Ok(v) = std::env::var(var) {
            cmd = format!("{var}={v} {cmd}");
        }
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "(unknown)".into());
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map(|kb| kb / 1048576.0)
        .unwrap_or(f64::NAN);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .stderr(Stdio::null())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "(unknown)".into());
    println!("memcrab side-by-side load benchmark (benches/load.rs)");
    println!("command:   {cmd}");
    println!(
        "machine:   nproc {nproc}; {model}; {mem_gib:.1} GiB RAM; Linux {}",
        kernel.trim()
    );
    println!(
        "memcached: {} ({})",
        command_output(&opts.memcached_bin, "-V"),
        opts.memcached_bin.display()
    );
    println!(
        "memcrab:   {} ({}), HEAD {commit} plus any uncommitted changes",
        command_output(&opts.memcrab_bin, "-V"),
        opts.memcrab_bin.display()
    );
    println!(
        "method:    both servers on 127.0.0.1 with the same -m/-t plus -U 0 (memcached also \
         -u nobody), a fresh server per run; {} round(s) per server per workload, alternating \
         memcrab/memcached; the client is a 2-thread tokio runtime in the bench process, \
         sharing the CPUs with the server; figures are medians; ratio = memcrab / memcached; \
         spread = (max - min) / median over the rounds, for memcrab / memcached",
        opts.rounds
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_args(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            let names: Vec<_> = workloads(&parse_args(&[]).expect("defaults"))
                .iter()
                .map(|w| w.name)
                .collect();
            eprintln!("workloads: {}", names.join(", "));
            std::process::exit(2);
        }
    };
    let all = workloads(&opts);
    for name in &opts.only {
        if !all.iter().any(|w| w.name == name) {
            let names: Vec<_> = all.iter().map(|w| w.name).collect();
            eprintln!(
                "--only: no workload {name}; workloads: {}",
                names.join(", ")
            );
            std::process::exit(2);
        }
    }
    let selected: Vec<Workload> = all
        .into_iter()
        .filter(|w| opts.only.is_empty() || opts.only.iter().any(|n| n == w.name))
        .collect();
    print_header(&opts, &args);
    raise_fd_limit(16_384);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building the client runtime");
    let started = Instant::now();
    let mut results = Vec::new();
    let mut noisy = 0;
    println!();
    for mut wl in selected {
        if let Kind::Throughput { rate, .. } = &mut wl.kind
            && wl.name == "get-set-rate"
        {
            *rate = paced_rate(&opts, &results);
        }
        println!("running {}: {}", wl.name, wl.describe(&opts));
        let mut runs: Runs = [Vec::new(), Vec::new()];
        for round in 1..=opts.rounds {
            for (t, target) in TARGETS.iter().enumerate() {
                if let Some(max) = opts.wait_quiet {
                    wait_quiet(max);
                }
                let t0 = Instant::now();
                let r = run_once(&rt, &opts, &wl, *target);
                let secs = t0.elapsed().as_secs_f64();
                match &r {
                    Ok(m) => println!(
                        "  round {round} {:<9} ({secs:5.1} s): {}",
                        target.name(),
                        run_line(m)
                    ),
                    Err(e) => println!(
                        "  round {round} {:<9} ({secs:5.1} s): FAILED: {e}",
                        target.name()
                    ),
                }
                let busy = r
                    .as_ref()
                    .ok()
                    .and_then(|m| m.iter().find(|x| x.name.starts_with("other processes")))
                    .map(|x| x.value)
                    .filter(|&v| v > BUSY_OTHERS);
                if let Some(v) = busy {
                    noisy += 1;
                    println!(
                        "    !! other processes used {v:.2} cores during this run: its figures \
                         are disturbed"
                    );
                }
                runs[t].push(r);
            }
        }
        results.push((wl, runs));
    }
    println!();
    println!("==== summary ====");
    let mut any_failed = false;
    for (wl, runs) in &results {
        any_failed |= print_table(wl, &opts, runs);
    }
    let rate = ran_rate(&results).unwrap_or(0);
    print_targets(&results, rate);
    if opts.force_charts || (opts.charts && opts.only.is_empty()) {
        println!();
        if let Err(e) = write_charts(&results, rate) {
            println!("charts not written: {e}");
        }
    }
    println!();
    println!("total wall time: {:.0} s", started.elapsed().as_secs_f64());
    if noisy > 0 {
        println!(
            "WARNING: in {noisy} run(s) other processes used more than {BUSY_OTHERS} cores \
             (see the \"other processes' CPU\" rows): rerun on a quiet machine"
        );
    }
    if any_failed {
        println!("some runs FAILED (see above)");
        std::process::exit(1);
    }
}
