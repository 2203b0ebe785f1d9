//! The endpoint-sequence harness shared by the `sctp_endpoint` fuzz target and `tests/codec_props.rs` (which
//! includes this file with `#[path]`), so both drive the endpoint the same way.
//!
//! # Input format
//!
//! ```text
//! byte 0            mode (see [`mode`])
//! then, repeatedly  ctl0 ctl1 len_hi len_lo packet[len]   (len clamped to what is left; at most MAX_STEPS)
//! ```
//!
//! Each step first runs the application actions chosen by `ctl1`, then injects `packet` into the listening
//! server from one of two UDP addresses, after the fix-ups chosen by `ctl0` (ports, a valid verification tag,
//! a real cookie in front, TSNs rebased to the association's, a correct CRC32c), then advances the virtual
//! clock, running every timer that falls due on the way. After every delivery the harness checks:
//!
//! - `Endpoint::check_invariants`,
//! - memory is bounded: the server never holds more associations than COOKIE ECHOes it was handed (nor more
//!   than `max_associations`), and no association holds more heap than twice its receive window plus slack,
//! - every datagram either endpoint emits is a well-formed packet (header, CRC32c, every chunk parses) that
//!   fits `max_packet`,
//! - `poll_transmit` and `poll_event` drain in bounded time, the two endpoints never ping-pong forever at one
//!   instant, and a timer never re-fires at the same instant over and over,
//! - an association reported `Down` is gone, and delivered messages are non-empty and within `max_message`.
//!
//! In [`mode::HANDSHAKE`] a real client endpoint first completes a handshake with the server through a tiny
//! zero-latency loop; afterwards the server's packets to the client's address are delivered to it and its
//! answers go back, so injected packets land in an established association with a live peer.

use std::net::SocketAddr;
use std::time::Duration;

use multiproto::sctp::chunk::{Chunk, ChunkIter, kind};
use multiproto::sctp::param::{InitParam, TlvIter};
use multiproto::sctp::wire::{self, HEADER_LEN, Packet, pad4};
use multiproto::sctp::{AssocId, Config, Endpoint, Event, State};
use multiproto::time::Instant;

/// The server's SCTP port.
pub const SERVER_PORT: u16 = 5000;
/// The client's SCTP port (also used to overwrite injected packets' source port).
pub const CLIENT_PORT: u16 = 6000;
/// Steps taken from one input at most.
pub const MAX_STEPS: usize = 64;
/// Timer firings followed per time advance before the rest of the advance is taken in one jump.
const MAX_TIMER_STEPS: usize = 64;
/// `poll_transmit` / `poll_event` calls after which a drain is considered stuck.
const MAX_DRAIN: usize = 4096;
/// Exchange rounds between the two endpoints at one instant after which they are considered to loop.
const MAX_PUMP_ROUNDS: usize = 256;
/// Consecutive timer firings at one instant after which a timer is considered to spin.
const MAX_SAME_INSTANT: usize = 32;
/// Time advances selectable by bits 1..=3 of `ctl0`, in µs.
pub const ADVANCE_US: [u64; 8] = [
    0, 1_000, 10_000, 50_000, 200_000, 1_000_000, 5_000_000, 65_000_000,
];

/// Bits of the mode byte (the first input byte).
pub mod mode {
    /// Complete a real handshake first; the primary address is the client's.
    pub const HANDSHAKE: u8 = 0x01;
    /// Small limits: 2 associations, 4 pending replies, 8 KiB windows and buffers.
    pub const TIGHT: u8 = 0x02;
    /// The secondary address is IPv6 (`[::1]:40000`) instead of `127.0.0.1:40001`.
    pub const IPV6_SECONDARY: u8 = 0x04;
    /// Heartbeats off.
    pub const NO_HEARTBEAT: u8 = 0x08;
}

/// Bits of a step's first control byte: where the packet comes from and how it is fixed up.
pub mod ctl0 {
    /// Send from the secondary address.
    pub const SECONDARY: u8 = 0x01;
    /// Bits 1..=3 select [`super::ADVANCE_US`] after the packet.
    pub const ADVANCE_SHIFT: u8 = 1;
    /// Overwrite the ports: source = the port the server last answered at this address (else the client's),
    /// destination = the server's.
    pub const PORTS: u8 = 0x10;
    /// Overwrite the verification tag with the one the server expects from this address (the initiate tag of
    /// the last INIT ACK it sent there), if known.
    pub const VTAG: u8 = 0x20;
    /// Put a COOKIE ECHO with the last cookie the server sent to this address first, then the packet's
    /// chunks.
    pub const COOKIE: u8 = 0x40;
    /// Rebase TSNs: DATA TSNs are offset by the initial TSN of the last INIT from this address, SACK and
    /// SHUTDOWN cumulative acks by the server's initial TSN from its INIT ACK.
    pub const REBASE: u8 = 0x80;
}

