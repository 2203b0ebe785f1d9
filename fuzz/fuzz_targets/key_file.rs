//! Key files (`daemon.key`, `identity.key`, read from disk): arbitrary bytes to
//! `identity::Identity::from_file`. The checks are in `multiproto_fuzz::parser_checks::key_file`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    multiproto_fuzz::parser_checks::key_file(data);
});
