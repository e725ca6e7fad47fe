//! Hostile-input models for Coffer's three parsers of untrusted text: catalog TOML
//! ([`catalog`]), `coffer.v1` requests ([`requests`]) and store receipts ([`receipts`]).
//!
//! Each module has a `run(&[u8])` that turns arbitrary bytes into an input (raw, or a
//! structure-aware mutation of a valid input, so the fuzzer gets past the parsers into the
//! rules), feeds it to the real code and asserts the properties that must hold for every
//! input. It panics only when a property is broken. Two drivers call them: proptest in this
//! crate's tests (bounded, part of `cargo test`) and libFuzzer in `fuzz/` (`.ci/fuzz`).

#![forbid(unsafe_code)]

pub mod catalog;
pub mod receipts;
pub mod requests;

use std::path::PathBuf;

/// Cases each proptest driver runs: `COFFER_FUZZ_CASES`, or 256.
pub fn proptest_cases() -> u32 {
    std::env::var("COFFER_FUZZ_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(256)
}

/// The checked-in seed corpus of one target: `fuzz/corpus/<target>/` at the repository root.
pub fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

/// Runs `count` inputs of `len` bytes made by a fixed pseudo-random generator (the first byte
/// forced to `mode`) and returns how many `run` accepted: a check that a model's structured
/// mode reaches past the parsers, independent of proptest's own random choices.
pub fn accepted_count(mode: u8, count: usize, len: usize, run: fn(&[u8]) -> bool) -> usize {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next_byte = move || {
        // xorshift64*: deterministic, so the count is the same on every machine.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
    };
    (0..count)
        .filter(|_| {
            let mut input: Vec<u8> = (0..len).map(|_| next_byte()).collect();
            input[0] = mode;
            run(&input)
        })
        .count()
}

/// Byte patterns that steer the structured modes down different early branches.
pub(crate) fn steering_patterns() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("zeros", vec![0; 64]),
        ("ones", vec![0xff; 64]),
        ("alternating", [0x55, 0xaa].repeat(32)),
        ("counting", (0..=255).collect()),
        (
            "primes",
            (0..128u32).map(|i| (i * 7919 % 251) as u8).collect(),
        ),
    ]
}

/// Checks that every seed of a target is checked in under [`corpus_dir`] (or writes them when
/// `COFFER_FUZZ_WRITE_SEEDS` is set), then runs every file there, seeds and regressions alike,
/// through `run`. Returns how many files ran.
pub fn replay_corpus(target: &str, seeds: Vec<(String, Vec<u8>)>, run: fn(&[u8]) -> bool) -> usize {
    let dir = corpus_dir(target);
    let write = std::env::var_os("COFFER_FUZZ_WRITE_SEEDS").is_some();
    if write {
        std::fs::create_dir_all(&dir).expect("create the corpus directory");
    }
    for (name, bytes) in seeds {
        let path = dir.join(&name);
        if write {
            std::fs::write(&path, &bytes).expect("write a seed");
        }
        let checked_in = std::fs::read(&path).unwrap_or_default();
        assert!(
            checked_in == bytes,
            "seed {} is missing or stale; rerun with COFFER_FUZZ_WRITE_SEEDS=1",
            path.display()
        );
    }
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).expect("read the corpus directory") {
        let path = entry.expect("a corpus entry").path();
        run(&std::fs::read(&path).expect("read a corpus file"));
        files += 1;
    }
    files
}
