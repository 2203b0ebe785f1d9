//! Registry tests: registration rules, coalesced deltas, snapshots, liveness transitions, TTL, and that every
//! client's copy of the roster (a [`Roster`]) converges on the daemon's.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use super::saved::{Image, Record};
use super::wire::{ClientMsg, Register, RegisterResult, ServerMsg, Status, flags};
use super::*;

/// The key of every test client that does not say otherwise.
const KEY: PublicKey = PublicKey([1; 32]);
/// Someone else's key.
const MALLORY: PublicKey = PublicKey([66; 32]);

fn image(records: Vec<Record>, version: u64, saved_unix_ms: u64) -> Image {
    Image {
        records,
        bindings: Vec::new(),
        version,
        saved_unix_ms,
    }
}
use crate::client::roster::{Applied, Change, Roster};

/// A registry plus simulated clients, each with its own roster copy fed from the registry's output.
struct Harness {
    reg: Registry,
    now: Instant,
    wall: u64,
    clients: HashMap<AssocId, (Roster, Vec<ServerMsg>)>,
    /// Clients whose association has a bounded send buffer; the others take everything at once.
    links: HashMap<AssocId, Link>,
    next: u32,
}

/// A client's association with a send buffer of `cap` bytes, as the SCTP endpoint keeps it: messages wait in
/// it until [`Harness::ack`] delivers them, and one that does not fit is refused; the association is reported
/// writable once it has drained to half.
struct Link {
    cap: usize,
    queued: VecDeque<Vec<u8>>,
    bytes: usize,
    /// A message was refused: report room at half the buffer.
    want_room: bool,
}

fn id(n: u32) -> AssocId {
    AssocId {
        index: n,
        generation: 1,
    }
}

impl Harness {
    fn new(cfg: Config) -> Self {
        Harness {
            reg: Registry::new(cfg),
            now: Instant::from_millis(1),
            wall: 1_700_000_000_000,
            clients: HashMap::new(),
            links: HashMap::new(),
            next: 0,
        }
    }

    /// A connection whose handshake proved the common test key (every test client is the same user unless
    /// a test says otherwise with [`Harness::connect_as`]).
    fn connect(&mut self, addr: &str) -> AssocId {
        self.connect_as(addr, KEY)
    }

    fn connect_as(&mut self, addr: &str, key: PublicKey) -> AssocId {
        self.next += 1;
        let c = id(self.next);
        self.reg.connected(c, addr.parse().unwrap(), key);
        self.clients.insert(c, (Roster::new(), Vec::new()));
        c
    }

    fn send(&mut self, c: AssocId, m: ClientMsg) {
        self.reg.handle_message(self.now, self.wall, c, &m.encode());
    }

    fn register(&mut self, c: AssocId, nick: &str, instance: u64, port: u16) {
        self.send(
            c,
            ClientMsg::Register(Register {
                flags: flags::SUBSCRIBE,
                instance,
                nick: nick.into(),
                chat_port: port,
                chat_ip: None,
            }),
        );
    }

    /// Ends the turn and delivers the output; returns how many messages each client got.
    fn turn(&mut self) -> HashMap<AssocId, usize> {
        self.reg.handle_timeout(self.now, self.wall);
        self.reg.flush();
        let mut got: HashMap<AssocId, usize> = HashMap::new();
        while let Some(o) = self.reg.poll_output() {
            let targets: Vec<(AssocId, Payload)> = match o {
                Out::To(c, b) => vec![(c, b)],
                Out::Broadcast(b) => self
                    .reg
                    .subscribers()
                    .map(|c| (c, Payload::Shared(Arc::clone(&b))))
                    .collect(),
            };
            for (c, b) in targets {
                match self.links.get_mut(&c) {
                    Some(l) if l.bytes + b.len() > l.cap => {
                        l.want_room = true;
                        self.reg.handle_blocked(c, b);
                    }
                    Some(l) => {
                        l.bytes += b.len();
                        l.queued.push_back(b.to_vec());
                    }
                    None => {
                        *got.entry(c).or_default() += 1;
                        self.receive(c, &b.to_vec());
                    }
                }
            }
        }
        got
    }

    /// `c` receives one message: its roster applies it, and a gap fails the test.
    fn receive(&mut self, c: AssocId, b: &[u8]) {
        let m = ServerMsg::parse(b).expect("registry sent a malformed message");
        if let Some((roster, log)) = self.clients.get_mut(&c) {
            if let Applied::NeedResync = roster.apply(&m) {
                panic!("client {c} saw a delta gap: {m:?}");
            }
            log.push(m);
        }
    }

    /// Gives `c`'s association a send buffer of `cap` bytes.
    fn limit(&mut self, c: AssocId, cap: usize) {
        let l = Link {
            cap,
            queued: VecDeque::new(),
            bytes: 0,
            want_room: false,
        };
        self.links.insert(c, l);
    }

    /// `c`'s peer acknowledges about `n` bytes (whole messages, at least one): they reach its roster, and the
    /// association is reported writable if it asked and has drained to half. Returns how many arrived.
    fn ack(&mut self, c: AssocId, n: usize) -> usize {
        let mut done = 0;
        let mut arrived = 0;
        while done < n.max(1) {
            let l = self.links.get_mut(&c).unwrap();
            let Some(m) = l.queued.pop_front() else { break };
            l.bytes -= m.len();
            done += m.len();
            arrived += 1;
            self.receive(c, &m);
        }
        let l = self.links.get_mut(&c).unwrap();
        if l.want_room && l.bytes <= l.cap / 2 {
            l.want_room = false;
            self.reg.handle_writable(c);
        }
        arrived
    }

    /// A registry with `n` offline entries loaded.
    fn loaded(cfg: Config, n: usize) -> Self {
        let mut h = Harness::new(cfg);
        let records = (0..n)
            .map(|i| Record {
                entry: WireEntry {
                    nick: nick(&format!("member-{i}")),
                    instance: i as u64,
                    status: Status::Offline,
                    since_ms: 1_699_999_000_000 + i as u64,
                    chat: SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 4000)),
                    flaps: 0,
                    extra: None,
                },
                key: Some(KEY),
                host: None,
            })
            .collect();
        assert_eq!(h.reg.load(image(records, 7, 1)), n);
        h
    }

    /// An observer (`mpc list`): registers, is sent the roster, is never an entry.
    fn observe(&mut self, c: AssocId, subscribe: bool) {
        let flags = flags::OBSERVER | if subscribe { flags::SUBSCRIBE } else { 0 };
        self.send(
            c,
            ClientMsg::Register(Register {
                flags,
                instance: 99,
                nick: "observer".into(),
                chat_port: 0,
                chat_ip: None,
            }),
        );
    }

    /// Snapshot versions `c` received, in order, one per page 0.
    fn snapshot_versions(&self, c: AssocId) -> Vec<u64> {
        self.clients[&c]
            .1
            .iter()
            .filter_map(|m| match m {
                ServerMsg::Snapshot {
                    version, page: 0, ..
                } => Some(*version),
                _ => None,
            })
            .collect()
    }

    fn last_registered(&self, c: AssocId) -> Option<(RegisterResult, u32, String)> {
        self.clients[&c].1.iter().rev().find_map(|m| match m {
            ServerMsg::Registered {
                result,
                retry_after_ms,
                reason,
                ..
            } => Some((*result, *retry_after_ms, reason.clone())),
            _ => None,
        })
    }

    /// Every subscribed client's roster equals the registry's.
    fn assert_converged(&self) {
        let mut truth: Vec<_> = self.reg.entries().collect();
        truth.sort_by_key(|e| e.nick);
        for c in self.reg.subscribers() {
            let mine: Vec<_> = self.clients[&c].0.entries().cloned().collect();
            assert_eq!(mine, truth, "client {c} disagrees");
            assert_eq!(self.clients[&c].0.version(), Some(self.reg.version()));
        }
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.reg.poll_event()).collect()
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.wall += d.as_millis() as u64;
    }
}

fn nick(s: &str) -> Nick {
    Nick::new(s).unwrap()
}

#[test]
fn joins_reach_everyone_as_one_delta_per_turn() {
    // 500 names from one address: a load test's host, with no per-host cap.
    let mut h = Harness::new(Config {
        max_clients_per_host: 0,
        ..Config::default()
    });
    let a = h.connect("127.0.0.1:1000");
    h.register(a, "alice", 1, 5000);
    let got = h.turn();
    assert_eq!(got[&a], 2, "REGISTERED and a one-page snapshot");
    assert_eq!(h.last_registered(a).unwrap().0, RegisterResult::Ok);
    // A storm of 500 joins in one turn: alice gets one delta; each newcomer REGISTERED + one snapshot.
    let mut new = Vec::new();
    for i in 0..500 {
        let c = h.connect(&format!("127.0.0.2:{}", 2000 + i));
        h.register(c, &format!("user{i}"), 100 + i as u64, 6000);
        new.push(c);
    }
    let got = h.turn();
    assert_eq!(got[&a], 1, "coalesced");
    for c in &new {
        assert_eq!(got[c], 2);
    }
    h.assert_converged();
    assert_eq!(h.reg.counts(), (501, 0, 0));
    let joined = h
        .events()
        .iter()
        .filter(|e| matches!(e, Event::Joined { .. }))
        .count();
    assert_eq!(joined, 501);
    // A quiet turn sends nothing.
    assert!(h.turn().is_empty());
}

