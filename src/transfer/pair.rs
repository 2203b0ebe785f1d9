//! Tests of the transfer state machine: a [`Sender`] and a [`Receiver`] connected in memory (every frame
//! encoded and parsed on the way, reads served from a map of file contents, writes into a map standing for
//! the receiver's disk, hashes with the `blake3` crate), and hostile frame sequences against a receiver.
//! Deterministic: no clock, no sleeps; proptest runs from a fixed seed.

use std::collections::{BTreeMap, VecDeque};

use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, RngAlgorithm, RngSeed};

use super::frame::{EntryKind, FailCode, Frame, MAX_DATA, Resume, TransferId};
use super::mem_disk::MemDisk as Disk;
use super::name::SafePath;
use super::recv::{Action, Limits, Receiver, RecvEvent, ResumePoint};
use super::send::{self, Offered, Position, ReadError, SendEvent, Sender};
use super::{Failure, MAX_ENTRIES_IN_FLIGHT, MAX_WINDOW};

const ID: TransferId = TransferId([7; 16]);

/// A frame through the wire: encoded, then parsed back (so the cores only ever see what a peer could send).
fn wire(f: Frame) -> Frame {
    let mut b = Vec::new();
    f.encode(&mut b);
    Frame::parse(&b[4..]).expect("an encoded frame parses")
}

/// What is offered: paths and contents (None for a folder).
#[derive(Clone, Debug)]
struct Source {
    name: String,
    entries: Vec<(String, Option<Vec<u8>>)>,
}

impl Source {
    fn file(name: &str, bytes: Vec<u8>) -> Source {
        Source {
            name: name.into(),
            entries: vec![(name.into(), Some(bytes))],
        }
    }

    /// A folder `name` holding files of the given sizes (contents from `seed`), in two subfolders.
    fn folder(name: &str, sizes: &[usize], seed: u8) -> Source {
        let mut entries = vec![
            (name.to_owned(), None),
            (format!("{name}/sub"), None),
            (format!("{name}/empty"), None),
        ];
        for (i, &n) in sizes.iter().enumerate() {
            let bytes = (0..n)
                .map(|k| (k as u8).wrapping_mul(31) ^ seed ^ i as u8)
                .collect();
            let dir = if i % 2 == 0 { "" } else { "sub/" };
            entries.push((format!("{name}/{dir}f{i}.bin"), Some(bytes)));
        }
        Source {
            name: name.into(),
            entries,
        }
    }

    fn offered(&self) -> Vec<Offered> {
        self.entries
            .iter()
            .map(|(path, bytes)| Offered {
                kind: match bytes {
                    Some(b) => EntryKind::File {
                        size: b.len() as u64,
                        hash: *blake3::hash(b).as_bytes(),
                    },
                    None => EntryKind::Dir,
                },
                path: path.clone(),
            })
            .collect()
    }

    fn total(&self) -> u64 {
        self.entries
            .iter()
            .map(|(_, b)| b.as_ref().map_or(0, |b| b.len() as u64))
            .sum()
    }
}

/// One connection: both cores and the frames between them.
struct Pair {
    sender: Sender,
    receiver: Receiver,
    to_recv: VecDeque<Frame>,
    to_send: VecDeque<Frame>,
    sender_events: Vec<SendEvent>,
    recv_events: Vec<RecvEvent>,
    /// The receiver's held state, given to `accept` on an offer.
    held: ResumePoint,
    /// Accept offers (else decline).
    accept: bool,
    /// The receiver's caller answers its writes and finishes (else it sits on them, so nothing is verified).
    answer: bool,
}

impl Pair {
    fn new(src: &Source, scfg: send::Config, limits: Limits, held: ResumePoint) -> Pair {
        Pair {
            sender: Sender::new(ID, &src.name, src.offered(), scfg).unwrap(),
            receiver: Receiver::new(limits),
            to_recv: VecDeque::new(),
            to_send: VecDeque::new(),
            sender_events: Vec::new(),
            recv_events: Vec::new(),
            held,
            accept: true,
            answer: true,
        }
    }

