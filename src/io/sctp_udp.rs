//! SCTP over UDP (RFC 6951): one nonblocking UDP socket carries every association of an [`Endpoint`] (or of
//! a core that owns one: a server, a client).
//!
//! The socket is bound once; every datagram received is an SCTP packet handed to [`Endpoint::handle`] with its
//! source address, which is also where replies go (RFC 6951 §5.1: the peer's encapsulation port is learned from
//! the packets it sends). Reads and writes are batched with `recvmmsg` / `sendmmsg`. `IP_RECVERR` is on, so an
//! ICMP port unreachable for a peer reaches [`Endpoint::handle_unreachable`] at once instead of waiting for
//! heartbeats to fail.
//!
//! This is the only transport today. A native kernel SCTP backend would replace this file and feed the same
//! endpoint calls; nothing else depends on UDP.

use std::io;
use std::net::{IpAddr, SocketAddr};

use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};
use socket2::{Domain, Protocol, Socket, Type};

use crate::reactor::udp::{self, RecvBatch, SendBatch};
use crate::sctp::{Endpoint, Transmit};
use crate::time::Instant;

pub use crate::sctp::DEFAULT_UDP_PORT;

/// Counters of the UDP layer (the endpoint counts SCTP-level events itself).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TransportStats {
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Datagrams handed to the kernel.
    pub datagrams_out: u64,
    /// Datagrams larger than the receive slot: dropped.
    pub truncated: u64,
    /// Datagrams the kernel refused to send.
    pub send_errors: u64,
    /// Entries read from the socket's error queue (ICMP errors).
    pub icmp_errors: u64,
    /// Of `datagrams_out`, those that left inside segmented sends (UDP GSO).
    pub segmented_out: u64,
}

/// Which outgoing datagrams may share one segmented send (UDP GSO, see [`UdpTransport::set_coalescing`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Coalescing {
    /// Every datagram is its own send (the default).
    Off,
    /// A burst of one association's packets: what any endpoint may do, since those packets share a path and
    /// a receiver.
    Association,
    /// Any consecutive packets to one UDP address, whichever association wrote them. Only for a load
    /// harness that runs many simulated clients behind one socket, where those clients would each send from
    /// their own host: it takes the harness's own per-packet cost off the machine it shares with the daemon
    /// under test. The receiver still reads one datagram per packet unless it turned on GRO.
    Destination,
}

/// An endpoint's UDP socket with its receive and send batches.
pub struct UdpTransport {
    sock: UdpSocket,
    recv: RecvBatch,
    send: SendBatch,
    /// Replies go to this UDP port instead of the source port of the peer's packets (for peers that send from
    /// one port and listen on another).
    peer_port_override: Option<u16>,
    coalescing: Coalescing,
    /// Destination ports never sent segmented datagrams (see [`kernel_sctp_ports`]).
    uncoalesced_ports: [u16; 2],
    writable_registered: bool,
    stats: TransportStats,
}

/// Largest datagram received whole. Peers size packets by their path MTU, and on loopback that is 64 KiB.
const RECV_SLOT: usize = 65_536;
/// Datagrams taken per `recvmmsg`.
const RECV_BATCH: usize = 64;
/// Datagrams queued per `sendmmsg`.
const SEND_BATCH: usize = 64;

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// Socket buffer size asked for, each way.
///
/// One socket carries every association: a heartbeat round or the SACKs for a roster storm arrive at once,
/// and a turn that spends a while sending leaves them queued. At 5 000 clients on loopback, 4 MiB (the usual
/// `net.core.rmem_max`) dropped one datagram in eight and each drop cost an association a retransmission
/// timeout.
pub const SOCKET_BUFFER: usize = 32 << 20;

