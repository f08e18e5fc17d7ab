//! Test harness: starts real server processes (memcrab and, when installed,
//! memcached) on free 127.0.0.1 ports and talks raw bytes to them.
//!
//! Every wire test runs the same request bytes against each available target
//! and compares the exact reply bytes. memcached 1.6.45 is the oracle: the
//! expected bytes in these tests are checked against it too.
//!
//! Environment knobs (optional):
//! - `MEMCRAB_IT_TARGETS=memcrab` or `=memcached` runs only that target
//!   (default: both; memcached is skipped with a note when not installed).
//! - `MEMCRAB_IT_MEMCACHED=/path/to/memcached` picks the oracle binary; without
//!   it, `/tmp/memcached-1.6.45` (what `../shared/oracle/build.sh` builds),
//!   then `memcached` on PATH. Another release (Debian's 1.6.18) is left out
//!   with a loud note, unless `MEMCRAB_IT_TARGETS` names memcached; where it
//!   answers differently from 1.6.45, tests branch on `srv.legacy()`.
//!
//! Under CI (`CI=true`) a missing oracle, or another release standing in for
//! it, fails the wire tests instead of leaving memcached out: a differential
//! run without the oracle compares nothing. `MEMCRAB_IT_TARGETS=memcrab` still
//! runs memcrab alone there, as asked (and skips the random sequences).

#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How long `expect` waits for the bytes it wants.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a server may take to accept its first connection.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Memcrab,
    Memcached,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Memcrab => "memcrab",
            Kind::Memcached => "memcached",
        }
    }
}

pub fn memcrab_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_memcrab"))
}

/// The release the wire tests compare against: memcrab answers as this memcached.
pub const ORACLE_VERSION: &str = "1.6.45";
/// Where `../shared/oracle/build.sh` (and CI) put the oracle build.
const ORACLE_BUILD: &str = "/tmp/memcached-1.6.45";

/// The memcached binary: `$MEMCRAB_IT_MEMCACHED`, else the oracle build at
/// `/tmp/memcached-1.6.45`, else `memcached` on PATH. A fallback that is not
/// [`ORACLE_VERSION`] is used with a loud note (see [`Server::legacy`]).
pub fn memcached_bin() -> Option<PathBuf> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = if let Ok(p) = std::env::var("MEMCRAB_IT_MEMCACHED") {
            Some(PathBuf::from(p)).filter(|p| p.is_file())
        } else if PathBuf::from(ORACLE_BUILD).is_file() {
            Some(PathBuf::from(ORACLE_BUILD))
        } else {
            std::env::var_os("PATH").and_then(|path| {
                std::env::split_paths(&path)
                    .map(|d| d.join("memcached"))
                    .find(|p| p.is_file())
            })
        };
        if let Some(bin) = &bin {
            let version = memcached_version(bin);
            if version.as_deref() != Some(ORACLE_VERSION) {
                // The first line says what is left out: the summary of scripts/test.sh
                // collects the lines that start with "SKIPPED:".
                let first = if target_named(Kind::Memcached) == Some(true) {
                    "NOTE: the wire tests compare with another release:"
                } else {
                    "SKIPPED: the memcached side of the wire tests and the random sequences:"
                };
                loud(&format!(
                    "{first}\n\
                     the memcached oracle {} is version {}, not {ORACLE_VERSION}.\n\
                     The wire tests run against memcrab alone (the random sequences\n\
                     are skipped; under CI=true they fail): build the oracle with\n\
                     ../shared/oracle/build.sh or set MEMCRAB_IT_MEMCACHED.\n\
                     MEMCRAB_IT_TARGETS=memcached,memcrab compares with it anyway (tests\n\
                     branch on srv.legacy() where 1.6.18 answers otherwise, but not every\n\
                     case does).",
                    bin.display(),
                    version.as_deref().unwrap_or("unknown"),
                ));
            }
        }
        bin
    })
    .clone()
}

/// Writes a boxed note to the process's stderr, past the test harness's output capture.
pub fn loud(text: &str) {
    let bar = "*".repeat(72);
    let _ = writeln!(std::io::stderr(), "\n{bar}\n{text}\n{bar}\n");
}

