//! The roster, sans-IO: who is registered, online or offline, and what each connected client has been told.
//!
//! Clients live in a slab with one nickname index. Every change bumps the roster version and marks the entry
//! dirty; [`Registry::flush`] (called once per loop turn) turns all changes of the turn into one delta for
//! every synced subscriber, so a storm of N joins costs O(N · turns) messages, not O(N²). A client that just
//! registered gets a snapshot (in pages) at the version the turn ends with, and deltas after that.
//!
//! # Flow control
//! A snapshot can be far larger than an association's send buffer (100 000 entries are about 3 MB), so it is
//! never queued whole. A client being sent one is *paced*: it has a `Pace` holding a cursor into the
//! snapshot's pages (encoded once per version and shared by every client receiving that version), and the
//! deltas broadcast meanwhile (shared too, bounded in count and bytes). [`Registry::poll_output`] hands out its
//! messages one at a time; one the association has no room for comes back through
//! [`Registry::handle_blocked`], and the client waits, handed nothing more, until the transport reports room
//! ([`Registry::handle_writable`]). Its messages follow one another in order: held messages first, then the
//! snapshot's pages, then the deltas that came after the snapshot's version, so its version sequence has no
//! gap; then it is synced and gets deltas as they are broadcast. A synced client whose buffer fills with
//! deltas (a slow reader) is paced the same way from the delta that did not fit. Held deltas past the bound
//! are dropped for a fresh snapshot at the newer version: cheaper to send than a long backlog. Only clients
//! being paced have a `Pace`; idle ones cost nothing more, and a turn's cost is in the clients with something
//! to send, never a walk over every connection.
//!
//! # Per-host limits
//! So that no single host can crowd out the others, entries are counted per source address (a small record
//! per host, not per client): a host at [`Config::max_clients_per_host`] entries cannot register more names,
//! and past [`Config::max_offline_per_host`] offline ones its entry offline longest is removed as an expiry
//! would remove it. The host of each entry is saved with the roster, so the bound survives a restart.
//!
//! Inputs are roster messages, connection events and the time (monotonic `now` for timers, wall-clock `wall_ms`
//! for the "since" times users see); outputs are messages to send ([`Out`]), connections to probe, and
//! [`Event`]s for the log. Nothing here touches a socket or a clock. Memory: one slab entry (about 120 bytes)
//! per client plus its index entry; per connected client one small `Conn`, and a `Pace` (about 120 bytes plus
//! a pointer per held message) only while it is paced.

#![forbid(unsafe_code)]

mod looks;
pub mod saved;
pub mod wire;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use slab::Slab;

use crate::group::{ChannelName, MAX_CHANNELS_PER_CLIENT};
use crate::identity::PublicKey;
use crate::nick::Nick;
use crate::sctp::{AssocId, Payload};
use crate::time::Instant;
use saved::{Binding, Image, Record};
use wire::{
    ClientMsg, Entry as WireEntry, Extra, MAX_AWAY, Register, RegisterResult, Request, ServerMsg,
    Status, flags,
};

/// Registry settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Roster entries (online and offline) held at most; registrations beyond are refused.
    pub max_clients: usize,
    /// How long an offline entry is kept before it is removed.
    pub offline_ttl: Duration,
    /// Largest snapshot page or delta message, in bytes.
    pub page_bytes: usize,
    /// The daemon's instance id, sent in REGISTERED.
    pub daemon: u64,
    /// After a client's association restarts (RFC 9260 §5.2.4), how long its entry stays online waiting for
    /// it to register again.
    pub restart_grace: Duration,
    /// A client that comes back within this long of going offline counts as flapping.
    pub flap_window: Duration,
    /// When a nickname is refused because its holder looks online, the retry hint given: the holder is probed
    /// meanwhile, and a dead one is gone by then.
    pub retry_hint: Duration,
    /// The daemon's own address on the discovery interface, if that is not loopback. A client seen at a
    /// loopback address runs on the daemon's host; peers on other hosts reach it at this address instead, so
    /// no roster entry ever carries a loopback address where other hosts can read it.
    pub host_ip: Option<IpAddr>,
    /// Deltas held at most for a client whose snapshot (or earlier roster messages) waits for room in its
    /// association; past this, or past `max_held_bytes`, they are dropped for a fresh snapshot.
    pub max_held_deltas: usize,
    /// Bytes of deltas held at most for one client (see `max_held_deltas`). The bytes are shared with every
    /// other client holding the same deltas; each client's own cost is a pointer per delta.
    pub max_held_bytes: usize,
    /// How long a nickname stays bound to its key after its owner was last online (its roster entry expires
    /// sooner, after `offline_ttl`; the binding outlives it, so a nickname is not up for grabs the day after
    /// its owner's holiday starts).
    pub binding_ttl: Duration,
    /// Entries (online and offline) registered from one source address at most: a registration that would
    /// add one more for a host at the cap is refused with [`RegisterResult::Full`] and a reason. 0 = no cap.
    /// A client at a loopback address counts against `host_ip`, as its roster entry shows it.
    pub max_clients_per_host: usize,
    /// Offline entries kept at most per source address: when one more of a host's entries goes offline, the
    /// one of them that has been offline longest is removed, as an expiry would remove it. 0 = no cap.
    pub max_offline_per_host: usize,
}

/// The default of [`Config::max_clients_per_host`]. A terminal server is the busiest honest host: a few
/// hundred people logged in, each with a nickname (a few with two). 256 leaves room for that, while one
/// host registering names in a loop (3 000 were seen, 200 000 a minute) stops at 256 instead of filling the
/// roster that everyone's client downloads.
pub const DEFAULT_MAX_CLIENTS_PER_HOST: usize = 256;

/// The default of [`Config::max_offline_per_host`]. Offline entries let people see who is away and queue
/// messages for them, so a terminal server whose users have left for the night keeps its 64 most recent;
/// a host that registers and drops names in a loop leaves at most 64 ghosts (about 8 KiB, one roster page)
/// instead of one per name for a day, and its older ghosts make room for its newer ones without touching any
/// other host's entries.
pub const DEFAULT_MAX_OFFLINE_PER_HOST: usize = 64;

impl Default for Config {
    fn default() -> Self {
        Config {
            max_clients: 200_000,
            offline_ttl: Duration::from_secs(24 * 3600),
            page_bytes: 60 * 1024,
            daemon: 0,
            restart_grace: Duration::from_secs(5),
            flap_window: Duration::from_secs(60),
            retry_hint: Duration::from_secs(3),
            host_ip: None,
            max_held_deltas: 1024,
            max_held_bytes: 1024 * 1024,
            binding_ttl: Duration::from_secs(90 * 24 * 3600),
            max_clients_per_host: DEFAULT_MAX_CLIENTS_PER_HOST,
            max_offline_per_host: DEFAULT_MAX_OFFLINE_PER_HOST,
        }
    }
}

/// Something the daemon should log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A nickname registered for the first time.
    Joined {
        /// Who.
        nick: Nick,
        /// Their chat address.
        chat: SocketAddr,
    },
    /// A known nickname came back online.
    Online {
        /// Who.
        nick: Nick,
        /// Their chat address.
        chat: SocketAddr,
        /// A new process took the entry over from one that had not been seen to go offline.
        replaced: bool,
    },
    /// A client went offline.
    Offline {
        /// Who.
        nick: Nick,
        /// Why, in a few words.
        why: &'static str,
    },
    /// An offline entry passed its TTL and was removed.
    Expired {
        /// Who.
        nick: Nick,
    },
    /// An offline entry was removed because its host had more than [`Config::max_offline_per_host`]
    /// offline (it was the one offline longest).
    Evicted {
        /// Who.
        nick: Nick,
        /// The host it registered from.
        host: IpAddr,
    },
    /// A registration was refused.
    Rejected {
        /// The nickname asked for, as sent (it may be invalid).
        nick: String,
        /// Why.
        reason: String,
    },
    /// A one-shot observer received the roster.
    Observed {
        /// The nickname it gave.
        nick: String,
    },
    /// An operator released a nickname from its key.
    Released {
        /// Which.
        nick: Nick,
    },
    /// A client joined or left a channel.
    Channel {
        /// Who.
        nick: Nick,
        /// Which channel.
        channel: ChannelName,
        /// Joined (else left).
        joined: bool,
    },
    /// A client said it is away, or back.
    Away {
        /// Who.
        nick: Nick,
        /// Away (else back).
        away: bool,
    },
    /// A client renamed itself (its key now owns the new nickname too; the old one stays bound to it).
    Renamed {
        /// The nickname it had.
        from: Nick,
        /// The one it has now.
        to: Nick,
    },
}

