//! Open loop: requests arrive on a schedule of their own (a Poisson process at a set rate),
//! whether or not the server has answered the earlier ones, and each request's latency is
//! counted from when it was due, not from when it was sent. A closed-loop client waits for
//! each reply before it sends again, so a server that stalls is sent less and its stall shows
//! in few samples (coordinated omission); here every request due during a stall waits it out
//! and is counted.
//!
//! The client is not the tokio runtime of the other workloads (its timer has a 1 ms
//! granularity, which would add up to 1 ms of latency of its own): `--client-threads` plain
//! threads, each with its share of the connections (non-blocking, TCP_NODELAY) on an epoll
//! instance (mio) and a timerfd (CLOCK_MONOTONIC, absolute expiry, timer slack 1 ns) that
//! wakes it when the next request is due. A thread that wakes late sends every request that
//! is due by then, each with its own due time.
//!
//! The sweep: one server per round runs every offered load in ascending order, each for
//! `level_duration`, of which the first 10% (at least 100 ms) warm up unrecorded. Per load:
//! the offered and achieved rates, the latency percentiles of the requests due in the
//! measured window, the requests dropped because a connection had [`MAX_IN_FLIGHT`] requests
//! waiting for replies, and the server's CPU and run-queue wait per request over the window
//! (from its threads' schedstat, in nanoseconds).

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::latency::Latencies;
use super::throughput::{load_key, pick_value, preload, value_pool};
use super::{Better, Level, Metric, metric};
use crate::Res;
use crate::machine::{Sched, SchedSnapshot};
use crate::report::fmt_num;
use crate::rng::{Rng, SEED};
use crate::server::Server;
use crate::wire::{push_set, show};

/// Requests one connection may have waiting for replies; an arrival past it is dropped (and
/// counted): the server has fallen that far behind.
pub const MAX_IN_FLIGHT: usize = 1_000;

/// A connection with requests in flight and no reply for this long fails the run.
const STALL: Duration = Duration::from_secs(10);

/// After the last arrival of a load, how long the replies may take to come in, in all.
const DRAIN: Duration = Duration::from_secs(30);

/// A client thread that finds it has not run for this long (its poll waits 100 ms at most)
/// was stopped (SIGSTOP, as a script pausing "other" processes sends) or starved: its
/// requests went out late or all at once, and the load's figures are void.
const STOPPED: Duration = Duration::from_secs(1);

fn stopped(gap_ns: u64) -> String {
    format!(
        "the load generator did not run for {:.1} s (stopped by a signal, or starved of CPU): \
         this load's figures would be void",
        gap_ns as f64 / 1e9
    )
}

/// How long the preload may take in all (each of its reads has its own 10 s timeout, which
/// a server that answers every batch late but within it would never trip).
const PRELOAD_LIMIT: Duration = Duration::from_secs(60);

/// The figures of each offered load, in the order of the tables: the metric's name (before
/// " at P%"), its unit (after it), its column heading and which way is better.
pub const COLUMNS: [(&str, &str, &str, Better); 13] = [
    ("offered req/s", "", "offered/s", Better::Neither),
    ("achieved req/s", "", "achieved/s", Better::Neither),
    ("p50", " (us)", "p50", Better::Lower),
    ("p90", " (us)", "p90", Better::Lower),
    ("p99", " (us)", "p99", Better::Lower),
    ("p99.9", " (us)", "p99.9", Better::Lower),
    ("max", " (us)", "max", Better::Lower),
    ("dropped (server fell behind)", "", "dropped", Better::Lower),
    ("server CPU per request", " (us)", "CPU/req", Better::Lower),
    (
        "server run-queue wait per request",
        " (us)",
        "rq wait/req",
        Better::Lower,
    ),
    (
        "load generator run-queue wait per request",
        " (us)",
        "own rq/req",
        Better::Neither,
    ),
    (
        "send lag (the client's lateness, part of the latency) p50",
        " (us)",
        "lag p50",
        Better::Neither,
    ),
    ("send lag p99", " (us)", "lag p99", Better::Neither),
];

/// The name of column `col` of [`COLUMNS`] at offered load `pct`: "p99 at 30% (us)".
pub fn level_name(col: usize, pct: u32) -> String {
    let (name, unit, _, _) = COLUMNS[col];
    format!("{name} at {pct}%{unit}")
}

/// Index in [`COLUMNS`] of the p99 and p99.9 columns (the targets and the chart).
pub const P99: usize = 4;
pub const P999: usize = 5;

