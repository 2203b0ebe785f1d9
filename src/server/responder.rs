//! The discovery responder: answers each HELLO with a unicast WELCOME and announces the daemon to the group
//! when it starts (three times, in case one is lost), so clients waiting for a restarted daemon find it at
//! once instead of at their next HELLO.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use super::{Config, Stats};
use crate::discovery::{DaemonInfo, Datagram, DiscoveryError};
use crate::sctp::Transmit;
use crate::time::Instant;

/// Discovery replies queued at most between two drains. The caller drains every loop turn, so this bounds
/// the memory a flood of HELLOs read in one turn can take (about 3 MB), not the rate they are answered at.
pub const MAX_DISCOVERY_REPLIES: usize = 65_536;

/// When the ANNOUNCEs after the first one go out, counted from the one before.
const ANNOUNCE_AFTER: [Duration; 2] = [Duration::from_millis(200), Duration::from_millis(1000)];

pub(super) struct Responder {
    info: DaemonInfo,
    group: SocketAddr,
    out: VecDeque<(SocketAddr, Datagram)>,
    /// The next ANNOUNCE, and how many of [`ANNOUNCE_AFTER`] are still to come after it.
    next_announce: Option<(Instant, usize)>,
}

impl Responder {
    /// A responder for the daemon `cfg` describes, whose first ANNOUNCE is due at `now`.
    pub(super) fn new(cfg: &Config, now: Instant) -> Responder {
        Responder {
            info: DaemonInfo {
                instance: cfg.instance,
                sctp_udp_port: cfg.sctp_udp_port,
                sctp_port: cfg.sctp_port,
                addr: None,
            },
            group: cfg.group,
            out: VecDeque::new(),
            next_announce: Some((now, ANNOUNCE_AFTER.len())),
        }
    }

    fn push(&mut self, to: SocketAddr, d: Datagram) -> bool {
        if self.out.len() >= MAX_DISCOVERY_REPLIES {
            return false;
        }
        self.out.push_back((to, d));
        true
    }

    /// A datagram from the group socket. Returns the sender's address if it is another daemon's ANNOUNCE.
    pub(super) fn handle(
        &mut self,
        from: SocketAddr,
        bytes: &[u8],
        stats: &mut Stats,
    ) -> Option<SocketAddr> {
        match Datagram::parse(bytes) {
            Ok(Datagram::Hello(h)) => {
                let welcome = Datagram::Welcome {
                    to: h.instance,
                    daemon: self.info,
                };
                if self.push(from, welcome) {
                    stats.hellos += 1;
                } else {
                    stats.hellos_unanswered += 1;
                }
                None
            }
            // Our own ANNOUNCE looped back, or another daemon's.
            Ok(Datagram::Announce(d)) if d.instance != self.info.instance => {
                stats.foreign_announces += 1;
                Some(from)
            }
            Ok(_) => None,
            Err(DiscoveryError::Foreign) => {
                stats.discovery_foreign += 1;
                None
            }
            Err(DiscoveryError::Version(_)) => {
                stats.discovery_bad_version += 1;
                None
            }
            Err(DiscoveryError::Malformed) => {
                stats.discovery_malformed += 1;
                None
            }
        }
    }

    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.next_announce.map(|(t, _)| t)
    }

    pub(super) fn handle_timeout(&mut self, now: Instant) {
        let Some((t, left)) = self.next_announce else {
            return;
        };
        if t > now {
            return;
        }
        let group = self.group;
        self.push(group, Datagram::Announce(self.info));
        self.next_announce = (left > 0).then(|| {
            let after = ANNOUNCE_AFTER[ANNOUNCE_AFTER.len() - left];
            (now + after, left - 1)
        });
    }

    /// The next datagram, encoded into `buf` (at least [`crate::discovery::MAX_DATAGRAM`] bytes).
    pub(super) fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        loop {
            let Some((dst, d)) = self.out.pop_front() else {
                if self.out.capacity() > 1024 {
                    // A flood grew the queue: do not keep its memory.
                    self.out = VecDeque::new();
                }
                return None;
            };
            // Only a buffer smaller than the documented minimum fails; drop rather than stall the queue.
            if let Some(len) = d.write_into(buf) {
                return Some(Transmit { dst, len, flow: 0 });
            }
        }
    }
}
