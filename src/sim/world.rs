//! The whole system in virtual time: one [`Server`] (the daemon) and any number of clients, each on its own
//! simulated host (or several on one address, each with its own ports: [`World::add_client_at`]), talking over a [`Network`]: discovery by multicast (HELLO to the group, WELCOME back,
//! ANNOUNCE to the group), SCTP over UDP between each [`Client`] and the daemon, and chat between the clients'
//! [`Peer`]s over simulated TCP ([`super::tcp`]), fed the roster as `mpc` feeds it.
//!
//! What a test can do to it, as an operator or a bad day would: crash a host's process (its port then answers
//! with ICMP port unreachable, as Linux does, or stays silent with [`World::icmp`] off), stop it (SIGSTOP:
//! datagrams wait in its socket buffer, its timers do not run) and continue it, exit it cleanly, cut the link
//! between two hosts, stop and restart the daemon on the same ports with the roster it saved. Each host's
//! events are recorded with their times, so a test asserts *when* something happened, and that something did
//! *not* happen within a stretch of virtual time, without sleeping.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::Simulate;
use super::net::{Delivery, Netem, Network, earliest};
use super::tcp::{CONNECT_TIMEOUT, End, Segment, Tcp};
use crate::client::{self, Client, ClientEvent, Pin};
use crate::group::{ChannelName, Scope};
use crate::identity::Identity;
use crate::known_keys::{KnownKeys, Vetted};
use crate::nick::Nick;
use crate::peer::{self, Action, Peer, PeerEvent, Target};
use crate::registry::{saved, wire};
use crate::secure::derive_seed;
use crate::server::{self, Server};
use crate::time::Instant;

/// The daemon's UDP port for SCTP.
pub const SERVER_SCTP: u16 = 9899;
/// The daemon's discovery sender socket's port.
pub const SERVER_SENDER: u16 = 10002;
/// Each client's SCTP UDP port (every client has a host of its own).
pub const CLIENT_SCTP: u16 = 40000;
/// Each client's discovery sender socket's port (WELCOMEs come back here).
pub const CLIENT_SENDER: u16 = 40001;
/// Each client's chat listener's TCP port.
pub const CLIENT_CHAT: u16 = 7000;
/// Datagrams a stopped process's socket holds; more are dropped, as by a full receive buffer.
const SOCKET_BUFFER: usize = 4096;

/// A process that can be stopped (SIGSTOP) and continued.
#[derive(Default)]
struct Pause {
    since: Option<Instant>,
    backlog: Vec<Delivery>,
    /// TCP segments for a stopped process: its kernel holds them (connections still complete, bytes are
    /// buffered) until it reads.
    segments: Vec<Segment>,
}

impl Pause {
    fn hold(&mut self, d: Delivery, net: &mut Network) {
        if self.backlog.len() < SOCKET_BUFFER {
            self.backlog.push(d);
        } else {
            net.stats.dropped += 1;
        }
    }
}

/// The daemon's host.
pub struct ServerHost {
    /// Its address.
    pub ip: IpAddr,
    /// The daemon's core.
    pub server: Server,
    /// Every event it reported, with when.
    pub events: Vec<(Instant, server::Event)>,
    pause: Pause,
}

impl ServerHost {
    /// Moves the daemon's datagrams (SCTP, then discovery) into `out`, as (from, to, bytes).
    fn transmit(&mut self, now: Instant, buf: &mut [u8], out: &mut Vec<Datagram>) {
        let sctp = SocketAddr::new(self.ip, SERVER_SCTP);
        while let Some(t) = self.server.poll_transmit(now, buf) {
            out.push((sctp, t.dst, buf[..t.len].to_vec()));
        }
        let sender = SocketAddr::new(self.ip, SERVER_SENDER);
        while let Some(t) = self.server.poll_discovery_transmit(buf) {
            out.push((sender, t.dst, buf[..t.len].to_vec()));
        }
    }
}

/// A datagram leaving a host: (from, to, bytes).
type Datagram = (SocketAddr, SocketAddr, Vec<u8>);

