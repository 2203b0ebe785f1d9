//! History search words (typed by the user): arbitrary bytes to `io::history::fts_query`, run against FTS5.
//! The checks are in `multiproto_fuzz::parser_checks::history_search`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    multiproto_fuzz::parser_checks::history_search(data);
});