/// An open-loop sweep ([`crate::workload::Kind::OpenLoop`]): `get_pct`% get, the rest set,
/// over `keys` items preloaded with `value_len` B values, at each of `levels`.
#[derive(Clone, Debug)]
pub struct Sweep {
    pub keys: u64,
    pub value_len: usize,
    pub get_pct: u64,
    /// Offered loads, percent of `capacity`, ascending.
    pub levels: Vec<u32>,
    pub level_duration: Duration,
    /// The requests/s that 100% stands for.
    pub capacity: Capacity,
}

/// How long the closed-loop get-set run that measures [`Capacity::Measured`] lasts.
pub const CAPACITY_RUN: Duration = Duration::from_secs(2);

/// memcached's capacity, 100% of a sweep's offered loads: its closed-loop get-set rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Capacity {
    /// Not known yet: the driver finds it before the workload's first run.
    Unknown,
    /// memcached's median requests/s in get-set earlier in the same invocation.
    GetSet(f64),
    /// `--capacity`.
    Given(f64),
    /// A [`CAPACITY_RUN`] closed-loop get-set run against memcached before the sweep.
    Measured(f64),
}

impl Capacity {
    pub fn rate(self) -> Option<f64> {
        match self {
            Capacity::Unknown => None,
            Capacity::GetSet(r) | Capacity::Given(r) | Capacity::Measured(r) => Some(r),
        }
    }

    pub fn describe(self) -> String {
        match self {
            Capacity::Unknown => {
                "memcached's closed-loop get-set requests/s (to be measured)".into()
            }
            Capacity::GetSet(r) => format!(
                "memcached's median closed-loop get-set requests/s in this run, {}",
                fmt_num(r)
            ),
            Capacity::Given(r) => format!("{} requests/s (--capacity)", fmt_num(r)),
            Capacity::Measured(r) => format!(
                "memcached's closed-loop get-set requests/s, measured for {} s before the \
                 sweep: {}",
                CAPACITY_RUN.as_secs(),
                fmt_num(r)
            ),
        }
    }
}

/// The warm-up of a load of `duration`: its first 10%, at least 100 ms (at most half).
pub fn warmup(duration: Duration) -> Duration {
    (duration / 10)
        .max(Duration::from_millis(100))
        .min(duration / 2)
}

/// Runs the sweep against a fresh `server`: preload, then every offered load, from `conns`
/// connections on `threads` client threads.
pub fn run_open(
    rt: &tokio::runtime::Runtime,
    server: &Server,
    run: &Sweep,
    conns: usize,
    threads: usize,
) -> Res<Vec<Metric>> {
    let capacity = run.capacity.rate().ok_or("the capacity is not known")?;
    let pool = Arc::new(value_pool());
    let t0 = now_ns();
    rt.block_on(async {
        tokio::time::timeout(
            PRELOAD_LIMIT,
            preload(server, run.keys, run.value_len, &pool),
        )
        .await
    })
    .map_err(|_| format!("the preload took more than {PRELOAD_LIMIT:?}"))??;
    let preloaded = now_ns();
    // When a load fails: how long the preload and the loads before took (a server that
    // answers late but within every timeout shows there).
    let timing = || {
        format!(
            "{:.1} s into the run, the preload took {:.1} s",
            (now_ns() - t0) as f64 / 1e9,
            (preloaded - t0) as f64 / 1e9
        )
    };
    let clients = Clients::start(server.port, run, conns, threads, pool)?;
    let mut out = Vec::new();
    for (i, &pct) in run.levels.iter().enumerate() {
        let rate = capacity * pct as f64 / 100.0;
        let dur = run.level_duration.as_nanos() as u64;
        let start = now_ns() + 2_000_000; // the threads are waiting before the first is due
        let level = LevelPlan {
            rate_per_thread: rate / clients.count() as f64,
            seed: SEED ^ 0x6f70_656e ^ ((i as u64) << 32),
            start,
            measure_from: start + warmup(run.level_duration).as_nanos() as u64,
            end: start + dur,
        };
        clients.begin(level)?;
        sleep_until(level.measure_from);
        let (server0, own0) = (server.sched()?, SchedSnapshot::take("self")?);
        sleep_until(level.end);
        let (server1, own1) = (server.sched()?, SchedSnapshot::take("self")?);
        let late = now_ns().saturating_sub(level.end);
        if late > STOPPED.as_nanos() as u64 {
            return Err(format!("at {pct}%: {}", stopped(late)));
        }
        let stats = clients
            .finish(level)
            .map_err(|e| format!("at {pct}% ({rate:.0} req/s; {}): {e}", timing()))?;
        let window = (level.end - level.measure_from) as f64 / 1e9;
        out.extend(level_metrics(
            pct,
            window,
            &stats,
            server1.since(&server0),
            own1.since(&own0),
        ));
        if stats.misses > 0 {
            return Err(format!(
                "at {pct}%: {} gets of preloaded keys missed",
                stats.misses
            ));
        }
    }
    Ok(out)
}