/// A client's host (or, for clients placed on a shared address with [`World::add_client_at`], its process's
/// share of that host: its own ports).
pub struct ClientHost {
    /// Its address.
    pub ip: IpAddr,
    /// Its SCTP UDP port.
    pub sctp_port: u16,
    /// Its discovery sender socket's port.
    pub sender_port: u16,
    /// Its chat listener's TCP port.
    pub chat_port: u16,
    /// The nickname it was started with.
    pub nick: Nick,
    /// The client's core; `None` once its process is gone (crashed or exited).
    pub client: Option<Client>,
    /// The process's chat peer, beside its client.
    pub peer: Option<Peer>,
    /// Every event it reported, with when (across restarts of its process).
    pub events: Vec<(Instant, ClientEvent)>,
    /// Every chat event its peer reported, with when.
    pub chat: Vec<(Instant, PeerEvent)>,
    /// Starts of its process so far.
    life: u32,
    pause: Pause,
    /// Its key (in its state directory: the same across restarts of its process).
    pub identity: Identity,
    /// The daemon key it pinned (its known_daemons file), kept across restarts as mpc's file is.
    pub pin: Pin,
    /// The peers' keys it remembers (its known_peers file), kept across restarts.
    pub known_peers: KnownKeys,
    /// Peers whose key the daemon gave differently from the one remembered (what mpc warns about), with
    /// when: (nick, remembered, given).
    pub key_changes: Vec<(
        Instant,
        Nick,
        crate::identity::PublicKey,
        crate::identity::PublicKey,
    )>,
}

impl ClientHost {
    /// Whether its process runs and is registered.
    pub fn is_registered(&self) -> bool {
        self.client.as_ref().is_some_and(Client::is_registered)
    }

    /// The roster as this client knows it: (nickname, online) pairs, sorted.
    pub fn roster(&self) -> Vec<(String, bool)> {
        let Some(c) = &self.client else {
            return Vec::new();
        };
        let mut v: Vec<(String, bool)> = c
            .roster()
            .entries()
            .map(|e| (e.nick.to_string(), e.status == wire::Status::Online))
            .collect();
        v.sort();
        v
    }

    /// Whether the roster it holds has `nick` with that status.
    pub fn sees(&self, nick: &str, online: bool) -> bool {
        self.client.as_ref().is_some_and(|c| {
            c.roster()
                .entries()
                .any(|e| e.nick.as_str() == nick && (e.status == wire::Status::Online) == online)
        })
    }

    /// Messages its peer received: (sender, text, verified).
    pub fn received(&self) -> Vec<(String, String, bool)> {
        self.chat
            .iter()
            .filter_map(|(_, e)| match e {
                PeerEvent::Message {
                    from,
                    text,
                    verified,
                    ..
                } => Some((from.to_string(), text.clone(), *verified)),
                _ => None,
            })
            .collect()
    }

    /// Messages its peer received said in `scope`: (sender, text), in arrival order.
    pub fn received_in(&self, scope: Scope) -> Vec<(String, String)> {
        self.chat
            .iter()
            .filter_map(|(_, e)| match e {
                PeerEvent::Message {
                    from,
                    text,
                    scope: s,
                    ..
                } if *s == scope => Some((from.to_string(), text.clone())),
                _ => None,
            })
            .collect()
    }

    /// Whether its roster shows `nick` in `channel`.
    pub fn sees_in(&self, nick: &str, channel: &str) -> bool {
        let ch = ChannelName::new(channel).expect("a valid channel name");
        self.client.as_ref().is_some_and(|c| {
            c.roster()
                .entries()
                .any(|e| e.nick.as_str() == nick && e.in_channel(&ch))
        })
    }

    /// When message `id` was reported delivered.
    pub fn delivered(&self, id: u64) -> Option<Instant> {
        self.chat.iter().find_map(|(t, e)| match e {
            PeerEvent::Delivered { id: i, .. } if *i == id => Some(*t),
            _ => None,
        })
    }

    /// The time of the first event after `after` matching `f`.
    pub fn first_event(
        &self,
        after: Instant,
        mut f: impl FnMut(&ClientEvent) -> bool,
    ) -> Option<Instant> {
        self.events
            .iter()
            .find(|(t, e)| *t >= after && f(e))
            .map(|(t, _)| *t)
    }
}

/// Which host.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// The daemon's.
    Server,
    /// Client number `n` (in the order added).
    Client(usize),
}

