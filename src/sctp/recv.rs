//! The receiving half of an association's data path: which TSNs arrived (for SACK gap blocks and duplicate
//! reports), reassembly of fragmented messages, and in-order delivery per stream (RFC 9260 §6.2, §6.5, §6.9).
//!
//! Everything here is bounded: a chunk is accepted only within the receive window (counted as payload plus
//! [`CHUNK_OVERHEAD`], so a flood of one-byte chunks cannot cost more memory than the window says), within the
//! 16-bit gap-block offset range, and within [`MAX_GAP_RANGES`] separate gaps. Consecutive fragments of a
//! message are joined as they arrive, into one growing buffer that becomes the delivered message; its
//! capacity is at most twice its payload, so memory stays within twice what the window charges.

use super::chunk::Data;
use super::wire::{Tsn, ssn_lt};

/// Bookkeeping bytes charged against the window for every buffered chunk, beyond its payload.
pub(crate) const CHUNK_OVERHEAD: usize = 64;
/// Separate out-of-order TSN ranges tracked at most; a chunk that would open another is dropped.
pub(crate) const MAX_GAP_RANGES: usize = 64;
/// Duplicate TSNs remembered for the next SACK.
pub(crate) const MAX_DUPS: usize = 16;

/// A message ready for the application.
pub(crate) struct Delivered {
    pub stream: u16,
    pub unordered: bool,
    pub ppid: u32,
    pub data: Vec<u8>,
}

/// Buffered DATA: one chunk, or a run of consecutive fragments of one message joined as they arrived (so a
/// message whose fragments come in order is assembled in place and handed over without another copy).
struct RxChunk {
    /// First TSN of the run.
    first: Tsn,
    /// Last TSN of the run.
    tsn: Tsn,
    stream: u16,
    ssn: u16,
    /// BEGIN of the first fragment, END of the last, UNORDERED of all.
    flags: u8,
    ppid: u32,
    data: Vec<u8>,
    /// What its fragments were charged against the window: payload plus [`CHUNK_OVERHEAD`] each.
    charge: usize,
}

impl RxChunk {
    /// Whether a fragment with `tsn` and `flags` on `stream` carries on this run: the next TSN, no END here
    /// and no BEGIN there, the same stream and ordering (a broken sender's mismatch stays apart, and its
    /// message never completes, as before).
    fn continued_by(&self, tsn: Tsn, stream: u16, flags: u8) -> bool {
        use super::chunk::data_flags::{BEGIN, UNORDERED};
        self.tsn.next() == tsn
            && !self.end()
            && flags & BEGIN == 0
            && self.stream == stream
            && (self.flags & UNORDERED) == (flags & UNORDERED)
    }

    /// Appends the fragment(s) of `data` (last TSN `tsn`, flags `flags`, charged `charge`) to this run.
    fn extend(&mut self, tsn: Tsn, flags: u8, data: &[u8], charge: usize) {
        self.data.extend_from_slice(data);
        self.tsn = tsn;
        self.flags |= flags & super::chunk::data_flags::END;
        self.charge += charge;
    }
    fn begin(&self) -> bool {
        self.flags & super::chunk::data_flags::BEGIN != 0
    }
    fn end(&self) -> bool {
        self.flags & super::chunk::data_flags::END != 0
    }
    fn unordered(&self) -> bool {
        self.flags & super::chunk::data_flags::UNORDERED != 0
    }
}

/// What became of an arriving DATA chunk.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// New, accepted (it will be acknowledged).
    New,
    /// Seen before; reported as a duplicate in the next SACK.
    Duplicate,
    /// Not accepted (no window, or out of range); not acknowledged, the sender will retransmit.
    Dropped,
}

/// Received-TSN tracking and reassembly state of one association. Exists only while there are gaps,
/// duplicates to report or undelivered fragments.
#[derive(Default)]
pub(crate) struct RecvQueue {
    /// Inclusive TSN ranges received above the cumulative ack, sorted, disjoint, not adjacent to each other.
    gaps: Vec<(Tsn, Tsn)>,
    dups: Vec<Tsn>,
    chunks: Vec<RxChunk>,
    buffered: usize,
}

