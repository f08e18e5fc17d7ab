//! The byte layout of one item, as it lies in a segment (or in its own allocation when
//! large). No pointers and no padding: a 26-byte header, then the key, then the value.
//!
//! ```text
//! off  size  field
//!   0     1  key length (1..=250)
//!   1     1  bits: CLOCK frequency (2 bits), FETCHED, STALE, WIN_SENT, DEAD, KEY_BINARY
//!   2     4  value length
//!   6     4  client flags
//!  10     4  exptime, server-relative seconds, 0 = never
//!  14     4  last access time, server-relative seconds
//!  18     8  CAS version
//!  26     k  key
//! 26+k    v  value
//! ```
//! Integers are little-endian and read with `from_le_bytes`, so no field needs alignment and
//! items are packed back to back.

/// Bytes of header before the key.
pub const HEADER_LEN: usize = 26;

const KEY_LEN: usize = 0;
const BITS: usize = 1;
const VALUE_LEN: usize = 2;
const FLAGS: usize = 6;
const EXPTIME: usize = 10;
const ATIME: usize = 14;
const CAS: usize = 18;

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

/// Total bytes an item with this key and value occupies.
#[inline]
pub fn total_len(key_len: usize, value_len: usize) -> usize {
    HEADER_LEN + key_len + value_len
}

#[inline]
fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4-byte slice"))
}

#[inline]
fn write_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
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
        total_len(self.key.len(), self.value_len())
    }

    /// Writes the item at the start of `dst`, which must be `total_len()` bytes long.
    pub fn write(&self, dst: &mut [u8]) {
        debug_assert_eq!(dst.len(), self.total_len());
        dst[KEY_LEN] = u8::try_from(self.key.len()).expect("keys are at most 250 bytes");
        dst[BITS] = self.bits;
        write_u32(
            dst,
            VALUE_LEN,
            u32::try_from(self.value_len()).expect("values are below 4 GiB"),
        );
        write_u32(dst, FLAGS, self.flags);
        write_u32(dst, EXPTIME, self.exptime);
        write_u32(dst, ATIME, self.atime);
        dst[CAS..CAS + 8].copy_from_slice(&self.cas.to_le_bytes());
        let mut at = HEADER_LEN;
        dst[at..at + self.key.len()].copy_from_slice(self.key);
        at += self.key.len();
        for part in self.value {
            dst[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
    }
}

/// Read access to an item's bytes (`buf` starts at the item's header).
#[derive(Clone, Copy)]
pub struct ItemRef<'a> {
    buf: &'a [u8],
}

impl<'a> ItemRef<'a> {
    #[inline]
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    #[inline]
    pub fn key_len(&self) -> usize {
        usize::from(self.buf[KEY_LEN])
    }

    #[inline]
    pub fn value_len(&self) -> usize {
        read_u32(self.buf, VALUE_LEN) as usize
    }

    #[inline]
    pub fn total_len(&self) -> usize {
        total_len(self.key_len(), self.value_len())
    }

    #[inline]
    pub fn key(&self) -> &'a [u8] {
        &self.buf[HEADER_LEN..HEADER_LEN + self.key_len()]
    }

    #[inline]
    pub fn value(&self) -> &'a [u8] {
        let start = HEADER_LEN + self.key_len();
        &self.buf[start..start + self.value_len()]
    }

    #[inline]
    pub fn bits(&self) -> u8 {
        self.buf[BITS]
    }

    #[inline]
    pub fn flags(&self) -> u32 {
        read_u32(self.buf, FLAGS)
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
}

impl<'a> ItemMut<'a> {
    #[inline]
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self { buf }
    }

    #[inline]
    pub fn as_ref(&self) -> ItemRef<'_> {
        ItemRef::new(self.buf)
    }

    #[inline]
    pub fn set_bits(&mut self, bits: u8) {
        self.buf[BITS] = bits;
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

    /// The value bytes, for in-place rewrites of the same length (decr).
    #[inline]
    pub fn value_mut(&mut self) -> &mut [u8] {
        let key_len = usize::from(self.buf[KEY_LEN]);
        let value_len = read_u32(self.buf, VALUE_LEN) as usize;
        let start = HEADER_LEN + key_len;
        &mut self.buf[start..start + value_len]
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
        assert_eq!(r.value(), b"hello");
        assert_eq!(r.flags(), 0xdead_beef);
        assert_eq!((r.exptime(), r.atime(), r.cas()), (7, 3, u64::MAX - 1));
        assert_eq!(r.bits(), FETCHED | 2);
        assert_eq!(r.total_len(), HEADER_LEN + 8);
        let mut m = ItemMut::new(&mut buf);
        m.set_exptime(99);
        m.value_mut().copy_from_slice(b"world");
        assert_eq!(m.as_ref().exptime(), 99);
        assert_eq!(m.as_ref().value(), b"world");
    }
}
