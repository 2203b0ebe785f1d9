//! The daemon's side of the protocol, sans-IO: the twin of [`crate::client::Client`].
//!
//! A [`Server`] owns the SCTP [`Endpoint`] every client associates with, the [`Registry`] (the roster), and
//! the discovery responder (HELLO → WELCOME, ANNOUNCE at start).
//!
//! # Sessions
//! Every association carries one Noise session ([`crate::secure`]) between the daemon's key and the
//! client's: the client opens it (IK when it knows our key, XX on first contact), and only once the
//! handshake has proved the client's key does the registry hear of the connection, with that key. Every
//! roster message in either direction is then sealed. An association that has not completed its handshake
//! within [`Config::handshake_timeout`] is aborted, so half-open sessions cannot pile up. A delta broadcast
//! to every synced client is encrypted once and authenticated per client ([`crate::secure::broadcast`]):
//! a join reaching 10 000 clients costs one encryption and 10 000 short MACs, not 10 000 encryptions, and
//! each client one SCTP message, its own 25-byte head in front of the shared body, which is never copied.
//! The caller moves datagrams between it and three sockets (the SCTP-over-UDP socket, the group socket
//! HELLOs arrive on, the sender socket WELCOMEs and ANNOUNCEs leave from), calls [`Server::handle_timeout`]
//! when [`Server::poll_timeout`] passes, and acts on [`Event`]s (log them, save the roster). Nothing here
//! reads a clock, opens a socket or a file, or starts a thread: `now` and the wall-clock time at
//! [`Instant::ZERO`] are handed in, and randomness comes from a seed.
//!
//! # Driving it
//! After any `handle_*` call (a whole batch of them, in a loop turn), drain [`Server::poll_transmit`],
//! [`Server::poll_discovery_transmit`] and [`Server::poll_event`] until `None`, then read
//! [`Server::poll_timeout`]. The registry's changes of one batch are coalesced: the first `poll_*` after the
//! batch moves association events into the registry and its one delta per client into the associations, so a
//! storm of N joins read in one turn costs one delta per client, not N. Time must not go backwards.
//!
//! # What allocates
//! The endpoint and registry (see their docs); here only the queues of events and discovery replies, which
//! the caller drains every turn, and the WELCOME rate limiter's table of recent sources. Discovery replies
//! are bounded per turn ([`MAX_DISCOVERY_REPLIES`]), the limiter's table to 4 096 sources.
//!
//! # What can panic
//! Nothing reachable from network input.

#![forbid(unsafe_code)]

mod responder;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::identity::Identity;
use crate::registry::{self, Out, Registry, wire};
use crate::sctp::{
    AssocId, Config as SctpConfig, DownReason, Endpoint, Event as SctpEvent, Head, Payload,
    RtoConfig, SendError, Transmit,
};
use crate::secure::broadcast::{self, Sealer, Tagger};
use crate::secure::ticket::{Grant, TicketError, TicketKey};
use crate::secure::{Context, Frame, Handshake, Psk, Seeds, Session, TAG_LEN, kind};
use crate::time::{Instant, STALL};
pub use responder::MAX_DISCOVERY_REPLIES;
use responder::Responder;

