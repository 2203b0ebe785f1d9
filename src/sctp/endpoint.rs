//! The endpoint: demultiplexes packets to associations, answers INIT statelessly with a cookie, creates
//! associations from valid COOKIE ECHOes, applies the verification-tag rules (RFC 9260 §8.5) and the
//! out-of-the-blue rules (§8.4), and keeps every association's earliest deadline in one timer wheel.
//!
//! See the [module docs](super) for the drive loop. Associations live in a slab; lookups go by our own
//! verification tag (FxHash: we chose the keys, randomly) and by the peer's transport address (SipHash: the peer
//! chose those).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rand_chacha::ChaCha12Rng;
use rand_core::{Rng, SeedableRng};
use rustc_hash::FxHashMap;
use slab::Slab;

use super::assoc::{Assoc, Collision, Flow, Pools};
use super::chunk::{Chunk, ChunkIter, Init, InitOut, UnknownAction, kind, write_empty};
use super::cookie::{COOKIE_LEN, CookieError, CookieKeys, CookieState};
use super::param::{self, InitParam, TlvIter, UnknownParamAction, cause, ptype};
use super::wire::{self, Header, Packet, Tsn, WireError, Writer};
use super::{
    AssocId, Config, ConnectError, DownReason, Event, Payload, SendError, State, Stats,
    TRANSMIT_BURST, Transmit,
};
use crate::time::Instant;
use crate::wheel::TimerWheel;

/// Everything associations share: configuration, output queues, counters, randomness. Split from the slab
/// so an association can be borrowed mutably alongside it.
pub(crate) struct Shared {
    pub cfg: Config,
    pub pools: Pools,
    pub events: VecDeque<(AssocId, Event)>,
    /// Associations that had refused a message for lack of room and have drained to the low-water mark
    /// (see [`Endpoint::poll_writable`]). Each is queued at most once per refusal.
    pub writable: VecDeque<AssocId>,
    pub stats: Stats,
    pub rng: ChaCha12Rng,
    replies: VecDeque<(SocketAddr, Vec<u8>)>,
    spare: Vec<Vec<u8>>,
}

impl Shared {
    /// Encodes a reply packet now and queues it (bounded: beyond [`Config::max_pending_replies`] it is
    /// dropped and counted).
    pub fn reply(
        &mut self,
        dst: SocketAddr,
        h: Header,
        f: impl FnOnce(&mut Writer<'_>) -> Result<(), WireError>,
    ) {
        if self.replies.len() >= self.cfg.max_pending_replies {
            self.stats.replies_dropped += 1;
            return;
        }
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.resize(self.cfg.max_packet, 0);
        let Ok(mut w) = Writer::new(&mut buf, h) else {
            return;
        };
        if f(&mut w).is_err() {
            self.spare.push(buf);
            return;
        }
        let n = w.finish();
        buf.truncate(n);
        self.replies.push_back((dst, buf));
    }

    fn nonzero_u32(&mut self) -> u32 {
        loop {
            let v = self.rng.next_u32();
            if v != 0 {
                return v;
            }
        }
    }
}

/// A sans-IO SCTP endpoint: one local SCTP port, any number of associations.
pub struct Endpoint {
    sh: Shared,
    keys: CookieKeys,
    assocs: Slab<Assoc>,
    by_tag: FxHashMap<u32, u32>,
    /// (peer UDP address, peer SCTP port, our SCTP port) → slab key.
    by_addr: HashMap<PeerKey, u32>,
    wheel: TimerWheel<u64>,
    ready: VecDeque<u32>,
    /// The association that wrote the last packet, and how many it has written in a row (see
    /// [`TRANSMIT_BURST`]).
    burst: (u32, u32),
    next_generation: u32,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("port", &self.sh.cfg.port)
            .field("associations", &self.assocs.len())
            .finish_non_exhaustive()
    }
}

/// What identifies an association from the outside: the peer's UDP address and SCTP port, and our SCTP port.
#[derive(Copy, Clone, PartialEq, Eq)]
struct PeerKey {
    remote: SocketAddr,
    peer_port: u16,
    local_port: u16,
}

impl PeerKey {
    fn new(remote: SocketAddr, peer_port: u16, local_port: u16) -> Self {
        PeerKey {
            remote,
            peer_port,
            local_port,
        }
    }
}

impl std::hash::Hash for PeerKey {
    // Two writes of fixed width instead of the derived walk through `SocketAddr`'s enums and byte slices: the
    // keyed SipHash this map needs (peers choose these values) costs per write, and this map is hashed on every
    // handshake. IPv4 addresses hash as their IPv6-mapped form; the flow label and scope id are left out (equal
    // keys still hash equal; keys differing only there merely share a bucket).
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let ip = match self.remote.ip() {
            IpAddr::V4(a) => a.to_ipv6_mapped(),
            IpAddr::V6(a) => a,
        };
        state.write_u128(u128::from(ip));
        state.write_u64(
            u64::from(self.remote.port()) << 32
                | u64::from(self.peer_port) << 16
                | u64::from(self.local_port),
        );
    }
}

