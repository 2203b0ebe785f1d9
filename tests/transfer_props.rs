//! Property tests for a file transfer's frames and the receiver's name sanitiser (issue 16), on stable and in
//! plain `cargo test`:
//!
//! - every frame the strategies generate encodes and parses back to itself, within `MAX_FRAME`;
//! - arbitrary bytes (and bytes that start like a transfer frame, to get past the type byte) never panic the
//!   parser or the reader, and meet the fuzz targets' checks (`fuzz/src/transfer_checks.rs`): what parses
//!   re-encodes to exactly its bytes, and the reader agrees with an independent model however it is fed;
//! - every proper prefix of a frame is refused by the body parser (DATA: or is a shorter DATA) and leaves the
//!   reader waiting; every single-bit flip never panics and never gives the original frame back;
//! - the reader yields exactly the encoded frames however the stream is chunked, holding at most one;
//! - encoders cut over-long strings at a char boundary and clamp numbers, so what they send always parses;
//! - any string through the sanitiser is refused for a reason it shows, or yields a path of normal,
//!   non-empty, bounded components free of control and format characters, that stays under any directory
//!   it is joined to and sanitises to itself; numbering keeps to the bounds.
//!
//! Case counts are modest so that the file runs in seconds in a debug build; `PROPTEST_CASES` raises them.
//! Runs are deterministic (fixed RNG), and failures are not persisted to files.

use multiproto::transfer::frame::{
    EntryKind, FailCode, Frame, MAX_DATA, MAX_ENTRIES, MAX_FRAME, MAX_REASON, MAX_RESUME, MAX_SIZE,
    MAX_WIRE_PATH, Resume, TransferId,
};
use multiproto::transfer::name::{self, MAX_COMPONENT, MAX_DEPTH};
use proptest::prelude::*;

// Shared with the fuzz crate, so `cargo test` applies the fuzz targets' checks too. `parser_checks` holds the
// stream model the transfer checks share with the chat frames'; only that part of it is used here.
#[allow(dead_code)]
#[path = "../fuzz/src/parser_checks.rs"]
mod parser_checks;
#[path = "../fuzz/src/transfer_checks.rs"]
mod transfer_checks;

use parser_checks::{Outcome, utf8_prefix};

#[path = "common/props.rs"]
mod props;

use props::{around, bytes, fuzz_seeds as seeds, utf8};

fn config(cases: u32) -> ProptestConfig {
    props::config(cases, 0x6d70_7466)
}

fn id() -> impl Strategy<Value = TransferId> {
    any::<[u8; 16]>().prop_map(TransferId)
}

fn size() -> impl Strategy<Value = u64> {
    prop_oneof![0..=1u64 << 20, 0..=MAX_SIZE, Just(MAX_SIZE)]
}

fn index() -> impl Strategy<Value = u32> {
    prop_oneof![0..16u32, 0..MAX_ENTRIES, Just(MAX_ENTRIES - 1)]
}

fn kind() -> impl Strategy<Value = EntryKind> {
    prop_oneof![
        Just(EntryKind::Dir),
        (size(), any::<[u8; 32]>()).prop_map(|(size, hash)| EntryKind::File { size, hash }),
    ]
}

fn code() -> impl Strategy<Value = FailCode> {
    prop::sample::select(FailCode::ALL.to_vec())
}

/// Resume points in the one form an ACCEPT carries: increasing indexes from `complete_below`.
fn accept() -> impl Strategy<Value = Frame> {
    (
        id(),
        0..=MAX_ENTRIES,
        prop::collection::vec((1..1000u32, size()), 0..20),
    )
        .prop_map(|(id, complete_below, gaps)| {
            let mut next = u64::from(complete_below);
            let mut resume = Vec::new();
            for (gap, offset) in gaps {
                let index = next + u64::from(gap) - 1;
                if index >= u64::from(MAX_ENTRIES) {
                    break;
                }
                resume.push(Resume {
                    index: index as u32,
                    offset,
                });
                next = index + 1;
            }
            Frame::Accept {
                id,
                complete_below,
                resume,
            }
        })
}

