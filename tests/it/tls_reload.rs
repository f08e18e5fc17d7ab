//! Certificate reloads over TLS (`-Z`, issue 16), against memcrab and memcached 1.6.45:
//! `refresh_certs` and SIGHUP load new files, and a file that does not load leaves the old
//! certificate serving. The certificates are `tls.rs`'s.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::common::*;
use crate::tls::{TlsConn, both_versions, certs, client_config, readable};

#[test]
fn refresh_certs_loads_new_files_and_keeps_the_old_on_failure() {
    // Files of its own: this test replaces them.
    let dir = std::env::temp_dir().join(format!("memcrab-it-tls-refresh-{}", std::process::id()));
    for kind in targets() {
        let d = dir.join(kind.name());
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(certs().join("server.pem"), d.join("cert.pem")).unwrap();
        std::fs::copy(certs().join("server.key"), d.join("key.pem")).unwrap();
        // The servers run as nobody (-u): the key must stay readable for a refresh.
        readable(&d.join("key.pem"));
        let o = format!(
            "ssl_chain_cert={},ssl_key={}",
            d.join("cert.pem").display(),
            d.join("key.pem").display()
        );
        let srv = Server::start(kind, &["-Z", "-o", &o]);
        let mut c = TlsConn::open(&srv, client_config(false, &both_versions())).unwrap();
        c.roundtrip(b"refresh_certs\r\n", b"OK\r\n");
        // A corrupt certificate: memcached's message, and the old certificate serves on.
        std::fs::write(
            d.join("cert.pem"),
            "-----BEGIN CERTIFICATE-----\nnot base64\n",
        )
        .unwrap();
        c.send(b"refresh_certs\r\n");
        let _ = c.fill_to(40);
        let reply = String::from_utf8_lossy(&std::mem::take(&mut c.pending)).into_owned();
        let prefix = format!(
            "Error loading the certificate chain: {} : ",
            d.join("cert.pem").display()
        );
        assert!(
            reply.starts_with(&prefix) && reply.ends_with("\r\n"),
            "[{}] {reply:?}",
            kind.name()
        );
        let mut fresh = TlsConn::open(&srv, client_config(false, &both_versions())).unwrap();
        fresh.roundtrip(b"version\r\n", b"VERSION 1.6.45\r\n");
        c.roundtrip(b"version\r\n", b"VERSION 1.6.45\r\n");
        // Back to a good pair (another certificate): OK, and the new one is served.
        std::fs::copy(certs().join("other.pem"), d.join("cert.pem")).unwrap();
        std::fs::copy(certs().join("other.key"), d.join("key.pem")).unwrap();
        readable(&d.join("key.pem"));
        c.roundtrip(b"refresh_certs\r\n", b"OK\r\n");
        let newer = TlsConn::open(&srv, client_config(false, &both_versions())).unwrap();
        let served = newer.stream.conn.peer_certificates().unwrap()[0].clone();
        let other = CertificateDer::pem_file_iter(certs().join("other.pem"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(
            served,
            other,
            "[{}] the refreshed certificate is served",
            kind.name()
        );
        c.roundtrip(b"version\r\n", b"VERSION 1.6.45\r\n");
    }
}

/// Rewrites `file` in place with `text` padded with newlines to `len` bytes (text outside
/// the PEM blocks is ignored by both servers), then puts its modification time back: the
/// same inode, size and mtime, so that memcrab's file watcher (which compares those) does
/// not notice, and only a SIGHUP can make a server reload it.
fn rewrite_unnoticed(file: &Path, text: &[u8], len: usize) {
    assert!(
        text.len() <= len,
        "{} longer than {len} bytes",
        file.display()
    );
    let mut padded = text.to_vec();
    padded.resize(len, b'\n');
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    let mtime = f.metadata().unwrap().modified().unwrap();
    assert_eq!(f.metadata().unwrap().len() as usize, len);
    (&f).write_all(&padded).unwrap();
    f.set_modified(mtime).unwrap();
}

/// The certificate a new connection is served.
fn served_certificate(srv: &Server) -> CertificateDer<'static> {
    let c = TlsConn::open(srv, client_config(false, &both_versions())).unwrap();
    c.stream.conn.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

/// memcached reloads the certificates on SIGHUP (memcached.c: the handler sets a flag that
/// its clock tick acts on within a second, as `refresh_certs`, logging a failure); memcrab
/// does the same.
#[test]
fn sighup_reloads_the_certificates_and_keeps_the_old_on_failure() {
    let dir = std::env::temp_dir().join(format!("memcrab-it-tls-hup-{}", std::process::id()));
    let read = |name: &str| std::fs::read(certs().join(name)).unwrap();
    let first = |name: &str| {
        CertificateDer::pem_file_iter(certs().join(name))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
    };
    let (server_pem, other_pem) = (read("server.pem"), read("other.pem"));
    let (server_key, other_key) = (read("server.key"), read("other.key"));
    let cert_len = server_pem.len().max(other_pem.len()) + 64;
    let key_len = server_key.len().max(other_key.len()) + 64;
    for kind in targets() {
        let d = dir.join(kind.name());
        std::fs::create_dir_all(&d).unwrap();
        let (cert, key) = (d.join("cert.pem"), d.join("key.pem"));
        for (file, text, len) in [(&cert, &server_pem, cert_len), (&key, &server_key, key_len)] {
            let mut padded = text.clone();
            padded.resize(len, b'\n');
            std::fs::write(file, padded).unwrap();
            readable(file);
        }
        let o = format!(
            "ssl_chain_cert={},ssl_key={}",
            cert.display(),
            key.display()
        );
        let srv = Server::start(kind, &["-Z", "-o", &o]);
        let name = kind.name();
        let mut c = TlsConn::open(&srv, client_config(false, &both_versions())).unwrap();
        assert_eq!(served_certificate(&srv), first("server.pem"), "[{name}]");

        // A corrupt certificate, then SIGHUP: the old certificate serves on.
        rewrite_unnoticed(
            &cert,
            b"-----BEGIN CERTIFICATE-----\nnot base64\n",
            cert_len,
        );
        srv.signal(libc::SIGHUP);
        // memcached acts on the signal at its next clock tick.
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(
            served_certificate(&srv),
            first("server.pem"),
            "[{name}] a failed reload keeps the old certificate"
        );
        if kind == Kind::Memcrab {
            let errors = c.stats("stats");
            let errors = errors.iter().find(|(k, _)| k == "ssl_cert_refresh_errors");
            assert_eq!(
                errors.map(|(_, v)| v.as_str()),
                Some("1"),
                "[{name}] the failed reload is counted"
            );
        }

        // Another certificate and key, unnoticed until SIGHUP: then new connections get it.
        rewrite_unnoticed(&cert, &other_pem, cert_len);
        rewrite_unnoticed(&key, &other_key, key_len);
        assert_eq!(
            served_certificate(&srv),
            first("server.pem"),
            "[{name}] nothing reloads the files before SIGHUP"
        );
        srv.signal(libc::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(5);
        while served_certificate(&srv) != first("other.pem") {
            assert!(
                Instant::now() < deadline,
                "[{name}] the new certificate is not served 5 s after SIGHUP"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // The connection made before the reload works on.
        c.roundtrip(b"version\r\n", b"VERSION 1.6.45\r\n");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
