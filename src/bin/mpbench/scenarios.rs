//! The scenarios on the swarm: join, storm, detect, restart, idle. Each starts its own daemon (unless
//! `--daemon` names one), brings clients online, measures, checks the harness's own invariants, and returns
//! [`Figures`]. A broken invariant is an error, not a figure.

use std::net::SocketAddr;
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};

use multiproto::discovery::{Datagram, Hello};
use multiproto::identity::PublicKey;
use multiproto::io::sctp_udp::SOCKET_BUFFER;
use multiproto::registry::wire::{self, Entry, ServerMsg, Status};
use multiproto::sctp::chunk::{DATA_HEADER_LEN, SACK_FIXED_LEN};
use multiproto::sctp::wire::HEADER_LEN;
use multiproto::secure::SEALED_OVERHEAD;

use crate::daemon::{Net, OwnDaemon, proc_stats, udp_rcvbuf_errors};
use crate::fanout;
use crate::report::{Figures, Progress, round3, summary};
use crate::swarm::{self, State, Swarm};

/// What every scenario is run with.
#[derive(Clone, Debug)]
pub struct Params {
    /// Simulated clients online before the measurement.
    pub clients: usize,
    /// Where the daemon is, or `None` to start one.
    pub daemon: Option<SocketAddr>,
    /// Discovery and ports of a daemon we start.
    pub net: Net,
    /// `idle`: how long to measure.
    pub duration: Duration,
    /// `join`: clients joining one at a time.
    pub joins: usize,
    /// `detect`: clients silenced (half with their socket closed, half muted).
    pub silence: usize,
    /// Clients per UDP socket.
    pub per_lane: usize,
    /// Clients connected per batch while bringing N online.
    pub batch: usize,
    /// Heartbeat interval of the simulated clients.
    pub heartbeat: Duration,
    /// Seeds the swarm.
    pub seed: u64,
    /// Clients register with NO_ROSTER: online without a roster of their own.
    pub liveness_only: bool,
    /// Extra `mpd start` options.
    pub mpd_args: Vec<String>,
}

/// A daemon for one scenario, with a swarm attached.
struct Bench {
    own: Option<OwnDaemon>,
    swarm: Swarm,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Finds the daemon with one HELLO (retried) and returns its SCTP address, SCTP port, instance and key.
fn discover(
    net: &Net,
    limit: Duration,
) -> Result<(SocketAddr, u16, u64, Option<PublicKey>), String> {
    let iface = multiproto::io::discovery::resolve_iface(net.iface.as_deref(), net.group.ip())
        .map_err(err)?;
    let mut sender = multiproto::io::discovery::sender_socket(net.group, iface).map_err(err)?;
    let mut poll = Poll::new().map_err(err)?;
    poll.registry()
        .register(&mut sender, Token(0), Interest::READABLE)
        .map_err(err)?;
    let instance = getrandom::u64().map_err(err)?;
    let mut hello = Vec::new();
    Datagram::Hello(Hello {
        instance,
        sctp_udp_port: 0,
    })
    .write(&mut hello, None);
    let end = std::time::Instant::now() + limit;
    let mut events = Events::with_capacity(8);
    let mut buf = [0u8; 512];
    while std::time::Instant::now() < end {
        crate::signals::check().map_err(err)?;
        sender.send_to(&hello, net.group).map_err(err)?;
        poll.poll(&mut events, Some(Duration::from_millis(200)))
            .map_err(err)?;
        while let Ok((n, from)) = sender.recv_from(&mut buf) {
            if let Ok((Datagram::Welcome { to, daemon }, _)) = Datagram::parse(&buf[..n], None)
                && to == instance
            {
                return Ok((
                    daemon.sctp_addr(from),
                    daemon.sctp_port,
                    daemon.instance,
                    Some(daemon.key),
                ));
            }
        }
    }
    Err(format!(
        "no daemon answered on {} (interface {iface}) within {limit:?}",
        net.group
    ))
}

impl Bench {
    /// Starts a daemon (unless one is given), finds it, and makes a swarm with room for `capacity` clients.
    fn open(p: &Params, capacity: usize) -> Result<Bench, String> {
        let own = match p.daemon {
            Some(_) => None,
            None => Some(OwnDaemon::start(&p.net, &p.mpd_args)?),
        };
        // A daemon given by address is met by an XX handshake (its key learned in it), one found by
        // discovery by IK to the key its WELCOME names, as mpc does.
        let (addr, port, instance, daemon_key) = match p.daemon {
            Some(a) => (a, a.port(), 0, None),
            None => discover(&p.net, Duration::from_secs(10))?,
        };
        let group = match p.daemon {
            Some(_) => None,
            None => {
                let iface = multiproto::io::discovery::resolve_iface(
                    p.net.iface.as_deref(),
                    p.net.group.ip(),
                )
                .map_err(err)?;
                Some(
                    multiproto::io::discovery::multicast_socket(p.net.group, iface)
                        .map_err(err)?
                        .0,
                )
            }
        };
        let bind = match addr.ip() {
            ip if ip.is_loopback() => ip,
            _ => std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        };
        let cfg = swarm::Config {
            daemon: addr,
            daemon_port: port,
            daemon_key,
            bind,
            heartbeat: p.heartbeat,
            per_lane: p.per_lane,
            capacity,
            tag: format!(
                "b{:04x}-",
                p.seed as u16 ^ (getrandom::u32().unwrap_or(0) as u16)
            ),
            seed: p.seed,
            liveness_only: p.liveness_only,
        };
        let swarm = Swarm::new(cfg, group, instance).map_err(err)?;
        Ok(Bench { own, swarm })
    }

