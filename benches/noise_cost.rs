//! A fixed amount of Noise work, for counting instructions under callgrind (repeatable where time on a
//! shared machine is not), beside `sctp_cost`'s SCTP figures:
//!
//! ```sh
//! B=$(ls target/release/deps/noise_cost-* | grep -v '\.d$')
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null $B initiate 0     # setup only
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null $B initiate 200   # + 200 first messages (client)
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null $B respond 200    # + 200 first messages and the
//!                                                                          #   daemon's side of each handshake
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null $B seal 10000     # + 10 000 sealed roster deltas
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null $B open 10000     # + as many sealed and opened
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null $B resume-initiate 200  # 200 resumptions' first
//!                                                                          #   messages (client)
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null $B resume-respond 200   # + the daemon's side:
//!                                                                          #   open the ticket, answer,
//!                                                                          #   open, issue the next ticket
//! ```
//! One daemon-side IK handshake (read the client's first message, write the answer, open the session) is
//! (respond N − initiate N) / N; one sealed roster message (the daemon's work per client for a one-join
//! delta) is (seal N − seal 0) / N; a client's opening of one is (open N − seal N) / N. One daemon-side
//! resumption is (resume-respond N − resume-initiate N) / N.
//!
//! The daemon's whole work to send one such delta to 1 000 clients as a sealed broadcast, SCTP included (seal
//! once; per client reserve room, make its head, queue it; write the packets; read the SACKs), counted in
//! the daemon's functions only (`daemon_*`, not the simulated clients' endpoint):
//!
//! ```sh
//! T='--toggle-collect=*daemon_*'
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null "$T" $B fanout-one 0     # setup (+ 3 deltas)
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null "$T" $B fanout-one 20    # + 20 deltas
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null "$T" $B fanout-two 20    # the same, each copy
//!                                                            # sent as two messages (head, then body)
//! ```
//! One delta to 1 000 clients is (fanout-X 20 − fanout-X 0) / 20. `fanout-two` sends what
//! `secure::broadcast` sent before a broadcast became one message: a tag message, then the body.

use std::sync::Arc;

use multiproto::identity::Identity;
use multiproto::nick::Nick;
use multiproto::registry::wire::{Entry, PPID, ServerMsg, Status};
use multiproto::sctp::{AssocId, Endpoint, Event, Head, Payload, Transmit};
use multiproto::secure::broadcast::{HEAD_LEN, Sealer, Tagger};
use multiproto::secure::ticket::{Grant, Ticket, TicketKey};
use multiproto::secure::{Context, Frame, Handshake, Initiator, Pattern, Session, kind};
use multiproto::time::Instant;

#[path = "support/pair.rs"]
mod pair;

/// Clients one delta reaches in the `fanout-*` scenarios.
const CLIENTS: u32 = 1000;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let scenario = args.first().map(String::as_str).unwrap_or("seal");
    let n: u32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let daemon = Identity::from_secret([1; 32]);
    let client = Identity::from_secret([2; 32]);
    let seed = |i: u32| {
        let mut s = [0u8; 32];
        s[..4].copy_from_slice(&i.to_le_bytes());
        s
    };
    match scenario {
        "initiate" | "respond" => {
            let mut answered = 0;
            for i in 0..n {
                let mut hs = Handshake::initiate(
                    Context::Roster,
                    &client,
                    Some(&daemon.public()),
                    None,
                    seed(i),
                );
                let first = hs
                    .write_vec(&[Frame::init_kind(Pattern::Ik, false)], &[])
                    .unwrap();
                if scenario == "respond" {
                    let mut r = Handshake::respond(
                        Context::Roster,
                        Pattern::Ik,
                        &daemon,
                        None,
                        seed(i + n),
                    );
                    let mut payload = vec![0u8; first.len()];
                    r.read(&first[1..], &mut payload).unwrap();
                    let answer = r.write_vec(&[kind::HANDSHAKE], &[]).unwrap();
                    let (_, key) = r.into_session().unwrap();
                    assert_eq!(key, client.public());
                    answered += answer.len();
                }
                std::hint::black_box(&first);
            }
            std::hint::black_box(answered);
        }
        "seal" | "open" => {
            let (mut d, mut c) = sessions(&daemon, &client);
            let delta = one_join_delta();
            for _ in 0..n {
                let sealed = d.seal_vec(&[kind::DATA], &delta).unwrap();
                if scenario == "open" {
                    let plain = c.open_vec(&sealed[1..]).unwrap();
                    assert_eq!(plain.len(), delta.len());
                }
                std::hint::black_box(&sealed);
            }
        }
        "resume-initiate" | "resume-respond" => {
            let key = TicketKey::derive(&daemon, None);
            let grant = Grant {
                client: client.public(),
                secret: [3; 32],
                expires_ms: u64::MAX,
            };
            let ticket = Ticket {
                daemon: daemon.public(),
                ticket: key.issue(&grant, [4; 12]),
                secret: grant.secret,
            };
            let mut answered = 0;
            for i in 0..n {
                let (_, first) = Initiator::resume(Context::Roster, &ticket, false, seed(i));
                let first = first.unwrap();
                if scenario == "resume-respond" {
                    let Ok(Frame::Resume { ticket, noise, .. }) = Frame::parse(&first) else {
                        panic!("not a resumption");
                    };
                    let g = key.open(ticket, 0).unwrap();
                    let mut r = Handshake::respond_resume(Context::Roster, ticket, &g, seed(i + n));
                    let answer = r.answer(noise).unwrap();
                    let (_, k) = r.into_session().unwrap();
                    assert_eq!(k, client.public());
                    // The next ticket, as the daemon issues one with every session.
                    answered +=
                        answer.len() + key.issue(&g, seed(i)[..12].try_into().unwrap()).len();
                }
                std::hint::black_box(&first);
            }
            std::hint::black_box(answered);
        }
        "fanout-one" | "fanout-two" => fanout(scenario == "fanout-two", n),
        other => {
            eprintln!(
                "unknown scenario {other}: initiate | respond | seal | open | resume-initiate | \
                 resume-respond | fanout-one | fanout-two"
            );
            std::process::exit(2);
        }
    }
}