/// Bits of a step's second control byte: application actions and impairments.
pub mod ctl1 {
    /// Leave the CRC32c as it is (otherwise it is recomputed, so packets pass outside `cfg(fuzzing)` too).
    pub const KEEP_CHECKSUM: u8 = 0x01;
    /// The server sends a message on its first association (payload built from the packet).
    pub const SERVER_SEND: u8 = 0x02;
    /// The client sends a message.
    pub const CLIENT_SEND: u8 = 0x04;
    /// The server starts a graceful shutdown of its first association.
    pub const SERVER_SHUTDOWN: u8 = 0x08;
    /// The client starts a graceful shutdown.
    pub const CLIENT_SHUTDOWN: u8 = 0x10;
    /// The client connects again if it has no association (a restart, seen from the server).
    pub const CLIENT_RECONNECT: u8 = 0x20;
    /// The server aborts its first association.
    pub const SERVER_ABORT: u8 = 0x40;
    /// During this step, the server's packets to the client are lost.
    pub const DROP_TO_CLIENT: u8 = 0x80;
}

/// One step of an input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// Source and fix-ups ([`ctl0`]).
    pub ctl0: u8,
    /// Actions ([`ctl1`]).
    pub ctl1: u8,
    /// The datagram before fix-ups.
    pub packet: Vec<u8>,
}

/// Encodes a mode and steps into the input format (for property tests and seed corpora).
pub fn encode(mode: u8, steps: &[Step]) -> Vec<u8> {
    let mut out = vec![mode];
    for s in steps {
        let len = s.packet.len().min(usize::from(u16::MAX));
        out.extend_from_slice(&[s.ctl0, s.ctl1]);
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.extend_from_slice(&s.packet[..len]);
    }
    out
}

/// Splits an input into its mode byte and steps (a trailing partial step header is ignored).
pub fn decode(data: &[u8]) -> (u8, Vec<Step>) {
    let Some((&mode, mut rest)) = data.split_first() else {
        return (0, Vec::new());
    };
    let mut steps = Vec::new();
    while rest.len() >= 4 && steps.len() < MAX_STEPS {
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]])).min(rest.len() - 4);
        steps.push(Step {
            ctl0: rest[0],
            ctl1: rest[1],
            packet: rest[4..4 + len].to_vec(),
        });
        rest = &rest[4 + len..];
    }
    (mode, steps)
}

/// What a run reached, so tests can check the harness is not vacuous.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Steps run.
    pub steps: usize,
    /// Most associations the server held at once.
    pub server_max_assocs: usize,
    /// `Up` events on the server.
    pub server_ups: usize,
    /// `Down` events on the server.
    pub server_downs: usize,
    /// `Restarted` events on the server.
    pub server_restarts: usize,
    /// Messages the server delivered.
    pub server_messages: usize,
    /// Messages the client delivered.
    pub client_messages: usize,
    /// Datagrams the server emitted.
    pub server_transmits: usize,
    /// Injected packets whose first chunk was a COOKIE ECHO.
    pub injected_cookie_echoes: usize,
    /// Whether the server had an association in ESTABLISHED when an injected packet arrived.
    pub injected_into_established: bool,
    /// Malformed packets the server counted.
    pub server_malformed: u64,
    /// Packets the server dropped for a bad verification tag.
    pub server_bad_vtag: u64,
}

/// What the harness learned from the server's packets to one address.
#[derive(Clone, Debug, Default)]
struct Learned {
    /// Initiate tag of the last INIT ACK sent there: the tag the server expects on packets from there.
    tag: Option<u32>,
    /// The SCTP port that INIT ACK went to.
    port: Option<u16>,
    /// The cookie it carried.
    cookie: Option<Vec<u8>>,
    /// The server's initial TSN in it.
    server_tsn: u32,
    /// Initial TSN of the last INIT received from there.
    peer_tsn: u32,
}

