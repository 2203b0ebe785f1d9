//! The daemon with real clients: discovery, registration, roster deltas, liveness (crash, stop, clean exit),
//! restarts on the same ports, a stalled daemon, nickname clashes, and hostile datagrams. Each test runs its
//! own `mpd run` and `mpc listen --json` processes on its own group and ports, multicast on 127.0.0.1.
//!
//! These check that the real processes do each thing, end to end, waiting for events with generous deadlines.
//! *How fast* (the detection bound, offline at once on a clean exit, back within 2 s of a restart) and that
//! something does *not* happen (a healthy client never marked offline) are asserted in virtual time by the
//! whole-system simulation (`src/sim/scenarios.rs`), where load on the machine cannot change the answer.

mod common;
mod roster_harness;

use std::net::UdpSocket;
use std::time::Duration;

use nix::sys::signal::Signal;
use roster_harness::*;

#[test]
fn clients_discover_register_and_see_each_other_join() {
    let net = Net::new("roster-join", 1);
    let mpd = Mpd::start(&net, &[]);
    let alice = Mpc::listen(&net, "alice", &[]);
    alice.wait_registered();
    // alice's first roster holds herself.
    let (roster, _) = alice
        .wait_for(Duration::from_secs(10), |v| v["event"] == "roster")
        .expect("no roster event");
    let nicks: Vec<&str> = roster["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["nick"].as_str())
        .collect();
    assert_eq!(nicks, vec!["alice"]);
    let bob = Mpc::listen(&net, "bob", &[]);
    bob.wait_registered();
    // bob's join reaches alice as a delta.
    let (joined, _) = alice
        .wait_for(Duration::from_secs(10), |v| is(v, "joined", "bob"))
        .expect("alice never heard bob join");
    assert_eq!(joined["status"], "online");
    assert!(joined["chat"].as_str().unwrap().starts_with("127.0.0.1:"));
    // bob's first roster has both.
    let (roster, _) = bob
        .wait_for(Duration::from_secs(10), |v| v["event"] == "roster")
        .unwrap();
    assert_eq!(roster["entries"].as_array().unwrap().len(), 2);
    // `mpc list` shows the two members, not itself.
    let entries = list(&net);
    let mut names: Vec<&str> = entries.iter().filter_map(|e| e["nick"].as_str()).collect();
    names.sort();
    assert_eq!(names, vec!["alice", "bob"]);
    let st = mpd.status().unwrap();
    assert_eq!(st["clients"]["online"], 2);
    assert!(mpd.log_contains("join: alice") && mpd.log_contains("join: bob"));
}

#[test]
fn a_killed_client_goes_offline_at_the_others() {
    let net = Net::new("roster-kill", 2);
    let _mpd = Mpd::start(&net, &[]);
    let watcher = Mpc::listen(&net, "watcher", &[]);
    watcher.wait_registered();
    let mut victim = Mpc::listen(&net, "victim", &[]);
    victim.wait_registered();
    watcher
        .wait_for(Duration::from_secs(10), |v| is(v, "joined", "victim"))
        .unwrap();
    victim.kill9();
    let (off, took) = watcher
        .wait_for(Duration::from_secs(10), |v| is(v, "offline", "victim"))
        .expect("the killed client never went offline");
    assert_eq!(off["status"], "offline");
    eprintln!("SIGKILL -> offline at the watcher: {took:?}");
}

#[test]
fn a_stopped_client_goes_offline_and_comes_back_after_sigcont() {
    let net = Net::new("roster-stop", 3);
    let _mpd = Mpd::start(&net, &[]);
    let watcher = Mpc::listen(&net, "watcher", &[]);
    watcher.wait_registered();
    let sleeper = Mpc::listen(&net, "sleeper", &[]);
    sleeper.wait_registered();
    watcher
        .wait_for(Duration::from_secs(10), |v| is(v, "joined", "sleeper"))
        .unwrap();
    // Mute but alive: its socket is open, it just answers nothing.
    sleeper.signal(Signal::SIGSTOP);
    watcher
        .wait_for(Duration::from_secs(10), |v| is(v, "offline", "sleeper"))
        .expect("the stopped client never went offline");
    sleeper.signal(Signal::SIGCONT);
    // It notices its association is gone, finds the daemon again and registers: online again by itself.
    watcher
        .wait_for(Duration::from_secs(20), |v| is(v, "online", "sleeper"))
        .expect("the continued client never came back online");
    assert!(
        sleeper
            .wait_for_nth(2, Duration::from_secs(5), |v| v["event"] == "registered")
            .is_some()
    );
}

#[test]
fn a_clean_exit_is_offline_at_once() {
    let net = Net::new("roster-exit", 4);
    let mpd = Mpd::start(&net, &[]);
    let watcher = Mpc::listen(&net, "watcher", &[]);
    watcher.wait_registered();
    let mut leaver = Mpc::listen(&net, "leaver", &[]);
    leaver.wait_registered();
    watcher
        .wait_for(Duration::from_secs(10), |v| is(v, "joined", "leaver"))
        .unwrap();
    leaver.signal(Signal::SIGINT);
    let st = leaver
        .wait_exit(Duration::from_secs(5))
        .expect("mpc did not exit on SIGINT");
    assert!(st.success(), "{st}");
    watcher
        .wait_for(Duration::from_secs(5), |v| is(v, "offline", "leaver"))
        .expect("no offline after a clean exit");
    // A graceful SHUTDOWN, not a heartbeat timeout: the daemon says so.
    assert!(mpd.log_contains("offline: leaver (left)"));
}

#[test]
fn a_client_restarted_on_the_same_ports_takes_its_entry_back() {
    let net = Net::new("roster-restart", 5);
    let _mpd = Mpd::start(&net, &[]);
    let watcher = Mpc::listen(&net, "watcher", &[]);
    watcher.wait_registered();
    let ports = ["--port", "28105", "--sctp-port", "28106"];
    let mut first = Mpc::listen(&net, "phoenix", &ports);
    first.wait_registered();
    let (joined, _) = watcher
        .wait_for(Duration::from_secs(10), |v| is(v, "joined", "phoenix"))
        .unwrap();
    first.kill9();
    let second = Mpc::listen(&net, "phoenix", &ports);
    second.wait_registered();
    // The new instance is online at the watcher, as one entry, without waiting for a timeout.
    let (online, _) = watcher
        .wait_for(Duration::from_secs(5), |v| is(v, "online", "phoenix"))
        .expect("the restarted client did not take its entry back");
    assert_ne!(online["instance"], joined["instance"]);
    let entries = list(&net);
    assert_eq!(
        entries.iter().filter(|e| e["nick"] == "phoenix").count(),
        1,
        "{entries:?}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["nick"] == "phoenix" && e["status"] == "online")
    );
}

#[test]
fn a_stalled_daemon_does_not_mark_healthy_clients_offline() {
    let net = Net::new("roster-stall", 6);
    let mpd = Mpd::start(&net, &[]);
    let watcher = Mpc::listen(&net, "watcher", &[]);
    watcher.wait_registered();
    let healthy = Mpc::listen(&net, "healthy", &[]);
    healthy.wait_registered();
    watcher
        .wait_for(Duration::from_secs(10), |v| is(v, "joined", "healthy"))
        .unwrap();
    mpd.signal(Signal::SIGSTOP);
    // Silence until both clients gave up on the daemon and look for it again.
    for c in [&watcher, &healthy] {
        assert!(
            c.wait_for(Duration::from_secs(20), |v| v["event"] == "daemon_lost")
                .is_some(),
            "{} never noticed the stopped daemon",
            c.nick
        );
    }
    mpd.signal(Signal::SIGCONT);
    // Both register again.
    for c in [&watcher, &healthy] {
        assert!(
            c.wait_for_nth(2, Duration::from_secs(20), |v| v["event"] == "registered")
                .is_some(),
            "{} never registered again",
            c.nick
        );
    }
    let st = mpd.status().expect("status after the stall");
    assert!(st["daemon"]["stalls"].as_u64().unwrap() >= 1, "{st}");
    // What the watcher was told so far never had healthy offline. (That no verdict comes later either is
    // the simulation's `a_stalled_daemon_does_not_mark_healthy_clients_offline`, in virtual time.)
    let offline: Vec<_> = watcher
        .events()
        .into_iter()
        .filter(|v| is(v, "offline", "healthy"))
        .collect();
    assert!(
        offline.is_empty(),
        "healthy was marked offline: {offline:?}"
    );
    let entries = list(&net);
    assert!(
        entries
            .iter()
            .any(|e| e["nick"] == "healthy" && e["status"] == "online"),
        "{entries:?}"
    );
    assert!(mpd.log_contains("stalled"));
}

#[test]
fn a_taken_nickname_is_refused_with_a_reason() {
    let net = Net::new("roster-clash", 7);
    let mpd = Mpd::start(&net, &[]);
    let first = Mpc::listen(&net, "taken", &[]);
    first.wait_registered();
    let mut second = Mpc::listen(&net, "taken", &[]);
    let st = second
        .wait_exit(Duration::from_secs(20))
        .expect("the clashing client kept running");
    assert_eq!(st.code(), Some(1));
    let (rej, _) = second
        .wait_for(Duration::from_secs(1), |v| v["event"] == "rejected")
        .unwrap();
    let reason = rej["reason"].as_str().unwrap();
    assert!(
        reason.contains("in use") && reason.contains("choose another"),
        "{reason}"
    );
    assert!(mpd.log_contains("rejected: \"taken\""));
    // The first holder is undisturbed.
    assert!(first.events().iter().all(|v| v["event"] != "daemon_lost"));
    assert_eq!(mpd.status().unwrap()["clients"]["online"], 1);
}

#[test]
fn an_invalid_nickname_is_refused_before_anything_is_sent() {
    let net = Net::new("roster-badnick", 8);
    let out = mpc(&net, &["--nick", "no spaces!", "listen", "--json"]);
    // A nickname mpc cannot use is a usage error (DESIGN.md: exit 2 in every binary).
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    // The rule, and the character that breaks it with its code point.
    assert!(
        err.contains("letters and digits") && err.contains("' ' (U+0020)"),
        "{err}"
    );
}

#[test]
fn hostile_datagrams_are_counted_and_the_daemon_keeps_serving() {
    let net = Net::new("roster-hostile", 9);
    let mpd = Mpd::start(&net, &[]);
    let group: std::net::SocketAddr = net.group.parse().unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket2::SockRef::from(&tx)
        .set_multicast_if_v4(&"127.0.0.1".parse().unwrap())
        .unwrap();
    let mut wrong_version = b"mpro\x09\x01\x00\x00".to_vec();
    wrong_version.extend_from_slice(&[0; 16]);
    for junk in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &wrong_version,
        // Our version, an unknown type.
        b"mpro\x02\x09\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\xff\x00\x00\x00",
        b"mpro\x01\x07",
        &[0u8; 0],
    ] {
        tx.send_to(junk, group).unwrap();
    }
    let sctp = format!("127.0.0.1:{}", net.sctp_port);
    for junk in [
        &[0u8; 3][..],
        &[0xff; 64],
        &[1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 1, 0, 0, 4],
    ] {
        tx.send_to(junk, &sctp).unwrap();
    }
    let counted = common::wait_until(Duration::from_secs(10), || {
        mpd.status().is_some_and(|s| {
            let d = &s["drops"];
            d["discovery_foreign"].as_u64() >= Some(1)
                && d["discovery_bad_version"].as_u64() >= Some(1)
                && d["discovery_malformed"].as_u64() >= Some(2)
                && d["sctp_malformed"].as_u64().unwrap_or(0)
                    + d["sctp_bad_checksum"].as_u64().unwrap_or(0)
                    >= 3
        })
    });
    assert!(counted, "drops not counted: {}", mpd.status().unwrap());
    // Still serving.
    let c = Mpc::listen(&net, "after", &[]);
    c.wait_registered();
}

