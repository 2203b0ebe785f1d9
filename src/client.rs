//! The client side of the roster protocol, sans-IO: find the daemon (HELLO until WELCOME or ANNOUNCE), open
//! an SCTP association to it, register, and keep a copy of the roster in step. If the daemon goes away, find
//! it again and register again, with jittered backoff, for as long as the client runs.
//!
//! [`Client`] owns its SCTP [`Endpoint`]; the caller moves datagrams between it and two sockets (the SCTP
//! UDP socket and the discovery sender socket, plus the group socket for ANNOUNCE) and calls
//! [`Client::handle_timeout`] when [`Client::poll_timeout`] passes.
//!
//! # Trust
//! The client trusts one daemon key per group, its [`Pin`] (kept by the application, like SSH's
//! known_hosts). WELCOMEs and ANNOUNCEs name a key; one that is not the pinned key is never followed (the
//! application is told once, with both fingerprints). With nothing pinned (first contact), the client listens
//! a moment after the first answer: two daemons with different keys are named and nothing is chosen;
//! otherwise the one key heard is trusted on first use once its handshake completes
//! ([`ClientEvent::DaemonPinned`]). The association then carries a Noise session ([`crate::secure`]): IK to
//! the key a WELCOME named (the handshake fails unless the daemon holds it), XX when the daemon was given by
//! address and only a fingerprint or nothing is known. Registration and every roster message are sealed.
//!
//! No datagram that did not come through the session makes the client drop a working association: an
//! ANNOUNCE of a new instance of our daemon only has the association probed, and a daemon that really
//! restarted answers the probe with an ABORT, after which the client connects to the announced address at
//! once.

#![forbid(unsafe_code)]

pub mod roster;

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

use crate::discovery::{Auth, DaemonInfo, Datagram, DiscoveryError, Hello};
use crate::group::{ChannelName, MAX_CHANNELS_PER_CLIENT};
use crate::identity::{Fingerprint, Identity, PublicKey};
use crate::nick::Nick;
use crate::registry::wire::{ClientMsg, PPID, Register, RegisterResult, Request, ServerMsg, flags};
use crate::sctp::{
    AssocId, Config as SctpConfig, DownReason, Endpoint, Event, RtoConfig, Transmit,
};
use crate::secure::broadcast::Receiver;
use crate::secure::ticket::Ticket;
use crate::secure::{Context, Frame, Initiator, Psk, Seeds, Step};
use crate::time::Instant;
use roster::{Applied, Roster};

/// Which daemon key the client trusts for its group.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Pin {
    /// Nothing yet: the first daemon heard is trusted once its handshake completes, unless another key
    /// answers too.
    None,
    /// A fingerprint given up front (`--daemon-key`): only a key with this fingerprint is followed.
    Fingerprint(Fingerprint),
    /// The key pinned on an earlier contact.
    Key(PublicKey),
}

impl Pin {
    /// Whether a daemon holding `key` may be followed.
    pub fn accepts(&self, key: &PublicKey) -> bool {
        match self {
            Pin::None => true,
            Pin::Fingerprint(f) => key.fingerprint() == *f,
            Pin::Key(k) => k == key,
        }
    }

    /// The pinned fingerprint, if any.
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        match self {
            Pin::None => None,
            Pin::Fingerprint(f) => Some(*f),
            Pin::Key(k) => Some(k.fingerprint()),
        }
    }
}

/// How the client finds and talks to the daemon.
#[derive(Clone, Debug)]
pub struct Config {
    /// Our nickname (observers send it too, for the daemon's log).
    pub nick: Nick,
    /// Random per start; lets the daemon tell a restarted client from a second one.
    pub instance: u64,
    /// Our chat TCP port (0 for observers).
    pub chat_port: u16,
    /// A one-shot observer: reads the roster without joining it.
    pub observer: bool,
    /// Wants roster changes after the first snapshot.
    pub subscribe: bool,
    /// An observer that speaks under its nickname (`mpc send`): it claims the nickname for its key
    /// ([`flags::CLAIM`]).
    pub claim: bool,
    /// Discovery group.
    pub group: SocketAddr,
    /// The daemon's SCTP-over-UDP address, skipping discovery (`--daemon HOST:PORT`).
    pub daemon: Option<SocketAddr>,
    /// Our SCTP port.
    pub sctp_port: u16,
    /// SCTP heartbeat interval towards the daemon.
    pub heartbeat: Duration,
    /// First HELLO retry delay; doubles up to `hello_max`, jittered.
    pub hello_min: Duration,
    /// Longest HELLO retry delay.
    pub hello_max: Duration,
    /// Our long-term key.
    pub identity: Identity,
    /// The daemon key we trust.
    pub pin: Pin,
    /// The network secret, if the LAN uses one.
    pub psk: Option<Psk>,
    /// On first contact (nothing pinned), how long after the first answer to listen for another daemon
    /// before trusting the one heard.
    pub first_contact_wait: Duration,
}

impl Config {
    /// A configuration with mpc's defaults, for a client holding `identity`, nothing pinned.
    pub fn new(
        nick: Nick,
        instance: u64,
        group: SocketAddr,
        sctp_port: u16,
        identity: Identity,
    ) -> Config {
        Config {
            nick,
            instance,
            chat_port: 0,
            observer: false,
            subscribe: true,
            claim: false,
            group,
            daemon: None,
            sctp_port,
            heartbeat: Duration::from_secs(1),
            hello_min: Duration::from_millis(200),
            hello_max: Duration::from_secs(5),
            identity,
            pin: Pin::None,
            psk: None,
            first_contact_wait: FIRST_CONTACT_WAIT,
        }
    }
}