    /// One round: every output of each core moved on, at most one frame delivered each way (so a cut can
    /// land anywhere). Whether anything moved.
    fn tick(&mut self, src: &Source, disk: &mut Disk) -> bool {
        let mut moved = false;
        while let Some(r) = self.sender.poll_read() {
            let bytes = src.entries[r.index as usize].1.as_ref().unwrap();
            let (start, end) = (r.offset as usize, r.offset as usize + r.len);
            self.sender
                .handle_read(r.index, r.offset, bytes[start..end].to_vec());
            moved = true;
        }
        while let Some(f) = self.sender.poll_frame() {
            self.to_recv.push_back(wire(f));
            moved = true;
        }
        while let Some(e) = self.sender.poll_event() {
            self.sender_events.push(e);
        }
        if let Some(f) = self.to_recv.pop_front() {
            self.receiver.handle_frame(f);
            moved = true;
        }
        while let Some(e) = self.receiver.poll_event() {
            if matches!(e, RecvEvent::Offered { .. }) {
                if self.accept {
                    self.receiver.accept(self.held.clone());
                } else {
                    self.receiver.decline();
                }
            }
            self.recv_events.push(e);
            moved = true;
        }
        if self.answer {
            while let Some(a) = self.receiver.poll_action() {
                disk.execute(&mut self.receiver, a);
                moved = true;
            }
        }
        while let Some(e) = self.receiver.poll_event() {
            self.recv_events.push(e);
        }
        while let Some(f) = self.receiver.poll_frame() {
            self.to_send.push_back(wire(f));
            moved = true;
        }
        if let Some(f) = self.to_send.pop_front() {
            self.sender.handle_frame(f);
            moved = true;
        }
        moved
    }

    /// Ticks until nothing moves (bounded, so a livelock fails the test rather than hanging it).
    fn run(&mut self, src: &Source, disk: &mut Disk) {
        for _ in 0..10_000_000 {
            if !self.tick(src, disk) {
                return;
            }
        }
        panic!("the transfer never settles");
    }
}

fn small(window: u64, verify_every: u64) -> (send::Config, Limits) {
    (
        send::Config {
            window,
            ..send::Config::default()
        },
        Limits {
            verify_every,
            ..Limits::default()
        },
    )
}

/// The received files are the sent ones, at the sanitised (here: the same) paths.
fn assert_identical(src: &Source, disk: &Disk) {
    let want: BTreeMap<String, Option<Vec<u8>>> = src.entries.iter().cloned().collect();
    assert_eq!(disk.done, want);
    assert!(disk.parts.is_empty());
}

fn completed(src: &Source, p: &Pair, disk: &Disk) {
    assert!(p.sender.is_done() && p.receiver.is_done());
    assert!(p.sender.is_closed() && p.receiver.is_closed());
    assert_eq!(p.sender_events.last(), Some(&SendEvent::Done));
    assert!(p.recv_events.contains(&RecvEvent::Received { id: ID }));
    assert_identical(src, disk);
    let Some(SendEvent::Progress {
        sent,
        verified,
        total,
    }) = p
        .sender_events
        .iter()
        .rev()
        .find(|e| matches!(e, SendEvent::Progress { .. }))
        .cloned()
    else {
        panic!("no progress");
    };
    assert_eq!(
        (sent, verified, total),
        (src.total(), src.total(), src.total())
    );
}

#[test]
fn one_file_arrives_identical() {
    let src = Source::file(
        "a.bin",
        (0..3_000_000u32).map(|i| (i % 251) as u8).collect(),
    );
    let (s, l) = small(256 << 10, 64 << 10);
    let mut p = Pair::new(&src, s, l, ResumePoint::default());
    let mut disk = Disk::default();
    p.run(&src, &mut disk);
    completed(&src, &p, &disk);
    assert_eq!(p.sender.stats().bytes_sent, 3_000_000);
    assert_eq!(p.sender.stats().bytes_resent, 0);
    assert!(p.sender.stats().max_in_flight <= 256 << 10);
}

#[test]
fn a_folder_of_many_small_files_arrives_identical() {
    let sizes: Vec<usize> = (0..2500).map(|i| (i * 37) % 3000).collect();
    let src = Source::folder("photos", &sizes, 3);
    let mut p = Pair::new(
        &src,
        send::Config::default(),
        Limits::default(),
        ResumePoint::default(),
    );
    let mut disk = Disk::default();
    p.run(&src, &mut disk);
    completed(&src, &p, &disk);
    assert!(p.receiver.entries_pending() == 0);
}

