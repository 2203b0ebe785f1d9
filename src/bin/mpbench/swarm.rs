//! N simulated clients in one process, each a real client of the roster protocol: its own key and SCTP
//! association to `mpd`, the Noise handshake (IK to the daemon's key, as mpc does; XX for a daemon given by
//! address), REGISTER and every roster message sealed, the snapshot pages and deltas applied in order with
//! RESYNC on a gap, heartbeats, and reconnection with mpc's backoff when the daemon goes away or announces a
//! restart.
//!
//! Associations are multiplexed over a few UDP sockets ("lanes"), one [`Endpoint`] per lane, each client on its
//! own SCTP port. A lane holds at most `per_lane` clients, so a fan-out of one delta to every client does not
//! overflow one socket's receive buffer. Clients that a scenario will silence get lanes of their own, which it
//! can close (the daemon's next packet meets a closed port: ICMP unreachable) or mute (the socket stays open
//! and unread, as a stopped process's would).
//!
//! What a client knows of the roster is a bitset over the simulated clients' indexes (who is online), so that
//! N clients' views cost N²/8 bytes rather than N² entries. The library's [`RosterSync`] (what `mpc` runs)
//! decides what each roster message does: pages in order, deltas that follow the version held, RESYNC on a
//! gap. The swarm is only its store ([`RosterBits`]): entries of nicknames not from this swarm are counted and
//! ignored, and every change of a bit is reported to the scenario's [`Watch`]es.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use fixedbitset::FixedBitSet;
use mio::Token;
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

use multiproto::client::roster::{RosterStore, RosterSync, Synced};
use multiproto::client::sctp_config;
use multiproto::discovery::Datagram;
use multiproto::identity::{Identity, PublicKey};
use multiproto::io::sctp_udp::{Coalescing, UdpTransport};
use multiproto::nick::Nick;
use multiproto::reactor::{Reactor, ReactorEvent};
use multiproto::registry::wire::{
    ClientMsg, EntryRef, PPID, Register, RegisterResult, ServerMsg, ServerView, Status, flags,
};
use multiproto::sctp::{AssocId, DownReason, Endpoint, Event};
use multiproto::secure::broadcast::{self, Receiver};
use multiproto::secure::ticket::Ticket;
use multiproto::secure::{Context, Frame, Initiator, Seeds, Step, derive_seed};
use multiproto::time::Instant;

/// The reactor token of the group socket (ANNOUNCE); lanes use their index + [`FIRST_LANE`].
const GROUP: Token = Token(0);
/// The reactor token of the waker a signal rings (see `signals`).
const WAKE: Token = Token(usize::MAX);
const FIRST_LANE: usize = 1;
/// First SCTP port handed to clients of a lane.
const FIRST_PORT: u16 = 1024;
/// Datagrams read from one lane per turn at most. Each client would read and answer its own packets; one
/// process reading a lane's whole backlog before answering any held every SACK back by the time that took
/// (hundreds of ms under a storm), and the daemon's retransmission timers fired at clients that were alive.
const READ_BUDGET: usize = 1024;
/// mpc's reconnection delays (src/client.rs: `hello_min`, `hello_max`).
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// How the swarm reaches the daemon.
#[derive(Clone, Debug)]
pub struct Config {
    /// The daemon's SCTP-over-UDP address.
    pub daemon: SocketAddr,
    /// The daemon's SCTP port.
    pub daemon_port: u16,
    /// The daemon's key, from its WELCOME (IK); `None` for a daemon given by address (XX).
    pub daemon_key: Option<PublicKey>,
    /// Local address the lanes bind to.
    pub bind: IpAddr,
    /// Heartbeat interval of each client's association (mpc: 1 s).
    pub heartbeat: Duration,
    /// Clients per lane at most.
    pub per_lane: usize,
    /// Clients that will exist at most (the width of every roster bitset).
    pub capacity: usize,
    /// Nickname prefix of this run's clients (`<tag><index>`).
    pub tag: String,
    /// Seeds the endpoints and the jitter.
    pub seed: u64,
    /// Register with NO_ROSTER: no snapshot, no deltas, no roster bitset.
    pub liveness_only: bool,
}

/// Where a simulated client is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Not started.
    Idle,
    /// Association opening or REGISTER sent.
    Connecting,
    /// Registered.
    Registered,
    /// Lost the daemon; retries at its timer or at the next ANNOUNCE.
    Waiting,
    /// Registration refused.
    Refused(RegisterResult),
    /// Silenced by the scenario (its lane closed or muted).
    Silenced,
}

/// One simulated client.
pub struct Sim {
    /// Its state.
    pub state: State,
    lane: u32,
    port: u16,
    assoc: Option<AssocId>,
    instance: u64,
    /// When it last started to connect.
    pub connect_at: Option<Instant>,
    /// When it last registered.
    pub registered_at: Option<Instant>,
    /// When a complete snapshot last arrived after registering.
    pub synced_at: Option<Instant>,
    /// Its roster's version and the snapshot it is receiving (the pages go into a bitset).
    roster: RosterSync<FixedBitSet>,
    /// Who this client sees online, by simulated-client index.
    pub online: FixedBitSet,
    /// Bits set in `online`.
    pub online_count: u32,
    retry_delay: Duration,
    retry_timer: Option<multiproto::wheel::TimerId>,
    /// Its key, made at its first connection (an X25519 base-point multiplication each).
    identity: Option<Identity>,
    /// Its session with the daemon.
    link: Initiator,
    /// Its session's broadcast keys (the broadcast key, its own authenticator).
    bcast: Option<Receiver>,
    /// The daemon's last resumption ticket: the next session resumes with it, as mpc's does (boxed: most
    /// of the time only a pointer's worth of the swarm's per-client memory).
    ticket: Option<Box<Ticket>>,
    /// Its next first handshake message, made ahead ([`Swarm::prepare`]).
    prepared: Option<Box<Prepared>>,
}