    fn daemon_pid(&self) -> Option<i32> {
        self.own.as_ref().and_then(|d| d.pid().ok())
    }

    /// The SCTP counters of a daemon we started (`mpd status --json`, key `sctp`).
    fn daemon_sctp_stats(&self) -> Option<serde_json::Value> {
        let v = self.own.as_ref()?.status().ok()?;
        Some(v["sctp"].clone())
    }

    /// Connects every idle client in batches and waits until every client sees every other online.
    fn bring_online(&mut self, p: &Params, progress: &mut Progress) -> Result<Duration, String> {
        let sw = &mut self.swarm;
        let t0 = sw.now();
        let n = sw.sims.len();
        let limit = Duration::from_secs(60) + Duration::from_millis(20) * n as u32;
        let end = t0 + limit;
        let mut next = 0usize;
        progress.phase(format!("bringing {n} clients online"));
        while next < n {
            let upto = (next + p.batch).min(n);
            for i in next..upto {
                sw.connect(i as u32);
            }
            let ok = sw
                .run_until(end.saturating_since(sw.now()), |s| {
                    s.sims[next..upto].iter().all(|c| {
                        if s.cfg.liveness_only {
                            c.state == State::Registered
                        } else {
                            c.synced_at.is_some()
                        }
                    })
                })
                .map_err(err)?;
            if !ok {
                return Err(setup_failure(sw, "registering", limit));
            }
            next = upto;
            progress.update(format_args!("{next}/{n} registered"));
        }
        if sw.cfg.liveness_only {
            return Ok(sw.now().saturating_since(t0));
        }
        let all = n as u32;
        let ok = sw
            .run_until(end.saturating_since(sw.now()), |s| {
                s.sims.iter().all(|c| c.online_count == all)
            })
            .map_err(err)?;
        if !ok {
            return Err(setup_failure(sw, "syncing rosters", limit));
        }
        Ok(sw.now().saturating_since(t0))
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        // Leave as mpc does, so the daemon's own stop need not wait for answers from a swarm that is gone.
        let _ = self.swarm.shutdown(Duration::from_secs(2));
    }
}

fn setup_failure(sw: &Swarm, what: &str, limit: Duration) -> String {
    let registered = sw
        .sims
        .iter()
        .filter(|c| c.state == State::Registered)
        .count();
    let complete = sw
        .sims
        .iter()
        .filter(|c| c.online_count as usize == sw.sims.len())
        .count();
    format!(
        "{what}: after {limit:?}, {registered} of {} clients registered and {complete} see everyone ({:?})",
        sw.sims.len(),
        sw.counters
    )
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("harness invariant broken: {}", what()))
    }
}

