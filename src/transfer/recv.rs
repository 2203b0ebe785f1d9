//! The receiving side of one transfer (one connection), sans-IO: it checks every frame the sender sends
//! against the offer, the receiver's limits and the protocol, and hands the caller what to do on disk as
//! [`Action`]s, in order; the caller reports back when each is done.
//!
//! # Driving it
//!
//! - [`Receiver::handle_frame`] for each frame from the sender.
//! - [`Receiver::poll_event`]: an offer to show the user ([`RecvEvent::Offered`]), progress, received, failed.
//!   Answer an offer with [`Receiver::accept`] (with what is held already of it, [`ResumePoint`]) or
//!   [`Receiver::decline`].
//! - [`Receiver::poll_action`] until `None` after every call, executing each **in order**:
//!   - [`Action::Open`]: create the folder, or the file's `.part` (keeping the first `resume_from` bytes of
//!     one that is there, and hashing them to go on with the BLAKE3); answer [`Receiver::handle_opened`].
//!     The path is sanitised and unique within the transfer; numbering the top-level name so that nothing
//!     already on disk is overwritten ([`super::name::unused_name`], then [`SafePath::with_first`] on every
//!     path) is the caller's, since only it sees the file system.
//!   - [`Action::Write`]: write the bytes at the offset (hashing them); once they are in the file (where a
//!     killed process leaves them; made durable now and then, and before the file takes its name), answer
//!     [`Receiver::handle_written`] (several writes may be answered by one call, with the furthest offset).
//!   - [`Action::Finish`]: the file has all its bytes; sync, compare the hash with `hash`, and rename the
//!     `.part` into place; answer [`Receiver::handle_finished`].
//! - [`Receiver::poll_frame`] until `None`: frames to send (ACCEPT, VERIFIED, DONE, FAIL).
//! - [`Receiver::cancel`] to give up (FAIL cancelled); once [`Receiver::is_closed`], close the connection.
//!
//! Answers must come in the order of the actions (which a caller executing them one after another does):
//! an entry is complete once it and every entry before it is, which is what `complete_below` records.
//!
//! # What is checked
//!
//! - OFFER: the first frame and the only one; its total and count within [`Limits`] (else FAIL too large or
//!   too many files).
//! - ENTRY: after the ACCEPT; the next index (from `complete_below`, one by one, below the count); only once
//!   the previous file's data is complete; its path through [`super::name::sanitise_path`] (refused: FAIL
//!   name refused) and starting with the offer's sanitised name; no path twice, none below a file of the same
//!   transfer; a file's size within the limit (FAIL too large); the sizes adding up to the offer's total
//!   exactly; at most [`MAX_ENTRIES_IN_FLIGHT`] unverified.
//! - DATA: for the entry being received, contiguous (its offset the next byte expected), within its size,
//!   and within the window ([`MAX_WINDOW`] bytes beyond what was VERIFIED).
//! - Anything else out of place is a protocol error. Every check that fails sends FAIL and ends the
//!   transfer; nothing verified is thrown away ([`RecvEvent::Failed`] carries the resume point).
//!
//! Paths within the transfer are remembered by a 16-byte BLAKE3 digest each, not as text, so that the
//! duplicate check costs a bounded, small amount per entry (a few MB for [`Limits::max_files`] = 100 000)
//! and no sender can make two paths collide.
//!
//! # VERIFIED
//!
//! Once at least [`Limits::verify_every`] bytes of an entry are written to its file since its last VERIFIED,
//! and at the end of every entry (a folder created; a file's hash matched and the file in place).

#![forbid(unsafe_code)]

use std::collections::{HashMap, VecDeque};

use super::frame::{
    EntryKind, FailCode, Frame, MAX_ENTRIES, MAX_SIZE, Resume, TransferId, normalise_resume,
};
use super::name::{SafeName, SafePath, sanitise_name, sanitise_path};
use super::{Failure, MAX_ENTRIES_IN_FLIGHT, MAX_WINDOW, VERIFY_INTERVAL};

