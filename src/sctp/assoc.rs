//! One association's state machine (RFC 9260 §4): handshake from the initiating side, data transfer,
//! heartbeats, shutdown and abort. The endpoint ([`super::endpoint`]) owns associations in a slab, routes
//! packets to them, and handles what needs endpoint-wide state (INIT, COOKIE ECHO, out-of-the-blue packets).
//!
//! An idle association holds no heap memory: its send and receive queues ([`super::send`], [`super::recv`])
//! are boxed and exist only while data is in flight, and handshake-only data lives inside the
//! `CookieEchoed` phase. `Assoc` is checked at compile time to stay within 256 bytes.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use rand_core::Rng;

use super::chunk::{
    self, Chunk, Data, Init, InitOut, Sack, kind, write_empty, write_raw, write_sack,
    write_shutdown,
};
use super::cookie::CookieState;
use super::endpoint::Shared;
use super::param::{self, InitParam, TlvIter, UnknownParamAction, cause, ptype};
use super::recv::{self, RecvQueue, Verdict};
use super::send::{Cc, SendQueue};
use super::timer::{Rto, Timer, Timers};
use super::wire::{self, HEADER_LEN, Header, Tsn, Writer, be32};
use super::{AssocId, Config, DownReason, Event, Payload, SendError};
use crate::time::Instant;

/// The association states of RFC 9260 §4 (CLOSED is the absence of an association).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// INIT sent, waiting for INIT ACK.
    CookieWait,
    /// COOKIE ECHO sent, waiting for COOKIE ACK.
    CookieEchoed,
    /// Data flows both ways.
    Established,
    /// Shutdown requested locally; waiting for outstanding data to be acknowledged.
    ShutdownPending,
    /// SHUTDOWN sent.
    ShutdownSent,
    /// SHUTDOWN received; finishing our outstanding data.
    ShutdownReceived,
    /// SHUTDOWN ACK sent.
    ShutdownAckSent,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::CookieWait => "COOKIE-WAIT",
            State::CookieEchoed => "COOKIE-ECHOED",
            State::Established => "ESTABLISHED",
            State::ShutdownPending => "SHUTDOWN-PENDING",
            State::ShutdownSent => "SHUTDOWN-SENT",
            State::ShutdownReceived => "SHUTDOWN-RECEIVED",
            State::ShutdownAckSent => "SHUTDOWN-ACK-SENT",
        })
    }
}

/// Handshake data kept only while COOKIE ECHO may need retransmitting.
struct Echoed {
    cookie: Box<[u8]>,
    /// Error causes (unrecognized INIT ACK parameters) to bundle with COOKIE ECHO (§3.2.2).
    report: Box<[u8]>,
    sent: Option<Instant>,
}

/// The state with the data that only that state needs.
enum Phase {
    CookieWait {
        /// Cookie life-span increment to ask for after a stale cookie (§5.2.6), in ms.
        preserve_ms: u32,
    },
    CookieEchoed(Box<Echoed>),
    Established,
    ShutdownPending,
    ShutdownSent,
    ShutdownReceived,
    ShutdownAckSent,
}

impl Phase {
    fn state(&self) -> State {
        match self {
            Phase::CookieWait { .. } => State::CookieWait,
            Phase::CookieEchoed(_) => State::CookieEchoed,
            Phase::Established => State::Established,
            Phase::ShutdownPending => State::ShutdownPending,
            Phase::ShutdownSent => State::ShutdownSent,
            Phase::ShutdownReceived => State::ShutdownReceived,
            Phase::ShutdownAckSent => State::ShutdownAckSent,
        }
    }
}

/// Pending output and small state, as bits.
mod flag {
    pub const SEND_INIT: u16 = 1 << 0;
    pub const SEND_COOKIE_ECHO: u16 = 1 << 1;
    pub const SEND_COOKIE_ACK: u16 = 1 << 2;
    pub const SEND_SACK: u16 = 1 << 3;
    pub const SEND_HEARTBEAT: u16 = 1 << 4;
    pub const SEND_SHUTDOWN: u16 = 1 << 5;
    pub const SEND_SHUTDOWN_ACK: u16 = 1 << 6;
    /// A heartbeat is out and unanswered.
    pub const HB_OUTSTANDING: u16 = 1 << 7;
    /// In the endpoint's transmit queue.
    pub const QUEUED: u16 = 1 << 8;
    /// `Event::Up` was reported.
    pub const UP: u16 = 1 << 9;
    /// DATA arrived and its SACK is being delayed.
    pub const SACK_OWED: u16 = 1 << 10;
    /// The packet being processed carried DATA.
    pub const DATA_IN_PACKET: u16 = 1 << 11;
    /// The packet being processed calls for an immediate SACK (duplicate, gap, I bit).
    pub const SACK_NOW: u16 = 1 << 12;
    /// The user asked for a shutdown before the handshake completed: do it once established.
    pub const SHUTDOWN_REQUESTED: u16 = 1 << 13;
    /// A send was refused for lack of room: report the association writable (`Shared::writable`) once its
    /// queue has drained to the low-water mark.
    pub const WANT_ROOM: u16 = 1 << 14;

    pub const ANY_OUTPUT: u16 = SEND_INIT
        | SEND_COOKIE_ECHO
        | SEND_COOKIE_ACK
        | SEND_SACK
        | SEND_HEARTBEAT
        | SEND_SHUTDOWN
        | SEND_SHUTDOWN_ACK;
}

/// Spare queue boxes shared by an endpoint's associations, so an association that goes idle and busy again
/// (one roster update, one heartbeat-free round) does not allocate and free its queues every time, while idle
/// associations still hold none.
#[derive(Default)]
// The boxes themselves are what is recycled: associations hold `Box`es, so keeping them boxed here makes take
// and put pointer moves instead of an allocation each.
#[allow(clippy::vec_box)]
pub(crate) struct Pools {
    send: Vec<Box<SendQueue>>,
    recv: Vec<Box<RecvQueue>>,
}

impl Pools {
    /// Spares kept at most, per kind.
    const MAX: usize = 64;

    fn take_send(&mut self, cum_acked: Tsn) -> Box<SendQueue> {
        match self.send.pop() {
            Some(mut q) => {
                q.reset(cum_acked);
                q
            }
            None => Box::new(SendQueue::new(cum_acked)),
        }
    }

    /// Keeps an emptied queue; `take_send` resets it when it is used again.
    fn put_send(&mut self, q: Box<SendQueue>) {
        debug_assert!(q.is_empty());
        if self.send.len() < Self::MAX && q.is_small() {
            self.send.push(q);
        }
    }

    fn take_recv(&mut self) -> Box<RecvQueue> {
        self.recv.pop().unwrap_or_default()
    }