/// Bytes of a SCTP packet carrying one SACK with no gaps: common header and the SACK chunk.
const SACK_PACKET_LEN: usize = HEADER_LEN + SACK_FIXED_LEN;

/// Milliseconds since the Unix epoch, as the daemon stamps entries.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Simulated client `i`'s roster entry as the daemon lists it once online (since `since_ms`).
fn entry_of(sw: &Swarm, i: u32, since_ms: u64) -> Entry {
    Entry {
        nick: sw.nick(i),
        instance: u64::MAX - u64::from(i),
        status: Status::Online,
        since_ms,
        chat: SocketAddr::from(([127, 0, 0, 1], swarm::chat_port(i))),
        flaps: 0,
        extra: None,
    }
}

/// Bytes of the SCTP packet that carries the delta of `joiner` joining: common header, DATA chunk header,
/// the delta message sealed and padded to 4.
fn delta_packet_len(joiner: Entry) -> usize {
    let m = ServerMsg::Delta {
        from: 1,
        to: 2,
        entries: vec![joiner],
    }
    .encode();
    HEADER_LEN + DATA_HEADER_LEN + (m.len() + SEALED_OVERHEAD).next_multiple_of(4)
}

/// Rounds of the storm's raw floor (its p50 is reported).
const STORM_FLOOR_ROUNDS: usize = 3;

/// What a complete storm must move, as a raw fan-out shape: each client's REGISTER up (its packet), and
/// down to each client a snapshot holding every client online, the least any client can receive to know
/// the whole roster. Sizes come from the protocol's encoder (`Register::encode`, `wire::encode_pages` with
/// the registry's default page size, the entries the storm's clients make), not from the run's messages:
/// how the daemon splits a storm into snapshots and deltas is what the floor is compared with. The
/// snapshot's pages are counted as one stream of full SCTP packets (DATA chunk header each), and every
/// second packet is acknowledged (RFC 9260 §6.2).
fn storm_floor(sw: &Swarm, p: &Params) -> fanout::Shape {
    let n = p.clients as u32;
    let since_ms = unix_ms();
    // Joined one after the other, as in a storm: each `since` a little after the one before.
    let entries = (0..n).map(|i| entry_of(sw, i, since_ms + u64::from(i)));
    // Each page sealed on its own.
    let roster: usize = wire::encode_pages(
        entries,
        multiproto::registry::Config::default().page_bytes,
        |b| wire::begin_snapshot(b, 1, 0, 1),
    )
    .iter()
    .map(|p| p.len() + SEALED_OVERHEAD)
    .sum();
    let packet = multiproto::sctp::Config::default().max_packet;
    let per_packet = (packet - HEADER_LEN - DATA_HEADER_LEN) & !3;
    let packets = roster.div_ceil(per_packet);
    let register = swarm::register(&sw.cfg, sw.nick(n - 1), u64::MAX, n - 1).encode();
    fanout::Shape {
        bind: sw.cfg.bind,
        receivers: p.clients,
        per_lane: p.per_lane,
        size: packet,
        bytes: roster + packets * (HEADER_LEN + DATA_HEADER_LEN),
        request: HEADER_LEN
            + DATA_HEADER_LEN
            + (register.len() + SEALED_OVERHEAD).next_multiple_of(4),
        reply: SACK_PACKET_LEN,
        ack_every: 2,
        // A quarter of a harness socket's receive buffer in flight at most: the floor never drops.
        window: SOCKET_BUFFER / 4 / packet,
        rounds: STORM_FLOOR_ROUNDS,
    }
}

