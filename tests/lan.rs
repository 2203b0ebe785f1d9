//! Today's behaviour on a LAN of network namespaces (tests/common/lan.rs): a daemon on one host, clients on
//! others, discovery by real multicast across a bridge, chat between hosts, with and without packet loss, a
//! capture of the bridge, and the harness's own teardown. These are the baseline the trust work (issue 14)
//! builds its process-level tests on.
//!
//! Needs root, iproute2, nftables and tcpdump; without them the tests skip, or fail in CI (see
//! tests/common/require.rs).

mod common;
#[path = "common/lan.rs"]
mod lan;

use std::time::{Duration, Instant};

use common::skip_unless;
use lan::*;

/// Limit for one `mpc send` (its own `--timeout` is shorter, so it reports before we kill it).
const SEND_LIMIT: Duration = Duration::from_secs(30);

/// The JSON object on one `listen --json` line (None for anything else).
fn json(line: &str) -> Option<serde_json::Value> {
    serde_json::from_str(line).ok()
}

/// Whether `line` is `listen --json`'s event `event`.
fn is_event(line: &str, event: &str) -> bool {
    json(line).is_some_and(|v| v["event"] == event)
}

/// With mpd running on host 1: `bob` listening on host 3, `alice` sending `text` from host 2. Asserts the send
/// exits 0 and that bob saw the message from alice, from host 2's address, after finding the daemon at host
/// 1's. `within` bounds each wait (registration, then delivery).
fn chat_across_hosts(lan: &Lan, text: &str, within: Duration) {
    let (h1, h2, h3) = (lan.host(1), lan.host(2), lan.host(3));
    let bob = h3.spawn_mpc("bob", &["listen", "--json"]);
    // Multicast discovery across the bridge: the daemon bob found is host 1's (no --daemon anywhere).
    let found = bob.expect_line(
        |l| is_event(l, "daemon_found"),
        Instant::now() + within,
        "daemon_found",
    );
    let daemon = json(&found).unwrap()["daemon"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        daemon.starts_with(&format!("{}:", h1.addr())),
        "bob found a daemon at {daemon}, not on host 1 ({})",
        h1.addr()
    );
    bob.expect_line(
        |l| is_event(l, "roster"),
        Instant::now() + within,
        "roster (bob registered)",
    );

    let timeout = within.as_secs().to_string();
    let out = h2.run_mpc(
        "alice",
        &["--timeout", &timeout, "send", "bob", text],
        SEND_LIMIT,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "alice's send failed:\nstdout: {}\nstderr: {}\nbob: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        bob.describe()
    );

    // The ACK came before send exited, so the line is printed or about to be.
    let line = bob.expect_line(
        |l| is_event(l, "message"),
        Instant::now() + within,
        "message",
    );
    let m = json(&line).unwrap();
    assert_eq!(m["from"], "alice", "{line}");
    assert_eq!(m["text"], text, "{line}");
    assert_eq!(m["nick"], "bob", "{line}");
    let from = m["addr"].as_str().unwrap_or("");
    assert!(
        from.starts_with(&format!("{}:", h2.addr())),
        "the message came from {from}, not from host 2 ({}): {line}",
        h2.addr()
    );
}

#[test]
fn chat_crosses_the_lan_by_multicast_discovery() {
    skip_unless!(require_lan());
    let lan = Lan::new(3);
    lan.host(1).spawn_mpd(&[]);
    chat_across_hosts(&lan, "hello from host 2", Duration::from_secs(10));
}

