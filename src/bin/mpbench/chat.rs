//! `chat`: message latency between two chat peers built the way `mpc` builds them (a [`Peer`] inside a
//! [`ChatIo`] on its own [`Reactor`]), on a reused connection and on a fresh one per message, and messages per
//! second; beside them a raw loopback TCP round trip measured in the same run.
//!
//! Each peer runs in its own thread with its own reactor, so every hop pays a cross-thread wake-up as it would
//! between two `mpc` processes (`benches/chat_latency.rs` runs both peers on one reactor and does not). The raw
//! baseline has the same shape and the same sending thread: an echo thread with blocking sockets answers it.
//! Threads talk over channels only to start and stop; everything measured goes through sockets.
//!
//! Where the threads run decides a loopback round trip more than anything else: with both ends on one CPU it
//! is two context switches; across two CPUs each hop also wakes the other CPU, which on a VM goes through the
//! hypervisor and costs several times more. Left to the scheduler, raw and chat pairs land differently from run
//! to run, and their ratio measured placement (0.46 to 6.4 on this 2-core VM under load). So the latencies are
//! measured twice with the threads pinned, on one CPU (the headline figures) and on two, and raw and reused
//! rounds alternate in short blocks so load from elsewhere hits both alike.
//!
//! Then the channel case ([`channel`], issue 15): one message to a channel of 100 members beside 100
//! one-to-one messages in sequence, with threads of its own, once the two-peer threads have ended.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant as StdInstant};

use mio::Token;
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::{Pid, gettid};
use serde_json::Value;

use multiproto::io::chat::ChatIo;
use multiproto::nick::Nick;
use multiproto::peer::{Config, Peer, PeerEvent, SendError, Stats, Target};
use multiproto::reactor::{Reactor, ReactorEvent};

use crate::report::{Figures, Progress, round3, summary};

mod channel;

/// Chat scenario settings.
pub struct Params {
    /// Seconds of the throughput run.
    pub duration: Duration,
}

/// How much one run measures; the unit test runs a small one.
struct Plan {
    /// Raw and reused-connection rounds (each, per placement).
    rounds: usize,
    /// Fresh-connection rounds.
    fresh_rounds: usize,
    /// Length of the throughput run.
    duration: Duration,
    /// The channel case: members, rounds, rounds on fresh connections.
    channel: channel::Plan,
}

/// Raw and reused rounds alternate in blocks of this many (a fraction of a millisecond): short enough that a
/// burst of load from elsewhere on the machine hits both alike, long enough that each side's caches stay warm.
const BLOCK: usize = 10;
/// Messages in flight during the throughput run (at most the peer's queue limits allow).
const PIPELINE: usize = 64;
/// One message must be acknowledged within this long, or the run fails.
const ROUND_LIMIT: Duration = Duration::from_secs(5);
/// A latency phase must finish within this long: a machine this slow gives no useful figure.
const PHASE_LIMIT: Duration = Duration::from_secs(120);
/// After the throughput run, the messages still in flight must be acknowledged within this long.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);
/// The receiver looks at its stop channel at least this often (it otherwise sleeps in `epoll_wait`).
const STOP_CHECK: Duration = Duration::from_millis(50);
/// Bytes each way in a raw round trip.
const RAW_LEN: usize = 64;
/// The message text: 41 bytes, which makes a 64-byte MSG frame, the size of the raw round trip's payload.
const TEXT: &str = "mpbench chat: a 64-byte MSG frame on TCP.";

/// The key of the benchmark's user `name` (fixed, so runs compare; the handshakes' ephemeral keys are fresh).
fn identity_of(name: &str) -> multiproto::identity::Identity {
    multiproto::identity::Identity::from_secret(multiproto::secure::derive_seed(
        &[0x6d; 32],
        &format!("mpbench chat {name}"),
    ))
}

/// One turn of a reactor that serves `io` alone: waits until `limit` at most (sooner for the peer's timers,
/// at once while `io` has work left), then hands `io` its readiness and its timers. `what` names the side in
/// an error. Returns how long the turn waited in the reactor.
pub(crate) fn chat_turn(
    reactor: &mut Reactor,
    io: &mut ChatIo,
    events: &mut Vec<ReactorEvent>,
    limit: multiproto::time::Instant,
    what: &'static str,
) -> Result<Duration, String> {
    let wake = io
        .poll_timeout(reactor.now())
        .map_or(limit, |t| t.min(limit));
    let waiting = StdInstant::now();
    reactor.turn(Some(wake), events).map_err(err(what))?;
    let waited = waiting.elapsed();
    let (now, wall) = (reactor.now(), reactor.wall_ms());
    for ev in events.iter() {
        if let ReactorEvent::Io(token, r) = *ev
            && io.owns(token)
        {
            io.handle_event(now, wall, token, r, reactor.registry());
        }
    }
    io.handle_timeout(now, reactor.registry());
    Ok(waited)
}