/// `join`: N online, then `joins` more, one at a time.
pub fn join(p: &Params, progress: &mut Progress) -> Result<Figures, String> {
    let mut b = Bench::open(p, p.clients + p.joins)?;
    // The floor first, while the daemon is still empty and quiet: the same fan-out as plain datagrams.
    progress.phase(format!(
        "raw fan-out baseline: {} datagrams, {} rounds",
        p.clients, p.joins
    ));
    let size = delta_packet_len(entry_of(&b.swarm, p.clients as u32, unix_ms()));
    let mut raw = fanout::measure(fanout::Shape {
        bind: b.swarm.cfg.bind,
        receivers: p.clients,
        per_lane: p.per_lane,
        size,
        bytes: size,
        request: 0,
        reply: SACK_PACKET_LEN,
        ack_every: 1,
        window: usize::MAX,
        rounds: p.joins,
    })?;
    b.swarm.catch_up().map_err(err)?;
    b.swarm.add(p.clients, None).map_err(err)?;
    let setup = b.bring_online(p, progress)?;
    progress.phase(format!("{} joins, one at a time", p.joins));
    let mut reach = Vec::with_capacity(p.joins);
    let mut snapshot = Vec::with_capacity(p.joins);
    let mut dups = 0;
    for j in 0..p.joins {
        let sw = &mut b.swarm;
        let i = sw.add(1, None).map_err(err)?.start;
        let others = sw.sims.len() - 1;
        sw.watch(i, true);
        let t0 = sw.now();
        sw.connect(i);
        let ok = sw
            .run_until(Duration::from_secs(30), |s| {
                s.watches()[0].count >= others && s.sims[i as usize].synced_at.is_some()
            })
            .map_err(err)?;
        let w = sw.take_watches().remove(0);
        check(ok, || {
            format!(
                "join {j}: {} of {others} clients saw it within 30 s (joiner synced: {})",
                w.count,
                sw.sims[i as usize].synced_at.is_some()
            )
        })?;
        check(w.count == others, || {
            format!("join {j} seen by {} of {others}", w.count)
        })?;
        dups += w.dups;
        reach.push(w.last_at.map_or(Duration::ZERO, |t| t.saturating_since(t0)));
        snapshot.push(
            sw.sims[i as usize]
                .synced_at
                .map_or(Duration::ZERO, |t| t.saturating_since(t0)),
        );
        progress.update(format_args!("{}/{}", j + 1, p.joins));
    }
    check(dups == 0, || format!("{dups} clients saw a join twice"))?;
    let (p50, p99, max) = summary(&mut reach);
    let (s50, _, smax) = summary(&mut snapshot);
    let (raw50, raw99, _) = summary(&mut raw);
    let mut f = Figures::new("join");
    f.set("clients", p.clients)
        .ms("p50_ms", p50)
        .ms("p99_ms", p99)
        .ms("max_ms", max)
        .ms("snapshot_ms", s50)
        .set("joins", p.joins)
        .ms("snapshot_max_ms", smax)
        .ms("setup_ms", setup)
        .set("seen_twice", dups)
        .set("resyncs", b.swarm.counters.resyncs)
        .ms("raw_fanout_p50_ms", raw50)
        .ms("raw_fanout_p99_ms", raw99)
        .set(
            "p50_vs_raw",
            round3(p50.as_secs_f64() / raw50.as_secs_f64().max(1e-9)),
        );
    f.notes.push(
        "a join's time runs from the joiner opening its association to the last online client applying the \
         delta; snapshot_ms is the joiner's own roster complete"
            .into(),
    );
    f.notes.push(
        "raw_fanout: the same N datagrams (the delta's packet size) sent by a plain UDP sender thread with \
         mpd's batching and answered with SACK-sized datagrams, measured before the clients came online"
            .into(),
    );
    Ok(f)
}