/// The server, the optional client and the virtual clock.
pub struct Harness {
    now: Instant,
    server_addr: SocketAddr,
    addrs: [SocketAddr; 2],
    server: Endpoint,
    client: Option<Endpoint>,
    client_id: Option<AssocId>,
    connects: usize,
    learned: [Learned; 2],
    cookie_echoes: usize,
    drop_to_client: bool,
    buf: Vec<u8>,
    report: Report,
}

fn configs(mode: u8) -> (Config, Config) {
    let mut server = Config {
        port: SERVER_PORT,
        ..Config::default()
    };
    if mode & mode::TIGHT != 0 {
        server.max_associations = 2;
        server.max_pending_replies = 4;
        server.rwnd = 8192;
        server.send_buffer = 8192;
        server.max_message = 8192;
    }
    if mode & mode::NO_HEARTBEAT != 0 {
        server.heartbeat_interval = None;
    }
    let client = Config {
        port: CLIENT_PORT,
        accept: false,
        ..server.clone()
    };
    (server, client)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|_| unreachable!())
}

/// Checks that a datagram an endpoint emitted is well-formed: it fits `max_packet`, has a valid header and
/// CRC32c, and every chunk (and every INIT / INIT ACK parameter) parses.
fn check_emitted(bytes: &[u8], cfg: &Config) {
    assert!(
        bytes.len() <= cfg.max_packet,
        "emitted {} bytes > max_packet {}",
        bytes.len(),
        cfg.max_packet
    );
    let p = Packet::new_checked(bytes).expect("emitted packet fails new_checked");
    assert!(p.verify_checksum(), "emitted packet has a bad checksum");
    // The source port is not checked: out-of-the-blue replies answer from the port the packet was sent to.
    let mut n = 0;
    for c in ChunkIter::new(p.chunk_bytes()) {
        let c = c.unwrap_or_else(|e| {
            panic!("emitted packet has a malformed chunk: {e} in {bytes:02x?}")
        });
        if let Chunk::Init(i) | Chunk::InitAck(i) = c {
            for t in TlvIter::new(i.params) {
                let t = t.unwrap_or_else(|e| panic!("emitted INIT (ACK) has a bad parameter: {e}"));
                InitParam::parse(t).expect("emitted INIT (ACK) parameter does not parse");
            }
        }
        n += 1;
    }
    assert!(n > 0, "emitted packet without chunks");
}

impl Harness {
    /// Builds the endpoints for `mode` and, in [`mode::HANDSHAKE`], completes the handshake.
    pub fn new(mode: u8) -> Self {
        let (scfg, ccfg) = configs(mode);
        let secondary = if mode & mode::IPV6_SECONDARY != 0 {
            addr("[::1]:40000")
        } else {
            addr("127.0.0.1:40001")
        };
        let mut h = Harness {
            now: Instant::ZERO,
            server_addr: addr("127.0.0.1:9899"),
            addrs: [addr("127.0.0.1:40000"), secondary],
            server: Endpoint::new(scfg, [mode >> 4; 32]),
            client: None,
            client_id: None,
            connects: 0,
            learned: Default::default(),
            cookie_echoes: 0,
            drop_to_client: false,
            buf: vec![0; 65536],
            report: Report::default(),
        };
        if mode & mode::HANDSHAKE != 0 {
            h.client = Some(Endpoint::new(ccfg, [0xc1; 32]));
            h.connect();
            h.pump();
            let cid = h.client_id.expect("client connected");
            let client_state = h.client.as_ref().and_then(|c| c.state(cid));
            assert_eq!(
                client_state,
                Some(State::Established),
                "handshake did not complete"
            );
            assert_eq!(
                h.server.len(),
                1,
                "server has no association after handshake"
            );
        }
        h.check();
        h
    }

    fn connect(&mut self) {
        let (now, server_addr) = (self.now, self.server_addr);
        if let Some(c) = &mut self.client
            && let Ok(id) = c.connect(now, server_addr, SERVER_PORT)
        {
            self.client_id = Some(id);
            self.connects += 1;
        }
    }

    /// The report so far.
    pub fn report(&self) -> Report {
        Report {
            server_malformed: self.server.stats().malformed,
            server_bad_vtag: self.server.stats().bad_vtag,
            ..self.report
        }
    }

    /// The server endpoint.
    pub fn server(&self) -> &Endpoint {
        &self.server
    }

