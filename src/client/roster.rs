//! A client's copy of the roster, kept in step with the daemon's snapshots and deltas.
//!
//! [`Roster::apply`] takes each roster message in order. A snapshot (all its pages) replaces the copy; a delta
//! applies only if it starts at the version held, otherwise the copy is out of step and the caller must ask
//! for a resync ([`Applied::NeedResync`]). Each application reports what changed, entry by entry, in the
//! terms `mpc listen --json` prints: joined, online, offline, removed.
//!
//! The rules for versions and pages live in [`RosterSync`], apart from where the entries are kept (a
//! [`RosterStore`]): [`Roster`] keeps every field of every entry by nickname, and a load harness that plays
//! thousands of clients in one process keeps one bit per entry through the same rules. Nothing here reads a
//! clock or allocates beyond what the store does; nothing panics on any message.

use std::collections::BTreeMap;

use crate::codec::Malformed;
use crate::group::{ChannelName, Scope};
use crate::nick::Nick;
use crate::registry::wire::{Entry, ServerMsg, Status};

/// What happened to one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A nickname not seen before.
    Joined(Entry),
    /// A known nickname came online (again, or as a new process).
    Online(Entry),
    /// An entry went offline.
    Offline(Entry),
    /// An entry was removed (offline past the daemon's TTL).
    Removed(Nick),
    /// Same status, other details changed (address, instance).
    Updated(Entry),
    /// A nickname became another (the same key): the old entry is gone, the new one holds its channels and
    /// presence. Reported instead of the old one's removal and the new one's arrival.
    Renamed {
        /// The nickname it had.
        from: Nick,
        /// The nickname it has now.
        to: Nick,
    },
    /// An entry joined or left a channel.
    Channel {
        /// Who.
        nick: Nick,
        /// Which channel.
        channel: ChannelName,
        /// Joined (else left).
        joined: bool,
    },
    /// An entry went away (with its message) or came back (`None`).
    Presence {
        /// Who.
        nick: Nick,
        /// The away message; `None`: back.
        away: Option<String>,
    },
}

/// The result of applying one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Not a roster message, or a snapshot page with more to come.
    Nothing,
    /// The first complete snapshot: the whole roster is now known.
    Snapshot(Vec<Change>),
    /// Changes since the previous version.
    Changes(Vec<Change>),
    /// A delta did not follow the version held: request a resync and ignore deltas until the snapshot.
    NeedResync,
}

/// Where a copy of the roster keeps its entries, filled by [`RosterSync`] with entries of type `E` (an owned
/// [`Entry`], or a borrowed `EntryRef` read in place from the message). The store decides what to keep of
/// each entry and how to report what changed.
pub trait RosterStore<E> {
    /// A snapshot being assembled from its pages.
    type Pending;
    /// Page 0 of a snapshot arrived: an empty snapshot to fill.
    fn begin_snapshot(&mut self) -> Self::Pending;
    /// One entry of a snapshot page, in order.
    fn snapshot_entry(&mut self, pending: &mut Self::Pending, entry: E);
    /// Every page arrived: the copy becomes `pending`.
    fn end_snapshot(&mut self, pending: Self::Pending);
    /// One entry of a delta that follows the version held, in order.
    fn delta_entry(&mut self, entry: E);
}

/// What [`RosterSync`] did with one message.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Synced {
    /// Nothing changed: a snapshot page with more to come or whose first page was missed, a delta before the
    /// first snapshot, or a delta already applied.
    Nothing,
    /// A snapshot's last page arrived and the store holds that snapshot now. `first`: no version was held
    /// before (the first snapshot, or the first since a gap or a reset).
    Snapshot {
        /// No version was held before.
        first: bool,
    },
    /// A delta was applied.
    Delta,
    /// A delta did not follow the version held: request a resync; deltas are ignored until the snapshot.
    NeedResync,
}

/// The version held and the snapshot being assembled, for one copy of the roster whose entries are kept
/// by a [`RosterStore`]: the gap, duplicate and page-order rules every roster client follows.
#[derive(Clone, Debug)]
pub struct RosterSync<P> {
    version: Option<u64>,
    partial: Option<Pages<P>>,
}

/// A snapshot being received page by page.
#[derive(Clone, Debug)]
struct Pages<P> {
    version: u64,
    pages: u16,
    /// Pages received, in order.
    seen: u16,
    pending: P,
}