impl RecvQueue {
    /// Whether an idle queue's buffers are small enough to be worth keeping for reuse.
    pub fn reusable(&self) -> bool {
        self.is_idle() && self.gaps.capacity() <= 8 && self.chunks.capacity() <= 64
    }

    /// Nothing to report and nothing buffered: the queue can be freed.
    pub fn is_idle(&self) -> bool {
        self.gaps.is_empty() && self.dups.is_empty() && self.chunks.is_empty()
    }

    /// Whether TSNs above the cumulative ack have arrived (a SACK should go out at once, §6.7).
    pub fn has_gaps(&self) -> bool {
        !self.gaps.is_empty()
    }

    /// Bytes charged against the window.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// The window to advertise.
    pub fn a_rwnd(&self, rwnd: u32) -> u32 {
        rwnd.saturating_sub(self.buffered as u32)
    }

    /// Gap blocks as offsets from `cum`, for a SACK.
    pub fn gap_blocks(&self, cum: Tsn, out: &mut [(u16, u16); MAX_GAP_RANGES]) -> usize {
        for (i, &(s, e)) in self.gaps.iter().enumerate() {
            out[i] = (s.distance(cum) as u16, e.distance(cum) as u16);
        }
        self.gaps.len()
    }

    /// Takes the duplicate TSNs to report.
    pub fn take_dups(&mut self, out: &mut [Tsn; MAX_DUPS]) -> usize {
        let n = self.dups.len();
        out[..n].copy_from_slice(&self.dups);
        self.dups.clear();
        n
    }

    fn is_received(&self, cum: Tsn, t: Tsn) -> bool {
        t.le(cum) || self.gaps.iter().any(|&(s, e)| s.le(t) && t.le(e))
    }

    fn note_dup(&mut self, t: Tsn) {
        if self.dups.len() < MAX_DUPS {
            self.dups.push(t);
        }
    }

    /// Decides whether TSN `t` with `payload` bytes is accepted and, if so, records it as received (advancing
    /// `*cum` over any gaps it closes).
    pub fn accept(&mut self, cum: &mut Tsn, t: Tsn, payload: usize, rwnd: u32) -> Verdict {
        if self.is_received(*cum, t) {
            self.note_dup(t);
            return Verdict::Duplicate;
        }
        let off = t.distance(*cum);
        if off <= 0 || off > i32::from(u16::MAX) {
            return Verdict::Dropped;
        }
        let cost = payload + CHUNK_OVERHEAD;
        let rwnd = rwnd as usize;
        let highest = self.gaps.last().map_or(*cum, |g| g.1);
        // Over the window, only a chunk filling a hole below the highest TSN is taken, up to a hard cap, so a
        // well-behaved sender's retransmissions always get through (§6.2) and a hostile one cannot grow us.
        if self.buffered + cost > rwnd && !(t.lt(highest) && self.buffered + cost <= 2 * rwnd) {
            return Verdict::Dropped;
        }
        if off == 1 {
            *cum = t;
            while let Some(&(s, e)) = self.gaps.first() {
                if s != cum.next() {
                    break;
                }
                *cum = e;
                self.gaps.remove(0);
            }
            return Verdict::New;
        }
        // Insert into the sorted range list, merging with neighbours.
        let i = self.gaps.partition_point(|&(_, e)| e.lt(t));
        let joins_prev = i > 0 && self.gaps[i - 1].1.next() == t;
        let joins_next = i < self.gaps.len() && t.next() == self.gaps[i].0;
        match (joins_prev, joins_next) {
            (true, true) => {
                self.gaps[i - 1].1 = self.gaps[i].1;
                self.gaps.remove(i);
            }
            (true, false) => self.gaps[i - 1].1 = t,
            (false, true) => self.gaps[i].0 = t,
            (false, false) => {
                if self.gaps.len() >= MAX_GAP_RANGES {
                    return Verdict::Dropped;
                }
                self.gaps.insert(i, (t, t));
            }
        }
        Verdict::New
    }

