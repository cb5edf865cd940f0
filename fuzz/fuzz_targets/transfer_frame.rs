//! Transfer-engine tcp request/response headers.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mooncake_transfer::transport::tcp::frame::fuzz_decode(data)
});
