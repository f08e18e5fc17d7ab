//! TLS for the `tls-*` workloads: a throwaway CA and server certificate made once per run
//! with the `openssl` command, the servers' `-Z` options, and the client's rustls
//! configuration.
//!
//! Both servers get the same certificate and the same options, and the client offers one
//! protocol version, one cipher suite and one key exchange group, so that both servers
//! negotiate the same and do the same cryptographic work per byte and per handshake.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};

use tokio_rustls::rustls;
use tokio_rustls::rustls::client::Resumption;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::Res;

/// How a workload uses TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tls {
    /// Plaintext.
    Off,
    /// `-Z` with the certificate; the client does not resume sessions (each connection is a
    /// full handshake).
    On,
    /// `-Z -o ssl_session_cache`: the client keeps the sessions (TLS 1.3 tickets) the server
    /// gives it and resumes them on its next connections.
    Resume,
}

/// The server certificate's key (`--tls-key`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// RSA-2048: cert-manager's default, and what a full handshake signs with.
    Rsa2048,
    /// ECDSA P-256.
    EcdsaP256,
}

impl Key {
    pub fn parse(v: &str) -> Option<Key> {
        match v {
            "rsa" | "rsa2048" => Some(Key::Rsa2048),
            "ecdsa" | "p256" => Some(Key::EcdsaP256),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Key::Rsa2048 => "RSA-2048",
            Key::EcdsaP256 => "ECDSA P-256",
        }
    }

    /// `openssl req -newkey` arguments.
    fn newkey(self) -> &'static [&'static str] {
        match self {
            Key::Rsa2048 => &["-newkey", "rsa:2048"],
            Key::EcdsaP256 => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
        }
    }
}

/// What the client offers, and so what both servers negotiate (stated in the tables).
pub fn negotiated(key: Key) -> String {
    format!(
        "TLS 1.3, TLS_AES_256_GCM_SHA384, X25519, {} server certificate (throwaway CA)",
        key.name()
    )
}

/// The name the client asks for and the certificate holds.
const SERVER_NAME: &str = "localhost";

/// The certificate files of this run, in a folder of their own under the temporary
/// directory; [`remove`] deletes them when the run ends.
struct Certs {
    dir: PathBuf,
    ca: Vec<CertificateDer<'static>>,
}

static CERTS: OnceLock<Result<Certs, String>> = OnceLock::new();

/// The certificates of this run, made at the first call (one key kind per run).
fn certs(key: Key) -> Res<&'static Certs> {
    CERTS
        .get_or_init(|| make_certs(key))
        .as_ref()
        .map_err(|e| e.clone())
}

fn openssl(dir: &Path, args: &[&str]) -> Res<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!("the TLS workloads need the openssl command to make a certificate: {e}")
        })?;
    if !out.status.success() {
        return Err(format!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// A CA, and a server certificate for `localhost` and 127.0.0.1 that it signs, with a `key`
/// key (the CA's is RSA-2048: it signs nothing during the run). The files are world-readable: memcached reads them after
/// switching to `-u nobody`. The keys are thrown away with the folder.
fn make_certs(key: Key) -> Result<Certs, String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("memcrab-loadgen-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let subj_ca = "/CN=memcrab loadgen CA";
    openssl(
        &dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "2", "-subj", subj_ca,
        ],
    )?;
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut req = vec!["req"];
    req.extend_from_slice(key.newkey());
    req.extend_from_slice(&[
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(&dir, &req)?;
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    )?;
    for entry in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let ca = CertificateDer::pem_file_iter(dir.join("ca.pem"))
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("reading ca.pem: {e}"))?;
    Ok(Certs { dir, ca })
}

/// Deletes this run's certificate folder, if one was made.
pub fn remove() {
    if let Some(Ok(c)) = CERTS.get() {
        let _ = std::fs::remove_dir_all(&c.dir);
    }
}

/// The server options for `tls`, the same for memcrab and memcached (none for
/// [`Tls::Off`]).
pub fn server_args(tls: Tls, key: Key) -> Res<Vec<String>> {
    if tls == Tls::Off {
        return Ok(Vec::new());
    }
    let c = certs(key)?;
    let mut o = format!(
        "ssl_chain_cert={},ssl_key={}",
        c.dir.join("server.pem").display(),
        c.dir.join("server.key").display()
    );
    if tls == Tls::Resume {
        o.push_str(",ssl_session_cache");
    }
    Ok(vec!["-Z".into(), "-o".into(), o])
}

/// The server options as the tables show them (the folder left out).
pub fn describe(tls: Tls) -> &'static str {
    match tls {
        Tls::Off => "",
        Tls::On => " -Z -o ssl_chain_cert=..,ssl_key=..",
        Tls::Resume => " -Z -o ssl_chain_cert=..,ssl_key=..,ssl_session_cache",
    }
}

/// A client configuration for one server's run: its own session store, so that no ticket of
/// one server is offered to the other.
pub fn client_config(tls: Tls, key: Key) -> Res<Option<Client>> {
    if tls == Tls::Off {
        return Ok(None);
    }
    let mut roots = RootCertStore::empty();
    for cert in &certs(key)?.ca {
        roots
            .add(cert.clone())
            .map_err(|e| format!("the CA certificate: {e}"))?;
    }
    // ring, as memcrab's server side uses; rustls marks this provider deprecated only for
    // lacking the post-quantum key exchange, which the client does not offer anyway.
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384];
    provider.kx_groups = vec![rustls::crypto::ring::kx_group::X25519];
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("client TLS configuration: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    Ok(Some(Client {
        config: Arc::new(config),
        resume: tls == Tls::Resume,
        name: ServerName::try_from(SERVER_NAME).expect("a valid DNS name"),
    }))
}

/// What a client connection needs to start TLS.
#[derive(Clone)]
pub struct Client {
    config: Arc<ClientConfig>,
    /// [`Tls::Resume`]: [`Client::own_sessions`] gives each client a session store.
    resume: bool,
    pub name: ServerName<'static>,
}

impl Client {
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.config.clone())
    }

    /// The same configuration with a session store of its own, for one client that
    /// reconnects ([`Tls::Resume`]; otherwise it resumes nothing): like a separate client
    /// process, it resumes the sessions its own earlier connections were given (TLS 1.3
    /// tickets: each used once, each connection brings new ones). One store shared by all
    /// would hold at most 8 tickets for the one server name, fewer than the clients that
    /// reconnect at once, and so turn some of their resumptions into full handshakes.
    pub fn own_sessions(&self) -> Client {
        let mut config = (*self.config).clone();
        if self.resume {
            config.resumption = Resumption::in_memory_sessions(16);
        }
        Client {
            config: Arc::new(config),
            ..self.clone()
        }
    }
}
