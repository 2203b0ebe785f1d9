//! The whole system in virtual time, for conversations beyond two people: messages to a channel and to
//! everyone, channel membership and presence travelling as roster deltas, and renames. Deterministic for
//! each seed (`MULTIPROTO_SIM_SEED` replays one).

use std::time::Duration;

use super::scenarios::{PATIENCE, describe, join, world};
use super::world::{Host, World};
use super::{Netem, seed_or};
use crate::client::ClientEvent;
use crate::client::roster::{Applied, Change};
use crate::group::{ChannelName, Scope};
use crate::nick::Nick;
use crate::peer::{PeerEvent, Target};
use crate::registry::wire::RegisterResult;

fn ops() -> Scope {
    Scope::Channel(ChannelName::new("#ops").unwrap())
}

/// How many times client `n` reported message `id` delivered to `to`.
fn deliveries(w: &World, n: usize, id: u64, to: &str) -> usize {
    w.client(n)
        .chat
        .iter()
        .filter(|(_, e)| {
            matches!(e, PeerEvent::Delivered { id: i, to: Target::Nick(t) } if *i == id && t.as_str() == to)
        })
        .count()
}

/// How many times client `n` received `text` from `from` in `scope`.
fn copies(w: &World, n: usize, scope: Scope, from: &str, text: &str) -> usize {
    w.client(n)
        .received_in(scope)
        .iter()
        .filter(|(f, t)| f == from && t == text)
        .count()
}

/// Every roster change client `n` reported.
fn changes(w: &World, n: usize) -> Vec<Change> {
    w.client(n)
        .events
        .iter()
        .flat_map(|(_, e)| match e {
            ClientEvent::Roster(Applied::Changes(cs)) => cs.clone(),
            _ => Vec::new(),
        })
        .collect()
}

fn nicks(v: &[Nick]) -> Vec<&str> {
    v.iter().map(Nick::as_str).collect()
}