/// Asks for [`SOCKET_BUFFER`] each way: beyond `net.core.rmem_max`/`wmem_max` where the process may
/// (`SO_RCVBUFFORCE` needs `CAP_NET_ADMIN`), otherwise as much as those limits allow.
fn grow_buffers(s: &Socket) {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(s, sockopt::RcvBufForce, &SOCKET_BUFFER).is_err() {
        let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    }
    if setsockopt(s, sockopt::SndBufForce, &SOCKET_BUFFER).is_err() {
        let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    }
}

impl UdpTransport {
    /// Binds a nonblocking UDP socket at `addr` for packets of up to `max_packet` bytes. An unspecified IPv6
    /// address (`[::]`) accepts IPv4 too.
    pub fn bind(addr: SocketAddr, max_packet: usize) -> io::Result<Self> {
        let domain = if addr.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
        let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            s.set_only_v6(false)?;
        }
        s.set_nonblocking(true)?;
        grow_buffers(&s);
        s.bind(&addr.into())?;
        let sock = UdpSocket::from_std(s.into());
        udp::enable_recverr(&sock)?;
        Ok(UdpTransport {
            sock,
            recv: RecvBatch::with_capacity(RECV_BATCH, RECV_SLOT),
            send: SendBatch::with_capacity(SEND_BATCH, max_packet.max(udp::DEFAULT_MAX_DATAGRAM)),
            peer_port_override: None,
            coalescing: Coalescing::Off,
            uncoalesced_ports: kernel_sctp_ports(),
            writable_registered: false,
            stats: TransportStats::default(),
        })
    }

    /// Chooses which packets may leave together in one segmented send ([`Coalescing::Off`] unless set). The
    /// kernel cuts such a send back into the same datagrams, so the peer sees no difference; the stack is
    /// crossed once per send instead of once per packet.
    ///
    /// Off by default because a capture on the sending host (`tcpdump -i lo`, or any interface whose NIC
    /// segments) shows each segmented send as one oversized packet that Wireshark cannot decode as SCTP.
    pub fn set_coalescing(&mut self, c: Coalescing) {
        self.coalescing = c;
        self.send.set_segmentation(c != Coalescing::Off);
    }

    /// Reads `net.sctp.udp_port` again: the kernel's SCTP module may have been loaded, or its port changed,
    /// since the socket was bound. A long-running server calls this now and then (mpd: every 10 s).
    pub fn refresh_kernel_ports(&mut self) {
        self.uncoalesced_ports = kernel_sctp_ports();
    }

    /// Asks the kernel to hand over a peer's segmented sends whole (`UDP_GRO`); they are cut apart here, so
    /// the endpoint still sees one packet at a time. Saves the receiving side the per-packet walk up the
    /// stack when the peer sends bursts. Fails on kernels before 5.0.
    pub fn enable_gro(&mut self) -> io::Result<()> {
        udp::enable_gro(&self.sock)
    }

    /// Sends every reply to UDP port `port` rather than to the port the peer's packets came from.
    pub fn set_peer_port_override(&mut self, port: Option<u16>) {
        self.peer_port_override = port;
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Counters.
    pub fn stats(&self) -> &TransportStats {
        &self.stats
    }

    /// Registers the socket for reading with `token`.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(&mut self.sock, token, Interest::READABLE)
    }

    /// Stops the reactor reporting this socket (the socket stays open).
    pub fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        registry.deregister(&mut self.sock)
    }

    /// Drains the socket: ICMP errors first (so an association whose peer is gone is closed before more of its
    /// packets are handled), then every datagram, each handed to the endpoint.
    pub fn read(&mut self, now: Instant, ep: &mut Endpoint) -> io::Result<()> {
        self.read_budget(now, ep, usize::MAX).map(|_| ())
    }

    /// Like [`UdpTransport::read`], for callers that wrap their endpoint: `datagram(from, bytes)` for each
    /// SCTP packet, `unreachable(dst, quoted)` for each ICMP port unreachable.
    pub fn read_with(
        &mut self,
        datagram: impl FnMut(SocketAddr, &[u8]),
        unreachable: impl FnMut(SocketAddr, &[u8]),
    ) -> io::Result<()> {
        self.read_inner(usize::MAX, datagram, unreachable)
            .map(|_| ())
    }

    /// Like [`UdpTransport::read`], but stops once `budget` datagrams are read (at the end of the batch that
    /// reaches it); true if it stopped there (the socket may hold more, and no new readiness event is
    /// promised for it). A reader that answers many
    /// peers (the load harness) calls this once per turn, so what it owes them (SACKs, heartbeat
    /// acknowledgements) goes out after each bounded read rather than after its whole backlog.
    pub fn read_budget(
        &mut self,
        now: Instant,
        ep: &mut Endpoint,
        budget: usize,
    ) -> io::Result<bool> {
        // Two closures need the endpoint: hand it to each in turn through a cell.
        let ep = std::cell::RefCell::new(ep);
        self.read_inner(
            budget,
            |from, bytes| ep.borrow_mut().handle(now, from, bytes),
            |dst, payload| ep.borrow_mut().handle_unreachable(dst, payload),
        )
    }

    fn read_inner(
        &mut self,
        budget: usize,
        mut datagram: impl FnMut(SocketAddr, &[u8]),
        mut unreachable: impl FnMut(SocketAddr, &[u8]),
    ) -> io::Result<bool> {
        self.read_errors(&mut unreachable)?;
        let mut read = 0usize;
        let mut stopped = false;
        loop {
            if read >= budget {
                stopped = true;
                break;
            }
            let n = self.recv.recv(&self.sock)?;
            if n == 0 {
                break;
            }
            for d in self.recv.iter() {
                self.stats.datagrams_in += 1;
                read += 1;
                if d.truncated {
                    self.stats.truncated += 1;
                    continue;
                }
                datagram(canonical(d.source), d.payload);
            }
        }
        self.read_errors(&mut unreachable)?;
        Ok(stopped)
    }

    fn read_errors(&mut self, unreachable: &mut impl FnMut(SocketAddr, &[u8])) -> io::Result<()> {
        let stats = &mut self.stats;
        udp::read_errors(&self.sock, |e| {
            stats.icmp_errors += 1;
            if e.errno == libc::ECONNREFUSED {
                unreachable(canonical(e.dst), e.payload);
            }
        })?;
        Ok(())
    }

    /// Moves everything the endpoint has to send into the socket. If the socket's buffer fills, the rest stays
    /// in the endpoint and `WRITABLE` interest is registered; call again when the reactor reports it.
    pub fn write(
        &mut self,
        now: Instant,
        ep: &mut Endpoint,
        registry: &Registry,
        token: Token,
    ) -> io::Result<()> {
        self.write_with(registry, token, |buf| ep.poll_transmit(now, buf))
    }

    /// Like [`UdpTransport::write_with`], but stops after `budget` datagrams; true if it stopped there (`next`
    /// may have more). A server under a burst calls this once per loop turn and turns again at once, so
    /// reading (handshakes, acknowledgements, heartbeats) is never starved behind a long queue of sends.
    pub fn write_budget_with(
        &mut self,
        registry: &Registry,
        token: Token,
        budget: usize,
        next: impl FnMut(&mut [u8]) -> Option<Transmit>,
    ) -> io::Result<bool> {
        self.write_inner(registry, token, budget, next)
    }

    /// Like [`UdpTransport::write`], taking datagrams from `next` (an endpoint's `poll_transmit`).
    pub fn write_with(
        &mut self,
        registry: &Registry,
        token: Token,
        next: impl FnMut(&mut [u8]) -> Option<Transmit>,
    ) -> io::Result<()> {
        self.write_inner(registry, token, usize::MAX, next)
            .map(|_| ())
    }

    fn write_inner(
        &mut self,
        registry: &Registry,
        token: Token,
        mut budget: usize,
        mut next: impl FnMut(&mut [u8]) -> Option<Transmit>,
    ) -> io::Result<bool> {
        loop {
            let mut more = false;
            while let Some(slot) = self.send.slot() {
                if budget == 0 {
                    break;
                }
                match next(slot) {
                    Some(t) => {
                        let mut dst = t.dst;
                        if let Some(p) = self.peer_port_override {
                            dst.set_port(p);
                        }
                        let flow = match self.coalescing {
                            _ if self.uncoalesced_ports.contains(&dst.port()) => 0,
                            Coalescing::Off => 0,
                            Coalescing::Association => t.flow,
                            Coalescing::Destination => 1,
                        };
                        self.send.commit_flow(dst, t.len, flow);
                        budget -= 1;
                    }
                    None => break,
                }
                more = self.send.is_full() || budget == 0;
            }
            if self.send.is_empty() {
                break;
            }
            let r = self.send.flush(&self.sock)?;
            self.stats.datagrams_out += r.sent as u64;
            self.stats.segmented_out += r.segmented as u64;
            self.stats.send_errors += r.dropped as u64;
            if r.blocked {
                if !self.writable_registered {
                    registry.reregister(
                        &mut self.sock,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    self.writable_registered = true;
                }
                return Ok(false);
            }
            if !more {
                break;
            }
            if budget == 0 {
                return Ok(true);
            }
        }
        if self.writable_registered {
            registry.reregister(&mut self.sock, token, Interest::READABLE)?;
            self.writable_registered = false;
        }
        Ok(false)
    }
}

