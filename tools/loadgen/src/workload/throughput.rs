//! Throughput: timed load from many connections, closed loop or paced.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::latency::Latencies;
use super::{Better, FILL_BATCH, Metric, Mode, metric, sched_metrics};
use crate::Res;
use crate::machine::SchedSnapshot;
use crate::options::Opts;
use crate::report::fmt_num;
use crate::rng::{Rng, SEED, VALUE_CHARS};
use crate::server::Server;
use crate::tls;
use crate::wire::{Conn, push_binary, push_set, show};

/// Upper bound on requests one client connection sends in one timed run.
const MAX_OPS_PER_CONN: u64 = 50_000_000;

pub(super) fn load_key(out: &mut Vec<u8>, i: u64) {
    out.extend_from_slice(b"key:");
    out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
}

/// Random printable bytes; values are slices of it at random offsets.
pub fn value_pool() -> Vec<u8> {
    let mut pool = Vec::with_capacity(1 << 20);
    Rng::new(SEED ^ 0x706f_6f6c).push_chars(&mut pool, 1 << 20, VALUE_CHARS);
    pool
}

pub(super) fn pick_value<'a>(rng: &mut Rng, pool: &'a [u8], len: usize) -> &'a [u8] {
    let off = rng.below((pool.len() - len) as u64) as usize;
    &pool[off..off + len]
}

pub async fn preload(server: &Server, keys: u64, value_len: usize, pool: &[u8]) -> Res<()> {
    let mut conn = server.connect().await?;
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
    pub latencies: Latencies,
    /// Keys asked for and not returned: every key is preloaded, so this should stay 0.
    pub misses: u64,
    /// [`Mode::Reconnect`]: connections opened and used, how many of their handshakes
    /// resumed a session, and nanoseconds from `connect` to the handshake's end for each.
    pub connections: u64,
    pub resumed: u64,
    pub handshakes: Latencies,
}

struct ClientParams {
    pub keys: u64,
    pub value_len: usize,
    pub mode: Mode,
    pub deadline: Instant,
    pub pool: Arc<Vec<u8>>,
    /// Where [`Mode::Reconnect`] connects, and how it starts TLS.
    pub port: u16,
    pub tls: Option<tls::Client>,
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
    let mut st = ClientStats::default();
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
            Mode::Reconnect { .. } => unreachable!("run by reconnect_client"),
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
            Mode::Reconnect { .. } => unreachable!("run by reconnect_client"),
        }
        st.latencies.record(t0.elapsed().as_nanos() as u64);
    }
    Ok(st)
}

