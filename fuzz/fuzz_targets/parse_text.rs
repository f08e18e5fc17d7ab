//! The text and meta parser on arbitrary input: never a panic, every result consumes
//! between one byte and what is buffered, every parsed key and value within memcached's
//! limits (checked by the driver on each request). Input is fed in two parts split at
//! the first byte's position, so that partial requests are parsed too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memcrab_fuzz::Driver;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let split = usize::from(split).min(rest.len());
    let mut driver = Driver::new(&["-m", "64", "-I", "2k", "-o", "slab_chunk_max=1"]);
    driver.feed(&rest[..split]);
    driver.feed(&rest[split..]);
});
