//! The whole system in virtual time: the scenarios whose timing or absence the process-level tests could only
//! assert with wall clocks and sleeps (join, crash, mute, clean exit, a client restarted on its ports, a
//! stalled daemon, a nickname clash, daemon restarts), plus what no process test can arrange: loss,
//! duplication, reordering and partitions, and one host registering thousands of names and flooding HELLOs. Each test is deterministic for its seed (`MULTIPROTO_SIM_SEED`
//! replays one) and prints the seed when it fails.

use std::time::Duration;

use super::world::{Host, World};
use super::{Netem, Simulate, seed_or};
use crate::client::roster::{Applied, Change};
use crate::client::{self, ClientEvent};
use crate::nick::Nick;
use crate::peer::PeerEvent;
use crate::registry::wire::RegisterResult;
use crate::server;
use crate::time::Instant;

/// Long enough for anything these scenarios wait for; a wait that runs out is a failure, not a hang.
pub(super) const PATIENCE: Duration = Duration::from_secs(60);

pub(super) fn world(seed: u64, netem: Netem) -> World {
    let mut w = World::new(seed, netem);
    w.start_server();
    w
}

/// Adds clients and waits until each is registered and every roster holds all of them, online.
fn join_all(w: &mut World, nicks: &[&str], seed: u64) -> Vec<usize> {
    let ids: Vec<usize> = nicks.iter().map(|n| w.add_client(n, |_| {})).collect();
    let ok = w.wait(PATIENCE, |w| {
        ids.iter().all(|&i| {
            let c = w.client(i);
            c.is_registered() && nicks.iter().all(|n| c.sees(n, true))
        })
    });
    assert!(
        ok.is_some(),
        "seed {seed}: rosters never converged: {}",
        describe(w)
    );
    ids
}

/// [`join_all`] for a fixed number of clients, as an array to destructure.
pub(super) fn join<const K: usize>(w: &mut World, nicks: [&str; K], seed: u64) -> [usize; K] {
    let ids = join_all(w, &nicks, seed);
    std::array::from_fn(|i| ids[i])
}

pub(super) fn describe(w: &World) -> String {
    let mut s = format!("t={:?} net={:?}", w.now(), w.net.stats);
    for (i, c) in w.clients.iter().enumerate() {
        s += &format!(
            "\n  #{i} {} registered={} roster={:?}",
            c.nick,
            c.is_registered(),
            c.roster()
        );
    }
    s
}

/// Roster changes client `watcher` was told about, with when.
fn changes(w: &World, watcher: usize) -> Vec<(Instant, Change)> {
    w.client(watcher)
        .events
        .iter()
        .filter_map(|(t, e)| match e {
            ClientEvent::Roster(Applied::Changes(c)) => {
                Some(c.iter().map(move |c| (*t, c.clone())))
            }
            _ => None,
        })
        .flatten()
        .collect()
}

fn went_offline(w: &World, watcher: usize, nick: &str, after: Instant) -> Option<Instant> {
    changes(w, watcher).into_iter().find_map(|(t, c)| match c {
        Change::Offline(e) if e.nick.as_str() == nick && t >= after => Some(t),
        _ => None,
    })
}

/// Waits until `watcher` sees `nick` offline; how long after `since` it was told.
fn offline_after(w: &mut World, watcher: usize, nick: &str, since: Instant) -> Duration {
    w.wait(PATIENCE, |w| w.client(watcher).sees(nick, false))
        .unwrap_or_else(|| panic!("{nick} never went offline at client {watcher}"));
    went_offline(w, watcher, nick, since)
        .expect("offline in the roster without an offline change")
        .saturating_since(since)
}

fn registrations(w: &World, n: usize) -> usize {
    w.client(n)
        .events
        .iter()
        .filter(|(_, e)| matches!(e, ClientEvent::Registered { .. }))
        .count()
}