    fn check(&mut self) {
        self.server.check_invariants();
        if let Some(c) = &self.client {
            c.check_invariants();
        }
        let n = self.server.len();
        self.report.server_max_assocs = self.report.server_max_assocs.max(n);
        assert!(
            n <= self.cookie_echoes,
            "server holds {n} associations but was handed only {} COOKIE ECHOes",
            self.cookie_echoes
        );
        let cfg = self.server.config();
        assert!(n <= cfg.max_associations, "server exceeds max_associations");
        let heap_cap = 2 * cfg.rwnd as usize + 128 * 1024;
        for id in self.server.ids() {
            let heap = self.server.heap_bytes(id).unwrap_or(0);
            assert!(heap <= heap_cap, "association {id} holds {heap} heap bytes");
        }
        if let Some(c) = &self.client {
            assert!(
                c.len() <= self.connects,
                "client holds {} associations after {} connects",
                c.len(),
                self.connects
            );
        }
    }

    fn learn_from_server_packet(&mut self, dst: SocketAddr, bytes: &[u8]) {
        let Some(i) = self.addrs.iter().position(|a| *a == dst) else {
            return;
        };
        let Ok(p) = Packet::new_checked(bytes) else {
            return;
        };
        for c in ChunkIter::new(p.chunk_bytes()) {
            let Ok(Chunk::InitAck(init)) = c else {
                continue;
            };
            let l = &mut self.learned[i];
            l.tag = Some(init.initiate_tag);
            l.port = Some(p.dst_port());
            l.server_tsn = init.initial_tsn.0;
            for t in TlvIter::new(init.params).flatten() {
                if let Ok(InitParam::StateCookie(c)) = InitParam::parse(t) {
                    l.cookie = Some(c.to_vec());
                }
            }
        }
    }

    /// Drains the server's output; returns what goes to the client.
    fn drain_server(&mut self) -> Vec<Vec<u8>> {
        let mut to_client = Vec::new();
        let mut done = false;
        for _ in 0..MAX_DRAIN {
            let mut buf = std::mem::take(&mut self.buf);
            let t = self.server.poll_transmit(self.now, &mut buf);
            if let Some(t) = t {
                assert!(t.len <= buf.len());
                let bytes = &buf[..t.len];
                check_emitted(bytes, self.server.config());
                self.report.server_transmits += 1;
                self.learn_from_server_packet(t.dst, bytes);
                if self.client.is_some() && t.dst == self.addrs[0] && !self.drop_to_client {
                    to_client.push(bytes.to_vec());
                }
            }
            self.buf = buf;
            if t.is_none() {
                done = true;
                break;
            }
        }
        assert!(done, "server poll_transmit does not drain");
        let mut done = false;
        for _ in 0..MAX_DRAIN {
            let Some((id, e)) = self.server.poll_event() else {
                done = true;
                break;
            };
            match e {
                Event::Up => self.report.server_ups += 1,
                Event::Down(_) => {
                    self.report.server_downs += 1;
                    assert_eq!(self.server.state(id), None, "{id} reported down but alive");
                }
                Event::Restarted => self.report.server_restarts += 1,
                Event::Message { data, .. } => {
                    self.report.server_messages += 1;
                    assert!(!data.is_empty(), "empty message delivered");
                    assert!(data.len() <= self.server.config().max_message);
                }
            }
        }
        assert!(done, "server poll_event does not drain");
        to_client
    }

    /// Drains the client's output; returns what goes to the server.
    fn drain_client(&mut self) -> Vec<Vec<u8>> {
        let Some(c) = &mut self.client else {
            return Vec::new();
        };
        let mut to_server = Vec::new();
        let mut done = false;
        for _ in 0..MAX_DRAIN {
            let Some(t) = c.poll_transmit(self.now, &mut self.buf) else {
                done = true;
                break;
            };
            let bytes = &self.buf[..t.len];
            check_emitted(bytes, c.config());
            if t.dst == self.server_addr {
                to_server.push(bytes.to_vec());
            }
        }
        assert!(done, "client poll_transmit does not drain");
        let mut done = false;
        for _ in 0..MAX_DRAIN {
            let Some((id, e)) = c.poll_event() else {
                done = true;
                break;
            };
            match e {
                Event::Down(_) => {
                    assert_eq!(c.state(id), None, "client {id} reported down but alive");
                    if self.client_id == Some(id) {
                        self.client_id = None;
                    }
                }
                Event::Message { data, .. } => {
                    self.report.client_messages += 1;
                    assert!(!data.is_empty(), "empty message delivered");
                }
                Event::Up | Event::Restarted => {}
            }
        }
        assert!(done, "client poll_event does not drain");
        to_server
    }

