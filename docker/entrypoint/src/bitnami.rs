//! Bitnami's memcached image, as its Helm chart starts it, so that a user of that chart can
//! swap only the image.
//!
//! The chart sets no `command`; with persistence it passes the arguments
//! `/run.sh --memory-file=/cache-state/memory_file`, and it sets `MEMCACHED_PORT_NUMBER`
//! (and the `MEMCACHED_*` variables a user adds through `extraEnvVars`). Bitnami's
//! `run.sh` turns them into memcached's flags in this order, then appends its own
//! arguments, which therefore win:
//!
//! | variable | flag |
//! |---|---|
//! | `MEMCACHED_PORT_NUMBER` (default 11211) | `-p`, always, with `-v` |
//! | `MEMCACHED_LISTEN_ADDRESS` | `-l` |
//! | `MEMCACHED_PASSWORD` (user `MEMCACHED_USERNAME`, default `root`) | `-S` |
//! | `MEMCACHED_CACHE_SIZE` | `-m` |
//! | `MEMCACHED_MAX_CONNECTIONS` | `-c` |
//! | `MEMCACHED_THREADS` | `-t` |
//! | `MEMCACHED_MAX_ITEM_SIZE` | `-I` |
//! | `MEMCACHED_TLS_ENABLED=yes` and `MEMCACHED_TLS_{CERT,KEY,CA}_FILE`, `_VERIFY_MODE` | `-Z -o ssl_…` |
//! | `MEMCACHED_EXTRA_FLAGS` | split on white space |
//!
//! Each variable may instead name a file in `<VARIABLE>_FILE` (as Bitnami's images read
//! Kubernetes secrets); an empty value counts as unset. Bitnami's `-u memcached` is left
//! out: the image runs as its own user, and `-u` only matters to a server started as root.
//! With a password, Bitnami writes a Cyrus SASL database; here the user and password go to
//! memcached's own password-database format (`MEMCACHED_SASL_PWDB`, which memcrab reads),
//! in the writable configuration directory the chart mounts, else in the temporary one.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The names Bitnami's scripts go by; an argument with one of them is the script itself.
const SCRIPTS: [&str; 2] = ["run.sh", "entrypoint.sh"];
const DEFAULT_CONF_DIR: &str = "/opt/bitnami/memcached/conf";

fn is_script(arg: &OsString) -> bool {
    Path::new(arg)
        .file_name()
        .is_some_and(|n| SCRIPTS.iter().any(|s| n == *s))
}

/// A variable as Bitnami's `memcached-env.sh` reads it: `<NAME>_FILE` names a file holding
/// the value (trailing newlines dropped, as `$(< file)` does), else `<NAME>`; empty is
/// unset.
fn var(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Result<Option<String>, String> {
    let value = match env(&format!("{name}_FILE")).filter(|f| !f.is_empty()) {
        Some(file) => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("cannot read {name}_FILE ({file}): {e}"))?;
            Some(text.trim_end_matches('\n').to_string())
        }
        None => env(name),
    };
    Ok(value.filter(|v| !v.is_empty()))
}

/// The server's command line, and environment variables to add to its own.
pub type Launch = (Vec<OsString>, Vec<(String, String)>);

