//! Numbers in text, read as memcached reads them: C's `strtoull`/`strtol` under its
//! `safe_strto*` checks. Request tokens (flags, exptimes, lengths, deltas, CAS values, meta
//! flag arguments) and the values `incr`/`decr` count in are both read this way, so the
//! same input is refused or accepted, and means the same number, as in memcached.

/// A number token as memcached reads it: C's `strtoull`/`strtol` (leading white space, an
/// optional sign, decimal digits) under its `safe_strto*` checks (at least one digit, no
/// overflow, and the digits end the token or are followed by white space, after which
/// anything is ignored). White space is C's: space, tab, LF, VT, FF, CR. Returns the sign
/// and the magnitude.
fn c_number(t: &[u8]) -> Option<(bool, u64)> {
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let rest = &t[t.iter().take_while(|&&b| is_space(b)).count()..];
    let (negative, rest) = match rest.split_first() {
        Some((b'-', r)) => (true, r),
        Some((b'+', r)) => (false, r),
        _ => (false, rest),
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || rest.get(digits).is_some_and(|&b| !is_space(b)) {
        return None;
    }
    let magnitude = rest[..digits].iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })?;
    Some((negative, magnitude))
}

/// An unsigned number (memcached's `safe_strtoull`): as `strtoull`, a minus sign negates
/// modulo 2^64, and the result is refused only when it is negative as a signed number and
/// the token has a minus sign anywhere (so `-0` is 0 and `-1` is refused).
pub fn parse_u64(t: &[u8]) -> Option<u64> {
    let (negative, magnitude) = c_number(t)?;
    let v = if negative {
        magnitude.wrapping_neg()
    } else {
        magnitude
    };
    (v as i64 >= 0 || !t.contains(&b'-')).then_some(v)
}

/// A 32-bit unsigned number: [`parse_u64`] within `u32`.
pub fn parse_u32(t: &[u8]) -> Option<u32> {
    parse_u64(t).and_then(|v| u32::try_from(v).ok())
}

/// A signed number as memcached's `safe_strtol` reads it (every exptime and TTL): `strtol`
/// into a 64-bit `long`, refused outside its range, then stored into an `int32_t`, which
/// keeps the low 32 bits (so `2147483648` is -2147483648, an item already expired, and
/// `4294967296` is 0).
pub fn parse_i32(t: &[u8]) -> Option<i32> {
    let (negative, magnitude) = c_number(t)?;
    let long = if negative {
        (magnitude <= i64::MAX as u64 + 1).then(|| (magnitude as i64).wrapping_neg())
    } else {
        i64::try_from(magnitude).ok()
    }?;
    Some(long as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_as_memcached_reads_them() {
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b"007"), Some(7));
        assert_eq!(parse_u64(b"+1"), Some(1));
        assert_eq!(parse_u64(b"-0"), Some(0));
        assert_eq!(parse_u64(b"-1"), None);
        // strtoull negates modulo 2^64; only a result negative as a signed number is refused.
        assert_eq!(parse_u64(b"-18446744073709551615"), Some(1));
        assert_eq!(parse_u64(b"18446744073709551615\t-"), None);
        assert_eq!(parse_u64(b"\t\x0b5"), Some(5));
        assert_eq!(parse_u64(b"5\r"), Some(5));
        assert_eq!(parse_u64(b"5\tjunk"), Some(5));
        assert_eq!(parse_u64(b"5x"), None);
        assert_eq!(parse_u64(b"+"), None);
        assert_eq!(parse_u64(b"+-1"), None);
        assert_eq!(parse_u64(b"\t"), None);
        assert_eq!(parse_u64(b""), None);
        // strtol's range is a 64-bit long's; memcached keeps the low 32 bits of it.
        assert_eq!(parse_i32(b"-9223372036854775808"), Some(0));
        assert_eq!(parse_i32(b"-9223372036854775809"), None);
        assert_eq!(parse_i32(b"9223372036854775808"), None);
        assert_eq!(parse_i32(b"2147483648"), Some(i32::MIN));
        assert_eq!(parse_i32(b"4294967297"), Some(1));
        assert_eq!(parse_i32(b"-2147483649"), Some(i32::MAX));
        assert_eq!(parse_i32(b"+10\r"), Some(10));
        assert_eq!(parse_i32(b"-"), None);
        assert_eq!(parse_u32(b"4294967296"), None);
        assert_eq!(parse_u32(b"+3"), Some(3));
    }
}