fn data() -> impl Strategy<Value = Frame> {
    (index(), prop::collection::vec(any::<u8>(), 1..=64), size()).prop_map(
        |(index, bytes, offset)| Frame::Data {
            index,
            offset: offset.min(MAX_SIZE - bytes.len() as u64),
            bytes,
        },
    )
}

/// Frames with short strings and data (cheap to flip bit by bit).
fn small_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (id(), size(), 1..=MAX_ENTRIES, utf8(MAX_WIRE_PATH, 24)).prop_map(
            |(id, total, count, name)| Frame::Offer {
                id,
                total,
                count,
                name
            }
        ),
        (index(), kind(), utf8(MAX_WIRE_PATH, 24)).prop_map(|(index, kind, path)| Frame::Entry {
            index,
            kind,
            path
        }),
        accept(),
        data(),
        (index(), size()).prop_map(|(index, offset)| Frame::Verified { index, offset }),
        id().prop_map(|id| Frame::Done { id }),
        (id(), code(), utf8(MAX_REASON, 24)).prop_map(|(id, code, reason)| Frame::Fail {
            id,
            code,
            reason
        }),
    ]
}

/// Any frame, including strings at their bounds, full DATA frames and long resume lists.
fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        4 => small_frame(),
        1 => (index(), kind(), around(MAX_WIRE_PATH)).prop_map(|(index, kind, path)| Frame::Entry {
            index,
            kind,
            path: utf8_prefix(&path, MAX_WIRE_PATH).to_owned(),
        }),
        1 => (index(), any::<u8>(), 0..=MAX_SIZE - MAX_DATA as u64).prop_map(|(index, b, offset)| {
            Frame::Data { index, offset, bytes: vec![b; MAX_DATA] }
        }),
        1 => (id(), 0..=MAX_RESUME).prop_map(|(id, n)| Frame::Accept {
            id,
            complete_below: 0,
            resume: (0..n as u32).map(|index| Resume { index, offset: u64::from(index) }).collect(),
        }),
    ]
}

fn encode(f: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    f.encode(&mut out);
    out
}