/// What a receiver accepts.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Most bytes in one transfer.
    pub max_total: u64,
    /// Most entries (files and folders) in one transfer.
    pub max_files: u32,
    /// Largest single file.
    pub max_file_size: u64,
    /// VERIFIED after this many bytes of an entry written (clamped to 1 ..= [`VERIFY_INTERVAL`], which
    /// every sender's window covers).
    pub verify_every: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_total: 1 << 40,
            max_files: 100_000,
            max_file_size: 1 << 40,
            verify_every: VERIFY_INTERVAL,
        }
    }
}

/// What the receiver holds of a transfer already: what it passes to [`Receiver::accept`] when the same
/// transfer (id) is offered again, and what [`Receiver::resume_point`] and [`RecvEvent::Failed`] give it to
/// keep. A new transfer starts from [`ResumePoint::default`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResumePoint {
    /// Every entry below this index is complete and in place.
    pub complete_below: u32,
    /// Their sizes together (not on the wire; the receiver needs it to check the new connection's sizes
    /// against the offer's total).
    pub complete_bytes: u64,
    /// Entries at or above `complete_below` of which a `.part` holds a prefix, by increasing index.
    pub partial: Vec<Resume>,
}

/// Something for the caller to do on disk; see the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create the folder, or the file's `.part` (keeping `resume_from` bytes of it); answer
    /// [`Receiver::handle_opened`].
    Open {
        /// The entry's index.
        index: u32,
        /// Its sanitised path (the first component is the offer's sanitised name).
        path: SafePath,
        /// A file (size, hash) or a folder.
        kind: EntryKind,
        /// Bytes of the `.part` already held and kept (0 for a new file or a folder).
        resume_from: u64,
    },
    /// Write `bytes` at `offset` of the entry's `.part`; answer [`Receiver::handle_written`] once written.
    Write {
        /// The entry's index.
        index: u32,
        /// Where in the file.
        offset: u64,
        /// The data.
        bytes: Vec<u8>,
    },
    /// The file has all its bytes: check its BLAKE3 against `hash`, rename the `.part` into place; answer
    /// [`Receiver::handle_finished`].
    Finish {
        /// The entry's index.
        index: u32,
        /// The hash its ENTRY announced.
        hash: [u8; 32],
    },
}

/// Why an Open, a Write's sync or a Finish failed on the receiver's disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskError {
    /// The file's hash is not the announced one (Finish only): FAIL hash mismatch; the `.part` is useless.
    HashMismatch,
    /// No space left (FAIL disk full).
    Full(String),
    /// Any other I/O error (FAIL I/O error).
    Io(String),
}

/// What happened to the transfer, for the caller and its user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecvEvent {
    /// An offer within the limits: show it, then [`Receiver::accept`] or [`Receiver::decline`].
    Offered {
        /// The transfer's id (what a resume point is kept under).
        id: TransferId,
        /// The file's or folder's name, sanitised (safe to show and to create).
        name: SafeName,
        /// Bytes in all.
        total: u64,
        /// Entries in all.
        count: u32,
    },
    /// Bytes received and verified so far (held ones included), of `total`.
    Progress {
        /// Bytes received (or held already).
        received: u64,
        /// Bytes verified (or held already).
        verified: u64,
        /// The offer's total.
        total: u64,
    },
    /// Every entry is in place; DONE is queued.
    Received {
        /// The transfer's id.
        id: TransferId,
    },
    /// The transfer failed (a FAIL is queued unless `by_peer`). The entries below `resume.complete_below`
    /// are complete and in place, and stay; `resume.partial` says which `.part` files hold what, to keep for
    /// a resume or remove.
    Failed {
        /// Why.
        failure: Failure,
        /// What is held: keep it under the transfer's id to resume.
        resume: ResumePoint,
    },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for the OFFER.
    Idle,
    /// OFFER shown; waiting for the user.
    Offered,
    /// Accepted: entries and data coming.
    Receiving,
    /// DONE sent.
    Done,
    /// FAIL sent or received.
    Failed,
}

/// An entry announced and not yet complete.
#[derive(Debug)]
struct Pending {
    index: u32,
    kind: EntryKind,
    size: u64,
    /// Bytes received (the next DATA's offset).
    received: u64,
    /// Bytes written to the file (the caller's word).
    written: u64,
    /// Bytes covered by the last VERIFIED (or held already).
    verified: u64,
    /// Open answered.
    opened: bool,
    /// Complete: the folder created or the file's hash matched and in place.
    complete: bool,
}