/// A message for the daemon to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Out {
    /// To one client. Snapshot pages are [`Payload::Shared`]: one encoding serves every client that asked
    /// for the roster in the same turn.
    To(AssocId, Payload),
    /// To every client returned by [`Registry::subscribers`] at the time this is polled; shared, never copied
    /// per client.
    Broadcast(Arc<[u8]>),
}

/// Counters for `mpd status`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Successful registrations.
    pub registrations: u64,
    /// Refused registrations.
    pub rejections: u64,
    /// Roster messages that could not be parsed.
    pub malformed: u64,
    /// Delta messages built (each sent to every subscriber).
    pub deltas: u64,
    /// Snapshots started (one per client that asked or registered; a restarted one counts again).
    pub snapshots: u64,
    /// Snapshot pages handed out for sending.
    pub snapshot_pages: u64,
    /// Snapshots that waited for room in their association at least once (paced by flow control).
    pub snapshots_paced: u64,
    /// Times a roster message did not fit in its association's send buffer and was held, with what follows
    /// it for that client, until the association had room.
    pub paced_waits: u64,
    /// Times a waiting client got room again and resumed.
    pub paced_resumes: u64,
    /// Deltas held for a client until its snapshot (or earlier messages) had gone out.
    pub deltas_held: u64,
    /// Clients whose held deltas passed the bound and who got a fresh snapshot instead.
    pub held_overflows: u64,
    /// Comebacks within the flap window.
    pub flaps: u64,
    /// Entries removed after their TTL.
    pub expired: u64,
    /// Registrations refused because the nickname is bound to another key (takeover attempts, or a user who
    /// lost their key).
    pub owned_refusals: u64,
    /// Nickname bindings that lapsed (their owner away longer than the binding TTL).
    pub bindings_expired: u64,
    /// Keys asked for by clients (a chat sender or receiver checking whom it talks to).
    pub key_queries: u64,
    /// Registrations refused because their host had [`Config::max_clients_per_host`] entries.
    pub host_refusals: u64,
    /// Offline entries removed because their host had more than [`Config::max_offline_per_host`] offline
    /// (including saved ones dropped at load for the per-host caps).
    pub host_evictions: u64,
    /// Channel joins and parts done.
    pub channel_changes: u64,
    /// Away and back changes done.
    pub presence_changes: u64,
    /// Renames done.
    pub renames: u64,
    /// Join, part, away or rename requests refused (not registered, a bad name, a cap, the rate limit).
    pub requests_refused: u64,
    /// Of those, refused for coming faster than [`CHANGE_EVERY`] beyond a burst of [`CHANGE_BURST`].
    pub requests_limited: u64,
}

struct Entry {
    nick: Nick,
    /// The key the nickname is bound to; `None` only for an entry loaded from a file saved before nicknames
    /// were owned (the first key to register claims it).
    key: Option<PublicKey>,
    instance: u64,
    chat: SocketAddr,
    online: bool,
    since_ms: u64,
    /// Monotonic time it went offline, for flap detection.
    offline_at: Option<Instant>,
    flaps: u32,
    conn: Option<AssocId>,
    dirty: bool,
    /// The host it registered from: its key in `Registry::hosts` (4 bytes, where an address would take 17).
    host: u32,
    /// Channels and presence; `None` for most entries, so they cost a pointer.
    extra: Option<Box<Extra>>,
}

/// What one host (source address, see [`Registry::host_of`]) has in the roster, for the per-host caps.
struct HostEntries {
    /// The address.
    ip: IpAddr,
    /// Entries registered from it, online and offline.
    entries: usize,
    /// Slab keys of its offline entries, in no order; kept only while [`Config::max_offline_per_host`] is
    /// set, and then at most that many (so the scans below are short).
    offline: Vec<usize>,
}

impl Entry {
    fn wire(&self) -> WireEntry {
        WireEntry {
            nick: self.nick,
            instance: self.instance,
            status: if self.online {
                Status::Online
            } else {
                Status::Offline
            },
            since_ms: self.since_ms,
            chat: self.chat,
            flaps: self.flaps,
            extra: self.extra.clone(),
        }
    }

    /// The optional fields, made if there were none.
    fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// Drops the optional fields if none is set any more.
    fn tidy_extra(&mut self) {
        if self.extra.as_deref().is_some_and(Extra::is_empty) {
            self.extra = None;
        }
    }
}

/// A roster message waiting in [`Registry::poll_output`]'s queue.
enum Queued {
    /// To one client.
    To(AssocId, Payload),
    /// A delta from version `from` to `to`, for every synced subscriber; a paced one holds it instead.
    Delta {
        from: u64,
        to: u64,
        bytes: Arc<[u8]>,
    },
}

/// The roster at one version, encoded once as snapshot pages, shared by every client receiving it.
struct Snapshot {
    version: u64,
    pages: Vec<Arc<[u8]>>,
}

/// The roster output of one client that is paced by flow control (see the module docs), in sending order.
#[derive(Default)]
struct Pace {
    /// Messages that go first: one handed back for lack of room, and messages addressed to the client while
    /// it is paced (a REGISTERED), which must not overtake what is held.
    held: VecDeque<Payload>,
    /// The snapshot being sent and the index of its next page.
    snapshot: Option<(Arc<Snapshot>, usize)>,
    /// Deltas broadcast after the snapshot's version (or after the delta that did not fit), in order.
    deltas: VecDeque<Arc<[u8]>>,
    /// Bytes in `deltas`.
    delta_bytes: usize,
    /// The roster version the client holds once everything above is delivered; `None` while it has no roster
    /// coming (held messages only, its snapshot not started yet).
    version: Option<u64>,
    /// Handed a message that did not fit: wait for [`Registry::handle_writable`].
    waiting: bool,
    /// In `Registry::pace_ready`.
    queued: bool,
    /// The current snapshot has waited for room at least once (counted once in `snapshots_paced`).
    snapshot_waited: bool,
}

impl Pace {
    /// The next message to hand out, if any.
    fn next(&mut self, stats: &mut Stats) -> Option<Payload> {
        if let Some(m) = self.held.pop_front() {
            return Some(m);
        }
        if let Some((snap, next)) = &mut self.snapshot {
            if let Some(page) = snap.pages.get(*next) {
                *next += 1;
                stats.snapshot_pages += 1;
                return Some(Payload::Shared(Arc::clone(page)));
            }
            // Every page handed out: let the shared encoding go once no one else needs it.
            self.snapshot = None;
        }
        let d = self.deltas.pop_front()?;
        self.delta_bytes -= d.len();
        Some(Payload::Shared(d))
    }

    /// Starts (or restarts) a snapshot: what was held for the previous one is superseded.
    fn start(&mut self, snap: Arc<Snapshot>) {
        self.drop_roster();
        self.version = Some(snap.version);
        self.snapshot = Some((snap, 0));
        self.snapshot_waited = false;
    }

    /// Drops the snapshot and deltas not handed out yet (the held messages stay): a newer snapshot will
    /// replace them.
    fn drop_roster(&mut self) {
        self.snapshot = None;
        self.deltas.clear();
        self.delta_bytes = 0;
        self.version = None;
    }
}

