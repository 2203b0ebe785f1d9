//! Whole-system scenarios of trust (issue 14): a rogue daemon with another key, forged discovery datagrams,
//! nicknames taken over online and offline, and the network-secret mode with outsiders. Each asserts what the
//! clients did (and did not) do, in virtual time.

use std::net::SocketAddr;
use std::time::Duration;

use super::scenarios::{PATIENCE, describe, join, world};
use super::world::{Host, SERVER_SCTP, World};
use super::{Netem, seed_or};
use crate::client::{ClientEvent, Pin};
use crate::discovery::{DaemonInfo, Datagram};
use crate::registry::wire::RegisterResult;
use crate::secure::Psk;

/// Events of client `n` matching `f`.
fn count(w: &World, n: usize, f: impl Fn(&ClientEvent) -> bool) -> usize {
    w.client(n).events.iter().filter(|(_, e)| f(e)).count()
}

/// An ANNOUNCE as daemon `info` would send it, from `from`.
fn announce(w: &mut World, from: SocketAddr, info: DaemonInfo) {
    let mut b = Vec::new();
    Datagram::Announce(info).write(&mut b, None);
    let group = w.group;
    w.inject(from, group, &b);
}

/// A WELCOME to client `n`'s current HELLO, as an attacker at 10.0.0.66 forges it: `key` (anyone's, it is
/// public) and the daemon's address `addr`.
fn forged_welcome(w: &mut World, n: usize, key: crate::identity::PublicKey, addr: &str) {
    let instance = w.client(n).client.as_ref().unwrap().instance();
    let to = SocketAddr::new(w.client(n).ip, w.client(n).sender_port);
    let mut b = Vec::new();
    Datagram::Welcome {
        to: instance,
        daemon: DaemonInfo {
            instance: 0xF00D,
            sctp_udp_port: 9899,
            sctp_port: 9899,
            addr: Some(addr.parse().unwrap()),
            key,
            needs_secret: false,
        },
    }
    .write(&mut b, None);
    w.inject("10.0.0.66:10002".parse().unwrap(), to, &b);
}

#[test]
fn a_rogue_daemon_is_never_followed_and_a_new_client_trusts_neither() {
    let seed = seed_or(40);
    let mut w = world(seed, Netem::IDEAL);
    let [alice, bob] = join(&mut w, ["alice", "bob"], seed);
    let real = w.daemon().server.config().identity.public();
    assert_eq!(w.client(alice).pin, Pin::Key(real));
    // Another daemon starts on another host: it announces itself three times and answers every HELLO.
    w.start_rogue([0xEE; 32]);
    w.run_for(Duration::from_secs(3));
    // alice restarts meanwhile: she sends HELLOs, both daemons answer, she follows hers.
    let restart = w.now();
    w.crash(Host::Client(alice));
    w.start_client(alice, |_| {});
    w.wait(PATIENCE, |w| w.client(alice).is_registered())
        .unwrap_or_else(|| {
            panic!(
                "seed {seed}: alice never registered again: {}",
                describe(&w)
            )
        });
    w.run_for(Duration::from_secs(5));
    for n in [alice, bob] {
        assert!(
            w.client(n).is_registered(),
            "seed {seed}: {n} left its daemon"
        );
        assert_eq!(
            count(&w, n, |e| matches!(e, ClientEvent::DaemonLost { .. })),
            0,
            "seed {seed}: client {n} dropped its daemon"
        );
    }
    // Said once per process, with both fingerprints, however many datagrams the rogue sent.
    let rogue_key = w.rogue.as_ref().unwrap().server.config().identity.public();
    let told: Vec<bool> = w
        .client(alice)
        .events
        .iter()
        .filter(|(_, e)| {
            matches!(e, ClientEvent::DaemonKeyMismatch { pinned, offered, .. }
                if *pinned == real.fingerprint() && *offered == rogue_key.fingerprint())
        })
        .map(|(t, _)| *t >= restart)
        .collect();
    assert_eq!(
        told,
        [false, true],
        "seed {seed}: {:?}",
        w.client(alice).events
    );
    // The rogue never got a handshake, let alone a registration.
    let rogue = &w.rogue.as_ref().unwrap().server;
    assert_eq!(rogue.stats().handshakes, 0);
    assert_eq!(rogue.registry().counts(), (0, 0, 0));
    // A client on first contact hears both and chooses neither.
    let carol = w.add_client("carol", |_| {});
    w.wait(PATIENCE, |w| {
        count(w, carol, |e| {
            matches!(e, ClientEvent::DaemonsDisagree { .. })
        }) > 0
    })
    .unwrap_or_else(|| panic!("seed {seed}: carol never said two daemons answer"));
    w.run_for(Duration::from_secs(10));
    assert!(!w.client(carol).is_registered());
    assert_eq!(w.client(carol).pin, Pin::None);
    // It gave up (and, as mpc does then, its process ended).
    assert!(
        w.client(carol)
            .client
            .as_ref()
            .is_none_or(|c| c.has_given_up())
    );
    assert_eq!(w.rogue.as_ref().unwrap().server.stats().handshakes, 0);
    // Told which (as `--daemon-key` does), carol joins the real one.
    let real_fp = real.fingerprint();
    w.start_client(carol, |c| c.pin = Pin::Fingerprint(real_fp));
    w.wait(PATIENCE, |w| w.client(carol).is_registered())
        .unwrap_or_else(|| panic!("seed {seed}: carol never registered with --daemon-key"));
    assert_eq!(w.client(carol).pin, Pin::Key(real));
}

