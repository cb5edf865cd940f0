//! Real-client (client service) frames: framing, then request and reply payloads.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mooncake_store::client_service::wire::fuzz_decode(data)
});
