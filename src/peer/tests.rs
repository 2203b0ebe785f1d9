//! Peer tests on an in-memory network: each Connect links two peers' connections; bytes are delivered in
//! pieces of chosen sizes; a connection can be cut with bytes still in it.

use super::*;

mod files;

struct Node {
    peer: Peer,
    listen: SocketAddr,
    up: bool,
    events: Vec<PeerEvent>,
    /// Its side of file transfers: what it sends, what it received (see `files`).
    disk: files::MemDisk,
}

/// Two or more peers and the links between their connections.
struct Net {
    nodes: Vec<Node>,
    /// (node, conn) <-> (node, conn)
    links: Vec<((usize, ConnId), (usize, ConnId))>,
    now: Instant,
    /// Bytes delivered per write; 0 = everything at once.
    piece: usize,
    /// Deliver writes from this node at all (false: they stay unsent, as on a stalled path).
    deliver: Vec<bool>,
    next_port: u16,
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn nick(s: &str) -> Nick {
    Nick::new(s).unwrap()
}

/// The key of the test user called `name`.
fn identity(name: &str) -> Identity {
    let mut secret = [7u8; 32];
    for (a, b) in secret.iter_mut().zip(name.bytes()) {
        *a ^= b;
    }
    Identity::from_secret(secret)
}

/// A peer's configuration for the test user `name`.
fn config(name: &str, instance: u64) -> Config {
    Config::new(nick(name), instance, identity(name))
}

impl Net {
    fn new(names: &[&str]) -> Net {
        let nodes = names
            .iter()
            .enumerate()
            .map(|(i, n)| Node {
                peer: Peer::new(config(n, 100 + i as u64)),
                listen: addr(&format!("127.0.0.{}:5000", i + 1)),
                up: true,
                events: Vec::new(),
                disk: files::MemDisk::default(),
            })
            .collect::<Vec<_>>();
        let mut net = Net {
            deliver: vec![true; nodes.len()],
            nodes,
            links: Vec::new(),
            now: Instant::from_millis(1),
            piece: 0,
            next_port: 40000,
        };
        // Everyone knows everyone, online, and their keys (as the daemon would give them).
        for i in 0..net.nodes.len() {
            for j in 0..net.nodes.len() {
                let (n, a) = (net.nodes[j].peer.cfg.me, net.nodes[j].listen);
                let k = net.nodes[j].peer.cfg.identity.public();
                let now = net.now;
                net.nodes[i].peer.set_contact(now, n, a, true);
                net.nodes[i].peer.set_key(now, n, Some(k));
            }
        }
        net
    }

    fn other(&self, n: usize, c: ConnId) -> Option<(usize, ConnId)> {
        self.links.iter().find_map(|&(a, b)| {
            if a == (n, c) {
                Some(b)
            } else if b == (n, c) {
                Some(a)
            } else {
                None
            }
        })
    }

    fn unlink(&mut self, n: usize, c: ConnId) -> Option<(usize, ConnId)> {
        let o = self.other(n, c)?;
        self.links.retain(|&(a, b)| a != (n, c) && b != (n, c));
        Some(o)
    }

    /// Runs actions until nothing moves.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            for n in 0..self.nodes.len() {
                while let Some(a) = self.nodes[n].peer.poll_action() {
                    moved = true;
                    self.act(n, a);
                }
                while let Some(e) = self.nodes[n].peer.poll_event() {
                    self.nodes[n].events.push(e);
                }
                let now = self.now;
                let node = &mut self.nodes[n];
                moved |= node.disk.serve(now, &mut node.peer, &node.events);
            }
            if !moved {
                return;
            }
        }
        panic!("actions never settled");
    }

    fn act(&mut self, n: usize, a: Action) {
        let now = self.now;
        match a {
            Action::Connect { conn, addr } => {
                let target = self.nodes.iter().position(|x| x.listen == addr && x.up);
                match target {
                    Some(t) => {
                        self.next_port += 1;
                        let from = SocketAddr::new(self.nodes[n].listen.ip(), self.next_port);
                        match self.nodes[t].peer.accepted(now, from) {
                            Some(tc) => {
                                self.links.push(((n, conn), (t, tc)));
                                self.nodes[n].peer.connected(now, conn);
                                // The acceptor's HELLO.
                                self.flush(t, tc);
                            }
                            None => self.nodes[n].peer.closed(now, conn),
                        }
                    }
                    None => self.nodes[n].peer.closed(now, conn),
                }
            }
            Action::Write(c) => self.flush(n, c),
            Action::Close(c) => {
                if let Some((o, oc)) = self.unlink(n, c) {
                    self.nodes[o].peer.closed(now, oc);
                }
            }
        }
    }

    fn flush(&mut self, n: usize, c: ConnId) {
        if !self.deliver[n] {
            return;
        }
        let now = self.now;
        let bytes = self.nodes[n].peer.output(c).to_vec();
        if bytes.is_empty() {
            return;
        }
        self.nodes[n].peer.wrote(now, c, bytes.len());
        let Some((o, oc)) = self.other(n, c) else {
            return;
        };
        let piece = if self.piece == 0 {
            bytes.len()
        } else {
            self.piece
        };
        for p in bytes.chunks(piece) {
            self.nodes[o].peer.handle_data(now, 1, oc, p);
        }
    }

    /// Cuts every connection of node `n`, bytes in them lost.
    fn cut(&mut self, n: usize) {
        let now = self.now;
        let mine: Vec<_> = self
            .links
            .iter()
            .filter_map(|&(a, b)| {
                if a.0 == n {
                    Some((a, b))
                } else if b.0 == n {
                    Some((b, a))
                } else {
                    None
                }
            })
            .collect();
        for (m, o) in mine {
            self.links.retain(|&(a, b)| a != m && b != m);
            self.nodes[m.0].peer.closed(now, m.1);
            self.nodes[o.0].peer.closed(now, o.1);
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        for n in 0..self.nodes.len() {
            let now = self.now;
            self.nodes[n].peer.handle_timeout(now);
        }
        self.settle();
    }

    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.advance(Duration::from_millis(100));
        }
    }

    fn messages(&self, n: usize) -> Vec<String> {
        self.nodes[n]
            .events
            .iter()
            .filter_map(|e| match e {
                PeerEvent::Message { text, .. } => Some(text.clone()),
                _ => None,
            })
            .collect()
    }

    fn count(&self, n: usize, f: impl Fn(&PeerEvent) -> bool) -> usize {
        self.nodes[n].events.iter().filter(|e| f(e)).count()
    }
}