/// The whole system on a simulated network.
pub struct World {
    /// The network (its `now` is the world's time).
    pub net: Network,
    /// The discovery group.
    pub group: SocketAddr,
    /// The daemon's host, while a daemon runs there.
    pub server: Option<ServerHost>,
    /// Another daemon, with a key of its own, on a host of its own (an attacker's, or a colleague's who ran
    /// `mpd start` by accident), while one runs.
    pub rogue: Option<ServerHost>,
    /// Settings for the next daemon started ([`World::start_server`]).
    pub server_config: server::Config,
    /// The clients' hosts.
    pub clients: Vec<ClientHost>,
    /// The roster the daemon saved last: what a restarted one loads.
    pub disk: Option<saved::Image>,
    /// Whether a datagram to a closed port on a live host comes back as ICMP port unreachable (Linux does).
    pub icmp: bool,
    /// TCP between the chat peers.
    pub tcp: Tcp,
    /// Every chat byte written, as (from host, to host, bytes): what an eavesdropper on the LAN captures (for
    /// replaying it).
    pub tcp_capture: Vec<(usize, usize, Vec<u8>)>,
    server_ip: IpAddr,
    next_ephemeral: u16,
    wall0: u64,
    cut: HashSet<(IpAddr, IpAddr)>,
    daemons_started: u64,
    buf: Vec<u8>,
    /// The next ports for a client placed on a shared address.
    next_shared_port: u16,
}

/// The rogue daemon's host.
pub const ROGUE_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 200));

/// The world's seed as the 32 bytes key derivations take.
fn seed_bytes(seed: u64) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&seed.to_le_bytes());
    b
}

fn client_ip(n: usize) -> IpAddr {
    let n = n as u32 + 2;
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | n))
}

impl World {
    /// A network with no hosts yet; time zero is 2026-01-01 on the wall clock.
    pub fn new(seed: u64, netem: Netem) -> World {
        World {
            net: Network::new(seed, netem),
            group: crate::discovery::DEFAULT_GROUP,
            server: None,
            rogue: None,
            server_config: server::Config {
                sctp_port: SERVER_SCTP,
                sctp_udp_port: SERVER_SCTP,
                // The daemon's key, in its directory: every daemon started here holds it.
                ..server::Config::new(
                    0,
                    Identity::from_secret(derive_seed(&seed_bytes(seed), "daemon key")),
                )
            },
            clients: Vec::new(),
            disk: None,
            icmp: true,
            tcp: Tcp::default(),
            tcp_capture: Vec::new(),
            next_ephemeral: 50_000,
            server_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            wall0: 1_767_225_600_000,
            cut: HashSet::new(),
            daemons_started: 0,
            buf: vec![0; 65_536],
            next_shared_port: 20_000,
        }
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.net.now
    }

    /// Starts a daemon (a new instance, as a new process would be) on the daemon's host, loading the roster
    /// it saved last.
    pub fn start_server(&mut self) {
        self.daemons_started += 1;
        let cfg = server::Config {
            instance: 0xD000 + self.daemons_started,
            group: self.group,
            ..self.server_config.clone()
        };
        let seed = self.net.seed();
        let mut server = Server::new(cfg, seed, self.wall0, self.now());
        if let Some(img) = &self.disk {
            server.load(img.clone());
        }
        self.server = Some(ServerHost {
            ip: self.server_ip,
            server,
            events: Vec::new(),
            pause: Pause::default(),
        });
    }

    /// Starts another daemon, with its own key (from `key_seed`), on a host of its own (10.0.0.200), on the
    /// same group and ports as ours.
    pub fn start_rogue(&mut self, key_seed: [u8; 32]) {
        let cfg = server::Config {
            instance: 0xBAD0,
            group: self.group,
            identity: Identity::from_secret(key_seed),
            ..self.server_config.clone()
        };
        let seed = self.net.seed();
        self.rogue = Some(ServerHost {
            ip: ROGUE_IP,
            server: Server::new(cfg, seed, self.wall0, self.now()),
            events: Vec::new(),
            pause: Pause::default(),
        });
    }

    /// An attacker at `from` connects to client `n`'s chat port and writes `bytes` (captured earlier, or made
    /// up): what client `n`'s peer does with them, run now. Returns whether the peer closed the connection.
    pub fn inject_chat(&mut self, n: usize, from: SocketAddr, bytes: &[u8]) -> bool {
        let now = self.now();
        let wall = self.wall_ms();
        let Some(p) = self.clients[n].peer.as_mut() else {
            return true;
        };
        let Some(conn) = p.accepted(now, from) else {
            return true;
        };
        p.handle_data(now, wall, conn, bytes);
        // The attacker reads nothing back; what the peer wrote to it goes nowhere.
        let mut closed = false;
        let mut others = Vec::new();
        while let Some(a) = p.poll_action() {
            match a {
                Action::Close(c) if c == conn => closed = true,
                Action::Write(c) | Action::Close(c) if c == conn => {}
                other => others.push(other),
            }
        }
        if !closed {
            p.closed(now, conn);
        }
        // A connection of its own it closed to make room (the per-source cap) is closed as usual; bytes
        // for its own connections are not written by anything done here.
        let life = self.clients[n].life;
        for a in others {
            if let Action::Close(_) = a {
                self.act(n, life, a, Vec::new());
            }
        }
        closed
    }

