//! The frames of a file transfer's connection: the chat frames' framing ([`crate::peer::frame::framed`]: a
//! 4-byte big-endian length, a type byte, the body) with types of their own, from 16 up. Layouts and the
//! exchange are in `docs/PROTOCOL.md` ("File transfer (issue 16), frames").
//!
//! [`Frame::parse`] is strict: the exact length, a known type, every value within its bound, strings in UTF-8
//! and nothing after the frame. [`Frame::encode`] never writes what `parse` refuses: an over-long string is cut
//! at a char boundary (as the chat frames' encoder does) and a number past its bound is clamped to it (the
//! sender checks what it offers against the bounds first; a clamped value then fails the receiver's checks
//! of the transfer, not its parser). [`Reader`] reassembles frames from a stream, holding at most one.
//!
//! Parsing allocates only what the frame holds (a string, a DATA frame's bytes, an ACCEPT's resume points),
//! each bounded before it is read. Nothing here panics.

#![forbid(unsafe_code)]

use std::fmt;

use crate::codec::{self, Malformed, Put};
pub use crate::peer::frame::FrameError;
use crate::peer::frame::{Body, Reassembler, framed};

/// Protocol version carried in OFFER.
pub const VERSION: u8 = 1;
/// Most bytes of file data in one DATA frame (64 KiB): large enough that the framing costs nothing next to
/// the data, small enough that a frame stays within [`MAX_FRAME`] and the receiver holds little.
pub const MAX_DATA: usize = 64 * 1024;
/// Longest path (ENTRY) or name (OFFER) on the wire, in bytes of UTF-8: Linux's `PATH_MAX`, so any relative
/// path a sender can open fits. The receiver's sanitiser then enforces much smaller bounds
/// ([`super::name::MAX_PATH`]); a longer one is still a well-formed frame, for the sanitiser to refuse or cut.
pub const MAX_WIRE_PATH: usize = 4096;
/// Longest reason in a FAIL, in bytes of UTF-8.
pub const MAX_REASON: usize = 1024;
/// Most entries (files and folders) one transfer may announce. The receiver sets its own, lower limit; this
/// bound keeps every index and count well inside `u32`.
pub const MAX_ENTRIES: u32 = 1_000_000;
/// Largest size, offset or total in bytes (1 PiB, 2^50): far past any disk, and low enough that an offset
/// plus a DATA frame's length, or the sum of two sizes, never overflows a `u64`.
pub const MAX_SIZE: u64 = 1 << 50;
/// Most resume points in one ACCEPT. Entries are sent in order, so a transfer cut once has at most one
/// partial entry beyond the `complete_below` prefix; the list exists for entries the receiver skips or holds
/// out of order, and one beyond this bound is simply sent again from 0.
pub const MAX_RESUME: usize = 4096;
/// Largest frame body (type byte onwards): a DATA frame with [`MAX_DATA`] bytes.
pub const MAX_FRAME: usize = 1 + DATA_HEADER + MAX_DATA;

/// A DATA frame's index and offset.
const DATA_HEADER: usize = 4 + 8;
/// A resume point's size on the wire: index u32, offset u64.
const RESUME_LEN: usize = 4 + 8;

// Every other frame at its largest fits within MAX_FRAME, so the reader's one bound covers them all.
const _: () = assert!(1 + 1 + 16 + 8 + 4 + 2 + MAX_WIRE_PATH <= MAX_FRAME); // OFFER
const _: () = assert!(1 + 4 + 1 + 8 + 32 + 2 + MAX_WIRE_PATH <= MAX_FRAME); // ENTRY
const _: () = assert!(1 + 16 + 4 + 4 + RESUME_LEN * MAX_RESUME <= MAX_FRAME); // ACCEPT
const _: () = assert!(1 + 16 + 1 + 2 + MAX_REASON <= MAX_FRAME); // FAIL
// The u16 string lengths hold what they must.
const _: () = assert!(MAX_WIRE_PATH <= u16::MAX as usize);
const _: () = assert!(MAX_REASON <= u16::MAX as usize);

const OFFER: u8 = 16;
const ENTRY: u8 = 17;
const ACCEPT: u8 = 18;
const DATA: u8 = 19;
const VERIFIED: u8 = 20;
const DONE: u8 = 21;
const FAIL: u8 = 22;

const KIND_FILE: u8 = 0;
const KIND_DIR: u8 = 1;

/// A transfer's id: 16 random bytes the sender chooses, the same every time it offers that transfer again
/// (which is how the receiver finds what it already holds of it).
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransferId(pub [u8; 16]);

impl fmt::Display for TransferId {
    /// 32 lower-case hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TransferId({self})")
    }
}