impl<P> Default for RosterSync<P> {
    fn default() -> Self {
        RosterSync {
            version: None,
            partial: None,
        }
    }
}

impl<P> RosterSync<P> {
    /// Unsynchronised: no version, no snapshot under way.
    pub fn new() -> Self {
        Self::default()
    }

    /// The version held, once a snapshot arrived.
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    /// Forgets the version and any snapshot under way (the daemon restarted or was lost). The store keeps
    /// its entries: the next snapshot replaces them.
    pub fn reset(&mut self) {
        self.version = None;
        self.partial = None;
    }

    /// Applies one snapshot page (`page` of `pages`, at `version`) to `store`. Pages must come in order from
    /// page 0; a page out of that order drops the snapshot under way and waits for the next one.
    ///
    /// An `Err` is a malformed entry: the snapshot under way is dropped and the copy is out of step, as after
    /// [`Synced::NeedResync`].
    pub fn snapshot<E, S: RosterStore<E, Pending = P>>(
        &mut self,
        store: &mut S,
        version: u64,
        page: u16,
        pages: u16,
        entries: impl IntoIterator<Item = Result<E, Malformed>>,
    ) -> Result<Synced, Malformed> {
        let next_page = matches!(&self.partial,
            Some(p) if p.version == version && p.pages == pages && p.seen == page);
        if !next_page {
            if page != 0 {
                // A page of a snapshot whose start we missed: wait for the next one.
                self.partial = None;
                return Ok(Synced::Nothing);
            }
            self.partial = Some(Pages {
                version,
                pages,
                seen: 0,
                pending: store.begin_snapshot(),
            });
        }
        let Some(p) = &mut self.partial else {
            return Ok(Synced::Nothing);
        };
        for e in entries {
            match e {
                Ok(e) => store.snapshot_entry(&mut p.pending, e),
                Err(e) => {
                    self.reset();
                    return Err(e);
                }
            }
        }
        p.seen += 1;
        if p.seen < p.pages {
            return Ok(Synced::Nothing);
        }
        let Some(p) = self.partial.take() else {
            return Ok(Synced::Nothing);
        };
        let first = self.version.is_none();
        store.end_snapshot(p.pending);
        self.version = Some(p.version);
        Ok(Synced::Snapshot { first })
    }

    /// Applies a delta from version `from` to `to` to `store`, if it follows the version held.
    ///
    /// An `Err` is a malformed entry (the entries before it were applied): the copy is out of step, as after
    /// [`Synced::NeedResync`].
    pub fn delta<E, S: RosterStore<E, Pending = P>>(
        &mut self,
        store: &mut S,
        from: u64,
        to: u64,
        entries: impl IntoIterator<Item = Result<E, Malformed>>,
    ) -> Result<Synced, Malformed> {
        match self.version {
            // Not synchronised yet: the snapshot on its way already includes this.
            None => return Ok(Synced::Nothing),
            Some(v) if v == from => {}
            // Already applied (a duplicate after a resync raced with it).
            Some(v) if v >= to => return Ok(Synced::Nothing),
            Some(_) => {
                self.reset();
                return Ok(Synced::NeedResync);
            }
        }
        for e in entries {
            match e {
                Ok(e) => store.delta_entry(e),
                Err(e) => {
                    self.reset();
                    return Err(e);
                }
            }
        }
        self.version = Some(to);
        Ok(Synced::Delta)
    }
}

/// The roster as this client knows it.
#[derive(Clone, Debug, Default)]
pub struct Roster {
    sync: RosterSync<Vec<Entry>>,
    copy: Entries,
}

/// [`Roster`]'s store: every entry by nickname, and the changes of the message being applied.
#[derive(Clone, Debug, Default)]
struct Entries {
    by_nick: BTreeMap<Nick, Entry>,
    changes: Vec<Change>,
    /// New nicknames announced by a rename whose entries have not arrived yet (they follow in the same delta,
    /// or the next piece of it): their arrival is not news.
    renamed: Vec<Nick>,
}