/// A first handshake message made ahead of its connection.
pub struct Prepared {
    link: Initiator,
    first: Vec<u8>,
    resume: bool,
    /// Not for this daemon instance (see [`Swarm::prepare`]).
    not_for: Option<u64>,
}

impl Sim {
    /// The roster version held (once synced).
    pub fn version(&self) -> Option<u64> {
        self.roster.version()
    }
}

struct Lane {
    udp: Option<UdpTransport>,
    ep: Endpoint,
    members: HashMap<AssocId, u32>,
    muted: bool,
    /// Clients assigned to it so far.
    size: usize,
    /// Filled by [`Swarm::add`] without a lane; the others belong to one group of clients.
    shared: bool,
    /// The last read stopped at its budget: read again next turn without waiting for an event.
    backlog: bool,
}

/// A scenario's interest in one simulated client's entry reaching a given status at every other client.
#[derive(Clone, Debug)]
pub struct Watch {
    /// The watched client's index.
    pub nick: u32,
    /// The status waited for.
    pub online: bool,
    /// Clients that have seen it.
    pub seen: FixedBitSet,
    /// How many have.
    pub count: usize,
    /// Clients that saw it a second time (a join or a loss shown twice).
    pub dups: usize,
    /// When the last of them saw it.
    pub last_at: Option<Instant>,
}

/// Protocol-level counters of the whole swarm.
#[derive(Copy, Clone, Debug, Default)]
pub struct Counters {
    /// REGISTERED Ok received.
    pub registered: u64,
    /// REGISTERED with another result.
    pub refused: u64,
    /// RESYNCs sent after a delta did not follow the version held.
    pub resyncs: u64,
    /// Associations that went down (not silenced by the scenario).
    pub downs: u64,
    /// Of those, the ones the daemon gave up on or aborted (an ABORT reached us).
    pub downs_aborted: u64,
    /// Of those, the ones our side gave up on (retransmission or heartbeat limit).
    pub downs_lost: u64,
    /// Reconnection attempts.
    pub reconnects: u64,
    /// Roster messages that did not parse.
    pub malformed: u64,
    /// Sessions opened (handshakes completed), resumptions included.
    pub handshakes: u64,
    /// Sessions begun with a resumption ticket.
    pub resumptions: u64,
    /// Of those, the daemon did not take the ticket (a full handshake followed).
    pub tickets_refused: u64,
    /// Handshakes that failed or were refused.
    pub handshake_failures: u64,
    /// Entries for nicknames not from this swarm.
    pub foreign: u64,
    /// Transitions of watched clients' bits that went the other way (e.g. a silenced client shown online
    /// again, or a client never silenced shown offline) while watches were set.
    pub unexpected_offline: u64,
    /// Snapshot and delta messages applied.
    pub roster_msgs: u64,
    /// Entries carried by them.
    pub roster_entries: u64,
}

/// A broadcast body opened already: its broadcast key, sequence number, digest and plaintext.
type Opened = (
    [u8; broadcast::KEY_LEN],
    u64,
    [u8; broadcast::DIGEST_LEN],
    std::sync::Arc<Vec<u8>>,
);

/// The swarm.
pub struct Swarm {
    /// How it was set up.
    pub cfg: Config,
    reactor: Reactor,
    lanes: Vec<Lane>,
    /// The simulated clients, by index.
    pub sims: Vec<Sim>,
    group: Option<mio::net::UdpSocket>,
    daemon_instance: u64,
    /// The daemon's key: the one named in the configuration, else the one the first session showed. It
    /// names the tickets the daemon issues.
    daemon_key: Option<PublicKey>,
    rng: ChaCha8Rng,
    /// Seeds for the handshakes' ephemeral keys.
    seeds: Seeds,
    /// The broadcast bodies opened last, by broadcast key and sequence number (a restarted daemon has a new
    /// key and counts from 0 again): every simulated client checks its own copy's head (what binds the body to
    /// it), and the same body is then decrypted once for all of them, as each real client would decrypt it
    /// once on its own host.
    opened: VecDeque<Opened>,
    /// Counters.
    pub counters: Counters,
    watches: Watches,
    events: Vec<ReactorEvent>,
    /// Rung by the signal watcher, so a turn waiting for its deadline ends at once.
    _wake: std::sync::Arc<mio::Waker>,
}