#[test]
fn a_message_is_delivered_and_acknowledged() {
    let mut net = Net::new(&["alice", "bob"]);
    let now = net.now;
    let id = net.nodes[0]
        .peer
        .send(now, 5, Target::Nick(nick("bob")), " hi bob ")
        .unwrap();
    net.settle();
    // As written: the sender's spaces and newlines are the message's.
    assert_eq!(net.messages(1), vec![" hi bob "]);
    let m = net.nodes[1]
        .events
        .iter()
        .find(|e| matches!(e, PeerEvent::Message { .. }))
        .unwrap();
    assert!(
        matches!(m, PeerEvent::Message { from, verified: true, sent_ms: 5, .. } if *from == nick("alice"))
    );
    assert!(net.nodes[0].events.contains(&PeerEvent::Delivered {
        id,
        to: Target::Nick(nick("bob"))
    }));
    assert_eq!(net.nodes[0].peer.waiting(), 0);
    // The connection is reused for the next message.
    net.nodes[0]
        .peer
        .send(now, 6, Target::Nick(nick("bob")), "again")
        .unwrap();
    net.settle();
    assert_eq!(net.links.len(), 1);
    assert_eq!(net.messages(1), vec![" hi bob ", "again"]);
    // Idle connections close after the timeout, and nothing is kept for the destination.
    assert_eq!(net.nodes[0].peer.dests.len(), 1);
    net.run(Duration::from_secs(61));
    assert!(net.links.is_empty());
    assert_eq!(net.nodes[0].peer.connections(), 0);
    assert!(net.nodes[0].peer.dests.is_empty());
}

#[test]
fn frames_split_at_every_size_still_arrive() {
    for piece in [1, 2, 3, 5, 7, 13, 64] {
        let mut net = Net::new(&["alice", "bob"]);
        net.piece = piece;
        let now = net.now;
        net.nodes[0]
            .peer
            .send(now, 1, Target::Nick(nick("bob")), &"é".repeat(100))
            .unwrap();
        net.settle();
        assert_eq!(net.messages(1), vec!["é".repeat(100)], "piece {piece}");
        assert_eq!(
            net.count(0, |e| matches!(e, PeerEvent::Delivered { .. })),
            1
        );
    }
}

#[test]
fn a_dropped_connection_is_retried_without_duplicates() {
    let mut net = Net::new(&["alice", "bob"]);
    let now = net.now;
    // A first message opens the session (bob's handshake answer must reach alice).
    net.nodes[0]
        .peer
        .send(now, 1, Target::Nick(nick("bob")), "hi")
        .unwrap();
    net.settle();
    // bob's ACKs are lost: his writes never leave.
    net.deliver[1] = false;
    net.nodes[0]
        .peer
        .send(now, 1, Target::Nick(nick("bob")), "once")
        .unwrap();
    net.settle();
    assert_eq!(net.messages(1), vec!["hi", "once"]);
    // No ACK within the timeout: alice closes, waits, reconnects and sends again; bob drops the duplicate.
    net.deliver[1] = true;
    net.run(Duration::from_secs(8));
    assert_eq!(net.messages(1), vec!["hi", "once"], "shown twice");
    assert_eq!(net.nodes[1].peer.stats().duplicates, 1);
    assert_eq!(
        net.count(0, |e| matches!(e, PeerEvent::Delivered { .. })),
        2
    );
    assert!(net.nodes[0].peer.stats().retransmitted >= 1);
    // A cut with the message in flight: sent again, delivered once.
    net.deliver[0] = false;
    net.nodes[0]
        .peer
        .send(net.now, 2, Target::Nick(nick("bob")), "twice?")
        .unwrap();
    net.settle();
    net.cut(0);
    net.deliver[0] = true;
    net.run(Duration::from_secs(5));
    assert_eq!(net.messages(1), vec!["hi", "once", "twice?"]);
}

