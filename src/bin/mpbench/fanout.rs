//! The floor under a join: a plain UDP fan-out measured in the same run as `join`.
//!
//! A join at N clients is, on the wire, one small DATA packet from mpd to each of N clients and one SACK
//! back from each. This measures the same datagrams without SCTP or the roster: a sender thread (standing in
//! for mpd, with the same socket setup and `sendmmsg` batches) sends one datagram of the delta packet's size
//! to each of N receivers, spread over the harness's lanes as the simulated clients are; the harness side
//! reads them (with GRO, as the swarm does) and answers each with a datagram of a SACK's size, in segmented
//! sends as the swarm sends its SACKs. A round's time runs from the first send to the last datagram read.
//! Rounds follow each other as joins do: the next starts once the last datagram of the one before is read.
//!
//! On loopback the sending CPU also runs the receiving socket's half of the stack, so this floor is mostly
//! kernel time per datagram on this machine, which no change to mpd's user space can go below.

use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use fixedbitset::FixedBitSet;
use mio::{Events, Poll, Token, Waker};

use multiproto::sctp::Transmit;
use multiproto::sctp::transport::{Coalescing, UdpTransport};

/// How long one round may take before the baseline gives up.
const ROUND_LIMIT: Duration = Duration::from_secs(30);
/// How long the sender waits for the last round's replies after it is told to stop.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);
const SOCKET: Token = Token(0);
const WAKE: Token = Token(1);
/// Bytes at the start of every datagram: round (u32) and receiver index (u32).
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
    /// Size of each fanned-out datagram (the delta's SCTP packet).
    pub size: usize,
    /// Size of each reply (a SACK packet).
    pub reply: usize,
    /// Rounds, one after the other.
    pub rounds: usize,
}

enum Cmd {
    Round(u32),
    Stop,
}

/// Runs `shape.rounds` rounds and returns each round's time.
pub fn measure(shape: Shape) -> Result<Vec<Duration>, String> {
    let err = |what: &'static str| move |e: std::io::Error| format!("raw fan-out: {what}: {e}");
    let lanes = shape.receivers.div_ceil(shape.per_lane.max(1)).max(1);
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
    let waker = match addr_rx.recv() {
        Ok(Ok(w)) => w,
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err("raw fan-out: the sender ended before it started".into()),
    };
    let result = receive_rounds(shape, &mut poll, &mut socks, &cmd_tx, &waker, &start_rx);
    let _ = cmd_tx.send(Cmd::Stop);
    let _ = waker.wake();
    let replies = sender
        .join()
        .map_err(|_| "raw fan-out: the sender panicked".to_string())??;
    let times = result?;
    let expected = (shape.rounds * shape.receivers) as u64;
    if replies != expected {
        return Err(format!(
            "raw fan-out: the sender got {replies} of {expected} replies"
        ));
    }
    Ok(times)
}

/// The harness side: starts each round, reads until every receiver has its datagram, answers each.
fn receive_rounds(
    shape: Shape,
    poll: &mut Poll,
    socks: &mut [UdpTransport],
    cmd: &mpsc::Sender<Cmd>,
    waker: &Waker,
    started: &mpsc::Receiver<Instant>,
) -> Result<Vec<Duration>, String> {
    let mut events = Events::with_capacity(64);
    let mut seen = FixedBitSet::with_capacity(shape.receivers);
    let mut times = Vec::with_capacity(shape.rounds);
    let mut replies = vec![0usize; socks.len()];
    let mut from = vec![None; socks.len()];
    for round in 0..shape.rounds as u32 {
        seen.clear();
        let mut got = 0;
        let deadline = Instant::now() + ROUND_LIMIT;
        cmd.send(Cmd::Round(round))
            .map_err(|_| "raw fan-out: the sender is gone".to_string())?;
        waker
            .wake()
            .map_err(|e| format!("raw fan-out: wake: {e}"))?;
        let done = loop {
            crate::signals::check().map_err(|e| format!("raw fan-out: {e}"))?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "raw fan-out: round {round}: {got} of {} datagrams within {ROUND_LIMIT:?}",
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
                    |src, bytes| {
                        let Some((r, k)) = parse(bytes) else { return };
                        if r == round && k < shape.receivers && !seen.put(k) {
                            got += 1;
                        }
                        replies[l] += 1;
                        from[l] = Some(src);
                    },
                    |_, _| {},
                )
                .map_err(|e| format!("raw fan-out: read: {e}"))?;
            }
            // Read the whole round first, as the swarm acknowledges what one read brought in.
            let finished = (got == shape.receivers).then(Instant::now);
            send_replies(poll, socks, &mut replies, &from, shape.reply)?;
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
    while replies.iter().any(|&n| n > 0) && Instant::now() < end {
        poll.poll(&mut events, Some(Duration::from_millis(10)))
            .map_err(|e| format!("raw fan-out: poll: {e}"))?;
        send_replies(poll, socks, &mut replies, &from, shape.reply)?;
    }
    Ok(times)
}

