//! memcached's command line, in two stages: clap parses the raw flags into [`Cli`] (the same
//! short and long names as memcached 1.6), then [`Cli::validate`] checks them the way
//! memcached does, with its messages, and builds the [`Config`] the rest of the server reads.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{ArgAction, Parser};

use crate::auth::Passwords;
use crate::storage::StoreConfig;
use crate::tls::{self, Tls};

/// Raw flags, named and defaulted as memcached names and defaults them.
///
/// A flag given twice takes its last value, as memcached's getopt loop does (`-m 64 -m 128`
/// is `-m 128`): Bitnami's run.sh puts the chart's variables first and the container's
/// arguments after them, so the arguments win. `-l`, `-o` and `-v` still accumulate.
#[derive(Debug, Parser)]
#[command(
    name = "memcrab",
    disable_help_flag = true,
    disable_version_flag = true,
    args_override_self = true,
    about = "memcrab: a memcached-compatible cache server"
)]
pub struct Cli {
    /// TCP port to listen on (0 = off)
    #[arg(
        short = 'p',
        long = "port",
        default_value_t = 11211,
        allow_negative_numbers = true,
        value_parser = trimmed::<i32>
    )]
    pub port: i32,
    /// UDP port; only 0 (off) is supported
    #[arg(short = 'U', long = "udp-port", default_value_t = 0, value_parser = trimmed::<u32>)]
    pub udp_port: u32,
    /// UNIX socket to listen on (disables TCP)
    #[arg(short = 's', long = "unix-socket")]
    pub unix_socket: Option<PathBuf>,
    /// Access mask for the UNIX socket, in octal
    #[arg(short = 'a', long = "unix-mask", default_value = "700")]
    pub unix_mask: String,
    /// Enable the ascii "shutdown" command
    #[arg(short = 'A', long = "enable-shutdown")]
    pub enable_shutdown: bool,
    /// Interfaces to listen on (comma-separated or repeated); default all
    #[arg(short = 'l', long = "listen")]
    pub listen: Vec<String>,
    /// Accepted for compatibility; memcrab always runs in the foreground
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,
    /// Accepted for compatibility
    #[arg(short = 'r', long = "enable-coredumps")]
    pub coredumps: bool,
    /// User to run as when started as root
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,
    /// Item memory in megabytes
    #[arg(short = 'm', long = "memory-limit", default_value = "64")]
    pub memory_limit: String,
    /// Return an error on memory exhausted instead of evicting
    #[arg(short = 'M', long = "disable-evictions")]
    pub disable_evictions: bool,
    /// Max simultaneous connections
    #[arg(short = 'c', long = "conn-limit", default_value_t = 1024, value_parser = trimmed::<i64>)]
    pub conn_limit: i64,
    /// Accepted for compatibility
    #[arg(short = 'k', long = "lock-memory")]
    pub lock_memory: bool,
    /// Verbose (-v), very verbose (-vv)
    #[arg(short = 'v', long = "verbose", action = ArgAction::Count)]
    pub verbose: u8,
    /// Print this help and exit
    #[arg(short = 'h', long = "help")]
    pub help: bool,
    /// Print the licence and exit
    #[arg(short = 'i', long = "license")]
    pub license: bool,
    /// Print the version and exit
    #[arg(short = 'V', long = "version")]
    pub version: bool,
    /// Save the process id in this file
    #[arg(short = 'P', long = "pidfile")]
    pub pidfile: Option<PathBuf>,
    /// Chunk size growth factor
    #[arg(short = 'f', long = "slab-growth-factor", default_value_t = 1.25, value_parser = trimmed::<f64>)]
    pub factor: f64,
    /// Minimum space for key, value and flags
    #[arg(short = 'n', long = "slab-min-size", default_value_t = 48, value_parser = trimmed::<i64>)]
    pub min_size: i64,
    /// Accepted for compatibility
    #[arg(short = 'L', long = "enable-largepages")]
    pub largepages: bool,
    /// Delimiter between key prefix and id in `stats detail`
    #[arg(short = 'D')]
    pub prefix_delimiter: Option<char>,
    /// Worker threads
    #[arg(short = 't', long = "threads", default_value_t = 4, value_parser = trimmed::<i64>)]
    pub threads: i64,
    /// Requests per connection before yielding to others
    #[arg(short = 'R', long = "max-reqs-per-event", default_value_t = 20, value_parser = trimmed::<i64>)]
    pub reqs_per_event: i64,
    /// Disable CAS
    #[arg(short = 'C', long = "disable-cas")]
    pub disable_cas: bool,
    /// Backlog queue limit
    #[arg(short = 'b', long = "listen-backlog", default_value_t = 1024, value_parser = trimmed::<i32>)]
    pub backlog: i32,
    /// Protocol: auto, ascii or binary
    #[arg(short = 'B', long = "protocol")]
    pub protocol: Option<String>,
    /// Max item size (k and m suffixes), at least 1k
    #[arg(short = 'I', long = "max-item-size", default_value = "1m")]
    pub max_item_size: String,
    /// SASL authentication (PLAIN, users in $MEMCACHED_SASL_PWDB); binary protocol only
    #[arg(short = 'S', long = "enable-sasl")]
    pub sasl: bool,
    /// Disable flush_all
    #[arg(short = 'F', long = "disable-flush-all")]
    pub disable_flush_all: bool,
    /// Disable stats cachedump and lru_crawler metadump
    #[arg(short = 'X', long = "disable-dumping")]
    pub disable_dumping: bool,
    /// Disable watch commands
    #[arg(short = 'W', long = "disable-watch")]
    pub disable_watch: bool,
    /// ASCII authentication: a file of user:password lines; text protocol only
    #[arg(short = 'Y', long = "auth-file")]
    pub auth_file: Option<PathBuf>,
    /// Warm restarts: save the cache to this file on a graceful stop (SIGTERM, SIGINT,
    /// SIGUSR1, `shutdown graceful`) and restore it at start-up
    #[arg(short = 'e', long = "memory-file")]
    pub memory_file: Option<PathBuf>,
    /// TLS on every listener but those named `notls:` (certificates: -o ssl_chain_cert, ssl_key)
    #[arg(short = 'Z', long = "enable-ssl")]
    pub ssl: bool,
    /// NAPI ids (accepted for compatibility)
    #[arg(short = 'N', long = "napi_ids")]
    pub napi_ids: Option<u32>,
    /// Extended options, comma-separated (repeatable)
    #[arg(short = 'o', long = "extended")]
    pub extended: Vec<String>,
    /// Port for Prometheus metrics and health checks (/metrics, /healthz, /readyz); 0 = off
    #[arg(
        long = "metrics-port",
        env = "MEMCRAB_METRICS_PORT",
        default_value_t = 0,
        value_parser = metrics_port
    )]
    pub metrics_port: u16,
}