fn err(what: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// µs, rounded to ns.
fn us(d: Duration) -> f64 {
    round3(d.as_secs_f64() * 1e6)
}

fn check(ok: bool, what: String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what) }
}

/// Runs the chat scenario.
pub fn run(p: &Params, progress: &mut Progress) -> Result<Figures, String> {
    // The channel case's rounds follow --duration (300 and 10 at its default of 3 s): a short run (the smoke
    // test's 0.5 s, in a debug build) must not pay for 1 000 handshakes.
    let share = (p.duration.as_secs_f64() / 3.0).min(1.0);
    measure(
        &Plan {
            rounds: 2000,
            fresh_rounds: 300,
            duration: p.duration,
            channel: channel::Plan {
                members: 100,
                rounds: ((300.0 * share) as usize).max(20),
                fresh_rounds: ((10.0 * share) as usize).max(1),
            },
        },
        progress,
    )
}

/// Where the threads run during a phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placement {
    /// Sender and both responders on one CPU: a round trip is two context switches on that core, which is
    /// how the scheduler usually runs a ping-pong pair (it wakes the partner on the waker's CPU).
    OneCpu,
    /// Sender on one CPU, responders on another: every hop wakes the other CPU, as between two `mpc`
    /// processes the scheduler keeps apart.
    TwoCpus,
}

/// The threads to place and the CPUs to place them on.
struct Pins {
    /// CPUs this process may run on (its affinity mask when the run started).
    cpus: Vec<usize>,
    /// The threads that answer the sender: the chat receiver's and the raw echo's, or the channel members'.
    responders: Vec<Pid>,
}

impl Pins {
    /// Moves the calling thread (the sender) and the responders where `p` says; false if there are too few
    /// CPUs or the kernel refuses, and then the phase runs wherever the scheduler puts it.
    fn place(&self, p: Placement) -> bool {
        let (sender, responders) = match (p, self.cpus.as_slice()) {
            (Placement::OneCpu, [a, ..]) => (*a, *a),
            (Placement::TwoCpus, [a, b, ..]) => (*a, *b),
            _ => return false,
        };
        // `&` not `&&`: try every thread, so one refusal does not leave the others half-placed.
        pin(Pid::from_raw(0), sender)
            & self
                .responders
                .iter()
                .fold(true, |ok, &t| pin(t, responders) & ok)
    }
}

/// CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    sched_getaffinity(Pid::from_raw(0)).map_or_else(
        |_| Vec::new(),
        |set| {
            (0..CpuSet::count())
                .filter(|&c| set.is_set(c).unwrap_or(false))
                .collect()
        },
    )
}

/// Pins thread `tid` (0: the calling thread) to `cpu`.
fn pin(tid: Pid, cpu: usize) -> bool {
    let mut set = CpuSet::new();
    set.set(cpu).is_ok() && sched_setaffinity(tid, &set).is_ok()
}

/// Raw and reused-connection round trips measured side by side.
struct Latency {
    raw: Vec<Duration>,
    reused: Vec<Duration>,
}

/// What the sending side measured.
struct Measured {
    /// With every thread on one CPU; `pinned` says whether that worked.
    one_cpu: Latency,
    pinned: bool,
    fresh: Vec<Duration>,
    /// With the sender and the responders on two CPUs; `None` with fewer than two.
    two_cpus: Option<Latency>,
    /// Messages acknowledged within the throughput run on one CPU, and how long it took. On one CPU each
    /// side handles a whole window of messages per wake-up; across two, wake-ups are more frequent and, on a
    /// VM, dearer, and the rate is lower (a third to a half of it on this 2-core VM).
    counted: u64,
    elapsed: Duration,
    /// Messages per second with the peers on two CPUs.
    two_cpus_rate: Option<f64>,
    /// Messages acknowledged in all, warm-ups and the drain included.
    delivered: u64,
    /// Raw round trips in all, the warm-up included.
    raw_trips: u64,
}

fn measure(plan: &Plan, progress: &mut Progress) -> Result<Figures, String> {
    let chat_listener = TcpListener::bind("127.0.0.1:0").map_err(err("chat listener"))?;
    let to = chat_listener
        .local_addr()
        .map_err(err("chat listener address"))?;
    let cpus = allowed_cpus();
    let mut f = two_peers(plan, chat_listener, to, cpus.clone(), progress)?;
    // After the two-peer threads have ended, so the two cases never share the CPUs.
    let m = channel::measure(&plan.channel, cpus, progress)?;
    channel::figures(&plan.channel, m, &mut f);
    Ok(f)
}