/// A one-join delta, as the registry builds it.
fn one_join_delta() -> Vec<u8> {
    ServerMsg::Delta {
        from: 1,
        to: 2,
        entries: vec![Entry {
            nick: Nick::new("joiner42").unwrap(),
            instance: 0x1234_5678_9abc_def0,
            status: Status::Online,
            since_ms: 1_796_000_000_000,
            chat: "10.0.3.7:40001".parse().unwrap(),
            flaps: 0,
            extra: None,
        }],
    }
    .encode()
}

/// `n` deltas (after three to warm up), each sealed once and sent to [`CLIENTS`] associations, every copy
/// delivered and acknowledged. `two`: each copy as a tag message then the body, as before broadcasts were
/// one message.
fn fanout(two: bool, n: u32) {
    let now = Instant::from_millis(1);
    let mut buf = vec![0u8; 2048];
    let (mut server, mut client) = pair::endpoints();
    for i in 0..CLIENTS {
        pair::handshake(&mut server, &mut client, i, now, &mut buf);
    }
    let mut taggers: Vec<(AssocId, Tagger)> = server
        .ids()
        .enumerate()
        .map(|(i, id)| (id, Tagger::new([i as u8; 16])))
        .collect();
    assert_eq!(taggers.len(), CLIENTS as usize);
    let mut sealer = Sealer::new([9; 32]);
    let delta = one_join_delta();
    let per_client = if two { 2 } else { 1 };
    for _ in 0..3 + n {
        daemon_send(&mut server, &mut sealer, &mut taggers, &delta, two);
        let got = exchange(&mut server, &mut client, now, &mut buf);
        assert_eq!(got, CLIENTS as usize * per_client);
    }
}

/// The daemon's side of a broadcast, as `Server::send_body` does it: seal once, then for each client ask for
/// room, make its head and queue its copy.
#[inline(never)]
fn daemon_send(
    server: &mut Endpoint,
    sealer: &mut Sealer,
    taggers: &mut [(AssocId, Tagger)],
    plain: &[u8],
    two: bool,
) {
    let body = sealer.seal(plain);
    for (id, t) in taggers.iter_mut() {
        assert!(server.reserve(*id, HEAD_LEN + body.len()));
        let head = t.head(&body);
        if two {
            let tag = Payload::Owned(head.to_vec());
            server.try_send(*id, 0, false, PPID, tag).unwrap();
            let body = Payload::Shared(Arc::clone(&body));
            server.try_send(*id, 0, false, PPID, body).unwrap();
        } else {
            let p = Payload::Headed {
                head: Head::from(head),
                body: Arc::clone(&body),
            };
            server.try_send(*id, 0, false, PPID, p).unwrap();
        }
    }
}

/// The daemon writes its next packet.
#[inline(never)]
fn daemon_transmit(server: &mut Endpoint, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
    server.poll_transmit(now, buf)
}

/// The daemon reads a packet (a SACK) and drains its events.
#[inline(never)]
fn daemon_handle(server: &mut Endpoint, now: Instant, from: std::net::SocketAddr, packet: &[u8]) {
    server.handle(now, from, packet);
    while server.poll_event().is_some() {}
}

/// Moves packets both ways until both ends are quiet, as `pair::pump` does, with the daemon's side in the
/// `daemon_*` functions; returns the messages the clients received.
fn exchange(server: &mut Endpoint, client: &mut Endpoint, now: Instant, buf: &mut [u8]) -> usize {
    let mut messages = 0;
    loop {
        let mut moved = false;
        while let Some(t) = daemon_transmit(server, now, buf) {
            let from = pair::server_addr(pair::client_index(t.dst));
            client.handle(now, from, &buf[..t.len]);
            moved = true;
        }
        while let Some(t) = client.poll_transmit(now, buf) {
            let from = pair::client_addr(pair::server_index(t.dst));
            daemon_handle(server, now, from, &buf[..t.len]);
            moved = true;
        }
        while let Some((_, e)) = client.poll_event() {
            if matches!(e, Event::Message { .. }) {
                messages += 1;
            }
        }
        if !moved {
            return messages;
        }
    }
}

/// An open session between the daemon and a client: (daemon's end, client's end).
fn sessions(daemon: &Identity, client: &Identity) -> (Session, Session) {
    let mut i = Handshake::initiate(
        Context::Roster,
        client,
        Some(&daemon.public()),
        None,
        [7; 32],
    );
    let mut r = Handshake::respond(Context::Roster, Pattern::Ik, daemon, None, [8; 32]);
    let mut buf = [0u8; 512];
    let mut pay = [0u8; 512];
    let n = i.write(&[], &mut buf).unwrap();
    r.read(&buf[..n], &mut pay).unwrap();
    let n = r.write(&[], &mut buf).unwrap();
    i.read(&buf[..n], &mut pay).unwrap();
    (r.into_session().unwrap().0, i.into_session().unwrap().0)
}