/// One connected client (registered or not).
#[derive(Clone, Debug)]
struct Conn {
    entry: Option<usize>,
    remote: SocketAddr,
    /// The client's key, authenticated by its handshake.
    key: PublicKey,
    subscribed: bool,
    /// Has received its snapshot; deltas follow from then on.
    synced: bool,
    /// The rate limit of its roster changes (join, part, away, rename), as one time (GCRA): each change moves
    /// it [`CHANGE_EVERY`] on from `max(it, now)`, and a change is allowed while it is at most
    /// [`CHANGE_BURST`] changes ahead of now.
    changes_due: Instant,
}

/// A client's roster changes (join, part, away, rename) come at most this often on average: every one is a
/// delta to every client, so a loop of them from one client must not become a flood to all.
pub const CHANGE_EVERY: Duration = Duration::from_secs(1);
/// ... in bursts of up to this many: `listen --join` with many channels, or a console rejoining its channels
/// after a reconnection, is one burst.
pub const CHANGE_BURST: u32 = 40;

/// The roster.
pub struct Registry {
    cfg: Config,
    entries: Slab<Entry>,
    by_nick: HashMap<Nick, usize>,
    /// Nicknames whose entries expired, still bound to their key: key and when last online (Unix ms).
    bindings: HashMap<Nick, (PublicKey, u64)>,
    /// Roster entries (slab keys) by a hash of their look-alike key (case, UTS #39 confusables): see
    /// `looks.rs`.
    looks: HashMap<u64, u32>,
    /// Bound nicknames by the same hash.
    looks_bound: HashMap<u64, Nick>,
    /// Names sharing a look-alike key with an indexed one (from a saved roster older than the rule): normally
    /// empty.
    looks_shadowed: Vec<Nick>,
    /// Per source address: its entries, for the per-host caps. One small record per host, not per client,
    /// and only while the host has an entry.
    hosts: Slab<HostEntries>,
    /// Address → key in `hosts`.
    host_index: HashMap<IpAddr, u32>,
    conns: HashMap<AssocId, Conn>,
    version: u64,
    flushed: u64,
    dirty: Vec<usize>,
    removed: Vec<WireEntry>,
    /// Connections waiting for a snapshot at the end of this turn.
    want_snapshot: Vec<AssocId>,
    out: VecDeque<Queued>,
    /// Clients paced by flow control (see the module docs): only those being sent a snapshot or held
    /// messages.
    paced: HashMap<AssocId, Pace>,
    /// Paced clients that may have something to send and room for it, in turn order (a client that started
    /// waiting is dropped from here when reached).
    pace_ready: VecDeque<AssocId>,
    /// The latest snapshot encoding, while any client is still being sent it.
    snapshot: Weak<Snapshot>,
    /// The version the last delta handed out leads to: what every synced subscriber holds once it is sent.
    delivered: u64,
    events: VecDeque<Event>,
    probes: Vec<AssocId>,
    /// Entries whose association restarted: online until the deadline unless registered again (rare, so a
    /// short list is scanned rather than every connection).
    graces: Vec<(Instant, AssocId, usize)>,
    /// Until then, a lost association is treated like a restarted one (see `note_stall`).
    stall_grace_until: Instant,
    unsaved: bool,
    next_sweep: Instant,
    stats: Stats,
}

impl Registry {
    /// An empty roster.
    pub fn new(cfg: Config) -> Self {
        Registry {
            cfg,
            entries: Slab::new(),
            by_nick: HashMap::new(),
            bindings: HashMap::new(),
            looks: HashMap::new(),
            looks_bound: HashMap::new(),
            looks_shadowed: Vec::new(),
            hosts: Slab::new(),
            host_index: HashMap::new(),
            conns: HashMap::new(),
            version: 0,
            flushed: 0,
            dirty: Vec::new(),
            removed: Vec::new(),
            want_snapshot: Vec::new(),
            out: VecDeque::new(),
            paced: HashMap::new(),
            pace_ready: VecDeque::new(),
            snapshot: Weak::new(),
            delivered: 0,
            events: VecDeque::new(),
            probes: Vec::new(),
            graces: Vec::new(),
            stall_grace_until: Instant::ZERO,
            unsaved: false,
            next_sweep: Instant::ZERO,
            stats: Stats::default(),
        }
    }

    /// Restores a saved roster: entries all offline (a loaded client is online only once it registers again;
    /// entries that were online when saved go offline at the time of the save), with their keys, and the
    /// bindings of expired entries. Each entry counts against the host it registered from (its chat address's
    /// IP if the file did not say), and a host with more than the per-host caps allow keeps its most recent
    /// ones. Returns how many entries were loaded.
    pub fn load(&mut self, img: Image) -> usize {
        let (version, saved_ms) = (img.version, img.saved_unix_ms);
        let mut n = 0;
        for Record {
            entry: e,
            key,
            host,
        } in img.records
        {
            if self.by_nick.contains_key(&e.nick) || self.entries.len() >= self.cfg.max_clients {
                continue;
            }
            let host = self.host_id(self.host_of(host.unwrap_or(e.chat.ip())));
            let since_ms = if e.status == Status::Online {
                saved_ms
            } else {
                e.since_ms
            };
            let k = self.entries.insert(Entry {
                nick: e.nick,
                key,
                instance: e.instance,
                chat: e.chat,
                online: false,
                since_ms,
                offline_at: None,
                flaps: e.flaps,
                conn: None,
                dirty: false,
                host,
                extra: e.extra,
            });
            self.by_nick.insert(e.nick, k);
            self.looks_add(e.nick);
            self.host_add(k);
            n += 1;
        }
        for b in img.bindings {
            if !self.by_nick.contains_key(&b.nick) {
                self.bindings.insert(b.nick, (b.key, b.last_unix_ms));
                self.looks_add(b.nick);
            }
        }
        n -= self.trim_loaded();
        self.version = version;
        self.flushed = version;
        self.delivered = version;
        n
    }

    /// After [`Registry::load`]: a host with more entries than the per-host caps allow (all of them offline
    /// now, so both caps apply) keeps its most recent ones; the rest are dropped as if evicted one by one,
    /// and the roster is saved again without them. Returns how many were dropped.
    fn trim_loaded(&mut self) -> usize {
        let caps = [self.cfg.max_clients_per_host, self.cfg.max_offline_per_host];
        let Some(keep) = caps.into_iter().filter(|&c| c > 0).min() else {
            return 0;
        };
        let mut over: HashMap<u32, Vec<usize>> = self
            .hosts
            .iter()
            .filter(|(_, h)| h.entries > keep)
            .map(|(id, _)| (id as u32, Vec::new()))
            .collect();
        if over.is_empty() {
            return 0;
        }
        for (k, e) in &self.entries {
            if let Some(keys) = over.get_mut(&e.host) {
                keys.push(k);
            }
        }
        let mut dropped = 0;
        for (id, mut keys) in over {
            // Most recent first; the slab key breaks ties so the choice does not depend on hashing.
            keys.sort_unstable_by_key(|&k| (std::cmp::Reverse(self.entries[k].since_ms), k));
            let gone = keys.split_off(keep);
            log::warn!(
                "saved roster: {} entries from {}; kept the {keep} most recent (per-host caps)",
                keys.len() + gone.len(),
                self.hosts[id as usize].ip
            );
            for k in &gone {
                self.looks_remove(&self.entries[*k].nick.clone());
                let e = self.entries.remove(*k);
                self.by_nick.remove(&e.nick);
                // Dropped from the roster, still its owner's.
                self.keep_binding(&e);
            }
            let offline = if self.cfg.max_offline_per_host > 0 {
                keys.iter()
                    .copied()
                    .filter(|&k| !self.entries[k].online)
                    .collect()
            } else {
                Vec::new()
            };
            let h = &mut self.hosts[id as usize];
            h.entries = keys.len();
            h.offline = offline;
            dropped += gone.len();
        }
        self.stats.host_evictions += dropped as u64;
        self.unsaved = true;
        dropped
    }