fn peer_key(a: &Assoc) -> PeerKey {
    PeerKey::new(a.remote, a.peer_port, a.local_port)
}

fn payload_of(key: usize, generation: u32) -> u64 {
    ((key as u64) << 32) | u64::from(generation)
}

impl Endpoint {
    /// Creates an endpoint. `seed` seeds its CSPRNG (verification tags, TSNs, cookie secrets, jitter): use
    /// `getrandom` in programs, a constant in tests.
    pub fn new(cfg: Config, seed: [u8; 32]) -> Self {
        let mut rng = ChaCha12Rng::from_seed(seed);
        let mut secret = [0u8; 16];
        rng.fill_bytes(&mut secret);
        Endpoint {
            sh: Shared {
                cfg,
                pools: Pools::default(),
                events: VecDeque::new(),
                writable: VecDeque::new(),
                stats: Stats::default(),
                rng,
                replies: VecDeque::new(),
                spare: Vec::new(),
            },
            keys: CookieKeys::new(secret, 0),
            assocs: Slab::new(),
            by_tag: FxHashMap::default(),
            by_addr: HashMap::new(),
            wheel: TimerWheel::new(),
            ready: VecDeque::new(),
            burst: (u32::MAX, 0),
            next_generation: 1,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.sh.cfg
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.sh.stats
    }

    /// Number of associations (in any state).
    pub fn len(&self) -> usize {
        self.assocs.len()
    }

    /// Whether there are no associations.
    pub fn is_empty(&self) -> bool {
        self.assocs.is_empty()
    }

    /// Stops accepting associations: from now on INITs are answered with ABORT and new COOKIE ECHOes
    /// dropped, as if [`Config::accept`] were false. For a server that is going away: a client that
    /// reconnected to it now would only lose that association again moments later.
    pub fn stop_accepting(&mut self) {
        self.sh.cfg.accept = false;
    }

    /// Whether any association has data queued or unacknowledged (a walk that stops at the first one).
    pub fn is_sending(&self) -> bool {
        self.assocs.iter().any(|(_, a)| a.is_sending())
    }

    fn get(&self, id: AssocId) -> Option<&Assoc> {
        self.assocs
            .get(id.index as usize)
            .filter(|a| a.generation == id.generation)
    }

    fn id_of(&self, key: usize) -> AssocId {
        AssocId {
            index: key as u32,
            generation: self.assocs[key].generation,
        }
    }

    /// The state of an association, or `None` if the id is stale.
    pub fn state(&self, id: AssocId) -> Option<State> {
        self.get(id).map(Assoc::state)
    }

    /// The peer's UDP address and SCTP port.
    pub fn remote(&self, id: AssocId) -> Option<(SocketAddr, u16)> {
        self.get(id).map(|a| (a.remote, a.peer_port))
    }

    /// The association's current RTO.
    pub fn rto(&self, id: AssocId) -> Option<std::time::Duration> {
        self.get(id).map(Assoc::rto)
    }

    /// Negotiated outbound streams (0 until established).
    pub fn out_streams(&self, id: AssocId) -> Option<u16> {
        self.get(id).map(Assoc::out_streams)
    }

    /// Heap bytes an association holds beyond its slab entry.
    pub fn heap_bytes(&self, id: AssocId) -> Option<usize> {
        self.get(id).map(Assoc::heap_bytes)
    }

    /// Size of one association's struct (its slab entry, without heap).
    pub const fn assoc_size() -> usize {
        std::mem::size_of::<Assoc>()
    }

    /// Every association's id.
    pub fn ids(&self) -> impl Iterator<Item = AssocId> + '_ {
        self.assocs.iter().map(|(k, a)| AssocId {
            index: k as u32,
            generation: a.generation,
        })
    }

    fn unique_tag(&mut self) -> u32 {
        loop {
            let t = self.sh.nonzero_u32();
            if !self.by_tag.contains_key(&t) {
                return t;
            }
        }
    }

    fn insert(&mut self, a: Assoc) -> usize {
        let (tag, addr) = (a.local_tag, peer_key(&a));
        let key = self.assocs.insert(a);
        self.by_tag.insert(tag, key as u32);
        self.by_addr.insert(addr, key as u32);
        key
    }

    fn next_gen(&mut self) -> u32 {
        let g = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        g
    }

    /// Starts an association from our port ([`Config::port`]) to `peer_port` at the UDP address `remote`
    /// (sends INIT).
    pub fn connect(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        peer_port: u16,
    ) -> Result<AssocId, ConnectError> {
        self.connect_from(now, self.sh.cfg.port, remote, peer_port)
    }

