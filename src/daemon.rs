//! `mpd`'s service loop: one reactor driving the sans-IO [`Server`] on its sockets (the SCTP-over-UDP socket,
//! the discovery group and sender sockets), plus what only a process has: the control socket, the roster saver
//! thread, signals and handing freed heap back to the OS. Process management lives beside it: the pidfile lock
//! ([`pidfile`]), daemonizing ([`detach`]), the status text ([`status_view`]) and log files
//! ([`crate::logging`]); `src/bin/mpd.rs` wires them to the command line. [`run`] only runs the service until
//! it is told to stop.
//!
//! Each loop turn: read the clock once, tell the server how late the turn woke (it judges stalls), move
//! datagrams into the server, run its timers, send what it has (a bounded number of datagrams per turn), and
//! act on its events (log, save).

mod control;
pub mod detach;
pub mod pidfile;
pub mod status_view;

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mio::Token;
use nix::sys::signal::Signal;

use crate::discovery;
use crate::io::discovery::{Iface, multicast_socket, resolve_iface, sender_socket};
use crate::io::roster_file as persist;
use crate::io::sctp_udp::{Coalescing, UdpTransport};
use crate::reactor::{Reactor, ReactorEvent};
use crate::registry::Event as RosterEvent;
use crate::server::{self, Event, Server};
use crate::time::Instant;

pub use control::{CONTROL_SOCKET, query, query_status};

/// Where and how the daemon runs. `src/bin/mpd.rs` builds this from its command line.
#[derive(Clone, Debug)]
pub struct Options {
    /// Directory for `multiproto.sock`, `roster.json` (the pidfile and log are the binary's).
    pub dir: PathBuf,
    /// `--iface ADDR|NAME`, or `None` for the routing table's choice.
    pub iface: Option<String>,
    /// Address the SCTP socket binds to (the unspecified address: all of them).
    pub bind: IpAddr,
    /// The protocol settings: discovery group, SCTP port (also the UDP port the encapsulation socket binds),
    /// heartbeat and RTO bounds, offline TTL, roster size, save delay. The instance id, the bound UDP port,
    /// the host address, the identity (from `dir/daemon.key`) and the network secret (from `secret_file`) are
    /// filled in when the daemon starts.
    pub server: server::Config,
    /// `--secret-file`: the network secret every client must hold.
    pub secret_file: Option<PathBuf>,
}