/// The two-peer figures: raw, reused and fresh latency, throughput.
fn two_peers(
    plan: &Plan,
    chat_listener: TcpListener,
    to: SocketAddr,
    cpus: Vec<usize>,
    progress: &mut Progress,
) -> Result<Figures, String> {
    let (raw_client, raw_server) = raw_pair()?;
    let (ready_tx, ready_rx) = mpsc::channel();
    let (echo_tx, echo_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    // A cap for the receiver in case the sender's own deadlines fail to stop it: the sender is bounded by
    // its phase limits, the throughput run and the drain.
    let receiver_limit = 4 * PHASE_LIMIT + 2 * (plan.duration + DRAIN_LIMIT) + 2 * ROUND_LIMIT;
    thread::scope(move |s| {
        // Named for `top -H` and `perf`.
        let spawn = |name: &str| thread::Builder::new().name(name.into());
        let receiver_thread = spawn("chat-receiver")
            .spawn_scoped(s, move || {
                receiver(chat_listener, ready_tx, stop_rx, receiver_limit)
            })
            .map_err(err("chat receiver thread"))?;
        let echo_thread = spawn("raw-echo")
            .spawn_scoped(s, move || {
                let _ = echo_tx.send(gettid());
                echo(raw_server)
            })
            .map_err(err("raw echo thread"))?;
        // The sender owns the stop channel and the raw client, so both close when it ends, however it ends,
        // and the other two threads end with it. (Should its spawn fail, the closure is dropped unrun, which
        // closes them too.)
        let sender_thread = spawn("chat-sender")
            .spawn_scoped(s, move || {
                let m = responders(&ready_rx, &echo_rx).and_then(|responders| {
                    let pins = Pins { cpus, responders };
                    drive(plan, to, raw_client, &pins, progress)
                });
                drop(stop_tx);
                m
            })
            .map_err(err("chat sender thread"))?;
        let measured = sender_thread
            .join()
            .map_err(|_| "the chat sender thread panicked".to_string())?;
        let received = receiver_thread
            .join()
            .map_err(|_| "the chat receiver thread panicked".to_string())?;
        let echoed = echo_thread
            .join()
            .map_err(|_| "the raw echo thread panicked".to_string())?;
        // The receiver's or echo's own error explains a sender's error better than the sender can.
        let received = received?;
        let echoed = echoed?;
        let m = measured?;
        check(
            received.received == m.delivered,
            format!(
                "the receiver took {} messages, the sender saw {} acknowledged",
                received.received, m.delivered
            ),
        )?;
        check(
            received.duplicates == 0,
            format!("the receiver dropped {} duplicates", received.duplicates),
        )?;
        check(
            echoed == m.raw_trips,
            format!(
                "the echo thread answered {echoed} round trips, the sender made {}",
                m.raw_trips
            ),
        )?;
        Ok(figures(plan, m))
    })
}

/// Waits for the receiver to be ready and for both responders' thread ids.
fn responders(
    ready: &mpsc::Receiver<Result<Pid, String>>,
    echo: &mpsc::Receiver<Pid>,
) -> Result<Vec<Pid>, String> {
    let receiver = match ready.recv_timeout(ROUND_LIMIT) {
        Ok(r) => r?,
        Err(_) => {
            return Err(format!(
                "the chat receiver did not start within {ROUND_LIMIT:?}"
            ));
        }
    };
    let echo = echo
        .recv_timeout(ROUND_LIMIT)
        .map_err(|_| format!("the raw echo did not start within {ROUND_LIMIT:?}"))?;
    Ok(vec![receiver, echo])
}

/// p50 and p99 in µs of raw and reused round trips, and the reused maximum.
fn latency_figures(l: &mut Latency) -> ([(f64, f64); 2], f64) {
    let (raw50, raw99, _) = summary(&mut l.raw);
    let (re50, re99, remax) = summary(&mut l.reused);
    ([(us(raw50), us(raw99)), (us(re50), us(re99))], us(remax))
}

fn ratio(raw50_us: f64, reused50_us: f64) -> f64 {
    round3(reused50_us / raw50_us.max(1e-9))
}

fn figures(plan: &Plan, mut m: Measured) -> Figures {
    let ([(raw50, raw99), (re50, re99)], remax) = latency_figures(&mut m.one_cpu);
    let (fr50, fr99, _) = summary(&mut m.fresh);
    let rate = m.counted as f64 / m.elapsed.as_secs_f64().max(1e-9);
    let one_ratio = ratio(raw50, re50);
    // Without two CPUs the two-CPU keys are still there, as null, so every line has the same keys.
    let (two_re50, two_re99, two_raw50, two_raw99, two_ratio) = match m.two_cpus.as_mut() {
        Some(l) => {
            let ([(raw50, raw99), (re50, re99)], _) = latency_figures(l);
            let r = ratio(raw50, re50);
            (
                re50.into(),
                re99.into(),
                raw50.into(),
                raw99.into(),
                r.into(),
            )
        }
        None => (
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
        ),
    };
    let two_rate = m
        .two_cpus_rate
        .map_or(Value::Null, |r| (r.round() as u64).into());
    let mut f = Figures::new("chat");
    f.set("reused_p50_us", re50)
        .set("reused_p99_us", re99)
        .set("fresh_p50_us", us(fr50))
        .set("raw_tcp_rtt_p50_us", raw50)
        .set("msgs_per_s", rate.round() as u64)
        .set("fresh_p99_us", us(fr99))
        .set("raw_tcp_rtt_p99_us", raw99)
        .set("reused_max_us", remax)
        .set("ratio_reused_to_raw", one_ratio)
        .set("two_cpus_reused_p50_us", two_re50)
        .set("two_cpus_reused_p99_us", two_re99)
        .set("two_cpus_raw_tcp_rtt_p50_us", two_raw50)
        .set("two_cpus_raw_tcp_rtt_p99_us", two_raw99)
        .set("two_cpus_ratio_reused_to_raw", two_ratio)
        .set("two_cpus_msgs_per_s", two_rate)
        .set("rounds", plan.rounds)
        .set("fresh_rounds", plan.fresh_rounds)
        .set("throughput_msgs", m.counted)
        .set("throughput_s", round3(m.elapsed.as_secs_f64()))
        .set("pinned", m.pinned);
    f.notes.push(format!(
        "two peers as mpc runs them, each in its own thread with its own reactor: a {}-byte MSG and its ACK; \
         raw: {RAW_LEN} bytes there and back between two threads with blocking sockets, alternating with the \
         reused rounds in blocks of {BLOCK}",
        TEXT.len() + 23
    ));
    f.notes.push(
        if m.pinned {
            "sender and responders on one CPU; two_cpus_*: the sender on one, the responders on another"
        } else {
            "threads not pinned: the latencies and their ratio also depend on where the scheduler put them"
        }
        .into(),
    );
    f.notes.push(
        "fresh: connect, HELLO both ways, MSG, ACK and the close (the sender's idle timeout is zero)".into(),
    );
    f.notes.push(format!(
        "msgs_per_s: up to {PIPELINE} messages unacknowledged on one connection, counted for {:.1} s per \
         placement",
        m.elapsed.as_secs_f64(),
    ));
    f.notes.push(format!(
        "target reused p50 <= 1.5 x raw: {} ({one_ratio:.2} x)",
        if one_ratio <= 1.5 { "met" } else { "missed" },
    ));
    f
}

/// The raw client's side.
struct Raw {
    stream: TcpStream,
    buf: [u8; RAW_LEN],
    /// Round trips made, warm-up included.
    trips: u64,
}

impl Raw {
    /// One round trip: write the payload, read it back.
    fn round(&mut self) -> Result<Duration, String> {
        let t = StdInstant::now();
        self.stream
            .write_all(&self.buf)
            .and_then(|()| self.stream.read_exact(&mut self.buf))
            .map_err(err("raw round trip"))?;
        self.trips += 1;
        Ok(t.elapsed())
    }
}

/// `rounds` raw and reused round trips, alternating in blocks.
fn side_by_side(
    sender: &mut Sender,
    raw: &mut Raw,
    rounds: usize,
    progress: &mut Progress,
) -> Result<Latency, String> {
    let mut l = Latency {
        raw: Vec::with_capacity(rounds),
        reused: Vec::with_capacity(rounds),
    };
    let t0 = StdInstant::now();
    while l.reused.len() < rounds {
        if t0.elapsed() > PHASE_LIMIT {
            return Err(format!(
                "reused rounds: {} of {rounds} after {PHASE_LIMIT:?}",
                l.reused.len()
            ));
        }
        let n = BLOCK.min(rounds - l.reused.len());
        for _ in 0..n {
            l.raw.push(raw.round()?);
        }
        for _ in 0..n {
            l.reused.push(sender.round()?);
        }
        progress.update(format_args!("{}/{rounds} rounds", l.reused.len()));
    }
    Ok(l)
}

/// `rounds` messages from a sender whose idle timeout is zero, which closes the connection as soon as its
/// message is acknowledged, so each message connects anew. Returns the latencies and the messages delivered.
fn fresh_rounds(
    to: SocketAddr,
    rounds: usize,
    progress: &mut Progress,
) -> Result<(Vec<Duration>, u64), String> {
    let mut cfg = Config::new(nick("carol")?, 3, identity_of("carol"));
    cfg.idle_timeout = Duration::ZERO;
    let mut sender = Sender::new(to, cfg)?;
    let mut fresh = Vec::with_capacity(rounds);
    let t0 = StdInstant::now();
    while fresh.len() < rounds {
        if t0.elapsed() > PHASE_LIMIT {
            return Err(format!(
                "fresh rounds: {} of {rounds} after {PHASE_LIMIT:?}",
                fresh.len()
            ));
        }
        sender.until_closed()?;
        fresh.push(sender.round()?);
        progress.update(format_args!("{}/{rounds} rounds", fresh.len()));
    }
    Ok((fresh, sender.delivered))
}

/// The sending side, in its own thread: on one CPU, raw and reused rounds side by side, then fresh rounds; on
/// two CPUs, raw and reused again and a throughput run on the reused connection; then one on one CPU.
fn drive(
    plan: &Plan,
    to: SocketAddr,
    raw_client: TcpStream,
    pins: &Pins,
    progress: &mut Progress,
) -> Result<Measured, String> {
    let pinned = pins.place(Placement::OneCpu);
    progress.phase("chat: reused connection and raw TCP, one CPU");
    let mut sender = Sender::new(to, Config::new(nick("alice")?, 1, identity_of("alice")))?;
    let mut raw = Raw {
        stream: raw_client,
        buf: [0x5a; RAW_LEN],
        trips: 0,
    };
    // Warm-ups, not counted: the first message opens the connection, the first round trip faults in pages.
    sender.round()?;
    raw.round()?;
    let one_cpu = side_by_side(&mut sender, &mut raw, plan.rounds, progress)?;

    progress.phase("chat: fresh connection per message, one CPU");
    let (fresh, fresh_delivered) = fresh_rounds(to, plan.fresh_rounds, progress)?;

    let two_cpus = if pins.place(Placement::TwoCpus) {
        progress.phase("chat: reused connection and raw TCP, two CPUs");
        Some(side_by_side(&mut sender, &mut raw, plan.rounds, progress)?)
    } else {
        None
    };
    let raw_trips = raw.trips;
    // Closing it ends the echo thread (it reads end of stream) before the throughput runs, which may be long.
    drop(raw);
    check(
        sender.io.peer.connections() == 1 && sender.io.peer.stats().retransmitted == 0,
        format!(
            "reused rounds: {} connections and {} retransmissions, expected one connection and none",
            sender.io.peer.connections(),
            sender.io.peer.stats().retransmitted
        ),
    )?;

    let two_cpus_rate = match two_cpus {
        Some(_) => {
            progress.phase("chat: messages per second, two CPUs");
            let (n, t) = sender.throughput(plan.duration, progress)?;
            Some(n as f64 / t.as_secs_f64().max(1e-9))
        }
        None => None,
    };
    // Back on one CPU (the throughput there differs a lot: see `Measured::counted`); without two CPUs the
    // threads are still there.
    if two_cpus.is_some() {
        pins.place(Placement::OneCpu);
    }
    progress.phase("chat: messages per second, one CPU");
    let (counted, elapsed) = sender.throughput(plan.duration, progress)?;
    check(
        sender.io.peer.stats().retransmitted == 0,
        format!(
            "throughput runs: {} retransmissions on loopback",
            sender.io.peer.stats().retransmitted
        ),
    )?;
    Ok(Measured {
        one_cpu,
        pinned,
        fresh,
        two_cpus,
        counted,
        elapsed,
        two_cpus_rate,
        delivered: sender.delivered + fresh_delivered,
        raw_trips,
    })
}

fn nick(n: &str) -> Result<Nick, String> {
    Nick::new(n).map_err(|e| format!("nickname {n}: {e}"))
}

/// Two connected loopback sockets with Nagle off (a round trip must not wait for a delayed ACK).
fn raw_pair() -> Result<(TcpStream, TcpStream), String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(err("raw listener"))?;
    let addr = l.local_addr().map_err(err("raw listener address"))?;
    let a = TcpStream::connect_timeout(&addr, ROUND_LIMIT).map_err(err("raw connect"))?;
    // The connect completed, so the connection is already in the accept queue: this does not block.
    let (b, _) = l.accept().map_err(err("raw accept"))?;
    for s in [&a, &b] {
        s.set_nodelay(true).map_err(err("raw TCP_NODELAY"))?;
        s.set_read_timeout(Some(ROUND_LIMIT))
            .map_err(err("raw read timeout"))?;
    }
    Ok((a, b))
}