#[test]
fn forged_announces_do_not_move_a_working_client_and_a_real_restart_is_followed() {
    let seed = seed_or(41);
    let mut w = world(seed, Netem::IDEAL);
    let [alice] = join(&mut w, ["alice"], seed);
    let real = w.daemon().server.config().identity.public();
    // Every 2 s for 20 s: ANNOUNCEs with our daemon's (public) key and a new instance, naming a dead
    // address, and ones with another key naming the attacker's.
    let dead = DaemonInfo {
        instance: 0xF00D,
        sctp_udp_port: 9,
        sctp_port: 9,
        addr: Some("10.9.9.9".parse().unwrap()),
        key: real,
        needs_secret: false,
    };
    let attacker: SocketAddr = "10.0.0.66:10002".parse().unwrap();
    for _ in 0..10 {
        announce(&mut w, attacker, dead);
        announce(
            &mut w,
            attacker,
            DaemonInfo {
                key: crate::identity::PublicKey([7; 32]),
                ..dead
            },
        );
        w.run_for(Duration::from_secs(2));
    }
    assert!(w.client(alice).is_registered());
    assert_eq!(
        count(&w, alice, |e| matches!(e, ClientEvent::DaemonLost { .. })),
        0,
        "seed {seed}: a forged ANNOUNCE took alice's daemon away: {:?}",
        w.client(alice).events
    );
    // The real daemon crashes and a new instance (same key, same host) starts: its ANNOUNCE has alice
    // probe her association, the new daemon answers with an ABORT, and she connects at once.
    w.crash(Host::Server);
    w.start_server();
    let t0 = w.now();
    let took = w.wait(PATIENCE, |w| {
        w.client(alice).is_registered()
            && w.client(alice)
                .events
                .iter()
                .any(|(t, e)| *t >= t0 && matches!(e, ClientEvent::Registered { .. }))
    });
    assert!(
        took.is_some_and(|t| t < Duration::from_millis(50)),
        "seed {seed}: followed the restarted daemon after {took:?}"
    );
}

#[test]
fn a_nickname_cannot_be_taken_over_online_or_offline() {
    let seed = seed_or(42);
    let mut w = world(seed, Netem::IDEAL);
    let [alice, watcher] = join(&mut w, ["alice", "watcher"], seed);
    let refused = |w: &World, n: usize| {
        w.client(n).events.iter().any(|(_, e)| {
            matches!(
                e,
                ClientEvent::Rejected {
                    result: RegisterResult::NickOwned,
                    ..
                }
            )
        })
    };
    // Online: mallory (another host, another key) asks for "alice".
    let mallory = w.add_client("alice", |_| {});
    w.wait(PATIENCE, |w| refused(w, mallory))
        .unwrap_or_else(|| panic!("seed {seed}: mallory was not refused: {}", describe(&w)));
    assert!(w.client(alice).is_registered());
    // Offline: alice leaves; mallory tries again.
    w.exit_client(alice);
    w.wait(PATIENCE, |w| w.client(watcher).sees("alice", false))
        .expect("alice never went offline");
    w.crash(Host::Client(mallory));
    w.start_client(mallory, |_| {});
    let before = w.client(mallory).events.len();
    w.wait(PATIENCE, |w| {
        w.client(mallory).events[before..].iter().any(|(_, e)| {
            matches!(
                e,
                ClientEvent::Rejected {
                    result: RegisterResult::NickOwned,
                    ..
                }
            )
        })
    })
    .unwrap_or_else(|| panic!("seed {seed}: mallory took alice's offline nickname"));
    assert!(w.client(watcher).sees("alice", false), "alice shown online");
    // The real alice comes back and gets it at once.
    w.start_client(alice, |_| {});
    w.wait(PATIENCE, |w| w.client(watcher).sees("alice", true))
        .unwrap_or_else(|| panic!("seed {seed}: alice could not come back"));
    assert_eq!(
        w.daemon().server.registry().stats().owned_refusals,
        2,
        "seed {seed}"
    );
}