#[test]
fn clients_discover_register_and_see_each_other_join() {
    let seed = seed_or(1);
    let mut w = world(seed, Netem::IDEAL);
    let alice = w.add_client("alice", |_| {});
    let took = w.wait(PATIENCE, |w| w.client(alice).sees("alice", true));
    // First contact: one HELLO/WELCOME, the wait for another daemon's answer, the handshake, REGISTER and
    // the snapshot: a few round trips of 200 µs after the wait.
    let wait = client::FIRST_CONTACT_WAIT;
    assert!(
        took.is_some_and(|t| t > wait && t < wait + Duration::from_millis(10)),
        "seed {seed}: {took:?}"
    );
    // The daemon's key is pinned now: the next start goes straight to the handshake.
    assert!(matches!(w.client(alice).pin, crate::client::Pin::Key(_)));
    w.crash(Host::Client(alice));
    w.run_for(Duration::from_secs(5));
    let restarted = w.now();
    w.start_client(alice, |_| {});
    let took = w.wait(PATIENCE, |w| {
        w.client(alice).is_registered() && w.client(alice).sees("alice", true)
    });
    assert!(
        took.is_some_and(|t| t < Duration::from_millis(10)),
        "seed {seed}: pinned, registered again after {took:?} (from {restarted:?})"
    );
    assert_eq!(w.client(alice).roster(), vec![("alice".into(), true)]);
    let bob = w.add_client("bob", |_| {});
    let registered = w
        .wait(PATIENCE, |w| w.client(bob).is_registered())
        .map(|_| w.now())
        .expect("bob never registered");
    // bob's join reaches alice as a delta, within a round trip of his registration.
    let took = w.wait(PATIENCE, |w| w.client(alice).sees("bob", true));
    assert!(
        took.is_some_and(|t| t < Duration::from_millis(5)),
        "seed {seed}: {took:?}"
    );
    let joined = changes(&w, alice)
        .into_iter()
        .find(|(_, c)| matches!(c, Change::Joined(e) if e.nick.as_str() == "bob"));
    assert!(joined.is_some_and(|(t, _)| t >= registered), "seed {seed}");
    assert_eq!(
        w.client(bob).roster(),
        vec![("alice".into(), true), ("bob".into(), true)]
    );
    let (online, offline, _) = w.daemon().server.registry().counts();
    assert_eq!((online, offline), (2, 0));
    let log = &w.daemon().events;
    assert!(log.iter().any(|(_, e)| matches!(e, server::Event::Roster(crate::registry::Event::Joined { nick, .. }) if nick.as_str() == "bob")));
}

/// A client whose host vanished (no ICMP comes back) is offline at the others within the daemon's detection
/// bound, counted from its last heartbeat answer.
#[test]
fn a_silently_dead_client_goes_offline_within_the_detection_bound() {
    let seed = seed_or(2);
    let mut w = world(seed, Netem::IDEAL);
    w.icmp = false;
    let [watcher, victim] = join(&mut w, ["watcher", "victim"], seed);
    w.run_for(Duration::from_secs(5));
    let killed = w.now();
    w.crash(Host::Client(victim));
    let bound = w.daemon().server.config().detection_bound();
    w.wait(PATIENCE, |w| w.client(watcher).sees("victim", false))
        .expect("the dead client never went offline");
    let at = went_offline(&w, watcher, "victim", killed).expect("no offline change");
    let took = at.saturating_since(killed);
    assert!(
        took <= bound,
        "seed {seed}: offline after {took:?}, bound {bound:?}"
    );
    // And not before its silence could be known: at least the heartbeat retries.
    assert!(took >= Duration::from_millis(700), "seed {seed}: {took:?}");
}

/// With the OS reporting the closed port (ICMP port unreachable, as on one host or a LAN with a live machine),
/// the verdict comes at the daemon's next packet to the dead client: within one heartbeat interval.
#[test]
fn a_killed_client_whose_port_is_closed_goes_offline_within_a_heartbeat() {
    let seed = seed_or(3);
    let mut w = world(seed, Netem::IDEAL);
    let [watcher, victim] = join(&mut w, ["watcher", "victim"], seed);
    let killed = w.now();
    w.crash(Host::Client(victim));
    let took = offline_after(&mut w, watcher, "victim", killed);
    let hb = w.daemon().server.config().heartbeat;
    assert!(took <= hb + hb / 2, "seed {seed}: {took:?}");
    assert!(w.daemon().events.iter().any(|(_, e)| matches!(e,
        server::Event::Roster(crate::registry::Event::Offline { nick, why: "its port is closed" }) if nick.as_str() == "victim")));
}

#[test]
fn a_stopped_client_goes_offline_and_comes_back_after_it_continues() {
    let seed = seed_or(4);
    let mut w = world(seed, Netem::IDEAL);
    let [watcher, sleeper] = join(&mut w, ["watcher", "sleeper"], seed);
    let stopped = w.now();
    w.pause(Host::Client(sleeper));
    let took = offline_after(&mut w, watcher, "sleeper", stopped);
    let bound = w.daemon().server.config().detection_bound();
    assert!(took <= bound, "seed {seed}: {took:?}");
    w.run_for(Duration::from_secs(10));
    w.resume(Host::Client(sleeper));
    // It finds its association gone, looks for the daemon again and registers: online by itself.
    let back = w.wait(PATIENCE, |w| w.client(watcher).sees("sleeper", true));
    assert!(
        back.is_some_and(|t| t < Duration::from_secs(5)),
        "seed {seed}: {back:?}"
    );
    assert_eq!(registrations(&w, sleeper), 2);
}

