//! The daemon's saved roster (`roster.json`, read from disk when it starts): arbitrary bytes to
//! `registry::saved::decode`. The checks are in `multiproto_fuzz::parser_checks::saved_roster`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    multiproto_fuzz::parser_checks::saved_roster(data);
});