#[test]
fn refusal_of_a_hostile_nickname_still_parses() {
    // Regression: the refusal quotes the nickname with `{:?}`, which turns each DEL into the 6 bytes
    // `\u{7f}`, so a 255-byte nickname can make the reason longer than MAX_REASON. The encoder used to cut it
    // at exactly 1024 bytes, here inside a '€', and the client dropped the whole REGISTERED as invalid UTF-8.
    // 18 bytes of `invalid nickname "` + 167 × 6 = 1020, so the second '€' spans bytes 1023..1026.
    let mut h = Harness::new(Config::default());
    let c = h.connect("127.0.0.1:1");
    let hostile = format!("{}€€", "\x7f".repeat(167));
    h.register(c, &hostile, 1, 5000);
    h.turn(); // Panics if the reply does not parse.
    let (r, _, reason) = h.last_registered(c).unwrap();
    assert_eq!(r, RegisterResult::InvalidNick);
    assert_eq!(
        reason.len(),
        1023,
        "cut before the '€' that crosses the cap"
    );
    assert!(reason.ends_with('€'));
}

#[test]
fn large_snapshots_and_deltas_are_paged() {
    let mut h = Harness::new(Config {
        page_bytes: 1000,
        ..Config::default()
    });
    let a = h.connect("127.0.0.1:1");
    h.register(a, "first", 1, 1);
    h.turn();
    for i in 0..100 {
        let c = h.connect(&format!("127.0.0.3:{}", 100 + i));
        h.register(c, &format!("n{i}"), i as u64, 1);
    }
    let got = h.turn();
    // 100 entries of about 20 bytes (nickname 1+3, instance 8, kind 1, `since` 1-6, address 4, port 2,
    // flaps 1) in 1000-byte messages that always leave room for a largest entry (75 bytes).
    assert!(got[&a] >= 3, "{}", got[&a]);
    let late = h.connect("127.0.0.4:1");
    h.register(late, "late", 9, 1);
    let got = h.turn();
    assert!(got[&late] >= 3, "{}", got[&late]);
    h.assert_converged();
}

#[test]
fn nickname_rules() {
    let mut h = Harness::new(Config {
        max_clients: 2,
        ..Config::default()
    });
    let a = h.connect("127.0.0.1:1");
    h.register(a, "alice", 1, 5000);
    h.turn();
    // Invalid nickname: refused with a reason the user can act on.
    let b = h.connect("127.0.0.1:2");
    h.register(b, "bad nick!", 2, 5001);
    h.turn();
    let (r, _, reason) = h.last_registered(b).unwrap();
    assert_eq!(r, RegisterResult::InvalidNick);
    assert!(reason.contains("letters and digits"), "{reason}");
    // Taken by an online client elsewhere: refused, with a retry hint, and the holder is probed.
    h.register(b, "alice", 2, 5001);
    h.turn();
    let (r, retry, reason) = h.last_registered(b).unwrap();
    assert_eq!(r, RegisterResult::NickTaken);
    assert_eq!(retry, 3000);
    assert!(reason.contains("in use"), "{reason}");
    assert_eq!(h.reg.poll_probe(), Some(a));
    // Roster full.
    h.register(b, "bob", 2, 5001);
    let c = h.connect("127.0.0.1:3");
    h.register(c, "carol", 3, 5002);
    h.turn();
    assert_eq!(h.last_registered(c).unwrap().0, RegisterResult::Full);
    // Re-registering a connection under another name is refused.
    h.register(b, "robert", 2, 5001);
    h.turn();
    assert_eq!(h.last_registered(b).unwrap().0, RegisterResult::BadRequest);
    let rejected = h
        .events()
        .iter()
        .filter(|e| matches!(e, Event::Rejected { .. }))
        .count();
    assert_eq!(rejected, 4);
    assert_eq!(h.reg.stats().rejections, 4);
    h.assert_converged();
}

#[test]
fn offline_online_restart_and_flaps() {
    let mut h = Harness::new(Config::default());
    let watcher = h.connect("127.0.0.1:9");
    h.register(watcher, "watcher", 9, 9);
    let a = h.connect("127.0.0.1:1");
    h.register(a, "alice", 1, 5000);
    h.turn();
    h.events();
    // Lost: offline, and everyone hears it.
    h.reg
        .connection_lost(h.now, h.wall, a, "heartbeats unanswered");
    h.turn();
    assert_eq!(
        h.events(),
        vec![Event::Offline {
            nick: nick("alice"),
            why: "heartbeats unanswered"
        }]
    );
    assert_eq!(
        h.clients[&watcher].0.get(&nick("alice")).unwrap().status,
        Status::Offline
    );
    // Back within the flap window: online again, one flap counted.
    h.advance(Duration::from_secs(5));
    let a2 = h.connect("127.0.0.1:2");
    h.register(a2, "alice", 2, 5000);
    h.turn();
    assert!(matches!(
        h.events()[..],
        [Event::Online {
            replaced: false,
            ..
        }]
    ));
    assert_eq!(
        h.reg.flapping().collect::<Vec<_>>(),
        vec![(nick("alice"), 1)]
    );
    // A new process on the same host and chat port, while the old association still looks alive: it takes
    // the entry over at once, no duplicate.
    let a3 = h.connect("127.0.0.1:3");
    h.register(a3, "alice", 3, 5000);
    h.turn();
    assert!(matches!(
        h.events()[..],
        [Event::Online { replaced: true, .. }]
    ));
    // The replaced association is still up, but holds no entry any more.
    assert_eq!(h.reg.counts(), (2, 0, 1));
    // The old association dying later changes nothing.
    h.reg.connection_lost(h.now, h.wall, a2, "lost");
    h.turn();
    assert!(h.events().is_empty());
    assert_eq!(h.reg.counts(), (2, 0, 0));
    h.assert_converged();
}

#[test]
fn same_process_on_a_new_association_is_silent() {
    let mut h = Harness::new(Config::default());
    let w = h.connect("127.0.0.1:9");
    h.register(w, "w", 9, 9);
    let a = h.connect("127.0.0.1:1");
    h.register(a, "alice", 7, 5000);
    h.turn();
    h.events();
    let before = h.clients[&w].0.get(&nick("alice")).cloned();
    // The client lost its association (e.g. the daemon was stopped) and comes back with the same instance.
    let a2 = h.connect("127.0.0.1:1");
    h.register(a2, "alice", 7, 5000);
    h.turn();
    assert!(h.events().is_empty(), "no online/offline noise");
    assert_eq!(h.clients[&w].0.get(&nick("alice")).cloned(), before);
    h.reg
        .connection_lost(h.now, h.wall, a, "old association timed out");
    h.turn();
    assert!(h.events().is_empty());
    assert_eq!(h.reg.counts(), (2, 0, 0));
}

#[test]
fn association_restart_grace() {
    let mut h = Harness::new(Config::default());
    let a = h.connect("127.0.0.1:1");
    h.register(a, "alice", 1, 5000);
    let b = h.connect("127.0.0.1:2");
    h.register(b, "bob", 2, 5001);
    h.turn();
    h.events();
    // alice's peer restarts and registers again in time: no offline.
    h.reg.connection_restarted(h.now, a);
    h.advance(Duration::from_secs(1));
    h.register(a, "alice", 11, 5000);
    // bob's restarts and never registers: offline after the grace period.
    h.reg.connection_restarted(h.now, b);
    h.turn();
    h.advance(Duration::from_secs(6));
    h.turn();
    let ev = h.events();
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::Offline { nick: n, .. } if *n == nick("bob"))),
        "{ev:?}"
    );
    assert!(
        !ev.iter()
            .any(|e| matches!(e, Event::Offline { nick: n, .. } if *n == nick("alice"))),
        "{ev:?}"
    );
}

#[test]
fn observers_see_the_roster_without_joining() {
    let mut h = Harness::new(Config::default());
    let a = h.connect("127.0.0.1:1");
    h.register(a, "alice", 1, 5000);
    h.turn();
    let o = h.connect("127.0.0.1:7");
    h.observe(o, false);
    let got = h.turn();
    assert_eq!(got[&o], 2);
    assert_eq!(h.clients[&o].0.entries().count(), 1);
    assert_eq!(h.reg.counts(), (1, 0, 1));
    assert!(
        h.reg.subscribers().all(|c| c != o),
        "not subscribed: no deltas"
    );
    assert!(h.events().contains(&Event::Observed {
        nick: "observer".into()
    }));
    // Its connection ending leaves the roster as it was.
    h.reg.connection_lost(h.now, h.wall, o, "shutdown");
    h.turn();
    assert_eq!(h.reg.counts(), (1, 0, 0));
}

