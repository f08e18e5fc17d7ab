//! TLS (`-Z`) with rustls: memcached's `-o ssl_*` settings, the server configuration built
//! from them, certificate refresh (`refresh_certs`, SIGHUP, and a watcher that reloads when
//! the files change), and the TLS counters `stats` and `/metrics` print.
//!
//! This module owns certificates and handshakes' configuration; it never touches a socket
//! (`server` drives each connection's `rustls::ServerConnection` in its event loop) and
//! imports nothing else from the crate.
//!
//! A refresh builds a whole new `ServerConfig` and swaps it in: new handshakes use it,
//! established connections keep the one they started with. A refresh that fails (a
//! missing, corrupt or mismatched file) changes nothing: the previous certificate keeps
//! serving. The session cache is shared across refreshes.

pub mod files;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use rustls::crypto::CryptoProvider;
use rustls::server::{
    NoServerSessionStorage, ServerSessionMemoryCache, StoresServerSessions, WebPkiClientVerifier,
};
use rustls::{RootCertStore, ServerConfig, ServerConnection};

/// memcached's default `ssl_wbuf_size`: 16 KiB.
pub const DEFAULT_WBUF_SIZE: usize = 16 * 1024;
/// How often the watcher looks at the certificate files. A Kubernetes Secret update reaches
/// the pod within a minute or so; a few seconds more do not matter, and a `stat` of three
/// files every few seconds costs nothing.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);
/// Sessions the resumption cache holds with `ssl_session_cache` (OpenSSL's default size).
const SESSION_CACHE_SIZE: usize = 20 * 1024;

/// memcached's `-o ssl_*` options, as given.
#[derive(Debug, Clone)]
pub struct Settings {
    pub chain_cert: Option<PathBuf>,
    /// Without it, the key is read from the chain file.
    pub key: Option<PathBuf>,
    /// `ssl_keyformat`: 1 PEM (default), 2 DER.
    pub keyformat: i64,
    /// `ssl_verify_mode` 0-3: none, request, require, once.
    pub verify_mode: u8,
    pub ca_cert: Option<PathBuf>,
    pub ciphers: Option<String>,
    /// `ssl_min_version` 0-3: TLS 1.0, 1.1, 1.2 (default), 1.3. rustls speaks 1.2 and 1.3
    /// only, so 0 and 1 mean 1.2.
    pub min_version: u8,
    pub session_cache: bool,
    /// `ssl_wbuf_size`, in bytes: encrypted bytes a connection holds for the socket.
    pub wbuf_size: usize,
    pub kernel_tls: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            chain_cert: None,
            key: None,
            keyformat: files::KEYFORMAT_PEM,
            verify_mode: 0,
            ca_cert: None,
            ciphers: None,
            min_version: 2,
            session_cache: false,
            wbuf_size: DEFAULT_WBUF_SIZE,
            kernel_tls: false,
        }
    }
}

impl Settings {
    /// `ssl_verify_mode` as memcached prints it in `stats settings`: OpenSSL's flags
    /// (PEER 1, FAIL_IF_NO_PEER_CERT 2, CLIENT_ONCE 4).
    pub fn verify_flags(&self) -> u8 {
        match self.verify_mode {
            0 => 0,
            1 => 1,
            2 => 3,
            _ => 7,
        }
    }

    /// `ssl_min_version` as memcached prints it.
    pub fn min_version_text(&self) -> &'static str {
        match self.min_version {
            0 => "tlsv1.0",
            1 => "tlsv1.1",
            2 => "tlsv1.2",
            _ => "tlsv1.3",
        }
    }
}

/// Counters for `stats` and `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Handshakes that failed (memcached's `ssl_handshake_errors`).
    pub handshake_errors: AtomicU64,
    /// TLS errors after the handshake (`ssl_proto_errors`).
    pub proto_errors: AtomicU64,
    /// Sessions put in the resumption cache (`ssl_new_sessions`).
    pub new_sessions: Arc<AtomicU64>,
    /// Certificate refreshes that succeeded, and that failed (memcrab's own).
    pub refreshes: AtomicU64,
    pub refresh_errors: AtomicU64,
    /// Unix seconds of the last successful (re)load.
    pub refreshed_at: AtomicU64,
    /// The server certificate's `notAfter`, unix seconds (0: unknown).
    pub not_after: AtomicI64,
}

