//! The one tokenizer of both dialects: a line split on spaces as memcached's tokenizer splits
//! it, and the token readers (numbers, the command word, the rest of a line) that the text
//! and meta parsers share.

use memchr::memchr;

/// memcached's tokenizer keeps at most this many tokens of a line; the rest of a longer
/// line is one with the last.
const MAX_TOKENS: usize = 23;

/// The tokens of a line, at most [`MAX_TOKENS`], as memcached's tokenizer keeps them.
pub(super) struct Tokens<'a> {
    items: [&'a [u8]; MAX_TOKENS],
    count: usize,
}

impl<'a> Tokens<'a> {
    /// The tokens of a classic text line.
    pub(super) fn new(line: &'a [u8]) -> Self {
        Self::split(line, MAX_TOKENS)
    }

    /// The tokens of a meta line: as [`Tokens::new`], but every flag token (those from
    /// `first_flag` on) must start with a letter (`A` to `z`) or a digit, or the line has no
    /// tokens at all (memcached's meta tokenizer).
    pub(super) fn meta(line: &'a [u8], first_flag: usize) -> Self {
        let tokens = Self::split(line, MAX_TOKENS);
        let flags = tokens.items[..tokens.count].iter().skip(first_flag);
        if flags
            .clone()
            .all(|t| matches!(t[0], b'A'..=b'z' | b'0'..=b'9'))
        {
            tokens
        } else {
            Self::split(line, 0)
        }
    }

    fn split(line: &'a [u8], max: usize) -> Self {
        // Filled where it is returned: built from a local array, the 380-byte struct
        // was copied out with a `memcpy` per line.
        let mut tokens = Self {
            items: [&line[..0]; MAX_TOKENS],
            count: 0,
        };
        for token in line.split(|&b| b == b' ').filter(|t| !t.is_empty()) {
            if tokens.count == max {
                break;
            }
            tokens.items[tokens.count] = token;
            tokens.count += 1;
        }
        tokens
    }

    pub(super) fn len(&self) -> usize {
        self.count
    }

    /// Token `i`, or an empty token past the last.
    pub(super) fn get(&self, i: usize) -> &'a [u8] {
        if i < self.count { self.items[i] } else { b"" }
    }

    /// The tokens kept.
    pub(super) fn as_slice(&self) -> &[&'a [u8]] {
        &self.items[..self.count]
    }

    /// memcached's noreply check: the last token kept is exactly `noreply`.
    pub(super) fn noreply(&self) -> bool {
        self.count > 0 && self.get(self.count - 1) == b"noreply"
    }
}

/// The command word: the bytes before the first space. memcached picks the command by it,
/// so a line starting with a space names no command that takes a key.
pub(super) fn command_word(line: &[u8]) -> &[u8] {
    &line[..find_short(b' ', line).unwrap_or(line.len())]
}

/// The first `byte` in `haystack`, for one usually a few bytes in (a command word, a
/// request line's end): the first 64 bytes eight at a time in a register, which for such
/// short distances costs less than `memchr`'s setup, the rest by `memchr`.
pub(super) fn find_short(byte: u8, haystack: &[u8]) -> Option<usize> {
    const SHORT: usize = 64;
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let splat = u64::from_ne_bytes([byte; 8]);
    let mut at = 0;
    while at + 8 <= haystack.len().min(SHORT) {
        let word = haystack[at..at + 8]
            .try_into()
            .map(u64::from_le_bytes)
            .expect("8 bytes");
        // A zero byte of `word ^ splat` is a match; the lowest byte this flags is always a
        // true one (a borrow can only flag bytes above a zero).
        let x = word ^ splat;
        let found = x.wrapping_sub(ONES) & !x & HIGHS;
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    memchr(byte, &haystack[at..]).map(|i| at + i)
}

/// The bytes after the first `skip` tokens, without leading spaces.
pub(super) fn rest_after(line: &[u8], skip: usize) -> &[u8] {
    let mut rest = line;
    for _ in 0..skip {
        let start = rest.iter().take_while(|&&b| b == b' ').count();
        rest = &rest[start..];
        let len = rest.iter().take_while(|&&b| b != b' ').count();
        rest = &rest[len..];
    }
    let start = rest.iter().take_while(|&&b| b == b' ').count();
    &rest[start..]
}

/// A number token as memcached 1.6.45 reads most of them (mcmc's `tokto*`): decimal digits
/// only, no sign, no white space, at most `max_len` bytes, no overflow.
fn strict_digits(t: &[u8], max_len: usize) -> Option<u64> {
    if t.len() > max_len {
        return None;
    }
    t.iter().try_fold(0u64, |acc, &b| {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// An unsigned 64-bit token (delta, CAS unique, meta `C`, `E`, `J`, `D`).
pub(super) fn token_u64(t: &[u8]) -> Option<u64> {
    strict_digits(t, 22)
}

/// An unsigned 32-bit token (verbosity, `cache_memlimit`, meta `F`).
pub(super) fn token_u32(t: &[u8]) -> Option<u32> {
    strict_digits(t, 11).and_then(|v| u32::try_from(v).ok())
}

/// A signed 32-bit token (exptimes of touch, gat and flush_all, lengths, meta TTLs): an
/// optional `-`, then digits (a lone `-` is 0, as in memcached).
pub(super) fn token_i32(t: &[u8]) -> Option<i32> {
    if t.len() > 11 {
        return None;
    }
    match t.split_first() {
        Some((b'-', digits)) => {
            let v = strict_digits(digits, 11)?;
            (v <= 1 << 31).then(|| (v as i64).wrapping_neg() as i32)
        }
        _ => strict_digits(t, 11).and_then(|v| i32::try_from(v).ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_keep_at_most_memcacheds_token_count() {
        let line = b"a ".repeat(30);
        let tokens = Tokens::new(&line);
        assert_eq!(tokens.len(), MAX_TOKENS);
        assert_eq!(tokens.get(MAX_TOKENS), b"");
        assert!(Tokens::new(b"  set  k noreply").noreply());
    }

    #[test]
    fn a_meta_flag_not_starting_with_a_letter_or_digit_empties_the_line() {
        assert_eq!(Tokens::meta(b"mg key v t", 2).as_slice().len(), 4);
        assert_eq!(Tokens::meta(b"mg key v -t", 2).len(), 0);
        // The key may start with anything.
        assert_eq!(Tokens::meta(b"mg -key v", 2).len(), 3);
    }

    #[test]
    fn find_short_finds_what_memchr_finds_at_every_distance() {
        // Neighbours of the bytes looked for, and bytes with the high bit set, which the
        // word-at-a-time test must not take for a match.
        let fillers = [b'\t', b'\x0b', b'\x8a', b'!', b'\x1f', b'\xa0', b'\xff', 0];
        for byte in [b'\n', b' '] {
            for len in 0..150 {
                let hay: Vec<u8> = (0..len).map(|i| fillers[(i * 7 + len) % 8]).collect();
                assert_eq!(find_short(byte, &hay), None, "len {len}");
                for pos in 0..len {
                    let mut hay = hay.clone();
                    hay[pos] = byte;
                    // A second one later must not be found first.
                    if pos + 3 < len {
                        hay[pos + 3] = byte;
                    }
                    assert_eq!(find_short(byte, &hay), memchr(byte, &hay), "{len} {pos}");
                    assert_eq!(find_short(byte, &hay), Some(pos));
                }
            }
        }
    }
}
