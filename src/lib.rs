//! multiproto: a LAN chat built from three protocols, each doing one job.
//!
//! - UDP multicast finds the daemon (`mpd`),
//! - SCTP (RFC 9260, carried in UDP per RFC 6951, implemented here in userspace) keeps each client's
//!   association with the daemon: liveness by heartbeats, roster updates as messages,
//! - TCP carries chat text peer to peer.
//!
//! The protocol cores ([`sctp`]) are sans-IO: bytes and a clock go in, datagrams, timers and events come out.
//! [`reactor`] is the only place that touches sockets, signals or the clock.

#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod cli;
pub mod client;
pub mod console;
pub mod daemon;
pub mod discovery;
pub mod heap;
pub mod logging;
pub mod outbox;
pub mod peer;
pub mod reactor;
pub mod registry;
pub mod sctp;
pub mod session;
pub mod sim;
pub mod time;
pub mod wheel;

/// The longest prefix of `s` that fits in `max` bytes without splitting a character. Encoders that cap a
/// string field use it: a cut inside a multi-byte character would send bytes the receiving parser rejects as
/// invalid UTF-8, turning an over-long field into an unreadable message. (`str::floor_char_boundary` does
/// this but needs Rust 1.91; the crate supports 1.88.)
pub(crate) fn utf8_prefix(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    // A char is at most 4 bytes, so this steps back at most 3 times.
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