    /// Sends a datagram as anyone would: `from` need not be the sender's (an attacker forging it).
    pub fn inject(&mut self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        self.send(from, to, bytes);
    }

    /// The daemon's host; panics if no daemon runs.
    pub fn daemon(&self) -> &ServerHost {
        self.server.as_ref().expect("no daemon is running")
    }

    /// Client number `n`'s host.
    pub fn client(&self, n: usize) -> &ClientHost {
        &self.clients[n]
    }

    /// Adds a host and starts a client on it with mpc's defaults, changed by `tweak`. Returns its number.
    pub fn add_client(&mut self, nick: &str, tweak: impl FnOnce(&mut client::Config)) -> usize {
        let n = self.clients.len();
        self.add(
            nick,
            client_ip(n),
            [CLIENT_SCTP, CLIENT_SENDER, CLIENT_CHAT],
            tweak,
        )
    }

    /// Starts a client on address `ip`, which other clients may share (as on a terminal server, or one host
    /// running many `mpc`s), each with ports of its own. `ip` must not be the daemon's. Returns its number.
    pub fn add_client_at(
        &mut self,
        ip: IpAddr,
        nick: &str,
        tweak: impl FnOnce(&mut client::Config),
    ) -> usize {
        assert_ne!(ip, self.server_ip, "the daemon's host is not a client's");
        let p = self.next_shared_port;
        self.next_shared_port = p.checked_add(3).expect("ports for shared-address clients");
        self.add(nick, ip, [p, p + 1, p + 2], tweak)
    }

    fn add(
        &mut self,
        nick: &str,
        ip: IpAddr,
        [sctp_port, sender_port, chat_port]: [u16; 3],
        tweak: impl FnOnce(&mut client::Config),
    ) -> usize {
        let n = self.clients.len();
        let identity = Identity::from_secret(self.net.seed());
        self.clients.push(ClientHost {
            identity,
            pin: Pin::None,
            known_peers: KnownKeys::default(),
            key_changes: Vec::new(),
            ip,
            sctp_port,
            sender_port,
            chat_port,
            nick: Nick::new(nick).expect("a valid nickname"),
            client: None,
            peer: None,
            events: Vec::new(),
            chat: Vec::new(),
            life: 0,
            pause: Pause::default(),
        });
        self.start_client(n, tweak);
        n
    }

    /// Starts a new process of client `n` on the same host and ports (after a crash or exit).
    pub fn start_client(&mut self, n: usize, tweak: impl FnOnce(&mut client::Config)) {
        let seed = self.net.seed();
        let instance = u64::from_le_bytes(seed[..8].try_into().expect("8 bytes"));
        let nick = self.clients[n].nick;
        let h = &self.clients[n];
        let mut cfg =
            client::Config::new(nick, instance, self.group, h.sctp_port, h.identity.clone());
        cfg.pin = h.pin;
        cfg.chat_port = h.chat_port;
        tweak(&mut cfg);
        let now = self.now();
        let mut pc = peer::Config::new(nick, instance, cfg.identity.clone());
        pc.psk = cfg.psk.clone();
        pc.seed = self.net.seed();
        let h = &mut self.clients[n];
        h.client = Some(Client::new(cfg, seed, now));
        h.peer = Some(Peer::new(pc));
        h.life += 1;
    }

    /// Client `n`'s peer queues `text` for `to` (a nickname); returns the message id.
    pub fn send_chat(&mut self, n: usize, to: &str, text: &str) -> Result<u64, peer::SendError> {
        let now = self.now();
        let wall = self.wall_ms();
        let to = Target::Nick(Nick::new(to).expect("a valid nickname"));
        let peer = self.clients[n]
            .peer
            .as_mut()
            .expect("client n is not running");
        peer.send(now, wall, to, text)
    }

    /// Client `n` says `text` in `scope` (everyone, a channel) to whoever its roster shows there, as mpc does;
    /// returns the message id and the receivers it went to.
    pub fn send_in(
        &mut self,
        n: usize,
        scope: Scope,
        text: &str,
    ) -> Result<(u64, Vec<Nick>), peer::SendError> {
        let now = self.now();
        let wall = self.wall_ms();
        let h = &mut self.clients[n];
        let c = h.client.as_ref().expect("client n is not running");
        let to: Vec<Nick> = c
            .roster()
            .members(&c.nick(), &scope)
            .iter()
            .map(|e| e.nick)
            .collect();
        let peer = h.peer.as_mut().expect("client n is not running");
        peer.send_to_many(now, wall, scope, &to, text)
            .map(|id| (id, to))
    }

