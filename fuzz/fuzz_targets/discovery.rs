//! `Datagram::parse` (the UDP multicast HELLO / WELCOME / ANNOUNCE datagrams) on arbitrary bytes: no panic, the
//! error the header calls for, and a parsed datagram re-encodes with `Datagram::write` to the same fields and
//! parses back equal. The checks are in `multiproto_fuzz::parser_checks`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = multiproto_fuzz::parser_checks::discovery(data);
});
