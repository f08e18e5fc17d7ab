//! CPU accounting and scheduler figures from /proc, waiting for a quiet machine, the file
//! descriptor limit.

use std::collections::HashMap;
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

/// What the scheduler did with some threads, summed over them: from each thread's
/// `/proc/<pid>/task/<tid>/schedstat` (nanoseconds on a CPU, nanoseconds runnable but waiting
/// on a run queue, timeslices) and `status` (context switches).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sched {
    pub cpu_ns: u64,
    /// Runnable, not running: the time a thread waited for a CPU after its wakeup or
    /// preemption. Latency that no code path of the server's own explains.
    pub wait_ns: u64,
    pub timeslices: u64,
    /// Times a thread blocked (in epoll_wait, on a lock, ...) and so was woken later.
    pub voluntary: u64,
    /// Times a thread was preempted while it still had work.
    pub involuntary: u64,
}

impl Sched {
    fn minus(self, earlier: Sched) -> Sched {
        Sched {
            cpu_ns: self.cpu_ns.saturating_sub(earlier.cpu_ns),
            wait_ns: self.wait_ns.saturating_sub(earlier.wait_ns),
            timeslices: self.timeslices.saturating_sub(earlier.timeslices),
            voluntary: self.voluntary.saturating_sub(earlier.voluntary),
            involuntary: self.involuntary.saturating_sub(earlier.involuntary),
        }
    }

    fn plus(self, o: Sched) -> Sched {
        Sched {
            cpu_ns: self.cpu_ns + o.cpu_ns,
            wait_ns: self.wait_ns + o.wait_ns,
            timeslices: self.timeslices + o.timeslices,
            voluntary: self.voluntary + o.voluntary,
            involuntary: self.involuntary + o.involuntary,
        }
    }
}

/// [`Sched`] of every thread of a process at one moment, by thread id.
#[derive(Clone, Debug, Default)]
pub struct SchedSnapshot {
    threads: HashMap<u32, Sched>,
}

impl SchedSnapshot {
    /// The threads of process `pid`; "self" for this process.
    pub fn take(pid: &str) -> Res<SchedSnapshot> {
        let dir = format!("/proc/{pid}/task");
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("{dir}: {e}"))?;
        let mut threads = HashMap::new();
        for entry in entries {
            let entry = entry.map_err(|e| format!("{dir}: {e}"))?;
            let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            // A thread that ends between the listing and the reads is left out.
            if let Some(sched) = thread_sched(&format!("{dir}/{tid}"))? {
                threads.insert(tid, sched);
            }
        }
        Ok(SchedSnapshot { threads })
    }

    /// What the threads did since `earlier`, summed: a thread started since counts from
    /// zero; one that ended since is missing (its share is lost).
    pub fn since(&self, earlier: &SchedSnapshot) -> Sched {
        self.threads
            .iter()
            .map(|(tid, now)| now.minus(earlier.threads.get(tid).copied().unwrap_or_default()))
            .fold(Sched::default(), Sched::plus)
    }
}

/// One thread's [`Sched`] from its `/proc/<pid>/task/<tid>` directory; `None` if it is gone.
fn thread_sched(dir: &str) -> Res<Option<Sched>> {
    let read = |name: &str| match std::fs::read_to_string(format!("{dir}/{name}")) {
        Ok(s) => Ok(Some(s)),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::ESRCH) =>
        {
            Ok(None)
        }
        Err(e) => Err(format!("{dir}/{name}: {e}")),
    };
    let (Some(schedstat), Some(status)) = (read("schedstat")?, read("status")?) else {
        return Ok(None);
    };
    parse_sched(&schedstat, &status).map(Some).ok_or_else(|| {
        format!("{dir}: unparsable schedstat {schedstat:?} or context switches in status")
    })
}

