//! The binary protocol's commands: the same `Store` calls as the text and meta commands,
//! with memcached 1.6's binary replies (a 24-byte header, extras, key, value), written
//! straight into the connection's output buffer.
//!
//! Quiet opcodes send nothing on success (and a quiet get nothing on a miss); errors are
//! always sent. Every reply echoes the request's opcode and opaque.

use crate::protocol::binary::{Command, Header, StoreOp, opcode, status, write_header};
use crate::storage::{
    Delete, DeleteResult, Delta, DeltaResult, Mode, Read, StoreError, StoreResult, Write,
};

use super::auth::{Sasl, Session};
use super::reply::{Admit, Room};
use super::{Context, Outcome, Progress, dump};

/// Header, flags and the longest key: what a get reply needs besides its value.
const GET_REPLY_MAX: usize = 24 + 4 + crate::protocol::MAX_KEY_LEN;

impl Context {
    /// Runs one binary request, appending its reply (if any) to `out`. A get whose value
    /// finds no room while replies are waiting pauses (see [`Progress::Paused`]).
    pub fn execute_binary(
        &self,
        h: &Header,
        cmd: &Command<'_>,
        session: &mut Session,
        out: &mut Vec<u8>,
        room: &mut Room<'_>,
    ) -> Progress {
        match *cmd {
            Command::Get {
                key,
                quiet,
                with_key,
                touch,
            } => return self.binary_get(h, key, quiet, with_key, touch, out, room),
            Command::Touch { key, exptime } => {
                let opts = Read {
                    touch: Some(i64::from(exptime)),
                    ..Default::default()
                };
                // A touch answers with the item's flags and CAS, no value.
                let hit = self.store.read(key, &opts, |it| {
                    write_header(out, h, status::NO_ERROR, 0, 4, 4, it.cas);
                    out.extend_from_slice(&it.flags.to_be_bytes());
                });
                if hit.is_none() {
                    error(out, h, status::KEY_ENOENT);
                }
            }
            Command::Store {
                op,
                key,
                value,
                flags,
                exptime,
                quiet,
            } => self.binary_store(h, op, key, value, flags, exptime, quiet, out),
            Command::Delete { key, quiet } => {
                self.detail(key, dump::DetailOp::Delete);
                let opts = Delete {
                    compare_cas: (h.cas != 0).then_some(h.cas),
                    ..Default::default()
                };
                match self.store.delete_with(key, &opts) {
                    DeleteResult::Deleted => success(out, h, quiet, 0),
                    DeleteResult::NotFound => error(out, h, status::KEY_ENOENT),
                    DeleteResult::Exists => error(out, h, status::KEY_EEXISTS),
                }
            }
            Command::Arithmetic {
                incr,
                key,
                delta,
                initial,
                exptime,
                quiet,
            } => {
                let opts = Delta {
                    incr,
                    delta,
                    compare_cas: (h.cas != 0).then_some(h.cas),
                    // 0xffffffff: a miss is a miss, nothing is created.
                    vivify: (exptime != u32::MAX).then_some((i64::from(exptime), initial)),
                    ..Delta::default()
                };
                match self.store.delta_with(key, &opts) {
                    Ok(o) => match o.result {
                        DeltaResult::Value(v) => {
                            if !quiet {
                                write_header(out, h, status::NO_ERROR, 0, 0, 8, o.cas);
                                out.extend_from_slice(&v.to_be_bytes());
                            }
                        }
                        DeltaResult::NotFound => error(out, h, status::KEY_ENOENT),
                        DeltaResult::Exists => error(out, h, status::KEY_EEXISTS),
                        DeltaResult::NonNumeric => error(out, h, status::DELTA_BADVAL),
                    },
                    Err(e) => error(out, h, self.binary_store_error(e)),
                }
            }
            Command::Quit { quiet } => {
                if !quiet {
                    success(out, h, false, 0);
                }
                return Progress::Done(Outcome::Close);
            }
            Command::Flush { exptime, quiet } => {
                if self.config.flush_enabled {
                    self.store.flush(i64::from(exptime));
                    success(out, h, quiet, 0);
                } else {
                    error(out, h, status::AUTH_ERROR);
                }
            }
            Command::Noop => success(out, h, false, 0),
            Command::Version => {
                let v = crate::protocol::VERSION.as_bytes();
                write_header(out, h, status::NO_ERROR, 0, 0, v.len(), 0);
                out.extend_from_slice(v);
            }
            Command::Stat { group } => return self.binary_stats(h, group, out, room),
            Command::SaslListMechs => sasl_reply(h, self.sasl_list_mechs(session), out),
            Command::SaslAuth {
                step,
                mechanism,
                data,
            } => sasl_reply(h, self.sasl_auth(step, mechanism, Some(data), session), out),
        }
        Progress::Done(Outcome::Continue)
    }

