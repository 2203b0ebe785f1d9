//! Multicast socket setup for discovery: choosing the interface, joining the group, and a socket for sending.
//!
//! A group socket is bound to the group address itself (not the wildcard), so it receives that group only,
//! whatever else other programs on the host have joined; `SO_REUSEADDR` lets a daemon and its local clients
//! share the port. Replies and HELLOs go out through a separate ephemeral socket, since a socket bound to a
//! multicast address cannot be the source of unicast datagrams.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use mio::net::UdpSocket;
use socket2::{Domain, Protocol, Socket, Type};

/// The interface multicast is sent and joined on.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Iface {
    /// Let the routing table choose (IPv4 `INADDR_ANY`, IPv6 index 0).
    Default,
    /// The IPv4 interface with this address.
    V4(Ipv4Addr),
    /// The IPv6 interface with this index.
    V6(u32),
}

impl std::fmt::Display for Iface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Iface::Default => f.write_str("default"),
            Iface::V4(a) => write!(f, "{a}"),
            Iface::V6(i) => write!(f, "index {i}"),
        }
    }
}

fn err(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Turns `--iface ADDR|NAME` into an [`Iface`] for `group`'s family. `None` lets the routing table choose.
pub fn resolve_iface(spec: Option<&str>, group: IpAddr) -> io::Result<Iface> {
    let Some(spec) = spec else {
        return Ok(Iface::Default);
    };
    if let Ok(ip) = spec.parse::<IpAddr>() {
        return match (ip, group) {
            (IpAddr::V4(a), IpAddr::V4(_)) => Ok(Iface::V4(a)),
            (IpAddr::V6(a), IpAddr::V6(_)) => interface_with(|addr| addr == IpAddr::V6(a))
                .map(Iface::V6)
                .ok_or_else(|| err(format!("no interface has the address {a}"))),
            _ => Err(err(format!(
                "--iface {spec} and the group {group} are of different address families"
            ))),
        };
    }
    match group {
        IpAddr::V4(_) => {
            let addrs = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
            for a in addrs {
                if a.interface_name == spec
                    && let Some(sin) = a.address.as_ref().and_then(|s| s.as_sockaddr_in())
                {
                    return Ok(Iface::V4(sin.ip()));
                }
            }
            Err(err(format!(
                "no interface named {spec} with an IPv4 address (see `ip -4 addr`)"
            )))
        }
        IpAddr::V6(_) => nix::net::if_::if_nametoindex(spec)
            .map(Iface::V6)
            .map_err(|_| err(format!("no interface named {spec} (see `ip link`)"))),
    }
}

/// Index of the first interface with an address matching `want`.
fn interface_with(want: impl Fn(IpAddr) -> bool) -> Option<u32> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    for a in addrs {
        let ip = match a.address.as_ref() {
            Some(s) if s.as_sockaddr_in6().is_some() => IpAddr::V6(s.as_sockaddr_in6()?.ip()),
            Some(s) if s.as_sockaddr_in().is_some() => IpAddr::V4(s.as_sockaddr_in()?.ip()),
            _ => continue,
        };
        if want(ip) {
            return nix::net::if_::if_nametoindex(a.interface_name.as_str()).ok();
        }
    }
    None
}

fn set_outgoing(s: &Socket, iface: Iface) -> io::Result<()> {
    match iface {
        Iface::Default => {}
        Iface::V4(a) => s.set_multicast_if_v4(&a)?,
        Iface::V6(i) => s.set_multicast_if_v6(i)?,
    }
    if s.domain()? == Domain::IPV4 {
        // TTL 1: discovery never leaves the link.
        s.set_multicast_ttl_v4(1)?;
        s.set_multicast_loop_v4(true)?;
    } else {
        s.set_multicast_hops_v6(1)?;
        s.set_multicast_loop_v6(true)?;
    }
    Ok(())
}