/// How long a client with nothing pinned listens, after the first daemon answered, for another one with a
/// different key before trusting the first (a WELCOME from every daemon on the LAN arrives within a few
/// milliseconds; 300 ms leaves room for a busy one). Paid once per state directory and group.
pub const FIRST_CONTACT_WAIT: Duration = Duration::from_millis(300);

/// The SCTP settings of a client's association to the daemon (mpc's, and the load harness's simulated
/// clients', so that they behave alike).
pub fn sctp_config(port: u16, heartbeat: Duration) -> SctpConfig {
    SctpConfig {
        port,
        accept: false,
        heartbeat_interval: Some(heartbeat),
        // More patient with the daemon than the daemon is with clients (about 5 s against 2.3 s): a daemon
        // that pauses briefly is not abandoned, and a dead one is still found in seconds.
        rto: RtoConfig {
            initial: Duration::from_millis(300),
            min: Duration::from_millis(100),
            max: Duration::from_secs(1),
        },
        max_retransmits: 5,
        // A daemon restarting comes back within seconds: keep trying INIT a while at a bounded RTO.
        max_init_retransmits: 10,
        streams: 2,
        ..SctpConfig::default()
    }
}

/// The shortest time a client can take to give up on a daemon that stopped answering: its last
/// Association.Max.Retrans + 1 probes each wait one RTO, doubling from RTO.Min. A daemon that was stalled for
/// less than this lost no client to the stall, whatever the heartbeat interval.
pub fn shortest_give_up() -> Duration {
    let cfg = sctp_config(0, Duration::from_secs(1));
    cfg.rto
        .backoff_total(cfg.rto.min, u32::from(cfg.max_retransmits) + 1)
}

/// What happened, for the application to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// A HELLO went out (the `attempt`th since the daemon was last lost).
    Searching {
        /// Count.
        attempt: u32,
    },
    /// A daemon answered; connecting to it.
    DaemonFound {
        /// Its SCTP-over-UDP address.
        addr: SocketAddr,
    },
    /// Registered (or, for an observer, accepted); the roster follows.
    Registered {
        /// The daemon's instance id.
        daemon: u64,
    },
    /// Registration refused.
    Rejected {
        /// Why, as a code.
        result: RegisterResult,
        /// Why, as a sentence for the user.
        reason: String,
        /// When trying again may succeed (`NickTaken`), or zero.
        retry_after: Duration,
    },
    /// The roster changed (or arrived in full).
    Roster(Applied),
    /// The association to the daemon ended; the client looks for it again.
    DaemonLost {
        /// How it ended.
        reason: DownReason,
    },
    /// A daemon whose key is not the pinned one answered or announced itself; it is not followed. Said once
    /// per key.
    DaemonKeyMismatch {
        /// Where it answered from.
        addr: SocketAddr,
        /// The fingerprint we trust.
        pinned: Fingerprint,
        /// The one it claims.
        offered: Fingerprint,
    },
    /// With nothing pinned, two daemons with different keys answered: the client chose neither and stopped.
    DaemonsDisagree {
        /// The first one heard.
        first: (SocketAddr, Fingerprint),
        /// The other.
        second: (SocketAddr, Fingerprint),
    },
    /// The handshake proved the daemon holds this key, which was not pinned as a whole key before: keep it
    /// as the pin for the group.
    DaemonPinned {
        /// The daemon's key.
        key: PublicKey,
    },
    /// The daemon refused the session and said why (unauthenticated words, shown as its claim). The client
    /// tries again later.
    Refused {
        /// Its words.
        reason: String,
    },
    /// The daemon at this address requires the network secret, which we do not have. Said once.
    SecretRequired {
        /// Where it answered from.
        addr: SocketAddr,
    },
    /// A daemon answered without proving it holds our network secret; it is not followed. Said once.
    SecretMismatch {
        /// Where it answered from.
        addr: SocketAddr,
    },
    /// A daemon of an older protocol answered; it must be upgraded. Said once.
    OldDaemon {
        /// Where it answered from.
        addr: SocketAddr,
    },
    /// The daemon's answer to [`Client::join`], [`Client::part`], [`Client::set_away`] or
    /// [`Client::rename`] (those made again after reconnecting are reported only if refused).
    Answered {
        /// What was asked.
        request: Request,
        /// What it was about: the channel, the away message, the new nickname.
        subject: String,
        /// `None`: done; else why not, for the user.
        refusal: Option<String>,
    },
    /// Our nickname changed (the daemon accepted [`Client::rename`]).
    Renamed {
        /// The nickname we had.
        from: Nick,
        /// The one we have now.
        to: Nick,
    },
    /// The daemon's answer to [`Client::query_key`]: the key `nick` is bound to, if any.
    Key {
        /// The nickname.
        nick: Nick,
        /// Its owner's key.
        key: Option<PublicKey>,
    },
}

