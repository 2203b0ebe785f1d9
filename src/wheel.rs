//! A hashed timer wheel with 1 ms ticks: O(1) arm and cancel, cheap "what is next", no clock reads.
//!
//! Used by the reactor for its own timers and inside each sans-IO core (one wheel per SCTP endpoint, one timer
//! per association, 100 000+ live at once). It is a plain data structure: time comes in as an argument.
//!
//! # Layout
//!
//! - **Level 0:** [`SLOTS`] slots of one millisecond each (≈ 4.1 s ahead of the cursor). Each slot is an
//!   intrusive doubly linked list of nodes, and an occupancy bitmap (`[u64; 64]`) finds the next non-empty slot
//!   in at most 65 word reads.
//! - **Overflow:** everything further out sits in one unsorted list with a cached *lower bound* of its earliest
//!   deadline. When the cursor comes within half a span of that bound, the whole list is walked once and every
//!   entry that now fits moves to level 0. After a walk the remaining entries are at least a full span ahead, so
//!   a walk happens at most once per half span (≈ 2 s) of cursor movement: with 100 000 heartbeats 30 s out, that
//!   is 100 000 node visits every 2 s, not per tick.
//! - **Nodes** live in a [`Slab`] and link to each other by `u32` keys, so arming and cancelling never search,
//!   and a cancelled timer leaves nothing behind.
//!
//! # Time
//!
//! Deadlines are rounded **up** to the next whole millisecond when armed, so a timer fires at most 1 ms late and
//! never early, and all entries of a level-0 slot share one exact deadline. A deadline before the wheel's
//! cursor (the latest time it was polled with) is treated as "now": it fires on the next
//! [`TimerWheel::poll_expired`]. Within one millisecond, timers armed less than a span ahead fire in the order
//! they were armed; one that came through the overflow list may come before or after them. Either way the order
//! depends only on the sequence of calls, so simulations replay exactly.
//!
//! The `now` passed to [`TimerWheel::poll_expired`] must not go backwards. If it does, nothing breaks: the wheel
//! keeps its cursor and simply finds nothing due until time catches up.
//!
//! # Panics and allocation
//!
//! [`TimerWheel::arm`] panics if more than `u32::MAX - 1` timers are live at once (keys are `u32`). Nothing else
//! panics. The slot heads and tails (32 KiB) are allocated once in [`TimerWheel::new`]; the node slab grows like a
//! `Vec` and reuses freed nodes, so a wheel at steady state does not allocate.

use core::fmt;
use core::num::NonZeroU64;

use slab::Slab;

use crate::time::Instant;

/// Number of one-millisecond slots in level 0; deadlines up to this many ms past the cursor go straight in.
pub const SLOTS: usize = 4096;

const SPAN: u64 = SLOTS as u64;
const MASK: u64 = SPAN - 1;
const WORDS: usize = SLOTS / 64;
/// The overflow list is walked once its lower bound is this close to the cursor. Half a span leaves the other
/// half as hysteresis, so walks are rare, while still moving entries in well before they are due.
const CASCADE_LEAD: u64 = SPAN / 2;
/// "No node" in the intrusive lists; also why keys must stay below `u32::MAX`.
const NIL: u32 = u32::MAX;

const _: () = assert!(SLOTS.is_power_of_two() && SLOTS.is_multiple_of(64));

/// Handle to one armed timer, returned by [`TimerWheel::arm`] and used to cancel or inspect it.
///
/// It packs the node's slab key with a generation number, so a handle whose timer has fired or been cancelled
/// stays harmless even after the node is reused: every operation on it sees a generation mismatch and does
/// nothing. `Option<TimerId>` is 8 bytes.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId(NonZeroU64);

impl TimerId {
    fn new(key: u32, generation: u32) -> TimerId {
        // The generation is never zero (see `TimerWheel::bump_generation`), so neither is the packed value.
        let bits = (u64::from(generation) << 32) | u64::from(key);
        TimerId(NonZeroU64::new(bits).expect("timer generations are never zero"))
    }

    fn key(self) -> usize {
        (self.0.get() & 0xFFFF_FFFF) as usize
    }

