//! The trust features of issue 14 that exist today, exercised by the real binaries on a LAN of network
//! namespaces (tests/common/lan.rs): real multicast discovery across a bridge, every host its own network
//! stack, every `mpc` user with a state directory (and so a key and pins) of their own.
//!
//! - a second daemon on the LAN moves no client that pinned the first, and a new client with nothing pinned
//!   refuses to choose between them until told a fingerprint;
//! - a nickname is owned by its key: another host cannot take it, its owner offline or online (and is told
//!   the same either way), and the messages queued for it reach the owner only;
//! - registrations and rosters cross the LAN encrypted (no nickname, no fingerprint in a capture), and with a
//!   network secret an outsider learns nothing and joins nothing;
//! - one host registering thousands of names fills only its own share of the roster;
//! - a host holding hundreds of connections to a client's chat port does not stop others' messages.
//!
//! - frames forged on a victim's own host are never shown as the victim's.
//!
//! Every wait has a deadline; nothing sleeps hoping that something happened.
//!
//! Needs root, iproute2 and tcpdump; without them the tests skip, or fail in CI (see
//! tests/common/require.rs).

mod common;
#[path = "common/lan.rs"]
mod lan;

use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::skip_unless;
use lan::*;
use serde_json::Value;

/// Bound for one awaited event of a healthy LAN (a registration, a roster, a delivery, a status change):
/// each takes well under a second here, so this is only the point where waiting becomes a failure.
const WITHIN: Duration = Duration::from_secs(10);

/// Limit for one short-lived program run to completion (`mpc list`, `mpd status`, `mpd key`).
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// The daemon's SCTP-over-UDP port (mpd's default, which [`Host::spawn_mpd`] keeps).
const SCTP_PORT: u16 = 9899;

// ---------------------------------------------------------------------------------------------------------
// Helpers

/// The JSON object on one output line (None for anything else).
fn json(line: &str) -> Option<Value> {
    serde_json::from_str(line).ok()
}

/// Whether `line` is `listen --json`'s event `event`.
fn is_event(line: &str, event: &str) -> bool {
    json(line).is_some_and(|v| v["event"] == event)
}

/// Every `listen --json` event `event` that `p` printed so far.
fn events(p: &Proc, event: &str) -> Vec<Value> {
    p.lines()
        .iter()
        .filter(|l| is_event(l, event))
        .filter_map(|l| json(l))
        .collect()
}

/// Waits (up to [`WITHIN`]) for `p`'s first `event` event for which `pred` holds, and returns it; panics
/// with everything `p` printed if none came. `what` names it in that message.
fn expect_event(p: &Proc, event: &str, mut pred: impl FnMut(&Value) -> bool, what: &str) -> Value {
    let line = p.expect_line(
        |l| json(l).is_some_and(|v| v["event"] == event && pred(&v)),
        Instant::now() + WITHIN,
        what,
    );
    json(&line).unwrap()
}

/// Waits until the `listen --json` client `p` is registered and has shown its first roster; returns the
/// `registered` event (it carries `chat_port`).
fn expect_registered(p: &Proc) -> Value {
    let reg = expect_event(p, "registered", |_| true, "registered");
    expect_event(p, "roster", |_| true, "roster");
    reg
}

/// Stdout and stderr of a finished program, for assertions and failure messages.
fn output_text(out: &Output) -> String {
    format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `mpd key --dir` of the daemon [`Host::spawn_mpd`] started on `h`: its key's fingerprint, as its operator
/// would read it to users (`mpk:…`).
fn fingerprint(h: &Host) -> String {
    let dir = h.mpd_dir();
    let out = h.run(
        mpd_exe(),
        ["key".as_ref(), "--dir".as_ref(), dir.as_os_str()],
        RUN_LIMIT,
    );
    assert!(out.status.success(), "mpd key: {}", output_text(&out));
    let fp = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(fp.starts_with("mpk:"), "mpd key printed {fp:?}");
    fp
}

/// `mpd status --json` of the daemon [`Host::spawn_mpd`] started on `h` (asked over its control socket).
fn mpd_status(h: &Host) -> Value {
    try_mpd_status(h).unwrap_or_else(|out| panic!("mpd status: {}", output_text(&out)))
}

/// `mpd status --json` of `h`'s daemon, or what `mpd status` said if it got no status: exit 4 says the
/// daemon holds its pidfile but did not answer within `mpd status`'s timeout (a loop busy with a flood).
fn try_mpd_status(h: &Host) -> Result<Value, Output> {
    let dir = h.mpd_dir();
    let out = h.run(
        mpd_exe(),
        [
            "status".as_ref(),
            "--dir".as_ref(),
            dir.as_os_str(),
            "--json".as_ref(),
        ],
        RUN_LIMIT,
    );
    if !out.status.success() {
        return Err(out);
    }
    Ok(serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("mpd status --json is not JSON ({e}): {}", output_text(&out))))
}

