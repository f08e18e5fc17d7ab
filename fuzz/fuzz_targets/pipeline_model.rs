//! The request pipeline against a model: the input is decoded into a sequence of storage,
//! retrieval, delete, counter and meta commands over eight keys, rendered as the text a
//! client sends, fed to the server in chunks of arbitrary size, and every reply byte must be
//! what a plain map of key -> (flags, value) predicts. Nothing expires and nothing is
//! evicted (`-m 64`, values under 8 KiB), so the engine must agree with the map exactly.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use memcrab_fuzz::Driver;

const KEYS: [&str; 8] = ["k0", "k1", "k2", "k3", "longer:key:4", "k5", "k6", "k7"];
/// Values stay below this, so no write is refused as too large.
const MAX_VALUE: usize = 8 * 1024;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn key(&mut self) -> Option<&'static str> {
        Some(KEYS[usize::from(self.byte()? % 8)])
    }

    /// Letters of a given length, or digits (a counter).
    fn value(&mut self) -> Option<Vec<u8>> {
        let kind = self.byte()?;
        if kind % 3 == 0 {
            let n = u64::from(self.byte()?) * u64::from(self.byte()?) * 1_000_003;
            return Some(n.to_string().into_bytes());
        }
        let len = usize::from(self.byte()?) * usize::from(kind % 8 + 1);
        Some(
            (0..len)
                .map(|i| b'a' + ((i + usize::from(kind)) % 26) as u8)
                .collect(),
        )
    }
}

type Model = BTreeMap<&'static str, (u32, Vec<u8>)>;

/// A counter as memcached reads it: digits, then the end or white space, below 2^64.
fn counter(v: &[u8]) -> Option<u64> {
    let digits = v.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || (digits < v.len() && !v[digits].is_ascii_whitespace()) {
        return None;
    }
    std::str::from_utf8(&v[..digits]).ok()?.parse().ok()
}

fn value_reply(expect: &mut Vec<u8>, key: &str, flags: u32, value: &[u8]) {
    expect.extend_from_slice(format!("VALUE {key} {flags} {}\r\n", value.len()).as_bytes());
    expect.extend_from_slice(value);
    expect.extend_from_slice(b"\r\n");
}