fn level_metrics(pct: u32, window: f64, st: &LevelStats, server: Sched, own: Sched) -> Vec<Metric> {
    let per_request = |ns: u64| {
        if st.completed > 0 {
            ns as f64 / 1000.0 / st.completed as f64
        } else {
            f64::NAN
        }
    };
    let values = [
        st.offered as f64 / window,
        st.completed as f64 / window,
        st.latencies.quantile_us(0.50),
        st.latencies.quantile_us(0.90),
        st.latencies.quantile_us(0.99),
        st.latencies.quantile_us(0.999),
        st.latencies.quantile_us(1.0),
        st.dropped as f64,
        per_request(server.cpu_ns),
        per_request(server.wait_ns),
        per_request(own.wait_ns),
        st.lag.quantile_us(0.50),
        st.lag.quantile_us(0.99),
    ];
    COLUMNS
        .iter()
        .zip(values)
        .enumerate()
        .map(|(col, (&(_, _, head, better), value))| Metric {
            level: Some(Level { pct, head }),
            ..metric(level_name(col, pct), value, better)
        })
        .collect()
}

fn sleep_until(at_ns: u64) {
    let now = now_ns();
    if at_ns > now {
        std::thread::sleep(Duration::from_nanos(at_ns - now));
    }
}

/// CLOCK_MONOTONIC in nanoseconds (the timerfd's clock; a vDSO call, no system call).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec passed; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Arrival times of a Poisson process: exponential gaps of mean `1 / rate`, from a seeded
/// [`Rng`] (the same schedule for both servers), in CLOCK_MONOTONIC nanoseconds.
pub struct Poisson {
    rng: Rng,
    mean_gap_ns: f64,
    at_ns: f64,
}

impl Poisson {
    pub fn new(seed: u64, rate_per_s: f64, start_ns: u64) -> Poisson {
        Poisson {
            rng: Rng::new(seed),
            mean_gap_ns: 1e9 / rate_per_s.max(1e-3),
            at_ns: start_ns as f64,
        }
    }

    /// The next arrival.
    pub fn next_ns(&mut self) -> u64 {
        // Uniform in (0, 1]: 53 random bits, never 0 (ln 0 is -inf).
        let u = ((self.rng.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64;
        self.at_ns += -u.ln() * self.mean_gap_ns;
        self.at_ns as u64
    }
}

/// The reply a request waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// `get key:<n>`: its value (`value_len` bytes) or a miss.
    Get(u64),
    /// `set`: STORED.
    Set,
}

/// A complete reply at the front of a read buffer, and its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    Hit(usize),
    Miss(usize),
    Stored(usize),
}

/// Matches `buf` against the concatenation of `parts`: `Ok(Some(len))` when it starts with
/// all of it, `Ok(None)` when it is a proper prefix (more bytes to come), `Err` on the first
/// byte that differs.
fn match_parts(buf: &[u8], parts: &[&[u8]]) -> Result<Option<usize>, ()> {
    let mut at = 0;
    for part in parts {
        let have = &buf[at.min(buf.len())..];
        let n = have.len().min(part.len());
        if have[..n] != part[..n] {
            return Err(());
        }
        if n < part.len() {
            return Ok(None);
        }
        at += part.len();
    }
    Ok(Some(at))
}

