//! A file transfer's receiving state machine (issue 16): `transfer::recv::Receiver` driven by arbitrary
//! frames (the input parsed by `transfer::frame::Reader`), answering its actions as byte 0 says. No panic,
//! bounded unverified bytes and pending entries, sanitised paths, contiguous writes, nothing after the end.
//! The input format and the checks are in `multiproto_fuzz::transfer_checks::receiver`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    multiproto_fuzz::transfer_checks::receiver(data);
});