impl Entries {
    /// What changed from `old` to `new`, appended to `out`.
    fn diff(old: Option<&Entry>, new: &Entry, out: &mut Vec<Change>) {
        let o = match (old, new.status) {
            (None, Status::Removed) => return,
            (None, _) => return out.push(Change::Joined(new.clone())),
            (Some(_), Status::Removed) => {
                return out.push(match new.renamed_to() {
                    Some(to) => Change::Renamed { from: new.nick, to },
                    None => Change::Removed(new.nick),
                });
            }
            (Some(o), _) => o,
        };
        let before = out.len();
        match new.status {
            Status::Online if o.status != Status::Online || o.instance != new.instance => {
                out.push(Change::Online(new.clone()))
            }
            Status::Offline if o.status != Status::Offline => {
                out.push(Change::Offline(new.clone()))
            }
            _ => {}
        }
        let (was, now) = (o.channels(), new.channels());
        for c in was.iter().filter(|c| !new.in_channel(c)) {
            out.push(Change::Channel {
                nick: new.nick,
                channel: *c,
                joined: false,
            });
        }
        for c in now.iter().filter(|c| !o.in_channel(c)) {
            out.push(Change::Channel {
                nick: new.nick,
                channel: *c,
                joined: true,
            });
        }
        if o.away() != new.away() {
            out.push(Change::Presence {
                nick: new.nick,
                away: new.away().map(str::to_string),
            });
        }
        if out.len() == before && o != new {
            out.push(Change::Updated(new.clone()));
        }
    }
}

impl RosterStore<Entry> for Entries {
    type Pending = Vec<Entry>;

    fn begin_snapshot(&mut self) -> Vec<Entry> {
        Vec::new()
    }

    fn snapshot_entry(&mut self, pending: &mut Vec<Entry>, entry: Entry) {
        pending.push(entry);
    }

    fn end_snapshot(&mut self, all: Vec<Entry>) {
        let mut next: BTreeMap<Nick, Entry> = BTreeMap::new();
        for e in all.into_iter().filter(|e| e.status != Status::Removed) {
            next.insert(e.nick, e);
        }
        let by_nick = &self.by_nick;
        for e in next.values() {
            Self::diff(by_nick.get(&e.nick), e, &mut self.changes);
        }
        self.changes.extend(
            by_nick
                .keys()
                .filter(|k| !next.contains_key(k))
                .map(|k| Change::Removed(*k)),
        );
        self.by_nick = next;
        self.renamed.clear();
    }

    fn delta_entry(&mut self, e: Entry) {
        let old = self.by_nick.get(&e.nick);
        if old.is_none()
            && let Some(i) = self.renamed.iter().position(|n| *n == e.nick)
        {
            self.renamed.swap_remove(i);
        } else {
            Self::diff(old, &e, &mut self.changes);
        }
        if e.status == Status::Removed {
            if let Some(to) = e.renamed_to().filter(|_| old.is_some()) {
                // Bounded by the entries of a delta: each rename names one.
                self.renamed.push(to);
            }
            self.by_nick.remove(&e.nick);
        } else {
            self.by_nick.insert(e.nick, e);
        }
    }
}

impl Roster {
    /// An empty, unsynchronised roster.
    pub fn new() -> Self {
        Self::default()
    }

    /// The version held, once a snapshot arrived.
    pub fn version(&self) -> Option<u64> {
        self.sync.version()
    }

    /// Every entry, by nickname.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.copy.by_nick.values()
    }

    /// One entry.
    pub fn get(&self, nick: &Nick) -> Option<&Entry> {
        self.copy.by_nick.get(nick)
    }

    /// Who a message said in `scope` goes to, `me` left out: for everyone, every entry online; for a channel,
    /// every member, online or not (an offline member's copy waits for it); nobody for one-to-one (the caller
    /// names the receiver). In alphabetical order.
    pub fn members(&self, me: &Nick, scope: &Scope) -> Vec<&Entry> {
        let mut v: Vec<&Entry> = self
            .copy
            .by_nick
            .values()
            .filter(|e| e.nick != *me)
            .filter(|e| match scope {
                Scope::Direct => false,
                Scope::Everyone => e.status == Status::Online,
                Scope::Channel(c) => e.in_channel(c),
            })
            .collect();
        v.sort_by(|a, b| a.nick.as_str().cmp(b.nick.as_str()));
        v
    }

    /// Every channel someone is in, with its members (in alphabetical order), by name.
    pub fn channels(&self) -> BTreeMap<ChannelName, Vec<&Entry>> {
        let mut m: BTreeMap<ChannelName, Vec<&Entry>> = BTreeMap::new();
        for e in self.copy.by_nick.values() {
            for c in e.channels() {
                m.entry(*c).or_default().push(e);
            }
        }
        for v in m.values_mut() {
            v.sort_by(|a, b| a.nick.as_str().cmp(b.nick.as_str()));
        }
        m
    }

    /// Forgets everything (the daemon restarted or was lost); the next snapshot is diffed against nothing.
    pub fn reset(&mut self) {
        self.sync.reset();
    }

    /// Applies one message from the daemon.
    pub fn apply(&mut self, m: &ServerMsg) -> Applied {
        let synced = match m {
            ServerMsg::Registered { .. }
            | ServerMsg::Answer { .. }
            | ServerMsg::Key { .. }
            | ServerMsg::BroadcastKeys { .. }
            | ServerMsg::Ticket { .. } => {
                return Applied::Nothing;
            }
            ServerMsg::Snapshot {
                version,
                page,
                pages,
                entries,
            } => self
                .sync
                .snapshot(&mut self.copy, *version, *page, *pages, owned(entries)),
            ServerMsg::Delta { from, to, entries } => {
                self.sync.delta(&mut self.copy, *from, *to, owned(entries))
            }
        };
        let changes = std::mem::take(&mut self.copy.changes);
        match synced {
            Ok(Synced::Nothing) => Applied::Nothing,
            Ok(Synced::Snapshot { first: true }) => Applied::Snapshot(changes),
            Ok(Synced::Snapshot { first: false } | Synced::Delta) => Applied::Changes(changes),
            // Entries of a `ServerMsg` were all checked when it was parsed: no `Err` comes here.
            Ok(Synced::NeedResync) | Err(_) => Applied::NeedResync,
        }
    }
}

