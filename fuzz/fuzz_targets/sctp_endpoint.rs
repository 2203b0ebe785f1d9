//! Packet sequences fed to a listening SCTP endpoint, optionally after a real handshake with a client
//! endpoint, with timers run as virtual time advances and the endpoint's invariants checked after every step.
//! The input format is described in `multiproto_fuzz::endpoint_harness`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    multiproto_fuzz::endpoint_harness::run(data);
});
