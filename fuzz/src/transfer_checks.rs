//! Checks on a file transfer's frames and on the receiver's name sanitiser (issue 16), shared by the
//! `transfer_frame` and `transfer_name` fuzz targets and `tests/transfer_props.rs` (which includes this file,
//! and `parser_checks.rs` beside it, with `#[path]`), so the fuzzers and `cargo test` hold them to the same
//! rules. Each entry point takes arbitrary bytes and panics on any inconsistency:
//!
//! - [`frame_body`]: `Frame::parse` never panics, refuses only as `Malformed` (and `parse_why` agrees), and a
//!   frame that parses is within every bound and re-encodes to exactly its bytes.
//! - [`wire_stream`] (the `chat_wire` target): the same with both kinds of frame, as a connection to the chat
//!   port carries them (`peer::wire`).
//! - [`frame_stream`]: the bytes as a connection's stream, into `transfer::frame::Reader` whole and in chunks,
//!   compared with the independent model decoder of `parser_checks` (the chat frames' framing is the same).
//! - [`encoders`]: frames built from the input (its text as names, paths and reasons; its bytes as numbers,
//!   resume points and data) always encode to something `parse` accepts, with strings cut at a char
//!   boundary, numbers clamped and resume points normalised as an independent model says.
//! - [`name`]: `sanitise_path` and `sanitise_name` on the input as text: either a refusal the text calls for,
//!   or a path every component of which is normal, non-empty, within bounds and free of refused characters,
//!   that stays under any directory it is joined to, and sanitises to itself; `unused_name` numbers within
//!   the bounds and gives up after `MAX_TRIES`.
//!
//! # `transfer_frame` input format
//!
//! As `chat_frame`'s (`parser_checks`): byte 0 picks how many chunk-size bytes follow, then the stream.

use std::path::{Component, Path};

use multiproto::peer::frame::Body;
use multiproto::peer::wire::Wire;
use multiproto::transfer::frame::{
    EntryKind, FailCode, Frame, FrameError, MAX_DATA, MAX_ENTRIES, MAX_FRAME, MAX_REASON,
    MAX_RESUME, MAX_SIZE, MAX_WIRE_PATH, Resume, TransferId, encode_data,
};
use multiproto::transfer::name::{
    self, FALLBACK, MAX_COMPONENT, MAX_DEPTH, MAX_PATH, MAX_TRIES, NameError, SafeName, SafePath,
};

use crate::parser_checks::{Outcome, split_input, stream_of, utf8_prefix};

// ---------------------------------------------------------------------------------------------------------
// Frames.

/// `Frame::parse` on a frame body (type byte onwards): see the module documentation.
pub fn frame_body(body: &[u8]) -> Result<Frame, FrameError> {
    let parsed = Frame::parse(body);
    assert_eq!(parsed.is_ok(), Frame::parse_why(body).is_ok());
    match &parsed {
        Ok(f) => {
            assert!(!body.is_empty() && body.len() <= MAX_FRAME);
            within_bounds(f);
            let mut enc = Vec::new();
            f.encode(&mut enc);
            assert_eq!(enc[..4], (body.len() as u32).to_be_bytes());
            assert_eq!(&enc[4..], body, "transfer frame re-encoding differs");
        }
        Err(e) => assert_eq!(*e, FrameError::Malformed),
    }
    parsed
}

/// Every bound of `docs/PROTOCOL.md`, checked on a parsed frame independently of the parser.
fn within_bounds(f: &Frame) {
    match f {
        Frame::Offer {
            total, count, name, ..
        } => {
            assert!(*total <= MAX_SIZE && (1..=MAX_ENTRIES).contains(count));
            assert!(name.len() <= MAX_WIRE_PATH);
        }
        Frame::Entry { index, kind, path } => {
            assert!(*index < MAX_ENTRIES && path.len() <= MAX_WIRE_PATH);
            if let EntryKind::File { size, .. } = kind {
                assert!(*size <= MAX_SIZE);
            }
        }
        Frame::Accept {
            complete_below,
            resume,
            ..
        } => {
            assert!(*complete_below <= MAX_ENTRIES && resume.len() <= MAX_RESUME);
            let mut after = *complete_below;
            for r in resume {
                assert!(r.index >= after && r.index < MAX_ENTRIES && r.offset <= MAX_SIZE);
                after = r.index + 1;
            }
        }
        Frame::Data {
            index,
            offset,
            bytes,
        } => {
            assert!(*index < MAX_ENTRIES && (1..=MAX_DATA).contains(&bytes.len()));
            assert!(
                offset
                    .checked_add(bytes.len() as u64)
                    .is_some_and(|end| end <= MAX_SIZE)
            );
        }
        Frame::Verified { index, offset } => assert!(*index < MAX_ENTRIES && *offset <= MAX_SIZE),
        Frame::Done { .. } => {}
        Frame::Fail { reason, .. } => assert!(reason.len() <= MAX_REASON),
    }
}

