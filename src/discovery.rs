//! Discovery over UDP multicast: clients send HELLO to the group until a daemon answers with a unicast WELCOME;
//! a daemon multicasts ANNOUNCE when it starts, so waiting clients find it at once.
//!
//! The codec is sans-IO and allocation-free ([`Datagram::parse`], [`Datagram::write`]); the sockets are
//! [`crate::io::discovery`]'s. Layouts are in `docs/PROTOCOL.md`.

#![forbid(unsafe_code)]

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::codec::{Malformed, Put, Reader, SliceWriter};
use crate::nick::Nick;

/// First bytes of every discovery datagram.
pub const MAGIC: [u8; 4] = *b"mpro";
/// The only protocol version so far.
pub const VERSION: u8 = 1;
/// The default group and port (DESIGN.md).
pub const DEFAULT_GROUP: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(239, 255, 77, 77)), 10001);
/// Largest discovery datagram we write (HELLO with a 32-byte nickname is 58 bytes).
pub const MAX_DATAGRAM: usize = 128;

const TYPE_HELLO: u8 = 1;
const TYPE_WELCOME: u8 = 2;
const TYPE_ANNOUNCE: u8 = 3;
const HEADER_LEN: usize = 16;

/// A client looking for a daemon.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Random per client start; WELCOME echoes it.
    pub instance: u64,
    /// Who the client is.
    pub nick: Nick,
    /// The client's chat TCP port (0 for a one-shot observer).
    pub chat_port: u16,
    /// The UDP port of the client's SCTP encapsulation socket.
    pub sctp_udp_port: u16,
}

/// Where the daemon's SCTP endpoint is. `addr` `None` means: the address the datagram came from.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DaemonInfo {
    /// The daemon's instance id, random per start: a change means the daemon restarted.
    pub instance: u64,
    /// The UDP port of the daemon's SCTP encapsulation socket.
    pub sctp_udp_port: u16,
    /// The daemon's SCTP port.
    pub sctp_port: u16,
    /// An explicit unicast address, or `None` for the datagram's source address.
    pub addr: Option<IpAddr>,
}

impl DaemonInfo {
    /// The daemon's SCTP-over-UDP address, given where the datagram came from.
    pub fn sctp_addr(&self, from: SocketAddr) -> SocketAddr {
        SocketAddr::new(self.addr.unwrap_or(from.ip()), self.sctp_udp_port)
    }
}

/// A discovery datagram.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Datagram {
    /// Client → group.
    Hello(Hello),
    /// Daemon → client (unicast), answering a HELLO with that client's instance id.
    Welcome {
        /// The HELLO's instance id.
        to: u64,
        /// The daemon.
        daemon: DaemonInfo,
    },
    /// Daemon → group, when it starts.
    Announce(DaemonInfo),
}

/// Why a datagram was dropped; counted by the daemon and the client.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum DiscoveryError {
    /// Not ours: wrong magic.
    Foreign,
    /// Ours, but a version we do not speak.
    Version(u8),
    /// Too short, bad lengths, bad nickname, unknown type or address family.
    Malformed,
}

impl fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiscoveryError::Foreign => f.write_str("foreign datagram"),
            DiscoveryError::Version(v) => write!(f, "unsupported version {v}"),
            DiscoveryError::Malformed => f.write_str("malformed datagram"),
        }
    }
}

impl Datagram {
    /// Parses a datagram; anything not exactly one of ours is an error (trailing bytes are allowed, for
    /// fields a later version may add).
    pub fn parse(b: &[u8]) -> Result<Datagram, DiscoveryError> {
        if b.len() < 4 || b[..4] != MAGIC {
            return Err(DiscoveryError::Foreign);
        }
        if b.len() < HEADER_LEN {
            return Err(DiscoveryError::Malformed);
        }
        if b[4] != VERSION {
            return Err(DiscoveryError::Version(b[4]));
        }
        Self::read(b[5], &mut Reader::at(b, 8)).map_err(|_| DiscoveryError::Malformed)
    }

    /// The fields after the header's magic, version, type (`kind`) and two reserved bytes.
    fn read(kind: u8, r: &mut Reader<'_>) -> Result<Datagram, Malformed> {
        let instance = r.u64()?;
        match kind {
            TYPE_HELLO => {
                let nick = r.nick()?;
                Ok(Datagram::Hello(Hello {
                    instance,
                    nick,
                    chat_port: r.u16()?,
                    sctp_udp_port: r.u16()?,
                }))
            }
            TYPE_WELCOME | TYPE_ANNOUNCE => {
                let sctp_udp_port = r.u16()?;
                let sctp_port = r.u16()?;
                let addr = r.ip()?;
                if sctp_udp_port == 0 || sctp_port == 0 {
                    return Err(Malformed("zero port"));
                }
                let daemon = DaemonInfo {
                    instance,
                    sctp_udp_port,
                    sctp_port,
                    addr,
                };
                if kind == TYPE_WELCOME {
                    Ok(Datagram::Welcome {
                        to: r.u64()?,
                        daemon,
                    })
                } else {
                    Ok(Datagram::Announce(daemon))
                }
            }
            _ => Err(Malformed("type")),
        }
    }