impl Options {
    /// Defaults from DESIGN.md, in `dir`.
    pub fn new(dir: PathBuf) -> Options {
        Options {
            dir,
            iface: None,
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            // A placeholder: `Service::start` always puts the key from `dir` in its place.
            server: server::Config::new(0, crate::identity::Identity::from_secret([0; 32])),
            secret_file: None,
        }
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
const TIMER_TRIM: u64 = 3;
const TIMER_KERNEL_PORTS: u64 = 4;
/// How often mpd looks again at which UDP port the kernel's own SCTP uses (no segmented sends go there).
const KERNEL_PORTS_EVERY: Duration = Duration::from_secs(10);

/// After the roster was saved, how long until freed heap memory is handed back, and how often that is tried
/// again while associations are still sending (the storm's queues are still draining).
const TRIM_DELAY: Duration = Duration::from_secs(1);

/// Datagrams sent per loop turn at most. Under a join storm or a restart the endpoint can hold far more
/// (every association's window of roster pages), and sending it all before reading again once left
/// handshakes waiting behind it. The budget is large enough for a whole join's fan-out at 10 000 clients
/// (one delta each) to leave in one turn: with 2 048, mpd read and handled the SACKs of the fan-out's first
/// recipients before sending to the rest, and a join at 10 000 took 1.3-1.4 × as long (PERF.md). About 70 ms
/// of sending on loopback.
pub const SEND_BUDGET: usize = 16384;

/// Counters of what the process around the server does.
#[derive(Copy, Clone, Debug, Default, serde::Serialize)]
pub struct Counters {
    /// The server core's counters (discovery, stalls, refusals).
    #[serde(flatten)]
    pub server: server::Stats,
    /// Roster saves that failed (each is logged).
    pub save_errors: u64,
    /// Roster saves written.
    pub saves: u64,
    /// Times freed heap memory was handed back to the OS after a burst (`heap::release_free`).
    pub heap_trims: u64,
    /// Free heap memory held at those times, in KiB, summed.
    pub heap_trimmed_kib: u64,
}

/// The daemon's sockets and process state around its [`Server`].
struct Service {
    opts: Options,
    reactor: Reactor,
    udp: UdpTransport,
    server: Server,
    group_sock: mio::net::UdpSocket,
    sender: mio::net::UdpSocket,
    control: control::Control,
    ready: Ready,
    started_ms: u64,
    /// The daemon's long-term key (the handshake that uses it is issue 14's next step).
    identity: crate::identity::Identity,
    counters: Counters,
    /// Writes the roster off the loop.
    saver: persist::Saver,
    trim_armed: bool,
}

/// Why the daemon could not start; `Display` is the one-line message `mpd` prints, saying what to do.
#[derive(Debug)]
pub enum StartError {
    /// The event loop, its signal watch or a socket's registration with it (`what` says which).
    Setup(&'static str, io::Error),
    /// `--iface` names no usable interface.
    Iface(io::Error),
    /// The discovery group could not be joined on the interface.
    Join {
        /// The group.
        group: SocketAddr,
        /// The interface.
        iface: Iface,
        /// What the kernel said.
        source: io::Error,
    },
    /// The discovery sender socket could not be opened.
    Sender(io::Error),
    /// Another process holds the SCTP port.
    PortInUse(u16),
    /// The SCTP socket could not be bound for another reason.
    Bind(SocketAddr, io::Error),
    /// Something in the daemon's directory (`what` says what).
    Dir {
        /// What failed.
        what: &'static str,
        /// The directory.
        dir: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The OS gave no randomness (for the instance id and the SCTP secrets).
    Randomness(String),
    /// The daemon's key (`DIR/daemon.key`) could not be read or made.
    Key(crate::io::keyfile::KeyError),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Setup(what, e) => write!(f, "cannot {what}: {e}"),
            StartError::Iface(e) => write!(f, "--iface: {e}"),
            StartError::Join {
                group,
                iface,
                source,
            } => write!(
                f,
                "cannot join the discovery group {group} on interface {iface}: {source} (check --group and --iface)"
            ),
            StartError::Sender(e) => write!(f, "cannot open the discovery sender socket: {e}"),
            StartError::PortInUse(p) => write!(
                f,
                "UDP port {p} is already in use (another mpd?): stop it, or choose another with --sctp-port"
            ),
            StartError::Bind(a, e) => write!(f, "cannot bind the SCTP socket to {a}: {e}"),
            StartError::Dir { what, dir, source } => write!(
                f,
                "{what} in {}: {source}; fix the directory's permissions or choose another --dir",
                dir.display()
            ),
            StartError::Randomness(e) => write!(f, "no OS randomness: {e}"),
            StartError::Key(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// Runs the daemon until SIGTERM or SIGINT. `ready` is called once: with what it listens on when every
/// socket is open (the caller may then detach), or with why it cannot start. `hup` is called on SIGHUP (the
/// caller reopens its log file).
pub fn run(
    opts: Options,
    ready: &mut dyn FnMut(Result<&Ready, &StartError>),
    hup: &mut dyn FnMut(),
) -> io::Result<()> {
    let mut svc = match Service::open(opts) {
        Ok(s) => s,
        Err(e) => {
            ready(Err(&e));
            return Err(io::Error::other(e));
        }
    };
    ready(Ok(&svc.ready));
    svc.serve(hup)
}

impl Service {
    fn open(opts: Options) -> Result<Service, StartError> {
        let dir_err = |what: &'static str| {
            let dir = opts.dir.clone();
            move |source| StartError::Dir { what, dir, source }
        };
        let setup = |what: &'static str| move |e| StartError::Setup(what, e);
        let mut reactor = Reactor::new().map_err(setup("create the event loop"))?;
        reactor
            .watch_signals(&[Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP], SIGNALS)
            .map_err(setup("watch signals"))?;
        let iface = resolve_iface(opts.iface.as_deref(), opts.server.group.ip())
            .map_err(StartError::Iface)?;
        let (mut group_sock, joined) =
            multicast_socket(opts.server.group, iface).map_err(|source| StartError::Join {
                group: opts.server.group,
                iface,
                source,
            })?;
        let sender = sender_socket(opts.server.group, joined).map_err(StartError::Sender)?;
        let bind = SocketAddr::new(opts.bind, opts.server.sctp_port);
        let mut udp = UdpTransport::bind(bind, 1200).map_err(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                StartError::PortInUse(opts.server.sctp_port)
            } else {
                StartError::Bind(bind, e)
            }
        })?;
        // The daemon's identity, made on its first start (`mpd key` prints it).
        let key_path = opts.dir.join(crate::io::keyfile::DAEMON_KEY);
        let (identity, created) =
            crate::io::keyfile::load_or_create(&key_path).map_err(StartError::Key)?;
        if created {
            log::info!("created a new daemon key in {}", key_path.display());
        }
        let psk = match &opts.secret_file {
            Some(p) => Some(crate::io::keyfile::load_secret(p).map_err(StartError::Key)?),
            None => None,
        };
        let mut control = control::Control::bind(&opts.dir)
            .map_err(dir_err("cannot create the control socket"))?;
        // Bursts to one client (a roster snapshot) leave as segmented sends. GRO stays off here: each
        // client's packets are few and small, and a load harness that runs many clients behind one socket
        // must not get its clients' packets merged into one read, which real clients on their own hosts
        // would never be.
        udp.set_coalescing(Coalescing::Association);
        udp.register(reactor.registry(), SCTP)
            .map_err(setup("register the SCTP socket"))?;
        reactor
            .registry()
            .register(&mut group_sock, GROUP, mio::Interest::READABLE)
            .map_err(setup("register the discovery socket"))?;
        control
            .register(reactor.registry(), CONTROL)
            .map_err(setup("register the control socket"))?;

        let randomness = |e: getrandom::Error| StartError::Randomness(e.to_string());
        let instance = getrandom::u64().map_err(randomness)?;
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(randomness)?;
        let host_ip = match joined {
            Iface::V4(a) if !a.is_loopback() => Some(IpAddr::V4(a)),
            _ => None,
        };
        let ready = Ready {
            sctp: udp
                .local_addr()
                .map_err(setup("read the SCTP socket's address"))?,
            group: opts.server.group,
            iface: joined,
        };
        // The server's clock is the reactor's, and so is the wall clock for the "since" times users see (the
        // reactor reads it once, at its start).
        let wall0 = reactor.wall_ms().saturating_sub(reactor.now().as_millis());
        if psk.is_some() {
            log::info!(
                "network secret required: only clients holding it can find, join or read this daemon"
            );
        }
        let cfg = server::Config {
            instance,
            sctp_udp_port: ready.sctp.port(),
            host_ip,
            identity: identity.clone(),
            psk,
            ..opts.server.clone()
        };
        let mut server = Server::new(cfg, seed, wall0, reactor.now());
        match persist::load(&opts.dir, reactor.wall_ms())
            .map_err(dir_err("cannot read the saved roster"))?
        {
            persist::Loaded::Missing => {
                log::info!("no saved roster in {}: starting empty", opts.dir.display())
            }
            persist::Loaded::Roster { image, skipped } => {
                let n = server.load(image);
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
            .map_err(setup("start the roster saver thread"))?;
        Ok(Service {
            opts,
            reactor,
            udp,
            server,
            group_sock,
            sender,
            control,
            ready,
            started_ms: wall0,
            identity,
            counters: Counters::default(),
            saver,
            trim_armed: false,
        })
    }

    fn serve(&mut self, hup: &mut dyn FnMut()) -> io::Result<()> {
        log::info!(
            "mpd started: instance {:016x}, key {}, SCTP on udp {}, discovery {} on interface {}, pid {}",
            self.server.config().instance,
            self.identity.public().fingerprint(),
            self.ready.sctp,
            self.ready.group,
            self.ready.iface,
            std::process::id()
        );
        let start = self.reactor.now();
        self.reactor
            .arm(start + KERNEL_PORTS_EVERY, TIMER_KERNEL_PORTS);
        let mut events = Vec::with_capacity(256);
        // Datagrams left in the server when the last turn's send budget ran out: turn again at once.
        let mut backlog = false;
        loop {
            let wake = if backlog {
                Some(self.reactor.now())
            } else {
                self.server.poll_timeout()
            };
            self.reactor.turn(wake, &mut events)?;
            let now = self.reactor.now();
            self.server.handle_stall(now, self.reactor.lateness());
            for ev in &events {
                match *ev {
                    // Readable: read. Writable (the socket had filled): the turn's own write below sends
                    // what waits.
                    ReactorEvent::Io(SCTP, _) => {
                        // Two closures feed the server: hand it to each in turn through a cell.
                        let server = RefCell::new(&mut self.server);
                        self.udp.read_with(
                            |from, b| server.borrow_mut().handle_sctp(now, from, b),
                            |dst, p| server.borrow_mut().handle_unreachable(now, dst, p),
                        )?
                    }
                    ReactorEvent::Io(GROUP, _) => self.read_discovery(now)?,
                    ReactorEvent::Io(CONTROL, _) => self.control.accept(self.reactor.registry())?,
                    ReactorEvent::Io(t, _) if t.0 >= CONTROL_CONNS.0 => {
                        if let Some(r) = self.control.serve(t, self.reactor.registry()) {
                            let answer = match r {
                                control::Request::Status => self.status(now),
                                control::Request::Release(name) => self.release(now, &name),
                            };
                            self.control.reply(t, self.reactor.registry(), &answer);
                        }
                    }
                    ReactorEvent::Signal(Signal::SIGHUP) => {
                        hup();
                        log::info!("log reopened on SIGHUP");
                    }
                    ReactorEvent::Signal(s) => {
                        log::info!(
                            "{s} received: shutting down {} associations",
                            self.server.endpoint().len()
                        );
                        self.server.stop(now);
                    }
                    ReactorEvent::Timer { key, .. } => match key {
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
            if self.server.poll_timeout().is_some_and(|t| t <= now) {
                self.server.handle_timeout(now);
            }
            let server = &mut self.server;
            backlog =
                self.udp
                    .write_budget_with(self.reactor.registry(), SCTP, SEND_BUDGET, |buf| {
                        server.poll_transmit(now, buf)
                    })?;
            self.send_discovery();
            while let Some(ev) = self.server.poll_event(now) {
                if self.on_event(now, ev) {
                    return Ok(());
                }
            }
        }
    }

    /// Acts on one of the server's events; true once the daemon has stopped.
    fn on_event(&mut self, now: Instant, ev: Event) -> bool {
        match ev {
            Event::Roster(e) => log_event(&e),
            Event::SaveDue => self.save(now),
            Event::Stalled(late) => log::warn!(
                "mpd was stalled for {} ms (stopped or starved): probing every client again before judging any",
                late.as_millis()
            ),
            Event::ForeignDaemon(from) => log::warn!(
                "another mpd announces itself on {} from {from}",
                self.opts.server.group
            ),
            Event::OldProtocol(remote) => log::info!(
                "client at {} speaks an older protocol (no keys, no encryption): told to upgrade",
                remote.map(|a| a.to_string()).unwrap_or_default()
            ),
            Event::HandshakeFailed { from, why } => log::info!(
                "client at {}: {why}",
                from.map(|a| a.to_string()).unwrap_or_default()
            ),
            Event::Stopped { unfinished } => {
                self.save(now);
                // Wait for that last save: the roster on disk is what the next start loads.
                self.saver.finish();
                let _ = std::fs::remove_file(control_path(&self.opts.dir));
                log::info!("mpd stopped ({unfinished} associations left unfinished)");
                return true;
            }
        }
        false
    }

    /// Hands freed heap memory back once every association's queue has drained; waits while any still sends.
    fn trim_heap(&mut self, now: Instant) {
        if self.server.is_sending() {
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

    fn read_discovery(&mut self, now: Instant) -> io::Result<()> {
        let mut buf = [0u8; 512];
        loop {
            let (n, from) = match self.group_sock.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.server.handle_discovery(now, from, &buf[..n]);
        }
    }

    /// Sends the server's WELCOMEs and ANNOUNCEs. A lost one is resent by its client's next HELLO (or is one
    /// of three ANNOUNCEs), so a failed send is only logged.
    fn send_discovery(&mut self) {
        let mut buf = [0u8; discovery::MAX_DATAGRAM];
        while let Some(t) = self.server.poll_discovery_transmit(&mut buf) {
            let to = t.dst;
            if let Err(e) = self.sender.send_to(&buf[..t.len], to) {
                log::debug!("discovery datagram to {to} failed: {e}");
            }
        }
    }

    /// `mpd release NAME`: frees the nickname from its key, and says what happened (`{"released": NAME}` or
    /// `{"error": WHY}`).
    fn release(&mut self, now: Instant, name: &str) -> serde_json::Value {
        let nick = match crate::nick::Nick::new(name) {
            Ok(n) => n,
            Err(e) => {
                return serde_json::json!({"error": format!("{name:?} is not a nickname: {e}")});
            }
        };
        match self.server.release(now, &nick) {
            Ok(()) => serde_json::json!({"released": nick.as_str()}),
            Err(e) => serde_json::json!({"error": format!("{nick}: {e}")}),
        }
    }

    /// Hands the roster to the saver thread (which logs and counts failures), and arms the heap trim: the
    /// copy handed over, and the queues the change filled, are freed once written and drained.
    fn save(&mut self, now: Instant) {
        let reg = self.server.registry();
        self.saver.save(reg.image(self.server.wall_ms(now)));
        if !self.trim_armed {
            self.trim_armed = true;
            self.reactor.arm(now + TRIM_DELAY, TIMER_TRIM);
        }
    }

    fn status(&self, now: Instant) -> serde_json::Value {
        let registry = self.server.registry();
        let (online, offline, other) = registry.counts();
        let flapping: Vec<serde_json::Value> = registry
            .flapping()
            .map(|(n, f)| serde_json::json!({"nick": n.as_str(), "flaps": f}))
            .collect();
        let ep = self.server.endpoint();
        let sctp = ep.stats();
        let udp = self.udp.stats();
        let srv = self.server.stats();
        let cfg = &self.opts.server;
        let busiest = registry.busiest_host();
        serde_json::json!({
            "running": true,
            "pid": std::process::id(),
            "version": env!("CARGO_PKG_VERSION"),
            "instance": format!("{:016x}", self.server.config().instance),
            "key": self.identity.public().fingerprint().to_string(),
            "started_unix_ms": self.started_ms,
            "uptime_s": now.as_millis() / 1000,
            "dir": self.opts.dir.display().to_string(),
            "group": self.ready.group.to_string(),
            "iface": self.ready.iface.to_string(),
            "sctp_udp": self.ready.sctp.to_string(),
            "sctp_port": self.opts.server.sctp_port,
            "heartbeat_ms": self.opts.server.heartbeat.as_millis() as u64,
            "detection_bound_ms": self.opts.server.detection_bound().as_millis() as u64,
            "clients": {"online": online, "offline": offline, "other_connections": other},
            "associations": ep.len(),
            "roster_version": registry.version(),
            "flapping": flapping,
            // Limits on well-formed abuse (issue 14): the settings (0 = none), the host nearest its cap, and
            // what each limit turned away. The counters are also under "registry" and "daemon".
            "limits": {
                "max_clients_per_host": cfg.max_clients_per_host,
                "max_offline_per_host": cfg.max_offline_per_host,
                "welcome_rate": cfg.welcome_rate,
                "busiest_host": busiest.map(|(ip, _)| ip.to_string()),
                "busiest_host_entries": busiest.map_or(0, |(_, n)| n),
                "host_refusals": registry.stats().host_refusals,
                "host_evictions": registry.stats().host_evictions,
                "hellos_rate_limited": srv.hellos_rate_limited,
                "hello_sources_evicted": srv.hello_sources_evicted,
            },
            "drops": {
                "discovery_foreign": srv.discovery_foreign,
                "discovery_bad_version": srv.discovery_bad_version,
                "discovery_malformed": srv.discovery_malformed,
                "sctp_bad_checksum": sctp.bad_checksum,
                "sctp_malformed": sctp.malformed,
                "sctp_bad_vtag": sctp.bad_vtag,
                "sctp_out_of_the_blue": sctp.ootb,
                "sctp_bad_cookies": sctp.bad_cookies,
                "udp_truncated": udp.truncated,
                "roster_malformed": registry.stats().malformed,
            },
            "daemon": Counters {
                server: *srv,
                save_errors: self.saver.errors(),
                saves: self.saver.saves(),
                ..self.counters
            },
            "registry": registry.stats(),
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
        RosterEvent::Evicted { nick, host } => {
            log::info!(
                "evicted: {nick} (offline longest of the entries from {host}, past the per-host cap)"
            )
        }
        RosterEvent::Rejected { nick, reason } => log::info!("rejected: {nick:?}: {reason}"),
        RosterEvent::Observed { nick } => log::debug!("observer {nick:?} read the roster"),
        RosterEvent::Released { nick } => {
            log::info!("released: {nick} (an operator freed it from its key)")
        }
        RosterEvent::Channel {
            nick,
            channel,
            joined,
        } => log::info!(
            "{}: {nick} {channel}",
            if *joined {
                "channel join"
            } else {
                "channel part"
            }
        ),
        RosterEvent::Away { nick, away } => {
            log::info!("{}: {nick}", if *away { "away" } else { "back" })
        }
        RosterEvent::Renamed { from, to } => {
            log::info!("renamed: {from} is now {to} (the same key; {from} stays bound to it)")
        }
    }
}

/// The path of the control socket in `dir`.
pub fn control_path(dir: &Path) -> PathBuf {
    dir.join(CONTROL_SOCKET)
}
