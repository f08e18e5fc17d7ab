//! The byte layout of one item, as it lies in a segment (or in its own allocation when
//! large). No pointers and no padding: a header of 19 to 27 bytes, then the key, then the value.
//!
//! ```text
//! off  size  field
//!   0     1  key length (1..=250)
//!   1     1  bits: CLOCK frequency (2 bits), FETCHED, STALE, WIN_SENT, DEAD, KEY_BINARY, HAS_FLAGS
//!   2     4  exptime, server-relative seconds, 0 = never
//!   6     4  last access time, server-relative seconds
//!  10     8  CAS version
//!  18   1-5  value length, LEB128 (1 byte below 128, 2 below 16 KiB)
//!   ..  0/4  client flags, only when not 0 (HAS_FLAGS)
//!   ..    k  key
//!   ..    v  value
//! ```
//! The fields that change in place (bits, times, CAS) come first at fixed offsets; the
//! variable ones never change after the item is written. Integers are little-endian and read
//! with `from_le_bytes`, so no field needs alignment and items are packed back to back.
//!
//! A large item lies in two pieces: its *head* (the header, the key and the first bytes of
//! the value) and its *rest* (the value's last bytes, whole pages mapped on their own). So
//! [`ItemRef::value`] is a [`Value`] of up to two parts.

/// Bytes of fixed header before the value length.
const FIXED_LEN: usize = 18;
/// The largest header: fixed part, a 5-byte length and the flags.
pub const MAX_HEADER_LEN: usize = FIXED_LEN + 5 + 4;

const KEY_LEN: usize = 0;
const BITS: usize = 1;
const EXPTIME: usize = 2;
const ATIME: usize = 6;
const CAS: usize = 10;
const VALUE_LEN: usize = 18;

/// CLOCK frequency: bumped on each hit, saturating at 3, lowered when the item survives an
/// eviction pass.
pub const FREQ_MASK: u8 = 0b0000_0011;
/// The item has been read since it was stored (memcached's ITEM_FETCHED).
pub const FETCHED: u8 = 0b0000_0100;
/// Marked stale by an invalidation (meta `I` flag).
pub const STALE: u8 = 0b0000_1000;
/// A recache win token was handed out for this item (meta `W`/`Z`).
pub const WIN_SENT: u8 = 0b0001_0000;
/// Unlinked from the index: the bytes are garbage until the segment is recycled.
pub const DEAD: u8 = 0b0010_0000;
/// The key was given in base64 (meta `b`) and is returned that way.
pub const KEY_BINARY: u8 = 0b0100_0000;
/// The client flags are not 0 and are stored after the value length.
const HAS_FLAGS: u8 = 0b1000_0000;

fn varint_len(v: usize) -> usize {
    match v {
        0..0x80 => 1,
        0x80..0x4000 => 2,
        0x4000..0x20_0000 => 3,
        0x20_0000..0x1000_0000 => 4,
        _ => 5,
    }
}

/// Header bytes for a value of this length and these flags.
#[inline]
pub fn header_len(value_len: usize, flags: u32) -> usize {
    FIXED_LEN + varint_len(value_len) + if flags == 0 { 0 } else { 4 }
}

/// Total bytes of an item.
#[inline]
pub fn total_len(key_len: usize, value_len: usize, flags: u32) -> usize {
    header_len(value_len, flags) + key_len + value_len
}

/// What an item counts against `-I`: its key, its value and the longest header
/// ([`MAX_HEADER_LEN`]), whatever its flags and value length. The one size decision: the store
/// refuses by it ([`Store::fits`](crate::storage::Store::fits)) and the parser, handed this
/// function, answers "too large" by it before buffering a value, so the two cannot disagree.
///
/// The exact length ([`total_len`]) would let values up to 4 bytes longer through (at `-I 1m`
/// under a 1-byte key: 1,048,549 and 1,048,550 bytes), which memcached 1.6.45 refuses: it
/// counts 59 bytes besides key and value (63 with client flags). Counting the longest header
/// keeps memcached's answer wherever memcrab has given it.
#[inline]
pub fn limit_len(key_len: usize, value_len: usize) -> usize {
    MAX_HEADER_LEN + key_len + value_len
}

/// An upper bound on the total bytes, whatever the flags (for the size class of a request).
#[inline]
pub fn max_total_len(key_len: usize, value_len: usize) -> usize {
    total_len(key_len, value_len, 1)
}

