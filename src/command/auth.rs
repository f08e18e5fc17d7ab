//! Authentication as memcached does it: SASL PLAIN over the binary protocol (`-S`) and
//! ASCII authentication (`-Y`). A connection's [`Session`] says whether it has
//! authenticated; only the requests below can change that, and every one of them either
//! authenticates it or leaves it unauthenticated: a malformed request cannot skip a step.

use std::sync::atomic::Ordering;

use crate::auth;

use super::Context;

/// One connection's authentication state.
#[derive(Debug, Default)]
pub struct Session {
    /// Requests other than authentication are served.
    pub authenticated: bool,
    /// A SASL PLAIN auth came without data: the credentials come in the next step.
    sasl_continue: bool,
    /// A SASL exchange succeeded: like memcached's (Cyrus SASL's), the next auth or step
    /// on the connection fails; that failure ends the exchange, and the one after starts
    /// afresh.
    sasl_done: bool,
}

/// How a SASL request ended; the binary writer turns it into memcached's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sasl {
    /// The mechanisms, [`auth::MECHANISMS`].
    Mechanisms,
    /// PLAIN without data: the credentials are to come in a step.
    Continue,
    Authenticated,
    Failed,
    /// A mechanism name longer than any.
    Invalid,
    /// Without `-S`, memcached does not know the opcode.
    NotEnabled,
}

impl Context {
    /// SASL_LIST_MECHS: like memcached's, it leaves the connection unauthenticated.
    pub(super) fn sasl_list_mechs(&self, session: &mut Session) -> Sasl {
        if self.config.sasl_pwdb.is_none() {
            return Sasl::NotEnabled;
        }
        session.authenticated = false;
        Sasl::Mechanisms
    }

    /// SASL_AUTH and SASL_STEP with PLAIN (`data`: `None` when it was too long to be a
    /// credential). A failure leaves the connection unauthenticated, whatever it was.
    pub(super) fn sasl_auth(
        &self,
        step: bool,
        mechanism: &[u8],
        data: Option<&[u8]>,
        session: &mut Session,
    ) -> Sasl {
        let Some(pwdb) = &self.config.sasl_pwdb else {
            return Sasl::NotEnabled;
        };
        if mechanism.len() > auth::MAX_MECHANISM_LEN {
            return Sasl::Invalid;
        }
        // A new auth ends an exchange under way; a failed step does not (memcached's
        // exchange stays started until it succeeds or a new one starts).
        let continued = session.sasl_continue;
        if !step {
            session.sasl_continue = false;
        }
        session.authenticated = false;
        let plain = mechanism.eq_ignore_ascii_case(auth::MECHANISMS.as_bytes());
        let outcome = match data {
            _ if std::mem::take(&mut session.sasl_done) => Sasl::Failed,
            // PLAIN without an initial response: the credentials follow in a step (not
            // counted until the exchange ends, as memcached counts).
            Some([]) if plain && !step => {
                session.sasl_continue = true;
                return Sasl::Continue;
            }
            Some(data) if plain && (!step || continued) => {
                if auth::check_sasl(pwdb, &self.hostname, data) {
                    session.authenticated = true;
                    session.sasl_continue = false;
                    session.sasl_done = true;
                    Sasl::Authenticated
                } else {
                    Sasl::Failed
                }
            }
            _ => Sasl::Failed,
        };
        self.counters.auth_cmds.fetch_add(1, Ordering::Relaxed);
        if outcome == Sasl::Failed {
            self.counters.auth_errors.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }

    /// `-Y`: the data of a `set` from an unauthenticated connection, `user password`:
    /// the reply line (`STORED` when it authenticated the connection).
    pub fn ascii_authenticate(&self, data: &[u8], session: &mut Session) -> &'static str {
        let Some((_, passwords)) = &self.config.ascii_auth else {
            return "CLIENT_ERROR unauthenticated";
        };
        self.counters.auth_cmds.fetch_add(1, Ordering::Relaxed);
        let Some(space) = data.iter().position(|&b| b == b' ') else {
            self.counters.auth_errors.fetch_add(1, Ordering::Relaxed);
            return "CLIENT_ERROR bad authentication token format";
        };
        let (user, password) = (&data[..space], &data[space + 1..]);
        session.authenticated = passwords.check(user, password);
        if session.authenticated {
            "STORED"
        } else {
            self.counters.auth_errors.fetch_add(1, Ordering::Relaxed);
            "CLIENT_ERROR authentication failure"
        }
    }
}
