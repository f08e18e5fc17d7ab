//! TLS (`-Z`, issue 16): the same requests over TLS to memcrab and memcached 1.6.45 started
//! with the same flags, the same reply bytes. Certificates (a throwaway CA, a server and a
//! client certificate) are made with the `openssl` command for this test binary.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::common::*;

/// The certificates of this run: `ca.pem`, `server.pem`/`.key`, `client.pem`/`.key`, and
/// `other.pem`/`.key` (a server certificate for a second name, for refresh tests).
pub(crate) fn certs() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("memcrab-it-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        make_certs(&dir);
        dir
    })
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("the tests need the openssl command (scripts/install-test-deps.sh)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes a CA and certificates it signs, as `tests/clients/tls_support.py` does.
pub fn make_certs(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=memcrab test CA",
        ],
    );
    for (name, cn) in [
        ("server", "localhost"),
        ("client", "client1"),
        ("other", "localhost"),
    ] {
        std::fs::write(
            dir.join(format!("{name}.ext")),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "1",
                "-extfile",
                &ext,
            ],
        );
    }
}

pub(crate) fn readable(file: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
}

fn path(name: &str) -> String {
    certs().join(name).display().to_string()
}

/// `-Z` and the server certificate, plus `extra` `-o` options.
fn tls_args(extra: &str) -> Vec<String> {
    let mut o = format!(
        "ssl_chain_cert={},ssl_key={}",
        path("server.pem"),
        path("server.key")
    );
    if !extra.is_empty() {
        o.push(',');
        o.push_str(extra);
    }
    vec!["-Z".into(), "-o".into(), o]
}

