//! The whole request pipeline (parse, execute, reply) on arbitrary input cut into chunks as
//! a socket might deliver them: never a panic or a stuck request, and no reply ever buffers
//! more than the stream cap plus one value (the reply memory bound).
#![no_main]

use libfuzzer_sys::fuzz_target;
use memcrab_fuzz::Driver;

fuzz_target!(|data: &[u8]| {
    let mut driver = Driver::new(&["-m", "64", "-I", "64k", "-o", "slab_chunk_max=16"]);
    // Each chunk: one length byte, then that many bytes of input.
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        driver.feed(&tail[..n]);
        rest = &tail[n..];
        if driver.is_closed() {
            break;
        }
    }
});