/// A parsed message's entries as [`RosterSync`] takes them.
fn owned(entries: &[Entry]) -> impl Iterator<Item = Result<Entry, Malformed>> + '_ {
    entries.iter().cloned().map(Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(n: &str, status: Status, instance: u64) -> Entry {
        Entry {
            nick: Nick::new(n).unwrap(),
            instance,
            status,
            since_ms: 1,
            chat: "127.0.0.1:1".parse().unwrap(),
            flaps: 0,
            extra: None,
        }
    }

    #[test]
    fn snapshot_pages_then_deltas() {
        let mut r = Roster::new();
        let delta_early = ServerMsg::Delta {
            from: 4,
            to: 5,
            entries: vec![],
        };
        assert_eq!(r.apply(&delta_early), Applied::Nothing);
        let p0 = ServerMsg::Snapshot {
            version: 5,
            page: 0,
            pages: 2,
            entries: vec![e("a", Status::Online, 1)],
        };
        let p1 = ServerMsg::Snapshot {
            version: 5,
            page: 1,
            pages: 2,
            entries: vec![e("b", Status::Offline, 1)],
        };
        assert_eq!(r.apply(&p0), Applied::Nothing);
        let Applied::Snapshot(c) = r.apply(&p1) else {
            panic!()
        };
        assert_eq!(c.len(), 2);
        assert_eq!(r.version(), Some(5));
        let d = ServerMsg::Delta {
            from: 5,
            to: 7,
            entries: vec![
                e("b", Status::Online, 2),
                e("a", Status::Removed, 1),
                e("c", Status::Online, 1),
            ],
        };
        assert_eq!(
            r.apply(&d),
            Applied::Changes(vec![
                Change::Online(e("b", Status::Online, 2)),
                Change::Removed(Nick::new("a").unwrap()),
                Change::Joined(e("c", Status::Online, 1)),
            ])
        );
        assert_eq!(r.entries().count(), 2);
        // A gap: resync needed, deltas ignored until the next snapshot.
        let gap = ServerMsg::Delta {
            from: 9,
            to: 10,
            entries: vec![],
        };
        assert_eq!(r.apply(&gap), Applied::NeedResync);
        assert_eq!(r.version(), None);
        // A snapshot after a resync is diffed against what we had.
        let s = ServerMsg::Snapshot {
            version: 10,
            page: 0,
            pages: 1,
            entries: vec![e("b", Status::Offline, 2)],
        };
        assert_eq!(
            r.apply(&s),
            Applied::Snapshot(vec![
                Change::Offline(e("b", Status::Offline, 2)),
                Change::Removed(Nick::new("c").unwrap())
            ])
        );
    }

    #[test]
    fn a_missed_first_page_waits_for_the_next_snapshot() {
        let mut r = Roster::new();
        let p1 = ServerMsg::Snapshot {
            version: 1,
            page: 1,
            pages: 2,
            entries: vec![],
        };
        assert_eq!(r.apply(&p1), Applied::Nothing);
        assert_eq!(r.version(), None);
    }
}
