//! The disk side of the peer's file transfers (issue 16): what the sans-IO [`Peer`] lends through
//! [`Peer::poll_disk`] and [`Peer::with_disk`] is done here. An outgoing transfer reads from the files its
//! [`Listing`] walked; an incoming one writes into an [`Incoming`] store in the directory its user chose.
//!
//! A transfer's id is derived from who sends, to whom, and what (every path, size and hash), so offering the
//! same thing to the same person again, also from a new run, resumes where the receiver stopped.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use crate::io::file_hash;
use crate::io::incoming::Incoming;
use crate::io::outgoing::{self, Listing};
use crate::io::transfer::{do_actions, offered, resume_point};
use crate::peer::{Disk, FileSendError, FileState, Peer, Target, XferId};
use crate::time::Instant;
use crate::transfer::frame::TransferId;
use crate::transfer::recv::ResumePoint;
use crate::transfer::send::ReadError;

/// Bytes of a file being received that may be written and not yet made durable (`fdatasync`): a flush costs
/// milliseconds, so it is not done per MiB (VERIFIED's cadence); a power loss takes back at most this much,
/// which is then sent again (see [`do_actions`]).
pub const DURABLE_EVERY: u64 = 64 << 20;

/// Received transfers remembered for [`Files::take_received`] at most.
const MAX_RECEIVED: usize = 64;

/// Where a received transfer is and what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The file or folder, in the directory it was accepted into (numbered if its name was taken).
    pub path: PathBuf,
    /// Bytes in all.
    pub size: u64,
    /// The file's BLAKE3 (hex), checked against the sender's; for a folder, none (each of its files was
    /// checked).
    pub hash: Option<String>,
}

/// Bytes hashed per [`Files::run`] while a listing is being prepared: a few milliseconds of work, so the loop
/// keeps answering chat and heartbeats however large the file.
const HASH_STEP: u64 = 4 << 20;

/// A listing being hashed, to be offered when it is.
struct Preparing {
    id: u64,
    to: Target,
    path: PathBuf,
    listing: Listing,
    hashing: outgoing::Hashing,
}

/// An accepted offer whose resumed part is being hashed before the answer goes.
struct Accepting {
    x: XferId,
    store: Incoming,
    held: ResumePoint,
    part: file_hash::Stepped,
}

/// A prepared offer's outcome ([`Files::poll_prepared`]).
#[derive(Debug)]
pub struct Prepared {
    /// What [`Files::prepare`] returned.
    pub id: u64,
    /// To whom.
    pub to: Target,
    /// What.
    pub path: PathBuf,
    /// The transfer, its bytes and its entries; or why it could not be offered.
    pub result: Result<(XferId, u64, usize), String>,
}

/// The files behind the peer's transfers.
#[derive(Default)]
pub struct Files {
    outgoing: HashMap<XferId, Listing>,
    preparing: VecDeque<Preparing>,
    accepting: Vec<Accepting>,
    prepared: VecDeque<Prepared>,
    next_prepare: u64,
    incoming: HashMap<XferId, Incoming>,
    received: VecDeque<(XferId, Received)>,
}

/// A hex string of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The id of sending `listing` from `from` (our key) to `to`: the same for the same thing to the same
/// receiver, different for anything else.
pub fn transfer_id(from: &[u8; 32], to: &Target, listing: &Listing) -> TransferId {
    let mut h = blake3::Hasher::new_derive_key("multiproto 2026 transfer id");
    h.update(from);
    h.update(to.to_string().as_bytes());
    h.update(&[0]);
    for e in &listing.entries {
        h.update(e.path.as_bytes());
        h.update(&[0, u8::from(e.dir)]);
        h.update(&e.size.to_be_bytes());
        h.update(&e.hash);
    }
    let mut id = [0; 16];
    id.copy_from_slice(&h.finalize().as_bytes()[..16]);
    TransferId(id)
}

impl Files {
    /// No transfers.
    pub fn new() -> Files {
        Files::default()
    }

    /// Walks `path` (a file or a folder; every file hashed) and offers it to `to`. The hashing is done
    /// here, at once: see [`Files::prepare`] for a caller that must keep answering meanwhile.
    pub fn send(
        &mut self,
        peer: &mut Peer,
        now: Instant,
        to: Target,
        path: &Path,
    ) -> Result<(XferId, u64, usize), String> {
        let listing =
            outgoing::list(path, outgoing::Limits::default()).map_err(|e| e.to_string())?;
        self.offer(peer, now, to, path, listing)
    }