    /// Hands a datagram from `from` to the server.
    fn deliver_to_server(&mut self, from: SocketAddr, bytes: &[u8]) {
        if let Ok(p) = Packet::new_checked(bytes) {
            match ChunkIter::new(p.chunk_bytes()).next() {
                Some(Ok(Chunk::CookieEcho(_))) => self.cookie_echoes += 1,
                Some(Ok(Chunk::Init(i))) => {
                    if let Some(k) = self.addrs.iter().position(|a| *a == from) {
                        self.learned[k].peer_tsn = i.initial_tsn.0;
                    }
                }
                _ => {}
            }
        }
        self.server.handle(self.now, from, bytes);
        self.check();
    }

    /// Exchanges packets between server and client until both are quiet (drains the server in any case).
    fn pump(&mut self) {
        for _ in 0..MAX_PUMP_ROUNDS {
            let to_client = self.drain_server();
            let to_server = self.drain_client();
            if to_client.is_empty() && to_server.is_empty() {
                return;
            }
            let (now, server_addr, client_addr) = (self.now, self.server_addr, self.addrs[0]);
            if let Some(c) = &mut self.client {
                for b in &to_client {
                    c.handle(now, server_addr, b);
                }
            }
            for b in &to_server {
                self.deliver_to_server(client_addr, b);
            }
            self.check();
        }
        panic!(
            "server and client exchange packets forever at {:?}",
            self.now
        );
    }

    fn next_deadline(&self) -> Option<Instant> {
        let s = self.server.poll_timeout();
        let c = self.client.as_ref().and_then(Endpoint::poll_timeout);
        match (s, c) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn fire_timers(&mut self) {
        let now = self.now;
        if self.server.poll_timeout().is_some_and(|t| t <= now) {
            self.server.handle_timeout(now);
        }
        if let Some(c) = &mut self.client
            && c.poll_timeout().is_some_and(|t| t <= now)
        {
            c.handle_timeout(now);
        }
        self.check();
        self.pump();
    }

    /// Advances the clock by `d`, firing timers in deadline order on the way.
    pub fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        let mut same_instant = 0;
        let mut last = self.now;
        for _ in 0..MAX_TIMER_STEPS {
            match self.next_deadline() {
                Some(t) if t <= target => {
                    self.now = self.now.max(t);
                    if self.now == last {
                        same_instant += 1;
                        assert!(
                            same_instant <= MAX_SAME_INSTANT,
                            "a timer keeps firing at {:?}",
                            self.now
                        );
                    } else {
                        same_instant = 0;
                        last = self.now;
                    }
                    self.fire_timers();
                }
                _ => break,
            }
        }
        self.now = target;
        self.fire_timers();
    }

    /// Applies `ctl0`'s fix-ups to a packet coming from address `src`.
    fn fix_up(&self, src: usize, ctl0: u8, ctl1: u8, packet: &[u8]) -> Vec<u8> {
        let l = &self.learned[src];
        let mut p = match (&l.cookie, ctl0 & ctl0::COOKIE != 0) {
            (Some(cookie), true) => {
                let mut p = Vec::with_capacity(HEADER_LEN + 4 + cookie.len() + packet.len());
                p.extend_from_slice(&l.port.unwrap_or(CLIENT_PORT).to_be_bytes());
                p.extend_from_slice(&SERVER_PORT.to_be_bytes());
                p.extend_from_slice(&l.tag.unwrap_or(0).to_be_bytes());
                p.extend_from_slice(&[0; 4]);
                p.extend_from_slice(&[kind::COOKIE_ECHO, 0]);
                p.extend_from_slice(&((4 + cookie.len()) as u16).to_be_bytes());
                p.extend_from_slice(cookie);
                p.resize(pad4(p.len()), 0);
                p.extend_from_slice(packet.get(HEADER_LEN..).unwrap_or(&[]));
                p
            }
            _ => packet.to_vec(),
        };
        if ctl0 & ctl0::PORTS != 0 && p.len() >= 4 {
            p[0..2].copy_from_slice(&l.port.unwrap_or(CLIENT_PORT).to_be_bytes());
            p[2..4].copy_from_slice(&SERVER_PORT.to_be_bytes());
        }
        if let (true, Some(tag)) = (ctl0 & ctl0::VTAG != 0 && p.len() >= 8, l.tag) {
            p[4..8].copy_from_slice(&tag.to_be_bytes());
        }
        if ctl0 & ctl0::REBASE != 0 {
            rebase_tsns(&mut p, l.peer_tsn, l.server_tsn);
        }
        if ctl1 & ctl1::KEEP_CHECKSUM == 0 && p.len() >= HEADER_LEN {
            let sum = wire::checksum(&p);
            p[8..12].copy_from_slice(&sum.to_le_bytes());
        }
        p
    }

