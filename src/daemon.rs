//! `mpd`'s service loop: one reactor driving the SCTP endpoint on its UDP socket, the discovery sockets, the
//! control socket, the registry and the saved roster. Process management (daemonizing, the pidfile, log
//! files) lives in `src/bin/mpd.rs`; this module only runs the service until it is told to stop.
//!
//! Each loop turn: read the clock once, check whether the process was stalled (then the SCTP endpoint
//! forgives what it could not have heard), handle I/O, signals and timers, feed association events to the
//! registry, flush the registry's coalesced deltas, and send.

mod control;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mio::Token;
use nix::sys::signal::Signal;

use crate::discovery::{self, DaemonInfo, Datagram, DiscoveryError, Iface};
use crate::reactor::{Reactor, ReactorEvent};
use crate::registry::{self, Event as RosterEvent, Out, Registry, persist, wire};
use crate::sctp::transport::{Coalescing, UdpTransport};
use crate::sctp::{AssocId, Config as SctpConfig, DownReason, Endpoint, Event, Payload, RtoConfig};
use crate::time::Instant;

pub use control::{CONTROL_SOCKET, query_status};

/// Where and how the daemon runs. `src/bin/mpd.rs` builds this from its command line.
#[derive(Clone, Debug)]
pub struct Options {
    /// Directory for `multiproto.sock`, `roster.json` (the pidfile and log are the binary's).
    pub dir: PathBuf,
    /// Discovery multicast group and port.
    pub group: SocketAddr,
    /// `--iface ADDR|NAME`, or `None` for the routing table's choice.
    pub iface: Option<String>,
    /// UDP port of the SCTP encapsulation socket (also used as the SCTP port).
    pub sctp_port: u16,
    /// Address the SCTP socket binds to (the unspecified address: all of them).
    pub bind: IpAddr,
    /// SCTP heartbeat interval.
    pub heartbeat: Duration,
    /// Unanswered heartbeats (or timeouts) after which a client is declared gone is this + 1.
    pub max_retransmits: u8,
    /// RTO bounds for client associations.
    pub rto_min: Duration,
    /// See `rto_min`.
    pub rto_max: Duration,
    /// How long offline entries are kept.
    pub offline_ttl: Duration,
    /// Roster entries held at most.
    pub max_clients: usize,
    /// How long after a change the roster is saved (changes in between are saved together).
    pub save_delay: Duration,
}

impl Options {
    /// Defaults from DESIGN.md, in `dir`.
    pub fn new(dir: PathBuf) -> Options {
        Options {
            dir,
            group: discovery::DEFAULT_GROUP,
            iface: None,
            sctp_port: crate::sctp::transport::DEFAULT_UDP_PORT,
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            heartbeat: Duration::from_secs(1),
            max_retransmits: 3,
            rto_min: Duration::from_millis(100),
            rto_max: Duration::from_millis(400),
            offline_ttl: Duration::from_secs(24 * 3600),
            max_clients: 200_000,
            save_delay: Duration::from_secs(1),
        }
    }

    /// The longest a silent client can stay online, from the last heartbeat it answered: one interval (plus
    /// jitter), then `max_retransmits + 1` unanswered heartbeats of one backed-off RTO each.
    pub fn detection_bound(&self) -> Duration {
        let mut rto = self.rto_min;
        let mut total = self.heartbeat + self.rto_min * 3 / 2;
        for _ in 0..=self.max_retransmits {
            total += rto;
            rto = (rto * 2).min(self.rto_max);
        }
        total
    }
}

/// What the daemon is listening on, once it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ready {
    /// The SCTP-over-UDP socket.
    pub sctp: SocketAddr,
    /// The discovery group.
    pub group: SocketAddr,
    /// The interface discovery joined on.
    pub iface: Iface,
}

const SCTP: Token = Token(0);
const GROUP: Token = Token(1);
const CONTROL: Token = Token(2);
const SIGNALS: Token = Token(3);
const CONTROL_CONNS: Token = Token(16);

