//! CPU accounting from /proc, waiting for a quiet machine, the file descriptor limit.

use std::time::{Duration, Instant};

use crate::Res;
use crate::server::Server;

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// utime + stime, in seconds, from a `/proc/<pid>/stat` file (all threads of the process).
pub fn process_cpu_seconds(path: &str) -> Res<f64> {
    let (user, system) = process_cpu_split(path)?;
    Ok(user + system)
}

/// (utime, stime), in seconds, from a `/proc/<pid>/stat` file (all threads of the process).
pub fn process_cpu_split(path: &str) -> Res<(f64, f64)> {
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
pub struct CpuSnapshot {
    pub at: Instant,
    pub machine: f64,
    pub bench: f64,
    pub server: f64,
}

impl CpuSnapshot {
    pub fn take(server: &Server) -> Res<CpuSnapshot> {
        Ok(CpuSnapshot {
            at: Instant::now(),
            machine: machine_busy_seconds()?,
            bench: process_cpu_seconds("/proc/self/stat")?,
            server: server.cpu_seconds()?,
        })
    }

    /// Cores' worth of CPU that processes other than this bench and its server used since
    /// `self`: another build or test run on the machine makes the figures unreliable.
    pub fn others_since(&self, later: &CpuSnapshot) -> f64 {
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
pub fn wait_quiet(max: Duration) {
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
pub const BUSY_OTHERS: f64 = 0.15;

/// Raises this process's soft RLIMIT_NOFILE (the servers inherit it) so that idle-5000 fits.
pub fn raise_fd_limit(want: u64) {
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