#[test]
fn offline_entries_expire_after_the_ttl() {
    let mut h = Harness::new(Config {
        offline_ttl: Duration::from_secs(10),
        ..Config::default()
    });
    let w = h.connect("127.0.0.1:9");
    h.register(w, "w", 9, 9);
    let a = h.connect("127.0.0.1:1");
    h.register(a, "alice", 1, 5000);
    h.turn();
    h.reg.connection_lost(h.now, h.wall, a, "lost");
    h.turn();
    h.advance(Duration::from_secs(9));
    h.turn();
    assert!(h.clients[&w].0.get(&nick("alice")).is_some());
    h.advance(Duration::from_secs(5));
    h.turn();
    assert!(h.clients[&w].0.get(&nick("alice")).is_none());
    assert!(h.events().contains(&Event::Expired {
        nick: nick("alice")
    }));
    h.assert_converged();
}

#[test]
fn resync_gives_a_fresh_snapshot() {
    let mut h = Harness::new(Config::default());
    let a = h.connect("127.0.0.1:1");
    h.register(a, "alice", 1, 5000);
    h.turn();
    h.send(a, ClientMsg::Resync);
    let got = h.turn();
    assert_eq!(got[&a], 1);
    assert!(matches!(
        h.clients[&a].1.last(),
        Some(ServerMsg::Snapshot { .. })
    ));
    h.assert_converged();
}

#[test]
fn loaded_roster_starts_offline_and_keeps_its_version() {
    let mut h = Harness::new(Config::default());
    let saved = vec![Record {
        entry: wire::Entry {
            nick: nick("alice"),
            instance: 1,
            status: Status::Online,
            since_ms: 5,
            chat: "127.0.0.1:5000".parse::<SocketAddr>().unwrap(),
            flaps: 3,
            extra: None,
        },
        key: Some(KEY),
        host: None,
    }];
    assert_eq!(h.reg.load(image(saved, 40, 1234)), 1);
    assert_eq!(h.reg.counts(), (0, 1, 0));
    let e = h.reg.entries().next().unwrap();
    assert_eq!((e.status, e.since_ms, e.flaps), (Status::Offline, 1234, 3));
    let a = h.connect("127.0.0.1:2");
    h.register(a, "alice", 2, 5000);
    h.turn();
    assert_eq!(h.reg.version(), 41);
    assert_eq!(h.reg.counts(), (1, 0, 0));
}

#[test]
fn hostile_messages_are_counted_not_obeyed() {
    let mut h = Harness::new(Config::default());
    let a = h.connect("127.0.0.1:1");
    for junk in [&[][..], &[1], &[1, 0, 0], &[0xff; 300], &[2, 0]] {
        h.reg.handle_message(h.now, h.wall, a, junk);
    }
    assert_eq!(h.reg.stats().malformed, 5);
    assert!(h.turn().is_empty());
    // Messages from unknown connections are ignored.
    h.register(id(999), "ghost", 1, 1);
    assert!(h.turn().is_empty());
    let _ = Change::Removed(nick("x"));
}

#[test]
fn loopback_clients_are_shown_at_the_host_address() {
    let mut h = Harness::new(Config {
        host_ip: Some("192.0.2.10".parse().unwrap()),
        ..Config::default()
    });
    let a = h.connect("127.0.0.1:1");
    h.register(a, "local", 1, 5000);
    let b = h.connect("192.0.2.20:1");
    h.register(b, "remote", 2, 5001);
    h.turn();
    let chats: Vec<SocketAddr> = h.reg.entries().map(|e| e.chat).collect();
    assert!(chats.contains(&"192.0.2.10:5000".parse().unwrap()));
    assert!(chats.contains(&"192.0.2.20:5001".parse().unwrap()));
}

#[test]
fn after_a_stall_lost_associations_get_a_grace_period() {
    let mut h = Harness::new(Config::default());
    let w = h.connect("127.0.0.1:9");
    h.register(w, "w", 9, 9);
    let a = h.connect("127.0.0.1:1");
    h.register(a, "alice", 1, 5000);
    let b = h.connect("127.0.0.1:2");
    h.register(b, "bob", 2, 5001);
    h.turn();
    h.events();
    // The daemon was stopped: both clients gave up on it; alice comes back, bob really died.
    h.reg.note_stall(h.now, Duration::from_secs(10));
    h.reg
        .connection_lost(h.now, h.wall, a, "aborted its association");
    h.reg
        .connection_lost(h.now, h.wall, b, "aborted its association");
    h.turn();
    assert!(h.events().is_empty(), "no verdict yet");
    h.advance(Duration::from_secs(2));
    let a2 = h.connect("127.0.0.1:1");
    h.register(a2, "alice", 1, 5000);
    h.turn();
    h.advance(Duration::from_secs(4));
    h.turn();
    let ev = h.events();
    assert_eq!(
        ev,
        vec![Event::Offline {
            nick: nick("bob"),
            why: "restarted and did not register again"
        }]
    );
    h.assert_converged();
    // Outside the window, a loss is a loss again.
    h.advance(Duration::from_secs(20));
    h.reg.connection_lost(h.now, h.wall, a2, "lost");
    h.turn();
    assert!(matches!(h.events()[..], [Event::Offline { .. }]));
}

#[test]
fn a_liveness_only_member_is_listed_but_sent_no_roster() {
    let mut h = Harness::new(Config::default());
    let a = h.connect("127.0.0.1:1000");
    h.register(a, "alice", 1, 5000);
    h.turn();
    let quiet = h.connect("127.0.0.1:1001");
    h.send(
        quiet,
        ClientMsg::Register(Register {
            flags: flags::NO_ROSTER,
            instance: 2,
            nick: "svc".into(),
            chat_port: 5001,
            chat_ip: None,
        }),
    );
    let got = h.turn();
    assert_eq!(got[&quiet], 1, "REGISTERED only: no snapshot");
    assert_eq!(h.last_registered(quiet).unwrap().0, RegisterResult::Ok);
    assert_eq!(got[&a], 1, "alice hears of the new member");
    assert!(h.clients[&a].0.entries().any(|e| e.nick == nick("svc")));
    assert!(!h.reg.subscribers().any(|c| c == quiet));
    // Later changes do not reach it either, but it can still ask for the roster.
    let b = h.connect("127.0.0.1:1002");
    h.register(b, "bob", 3, 5002);
    assert!(!h.turn().contains_key(&quiet));
    h.send(quiet, ClientMsg::Resync);
    assert_eq!(h.turn()[&quiet], 1, "one snapshot page on request");
    h.assert_converged();
}

// ---- flow control: paced snapshots and held deltas ----------------------------------------------------------

/// 3 000 entries in pages of 2 000 bytes: about 45 pages, sent through a 16 000-byte send buffer.
fn big(cfg: Config) -> Harness {
    Harness::loaded(
        Config {
            page_bytes: 2000,
            ..cfg
        },
        3000,
    )
}

#[test]
fn a_snapshot_larger_than_the_send_buffer_is_paced_not_dropped() {
    let mut h = big(Config::default());
    let o = h.connect("127.0.0.1:7");
    h.limit(o, 16_000);
    h.observe(o, false);
    h.turn();
    let first = h.links[&o].queued.len();
    assert!(
        (6..=10).contains(&first),
        "{first} messages fit in the buffer"
    );
    assert!(h.links[&o].bytes > 14_000, "filled: {}", h.links[&o].bytes);
    assert_eq!(h.reg.stats().paced_waits, 1);
    assert_eq!(h.reg.stats().snapshots_paced, 1);
    // Nothing more until the buffer drains to half; then the pages go on where they stopped.
    h.ack(o, 1);
    let left = h.links[&o].queued.len();
    assert!(h.links[&o].bytes > 8000);
    h.turn();
    assert_eq!(h.links[&o].queued.len(), left, "no room reported yet");
    // Someone joins meanwhile: the observer asked for no deltas, so it holds none.
    let j = h.connect("127.0.0.2:1");
    h.register(j, "joiner", 5, 1);
    let mut turns = 0;
    while h.clients[&o].0.version().is_none() {
        h.ack(o, 8000);
        h.turn();
        turns += 1;
        assert!(turns < 100, "the snapshot never completed");
    }
    assert_eq!(h.clients[&o].0.entries().count(), 3000);
    assert_eq!(h.clients[&o].0.version(), Some(7));
    assert_eq!(h.reg.stats().deltas_held, 0);
    h.ack(o, usize::MAX);
    let st = *h.reg.stats();
    // Every page was handed out once: none dropped, none sent again.
    assert_eq!(h.snapshot_versions(o), vec![7]);
    assert_eq!(st.snapshots, 2, "the observer's and the joiner's");
    let mine = h.clients[&o].1.len() as u64 - 1;
    assert!(mine >= 40, "REGISTERED + {mine} pages");
    let joiners = h.clients[&j].1.len() as u64 - 1;
    assert_eq!(
        st.snapshot_pages,
        mine + joiners,
        "REGISTERED + pages, each"
    );
    assert_eq!(h.clients[&j].0.entries().count(), 3001);
    assert!(
        st.paced_resumes >= 5 && st.paced_waits == st.paced_resumes,
        "{st:?}"
    );
    assert!(h.reg.paced.is_empty() && h.reg.snapshot.upgrade().is_none());
}