/// The process's TLS state, shared by the workers, the command layer and the watcher.
pub struct Tls {
    pub settings: Settings,
    pub counters: Counters,
    provider: Arc<CryptoProvider>,
    sessions: Arc<dyn StoresServerSessions>,
    current: RwLock<Arc<ServerConfig>>,
    /// What the watcher saw of the files at the last look.
    seen: Mutex<Vec<Fingerprint>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A start-up or refresh error: memcached's message (without its trailing `\r\n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError(pub String);

impl Tls {
    /// Loads the certificates and builds the configuration: memcached's `ssl_init`. Its
    /// errors are memcached's start-up messages (exit status 64).
    pub fn load(settings: Settings) -> Result<Arc<Tls>, LoadError> {
        if settings.kernel_tls {
            return Err(LoadError("Kernel TLS offload is not available".into()));
        }
        // ring: C and assembly that build into the static image (scripts/build-static.sh)
        // without a cmake/Go toolchain; rustls marks its provider deprecated only for
        // lacking the post-quantum key exchange.
        #[allow(deprecated)]
        let mut provider = rustls::crypto::ring::default_provider();
        if let Some(list) = &settings.ciphers {
            let Some(tls12) = files::tls12_suites(list) else {
                return Err(LoadError(format!(
                    "Error setting the provided cipher(s): {list}"
                )));
            };
            provider
                .cipher_suites
                .retain(|s| s.version() == &rustls::version::TLS13 || tls12.contains(s));
        }
        let counters = Counters::default();
        let sessions: Arc<dyn StoresServerSessions> = if settings.session_cache {
            Arc::new(CountingSessions {
                inner: ServerSessionMemoryCache::new(SESSION_CACHE_SIZE),
                new_sessions: counters.new_sessions.clone(),
            })
        } else {
            Arc::new(NoServerSessionStorage {})
        };
        let provider = Arc::new(provider);
        let config = build(&settings, &provider, &sessions)?;
        let tls = Tls {
            seen: Mutex::new(fingerprints(&settings)),
            settings,
            counters,
            provider,
            sessions,
            current: RwLock::new(Arc::new(config.0)),
        };
        tls.loaded(config.1);
        Ok(Arc::new(tls))
    }

    fn loaded(&self, not_after: Option<i64>) {
        self.counters
            .not_after
            .store(not_after.unwrap_or(0), Ordering::Relaxed);
        self.counters
            .refreshed_at
            .store(unix_now(), Ordering::Relaxed);
    }

    /// `refresh_certs`: reloads the files; on failure the previous certificate stays.
    pub fn refresh(&self) -> Result<(), LoadError> {
        match build(&self.settings, &self.provider, &self.sessions) {
            Ok((config, not_after)) => {
                *self.current.write() = Arc::new(config);
                self.loaded(not_after);
                self.counters.refreshes.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.counters.refresh_errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// A server side for a new connection, its unsent output bounded by `ssl_wbuf_size`.
    pub fn accept(&self) -> Result<ServerConnection, rustls::Error> {
        let config = self.current.read().clone();
        let mut conn = ServerConnection::new(config)?;
        conn.set_buffer_limit(Some(self.settings.wbuf_size.max(1)));
        Ok(conn)
    }

    /// Seconds since the certificates were last (re)loaded.
    pub fn since_refresh(&self) -> u64 {
        unix_now().saturating_sub(self.counters.refreshed_at.load(Ordering::Relaxed))
    }

    /// Starts the watcher: every [`WATCH_EVERY`] it looks at the certificate, key and CA
    /// files (through symlinks: a Kubernetes Secret volume swaps a `..data` link) and
    /// refreshes when one changed. Ends when `stop` is set.
    pub fn spawn_watcher(
        self: &Arc<Self>,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let tls = self.clone();
        std::thread::Builder::new()
            .name("memcrab-tls-watch".into())
            .spawn(move || {
                let step = Duration::from_millis(100);
                let mut waited = Duration::ZERO;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(step);
                    waited += step;
                    if waited >= WATCH_EVERY {
                        waited = Duration::ZERO;
                        tls.watch_once();
                    }
                }
            })
    }

    /// One look at the files; a refresh if they changed since the last look.
    pub fn watch_once(&self) {
        let now = fingerprints(&self.settings);
        {
            let mut seen = self.seen.lock();
            if *seen == now {
                return;
            }
            *seen = now;
        }
        let chain = display(self.settings.chain_cert.as_deref());
        match self.refresh() {
            Ok(()) => eprintln!("TLS certificate files changed: reloaded {chain}"),
            Err(e) => eprintln!(
                "TLS certificate files changed but could not be loaded, still serving the \
                 previous certificate: {}",
                e.0
            ),
        }
    }
}

/// Counts the sessions rustls stores for resumption (memcached's `ssl_new_sessions`, which
/// OpenSSL's new-session callback counts the same way).
#[derive(Debug)]
struct CountingSessions {
    inner: Arc<ServerSessionMemoryCache>,
    new_sessions: Arc<AtomicU64>,
}

impl StoresServerSessions for CountingSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.new_sessions.fetch_add(1, Ordering::Relaxed);
        self.inner.put(key, value)
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.inner.get(key)
    }
    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.inner.take(key)
    }
    fn can_cache(&self) -> bool {
        true
    }
}