#[test]
fn under_a_network_secret_outsiders_find_nothing_and_insiders_everything() {
    let seed = seed_or(43);
    let mut w = World::new(seed, Netem::IDEAL);
    let psk = Psk::from_secret(b"office secret, at least 16 bytes");
    w.server_config.psk = Some(psk.clone());
    w.start_server();
    let with = |p: &Psk| {
        let p = p.clone();
        move |c: &mut crate::client::Config| c.psk = Some(p)
    };
    let alice = w.add_client("alice", with(&psk));
    let bob = w.add_client("bob", with(&psk));
    w.wait(PATIENCE, |w| {
        w.client(alice).sees("bob", true) && w.client(bob).sees("alice", true)
    })
    .unwrap_or_else(|| panic!("seed {seed}: insiders never met: {}", describe(&w)));
    // An outsider without the secret is told one is needed; one with another secret that it is not
    // shared. Neither registers, reads a roster, or opens a session.
    let eve = w.add_client("eve", |_| {});
    let wrong = Psk::from_secret(b"a guess at the office secret....");
    let mallet = w.add_client("mallet", with(&wrong));
    w.run_for(Duration::from_secs(20));
    assert_eq!(
        count(&w, eve, |e| matches!(e, ClientEvent::SecretRequired { .. })),
        1
    );
    assert_eq!(
        count(&w, mallet, |e| matches!(
            e,
            ClientEvent::SecretMismatch { .. }
        )),
        1
    );
    for n in [eve, mallet] {
        let c = w.client(n);
        assert!(!c.is_registered());
        assert!(c.roster().is_empty(), "an outsider read the roster");
        assert_eq!(
            count(&w, n, |e| matches!(e, ClientEvent::DaemonFound { .. })),
            0,
            "an outsider connected"
        );
    }
    let s = w.daemon().server.stats();
    assert_eq!(s.handshakes, 2, "only the insiders' sessions opened");
    assert!(s.discovery_unauthenticated > 0);
    // An outsider going straight to the daemon's address (no discovery) is refused in the handshake.
    let daemon_addr = SocketAddr::new(w.daemon().ip, SERVER_SCTP);
    let direct = w.add_client("direct", |c| c.daemon = Some(daemon_addr));
    w.wait(PATIENCE, |w| {
        count(w, direct, |e| matches!(e, ClientEvent::Refused { .. })) > 0
    })
    .unwrap_or_else(|| panic!("seed {seed}: the direct outsider was not refused"));
    assert!(!w.client(direct).is_registered());
    assert!(w.daemon().server.stats().handshakes_refused >= 1);
    assert_eq!(w.daemon().server.registry().counts().0, 2);
}