/// A number with surrounding spaces allowed: charts pass `"-c 16384"` as one argument, and
/// memcached's `atoi`-style parsing accepts the space.
fn trimmed<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.trim().parse().map_err(|_| format!("not a number: {s:?}"))
}

/// `--metrics-port`, also read from `MEMCRAB_METRICS_PORT`. Kubernetes' service links set
/// `<SERVICE>_PORT=tcp://ip:port` for every Service in the namespace, so a Service named
/// `memcrab-metrics` would set this variable: such a value is ignored (metrics off).
fn metrics_port(s: &str) -> Result<u16, String> {
    if s.starts_with("tcp://") || s.starts_with("udp://") {
        return Ok(0);
    }
    trimmed(s)
}

/// `-B`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    Auto,
    Ascii,
    Binary,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `-e`: where the cache is saved at a graceful stop and restored from at start-up.
    pub memory_file: Option<PathBuf>,
    /// TCP port; 0 = no TCP listener unless `random_port`.
    pub port: u16,
    /// `-p -1`: let the OS pick the port (written to `$MEMCACHED_PORT_FILENAME`).
    pub random_port: bool,
    pub listen: Vec<String>,
    pub unix_socket: Option<PathBuf>,
    pub unix_mask: u32,
    pub user: Option<String>,
    pub max_conns: usize,
    pub threads: usize,
    pub verbosity: u8,
    pub reqs_per_event: usize,
    pub backlog: i32,
    pub protocol: Binding,
    pub shutdown_enabled: bool,
    pub flush_enabled: bool,
    pub dump_enabled: bool,
    pub stat_key_prefix: char,
    /// `-D` also turns `stats detail` on from the start.
    pub detail_enabled: bool,
    pub pidfile: Option<PathBuf>,
    /// `-o idle_timeout`, seconds; 0 = never.
    pub idle_timeout: u64,
    pub maxconns_fast: bool,
    pub hashpower: u32,
    pub lru_crawler: bool,
    pub lru_crawler_sleep: u64,
    pub lru_crawler_tocrawl: u64,
    pub track_sizes: bool,
    /// `--metrics-port`: the HTTP metrics and health endpoint; 0 = off.
    pub metrics_port: u16,
    /// `-o read_buf_mem_limit=MB`: bytes all connections' buffers may hold beyond their small
    /// floors (read buffers grown for a long line or a value in flight, replies waiting for
    /// the socket). `None`: the default, [`Config::buffer_limit`]; `Some(0)`: unlimited, as
    /// memcached's 0 means.
    pub read_buf_mem_limit: Option<usize>,
    /// `-S`: SASL over the binary protocol, checked against this password database
    /// (`$MEMCACHED_SASL_PWDB`, read at every attempt).
    pub sasl_pwdb: Option<PathBuf>,
    /// `-Y`: ASCII authentication, the file's path and its entries (read at start-up).
    pub ascii_auth: Option<(PathBuf, Arc<Passwords>)>,
    /// The `-o ssl_*` options, as given (`stats settings` prints them with or without `-Z`).
    pub tls_settings: tls::Settings,
    /// `-Z`: the loaded certificates and the handshake configuration.
    pub tls: Option<Arc<Tls>>,
    pub store: StoreConfig,
}

