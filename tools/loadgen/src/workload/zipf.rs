//! Zipf cache-aside.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use super::throughput::value_pool;
use super::{Better, Metric, metric};
use crate::Res;
use crate::options::Opts;
use crate::rng::{Rng, SEED, mix64};
use crate::server::Server;
use crate::wire::{Conn, push_set, show, stat_u64};

/// Zipf(theta) over ranks `0..n` (rank 0 the most popular): the exact CDF, sampled by binary
/// search (~21 steps for 2.2M keys).
pub struct Zipf {
    pub cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: u64, theta: f64) -> Zipf {
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

    pub fn sample(&self, rng: &mut Rng) -> u64 {
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
pub struct ZipfRun {
    pub keys: u64,
    pub theta: f64,
    pub value_len: (usize, usize),
    pub warmup: u64,
    pub measured: u64,
}

#[derive(Default, Clone, Copy)]
struct ZipfStats {
    pub gets: u64,
    pub hits: u64,
    pub sets: u64,
    /// Hits whose value is not the key's value (want 0).
    pub wrong: u64,
}

struct ZipfShared {
    pub zipf: Zipf,
    pub run: ZipfRun,
    pub pool: Vec<u8>,
    /// Every client and the driver meet here between warm-up and the measured phase.
    pub barrier: tokio::sync::Barrier,
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

pub async fn run_zipf(server: &Server, opts: &Opts, run: ZipfRun) -> Res<Vec<Metric>> {
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