    #[allow(clippy::too_many_arguments)]
    fn binary_get(
        &self,
        h: &Header,
        key: &[u8],
        quiet: bool,
        with_key: bool,
        touch: Option<u32>,
        out: &mut Vec<u8>,
        room: &mut Room<'_>,
    ) -> Progress {
        if room.unsent(out) > 0 && !room.surely_fits(GET_REPLY_MAX) {
            // Replies are waiting and the budget is short: make room for the value before
            // the read, whose effects (a touch, the fetched bit) must not happen twice.
            if let Some(len) = self.store.get_size(key)
                && room.admit(out, GET_REPLY_MAX + len) != Admit::Fits
            {
                return Progress::Paused;
            }
        }
        let mut refused = false;
        let hit = self.store.get(key, touch.map(i64::from), |it| {
            let key_len = if with_key { it.key.len() } else { 0 };
            if room.admit(out, GET_REPLY_MAX + it.value.len()) == Admit::Refuse {
                refused = true;
                return;
            }
            let body = 4 + key_len + it.value.len();
            write_header(out, h, status::NO_ERROR, key_len, 4, body, it.cas);
            out.extend_from_slice(&it.flags.to_be_bytes());
            if with_key {
                out.extend_from_slice(it.key);
            }
            it.value.append_to(out);
        });
        if touch.is_none() {
            self.detail(key, dump::DetailOp::Get { hit: hit.is_some() });
        }
        if refused {
            error(out, h, status::ENOMEM);
        } else if hit.is_none() && !quiet {
            if with_key {
                // A miss of GetK/GATK carries the key and no message.
                write_header(out, h, status::KEY_ENOENT, key.len(), 0, key.len(), 0);
                out.extend_from_slice(key);
            } else {
                error(out, h, status::KEY_ENOENT);
            }
        }
        Progress::Done(Outcome::Continue)
    }

    #[allow(clippy::too_many_arguments)]
    fn binary_store(
        &self,
        h: &Header,
        op: StoreOp,
        key: &[u8],
        value: &[u8],
        flags: u32,
        exptime: u32,
        quiet: bool,
        out: &mut Vec<u8>,
    ) {
        self.detail(key, dump::DetailOp::Set);
        let mode = match op {
            // As in memcached, a set, add or replace that carries a CAS is a compare and
            // swap, whatever its opcode: a missing item is "not found".
            StoreOp::Set | StoreOp::Add | StoreOp::Replace if h.cas != 0 => Mode::Set,
            StoreOp::Set => Mode::Set,
            StoreOp::Add => Mode::Add,
            StoreOp::Replace => Mode::Replace,
            StoreOp::Append => Mode::Append,
            StoreOp::Prepend => Mode::Prepend,
        };
        let result = self.store.write(&Write {
            mode,
            key,
            value,
            flags,
            exptime: i64::from(exptime),
            compare_cas: (h.cas != 0).then_some(h.cas),
            ..Write::default()
        });
        if matches!(result, Ok((r, _)) if r != StoreResult::Stored) {
            // memcached takes a CAS value for the write whether it stores or not.
            self.store.take_cas();
        }
        match result {
            Ok((StoreResult::Stored, cas)) => success(out, h, quiet, cas),
            Ok((StoreResult::Exists, _)) => error(out, h, status::KEY_EEXISTS),
            Ok((StoreResult::NotFound, _)) => error(out, h, status::KEY_ENOENT),
            // memcached names a failed add "exists" and a failed replace "not found".
            Ok((StoreResult::NotStored, _)) => error(
                out,
                h,
                match op {
                    StoreOp::Add => status::KEY_EEXISTS,
                    StoreOp::Replace => status::KEY_ENOENT,
                    _ => status::NOT_STORED,
                },
            ),
            Err(e) => error(out, h, self.binary_store_error(e)),
        }
    }

    /// A SASL auth or step with more data than any credential: a failed attempt, but for
    /// what memcached checks first (the mechanism's length) or cannot hold (data over `-I`:
    /// "Out of memory").
    pub fn binary_sasl_too_long(
        &self,
        h: &Header,
        mechanism: &[u8],
        storable: bool,
        session: &mut Session,
        out: &mut Vec<u8>,
    ) {
        let step = h.opcode == opcode::SASL_STEP;
        if self.config.sasl_pwdb.is_some()
            && mechanism.len() <= crate::auth::MAX_MECHANISM_LEN
            && !storable
        {
            return error(out, h, status::ENOMEM);
        }
        sasl_reply(h, self.sasl_auth(step, mechanism, None, session), out);
    }