    /// Walks `path` now (names and sizes only) and hashes it in steps of [`HASH_STEP`] bytes during
    /// [`Files::run`], offering it to `to` when done; the outcome comes from [`Files::poll_prepared`] under
    /// the number returned here, with the listing's bytes and entries.
    pub fn prepare(&mut self, to: Target, path: &Path) -> Result<(u64, u64, usize), String> {
        let listing =
            outgoing::scan(path, outgoing::Limits::default()).map_err(|e| e.to_string())?;
        self.next_prepare += 1;
        let id = self.next_prepare;
        let (total, count) = (listing.total, listing.entries.len());
        self.preparing.push_back(Preparing {
            id,
            to,
            path: path.to_path_buf(),
            listing,
            hashing: outgoing::Hashing::default(),
        });
        Ok((id, total, count))
    }

    /// Listings, or received parts to resume from, are being hashed: [`Files::run`] has work to do at once
    /// (the loop should not sleep).
    pub fn busy(&self) -> bool {
        !self.preparing.is_empty() || !self.accepting.is_empty()
    }

    /// The next prepared offer's outcome.
    pub fn poll_prepared(&mut self) -> Option<Prepared> {
        self.prepared.pop_front()
    }

    /// Offers `listing` (walked from `path`, every file hashed) to `to`.
    pub fn offer(
        &mut self,
        peer: &mut Peer,
        now: Instant,
        to: Target,
        path: &Path,
        listing: Listing,
    ) -> Result<(XferId, u64, usize), String> {
        let me = peer.config().identity.public();
        let id = transfer_id(&me.0, &to, &listing);
        let x = peer
            .send_files(now, to, id, &listing.name, offered(&listing))
            .map_err(|e| match e {
                FileSendError::To(e) => e.to_string(),
                e => format!("{}: {e}", path.display()),
            })?;
        let (total, count) = (listing.total, listing.entries.len());
        self.outgoing.insert(x, listing);
        Ok((x, total, count))
    }

    /// Accepts offer `x` into `dir` (made if missing), resuming from what an earlier run left there.
    pub fn accept(
        &mut self,
        peer: &mut Peer,
        now: Instant,
        x: XferId,
        dir: &Path,
    ) -> Result<(), String> {
        let Some(info) = peer
            .file(x)
            .filter(|f| !f.outgoing && f.state == FileState::Offered)
        else {
            return Err("no such offer (it may have been withdrawn)".into());
        };
        if self.accepting.iter().any(|a| a.x == x) {
            return Err("accepted already: what arrived of it before is being checked".into());
        }
        // The same transfer still receiving on an older connection (its sender's side of it died without
        // our side noticing): that one goes first, or two stores would write the same work files.
        let older: Vec<XferId> = self
            .incoming
            .keys()
            .chain(self.accepting.iter().map(|a| &a.x))
            .filter(|y| **y != x && peer.file(**y).is_some_and(|f| f.id == info.id))
            .copied()
            .collect();
        for y in older {
            self.incoming.remove(&y);
            self.accepting.retain(|a| a.x != y);
            peer.cancel_file(now, y);
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let store = Incoming::open(dir, &info.id.0).map_err(|e| e.to_string())?;
        let held = resume_point(&store);
        // What an earlier run received of the entry under way is hashed again before the answer (it goes
        // on from there), in steps, so a large part does not stop the loop.
        if let Some(r) = held.partial.first()
            && let Ok(part) = file_hash::Stepped::open(&store.part_path(r.index), r.offset)
        {
            self.accepting.push(Accepting {
                x,
                store,
                held,
                part,
            });
            return Ok(());
        }
        self.incoming.insert(x, store);
        peer.accept_file(now, x, held);
        Ok(())
    }

    /// What a received transfer became (once, after [`crate::peer::FileEvent::Recv`] reported it received).
    pub fn take_received(&mut self, x: XferId) -> Option<Received> {
        let i = self.received.iter().position(|(y, _)| *y == x)?;
        self.received.remove(i).map(|(_, r)| r)
    }

    /// Does the disk work the peer's transfers have now, and forgets the files of transfers that are over.
    pub fn run(&mut self, peer: &mut Peer, now: Instant) {
        self.run_for(peer, now, usize::MAX);
    }

    /// [`Files::run`], but at most `jobs` pieces of disk work (a sender's read of one block, a receiver's
    /// queued writes); returns how many it did. A caller that must keep answering (chat, heartbeats) between
    /// pieces uses it: a sender whose socket keeps taking data would otherwise read and encrypt on as long as
    /// its window lasts.
    pub fn run_for(&mut self, peer: &mut Peer, now: Instant, jobs: usize) -> usize {
        let mut done = 0;
        while done < jobs
            && let Some(x) = peer.poll_disk()
        {
            done += 1;
            let mut finished = None;
            let (outgoing, incoming) = (&self.outgoing, &mut self.incoming);
            peer.with_disk(now, x, |d| match d {
                Disk::Send(s) => {
                    let Some(r) = s.poll_read() else { return };
                    let read = outgoing
                        .get(&x)
                        .and_then(|l| l.entries.get(r.index as usize))
                        .ok_or_else(|| ReadError::Io("no such entry".into()))
                        .and_then(|e| {
                            e.read_at(r.offset, r.len)
                                .map_err(|err| ReadError::Changed(err.to_string()))
                        });
                    match read {
                        Ok(bytes) => s.handle_read(r.index, r.offset, bytes),
                        Err(e) => s.handle_read_error(r.index, e),
                    }
                }
                Disk::Recv(r) => match incoming.get_mut(&x) {
                    Some(store) => {
                        let done = do_actions(r, store, DURABLE_EVERY);
                        if r.is_done() {
                            finished = Some(done);
                        }
                    }
                    // Actions before an accept cannot be; a receiver with no store is cancelled.
                    None => r.cancel(),
                },
            });
            if let Some(done) = finished
                && let Some(store) = self.incoming.remove(&x)
            {
                let single = done.last().map(|(_, h)| hex(h));
                // Every entry is complete: their bytes are the transfer's.
                let size = store.complete_bytes();
                let path = store.top().unwrap_or_default();
                let hash = if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                    single
                } else {
                    None
                };
                if let Err(e) = store.done() {
                    log::warn!("transfer received, but its work directory stays: {e}");
                }
                if self.received.len() >= MAX_RECEIVED {
                    self.received.pop_front();
                }
                self.received.push_back((x, Received { path, size, hash }));
            }
        }
        self.outgoing.retain(|x, _| peer.file_state(*x).is_some());
        // A transfer that ended before anything of it was written (declined by its name, cancelled at once)
        // leaves no empty work directory behind.
        self.incoming.retain(|x, store| {
            let alive = peer.file_state(*x).is_some();
            if !alive {
                store.discard_if_empty();
            }
            alive
        });
        done
    }