/// The raw echo thread: sends back each payload until the sender closes; returns how many it echoed.
fn echo(mut s: TcpStream) -> Result<u64, String> {
    // Between raw blocks the sender runs chat rounds (milliseconds) or, once, the fresh rounds (a phase, at
    // most PHASE_LIMIT and a round); a longer silence means it is gone without closing.
    s.set_read_timeout(Some(2 * PHASE_LIMIT))
        .map_err(err("raw echo read timeout"))?;
    let mut buf = [0u8; RAW_LEN];
    let mut n = 0;
    loop {
        match s.read_exact(&mut buf) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(n),
            Err(e) => return Err(format!("raw echo: {e}")),
        }
        s.write_all(&buf).map_err(err("raw echo"))?;
        n += 1;
    }
}

/// The receiving peer's thread: `mpc`'s loop around a [`ChatIo`] (turn, readiness, timers, events), which
/// acknowledges every message by itself. Sends its thread id once it is listening (so the sender can place
/// it), then runs until the stop channel says so or closes; returns the peer's counters.
fn receiver(
    listener: TcpListener,
    ready: mpsc::Sender<Result<Pid, String>>,
    stop: mpsc::Receiver<()>,
    limit: Duration,
) -> Result<Stats, String> {
    let setup = || -> std::io::Result<(Reactor, ChatIo)> {
        let reactor = Reactor::new()?;
        let mut peer = Peer::new(Config::new(
            Nick::new("bob").map_err(std::io::Error::other)?,
            2,
            identity_of("bob"),
        ));
        // The senders' keys, as a daemon would give them: their messages are shown at once, as theirs.
        let now = reactor.now();
        for who in ["alice", "carol"] {
            let n = Nick::new(who).map_err(std::io::Error::other)?;
            peer.set_key(now, n, Some(identity_of(who).public()));
        }
        let io = ChatIo::new(listener, peer, reactor.registry(), Token(1), Token(16))?;
        Ok((reactor, io))
    };
    let (mut reactor, mut io) = match setup() {
        Ok(x) => {
            let _ = ready.send(Ok(gettid()));
            x
        }
        Err(e) => {
            let e = format!("chat receiver: {e}");
            let _ = ready.send(Err(e.clone()));
            return Err(e);
        }
    };
    let t0 = StdInstant::now();
    let mut events = Vec::new();
    loop {
        match stop.try_recv() {
            Err(mpsc::TryRecvError::Empty) => {}
            Ok(()) | Err(mpsc::TryRecvError::Disconnected) => return Ok(*io.peer.stats()),
        }
        if t0.elapsed() > limit {
            return Err(format!("chat receiver: still running after {limit:?}"));
        }
        let check_stop = reactor.now() + STOP_CHECK;
        chat_turn(
            &mut reactor,
            &mut io,
            &mut events,
            check_stop,
            "chat receiver reactor",
        )?;
        // Messages are counted by the peer's stats; the events themselves are not needed.
        while io.peer.poll_event().is_some() {}
    }
}

