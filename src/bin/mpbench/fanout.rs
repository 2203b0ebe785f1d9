//! The floor under a join and under a storm: a plain UDP fan-out measured in the same run.
//!
//! A join at N clients is, on the wire, one small DATA packet from mpd to each of N clients and one SACK
//! back from each. This measures the same datagrams without SCTP or the roster: a sender thread (standing in
//! for mpd, with the same socket setup and `sendmmsg` batches) sends one datagram of the delta packet's size
//! to each of N receivers, spread over the harness's lanes as the simulated clients are; the harness side
//! reads them (with GRO, as the swarm does) and answers each with a datagram of a SACK's size, in segmented
//! sends as the swarm sends its SACKs. A round's time runs from the first send to the last datagram read.
//! Rounds follow each other as joins do: the next starts once the last datagram of the one before is read.
//!
//! A storm's floor ([`Shape::request`], [`Shape::bytes`]) is the same machinery with more to move: each
//! receiver first sends a request (its REGISTER's packet) to the sender, which then sends that receiver its
//! bytes (its whole roster) as a run of full packets, segmented together as mpd sends one association's
//! burst; the receivers answer every [`Shape::ack_every`] packets. The sender keeps at most
//! [`Shape::window`] packets unanswered per harness socket, so that the floor, which has no retransmission,
//! never overflows a receive buffer: it moves on to another socket's receivers meanwhile.
//!
//! On loopback the sending CPU also runs the receiving socket's half of the stack, so this floor is mostly
//! kernel time per datagram on this machine, which no change to mpd's user space can go below.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};

use multiproto::io::sctp_udp::{Coalescing, UdpTransport};
use multiproto::sctp::Transmit;

/// How long one round may take before the baseline gives up.
const ROUND_LIMIT: Duration = Duration::from_secs(30);
/// Datagrams the sender sends before it reads again: mpd's own budget per loop turn. A round to 100 000
/// receivers sent in one go had their replies overflow the sender's receive buffer (a fifth of them lost),
/// where mpd reads its SACKs between bursts.
const SEND_BUDGET: usize = multiproto::daemon::SEND_BUDGET;

/// How long the sender waits for the last round's replies after it is told to stop.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);
const SOCKET: Token = Token(0);
const WAKE: Token = Token(1);
/// Bytes at the start of every datagram and request: round (u32) and receiver index (u32). Requests carry
/// the round + 1, so that they are told apart from replies (all zeros).
const TAG: usize = 8;

/// What to send.
#[derive(Copy, Clone, Debug)]
pub struct Shape {
    /// Where both sides bind.
    pub bind: IpAddr,
    /// Datagrams per round, one per receiver.
    pub receivers: usize,
    /// Receivers per harness socket, as the swarm's `--per-lane`.
    pub per_lane: usize,
    /// Size of each fanned-out datagram (the delta's SCTP packet), the largest for [`Shape::bytes`].
    pub size: usize,
    /// Bytes sent to each receiver per round, in datagrams of `size` and a last one with the rest (a join:
    /// `size`, one datagram).
    pub bytes: usize,
    /// Size of the request each receiver sends before it is sent anything (0: none, as in a join).
    pub request: usize,
    /// Size of each reply (a SACK packet).
    pub reply: usize,
    /// A reply for every this many datagrams a harness socket reads (and one for any left at the end of a
    /// round).
    pub ack_every: usize,
    /// Datagrams sent to one harness socket and not yet answered, at most.
    pub window: usize,
    /// Rounds, one after the other.
    pub rounds: usize,
}

impl Shape {
    fn per_lane(&self) -> usize {
        self.per_lane.max(1)
    }

    fn lanes(&self) -> usize {
        self.receivers.div_ceil(self.per_lane()).max(1)
    }

    /// The receivers on harness socket `l`.
    fn lane_range(&self, l: usize) -> std::ops::Range<usize> {
        (l * self.per_lane()).min(self.receivers)..((l + 1) * self.per_lane()).min(self.receivers)
    }

    /// Datagrams to each receiver per round.
    fn datagrams(&self) -> usize {
        self.bytes.div_ceil(self.size.max(TAG)).max(1)
    }