proptest! {
    #![proptest_config(config(256))]

    /// Every frame round-trips within `MAX_FRAME`, meets the fuzz target's body checks, and the reader fed
    /// the encoding yields exactly the frame and holds nothing after it.
    #[test]
    fn frames_round_trip(f in frame()) {
        let enc = encode(&f);
        prop_assert!(enc.len() <= 4 + MAX_FRAME);
        prop_assert_eq!(Frame::parse(&enc[4..]), Ok(f.clone()));
        prop_assert_eq!(transfer_checks::frame_body(&enc[4..]), Ok(f.clone()));
        let got = transfer_checks::frame_stream(&enc, &[]);
        prop_assert_eq!(got, Outcome { frames: vec![f], result: Ok(()), buffered: 0 });
    }

    /// Arbitrary bytes, alone or behind a transfer frame's type byte and a plausible length prefix, never
    /// panic and meet every check of the `transfer_frame` fuzz target (and alone, of `chat_wire`).
    #[test]
    fn frames_arbitrary_bytes(tail in bytes(96), t in 16u8..=22, framed in any::<bool>()) {
        transfer_checks::transfer_frame(&tail);
        transfer_checks::chat_wire(&tail);
        let mut body = vec![t];
        body.extend_from_slice(&tail);
        transfer_checks::transfer_frame(&body);
        if framed {
            let mut stream = (body.len() as u32).to_be_bytes().to_vec();
            stream.extend_from_slice(&body);
            let got = transfer_checks::frame_stream(&stream, &[3, 1]);
            match Frame::parse(&body) {
                Ok(f) => prop_assert_eq!(got, Outcome { frames: vec![f], result: Ok(()), buffered: 0 }),
                Err(e) => prop_assert_eq!(got.result, Err(e)),
            }
        }
    }

    /// A connection to the chat port carries HELLO, then transfer frames (or chat frames): any mix, split
    /// anywhere, reads back as exactly those frames through the one reader both kinds share, and meets the
    /// `chat_wire` fuzz target's checks.
    #[test]
    fn chat_and_transfer_frames_share_one_stream(
        files in prop::collection::vec(small_frame(), 0..4),
        text in utf8(64, 32),
        sizes in prop::collection::vec(1..300usize, 1..4),
    ) {
        use multiproto::peer::frame::Frame as Chat;
        use multiproto::peer::wire::Wire;
        let hello = Chat::Hello { nick: multiproto::nick::Nick::new("ann").unwrap(), instance: 9 };
        let msg = Chat::Msg { id: 1, sent_ms: 2, scope: multiproto::group::Scope::Direct, text };
        let mut want = vec![Wire::Chat(hello)];
        want.extend(files.into_iter().map(Wire::File));
        want.push(Wire::Chat(msg));
        let mut stream = Vec::new();
        for w in &want {
            match w {
                Wire::Chat(f) => f.encode(&mut stream),
                Wire::File(f) => f.encode(&mut stream),
            }
        }
        let got = transfer_checks::wire_stream(&stream, &sizes);
        prop_assert_eq!(got, Outcome { frames: want, result: Ok(()), buffered: 0 });
    }

    /// Every proper prefix of a frame: the body parser refuses it (a DATA frame past its header is a
    /// shorter one), and the reader takes it without error and waits for the rest. A single flipped bit
    /// never panics the body parser or the reader, and never gives the original frame back: no bit of a
    /// transfer frame is ignored (the framing's properties, shared with the chat frames' tests).
    #[test]
    fn frame_truncations_and_bit_flips(f in small_frame(), sizes in prop::collection::vec(1..8usize, 1..3)) {
        let enc = encode(&f);
        for cut in 5..enc.len() {
            match (&f, Frame::parse(&enc[4..cut])) {
                (Frame::Data { .. }, Ok(Frame::Data { bytes, .. })) => {
                    prop_assert_eq!(bytes.len(), cut - 4 - 13)
                }
                (_, got) => prop_assert!(got.is_err(), "body cut at {}", cut),
            }
        }
        parser_checks::framing_properties(&f, &enc, &sizes, transfer_checks::frame_body);
    }

    /// A stream of frames cut into arbitrary chunks (including empty ones) yields exactly those frames in
    /// order, the reader never holding more than one frame, and nothing left at the end.
    #[test]
    fn reader_reassembles_any_chunking(
        frames in prop::collection::vec(frame(), 1..5),
        sizes in prop::collection::vec(0..70_000usize, 1..6),
    ) {
        let stream: Vec<u8> = frames.iter().flat_map(encode).collect();
        let got = transfer_checks::frame_stream(&stream, &sizes);
        prop_assert_eq!(got, Outcome { frames, result: Ok(()), buffered: 0 });
    }

    /// A length prefix over `MAX_FRAME` is refused as soon as it is complete, before any body is buffered;
    /// frames before it are still delivered.
    #[test]
    fn reader_refuses_oversized_prefix(
        before in prop::collection::vec(small_frame(), 0..3),
        len in (MAX_FRAME as u32 + 1)..=u32::MAX,
        body in bytes(64),
    ) {
        let stream: Vec<u8> = before.iter().flat_map(encode).collect();
        parser_checks::oversized_prefix_refused(before, stream, len, &body, transfer_checks::frame_body);
    }

    /// Over-long names, paths and reasons are cut at a char boundary, so the frame still parses.
    #[test]
    fn long_strings_are_cut_on_char_boundaries(path in around(MAX_WIRE_PATH), reason in around(MAX_REASON)) {
        let id = TransferId([1; 16]);
        let offer = |name: &str| Frame::Offer { id, total: 1, count: 1, name: name.to_owned() };
        prop_assert_eq!(Frame::parse(&encode(&offer(&path))[4..]), Ok(offer(utf8_prefix(&path, MAX_WIRE_PATH))));
        let fail = |reason: &str| Frame::Fail { id, code: FailCode::Io, reason: reason.to_owned() };
        prop_assert_eq!(Frame::parse(&encode(&fail(&reason))[4..]), Ok(fail(utf8_prefix(&reason, MAX_REASON))));
    }

    /// Frames built from arbitrary input always encode to frames that parse (the fuzz target's encoder
    /// checks: strings cut, numbers clamped, resume points normalised, DATA cut to one frame).
    #[test]
    fn encoders_always_produce_frames_that_parse(data in bytes(200)) {
        transfer_checks::encoders(&data);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Names.

/// Pieces that exercise every rule of the sanitiser: separators of both kinds, `.` and `..`, spaces and
/// dots at the ends, controls (NUL among them), bidirectional and other format characters, Windows'
/// forbidden characters and reserved names, drives, a dotfile, extensions, long runs and multi-byte text.
const PIECES: &[&str] = &[
    "/",
    "\\",
    "/",
    "..",
    ".",
    " ",
    "...",
    "a",
    "report",
    ".pdf",
    ".tar",
    ".gz",
    "é",
    "✓",
    "李",
    "\0",
    "\n",
    "\u{1b}[31m",
    "\u{7f}",
    "\u{85}",
    "\u{202E}",
    "\u{2066}",
    "\u{200B}",
    "\u{FEFF}",
    "\u{E0041}",
    "\u{2028}",
    ":",
    "C:",
    "<",
    "|",
    "?",
    "*",
    "\"",
    "CON",
    "nul",
    "COM1",
    "lpt¹",
    ".bashrc",
    "~",
];

fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(prop::sample::select(PIECES), 0..24).prop_map(|p| p.concat()),
        1 => utf8(600, 80),
        // Long components and deep paths, around the bounds.
        1 => (1..=2 * MAX_COMPONENT, 1..=MAX_DEPTH + 3, prop::sample::select(PIECES)).prop_map(
            |(len, depth, piece)| vec![format!("{}{piece}", "x".repeat(len)); depth].join("/")
        ),
        // The issue's 4 KB name.
        1 => (4000..4200usize, prop::sample::select(PIECES)).prop_map(|(n, p)| format!("{}{p}", "n".repeat(n))),
    ]
}

