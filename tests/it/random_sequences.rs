//! Random command sequences, sent to memcrab and memcached alike, must get the same bytes
//! back: a differential check of the text and meta protocols over inputs no one wrote by
//! hand (signs and white space in numbers, exptimes past 32 bits, CAS values after
//! failures, flags in any order, `noreply` and `q` mixed in).
//!
//! The generator stays inside what both servers agree on: well-formed data blocks (a
//! refused line's data block is one of the documented 1.6.18/1.6.45 differences, see
//! docs/compatibility.md), no exptimes a second's tick could change (nor absolute ones in
//! the future: memcached's clock lags by up to a second, so their `t` may differ by one),
//! no negative meta TTL
//! (whose `t` memcached prints as a wrapped negative, see docs/compatibility.md), none of the meta
//! flags 1.6.18 lacks (`E`, `x`, `s` on `ms`, `C` on `mg`, `N` on `ms`), and no arithmetic
//! that makes a number shorter (`decr`, a wrapping `incr`, leading zeros; values never start
//! with `0`): memcached writes that in place
//! padded with spaces, or as a new item of the exact length when a response it has not yet
//! released holds the item, which depends on timing (memcrab always pads). Every sequence
//! ends with `mn` (and has no other), so its replies are complete when `MN` arrives. Skipped
//! (with a note) when memcached is not installed. `MEMCRAB_RANDOM_SEED=<n>` and
//! `MEMCRAB_RANDOM_SEQUENCES=<n>` explore beyond the fixed seed CI runs.

use std::io::Read;
use std::time::Instant;

use crate::common::*;

/// Sequences per run, and commands per sequence at most.
const SEQUENCES: usize = 300;
const MAX_COMMANDS: usize = 8;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, from: &[&'a [u8]]) -> &'a [u8] {
        from[self.below(from.len())]
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

const LONG_KEY: &[u8] = &[b'k'; 250];
const KEYS: &[&[u8]] = &[b"a", b"b", b"c", b"n", LONG_KEY, b"x\x01y", b"=/+"];
const EXPTIMES: &[&[u8]] = &[
    b"0",
    b"-1",
    b"+0",
    b"100000",
    b"2147483648",
    b"4294967296",
    b"abc",
];
const NUMBERS: &[&[u8]] = &[
    b"0",
    b"1",
    b"5",
    b"+1",
    b"-0",
    b"-1",
    b"007",
    b"18446744073709551616",
    b"1x",
    b"abc",
];
const FLAGS: &[&[u8]] = &[b"0", b"1", b"+3", b"4294967295"];
const META_FLAGS: &[&[u8]] = &[
    b"v", b"k", b"f", b"c", b"t", b"q", b"h", b"l", b"u", b"O123", b"Oabc", b"T0", b"T100000",
    b"I", b"MS", b"ME", b"MA", b"MP", b"MR", b"Mx", b"D1", b"D+5", b"J1", b"C1", b"C0", b"F5",
    b"R10", b"b",
];

fn key(r: &mut Rng) -> Vec<u8> {
    r.pick(KEYS).to_vec()
}

fn noreply(r: &mut Rng) -> &'static [u8] {
    if r.chance(15) { b" noreply" } else { b"" }
}

/// Up to `n` meta flags, each first letter at most once, from those `allowed` for the
/// command.
fn meta_flags(r: &mut Rng, n: usize, allowed: impl Fn(u8) -> bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut seen = [false; 128];
    for _ in 0..n {
        let flag = r.pick(META_FLAGS);
        if seen[flag[0] as usize] || !allowed(flag[0]) {
            continue;
        }
        seen[flag[0] as usize] = true;
        out.push(b' ');
        out.extend_from_slice(flag);
    }
    out
}

/// A line end: `\r\n`, or now and then a bare `\n` (both servers take either).
fn end(r: &mut Rng) -> &'static [u8] {
    if r.chance(90) { b"\r\n" } else { b"\n" }
}