    /// The address a registration from `ip` counts against: an IPv4-mapped IPv6 address as the IPv4 one, and
    /// a loopback address as the daemon's own `host_ip` (the address the entry shows), so a client on the
    /// daemon's host counts once whichever way it connects.
    fn host_of(&self, ip: IpAddr) -> IpAddr {
        let ip = ip.to_canonical();
        match self.cfg.host_ip {
            Some(h) if ip.is_loopback() => h,
            _ => ip,
        }
    }

    /// The key of `ip`'s record in `hosts`, made (with no entries yet) if it has none: the entry given it
    /// must be counted by [`Registry::host_add`] next, or the record is never freed.
    fn host_id(&mut self, ip: IpAddr) -> u32 {
        if let Some(&id) = self.host_index.get(&ip) {
            return id;
        }
        let id = self.hosts.insert(HostEntries {
            ip,
            entries: 0,
            offline: Vec::new(),
        }) as u32;
        self.host_index.insert(ip, id);
        id
    }

    /// Entry `k` (in the slab, with its host set) counts against its host.
    fn host_add(&mut self, k: usize) {
        let e = &self.entries[k];
        let h = &mut self.hosts[e.host as usize];
        h.entries += 1;
        if !e.online && self.cfg.max_offline_per_host > 0 {
            h.offline.push(k);
        }
    }

    /// Entry `k` (still in the slab) no longer counts against its host: it is being removed, or moves. A
    /// host left with no entries is forgotten.
    fn host_remove(&mut self, k: usize) {
        let id = self.entries[k].host as usize;
        let Some(h) = self.hosts.get_mut(id) else {
            return;
        };
        h.entries = h.entries.saturating_sub(1);
        h.offline.retain(|&x| x != k);
        if h.entries == 0 {
            let h = self.hosts.remove(id);
            self.host_index.remove(&h.ip);
        }
    }

    /// A registration for `nick` from `host`, if it would add an entry for a host already at
    /// [`Config::max_clients_per_host`]: the reason it is refused. Taking back an entry registered from the
    /// same host adds nothing, so a returning client is never refused by this.
    fn host_full(&self, host: IpAddr, nick: Nick) -> Option<String> {
        let cap = self.cfg.max_clients_per_host;
        let id = self.host_index.get(&host).copied();
        let adds = self
            .by_nick
            .get(&nick)
            .is_none_or(|&k| Some(self.entries[k].host) != id);
        let held = id.map_or(0, |id| self.hosts[id as usize].entries);
        (cap > 0 && adds && held >= cap).then(|| {
            format!(
                "too many nicknames registered from {host} ({held}, online and offline; the daemon allows {cap} per host): \
                 use one of them (offline ones stay reserved for a while), or ask whoever runs mpd to raise --max-clients-per-host"
            )
        })
    }

    /// Entry `k` just went offline: it joins its host's offline entries, and past
    /// [`Config::max_offline_per_host`] the one of them offline longest is removed, as an expiry would.
    fn note_offline(&mut self, k: usize, wall_ms: u64) {
        let cap = self.cfg.max_offline_per_host;
        if cap == 0 {
            return;
        }
        let Some(h) = self.hosts.get_mut(self.entries[k].host as usize) else {
            return;
        };
        let host = h.ip;
        h.offline.push(k);
        if h.offline.len() <= cap {
            return;
        }
        let entries = &self.entries;
        let oldest = h
            .offline
            .iter()
            .copied()
            .filter(|&x| x != k)
            .min_by_key(|&x| (entries[x].since_ms, x));
        if let Some(old) = oldest {
            let e = self.retire(old, wall_ms);
            self.stats.host_evictions += 1;
            self.events.push_back(Event::Evicted { nick: e.nick, host });
        }
    }

    /// Removes offline entry `k` from the roster (expired, or evicted for its host's cap) and returns it; the
    /// nickname stays its owner's for the rest of the binding TTL, counted from when it was last online.
    fn retire(&mut self, k: usize, wall_ms: u64) -> Entry {
        let e = self.remove_entry(k, wall_ms);
        self.keep_binding(&e);
        e
    }

    /// Keeps an entry's nickname bound to its key after the entry leaves the roster (retired or trimmed),
    /// dated from when it was last online so the binding TTL runs from there.
    fn keep_binding(&mut self, e: &Entry) {
        if let Some(key) = e.key {
            self.bindings.insert(e.nick, (key, e.since_ms));
            self.looks_add(e.nick);
        }
    }

    /// Removes entry `k` from the roster: its removal goes out in the next delta and the roster is saved.
    fn remove_entry(&mut self, k: usize, wall_ms: u64) -> Entry {
        self.host_remove(k);
        self.looks_remove(&self.entries[k].nick.clone());
        let e = self.entries.remove(k);
        self.by_nick.remove(&e.nick);
        self.dirty.retain(|&d| d != k);
        self.version += 1;
        self.unsaved = true;
        self.removed.push(WireEntry {
            status: Status::Removed,
            since_ms: wall_ms,
            ..e.wire()
        });
        e
    }

    /// The current roster version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// (online, offline) entries, and connections holding no entry (observers, clients not registered yet,
    /// associations whose entry a newer one took over).
    pub fn counts(&self) -> (usize, usize, usize) {
        let online = self.entries.iter().filter(|(_, e)| e.online).count();
        let observers = self.conns.values().filter(|c| c.entry.is_none()).count();
        (online, self.entries.len() - online, observers)
    }