#[test]
fn the_defaults_and_the_protocol_bounds_agree() {
    let s = send::Config::default();
    let l = Limits::default();
    assert!(s.window >= l.verify_every && s.window <= MAX_WINDOW);
    assert!(s.max_entries_in_flight <= MAX_ENTRIES_IN_FLIGHT);
    assert!(MAX_DATA as u64 <= super::VERIFY_INTERVAL);
}

/// Runs `src` cut after each of `cuts` ticks (both cores dropped with whatever was in flight between
/// them), resumed each time from the receiver's resume point and the sender's high water, then to the end.
/// Returns the bytes sent twice, in all, and the last pair.
fn cut_and_resume(src: &Source, window: u64, verify_every: u64, cuts: &[usize]) -> (u64, Pair) {
    let mut disk = Disk::default();
    let mut held = ResumePoint::default();
    let mut high_water: Option<Position> = None;
    let mut resent = 0;
    for &cut in cuts {
        let (mut s, l) = small(window, verify_every);
        s.sent_before = high_water;
        let mut p = Pair::new(src, s, l, held.clone());
        for _ in 0..cut {
            if !p.tick(src, &mut disk) {
                break;
            }
        }
        if p.receiver.is_done() {
            // The cut came after the end; nothing to resume.
            return (resent + p.sender.stats().bytes_resent, p);
        }
        // What the receiver's caller would have saved: its resume point (synced, verified data).
        held = p.receiver.resume_point();
        high_water = p.sender.high_water();
        resent += p.sender.stats().bytes_resent;
        // Everything the sender sent beyond what the receiver holds is at most its window.
        assert!(p.sender.in_flight() <= window);
    }
    let (mut s, l) = small(window, verify_every);
    s.sent_before = high_water;
    let mut p = Pair::new(src, s, l, held);
    p.run(src, &mut disk);
    completed(src, &p, &disk);
    (resent + p.sender.stats().bytes_resent, p)
}

#[test]
fn a_transfer_cut_half_way_resumes_without_sending_verified_bytes_again() {
    let src = Source::file(
        "big.iso",
        (0..2_000_000u32).map(|i| (i * 7) as u8).collect(),
    );
    let window = 256 << 10;
    let (resent, p) = cut_and_resume(&src, window, 64 << 10, &[15]);
    assert!(resent <= window, "{resent} bytes sent twice");
    // Something was held, so the second connection skipped it.
    assert!(p.sender.stats().bytes_skipped > 0);
    assert!(p.sender.stats().bytes_sent < 2_000_000);
}

fn prop_config(cases: u32) -> PropConfig {
    PropConfig {
        cases,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(0x7472_616e),
        ..PropConfig::default()
    }
}

proptest! {
    #![proptest_config(prop_config(24))]

    /// Any data sizes, cut at any points (up to three times), arrive identical; bytes sent twice are at
    /// most one window a cut.
    #[test]
    fn cut_anywhere_and_resumed_arrives_identical(
        sizes in prop::collection::vec(prop_oneof![0..100usize, 0..300_000usize], 1..8),
        cuts in prop::collection::vec(1..400usize, 1..4),
        window_kib in 64..512u64,
        verify_kib in 1..64u64,
        single in any::<bool>(),
    ) {
        let src = if single {
            Source::file("one", vec![0x5a; sizes[0] * 3])
        } else {
            Source::folder("dir", &sizes, sizes.len() as u8)
        };
        let window = window_kib << 10;
        let (resent, _) = cut_and_resume(&src, window, verify_kib << 10, &cuts);
        prop_assert!(resent <= window * cuts.len() as u64, "{} bytes sent twice", resent);
    }
}

