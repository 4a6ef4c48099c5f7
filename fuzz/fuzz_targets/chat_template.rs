//! libFuzzer entry for `aisle_fuzz::chat_template` (the body is shared with tests/fuzz_replay.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    aisle_fuzz::chat_template(data);
});