#[test]
fn messages_for_an_offline_peer_wait_until_it_returns() {
    let mut net = Net::new(&["alice", "bob"]);
    let now = net.now;
    let bob_addr = net.nodes[1].listen;
    net.nodes[0]
        .peer
        .set_contact(now, nick("bob"), bob_addr, false);
    net.nodes[1].up = false;
    let a = net.nodes[0]
        .peer
        .send(now, 1, Target::Nick(nick("bob")), "first")
        .unwrap();
    let b = net.nodes[0]
        .peer
        .send(now, 2, Target::Nick(nick("bob")), "second")
        .unwrap();
    net.settle();
    net.run(Duration::from_secs(30));
    assert_eq!(net.count(0, |e| matches!(e, PeerEvent::Queued { .. })), 2);
    assert_eq!(net.count(0, |e| matches!(e, PeerEvent::Failed { .. })), 0);
    assert!(net.links.is_empty(), "no attempts while offline");
    let saved = net.nodes[0].peer.waiting_messages();
    assert_eq!(saved.len(), 2);
    // bob comes back (the roster says so): both delivered, in order.
    net.nodes[1].up = true;
    let now = net.now;
    net.nodes[0]
        .peer
        .set_contact(now, nick("bob"), bob_addr, true);
    net.settle();
    assert_eq!(net.messages(1), vec!["first", "second"]);
    for id in [a, b] {
        assert!(net.nodes[0].events.contains(&PeerEvent::Delivered {
            id,
            to: Target::Nick(nick("bob"))
        }));
    }
    // A restored queue (after a restart) is delivered the same way.
    let mut fresh = Peer::new(config("alice", 999));
    fresh.set_contact(now, nick("bob"), bob_addr, false);
    for (t, id, ms, scope, text) in saved {
        fresh.restore(now, t, id, ms, scope, text);
    }
    assert_eq!(fresh.waiting(), 2);
}

#[test]
fn an_unreachable_address_fails_after_bounded_attempts() {
    let mut net = Net::new(&["alice", "bob"]);
    net.nodes[1].up = false;
    let now = net.now;
    // An address given directly: no roster entry says whether it will be back, so it gives up.
    let bob_addr = net.nodes[1].listen;
    let id = net.nodes[0]
        .peer
        .send(now, 1, Target::Addr(bob_addr), "anyone?")
        .unwrap();
    net.run(Duration::from_secs(60));
    let failed: Vec<_> = net.nodes[0]
        .events
        .iter()
        .filter(|e| matches!(e, PeerEvent::Failed { .. }))
        .collect();
    assert_eq!(failed.len(), 1);
    assert!(matches!(failed[0], PeerEvent::Failed { id: f, .. } if *f == id));
    assert_eq!(net.nodes[0].peer.waiting(), 0);
}

#[test]
fn queue_and_text_bounds() {
    let mut net = Net::new(&["alice", "bob"]);
    let now = net.now;
    let bob = Target::Nick(nick("bob"));
    let bob_addr = net.nodes[1].listen;
    net.nodes[0]
        .peer
        .set_contact(now, nick("bob"), bob_addr, false);
    for i in 0..100 {
        net.nodes[0]
            .peer
            .send(now, 1, bob, &format!("m{i}"))
            .unwrap();
    }
    assert_eq!(
        net.nodes[0].peer.send(now, 1, bob, "one too many"),
        Err(SendError::QueueFull)
    );
    assert_eq!(
        net.nodes[0].peer.send(now, 1, bob, "   "),
        Err(SendError::Empty)
    );
    assert_eq!(
        net.nodes[0]
            .peer
            .send(now, 1, bob, &"x".repeat(MAX_TEXT + 1)),
        Err(SendError::TooLong)
    );
    assert_eq!(
        net.nodes[0]
            .peer
            .send(now, 1, Target::Nick(nick("nobody")), "hi"),
        Err(SendError::UnknownNick(nick("nobody")))
    );
}

/// The observed attack: bob's port held busy, so alice's message went unanswered and was dropped after five
/// attempts. Now it stays queued, retried at the capped backoff, and arrives once bob answers.
#[test]
fn a_message_to_an_unresponsive_online_receiver_stays_queued_until_it_answers() {
    let mut net = Net::new(&["alice", "bob"]);
    let bob = Target::Nick(nick("bob"));
    net.nodes[1].up = false;
    let now = net.now;
    let id = net.nodes[0]
        .peer
        .send(now, 1, bob, "are you there?")
        .unwrap();
    net.settle();
    // A minute of refused connections, then a minute in which bob accepts but never answers.
    net.run(Duration::from_secs(60));
    net.nodes[1].up = true;
    net.deliver[1] = false;
    net.run(Duration::from_secs(60));
    let alice = &net.nodes[0];
    let st = *alice.peer.stats();
    assert!(st.retransmitted >= 15, "{st:?}");
    assert_eq!(net.count(0, |e| matches!(e, PeerEvent::Failed { .. })), 0);
    // Told once that it is slow, not once per attempt.
    let max = alice.peer.cfg.max_attempts;
    assert_eq!(
        alice
            .events
            .iter()
            .filter(|e| matches!(e, PeerEvent::Unanswered { .. }))
            .collect::<Vec<_>>(),
        vec![&PeerEvent::Unanswered {
            id,
            to: bob,
            attempts: max
        }]
    );
    assert_eq!(st.unanswered, 1);
    assert_eq!(alice.peer.waiting(), 1);
    assert_eq!(
        alice.peer.waiting_messages()[0].1,
        id,
        "still queued (and saved)"
    );
    // The queue bounds still hold while it waits.
    let now = net.now;
    for i in 1..alice.peer.cfg.max_queue_per_peer {
        net.nodes[0]
            .peer
            .send(now, 1, bob, &format!("m{i}"))
            .unwrap();
    }
    assert_eq!(
        net.nodes[0].peer.send(now, 1, bob, "one too many"),
        Err(SendError::QueueFull)
    );
    // bob answers: within one capped backoff (8 s) plus the ACK timeout, everything is delivered, once each.
    net.deliver[1] = true;
    net.run(Duration::from_secs(14));
    assert!(
        net.nodes[0]
            .events
            .contains(&PeerEvent::Delivered { id, to: bob })
    );
    assert_eq!(net.nodes[0].peer.waiting(), 0);
    let got = net.messages(1);
    assert_eq!(got.len(), 100, "{got:?}");
    assert_eq!(got.iter().filter(|m| *m == "are you there?").count(), 1);
}