/// The sending peer: its own reactor and `ChatIo`, and `bob` (the receiver) as an online contact, as the
/// roster would make him.
struct Sender {
    reactor: Reactor,
    io: ChatIo,
    to: Target,
    events: Vec<ReactorEvent>,
    /// Messages acknowledged so far.
    delivered: u64,
    /// The most messages waiting at once that the peer's queue limits allow, up to [`PIPELINE`].
    window: usize,
}

impl Sender {
    fn new(to: SocketAddr, cfg: Config) -> Result<Sender, String> {
        Sender::with_contacts(cfg, &[(nick("bob")?, to)])
    }

    /// A sender with each of `contacts` online at its address and with its key known; messages go to the
    /// first unless `to` is changed.
    fn with_contacts(cfg: Config, contacts: &[(Nick, SocketAddr)]) -> Result<Sender, String> {
        let reactor = Reactor::new().map_err(err("chat sender reactor"))?;
        let window = PIPELINE
            .min(cfg.max_queue_per_peer)
            .min(cfg.max_queue_total)
            .max(1);
        // Its listener is never connected to; ChatIo needs one, as mpc has one.
        let l = TcpListener::bind("127.0.0.1:0").map_err(err("chat sender listener"))?;
        let mut io = ChatIo::new(l, Peer::new(cfg), reactor.registry(), Token(1), Token(16))
            .map_err(err("chat sender"))?;
        for &(who, at) in contacts {
            io.peer.set_contact(reactor.now(), who, at, true);
            // The key, as the daemon would give it: every connection is an IK handshake to it.
            io.peer
                .set_key(reactor.now(), who, Some(identity_of(who.as_str()).public()));
        }
        let first = contacts.first().ok_or("a sender needs a contact")?.0;
        Ok(Sender {
            reactor,
            io,
            to: Target::Nick(first),
            events: Vec::new(),
            delivered: 0,
            window,
        })
    }