    /// Size of datagram `seq` of a receiver's run.
    fn len_of(&self, seq: usize) -> usize {
        let size = self.size.max(TAG);
        if seq + 1 < self.datagrams() {
            size
        } else {
            (self.bytes - (self.datagrams() - 1) * size).clamp(TAG, size)
        }
    }

    /// Replies the sender gets per round: every `ack_every` datagrams of a socket, and one for the rest.
    fn replies_per_round(&self) -> u64 {
        (0..self.lanes())
            .map(|l| {
                (self.lane_range(l).len() * self.datagrams()).div_ceil(self.ack_every.max(1)) as u64
            })
            .sum()
    }
}

enum Cmd {
    Round(u32),
    Stop,
}

/// Runs `shape.rounds` rounds and returns each round's time.
pub fn measure(shape: Shape) -> Result<Vec<Duration>, String> {
    let err = |what: &'static str| move |e: std::io::Error| format!("raw fan-out: {what}: {e}");
    let lanes = shape.lanes();
    let mut poll = Poll::new().map_err(err("poll"))?;
    let mut socks = Vec::with_capacity(lanes);
    for l in 0..lanes {
        let mut t =
            UdpTransport::bind(SocketAddr::new(shape.bind, 0), 1200).map_err(err("bind"))?;
        t.set_coalescing(Coalescing::Destination);
        // Without GRO (old kernels) the swarm reads datagram by datagram too.
        let _ = t.enable_gro();
        t.register(poll.registry(), Token(l))
            .map_err(err("register"))?;
        socks.push(t);
    }
    let dsts: Vec<SocketAddr> = socks
        .iter()
        .map(|s| s.local_addr())
        .collect::<Result<_, _>>()
        .map_err(err("address"))?;
    let (cmd_tx, cmd_rx) = mpsc::channel();
    let (start_tx, start_rx) = mpsc::channel();
    let (addr_tx, addr_rx) = mpsc::channel();
    let sender = thread::Builder::new()
        .name("raw-fanout".into())
        .spawn(move || send_rounds(shape, dsts, cmd_rx, start_tx, addr_tx))
        .map_err(|e| format!("raw fan-out: thread: {e}"))?;
    let (waker, sender_addr) = match addr_rx.recv() {
        Ok(Ok(w)) => w,
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err("raw fan-out: the sender ended before it started".into()),
    };
    let result = receive_rounds(
        shape,
        &mut poll,
        &mut socks,
        sender_addr,
        &cmd_tx,
        &waker,
        &start_rx,
    );
    let _ = cmd_tx.send(Cmd::Stop);
    let _ = waker.wake();
    let (replies, requests) = sender
        .join()
        .map_err(|_| "raw fan-out: the sender panicked".to_string())??;
    let times = result?;
    let asked = if shape.request > 0 {
        (shape.rounds * shape.receivers) as u64
    } else {
        0
    };
    if requests != asked {
        return Err(format!(
            "raw fan-out: the sender got {requests} of {asked} requests"
        ));
    }
    let expected = shape.rounds as u64 * shape.replies_per_round();
    if replies != expected {
        return Err(format!(
            "raw fan-out: the sender got {replies} of {expected} replies"
        ));
    }
    Ok(times)
}