/// Parses the reply to a request at the front of `buf`, strictly: for a get, `VALUE key:<n>
/// 0 <value_len>\r\n<data>\r\nEND\r\n` or `END\r\n`; for a set, `STORED\r\n`.
/// `Ok(None)`: incomplete so far (every byte there is a prefix of a valid reply). Anything
/// else is an error.
pub fn parse_reply(buf: &[u8], expect: Expect, value_len: usize) -> Res<Option<Reply>> {
    let bad = || {
        let line = memchr::memchr(b'\n', buf).map_or(buf.len(), |i| i + 1);
        Err(format!(
            "unexpected reply to {}: {}",
            match expect {
                Expect::Get(k) => format!("get key:{k}"),
                Expect::Set => "set".to_string(),
            },
            show(&buf[..line])
        ))
    };
    match expect {
        Expect::Set => match match_parts(buf, &[b"STORED\r\n"]) {
            Ok(r) => Ok(r.map(Reply::Stored)),
            Err(()) => bad(),
        },
        Expect::Get(key) => {
            if buf.first() == Some(&b'E') {
                return match match_parts(buf, &[b"END\r\n"]) {
                    Ok(r) => Ok(r.map(Reply::Miss)),
                    Err(()) => bad(),
                };
            }
            let mut k = itoa::Buffer::new();
            let mut n = itoa::Buffer::new();
            let header: [&[u8]; 5] = [
                b"VALUE key:",
                k.format(key).as_bytes(),
                b" 0 ",
                n.format(value_len).as_bytes(),
                b"\r\n",
            ];
            let head = match match_parts(buf, &header) {
                Ok(Some(h)) => h,
                Ok(None) => return Ok(None),
                Err(()) => return bad(),
            };
            // The data: any bytes; then the block's end and END.
            let data_end = head + value_len;
            if buf.len() <= data_end {
                return Ok(None);
            }
            match match_parts(&buf[data_end..], &[b"\r\nEND\r\n"]) {
                Ok(r) => Ok(r.map(|t| Reply::Hit(data_end + t))),
                Err(()) => Err(format!(
                    "get key:{key}: {value_len} bytes of data not followed by \\r\\nEND\\r\\n: {}",
                    show(&buf[data_end..])
                )),
            }
        }
    }
}

/// One offered load, as each client thread runs it (times in CLOCK_MONOTONIC ns).
#[derive(Clone, Copy, Debug)]
struct LevelPlan {
    rate_per_thread: f64,
    seed: u64,
    start: u64,
    /// Requests due from here to `end` are measured (before: warm-up).
    measure_from: u64,
    /// No request is due from here on.
    end: u64,
}

/// What the client threads saw of one load: requests due in the measured window, replies
/// completed in it.
#[derive(Default)]
struct LevelStats {
    /// Arrivals due in the window (sent or dropped): the rate offered, as drawn.
    offered: u64,
    /// Reply time − due time, of the requests due in the window.
    latencies: Latencies,
    /// Send time − due time (how late the client itself was), same requests.
    lag: Latencies,
    /// Replies that came in during the window (the achieved rate).
    completed: u64,
    /// Arrivals in the window not sent: their connection had [`MAX_IN_FLIGHT`] waiting.
    dropped: u64,
    /// Gets answered by a miss (every key is preloaded: want 0).
    misses: u64,
}

impl LevelStats {
    fn add(&mut self, o: &LevelStats) {
        self.offered += o.offered;
        self.latencies.add(&o.latencies);
        self.lag.add(&o.lag);
        self.completed += o.completed;
        self.dropped += o.dropped;
        self.misses += o.misses;
    }
}

/// The client threads of a sweep, waiting for the next load.
struct Clients {
    plans: Vec<Sender<LevelPlan>>,
    results: Receiver<(usize, Res<LevelStats>)>,
    handles: Vec<JoinHandle<()>>,
}

impl Clients {
    /// Connects `conns` connections and starts `threads` threads, each with its share.
    fn start(
        port: u16,
        run: &Sweep,
        conns: usize,
        threads: usize,
        pool: Arc<Vec<u8>>,
    ) -> Res<Clients> {
        let threads = threads.clamp(1, conns.max(1));
        let (done, results) = channel();
        let mut clients = Clients {
            plans: Vec::new(),
            results,
            handles: Vec::new(),
        };
        for t in 0..threads {
            // Connections t, t + threads, ...: the same split whatever the count.
            let n = (conns + threads - 1 - t) / threads;
            let mut worker = Worker::new(port, n, t, run, pool.clone())?;
            let (plan_tx, plan_rx) = channel::<LevelPlan>();
            let done = done.clone();
            let handle = std::thread::Builder::new()
                .name(format!("open-loop-{t}"))
                .spawn(move || {
                    // SAFETY: prctl(PR_SET_TIMERSLACK) sets a value of this thread only.
                    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
                    for plan in plan_rx {
                        let r = worker.run(plan);
                        let failed = r.is_err();
                        if done.send((t, r)).is_err() || failed {
                            return;
                        }
                    }
                })
                .map_err(|e| format!("starting a client thread: {e}"))?;
            clients.plans.push(plan_tx);
            clients.handles.push(handle);
        }
        Ok(clients)
    }

    fn count(&self) -> usize {
        self.plans.len()
    }

    fn begin(&self, plan: LevelPlan) -> Res<()> {
        for p in &self.plans {
            p.send(plan)
                .map_err(|_| "a client thread has stopped".to_string())?;
        }
        Ok(())
    }