#[test]
fn a_peers_changed_key_is_reported_and_nothing_goes_to_the_new_one() {
    let seed = seed_or(44);
    let mut w = world(seed, Netem::IDEAL);
    let [alice, bob] = join(&mut w, ["alice", "bob"], seed);
    let id = w.send_chat(alice, "bob", "hi bob").unwrap();
    w.wait(PATIENCE, |w| w.client(alice).delivered(id).is_some())
        .expect("the first message");
    let old = w.client(bob).identity.public();
    assert_eq!(w.client(alice).known_peers.get("bob"), Some(old));
    // bob leaves; the operator frees his name; someone else (another host, another key) takes it.
    w.exit_client(bob);
    w.wait(PATIENCE, |w| w.client(alice).sees("bob", false))
        .expect("bob never left");
    let now = w.now();
    w.server
        .as_mut()
        .unwrap()
        .server
        .release(now, &crate::nick::Nick::new("bob").unwrap())
        .expect("release");
    let impostor = w.add_client("bob", |_| {});
    w.wait(PATIENCE, |w| w.client(impostor).is_registered())
        .expect("the new bob never registered");
    let new = w.client(impostor).identity.public();
    // alice writes to "bob": her client asks the daemon, hears another key than the one she talked to, and
    // says so; the message waits for her to accept it.
    let id = w.send_chat(alice, "bob", "is it still you?").unwrap();
    w.wait(PATIENCE, |w| !w.client(alice).key_changes.is_empty())
        .unwrap_or_else(|| panic!("seed {seed}: no key change reported: {}", describe(&w)));
    let (_, nick, remembered, given) = w.client(alice).key_changes[0];
    assert_eq!(
        (nick.as_str(), remembered, given),
        ("bob", old, new),
        "seed {seed}"
    );
    w.run_for(Duration::from_secs(20));
    assert!(w.client(alice).delivered(id).is_none());
    assert!(
        w.client(impostor).received().is_empty(),
        "seed {seed}: the new key got alice's message"
    );
}

#[test]
fn forged_welcomes_delay_a_search_but_never_redirect_it() {
    let seed = seed_or(45);
    let mut w = world(seed, Netem::IDEAL);
    let [alice] = join(&mut w, ["alice"], seed);
    let real = w.daemon().server.config().identity.public();
    let real_addr = SocketAddr::new(w.daemon().ip, SERVER_SCTP);
    // alice restarts; an attacker answers her HELLOs first, twice: once with the real daemon's (public) key
    // and a dead address, once with its own key and its own address.
    w.crash(Host::Client(alice));
    w.start_client(alice, |_| {});
    forged_welcome(&mut w, alice, real, "10.9.9.9");
    forged_welcome(
        &mut w,
        alice,
        crate::identity::PublicKey([7; 32]),
        "10.0.0.66",
    );
    let t0 = w.now();
    w.wait(PATIENCE, |w| w.client(alice).is_registered())
        .unwrap_or_else(|| {
            panic!(
                "seed {seed}: alice never registered again: {}",
                describe(&w)
            )
        });
    // Registered with the real daemon (its handshake proved the key): its WELCOME came second, and was tried
    // once the dead address had not answered for FALLBACK_AFTER (not after the INIT retransmissions gave up
    // on it and a new search, about ten seconds).
    let took = w.now().saturating_since(t0);
    assert!(took < Duration::from_millis(1200), "seed {seed}: {took:?}");
    let found: Vec<SocketAddr> = w
        .client(alice)
        .events
        .iter()
        .filter(|(t, _)| *t >= t0)
        .filter_map(|(_, e)| match e {
            ClientEvent::DaemonFound { addr } => Some(*addr),
            _ => None,
        })
        .collect();
    assert_eq!(found.last(), Some(&real_addr), "seed {seed}: {found:?}");
    assert!(
        !found.iter().any(|a| a.ip().to_string() == "10.0.0.66"),
        "seed {seed}: followed the attacker's own key: {found:?}"
    );
    assert_eq!(
        count(&w, alice, |e| matches!(
            e,
            ClientEvent::DaemonKeyMismatch { .. }
        )),
        1
    );
}

#[test]
fn captured_chat_replayed_or_altered_shows_nothing() {
    let seed = seed_or(47);
    let mut w = world(seed, Netem::IDEAL);
    let [alice, bob] = join(&mut w, ["alice", "bob"], seed);
    let id = w.send_chat(alice, "bob", "the real one").unwrap();
    w.wait(PATIENCE, |w| {
        w.client(alice).delivered(id).is_some() && !w.client(bob).received().is_empty()
    })
    .expect("the real message");
    // What an eavesdropper captured from alice to bob: the handshake's first message and the sealed frames.
    let captured: Vec<u8> = w
        .tcp_capture
        .iter()
        .filter(|(from, to, _)| *from == alice && *to == bob)
        .flat_map(|(_, _, b)| b.clone())
        .collect();
    assert!(!captured.is_empty());
    assert!(
        !captured.windows(12).any(|x| x == b"the real one"),
        "the text crossed in clear"
    );
    let before = *w.client(bob).peer.as_ref().unwrap().stats();
    let attacker: SocketAddr = "10.0.0.66:40404".parse().unwrap();
    // Replayed whole, from another address (or alice's): bob answers the old first message with a new
    // handshake, and the old sealed frames do not open under it.
    for from in [attacker, SocketAddr::new(w.client(alice).ip, 40405)] {
        assert!(
            w.inject_chat(bob, from, &captured),
            "bob kept a replayed session"
        );
    }
    // Altered: a flipped bit in the sealed part.
    let mut altered = captured.clone();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    assert!(w.inject_chat(bob, attacker, &altered));
    w.run_for(Duration::from_secs(10));
    assert_eq!(
        w.client(bob).received(),
        vec![("alice".into(), "the real one".into(), true)],
        "seed {seed}: a replay or a forgery was shown"
    );
    let after = *w.client(bob).peer.as_ref().unwrap().stats();
    assert_eq!(after.received, before.received);
    assert!(after.forged >= before.forged + 3, "{after:?}");
}