#[inline]
fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4-byte slice"))
}

#[inline]
fn write_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Decodes the value length: (length, bytes it took).
#[inline]
fn read_varint(b: &[u8]) -> (usize, usize) {
    let mut v = 0usize;
    for (i, &byte) in b.iter().take(5).enumerate() {
        v |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return (v, i + 1);
        }
    }
    (v, 5)
}

fn write_varint(b: &mut [u8], mut v: usize) -> usize {
    let mut i = 0;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            b[i] = byte;
            return i + 1;
        }
        b[i] = byte | 0x80;
        i += 1;
    }
}

/// Everything needed to write a new item.
pub struct NewItem<'a> {
    pub key: &'a [u8],
    /// The value in up to two parts (append and prepend write old and new back to back).
    pub value: [&'a [u8]; 2],
    pub flags: u32,
    pub exptime: u32,
    pub atime: u32,
    pub cas: u64,
    pub bits: u8,
}

impl NewItem<'_> {
    pub fn value_len(&self) -> usize {
        self.value[0].len() + self.value[1].len()
    }

    pub fn total_len(&self) -> usize {
        total_len(self.key.len(), self.value_len(), self.flags)
    }

    /// Writes the item at the start of `dst`, which must be `total_len()` bytes long.
    pub fn write(&self, dst: &mut [u8]) {
        self.write_split(dst, &mut []);
    }

    /// Writes the item in two pieces: `head` (header, key, the value's first bytes) and
    /// `rest` (the value's last `rest.len()` bytes); together `total_len()` bytes.
    pub fn write_split(&self, head: &mut [u8], rest: &mut [u8]) {
        debug_assert_eq!(head.len() + rest.len(), self.total_len());
        let dst = head;
        dst[KEY_LEN] = u8::try_from(self.key.len()).expect("keys are at most 250 bytes");
        let has_flags = if self.flags == 0 { 0 } else { HAS_FLAGS };
        dst[BITS] = (self.bits & !HAS_FLAGS) | has_flags;
        write_u32(dst, EXPTIME, self.exptime);
        write_u32(dst, ATIME, self.atime);
        dst[CAS..CAS + 8].copy_from_slice(&self.cas.to_le_bytes());
        let mut at = VALUE_LEN + write_varint(&mut dst[VALUE_LEN..], self.value_len());
        if self.flags != 0 {
            write_u32(dst, at, self.flags);
            at += 4;
        }
        dst[at..at + self.key.len()].copy_from_slice(self.key);
        at += self.key.len();
        copy_parts(&self.value, [&mut dst[at..], rest]);
    }
}

/// Copies the bytes of `from`'s parts, in order, over the bytes of `to`'s parts, in order
/// (both the same length in all).
fn copy_parts(from: &[&[u8]], to: [&mut [u8]; 2]) {
    let mut to = to.into_iter().filter(|d| !d.is_empty());
    let mut dst: &mut [u8] = to.next().unwrap_or_default();
    for mut part in from.iter().copied() {
        while !part.is_empty() {
            if dst.is_empty() {
                dst = to.next().expect("as many bytes to write as room");
            }
            let n = part.len().min(dst.len());
            dst[..n].copy_from_slice(&part[..n]);
            part = &part[n..];
            dst = &mut std::mem::take(&mut dst)[n..];
        }
    }
    debug_assert!(dst.is_empty() && to.next().is_none());
}

/// An item's value: its bytes in the head, then its rest (empty unless the item is large).
#[derive(Clone, Copy, Debug)]
pub struct Value<'a> {
    head: &'a [u8],
    rest: &'a [u8],
}

impl<'a> Value<'a> {
    pub fn len(&self) -> usize {
        self.head.len() + self.rest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, in order, in two slices (the second empty unless the item is large).
    pub fn parts(&self) -> [&'a [u8]; 2] {
        [self.head, self.rest]
    }

    /// Appends the bytes to `out` (a reply, a record), both pieces in order.
    pub fn append_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.head);
        out.extend_from_slice(self.rest);
    }

    /// The bytes, copied.
    pub fn to_vec(&self) -> Vec<u8> {
        self.joined().into_owned()
    }

    /// The bytes in one slice, copied only when they lie in two pieces.
    pub fn joined(&self) -> std::borrow::Cow<'a, [u8]> {
        if self.rest.is_empty() {
            std::borrow::Cow::Borrowed(self.head)
        } else {
            std::borrow::Cow::Owned([self.head, self.rest].concat())
        }
    }
}