/// Opens the socket that receives `group`'s datagrams on `iface`, and returns it with the interface actually
/// joined. On a host whose routing table has no route for multicast (a machine with only loopback), joining
/// on the default interface fails; then loopback is used, so a daemon and clients on that host still meet.
pub fn multicast_socket(group: SocketAddr, iface: Iface) -> io::Result<(UdpSocket, Iface)> {
    let domain = if group.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    let joined = match (group.ip(), iface) {
        (IpAddr::V4(g), Iface::Default) => match s.join_multicast_v4(&g, &Ipv4Addr::UNSPECIFIED) {
            Ok(()) => Iface::Default,
            Err(_) => {
                s.join_multicast_v4(&g, &Ipv4Addr::LOCALHOST)?;
                Iface::V4(Ipv4Addr::LOCALHOST)
            }
        },
        (IpAddr::V4(g), Iface::V4(a)) => {
            s.join_multicast_v4(&g, &a)?;
            iface
        }
        (IpAddr::V6(g), Iface::Default) => {
            s.join_multicast_v6(&g, 0)?;
            iface
        }
        (IpAddr::V6(g), Iface::V6(i)) => {
            s.join_multicast_v6(&g, i)?;
            iface
        }
        _ => return Err(err(format!("interface {iface} does not fit group {group}"))),
    };
    // Bound to the group itself, so this socket sees this group only (Linux otherwise delivers every group
    // any socket on the host joined for this port, IP_MULTICAST_ALL).
    s.bind(&group.into())?;
    set_outgoing(&s, joined)?;
    Ok((UdpSocket::from_std(s.into()), joined))
}

/// An ephemeral UDP socket for sending to the group on `iface` (and receiving unicast replies).
pub fn sender_socket(group: SocketAddr, iface: Iface) -> io::Result<UdpSocket> {
    let (domain, any) = if group.is_ipv4() {
        (Domain::IPV4, SocketAddr::from(([0, 0, 0, 0], 0)))
    } else {
        (Domain::IPV6, SocketAddr::from(([0u16; 8], 0)))
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_nonblocking(true)?;
    s.bind(&any.into())?;
    set_outgoing(&s, iface)?;
    Ok(UdpSocket::from_std(s.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{DaemonInfo, Datagram};
    use std::time::{Duration, Instant};

    #[test]
    fn resolves_addresses_and_names() {
        let g4: IpAddr = "239.255.77.77".parse().unwrap();
        assert_eq!(resolve_iface(None, g4).unwrap(), Iface::Default);
        assert_eq!(
            resolve_iface(Some("127.0.0.1"), g4).unwrap(),
            Iface::V4(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(
            resolve_iface(Some("lo"), g4).unwrap(),
            Iface::V4(Ipv4Addr::LOCALHOST)
        );
        assert!(resolve_iface(Some("no-such-if0"), g4).is_err());
        assert!(resolve_iface(Some("::1"), g4).is_err());
    }

    /// Loopback multicast: a sender on 127.0.0.1 reaches a group socket joined on 127.0.0.1.
    #[test]
    fn loopback_multicast_delivers() {
        // A group and port of this test's own, so parallel tests never hear each other.
        let group: SocketAddr = format!(
            "239.255.77.{}:{}",
            100 + std::process::id() % 100,
            20000 + std::process::id() % 20000
        )
        .parse()
        .unwrap();
        let iface = Iface::V4(Ipv4Addr::LOCALHOST);
        let (rx, joined) = multicast_socket(group, iface).unwrap();
        assert_eq!(joined, iface);
        let tx = sender_socket(group, iface).unwrap();
        let d = Datagram::Announce(DaemonInfo {
            instance: 42,
            sctp_udp_port: 9899,
            sctp_port: 9899,
            addr: None,
            key: crate::identity::PublicKey([3; 32]),
            needs_secret: false,
        });
        let mut buf = Vec::new();
        d.write(&mut buf, None);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = None;
        let mut rbuf = [0u8; 256];
        while got.is_none() && Instant::now() < deadline {
            tx.send_to(&buf, group).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            if let Ok((n, from)) = rx.recv_from(&mut rbuf) {
                got = Some((Datagram::parse(&rbuf[..n], None).unwrap().0, from));
            }
        }
        let (d2, from) = got.expect("no multicast datagram on loopback");
        assert_eq!(d2, d);
        assert_eq!(from.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
}