/// What an entry is. A directory has no size and no hash on the wire (zeros, checked).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File {
        /// Its size in bytes (at most [`MAX_SIZE`]).
        size: u64,
        /// The BLAKE3 hash of its whole content.
        hash: [u8; 32],
    },
    /// A directory (created even when empty).
    Dir,
}

/// Where the receiver wants an entry resumed (an ACCEPT lists these).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Resume {
    /// The entry's index.
    pub index: u32,
    /// The byte it holds (verified) up to; `offset == size` means nothing is to be sent.
    pub offset: u64,
}

/// Why a transfer failed, as a FAIL frame says it (either side may send one, at any point).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum FailCode {
    /// The receiver (its user) said no.
    Declined,
    /// Either side's user gave up on it.
    Cancelled,
    /// More bytes than the receiver accepts, or a file larger than it accepts.
    TooLarge,
    /// More entries than the receiver accepts.
    TooManyFiles,
    /// A path the receiver's sanitiser refused (absolute, `..`, too deep or too long).
    NameRefused,
    /// The receiver's disk (or quota) is full.
    DiskFull,
    /// A received file's hash is not the one its ENTRY announced.
    HashMismatch,
    /// Another I/O error (permissions, a vanished directory...): the reason says which.
    Io,
    /// A file vanished or changed on the sender since it was offered.
    SourceChanged,
    /// The other side broke the protocol (a frame out of place, sizes that do not add up).
    Protocol,
    /// The receiver has too many transfers in flight; try later.
    Busy,
}

impl FailCode {
    /// Every code, in wire order.
    pub const ALL: [FailCode; 11] = [
        FailCode::Declined,
        FailCode::Cancelled,
        FailCode::TooLarge,
        FailCode::TooManyFiles,
        FailCode::NameRefused,
        FailCode::DiskFull,
        FailCode::HashMismatch,
        FailCode::Io,
        FailCode::SourceChanged,
        FailCode::Protocol,
        FailCode::Busy,
    ];

    /// The code's byte on the wire: 1 onwards in [`FailCode::ALL`]'s order (0 is never a code, so a zeroed
    /// frame is not mistaken for one).
    pub fn to_u8(self) -> u8 {
        match self {
            FailCode::Declined => 1,
            FailCode::Cancelled => 2,
            FailCode::TooLarge => 3,
            FailCode::TooManyFiles => 4,
            FailCode::NameRefused => 5,
            FailCode::DiskFull => 6,
            FailCode::HashMismatch => 7,
            FailCode::Io => 8,
            FailCode::SourceChanged => 9,
            FailCode::Protocol => 10,
            FailCode::Busy => 11,
        }
    }

    /// The code a byte names, if any. Unknown codes are refused rather than read as a generic failure: a
    /// frame has one meaning, and a new code comes with a new [`VERSION`].
    pub fn from_u8(b: u8) -> Option<FailCode> {
        FailCode::ALL.into_iter().find(|c| c.to_u8() == b)
    }

    /// A short name for logs and `listen --json`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailCode::Declined => "declined",
            FailCode::Cancelled => "cancelled",
            FailCode::TooLarge => "too large",
            FailCode::TooManyFiles => "too many files",
            FailCode::NameRefused => "name refused",
            FailCode::DiskFull => "disk full",
            FailCode::HashMismatch => "hash mismatch",
            FailCode::Io => "I/O error",
            FailCode::SourceChanged => "source changed",
            FailCode::Protocol => "protocol error",
            FailCode::Busy => "busy",
        }
    }
}

impl fmt::Display for FailCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One frame of a transfer connection. `→` is sender to receiver, `←` the other way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// → The first frame: what is offered. Also the first frame when a cut transfer is offered again.
    Offer {
        /// The transfer's id.
        id: TransferId,
        /// Bytes of all its files together (at most [`MAX_SIZE`]).
        total: u64,
        /// Its entries (1 ..= [`MAX_ENTRIES`]; a folder counts as one, and so does each file and folder in
        /// it).
        count: u32,
        /// The file's or folder's own name (at most [`MAX_WIRE_PATH`] bytes), unsanitised.
        name: String,
    },
    /// → One entry, before its data. Entries come in index order, from 0 (or from where the ACCEPT resumes).
    Entry {
        /// Its index (below the OFFER's count).
        index: u32,
        /// A file (with size and hash) or a directory.
        kind: EntryKind,
        /// Its path as the sender names it: components separated by `/`, the first being the OFFER's name
        /// (at most [`MAX_WIRE_PATH`] bytes), unsanitised.
        path: String,
    },
    /// ← The receiver takes the transfer, and says where to resume.
    Accept {
        /// The transfer's id.
        id: TransferId,
        /// Every entry below this index is complete already: nothing of them is sent.
        complete_below: u32,
        /// Entries (at or above `complete_below`) the receiver holds part of, by increasing index (at most
        /// [`MAX_RESUME`]). An entry not listed is sent from its start.
        resume: Vec<Resume>,
    },
    /// → File data: `bytes` of entry `index` from byte `offset` on.
    Data {
        /// The entry's index.
        index: u32,
        /// Where the bytes go in the file.
        offset: u64,
        /// 1 ..= [`MAX_DATA`] bytes.
        bytes: Vec<u8>,
    },
    /// ← Everything of entry `index` up to `offset` is written and synced (and, once `offset` is the file's
    /// size, its hash matched and it is in place): the sender's progress, and its resume point.
    Verified {
        /// The entry's index.
        index: u32,
        /// Bytes safely held.
        offset: u64,
    },
    /// ← Every entry is verified and in place: the transfer is complete.
    Done {
        /// The transfer's id.
        id: TransferId,
    },
    /// ↔ The transfer stops, and why. The connection is closed after it.
    Fail {
        /// The transfer's id.
        id: TransferId,
        /// What went wrong.
        code: FailCode,
        /// In words, for the other side's user (at most [`MAX_REASON`] bytes; shown sanitised).
        reason: String,
    },
}

