//! Secured carrier messages (Noise handshake and sealed frames, from the network): arbitrary bytes to
//! `secure::Frame::parse`, a responder and an initiator. The checks are in `multiproto_fuzz::parser_checks::secured`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    multiproto_fuzz::parser_checks::secured(data);
});
