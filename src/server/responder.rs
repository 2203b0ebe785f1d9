//! The discovery responder: answers each HELLO with a unicast WELCOME and announces the daemon to the group
//! when it starts (three times, in case one is lost), so clients waiting for a restarted daemon find it at
//! once instead of at their next HELLO.
//!
//! Both carry the daemon's public key. Under a network secret every datagram we send ends in a MAC, and a
//! HELLO without a valid one is answered only with an unauthenticated WELCOME that says a secret is needed
//! (so its user learns what to do) and is counted. A protocol-1 HELLO gets a protocol-1 WELCOME, so the old
//! client connects and is told, in words, to upgrade.
//!
//! WELCOMEs are rate-limited per source address ([`Limiter`]): a HELLO's source address is not checked (it
//! is UDP), so without a limit anyone could make the daemon send a WELCOME to a victim for every HELLO they
//! send in its name.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::{Config, Stats};
use crate::discovery::{Auth, DaemonInfo, Datagram, DiscoveryError, v1};
use crate::sctp::Transmit;
use crate::time::Instant;

/// Discovery replies queued at most between two drains. The caller drains every loop turn, so this bounds
/// the memory a flood of HELLOs read in one turn can take (about 3 MB), not the rate they are answered at.
pub const MAX_DISCOVERY_REPLIES: usize = 65_536;

/// Source addresses the WELCOME rate limiter remembers at most: about 40 bytes each, so 160 KiB at worst.
/// Far more than the hosts of a LAN that start a client within the same two seconds; a flood from more
/// addresses than this (spoofed ones) evicts, rather than growing the table.
pub(super) const MAX_RATE_SOURCES: usize = 4096;

/// A token bucket per source address, kept as the time its bucket will be full again (the generic cell rate
/// algorithm: one `Instant` per address, no float, no refill step). An address whose bucket is full is the
/// same as one never seen, so it is forgotten once the table fills; a flood that fills it with active
/// addresses makes room by evicting one of them, which costs that address at most a fresh burst.
pub(super) struct Limiter {
    /// The time one WELCOME's token takes to come back; zero = no limit.
    interval: Duration,
    /// How far ahead of `now` a bucket's "full again" time may be and still allow a WELCOME: the burst
    /// minus one token.
    tolerance: Duration,
    /// Per address: when its bucket is full again.
    sources: HashMap<IpAddr, Instant>,
    /// A full table is swept of full buckets at most this often (a sweep walks the table).
    next_sweep: Instant,
}

impl Limiter {
    /// `rate` WELCOMEs a second per address, in bursts of up to `burst`; `rate` 0 = no limit.
    pub(super) fn new(rate: u32, burst: u32) -> Limiter {
        let interval = if rate == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs(1) / rate
        };
        Limiter {
            interval,
            tolerance: interval * burst.max(1).saturating_sub(1),
            sources: HashMap::new(),
            next_sweep: Instant::ZERO,
        }
    }

    /// Whether `ip` may be sent a WELCOME at `now` (and if so, its token is taken).
    pub(super) fn allow(&mut self, now: Instant, ip: IpAddr, stats: &mut Stats) -> bool {
        if self.interval.is_zero() {
            return true;
        }
        let ip = ip.to_canonical();
        let known = self.sources.get(&ip).copied();
        let full_at = known.map_or(now, |t| t.max(now));
        if full_at.saturating_since(now) > self.tolerance {
            return false;
        }
        if known.is_none() && self.sources.len() >= MAX_RATE_SOURCES {
            self.make_room(now, stats);
        }
        self.sources.insert(ip, full_at + self.interval);
        true
    }

    /// Frees a slot in a full table: first by forgetting every address whose bucket is full by now (at most
    /// once per burst period, since it walks the table), else by evicting an arbitrary one (the hasher's
    /// random keys make it unpredictable to a sender).
    fn make_room(&mut self, now: Instant, stats: &mut Stats) {
        if now >= self.next_sweep {
            self.sources.retain(|_, full_at| *full_at > now);
            self.next_sweep = now + self.tolerance + self.interval;
        }
        if self.sources.len() >= MAX_RATE_SOURCES
            && let Some(ip) = self.sources.keys().next().copied()
        {
            self.sources.remove(&ip);
            stats.hello_sources_evicted += 1;
        }
    }

    /// Addresses remembered now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.sources.len()
    }
}

/// When the ANNOUNCEs after the first one go out, counted from the one before.
const ANNOUNCE_AFTER: [Duration; 2] = [Duration::from_millis(200), Duration::from_millis(1000)];