#[test]
fn clients_register_again_by_themselves_after_a_daemon_restart() {
    let net = Net::new("roster-dmnrestart", 10);
    let mpd = Mpd::start(&net, &[]);
    let a = Mpc::listen(&net, "anna", &[]);
    let b = Mpc::listen(&net, "bert", &[]);
    a.wait_registered();
    b.wait_registered();
    mpd.stop();
    // A graceful stop tells the clients at once.
    assert!(
        a.wait_for(Duration::from_secs(5), |v| v["event"] == "daemon_lost")
            .is_some()
    );
    let mpd = Mpd::start(&net, &[]);
    for c in [&a, &b] {
        assert!(
            c.wait_for_nth(2, Duration::from_secs(10), |v| v["event"] == "registered")
                .is_some(),
            "{} did not register with the restarted daemon: {:?}",
            c.nick,
            c.events()
        );
    }
    let st = mpd.status().unwrap();
    assert_eq!(st["clients"]["online"], 2, "{st}");
    // Both came back with the ticket of their session with the daemon before: no full handshake.
    assert_eq!(st["daemon"]["resumptions"], 2, "{st}");
    assert_eq!(st["daemon"]["handshakes"], 2, "{st}");
}

/// A client of roster protocol 1 (PPID "MPR1", fixed-size entries) could not read this daemon's snapshots: its
/// REGISTER is answered, on its own protocol identifier, with a refusal that says what to do, and counted.
#[test]
fn a_client_of_the_old_roster_protocol_is_told_to_upgrade() {
    use multiproto::io::sctp_udp::UdpTransport;
    use multiproto::reactor::Reactor;
    use multiproto::registry::wire::{
        ClientMsg, PPID_V1, Register, RegisterResult, ServerMsg, flags,
    };
    use multiproto::sctp::{Endpoint, Event};

    let net = Net::new("roster-v1", 30);
    let mpd = Mpd::start(&net, &[]);
    let mut reactor = Reactor::new().unwrap();
    let mut udp = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), 1200).unwrap();
    udp.register(reactor.registry(), mio::Token(1)).unwrap();
    let mut ep = Endpoint::new(
        multiproto::client::sctp_config(5000, Duration::from_secs(1)),
        [7; 32],
    );
    let daemon = format!("127.0.0.1:{}", net.sctp_port).parse().unwrap();
    let id = ep.connect(reactor.now(), daemon, net.sctp_port).unwrap();
    let register = ClientMsg::Register(Register {
        flags: flags::SUBSCRIBE,
        instance: 1,
        nick: "old".into(),
        chat_port: 4000,
        chat_ip: None,
    });
    ep.send_owned(id, 0, false, PPID_V1, register.encode())
        .unwrap();
    let mut events = Vec::new();
    let mut reply = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while reply.is_none() && std::time::Instant::now() < deadline {
        let now = reactor.now();
        udp.write(now, &mut ep, reactor.registry(), mio::Token(1))
            .unwrap();
        let wake = ep
            .poll_timeout()
            .map_or(now + Duration::from_millis(50), |t| {
                t.min(now + Duration::from_millis(50))
            });
        reactor.turn(Some(wake), &mut events).unwrap();
        let now = reactor.now();
        udp.read(now, &mut ep).unwrap();
        if ep.poll_timeout().is_some_and(|t| t <= now) {
            ep.handle_timeout(now);
        }
        while let Some((_, e)) = ep.poll_event() {
            if let Event::Message { ppid, data, .. } = e {
                reply = Some((ppid, data));
            }
        }
    }
    let (ppid, data) = reply.expect("no answer to a protocol 1 REGISTER within 10 s");
    assert_eq!(ppid, PPID_V1);
    match ServerMsg::parse(&data) {
        Ok(ServerMsg::Registered { result, reason, .. }) => {
            assert_eq!(result, RegisterResult::BadRequest);
            assert!(reason.contains("upgrade the client"), "{reason}");
        }
        other => panic!("not a REGISTERED: {other:?}"),
    }
    let s = mpd.status().unwrap();
    assert_eq!(s["daemon"]["old_protocol"], 1, "{s}");
    assert_eq!(s["clients"]["online"], 0, "{s}");
}