#[test]
fn the_window_bounds_what_is_in_flight_when_the_receiver_stops_verifying() {
    let src = Source::file("a", vec![1; 5_000_000]);
    let window = 300_000;
    let (s, l) = small(window, 64 << 10);
    let mut p = Pair::new(&src, s, l, ResumePoint::default());
    p.answer = false;
    let mut disk = Disk::default();
    p.run(&src, &mut disk);
    // Settled: the sender waits; no more than the window was ever read or sent.
    assert!(!p.sender.is_done());
    assert_eq!(p.sender.stats().bytes_sent, window);
    assert_eq!(p.sender.in_flight(), window);
    assert!(p.sender.poll_read().is_none());
    assert!(p.receiver.unverified() <= window);
    // The receiver's caller catching up lets it go on to the end.
    p.answer = true;
    p.run(&src, &mut disk);
    completed(&src, &p, &disk);
}

#[test]
fn the_entry_window_bounds_empty_files_in_flight() {
    let mut src = Source::folder("d", &[], 0);
    for i in 0..3000 {
        src.entries.push((format!("d/e{i}"), Some(Vec::new())));
    }
    let mut p = Pair::new(
        &src,
        send::Config::default(),
        Limits::default(),
        ResumePoint::default(),
    );
    p.answer = false;
    let mut disk = Disk::default();
    p.run(&src, &mut disk);
    assert_eq!(
        p.sender.stats().entries_sent,
        u64::from(MAX_ENTRIES_IN_FLIGHT)
    );
    assert_eq!(p.receiver.entries_pending(), MAX_ENTRIES_IN_FLIGHT as usize);
    p.answer = true;
    p.run(&src, &mut disk);
    completed(&src, &p, &disk);
}

#[test]
fn a_hash_mismatch_fails_and_the_file_is_not_finished() {
    let src = Source::file("x", vec![9; 100_000]);
    let mut p = Pair::new(
        &src,
        send::Config::default(),
        Limits::default(),
        ResumePoint::default(),
    );
    let mut disk = Disk {
        corrupt: true,
        ..Disk::default()
    };
    p.run(&src, &mut disk);
    assert!(disk.done.is_empty());
    let Some(RecvEvent::Failed { failure, resume }) = p.recv_events.last().cloned() else {
        panic!("{:?}", p.recv_events);
    };
    assert_eq!(failure.code, FailCode::HashMismatch);
    // The wrong part is not resumed from.
    assert_eq!(resume, ResumePoint::default());
    let Some(SendEvent::Failed(f)) = p.sender_events.last() else {
        panic!("{:?}", p.sender_events);
    };
    assert_eq!((f.code, f.by_peer), (FailCode::HashMismatch, true));
    assert!(p.sender.is_closed() && p.receiver.is_closed());
}

#[test]
fn decline_fails_both_sides() {
    let src = Source::file("x", vec![1; 10]);
    let mut p = Pair::new(
        &src,
        send::Config::default(),
        Limits::default(),
        ResumePoint::default(),
    );
    p.accept = false;
    let mut disk = Disk::default();
    p.run(&src, &mut disk);
    assert_eq!(
        p.sender_events,
        vec![SendEvent::Failed(Failure {
            code: FailCode::Declined,
            reason: "declined".into(),
            by_peer: true
        })]
    );
    assert_eq!(p.sender.stats().bytes_sent, 0);
    assert!(disk.done.is_empty() && disk.parts.is_empty());
}

#[test]
fn cancel_mid_way_keeps_what_was_verified() {
    let src = Source::folder("d", &[200_000, 200_000, 200_000], 1);
    let (s, l) = small(128 << 10, 16 << 10);
    let mut p = Pair::new(&src, s, l, ResumePoint::default());
    let mut disk = Disk::default();
    for _ in 0..12 {
        p.tick(&src, &mut disk);
    }
    p.sender.cancel();
    p.run(&src, &mut disk);
    let Some(RecvEvent::Failed { failure, resume }) = p.recv_events.last().cloned() else {
        panic!("{:?}", p.recv_events);
    };
    assert_eq!((failure.code, failure.by_peer), (FailCode::Cancelled, true));
    assert!(resume.complete_below > 0 || !resume.partial.is_empty());
    // What the resume point calls complete is in place.
    assert!(disk.done.len() >= resume.complete_below as usize);
    assert!(p.sender.is_closed() && p.receiver.is_closed());
}