impl Frame {
    /// The frame's name as `docs/PROTOCOL.md` gives it, for logs and "frame out of place" errors.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Offer { .. } => "OFFER",
            Frame::Entry { .. } => "ENTRY",
            Frame::Accept { .. } => "ACCEPT",
            Frame::Data { .. } => "DATA",
            Frame::Verified { .. } => "VERIFIED",
            Frame::Done { .. } => "DONE",
            Frame::Fail { .. } => "FAIL",
        }
    }

    /// Appends the frame, length prefix included, to `out`. Over-long strings are cut at a char boundary,
    /// numbers clamped to their bounds, an ACCEPT's resume points put in order (see [`normalise_resume`]),
    /// and a DATA frame's bytes cut to [`MAX_DATA`] (use [`encode_data`] to learn how many went in); a DATA
    /// frame with no bytes is not a frame and writes nothing.
    pub fn encode(&self, out: &mut Vec<u8>) {
        if let Frame::Data {
            index,
            offset,
            bytes,
        } = self
        {
            encode_data(out, *index, *offset, bytes);
            return;
        }
        framed(out, |out| {
            out.put_u8(self.type_byte());
            match self {
                Frame::Offer {
                    id,
                    total,
                    count,
                    name,
                } => {
                    out.put_u8(VERSION);
                    out.put_bytes(&id.0);
                    out.put_u64((*total).min(MAX_SIZE));
                    out.put_u32((*count).clamp(1, MAX_ENTRIES));
                    put_str(out, name, MAX_WIRE_PATH);
                }
                Frame::Entry { index, kind, path } => {
                    out.put_u32((*index).min(MAX_ENTRIES - 1));
                    let (k, size, hash) = match kind {
                        EntryKind::File { size, hash } => (KIND_FILE, (*size).min(MAX_SIZE), *hash),
                        EntryKind::Dir => (KIND_DIR, 0, [0; 32]),
                    };
                    out.put_u8(k);
                    out.put_u64(size);
                    out.put_bytes(&hash);
                    put_str(out, path, MAX_WIRE_PATH);
                }
                Frame::Accept {
                    id,
                    complete_below,
                    resume,
                } => {
                    let below = (*complete_below).min(MAX_ENTRIES);
                    let mut resume = resume.clone();
                    normalise_resume(below, &mut resume);
                    out.put_bytes(&id.0);
                    out.put_u32(below);
                    out.put_u32(resume.len() as u32);
                    for r in &resume {
                        out.put_u32(r.index);
                        out.put_u64(r.offset);
                    }
                }
                Frame::Verified { index, offset } => {
                    out.put_u32((*index).min(MAX_ENTRIES - 1));
                    out.put_u64((*offset).min(MAX_SIZE));
                }
                Frame::Done { id } => out.put_bytes(&id.0),
                Frame::Fail { id, code, reason } => {
                    out.put_bytes(&id.0);
                    out.put_u8(code.to_u8());
                    put_str(out, reason, MAX_REASON);
                }
                // Written above, without the frame's bytes being copied.
                Frame::Data { .. } => {}
            }
        });
    }

    fn type_byte(&self) -> u8 {
        match self {
            Frame::Offer { .. } => OFFER,
            Frame::Entry { .. } => ENTRY,
            Frame::Accept { .. } => ACCEPT,
            Frame::Data { .. } => DATA,
            Frame::Verified { .. } => VERIFIED,
            Frame::Done { .. } => DONE,
            Frame::Fail { .. } => FAIL,
        }
    }

    /// Parses a frame body (type byte onwards). Every field is checked and nothing may follow the frame.
    pub fn parse(b: &[u8]) -> Result<Frame, FrameError> {
        Self::parse_why(b).map_err(|_| FrameError::Malformed)
    }

    /// [`Frame::parse`], saying what was wrong (for a log line or a FAIL's reason; a static string, so a
    /// hostile frame costs no allocation).
    pub fn parse_why(b: &[u8]) -> Result<Frame, Malformed> {
        let r = &mut codec::Reader::new(b);
        let f = match r.u8()? {
            OFFER => {
                if r.u8()? != VERSION {
                    return Err(Malformed("version"));
                }
                let id = TransferId(r.array()?);
                let total = size(r.u64()?)?;
                let count = r.u32()?;
                if count == 0 || count > MAX_ENTRIES {
                    return Err(Malformed("entry count"));
                }
                Frame::Offer {
                    id,
                    total,
                    count,
                    name: get_str(r, MAX_WIRE_PATH)?,
                }
            }
            ENTRY => {
                let index = index(r.u32()?)?;
                let kind = r.u8()?;
                let size = size(r.u64()?)?;
                let hash = r.array::<32>()?;
                let kind = match kind {
                    KIND_FILE => EntryKind::File { size, hash },
                    KIND_DIR if size == 0 && hash == [0; 32] => EntryKind::Dir,
                    KIND_DIR => return Err(Malformed("directory with a size or hash")),
                    _ => return Err(Malformed("entry kind")),
                };
                Frame::Entry {
                    index,
                    kind,
                    path: get_str(r, MAX_WIRE_PATH)?,
                }
            }
            ACCEPT => {
                let id = TransferId(r.array()?);
                let complete_below = r.u32()?;
                if complete_below > MAX_ENTRIES {
                    return Err(Malformed("complete_below"));
                }
                let n = r.u32()? as usize;
                // Bounded, and backed by bytes actually present, before anything is allocated.
                if n > MAX_RESUME || n.saturating_mul(RESUME_LEN) != r.remaining() {
                    return Err(Malformed("resume count"));
                }
                let mut resume = Vec::with_capacity(n);
                for _ in 0..n {
                    let point = Resume {
                        index: index(r.u32()?)?,
                        offset: size(r.u64()?)?,
                    };
                    let after = resume
                        .last()
                        .map_or(complete_below, |p: &Resume| p.index + 1);
                    if point.index < after {
                        return Err(Malformed("resume points out of order"));
                    }
                    resume.push(point);
                }
                Frame::Accept {
                    id,
                    complete_below,
                    resume,
                }
            }
            DATA => {
                let index = index(r.u32()?)?;
                let offset = size(r.u64()?)?;
                let bytes = r.rest();
                if bytes.is_empty() || bytes.len() > MAX_DATA {
                    return Err(Malformed("data length"));
                }
                // Both are bounded far below u64::MAX, so the sum cannot overflow.
                size(offset + bytes.len() as u64)?;
                r.take(bytes.len())?;
                Frame::Data {
                    index,
                    offset,
                    bytes: bytes.to_vec(),
                }
            }
            VERIFIED => Frame::Verified {
                index: index(r.u32()?)?,
                offset: size(r.u64()?)?,
            },
            DONE => Frame::Done {
                id: TransferId(r.array()?),
            },
            FAIL => {
                let id = TransferId(r.array()?);
                let code = FailCode::from_u8(r.u8()?).ok_or(Malformed("fail code"))?;
                Frame::Fail {
                    id,
                    code,
                    reason: get_str(r, MAX_REASON)?,
                }
            }
            _ => return Err(Malformed("frame type")),
        };
        r.end()?;
        Ok(f)
    }
}

