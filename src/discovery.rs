//! Discovery over UDP multicast: clients send HELLO to the group until a daemon answers with a unicast WELCOME;
//! a daemon multicasts ANNOUNCE when it starts, so waiting clients find it at once.
//!
//! WELCOME and ANNOUNCE carry the daemon's public key, so a client can tell its pinned daemon from any other
//! before it connects; they prove nothing by themselves (anyone can copy a public key), so a client acts on
//! them only by opening a handshake that the key's holder alone can complete. HELLO carries no nickname:
//! names travel only inside the encrypted session. With a network secret every datagram ends in a MAC under
//! a key derived from the secret ([`crate::secure::Psk::discovery_key`]), and datagrams without a valid one
//! are not answered or followed.
//!
//! The codec is sans-IO and allocation-free ([`Datagram::parse`], [`Datagram::write_into`]); the sockets are
//! [`crate::io::discovery`]'s. Layouts are in `docs/PROTOCOL.md`.

#![forbid(unsafe_code)]

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use blake2::Blake2sMac;
use blake2::digest::consts::U16;
use blake2::digest::{KeyInit, Mac as _};

use crate::codec::{Malformed, Put, Reader, SliceWriter};
use crate::identity::PublicKey;

/// First bytes of every discovery datagram.
pub const MAGIC: [u8; 4] = *b"mpro";
/// The protocol version: 2 since daemons have keys (1 had no keys and a nickname in HELLO).
pub const VERSION: u8 = 2;
/// The version before; still recognised, to tell its clients and daemons to upgrade.
pub const VERSION_1: u8 = 1;
/// The default group and port (DESIGN.md).
pub const DEFAULT_GROUP: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(239, 255, 77, 77)), 10001);
/// Largest discovery datagram we write (a WELCOME with an IPv6 address and a MAC is 109 bytes).
pub const MAX_DATAGRAM: usize = 128;
/// Bytes of the MAC a datagram ends in under a network secret.
pub const MAC_LEN: usize = 16;

const TYPE_HELLO: u8 = 1;
const TYPE_WELCOME: u8 = 2;
const TYPE_ANNOUNCE: u8 = 3;
const HEADER_LEN: usize = 16;
/// Header flag: the datagram ends in a MAC.
const FLAG_MAC: u8 = 1;
/// Header flag (WELCOME, ANNOUNCE): this daemon requires the network secret.
const FLAG_NEEDS_SECRET: u8 = 2;

/// A client looking for a daemon.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Random per client start; WELCOME echoes it.
    pub instance: u64,
    /// The UDP port of the client's SCTP encapsulation socket.
    pub sctp_udp_port: u16,
}

/// Where the daemon's SCTP endpoint is, and whose key it claims to hold. `addr` `None` means: the address
/// the datagram came from.
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
    /// The daemon's public key (a claim until a handshake proves it).
    pub key: PublicKey,
    /// The daemon accepts only clients holding the network secret.
    pub needs_secret: bool,
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

/// Whether a parsed datagram was authenticated by the network secret.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// It carries no MAC.
    Open,
    /// It carries a MAC that our secret's key verifies.
    Valid,
    /// It carries a MAC that we cannot verify (another secret, or we have none).
    Invalid,
}

/// Why a datagram was dropped; counted by the daemon and the client.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum DiscoveryError {
    /// Not ours: wrong magic.
    Foreign,
    /// Ours, but a version we do not speak.
    Version(u8),
    /// Too short, bad lengths, unknown type, flag or address family.
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

fn mac(key: &[u8; 32], body: &[u8]) -> [u8; MAC_LEN] {
    // A 32-byte key is always accepted by BLAKE2s (keys up to 32 bytes).
    let mut m =
        <Blake2sMac<U16> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    m.update(body);
    m.finalize().into_bytes().into()
}

