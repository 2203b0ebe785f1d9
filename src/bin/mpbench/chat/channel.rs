//! `chat`'s channel case (issue 15): one message to a channel of N members, timed until every member has it,
//! beside N one-to-one messages sent one after the other (send, wait for its receipt, send the next, each to
//! another member) in the same run, rounds of the two alternating so load from elsewhere hits both alike.
//!
//! The sender is a [`Sender`] as in the two-peer case, with the N members as online contacts whose keys it
//! knows, and it sends with [`multiproto::peer::Peer::send_to_many`], as `mpc` does for `msg #channel`: one
//! message id, one sealed copy per member, each acknowledged. The members are N [`Peer`]s, each with its own
//! listener on 127.0.0.1 and its own [`ChatIo`], all in **one** thread around **one** reactor: on this 2-core
//! machine N processes would measure the scheduler, and one thread keeps the two sides to one core each when
//! they are placed on two. A member "has" a message when its loop takes the `Message` event from its peer
//! (what `mpc` would print); the member thread stamps that moment and sends it over a channel to the sender,
//! which reads the stamps only after the round, so that reading costs the round nothing.
//!
//! The rounds measured run on connections already open (the first round, not counted, opens them): 100
//! handshakes are not in those figures. A separate sender with an idle timeout of zero, whose connections close
//! once their copy is acknowledged, measures a few rounds on fresh connections (N IK handshakes each).

use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant as StdInstant};

use mio::Token;
use nix::unistd::{Pid, gettid};

use multiproto::group::{ChannelName, Scope};
use multiproto::io::chat::ChatIo;
use multiproto::nick::Nick;
use multiproto::peer::{Config, Peer, PeerEvent, Target};
use multiproto::reactor::{Reactor, ReactorEvent};
use multiproto::time::Instant;

use super::{
    PHASE_LIMIT, Pins, Placement, ROUND_LIMIT, STOP_CHECK, Sender, TEXT, check, err, identity_of,
    nick, ratio, us,
};
use crate::report::{Figures, Progress, summary};

/// How much the channel case measures.
pub(super) struct Plan {
    /// Members of the channel (and receivers of the one-to-one messages).
    pub members: usize,
    /// Channel rounds, and as many rounds of one-to-one messages, per placement.
    pub rounds: usize,
    /// Channel rounds on fresh connections (one CPU only: each is N handshakes, tens of milliseconds).
    pub fresh_rounds: usize,
}

/// The channel the messages are said in.
const CHANNEL: &str = "#bench";
/// The senders the members know the keys of: the reused-connection sender and the fresh one.
const SENDERS: [&str; 2] = ["alice", "carol"];
/// Member `i`'s listener token is `1 + i`; its connections' tokens start at `CONN_BASE + i * STRIDE`.
const CONN_BASE: usize = 1 << 16;
/// Tokens per member: far more than a peer's connection cap (`Config::max_conns`, 256).
const STRIDE: usize = 1 << 16;
/// Most members: tokens stay inside the 32 bits `Sources` leaves them.
const MAX_MEMBERS: usize = 1000;
const _: () = assert!(MAX_MEMBERS < CONN_BASE && CONN_BASE + MAX_MEMBERS * STRIDE < 0xFFFF_FFFF);

/// The member a token belongs to (its listener or one of its connections); past the members for none.
fn owner(token: Token) -> usize {
    let low = token.0 & 0xFFFF_FFFF;
    if low >= CONN_BASE {
        (low - CONN_BASE) / STRIDE
    } else {
        low.wrapping_sub(1)
    }
}

/// One message taken by a member's loop.
struct Arrival {
    /// Which member.
    member: usize,
    /// Said in the channel (otherwise one-to-one).
    channel: bool,
    /// When the member's loop took it.
    at: StdInstant,
}