impl Swarm {
    /// A swarm with no clients yet. `group` is the discovery socket to hear ANNOUNCE on, if any.
    pub fn new(
        cfg: Config,
        group: Option<mio::net::UdpSocket>,
        daemon_instance: u64,
    ) -> io::Result<Swarm> {
        let reactor = Reactor::with_events_capacity(1024)?;
        let mut group = group;
        if let Some(g) = &mut group {
            reactor
                .registry()
                .register(g, GROUP, mio::Interest::READABLE)?;
        }
        let wake = crate::signals::wake_on_signal(mio::Waker::new(reactor.registry(), WAKE)?);
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let mut handshake_seed = [0u8; 32];
        rng.fill_bytes(&mut handshake_seed);
        Ok(Swarm {
            _wake: wake,
            seeds: Seeds::new(&handshake_seed),
            daemon_key: cfg.daemon_key,
            opened: VecDeque::new(),
            rng,
            watches: Watches {
                list: Vec::new(),
                of: HashMap::new(),
                expect_offline: FixedBitSet::with_capacity(cfg.capacity),
            },
            cfg,
            reactor,
            lanes: Vec::new(),
            sims: Vec::new(),
            group,
            daemon_instance,
            counters: Counters::default(),
            events: Vec::new(),
        })
    }

    /// The clock.
    pub fn now(&self) -> Instant {
        self.reactor.now()
    }

    /// The nickname of client `i`.
    pub fn nick(&self, i: u32) -> Nick {
        nick_of(&self.cfg.tag, i)
    }

    /// Opens a new lane (socket and endpoint) and returns its index.
    pub fn new_lane(&mut self) -> io::Result<u32> {
        let idx = self.lanes.len();
        let mut udp = UdpTransport::bind(SocketAddr::new(self.cfg.bind, 0), 1200)?;
        // The simulated clients would each send from their own host: their packets to the daemon leave in
        // segmented sends, so the harness's per-packet stack walk does not eat the daemon's CPU. The kernel
        // cuts them apart before mpd's socket; mpd reads and answers one client's packet at a time as ever.
        udp.set_coalescing(Coalescing::Destination);
        if let Err(e) = udp.enable_gro() {
            log::debug!("mpbench: no UDP GRO on this kernel ({e}); reading datagram by datagram");
        }
        udp.register(self.reactor.registry(), Token(FIRST_LANE + idx))?;
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let mut sctp = sctp_config(FIRST_PORT, self.cfg.heartbeat);
        sctp.max_associations = self.cfg.per_lane.max(1);
        self.lanes.push(Lane {
            udp: Some(udp),
            ep: Endpoint::new(sctp, seed),
            members: HashMap::new(),
            muted: false,
            size: 0,
            shared: false,
            backlog: false,
        });
        Ok(idx as u32)
    }

    /// Adds `n` clients: to `lane` if given (which must have room), else to lanes with room, opening more.
    /// Returns their indexes. They start idle; [`Swarm::connect`] starts them.
    pub fn add(&mut self, n: usize, lane: Option<u32>) -> io::Result<std::ops::Range<u32>> {
        let first = self.sims.len() as u32;
        for _ in 0..n {
            let l = match lane {
                Some(l) => l,
                None => match self.lanes.iter().rposition(|l| l.shared) {
                    Some(l) if self.lanes[l].size < self.cfg.per_lane => l as u32,
                    _ => {
                        let l = self.new_lane()?;
                        self.lanes[l as usize].shared = true;
                        l
                    }
                },
            };
            let lane = &mut self.lanes[l as usize];
            if lane.size >= self.cfg.per_lane || lane.size >= usize::from(u16::MAX - FIRST_PORT) {
                return Err(io::Error::other("lane full"));
            }
            let port = FIRST_PORT + lane.size as u16;
            lane.size += 1;
            let instance = self.rng.next_u64();
            self.sims.push(Sim {
                state: State::Idle,
                lane: l,
                port,
                assoc: None,
                instance,
                connect_at: None,
                registered_at: None,
                synced_at: None,
                roster: RosterSync::new(),
                online: FixedBitSet::new(),
                online_count: 0,
                retry_delay: RETRY_MIN,
                retry_timer: None,
                identity: None,
                link: Initiator::Idle,
                bcast: None,
                ticket: None,
                prepared: None,
            });
        }
        if self.sims.len() > self.cfg.capacity {
            return Err(io::Error::other("more clients than the swarm's capacity"));
        }
        Ok(first..self.sims.len() as u32)
    }

    /// Client `i`'s first handshake message, made with `seed`: a resumption with the ticket of the daemon we
    /// expect (any, if none was named), else IK to the named key or XX, as mpc does. Also whether it resumes.
    fn first_message(&mut self, i: u32, seed: [u8; 32]) -> (Initiator, Option<Vec<u8>>, bool) {
        let daemon_key = self.cfg.daemon_key;
        let sim = &mut self.sims[i as usize];
        let id = sim
            .identity
            .get_or_insert_with(|| Identity::from_secret(derive_seed(&seed, "client key")));
        let ticket = sim
            .ticket
            .as_deref()
            .filter(|t| daemon_key.is_none_or(|k| k == t.daemon));
        match ticket {
            Some(t) => {
                let (link, first) = Initiator::resume(Context::Roster, t, false, seed);
                (link, first.ok(), true)
            }
            None => {
                let (link, first) =
                    Initiator::start(Context::Roster, id, daemon_key.as_ref(), None, seed);
                (link, first.ok(), false)
            }
        }
    }