#[test]
fn deltas_during_a_paced_snapshot_follow_its_last_page_without_a_gap() {
    let mut h = big(Config::default());
    let a = h.connect("127.0.0.1:7");
    h.limit(a, 16_000);
    h.register(a, "alice", 1, 1);
    h.turn();
    let snapshot = h.reg.version();
    // Others join while alice's snapshot trickles out: one delta per turn.
    let mut turns = 0;
    while h.clients[&a].0.version().is_none() || !h.links[&a].queued.is_empty() {
        if turns < 10 {
            let c = h.connect(&format!("127.0.0.2:{turns}"));
            h.register(c, &format!("joiner{turns}"), 100 + turns, 1);
        }
        h.ack(a, 8000);
        h.turn();
        turns += 1;
        assert!(turns < 100, "alice never caught up");
    }
    // One snapshot, at the version of her turn, then every delta from that version on, in order.
    assert_eq!(h.snapshot_versions(a), vec![snapshot]);
    let deltas: Vec<(u64, u64)> = h.clients[&a]
        .1
        .iter()
        .filter_map(|m| match m {
            ServerMsg::Delta { from, to, .. } => Some((*from, *to)),
            _ => None,
        })
        .collect();
    assert_eq!(deltas.len(), 10, "{deltas:?}");
    assert_eq!(deltas[0].0, snapshot);
    assert!(deltas.windows(2).all(|w| w[0].1 == w[1].0), "{deltas:?}");
    assert!(h.reg.stats().deltas_held >= 5, "{:?}", h.reg.stats());
    assert!(h.reg.subscribers().any(|c| c == a), "synced once caught up");
    // From here on, deltas reach her as they are broadcast.
    let late = h.connect("127.0.0.3:1");
    h.register(late, "late", 999, 1);
    h.turn();
    h.ack(a, usize::MAX);
    h.assert_converged();
    assert_eq!(h.reg.stats().held_overflows, 0);
}

#[test]
fn held_deltas_past_the_bound_restart_the_snapshot_at_the_newer_version() {
    let mut h = big(Config {
        max_held_deltas: 3,
        ..Config::default()
    });
    let a = h.connect("127.0.0.1:7");
    h.limit(a, 16_000);
    h.register(a, "alice", 1, 1);
    h.turn();
    let first = h.reg.version();
    // Alice's peer acknowledges nothing while five others join, one per turn.
    for i in 0..5 {
        let c = h.connect(&format!("127.0.0.2:{i}"));
        h.register(c, &format!("joiner{i}"), 100 + i, 1);
        h.turn();
    }
    let st = *h.reg.stats();
    assert_eq!((st.deltas_held, st.held_overflows), (3, 1), "{st:?}");
    let pace = &h.reg.paced[&a];
    assert!(
        pace.held.len() == 1 && pace.snapshot.is_some(),
        "the page handed back still goes first, then the new snapshot"
    );
    let restarted = pace.version.unwrap();
    assert!(restarted > first);
    let mut turns = 0;
    while h.clients[&a].0.version() != Some(h.reg.version()) || !h.links[&a].queued.is_empty() {
        h.ack(a, 8000);
        h.turn();
        turns += 1;
        assert!(turns < 200, "alice never caught up");
    }
    // She read part of the first snapshot, dropped it for the second and has the roster whole.
    assert_eq!(h.snapshot_versions(a), vec![first, restarted]);
    assert_eq!(
        h.reg.stats().snapshots,
        1 + 1 + 5,
        "alice twice, each joiner once"
    );
    h.assert_converged();
}

#[test]
fn a_slow_subscriber_holds_deltas_instead_of_being_resynced() {
    let mut h = Harness::new(Config {
        page_bytes: 2000,
        ..Config::default()
    });
    let a = h.connect("127.0.0.1:1");
    h.register(a, "slow", 1, 1);
    h.turn();
    // Synced; then its association's buffer turns out small and its peer stops acknowledging.
    h.limit(a, 3000);
    let mut joined = 0;
    while h.reg.stats().paced_waits == 0 {
        for _ in 0..30 {
            let c = h.connect(&format!("127.0.0.2:{joined}"));
            h.register(c, &format!("joiner{joined}"), 100 + joined, 1);
            joined += 1;
        }
        h.turn();
        assert!(joined < 1000);
    }
    assert!(
        h.reg.subscribers().all(|c| c != a),
        "off the broadcast list"
    );
    for _ in 0..3 {
        let c = h.connect(&format!("127.0.0.2:{joined}"));
        h.register(c, &format!("joiner{joined}"), 100 + joined, 1);
        joined += 1;
        h.turn();
    }
    assert_eq!(h.reg.stats().deltas_held, 3);
    let mut turns = 0;
    while h.reg.subscribers().all(|c| c != a) || !h.links[&a].queued.is_empty() {
        h.ack(a, 1000);
        h.turn();
        turns += 1;
        assert!(turns < 100, "the slow client never caught up");
    }
    // Every delta in order (the harness fails on a gap), and no second snapshot.
    assert_eq!(h.snapshot_versions(a).len(), 1);
    assert_eq!(h.reg.stats().held_overflows, 0);
    h.assert_converged();
}

#[test]
fn clients_snapshotting_one_version_share_its_pages_until_the_last_is_done() {
    let mut h = big(Config::default());
    let (o1, o2) = (h.connect("127.0.0.1:7"), h.connect("127.0.0.1:8"));
    h.limit(o1, 16_000);
    h.limit(o2, 16_000);
    h.observe(o1, false);
    h.turn();
    // A later turn, the same version: the same encoding, not a second one.
    h.observe(o2, false);
    h.turn();
    let shared = h
        .reg
        .snapshot
        .upgrade()
        .expect("the snapshot is held while in use");
    assert!(Arc::ptr_eq(
        &h.reg.paced[&o1].snapshot.as_ref().unwrap().0,
        &shared
    ));
    assert!(Arc::ptr_eq(
        &h.reg.paced[&o2].snapshot.as_ref().unwrap().0,
        &shared
    ));
    // Its pages are in flight in both buffers; what each client holds beyond them is one cursor.
    assert_eq!(Arc::strong_count(&shared), 3);
    assert!(h.reg.paced[&o1].deltas.is_empty() && h.reg.paced[&o1].held.len() == 1);
    drop(shared);
    let mut turns = 0;
    while h.clients[&o1].0.version().is_none() {
        h.ack(o1, 8000);
        h.turn();
        turns += 1;
        assert!(turns < 100);
    }
    assert!(h.reg.snapshot.upgrade().is_some(), "o2 still reads it");
    assert!(
        !h.reg.paced.contains_key(&o1),
        "a finished client holds nothing"
    );
    while h.clients[&o2].0.version().is_none() {
        h.ack(o2, 8000);
        h.turn();
        turns += 1;
        assert!(turns < 200);
    }
    for c in [o1, o2] {
        h.ack(c, usize::MAX);
    }
    assert!(
        h.reg.snapshot.upgrade().is_none(),
        "freed with its last reader"
    );
    assert!(h.reg.paced.is_empty() && h.reg.pace_ready.is_empty());
}

#[test]
fn a_nickname_belongs_to_its_key_online_and_offline() {
    let mut h = Harness::new(Config::default());
    let w = h.connect("10.0.0.9:9");
    h.register(w, "w", 9, 9);
    let a = h.connect("10.0.0.1:1");
    h.register(a, "alice", 1, 5000);
    h.turn();
    // Online: another key claiming her chat address and instance is refused, and she is not even probed.
    let m = h.connect_as("10.0.0.1:2", MALLORY);
    h.register(m, "alice", 1, 5000);
    h.turn();
    let (r, retry, reason) = h.last_registered(m).unwrap();
    assert_eq!(r, RegisterResult::NickOwned);
    assert_eq!(retry, 0);
    assert!(reason.contains("mpd release alice"), "{reason}");
    assert!(
        !reason.contains("10.0.0.1"),
        "the refusal reveals where she is: {reason}"
    );
    assert_eq!(h.reg.poll_probe(), None);
    // Offline: the same.
    h.reg.connection_lost(h.now, h.wall, a, "lost");
    h.turn();
    let m2 = h.connect_as("10.0.0.7:2", MALLORY);
    h.register(m2, "alice", 7, 6000);
    h.turn();
    assert_eq!(h.last_registered(m2).unwrap().0, RegisterResult::NickOwned);
    assert_eq!(h.reg.stats().owned_refusals, 2);
    assert!(
        h.clients[&w]
            .0
            .get(&nick("alice"))
            .is_some_and(|e| e.status == Status::Offline)
    );
    // Her own key takes it back, from anywhere.
    let a2 = h.connect("10.0.0.3:1");
    h.register(a2, "alice", 3, 7000);
    h.turn();
    assert_eq!(h.last_registered(a2).unwrap().0, RegisterResult::Ok);
    h.assert_converged();
}