/// How the daemon serves. `mpd`'s options map onto these; the defaults are DESIGN.md's.
#[derive(Clone, Debug)]
pub struct Config {
    /// This daemon's instance id, random per start: clients tell a restarted daemon by it.
    pub instance: u64,
    /// The SCTP port (in SCTP headers; also advertised in WELCOME and ANNOUNCE).
    pub sctp_port: u16,
    /// The UDP port the SCTP encapsulation socket is bound to (advertised in WELCOME and ANNOUNCE).
    pub sctp_udp_port: u16,
    /// The discovery group ANNOUNCEs go to.
    pub group: SocketAddr,
    /// SCTP heartbeat interval towards each client.
    pub heartbeat: Duration,
    /// Unanswered heartbeats (or timeouts) after which a client is declared gone is this + 1.
    pub max_retransmits: u8,
    /// RTO lower bound for client associations.
    pub rto_min: Duration,
    /// RTO upper bound for client associations.
    pub rto_max: Duration,
    /// How long offline entries are kept.
    pub offline_ttl: Duration,
    /// Roster entries held at most.
    pub max_clients: usize,
    /// How long after a change [`Event::SaveDue`] is reported (changes in between are saved together).
    pub save_delay: Duration,
    /// The daemon's own address on the discovery interface, if not loopback (see [`registry::Config`]).
    pub host_ip: Option<IpAddr>,
    /// On [`Server::stop`], how long to wait for clients to acknowledge the shutdown of their associations.
    pub stop_grace: Duration,
    /// The daemon's long-term key: clients pin it, and every session is a handshake with it.
    pub identity: Identity,
    /// The network secret, if the daemon requires one (`--secret-file`).
    pub psk: Option<Psk>,
    /// An association must complete its handshake within this long after it comes up, or it is aborted.
    pub handshake_timeout: Duration,
    /// How long a nickname stays bound to its key after its owner was last online.
    pub binding_ttl: Duration,
    /// Roster entries registered from one source address at most (`--max-clients-per-host`; 0 = no cap;
    /// see [`registry::Config::max_clients_per_host`]).
    pub max_clients_per_host: usize,
    /// Offline entries kept per source address at most (`--max-offline-per-host`; 0 = no cap; see
    /// [`registry::Config::max_offline_per_host`]).
    pub max_offline_per_host: usize,
    /// WELCOMEs per second at most to one source address, with a burst of twice as many
    /// (`--welcome-rate`; 0 = no limit): a HELLO beyond it is not answered, so spoofed HELLOs cannot turn
    /// the daemon into a reflector aimed at someone else.
    pub welcome_rate: u32,
    /// How long a resumption ticket stays valid (see [`crate::secure::ticket`]); zero = no tickets, every
    /// session a full handshake.
    pub ticket_lifetime: Duration,
}

/// The default of [`Config::ticket_lifetime`]: a week, TLS 1.3's upper bound for a ticket's life (RFC 8446
/// §4.6.1). A ticket is worth as much as the session it resumes; a client that reconnects within a week (a
/// daemon restart, a laptop waking up) skips three of the four X25519 multiplications of its handshake.
pub const DEFAULT_TICKET_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// The default of [`Config::welcome_rate`]. A client needs one WELCOME per start (then ANNOUNCEs find it a
/// restarted daemon), and resends its HELLO with backoff when one goes unanswered. Ten a second with a
/// burst of 20 serves a terminal server whose users all start `mpc` within a few seconds, while one source
/// address receives at most ten small datagrams a second however many HELLOs claim to come from it.
pub const DEFAULT_WELCOME_RATE: u32 = 10;

impl Config {
    /// DESIGN.md's defaults for a daemon of instance `instance`, holding `identity`, on the default group
    /// and port.
    pub fn new(instance: u64, identity: Identity) -> Config {
        Config {
            instance,
            sctp_port: crate::io::sctp_udp::DEFAULT_UDP_PORT,
            sctp_udp_port: crate::io::sctp_udp::DEFAULT_UDP_PORT,
            group: crate::discovery::DEFAULT_GROUP,
            heartbeat: Duration::from_secs(1),
            max_retransmits: 3,
            rto_min: Duration::from_millis(100),
            rto_max: Duration::from_millis(400),
            offline_ttl: Duration::from_secs(24 * 3600),
            max_clients: 200_000,
            save_delay: Duration::from_secs(1),
            host_ip: None,
            stop_grace: Duration::from_secs(2),
            identity,
            psk: None,
            handshake_timeout: Duration::from_secs(5),
            binding_ttl: Duration::from_secs(90 * 24 * 3600),
            max_clients_per_host: registry::DEFAULT_MAX_CLIENTS_PER_HOST,
            max_offline_per_host: registry::DEFAULT_MAX_OFFLINE_PER_HOST,
            welcome_rate: DEFAULT_WELCOME_RATE,
            ticket_lifetime: DEFAULT_TICKET_LIFETIME,
        }
    }

    /// The longest a silent client can stay online, from the last heartbeat it answered (or, for one that
    /// never answered any, from its association's start): the next heartbeat is due one interval plus up to
    /// 1.5 RTO later (RFC 9260 §8.3 jitter; deferring to the client's own heartbeats waits interval + 2 RTO
    /// after its last one, no longer), then `max_retransmits + 1` unanswered heartbeats of one backed-off RTO
    /// each. The RTO is taken at its initial value, as it is before the first round trip is measured: the
    /// whole-system simulation found a client that died within a second of registering outliving a bound
    /// built on RTO.Min.
    pub fn detection_bound(&self) -> Duration {
        let rto = self.sctp().rto;
        self.heartbeat
            + rto.initial * 3 / 2
            + rto.backoff_total(rto.initial, u32::from(self.max_retransmits) + 1)
    }

