//! Messages waiting for delivery, kept across `mpc` runs in the queue of the history database
//! (`STATE_DIR/history-NICK.sqlite3`, table `queue`, see [`crate::io::history::queue`]).
//!
//! [`Outbox`] keeps that table in step with a [`Peer`]: [`Outbox::restore`] hands the peer what an earlier
//! run (or `mpc send` to an offline receiver) left, and [`Outbox::sync`], called after each loop turn, writes
//! what changed since the last call, one transaction per message queued or taken out (delivered or given
//! up). It also picks up, every [`LOOK_EVERY`], messages another process queued meanwhile (`mpc send` while
//! a console runs), so they go as soon as their receiver is back rather than at the next start.
//!
//! The file is created only when a message has to wait: with `--history-max 0` (no history) the queue is
//! still kept, because a message the user was told is queued must not vanish with the process, and a user
//! who never sends to someone offline still gets no file.
//!
//! An older `mpc` kept the queue in `outbox-NICK.json`: [`Outbox::restore`] imports that file once (one
//! transaction) and removes it. One that does not parse is renamed `outbox-NICK.json.bad` and reported.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::group::Scope;
use crate::io::history::queue::Waiting;
use crate::io::history::{self, History, Limits};
use crate::nick::Nick;
use crate::peer::{Peer, Target};
use crate::time::Instant;

/// The default state directory.
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("multiproto");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/state/multiproto")
}

/// How often [`Outbox::sync`] looks for messages another process queued. A query of a small table: cheap,
/// and a message left by `mpc send` waits at most this long after its receiver is back.
pub const LOOK_EVERY: Duration = Duration::from_secs(2);

/// The queue of one nickname, kept in step with its peer.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    me: Nick,
    /// Opened on first need: at start if the file exists, else when a message first has to wait.
    db: Option<History>,
    /// Why the database cannot be used, once said: nothing more is tried this run.
    off: Option<String>,
    /// The messages the table holds that this run knows of (queued by it, or handed to its peer).
    saved: HashSet<(u64, Target)>,
    /// A write failed and was reported; the next failures are not, until one succeeds.
    failing: bool,
    /// When to look for messages other processes queued.
    next_look: Option<Instant>,
}

/// What [`Outbox::restore`] found.
#[derive(Debug, Default)]
pub struct Restored {
    /// Messages handed to the peer.
    pub count: usize,
    /// What the user should know: rows refused, an old file imported or set aside, a database that cannot
    /// be opened.
    pub notes: Vec<String>,
}

/// One message of the old JSON outbox.
#[derive(Deserialize)]
struct Saved {
    to_nick: Option<String>,
    to_addr: Option<SocketAddr>,
    id: u64,
    sent_ms: u64,
    text: String,
}

/// The old outbox file of `me`.
fn legacy_path(dir: &Path, me: &Nick) -> PathBuf {
    dir.join(format!("outbox-{me}.json"))
}

/// Reads an old JSON outbox. `Ok(None)`: there is none. A file that does not parse is renamed aside (kept,
/// never deleted) and reported.
fn read_legacy(dir: &Path, me: &Nick) -> Result<Option<Vec<Waiting>>, String> {
    let p = legacy_path(dir, me);
    let bytes = match fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", p.display())),
    };
    match serde_json::from_slice::<Vec<Saved>>(&bytes) {
        Ok(list) => Ok(Some(
            list.into_iter()
                .filter_map(|s| {
                    let to = match (s.to_nick, s.to_addr) {
                        (Some(n), _) => Target::Nick(Nick::new(&n).ok()?),
                        (None, Some(a)) => Target::Addr(a),
                        _ => return None,
                    };
                    Some(Waiting {
                        to,
                        id: s.id,
                        sent_ms: s.sent_ms,
                        text: s.text,
                        scope: String::new(),
                    })
                })
                .collect(),
        )),
        Err(e) => {
            let aside = p.with_extension("json.bad");
            let _ = fs::rename(&p, &aside);
            Err(format!(
                "{} was unreadable ({e}); moved to {}",
                p.display(),
                aside.display()
            ))
        }
    }
}