/// The UDP ports where the kernel's own SCTP stack may take encapsulated packets: the IANA port and whatever
/// `net.sctp.udp_port` says now.
///
/// Those peers never get segmented sends. On a network the sending host cuts a segmented send apart before
/// the wire, but on one host it reaches the receiving socket whole, and when our echo server sent such runs
/// to the kernel's SCTP in the interop VM (Linux 6.1.0-56), that kernel stopped with `kernel BUG at
/// mm/slub.c:419`. A userspace stack such as mpd's reads ordinary datagrams either way.
fn kernel_sctp_ports() -> [u16; 2] {
    ports_from_sysctl(
        std::fs::read_to_string("/proc/sys/net/sctp/udp_port")
            .ok()
            .as_deref(),
    )
}

/// [`kernel_sctp_ports`] given the text of `net.sctp.udp_port`, if the file exists (it does once the
/// kernel's SCTP module is loaded; 0 means its UDP encapsulation is off).
fn ports_from_sysctl(text: Option<&str>) -> [u16; 2] {
    let configured = text
        .and_then(|s| s.trim().parse::<u16>().ok())
        .filter(|&p| p != 0)
        .unwrap_or(DEFAULT_UDP_PORT);
    [DEFAULT_UDP_PORT, configured]
}

/// Whether `ip` is a loopback or unspecified address (which must never be advertised to other hosts).
pub fn is_local_only(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::{Reactor, ReactorEvent};
    use crate::sctp::{Config, Event};
    use crate::test_require::{require_ipv6_loopback, skip_unless};
    use std::time::Duration;

    /// The connecting side of these tests: SCTP port 8, accepts nothing.
    fn client_endpoint() -> Endpoint {
        Endpoint::new(
            Config {
                port: 8,
                accept: false,
                ..Config::default()
            },
            [2; 32],
        )
    }

    /// Two endpoints over real UDP sockets on 127.0.0.1, driven by one reactor: handshake and a message.
    #[test]
    fn handshake_over_loopback_udp() {
        handshake_over("127.0.0.1:0");
    }

    /// The same over IPv6 loopback, when the host has it.
    #[test]
    fn handshake_over_ipv6_loopback_udp() {
        skip_unless!(require_ipv6_loopback());
        handshake_over("[::1]:0");
    }

    fn handshake_over(bind: &str) {
        let (a, _) = exchange(bind, b"over udp", |_, _| {});
        assert!(a.datagrams_in >= 3);
    }

    /// Connects a client to a server over real UDP sockets bound at `bind`, sends `msg` from the client and
    /// runs until the server has it; `setup(server, client)` configures the transports first. Returns both
    /// transports' counters.
    fn exchange(
        bind: &str,
        msg: &[u8],
        setup: impl FnOnce(&mut UdpTransport, &mut UdpTransport),
    ) -> (TransportStats, TransportStats) {
        let mut reactor = Reactor::new().unwrap();
        let mut a = UdpTransport::bind(bind.parse().unwrap(), 1200).unwrap();
        let mut b = UdpTransport::bind(bind.parse().unwrap(), 1200).unwrap();
        setup(&mut a, &mut b);
        a.register(reactor.registry(), Token(0)).unwrap();
        b.register(reactor.registry(), Token(1)).unwrap();
        let mut ea = Endpoint::new(
            Config {
                port: 7,
                ..Config::default()
            },
            [1; 32],
        );
        let mut eb = client_endpoint();
        let id = eb
            .connect(reactor.now(), a.local_addr().unwrap(), 7)
            .unwrap();
        eb.send(id, 0, false, msg).unwrap();
        let mut events = Vec::new();
        let mut got = None;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while got.is_none() && std::time::Instant::now() < deadline {
            let now = reactor.now();
            a.write(now, &mut ea, reactor.registry(), Token(0)).unwrap();
            b.write(now, &mut eb, reactor.registry(), Token(1)).unwrap();
            let t = [ea.poll_timeout(), eb.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            reactor
                .turn(t.or(Some(now + Duration::from_millis(100))), &mut events)
                .unwrap();
            let now = reactor.now();
            for e in &events {
                if let ReactorEvent::Io(tok, _) = e {
                    if *tok == Token(0) {
                        a.read(now, &mut ea).unwrap();
                    } else {
                        b.read(now, &mut eb).unwrap();
                    }
                }
            }
            ea.handle_timeout(now);
            eb.handle_timeout(now);
            while let Some((_, e)) = ea.poll_event() {
                if let Event::Message { data, .. } = e {
                    got = Some(data);
                }
            }
            while eb.poll_event().is_some() {}
        }
        assert_eq!(got.as_deref(), Some(msg), "the message arrived whole");
        (*a.stats(), *b.stats())
    }

    /// A large message leaves in segmented sends when the sender asks for them, whole at a GRO receiver as
    /// at a plain one; without asking, never.
    #[test]
    fn bulk_transfer_with_and_without_segmentation() {
        let msg: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 1000) as u8).collect();
        for gro in [false, true] {
            let (_, sender) = exchange("127.0.0.1:0", &msg, |a, b| {
                b.set_coalescing(Coalescing::Association);
                if gro {
                    a.enable_gro().unwrap();
                }
            });
            assert!(sender.segmented_out > 0, "gro {gro}: {sender:?}");
            assert!(sender.segmented_out <= sender.datagrams_out);
        }
        let (_, sender) = exchange("127.0.0.1:0", &msg, |_, _| {});
        assert_eq!(sender.segmented_out, 0, "off by default");
    }

    #[test]
    fn the_kernel_port_comes_from_the_sysctl_text() {
        assert_eq!(ports_from_sysctl(None), [9899, 9899], "no SCTP module");
        assert_eq!(
            ports_from_sysctl(Some("0\n")),
            [9899, 9899],
            "encapsulation off"
        );
        assert_eq!(ports_from_sysctl(Some("9900\n")), [9899, 9900]);
        assert_eq!(ports_from_sysctl(Some("junk")), [9899, 9899]);
    }

    /// Packets for the kernel's SCTP encapsulation port never leave segmented, whatever the policy.
    #[test]
    fn no_segmentation_towards_the_kernel_sctp_port() {
        let reactor = Reactor::new().unwrap();
        let inits_to = |port: u16| {
            let mut t = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), 1200).unwrap();
            t.register(reactor.registry(), Token(1)).unwrap();
            t.set_coalescing(Coalescing::Destination);
            let mut ep = client_endpoint();
            // Five INITs of one size to one UDP address (nothing needs to listen there).
            for sctp_port in 1..=5u16 {
                let to = SocketAddr::from(([127, 0, 0, 1], port));
                ep.connect(reactor.now(), to, sctp_port).unwrap();
            }
            t.write(reactor.now(), &mut ep, reactor.registry(), Token(1))
                .unwrap();
            *t.stats()
        };
        let to_kernel = inits_to(DEFAULT_UDP_PORT);
        assert_eq!((to_kernel.datagrams_out, to_kernel.segmented_out), (5, 0));
        let elsewhere = inits_to(DEFAULT_UDP_PORT + 1);
        assert_eq!((elsewhere.datagrams_out, elsewhere.segmented_out), (5, 5));
    }

    /// A send budget stops after that many datagrams and says more may wait; the rest go on later calls.
    #[test]
    fn write_budget_sends_at_most_its_budget_per_call() {
        let reactor = Reactor::new().unwrap();
        let mut b = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), 1200).unwrap();
        b.register(reactor.registry(), Token(1)).unwrap();
        let mut eb = client_endpoint();
        // Five INITs to five addresses (nothing listens there; only the count matters).
        for port in 1..=5u16 {
            let to = SocketAddr::from(([127, 0, 0, 1], port));
            eb.connect(reactor.now(), to, 7).unwrap();
        }
        let now = reactor.now();
        let mut sent = Vec::new();
        for _ in 0..3 {
            let more = b
                .write_budget_with(reactor.registry(), Token(1), 2, |buf| {
                    eb.poll_transmit(now, buf)
                })
                .unwrap();
            sent.push((b.stats().datagrams_out, more));
        }
        assert_eq!(sent, [(2, true), (4, true), (5, false)]);
    }

    /// A read budget stops at the batch that reaches it and says more may wait; later calls read the rest.
    #[test]
    fn read_budget_reads_about_its_budget_per_call() {
        let mut b = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), 1200).unwrap();
        let to = b.local_addr().unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let total = 3 * RECV_BATCH as u64 + 5;
        for i in 0..total {
            tx.send_to(&i.to_be_bytes(), to).unwrap();
        }
        let mut eb = client_endpoint();
        let now = Instant::ZERO;
        let mut calls = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while b.stats().datagrams_in < total && std::time::Instant::now() < deadline {
            let more = b.read_budget(now, &mut eb, RECV_BATCH).unwrap();
            calls.push((b.stats().datagrams_in, more));
        }
        let (first, more) = calls[0];
        assert!(more && first >= RECV_BATCH as u64, "{calls:?}");
        assert!(calls.len() >= 3, "{calls:?}");
        assert_eq!(calls.last().unwrap().0, total);
        // None of them is SCTP: each was dropped as malformed, after being read.
        assert_eq!(eb.stats().malformed, total);
    }

    /// A peer whose UDP port is closed: the ICMP port unreachable closes the association at once.
    #[test]
    fn closed_peer_port_is_reported_unreachable() {
        let mut reactor = Reactor::new().unwrap();
        let mut b = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), 1200).unwrap();
        b.register(reactor.registry(), Token(1)).unwrap();
        // Reserve a port and close it, so nothing listens there.
        let closed = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut eb = client_endpoint();
        eb.connect(reactor.now(), closed, 7).unwrap();
        let mut events = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut down = None;
        while down.is_none() && std::time::Instant::now() < deadline {
            let now = reactor.now();
            b.write(now, &mut eb, reactor.registry(), Token(1)).unwrap();
            reactor
                .turn(Some(now + Duration::from_millis(50)), &mut events)
                .unwrap();
            b.read(reactor.now(), &mut eb).unwrap();
            while let Some((_, e)) = eb.poll_event() {
                if let Event::Down(r) = e {
                    down = Some(r);
                }
            }
        }
        assert_eq!(down, Some(crate::sctp::DownReason::Unreachable));
        assert_eq!(eb.stats().icmp_unreachable, 1);
    }
}
