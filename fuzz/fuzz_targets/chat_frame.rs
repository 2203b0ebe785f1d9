//! Chat frames: `Frame::parse` on the input as a frame body (a parsed frame re-encodes to exactly it), then
//! the input as a TCP stream into `Reader`, whole and split at the sizes its first bytes give, compared with an
//! independent model decoder (same frames, same error, same bytes held) with the buffer bounded by one
//! maximal frame after every push, and `Frame::encode` of a MSG with the input as text. The input format and
//! the checks are in `multiproto_fuzz::parser_checks`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    multiproto_fuzz::parser_checks::chat(data);
});