/// `memcached -V`'s version number.
fn memcached_version(bin: &PathBuf) -> Option<String> {
    let out = Command::new(bin).arg("-V").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.trim().strip_prefix("memcached ").map(str::to_string)
}

/// True when the memcached oracle is not [`ORACLE_VERSION`] (Debian's 1.6.18, say).
pub fn legacy_oracle() -> bool {
    static LEGACY: OnceLock<bool> = OnceLock::new();
    *LEGACY.get_or_init(|| {
        memcached_bin()
            .is_some_and(|bin| memcached_version(&bin).as_deref() != Some(ORACLE_VERSION))
    })
}

/// Whether `MEMCRAB_IT_TARGETS` names `kind` (`None`: the variable is not set).
pub fn target_named(kind: Kind) -> Option<bool> {
    match std::env::var("MEMCRAB_IT_TARGETS") {
        Ok(v) if !v.trim().is_empty() => Some(v.split(',').any(|t| t.trim() == kind.name())),
        _ => None,
    }
}

fn target_enabled(kind: Kind) -> bool {
    match target_named(kind) {
        Some(named) => named,
        // Another release than the oracle's only when asked for by name.
        None => kind == Kind::Memcrab || !legacy_oracle(),
    }
}

/// True under CI (`CI=true`), where the wire tests must compare with the oracle.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Why the memcached [`ORACLE_VERSION`] oracle cannot run; `None` when it can.
pub fn oracle_unavailable() -> Option<String> {
    match memcached_bin() {
        None => Some(match std::env::var("MEMCRAB_IT_MEMCACHED") {
            Ok(p) => format!("MEMCRAB_IT_MEMCACHED={p} is not a file"),
            Err(_) => {
                "no memcached found (MEMCRAB_IT_MEMCACHED, /tmp/memcached-1.6.45, PATH)".to_string()
            }
        }),
        Some(bin) if legacy_oracle() => Some(format!(
            "{} is version {}, not {ORACLE_VERSION}",
            bin.display(),
            memcached_version(&bin).as_deref().unwrap_or("unknown")
        )),
        Some(_) => None,
    }
}

/// Under CI, panics when the oracle cannot run: a differential test that compares with
/// nothing must not pass there. Build it with ../shared/oracle/build.sh. A run that leaves
/// memcached out by name (`MEMCRAB_IT_TARGETS=memcrab`) is not stopped.
#[track_caller]
pub fn fail_under_ci_without_oracle(what: &str) {
    if !under_ci() || target_named(Kind::Memcached) == Some(false) {
        return;
    }
    if let Some(why) = oracle_unavailable() {
        panic!(
            "CI=true and {why}: {what} cannot compare with memcached {ORACLE_VERSION}. \
             Build the oracle with ../shared/oracle/build.sh (scripts/test.sh does) or set \
             MEMCRAB_IT_MEMCACHED to it"
        );
    }
}

/// The targets every wire test runs against, oracle first. Under CI, without
/// `MEMCRAB_IT_TARGETS`, panics when the oracle cannot run.
pub fn targets() -> Vec<Kind> {
    let mut out = Vec::new();
    if target_named(Kind::Memcached).is_none() {
        fail_under_ci_without_oracle("the wire tests");
    }
    if target_enabled(Kind::Memcached) {
        if memcached_bin().is_some() {
            out.push(Kind::Memcached);
        } else {
            fail_under_ci_without_oracle("the wire tests");
            static NOTE: OnceLock<()> = OnceLock::new();
            NOTE.get_or_init(|| {
                loud(
                    "SKIPPED: the memcached side of the wire tests: no memcached found\n\
                     (MEMCRAB_IT_MEMCACHED, /tmp/memcached-1.6.45, PATH): the wire tests\n\
                     run against memcrab alone (under CI=true they fail).",
                )
            });
        }
    }
    if target_enabled(Kind::Memcrab) {
        out.push(Kind::Memcrab);
    }
    out
}

/// Picks a port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// Captured stderr of a child process, filled by a reader thread.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn spawn_reader(mut r: impl Read + Send + 'static) -> Self {
        let c = Captured::default();
        let buf = c.0.clone();
        thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            loop {
                match r.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.lock().unwrap().extend_from_slice(&chunk[..n]),
                }
            }
        });
        c
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A running server process, killed (by PID) on drop.
pub struct Server {
    pub kind: Kind,
    pub port: u16,
    child: Option<Child>,
    pub stderr: Captured,
}