    /// A storage request whose value can never fit: counted as the text protocol counts it
    /// (a refused set also drops the old value), answered "Too large.".
    pub fn binary_too_large(&self, h: &Header, op: StoreOp, key: &[u8], out: &mut Vec<u8>) {
        self.store.too_large(key, op == StoreOp::Set);
        error(out, h, self.binary_store_error(StoreError::TooLarge));
    }

    fn binary_store_error(&self, e: StoreError) -> u16 {
        // Counted as the text protocol counts them.
        let _ = self.store_error(e);
        match e {
            StoreError::TooLarge => status::E2BIG,
            StoreError::NoMemory => status::ENOMEM,
        }
    }

    /// Stat: the groups memcached serves over the binary protocol (the general stats,
    /// `settings`, `items`, `slabs`, `sizes`, `reset`, `detail`), each `STAT name value` of
    /// the text command as one packet (name in the key, value in the value), then an empty
    /// packet. Any other group: "Not found". The lines come from the same writers as the
    /// text command's, so both protocols report the same names in the same order.
    fn binary_stats(
        &self,
        h: &Header,
        group: &[u8],
        out: &mut Vec<u8>,
        room: &mut Room<'_>,
    ) -> Progress {
        let mut words = group.split(|&b| b == b' ').filter(|w| !w.is_empty());
        let sub = words.next().unwrap_or(b"");
        let mut text = Vec::new();
        match sub {
            b"reset" => self.reset_stats(),
            b"detail" => {
                let arg = words.next().unwrap_or(b"");
                self.stats_detail(arg, &mut text);
                if arg == b"dump" {
                    // The whole dump in one packet, as memcached sends it.
                    match room.admit(out, 2 * 24 + 8 + text.len()) {
                        Admit::Fits => {}
                        Admit::Pause => return Progress::Paused,
                        Admit::Refuse => {
                            error(out, h, status::ENOMEM);
                            return Progress::Done(Outcome::Continue);
                        }
                    }
                    stat_packet(out, h, b"detailed", &text);
                }
            }
            page => {
                if !self.stats_page(page, &mut text) {
                    error(out, h, status::KEY_ENOENT);
                    return Progress::Done(Outcome::Continue);
                }
                let lines = text
                    .split(|&b| b == b'\n')
                    .filter(|l| l.starts_with(b"STAT "));
                // A packet per line: its header (24 bytes) replaces `STAT ` and the spaces.
                match room.admit(out, text.len() + lines.clone().count() * 24 + 24) {
                    Admit::Fits => {}
                    Admit::Pause => return Progress::Paused,
                    Admit::Refuse => {
                        error(out, h, status::ENOMEM);
                        return Progress::Done(Outcome::Continue);
                    }
                }
                for line in lines {
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    let rest = &line[5..];
                    let (name, value) = match rest.iter().position(|&b| b == b' ') {
                        Some(i) => (&rest[..i], &rest[i + 1..]),
                        None => (rest, &b""[..]),
                    };
                    stat_packet(out, h, name, value);
                }
            }
        }
        stat_packet(out, h, b"", b"");
        Progress::Done(Outcome::Continue)
    }
}

/// One Stat response packet.
fn stat_packet(out: &mut Vec<u8>, h: &Header, name: &[u8], value: &[u8]) {
    write_header(
        out,
        h,
        status::NO_ERROR,
        name.len(),
        0,
        name.len() + value.len(),
        0,
    );
    out.extend_from_slice(name);
    out.extend_from_slice(value);
}

/// memcached's reply to a SASL request.
fn sasl_reply(h: &Header, outcome: Sasl, out: &mut Vec<u8>) {
    let body: &[u8] = match outcome {
        Sasl::Mechanisms => crate::auth::MECHANISMS.as_bytes(),
        Sasl::Authenticated => b"Authenticated",
        Sasl::Continue => {
            write_header(out, h, status::AUTH_CONTINUE, 0, 0, 0, 0);
            return;
        }
        Sasl::Failed => return error(out, h, status::AUTH_ERROR),
        Sasl::Invalid => return error(out, h, status::EINVAL),
        Sasl::NotEnabled => return error(out, h, status::UNKNOWN_COMMAND),
    };
    write_header(out, h, status::NO_ERROR, 0, 0, body.len(), 0);
    out.extend_from_slice(body);
}

/// An error reply: the status and memcached's message.
pub fn error(out: &mut Vec<u8>, h: &Header, code: u16) {
    let message = status::message(code).as_bytes();
    write_header(out, h, code, 0, 0, message.len(), 0);
    out.extend_from_slice(message);
}

/// An empty success reply, unless the request was quiet.
fn success(out: &mut Vec<u8>, h: &Header, quiet: bool, cas: u64) {
    if !quiet {
        write_header(out, h, status::NO_ERROR, 0, 0, 0, cas);
    }
}