    /// Makes every client's next first handshake message now, before a measured phase in which they all
    /// connect at once: real clients each make theirs on their own CPU, in parallel (an IK first message is
    /// two X25519 multiplications and a key generation, about 0.2 ms here), where the swarm would make
    /// 10 000 of them one after the other inside the measured time. [`Swarm::connect`] uses a prepared
    /// message once; a new ticket or a refused one discards it. With `not_for`, the messages are for the
    /// next daemon instance: not used while the swarm still knows daemon instance `not_for` (the attempts
    /// clients make at once when their daemon shuts down, before its successor announces itself, make their
    /// own).
    pub fn prepare(&mut self, clients: std::ops::Range<u32>, not_for: Option<u64>) {
        for i in clients {
            let seed = self.seeds.next_seed();
            let (link, first, resume) = self.first_message(i, seed);
            self.sims[i as usize].prepared = first.map(|first| {
                Box::new(Prepared {
                    link,
                    first,
                    resume,
                    not_for,
                })
            });
        }
    }

    /// The daemon instance the swarm knows (from its WELCOME, then from ANNOUNCEs).
    pub fn daemon_instance(&self) -> u64 {
        self.daemon_instance
    }

    /// Starts client `i`: opens its association and queues its first handshake message (REGISTER follows
    /// once the session is open).
    pub fn connect(&mut self, i: u32) {
        let now = self.now();
        if matches!(
            self.sims[i as usize].state,
            State::Silenced | State::Refused(_)
        ) {
            return;
        }
        let prepared = self.sims[i as usize].prepared.take();
        let (link, first, resume) = match prepared {
            Some(p) if p.not_for != Some(self.daemon_instance) => (p.link, Some(p.first), p.resume),
            other => {
                self.sims[i as usize].prepared = other;
                let seed = self.seeds.next_seed();
                self.first_message(i, seed)
            }
        };
        let sim = &mut self.sims[i as usize];
        if let Some(t) = sim.retry_timer.take() {
            self.reactor.cancel(t);
        }
        let lane = &mut self.lanes[sim.lane as usize];
        if let Some(old) = sim.assoc.take() {
            lane.members.remove(&old);
            lane.ep.abort(old);
        }
        match lane
            .ep
            .connect_from(now, sim.port, self.cfg.daemon, self.cfg.daemon_port)
        {
            Ok(assoc) => {
                if resume {
                    self.counters.resumptions += 1;
                }
                if let Some(m) = first {
                    let _ = lane.ep.send_owned(assoc, 0, false, PPID, m);
                }
                sim.link = link;
                sim.bcast = None;
                lane.members.insert(assoc, i);
                sim.assoc = Some(assoc);
                sim.state = State::Connecting;
                sim.connect_at = Some(now);
                sim.roster.reset();
            }
            Err(e) => {
                log::debug!("client {i}: connect failed: {e}");
                sim.state = State::Waiting;
                self.schedule_retry(i, now);
            }
        }
    }

    /// Watches client `nick` reaching `online` at every client from now on.
    pub fn watch(&mut self, nick: u32, online: bool) {
        let w = &mut self.watches;
        w.of.insert(nick, w.list.len());
        w.list.push(Watch {
            nick,
            online,
            seen: FixedBitSet::with_capacity(self.cfg.capacity),
            count: 0,
            dups: 0,
            last_at: None,
        });
    }

    /// Ends every watch and returns them.
    pub fn take_watches(&mut self) -> Vec<Watch> {
        self.watches.of.clear();
        std::mem::take(&mut self.watches.list)
    }

    /// The watches in progress.
    pub fn watches(&self) -> &[Watch] {
        &self.watches.list
    }

    /// Silences every client of `lane` as a crash would: `close` shuts the socket (the daemon's next packet
    /// is answered by ICMP port unreachable), otherwise it stays open but is never read or written again.
    pub fn silence_lane(&mut self, lane: u32, close: bool) {
        let l = &mut self.lanes[lane as usize];
        if close {
            if let Some(mut udp) = l.udp.take() {
                let _ = udp.deregister(self.reactor.registry());
            }
        } else {
            l.muted = true;
            if let Some(udp) = &mut l.udp {
                let _ = udp.deregister(self.reactor.registry());
            }
        }
        for s in self.sims.iter_mut().filter(|s| s.lane == lane) {
            s.state = State::Silenced;
            if let Some(t) = s.retry_timer.take() {
                self.reactor.cancel(t);
            }
        }
        for i in 0..self.sims.len() {
            if self.sims[i].lane == lane {
                self.watches.expect_offline.insert(i);
            }
        }
    }

    /// Shuts every association down gracefully (SHUTDOWN), as mpc does on exit, and waits up to `limit`.
    pub fn shutdown(&mut self, limit: Duration) -> io::Result<()> {
        let now = self.now();
        for l in self
            .lanes
            .iter_mut()
            .filter(|l| l.udp.is_some() && !l.muted)
        {
            let ids: Vec<AssocId> = l.members.keys().copied().collect();
            for id in ids {
                l.ep.shutdown(now, id);
            }
        }
        for s in &mut self.sims {
            if s.state != State::Silenced {
                s.state = State::Refused(RegisterResult::Ok);
            }
        }
        // Not `run_until`: leaving is what a signal asks for, so this loop does not stop at one.
        let end = self.now() + limit;
        while self.now() < end
            && !self
                .lanes
                .iter()
                .all(|l| l.udp.is_none() || l.muted || l.ep.is_empty())
        {
            self.step(end)?;
        }
        Ok(())
    }