impl Server {
    pub fn memcrab(args: &[&str]) -> Server {
        Server::start(Kind::Memcrab, args)
    }

    pub fn memcached(args: &[&str]) -> Server {
        Server::start(Kind::Memcached, args)
    }

    pub fn start(kind: Kind, args: &[&str]) -> Server {
        Server::start_with_env(kind, args, &[])
    }

    /// [`Server::start`] with these environment variables set for the server.
    pub fn start_with_env(kind: Kind, args: &[&str], env: &[(&str, &str)]) -> Server {
        // A port can be taken between probing and binding; retry a few times.
        let mut last_err = String::new();
        for _attempt in 0..4 {
            let port = free_port();
            let mut cmd = base_command(kind);
            cmd.args([
                "-p",
                &port.to_string(),
                "-l",
                "127.0.0.1",
                "-U",
                "0",
                "-u",
                "nobody",
            ]);
            cmd.args(args);
            cmd.envs(env.iter().copied());
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let mut child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("[{}] cannot spawn: {e}", kind.name()));
            let stderr = Captured::spawn_reader(child.stderr.take().unwrap());
            let mut srv = Server {
                kind,
                port,
                child: Some(child),
                stderr,
            };
            match srv.wait_ready() {
                Ok(()) => return srv,
                Err(e) => last_err = e,
            }
        }
        panic!(
            "[{}] server with args {args:?} did not start: {last_err}",
            kind.name()
        );
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                thread::sleep(Duration::from_millis(50));
                return Err(format!(
                    "exited early with {st}; stderr: {:?}",
                    self.stderr.text()
                ));
            }
            if let Ok(probe) = TcpStream::connect(("127.0.0.1", self.port)) {
                return self.check_owner(probe);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no TCP listener on port {} after {STARTUP_TIMEOUT:?}; stderr: {:?}",
                    self.port,
                    self.stderr.text()
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The port was picked by probing, so another test's server may have
    /// taken it first (then ours fails to bind). Ask the listener for its pid.
    fn check_owner(&mut self, mut probe: TcpStream) -> Result<(), String> {
        let pid = self.pid();
        probe
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buf = Vec::new();
        if probe.write_all(b"stats\r\n").is_ok() {
            let mut chunk = [0u8; 8192];
            while !buf.ends_with(b"END\r\n") && buf.len() < 1 << 20 {
                match probe.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        }
        let text = String::from_utf8_lossy(&buf);
        let reported = text
            .lines()
            .find_map(|l| l.strip_prefix("STAT pid "))
            .and_then(|v| v.trim().parse::<u32>().ok());
        match reported {
            Some(p) if p == pid => Ok(()),
            Some(p) => {
                let _ = self.child.as_mut().unwrap().kill();
                let _ = self.child.take().unwrap().wait();
                Err(format!(
                    "port {} is served by another process (pid {p})",
                    self.port
                ))
            }
            None => {
                // No usable `stats`: fall back to checking that our process
                // is still alive a moment later.
                thread::sleep(Duration::from_millis(100));
                match self.child.as_mut().unwrap().try_wait().unwrap() {
                    None => Ok(()),
                    Some(st) => {
                        self.child = None;
                        Err(format!(
                            "exited early with {st}; stderr: {:?}",
                            self.stderr.text()
                        ))
                    }
                }
            }
        }
    }

    pub fn is_memcrab(&self) -> bool {
        self.kind == Kind::Memcrab
    }

    /// A memcached that is not the oracle release: where that release answers
    /// differently, tests expect its own bytes (or skip its half).
    pub fn legacy(&self) -> bool {
        self.kind == Kind::Memcached && legacy_oracle()
    }

    pub fn name(&self) -> &'static str {
        self.kind.name()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server already exited").id()
    }

    pub fn connect(&self) -> Conn {
        Conn::open(self.port, self.kind.name())
    }

    /// Sends `sig` to the server process (by its PID).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) takes plain integers; the result is checked.
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
    }

    /// Waits (bounded) for the process to exit and returns its status.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            let child = self.child.as_mut()?;
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The command (program and the args every start needs) for a target.
pub fn base_command(kind: Kind) -> Command {
    match kind {
        Kind::Memcrab => Command::new(memcrab_bin()),
        Kind::Memcached => Command::new(memcached_bin().expect("memcached not installed")),
    }
}