/// What rounds of one placement measured.
#[derive(Default)]
pub(super) struct Rounds {
    /// Per channel round: from `send_to_many` until the last member has it.
    last: Vec<Duration>,
    /// Per channel round: from `send_to_many` until the sender holds every member's receipt.
    acked: Vec<Duration>,
    /// Per copy: from `send_to_many` until that member has it.
    copies: Vec<Duration>,
    /// Per round of one-to-one messages: from the first send until the last member has its message.
    direct: Vec<Duration>,
    /// Per round of one-to-one messages: from the first send until the last receipt.
    direct_acked: Vec<Duration>,
    /// Per one-to-one message: from its send until its receipt.
    direct_msgs: Vec<Duration>,
}

/// What the channel case measured.
pub(super) struct Measured {
    one_cpu: Rounds,
    /// Whether the threads could be placed.
    pinned: bool,
    /// Channel rounds on fresh connections, one CPU (`direct*` empty).
    fresh: Rounds,
    /// With the sender on one CPU and the members on another; `None` with fewer than two.
    two_cpus: Option<Rounds>,
}

/// The member's nickname.
fn member_nick(i: usize) -> Result<Nick, String> {
    nick(&format!("m{i:03}"))
}

/// Runs the channel case: the members' thread and the sender's, placed as the two-peer case places its own.
pub(super) fn measure(
    plan: &Plan,
    cpus: Vec<usize>,
    progress: &mut Progress,
) -> Result<Measured, String> {
    check(
        (1..=MAX_MEMBERS).contains(&plan.members) && plan.rounds > 0,
        format!(
            "channel case: 1 to {MAX_MEMBERS} members and at least one round, not {} and {}",
            plan.members, plan.rounds
        ),
    )?;
    let mut listeners = Vec::with_capacity(plan.members);
    let mut contacts = Vec::with_capacity(plan.members);
    for i in 0..plan.members {
        let l = TcpListener::bind("127.0.0.1:0").map_err(err("member listener"))?;
        contacts.push((
            member_nick(i)?,
            l.local_addr().map_err(err("member listener address"))?,
        ));
        listeners.push(l);
    }
    let (ready_tx, ready_rx) = mpsc::channel();
    let (arrival_tx, arrival_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    // A cap for the members in case the sender's own deadlines fail to stop it: three phases, each of which
    // may overrun its limit by the round under way (a warm-up pair too, at most four round limits).
    let limit = 3 * (PHASE_LIMIT + 4 * ROUND_LIMIT);
    thread::scope(move |s| {
        let spawn = |name: &str| thread::Builder::new().name(name.into());
        let members_thread = spawn("chat-members")
            .spawn_scoped(s, move || {
                members(listeners, ready_tx, arrival_tx, stop_rx, limit)
            })
            .map_err(err("channel members thread"))?;
        // The sender owns the stop channel: the members end with it, however it ends.
        let sender_thread = spawn("chat-channel-sender")
            .spawn_scoped(s, move || {
                let m = match ready_rx.recv_timeout(ROUND_LIMIT) {
                    Ok(Ok(tid)) => {
                        let pins = Pins {
                            cpus,
                            responders: vec![tid],
                        };
                        drive(plan, &contacts, &arrival_rx, &pins, progress)
                    }
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(format!(
                        "the channel members did not start within {ROUND_LIMIT:?}"
                    )),
                };
                drop(stop_tx);
                m
            })
            .map_err(err("channel sender thread"))?;
        let measured = sender_thread
            .join()
            .map_err(|_| "the channel sender thread panicked".to_string())?;
        let taken = members_thread
            .join()
            .map_err(|_| "the channel members thread panicked".to_string())?;
        // The members' own error explains a sender's error better than the sender can.
        let (received, duplicates) = taken?;
        let (m, delivered) = measured?;
        check(
            received == delivered,
            format!(
                "the members took {received} messages, the senders saw {delivered} acknowledged"
            ),
        )?;
        check(
            duplicates == 0,
            format!("the members dropped {duplicates} duplicates"),
        )?;
        Ok(m)
    })
}

/// The sending side: fresh rounds on one CPU, then reused rounds on one CPU and on two. Returns the figures
/// and the messages acknowledged in all (warm-ups included), for the members' count to be checked against.
fn drive(
    plan: &Plan,
    contacts: &[(Nick, SocketAddr)],
    arrivals: &mpsc::Receiver<Arrival>,
    pins: &Pins,
    progress: &mut Progress,
) -> Result<(Measured, u64), String> {
    let n = plan.members;
    let nicks: Vec<Nick> = contacts.iter().map(|c| c.0).collect();
    let scope = Scope::Channel(ChannelName::new(CHANNEL).map_err(|e| e.to_string())?);
    let pinned = pins.place(Placement::OneCpu);

    progress.phase(format!("chat: channel of {n}, fresh connections, one CPU"));
    let mut cfg = Config::new(nick(SENDERS[1])?, 5, identity_of(SENDERS[1]));
    cfg.idle_timeout = Duration::ZERO;
    let mut fresh_sender = Sender::with_contacts(cfg, contacts)?;
    let mut fresh = Rounds::default();
    let t0 = StdInstant::now();
    for r in 0..plan.fresh_rounds {
        phase_limit(t0, "fresh channel rounds", r, plan.fresh_rounds)?;
        fresh_sender.until_closed()?;
        fresh_sender.channel_round(scope, &nicks, arrivals, &mut fresh)?;
        progress.update(format_args!("{}/{} rounds", r + 1, plan.fresh_rounds));
    }
    let fresh_delivered = fresh_sender.delivered;
    // Its last connections close as it goes; the members see them end.
    drop(fresh_sender);

    progress.phase(format!(
        "chat: channel of {n} and {n} one-to-one, reused connections, one CPU"
    ));
    let mut cfg = Config::new(nick(SENDERS[0])?, 4, identity_of(SENDERS[0]));
    // Room for every member's connection however the defaults change.
    cfg.max_conns = cfg.max_conns.max(n + 1);
    let mut sender = Sender::with_contacts(cfg, contacts)?;
    // Warm-up, not counted: opens a connection to every member, and a first one-to-one round.
    sender.channel_round(scope, &nicks, arrivals, &mut Rounds::default())?;
    sender.direct_round(&nicks, arrivals, &mut Rounds::default())?;
    let one_cpu = alternate(&mut sender, plan, scope, &nicks, arrivals, progress)?;
    let two_cpus = if pins.place(Placement::TwoCpus) {
        progress.phase(format!(
            "chat: channel of {n} and {n} one-to-one, reused connections, two CPUs"
        ));
        Some(alternate(
            &mut sender,
            plan,
            scope,
            &nicks,
            arrivals,
            progress,
        )?)
    } else {
        None
    };
    check(
        sender.io.peer.connections() == n && sender.io.peer.stats().retransmitted == 0,
        format!(
            "reused channel rounds: {} connections and {} retransmissions, expected {n} and none",
            sender.io.peer.connections(),
            sender.io.peer.stats().retransmitted
        ),
    )?;
    Ok((
        Measured {
            one_cpu,
            pinned,
            fresh,
            two_cpus,
        },
        sender.delivered + fresh_delivered,
    ))
}

/// An error once a phase has run longer than [`PHASE_LIMIT`].
fn phase_limit(t0: StdInstant, what: &str, done: usize, of: usize) -> Result<(), String> {
    check(
        t0.elapsed() <= PHASE_LIMIT,
        format!("{what}: {done} of {of} after {PHASE_LIMIT:?}"),
    )
}

/// `plan.rounds` channel rounds and as many rounds of one-to-one messages, alternating, and alternating which
/// goes first, so neither always follows the other.
fn alternate(
    sender: &mut Sender,
    plan: &Plan,
    scope: Scope,
    nicks: &[Nick],
    arrivals: &mpsc::Receiver<Arrival>,
    progress: &mut Progress,
) -> Result<Rounds, String> {
    let mut r = Rounds::default();
    let t0 = StdInstant::now();
    for i in 0..plan.rounds {
        phase_limit(t0, "channel and one-to-one rounds", i, plan.rounds)?;
        if i % 2 == 0 {
            sender.channel_round(scope, nicks, arrivals, &mut r)?;
            sender.direct_round(nicks, arrivals, &mut r)?;
        } else {
            sender.direct_round(nicks, arrivals, &mut r)?;
            sender.channel_round(scope, nicks, arrivals, &mut r)?;
        }
        progress.update(format_args!("{}/{} rounds", i + 1, plan.rounds));
    }
    Ok(r)
}

/// Takes the `n` arrivals of one round (bounded wait): every member exactly once, all of the expected kind.
/// Returns the latest.
fn take_arrivals(
    arrivals: &mpsc::Receiver<Arrival>,
    n: usize,
    channel: bool,
    start: StdInstant,
    copies: Option<&mut Vec<Duration>>,
) -> Result<Duration, String> {
    let t = StdInstant::now();
    let mut seen = vec![false; n];
    let mut last = Duration::ZERO;
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        let left = ROUND_LIMIT.saturating_sub(t.elapsed());
        let a = arrivals.recv_timeout(left).map_err(|_| {
            format!("a member's message was acknowledged but not taken within {ROUND_LIMIT:?}")
        })?;
        check(
            a.member < n && !std::mem::replace(&mut seen[a.member], true) && a.channel == channel,
            format!(
                "member {} took a {} message it should not have",
                a.member,
                if a.channel { "channel" } else { "one-to-one" }
            ),
        )?;
        let d = a.at.saturating_duration_since(start);
        last = last.max(d);
        got.push(d);
    }
    if let Some(c) = copies {
        c.extend(got);
    }
    Ok(last)
}