    /// Client `n` asks to join (`join`) or leave a channel.
    pub fn set_channel(&mut self, n: usize, channel: &str, join: bool) {
        let c = self.clients[n]
            .client
            .as_mut()
            .expect("client n is not running");
        let ch = ChannelName::new(channel).expect("a valid channel name");
        let r = if join { c.join(ch) } else { c.part(ch) };
        r.expect("the request is accepted locally");
    }

    fn wall_ms(&self) -> u64 {
        self.wall0 + self.now().as_millis()
    }

    /// Client `n`'s process ended: its connections are reset (the other ends hear of it after the latency).
    fn end_process(&mut self, n: usize) {
        let h = &mut self.clients[n];
        h.client = None;
        h.peer = None;
        h.pause = Pause::default();
        let at = self.net.now + self.net.netem.latency;
        for e in self.tcp.ends_of(n) {
            if let Some(other) = self.tcp.unlink(e) {
                self.tcp.queue.push(at, Segment::Closed(other));
            }
        }
    }

    /// Kills a host's process at once (SIGKILL): no goodbye; its ports are closed from now on.
    pub fn crash(&mut self, h: Host) {
        match h {
            Host::Server => self.server = None,
            Host::Client(n) => self.end_process(n),
        }
    }

    /// Client `n` leaves cleanly (Ctrl-D, SIGINT): its association shuts down; the process ends once closed.
    pub fn exit_client(&mut self, n: usize) {
        let now = self.now();
        if let Some(c) = &mut self.clients[n].client {
            c.shutdown(now);
        }
    }

    /// Stops the daemon gracefully (SIGTERM): it shuts every association down, saves, and exits.
    pub fn stop_server(&mut self) {
        let now = self.now();
        if let Some(s) = &mut self.server {
            s.server.stop(now);
        }
    }

    fn pause_of(&mut self, h: Host) -> Option<&mut Pause> {
        match h {
            Host::Server => self.server.as_mut().map(|s| &mut s.pause),
            Host::Client(n) => Some(&mut self.clients[n].pause),
        }
    }

    /// Stops a host's process (SIGSTOP): it reads, sends and times out nothing until [`World::resume`].
    pub fn pause(&mut self, h: Host) {
        let now = self.now();
        if let Some(p) = self.pause_of(h) {
            p.since.get_or_insert(now);
        }
    }

    /// Continues a stopped process (SIGCONT): it sees how late it woke, then reads what waited in its socket.
    pub fn resume(&mut self, h: Host) {
        let now = self.now();
        let Some(p) = self.pause_of(h) else {
            return;
        };
        if p.since.take().is_none() {
            return;
        }
        let backlog = std::mem::take(&mut p.backlog);
        let segments = std::mem::take(&mut p.segments);
        // How late the process wakes, as the reactor would measure it: past the deadline it had asked for.
        let late = |deadline: Option<Instant>| {
            deadline.map_or(Duration::ZERO, |t| now.saturating_since(t))
        };
        match h {
            Host::Server => {
                if let Some(s) = &mut self.server {
                    s.server.handle_stall(now, late(s.server.poll_timeout()));
                }
            }
            Host::Client(n) => {
                if let Some(c) = &mut self.clients[n].client {
                    c.handle_stall(now, late(c.poll_timeout()));
                }
            }
        }
        for d in backlog {
            self.arrive(d);
        }
        for seg in segments {
            self.arrive_segment(seg);
        }
        self.run_timers();
        self.drain();
    }

    /// Cuts (or restores) the link between two hosts, both directions.
    pub fn partition(&mut self, a: Host, b: Host, cut: bool) {
        let (a, b) = (self.ip_of(a), self.ip_of(b));
        for k in [(a, b), (b, a)] {
            if cut {
                self.cut.insert(k);
            } else {
                self.cut.remove(&k);
            }
        }
    }

    fn ip_of(&self, h: Host) -> IpAddr {
        match h {
            Host::Server => self.server_ip,
            Host::Client(n) => self.clients[n].ip,
        }
    }