#[test]
fn the_binding_outlives_the_entry_and_then_lapses() {
    let day = Duration::from_secs(24 * 3600);
    let mut h = Harness::new(Config {
        offline_ttl: day,
        binding_ttl: 90 * day,
        ..Config::default()
    });
    let a = h.connect("10.0.0.1:1");
    h.register(a, "alice", 1, 5000);
    h.turn();
    h.reg.connection_lost(h.now, h.wall, a, "lost");
    h.turn();
    h.advance(2 * day);
    h.turn();
    assert_eq!(h.reg.counts(), (0, 0, 0), "the entry expired");
    assert_eq!(h.reg.owner(&nick("alice")), Some(KEY));
    // The binding is saved and loaded with the roster.
    let img = h.reg.image(h.wall);
    assert_eq!(img.bindings.len(), 1);
    let mut again = Harness::new(Config::default());
    again.reg.load(img);
    assert_eq!(again.reg.owner(&nick("alice")), Some(KEY));
    let m = h.connect_as("10.0.0.7:2", MALLORY);
    h.register(m, "alice", 7, 6000);
    h.turn();
    assert_eq!(h.last_registered(m).unwrap().0, RegisterResult::NickOwned);
    h.advance(89 * day);
    h.turn();
    assert_eq!(h.reg.owner(&nick("alice")), None, "the binding lapsed");
    assert_eq!(h.reg.stats().bindings_expired, 1);
    h.register(m, "alice", 7, 6000);
    h.turn();
    assert_eq!(h.last_registered(m).unwrap().0, RegisterResult::Ok);
    assert_eq!(h.reg.owner(&nick("alice")), Some(MALLORY));
}

#[test]
fn an_operator_releases_an_offline_nickname_not_an_online_one() {
    let mut h = Harness::new(Config::default());
    let w = h.connect("10.0.0.9:9");
    h.register(w, "w", 9, 9);
    let a = h.connect("10.0.0.1:1");
    h.register(a, "alice", 1, 5000);
    h.turn();
    assert_eq!(
        h.reg.release(h.wall, &nick("alice")),
        Err(ReleaseError::Online)
    );
    assert_eq!(
        h.reg.release(h.wall, &nick("nobody")),
        Err(ReleaseError::Unknown)
    );
    h.reg.connection_lost(h.now, h.wall, a, "lost");
    h.turn();
    assert_eq!(h.reg.release(h.wall, &nick("alice")), Ok(()));
    h.turn();
    assert!(
        h.clients[&w].0.get(&nick("alice")).is_none(),
        "removed from the roster"
    );
    assert!(h.events().contains(&Event::Released {
        nick: nick("alice")
    }));
    let m = h.connect_as("10.0.0.7:2", MALLORY);
    h.register(m, "alice", 7, 6000);
    h.turn();
    assert_eq!(h.last_registered(m).unwrap().0, RegisterResult::Ok);
    h.assert_converged();
}

/// `n` registers `nick` from `addr` on a new connection and the turn ends; returns the connection and the
/// result.
fn join_from(h: &mut Harness, addr: &str, nick: &str, instance: u64) -> (AssocId, RegisterResult) {
    let c = h.connect(addr);
    h.register(c, nick, instance, 7000);
    h.turn();
    (c, h.last_registered(c).unwrap().0)
}

#[test]
fn one_host_is_capped_and_other_hosts_are_not() {
    let mut h = Harness::new(Config {
        max_clients_per_host: 3,
        host_ip: Some("10.0.0.1".parse().unwrap()),
        ..Config::default()
    });
    let watcher = join_from(&mut h, "10.0.0.9:1", "watcher", 99).0;
    let mut conns = Vec::new();
    for i in 0..3 {
        let (c, r) = join_from(
            &mut h,
            &format!("10.0.0.5:{}", 100 + i),
            &format!("m{i}"),
            i,
        );
        assert_eq!(r, RegisterResult::Ok);
        conns.push(c);
    }
    // The fourth name from that host is refused, with the host, the cap and what to do.
    let (_, r) = join_from(&mut h, "10.0.0.5:200", "m3", 3);
    let (_, _, reason) = h
        .last_registered(h.clients.keys().copied().max().unwrap())
        .unwrap();
    assert_eq!(r, RegisterResult::Full);
    assert!(
        reason.contains("from 10.0.0.5 (3,") && reason.contains("--max-clients-per-host"),
        "{reason}"
    );
    assert_eq!(h.reg.stats().host_refusals, 1);
    assert!(!h.reg.by_nick.contains_key(&nick("m3")));
    // Offline entries count too.
    h.reg.connection_lost(h.now, h.wall, conns[0], "lost");
    h.turn();
    assert_eq!(
        join_from(&mut h, "10.0.0.5:201", "m4", 4).1,
        RegisterResult::Full
    );
    // But a returning client takes its own entry back, and another host is not affected at all.
    assert_eq!(
        join_from(&mut h, "10.0.0.5:202", "m0", 10).1,
        RegisterResult::Ok
    );
    assert_eq!(
        join_from(&mut h, "10.0.0.6:1", "other", 5).1,
        RegisterResult::Ok
    );
    assert_eq!(h.reg.stats().host_refusals, 2);
    // A client on the daemon's host counts against the daemon's address whichever way it connects.
    for i in 0..3 {
        let addr = if i % 2 == 0 { "127.0.0.1" } else { "10.0.0.1" };
        let r = join_from(
            &mut h,
            &format!("{addr}:{}", 300 + i),
            &format!("local{i}"),
            20 + i,
        );
        assert_eq!(r.1, RegisterResult::Ok);
    }
    assert_eq!(
        join_from(&mut h, "127.0.0.1:400", "local3", 30).1,
        RegisterResult::Full
    );
    assert_eq!(h.reg.busiest_host(), Some(("10.0.0.1".parse().unwrap(), 3)));
    assert!(h.reg.subscribers().any(|c| c == watcher));
    h.assert_converged();
}

#[test]
fn entries_saved_before_owned_nicknames_are_claimed_by_the_first_key() {
    let mut h = Harness::new(Config::default());
    let old = Record {
        entry: wire::Entry {
            nick: nick("legacy"),
            instance: 1,
            status: Status::Offline,
            since_ms: 5,
            chat: "10.0.0.1:5000".parse::<SocketAddr>().unwrap(),
            flaps: 0,
            extra: None,
        },
        key: None,
        host: None,
    };
    h.reg.load(image(vec![old], 3, 10));
    assert_eq!(h.reg.owner(&nick("legacy")), None);
    let m = h.connect_as("10.0.0.7:2", MALLORY);
    h.register(m, "legacy", 7, 6000);
    h.turn();
    assert_eq!(h.last_registered(m).unwrap().0, RegisterResult::Ok);
    assert_eq!(h.reg.owner(&nick("legacy")), Some(MALLORY));
}

#[test]
fn a_hosts_offline_entries_are_capped_oldest_first() {
    let mut h = Harness::new(Config {
        max_offline_per_host: 2,
        ..Config::default()
    });
    let watcher = join_from(&mut h, "10.0.0.9:1", "watcher", 99).0;
    let elsewhere = join_from(&mut h, "10.0.0.6:1", "elsewhere", 98).0;
    let conns: Vec<AssocId> = (0..4)
        .map(|i| {
            join_from(
                &mut h,
                &format!("10.0.0.5:{}", 100 + i),
                &format!("g{i}"),
                i,
            )
            .0
        })
        .collect();
    h.reg.connection_lost(h.now, h.wall, elsewhere, "lost");
    // g0 goes offline first, then g2, g1, g3: the oldest offline goes when a third is offline.
    for i in [0, 2, 1, 3] {
        h.advance(Duration::from_secs(1));
        h.reg.connection_lost(h.now, h.wall, conns[i], "lost");
        h.turn();
    }
    let evicted: Vec<Event> = h
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::Evicted { .. }))
        .collect();
    let host: IpAddr = "10.0.0.5".parse().unwrap();
    assert_eq!(
        evicted,
        vec![
            Event::Evicted {
                nick: nick("g0"),
                host
            },
            Event::Evicted {
                nick: nick("g2"),
                host
            }
        ]
    );
    assert_eq!(h.reg.stats().host_evictions, 2);
    // The two most recent stay, offline; the other host's offline entry is untouched.
    let roster = &h.clients[&watcher].0;
    for (n, there) in [
        ("g0", false),
        ("g2", false),
        ("g1", true),
        ("g3", true),
        ("elsewhere", true),
    ] {
        assert_eq!(roster.get(&nick(n)).is_some(), there, "{n}");
    }
    assert_eq!(h.reg.counts(), (1, 3, 0));
    h.assert_converged();
    // An evicted name is free again, and registering it from that host is a new entry.
    assert_eq!(
        join_from(&mut h, "10.0.0.5:300", "g0", 50).1,
        RegisterResult::Ok
    );
}