    /// The SCTP settings of the daemon's endpoint.
    pub fn sctp(&self) -> SctpConfig {
        SctpConfig {
            port: self.sctp_port,
            accept: true,
            heartbeat_interval: Some(self.heartbeat),
            rto: RtoConfig {
                // RFC 9260's RTO.Initial of 1 s is far too slow for a LAN: 300 ms, within the bounds.
                initial: Duration::from_millis(300).clamp(self.rto_min, self.rto_max),
                min: self.rto_min,
                max: self.rto_max,
            },
            max_retransmits: self.max_retransmits,
            streams: 2,
            max_associations: self.max_clients.saturating_mul(2).max(64),
            // Clients heartbeat every second (mpc); answering those is enough to know they live.
            defer_to_peer_heartbeats: true,
            // After a restart every client sends INIT within a second or so, and one turn may read thousands:
            // room for their INIT ACKs (a few hundred bytes each, 5 MB at most) instead of dropping all but
            // 1 024 into T1 retransmissions.
            max_pending_replies: 16 * 1024,
            ..SctpConfig::default()
        }
    }
}

/// Counters of the server's own work (the endpoint and the registry count theirs).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// HELLOs answered.
    pub hellos: u64,
    /// HELLOs not answered because the turn's reply budget was spent (a flood).
    pub hellos_unanswered: u64,
    /// Discovery datagrams without our magic.
    pub discovery_foreign: u64,
    /// Discovery datagrams of another protocol version.
    pub discovery_bad_version: u64,
    /// Malformed discovery datagrams.
    pub discovery_malformed: u64,
    /// ANNOUNCEs of another daemon heard on our group.
    pub foreign_announces: u64,
    /// Messages and HELLOs from clients of an older protocol, each answered with a refusal that says to
    /// upgrade.
    pub old_protocol: u64,
    /// Discovery datagrams without a valid MAC while the daemon requires the network secret.
    pub discovery_unauthenticated: u64,
    /// Handshakes completed (sessions opened), resumptions included.
    pub handshakes: u64,
    /// Of those, resumptions with a ticket (one X25519 multiplication instead of four).
    pub resumptions: u64,
    /// Resumption tickets not accepted (expired, from before a key or secret rotation, forged): the client
    /// was told to make a full handshake.
    pub tickets_refused: u64,
    /// Handshakes that failed (a wrong key or secret, garbage, a message out of place).
    pub handshakes_failed: u64,
    /// Handshakes refused because the client's use of the network secret does not match ours.
    pub handshakes_refused: u64,
    /// Associations aborted for not completing their handshake in time.
    pub handshake_timeouts: u64,
    /// Sealed messages that did not open (altered, replayed, forged), dropped.
    pub sealed_rejected: u64,
    /// Messages that were not a well-formed secured frame, or came before the session was open, dropped.
    pub unsealed_dropped: u64,
    /// Stalls detected (turns that woke more than [`crate::time::STALL`] late).
    pub stalls: u64,
    /// The longest stall, in ms.
    pub longest_stall_ms: u64,
    /// HELLOs not answered because their source address was over [`Config::welcome_rate`].
    pub hellos_rate_limited: u64,
    /// Source addresses forgotten by the WELCOME rate limiter to stay within its table's bound while more
    /// than that many were sending at once (a flood from many addresses, likely spoofed).
    pub hello_sources_evicted: u64,
}

/// What the daemon around the server should know about (log, act on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The roster changed (join, leave, expiry...), for the log.
    Roster(registry::Event),
    /// The roster changed [`Config::save_delay`] ago: save [`Server::registry`]'s entries now.
    SaveDue,
    /// The server was stalled for this long (see [`Server::handle_stall`]); every client is probed again
    /// before any is judged.
    Stalled(Duration),
    /// Another daemon announced itself on our group from this address.
    ForeignDaemon(SocketAddr),
    /// A client of an older protocol at this address was told to upgrade.
    OldProtocol(Option<SocketAddr>),
    /// A client's handshake failed or was refused (`why` says which), at this address.
    HandshakeFailed {
        /// The client's address.
        from: Option<SocketAddr>,
        /// Why, in a few words.
        why: &'static str,
    },
    /// After [`Server::stop`]: every association closed, or the grace period passed with this many left.
    Stopped {
        /// Associations that did not finish their shutdown in time.
        unfinished: usize,
    },
}

/// How an association ended, in the words the log and the registry use.
pub fn why(r: DownReason) -> &'static str {
    match r {
        DownReason::Shutdown => "left",
        DownReason::PeerAbort(_) => "aborted its association",
        DownReason::LocalAbort => "association aborted",
        DownReason::Lost => "stopped answering heartbeats",
        DownReason::InitFailed => "association never completed",
        DownReason::Unreachable => "its port is closed",
        DownReason::ProtocolViolation => "broke the protocol",
    }
}

