//! The warm-restart loader on arbitrary files: never a panic, never more items than the
//! file holds records, and the store stays usable. Half the inputs are taken as they are
//! (mostly stopped by the header or the first checksum); the other half get a valid
//! header and valid block checksums around the fuzzer's bytes, so that the record parsing
//! behind them is reached.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use memcrab::storage::snapshot::framed_for_fuzzing;
use memcrab::storage::{Mode, Store, StoreConfig, SystemClock};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let config = StoreConfig {
        limit_bytes: 8 << 20,
        threads: 2,
        item_size_max: 64 << 10,
        slab_chunk_max: 32 << 10,
        ..StoreConfig::default()
    };
    let store = Store::new(config, Arc::new(SystemClock));
    let file = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        framed_for_fuzzing(rest, 64 << 10)
    };
    let report = store.restore(&mut &file[..]);
    // A record takes at least 27 bytes of the file (its header and a 1-byte key).
    assert!(report.items <= file.len() as u64 / 27);
    assert!(store.len() as u64 <= report.items);
    // Still a working store.
    assert!(store.store(Mode::Set, b"after", b"restore", 0, 0).is_ok());
    assert!(store.get(b"after", None, |it| it.value.to_vec() == b"restore").unwrap_or(false));
});
