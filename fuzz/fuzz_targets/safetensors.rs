//! libFuzzer entry for `aisle_fuzz::safetensors` (the body is shared with tests/fuzz_replay.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    aisle_fuzz::safetensors(data);
});
