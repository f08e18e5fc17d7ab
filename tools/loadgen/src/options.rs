//! Command-line options.

use std::path::PathBuf;
use std::time::Duration;

use crate::Res;
use crate::machine::{affinity, fmt_cpu_list, parse_cpu_list};
use crate::tls::Key;

#[derive(Clone, Debug)]
pub struct Opts {
    pub quick: bool,
    pub rounds: usize,
    pub duration: Duration,
    pub conns: usize,
    /// Server `-t` for the throughput workloads.
    pub threads: usize,
    /// Server `-t` for the fill workloads.
    pub fill_threads: usize,
    /// Server `-m` for every workload.
    pub mem_mb: usize,
    /// Offered load of get-set-rate, requests/s in all (`--rate`); 0: half of the slower
    /// server's closed-loop get-set rate in this run, else [`crate::workload::PACED_RATE`].
    pub rate: u64,
    /// Divides both `-m` and the number of items for the fill workloads (the quick run uses
    /// 4: `-m 16` and a quarter of the items, so the cache still overflows as many times).
    pub fill_divisor: usize,
    /// Multiplies the number of items the fill workloads write (`--items-scale`).
    pub items_scale: f64,
    pub only: Vec<String>,
    /// Before each run, wait up to this long for other processes to go quiet.
    pub wait_quiet: Option<Duration>,
    /// `MEMCRAB_BIN`; without it, the workspace's release build (see [`Opts::build_memcrab`]).
    pub memcrab_bin: PathBuf,
    /// No `MEMCRAB_BIN`: build the workspace's memcrab first and run that
    /// ([`crate::server::build_memcrab`]).
    pub build_memcrab: bool,
    pub memcached_bin: PathBuf,
    /// Run memcrab with its metrics endpoint on, scraped every second (`--metrics`).
    pub metrics: bool,
    /// Write the SVG charts to [`crate::charts::CHART_DIR`] (full runs of every workload only).
    pub charts: bool,
    /// `--charts`: write them even with `--quick` or `--only`.
    pub force_charts: bool,
    /// The TLS workloads' server certificate key (`--tls-key`).
    pub tls_key: Key,
    /// `--client-cpus`: the CPUs of this process (all its threads: the client's); `None`: not
    /// pinned.
    pub client_cpus: Option<Vec<usize>>,
    /// `--server-cpus`: the CPUs of the servers; `None`: not pinned (the CPUs this process
    /// started with, also when the client is pinned).
    pub server_cpus: Option<Vec<usize>>,
    /// The CPUs this process could use when it started.
    pub startup_cpus: Vec<usize>,
    /// Threads of the open-loop client (`--client-threads`).
    pub client_threads: usize,
    /// `--capacity`: memcached's requests/s for get-set-open when get-set did not run.
    pub capacity: Option<u64>,
}