#[test]
fn a_read_error_or_a_shrunk_file_fails_the_transfer() {
    let src = Source::file("x", vec![1; 100]);
    for shrink in [false, true] {
        let mut p = Pair::new(
            &src,
            send::Config::default(),
            Limits::default(),
            ResumePoint::default(),
        );
        let mut disk = Disk::default();
        // Until the first read is asked for.
        let r = loop {
            if let Some(r) = p.sender.poll_read() {
                break r;
            }
            assert!(p.tick(&src, &mut disk));
        };
        if shrink {
            p.sender.handle_read(r.index, r.offset, vec![1; r.len - 1]);
        } else {
            p.sender
                .handle_read_error(r.index, ReadError::Io("EIO".into()));
        }
        p.run(&src, &mut disk);
        let code = if shrink {
            FailCode::SourceChanged
        } else {
            FailCode::Io
        };
        assert!(matches!(p.sender_events.last(), Some(SendEvent::Failed(f)) if f.code == code));
        assert!(
            matches!(p.recv_events.last(), Some(RecvEvent::Failed { failure, .. }) if failure.code == code && failure.by_peer)
        );
    }
}

// ---------------------------------------------------------------------------------------------------------
// Hostile senders.

fn offer(total: u64, count: u32, name: &str) -> Frame {
    Frame::Offer {
        id: ID,
        total,
        count,
        name: name.into(),
    }
}

fn file(index: u32, size: u64, path: &str) -> Frame {
    Frame::Entry {
        index,
        kind: EntryKind::File {
            size,
            hash: [0; 32],
        },
        path: path.into(),
    }
}

fn dir(index: u32, path: &str) -> Frame {
    Frame::Entry {
        index,
        kind: EntryKind::Dir,
        path: path.into(),
    }
}

fn data(index: u32, offset: u64, n: usize) -> Frame {
    Frame::Data {
        index,
        offset,
        bytes: vec![0; n],
    }
}

/// Feeds `frames` to a receiver that accepts any offer and answers every action; returns the FAIL it sent,
/// if any, and the Open actions it handed out. Checks that nothing follows a FAIL.
fn feed(limits: Limits, frames: Vec<Frame>) -> (Option<FailCode>, Vec<SafePath>) {
    let mut r = Receiver::new(limits);
    let mut opened = Vec::new();
    let mut failed = None;
    for f in frames {
        r.handle_frame(wire(f));
        while let Some(e) = r.poll_event() {
            if matches!(e, RecvEvent::Offered { .. }) {
                r.accept(ResumePoint::default());
            }
        }
        while let Some(a) = r.poll_action() {
            assert!(failed.is_none(), "an action after FAIL");
            match a {
                Action::Open { index, path, .. } => {
                    opened.push(path);
                    r.handle_opened(index, Ok(()));
                }
                Action::Write {
                    index,
                    offset,
                    bytes,
                } => r.handle_written(index, Ok(offset + bytes.len() as u64)),
                Action::Finish { index, .. } => r.handle_finished(index, Ok(())),
            }
        }
        while let Some(f) = r.poll_frame() {
            assert!(failed.is_none(), "a frame after FAIL");
            if let Frame::Fail { code, .. } = f {
                failed = Some(code);
            }
        }
    }
    if failed.is_some() {
        assert!(r.is_closed() && r.poll_action().is_none());
    }
    (failed, opened)
}

