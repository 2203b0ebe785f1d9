//! The I/O around a [`Client`]: a reactor, the SCTP-over-UDP socket, the discovery sockets, and SIGINT /
//! SIGTERM. A program (mpc, a test client, the load harness) adds its own sources with tokens from
//! [`FIRST_APP_TOKEN`] up and handles their events itself; [`ClientIo::turn`] does everything else.
//!
//! It also keeps the client's keys on disk: its identity (`identity.key`) and the pinned daemon keys
//! (`known_daemons`) in the state directory, and the network secret from `--secret-file`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use mio::net::UdpSocket;
use mio::{Interest, Token};
use nix::sys::signal::Signal;

use super::discovery::{self, Iface};
use super::sctp_udp::UdpTransport;
use crate::client::{Client, ClientEvent, Config, Pin};
use crate::identity::Fingerprint;
use crate::known_keys::Vetted;
use crate::nick::Nick;
use crate::reactor::{Reactor, ReactorEvent};
use crate::time::Instant;

const SCTP: Token = Token(0);
const GROUP: Token = Token(1);
const SENDER: Token = Token(2);
const SIGNALS: Token = Token(3);
/// Tokens below this belong to [`ClientIo`].
pub const FIRST_APP_TOKEN: usize = 8;

/// What to open.
#[derive(Clone, Debug)]
pub struct Setup {
    /// Our nickname.
    pub nick: Nick,
    /// Observer (one-shot) rather than member.
    pub observer: bool,
    /// Wants roster changes after the snapshot.
    pub subscribe: bool,
    /// An observer that speaks under its nickname claims it (see [`Config::claim`]).
    pub claim: bool,
    /// Our chat TCP port (0 for observers).
    pub chat_port: u16,
    /// Discovery group.
    pub group: SocketAddr,
    /// `--iface ADDR|NAME`.
    pub iface: Option<String>,
    /// The daemon's SCTP-over-UDP address, skipping discovery.
    pub daemon: Option<SocketAddr>,
    /// Where our SCTP socket binds; port 0 picks one.
    pub bind: SocketAddr,
    /// Heartbeat interval towards the daemon.
    pub heartbeat: Duration,
    /// The state directory: our key and the pinned daemon keys.
    pub state_dir: PathBuf,
    /// `--daemon-key`: trust only a daemon key with this fingerprint (replacing the pin once it is proved).
    pub daemon_key: Option<Fingerprint>,
    /// `--secret-file`: the network secret.
    pub secret_file: Option<PathBuf>,
}

impl Setup {
    /// What to tell the user when no daemon answers: what was tried and what to check.
    pub fn no_daemon_message(&self, joined: Iface) -> String {
        match self.daemon {
            Some(d) => format!("no daemon answered at {d}; is mpd running there (`mpd status`)?"),
            None => format!(
                "no daemon answered on {} (interface {joined}); check that mpd runs (`mpd status`), that --group \
                 and --iface match the daemon's, that a firewall lets UDP {} through, or use --daemon HOST:PORT",
                self.group,
                self.group.port()
            ),
        }
    }

    /// The scope the daemon's key is pinned under: the group, or the address given with `--daemon`.
    pub fn pin_scope(&self) -> String {
        match self.daemon {
            Some(a) => format!("daemon@{a}"),
            None => format!("group@{}", self.group),
        }
    }

    /// A member's setup with defaults (state in [`crate::outbox::default_state_dir`]).
    pub fn new(nick: Nick) -> Setup {
        Setup {
            nick,
            observer: false,
            subscribe: true,
            claim: false,
            chat_port: 0,
            group: crate::discovery::DEFAULT_GROUP,
            iface: None,
            daemon: None,
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            heartbeat: Duration::from_secs(1),
            state_dir: crate::outbox::default_state_dir(),
            daemon_key: None,
            secret_file: None,
        }
    }
}

/// The client and its sockets.
pub struct ClientIo {
    /// The event loop; register extra sources with tokens from [`FIRST_APP_TOKEN`].
    pub reactor: Reactor,
    /// The protocol core.
    pub client: Client,
    udp: UdpTransport,
    sender: Option<UdpSocket>,
    group: Option<UdpSocket>,
    iface: Iface,
    stalls: u64,
    /// Where pinned daemon keys are saved, and under which scope.
    known_daemons: PathBuf,
    pin_scope: String,
    /// The keys of the peers talked to, and where they are saved.
    known_peers: crate::known_keys::KnownKeys,
    known_peers_path: PathBuf,
}