/// A body from a connection to the chat port (`peer::wire::Wire`): a type byte of 16 or more is a transfer
/// frame (every [`frame_body`] check), anything else a chat frame (every `chat_body` check).
pub fn wire_body(body: &[u8]) -> Result<Wire, FrameError> {
    match body.first() {
        Some(&t) if t >= 16 => frame_body(body).map(Wire::File),
        _ => crate::parser_checks::chat_body(body).map(Wire::Chat),
    }
}

/// A stream as a connection to the chat port carries it, chat and transfer frames in any mix: the model
/// with [`wire_body`], the reader fed whole and in `sizes` chunks agree, with the larger of the two kinds'
/// bounds on one frame.
pub fn wire_stream(stream: &[u8], sizes: &[usize]) -> Outcome<Wire> {
    assert_eq!(
        <Wire as Body>::MAX,
        MAX_FRAME.max(multiproto::peer::frame::MAX_FRAME)
    );
    stream_of(stream, sizes, wire_body)
}

/// The `chat_wire` fuzz target: the input as a body and as a chunked stream (`chat_frame`'s format) of
/// either kind of frame.
pub fn chat_wire(data: &[u8]) {
    let _ = wire_body(data);
    let (sizes, stream) = split_input(data);
    wire_stream(stream, &sizes);
}

/// A stream of transfer frames: the model, the reader fed whole and in `sizes` chunks agree (with the
/// reader's buffer bounded by one maximal frame), and every frame re-encodes to its bytes.
pub fn frame_stream(stream: &[u8], sizes: &[usize]) -> Outcome<Frame> {
    assert_eq!(<Frame as Body>::MAX, MAX_FRAME);
    stream_of(stream, sizes, frame_body)
}

/// Little-endian numbers from the input, cycling (zeros when it is empty), for the encoders' fields.
struct Numbers<'a> {
    data: &'a [u8],
    at: usize,
}

impl Numbers<'_> {
    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self
                .data
                .get(self.at % self.data.len().max(1))
                .copied()
                .unwrap_or(0);
            self.at += 1;
        }
        // Mostly small numbers and some near the bounds, not only huge ones.
        match b[0] % 4 {
            0 => u64::from_le_bytes(b),
            1 => u64::from(b[1]),
            2 => MAX_SIZE - u64::from(b[1]) + 64,
            _ => u64::from(u32::from_le_bytes([b[1], b[2], b[3], b[4]])),
        }
    }
    fn u32(&mut self) -> u32 {
        let n = self.u64();
        if n & 1 == 0 {
            n as u32
        } else {
            MAX_ENTRIES.wrapping_sub(n as u32 % 8).wrapping_add(3)
        }
    }
}

/// The resume points an ACCEPT carries for `resume` asked with `complete_below`, written from
/// `docs/PROTOCOL.md` independently of `normalise_resume`.
fn resume_model(complete_below: u32, resume: &[Resume]) -> Vec<Resume> {
    let mut best = std::collections::BTreeMap::new();
    for r in resume {
        if r.index >= complete_below && r.index < MAX_ENTRIES {
            let offset = r.offset.min(MAX_SIZE);
            best.entry(r.index)
                .and_modify(|o: &mut u64| *o = (*o).min(offset))
                .or_insert(offset);
        }
    }
    best.into_iter()
        .take(MAX_RESUME)
        .map(|(index, offset)| Resume { index, offset })
        .collect()
}

fn encode_parse(f: &Frame) -> Frame {
    let mut enc = Vec::new();
    f.encode(&mut enc);
    assert_eq!(enc[..4], (enc.len() as u32 - 4).to_be_bytes());
    match frame_body(&enc[4..]) {
        Ok(got) => got,
        Err(e) => panic!("{} encoded to a frame that does not parse: {e}", f.name()),
    }
}

