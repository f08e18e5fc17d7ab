//! A connection without a socket, for the fuzz targets: bytes go in through the same parser
//! and `Context::execute` the server uses, replies come out, and the invariants that protect
//! the server from its clients are checked on every request:
//!
//! - a parser result consumes between 1 byte and what is buffered;
//! - a request's keys are 1 to 250 bytes without spaces or line ends, a stored value fits
//!   `-I`;
//! - a reply never buffers more than the stream cap plus one value (the reply memory bound);
//! - a paused (streaming) request always makes progress when resumed;
//! - binary requests (a connection whose first byte is 0x80): every declared length is
//!   checked before use, a request consumes between 1 byte and what is buffered, and no
//!   value over `-I` is ever waited for.

use std::sync::{Arc, Mutex};

use memcrab::command::reply::STREAM_CAP;
use memcrab::command::{Context, Progress, Resume, Room, Session, binary_error, line};
use memcrab::config::{Action, Cli, Config};
use memcrab::protocol::binary::{self, BinParsed};
use memcrab::protocol::{self, Limits, MAX_KEY_LEN, Parsed, Request};
use memcrab::storage::{ManualClock, Store};
use memcrab::telemetry::ConnInfo;

/// Pauses one request may take before the driver calls it stuck.
const MAX_PAUSES: usize = 1 << 16;

pub struct Driver {
    ctx: Context,
    info: ConnInfo,
    limits: Limits,
    input: Vec<u8>,
    /// Replies delivered to the "client".
    pub replies: Vec<u8>,
    swallow: usize,
    closed: bool,
    /// Decided by the first byte, as `-B auto` does.
    binary: Option<bool>,
    session: Session,
}