/// Renders one command into `send` and its reply into `expect`, updating the model.
fn step(
    input: &mut Input<'_>,
    model: &mut Model,
    send: &mut Vec<u8>,
    expect: &mut Vec<u8>,
) -> Option<()> {
    let op = input.byte()? % 15;
    let key = input.key()?;
    match op {
        0..=4 | 14 => {
            let flags = u32::from(input.byte()?) << 8;
            let value = input.value()?;
            let verb = ["set", "add", "replace", "append", "prepend"][usize::from(op % 5)];
            let noreply = op == 14;
            let old = model.get(key).cloned();
            let (stored, new) = match (verb, old) {
                ("set", _) => (true, Some((flags, value.clone()))),
                ("add", None) => (true, Some((flags, value.clone()))),
                ("replace", Some(_)) => (true, Some((flags, value.clone()))),
                ("append", Some((f, mut v))) => {
                    v.extend_from_slice(&value);
                    (true, Some((f, v)))
                }
                ("prepend", Some((f, v))) => {
                    let mut n = value.clone();
                    n.extend_from_slice(&v);
                    (true, Some((f, n)))
                }
                _ => (false, None),
            };
            if new.as_ref().is_some_and(|(_, v)| v.len() > MAX_VALUE) {
                return Some(());
            }
            let tail = if noreply { " noreply" } else { "" };
            send.extend_from_slice(
                format!("{verb} {key} {flags} 0 {}{tail}\r\n", value.len()).as_bytes(),
            );
            send.extend_from_slice(&value);
            send.extend_from_slice(b"\r\n");
            if !noreply {
                expect.extend_from_slice(if stored {
                    b"STORED\r\n"
                } else {
                    b"NOT_STORED\r\n"
                });
            }
            if let Some(new) = new {
                model.insert(key, new);
            }
        }
        5 => {
            send.extend_from_slice(format!("delete {key}\r\n").as_bytes());
            let hit = model.remove(key).is_some();
            expect.extend_from_slice(if hit {
                b"DELETED\r\n"
            } else {
                b"NOT_FOUND\r\n"
            });
        }
        6 | 7 => {
            let keys: Vec<&str> = if op == 6 {
                vec![key]
            } else {
                vec![key, input.key()?, input.key()?]
            };
            send.extend_from_slice(format!("get {}\r\n", keys.join(" ")).as_bytes());
            for k in keys {
                if let Some((flags, value)) = model.get(k) {
                    value_reply(expect, k, *flags, value);
                }
            }
            expect.extend_from_slice(b"END\r\n");
        }
        8 | 9 => {
            let incr = op == 8;
            let delta = u64::from(input.byte()?) * 977;
            let verb = if incr { "incr" } else { "decr" };
            send.extend_from_slice(format!("{verb} {key} {delta}\r\n").as_bytes());
            match model.get_mut(key) {
                None => expect.extend_from_slice(b"NOT_FOUND\r\n"),
                Some((_, value)) => match counter(value) {
                    None => expect.extend_from_slice(
                        b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
                    ),
                    Some(n) => {
                        let n = if incr {
                            n.wrapping_add(delta)
                        } else {
                            n.saturating_sub(delta)
                        };
                        let mut text = n.to_string().into_bytes();
                        expect.extend_from_slice(&text);
                        expect.extend_from_slice(b"\r\n");
                        // A shorter number is written in place, padded with spaces.
                        if text.len() < value.len() {
                            text.resize(value.len(), b' ');
                        }
                        *value = text;
                    }
                },
            }
        }
        10 => {
            send.extend_from_slice(format!("touch {key} 0\r\n").as_bytes());
            let hit = model.contains_key(key);
            expect.extend_from_slice(if hit {
                b"TOUCHED\r\n"
            } else {
                b"NOT_FOUND\r\n"
            });
        }
        11 => {
            send.extend_from_slice(format!("mg {key} v f\r\n").as_bytes());
            match model.get(key) {
                Some((flags, value)) => {
                    expect.extend_from_slice(format!("VA {} f{flags}\r\n", value.len()).as_bytes());
                    expect.extend_from_slice(value);
                    expect.extend_from_slice(b"\r\n");
                }
                None => expect.extend_from_slice(b"EN\r\n"),
            }
        }
        12 => {
            let flags = u32::from(input.byte()?);
            let value = input.value()?;
            send.extend_from_slice(format!("ms {key} {} F{flags}\r\n", value.len()).as_bytes());
            send.extend_from_slice(&value);
            send.extend_from_slice(b"\r\n");
            expect.extend_from_slice(b"HD\r\n");
            model.insert(key, (flags, value));
        }
        _ => {
            send.extend_from_slice(format!("md {key}\r\n").as_bytes());
            let hit = model.remove(key).is_some();
            expect.extend_from_slice(if hit { b"HD\r\n" } else { b"NF\r\n" });
        }
    }
    Some(())
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let mut input = Input(rest);
    let (mut model, mut send, mut expect) = (Model::new(), Vec::new(), Vec::new());
    while step(&mut input, &mut model, &mut send, &mut expect).is_some() {}
    let mut driver = Driver::new(&["-m", "64", "-I", "64k", "-o", "slab_chunk_max=16"]);
    for part in send.chunks(usize::from(chunk) * 16 + 1) {
        driver.feed(part);
    }
    assert!(!driver.is_closed());
    if driver.replies != expect {
        let at = driver
            .replies
            .iter()
            .zip(&expect)
            .position(|(a, b)| a != b)
            .unwrap_or(expect.len().min(driver.replies.len()));
        let from = at.saturating_sub(60);
        panic!(
            "replies differ at byte {at}:\n got: {:?}\nwant: {:?}",
            String::from_utf8_lossy(&driver.replies[from..(at + 60).min(driver.replies.len())]),
            String::from_utf8_lossy(&expect[from..(at + 60).min(expect.len())]),
        );
    }
});