/// A shared plaintext (held weakly, to tell it is still the same one) and its sealed body.
type SealedBody = (std::sync::Weak<[u8]>, Body);

/// A sealed shared body and its digest (what each client's head authenticates), both made once.
#[derive(Clone)]
struct Body {
    bytes: Arc<[u8]>,
    digest: [u8; broadcast::DIGEST_LEN],
}

impl Body {
    fn seal(sealer: &mut Sealer, plain: &[u8]) -> Body {
        let bytes = sealer.seal(plain);
        Body {
            digest: broadcast::digest(&bytes),
            bytes,
        }
    }
}

/// The Noise state of one association.
enum Link {
    /// Responding to an XX handshake: the client's last message is still due.
    Handshake(Handshake),
    /// The session is open; the registry knows the connection. Broadcasts to it are headed by `tagger`.
    Open(Session, Tagger),
}

/// The daemon's protocol core.
pub struct Server {
    cfg: Config,
    ep: Endpoint,
    registry: Registry,
    responder: Responder,
    /// Each association's session (or handshake); none before its first handshake message.
    links: HashMap<AssocId, Link>,
    /// Associations that came up, in order, with the deadline for their handshake.
    deadlines: VecDeque<(Instant, AssocId)>,
    seeds: Seeds,
    /// Seals roster broadcasts once for every client.
    broadcast: Sealer,
    /// Issues and opens resumption tickets (none if [`Config::ticket_lifetime`] is zero).
    tickets: Option<TicketKey>,
    /// Shared roster messages (snapshot pages, held deltas) sealed already, by the address of their
    /// plaintext, while it lives: each is sealed once however many clients are sent it.
    sealed: HashMap<usize, SealedBody>,
    /// Wall-clock time (Unix ms) at `Instant::ZERO`: the "since" times users see.
    wall0: u64,
    stats: Stats,
    events: VecDeque<Event>,
    /// Input arrived since the endpoint's events were last moved into the registry.
    unpumped: bool,
    /// When [`Event::SaveDue`] is reported, while a change waits to be saved.
    save_at: Option<Instant>,
    /// Since when the server is stopping.
    stopping: Option<Instant>,
    stopped: bool,
}

impl Server {
    /// A server that starts at `now` (and announces itself at once); `wall0_ms` is the wall-clock time at
    /// `Instant::ZERO` in Unix ms; `seed` seeds the SCTP endpoint's CSPRNG (verification tags, cookie keys).
    pub fn new(cfg: Config, seed: [u8; 32], wall0_ms: u64, now: Instant) -> Server {
        let ep = Endpoint::new(cfg.sctp(), seed);
        let registry = Registry::new(registry::Config {
            max_clients: cfg.max_clients,
            offline_ttl: cfg.offline_ttl,
            daemon: cfg.instance,
            host_ip: cfg.host_ip,
            binding_ttl: cfg.binding_ttl,
            max_clients_per_host: cfg.max_clients_per_host,
            max_offline_per_host: cfg.max_offline_per_host,
            ..registry::Config::default()
        });
        Server {
            responder: Responder::new(&cfg, now),
            links: HashMap::new(),
            deadlines: VecDeque::new(),
            seeds: Seeds::new(&seed),
            broadcast: Sealer::new(crate::secure::derive_seed(&seed, "roster broadcast key")),
            tickets: (!cfg.ticket_lifetime.is_zero())
                .then(|| TicketKey::derive(&cfg.identity, cfg.psk.as_ref())),
            sealed: HashMap::new(),
            cfg,
            ep,
            registry,
            wall0: wall0_ms,
            stats: Stats::default(),
            events: VecDeque::new(),
            unpumped: false,
            save_at: None,
            stopping: None,
            stopped: false,
        }
    }

    /// Restores a saved roster (see [`Registry::load`]); call before any input. Returns how many entries
    /// were loaded.
    pub fn load(&mut self, img: registry::saved::Image) -> usize {
        self.registry.load(img)
    }

