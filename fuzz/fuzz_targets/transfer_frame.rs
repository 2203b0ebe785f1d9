//! A file transfer's frames (issue 16): `transfer::frame::Frame::parse` on the input as a frame body (a parsed
//! frame is within every bound and re-encodes to exactly it), then the input as a connection's stream into
//! `transfer::frame::Reader`, whole and split at the sizes its first bytes give, compared with the chat
//! frames' independent model decoder, and frames built from the input's text and bytes, which always encode
//! to frames that parse. The input format and the checks are in `multiproto_fuzz::transfer_checks`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    multiproto_fuzz::transfer_checks::transfer_frame(data);
});
