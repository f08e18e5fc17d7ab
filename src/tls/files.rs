//! Reading what `-o ssl_chain_cert`, `ssl_key` and `ssl_ca_cert` name, OpenSSL's cipher
//! names for the suites rustls offers, and the certificate's expiry (a short walk over its
//! DER encoding: the one field needed does not justify an X.509 parser).

use std::path::Path;

use rustls::SupportedCipherSuite;
use rustls::crypto::ring::cipher_suite as suite;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// memcached's `ssl_keyformat` values (OpenSSL's `SSL_FILETYPE_PEM` and `_ASN1`).
pub const KEYFORMAT_PEM: i64 = 1;
pub const KEYFORMAT_DER: i64 = 2;

/// Files larger than this are not certificates or keys: refuse instead of reading them.
const MAX_FILE: u64 = 1 << 20;

fn read(path: &Path) -> Result<Vec<u8>, String> {
    let len = std::fs::metadata(path).map_err(os_error)?.len();
    if len > MAX_FILE {
        return Err(format!("file larger than {MAX_FILE} bytes"));
    }
    std::fs::read(path).map_err(os_error)
}

/// An I/O error as a short phrase ("No such file or directory").
fn os_error(e: std::io::Error) -> String {
    let text = e.to_string();
    text.split(" (os error").next().unwrap_or(&text).to_string()
}

/// A PEM error in words (the library's own text quotes markers as byte lists).
fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::MissingSectionEnd { end_marker } => format!(
            "bad PEM: no \"-----{}-----\" line",
            String::from_utf8_lossy(&end_marker)
        ),
        E::IllegalSectionStart { line } => format!(
            "bad PEM: bad section start {:?}",
            String::from_utf8_lossy(&line)
        ),
        e => format!("bad PEM: {e}"),
    }
}

/// The certificates of a PEM file, the server's own first.
pub fn chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if certs.is_empty() {
        return Err("no certificate in the file".into());
    }
    Ok(certs)
}

/// The private key in `path`, PEM or DER (`ssl_keyformat`).
pub fn key(path: &Path, format: i64) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read(path)?;
    match format {
        KEYFORMAT_PEM => PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => "no private key in the file".into(),
            e => pem_error(e),
        }),
        KEYFORMAT_DER => {
            PrivateKeyDer::try_from(bytes).map_err(|e| format!("not a DER private key: {e}"))
        }
        other => Err(format!(
            "unsupported key format {other} (1: PEM, 2: DER; memcrab has no OpenSSL engines)"
        )),
    }
}

/// The cipher suites an `ssl_ciphers` list names. memcached hands the list to OpenSSL's
/// `SSL_CTX_set_cipher_list`, which governs TLS 1.2 only (TLS 1.3's suites stay on) and
/// ignores names it does not know as long as one matches; so do we. Names are OpenSSL's
/// (`ECDHE-RSA-AES128-GCM-SHA256`) or IANA's (`TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`);
/// `ALL`, `DEFAULT` and `HIGH` stand for every suite here, all of which are strong.
/// `None`: nothing matched (memcached's start-up error).
pub fn tls12_suites(list: &str) -> Option<Vec<SupportedCipherSuite>> {
    let table: [(&str, SupportedCipherSuite); 6] = [
        (
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            "ECDHE-ECDSA-CHACHA20-POLY1305",
            suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
        (
            "ECDHE-RSA-AES256-GCM-SHA384",
            suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            "ECDHE-RSA-AES128-GCM-SHA256",
            suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            "ECDHE-RSA-CHACHA20-POLY1305",
            suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
    ];
    let mut chosen: Vec<SupportedCipherSuite> = Vec::new();
    for name in list.split([':', ',', ' ']).filter(|n| !n.is_empty()) {
        for (openssl, s) in &table {
            let iana = format!("{:?}", s.suite());
            let all = matches!(name, "ALL" | "DEFAULT" | "HIGH");
            if (all || name == *openssl || name == iana)
                && !chosen.iter().any(|c| c.suite() == s.suite())
            {
                chosen.push(*s);
            }
        }
    }
    (!chosen.is_empty()).then_some(chosen)
}

/// The `notAfter` time of a DER certificate, in unix seconds. `Certificate ::= SEQUENCE {
/// tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer,
/// validity SEQUENCE { notBefore, notAfter }, ... }, ... }` (RFC 5280, 4.1).
pub fn not_after(cert: &[u8]) -> Option<i64> {
    let (tag, cert_body, _) = element(cert)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, mut tbs, _) = element(cert_body)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, _, rest) = element(tbs)?;
    if tag == 0xa0 {
        tbs = rest; // the explicit version
    }
    // serialNumber, signature, issuer
    for _ in 0..3 {
        tbs = element(tbs)?.2;
    }
    let (tag, validity, _) = element(tbs)?;
    if tag != 0x30 {
        return None;
    }
    let (_, _, rest) = element(validity)?;
    let (tag, time, _) = element(rest)?;
    parse_time(tag, time)
}

/// One DER element: (tag, contents, what follows). Only definite lengths (DER has no other).
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// UTCTime (`YYMMDDHHMMSSZ`, years 1950-2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn parse_time(tag: u8, text: &[u8]) -> Option<i64> {
    let digits = |s: &[u8]| -> Option<i64> {
        s.iter().try_fold(0i64, |acc, &b| {
            b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
        })
    };
    let (year, rest) = match tag {
        0x17 if text.len() == 13 => {
            let yy = digits(&text[..2])?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
        }
        0x18 if text.len() == 15 => (digits(&text[..4])?, &text[4..]),
        _ => return None,
    };
    if rest.last() != Some(&b'Z') {
        return None;
    }
    let field = |i: usize| digits(&rest[i..i + 2]);
    let (month, day) = (field(0)?, field(2)?);
    let (hour, min, sec) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_convert_to_unix_seconds() {
        assert_eq!(parse_time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(parse_time(0x17, b"000229120000Z"), Some(951_825_600));
        assert_eq!(parse_time(0x18, b"20380119031408Z"), Some(2_147_483_648));
        assert_eq!(parse_time(0x17, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(parse_time(0x17, b"700101000000"), None);
        assert_eq!(parse_time(0x17, b"7001010000001"), None);
        assert_eq!(parse_time(0x18, b"2038011903140Z"), None);
    }

    #[test]
    fn truncated_or_hostile_der_is_refused_without_panicking() {
        assert_eq!(element(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(element(&[0x30, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(element(&[0x30]), None);
        let mut input = vec![0x30, 0x82, 0x01];
        for cut in 0..input.len() {
            assert_eq!(not_after(&input[..cut]), None);
        }
        input.clear();
        assert_eq!(not_after(&input), None);
    }

    #[test]
    fn cipher_lists_pick_tls12_suites_by_either_name() {
        let one = tls12_suites("ECDHE-RSA-AES128-GCM-SHA256").unwrap();
        assert_eq!(one, [suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]);
        let two =
            tls12_suites("bogus:TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,ECDHE-RSA-AES128-GCM-SHA256");
        assert_eq!(two.unwrap().len(), 2);
        assert_eq!(tls12_suites("HIGH").unwrap().len(), 6);
        assert_eq!(tls12_suites("RC4-MD5:NULL"), None);
        assert_eq!(tls12_suites(""), None);
    }
}