#[test]
fn a_clean_exit_is_offline_at_once() {
    let seed = seed_or(5);
    let mut w = world(seed, Netem::IDEAL);
    let [watcher, leaver] = join(&mut w, ["watcher", "leaver"], seed);
    w.exit_client(leaver);
    // A graceful SHUTDOWN, not a heartbeat timeout: a few round trips.
    let took = w.wait(PATIENCE, |w| w.client(watcher).sees("leaver", false));
    assert!(
        took.is_some_and(|t| t < Duration::from_millis(5)),
        "seed {seed}: {took:?}"
    );
    assert!(
        w.client(leaver).client.is_none(),
        "the leaver's process did not end"
    );
    assert!(w.daemon().events.iter().any(|(_, e)| matches!(e,
        server::Event::Roster(crate::registry::Event::Offline { nick, why: "left" }) if nick.as_str() == "leaver")));
}

/// A roster change reaches each client as one SCTP message: its own head and the shared sealed body
/// together (`secure::broadcast`), not a tag and a body apart.
#[test]
fn a_delta_is_one_message_per_client() {
    let seed = seed_or(5);
    let mut w = world(seed, Netem::IDEAL);
    let nicks = ["ann", "ben", "cat", "leaver"];
    let ids = join_all(&mut w, &nicks, seed);
    w.run_for(Duration::from_secs(1));
    let out = |w: &World| w.daemon().server.endpoint().stats().messages_out;
    let before = out(&w);
    w.exit_client(ids[3]);
    let ok = w.wait(PATIENCE, |w| {
        ids[..3].iter().all(|&i| w.client(i).sees("leaver", false))
    });
    assert!(ok.is_some(), "seed {seed}: {}", describe(&w));
    w.run_for(Duration::from_secs(1));
    assert_eq!(
        out(&w) - before,
        3,
        "seed {seed}: one message to each who stayed"
    );
}

#[test]
fn a_client_restarted_on_the_same_ports_takes_its_entry_back_without_going_offline() {
    let seed = seed_or(6);
    let mut w = world(seed, Netem::IDEAL);
    let [watcher, phoenix] = join(&mut w, ["watcher", "phoenix"], seed);
    let first = w.client(phoenix).client.as_ref().unwrap().instance();
    let restarted = w.now();
    w.crash(Host::Client(phoenix));
    w.start_client(phoenix, |_| {});
    let second = w.client(phoenix).client.as_ref().unwrap().instance();
    assert_ne!(first, second);
    let took = w.wait(PATIENCE, |w| {
        w.client(watcher).client.as_ref().and_then(|c| {
            c.roster()
                .entries()
                .find(|e| e.nick.as_str() == "phoenix")
                .map(|e| e.instance)
        }) == Some(second)
    });
    assert!(
        took.is_some_and(|t| t < Duration::from_millis(50)),
        "seed {seed}: {took:?}"
    );
    assert_eq!(
        w.client(watcher).roster(),
        vec![("phoenix".into(), true), ("watcher".into(), true)]
    );
    w.run_for(Duration::from_secs(30));
    assert_eq!(
        went_offline(&w, watcher, "phoenix", restarted),
        None,
        "seed {seed}"
    );
    assert!(w.client(watcher).sees("phoenix", true));
}

/// A daemon stopped for 10 s (SIGSTOP, a suspended VM) loses its clients' associations, but nobody alive is
/// ever reported offline: the clients come back, and the daemon forgives what it could not hear.
#[test]
fn a_stalled_daemon_does_not_mark_healthy_clients_offline() {
    let seed = seed_or(7);
    let mut w = world(seed, Netem::IDEAL);
    let [watcher, healthy] = join(&mut w, ["watcher", "healthy"], seed);
    let stalled = w.now();
    w.pause(Host::Server);
    w.wait(PATIENCE, |w| {
        w.client(watcher)
            .first_event(stalled, |e| matches!(e, ClientEvent::DaemonLost { .. }))
            .is_some()
    })
    .expect("the watcher never noticed the stopped daemon");
    w.run_until(stalled + Duration::from_secs(10), 10_000_000, |_| false);
    w.resume(Host::Server);
    let back = w.wait(PATIENCE, |w| {
        registrations(w, watcher) == 2 && registrations(w, healthy) == 2
    });
    assert!(
        back.is_some_and(|t| t < Duration::from_secs(5)),
        "seed {seed}: {back:?}"
    );
    // Long enough for any wrong verdict (the detection bound, twice over) to have shown.
    w.run_for(Duration::from_secs(10));
    assert_eq!(
        went_offline(&w, watcher, "healthy", stalled),
        None,
        "seed {seed}"
    );
    assert!(w.client(watcher).sees("healthy", true));
    // Not even the daemon judged anyone offline (the clients all lost it, so none could have seen such a
    // verdict; it would show as an Offline event and a flap in everyone's roster).
    let verdicts: Vec<_> = w
        .daemon()
        .events
        .iter()
        .filter(|(t, e)| {
            *t >= stalled
                && matches!(
                    e,
                    server::Event::Roster(crate::registry::Event::Offline { .. })
                )
        })
        .collect();
    assert!(verdicts.is_empty(), "seed {seed}: {verdicts:?}");
    let flaps = w.client(watcher).client.as_ref().and_then(|c| {
        c.roster()
            .entries()
            .find(|e| e.nick.as_str() == "healthy")
            .map(|e| e.flaps)
    });
    assert_eq!(flaps, Some(0), "seed {seed}");
    assert!(w.daemon().server.stats().stalls >= 1);
    assert!(
        w.daemon()
            .events
            .iter()
            .any(|(_, e)| matches!(e, server::Event::Stalled(d) if *d >= Duration::from_secs(9)))
    );
}

