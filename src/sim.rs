//! A seeded network simulator for the sans-IO cores, built only for tests and fuzzing (feature `sim`).
//! [`Sim`] joins SCTP endpoints alone; [`World`] runs the whole system: a [`crate::server::Server`], its
//! clients, discovery by multicast, crashes, stalls and restarts. Both sit on one [`Network`] with latency,
//! jitter (hence reordering), loss and duplication, on a virtual clock.
//!
//! Each [`Sim::step`] jumps to whichever comes first, the next datagram delivery or an endpoint's timer, so
//! a test covering minutes of protocol time runs in milliseconds and gives the same result for the same seed.
//! Every run is bounded by a step limit; a test that fails prints its seed, and `MULTIPROTO_SIM_SEED`
//! replays one seed.

#[cfg(test)]
mod groups;
mod net;
#[cfg(test)]
mod scenarios;
pub mod tcp;
#[cfg(test)]
mod trust;
mod world;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use crate::sctp::chunk::{Chunk, ChunkIter};
use crate::sctp::wire::HEADER_LEN;
use crate::sctp::{AssocId, Config, Endpoint, Event};
use crate::time::Instant;
pub use net::{Delivery, NetStats, Netem, Network, Schedule, earliest};
pub use world::{ClientHost, Host, ServerHost, World};

/// What both simulators share: the next thing that happens, a step to it, and running until a condition
/// holds.
pub trait Simulate {
    /// The time of the next thing that will happen, if anything will.
    fn next_time(&self) -> Option<Instant>;
    /// Advances to the next delivery or timer and handles everything due then. False if nothing is pending.
    fn step(&mut self) -> bool;
    /// Moves what the hosts have to send onto the network, and their events into the record.
    fn drain(&mut self);
    /// Moves the clock forward to `t` (nothing happens before it).
    fn advance_to(&mut self, t: Instant);

    /// Steps until `done` holds, time passes `deadline`, or `max_steps` steps ran. Returns whether `done`
    /// held.
    fn run_until(
        &mut self,
        deadline: Instant,
        max_steps: usize,
        mut done: impl FnMut(&Self) -> bool,
    ) -> bool
    where
        Self: Sized,
    {
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
                    self.advance_to(deadline);
                    return done(self);
                }
            }
        }
        done(self)
    }
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

/// The simulator of SCTP endpoints alone.
pub struct Sim {
    /// Virtual time.
    pub now: Instant,
    /// The hosts.
    pub nodes: Vec<Node>,
    /// The network between them (its `now` follows [`Sim::now`]).
    pub net: Network,
    blocked: HashSet<(usize, usize)>,
    data_blocked: HashSet<(usize, usize)>,
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
            net: Network::new(seed, netem),
            blocked: HashSet::new(),
            data_blocked: HashSet::new(),
            buf: vec![0; 65536],
        }
    }

    /// What the network did so far.
    pub fn stats(&self) -> NetStats {
        self.net.stats
    }

    /// Adds a host with an endpoint built from `cfg`; its CSPRNG is seeded from the simulator's.
    pub fn add_node(&mut self, addr: SocketAddr, cfg: Config) -> usize {
        let seed = self.net.seed();
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

    fn schedule(&mut self, from_node: usize, dst: SocketAddr, bytes: &[u8]) {
        let to = self.node_at(dst);
        let cut = to.is_none_or(|to| {
            self.blocked.contains(&(from_node, to))
                || (self.data_blocked.contains(&(from_node, to)) && carries_data(bytes))
        });
        if cut {
            self.net.drop_sent();
        } else {
            self.net.now = self.now;
            self.net.send(self.nodes[from_node].addr, dst, bytes);
        }
    }

    /// Runs for `d` of virtual time (bounded by `max_steps`).
    pub fn run_for(&mut self, d: Duration, max_steps: usize) {
        let end = self.now + d;
        self.run_until(end, max_steps, |_| false);
    }
}

impl Simulate for Sim {
    /// The time of the next thing that will happen, if anything will.
    fn next_time(&self) -> Option<Instant> {
        let timers = self.nodes.iter().filter_map(|n| n.ep.poll_timeout()).min();
        earliest(self.net.next_arrival(), timers)
    }

    /// Advances to the next delivery or timer and handles everything due then. False if nothing is pending.
    fn step(&mut self) -> bool {
        self.drain();
        let Some(t) = self.next_time() else {
            return false;
        };
        self.now = self.now.max(t);
        self.net.now = self.now;
        while let Some(d) = self.net.pop_due() {
            if let Some(to) = self.node_at(d.to) {
                self.nodes[to].ep.handle(self.now, d.from, &d.bytes);
            }
        }
        for n in &mut self.nodes {
            if n.ep.poll_timeout().is_some_and(|d| d <= self.now) {
                n.ep.handle_timeout(self.now);
            }
        }
        self.drain();
        true
    }

    /// Drains every endpoint's transmits (onto the network) and events (into its node).
    fn drain(&mut self) {
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

    fn advance_to(&mut self, t: Instant) {
        self.now = self.now.max(t);
    }
}
