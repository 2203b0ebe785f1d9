//! The server alone, scripted: discovery answers, the ANNOUNCE schedule, hostile discovery input, stopping.
//! The server together with clients runs in the whole-system simulation (`crate::sim`).

use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::discovery::{Auth, Datagram, Hello};
use crate::identity::Identity;

const GROUP: SocketAddr = crate::discovery::DEFAULT_GROUP;

fn config() -> Config {
    Config {
        sctp_udp_port: 19899,
        ..Config::new(0xD00D, Identity::from_secret([5; 32]))
    }
}

/// A server with the test defaults, changed by `tweak`.
fn server_with(tweak: impl FnOnce(&mut Config)) -> Server {
    let mut cfg = config();
    tweak(&mut cfg);
    Server::new(cfg, [7; 32], 1_700_000_000_000, Instant::ZERO)
}

fn server() -> Server {
    server_with(|_| {})
}

fn hello_with(instance: u64, mac_key: Option<&[u8; 32]>) -> Vec<u8> {
    let mut b = Vec::new();
    Datagram::Hello(Hello {
        instance,
        sctp_udp_port: 5000,
    })
    .write(&mut b, mac_key);
    b
}

fn hello(instance: u64) -> Vec<u8> {
    hello_with(instance, None)
}

/// The discovery datagrams sent, with how each was authenticated under `mac_key`.
fn discovery_out_auth(
    s: &mut Server,
    mac_key: Option<&[u8; 32]>,
) -> Vec<(SocketAddr, Datagram, Auth)> {
    let mut buf = [0u8; crate::discovery::MAX_DATAGRAM];
    std::iter::from_fn(|| {
        let t = s.poll_discovery_transmit(&mut buf)?;
        let (d, auth) =
            Datagram::parse(&buf[..t.len], mac_key).expect("the server sent a malformed datagram");
        Some((t.dst, d, auth))
    })
    .collect()
}

fn discovery_out(s: &mut Server) -> Vec<(SocketAddr, Datagram)> {
    discovery_out_auth(s, None)
        .into_iter()
        .map(|(to, d, _)| (to, d))
        .collect()
}

/// Runs timers up to `until`, returning when each discovery datagram left.
fn run(s: &mut Server, until: Instant) -> Vec<(Instant, SocketAddr, Datagram)> {
    let mut out = Vec::new();
    while let Some(t) = s.poll_timeout().filter(|&t| t <= until) {
        s.handle_timeout(t);
        out.extend(discovery_out(s).into_iter().map(|(to, d)| (t, to, d)));
    }
    out
}

#[test]
fn announces_at_start_then_twice_more() {
    let mut s = server();
    let sent = run(&mut s, Instant::ZERO + Duration::from_secs(10));
    let times: Vec<u64> = sent.iter().map(|(t, _, _)| t.as_millis()).collect();
    assert_eq!(times, vec![0, 200, 1200]);
    for (_, to, d) in &sent {
        assert_eq!(*to, GROUP);
        let Datagram::Announce(info) = d else {
            panic!("not an ANNOUNCE: {d:?}")
        };
        assert_eq!(
            (info.instance, info.sctp_udp_port, info.sctp_port),
            (0xD00D, 19899, 9899)
        );
    }
}

#[test]
fn a_hello_gets_a_welcome_to_its_sender() {
    let mut s = server();
    let from: SocketAddr = "10.9.8.7:4321".parse().unwrap();
    s.handle_discovery(Instant::ZERO, from, &hello(42));
    let out = discovery_out(&mut s);
    assert_eq!(out.len(), 1, "{out:?}");
    let (
        to,
        Datagram::Welcome {
            to: instance,
            daemon,
        },
    ) = out[0]
    else {
        panic!("not a WELCOME: {out:?}")
    };
    assert_eq!(
        (to, instance, daemon.instance, daemon.sctp_udp_port),
        (from, 42, 0xD00D, 19899)
    );
    assert_eq!(s.stats().hellos, 1);
}

#[test]
fn hostile_discovery_input_is_counted_and_unanswered() {
    let mut s = server();
    let from: SocketAddr = "10.9.8.7:4321".parse().unwrap();
    let mut good = hello(1);
    s.handle_discovery(Instant::ZERO, from, b"GET / HTTP/1.0\r\n");
    // Our magic, an unknown version.
    good[4] = 99;
    s.handle_discovery(Instant::ZERO, from, &good);
    let good = hello(1);
    for cut in 0..good.len() {
        s.handle_discovery(Instant::ZERO, from, &good[..cut]);
    }
    assert!(discovery_out(&mut s).is_empty());
    let st = s.stats();
    assert_eq!(st.discovery_foreign, 1 + 4, "{st:?}"); // the HTTP line and cuts shorter than the magic
    assert_eq!(st.discovery_bad_version, 1, "{st:?}");
    assert_eq!(st.discovery_malformed, good.len() as u64 - 4, "{st:?}");
    assert_eq!(st.hellos, 0);
}