#[test]
fn anothers_nickname_is_refused_with_a_reason_and_the_holder_is_undisturbed() {
    let seed = seed_or(8);
    let mut w = world(seed, Netem::IDEAL);
    let [first] = join(&mut w, ["taken"], seed);
    let second = w.add_client("taken", |_| {});
    w.wait(PATIENCE, |w| {
        w.client(second)
            .first_event(Instant::ZERO, |e| matches!(e, ClientEvent::Rejected { .. }))
            .is_some()
    })
    .expect("the clashing client was never refused");
    let rejected = w.client(second).events.iter().find_map(|(_, e)| match e {
        ClientEvent::Rejected { result, reason, .. } => Some((*result, reason.clone())),
        _ => None,
    });
    let (result, reason) = rejected.unwrap();
    // Another host, another key: the nickname is someone else's, whatever the clashing client claims.
    assert_eq!(result, RegisterResult::NickOwned);
    assert!(
        reason.contains("belongs to another") && reason.contains("choose another"),
        "{reason}"
    );
    let holder = w.client(first).ip.to_string();
    assert!(
        !reason.contains(&holder),
        "the refusal reveals the holder's address: {reason}"
    );
    w.run_for(Duration::from_secs(10));
    assert!(
        w.client(first)
            .events
            .iter()
            .all(|(_, e)| !matches!(e, ClientEvent::DaemonLost { .. }))
    );
    assert_eq!(w.daemon().server.registry().counts().0, 1);
    assert!(w.client(first).is_registered());
}

/// DESIGN.md: a daemon restart → every client registered again within 2 s. A graceful stop tells clients at
/// once; the new daemon's ANNOUNCE calls them back.
#[test]
fn clients_register_again_within_two_seconds_of_a_daemon_restart() {
    let seed = seed_or(9);
    let mut w = world(seed, Netem::IDEAL);
    let ids = join_all(&mut w, &["anna", "bert", "cleo"], seed);
    w.stop_server();
    let told = w.wait(PATIENCE, |w| {
        w.server.is_none()
            && ids.iter().all(|&i| {
                w.client(i)
                    .events
                    .iter()
                    .any(|(_, e)| matches!(e, ClientEvent::DaemonLost { .. }))
            })
    });
    // A graceful stop tells every client at once (SHUTDOWN, not a heartbeat timeout).
    assert!(
        told.is_some_and(|t| t < Duration::from_millis(5)),
        "seed {seed}: {told:?}"
    );
    w.run_for(Duration::from_millis(500));
    w.start_server();
    let took = w.wait(PATIENCE, |w| ids.iter().all(|&i| registrations(w, i) == 2));
    assert!(
        took.is_some_and(|t| t <= Duration::from_secs(2)),
        "seed {seed}: {took:?}"
    );
    // Each came back with the ticket of its first session: one key exchange, not the full handshake.
    let stats = w.daemon().server.stats();
    assert_eq!((stats.resumptions, stats.handshakes), (3, 3), "seed {seed}");
    // The saved roster came back with the daemon: everyone is one entry, online.
    let took = w.wait(PATIENCE, |w| {
        ids.iter().all(|&i| {
            w.client(i).roster()
                == vec![
                    ("anna".into(), true),
                    ("bert".into(), true),
                    ("cleo".into(), true),
                ]
        })
    });
    assert!(took.is_some(), "seed {seed}: {}", describe(&w));
}