/// `storm`: N clients start at once.
pub fn storm(p: &Params, progress: &mut Progress) -> Result<Figures, String> {
    let mut b = Bench::open(p, p.clients)?;
    // The floor first, while the daemon is still empty and quiet: what the storm must move, as plain datagrams.
    let shape = storm_floor(&b.swarm, p);
    progress.phase(format!(
        "storm's raw floor: {} KiB to each of {} receivers, {} rounds",
        shape.bytes / 1024,
        p.clients,
        shape.rounds
    ));
    let (raw, _, _) = summary(&mut fanout::measure(shape)?);
    b.swarm.catch_up().map_err(err)?;
    let pid = b.daemon_pid();
    let before = pid.map(proc_stats).transpose()?;
    let sctp_before = b.daemon_sctp_stats();
    let drops_before = udp_rcvbuf_errors();
    let sw = &mut b.swarm;
    sw.add(p.clients, None).map_err(err)?;
    let n = p.clients;
    // Each real client makes its first handshake message on its own CPU, all in parallel: made here before
    // the clock starts, not one after the other inside the measured time.
    progress.phase(format!("{n} clients making their first handshake messages"));
    sw.prepare(0..n as u32, None);
    progress.phase(format!("{n} clients starting at once"));
    let t0 = sw.now();
    let wall0 = std::time::Instant::now();
    for i in 0..n as u32 {
        sw.connect(i);
    }
    let limit = Duration::from_secs(60) + Duration::from_millis(20) * n as u32;
    let all = n as u32;
    let ok = sw
        .run_until(limit, |s| {
            s.sims
                .iter()
                .all(|c| c.state == State::Registered && c.online_count == all)
        })
        .map_err(err)?;
    let complete = sw.now().saturating_since(t0);
    check(ok, || setup_failure(sw, "storm", limit))?;
    let busy = wall0.elapsed();
    let drops = drops_before.zip(udp_rcvbuf_errors()).map(|(a, z)| z - a);
    let sctp_after = b.daemon_sctp_stats();
    let sw = &mut b.swarm;
    let during = pid.map(proc_stats).transpose()?;
    // Settled: two seconds after, for two seconds.
    sw.run_until(Duration::from_secs(2), |_| false)
        .map_err(err)?;
    let s0 = pid.map(proc_stats).transpose()?;
    let w0 = std::time::Instant::now();
    sw.run_until(Duration::from_secs(2), |_| false)
        .map_err(err)?;
    let s1 = pid.map(proc_stats).transpose()?;
    let settled = w0.elapsed();
    let mut f = Figures::new("storm");
    f.set("clients", n)
        .ms("complete_ms", complete)
        .ms("raw_floor_ms", raw)
        .set(
            "complete_vs_raw",
            round3(complete.as_secs_f64() / raw.as_secs_f64().max(1e-9)),
        );
    if let (Some(b0), Some(d), Some(s0), Some(s1)) = (before, during, s0, s1) {
        f.set("peak_rss_kib", s1.hwm_kib)
            .set(
                "storm_cpu_percent",
                round3(100.0 * (d.cpu - b0.cpu).as_secs_f64() / busy.as_secs_f64()),
            )
            .set(
                "settled_cpu_percent",
                round3(100.0 * (s1.cpu - s0.cpu).as_secs_f64() / settled.as_secs_f64()),
            )
            .set("settled_rss_kib", s1.rss_kib);
    } else {
        f.notes
            .push("daemon CPU and memory need a daemon started by mpbench".into());
    }
    f.set("resyncs", sw.counters.resyncs)
        .set("roster_entries_received", sw.counters.roster_entries)
        .set("downs", sw.counters.downs)
        .set("downs_aborted", sw.counters.downs_aborted)
        .set("downs_lost", sw.counters.downs_lost)
        .set("reconnects", sw.counters.reconnects);
    if let Some(d) = drops {
        f.set("udp_rcvbuf_drops", d);
    }
    if let (Some(a), Some(z)) = (sctp_before, sctp_after) {
        let delta = |k: &str| z[k].as_u64().unwrap_or(0) - a[k].as_u64().unwrap_or(0);
        f.set("daemon_t3_timeouts", delta("t3_timeouts"))
            .set("daemon_retransmits", delta("retransmits"));
    }
    f.notes.push(format!(
        "raw_floor: what a complete storm must move (each client's REGISTER packet up, a snapshot of all N \
         entries down to each, {} B, as full packets, every second one answered), sent by a plain UDP sender \
         thread with mpd's batching over the harness's lanes, measured before the clients started (p50 of {} \
         rounds)",
        shape.bytes, STORM_FLOOR_ROUNDS
    ));
    f.notes.push(
        "udp_rcvbuf_drops: datagrams the kernel dropped for full receive buffers during the storm, on the \
         whole machine (the harness's sockets, when it falls behind)"
            .into(),
    );
    f.notes.push(
        "each client's first handshake message is made before the clock starts, as real clients make theirs \
         on their own CPUs, in parallel; their answers are read inside it"
            .into(),
    );
    Ok(f)
}