impl Outbox {
    /// The queue of `me` in the state directory `dir`. Touches no file: [`Outbox::restore`] or the first
    /// message that has to wait does.
    pub fn new(dir: &Path, me: Nick) -> Outbox {
        Outbox {
            dir: dir.to_path_buf(),
            me,
            db: None,
            off: None,
            saved: HashSet::new(),
            failing: false,
            next_look: None,
        }
    }

    /// Our nickname changed: the database is closed (so its file can move to the new name, see
    /// [`history::move_files`]) and opened under the new name at next need. What it holds is the same.
    pub fn rename(&mut self, me: Nick) {
        self.db = None;
        self.me = me;
    }

    /// The database file.
    pub fn path(&self) -> PathBuf {
        history::path(&self.dir, self.me.as_str())
    }

    /// The database, opened (and created if `create`) if it is not yet. `Err` (once) if it cannot be.
    fn db(&mut self, create: bool) -> Result<Option<&mut History>, String> {
        if self.db.is_none() && self.off.is_none() {
            let path = self.path();
            if !create && !path.exists() {
                return Ok(None);
            }
            if let Err(e) = fs::create_dir_all(&self.dir) {
                return Err(self.give_up(format!("cannot create {}: {e}", self.dir.display())));
            }
            // The history's limits do not matter here: the queue is never pruned, and this connection never
            // prunes the messages.
            match History::open(&path, Limits::default()) {
                Ok(h) => self.db = Some(h),
                Err(e) => return Err(self.give_up(e.to_string())),
            }
        }
        Ok(self.db.as_mut())
    }

    /// Turns the queue off for this run, returning what to tell the user.
    fn give_up(&mut self, why: String) -> String {
        let msg = format!("messages waiting for delivery are not kept across runs: {why}");
        self.off = Some(msg.clone());
        msg
    }

    /// Queues one message (one transaction), creating the file if needed: `mpc send` to an offline
    /// receiver.
    pub fn add(&mut self, w: &Waiting) -> Result<(), String> {
        let off = self.off.clone();
        let db = self.db(true)?.ok_or_else(|| off.unwrap_or_default())?;
        db.queue_add(w).map_err(|e| e.to_string())?;
        self.saved.insert((w.id, w.to));
        Ok(())
    }

    /// Messages the file holds for `to` (0 if there is no file).
    pub fn waiting_for(&mut self, to: &Target) -> Result<u64, String> {
        match self.db(false)? {
            Some(db) => db.queue_len_for(to).map_err(|e| e.to_string()),
            None => Ok(0),
        }
    }

    /// Imports an old JSON outbox, if there is one, into the database, then removes it.
    fn import_legacy(&mut self, notes: &mut Vec<String>) {
        let list = match read_legacy(&self.dir, &self.me) {
            Ok(Some(list)) => list,
            Ok(None) => return,
            Err(e) => {
                notes.push(e);
                return;
            }
        };
        let p = legacy_path(&self.dir, &self.me);
        let imported = match self.db(true) {
            Ok(Some(db)) => db.queue_add_all(&list).map_err(|e| e.to_string()),
            Ok(None) => return,
            Err(e) => Err(e),
        };
        match imported {
            // Removed only once the messages are in the database; a crash between the two imports them again
            // next time, and a row already there is not added twice.
            Ok(()) => {
                if let Err(e) = fs::remove_file(&p) {
                    notes.push(format!("imported, but cannot remove {}: {e}", p.display()));
                }
            }
            Err(e) => notes.push(format!("{} is kept: {e}", p.display())),
        }
    }

    /// Hands the peer the messages the queue holds (left by an earlier run, `mpc send`, or an old JSON
    /// outbox, imported first). Messages for a receiver the peer does not know as online wait as queued.
    pub fn restore(&mut self, now: Instant, peer: &mut Peer) -> Restored {
        let mut r = Restored::default();
        self.import_legacy(&mut r.notes);
        self.next_look = Some(now + LOOK_EVERY);
        r.count = self.adopt(now, peer, Some(&mut r.notes));
        r
    }