#[test]
fn a_saved_roster_is_held_to_the_caps_per_host() {
    let mut h = Harness::new(Config {
        max_clients_per_host: 6,
        max_offline_per_host: 4,
        ..Config::default()
    });
    let entry = |n: String, i: u64, chat: &str| WireEntry {
        nick: nick(&n),
        instance: i,
        status: Status::Offline,
        since_ms: 1_699_999_000_000 + i,
        chat: chat.parse().unwrap(),
        flaps: 0,
        extra: None,
    };
    let x: IpAddr = "10.0.0.5".parse().unwrap();
    // Ten registered from 10.0.0.5 (their chat addresses say otherwise: the saved host is what counts),
    // and two from a file without hosts, counted by their chat address.
    let mut saved: Vec<Record> = (0..10)
        .map(|i| Record {
            entry: entry(format!("x{i}"), i, &format!("10.1.0.{i}:7000")),
            key: Some(KEY),
            host: Some(x),
        })
        .collect();
    saved.extend((0..2).map(|i| Record::from(entry(format!("y{i}"), i, "10.0.0.6:7000"))));
    assert_eq!(h.reg.load(image(saved, 9, 1_699_999_500_000)), 6);
    assert_eq!(h.reg.stats().host_evictions, 6);
    assert!(h.reg.take_unsaved(), "the trimmed roster is saved again");
    // The four most recent from 10.0.0.5 are kept.
    let mut kept: Vec<String> = h.reg.entries().map(|e| e.nick.to_string()).collect();
    kept.sort();
    assert_eq!(kept, ["x6", "x7", "x8", "x9", "y0", "y1"]);
    let hosts: Vec<(String, Option<IpAddr>)> = h
        .reg
        .image(h.wall)
        .records
        .into_iter()
        .filter(|r| r.entry.nick.as_str().starts_with('x'))
        .map(|r| (r.entry.nick.to_string(), r.host))
        .collect();
    assert!(hosts.iter().all(|(_, host)| *host == Some(x)), "{hosts:?}");
    // What was loaded counts: two more names from 10.0.0.5 fit under its cap of six, a third does not.
    assert_eq!(
        join_from(&mut h, "10.0.0.5:1", "new0", 1).1,
        RegisterResult::Ok
    );
    assert_eq!(
        join_from(&mut h, "10.0.0.5:2", "new1", 2).1,
        RegisterResult::Ok
    );
    assert_eq!(
        join_from(&mut h, "10.0.0.5:3", "new2", 3).1,
        RegisterResult::Full
    );
    // Loaded entries are among the host's offline ones: a fifth going offline makes the oldest (x6) go.
    let new0 = h.reg.by_nick[&nick("new0")];
    let conn = h.reg.entries[new0].conn.unwrap();
    h.advance(Duration::from_secs(1));
    h.reg.connection_lost(h.now, h.wall, conn, "lost");
    h.turn();
    assert!(
        !h.reg.by_nick.contains_key(&nick("x6")),
        "the oldest offline one made room"
    );
    assert!(h.reg.by_nick.contains_key(&nick("x7")));
    assert_eq!(h.reg.stats().host_evictions, 7);
}

#[test]
fn a_one_shot_sender_claims_its_nickname_a_reader_does_not() {
    let mut h = Harness::new(Config::default());
    let observe = |h: &mut Harness, key: PublicKey, nick: &str, claim: bool| {
        let c = h.connect_as("10.0.0.5:1", key);
        let f = flags::OBSERVER | if claim { flags::CLAIM } else { 0 };
        h.send(
            c,
            ClientMsg::Register(Register {
                flags: f,
                instance: 1,
                nick: nick.into(),
                chat_port: 0,
                chat_ip: None,
            }),
        );
        h.turn();
        h.last_registered(c).unwrap().0
    };
    // `mpc list` under any name binds nothing.
    assert_eq!(observe(&mut h, MALLORY, "carol", false), RegisterResult::Ok);
    assert_eq!(h.reg.owner(&nick("carol")), None);
    // `mpc send` as carol binds carol to her key, without a roster entry; then only her key may.
    assert_eq!(observe(&mut h, KEY, "carol", true), RegisterResult::Ok);
    assert_eq!(h.reg.owner(&nick("carol")), Some(KEY));
    assert_eq!(h.reg.counts(), (0, 0, 2));
    assert_eq!(
        observe(&mut h, MALLORY, "carol", true),
        RegisterResult::NickOwned
    );
    assert_eq!(observe(&mut h, KEY, "carol", true), RegisterResult::Ok);
    // The binding is saved, and holds for a member's registration too.
    assert_eq!(h.reg.image(h.wall).bindings.len(), 1);
    let m = h.connect_as("10.0.0.7:2", MALLORY);
    h.register(m, "carol", 7, 6000);
    h.turn();
    assert_eq!(h.last_registered(m).unwrap().0, RegisterResult::NickOwned);
}

/// The answers `c` received, in order: (request, refusal).
fn answers(h: &Harness, c: AssocId) -> Vec<(wire::Request, Option<String>)> {
    h.clients[&c]
        .1
        .iter()
        .filter_map(|m| match m {
            ServerMsg::Answer {
                request,
                ok,
                reason,
            } => Some((*request, (!ok).then(|| reason.clone()))),
            _ => None,
        })
        .collect()
}

fn channel(s: &str) -> crate::group::ChannelName {
    crate::group::ChannelName::new(s).unwrap()
}

#[test]
fn channels_and_presence_are_roster_fields_every_client_receives() {
    let mut h = Harness::new(Config::default());
    let a = h.connect("10.0.0.1:9");
    let b = h.connect_as("10.0.0.2:9", PublicKey([2; 32]));
    h.register(a, "alice", 1, 4000);
    h.register(b, "bob", 2, 4000);
    h.turn();
    h.send(
        a,
        ClientMsg::Join {
            channel: channel("#ops"),
        },
    );
    h.send(
        a,
        ClientMsg::Join {
            channel: channel("#dev"),
        },
    );
    // Joining again is no error and no change.
    h.send(
        a,
        ClientMsg::Join {
            channel: channel("#ops"),
        },
    );
    h.send(
        a,
        ClientMsg::Away {
            message: Some("lunch\u{1b}[2J\nback at 2".into()),
        },
    );
    let v = h.reg.version();
    h.turn();
    assert_eq!(h.reg.version(), v, "one turn, one delta");
    assert_eq!(
        answers(&h, a),
        vec![
            (wire::Request::Join, None),
            (wire::Request::Join, None),
            (wire::Request::Join, None),
            (wire::Request::Away, None)
        ]
    );
    let seen = h.clients[&b].0.get(&nick("alice")).unwrap().clone();
    assert_eq!(seen.channels(), &[channel("#dev"), channel("#ops")]);
    // One line, no escapes: every client shows it in its list.
    assert_eq!(seen.away(), Some("lunch back at 2"));
    h.assert_converged();
    assert_eq!(h.reg.stats().channel_changes, 2);

    h.send(
        a,
        ClientMsg::Part {
            channel: channel("#dev"),
        },
    );
    h.send(
        a,
        ClientMsg::Part {
            channel: channel("#nope"),
        },
    );
    h.send(a, ClientMsg::Away { message: None });
    h.turn();
    let tail: Vec<_> = answers(&h, a).into_iter().skip(4).collect();
    assert_eq!(tail[0], (wire::Request::Part, None));
    assert_eq!(
        tail[1],
        (wire::Request::Part, Some("you are not in #nope".into()))
    );
    let seen = h.clients[&b].0.get(&nick("alice")).unwrap().clone();
    assert_eq!(seen.channels(), &[channel("#ops")]);
    assert_eq!(seen.away(), None);
    h.assert_converged();
    let ev = h.events();
    assert!(ev.contains(&Event::Channel {
        nick: nick("alice"),
        channel: channel("#dev"),
        joined: false
    }));
    assert!(ev.contains(&Event::Away {
        nick: nick("alice"),
        away: false
    }));

    // Bounded: past the cap, a refusal that says what to do.
    for i in 0..crate::group::MAX_CHANNELS_PER_CLIENT {
        h.send(
            b,
            ClientMsg::Join {
                channel: channel(&format!("#c{i}")),
            },
        );
    }
    h.send(
        b,
        ClientMsg::Join {
            channel: channel("#onemore"),
        },
    );
    h.turn();
    let last = answers(&h, b).pop().unwrap();
    assert!(
        last.1.as_deref().is_some_and(|r| r.contains("part")),
        "{last:?}"
    );
    assert_eq!(
        h.clients[&a].0.get(&nick("bob")).unwrap().channels().len(),
        crate::group::MAX_CHANNELS_PER_CLIENT
    );
    h.assert_converged();

    // An observer has no entry to change.
    let o = h.connect("10.0.0.3:9");
    h.observe(o, false);
    h.send(
        o,
        ClientMsg::Join {
            channel: channel("#ops"),
        },
    );
    h.turn();
    assert!(
        answers(&h, o)[0]
            .1
            .as_deref()
            .is_some_and(|r| r.contains("register first"))
    );
}

#[test]
fn channels_stay_with_an_offline_entry_and_survive_a_save() {
    let mut h = Harness::new(Config::default());
    let a = h.connect("10.0.0.1:9");
    h.register(a, "alice", 1, 4000);
    h.send(
        a,
        ClientMsg::Join {
            channel: channel("#ops"),
        },
    );
    h.send(
        a,
        ClientMsg::Away {
            message: Some("away".into()),
        },
    );
    h.turn();
    h.reg.connection_lost(h.now, h.wall, a, "left");
    h.turn();
    let e = h.reg.entries().find(|e| e.nick == nick("alice")).unwrap();
    assert_eq!(
        (e.status, e.channels()),
        (Status::Offline, &[channel("#ops")][..])
    );
    let img = h.reg.image(h.wall);
    let decoded = saved::decode(&saved::encode(&img)).unwrap().image;
    let mut again = Harness::new(Config::default());
    again.reg.load(decoded);
    let e = again
        .reg
        .entries()
        .find(|e| e.nick == nick("alice"))
        .unwrap();
    assert_eq!(e.channels(), &[channel("#ops")]);
    assert_eq!(e.away(), Some("away"));
}