    /// One reactor turn, waiting at most `wait`: readiness, timers, and the peer's events (a message that
    /// failed or was queued is an error: the receiver is online on loopback).
    fn turn(&mut self, wait: Duration) -> Result<(), String> {
        // The receiver and the echo thread end with the sender.
        crate::signals::check().map_err(|e| e.to_string())?;
        let limit = self.reactor.now() + wait;
        chat_turn(
            &mut self.reactor,
            &mut self.io,
            &mut self.events,
            limit,
            "chat sender reactor",
        )?;
        while let Some(ev) = self.io.peer.poll_event() {
            match ev {
                PeerEvent::Delivered { .. } => self.delivered += 1,
                PeerEvent::Failed { reason, .. } => {
                    return Err(format!("a message failed: {reason}"));
                }
                PeerEvent::Queued { .. } => {
                    return Err("a message was queued: the receiver looked offline".into());
                }
                PeerEvent::Unanswered { attempts, .. } => {
                    return Err(format!(
                        "a message was not acknowledged after {attempts} attempts"
                    ));
                }
                PeerEvent::Message { .. } | PeerEvent::File { .. } => {}
            }
        }
        Ok(())
    }

    /// Queues one message; false if the peer's queue is full.
    fn send(&mut self) -> Result<bool, String> {
        let (now, wall) = (self.reactor.now(), self.reactor.wall_ms());
        match self.io.peer.send(now, wall, self.to, TEXT) {
            Ok(_) => Ok(true),
            Err(SendError::QueueFull) => Ok(false),
            Err(e) => Err(format!("send: {e}")),
        }
    }