impl ClientEvent {
    /// What a user must be told about an event of trust (daemon keys, the network secret, an old daemon), in
    /// words that say what to do; `None` for other events.
    pub fn trust_notice(&self) -> Option<String> {
        Some(match self {
            ClientEvent::DaemonKeyMismatch {
                addr,
                pinned,
                offered,
            } => format!(
                "a daemon at {addr} has key {offered}, not the key this client trusts ({pinned}); it is not \
                 followed. If the daemon was reinstalled, check its new key with its operator (`mpd key` on \
                 its host) and accept it by starting mpc once with --daemon-key {offered}"
            ),
            ClientEvent::DaemonsDisagree { first, second } => format!(
                "two daemons with different keys answer here: {} at {} and {} at {}; this client trusts \
                 neither until told which. Ask the operator for the right one (`mpd key` on its host) and \
                 start mpc with --daemon-key FINGERPRINT",
                first.1, first.0, second.1, second.0
            ),
            ClientEvent::DaemonPinned { key } => format!(
                "trusting the daemon with key {} from now on (`mpd key` on its host shows the same)",
                key.fingerprint()
            ),
            ClientEvent::Refused { reason } => format!("the daemon refused the session: {reason}"),
            ClientEvent::SecretRequired { addr } => format!(
                "the daemon at {addr} requires the network secret: start mpc with --secret-file PATH (the \
                 file comes from its operator)"
            ),
            ClientEvent::SecretMismatch { addr } => format!(
                "a daemon at {addr} does not hold this client's network secret; it is not followed (check \
                 --secret-file)"
            ),
            ClientEvent::OldDaemon { addr } => format!(
                "the daemon at {addr} speaks an older protocol (no keys, no encryption): it must be upgraded"
            ),
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Discovering {
        next_hello: Instant,
        delay: Duration,
    },
    /// First contact: a daemon answered; listening until `until` for another key before connecting to it.
    Choosing {
        until: Instant,
        daemon: DaemonInfo,
        addr: SocketAddr,
    },
    Connecting {
        assoc: AssocId,
        daemon: u64,
    },
    Registered {
        assoc: AssocId,
        daemon: u64,
    },
    /// Refused, or shut down by the application: no more attempts.
    Stopped,
}

/// Things said once ([`ClientEvent`]s that could repeat with every datagram), bounded.
const MAX_TOLD: usize = 64;

/// The client.
pub struct Client {
    cfg: Config,
    ep: Endpoint,
    state: State,
    /// The session on our association to the daemon.
    link: Initiator,
    roster: Roster,
    rng: ChaCha8Rng,
    seeds: Seeds,
    attempts: u32,
    events: VecDeque<ClientEvent>,
    discovery_out: VecDeque<(SocketAddr, Datagram)>,
    /// Our daemon announced a new instance at this address: where to connect once the association it
    /// replaces is seen to fail (the probe answered with an ABORT).
    announced: Option<(DaemonInfo, SocketAddr)>,
    /// Keys and addresses already reported (see [`MAX_TOLD`]).
    told: Vec<(u8, [u8; 32])>,
    /// The last refusal reported, so a repeated one is not reported again.
    last_refusal: Option<String>,
    /// Key queries waiting for a session to carry them (bounded: [`MAX_KEY_QUERIES`]).
    key_queries: Vec<Nick>,
    /// The session's broadcast keys (its first message): the key broadcasts are encrypted with, and our
    /// authenticator of the copies addressed to us.
    broadcast: Option<Receiver>,
    /// The daemon's last resumption ticket, and when it expires: the next session with that daemon resumes
    /// with it (one X25519 multiplication a side instead of four).
    ticket: Option<(Ticket, Instant)>,
    /// Another address a WELCOME gave for the daemon we are connecting to, and when to go there if the
    /// association being set up is not up by then (see [`FALLBACK_AFTER`]).
    fallback: Option<(DaemonInfo, SocketAddr, Instant)>,
    /// The association being set up came up (its INIT was answered).
    up: bool,
    /// The channels we are in, as we asked: joined again after every registration, so a daemon that lost
    /// its roster gets them back.
    channels: BTreeSet<ChannelName>,
    /// Our away message, as we set it (`None`: present); set again after every registration.
    away: Option<String>,
    /// Requests sent and not answered yet, in order (answers come in the order of the requests, on one
    /// ordered stream): what each was, and whether its success is news to the application.
    asked: VecDeque<(Asked, bool)>,
}

/// A request waiting for its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Asked {
    Join(ChannelName),
    Part(ChannelName),
    Away(Option<String>),
    Rename(Nick),
}

/// Requests waiting for answers at most; past it, new ones are refused locally (a daemon that does not
/// answer is lost soon anyway).
const MAX_ASKED: usize = 64;

/// How long an association to the daemon may take to come up before a second address a WELCOME gave for the
/// same key is tried instead. A daemon on the LAN answers an INIT within milliseconds (even under load:
/// answering an INIT is stateless); an address nobody answers is what a forged WELCOME names, and giving up on
/// it the usual way (INIT retransmissions) took about ten seconds.
pub const FALLBACK_AFTER: Duration = Duration::from_secs(1);

/// Key queries held at most while no session is open.
const MAX_KEY_QUERIES: usize = 256;

impl Client {
    /// A client that starts looking for the daemon at `now`. `seed` seeds its randomness.
    pub fn new(cfg: Config, seed: [u8; 32], now: Instant) -> Client {
        let mut rng = ChaCha8Rng::from_seed(seed);
        let mut ep_seed = [0u8; 32];
        rng.fill_bytes(&mut ep_seed);
        let sctp = sctp_config(cfg.sctp_port, cfg.heartbeat);
        let mut c = Client {
            ep: Endpoint::new(sctp, ep_seed),
            state: State::Stopped,
            link: Initiator::Idle,
            roster: Roster::new(),
            seeds: Seeds::new(&seed),
            rng,
            attempts: 0,
            events: VecDeque::new(),
            discovery_out: VecDeque::new(),
            announced: None,
            told: Vec::new(),
            last_refusal: None,
            key_queries: Vec::new(),
            broadcast: None,
            ticket: None,
            fallback: None,
            up: false,
            channels: BTreeSet::new(),
            away: None,
            asked: VecDeque::new(),
            cfg,
        };
        c.begin_search(now, Duration::ZERO);
        c
    }

    /// Our instance id.
    pub fn instance(&self) -> u64 {
        self.cfg.instance
    }

    /// The roster as known.
    pub fn roster(&self) -> &Roster {
        &self.roster
    }

    /// Whether the client stopped trying by itself (refused, or it heard two daemons and trusts neither);
    /// only [`Client::retry`] starts it again.
    pub fn has_given_up(&self) -> bool {
        self.state == State::Stopped
    }

    /// Whether the client is registered with a daemon right now.
    pub fn is_registered(&self) -> bool {
        matches!(self.state, State::Registered { .. })
    }

    /// The SCTP endpoint's counters.
    pub fn sctp_stats(&self) -> &crate::sctp::Stats {
        self.ep.stats()
    }

    /// The daemon key trusted now (updated when a first contact pins one).
    pub fn pin(&self) -> Pin {
        self.cfg.pin
    }

    /// Our public key.
    pub fn public_key(&self) -> PublicKey {
        self.cfg.identity.public()
    }

    /// Our identity (the chat peer's sessions prove it too).
    pub fn identity(&self) -> &Identity {
        &self.cfg.identity
    }

    /// The network secret, if any.
    pub fn psk(&self) -> Option<&Psk> {
        self.cfg.psk.as_ref()
    }

    /// Our nickname (changed by an accepted [`Client::rename`]).
    pub fn nick(&self) -> Nick {
        self.cfg.nick
    }

    /// The channels we are in (as asked; the daemon confirms with [`ClientEvent::Answered`] and the
    /// roster).
    pub fn channels(&self) -> impl Iterator<Item = &ChannelName> {
        self.channels.iter()
    }

    /// Our away message, if we said we are away.
    pub fn away(&self) -> Option<&str> {
        self.away.as_deref()
    }

    /// Joins a channel: asked now if registered, else on registration. `Err` says why not at once.
    pub fn join(&mut self, channel: ChannelName) -> Result<(), String> {
        if !self.channels.contains(&channel) && self.channels.len() >= MAX_CHANNELS_PER_CLIENT {
            return Err(format!(
                "you are in {MAX_CHANNELS_PER_CLIENT} channels already, the most one can be in: leave one \
                 first (part #NAME)"
            ));
        }
        self.channels.insert(channel);
        self.ask(Asked::Join(channel), true)
    }

    /// Leaves a channel.
    pub fn part(&mut self, channel: ChannelName) -> Result<(), String> {
        if !self.channels.remove(&channel) && !self.in_roster_channel(&channel) {
            return Err(format!("you are not in {channel}"));
        }
        self.ask(Asked::Part(channel), true)
    }

    /// Whether the roster shows us in `channel` (a channel the daemon kept from an earlier run).
    fn in_roster_channel(&self, channel: &ChannelName) -> bool {
        self.roster
            .get(&self.cfg.nick)
            .is_some_and(|e| e.in_channel(channel))
    }

    /// Says we are away (with a message, possibly empty) or back (`None`).
    pub fn set_away(&mut self, message: Option<String>) -> Result<(), String> {
        self.away.clone_from(&message);
        self.ask(Asked::Away(message), true)
    }

    /// Asks to be called `to` from now on; our nickname changes when the daemon accepts
    /// ([`ClientEvent::Renamed`]). Only while registered: a rename must find our entry.
    pub fn rename(&mut self, to: Nick) -> Result<(), String> {
        if !self.is_registered() {
            return Err("not connected to the daemon right now; rename once connected".into());
        }
        self.ask(Asked::Rename(to), true)
    }

    /// Sends a request now if registered (remembering it for its answer); otherwise it is made on
    /// registration from `channels` and `away`.
    fn ask(&mut self, what: Asked, news: bool) -> Result<(), String> {
        let State::Registered { assoc, .. } = self.state else {
            return Ok(());
        };
        if self.asked.len() >= MAX_ASKED {
            return Err(
                "the daemon has not answered earlier requests yet; try again in a moment".into(),
            );
        }
        let m = match &what {
            Asked::Join(c) => ClientMsg::Join { channel: *c },
            Asked::Part(c) => ClientMsg::Part { channel: *c },
            Asked::Away(m) => ClientMsg::Away { message: m.clone() },
            Asked::Rename(n) => ClientMsg::Rename {
                nick: n.to_string(),
            },
        };
        self.send_sealed(assoc, &m.encode());
        self.asked.push_back((what, news));
        Ok(())
    }

    /// After registering: our channels and presence again (the daemon keeps them, but may have restarted
    /// without its roster). Channels the daemon kept that we did not know of are adopted from the roster
    /// when it arrives.
    fn reassert(&mut self) {
        self.asked.clear();
        for c in self.channels.clone() {
            let _ = self.ask(Asked::Join(c), false);
        }
        if self.away.is_some() {
            let _ = self.ask(Asked::Away(self.away.clone()), false);
        }
    }

    /// The daemon answered our oldest request.
    fn answered(&mut self, request: Request, ok: bool, reason: &str) {
        let Some((what, news)) = self.asked.pop_front() else {
            return;
        };
        let refusal = (!ok).then(|| reason.to_string());
        let subject = match &what {
            Asked::Join(c) | Asked::Part(c) => c.to_string(),
            Asked::Away(m) => m.clone().unwrap_or_default(),
            Asked::Rename(n) => n.to_string(),
        };
        match what {
            Asked::Join(c) if !ok => {
                self.channels.remove(&c);
            }
            Asked::Rename(to) if ok && to != self.cfg.nick => {
                let from = std::mem::replace(&mut self.cfg.nick, to);
                self.events.push_back(ClientEvent::Renamed { from, to });
            }
            _ => {}
        }
        if news || refusal.is_some() {
            self.events.push_back(ClientEvent::Answered {
                request,
                subject,
                refusal,
            });
        }
    }

    /// Asks the daemon which key `nick` is bound to; the answer comes as [`ClientEvent::Key`]. Asked now if
    /// registered, else once registered.
    pub fn query_key(&mut self, nick: Nick) {
        match self.state {
            State::Registered { assoc, .. } => {
                self.send_sealed(assoc, &ClientMsg::KeyQuery { nick }.encode())
            }
            _ if self.key_queries.len() < MAX_KEY_QUERIES && !self.key_queries.contains(&nick) => {
                self.key_queries.push(nick)
            }
            _ => {}
        }
    }

    /// Reports `ev` unless an event of this `kind` about `what` was reported already.
    fn tell_once(&mut self, kind: u8, what: [u8; 32], ev: ClientEvent) {
        if self.told.contains(&(kind, what)) {
            return;
        }
        if self.told.len() >= MAX_TOLD {
            self.told.remove(0);
        }
        self.told.push((kind, what));
        self.events.push_back(ev);
    }

    fn jitter(&mut self, d: Duration) -> Duration {
        // ±50 %, so clients that lost the daemon together do not all come back in the same instant.
        let us = d.as_micros() as u64;
        if us == 0 {
            return d;
        }
        Duration::from_micros(us / 2 + self.rng.next_u64() % (us + 1))
    }

    fn begin_search(&mut self, now: Instant, first_delay: Duration) {
        self.link = Initiator::Idle;
        self.fallback = None;
        self.broadcast = None;
        if let Some(addr) = self.cfg.daemon {
            // No discovery: connect straight to the given address.
            self.state = State::Discovering {
                next_hello: now + first_delay,
                delay: self.cfg.hello_min,
            };
            if first_delay.is_zero() {
                self.connect(now, None, addr);
            }
            return;
        }
        self.state = State::Discovering {
            next_hello: now + first_delay,
            delay: self.cfg.hello_min,
        };
        if first_delay.is_zero() {
            self.hello(now);
        }
    }

    fn hello(&mut self, now: Instant) {
        let State::Discovering { delay, .. } = self.state else {
            return;
        };
        self.attempts += 1;
        if let Some(addr) = self.cfg.daemon {
            self.connect(now, None, addr);
            return;
        }
        let hello = Datagram::Hello(Hello {
            instance: self.cfg.instance,
            sctp_udp_port: self.cfg.sctp_port,
        });
        self.discovery_out.push_back((self.cfg.group, hello));
        self.events.push_back(ClientEvent::Searching {
            attempt: self.attempts,
        });
        let wait = self.jitter(delay);
        self.state = State::Discovering {
            next_hello: now + wait,
            delay: (delay * 2).min(self.cfg.hello_max),
        };
    }

    /// Opens an association to the daemon at `addr` and queues the first handshake message (sent as soon as
    /// the association is up): IK to the key `daemon` names (already checked against the pin), or XX for a
    /// daemon given by address.
    fn connect(&mut self, now: Instant, daemon: Option<DaemonInfo>, addr: SocketAddr) {
        self.broadcast = None;
        self.fallback = None;
        self.up = false;
        let sctp_port = daemon.map_or(addr.port(), |d| d.sctp_port);
        let expect = daemon.map(|d| d.key).or(match self.cfg.pin {
            Pin::Key(k) => Some(k),
            _ => None,
        });
        match self.ep.connect(now, addr, sctp_port) {
            Ok(assoc) => {
                self.events.push_back(ClientEvent::DaemonFound { addr });
                // Resume with the ticket of the daemon we expect, if it has not expired (another is no use).
                self.ticket = self
                    .ticket
                    .take()
                    .filter(|(t, expires)| *expires > now && Some(t.daemon) == expect);
                self.start_link(assoc, expect.as_ref());
                self.state = State::Connecting {
                    assoc,
                    daemon: daemon.map_or(0, |d| d.instance),
                };
            }
            Err(e) => log::debug!("connect to {addr} failed: {e}"),
        }
    }

    /// Starts the session on `assoc` and queues its first message (sent once the association is up): a
    /// resumption with our ticket if we hold one, else IK to `expect`, or XX without it.
    fn start_link(&mut self, assoc: AssocId, expect: Option<&PublicKey>) {
        let seed = self.seeds.next_seed();
        let (link, first) = match &self.ticket {
            Some((t, _)) => Initiator::resume(Context::Roster, t, self.cfg.psk.is_some(), seed),
            None => Initiator::start(
                Context::Roster,
                &self.cfg.identity,
                expect,
                self.cfg.psk.as_ref(),
                seed,
            ),
        };
        match first {
            Ok(m) => {
                let _ = self.ep.send_owned(assoc, 0, false, PPID, m);
            }
            Err(e) => log::debug!("first handshake message: {e}"),
        }
        self.link = link;
    }

    /// The REGISTER (or observation) that opens the roster, sealed.
    fn register(&mut self, assoc: AssocId) {
        let reg = ClientMsg::Register(Register {
            flags: if self.cfg.observer {
                flags::OBSERVER
            } else {
                0
            } | if self.cfg.subscribe {
                flags::SUBSCRIBE
            } else {
                0
            } | if self.cfg.claim { flags::CLAIM } else { 0 },
            instance: self.cfg.instance,
            nick: self.cfg.nick.to_string(),
            chat_port: self.cfg.chat_port,
            chat_ip: None,
        });
        self.send_sealed(assoc, &reg.encode());
    }

    fn send_sealed(&mut self, assoc: AssocId, plain: &[u8]) {
        if let Some(m) = self.link.seal(plain) {
            let _ = self.ep.send_owned(assoc, 0, false, PPID, m);
        }
    }

    /// A discovery datagram arrived (WELCOME on the sender socket, ANNOUNCE on the group socket).
    pub fn handle_discovery(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if self.cfg.daemon.is_some() {
            return;
        }
        let mac_key = self.cfg.psk.as_ref().map(|p| *p.discovery_key());
        let (d, auth) = match Datagram::parse(bytes, mac_key.as_ref()) {
            Ok(x) => x,
            Err(DiscoveryError::Version(v)) if v < crate::discovery::VERSION => {
                let mut what = [0u8; 32];
                what[..2].copy_from_slice(&from.port().to_be_bytes());
                if let std::net::IpAddr::V4(a) = from.ip() {
                    what[2..6].copy_from_slice(&a.octets());
                }
                self.tell_once(4, what, ClientEvent::OldDaemon { addr: from });
                return;
            }
            Err(_) => return,
        };
        let (daemon, announce) = match d {
            Datagram::Welcome { to, daemon } if to == self.cfg.instance => (daemon, false),
            Datagram::Announce(daemon) => (daemon, true),
            _ => return,
        };
        let addr = daemon.sctp_addr(from);
        if self.cfg.psk.is_some() && auth != Auth::Valid {
            self.tell_once(3, daemon.key.0, ClientEvent::SecretMismatch { addr });
            return;
        }
        if self.cfg.psk.is_none() && daemon.needs_secret {
            self.tell_once(2, daemon.key.0, ClientEvent::SecretRequired { addr });
            return;
        }
        if let Some(pinned) = self.cfg.pin.fingerprint()
            && !self.cfg.pin.accepts(&daemon.key)
        {
            let offered = daemon.key.fingerprint();
            self.tell_once(
                1,
                daemon.key.0,
                ClientEvent::DaemonKeyMismatch {
                    addr,
                    pinned,
                    offered,
                },
            );
            return;
        }
        match self.state.clone() {
            State::Discovering { .. } if self.cfg.pin == Pin::None => {
                // First contact: give another daemon a moment to answer before trusting this one.
                self.state = State::Choosing {
                    until: now + self.cfg.first_contact_wait,
                    daemon,
                    addr,
                };
            }
            State::Discovering { .. } => self.connect(now, Some(daemon), addr),
            State::Choosing {
                daemon: first,
                addr: first_addr,
                ..
            } if first.key != daemon.key => {
                self.events.push_back(ClientEvent::DaemonsDisagree {
                    first: (first_addr, first.key.fingerprint()),
                    second: (addr, daemon.key.fingerprint()),
                });
                self.state = State::Stopped;
            }
            // A second address for the key we are connecting to, while that association is not up: one of
            // the two WELCOMEs is likely forged (the key is public), and only a handshake tells which. Tried
            // if the first address does not answer (see FALLBACK_AFTER); the latest such address is kept.
            // Only with a pin (which this WELCOME passed above): on first contact, another address may be
            // another key, and choosing between keys is the user's (State::Choosing).
            State::Connecting { assoc, .. }
                if !announce
                    && !self.up
                    && self.cfg.pin != Pin::None
                    && self.ep.remote(assoc).is_some_and(|(a, _)| a != addr) =>
            {
                self.fallback = Some((daemon, addr, now + FALLBACK_AFTER));
            }
            // Our daemon announcing a new instance: it restarted, or someone replays or forges its
            // ANNOUNCE. Only a probe of the working association tells; if it fails, the new instance is
            // where to go.
            State::Connecting { assoc, daemon: d } | State::Registered { assoc, daemon: d }
                if announce && d != daemon.instance =>
            {
                self.announced = Some((daemon, addr));
                self.ep.probe(now, assoc);
            }
            _ => {}
        }
    }

    /// An SCTP packet arrived on the client's UDP socket.
    pub fn handle_sctp(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.ep.handle(now, from, bytes);
        self.drain_endpoint(now);
    }

    /// An ICMP port unreachable for a datagram we sent (see [`Endpoint::handle_unreachable`]).
    pub fn handle_unreachable(&mut self, now: Instant, dst: SocketAddr, payload: &[u8]) {
        self.ep.handle_unreachable(dst, payload);
        self.drain_endpoint(now);
    }

    /// The caller's loop woke `late` after the deadline it asked for. Past [`crate::time::STALL`], the
    /// process was stalled and the association forgives what it could not have heard (see
    /// [`Endpoint::handle_stall`]); returns whether it counted as a stall.
    pub fn handle_stall(&mut self, now: Instant, late: Duration) -> bool {
        if late <= crate::time::STALL {
            return false;
        }
        self.ep.handle_stall(now, Duration::from_millis(200));
        true
    }

    /// When [`Client::handle_timeout`] should run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let hello = match self.state {
            State::Discovering { next_hello, .. } => Some(next_hello),
            State::Choosing { until, .. } => Some(until),
            State::Connecting { .. } => self.fallback.map(|(_, _, at)| at),
            _ => None,
        };
        match (self.ep.poll_timeout(), hello) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs due timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.ep.poll_timeout().is_some_and(|t| t <= now) {
            self.ep.handle_timeout(now);
            self.drain_endpoint(now);
        }
        match self.state {
            State::Discovering { next_hello, .. } if next_hello <= now => self.hello(now),
            State::Choosing {
                until,
                daemon,
                addr,
            } if until <= now => self.connect(now, Some(daemon), addr),
            State::Connecting { assoc, .. } => match self.fallback {
                // The first address answered: its handshake decides (a failed one tries the other).
                Some(_) if self.up => {}
                Some((daemon, addr, at)) if at <= now => {
                    log::debug!(
                        "the daemon's association did not come up in {FALLBACK_AFTER:?}: trying {addr}"
                    );
                    self.ep.abort(assoc);
                    self.connect(now, Some(daemon), addr);
                    // The abort's Down is for an association no longer ours: nothing to report.
                    self.drain_endpoint(now);
                }
                _ => {}
            },
            _ => {}
        }
    }