    /// Encodes the datagram (at most [`MAX_DATAGRAM`] bytes) into `out`, replacing its contents.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.clear();
        self.put(out);
    }

    /// Encodes the datagram at the start of `buf`; its length, or `None` if `buf` is too small (one of
    /// [`MAX_DATAGRAM`] bytes always holds it).
    pub fn write_into(&self, buf: &mut [u8]) -> Option<usize> {
        let mut w = SliceWriter::new(buf);
        self.put(&mut w);
        w.finish()
    }

    fn put(&self, out: &mut impl Put) {
        out.put_bytes(&MAGIC);
        out.put_u8(VERSION);
        let (kind, instance) = match self {
            Datagram::Hello(h) => (TYPE_HELLO, h.instance),
            Datagram::Welcome { daemon, .. } => (TYPE_WELCOME, daemon.instance),
            Datagram::Announce(d) => (TYPE_ANNOUNCE, d.instance),
        };
        out.put_u8(kind);
        out.put_u16(0);
        out.put_u64(instance);
        match self {
            Datagram::Hello(h) => {
                out.put_nick(&h.nick);
                out.put_u16(h.chat_port);
                out.put_u16(h.sctp_udp_port);
            }
            Datagram::Welcome { daemon, to } => {
                out.put_u16(daemon.sctp_udp_port);
                out.put_u16(daemon.sctp_port);
                out.put_ip(daemon.addr);
                out.put_u64(*to);
            }
            Datagram::Announce(d) => {
                out.put_u16(d.sctp_udp_port);
                out.put_u16(d.sctp_port);
                out.put_ip(d.addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(d: Datagram) {
        let mut b = Vec::new();
        d.write(&mut b);
        assert!(b.len() <= MAX_DATAGRAM);
        assert_eq!(Datagram::parse(&b), Ok(d));
        // Every truncation is an error, never a panic.
        for n in 0..b.len() {
            assert!(Datagram::parse(&b[..n]).is_err(), "{d:?} cut at {n}");
        }
    }

    #[test]
    fn datagrams_round_trip() {
        round_trip(Datagram::Hello(Hello {
            instance: 0x0102_0304_0506_0708,
            nick: Nick::new("alice.w-2_x").unwrap(),
            chat_port: 40000,
            sctp_udp_port: 40001,
        }));
        let d = DaemonInfo {
            instance: 7,
            sctp_udp_port: 9899,
            sctp_port: 9899,
            addr: None,
        };
        round_trip(Datagram::Announce(d));
        round_trip(Datagram::Welcome { to: 99, daemon: d });
        round_trip(Datagram::Welcome {
            to: 1,
            daemon: DaemonInfo {
                addr: Some("fe80::1".parse().unwrap()),
                ..d
            },
        });
        round_trip(Datagram::Announce(DaemonInfo {
            addr: Some("192.0.2.7".parse().unwrap()),
            ..d
        }));
    }

    #[test]
    fn foreign_versions_and_garbage() {
        assert_eq!(
            Datagram::parse(b"GET / HTTP/1.1"),
            Err(DiscoveryError::Foreign)
        );
        assert_eq!(Datagram::parse(b""), Err(DiscoveryError::Foreign));
        let mut b = Vec::new();
        Datagram::Announce(DaemonInfo {
            instance: 1,
            sctp_udp_port: 1,
            sctp_port: 1,
            addr: None,
        })
        .write(&mut b);
        let mut v2 = b.clone();
        v2[4] = 2;
        assert_eq!(Datagram::parse(&v2), Err(DiscoveryError::Version(2)));
        let mut bad_type = b.clone();
        bad_type[5] = 9;
        assert_eq!(Datagram::parse(&bad_type), Err(DiscoveryError::Malformed));
        let mut bad_family = b.clone();
        bad_family[20] = 5;
        assert_eq!(Datagram::parse(&bad_family), Err(DiscoveryError::Malformed));
        let mut zero_port = b;
        zero_port[16] = 0;
        zero_port[17] = 0;
        assert_eq!(Datagram::parse(&zero_port), Err(DiscoveryError::Malformed));
    }

    #[test]
    fn a_hello_with_a_bad_nickname_is_malformed() {
        let mut hello = Vec::new();
        Datagram::Hello(Hello {
            instance: 1,
            nick: Nick::new("ok").unwrap(),
            chat_port: 1,
            sctp_udp_port: 1,
        })
        .write(&mut hello);
        hello[17] = b' ';
        assert_eq!(Datagram::parse(&hello), Err(DiscoveryError::Malformed));
    }
}
