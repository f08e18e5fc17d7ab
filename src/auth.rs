//! Credentials: memcached's password files and the checks of SASL PLAIN (`-S`, binary
//! protocol) and ASCII authentication (`-Y`). Pure: bytes and files in, yes or no out.
//!
//! Both files hold `user:password` lines, as memcached reads them:
//! - `MEMCACHED_SASL_PWDB` (with `-S`) is read again at every attempt, so edits apply at
//!   once. A SASL user name without a realm gets `@<hostname>` appended first (Cyrus SASL
//!   does so for memcached), so a line reads `user@host:password`; anything after a
//!   further `:` is ignored.
//! - The `-Y` file is read once at start-up; a line without a `:` stops the server.
//!
//! Every check reads every entry and compares every byte: how long an attempt takes does
//! not depend on whether the user exists, where it is in the file, or how much of the
//! password was right.

use std::path::Path;

/// The SASL mechanisms served, as `SASL_LIST_MECHS` lists them.
pub const MECHANISMS: &str = "PLAIN";
/// memcached's longest mechanism name.
pub const MAX_MECHANISM_LEN: usize = 32;

/// `user:password` entries.
#[derive(Clone, Default)]
pub struct Passwords {
    entries: Vec<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Passwords({} entries)", self.entries.len())
    }
}

impl Passwords {
    /// Entries as the SASL password database reads them: lines with a `:`, the password up
    /// to the next `:` or the end of the line; other lines are skipped.
    pub fn sasl_db(text: &[u8]) -> Self {
        let entries = lines(text)
            .filter_map(|line| {
                let colon = line.iter().position(|&b| b == b':')?;
                let rest = &line[colon + 1..];
                let end = rest.iter().position(|&b| b == b':').unwrap_or(rest.len());
                Some((line[..colon].to_vec(), rest[..end].to_vec()))
            })
            .collect();
        Self { entries }
    }

    /// Entries of a `-Y` file: every line `user:password` (the password is the rest of the
    /// line). `None` when a line (an empty one too) has no `:` or there is none, as
    /// memcached refuses to start on either.
    pub fn auth_file(text: &[u8]) -> Option<Self> {
        let mut entries = Vec::new();
        // Every line counts, an empty one too; only the end of the last is optional.
        let text = text.strip_suffix(b"\n").unwrap_or(text);
        for line in text.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = line.iter().position(|&b| b == b':')?;
            entries.push((line[..colon].to_vec(), line[colon + 1..].to_vec()));
        }
        (!entries.is_empty()).then_some(Self { entries })
    }

    /// Whether `user` has `password`, in time that depends only on the file's size and the
    /// lengths given.
    pub fn check(&self, user: &[u8], password: &[u8]) -> bool {
        let mut found = 0u8;
        for (u, p) in &self.entries {
            found |= ct_eq(u, user) & ct_eq(p, password);
        }
        found == 1
    }
}

/// The lines of a file, without `\n` or `\r\n`, empty ones left out.
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
}

/// 1 if equal, 0 if not, looking at every byte of both (the length of each is no secret
/// worth keeping: both are bounded and the loop runs over the longer).
fn ct_eq(a: &[u8], b: &[u8]) -> u8 {
    let mut diff = (a.len() != b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(!x);
        diff |= x ^ y;
    }
    // Folds any set bit into bit 0 without a branch.
    let d = diff as u32;
    (1 ^ ((d | d.wrapping_neg()) >> 31)) as u8
}

/// A SASL PLAIN message: `authzid NUL authcid NUL password` (RFC 4616), as
/// `(authzid, authcid, password)`. `None` when it is malformed.
pub fn plain(message: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let mut parts = message.splitn(3, |&b| b == 0);
    let (authzid, authcid, password) = (parts.next()?, parts.next()?, parts.next()?);
    if authcid.is_empty() || password.contains(&0) {
        return None;
    }
    Some((authzid, authcid, password))
}

/// The SASL user name the password database is searched for: `user@realm`, the realm
/// being this host's name unless the user gave one.
pub fn sasl_user(authcid: &[u8], hostname: &str) -> Vec<u8> {
    let mut user = authcid.to_vec();
    if !authcid.contains(&b'@') && !hostname.is_empty() {
        user.push(b'@');
        user.extend_from_slice(hostname.as_bytes());
    }
    user
}

