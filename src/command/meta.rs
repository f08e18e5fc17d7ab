//! Runs meta commands and writes their replies: a two-letter code, return flags in the
//! order the request gave them, and `q` hiding the nominal reply (`EN` for mg, `HD` for ms,
//! md and ma; `VA` too for ma). Errors are always sent.

use std::sync::atomic::Ordering;

use super::reply::{Admit, Room};
use super::{Context, Progress, line};
use crate::protocol::meta::encode_key;
use crate::protocol::{Meta, MetaCommand, MetaFlags};
use crate::storage::{
    Delete, DeleteResult, Delta, DeltaResult, Mode, Read, StoreError, StoreResult, Write,
};
use crate::telemetry::Rejected;

/// Appends ` <flag><value>`.
fn flag(out: &mut Vec<u8>, f: u8, value: impl itoa::Integer) {
    out.push(b' ');
    out.push(f);
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// ` k<key>`, base64-encoded with a ` b` after it for binary keys.
fn key_flag(out: &mut Vec<u8>, key: &[u8], binary: bool) {
    out.extend_from_slice(b" k");
    if binary {
        out.extend_from_slice(encode_key(key).as_bytes());
        out.extend_from_slice(b" b");
    } else {
        out.extend_from_slice(key);
    }
}

/// The flags every reply echoes, hit or miss: `O` and `k`.
fn echo_flags(out: &mut Vec<u8>, flags: &MetaFlags<'_>, key: &[u8]) {
    for token in flags.tokens() {
        match token[0] {
            b'O' => {
                out.push(b' ');
                out.extend_from_slice(token);
            }
            b'k' => key_flag(out, key, flags.base64),
            _ => {}
        }
    }
}

/// The flags among `of` in request order, for the engine to apply in that order.
fn steps(flags: &MetaFlags<'_>, of: &[u8]) -> [u8; 4] {
    let mut steps = [0; 4];
    for (step, token) in steps
        .iter_mut()
        .zip(flags.tokens().filter(|t| of.contains(&t[0])))
    {
        *step = token[0];
    }
    steps
}

/// A reply that `q` can hide: written, then cut off again if quiet.
fn nominal(out: &mut Vec<u8>, quiet: bool, write: impl FnOnce(&mut Vec<u8>)) {
    let mark = out.len();
    write(out);
    if quiet {
        out.truncate(mark);
    }
}

/// The longest `VA <bytes>` line without its key: every return flag with its largest value.
const META_LINE_MAX: usize = 256;

impl Context {
    pub(super) fn meta(&self, m: &Meta<'_>, out: &mut Vec<u8>, room: &mut Room<'_>) -> Progress {
        let most = META_LINE_MAX + m.key.len() * 2 + self.store.config().item_size_max;
        if m.command == MetaCommand::Get
            && m.flags.value
            && room.unsent(out) > 0
            && !room.surely_fits(most)
        {
            // Replies are waiting and the budget is short: make room for the value before
            // the read, whose effects (a win token, a touch, the fetched bit) must not happen
            // twice if it has to wait for them to drain.
            if let Some(len) = self.store.get_size(&m.key)
                && room.admit(out, META_LINE_MAX + m.key.len() * 2 + len) != Admit::Fits
            {
                return Progress::Paused;
            }
        }
        if m.command != MetaCommand::Noop {
            self.counters.meta_cmds.fetch_add(1, Ordering::Relaxed);
        }
        match m.command {
            MetaCommand::Get => self.meta_get(m, out, room),
            MetaCommand::Set => self.meta_set(m, out),
            MetaCommand::Delete => self.meta_delete(m, out),
            MetaCommand::Arithmetic => self.meta_arithmetic(m, out),
            MetaCommand::Debug => self.meta_debug(m, out),
            MetaCommand::Noop => line(out, "MN"),
        }
        Progress::DONE
    }

    fn meta_get(&self, m: &Meta<'_>, out: &mut Vec<u8>, room: &mut Room<'_>) {
        let f = &m.flags;
        let opts = Read {
            is_get: f.ttl.is_none(),
            tokens: true,
            touch: f.ttl,
            vivify: f.vivify,
            recache: f.recache,
            no_bump: f.no_bump,
            new_cas: f.new_cas,
            steps: steps(f, b"TNRt"),
        };
        let mut refused = false;
        let hit = self.store.read(&m.key, &opts, |it| {
            // `C`: a matching CAS means the client's copy is current; drop the value.
            let send_value = f.value && f.compare_cas != Some(it.cas);
            // Nothing is waiting (or the room was made above: a pause here would only be
            // a value that grew since, written all the same).
            let need = META_LINE_MAX + it.key.len() * 2 + it.value.len();
            if send_value && room.admit(out, need) == Admit::Refuse {
                refused = true;
                return;
            }
            if send_value {
                out.extend_from_slice(b"VA ");
                out.extend_from_slice(itoa::Buffer::new().format(it.value.len()).as_bytes());
            } else {
                out.extend_from_slice(b"HD");
            }
            for token in f.tokens() {
                match token[0] {
                    b's' => flag(out, b's', it.value.len()),
                    b't' => flag(out, b't', it.ttl),
                    b'c' => flag(out, b'c', it.cas),
                    b'f' => flag(out, b'f', it.flags),
                    b'l' => flag(out, b'l', it.last_access),
                    b'h' => flag(out, b'h', u8::from(it.hit_before)),
                    b'O' => {
                        out.push(b' ');
                        out.extend_from_slice(token);
                    }
                    b'k' => key_flag(out, it.key, it.key_binary),
                    _ => {}
                }
            }
            if it.token_sent {
                out.extend_from_slice(b" Z");
            }
            if it.stale {
                out.extend_from_slice(b" X");
            }
            if it.won {
                out.extend_from_slice(b" W");
            }
            out.extend_from_slice(b"\r\n");
            if send_value {
                it.value.append_to(out);
                out.extend_from_slice(b"\r\n");
            }
        });
        if refused {
            line(out, super::GET_OUT_OF_MEMORY);
            return;
        }
        if hit.is_none() {
            nominal(out, f.quiet, |out| {
                out.extend_from_slice(b"EN");
                echo_flags(out, f, &m.key);
                out.extend_from_slice(b"\r\n");
            });
        }
    }

    fn meta_set(&self, m: &Meta<'_>, out: &mut Vec<u8>) {
        let f = &m.flags;
        let mode = match f.mode {
            Some(b'E') => Mode::Add,
            Some(b'A') => Mode::Append,
            Some(b'P') => Mode::Prepend,
            Some(b'R') => Mode::Replace,
            _ => Mode::Set,
        };
        let write = Write {
            mode,
            key: &m.key,
            value: m.value,
            flags: f.client_flags,
            exptime: f.ttl.unwrap_or(0),
            compare_cas: f.compare_cas,
            new_cas: f.new_cas,
            invalidate: f.invalidate,
            vivify: f
                .vivify
                .filter(|_| matches!(mode, Mode::Append | Mode::Prepend)),
            key_binary: f.base64,
        };
        let result = self.store.write(&write);
        if matches!(result, Ok((r, _)) if r != StoreResult::Stored) && f.new_cas.is_none() {
            // memcached takes a CAS value for the write whether it stores or not.
            self.store.take_cas();
        }
        let (code, cas) = match result {
            Ok((StoreResult::Stored, cas)) => ("HD", cas),
            Ok((StoreResult::NotStored, _)) => ("NS", 0),
            Ok((StoreResult::Exists, _)) => ("EX", 0),
            Ok((StoreResult::NotFound, _)) => ("NF", 0),
            Err(e) => {
                if e == StoreError::TooLarge {
                    self.store.too_large(&m.key, true);
                }
                line(out, self.store_error(e));
                return;
            }
        };
        let stored = code == "HD";
        nominal(out, f.quiet && stored, |out| {
            out.extend_from_slice(code.as_bytes());
            for token in f.tokens() {
                match token[0] {
                    b'O' => {
                        out.push(b' ');
                        out.extend_from_slice(token);
                    }
                    b'k' => key_flag(out, &m.key, f.base64),
                    b'c' => flag(out, b'c', cas),
                    // The stored size (after an append), else the size sent.
                    b's' => {
                        let size = stored
                            .then(|| self.store.get_size(&m.key))
                            .flatten()
                            .unwrap_or(m.value.len());
                        flag(out, b's', size);
                    }
                    _ => {}
                }
            }
            out.extend_from_slice(b"\r\n");
        });
    }

    fn meta_delete(&self, m: &Meta<'_>, out: &mut Vec<u8>) {
        let f = &m.flags;
        let opts = Delete {
            compare_cas: f.compare_cas,
            invalidate: f.invalidate,
            touch: f.ttl,
            drop_value: f.drop_value,
            client_flags: f.client_flags,
            new_cas: f.new_cas,
        };
        let code = match self.store.delete_with(&m.key, &opts) {
            DeleteResult::Deleted => "HD",
            DeleteResult::NotFound => "NF",
            DeleteResult::Exists => "EX",
        };
        nominal(out, f.quiet && code == "HD", |out| {
            out.extend_from_slice(code.as_bytes());
            echo_flags(out, f, &m.key);
            out.extend_from_slice(b"\r\n");
        });
    }

    fn meta_arithmetic(&self, m: &Meta<'_>, out: &mut Vec<u8>) {
        let f = &m.flags;
        let opts = Delta {
            incr: !matches!(f.mode, Some(b'D' | b'-')),
            delta: f.delta,
            compare_cas: f.compare_cas,
            vivify: f.vivify.map(|ttl| (ttl, f.initial)),
            touch: f.ttl,
            new_cas: f.new_cas,
            steps: steps(f, b"TNt"),
        };
        let outcome = match self.store.delta_with(&m.key, &opts) {
            Ok(outcome) => outcome,
            Err(_) => {
                self.counters.reject(Rejected::OutOfMemory);
                line(out, "SERVER_ERROR out of memory");
                return;
            }
        };
        let value = match outcome.result {
            DeltaResult::Value(v) => v,
            DeltaResult::NonNumeric => {
                line(
                    out,
                    "CLIENT_ERROR cannot increment or decrement non-numeric value",
                );
                return;
            }
            DeltaResult::NotFound | DeltaResult::Exists => {
                out.extend_from_slice(if outcome.result == DeltaResult::Exists {
                    b"EX"
                } else {
                    b"NF"
                });
                echo_flags(out, f, &m.key);
                out.extend_from_slice(b"\r\n");
                return;
            }
        };
        let mut digits = itoa::Buffer::new();
        let number = digits.format(value).as_bytes();
        nominal(out, f.quiet, |out| {
            if f.value {
                out.extend_from_slice(b"VA ");
                out.extend_from_slice(itoa::Buffer::new().format(number.len()).as_bytes());
            } else {
                out.extend_from_slice(b"HD");
            }
            for token in f.tokens() {
                match token[0] {
                    b'c' => flag(out, b'c', outcome.cas),
                    b't' => flag(out, b't', outcome.ttl),
                    b'O' => {
                        out.push(b' ');
                        out.extend_from_slice(token);
                    }
                    b'k' => key_flag(out, &m.key, f.base64),
                    _ => {}
                }
            }
            out.extend_from_slice(b"\r\n");
            if f.value {
                out.extend_from_slice(number);
                out.extend_from_slice(b"\r\n");
            }
        });
    }

    fn meta_debug(&self, m: &Meta<'_>, out: &mut Vec<u8>) {
        let Some(d) = self.store.debug(&m.key) else {
            line(out, "EN");
            return;
        };
        out.extend_from_slice(b"ME ");
        if d.key_binary {
            out.extend_from_slice(encode_key(&d.key).as_bytes());
        } else {
            out.extend_from_slice(&d.key);
        }
        let text = format!(
            " exp={} la={} cas={} fetch={} cls={} size={}\r\n",
            d.ttl,
            d.last_access,
            d.cas,
            if d.fetched { "yes" } else { "no" },
            d.class,
            d.size
        );
        out.extend_from_slice(text.as_bytes());
    }
}