    /// Runs the loop until `done` holds (checked after every turn) or `limit` passes; returns whether `done`
    /// held.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Swarm) -> bool,
    ) -> io::Result<bool> {
        let end = self.now() + limit;
        loop {
            if done(self) {
                return Ok(true);
            }
            if self.now() >= end {
                return Ok(false);
            }
            self.turn(end)?;
        }
    }

    /// One turn that does not wait: brings the swarm's clock up to date after the caller spent a while
    /// elsewhere (the raw fan-out baseline), so that what it does next is not stamped in the past.
    pub fn catch_up(&mut self) -> io::Result<()> {
        let now = self.now();
        self.turn(now)
    }

    /// One turn of the loop, waiting at most until `deadline`; an error once a signal came.
    pub fn turn(&mut self, deadline: Instant) -> io::Result<()> {
        crate::signals::check()?;
        self.step(deadline)
    }

    fn step(&mut self, deadline: Instant) -> io::Result<()> {
        // What the scenario queued since the last turn (a connect, a shutdown) goes out before waiting.
        self.write_all()?;
        let live = |l: &&Lane| l.udp.is_some() && !l.muted;
        let next = if self.lanes.iter().filter(live).any(|l| l.backlog) {
            self.now()
        } else {
            self.lanes
                .iter()
                .filter(live)
                .filter_map(|l| l.ep.poll_timeout())
                .fold(deadline, Instant::min)
        };
        let mut events = std::mem::take(&mut self.events);
        self.reactor.turn(Some(next), &mut events)?;
        let now = self.now();
        for ev in &events {
            match *ev {
                ReactorEvent::Io(GROUP, _) => self.read_group(),
                // The signal watcher: `turn` checks at the start of the next one.
                ReactorEvent::Io(WAKE, _) => {}
                ReactorEvent::Io(Token(t), r) => {
                    let l = t - FIRST_LANE;
                    if let Some(lane) = self.lanes.get_mut(l)
                        && !lane.muted
                        && let Some(udp) = &mut lane.udp
                    {
                        // Read below, with the lanes that have a backlog.
                        lane.backlog = true;
                        if r.writable {
                            udp.write(now, &mut lane.ep, self.reactor.registry(), Token(t))?;
                        }
                    }
                }
                ReactorEvent::Timer { key, .. } => {
                    let i = key as u32;
                    self.sims[i as usize].retry_timer = None;
                    if self.sims[i as usize].state == State::Waiting {
                        self.counters.reconnects += 1;
                        self.connect(i);
                    }
                }
                ReactorEvent::Signal(_) => {}
            }
        }
        self.events = events;
        for l in 0..self.lanes.len() {
            let lane = &mut self.lanes[l];
            if lane.backlog
                && !lane.muted
                && let Some(udp) = &mut lane.udp
            {
                lane.backlog = udp.read_budget(now, &mut lane.ep, READ_BUDGET)?;
                self.drain(l);
                // What this read owes the daemon (SACKs, heartbeat acknowledgements) leaves now.
                self.write_lane(l, now)?;
            }
        }
        for l in 0..self.lanes.len() {
            let lane = &mut self.lanes[l];
            if lane.udp.is_some() && !lane.muted && lane.ep.poll_timeout().is_some_and(|t| t <= now)
            {
                lane.ep.handle_timeout(now);
                self.drain(l);
            }
        }
        self.write_all()
    }

    fn write_all(&mut self) -> io::Result<()> {
        let now = self.now();
        for l in 0..self.lanes.len() {
            self.write_lane(l, now)?;
        }
        Ok(())
    }

    /// Moves what lane `l`'s endpoint has to send into its socket (nothing for a muted lane).
    fn write_lane(&mut self, l: usize, now: Instant) -> io::Result<()> {
        let lane = &mut self.lanes[l];
        if !lane.muted
            && let Some(udp) = &mut lane.udp
        {
            udp.write(
                now,
                &mut lane.ep,
                self.reactor.registry(),
                Token(FIRST_LANE + l),
            )?;
        }
        Ok(())
    }

    fn read_group(&mut self) {
        let mut buf = [0u8; 512];
        let mut announced = None;
        if let Some(g) = &self.group {
            while let Ok((n, _)) = g.recv_from(&mut buf) {
                if let Ok((Datagram::Announce(d), _)) = Datagram::parse(&buf[..n], None)
                    && d.instance != self.daemon_instance
                    && self.cfg.daemon_key.is_none_or(|k| k == d.key)
                {
                    announced = Some(d.instance);
                }
            }
        }
        // As mpc does: a new daemon announced itself, so every client that is not registered with it
        // connects at once rather than at its backoff timer.
        if let Some(inst) = announced {
            self.daemon_instance = inst;
            for i in 0..self.sims.len() as u32 {
                if matches!(
                    self.sims[i as usize].state,
                    State::Waiting | State::Connecting
                ) {
                    self.counters.reconnects += 1;
                    self.connect(i);
                }
            }
        }
    }

    fn drain(&mut self, l: usize) {
        let now = self.now();
        while let Some((id, ev)) = self.lanes[l].ep.poll_event() {
            let Some(&i) = self.lanes[l].members.get(&id) else {
                continue;
            };
            match ev {
                Event::Message { ppid, data, .. } if ppid == PPID => {
                    self.on_secured(now, l, id, i, &data)
                }
                Event::Down(reason) => {
                    self.lanes[l].members.remove(&id);
                    self.on_down(now, i, reason);
                }
                _ => {}
            }
        }
    }

    /// A message of roster protocol 4 for client `i`: a handshake step or sealed roster data.
    fn on_secured(&mut self, now: Instant, l: usize, id: AssocId, i: u32, data: &[u8]) {
        if let Ok(Frame::Broadcast(t)) = Frame::parse(data) {
            let Some(r) = &mut self.sims[i as usize].bcast else {
                return;
            };
            // Each body is digested and opened once for every simulated client it reaches, as each real
            // client would do once on its own host: by (broadcast key, sequence), which name one body of an
            // honest daemon (this harness measures our own). Each client's head is still checked, under its
            // own MAC key and counter.
            let key = *r.key();
            let seq = broadcast::sequence(t.body).unwrap_or(u64::MAX);
            let cached = self
                .opened
                .iter()
                .find(|(k, s, _, _)| *s == seq && *k == key)
                .map(|(_, _, d, p)| (*d, std::sync::Arc::clone(p)));
            let digest = cached
                .as_ref()
                .map_or_else(|| broadcast::digest(t.body), |c| c.0);
            let Ok(body) = r.accept_digest(&t, &digest) else {
                self.counters.malformed += 1;
                return;
            };
            let plain = match cached {
                Some((_, p)) => p,
                None => match broadcast::open(&key, body) {
                    Ok(p) => {
                        let p = std::sync::Arc::new(p);
                        if self.opened.len() >= 64 {
                            self.opened.pop_front();
                        }
                        self.opened
                            .push_back((key, seq, digest, std::sync::Arc::clone(&p)));
                        p
                    }
                    Err(_) => {
                        self.counters.malformed += 1;
                        return;
                    }
                },
            };
            match ServerMsg::view(&plain) {
                Ok(m) => self.on_message(now, i, m),
                Err(_) => self.counters.malformed += 1,
            }
            return;
        }
        let key = self.cfg.daemon_key;
        let step = self.sims[i as usize]
            .link
            .handle(data, |k| key.is_none_or(|p| p == *k));
        match step {
            Step::Nothing => {}
            Step::Data(plain) => match ServerMsg::view(&plain) {
                Ok(m) => self.on_message(now, i, m),
                Err(_) => self.counters.malformed += 1,
            },
            Step::ResumeRefused(key) => {
                // The daemon no longer takes the ticket: the full handshake on the same association.
                let seed = self.seeds.next_seed();
                self.counters.tickets_refused += 1;
                let sim = &mut self.sims[i as usize];
                sim.ticket = None;
                sim.prepared = None;
                let Some(me) = &sim.identity else {
                    return;
                };
                let (link, first) = Initiator::start(Context::Roster, me, Some(&key), None, seed);
                if let Ok(m) = first {
                    let _ = self.lanes[l].ep.send_owned(id, 0, false, PPID, m);
                }
                sim.link = link;
            }
            Step::Opened { key, reply } => {
                self.counters.handshakes += 1;
                // A daemon given by address: its key, learned in the first XX handshake, names its tickets.
                self.daemon_key.get_or_insert(key);
                let ep = &mut self.lanes[l].ep;
                if let Some(m) = reply {
                    let _ = ep.send_owned(id, 0, false, PPID, m);
                }
                let sim = &mut self.sims[i as usize];
                let reg = register(&self.cfg, nick_of(&self.cfg.tag, i), sim.instance, i);
                if let Some(m) = sim.link.seal(&reg.encode()) {
                    let _ = ep.send_owned(id, 0, false, PPID, m);
                }
            }
            Step::NotAccepted(_) | Step::Refused(_) | Step::Failed => {
                self.counters.handshake_failures += 1;
                self.lanes[l].ep.abort(id);
            }
        }
    }

    fn on_down(&mut self, now: Instant, i: u32, reason: DownReason) {
        let sim = &mut self.sims[i as usize];
        sim.assoc = None;
        sim.link = Initiator::Idle;
        sim.bcast = None;
        sim.roster.reset();
        if matches!(sim.state, State::Silenced | State::Refused(_)) {
            return;
        }
        self.counters.downs += 1;
        match reason {
            DownReason::PeerAbort(_) => self.counters.downs_aborted += 1,
            DownReason::Lost => self.counters.downs_lost += 1,
            _ => {}
        }
        if sim.state == State::Registered {
            sim.retry_delay = RETRY_MIN;
        }
        sim.state = State::Waiting;
        // mpc looks again at once after a clean SHUTDOWN (the daemon is probably restarting), otherwise
        // after a jittered pause that doubles up to 5 s.
        if reason == DownReason::Shutdown {
            let t = self.reactor.arm(now, u64::from(i));
            self.sims[i as usize].retry_timer = Some(t);
        } else {
            self.schedule_retry(i, now);
        }
    }

    fn schedule_retry(&mut self, i: u32, now: Instant) {
        let d = self.sims[i as usize].retry_delay;
        let us = d.as_micros() as u64;
        let wait = Duration::from_micros(us / 2 + self.rng.next_u64() % (us + 1));
        let sim = &mut self.sims[i as usize];
        sim.retry_delay = (d * 2).min(RETRY_MAX);
        if let Some(t) = sim.retry_timer.take() {
            self.reactor.cancel(t);
        }
        let t = self.reactor.arm(now + wait, u64::from(i));
        self.sims[i as usize].retry_timer = Some(t);
    }

    /// Handles one message from the daemon. Entries are decoded as they are applied (no `Vec` per message:
    /// a storm brings 10⁸ of them); a malformed one is counted, ends the message, and asks for a resync.
    fn on_message(&mut self, now: Instant, i: u32, m: ServerView<'_>) {
        match m {
            ServerView::Whole(ServerMsg::Registered { result, .. }) => {
                let sim = &mut self.sims[i as usize];
                if sim.state != State::Connecting {
                    return;
                }
                if result == RegisterResult::Ok {
                    sim.state = State::Registered;
                    sim.registered_at = Some(now);
                    sim.synced_at = None;
                    sim.retry_delay = RETRY_MIN;
                    self.counters.registered += 1;
                } else {
                    sim.state = State::Refused(result);
                    self.counters.refused += 1;
                    if let Some(a) = sim.assoc {
                        self.lanes[sim.lane as usize].ep.shutdown(now, a);
                    }
                }
            }
            ServerView::Whole(ServerMsg::BroadcastKeys { key, mac_key }) => {
                self.sims[i as usize].bcast = Some(Receiver::new(key, mac_key));
            }
            ServerView::Whole(ServerMsg::Ticket { secret, ticket, .. }) => {
                // Sealed in the session with the daemon's key (the one named, or the one XX showed).
                if let Some(daemon) = self.daemon_key {
                    self.sims[i as usize].prepared = None;
                    self.sims[i as usize].ticket = Some(Box::new(Ticket {
                        daemon,
                        ticket,
                        secret,
                    }));
                }
            }
            ServerView::Whole(_) => {}
            ServerView::Snapshot { .. } | ServerView::Delta { .. } => self.on_roster(now, i, m),
        }
    }

    /// Applies a snapshot page or a delta to client `i`'s copy through the library's [`RosterSync`], and
    /// sends RESYNC when it is out of step.
    fn on_roster(&mut self, now: Instant, i: u32, m: ServerView<'_>) {
        let cap = self.cfg.capacity;
        let sim = &mut self.sims[i as usize];
        if sim.state != State::Registered {
            return;
        }
        if sim.online.len() < cap {
            sim.online.grow(cap);
        }
        let Sim {
            roster,
            online,
            online_count,
            synced_at,
            assoc,
            lane,
            link,
            ..
        } = sim;
        let counters = &mut self.counters;
        counters.roster_msgs += 1;
        let mut copy = RosterBits {
            online,
            tag: &self.cfg.tag,
            cap,
            seen: Seen {
                i,
                now,
                online_count,
                watches: &mut self.watches,
                counters,
            },
        };
        let synced = match m {
            ServerView::Snapshot {
                version,
                page,
                pages,
                entries,
            } => {
                copy.seen.counters.roster_entries += entries.remaining() as u64;
                roster.snapshot(&mut copy, version, page, pages, entries)
            }
            ServerView::Delta { from, to, entries } => {
                copy.seen.counters.roster_entries += entries.remaining() as u64;
                roster.delta(&mut copy, from, to, entries)
            }
            ServerView::Whole(_) => return,
        };
        match synced {
            Ok(Synced::Snapshot { .. }) => {
                if synced_at.is_none() {
                    *synced_at = Some(now);
                }
            }
            Ok(Synced::Nothing | Synced::Delta) => {}
            Ok(Synced::NeedResync) | Err(_) => {
                if synced.is_err() {
                    self.counters.malformed += 1;
                }
                self.counters.resyncs += 1;
                if let Some(a) = *assoc
                    && let Some(m) = link.seal(&ClientMsg::Resync.encode())
                {
                    let _ = self.lanes[*lane as usize]
                        .ep
                        .send_owned(a, 0, false, PPID, m);
                }
            }
        }
    }

    /// Heartbeats this swarm's endpoints sent and had acknowledged.
    pub fn heartbeats(&self) -> (u64, u64) {
        self.lanes.iter().fold((0, 0), |(s, a), l| {
            let st = l.ep.stats();
            (s + st.heartbeats_sent, a + st.heartbeats_acked)
        })
    }
}