impl Body for Frame {
    const MAX: usize = MAX_FRAME;
    fn parse_body(b: &[u8]) -> Result<Frame, FrameError> {
        Frame::parse(b)
    }
}

/// Reassembles a transfer connection's frames from a byte stream: the chat frames' reader with this
/// module's frames and [`MAX_FRAME`], so it holds at most one frame and refuses an oversized length before
/// reading its body.
pub type Reader = Reassembler<Frame>;

/// Appends a DATA frame with as many of `bytes` as one frame takes (at most [`MAX_DATA`], and never past
/// [`MAX_SIZE`]) and returns how many that was; with none to send it writes nothing and returns 0. A sender
/// loops on it, advancing `offset` by what it returns.
pub fn encode_data(out: &mut Vec<u8>, index: u32, offset: u64, bytes: &[u8]) -> usize {
    let room = MAX_SIZE.saturating_sub(offset).min(MAX_DATA as u64) as usize;
    let n = bytes.len().min(room);
    if n == 0 {
        return 0;
    }
    framed(out, |out| {
        out.put_u8(DATA);
        out.put_u32(index.min(MAX_ENTRIES - 1));
        out.put_u64(offset);
        out.put_bytes(&bytes[..n]);
    });
    n
}

/// Puts resume points into the one form an ACCEPT carries: indexes at or above `complete_below` (those below
/// are complete anyway), offsets clamped to [`MAX_SIZE`], by increasing index, one per index (the lowest
/// offset wins: sending a few bytes again is safe, skipping some is not), and at most [`MAX_RESUME`] of them
/// (the lowest indexes; an entry dropped is sent again from 0). [`Frame::encode`] applies it, so a receiver
/// that wants to know exactly what it promised applies it first.
pub fn normalise_resume(complete_below: u32, resume: &mut Vec<Resume>) {
    resume.retain(|r| r.index >= complete_below && r.index < MAX_ENTRIES);
    for r in resume.iter_mut() {
        r.offset = r.offset.min(MAX_SIZE);
    }
    resume.sort_unstable();
    resume.dedup_by_key(|r| r.index);
    resume.truncate(MAX_RESUME);
}

