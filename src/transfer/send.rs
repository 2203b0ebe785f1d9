//! The sending side of one transfer (one connection), sans-IO: it says which frames to send and which file
//! bytes it needs, and learns what the receiver did from the frames the caller hands it.
//!
//! # Driving it
//!
//! - [`Sender::poll_frame`] until `None` after every call below: the frames to write to the connection (OFFER
//!   first). When the connection's write buffer is full, stop polling: the frames wait here, and since DATA
//!   frames are only made from reads within the window, what waits is bounded by it.
//! - [`Sender::poll_read`]: file bytes needed next (`Read { index, offset, len }`), at most one request at a
//!   time, answered by [`Sender::handle_read`] with exactly `len` bytes, or [`Sender::handle_read_error`].
//!   One read at a time keeps the core simple and costs little: a 64 KiB read from a local disk is far
//!   quicker than sending it, and the window keeps the pipe full meanwhile.
//! - [`Sender::handle_frame`] for each frame the receiver sends (ACCEPT, VERIFIED, DONE, FAIL).
//! - [`Sender::poll_event`]: accepted, progress (one per VERIFIED: every MiB or so, and each entry's end;
//!   the caller may show fewer), done, failed.
//! - [`Sender::cancel`] to give up (FAIL cancelled).
//! - Once [`Sender::is_closed`], the caller closes the connection.
//!
//! # The window
//!
//! At most [`Config::window`] bytes of DATA are sent beyond what the receiver has VERIFIED, and at most
//! [`Config::max_entries_in_flight`] entries announced and not yet verified complete: a receiver that stops
//! verifying (a full disk, a stuck user interface, a hostile peer) stalls the sender instead of filling
//! buffers. Reads are only asked for within the window, so memory stays bounded by it too.
//!
//! # Resume
//!
//! The ACCEPT says which entries are complete (`complete_below`) and where others resume; bytes skipped are
//! never read. A new `Sender` for the same transfer (the same id and entries) is told how far the previous
//! one sent ([`Config::sent_before`], from [`Sender::high_water`]), so that bytes sent a second time are
//! counted in [`Stats::bytes_resent`]: the price of a cut, bounded by the window.

#![forbid(unsafe_code)]

use std::collections::VecDeque;

use super::frame::{
    EntryKind, FailCode, Frame, MAX_DATA, MAX_ENTRIES, MAX_SIZE, Resume, TransferId,
};
use super::{Failure, MAX_ENTRIES_IN_FLIGHT, MAX_WINDOW};

/// A point in a transfer: entry `index`, byte `offset` of it. Ordered as the transfer sends: by entry, then
/// by offset.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// The entry's index.
    pub index: u32,
    /// A byte offset in it.
    pub offset: u64,
}

/// Sender settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Most bytes sent and not yet VERIFIED (clamped to 1 ..= [`MAX_WINDOW`]). It must be at least the
    /// receiver's VERIFIED cadence ([`super::VERIFY_INTERVAL`] for any receiver that keeps to the
    /// protocol), or both sides could wait for each other: 8 MiB by default.
    pub window: u64,
    /// Most entries announced and not yet VERIFIED complete (clamped to 1 ..= [`MAX_ENTRIES_IN_FLIGHT`]).
    pub max_entries_in_flight: u32,
    /// How far an earlier connection of the same transfer sent ([`Sender::high_water`]), if any: bytes
    /// sent again below it are counted in [`Stats::bytes_resent`].
    pub sent_before: Option<Position>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            window: 8 << 20,
            max_entries_in_flight: MAX_ENTRIES_IN_FLIGHT,
            sent_before: None,
        }
    }
}

/// One entry the caller offers: its kind (a file with its size and BLAKE3 hash, or a folder) and its path
/// as sent (components joined by `/`, the first being the offer's name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offered {
    /// A file (size and hash, which the caller computed when it walked the files) or a folder.
    pub kind: EntryKind,
    /// The path sent in its ENTRY.
    pub path: String,
}

impl Offered {
    /// The entry's size in bytes (0 for a folder).
    fn size(&self) -> u64 {
        match self.kind {
            EntryKind::File { size, .. } => size,
            EntryKind::Dir => 0,
        }
    }
}

/// Why an offer cannot be sent: what the wire cannot carry, refused here rather than clamped into a
/// transfer that would fail at the receiver.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum OfferError {
    /// No entries.
    Empty,
    /// More than [`MAX_ENTRIES`] entries.
    TooManyEntries,
    /// A file or the total past [`MAX_SIZE`].
    TooLarge,
}

/// File bytes the sender needs: `len` bytes of entry `index` from `offset`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Read {
    /// The entry's index (into the offered entries).
    pub index: u32,
    /// Where in the file.
    pub offset: u64,
    /// How many bytes (1 ..= [`MAX_DATA`]).
    pub len: usize,
}