#[test]
fn a_silent_incoming_connection_is_closed_at_the_handshake_deadline() {
    let t0 = Instant::from_millis(1);
    let mut p = Peer::new(config("target", 1));
    let silent = raw_conn(&mut p, t0);
    let mut talker = Sender::connect(&mut p, t0, "talker", "10.9.9.7:1");
    talker.send(&mut p, t0, &[hello("talker", 7)]);
    // The handshake deadline, not the 10 s frame timeout.
    let deadline = t0 + p.cfg.hello_timeout;
    assert_eq!(p.poll_timeout(), Some(deadline));
    p.handle_timeout(t0 + (p.cfg.hello_timeout - Duration::from_millis(1)));
    assert!(!closed(&mut p, silent));
    p.handle_timeout(deadline);
    let closes: Vec<Action> = std::iter::from_fn(|| p.poll_action()).collect();
    assert_eq!(
        closes,
        vec![Action::Close(silent)],
        "the one that said HELLO stays"
    );
    assert_eq!((p.stats().slow, p.connections()), (1, 1));
}

#[test]
fn one_source_cannot_hold_every_connection() {
    let now = Instant::from_millis(1);
    let mut p = Peer::new(config("bob", 1));
    let cap = p.cfg.max_conns_per_source;
    let from = |port: u16| format!("10.6.6.6:{port}");
    // Connections that completed their handshake and said nothing yet.
    let mut held: Vec<Sender> = (0..cap as u16)
        .map(|i| {
            Sender::connect(
                &mut p,
                now + Duration::from_millis(u64::from(i)),
                "holder",
                &from(i),
            )
        })
        .collect();
    while p.poll_action().is_some() {}
    // The next one from that address replaces its oldest silent one; nothing else is touched.
    let later = now + Duration::from_secs(1);
    let newest = Sender::connect(&mut p, later, "holder", &from(999));
    let closed_now: Vec<Action> = std::iter::from_fn(|| p.poll_action())
        .filter(|a| matches!(a, Action::Close(_)))
        .collect();
    assert_eq!(closed_now, vec![Action::Close(held[0].conn)]);
    assert_eq!((p.connections(), p.stats().source_limited), (cap, 1));
    // Another host gets in without displacing anyone.
    let alice = p.accepted(later, addr("10.0.0.2:5000")).unwrap();
    assert_eq!(p.connections(), cap + 1);
    assert!(!closed(&mut p, alice));
    // Connections that said HELLO: the one idle longest makes room.
    held.remove(0);
    let mut theirs: Vec<Sender> = held.into_iter().chain([newest]).collect();
    for (i, s) in theirs.iter_mut().enumerate() {
        s.send(
            &mut p,
            later + Duration::from_millis(i as u64),
            &[hello("holder", 3)],
        );
    }
    while p.poll_action().is_some() {}
    p.accepted(later + Duration::from_secs(1), addr(&from(1000)))
        .unwrap();
    assert!(closed(&mut p, theirs[0].conn));
    // Every one of them past HELLO and in the middle of a frame (each has its own deadline): refused instead.
    let mut q = Peer::new(Config {
        max_conns_per_source: 2,
        ..config("bob", 1)
    });
    let mut frame = Vec::new();
    hello("holder", 3).encode(&mut frame);
    for i in 0..2 {
        let mut s = Sender::connect(&mut q, now, "holder", &from(i));
        s.send(&mut q, now, &[hello("holder", 3)]);
        let mut wire = Vec::new();
        s.chan.write(&frame[..3], &mut wire);
        q.handle_data(now, 1, s.conn, &wire);
    }
    assert!(q.accepted(now, addr(&from(9))).is_none());
    assert_eq!((q.connections(), q.stats().source_limited), (2, 1));
}

fn raw_conn(p: &mut Peer, now: Instant) -> ConnId {
    let c = p.accepted(now, addr("10.9.9.9:1234")).unwrap();
    while p.poll_action().is_some() {}
    c
}

fn closed(p: &mut Peer, c: ConnId) -> bool {
    std::iter::from_fn(|| p.poll_action()).any(|a| a == Action::Close(c))
}

/// Someone holding the key of `name` who connected to `p` and completed the handshake (IK to `p`'s key):
/// what it seals, `p` opens.
struct Sender {
    chan: Channel,
    conn: ConnId,
    identity: Identity,
    seeds: Seeds,
}

impl Sender {
    fn connect(p: &mut Peer, now: Instant, name: &str, from: &str) -> Sender {
        let identity = identity(name);
        let mut seeds = Seeds::new(&[name.len() as u8; 32]);
        let conn = p.accepted(now, addr(from)).unwrap();
        let target = p.cfg.identity.public();
        let (mut chan, first) = Channel::outgoing(
            &mut Keys {
                me: &identity,
                psk: None,
                seeds: &mut seeds,
            },
            Some(&target),
        );
        p.handle_data(now, 1, conn, &first);
        let answer = p.output(conn).to_vec();
        p.wrote(now, conn, answer.len());
        let (mut plain, mut wire) = (Vec::new(), Vec::new());
        chan.read(
            &answer,
            &mut Keys {
                me: &identity,
                psk: None,
                seeds: &mut seeds,
            },
            |_| true,
            &mut plain,
            &mut wire,
        )
        .expect("the handshake completes");
        assert!(chan.is_open());
        Sender {
            chan,
            conn,
            identity,
            seeds,
        }
    }