    /// Writes what the peer queued (connects first if it asks to).
    fn flush(&mut self) {
        let now = self.reactor.now();
        self.io.process(now, self.reactor.registry());
    }

    /// One message, from `send` until the peer reports it delivered.
    fn round(&mut self) -> Result<Duration, String> {
        let before = self.delivered;
        let t = StdInstant::now();
        if !self.send()? {
            return Err("send: the queue is full with nothing in flight".into());
        }
        self.flush();
        while self.delivered == before {
            let left = ROUND_LIMIT.saturating_sub(t.elapsed());
            if left.is_zero() {
                return Err(format!(
                    "a message was not acknowledged within {ROUND_LIMIT:?}"
                ));
            }
            self.turn(left)?;
        }
        Ok(t.elapsed())
    }

    /// Waits until the peer has no connection (the previous fresh round's is closed), so the next message
    /// connects anew.
    fn until_closed(&mut self) -> Result<(), String> {
        let t = StdInstant::now();
        while self.io.peer.connections() > 0 {
            let left = ROUND_LIMIT.saturating_sub(t.elapsed());
            if left.is_zero() {
                return Err(format!(
                    "fresh rounds: the connection was still open {ROUND_LIMIT:?} after its message"
                ));
            }
            self.turn(left)?;
        }
        Ok(())
    }