/// DESIGN.md: a new client's roster with 100 000 registered is delivered whole, paced by the association's
/// flow control (the snapshot is about three times the 1 MiB send buffer), never dropped. The entries come
/// from a saved roster, loaded offline; `mpc list` must print every one of them.
#[test]
fn a_new_client_gets_a_roster_of_100_000_whole() {
    use multiproto::io::roster_file as persist;
    use multiproto::nick::Nick;
    use multiproto::registry::saved::{Image, Record};
    use multiproto::registry::wire::{Entry, Status};

    const N: usize = 100_000;
    let net = Net::new("roster-100k", 31);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let records: Vec<Record> = (0..N)
        .map(|i| Record {
            entry: Entry {
                nick: Nick::new(&format!("member-{i}")).unwrap(),
                instance: i as u64 + 1,
                status: Status::Offline,
                since_ms: now_ms - 60_000 + (i as u64 % 1000),
                chat: std::net::SocketAddr::from((
                    [10, (i >> 16) as u8, (i >> 8) as u8, i as u8],
                    4000,
                )),
                flaps: 0,
                extra: None,
            },
            key: Some(multiproto::identity::PublicKey([(i % 251) as u8; 32])),
            host: None,
        })
        .collect();
    let image = Image {
        records,
        bindings: Vec::new(),
        version: 5,
        saved_unix_ms: now_ms,
    };
    persist::save_roster(&net.dir, &image).unwrap();
    let mpd = Mpd::start(&net, &[]);
    let st = mpd.status().unwrap();
    assert_eq!(
        st["clients"]["offline"], N,
        "the saved roster did not load whole"
    );
    let started = std::time::Instant::now();
    let out = common::run_with_limit(
        std::process::Command::new(env!("CARGO_BIN_EXE_mpc"))
            .args(["--nick", "lister"])
            .args(net.client_args("lister"))
            .args(["--timeout", "60", "list", "--json"]),
        Duration::from_secs(90),
        b"",
    );
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "mpc list failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("no JSON from mpc list");
    let listed = v["entries"].as_array().expect("no entries");
    assert_eq!(listed.len(), N);
    let mut nicks: Vec<&str> = listed.iter().filter_map(|e| e["nick"].as_str()).collect();
    nicks.sort_unstable();
    nicks.dedup();
    assert_eq!(nicks.len(), N, "every entry once");
    eprintln!("mpc list of {N} entries: {took:?} (this build's profile)");
    // A member gets the same roster, itself included, and then deltas: the next join reaches it.
    let alice = Mpc::listen(&net, "alice", &[]);
    alice.wait_registered();
    let (roster, _) = alice
        .wait_for(Duration::from_secs(60), |v| v["event"] == "roster")
        .expect("alice got no roster");
    assert_eq!(roster["entries"].as_array().unwrap().len(), N + 1);
    let bob = Mpc::listen(&net, "bob", &[]);
    bob.wait_registered();
    alice
        .wait_for(Duration::from_secs(60), |v| is(v, "joined", "bob"))
        .expect("alice never heard bob join");
    let st = mpd.status().unwrap();
    let reg = &st["registry"];
    assert!(reg["snapshots_paced"].as_u64() >= Some(3), "{reg}");
    assert_eq!(reg["held_overflows"], 0, "{reg}");
    // Stopping saves 100 000 entries: in a debug build on a loaded machine that takes more than 10 s.
    mpd.stop_within(Duration::from_secs(120));
    // The saved roster is 18 MB: do not leave it behind.
    let _ = std::fs::remove_dir_all(&net.dir);
}
