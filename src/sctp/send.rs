//! The sending half of an association's data path: messages waiting for a TSN, chunks in flight, SACK
//! processing, retransmission marking, and the congestion window (RFC 9260 §6.1, §6.2.1, §6.3, §7).
//!
//! The queue is boxed inside the association and exists only while data is queued or unacknowledged; the
//! congestion state ([`Cc`]) lives in the association itself, since it outlasts the queue.

use std::collections::VecDeque;
use std::time::Duration;

use super::Stats;
use super::chunk::{DataOut, Sack, data_chunk_len, data_flags, write_data_parts};
use super::payload::{ChunkBytes, Payload};
use super::wire::{Tsn, Writer};
use crate::time::Instant;

/// Congestion and flow-control state (RFC 9260 §7.2), kept per association (we are single-homed).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cc {
    pub cwnd: u32,
    pub ssthresh: u32,
    pub partial_bytes_acked: u32,
    /// Our view of the peer's receive window.
    pub peer_rwnd: u32,
}

impl Cc {
    /// Initial values: cwnd = min(4 MTU, max(2 MTU, 4404)), ssthresh = the peer's window (§7.2.1).
    pub fn new(mtu: u32, peer_rwnd: u32) -> Self {
        Cc {
            cwnd: (4 * mtu).min((2 * mtu).max(4404)),
            ssthresh: peer_rwnd.max(4 * mtu),
            partial_bytes_acked: 0,
            peer_rwnd,
        }
    }

    /// Loss: ssthresh = max(cwnd / 2, 4 MTU) (§7.2.3).
    fn halve(&mut self, mtu: u32) {
        self.ssthresh = (self.cwnd / 2).max(4 * mtu);
        self.partial_bytes_acked = 0;
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum ChunkState {
    /// Sent and counted in the flight size.
    Outstanding,
    /// Reported received by a gap block; not counted in flight, but not yet cumulatively acked.
    GapAcked,
    /// Marked for retransmission; not counted in flight until sent again.
    Retransmit,
}

struct OutMsg {
    stream: u16,
    /// `None` for an ordered message queued before the stream count was negotiated.
    ssn: Option<u16>,
    flags: u8,
    ppid: u32,
    data: Payload,
    offset: usize,
}

struct OutChunk {
    tsn: Tsn,
    stream: u16,
    ssn: u16,
    flags: u8,
    ppid: u32,
    data: ChunkBytes,
    state: ChunkState,
    misses: u8,
    retransmitted: bool,
    fast_rtx_done: bool,
}

impl OutChunk {
    fn wire_len(&self) -> u32 {
        data_chunk_len(self.data.len()) as u32
    }
}

/// What a SACK did.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SackOutcome {
    /// The cumulative ack point moved forward.
    pub cum_advanced: bool,
    /// Some data was newly acknowledged (cumulatively or by gap blocks).
    pub newly_acked: bool,
    /// A round-trip sample from a chunk sent once (Karn's rule).
    pub rtt: Option<Duration>,
}

/// Outcome of filling a packet with DATA.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Filled {
    /// DATA chunks written.
    pub chunks: usize,
    /// The lowest outstanding TSN was among the retransmitted chunks (rule R3: restart T3).
    pub lowest_retransmitted: bool,
}

/// Messages queued and chunks in flight for one association.
pub(crate) struct SendQueue {
    pending: VecDeque<OutMsg>,
    inflight: VecDeque<OutChunk>,
    /// User bytes queued or unacknowledged (send buffer accounting).
    user_bytes: usize,
    /// Bytes (chunk wire lengths) of `Outstanding` chunks.
    flight: u32,
    /// Chunks marked `Retransmit`.
    to_retransmit: usize,
    /// Fast Recovery exit point (§7.2.4).
    fast_recovery: Option<Tsn>,
    /// A fast retransmission is due and may ignore cwnd for one packet.
    fast_rtx_due: bool,
    /// The chunk being timed for an RTT measurement.
    rtt_probe: Option<(Tsn, Instant)>,
    /// Highest TSN the peer acknowledged cumulatively. Kept here because without a queue everything sent is
    /// acknowledged, so the association derives it from its next TSN.
    cum_acked: Tsn,
}

