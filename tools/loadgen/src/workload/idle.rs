//! Idle connections.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Better, Metric, metric};
use crate::Res;
use crate::server::Server;
use crate::wire::{Conn, IO_TIMEOUT, show, stat_u64};

pub async fn run_idle(server: &Server, n: usize) -> Res<Vec<Metric>> {
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