/// Why a read failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The file vanished, shrank or changed since it was offered (FAIL source changed).
    Changed(String),
    /// Any other I/O error (FAIL I/O error).
    Io(String),
}

/// What happened to the transfer, for the caller's user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendEvent {
    /// The receiver accepted; `skipped` bytes it holds already are not sent again.
    Accepted {
        /// Bytes the resume points skip.
        skipped: u64,
    },
    /// Bytes sent and verified so far (skipped bytes included in both), of `total`.
    Progress {
        /// Bytes sent (or skipped).
        sent: u64,
        /// Bytes the receiver has verified (or skipped).
        verified: u64,
        /// The offer's total.
        total: u64,
    },
    /// The receiver has every entry, verified and in place.
    Done,
    /// The transfer failed; if `by_peer` is false a FAIL is queued for the receiver.
    Failed(Failure),
}

/// Counters of one sender.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// File bytes sent in DATA frames.
    pub bytes_sent: u64,
    /// Of those, bytes an earlier connection had sent already ([`Config::sent_before`]).
    pub bytes_resent: u64,
    /// Bytes the ACCEPT said the receiver holds, never read.
    pub bytes_skipped: u64,
    /// ENTRY frames sent.
    pub entries_sent: u64,
    /// Most bytes in flight (sent, not verified) at any time.
    pub max_in_flight: u64,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum State {
    /// OFFER sent, waiting for ACCEPT.
    Offered,
    /// Sending entries and data.
    Sending,
    /// Everything sent; waiting for the last VERIFIED and DONE.
    Finishing,
    /// DONE received.
    Done,
    /// FAIL sent or received.
    Failed,
}

/// An entry announced and not yet verified complete.
#[derive(Debug)]
struct Flight {
    index: u32,
    size: u64,
    /// Bytes of it sent (or skipped): the next DATA's offset.
    sent: u64,
    /// Bytes of it the receiver has verified (or skipped).
    verified: u64,
    /// VERIFIED at its size came: it is complete.
    complete: bool,
}

/// One transfer's sending side; see the module documentation.
#[derive(Debug)]
pub struct Sender {
    id: TransferId,
    cfg: Config,
    entries: Vec<Offered>,
    total: u64,
    state: State,
    /// The next entry to announce.
    next: u32,
    /// Resume points not yet reached, by increasing index.
    resume: VecDeque<Resume>,
    /// Announced and not verified complete, by increasing (consecutive) index; the last one is the entry
    /// being sent while its `sent` is below its `size`.
    flights: VecDeque<Flight>,
    /// Sum over `flights` of `sent - verified`: what the window bounds.
    in_flight: u64,
    /// The read asked for and not yet answered.
    read: Option<Read>,
    /// Whether `read` has been handed out by `poll_read`.
    read_polled: bool,
    /// Bytes sent or skipped, and verified or skipped, over the whole transfer (for progress).
    sent_total: u64,
    verified_total: u64,
    /// The furthest point sent, by this connection or (from the config) an earlier one.
    high_water: Option<Position>,
    frames: VecDeque<Frame>,
    events: VecDeque<SendEvent>,
    stats: Stats,
}

impl Sender {
    /// A sender offering `entries` (in the order they will be sent; paths starting with `name`) under `id`;
    /// its first frame is the OFFER. Refuses what the wire cannot carry.
    pub fn new(
        id: TransferId,
        name: &str,
        entries: Vec<Offered>,
        mut cfg: Config,
    ) -> Result<Sender, OfferError> {
        if entries.is_empty() {
            return Err(OfferError::Empty);
        }
        if entries.len() > MAX_ENTRIES as usize {
            return Err(OfferError::TooManyEntries);
        }
        let mut total = 0u64;
        for e in &entries {
            // Each size is at most MAX_SIZE and so is the running total, so the sum cannot overflow.
            if e.size() > MAX_SIZE {
                return Err(OfferError::TooLarge);
            }
            total += e.size();
            if total > MAX_SIZE {
                return Err(OfferError::TooLarge);
            }
        }
        cfg.window = cfg.window.clamp(1, MAX_WINDOW);
        cfg.max_entries_in_flight = cfg.max_entries_in_flight.clamp(1, MAX_ENTRIES_IN_FLIGHT);
        let offer = Frame::Offer {
            id,
            total,
            count: entries.len() as u32,
            name: name.to_owned(),
        };
        Ok(Sender {
            id,
            high_water: cfg.sent_before,
            cfg,
            entries,
            total,
            state: State::Offered,
            next: 0,
            resume: VecDeque::new(),
            flights: VecDeque::new(),
            in_flight: 0,
            read: None,
            read_polled: false,
            sent_total: 0,
            verified_total: 0,
            frames: VecDeque::from([offer]),
            events: VecDeque::new(),
            stats: Stats::default(),
        })
    }