/// Where the variable part lies: value length, flags, and the offset of the key.
#[inline]
fn layout(b: &[u8]) -> (usize, u32, usize) {
    let (value_len, n) = read_varint(&b[VALUE_LEN..]);
    let mut at = VALUE_LEN + n;
    let flags = if b[BITS] & HAS_FLAGS != 0 {
        at += 4;
        read_u32(b, at - 4)
    } else {
        0
    };
    (value_len, flags, at)
}

/// Read access to an item's bytes (`buf` starts at the item's header).
#[derive(Clone, Copy)]
pub struct ItemRef<'a> {
    buf: &'a [u8],
    /// The value's last bytes when they lie apart (a large item), else empty.
    rest: &'a [u8],
}

impl<'a> ItemRef<'a> {
    #[inline]
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, rest: &[] }
    }

    /// An item in two pieces: `head` from the header on, `rest` the value's last bytes.
    #[inline]
    pub fn split(head: &'a [u8], rest: &'a [u8]) -> Self {
        Self { buf: head, rest }
    }

    #[inline]
    pub fn key_len(&self) -> usize {
        usize::from(self.buf[KEY_LEN])
    }

    #[inline]
    pub fn value_len(&self) -> usize {
        read_varint(&self.buf[VALUE_LEN..]).0
    }

    #[inline]
    pub fn total_len(&self) -> usize {
        let (value_len, _, key_at) = layout(self.buf);
        key_at + self.key_len() + value_len
    }

    #[inline]
    pub fn key(&self) -> &'a [u8] {
        let (_, _, key_at) = layout(self.buf);
        &self.buf[key_at..key_at + self.key_len()]
    }

    #[inline]
    pub fn value(&self) -> Value<'a> {
        let (value_len, _, key_at) = layout(self.buf);
        let start = key_at + self.key_len();
        Value {
            head: &self.buf[start..start + value_len - self.rest.len()],
            rest: self.rest,
        }
    }

    /// The bits, without the layout bit.
    #[inline]
    pub fn bits(&self) -> u8 {
        self.buf[BITS] & !HAS_FLAGS
    }

    #[inline]
    pub fn flags(&self) -> u32 {
        layout(self.buf).1
    }

    #[inline]
    pub fn exptime(&self) -> u32 {
        read_u32(self.buf, EXPTIME)
    }

    #[inline]
    pub fn atime(&self) -> u32 {
        read_u32(self.buf, ATIME)
    }

    #[inline]
    pub fn cas(&self) -> u64 {
        u64::from_le_bytes(self.buf[CAS..CAS + 8].try_into().expect("8-byte slice"))
    }
}

/// Write access to the mutable header fields of a stored item.
pub struct ItemMut<'a> {
    buf: &'a mut [u8],
    /// As in [`ItemRef`]: the value's last bytes when they lie apart.
    rest: &'a mut [u8],
}

