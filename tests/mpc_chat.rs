//! Chat between real `mpc` processes through a real `mpd`: one-shot send, roster events, messages to an
//! offline peer that wait for it, and hostile peers that must not stop a client. Multicast on 127.0.0.1,
//! every test on its own group, ports and directories.

mod common;
mod roster_harness;

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::run_with_limit;
use roster_harness::*;

fn chat_port(c: &Mpc) -> u16 {
    let (r, _) = c
        .wait_for(Duration::from_secs(15), |v| v["event"] == "registered")
        .expect("never registered");
    r["chat_port"].as_u64().unwrap() as u16
}

#[test]
fn a_one_shot_send_arrives_exactly_once_and_the_sender_is_not_listed() {
    let net = Net::new("chat-send", 11);
    let _mpd = Mpd::start(&net, &[]);
    let alice = Mpc::listen(&net, "alice", &[]);
    let bob = Mpc::listen(&net, "bob", &[]);
    alice.wait_registered();
    bob.wait_registered();
    bob.wait_for(Duration::from_secs(10), |v| {
        is(v, "joined", "alice")
            || (v["event"] == "roster" && v["entries"].as_array().map_or(0, Vec::len) == 2)
    })
    .expect("bob never saw alice");
    let out = mpc(
        &net,
        &[
            "--nick", "carol", "send", "bob", "hello", "bob,", "it's", "carol",
        ],
    );
    assert!(
        out.status.success(),
        "send failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("delivered to bob"));
    let (m, _) = bob
        .wait_for(Duration::from_secs(5), |v| v["event"] == "message")
        .expect("bob got nothing");
    assert_eq!(m["from"], "carol");
    assert_eq!(m["to"], "bob");
    assert_eq!(m["text"], "hello bob, it's carol");
    // Exactly once. carol had bob's ACK before she exited, so a second copy, if any, was sent already; a
    // marker sent now shows after it.
    let out = mpc(&net, &["--nick", "carol", "send", "bob", "marker"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        bob.messages_until(Duration::from_secs(5), "marker"),
        ["hello bob, it's carol", "marker"]
    );
    // The one-shot sender never joined the roster.
    let entries = list(&net);
    let mut names: Vec<&str> = entries.iter().filter_map(|e| e["nick"].as_str()).collect();
    names.sort();
    assert_eq!(names, vec!["alice", "bob"]);
    assert!(alice.events().iter().all(|v| !is(v, "joined", "carol")));
    // Sending to an address works without the roster.
    let port = chat_port(&alice);
    let out = mpc(
        &net,
        &[
            "--nick",
            "dave",
            "send",
            &format!("127.0.0.1:{port}"),
            "by",
            "address",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        alice
            .wait_for(Duration::from_secs(5), |v| v["event"] == "message"
                && v["text"] == "by address")
            .is_some()
    );
}

#[test]
fn send_to_an_offline_or_unknown_peer_says_so() {
    let net = Net::new("chat-offline-send", 12);
    let _mpd = Mpd::start(&net, &[]);
    Mpc::register_and_leave(&net, "gone");
    // --now: offline is an answer, not a reason to wait (without it, the message is queued: see below).
    let out = mpc(&net, &["--nick", "x", "send", "--now", "gone", "anyone?"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("offline"));
    let out = mpc(&net, &["--nick", "x", "send", "nobody", "hi"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not in the roster")
            || String::from_utf8_lossy(&out.stderr).contains("no one called")
    );
}

/// Messages in `nick`'s queue (its history database), as the next console or `listen` would find them.
fn queued_for_later(net: &Net, nick: &str) -> u64 {
    let path = multiproto::io::history::path(&net.state_dir(nick), nick);
    multiproto::io::history::History::open(&path, Default::default())
        .and_then(|h| h.queue_len())
        .unwrap()
}

/// `mpc send` to someone offline queues the message and exits 0 saying so; the sender's `listen` delivers it
/// once the receiver is back, exactly once, and takes it out of the queue; a message queued while that
/// `listen` runs goes too. `--now` exits 3 and saves nothing.
#[test]
fn send_to_an_offline_peer_queues_it_and_the_senders_listen_delivers_it_once() {
    let net = Net::new("chat-send-queued", 30);
    let _mpd = Mpd::start(&net, &[]);
    Mpc::register_and_leave(&net, "bob");
    let out = mpc(
        &net,
        &["--nick", "alice", "send", "--now", "bob", "now or never"],
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("offline"));
    assert!(
        !multiproto::io::history::path(&net.state_dir("alice"), "alice").exists(),
        "--now saved something"
    );
    let out = mpc(
        &net,
        &[
            "--nick",
            "alice",
            "send",
            "bob",
            "see you when you are back",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with("queued #")
            && said.contains("for bob (offline)")
            && said.contains("mpc runs as alice"),
        "{said}"
    );
    assert_eq!(queued_for_later(&net, "alice"), 1);
    // Kept as sent, as the console keeps what it queues.
    let kept = mpc(&net, &["--nick", "alice", "history", "bob", "--json"]);
    assert!(String::from_utf8_lossy(&kept.stdout).contains("see you when you are back"));
    // alice's listen takes it from the queue; bob comes back and gets it.
    let alice = Mpc::listen(&net, "alice", &[]);
    alice.wait_registered();
    let mut bob = Mpc::listen(&net, "bob", &[]);
    let (m, _) = bob
        .wait_for(Duration::from_secs(15), |v| v["event"] == "message")
        .expect("the queued message never arrived");
    assert_eq!(m["from"], "alice");
    assert_eq!(m["text"], "see you when you are back");
    alice
        .wait_for(Duration::from_secs(10), |v| {
            v["event"] == "delivered" && v["to"] == "bob"
        })
        .expect("alice's listen never saw the receipt");
    assert!(
        common::wait_until(Duration::from_secs(10), || queued_for_later(&net, "alice")
            == 0),
        "the delivered message stayed in the queue"
    );
    // bob leaves again; a message queued while alice's listen runs goes when he is back.
    bob.signal(nix::sys::signal::Signal::SIGINT);
    bob.wait_exit(Duration::from_secs(5))
        .expect("bob did not exit");
    alice
        .wait_for(Duration::from_secs(10), |v| is(v, "offline", "bob"))
        .expect("alice never saw bob leave");
    let out = mpc(&net, &["--nick", "alice", "send", "bob", "and one more"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bob = Mpc::listen(&net, "bob", &[]);
    alice
        .wait_for_nth(2, Duration::from_secs(15), |v| {
            v["event"] == "delivered" && v["to"] == "bob"
        })
        .expect("the message queued meanwhile never went");
    assert!(
        common::wait_until(Duration::from_secs(10), || queued_for_later(&net, "alice")
            == 0),
        "the second message stayed in the queue"
    );
    // Exactly once each: both were acknowledged, so a copy, if any, was sent already; a marker sent now
    // shows after it.
    let out = mpc(&net, &["--nick", "alice", "send", "bob", "marker"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        bob.messages_until(Duration::from_secs(10), "marker"),
        ["and one more", "marker"]
    );
}

/// `--history-max 0` keeps no history, but a message `send` says is queued is kept: the file holds it (and
/// no message of the history).
#[test]
fn with_no_history_a_queued_message_is_still_kept() {
    let net = Net::new("chat-send-queued-nohistory", 31);
    let _mpd = Mpd::start(&net, &[]);
    Mpc::register_and_leave(&net, "bob");
    let out = mpc(
        &net,
        &[
            "--nick",
            "erin",
            "--history-max",
            "0",
            "send",
            "bob",
            "keep me",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(queued_for_later(&net, "erin"), 1);
    let path = multiproto::io::history::path(&net.state_dir("erin"), "erin");
    let h = multiproto::io::history::History::open(&path, Default::default()).unwrap();
    assert_eq!(h.len().unwrap(), 0, "a message was kept in the history");
}

#[test]
fn roster_events_match_joins_and_leaves() {
    let net = Net::new("chat-roster", 13);
    let _mpd = Mpd::start(&net, &[]);
    let watcher = Mpc::listen(&net, "watcher", &[]);
    watcher.wait_registered();
    let mut a = Mpc::listen(&net, "anne", &[]);
    a.wait_registered();
    watcher
        .wait_for(Duration::from_secs(10), |v| is(v, "joined", "anne"))
        .unwrap();
    let b = Mpc::listen(&net, "ben", &[]);
    b.wait_registered();
    watcher
        .wait_for(Duration::from_secs(10), |v| is(v, "joined", "ben"))
        .unwrap();
    a.signal(nix::sys::signal::Signal::SIGINT);
    a.wait_exit(Duration::from_secs(5)).unwrap();
    watcher
        .wait_for(Duration::from_secs(10), |v| is(v, "offline", "anne"))
        .unwrap();
    let seq: Vec<(String, String)> = watcher
        .events()
        .into_iter()
        .filter(|v| {
            ["joined", "online", "offline", "removed"].contains(&v["event"].as_str().unwrap_or(""))
        })
        .map(|v| {
            (
                v["event"].as_str().unwrap().to_string(),
                v["nick"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        seq,
        vec![
            ("joined".into(), "anne".into()),
            ("joined".into(), "ben".into()),
            ("offline".into(), "anne".into()),
        ]
    );
}

#[test]
fn a_message_for_an_offline_peer_waits_and_arrives_once_it_returns() {
    let net = Net::new("chat-queue", 14);
    let _mpd = Mpd::start(&net, &[]);
    // bob registers once, so the roster knows him, then leaves.
    Mpc::register_and_leave(&net, "bob");
    // alice, in the console with piped input, writes to him.
    let state = net.dir.join("alice-state");
    let mut alice = Command::new(env!("CARGO_BIN_EXE_mpc"))
        .args([
            "--nick",
            "alice",
            "--group",
            &net.group,
            "--iface",
            "127.0.0.1",
            "--state-dir",
        ])
        .arg(&state)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    {
        let out = alice.stdout.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&l);
                s.push('\n');
            }
        });
    }
    let shows = |needle: &str| {
        common::wait_until(Duration::from_secs(15), || {
            lines.lock().unwrap().contains(needle)
        })
    };
    assert!(shows("registered as alice"), "{}", lines.lock().unwrap());
    let mut stdin = alice.stdin.take().unwrap();
    writeln!(stdin, "msg bob see you when you are back").unwrap();
    assert!(shows("queued"), "{}", lines.lock().unwrap());
    // bob returns: the roster says he is online, alice delivers.
    let bob = Mpc::listen(&net, "bob", &[]);
    let (m, _) = bob
        .wait_for(Duration::from_secs(15), |v| v["event"] == "message")
        .expect("the queued message never arrived");
    assert_eq!(m["text"], "see you when you are back");
    assert!(shows("delivered"), "{}", lines.lock().unwrap());
    // Exactly once: delivered means acknowledged, so a second copy, if any, was sent already; alice's next
    // message to bob shows after it.
    writeln!(stdin, "msg bob marker").unwrap();
    assert_eq!(
        bob.messages_until(Duration::from_secs(10), "marker"),
        ["see you when you are back", "marker"]
    );
    writeln!(stdin, "exit").unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while alice.try_wait().unwrap().is_none() && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = alice.try_wait().unwrap();
    if st.is_none() {
        let _ = alice.kill();
    }
    assert!(
        st.is_some_and(|s| s.success()),
        "alice did not exit on `exit`"
    );
}

fn rss_kib(pid: nix::unistd::Pid) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

#[test]
fn hostile_peers_do_not_stop_a_client() {
    let net = Net::new("chat-hostile", 15);
    let _mpd = Mpd::start(&net, &[]);
    let bob = Mpc::listen(&net, "bob", &[]);
    let port = chat_port(&bob);
    let target = format!("127.0.0.1:{port}");
    let before = rss_kib(bob.pid());
    // Garbage, and an absurd length prefix.
    let mut g = TcpStream::connect(&target).unwrap();
    let _ = g.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut o = TcpStream::connect(&target).unwrap();
    let _ = o.write_all(&[0xff, 0xff, 0xff, 0xf0, 2, 0, 0]);
    // One byte a second, forever (until bob gives up on it).
    let slow = std::thread::spawn({
        let target = target.clone();
        move || {
            let Ok(mut s) = TcpStream::connect(&target) else {
                return;
            };
            for _ in 0..15 {
                if s.write_all(&[0]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    });
    // A flood of connections that never speak.
    let mut flood = Vec::new();
    for _ in 0..400 {
        if let Ok(s) = TcpStream::connect(&target) {
            flood.push(s);
        }
    }
    // A real message still arrives, while all of that goes on.
    let out = mpc(&net, &["--nick", "friend", "send", "bob", "still", "here?"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        bob.wait_for(Duration::from_secs(10), |v| v["event"] == "message"
            && v["text"] == "still here?")
            .is_some()
    );
    let after = rss_kib(bob.pid());
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    drop(flood);
    drop(g);
    drop(o);
    slow.join().unwrap();
    // And afterwards too.
    let out = mpc(&net, &["--nick", "friend", "send", "bob", "after"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The command-line contract of every binary (DESIGN.md): `--version` and `-h` answer with exit 0, a usage
/// error exits 2 with a message on stderr, in mpc, mpd and mpbench alike.
#[test]
fn every_binary_answers_version_and_help_and_exits_2_on_usage_errors() {
    let run = |exe: &str, args: &[&str]| {
        run_with_limit(Command::new(exe).args(args), Duration::from_secs(30), b"")
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    for (name, exe) in [
        ("mpc", env!("CARGO_BIN_EXE_mpc")),
        ("mpd", env!("CARGO_BIN_EXE_mpd")),
        ("mpbench", env!("CARGO_BIN_EXE_mpbench")),
    ] {
        let out = run(exe, &["--version"]);
        assert_eq!(out.status.code(), Some(0), "{name} --version");
        assert_eq!(
            text(&out.stdout).trim(),
            format!("{name} {}", env!("CARGO_PKG_VERSION"))
        );
        for help in [&["-h"][..], &["--help"][..]] {
            let out = run(exe, help);
            assert_eq!(out.status.code(), Some(0), "{name} {help:?}");
            assert!(text(&out.stdout).starts_with("Usage:"), "{name} {help:?}");
        }
        let out = run(exe, &["--no-such-option"]);
        assert_eq!(out.status.code(), Some(2), "{name} --no-such-option");
        assert!(
            text(&out.stderr).contains("--no-such-option") && out.stdout.is_empty(),
            "{name}: {}",
            text(&out.stderr)
        );
    }
    // A subcommand's own help; mpc's usage errors that argh does not see (a nickname it cannot use, a daemon
    // name nobody resolves), and one it does (send without a receiver).
    let mpc = env!("CARGO_BIN_EXE_mpc");
    let out = run(mpc, &["send", "-h"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).starts_with("Usage: mpc send"));
    for bad in [
        &["--nick", "no spaces", "list"][..],
        &["--daemon", "no-such-host.invalid", "list"][..],
        &["--daemon", "localhost:99999", "list"][..],
        &["--nick", "carol", "send"][..],
    ] {
        let out = run(mpc, bad);
        assert_eq!(
            out.status.code(),
            Some(2),
            "mpc {bad:?}: {}",
            text(&out.stderr)
        );
        assert!(!out.stderr.is_empty(), "mpc {bad:?}");
    }
}

/// No daemon within `--timeout` is exit 4 (2 is a usage error); `--daemon` takes a host name.
#[test]
fn no_daemon_exits_4_and_the_daemon_can_be_named_by_host_name() {
    let net = Net::new("chat-cli", 16);
    let out = mpc(
        &net,
        &["--nick", "carol", "--timeout", "1", "list", "--json"],
    );
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no daemon answered"));
    let _mpd = Mpd::start(&net, &[]);
    let daemon = format!("localhost:{}", net.sctp_port);
    let out = mpc(
        &net,
        &["--nick", "carol", "--daemon", &daemon, "list", "--json"],
    );
    assert!(
        out.status.success(),
        "list --daemon {daemon}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("list --json prints JSON");
    assert!(v["entries"].is_array(), "{v}");
}

/// `mpc send NAME` without TEXT sends standard input as one message, byte for byte: 20 000 bytes of lines
/// with indentation, tabs, blank lines and a trailing newline arrive as they were sent.
#[test]
fn a_long_multi_line_message_from_standard_input_arrives_byte_for_byte() {
    let net = Net::new("chat-stdin", 17);
    let _mpd = Mpd::start(&net, &[]);
    let bob = Mpc::listen(&net, "bob", &[]);
    bob.wait_registered();
    let mut text = String::new();
    let mut i = 0;
    while text.len() < 20_000 {
        text += &format!("line {i}:\n    indented {i}\n\ttabbed ✓ {i}\n\n");
        i += 1;
    }
    text.truncate(20_000);
    // Ends on a whole line, in whole characters.
    while !text.ends_with('\n') {
        text.pop();
    }
    let out = run_with_limit(
        Command::new(env!("CARGO_BIN_EXE_mpc"))
            .args(net.client_args("carol"))
            .args(["--nick", "carol", "send", "bob"]),
        Duration::from_secs(30),
        text.as_bytes(),
    );
    assert!(
        out.status.success(),
        "send from standard input: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (m, _) = bob
        .wait_for(Duration::from_secs(10), |v| v["event"] == "message")
        .expect("bob got nothing");
    assert_eq!(m["from"], "carol");
    assert_eq!(m["text"].as_str(), Some(text.as_str()), "not byte for byte");
    // One message, not one a line.
    let messages = bob
        .events()
        .iter()
        .filter(|v| v["event"] == "message")
        .count();
    assert_eq!(messages, 1);
    // Too long, not UTF-8, or only blanks: refused before anything is sent, with the reason.
    for (input, says) in [
        (vec![b'x'; 70_000], "longer than"),
        (vec![0xff, 0xfe], "not UTF-8"),
        (b" \n\t\n".to_vec(), "empty"),
    ] {
        let out = run_with_limit(
            Command::new(env!("CARGO_BIN_EXE_mpc"))
                .args(net.client_args("carol"))
                .args(["--nick", "carol", "send", "bob"]),
            Duration::from_secs(30),
            &input,
        );
        assert_eq!(out.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Both ends keep what they sent and received (`mpc send` once delivered, `listen` as it arrives), and
/// `mpc history` / `mpc search` read it without a daemon, after the receiver stopped.
#[test]
fn history_and_search_read_what_was_kept_after_the_receiver_stopped() {
    let net = Net::new("chat-history", 18);
    let mpd = Mpd::start(&net, &[]);
    let mut bob = Mpc::listen(&net, "bob", &[]);
    bob.wait_registered();
    for text in ["the deploy is at noon", "disk full on\n  build-3"] {
        let out = mpc(&net, &["--nick", "carol", "send", "bob", text]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    bob.wait_for(Duration::from_secs(10), |v| {
        v["event"] == "message" && v["text"] == "disk full on\n  build-3"
    })
    .expect("bob did not get both");
    bob.kill9();
    mpd.stop();
    let lines = |out: &std::process::Output| -> Vec<serde_json::Value> {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    };
    // bob's side: received, from carol, oldest first.
    let got = lines(&mpc(&net, &["--nick", "bob", "history", "--json"]));
    let texts: Vec<&str> = got.iter().map(|v| v["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["the deploy is at noon", "disk full on\n  build-3"]);
    assert!(
        got.iter().all(|v| v["with"] == "carol"
            && v["from"] == "carol"
            && v["outgoing"] == false
            && v["verified"] == true),
        "{got:?}"
    );
    // carol's side: sent, to bob; --limit takes the most recent.
    let sent = lines(&mpc(
        &net,
        &[
            "--nick", "carol", "history", "bob", "--json", "--limit", "1",
        ],
    ));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["text"], "disk full on\n  build-3");
    assert_eq!(sent[0]["outgoing"], true);
    // search: every word, any case; words that would be FTS5 syntax are only text.
    let found = lines(&mpc(
        &net,
        &["--nick", "bob", "search", "DISK", "build", "--json"],
    ));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        lines(&mpc(
            &net,
            &["--nick", "bob", "search", "NEAR(deploy", "--json"]
        ))
        .is_empty()
    );
    let plain = mpc(&net, &["--nick", "bob", "search", "noon"]);
    assert!(
        String::from_utf8_lossy(&plain.stdout).contains("[carol] <carol> the deploy is at noon")
    );
    assert_eq!(
        mpc(&net, &["--nick", "bob", "search"]).status.code(),
        Some(2)
    );
    // --history-max 0 keeps nothing: dave receives, sends, and no history file appears.
    let _mpd = Mpd::start(&net, &[]);
    let dave = Mpc::listen(&net, "dave", &["--history-max", "0"]);
    dave.wait_registered();
    let out = mpc(&net, &["--nick", "carol", "send", "dave", "forget this"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dave.wait_for(Duration::from_secs(10), |v| v["text"] == "forget this")
        .expect("dave got nothing");
    let out = mpc(
        &net,
        &[
            "--nick",
            "dave",
            "--history-max",
            "0",
            "send",
            "carol",
            "ok",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "carol is not online: nothing sent"
    );
    assert!(
        !multiproto::io::history::path(&net.state_dir("dave"), "dave").exists(),
        "a history was written with --history-max 0"
    );
}

/// The roster as `mpc list` shows it: each nickname's channels, once `cond` holds for it (else panics).
fn wait_for_list(net: &Net, what: &str, cond: impl Fn(&[serde_json::Value]) -> bool) {
    let ok = common::wait_until(Duration::from_secs(15), || cond(&list(net)));
    assert!(ok, "never: {what}: {:?}", list(net));
}

fn channels_of<'a>(entries: &'a [serde_json::Value], nick: &str) -> Vec<&'a str> {
    entries
        .iter()
        .find(|e| e["nick"] == nick)
        .and_then(|e| e["channels"].as_array())
        .map(|a| a.iter().filter_map(|c| c.as_str()).collect())
        .unwrap_or_default()
}

/// The command-line contracts of issue 15: `listen --join` joins channels, `send '#ops'` reaches each member
/// once (an offline member's copy queued, and delivered by the sender's `listen` once it is back), `send '*'`
/// everyone online, `"to"` says where each was said, and `history '#ops' --json` reads the channel's
/// messages after the fact.
#[test]
fn send_to_a_channel_and_to_everyone_from_the_command_line() {
    let net = Net::new("chat-channels", 19);
    let _mpd = Mpd::start(&net, &[]);
    let mut dave = Mpc::listen_with(&net, "dave", &[], &["--join", "#ops"]);
    let alice = Mpc::listen_with(&net, "alice", &[], &["--join", "#ops", "--join", "#dev"]);
    // Without the '#', as in the console.
    let bob = Mpc::listen_with(&net, "bob", &[], &["--join", "ops"]);
    let carol = Mpc::listen(&net, "carol", &[]);
    for c in [&dave, &alice, &bob, &carol] {
        c.wait_registered();
    }
    wait_for_list(&net, "three in #ops", |es| {
        ["alice", "bob", "dave"]
            .iter()
            .all(|n| channels_of(es, n).contains(&"#ops"))
    });
    assert_eq!(channels_of(&list(&net), "alice"), ["#dev", "#ops"]);
    assert!(channels_of(&list(&net), "carol").is_empty());
    // Joins travel as roster changes: carol, in no channel, still sees who is where.
    assert!(
        carol
            .wait_for(Duration::from_secs(5), |v| {
                (v["event"] == "channel_join" && v["nick"] == "alice" && v["channel"] == "#dev")
                    || (v["event"] == "roster"
                        && v["entries"]
                            .as_array()
                            .is_some_and(|es| channels_of(es, "alice").contains(&"#dev")))
            })
            .is_some(),
        "{:?}",
        carol.events()
    );
    // Dave leaves; he stays a member, offline.
    dave.signal(nix::sys::signal::Signal::SIGINT);
    dave.wait_exit(Duration::from_secs(5)).expect("dave exit");
    wait_for_list(&net, "dave offline", |es| {
        es.iter()
            .any(|e| e["nick"] == "dave" && e["status"] == "offline")
    });

    let out = mpc(
        &net,
        &["--nick", "erin", "send", "#ops", "deploy", "at", "5"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("to 2 of 3 in #ops") && stdout.contains("dave offline (queued)"),
        "{stdout}"
    );
    let out = mpc(&net, &["--nick", "erin", "send", "*", "lunch?"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("to 3 of 3 online"), "{stdout}");
    // Exactly once each, nothing to carol from #ops, and "to" says where: markers sent after prove it.
    for (c, want) in [
        (&alice, vec!["deploy at 5", "lunch?", "marker"]),
        (&bob, vec!["deploy at 5", "lunch?", "marker"]),
        (&carol, vec!["lunch?", "marker"]),
    ] {
        let out = mpc(&net, &["--nick", "erin", "send", &c.nick, "marker"]);
        assert!(out.status.success());
        assert_eq!(c.messages_until(Duration::from_secs(5), "marker"), want);
        let ev = c.events();
        let to_of = |text: &str| {
            ev.iter()
                .find(|v| v["event"] == "message" && v["text"] == text)
                .map(|v| v["to"].clone())
        };
        assert_eq!(to_of("lunch?"), Some("*".into()));
        assert_eq!(to_of("marker"), Some(c.nick.clone().into()));
        if c.nick != "carol" {
            assert_eq!(to_of("deploy at 5"), Some("#ops".into()));
        }
    }
    // Nobody to send to: exit 3 with the reason; a bad name: a usage error.
    let out = mpc(&net, &["--nick", "erin", "send", "#nobody", "hi"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no one is in #nobody"));
    let out = mpc(&net, &["--nick", "erin", "send", "#a/b", "hi"]);
    assert_eq!(out.status.code(), Some(2));

    // The channel's conversation in alice's history (her `listen` keeps what it receives).
    let out = mpc(&net, &["--nick", "alice", "history", "#ops", "--json"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{text}");
    assert_eq!(rows[0]["text"], "deploy at 5");
    assert_eq!(
        (rows[0]["from"].as_str(), rows[0]["with"].as_str()),
        (Some("erin"), Some("#ops"))
    );

    // Dave's copy waits in erin's queue: her `listen` delivers it once he is back, as said in #ops.
    let erin = Mpc::listen(&net, "erin", &[]);
    erin.wait_registered();
    let dave = Mpc::listen(&net, "dave", &[]);
    dave.wait_registered();
    let (m, _) = dave
        .wait_for(Duration::from_secs(15), |v| v["event"] == "message")
        .unwrap_or_else(|| panic!("dave got nothing: {:?}", dave.events()));
    assert_eq!(
        (m["text"].as_str(), m["to"].as_str()),
        (Some("deploy at 5"), Some("#ops"))
    );
    let out = mpc(&net, &["--nick", "erin", "send", "dave", "marker"]);
    assert!(out.status.success());
    assert_eq!(
        dave.messages_until(Duration::from_secs(5), "marker"),
        ["deploy at 5", "marker"]
    );
    // He is still in #ops: the daemon kept it while he was away.
    assert_eq!(channels_of(&list(&net), "dave"), ["#ops"]);
    drop(erin);
}

#[test]
fn a_unicode_nickname_registers_and_receives_a_message() {
    let net = Net::new("chat-unicode", 50);
    let _mpd = Mpd::start(&net, &[]);
    // Typed decomposed (e + U+0301), as some keyboards and pastes produce it: registered in NFC.
    let jose = Mpc::listen(&net, "Jose\u{301}", &[]);
    jose.wait_registered();
    let (r, _) = jose
        .wait_for(Duration::from_secs(15), |v| v["event"] == "registered")
        .expect("never registered");
    assert_eq!(r["nick"], "Jos\u{e9}");
    // A sender with a Unicode nickname writes to him in capitals: found by the case-folded form.
    let out = mpc(&net, &["--nick", "Zoë", "send", "JOSÉ", "¡hola, José!"]);
    assert!(
        out.status.success(),
        "send failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("delivered to José"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (m, _) = jose
        .wait_for(Duration::from_secs(10), |v| v["event"] == "message")
        .expect("José got nothing");
    assert_eq!(m["from"], "Zoë");
    assert_eq!(m["to"], "José");
    assert_eq!(m["text"], "¡hola, José!");
    // The roster lists him as registered, byte for byte in NFC.
    let out = mpc(&net, &["list", "--json"]);
    assert!(out.status.success());
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.contains("\"nick\":\"José\""), "{list}");
}