#[test]
fn a_rename_moves_the_entry_and_keeps_the_old_name_bound() {
    let mut h = Harness::new(Config::default());
    let a = h.connect("10.0.0.1:9");
    let b = h.connect_as("10.0.0.2:9", PublicKey([2; 32]));
    h.register(a, "alice", 1, 4000);
    h.register(b, "bob", 2, 4000);
    h.send(
        a,
        ClientMsg::Join {
            channel: channel("#ops"),
        },
    );
    h.turn();
    for (to, says) in [("bob", "another user's key"), ("b!b", "invalid nickname")] {
        h.send(a, ClientMsg::Rename { nick: to.into() });
        h.turn();
        let last = answers(&h, a).pop().unwrap();
        assert_eq!(last.0, wire::Request::Rename);
        assert!(
            last.1.as_deref().is_some_and(|r| r.contains(says)),
            "{last:?}"
        );
    }
    h.send(
        a,
        ClientMsg::Rename {
            nick: "alicia".into(),
        },
    );
    h.turn();
    assert_eq!(answers(&h, a).pop().unwrap(), (wire::Request::Rename, None));
    // Bob saw it as a rename, in one delta: the old entry removed (saying where it went), the new one.
    let delta = h.clients[&b].1.iter().rev().find_map(|m| match m {
        ServerMsg::Delta { entries, .. } => Some(entries.clone()),
        _ => None,
    });
    let delta = delta.unwrap();
    assert_eq!(delta[0].status, Status::Removed);
    assert_eq!(delta[0].renamed_to(), Some(nick("alicia")));
    assert_eq!(delta[1].nick, nick("alicia"));
    assert_eq!(delta[1].channels(), &[channel("#ops")]);
    h.assert_converged();
    assert_eq!(h.reg.owner(&nick("alicia")), Some(KEY));
    assert_eq!(
        h.reg.owner(&nick("alice")),
        Some(KEY),
        "the old name stays hers"
    );
    // Someone else cannot take the old name; she can take it back.
    let m = h.connect_as("10.0.0.3:9", PublicKey([3; 32]));
    h.register(m, "alice", 3, 4000);
    h.turn();
    assert_eq!(h.last_registered(m).unwrap().0, RegisterResult::NickOwned);
    h.send(
        a,
        ClientMsg::Rename {
            nick: "alice".into(),
        },
    );
    h.turn();
    assert_eq!(answers(&h, a).pop().unwrap(), (wire::Request::Rename, None));
    assert!(h.clients[&b].0.get(&nick("alice")).is_some());
    h.assert_converged();
    // Another key cannot rename onto a bound name either.
    h.send(
        b,
        ClientMsg::Rename {
            nick: "alicia".into(),
        },
    );
    h.turn();
    let last = answers(&h, b).pop().unwrap();
    assert!(
        last.1
            .as_deref()
            .is_some_and(|r| r.contains("another user's key")),
        "{last:?}"
    );
}

/// Registers `nick` as `key` on a new connection from `addr`; returns the connection, the result and the
/// reason.
fn join_as(
    h: &mut Harness,
    addr: &str,
    key: PublicKey,
    nick: &str,
    instance: u64,
) -> (AssocId, RegisterResult, String) {
    let c = h.connect_as(addr, key);
    h.register(c, nick, instance, 7000);
    h.turn();
    let (r, retry, reason) = h.last_registered(c).unwrap();
    if r != RegisterResult::Ok {
        assert_eq!(retry, 0, "a look-alike is not worth retrying: {reason}");
    }
    (c, r, reason)
}

#[test]
fn a_unicode_nickname_registers_in_nfc() {
    let mut h = Harness::new(Config::default());
    let (a, r, _) = join_as(&mut h, "10.0.0.1:1", KEY, "Jose\u{301}", 1);
    assert_eq!(r, RegisterResult::Ok);
    assert_eq!(h.reg.owner(&nick("José")), Some(KEY));
    assert_eq!(h.reg.entries().next().unwrap().nick.as_str(), "Jos\u{e9}");
    // The composed spelling is the same nickname: its owner takes it back after leaving.
    h.reg.connection_lost(h.now, h.wall, a, "lost");
    let (_, r, _) = join_as(&mut h, "10.0.0.1:2", KEY, "José", 2);
    assert_eq!(r, RegisterResult::Ok);
    assert_eq!(h.reg.counts(), (1, 0, 0));
    // A refused character is named with its code point.
    let (_, r, why) = join_as(&mut h, "10.0.0.1:3", KEY, "snow☃", 3);
    assert_eq!(r, RegisterResult::InvalidNick);
    assert!(why.contains("'☃' (U+2603)"), "{why}");
    h.assert_converged();
}

#[test]
fn a_nickname_differing_only_in_case_is_refused_naming_the_existing_one() {
    let mut h = Harness::new(Config::default());
    let (b, r, _) = join_as(&mut h, "10.0.0.1:1", KEY, "bob", 1);
    assert_eq!(r, RegisterResult::Ok);
    for (key, name) in [(MALLORY, "Bob"), (MALLORY, "BOB"), (KEY, "BoB")] {
        let (_, r, why) = join_as(&mut h, "10.0.0.2:1", key, name, 2);
        assert_eq!(r, RegisterResult::NickTaken, "{name}");
        assert!(
            why.contains(&format!("\"{name}\" is taken"))
                && why.contains("\"bob\"")
                && why.contains("only in case"),
            "{why}"
        );
    }
    // Offline, bob is still in the roster: still refused.
    h.reg.connection_lost(h.now, h.wall, b, "lost");
    h.turn();
    let (_, r, why) = join_as(&mut h, "10.0.0.2:2", MALLORY, "Bob", 3);
    assert_eq!(r, RegisterResult::NickTaken);
    assert!(why.contains("\"bob\" is already in the roster"), "{why}");
    // ß folds to ss.
    let (_, r, _) = join_as(&mut h, "10.0.0.3:1", KEY, "Strauß", 4);
    assert_eq!(r, RegisterResult::Ok);
    let (_, r, why) = join_as(&mut h, "10.0.0.4:1", MALLORY, "STRAUSS", 5);
    assert_eq!(r, RegisterResult::NickTaken);
    assert!(why.contains("\"Strauß\""), "{why}");
    assert_eq!(h.reg.counts().0 + h.reg.counts().1, 2);
    h.assert_converged();
}

#[test]
fn a_confusable_nickname_is_refused_naming_the_one_it_resembles() {
    let mut h = Harness::new(Config::default());
    let (_, r, _) = join_as(&mut h, "10.0.0.1:1", KEY, "alice", 1);
    assert_eq!(r, RegisterResult::Ok);
    // A Cyrillic а (U+0430).
    let (_, r, why) = join_as(&mut h, "10.0.0.2:1", MALLORY, "\u{430}lice", 2);
    assert_eq!(r, RegisterResult::NickTaken);
    assert!(
        why.contains("\"\u{430}lice\" (with Cyrillic '\u{430}', U+0430) looks like \"alice\", who is already in the roster"),
        "{why}"
    );
    // Digits for letters, letter pairs for letters.
    for (name, like) in [("a1ice", "alice"), ("A1ICE", "alice")] {
        let (_, r, why) = join_as(&mut h, "10.0.0.2:2", MALLORY, name, 3);
        assert_eq!(r, RegisterResult::NickTaken, "{name}");
        assert!(why.contains(&format!("looks like \"{like}\"")), "{why}");
    }
    let (_, r, _) = join_as(&mut h, "10.0.0.3:1", KEY, "mike", 4);
    assert_eq!(r, RegisterResult::Ok);
    let (_, r, why) = join_as(&mut h, "10.0.0.2:3", MALLORY, "rnike", 5);
    assert_eq!(r, RegisterResult::NickTaken);
    assert!(why.contains("looks like \"mike\""), "{why}");
    // A one-shot sender cannot claim a look-alike either.
    let c = h.connect_as("10.0.0.2:4", MALLORY);
    h.send(
        c,
        ClientMsg::Register(Register {
            flags: flags::OBSERVER | flags::CLAIM,
            instance: 6,
            nick: "\u{430}lice".into(),
            chat_port: 0,
            chat_ip: None,
        }),
    );
    h.turn();
    let (r, _, why) = h.last_registered(c).unwrap();
    assert_eq!(r, RegisterResult::NickTaken);
    assert!(why.contains("looks like \"alice\""), "{why}");
    assert_eq!(h.reg.owner(&nick("\u{430}lice")), None);
    // Names that merely share letters are fine.
    let (_, r, _) = join_as(&mut h, "10.0.0.2:5", MALLORY, "alicia", 7);
    assert_eq!(r, RegisterResult::Ok);
    h.assert_converged();
}