#[test]
fn a_flood_of_hellos_queues_a_bounded_number_of_replies() {
    // One source, unlimited: the queue's own bound is what is tested.
    let mut s = server_with(|c| c.welcome_rate = 0);
    let from: SocketAddr = "10.9.8.7:4321".parse().unwrap();
    let h = hello(5);
    let n = MAX_DISCOVERY_REPLIES + 100;
    for _ in 0..n {
        s.handle_discovery(Instant::ZERO, from, &h);
    }
    assert_eq!(discovery_out(&mut s).len(), MAX_DISCOVERY_REPLIES);
    assert_eq!(s.stats().hellos_unanswered, 100);
}

#[test]
fn welcomes_to_one_source_come_in_a_burst_then_at_the_rate() {
    let mut s = server();
    let from: SocketAddr = "10.9.8.7:4321".parse().unwrap();
    let h = hello(5);
    for _ in 0..50 {
        s.handle_discovery(Instant::ZERO, from, &h);
    }
    // A burst of two seconds' worth at the default ten a second.
    assert_eq!(discovery_out(&mut s).len(), 20);
    assert_eq!((s.stats().hellos, s.stats().hellos_rate_limited), (20, 30));
    // Another address (another port of the same one counts as the same) is not held back by that.
    s.handle_discovery(Instant::ZERO, "10.9.8.7:1".parse().unwrap(), &h);
    let other: SocketAddr = "10.9.8.8:4321".parse().unwrap();
    s.handle_discovery(Instant::ZERO, other, &h);
    let out = discovery_out(&mut s);
    assert_eq!(out.iter().map(|o| o.0).collect::<Vec<_>>(), vec![other]);
    // Tokens come back at the rate: one per 100 ms, none before.
    let mut t = Instant::ZERO + Duration::from_millis(99);
    s.handle_discovery(t, from, &h);
    assert!(discovery_out(&mut s).is_empty());
    t = Instant::ZERO + Duration::from_millis(100);
    s.handle_discovery(t, from, &h);
    s.handle_discovery(t, from, &h);
    assert_eq!(discovery_out(&mut s).len(), 1);
    // After two quiet seconds, a whole burst again.
    t += Duration::from_secs(2);
    for _ in 0..30 {
        s.handle_discovery(t, from, &h);
    }
    assert_eq!(discovery_out(&mut s).len(), 20);
    // Spoofed HELLOs in a victim's name: at most the rate reaches it, however many are sent.
    let mut sent = 0;
    for ms in 0..10_000u64 {
        for _ in 0..10 {
            s.handle_discovery(t + Duration::from_millis(ms), from, &h);
        }
        sent += discovery_out(&mut s).len();
    }
    // The burst was spent at `t`: one every 100 ms after it, 99 within the next ten seconds.
    assert_eq!(sent, 99, "WELCOMEs in 10 s");
}

#[test]
fn the_rate_limiter_stays_bounded_under_a_flood_of_sources() {
    use responder::MAX_RATE_SOURCES;
    let mut s = server();
    let h = hello(5);
    let n = 3 * MAX_RATE_SOURCES;
    for i in 0..n {
        let from = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 9));
        s.handle_discovery(Instant::ZERO, from, &h);
        assert!(s.responder.limiter.len() <= MAX_RATE_SOURCES);
    }
    // Each new address is answered once (a fresh bucket), and the table made room by evicting.
    assert_eq!(discovery_out(&mut s).len(), n);
    assert_eq!(
        s.stats().hello_sources_evicted,
        (n - MAX_RATE_SOURCES) as u64
    );
    // Once their buckets are full again they are forgotten at the next sweep, not kept.
    let later = Instant::ZERO + Duration::from_secs(3);
    for i in 0..=MAX_RATE_SOURCES {
        let from = SocketAddr::from(([11, 0, (i >> 8) as u8, i as u8], 9));
        s.handle_discovery(later, from, &h);
    }
    assert_eq!(s.responder.limiter.len(), MAX_RATE_SOURCES);
    assert_eq!(
        s.stats().hello_sources_evicted,
        (n - MAX_RATE_SOURCES) as u64 + 1
    );
    assert_eq!(discovery_out(&mut s).len(), MAX_RATE_SOURCES + 1);
    // No limit configured: nothing is remembered.
    let mut u = server_with(|c| c.welcome_rate = 0);
    for _ in 0..100 {
        u.handle_discovery(Instant::ZERO, "10.0.0.1:9".parse().unwrap(), &h);
    }
    assert_eq!(discovery_out(&mut u).len(), 100);
    assert_eq!(u.responder.limiter.len(), 0);
}