/// `detect`: N online, silence K (half by closing their socket, half by muting it).
pub fn detect(p: &Params, progress: &mut Progress) -> Result<Figures, String> {
    let k = p.silence.clamp(1, p.clients.saturating_sub(1).max(1));
    let mut b = Bench::open(p, p.clients)?;
    let sw = &mut b.swarm;
    let closed_lane = sw.new_lane().map_err(err)?;
    let muted_lane = sw.new_lane().map_err(err)?;
    let closed = sw.add(k.div_ceil(2), Some(closed_lane)).map_err(err)?;
    let muted = sw.add(k / 2, Some(muted_lane)).map_err(err)?;
    sw.add(p.clients - k, None).map_err(err)?;
    b.bring_online(p, progress)?;
    let sw = &mut b.swarm;
    let others = p.clients - k;
    progress.phase(format!("silencing {k} of {} clients", p.clients));
    for i in closed.clone().chain(muted.clone()) {
        sw.watch(i, false);
    }
    let t0 = sw.now();
    sw.silence_lane(closed_lane, true);
    if !muted.is_empty() {
        sw.silence_lane(muted_lane, false);
    }
    let limit = Duration::from_secs(30);
    let ok = sw
        .run_until(limit, |s| s.watches().iter().all(|w| w.count >= others))
        .map_err(err)?;
    let watches = sw.take_watches();
    let seen: Vec<usize> = watches.iter().map(|w| w.count).collect();
    check(ok, || {
        format!("after {limit:?} the silenced were seen offline by {seen:?} of {others}")
    })?;
    check(sw.counters.unexpected_offline == 0, || {
        format!(
            "{} offline transitions of clients that were not silenced",
            sw.counters.unexpected_offline
        )
    })?;
    let dups: usize = watches.iter().map(|w| w.dups).sum();
    check(dups == 0, || format!("{dups} clients saw a loss twice"))?;
    let time = |w: &swarm::Watch| w.last_at.map_or(Duration::ZERO, |t| t.saturating_since(t0));
    let mut all: Vec<Duration> = watches.iter().map(time).collect();
    let mut by_close: Vec<Duration> = watches
        .iter()
        .filter(|w| closed.contains(&w.nick))
        .map(time)
        .collect();
    let mut by_mute: Vec<Duration> = watches
        .iter()
        .filter(|w| muted.contains(&w.nick))
        .map(time)
        .collect();
    let (p50, p99, max) = summary(&mut all);
    let mut f = Figures::new("detect");
    f.set("clients", p.clients)
        .set("silenced", k)
        .ms("p50_ms", p50)
        .ms("p99_ms", p99)
        .ms("max_ms", max)
        .ms("closed_socket_max_ms", summary(&mut by_close).2)
        .ms("muted_socket_max_ms", summary(&mut by_mute).2)
        .set("unexpected_offline", sw.counters.unexpected_offline);
    f.notes.push(
        "time from silencing to the last other client applying the offline delta; a closed socket is found by \
         ICMP port unreachable, a muted one by unanswered heartbeats"
            .into(),
    );
    Ok(f)
}

