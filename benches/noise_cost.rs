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

use multiproto::identity::Identity;
use multiproto::nick::Nick;
use multiproto::registry::wire::{Entry, ServerMsg, Status};
use multiproto::secure::ticket::{Grant, Ticket, TicketKey};
use multiproto::secure::{Context, Frame, Handshake, Initiator, Pattern, Session, kind};

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
            // A one-join delta, as the registry builds it.
            let delta = ServerMsg::Delta {
                from: 1,
                to: 2,
                entries: vec![Entry {
                    nick: Nick::new("joiner42").unwrap(),
                    instance: 0x1234_5678_9abc_def0,
                    status: Status::Online,
                    since_ms: 1_796_000_000_000,
                    chat: "10.0.3.7:40001".parse().unwrap(),
                    flaps: 0,
                }],
            }
            .encode();
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
                    let mut payload = vec![0u8; noise.len()];
                    r.read(noise, &mut payload).unwrap();
                    let answer = r.write_vec(&[kind::HANDSHAKE], &[]).unwrap();
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
        other => {
            eprintln!(
                "unknown scenario {other}: initiate | respond | seal | open | resume-initiate | resume-respond"
            );
            std::process::exit(2);
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
