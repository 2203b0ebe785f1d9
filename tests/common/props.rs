//! What the parsers' property tests share: strategies for the strings and bytes they feed a parser, and the
//! fuzz seeds they check. Included with `#[path]` by `tests/parser_props.rs` and `tests/transfer_props.rs`,
//! beside `fuzz/src/parser_checks.rs`, whose independent `utf8_prefix` cuts the strings.

use proptest::prelude::*;
use proptest::test_runner::{RngAlgorithm, RngSeed};

use crate::parser_checks::utf8_prefix;

/// A test file's proptest settings: `cases` cases (`PROPTEST_CASES` raises them), a fixed RNG seeded with
/// `seed` so runs are deterministic, and no failure files.
pub fn config(cases: u32, seed: u64) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(seed),
        ..ProptestConfig::default()
    }
}

/// Arbitrary bytes, at most `max` of them.
pub fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=max)
}

/// Any UTF-8 string of at most `max_bytes` bytes (up to `max_chars` arbitrary chars, cut to fit).
pub fn utf8(max_bytes: usize, max_chars: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..=max_chars).prop_map(move |cs| {
        let s: String = cs.into_iter().collect();
        utf8_prefix(&s, max_bytes).to_owned()
    })
}

/// A string whose length lands around `limit` bytes: ASCII up to some length, then a few arbitrary chars, so
/// multi-byte chars often straddle the limit.
pub fn around(limit: usize) -> impl Strategy<Value = String> {
    (
        limit.saturating_sub(8)..=limit + 4,
        prop::collection::vec(any::<char>(), 1..4),
    )
        .prop_map(|(n, cs)| {
            let mut s = "a".repeat(n);
            s.extend(cs);
            s
        })
}

/// The seeds of a fuzz target (`fuzz/seeds/TARGET/`), as (file name, bytes) in name order; at least one.
pub fn fuzz_seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = format!("{}/fuzz/seeds/{target}", env!("CARGO_MANIFEST_DIR"));
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|f| {
            let f = f.unwrap();
            let name = f.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(f.path()).unwrap())
        })
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no seeds in {dir}");
    v
}
