//! Remembered keys (`known_daemons`, read from disk): arbitrary bytes to `known_keys::KnownKeys::parse`.
//! The checks are in `multiproto_fuzz::parser_checks::known_keys`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    multiproto_fuzz::parser_checks::known_keys(data);
});
