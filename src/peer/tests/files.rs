//! File transfers between peers on the in-memory network: the transfer's own connection, resume after a
//! cut, decline, limits, and what a transfer connection refuses.

use super::*;
use crate::transfer::frame::{EntryKind, FailCode, Frame as FileFrame, TransferId};
use crate::transfer::send::{Offered, SendEvent};

const ID: TransferId = TransferId([0x5a; 16]);

/// One node's files: what it offers (by entry index) and what it received, into a disk in memory.
#[derive(Default)]
pub(super) struct MemDisk {
    /// The offered entries' bytes (None: a folder).
    source: Vec<Option<Vec<u8>>>,
    /// What it received.
    store: crate::transfer::mem_disk::MemDisk,
    /// Accept every offer, with what is held.
    accept: bool,
    /// Leave disk work unanswered (a stalled disk).
    stalled: bool,
}

impl MemDisk {
    /// Does the node's disk work, and answers offers if it accepts them; whether anything moved.
    pub(super) fn serve(&mut self, now: Instant, peer: &mut Peer, events: &[PeerEvent]) -> bool {
        let mut moved = false;
        if self.accept {
            for e in events {
                if let PeerEvent::File {
                    xfer,
                    event: FileEvent::Offered { .. },
                    ..
                } = e
                    && peer
                        .file(*xfer)
                        .is_some_and(|f| f.state == FileState::Offered)
                {
                    peer.accept_file(now, *xfer, self.store.held());
                    moved = true;
                }
            }
        }
        if self.stalled {
            return moved;
        }
        while let Some(x) = peer.poll_disk() {
            moved = true;
            peer.with_disk(now, x, |d| match d {
                Disk::Send(s) => {
                    if let Some(r) = s.poll_read() {
                        let bytes = self.source[r.index as usize].as_ref().unwrap();
                        let (a, b) = (r.offset as usize, r.offset as usize + r.len);
                        s.handle_read(r.index, r.offset, bytes[a..b].to_vec());
                    }
                }
                Disk::Recv(r) => {
                    while let Some(a) = r.poll_action() {
                        self.store.execute(r, a);
                    }
                }
            });
        }
        moved
    }
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 11) as u8)
        .collect()
}

/// Node 0 (alice) offers one file of `bytes` to node 1 (bob), who accepts if `accept`.
fn offer_file(net: &mut Net, bytes: Vec<u8>, accept: bool) -> XferId {
    let entries = vec![Offered {
        kind: EntryKind::File {
            size: bytes.len() as u64,
            hash: *blake3::hash(&bytes).as_bytes(),
        },
        path: "report.pdf".into(),
    }];
    net.nodes[0].disk.source = vec![Some(bytes)];
    net.nodes[1].disk.accept = accept;
    let now = net.now;
    let x = net.nodes[0]
        .peer
        .send_files(now, Target::Nick(nick("bob")), ID, "report.pdf", entries)
        .unwrap();
    net.settle();
    x
}

fn sent_done(net: &Net) -> bool {
    net.count(0, |e| {
        matches!(
            e,
            PeerEvent::File {
                event: FileEvent::Send(SendEvent::Done),
                ..
            }
        )
    }) == 1
}

fn received(net: &Net, path: &str) -> Option<Vec<u8>> {
    net.nodes[1].disk.store.done.get(path).cloned().flatten()
}

