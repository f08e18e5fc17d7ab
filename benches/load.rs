//! Side-by-side load benchmark: memcrab against Debian's memcached, both started here on
//! 127.0.0.1 with the same `-m` and `-t`, driven by a load generator of our own.
//!
//! ```text
//! cargo bench --bench load -- [--quick] [--rounds N] [--duration SECS] [--conns N]
//!                             [--threads N] [--fill-threads N] [--mem MB] [--only NAME,...]
//! ```
//!
//! Each workload runs against the two servers alternately (memcrab, memcached, memcrab, ...),
//! each run on a freshly started server, and the summary reports per-server medians and the
//! ratio memcrab/memcached. Servers: `MEMCRAB_BIN` (default: the `memcrab` binary cargo just
//! built, `target/release/memcrab`) and `MEMCACHED_BIN` (default `/usr/bin/memcached`).
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
  --only A,B         run only the named workloads (see the list below)
  --items-scale F    multiply the items the fill workloads write by F (default 1, at most 4)
  --wait-quiet SECS  before each run, wait up to SECS for other processes to use < 0.1 core
  --metrics          run memcrab with --metrics-port (latency timing on) and scrape it every 1 s
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
    };
    // First pass: --quick sets defaults that explicit flags then override.
    if args.iter().any(|a| a == "--quick") {
        opts.quick = true;
        opts.rounds = 1;
        opts.duration = Duration::from_secs(1);
        opts.fill_divisor = 4;
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
    fn start(target: Target, opts: &Opts, mem_mb: usize, threads: usize) -> Res<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("finding a free port: {e}"))?
            .port();
        let mut cmd = Command::new(target.bin(opts));
        cmd.args(["-p", &port.to_string(), "-U", "0", "-l", "127.0.0.1"])
            .args(["-m", &mem_mb.to_string(), "-t", &threads.to_string()]);
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
    Ok((ticks(11)? + ticks(12)?) as f64 / clock_ticks())
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
    /// Timed closed-loop load from `--conns` connections over `keys` preloaded items.
    Throughput {
        keys: u64,
        value_len: usize,
        mode: Mode,
    },
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
    kind: Kind,
}

impl Workload {
    fn describe(&self, opts: &Opts) -> String {
        let server = format!("-m {} -t {}", self.mem_mb, self.threads);
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
            Kind::Throughput {
                keys,
                value_len,
                mode,
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
                format!(
                    "{server}; {keys} keys preloaded with {value_len} B values; {} connections \
                     on a 2-thread tokio client for {:.1} s; {what}",
                    opts.conns,
                    opts.duration.as_secs_f64()
                )
            }
        }
    }
}

fn workloads(opts: &Opts) -> Vec<Workload> {
    let fill = |name, items: usize, key_len, value_len| Workload {
        name,
        mem_mb: (opts.mem_mb / opts.fill_divisor).max(1),
        threads: opts.fill_threads,
        kind: Kind::Fill {
            items: ((items as f64 * opts.items_scale) as usize / opts.fill_divisor).max(1),
            key_len,
            value_len,
        },
    };
    let load = |name, mode| Workload {
        name,
        mem_mb: opts.mem_mb,
        threads: opts.threads,
        kind: Kind::Throughput {
            keys: 100_000,
            value_len: 100,
            mode,
        },
    };
    vec![
        fill("fill-mixed", 800_000, (20, 40), (50, 300)),
        fill("fill-tiny", 3_000_000, (10, 10), (10, 10)),
        load(
            "get-set",
            Mode::Mixed {
                get_pct: 90,
                depth: 1,
            },
        ),
        load(
            "get-set-pipe16",
            Mode::Mixed {
                get_pct: 90,
                depth: 16,
            },
        ),
        load("multiget-10", Mode::Multiget { keys: 10 }),
    ]
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

async fn client(mut conn: Conn, id: usize, p: Arc<ClientParams>) -> Res<ClientStats> {
    let mut rng = Rng::new(SEED ^ 0xc11e_0000 ^ id as u64);
    let mut st = ClientStats {
        latencies: Vec::with_capacity(1 << 16),
        ..Default::default()
    };
    let mut req = Vec::with_capacity(16 * 256);
    let mut want = Vec::with_capacity(16); // (is_get, key start, key end) into `keys`
    let mut keys = Vec::with_capacity(16 * 16);
    let value_len = p.value_len;
    while Instant::now() < p.deadline && st.requests < MAX_OPS_PER_CONN {
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

async fn run_throughput(
    server: &Server,
    opts: &Opts,
    keys: u64,
    value_len: usize,
    mode: Mode,
) -> Res<Vec<Metric>> {
    let pool = Arc::new(value_pool());
    preload(server.port, keys, value_len, &pool).await?;
    let mut conns = Vec::with_capacity(opts.conns);
    for _ in 0..opts.conns {
        conns.push(Conn::connect(server.port).await?);
    }
    let cpu0 = server.cpu_seconds()?;
    let t0 = Instant::now();
    let params = Arc::new(ClientParams {
        keys,
        value_len,
        mode,
        deadline: t0 + opts.duration,
        pool,
    });
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(id, conn)| tokio::spawn(client(conn, id, params.clone())))
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
    if let Some(e) = first_error {
        return Err(e);
    }
    total.latencies.sort_unstable();
    let lat = &total.latencies;
    let (rate_name, per, cpu_name) = match mode {
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
        metric("server CPU (cores busy)", cpu / secs, Better::Neither),
        metric("get misses (want 0)", total.misses as f64, Better::Lower),
    ])
}

// ---------------------------------------------------------------------------------------------
// Driver.

fn run_once(
    rt: &tokio::runtime::Runtime,
    opts: &Opts,
    wl: &Workload,
    target: Target,
) -> Res<Vec<Metric>> {
    let mut server = Server::start(target, opts, wl.mem_mb, wl.threads)?;
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
            } => run_throughput(&server, opts, *keys, *value_len, *mode).await,
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building the client runtime");
    let started = Instant::now();
    let mut results = Vec::new();
    let mut noisy = 0;
    println!();
    for wl in selected {
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