/// A daemon killed with SIGKILL and started again on the same ports: clients find out from the closed port
/// (or their heartbeats), look for it, and come back to the new one, which loaded the roster saved before.
#[test]
fn clients_come_back_after_the_daemon_crashes_and_is_started_again() {
    let seed = seed_or(10);
    let mut w = world(seed, Netem::IDEAL);
    let ids = join_all(&mut w, &["anna", "bert"], seed);
    // Past the save delay: the roster is on disk.
    w.run_for(Duration::from_secs(2));
    assert!(w.disk.as_ref().is_some_and(|d| d.records.len() == 2));
    w.crash(Host::Server);
    w.run_for(Duration::from_secs(1));
    w.start_server();
    assert_eq!(
        w.daemon().server.registry().counts(),
        (0, 2, 0),
        "loaded offline until they register"
    );
    let took = w.wait(PATIENCE, |w| ids.iter().all(|&i| registrations(w, i) == 2));
    assert!(
        took.is_some_and(|t| t <= Duration::from_secs(2)),
        "seed {seed}: {took:?}"
    );
    assert_eq!(w.daemon().server.registry().counts().0, 2);
    // The tickets from before the crash still open: the new process derives the same ticket key.
    assert_eq!(w.daemon().server.stats().resumptions, 2, "seed {seed}");
}

/// Loss, duplication and reordering: every roster still converges, and every client stays registered.
#[test]
fn rosters_converge_on_a_lossy_reordering_duplicating_network() {
    for seed in [11, 12, 13] {
        let seed = seed_or(seed);
        let mut w = world(seed, Netem::LOSSY);
        let nicks: Vec<String> = (0..12).map(|i| format!("c{i}")).collect();
        let refs: Vec<&str> = nicks.iter().map(String::as_str).collect();
        let ids = join_all(&mut w, &refs, seed);
        // One leaves cleanly, one dies: everyone else learns both.
        w.exit_client(ids[0]);
        w.crash(Host::Client(ids[1]));
        let ok = w.wait(PATIENCE, |w| {
            ids[2..]
                .iter()
                .all(|&i| w.client(i).sees("c0", false) && w.client(i).sees("c1", false))
        });
        assert!(ok.is_some(), "seed {seed}: {}", describe(&w));
        w.run_for(Duration::from_secs(20));
        for &i in &ids[2..] {
            assert!(
                w.client(i).is_registered(),
                "seed {seed}: client {i} lost the daemon"
            );
            assert_eq!(w.client(i).roster().len(), 12, "seed {seed}");
        }
    }
}

/// A client cut off from the daemon (a partition, not a crash) goes offline at the others, and comes back by
/// itself once the link is restored.
#[test]
fn a_partitioned_client_goes_offline_and_returns_when_the_link_heals() {
    let seed = seed_or(14);
    let mut w = world(seed, Netem::IDEAL);
    let [watcher, island] = join(&mut w, ["watcher", "island"], seed);
    let cut = w.now();
    w.partition(Host::Client(island), Host::Server, true);
    let took = offline_after(&mut w, watcher, "island", cut);
    assert!(
        took <= w.daemon().server.config().detection_bound(),
        "seed {seed}: {took:?}"
    );
    w.run_for(Duration::from_secs(20));
    w.partition(Host::Client(island), Host::Server, false);
    let back = w.wait(PATIENCE, |w| w.client(watcher).sees("island", true));
    // The island retries discovery with backoff (at most 5 s between HELLOs, jittered).
    assert!(
        back.is_some_and(|t| t < Duration::from_secs(8)),
        "seed {seed}: {back:?}"
    );
}

fn queued(w: &World, n: usize, id: u64) -> bool {
    w.client(n)
        .chat
        .iter()
        .any(|(_, e)| matches!(e, PeerEvent::Queued { id: i, .. } if *i == id))
}

#[test]
fn a_chat_message_goes_peer_to_peer_and_is_acknowledged() {
    let seed = seed_or(20);
    let mut w = world(seed, Netem::IDEAL);
    let [alice, bob] = join(&mut w, ["alice", "bob"], seed);
    let sctp_before = w.daemon().server.endpoint().stats().messages_in;
    let queries_before = w.daemon().server.registry().stats().key_queries;
    let id = w.send_chat(alice, "bob", "hello bob").expect("send");
    let took = w.wait(PATIENCE, |w| {
        w.client(alice).delivered(id).is_some() && !w.client(bob).received().is_empty()
    });
    // alice asks the daemon for bob's key, then connect, the handshake, HELLO both ways, MSG, ACK; bob asks
    // for alice's key before showing the message as hers: a few round trips of 200 µs.
    assert!(
        took.is_some_and(|t| t < Duration::from_millis(5)),
        "seed {seed}: {took:?}"
    );
    assert_eq!(
        w.client(bob).received(),
        vec![("alice".into(), "hello bob".into(), true)]
    );
    // The daemon saw no part of it: only the two questions about keys.
    let queries = w.daemon().server.registry().stats().key_queries - queries_before;
    assert_eq!(queries, 2);
    assert_eq!(
        w.daemon().server.endpoint().stats().messages_in,
        sctp_before + queries
    );
    // The idle connection is reused for the next message: no new HELLO exchange, one round trip.
    let id2 = w.send_chat(alice, "bob", "again").unwrap();
    let took = w.wait(PATIENCE, |w| w.client(alice).delivered(id2).is_some());
    assert!(
        took.is_some_and(|t| t < Duration::from_millis(1)),
        "seed {seed}: {took:?}"
    );
}