impl Default for Config {
    fn default() -> Self {
        Cli::parse_from(["memcrab"])
            .validate()
            .expect("defaults are valid")
    }
}

impl Config {
    /// The server-wide cap on connection buffers, in bytes (`usize::MAX`: none). Without
    /// `-o read_buf_mem_limit` it is the largest of 32 MiB, an eighth of `-m` and four
    /// items of `-I`, so a big value can always be read and a few huge replies streamed.
    pub fn buffer_limit(&self) -> usize {
        match self.read_buf_mem_limit {
            Some(0) => usize::MAX,
            Some(bytes) => bytes,
            None => (32 << 20)
                .max(self.store.limit_bytes / 8)
                .max(self.store.item_size_max.saturating_mul(4)),
        }
    }

    /// The listeners of `-l`: the address, and whether it speaks TLS (with `-Z`, all but
    /// those with memcached's `notls:` prefix).
    pub fn listen_specs(&self) -> Vec<(&str, bool)> {
        self.listen
            .iter()
            .map(|spec| match spec.strip_prefix(NOTLS) {
                Some(addr) => (addr, false),
                None => (spec.as_str(), self.tls.is_some()),
            })
            .collect()
    }

    /// The `inter` setting as memcached shows it.
    pub fn listen_display(&self) -> String {
        if self.listen.is_empty() {
            "NULL".to_string()
        } else {
            self.listen.join(",")
        }
    }
}

/// What `main` should do with the command line.
#[derive(Debug)]
pub enum Action {
    Run(Box<Config>),
    /// Print this to stdout and exit 0 (`-h`, `-V`, `-i`).
    Print(String),
}

/// A start-up error: the message memcached prints, and exit status 1.
#[derive(Debug)]
pub struct ConfigError(pub String);

/// memcached's refusals of a `-B` its authentication cannot work in (exit status 64).
const SASL_NEEDS_BINARY: &str = "ERROR: You cannot allow the ASCII protocol while using SASL.";
const ASCII_AUTH_NEEDS_ASCII: &str =
    "ERROR: You cannot allow the BINARY protocol while using ascii authentication tokens.";

/// memcached's `-l` prefix for a plaintext listener beside TLS ones.
const NOTLS: &str = "notls:";
/// memcached's refusal of `-Z` without a TCP port (exit status 64).
const TLS_NEEDS_TCP: &str = "ERROR: You cannot enable SSL without a TCP port.";
/// The start of memcached's TLS set-up errors (`ssl_init`), which exit with status 64.
const TLS_INIT_ERRORS: &[&str] = &[
    "Error loading the",
    "Error validating the certificate",
    "Error setting the",
    "Kernel TLS offload",
    "ERROR: ssl_verify_mode",
];

