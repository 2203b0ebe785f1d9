//! A connection to the chat port (issue 16): chat frames and a file transfer's frames read by one reader
//! (`peer::wire`). The input as a frame body, then as a stream into the reader whole and split at the sizes
//! its first bytes give, compared with the independent model decoder; each frame meets its own kind's body
//! checks. The checks are in `multiproto_fuzz::transfer_checks`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    multiproto_fuzz::transfer_checks::chat_wire(data);
});