/// Checks a SASL PLAIN message against the password database at `path` (read now). The
/// identity to act as must be none or the user itself (with or without its realm):
/// memcached allows no proxying.
pub fn check_sasl(path: &Path, hostname: &str, message: &[u8]) -> bool {
    let db = std::fs::read(path).map(|t| Passwords::sasl_db(&t));
    let Ok(db) = db else {
        return false;
    };
    let parsed = plain(message).map(|(authzid, authcid, password)| {
        let user = sasl_user(authcid, hostname);
        let own = authzid.is_empty() || authzid == authcid || authzid == user.as_slice();
        (user, password, own)
    });
    // A malformed message still costs a lookup, so it takes as long as a wrong password.
    let (user, password, own) = parsed.unwrap_or((Vec::new(), b"", false));
    db.check(&user, password) && own
}

/// This host's name, the default SASL realm.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`, which we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc != 0 {
        return String::new();
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_equality() {
        assert_eq!(ct_eq(b"secret", b"secret"), 1);
        assert_eq!(ct_eq(b"secret", b"secreT"), 0);
        assert_eq!(ct_eq(b"secret", b"secre"), 0);
        assert_eq!(ct_eq(b"", b""), 1);
        assert_eq!(ct_eq(b"", b"\xff"), 0);
        assert_eq!(ct_eq(b"\x00", b""), 0);
    }

    #[test]
    fn sasl_db_lines_as_memcached_reads_them() {
        let db = Passwords::sasl_db(b"alice@vm:secret\r\nbob:pw\ncarol@vm:pw:extra\nnocolon\n");
        assert!(db.check(b"alice@vm", b"secret"));
        assert!(!db.check(b"alice@vm", b"secre"));
        assert!(!db.check(b"alice", b"secret"));
        assert!(db.check(b"carol@vm", b"pw"));
        assert!(db.check(b"bob", b"pw"));
        assert!(!db.check(b"nocolon", b""));
    }

    #[test]
    fn plain_messages() {
        let triple = |a: &'static [u8], b: &'static [u8], c: &'static [u8]| Some((a, b, c));
        assert_eq!(plain(b"\0alice\0secret"), triple(b"", b"alice", b"secret"));
        assert_eq!(
            plain(b"bob\0alice\0secret"),
            triple(b"bob", b"alice", b"secret")
        );
        assert_eq!(plain(b"\0alice\0secret\0"), None);
        assert_eq!(plain(b"\0alice"), None);
        assert_eq!(plain(b""), None);
        assert_eq!(sasl_user(b"alice", "vm"), b"alice@vm");
        assert_eq!(sasl_user(b"alice@x", "vm"), b"alice@x");
    }

    #[test]
    fn auth_files_refuse_a_malformed_line() {
        assert!(
            Passwords::auth_file(b"a:b\nc:d:e\n")
                .unwrap()
                .check(b"c", b"d:e")
        );
        assert!(Passwords::auth_file(b"a:b\nnocolon\n").is_none());
        assert!(Passwords::auth_file(b"").is_none());
        assert!(Passwords::auth_file(b"a:b\n\nc:d\n").is_none());
        assert!(Passwords::auth_file(b"a:b\r\nc:d").is_some());
    }
}

#[cfg(test)]
mod sasl_tests {
    use super::*;

    #[test]
    fn sasl_checks_the_identity_to_act_as() {
        let dir = std::env::temp_dir().join(format!("memcrab-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pwdb = dir.join("pwdb");
        std::fs::write(&pwdb, "alice@vm:secret\n").unwrap();
        assert!(check_sasl(&pwdb, "vm", b"\0alice\0secret"));
        assert!(check_sasl(&pwdb, "vm", b"alice\0alice\0secret"));
        assert!(check_sasl(&pwdb, "vm", b"alice@vm\0alice\0secret"));
        assert!(!check_sasl(&pwdb, "vm", b"bob\0alice\0secret"));
        assert!(!check_sasl(&pwdb, "vm", b"\0alice\0secrex"));
        assert!(!check_sasl(&pwdb, "other", b"\0alice\0secret"));
        assert!(!check_sasl(&dir.join("missing"), "vm", b"\0alice\0secret"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
