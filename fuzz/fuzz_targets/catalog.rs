//! libFuzzer driver of `coffer_fuzz::catalog` (the model and its properties live there).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Accepted or refused are both fine; a broken property panics inside.
    let _accepted = coffer_fuzz::catalog::run(data);
});