impl Datagram {
    /// Parses a datagram, checking its MAC with `mac_key` if it has one; anything not exactly one of ours is
    /// an error (trailing bytes before the MAC are allowed, for fields a later version may add).
    pub fn parse(b: &[u8], mac_key: Option<&[u8; 32]>) -> Result<(Datagram, Auth), DiscoveryError> {
        if b.len() < 4 || b[..4] != MAGIC {
            return Err(DiscoveryError::Foreign);
        }
        if b.len() < HEADER_LEN {
            return Err(DiscoveryError::Malformed);
        }
        if b[4] != VERSION {
            return Err(DiscoveryError::Version(b[4]));
        }
        let (kind, flags) = (b[5], b[6]);
        if flags & !(FLAG_MAC | FLAG_NEEDS_SECRET) != 0 {
            return Err(DiscoveryError::Malformed);
        }
        let (body, auth) = if flags & FLAG_MAC != 0 {
            let Some(split) = b.len().checked_sub(MAC_LEN).filter(|&n| n >= HEADER_LEN) else {
                return Err(DiscoveryError::Malformed);
            };
            let (body, tag) = b.split_at(split);
            let ok = mac_key.is_some_and(|k| {
                // Constant-time comparison: the MAC crate's own verification.
                let mut m = <Blake2sMac<U16> as KeyInit>::new_from_slice(k)
                    .unwrap_or_else(|_| unreachable!());
                m.update(body);
                m.verify_slice(tag).is_ok()
            });
            (body, if ok { Auth::Valid } else { Auth::Invalid })
        } else {
            (b, Auth::Open)
        };
        let d = Self::read(
            kind,
            flags & FLAG_NEEDS_SECRET != 0,
            &mut Reader::at(body, 8),
        )
        .map_err(|_| DiscoveryError::Malformed)?;
        Ok((d, auth))
    }