#[test]
fn chat_crosses_a_lossy_lan() {
    skip_unless!(require_lan() && require_nft());
    let lan = Lan::new(3);
    let (h1, h3) = (lan.host(1), lan.host(3));

    // The loss rule really drops: with everything lost, host 3 cannot even find the daemon (exit 4).
    h1.spawn_mpd(&[]);
    h3.loss(100);
    let out = h3.run_mpc("carol", &["--timeout", "2", "list", "--json"], SEND_LIMIT);
    assert_eq!(
        out.status.code(),
        Some(4),
        "a host behind 100% loss found the daemon: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (seen, dropped) = h3.loss_counters();
    assert!(
        seen > 0 && dropped == seen,
        "100% loss: {dropped} of {seen} dropped"
    );

    lan.host(2).loss(10);
    h3.loss(10);
    chat_across_hosts(&lan, "hello across 10% loss", Duration::from_secs(20));
    for h in [lan.host(2), h3] {
        let (seen, dropped) = h.loss_counters();
        // The rule sits on the path of everything the host received from the LAN.
        assert!(seen > 0, "host {}'s loss rule saw no packets", h.index());
        eprintln!("host {}: {dropped} of {seen} packets dropped", h.index());
    }
}

/// Chat crosses the LAN encrypted: a capture of every frame on the bridge while a message goes from one host
/// to another holds neither its text nor the sender's or receiver's nickname (chat HELLOs carry them, sealed).
#[test]
fn a_capture_of_the_lan_while_chatting_holds_no_text_and_no_nickname() {
    skip_unless!(require_lan() && require_tcpdump());
    let lan = Lan::new(3);
    lan.host(1).spawn_mpd(&[]);
    let cap = lan.capture();
    let text = "plaintext-canary-5f3a";
    chat_across_hosts(&lan, text, Duration::from_secs(10));
    let pcap = cap.stop();
    // A pcap file (microsecond format, either byte order).
    assert!(
        pcap.starts_with(&[0xd4, 0xc3, 0xb2, 0xa1]) || pcap.starts_with(&[0xa1, 0xb2, 0xc3, 0xd4]),
        "not a pcap file ({} bytes)",
        pcap.len()
    );
    // The message went through (chat_across_hosts saw bob print it), and the capture holds the frames the
    // bridge forwarded meanwhile (kilobytes of them: discovery, the roster sessions, the chat session).
    assert!(pcap.len() > 2_000, "a capture of {} bytes", pcap.len());
    assert!(
        !contains(&pcap, text),
        "the chat text crossed the LAN in clear ({} bytes captured)",
        pcap.len()
    );
    for nick in ["alice", "bob"] {
        assert!(
            !contains(&pcap, nick),
            "the nickname {nick} crossed the LAN in clear"
        );
    }
}

#[test]
fn dropping_a_lan_removes_its_namespaces_and_processes() {
    skip_unless!(require_lan());
    let gone = |names: &[String]| {
        let now = netns_list();
        names.iter().all(|n| !now.contains(n))
    };

    // A normal drop, with a child of the harness and an orphan it never knew of (forked into the background
    // by a shell that then exited) inside a host.
    let (names, child, orphan) = {
        let lan = Lan::new(2);
        let names = lan.namespaces();
        assert_eq!(names.len(), 3);
        let listed = netns_list();
        assert!(names.iter().all(|n| listed.contains(n)), "{listed:?}");
        let child = lan.host(1).spawn("sleeper", "sleep", ["600"]);
        let out = lan.host(2).run(
            "sh",
            ["-c", "sleep 600 >/dev/null 2>&1 & echo $!"],
            Duration::from_secs(10),
        );
        let orphan: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert!(!process_gone(orphan));
        (names, child.pid(), orphan)
    };
    assert!(gone(&names), "namespaces left: {:?}", netns_list());
    assert!(process_gone(child), "the harness's child {child} survived");
    assert!(process_gone(orphan), "the orphan {orphan} survived");

    // A test body that panics: unwinding drops the LAN, which tears down just the same.
    let names = std::sync::Mutex::new(Vec::new());
    let pid = std::sync::Mutex::new(0);
    let dir = std::sync::Mutex::new(std::path::PathBuf::new());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lan = Lan::new(2);
        *names.lock().unwrap() = lan.namespaces();
        *dir.lock().unwrap() = lan.dir().to_path_buf();
        *pid.lock().unwrap() = lan.host(1).spawn("sleeper", "sleep", ["600"]).pid();
        panic!("deliberate panic: the LAN must still be torn down");
    }));
    assert!(r.is_err());
    let names = names.into_inner().unwrap();
    let pid = pid.into_inner().unwrap();
    assert_eq!(names.len(), 3);
    assert!(gone(&names), "namespaces left: {:?}", netns_list());
    assert!(
        process_gone(pid),
        "the panicking test's child {pid} survived"
    );
    // A panicking test keeps its directory for its logs; this panic was on purpose.
    let _ = std::fs::remove_dir_all(dir.into_inner().unwrap());
}

/// [`Host::in_netns`] makes sockets that belong to that host: bound to its address (another host's is not
/// local there), and a datagram sent from one reaches a socket of another host across the bridge with the
/// sender's address as its source. This is how the trust tests will forge datagrams "from" a host.
#[test]
fn sockets_made_in_a_host_are_that_hosts() {
    skip_unless!(require_lan());
    let lan = Lan::new(3);
    let (h2, h3) = (lan.host(2), lan.host(3));
    let other = lan.host(1).addr();
    let (sender, refused) = h2.in_netns(|| {
        (
            std::net::UdpSocket::bind((h2.addr(), 0)).unwrap(),
            std::net::UdpSocket::bind((other, 0)).is_err(),
        )
    });
    assert!(refused, "host 2 could bind host 1's address {other}");
    let receiver = h3.in_netns(|| std::net::UdpSocket::bind((h3.addr(), 0)).unwrap());
    receiver
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // Used from this thread, outside both namespaces.
    sender
        .send_to(b"from host 2", receiver.local_addr().unwrap())
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = receiver.recv_from(&mut buf).expect("nothing arrived");
    assert_eq!(&buf[..n], b"from host 2");
    assert_eq!(from, sender.local_addr().unwrap());
}
