//! The image's entry points, without a shell. One static program under several names:
//!
//! - `docker-entrypoint.sh` (and `/entrypoint.sh`): the official memcached image's script,
//!
//!   ```sh
//!   if [ "${1#-}" != "$1" ]; then set -- memcached "$@"; fi
//!   exec "$@"
//!   ```
//!
//!   Arguments that start with `-` get `memcached` prepended; anything else is run as a
//!   command (looked up on `PATH`), replacing this process so the server is PID 1 and
//!   receives SIGTERM itself. With no arguments at all it runs `memcached` (the `CMD`).
//! - `run.sh` (`/run.sh`, `/opt/bitnami/scripts/memcached/run.sh`, and Bitnami's
//!   `entrypoint.sh` path): Bitnami's memcached image, as its Helm chart starts it
//!   ([`bitnami`]): the chart's environment variables become memcached's flags, then the
//!   arguments after the script's name, as Bitnami's `run.sh` builds them.
//! - `pgrep`: the one process tool Bitnami's chart runs in the container (its liveness
//!   probe is `pgrep memcached`): prints the IDs of the processes whose name contains the
//!   pattern, exits 0 if there is one, 1 if not.

mod bitnami;

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode};

const SERVER: &str = "memcached";

fn command_line(args: Vec<OsString>) -> Vec<OsString> {
    match args.first() {
        None => vec![SERVER.into()],
        Some(first) if first.as_bytes().starts_with(b"-") => {
            let mut full = Vec::with_capacity(args.len() + 1);
            full.push(SERVER.into());
            full.extend(args);
            full
        }
        Some(_) => args,
    }
}

/// Replaces this process with `argv`; returns only on failure, with a shell's status.
fn exec(argv: &[OsString], env: &[(String, String)], name: &str) -> ExitCode {
    let err = Command::new(&argv[0])
        .args(&argv[1..])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .exec();
    eprintln!("{name}: {}: {err}", argv[0].to_string_lossy());
    let code = if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    ExitCode::from(code)
}

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let rest: Vec<OsString> = args.collect();
    let name = Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.as_str() {
        "run.sh" | "entrypoint.sh" => {
            let env = |key: &str| std::env::var(key).ok();
            match bitnami::command(rest, &env, &bitnami::hostname()) {
                Ok((argv, extra_env)) => exec(&argv, &extra_env, "run.sh"),
                Err(e) => {
                    eprintln!("run.sh: {e}");
                    ExitCode::from(1)
                }
            }
        }
        "pgrep" => bitnami::pgrep(&rest),
        _ => exec(&command_line(rest), &[], "docker-entrypoint.sh"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Vec<String> {
        command_line(args.iter().map(OsString::from).collect())
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn shapes() {
        assert_eq!(run(&[]), ["memcached"]);
        assert_eq!(run(&["-m", "64"]), ["memcached", "-m", "64"]);
        assert_eq!(
            run(&["--extended=modern"]),
            ["memcached", "--extended=modern"]
        );
        assert_eq!(run(&["memcached", "-v"]), ["memcached", "-v"]);
        assert_eq!(run(&["memcrab", "-V"]), ["memcrab", "-V"]);
        // Bitnami's chart passes its script's path first: it is run (it is this program).
        assert_eq!(run(&["/run.sh", "-m", "64"]), ["/run.sh", "-m", "64"]);
    }
}
