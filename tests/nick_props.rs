//! Property tests for nicknames (issue 15, item 4), on stable and in plain `cargo test`: `Nick::new` and
//! `Nick::from_bytes` never panic on arbitrary text and bytes, and whatever they accept is NFC, within the
//! bounds, and round-trips through every wire encoding of a nickname; case folding and look-alike keys never
//! panic and agree with each other. The checks are shared with the `nick` fuzz target
//! (`fuzz/src/nick_checks.rs`).
//!
//! Case counts are modest so that the file runs in seconds in a debug build; `PROPTEST_CASES` raises them.
//! Runs are deterministic (fixed RNG), and failures are not persisted to files.

use multiproto::nick::{Nick, NickError};
use proptest::prelude::*;
use proptest::test_runner::RngAlgorithm;

#[path = "../fuzz/src/nick_checks.rs"]
mod nick_checks;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x6e69_636b),
        ..ProptestConfig::default()
    }
}

/// Characters that exercise every rule: ASCII allowed and not, letters of several scripts (some composed,
/// some look-alikes of Latin ones), combining marks, controls, invisible formatting characters, symbols,
/// emoji, compatibility forms, and characters whose case folding changes their length.
const PALETTE: &[char] = &[
    'a', 'b', 'l', 'o', 'I', 'O', '0', '1', 'r', 'n', 'm', '-', '_', '.', ' ', '/', '\'', '\u{0}',
    '\u{7}', '\u{7f}', 'é', 'É', 'ß', 'ẞ', 'ı', 'İ', 'ſ', 'ς', 'Σ', 'σ', 'ﬁ', '²', 'ｆ', 'а', 'А',
    'о', 'е', 'Д', 'α', 'Ω', 'Ω', '李', '小', 'た', 'ガ', '김', 'न', 'म', 'स', '्', 'ि', 'ق', '٣',
    '\u{301}', '\u{308}', '\u{323}', '\u{345}', '\u{200b}', '\u{200c}', '\u{200d}', '\u{202e}',
    '\u{2066}', '\u{feff}', '\u{ad}', '\u{a0}', '☃', '😀', '𝐚', '𠀀', 'Å', 'Å', '\u{fffd}',
];

fn palette_text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PALETTE), 0..max)
        .prop_map(|v| v.into_iter().collect())
}

/// Nicknames that are valid, of several scripts, within the byte bound (at most 21 characters of up to
/// 3 bytes).
fn unicode_nick() -> impl Strategy<Value = Nick> {
    "[A-Za-z0-9._\\-éÉßñДжαλΩ李小たな김]{1,21}"
        .prop_map(|s| Nick::new(&s).expect("valid by construction"))
}

proptest! {
    #![proptest_config(config(512))]

    /// `Nick::new` never panics on arbitrary text, and what it accepts round-trips (see `nick_checks`).
    #[test]
    fn any_text_is_checked_without_panicking(s in any::<String>()) {
        nick_checks::typed_text(&s);
    }

    /// The same on text made of the characters the rules are about, where acceptance is common.
    #[test]
    fn palette_text_is_checked_without_panicking(s in palette_text(40)) {
        nick_checks::typed_text(&s);
        nick_checks::nick(s.as_bytes());
    }

    /// `Nick::from_bytes` never panics on arbitrary bytes, agrees with `Nick::check`, and keeps what it
    /// accepts byte for byte.
    #[test]
    fn any_bytes_are_checked_without_panicking(b in prop::collection::vec(any::<u8>(), 0..80)) {
        nick_checks::nick(&b);
    }

    /// Valid nicknames of several scripts are accepted as typed (already NFC) and round-trip every encoding.
    #[test]
    fn valid_unicode_nicknames_round_trip(n in unicode_nick()) {
        prop_assert_eq!(Nick::new(n.as_str()), Ok(n));
        nick_checks::accepted(n);
    }

    /// A decomposed spelling is the same nickname as the composed one, and the wire refuses it.
    #[test]
    fn decomposed_spellings_fold_to_the_composed_one(n in unicode_nick()) {
        use unicode_normalization::UnicodeNormalization;
        let nfd: String = n.as_str().nfd().collect();
        prop_assert_eq!(Nick::new(&nfd), Ok(n));
        if nfd != n.as_str() {
            // Not NFC (or, for Hangul, made of conjoining jamo that are not letters on their own).
            let e = Nick::from_bytes(nfd.as_bytes());
            prop_assert!(matches!(e, Err(NickError::NotNfc | NickError::BadChar(_))), "{:?}", e);
        }
    }

    /// Nicknames equal but for case share a look-alike key.
    #[test]
    fn case_variants_look_alike(n in unicode_nick()) {
        if let Ok(up) = Nick::new(&n.as_str().to_uppercase()) {
            prop_assert!(up.same_folded(&n), "{up:?} / {n:?}");
            prop_assert_eq!(up.look_alike_hash(), n.look_alike_hash());
        }
    }
}