    /// Like [`Endpoint::connect`], from another local SCTP port: one endpoint can then hold many associations
    /// to the same peer (a load generator simulating many clients does). Packets to such a port are matched
    /// to its associations; only [`Config::port`] accepts new ones.
    pub fn connect_from(
        &mut self,
        now: Instant,
        local_port: u16,
        remote: SocketAddr,
        peer_port: u16,
    ) -> Result<AssocId, ConnectError> {
        if peer_port == 0 || local_port == 0 {
            return Err(ConnectError::InvalidPort);
        }
        if self
            .by_addr
            .contains_key(&PeerKey::new(remote, peer_port, local_port))
        {
            return Err(ConnectError::Exists);
        }
        if self.assocs.len() >= self.sh.cfg.max_associations {
            return Err(ConnectError::TooMany);
        }
        let tag = self.unique_tag();
        let itsn = Tsn(self.sh.rng.next_u32());
        let generation = self.next_gen();
        let a = Assoc::connect(
            remote,
            (peer_port, local_port),
            generation,
            tag,
            itsn,
            &self.sh.cfg,
            now,
        );
        let key = self.insert(a);
        log::debug!("assoc #{key} {remote}: connecting (COOKIE-WAIT)");
        self.touch(key, now);
        Ok(self.id_of(key))
    }

    /// Queues a message on `stream`. Messages on one stream are delivered in order unless `unordered`.
    pub fn send(
        &mut self,
        id: AssocId,
        stream: u16,
        unordered: bool,
        data: &[u8],
    ) -> Result<(), SendError> {
        self.send_owned(id, stream, unordered, 0, data.to_vec())
    }

    /// Like [`Endpoint::send`], setting the payload protocol identifier and taking the bytes without a copy:
    /// an owned `Vec`, or a [`Payload::Shared`] buffer that many associations queue at once (each keeps a
    /// reference until the peer acknowledges it).
    pub fn send_owned(
        &mut self,
        id: AssocId,
        stream: u16,
        unordered: bool,
        ppid: u32,
        data: impl Into<Payload>,
    ) -> Result<(), SendError> {
        self.try_send(id, stream, unordered, ppid, data.into())
            .map_err(|(e, _)| e)
    }

    /// Like [`Endpoint::send_owned`], for a sender that paces itself by flow control: a refused message is
    /// handed back with the reason, and one refused for lack of room ([`SendError::BufferFull`]) also asks
    /// for the association to be reported by [`Endpoint::poll_writable`] once its send buffer has drained to
    /// half (at once if it already has, for a message larger than half the buffer). The sender keeps the
    /// message, and what it would send after it, until then. A message of at most half the buffer is
    /// therefore always taken in the end, unless the association goes down first (reported as usual).
    pub fn try_send(
        &mut self,
        id: AssocId,
        stream: u16,
        unordered: bool,
        ppid: u32,
        data: Payload,
    ) -> Result<(), (SendError, Payload)> {
        let Some(key) = self.key_of(id) else {
            return Err((SendError::UnknownAssoc, data));
        };
        let a = &mut self.assocs[key];
        if let Err((e, data)) = a.send(stream, unordered, ppid, data, &mut self.sh) {
            if e == SendError::BufferFull {
                a.want_room(&mut self.sh, id);
            }
            return Err((e, data));
        }
        self.sh.stats.messages_out += 1;
        self.enqueue(key);
        Ok(())
    }

    /// Whether `id`'s send buffer can take a message of `len` bytes now. If not, the association is reported
    /// by [`Endpoint::poll_writable`] once it has room again, as after a refused [`Endpoint::try_send`]: a
    /// sender that must transform a message before queueing it (seal it, consuming a nonce) asks first and
    /// transforms only what will be taken.
    pub fn reserve(&mut self, id: AssocId, len: usize) -> bool {
        let Some(key) = self.key_of(id) else {
            return false;
        };
        let a = &mut self.assocs[key];
        if a.queued_bytes() + len <= self.sh.cfg.send_buffer {
            return true;
        }
        a.want_room(&mut self.sh, id);
        false
    }

    /// Bytes of user data the association's send buffer ([`Config::send_buffer`]) can still take now, or
    /// `None` for an unknown association.
    pub fn send_room(&self, id: AssocId) -> Option<usize> {
        self.get(id)
            .map(|a| self.sh.cfg.send_buffer.saturating_sub(a.queued_bytes()))
    }

    /// The next association that refused a message for lack of room ([`Endpoint::try_send`]) and has room
    /// again: its queue has drained to half the send buffer. Kept apart from [`Endpoint::poll_event`]
    /// because only a sender that paces itself asks for it; the id may have gone down since (its `Down`
    /// event says so).
    pub fn poll_writable(&mut self) -> Option<AssocId> {
        self.sh.writable.pop_front()
    }

    /// The slab key of a live association.
    fn key_of(&self, id: AssocId) -> Option<usize> {
        self.get(id).map(|_| id.index as usize)
    }

    /// Starts a graceful shutdown: queued data is delivered first (RFC 9260 §9.2).
    pub fn shutdown(&mut self, now: Instant, id: AssocId) {
        let Some(key) = self.key_of(id) else {
            return;
        };
        match self.assocs[key].shutdown(&mut self.sh, id, now) {
            Some(r) => self.close(key, r),
            None => self.touch(key, now),
        }
    }