const USAGE: &str = "\
usage: cargo run --release -p memcrab-loadgen -- [options]
  --quick            smoke run (~40 s): 1 round, 1 s runs; fills at a quarter of -m and items;
                     get-set-open at 10%, 50% and 90% only, 0.5 s each
  --rounds N         runs per server per workload, alternating memcrab/memcached (default 3)
  --duration SECS    length of each throughput run, and of each offered load of get-set-open
                     (default 5)
  --conns N          client connections of the throughput workloads and get-set-open (default 50)
  --threads N        server -t for the throughput workloads (default 2)
  --fill-threads N   server -t for the fill workloads (default 4)
  --mem MB           server -m for every workload (default 64)
  --rate N           requests/s offered in all by get-set-rate (default: half of the slower
                     server's get-set rate in this run, or 25000 when get-set did not run)
  --capacity N       100% of get-set-open's offered loads, in requests/s, when get-set did not
                     run before it (default: memcached's median get-set rate in this run, else
                     a 2 s closed-loop get-set run against memcached before the sweep)
  --client-threads N threads of get-set-open's open-loop client (default 2)
  --only A,B         run only the named workloads (see the list below)
  --items-scale F    multiply the items the fill workloads write by F (default 1, at most 4)
  --wait-quiet SECS  before each run, wait up to SECS for other processes to use < 0.1 core
  --metrics          run memcrab with --metrics-port (latency timing on) and scrape it every 1 s
  --no-charts        do not write the SVG charts (written to docs/bench/ on full runs without
                     --quick and --only)
  --charts           write them anyway (also with --quick or --only)
  --tls-key K        the TLS workloads' server key: rsa (RSA-2048, default) or ecdsa (P-256)
  --client-cpus L    pin the load generator (every thread of it) to the CPUs in list L, as
                     taskset writes them: 1, 0-1, 0,2-3 (default: not pinned)
  --server-cpus L    pin the servers (every thread) to the CPUs in L (default: not pinned)
env: MEMCRAB_BIN (default: the workspace's target/release/memcrab, built first with
     cargo build --release --bin memcrab), MEMCACHED_BIN (default /usr/bin/memcached)";

pub fn parse_args(args: &[String]) -> Res<Opts> {
    let mut opts = Opts {
        quick: false,
        rounds: 3,
        duration: Duration::from_secs(5),
        conns: 50,
        threads: 2,
        fill_threads: 4,
        mem_mb: 64,
        rate: 0,
        fill_divisor: 1,
        items_scale: 1.0,
        only: Vec::new(),
        wait_quiet: None,
        memcrab_bin: std::env::var_os("MEMCRAB_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target/release/memcrab")),
        build_memcrab: std::env::var_os("MEMCRAB_BIN").is_none(),
        memcached_bin: std::env::var_os("MEMCACHED_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/memcached")),
        metrics: false,
        charts: true,
        force_charts: false,
        tls_key: Key::Rsa2048,
        client_cpus: None,
        server_cpus: None,
        startup_cpus: affinity()?,
        client_threads: 2,
        capacity: None,
    };
    // First pass: --quick sets defaults that explicit flags then override.
    if args.iter().any(|a| a == "--quick") {
        opts.quick = true;
        opts.rounds = 1;
        opts.duration = Duration::from_secs(1);
        opts.fill_divisor = 4;
        opts.charts = false;
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
            "--quick" => {}
            "--metrics" => opts.metrics = true,
            "--no-charts" => opts.charts = false,
            "--charts" => opts.force_charts = true,
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
            "--rate" => opts.rate = num(arg, value(arg)?)?.max(1) as u64,
            "--capacity" => opts.capacity = Some(num(arg, value(arg)?)? as u64),
            "--client-threads" => opts.client_threads = num(arg, value(arg)?)?.min(64),
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
            "--tls-key" => {
                let v = value(arg)?;
                opts.tls_key =
                    Key::parse(&v).ok_or_else(|| format!("--tls-key: rsa or ecdsa, not {v}"))?;
            }
            "--client-cpus" | "--server-cpus" => {
                let cpus = parse_cpu_list(&value(arg)?).map_err(|e| format!("{arg}: {e}"))?;
                if let Some(c) = cpus.iter().find(|c| !opts.startup_cpus.contains(c)) {
                    return Err(format!(
                        "{arg}: CPU {c} is not one this process may use ({})",
                        fmt_cpu_list(&opts.startup_cpus)
                    ));
                }
                if arg == "--client-cpus" {
                    opts.client_cpus = Some(cpus);
                } else {
                    opts.server_cpus = Some(cpus);
                }
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Res<Opts> {
        parse_args(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn cpu_placement_is_off_by_default_and_checked_against_this_machine() {
        let opts = parse(&[]).expect("defaults");
        assert_eq!((opts.client_cpus, opts.server_cpus), (None, None));
        let first = opts.startup_cpus[0].to_string();
        let pinned = parse(&["--client-cpus", &first, "--server-cpus", &first]).expect("valid");
        assert_eq!(pinned.client_cpus, Some(vec![opts.startup_cpus[0]]));
        assert_eq!(pinned.server_cpus, Some(vec![opts.startup_cpus[0]]));
        assert!(parse(&["--server-cpus", "1023"]).is_err());
        assert!(parse(&["--client-cpus", "x"]).is_err());
    }
}
