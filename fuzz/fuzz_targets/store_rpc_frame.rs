//! Master RPC frames: framing, then request and response payloads.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mooncake_store::protocol::frame::fuzz_decode(data)
});
