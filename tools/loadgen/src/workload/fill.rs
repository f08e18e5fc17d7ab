//! Fill, and fill per value size.

use std::time::Instant;

use super::{Better, FILL_BATCH, Metric, Workload, metric, size_label};
use crate::Res;
use crate::machine::CpuSnapshot;
use crate::options::Opts;
use crate::rng::{KEY_CHARS, Rng, SEED, VALUE_CHARS};
use crate::server::{Server, Target};
use crate::wire::{Conn, push_set, show, stat_u64};

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

pub async fn run_fill(
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

pub fn run_fill_sizes(
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
        let mut server = Server::start(target, opts, wl.mem_mb, wl.threads, wl.extra, wl.tls)?;
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
