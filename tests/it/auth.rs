//! Authentication, byte for byte against memcached 1.6.45: SASL PLAIN over the binary
//! protocol (`-S`, users in `$MEMCACHED_SASL_PWDB`) and ASCII authentication (`-Y`).
//! Right and wrong passwords, unknown users, malformed and oversized auth packets, requests
//! before authentication, and the counters.

use std::io::Write as _;
use std::path::PathBuf;

use crate::binary::{END_OPAQUE, differential_with_env, noop, packet};
use crate::common::hostname;

fn sasl(op: u8, mech: &[u8], data: &[u8], opaque: u32) -> Vec<u8> {
    packet(op, &[], mech, data, opaque, 0)
}

fn auth(data: &[u8]) -> Vec<u8> {
    sasl(0x21, b"PLAIN", data, 0x11)
}

/// A directory holding the password database and the SASL configuration memcached needs
/// (`mech_list: plain`), readable by `nobody`.
fn sasl_files() -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("memcrab-it-sasl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pwdb = dir.join("pwdb");
    let mut f = std::fs::File::create(&pwdb).unwrap();
    let host = hostname();
    writeln!(
        f,
        "alice@{host}:secret\nbob:nohost\ncarol@{host}:pw:ignored"
    )
    .unwrap();
    std::fs::write(dir.join("memcached.conf"), "mech_list: plain\n").unwrap();
    (dir, pwdb)
}

fn with_end(mut v: Vec<u8>) -> Vec<u8> {
    v.extend(noop(END_OPAQUE));
    v
}

#[test]
fn sasl_plain_as_memcached_answers() {
    let (dir, pwdb) = sasl_files();
    let (dir, pwdb) = (dir.to_str().unwrap(), pwdb.to_str().unwrap());
    let env = [("MEMCACHED_SASL_PWDB", pwdb), ("SASL_CONF_PATH", dir)];
    let ok = || auth(b"\0alice\0secret");
    let set = packet(0x01, &[0; 8], b"k", b"v", 2, 0);
    let get = packet(0x00, &[], b"k", &[], 3, 0);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("no request before authentication", with_end(get.clone())),
        (
            "an unknown opcode before authentication",
            with_end(packet(0x50, &[], &[], &[], 1, 0)),
        ),
        (
            "a long key before authentication",
            with_end(packet(0x00, &[], &[b'k'; 251], &[], 1, 0)),
        ),
        (
            "bad lengths before authentication",
            [
                crate::binary::raw(0x00, 10, 0, 3, 1, 0, b"foo"),
                vec![0; 30],
            ]
            .concat(),
        ),
        (
            "version needs none",
            with_end(packet(0x0b, &[], &[], &[], 1, 0)),
        ),
        ("list mechanisms", with_end(sasl(0x20, &[], &[], 1))),
        (
            "the right password",
            with_end([ok(), set.clone(), get.clone()].concat()),
        ),
        (
            "the user with a realm",
            with_end(
                [
                    auth(format!("\0alice@{}\0secret", hostname()).as_bytes()),
                    get.clone(),
                ]
                .concat(),
            ),
        ),
        (
            "authzid the same user",
            with_end([auth(b"alice\0alice\0secret"), get.clone()].concat()),
        ),
        (
            "a password field after another colon",
            with_end([auth(b"\0carol\0pw"), get.clone()].concat()),
        ),
        (
            "mechanism in lower case",
            with_end([sasl(0x21, b"plain", b"\0alice\0secret", 1), get.clone()].concat()),
        ),
        (
            "a wrong password",
            with_end([auth(b"\0alice\0secrex"), get.clone()].concat()),
        ),
        (
            "a short password",
            with_end([auth(b"\0alice\0secre"), get.clone()].concat()),
        ),
        (
            "an unknown user",
            with_end([auth(b"\0mallory\0secret"), get.clone()].concat()),
        ),
        (
            "a line without a realm",
            with_end([auth(b"\0bob\0nohost"), get.clone()].concat()),
        ),
        (
            "another identity",
            with_end([auth(b"bob\0alice\0secret"), get.clone()].concat()),
        ),
        (
            "a malformed message",
            with_end([auth(b"garbage"), get.clone()].concat()),
        ),
        (
            "a trailing NUL",
            with_end([auth(b"\0alice\0secret\0"), get.clone()].concat()),
        ),
        (
            "another mechanism",
            with_end([sasl(0x21, b"CRAM-MD5", b"\0alice\0secret", 1), get.clone()].concat()),
        ),
        (
            "a 33-byte mechanism",
            with_end(
                [
                    sasl(0x21, &[b'P'; 33], b"\0alice\0secret", 1),
                    ok(),
                    get.clone(),
                ]
                .concat(),
            ),
        ),
        (
            "oversized data",
            with_end([auth(&[b'x'; 5000]), sasl(0x20, &[], &[], 2)].concat()),
        ),
        (
            "continue, then step",
            with_end(
                [
                    auth(b""),
                    sasl(0x22, b"PLAIN", b"\0alice\0secret", 2),
                    get.clone(),
                ]
                .concat(),
            ),
        ),
        (
            "continue, then a wrong step",
            with_end(
                [
                    auth(b""),
                    sasl(0x22, b"PLAIN", b"\0alice\0x", 2),
                    get.clone(),
                ]
                .concat(),
            ),
        ),
        (
            "a step without a start",
            with_end([sasl(0x22, b"PLAIN", b"\0alice\0secret", 2), get.clone()].concat()),
        ),
        (
            "a failure after success unauthenticates",
            with_end([ok(), auth(b"\0alice\0bad"), get.clone()].concat()),
        ),
        (
            "listing mechanisms unauthenticates",
            with_end([ok(), sasl(0x20, &[], &[], 2), get.clone()].concat()),
        ),
        (
            "auth with extras",
            with_end(packet(0x21, &[0; 4], b"PLAIN", b"\0alice\0secret", 1, 0)),
        ),
        (
            "auth without a mechanism",
            with_end(sasl(0x21, b"", b"\0alice\0secret", 1)),
        ),
        (
            "list mechanisms with a body",
            with_end(sasl(0x20, b"x", &[], 1)),
        ),
        (
            "text is not served",
            b"version\r\nversion\r\nversion\r\n".to_vec(),
        ),
    ];
    differential_with_env(&["-S"], &env, &cases);
}

