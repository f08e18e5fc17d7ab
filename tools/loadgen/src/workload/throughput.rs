//! Throughput: timed load from many connections, closed loop or paced.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Better, FILL_BATCH, Metric, Mode, metric};
use crate::Res;
use crate::options::Opts;
use crate::report::fmt_num;
use crate::rng::{Rng, SEED, VALUE_CHARS};
use crate::server::Server;
use crate::wire::{Conn, push_binary, push_set, show};

/// Upper bound on requests one client connection sends in one timed run.
const MAX_OPS_PER_CONN: u64 = 50_000_000;

fn load_key(out: &mut Vec<u8>, i: u64) {
    out.extend_from_slice(b"key:");
    out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
}

/// Random printable bytes; values are slices of it at random offsets.
pub fn value_pool() -> Vec<u8> {
    let mut pool = Vec::with_capacity(1 << 20);
    Rng::new(SEED ^ 0x706f_6f6c).push_chars(&mut pool, 1 << 20, VALUE_CHARS);
    pool
}

fn pick_value<'a>(rng: &mut Rng, pool: &'a [u8], len: usize) -> &'a [u8] {
    let off = rng.below((pool.len() - len) as u64) as usize;
    &pool[off..off + len]
}

pub async fn preload(port: u16, keys: u64, value_len: usize, pool: &[u8]) -> Res<()> {
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
    pub requests: u64,
    /// Nanoseconds per request (depth 1) or per batch (pipelined).
    pub latencies: Vec<u64>,
    /// Keys asked for and not returned: every key is preloaded, so this should stay 0.
    pub misses: u64,
}

struct ClientParams {
    pub keys: u64,
    pub value_len: usize,
    pub mode: Mode,
    pub deadline: Instant,
    pub pool: Arc<Vec<u8>>,
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
            Mode::Binary { get_pct, depth } => {
                let quiet = depth > 1;
                for _ in 0..depth {
                    let ks = keys.len();
                    load_key(&mut keys, rng.below(p.keys));
                    let is_get = rng.below(100) < get_pct;
                    if is_get {
                        let op = if quiet { 0x0d } else { 0x00 }; // GetKQ, Get
                        push_binary(&mut req, op, &[], &keys[ks..], &[]);
                    } else {
                        let value = pick_value(&mut rng, &p.pool, value_len);
                        let op = if quiet { 0x11 } else { 0x01 }; // SetQ, Set
                        push_binary(&mut req, op, &[0; 8], &keys[ks..], value);
                    }
                    want.push((is_get, ks, keys.len()));
                }
                if quiet {
                    push_binary(&mut req, 0x0a, &[], &[], &[]); // NoOp
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
            Mode::Binary { depth, .. } => {
                let gets = want.iter().filter(|w| w.0).count() as u64;
                let mut hits = 0;
                loop {
                    let pk = conn.packet().await?;
                    if pk.status != 0 {
                        return Err(format!(
                            "binary opcode {:#x}: status {:#x}",
                            pk.opcode, pk.status
                        ));
                    }
                    match pk.opcode {
                        0x0a => break,
                        0x00 | 0x0d => {
                            if pk.value_len() != value_len {
                                return Err(format!("binary get: {} bytes", pk.value_len()));
                            }
                            hits += 1;
                        }
                        0x01 => {}
                        op => return Err(format!("unexpected binary opcode {op:#x}")),
                    }
                    if depth == 1 {
                        break;
                    }
                }
                st.misses += gets - hits;
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
pub struct ThroughputRun {
    pub keys: u64,
    pub value_len: usize,
    pub mode: Mode,
    pub rate: u64,
    pub duration: Duration,
}

pub async fn run_throughput(server: &Server, opts: &Opts, run: ThroughputRun) -> Res<Vec<Metric>> {
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
        Mode::Binary { depth: 1, .. } => (
            "requests/s".to_string(),
            "per request".to_string(),
            "server CPU per request (us)".to_string(),
        ),
        Mode::Binary { depth, .. } => (
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