    /// Sends for `duration` keeping up to `window` messages unacknowledged; returns the messages
    /// acknowledged in that time and the time taken. Then waits (bounded) for the rest to be acknowledged.
    fn throughput(
        &mut self,
        duration: Duration,
        progress: &mut Progress,
    ) -> Result<(u64, Duration), String> {
        let start = self.delivered;
        let t0 = StdInstant::now();
        loop {
            let left = duration.saturating_sub(t0.elapsed());
            if left.is_zero() {
                break;
            }
            while self.io.peer.waiting() < self.window {
                if !self.send()? {
                    break;
                }
            }
            self.flush();
            self.turn(left)?;
            progress.update(format_args!("{} delivered", self.delivered - start));
        }
        let (counted, elapsed) = (self.delivered - start, t0.elapsed());
        let t1 = StdInstant::now();
        while self.io.peer.waiting() > 0 {
            let left = DRAIN_LIMIT.saturating_sub(t1.elapsed());
            if left.is_zero() {
                return Err(format!(
                    "throughput run: {} messages not acknowledged {DRAIN_LIMIT:?} after it",
                    self.io.peer.waiting()
                ));
            }
            self.turn(left)?;
        }
        Ok((counted, elapsed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use multiproto::peer::frame::Frame;

    #[test]
    fn the_message_frame_is_as_long_as_the_raw_payload() {
        let mut b = Vec::new();
        Frame::Msg {
            id: 1,
            sent_ms: 2,
            scope: multiproto::group::Scope::Direct,
            text: TEXT.into(),
        }
        .encode(&mut b);
        assert_eq!(b.len(), RAW_LEN);
    }

    #[test]
    fn a_short_run_reports_every_figure() {
        let plan = Plan {
            rounds: 20,
            fresh_rounds: 5,
            duration: Duration::from_millis(200),
            channel: channel::Plan {
                members: 5,
                rounds: 2,
                fresh_rounds: 1,
            },
        };
        let f = measure(&plan, &mut Progress::new(true)).unwrap();
        assert_eq!(f.scenario, "chat");
        let keys: Vec<&str> = f.values.iter().map(|(k, _)| *k).collect();
        // DESIGN.md's keys, first and in its order.
        assert_eq!(
            keys[..5],
            [
                "reused_p50_us",
                "reused_p99_us",
                "fresh_p50_us",
                "raw_tcp_rtt_p50_us",
                "msgs_per_s"
            ]
        );
        let num = |k: &str| {
            f.get(k)
                .and_then(|v| v.as_f64())
                .unwrap_or_else(|| panic!("{k} missing or not a number"))
        };
        for k in [
            "reused_p50_us",
            "reused_p99_us",
            "fresh_p50_us",
            "fresh_p99_us",
            "raw_tcp_rtt_p50_us",
            "raw_tcp_rtt_p99_us",
            "msgs_per_s",
            "ratio_reused_to_raw",
        ] {
            assert!(num(k) > 0.0, "{k} = {}", num(k));
        }
        assert!(num("reused_p99_us") >= num("reused_p50_us"));
        assert!(num("reused_max_us") >= num("reused_p99_us"));
        assert_eq!(num("rounds"), 20.0);
        assert_eq!(num("fresh_rounds"), 5.0);
        assert!(num("throughput_msgs") >= 1.0);
        // The two-CPU figures are numbers with two CPUs (and the threads pinned, as `pinned` says), null with
        // one; never missing.
        let two_cpu_figures = |pinned: &str, keys: &[&str]| {
            let two_cpus = allowed_cpus().len() >= 2 && f.get(pinned) == Some(&Value::Bool(true));
            for k in keys {
                let v = f.get(k).unwrap_or_else(|| panic!("{k} missing"));
                if two_cpus {
                    assert!(v.as_f64().is_some_and(|x| x > 0.0), "{k} = {v}");
                } else {
                    assert!(
                        v.is_null() || v.as_f64().is_some_and(|x| x > 0.0),
                        "{k} = {v}"
                    );
                }
            }
        };
        two_cpu_figures(
            "pinned",
            &[
                "two_cpus_reused_p50_us",
                "two_cpus_reused_p99_us",
                "two_cpus_raw_tcp_rtt_p50_us",
                "two_cpus_raw_tcp_rtt_p99_us",
                "two_cpus_ratio_reused_to_raw",
                "two_cpus_msgs_per_s",
            ],
        );
        // The channel case: every figure a positive number, percentiles in order.
        for k in [
            "channel_last_p50_us",
            "channel_last_p99_us",
            "channel_acked_p50_us",
            "channel_acked_p99_us",
            "channel_copy_p50_us",
            "channel_copy_p99_us",
            "direct_seq_last_p50_us",
            "direct_seq_last_p99_us",
            "direct_seq_acked_p50_us",
            "direct_msg_p50_us",
            "direct_msg_p99_us",
            "ratio_channel_to_direct_seq",
            "channel_fresh_last_p50_us",
            "channel_fresh_last_p99_us",
            "channel_fresh_acked_p50_us",
        ] {
            assert!(num(k) > 0.0, "{k} = {}", num(k));
        }
        for (p50, p99) in [
            ("channel_last_p50_us", "channel_last_p99_us"),
            ("channel_copy_p50_us", "channel_copy_p99_us"),
            ("direct_seq_last_p50_us", "direct_seq_last_p99_us"),
            ("direct_msg_p50_us", "direct_msg_p99_us"),
        ] {
            assert!(num(p99) >= num(p50), "{p99} < {p50}");
        }
        // The last member cannot have it before any member does, nor 5 messages in a row be faster than one.
        assert!(num("channel_last_p99_us") >= num("channel_copy_p50_us"));
        assert!(num("direct_seq_acked_p50_us") >= num("direct_msg_p50_us"));
        assert_eq!(num("channel_members"), 5.0);
        assert_eq!(num("channel_rounds"), 2.0);
        assert_eq!(num("channel_fresh_rounds"), 1.0);
        two_cpu_figures(
            "channel_pinned",
            &[
                "two_cpus_channel_last_p50_us",
                "two_cpus_channel_last_p99_us",
                "two_cpus_direct_seq_last_p50_us",
                "two_cpus_direct_msg_p50_us",
                "two_cpus_ratio_channel_to_direct_seq",
            ],
        );
        assert!(
            f.json()
                .starts_with(r#"{"scenario":"chat","reused_p50_us":"#)
        );
        assert!(f.table().contains("channel_last_p50_us"));
    }
}