    /// The bytes that carry `frames`, sealed.
    fn seal(&mut self, frames: &[Frame]) -> Vec<u8> {
        let mut plain = Vec::new();
        for f in frames {
            f.encode(&mut plain);
        }
        self.seal_plain(&plain)
    }

    /// `plain` (whole frames of any kind), sealed.
    fn seal_plain(&mut self, plain: &[u8]) -> Vec<u8> {
        let mut wire = Vec::new();
        self.chan.write(plain, &mut wire);
        wire
    }

    fn send(&mut self, p: &mut Peer, now: Instant, frames: &[Frame]) {
        let wire = self.seal(frames);
        p.handle_data(now, 1, self.conn, &wire);
    }
}

fn hello(name: &str, instance: u64) -> Frame {
    Frame::Hello {
        nick: nick(name),
        instance,
    }
}

fn msg(id: u64, text: &str) -> Frame {
    Frame::Msg {
        id,
        sent_ms: 1,
        scope: Scope::Direct,
        text: text.into(),
    }
}

#[test]
fn hostile_connections_are_closed_with_a_counted_reason() {
    let now = Instant::from_millis(1);
    let mut p = Peer::new(config("target", 1));
    // Not a Noise stream: a zero length, then an HTTP request.
    let c = raw_conn(&mut p, now);
    p.handle_data(now, 1, c, &[0, 0, 1]);
    assert!(closed(&mut p, c));
    let c = raw_conn(&mut p, now);
    p.handle_data(now, 1, c, b"\x00\x03GET");
    assert!(closed(&mut p, c));
    assert_eq!(p.stats().malformed, 2);
    // A handshake that does not open: a first message for another key.
    let c = raw_conn(&mut p, now);
    let stranger = identity("stranger");
    let (_, first) = Channel::outgoing(
        &mut Keys {
            me: &stranger,
            psk: None,
            seeds: &mut Seeds::new(&[1; 32]),
        },
        Some(&identity("not-target").public()),
    );
    p.handle_data(now, 1, c, &first);
    assert!(closed(&mut p, c));
    assert_eq!(p.stats().handshakes_failed, 1);
    // Inside a session: an oversized frame length.
    let mut s = Sender::connect(&mut p, now, "mallory", "10.9.9.8:1");
    let mut wire = Vec::new();
    s.chan.write(&[0xff, 0xff, 0xff, 0xff, 1], &mut wire);
    p.handle_data(now, 1, s.conn, &wire);
    assert!(closed(&mut p, s.conn));
    assert_eq!(p.stats().oversized, 1);
    // Inside a session: a MSG before HELLO.
    let mut s = Sender::connect(&mut p, now, "mallory", "10.9.9.8:2");
    s.send(&mut p, now, &[msg(1, "hi")]);
    assert!(closed(&mut p, s.conn));
    assert_eq!(p.stats().malformed, 3);
    // A sealed message altered on the way, and one replayed from another session: forged.
    let mut s = Sender::connect(&mut p, now, "mallory", "10.9.9.8:3");
    let mut w = s.seal(&[hello("mallory", 1)]);
    let last = w.len() - 1;
    w[last] ^= 1;
    p.handle_data(now, 1, s.conn, &w);
    assert!(closed(&mut p, s.conn));
    let mut a = Sender::connect(&mut p, now, "mallory", "10.9.9.8:4");
    let captured = a.seal(&[hello("mallory", 1)]);
    let b = Sender::connect(&mut p, now, "mallory", "10.9.9.8:5");
    p.handle_data(now, 1, b.conn, &captured);
    assert!(closed(&mut p, b.conn));
    assert_eq!(p.stats().forged, 2);
    p.closed(now, a.conn);
    // One byte a second: the handshake never completes in time.
    let c = raw_conn(&mut p, now);
    let mut t = now;
    let mut was_closed = false;
    for byte in &first[..first.len() - 1] {
        t += Duration::from_secs(1);
        p.handle_timeout(t);
        if closed(&mut p, c) {
            was_closed = true;
            break;
        }
        p.handle_data(t, 1, c, std::slice::from_ref(byte));
    }
    if !was_closed {
        p.handle_timeout(t + Duration::from_secs(10));
        was_closed = closed(&mut p, c);
    }
    assert!(was_closed);
    assert_eq!(p.stats().slow, 1);
    // A flood of silent connections: the oldest silent one makes room for each newcomer, so the number held
    // stays at the cap and a real peer arriving last still gets in.
    while p.poll_action().is_some() {}
    let cap = p.cfg.max_conns;
    let held = p.connections();
    for i in 0..cap + 50 {
        assert!(
            p.accepted(now, addr(&format!("10.0.{}.{}:1", i / 250, i % 250)))
                .is_some()
        );
    }
    assert_eq!(p.connections(), cap);
    assert_eq!(p.stats().refused as usize, 50 + held);
    // Once every held connection has said HELLO, newcomers are refused instead.
    let mut q = Peer::new(Config {
        max_conns: 2,
        ..config("target", 1)
    });
    for i in 0..2 {
        let mut s = Sender::connect(&mut q, now, "someone", &format!("10.1.0.{i}:1"));
        s.send(&mut q, now, &[hello("someone", i)]);
    }
    assert!(q.accepted(now, addr("10.1.0.9:1")).is_none());
}