    /// Frees a nickname from its key (`mpd release`; see [`Registry::release`]).
    pub fn release(
        &mut self,
        now: Instant,
        nick: &crate::nick::Nick,
    ) -> Result<(), registry::ReleaseError> {
        let r = self.registry.release(self.wall_ms(now), nick);
        self.unpumped = true;
        r
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The roster (for saving and status).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The SCTP endpoint (for status: counters, association count).
    pub fn endpoint(&self) -> &Endpoint {
        &self.ep
    }

    /// The server's own counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Wall-clock Unix ms at `now`.
    pub fn wall_ms(&self, now: Instant) -> u64 {
        self.wall0 + now.as_millis()
    }

    /// An SCTP packet arrived on the encapsulation socket.
    pub fn handle_sctp(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.ep.handle(now, from, bytes);
        self.unpumped = true;
    }

    /// An ICMP port unreachable arrived for a datagram we sent (see [`Endpoint::handle_unreachable`]).
    pub fn handle_unreachable(&mut self, _now: Instant, dst: SocketAddr, payload: &[u8]) {
        self.ep.handle_unreachable(dst, payload);
        self.unpumped = true;
    }

    /// A datagram arrived on the discovery group socket. A HELLO is answered unless its source address is
    /// over [`Config::welcome_rate`].
    pub fn handle_discovery(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if let Some(addr) = self.responder.handle(now, from, bytes, &mut self.stats) {
            self.events.push_back(Event::ForeignDaemon(addr));
        }
    }

    /// The caller's loop woke `late` after the deadline it asked for. Past [`crate::time::STALL`], the server was stalled
    /// (stopped, suspended, starved): what it could not hear meanwhile is not held against any client.
    pub fn handle_stall(&mut self, now: Instant, late: Duration) {
        if late <= STALL {
            return;
        }
        self.stats.stalls += 1;
        self.stats.longest_stall_ms = self.stats.longest_stall_ms.max(late.as_millis() as u64);
        self.events.push_back(Event::Stalled(late));
        self.ep.handle_stall(now, self.cfg.heartbeat);
        // Clients that gave up on us meanwhile come back by themselves: give them time to. After a shorter
        // stall (a long busy turn under a join storm) none can have given up, and the grace would only delay
        // the verdict on clients that really died.
        if late >= crate::client::shortest_give_up() {
            self.registry
                .note_stall(now, self.cfg.detection_bound() * 2 + late);
        }
        self.unpumped = true;
    }

    /// When [`Server::handle_timeout`] should run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let stop = self
            .stopping
            .filter(|_| !self.stopped)
            .map(|t| t + self.cfg.stop_grace);
        [
            self.ep.poll_timeout(),
            self.registry.poll_timeout(),
            self.responder.poll_timeout(),
            self.save_at,
            stop,
            self.deadlines.front().map(|d| d.0),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs what is due at `now`: SCTP timers, the registry's grace periods and expiry, ANNOUNCEs, the save.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.ep.poll_timeout().is_some_and(|t| t <= now) {
            self.ep.handle_timeout(now);
        }
        self.responder.handle_timeout(now);
        while let Some(&(t, id)) = self.deadlines.front()
            && t <= now
        {
            self.deadlines.pop_front();
            if !matches!(self.links.get(&id), Some(Link::Open(..))) && self.ep.remote(id).is_some()
            {
                self.stats.handshake_timeouts += 1;
                self.links.remove(&id);
                self.ep.abort(id);
            }
        }
        if self.save_at.is_some_and(|t| t <= now) {
            self.save_at = None;
            self.events.push_back(Event::SaveDue);
        }
        self.unpumped = true;
        self.pump(now);
    }