/// Frames built from the input always encode to frames that parse, as the module documentation says.
pub fn encoders(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let n = &mut Numbers { data, at: 0 };
    let id = TransferId(std::array::from_fn(|i| data.get(i).copied().unwrap_or(0)));

    let (total, count) = (n.u64(), n.u32());
    assert_eq!(
        encode_parse(&Frame::Offer {
            id,
            total,
            count,
            name: text.to_string(),
        }),
        Frame::Offer {
            id,
            total: total.min(MAX_SIZE),
            count: count.clamp(1, MAX_ENTRIES),
            name: utf8_prefix(&text, MAX_WIRE_PATH).to_owned(),
        }
    );
    let (index, size) = (n.u32(), n.u64());
    let kind = if size % 3 == 0 {
        EntryKind::Dir
    } else {
        EntryKind::File {
            size,
            hash: [data.len() as u8; 32],
        }
    };
    let clamped = match kind {
        EntryKind::File { size, hash } => EntryKind::File {
            size: size.min(MAX_SIZE),
            hash,
        },
        EntryKind::Dir => EntryKind::Dir,
    };
    assert_eq!(
        encode_parse(&Frame::Entry {
            index,
            kind,
            path: text.to_string(),
        }),
        Frame::Entry {
            index: index.min(MAX_ENTRIES - 1),
            kind: clamped,
            path: utf8_prefix(&text, MAX_WIRE_PATH).to_owned(),
        }
    );
    let code = FailCode::ALL[data.len() % FailCode::ALL.len()];
    assert_eq!(
        encode_parse(&Frame::Fail {
            id,
            code,
            reason: text.to_string(),
        }),
        Frame::Fail {
            id,
            code,
            reason: utf8_prefix(&text, MAX_REASON).to_owned(),
        }
    );
    let (index, offset) = (n.u32(), n.u64());
    assert_eq!(
        encode_parse(&Frame::Verified { index, offset }),
        Frame::Verified {
            index: index.min(MAX_ENTRIES - 1),
            offset: offset.min(MAX_SIZE),
        }
    );
    assert_eq!(encode_parse(&Frame::Done { id }), Frame::Done { id });

    let complete_below = n.u32() % 64;
    let resume: Vec<Resume> = (0..data.len().min(64))
        .map(|_| Resume {
            index: n.u32() % 128,
            offset: n.u64(),
        })
        .collect();
    assert_eq!(
        encode_parse(&Frame::Accept {
            id,
            complete_below,
            resume: resume.clone(),
        }),
        Frame::Accept {
            id,
            complete_below,
            resume: resume_model(complete_below, &resume),
        }
    );

    // DATA: as many bytes as one frame takes, never past MAX_SIZE; nothing written for none.
    let (index, offset) = (n.u32(), n.u64());
    let mut enc = Vec::new();
    let took = encode_data(&mut enc, index, offset, data);
    let room = MAX_SIZE.saturating_sub(offset).min(MAX_DATA as u64) as usize;
    assert_eq!(took, data.len().min(room));
    if took == 0 {
        assert!(enc.is_empty());
    } else {
        assert_eq!(
            frame_body(&enc[4..]),
            Ok(Frame::Data {
                index: index.min(MAX_ENTRIES - 1),
                offset,
                bytes: data[..took].to_vec(),
            })
        );
    }
}

/// The `transfer_frame` fuzz target: the input as a frame body, as a chunked stream (format in the module
/// documentation), and as the fields of frames to encode.
pub fn transfer_frame(data: &[u8]) {
    let _ = frame_body(data);
    let (sizes, stream) = split_input(data);
    frame_stream(stream, &sizes);
    encoders(data);
}

// ---------------------------------------------------------------------------------------------------------
// Names.

/// Characters no sanitised component may hold, listed independently of the sanitiser: separators, the
/// characters Windows forbids, and a selection of format characters (the bidirectional controls, zero-width
/// characters, the BOM, a tag); control characters are checked with `char::is_control`.
const REFUSED: &[char] = &[
    '/',
    '\\',
    '<',
    '>',
    ':',
    '"',
    '|',
    '?',
    '*',
    '\u{00AD}',
    '\u{061C}',
    '\u{200B}',
    '\u{200C}',
    '\u{200D}',
    '\u{200E}',
    '\u{200F}',
    '\u{202A}',
    '\u{202B}',
    '\u{202C}',
    '\u{202D}',
    '\u{202E}',
    '\u{2028}',
    '\u{2029}',
    '\u{2060}',
    '\u{2066}',
    '\u{2067}',
    '\u{2068}',
    '\u{2069}',
    '\u{FEFF}',
    '\u{E0001}',
    '\u{E0041}',
];