impl ClientIo {
    /// Opens the sockets and starts looking for the daemon.
    pub fn open(s: &Setup) -> io::Result<ClientIo> {
        let mut reactor = Reactor::new()?;
        reactor.watch_signals(&[Signal::SIGINT, Signal::SIGTERM], SIGNALS)?;
        let mut udp = UdpTransport::bind(s.bind, 1200)?;
        // The daemon sends a roster snapshot as bursts of full packets: read each burst in one go.
        if let Err(e) = udp.enable_gro() {
            log::debug!("no UDP GRO on this kernel ({e}); reading datagram by datagram");
        }
        udp.register(reactor.registry(), SCTP)?;
        let sctp_port = udp.local_addr()?.port();
        let (mut sender, mut group, mut iface) = (None, None, Iface::Default);
        if s.daemon.is_none() {
            let want = discovery::resolve_iface(s.iface.as_deref(), s.group.ip())?;
            let (mut g, joined) = discovery::multicast_socket(s.group, want)?;
            reactor
                .registry()
                .register(&mut g, GROUP, Interest::READABLE)?;
            let mut snd = discovery::sender_socket(s.group, joined)?;
            reactor
                .registry()
                .register(&mut snd, SENDER, Interest::READABLE)?;
            sender = Some(snd);
            group = Some(g);
            iface = joined;
        }
        let instance =
            getrandom::u64().map_err(|e| io::Error::other(format!("no OS randomness: {e}")))?;
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| io::Error::other(format!("no OS randomness: {e}")))?;
        let key_err = |e: super::keyfile::KeyError| io::Error::other(e.to_string());
        let (identity, _) =
            super::keyfile::load_or_create(&s.state_dir.join(super::keyfile::CLIENT_KEY))
                .map_err(key_err)?;
        let known_daemons = s.state_dir.join(super::known_keys::KNOWN_DAEMONS);
        let known_peers_path = s.state_dir.join(super::known_keys::KNOWN_PEERS);
        let known_peers = super::known_keys::load(&known_peers_path)?;
        let pinned = super::known_keys::load(&known_daemons)?.get(&s.pin_scope());
        let mut cfg = Config::new(s.nick, instance, s.group, sctp_port, identity);
        cfg.pin = match (s.daemon_key, pinned) {
            (Some(f), Some(k)) if k.fingerprint() == f => Pin::Key(k),
            // Given up front, it overrides what was pinned: the way to accept a reinstalled daemon's key.
            (Some(f), _) => Pin::Fingerprint(f),
            (None, Some(k)) => Pin::Key(k),
            (None, None) => Pin::None,
        };
        cfg.psk = match &s.secret_file {
            Some(p) => Some(super::keyfile::load_secret(p).map_err(key_err)?),
            None => None,
        };
        cfg.observer = s.observer;
        cfg.subscribe = s.subscribe;
        cfg.claim = s.claim;
        cfg.chat_port = s.chat_port;
        cfg.daemon = s.daemon;
        cfg.heartbeat = s.heartbeat;
        let client = Client::new(cfg, seed, reactor.now());
        let mut io = ClientIo {
            reactor,
            client,
            udp,
            sender,
            group,
            iface,
            stalls: 0,
            known_daemons,
            pin_scope: s.pin_scope(),
            known_peers,
            known_peers_path,
        };
        io.flush()?;
        Ok(io)
    }

    /// The interface discovery joined on.
    pub fn iface(&self) -> Iface {
        self.iface
    }

    /// The client's next event. A daemon key proved on first contact (or for `--daemon-key`) is saved as
    /// the pin for this group before the event is handed on.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        let ev = self.client.poll_event()?;
        if let ClientEvent::DaemonPinned { key } = &ev {
            let saved = super::known_keys::load(&self.known_daemons).and_then(|mut k| {
                k.set(&self.pin_scope, *key);
                super::known_keys::save(&self.known_daemons, &k)
            });
            match saved {
                Ok(()) => log::info!(
                    "pinned daemon key {} for {} in {}",
                    key.fingerprint(),
                    self.pin_scope,
                    self.known_daemons.display()
                ),
                Err(e) => log::warn!(
                    "cannot save the daemon's key in {}: {e}",
                    self.known_daemons.display()
                ),
            }
        }
        Some(ev)
    }

    /// A peer's key as the daemon gives it, checked against the one remembered from talking to that nickname
    /// before (`known_peers` in the state directory, like SSH's `known_hosts`): the first one is remembered
    /// and returned; the same one is returned; another one is an `Err` with the remembered key, and is not to
    /// be used until the user accepts it ([`ClientIo::forget_peer_key`]).
    pub fn vet_peer_key(
        &mut self,
        nick: Nick,
        key: Option<crate::identity::PublicKey>,
    ) -> Result<Option<crate::identity::PublicKey>, crate::identity::PublicKey> {
        let Some(k) = key else { return Ok(None) };
        match self.known_peers.vet(nick.as_str(), k) {
            Vetted::Known => Ok(Some(k)),
            Vetted::Changed(old) => Err(old),
            Vetted::First => {
                if let Err(e) = super::known_keys::save(&self.known_peers_path, &self.known_peers) {
                    log::warn!(
                        "cannot remember {nick}'s key in {}: {e}",
                        self.known_peers_path.display()
                    );
                }
                Ok(Some(k))
            }
        }
    }

    /// Forgets the key remembered for `nick` (the user accepts a new one: `trust NAME`); the next one the
    /// daemon gives is remembered. Returns whether one was remembered.
    pub fn forget_peer_key(&mut self, nick: Nick) -> io::Result<bool> {
        let had = self.known_peers.remove(nick.as_str());
        if had {
            super::known_keys::save(&self.known_peers_path, &self.known_peers)?;
        }
        Ok(had)
    }

    /// The key remembered for `nick`, if any.
    pub fn remembered_peer_key(&self, nick: Nick) -> Option<crate::identity::PublicKey> {
        self.known_peers.get(nick.as_str())
    }

    /// Turns that woke late enough to count as a stall.
    pub fn stalls(&self) -> u64 {
        self.stalls
    }

    /// Sends what the client has to send.
    pub fn flush(&mut self) -> io::Result<()> {
        let now = self.reactor.now();
        let client = &mut self.client;
        self.udp.write_with(self.reactor.registry(), SCTP, |buf| {
            client.poll_transmit(now, buf)
        })?;
        let mut buf = [0u8; crate::discovery::MAX_DATAGRAM];
        while let Some(t) = self.client.poll_discovery_transmit(&mut buf) {
            let dst = t.dst;
            if let Some(s) = &self.sender
                && let Err(e) = s.send_to(&buf[..t.len], dst)
            {
                log::debug!("HELLO to {dst} failed: {e}");
            }
        }
        Ok(())
    }

    fn read_discovery(sock: &UdpSocket, client: &mut Client, now: Instant) -> io::Result<()> {
        let mut buf = [0u8; 512];
        loop {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => client.handle_discovery(now, from, &buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // An ICMP error parked on the socket (a HELLO that bounced): not fatal.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// One loop turn: sends pending output, waits until I/O, a signal, the client's next timer or
    /// `app_deadline`, and handles the client's own sockets and timers. Events for the application's
    /// sources and signals are put in `app` (cleared first).
    pub fn turn(
        &mut self,
        app_deadline: Option<Instant>,
        app: &mut Vec<ReactorEvent>,
    ) -> io::Result<()> {
        self.flush()?;
        let wake = match (self.client.poll_timeout(), app_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.reactor.turn(wake, app)?;
        let now = self.reactor.now();
        if self.client.handle_stall(now, self.reactor.lateness()) {
            self.stalls += 1;
        }
        let mut i = 0;
        while i < app.len() {
            let handled = match app[i] {
                ReactorEvent::Io(SCTP, _) => {
                    let c = std::cell::RefCell::new(&mut self.client);
                    self.udp.read_with(
                        |from, b| c.borrow_mut().handle_sctp(now, from, b),
                        |dst, p| c.borrow_mut().handle_unreachable(now, dst, p),
                    )?;
                    true
                }
                ReactorEvent::Io(GROUP, _) => {
                    if let Some(g) = &self.group {
                        Self::read_discovery(g, &mut self.client, now)?;
                    }
                    true
                }
                ReactorEvent::Io(SENDER, _) => {
                    if let Some(s) = &self.sender {
                        Self::read_discovery(s, &mut self.client, now)?;
                    }
                    true
                }
                _ => false,
            };
            if handled {
                app.swap_remove(i);
            } else {
                i += 1;
            }
        }
        self.client.handle_timeout(now);
        self.flush()
    }
}
