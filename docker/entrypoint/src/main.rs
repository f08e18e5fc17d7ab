//! `docker-entrypoint.sh` of the official memcached image, without a shell:
//!
//! ```sh
//! if [ "${1#-}" != "$1" ]; then set -- memcached "$@"; fi
//! exec "$@"
//! ```
//!
//! Arguments that start with `-` get `memcached` prepended; anything else is run as a command
//! (looked up on `PATH`), replacing this process so the server is PID 1 and receives SIGTERM
//! itself. With no arguments at all it runs `memcached` (the image's `CMD`).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
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

fn main() -> ExitCode {
    let argv = command_line(std::env::args_os().skip(1).collect());
    let err = Command::new(&argv[0]).args(&argv[1..]).exec();
    // exec only returns on failure; 127/126 as a shell would exit.
    eprintln!("docker-entrypoint.sh: {}: {err}", argv[0].to_string_lossy());
    let code = if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    ExitCode::from(code)
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
    }
}