/// A datagram waiting to be sent.
enum Reply {
    /// Ours, authenticated under the secret if we have one and `mac`.
    Datagram {
        to: SocketAddr,
        d: Datagram,
        mac: bool,
    },
    /// A protocol-1 WELCOME to this HELLO instance.
    V1Welcome { to: SocketAddr, instance: u64 },
}

pub(super) struct Responder {
    info: DaemonInfo,
    group: SocketAddr,
    /// The discovery MAC key, under a network secret.
    mac_key: Option<[u8; 32]>,
    out: VecDeque<Reply>,
    /// The next ANNOUNCE, and how many of [`ANNOUNCE_AFTER`] are still to come after it.
    next_announce: Option<(Instant, usize)>,
    /// WELCOMEs per source address.
    pub(super) limiter: Limiter,
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
                key: cfg.identity.public(),
                needs_secret: cfg.psk.is_some(),
            },
            group: cfg.group,
            mac_key: cfg.psk.as_ref().map(|p| *p.discovery_key()),
            out: VecDeque::new(),
            next_announce: Some((now, ANNOUNCE_AFTER.len())),
            // A burst of two seconds' worth: a client's first HELLO and its quick resends all answered.
            limiter: Limiter::new(cfg.welcome_rate, cfg.welcome_rate.saturating_mul(2)),
        }
    }

    fn push(&mut self, r: Reply) -> bool {
        if self.out.len() >= MAX_DISCOVERY_REPLIES {
            return false;
        }
        self.out.push_back(r);
        true
    }

    /// A datagram from the group socket. Returns the sender's address if it is another daemon's ANNOUNCE.
    pub(super) fn handle(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        stats: &mut Stats,
    ) -> Option<SocketAddr> {
        match Datagram::parse(bytes, self.mac_key.as_ref()) {
            Ok((Datagram::Hello(_), _)) if !self.limiter.allow(now, from.ip(), stats) => {
                stats.hellos_rate_limited += 1;
                None
            }
            Ok((Datagram::Hello(h), auth)) => {
                // Without the secret, only the hint that one is needed (no MAC: we cannot make one it could
                // check); with it, or on an open LAN, the WELCOME proper.
                let mac = self.mac_key.is_some() && auth == Auth::Valid;
                if self.mac_key.is_some() && !mac {
                    stats.discovery_unauthenticated += 1;
                }
                let welcome = Reply::Datagram {
                    to: from,
                    d: Datagram::Welcome {
                        to: h.instance,
                        daemon: self.info,
                    },
                    mac,
                };
                if self.push(welcome) {
                    stats.hellos += 1;
                } else {
                    stats.hellos_unanswered += 1;
                }
                None
            }
            // Our own ANNOUNCE looped back, or another daemon's.
            Ok((Datagram::Announce(d), _)) if d.instance != self.info.instance => {
                stats.foreign_announces += 1;
                Some(from)
            }
            Ok(_) => None,
            Err(DiscoveryError::Version(1)) => {
                if let Some(instance) = v1::hello_instance(bytes) {
                    stats.old_protocol += 1;
                    if !self.push(Reply::V1Welcome { to: from, instance }) {
                        stats.hellos_unanswered += 1;
                    }
                } else {
                    stats.discovery_bad_version += 1;
                }
                None
            }
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
        let announce = Reply::Datagram {
            to: self.group,
            d: Datagram::Announce(self.info),
            mac: true,
        };
        self.push(announce);
        self.next_announce = (left > 0).then(|| {
            let after = ANNOUNCE_AFTER[ANNOUNCE_AFTER.len() - left];
            (now + after, left - 1)
        });
    }

    /// The next datagram, encoded into `buf` (at least [`crate::discovery::MAX_DATAGRAM`] bytes).
    pub(super) fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        loop {
            let Some(r) = self.out.pop_front() else {
                if self.out.capacity() > 1024 {
                    // A flood grew the queue: do not keep its memory.
                    self.out = VecDeque::new();
                }
                return None;
            };
            // Only a buffer smaller than the documented minimum fails; drop rather than stall the queue.
            let (dst, len) = match r {
                Reply::Datagram { to, d, mac } => {
                    (to, d.write_into(buf, self.mac_key.as_ref().filter(|_| mac)))
                }
                Reply::V1Welcome { to, instance } => {
                    (to, v1::welcome_into(buf, instance, &self.info))
                }
            };
            if let Some(len) = len {
                return Some(Transmit { dst, len, flow: 0 });
            }
        }
    }
}