    /// Aborts an association at once (sends ABORT, discards queued data).
    pub fn abort(&mut self, id: AssocId) {
        let Some(key) = self.key_of(id) else {
            return;
        };
        self.assocs[key].abort(&mut self.sh);
        self.close(key, DownReason::LocalAbort);
    }

    /// Sends a heartbeat on `id` now (see [`State`]s where that applies), to learn quickly whether its peer is
    /// still there.
    pub fn probe(&mut self, now: Instant, id: AssocId) {
        if let Some(key) = self.key_of(id) {
            self.assocs[key].probe();
            self.touch(key, now);
        }
    }

    /// Tells the endpoint its caller was stalled (stopped, suspended, starved) until `now`: no association
    /// is declared lost for heartbeats or acknowledgements it could not have seen; each is probed again,
    /// spread over `spread`, and judged on that.
    pub fn handle_stall(&mut self, now: Instant, spread: Duration) {
        let keys: Vec<usize> = self.assocs.iter().map(|(k, _)| k).collect();
        for k in keys {
            self.assocs[k].forgive_stall(&mut self.sh, now, spread);
            self.touch(k, now);
        }
    }

    fn close(&mut self, key: usize, reason: DownReason) {
        let a = self.assocs.remove(key);
        let id = AssocId {
            index: key as u32,
            generation: a.generation,
        };
        self.by_tag.remove(&a.local_tag);
        self.by_addr.remove(&peer_key(&a));
        if let Some((t, _)) = a.wheel {
            self.wheel.cancel(t);
        }
        log::debug!(
            "assoc {id} {}: {} => CLOSED ({reason})",
            a.remote,
            a.state()
        );
        self.sh.stats.assocs_down += 1;
        if reason == DownReason::Lost {
            self.sh.stats.assocs_lost += 1;
        }
        self.sh.events.push_back((id, Event::Down(reason)));
    }

    fn enqueue(&mut self, key: usize) {
        let a = &mut self.assocs[key];
        if !a.is_queued() && a.wants_transmit(&self.sh.cfg) {
            a.set_queued(true);
            self.ready.push_back(key as u32);
        }
    }

    /// Like `enqueue`, but at the front: the association goes on with its burst.
    fn enqueue_front(&mut self, key: usize) {
        let a = &mut self.assocs[key];
        if !a.is_queued() && a.wants_transmit(&self.sh.cfg) {
            a.set_queued(true);
            self.ready.push_front(key as u32);
        }
    }

    /// Re-files an association's earliest deadline in the wheel and queues it for transmission if needed.
    #[inline(always)]
    fn touch(&mut self, key: usize, now: Instant) {
        self.sync_timer(key, now);
        self.enqueue(key);
    }

    /// Re-files an association's earliest deadline in the wheel.
    #[inline(always)]
    fn sync_timer(&mut self, key: usize, now: Instant) {
        let a = &mut self.assocs[key];
        let want = a.timers.earliest(now);
        if want != a.wheel.map(|w| w.1) {
            if let Some((t, _)) = a.wheel.take() {
                self.wheel.cancel(t);
            }
            if let Some(at) = want {
                let t = self.wheel.arm(at, payload_of(key, a.generation));
                a.wheel = Some((t, at));
            }
        }
    }

    /// The next datagram to send, written into `buf` (at least [`Config::max_packet`] bytes).
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        while let Some((dst, pkt)) = self.sh.replies.pop_front() {
            let fits = pkt.len() <= buf.len();
            if fits {
                buf[..pkt.len()].copy_from_slice(&pkt);
            }
            let len = pkt.len();
            if self.sh.spare.len() < 64 {
                self.sh.spare.push(pkt);
            }
            if fits {
                self.sh.stats.packets_out += 1;
                return Some(Transmit { dst, len, flow: 0 });
            }
        }
        while let Some(key) = self.ready.pop_front() {
            let key = key as usize;
            let Some(a) = self.assocs.get_mut(key) else {
                continue;
            };
            let written = a.write_packet(&mut self.sh, now, buf);
            let dst = a.remote;
            a.set_queued(false);
            self.sync_timer(key, now);
            if let Some(len) = written {
                // Round robin, in bursts: an association with more to send stays at the front until it has
                // written TRANSMIT_BURST packets in a row, then goes to the back.
                let k = key as u32;
                self.burst = match self.burst {
                    (b, n) if b == k => (k, n + 1),
                    _ => (k, 1),
                };
                if self.burst.1 < TRANSMIT_BURST {
                    self.enqueue_front(key);
                } else {
                    self.burst = (u32::MAX, 0);
                    self.enqueue(key);
                }
                self.sh.stats.packets_out += 1;
                return Some(Transmit {
                    dst,
                    len,
                    flow: k + 1,
                });
            }
            // Nothing written: it leaves the queue until new input or a timer gives it something to send,
            // even if its windows looked open, so a disagreement can never spin this loop.
        }
        self.burst = (u32::MAX, 0);
        None
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<(AssocId, Event)> {
        self.sh.events.pop_front()
    }