    /// Hands the peer the queued messages this run does not know of yet; returns how many it took. Rows
    /// refused are said in `notes` if given (at start; the periodic looks would repeat them).
    fn adopt(&mut self, now: Instant, peer: &mut Peer, notes: Option<&mut Vec<String>>) -> usize {
        let rows = match self.db(false) {
            Ok(Some(db)) => db.queue_load(),
            Ok(None) => return 0,
            Err(e) => {
                if let Some(n) = notes {
                    n.push(e);
                }
                return 0;
            }
        };
        let mut said = Vec::new();
        let mut taken = 0;
        match rows {
            Ok(rows) => {
                for row in rows {
                    let w = match row {
                        Ok(w) => w,
                        Err(e) => {
                            said.push(e.to_string());
                            continue;
                        }
                    };
                    // Known already (ours, or handed over before), or an id the peer holds: not twice.
                    if self.saved.contains(&(w.id, w.to)) || peer.target_of(w.id).is_some() {
                        continue;
                    }
                    // A scope this build does not read (a later version's): kept in the file, not sent
                    // as something else.
                    let Some(scope) = Scope::from_label(&w.scope) else {
                        said.push(format!(
                            "a waiting message (#{}) has a scope this mpc does not know ({:?}); left queued",
                            w.id & 0xffff_ffff,
                            w.scope
                        ));
                        continue;
                    };
                    peer.restore(now, w.to, w.id, w.sent_ms, scope, w.text);
                    // The peer takes it unless its queues are full: then it stays in the file for a later
                    // look (or run), and is not counted as ours.
                    if peer.target_of(w.id).is_some() {
                        self.saved.insert((w.id, w.to));
                        taken += 1;
                    }
                }
            }
            Err(e) => said.push(e.to_string()),
        }
        if let Some(n) = notes {
            n.extend(said);
        }
        taken
    }

    /// Writes what changed in the peer's waiting messages since the last call, one transaction per message
    /// queued or gone (delivered, given up), and, every [`LOOK_EVERY`], takes the messages other processes
    /// queued. Returns what the user should know (a failure is said once, until a write succeeds again);
    /// what failed is tried again at the next call.
    pub fn sync(&mut self, now: Instant, peer: &mut Peer) -> Vec<String> {
        let mut notes = Vec::new();
        let waiting = peer.waiting_messages();
        let keys: HashSet<(u64, Target)> = waiting.iter().map(|(t, id, ..)| (*id, *t)).collect();
        let gone: Vec<(u64, Target)> = self.saved.difference(&keys).copied().collect();
        for (id, to) in gone {
            let done = match self.db(false) {
                Ok(Some(db)) => db
                    .queue_remove(id, &to)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                // No database (turned off): nothing to take out.
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            if self.note(done, &mut notes) {
                self.saved.remove(&(id, to));
            }
        }
        for (to, id, sent_ms, scope, text) in waiting {
            if self.saved.contains(&(id, to)) {
                continue;
            }
            let w = Waiting {
                to,
                id,
                sent_ms,
                text,
                scope: scope.label().to_string(),
            };
            let done = match self.db(true) {
                Ok(Some(db)) => db.queue_add(&w).map_err(|e| e.to_string()),
                Ok(None) => continue,
                Err(e) => Err(e),
            };
            if self.note(done, &mut notes) {
                self.saved.insert((id, to));
            }
        }
        if self.next_look.is_none_or(|t| now >= t) {
            self.next_look = Some(now + LOOK_EVERY);
            self.adopt(now, peer, None);
        }
        notes
    }

    /// Whether a write succeeded; a failure goes into `notes` unless the last write failed too.
    fn note(&mut self, done: Result<(), String>, notes: &mut Vec<String>) -> bool {
        match done {
            Ok(()) => {
                self.failing = false;
                true
            }
            Err(e) => {
                if !self.failing {
                    notes.push(format!(
                        "{e} (a message waiting for delivery is lost if mpc stops before it goes)"
                    ));
                }
                self.failing = true;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests;