impl SendQueue {
    /// An empty queue; `cum_acked` is the TSN before the next one to be assigned.
    pub fn new(cum_acked: Tsn) -> Self {
        SendQueue {
            cum_acked,
            pending: VecDeque::new(),
            inflight: VecDeque::new(),
            user_bytes: 0,
            flight: 0,
            to_retransmit: 0,
            fast_recovery: None,
            fast_rtx_due: false,
            rtt_probe: None,
        }
    }

    /// Empties the queue for reuse by another association (keeping its buffers), with `cum_acked` as the ack
    /// point. `false` if its buffers grew large: such a queue is better freed than kept.
    pub fn reset(&mut self, cum_acked: Tsn) -> bool {
        self.pending.clear();
        self.inflight.clear();
        self.user_bytes = 0;
        self.flight = 0;
        self.to_retransmit = 0;
        self.fast_recovery = None;
        self.fast_rtx_due = false;
        self.rtt_probe = None;
        self.cum_acked = cum_acked;
        self.is_small()
    }

    /// Whether its buffers are still small enough to be worth keeping for reuse.
    pub fn is_small(&self) -> bool {
        self.pending.capacity() <= 16 && self.inflight.capacity() <= 64
    }

    /// Highest TSN acknowledged cumulatively.
    pub fn cum_acked(&self) -> Tsn {
        self.cum_acked
    }