impl ConfigError {
    /// The exit status memcached gives for this error: 64 (EX_USAGE) for the protocol
    /// refusals above and TLS set-up errors, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        if self.0 == SASL_NEEDS_BINARY
            || self.0 == ASCII_AUTH_NEEDS_ASCII
            || self.0 == TLS_NEEDS_TCP
            || TLS_INIT_ERRORS.iter().any(|p| self.0.starts_with(p))
        {
            64
        } else {
            1
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// Parses `64`, `64m`, `5m`, `512k`, `1g` into bytes; a bare number is in `unit` bytes.
fn parse_size(s: &str, unit: u64) -> Option<u64> {
    let s = s.trim();
    let (digits, mult) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 1 << 10),
        (i, 'm' | 'M') => (&s[..i], 1 << 20),
        (i, 'g' | 'G') => (&s[..i], 1 << 30),
        _ => (s, unit),
    };
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

/// Extended options memcached accepts that have no effect here.
const ACCEPTED_EXTENDED: &[&str] = &[
    "modern",
    "no_modern",
    "no_hashexpand",
    "hash_algorithm",
    "slab_reassign",
    "no_slab_reassign",
    "slab_automove",
    "no_slab_automove",
    "slab_automove_ratio",
    "slab_automove_window",
    "slab_automove_freeratio",
    "slab_sizes",
    "no_chunked_items",
    "tail_repair_time",
    "lru_maintainer",
    "no_lru_maintainer",
    "hot_lru_pct",
    "warm_lru_pct",
    "hot_max_factor",
    "warm_max_factor",
    "temporary_ttl",
    "watcher_logbuf_size",
    "worker_logbuf_size",
    "resp_obj_mem_limit",
    "inline_ascii_resp",
    "no_inline_ascii_resp",
    "drop_privileges",
    "no_drop_privileges",
    "sock_cookie_id",
    "ext_path",
    "ext_page_size",
    "ext_wbuf_size",
    "ext_threads",
    "ext_io_depth",
    "ext_item_size",
    "ext_item_age",
    "ext_low_ttl",
    "ext_recache_rate",
    "ext_compact_under",
    "ext_drop_under",
    "ext_max_frag",
    "ext_max_sleep",
    "ext_drop_unread",
    "proxy_config",
    "proxy_arg",
    "proxy_uring",
    "proxy_memprofile",
];

fn number<T: std::str::FromStr>(name: &str, value: Option<&str>) -> Result<T, ConfigError> {
    value
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| ConfigError(format!("Invalid value for {name}")))
}