/// Tickets (`crate::secure::ticket`): a daemon that no longer takes them costs a client one round trip
/// more, on the same association, never its session; one that issues them again has them used at its next
/// restart; a ticket past its lifetime is not even offered.
#[test]
fn a_refused_or_expired_ticket_falls_back_to_the_full_handshake() {
    let seed = seed_or(47);
    let mut w = world(seed, Netem::IDEAL);
    let ids = join(&mut w, ["anna", "bert"], seed);
    let registered_again = |w: &World| {
        ids.iter().all(|&i| {
            w.client(i).is_registered()
                && w.client(i).sees("anna", true)
                && w.client(i).sees("bert", true)
        })
    };
    let restart = |w: &mut World, tweak: fn(&mut crate::server::Config)| {
        w.stop_server();
        w.run_for(Duration::from_millis(100));
        tweak(&mut w.server_config);
        w.start_server();
        w.wait(PATIENCE, registered_again)
            .unwrap_or_else(|| panic!("seed {seed}: not back: {}", describe(w)));
        let s = w.daemon().server.stats();
        (s.handshakes, s.resumptions, s.tickets_refused)
    };
    // Tickets turned off: both offered theirs, were refused, and made the full handshake.
    assert_eq!(
        restart(&mut w, |c| c.ticket_lifetime = Duration::ZERO),
        (2, 0, 2)
    );
    // On again: that daemon issued none, so full handshakes; then this one's tickets serve the next.
    let on = |c: &mut crate::server::Config| c.ticket_lifetime = Duration::from_secs(5);
    assert_eq!(restart(&mut w, on), (2, 0, 0));
    assert_eq!(restart(&mut w, on), (2, 2, 0));
    // Past their lifetime (5 s), clients do not offer them.
    w.run_for(Duration::from_secs(6));
    assert_eq!(restart(&mut w, on), (2, 0, 0));
}

/// The fallback to a second WELCOME address is for the pinned key only: on first contact, a WELCOME from
/// another key while the chosen daemon's association is slow to come up is never tried.
#[test]
fn on_first_contact_a_second_welcome_of_another_key_is_no_fallback() {
    let seed = seed_or(48);
    let mut w = world(seed, Netem::IDEAL);
    let alice = w.add_client("alice", |_| {});
    // Past the first-contact wait (300 ms), alice connects to the real daemon; cut that link at once.
    let chose = w.wait(PATIENCE, |w| {
        count(w, alice, |e| matches!(e, ClientEvent::DaemonFound { .. })) > 0
    });
    assert!(chose.is_some(), "seed {seed}: {}", describe(&w));
    w.partition(Host::Client(alice), Host::Server, true);
    forged_welcome(
        &mut w,
        alice,
        crate::identity::PublicKey([7; 32]),
        "10.0.0.66",
    );
    w.run_for(Duration::from_secs(3));
    w.partition(Host::Client(alice), Host::Server, false);
    w.wait(PATIENCE, |w| w.client(alice).is_registered())
        .unwrap_or_else(|| panic!("seed {seed}: alice never registered: {}", describe(&w)));
    let found: Vec<SocketAddr> = w
        .client(alice)
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            ClientEvent::DaemonFound { addr } => Some(*addr),
            _ => None,
        })
        .collect();
    assert!(
        !found.iter().any(|a| a.ip().to_string() == "10.0.0.66"),
        "seed {seed}: tried another key's address: {found:?}"
    );
    assert_eq!(
        w.client(alice).pin,
        Pin::Key(w.daemon().server.config().identity.public())
    );
}