/// The server's command line and the environment it needs, from the chart's variables and
/// the arguments after the script's name.
pub fn command(
    args: Vec<OsString>,
    env: &dyn Fn(&str) -> Option<String>,
    hostname: &str,
) -> Result<Launch, String> {
    // `entrypoint.sh /opt/bitnami/scripts/memcached/run.sh …`: the scripts' own names go.
    let args: Vec<OsString> = args.into_iter().skip_while(is_script).collect();
    let mut argv: Vec<OsString> = vec!["memcached".into()];
    let mut extra_env = Vec::new();
    let flag = |argv: &mut Vec<OsString>, f: &str, v: String| {
        argv.push(f.into());
        argv.push(v.into());
    };
    let port = var(env, "MEMCACHED_PORT_NUMBER")?.unwrap_or_else(|| "11211".into());
    flag(&mut argv, "-p", port);
    argv.push("-v".into());
    if let Some(addr) = var(env, "MEMCACHED_LISTEN_ADDRESS")? {
        flag(&mut argv, "-l", addr);
    }
    if let Some(password) = var(env, "MEMCACHED_PASSWORD")? {
        let user = var(env, "MEMCACHED_USERNAME")?.unwrap_or_else(|| "root".into());
        let conf = var(env, "MEMCACHED_CONF_DIR")?.unwrap_or_else(|| DEFAULT_CONF_DIR.into());
        let path = write_password_db(&Path::new(&conf).join("sasl2"), &user, &password, hostname)?;
        argv.push("-S".into());
        extra_env.push(("MEMCACHED_SASL_PWDB".into(), path.display().to_string()));
    }
    for (name, f) in [
        ("MEMCACHED_CACHE_SIZE", "-m"),
        ("MEMCACHED_MAX_CONNECTIONS", "-c"),
        ("MEMCACHED_THREADS", "-t"),
        ("MEMCACHED_MAX_ITEM_SIZE", "-I"),
    ] {
        if let Some(v) = var(env, name)? {
            flag(&mut argv, f, v);
        }
    }
    if var(env, "MEMCACHED_TLS_ENABLED")?.as_deref() == Some("yes") {
        argv.push("-Z".into());
        for (name, option) in [
            ("MEMCACHED_TLS_CERT_FILE", "ssl_chain_cert"),
            ("MEMCACHED_TLS_KEY_FILE", "ssl_key"),
            ("MEMCACHED_TLS_CA_FILE", "ssl_ca_cert"),
            ("MEMCACHED_TLS_VERIFY_MODE", "ssl_verify_mode"),
        ] {
            if let Some(v) = env(name).filter(|v| !v.is_empty()) {
                flag(&mut argv, "-o", format!("{option}={v}"));
            }
        }
    }
    if let Some(extra) = var(env, "MEMCACHED_EXTRA_FLAGS")? {
        argv.extend(extra.split_whitespace().map(OsString::from));
    }
    argv.extend(args);
    Ok((argv, extra_env))
}

/// Writes `user@realm:password` (the realm is the host name, as Cyrus SASL adds it) to a
/// file only the server's user can read, in `dir` if it can be made, else in the
/// temporary directory.
fn write_password_db(
    dir: &Path,
    user: &str,
    password: &str,
    hostname: &str,
) -> Result<PathBuf, String> {
    if password.contains([':', '\n']) || user.contains([':', '\n']) {
        return Err("MEMCACHED_USERNAME and MEMCACHED_PASSWORD cannot hold ':' or a newline in memcached's password database".into());
    }
    let entry = if user.contains('@') || hostname.is_empty() {
        format!("{user}:{password}\n")
    } else {
        format!("{user}@{hostname}:{password}\n")
    };
    let mut last = String::new();
    for dir in [dir.to_path_buf(), std::env::temp_dir()] {
        let path = dir.join("memcached-sasl-pwdb");
        let written = std::fs::create_dir_all(&dir).and_then(|()| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)?;
            f.write_all(entry.as_bytes())
        });
        match written {
            Ok(()) => return Ok(path),
            Err(e) => last = format!("cannot write {}: {e}", path.display()),
        }
    }
    Err(last)
}

/// This host's name, the SASL realm (what `gethostname` gives).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// `pgrep [-x] [-f] PATTERN`: the IDs of other processes whose name (`-f`: whole command
/// line) contains PATTERN (`-x`: equals it); `^` and `$` anchor it. Exit 0 if any, 1 if
/// none, 2 on a usage error, as procps' pgrep.
pub fn pgrep(args: &[OsString]) -> ExitCode {
    let (mut exact, mut full, mut pattern) = (false, false, None);
    for a in args {
        match a.to_str() {
            Some("-x") => exact = true,
            Some("-f") => full = true,
            Some(p) if pattern.is_none() && !p.starts_with('-') => pattern = Some(p.to_string()),
            _ => {
                eprintln!("pgrep: usage: pgrep [-x] [-f] PATTERN");
                return ExitCode::from(2);
            }
        }
    }
    let Some(pattern) = pattern else {
        eprintln!("pgrep: no matching criteria specified");
        return ExitCode::from(2);
    };
    let me = std::process::id().to_string();
    let mut found = false;
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return ExitCode::from(3);
    };
    let mut pids: Vec<u32> = procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    for pid in pids {
        if pid.to_string() == me {
            continue;
        }
        let name = if full {
            std::fs::read(format!("/proc/{pid}/cmdline")).map(|b| {
                let s: Vec<u8> = b.iter().map(|&c| if c == 0 { b' ' } else { c }).collect();
                String::from_utf8_lossy(&s).trim_end().to_string()
            })
        } else {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).map(|s| s.trim_end().to_string())
        };
        if name.is_ok_and(|name| matches(&name, &pattern, exact)) {
            println!("{pid}");
            found = true;
        }
    }
    ExitCode::from(if found { 0 } else { 1 })
}