    fn send(&mut self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        if to == self.group {
            // Multicast: a copy to every member's group socket (the sender's own too, as IP_MULTICAST_LOOP
            // does), each lost or delayed on its own.
            let mut members: Vec<IpAddr> = self
                .server
                .iter()
                .chain(self.rogue.iter())
                .map(|s| s.ip)
                .collect();
            members.extend(
                self.clients
                    .iter()
                    .filter(|c| c.client.is_some())
                    .map(|c| c.ip),
            );
            // One copy per host: every process on it that joined the group reads it (see `arrive`).
            let mut seen = HashSet::new();
            members.retain(|ip| seen.insert(*ip));
            for ip in members {
                self.send(from, SocketAddr::new(ip, self.group.port()), bytes);
            }
            return;
        }
        if self.cut.contains(&(from.ip(), to.ip())) {
            self.net.drop_sent();
        } else {
            self.net.send(from, to, bytes);
        }
    }

    /// Carries out what client `n`'s peer asked of its sockets.
    fn act(&mut self, n: usize, life: u32, a: Action, bytes: Vec<u8>) {
        let at = self.now() + self.net.netem.latency;
        match a {
            Action::Connect { conn, addr } => {
                self.next_ephemeral = self.next_ephemeral.checked_add(1).unwrap_or(50_000);
                let from_addr = SocketAddr::new(self.clients[n].ip, self.next_ephemeral);
                let from = End {
                    host: n,
                    life,
                    conn,
                };
                self.tcp.queue.push(
                    at,
                    Segment::Syn {
                        from,
                        from_addr,
                        to: addr,
                    },
                );
            }
            Action::Write(conn) => {
                let me = End {
                    host: n,
                    life,
                    conn,
                };
                if let Some(other) = self.tcp.other(me)
                    && !self
                        .cut
                        .contains(&(self.clients[n].ip, self.clients[other.host].ip))
                {
                    self.tcp_capture.push((n, other.host, bytes.clone()));
                    self.tcp.queue.push(at, Segment::Data(other, bytes));
                }
            }
            Action::Close(conn) => {
                if let Some(other) = self.tcp.unlink(End {
                    host: n,
                    life,
                    conn,
                }) {
                    self.tcp.queue.push(at, Segment::Closed(other));
                }
            }
        }
    }

    /// A TCP segment reaches its host.
    fn arrive_segment(&mut self, seg: Segment) {
        let now = self.now();
        let wall = self.wall_ms();
        let latency = self.net.netem.latency;
        let host = match &seg {
            // The process listening on that port, or, if none does, its host (which answers RST).
            Segment::Syn { to, .. } => self
                .clients
                .iter()
                .position(|h| h.ip == to.ip() && h.chat_port == to.port())
                .or_else(|| self.clients.iter().position(|h| h.ip == to.ip())),
            Segment::Established(e) | Segment::Closed(e) | Segment::Data(e, _) => Some(e.host),
        };
        let Some(n) = host else {
            // No such host: a connection attempt times out.
            if let Segment::Syn { from, .. } = seg {
                self.tcp
                    .queue
                    .push(now + CONNECT_TIMEOUT, Segment::Closed(from));
            }
            return;
        };
        let h = &mut self.clients[n];
        if h.pause.since.is_some() && h.peer.is_some() {
            h.pause.segments.push(seg);
            return;
        }
        match seg {
            Segment::Syn {
                from,
                from_addr,
                to,
            } => {
                let cut = self.cut.contains(&(from_addr.ip(), h.ip));
                let listening = to.port() == h.chat_port;
                match h.peer.as_mut() {
                    _ if cut => self
                        .tcp
                        .queue
                        .push(now + CONNECT_TIMEOUT, Segment::Closed(from)),
                    Some(p) if listening => match p.accepted(now, from_addr) {
                        Some(conn) => {
                            let me = End {
                                host: n,
                                life: h.life,
                                conn,
                            };
                            self.tcp.link(from, me);
                            self.tcp
                                .queue
                                .push(now + latency, Segment::Established(from));
                        }
                        None => self.tcp.queue.push(now + latency, Segment::Closed(from)),
                    },
                    // Nobody listens: RST.
                    _ => self.tcp.queue.push(now + latency, Segment::Closed(from)),
                }
            }
            Segment::Established(e) | Segment::Closed(e) | Segment::Data(e, _)
                if e.life != h.life => {}
            Segment::Established(e) => {
                if let Some(p) = h.peer.as_mut() {
                    p.connected(now, e.conn);
                }
            }
            Segment::Data(e, bytes) => {
                if let Some(p) = h.peer.as_mut() {
                    p.handle_data(now, wall, e.conn, &bytes);
                }
            }
            Segment::Closed(e) => {
                self.tcp.unlink(e);
                if let Some(p) = h.peer.as_mut() {
                    p.closed(now, e.conn);
                }
            }
        }
    }