/// The scenario's watches, and who may go offline without it being unexpected.
struct Watches {
    list: Vec<Watch>,
    /// Index in `list` by watched client.
    of: HashMap<u32, usize>,
    /// Clients whose bits must not be reported as unexpected (the silenced ones).
    expect_offline: FixedBitSet,
}

/// One simulated client's copy of the roster, as the library's [`RosterSync`] fills it: a bit per simulated
/// client that is online, a snapshot assembled in a new bitset.
struct RosterBits<'a> {
    online: &'a mut FixedBitSet,
    tag: &'a str,
    cap: usize,
    seen: Seen<'a>,
}

/// Where client `i`'s changes of a bit are reported.
struct Seen<'a> {
    i: u32,
    now: Instant,
    online_count: &'a mut u32,
    watches: &'a mut Watches,
    counters: &'a mut Counters,
}

impl Seen<'_> {
    /// Client `i` now sees client `x` as `on`line (its bit has just changed).
    fn flipped(&mut self, x: u32, on: bool) {
        if on {
            *self.online_count += 1;
        } else {
            *self.online_count -= 1;
        }
        // A client's own entry is not news to anyone: watches count what the others see.
        if self.i == x {
            return;
        }
        let (i, w) = (self.i as usize, &mut *self.watches);
        match w.of.get(&x) {
            Some(&k) => {
                let w = &mut w.list[k];
                if w.online == on {
                    if w.seen.contains(i) {
                        w.dups += 1;
                    } else {
                        w.seen.insert(i);
                        w.count += 1;
                        w.last_at = Some(self.now);
                    }
                } else if !on {
                    self.counters.unexpected_offline += 1;
                }
            }
            None => {
                if !on && !w.list.is_empty() && !w.expect_offline.contains(x as usize) {
                    self.counters.unexpected_offline += 1;
                }
            }
        }
    }

    /// Client `i` was told again that client `x` is online while showing it online: a second join of a
    /// watched client.
    fn online_again(&mut self, x: u32) {
        if let Some(&k) = self.watches.of.get(&x) {
            let w = &mut self.watches.list[k];
            if w.online && w.seen.contains(self.i as usize) {
                w.dups += 1;
            }
        }
    }
}