#[test]
fn a_file_arrives_identical_on_a_connection_of_its_own_beside_chat() {
    let mut net = Net::new(&["alice", "bob"]);
    let now = net.now;
    net.nodes[0]
        .peer
        .send(now, 1, Target::Nick(nick("bob")), "before")
        .unwrap();
    net.settle();
    assert_eq!(net.nodes[0].peer.connections(), 1);
    // Bob's disk is stalled: the transfer sits under way, and a message still goes through at once.
    net.nodes[1].disk.stalled = true;
    let bytes = pattern(3 << 20, 1);
    let x = offer_file(&mut net, bytes.clone(), true);
    assert_eq!(net.nodes[0].peer.connections(), 2, "chat and the transfer");
    let offered = net.nodes[1].events.iter().find_map(|e| match e {
        PeerEvent::File {
            event:
                FileEvent::Offered {
                    from,
                    verified,
                    name,
                    total,
                    count,
                    id,
                    ..
                },
            ..
        } => Some((
            *from,
            *verified,
            name.as_str().to_string(),
            *total,
            *count,
            *id,
        )),
        _ => None,
    });
    assert_eq!(
        offered,
        Some((nick("alice"), true, "report.pdf".into(), 3 << 20, 1, ID))
    );
    let info = net.nodes[0].peer.file(x).unwrap();
    assert_eq!(
        (info.state, info.outgoing, info.total),
        (FileState::Sending, true, 3 << 20)
    );
    let now = net.now;
    let m = net.nodes[0]
        .peer
        .send(now, 2, Target::Nick(nick("bob")), "during")
        .unwrap();
    net.settle();
    assert_eq!(net.messages(1), vec!["before", "during"]);
    assert_eq!(
        net.count(
            0,
            |e| matches!(e, PeerEvent::Delivered { id, .. } if *id == m)
        ),
        1
    );
    net.nodes[1].disk.stalled = false;
    net.advance(Duration::from_millis(1));
    assert!(sent_done(&net));
    assert_eq!(received(&net, "report.pdf"), Some(bytes));
    assert!(
        net.nodes[0].peer.files().is_empty(),
        "a finished transfer is forgotten"
    );
    assert!(net.nodes[1].peer.files().is_empty());
    assert_eq!(
        net.nodes[0].peer.connections(),
        1,
        "the transfer's connection closed"
    );
}

#[test]
fn a_transfer_cut_half_way_is_offered_again_and_resumes() {
    let mut net = Net::new(&["alice", "bob"]);
    // Bob's disk is stalled: alice sends a window's worth (8 MiB) and waits for VERIFIED.
    let bytes = pattern(20 << 20, 2);
    net.nodes[1].disk.stalled = true;
    let x = offer_file(&mut net, bytes.clone(), true);
    // Bob's disk takes it all; the VERIFIED frames are still on their way when the link goes.
    let now = net.now;
    let n = &mut net.nodes[1];
    n.disk.stalled = false;
    n.disk.serve(now, &mut n.peer, &[]);
    net.cut(0);
    net.settle();
    let cut = net.count(0, |e| {
        matches!(
            e,
            PeerEvent::File {
                event: FileEvent::Cut {
                    retry_in: Some(_),
                    ..
                },
                ..
            }
        )
    });
    assert_eq!(cut, 1);
    assert_eq!(
        net.nodes[0].peer.file(x).unwrap().state,
        FileState::WaitingToRetry
    );
    assert!(
        net.count(1, |e| matches!(
            e,
            PeerEvent::File {
                event: FileEvent::Cut { retry_in: None, .. },
                ..
            }
        )) == 1
    );
    let held = net.nodes[1].disk.store.held();
    assert_eq!(held.partial[0].offset, 8 << 20);
    net.nodes[1].disk.stalled = false;
    net.run(Duration::from_secs(2));
    assert!(sent_done(&net));
    assert_eq!(received(&net, "report.pdf"), Some(bytes));
    // Offered twice, and only what was in flight at the cut was sent again.
    assert_eq!(
        net.count(1, |e| matches!(
            e,
            PeerEvent::File {
                event: FileEvent::Offered { .. },
                ..
            }
        )),
        2
    );
    let skipped: u64 = net.nodes[0]
        .events
        .iter()
        .rev()
        .find_map(|e| match e {
            PeerEvent::File {
                event: FileEvent::Send(SendEvent::Accepted { skipped }),
                ..
            } => Some(*skipped),
            _ => None,
        })
        .unwrap();
    assert_eq!(skipped, 8 << 20, "the second offer skips what bob held");
}