    fn put_recv(&mut self, q: Box<RecvQueue>) {
        if self.recv.len() < Self::MAX && q.reusable() {
            self.recv.push(q);
        }
    }
}

/// What the endpoint should do after a chunk was handled.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Go on with the next chunk.
    Continue,
    /// Discard the rest of the packet.
    Stop,
    /// The association ended.
    Close(DownReason),
}

/// One association.
pub(crate) struct Assoc {
    /// The peer's UDP address (RFC 6951), updated if its encapsulation port changes.
    pub remote: SocketAddr,
    pub peer_port: u16,
    /// Our SCTP port for this association (an endpoint may use several, see `Endpoint::connect_from`).
    pub local_port: u16,
    pub generation: u32,
    pub local_tag: u32,
    pub peer_tag: u32,
    /// `wire::header_crc` of the header every packet to us on this association carries (the peer's port, ours,
    /// our tag), so receiving checksums only the chunks. Kept beside `local_tag`, the one of the three that
    /// can change (`adopt_cookie`).
    pub rx_head_crc: u32,
    /// Next TSN we assign.
    next_tsn: Tsn,
    /// Highest TSN of the peer's that we have received in sequence.
    peer_cum: Tsn,
    cc: Cc,
    rto: Rto,
    pub timers: Timers,
    out_streams: u16,
    in_streams: u16,
    /// Consecutive timeouts (T3-rtx, T2, unanswered heartbeats), §8.1.
    errors: u8,
    /// INIT or COOKIE ECHO retransmissions.
    init_retries: u8,
    flags: u16,
    hb_nonce: u32,
    phase: Phase,
    /// Outbound then inbound stream sequence numbers; allocated on first use.
    ssn: Option<Box<[u16]>>,
    send: Option<Box<SendQueue>>,
    recv: Option<Box<RecvQueue>>,
    /// The entry for our earliest deadline in the endpoint's timer wheel.
    pub wheel: Option<(crate::wheel::TimerId, Instant)>,
}

const _: () = assert!(std::mem::size_of::<Assoc>() <= 256);

/// The largest payload one DATA chunk carries in a packet of `max_packet` bytes.
pub(crate) fn fragment_size(cfg: &Config) -> usize {
    (cfg.max_packet - HEADER_LEN - chunk::DATA_HEADER_LEN) & !3
}

fn mtu(cfg: &Config) -> u32 {
    cfg.max_packet as u32
}

impl Assoc {
    fn blank(
        remote: SocketAddr,
        ports: (u16, u16),
        generation: u32,
        local_tag: u32,
        itsn: Tsn,
        cfg: &Config,
    ) -> Self {
        Assoc {
            remote,
            peer_port: ports.0,
            local_port: ports.1,
            generation,
            local_tag,
            peer_tag: 0,
            rx_head_crc: wire::header_crc(ports.0, ports.1, local_tag),
            next_tsn: itsn,
            peer_cum: Tsn(0),
            cc: Cc::new(mtu(cfg), cfg.rwnd),
            rto: Rto::new(&cfg.rto),
            timers: Timers::default(),
            out_streams: 0,
            in_streams: 0,
            errors: 0,
            init_retries: 0,
            flags: 0,
            hb_nonce: 0,
            phase: Phase::CookieWait { preserve_ms: 0 },
            ssn: None,
            send: None,
            recv: None,
            wheel: None,
        }
    }

    /// A new association we initiate: COOKIE-WAIT with an INIT to send (§5.1 A).
    pub fn connect(
        remote: SocketAddr,
        ports: (u16, u16),
        generation: u32,
        local_tag: u32,
        itsn: Tsn,
        cfg: &Config,
        now: Instant,
    ) -> Self {
        let mut a = Self::blank(remote, ports, generation, local_tag, itsn, cfg);
        a.flags |= flag::SEND_INIT;
        a.timers.set(Timer::T1, now + a.rto.rto());
        a
    }

    /// An association created from a valid COOKIE ECHO (§5.1 D): ESTABLISHED, COOKIE ACK to send.
    pub fn accept(
        remote: SocketAddr,
        local_port: u16,
        s: &CookieState,
        generation: u32,
        sh: &mut Shared,
        id: AssocId,
        now: Instant,
    ) -> Self {
        let mut a = Self::blank(
            remote,
            (s.peer_port, local_port),
            generation,
            s.local_tag,
            s.local_tsn,
            &sh.cfg,
        );
        a.adopt_cookie(s, &sh.cfg);
        a.flags |= flag::SEND_COOKIE_ACK;
        a.become_established(sh, id, now);
        a
    }

    /// The RFC state.
    pub fn state(&self) -> State {
        self.phase.state()
    }

    /// Negotiated outbound streams (0 before the handshake completes).
    pub fn out_streams(&self) -> u16 {
        self.out_streams
    }

    /// The current retransmission timeout.
    pub fn rto(&self) -> Duration {
        self.rto.rto()
    }

    /// Whether we are in the transmit queue; the endpoint sets and clears this.
    pub fn is_queued(&self) -> bool {
        self.flags & flag::QUEUED != 0
    }

    /// Marks whether we are in the transmit queue.
    pub fn set_queued(&mut self, queued: bool) {
        if queued {
            self.flags |= flag::QUEUED;
        } else {
            self.flags &= !flag::QUEUED;
        }
    }

    /// Whether the next `write_packet` would produce a packet.
    pub fn wants_transmit(&self, cfg: &Config) -> bool {
        if self.flags & flag::ANY_OUTPUT != 0 {
            return true;
        }
        self.may_send_data()
            && self
                .send
                .as_ref()
                .is_some_and(|q| q.can_send(&self.cc, fragment_size(cfg)))
    }

    fn may_send_data(&self) -> bool {
        matches!(
            self.phase,
            Phase::Established | Phase::ShutdownPending | Phase::ShutdownReceived
        )
    }

    /// Whether it holds a send queue: data queued or not yet acknowledged.
    pub fn is_sending(&self) -> bool {
        self.send.is_some()
    }

    /// User bytes queued or unacknowledged: what counts against [`Config::send_buffer`].
    pub fn queued_bytes(&self) -> usize {
        self.send.as_ref().map_or(0, |q| q.user_bytes())
    }

    /// Asks for one writable report (`Shared::writable`) once the queue has drained to the low-water mark,
    /// half of [`Config::send_buffer`]: at once if it already has. The report is edge-triggered and
    /// one-shot: [`super::Endpoint::try_send`] arms it again each time it refuses a message for lack of room.
    pub fn want_room(&mut self, sh: &mut Shared, id: AssocId) {
        self.flags |= flag::WANT_ROOM;
        self.report_room(sh, id);
    }

    /// Reports the association writable if a report is wanted and the queue is at the low-water mark.
    fn report_room(&mut self, sh: &mut Shared, id: AssocId) {
        if self.flags & flag::WANT_ROOM != 0 && self.queued_bytes() <= sh.cfg.send_buffer / 2 {
            self.flags &= !flag::WANT_ROOM;
            sh.writable.push_back(id);
        }
    }