#[test]
fn a_look_alike_of_a_bound_offline_nickname_of_another_key_is_refused() {
    let day = Duration::from_secs(24 * 3600);
    let mut h = Harness::new(Config {
        offline_ttl: day,
        binding_ttl: 90 * day,
        ..Config::default()
    });
    let (a, _, _) = join_as(&mut h, "10.0.0.1:1", KEY, "alice", 1);
    h.reg.connection_lost(h.now, h.wall, a, "lost");
    h.turn();
    h.advance(2 * day);
    h.turn();
    assert_eq!(
        h.reg.counts(),
        (0, 0, 0),
        "the entry expired, the binding stays"
    );
    for name in ["\u{430}lice", "Alice"] {
        let (_, r, why) = join_as(&mut h, "10.0.0.2:1", MALLORY, name, 2);
        assert_eq!(r, RegisterResult::NickTaken, "{name}");
        assert!(
            why.contains("\"alice\", a nickname bound to another user's key")
                || why.contains("\"alice\" is bound to another user's key"),
            "{why}"
        );
    }
    // Kept across a restart of the daemon.
    let mut again = Harness::new(Config::default());
    again.reg.load(h.reg.image(h.wall));
    let (_, r, _) = join_as(&mut again, "10.0.0.2:1", MALLORY, "\u{430}lice", 2);
    assert_eq!(r, RegisterResult::NickTaken);
    // Its owner may come back under a new spelling of it; the old one is then let go, and still kept from
    // everyone else by the new one.
    let (_, r, _) = join_as(&mut h, "10.0.0.1:2", KEY, "Alice", 3);
    assert_eq!(r, RegisterResult::Ok);
    assert_eq!(h.reg.owner(&nick("alice")), None);
    assert_eq!(h.reg.image(h.wall).bindings.len(), 0);
    let (_, r, why) = join_as(&mut h, "10.0.0.2:2", MALLORY, "alice", 4);
    assert_eq!(r, RegisterResult::NickTaken);
    assert!(why.contains("\"Alice\" is already in the roster"), "{why}");
}

#[test]
fn the_same_key_takes_its_own_nickname_back() {
    let day = Duration::from_secs(24 * 3600);
    let mut h = Harness::new(Config {
        offline_ttl: day,
        binding_ttl: 90 * day,
        ..Config::default()
    });
    let (a, _, _) = join_as(&mut h, "10.0.0.1:1", KEY, "Zoë", 1);
    // Online again on a new association, offline and back, expired and back: always its own.
    let (_, r, _) = join_as(&mut h, "10.0.0.1:1", KEY, "Zoë", 1);
    assert_eq!(r, RegisterResult::Ok);
    h.reg.connection_lost(h.now, h.wall, a, "lost");
    h.turn();
    let (b, r, _) = join_as(&mut h, "10.0.0.1:2", KEY, "Zoë", 2);
    assert_eq!(r, RegisterResult::Ok);
    h.reg.connection_lost(h.now, h.wall, b, "lost");
    h.turn();
    h.advance(2 * day);
    h.turn();
    assert_eq!(h.reg.counts().0 + h.reg.counts().1, 0, "expired");
    let (_, r, _) = join_as(&mut h, "10.0.0.1:3", KEY, "Zoë", 3);
    assert_eq!(r, RegisterResult::Ok);
    assert_eq!(h.reg.counts().0, 1);
    // Released, the look-alike is free for anyone.
    let mut h = Harness::new(Config::default());
    let (a, _, _) = join_as(&mut h, "10.0.0.1:1", KEY, "alice", 1);
    h.reg.connection_lost(h.now, h.wall, a, "lost");
    assert_eq!(h.reg.release(h.wall, &nick("alice")), Ok(()));
    let (_, r, _) = join_as(&mut h, "10.0.0.2:1", MALLORY, "\u{430}lice", 2);
    assert_eq!(r, RegisterResult::Ok);
}

#[test]
fn a_saved_roster_from_before_the_rule_keeps_both_look_alikes_and_lets_no_third_in() {
    let rec = |n: &str, key: PublicKey, port: u16| Record {
        entry: wire::Entry {
            nick: nick(n),
            instance: 1,
            status: Status::Offline,
            // An hour before the harness's clock: not expired.
            since_ms: 1_700_000_000_000 - 3_600_000,
            chat: SocketAddr::from(([10, 0, 0, 1], port)),
            flaps: 0,
            extra: None,
        },
        key: Some(key),
        host: None,
    };
    let mut h = Harness::new(Config::default());
    let saved = vec![rec("Bob", KEY, 1), rec("bob", MALLORY, 2)];
    assert_eq!(h.reg.load(image(saved, 4, 10)), 2);
    // Each owner still has its own.
    let (_, r, _) = join_as(&mut h, "10.0.0.1:1", KEY, "Bob", 1);
    assert_eq!(r, RegisterResult::Ok);
    let (m, r, _) = join_as(&mut h, "10.0.0.1:2", MALLORY, "bob", 2);
    assert_eq!(r, RegisterResult::Ok);
    // A third key gets neither, before or after one of them leaves the roster.
    let third = PublicKey([3; 32]);
    let (_, r, _) = join_as(&mut h, "10.0.0.3:1", third, "BOB", 3);
    assert_eq!(r, RegisterResult::NickTaken);
    h.reg.connection_lost(h.now, h.wall, m, "lost");
    assert_eq!(h.reg.release(h.wall, &nick("bob")), Ok(()));
    let (_, r, why) = join_as(&mut h, "10.0.0.3:2", third, "BOB", 4);
    assert_eq!(r, RegisterResult::NickTaken);
    assert!(why.contains("\"Bob\""), "{why}");
}

#[test]
fn a_rename_is_refused_a_look_alike_of_another_but_may_respell_its_own() {
    let mut h = Harness::new(Config::default());
    let (a, r, _) = join_as(&mut h, "10.0.0.1:1", KEY, "alice", 1);
    assert_eq!(r, RegisterResult::Ok);
    let (_, r, _) = join_as(&mut h, "10.0.0.2:1", PublicKey([2; 32]), "bob", 2);
    assert_eq!(r, RegisterResult::Ok);
    for to in ["Bob", "b0b"] {
        h.send(a, ClientMsg::Rename { nick: to.into() });
        h.turn();
        let last = answers(&h, a).pop().unwrap();
        assert!(
            last.1.as_deref().is_some_and(|r| r.contains("\"bob\"")),
            "{to}: {last:?}"
        );
    }
    // Her own name in capitals is hers: no refusal, and the old spelling is not kept bound beside it.
    h.send(
        a,
        ClientMsg::Rename {
            nick: "Alice".into(),
        },
    );
    h.turn();
    assert_eq!(answers(&h, a).pop().unwrap(), (wire::Request::Rename, None));
    assert_eq!(h.reg.owner(&nick("Alice")), Some(KEY));
    assert_eq!(h.reg.owner(&nick("alice")), None);
    // And no one else can take the old spelling: it looks like hers.
    let (_, r, why) = join_as(&mut h, "10.0.0.3:1", PublicKey([3; 32]), "alice", 3);
    assert_eq!(r, RegisterResult::NickTaken, "{why}");
    // A real rename keeps the old name bound, and look-alikes of both are refused to others.
    h.send(
        a,
        ClientMsg::Rename {
            nick: "carla".into(),
        },
    );
    h.turn();
    assert_eq!(answers(&h, a).pop().unwrap(), (wire::Request::Rename, None));
    for other in ["ALICE", "Carla"] {
        let (_, r, why) = join_as(&mut h, "10.0.0.4:1", PublicKey([4; 32]), other, 4);
        assert_ne!(r, RegisterResult::Ok, "{other}: {why}");
    }
}

#[test]
fn roster_changes_from_one_client_are_rate_limited_after_a_burst() {
    let mut h = Harness::new(Config::default());
    let a = h.connect("10.0.0.1:9");
    h.register(a, "alice", 1, 4000);
    h.turn();
    // A burst (a console rejoining its channels, `listen --join` many times) goes through.
    for i in 0..CHANGE_BURST {
        let m = if i % 2 == 0 {
            ClientMsg::Join {
                channel: channel("#flip"),
            }
        } else {
            ClientMsg::Part {
                channel: channel("#flip"),
            }
        };
        h.send(a, m);
    }
    h.send(
        a,
        ClientMsg::Away {
            message: Some("x".into()),
        },
    );
    h.turn();
    let got = answers(&h, a);
    assert_eq!(got.len(), CHANGE_BURST as usize + 1);
    assert!(got[..CHANGE_BURST as usize].iter().all(|g| g.1.is_none()));
    let last = got.last().unwrap();
    assert!(
        last.1
            .as_deref()
            .is_some_and(|r| r.contains("try again in 1 s")),
        "{last:?}"
    );
    assert_eq!(h.reg.stats().requests_limited, 1);
    // One change a second after that.
    h.advance(CHANGE_EVERY);
    h.send(
        a,
        ClientMsg::Away {
            message: Some("x".into()),
        },
    );
    h.send(a, ClientMsg::Away { message: None });
    h.turn();
    let got = answers(&h, a);
    let n = got.len();
    assert_eq!(got[n - 2].1, None);
    assert!(got[n - 1].1.is_some());
    h.assert_converged();
}