impl<'e> RosterStore<EntryRef<'e>> for RosterBits<'_> {
    type Pending = FixedBitSet;

    fn begin_snapshot(&mut self) -> FixedBitSet {
        FixedBitSet::with_capacity(self.cap)
    }

    #[inline]
    fn snapshot_entry(&mut self, next: &mut FixedBitSet, e: EntryRef<'e>) {
        match index_of(self.tag, e.nick, self.cap) {
            Some(x) if e.status == Status::Online => next.insert(x as usize),
            Some(_) => {}
            None => self.seen.counters.foreign += 1,
        }
    }

    fn end_snapshot(&mut self, next: FixedBitSet) {
        let old = std::mem::replace(self.online, next);
        for x in old.symmetric_difference(self.online) {
            self.seen.flipped(x as u32, self.online.contains(x));
        }
    }

    #[inline]
    fn delta_entry(&mut self, e: EntryRef<'e>) {
        match index_of(self.tag, e.nick, self.cap) {
            Some(x) => {
                let on = e.status == Status::Online;
                if self.online.contains(x as usize) != on {
                    self.online.set(x as usize, on);
                    self.seen.flipped(x, on);
                } else if on {
                    self.seen.online_again(x);
                }
            }
            None => self.seen.counters.foreign += 1,
        }
    }
}