#[test]
fn a_declined_offer_fails_the_sender_and_is_not_retried() {
    let mut net = Net::new(&["alice", "bob"]);
    offer_file(&mut net, pattern(1000, 3), false);
    let x = net.nodes[1]
        .events
        .iter()
        .find_map(|e| match e {
            PeerEvent::File {
                xfer,
                event: FileEvent::Offered { .. },
                ..
            } => Some(*xfer),
            _ => None,
        })
        .unwrap();
    assert_eq!(net.nodes[1].peer.files().len(), 1);
    let now = net.now;
    net.nodes[1].peer.decline_file(now, x);
    net.settle();
    let failed = net.nodes[0].events.iter().find_map(|e| match e {
        PeerEvent::File {
            event: FileEvent::Send(SendEvent::Failed(f)),
            ..
        } => Some((f.code, f.by_peer)),
        _ => None,
    });
    assert_eq!(failed, Some((FailCode::Declined, true)));
    net.run(Duration::from_secs(20));
    assert_eq!(
        net.count(1, |e| matches!(
            e,
            PeerEvent::File {
                event: FileEvent::Offered { .. },
                ..
            }
        )),
        1,
        "not offered again"
    );
    assert!(net.nodes[0].peer.files().is_empty());
    assert_eq!(net.nodes[0].peer.connections(), 0);
}

#[test]
fn an_offer_past_the_receivers_limits_is_refused_without_asking() {
    let mut net = Net::new(&["alice", "bob"]);
    net.nodes[1].peer.cfg.file_limits.max_total = 100;
    offer_file(&mut net, pattern(1000, 4), true);
    assert_eq!(
        net.count(1, |e| matches!(
            e,
            PeerEvent::File {
                event: FileEvent::Offered { .. },
                ..
            }
        )),
        0
    );
    let failed = net.nodes[0].events.iter().find_map(|e| match e {
        PeerEvent::File {
            event: FileEvent::Send(SendEvent::Failed(f)),
            ..
        } => Some(f.code),
        _ => None,
    });
    assert_eq!(failed, Some(FailCode::TooLarge));
}

#[test]
fn an_offer_waits_for_its_receiver_to_come_online() {
    let mut net = Net::new(&["alice", "bob"]);
    let (now, bob, at) = (net.now, nick("bob"), net.nodes[1].listen);
    net.nodes[0].peer.set_contact(now, bob, at, false);
    offer_file(&mut net, pattern(5000, 5), true);
    assert_eq!(net.nodes[0].peer.connections(), 0);
    net.run(Duration::from_secs(3));
    assert_eq!(net.nodes[0].peer.connections(), 0);
    let now = net.now;
    net.nodes[0].peer.set_contact(now, bob, at, true);
    net.settle();
    assert!(sent_done(&net));
    assert_eq!(received(&net, "report.pdf"), Some(pattern(5000, 5)));
}

#[test]
fn the_same_thing_to_the_same_receiver_twice_is_refused_and_cancel_ends_a_waiting_one() {
    let mut net = Net::new(&["alice", "bob"]);
    let (now, bob, at) = (net.now, nick("bob"), net.nodes[1].listen);
    net.nodes[0].peer.set_contact(now, bob, at, false);
    let x = offer_file(&mut net, pattern(10, 6), true);
    let e = net.nodes[0]
        .peer
        .send_files(
            now,
            Target::Nick(bob),
            ID,
            "report.pdf",
            vec![Offered {
                kind: EntryKind::Dir,
                path: "report.pdf".into(),
            }],
        )
        .unwrap_err();
    assert_eq!(e, FileSendError::Already(x.number()));
    net.nodes[0].peer.cancel_file(now, x);
    assert!(net.nodes[0].peer.files().is_empty());
    assert!(net.nodes[0].peer.file_by_number(x.number()).is_none());
}