/// `restart`: `mpd restart` under N clients.
pub fn restart(p: &Params, progress: &mut Progress) -> Result<Figures, String> {
    if p.daemon.is_some() {
        return Err("restart needs a daemon started by mpbench (drop --daemon)".into());
    }
    let mut b = Bench::open(p, p.clients)?;
    b.swarm.add(p.clients, None).map_err(err)?;
    b.bring_online(p, progress)?;
    let own = b.own.as_ref().ok_or("no daemon")?;
    let dir = own.dir().to_path_buf();
    let sw = &mut b.swarm;
    // The messages that resume each client's session with the new daemon (with the ticket of its session
    // with the old one), made ahead as each real client would on its own CPU: in slices, with the loop run in
    // between so that the clients' heartbeats are answered meanwhile.
    progress.phase(format!(
        "{} clients making their resumption messages",
        p.clients
    ));
    let old = sw.daemon_instance();
    for start in (0..p.clients as u32).step_by(500) {
        sw.prepare(start..(start + 500).min(p.clients as u32), Some(old));
        sw.run_until(Duration::from_millis(1), |_| false)
            .map_err(err)?;
    }
    progress.phase(format!("mpd restart under {} clients", p.clients));
    let t0 = sw.now();
    // The restart command blocks while the old daemon shuts its associations down: run it beside the loop,
    // which must answer those SHUTDOWNs.
    let exe = std::env::current_exe().map_err(err)?.with_file_name("mpd");
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("restart")
        .arg("--dir")
        .arg(&dir)
        .args(restart_args(p));
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().map_err(err)?;
    let n = p.clients as u32;
    let limit = Duration::from_secs(60);
    let registered = |s: &Swarm| {
        s.sims
            .iter()
            .all(|c| c.state == State::Registered && c.registered_at.is_some_and(|t| t > t0))
    };
    let ok = sw.run_until(limit, registered).map_err(err);
    let reregistered = sw.now().saturating_since(t0);
    // Then the rosters: every client gets the whole roster again from the new daemon.
    let ok = ok.and_then(|ok| {
        if !ok {
            return Ok(false);
        }
        // A client's bits from before the restart stay until its new snapshot replaces them: wait for that
        // snapshot, and for every client to reach the same version.
        sw.run_until(limit.saturating_sub(reregistered), |s| {
            let v = s.sims[0].version();
            registered(s)
                && s.sims.iter().all(|c| {
                    c.synced_at.is_some_and(|t| t > t0) && c.online_count == n && c.version() == v
                })
        })
        .map_err(err)
    });
    // The command has certainly finished by now, or it never will: reap it.
    let status = child.wait().map_err(err)?;
    check(status.success(), || format!("mpd restart failed: {status}"))?;
    let ok = ok?;
    check(ok, || {
        setup_failure(sw, "re-registering after restart", limit)
    })?;
    let done = sw.now().saturating_since(t0);
    let versions: std::collections::BTreeSet<Option<u64>> =
        sw.sims.iter().map(|c| c.version()).collect();
    check(versions.len() == 1, || {
        format!("rosters disagree: versions {versions:?}")
    })?;
    let first = &sw.sims[0].online;
    check(sw.sims.iter().all(|c| &c.online == first), || {
        "rosters disagree".into()
    })?;
    let mut f = Figures::new("restart");
    f.set("clients", p.clients)
        .ms("reregister_ms", reregistered)
        .ms("rosters_agree_ms", done)
        .set("reconnects", sw.counters.reconnects)
        .set("resyncs", sw.counters.resyncs);
    f.notes.push(
        "from issuing `mpd restart` (which waits up to 2 s for the old daemon's graceful stop): reregister_ms \
         until every client is registered with the new one, rosters_agree_ms until every client also holds \
         the whole roster again (the same N² transfer as a storm); each client's message resuming its session \
         with the new daemon is made before the clock starts, as real clients make theirs on their own CPUs"
            .into(),
    );
    Ok(f)
}