/// A channel of five, one of them offline; members join and leave while messages are under way, on a lossy,
/// duplicating, reordering network. Every message reaches each receiver its sender's roster named exactly
/// once (the offline member's copy once it is back), nobody else, and shows where it was said.
#[test]
fn channel_and_everyone_messages_arrive_exactly_once_while_members_come_and_go() {
    for seed in [31, 32] {
        let seed = seed_or(seed);
        let mut w = world(seed, Netem::LOSSY);
        let [alice, bob, carol, dave, erin, frank] = join(
            &mut w,
            ["alice", "bob", "carol", "dave", "erin", "frank"],
            seed,
        );
        for n in [alice, bob, carol, dave, erin] {
            w.set_channel(n, "#ops", true);
        }
        let everyone_sees = |w: &World, who: &[&str]| {
            (0..6)
                .filter(|&i| i != carol)
                .all(|i| who.iter().all(|n| w.client(i).sees_in(n, "#ops")))
        };
        w.wait(PATIENCE, |w| {
            everyone_sees(w, &["alice", "bob", "carol", "dave", "erin"])
        })
        .unwrap_or_else(|| panic!("seed {seed}: membership never spread: {}", describe(&w)));
        // Nobody outside it is shown in it.
        assert!(!w.client(alice).sees_in("frank", "#ops"));

        w.crash(Host::Client(carol));
        w.wait(PATIENCE, |w| {
            (0..6)
                .filter(|&i| i != carol)
                .all(|i| w.client(i).sees("carol", false))
        })
        .expect("carol never went offline");
        // Still a member while offline: the daemon keeps her entry and its channels.
        assert!(w.client(alice).sees_in("carol", "#ops"), "seed {seed}");

        let (m1, to1) = w.send_in(alice, ops(), "one").unwrap();
        assert_eq!(nicks(&to1), ["bob", "carol", "dave", "erin"], "seed {seed}");
        // Mid-way: dave leaves and frank joins while the next message goes out on alice's roster as it was.
        w.set_channel(dave, "#ops", false);
        w.set_channel(frank, "#ops", true);
        let (m2, to2) = w.send_in(alice, ops(), "two").unwrap();
        assert_eq!(to2, to1, "seed {seed}: alice's roster changed at once");
        w.wait(PATIENCE, |w| {
            w.client(alice).sees_in("frank", "#ops") && !w.client(alice).sees_in("dave", "#ops")
        })
        .unwrap_or_else(|| panic!("seed {seed}: join and part never spread"));
        let (m3, to3) = w.send_in(alice, ops(), "three").unwrap();
        assert_eq!(
            nicks(&to3),
            ["bob", "carol", "erin", "frank"],
            "seed {seed}"
        );
        // To everyone online: carol is not, and is not queued for.
        let (m4, to4) = w.send_in(bob, Scope::Everyone, "all").unwrap();
        assert_eq!(
            nicks(&to4),
            ["alice", "dave", "erin", "frank"],
            "seed {seed}"
        );

        let sent = [
            (alice, m1, &to1),
            (alice, m2, &to2),
            (alice, m3, &to3),
            (bob, m4, &to4),
        ];
        let online_done = |w: &World| {
            sent.iter().all(|(n, id, to)| {
                to.iter()
                    .filter(|r| r.as_str() != "carol")
                    .all(|r| deliveries(w, *n, *id, r.as_str()) == 1)
            })
        };
        w.wait(PATIENCE, online_done)
            .unwrap_or_else(|| panic!("seed {seed}: not all delivered: {}", describe(&w)));
        w.start_client(carol, |_| {});
        w.wait(PATIENCE, |w| {
            [m1, m2, m3]
                .iter()
                .all(|&id| deliveries(w, alice, id, "carol") == 1)
        })
        .unwrap_or_else(|| panic!("seed {seed}: carol's copies never came: {}", describe(&w)));
        // Long enough for any retransmission or duplicate to have shown up.
        w.run_for(Duration::from_secs(30));

        for (sender, id, to) in &sent {
            for r in to.iter() {
                assert_eq!(
                    deliveries(&w, *sender, *id, r.as_str()),
                    1,
                    "seed {seed}: delivery of {id} to {r}"
                );
            }
        }
        let from = |n| w.client(n).nick.to_string();
        let expect = [
            (m1, "one", &to1, ops(), alice),
            (m2, "two", &to2, ops(), alice),
            (m3, "three", &to3, ops(), alice),
            (m4, "all", &to4, Scope::Everyone, bob),
        ];
        for (_, text, to, scope, sender) in expect {
            for i in 0..6 {
                let want = usize::from(to.iter().any(|r| *r == w.client(i).nick));
                assert_eq!(
                    copies(&w, i, scope, &from(sender), text),
                    want,
                    "seed {seed}: {text:?} at {}",
                    w.client(i).nick
                );
            }
        }
        // Every copy verified as its sender's, and none arrived as one-to-one.
        for i in 0..6 {
            for (_, e) in &w.client(i).chat {
                if let PeerEvent::Message {
                    verified, scope, ..
                } = e
                {
                    assert!(*verified, "seed {seed}");
                    assert_ne!(*scope, Scope::Direct, "seed {seed}");
                }
            }
        }
        // Carol, back, is in #ops still, and knows it.
        assert!(w.client(alice).sees_in("carol", "#ops"), "seed {seed}");
        let c = w.client(carol).client.as_ref().unwrap();
        assert!(c.channels().any(|ch| ch.as_str() == "#ops"), "seed {seed}");
    }
}

