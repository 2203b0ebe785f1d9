//! A client's copy of the roster, kept in step with the daemon's snapshots and deltas.
//!
//! [`Roster::apply`] takes each roster message in order. A snapshot (all its pages) replaces the copy; a delta
//! applies only if it starts at the version held, otherwise the copy is out of step and the caller must ask
//! for a resync ([`Applied::NeedResync`]). Each application reports what changed, entry by entry, in the
//! terms `mpc listen --json` prints: joined, online, offline, removed.

use std::collections::BTreeMap;

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

/// The roster as this client knows it.
#[derive(Clone, Debug, Default)]
pub struct Roster {
    version: Option<u64>,
    entries: BTreeMap<Nick, Entry>,
    /// Pages of a snapshot being received: (version, pages expected, entries so far, pages seen).
    partial: Option<(u64, u16, Vec<Entry>, u16)>,
}

impl Roster {
    /// An empty, unsynchronised roster.
    pub fn new() -> Self {
        Self::default()
    }

    /// The version held, once a snapshot arrived.
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    /// Every entry, by nickname.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// One entry.
    pub fn get(&self, nick: &Nick) -> Option<&Entry> {
        self.entries.get(nick)
    }

    /// Forgets everything (the daemon restarted or was lost); the next snapshot is diffed against nothing.
    pub fn reset(&mut self) {
        self.version = None;
        self.partial = None;
    }

    fn diff_one(old: Option<&Entry>, new: &Entry) -> Option<Change> {
        match (old, new.status) {
            (None, Status::Removed) => None,
            (None, _) => Some(Change::Joined(*new)),
            (Some(_), Status::Removed) => Some(Change::Removed(new.nick)),
            (Some(o), Status::Online)
                if o.status != Status::Online || o.instance != new.instance =>
            {
                Some(Change::Online(*new))
            }
            (Some(o), Status::Offline) if o.status != Status::Offline => {
                Some(Change::Offline(*new))
            }
            (Some(o), _) if o != new => Some(Change::Updated(*new)),
            _ => None,
        }
    }

    /// Applies one message from the daemon.
    pub fn apply(&mut self, m: &ServerMsg) -> Applied {
        match m {
            ServerMsg::Registered { .. } => Applied::Nothing,
            ServerMsg::Snapshot {
                version,
                page,
                pages,
                entries,
            } => {
                let fresh = match &mut self.partial {
                    Some((v, n, acc, seen)) if v == version && n == pages && *seen == *page => {
                        acc.extend_from_slice(entries);
                        *seen += 1;
                        false
                    }
                    _ => true,
                };
                if fresh {
                    if *page != 0 {
                        // A page of a snapshot whose start we missed: wait for the next one.
                        self.partial = None;
                        return Applied::Nothing;
                    }
                    self.partial = Some((*version, *pages, entries.clone(), 1));
                }
                let Some((v, n, _, seen)) = &self.partial else {
                    return Applied::Nothing;
                };
                if seen < n {
                    return Applied::Nothing;
                }
                let v = *v;
                let (_, _, all, _) = self.partial.take().unwrap_or_default();
                let first = self.version.is_none();
                let mut next: BTreeMap<Nick, Entry> = BTreeMap::new();
                for e in all.into_iter().filter(|e| e.status != Status::Removed) {
                    next.insert(e.nick, e);
                }
                let mut changes: Vec<Change> = next
                    .values()
                    .filter_map(|e| Self::diff_one(self.entries.get(&e.nick), e))
                    .collect();
                changes.extend(
                    self.entries
                        .keys()
                        .filter(|k| !next.contains_key(k))
                        .map(|k| Change::Removed(*k)),
                );
                self.entries = next;
                self.version = Some(v);
                if first {
                    Applied::Snapshot(changes)
                } else {
                    Applied::Changes(changes)
                }
            }
            ServerMsg::Delta { from, to, entries } => {
                match self.version {
                    // Not synchronised yet: the snapshot on its way already includes this.
                    None => return Applied::Nothing,
                    Some(v) if v == *from => {}
                    // Already applied (a duplicate after a resync raced with it).
                    Some(v) if v >= *to => return Applied::Nothing,
                    Some(_) => {
                        self.version = None;
                        return Applied::NeedResync;
                    }
                }
                let mut changes = Vec::new();
                for e in entries {
                    if let Some(c) = Self::diff_one(self.entries.get(&e.nick), e) {
                        changes.push(c);
                    }
                    if e.status == Status::Removed {
                        self.entries.remove(&e.nick);
                    } else {
                        self.entries.insert(e.nick, *e);
                    }
                }
                self.version = Some(*to);
                Applied::Changes(changes)
            }
        }
    }
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
