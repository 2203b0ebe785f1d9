//! The roster, sans-IO: who is registered, online or offline, and what each connected client has been told.
//!
//! Clients live in a slab with one nickname index. Every change bumps the roster version and marks the entry
//! dirty; [`Registry::flush`] (called once per loop turn) turns all changes of the turn into one delta for
//! every synced subscriber, so a storm of N joins costs O(N · turns) messages, not O(N²). A client that just
//! registered gets a snapshot (in pages) at the version the turn ends with, and deltas after that.
//!
//! Inputs are roster messages, connection events and the time (monotonic `now` for timers, wall-clock `wall_ms`
//! for the "since" times users see); outputs are messages to send ([`Out`]), connections to probe, and
//! [`Event`]s for the log. Nothing here touches a socket or a clock. Memory: one slab entry (about 120 bytes)
//! per client plus its index entry; per connected client one small [`Conn`].

#![forbid(unsafe_code)]

pub mod saved;
pub mod wire;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use slab::Slab;

use crate::nick::Nick;
use crate::sctp::{AssocId, Payload};
use crate::time::Instant;
use wire::{ClientMsg, Entry as WireEntry, Register, RegisterResult, ServerMsg, Status, flags};

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
}

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
    /// Snapshot pages sent.
    pub snapshot_pages: u64,
    /// Comebacks within the flap window.
    pub flaps: u64,
    /// Entries removed after their TTL.
    pub expired: u64,
}

struct Entry {
    nick: Nick,
    instance: u64,
    chat: SocketAddr,
    online: bool,
    since_ms: u64,
    /// Monotonic time it went offline, for flap detection.
    offline_at: Option<Instant>,
    flaps: u32,
    conn: Option<AssocId>,
    dirty: bool,
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
        }
    }
}

/// One connected client (registered or not).
#[derive(Clone, Debug)]
struct Conn {
    entry: Option<usize>,
    remote: SocketAddr,
    subscribed: bool,
    /// Has received its snapshot; deltas follow from then on.
    synced: bool,
}

/// The roster.
pub struct Registry {
    cfg: Config,
    entries: Slab<Entry>,
    by_nick: HashMap<Nick, usize>,
    conns: HashMap<AssocId, Conn>,
    version: u64,
    flushed: u64,
    dirty: Vec<usize>,
    removed: Vec<WireEntry>,
    /// Connections waiting for a snapshot at the end of this turn.
    want_snapshot: Vec<AssocId>,
    out: VecDeque<(Out, Option<AssocId>)>,
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
            conns: HashMap::new(),
            version: 0,
            flushed: 0,
            dirty: Vec::new(),
            removed: Vec::new(),
            want_snapshot: Vec::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            probes: Vec::new(),
            graces: Vec::new(),
            stall_grace_until: Instant::ZERO,
            unsaved: false,
            next_sweep: Instant::ZERO,
            stats: Stats::default(),
        }
    }

    /// Restores saved entries, all offline (a loaded client is online only once it registers again). Entries
    /// that were online when saved go offline at `saved_ms`. Returns how many were loaded.
    pub fn load(
        &mut self,
        entries: impl IntoIterator<Item = WireEntry>,
        version: u64,
        saved_ms: u64,
    ) -> usize {
        let mut n = 0;
        for e in entries {
            if self.by_nick.contains_key(&e.nick) || self.entries.len() >= self.cfg.max_clients {
                continue;
            }
            let since_ms = if e.status == Status::Online {
                saved_ms
            } else {
                e.since_ms
            };
            let k = self.entries.insert(Entry {
                nick: e.nick,
                instance: e.instance,
                chat: e.chat,
                online: false,
                since_ms,
                offline_at: None,
                flaps: e.flaps,
                conn: None,
                dirty: false,
            });
            self.by_nick.insert(e.nick, k);
            n += 1;
        }
        self.version = version;
        self.flushed = version;
        n
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

    /// Every entry, as the wire shows it (for saving and for status).
    pub fn entries(&self) -> impl Iterator<Item = WireEntry> + '_ {
        self.entries.iter().map(|(_, e)| e.wire())
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

    /// The next message to send.
    pub fn poll_output(&mut self) -> Option<Out> {
        let Some((out, synced)) = self.out.pop_front() else {
            // A burst (a storm of joins) can grow the queue a lot; do not keep that memory once it is empty.
            if self.out.capacity() > 4096 {
                self.out = VecDeque::new();
            }
            return None;
        };
        // A client counts as synced once its last snapshot page leaves, so the broadcast queued before that
        // page (the delta to the version the snapshot already includes) does not reach it.
        if let Some(id) = synced
            && let Some(c) = self.conns.get_mut(&id)
        {
            c.synced = true;
        }
        Some(out)
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
        self.out.push_back((Out::To(conn, m.encode().into()), None));
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

    /// A new association is up (before it registers).
    pub fn connected(&mut self, conn: AssocId, remote: SocketAddr) {
        self.conns.insert(
            conn,
            Conn {
                entry: None,
                remote,
                subscribed: false,
                synced: false,
            },
        );
    }

    fn want_snapshot(&mut self, conn: AssocId) {
        if !self.want_snapshot.contains(&conn) {
            self.want_snapshot.push(conn);
        }
    }

    /// `conn` missed a message (its send buffer was full): it gets a fresh snapshot at the next flush instead
    /// of deltas it could not apply.
    pub fn desync(&mut self, conn: AssocId) {
        if let Some(c) = self.conns.get_mut(&conn)
            && c.synced
        {
            c.synced = false;
            self.want_snapshot(conn);
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
        }
    }

    fn register(&mut self, now: Instant, wall_ms: u64, conn: AssocId, r: Register) {
        let remote = self.conns[&conn].remote;
        let subscribe = r.flags & flags::SUBSCRIBE != 0;
        if r.flags & flags::OBSERVER != 0 {
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
                let e = &mut self.entries[k];
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
                let k = self.entries.insert(Entry {
                    nick,
                    instance: r.instance,
                    chat,
                    online: true,
                    since_ms: wall_ms,
                    offline_at: None,
                    flaps: 0,
                    conn: Some(conn),
                    dirty: false,
                });
                self.by_nick.insert(nick, k);
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
            let e = self.entries.remove(k);
            self.by_nick.remove(&e.nick);
            self.dirty.retain(|&d| d != k);
            self.version += 1;
            self.unsaved = true;
            self.stats.expired += 1;
            self.removed.push(WireEntry {
                status: Status::Removed,
                since_ms: wall_ms,
                ..e.wire()
            });
            self.events.push_back(Event::Expired { nick: e.nick });
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
        // Every client that needs the roster this turn gets the same pages, encoded once.
        let want = std::mem::take(&mut self.want_snapshot);
        let want: Vec<AssocId> = want
            .into_iter()
            .filter(|c| self.conns.contains_key(c))
            .collect();
        if !want.is_empty() {
            let pages = self.snapshot_pages();
            for conn in want {
                for (p, b) in pages.iter().enumerate() {
                    let last = p + 1 == pages.len();
                    self.out.push_back((
                        Out::To(conn, Payload::Shared(Arc::clone(b))),
                        last.then_some(conn),
                    ));
                    self.stats.snapshot_pages += 1;
                }
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
            self.out.push_back((Out::Broadcast(b.into()), None));
            self.stats.deltas += 1;
            from = end;
        }
    }

    /// The roster at the current version, encoded once as snapshot pages.
    fn snapshot_pages(&mut self) -> Vec<Arc<[u8]>> {
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
        pages.into_iter().map(Arc::from).collect()
    }
}

#[cfg(test)]
mod tests;