#[test]
fn a_refusal_that_says_why_is_written_before_the_connection_closes() {
    let now = Instant::from_millis(1);
    // A LAN with a network secret; a client without it.
    let mut p = Peer::new(Config {
        psk: Some(Psk::from_secret(b"the office secret")),
        ..config("target", 1)
    });
    let c = raw_conn(&mut p, now);
    let (_, first) = Channel::outgoing(
        &mut Keys {
            me: &identity("outsider"),
            psk: None,
            seeds: &mut Seeds::new(&[2; 32]),
        },
        Some(&p.cfg.identity.public()),
    );
    p.handle_data(now, 1, c, &first);
    assert_eq!(p.stats().handshakes_failed, 1);
    // The refusal is there to be written, and the connection is closed only once it is.
    let out = p.output(c).to_vec();
    assert!(
        out.windows(b"network secret".len())
            .any(|w| w == b"network secret"),
        "no refusal in {out:?}"
    );
    assert!(!closed(&mut p, c));
    // Input meanwhile is not read.
    p.handle_data(now, 1, c, &first);
    assert_eq!(p.stats().handshakes_failed, 1);
    p.wrote(now, c, out.len());
    assert!(closed(&mut p, c));
}

#[test]
fn a_sender_whose_key_is_not_the_rosters_for_its_name_is_shown_as_unknown() {
    let now = Instant::from_millis(1);
    let mut bob = Peer::new(config("bob", 1));
    bob.set_contact(now, nick("alice"), addr("10.0.0.1:5000"), true);
    bob.set_key(now, nick("alice"), Some(identity("alice").public()));
    // mallory, from alice's own address, says she is alice.
    let mut m = Sender::connect(&mut bob, now, "mallory", "10.0.0.1:4444");
    m.send(
        &mut bob,
        now,
        &[hello("alice", 7), msg(1, "it's me, alice")],
    );
    let ev: Vec<PeerEvent> = std::iter::from_fn(|| bob.poll_event()).collect();
    assert!(
        matches!(&ev[..], [PeerEvent::Message { from, key, verified: false, .. }]
            if *from == nick("alice") && *key == identity("mallory").public()),
        "{ev:?}"
    );
    // The real alice, from anywhere, is verified.
    let mut a = Sender::connect(&mut bob, now, "alice", "192.0.2.9:1");
    a.send(&mut bob, now, &[hello("alice", 7), msg(1, "really me")]);
    let ev: Vec<PeerEvent> = std::iter::from_fn(|| bob.poll_event()).collect();
    assert!(
        matches!(&ev[..], [PeerEvent::Message { verified: true, text, .. }] if text == "really me"),
        "{ev:?}: mallory's message with the same instance and id made alice's a duplicate"
    );
    let _ = (&a.identity, &mut a.seeds);
}

#[test]
fn a_message_from_a_name_whose_key_is_not_known_yet_waits_for_the_daemons_answer() {
    let now = Instant::from_millis(1);
    let mut bob = Peer::new(config("bob", 1));
    let mut a = Sender::connect(&mut bob, now, "alice", "10.0.0.1:1");
    a.send(&mut bob, now, &[hello("alice", 3), msg(1, "hello")]);
    // Acknowledged at once (the sender is done), shown only once the key is known.
    assert!(bob.poll_event().is_none());
    assert_eq!(bob.poll_key_request(), Some(nick("alice")));
    assert!(bob.wants_key(&nick("alice")));
    bob.set_key(now, nick("alice"), Some(identity("alice").public()));
    assert!(matches!(
        bob.poll_event(),
        Some(PeerEvent::Message { verified: true, .. })
    ));
    // A name the daemon does not answer for in time: shown, as from an unknown key.
    let mut m = Sender::connect(&mut bob, now, "mallory", "10.0.0.2:1");
    m.send(&mut bob, now, &[hello("ghost", 3), msg(1, "boo")]);
    assert!(bob.poll_event().is_none());
    let t = bob.poll_timeout().unwrap();
    bob.handle_timeout(t.max(now + bob.cfg.key_timeout));
    assert!(matches!(
        bob.poll_event(),
        Some(PeerEvent::Message {
            verified: false,
            ..
        })
    ));
}

#[test]
fn a_name_the_daemon_has_no_key_for_is_not_waited_for_again() {
    let now = Instant::from_millis(1);
    let mut bob = Peer::new(config("bob", 1));
    let mut g = Sender::connect(&mut bob, now, "ghost", "10.0.0.2:1");
    g.send(&mut bob, now, &[hello("ghost", 3), msg(1, "boo")]);
    assert!(bob.poll_event().is_none());
    assert_eq!(bob.poll_key_request(), Some(nick("ghost")));
    // The daemon knows no key for it: shown, as from an unknown key.
    bob.set_key(now, nick("ghost"), None);
    assert!(matches!(
        bob.poll_event(),
        Some(PeerEvent::Message {
            verified: false,
            ..
        })
    ));
    // Its next message, within the key timeout, is not asked about again (the answer is in) and not held
    // for an answer that will not come: it used to wait the whole key timeout.
    let later = now + Duration::from_millis(100);
    let mut g2 = Sender::connect(&mut bob, later, "ghost", "10.0.0.2:2");
    g2.send(&mut bob, later, &[hello("ghost", 3), msg(2, "boo again")]);
    assert!(matches!(
        bob.poll_event(),
        Some(PeerEvent::Message { verified: false, text, .. }) if text == "boo again"
    ));
    assert!(bob.poll_key_request().is_none());
    assert!(!bob.wants_key(&nick("ghost")));
    // After the key timeout it is asked about again (it may have registered meanwhile).
    let t = bob.poll_timeout().unwrap();
    bob.handle_timeout(t.max(now + bob.cfg.key_timeout));
    let after = now + bob.cfg.key_timeout + Duration::from_millis(1);
    let mut g3 = Sender::connect(&mut bob, after, "ghost", "10.0.0.2:3");
    g3.send(&mut bob, after, &[hello("ghost", 3), msg(3, "boo at last")]);
    assert!(bob.poll_event().is_none());
    assert_eq!(bob.poll_key_request(), Some(nick("ghost")));
}

