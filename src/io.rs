//! The I/O adapters: the sockets, files and threads around the sans-IO protocol cores ([`crate::sctp`],
//! [`crate::registry`], [`crate::server`], [`crate::client`], [`crate::peer`], [`crate::discovery`]), which touch
//! none of them. Each adapter moves bytes between real sockets (or a file) and one core's `handle_*` /
//! `poll_*` calls; the loops that drive them are [`crate::reactor`], [`crate::daemon`] and
//! [`crate::session`]. Keeping them here, out of the protocol folders, is what lets the cores build without
//! mio, socket2, nix or libc and run unchanged in the simulation.

pub mod chat;
pub mod client;
pub mod discovery;
pub mod file_hash;
pub mod files;
pub mod history;
pub mod incoming;
pub mod keyfile;
pub mod known_keys;
pub mod outgoing;
pub mod roster_file;
pub mod sctp_udp;
pub mod transfer;