    fn app_actions(&mut self, ctl1: u8, packet: &[u8]) {
        let now = self.now;
        // A payload from the packet, stretched so that some messages need fragmenting.
        let payload: Vec<u8> = if packet.is_empty() {
            vec![0x55]
        } else {
            packet
                .iter()
                .copied()
                .cycle()
                .take((packet.len() * 8).min(4000))
                .collect()
        };
        let stream = (packet.len() % 3) as u16;
        let unordered = packet.len() % 5 == 1;
        let server_id = self.server.ids().next();
        if let Some(id) = server_id {
            if ctl1 & ctl1::SERVER_SEND != 0 {
                let _ = self.server.send(id, stream, unordered, &payload);
            }
            if ctl1 & ctl1::SERVER_SHUTDOWN != 0 {
                self.server.shutdown(now, id);
            }
            if ctl1 & ctl1::SERVER_ABORT != 0 {
                self.server.abort(id);
            }
        }
        if ctl1 & ctl1::CLIENT_RECONNECT != 0
            && self.client.as_ref().is_some_and(Endpoint::is_empty)
        {
            self.connect();
        }
        if let (Some(c), Some(id)) = (&mut self.client, self.client_id) {
            if ctl1 & ctl1::CLIENT_SEND != 0 {
                let _ = c.send(id, stream, unordered, &payload);
            }
            if ctl1 & ctl1::CLIENT_SHUTDOWN != 0 {
                c.shutdown(now, id);
            }
        }
        self.check();
    }

    /// Runs one step.
    pub fn step(&mut self, s: &Step) {
        self.report.steps += 1;
        self.drop_to_client = s.ctl1 & ctl1::DROP_TO_CLIENT != 0;
        self.app_actions(s.ctl1, &s.packet);
        self.pump();
        let src = usize::from(s.ctl0 & ctl0::SECONDARY);
        let pkt = self.fix_up(src, s.ctl0, s.ctl1, &s.packet);
        if let Ok(p) = Packet::new_checked(&pkt)
            && let Some(Ok(Chunk::CookieEcho(_))) = ChunkIter::new(p.chunk_bytes()).next()
        {
            self.report.injected_cookie_echoes += 1;
        }
        let established = self
            .server
            .ids()
            .any(|id| self.server.state(id) == Some(State::Established));
        self.report.injected_into_established |= established;
        self.deliver_to_server(self.addrs[src], &pkt);
        self.pump();
        let adv = ADVANCE_US[usize::from((s.ctl0 >> ctl0::ADVANCE_SHIFT) & 7)];
        self.advance(Duration::from_micros(adv));
        self.drop_to_client = false;
    }
}

/// Offsets TSN fields in the chunks of packet `p` (see [`ctl0::REBASE`]).
fn rebase_tsns(p: &mut [u8], peer_base: u32, server_base: u32) {
    let mut off = HEADER_LEN;
    while off + 4 <= p.len() {
        let len = usize::from(u16::from_be_bytes([p[off + 2], p[off + 3]]));
        if len < 4 || off + len > p.len() {
            break;
        }
        let base = match p[off] {
            kind::DATA if len >= 16 => Some(peer_base),
            kind::SACK if len >= 16 => Some(server_base.wrapping_sub(1)),
            kind::SHUTDOWN if len >= 8 => Some(server_base.wrapping_sub(1)),
            _ => None,
        };
        if let Some(base) = base {
            let f = &mut p[off + 4..off + 8];
            let v = u32::from_be_bytes([f[0], f[1], f[2], f[3]]).wrapping_add(base);
            f.copy_from_slice(&v.to_be_bytes());
        }
        off += pad4(len);
    }
}

/// Runs a whole input (the fuzz target's body). Panics on any broken property.
pub fn run(data: &[u8]) -> Report {
    let (mode, steps) = decode(data);
    let mut h = Harness::new(mode);
    for s in &steps {
        h.step(s);
    }
    h.report()
}
