//! multiproto: a LAN chat built from three protocols, each doing one job.
//!
//! - UDP multicast finds the daemon (`mpd`),
//! - SCTP (RFC 9260, carried in UDP per RFC 6951, implemented here in userspace) keeps each client's
//!   association with the daemon: liveness by heartbeats, roster updates as messages,
//! - TCP carries chat text peer to peer.
//!
//! The protocol cores ([`sctp`], [`registry`], [`server`], [`client`], [`peer`], [`discovery`]) are sans-IO:
//! bytes and a clock go in, datagrams, timers and events come out; none of them touches a socket, a file, a
//! thread or the clock, and none holds `unsafe` code. [`io`] holds the adapters between them and real
//! sockets and files; [`reactor`] is the mio loop, whose clock is the cores' only time; [`daemon`] and
//! [`session`] drive the server and the client on it. `sim` (tests and the `sim` feature) runs the cores
//! together in virtual time. [`transfer`] holds the pure parts of sending files and folders peer to peer:
//! their frames and the receiver's sanitising of offered names.

#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod cli;
pub mod client;
pub mod codec;
pub mod console;
pub mod daemon;
pub mod discovery;
pub mod group;
pub mod heap;
pub mod identity;
pub mod io;
pub mod known_keys;
pub mod logging;
pub mod nick;
pub mod outbox;
pub mod peer;
pub mod reactor;
pub mod registry;
pub mod sctp;
pub mod secure;
pub mod server;
pub mod session;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod time;
pub mod transfer;
pub mod wheel;

/// What a unit test needs beyond a bare toolchain (IPv6 on loopback, UDP GRO): skipped with the reason on
/// stderr, or failed when `CI` is set. The integration tests' own helper, included so there is one copy.
#[cfg(test)]
mod test_dir;
#[cfg(test)]
#[path = "../tests/common/require.rs"]
#[allow(dead_code)]
mod test_require;

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
