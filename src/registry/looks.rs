//! Nicknames that look alike (issue 15, item 4): the daemon keeps apart nicknames that differ only in case
//! (`Bob`, `bob`) or that Unicode's UTS #39 calls confusable (`alice`, `аlice` with a Cyrillic `а`), as
//! [`Nick::look_alike`] defines them. A new nickname that looks like a roster entry (online or offline,
//! whoever's), or like a nickname bound to another key, is refused with the one it resembles; re-registering
//! one's own nickname never is.
//!
//! The index holds a 64-bit hash of each look-alike key, never a string: per roster entry a hash and a slab
//! key (16 bytes a bucket, about 25 bytes a client with the table's spare room), so 100 000 clients stay within
//! DESIGN.md's kilobyte each. Bound nicknames (their entries expired) are indexed apart, with the nickname
//! itself, since the index must name them and no slab holds them; they are few next to entries. A hash match
//! is confirmed on the keys themselves before anyone is refused, so a collision costs a false "no" to no one.
//!
//! Two names can share a key only when they were both registered before this rule (a saved roster with `Bob`
//! and `bob`) or their hashes collide: the second is then *shadowed*, in a list that is normally empty,
//! checked too and promoted into the index when the first leaves.

#![forbid(unsafe_code)]

use crate::identity::PublicKey;
use crate::nick::Nick;

use super::Registry;

/// A nickname that a new one looks like.
struct Holder {
    nick: Nick,
    /// In the roster (else only bound to a key).
    entry: bool,
    key: Option<PublicKey>,
}

impl Registry {
    /// The nickname indexed under hash `h`, if it is still where the index says.
    fn looks_at(&self, h: u64) -> Option<Nick> {
        if let Some(&k) = self.looks.get(&h) {
            return self.entries.get(k as usize).map(|e| e.nick);
        }
        self.looks_bound
            .get(&h)
            .filter(|n| self.bindings.contains_key(*n))
            .copied()
    }

    /// Drops whatever is indexed under hash `h`.
    fn looks_clear(&mut self, h: u64) {
        self.looks.remove(&h);
        self.looks_bound.remove(&h);
    }

    /// Indexes `nick`, a roster entry (already in `by_nick`) or else a binding (already in `bindings`).
    pub(super) fn looks_add(&mut self, nick: Nick) {
        let h = nick.look_alike_hash();
        let taken = self.looks_at(h).filter(|o| *o != nick);
        let entry = self.by_nick.get(&nick).copied();
        if let Some(old) = taken {
            // A key registering a new spelling of its own bound nickname (`Alice` for `alice`, whose entry
            // expired) moves to it: the old binding goes, the new entry keeps the look-alike from everyone
            // else.
            let moved = entry.is_some_and(|k| {
                !self.by_nick.contains_key(&old)
                    && self.bindings.get(&old).map(|b| b.0) == self.entries[k].key
                    && old.look_alike() == nick.look_alike()
            });
            if !moved {
                if !self.looks_shadowed.contains(&nick) {
                    self.looks_shadowed.push(nick);
                }
                return;
            }
            self.bindings.remove(&old);
        }
        self.looks_clear(h);
        match entry {
            Some(k) => {
                self.looks.insert(h, k as u32);
            }
            None => {
                self.looks_bound.insert(h, nick);
            }
        }
    }

    /// Forgets `nick` from the index: call while its entry is still in the slab (a binding may already be
    /// gone). A shadowed name with the same key takes its place.
    pub(super) fn looks_remove(&mut self, nick: &Nick) {
        let h = nick.look_alike_hash();
        let held_here = match self.looks.get(&h) {
            Some(&k) => self.entries.get(k as usize).map(|e| e.nick) == Some(*nick),
            None => self.looks_bound.get(&h) == Some(nick),
        };
        if held_here {
            self.looks_clear(h);
        }
        if self.looks_shadowed.is_empty() {
            return;
        }
        self.looks_shadowed.retain(|n| n != nick);
        if !held_here {
            return;
        }
        while let Some(i) = self
            .looks_shadowed
            .iter()
            .position(|n| n.look_alike_hash() == h)
        {
            let n = self.looks_shadowed.swap_remove(i);
            if self.by_nick.contains_key(&n) || self.bindings.contains_key(&n) {
                self.looks_add(n);
                break;
            }
        }
    }

    /// After bindings lapsed: drops the index's bound holders that are gone.
    pub(super) fn looks_prune(&mut self) {
        let bindings = &self.bindings;
        self.looks_bound.retain(|_, n| bindings.contains_key(n));
        let (by_nick, bindings) = (&self.by_nick, &self.bindings);
        self.looks_shadowed
            .retain(|n| by_nick.contains_key(n) || bindings.contains_key(n));
    }

    /// Every name that looks like `nick` (other than `nick` itself): the indexed one, and shadowed ones.
    fn looks_like(&self, nick: &Nick) -> Vec<Holder> {
        let h = nick.look_alike_hash();
        let key = nick.look_alike();
        let indexed = self.looks_at(h);
        let shadowed = self
            .looks_shadowed
            .iter()
            .filter(|n| n.look_alike_hash() == h)
            .copied();
        indexed
            .into_iter()
            .chain(shadowed)
            .filter(|n| n != nick && n.look_alike() == key)
            .map(|n| match self.by_nick.get(&n) {
                Some(&k) => Holder {
                    nick: n,
                    entry: true,
                    key: self.entries[k].key,
                },
                None => Holder {
                    nick: n,
                    entry: false,
                    key: self.bindings.get(&n).map(|b| b.0),
                },
            })
            .collect()
    }

    /// Why `key` may not take `nick`, a nickname new to it, if it looks like another: a roster entry's
    /// (anyone's: two entries that look alike mislead everyone who reads the roster) or another key's bound
    /// nickname. `None` for a nickname already in the roster or bound (re-registering one's own is fine;
    /// someone else's is refused by ownership). `claim` is true for a sender's claim, which also may not
    /// take a look-alike of its own key's bound nickname (it would be a second binding of the same name).
    pub(super) fn look_alike_refusal(
        &self,
        nick: &Nick,
        key: PublicKey,
        claim: bool,
    ) -> Option<String> {
        if self.by_nick.contains_key(nick) || self.bindings.contains_key(nick) {
            return None;
        }
        let h = self
            .looks_like(nick)
            .into_iter()
            .find(|h| h.entry || claim || h.key != Some(key))?;
        let (them, mine) = (h.nick, h.key == Some(key));
        if nick.same_folded(&them) {
            let whose = match (h.entry, mine) {
                (true, false) => "is already in the roster",
                (true, true) => "is already in the roster under your key (use that nickname)",
                (false, false) => "is bound to another user's key",
                (false, true) => "is bound to your key (use that nickname)",
            };
            return Some(format!(
                "the nickname \"{nick}\" is taken: \"{them}\" {whose}, and nicknames that differ only in \
                 case are the same nickname; choose another"
            ));
        }
        let whose = match (h.entry, mine) {
            (true, false) => "who is already in the roster",
            (true, true) => "already in the roster under your key (use that nickname)",
            (false, false) => "a nickname bound to another user's key",
            (false, true) => "a nickname bound to your key (use that nickname)",
        };
        let why = nick.differences(&them);
        let why = if why.is_empty() {
            String::new()
        } else {
            format!(" (with {why})")
        };
        Some(format!(
            "the nickname \"{nick}\"{why} looks like \"{them}\", {whose}; nicknames that Unicode calls confusable \
             (UTS #39) are kept apart, so choose another"
        ))
    }
}