/// Windows' reserved device names, as the stem (before the first dot, trailing spaces dropped) reads.
fn reserved(c: &str) -> bool {
    // ASCII case only, as Windows compares device names (`ı` is not an `I` there).
    let stem = c
        .split('.')
        .next()
        .unwrap_or("")
        .trim_end_matches(' ')
        .to_ascii_uppercase();
    let devices = ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"];
    devices.contains(&stem.as_str())
        || ["COM", "LPT"].iter().any(|d| {
            stem.strip_prefix(d).is_some_and(|n| {
                n.len() <= 2 && n.chars().count() == 1 && "0123456789¹²³".contains(n)
            })
        })
}

/// One sanitised component's invariants (`top`: the first of a path, or a single name).
fn component_ok(c: &str, top: bool) {
    assert!(!c.is_empty() && c.len() <= MAX_COMPONENT, "{c:?}");
    assert!(c != "." && c != "..", "{c:?}");
    assert!(
        !c.chars().any(|ch| ch.is_control() || REFUSED.contains(&ch)),
        "{c:?} holds a refused character"
    );
    assert!(!c.starts_with(' ') && !c.ends_with([' ', '.']), "{c:?}");
    assert!(!(top && c.starts_with('.')), "{c:?} is hidden at the top");
    assert!(!reserved(c), "{c:?} is a reserved name");
}

/// A sanitised path's invariants: bounded, normal components only, under any directory it is joined to,
/// and a fixed point of the sanitiser.
pub fn safe_path_ok(p: &SafePath) {
    let s = p.as_str();
    assert!(s.len() <= MAX_PATH, "{} bytes", s.len());
    let parts: Vec<&str> = s.split('/').collect();
    assert!((1..=MAX_DEPTH).contains(&parts.len()));
    assert_eq!(p.depth(), parts.len());
    assert_eq!(p.first(), parts[0]);
    for (i, c) in parts.iter().enumerate() {
        component_ok(c, i == 0);
    }
    let dir = Path::new("/srv/received");
    let under = p.under(dir);
    let below = under.strip_prefix(dir).expect("left its directory");
    assert_eq!(below.components().count(), parts.len());
    assert!(
        below
            .components()
            .all(|c| matches!(c, Component::Normal(_))),
        "{under:?}"
    );
    assert_eq!(name::sanitise_path(s).as_ref(), Ok(p), "not idempotent");
}

/// The input as an offered path and as an offered name; see the module documentation.
pub fn name(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let meaningful: Vec<&str> = text
        .split(['/', '\\'])
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    match name::sanitise_path(&text) {
        Ok(p) => {
            safe_path_ok(&p);
            assert!(!text.starts_with(['/', '\\']));
            assert!(!meaningful.contains(&".."));
            if meaningful.is_empty() {
                assert_eq!(p.as_str(), FALLBACK);
            } else {
                assert_eq!(p.depth(), meaningful.len(), "components lost or added");
            }
        }
        Err(NameError::Absolute) => {
            let first = text.split(['/', '\\']).next().unwrap_or("");
            let drive = matches!(first.as_bytes(), [l, b':'] if l.is_ascii_alphabetic());
            assert!(text.starts_with(['/', '\\']) || drive, "{text:?}");
        }
        Err(NameError::ParentDir) => assert!(meaningful.contains(&"..")),
        Err(NameError::TooDeep) => assert!(meaningful.len() > MAX_DEPTH),
        // Each component is at most MAX_COMPONENT bytes, so only enough of them overflow the path.
        Err(NameError::TooLong) => assert!(meaningful.len() * (MAX_COMPONENT + 1) > MAX_PATH + 1),
    }

    let n = name::sanitise_name(&text);
    component_ok(n.as_str(), true);
    assert_eq!(name::sanitise_name(n.as_str()), n, "not idempotent");

    // Numbering: the first `k` candidates are taken.
    let k = u32::from(data.first().copied().unwrap_or(0)) * 5;
    let keep = data.len().is_multiple_of(2);
    let mut asked = 0u32;
    let got = name::unused_name(&n, keep, |_| {
        asked += 1;
        asked <= k
    });
    match got {
        Some(free) => {
            assert!(k <= MAX_TRIES);
            numbered_ok(&n, &free, k, keep);
        }
        None => assert!(k > MAX_TRIES && asked == MAX_TRIES + 1),
    }
}

/// `free` is `n` numbered `k` (0: `n` itself) and a valid top-level name.
fn numbered_ok(n: &SafeName, free: &SafeName, k: u32, keep: bool) {
    component_ok(free.as_str(), true);
    assert_eq!(name::sanitise_name(free.as_str()), *free);
    if k == 0 {
        assert_eq!(free, n);
        return;
    }
    let (stem, ext) = if keep {
        name::split_extension(n.as_str())
    } else {
        (n.as_str(), "")
    };
    let suffix = format!(" ({k}){ext}");
    assert!(free.as_str().ends_with(&suffix), "{free:?} for {n:?}");
    let kept = &free.as_str()[..free.as_str().len() - suffix.len()];
    assert!(stem.starts_with(kept), "{free:?} for {n:?}");
}