    /// The next SCTP datagram to send, written into `buf`.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.pump(now);
        self.ep.poll_transmit(now, buf)
    }

    /// The next discovery datagram to send (a WELCOME to a client, or an ANNOUNCE to the group), written
    /// into `buf` (at least [`crate::discovery::MAX_DATAGRAM`] bytes), to leave from the discovery sender
    /// socket.
    pub fn poll_discovery_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        self.responder.poll_transmit(buf)
    }

    /// The next event. Call after draining [`Server::poll_transmit`] (which moves the batch into the
    /// registry); calling it first does that too.
    pub fn poll_event(&mut self, now: Instant) -> Option<Event> {
        self.pump(now);
        self.events.pop_front()
    }

    /// Whether any association still has data in flight (the daemon trims its heap only once none has).
    pub fn is_sending(&self) -> bool {
        self.ep.is_sending()
    }

    /// Starts a graceful stop: no new associations, every client's association shut down. [`Event::Stopped`]
    /// follows once they closed or [`Config::stop_grace`] passed.
    pub fn stop(&mut self, now: Instant) {
        if self.stopping.is_some() {
            return;
        }
        self.stopping = Some(now);
        // Clients whose association we shut down reconnect at once; they must wait for the next daemon (its
        // ANNOUNCE calls them) instead of registering here again.
        self.ep.stop_accepting();
        let ids: Vec<AssocId> = self.ep.ids().collect();
        for id in ids {
            self.ep.shutdown(now, id);
        }
        self.unpumped = true;
    }

    /// Moves association events into the registry and the registry's output into associations, once per
    /// batch of input.
    fn pump(&mut self, now: Instant) {
        if !self.unpumped {
            return;
        }
        self.unpumped = false;
        let wall = self.wall_ms(now);
        while let Some((id, e)) = self.ep.poll_event() {
            match e {
                SctpEvent::Up => self
                    .deadlines
                    .push_back((now + self.cfg.handshake_timeout, id)),
                SctpEvent::Message { ppid, data, .. } if ppid == wire::PPID => {
                    self.on_secured(now, wall, id, &data)
                }
                SctpEvent::Message { ppid, .. }
                    if ppid == wire::PPID_V1 || ppid == wire::PPID_V2 || ppid == wire::PPID_V3 =>
                {
                    self.refuse_old(id, ppid)
                }
                SctpEvent::Message { .. } => {}
                SctpEvent::Restarted => {
                    // A new process on the same address and port: it must prove its key again.
                    self.links.remove(&id);
                    self.deadlines
                        .push_back((now + self.cfg.handshake_timeout, id));
                    self.registry.connection_restarted(now, id)
                }
                SctpEvent::Down(r) => {
                    self.links.remove(&id);
                    self.registry.connection_lost(now, wall, id, why(r))
                }
            }
        }
        // Flow control: clients whose roster output waited for room in their association resume.
        while let Some(id) = self.ep.poll_writable() {
            self.registry.handle_writable(id);
        }
        self.registry.handle_timeout(now, wall);
        self.registry.flush();
        while let Some(out) = self.registry.poll_output() {
            match out {
                Out::To(id, bytes) => self.deliver(id, bytes),
                Out::Broadcast(bytes) => self.deliver_broadcast(&bytes),
            }
        }
        // A sealed body lives as long as its plaintext: a snapshot's pages go once every client has been
        // handed them (the map holds a handful of entries, the pages of the snapshots in flight).
        if !self.sealed.is_empty() {
            self.sealed.retain(|_, (w, _)| w.strong_count() > 0);
        }
        while let Some(id) = self.registry.poll_probe() {
            self.ep.probe(now, id);
        }
        while let Some(ev) = self.registry.poll_event() {
            self.events.push_back(Event::Roster(ev));
        }
        if self.registry.take_unsaved() && self.save_at.is_none() {
            self.save_at = Some(now + self.cfg.save_delay);
        }
        if let Some(t) = self.stopping
            && !self.stopped
            && (self.ep.is_empty() || now.saturating_since(t) >= self.cfg.stop_grace)
        {
            self.stopped = true;
            self.events.push_back(Event::Stopped {
                unfinished: self.ep.len(),
            });
        }
    }

    /// A client of roster protocol 1 or 2 (no keys, no encryption) cannot talk to us. Its REGISTERED has the
    /// same layout in every version, so it is told why in words it can show, and nothing else.
    fn refuse_old(&mut self, id: AssocId, ppid: u32) {
        self.stats.old_protocol += 1;
        self.events
            .push_back(Event::OldProtocol(self.ep.remote(id).map(|(a, _)| a)));
        let reply = wire::ServerMsg::Registered {
            result: wire::RegisterResult::BadRequest,
            daemon: self.cfg.instance,
            retry_after_ms: 0,
            reason: "this mpd speaks roster protocol 4 (keys, encryption, channels and presence) and this \
                     client an older one: upgrade the client"
                .into(),
        };
        let _ = self.ep.send_owned(id, 0, false, ppid, reply.encode());
    }

    /// A message of roster protocol 4: a handshake step, or a sealed roster message.
    fn on_secured(&mut self, now: Instant, wall: u64, id: AssocId, data: &[u8]) {
        let Ok(frame) = Frame::parse(data) else {
            self.stats.unsealed_dropped += 1;
            return;
        };
        match (frame, self.links.get_mut(&id)) {
            (Frame::Data(sealed), Some(Link::Open(s, _))) => match s.open_vec(sealed) {
                Ok(plain) => self.registry.handle_message(now, wall, id, &plain),
                Err(_) => self.stats.sealed_rejected += 1,
            },
            (
                Frame::Init {
                    pattern,
                    psk,
                    noise,
                },
                None,
            ) => {
                if psk != self.cfg.psk.is_some() {
                    self.secret_mismatch(now, id, psk);
                    return;
                }
                let mut hs = Handshake::respond(
                    Context::Roster,
                    pattern,
                    &self.cfg.identity,
                    self.cfg.psk.as_ref(),
                    self.seeds.next_seed(),
                );
                let Ok(reply) = hs.answer(noise) else {
                    self.handshake_failed(now, id);
                    return;
                };
                let _ = self.ep.send_owned(id, 0, false, wire::PPID, reply);
                if hs.is_finished() {
                    self.open(now, wall, id, hs);
                } else {
                    self.links.insert(id, Link::Handshake(hs));
                }
            }
            (Frame::Resume { psk, ticket, noise }, None) => {
                if psk != self.cfg.psk.is_some() {
                    self.secret_mismatch(now, id, psk);
                    return;
                }
                let grant = match &self.tickets {
                    Some(k) => k.open(ticket, wall),
                    None => Err(TicketError::Invalid),
                };
                let Ok(grant) = grant else {
                    // Not ours, or no longer: the client makes a full handshake on this association.
                    self.stats.tickets_refused += 1;
                    let _ =
                        self.ep
                            .send_owned(id, 0, false, wire::PPID, vec![kind::RESUME_REFUSED]);
                    return;
                };
                let mut hs = Handshake::respond_resume(
                    Context::Roster,
                    ticket,
                    &grant,
                    self.seeds.next_seed(),
                );
                match hs.answer(noise) {
                    Ok(reply) if hs.is_finished() => {
                        let _ = self.ep.send_owned(id, 0, false, wire::PPID, reply);
                        self.stats.resumptions += 1;
                        self.open(now, wall, id, hs);
                    }
                    _ => self.handshake_failed(now, id),
                }
            }
            (Frame::Handshake(noise), Some(Link::Handshake(hs))) => {
                if hs.read_only(noise).is_err() || !hs.is_finished() {
                    self.handshake_failed(now, id);
                    return;
                }
                if let Some(Link::Handshake(hs)) = self.links.remove(&id) {
                    self.open(now, wall, id, hs);
                }
            }
            // A client's refusal needs no answer; anything else is out of place (data before the session, a
            // second handshake on an open one).
            (Frame::Refuse(_), _) => {}
            _ => self.stats.unsealed_dropped += 1,
        }
    }

    /// The handshake on `id` is finished: the session opens and the registry learns of the client, with the
    /// key the handshake proved.
    fn open(&mut self, now: Instant, wall: u64, id: AssocId, hs: Handshake) {
        let (Ok((session, key)), Some((remote, _))) = (hs.into_session(), self.ep.remote(id))
        else {
            self.handshake_failed(now, id);
            return;
        };
        self.stats.handshakes += 1;
        // The first message of every session: the broadcast key, and a MAC key of this client's own.
        let mut mac = [0u8; broadcast::MAC_KEY_LEN];
        mac.copy_from_slice(&self.seeds.next_seed()[..broadcast::MAC_KEY_LEN]);
        let tagger = Tagger::new(mac);
        let keys = wire::ServerMsg::BroadcastKeys {
            key: self.broadcast.key(),
            mac_key: tagger.key(),
        };
        let mut session = session;
        if let Ok(m) = session.seal_vec(&[kind::DATA], &keys.encode()) {
            let _ = self.ep.send_owned(id, 0, false, wire::PPID, m);
        }
        // Then a ticket, so the next session (after a restart of ours, or a lost association) resumes.
        if let Some(tickets) = &self.tickets {
            let secret = self.seeds.next_seed();
            let mut nonce = [0u8; 12];
            nonce.copy_from_slice(&self.seeds.next_seed()[..12]);
            let lifetime = self.cfg.ticket_lifetime;
            let grant = Grant {
                client: key,
                secret,
                expires_ms: wall.saturating_add(lifetime.as_millis() as u64),
            };
            let msg = wire::ServerMsg::Ticket {
                lifetime_s: u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX),
                secret,
                ticket: tickets.issue(&grant, nonce),
            };
            if let Ok(m) = session.seal_vec(&[kind::DATA], &msg.encode()) {
                let _ = self.ep.send_owned(id, 0, false, wire::PPID, m);
            }
        }
        self.links.insert(id, Link::Open(session, tagger));
        self.registry.connected(id, remote, key);
    }

    /// The client's use of the network secret (`psk`) is not ours: say which side has to change.
    fn secret_mismatch(&mut self, now: Instant, id: AssocId, psk: bool) {
        self.stats.handshakes_refused += 1;
        let why = if psk {
            "this daemon has no network secret: start mpc without --secret-file"
        } else {
            "this daemon requires the network secret: start mpc with --secret-file PATH"
        };
        self.refuse(now, id, "network secret mismatch", why);
    }

    fn handshake_failed(&mut self, now: Instant, id: AssocId) {
        self.stats.handshakes_failed += 1;
        // Words for an honest client (a stale pin, a wrong secret); an attacker learns nothing it did not
        // know.
        self.refuse(
            now,
            id,
            "handshake failed",
            "handshake failed: this daemon's key or network secret is not the one this client used",
        );
    }

    /// Tells the client why in words (unauthenticated: it only gives up on its own) and closes.
    fn refuse(&mut self, now: Instant, id: AssocId, short: &'static str, why: &str) {
        self.events.push_back(Event::HandshakeFailed {
            from: self.ep.remote(id).map(|(a, _)| a),
            why: short,
        });
        self.links.remove(&id);
        let _ = self
            .ep
            .send_owned(id, 0, false, wire::PPID, Frame::refusal(why));
        self.ep.shutdown(now, id);
    }

    /// A delta for every synced subscriber: encrypted once into a shared body, sent to each behind a head of
    /// its own. One whose association has no room gets it back in the registry, unsealed, as
    /// [`Server::deliver`] does; the registry then sends it (and what follows) to that client alone.
    fn deliver_broadcast(&mut self, plain: &Arc<[u8]>) {
        let body = Body::seal(&mut self.broadcast, plain);
        let subs: Vec<AssocId> = self.registry.subscribers().collect();
        for id in subs {
            self.send_body(id, &body, plain);
        }
    }

    /// Sends one client a shared body behind its head (counter and MAC), one message of two parts so the
    /// body is not copied, if its association has room; else hands the plaintext back to the registry.
    fn send_body(&mut self, id: AssocId, body: &Body, plain: &Arc<[u8]>) {
        let Some(Link::Open(_, tagger)) = self.links.get_mut(&id) else {
            return;
        };
        if !self.ep.reserve(id, broadcast::HEAD_LEN + body.bytes.len()) {
            self.registry
                .handle_blocked(id, Payload::Shared(Arc::clone(plain)));
            return;
        }
        let p = Payload::Headed {
            head: Head::from(tagger.head_of(&body.digest)),
            body: Arc::clone(&body.bytes),
        };
        if let Err((e, _)) = self.ep.try_send(id, 0, false, wire::PPID, p) {
            debug_assert!(e != SendError::BufferFull, "room was reserved");
        }
    }

    /// The body of a shared roster message (a snapshot page, a delta held for a paced client), sealed once
    /// for all the clients it goes to.
    fn shared_body(&mut self, plain: &Arc<[u8]>) -> Body {
        let at = Arc::as_ptr(plain) as *const u8 as usize;
        if let Some((weak, body)) = self.sealed.get(&at)
            && weak.upgrade().is_some_and(|p| Arc::ptr_eq(&p, plain))
        {
            return body.clone();
        }
        let body = Body::seal(&mut self.broadcast, plain);
        self.sealed
            .insert(at, (Arc::downgrade(plain), body.clone()));
        body
    }

    /// Seals a roster message and hands it to its association. One the association has no room for goes
    /// back to the registry at once, unsealed (before the next `poll_output`, as the registry requires), which
    /// holds it and what follows for this client until the endpoint reports room (`poll_writable` above).
    /// Room is asked for before sealing: a sealed message uses up a nonce, so it must be sent exactly as
    /// sealed and in order.
    fn deliver(&mut self, id: AssocId, plain: Payload) {
        let bytes = match &plain {
            // Shared by many clients: sealed once, headed for each.
            Payload::Shared(p) => {
                let p = Arc::clone(p);
                let body = self.shared_body(&p);
                self.send_body(id, &body, &p);
                return;
            }
            Payload::Owned(v) => v,
            // The registry's messages are one part each.
            Payload::Headed { .. } => return,
        };
        let Some(Link::Open(session, _)) = self.links.get_mut(&id) else {
            return;
        };
        if !self.ep.reserve(id, 1 + bytes.len() + TAG_LEN) {
            self.registry.handle_blocked(id, plain);
            return;
        }
        let Ok(sealed) = session.seal_vec(&[kind::DATA], bytes) else {
            return;
        };
        if let Err((e, _)) = self
            .ep
            .try_send(id, 0, false, wire::PPID, Payload::Owned(sealed))
        {
            debug_assert!(e != SendError::BufferFull, "room was reserved");
        }
    }
}