    /// Nothing queued and nothing unacknowledged: the queue can be freed.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.inflight.is_empty()
    }

    /// Whether any chunk is still awaiting a cumulative ack.
    pub fn has_unacked(&self) -> bool {
        !self.inflight.is_empty()
    }

    /// User bytes queued or unacknowledged.
    pub fn user_bytes(&self) -> usize {
        self.user_bytes
    }

    /// Queues a message. Ordered messages carry their stream sequence number, or `None` if it is assigned
    /// later by [`SendQueue::assign_ssns`].
    pub fn push(
        &mut self,
        stream: u16,
        ssn: Option<u16>,
        unordered: bool,
        ppid: u32,
        data: Payload,
    ) {
        self.user_bytes += data.len();
        self.pending.push_back(OutMsg {
            stream,
            ssn,
            flags: if unordered { data_flags::UNORDERED } else { 0 },
            ppid,
            data,
            offset: 0,
        });
    }

    /// Gives SSNs to ordered messages queued before the handshake, from the per-stream counters in `next`;
    /// messages for streams the peer did not grant are dropped.
    pub fn assign_ssns(&mut self, next: &mut [u16]) {
        let mut dropped = 0;
        self.pending.retain(|m| {
            if usize::from(m.stream) >= next.len() {
                dropped += m.data.len();
                return false;
            }
            true
        });
        self.user_bytes -= dropped;
        for m in self.pending.iter_mut() {
            if m.ssn.is_none() && m.flags & data_flags::UNORDERED == 0 {
                let slot = &mut next[usize::from(m.stream)];
                m.ssn = Some(*slot);
                *slot = slot.wrapping_add(1);
            }
        }
    }

    /// Whether [`SendQueue::fill`] would write a chunk now, given the windows (packet room aside).
    pub fn can_send(&self, cc: &Cc, frag: usize) -> bool {
        if self.to_retransmit > 0 {
            let first = self
                .inflight
                .iter()
                .find(|c| c.state == ChunkState::Retransmit)
                .map_or(0, OutChunk::wire_len);
            return self.flight == 0 || self.fast_rtx_due || self.flight + first <= cc.cwnd;
        }
        match self.pending.front() {
            None => false,
            Some(m) => {
                let next = (m.data.len() - m.offset).min(frag) as u32;
                self.flight < cc.cwnd && (self.flight == 0 || next <= cc.peer_rwnd)
            }
        }
    }

    /// Writes DATA chunks into `w`: retransmissions first, then new data, within cwnd, the peer's window and the
    /// packet size (RFC 9260 §6.1 rules A–D). `frag` is the largest payload per chunk.
    pub fn fill(
        &mut self,
        w: &mut Writer<'_>,
        now: Instant,
        cc: &mut Cc,
        next_tsn: &mut Tsn,
        frag: usize,
        stats: &mut Stats,
    ) -> Filled {
        let mut out = Filled::default();
        if self.to_retransmit > 0 {
            let ignore_cwnd = std::mem::take(&mut self.fast_rtx_due);
            let lowest = self.inflight.front().map(|c| c.tsn);
            for c in self.inflight.iter_mut() {
                if c.state != ChunkState::Retransmit {
                    continue;
                }
                let len = c.wire_len();
                // After a timeout cwnd is one packet and only one may be in flight (§7.2.3); a fast
                // retransmission goes out regardless of cwnd (§7.2.4).
                if !ignore_cwnd && self.flight > 0 && self.flight + len > cc.cwnd {
                    break;
                }
                let (first, rest) = c.data.parts();
                let d = DataOut {
                    flags: c.flags
                        | if self.to_retransmit == 1 {
                            data_flags::IMMEDIATE
                        } else {
                            0
                        },
                    tsn: c.tsn,
                    stream: c.stream,
                    ssn: c.ssn,
                    ppid: c.ppid,
                    payload: first,
                };
                if write_data_parts(w, &d, rest).is_err() {
                    break;
                }
                c.state = ChunkState::Outstanding;
                c.retransmitted = true;
                c.misses = 0;
                self.flight += len;
                self.to_retransmit -= 1;
                cc.peer_rwnd = cc.peer_rwnd.saturating_sub(c.data.len() as u32);
                stats.retransmits += 1;
                out.chunks += 1;
                if Some(c.tsn) == lowest {
                    out.lowest_retransmitted = true;
                }
                if self.to_retransmit == 0 {
                    break;
                }
            }
            if self.to_retransmit > 0 {
                return out;
            }
        }
        loop {
            let only_message = self.pending.len() == 1;
            let Some(m) = self.pending.front_mut() else {
                break;
            };
            let left = m.data.len() - m.offset;
            let take = left.min(frag);
            // Rule B: no new data once the flight reaches cwnd (one packet may overshoot it).
            if self.flight >= cc.cwnd {
                break;
            }
            // Rule A: the peer's window, except for a zero-window probe with nothing in flight.
            if take as u32 > cc.peer_rwnd && !(self.flight == 0 && out.chunks == 0) {
                break;
            }
            let last_piece = take == left;
            let mut flags = m.flags;
            if m.offset == 0 {
                flags |= data_flags::BEGIN;
            }
            if last_piece {
                flags |= data_flags::END;
                // Nothing more to send after this: ask for the SACK at once rather than wait for the
                // peer's delayed-ack timer (RFC 9260 §3.3.1, I bit).
                if only_message {
                    flags |= data_flags::IMMEDIATE;
                }
            }
            // Within the message by the offset's bookkeeping; a message of two parts is written as two
            // slices, never joined.
            let Some((payload, rest)) = m.data.parts(m.offset, take) else {
                break;
            };
            let d = DataOut {
                flags,
                tsn: *next_tsn,
                stream: m.stream,
                ssn: m.ssn.unwrap_or(0),
                ppid: m.ppid,
                payload,
            };
            if write_data_parts(w, &d, rest).is_err() {
                break;
            }
            let data = ChunkBytes::cut(&mut m.data, m.offset, take);
            let c = OutChunk {
                tsn: *next_tsn,
                stream: m.stream,
                ssn: m.ssn.unwrap_or(0),
                flags: flags & !data_flags::IMMEDIATE,
                ppid: m.ppid,
                data,
                state: ChunkState::Outstanding,
                misses: 0,
                retransmitted: false,
                fast_rtx_done: false,
            };
            m.offset += take;
            if self.rtt_probe.is_none() {
                self.rtt_probe = Some((c.tsn, now));
            }
            self.flight += c.wire_len();
            cc.peer_rwnd = cc.peer_rwnd.saturating_sub(take as u32);
            *next_tsn = next_tsn.next();
            self.inflight.push_back(c);
            out.chunks += 1;
            if last_piece {
                self.pending.pop_front();
            }
        }
        out
    }

    /// Processes a SACK whose cumulative ack is not behind [`SendQueue::cum_acked`] and not beyond what was
    /// sent (the caller checks both). Updates the ack point, flight, cwnd and the peer's window (§6.2.1, §7.2).
    pub fn on_sack(
        &mut self,
        sack: &Sack<'_>,
        highest_sent: Tsn,
        now: Instant,
        cc: &mut Cc,
        mtu: u32,
        stats: &mut Stats,
    ) -> SackOutcome {
        let mut out = SackOutcome::default();
        let cum = sack.cum_tsn;
        let flight_before = self.flight;
        let mut bytes_acked: u32 = 0;
        out.cum_advanced = cum.gt(self.cum_acked);
        while let Some(front) = self.inflight.front() {
            if !front.tsn.le(cum) {
                break;
            }
            let c = self.inflight.pop_front().unwrap_or_else(|| unreachable!());
            let len = c.wire_len();
            match c.state {
                ChunkState::Outstanding => {
                    self.flight -= len;
                    bytes_acked += len;
                }
                ChunkState::Retransmit => {
                    self.to_retransmit -= 1;
                    bytes_acked += len;
                }
                ChunkState::GapAcked => {}
            }
            self.user_bytes -= c.data.len();
            if let Some((t, sent)) = self.rtt_probe
                && t == c.tsn
            {
                if !c.retransmitted {
                    out.rtt = Some(now - sent);
                }
                self.rtt_probe = None;
            }
        }
        if let Some((t, _)) = self.rtt_probe
            && t.le(cum)
        {
            self.rtt_probe = None;
        }
        if out.cum_advanced {
            self.cum_acked = cum;
        }

        // Gap blocks: validated offsets only, sorted, so one pass over the (TSN-ordered) flight suffices.
        let mut blocks = [(0u32, 0u32); 32];
        let mut nblocks = 0;
        for (s, e) in sack.gap_blocks() {
            if s == 0 || s > e || nblocks == blocks.len() {
                continue;
            }
            blocks[nblocks] = (u32::from(s), u32::from(e));
            nblocks += 1;
        }
        let blocks = &mut blocks[..nblocks];
        blocks.sort_unstable();
        let mut htna: Option<Tsn> = None;
        let mut bi = 0;
        for c in self.inflight.iter_mut() {
            let off = c.tsn.distance(cum) as u32;
            while bi < blocks.len() && blocks[bi].1 < off {
                bi += 1;
            }
            let covered = bi < blocks.len() && blocks[bi].0 <= off;
            let len = c.wire_len();
            match (covered, c.state) {
                (true, ChunkState::Outstanding) => {
                    self.flight -= len;
                    bytes_acked += len;
                    c.state = ChunkState::GapAcked;
                    htna = Some(c.tsn);
                }
                (true, ChunkState::Retransmit) => {
                    self.to_retransmit -= 1;
                    bytes_acked += len;
                    c.state = ChunkState::GapAcked;
                    htna = Some(c.tsn);
                }
                (false, ChunkState::GapAcked) => {
                    // The receiver reneged: the chunk may be lost after all.
                    c.state = ChunkState::Outstanding;
                    c.misses = c.misses.saturating_add(1);
                    self.flight += len;
                }
                _ => {}
            }
        }
        out.newly_acked = bytes_acked > 0;

        // Miss indications (HTNA, §7.2.4); in Fast Recovery a cum advance counts every reported gap.
        let highest_gap = self
            .inflight
            .iter()
            .rev()
            .find(|c| c.state == ChunkState::GapAcked)
            .map(|c| c.tsn);
        let miss_bound = if self.fast_recovery.is_some() && out.cum_advanced {
            highest_gap
        } else {
            htna
        };
        let mut fast = false;
        if let Some(bound) = miss_bound {
            for c in self.inflight.iter_mut() {
                if !c.tsn.lt(bound) {
                    break;
                }
                if c.state == ChunkState::Outstanding && !c.fast_rtx_done {
                    c.misses += 1;
                    if c.misses >= 3 {
                        c.state = ChunkState::Retransmit;
                        c.fast_rtx_done = true;
                        self.flight -= c.wire_len();
                        self.to_retransmit += 1;
                        cc.peer_rwnd = cc.peer_rwnd.saturating_add(c.data.len() as u32);
                        fast = true;
                    }
                }
            }
        }

        // Window growth first, then any reduction (§7.2.4 note).
        if out.cum_advanced {
            if cc.cwnd <= cc.ssthresh {
                if self.fast_recovery.is_none() && flight_before >= cc.cwnd {
                    cc.cwnd += bytes_acked.min(mtu);
                }
            } else {
                cc.partial_bytes_acked += bytes_acked;
                if cc.partial_bytes_acked >= cc.cwnd && flight_before >= cc.cwnd {
                    cc.partial_bytes_acked -= cc.cwnd;
                    cc.cwnd += mtu;
                } else if cc.partial_bytes_acked > cc.cwnd {
                    cc.partial_bytes_acked = cc.cwnd;
                }
            }
        }
        if self.inflight.is_empty() {
            cc.partial_bytes_acked = 0;
        }
        if let Some(exit) = self.fast_recovery
            && exit.le(cum)
        {
            self.fast_recovery = None;
        }
        if fast {
            stats.fast_retransmits += 1;
            if self.fast_recovery.is_none() {
                cc.halve(mtu);
                cc.cwnd = cc.ssthresh;
                self.fast_recovery = Some(highest_sent);
                self.fast_rtx_due = true;
            }
            self.rtt_probe = None;
        }
        cc.peer_rwnd = sack.a_rwnd.saturating_sub(self.flight);
        out
    }

    /// T3-rtx expired: mark every outstanding chunk for retransmission and collapse cwnd (§6.3.3, §7.2.3).
    pub fn on_t3_timeout(&mut self, cc: &mut Cc, mtu: u32) {
        for c in self.inflight.iter_mut() {
            if c.state == ChunkState::Outstanding {
                c.state = ChunkState::Retransmit;
                self.to_retransmit += 1;
                cc.peer_rwnd = cc.peer_rwnd.saturating_add(c.data.len() as u32);
            }
        }
        self.flight = 0;
        cc.halve(mtu);
        cc.cwnd = mtu;
        self.fast_recovery = None;
        self.fast_rtx_due = false;
        self.rtt_probe = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sctp::chunk::{Chunk, ChunkIter, write_sack};
    use crate::sctp::wire::{HEADER_LEN, Header};

    const MTU: u32 = 1200;

    /// A packet writer over `buf`, with the header every test here uses.
    fn writer(buf: &mut [u8]) -> Writer<'_> {
        Writer::new(
            buf,
            Header {
                src_port: 1,
                dst_port: 2,
                vtag: 3,
            },
        )
        .unwrap()
    }

    fn fill(q: &mut SendQueue, cc: &mut Cc, next: &mut Tsn) -> Vec<(Tsn, usize, u8)> {
        let mut buf = [0u8; 1200];
        let mut w = writer(&mut buf);
        q.fill(&mut w, Instant::ZERO, cc, next, 1172, &mut Stats::default());
        let n = w.finish();
        ChunkIter::new(&buf[HEADER_LEN..n])
            .map(|c| match c.unwrap() {
                Chunk::Data(d) => (d.tsn, d.payload.len(), d.flags),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn sack(q: &mut SendQueue, cc: &mut Cc, cum: u32, gaps: &[(u16, u16)]) -> SackOutcome {
        let mut buf = [0u8; 200];
        let mut w = writer(&mut buf);
        write_sack(&mut w, Tsn(cum), 100_000, gaps, &[]).unwrap();
        let n = w.finish();
        let Some(Ok(Chunk::Sack(s))) = ChunkIter::new(&buf[HEADER_LEN..n]).next() else {
            panic!()
        };
        q.on_sack(
            &s,
            Tsn(1000),
            Instant::from_millis(5),
            cc,
            MTU,
            &mut Stats::default(),
        )
    }

    /// Every packet a queue sends for `msg` at `frag` bytes a chunk, with a window wide enough for all of it,
    /// and the first packet it resends after a T3 timeout: the bytes on the wire.
    fn wire(msg: Payload, frag: usize) -> (Vec<Vec<u8>>, Vec<u8>) {
        let mut q = SendQueue::new(Tsn(0));
        let mut cc = Cc::new(MTU, 1_000_000);
        cc.cwnd = 1_000_000;
        let mut next = Tsn(1);
        q.push(0, Some(0), false, 7, msg);
        let packet = |q: &mut SendQueue, cc: &mut Cc, next: &mut Tsn| {
            let mut buf = [0u8; 1200];
            let mut w = writer(&mut buf);
            let f = q.fill(&mut w, Instant::ZERO, cc, next, frag, &mut Stats::default());
            let n = w.finish();
            (f.chunks > 0).then(|| buf[..n].to_vec())
        };
        let mut sent = Vec::new();
        while let Some(p) = packet(&mut q, &mut cc, &mut next) {
            sent.push(p);
        }
        q.on_t3_timeout(&mut cc, MTU);
        let resent = packet(&mut q, &mut cc, &mut next).expect("a packet resent");
        (sent, resent)
    }

    /// The user data of every DATA chunk in `packets`, in order.
    fn user_data(packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        for p in packets {
            for c in ChunkIter::new(&p[HEADER_LEN..]) {
                let Ok(Chunk::Data(d)) = c else {
                    panic!("{c:?}")
                };
                v.push(d.payload.to_vec());
            }
        }
        v
    }

    fn headed(all: &[u8], split: usize) -> Payload {
        Payload::Headed {
            head: crate::sctp::Head::new(&all[..split]).unwrap(),
            body: all[split..].into(),
        }
    }

    /// A broadcast's head and a body larger than a packet: the boundary falls inside the first chunk, whose
    /// bytes (and its retransmission's) are the head's then the body's, and every packet is the one the
    /// same bytes owned whole give.
    #[test]
    fn a_headed_message_larger_than_a_packet_fragments_across_the_head() {
        let all: Vec<u8> = (0..3025u32).map(|i| (i % 251) as u8).collect();
        let (sent, resent) = wire(headed(&all, 25), 1172);
        let owned = wire(Payload::Owned(all.clone()), 1172);
        assert_eq!((&sent, &resent), (&owned.0, &owned.1));
        let data = user_data(&sent);
        let lens: Vec<usize> = data.iter().map(Vec::len).collect();
        assert_eq!(lens, [1172, 1172, 681]);
        assert_eq!(data.concat(), all);
        assert_eq!(
            user_data(&[resent]),
            [data[0].clone()],
            "the resent chunk is the first, head and all"
        );
    }

    /// A chunk boundary exactly on the head's end, and others inside the head: the same packets as the bytes
    /// owned whole, sent and resent.
    #[test]
    fn chunk_boundaries_on_and_inside_the_head() {
        let all: Vec<u8> = (0..100u8).collect();
        for (split, frag) in [(20, 20), (20, 10), (25, 5), (20, 7), (1, 1), (0, 30)] {
            let (sent, resent) = wire(headed(&all, split), frag);
            let owned = wire(Payload::Owned(all.clone()), frag);
            assert_eq!((&sent, &resent), (&owned.0, &owned.1), "{split} {frag}");
            let data = user_data(&sent);
            assert_eq!(data.concat(), all);
            let again = user_data(&[resent]);
            assert!(
                !again.is_empty() && data.starts_with(&again),
                "resent from the first"
            );
            if split == frag && split > 0 {
                assert_eq!(data[0], all[..split], "the first chunk is the head alone");
            }
        }
    }

    proptest::proptest! {
        /// Any split of the same bytes into a head and a body gives the same DATA chunks on the wire, sent
        /// and resent, as the bytes owned whole, at any chunk size.
        #[test]
        fn any_split_sends_the_same_chunks(
            all in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..3000),
            split in 0..=crate::sctp::HEAD_MAX,
            frag in 1usize..1172,
        ) {
            let split = split.min(all.len());
            proptest::prop_assert_eq!(wire(headed(&all, split), frag), wire(Payload::Owned(all.clone()), frag));
        }
    }

    #[test]
    fn fragments_with_flags_and_window() {
        let mut q = SendQueue::new(Tsn(0));
        let mut cc = Cc::new(MTU, 100_000);
        let mut next = Tsn(1);
        q.push(0, Some(0), false, 0, vec![7; 3000].into());
        let a = fill(&mut q, &mut cc, &mut next);
        assert_eq!(a, vec![(Tsn(1), 1172, data_flags::BEGIN)]);
        let b = fill(&mut q, &mut cc, &mut next);
        assert_eq!(b, vec![(Tsn(2), 1172, 0)]);
        let c = fill(&mut q, &mut cc, &mut next);
        assert_eq!(
            c,
            vec![(Tsn(3), 656, data_flags::END | data_flags::IMMEDIATE)]
        );
        assert_eq!(q.user_bytes(), 3000);
        let o = sack(&mut q, &mut cc, 3, &[]);
        assert!(o.cum_advanced && o.newly_acked);
        assert_eq!(o.rtt, Some(Duration::from_millis(5)));
        assert!(q.is_empty());
        assert_eq!(q.user_bytes(), 0);
    }

    #[test]
    fn cwnd_limits_new_data() {
        let mut q = SendQueue::new(Tsn(0));
        let mut cc = Cc::new(MTU, 1_000_000);
        assert_eq!(cc.cwnd, 4404);
        let mut next = Tsn(1);
        for _ in 0..10 {
            q.push(0, None, true, 0, vec![1; 1000].into());
        }
        let mut sent = 0;
        loop {
            let n = fill(&mut q, &mut cc, &mut next).len();
            if n == 0 {
                break;
            }
            sent += n;
        }
        // 1016 bytes a chunk: the fifth starts below cwnd (4064 < 4404) and overshoots it.
        assert_eq!(sent, 5);
    }

    #[test]
    fn three_misses_trigger_fast_retransmit() {
        let mut q = SendQueue::new(Tsn(0));
        let mut cc = Cc::new(MTU, 1_000_000);
        cc.cwnd = 100_000;
        let mut next = Tsn(1);
        for _ in 0..6 {
            q.push(0, None, true, 0, vec![1; 100].into());
        }
        while !fill(&mut q, &mut cc, &mut next).is_empty() {}
        // TSN 1 lost; 2, 3, 4 arrive one by one.
        for end in 1..=3u16 {
            sack(&mut q, &mut cc, 0, &[(2, end + 1)]);
        }
        let r = fill(&mut q, &mut cc, &mut next);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].0, Tsn(1));
        assert!(cc.cwnd < 100_000, "cwnd reduced");
        // Cum ack covers everything: queue drains.
        sack(&mut q, &mut cc, 6, &[]);
        assert!(q.is_empty());
    }

    #[test]
    fn t3_timeout_marks_and_resends_one_packet() {
        let mut q = SendQueue::new(Tsn(9));
        let mut cc = Cc::new(MTU, 1_000_000);
        let mut next = Tsn(10);
        for _ in 0..3 {
            q.push(1, Some(0), false, 0, vec![2; 500].into());
        }
        while !fill(&mut q, &mut cc, &mut next).is_empty() {}
        q.on_t3_timeout(&mut cc, MTU);
        assert_eq!(cc.cwnd, MTU);
        let r = fill(&mut q, &mut cc, &mut next);
        assert_eq!(
            r.iter().map(|x| x.0).collect::<Vec<_>>(),
            vec![Tsn(10), Tsn(11)]
        );
        // Flight now exceeds cwnd: the third waits.
        assert!(fill(&mut q, &mut cc, &mut next).is_empty());
    }

    #[test]
    fn hostile_gap_blocks_are_ignored() {
        let mut q = SendQueue::new(Tsn(0));
        let mut cc = Cc::new(MTU, 1_000_000);
        let mut next = Tsn(1);
        q.push(0, None, true, 0, vec![1; 10].into());
        fill(&mut q, &mut cc, &mut next);
        let o = sack(&mut q, &mut cc, 0, &[(0, 0), (9, 3), (65535, 65535)]);
        assert!(!o.newly_acked);
        assert!(!q.is_empty());
    }
}