    /// The fields after the header's magic, version, type (`kind`), flags and reserved byte.
    fn read(kind: u8, needs_secret: bool, r: &mut Reader<'_>) -> Result<Datagram, Malformed> {
        let instance = r.u64()?;
        match kind {
            TYPE_HELLO if needs_secret => Err(Malformed("a daemon's flag on a HELLO")),
            TYPE_HELLO => Ok(Datagram::Hello(Hello {
                instance,
                sctp_udp_port: r.u16()?,
            })),
            TYPE_WELCOME | TYPE_ANNOUNCE => {
                let sctp_udp_port = r.u16()?;
                let sctp_port = r.u16()?;
                let addr = r.ip()?;
                if sctp_udp_port == 0 || sctp_port == 0 {
                    return Err(Malformed("zero port"));
                }
                let key = PublicKey(r.array()?);
                let daemon = DaemonInfo {
                    instance,
                    sctp_udp_port,
                    sctp_port,
                    addr,
                    key,
                    needs_secret,
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

    /// Encodes the datagram (at most [`MAX_DATAGRAM`] bytes) into `out`, replacing its contents; with
    /// `mac_key`, it ends in a MAC.
    pub fn write(&self, out: &mut Vec<u8>, mac_key: Option<&[u8; 32]>) {
        out.clear();
        out.resize(MAX_DATAGRAM, 0);
        let n = self.write_into(out, mac_key).unwrap_or(0);
        out.truncate(n);
    }

    /// Encodes the datagram at the start of `buf` (ending in a MAC with `mac_key`); its length, or `None`
    /// if `buf` is too small (one of [`MAX_DATAGRAM`] bytes always holds it).
    pub fn write_into(&self, buf: &mut [u8], mac_key: Option<&[u8; 32]>) -> Option<usize> {
        let mut w = SliceWriter::new(buf);
        self.put(&mut w, mac_key.is_some());
        let n = w.finish()?;
        let Some(k) = mac_key else {
            return Some(n);
        };
        let tag = mac(k, &buf[..n]);
        buf.get_mut(n..n + MAC_LEN)?.copy_from_slice(&tag);
        Some(n + MAC_LEN)
    }

    fn put(&self, out: &mut impl Put, mac: bool) {
        out.put_bytes(&MAGIC);
        out.put_u8(VERSION);
        let (kind, instance, needs_secret) = match self {
            Datagram::Hello(h) => (TYPE_HELLO, h.instance, false),
            Datagram::Welcome { daemon, .. } => {
                (TYPE_WELCOME, daemon.instance, daemon.needs_secret)
            }
            Datagram::Announce(d) => (TYPE_ANNOUNCE, d.instance, d.needs_secret),
        };
        out.put_u8(kind);
        out.put_u8(
            if mac { FLAG_MAC } else { 0 } | if needs_secret { FLAG_NEEDS_SECRET } else { 0 },
        );
        out.put_u8(0);
        out.put_u64(instance);
        match self {
            Datagram::Hello(h) => out.put_u16(h.sctp_udp_port),
            Datagram::Welcome { daemon, to } => {
                put_daemon(out, daemon);
                out.put_u64(*to);
            }
            Datagram::Announce(d) => put_daemon(out, d),
        }
    }
}

fn put_daemon(out: &mut impl Put, d: &DaemonInfo) {
    out.put_u16(d.sctp_udp_port);
    out.put_u16(d.sctp_port);
    out.put_ip(d.addr);
    out.put_bytes(&d.key.0);
}

/// Protocol 1, only as far as needed to tell its clients to upgrade: a daemon answers a version-1 HELLO
/// with a version-1 WELCOME, so the old client connects and reads, in the refusal of its registration, that
/// it must upgrade (instead of searching in silence).
pub mod v1 {
    use super::*;

    /// The instance id of a version-1 HELLO, if `b` is one.
    pub fn hello_instance(b: &[u8]) -> Option<u64> {
        if b.len() < HEADER_LEN || b[..4] != MAGIC || b[4] != VERSION_1 || b[5] != TYPE_HELLO {
            return None;
        }
        Reader::at(b, 8).u64().ok()
    }

    /// A version-1 WELCOME to the HELLO of instance `to`, at the start of `buf`; its length.
    pub fn welcome_into(buf: &mut [u8], to: u64, d: &DaemonInfo) -> Option<usize> {
        let mut w = SliceWriter::new(buf);
        w.put_bytes(&MAGIC);
        w.put_u8(VERSION_1);
        w.put_u8(TYPE_WELCOME);
        w.put_u16(0);
        w.put_u64(d.instance);
        w.put_u16(d.sctp_udp_port);
        w.put_u16(d.sctp_port);
        w.put_ip(d.addr);
        w.put_u64(to);
        w.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    fn daemon() -> DaemonInfo {
        DaemonInfo {
            instance: 7,
            sctp_udp_port: 9899,
            sctp_port: 9899,
            addr: None,
            key: PublicKey([0xab; 32]),
            needs_secret: false,
        }
    }

    fn round_trip(d: Datagram) {
        for mac_key in [None, Some(&KEY)] {
            let mut b = Vec::new();
            d.write(&mut b, mac_key);
            assert!(b.len() <= MAX_DATAGRAM && !b.is_empty());
            let want = if mac_key.is_some() {
                Auth::Valid
            } else {
                Auth::Open
            };
            assert_eq!(Datagram::parse(&b, mac_key), Ok((d, want)));
            // Every truncation is an error (or, with a MAC, unauthenticated), never a panic.
            for n in 0..b.len() {
                match Datagram::parse(&b[..n], mac_key) {
                    Err(_) => {}
                    Ok((_, auth)) => assert_eq!(auth, Auth::Invalid, "{d:?} cut at {n}"),
                }
            }
        }
    }

    #[test]
    fn datagrams_round_trip() {
        round_trip(Datagram::Hello(Hello {
            instance: 0x0102_0304_0506_0708,
            sctp_udp_port: 40001,
        }));
        let d = daemon();
        round_trip(Datagram::Announce(d));
        round_trip(Datagram::Welcome { to: 99, daemon: d });
        round_trip(Datagram::Welcome {
            to: 1,
            daemon: DaemonInfo {
                addr: Some("fe80::1".parse().unwrap()),
                needs_secret: true,
                ..d
            },
        });
        round_trip(Datagram::Announce(DaemonInfo {
            addr: Some("192.0.2.7".parse().unwrap()),
            ..d
        }));
    }

    #[test]
    fn a_mac_is_valid_only_under_the_same_key_and_bytes() {
        let mut b = Vec::new();
        Datagram::Announce(daemon()).write(&mut b, Some(&KEY));
        assert_eq!(
            Datagram::parse(&b, Some(&[8; 32])).unwrap().1,
            Auth::Invalid
        );
        assert_eq!(Datagram::parse(&b, None).unwrap().1, Auth::Invalid);
        for i in 8..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 0x10;
            assert!(
                Datagram::parse(&bad, Some(&KEY)).is_ok_and(|(_, a)| a == Auth::Invalid)
                    || Datagram::parse(&bad, Some(&KEY)).is_err(),
                "byte {i} altered"
            );
        }
        // Without a MAC it parses as open, whatever key we hold.
        Datagram::Announce(daemon()).write(&mut b, None);
        assert_eq!(Datagram::parse(&b, Some(&KEY)).unwrap().1, Auth::Open);
    }

    #[test]
    fn foreign_versions_and_garbage() {
        assert_eq!(
            Datagram::parse(b"GET / HTTP/1.1", None),
            Err(DiscoveryError::Foreign)
        );
        assert_eq!(Datagram::parse(b"", None), Err(DiscoveryError::Foreign));
        let mut b = Vec::new();
        Datagram::Announce(daemon()).write(&mut b, None);
        let mut v3 = b.clone();
        v3[4] = 3;
        assert_eq!(Datagram::parse(&v3, None), Err(DiscoveryError::Version(3)));
        let mut bad_type = b.clone();
        bad_type[5] = 9;
        assert_eq!(
            Datagram::parse(&bad_type, None),
            Err(DiscoveryError::Malformed)
        );
        let mut bad_flag = b.clone();
        bad_flag[6] = 0x40;
        assert_eq!(
            Datagram::parse(&bad_flag, None),
            Err(DiscoveryError::Malformed)
        );
        let mut bad_family = b.clone();
        bad_family[20] = 5;
        assert_eq!(
            Datagram::parse(&bad_family, None),
            Err(DiscoveryError::Malformed)
        );
        let mut zero_port = b;
        zero_port[16] = 0;
        zero_port[17] = 0;
        assert_eq!(
            Datagram::parse(&zero_port, None),
            Err(DiscoveryError::Malformed)
        );
    }

    #[test]
    fn version_1_hellos_are_recognised_and_answered_in_version_1() {
        // A version-1 HELLO as protocol 1 wrote it: header, instance, nickname, chat port, SCTP port.
        let mut hello = Vec::new();
        hello.extend_from_slice(&MAGIC);
        hello.extend_from_slice(&[VERSION_1, TYPE_HELLO, 0, 0]);
        hello.extend_from_slice(&42u64.to_be_bytes());
        hello.extend_from_slice(&[2, b'o', b'k', 0, 1, 0, 2]);
        assert_eq!(
            Datagram::parse(&hello, None),
            Err(DiscoveryError::Version(1))
        );
        assert_eq!(v1::hello_instance(&hello), Some(42));
        assert_eq!(v1::hello_instance(&hello[..12]), None);
        let mut buf = [0u8; MAX_DATAGRAM];
        let n = v1::welcome_into(&mut buf, 42, &daemon()).unwrap();
        assert_eq!(
            &buf[..6],
            &[b'm', b'p', b'r', b'o', VERSION_1, TYPE_WELCOME]
        );
        assert_eq!(&buf[n - 8..n], &42u64.to_be_bytes());
    }
}