impl Cli {
    /// Parses the command line; `Err` carries the message and means exit status 1.
    pub fn parse_args<I, T>(args: I) -> Result<Action, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cli = match Cli::try_parse_from(args) {
            Ok(cli) => cli,
            Err(e) => {
                use clap::error::{ContextKind, ErrorKind};
                if e.kind() == ErrorKind::UnknownArgument {
                    let arg = e
                        .get(ContextKind::InvalidArg)
                        .map(|a| a.to_string())
                        .unwrap_or_default();
                    return err(format!(
                        "memcrab: invalid option -- '{}'\nIllegal argument \"?\"",
                        arg.trim_start_matches('-')
                    ));
                }
                return err(e.to_string().trim_end().to_string());
            }
        };
        if cli.help {
            return Ok(Action::Print(help_text()));
        }
        if cli.version {
            return Ok(Action::Print(format!(
                "memcrab {} (memcached {} compatible)\n",
                env!("CARGO_PKG_VERSION"),
                crate::protocol::VERSION
            )));
        }
        if cli.license {
            return Ok(Action::Print(
                "memcrab is distributed under the BSD 3-clause licence.\n".to_string(),
            ));
        }
        cli.validate().map(|c| Action::Run(Box::new(c)))
    }

    /// memcached's checks, in its order and with its messages.
    pub fn validate(self) -> Result<Config, ConfigError> {
        if self.conn_limit <= 0 {
            return err("Maximum connections must be greater than 0");
        }
        if self.threads <= 0 {
            return err("Number of threads must be greater than 0");
        }
        if self.reqs_per_event <= 0 {
            return err("Number of requests per event must be greater than 0");
        }
        if self.factor <= 1.0 {
            return err("Factor must be greater than 1");
        }
        if self.min_size <= 0 {
            return err("Chunk size must be greater than 0");
        }
        let protocol = match self.protocol.as_deref().unwrap_or("auto") {
            "auto" => Binding::Auto,
            "ascii" => Binding::Ascii,
            "binary" => Binding::Binary,
            other => {
                return err(format!(
                    "Invalid value for binding protocol: {other}\n -- should be one of auto, binary, or ascii"
                ));
            }
        };
        // memcached speaks only the protocol its authentication works in, and refuses a
        // -B that asks for another; with both, -Y wins.
        let sasl = self.sasl && self.auth_file.is_none();
        let protocol = if sasl {
            if self.protocol.is_some() && protocol != Binding::Binary {
                return err(SASL_NEEDS_BINARY);
            }
            Binding::Binary
        } else if self.auth_file.is_some() {
            if self.protocol.is_some() && protocol != Binding::Ascii {
                return err(ASCII_AUTH_NEEDS_ASCII);
            }
            Binding::Ascii
        } else {
            protocol
        };
        let sasl_pwdb = if sasl {
            match std::env::var_os("MEMCACHED_SASL_PWDB") {
                Some(path) => Some(PathBuf::from(path)),
                None => {
                    return err(
                        "SASL (-S) needs MEMCACHED_SASL_PWDB: memcrab checks SASL PLAIN against \
                         memcached's password database (user@realm:password lines), not a sasldb",
                    );
                }
            }
        } else {
            None
        };
        let ascii_auth = match &self.auth_file {
            None => None,
            Some(path) => {
                let text = std::fs::read(path).map_err(|e| {
                    let why = e.to_string();
                    let why = why.split(" (os error").next().unwrap_or(&why).to_string();
                    ConfigError(format!(
                        "Could not open authfile [{}] for reading, error {why}: {why}",
                        path.display()
                    ))
                })?;
                let entries = Passwords::auth_file(&text).ok_or_else(|| {
                    ConfigError(format!(
                        "Authfile [{}] has a malformed entry. Should be 'user:password'",
                        path.display()
                    ))
                })?;
                Some((path.clone(), Arc::new(entries)))
            }
        };
        if self.udp_port != 0 {
            return err(
                "UDP is not supported by memcrab: use -U 0 (the memcached 1.6 default) or leave -U out",
            );
        }
        let random_port = self.port == -1;
        let port = match self.port {
            -1 => 0,
            p if (0..=65535).contains(&p) => p as u16,
            p => return err(format!("Invalid port: {p}")),
        };
        let unix_mask = u32::from_str_radix(&self.unix_mask, 8)
            .map_err(|_| ConfigError(format!("Invalid unix mask: {}", self.unix_mask)))?;
        let limit_bytes = match parse_size(&self.memory_limit, 1 << 20) {
            Some(0) | None => 64 << 20,
            Some(b) => b,
        } as usize;
        let Some(item_size_max) = parse_size(&self.max_item_size, 1) else {
            return err(format!("Invalid -I value: {}", self.max_item_size));
        };
        let item_size_max = item_size_max as usize;
        let mut config = Config {
            port,
            random_port,
            listen: self
                .listen
                .iter()
                .flat_map(|l| l.split(','))
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
            unix_socket: self.unix_socket,
            unix_mask,
            user: self.user,
            max_conns: self.conn_limit as usize,
            threads: self.threads as usize,
            verbosity: self.verbose,
            reqs_per_event: self.reqs_per_event as usize,
            backlog: self.backlog,
            protocol,
            shutdown_enabled: self.enable_shutdown,
            flush_enabled: !self.disable_flush_all,
            dump_enabled: !self.disable_dumping,
            stat_key_prefix: self.prefix_delimiter.unwrap_or(':'),
            detail_enabled: self.prefix_delimiter.is_some(),
            pidfile: self.pidfile,
            idle_timeout: 0,
            maxconns_fast: true,
            hashpower: 0,
            lru_crawler: true,
            lru_crawler_sleep: 100,
            lru_crawler_tocrawl: 0,
            track_sizes: false,
            metrics_port: self.metrics_port,
            sasl_pwdb,
            ascii_auth,
            memory_file: self.memory_file.clone(),
            read_buf_mem_limit: None,
            tls_settings: tls::Settings::default(),
            tls: None,
            store: StoreConfig {
                limit_bytes,
                threads: self.threads as usize,
                evictions: !self.disable_evictions,
                cas_enabled: !self.disable_cas,
                item_size_max,
                min_chunk: self.min_size as usize,
                growth_factor: self.factor,
                slab_chunk_max: 512 << 10,
            },
        };
        for opt in self.extended.iter().flat_map(|o| o.split(',')) {
            apply_extended(&mut config, opt)?;
        }
        check_notls(&config, self.ssl)?;
        let st = &config.store;
        if st.item_size_max < 1024 {
            return err("Item max size cannot be less than 1024 bytes.");
        }
        if st.item_size_max > st.limit_bytes / 2 {
            return err("Cannot set item size limit higher than 1/2 of memory max.");
        }
        if st.item_size_max > 1 << 30 {
            return err("Cannot set item size limit higher than a gigabyte.");
        }
        if st.slab_chunk_max > st.item_size_max {
            return err(format!(
                "slab_chunk_max (bytes: {}) cannot be larger than -I (item_size_max {})",
                st.slab_chunk_max, st.item_size_max
            ));
        }
        if !st.item_size_max.is_multiple_of(st.slab_chunk_max) {
            return err(format!(
                "-I (item_size_max: {}) must be evenly divisible by slab_chunk_max (bytes: {})",
                st.item_size_max, st.slab_chunk_max
            ));
        }
        if self.ssl {
            // memcached's order: the other checks, then the TCP port, then the files.
            if config.unix_socket.is_some() || (config.port == 0 && !config.random_port) {
                return err(TLS_NEEDS_TCP);
            }
            let settings = &config.tls_settings;
            if settings.verify_mode >= 2 && settings.ca_cert.is_none() {
                return err(
                    "ERROR: ssl_verify_mode 2 and 3 require client certificates: name the CAs \
                     that sign them with -o ssl_ca_cert",
                );
            }
            config.tls = Some(Tls::load(settings.clone()).map_err(|e| ConfigError(e.0))?);
        }
        Ok(config)
    }
}

