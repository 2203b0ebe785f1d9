//! A seeded network simulator for the sans-IO cores: several SCTP endpoints joined by a virtual network with
//! latency, jitter (hence reordering), loss and duplication, on a virtual clock.
//!
//! Each [`Sim::step`] jumps to whichever comes first, the next datagram delivery or an endpoint's timer, so
//! a test covering minutes of protocol time runs in milliseconds and gives the same result for the same seed.
//! Every run is bounded by a step limit; a test that fails prints its seed, and `MULTIPROTO_SIM_SEED`
//! replays one seed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

use crate::sctp::chunk::{Chunk, ChunkIter};
use crate::sctp::wire::HEADER_LEN;
use crate::sctp::{AssocId, Config, Endpoint, Event};
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
}

/// One simulated host: an endpoint at an address, and the events it produced.
pub struct Node {
    /// The node's UDP address.
    pub addr: SocketAddr,
    /// Its SCTP endpoint.
    pub ep: Endpoint,
    /// Every event the endpoint reported, in order.
    pub events: Vec<(AssocId, Event)>,
}

struct InFlight {
    at: Instant,
    seq: u64,
    from: SocketAddr,
    to: usize,
    bytes: Vec<u8>,
}

impl PartialEq for InFlight {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for InFlight {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// Counts of what the network did.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Datagrams sent by endpoints.
    pub sent: u64,
    /// Datagrams delivered (copies included).
    pub delivered: u64,
    /// Datagrams lost to `Netem::loss` or a blocked link.
    pub dropped: u64,
    /// Extra copies made.
    pub duplicated: u64,
}

/// The simulator.
pub struct Sim {
    /// Virtual time.
    pub now: Instant,
    /// The hosts.
    pub nodes: Vec<Node>,
    /// Impairments for every link.
    pub netem: Netem,
    /// What the network did so far.
    pub stats: NetStats,
    queue: BinaryHeap<Reverse<InFlight>>,
    blocked: HashSet<(usize, usize)>,
    data_blocked: HashSet<(usize, usize)>,
    rng: ChaCha8Rng,
    seq: u64,
    buf: Vec<u8>,
}

/// Whether an SCTP packet holds a DATA chunk (the chunks read as the endpoint reads them).
fn carries_data(packet: &[u8]) -> bool {
    ChunkIter::new(packet.get(HEADER_LEN..).unwrap_or(&[])).any(|c| matches!(c, Ok(Chunk::Data(_))))
}

/// The seed to use: `MULTIPROTO_SIM_SEED` if set (to replay a failure), else `default`.
pub fn seed_or(default: u64) -> u64 {
    std::env::var("MULTIPROTO_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

impl Sim {
    /// An empty network.
    pub fn new(seed: u64, netem: Netem) -> Self {
        Sim {
            now: Instant::ZERO,
            nodes: Vec::new(),
            netem,
            stats: NetStats::default(),
            queue: BinaryHeap::new(),
            blocked: HashSet::new(),
            data_blocked: HashSet::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            seq: 0,
            buf: vec![0; 65536],
        }
    }

    /// Adds a host with an endpoint built from `cfg`; its CSPRNG is seeded from the simulator's.
    pub fn add_node(&mut self, addr: SocketAddr, cfg: Config) -> usize {
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        self.nodes.push(Node {
            addr,
            ep: Endpoint::new(cfg, seed),
            events: Vec::new(),
        });
        self.nodes.len() - 1
    }

    /// Drops everything sent from node `from` to node `to` (one direction) while `blocked`.
    pub fn block(&mut self, from: usize, to: usize, blocked: bool) {
        if blocked {
            self.blocked.insert((from, to));
        } else {
            self.blocked.remove(&(from, to));
        }
    }

    /// Drops every datagram carrying a DATA chunk from node `from` to node `to` while `blocked`; control
    /// packets (SACK, HEARTBEAT, HEARTBEAT ACK, ...) still pass. A receiver whose buffer is full for large
    /// packets, or a path that loses only them.
    pub fn block_data(&mut self, from: usize, to: usize, blocked: bool) {
        if blocked {
            self.data_blocked.insert((from, to));
        } else {
            self.data_blocked.remove(&(from, to));
        }
    }

    /// Index of the node at `addr`.
    pub fn node_at(&self, addr: SocketAddr) -> Option<usize> {
        self.nodes.iter().position(|n| n.addr == addr)
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.rng.next_u64() as f64 / u64::MAX as f64) < p
    }

    fn delay(&mut self) -> Duration {
        let j = self.netem.jitter.as_micros() as u64;
        let extra = if j == 0 { 0 } else { self.rng.next_u64() % j };
        self.netem.latency + Duration::from_micros(extra)
    }

    fn schedule(&mut self, from_node: usize, dst: SocketAddr, bytes: &[u8]) {
        self.stats.sent += 1;
        let Some(to) = self.node_at(dst) else {
            self.stats.dropped += 1;
            return;
        };
        if self.blocked.contains(&(from_node, to))
            || (self.data_blocked.contains(&(from_node, to)) && carries_data(bytes))
            || self.chance(self.netem.loss)
        {
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
            self.seq += 1;
            let from = self.nodes[from_node].addr;
            self.queue.push(Reverse(InFlight {
                at,
                seq: self.seq,
                from,
                to,
                bytes: bytes.to_vec(),
            }));
        }
    }

    /// Drains every endpoint's transmits (onto the network) and events (into its node).
    pub fn drain(&mut self) {
        for i in 0..self.nodes.len() {
            loop {
                let mut buf = std::mem::take(&mut self.buf);
                let t = self.nodes[i].ep.poll_transmit(self.now, &mut buf);
                if let Some(t) = t {
                    self.schedule(i, t.dst, &buf[..t.len]);
                }
                self.buf = buf;
                if t.is_none() {
                    break;
                }
            }
            while let Some(e) = self.nodes[i].ep.poll_event() {
                self.nodes[i].events.push(e);
            }
        }
    }

    /// The time of the next thing that will happen, if anything will.
    pub fn next_time(&self) -> Option<Instant> {
        let net = self.queue.peek().map(|Reverse(f)| f.at);
        let timers = self.nodes.iter().filter_map(|n| n.ep.poll_timeout()).min();
        match (net, timers) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Advances to the next delivery or timer and handles everything due then. False if nothing is pending.
    pub fn step(&mut self) -> bool {
        self.drain();
        let Some(t) = self.next_time() else {
            return false;
        };
        self.now = self.now.max(t);
        while let Some(Reverse(f)) = self.queue.peek() {
            if f.at > self.now {
                break;
            }
            let Some(Reverse(f)) = self.queue.pop() else {
                break;
            };
            self.stats.delivered += 1;
            self.nodes[f.to].ep.handle(self.now, f.from, &f.bytes);
        }
        for n in &mut self.nodes {
            if n.ep.poll_timeout().is_some_and(|d| d <= self.now) {
                n.ep.handle_timeout(self.now);
            }
        }
        self.drain();
        true
    }

    /// Steps until `done` holds, time passes `deadline`, or `max_steps` steps ran. Returns whether `done` held.
    pub fn run_until(
        &mut self,
        deadline: Instant,
        max_steps: usize,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> bool {
        for _ in 0..max_steps {
            self.drain();
            if done(self) {
                return true;
            }
            match self.next_time() {
                Some(t) if t <= deadline => {
                    self.step();
                }
                _ => {
                    // Nothing more happens before the deadline: jump there.
                    self.now = self.now.max(deadline);
                    return done(self);
                }
            }
        }
        done(self)
    }

    /// Runs for `d` of virtual time (bounded by `max_steps`).
    pub fn run_for(&mut self, d: Duration, max_steps: usize) {
        let end = self.now + d;
        self.run_until(end, max_steps, |_| false);
    }
}