/// The harness side: starts each round (sending the receivers' requests, if any), reads until every
/// receiver has all its datagrams, answers them.
fn receive_rounds(
    shape: Shape,
    poll: &mut Poll,
    socks: &mut [UdpTransport],
    sender: SocketAddr,
    cmd: &mpsc::Sender<Cmd>,
    waker: &Waker,
    started: &mpsc::Receiver<Instant>,
) -> Result<Vec<Duration>, String> {
    let mut events = Events::with_capacity(64);
    let per_receiver = shape.datagrams() as u32;
    let mut got_by = vec![0u32; shape.receivers];
    let mut times = Vec::with_capacity(shape.rounds);
    let mut owed = Owed {
        replies: vec![0; socks.len()],
        unanswered: vec![0; socks.len()],
        requests: vec![0..0; socks.len()],
    };
    for round in 0..shape.rounds as u32 {
        got_by.fill(0);
        let mut got = 0;
        let deadline = Instant::now() + ROUND_LIMIT;
        cmd.send(Cmd::Round(round))
            .map_err(|_| "raw fan-out: the sender is gone".to_string())?;
        waker
            .wake()
            .map_err(|e| format!("raw fan-out: wake: {e}"))?;
        if shape.request > 0 {
            for (l, r) in owed.requests.iter_mut().enumerate() {
                *r = shape.lane_range(l);
            }
        }
        let done = loop {
            crate::signals::check().map_err(|e| format!("raw fan-out: {e}"))?;
            owed.send(poll, socks, &shape, sender, round)?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "raw fan-out: round {round}: {got} of {} receivers complete within {ROUND_LIMIT:?}",
                    shape.receivers
                ));
            }
            poll.poll(&mut events, Some(left))
                .map_err(|e| format!("raw fan-out: poll: {e}"))?;
            // Only the lanes that were reported readable, as the swarm reads.
            for l in events
                .iter()
                .filter(|e| e.is_readable())
                .map(|e| e.token().0)
            {
                let Some(s) = socks.get_mut(l) else { continue };
                s.read_with(
                    |_, bytes| {
                        let Some((r, k)) = parse(bytes) else { return };
                        if r == round
                            && let Some(n) = got_by.get_mut(k)
                        {
                            *n += 1;
                            if *n == per_receiver {
                                got += 1;
                            }
                        }
                        owed.unanswered[l] += 1;
                    },
                    |_, _| {},
                )
                .map_err(|e| format!("raw fan-out: read: {e}"))?;
                let every = shape.ack_every.max(1);
                owed.replies[l] += owed.unanswered[l] / every;
                owed.unanswered[l] %= every;
            }
            // Read the whole round first, as the swarm acknowledges what one read brought in.
            let finished = (got == shape.receivers).then(Instant::now);
            if finished.is_some() {
                // What is left unanswered at the end of a round is answered now, as a delayed SACK would be.
                for (r, u) in owed.replies.iter_mut().zip(&mut owed.unanswered) {
                    *r += usize::from(*u > 0);
                    *u = 0;
                }
            }
            owed.send(poll, socks, &shape, sender, round)?;
            if let Some(t) = finished {
                break t;
            }
        };
        let t0 = started
            .recv_timeout(ROUND_LIMIT)
            .map_err(|_| format!("raw fan-out: round {round}: no start time"))?;
        times.push(done.saturating_duration_since(t0));
    }
    // Replies still owed (a socket buffer was full) go out before the sender is told to stop counting.
    let end = Instant::now() + DRAIN_LIMIT;
    while owed.replies.iter().any(|&n| n > 0) && Instant::now() < end {
        poll.poll(&mut events, Some(Duration::from_millis(10)))
            .map_err(|e| format!("raw fan-out: poll: {e}"))?;
        owed.send(poll, socks, &shape, sender, shape.rounds as u32)?;
    }
    Ok(times)
}

/// What each harness socket owes the sender.
struct Owed {
    /// Replies to send now.
    replies: Vec<usize>,
    /// Datagrams read and not answered yet (fewer than `ack_every`).
    unanswered: Vec<usize>,
    /// Receivers whose requests are still to be sent.
    requests: Vec<std::ops::Range<usize>>,
}

impl Owed {
    /// Sends the requests and replies of each socket as far as it takes them; the rest stays owed.
    fn send(
        &mut self,
        poll: &Poll,
        socks: &mut [UdpTransport],
        shape: &Shape,
        sender: SocketAddr,
        round: u32,
    ) -> Result<(), String> {
        for (l, s) in socks.iter_mut().enumerate() {
            let (requests, replies) = (&mut self.requests[l], &mut self.replies[l]);
            s.write_with(poll.registry(), Token(l), |buf| {
                if let Some(k) = requests.clone().next()
                    && buf.len() >= shape.request.max(TAG)
                {
                    requests.start += 1;
                    let len = shape.request.max(TAG);
                    tag(&mut buf[..len], round + 1, k);
                    return Some(Transmit {
                        dst: sender,
                        len,
                        flow: 1,
                    });
                }
                (*replies > 0 && buf.len() >= shape.reply).then(|| {
                    *replies -= 1;
                    buf[..shape.reply].fill(0);
                    Transmit {
                        dst: sender,
                        len: shape.reply,
                        flow: 1,
                    }
                })
            })
            .map_err(|e| format!("raw fan-out: reply: {e}"))?;
        }
        Ok(())
    }
}