    fn generation(self) -> u32 {
        (self.0.get() >> 32) as u32
    }
}

impl fmt::Debug for TimerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TimerId({}#{})", self.key(), self.generation())
    }
}

/// Which intrusive list a node is on.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum List {
    Slot(usize),
    Overflow,
}

struct Node<T> {
    payload: T,
    /// Exact deadline in whole milliseconds since the epoch, already rounded up and clamped to the cursor.
    deadline: u64,
    prev: u32,
    next: u32,
    generation: u32,
    in_overflow: bool,
}

/// A timer wheel of 1 ms granularity holding payloads of type `T`; see the [module docs](self) for the design.
pub struct TimerWheel<T> {
    nodes: Slab<Node<T>>,
    heads: Box<[u32]>,
    tails: Box<[u32]>,
    /// Bit `i` is set exactly when slot `i` is non-empty.
    occupied: [u64; WORDS],
    overflow_head: u32,
    overflow_tail: u32,
    /// A lower bound (exact right after a walk) of the earliest overflow deadline, in ms; `u64::MAX` when the
    /// overflow is empty. Cancelling does not raise it: a stale bound only causes one early walk. It is always
    /// more than `CASCADE_LEAD` past the cursor (entries go in at least `SPAN` ahead, and the cursor stops for a
    /// walk when it gets that close), so `next_deadline` never reports a stale bound at or before `now`.
    overflow_min: u64,
    /// Milliseconds; no entry has an earlier deadline, and it never passes the latest `now` polled with.
    cursor: u64,
    next_generation: u32,
}

impl<T> Default for TimerWheel<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for TimerWheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerWheel")
            .field("len", &self.len())
            .field("cursor_ms", &self.cursor)
            .field("next_deadline", &self.next_deadline())
            .finish()
    }
}

/// Whole milliseconds at or after `t`: rounding up is what guarantees a timer never fires early.
fn ceil_millis(t: Instant) -> u64 {
    let us = t.as_micros();
    us / 1000 + u64::from(!us.is_multiple_of(1000))
}

impl<T> TimerWheel<T> {
    /// An empty wheel whose cursor starts at the epoch.
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An empty wheel with room for `capacity` live timers before the node slab has to grow.
    pub fn with_capacity(capacity: usize) -> Self {
        TimerWheel {
            nodes: Slab::with_capacity(capacity),
            heads: vec![NIL; SLOTS].into_boxed_slice(),
            tails: vec![NIL; SLOTS].into_boxed_slice(),
            occupied: [0; WORDS],
            overflow_head: NIL,
            overflow_tail: NIL,
            overflow_min: u64::MAX,
            cursor: 0,
            next_generation: 1,
        }
    }

    /// Number of live (armed, not yet fired or cancelled) timers.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when no timer is live.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Arms a timer that fires once `deadline` (rounded up to the next whole millisecond) has passed, carrying
    /// `payload`. A deadline in the past fires on the next [`poll_expired`](Self::poll_expired). O(1).
    ///
    /// # Panics
    ///
    /// If `u32::MAX` timers are already live.
    pub fn arm(&mut self, deadline: Instant, payload: T) -> TimerId {
        let deadline = ceil_millis(deadline).max(self.cursor);
        let generation = self.bump_generation();
        let entry = self.nodes.vacant_entry();
        let key = u32::try_from(entry.key())
            .ok()
            .filter(|&k| k != NIL)
            .expect("more than u32::MAX - 1 live timers");
        entry.insert(Node {
            payload,
            deadline,
            prev: NIL,
            next: NIL,
            generation,
            in_overflow: false,
        });
        self.place(key, deadline);
        TimerId::new(key, generation)
    }

