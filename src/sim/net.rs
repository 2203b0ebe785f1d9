//! The simulated network itself, independent of what runs at its addresses: a min-heap of datagrams in flight
//! on a virtual clock, with seeded latency, jitter (hence reordering), loss and duplication. Which addresses
//! exist, which links are cut and who receives a multicast are the caller's business ([`super::Sim`] for SCTP
//! endpoints alone, [`super::World`] for the whole system).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

use crate::time::Instant;

/// Network impairments, applied independently to every datagram.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Netem {
    /// One-way delay.
    pub latency: Duration,
    /// Extra delay drawn uniformly from `0..jitter`; datagrams overtake each other when it exceeds their spacing.
    pub jitter: Duration,
    /// Probability a datagram is lost.
    pub loss: f64,
    /// Probability a datagram is delivered twice (the copy with its own jitter).
    pub duplicate: f64,
}

impl Netem {
    /// A perfect network with a 100 µs one-way delay.
    pub const IDEAL: Netem = Netem {
        latency: Duration::from_micros(100),
        jitter: Duration::ZERO,
        loss: 0.0,
        duplicate: 0.0,
    };

    /// A bad LAN: 1 ms ± 3 ms (so datagrams overtake each other), 5 % lost, 3 % duplicated.
    pub const LOSSY: Netem = Netem {
        latency: Duration::from_millis(1),
        jitter: Duration::from_millis(3),
        loss: 0.05,
        duplicate: 0.03,
    };
}

/// Counts of what the network did.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams delivered (copies included).
    pub delivered: u64,
    /// Datagrams lost to `Netem::loss`, a cut link or a missing receiver.
    pub dropped: u64,
    /// Extra copies made.
    pub duplicated: u64,
}

/// A datagram that reached its destination address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Where it came from.
    pub from: SocketAddr,
    /// Where it was sent.
    pub to: SocketAddr,
    /// The bytes.
    pub bytes: Vec<u8>,
    /// An ICMP port unreachable: `bytes` is what `to` had sent to `from`, where nothing listened.
    pub unreachable: bool,
}

/// Things due at virtual times, taken in time order; equal times keep the order they were scheduled in (so
/// one stream's bytes never overtake each other).
pub struct Schedule<T> {
    heap: BinaryHeap<Reverse<Timed<T>>>,
    seq: u64,
}

struct Timed<T> {
    at: Instant,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Timed<T> {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl<T> Eq for Timed<T> {}
impl<T> PartialOrd for Timed<T> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for Timed<T> {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

impl<T> Default for Schedule<T> {
    fn default() -> Self {
        Schedule {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }
}

impl<T> Schedule<T> {
    /// Schedules `item` for `at`.
    pub fn push(&mut self, at: Instant, item: T) {
        self.seq += 1;
        self.heap.push(Reverse(Timed {
            at,
            seq: self.seq,
            item,
        }));
    }

    /// When the next item is due.
    pub fn next_at(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(t)| t.at)
    }

    /// The next item due by `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<T> {
        if self.next_at()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse(t)| t.item)
    }
}

/// Datagrams in flight on a virtual clock.
pub struct Network {
    /// Virtual time.
    pub now: Instant,
    /// Impairments for every datagram.
    pub netem: Netem,
    /// What the network did so far.
    pub stats: NetStats,
    queue: Schedule<Delivery>,
    rng: ChaCha8Rng,
}

impl Network {
    /// An empty network at time zero.
    pub fn new(seed: u64, netem: Netem) -> Network {
        Network {
            now: Instant::ZERO,
            netem,
            stats: NetStats::default(),
            queue: Schedule::default(),
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// 32 bytes from the network's seeded CSPRNG, to seed what runs on it.
    pub fn seed(&mut self) -> [u8; 32] {
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        seed
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.rng.next_u64() as f64 / u64::MAX as f64) < p
    }

    fn delay(&mut self) -> Duration {
        let j = self.netem.jitter.as_micros() as u64;
        let extra = if j == 0 { 0 } else { self.rng.next_u64() % j };
        self.netem.latency + Duration::from_micros(extra)
    }

    /// Counts a datagram sent and dropped before it reached the network (a cut link, nobody there).
    pub fn drop_sent(&mut self) {
        self.stats.sent += 1;
        self.stats.dropped += 1;
    }

    /// Sends a datagram: lost, delivered once or twice, each copy after the latency plus its own jitter.
    pub fn send(&mut self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        self.stats.sent += 1;
        if self.chance(self.netem.loss) {
            self.stats.dropped += 1;
            return;
        }
        let copies = if self.chance(self.netem.duplicate) {
            2
        } else {
            1
        };
        self.stats.duplicated += copies - 1;
        for _ in 0..copies {
            let at = self.now + self.delay();
            let d = Delivery {
                from,
                to,
                bytes: bytes.to_vec(),
                unreachable: false,
            };
            self.queue.push(at, d);
        }
    }

    /// Answers `d`, which found no socket at its destination, with an ICMP port unreachable to its sender
    /// (after the latency; never lost: the tests that use it are about the answer, not about ICMP loss).
    pub fn send_unreachable(&mut self, d: Delivery) {
        self.stats.sent += 1;
        let icmp = Delivery {
            from: d.to,
            to: d.from,
            bytes: d.bytes,
            unreachable: true,
        };
        self.queue.push(self.now + self.netem.latency, icmp);
    }

    /// When the next datagram arrives.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.queue.next_at()
    }

    /// The next datagram due by `now`, if any.
    pub fn pop_due(&mut self) -> Option<Delivery> {
        let d = self.queue.pop_due(self.now)?;
        self.stats.delivered += 1;
        Some(d)
    }
}

/// The earlier of two optional times.
pub fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