/// Writes the tag (`round`, receiver `k`) and zeros after it.
fn tag(buf: &mut [u8], round: u32, k: usize) {
    buf[..4].copy_from_slice(&round.to_be_bytes());
    buf[4..TAG].copy_from_slice(&(k as u32).to_be_bytes());
    buf[TAG..].fill(0);
}

fn parse(b: &[u8]) -> Option<(u32, usize)> {
    let r = u32::from_be_bytes(b.get(..4)?.try_into().ok()?);
    let k = u32::from_be_bytes(b.get(4..TAG)?.try_into().ok()?);
    Some((r, k as usize))
}

/// The sender's progress through one harness socket's receivers in a round.
#[derive(Clone, Debug, Default)]
struct LaneRun {
    /// The receiver being sent to, and the end of this socket's receivers.
    next: usize,
    end: usize,
    /// Datagrams sent to `next` so far.
    seq: usize,
    /// Datagrams sent to this socket and not answered yet.
    unanswered: usize,
}

/// The daemon's stand-in's plan for a round: which datagram goes out next.
struct Plan {
    lanes: Vec<LaneRun>,
    /// The socket being sent to: it keeps the turn while it has room and work, as mpd sends one
    /// association's burst after another.
    cur: usize,
    /// Per receiver, the tag of its latest request (the round + 1): a request read before the sender
    /// took the command that starts its round still counts.
    asked: Vec<u32>,
    /// Whether receivers wait for their requests.
    requests: bool,
    round: u32,
}

impl Plan {
    fn new(shape: &Shape) -> Plan {
        Plan {
            lanes: vec![LaneRun::default(); shape.lanes()],
            cur: 0,
            asked: vec![
                0;
                if shape.request > 0 {
                    shape.receivers
                } else {
                    0
                }
            ],
            requests: shape.request > 0,
            round: 0,
        }
    }

    /// Starts round `round`: every socket from its first receiver.
    fn start(&mut self, shape: &Shape, round: u32) {
        self.round = round;
        self.cur = 0;
        for (l, lane) in self.lanes.iter_mut().enumerate() {
            let r = shape.lane_range(l);
            (lane.next, lane.end) = (r.start, r.end);
            lane.seq = 0;
        }
    }

    /// The next datagram as (socket, receiver, length), if any socket has one to send and room for it.
    fn next(&mut self, shape: &Shape) -> Option<(usize, usize, usize)> {
        for _ in 0..self.lanes.len() {
            let l = self.cur;
            let lane = &mut self.lanes[l];
            if lane.next < lane.end
                && lane.unanswered < shape.window
                && (!self.requests || self.asked[lane.next] == self.round + 1)
            {
                let (k, len) = (lane.next, shape.len_of(lane.seq));
                lane.unanswered += 1;
                lane.seq += 1;
                if lane.seq == shape.datagrams() {
                    lane.seq = 0;
                    lane.next += 1;
                }
                return Some((l, k, len));
            }
            self.cur = (l + 1) % self.lanes.len();
        }
        None
    }
}