/// Sends what each lane owes (`replies[l]` datagrams of `size` bytes to `from[l]`) as far as its socket
/// takes them; what it does not take stays owed.
fn send_replies(
    poll: &Poll,
    socks: &mut [UdpTransport],
    replies: &mut [usize],
    from: &[Option<SocketAddr>],
    size: usize,
) -> Result<(), String> {
    for (l, s) in socks.iter_mut().enumerate() {
        let Some(dst) = from[l] else { continue };
        let mut left = replies[l];
        s.write_with(poll.registry(), Token(l), |buf| {
            (left > 0 && buf.len() >= size).then(|| {
                left -= 1;
                buf[..size].fill(0);
                Transmit {
                    dst,
                    len: size,
                    flow: 1,
                }
            })
        })
        .map_err(|e| format!("raw fan-out: reply: {e}"))?;
        replies[l] = left;
    }
    Ok(())
}

fn parse(b: &[u8]) -> Option<(u32, usize)> {
    let r = u32::from_be_bytes(b.get(..4)?.try_into().ok()?);
    let k = u32::from_be_bytes(b.get(4..TAG)?.try_into().ok()?);
    Some((r, k as usize))
}

/// The daemon's stand-in: on each round, one datagram to every receiver; counts the replies. Returns the
/// number of replies once told to stop and every reply is in (or `DRAIN_LIMIT` has passed).
fn send_rounds(
    shape: Shape,
    dsts: Vec<SocketAddr>,
    cmd: mpsc::Receiver<Cmd>,
    started: mpsc::Sender<Instant>,
    ready: mpsc::Sender<Result<Waker, String>>,
) -> Result<u64, String> {
    let setup = || -> std::io::Result<(Poll, Waker, UdpTransport)> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKE)?;
        let mut sock = UdpTransport::bind(SocketAddr::new(shape.bind, 0), 1200)?;
        sock.register(poll.registry(), SOCKET)?;
        Ok((poll, waker, sock))
    };
    let (mut poll, waker, mut sock) = match setup() {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("raw fan-out: sender: {e}");
            let _ = ready.send(Err(msg.clone()));
            return Err(msg);
        }
    };
    let _ = ready.send(Ok(waker));
    let mut events = Events::with_capacity(64);
    let mut replies = 0u64;
    // The round being sent and the next receiver to send to.
    let mut sending: Option<(u32, usize)> = None;
    let mut stop_at: Option<Instant> = None;
    let expected = (shape.rounds * shape.receivers) as u64;
    let size = shape.size.max(TAG);
    loop {
        if let Some(end) = stop_at
            && (replies >= expected || Instant::now() >= end)
        {
            return Ok(replies);
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .map_err(|e| format!("raw fan-out: sender poll: {e}"))?;
        while let Ok(c) = cmd.try_recv() {
            match c {
                Cmd::Round(r) => {
                    let _ = started.send(Instant::now());
                    sending = Some((r, 0));
                }
                Cmd::Stop => stop_at = Some(Instant::now() + DRAIN_LIMIT),
            }
        }
        sock.read_with(|_, _| replies += 1, |_, _| {})
            .map_err(|e| format!("raw fan-out: sender read: {e}"))?;
        if let Some((r, mut k)) = sending {
            sock.write_with(poll.registry(), SOCKET, |buf| {
                (k < shape.receivers && buf.len() >= size).then(|| {
                    buf[..4].copy_from_slice(&r.to_be_bytes());
                    buf[4..TAG].copy_from_slice(&(k as u32).to_be_bytes());
                    buf[TAG..size].fill(0);
                    let dst = dsts[(k / shape.per_lane.max(1)).min(dsts.len() - 1)];
                    k += 1;
                    Transmit {
                        dst,
                        len: size,
                        flow: 0,
                    }
                })
            })
            .map_err(|e| format!("raw fan-out: send: {e}"))?;
            sending = (k < shape.receivers).then_some((r, k));
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
            reply: 28,
            rounds: 5,
        })
        .unwrap();
        assert_eq!(times.len(), 5);
    }
}