    /// The transfer's id.
    pub fn id(&self) -> TransferId {
        self.id
    }

    /// The offer's total bytes.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The next frame to send, if any.
    pub fn poll_frame(&mut self) -> Option<Frame> {
        self.frames.pop_front()
    }

    /// The file bytes needed next, if any: handed out once, and no other until it is answered.
    pub fn poll_read(&mut self) -> Option<Read> {
        if self.read_polled {
            return None;
        }
        self.read_polled = self.read.is_some();
        self.read
    }

    /// Whether a read is asked for and not yet handed out by [`Sender::poll_read`].
    pub fn wants_read(&self) -> bool {
        self.read.is_some() && !self.read_polled
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<SendEvent> {
        self.events.pop_front()
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Bytes sent and not yet verified: at most [`Config::window`].
    pub fn in_flight(&self) -> u64 {
        self.in_flight
    }

    /// The furthest point sent so far, by this sender or the earlier ones it was told of: what the next
    /// sender of the same transfer is given as [`Config::sent_before`].
    pub fn high_water(&self) -> Option<Position> {
        self.high_water
    }

    /// The transfer is over (done or failed) and every frame has been polled: close the connection.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Done | State::Failed) && self.frames.is_empty()
    }

    /// Whether the transfer completed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Gives up: FAIL cancelled. Nothing if the transfer is over already.
    pub fn cancel(&mut self) {
        self.fail(FailCode::Cancelled, "cancelled by the sender".into());
    }

    /// The bytes of the read [`Sender::poll_read`] asked for: exactly `len` of them. Fewer mean the file
    /// shrank (FAIL source changed); an answer to no outstanding read (after a failure or cancel) is ignored.
    pub fn handle_read(&mut self, index: u32, offset: u64, bytes: Vec<u8>) {
        let Some(read) = self.read else { return };
        if !self.read_polled || read.index != index || read.offset != offset {
            return;
        }
        self.read = None;
        self.read_polled = false;
        if bytes.len() != read.len {
            let path = self.path(index);
            self.fail(
                FailCode::SourceChanged,
                format!("{path} is shorter than when it was offered"),
            );
            return;
        }
        let len = bytes.len() as u64;
        // The read was asked for within the window and the current entry, so these hold.
        if let Some(f) = self.flights.back_mut() {
            f.sent += len;
        }
        self.in_flight += len;
        self.stats.max_in_flight = self.stats.max_in_flight.max(self.in_flight);
        self.sent_total += len;
        self.stats.bytes_sent += len;
        let end = Position {
            index,
            offset: offset + len,
        };
        if let Some(hw) = self.high_water {
            // Bytes below where an earlier connection got to were sent before.
            let resent = if index < hw.index {
                len
            } else if index == hw.index {
                hw.offset.min(end.offset).saturating_sub(offset)
            } else {
                0
            };
            self.stats.bytes_resent += resent;
        }
        if self.high_water.is_none_or(|hw| end > hw) {
            self.high_water = Some(end);
        }
        self.frames.push_back(Frame::Data {
            index,
            offset,
            bytes,
        });
        self.advance();
    }

    /// The read [`Sender::poll_read`] asked for failed: FAIL source changed or I/O error, with the reason.
    pub fn handle_read_error(&mut self, index: u32, error: ReadError) {
        if self.read.is_none_or(|r| r.index != index) || !self.read_polled {
            return;
        }
        let path = self.path(index);
        match error {
            ReadError::Changed(why) => self.fail(FailCode::SourceChanged, format!("{path}: {why}")),
            ReadError::Io(why) => self.fail(FailCode::Io, format!("{path}: {why}")),
        }
    }

    /// A frame from the receiver. Anything out of place, or a promise that does not fit the offer, fails
    /// the transfer (protocol error); after the end, frames are ignored.
    pub fn handle_frame(&mut self, frame: Frame) {
        if matches!(self.state, State::Done | State::Failed) {
            return;
        }
        match frame {
            Frame::Accept {
                id,
                complete_below,
                resume,
            } if self.state == State::Offered && id == self.id => {
                self.accepted(complete_below, resume)
            }
            Frame::Verified { index, offset }
                if matches!(self.state, State::Sending | State::Finishing) =>
            {
                self.verified(index, offset)
            }
            Frame::Done { id } if self.state == State::Finishing && id == self.id => {
                if self.flights.is_empty() {
                    self.state = State::Done;
                    self.events.push_back(SendEvent::Done);
                } else {
                    self.fail(
                        FailCode::Protocol,
                        "DONE before every entry was verified".into(),
                    );
                }
            }
            Frame::Fail { code, reason, .. } => {
                self.state = State::Failed;
                self.read = None;
                self.frames.clear();
                self.events
                    .push_back(SendEvent::Failed(Failure::from_peer(code, &reason)));
            }
            other => {
                let what = match other {
                    Frame::Accept { id, .. } | Frame::Done { id } if id != self.id => {
                        format!("{} for another transfer", other.name())
                    }
                    _ => format!("{} out of place", other.name()),
                };
                self.fail(FailCode::Protocol, what);
            }
        }
    }

    fn accepted(&mut self, complete_below: u32, resume: Vec<Resume>) {
        let count = self.entries.len() as u32;
        if complete_below > count {
            return self.fail(FailCode::Protocol, "ACCEPT past the last entry".into());
        }
        let mut skipped: u64 = self.entries[..complete_below as usize]
            .iter()
            .map(Offered::size)
            .sum();
        // The parser has checked the points are in order and at or above complete_below.
        for r in &resume {
            let Some(e) = self.entries.get(r.index as usize) else {
                return self.fail(
                    FailCode::Protocol,
                    "ACCEPT resumes past the last entry".into(),
                );
            };
            if r.offset > e.size() {
                return self.fail(
                    FailCode::Protocol,
                    format!("ACCEPT resumes {} past its size", e.path),
                );
            }
            skipped += r.offset;
        }
        self.next = complete_below;
        self.resume = resume.into();
        self.sent_total = skipped;
        self.verified_total = skipped;
        self.stats.bytes_skipped = skipped;
        self.state = State::Sending;
        self.events.push_back(SendEvent::Accepted { skipped });
        self.advance();
    }

    fn verified(&mut self, index: u32, offset: u64) {
        let Some(front) = self.flights.front() else {
            return self.fail(FailCode::Protocol, "VERIFIED with nothing in flight".into());
        };
        // Flights hold consecutive indexes, so the entry is found by subtraction.
        let k = index.wrapping_sub(front.index) as usize;
        let Some(f) = self.flights.get_mut(k) else {
            return self.fail(
                FailCode::Protocol,
                "VERIFIED for an entry not in flight".into(),
            );
        };
        if offset < f.verified || offset > f.sent || f.complete {
            return self.fail(
                FailCode::Protocol,
                "VERIFIED going back, past what was sent, or twice".into(),
            );
        }
        let gain = offset - f.verified;
        f.verified = offset;
        f.complete = offset == f.size;
        self.in_flight -= gain;
        self.verified_total += gain;
        while self.flights.front().is_some_and(|f| f.complete) {
            self.flights.pop_front();
        }
        self.events.push_back(SendEvent::Progress {
            sent: self.sent_total,
            verified: self.verified_total,
            total: self.total,
        });
        self.advance();
    }

    /// Hands out what the window allows: the next ENTRY, or a read for the current entry's next bytes.
    fn advance(&mut self) {
        while self.state == State::Sending && self.read.is_none() {
            let current = self.flights.back().filter(|f| f.sent < f.size);
            if let Some(f) = current {
                let room = self.cfg.window - self.in_flight;
                if room == 0 {
                    return;
                }
                let len = (f.size - f.sent).min(MAX_DATA as u64).min(room) as usize;
                self.read = Some(Read {
                    index: f.index,
                    offset: f.sent,
                    len,
                });
                return;
            }
            let count = self.entries.len() as u32;
            if self.next == count {
                self.state = State::Finishing;
                return;
            }
            if self.flights.len() >= self.cfg.max_entries_in_flight as usize {
                return;
            }
            let index = self.next;
            self.next += 1;
            let e = &self.entries[index as usize];
            let size = e.size();
            let start = match self.resume.front() {
                Some(r) if r.index == index => {
                    let o = r.offset;
                    self.resume.pop_front();
                    o
                }
                _ => 0,
            };
            self.frames.push_back(Frame::Entry {
                index,
                kind: e.kind,
                path: e.path.clone(),
            });
            self.stats.entries_sent += 1;
            self.flights.push_back(Flight {
                index,
                size,
                sent: start,
                verified: start,
                complete: false,
            });
        }
    }

    fn path(&self, index: u32) -> &str {
        self.entries
            .get(index as usize)
            .map_or("?", |e| e.path.as_str())
    }

    /// Ends the transfer from this side: FAIL queued (in place of any data not yet polled: the receiver
    /// gains nothing from it now), event Failed.
    fn fail(&mut self, code: FailCode, reason: String) {
        if matches!(self.state, State::Done | State::Failed) {
            return;
        }
        log::debug!("transfer {} send failed: {code}: {reason}", self.id);
        self.state = State::Failed;
        self.read = None;
        self.read_polled = false;
        self.frames.clear();
        self.frames.push_back(Frame::Fail {
            id: self.id,
            code,
            reason: reason.clone(),
        });
        self.events.push_back(SendEvent::Failed(Failure {
            code,
            reason,
            by_peer: false,
        }));
    }
}