    /// Hands an arrived datagram to the socket it was sent to, or bounces it if nothing listens there.
    fn arrive(&mut self, d: Delivery) {
        let now = self.now();
        let group_port = self.group.port();
        for s in [&mut self.server, &mut self.rogue].into_iter().flatten() {
            if d.to.ip() != s.ip {
                continue;
            }
            if s.pause.since.is_some() {
                s.pause.hold(d, &mut self.net);
                return;
            }
            match d.to.port() {
                SERVER_SCTP if d.unreachable => s.server.handle_unreachable(now, d.from, &d.bytes),
                SERVER_SCTP => s.server.handle_sctp(now, d.from, &d.bytes),
                p if p == group_port => s.server.handle_discovery(now, d.from, &d.bytes),
                _ => {}
            }
            return;
        }
        let port = d.to.port();
        if port == group_port {
            // Multicast: every running process on the host that joined the group reads its copy.
            let mut read = false;
            for h in self.clients.iter_mut() {
                let Some(c) = h.client.as_mut().filter(|_| h.ip == d.to.ip()) else {
                    continue;
                };
                read = true;
                if h.pause.since.is_some() {
                    h.pause.hold(d.clone(), &mut self.net);
                } else {
                    c.handle_discovery(now, d.from, &d.bytes);
                }
            }
            if read {
                return;
            }
        } else if let Some(h) = self.clients.iter_mut().find(|h| {
            h.ip == d.to.ip()
                && h.client.is_some()
                && (h.sctp_port == port || h.sender_port == port)
        }) && let Some(c) = &mut h.client
        {
            if h.pause.since.is_some() {
                h.pause.hold(d, &mut self.net);
                return;
            }
            match port {
                p if p == h.sctp_port && d.unreachable => {
                    c.handle_unreachable(now, d.from, &d.bytes)
                }
                p if p == h.sctp_port => c.handle_sctp(now, d.from, &d.bytes),
                _ => c.handle_discovery(now, d.from, &d.bytes),
            }
            return;
        }
        // Nobody listens there. A live host answers a unicast datagram with ICMP port unreachable.
        let host_up = d.to.ip() == self.server_ip
            || d.to.ip() == ROGUE_IP
            || self.clients.iter().any(|h| h.ip == d.to.ip());
        if self.icmp && host_up && !d.unreachable && d.to.port() != group_port {
            self.net.send_unreachable(d);
        } else {
            self.net.stats.dropped += 1;
        }
    }

    fn run_timers(&mut self) {
        let now = self.now();
        for s in [&mut self.server, &mut self.rogue].into_iter().flatten() {
            if s.pause.since.is_none() && s.server.poll_timeout().is_some_and(|t| t <= now) {
                s.server.handle_timeout(now);
            }
        }
        for h in &mut self.clients {
            if h.pause.since.is_some() {
                continue;
            }
            if let Some(c) = &mut h.client
                && c.poll_timeout().is_some_and(|t| t <= now)
            {
                c.handle_timeout(now);
            }
            if let Some(p) = &mut h.peer
                && p.poll_timeout().is_some_and(|t| t <= now)
            {
                p.handle_timeout(now);
            }
        }
    }

    /// Runs until `done` holds, for at most `within` of virtual time; returns how long it took.
    pub fn wait(&mut self, within: Duration, done: impl FnMut(&World) -> bool) -> Option<Duration> {
        let start = self.now();
        self.run_until(start + within, 10_000_000, done)
            .then(|| self.now().saturating_since(start))
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now() + d;
        self.run_until(end, 10_000_000, |_| false);
    }
}

impl Simulate for World {
    /// When something happens next: a datagram arrives or a running process's timer is due.
    fn next_time(&self) -> Option<Instant> {
        let server = self
            .server
            .iter()
            .chain(self.rogue.iter())
            .filter(|s| s.pause.since.is_none())
            .filter_map(|s| s.server.poll_timeout())
            .min();
        let clients = self
            .clients
            .iter()
            .filter(|h| h.pause.since.is_none())
            .flat_map(|h| {
                let c = h.client.as_ref().and_then(Client::poll_timeout);
                let p = h.peer.as_ref().and_then(Peer::poll_timeout);
                [c, p]
            })
            .flatten()
            .min();
        let arrivals = earliest(self.net.next_arrival(), self.tcp.queue.next_at());
        earliest(arrivals, earliest(server, clients))
    }

