//! Segment descriptors as published in metadata (and served by P2P peers).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mooncake_transfer::descriptor::fuzz_parse(data)
});