pub(crate) fn client_config(
    with_cert: bool,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    #[allow(deprecated)] // ring, as the server uses
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let config = if with_cert {
        let chain = CertificateDer::pem_file_iter(path("client.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(path("client.key")).unwrap();
        builder.with_client_auth_cert(chain, key).unwrap()
    } else {
        builder.with_no_client_auth()
    };
    Arc::new(config)
}

/// A TLS client connection with the raw-bytes helpers of `Conn`.
pub(crate) struct TlsConn {
    label: &'static str,
    pub(crate) stream: StreamOwned<ClientConnection, TcpStream>,
    pub(crate) pending: Vec<u8>,
}

impl TlsConn {
    pub(crate) fn open(srv: &Server, config: Arc<ClientConfig>) -> std::io::Result<TlsConn> {
        let tcp = TcpStream::connect(("127.0.0.1", srv.port))?;
        tcp.set_read_timeout(Some(Duration::from_millis(100)))?;
        let name = ServerName::try_from("localhost").unwrap();
        let conn = ClientConnection::new(config, name).unwrap();
        let mut stream = StreamOwned::new(conn, tcp);
        // Finish the handshake now, so a refusal shows here.
        let deadline = Instant::now() + REPLY_TIMEOUT;
        while stream.conn.is_handshaking() {
            match stream.conn.complete_io(&mut stream.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                    if Instant::now() > deadline {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(TlsConn {
            label: srv.name(),
            stream,
            pending: Vec::new(),
        })
    }

    pub(crate) fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
        self.stream.flush().unwrap();
    }

    /// Reads until `want.len()` bytes arrived (or the deadline, or the end); `Err`: an
    /// error other than a timeout (a refused client certificate shows here in TLS 1.3).
    pub(crate) fn fill_to(&mut self, want: usize) -> std::io::Result<()> {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let mut chunk = [0u8; 65536];
        while self.pending.len() < want && Instant::now() < deadline {
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    #[track_caller]
    pub(crate) fn expect(&mut self, want: &[u8]) {
        let _ = self.fill_to(want.len());
        let got: Vec<u8> = self
            .pending
            .drain(..want.len().min(self.pending.len()))
            .collect();
        assert!(
            got == want,
            "[{}] over TLS: expected {}, got {}",
            self.label,
            esc(want),
            esc(&got)
        );
    }

    #[track_caller]
    pub(crate) fn roundtrip(&mut self, req: &[u8], reply: &[u8]) {
        self.send(req);
        self.expect(reply);
    }

    /// The `STAT` lines of `cmd`.
    pub(crate) fn stats(&mut self, cmd: &str) -> Vec<(String, String)> {
        self.send(format!("{cmd}\r\n").as_bytes());
        let deadline = Instant::now() + REPLY_TIMEOUT;
        while !self.pending.ends_with(b"END\r\n") && Instant::now() < deadline {
            let len = self.pending.len();
            let _ = self.fill_to(len + 1);
        }
        let text = String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned();
        text.lines()
            .filter_map(|l| l.strip_prefix("STAT "))
            .filter_map(|l| l.split_once(' '))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

pub(crate) fn both_versions() -> Vec<&'static rustls::SupportedProtocolVersion> {
    vec![&rustls::version::TLS13, &rustls::version::TLS12]
}

fn with_tls_servers(extra: &str, body: impl Fn(&Server) + Sync) {
    let args = tls_args(extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    for_each_server(&args, body);
}

#[test]
fn text_commands_over_tls_as_over_plaintext() {
    with_tls_servers("", |srv| {
        for versions in [
            &[&rustls::version::TLS13][..],
            &[&rustls::version::TLS12][..],
        ] {
            let mut c = TlsConn::open(srv, client_config(false, versions)).unwrap();
            c.roundtrip(b"set k 5 0 5\r\nhello\r\n", b"STORED\r\n");
            c.roundtrip(b"get k\r\n", b"VALUE k 5 5\r\nhello\r\nEND\r\n");
            c.roundtrip(
                b"incr k 1\r\n",
                b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
            );
            // A pipeline in one write, and a value larger than a TLS record and than
            // ssl_wbuf_size, so replies wait inside rustls for the socket.
            let big = vec![b'v'; 300_000];
            let mut req = set_cmd("set", "big", 0, 0, &big);
            req.extend_from_slice(b"get big big\r\ndelete k\r\nbogus\r\n");
            c.send(&req);
            let mut want = b"STORED\r\n".to_vec();
            let one = value_reply("big", 0, &big);
            for _ in 0..2 {
                want.extend_from_slice(&one[..one.len() - b"END\r\n".len()]);
            }
            want.extend_from_slice(b"END\r\nDELETED\r\nERROR\r\n");
            c.expect(&want);
        }
    });
}

#[test]
fn meta_commands_over_tls() {
    with_tls_servers("", |srv| {
        let mut c = TlsConn::open(srv, client_config(false, &both_versions())).unwrap();
        c.roundtrip(b"ms mk 2 T0 F7\r\nhi\r\n", b"HD\r\n");
        c.roundtrip(b"mg mk v f k\r\n", b"VA 2 f7 kmk\r\nhi\r\n");
        c.roundtrip(b"mg nope v q\r\nmn\r\n", b"MN\r\n");
        c.roundtrip(b"md mk\r\nmg mk v\r\n", b"HD\r\nEN\r\n");
    });
}

#[test]
fn binary_protocol_over_tls() {
    with_tls_servers("", |srv| {
        let mut c = TlsConn::open(srv, client_config(false, &both_versions())).unwrap();
        // Set "bk" = "val" (flags 0, exptime 0), then GetK and NoOp.
        let mut set = vec![0x80, 0x01, 0, 2, 8, 0, 0, 0, 0, 0, 0, 13, 0, 0, 0, 1];
        set.extend_from_slice(&[0; 8]); // cas
        set.extend_from_slice(&[0; 8]); // extras: flags, exptime
        set.extend_from_slice(b"bkval");
        let mut getk = vec![0x80, 0x0c, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 2];
        getk.extend_from_slice(&[0; 8]);
        getk.extend_from_slice(b"bk");
        let mut noop = vec![0x80, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3];
        noop.extend_from_slice(&[0; 8]);
        c.send(&[set, getk, noop].concat());
        let mut got = Vec::new();
        c.fill_to(24 * 3 + 4 + 2 + 3).unwrap();
        got.append(&mut c.pending);
        assert!(got.len() >= 24, "[{}] no binary reply over TLS", srv.name());
        // Set: status 0, opaque 1.
        assert_eq!(&got[..2], &[0x81, 0x01], "[{}]", srv.name());
        assert_eq!(&got[6..8], &[0, 0], "[{}] set status", srv.name());
        assert_eq!(&got[12..16], &[0, 0, 0, 1], "[{}]", srv.name());
        // GetK: key and value after 4 bytes of flags.
        let getk = &got[24..];
        assert_eq!(&getk[..2], &[0x81, 0x0c], "[{}]", srv.name());
        assert_eq!(&getk[24..33], b"\0\0\0\0bkval", "[{}]", srv.name());
        let noop = &getk[33..];
        assert_eq!(&noop[..2], &[0x81, 0x0a], "[{}]", srv.name());
    });
}

#[test]
fn stats_settings_show_the_tls_options_as_memcached() {
    let extra = format!(
        "ssl_verify_mode=2,ssl_ca_cert={},ssl_session_cache,ssl_wbuf_size=32,ssl_min_version=3,ssl_ciphers=ECDHE-RSA-AES128-GCM-SHA256",
        path("ca.pem")
    );
    let seen = std::sync::Mutex::new(Vec::new());
    with_tls_servers(&extra, |srv| {
        let mut c = TlsConn::open(srv, client_config(true, &both_versions())).unwrap();
        let settings: Vec<_> = c
            .stats("stats settings")
            .into_iter()
            .filter(|(k, _)| k.starts_with("ssl_"))
            .collect();
        let stats = c.stats("stats");
        for name in [
            "ssl_new_sessions",
            "ssl_handshake_errors",
            "ssl_proto_errors",
        ] {
            assert!(
                lookup(&stats, name).is_some_and(is_int),
                "[{}] stats {name}",
                srv.name()
            );
        }
        let since = lookup(&stats, "time_since_server_cert_refresh").unwrap();
        // memcached takes the load time before its clock starts: a number, not the age.
        assert!(is_int(since), "[{}] {since}", srv.name());
        if srv.is_memcrab() {
            assert!(since.parse::<u64>().unwrap() < 10, "[memcrab] {since}");
        }
        seen.lock().unwrap().push((srv.name(), settings));
    });
    let seen = seen.into_inner().unwrap();
    let want: Vec<(String, String)> = [
        ("ssl_enabled", "yes".to_string()),
        ("ssl_chain_cert", path("server.pem")),
        ("ssl_key", path("server.key")),
        ("ssl_verify_mode", "3".into()),
        ("ssl_keyformat", "1".into()),
        ("ssl_ciphers", "ECDHE-RSA-AES128-GCM-SHA256".into()),
        ("ssl_ca_cert", path("ca.pem")),
        ("ssl_wbuf_size", "32768".into()),
        ("ssl_session_cache", "yes".into()),
        ("ssl_kernel_tls", "no".into()),
        ("ssl_min_version", "tlsv1.3".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (name, settings) in seen {
        assert_eq!(settings, want, "[{name}] the ssl_ lines of stats settings");
    }
}

#[test]
fn a_client_without_a_certificate_is_refused_when_one_is_required() {
    let extra = format!("ssl_verify_mode=2,ssl_ca_cert={}", path("ca.pem"));
    with_tls_servers(&extra, |srv| {
        let mut ok = TlsConn::open(srv, client_config(true, &both_versions())).unwrap();
        ok.roundtrip(b"version\r\n", b"VERSION 1.6.45\r\n");
        for versions in [
            &[&rustls::version::TLS13][..],
            &[&rustls::version::TLS12][..],
        ] {
            // TLS 1.2 refuses in the handshake; TLS 1.3 after the client's Finished, so
            // the refusal shows at the first read.
            let refused = match TlsConn::open(srv, client_config(false, versions)) {
                Err(_) => true,
                Ok(mut c) => {
                    c.send(b"version\r\n");
                    c.fill_to(16).is_err() || c.pending.is_empty()
                }
            };
            assert!(
                refused,
                "[{}] a client without a certificate was served",
                srv.name()
            );
        }
        // memcrab counts every failed handshake (the two above and the harness's plaintext
        // probe); memcached only those that fail in its first SSL_accept call, which for
        // these is none (docs/compatibility.md).
        if srv.is_memcrab() {
            let st = ok.stats("stats");
            assert_eq!(lookup(&st, "ssl_handshake_errors"), Some("3"), "[memcrab]");
        }
    });
}

#[test]
fn refresh_certs_without_tls_is_an_error() {
    for_each_target(&[], |_, c| {
        c.roundtrip(b"refresh_certs\r\n", b"Error TLS not enabled\r\n");
    });
}

#[test]
fn a_notls_listener_serves_plaintext_beside_tls() {
    for kind in targets() {
        let plain = free_port();
        let mut args = tls_args("");
        args.extend(["-l".into(), format!("notls:127.0.0.1:{plain}")]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let srv = Server::start(kind, &args);
        let mut tls = TlsConn::open(&srv, client_config(false, &both_versions())).unwrap();
        tls.roundtrip(b"set k 0 0 1\r\nx\r\n", b"STORED\r\n");
        let mut c = Conn::open(plain, kind.name());
        c.roundtrip(b"get k\r\n", b"VALUE k 0 1\r\nx\r\nEND\r\n");
    }
}

#[test]
fn a_stalled_handshake_is_closed_by_the_idle_timeout() {
    with_tls_servers("idle_timeout=2", |srv| {
        // Half a ClientHello record header, then nothing.
        let mut stalled = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
        stalled.write_all(&[0x16, 0x03]).unwrap();
        let silent = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
        for (name, mut s) in [("partial", stalled), ("silent", silent)] {
            s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
            let started = Instant::now();
            let mut buf = [0u8; 64];
            let closed = matches!(s.read(&mut buf), Ok(0) | Err(_))
                && started.elapsed() < Duration::from_secs(7);
            assert!(
                closed,
                "[{}] {name} handshake not closed within 7 s",
                srv.name()
            );
        }
    });
}

#[test]
fn start_up_errors_are_memcacheds() {
    for kind in targets() {
        let cases: Vec<(Vec<String>, &str, i32)> = vec![
            (
                vec![
                    "-Z".into(),
                    "-o".into(),
                    "ssl_chain_cert=/nonexistent/cert.pem".into(),
                ],
                "Error loading the certificate chain: /nonexistent/cert.pem : ",
                64,
            ),
            (
                vec![
                    "-Z".into(),
                    "-o".into(),
                    format!(
                        "ssl_chain_cert={},ssl_key=/nonexistent/key.pem",
                        path("server.pem")
                    ),
                ],
                "Error loading the key: /nonexistent/key.pem : ",
                64,
            ),
            (
                vec!["-o".into(), "ssl_verify_mode=9".into()],
                "Invalid ssl_verify_mode. Use help to see valid options.",
                1,
            ),
            (
                vec!["-o".into(), "ssl_min_version=tls1.3".into()],
                "could not parse argument to ssl_min_version",
                1,
            ),
            (
                [
                    tls_args("ssl_ciphers=RC4-MD5"),
                    vec!["-p".into(), "0".into()],
                ]
                .concat(),
                "ERROR: You cannot enable SSL without a TCP port.",
                64,
            ),
            (
                [tls_args("ssl_ciphers=NOPE-NOTHING")].concat(),
                "Error setting the provided cipher(s): NOPE-NOTHING",
                64,
            ),
        ];
        for (args, want, code) in cases {
            let mut cmd = base_command(kind);
            if !args.iter().any(|a| a == "-p") {
                cmd.args(["-p", &free_port().to_string()]);
            }
            cmd.args(["-U", "0", "-u", "nobody"]);
            let out = cmd.args(&args).stdin(Stdio::null()).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.starts_with(want) || stderr.contains(&format!("\n{want}")),
                "[{}] {args:?}: stderr {stderr:?}, want {want:?}",
                kind.name()
            );
            assert_eq!(
                out.status.code(),
                Some(code),
                "[{}] {args:?}: exit status",
                kind.name()
            );
        }
    }
}