fn display(path: Option<&Path>) -> String {
    path.map_or("(null)".to_string(), |p| p.display().to_string())
}

/// Builds a server configuration from the files, with memcached's error messages. Also
/// gives the certificate's expiry.
fn build(
    settings: &Settings,
    provider: &Arc<CryptoProvider>,
    sessions: &Arc<dyn StoresServerSessions>,
) -> Result<(ServerConfig, Option<i64>), LoadError> {
    let chain_path = settings.chain_cert.as_deref();
    let chain = chain_path
        .ok_or_else(|| "no file given (-o ssl_chain_cert)".to_string())
        .and_then(files::chain)
        .map_err(|why| {
            LoadError(format!(
                "Error loading the certificate chain: {} : {why}",
                display(chain_path)
            ))
        })?;
    let key_path = settings.key.as_deref().or(chain_path);
    let key = key_path
        .ok_or_else(|| "no file given (-o ssl_key)".to_string())
        .and_then(|p| files::key(p, settings.keyformat))
        .map_err(|why| {
            LoadError(format!(
                "Error loading the key: {} : {why}",
                display(key_path)
            ))
        })?;
    let not_after = files::not_after(&chain[0]);
    let versions: &[&rustls::SupportedProtocolVersion] = if settings.min_version >= 3 {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| LoadError(format!("Error setting the protocol versions: {e}")))?;
    let builder = match (&settings.ca_cert, settings.verify_mode) {
        (Some(ca), mode) => {
            let roots = load_roots(ca)?;
            if mode == 0 {
                builder.with_no_client_auth()
            } else {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                let verifier = if mode == 1 {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier.build().map_err(|e| {
                    LoadError(format!(
                        "Error loading the CA certificate: {} : {e}",
                        ca.display()
                    ))
                })?;
                builder.with_client_cert_verifier(verifier)
            }
        }
        // Without CAs nothing can verify a client: memcached (OpenSSL) then refuses every
        // client certificate; request none (mode 1 then lets every client in, as OpenSSL
        // does for those that send none). Modes 2 and 3 are refused at start-up.
        (None, _) => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| LoadError(format!("Error validating the certificate: {e}")))?;
    config.session_storage = sessions.clone();
    if !settings.session_cache {
        // memcached sets OpenSSL's session cache off: no resumption.
        config.send_tls13_tickets = 0;
    }
    Ok((config, not_after))
}

fn load_roots(path: &Path) -> Result<RootCertStore, LoadError> {
    let fail = |why: String| {
        LoadError(format!(
            "Error loading the CA certificate: {} : {why}",
            path.display()
        ))
    };
    let certs = files::chain(path).map_err(fail)?;
    let mut roots = RootCertStore::empty();
    let (_, rejected) = roots.add_parsable_certificates(certs);
    if roots.is_empty() {
        return Err(fail(format!(
            "no usable CA certificate ({rejected} rejected)"
        )));
    }
    Ok(roots)
}

/// What identifies a file's content without reading it: where its path leads and that
/// file's device, inode, size and modification time. `None`: it is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint(Option<(PathBuf, u64, u64, u64, i64, i64)>);

fn fingerprints(settings: &Settings) -> Vec<Fingerprint> {
    use std::os::unix::fs::MetadataExt;
    [&settings.chain_cert, &settings.key, &settings.ca_cert]
        .into_iter()
        .flatten()
        .map(|path| {
            let real = std::fs::canonicalize(path).ok();
            let meta = std::fs::metadata(path).ok();
            Fingerprint(
                real.zip(meta)
                    .map(|(real, m)| (real, m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec())),
            )
        })
        .collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