/// The daemon's stand-in: on each round, each receiver's datagrams (once its request is in, if the shape
/// has requests); counts the replies and requests. Returns both once told to stop and every reply is in
/// (or `DRAIN_LIMIT` has passed).
fn send_rounds(
    shape: Shape,
    dsts: Vec<SocketAddr>,
    cmd: mpsc::Receiver<Cmd>,
    started: mpsc::Sender<Instant>,
    ready: mpsc::Sender<Result<(Waker, SocketAddr), String>>,
) -> Result<(u64, u64), String> {
    let setup = || -> std::io::Result<(Poll, Waker, UdpTransport, SocketAddr)> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKE)?;
        let mut sock = UdpTransport::bind(SocketAddr::new(shape.bind, 0), 1200)?;
        // As mpd: a burst of one association's packets leaves in one segmented send.
        sock.set_coalescing(Coalescing::Association);
        sock.register(poll.registry(), SOCKET)?;
        let addr = sock.local_addr()?;
        Ok((poll, waker, sock, addr))
    };
    let (mut poll, waker, mut sock, addr) = match setup() {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("raw fan-out: sender: {e}");
            let _ = ready.send(Err(msg.clone()));
            return Err(msg);
        }
    };
    let _ = ready.send(Ok((waker, addr)));
    let lane_of: HashMap<SocketAddr, usize> =
        dsts.iter().enumerate().map(|(l, &a)| (a, l)).collect();
    let mut events = Events::with_capacity(64);
    let (mut replies, mut requests) = (0u64, 0u64);
    let mut plan = Plan::new(&shape);
    let mut sending = false;
    let mut more = false;
    let mut stop_at: Option<Instant> = None;
    let expected = shape.rounds as u64 * shape.replies_per_round();
    let every = shape.ack_every.max(1);
    loop {
        if let Some(end) = stop_at
            && (replies >= expected || Instant::now() >= end)
        {
            return Ok((replies, requests));
        }
        // More to send than the last turn's budget: look at the socket without waiting.
        let wait = if more {
            Duration::ZERO
        } else {
            Duration::from_millis(100)
        };
        poll.poll(&mut events, Some(wait))
            .map_err(|e| format!("raw fan-out: sender poll: {e}"))?;
        while let Ok(c) = cmd.try_recv() {
            match c {
                Cmd::Round(r) => {
                    let _ = started.send(Instant::now());
                    plan.start(&shape, r);
                    sending = true;
                }
                Cmd::Stop => stop_at = Some(Instant::now() + DRAIN_LIMIT),
            }
        }
        sock.read_with(
            |src, bytes| match parse(bytes) {
                // A request: its receiver may be sent its datagrams.
                Some((r, k)) if r != 0 => {
                    requests += 1;
                    if let Some(a) = plan.asked.get_mut(k) {
                        *a = r;
                    }
                }
                _ => {
                    replies += 1;
                    if let Some(&l) = lane_of.get(&src) {
                        let lane = &mut plan.lanes[l];
                        lane.unanswered = lane.unanswered.saturating_sub(every);
                    }
                }
            },
            |_, _| {},
        )
        .map_err(|e| format!("raw fan-out: sender read: {e}"))?;
        more = false;
        if sending {
            more = sock
                .write_budget_with(poll.registry(), SOCKET, SEND_BUDGET, |buf| {
                    let (l, k, len) = plan.next(&shape)?;
                    // `buf` holds a whole packet (the socket was bound for 1 200-byte packets).
                    let len = len.min(buf.len());
                    tag(&mut buf[..len], plan.round, k);
                    Some(Transmit {
                        dst: dsts[l.min(dsts.len() - 1)],
                        len,
                        flow: k as u32 + 1,
                    })
                })
                .map_err(|e| format!("raw fan-out: send: {e}"))?;
            // Until every receiver has its datagrams; the rest wait for replies or requests to come in.
            sending = plan.lanes.iter().any(|l| l.next < l.end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_round_reaches_every_receiver_and_every_reply_comes_back() {
        let times = measure(Shape {
            bind: "127.0.0.1".parse().unwrap(),
            receivers: 300,
            per_lane: 128,
            size: 88,
            bytes: 88,
            request: 0,
            reply: 28,
            ack_every: 1,
            window: usize::MAX,
            rounds: 5,
        })
        .unwrap();
        assert_eq!(times.len(), 5);
    }

    #[test]
    fn a_storm_moves_every_byte_after_each_request_within_the_window() {
        let shape = Shape {
            bind: "127.0.0.1".parse().unwrap(),
            receivers: 300,
            per_lane: 128,
            size: 1200,
            bytes: 5 * 1200 + 100,
            request: 80,
            reply: 28,
            ack_every: 2,
            window: 16,
            rounds: 2,
        };
        assert_eq!(shape.datagrams(), 6);
        assert_eq!(shape.len_of(5), 100);
        // 128 + 128 + 44 receivers, 6 datagrams each, a reply for every two.
        assert_eq!(shape.replies_per_round(), 384 + 384 + 132);
        // `measure` fails unless every datagram, request and reply arrived.
        assert_eq!(measure(shape).unwrap().len(), 2);
    }
}
