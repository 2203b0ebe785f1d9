//! The discovery responder: answers each HELLO with a unicast WELCOME and announces the daemon to the group
//! when it starts (three times, in case one is lost), so clients waiting for a restarted daemon find it at
//! once instead of at their next HELLO.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use super::{Config, Stats};
use crate::discovery::{DaemonInfo, Datagram, DiscoveryError, MAX_DATAGRAM};
use crate::time::Instant;

/// Discovery replies queued at most between two drains. The caller drains every loop turn, so this bounds
/// the memory a flood of HELLOs read in one turn can take (about 10 MB), not the rate they are answered at.
pub const MAX_DISCOVERY_REPLIES: usize = 65_536;

/// When the ANNOUNCEs after the first one go out, counted from the one before.
const ANNOUNCE_AFTER: [Duration; 2] = [Duration::from_millis(200), Duration::from_millis(1000)];

pub(super) struct Responder {
    info: DaemonInfo,
    group: SocketAddr,
    out: VecDeque<(SocketAddr, Vec<u8>)>,
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
        let mut b = Vec::with_capacity(MAX_DATAGRAM);
        d.write(&mut b);
        self.out.push_back((to, b));
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

    pub(super) fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        let d = self.out.pop_front();
        if d.is_none() && self.out.capacity() > 1024 {
            // A flood grew the queue: do not keep its memory.
            self.out = VecDeque::new();
        }
        d
    }
}