proptest! {
    #![proptest_config(config(512))]

    /// Any string: a refusal the string calls for, or a safe path (normal, bounded, clean components, under
    /// its directory, a fixed point); the same string as one name is a clean top-level name; numbering it
    /// stays within the bounds.
    #[test]
    fn sanitised_names_are_safe(s in hostile(), salt in any::<u8>()) {
        let mut data = vec![salt];
        data.extend_from_slice(s.as_bytes());
        transfer_checks::name(s.as_bytes());
        transfer_checks::name(&data);
        if let Ok(p) = name::sanitise_path(&s) {
            transfer_checks::safe_path_ok(&p);
        }
    }

    /// Arbitrary bytes (as the fuzz target reads them: lossy UTF-8) never panic the sanitiser.
    #[test]
    fn sanitiser_arbitrary_bytes(b in bytes(300)) {
        transfer_checks::name(&b);
    }
}

#[test]
fn fuzz_entry_points_on_the_issues_names() {
    for s in [
        "../../x",
        "/etc/passwd",
        "a/../../b",
        "\\..\\x",
        "C:\\x",
        "...",
        "nul\0x",
        "photo\u{202E}gpj.exe",
        &"n".repeat(4096),
        &"a/".repeat(2048),
    ] {
        transfer_checks::name(s.as_bytes());
    }
    transfer_checks::transfer_frame(&[]);
    transfer_checks::transfer_frame(&[16]);
}

