//! What the engine's operations take and give: writes, reads, deletes and arithmetic with
//! every option memcached's commands have. The meta commands use the options; the classic
//! commands are the same operations with them off (see `Store::store`, `Store::get`, ...).
//! The operations themselves run on the shard (`shard/ops.rs`).

pub use super::item::Value;

/// A write with all its options. `Mode::Cas` is the classic command; meta sets give the
/// CAS to compare in `compare_cas` with any mode.
#[derive(Debug, Clone, Copy)]
pub struct Write<'a> {
    pub mode: Mode,
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub flags: u32,
    /// The client's exptime.
    pub exptime: i64,
    /// Store only if the item's CAS equals this (set/replace: missing is `NotFound`).
    pub compare_cas: Option<u64>,
    /// The CAS to give the new item instead of the next from the counter (meta `E`).
    pub new_cas: Option<u64>,
    /// With `compare_cas`: an older CAS still stores, marking the item stale (meta `I`).
    pub invalidate: bool,
    /// Append/prepend to a missing key creates it with this exptime (meta `N`).
    pub vivify: Option<i64>,
    /// The key was sent in base64 and is returned that way (meta `b`).
    pub key_binary: bool,
}

impl Default for Write<'_> {
    fn default() -> Self {
        Self {
            mode: Mode::Set,
            key: b"",
            value: b"",
            flags: 0,
            exptime: 0,
            compare_cas: None,
            new_cas: None,
            invalidate: false,
            vivify: None,
            key_binary: false,
        }
    }
}

/// How a write treats an existing item (memcached's storage commands).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    /// Store only if the item's CAS equals this.
    Cas(u64),
}

/// The outcome of a write, named after its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreResult {
    Stored,
    NotStored,
    Exists,
    NotFound,
}

/// The outcome of incr/decr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaResult {
    Value(u64),
    NonNumeric,
    NotFound,
    /// The CAS given to compare did not match (meta `C`).
    Exists,
}

/// Why a write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    TooLarge,
    NoMemory,
}

/// A stored item as a reader sees it, valid while the shard lock is held.
#[derive(Clone, Copy)]
pub struct ItemView<'a> {
    pub key: &'a [u8],
    pub value: Value<'a>,
    pub flags: u32,
    /// 0 when CAS is disabled.
    pub cas: u64,
}

/// Options of a read (`mg`; `get`, `gat` and `touch` use a subset).
#[derive(Debug, Clone, Copy, Default)]
pub struct Read {
    /// Count as a get (`get`, `mg`) rather than only a touch (`touch`).
    pub is_get: bool,
    /// New exptime for a hit (`gat`, `touch`, meta `T`).
    pub touch: Option<i64>,
    /// On a miss, create an empty item with this exptime and win it (meta `N`).
    pub vivify: Option<i64>,
    /// Win a recache token if the item expires within this many seconds (meta `R`).
    pub recache: Option<i64>,
    /// Leave the access time, hit bit and CLOCK frequency alone (meta `u`).
    pub no_bump: bool,
    /// CAS for an item this read creates (meta `E`).
    pub new_cas: Option<u64>,
    /// A meta read, which hands out win tokens (`W`) for stale items and recaches; the
    /// classic `get`/`gat`/`touch` leave them for the next meta read, as in memcached.
    pub tokens: bool,
    /// The meta flags `T`, `N`, `R` and `t` in request order (see `Steps`).
    pub steps: Steps,
}

/// The meta flags `T` (touch), `N` (vivify), `R` (recache) and `t` (show the TTL) in the
/// order a request gave them, zeros after. memcached applies them in that order: `N` sets
/// the TTL of an item this request created (which starts with none), `R` compares the TTL
/// as the flags before it left it, and `t` reports it. All zeros: `T`, `N`, `R`.
pub type Steps = [u8; 4];

/// An item as a meta read sees it, valid under the shard lock.
#[derive(Clone, Copy)]
pub struct ReadView<'a> {
    pub key: &'a [u8],
    pub value: Value<'a>,
    pub flags: u32,
    /// 0 when CAS is disabled.
    pub cas: u64,
    /// Seconds left when the flags before the `t` were applied, -1 for never.
    pub ttl: i64,
    /// Whether it had been read before this request.
    pub hit_before: bool,
    /// Seconds since the last access before this request.
    pub last_access: u32,
    pub stale: bool,
    /// This request won the right to recache.
    pub won: bool,
    /// Another request already won it.
    pub token_sent: bool,
    pub key_binary: bool,
}

