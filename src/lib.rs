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

pub mod client;
pub mod console;
pub mod daemon;
pub mod discovery;
pub mod outbox;
pub mod peer;
pub mod reactor;
pub mod registry;
pub mod sctp;
pub mod session;
pub mod sim;
pub mod time;
pub mod wheel;