    /// Buffers an accepted DATA chunk and delivers every message it completes, in order per stream.
    /// `next_ssn` holds the next expected SSN per inbound stream.
    pub fn store(
        &mut self,
        d: &Data<'_>,
        next_ssn: &mut [u16],
        deliver: &mut impl FnMut(Delivered),
    ) {
        use super::chunk::data_flags::{BEGIN, END, UNORDERED};
        // The common case: a whole message, nothing buffered, and its turn on the stream. Straight out.
        if d.flags & (BEGIN | END) == BEGIN | END && self.chunks.is_empty() {
            let unordered = d.flags & UNORDERED != 0;
            let slot = usize::from(d.stream);
            if unordered || next_ssn.get(slot) == Some(&d.ssn) {
                if !unordered {
                    next_ssn[slot] = d.ssn.wrapping_add(1);
                }
                deliver(Delivered {
                    stream: d.stream,
                    unordered,
                    ppid: d.ppid,
                    data: d.payload.to_vec(),
                });
                return;
            }
        }
        self.store_buffered(d, next_ssn, deliver);
    }

    /// `store` for a fragment, or a message that must wait its turn: buffer it (joined to its neighbours)
    /// and deliver what it completes. Kept out of line so the common case above stays small where it is
    /// inlined.
    #[inline(never)]
    fn store_buffered(
        &mut self,
        d: &Data<'_>,
        next_ssn: &mut [u16],
        deliver: &mut impl FnMut(Delivered),
    ) {
        let charge = d.payload.len() + CHUNK_OVERHEAD;
        self.buffered += charge;
        // Runs are disjoint and `accept` let no received TSN through: this is where `d` goes.
        let mut i = self.chunks.partition_point(|x| x.tsn.lt(d.tsn));
        if i > 0 && self.chunks[i - 1].continued_by(d.tsn, d.stream, d.flags) {
            i -= 1;
            self.chunks[i].extend(d.tsn, d.flags, d.payload, charge);
        } else {
            self.chunks.insert(
                i,
                RxChunk {
                    first: d.tsn,
                    tsn: d.tsn,
                    stream: d.stream,
                    ssn: d.ssn,
                    flags: d.flags,
                    ppid: d.ppid,
                    data: d.payload.to_vec(),
                    charge,
                },
            );
        }
        // A fragment that fills a hole joins the run after it too.
        if let Some(next) = self.chunks.get(i + 1)
            && self.chunks[i].continued_by(next.first, next.stream, next.flags)
        {
            let next = self.chunks.remove(i + 1);
            self.chunks[i].extend(next.tsn, next.flags, &next.data, next.charge);
        }
        if let Some((first, last)) = self.complete_around(i) {
            let head = &self.chunks[first];
            let (stream, ssn, unordered) = (head.stream, head.ssn, head.unordered());
            let slot = usize::from(stream);
            if unordered {
                let m = self.take(first, last);
                deliver(m);
            } else if slot < next_ssn.len() && ssn == next_ssn[slot] {
                let m = self.take(first, last);
                next_ssn[slot] = ssn.wrapping_add(1);
                deliver(m);
                self.drain_stream(stream, next_ssn, deliver);
            } else if slot < next_ssn.len() && ssn_lt(ssn, next_ssn[slot]) {
                // An SSN already delivered: a broken sender. Drop it rather than hold it forever.
                let _ = self.take(first, last);
            }
        }
    }

    /// Delivers buffered complete messages of `stream` that are next in sequence.
    pub fn drain_stream(
        &mut self,
        stream: u16,
        next_ssn: &mut [u16],
        deliver: &mut impl FnMut(Delivered),
    ) {
        let slot = usize::from(stream);
        loop {
            let want = next_ssn[slot];
            let Some(first) = self
                .chunks
                .iter()
                .position(|c| c.stream == stream && !c.unordered() && c.begin() && c.ssn == want)
            else {
                return;
            };
            let Some(last) = self.complete_from(first) else {
                return;
            };
            let m = self.take(first, last);
            next_ssn[slot] = want.wrapping_add(1);
            deliver(m);
        }
    }