    /// One step of the hashing under way, if any (see [`Files::busy`]): a part to resume from, then a
    /// listing to offer. The caller's loop calls it once a turn, apart from the disk work of transfers
    /// ([`Files::run_for`], which runs after every read), so hashing takes its step a turn and no more.
    pub fn hash_work(&mut self, peer: &mut Peer, now: Instant) {
        self.accept_step(peer, now);
        self.hash_step(peer, now);
    }

    /// Hashes the first part of an accepted transfer a step further, and answers the offer once it is hashed
    /// (an offer withdrawn meanwhile is forgotten).
    fn accept_step(&mut self, peer: &mut Peer, now: Instant) {
        self.accepting
            .retain(|a| peer.file_state(a.x) == Some(FileState::Offered));
        let Some(a) = self.accepting.first_mut() else {
            return;
        };
        match a.part.step(HASH_STEP) {
            Ok(false) => return,
            Ok(true) => {}
            // Said when the entry begins: it reads the part again, and fails with the reason.
            Err(e) => log::warn!("cannot read a part to resume from: {e}"),
        }
        let mut a = self.accepting.remove(0);
        if let Some(r) = a.held.partial.first() {
            let (index, offset) = (r.index, r.offset);
            a.store.prehashed(index, offset, a.part.into_hasher());
        }
        self.incoming.insert(a.x, a.store);
        peer.accept_file(now, a.x, a.held);
    }

    /// Hashes the first listing being prepared a step further, and offers it once it is hashed.
    fn hash_step(&mut self, peer: &mut Peer, now: Instant) {
        let Some(p) = self.preparing.front_mut() else {
            return;
        };
        let result = match p.hashing.step(&mut p.listing, HASH_STEP) {
            Ok(false) => return,
            Ok(true) => Ok(()),
            Err(e) => Err(e.to_string()),
        };
        let Some(p) = self.preparing.pop_front() else {
            return;
        };
        let result = result.and_then(|()| self.offer(peer, now, p.to, &p.path, p.listing));
        self.prepared.push_back(Prepared {
            id: p.id,
            to: p.to,
            path: p.path,
            result,
        });
    }
}