/// An entry index: below [`MAX_ENTRIES`].
fn index(i: u32) -> Result<u32, Malformed> {
    if i < MAX_ENTRIES {
        Ok(i)
    } else {
        Err(Malformed("entry index"))
    }
}

/// A size, offset or total: at most [`MAX_SIZE`].
fn size(n: u64) -> Result<u64, Malformed> {
    if n <= MAX_SIZE {
        Ok(n)
    } else {
        Err(Malformed("size"))
    }
}

/// A u16 length and that many bytes of UTF-8, at most `max`.
fn get_str(r: &mut codec::Reader<'_>, max: usize) -> Result<String, Malformed> {
    let n = usize::from(r.u16()?);
    if n > max {
        return Err(Malformed("string too long"));
    }
    let s = std::str::from_utf8(r.take(n)?).map_err(|_| Malformed("string not UTF-8"))?;
    Ok(s.to_owned())
}

/// `s` cut to at most `max` bytes at a char boundary, behind its u16 length.
fn put_str(out: &mut Vec<u8>, s: &str, max: usize) {
    let s = crate::utf8_prefix(s, max).as_bytes();
    out.put_u16(s.len() as u16);
    out.put_bytes(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: TransferId = TransferId([0xab; 16]);

    /// One of each frame, with each bounded field at its bound somewhere.
    fn frames() -> Vec<Frame> {
        vec![
            Frame::Offer {
                id: ID,
                total: 5,
                count: 1,
                name: "héllo ✓.txt".into(),
            },
            Frame::Offer {
                id: TransferId([0; 16]),
                total: MAX_SIZE,
                count: MAX_ENTRIES,
                name: "é".repeat(MAX_WIRE_PATH / 2),
            },
            Frame::Entry {
                index: 0,
                kind: EntryKind::File {
                    size: MAX_SIZE,
                    hash: [7; 32],
                },
                path: "photos/a b/c.jpg".into(),
            },
            Frame::Entry {
                index: MAX_ENTRIES - 1,
                kind: EntryKind::Dir,
                path: "x".repeat(MAX_WIRE_PATH),
            },
            Frame::Entry {
                index: 3,
                kind: EntryKind::File {
                    size: 0,
                    hash: [0; 32],
                },
                path: String::new(),
            },
            Frame::Accept {
                id: ID,
                complete_below: 0,
                resume: Vec::new(),
            },
            Frame::Accept {
                id: ID,
                complete_below: 2,
                resume: vec![
                    Resume {
                        index: 2,
                        offset: 65_536,
                    },
                    Resume {
                        index: MAX_ENTRIES - 1,
                        offset: MAX_SIZE,
                    },
                ],
            },
            Frame::Accept {
                id: ID,
                complete_below: MAX_ENTRIES,
                resume: Vec::new(),
            },
            Frame::Accept {
                id: ID,
                complete_below: 0,
                resume: (0..MAX_RESUME as u32)
                    .map(|index| Resume {
                        index,
                        offset: u64::from(index),
                    })
                    .collect(),
            },
            Frame::Data {
                index: 1,
                offset: 0,
                bytes: vec![1],
            },
            Frame::Data {
                index: MAX_ENTRIES - 1,
                offset: MAX_SIZE - MAX_DATA as u64,
                bytes: vec![0xee; MAX_DATA],
            },
            Frame::Verified {
                index: 0,
                offset: MAX_SIZE,
            },
            Frame::Done { id: ID },
            Frame::Fail {
                id: ID,
                code: FailCode::Declined,
                reason: String::new(),
            },
            Frame::Fail {
                id: ID,
                code: FailCode::Busy,
                reason: "ß".repeat(MAX_REASON / 2),
            },
        ]
    }

    fn encode(f: &Frame) -> Vec<u8> {
        let mut b = Vec::new();
        f.encode(&mut b);
        b
    }

    /// A frame body built by hand, behind its length prefix.
    fn with_prefix(body: &[u8]) -> Vec<u8> {
        let mut b = (body.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(body);
        b
    }

    #[test]
    fn every_frame_round_trips_and_every_prefix_or_extra_byte_is_refused() {
        for f in frames() {
            let enc = encode(&f);
            let body = &enc[4..];
            assert_eq!(enc[..4], (body.len() as u32).to_be_bytes(), "{}", f.name());
            assert!(body.len() <= MAX_FRAME);
            assert_eq!(body[0], f.type_byte());
            assert_eq!(Frame::parse(body).as_ref(), Ok(&f), "{}", f.name());
            for n in 0..body.len() {
                match (&f, Frame::parse(&body[..n])) {
                    // Past its header, a DATA frame cut short is a shorter DATA frame (the length prefix
                    // is what says where a frame ends).
                    (Frame::Data { .. }, Ok(Frame::Data { bytes, .. })) => {
                        assert_eq!(bytes.len(), n - 1 - DATA_HEADER)
                    }
                    (_, got) => {
                        assert_eq!(got, Err(FrameError::Malformed), "{} cut at {n}", f.name())
                    }
                }
            }
            let mut more = body.to_vec();
            more.push(0);
            match (&f, Frame::parse(&more)) {
                // DATA's bytes run to the end of the frame: a byte more is more data (the length prefix
                // says where the frame ends), or too much.
                (Frame::Data { bytes, .. }, Ok(Frame::Data { bytes: got, .. })) => {
                    assert_eq!(got.len(), bytes.len() + 1)
                }
                (Frame::Data { bytes, .. }, got) => {
                    assert_eq!(bytes.len(), MAX_DATA);
                    assert_eq!(got, Err(FrameError::Malformed));
                }
                (_, got) => assert_eq!(
                    got,
                    Err(FrameError::Malformed),
                    "{} with a byte more",
                    f.name()
                ),
            }
        }
    }

    #[test]
    fn the_reader_reassembles_at_every_cut_and_holds_one_frame() {
        let small: Vec<Frame> = frames()
            .into_iter()
            .filter(|f| encode(f).len() < 200)
            .collect();
        let stream: Vec<u8> = small.iter().flat_map(encode).collect();
        for cut in 0..=stream.len() {
            let mut r = Reader::default();
            let mut out = Vec::new();
            r.push(&stream[..cut], &mut out).unwrap();
            r.push(&stream[cut..], &mut out).unwrap();
            assert_eq!(out, small, "cut at {cut}");
            assert!(!r.is_partial());
        }
        // Every frame, one byte at a time: never more than one maximal frame held.
        let all = frames();
        let stream: Vec<u8> = all.iter().flat_map(encode).collect();
        let mut r = Reader::default();
        let mut out = Vec::new();
        for b in &stream {
            r.push(std::slice::from_ref(b), &mut out).unwrap();
            assert!(r.buffered() <= 4 + MAX_FRAME);
        }
        assert_eq!(out, all);
    }

    #[test]
    fn the_reader_refuses_an_oversized_length_before_its_body() {
        let mut r = Reader::default();
        let mut out = Vec::new();
        let len = (MAX_FRAME as u32 + 1).to_be_bytes();
        assert_eq!(r.push(&len, &mut out), Err(FrameError::Oversized));
        assert_eq!(r.buffered(), 0);
        // A DATA frame one byte over MAX_DATA is over MAX_FRAME too.
        let mut body = vec![DATA, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        body.resize(body.len() + MAX_DATA + 1, 1);
        let mut r = Reader::default();
        assert_eq!(
            r.push(&with_prefix(&body), &mut out),
            Err(FrameError::Oversized)
        );
        assert_eq!(Frame::parse(&body), Err(FrameError::Malformed));
        assert!(out.is_empty());
    }

    /// Each bound and rule of `parse`, with the reason it gives.
    #[test]
    fn each_bound_is_refused() {
        let why = |b: &[u8]| Frame::parse_why(b).unwrap_err().0;
        let offer = |version: u8, total: u64, count: u32, name: &[u8]| {
            let mut b = vec![OFFER, version];
            b.put_bytes(&ID.0);
            b.put_u64(total);
            b.put_u32(count);
            b.put_u16(name.len() as u16);
            b.put_bytes(name);
            b
        };
        assert!(Frame::parse(&offer(VERSION, MAX_SIZE, MAX_ENTRIES, b"a")).is_ok());
        assert_eq!(why(&offer(2, 1, 1, b"a")), "version");
        assert_eq!(why(&offer(VERSION, MAX_SIZE + 1, 1, b"a")), "size");
        assert_eq!(why(&offer(VERSION, 1, 0, b"a")), "entry count");
        assert_eq!(
            why(&offer(VERSION, 1, MAX_ENTRIES + 1, b"a")),
            "entry count"
        );
        assert_eq!(
            why(&offer(VERSION, 1, 1, &vec![b'a'; MAX_WIRE_PATH + 1])),
            "string too long"
        );
        assert_eq!(why(&offer(VERSION, 1, 1, b"a\xff")), "string not UTF-8");

        let entry = |index: u32, kind: u8, size: u64, hash: [u8; 32], path: &[u8]| {
            let mut b = vec![ENTRY];
            b.put_u32(index);
            b.put_u8(kind);
            b.put_u64(size);
            b.put_bytes(&hash);
            b.put_u16(path.len() as u16);
            b.put_bytes(path);
            b
        };
        assert!(Frame::parse(&entry(0, KIND_DIR, 0, [0; 32], b"a")).is_ok());
        assert_eq!(
            why(&entry(MAX_ENTRIES, KIND_FILE, 0, [0; 32], b"a")),
            "entry index"
        );
        assert_eq!(why(&entry(0, 2, 0, [0; 32], b"a")), "entry kind");
        assert_eq!(
            why(&entry(0, KIND_DIR, 1, [0; 32], b"a")),
            "directory with a size or hash"
        );
        assert_eq!(
            why(&entry(0, KIND_DIR, 0, [1; 32], b"a")),
            "directory with a size or hash"
        );
        assert_eq!(
            why(&entry(0, KIND_FILE, MAX_SIZE + 1, [0; 32], b"a")),
            "size"
        );
        assert_eq!(
            why(&entry(
                0,
                KIND_FILE,
                1,
                [0; 32],
                &vec![b'a'; MAX_WIRE_PATH + 1]
            )),
            "string too long"
        );

        let accept = |below: u32, n: u32, points: &[(u32, u64)]| {
            let mut b = vec![ACCEPT];
            b.put_bytes(&ID.0);
            b.put_u32(below);
            b.put_u32(n);
            for &(i, o) in points {
                b.put_u32(i);
                b.put_u64(o);
            }
            b
        };
        assert!(Frame::parse(&accept(1, 2, &[(1, 0), (2, MAX_SIZE)])).is_ok());
        assert_eq!(why(&accept(MAX_ENTRIES + 1, 0, &[])), "complete_below");
        assert_eq!(why(&accept(0, 2, &[(1, 0)])), "resume count");
        assert_eq!(why(&accept(0, 1, &[(1, 0), (2, 0)])), "resume count");
        let many: Vec<(u32, u64)> = (0..=MAX_RESUME as u32).map(|i| (i, 0)).collect();
        assert_eq!(why(&accept(0, many.len() as u32, &many)), "resume count");
        assert_eq!(why(&accept(0, u32::MAX, &[])), "resume count");
        assert_eq!(
            why(&accept(0, 2, &[(2, 0), (1, 0)])),
            "resume points out of order"
        );
        assert_eq!(
            why(&accept(0, 2, &[(2, 0), (2, 5)])),
            "resume points out of order"
        );
        assert_eq!(why(&accept(3, 1, &[(2, 0)])), "resume points out of order");
        assert_eq!(why(&accept(0, 1, &[(MAX_ENTRIES, 0)])), "entry index");
        assert_eq!(why(&accept(0, 1, &[(0, MAX_SIZE + 1)])), "size");

        let data = |index: u32, offset: u64, n: usize| {
            let mut b = vec![DATA];
            b.put_u32(index);
            b.put_u64(offset);
            b.resize(b.len() + n, 9);
            b
        };
        assert!(Frame::parse(&data(0, MAX_SIZE - 1, 1)).is_ok());
        assert_eq!(why(&data(0, 0, 0)), "data length");
        assert_eq!(why(&data(0, 0, MAX_DATA + 1)), "data length");
        assert_eq!(why(&data(0, MAX_SIZE, 1)), "size");
        assert_eq!(why(&data(0, u64::MAX, 1)), "size");
        assert_eq!(why(&data(MAX_ENTRIES, 0, 1)), "entry index");

        let mut verified = vec![VERIFIED];
        verified.put_u32(0);
        verified.put_u64(MAX_SIZE + 1);
        assert_eq!(why(&verified), "size");

        let fail = |code: u8, reason: &[u8]| {
            let mut b = vec![FAIL];
            b.put_bytes(&ID.0);
            b.put_u8(code);
            b.put_u16(reason.len() as u16);
            b.put_bytes(reason);
            b
        };
        assert!(Frame::parse(&fail(1, b"no")).is_ok());
        assert_eq!(why(&fail(0, b"")), "fail code");
        assert_eq!(why(&fail(12, b"")), "fail code");
        assert_eq!(
            why(&fail(1, &vec![b'a'; MAX_REASON + 1])),
            "string too long"
        );
        assert_eq!(why(&fail(1, b"\xc3")), "string not UTF-8");

        // Unknown types, the chat frames' among them, and nothing at all.
        for t in [0u8, 1, 2, 3, 4, 15, 23, 255] {
            assert_eq!(why(&[t, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), "frame type");
        }
        assert_eq!(why(&[]), "truncated");
    }

    #[test]
    fn fail_codes_have_one_byte_each() {
        for (i, c) in FailCode::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(c.to_u8()), i + 1);
            assert_eq!(FailCode::from_u8(c.to_u8()), Some(c));
            assert!(!c.to_string().is_empty());
        }
        assert_eq!(FailCode::from_u8(0), None);
        assert_eq!(FailCode::from_u8(FailCode::ALL.len() as u8 + 1), None);
    }

    /// `encode` never writes what `parse` refuses: strings cut at a char boundary, numbers clamped, resume
    /// points normalised, data cut, and an empty DATA not written at all.
    #[test]
    fn encode_keeps_within_the_bounds() {
        let long = format!("{}é", "a".repeat(MAX_WIRE_PATH - 1));
        let f = Frame::Offer {
            id: ID,
            total: u64::MAX,
            count: 0,
            name: long.clone(),
        };
        assert_eq!(
            Frame::parse(&encode(&f)[4..]),
            Ok(Frame::Offer {
                id: ID,
                total: MAX_SIZE,
                count: 1,
                name: long[..MAX_WIRE_PATH - 1].into(),
            })
        );
        let f = Frame::Entry {
            index: u32::MAX,
            kind: EntryKind::File {
                size: u64::MAX,
                hash: [1; 32],
            },
            path: "p".into(),
        };
        assert_eq!(
            Frame::parse(&encode(&f)[4..]),
            Ok(Frame::Entry {
                index: MAX_ENTRIES - 1,
                kind: EntryKind::File {
                    size: MAX_SIZE,
                    hash: [1; 32],
                },
                path: "p".into(),
            })
        );
        let f = Frame::Fail {
            id: ID,
            code: FailCode::Io,
            reason: "✓".repeat(MAX_REASON),
        };
        let Ok(Frame::Fail { reason, .. }) = Frame::parse(&encode(&f)[4..]) else {
            panic!("FAIL does not parse");
        };
        assert_eq!(reason, "✓".repeat(MAX_REASON / 3));

        let r = |index, offset| Resume { index, offset };
        let f = Frame::Accept {
            id: ID,
            complete_below: 2,
            resume: vec![r(9, 5), r(1, 0), r(3, u64::MAX), r(9, 4), r(u32::MAX, 0)],
        };
        assert_eq!(
            Frame::parse(&encode(&f)[4..]),
            Ok(Frame::Accept {
                id: ID,
                complete_below: 2,
                resume: vec![r(3, MAX_SIZE), r(9, 4)],
            })
        );
        let mut many: Vec<Resume> = (0..MAX_RESUME as u32 + 10).rev().map(|i| r(i, 1)).collect();
        normalise_resume(0, &mut many);
        assert_eq!(many.len(), MAX_RESUME);
        assert_eq!(many.last(), Some(&r(MAX_RESUME as u32 - 1, 1)));

        // DATA: cut to one frame's worth, said how much; nothing to send writes nothing.
        let mut out = Vec::new();
        assert_eq!(encode_data(&mut out, 0, 0, &[5; MAX_DATA + 10]), MAX_DATA);
        assert_eq!(out.len(), 4 + MAX_FRAME);
        assert_eq!(encode_data(&mut out, 0, 0, &[]), 0);
        assert_eq!(encode_data(&mut out, 0, MAX_SIZE, &[1]), 0);
        assert_eq!(encode_data(&mut out, 0, MAX_SIZE - 2, &[1; 5]), 2);
        assert_eq!(out.len(), 4 + MAX_FRAME + 4 + 1 + DATA_HEADER + 2);
        let empty = Frame::Data {
            index: 0,
            offset: 0,
            bytes: Vec::new(),
        };
        assert!(encode(&empty).is_empty());
    }

    #[test]
    fn transfer_ids_print_as_hex() {
        let mut id = [0u8; 16];
        id[0] = 0x0f;
        id[15] = 0xa0;
        assert_eq!(
            TransferId(id).to_string(),
            "0f0000000000000000000000000000a0"
        );
    }
}