impl<'a> ItemMut<'a> {
    #[inline]
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, rest: &mut [] }
    }

    /// As [`ItemRef::split`].
    #[inline]
    pub fn split(head: &'a mut [u8], rest: &'a mut [u8]) -> Self {
        Self { buf: head, rest }
    }

    #[inline]
    pub fn as_ref(&self) -> ItemRef<'_> {
        ItemRef::split(self.buf, self.rest)
    }

    /// Sets the bits, keeping the layout bit.
    #[inline]
    pub fn set_bits(&mut self, bits: u8) {
        self.buf[BITS] = (bits & !HAS_FLAGS) | (self.buf[BITS] & HAS_FLAGS);
    }

    #[inline]
    pub fn set_exptime(&mut self, exptime: u32) {
        write_u32(self.buf, EXPTIME, exptime);
    }

    #[inline]
    pub fn set_atime(&mut self, atime: u32) {
        write_u32(self.buf, ATIME, atime);
    }

    #[inline]
    pub fn set_cas(&mut self, cas: u64) {
        self.buf[CAS..CAS + 8].copy_from_slice(&cas.to_le_bytes());
    }

    /// Rewrites the value in place as `text` padded with spaces to its length, as
    /// memcached's `decr` does; `text` must not be longer than the value.
    pub fn rewrite_value(&mut self, text: &[u8]) {
        let key_len = usize::from(self.buf[KEY_LEN]);
        let (value_len, _, key_at) = layout(self.buf);
        let start = key_at + key_len;
        let head_end = start + value_len - self.rest.len();
        let mut text = text;
        for dst in [&mut self.buf[start..head_end], &mut *self.rest] {
            let n = text.len().min(dst.len());
            dst[..n].copy_from_slice(&text[..n]);
            dst[n..].fill(b' ');
            text = &text[n..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_round_trips() {
        let item = NewItem {
            key: b"key",
            value: [b"hel", b"lo"],
            flags: 0xdead_beef,
            exptime: 7,
            atime: 3,
            cas: u64::MAX - 1,
            bits: FETCHED | 2,
        };
        let mut buf = vec![0u8; item.total_len()];
        item.write(&mut buf);
        let r = ItemRef::new(&buf);
        assert_eq!(r.key(), b"key");
        assert_eq!(r.value().joined().as_ref(), b"hello");
        assert_eq!(r.flags(), 0xdead_beef);
        assert_eq!((r.exptime(), r.atime(), r.cas()), (7, 3, u64::MAX - 1));
        assert_eq!(r.bits(), FETCHED | 2);
        assert_eq!(r.total_len(), FIXED_LEN + 1 + 4 + 8);
        let mut m = ItemMut::new(&mut buf);
        m.set_exptime(99);
        m.rewrite_value(b"wor");
        assert_eq!(m.as_ref().exptime(), 99);
        assert_eq!(m.as_ref().value().joined().as_ref(), b"wor  ");
    }

    #[test]
    fn an_item_in_two_pieces_reads_and_rewrites_across_them() {
        let value: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let item = NewItem {
            key: b"big",
            value: [&value[..3_000], &value[3_000..]],
            flags: 9,
            exptime: 1,
            atime: 2,
            cas: 3,
            bits: 0,
        };
        let total = item.total_len();
        for rest_len in [0, 1, 4_096, 8_192, 10_000] {
            let mut head = vec![0u8; total - rest_len];
            let mut rest = vec![0u8; rest_len];
            item.write_split(&mut head, &mut rest);
            let r = ItemRef::split(&head, &rest);
            assert_eq!((r.key(), r.flags(), r.cas()), (&b"big"[..], 9, 3));
            assert_eq!(r.value_len(), value.len());
            assert_eq!(r.total_len(), total);
            let v = r.value();
            assert_eq!(v.parts()[1], &rest[..]);
            assert_eq!(v.joined().as_ref(), &value[..]);
            let mut m = ItemMut::split(&mut head, &mut rest);
            m.rewrite_value(b"42");
            let mut want = b"42".to_vec();
            want.resize(value.len(), b' ');
            assert_eq!(m.as_ref().value().joined().as_ref(), &want[..]);
        }
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;

    #[test]
    fn zero_flags_and_short_values_take_the_smallest_header() {
        assert_eq!(header_len(10, 0), 19);
        assert_eq!(header_len(200, 0), 20);
        assert_eq!(header_len(200, 7), 24);
        assert_eq!(header_len(1 << 30, 7), MAX_HEADER_LEN);
        for (len, flags) in [
            (0usize, 0u32),
            (127, 0),
            (128, 1),
            (16_383, u32::MAX),
            (16_384, 5),
            (300_000, 0),
        ] {
            let value = vec![b'v'; len];
            let item = NewItem {
                key: b"k",
                value: [&value, b""],
                flags,
                exptime: 1,
                atime: 2,
                cas: 3,
                bits: DEAD | KEY_BINARY,
            };
            let mut buf = vec![0u8; item.total_len()];
            item.write(&mut buf);
            let r = ItemRef::new(&buf);
            assert_eq!((r.value_len(), r.flags(), r.key()), (len, flags, &b"k"[..]));
            assert_eq!(r.bits(), DEAD | KEY_BINARY);
            assert_eq!(r.total_len(), buf.len());
            let mut m = ItemMut::new(&mut buf);
            m.set_bits(FETCHED);
            assert_eq!((m.as_ref().bits(), m.as_ref().flags()), (FETCHED, flags));
        }
    }
}