/// [`Sched`] from the text of a thread's `schedstat` and `status` files.
fn parse_sched(schedstat: &str, status: &str) -> Option<Sched> {
    let mut f = schedstat.split_whitespace().map(|x| x.parse::<u64>().ok());
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim_start_matches(':').trim().parse::<u64>().ok())
    };
    Some(Sched {
        cpu_ns: f.next()??,
        wait_ns: f.next()??,
        timeslices: f.next()??,
        voluntary: field("voluntary_ctxt_switches")?,
        involuntary: field("nonvoluntary_ctxt_switches")?,
    })
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

/// Parses a CPU list as taskset and /sys print them: "1", "0-1", "0,2-3". Sorted, without
/// duplicates; at most CPU 1023 (`CPU_SETSIZE`).
pub fn parse_cpu_list(list: &str) -> Res<Vec<usize>> {
    let bad = || format!("not a CPU list (like 1, 0-1 or 0,2-3): {list}");
    let mut cpus = Vec::new();
    for part in list.split(',') {
        let num = |s: &str| s.trim().parse::<usize>().ok().filter(|&c| c < 1024);
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (num(a).ok_or_else(bad)?, num(b).ok_or_else(bad)?),
            None => {
                let c = num(part).ok_or_else(bad)?;
                (c, c)
            }
        };
        if lo > hi {
            return Err(bad());
        }
        cpus.extend(lo..=hi);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// A CPU list in its short form: consecutive CPUs as ranges ("0-1,3").
pub fn fmt_cpu_list(cpus: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

/// The kernel's CPU mask of a CPU list.
pub fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array, valid all zero; CPU_SET only sets a bit of
    // it, for CPUs under CPU_SETSIZE (parse_cpu_list checks).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        set
    }
}

/// The CPUs the calling thread may run on.
pub fn affinity() -> Res<Vec<usize>> {
    // SAFETY: sched_getaffinity writes at most size_of::<cpu_set_t>() bytes into `set`;
    // CPU_ISSET reads a bit of it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(format!(
                "sched_getaffinity: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok((0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect())
    }
}

/// Restricts the calling thread, and the threads and processes it starts from now on, to
/// `set`. Async-signal-safe (one system call): also for a child between fork and exec.
pub fn set_affinity(set: &libc::cpu_set_t) -> std::io::Result<()> {
    // SAFETY: sched_setaffinity reads size_of::<cpu_set_t>() bytes from `set`.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_and_print_like_tasksets() {
        assert_eq!(parse_cpu_list("1"), Ok(vec![1]));
        assert_eq!(parse_cpu_list("0-1"), Ok(vec![0, 1]));
        assert_eq!(parse_cpu_list("3,0-1,1"), Ok(vec![0, 1, 3]));
        for bad in ["", "a", "2-1", "1-", "1024", "0,,1"] {
            assert!(parse_cpu_list(bad).is_err(), "{bad}");
        }
        assert_eq!(fmt_cpu_list(&[0, 1, 3, 5, 6, 7]), "0-1,3,5-7");
        assert_eq!(fmt_cpu_list(&[2]), "2");
        let mine = affinity().expect("this thread's CPUs");
        assert!(!mine.is_empty());
        set_affinity(&cpu_set(&mine)).expect("the same CPUs again");
    }

    #[test]
    fn scheduler_figures_parse_and_sum_per_thread() {
        let status = "Name:\tx\nvoluntary_ctxt_switches:\t7\nnonvoluntary_ctxt_switches:\t2\n";
        let s = parse_sched("1000 250 9\n", status).expect("parses");
        assert_eq!(
            s,
            Sched {
                cpu_ns: 1000,
                wait_ns: 250,
                timeslices: 9,
                voluntary: 7,
                involuntary: 2
            }
        );
        assert_eq!(parse_sched("1000 x 9\n", status), None);
        let before = SchedSnapshot::take("self").expect("this process");
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(20) {
            std::hint::spin_loop();
        }
        let after = SchedSnapshot::take("self").expect("this process");
        assert!(
            after.since(&before).cpu_ns >= 10_000_000,
            "{:?}",
            after.since(&before)
        );
    }
}