/// The REGISTER client `i` (named `nick`, with `instance`) sends.
pub fn register(cfg: &Config, nick: Nick, instance: u64, i: u32) -> ClientMsg {
    ClientMsg::Register(Register {
        flags: if cfg.liveness_only {
            flags::NO_ROSTER
        } else {
            flags::SUBSCRIBE
        },
        instance,
        nick: nick.to_string(),
        chat_port: chat_port(i),
        chat_ip: None,
    })
}

/// The chat port client `i` registers (no one connects to it).
pub fn chat_port(i: u32) -> u16 {
    20_000 + (i % 40_000) as u16
}

/// The nickname of simulated client `i` under `tag`.
pub fn nick_of(tag: &str, i: u32) -> Nick {
    Nick::new(&format!("{tag}{i}")).expect("tags are short and plain")
}

/// The simulated client a nickname names, if it is one of `tag`'s below `cap`.
fn index_of(tag: &str, nick: &[u8], cap: usize) -> Option<u32> {
    let tag = tag.as_bytes();
    // A byte loop rather than a slice comparison: the tag is a few bytes, and a memcmp call per entry showed.
    if nick.len() < tag.len() || !tag.iter().zip(nick).all(|(a, b)| a == b) {
        return None;
    }
    let rest = &nick[tag.len()..];
    // Only the canonical spelling: "07" is not client 7. (Digits by hand: this runs for every roster entry.)
    if rest.is_empty() || rest.len() > 9 || (rest.len() > 1 && rest[0] == b'0') {
        return None;
    }
    let mut i = 0u32;
    for &c in rest {
        if !c.is_ascii_digit() {
            return None;
        }
        i = i * 10 + u32::from(c - b'0');
    }
    ((i as usize) < cap).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nick_indexes_round_trip_and_strangers_are_not_counted() {
        let tag = "b1a2b-";
        for i in [0u32, 7, 99_999] {
            assert_eq!(index_of(tag, nick_of(tag, i).as_bytes(), 100_000), Some(i));
        }
        assert_eq!(
            index_of(tag, nick_of(tag, 100_000).as_bytes(), 100_000),
            None
        );
        assert_eq!(index_of(tag, b"alice", 10), None);
        assert_eq!(index_of(tag, b"b1a2b-07", 10), None);
        assert_eq!(index_of(tag, b"b1a2b-x", 10), None);
    }
}