    /// Cancels a live timer and returns its payload; returns `None` (and changes nothing) if `id` has already
    /// fired or been cancelled, even if its node has since been reused. O(1).
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        let key = self.live_key(id)?;
        self.unlink(key);
        Some(self.nodes.remove(key as usize).payload)
    }

    /// Moves a live timer to a new deadline, keeping its id and payload; returns false for a stale `id`.
    ///
    /// Cheaper than cancel + arm (no slab traffic), which matters for timers that are pushed back on every
    /// packet, such as an association's retransmission or heartbeat timer. O(1).
    pub fn reschedule(&mut self, id: TimerId, deadline: Instant) -> bool {
        let Some(key) = self.live_key(id) else {
            return false;
        };
        self.unlink(key);
        let deadline = ceil_millis(deadline).max(self.cursor);
        self.nodes[key as usize].deadline = deadline;
        self.place(key, deadline);
        true
    }

    /// The effective deadline of a live timer (rounded up to whole ms, and no earlier than the cursor for a
    /// timer armed in the past), or `None` for a stale `id`.
    pub fn deadline(&self, id: TimerId) -> Option<Instant> {
        let key = self.live_key(id)?;
        Some(Instant::from_millis(self.nodes[key as usize].deadline))
    }

    /// When the wheel next needs [`poll_expired`](Self::poll_expired): the exact earliest deadline, or the
    /// overflow list's lower bound if that is earlier (it then only leads to a poll that finds nothing).
    ///
    /// Once `poll_expired(now)` has returned `None`, this is `None` or later than `now`, so a loop that sleeps
    /// until it cannot spin. Costs a bitmap scan (at most 65 words), never a walk over entries.
    pub fn next_deadline(&self) -> Option<Instant> {
        let level0 = self.find_occupied(self.cursor);
        let overflow = (self.overflow_head != NIL).then_some(self.overflow_min);
        let ms = match (level0, overflow) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(Instant::from_millis(ms))
    }

    /// Removes and returns one timer whose deadline is at or before `now`, earliest deadline first (arming
    /// order within a millisecond), or `None` once nothing more is due. Call it until `None`.
    ///
    /// `now` must be monotonic across calls. Skipping time is cheap: empty stretches are crossed via the bitmap,
    /// and overflow entries are moved into level 0 as the cursor approaches them.
    pub fn poll_expired(&mut self, now: Instant) -> Option<(TimerId, T)> {
        let now_ms = now.as_millis();
        loop {
            if self.cursor > now_ms {
                // Every deadline is at or after the cursor, which is later than `now`: time went backwards.
                return None;
            }
            let slot = (self.cursor & MASK) as usize;
            let head = self.heads[slot];
            if head != NIL {
                debug_assert_eq!(self.nodes[head as usize].deadline, self.cursor);
                self.unlink(head);
                let node = self.nodes.remove(head as usize);
                return Some((TimerId::new(head, node.generation), node.payload));
            }

            // Nothing at the cursor: move it to whichever comes first of `now`, the next occupied slot, and the
            // point where the overflow must be walked.
            let mut target = now_ms;
            if let Some(next) = self.find_occupied(self.cursor) {
                target = target.min(next);
            }
            let mut walk = false;
            if self.overflow_head != NIL {
                let trigger = self.overflow_min.saturating_sub(CASCADE_LEAD);
                if trigger <= target {
                    target = trigger.max(self.cursor);
                    walk = true;
                }
            }
            if !walk && target == self.cursor {
                return None;
            }
            self.cursor = target;
            if walk {
                // Moves everything below cursor + SPAN and recomputes the bound exactly, so the next trigger is
                // at least CASCADE_LEAD ahead of the cursor: this loop always makes progress.
                self.cascade();
            }
        }
    }

    fn bump_generation(&mut self) -> u32 {
        let generation = self.next_generation;
        // Zero is skipped so that `TimerId` can be `NonZeroU64`. A stale id is only mistaken for a live one if
        // exactly a multiple of 2^32 - 1 timers were armed in between *and* its node was reused.
        self.next_generation = self.next_generation.checked_add(1).unwrap_or(1);
        generation
    }

    fn live_key(&self, id: TimerId) -> Option<u32> {
        let node = self.nodes.get(id.key())?;
        // `id.key()` fits in u32 by construction.
        (node.generation == id.generation()).then_some(id.key() as u32)
    }

    /// Links an unlinked node into the list its `deadline` (ms, ≥ cursor) belongs to.
    fn place(&mut self, key: u32, deadline: u64) {
        // Level 0 holds exactly [cursor, cursor + SPAN): within that range a slot maps to one millisecond.
        if deadline < self.cursor + SPAN {
            self.nodes[key as usize].in_overflow = false;
            self.push_back(List::Slot((deadline & MASK) as usize), key);
        } else {
            self.overflow_min = self.overflow_min.min(deadline);
            self.nodes[key as usize].in_overflow = true;
            self.push_back(List::Overflow, key);
        }
    }

    /// Walks the overflow list once at the current cursor, moving every entry that now fits into level 0 (in
    /// list order) and recomputing the bound exactly.
    fn cascade(&mut self) {
        let horizon = self.cursor + SPAN;
        let mut min = u64::MAX;
        let mut key = self.overflow_head;
        while key != NIL {
            let node = &self.nodes[key as usize];
            let (next, deadline) = (node.next, node.deadline);
            if deadline < horizon {
                self.unlink(key);
                self.nodes[key as usize].in_overflow = false;
                self.push_back(List::Slot((deadline & MASK) as usize), key);
            } else {
                min = min.min(deadline);
            }
            key = next;
        }
        self.overflow_min = min;
    }

    /// The deadline (ms) of the first non-empty level-0 slot at or after `from`, which must be the cursor.
    fn find_occupied(&self, from: u64) -> Option<u64> {
        let start = (from & MASK) as usize;
        let (w0, b0) = (start / 64, start % 64);
        let at = |word: usize, bits: u64| {
            let slot = word * 64 + bits.trailing_zeros() as usize;
            // Level 0 only holds deadlines in [cursor, cursor + SPAN), so the circular distance is the offset.
            from + ((slot + SLOTS - start) % SLOTS) as u64
        };
        let first = self.occupied[w0] & (u64::MAX << b0);
        if first != 0 {
            return Some(at(w0, first));
        }
        for i in 1..=WORDS {
            let w = (w0 + i) % WORDS;
            let mut bits = self.occupied[w];
            if i == WORDS {
                // Back at the starting word: only the slots before `start` are left (they are ~SPAN ahead).
                bits &= (1u64 << b0).wrapping_sub(1);
            }
            if bits != 0 {
                return Some(at(w, bits));
            }
        }
        None
    }

    fn ends_mut(&mut self, list: List) -> (&mut u32, &mut u32) {
        match list {
            List::Slot(i) => (&mut self.heads[i], &mut self.tails[i]),
            List::Overflow => (&mut self.overflow_head, &mut self.overflow_tail),
        }
    }

    fn list_of(&self, key: u32) -> List {
        let node = &self.nodes[key as usize];
        if node.in_overflow {
            List::Overflow
        } else {
            List::Slot((node.deadline & MASK) as usize)
        }
    }

    fn push_back(&mut self, list: List, key: u32) {
        let (_, tail) = self.ends_mut(list);
        let old_tail = *tail;
        *tail = key;
        {
            let node = &mut self.nodes[key as usize];
            node.prev = old_tail;
            node.next = NIL;
        }
        if old_tail == NIL {
            *self.ends_mut(list).0 = key;
        } else {
            self.nodes[old_tail as usize].next = key;
        }
        if let List::Slot(i) = list {
            self.occupied[i / 64] |= 1 << (i % 64);
        }
    }

    fn unlink(&mut self, key: u32) {
        let list = self.list_of(key);
        let (prev, next) = {
            let node = &mut self.nodes[key as usize];
            let links = (node.prev, node.next);
            node.prev = NIL;
            node.next = NIL;
            links
        };
        if prev == NIL {
            *self.ends_mut(list).0 = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next == NIL {
            *self.ends_mut(list).1 = prev;
        } else {
            self.nodes[next as usize].prev = prev;
        }
        if prev == NIL && next == NIL {
            match list {
                List::Slot(i) => self.occupied[i / 64] &= !(1 << (i % 64)),
                List::Overflow => self.overflow_min = u64::MAX,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ms(v: u64) -> Instant {
        Instant::from_millis(v)
    }

    fn us(v: u64) -> Instant {
        Instant::from_micros(v)
    }

    /// Drains everything due at `now`, as payloads.
    fn drain<T>(w: &mut TimerWheel<T>, now: Instant) -> Vec<T> {
        std::iter::from_fn(|| w.poll_expired(now).map(|(_, p)| p)).collect()
    }

    /// Tiny seeded PRNG so failures replay exactly (xorshift64*).
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn timer_id_is_small_and_option_is_free() {
        assert_eq!(size_of::<TimerId>(), 8);
        assert_eq!(size_of::<Option<TimerId>>(), 8);
    }

    #[test]
    fn empty_wheel() {
        let mut w: TimerWheel<()> = TimerWheel::new();
        assert!(w.is_empty());
        assert_eq!(w.len(), 0);
        assert_eq!(w.next_deadline(), None);
        assert!(w.poll_expired(ms(1_000_000)).is_none());
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn deadlines_round_up_to_whole_milliseconds() {
        let mut w = TimerWheel::new();
        let a = w.arm(us(1_500), 'a');
        let b = w.arm(us(3_000), 'b');
        let c = w.arm(us(3_001), 'c');
        assert_eq!(w.deadline(a), Some(ms(2)));
        assert_eq!(w.deadline(b), Some(ms(3)));
        assert_eq!(w.deadline(c), Some(ms(4)));
        assert_eq!(w.next_deadline(), Some(ms(2)));
        // Never early: 1 µs before the rounded deadline nothing fires, at it the timer does.
        assert!(w.poll_expired(us(1_999)).is_none());
        assert_eq!(drain(&mut w, us(2_000)), vec!['a']);
        assert_eq!(drain(&mut w, us(3_999)), vec!['b']);
        assert_eq!(w.next_deadline(), Some(ms(4)));
        assert_eq!(drain(&mut w, us(4_000)), vec!['c']);
        assert!(w.is_empty());
    }

    #[test]
    fn fires_in_deadline_order_and_arming_order_within_a_millisecond() {
        let mut w = TimerWheel::new();
        w.arm(ms(30), 3);
        w.arm(us(10_200), 1);
        w.arm(ms(20), 2);
        w.arm(us(10_900), 11); // same rounded millisecond as `1`, armed later
        w.arm(ms(5), 0);
        assert_eq!(w.len(), 5);
        assert_eq!(drain(&mut w, ms(100)), vec![0, 1, 11, 2, 3]);
        assert!(w.is_empty());
    }

    #[test]
    fn deadline_in_the_past_fires_on_next_poll() {
        let mut w = TimerWheel::new();
        assert!(w.poll_expired(ms(500)).is_none());
        let id = w.arm(ms(100), "late");
        // Clamped to the cursor, so it is due now rather than lost behind the cursor.
        assert_eq!(w.deadline(id), Some(ms(500)));
        assert_eq!(w.next_deadline(), Some(ms(500)));
        assert_eq!(drain(&mut w, ms(500)), vec!["late"]);
        // Same with `Instant::ZERO`.
        w.arm(Instant::ZERO, "zero");
        assert_eq!(drain(&mut w, us(500_100)), vec!["zero"]);
    }

    #[test]
    fn cancel_returns_payload_and_stale_ids_do_nothing() {
        let mut w = TimerWheel::new();
        let a = w.arm(ms(10), "a");
        assert_eq!(w.cancel(a), Some("a"));
        assert_eq!(w.cancel(a), None);
        assert_eq!(w.deadline(a), None);
        assert!(!w.reschedule(a, ms(20)));
        // `b` reuses a's slab node; a's old id must not reach it.
        let b = w.arm(ms(10), "b");
        assert_eq!(a.key(), b.key());
        assert_ne!(a, b);
        assert_eq!(w.cancel(a), None);
        assert_eq!(w.deadline(b), Some(ms(10)));
        // A fired id is stale too.
        assert_eq!(w.poll_expired(ms(10)), Some((b, "b")));
        let c = w.arm(ms(11), "c");
        assert_eq!(w.cancel(b), None);
        assert_eq!(w.len(), 1);
        assert_eq!(drain(&mut w, ms(11)), vec!["c"]);
        assert_eq!(w.cancel(c), None);
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn cancel_from_middle_head_and_tail_of_a_slot() {
        let mut w = TimerWheel::new();
        let ids: Vec<_> = (0..5).map(|i| w.arm(ms(7), i)).collect();
        assert_eq!(w.cancel(ids[2]), Some(2));
        assert_eq!(w.cancel(ids[0]), Some(0));
        assert_eq!(w.cancel(ids[4]), Some(4));
        assert_eq!(drain(&mut w, ms(7)), vec![1, 3]);
        // The slot's bitmap bit is cleared again.
        assert_eq!(w.next_deadline(), None);
        assert_eq!(w.occupied, [0; WORDS]);
    }

    #[test]
    fn far_deadlines_go_through_the_overflow() {
        let mut w = TimerWheel::new();
        let hour = 3_600_000;
        let day = 24 * hour;
        w.arm(ms(day), "day");
        w.arm(ms(10_000), "10s");
        w.arm(ms(hour), "hour");
        w.arm(ms(4_095), "edge");
        w.arm(ms(4_096), "past-edge");
        let never = w.arm(Instant::NEVER, "never");
        assert_eq!(w.next_deadline(), Some(ms(4_095)));
        assert_eq!(drain(&mut w, ms(4_095)), vec!["edge"]);
        assert_eq!(w.next_deadline(), Some(ms(4_096)));
        assert_eq!(drain(&mut w, ms(9_999)), vec!["past-edge"]);
        assert_eq!(w.next_deadline(), Some(ms(10_000)));
        assert_eq!(drain(&mut w, ms(10_000)), vec!["10s"]);
        // One big jump across many spans.
        assert_eq!(drain(&mut w, ms(hour - 1)), Vec::<&str>::new());
        assert_eq!(w.next_deadline(), Some(ms(hour)));
        assert_eq!(drain(&mut w, ms(day)), vec!["hour", "day"]);
        assert_eq!(w.len(), 1);
        assert!(w.poll_expired(Instant::NEVER).is_none());
        assert_eq!(w.cancel(never), Some("never"));
    }

    #[test]
    fn stale_overflow_bound_never_makes_a_busy_loop() {
        let mut w = TimerWheel::new();
        let early = w.arm(ms(10_000), 1);
        w.arm(ms(20_000), 2);
        assert_eq!(w.cancel(early), Some(1));
        // The bound may still say 10 s (cheap cancel); polling there must then push it past `now`.
        let nd = w.next_deadline().unwrap();
        assert!(nd <= ms(20_000));
        assert!(w.poll_expired(nd).is_none());
        let nd2 = w.next_deadline().unwrap();
        assert!(nd2 > nd, "{nd2:?} must be past {nd:?}");
        assert_eq!(nd2, ms(20_000));
        // Emptying the overflow by cancel leaves no deadline at all.
        let mut w = TimerWheel::new();
        let far = w.arm(ms(60_000), ());
        w.cancel(far);
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn reschedule_keeps_id_and_moves_between_levels() {
        let mut w = TimerWheel::new();
        let id = w.arm(ms(5), 'x');
        w.arm(ms(6), 'y');
        assert!(w.reschedule(id, ms(50_000)));
        assert_eq!(w.deadline(id), Some(ms(50_000)));
        assert_eq!(drain(&mut w, ms(10)), vec!['y']);
        assert!(w.reschedule(id, us(20_500)));
        assert_eq!(w.next_deadline(), Some(ms(21)));
        assert_eq!(w.poll_expired(ms(21)), Some((id, 'x')));
        assert!(w.is_empty());
    }

    #[test]
    fn time_going_backwards_is_harmless() {
        let mut w = TimerWheel::new();
        w.arm(ms(100), 1);
        assert!(w.poll_expired(ms(50)).is_none());
        assert!(w.poll_expired(ms(10)).is_none());
        assert_eq!(drain(&mut w, ms(100)), vec![1]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Arm at `now` + offset µs (offset may be negative: in the past).
        Arm(i64),
        /// Cancel the n-th id ever handed out (modulo), live or stale.
        Cancel(usize),
        /// Reschedule the n-th id ever handed out to `now` + offset µs.
        Reschedule(usize, i64),
        /// Advance `now` by this many µs and drain.
        Advance(u64),
    }

    /// Runs `ops` against the wheel and a `BTreeMap` model keyed by (deadline ms, arm sequence): every timer
    /// fires at the first drain at or after its rounded deadline, in deadline order, and `next_deadline` is a
    /// lower bound that is exact near the cursor and never in the past after a drain.
    fn check_against_model(ops: &[Op]) {
        let mut w = TimerWheel::new();
        let mut model: BTreeMap<(u64, u64), (TimerId, u64)> = BTreeMap::new();
        let mut where_is: std::collections::HashMap<TimerId, (u64, u64)> = Default::default();
        let mut ids: Vec<TimerId> = Vec::new();
        let mut now = 0u64; // µs
        let mut seq = 0u64;
        // The model's notion of "the past": the latest `now` drained at, in ms.
        let mut floor_ms = 0u64;
        let at = |now: u64, off: i64| {
            Instant::from_micros(now.saturating_add_signed(off).min(u64::MAX - 1))
        };
        for (step, op) in ops.iter().enumerate() {
            match *op {
                Op::Arm(off) => {
                    let t = at(now, off);
                    seq += 1;
                    let id = w.arm(t, seq);
                    let key = (ceil_millis(t).max(floor_ms), seq);
                    assert_eq!(
                        w.deadline(id),
                        Some(Instant::from_millis(key.0)),
                        "step {step}"
                    );
                    model.insert(key, (id, seq));
                    where_is.insert(id, key);
                    ids.push(id);
                }
                Op::Cancel(n) if !ids.is_empty() => {
                    let id = ids[n % ids.len()];
                    let expected = where_is.remove(&id).map(|k| model.remove(&k).unwrap().1);
                    assert_eq!(w.cancel(id), expected, "step {step}");
                }
                Op::Reschedule(n, off) if !ids.is_empty() => {
                    let id = ids[n % ids.len()];
                    let t = at(now, off);
                    let live = where_is.contains_key(&id);
                    assert_eq!(w.reschedule(id, t), live, "step {step}");
                    if live {
                        let old = where_is.remove(&id).unwrap();
                        let (_, payload) = model.remove(&old).unwrap();
                        seq += 1;
                        let key = (ceil_millis(t).max(floor_ms), seq);
                        model.insert(key, (id, payload));
                        where_is.insert(id, key);
                    }
                }
                Op::Cancel(_) | Op::Reschedule(..) => {}
                Op::Advance(d) => {
                    now = now.saturating_add(d).min(u64::MAX - 1);
                    let now_ms = now / 1000;
                    while let Some((id, payload)) = w.poll_expired(Instant::from_micros(now)) {
                        let key = where_is
                            .remove(&id)
                            .expect("fired a timer that is not live");
                        let min = model.keys().next().unwrap().0;
                        assert!(
                            key.0 <= now_ms,
                            "step {step}: fired early: {key:?} at {now}µs"
                        );
                        // Order within a millisecond is not specified across the overflow.
                        assert_eq!(key.0, min, "step {step}: fired out of order");
                        assert_eq!(model.remove(&key).unwrap(), (id, payload), "step {step}");
                    }
                    if let Some((&key, _)) = model.iter().next() {
                        assert!(key.0 > now_ms, "step {step}: {key:?} not fired at {now}µs");
                    }
                    floor_ms = now_ms;
                    // After a drain the next deadline is in the future (no busy loop), and exact whenever
                    // the true minimum is within half a span (overflow bounds are further out than that).
                    if let Some(nd) = w.next_deadline() {
                        assert!(
                            nd.as_millis() > now_ms,
                            "step {step}: next_deadline {nd:?} <= now"
                        );
                    }
                }
            }
            assert_eq!(w.len(), model.len(), "step {step}");
            let model_min = model.keys().next().map(|k| k.0);
            let nd = w.next_deadline().map(Instant::as_millis);
            assert_eq!(nd.is_some(), model_min.is_some(), "step {step}");
            if let (Some(nd), Some(mm)) = (nd, model_min) {
                assert!(
                    nd <= mm,
                    "step {step}: next_deadline {nd} after true minimum {mm}"
                );
                if mm < floor_ms + CASCADE_LEAD {
                    assert_eq!(nd, mm, "step {step}: next_deadline not exact");
                }
            }
        }
    }

    fn random_ops(seed: u64, n: usize) -> Vec<Op> {
        let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        (0..n)
            .map(|_| {
                let offset = |rng: &mut XorShift| -> i64 {
                    let scale = match rng.below(10) {
                        0 => 1_000,          // within a millisecond or so
                        1..=4 => 100_000,    // 100 ms
                        5..=6 => 5_000_000,  // around the level-0 span
                        7..=8 => 60_000_000, // heartbeats: well into the overflow
                        _ => 3_600_000_000,  // an hour
                    };
                    rng.below(scale) as i64 - (scale / 20) as i64
                };
                match rng.below(10) {
                    0..=3 => Op::Arm(offset(&mut rng)),
                    4..=5 => Op::Cancel(rng.next() as usize),
                    6 => Op::Reschedule(rng.next() as usize, offset(&mut rng)),
                    _ => Op::Advance(match rng.below(4) {
                        0 => rng.below(2_000),
                        1 => rng.below(200_000),
                        2 => rng.below(3_000_000),
                        _ => rng.below(40_000_000),
                    }),
                }
            })
            .collect()
    }

    #[test]
    fn matches_reference_model_seeded() {
        for seed in 0..40 {
            let ops = random_ops(seed, 3_000);
            let result = std::panic::catch_unwind(|| check_against_model(&ops));
            if let Err(e) = result {
                eprintln!("wheel model check failed with seed {seed}");
                std::panic::resume_unwind(e);
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
        #[test]
        fn matches_reference_model_proptest(ops in proptest::collection::vec(op_strategy(), 0..300)) {
            check_against_model(&ops);
        }
    }

    fn op_strategy() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        let offset = prop_oneof![
            -2_000i64..2_000,
            -1_000_000i64..10_000_000,
            0i64..100_000_000
        ];
        prop_oneof![
            offset.clone().prop_map(Op::Arm),
            any::<usize>().prop_map(Op::Cancel),
            (any::<usize>(), offset).prop_map(|(n, o)| Op::Reschedule(n, o)),
            prop_oneof![0u64..3_000, 0u64..5_000_000, 0u64..50_000_000].prop_map(Op::Advance),
        ]
    }

    #[test]
    fn hundred_thousand_live_timers() {
        const N: u64 = 100_000;
        let mut rng = XorShift(0xC0FFEE);
        let mut w = TimerWheel::with_capacity(N as usize);
        let mut deadlines = Vec::with_capacity(N as usize);
        let mut ids = Vec::with_capacity(N as usize);
        for i in 0..N {
            // Spread like heartbeats: 0–60 s, µs resolution, many sharing a millisecond.
            let d = 1 + rng.below(60_000_000);
            deadlines.push(d);
            ids.push(w.arm(us(d), i));
        }
        assert_eq!(w.len(), N as usize);
        // Cancel every tenth.
        for i in (0..N).step_by(10) {
            assert_eq!(w.cancel(ids[i as usize]), Some(i));
        }
        let live = N - N / 10;
        assert_eq!(w.len(), live as usize);

        let mut now = 0u64;
        let mut prev_now = 0u64;
        let mut last_deadline = 0u64;
        let mut fired = 0u64;
        while !w.is_empty() {
            let next = w.next_deadline().expect("live timers have a deadline");
            // Alternate between jumping straight to the next deadline and random steps.
            now = if fired.is_multiple_of(3) {
                next.as_micros().max(now)
            } else {
                now + rng.below(20_000)
            };
            while let Some((_, i)) = w.poll_expired(us(now)) {
                let rounded = ceil_millis(us(deadlines[i as usize]));
                assert!(rounded * 1000 <= now, "timer {i} fired early");
                assert!(rounded * 1000 > prev_now, "timer {i} fired late");
                assert!(rounded >= last_deadline, "out of order");
                assert_ne!(i % 10, 0, "cancelled timer fired");
                last_deadline = rounded;
                fired += 1;
            }
            prev_now = now;
        }
        assert_eq!(fired, live);
    }
}