    /// The next SCTP datagram to send.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.ep.poll_transmit(now, buf)
    }

    /// The next discovery datagram to send (a HELLO to the group), written into `buf` (at least
    /// [`crate::discovery::MAX_DATAGRAM`] bytes).
    pub fn poll_discovery_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        while let Some((dst, d)) = self.discovery_out.pop_front() {
            // Only a buffer under MAX_DATAGRAM bytes fails; the HELLO is sent again later anyway.
            let mac_key = self.cfg.psk.as_ref().map(|p| *p.discovery_key());
            if let Some(len) = d.write_into(buf, mac_key.as_ref()) {
                return Some(Transmit { dst, len, flow: 0 });
            }
        }
        None
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Leaves: shuts the association down gracefully (the daemon marks us offline at once) and stops.
    pub fn shutdown(&mut self, now: Instant) {
        if let State::Connecting { assoc, .. } | State::Registered { assoc, .. } = self.state {
            self.ep.shutdown(now, assoc);
        }
        self.state = State::Stopped;
        self.link = Initiator::Idle;
        self.drain_endpoint(now);
    }

    /// Whether nothing is left to do after [`Client::shutdown`] (the association closed).
    pub fn is_closed(&self) -> bool {
        self.state == State::Stopped && self.ep.is_empty()
    }

    fn drain_endpoint(&mut self, now: Instant) {
        while let Some((id, e)) = self.ep.poll_event() {
            let ours = match self.state {
                State::Connecting { assoc, .. } | State::Registered { assoc, .. } => assoc == id,
                _ => false,
            };
            match e {
                Event::Up if ours => self.up = true,
                Event::Up | Event::Restarted => {}
                Event::Message { ppid, data, .. } if ours && ppid == PPID => {
                    self.on_secured(now, id, &data)
                }
                Event::Message { .. } => {}
                Event::Down(reason) if ours => {
                    self.events.push_back(ClientEvent::DaemonLost { reason });
                    self.roster.reset();
                    self.attempts = 0;
                    self.link = Initiator::Idle;
                    // Our daemon announced a new instance and this association failed since: go there now.
                    if let Some((daemon, addr)) = self.announced.take() {
                        self.state = State::Discovering {
                            next_hello: now + self.cfg.hello_min,
                            delay: self.cfg.hello_min,
                        };
                        self.connect(now, Some(daemon), addr);
                        continue;
                    }
                    // A daemon that shut down cleanly is probably restarting: look again at once; otherwise
                    // after a short, jittered pause.
                    let first = if reason == DownReason::Shutdown {
                        Duration::ZERO
                    } else {
                        let d = self.cfg.hello_min;
                        self.jitter(d)
                    };
                    self.begin_search(now, first);
                }
                Event::Down(_) => {}
            }
        }
    }

    /// A message of roster protocol 4 on our association: a handshake step, sealed roster data, or a
    /// refusal.
    fn on_secured(&mut self, now: Instant, assoc: AssocId, data: &[u8]) {
        // A broadcast, only after the session's first message gave the keys; one whose counter is not the
        // next or whose MAC does not cover its body (forged, replayed, another client's) is dropped.
        if let Ok(Frame::Broadcast(t)) = Frame::parse(data) {
            if let Some(Ok(plain)) = self.broadcast.as_mut().map(|r| r.open(&t)) {
                self.on_message(now, &plain);
            }
            return;
        }
        let pin = self.cfg.pin;
        match self.link.handle(data, |k| pin.accepts(k)) {
            Step::Nothing => {}
            Step::Data(plain) => self.on_message(now, &plain),
            Step::Opened { key, reply } => {
                if let Some(m) = reply {
                    let _ = self.ep.send_owned(assoc, 0, false, PPID, m);
                }
                self.last_refusal = None;
                if self.cfg.pin != Pin::Key(key) {
                    self.cfg.pin = Pin::Key(key);
                    self.events.push_back(ClientEvent::DaemonPinned { key });
                }
                self.register(assoc);
            }
            Step::NotAccepted(key) => {
                // A daemon given by address whose key is not the pinned one: never followed.
                if let (Some(pinned), Some((addr, _))) = (pin.fingerprint(), self.ep.remote(assoc))
                {
                    self.tell_once(
                        1,
                        key.0,
                        ClientEvent::DaemonKeyMismatch {
                            addr,
                            pinned,
                            offered: key.fingerprint(),
                        },
                    );
                }
                self.ep.abort(assoc);
                self.state = State::Stopped;
            }
            Step::ResumeRefused(key) => {
                // The daemon no longer takes our ticket (expired, rotated keys): the full handshake, to the
                // same key, on the same association.
                self.ticket = None;
                self.start_link(assoc, Some(&key));
            }
            Step::Failed => {
                // Not the key holder, or garbage: this association is worthless; try the other address a
                // WELCOME gave for the key, if any, else look again. A ticket is kept: only an impostor (or
                // garbage) fails a resumption, the daemon refuses a ticket it no longer takes in words.
                log::debug!("handshake with the daemon failed");
                self.ep.abort(assoc);
                if let Some((daemon, addr, _)) = self.fallback.take() {
                    self.connect(now, Some(daemon), addr);
                }
            }
            Step::Refused(why) => {
                if self.last_refusal.as_deref() != Some(why.as_str()) {
                    self.last_refusal = Some(why.clone());
                    self.events.push_back(ClientEvent::Refused { reason: why });
                }
                self.ep.abort(assoc);
                let wait = self.cfg.hello_max;
                self.begin_search(now, wait);
            }
        }
    }

    fn on_message(&mut self, now: Instant, data: &[u8]) {
        let m = match ServerMsg::parse(data) {
            Ok(m) => m,
            Err(e) => {
                log::warn!("daemon sent a malformed roster message: {e}");
                return;
            }
        };
        match (&m, self.state.clone()) {
            (
                ServerMsg::Registered {
                    result,
                    daemon,
                    retry_after_ms,
                    reason,
                },
                State::Connecting { assoc, .. },
            ) => {
                if *result == RegisterResult::Ok {
                    self.state = State::Registered {
                        assoc,
                        daemon: *daemon,
                    };
                    self.events
                        .push_back(ClientEvent::Registered { daemon: *daemon });
                    for nick in std::mem::take(&mut self.key_queries) {
                        self.send_sealed(assoc, &ClientMsg::KeyQuery { nick }.encode());
                    }
                    if !self.cfg.observer {
                        self.reassert();
                    }
                } else {
                    self.events.push_back(ClientEvent::Rejected {
                        result: *result,
                        reason: reason.clone(),
                        retry_after: Duration::from_millis(u64::from(*retry_after_ms)),
                    });
                    self.ep.shutdown(now, assoc);
                    self.state = State::Stopped;
                }
            }
            (
                ServerMsg::Snapshot { .. } | ServerMsg::Delta { .. },
                State::Registered { assoc, .. },
            ) => match self.roster.apply(&m) {
                Applied::Nothing => {}
                Applied::NeedResync => self.send_sealed(assoc, &ClientMsg::Resync.encode()),
                a => {
                    if matches!(a, Applied::Snapshot(_)) {
                        // Channels the daemon kept for us from an earlier run are ours.
                        if let Some(e) = self.roster.get(&self.cfg.nick) {
                            self.channels.extend(e.channels().iter().copied());
                        }
                    }
                    self.events.push_back(ClientEvent::Roster(a))
                }
            },
            (
                ServerMsg::Answer {
                    request,
                    ok,
                    reason,
                },
                State::Registered { .. },
            ) => self.answered(*request, *ok, reason),
            (ServerMsg::BroadcastKeys { key, mac_key }, _) => {
                self.broadcast = Some(Receiver::new(*key, *mac_key));
            }
            (
                ServerMsg::Ticket {
                    lifetime_s,
                    secret,
                    ticket,
                },
                _,
            ) => {
                // Sealed in the session with the daemon whose key we pinned when it opened.
                if let Pin::Key(daemon) = self.cfg.pin {
                    let t = Ticket {
                        daemon,
                        ticket: *ticket,
                        secret: *secret,
                    };
                    let life = Duration::from_secs(u64::from(*lifetime_s));
                    self.ticket = Some((t, now + life));
                }
            }
            (ServerMsg::Key { nick, key }, State::Registered { .. }) => {
                self.events.push_back(ClientEvent::Key {
                    nick: *nick,
                    key: *key,
                })
            }
            _ => {}
        }
    }

    /// Registers again after a rejection (e.g. once the `retry_after` of a `NickTaken` passed).
    pub fn retry(&mut self, now: Instant) {
        if self.state == State::Stopped {
            self.attempts = 0;
            self.begin_search(now, Duration::ZERO);
        }
    }
}