/// Runs `body` once per available target, each with a fresh server started
/// with `args` and one connection to it. Targets run in parallel threads (so
/// real-TTL sleeps overlap); a panic in any of them fails the test with the
/// original message (which names the target).
pub fn for_each_target(args: &[&str], body: impl Fn(&Server, &mut Conn) + Sync) {
    for_each_server(args, |srv| {
        let mut conn = srv.connect();
        body(srv, &mut conn);
    })
}

/// Like `for_each_target` but the body opens its own connections.
pub fn for_each_server(args: &[&str], body: impl Fn(&Server) + Sync) {
    let kinds = targets();
    let body = &body;
    let results: Vec<_> = thread::scope(|s| {
        let handles: Vec<_> = kinds
            .iter()
            .map(|&kind| {
                thread::Builder::new()
                    .name(kind.name().into())
                    .spawn_scoped(s, move || {
                        let srv = Server::start(kind, args);
                        body(&srv);
                    })
                    .unwrap()
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    for r in results {
        if let Err(payload) = r {
            std::panic::resume_unwind(payload);
        }
    }
}

/// Escapes bytes for readable failure messages (\r, \n, non-printables).
pub fn esc(b: &[u8]) -> String {
    let mut s = String::new();
    for &c in b {
        match c {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n\n"),
            b'\t' => s.push_str("\\t"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(c as char),
            _ => {
                let _ = write!(s, "\\x{c:02x}");
            }
        }
    }
    s
}

/// Shortens long byte strings for messages: head ... tail.
fn esc_short(b: &[u8]) -> String {
    if b.len() <= 600 {
        esc(b)
    } else {
        format!(
            "{} ...[{} bytes]... {}",
            esc(&b[..300]),
            b.len() - 600,
            esc(&b[b.len() - 300..])
        )
    }
}

/// A client connection speaking raw bytes.
pub struct Conn {
    stream: TcpStream,
    pending: Vec<u8>,
    label: &'static str,
}

impl Conn {
    pub fn open(port: u16, label: &'static str) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("[{label}] connect to port {port}: {e}"));
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Conn {
            stream,
            pending: Vec::new(),
            label,
        }
    }

    pub fn label(&self) -> &'static str {
        self.label
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("[{}] write failed: {e}", self.label));
    }

    /// Sends one byte per write (TCP_NODELAY is on), pausing briefly so the
    /// server sees many small reads.
    pub fn send_bytewise(&mut self, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            self.send(std::slice::from_ref(b));
            if i % 8 == 0 {
                thread::sleep(Duration::from_micros(300));
            }
        }
    }

    /// Reads more bytes into `pending`. Ok(false) = EOF; Err(()) = timeout.
    fn fill(&mut self, timeout: Duration) -> Result<bool, String> {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let mut chunk = vec![0u8; 64 * 1024];
        let r = self.stream.read(&mut chunk);
        self.stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        match r {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.pending.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err("timeout".into())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Reads until `n` bytes are buffered, EOF or the deadline. Returns why it stopped.
    fn fill_to(&mut self, n: usize, deadline: Instant) -> &'static str {
        while self.pending.len() < n {
            let now = Instant::now();
            if now >= deadline {
                return "timeout";
            }
            match self.fill(deadline - now) {
                Ok(true) => {}
                Ok(false) => return "connection closed",
                Err(_) => return "timeout",
            }
        }
        "ok"
    }

    /// Reads exactly `want.len()` bytes and compares them with `want`.
    #[track_caller]
    pub fn expect(&mut self, want: &[u8]) {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let why = self.fill_to(want.len(), deadline);
        let n = want.len().min(self.pending.len());
        if self.pending.len() >= want.len() && &self.pending[..n] == want {
            self.pending.drain(..n);
            return;
        }
        // Collect a little more for the message.
        if why == "ok" {
            let _ = self.fill(Duration::from_millis(100));
        }
        let got = std::mem::take(&mut self.pending);
        let common = got.iter().zip(want).take_while(|(a, b)| a == b).count();
        panic!(
            "[{}] reply mismatch ({why}; first difference at byte {common})\n--- expected ({} bytes):\n{}\n--- got ({} bytes):\n{}\n",
            self.label,
            want.len(),
            esc_short(want),
            got.len(),
            esc_short(&got)
        );
    }

    /// `expect` for text.
    #[track_caller]
    pub fn expect_str(&mut self, want: &str) {
        self.expect(want.as_bytes())
    }

    /// Sends `req` and expects exactly `reply`.
    #[track_caller]
    pub fn roundtrip(&mut self, req: &[u8], reply: &[u8]) {
        self.send(req);
        self.expect(reply);
    }

    /// Runs a table of (request, expected reply) pairs in order.
    #[track_caller]
    pub fn table(&mut self, rows: &[(&[u8], &[u8])]) {
        for (req, reply) in rows {
            self.send(req);
            self.expect(reply);
        }
    }

    /// Expects the server to close the connection without sending anything.
    #[track_caller]
    pub fn expect_closed(&mut self) {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            if !self.pending.is_empty() {
                panic!(
                    "[{}] expected the connection to close silently, got {:?}",
                    self.label,
                    esc_short(&self.pending)
                );
            }
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "[{}] expected the connection to close, it is still open",
                    self.label
                );
            }
            match self.fill(deadline - now) {
                Ok(false) => return,
                Ok(true) => {}
                Err(_) => {}
            }
        }
    }

    /// Expects no bytes for `ms` milliseconds (and the connection still open).
    #[track_caller]
    pub fn expect_nothing(&mut self, ms: u64) {
        let deadline = Instant::now() + Duration::from_millis(ms);
        loop {
            if !self.pending.is_empty() {
                panic!(
                    "[{}] expected no reply, got {:?}",
                    self.label,
                    esc_short(&self.pending)
                );
            }
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            match self.fill(deadline - now) {
                Ok(false) => panic!(
                    "[{}] expected no reply, but the connection closed",
                    self.label
                ),
                Ok(true) => {}
                Err(_) => {}
            }
        }
    }

    /// Reads one `\r\n`-terminated line (returned without the terminator).
    #[track_caller]
    pub fn read_line(&mut self) -> String {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            if let Some(i) = self.pending.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.pending.drain(..i + 2).take(i).collect();
                return String::from_utf8_lossy(&line).into_owned();
            }
            let now = Instant::now();
            let why = if now >= deadline {
                "timeout"
            } else {
                match self.fill(deadline - now) {
                    Ok(true) => continue,
                    Ok(false) => "connection closed",
                    Err(_) => "timeout",
                }
            };
            panic!(
                "[{}] expected a \\r\\n-terminated line ({why}); have {:?}",
                self.label,
                esc_short(&self.pending)
            );
        }
    }

    /// Reads lines up to and including `END`; returns the lines before it.
    #[track_caller]
    pub fn read_until_end(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        for _ in 0..100_000 {
            let l = self.read_line();
            if l == "END" {
                return lines;
            }
            lines.push(l);
        }
        panic!("[{}] no END after 100000 lines", self.label);
    }

    /// Sends `stats[ sub]` and returns the (name, value) pairs, checking that
    /// every line before `END` has the form `STAT <name> <value>`.
    #[track_caller]
    pub fn stats(&mut self, cmd: &str) -> Vec<(String, String)> {
        self.send(format!("{cmd}\r\n").as_bytes());
        self.read_until_end()
            .into_iter()
            .map(|l| {
                let rest = l
                    .strip_prefix("STAT ")
                    .unwrap_or_else(|| panic!("[{}] `{cmd}`: not a STAT line: {l:?}", self.label));
                let (k, v) = rest
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("[{}] `{cmd}`: no value in {l:?}", self.label));
                assert!(
                    !k.is_empty(),
                    "[{}] `{cmd}`: empty name in {l:?}",
                    self.label
                );
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    /// One value from `stats` parsed as u64.
    #[track_caller]
    pub fn stat_u64(&mut self, name: &str) -> u64 {
        let st = self.stats("stats");
        let v = lookup(&st, name).unwrap_or_else(|| panic!("[{}] no stat {name}", self.label));
        v.parse().unwrap_or_else(|_| {
            panic!(
                "[{}] stat {name} = {v:?} is not an unsigned integer",
                self.label
            )
        })
    }

    /// `gets key` → (flags, value, cas); None on a miss.
    #[track_caller]
    pub fn gets(&mut self, key: &str) -> Option<(u32, Vec<u8>, u64)> {
        self.send(format!("gets {key}\r\n").as_bytes());
        let head = self.read_line();
        if head == "END" {
            return None;
        }
        let parts: Vec<&str> = head.split(' ').collect();
        assert!(
            parts.len() == 5 && parts[0] == "VALUE" && parts[1] == key,
            "[{}] bad gets header {head:?}",
            self.label
        );
        let flags: u32 = parts[2].parse().unwrap();
        let len: usize = parts[3].parse().unwrap();
        let cas: u64 = parts[4]
            .parse()
            .unwrap_or_else(|_| panic!("[{}] cas not a u64 in {head:?}", self.label));
        let deadline = Instant::now() + REPLY_TIMEOUT;
        assert_eq!(
            self.fill_to(len + 2, deadline),
            "ok",
            "[{}] short value",
            self.label
        );
        let mut data: Vec<u8> = self.pending.drain(..len + 2).collect();
        assert_eq!(
            &data[len..],
            b"\r\n",
            "[{}] value not followed by \\r\\n",
            self.label
        );
        data.truncate(len);
        self.expect(b"END\r\n");
        Some((flags, data, cas))
    }

    /// Half-closes the write side.
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// True if the server has closed the connection (EOF or reset), without
    /// waiting longer than `ms`.
    pub fn is_closed_within(&mut self, ms: u64) -> bool {
        let deadline = Instant::now() + Duration::from_millis(ms);
        loop {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            match self.fill(deadline - now) {
                Ok(false) => return true,
                Ok(true) => {}
                Err(_) => return false,
            }
        }
    }
}

pub fn lookup<'a>(stats: &'a [(String, String)], name: &str) -> Option<&'a str> {
    stats
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// True if `v` is a plain decimal integer (optionally negative).
pub fn is_int(v: &str) -> bool {
    let d = v.strip_prefix('-').unwrap_or(v);
    !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())
}