/// What a path of this transfer is, for the duplicate and file-under-a-file checks.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Seen {
    File,
    Dir,
}

/// One transfer's receiving side; see the module documentation.
#[derive(Debug)]
pub struct Receiver {
    limits: Limits,
    state: State,
    id: TransferId,
    name: Option<SafeName>,
    total: u64,
    count: u32,
    /// The next index expected in an ENTRY.
    next: u32,
    /// Sizes of complete entries and of every entry announced since, together: must come to `total`.
    announced: u64,
    /// Where entries not yet announced resume, by increasing index.
    resume: VecDeque<Resume>,
    complete_below: u32,
    complete_bytes: u64,
    pending: VecDeque<Pending>,
    /// Bytes received and not yet VERIFIED in this connection: the sender's window, as seen from here.
    unverified: u64,
    /// Bytes received (or held) and verified (or held), for progress.
    received_total: u64,
    verified_total: u64,
    /// Paths of this transfer by digest (see the module documentation).
    seen: HashMap<[u8; 16], Seen>,
    actions: VecDeque<Action>,
    frames: VecDeque<Frame>,
    events: VecDeque<RecvEvent>,
}

impl Receiver {
    /// A receiver waiting for an OFFER.
    pub fn new(mut limits: Limits) -> Receiver {
        limits.verify_every = limits.verify_every.clamp(1, VERIFY_INTERVAL);
        limits.max_files = limits.max_files.min(MAX_ENTRIES);
        Receiver {
            limits,
            state: State::Idle,
            id: TransferId([0; 16]),
            name: None,
            total: 0,
            count: 0,
            next: 0,
            announced: 0,
            resume: VecDeque::new(),
            complete_below: 0,
            complete_bytes: 0,
            pending: VecDeque::new(),
            unverified: 0,
            received_total: 0,
            verified_total: 0,
            seen: HashMap::new(),
            actions: VecDeque::new(),
            frames: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The next frame to send, if any.
    pub fn poll_frame(&mut self) -> Option<Frame> {
        self.frames.pop_front()
    }

    /// The next thing to do on disk, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<RecvEvent> {
        self.events.pop_front()
    }

    /// Actions not yet polled (bounded by the window and [`MAX_ENTRIES_IN_FLIGHT`]).
    pub fn actions_queued(&self) -> usize {
        self.actions.len()
    }

    /// Bytes received and not yet verified (at most [`MAX_WINDOW`]).
    pub fn unverified(&self) -> u64 {
        self.unverified
    }

    /// Entries announced and not yet complete (at most [`MAX_ENTRIES_IN_FLIGHT`]).
    pub fn entries_pending(&self) -> usize {
        self.pending.len()
    }

    /// The transfer is over (received or failed) and every frame has been polled: close the connection.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Done | State::Failed) && self.frames.is_empty()
    }

    /// Whether every entry arrived.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// What is held now: complete entries, and the written prefix of each incomplete one (and the resume
    /// points of entries not yet reached again).
    pub fn resume_point(&self) -> ResumePoint {
        let mut partial: Vec<Resume> = self
            .pending
            .iter()
            .filter(|p| p.written > 0 && matches!(p.kind, EntryKind::File { .. }))
            .map(|p| Resume {
                index: p.index,
                offset: p.written,
            })
            .collect();
        partial.extend(self.resume.iter().copied());
        ResumePoint {
            complete_below: self.complete_below,
            complete_bytes: self.complete_bytes,
            partial,
        }
    }

    /// Takes the offer, resuming from what is held already (`ResumePoint::default()` for a new transfer):
    /// ACCEPT is queued. Nothing unless an offer is waiting.
    pub fn accept(&mut self, held: ResumePoint) {
        if self.state != State::Offered {
            return;
        }
        // The caller's own record, but of an earlier connection: kept within this offer, so a stale or
        // damaged one costs a resend, never a check skipped.
        let complete_below = held.complete_below.min(self.count);
        let complete_bytes = held.complete_bytes.min(self.total);
        let mut partial = held.partial;
        normalise_resume(complete_below, &mut partial);
        partial.retain(|r| r.index < self.count);
        self.frames.push_back(Frame::Accept {
            id: self.id,
            complete_below,
            resume: partial.clone(),
        });
        let held_bytes = complete_bytes + partial.iter().map(|r| r.offset).sum::<u64>();
        self.received_total = held_bytes;
        self.verified_total = held_bytes;
        self.complete_below = complete_below;
        self.complete_bytes = complete_bytes;
        self.announced = complete_bytes;
        self.next = complete_below;
        self.resume = partial.into();
        self.state = State::Receiving;
        self.check_done();
    }

