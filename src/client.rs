//! The client side of the roster protocol, sans-IO: find the daemon (HELLO until WELCOME or ANNOUNCE), open
//! an SCTP association to it, register, and keep a copy of the roster in step. If the daemon goes away, find
//! it again and register again, with jittered backoff, for as long as the client runs.
//!
//! [`Client`] owns its SCTP [`Endpoint`]; the caller moves datagrams between it and two sockets (the SCTP
//! UDP socket and the discovery sender socket, plus the group socket for ANNOUNCE) and calls
//! [`Client::handle_timeout`] when [`Client::poll_timeout`] passes.

#![forbid(unsafe_code)]

pub mod roster;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

use crate::discovery::{DaemonInfo, Datagram, Hello};
use crate::nick::Nick;
use crate::registry::wire::{ClientMsg, PPID, Register, RegisterResult, ServerMsg, flags};
use crate::sctp::{
    AssocId, Config as SctpConfig, DownReason, Endpoint, Event, RtoConfig, Transmit,
};
use crate::time::Instant;
use roster::{Applied, Roster};

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
}

impl Config {
    /// A configuration with mpc's defaults.
    pub fn new(nick: Nick, instance: u64, group: SocketAddr, sctp_port: u16) -> Config {
        Config {
            nick,
            instance,
            chat_port: 0,
            observer: false,
            subscribe: true,
            group,
            daemon: None,
            sctp_port,
            heartbeat: Duration::from_secs(1),
            hello_min: Duration::from_millis(200),
            hello_max: Duration::from_secs(5),
        }
    }
}

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

/// The daemon named by `--daemon ADDR` instead of found by discovery: its SCTP port is taken to be its UDP
/// port, and its instance is unknown (0).
fn given_daemon(addr: SocketAddr) -> DaemonInfo {
    DaemonInfo {
        instance: 0,
        sctp_udp_port: addr.port(),
        sctp_port: addr.port(),
        addr: Some(addr.ip()),
    }
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
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Discovering {
        next_hello: Instant,
        delay: Duration,
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

/// The client.
pub struct Client {
    cfg: Config,
    ep: Endpoint,
    state: State,
    roster: Roster,
    rng: ChaCha8Rng,
    attempts: u32,
    events: VecDeque<ClientEvent>,
    discovery_out: VecDeque<(SocketAddr, Datagram)>,
}

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
            roster: Roster::new(),
            rng,
            attempts: 0,
            events: VecDeque::new(),
            discovery_out: VecDeque::new(),
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

    /// Whether the client is registered with a daemon right now.
    pub fn is_registered(&self) -> bool {
        matches!(self.state, State::Registered { .. })
    }

    /// The SCTP endpoint's counters.
    pub fn sctp_stats(&self) -> &crate::sctp::Stats {
        self.ep.stats()
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
        if let Some(addr) = self.cfg.daemon {
            // No discovery: connect straight to the given address.
            let daemon = given_daemon(addr);
            self.state = State::Discovering {
                next_hello: now + first_delay,
                delay: self.cfg.hello_min,
            };
            if first_delay.is_zero() {
                self.connect(now, daemon, addr);
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
            self.connect(now, given_daemon(addr), addr);
            return;
        }
        let hello = Datagram::Hello(Hello {
            instance: self.cfg.instance,
            nick: self.cfg.nick,
            chat_port: self.cfg.chat_port,
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

    fn connect(&mut self, now: Instant, daemon: DaemonInfo, addr: SocketAddr) {
        match self.ep.connect(now, addr, daemon.sctp_port) {
            Ok(assoc) => {
                self.events.push_back(ClientEvent::DaemonFound { addr });
                let reg = ClientMsg::Register(Register {
                    flags: if self.cfg.observer {
                        flags::OBSERVER
                    } else {
                        0
                    } | if self.cfg.subscribe {
                        flags::SUBSCRIBE
                    } else {
                        0
                    },
                    instance: self.cfg.instance,
                    nick: self.cfg.nick.to_string(),
                    chat_port: self.cfg.chat_port,
                    chat_ip: None,
                });
                // Queued now, sent as soon as the association is up.
                let _ = self.ep.send_owned(assoc, 0, false, PPID, reg.encode());
                self.state = State::Connecting {
                    assoc,
                    daemon: daemon.instance,
                };
            }
            Err(e) => log::debug!("connect to {addr} failed: {e}"),
        }
    }

    /// A discovery datagram arrived (WELCOME on the sender socket, ANNOUNCE on the group socket).
    pub fn handle_discovery(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if self.cfg.daemon.is_some() {
            return;
        }
        let (daemon, announce) = match Datagram::parse(bytes) {
            Ok(Datagram::Welcome { to, daemon }) if to == self.cfg.instance => (daemon, false),
            Ok(Datagram::Announce(daemon)) => (daemon, true),
            _ => return,
        };
        match self.state {
            State::Discovering { .. } => self.connect(now, daemon, daemon.sctp_addr(from)),
            // Another daemon instance announcing itself means ours restarted: our association is stale, so
            // start over with the new one at once rather than wait for it to fail.
            State::Connecting { assoc, daemon: d } | State::Registered { assoc, daemon: d }
                if announce && d != 0 && d != daemon.instance =>
            {
                self.ep.abort(assoc);
                self.drain_endpoint(now);
                self.connect(now, daemon, daemon.sctp_addr(from));
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
        if let State::Discovering { next_hello, .. } = self.state
            && next_hello <= now
        {
            self.hello(now);
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
            if let Some(len) = d.write_into(buf) {
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
                Event::Up | Event::Restarted => {}
                Event::Message { ppid, data, .. } if ours && ppid == PPID => {
                    self.on_message(now, &data)
                }
                Event::Message { .. } => {}
                Event::Down(reason) if ours => {
                    self.events.push_back(ClientEvent::DaemonLost { reason });
                    self.roster.reset();
                    self.attempts = 0;
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
                Applied::NeedResync => {
                    let _ = self
                        .ep
                        .send_owned(assoc, 0, false, PPID, ClientMsg::Resync.encode());
                }
                a => self.events.push_back(ClientEvent::Roster(a)),
            },
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