/// True if `v` parses as a plain decimal number (what Go's ParseFloat accepts
/// from memcached: digits with at most one dot, no exponent, no NaN/Inf).
pub fn is_number(v: &str) -> bool {
    let d = v.strip_prefix('-').unwrap_or(v);
    let mut parts = d.split('.');
    let int = parts.next().unwrap_or("");
    let frac = parts.next();
    parts.next().is_none()
        && !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

/// `<seconds>.<6 digits>`, the rusage format.
pub fn is_sec_usec(v: &str) -> bool {
    match v.split_once('.') {
        Some((s, u)) => {
            is_int(s)
                && !s.starts_with('-')
                && u.len() == 6
                && u.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// Current unix time in seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `set <key> <flags> <exptime> <len>\r\n<value>\r\n` request bytes.
pub fn set_cmd(cmd: &str, key: &str, flags: u32, exptime: i64, value: &[u8]) -> Vec<u8> {
    let mut v = format!("{cmd} {key} {flags} {exptime} {}\r\n", value.len()).into_bytes();
    v.extend_from_slice(value);
    v.extend_from_slice(b"\r\n");
    v
}

/// `VALUE <key> <flags> <len>\r\n<value>\r\nEND\r\n` reply bytes.
pub fn value_reply(key: &str, flags: u32, value: &[u8]) -> Vec<u8> {
    let mut v = format!("VALUE {key} {flags} {}\r\n", value.len()).into_bytes();
    v.extend_from_slice(value);
    v.extend_from_slice(b"\r\nEND\r\n");
    v
}

/// Stores `value` under `key` with `set` and checks `STORED`.
#[track_caller]
pub fn store(c: &mut Conn, key: &str, value: &[u8]) {
    c.send(&set_cmd("set", key, 0, 0, value));
    c.expect(b"STORED\r\n");
}

/// Polls `cond` every 50 ms until it holds or `within` passes.
pub fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// This host's name, as `gethostname` gives it (the SASL realm).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len() - 1` bytes into `buf`.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    assert_eq!(rc, 0, "gethostname");
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..len]).into_owned()
}