fn matches(name: &str, pattern: &str, exact: bool) -> bool {
    let (start, p) = match pattern.strip_prefix('^') {
        Some(p) => (true, p),
        None => (exact, pattern),
    };
    let (end, p) = match p.strip_suffix('$') {
        Some(p) => (true, p),
        None => (exact, p),
    };
    match (start, end) {
        (true, true) => name == p,
        (true, false) => name.starts_with(p),
        (false, true) => name.ends_with(p),
        (false, false) => name.contains(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(args: &[&str], vars: &[(&str, &str)]) -> (Vec<String>, Vec<(String, String)>) {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env = move |k: &str| vars.get(k).cloned();
        let (argv, env) =
            command(args.iter().map(OsString::from).collect(), &env, "pod-0").unwrap();
        (
            argv.into_iter().map(|a| a.into_string().unwrap()).collect(),
            env,
        )
    }

    #[test]
    fn the_charts_persistence_arguments() {
        let (argv, env) = run(
            &["--memory-file=/cache-state/memory_file"],
            &[
                ("MEMCACHED_PORT_NUMBER", "11211"),
                ("BITNAMI_DEBUG", "false"),
            ],
        );
        assert_eq!(
            argv,
            [
                "memcached",
                "-p",
                "11211",
                "-v",
                "--memory-file=/cache-state/memory_file"
            ]
        );
        assert!(env.is_empty());
    }

    #[test]
    fn every_variable_in_run_sh_order_then_the_arguments() {
        let (argv, _) = run(
            &["/opt/bitnami/scripts/memcached/run.sh", "-m", "300"],
            &[
                ("MEMCACHED_PORT_NUMBER", "11311"),
                ("MEMCACHED_LISTEN_ADDRESS", "0.0.0.0"),
                ("MEMCACHED_CACHE_SIZE", "256"),
                ("MEMCACHED_MAX_CONNECTIONS", "2000"),
                ("MEMCACHED_THREADS", "2"),
                ("MEMCACHED_MAX_ITEM_SIZE", "2097152"),
                ("MEMCACHED_EXTRA_FLAGS", " -o  modern\t-R 30 "),
                ("MEMCACHED_THREADS_UNRELATED", "9"),
            ],
        );
        assert_eq!(
            argv.join(" "),
            "memcached -p 11311 -v -l 0.0.0.0 -m 256 -c 2000 -t 2 -I 2097152 -o modern -R 30 -m 300"
        );
    }

    #[test]
    fn empty_values_are_unset_and_file_variables_are_read() {
        let dir = std::env::temp_dir().join(format!("bitnami-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("size");
        std::fs::write(&file, "128\n\n").unwrap();
        let (argv, _) = run(
            &[],
            &[
                ("MEMCACHED_CACHE_SIZE_FILE", file.to_str().unwrap()),
                ("MEMCACHED_CACHE_SIZE", "999"),
                ("MEMCACHED_THREADS", ""),
            ],
        );
        assert_eq!(argv.join(" "), "memcached -p 11211 -v -m 128");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_password_writes_the_password_database_and_turns_on_sasl() {
        let dir = std::env::temp_dir().join(format!("bitnami-conf-{}", std::process::id()));
        let (argv, env) = run(
            &[],
            &[
                ("MEMCACHED_USERNAME", "app"),
                ("MEMCACHED_PASSWORD", "s3cret"),
                ("MEMCACHED_CONF_DIR", dir.to_str().unwrap()),
            ],
        );
        assert_eq!(argv.join(" "), "memcached -p 11211 -v -S");
        assert_eq!(env[0].0, "MEMCACHED_SASL_PWDB");
        let db = std::fs::read_to_string(&env[0].1).unwrap();
        assert_eq!(db, "app@pod-0:s3cret\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tls_variables_become_memcacheds_options() {
        let (argv, _) = run(
            &[],
            &[
                ("MEMCACHED_TLS_ENABLED", "yes"),
                ("MEMCACHED_TLS_CERT_FILE", "/certs/tls.crt"),
                ("MEMCACHED_TLS_KEY_FILE", "/certs/tls.key"),
            ],
        );
        assert_eq!(
            argv.join(" "),
            "memcached -p 11211 -v -Z -o ssl_chain_cert=/certs/tls.crt -o ssl_key=/certs/tls.key"
        );
    }

    #[test]
    fn pgrep_patterns() {
        assert!(matches("memcached", "memcached", false));
        assert!(matches("memcached", "cache", false));
        assert!(!matches("memcached", "cache", true));
        assert!(matches("memcached", "^mem", false));
        assert!(!matches("memcached", "^cache", false));
        assert!(matches("memcached", "ched$", false));
        assert!(!matches("memcrab", "memcached", false));
    }
}
