//! Nickname validation on arbitrary bytes and text (`Nick::from_bytes`, `Nick::new`), then NFC, the wire
//! encodings, case folding and the UTS #39 look-alike key of whatever is accepted: no panic, and the
//! invariants of `multiproto_fuzz::nick_checks`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    multiproto_fuzz::nick_checks::nick(data);
});