/// Polls `h`'s `mpd status --json` until `pred` holds, for at most `limit`; returns that status, or panics
/// with the last one. The daemon's counters change as it handles packets, so there is no line to wait for.
/// A daemon too busy to answer one poll (`mpd status` exit 4) is polled again, unless it is dead.
fn wait_status(
    h: &Host,
    limit: Duration,
    what: &str,
    mut pred: impl FnMut(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let last = match try_mpd_status(h) {
            Ok(v) if pred(&v) => return v,
            Ok(v) => format!("{v:#}"),
            Err(out) if out.status.code() == Some(4) => output_text(&out),
            Err(out) => panic!("mpd status: {}", output_text(&out)),
        };
        assert!(
            Instant::now() < deadline,
            "host {}'s daemon: {what} not seen within {limit:?}; last status:\n{last}",
            h.index()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A network secret as SECURITY.md tells operators to make one (32 random bytes, base64, mode 0600), in
/// `dir`. One file serves every host: the hosts share this machine's file system.
fn write_secret(dir: &Path) -> PathBuf {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let mut raw = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .expect("cannot read /dev/urandom");
    let path = dir.join("network.secret");
    std::fs::write(&path, data_encoding::BASE64.encode(&raw) + "\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

// ---------------------------------------------------------------------------------------------------------
// 1. Pinned daemon keys

/// alice and bob pinned host 1's daemon. A second daemon starts on host 4 (its own key, same group) and
/// announces itself: both clients say so once, naming both keys, and stay with host 1, which keeps them online
/// while host 4 never gets a client. A newcomer with nothing pinned hears both daemons, names both keys and
/// gives up; told host 1's fingerprint, it registers there.
#[test]
fn a_second_daemon_on_another_host_leaves_every_client_where_it_was() {
    skip_unless!(require_lan());
    let lan = Lan::new(4);
    let (h1, h2, h3, h4) = (lan.host(1), lan.host(2), lan.host(3), lan.host(4));
    h1.spawn_mpd(&[]);
    let fp1 = fingerprint(h1);

    let alice = h2.spawn_mpc("alice", &["listen", "--json"]);
    let bob = h3.spawn_mpc("bob", &["listen", "--json"]);
    for c in [&alice, &bob] {
        expect_registered(c);
        // First contact: the key is pinned (in known_daemons) once the handshake proved it, and the client
        // says which one; this is what the second daemon must not displace.
        let pinned = expect_event(
            c,
            "trust",
            |v| {
                v["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("trusting the daemon")
            },
            "trust (the daemon's key pinned)",
        );
        assert!(
            pinned["message"].as_str().unwrap().contains(&fp1),
            "{} pinned another key than host 1's {fp1}: {pinned}",
            c.name()
        );
    }

    // The second daemon: it multicasts ANNOUNCEs (at 0, 0.2 and 1.2 s) that every client hears.
    h4.spawn_mpd(&[]);
    let fp4 = fingerprint(h4);
    assert_ne!(fp1, fp4, "two daemons made the same key");
    for c in [&alice, &bob] {
        let notice = expect_event(
            c,
            "trust",
            |v| {
                v["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("not the key this client trusts")
            },
            "trust (a daemon with another key is not followed)",
        );
        let msg = notice["message"].as_str().unwrap();
        assert!(
            msg.contains(&fp4) && msg.contains(&fp1) && msg.contains(&h4.addr().to_string()),
            "{}'s notice does not name host 4 ({}) with its key {fp4} and the pinned {fp1}: {msg}",
            c.name(),
            h4.addr()
        );
    }

    // Host 4 announces itself three times over 1.2 s; host 1's daemon counts the ANNOUNCEs of another
    // daemon it hears on the group. Once all three have crossed the LAN, what alice and bob did with each is
    // in their output by the time the checks at the end read it (carol's two runs come in between).
    let s1 = wait_status(h1, WITHIN, "host 4's three ANNOUNCEs", |v| {
        v["daemon"]["foreign_announces"].as_u64().unwrap_or(0) >= 3
    });
    assert_eq!(s1["clients"]["online"], 2, "host 1's daemon: {s1:#}");
    let s4 = mpd_status(h4);
    assert_eq!(s4["clients"]["online"], 0, "host 4's daemon: {s4:#}");
    assert_eq!(s4["associations"], 0, "host 4's daemon: {s4:#}");

    // A newcomer with nothing pinned: both daemons answer its HELLO within its 300 ms of listening, so it
    // trusts neither, names both, and exits 1.
    let carol = h2.spawn_mpc("carol", &["listen", "--json"]);
    let st = carol.wait_exit(Instant::now() + WITHIN);
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(1),
        "carol, hearing two daemons with nothing pinned, did not give up with exit 1: {}",
        carol.describe()
    );
    let disagree = events(&carol, "trust")
        .into_iter()
        .find(|v| v["message"].as_str().unwrap_or("").contains("two daemons"))
        .unwrap_or_else(|| panic!("carol did not say two daemons answer: {}", carol.describe()));
    let msg = disagree["message"].as_str().unwrap();
    assert!(
        msg.contains(&fp1) && msg.contains(&fp4) && msg.contains("--daemon-key"),
        "carol's notice does not name both keys ({fp1}, {fp4}) and --daemon-key: {msg}"
    );
    assert!(
        events(&carol, "registered").is_empty(),
        "carol registered although she trusts neither daemon: {}",
        carol.describe()
    );

    // Told host 1's fingerprint, she registers there (and only there).
    let carol = h2.spawn_mpc("carol", &["--daemon-key", &fp1, "listen", "--json"]);
    expect_registered(&carol);
    let found = events(&carol, "daemon_found");
    assert!(
        !found.is_empty()
            && found.iter().all(|v| {
                v["daemon"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with(&format!("{}:", h1.addr()))
            }),
        "carol, given host 1's key, connected elsewhere: {}",
        carol.describe()
    );

    // The handshake proved host 1 holds that key: it is now carol's pin, so her next run needs no
    // --daemon-key, goes to host 1 again and says once that host 4's key is not the one she trusts.
    carol.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        carol
            .wait_exit(Instant::now() + WITHIN)
            .is_some_and(|s| s.success()),
        "{}",
        carol.describe()
    );
    let carol = h2.spawn_mpc("carol", &["listen", "--json"]);
    expect_registered(&carol);
    let found = events(&carol, "daemon_found");
    assert!(
        found.iter().all(|v| {
            v["daemon"]
                .as_str()
                .unwrap_or("")
                .starts_with(&format!("{}:", h1.addr()))
        }),
        "carol, with host 1's key pinned, connected elsewhere: {}",
        carol.describe()
    );
    assert!(
        events(&carol, "trust")
            .iter()
            .all(|v| !v["message"].as_str().unwrap_or("").contains("two daemons")),
        "carol, with a key pinned, still hesitates between two daemons: {}",
        carol.describe()
    );
    // Host 4 answered her HELLO too.
    expect_event(
        &carol,
        "trust",
        |v| {
            let m = v["message"].as_str().unwrap_or("");
            m.contains("not the key this client trusts") && m.contains(&fp4) && m.contains(&fp1)
        },
        "trust (host 4's key is not the pinned one)",
    );

    // The daemons' own view: host 1 holds all three, host 4 has never registered anyone.
    let s1 = wait_status(h1, WITHIN, "alice, bob and carol online", |v| {
        v["clients"]["online"] == 3
    });
    assert_eq!(s1["key"], fp1.as_str(), "{s1:#}");
    let s4 = mpd_status(h4);
    assert_eq!(s4["key"], fp4.as_str(), "{s4:#}");
    assert_eq!(s4["clients"]["online"], 0, "host 4's daemon: {s4:#}");
    assert_eq!(s4["clients"]["offline"], 0, "host 4's daemon: {s4:#}");
    assert_eq!(
        s4["registry"]["registrations"], 0,
        "host 4's daemon: {s4:#}"
    );

    // All along (from host 4's start through both of carol's runs), alice and bob stayed where they were:
    // registered once, with host 1, never losing it.
    for c in [&alice, &bob] {
        assert!(
            c.try_status().is_none(),
            "{} exited: {}",
            c.name(),
            c.describe()
        );
        assert_eq!(
            events(c, "registered").len(),
            1,
            "{} registered again: {}",
            c.name(),
            c.describe()
        );
        assert!(
            events(c, "daemon_lost").is_empty(),
            "{} lost its daemon: {}",
            c.name(),
            c.describe()
        );
        for v in events(c, "daemon_found") {
            assert!(
                v["daemon"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with(&format!("{}:", h1.addr())),
                "{} went to another daemon: {v}",
                c.name()
            );
        }
        // The mismatch is said once, not once per ANNOUNCE (host 4 sent three).
        let mismatches = events(c, "trust")
            .iter()
            .filter(|v| v["message"].as_str().unwrap_or("").contains(&fp4))
            .count();
        assert_eq!(mismatches, 1, "{}: {}", c.name(), c.describe());
    }
}

// ---------------------------------------------------------------------------------------------------------
// 2. Owned nicknames

/// alice registers from host 2 and leaves; bob (host 3) queues a message for her. mallory on host 4 asks for
/// the nickname alice with her own key: refused (exit 1, "belongs to another user's key"), counted by the
/// daemon. The real alice comes back and gets the message; mallory never does, and asking again with alice
/// online gets the same refusal, word for word.
#[test]
fn an_offline_nickname_cannot_be_taken_from_another_host_and_queued_messages_reach_the_owner() {
    skip_unless!(require_lan());
    let lan = Lan::new(4);
    let (h1, h2, h3, h4) = (lan.host(1), lan.host(2), lan.host(3), lan.host(4));
    h1.spawn_mpd(&[]);
    let text = "for-alice-only-7c1e";

    // alice registers (her key now owns the nickname) and leaves cleanly: offline at once.
    let alice = h2.spawn_mpc("alice", &["listen", "--json"]);
    expect_registered(&alice);
    alice.signal(nix::sys::signal::Signal::SIGTERM);
    let st = alice.wait_exit(Instant::now() + WITHIN);
    assert!(st.is_some_and(|s| s.success()), "{}", alice.describe());

    // bob writes to her. `mpc send --now` does not wait for an offline receiver: it exits 3 and sends and
    // saves nothing...
    let out = h3.run_mpc(
        "bob",
        &["--timeout", "10", "send", "--now", "alice", "not-queued"],
        RUN_LIMIT,
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "send to offline alice: {}",
        output_text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("offline"),
        "{}",
        output_text(&out)
    );
    // ...while the console (commands on stdin) queues the message until she is back.
    let bob = h3.spawn_mpc_console("bob", &[]);
    bob.expect_line(
        |l| l.contains("registered as bob"),
        Instant::now() + WITHIN,
        "registered as bob",
    );
    bob.write_line(&format!("msg alice {text}"));
    bob.expect_line(
        |l| l.contains("queued") && l.contains("alice"),
        Instant::now() + WITHIN,
        "queued for alice",
    );

    // mallory on host 4, her own state directory and so her own key, asks for the nickname.
    let out = h4.run_mpc("alice", &["--timeout", "10", "listen", "--json"], RUN_LIMIT);
    let all = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "mallory was not refused: {all}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("belongs to another user's key"),
        "mallory's refusal does not say the nickname is another key's: {all}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout
            .lines()
            .any(|l| is_event(l, "registered") || is_event(l, "roster")),
        "mallory registered or read the roster: {all}"
    );
    assert!(
        !stdout.contains(text),
        "mallory received the message: {all}"
    );
    // The refusal said nothing about where the owner is, and the daemon counted it.
    assert!(
        !all.contains(&h2.addr().to_string()),
        "the refusal reveals alice's address: {all}"
    );
    let st = wait_status(h1, WITHIN, "the takeover refused", |v| {
        v["registry"]["owned_refusals"].as_u64().unwrap_or(0) >= 1
    });
    assert_eq!(st["registry"]["owned_refusals"], 1, "{st:#}");
    assert_eq!(st["clients"]["online"], 1, "only bob is online: {st:#}");
    assert!(
        !bob.lines().iter().any(|l| l.contains("delivered")),
        "bob delivered the message while alice was away: {}",
        bob.describe()
    );

    // The owner comes back (same host, same state directory, same key) and gets it.
    let alice = h2.spawn_mpc("alice", &["listen", "--json"]);
    expect_registered(&alice);
    let m = expect_event(&alice, "message", |_| true, "the queued message");
    assert_eq!(m["from"], "bob", "{m}");
    assert_eq!(m["text"], text, "{m}");
    assert!(
        m["addr"]
            .as_str()
            .unwrap_or("")
            .starts_with(&format!("{}:", h3.addr())),
        "the message did not come from bob's host: {m}"
    );
    bob.expect_line(
        |l| l.contains("delivered") && l.contains("alice"),
        Instant::now() + WITHIN,
        "delivered to alice",
    );
    // With the owner online, mallory is refused in the very same words: a refusal never tells whether (or
    // where) the owner is online.
    let again = h4.run_mpc("alice", &["--timeout", "10", "listen", "--json"], RUN_LIMIT);
    assert_eq!(again.status.code(), Some(1), "{}", output_text(&again));
    assert!(
        !String::from_utf8_lossy(&again.stdout).contains(text),
        "{}",
        output_text(&again)
    );
    assert_eq!(
        String::from_utf8_lossy(&again.stderr),
        String::from_utf8_lossy(&out.stderr),
        "mallory's refusal differs with alice online"
    );
    // Acknowledged means alice's copy is the one printed; it was sent once, to her.
    let messages = events(&alice, "message");
    assert_eq!(messages.len(), 1, "{}", alice.describe());
    assert!(
        !alice.lines().iter().any(|l| l.contains("not-queued")),
        "the refused send was delivered after all: {}",
        alice.describe()
    );
    let s = mpd_status(h1);
    assert_eq!(s["registry"]["owned_refusals"], 2, "{s:#}");
    assert_eq!(s["clients"]["online"], 2, "{s:#}");
    assert!(alice.try_status().is_none(), "{}", alice.describe());
}

// ---------------------------------------------------------------------------------------------------------
// 3. What a capture of registrations and rosters shows

/// Nicknames no other bytes of a capture contain by chance.
const ALICE: &str = "zyxalice";
const BOB: &str = "zyxbob";
const CAROL: &str = "zyxcarol";
/// The nickname `mpc list` gives (it goes to the daemon, for its log).
const LISTER: &str = "zyxlister";
/// Outsiders without the network secret.
const OUTSIDER: &str = "zyxoutsider";
const PROWLER: &str = "zyxprowler";
const INTRUDER: &str = "zyxintruder";

/// On a LAN of 5 hosts with the daemon on host 1: alice, bob and carol register from hosts 2 to 4 and `mpc
/// list --json` runs on host 5, while the bridge is captured. `list` shows the three, yet no nickname and
/// not the daemon's fingerprint crosses the LAN in clear, although the capture holds the SCTP traffic of
/// every client host. With `secret`, every party holds the network secret, and an outsider on host 5
/// without it is told a secret is needed, reads nothing and joins no roster.
fn registrations_and_rosters_show_no_nickname(secret: bool) {
    let lan = Lan::new(5);
    let (h1, h5) = (lan.host(1), lan.host(5));
    let secret_path = secret.then(|| write_secret(lan.dir()));
    let secret_args: Vec<&str> = match &secret_path {
        Some(p) => vec!["--secret-file", p.to_str().unwrap()],
        None => Vec::new(),
    };
    let with = |rest: &[&'static str]| -> Vec<&str> {
        secret_args
            .iter()
            .copied()
            .chain(rest.iter().copied())
            .collect()
    };
    h1.spawn_mpd(&secret_args);
    let fp = fingerprint(h1);
    // The daemon's public key, which WELCOME and ANNOUNCE carry in clear by design: finding it in the
    // capture shows the capture holds discovery payloads byte for byte.
    let daemon_key = multiproto::io::keyfile::load(&h1.mpd_dir().join("daemon.key"))
        .expect("cannot read the daemon's key")
        .public()
        .0;

    let cap = lan.capture();
    let clients: Vec<Proc> = [ALICE, BOB, CAROL]
        .iter()
        .enumerate()
        .map(|(i, nick)| {
            lan.host(i + 2)
                .spawn_mpc(nick, &with(&["listen", "--json"]))
        })
        .collect();
    for c in &clients {
        expect_registered(c);
    }
    let list = |nick: &str, timeout: &str, args: &[&str]| {
        let mut rest = args.to_vec();
        rest.extend(["--timeout", timeout, "list", "--json"]);
        h5.run_mpc(nick, &rest, RUN_LIMIT)
    };
    let listed = |out: &Output| -> Vec<(String, String)> {
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("list --json printed no JSON ({e}): {}", output_text(out)));
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["nick"].as_str().unwrap().to_string(),
                    e["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let out = list(LISTER, "10", &with(&[]));
    assert!(out.status.success(), "list: {}", output_text(&out));
    let mut roster = listed(&out);
    roster.sort();
    let online = |n: &str| (n.to_string(), "online".to_string());
    assert_eq!(
        roster,
        [online(ALICE), online(BOB), online(CAROL)],
        "list --json: {}",
        output_text(&out)
    );

    if secret {
        // An outsider's one-shot `list`: the daemon answers its HELLO only to say that a secret is
        // needed, and no handshake completes without it, so it gets nothing and says why.
        let out = list(OUTSIDER, "3", &[]);
        assert_ne!(
            out.status.code(),
            Some(0),
            "list without the secret: {}",
            output_text(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("requires the network secret"),
            "list without the secret does not say a secret is needed: {}",
            output_text(&out)
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains(ALICE),
            "list without the secret printed the roster: {}",
            output_text(&out)
        );
        // An outsider that skips discovery and opens a session straight to the daemon's address (a
        // handshake without the secret's PSK): refused in words, nothing read.
        let daemon = format!("{}:{SCTP_PORT}", h1.addr());
        let out = list(INTRUDER, "3", &["--daemon", &daemon]);
        assert_ne!(
            out.status.code(),
            Some(0),
            "list --daemon without the secret: {}",
            output_text(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("secret"),
            "list --daemon without the secret does not say a secret is needed: {}",
            output_text(&out)
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains(ALICE),
            "list --daemon without the secret printed the roster: {}",
            output_text(&out)
        );
        // An outsider that stays (`listen`): told the same, never registered.
        let prowler = h5.spawn_mpc(PROWLER, &["listen", "--json"]);
        expect_event(
            &prowler,
            "trust",
            |v| {
                v["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("requires the network secret")
            },
            "trust (a secret is needed)",
        );
        // Its HELLOs keep going out meanwhile; a second roster read with the secret comes after them.
        let out = list(LISTER, "10", &with(&[]));
        assert!(out.status.success(), "list: {}", output_text(&out));
        let names: Vec<String> = listed(&out).into_iter().map(|(n, _)| n).collect();
        assert!(
            !names
                .iter()
                .any(|n| [OUTSIDER, PROWLER, INTRUDER].contains(&n.as_str())),
            "an outsider is in the roster: {names:?}"
        );
        assert!(
            events(&prowler, "registered").is_empty() && events(&prowler, "roster").is_empty(),
            "the outsider registered or read the roster: {}",
            prowler.describe()
        );
        let s = mpd_status(h1);
        assert_eq!(s["clients"]["online"], 3, "{s:#}");
        prowler.kill();
    }

    let pcap = cap.stop();
    // The capture holds what the assertions below are about: SCTP over UDP between the daemon and every
    // client host (registrations, rosters, heartbeats), and discovery.
    let udp = udp_datagrams(&pcap);
    for i in 2..=5 {
        let from = lan.host(i).addr();
        let n = udp
            .iter()
            .filter(|d| d.src.0 == from && d.dst == (h1.addr(), SCTP_PORT))
            .count();
        assert!(
            n >= 3,
            "the capture holds {n} SCTP datagrams from host {i} to the daemon ({} UDP datagrams in all)",
            udp.len()
        );
    }
    assert!(
        contains(&pcap, daemon_key),
        "the capture does not hold the daemon's WELCOMEs (its public key is not in it)"
    );
    for nick in [ALICE, BOB, CAROL, LISTER, OUTSIDER, PROWLER, INTRUDER] {
        assert!(
            !contains(&pcap, nick),
            "the nickname {nick} crossed the LAN in clear (the capture is kept in {})",
            lan.dir().display()
        );
    }
    assert!(
        !contains(&pcap, &fp),
        "the daemon's fingerprint {fp} crossed the LAN in clear"
    );
    for c in &clients {
        assert!(c.try_status().is_none(), "{}", c.describe());
    }
}

#[test]
fn a_capture_of_registrations_and_rosters_shows_no_nickname() {
    skip_unless!(require_lan() && require_tcpdump());
    registrations_and_rosters_show_no_nickname(false);
    registrations_and_rosters_show_no_nickname(true);
}

// ---------------------------------------------------------------------------------------------------------
// 4. The per-host cap

/// The cap given to the daemon: small, so the test is quick, and far below the names registered.
const HOST_CAP: u64 = 200;
/// Registrations attempted from one host.
const FLOOD: u64 = 3000;
/// Registrations one mpbench process attempts, all at once.
const ROUND: u64 = 250;

/// From host 2, 3 000 associations to host 1's daemon, each registering a name of its own: host 2 holds
/// exactly its per-host cap of entries, the rest are refused and counted, and a client on host 3 then joins
/// and sees itself in the roster.
///
/// The 3 000 come from twelve mpbench processes of 250 simulated clients, started one after another, each
/// once the daemon has answered the one before: every registration costs both ends a Noise handshake (a few
/// X25519 operations), which in these unoptimised test builds take milliseconds, and 3 000 handshakes at once
/// took the daemon longer than its 5 s handshake deadline, so that clients were aborted and retried over and
/// over. Every process stays alive to the end, so the names registered stay online and hold the cap.
#[test]
fn three_thousand_registrations_from_one_host_leave_the_roster_bounded_and_another_host_still_joins()
 {
    skip_unless!(require_lan());
    let lan = Lan::new(3);
    let (h1, h2, h3) = (lan.host(1), lan.host(2), lan.host(3));
    h1.spawn_mpd(&["--max-clients-per-host", &HOST_CAP.to_string()]);

    // What the daemon has answered for host 2: entries it holds for it, and registrations it refused (for
    // the cap, or the rare nickname two processes' random name prefixes would share).
    let answered = |v: &Value| {
        let n = |k: &str| v["registry"][k].as_u64().unwrap_or(0);
        v["limits"]["busiest_host_entries"].as_u64().unwrap_or(0)
            + n("host_refusals")
            + n("owned_refusals")
    };
    let daemon = format!("{}:{SCTP_PORT}", h1.addr());
    let clients = ROUND.to_string();
    let mut benches: Vec<Proc> = Vec::new();
    let mut st = Value::Null;
    let t0 = Instant::now();
    for round in 1..=FLOOD / ROUND {
        // `idle --liveness-only`: each simulated client registers without taking the roster (the flood is
        // about names, not roster bytes). `--batch` equal to `--clients` connects them all at once: mpbench
        // waits for a batch to register before starting the next, and refused clients never do. It never
        // finishes on its own here (refused clients are a failed setup to it, after its own long deadline);
        // the LAN's teardown ends it.
        let seed = round.to_string();
        let bench = h2.spawn(
            &format!("mpbench{round}@h2"),
            mpbench_exe(),
            [
                "idle",
                "--clients",
                &clients,
                "--batch",
                &clients,
                "--liveness-only",
                "--duration",
                "600",
                "--seed",
                &seed,
                "--daemon",
                &daemon,
                "--quiet",
            ],
        );
        benches.push(bench);
        st = wait_status(
            h1,
            WITHIN,
            &format!(
                "round {round}: {} registrations from host 2 answered",
                round * ROUND
            ),
            |v| {
                for b in &benches {
                    assert!(
                        b.try_status().is_none(),
                        "mpbench ended early: {}",
                        b.describe()
                    );
                }
                answered(v) >= round * ROUND
            },
        );
    }
    eprintln!(
        "{FLOOD} registrations answered in {:?}; daemon: {} handshakes, {} handshake timeouts, longest \
         stall {} ms",
        t0.elapsed(),
        st["daemon"]["handshakes"],
        st["daemon"]["handshake_timeouts"],
        st["daemon"]["longest_stall_ms"]
    );
    let limits = &st["limits"];
    assert_eq!(limits["max_clients_per_host"], HOST_CAP, "{st:#}");
    assert_eq!(limits["busiest_host"], h2.addr().to_string(), "{st:#}");
    assert_eq!(
        limits["busiest_host_entries"], HOST_CAP,
        "host 2 should hold exactly its cap: {st:#}"
    );
    assert!(
        limits["host_refusals"].as_u64().unwrap() >= FLOOD - HOST_CAP,
        "{st:#}"
    );
    let c = &st["clients"];
    assert!(
        c["online"].as_u64().unwrap() + c["offline"].as_u64().unwrap() <= HOST_CAP,
        "{st:#}"
    );

    // Another host still joins while the flooder holds its share.
    let carol = h3.spawn_mpc("carol", &["listen", "--json"]);
    expect_registered(&carol);
    let roster = events(&carol, "roster").remove(0);
    let entries = roster["entries"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["nick"] == "carol" && e["status"] == "online"),
        "carol is not online in her own roster ({} entries)",
        entries.len()
    );
    assert_eq!(entries.len() as u64, HOST_CAP + 1, "{roster}");
    let st = mpd_status(h1);
    assert_eq!(st["limits"]["busiest_host_entries"], HOST_CAP, "{st:#}");
    assert_eq!(st["clients"]["online"], HOST_CAP + 1, "{st:#}");
}

// ---------------------------------------------------------------------------------------------------------
// 5. A hog on the chat port

/// Connections host 2 opens to bob's chat port, and keeps open (reopening those bob closes).
const HOG_CONNECTIONS: usize = 300;
/// How often the hog replaces the connections bob closed (a pace, not a wait for an event).
const HOG_REFILL: Duration = Duration::from_millis(500);

/// bob listens on host 3. Host 2 opens 300 TCP connections to bob's chat port and holds them, sending
/// nothing, reopening any bob closes, while alice on host 4 sends bob a message: it is acknowledged (exit 0)
/// and bob prints it. Then the hog stops reopening, and bob closes every connection it still holds (none
/// that said nothing survives bob's 3 s HELLO deadline).
#[test]
fn a_hog_on_the_chat_port_does_not_stop_others_messages() {
    skip_unless!(require_lan());
    let lan = Lan::new(4);
    let (h1, h2, h3, h4) = (lan.host(1), lan.host(2), lan.host(3), lan.host(4));
    h1.spawn_mpd(&[]);
    let bob = h3.spawn_mpc("bob", &["listen", "--json"]);
    let port = expect_registered(&bob)["chat_port"].as_u64().unwrap() as u16;
    let target = (h3.addr(), port);

    let stop = AtomicBool::new(false);
    let text = "through-the-hog-41d9";
    let report = std::thread::scope(|s| {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let hog = s.spawn(|| h2.in_netns(|| hog(target, &stop, ready_tx)));
        // Whatever fails here, the hog must be stopped before the scope can end.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // The hog holds all 300 before alice starts.
            assert!(
                ready_rx.recv_timeout(WITHIN).is_ok(),
                "the hog could not open {HOG_CONNECTIONS} connections"
            );
            let out = h4.run_mpc(
                "alice",
                &["--timeout", "10", "send", "bob", text],
                RUN_LIMIT,
            );
            assert_eq!(
                out.status.code(),
                Some(0),
                "alice's send did not get through the hog: {}\nbob: {}",
                output_text(&out),
                bob.describe()
            );
            let m = expect_event(&bob, "message", |_| true, "alice's message");
            assert_eq!(m["from"], "alice", "{m}");
            assert_eq!(m["text"], text, "{m}");
            assert!(
                m["addr"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with(&format!("{}:", h4.addr())),
                "{m}"
            );
        }));
        stop.store(true, Ordering::Relaxed);
        let report = hog.join();
        if let Err(p) = result {
            std::panic::resume_unwind(p);
        }
        report.unwrap_or_else(|p| std::panic::resume_unwind(p))
    });
    eprintln!("hog: {report:?}");
    assert!(
        report.all_closed,
        "bob still held some of the hog's silent connections {WITHIN:?} after it stopped reopening them: \
         {report:?}"
    );
    assert!(bob.try_status().is_none(), "{}", bob.describe());
}

/// What the hog saw.
#[derive(Debug)]
struct HogReport {
    /// Connections it opened in all.
    opened: usize,
    /// Of those, the ones bob closed.
    closed: usize,
    /// Whether bob had closed every one within [`WITHIN`] after the hog stopped reopening them.
    all_closed: bool,
}

/// The hog (run inside host 2's namespace): opens [`HOG_CONNECTIONS`] connections to `target`, says so on
/// `ready`, then until `stop` keeps that many open, replacing every one the other end closed, every
/// [`HOG_REFILL`]; then waits (up to [`WITHIN`]) for the other end to close the ones left. Sends nothing.
///
/// Refilling keeps bob's table of silent connections from host 2 full of fresh ones all through alice's
/// send (without it, bob's 3 s HELLO deadline would soon leave nothing of the hog), at a pace the two cores
/// shared by every process of the LAN can take: a refill is up to 300 connections, each evicting another.
fn hog(
    target: (Ipv4Addr, u16),
    stop: &AtomicBool,
    ready: std::sync::mpsc::Sender<()>,
) -> HogReport {
    use std::io::Read;
    let connect = || {
        let c = TcpStream::connect_timeout(&target.into(), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("the hog cannot connect to {target:?}: {e}"));
        c.set_nonblocking(true).unwrap();
        Some(c)
    };
    let mut conns: Vec<Option<TcpStream>> = (0..HOG_CONNECTIONS).map(|_| connect()).collect();
    let mut report = HogReport {
        opened: HOG_CONNECTIONS,
        closed: 0,
        all_closed: false,
    };
    let _ = ready.send(());
    let mut buf = [0u8; 256];
    // Reads what bob sent (it may greet with its own HELLO) and says whether bob closed the connection:
    // end of file, or an error such as a reset.
    let mut closed_by_bob = |c: &mut TcpStream| loop {
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    };
    while !stop.load(Ordering::Relaxed) {
        for c in &mut conns {
            if c.as_mut().is_some_and(&mut closed_by_bob) {
                report.closed += 1;
                report.opened += 1;
                *c = connect();
            }
        }
        std::thread::sleep(HOG_REFILL);
    }
    let deadline = Instant::now() + WITHIN;
    while Instant::now() < deadline && !report.all_closed {
        for c in &mut conns {
            if c.as_mut().is_some_and(&mut closed_by_bob) {
                report.closed += 1;
                *c = None;
            }
        }
        report.all_closed = conns.iter().all(Option::is_none);
        // Polling the sockets (the hog has no event loop): a pace, as above.
        std::thread::sleep(Duration::from_millis(50));
    }
    report
}

/// Chat frames that claim to be alice: her HELLO, then message `id` with `text`.
fn as_alice(id: u64, text: &str) -> Vec<u8> {
    use multiproto::peer::frame::Frame;
    let mut b = Vec::new();
    Frame::Hello {
        nick: multiproto::nick::Nick::new("alice").unwrap(),
        instance: 1,
    }
    .encode(&mut b);
    Frame::Msg {
        id,
        sent_ms: 1,
        scope: multiproto::group::Scope::Direct,
        text: text.into(),
    }
    .encode(&mut b);
    b
}

/// A chat connection from host 2 (alice's host) to `bob_chat`, inside its namespace, that writes `bytes` and
/// reads until bob closes it (or [`WITHIN`] passes). Returns what bob wrote and whether he closed it.
fn forge_from(host: &Host, bob_chat: (Ipv4Addr, u16), bytes: Vec<u8>) -> (Vec<u8>, bool) {
    use std::io::{Read, Write};
    host.in_netns(move || {
        let mut s = TcpStream::connect(bob_chat).expect("connect to bob's chat port");
        s.set_read_timeout(Some(WITHIN)).unwrap();
        s.write_all(&bytes).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return (got, true),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, true),
                Err(_) => return (got, false),
            }
        }
    })
}

/// Frames forged on alice's own host are never shown as hers: old plaintext frames are not even read as
/// chat, and a sender with a key of its own that claims to be alice is shown as an unknown key.
#[test]
fn frames_forged_from_the_victims_own_host_are_not_shown_as_hers() {
    use multiproto::identity::Identity;
    use multiproto::peer::channel::{Channel, Keys};
    use multiproto::secure::Seeds;

    skip_unless!(require_lan());
    let lan = Lan::new(3);
    let (h1, h2, h3) = (lan.host(1), lan.host(2), lan.host(3));
    h1.spawn_mpd(&[]);
    let alice = h2.spawn_mpc("alice", &["listen", "--json"]);
    expect_registered(&alice);
    let bob = h3.spawn_mpc("bob", &["listen", "--json"]);
    let port = expect_registered(&bob)["chat_port"].as_u64().unwrap() as u16;
    let bob_chat = (h3.addr(), port);
    // The real alice, first: shown as hers.
    let out = h2.run_mpc("alice", &["send", "bob", "really-alice-1"], RUN_LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let m = expect_event(
        &bob,
        "message",
        |m| m["text"] == "really-alice-1",
        "alice's message",
    );
    assert_eq!(
        (&m["from"], &m["verified"]),
        (&Value::from("alice"), &Value::from(true)),
        "{m}"
    );
    let alice_key = m["key"].clone();

    // 1. The chat protocol before encryption, from alice's address: HELLO as alice, then a MSG.
    let plain = as_alice(1, "forged-plain-9c2e");
    let (_, closed) = forge_from(h2, bob_chat, plain);
    assert!(closed, "bob kept a connection that spoke no Noise");

    // 2. Noise, with a key of its own (mallory's, on alice's host), claiming to be alice.
    let bob_id = multiproto::io::keyfile::load(
        &h3.state_dir("bob")
            .join(multiproto::io::keyfile::CLIENT_KEY),
    )
    .expect("bob's key");
    let mallory = Identity::from_secret([0x66; 32]);
    let mallory_fp = mallory.public().fingerprint().to_string();
    let mut seeds = Seeds::new(&[3; 32]);
    let (mut chan, first) = Channel::outgoing(
        &mut Keys {
            me: &mallory,
            psk: None,
            seeds: &mut seeds,
        },
        Some(&bob_id.public()),
    );
    let bytes = h2.in_netns(move || {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(bob_chat).unwrap();
        s.set_read_timeout(Some(WITHIN)).unwrap();
        s.write_all(&first).unwrap();
        // bob's handshake answer (and his sealed HELLO) arrive together or in pieces: read until the
        // session opens.
        let mut buf = [0u8; 4096];
        let (mut got_plain, mut wire) = (Vec::new(), Vec::new());
        while !chan.is_open() {
            let n = s.read(&mut buf).expect("bob answered the handshake");
            assert!(n > 0, "bob closed a well-formed handshake");
            chan.read(
                &buf[..n],
                &mut Keys {
                    me: &mallory,
                    psk: None,
                    seeds: &mut seeds,
                },
                |_| true,
                &mut got_plain,
                &mut wire,
            )
            .expect("the handshake with bob's key");
        }
        let frames = as_alice(2, "forged-sealed-71b0");
        let mut out = Vec::new();
        chan.write(&frames, &mut out);
        s.write_all(&out).unwrap();
        // bob's ACK proves he read it; then close.
        s.read(&mut buf).unwrap_or(0)
    });
    assert!(bytes > 0, "bob did not acknowledge the sealed message");
    let m = expect_event(
        &bob,
        "message",
        |m| m["text"] == "forged-sealed-71b0",
        "mallory's sealed message",
    );
    assert!(m["from"].is_null(), "shown under a nickname: {m}");
    assert_eq!(m["claims"], "alice", "{m}");
    assert_eq!(m["verified"], false, "{m}");
    assert_eq!(m["key"], mallory_fp, "{m}");
    assert_ne!(m["key"], alice_key);

    // The real alice again: hers, and the first forgery never showed at all (bob prints in order).
    let out = h2.run_mpc("alice", &["send", "bob", "really-alice-2"], RUN_LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    expect_event(
        &bob,
        "message",
        |m| m["text"] == "really-alice-2",
        "alice's second message",
    );
    let shown: Vec<Value> = events(&bob, "message");
    assert!(
        shown.iter().all(|m| m["text"] != "forged-plain-9c2e"),
        "{shown:?}"
    );
    assert!(
        shown
            .iter()
            .filter(|m| m["from"] == "alice")
            .all(|m| m["key"] == alice_key),
        "{shown:?}"
    );
    let _ = alice;
}