/// Reactor timer keys.
const TIMER_ANNOUNCE: u64 = 1;
const TIMER_SAVE: u64 = 2;
const TIMER_TRIM: u64 = 3;
const TIMER_KERNEL_PORTS: u64 = 4;
/// How often mpd looks again at which UDP port the kernel's own SCTP uses (no segmented sends go there).
const KERNEL_PORTS_EVERY: Duration = Duration::from_secs(10);

/// After the roster changes, how long until freed heap memory is handed back, and how often that is tried
/// again while associations are still sending (the storm's queues are still draining).
const TRIM_DELAY: Duration = Duration::from_secs(1);

/// A turn that woke this much later than it asked counts as a stall (the process was stopped, the machine
/// suspended or overloaded).
const STALL: Duration = Duration::from_millis(250);

/// Datagrams sent per loop turn at most. Under a join storm or a restart the endpoint can hold far more
/// (every association's window of roster pages), and sending it all before reading again once left
/// handshakes waiting behind it. The budget is large enough for a whole join's fan-out at 10 000 clients
/// (one delta each) to leave in one turn: with 2 048, mpd read and handled the SACKs of the fan-out's first
/// recipients before sending to the rest, and a join at 10 000 took 1.3-1.4 × as long (PERF.md). About 70 ms
/// of sending on loopback.
const SEND_BUDGET: usize = 16384;
/// On stop, how long to wait for clients to acknowledge the shutdown of their associations.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Counters of the daemon's own (non-SCTP, non-registry) work.
#[derive(Copy, Clone, Debug, Default, serde::Serialize)]
pub struct Counters {
    /// HELLOs answered.
    pub hellos: u64,
    /// Discovery datagrams without our magic.
    pub discovery_foreign: u64,
    /// Discovery datagrams of another protocol version.
    pub discovery_bad_version: u64,
    /// Malformed discovery datagrams.
    pub discovery_malformed: u64,
    /// Roster messages dropped because a client's send buffer was full. None are since roster output is
    /// paced by flow control (the registry's `paced_waits` counts the waits); kept for `mpd status` readers.
    pub send_buffer_full: u64,
    /// Messages from clients of roster protocol 1, each answered with a refusal.
    pub old_protocol: u64,
    /// Stalls detected (turns that woke more than 250 ms late).
    pub stalls: u64,
    /// The longest stall, in ms.
    pub longest_stall_ms: u64,
    /// Roster saves that failed (each is logged).
    pub save_errors: u64,
    /// Roster saves written.
    pub saves: u64,
    /// Times freed heap memory was handed back to the OS after a burst (`heap::release_free`).
    pub heap_trims: u64,
    /// Free heap memory held at those times, in KiB, summed.
    pub heap_trimmed_kib: u64,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn random_u64() -> io::Result<u64> {
    getrandom::u64().map_err(|e| io::Error::other(format!("no OS randomness: {e}")))
}

fn why(r: DownReason) -> &'static str {
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

/// The daemon's state, shared by the loop's steps.
struct Service {
    opts: Options,
    reactor: Reactor,
    udp: UdpTransport,
    ep: Endpoint,
    registry: Registry,
    group_sock: mio::net::UdpSocket,
    sender: mio::net::UdpSocket,
    control: control::Control,
    ready: Ready,
    instance: u64,
    started_ms: u64,
    wall0: u64,
    counters: Counters,
    /// Writes the roster off the loop.
    saver: persist::Saver,
    save_armed: bool,
    trim_armed: bool,
    announces_left: u8,
}

/// Runs the daemon until SIGTERM or SIGINT. `ready` is called once: with what it listens on when every
/// socket is open (the caller may then detach), or with a one-line error if it cannot start. `hup` is called
/// on SIGHUP (the caller reopens its log file).
pub fn run(
    opts: Options,
    ready: &mut dyn FnMut(Result<&Ready, String>),
    hup: &mut dyn FnMut(),
) -> io::Result<()> {
    let mut svc = match Service::open(opts) {
        Ok(s) => s,
        Err(e) => {
            ready(Err(e.clone()));
            return Err(io::Error::other(e));
        }
    };
    ready(Ok(&svc.ready));
    svc.serve(hup)
}

impl Service {
    fn open(opts: Options) -> Result<Service, String> {
        let dir_hint = |e: io::Error, what: &str| {
            format!(
                "{what} in {}: {e}; fix the directory's permissions or choose another --dir",
                opts.dir.display()
            )
        };
        let mut reactor =
            Reactor::new().map_err(|e| format!("cannot create the event loop: {e}"))?;
        reactor
            .watch_signals(&[Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP], SIGNALS)
            .map_err(|e| format!("cannot watch signals: {e}"))?;
        let iface = discovery::resolve_iface(opts.iface.as_deref(), opts.group.ip())
            .map_err(|e| format!("--iface: {e}"))?;
        let (mut group_sock, joined) = discovery::multicast_socket(opts.group, iface).map_err(|e| {
            format!(
                "cannot join the discovery group {} on interface {iface}: {e} (check --group and --iface)",
                opts.group
            )
        })?;
        let sender = discovery::sender_socket(opts.group, joined)
            .map_err(|e| format!("cannot open the discovery sender socket: {e}"))?;
        let bind = SocketAddr::new(opts.bind, opts.sctp_port);
        let mut udp = UdpTransport::bind(bind, 1200).map_err(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                format!(
                    "UDP port {} is already in use (another mpd?): stop it, or choose another with --sctp-port",
                    opts.sctp_port
                )
            } else {
                format!("cannot bind the SCTP socket to {bind}: {e}")
            }
        })?;
        let control = control::Control::bind(&opts.dir)
            .map_err(|e| dir_hint(e, "cannot create the control socket"))?;
        // Bursts to one client (a roster snapshot) leave as segmented sends. GRO stays off here: each
        // client's packets are few and small, and a load harness that runs many clients behind one socket
        // must not get its clients' packets merged into one read, which real clients on their own hosts
        // would never be.
        udp.set_coalescing(Coalescing::Association);
        udp.register(reactor.registry(), SCTP)
            .map_err(|e| e.to_string())?;
        reactor
            .registry()
            .register(&mut group_sock, GROUP, mio::Interest::READABLE)
            .map_err(|e| e.to_string())?;
        let mut control = control;
        control
            .register(reactor.registry(), CONTROL)
            .map_err(|e| e.to_string())?;