    /// Heap bytes held beyond the struct (queues, stream tables, handshake data), for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        let ssn = self.ssn.as_ref().map_or(0, |s| s.len() * 2);
        let send = self
            .send
            .as_ref()
            .map_or(0, |_| std::mem::size_of::<SendQueue>());
        let recv = self
            .recv
            .as_ref()
            .map_or(0, |q| std::mem::size_of::<RecvQueue>() + q.buffered());
        let hs = match &self.phase {
            Phase::CookieEchoed(e) => {
                std::mem::size_of::<Echoed>() + e.cookie.len() + e.report.len()
            }
            _ => 0,
        };
        ssn + send + recv + hs
    }

    fn adopt_cookie(&mut self, s: &CookieState, cfg: &Config) {
        self.local_tag = s.local_tag;
        self.rx_head_crc = wire::header_crc(self.peer_port, self.local_port, s.local_tag);
        self.peer_tag = s.peer_tag;
        self.next_tsn = s.local_tsn;
        self.peer_cum = Tsn(s.peer_tsn.0.wrapping_sub(1));
        self.out_streams = s.out_streams;
        self.in_streams = s.in_streams;
        self.cc = Cc::new(mtu(cfg), s.peer_rwnd);
    }

    fn become_established(&mut self, sh: &mut Shared, id: AssocId, now: Instant) {
        let was = self.state();
        self.phase = Phase::Established;
        self.timers.stop(Timer::T1);
        self.init_retries = 0;
        log::debug!("assoc {id} {}: {was} => ESTABLISHED", self.remote);
        if self.flags & flag::UP == 0 {
            self.flags |= flag::UP;
            sh.stats.assocs_up += 1;
            sh.events.push_back((id, Event::Up));
        }
        if let Some(q) = self.send.as_mut() {
            let (o, i) = (usize::from(self.out_streams), usize::from(self.in_streams));
            let table = self
                .ssn
                .get_or_insert_with(|| vec![0u16; o + i].into_boxed_slice());
            q.assign_ssns(&mut table[..o]);
            if q.is_empty()
                && let Some(q) = self.send.take()
            {
                sh.pools.put_send(q);
            }
        }
        self.arm_heartbeat(sh, now);
        if self.flags & flag::SHUTDOWN_REQUESTED != 0 {
            self.flags &= !flag::SHUTDOWN_REQUESTED;
            self.set_phase(Phase::ShutdownPending, id);
            self.progress_shutdown(sh, id, now);
        }
    }

    fn set_phase(&mut self, p: Phase, id: AssocId) {
        log::debug!(
            "assoc {id} {}: {} => {}",
            self.remote,
            self.state(),
            p.state()
        );
        self.phase = p;
    }

    fn arm_heartbeat(&mut self, sh: &mut Shared, now: Instant) {
        let Some(interval) = sh.cfg.heartbeat_interval else {
            return;
        };
        // HB.interval + RTO, jittered by ±50% of the RTO (§8.3) so that many associations set up together
        // do not heartbeat in the same tick.
        let rto = self.rto.rto().as_micros() as u64;
        let jitter = if rto == 0 {
            0
        } else {
            sh.rng.next_u64() % (rto + 1)
        };
        let delay = interval + Duration::from_micros(rto / 2 + jitter);
        self.timers.set(Timer::Heartbeat, now + delay);
    }

    fn ssn_table(&mut self) -> &mut [u16] {
        let (o, i) = (usize::from(self.out_streams), usize::from(self.in_streams));
        self.ssn
            .get_or_insert_with(|| vec![0u16; o + i].into_boxed_slice())
    }

    /// Queues a user message (§6.1). A refused message is handed back with the reason.
    pub fn send(
        &mut self,
        stream: u16,
        unordered: bool,
        ppid: u32,
        data: Payload,
        sh: &mut Shared,
    ) -> Result<(), (SendError, Payload)> {
        let cfg = &sh.cfg;
        match self.phase {
            Phase::CookieWait { .. } | Phase::CookieEchoed(_) | Phase::Established => {}
            _ => return Err((SendError::ShuttingDown, data)),
        }
        if data.is_empty() {
            return Err((SendError::Empty, data));
        }
        if data.len() > cfg.max_message {
            return Err((SendError::TooLarge, data));
        }
        // Before the handshake completes the stream count is unknown; the smallest count a peer may offer is
        // 1, and we ask for `cfg.streams`, so accept anything below ours and check again on establishment.
        let limit = if self.state() == State::Established {
            self.out_streams
        } else {
            cfg.streams
        };
        if stream >= limit {
            return Err((SendError::InvalidStream, data));
        }
        if self.queued_bytes() + data.len() > cfg.send_buffer {
            return Err((SendError::BufferFull, data));
        }
        // Ordered messages queued before establishment get their SSN once the stream count is known.
        let ssn = if unordered || self.state() != State::Established {
            None
        } else {
            let t = self.ssn_table();
            let s = t[usize::from(stream)];
            t[usize::from(stream)] = s.wrapping_add(1);
            Some(s)
        };
        let acked = Tsn(self.next_tsn.0.wrapping_sub(1));
        let pools = &mut sh.pools;
        self.send
            .get_or_insert_with(|| pools.take_send(acked))
            .push(stream, ssn, unordered, ppid, data);
        Ok(())
    }

    /// Starts a graceful shutdown (§9.2). Returns a reason if the association ends at once.
    pub fn shutdown(&mut self, sh: &mut Shared, id: AssocId, now: Instant) -> Option<DownReason> {
        match self.phase {
            // Nothing was sent and nothing waits to be: no peer state exists yet, just forget it.
            Phase::CookieWait { .. } if self.send.is_none() => Some(DownReason::Shutdown),
            // Queued data, or a peer that may already have state: finish the handshake, deliver, then shut
            // down, as a graceful close promises.
            Phase::CookieWait { .. } | Phase::CookieEchoed(_) => {
                self.flags |= flag::SHUTDOWN_REQUESTED;
                None
            }
            Phase::Established => {
                self.set_phase(Phase::ShutdownPending, id);
                self.progress_shutdown(sh, id, now);
                None
            }
            _ => None,
        }
    }

    /// Sends ABORT with a user-initiated cause (§9.1); the caller removes the association.
    pub fn abort(&mut self, sh: &mut Shared) {
        if !matches!(self.phase, Phase::CookieWait { .. }) {
            self.send_abort(sh, cause::USER_ABORT);
        }
    }

    fn send_abort(&self, sh: &mut Shared, code: u16) {
        let h = self.header(self.peer_tag);
        sh.reply(self.remote, h, |w| {
            let m = w.begin_chunk(kind::ABORT, 0)?;
            let c = w.begin_tlv(code)?;
            w.end_tlv(c)?;
            w.end_chunk(m)
        });
    }

    fn send_error(&self, sh: &mut Shared, code: u16, value: &[u8]) {
        let h = self.header(self.peer_tag);
        sh.reply(self.remote, h, |w| {
            let m = w.begin_chunk(kind::ERROR, 0)?;
            let c = w.begin_tlv(code)?;
            let room = w.remaining().saturating_sub(4);
            w.put(&value[..value.len().min(room)])?;
            w.end_tlv(c)?;
            w.end_chunk(m)
        });
    }

    fn header(&self, vtag: u32) -> Header {
        Header {
            src_port: self.local_port,
            dst_port: self.peer_port,
            vtag,
        }
    }

    /// In SHUTDOWN-PENDING or SHUTDOWN-RECEIVED, moves on once all our data is acknowledged (§9.2).
    fn progress_shutdown(&mut self, sh: &mut Shared, id: AssocId, now: Instant) {
        if self.send.is_some() {
            return;
        }
        let rto = self.rto.rto();
        match self.phase {
            Phase::ShutdownPending => {
                self.set_phase(Phase::ShutdownSent, id);
                self.flags |= flag::SEND_SHUTDOWN;
                self.timers.set(Timer::T2Shutdown, now + rto);
                self.timers.set(Timer::T5Guard, now + 5 * sh.cfg.rto.max);
                self.timers.stop(Timer::Heartbeat);
            }
            Phase::ShutdownReceived => {
                self.set_phase(Phase::ShutdownAckSent, id);
                self.flags |= flag::SEND_SHUTDOWN_ACK;
                self.timers.set(Timer::T2Shutdown, now + rto);
                self.timers.stop(Timer::Heartbeat);
            }
            _ => {}
        }
    }

    /// Handles one chunk of a packet whose verification tag the endpoint has checked.
    pub fn handle_chunk(
        &mut self,
        sh: &mut Shared,
        id: AssocId,
        now: Instant,
        c: &Chunk<'_>,
        vtag: u32,
    ) -> Flow {
        match *c {
            Chunk::Data(ref d) => self.on_data(sh, id, d),
            Chunk::Sack(ref s) => {
                self.on_sack(sh, id, now, s);
                Flow::Continue
            }
            Chunk::Heartbeat(params) => {
                if !matches!(self.phase, Phase::CookieWait { .. }) {
                    let h = self.header(self.peer_tag);
                    sh.reply(self.remote, h, |w| {
                        write_raw(w, kind::HEARTBEAT_ACK, 0, params)
                    });
                }
                // Ours, unless one is already out (its answer still counts), waits a full interval more, plus
                // two RTOs: longer than the peer's own period (interval + RTO/2 to 3 RTO/2, §8.3) when its RTO
                // is like ours, so a live peer's heartbeats keep ours from ever going out. Not before our
                // RTO is measured: our heartbeats are then the only RTT samples of an association that sends
                // no DATA, and probing a dead peer at RTO.Initial would find it late.
                // Standing in for ours, the peer's heartbeat also clears the count of timeouts as an answer
                // to ours would: a peer that keeps heartbeating is alive, however late its SACKs are. Only a
                // peer that falls silent is given up on, not one whose data is delayed or lost.
                if sh.cfg.defer_to_peer_heartbeats
                    && matches!(
                        self.phase,
                        Phase::Established | Phase::ShutdownPending | Phase::ShutdownReceived
                    )
                {
                    self.errors = 0;
                }
                if let Some(interval) = sh.cfg.heartbeat_interval
                    && sh.cfg.defer_to_peer_heartbeats
                    && self.rto.srtt().is_some()
                    && matches!(self.phase, Phase::Established)
                    && self.flags & (flag::HB_OUTSTANDING | flag::SEND_HEARTBEAT) == 0
                    && self.timers.is_armed(Timer::Heartbeat)
                {
                    self.timers
                        .set(Timer::Heartbeat, now + interval + 2 * self.rto.rto());
                }
                Flow::Continue
            }
            Chunk::HeartbeatAck(params) => {
                self.on_heartbeat_ack(sh, now, params);
                Flow::Continue
            }
            Chunk::Abort { reflected, causes } => {
                let ok = if reflected {
                    vtag == self.peer_tag
                } else {
                    vtag == self.local_tag
                };
                if !ok {
                    sh.stats.bad_vtag += 1;
                    return Flow::Stop;
                }
                Flow::Close(DownReason::PeerAbort(
                    param::first_cause(causes).map(|(k, _)| k),
                ))
            }
            Chunk::InitAck(ref i) => self.on_init_ack(sh, id, now, i),
            Chunk::CookieAck => {
                if let Phase::CookieEchoed(e) = &self.phase {
                    if let (Some(sent), 0) = (e.sent, self.init_retries) {
                        self.rto.sample(now - sent, &sh.cfg.rto);
                    }
                    self.become_established(sh, id, now);
                }
                Flow::Continue
            }
            Chunk::Shutdown { cum_tsn } => {
                self.on_shutdown(sh, id, now, cum_tsn);
                Flow::Continue
            }
            Chunk::ShutdownAck => match self.phase {
                Phase::ShutdownSent | Phase::ShutdownAckSent => {
                    let h = self.header(self.peer_tag);
                    sh.reply(self.remote, h, |w| {
                        write_empty(w, kind::SHUTDOWN_COMPLETE, 0)
                    });
                    Flow::Close(DownReason::Shutdown)
                }
                _ => Flow::Continue,
            },
            Chunk::ShutdownComplete { reflected } => {
                let ok = if reflected {
                    vtag == self.peer_tag
                } else {
                    vtag == self.local_tag
                };
                if ok && matches!(self.phase, Phase::ShutdownAckSent) {
                    Flow::Close(DownReason::Shutdown)
                } else {
                    Flow::Continue
                }
            }
            Chunk::Error(causes) => self.on_error(sh, id, now, causes),
            // The endpoint routes these before they reach an association.
            Chunk::Init(_) | Chunk::CookieEcho(_) | Chunk::Unknown { .. } => Flow::Stop,
        }
    }

    fn on_data(&mut self, sh: &mut Shared, id: AssocId, d: &Data<'_>) -> Flow {
        if !matches!(
            self.phase,
            Phase::Established | Phase::ShutdownPending | Phase::ShutdownSent
        ) {
            return Flow::Continue;
        }
        if d.payload.is_empty() {
            // §6.2: a DATA chunk without user data is answered with ABORT ("No User Data").
            let h = self.header(self.peer_tag);
            let tsn = d.tsn.0.to_be_bytes();
            sh.reply(self.remote, h, |w| {
                let m = w.begin_chunk(kind::ABORT, 0)?;
                param::write_tlv(w, cause::NO_USER_DATA, &tsn)?;
                w.end_chunk(m)
            });
            return Flow::Close(DownReason::ProtocolViolation);
        }
        self.flags |= flag::DATA_IN_PACKET;
        if d.immediate() {
            self.flags |= flag::SACK_NOW;
        }
        let rwnd = sh.cfg.rwnd;
        // Fast path: the next TSN, a whole message, deliverable now, nothing buffered.
        if self.recv.is_none() && d.tsn == self.peer_cum.next() && d.begin() && d.end() {
            let stream = usize::from(d.stream);
            if d.stream >= self.in_streams {
                self.peer_cum = d.tsn;
                self.report_invalid_stream(sh, d);
                return Flow::Continue;
            }
            let base = usize::from(self.out_streams);
            let ordered_next = !d.unordered() && self.ssn_table()[base + stream] == d.ssn;
            if d.unordered() || ordered_next {
                if ordered_next {
                    let t = self.ssn_table();
                    t[base + stream] = d.ssn.wrapping_add(1);
                }
                self.peer_cum = d.tsn;
                sh.stats.messages_in += 1;
                sh.events.push_back((
                    id,
                    Event::Message {
                        stream: d.stream,
                        unordered: d.unordered(),
                        ppid: d.ppid,
                        data: d.payload.to_vec(),
                    },
                ));
                return Flow::Continue;
            }
        }
        let pools = &mut sh.pools;
        let rq = self.recv.get_or_insert_with(|| pools.take_recv());
        match rq.accept(&mut self.peer_cum, d.tsn, d.payload.len(), rwnd) {
            Verdict::Duplicate => {
                sh.stats.dup_tsns += 1;
                self.flags |= flag::SACK_NOW;
            }
            Verdict::Dropped => {
                sh.stats.data_dropped += 1;
                self.flags |= flag::SACK_NOW;
            }
            Verdict::New => {
                if d.stream >= self.in_streams {
                    self.report_invalid_stream(sh, d);
                } else {
                    let base = usize::from(self.out_streams);
                    let (o, i) = (usize::from(self.out_streams), usize::from(self.in_streams));
                    let table = self
                        .ssn
                        .get_or_insert_with(|| vec![0u16; o + i].into_boxed_slice());
                    let rq = self.recv.as_mut().unwrap_or_else(|| unreachable!());
                    let events = &mut sh.events;
                    let stats = &mut sh.stats;
                    rq.store(d, &mut table[base..], &mut |m: recv::Delivered| {
                        stats.messages_in += 1;
                        events.push_back((
                            id,
                            Event::Message {
                                stream: m.stream,
                                unordered: m.unordered,
                                ppid: m.ppid,
                                data: m.data,
                            },
                        ));
                    });
                }
                if self.recv.as_ref().is_some_and(|q| q.has_gaps()) {
                    self.flags |= flag::SACK_NOW;
                }
            }
        }
        Flow::Continue
    }

    fn report_invalid_stream(&self, sh: &mut Shared, d: &Data<'_>) {
        // §6.5: acknowledge the TSN, drop the data, and report the stream.
        let mut v = [0u8; 4];
        v[..2].copy_from_slice(&d.stream.to_be_bytes());
        self.send_error(sh, cause::INVALID_STREAM, &v);
    }

    /// Decides about acknowledging the DATA of the packet just handled (§6.2): at once for duplicates, gaps,
    /// the I bit or every second packet; otherwise after SACK.Delay.
    pub fn after_packet(&mut self, sh: &mut Shared, now: Instant) {
        if self.flags & flag::DATA_IN_PACKET == 0 {
            return;
        }
        self.flags &= !flag::DATA_IN_PACKET;
        if matches!(self.phase, Phase::ShutdownSent) {
            // §9.2: answer each DATA packet with SHUTDOWN (and a SACK if it cannot say everything).
            self.flags |= flag::SEND_SHUTDOWN;
            self.timers.set(Timer::T2Shutdown, now + self.rto.rto());
            if self.recv.as_ref().is_some_and(|q| !q.is_idle()) {
                self.flags |= flag::SEND_SACK;
            }
            self.flags &= !(flag::SACK_NOW | flag::SACK_OWED);
            return;
        }
        if self.flags & (flag::SACK_NOW | flag::SACK_OWED) != 0 {
            self.flags = (self.flags & !(flag::SACK_NOW | flag::SACK_OWED)) | flag::SEND_SACK;
            self.timers.stop(Timer::Sack);
        } else {
            self.flags |= flag::SACK_OWED;
            self.timers.set(Timer::Sack, now + sh.cfg.sack_delay);
        }
    }

    fn on_sack(&mut self, sh: &mut Shared, id: AssocId, now: Instant, s: &Sack<'_>) {
        if matches!(
            self.phase,
            Phase::CookieWait { .. } | Phase::CookieEchoed(_)
        ) {
            return;
        }
        let highest_sent = Tsn(self.next_tsn.0.wrapping_sub(1));
        // Out-of-order SACKs (behind the ack point) and acks of TSNs never sent are ignored (§6.2.1).
        let cum_acked = self.send.as_ref().map_or(highest_sent, |q| q.cum_acked());
        if s.cum_tsn.lt(cum_acked) || s.cum_tsn.gt(highest_sent) {
            return;
        }
        let Some(q) = self.send.as_mut() else {
            self.cc.peer_rwnd = s.a_rwnd;
            return;
        };
        let mtu = mtu(&sh.cfg);
        let o = q.on_sack(s, highest_sent, now, &mut self.cc, mtu, &mut sh.stats);
        if o.newly_acked {
            self.errors = 0;
        }
        if let Some(r) = o.rtt {
            self.rto.sample(r, &sh.cfg.rto);
        }
        if !q.has_unacked() {
            self.timers.stop(Timer::T3Rtx);
        } else if o.cum_advanced {
            self.timers.set(Timer::T3Rtx, now + self.rto.rto());
        }
        if q.is_empty()
            && let Some(q) = self.send.take()
        {
            sh.pools.put_send(q);
        }
        self.report_room(sh, id);
        self.progress_shutdown(sh, id, now);
    }

    fn on_heartbeat_ack(&mut self, sh: &mut Shared, now: Instant, params: &[u8]) {
        let Some(Ok(t)) = TlvIter::new(params).next() else {
            return;
        };
        if t.kind != ptype::HEARTBEAT_INFO || t.value.len() != 12 {
            return;
        }
        if self.flags & flag::HB_OUTSTANDING == 0 || be32(t.value, 0) != self.hb_nonce {
            return;
        }
        self.flags &= !flag::HB_OUTSTANDING;
        self.errors = 0;
        sh.stats.heartbeats_acked += 1;
        let mut sent = [0u8; 8];
        sent.copy_from_slice(&t.value[4..12]);
        let sent = Instant::from_micros(u64::from_be_bytes(sent));
        if sent <= now {
            self.rto.sample(now - sent, &sh.cfg.rto);
        }
        // Answered: the next heartbeat after a full interval.
        self.arm_heartbeat(sh, now);
    }

    /// Sends a heartbeat now, unless one is already out: the user suspects the peer is gone (e.g. someone
    /// else claims its nickname) and wants to know within a few RTOs rather than an interval.
    pub fn probe(&mut self) {
        if matches!(
            self.phase,
            Phase::Established | Phase::ShutdownPending | Phase::ShutdownReceived
        ) && self.flags & flag::HB_OUTSTANDING == 0
        {
            self.flags |= flag::SEND_HEARTBEAT;
        }
    }

    /// The caller could not run for a while (the process was stopped, the machine suspended): nothing it
    /// failed to hear during that time counts against the peer. Pending heartbeats and retransmission timers
    /// start over from `now` without a strike, and the peer is probed again soon (spread over `spread` so a
    /// stalled daemon does not probe everyone in one burst).
    pub fn forgive_stall(&mut self, sh: &mut Shared, now: Instant, spread: Duration) {
        self.errors = 0;
        let rto = self.rto.rto();
        if self.timers.is_armed(Timer::Heartbeat) {
            self.flags &= !(flag::HB_OUTSTANDING | flag::SEND_HEARTBEAT);
            let spread_us = spread.as_micros() as u64;
            let delay = if spread_us == 0 {
                0
            } else {
                sh.rng.next_u64() % spread_us
            };
            self.timers
                .set(Timer::Heartbeat, now + Duration::from_micros(delay));
        }
        for t in [Timer::T1, Timer::T2Shutdown, Timer::T3Rtx] {
            if self.timers.is_armed(t) {
                self.timers.set(t, now + rto);
            }
        }
    }

    fn on_init_ack(&mut self, sh: &mut Shared, id: AssocId, now: Instant, i: &Init<'_>) -> Flow {
        if !matches!(self.phase, Phase::CookieWait { .. }) {
            // §5.2.3: an unexpected INIT ACK is discarded.
            return Flow::Stop;
        }
        if i.initiate_tag == 0 || i.out_streams == 0 || i.in_streams == 0 {
            // §3.3.3: destroy the TCB; the peer's parameters are unusable.
            self.peer_tag = i.initiate_tag;
            if i.initiate_tag != 0 {
                self.send_abort(sh, cause::INVALID_PARAM);
            }
            return Flow::Close(DownReason::ProtocolViolation);
        }
        let mut cookie: Option<&[u8]> = None;
        let mut report = Vec::new();
        for t in TlvIter::new(i.params) {
            let Ok(t) = t else {
                sh.stats.malformed += 1;
                return Flow::Stop;
            };
            match InitParam::parse(t) {
                Err(_) => {
                    sh.stats.malformed += 1;
                    return Flow::Stop;
                }
                Ok(InitParam::StateCookie(c)) => cookie = Some(c),
                Ok(InitParam::HostName) => {
                    self.peer_tag = i.initiate_tag;
                    self.send_abort(sh, cause::UNRESOLVABLE_ADDRESS);
                    return Flow::Close(DownReason::ProtocolViolation);
                }
                Ok(InitParam::Unknown(t)) => {
                    let action = UnknownParamAction::of(t.kind);
                    if action.reports() {
                        report.extend_from_slice(t.raw);
                        report.resize(super::wire::pad4(report.len()), 0);
                    }
                    if !action.skips() {
                        break;
                    }
                }
                Ok(_) => {}
            }
        }
        let Some(cookie) = cookie else {
            // §5.1: the State Cookie is mandatory; report it missing.
            self.peer_tag = i.initiate_tag;
            let h = self.header(self.peer_tag);
            sh.reply(self.remote, h, |w| {
                let m = w.begin_chunk(kind::ABORT, 0)?;
                param::write_tlv(
                    w,
                    cause::MISSING_PARAM,
                    &[0, 0, 0, 1, 0, ptype::STATE_COOKIE as u8],
                )?;
                w.end_chunk(m)
            });
            return Flow::Close(DownReason::ProtocolViolation);
        };
        self.peer_tag = i.initiate_tag;
        self.peer_cum = Tsn(i.initial_tsn.0.wrapping_sub(1));
        self.out_streams = sh.cfg.streams.min(i.in_streams);
        self.in_streams = sh.cfg.streams.min(i.out_streams);
        self.cc = Cc::new(mtu(&sh.cfg), i.a_rwnd);
        let report = if report.is_empty() {
            Box::default()
        } else {
            // One "Unrecognized Parameters" cause wrapping them all.
            let mut c = Vec::with_capacity(report.len() + 4);
            c.extend_from_slice(&cause::UNRECOGNIZED_PARAMS.to_be_bytes());
            c.extend_from_slice(
                &((report.len() + 4).min(usize::from(u16::MAX)) as u16).to_be_bytes(),
            );
            c.extend_from_slice(&report);
            c.into_boxed_slice()
        };
        self.set_phase(
            Phase::CookieEchoed(Box::new(Echoed {
                cookie: cookie.into(),
                report,
                sent: None,
            })),
            id,
        );
        self.flags = (self.flags & !flag::SEND_INIT) | flag::SEND_COOKIE_ECHO;
        self.init_retries = 0;
        self.timers.set(Timer::T1, now + self.rto.rto());
        // Stop processing: nothing may be bundled with INIT ACK.
        Flow::Stop
    }

    fn on_shutdown(&mut self, sh: &mut Shared, id: AssocId, now: Instant, cum: Tsn) {
        match self.phase {
            Phase::CookieWait { .. } | Phase::CookieEchoed(_) => return,
            Phase::ShutdownAckSent => {
                self.flags |= flag::SEND_SHUTDOWN_ACK;
                return;
            }
            _ => {}
        }
        let a_rwnd = self.cc.peer_rwnd;
        self.on_sack(sh, id, now, &Sack::cum_only(cum, a_rwnd));
        match self.phase {
            Phase::Established | Phase::ShutdownPending => {
                self.set_phase(Phase::ShutdownReceived, id);
                self.progress_shutdown(sh, id, now);
            }
            Phase::ShutdownSent => {
                // Both sides shut down at once (§9.2): answer with SHUTDOWN ACK.
                self.set_phase(Phase::ShutdownAckSent, id);
                self.flags |= flag::SEND_SHUTDOWN_ACK;
                self.timers.set(Timer::T2Shutdown, now + self.rto.rto());
            }
            _ => {}
        }
    }

    fn on_error(&mut self, sh: &mut Shared, id: AssocId, now: Instant, causes: &[u8]) -> Flow {
        for t in TlvIter::new(causes) {
            let Ok(t) = t else { break };
            if t.kind == cause::STALE_COOKIE && matches!(self.phase, Phase::CookieEchoed(_)) {
                // §5.2.6: try again with a new INIT asking for a longer cookie life.
                self.init_retries += 1;
                if self.init_retries > sh.cfg.max_init_retransmits {
                    return Flow::Close(DownReason::InitFailed);
                }
                let stale_us = if t.value.len() >= 4 {
                    be32(t.value, 0)
                } else {
                    0
                };
                let preserve_ms = (stale_us / 1000).saturating_mul(2).clamp(1, 1000);
                self.set_phase(Phase::CookieWait { preserve_ms }, id);
                self.peer_tag = 0;
                self.flags = (self.flags & !flag::SEND_COOKIE_ECHO) | flag::SEND_INIT;
                self.timers.set(Timer::T1, now + self.rto.rto());
                return Flow::Stop;
            }
            log::debug!(
                "assoc {id} {}: peer reports error cause {}",
                self.remote,
                t.kind
            );
        }
        Flow::Continue
    }

    /// Action A of §5.2.4: the peer restarted. Reset to the cookie's parameters, drop queued data.
    pub fn restart(&mut self, s: &CookieState, sh: &mut Shared, id: AssocId, now: Instant) {
        let keep = self.flags & (flag::QUEUED | flag::UP);
        let (remote, generation, wheel) = (self.remote, self.generation, self.wheel.take());
        let local_port = self.local_port;
        *self = Self::blank(
            remote,
            (s.peer_port, local_port),
            generation,
            s.local_tag,
            s.local_tsn,
            &sh.cfg,
        );
        self.wheel = wheel;
        self.adopt_cookie(s, &sh.cfg);
        self.flags = keep | flag::SEND_COOKIE_ACK;
        sh.stats.restarts += 1;
        sh.events.push_back((id, Event::Restarted));
        self.become_established(sh, id, now);
    }

    /// Actions B and D of §5.2.4: our handshake crossed the peer's, or its COOKIE ECHO was retransmitted.
    pub fn cookie_matches(&mut self, s: &CookieState, sh: &mut Shared, id: AssocId, now: Instant) {
        if self.peer_tag != s.peer_tag || matches!(self.phase, Phase::CookieWait { .. }) {
            self.adopt_cookie(s, &sh.cfg);
        }
        self.flags |= flag::SEND_COOKIE_ACK;
        self.flags &= !(flag::SEND_INIT | flag::SEND_COOKIE_ECHO);
        if matches!(
            self.phase,
            Phase::CookieWait { .. } | Phase::CookieEchoed(_)
        ) {
            self.become_established(sh, id, now);
        }
    }

    /// For a SHUTDOWN-ACK-SENT association whose peer restarted (§5.2.4 A): resend SHUTDOWN ACK and say why.
    pub fn refuse_restart_while_shutting_down(&mut self, sh: &mut Shared) {
        self.flags |= flag::SEND_SHUTDOWN_ACK;
        self.send_error(sh, cause::COOKIE_WHILE_SHUTTING_DOWN, &[]);
    }

    /// Tie-tags and handshake parameters for answering an INIT that arrives while this association exists
    /// (§5.2.1, §5.2.2). `None` means: do not answer with INIT ACK (SHUTDOWN-ACK-SENT resends SHUTDOWN ACK).
    pub fn init_collision(&mut self) -> Option<Collision> {
        match self.phase {
            Phase::CookieWait { .. } => Some(Collision::Reuse {
                local_tag: self.local_tag,
                local_tsn: self.next_tsn,
                tie: (0, 0),
            }),
            Phase::CookieEchoed(_) => Some(Collision::Reuse {
                local_tag: self.local_tag,
                local_tsn: self.next_tsn,
                tie: (self.local_tag, self.peer_tag),
            }),
            Phase::ShutdownAckSent => {
                self.flags |= flag::SEND_SHUTDOWN_ACK;
                None
            }
            _ => Some(Collision::Fresh {
                tie: (self.local_tag, self.peer_tag),
            }),
        }
    }

    /// Handles expired timers. Returns a reason if the association ends.
    pub fn handle_timeout(
        &mut self,
        sh: &mut Shared,
        id: AssocId,
        now: Instant,
    ) -> Option<DownReason> {
        for t in Timer::ALL {
            if !self.timers.is_due(t, now) {
                continue;
            }
            self.timers.stop(t);
            log::trace!(
                "assoc {id} {}: timer {t:?} fired in {}",
                self.remote,
                self.state()
            );
            if let Some(r) = self.on_timer(t, sh, now) {
                return Some(r);
            }
        }
        None
    }

    fn on_timer(&mut self, t: Timer, sh: &mut Shared, now: Instant) -> Option<DownReason> {
        let cfg = &sh.cfg;
        match t {
            Timer::T1 => {
                self.init_retries += 1;
                if self.init_retries > cfg.max_init_retransmits {
                    return Some(DownReason::InitFailed);
                }
                self.rto.backoff(&cfg.rto);
                match self.phase {
                    Phase::CookieWait { .. } => self.flags |= flag::SEND_INIT,
                    Phase::CookieEchoed(_) => self.flags |= flag::SEND_COOKIE_ECHO,
                    _ => return None,
                }
                self.timers.set(Timer::T1, now + self.rto.rto());
            }
            Timer::T3Rtx => {
                sh.stats.t3_timeouts += 1;
                if self.strike(cfg) {
                    return Some(DownReason::Lost);
                }
                let mtu = mtu(cfg);
                if let Some(q) = self.send.as_mut() {
                    q.on_t3_timeout(&mut self.cc, mtu);
                }
            }
            Timer::T2Shutdown => {
                if self.strike(cfg) {
                    return Some(DownReason::Lost);
                }
                match self.phase {
                    Phase::ShutdownSent => self.flags |= flag::SEND_SHUTDOWN,
                    Phase::ShutdownAckSent => self.flags |= flag::SEND_SHUTDOWN_ACK,
                    _ => return None,
                }
                self.timers.set(Timer::T2Shutdown, now + self.rto.rto());
            }
            Timer::Heartbeat => {
                if !matches!(
                    self.phase,
                    Phase::Established | Phase::ShutdownPending | Phase::ShutdownReceived
                ) {
                    return None;
                }
                if self.flags & flag::HB_OUTSTANDING != 0 {
                    // Not acknowledged within one RTO (§8.3): an error, and another heartbeat at once with
                    // the backed-off RTO, so a dead peer is found after Association.Max.Retrans + 1 RTOs.
                    self.flags &= !flag::HB_OUTSTANDING;
                    if self.strike(cfg) {
                        return Some(DownReason::Lost);
                    }
                }
                // The deadline for its acknowledgement is set when it is actually sent (write_packet).
                self.flags |= flag::SEND_HEARTBEAT;
            }
            Timer::Sack => {
                if self.flags & flag::SACK_OWED != 0 {
                    self.flags = (self.flags & !flag::SACK_OWED) | flag::SEND_SACK;
                }
            }
            Timer::T5Guard => {
                self.send_abort(sh, cause::USER_ABORT);
                return Some(DownReason::LocalAbort);
            }
        }
        None
    }

    /// Counts a timeout against Association.Max.Retrans and backs the RTO off; true when the limit is passed.
    fn strike(&mut self, cfg: &Config) -> bool {
        self.errors = self.errors.saturating_add(1);
        self.rto.backoff(&cfg.rto);
        self.errors > cfg.max_retransmits
    }

    /// Writes the next packet this association has to send into `buf`. `None` if it has nothing.
    pub fn write_packet(&mut self, sh: &mut Shared, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let cfg = &sh.cfg;
        let n = cfg.max_packet.min(buf.len());
        let buf = &mut buf[..n];
        let (to_peer, init_header) = (self.header(self.peer_tag), self.header(0));
        match &mut self.phase {
            Phase::CookieWait { preserve_ms } if self.flags & flag::SEND_INIT != 0 => {
                self.flags &= !flag::SEND_INIT;
                let preserve = *preserve_ms;
                let mut w = Writer::new(buf, init_header).ok()?;
                let out = InitOut {
                    initiate_tag: self.local_tag,
                    a_rwnd: cfg.rwnd,
                    out_streams: cfg.streams,
                    in_streams: cfg.streams,
                    initial_tsn: self.next_tsn,
                };
                let r = (|| {
                    let m = chunk::begin_init(&mut w, kind::INIT, &out)?;
                    if preserve > 0 {
                        param::write_tlv(
                            &mut w,
                            ptype::COOKIE_PRESERVATIVE,
                            &preserve.to_be_bytes(),
                        )?;
                    }
                    w.end_chunk(m)
                })();
                return r.ok().map(|()| w.finish());
            }
            Phase::CookieEchoed(e) if self.flags & flag::SEND_COOKIE_ECHO != 0 => {
                self.flags &= !flag::SEND_COOKIE_ECHO;
                e.sent = Some(now);
                let mut w = Writer::new(buf, to_peer).ok()?;
                write_raw(&mut w, kind::COOKIE_ECHO, 0, &e.cookie).ok()?;
                if !e.report.is_empty() {
                    // Best effort: a report that does not fit is dropped, the handshake is not.
                    let _ = write_raw(&mut w, kind::ERROR, 0, &e.report);
                }
                return Some(w.finish());
            }
            Phase::CookieWait { .. } | Phase::CookieEchoed(_) => return None,
            _ => {}
        }
        let mut w = Writer::new(buf, to_peer).ok()?;
        if self.flags & flag::SEND_COOKIE_ACK != 0
            && write_empty(&mut w, kind::COOKIE_ACK, 0).is_ok()
        {
            self.flags &= !flag::SEND_COOKIE_ACK;
        }
        let frag = fragment_size(cfg);
        let data_ready = self.may_send_data()
            && self
                .send
                .as_ref()
                .is_some_and(|q| q.can_send(&self.cc, frag));
        if self.flags & flag::SEND_SACK != 0 || (self.flags & flag::SACK_OWED != 0 && data_ready) {
            self.write_sack(&mut w, cfg.rwnd, &mut sh.stats, &mut sh.pools);
        }
        if self.flags & flag::SEND_HEARTBEAT != 0 {
            self.hb_nonce = sh.rng.next_u32();
            let mut info = [0u8; 16];
            info[..2].copy_from_slice(&ptype::HEARTBEAT_INFO.to_be_bytes());
            info[2..4].copy_from_slice(&16u16.to_be_bytes());
            info[4..8].copy_from_slice(&self.hb_nonce.to_be_bytes());
            info[8..16].copy_from_slice(&now.as_micros().to_be_bytes());
            if write_raw(&mut w, kind::HEARTBEAT, 0, &info).is_ok() {
                self.flags = (self.flags & !flag::SEND_HEARTBEAT) | flag::HB_OUTSTANDING;
                self.timers.set(Timer::Heartbeat, now + self.rto.rto());
                sh.stats.heartbeats_sent += 1;
            }
        }
        if self.flags & flag::SEND_SHUTDOWN != 0 && write_shutdown(&mut w, self.peer_cum).is_ok() {
            self.flags &= !flag::SEND_SHUTDOWN;
        }
        if self.flags & flag::SEND_SHUTDOWN_ACK != 0
            && write_empty(&mut w, kind::SHUTDOWN_ACK, 0).is_ok()
        {
            self.flags &= !flag::SEND_SHUTDOWN_ACK;
        }
        if data_ready && let Some(q) = self.send.as_mut() {
            let f = q.fill(
                &mut w,
                now,
                &mut self.cc,
                &mut self.next_tsn,
                frag,
                &mut sh.stats,
            );
            if f.chunks > 0 && (!self.timers.is_armed(Timer::T3Rtx) || f.lowest_retransmitted) {
                self.timers.set(Timer::T3Rtx, now + self.rto.rto());
            }
        }
        if w.is_empty() {
            return None;
        }
        Some(w.finish())
    }

    fn write_sack(
        &mut self,
        w: &mut Writer<'_>,
        rwnd: u32,
        stats: &mut super::Stats,
        pools: &mut Pools,
    ) {
        let mut gaps = [(0u16, 0u16); recv::MAX_GAP_RANGES];
        let mut dups = [Tsn(0); recv::MAX_DUPS];
        let (ng, nd, a_rwnd) = match self.recv.as_mut() {
            Some(q) => (
                q.gap_blocks(self.peer_cum, &mut gaps),
                q.take_dups(&mut dups),
                q.a_rwnd(rwnd),
            ),
            None => (0, 0, rwnd),
        };
        if write_sack(w, self.peer_cum, a_rwnd, &gaps[..ng], &dups[..nd]).is_ok() {
            self.flags &= !(flag::SEND_SACK | flag::SACK_OWED);
            self.timers.stop(Timer::Sack);
            stats.sacks_sent += 1;
            if self.recv.as_ref().is_some_and(|q| q.is_idle())
                && let Some(q) = self.recv.take()
            {
                pools.put_recv(q);
            }
        }
    }
}

/// How to answer an INIT that arrives while an association with the same peer exists.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Collision {
    /// Reuse our tag and initial TSN (we are still in the handshake, §5.2.1).
    Reuse {
        local_tag: u32,
        local_tsn: Tsn,
        tie: (u32, u32),
    },
    /// Pick a new tag and TSN, and put the current tags in the cookie as tie-tags (§5.2.2).
    Fresh { tie: (u32, u32) },
}