/// The fuzz seeds (`fuzz/seeds/{transfer_frame,transfer_name}`) are what their names say: a frame body or a
/// chunked stream of whole frames; names the sanitiser refuses or makes safe, as the file's name expects.
#[test]
fn fuzz_seeds_are_valid() {
    for (name, b) in seeds("transfer_frame") {
        let ok = parser_checks::frames_seed(&b, transfer_checks::frame_body);
        assert!(ok, "transfer_frame/{name}");
        transfer_checks::transfer_frame(&b);
    }
    // The receiver's seeds: a flags byte, then a stream of whole frames (a folder exchange, a hostile one).
    for (name, b) in seeds("transfer_recv") {
        let mut frames = Vec::new();
        let mut reader = multiproto::transfer::frame::Reader::default();
        assert!(
            reader.push(&b[1..], &mut frames).is_ok(),
            "transfer_recv/{name}"
        );
        assert!(
            frames.len() >= 3 && !reader.is_partial(),
            "transfer_recv/{name}"
        );
        transfer_checks::receiver(&b);
    }
    for (name, b) in seeds("transfer_name") {
        let refused = ["parent", "absolute", "inner_parent", "backslash", "drive"];
        let got = multiproto::transfer::name::sanitise_path(&String::from_utf8_lossy(&b));
        assert_eq!(
            got.is_err(),
            refused.contains(&name.as_str()),
            "transfer_name/{name}: {got:?}"
        );
        transfer_checks::name(&b);
    }
}

/// Frames a sender might send, near enough to valid to get past the first checks: an OFFER named `n`,
/// entries under it (some hostile), data at plausible offsets.
fn sender_frames() -> impl Strategy<Value = Vec<Frame>> {
    let frame = prop_oneof![
        (0..4u32, 0..3u64).prop_map(|(count, total)| Frame::Offer {
            id: TransferId([1; 16]),
            total: total * 100,
            count: count.max(1),
            name: "n".into(),
        }),
        (
            0..4u32,
            0..300u64,
            prop_oneof![
                Just("n".to_owned()),
                Just("n/a".to_owned()),
                Just("n/a/b".to_owned()),
                Just("../n".to_owned()),
                Just("m/x".to_owned()),
                "n/[a-c.\\\\/]{0,6}",
            ],
            any::<bool>()
        )
            .prop_map(|(index, size, path, dir)| Frame::Entry {
                index,
                kind: if dir {
                    EntryKind::Dir
                } else {
                    EntryKind::File {
                        size,
                        hash: [0; 32],
                    }
                },
                path,
            }),
        (0..4u32, 0..300u64, 1..200usize).prop_map(|(index, offset, n)| Frame::Data {
            index,
            offset,
            bytes: vec![3; n],
        }),
        (0..4u32, 0..300u64).prop_map(|(index, offset)| Frame::Verified { index, offset }),
        Just(Frame::Done {
            id: TransferId([1; 16])
        }),
    ];
    prop::collection::vec(frame, 0..24)
}

proptest! {
    #![proptest_config(config(512))]

    /// The receiving state machine on frame sequences near the valid ones, and on arbitrary bytes: the
    /// `transfer_recv` fuzz target's checks (no panic, bounded state, sanitised paths, nothing after the end).
    #[test]
    fn the_receiver_survives_any_frames(flags in any::<u8>(), frames in sender_frames(), noise in bytes(64)) {
        let mut input = vec![flags];
        for f in &frames {
            f.encode(&mut input);
        }
        transfer_checks::receiver(&input);
        input.extend_from_slice(&noise);
        transfer_checks::receiver(&input);
        let mut raw = vec![flags];
        raw.extend_from_slice(&noise);
        transfer_checks::receiver(&raw);
    }
}