#[test]
fn another_daemons_announce_is_reported_and_our_own_is_not() {
    let mut s = server();
    let ours = run(&mut s, Instant::ZERO);
    let (_, _, own) = &ours[0];
    let mut b = Vec::new();
    own.write(&mut b, None);
    let from: SocketAddr = "10.0.0.1:9".parse().unwrap();
    s.handle_discovery(Instant::ZERO, from, &b);
    let other = Datagram::Announce(crate::discovery::DaemonInfo {
        instance: 0xBAD,
        sctp_udp_port: 1,
        sctp_port: 1,
        addr: None,
        key: crate::identity::PublicKey([1; 32]),
        needs_secret: false,
    });
    other.write(&mut b, None);
    s.handle_discovery(Instant::ZERO, from, &b);
    let events: Vec<Event> = std::iter::from_fn(|| s.poll_event(Instant::ZERO)).collect();
    assert_eq!(events, vec![Event::ForeignDaemon(from)]);
    assert_eq!(s.stats().foreign_announces, 1);
}

#[test]
fn stopping_with_no_clients_stops_at_once() {
    let mut s = server();
    s.stop(Instant::ZERO);
    let events: Vec<Event> = std::iter::from_fn(|| s.poll_event(Instant::ZERO)).collect();
    assert_eq!(events, vec![Event::Stopped { unfinished: 0 }]);
}

#[test]
fn the_default_detection_bound_is_the_documented_2_95_s() {
    // 1 s interval + 1.5 × RTO.Initial 300 ms, then 300 + 400 + 400 + 400 ms of backed-off probes (PERF.md).
    assert_eq!(config().detection_bound(), Duration::from_millis(2950));
    // A client gives up after 100 + 200 + 400 + 800 + 1000 + 1000 ms (RTO.Min 100 ms, max 1 s, 5 retransmits).
    assert_eq!(
        crate::client::shortest_give_up(),
        Duration::from_millis(3500)
    );
}

#[test]
fn welcomes_and_announces_carry_the_daemons_key() {
    let mut s = server();
    let key = Identity::from_secret([5; 32]).public();
    s.handle_discovery(Instant::ZERO, "10.0.0.9:5000".parse().unwrap(), &hello(3));
    let out = discovery_out(&mut s);
    assert!(!out.is_empty());
    for (_, d) in out {
        match d {
            Datagram::Welcome { daemon, .. } | Datagram::Announce(daemon) => {
                assert_eq!(daemon.key, key);
                assert!(!daemon.needs_secret);
            }
            Datagram::Hello(_) => panic!("a HELLO from the server"),
        }
    }
}

#[test]
fn under_a_secret_only_authenticated_hellos_get_an_authenticated_welcome() {
    let psk = crate::secure::Psk::from_secret(b"the office secret, 32 bytes long");
    let mac = *psk.discovery_key();
    let cfg = Config {
        psk: Some(psk),
        ..config()
    };
    let mut s = Server::new(cfg, [7; 32], 1_700_000_000_000, Instant::ZERO);
    // The start-up ANNOUNCE is authenticated.
    let first = run(&mut s, Instant::ZERO);
    assert!(!first.is_empty());
    let from: SocketAddr = "10.0.0.9:5000".parse().unwrap();
    s.handle_discovery(Instant::ZERO, from, &hello_with(1, Some(&mac)));
    let out = discovery_out_auth(&mut s, Some(&mac));
    assert_eq!(out.len(), 1);
    assert!(
        matches!(out[0], (_, Datagram::Welcome { to: 1, daemon }, Auth::Valid) if daemon.needs_secret)
    );
    // Without the secret (or with another): only the hint that one is needed, which proves nothing.
    for bad in [None, Some(&[9u8; 32])] {
        s.handle_discovery(Instant::ZERO, from, &hello_with(2, bad));
        let out = discovery_out_auth(&mut s, Some(&mac));
        assert_eq!(out.len(), 1);
        assert!(
            matches!(out[0], (_, Datagram::Welcome { to: 2, daemon }, Auth::Open) if daemon.needs_secret)
        );
    }
    assert_eq!(s.stats().discovery_unauthenticated, 2);
}

#[test]
fn a_protocol_1_hello_gets_a_protocol_1_welcome() {
    let mut s = server();
    let mut hello = Vec::new();
    hello.extend_from_slice(&crate::discovery::MAGIC);
    hello.extend_from_slice(&[crate::discovery::VERSION_1, 1, 0, 0]);
    hello.extend_from_slice(&77u64.to_be_bytes());
    hello.extend_from_slice(&[2, b'o', b'k', 0, 1, 0, 2]);
    s.handle_discovery(Instant::ZERO, "10.0.0.9:5000".parse().unwrap(), &hello);
    let mut buf = [0u8; crate::discovery::MAX_DATAGRAM];
    let t = s.poll_discovery_transmit(&mut buf).expect("an answer");
    assert_eq!(buf[4], crate::discovery::VERSION_1);
    assert_eq!(&buf[t.len - 8..t.len], &77u64.to_be_bytes());
    assert_eq!(s.stats().old_protocol, 1);
}