#[test]
fn hostile_frames_end_in_fail_with_the_right_code() {
    let l = Limits::default;
    let p = Some(FailCode::Protocol);
    let cases: Vec<(&str, Limits, Vec<Frame>, Option<FailCode>)> = vec![
        (
            "well-formed",
            l(),
            vec![offer(3, 1, "a"), file(0, 3, "a"), data(0, 0, 3)],
            None,
        ),
        (
            "DATA beyond size",
            l(),
            vec![offer(3, 1, "a"), file(0, 3, "a"), data(0, 0, 4)],
            p,
        ),
        (
            "DATA not contiguous",
            l(),
            vec![offer(9, 1, "a"), file(0, 9, "a"), data(0, 1, 2)],
            p,
        ),
        (
            "DATA overlapping",
            l(),
            vec![
                offer(9, 1, "a"),
                file(0, 9, "a"),
                data(0, 0, 2),
                data(0, 1, 2),
            ],
            p,
        ),
        (
            "DATA for another",
            l(),
            vec![
                offer(9, 2, "a"),
                dir(0, "a"),
                file(1, 9, "a/b"),
                data(0, 0, 2),
            ],
            p,
        ),
        (
            "DATA before ENTRY",
            l(),
            vec![offer(9, 1, "a"), data(0, 0, 2)],
            p,
        ),
        (
            "DATA for a folder",
            l(),
            vec![offer(0, 2, "a"), dir(0, "a"), data(0, 0, 2)],
            p,
        ),
        ("DATA before OFFER", l(), vec![data(0, 0, 2)], p),
        (
            "ENTRY out of order",
            l(),
            vec![offer(0, 2, "a"), dir(1, "a")],
            p,
        ),
        (
            "ENTRY repeated",
            l(),
            vec![offer(0, 2, "a"), dir(0, "a"), dir(0, "a")],
            p,
        ),
        (
            "ENTRY past the count",
            l(),
            vec![offer(3, 1, "a"), file(0, 3, "a"), dir(1, "a/b")],
            p,
        ),
        (
            "ENTRY mid-file",
            l(),
            vec![
                offer(4, 2, "a"),
                file(0, 2, "a/x"),
                data(0, 0, 1),
                file(1, 2, "a/y"),
            ],
            p,
        ),
        (
            "second OFFER",
            l(),
            vec![offer(0, 1, "a"), offer(0, 1, "a")],
            p,
        ),
        (
            "second OFFER later",
            l(),
            vec![offer(0, 2, "a"), dir(0, "a"), offer(0, 1, "b")],
            p,
        ),
        (
            "ACCEPT from a sender",
            l(),
            vec![
                offer(0, 1, "a"),
                Frame::Accept {
                    id: ID,
                    complete_below: 0,
                    resume: vec![],
                },
            ],
            p,
        ),
        (
            "VERIFIED from a sender",
            l(),
            vec![
                offer(0, 1, "a"),
                Frame::Verified {
                    index: 0,
                    offset: 0,
                },
            ],
            p,
        ),
        (
            "DONE from a sender",
            l(),
            vec![offer(0, 1, "a"), Frame::Done { id: ID }],
            p,
        ),
        (
            "parent dir",
            l(),
            vec![offer(0, 1, "a"), dir(0, "../x")],
            Some(FailCode::NameRefused),
        ),
        (
            "parent inside",
            l(),
            vec![offer(0, 2, "a"), dir(0, "a"), dir(1, "a/../../x")],
            Some(FailCode::NameRefused),
        ),
        (
            "absolute",
            l(),
            vec![offer(0, 1, "a"), dir(0, "/etc")],
            Some(FailCode::NameRefused),
        ),
        (
            "outside the name",
            l(),
            vec![offer(0, 2, "a"), dir(0, "a"), dir(1, "b/c")],
            p,
        ),
        (
            "duplicate path",
            l(),
            vec![offer(0, 3, "a"), dir(0, "a"), dir(1, "a/b"), dir(2, "a/b")],
            p,
        ),
        (
            "duplicate after sanitising",
            l(),
            vec![
                offer(0, 3, "a"),
                dir(0, "a"),
                dir(1, "a/b"),
                dir(2, "a//./b/"),
            ],
            p,
        ),
        (
            "duplicate file",
            l(),
            vec![
                offer(0, 3, "a"),
                dir(0, "a"),
                file(1, 0, "a/b"),
                file(2, 0, "a/b"),
            ],
            p,
        ),
        (
            "inside a file",
            l(),
            vec![
                offer(0, 3, "a"),
                dir(0, "a"),
                file(1, 0, "a/b"),
                file(2, 0, "a/b/c"),
            ],
            p,
        ),
        (
            "total over limit",
            Limits {
                max_total: 10,
                ..l()
            },
            vec![offer(11, 1, "a")],
            Some(FailCode::TooLarge),
        ),
        (
            "count over limit",
            Limits {
                max_files: 2,
                ..l()
            },
            vec![offer(0, 3, "a")],
            Some(FailCode::TooManyFiles),
        ),
        (
            "file over limit",
            Limits {
                max_file_size: 5,
                ..l()
            },
            vec![offer(6, 1, "a"), file(0, 6, "a")],
            Some(FailCode::TooLarge),
        ),
        (
            "sizes over total",
            l(),
            vec![
                offer(5, 2, "a"),
                file(0, 3, "a/x"),
                data(0, 0, 3),
                file(1, 3, "a/y"),
            ],
            p,
        ),
        (
            "sizes under total",
            l(),
            vec![
                offer(9, 2, "a"),
                file(0, 3, "a/x"),
                data(0, 0, 3),
                file(1, 3, "a/y"),
            ],
            p,
        ),
        (
            "sizes under total, one file",
            l(),
            vec![offer(9, 1, "a"), file(0, 3, "a")],
            p,
        ),
    ];
    for (what, limits, frames, want) in cases {
        let (got, _) = feed(limits, frames);
        assert_eq!(got, want, "{what}");
    }
}