    /// Refuses the offer: FAIL declined. Nothing unless an offer is waiting.
    pub fn decline(&mut self) {
        if self.state == State::Offered {
            self.fail(FailCode::Declined, "declined".into());
        }
    }

    /// Gives up: FAIL cancelled. Nothing if the transfer is over already.
    pub fn cancel(&mut self) {
        self.fail(FailCode::Cancelled, "cancelled by the receiver".into());
    }

    /// A frame from the sender, checked as the module documentation says.
    pub fn handle_frame(&mut self, frame: Frame) {
        match (self.state, frame) {
            (State::Done | State::Failed, _) => {}
            (
                State::Idle,
                Frame::Offer {
                    id,
                    total,
                    count,
                    name,
                },
            ) => self.offer(id, total, count, &name),
            (State::Receiving, Frame::Entry { index, kind, path }) => {
                self.entry(index, kind, &path)
            }
            (
                State::Receiving,
                Frame::Data {
                    index,
                    offset,
                    bytes,
                },
            ) => self.data(index, offset, bytes),
            (_, Frame::Fail { code, reason, .. }) => {
                let failure = Failure::from_peer(code, &reason);
                self.end_failed(failure);
            }
            (_, other) => self.fail(FailCode::Protocol, format!("{} out of place", other.name())),
        }
    }

    fn offer(&mut self, id: TransferId, total: u64, count: u32, name: &str) {
        self.id = id;
        self.total = total;
        self.count = count;
        let name = sanitise_name(name);
        self.name = Some(name.clone());
        if total > self.limits.max_total {
            return self.fail(
                FailCode::TooLarge,
                format!(
                    "{total} bytes is more than the {} accepted",
                    self.limits.max_total
                ),
            );
        }
        if count > self.limits.max_files {
            return self.fail(
                FailCode::TooManyFiles,
                format!(
                    "{count} entries is more than the {} accepted",
                    self.limits.max_files
                ),
            );
        }
        self.state = State::Offered;
        self.events.push_back(RecvEvent::Offered {
            id,
            name,
            total,
            count,
        });
    }

    fn entry(&mut self, index: u32, kind: EntryKind, path: &str) {
        if index != self.next || index >= self.count {
            return self.fail(FailCode::Protocol, format!("ENTRY {index} out of order"));
        }
        if self.pending.back().is_some_and(|p| p.received < p.size) {
            return self.fail(
                FailCode::Protocol,
                "ENTRY before the previous file's data ended".into(),
            );
        }
        if self.pending.len() >= MAX_ENTRIES_IN_FLIGHT as usize {
            return self.fail(
                FailCode::Protocol,
                "more entries unverified than the protocol allows".into(),
            );
        }
        let path = match sanitise_path(path) {
            Ok(p) => p,
            Err(e) => return self.fail(FailCode::NameRefused, format!("entry {index}: {e}")),
        };
        let name = self.name.as_ref().map_or("", SafeName::as_str);
        if path.first() != name {
            return self.fail(
                FailCode::Protocol,
                format!("{path} is not inside the offered {name}"),
            );
        }
        if let Some(why) = self.claim(&path, kind) {
            return self.fail(FailCode::Protocol, format!("{path}: {why}"));
        }
        let size = match kind {
            EntryKind::File { size, .. } => size,
            EntryKind::Dir => 0,
        };
        if size > self.limits.max_file_size {
            return self.fail(
                FailCode::TooLarge,
                format!(
                    "{path}: {size} bytes is more than the {} accepted",
                    self.limits.max_file_size
                ),
            );
        }
        // Both at most MAX_SIZE: no overflow.
        self.announced += size;
        let last = index + 1 == self.count;
        if self.announced > self.total || (last && self.announced != self.total) {
            return self.fail(
                FailCode::Protocol,
                "the entries' sizes do not add up to the offer's total".into(),
            );
        }
        let resume_from = match self.resume.front() {
            Some(r) if r.index == index => {
                let o = r.offset;
                self.resume.pop_front();
                o
            }
            _ => 0,
        };
        if resume_from > size {
            return self.fail(
                FailCode::Protocol,
                format!("{path} is smaller than the part held of it"),
            );
        }
        self.next += 1;
        self.pending.push_back(Pending {
            index,
            kind,
            size,
            received: resume_from,
            written: resume_from,
            verified: resume_from,
            opened: false,
            complete: false,
        });
        self.actions.push_back(Action::Open {
            index,
            path,
            kind,
            resume_from,
        });
        if let EntryKind::File { hash, .. } = kind
            && resume_from == size
        {
            self.actions.push_back(Action::Finish { index, hash });
        }
    }