#[test]
fn sending_to_an_address() {
    let mut net = Net::new(&["alice", "bob"]);
    let now = net.now;
    let to = Target::Addr(net.nodes[1].listen);
    let id = net.nodes[0].peer.send(now, 1, to, "direct").unwrap();
    net.settle();
    assert_eq!(net.messages(1), vec!["direct"]);
    assert!(
        net.nodes[0]
            .events
            .contains(&PeerEvent::Delivered { id, to })
    );
}

#[test]
fn received_text_cannot_drive_the_terminal() {
    assert_eq!(sanitize("a\u{1b}[2J\u{1b}[31mb\u{7}c\r\nd"), "abc\nd");
    assert_eq!(
        sanitize("x\u{1b}]0;title\u{7}y\u{1b}]8;;http://e\u{1b}\\z"),
        "xyz"
    );
    assert_eq!(sanitize("safe \u{202e}txt.exe"), "safe txt.exe");
    // Newlines and tabs are the message's own layout; a carriage return could overwrite a line on screen.
    assert_eq!(
        sanitize("tab\there\n  indented\rover"),
        "tab\there\n  indentedover"
    );
    assert_eq!(sanitize("ünïcödé ✓ 日本"), "ünïcödé ✓ 日本");
    assert_eq!(sanitize("trailing escape \u{1b}"), "trailing escape ");
}

/// Sends `(instance, id)` as a fresh connection from a sender calling itself `spoof`; returns whether a
/// Message event came out (false: dropped as a duplicate).
fn spoofed_msg(p: &mut Peer, now: Instant, instance: u64, id: u64) -> bool {
    let mut s = Sender::connect(p, now, "spoof", "10.9.9.9:1234");
    s.send(p, now, &[hello("spoof", instance), msg(id, "x")]);
    p.closed(now, s.conn);
    std::iter::from_fn(|| p.poll_event()).any(|e| matches!(e, PeerEvent::Message { .. }))
}

#[test]
fn dedupe_memory_is_bounded_by_senders_and_ids() {
    let mut p = Peer::new(Config {
        dedupe_senders: 4,
        dedupe_window: 8,
        ..config("target", 1)
    });
    let mut now = Instant::from_millis(1);
    // The daemon has given spoof's key: its messages show at once.
    p.set_key(now, nick("spoof"), Some(identity("spoof").public()));
    // A made-up instance per HELLO: the table never holds more than four senders.
    for instance in 0..1000 {
        now += Duration::from_millis(1);
        assert!(spoofed_msg(&mut p, now, instance, 1));
        assert!(p.seen.len() <= 4);
    }
    // The most recently heard senders are still remembered: their repeats are duplicates.
    assert!(!spoofed_msg(&mut p, now, 999, 1));
    assert!(!spoofed_msg(&mut p, now, 996, 1));
    // One sender's ids: only the last eight are remembered.
    for id in 0..100 {
        assert!(spoofed_msg(&mut p, now, 5000, id));
    }
    let s = &p.seen[&(identity("spoof").public(), 5000)];
    assert_eq!((s.ids.len(), s.order.len()), (8, 8));
    assert!(!spoofed_msg(&mut p, now, 5000, 99));
    assert!(
        spoofed_msg(&mut p, now, 5000, 0),
        "forgotten ids are accepted again"
    );
    assert_eq!(p.stats().duplicates, 3);
}

#[test]
fn a_nickname_typed_in_another_case_finds_its_one_owner() {
    let mut net = Net::new(&["alice", "bob"]);
    let now = net.now;
    // `msg Bob` goes to bob, and is reported as to bob.
    let id = net.nodes[0]
        .peer
        .send(now, 5, Target::Nick(nick("Bob")), "hi")
        .unwrap();
    net.settle();
    assert_eq!(net.messages(1), vec!["hi"]);
    assert!(net.nodes[0].events.contains(&PeerEvent::Delivered {
        id,
        to: Target::Nick(nick("bob"))
    }));
    // Two names alike but for case: the typed one exactly, else the question which.
    let addr = net.nodes[1].listen;
    net.nodes[0].peer.set_contact(now, nick("BOB"), addr, true);
    assert!(
        net.nodes[0]
            .peer
            .send(now, 5, Target::Nick(nick("BOB")), "x")
            .is_ok()
    );
    assert_eq!(
        net.nodes[0]
            .peer
            .send(now, 5, Target::Nick(nick("boB")), "x"),
        Err(SendError::Ambiguous(
            nick("boB"),
            vec![nick("BOB"), nick("bob")]
        ))
    );
    assert_eq!(
        net.nodes[0]
            .peer
            .send(now, 5, Target::Nick(nick("carol")), "x"),
        Err(SendError::UnknownNick(nick("carol")))
    );
}