impl Sender {
    /// One message to every member in `scope`, from `send_to_many` until every receipt is back; then the
    /// members' arrival times.
    fn channel_round(
        &mut self,
        scope: Scope,
        members: &[Nick],
        arrivals: &mpsc::Receiver<Arrival>,
        r: &mut Rounds,
    ) -> Result<(), String> {
        let want = self.delivered + members.len() as u64;
        let t = StdInstant::now();
        let (now, wall) = (self.reactor.now(), self.reactor.wall_ms());
        self.io
            .peer
            .send_to_many(now, wall, scope, members, TEXT)
            .map_err(|e| format!("send to {CHANNEL}: {e}"))?;
        self.flush();
        while self.delivered < want {
            let left = ROUND_LIMIT.saturating_sub(t.elapsed());
            if left.is_zero() {
                return Err(format!(
                    "a channel message: {} of {} receipts within {ROUND_LIMIT:?}",
                    members.len() as u64 - (want - self.delivered),
                    members.len()
                ));
            }
            self.turn(left)?;
        }
        r.acked.push(t.elapsed());
        let last = take_arrivals(arrivals, members.len(), true, t, Some(&mut r.copies))?;
        r.last.push(last);
        Ok(())
    }

    /// One message to each member in turn, each sent once the one before is acknowledged.
    fn direct_round(
        &mut self,
        members: &[Nick],
        arrivals: &mpsc::Receiver<Arrival>,
        r: &mut Rounds,
    ) -> Result<(), String> {
        let t = StdInstant::now();
        for &m in members {
            // Each message has its own limit; the round as a whole has one too, or 100 slow ones add up.
            check(
                t.elapsed() <= ROUND_LIMIT,
                format!(
                    "{} one-to-one messages took over {ROUND_LIMIT:?}",
                    members.len()
                ),
            )?;
            self.to = Target::Nick(m);
            r.direct_msgs.push(self.round()?);
        }
        r.direct_acked.push(t.elapsed());
        r.direct
            .push(take_arrivals(arrivals, members.len(), false, t, None)?);
        Ok(())
    }
}