    /// Records `path` as used by this transfer; says why not if it is taken, or below a file.
    fn claim(&mut self, path: &SafePath, kind: EntryKind) -> Option<&'static str> {
        let s = path.as_str();
        // Every proper prefix that ends at a component boundary: none may be a file.
        for (i, _) in s.match_indices('/') {
            if self.seen.get(&digest(&s[..i])) == Some(&Seen::File) {
                return Some("inside a file of the same transfer");
            }
        }
        let seen = match kind {
            EntryKind::File { .. } => Seen::File,
            EntryKind::Dir => Seen::Dir,
        };
        if self.seen.insert(digest(s), seen).is_some() {
            return Some("sent twice");
        }
        None
    }

    fn data(&mut self, index: u32, offset: u64, bytes: Vec<u8>) {
        let Some(p) = self.pending.back_mut().filter(|p| p.received < p.size) else {
            return self.fail(FailCode::Protocol, "DATA with no file open".into());
        };
        if p.index != index {
            return self.fail(FailCode::Protocol, "DATA for another entry".into());
        }
        if offset != p.received {
            return self.fail(FailCode::Protocol, "DATA not contiguous".into());
        }
        let len = bytes.len() as u64;
        // offset + len is bounded by the parser (both within 2^50).
        if offset + len > p.size {
            return self.fail(FailCode::Protocol, "DATA past the entry's size".into());
        }
        if self.unverified + len > MAX_WINDOW {
            return self.fail(FailCode::Protocol, "DATA beyond the window".into());
        }
        p.received += len;
        let end = p.received == p.size;
        let hash = match p.kind {
            EntryKind::File { hash, .. } => hash,
            EntryKind::Dir => [0; 32],
        };
        self.unverified += len;
        self.received_total += len;
        self.actions.push_back(Action::Write {
            index,
            offset,
            bytes,
        });
        if end {
            self.actions.push_back(Action::Finish { index, hash });
        }
    }

    fn pending_mut(&mut self, index: u32) -> Option<&mut Pending> {
        let front = self.pending.front()?.index;
        self.pending.get_mut(index.wrapping_sub(front) as usize)
    }

    /// The caller created the folder or the `.part` of entry `index` (or could not). A folder is then
    /// complete.
    pub fn handle_opened(&mut self, index: u32, result: Result<(), DiskError>) {
        if self.state != State::Receiving {
            return;
        }
        let Some(p) = self.pending_mut(index) else {
            return;
        };
        if p.opened {
            return;
        }
        p.opened = true;
        if let Err(e) = result {
            return self.disk_failed(index, e);
        }
        if p.kind == EntryKind::Dir {
            p.complete = true;
            self.pop_complete();
        }
    }

    /// Entry `index` is written to its file up to `upto` (answering one or more [`Action::Write`]s), or its
    /// write failed. VERIFIED goes out once [`Limits::verify_every`] bytes are written since the last one.
    pub fn handle_written(&mut self, index: u32, result: Result<u64, DiskError>) {
        if self.state != State::Receiving {
            return;
        }
        let verify_every = self.limits.verify_every;
        let Some(p) = self.pending_mut(index) else {
            return;
        };
        let upto = match result {
            Ok(upto) => upto,
            Err(e) => return self.disk_failed(index, e),
        };
        // An answer going back or past what was handed out is the caller's slip; ignoring it keeps the
        // promise VERIFIED makes (only what was really written).
        if upto <= p.written || upto > p.received {
            return;
        }
        p.written = upto;
        // The end of a file is verified by its Finish, once its hash matched.
        if upto < p.size && upto - p.verified >= verify_every {
            let gain = upto - p.verified;
            p.verified = upto;
            self.unverified -= gain;
            self.verified_total += gain;
            self.frames.push_back(Frame::Verified {
                index,
                offset: upto,
            });
            self.progress();
        }
    }

    /// The caller checked entry `index`'s hash and put it in place (or found it wrong, or failed).
    pub fn handle_finished(&mut self, index: u32, result: Result<(), DiskError>) {
        if self.state != State::Receiving {
            return;
        }
        let Some(p) = self.pending_mut(index) else {
            return;
        };
        if p.complete || p.received < p.size || p.kind == EntryKind::Dir {
            return;
        }
        if let Err(e) = result {
            if e == DiskError::HashMismatch {
                // The `.part` holds wrong bytes somewhere: nothing of it is worth resuming from.
                p.written = 0;
            }
            return self.disk_failed(index, e);
        }
        p.written = p.size;
        p.complete = true;
        self.pop_complete();
    }

    /// Entries complete at the front: VERIFIED at their size, in order, and DONE after the last.
    fn pop_complete(&mut self) {
        while let Some(p) = self.pending.front().filter(|p| p.complete) {
            let p = (p.index, p.size, p.verified);
            self.pending.pop_front();
            let (index, size, verified) = p;
            let gain = size - verified;
            self.unverified -= gain;
            self.verified_total += gain;
            self.complete_below = index + 1;
            self.complete_bytes += size;
            self.frames.push_back(Frame::Verified {
                index,
                offset: size,
            });
        }
        self.progress();
        self.check_done();
    }

    fn check_done(&mut self) {
        if self.state != State::Receiving || self.complete_below < self.count {
            return;
        }
        // Also after a resume that held everything: its bytes must still be the offer's.
        if self.complete_bytes != self.total {
            return self.fail(
                FailCode::Protocol,
                "the entries' sizes do not add up to the offer's total".into(),
            );
        }
        self.state = State::Done;
        self.frames.push_back(Frame::Done { id: self.id });
        self.events.push_back(RecvEvent::Received { id: self.id });
    }

    fn progress(&mut self) {
        self.events.push_back(RecvEvent::Progress {
            received: self.received_total,
            verified: self.verified_total,
            total: self.total,
        });
    }

    fn disk_failed(&mut self, index: u32, e: DiskError) {
        let (code, why) = match e {
            DiskError::HashMismatch => (FailCode::HashMismatch, "hash mismatch".to_owned()),
            DiskError::Full(why) => (FailCode::DiskFull, why),
            DiskError::Io(why) => (FailCode::Io, why),
        };
        self.fail(code, format!("entry {index}: {why}"));
    }

    /// Ends the transfer from this side: FAIL queued (after any VERIFIED already queued: those are true),
    /// actions not yet polled dropped, event Failed.
    fn fail(&mut self, code: FailCode, reason: String) {
        if matches!(self.state, State::Done | State::Failed) {
            return;
        }
        log::debug!("transfer {} receive failed: {code}: {reason}", self.id);
        self.frames.push_back(Frame::Fail {
            id: self.id,
            code,
            reason: reason.clone(),
        });
        self.end_failed(Failure {
            code,
            reason,
            by_peer: false,
        });
    }

    fn end_failed(&mut self, failure: Failure) {
        if matches!(self.state, State::Done | State::Failed) {
            return;
        }
        self.state = State::Failed;
        self.actions.clear();
        let resume = self.resume_point();
        self.events.push_back(RecvEvent::Failed { failure, resume });
    }
}

/// A path's digest for [`Receiver::claim`]: 16 bytes of its BLAKE3, which no sender can make collide.
fn digest(path: &str) -> [u8; 16] {
    let mut d = [0; 16];
    d.copy_from_slice(&blake3::hash(path.as_bytes()).as_bytes()[..16]);
    d
}

const _: () = assert!(MAX_WINDOW <= MAX_SIZE);