#[test]
fn paths_come_out_sanitised() {
    let (fail, opened) = feed(
        Limits::default(),
        vec![
            offer(0, 4, "in\u{202e}box"),
            dir(0, "in\u{202e}box"),
            dir(1, "in\u{202e}box/./x\\y"),
            dir(2, "in\u{202e}box//CON"),
            dir(3, "in\u{202e}box/.git"),
        ],
    );
    assert_eq!(fail, None);
    let got: Vec<&str> = opened.iter().map(SafePath::as_str).collect();
    assert_eq!(got, ["in_box", "in_box/x/y", "in_box/_CON", "in_box/.git"]);
}

#[test]
fn the_window_is_enforced_against_a_sender_that_ignores_it() {
    let size = MAX_WINDOW * 2;
    let mut frames = vec![offer(size, 1, "a"), file(0, size, "a")];
    let mut off = 0;
    while off <= MAX_WINDOW {
        frames.push(data(0, off, MAX_DATA));
        off += MAX_DATA as u64;
    }
    // A receiver whose caller never says the writes are synced never verifies, so the sender must stop.
    let mut r = Receiver::new(Limits::default());
    let mut failed = None;
    for f in frames {
        r.handle_frame(f);
        while let Some(e) = r.poll_event() {
            if matches!(e, RecvEvent::Offered { .. }) {
                r.accept(ResumePoint::default());
            }
        }
        while r.poll_action().is_some() {}
        while let Some(f) = r.poll_frame() {
            if let Frame::Fail { code, .. } = f {
                failed = Some(code);
            }
        }
        assert!(r.unverified() <= MAX_WINDOW);
    }
    assert_eq!(failed, Some(FailCode::Protocol));
}

#[test]
fn a_resume_point_from_the_receiver_is_kept_within_the_offer() {
    // A stale record saying more is held than the offer has: clamped, and the totals still checked.
    let mut r = Receiver::new(Limits::default());
    r.handle_frame(offer(10, 2, "a"));
    assert!(matches!(r.poll_event(), Some(RecvEvent::Offered { .. })));
    r.accept(ResumePoint {
        complete_below: 9,
        complete_bytes: 3,
        partial: vec![Resume {
            index: 5,
            offset: 1,
        }],
    });
    assert_eq!(
        r.poll_frame(),
        Some(Frame::Accept {
            id: ID,
            complete_below: 2,
            resume: vec![]
        })
    );
    // Everything "complete", but 3 bytes are not the offer's 10.
    assert!(matches!(
        r.poll_frame(),
        Some(Frame::Fail {
            code: FailCode::Protocol,
            ..
        })
    ));
}

// ---------------------------------------------------------------------------------------------------------
// Hostile receivers.

fn sender_after(frames: Vec<Frame>) -> Sender {
    let src = Source::folder("d", &[100_000, 10], 0);
    let mut s = Sender::new(ID, "d", src.offered(), send::Config::default()).unwrap();
    for f in frames {
        while s.poll_frame().is_some() {}
        while let Some(r) = s.poll_read() {
            s.handle_read(r.index, r.offset, vec![0; r.len]);
        }
        s.handle_frame(f);
    }
    s
}