#[test]
fn a_unicode_nickname_typed_in_another_case_finds_its_owner() {
    let mut net = Net::new(&["alice", "Émile"]);
    let now = net.now;
    // Full case folding: `msg émile` and `msg ÉMILE` find Émile.
    for typed in ["émile", "ÉMILE"] {
        let id = net.nodes[0]
            .peer
            .send(now, 5, Target::Nick(nick(typed)), typed)
            .unwrap();
        net.settle();
        assert!(net.nodes[0].events.contains(&PeerEvent::Delivered {
            id,
            to: Target::Nick(nick("Émile"))
        }));
    }
    assert_eq!(net.messages(1), vec!["émile", "ÉMILE"]);
}

#[test]
fn a_message_to_many_is_one_id_queued_for_each_all_or_nothing() {
    let now = Instant::from_millis(1);
    let mut cfg = config("alice", 5);
    cfg.max_queue_total = 3;
    let mut p = Peer::new(cfg);
    for (n, port) in [("bob", 1), ("carol", 2), ("dave", 3), ("erin", 4)] {
        p.set_contact(now, nick(n), addr(&format!("127.0.0.1:{port}")), false);
    }
    let ops = Scope::Channel(crate::group::ChannelName::new("#ops").unwrap());
    let four = [nick("bob"), nick("carol"), nick("dave"), nick("erin")];
    assert_eq!(
        p.send_to_many(now, 9, ops, &four, "hi"),
        Err(SendError::TooMany(4, 3))
    );
    let id = p.send_to_many(now, 9, ops, &four[..2], "hi").unwrap();
    let queued: Vec<_> = std::iter::from_fn(|| p.poll_event()).collect();
    assert_eq!(
        queued,
        [
            PeerEvent::Queued {
                id,
                to: Target::Nick(nick("bob"))
            },
            PeerEvent::Queued {
                id,
                to: Target::Nick(nick("carol"))
            },
        ]
    );
    let mut w = p.waiting_messages();
    w.sort_by_key(|m| m.0.to_string());
    assert_eq!(
        w,
        [
            (Target::Nick(nick("bob")), id, 9, ops, "hi".to_string()),
            (Target::Nick(nick("carol")), id, 9, ops, "hi".to_string()),
        ]
    );
    // Room for one more, not two: nothing is queued.
    assert_eq!(
        p.send_to_many(now, 9, Scope::Everyone, &four[2..], "x"),
        Err(SendError::QueueFull)
    );
    assert_eq!(p.waiting(), 2);
    assert!(p.poll_event().is_none());
}

/// The next deadline comes from the timer heap: on a connection left idle (its idle deadline a minute away),
/// a message in flight brings the ACK deadline forward, and the connection is given up at that time.
#[test]
fn a_message_on_an_idle_connection_brings_its_ack_deadline_forward() {
    let mut net = Net::new(&["alice", "bob"]);
    let now = net.now;
    net.nodes[0]
        .peer
        .send(now, 5, Target::Nick(nick("bob")), "first")
        .unwrap();
    net.settle();
    assert_eq!(net.messages(1), vec!["first"]);
    let cfg = net.nodes[0].peer.cfg.clone();
    net.run(Duration::from_secs(10));
    let at = net.now;
    let idle = net.nodes[0].peer.poll_timeout().unwrap();
    assert!(idle > at + cfg.ack_timeout, "{idle:?} vs {at:?}");
    // Sent, and not let through (no settle): its ACK is due in ack_timeout.
    net.nodes[0]
        .peer
        .send(at, 6, Target::Nick(nick("bob")), "second")
        .unwrap();
    assert_eq!(net.nodes[0].peer.poll_timeout(), Some(at + cfg.ack_timeout));
    net.nodes[0].peer.handle_timeout(at + cfg.ack_timeout);
    let closed = std::iter::from_fn(|| net.nodes[0].peer.poll_action())
        .any(|a| matches!(a, Action::Close(_)));
    assert!(
        closed,
        "the silent connection was not given up at its ACK deadline"
    );
}

/// An idle timeout shorter than the ACK timeout: once the last ACK is in, the idle deadline is the next one
/// (the timer heap must learn that it moved earlier than the ACK deadline it holds).
#[test]
fn with_a_short_idle_timeout_the_connection_closes_once_its_last_ack_is_in() {
    let mut net = Net::new(&["alice", "bob"]);
    net.nodes[0].peer.cfg.idle_timeout = Duration::from_millis(300);
    // Bob's HELLO and ACK are held: alice's connection waits with the message in flight.
    net.deliver[1] = false;
    let now = net.now;
    net.nodes[0]
        .peer
        .send(now, 5, Target::Nick(nick("bob")), "hi")
        .unwrap();
    net.settle();
    net.run(Duration::from_secs(1));
    assert!(net.nodes[0].peer.poll_timeout().unwrap() > net.now + Duration::from_secs(3));
    net.deliver[1] = true;
    let held: Vec<ConnId> = net
        .links
        .iter()
        .map(|&(a, b)| if a.0 == 1 { a.1 } else { b.1 })
        .collect();
    for c in held {
        net.flush(1, c);
    }
    net.settle();
    assert!(
        net.nodes[0]
            .events
            .iter()
            .any(|e| matches!(e, PeerEvent::Delivered { .. }))
    );
    let due = net.nodes[0].peer.poll_timeout().unwrap();
    assert!(
        due <= net.now + Duration::from_millis(300),
        "{due:?} is still the ACK deadline, not the idle one ({:?})",
        net.now
    );
}
