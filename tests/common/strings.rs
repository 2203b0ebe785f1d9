//! Strategies for the strings and bytes a parser's property tests feed it, shared by `tests/parser_props.rs`
//! and `tests/transfer_props.rs` (each includes this file with `#[path]`, beside `fuzz/src/parser_checks.rs`,
//! whose independent `utf8_prefix` cuts the strings).

use proptest::prelude::*;

use crate::parser_checks::utf8_prefix;

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
