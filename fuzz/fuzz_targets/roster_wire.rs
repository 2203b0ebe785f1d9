//! `ClientMsg::parse` and `ServerMsg::parse` (the roster messages between `mpd` and its clients) on arbitrary
//! bytes: no panic, and what parses re-encodes to exactly the input; then the encoders with the input as a
//! nickname / reason string, whose output must parse back (over-long strings cut at a char boundary). The
//! checks are in `multiproto_fuzz::parser_checks`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = multiproto_fuzz::parser_checks::roster(data);
});