/// Options of a delete (`md`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Delete {
    pub compare_cas: Option<u64>,
    /// Keep the item, mark it stale and give it a new CAS (meta `I`).
    pub invalidate: bool,
    /// With `invalidate`: the stale item's new exptime; with `drop_value`, the emptied
    /// item's (none if absent).
    pub touch: Option<i64>,
    /// Replace the item with an empty one (meta `x`), with these client flags.
    pub drop_value: bool,
    pub client_flags: u32,
    pub new_cas: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteResult {
    Deleted,
    NotFound,
    Exists,
}

/// Options of incr/decr (`ma`; `incr`/`decr` use a subset).
#[derive(Debug, Clone, Copy)]
pub struct Delta {
    pub incr: bool,
    pub delta: u64,
    pub compare_cas: Option<u64>,
    /// On a miss, create the item holding `initial` with this exptime (meta `N`, `J`).
    pub vivify: Option<(i64, u64)>,
    /// New exptime on success (meta `T`).
    pub touch: Option<i64>,
    pub new_cas: Option<u64>,
    /// The meta flags `T`, `N` and `t` in request order.
    pub steps: Steps,
}

impl Default for Delta {
    fn default() -> Self {
        Self {
            incr: true,
            delta: 1,
            compare_cas: None,
            vivify: None,
            touch: None,
            new_cas: None,
            steps: [0; 4],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeltaOutcome {
    pub result: DeltaResult,
    pub cas: u64,
    /// Seconds left at the `t` (for `ma t`), -1 for never.
    pub ttl: i64,
    /// The item was created by this request (meta `N`).
    pub created: bool,
}

/// What `me` shows of an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugInfo {
    pub key: Vec<u8>,
    pub key_binary: bool,
    /// Seconds left, -1 for never.
    pub ttl: i64,
    pub last_access: u32,
    pub cas: u64,
    pub fetched: bool,
    pub class: usize,
    pub size: usize,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::storage::{ManualClock, Mode, Store, StoreConfig};

    fn store() -> (Arc<ManualClock>, Store) {
        let clock = ManualClock::new(1_700_000_000);
        (clock.clone(), Store::new(StoreConfig::default(), clock))
    }

    fn read(s: &Store, key: &[u8], opts: Read) -> Option<(bool, bool, bool, i64, Vec<u8>)> {
        s.read(key, &opts, |v| {
            (v.won, v.token_sent, v.stale, v.ttl, v.value.to_vec())
        })
    }

    #[test]
    fn vivify_hands_one_win_then_z() {
        let (_, s) = store();
        let opts = Read {
            is_get: true,
            vivify: Some(30),
            ..Read::default()
        };
        assert_eq!(read(&s, b"k", opts), Some((true, false, false, 30, vec![])));
        assert_eq!(read(&s, b"k", opts), Some((false, true, false, 30, vec![])));
    }

    #[test]
    fn recache_wins_once_when_the_ttl_runs_low() {
        let (clock, s) = store();
        s.store(Mode::Set, b"k", b"v", 0, 10).unwrap();
        let opts = Read {
            is_get: true,
            recache: Some(30),
            tokens: true,
            ..Read::default()
        };
        assert!(read(&s, b"k", opts).unwrap().0);
        assert!(!read(&s, b"k", opts).unwrap().0);
        let far = Read {
            recache: Some(5),
            ..opts
        };
        s.store(Mode::Set, b"j", b"v", 0, 100).unwrap();
        assert!(!read(&s, b"j", far).unwrap().0);
        clock.advance(96);
        assert!(read(&s, b"j", far).unwrap().0);
    }

    #[test]
    fn invalidation_marks_stale_and_hands_a_new_token() {
        let (_, s) = store();
        let (_, cas) = s.store(Mode::Set, b"k", b"v", 0, 0).unwrap();
        let opts = Delete {
            invalidate: true,
            touch: Some(30),
            ..Delete::default()
        };
        assert_eq!(s.delete_with(b"k", &opts), DeleteResult::Deleted);
        let read_opts = Read {
            tokens: true,
            ..Read::default()
        };
        let first = read(&s, b"k", read_opts).unwrap();
        assert_eq!(
            (first.0, first.1, first.2, first.3),
            (true, false, true, 30)
        );
        let second = read(&s, b"k", read_opts).unwrap();
        assert_eq!((second.0, second.1, second.2), (false, true, true));
        let new_cas = s.get(b"k", None, |it| it.cas).unwrap();
        assert!(new_cas > cas);
        assert_eq!(
            s.delete_with(
                b"k",
                &Delete {
                    compare_cas: Some(cas),
                    ..Delete::default()
                }
            ),
            DeleteResult::Exists
        );
        assert_eq!(
            s.delete_with(
                b"k",
                &Delete {
                    compare_cas: Some(new_cas),
                    ..Delete::default()
                }
            ),
            DeleteResult::Deleted
        );
        assert_eq!(
            s.delete_with(b"k", &Delete::default()),
            DeleteResult::NotFound
        );
    }

    #[test]
    fn drop_value_keeps_an_empty_item() {
        let (_, s) = store();
        let (_, cas) = s.store(Mode::Set, b"k", b"value", 9, 100).unwrap();
        let opts = Delete {
            drop_value: true,
            client_flags: 7,
            ..Delete::default()
        };
        assert_eq!(s.delete_with(b"k", &opts), DeleteResult::Deleted);
        // memcached's tombstone: the request's client flags, no TTL, the old CAS.
        assert_eq!(
            s.get(b"k", None, |it| (it.value.len(), it.flags, it.cas)),
            Some((0, 7, cas))
        );
        assert_eq!(s.debug(b"k").unwrap().ttl, -1);
    }

    #[test]
    fn arithmetic_can_create_compare_and_touch() {
        let (_, s) = store();
        let create = Delta {
            vivify: Some((0, 10)),
            ..Delta::default()
        };
        let out = s.delta_with(b"c", &create).unwrap();
        assert_eq!((out.result, out.ttl), (DeltaResult::Value(10), -1));
        let out = s
            .delta_with(
                b"c",
                &Delta {
                    delta: 5,
                    touch: Some(100),
                    ..Delta::default()
                },
            )
            .unwrap();
        assert_eq!((out.result, out.ttl), (DeltaResult::Value(15), 100));
        let stale = Delta {
            compare_cas: Some(out.cas + 1),
            ..Delta::default()
        };
        assert_eq!(
            s.delta_with(b"c", &stale).unwrap().result,
            DeltaResult::Exists
        );
        let ok = Delta {
            compare_cas: Some(out.cas),
            incr: false,
            delta: 100,
            ..Delta::default()
        };
        assert_eq!(
            s.delta_with(b"c", &ok).unwrap().result,
            DeltaResult::Value(0)
        );
    }

    #[test]
    fn meta_writes_compare_invalidate_and_vivify() {
        use crate::storage::{StoreResult, Write};
        let (_, s) = store();
        let w = |mode, value, cas: Option<u64>| Write {
            mode,
            key: b"k",
            value,
            compare_cas: cas,
            ..Write::default()
        };
        assert_eq!(
            s.write(&w(Mode::Set, b"a", Some(1))).unwrap().0,
            StoreResult::NotFound
        );
        let (_, cas) = s.write(&w(Mode::Set, b"a", None)).unwrap();
        assert_eq!(
            s.write(&w(Mode::Append, b"b", Some(cas + 1))).unwrap().0,
            StoreResult::Exists
        );
        assert_eq!(
            s.write(&w(Mode::Append, b"b", Some(cas))).unwrap().0,
            StoreResult::Stored
        );
        let older = Write {
            invalidate: true,
            ..w(Mode::Set, b"old", Some(1))
        };
        assert_eq!(s.write(&older).unwrap().0, StoreResult::Stored);
        assert!(read(&s, b"k", Read::default()).unwrap().2, "stored stale");
        let viv = Write {
            key: b"n",
            vivify: Some(30),
            ..w(Mode::Append, b"seed", None)
        };
        assert_eq!(s.write(&viv).unwrap().0, StoreResult::Stored);
        assert_eq!(s.get(b"n", None, |it| it.value.to_vec()).unwrap(), b"seed");
        let with_cas = Write {
            key: b"e",
            new_cas: Some(5000),
            ..w(Mode::Set, b"x", None)
        };
        assert_eq!(s.write(&with_cas).unwrap().1, 5000);
    }

    #[test]
    fn debug_reports_without_touching() {
        let (clock, s) = store();
        s.store(Mode::Set, b"k", b"v", 0, 100).unwrap();
        clock.advance(5);
        let d = s.debug(b"k").unwrap();
        assert_eq!((d.ttl, d.last_access, d.fetched), (95, 5, false));
        assert_eq!(s.debug(b"k").unwrap().last_access, 5);
        assert!(s.debug(b"nope").is_none());
    }
}