#[test]
fn a_message_for_an_offline_peer_waits_and_arrives_once_when_it_returns() {
    let seed = seed_or(21);
    let mut w = world(seed, Netem::IDEAL);
    let [alice, bob] = join(&mut w, ["alice", "bob"], seed);
    w.crash(Host::Client(bob));
    w.wait(PATIENCE, |w| w.client(alice).sees("bob", false))
        .expect("bob never went offline");
    let id = w.send_chat(alice, "bob", "are you there?").unwrap();
    w.run_for(Duration::from_secs(30));
    assert!(queued(&w, alice, id), "seed {seed}: not reported queued");
    assert_eq!(w.client(alice).delivered(id), None);
    w.start_client(bob, |_| {});
    let took = w.wait(PATIENCE, |w| w.client(alice).delivered(id).is_some());
    assert!(
        took.is_some_and(|t| t < Duration::from_secs(1)),
        "seed {seed}: {took:?}"
    );
    w.run_for(Duration::from_secs(30));
    assert_eq!(
        w.client(bob).received(),
        vec![("alice".into(), "are you there?".into(), true)],
        "seed {seed}: not exactly once"
    );
}

/// A receiver stopped (SIGSTOP) while messages are in flight: they are delivered, once each, after it
/// continues, whether the sender had given the connection up meanwhile or not.
#[test]
fn messages_to_a_stopped_receiver_arrive_once_each_after_it_continues() {
    let seed = seed_or(22);
    let mut w = world(seed, Netem::IDEAL);
    let [alice, bob] = join(&mut w, ["alice", "bob"], seed);
    w.pause(Host::Client(bob));
    let ids: Vec<u64> = (0..5)
        .map(|i| w.send_chat(alice, "bob", &format!("m{i}")).unwrap())
        .collect();
    w.run_for(Duration::from_secs(20));
    w.resume(Host::Client(bob));
    let ok = w.wait(PATIENCE, |w| {
        ids.iter()
            .all(|&id| w.client(alice).delivered(id).is_some())
    });
    assert!(ok.is_some(), "seed {seed}: {:?}", w.client(alice).chat);
    w.run_for(Duration::from_secs(30));
    let mut got: Vec<String> = w.client(bob).received().into_iter().map(|m| m.1).collect();
    got.sort();
    assert_eq!(got, vec!["m0", "m1", "m2", "m3", "m4"], "seed {seed}");
}

/// DESIGN.md: a new client's roster with 100 000 registered is delivered whole, paced by the association's
/// flow control, never dropped; changes made while it arrives follow it with no gap. On a lossy network.
#[test]
fn a_new_client_gets_a_roster_of_100_000_whole_while_it_changes() {
    use crate::registry::wire::{Entry, Status};
    const N: usize = 100_000;
    let seed = seed_or(30);
    let netem = Netem {
        latency: Duration::from_micros(200),
        jitter: Duration::from_micros(100),
        loss: 0.01,
        duplicate: 0.0,
    };
    let mut w = World::new(seed, netem);
    let records = (0..N)
        .map(|i| crate::registry::saved::Record {
            entry: Entry {
                nick: Nick::new(&format!("m{i}")).unwrap(),
                instance: i as u64,
                status: Status::Offline,
                since_ms: 1_767_225_000_000 + i as u64,
                chat: std::net::SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 7000)),
                flaps: 0,
                extra: None,
            },
            key: Some(crate::identity::PublicKey([i as u8; 32])),
            host: None,
        })
        .collect();
    w.disk = Some(crate::registry::saved::Image {
        records,
        bindings: Vec::new(),
        version: 7,
        saved_unix_ms: 1_767_225_600_000,
    });
    w.start_server();
    let [anna, bert] = join(&mut w, ["anna", "bert"], seed);
    assert_eq!(w.client(anna).roster().len(), N + 2);
    let late = w.add_client("late", |_| {});
    // Changes while late's snapshot is on its way: a departure and an arrival.
    let mid_snapshot = w.wait(PATIENCE, |w| {
        let c = w.client(late).client.as_ref().unwrap();
        c.is_registered() && c.roster().version().is_none()
    });
    assert!(
        mid_snapshot.is_some(),
        "seed {seed}: never registered before its snapshot completed"
    );
    w.exit_client(bert);
    let extra = w.add_client("extra", |_| {});
    // Cheap checks only (this runs after every step): the same roster version everywhere, and late's copy
    // holding the changes; the copies themselves are compared once, below.
    let took = w.wait(PATIENCE, |w| {
        let v = |n: usize| {
            w.client(n)
                .client
                .as_ref()
                .and_then(|c| c.roster().version())
        };
        let c = w.client(late);
        v(late).is_some()
            && v(anna) == v(late)
            && v(extra) == v(late)
            && c.sees("bert", false)
            && c.sees("extra", true)
            && c.sees("late", true)
    });
    let online = |n: usize| -> Vec<String> {
        w.client(n)
            .roster()
            .into_iter()
            .filter(|e| e.1)
            .map(|e| e.0)
            .collect()
    };
    let version = |n: usize| {
        w.client(n)
            .client
            .as_ref()
            .and_then(|c| c.roster().version())
    };
    assert!(
        took.is_some(),
        "seed {seed}: late {} {:?} {:?}, anna {:?} {:?}, extra {:?} {:?}; {:?}",
        w.client(late).roster().len(),
        online(late),
        version(late),
        online(anna),
        version(anna),
        online(extra),
        version(extra),
        w.daemon().server.registry().stats()
    );
    let stats = *w.daemon().server.registry().stats();
    // One snapshot each: the changes made during late's arrived as deltas after it, with no gap to resync.
    let snapshots = |n: usize| {
        w.client(n)
            .events
            .iter()
            .filter(|(_, e)| matches!(e, ClientEvent::Roster(Applied::Snapshot(_))))
            .count()
    };
    assert_eq!(
        [snapshots(anna), snapshots(late), snapshots(extra)],
        [1, 1, 1],
        "seed {seed}"
    );
    assert!(stats.snapshots_paced >= 1, "{stats:?}");
    assert_eq!(stats.held_overflows, 0, "{stats:?}");
    // Everyone agrees (compared by count and a digest: a failure must not print 100 000 entries).
    let digest = |n: usize| {
        let r = w.client(n).roster();
        (
            r.len(),
            r.iter().filter(|e| e.1).count(),
            r.first().cloned(),
            r.last().cloned(),
        )
    };
    for n in [anna, extra] {
        let lost: Vec<_> = w
            .client(n)
            .events
            .iter()
            .filter(|(_, e)| !matches!(e, ClientEvent::Roster(_)))
            .collect();
        assert_eq!(digest(n), digest(late), "seed {seed}: client {n}: {lost:?}");
    }
}