        let instance = random_u64().map_err(|e| e.to_string())?;
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| format!("no OS randomness: {e}"))?;
        let cfg = SctpConfig {
            port: opts.sctp_port,
            accept: true,
            heartbeat_interval: Some(opts.heartbeat),
            rto: RtoConfig {
                initial: Duration::from_millis(300).clamp(opts.rto_min, opts.rto_max),
                min: opts.rto_min,
                max: opts.rto_max,
            },
            max_retransmits: opts.max_retransmits,
            streams: 2,
            max_associations: opts.max_clients.saturating_mul(2).max(64),
            // Clients heartbeat every second (mpc); answering those is enough to know they live.
            defer_to_peer_heartbeats: true,
            // After a restart every client sends INIT within a second or so, and one turn may read thousands:
            // room for their INIT ACKs (a few hundred bytes each, 5 MB at most) instead of dropping all but
            // 1 024 into T1 retransmissions.
            max_pending_replies: 16 * 1024,
            ..SctpConfig::default()
        };
        let ep = Endpoint::new(cfg, seed);
        let host_ip = match joined {
            Iface::V4(a) if !a.is_loopback() => Some(IpAddr::V4(a)),
            _ => None,
        };
        let mut registry = Registry::new(registry::Config {
            max_clients: opts.max_clients,
            offline_ttl: opts.offline_ttl,
            daemon: instance,
            host_ip,
            ..registry::Config::default()
        });
        let wall0 = unix_ms();
        match persist::load(&opts.dir, wall0)
            .map_err(|e| dir_hint(e, "cannot read the saved roster"))?
        {
            persist::Loaded::Missing => {
                log::info!("no saved roster in {}: starting empty", opts.dir.display())
            }
            persist::Loaded::Roster {
                entries,
                version,
                saved_unix_ms,
                skipped,
            } => {
                let n = registry.load(entries, version, saved_unix_ms);
                log::info!("loaded {n} roster entries (all offline until they register again)");
                if skipped > 0 {
                    log::warn!(
                        "skipped {skipped} invalid or duplicate entries in the saved roster"
                    );
                }
            }
            persist::Loaded::SetAside { reason, moved_to } => log::error!(
                "the saved roster could not be read ({reason}); it was moved to {} and the daemon starts with an empty roster",
                moved_to.display()
            ),
        }
        let saver = persist::Saver::start(opts.dir.clone())
            .map_err(|e| format!("cannot start the roster saver thread: {e}"))?;
        let ready = Ready {
            sctp: udp.local_addr().map_err(|e| e.to_string())?,
            group: opts.group,
            iface: joined,
        };
        Ok(Service {
            opts,
            reactor,
            udp,
            ep,
            registry,
            group_sock,
            sender,
            control,
            ready,
            instance,
            started_ms: wall0,
            wall0,
            counters: Counters::default(),
            saver,
            save_armed: false,
            trim_armed: false,
            announces_left: 3,
        })
    }

    fn wall(&self, now: Instant) -> u64 {
        self.wall0 + now.as_millis()
    }

    fn daemon_info(&self) -> DaemonInfo {
        DaemonInfo {
            instance: self.instance,
            sctp_udp_port: self.ready.sctp.port(),
            sctp_port: self.opts.sctp_port,
            addr: None,
        }
    }

    fn serve(&mut self, hup: &mut dyn FnMut()) -> io::Result<()> {
        log::info!(
            "mpd started: instance {:016x}, SCTP on udp {}, discovery {} on interface {}, pid {}",
            self.instance,
            self.ready.sctp,
            self.ready.group,
            self.ready.iface,
            std::process::id()
        );
        // Announce now and twice more, in case the first is lost: waiting clients find us at once.
        self.announce();
        let start = self.reactor.now();
        self.reactor
            .arm(start + KERNEL_PORTS_EVERY, TIMER_KERNEL_PORTS);
        let mut events = Vec::with_capacity(256);
        let mut stopping: Option<Instant> = None;
        // Datagrams left in the endpoint when the last turn's send budget ran out: turn again at once.
        let mut backlog = false;
        loop {
            let wake = if backlog {
                Some(self.reactor.now())
            } else {
                self.ep.poll_timeout()
            };
            self.reactor.turn(wake, &mut events)?;
            let now = self.reactor.now();
            let late = self.reactor.lateness();
            if late > STALL {
                self.counters.stalls += 1;
                self.counters.longest_stall_ms =
                    self.counters.longest_stall_ms.max(late.as_millis() as u64);
                log::warn!(
                    "mpd was stalled for {} ms (stopped or starved): probing every client again before judging any",
                    late.as_millis()
                );
                self.ep.handle_stall(now, self.opts.heartbeat);
                // Clients that gave up on us meanwhile come back by themselves: give them time to. After a
                // shorter stall (a long busy turn under a join storm) none can have given up, and the grace
                // would only delay the verdict on clients that really died.
                if late >= crate::client::shortest_give_up() {
                    self.registry
                        .note_stall(now, self.opts.detection_bound() * 2 + late);
                }
            }
            for ev in &events {
                match *ev {
                    // Readable: read. Writable (the socket had filled): the turn's own write below sends
                    // what waits.
                    ReactorEvent::Io(SCTP, _) => self.udp.read(now, &mut self.ep)?,
                    ReactorEvent::Io(GROUP, _) => self.read_discovery()?,
                    ReactorEvent::Io(CONTROL, _) => self.control.accept(self.reactor.registry())?,
                    ReactorEvent::Io(t, _) if t.0 >= CONTROL_CONNS.0 => {
                        let status = self.status(now);
                        self.control.serve(t, self.reactor.registry(), &status);
                    }
                    ReactorEvent::Signal(Signal::SIGHUP) => {
                        hup();
                        log::info!("log reopened on SIGHUP");
                    }
                    ReactorEvent::Signal(s) => {
                        if stopping.is_none() {
                            log::info!(
                                "{s} received: shutting down {} associations",
                                self.ep.len()
                            );
                            stopping = Some(now);
                            // Clients whose association we shut down reconnect at once; they must wait for
                            // the next daemon (its ANNOUNCE calls them) instead of registering here again.
                            self.ep.stop_accepting();
                            let ids: Vec<AssocId> = self.ep.ids().collect();
                            for id in ids {
                                self.ep.shutdown(now, id);
                            }
                        }
                    }
                    ReactorEvent::Timer { key, .. } => match key {
                        TIMER_ANNOUNCE => self.announce(),
                        TIMER_SAVE => {
                            self.save_armed = false;
                            self.save(now);
                        }
                        TIMER_TRIM => self.trim_heap(now),
                        TIMER_KERNEL_PORTS => {
                            self.udp.refresh_kernel_ports();
                            self.reactor
                                .arm(now + KERNEL_PORTS_EVERY, TIMER_KERNEL_PORTS);
                        }
                        _ => {}
                    },
                    ReactorEvent::Io(..) => {}
                }
            }
            if self.ep.poll_timeout().is_some_and(|t| t <= now) {
                self.ep.handle_timeout(now);
            }
            self.pump(now);
            backlog = self.udp.write_budget(
                now,
                &mut self.ep,
                self.reactor.registry(),
                SCTP,
                SEND_BUDGET,
            )?;
            if let Some(t) = stopping
                && (self.ep.is_empty() || now.saturating_since(t) >= STOP_GRACE)
            {
                self.save(now);
                // Wait for that last save: the roster on disk is what the next start loads.
                self.saver.finish();
                let _ = std::fs::remove_file(control_path(&self.opts.dir));
                log::info!(
                    "mpd stopped ({} associations left unfinished)",
                    self.ep.len()
                );
                return Ok(());
            }
        }
    }

    /// Moves association events into the registry and the registry's output into associations.
    fn pump(&mut self, now: Instant) {
        let wall = self.wall(now);
        while let Some((id, e)) = self.ep.poll_event() {
            match e {
                Event::Up => {
                    if let Some((remote, _)) = self.ep.remote(id) {
                        self.registry.connected(id, remote);
                    }
                }
                Event::Message { ppid, data, .. } if ppid == wire::PPID => {
                    self.registry.handle_message(now, wall, id, &data)
                }
                Event::Message { ppid, .. } if ppid == wire::PPID_V1 => self.refuse_v1(id),
                Event::Message { .. } => {}
                Event::Restarted => self.registry.connection_restarted(now, id),
                Event::Down(r) => self.registry.connection_lost(now, wall, id, why(r)),
            }
        }
        // Flow control: clients whose roster output waited for room in their association resume.
        while let Some(id) = self.ep.poll_writable() {
            self.registry.handle_writable(id);
        }
        self.registry.tick(now, wall);
        self.registry.flush();
        while let Some(out) = self.registry.poll_output() {
            match out {
                Out::To(id, bytes) => self.deliver(id, bytes),
                Out::Broadcast(bytes) => {
                    let subs: Vec<AssocId> = self.registry.subscribers().collect();
                    for id in subs {
                        self.deliver(id, Payload::Shared(Arc::clone(&bytes)));
                    }
                }
            }
        }
        while let Some(id) = self.registry.poll_probe() {
            self.ep.probe(now, id);
        }
        while let Some(ev) = self.registry.poll_event() {
            log_event(&ev);
        }
        if self.registry.take_unsaved() && !self.save_armed {
            self.save_armed = true;
            self.reactor.arm(now + self.opts.save_delay, TIMER_SAVE);
            // A changed roster means snapshots and deltas queued: their memory comes back once they drain.
            self.arm_trim(now);
        }
    }

    /// Hands freed heap memory back once every association's queue has drained; waits while any still sends.
    fn trim_heap(&mut self, now: Instant) {
        if self.ep.is_sending() {
            self.reactor.arm(now + TRIM_DELAY, TIMER_TRIM);
            return;
        }
        self.trim_armed = false;
        if let Some(free) = crate::heap::release_free(crate::heap::WORTH_TRIMMING) {
            self.counters.heap_trims += 1;
            self.counters.heap_trimmed_kib += (free / 1024) as u64;
            log::debug!("handed {} KiB of freed heap back to the OS", free / 1024);
        }
    }

    /// A client of roster protocol 1 (fixed-size entries) would not understand our snapshots. Its REGISTERED
    /// has the same layout in both versions, so it is told why in words it can show, and nothing else.
    fn refuse_v1(&mut self, id: AssocId) {
        self.counters.old_protocol += 1;
        let remote = self
            .ep
            .remote(id)
            .map(|(a, _)| a.to_string())
            .unwrap_or_default();
        log::info!(
            "client at {remote} speaks roster protocol 1 (MPR1): refused, it must be upgraded"
        );
        let reply = wire::ServerMsg::Registered {
            result: wire::RegisterResult::BadRequest,
            daemon: self.instance,
            retry_after_ms: 0,
            reason: "this mpd speaks roster protocol 2 (MPR2) and this client protocol 1: upgrade the client"
                .into(),
        };
        let _ = self
            .ep
            .send_owned(id, 0, false, wire::PPID_V1, reply.encode());
    }

    fn deliver(&mut self, id: AssocId, bytes: Payload) {
        // Flow control: a message the association has no room for goes back to the registry, which holds it
        // and what follows for this client until the endpoint reports room (`poll_writable` in `pump`).
        if let Err((crate::sctp::SendError::BufferFull, bytes)) =
            self.ep.try_send(id, 0, false, wire::PPID, bytes)
        {
            self.registry.handle_blocked(id, bytes);
        }
    }

    fn read_discovery(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 512];
        let mut out = Vec::with_capacity(discovery::MAX_DATAGRAM);
        loop {
            let (n, from) = match self.group_sock.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            match Datagram::parse(&buf[..n]) {
                Ok(Datagram::Hello(h)) => {
                    self.counters.hellos += 1;
                    log::debug!("HELLO from {} at {from}", h.nick);
                    Datagram::Welcome {
                        to: h.instance,
                        daemon: self.daemon_info(),
                    }
                    .write(&mut out);
                    if let Err(e) = self.sender.send_to(&out, from) {
                        log::debug!("WELCOME to {from} failed: {e}");
                    }
                }
                // Our own ANNOUNCE looped back, or another daemon's: not for us.
                Ok(Datagram::Announce(d)) if d.instance != self.instance => {
                    log::warn!(
                        "another mpd announces itself on {} from {from}",
                        self.opts.group
                    )
                }
                Ok(_) => {}
                Err(DiscoveryError::Foreign) => self.counters.discovery_foreign += 1,
                Err(DiscoveryError::Version(v)) => {
                    self.counters.discovery_bad_version += 1;
                    log::debug!("discovery datagram of version {v} from {from} ignored");
                }
                Err(DiscoveryError::Malformed) => self.counters.discovery_malformed += 1,
            }
        }
    }

    fn announce(&mut self) {
        let mut out = Vec::new();
        Datagram::Announce(self.daemon_info()).write(&mut out);
        if let Err(e) = self.sender.send_to(&out, self.opts.group) {
            log::warn!("cannot send ANNOUNCE to {}: {e}", self.opts.group);
        }
        self.announces_left = self.announces_left.saturating_sub(1);
        if self.announces_left > 0 {
            let after = if self.announces_left == 2 { 200 } else { 1000 };
            let now = self.reactor.now();
            self.reactor
                .arm(now + Duration::from_millis(after), TIMER_ANNOUNCE);
        }
    }

    /// Hands the roster to the saver thread (which logs and counts failures).
    fn save(&mut self, now: Instant) {
        let wall = self.wall(now);
        self.saver
            .save(self.registry.entries(), self.registry.version(), wall);
        // The copy handed over is freed once written: give it back to the OS with the rest.
        self.arm_trim(now);
    }

    fn arm_trim(&mut self, now: Instant) {
        if !self.trim_armed {
            self.trim_armed = true;
            self.reactor.arm(now + TRIM_DELAY, TIMER_TRIM);
        }
    }

    fn status(&self, now: Instant) -> serde_json::Value {
        let (online, offline, other) = self.registry.counts();
        let flapping: Vec<serde_json::Value> = self
            .registry
            .flapping()
            .map(|(n, f)| serde_json::json!({"nick": n.as_str(), "flaps": f}))
            .collect();
        let sctp = self.ep.stats();
        let udp = self.udp.stats();
        serde_json::json!({
            "running": true,
            "pid": std::process::id(),
            "version": env!("CARGO_PKG_VERSION"),
            "instance": format!("{:016x}", self.instance),
            "started_unix_ms": self.started_ms,
            "uptime_s": now.as_millis() / 1000,
            "dir": self.opts.dir.display().to_string(),
            "group": self.ready.group.to_string(),
            "iface": self.ready.iface.to_string(),
            "sctp_udp": self.ready.sctp.to_string(),
            "sctp_port": self.opts.sctp_port,
            "heartbeat_ms": self.opts.heartbeat.as_millis() as u64,
            "detection_bound_ms": self.opts.detection_bound().as_millis() as u64,
            "clients": {"online": online, "offline": offline, "other_connections": other},
            "associations": self.ep.len(),
            "roster_version": self.registry.version(),
            "flapping": flapping,
            "drops": {
                "discovery_foreign": self.counters.discovery_foreign,
                "discovery_bad_version": self.counters.discovery_bad_version,
                "discovery_malformed": self.counters.discovery_malformed,
                "sctp_bad_checksum": sctp.bad_checksum,
                "sctp_malformed": sctp.malformed,
                "sctp_bad_vtag": sctp.bad_vtag,
                "sctp_out_of_the_blue": sctp.ootb,
                "sctp_bad_cookies": sctp.bad_cookies,
                "udp_truncated": udp.truncated,
                "roster_malformed": self.registry.stats().malformed,
            },
            "daemon": Counters {
                save_errors: self.saver.errors(),
                saves: self.saver.saves(),
                ..self.counters
            },
            "registry": self.registry.stats(),
            "sctp": sctp,
            "udp": udp,
        })
    }
}

fn log_event(ev: &RosterEvent) {
    match ev {
        RosterEvent::Joined { nick, chat } => log::info!("join: {nick} at {chat}"),
        RosterEvent::Online {
            nick,
            chat,
            replaced,
        } => {
            if *replaced {
                log::info!("online: {nick} at {chat} (a new instance replaced the previous one)")
            } else {
                log::info!("online: {nick} at {chat}")
            }
        }
        RosterEvent::Offline { nick, why } => log::info!("offline: {nick} ({why})"),
        RosterEvent::Expired { nick } => {
            log::info!("expired: {nick} (offline longer than the TTL)")
        }
        RosterEvent::Rejected { nick, reason } => log::info!("rejected: {nick:?}: {reason}"),
        RosterEvent::Observed { nick } => log::debug!("observer {nick:?} read the roster"),
    }
}

/// The path of the control socket in `dir`.
pub fn control_path(dir: &Path) -> PathBuf {
    dir.join(CONTROL_SOCKET)
}
