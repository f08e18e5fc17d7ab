//! Command-line handling: validation errors, accepted option forms, signals.
//!
//! Divergence: `-U <port>` (UDP) is a startup error in memcrab, which has no
//! UDP support; memcached serves UDP. That test is memcrab-only.

use crate::common::*;
use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs a server command that is expected to exit on its own; kills it (by
/// PID) if it is still running after 5 s.
fn run_to_exit(kind: Kind, args: &[&str]) -> Outcome {
    let mut cmd: Command = base_command(kind);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "[{}] `{}` still running after 5 s",
                kind.name(),
                args.join(" ")
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    Outcome {
        code: status.code(),
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

/// Args that make a server start on a free port, plus `extra`.
fn with_port(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "-p",
        &free_port().to_string(),
        "-l",
        "127.0.0.1",
        "-u",
        "nobody",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

#[track_caller]
fn expect_startup_error(extra: &[&str], message: &str) {
    for kind in targets() {
        let args = with_port(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = run_to_exit(kind, &args);
        assert_eq!(
            o.code,
            Some(1),
            "[{}] {extra:?}: exit code; stderr {:?}",
            kind.name(),
            o.stderr
        );
        assert!(
            o.stderr.contains(message),
            "[{}] {extra:?}: stderr {:?} lacks {message:?}",
            kind.name(),
            o.stderr
        );
    }
}

#[test]
fn zero_max_connections_is_rejected() {
    expect_startup_error(&["-c", "0"], "Maximum connections must be greater than 0");
}

#[test]
fn unknown_suboption_is_rejected() {
    expect_startup_error(&["-o", "bogus_opt"], "Illegal suboption \"bogus_opt\"");
}

#[test]
fn version_flag_prints_version_and_exits() {
    for kind in targets() {
        let o = run_to_exit(kind, &["-V"]);
        assert_eq!(o.code, Some(0), "[{}] -V exit code", kind.name());
        let line = o.stdout.trim();
        assert!(
            !line.is_empty() && !line.contains('\n') && line.bytes().any(|b| b.is_ascii_digit()),
            "[{}] -V printed {:?}",
            kind.name(),
            o.stdout
        );
    }
}

#[test]
fn udp_port_is_a_startup_error() {
    if !targets().contains(&Kind::Memcrab) {
        return;
    }
    let args = with_port(&["-U", "1234"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run_to_exit(Kind::Memcrab, &args);
    assert_ne!(o.code, Some(0), "[memcrab] -U 1234 exited 0");
    assert!(
        o.stderr.to_lowercase().contains("udp"),
        "[memcrab] stderr {:?} does not mention UDP",
        o.stderr
    );
}

#[test]
fn sigterm_exits_with_status_zero() {
    for kind in targets() {
        let mut srv = Server::start(kind, &[]);
        let mut c = srv.connect();
        store(&mut c, "k", b"v");
        srv.signal(libc::SIGTERM);
        let st = srv
            .wait_exit(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("[{}] still running 5 s after SIGTERM", kind.name()));
        assert_eq!(st.code(), Some(0), "[{}] exit status {st}", kind.name());
    }
}

#[test]
fn sigint_exits_with_status_zero() {
    for kind in targets() {
        let mut srv = Server::start(kind, &[]);
        srv.signal(libc::SIGINT);
        let st = srv
            .wait_exit(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("[{}] still running 5 s after SIGINT", kind.name()));
        assert_eq!(st.code(), Some(0), "[{}] exit status {st}", kind.name());
    }
}

#[test]
fn option_spellings_are_accepted() {
    let forms: &[&[&str]] = &[
        &["-m64"],
        &["--memory-limit=64"],
        &["-m", "64", "-c", "100", "-t", "2"],
        &["--extended=modern"],
        &["-o", "modern,idle_timeout=5"],
        &["-o", "modern", "-o", "idle_timeout=5"],
        &["-I", "5m"],
        &["-vv"],
        &["-v"],
        &["--conn-limit=50", "--threads=2"],
        &["-b", "512", "-R", "10", "-f", "1.25", "-n", "48"],
    ];
    for args in forms {
        for_each_target(args, |srv, c| {
            c.send(b"version\r\n");
            let l = c.read_line();
            assert!(
                l.starts_with("VERSION "),
                "[{}] {args:?}: {l:?}",
                srv.name()
            );
            c.roundtrip(
                b"set k 0 0 1\r\nx\r\nget k\r\n",
                b"STORED\r\nVALUE k 0 1\r\nx\r\nEND\r\n",
            );
        });
    }
}

#[test]
fn options_take_effect_in_stats_settings() {
    for_each_target(&["-m64", "--conn-limit=50", "-t", "3"], |_, c| {
        let st = c.stats("stats settings");
        assert_eq!(lookup(&st, "maxbytes"), Some("67108864"), "[{}]", c.label());
        assert_eq!(lookup(&st, "maxconns"), Some("50"), "[{}]", c.label());
        assert_eq!(lookup(&st, "num_threads"), Some("3"), "[{}]", c.label());
    });
}

#[test]
fn verbose_mode_logs_to_stderr_only() {
    for_each_target(&["-vv"], |srv, c| {
        c.roundtrip(b"set k 0 0 1\r\nx\r\n", b"STORED\r\n");
        c.roundtrip(b"get k\r\n", b"VALUE k 0 1\r\nx\r\nEND\r\n");
        let logged = wait_until(Duration::from_secs(2), || !srv.stderr.text().is_empty());
        assert!(logged, "[{}] -vv logged nothing to stderr", srv.name());
    });
}