fn sender_failed(s: &mut Sender) -> Option<FailCode> {
    let mut code = None;
    while let Some(e) = s.poll_event() {
        if let SendEvent::Failed(f) = e {
            code = Some(f.code);
        }
    }
    code
}

#[test]
fn hostile_receiver_frames_fail_the_sender() {
    let accept = |complete_below, resume: Vec<Resume>| Frame::Accept {
        id: ID,
        complete_below,
        resume,
    };
    let r = |index, offset| Resume { index, offset };
    let p = Some(FailCode::Protocol);
    let cases: Vec<(&str, Vec<Frame>, Option<FailCode>)> = vec![
        ("accept", vec![accept(0, vec![])], None),
        (
            "accept for another id",
            vec![Frame::Accept {
                id: TransferId([0; 16]),
                complete_below: 0,
                resume: vec![],
            }],
            p,
        ),
        ("accept past the end", vec![accept(6, vec![])], p),
        (
            "resume past a size",
            vec![accept(0, vec![r(3, 100_001)])],
            p,
        ),
        ("resume a folder", vec![accept(0, vec![r(0, 1)])], p),
        (
            "verified before accept",
            vec![Frame::Verified {
                index: 0,
                offset: 0,
            }],
            p,
        ),
        (
            "verified part",
            vec![
                accept(0, vec![]),
                Frame::Verified {
                    index: 3,
                    offset: 65_536,
                },
            ],
            None,
        ),
        (
            "verified past sent",
            vec![
                accept(0, vec![]),
                Frame::Verified {
                    index: 3,
                    offset: 100_001,
                },
            ],
            p,
        ),
        (
            "verified beyond",
            vec![
                accept(0, vec![]),
                Frame::Verified {
                    index: 4,
                    offset: 11,
                },
            ],
            p,
        ),
        (
            "verified not in flight",
            vec![
                accept(0, vec![]),
                Frame::Verified {
                    index: 5,
                    offset: 0,
                },
            ],
            p,
        ),
        (
            "verified twice",
            vec![
                accept(0, vec![]),
                Frame::Verified {
                    index: 0,
                    offset: 0,
                },
                Frame::Verified {
                    index: 0,
                    offset: 0,
                },
            ],
            p,
        ),
        (
            "done early",
            vec![accept(0, vec![]), Frame::Done { id: ID }],
            p,
        ),
        ("an offer", vec![offer(1, 1, "x")], p),
        ("data", vec![data(0, 0, 1)], p),
        (
            "fail",
            vec![Frame::Fail {
                id: ID,
                code: FailCode::DiskFull,
                reason: "\u{1b}[2Jfull\n".into(),
            }],
            Some(FailCode::DiskFull),
        ),
    ];
    for (what, frames, want) in cases {
        let mut s = sender_after(frames);
        assert_eq!(sender_failed(&mut s), want, "{what}");
        if want.is_some() {
            assert!(
                s.is_closed()
                    || s.poll_frame()
                        .is_some_and(|f| matches!(f, Frame::Fail { .. }))
            );
        }
    }
    // A FAIL's reason is shown sanitised.
    let mut s = sender_after(vec![Frame::Fail {
        id: ID,
        code: FailCode::DiskFull,
        reason: "\u{1b}[2Jfull\nnow".into(),
    }]);
    let Some(SendEvent::Failed(f)) = s.poll_event() else {
        panic!()
    };
    assert_eq!(f.reason, "full now");
}

#[test]
fn offers_the_wire_cannot_carry_are_refused() {
    use super::frame::MAX_SIZE;
    use send::OfferError;
    let f = |size| Offered {
        kind: EntryKind::File {
            size,
            hash: [0; 32],
        },
        path: "a".into(),
    };
    let new = |e| Sender::new(ID, "a", e, send::Config::default()).map(|_| ());
    assert_eq!(new(vec![]), Err(OfferError::Empty));
    assert_eq!(new(vec![f(MAX_SIZE + 1)]), Err(OfferError::TooLarge));
    assert_eq!(new(vec![f(MAX_SIZE), f(1)]), Err(OfferError::TooLarge));
    assert_eq!(new(vec![f(MAX_SIZE)]), Ok(()));
}