/// Issue 14, item 6, as it was observed: one host registered 3 000 nicknames (all accepted, then kept for a
/// day as offline ghosts, across restarts) and had 50 000 HELLOs answered with as many WELCOMEs. With the
/// per-host limits, the same host gets 256 names and 64 ghosts, a HELLO flood gets it a burst of WELCOMEs
/// and then ten a second, and clients on other hosts join throughout as if nothing happened.
#[test]
fn one_host_registering_3000_names_leaves_the_roster_bounded_and_others_still_join() {
    use std::net::{IpAddr, SocketAddr};

    use super::world::SERVER_SCTP;
    use crate::client::{self, Client};
    use crate::nick::Nick;

    const NAMES: usize = 3000;
    let seed = seed_or(40);
    let mut w = world(seed, Netem::IDEAL);
    let [alice] = join(&mut w, ["alice"], seed);
    let cfg = w.server_config.clone();
    let (cap, ghosts) = (cfg.max_clients_per_host, cfg.max_offline_per_host);
    assert_eq!((cap, ghosts), (256, 64), "the defaults");
    let flooder: IpAddr = "10.66.0.1".parse().unwrap();
    // As a script would: straight to the daemon (no discovery), one association per name, no roster wanted.
    let daemon = SocketAddr::new(w.daemon().ip, SERVER_SCTP);
    let flood: Vec<usize> = (0..NAMES)
        .map(|i| {
            w.add_client_at(flooder, &format!("g{i}"), |c| {
                c.daemon = Some(daemon);
                c.subscribe = false;
            })
        })
        .collect();
    // Someone on another host starts in the middle of it, discovering the daemon as usual.
    let bob = w.add_client("bob", |_| {});
    let answered = |w: &World| {
        let st = w.daemon().server.registry().stats();
        st.registrations + st.host_refusals
    };
    let done = w.wait(PATIENCE, |w| {
        answered(w) >= NAMES as u64 + 2 && w.client(bob).sees("bob", true)
    });
    assert!(
        done.is_some(),
        "seed {seed}: {:?}",
        w.daemon().server.registry().stats()
    );
    let registered = flood
        .iter()
        .filter(|&&n| w.client(n).is_registered())
        .count();
    assert_eq!(registered, cap, "seed {seed}");
    let refusals: Vec<&String> = flood
        .iter()
        .flat_map(|&n| &w.client(n).events)
        .filter_map(|(_, e)| match e {
            ClientEvent::Rejected {
                result: RegisterResult::Full,
                reason,
                ..
            } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(refusals.len(), NAMES - cap, "seed {seed}");
    assert!(
        refusals[0].contains("from 10.66.0.1 (256,"),
        "{}",
        refusals[0]
    );
    let reg = w.daemon().server.registry();
    assert_eq!(reg.stats().host_refusals, (NAMES - cap) as u64);
    assert_eq!(reg.busiest_host(), Some((flooder, cap)));
    assert_eq!(reg.counts().0, cap + 2, "the flood's names, alice and bob");
    // bob and alice see each other; alice, who subscribed, holds the whole (bounded) roster.
    let ok = w.wait(PATIENCE, |w| {
        w.client(alice).sees("bob", true) && w.client(alice).roster().len() == cap + 2
    });
    assert!(
        ok.is_some(),
        "seed {seed}: {}",
        w.client(alice).roster().len()
    );

    // The flood's processes die. Their entries go offline, and the host keeps only its 64 most recent.
    for &n in &flood {
        if w.client(n).client.is_some() {
            w.crash(Host::Client(n));
        }
    }
    let ok = w.wait(PATIENCE, |w| {
        w.daemon().server.registry().busiest_host() == Some((flooder, ghosts))
            && w.client(alice).roster().len() == ghosts + 2
    });
    assert!(
        ok.is_some(),
        "seed {seed}: {:?}",
        w.daemon().server.registry().busiest_host()
    );
    let reg = w.daemon().server.registry();
    assert_eq!(reg.counts(), (2, ghosts, 0));
    assert_eq!(reg.stats().host_evictions, (cap - ghosts) as u64);
    let evicted = w
        .daemon()
        .events
        .iter()
        .filter(|(_, e)| {
            matches!(e, server::Event::Roster(crate::registry::Event::Evicted { host, .. }) if *host == flooder)
        })
        .count();
    assert_eq!(evicted, cap - ghosts);
    assert!(w.client(alice).sees("alice", true) && w.client(bob).is_registered());

    // A restart keeps the bound: the saved roster remembers which host each ghost came from.
    w.stop_server();
    w.run_for(Duration::from_secs(3));
    let saved = w.disk.as_ref().expect("saved on stop");
    assert_eq!(
        saved
            .records
            .iter()
            .filter(|r| r.host == Some(flooder))
            .count(),
        ghosts
    );
    w.start_server();
    assert_eq!(
        w.daemon().server.registry().busiest_host(),
        Some((flooder, ghosts))
    );
    let took = w.wait(PATIENCE, |w| {
        w.client(alice).is_registered()
            && w.client(bob).is_registered()
            && w.daemon().server.registry().counts().0 == 2
    });
    assert!(took.is_some(), "seed {seed}: alice and bob never came back");

    // 50 000 HELLOs from the flooder's address within a second: a burst of WELCOMEs, then ten a second. A
    // client on another host discovering meanwhile is answered at once.
    let mut hello = vec![0u8; crate::discovery::MAX_DATAGRAM];
    let mut probe = Client::new(
        client::Config::new(
            Nick::new("g0").unwrap(),
            1,
            w.group,
            40000,
            crate::identity::Identity::from_secret([9; 32]),
        ),
        [1; 32],
        w.now(),
    );
    let len = probe
        .poll_discovery_transmit(&mut hello)
        .expect("a client starts with a HELLO")
        .len;
    hello.truncate(len);
    let before = *w.daemon().server.stats();
    let from = SocketAddr::new(flooder, 40001);
    // The daemon's copy of what the flooder multicasts.
    let group_socket = SocketAddr::new(w.daemon().ip, w.group.port());
    let carol_started = w.now();
    let carol = w.add_client("carol", |_| {});
    for _ in 0..10 {
        for _ in 0..5000 {
            w.net.send(from, group_socket, &hello);
        }
        w.run_for(Duration::from_millis(100));
    }
    let st = *w.daemon().server.stats();
    let welcomes = st.hellos - before.hellos;
    let limited = st.hellos_rate_limited - before.hellos_rate_limited;
    assert_eq!(
        welcomes + limited,
        50_001,
        "the flood and carol's HELLO; seed {seed}: {st:?}"
    );
    // carol's one; to the flooder the burst of 20, then one every 100 ms for the second the flood lasted.
    let to_flooder = welcomes - 1;
    assert!(
        (20..=30).contains(&to_flooder),
        "seed {seed}: {to_flooder} WELCOMEs"
    );
    let registered = w.client(carol).first_event(carol_started, |e| {
        matches!(e, ClientEvent::Registered { .. })
    });
    // Within 50 ms of her first-contact wait (she listens that long for a second daemon before trusting
    // the one that answered).
    let wait = client::FIRST_CONTACT_WAIT;
    assert!(
        registered
            .is_some_and(|t| t.saturating_since(carol_started) < wait + Duration::from_millis(50)),
        "seed {seed}: carol registered at {registered:?}, started at {carol_started:?}"
    );
}