/// memcached's check of the `notls:` prefix: only with `-Z`.
fn check_notls(config: &Config, ssl: bool) -> Result<(), ConfigError> {
    if !ssl && config.listen.iter().any(|l| l.starts_with(NOTLS)) {
        return err("'notls' option is valid only when SSL is enabled");
    }
    Ok(())
}

/// One `-o ssl_*` option, read as memcached reads it. `Ok(false)`: not a TLS option.
fn apply_tls_option(
    settings: &mut tls::Settings,
    name: &str,
    value: Option<&str>,
) -> Result<bool, ConfigError> {
    let given = |what: &str| {
        value
            .map(str::to_string)
            .ok_or_else(|| ConfigError(format!("Missing {what} argument")))
    };
    let int = |what: &str| -> Result<i64, ConfigError> {
        given(what)?
            .trim()
            .parse()
            .map_err(|_| ConfigError(format!("could not parse argument to {what}")))
    };
    match name {
        "ssl_chain_cert" => settings.chain_cert = Some(given(name)?.into()),
        "ssl_key" => settings.key = Some(given(name)?.into()),
        "ssl_ca_cert" => settings.ca_cert = Some(given(name)?.into()),
        "ssl_ciphers" => settings.ciphers = Some(given(name)?),
        "ssl_keyformat" => settings.keyformat = int(name)?,
        "ssl_verify_mode" => {
            settings.verify_mode = match int(name)? {
                v @ 0..=3 => v as u8,
                _ => return err("Invalid ssl_verify_mode. Use help to see valid options."),
            }
        }
        "ssl_min_version" => {
            settings.min_version = match int(name)? {
                v @ 0..=3 => v as u8,
                _ => return err("Invalid ssl_min_version. Use help to see valid options."),
            }
        }
        "ssl_wbuf_size" => {
            let kb: u32 = given(name)?
                .trim()
                .parse()
                .map_err(|_| ConfigError(format!("could not parse argument to {name}")))?;
            settings.wbuf_size = kb as usize * 1024;
        }
        "ssl_session_cache" => settings.session_cache = true,
        "ssl_kernel_tls" => settings.kernel_tls = true,
        _ => return Ok(false),
    }
    Ok(true)
}