#[test]
fn ascii_authentication_as_memcached_answers() {
    let (dir, _) = sasl_files();
    let file = dir.join("authfile");
    std::fs::write(&file, "alice:secret\nbob:pw2\n").unwrap();
    let file = file.to_str().unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("no command before authentication", b"version\r\n".to_vec()),
        (
            "the rest of the read is dropped",
            b"get a\r\nversion\r\n".to_vec(),
        ),
        ("meta commands too", b"mg a v\r\n".to_vec()),
        ("garbage", b"bogus\r\n".to_vec()),
        (
            "the right password",
            b"set x 0 0 12\r\nalice secret\r\nget a\r\nset a 0 0 1\r\n1\r\nget a\r\n".to_vec(),
        ),
        (
            "key, flags and exptime do not matter",
            b"set whatever 5 100 12\r\nalice secret\r\nget whatever\r\n".to_vec(),
        ),
        (
            "noreply",
            b"set x 0 0 12 noreply\r\nalice secret\r\nget a\r\n".to_vec(),
        ),
        (
            "a wrong password",
            b"set x 0 0 11\r\nalice wrong\r\n".to_vec(),
        ),
        (
            "a wrong password, then a command",
            b"set x 0 0 11\r\nalice wrong\r\nget a\r\n".to_vec(),
        ),
        (
            "an unknown user",
            b"set x 0 0 12\r\nmallo secret\r\n".to_vec(),
        ),
        ("no space", b"set x 0 0 5\r\nalice\r\n".to_vec()),
        ("two spaces", b"set x 0 0 13\r\nalice  secret\r\n".to_vec()),
        (
            "a trailing token",
            b"set x 0 0 14\r\nalice secret x\r\n".to_vec(),
        ),
        (
            "add does not authenticate",
            b"add x 0 0 12\r\nalice secret\r\n".to_vec(),
        ),
        (
            "ms does not authenticate",
            b"ms x 12\r\nalice secret\r\n".to_vec(),
        ),
        ("quit", b"quit\r\n".to_vec()),
        ("a binary request", noop(1)),
        (
            "a reply before authentication is replaced by the next",
            b"get k\r\nset x 0 0 12\r\nalice secret\r\nget k\r\n".to_vec(),
        ),
        (
            "key and flags are not looked at",
            b"set x abc 0 12\r\nalice secret\r\nversion\r\n".to_vec(),
        ),
        (
            "a long key either",
            [
                b"set ".as_slice(),
                &[b'k'; 300],
                b" 0 0 12\r\nalice secret\r\nversion\r\n",
            ]
            .concat(),
        ),
        ("a bad length", b"set x 0 0 -1\r\n".to_vec()),
        ("a line over 2 KiB closes", vec![b'g'; 3000]),
    ];
    differential_with_env(&["-Y", file], &[], &cases);
}