impl Driver {
    /// A server as started with memcached's `args` (e.g. `["-m", "64"]`).
    pub fn new(args: &[&str]) -> Self {
        let config = config(args);
        let store = Arc::new(Store::new(
            config.store.clone(),
            ManualClock::new(1_700_000_000),
        ));
        let ctx = Context::new(store, config);
        Self {
            limits: ctx.limits(),
            ctx,
            info: ConnInfo::new(7, "tcp:127.0.0.1:1".into(), None, 0),
            input: Vec::new(),
            replies: Vec::new(),
            swallow: 0,
            closed: false,
            binary: None,
            session: Session::default(),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Buffers `bytes` and runs every complete request in the input.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.closed {
            return;
        }
        self.input.extend_from_slice(bytes);
        let mut at = 0;
        loop {
            if self.swallow > 0 {
                let n = self.swallow.min(self.input.len() - at);
                at += n;
                self.swallow -= n;
            }
            let buf = &self.input[at..];
            if buf.is_empty() || self.swallow > 0 {
                break;
            }
            if *self.binary.get_or_insert(buf[0] == binary::REQUEST_MAGIC) {
                match self.binary_step(at) {
                    Some(used) => at += used,
                    None => break,
                }
                continue;
            }
            match protocol::parse(buf, &self.limits) {
                Parsed::Incomplete => break,
                Parsed::Close(_) => {
                    self.closed = true;
                    break;
                }
                Parsed::Request(req, used) => {
                    assert!(
                        used > 0 && used <= buf.len(),
                        "used {used} of {}",
                        buf.len()
                    );
                    check_request(&req, &self.limits);
                    let outcome = run(&self.ctx, &self.info, &req, &mut self.replies);
                    self.swallow = req.swallow();
                    at += used;
                    if outcome.is_err() {
                        self.closed = true;
                        break;
                    }
                }
                Parsed::Error {
                    error,
                    consumed,
                    swallow,
                    noreply,
                } => {
                    assert!(consumed > 0 && consumed <= buf.len());
                    if !noreply {
                        line(&mut self.replies, error.message());
                    }
                    self.swallow = swallow;
                    at += consumed;
                }
            }
        }
        self.input.drain(..at);
    }
}

impl Driver {
    /// One binary request from `input[at..]`: `Some(bytes taken)`, `None` to stop (more
    /// input needed, or the connection closed).
    fn binary_step(&mut self, at: usize) -> Option<usize> {
        let buf = &self.input[at..];
        let limits = self.limits;
        let parsed = binary::parse(buf, |k, v| !limits.too_large(k, v), false);
        let used = match parsed {
            BinParsed::Incomplete(need) => {
                assert!(need > buf.len(), "incomplete at {} of {need}", buf.len());
                // Never a wait for more than a header, key and extras, or a storable value.
                let most = binary::MAX_HEAD_LEN + 2 * self.ctx.config.store.item_size_max;
                assert!(need <= most, "waits for {need} bytes");
                return None;
            }
            BinParsed::Request(header, command, used) => {
                assert!(used >= binary::HEADER_LEN && used <= buf.len());
                if let binary::Command::Store { key, value, .. } = command {
                    // Binary keys are any bytes, spaces and line ends included (as in
                    // memcached): only their length is bounded.
                    assert!(!key.is_empty() && key.len() <= MAX_KEY_LEN, "key of {} bytes", key.len());
                    assert!(!limits.too_large(key.len(), value.len()));
                }
                let bound = STREAM_CAP + self.ctx.config.store.item_size_max + 64 * 1024;
                let mut out = Vec::new();
                let mut charged = 0;
                let mut room = Room {
                    budget: &self.ctx.buffers,
                    charged: &mut charged,
                    sent: 0,
                };
                let progress = self.ctx.execute_binary(
                    &header,
                    &command,
                    &mut self.session,
                    &mut out,
                    &mut room,
                );
                self.ctx.buffers.credit(charged);
                assert!(out.len() <= bound, "a reply buffered {} bytes", out.len());
                self.replies.extend_from_slice(&out);
                match progress {
                    Progress::Done(memcrab::command::Outcome::Continue) => used,
                    // Nothing is waiting to drain here: a pause is a stuck request.
                    Progress::Paused => panic!("a binary request paused with nothing unsent"),
                    Progress::Done(_) => {
                        self.closed = true;
                        return None;
                    }
                }
            }
            BinParsed::TooLarge {
                header,
                op,
                key,
                used,
                skip,
                ..
            } => {
                assert!(used <= buf.len());
                self.ctx.binary_too_large(&header, op, key, &mut self.replies);
                self.swallow = usize::try_from(skip).unwrap_or(usize::MAX);
                used
            }
            BinParsed::SaslTooLong {
                header,
                mechanism,
                storable,
                used,
                skip,
            } => {
                self.ctx.binary_sasl_too_long(
                    &header,
                    mechanism,
                    storable,
                    &mut self.session,
                    &mut self.replies,
                );
                self.swallow = usize::try_from(skip).unwrap_or(usize::MAX);
                used
            }
            BinParsed::Unknown { header, used, skip } => {
                assert!(used <= buf.len());
                binary_error(&mut self.replies, &header, binary::status::UNKNOWN_COMMAND);
                self.swallow = usize::try_from(skip).unwrap_or(usize::MAX);
                used
            }
            BinParsed::Fatal { header, status } => {
                binary_error(&mut self.replies, &header, status);
                self.closed = true;
                return None;
            }
            BinParsed::BadMagic | BinParsed::HeadTooLong => {
                self.closed = true;
                return None;
            }
        };
        assert!(used > 0);
        Some(used)
    }
}

/// Runs one request to its end, delivering the reply at each pause as a socket would take
/// it; `Err` when the request closes the connection.
fn run(ctx: &Context, info: &ConnInfo, req: &Request<'_>, replies: &mut Vec<u8>) -> Result<(), ()> {
    let mut resume = Resume::Start;
    // The reply bound: the stream cap plus one value (or one slice of a dump).
    let bound = STREAM_CAP + ctx.config.store.item_size_max + 64 * 1024;
    for _ in 0..MAX_PAUSES {
        let mut out = Vec::new();
        let mut charged = 0;
        let mut room = Room {
            budget: &ctx.buffers,
            charged: &mut charged,
            sent: 0,
        };
        let progress = ctx.execute(req, info, &mut out, &mut room, &mut resume);
        ctx.buffers.credit(charged);
        assert!(out.len() <= bound, "a reply buffered {} bytes", out.len());
        let paused = progress == Progress::Paused;
        assert!(!paused || !out.is_empty(), "a pause with nothing to send");
        replies.extend_from_slice(&out);
        match progress {
            Progress::Paused => continue,
            Progress::Done(memcrab::command::Outcome::Continue) => return Ok(()),
            Progress::Done(_) => return Err(()),
        }
    }
    panic!("a request paused {MAX_PAUSES} times: {req:?}");
}

/// The configuration for `args`, parsed once per process (clap is slow next to one run).
fn config(args: &[&str]) -> Config {
    static CONFIGS: Mutex<Vec<(Vec<String>, Config)>> = Mutex::new(Vec::new());
    let mut configs = CONFIGS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, config)) = configs.iter().find(|(a, _)| a == args) {
        return config.clone();
    }
    let argv = std::iter::once("memcrab").chain(args.iter().copied());
    let config = match Cli::parse_args(argv) {
        Ok(Action::Run(config)) => *config,
        _ => panic!("bad driver arguments {args:?}"),
    };
    configs.push((args.iter().map(|a| a.to_string()).collect(), config.clone()));
    config
}

fn check_key(key: &[u8]) {
    assert!(
        !key.is_empty() && key.len() <= MAX_KEY_LEN,
        "key of {} bytes",
        key.len()
    );
    assert!(
        !key.iter().any(|&b| b == b' ' || b == b'\n'),
        "key with a separator: {key:?}"
    );
}

fn check_request(req: &Request<'_>, limits: &Limits) {
    match req {
        Request::Get { keys, .. } => keys
            .split(|&b| b == b' ')
            .filter(|k| !k.is_empty())
            .for_each(check_key),
        Request::Store { key, value, .. } => {
            check_key(key);
            assert!(!limits.too_large(key.len(), value.len()));
        }
        Request::Delete { key, .. } | Request::Delta { key, .. } | Request::Touch { key, .. } => {
            check_key(key)
        }
        Request::Meta(m) => {
            // A base64 key decodes to any bytes, but never to more than the limit.
            assert!(m.key.len() <= MAX_KEY_LEN);
            assert!(!limits.too_large(m.key.len(), m.value.len()));
        }
        _ => {}
    }
}