#[test]
fn a_transfer_connection_carries_nothing_else() {
    let now = Instant::from_millis(1);
    let offer = FileFrame::Offer {
        id: ID,
        total: 5,
        count: 1,
        name: "x".into(),
    };
    let encode = |f: &FileFrame| {
        let mut b = Vec::new();
        f.encode(&mut b);
        b
    };
    // Before HELLO: closed.
    let mut p = Peer::new(config("bob", 1));
    let mut s = Sender::connect(&mut p, now, "mallory", "10.0.0.9:1000");
    let sealed = s.seal_plain(&encode(&offer));
    p.handle_data(now, 1, s.conn, &sealed);
    assert!(closed(&mut p, s.conn));
    // After a chat message: closed.
    let mut p = Peer::new(config("bob", 1));
    let mut s = Sender::connect(&mut p, now, "mallory", "10.0.0.9:1000");
    s.send(&mut p, now, &[hello("mallory", 1), msg(1, "hi")]);
    let sealed = s.seal_plain(&encode(&offer));
    p.handle_data(now, 1, s.conn, &sealed);
    assert!(closed(&mut p, s.conn));
    // A chat message after the offer: closed, and the transfer is gone with it.
    let mut p = Peer::new(config("bob", 1));
    let mut s = Sender::connect(&mut p, now, "mallory", "10.0.0.9:1000");
    s.send(&mut p, now, &[hello("mallory", 1)]);
    let sealed = s.seal_plain(&encode(&offer));
    p.handle_data(now, 1, s.conn, &sealed);
    assert!(!closed(&mut p, s.conn));
    assert_eq!(p.files().len(), 1);
    s.send(&mut p, now, &[msg(2, "hi")]);
    assert!(closed(&mut p, s.conn));
    assert!(p.files().is_empty());
    // A frame other than OFFER first: closed.
    let mut p = Peer::new(config("bob", 1));
    let mut s = Sender::connect(&mut p, now, "mallory", "10.0.0.9:1000");
    s.send(&mut p, now, &[hello("mallory", 1)]);
    let sealed = s.seal_plain(&encode(&FileFrame::Done { id: ID }));
    p.handle_data(now, 1, s.conn, &sealed);
    assert!(closed(&mut p, s.conn));
}

#[test]
fn a_transfer_follows_its_receiver_through_a_rename() {
    let mut net = Net::new(&["alice", "bob"]);
    let (now, bob, at) = (net.now, nick("bob"), net.nodes[1].listen);
    net.nodes[0].peer.set_contact(now, bob, at, false);
    let x = offer_file(&mut net, pattern(7000, 8), true);
    // bob is robert now (the same key, the daemon says), and online under that name.
    let robert = nick("robert");
    let key = net.nodes[1].peer.cfg.identity.public();
    net.nodes[0].peer.follow_rename(now, bob, robert);
    net.nodes[0].peer.set_key(now, robert, Some(key));
    net.nodes[0].peer.set_contact(now, robert, at, true);
    assert_eq!(
        net.nodes[0].peer.file(x).unwrap().peer,
        Target::Nick(robert)
    );
    net.settle();
    assert!(sent_done(&net));
    assert_eq!(received(&net, "report.pdf"), Some(pattern(7000, 8)));
}

#[test]
fn a_cut_transfer_goes_again_as_soon_as_its_receiver_is_back_not_after_its_backoff() {
    let mut net = Net::new(&["alice", "bob"]);
    net.nodes[1].disk.stalled = true;
    let x = offer_file(&mut net, pattern(20 << 20, 9), true);
    // bob goes away: the transfer waits out its backoff (0.5 s, then 1 s, ...) while bob is down.
    net.nodes[1].up = false;
    net.cut(0);
    net.settle();
    net.run(Duration::from_secs(3));
    assert_eq!(
        net.nodes[0].peer.file(x).unwrap().state,
        FileState::WaitingToRetry
    );
    let (now, bob, at) = (net.now, nick("bob"), net.nodes[1].listen);
    net.nodes[0].peer.set_contact(now, bob, at, false);
    // Back, and the roster says so: offered again at once, not when the backoff would have let it.
    net.nodes[1].up = true;
    net.nodes[1].disk.stalled = false;
    net.nodes[0].peer.set_contact(now, bob, at, true);
    net.settle();
    assert_eq!(
        net.count(1, |e| matches!(
            e,
            PeerEvent::File {
                event: FileEvent::Offered { .. },
                ..
            }
        )),
        2
    );
    assert!(sent_done(&net));
}