    /// When [`Endpoint::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.wheel.next_deadline()
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((_, payload)) = self.wheel.poll_expired(now) {
            let key = (payload >> 32) as usize;
            let generation = payload as u32;
            let Some(a) = self
                .assocs
                .get_mut(key)
                .filter(|a| a.generation == generation)
            else {
                continue;
            };
            a.wheel = None;
            let id = AssocId {
                index: key as u32,
                generation,
            };
            match a.handle_timeout(&mut self.sh, id, now) {
                Some(r) => self.close(key, r),
                None => self.touch(key, now),
            }
        }
    }

    /// Reports that `dst` answered a datagram of ours with ICMP port unreachable (RFC 6951 §5.5 treats that
    /// like an ABORT). `payload` is the start of the datagram we had sent, to check its verification tag.
    pub fn handle_unreachable(&mut self, dst: SocketAddr, payload: &[u8]) {
        if payload.len() < 8 {
            return;
        }
        // The quoted packet is ours: source port is our port, destination port the peer's.
        let local_port = u16::from_be_bytes([payload[0], payload[1]]);
        let port = u16::from_be_bytes([payload[2], payload[3]]);
        let vtag = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
        let Some(&key) = self.by_addr.get(&PeerKey::new(dst, port, local_port)) else {
            return;
        };
        let key = key as usize;
        let a = &self.assocs[key];
        // RFC 9260 §10 ICMP5/6: the tag must be the peer's, or 0 on an INIT carrying our initiate tag.
        let init_ok = vtag == 0
            && payload.len() >= 20
            && payload[12] == kind::INIT
            && u32::from_be_bytes([payload[16], payload[17], payload[18], payload[19]])
                == a.local_tag;
        if vtag == a.peer_tag && vtag != 0 || init_ok {
            self.sh.stats.icmp_unreachable += 1;
            self.close(key, DownReason::Unreachable);
        }
    }

    fn maybe_rotate(&mut self, now: Instant) {
        let rot = self.sh.cfg.cookie_rotation.as_millis() as u64;
        if self.keys.age_ms(now.as_millis()) >= rot.max(1) {
            let mut secret = [0u8; 16];
            self.sh.rng.fill_bytes(&mut secret);
            self.keys.rotate(secret, now.as_millis());
        }
    }

    /// Processes one datagram received from `from` (the peer's UDP address).
    pub fn handle(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.sh.stats.packets_in += 1;
        let p = match Packet::new_checked(datagram) {
            Ok(p) => p,
            Err(_) => {
                self.sh.stats.malformed += 1;
                return;
            }
        };
        let vtag = p.vtag();
        // Almost every packet carries our tag and comes from where it should: one FxHash lookup, and then the
        // association already knows the CRC of that header. The peer-keyed (SipHash) address map is for the
        // rest: reflected tags, and a peer whose UDP port changed.
        let by_tag = self.by_tag.get(&vtag).map(|&k| k as usize).filter(|&k| {
            let a = &self.assocs[k];
            a.remote == from && a.peer_port == p.src_port() && a.local_port == p.dst_port()
        });
        let checksum_ok = match by_tag {
            Some(k) => {
                let head_crc = self.assocs[k].rx_head_crc;
                debug_assert_eq!(head_crc, wire::header_crc(p.src_port(), p.dst_port(), vtag));
                p.verify_checksum_from(head_crc)
            }
            None => p.verify_checksum(),
        };
        if !checksum_ok {
            self.sh.stats.bad_checksum += 1;
            return;
        }
        let mut chunks = ChunkIter::new(p.chunk_bytes());
        let first = match chunks.next() {
            Some(Ok(c)) => c,
            _ => {
                self.sh.stats.malformed += 1;
                return;
            }
        };
        match first {
            Chunk::Init(ref i) => return self.on_init(now, from, &p, i),
            Chunk::CookieEcho(c) => return self.on_cookie_echo(now, from, &p, c),
            _ => {}
        }
        let key = match by_tag.or_else(|| {
            self.by_addr
                .get(&PeerKey::new(from, p.src_port(), p.dst_port()))
                .map(|&k| k as usize)
        }) {
            Some(k) => k,
            None => match self.by_tag.get(&vtag) {
                // RFC 6951 §5.4: a valid tag from the same IP and SCTP port on a new UDP port means the peer's
                // encapsulation port changed (e.g. a NAT rebinding): follow it.
                Some(&k)
                    if self.assocs[k as usize].remote.ip() == from.ip()
                        && self.assocs[k as usize].peer_port == p.src_port()
                        && self.assocs[k as usize].local_port == p.dst_port() =>
                {
                    let k = k as usize;
                    let a = &mut self.assocs[k];
                    let old = peer_key(a);
                    a.remote = from;
                    let new = peer_key(a);
                    self.by_addr.remove(&old);
                    self.by_addr.insert(new, k as u32);
                    k
                }
                _ => return self.out_of_the_blue(from, &p),
            },
        };
        let a = &self.assocs[key];
        if vtag != a.local_tag {
            // Only ABORT and SHUTDOWN COMPLETE may carry the peer's tag, reflected (§8.5.1 B, C); a SHUTDOWN
            // ACK during the handshake is treated as out of the blue (§8.5.1 E).
            let reflected = ChunkIter::new(p.chunk_bytes()).any(|c| {
                matches!(
                    c,
                    Ok(Chunk::Abort {
                        reflected: true,
                        ..
                    }) | Ok(Chunk::ShutdownComplete { reflected: true })
                )
            });
            let handshake = matches!(a.state(), State::CookieWait | State::CookieEchoed);
            if matches!(first, Chunk::ShutdownAck) && handshake {
                return self.out_of_the_blue(from, &p);
            }
            if !(reflected && vtag == a.peer_tag && a.peer_tag != 0) {
                self.sh.stats.bad_vtag += 1;
                return;
            }
            // The peer's tag admits the reflected chunks and nothing bundled with them (§8.5).
            return self.process_chunks(now, key, &p, Some(first), chunks, true);
        }
        self.process_chunks(now, key, &p, Some(first), chunks, false);
    }

    /// Runs chunks of `p` through association `key`: `first` (already parsed by the caller, if it is to be
    /// run), then the rest of `chunks`. With `reflected_only`, every chunk but ABORT and SHUTDOWN COMPLETE with
    /// the T bit is ignored.
    fn process_chunks<'p>(
        &mut self,
        now: Instant,
        key: usize,
        p: &Packet<'p>,
        first: Option<Chunk<'p>>,
        chunks: ChunkIter<'p>,
        reflected_only: bool,
    ) {
        let id = self.id_of(key);
        let vtag = p.vtag();
        for c in first.map(Ok).into_iter().chain(chunks) {
            let c = match c {
                Ok(c) => c,
                Err(_) => {
                    self.sh.stats.malformed += 1;
                    break;
                }
            };
            let t_bit = matches!(
                c,
                Chunk::Abort {
                    reflected: true,
                    ..
                } | Chunk::ShutdownComplete { reflected: true }
            );
            if reflected_only && !t_bit {
                continue;
            }
            let a = &mut self.assocs[key];
            let flow = match c {
                // INIT and COOKIE ECHO are only valid first in a packet; INIT ACK and INIT must be alone.
                Chunk::Init(_) | Chunk::CookieEcho(_) => Flow::Stop,
                Chunk::Unknown { kind, raw } => {
                    let action = UnknownAction::of(kind);
                    if action.reports() {
                        let h = Header {
                            src_port: a.local_port,
                            dst_port: a.peer_port,
                            vtag: a.peer_tag,
                        };
                        let dst = a.remote;
                        self.sh.reply(dst, h, |w| {
                            let m = w.begin_chunk(kind::ERROR, 0)?;
                            let room = w.remaining().saturating_sub(8);
                            param::write_tlv(
                                w,
                                cause::UNRECOGNIZED_CHUNK,
                                &raw[..raw.len().min(room)],
                            )?;
                            w.end_chunk(m)
                        });
                    }
                    if action.skips() {
                        Flow::Continue
                    } else {
                        Flow::Stop
                    }
                }
                ref c => a.handle_chunk(&mut self.sh, id, now, c, vtag),
            };
            match flow {
                Flow::Continue => {}
                Flow::Stop => break,
                Flow::Close(r) => {
                    self.close(key, r);
                    return;
                }
            }
        }
        self.assocs[key].after_packet(&mut self.sh, now);
        self.touch(key, now);
    }

    /// RFC 9260 §8.4.
    fn out_of_the_blue(&mut self, from: SocketAddr, p: &Packet<'_>) {
        self.sh.stats.ootb += 1;
        let mut shutdown_ack = false;
        for c in ChunkIter::new(p.chunk_bytes()) {
            match c {
                Err(_) => return,
                Ok(Chunk::Abort { .. })
                | Ok(Chunk::ShutdownComplete { .. })
                | Ok(Chunk::CookieAck) => return,
                Ok(Chunk::Error(causes)) => {
                    if TlvIter::new(causes)
                        .any(|t| matches!(t, Ok(t) if t.kind == cause::STALE_COOKIE))
                    {
                        return;
                    }
                }
                Ok(Chunk::ShutdownAck) => shutdown_ack = true,
                Ok(_) => {}
            }
        }
        // Answer from the port the packet was addressed to, so its sender can match the reply.
        let h = Header {
            src_port: p.dst_port(),
            dst_port: p.src_port(),
            vtag: p.vtag(),
        };
        let reply = if shutdown_ack {
            kind::SHUTDOWN_COMPLETE
        } else {
            kind::ABORT
        };
        self.sh
            .reply(from, h, |w| write_empty(w, reply, super::chunk::FLAG_T));
    }

    /// An ABORT answering packet `p` from `from`, whose sender we have no association with (vtag = its
    /// initiate tag).
    fn abort_init(&mut self, from: SocketAddr, p: &Packet<'_>, initiate_tag: u32, code: u16) {
        let h = Header {
            src_port: p.dst_port(),
            dst_port: p.src_port(),
            vtag: initiate_tag,
        };
        self.sh.reply(from, h, |w| {
            let m = w.begin_chunk(kind::ABORT, 0)?;
            if code != 0 {
                let c = w.begin_tlv(code)?;
                w.end_tlv(c)?;
            }
            w.end_chunk(m)
        });
    }

    fn on_init(&mut self, now: Instant, from: SocketAddr, p: &Packet<'_>, init: &Init<'_>) {
        self.sh.stats.inits += 1;
        // §8.5.1 A: vtag 0, and INIT alone in its packet.
        if p.vtag() != 0 || ChunkIter::new(p.chunk_bytes()).nth(1).is_some() {
            self.sh.stats.bad_vtag += 1;
            return;
        }
        // §3.3.2: a zero initiate tag is silently discarded.
        if init.initiate_tag == 0 {
            self.sh.stats.malformed += 1;
            return;
        }
        let src_port = p.src_port();
        if init.out_streams == 0 || init.in_streams == 0 {
            self.abort_init(from, p, init.initiate_tag, cause::INVALID_PARAM);
            return;
        }
        let mut unrecognized: [&[u8]; 8] = [&[]; 8];
        let mut n_unrec = 0;
        let mut preserve_ms: u32 = 0;
        for t in TlvIter::new(init.params) {
            let Ok(t) = t else {
                self.sh.stats.malformed += 1;
                return;
            };
            match InitParam::parse(t) {
                Err(_) => {
                    self.sh.stats.malformed += 1;
                    return;
                }
                Ok(InitParam::HostName) => {
                    self.abort_init(from, p, init.initiate_tag, cause::UNRESOLVABLE_ADDRESS);
                    return;
                }
                Ok(InitParam::CookiePreservative(ms)) => preserve_ms = ms,
                Ok(InitParam::SupportedAddrTypes(list)) => {
                    let ours = match from.ip() {
                        IpAddr::V4(_) => ptype::IPV4,
                        IpAddr::V6(_) => ptype::IPV6,
                    };
                    if !list
                        .chunks_exact(2)
                        .any(|c| u16::from_be_bytes([c[0], c[1]]) == ours)
                    {
                        self.abort_init(from, p, init.initiate_tag, cause::UNRESOLVABLE_ADDRESS);
                        return;
                    }
                }
                Ok(InitParam::Unknown(t)) => {
                    let action = UnknownParamAction::of(t.kind);
                    if action.reports() && n_unrec < unrecognized.len() {
                        unrecognized[n_unrec] = t.raw;
                        n_unrec += 1;
                    }
                    if !action.skips() {
                        break;
                    }
                }
                // Addresses: over UDP encapsulation the association is single-homed to the address the
                // packets come from, so listed addresses are ignored.
                Ok(_) => {}
            }
        }
        let cfg_streams = self.sh.cfg.streams;
        let (local_tag, local_tsn, tie) =
            match self
                .by_addr
                .get(&PeerKey::new(from, src_port, p.dst_port()))
            {
                Some(&k) => {
                    let k = k as usize;
                    match self.assocs[k].init_collision() {
                        None => {
                            self.touch(k, now);
                            return;
                        }
                        Some(Collision::Reuse {
                            local_tag,
                            local_tsn,
                            tie,
                        }) => (local_tag, local_tsn, tie),
                        Some(Collision::Fresh { tie }) => {
                            let tag = self.unique_tag();
                            (tag, Tsn(self.sh.rng.next_u32()), tie)
                        }
                    }
                }
                None => {
                    if !self.sh.cfg.accept || p.dst_port() != self.sh.cfg.port {
                        self.abort_init(from, p, init.initiate_tag, 0);
                        return;
                    }
                    (self.unique_tag(), Tsn(self.sh.rng.next_u32()), (0, 0))
                }
            };
        self.maybe_rotate(now);
        let life = self.sh.cfg.cookie_life.as_millis() as u32;
        // Honour a cookie preservative up to one second (§5.2.6 advises no more).
        let life = life.saturating_add(preserve_ms.min(1000));
        let state = CookieState {
            peer_port: src_port,
            created_ms: now.as_millis() as u32,
            life_ms: life,
            local_tag,
            peer_tag: init.initiate_tag,
            local_tsn,
            peer_tsn: init.initial_tsn,
            peer_rwnd: init.a_rwnd,
            out_streams: cfg_streams.min(init.in_streams),
            in_streams: cfg_streams.min(init.out_streams),
            local_tie: tie.0,
            peer_tie: tie.1,
        };
        let cookie = self.keys.seal(&state, from);
        let out = InitOut {
            initiate_tag: local_tag,
            a_rwnd: self.sh.cfg.rwnd,
            out_streams: cfg_streams,
            in_streams: cfg_streams,
            initial_tsn: local_tsn,
        };
        let h = Header {
            src_port: p.dst_port(),
            dst_port: src_port,
            vtag: init.initiate_tag,
        };
        let unrec = &unrecognized[..n_unrec];
        self.sh.reply(from, h, |w| {
            let m = super::chunk::begin_init(w, kind::INIT_ACK, &out)?;
            param::write_tlv(w, ptype::STATE_COOKIE, &cookie)?;
            for raw in unrec {
                // Reports that do not fit are left out; the association does not depend on them.
                let mark = w.mark();
                if param::write_tlv(w, ptype::UNRECOGNIZED, raw).is_err() {
                    w.rewind(mark);
                }
            }
            w.end_chunk(m)
        });
        debug_assert_eq!(cookie.len(), COOKIE_LEN);
    }

    fn on_cookie_echo(&mut self, now: Instant, from: SocketAddr, p: &Packet<'_>, cookie: &[u8]) {
        let src_port = p.src_port();
        let existing = self
            .by_addr
            .get(&PeerKey::new(from, src_port, p.dst_port()))
            .map(|&k| k as usize);
        let s = match self.keys.open(cookie, from, now.as_millis()) {
            Ok(s) => s,
            Err(CookieError::Invalid) => {
                self.sh.stats.bad_cookies += 1;
                return;
            }
            Err(CookieError::Stale(s, over_us)) => {
                // §5.2.4 (case E): a stale cookie whose tags match the existing association is still good.
                let matches = existing.is_some_and(|k| {
                    let a = &self.assocs[k];
                    a.local_tag == s.local_tag && a.peer_tag == s.peer_tag
                });
                if !matches {
                    self.sh.stats.stale_cookies += 1;
                    let h = Header {
                        src_port: p.dst_port(),
                        dst_port: src_port,
                        vtag: s.peer_tag,
                    };
                    self.sh.reply(from, h, |w| {
                        let m = w.begin_chunk(kind::ERROR, 0)?;
                        param::write_tlv(w, cause::STALE_COOKIE, &over_us.to_be_bytes())?;
                        w.end_chunk(m)
                    });
                    return;
                }
                s
            }
        };
        if p.vtag() != s.local_tag || s.peer_port != src_port {
            self.sh.stats.bad_vtag += 1;
            return;
        }
        let key = match existing {
            // Cookies are only issued for INITs to our listening port (`on_init`); anything else is forged.
            None if p.dst_port() != self.sh.cfg.port || !self.sh.cfg.accept => {
                self.sh.stats.bad_cookies += 1;
                return;
            }
            None => {
                if self.assocs.len() >= self.sh.cfg.max_associations
                    || self.by_tag.contains_key(&s.local_tag)
                {
                    self.abort_init(from, p, s.peer_tag, cause::OUT_OF_RESOURCE);
                    return;
                }
                let generation = self.next_gen();
                let key = self.assocs.vacant_key();
                let id = AssocId {
                    index: key as u32,
                    generation,
                };
                let a = Assoc::accept(from, p.dst_port(), &s, generation, &mut self.sh, id, now);
                let k = self.insert(a);
                debug_assert_eq!(k, key);
                log::debug!("assoc {id} {from}: accepted (ESTABLISHED)");
                k
            }
            Some(k) => {
                let id = self.id_of(k);
                let a = &mut self.assocs[k];
                let (l, pt) = (a.local_tag, a.peer_tag);
                let (l2, p2) = (s.local_tag, s.peer_tag);
                if l != l2 && pt != p2 && s.local_tie == l && s.peer_tie == pt {
                    // Action A: the peer restarted.
                    if a.state() == State::ShutdownAckSent {
                        a.refuse_restart_while_shutting_down(&mut self.sh);
                        self.touch(k, now);
                        return;
                    }
                    if self.by_tag.contains_key(&l2) {
                        return;
                    }
                    log::debug!("assoc {id} {from}: peer restarted");
                    self.by_tag.remove(&l);
                    self.by_tag.insert(l2, k as u32);
                    self.assocs[k].restart(&s, &mut self.sh, id, now);
                } else if l == l2 {
                    // Action B (tags crossed) or D (both match): settle on the cookie's peer tag.
                    a.cookie_matches(&s, &mut self.sh, id, now);
                } else {
                    // Action C (a late cookie) and anything else: silently discarded.
                    return;
                }
                k
            }
        };
        let mut chunks = ChunkIter::new(p.chunk_bytes());
        chunks.next();
        self.process_chunks(now, key, p, None, chunks, false);
    }

    /// Checks the endpoint's indexes against its associations and panics on any mismatch: for tests and
    /// fuzzers (it walks every association).
    pub fn check_invariants(&self) {
        for (k, a) in self.assocs.iter() {
            assert_eq!(
                self.by_tag.get(&a.local_tag),
                Some(&(k as u32)),
                "tag index"
            );
            assert_eq!(
                self.by_addr.get(&peer_key(a)),
                Some(&(k as u32)),
                "address index"
            );
        }
        assert_eq!(self.by_tag.len(), self.assocs.len());
        assert_eq!(self.by_addr.len(), self.assocs.len());
    }
}
