//! TCP between the simulated hosts' chat peers, as a stream service: connections open after a round trip (or
//! are refused with RST, or time out when nobody answers), bytes arrive in order after the one-way latency,
//! a close or a dead process's RST reaches the other end. Loss and retransmission inside TCP are not modelled:
//! a cut link swallows what is written (the peer's acknowledgement timeout then closes and retries, as it
//! must when a real connection stalls).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::net::Schedule;
use crate::peer::ConnId;

/// How long a connection attempt to a host that does not answer takes to fail.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// One end of a connection: the host, which of its processes (a restarted one reuses connection ids), and
/// the peer's id for it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct End {
    /// The host's number.
    pub host: usize,
    /// The process: counts the host's starts.
    pub life: u32,
    /// The peer's id of the connection.
    pub conn: ConnId,
}

/// What reaches a host's chat peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// A connection attempt from `from` (host, its conn) arrives at `to`.
    Syn {
        /// The connecting end.
        from: End,
        /// Its source address, as the listener sees it.
        from_addr: SocketAddr,
        /// Where it connects.
        to: SocketAddr,
    },
    /// The connection of this end is established.
    Established(End),
    /// The connection of this end was refused, reset, closed, or never answered.
    Closed(End),
    /// Bytes for this end.
    Data(End, Vec<u8>),
}

/// Segments in flight, in order of arrival, and which ends are joined.
#[derive(Default)]
pub struct Tcp {
    /// What is on its way.
    pub queue: Schedule<Segment>,
    links: HashMap<End, End>,
}

impl Tcp {
    /// Joins two ends.
    pub fn link(&mut self, a: End, b: End) {
        self.links.insert(a, b);
        self.links.insert(b, a);
    }

    /// The other end of `a`.
    pub fn other(&self, a: End) -> Option<End> {
        self.links.get(&a).copied()
    }

    /// Separates `a` from its other end; returns that end.
    pub fn unlink(&mut self, a: End) -> Option<End> {
        let b = self.links.remove(&a)?;
        self.links.remove(&b);
        Some(b)
    }

    /// Every end on host `h`, for when its process dies.
    pub fn ends_of(&self, h: usize) -> Vec<End> {
        self.links.keys().filter(|e| e.host == h).copied().collect()
    }
}