/// The members' thread: N peers as `mpc` runs one (turn, readiness, timers, events), on one reactor. Each
/// acknowledges what it receives by itself; each message taken is stamped and sent to the sender. Sends the
/// thread id once every member listens, then runs until the stop channel says so or closes; returns the
/// messages taken and the duplicates dropped, over all members.
fn members(
    listeners: Vec<TcpListener>,
    ready: mpsc::Sender<Result<Pid, String>>,
    arrivals: mpsc::Sender<Arrival>,
    stop: mpsc::Receiver<()>,
    limit: Duration,
) -> Result<(u64, u64), String> {
    let setup = || -> std::io::Result<(Reactor, Vec<ChatIo>)> {
        let reactor = Reactor::new()?;
        let now = reactor.now();
        let mut ios = Vec::with_capacity(listeners.len());
        for (i, l) in listeners.into_iter().enumerate() {
            let me = member_nick(i).map_err(std::io::Error::other)?;
            let mut peer = Peer::new(Config::new(me, 100 + i as u64, identity_of(me.as_str())));
            // The senders' keys, as a daemon would give them: their messages are shown at once, as theirs.
            for who in SENDERS {
                let n = Nick::new(who).map_err(std::io::Error::other)?;
                peer.set_key(now, n, Some(identity_of(who).public()));
            }
            ios.push(ChatIo::new(
                l,
                peer,
                reactor.registry(),
                Token(1 + i),
                Token(CONN_BASE + i * STRIDE),
            )?);
        }
        Ok((reactor, ios))
    };
    let (mut reactor, mut ios) = match setup() {
        Ok(x) => {
            let _ = ready.send(Ok(gettid()));
            x
        }
        Err(e) => {
            let e = format!("channel members: {e}");
            let _ = ready.send(Err(e.clone()));
            return Err(e);
        }
    };
    // Each member's next deadline, kept here and refreshed only for members that did something, so a turn
    // costs what one `mpc` turn costs, not a scan of every member's connections.
    let mut deadlines: Vec<Option<Instant>> = ios.iter().map(|io| io.peer.poll_timeout()).collect();
    let t0 = StdInstant::now();
    let mut events = Vec::new();
    let totals = |ios: &[ChatIo]| {
        ios.iter().fold((0, 0), |(r, d), io| {
            (r + io.peer.stats().received, d + io.peer.stats().duplicates)
        })
    };
    loop {
        match stop.try_recv() {
            Err(mpsc::TryRecvError::Empty) => {}
            Ok(()) | Err(mpsc::TryRecvError::Disconnected) => return Ok(totals(&ios)),
        }
        if t0.elapsed() > limit {
            return Err(format!("channel members: still running after {limit:?}"));
        }
        let check_stop = reactor.now() + STOP_CHECK;
        let wake = deadlines
            .iter()
            .flatten()
            .fold(check_stop, |a, &t| a.min(t));
        reactor
            .turn(Some(wake), &mut events)
            .map_err(err("channel members reactor"))?;
        let (now, wall) = (reactor.now(), reactor.wall_ms());
        for ev in &events {
            let ReactorEvent::Io(token, readiness) = *ev else {
                continue;
            };
            let i = owner(token);
            let Some(io) = ios.get_mut(i) else {
                continue;
            };
            io.handle_event(now, wall, token, readiness, reactor.registry());
            take(io, i, &arrivals);
            deadlines[i] = io.peer.poll_timeout();
        }
        for (i, io) in ios.iter_mut().enumerate() {
            if deadlines[i].is_some_and(|d| d <= now) {
                io.handle_timeout(now, reactor.registry());
                take(io, i, &arrivals);
                deadlines[i] = io.peer.poll_timeout();
            }
        }
    }
}