    /// Every thread's stats of `plan`, added up, or the first thread's error.
    fn finish(&self, plan: LevelPlan) -> Res<LevelStats> {
        let mut total = LevelStats::default();
        let mut first_error = None;
        let limit = plan.end + (DRAIN + STALL).as_nanos() as u64;
        for _ in 0..self.count() {
            let wait = Duration::from_nanos(limit.saturating_sub(now_ns())) + STALL;
            match self.results.recv_timeout(wait) {
                Ok((_, Ok(st))) => total.add(&st),
                Ok((t, Err(e))) => {
                    first_error.get_or_insert(format!("client thread {t}: {e}"));
                }
                Err(_) => return Err("a client thread did not report".into()),
            }
        }
        first_error.map_or(Ok(total), Err)
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        // Closing the plan channels ends the threads' loops (each load they run is bounded).
        self.plans.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// A request due and sent, waiting for its reply.
struct Pending {
    due: u64,
    expect: Expect,
}

struct OpenConn {
    stream: TcpStream,
    /// Requests not yet taken by the socket: `out[sent..]`.
    out: Vec<u8>,
    sent: usize,
    /// Replies read and not yet parsed: `inbuf[start..end]`.
    inbuf: Vec<u8>,
    start: usize,
    end: usize,
    waiting: VecDeque<Pending>,
    /// When the last reply came in (or the first request went out since none was waiting).
    progress: u64,
}

impl OpenConn {
    /// Writes what the socket takes of `out`.
    fn flush(&mut self) -> Res<()> {
        while self.sent < self.out.len() {
            match self.stream.write(&self.out[self.sent..]) {
                Ok(0) => return Err("write: the socket took nothing".into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        self.out.clear();
        self.sent = 0;
        Ok(())
    }
}

/// A client thread: its connections, its poll, its timer and the request mix.
struct Worker {
    conns: Vec<OpenConn>,
    poll: Poll,
    timer: Timer,
    /// This thread's number: its arrivals' seed.
    id: usize,
    /// Keys and operations (one sequence per thread, continued from load to load).
    rng: Rng,
    keys: u64,
    value_len: usize,
    get_pct: u64,
    pool: Arc<Vec<u8>>,
    /// The next connection to send on (round robin).
    next_conn: usize,
    key: Vec<u8>,
}

const TIMER: Token = Token(usize::MAX);

impl Worker {
    fn new(port: u16, n: usize, t: usize, run: &Sweep, pool: Arc<Vec<u8>>) -> Res<Worker> {
        let poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
        let timer = Timer::new()?;
        poll.registry()
            .register(
                &mut SourceFd(&timer.0.as_raw_fd()),
                TIMER,
                Interest::READABLE,
            )
            .map_err(|e| format!("registering the timerfd: {e}"))?;
        let mut conns = Vec::with_capacity(n);
        for i in 0..n {
            let s = std::net::TcpStream::connect(("127.0.0.1", port))
                .map_err(|e| format!("connect to 127.0.0.1:{port}: {e}"))?;
            s.set_nodelay(true).map_err(|e| e.to_string())?;
            s.set_nonblocking(true).map_err(|e| e.to_string())?;
            let mut stream = TcpStream::from_std(s);
            poll.registry()
                .register(
                    &mut stream,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .map_err(|e| format!("registering a connection: {e}"))?;
            conns.push(OpenConn {
                stream,
                out: Vec::with_capacity(4096),
                sent: 0,
                inbuf: vec![0; 64 * 1024],
                start: 0,
                end: 0,
                waiting: VecDeque::with_capacity(64),
                progress: 0,
            });
        }
        Ok(Worker {
            conns,
            poll,
            timer,
            id: t,
            rng: Rng::new(SEED ^ 0x6f70_656e_0000 ^ t as u64),
            keys: run.keys,
            value_len: run.value_len,
            get_pct: run.get_pct,
            pool,
            next_conn: 0,
            key: Vec::with_capacity(32),
        })
    }

    /// Runs one load: sends each request when due, reads the replies, until every request
    /// due before `plan.end` has its reply.
    fn run(&mut self, plan: LevelPlan) -> Res<LevelStats> {
        let mut st = LevelStats::default();
        if self.conns.is_empty() {
            return Ok(st);
        }
        let seed = plan.seed ^ ((self.id as u64) << 16);
        let mut arrivals = Poisson::new(seed, plan.rate_per_thread, plan.start);
        let mut events = Events::with_capacity(256);
        let mut next = arrivals.next_ns();
        let mut armed = 0;
        let drain_limit = plan.end + DRAIN.as_nanos() as u64;
        let mut last = now_ns();
        loop {
            let mut now = now_ns();
            if now - last > STOPPED.as_nanos() as u64 {
                return Err(stopped(now - last));
            }
            last = now;
            // Every request due by now, each with its own due time.
            while next <= now && next < plan.end {
                self.send(next, &plan, &mut st)?;
                next = arrivals.next_ns();
                now = now_ns();
            }
            let sending = next < plan.end;
            if !sending && self.conns.iter().all(|c| c.waiting.is_empty()) {
                return Ok(st);
            }
            if now > drain_limit {
                let stuck: Vec<&OpenConn> = (self.conns.iter())
                    .filter(|c| !c.waiting.is_empty())
                    .collect();
                let left: usize = stuck.iter().map(|c| c.waiting.len()).sum();
                let oldest = stuck
                    .iter()
                    .filter_map(|c| c.waiting.front())
                    .map(|p| p.due);
                return Err(format!(
                    "{left} replies still missing {DRAIN:?} after the last request was due, on \
                     {} of {} connections (the oldest due {:.1} s before)",
                    stuck.len(),
                    self.conns.len(),
                    now.saturating_sub(oldest.min().unwrap_or(now)) as f64 / 1e9
                ));
            }
            if let Some((i, c)) = self.conns.iter().enumerate().find(|(_, c)| {
                !c.waiting.is_empty() && now.saturating_sub(c.progress) > STALL.as_nanos() as u64
            }) {
                return Err(format!(
                    "connection {i}: no reply for {STALL:?} with {} requests waiting",
                    c.waiting.len()
                ));
            }
            if sending && armed != next {
                self.timer.arm(next)?;
                armed = next;
            }
            // The timer wakes this at the next arrival; the timeout only bounds the wait for
            // the stall check.
            match self
                .poll
                .poll(&mut events, Some(Duration::from_millis(100)))
            {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("epoll_wait: {e}")),
            }
            for e in events.iter() {
                if e.token() == TIMER {
                    self.timer.clear();
                    continue;
                }
                let i = e.token().0;
                if e.is_writable() {
                    self.conns[i]
                        .flush()
                        .map_err(|e| format!("connection {i}: {e}"))?;
                }
                // Errors and hang-ups too: the read tells which.
                if e.is_readable() || e.is_read_closed() || e.is_error() {
                    self.receive(i, &plan, &mut st)
                        .map_err(|e| format!("connection {i}: {e}"))?;
                }
            }
        }
    }

    /// Sends the request due at `due` on the next connection, or drops it when that one
    /// has [`MAX_IN_FLIGHT`] waiting.
    fn send(&mut self, due: u64, plan: &LevelPlan, st: &mut LevelStats) -> Res<()> {
        let i = self.next_conn;
        self.next_conn = (i + 1) % self.conns.len();
        let measured = due >= plan.measure_from;
        st.offered += u64::from(measured);
        // Drawn first, so that a drop does not shift the sequence.
        let k = self.rng.below(self.keys);
        let is_get = self.rng.below(100) < self.get_pct;
        let c = &mut self.conns[i];
        if c.waiting.len() >= MAX_IN_FLIGHT {
            st.dropped += u64::from(measured);
            return Ok(());
        }
        let idle = c.out.is_empty();
        let expect = if is_get {
            c.out.extend_from_slice(b"get ");
            load_key(&mut c.out, k);
            c.out.extend_from_slice(b"\r\n");
            Expect::Get(k)
        } else {
            self.key.clear();
            load_key(&mut self.key, k);
            let value = pick_value(&mut self.rng, &self.pool, self.value_len);
            push_set(&mut c.out, &self.key, value);
            Expect::Set
        };
        let now = now_ns();
        if c.waiting.is_empty() {
            c.progress = now;
        }
        c.waiting.push_back(Pending { due, expect });
        if measured {
            st.lag.record(now - due.min(now));
        }
        // At once, unless earlier requests still wait for the socket (then on WRITABLE).
        if idle {
            c.flush().map_err(|e| format!("connection {i}: {e}"))?;
        }
        Ok(())
    }

    /// Reads what connection `i` has (edge-triggered: until it would block) and takes
    /// every complete reply off the front of its queue.
    fn receive(&mut self, i: usize, plan: &LevelPlan, st: &mut LevelStats) -> Res<()> {
        let value_len = self.value_len;
        let c = &mut self.conns[i];
        loop {
            if c.start == c.end {
                (c.start, c.end) = (0, 0);
            } else if c.end == c.inbuf.len() {
                if c.start > 0 {
                    c.inbuf.copy_within(c.start..c.end, 0);
                    (c.start, c.end) = (0, c.end - c.start);
                } else {
                    let len = c.inbuf.len() * 2;
                    c.inbuf.resize(len, 0);
                }
            }
            let n = match c.stream.read(&mut c.inbuf[c.end..]) {
                Ok(0) => {
                    return Err(format!(
                        "server closed the connection with {} requests waiting",
                        c.waiting.len()
                    ));
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("read: {e}")),
            };
            let now = now_ns();
            c.end += n;
            while c.start < c.end {
                let Some(front) = c.waiting.front() else {
                    return Err(format!(
                        "bytes with no request waiting: {}",
                        show(&c.inbuf[c.start..c.end])
                    ));
                };
                let Some(reply) = parse_reply(&c.inbuf[c.start..c.end], front.expect, value_len)?
                else {
                    break;
                };
                let len = match reply {
                    Reply::Hit(n) | Reply::Stored(n) => n,
                    Reply::Miss(n) => {
                        st.misses += 1;
                        n
                    }
                };
                c.start += len;
                let due = front.due;
                c.waiting.pop_front();
                c.progress = now;
                if due >= plan.measure_from && due < plan.end {
                    st.latencies.record(now - due.min(now));
                }
                if now >= plan.measure_from && now < plan.end {
                    st.completed += 1;
                }
            }
        }
    }
}

/// A timerfd on CLOCK_MONOTONIC, armed at absolute times.
struct Timer(OwnedFd);

impl Timer {
    fn new() -> Res<Timer> {
        // SAFETY: timerfd_create takes no pointers; a non-negative result is a new fd that
        // nothing else owns.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(format!(
                "timerfd_create: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: `fd` is open and owned by nothing else (just made).
        Ok(Timer(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Expires once at `at_ns` (CLOCK_MONOTONIC); replaces any earlier setting.
    fn arm(&self, at_ns: u64) -> Res<()> {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (at_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (at_ns % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: timerfd_settime reads `spec` and writes nothing (old value: null).
        let rc = unsafe {
            libc::timerfd_settime(
                self.0.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc != 0 {
            return Err(format!(
                "timerfd_settime: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    /// Reads the expiry count, so the next expiry is a new edge (nothing to read: fine).
    fn clear(&self) {
        let mut count = [0u8; 8];
        // SAFETY: read writes at most 8 bytes into `count`.
        let _ = unsafe { libc::read(self.0.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_whole_and_split_at_every_byte() {
        let hit = b"VALUE key:42 0 5\r\nabcde\r\nEND\r\n";
        let cases: [(&[u8], Expect, Reply); 3] = [
            (hit, Expect::Get(42), Reply::Hit(hit.len())),
            (b"END\r\n", Expect::Get(42), Reply::Miss(5)),
            (b"STORED\r\n", Expect::Set, Reply::Stored(8)),
        ];
        for (bytes, expect, want) in cases {
            for cut in 0..bytes.len() {
                assert_eq!(parse_reply(&bytes[..cut], expect, 5), Ok(None), "{cut}");
            }
            assert_eq!(parse_reply(bytes, expect, 5), Ok(Some(want)));
            // The next reply's bytes after it are left alone.
            let mut two = bytes.to_vec();
            two.extend_from_slice(b"STORED\r\n");
            assert_eq!(parse_reply(&two, expect, 5), Ok(Some(want)));
        }
        // Data that looks like the end of the block is still data.
        let tricky = b"VALUE key:7 0 7\r\nEND\r\n\r\n\r\nEND\r\n";
        assert_eq!(
            parse_reply(tricky, Expect::Get(7), 7),
            Ok(Some(Reply::Hit(tricky.len())))
        );
    }

    #[test]
    fn replies_that_are_not_the_one_expected_are_errors() {
        let bad: [(&[u8], Expect); 9] = [
            (b"VALUE key:43 0 5\r\nabcde\r\nEND\r\n", Expect::Get(42)),
            (b"VALUE key:4 0 5\r\n", Expect::Get(42)),
            (b"VALUE key:42 0 6\r\nabcdef\r\nEND\r\n", Expect::Get(42)),
            (b"VALUE key:42 1 5\r\n", Expect::Get(42)),
            (b"VALUE key:42 0 5\r\nabcdeX", Expect::Get(42)),
            (b"VALUE key:42 0 5\r\nabcde\r\nSTORED\r\n", Expect::Get(42)),
            (b"ENDX", Expect::Get(42)),
            (b"SERVER_ERROR out of memory\r\n", Expect::Set),
            (b"END\r\n", Expect::Set),
        ];
        for (bytes, expect) in bad {
            assert!(
                parse_reply(bytes, expect, 5).is_err(),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        // An error is told as soon as a byte differs, not only once a line is whole.
        assert!(parse_reply(b"S", Expect::Get(1), 5).is_err());
        assert!(parse_reply(b"N", Expect::Set, 5).is_err());
    }

    #[test]
    fn the_poisson_schedule_has_the_rate_and_exponential_gaps() {
        let rate = 50_000.0;
        let start = 1_000_000_000;
        let mut p = Poisson::new(7, rate, start);
        let n = 200_000;
        let mut last = start;
        let mut gaps = Vec::with_capacity(n);
        for _ in 0..n {
            let t = p.next_ns();
            assert!(t >= last);
            gaps.push((t - last) as f64);
            last = t;
        }
        let mean = gaps.iter().sum::<f64>() / n as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / n as f64;
        // Exponential: mean 1/rate (20 µs), standard deviation equal to the mean.
        assert!((mean / 20_000.0 - 1.0).abs() < 0.01, "mean gap {mean} ns");
        assert!(
            (var.sqrt() / mean - 1.0).abs() < 0.02,
            "sd {} ns",
            var.sqrt()
        );
        // P(gap > mean) = 1/e.
        let over = gaps.iter().filter(|&&g| g > mean).count() as f64 / n as f64;
        assert!((over - (-1f64).exp()).abs() < 0.01, "{over}");
        // The same seed, the same schedule (both servers are offered the same arrivals).
        let (mut a, mut b) = (Poisson::new(9, rate, 0), Poisson::new(9, rate, 0));
        assert!((0..1000).all(|_| a.next_ns() == b.next_ns()));
    }

    /// A stand-in server on 127.0.0.1 for `conns` connections: every get misses, every set
    /// is stored; each connection's thread ends when the client closes it.
    fn fake_server(conns: usize) -> (u16, JoinHandle<()>) {
        use std::io::BufRead;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("port").port();
        let handle = std::thread::spawn(move || {
            let mut served = Vec::new();
            for _ in 0..conns {
                let (sock, _) = listener.accept().expect("accept");
                served.push(std::thread::spawn(move || {
                    let mut out = sock.try_clone().expect("clone");
                    let mut r = std::io::BufReader::new(sock);
                    let mut line = String::new();
                    while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                        let reply: &[u8] = if line.starts_with("get ") {
                            b"END\r\n"
                        } else {
                            let mut data = String::new();
                            let _ = r.read_line(&mut data);
                            b"STORED\r\n"
                        };
                        if out.write_all(reply).is_err() {
                            return;
                        }
                        line.clear();
                    }
                }));
            }
            for h in served {
                let _ = h.join();
            }
        });
        (port, handle)
    }

    #[test]
    fn the_client_sends_the_offered_rate_and_reads_every_reply() {
        let (conns, rate) = (4, 4_000.0);
        let (port, server) = fake_server(conns);
        let sweep = Sweep {
            keys: 1000,
            value_len: 100,
            get_pct: 90,
            levels: vec![50],
            level_duration: Duration::from_millis(500),
            capacity: Capacity::Given(2.0 * rate),
        };
        let clients =
            Clients::start(port, &sweep, conns, 2, Arc::new(value_pool())).expect("clients");
        let start = now_ns() + 2_000_000;
        let plan = LevelPlan {
            rate_per_thread: rate / 2.0,
            seed: 1,
            start,
            measure_from: start + 100_000_000,
            end: start + 500_000_000,
        };
        clients.begin(plan).expect("begin");
        let st = clients.finish(plan).expect("a clean run");
        drop(clients);
        server.join().expect("the stand-in server");
        // 0.4 s measured at 4,000/s: 1,600 arrivals expected (Poisson: sd 40).
        assert!((1_400..1_800).contains(&st.offered), "{}", st.offered);
        assert_eq!(st.latencies.len(), st.offered);
        assert_eq!(st.dropped, 0);
        assert!(st.misses > st.offered / 2, "gets of the stand-in all miss");
        let achieved = st.completed as f64 / st.offered as f64;
        assert!((0.9..1.1).contains(&achieved), "{achieved}");
        // On loopback with nothing else to do, replies take well under 10 ms at the median.
        assert!(st.latencies.quantile_us(0.5) < 10_000.0);
    }

    #[test]
    fn the_warmup_is_a_tenth_and_at_least_100_ms() {
        assert_eq!(warmup(Duration::from_secs(5)), Duration::from_millis(500));
        assert_eq!(
            warmup(Duration::from_millis(500)),
            Duration::from_millis(100)
        );
        assert_eq!(
            warmup(Duration::from_millis(100)),
            Duration::from_millis(50)
        );
    }
}