fn command(r: &mut Rng) -> Vec<u8> {
    let mut c = Vec::new();
    let words: &[&[u8]] = &[
        b"get",
        b"gets",
        b"gat",
        b"gats",
        b"set",
        b"add",
        b"replace",
        b"append",
        b"prepend",
        b"cas",
        b"delete",
        b"incr",
        b"touch",
        b"mg",
        b"ms",
        b"md",
        b"ma",
        b"flush_all",
        b"verbosity",
        b"bogus",
    ];
    let word = r.pick(words);
    c.extend_from_slice(word);
    match word {
        b"get" | b"gets" | b"gat" | b"gats" => {
            if word.starts_with(b"gat") {
                c.push(b' ');
                c.extend_from_slice(r.pick(EXPTIMES));
            }
            for _ in 0..1 + r.below(3) {
                c.push(b' ');
                c.extend(key(r));
            }
        }
        b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" => {
            let len = r.pick(&[b"0", b"1", b"3", b"+2", b"20"]);
            let size: usize = std::str::from_utf8(len).unwrap().parse().unwrap();
            c.push(b' ');
            c.extend(key(r));
            for token in [r.pick(FLAGS), r.pick(&[b"0", b"-1", b"100000", b"+0"]), len] {
                c.push(b' ');
                c.extend_from_slice(token);
            }
            if word == b"cas" {
                c.push(b' ');
                c.extend_from_slice(r.pick(&[b"0", b"1", b"2", b"3", b"4", b"6", b"-0"]));
            }
            c.extend_from_slice(noreply(r));
            c.extend_from_slice(end(r));
            c.extend((0..size).map(|i| b"1234567890abcdefghij"[i]));
            // A data block ends with exactly `\r\n`.
            c.extend_from_slice(b"\r\n");
            return c;
        }
        b"delete" => {
            c.push(b' ');
            c.extend(key(r));
            c.extend_from_slice(noreply(r));
        }
        b"incr" | b"touch" => {
            c.push(b' ');
            c.extend(key(r));
            c.push(b' ');
            c.extend_from_slice(r.pick(if word == b"incr" { NUMBERS } else { EXPTIMES }));
            c.extend_from_slice(noreply(r));
        }
        b"mg" | b"md" | b"ma" => {
            c.push(b' ');
            c.extend(key(r));
            // The flags each command takes in both versions (1.6.18 refuses the others
            // with messages 1.6.45 changed).
            let takes: &[u8] = match word {
                b"mg" => b"vkfctqhluOTRb",
                b"md" => b"qIkOTC",
                _ => b"JDTMqOktcvC",
            };
            let n = r.below(5);
            c.extend(meta_flags(r, n, |f| takes.contains(&f)));
        }
        b"ms" => {
            let size = r.below(4);
            c.push(b' ');
            c.extend(key(r));
            c.extend_from_slice(format!(" {size}").as_bytes());
            let n = r.below(5);
            c.extend(meta_flags(r, n, |f| b"TFIMqOkCb".contains(&f)));
            c.extend_from_slice(end(r));
            c.extend((0..size).map(|i| b"xyz"[i]));
            c.extend_from_slice(b"\r\n");
            return c;
        }
        b"flush_all" => c.extend_from_slice(noreply(r)),
        b"verbosity" => {
            c.extend_from_slice(b" ");
            c.extend_from_slice(r.pick(&[b"0", b"1"]));
            c.extend_from_slice(noreply(r));
        }
        _ => {}
    }
    c.extend_from_slice(end(r));
    c
}

/// Sends `bytes` and reads until the reply ends with the closing `MN`.
fn exchange(conn: &mut Conn, bytes: &[u8]) -> Vec<u8> {
    conn.send(bytes);
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let started = Instant::now();
    while !out.ends_with(b"MN\r\n") {
        let n = conn.stream().read(&mut buf).unwrap_or_else(|e| {
            panic!(
                "[{}] no complete reply to {} after {:?} (got {}): {e}",
                conn.label(),
                esc(bytes),
                started.elapsed(),
                esc(&out)
            )
        });
        assert!(n > 0, "[{}] closed; got {}", conn.label(), esc(&out));
        out.extend_from_slice(&buf[..n]);
    }
    out
}

#[test]
fn random_sequences_get_memcached_s_bytes() {
    if memcached_bin().is_none() {
        eprintln!("note: memcached not installed; random_sequences skipped");
        return;
    }
    let args = ["-m", "64", "-t", "2"];
    let (crab, cached) = (Server::memcrab(&args), Server::memcached(&args));
    let (mut a, mut b) = (crab.connect(), cached.connect());
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let mut r = Rng(env("MEMCRAB_RANDOM_SEED").unwrap_or(0x5EED_2026_1206_0001) | 1);
    let sequences = env("MEMCRAB_RANDOM_SEQUENCES").map_or(SEQUENCES, |n| n as usize);
    for n in 0..sequences {
        let mut case = b"set a 0 0 1\r\n5\r\nset b 3 0 3\r\nabc\r\n".to_vec();
        for _ in 0..1 + r.below(MAX_COMMANDS) {
            case.extend(command(&mut r));
        }
        case.extend_from_slice(b"mn\r\n");
        let (mine, theirs) = (exchange(&mut a, &case), exchange(&mut b, &case));
        assert!(
            mine == theirs,
            "sequence {n}:\n  sent      {}\n  memcached {}\n  memcrab   {}",
            esc(&case),
            esc(&theirs),
            esc(&mine)
        );
    }
}