fn apply_extended(config: &mut Config, opt: &str) -> Result<(), ConfigError> {
    let opt = opt.trim();
    if opt.is_empty() {
        return Ok(());
    }
    let (name, value) = match opt.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (opt, None),
    };
    match name {
        "idle_timeout" => config.idle_timeout = number(name, value)?,
        "maxconns_fast" => config.maxconns_fast = true,
        "no_maxconns_fast" => config.maxconns_fast = false,
        "hashpower" => {
            let hp: u32 = number(name, value)?;
            if hp < 12 {
                return err(format!("Initial hashtable multiplier of {hp} is too low"));
            }
            if hp > 32 {
                return err(format!("Initial hashtable multiplier of {hp} is too high"));
            }
            config.hashpower = hp;
        }
        "slab_chunk_max" => {
            let kb: usize = number(name, value)?;
            config.store.slab_chunk_max = kb << 10;
        }
        "lru_crawler" => config.lru_crawler = true,
        "no_lru_crawler" => config.lru_crawler = false,
        "lru_crawler_sleep" => config.lru_crawler_sleep = number(name, value)?,
        "lru_crawler_tocrawl" => config.lru_crawler_tocrawl = number(name, value)?,
        "track_sizes" => config.track_sizes = true,
        "read_buf_mem_limit" => {
            let Some(value) = value else {
                return err("Missing read_buf_mem_limit argument");
            };
            let mb: u32 = value.parse().map_err(|_| {
                ConfigError("could not parse argument to read_buf_mem_limit".into())
            })?;
            config.read_buf_mem_limit = Some((mb as usize) << 20);
        }
        _ if apply_tls_option(&mut config.tls_settings, name, value)? => {}
        _ if ACCEPTED_EXTENDED.contains(&name) => {}
        _ => return err(format!("Illegal suboption \"{opt}\"")),
    }
    Ok(())
}