fn restart_args(p: &Params) -> Vec<String> {
    let mut a = vec![
        "--group".to_string(),
        p.net.group.to_string(),
        "--sctp-port".into(),
        p.net.sctp_port.to_string(),
    ];
    if let Some(i) = &p.net.iface {
        a.extend(["--iface".to_string(), i.clone()]);
    }
    a.extend(crate::daemon::daemon_args(&p.mpd_args));
    a
}

/// `idle`: N online for `duration`.
pub fn idle(p: &Params, progress: &mut Progress) -> Result<Figures, String> {
    let mut b = Bench::open(p, p.clients)?;
    let pid = b.daemon_pid();
    let empty = pid.map(proc_stats).transpose()?;
    b.swarm.add(p.clients, None).map_err(err)?;
    b.bring_online(p, progress)?;
    let sw = &mut b.swarm;
    // Let the join traffic end before measuring.
    sw.run_until(Duration::from_secs(2), |_| false)
        .map_err(err)?;
    progress.phase(format!("{} clients idle for {:?}", p.clients, p.duration));
    let hb_daemon = |b: &Bench| -> Option<u64> {
        b.own
            .as_ref()
            .and_then(|d| d.status().ok())
            .and_then(|s| s["sctp"]["heartbeats_sent"].as_u64())
    };
    let d0 = hb_daemon(&b);
    let sw = &mut b.swarm;
    let (s0, _) = sw.heartbeats();
    let st0 = pid.map(proc_stats).transpose()?;
    let w0 = std::time::Instant::now();
    sw.run_until(p.duration, |_| false).map_err(err)?;
    let wall = w0.elapsed();
    let st1 = pid.map(proc_stats).transpose()?;
    let (s1, _) = sw.heartbeats();
    let still = sw
        .sims
        .iter()
        .filter(|c| c.state == State::Registered)
        .count();
    check(still == p.clients, || {
        format!("{still} of {} clients still registered", p.clients)
    })?;
    let d1 = hb_daemon(&b);
    let mut f = Figures::new("idle");
    f.set("clients", p.clients);
    if let (Some(e), Some(a), Some(z)) = (empty, st0, st1) {
        f.set("daemon_rss_kib", z.rss_kib)
            .set(
                "bytes_per_client",
                ((z.rss_kib.saturating_sub(e.rss_kib)) * 1024) / p.clients.max(1) as u64,
            )
            .set(
                "cpu_percent",
                round3(100.0 * (z.cpu - a.cpu).as_secs_f64() / wall.as_secs_f64()),
            );
    }
    let daemon_hb = match (d0, d1) {
        (Some(a), Some(b)) => b - a,
        _ => 0,
    };
    f.set(
        "heartbeats_per_s",
        round3((daemon_hb + s1 - s0) as f64 / wall.as_secs_f64()),
    )
    .set("empty_daemon_rss_kib", empty.map_or(0, |e| e.rss_kib))
    .set("downs", b.swarm.counters.downs)
    .set("reconnects", b.swarm.counters.reconnects)
    .set("seconds", round3(wall.as_secs_f64()));
    f.notes.push(
        "heartbeats_per_s counts HEARTBEATs sent both ways (daemon to clients and clients to daemon)".into(),
    );
    if p.liveness_only {
        f.notes.push(
            "--liveness-only: clients registered with NO_ROSTER (listed, but sent no roster)"
                .into(),
        );
    }
    Ok(f)
}