    /// Advances to the next arrival or timer and handles everything due then. False if nothing is pending.
    fn step(&mut self) -> bool {
        self.drain();
        let Some(t) = self.next_time() else {
            return false;
        };
        self.net.now = self.net.now.max(t);
        while let Some(d) = self.net.pop_due() {
            self.arrive(d);
        }
        while let Some(seg) = self.tcp.queue.pop_due(self.net.now) {
            self.arrive_segment(seg);
        }
        self.run_timers();
        self.drain();
        true
    }

    /// Moves every process's datagrams onto the network and records its events.
    fn drain(&mut self) {
        let now = self.now();
        let mut buf = std::mem::take(&mut self.buf);
        let mut out: Vec<(SocketAddr, SocketAddr, Vec<u8>)> = Vec::new();
        let mut stopped = false;
        if let Some(s) = &mut self.server
            && s.pause.since.is_none()
        {
            s.transmit(now, &mut buf, &mut out);
            while let Some(e) = s.server.poll_event(now) {
                match &e {
                    // As mpd does: save when due, and once more on the way out.
                    server::Event::SaveDue | server::Event::Stopped { .. } => {
                        self.disk = Some(s.server.registry().image(s.server.wall_ms(now)));
                        stopped |= matches!(e, server::Event::Stopped { .. });
                    }
                    _ => {}
                }
                s.events.push((now, e));
            }
        }
        if stopped {
            self.server = None;
        }
        if let Some(s) = &mut self.rogue {
            s.transmit(now, &mut buf, &mut out);
            while let Some(e) = s.server.poll_event(now) {
                s.events.push((now, e));
            }
        }
        let mut ended = Vec::new();
        let mut actions = Vec::new();
        for (n, h) in self.clients.iter_mut().enumerate() {
            let (Some(c), Some(p)) = (&mut h.client, &mut h.peer) else {
                continue;
            };
            if h.pause.since.is_some() {
                continue;
            }
            // As mpc's session does: the peer's questions about keys go to the daemon (before this turn's
            // datagrams leave), the answers (checked against the keys remembered) back to the peer.
            while let Some(nick) = p.poll_key_request() {
                c.query_key(nick);
            }
            let sctp = SocketAddr::new(h.ip, h.sctp_port);
            while let Some(t) = c.poll_transmit(now, &mut buf) {
                out.push((sctp, t.dst, buf[..t.len].to_vec()));
            }
            let sender = SocketAddr::new(h.ip, h.sender_port);
            while let Some(t) = c.poll_discovery_transmit(&mut buf) {
                out.push((sender, t.dst, buf[..t.len].to_vec()));
            }
            while let Some(e) = c.poll_event() {
                // As mpc's session does: the roster feeds the chat peer's contacts.
                if let ClientEvent::Roster(applied) = &e {
                    p.follow_roster(now, c.roster(), applied);
                }
                if let ClientEvent::Renamed { to, .. } = &e {
                    p.set_me(*to);
                }
                if let ClientEvent::Key { nick, key } = &e
                    && p.wants_key(nick)
                {
                    let given = match key.map(|k| (k, h.known_peers.vet(nick.as_str(), k))) {
                        Some((k, Vetted::Changed(old))) => {
                            h.key_changes.push((now, *nick, old, k));
                            None
                        }
                        Some((k, _)) => Some(k),
                        None => None,
                    };
                    p.set_key(now, *nick, given);
                }
                // As mpc's I/O does: a proved daemon key is saved as the pin.
                if let ClientEvent::DaemonPinned { key } = &e {
                    h.pin = Pin::Key(*key);
                }
                h.events.push((now, e));
            }
            while let Some(a) = p.poll_action() {
                let bytes = match a {
                    Action::Write(conn) => {
                        let b = p.output(conn).to_vec();
                        p.wrote(now, conn, b.len());
                        b
                    }
                    _ => Vec::new(),
                };
                actions.push((n, h.life, a, bytes));
            }
            while let Some(e) = p.poll_event() {
                h.chat.push((now, e));
            }
            if c.is_closed() {
                // An exited process: its ports close.
                ended.push(n);
            }
        }
        self.buf = buf;
        for (from, to, b) in out {
            self.send(from, to, &b);
        }
        for (n, life, a, bytes) in actions {
            self.act(n, life, a, bytes);
        }
        for n in ended {
            self.end_process(n);
        }
    }

    fn advance_to(&mut self, t: Instant) {
        self.net.now = self.net.now.max(t);
    }
}