fn help_text() -> String {
    use clap::CommandFactory;
    format!("{}\n", Cli::command().render_help())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, String> {
        let mut all = vec!["memcrab"];
        all.extend_from_slice(args);
        match Cli::parse_args(all) {
            Ok(Action::Run(c)) => Ok(*c),
            Ok(Action::Print(p)) => Err(format!("print: {p}")),
            Err(e) => Err(e.0),
        }
    }

    #[test]
    fn a_repeated_flag_takes_its_last_value_as_in_memcached() {
        let c = run(&[
            "-m",
            "256",
            "-c",
            "500",
            "-t",
            "2",
            "-p",
            "11311",
            "-A",
            "-m",
            "128",
            "-c",
            "3000",
            "-A",
            "--threads=3",
            "-vv",
            "-v",
            "-o",
            "modern",
            "-o",
            "idle_timeout=5",
        ])
        .unwrap();
        assert_eq!(c.store.limit_bytes, 128 << 20);
        assert_eq!((c.max_conns, c.threads, c.port), (3000, 3, 11311));
        assert!(c.shutdown_enabled);
        assert_eq!((c.verbosity, c.idle_timeout), (3, 5));
        let c = run(&["-l", "127.0.0.1", "-l", "::1"]).unwrap();
        assert_eq!(c.listen, ["127.0.0.1", "::1"]);
    }

    #[test]
    fn manifest_forms_parse() {
        let c = run(&["-m", "64"]).unwrap();
        assert_eq!(c.store.limit_bytes, 64 << 20);
        assert_eq!(run(&["-m64"]).unwrap().store.limit_bytes, 64 << 20);
        assert_eq!(
            run(&["--memory-limit=128"]).unwrap().store.limit_bytes,
            128 << 20
        );
        assert_eq!(
            run(&["-m", "8", "-I", "5m"]).err().unwrap(),
            "Cannot set item size limit higher than 1/2 of memory max."
        );
        assert_eq!(
            run(&["-m", "64", "-I", "5m"]).unwrap().store.item_size_max,
            5 << 20
        );
        assert_eq!(run(&["--extended=modern"]).unwrap().idle_timeout, 0);
        let c = run(&[
            "-o",
            "modern,idle_timeout=5",
            "-vv",
            "-c",
            "1024",
            "-t",
            "2",
            "-U",
            "0",
        ])
        .unwrap();
        assert_eq!(
            (c.idle_timeout, c.verbosity, c.max_conns, c.threads),
            (5, 2, 1024, 2)
        );
        let c = run(&[
            "-l",
            "127.0.0.1,::1",
            "-l",
            "10.0.0.1",
            "-p",
            "22122",
            "-M",
            "-C",
            "-F",
            "-A",
        ])
        .unwrap();
        assert_eq!(c.listen, ["127.0.0.1", "::1", "10.0.0.1"]);
        assert!(
            !c.store.evictions && !c.store.cas_enabled && !c.flush_enabled && c.shutdown_enabled
        );
        assert_eq!(
            run(&["-u", "nobody"]).unwrap().user.as_deref(),
            Some("nobody")
        );
    }

    #[test]
    fn invalid_values_get_memcacheds_messages() {
        let cases: &[(&[&str], &str)] = &[
            (&["-c", "0"], "Maximum connections must be greater than 0"),
            (&["-t", "0"], "Number of threads must be greater than 0"),
            (
                &["-R", "0"],
                "Number of requests per event must be greater than 0",
            ),
            (&["-f", "1"], "Factor must be greater than 1"),
            (&["-n", "0"], "Chunk size must be greater than 0"),
            (&["-o", "bogus_opt"], "Illegal suboption \"bogus_opt\""),
            (
                &["-o", "relaxed_privileges"],
                "Illegal suboption \"relaxed_privileges\"",
            ),
            (
                &["-o", "hashpower=5"],
                "Initial hashtable multiplier of 5 is too low",
            ),
            (
                &["-I", "2k"],
                "slab_chunk_max (bytes: 524288) cannot be larger than -I (item_size_max 2048)",
            ),
            (
                &["-I", "600k"],
                "-I (item_size_max: 614400) must be evenly divisible by slab_chunk_max (bytes: 524288)",
            ),
            (
                &["-I", "512"],
                "Item max size cannot be less than 1024 bytes.",
            ),
            (
                &["-m", "1"],
                "Cannot set item size limit higher than 1/2 of memory max.",
            ),
            (
                &["-q"],
                "memcrab: invalid option -- 'q'\nIllegal argument \"?\"",
            ),
            (
                &["-o", "read_buf_mem_limit"],
                "Missing read_buf_mem_limit argument",
            ),
            (
                &["-o", "read_buf_mem_limit=lots"],
                "could not parse argument to read_buf_mem_limit",
            ),
        ];
        for (args, want) in cases {
            assert_eq!(run(args).err().as_deref(), Some(*want), "{args:?}");
        }
        assert!(
            run(&["-B", "http"])
                .unwrap_err()
                .starts_with("Invalid value for binding protocol: http")
        );
        assert!(
            run(&["-U", "11211"])
                .unwrap_err()
                .contains("UDP is not supported")
        );
    }

    #[test]
    fn the_buffer_cap_defaults_from_memory_and_item_size_and_0_lifts_it() {
        let limit = |args: &[&str]| run(args).unwrap().buffer_limit();
        assert_eq!(limit(&["-m", "64"]), 32 << 20);
        assert_eq!(limit(&["-m", "1024"]), 128 << 20);
        assert_eq!(limit(&["-m", "256", "-I", "16m"]), 64 << 20);
        assert_eq!(limit(&["-o", "read_buf_mem_limit=8"]), 8 << 20);
        assert_eq!(limit(&["-o", "read_buf_mem_limit=0"]), usize::MAX);
    }

    #[test]
    fn small_memory_works_with_a_small_item_limit() {
        let c = run(&["-m", "1", "-I", "512k"]).unwrap();
        assert_eq!(
            (c.store.limit_bytes, c.store.item_size_max),
            (1 << 20, 512 << 10)
        );
    }

    #[test]
    fn help_and_version_print() {
        assert!(run(&["-V"]).unwrap_err().starts_with("print: memcrab "));
        assert!(run(&["-h"]).unwrap_err().contains("--memory-limit"));
    }
}