/// Takes member `i`'s events, stamping each message as it is taken.
fn take(io: &mut ChatIo, i: usize, arrivals: &mpsc::Sender<Arrival>) {
    while let Some(ev) = io.peer.poll_event() {
        if let PeerEvent::Message { scope, .. } = ev {
            // A send fails only once the sender is gone, and then nobody needs the stamp.
            let _ = arrivals.send(Arrival {
                member: i,
                channel: matches!(scope, Scope::Channel(_)),
                at: StdInstant::now(),
            });
        }
    }
}

/// p50 and p99 in µs.
fn p50_p99(samples: &mut [Duration]) -> (f64, f64) {
    let (a, b, _) = summary(samples);
    (us(a), us(b))
}

/// Adds the channel figures to the chat figures, after the two-peer ones (whose keys and order stay).
pub(super) fn figures(plan: &Plan, mut m: Measured, f: &mut Figures) {
    let n = plan.members;
    let r = &mut m.one_cpu;
    let (last50, last99) = p50_p99(&mut r.last);
    let (acked50, acked99) = p50_p99(&mut r.acked);
    let (copy50, copy99) = p50_p99(&mut r.copies);
    let (direct50, direct99) = p50_p99(&mut r.direct);
    let (dacked50, _) = p50_p99(&mut r.direct_acked);
    let (msg50, msg99) = p50_p99(&mut r.direct_msgs);
    let (fresh50, fresh99) = p50_p99(&mut m.fresh.last);
    let (fresh_acked50, _) = p50_p99(&mut m.fresh.acked);
    let one_ratio = ratio(direct50, last50);
    f.set("channel_members", n)
        .set("channel_last_p50_us", last50)
        .set("channel_last_p99_us", last99)
        .set("channel_acked_p50_us", acked50)
        .set("channel_acked_p99_us", acked99)
        .set("channel_copy_p50_us", copy50)
        .set("channel_copy_p99_us", copy99)
        .set("direct_seq_last_p50_us", direct50)
        .set("direct_seq_last_p99_us", direct99)
        .set("direct_seq_acked_p50_us", dacked50)
        .set("direct_msg_p50_us", msg50)
        .set("direct_msg_p99_us", msg99)
        .set("ratio_channel_to_direct_seq", one_ratio);
    let (fresh50, fresh99, fresh_acked50) = if m.fresh.last.is_empty() {
        (None, None, None)
    } else {
        (Some(fresh50), Some(fresh99), Some(fresh_acked50))
    };
    f.set("channel_fresh_last_p50_us", fresh50)
        .set("channel_fresh_last_p99_us", fresh99)
        .set("channel_fresh_acked_p50_us", fresh_acked50);
    // Without two CPUs the keys are still there, as null, so every line has the same keys.
    let two = m.two_cpus.as_mut().map(|r| {
        let (last50, last99) = p50_p99(&mut r.last);
        let (direct50, _) = p50_p99(&mut r.direct);
        let (msg50, _) = p50_p99(&mut r.direct_msgs);
        (last50, last99, direct50, msg50, ratio(direct50, last50))
    });
    f.set("two_cpus_channel_last_p50_us", two.map(|t| t.0))
        .set("two_cpus_channel_last_p99_us", two.map(|t| t.1))
        .set("two_cpus_direct_seq_last_p50_us", two.map(|t| t.2))
        .set("two_cpus_direct_msg_p50_us", two.map(|t| t.3))
        .set("two_cpus_ratio_channel_to_direct_seq", two.map(|t| t.4))
        .set("channel_rounds", plan.rounds)
        .set("channel_fresh_rounds", plan.fresh_rounds)
        .set("channel_pinned", m.pinned);
    f.notes.push(format!(
        "channel_*: one message to {CHANNEL} ({n} members: {n} peers, each with its own listener, all in one \
         thread on one reactor), from send_to_many until the last member's loop takes it (last), every \
         receipt is back (acked), each member takes it (copy); over connections already open (reused): no \
         handshake in these"
    ));
    f.notes.push(format!(
        "direct_seq_*: {n} one-to-one messages to the {n} members, each sent once the one before is \
         acknowledged, until the last member takes its message (last) or its receipt is back (acked); \
         direct_msg_*: each of those messages to its receipt; rounds alternate with the channel's"
    ));
    f.notes.push(format!(
        "channel_fresh_*: {} channel rounds from a sender whose connections close after each copy's receipt: \
         {n} IK handshakes each",
        plan.fresh_rounds
    ));
    f.notes.push(format!(
        "channel of {n} over {n} sequential one-to-one messages, p50 to the last member: {one_ratio:.3} x"
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_map_back_to_their_member() {
        let last = MAX_MEMBERS - 1;
        assert_eq!(owner(Token(1)), 0);
        assert_eq!(owner(Token(1 + last)), last);
        assert_eq!(owner(Token(CONN_BASE)), 0);
        assert_eq!(owner(Token(CONN_BASE + STRIDE - 1)), 0);
        assert_eq!(owner(Token(CONN_BASE + 7 * STRIDE + 3)), 7);
        // The generation `Sources` puts in the high half does not change the owner.
        assert_eq!(owner(Token((5 << 32) | (CONN_BASE + last * STRIDE))), last);
        // A token of no member maps past the members, and is ignored.
        assert!(owner(Token(0)) >= MAX_MEMBERS);
    }
}
