//! libFuzzer driver of `coffer_fuzz::requests` (the model and its properties live there).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Accepted or refused are both fine; a broken property panics inside.
    let _accepted = coffer_fuzz::requests::run(data);
});