/// [`Mode::Reconnect`]: opens a connection (and its TLS handshake), sends `per_conn`
/// requests one at a time, closes it, and again until the deadline. Latencies are per
/// request; the connect and handshake are timed apart.
async fn reconnect_client(id: usize, p: Arc<ClientParams>) -> Res<ClientStats> {
    let Mode::Reconnect { get_pct, per_conn } = p.mode else {
        unreachable!("only for Mode::Reconnect")
    };
    let mut rng = Rng::new(SEED ^ 0xc11e_0000 ^ id as u64);
    let mut st = ClientStats::default();
    let mut req = Vec::with_capacity(256);
    let mut key = Vec::with_capacity(32);
    let tls = p.tls.as_ref().map(tls::Client::own_sessions);
    while Instant::now() < p.deadline && st.requests < MAX_OPS_PER_CONN {
        let t0 = Instant::now();
        let mut conn = Conn::open(p.port, tls.as_ref()).await?;
        st.handshakes.record(t0.elapsed().as_nanos() as u64);
        st.resumed += u64::from(conn.resumed());
        for _ in 0..per_conn {
            req.clear();
            key.clear();
            load_key(&mut key, rng.below(p.keys));
            let is_get = rng.below(100) < get_pct;
            if is_get {
                req.extend_from_slice(b"get ");
                req.extend_from_slice(&key);
                req.extend_from_slice(b"\r\n");
            } else {
                push_set(&mut req, &key, pick_value(&mut rng, &p.pool, p.value_len));
            }
            let t1 = Instant::now();
            conn.send(&req).await?;
            if is_get {
                let hits = conn
                    .values(1, |got, data| {
                        if got != key.as_slice() || data.len() != p.value_len {
                            return Err(format!(
                                "get {}: got VALUE {} with {} bytes",
                                show(&key),
                                show(got),
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
            st.latencies.record(t1.elapsed().as_nanos() as u64);
            st.requests += 1;
        }
        conn.close().await?;
        st.connections += 1;
    }
    Ok(st)
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
    preload(server, keys, value_len, &pool).await?;
    let reconnect = matches!(mode, Mode::Reconnect { .. });
    // Reconnect: each client task opens its own connections as it goes.
    let mut conns = Vec::with_capacity(opts.conns);
    for _ in 0..if reconnect { 0 } else { opts.conns } {
        conns.push(server.connect().await?);
    }
    let cpu0 = server.cpu_seconds()?;
    let user0 = server.user_cpu_seconds()?;
    let (sched0, own0) = (server.sched()?, SchedSnapshot::take("self")?);
    let t0 = Instant::now();
    let params = Arc::new(ClientParams {
        keys,
        value_len,
        mode,
        deadline: t0 + duration,
        pool,
        port: server.port,
        tls: server.tls.clone(),
    });
    let every = (rate > 0).then(|| Duration::from_secs_f64(opts.conns as f64 / rate as f64));
    let tasks: Vec<_> = if reconnect {
        (0..opts.conns)
            .map(|id| tokio::spawn(reconnect_client(id, params.clone())))
            .collect()
    } else {
        conns
            .into_iter()
            .enumerate()
            .map(|(id, conn)| {
                // Paced: the connections' schedules staggered evenly over one interval.
                let pace =
                    every.map(|every| (every, t0 + every.mul_f64(id as f64 / opts.conns as f64)));
                tokio::spawn(client(conn, id, params.clone(), pace))
            })
            .collect()
    };
    let mut total = ClientStats::default();
    let mut first_error = None;
    for (id, task) in tasks.into_iter().enumerate() {
        match task.await {
            Ok(Ok(st)) => {
                total.requests += st.requests;
                total.misses += st.misses;
                total.latencies.add(&st.latencies);
                total.connections += st.connections;
                total.resumed += st.resumed;
                total.handshakes.add(&st.handshakes);
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
    let sched = server.sched()?.since(&sched0);
    let own = SchedSnapshot::take("self")?.since(&own0);
    if let Some(e) = first_error {
        return Err(e);
    }
    let lat = &total.latencies;
    let per_request = |v: f64| {
        if total.requests > 0 {
            v * 1e6 / total.requests as f64
        } else {
            f64::NAN
        }
    };
    if let Mode::Reconnect { per_conn, .. } = mode {
        let hs = &total.handshakes;
        let per_conn_cpu = |v: f64| {
            if total.connections > 0 {
                v * 1e6 / total.connections as f64
            } else {
                f64::NAN
            }
        };
        let mut out = vec![
            metric(
                format!("connections/s ({per_conn} requests each)"),
                total.connections as f64 / secs,
                Better::Higher,
            ),
            metric("requests/s", total.requests as f64 / secs, Better::Higher),
            metric(
                "handshakes resumed (%)",
                if hs.len() == 0 {
                    f64::NAN
                } else {
                    total.resumed as f64 * 100.0 / hs.len() as f64
                },
                Better::Neither,
            ),
            metric(
                "p50 connect + handshake (us)",
                hs.quantile_us(0.50),
                Better::Lower,
            ),
            metric(
                "p99 connect + handshake (us)",
                hs.quantile_us(0.99),
                Better::Lower,
            ),
        ];
        out.extend(lat.metrics("per request"));
        out.extend([
            metric(
                "server CPU per connection (us)",
                per_conn_cpu(cpu),
                Better::Lower,
            ),
            metric(
                "  of it in user space (us)",
                per_conn_cpu(user),
                Better::Lower,
            ),
            metric(
                "server CPU per request (us)",
                per_request(cpu),
                Better::Lower,
            ),
            metric("server CPU (cores busy)", cpu / secs, Better::Neither),
        ]);
        out.extend(sched_metrics(sched, own, total.requests, "request"));
        out.push(metric(
            "get misses (want 0)",
            total.misses as f64,
            Better::Lower,
        ));
        return Ok(out);
    }
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
        Mode::Reconnect { .. } => unreachable!("returned above"),
    };
    let mut out = vec![metric(
        rate_name,
        total.requests as f64 / secs,
        Better::Higher,
    )];
    out.extend(lat.metrics(&per));
    out.extend([
        metric(cpu_name, per_request(cpu), Better::Lower),
        metric(
            "  of it in user space (us)",
            per_request(user),
            Better::Lower,
        ),
        metric("server CPU (cores busy)", cpu / secs, Better::Neither),
    ]);
    let unit = match mode {
        Mode::Multiget { .. } => "multiget",
        _ => "request",
    };
    out.extend(sched_metrics(sched, own, total.requests, unit));
    out.push(metric(
        "get misses (want 0)",
        total.misses as f64,
        Better::Lower,
    ));
    Ok(out)
}