    /// The index range of a complete message containing chunk `i`, if all its fragments are here.
    fn complete_around(&self, i: usize) -> Option<(usize, usize)> {
        let mut first = i;
        while !self.chunks[first].begin() {
            if first == 0 || self.chunks[first - 1].tsn.next() != self.chunks[first].first {
                return None;
            }
            first -= 1;
        }
        self.complete_from(first).map(|last| (first, last))
    }

    /// From a BEGIN chunk at `first`, the index of its END chunk if every fragment in between is here and
    /// consistent (same stream and ordering; a broken sender's mismatch leaves the message incomplete).
    fn complete_from(&self, first: usize) -> Option<usize> {
        let head = &self.chunks[first];
        let mut k = first;
        loop {
            let c = &self.chunks[k];
            if c.stream != head.stream
                || c.unordered() != head.unordered()
                || (k > first && c.begin())
            {
                return None;
            }
            if c.end() {
                return Some(k);
            }
            let next = self.chunks.get(k + 1)?;
            if next.first != c.tsn.next() {
                return None;
            }
            k += 1;
        }
    }

    fn take(&mut self, first: usize, last: usize) -> Delivered {
        let head = &self.chunks[first];
        let (stream, unordered, ppid) = (head.stream, head.unordered(), head.ppid);
        let data = if first == last {
            let c = self.chunks.remove(first);
            self.buffered -= c.charge;
            c.data
        } else {
            let len: usize = self.chunks[first..=last].iter().map(|c| c.data.len()).sum();
            let mut data = Vec::with_capacity(len);
            for c in self.chunks.drain(first..=last) {
                self.buffered -= c.charge;
                data.extend_from_slice(&c.data);
            }
            data
        };
        Delivered {
            stream,
            unordered,
            ppid,
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sctp::chunk::data_flags::{BEGIN, END, UNORDERED};

    fn data(tsn: u32, stream: u16, ssn: u16, flags: u8, payload: &[u8]) -> Data<'_> {
        Data {
            flags,
            tsn: Tsn(tsn),
            stream,
            ssn,
            ppid: 0,
            payload,
        }
    }

    #[test]
    fn tracks_gaps_and_duplicates() {
        let mut q = RecvQueue::default();
        let mut cum = Tsn(9);
        assert_eq!(q.accept(&mut cum, Tsn(12), 1, 10_000), Verdict::New);
        assert_eq!(q.accept(&mut cum, Tsn(14), 1, 10_000), Verdict::New);
        assert_eq!(q.accept(&mut cum, Tsn(13), 1, 10_000), Verdict::New);
        let mut g = [(0, 0); MAX_GAP_RANGES];
        let n = q.gap_blocks(cum, &mut g);
        assert_eq!(&g[..n], &[(3, 5)]);
        assert_eq!(q.accept(&mut cum, Tsn(13), 1, 10_000), Verdict::Duplicate);
        assert_eq!(q.accept(&mut cum, Tsn(9), 1, 10_000), Verdict::Duplicate);
        assert_eq!(q.accept(&mut cum, Tsn(10), 1, 10_000), Verdict::New);
        assert_eq!(q.accept(&mut cum, Tsn(11), 1, 10_000), Verdict::New);
        assert_eq!(cum, Tsn(14));
        assert!(!q.has_gaps());
        let mut d = [Tsn(0); MAX_DUPS];
        assert_eq!(q.take_dups(&mut d), 2);
        assert!(q.is_idle());
    }

    impl RecvQueue {
        /// `accept` for the TSN `off` past the current cumulative ack.
        fn accept_at(&mut self, cum: &mut Tsn, off: u32, payload: usize, rwnd: u32) -> Verdict {
            let t = cum.add(off);
            self.accept(cum, t, payload, rwnd)
        }
    }

    #[test]
    fn bounds_range_and_window() {
        let mut q = RecvQueue::default();
        let mut cum = Tsn(u32::MAX - 1);
        assert_eq!(q.accept_at(&mut cum, 70_000, 1, 10_000), Verdict::Dropped);
        assert_eq!(q.accept_at(&mut cum, 3, 5000, 10_000), Verdict::New);
        q.buffered = 9_000;
        assert_eq!(
            q.accept_at(&mut cum, 9, 5000, 10_000),
            Verdict::Dropped,
            "beyond highest, no window"
        );
        assert_eq!(
            q.accept_at(&mut cum, 1, 5000, 10_000),
            Verdict::New,
            "fills a hole"
        );
        for i in 0..MAX_GAP_RANGES as u32 {
            q.accept_at(&mut cum, 10 + 2 * i, 0, u32::MAX / 4);
        }
        assert_eq!(q.gaps.len(), MAX_GAP_RANGES);
        assert_eq!(
            q.accept_at(&mut cum, 1000, 0, u32::MAX / 4),
            Verdict::Dropped
        );
    }

    #[test]
    fn reassembles_and_orders() {
        let mut q = RecvQueue::default();
        let mut next = [0u16; 2];
        let mut got = Vec::new();
        let mut deliver = |m: Delivered| got.push((m.stream, m.data));
        // Stream 1: message ssn 1 (single chunk) arrives before ssn 0 (three fragments, out of order).
        q.store(
            &data(5, 1, 1, BEGIN | END, b"second"),
            &mut next,
            &mut deliver,
        );
        q.store(&data(3, 1, 0, 0, b"b"), &mut next, &mut deliver);
        q.store(&data(4, 1, 0, END, b"c"), &mut next, &mut deliver);
        q.store(
            &data(9, 0, 0, BEGIN | END | UNORDERED, b"u"),
            &mut next,
            &mut deliver,
        );
        q.store(&data(2, 1, 0, BEGIN, b"a"), &mut next, &mut deliver);
        assert_eq!(
            got,
            vec![
                (0, b"u".to_vec()),
                (1, b"abc".to_vec()),
                (1, b"second".to_vec())
            ]
        );
        assert_eq!(next, [0, 2]);
        assert_eq!(q.buffered(), 0);
        assert!(q.chunks.is_empty());
    }

    #[test]
    fn fragments_join_into_one_run_as_they_arrive() {
        let mut q = RecvQueue::default();
        let mut next = [0u16; 1];
        let got = std::cell::RefCell::new(Vec::new());
        let mut deliver = |m: Delivered| got.borrow_mut().push(m.data);
        q.store(&data(10, 0, 0, BEGIN, b"ab"), &mut next, &mut deliver);
        q.store(&data(11, 0, 0, 0, b"cd"), &mut next, &mut deliver);
        // A hole at 12; 13 starts a run of its own, which 12 then joins to the first.
        q.store(&data(13, 0, 0, 0, b"gh"), &mut next, &mut deliver);
        assert_eq!(q.chunks.len(), 2);
        assert_eq!((q.chunks[0].first, q.chunks[0].tsn), (Tsn(10), Tsn(11)));
        q.store(&data(12, 0, 0, 0, b"ef"), &mut next, &mut deliver);
        assert_eq!(q.chunks.len(), 1, "one run from 10 to 13");
        assert_eq!(q.chunks[0].data, b"abcdefgh");
        assert_eq!(
            q.buffered(),
            4 * (2 + CHUNK_OVERHEAD),
            "charged per fragment"
        );
        assert!(got.borrow().is_empty());
        q.store(&data(14, 0, 0, END, b"i"), &mut next, &mut deliver);
        assert_eq!(*got.borrow(), vec![b"abcdefghi".to_vec()]);
        assert_eq!(q.buffered(), 0);
        assert!(q.chunks.is_empty());
        // A new message's BEGIN never joins the one before it.
        q.store(&data(15, 0, 1, BEGIN, b"x"), &mut next, &mut deliver);
        q.store(&data(16, 0, 2, BEGIN | END, b"y"), &mut next, &mut deliver);
        assert_eq!(q.chunks.len(), 2);
    }

    #[test]
    fn inconsistent_fragments_stay_incomplete() {
        let mut q = RecvQueue::default();
        let mut next = [0u16; 2];
        let mut n = 0;
        q.store(&data(1, 0, 0, BEGIN, b"a"), &mut next, &mut |_| n += 1);
        q.store(&data(2, 1, 0, END, b"b"), &mut next, &mut |_| n += 1);
        assert_eq!(n, 0);
        assert_eq!(q.buffered(), 2 + 2 * CHUNK_OVERHEAD);
    }
}