// ---------------------------------------------------------------------------------------------------------
// The receiver's state machine.

/// `transfer_recv`: a `Receiver` driven by whatever frames the input parses into. Byte 0 picks the
/// receiver's answers (bit 0: decline the offer; bit 1: every Finish finds a hash mismatch; bit 2: writes
/// are never answered, so nothing is verified; bit 3: small limits); the rest is the connection's stream
/// into `transfer::frame::Reader` (a stream error ends the input, as it closes a connection). Checks: no
/// panic; at most `MAX_WINDOW` bytes unverified and `MAX_ENTRIES_IN_FLIGHT` entries pending; actions only
/// after an accept, every Open path a `SafePath` under the offer's name, writes contiguous per entry and
/// within its size, a Finish only at a file's end; nothing (action or frame) after the FAIL or DONE.
pub fn receiver(data: &[u8]) {
    use multiproto::transfer::recv::{Action, DiskError, Limits, Receiver, RecvEvent, ResumePoint};
    use multiproto::transfer::{MAX_ENTRIES_IN_FLIGHT, MAX_WINDOW};
    use std::collections::HashMap;

    let Some((&flags, stream)) = data.split_first() else {
        return;
    };
    let limits = if flags & 8 != 0 {
        Limits {
            max_total: 1 << 20,
            max_files: 16,
            max_file_size: 1 << 16,
            verify_every: 100,
        }
    } else {
        Limits::default()
    };
    let mut r = Receiver::new(limits);
    let mut reader = multiproto::transfer::frame::Reader::default();
    let mut frames = Vec::new();
    if reader.push(stream, &mut frames).is_err() && frames.is_empty() {
        return;
    }
    let mut name: Option<String> = None;
    let mut accepted = false;
    let mut ended = false;
    // Per entry: (size, bytes written so far).
    let mut files: HashMap<u32, (u64, u64)> = HashMap::new();
    for f in frames {
        r.handle_frame(f);
        while let Some(e) = r.poll_event() {
            match e {
                RecvEvent::Offered { name: n, .. } => {
                    assert!(name.is_none(), "offered twice");
                    name = Some(n.as_str().to_owned());
                    if flags & 1 != 0 {
                        r.decline();
                    } else {
                        r.accept(ResumePoint::default());
                        accepted = true;
                    }
                }
                RecvEvent::Failed { .. } | RecvEvent::Received { .. } => ended = true,
                RecvEvent::Progress {
                    received,
                    verified,
                    total,
                } => assert!(verified <= received && received <= total),
            }
        }
        while let Some(a) = r.poll_action() {
            assert!(accepted && !ended, "an action out of place");
            match a {
                Action::Open {
                    index, path, kind, ..
                } => {
                    safe_path_ok(&path);
                    assert_eq!(Some(path.first()), name.as_deref());
                    if let EntryKind::File { size, .. } = kind {
                        assert!(files.insert(index, (size, 0)).is_none());
                    }
                    r.handle_opened(index, Ok(()));
                }
                Action::Write {
                    index,
                    offset,
                    bytes,
                } => {
                    let (size, at) = files.get_mut(&index).expect("a write before its open");
                    assert_eq!(*at, offset, "writes not contiguous");
                    *at += bytes.len() as u64;
                    assert!(*at <= *size);
                    if flags & 4 == 0 {
                        r.handle_written(index, Ok(*at));
                    }
                }
                Action::Finish { index, .. } => {
                    let (size, at) = files[&index];
                    assert_eq!(size, at, "finished before its end");
                    let result = if flags & 2 != 0 {
                        Err(DiskError::HashMismatch)
                    } else {
                        Ok(())
                    };
                    r.handle_finished(index, result);
                }
            }
        }
        while let Some(e) = r.poll_event() {
            if matches!(e, RecvEvent::Failed { .. } | RecvEvent::Received { .. }) {
                ended = true;
            }
        }
        assert!(r.unverified() <= MAX_WINDOW);
        assert!(r.entries_pending() <= MAX_ENTRIES_IN_FLIGHT as usize);
        let mut last = None;
        while let Some(f) = r.poll_frame() {
            assert!(
                !matches!(last, Some(Frame::Fail { .. } | Frame::Done { .. })),
                "a frame after the end"
            );
            last = Some(f);
        }
        if ended {
            assert!(r.is_closed());
        }
    }
}