/// Away and back, a channel join, and a rename reach every other client as roster changes; the renamed
/// client keeps its channels and presence, is reachable under its new name, and its old name stays its own.
#[test]
fn presence_and_renames_travel_as_deltas() {
    let seed = seed_or(33);
    let mut w = world(seed, Netem::IDEAL);
    let [alice, bob] = join(&mut w, ["alice", "bob"], seed);
    w.set_channel(alice, "#dev", true);
    w.clients[alice]
        .client
        .as_mut()
        .unwrap()
        .set_away(Some("lunch".into()))
        .unwrap();
    w.wait(PATIENCE, |w| {
        changes(w, bob).iter().any(|c| {
            matches!(c, Change::Presence { nick, away: Some(m) } if nick.as_str() == "alice" && m == "lunch")
        })
    })
    .unwrap_or_else(|| panic!("seed {seed}: bob never saw alice away"));
    assert!(changes(&w, bob).iter().any(|c| matches!(
        c,
        Change::Channel { nick, channel, joined: true } if nick.as_str() == "alice" && channel.as_str() == "#dev"
    )));
    let alicia = Nick::new("alicia").unwrap();
    w.clients[alice]
        .client
        .as_mut()
        .unwrap()
        .rename(alicia)
        .unwrap();
    w.wait(PATIENCE, |w| {
        changes(w, bob).iter().any(|c| {
            matches!(c, Change::Renamed { from, to } if from.as_str() == "alice" && *to == alicia)
        })
    })
    .unwrap_or_else(|| panic!("seed {seed}: bob never saw the rename"));
    // Reported as a rename, not as alicia joining.
    assert!(
        !changes(&w, bob)
            .iter()
            .any(|c| matches!(c, Change::Joined(e) if e.nick == alicia))
    );
    assert!(
        w.client(bob).sees("alicia", true)
            && !w.client(bob).roster().iter().any(|(n, _)| n == "alice")
    );
    assert!(w.client(bob).sees_in("alicia", "#dev"));
    let c = w.client(alice).client.as_ref().unwrap();
    assert_eq!(c.nick(), alicia);
    assert!(w.client(alice).events.iter().any(
        |(_, e)| matches!(e, ClientEvent::Renamed { from, to } if from.as_str() == "alice" && *to == alicia)
    ));
    // Messages both ways under the new name, verified.
    let id = w.send_chat(bob, "alicia", "hi alicia").unwrap();
    w.wait(PATIENCE, |w| {
        w.client(bob).delivered(id).is_some() && !w.client(alice).received().is_empty()
    })
    .expect("bob's message to alicia");
    assert_eq!(
        w.client(alice).received(),
        vec![("bob".into(), "hi alicia".into(), true)]
    );
    let id = w.send_chat(alice, "bob", "from alicia").unwrap();
    w.wait(PATIENCE, |w| {
        w.client(alice).delivered(id).is_some() && !w.client(bob).received().is_empty()
    })
    .expect("alicia's message to bob");
    assert_eq!(
        w.client(bob).received(),
        vec![("alicia".into(), "from alicia".into(), true)]
    );
    // Back: bob sees it.
    w.clients[alice]
        .client
        .as_mut()
        .unwrap()
        .set_away(None)
        .unwrap();
    w.wait(PATIENCE, |w| {
        changes(w, bob)
            .iter()
            .any(|c| matches!(c, Change::Presence { nick, away: None } if *nick == alicia))
    })
    .expect("bob never saw alicia back");
    // The old name stays bound to alicia's key: someone else cannot take it (and her messages).
    let mallory = w.add_client("alice", |_| {});
    w.wait(PATIENCE, |w| {
        w.client(mallory).events.iter().any(|(_, e)| {
            matches!(
                e,
                ClientEvent::Rejected {
                    result: RegisterResult::NickOwned,
                    ..
                }
            )
        })
    })
    .unwrap_or_else(|| panic!("seed {seed}: the old nickname was up for grabs"));
    // A rename to a name in use is refused with the reason, and changes nothing.
    w.clients[alice]
        .client
        .as_mut()
        .unwrap()
        .rename(Nick::new("bob").unwrap())
        .unwrap();
    w.wait(PATIENCE, |w| {
        w.client(alice).events.iter().any(|(_, e)| {
            matches!(e, ClientEvent::Answered { refusal: Some(r), .. } if r.contains("bob"))
        })
    })
    .expect("the refusal");
    assert_eq!(w.client(alice).client.as_ref().unwrap().nick(), alicia);
}