/// auth_cmds and auth_errors count every attempt and every failure, as memcached counts
/// them, for SASL and for `-Y`.
#[test]
fn auth_counters_follow_attempts() {
    use crate::binary::exchange_stat;
    let (dir, pwdb) = sasl_files();
    let (dir, pwdb) = (dir.to_str().unwrap(), pwdb.to_str().unwrap());
    let env = [("MEMCACHED_SASL_PWDB", pwdb), ("SASL_CONF_PATH", dir)];
    let attempts = [
        auth(b"\0alice\0secret"),
        auth(b"\0alice\0wrong"),
        auth(b""),
        sasl(0x22, b"PLAIN", b"\0alice\0secret", 5),
    ]
    .concat();
    let counts = exchange_stat(&["-S"], &env, &attempts, &["auth_cmds", "auth_errors"]);
    assert_eq!(counts[0], counts[1], "memcrab, memcached");
    // The continue is not an attempt of its own: it is counted when its step ends.
    assert_eq!(counts[0], vec!["3".to_string(), "1".to_string()]);
}

/// memcached refuses a `-B` its authentication cannot work in, with its message and exit
/// status 64; with both `-S` and `-Y`, `-Y` is served.
#[test]
fn authentication_and_protocol_flags_as_memcached_takes_them() {
    use crate::common::{Kind, base_command, oracle_unavailable};
    let (dir, pwdb) = sasl_files();
    let file = dir.join("authfile2");
    std::fs::write(&file, "alice:secret\n").unwrap();
    let file = file.to_str().unwrap().to_string();
    let blank = dir.join("blank");
    std::fs::write(&blank, "alice:secret\n\nbob:x\n").unwrap();
    let blank = blank.to_str().unwrap().to_string();
    let cases: Vec<Vec<&str>> = vec![
        vec!["-S", "-B", "ascii"],
        vec!["-S", "-B", "auto"],
        vec!["-Y", &file, "-B", "binary"],
        vec!["-Y", &file, "-B", "auto"],
        vec!["-Y", &blank],
    ];
    let kinds: &[Kind] = if oracle_unavailable().is_none() {
        &[Kind::Memcrab, Kind::Memcached]
    } else {
        &[Kind::Memcrab]
    };
    for args in &cases {
        let outcomes: Vec<_> = kinds
            .iter()
            .map(|&kind| {
                let out = base_command(kind)
                    .args(["-p", "0", "-U", "0", "-u", "nobody"])
                    .args(args)
                    .env("MEMCACHED_SASL_PWDB", &pwdb)
                    .env("SASL_CONF_PATH", &dir)
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stderr);
                let first = text.lines().last().unwrap_or("").trim().to_string();
                (out.status.code(), first)
            })
            .collect();
        assert_ne!(outcomes[0].0, Some(0), "{args:?} started");
        if let [mine, theirs] = outcomes.as_slice() {
            assert_eq!(mine, theirs, "{args:?}: memcrab, memcached");
        }
    }
}