    /// Every entry, as the wire shows it (for status).
    pub fn entries(&self) -> impl Iterator<Item = WireEntry> + '_ {
        self.entries.iter().map(|(_, e)| e.wire())
    }

    /// What to save: every entry with its key, and the bindings of expired entries, at `wall_ms`.
    pub fn image(&self, wall_ms: u64) -> Image {
        Image {
            records: self
                .entries
                .iter()
                .map(|(_, e)| Record {
                    entry: e.wire(),
                    key: e.key,
                    host: self.hosts.get(e.host as usize).map(|h| h.ip),
                })
                .collect(),
            bindings: self
                .bindings
                .iter()
                .map(|(nick, &(key, last_unix_ms))| Binding {
                    nick: *nick,
                    key,
                    last_unix_ms,
                })
                .collect(),
            version: self.version,
            saved_unix_ms: wall_ms,
        }
    }

    /// The key a nickname is bound to (its entry's, or its binding's after the entry expired).
    pub fn owner(&self, nick: &Nick) -> Option<PublicKey> {
        match self.by_nick.get(nick) {
            Some(&k) => self.entries[k].key,
            None => self.bindings.get(nick).map(|b| b.0),
        }
    }

    /// Frees `nick` from its key (`mpd release`): its offline entry is removed from the roster and its
    /// binding forgotten, so the next key to register it owns it. An online nickname is not released: its
    /// holder would keep it until it leaves, which is not what an operator asking expects.
    pub fn release(&mut self, wall_ms: u64, nick: &Nick) -> Result<(), ReleaseError> {
        if let Some(&k) = self.by_nick.get(nick) {
            if self.entries[k].online {
                return Err(ReleaseError::Online);
            }
            self.remove_entry(k, wall_ms);
        } else if self.bindings.remove(nick).is_none() {
            return Err(ReleaseError::Unknown);
        } else {
            self.looks_remove(nick);
            self.unsaved = true;
        }
        self.events.push_back(Event::Released { nick: *nick });
        Ok(())
    }

    /// The host with the most entries and how many it has, for status (how close anyone is to
    /// [`Config::max_clients_per_host`]); `None` with an empty roster. Walks the hosts, not the entries.
    pub fn busiest_host(&self) -> Option<(IpAddr, usize)> {
        self.hosts
            .iter()
            .map(|(_, h)| (h.ip, h.entries))
            .max_by_key(|&(ip, n)| (n, std::cmp::Reverse(ip)))
    }

    /// Entries that flapped at least once, with their counts.
    pub fn flapping(&self) -> impl Iterator<Item = (Nick, u32)> + '_ {
        self.entries
            .iter()
            .filter(|(_, e)| e.flaps > 0)
            .map(|(_, e)| (e.nick, e.flaps))
    }

    /// Whether anything changed since the last call (for debounced saving).
    pub fn take_unsaved(&mut self) -> bool {
        std::mem::take(&mut self.unsaved)
    }

    /// Clients to deliver broadcasts to: registered or observing, subscribed, and past their snapshot.
    pub fn subscribers(&self) -> impl Iterator<Item = AssocId> + '_ {
        self.conns
            .iter()
            .filter(|(_, c)| c.subscribed && c.synced)
            .map(|(id, _)| *id)
    }

    /// The next message to send: replies and broadcasts first, then the paced clients' snapshot pages and held
    /// deltas, one message at a time. Hand each to the client's association; one it has no room for goes back
    /// through [`Registry::handle_blocked`] before the next call.
    pub fn poll_output(&mut self) -> Option<Out> {
        while let Some(q) = self.out.pop_front() {
            match q {
                Queued::To(id, p) => match self.paced.get_mut(&id) {
                    // Behind what is held for it, not ahead.
                    Some(pace) => {
                        pace.held.push_back(p);
                        Self::ready(&mut self.pace_ready, id, pace);
                    }
                    None => return Some(Out::To(id, p)),
                },
                Queued::Delta { from, to, bytes } => {
                    self.delivered = to;
                    self.hold_delta(from, to, &bytes);
                    return Some(Out::Broadcast(bytes));
                }
            }
        }
        // A burst (a storm of joins) can grow the queue a lot; do not keep that memory once it is empty.
        if self.out.capacity() > 4096 {
            self.out = VecDeque::new();
        }
        self.poll_paced()
    }

    /// The next message of a paced client that may send; a client with nothing left is synced and unpaced.
    fn poll_paced(&mut self) -> Option<Out> {
        while let Some(&id) = self.pace_ready.front() {
            let Some(pace) = self.paced.get_mut(&id) else {
                self.pace_ready.pop_front();
                continue;
            };
            if !pace.waiting
                && let Some(m) = pace.next(&mut self.stats)
            {
                // It stays first in line: the next call continues with it until it waits or is done.
                return Some(Out::To(id, m));
            }
            self.pace_ready.pop_front();
            pace.queued = false;
            if pace.waiting {
                continue;
            }
            // Everything went out: from here on it gets deltas as they are broadcast.
            let version = pace.version;
            self.paced.remove(&id);
            if let Some(v) = version
                && let Some(c) = self.conns.get_mut(&id)
            {
                // A subscriber held every delta since its snapshot; an observer's roster stays as it was sent.
                debug_assert!(
                    !c.subscribed || v == self.delivered,
                    "a paced subscriber ends at the broadcast version"
                );
                c.synced = true;
            }
        }
        if self.pace_ready.capacity() > 4096 && self.pace_ready.is_empty() {
            self.pace_ready = VecDeque::new();
        }
        None
    }

    fn ready(pace_ready: &mut VecDeque<AssocId>, id: AssocId, pace: &mut Pace) {
        if !pace.queued {
            pace.queued = true;
            pace_ready.push_back(id);
        }
    }

    /// A delta from `from` to `to` is being broadcast: every paced subscriber whose roster will be at `from`
    /// holds it, to follow what it is being sent; one that would hold more than the bound gets a fresh
    /// snapshot instead. Costs a step per paced client (few), not per connection.
    fn hold_delta(&mut self, from: u64, to: u64, bytes: &Arc<[u8]>) {
        let (max_n, max_bytes) = (self.cfg.max_held_deltas, self.cfg.max_held_bytes);
        for (id, pace) in self.paced.iter_mut() {
            let Some(v) = pace.version else { continue };
            if v > from || !self.conns.get(id).is_some_and(|c| c.subscribed) {
                // Its snapshot already includes this change, or it wants no deltas.
                continue;
            }
            if v < from || pace.deltas.len() >= max_n || pace.delta_bytes + bytes.len() > max_bytes
            {
                // Too far behind (or, which cannot happen, a gap): a snapshot at the newer version replaces
                // the snapshot and deltas held; what went out already is superseded by it.
                pace.drop_roster();
                self.stats.held_overflows += 1;
                if !self.want_snapshot.contains(id) {
                    self.want_snapshot.push(*id);
                }
                continue;
            }
            pace.deltas.push_back(Arc::clone(bytes));
            pace.delta_bytes += bytes.len();
            pace.version = Some(to);
            self.stats.deltas_held += 1;
        }
    }

    /// The message just polled for `conn` did not fit in its association's send buffer: it is held, with
    /// everything after it for this client, until [`Registry::handle_writable`]. A synced client stops getting
    /// broadcasts meanwhile; the deltas it misses are held for it (bounded) instead.
    pub fn handle_blocked(&mut self, conn: AssocId, msg: Payload) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        // A synced client holds the version of the broadcast just handed out, whether or not this message was
        // that broadcast.
        let synced = std::mem::replace(&mut c.synced, false);
        let pace = self.paced.entry(conn).or_insert_with(|| Pace {
            version: synced.then_some(self.delivered),
            ..Pace::default()
        });
        pace.held.push_front(msg);
        pace.waiting = true;
        self.stats.paced_waits += 1;
        if pace.snapshot.is_some() && !pace.snapshot_waited {
            pace.snapshot_waited = true;
            self.stats.snapshots_paced += 1;
        }
    }

    /// `conn`'s association has room again (after [`Registry::handle_blocked`]): its paced output resumes at
    /// the next [`Registry::poll_output`].
    pub fn handle_writable(&mut self, conn: AssocId) {
        if let Some(pace) = self.paced.get_mut(&conn)
            && pace.waiting
        {
            pace.waiting = false;
            self.stats.paced_resumes += 1;
            Self::ready(&mut self.pace_ready, conn, pace);
        }
    }

    /// The next event to log.
    pub fn poll_event(&mut self) -> Option<Event> {
        let e = self.events.pop_front();
        if e.is_none() && self.events.capacity() > 4096 {
            self.events = VecDeque::new();
        }
        e
    }

    /// The next connection to heartbeat at once (a holder of a nickname someone else asks for).
    pub fn poll_probe(&mut self) -> Option<AssocId> {
        self.probes.pop()
    }

    fn touch(&mut self, k: usize) {
        self.version += 1;
        self.unsaved = true;
        let e = &mut self.entries[k];
        if !e.dirty {
            e.dirty = true;
            self.dirty.push(k);
        }
    }

    fn reply(
        &mut self,
        conn: AssocId,
        result: RegisterResult,
        retry_after: Duration,
        reason: String,
    ) {
        let m = ServerMsg::Registered {
            result,
            daemon: self.cfg.daemon,
            retry_after_ms: retry_after.as_millis().min(u128::from(u32::MAX)) as u32,
            reason,
        };
        self.out.push_back(Queued::To(conn, m.encode().into()));
    }

    fn reject(
        &mut self,
        conn: AssocId,
        nick: String,
        result: RegisterResult,
        retry: Duration,
        reason: String,
    ) {
        self.stats.rejections += 1;
        self.events.push_back(Event::Rejected {
            nick,
            reason: reason.clone(),
        });
        self.reply(conn, result, retry, reason);
    }

    /// A client whose handshake proved it holds `key` is connected on `conn` (before it registers).
    pub fn connected(&mut self, conn: AssocId, remote: SocketAddr, key: PublicKey) {
        self.conns.insert(
            conn,
            Conn {
                entry: None,
                remote,
                key,
                subscribed: false,
                synced: false,
                changes_due: Instant::ZERO,
            },
        );
    }

    fn want_snapshot(&mut self, conn: AssocId) {
        if !self.want_snapshot.contains(&conn) {
            self.want_snapshot.push(conn);
        }
    }

    /// A roster message arrived on `conn`.
    pub fn handle_message(&mut self, now: Instant, wall_ms: u64, conn: AssocId, bytes: &[u8]) {
        let msg = match ClientMsg::parse(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.stats.malformed += 1;
                log::debug!("conn {conn}: {e}");
                return;
            }
        };
        if !self.conns.contains_key(&conn) {
            return;
        }
        match msg {
            ClientMsg::Resync => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.synced = false;
                }
                self.want_snapshot(conn);
            }
            ClientMsg::Register(r) => self.register(now, wall_ms, conn, r),
            ClientMsg::KeyQuery { nick } => {
                // Any client with a session may ask (keys are public; the secret, if any, already decided
                // who has a session). The answer follows this client's other roster messages in order.
                self.stats.key_queries += 1;
                let key = self.owner(&nick);
                let m = ServerMsg::Key { nick, key };
                self.out.push_back(Queued::To(conn, m.encode().into()));
            }
            ClientMsg::Join { channel } => self.set_channel(now, conn, channel, true),
            ClientMsg::Part { channel } => self.set_channel(now, conn, channel, false),
            ClientMsg::Away { message } => self.set_away(now, conn, message),
            ClientMsg::Rename { nick } => self.rename(now, wall_ms, conn, &nick),
        }
    }

    fn answer(&mut self, conn: AssocId, request: Request, refusal: Option<String>) {
        if refusal.is_some() {
            self.stats.requests_refused += 1;
        }
        let m = ServerMsg::Answer {
            request,
            ok: refusal.is_none(),
            reason: refusal.unwrap_or_default(),
        };
        self.out.push_back(Queued::To(conn, m.encode().into()));
    }

    /// The entry `conn` registered, or the refusal sent for `request` if it has none (an observer, or a
    /// client that has not registered yet).
    fn registered_entry(&mut self, now: Instant, conn: AssocId, request: Request) -> Option<usize> {
        let c = self.conns.get_mut(&conn)?;
        let Some(k) = c.entry else {
            self.answer(
                conn,
                request,
                Some("only a client in the roster can do that (register first)".into()),
            );
            return None;
        };
        let due = c.changes_due.max(now);
        let limit = now + CHANGE_EVERY * CHANGE_BURST;
        if due >= limit {
            let wait = due.saturating_since(limit) + CHANGE_EVERY;
            self.stats.requests_limited += 1;
            self.answer(
                conn,
                request,
                Some(format!(
                    "too many changes in a row (join, part, away, nick): try again in {} s",
                    wait.as_secs().max(1)
                )),
            );
            return None;
        }
        c.changes_due = due + CHANGE_EVERY;
        Some(k)
    }

    /// JOIN (`join` true) or PART: the client's channels change, and every client learns it from the delta.
    fn set_channel(&mut self, now: Instant, conn: AssocId, channel: ChannelName, join: bool) {
        let request = if join { Request::Join } else { Request::Part };
        let Some(k) = self.registered_entry(now, conn, request) else {
            return;
        };
        let e = &mut self.entries[k];
        let chans = e.extra.as_deref().map_or(&[][..], |x| &x.channels);
        let (at, count) = (chans.binary_search(&channel), chans.len());
        let refusal = match (join, at) {
            // Joining a channel one is in already changes nothing, and is no error: a client joins its
            // channels again after reconnecting.
            (true, Ok(_)) => None,
            (true, Err(_)) if count >= MAX_CHANNELS_PER_CLIENT => Some(format!(
                "you are in {MAX_CHANNELS_PER_CLIENT} channels already, the most one can be in: leave one \
                 first (part #NAME)"
            )),
            (false, Err(_)) => Some(format!("you are not in {channel}")),
            (true, Err(i)) | (false, Ok(i)) => {
                if join {
                    e.extra_mut().channels.insert(i, channel);
                } else {
                    e.extra_mut().channels.remove(i);
                    e.tidy_extra();
                }
                let nick = e.nick;
                self.touch(k);
                self.stats.channel_changes += 1;
                self.events.push_back(Event::Channel {
                    nick,
                    channel,
                    joined: join,
                });
                None
            }
        };
        self.answer(conn, request, refusal);
    }

    /// AWAY: the client is away with a message, or back (`None`).
    fn set_away(&mut self, now: Instant, conn: AssocId, message: Option<String>) {
        let Some(k) = self.registered_entry(now, conn, Request::Away) else {
            return;
        };
        // One line, no escapes: every client shows it in its roster listing.
        let message = message.map(|m| {
            crate::utf8_prefix(crate::peer::sanitize_line(&m).trim(), MAX_AWAY).to_string()
        });
        let e = &mut self.entries[k];
        if e.extra.as_deref().and_then(|x| x.away.as_ref()) != message.as_ref() {
            let away = message.is_some();
            e.extra_mut().away = message;
            e.tidy_extra();
            let nick = e.nick;
            self.touch(k);
            self.stats.presence_changes += 1;
            self.events.push_back(Event::Away { nick, away });
        }
        self.answer(conn, Request::Away, None);
    }

    /// RENAME: the client's entry takes the new nickname, which its key now owns; the old one stays bound to
    /// the key (so no one else can take it and receive what was meant for its owner) until the binding TTL
    /// or an operator releases it. Every client sees the old entry removed, marked renamed, and the new one.
    fn rename(&mut self, now: Instant, wall_ms: u64, conn: AssocId, to: &str) {
        let Some(k) = self.registered_entry(now, conn, Request::Rename) else {
            return;
        };
        let key = self.conns[&conn].key;
        let current = self.entries[k].nick;
        let refusal = match Nick::new(to) {
            Err(e) => Some(format!("invalid nickname {to:?}: {e}")),
            Ok(n) if n == current => None,
            Ok(n) if self.owner(&n).is_some_and(|o| o != key) => Some(format!(
                "the nickname {n} belongs to another user's key; choose another"
            )),
            Ok(n) if self.by_nick.contains_key(&n) => Some(format!(
                "the nickname {n} is in the roster already; choose another"
            )),
            Ok(n) => {
                // A new spelling of our own nickname (`Alice` for `alice`) looks like it by definition: that
                // is no reason to refuse, and the old spelling is not kept bound beside it. Anything else is
                // refused if it looks like another's name.
                let keep_old = n.look_alike() != current.look_alike();
                let refusal = keep_old
                    .then(|| self.look_alike_refusal(&n, key, false))
                    .flatten();
                if refusal.is_none() {
                    self.move_entry(k, n, key, wall_ms, keep_old);
                }
                refusal
            }
        };
        self.answer(conn, Request::Rename, refusal);
    }

    /// Entry `k` takes nickname `n` (checked by [`Registry::rename`]): the old entry goes out removed and
    /// marked renamed, the new one follows in the same delta; the old name stays bound to `key` if
    /// `keep_old`.
    fn move_entry(&mut self, k: usize, n: Nick, key: PublicKey, wall_ms: u64, keep_old: bool) {
        let from = self.entries[k].nick;
        // Out of the look-alike index under the old name while the entry still holds it.
        self.looks_remove(&from);
        if self.bindings.remove(&n).is_some() {
            self.looks_remove(&n);
        }
        let e = &mut self.entries[k];
        let gone = WireEntry {
            status: Status::Removed,
            since_ms: wall_ms,
            extra: Some(Box::new(Extra {
                renamed_to: Some(n),
                ..Extra::default()
            })),
            ..e.wire()
        };
        e.nick = n;
        self.by_nick.remove(&from);
        self.by_nick.insert(n, k);
        self.looks_add(n);
        if keep_old {
            self.bindings.insert(from, (key, wall_ms));
            self.looks_add(from);
        }
        self.removed.push(gone);
        self.touch(k);
        self.stats.renames += 1;
        self.events.push_back(Event::Renamed { from, to: n });
    }

    fn register(&mut self, now: Instant, wall_ms: u64, conn: AssocId, r: Register) {
        let remote = self.conns[&conn].remote;
        let subscribe = r.flags & flags::SUBSCRIBE != 0;
        if r.flags & flags::OBSERVER != 0 {
            if r.flags & flags::CLAIM != 0 && !self.claim(conn, wall_ms, &r.nick) {
                return;
            }
            let c = self.conns.get_mut(&conn).unwrap_or_else(|| unreachable!());
            c.subscribed = subscribe;
            self.events.push_back(Event::Observed { nick: r.nick });
            self.reply(conn, RegisterResult::Ok, Duration::ZERO, String::new());
            self.want_snapshot(conn);
            return;
        }
        let mut ip = r
            .chat_ip
            .filter(|a| !a.is_unspecified())
            .unwrap_or(remote.ip());
        if ip.is_loopback()
            && let Some(h) = self.cfg.host_ip
        {
            ip = h;
        }
        let chat = SocketAddr::new(ip, r.chat_port);
        let nick = match Nick::new(&r.nick) {
            Ok(n) => n,
            Err(e) => {
                let reason = format!("invalid nickname {:?}: {e}", r.nick);
                self.reject(
                    conn,
                    r.nick,
                    RegisterResult::InvalidNick,
                    Duration::ZERO,
                    reason,
                );
                return;
            }
        };
        if let Some(old) = self.conns[&conn].entry {
            // Registering again on the same association: only the same nickname makes sense.
            if self.entries[old].nick != nick {
                let reason = format!(
                    "this connection is already registered as {}",
                    self.entries[old].nick
                );
                self.reject(
                    conn,
                    nick.to_string(),
                    RegisterResult::BadRequest,
                    Duration::ZERO,
                    reason,
                );
                return;
            }
        }
        let key = self.conns[&conn].key;
        if self.owner(&nick).is_some_and(|owner| owner != key) {
            self.refuse_owned(conn, nick, "choose another nickname");
            return;
        }
        // `NickTaken` with no retry hint: what every client already shows as "choose another nickname".
        if let Some(reason) = self.look_alike_refusal(&nick, key, false) {
            self.reject(
                conn,
                nick.to_string(),
                RegisterResult::NickTaken,
                Duration::ZERO,
                reason,
            );
            return;
        }
        // One host cannot fill the roster (issue 14): `Full` is what an older client already shows as a
        // refusal with the daemon's reason, so no new result code is needed on the wire.
        let host = self.host_of(remote.ip());
        if let Some(reason) = self.host_full(host, nick) {
            self.stats.host_refusals += 1;
            self.reject(
                conn,
                nick.to_string(),
                RegisterResult::Full,
                Duration::ZERO,
                reason,
            );
            return;
        }
        let k = match self.by_nick.get(&nick).copied() {
            Some(k) => {
                let e = &self.entries[k];
                let held_elsewhere = e.online && e.conn.is_some_and(|c| c != conn);
                // The same process (same instance) on a new association, or a new process on the same host
                // and port (a restart): either takes the entry over at once. Anyone else must wait until the
                // holder is seen to be gone; it is probed now so that happens quickly if it is dead.
                let same_client = e.instance == r.instance || e.chat == chat;
                if held_elsewhere && !same_client {
                    let holder = e.conn;
                    let reason = format!(
                        "the nickname {} is in use by an online client at {}; choose another, or retry in {} s if that was you",
                        nick,
                        e.chat,
                        self.cfg.retry_hint.as_secs().max(1)
                    );
                    if let Some(h) = holder {
                        self.probes.push(h);
                    }
                    self.reject(
                        conn,
                        nick.to_string(),
                        RegisterResult::NickTaken,
                        self.cfg.retry_hint,
                        reason,
                    );
                    return;
                }
                // A different process took over; the same one on a new association is no news to anyone.
                let replaced = held_elsewhere && e.instance != r.instance;
                if let Some(old_conn) = e.conn.filter(|&c| c != conn)
                    && let Some(oc) = self.conns.get_mut(&old_conn)
                {
                    oc.entry = None;
                }
                // Counted again below, online and against the host it registers from now.
                self.host_remove(k);
                let host = self.host_id(host);
                let e = &mut self.entries[k];
                // An entry saved before nicknames were owned is claimed by the first key to register it.
                e.key = Some(key);
                let was_online = e.online;
                let changed = !was_online || e.instance != r.instance || e.chat != chat;
                if !was_online
                    && let Some(t) = e.offline_at
                    && now.saturating_since(t) <= self.cfg.flap_window
                {
                    e.flaps += 1;
                    self.stats.flaps += 1;
                }
                e.instance = r.instance;
                e.chat = chat;
                e.conn = Some(conn);
                if !was_online || replaced {
                    e.online = true;
                    e.since_ms = wall_ms;
                    e.offline_at = None;
                }
                e.host = host;
                self.host_add(k);
                if changed {
                    self.touch(k);
                }
                if !was_online || replaced {
                    self.events.push_back(Event::Online {
                        nick,
                        chat,
                        replaced,
                    });
                }
                k
            }
            None => {
                if self.entries.len() >= self.cfg.max_clients {
                    let reason = format!("the roster is full ({} clients)", self.cfg.max_clients);
                    self.reject(
                        conn,
                        nick.to_string(),
                        RegisterResult::Full,
                        Duration::ZERO,
                        reason,
                    );
                    return;
                }
                if self.bindings.remove(&nick).is_some() {
                    self.looks_remove(&nick);
                }
                let host = self.host_id(host);
                let k = self.entries.insert(Entry {
                    nick,
                    key: Some(key),
                    instance: r.instance,
                    chat,
                    online: true,
                    since_ms: wall_ms,
                    offline_at: None,
                    flaps: 0,
                    conn: Some(conn),
                    dirty: false,
                    host,
                    extra: None,
                });
                self.by_nick.insert(nick, k);
                self.looks_add(nick);
                self.host_add(k);
                self.touch(k);
                self.events.push_back(Event::Joined { nick, chat });
                k
            }
        };
        let no_roster = r.flags & flags::NO_ROSTER != 0;
        let c = self.conns.get_mut(&conn).unwrap_or_else(|| unreachable!());
        c.entry = Some(k);
        c.subscribed = subscribe && !no_roster;
        self.graces.retain(|g| g.2 != k);
        self.stats.registrations += 1;
        self.reply(conn, RegisterResult::Ok, Duration::ZERO, String::new());
        if !no_roster {
            self.want_snapshot(conn);
        }
    }

    /// Refuses `nick` to a key that does not own it (whether its owner is online or not, and without saying
    /// where the owner is), saying what to do instead (`instead`).
    fn refuse_owned(&mut self, conn: AssocId, nick: Nick, instead: &str) {
        self.stats.owned_refusals += 1;
        let reason = format!(
            "the nickname {nick} belongs to another user's key; {instead} (if it is yours and you lost your \
             key, ask the daemon's operator to run `mpd release {nick}`)"
        );
        self.reject(
            conn,
            nick.to_string(),
            RegisterResult::NickOwned,
            Duration::ZERO,
            reason,
        );
    }

    /// An observer that speaks under `nick` (`mpc send`) claims it: refused (false, the refusal sent) if the
    /// nickname is invalid or another key owns it; else bound to this key, as a registration would bind it,
    /// without a roster entry.
    fn claim(&mut self, conn: AssocId, wall_ms: u64, nick: &str) -> bool {
        let key = self.conns[&conn].key;
        let nick = match Nick::new(nick) {
            Ok(n) => n,
            Err(e) => {
                let reason = format!("invalid nickname {nick:?}: {e}");
                self.reject(
                    conn,
                    nick.to_string(),
                    RegisterResult::InvalidNick,
                    Duration::ZERO,
                    reason,
                );
                return false;
            }
        };
        if let Some(reason) = self.look_alike_refusal(&nick, key, true) {
            self.reject(
                conn,
                nick.to_string(),
                RegisterResult::NickTaken,
                Duration::ZERO,
                reason,
            );
            return false;
        }
        match self.owner(&nick) {
            Some(owner) if owner != key => {
                self.refuse_owned(conn, nick, "send under your own nickname");
                false
            }
            Some(_) => {
                // Ours already: a binding's "last seen" moves on, an entry keeps its own.
                if let Some(b) = self.bindings.get_mut(&nick) {
                    b.1 = wall_ms;
                    self.unsaved = true;
                }
                true
            }
            None => {
                match self.by_nick.get(&nick) {
                    // An entry saved before nicknames were owned.
                    Some(&k) => self.entries[k].key = Some(key),
                    None => {
                        self.bindings.insert(nick, (key, wall_ms));
                        self.looks_add(nick);
                    }
                }
                self.unsaved = true;
                true
            }
        }
    }

    fn set_offline(&mut self, now: Instant, wall_ms: u64, k: usize, why: &'static str) {
        let e = &mut self.entries[k];
        e.conn = None;
        if !e.online {
            return;
        }
        e.online = false;
        e.since_ms = wall_ms;
        e.offline_at = Some(now);
        let nick = e.nick;
        self.touch(k);
        self.events.push_back(Event::Offline { nick, why });
        self.note_offline(k, wall_ms);
    }

    /// The daemon was stalled until `now`: its clients may have given up on it meanwhile and dropped their
    /// associations, though they are alive and will register again. For `window`, a lost association keeps
    /// its entry online for the restart grace period instead of taking it offline at once.
    pub fn note_stall(&mut self, now: Instant, window: Duration) {
        self.stall_grace_until = self.stall_grace_until.max(now + window);
    }

    /// The association `conn` ended (`why` says how, for the log): its client goes offline.
    pub fn connection_lost(
        &mut self,
        now: Instant,
        wall_ms: u64,
        conn: AssocId,
        why: &'static str,
    ) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.want_snapshot.retain(|&x| x != conn);
        self.paced.remove(&conn);
        if now < self.stall_grace_until
            && let Some(k) = c.entry
        {
            self.graces.push((now + self.cfg.restart_grace, conn, k));
            return;
        }
        // Its registered entry, or the one it held before an association restart.
        let grace = self
            .graces
            .iter()
            .position(|g| g.1 == conn)
            .map(|i| self.graces.swap_remove(i).2);
        for k in c.entry.into_iter().chain(grace) {
            if self.entries.get(k).is_some_and(|e| e.conn == Some(conn)) {
                self.set_offline(now, wall_ms, k, why);
            }
        }
    }

    /// The association `conn` was restarted by its peer: a new process (or the same one after losing us) is on
    /// the other end and will register again. Until it does, within the grace period, its entry stays online.
    pub fn connection_restarted(&mut self, now: Instant, conn: AssocId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        // The connection starts over: unregistered, unsynced. Its old entry keeps pointing at it, so a
        // registration under any nickname proceeds normally, and the old entry goes offline after the grace
        // period unless re-registered.
        c.synced = false;
        c.subscribed = false;
        if let Some(k) = c.entry.take() {
            self.graces.push((now + self.cfg.restart_grace, conn, k));
        }
        self.want_snapshot.retain(|&x| x != conn);
        // What was queued in the association is gone with the restart, and what was held is moot.
        self.paced.remove(&conn);
    }

    /// When [`Registry::handle_timeout`] has work next: the earliest restart grace period's end, or the next
    /// sweep for expired offline entries.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let grace = self.graces.iter().map(|g| g.0).min();
        Some(grace.map_or(self.next_sweep, |g| g.min(self.next_sweep)))
    }

    /// Timers: restart grace periods and the offline TTL. Cheap to call every turn.
    pub fn handle_timeout(&mut self, now: Instant, wall_ms: u64) {
        while let Some(i) = self.graces.iter().position(|g| g.0 <= now) {
            let (_, id, k) = self.graces.swap_remove(i);
            let still_held = self.conns.get(&id).is_none_or(|c| c.entry != Some(k));
            if still_held && self.entries.get(k).is_some_and(|e| e.conn == Some(id)) {
                self.set_offline(now, wall_ms, k, "restarted and did not register again");
            }
        }
        if now < self.next_sweep {
            return;
        }
        // The TTL is checked a few times per TTL (at least every minute): expiry is not time-critical.
        let every =
            (self.cfg.offline_ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(60));
        self.next_sweep = now + every;
        let ttl_ms = self.cfg.offline_ttl.as_millis() as u64;
        let old: Vec<usize> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.online && wall_ms.saturating_sub(e.since_ms) >= ttl_ms)
            .map(|(k, _)| k)
            .collect();
        for k in old {
            let e = self.retire(k, wall_ms);
            self.stats.expired += 1;
            self.events.push_back(Event::Expired { nick: e.nick });
        }
        let binding_ms = self.cfg.binding_ttl.as_millis() as u64;
        let before = self.bindings.len();
        self.bindings
            .retain(|_, b| wall_ms.saturating_sub(b.1) < binding_ms);
        let lapsed = before - self.bindings.len();
        if lapsed > 0 {
            self.looks_prune();
            self.stats.bindings_expired += lapsed as u64;
            self.unsaved = true;
        }
    }

    /// Ends a loop turn: one coalesced delta of everything that changed for the synced subscribers, then
    /// snapshots for clients that registered or asked for one.
    pub fn flush(&mut self) {
        if self.version != self.flushed {
            let mut changed: Vec<WireEntry> = self.removed.drain(..).collect();
            for k in self.dirty.drain(..) {
                if let Some(e) = self.entries.get_mut(k) {
                    e.dirty = false;
                    changed.push(e.wire());
                }
            }
            self.push_deltas(&changed);
            self.flushed = self.version;
        }
        // Every client that needs the roster gets the pages of the current version, encoded once, paced.
        let want = std::mem::take(&mut self.want_snapshot);
        for conn in want {
            let Some(c) = self.conns.get_mut(&conn) else {
                continue;
            };
            // Off the broadcast list until its snapshot and the deltas after it have gone out.
            c.synced = false;
            let snap = self.current_snapshot();
            let pace = self.paced.entry(conn).or_default();
            pace.start(snap);
            self.stats.snapshots += 1;
            if !pace.waiting {
                Self::ready(&mut self.pace_ready, conn, pace);
            }
        }
    }

    /// Splits `changed` into delta messages of at most `page_bytes`, spreading the version range over them so
    /// each follows the one before. With nothing visible changed (only removals of entries never flushed),
    /// one empty delta still advances the clients' versions.
    fn push_deltas(&mut self, changed: &[WireEntry]) {
        let pages =
            wire::encode_pages(changed, self.cfg.page_bytes, |b| wire::begin_delta(b, 0, 1));
        let pieces = pages.len();
        let (mut from, to) = (self.flushed, self.version);
        for (i, mut b) in pages.into_iter().enumerate() {
            // Version steps: the last piece ends at `to`; earlier ones one step each.
            let end = if i + 1 == pieces {
                to
            } else {
                (from + 1).min(to - 1)
            };
            wire::set_delta_range(&mut b, from, end);
            self.out.push_back(Queued::Delta {
                from,
                to: end,
                bytes: b.into(),
            });
            self.stats.deltas += 1;
            from = end;
        }
    }

    /// The roster at the current version as snapshot pages: the encoding still in use if there is one for
    /// this version, else a new one.
    fn current_snapshot(&mut self) -> Arc<Snapshot> {
        if let Some(s) = self.snapshot.upgrade()
            && s.version == self.version
        {
            return s;
        }
        let version = self.version;
        let mut pages = wire::encode_pages(
            self.entries.iter().map(|(_, e)| e.wire()),
            self.cfg.page_bytes,
            |b| wire::begin_snapshot(b, version, 0, 1),
        );
        let n = u16::try_from(pages.len()).unwrap_or(u16::MAX);
        for (p, b) in pages.iter_mut().enumerate() {
            wire::set_snapshot_page(b, p as u16, n);
        }
        let s = Arc::new(Snapshot {
            version,
            pages: pages.into_iter().map(Arc::from).collect(),
        });
        self.snapshot = Arc::downgrade(&s);
        s
    }
}

/// Why [`Registry::release`] did nothing.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ReleaseError {
    /// No entry or binding has this nickname.
    Unknown,
    /// Its owner is online now.
    Online,
}

impl std::fmt::Display for ReleaseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReleaseError::Unknown => "no such nickname in the roster or its bindings",
            ReleaseError::Online => {
                "its owner is online now; it can be released once that client has left"
            }
        })
    }
}

impl std::error::Error for ReleaseError {}

#[cfg(test)]
mod tests;
