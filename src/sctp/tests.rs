//! Endpoint-level tests on the simulated network ([`crate::sim`]): handshakes, data transfer under loss,
//! duplication and reordering, heartbeats, shutdown and abort in every state, restarts, collisions, and hostile
//! packets. Each test is deterministic for its seed (see `MULTIPROTO_SIM_SEED`).

use std::net::SocketAddr;
use std::time::Duration;

use super::chunk::{self, Chunk, ChunkIter, InitOut, kind};
use super::param::{self, cause, ptype};
use super::wire::{HEADER_LEN, Header, Packet, Tsn, Writer};
use super::*;
use crate::sim::{Netem, Sim, Simulate, seed_or};
use crate::time::Instant;

const SERVER: &str = "127.0.0.1:9899";
const CLIENT: &str = "127.0.0.1:40000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn server_cfg() -> Config {
    Config {
        port: 5000,
        ..Config::default()
    }
}

fn client_cfg() -> Config {
    Config {
        port: 6000,
        accept: false,
        ..Config::default()
    }
}

/// A server node 0 and a client node 1 on `netem`.
fn pair(seed: u64, netem: Netem) -> Sim {
    let mut sim = Sim::new(seed, netem);
    sim.add_node(addr(SERVER), server_cfg());
    sim.add_node(addr(CLIENT), client_cfg());
    sim
}

fn ups(sim: &Sim, node: usize) -> Vec<AssocId> {
    sim.nodes[node]
        .events
        .iter()
        .filter(|(_, e)| *e == Event::Up)
        .map(|(id, _)| *id)
        .collect()
}

fn downs(sim: &Sim, node: usize) -> Vec<DownReason> {
    sim.nodes[node]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Down(r) => Some(*r),
            _ => None,
        })
        .collect()
}

fn count_messages(sim: &Sim, node: usize) -> usize {
    sim.nodes[node]
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::Message { .. }))
        .count()
}

fn messages(sim: &Sim, node: usize) -> Vec<(u16, Vec<u8>)> {
    sim.nodes[node]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Message { stream, data, .. } => Some((*stream, data.clone())),
            _ => None,
        })
        .collect()
}

/// Connects the client to the server and runs until both report `Up`. Returns (server id, client id).
fn establish(sim: &mut Sim) -> (AssocId, AssocId) {
    let c = sim.nodes[1]
        .ep
        .connect(sim.now, addr(SERVER), 5000)
        .unwrap();
    let ok = sim.run_until(sim.now + Duration::from_secs(60), 100_000, |s| {
        !ups(s, 0).is_empty() && !ups(s, 1).is_empty()
    });
    assert!(ok, "handshake did not complete");
    (ups(sim, 0)[0], c)
}

#[test]
fn handshake_and_small_messages() {
    let mut sim = pair(1, Netem::IDEAL);
    let (s, c) = establish(&mut sim);
    assert_eq!(sim.nodes[1].ep.state(c), Some(State::Established));
    assert_eq!(sim.nodes[0].ep.state(s), Some(State::Established));
    // Four packets: INIT, INIT ACK, COOKIE ECHO, COOKIE ACK.
    assert_eq!(sim.stats().sent, 4);
    assert_eq!(sim.nodes[0].ep.len(), 1);
    sim.nodes[1].ep.send(c, 0, false, b"hello").unwrap();
    sim.nodes[0].ep.send(s, 3, true, b"world").unwrap();
    sim.run_for(Duration::from_millis(50), 1000);
    assert_eq!(messages(&sim, 0), vec![(0, b"hello".to_vec())]);
    assert_eq!(messages(&sim, 1), vec![(3, b"world".to_vec())]);
    sim.nodes[0].ep.check_invariants();
}

#[test]
fn idle_association_is_small() {
    let mut sim = pair(2, Netem::IDEAL);
    let (s, c) = establish(&mut sim);
    for i in 0..20u8 {
        sim.nodes[1].ep.send(c, 0, false, &[i; 100]).unwrap();
        sim.nodes[0].ep.send(s, 0, false, &[i; 100]).unwrap();
    }
    sim.run_for(Duration::from_secs(5), 100_000);
    assert_eq!(messages(&sim, 0).len(), 20);
    for (node, id) in [(0, s), (1, c)] {
        let heap = sim.nodes[node].ep.heap_bytes(id).unwrap();
        // Only the stream sequence table (2 bytes per stream each way) stays once the data is acknowledged.
        assert_eq!(heap, 2 * 2 * 16, "node {node}");
        assert!(
            Endpoint::assoc_size() + heap <= 256 + 64,
            "{} + {heap}",
            Endpoint::assoc_size()
        );
    }
}

/// The message of `len` bytes numbered `n`, recognisable byte by byte.
fn payload(n: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ n.wrapping_mul(7)) as u8)
        .collect()
}

fn lossy_transfer(seed: u64, netem: Netem) {
    let mut sim = pair(seed, netem);
    let (_, c) = establish(&mut sim);
    let sizes = [
        1usize, 2, 3, 100, 1171, 1172, 1173, 5000, 20_000, 65_536, 100_000, 262_144,
    ];
    let mut expected: Vec<Vec<(u16, Vec<u8>)>> = vec![Vec::new(); 3];
    let mut sent = 0;
    for round in 0..2 {
        for (i, &len) in sizes.iter().enumerate() {
            let stream = (i % 3) as u16;
            let data = payload(round * 100 + i, len);
            sim.nodes[1].ep.send(c, stream, stream == 2, &data).unwrap();
            expected[usize::from(stream)].push((stream, data));
            sent += 1;
        }
    }
    let ok = sim.run_until(Instant::from_millis(3_600_000), 2_000_000, |s| {
        count_messages(s, 0) >= sent
    });
    let got = messages(&sim, 0);
    assert!(
        ok,
        "seed {seed}: delivered {} of {sent}; net {:?}",
        got.len(),
        sim.stats()
    );
    // Let retransmissions and duplicates settle, then check nothing arrived twice.
    sim.run_for(Duration::from_secs(30), 2_000_000);
    let got = messages(&sim, 0);
    assert_eq!(got.len(), sent, "seed {seed}: duplicate delivery");
    for stream in 0..3u16 {
        let mut on_stream: Vec<_> = got.iter().filter(|m| m.0 == stream).cloned().collect();
        if stream == 2 {
            // Unordered: any order, each exactly once.
            on_stream.sort();
            expected[2].sort();
        }
        assert!(
            on_stream == expected[usize::from(stream)],
            "seed {seed}: stream {stream} content or order"
        );
    }
    assert!(
        downs(&sim, 0).is_empty() && downs(&sim, 1).is_empty(),
        "seed {seed}: association lost"
    );
}

#[test]
fn transfer_on_ideal_network() {
    lossy_transfer(seed_or(3), Netem::IDEAL);
}

#[test]
fn transfer_with_loss_duplication_and_reordering() {
    let base = seed_or(100);
    for seed in base..base + 4 {
        lossy_transfer(
            seed,
            Netem {
                latency: Duration::from_millis(2),
                jitter: Duration::from_millis(3),
                loss: 0.1,
                duplicate: 0.05,
            },
        );
    }
}

#[test]
fn transfer_with_thirty_percent_loss() {
    let base = seed_or(200);
    for seed in base..base + 2 {
        let mut sim = pair(
            seed,
            Netem {
                latency: Duration::from_millis(1),
                jitter: Duration::from_millis(2),
                loss: 0.3,
                duplicate: 0.1,
            },
        );
        // At 30 % loss each way a handshake and heartbeats need more patience than the LAN defaults.
        for n in &mut sim.nodes {
            let _ = n;
        }
        sim.nodes.clear();
        let patient = |mut c: Config| {
            c.max_retransmits = 20;
            c.max_init_retransmits = 20;
            c
        };
        sim.add_node(addr(SERVER), patient(server_cfg()));
        sim.add_node(addr(CLIENT), patient(client_cfg()));
        let (_, c) = establish(&mut sim);
        let mut want = Vec::new();
        for i in 0..40 {
            let data = payload(i, 1 + i * 997 % 30_000);
            sim.nodes[1].ep.send(c, 1, false, &data).unwrap();
            want.push((1u16, data));
        }
        let ok = sim.run_until(Instant::from_millis(36_000_000), 3_000_000, |s| {
            count_messages(s, 0) >= 40
        });
        assert!(
            ok,
            "seed {seed}: {:?} {:?}",
            sim.stats(),
            sim.nodes[1].ep.stats()
        );
        sim.run_for(Duration::from_secs(30), 1_000_000);
        assert_eq!(messages(&sim, 0), want, "seed {seed}");
        assert!(sim.nodes[1].ep.stats().retransmits > 0);
    }
}

#[test]
fn heartbeat_loss_declares_peer_lost() {
    let mut sim = pair(4, Netem::IDEAL);
    let (s, c) = establish(&mut sim);
    let t0 = sim.now;
    // The server goes silent (as if killed): nothing it sends reaches the client.
    sim.block(0, 1, true);
    let ok = sim.run_until(t0 + Duration::from_secs(120), 100_000, |s| {
        !downs(s, 1).is_empty()
    });
    assert!(ok);
    assert_eq!(downs(&sim, 1), vec![DownReason::Lost]);
    let cfg = client_cfg();
    // Detection: at most one interval (plus jitter) until the next heartbeat, then Association.Max.Retrans + 1
    // unanswered ones, each given one RTO, doubling from RTO.Min up to RTO.Max.
    let elapsed = sim.now - t0;
    let mut rto = cfg.rto.min;
    let mut strikes = Duration::ZERO;
    for _ in 0..=cfg.max_retransmits {
        strikes += rto;
        rto = (rto * 2).min(cfg.rto.max);
    }
    let bound =
        cfg.heartbeat_interval.unwrap() + cfg.rto.min * 3 / 2 + strikes + Duration::from_millis(2);
    assert!(elapsed <= bound, "{elapsed:?} > {bound:?}");
    assert!(elapsed >= strikes, "{elapsed:?} < {strikes:?}");
    let sent = sim.nodes[1].ep.stats().heartbeats_sent - sim.nodes[1].ep.stats().heartbeats_acked;
    assert_eq!(
        sent,
        u64::from(cfg.max_retransmits) + 1,
        "unanswered heartbeats before giving up"
    );
    assert!(sim.nodes[1].ep.state(c).is_none());
    assert_eq!(sim.nodes[1].ep.stats().assocs_lost, 1);
    // The server keeps heartbeating a client that still answers: it stays up.
    assert!(sim.nodes[0].ep.state(s).is_some());
}

#[test]
fn heartbeats_keep_idle_association_alive_and_measure_rtt() {
    let mut sim = pair(5, Netem::IDEAL);
    let (s, c) = establish(&mut sim);
    sim.run_for(Duration::from_secs(60), 100_000);
    assert!(downs(&sim, 0).is_empty() && downs(&sim, 1).is_empty());
    let st = sim.nodes[1].ep.stats();
    assert!(st.heartbeats_sent >= 40, "{st:?}");
    assert_eq!(st.heartbeats_sent, st.heartbeats_acked);
    // RTT is 200 µs: the RTO settles at its floor.
    assert_eq!(sim.nodes[1].ep.rto(c), Some(client_cfg().rto.min));
    assert_eq!(sim.nodes[0].ep.rto(s), Some(server_cfg().rto.min));
}

/// A server that defers to its clients' heartbeats (as mpd) and one client, associated. Returns the
/// simulator, the server's config and its association id.
fn deferring_pair(seed: u64) -> (Sim, Config, AssocId) {
    let mut sim = Sim::new(seed_or(seed), Netem::IDEAL);
    let server = Config {
        defer_to_peer_heartbeats: true,
        ..server_cfg()
    };
    sim.add_node(addr(SERVER), server.clone());
    sim.add_node(addr(CLIENT), client_cfg());
    let (s, _) = establish(&mut sim);
    (sim, server, s)
}

#[test]
fn a_server_deferring_to_client_heartbeats_sends_none_yet_finds_a_dead_client() {
    let (mut sim, server, s) = deferring_pair(41);
    // Until its RTO is measured the server heartbeats too (one or two, depending on how the two
    // schedules meet); from then on the client's heartbeats keep its own from going out.
    sim.run_for(Duration::from_secs(5), 100_000);
    let before = sim.nodes[0].ep.stats().heartbeats_sent;
    assert!((1..=2).contains(&before), "{before} server heartbeats");
    sim.run_for(Duration::from_secs(60), 100_000);
    let (srv, cli) = (sim.nodes[0].ep.stats(), sim.nodes[1].ep.stats());
    assert!(cli.heartbeats_sent >= 40, "{cli:?}");
    assert_eq!(cli.heartbeats_sent, cli.heartbeats_acked);
    assert_eq!(srv.heartbeats_sent, before, "deferred to the client's");
    assert_eq!(sim.nodes[0].ep.rto(s), Some(server.rto.min));
    // The client dies: the server probes it one deferred interval after its last heartbeat at most, then
    // gives up after Association.Max.Retrans + 1 unanswered probes.
    let t0 = sim.now;
    sim.block(1, 0, true);
    let ok = sim.run_until(t0 + Duration::from_secs(120), 100_000, |s| {
        !downs(s, 0).is_empty()
    });
    assert!(ok);
    assert_eq!(downs(&sim, 0), vec![DownReason::Lost]);
    assert!(sim.nodes[0].ep.state(s).is_none());
    let mut rto = server.rto.min;
    let mut strikes = Duration::ZERO;
    for _ in 0..=server.max_retransmits {
        strikes += rto;
        rto = (rto * 2).min(server.rto.max);
    }
    let bound = server.heartbeat_interval.unwrap()
        + server.rto.min * 2
        + strikes
        + Duration::from_millis(2);
    let elapsed = sim.now - t0;
    assert!(elapsed <= bound, "{elapsed:?} > {bound:?}");
}

#[test]
fn a_server_deferring_to_client_heartbeats_keeps_a_heartbeating_client_whose_data_is_lost() {
    let (mut sim, server, s) = deferring_pair(42);
    sim.run_for(Duration::from_secs(5), 100_000);
    // For 20 s nothing the server sends with DATA reaches the client (a receiver whose socket is full for
    // large packets), while the client's heartbeats and their acknowledgements pass. Retransmission
    // timeouts pile up far past Association.Max.Retrans, yet the client is alive: it stays.
    sim.block_data(0, 1, true);
    for i in 0..20u8 {
        sim.nodes[0].ep.send(s, 0, false, &[i; 300]).unwrap();
    }
    sim.run_for(Duration::from_secs(20), 1_000_000);
    let t3 = sim.nodes[0].ep.stats().t3_timeouts;
    assert!(
        t3 > u64::from(server.max_retransmits) + 1,
        "{t3} T3 timeouts: enough to give up on a silent peer"
    );
    assert!(downs(&sim, 0).is_empty() && downs(&sim, 1).is_empty());
    assert_eq!(count_messages(&sim, 1), 0);
    // The path clears: everything arrives, in order.
    sim.block_data(0, 1, false);
    let ok = sim.run_until(sim.now + Duration::from_secs(30), 1_000_000, |s| {
        count_messages(s, 1) == 20
    });
    assert!(ok, "{} of 20 delivered", count_messages(&sim, 1));
    let want: Vec<(u16, Vec<u8>)> = (0..20u8).map(|i| (0, vec![i; 300])).collect();
    assert_eq!(messages(&sim, 1), want);
    // With data outstanding again, a client that falls silent is still given up on.
    sim.nodes[0].ep.send(s, 0, false, &[99; 300]).unwrap();
    sim.block(1, 0, true);
    sim.block(0, 1, true);
    let t0 = sim.now;
    let ok = sim.run_until(t0 + Duration::from_secs(60), 1_000_000, |s| {
        !downs(s, 0).is_empty()
    });
    assert!(ok);
    assert_eq!(downs(&sim, 0), vec![DownReason::Lost]);
    // Within an interval and Association.Max.Retrans + 1 timeouts, each at most RTO.Max (the RTO may
    // still be backed off from the lossy stretch).
    let bound = server.heartbeat_interval.unwrap()
        + server.rto.max * (u32::from(server.max_retransmits) + 2);
    assert!(sim.now - t0 <= bound, "{:?} > {bound:?}", sim.now - t0);
}

#[test]
fn graceful_shutdown_delivers_queued_data() {
    let mut sim = pair(
        6,
        Netem {
            latency: Duration::from_millis(1),
            jitter: Duration::from_millis(1),
            loss: 0.05,
            duplicate: 0.0,
        },
    );
    let (_, c) = establish(&mut sim);
    for i in 0..30 {
        sim.nodes[1]
            .ep
            .send(c, 0, false, &payload(i, 3000))
            .unwrap();
    }
    sim.nodes[1].ep.shutdown(sim.now, c);
    assert_eq!(sim.nodes[1].ep.state(c), Some(State::ShutdownPending));
    assert_eq!(
        sim.nodes[1].ep.send(c, 0, false, b"late"),
        Err(SendError::ShuttingDown)
    );
    let ok = sim.run_until(Instant::from_millis(600_000), 500_000, |s| {
        !downs(s, 0).is_empty() && !downs(s, 1).is_empty()
    });
    assert!(ok);
    assert_eq!(messages(&sim, 0).len(), 30);
    assert_eq!(downs(&sim, 0), vec![DownReason::Shutdown]);
    assert_eq!(downs(&sim, 1), vec![DownReason::Shutdown]);
    assert!(sim.nodes[0].ep.is_empty() && sim.nodes[1].ep.is_empty());
}

#[test]
fn simultaneous_shutdown() {
    let mut sim = pair(7, Netem::IDEAL);
    let (s, c) = establish(&mut sim);
    let now = sim.now;
    sim.nodes[0].ep.shutdown(now, s);
    sim.nodes[1].ep.shutdown(now, c);
    let ok = sim.run_until(now + Duration::from_secs(30), 10_000, |s| {
        !downs(s, 0).is_empty() && !downs(s, 1).is_empty()
    });
    assert!(ok);
    assert_eq!(downs(&sim, 0), vec![DownReason::Shutdown]);
    assert_eq!(downs(&sim, 1), vec![DownReason::Shutdown]);
}

#[test]
fn shutdown_received_side_finishes_its_data_first() {
    let mut sim = pair(8, Netem::IDEAL);
    let (s, c) = establish(&mut sim);
    for i in 0..10 {
        sim.nodes[0]
            .ep
            .send(s, 0, false, &payload(i, 10_000))
            .unwrap();
    }
    sim.nodes[1].ep.shutdown(sim.now, c);
    let ok = sim.run_until(sim.now + Duration::from_secs(30), 100_000, |s| {
        downs(s, 0).len() == 1
    });
    assert!(ok);
    assert_eq!(messages(&sim, 1).len(), 10);
}

#[test]
fn shutdown_and_abort_in_handshake_states() {
    // Shutdown in COOKIE-WAIT: the association just goes away.
    let mut sim = pair(9, Netem::IDEAL);
    sim.block(1, 0, true);
    let c = sim.nodes[1]
        .ep
        .connect(sim.now, addr(SERVER), 5000)
        .unwrap();
    sim.drain();
    assert_eq!(sim.nodes[1].ep.state(c), Some(State::CookieWait));
    sim.nodes[1].ep.shutdown(sim.now, c);
    sim.drain();
    assert_eq!(downs(&sim, 1), vec![DownReason::Shutdown]);

    // Shutdown in COOKIE-WAIT with data queued: the handshake completes, the data is delivered, then the
    // association closes gracefully.
    let mut sim = pair(24, Netem::IDEAL);
    let c = sim.nodes[1]
        .ep
        .connect(sim.now, addr(SERVER), 5000)
        .unwrap();
    sim.nodes[1].ep.send(c, 0, false, b"before up").unwrap();
    sim.nodes[1].ep.shutdown(sim.now, c);
    assert_eq!(sim.nodes[1].ep.state(c), Some(State::CookieWait));
    let ok = sim.run_until(sim.now + Duration::from_secs(5), 1000, |s| {
        !downs(s, 0).is_empty() && !downs(s, 1).is_empty()
    });
    assert!(ok);
    assert_eq!(messages(&sim, 0), vec![(0, b"before up".to_vec())]);
    assert_eq!(downs(&sim, 1), vec![DownReason::Shutdown]);
    assert_eq!(downs(&sim, 0), vec![DownReason::Shutdown]);

    // Abort in COOKIE-ECHOED: the server never sees the COOKIE ECHO, so it never creates state.
    let mut sim = pair(10, Netem::IDEAL);
    let c = sim.nodes[1]
        .ep
        .connect(sim.now, addr(SERVER), 5000)
        .unwrap();
    sim.step(); // INIT reaches the server, which answers statelessly.
    sim.block(1, 0, true);
    sim.step(); // INIT ACK reaches the client; its COOKIE ECHO is lost.
    assert_eq!(sim.nodes[1].ep.state(c), Some(State::CookieEchoed));
    sim.nodes[1].ep.abort(c);
    sim.drain();
    assert_eq!(downs(&sim, 1), vec![DownReason::LocalAbort]);
    assert!(sim.nodes[0].ep.is_empty());

    // INIT never answered: InitFailed after Max.Init.Retransmits.
    let mut sim = pair(11, Netem::IDEAL);
    sim.block(1, 0, true);
    sim.nodes[1]
        .ep
        .connect(sim.now, addr(SERVER), 5000)
        .unwrap();
    let ok = sim.run_until(Instant::from_millis(600_000), 10_000, |s| {
        !downs(s, 1).is_empty()
    });
    assert!(ok);
    assert_eq!(downs(&sim, 1), vec![DownReason::InitFailed]);
    // 1 + Max.Init.Retransmits INITs were sent.
    assert_eq!(
        sim.stats().sent,
        1 + u64::from(client_cfg().max_init_retransmits)
    );
}

#[test]
fn abort_in_established_and_shutdown_states() {
    for shutdown_first in [false, true] {
        let mut sim = pair(12, Netem::IDEAL);
        let (s, c) = establish(&mut sim);
        if shutdown_first {
            sim.nodes[1].ep.send(c, 0, false, &[1; 5000]).unwrap();
            sim.nodes[1].ep.shutdown(sim.now, c);
            assert_eq!(sim.nodes[1].ep.state(c), Some(State::ShutdownPending));
        }
        sim.nodes[1].ep.abort(c);
        sim.run_for(Duration::from_millis(10), 100);
        assert_eq!(downs(&sim, 1), vec![DownReason::LocalAbort]);
        assert_eq!(
            downs(&sim, 0),
            vec![DownReason::PeerAbort(Some(cause::USER_ABORT))]
        );
        assert!(sim.nodes[0].ep.state(s).is_none());
    }
    // Abort from the SHUTDOWN-RECEIVED side while it still has data to send.
    let mut sim = pair(13, Netem::IDEAL);
    let (s, c) = establish(&mut sim);
    sim.block(0, 1, true);
    sim.nodes[0].ep.send(s, 0, false, &[1; 100]).unwrap();
    sim.step();
    sim.nodes[1].ep.shutdown(sim.now, c);
    sim.run_for(Duration::from_millis(5), 100);
    assert_eq!(sim.nodes[0].ep.state(s), Some(State::ShutdownReceived));
    sim.block(0, 1, false);
    sim.nodes[0].ep.abort(s);
    sim.run_for(Duration::from_millis(5), 100);
    assert_eq!(
        downs(&sim, 1),
        vec![DownReason::PeerAbort(Some(cause::USER_ABORT))]
    );
}

#[test]
fn shutdown_sent_times_out_when_peer_vanishes() {
    let mut sim = pair(14, Netem::IDEAL);
    let (_, c) = establish(&mut sim);
    sim.block(0, 1, true);
    sim.nodes[1].ep.shutdown(sim.now, c);
    sim.run_until(sim.now + Duration::from_secs(1), 100, |s| {
        s.nodes[1].ep.state(c) == Some(State::ShutdownSent)
    });
    let ok = sim.run_until(sim.now + Duration::from_secs(120), 10_000, |s| {
        !downs(s, 1).is_empty()
    });
    assert!(ok);
    assert_eq!(downs(&sim, 1), vec![DownReason::Lost]);
}

#[test]
fn peer_restart_is_detected_and_association_continues() {
    let mut sim = pair(15, Netem::IDEAL);
    let (s, _) = establish(&mut sim);
    // The client process restarts on the same address: a new endpoint, new tags.
    sim.nodes[1].ep = Endpoint::new(client_cfg(), [42; 32]);
    sim.nodes[1].events.clear();
    let c2 = sim.nodes[1]
        .ep
        .connect(sim.now, addr(SERVER), 5000)
        .unwrap();
    let ok = sim.run_until(sim.now + Duration::from_secs(10), 10_000, |s| {
        !ups(s, 1).is_empty()
    });
    assert!(ok);
    assert!(
        sim.nodes[0]
            .events
            .iter()
            .any(|(id, e)| *id == s && *e == Event::Restarted)
    );
    assert_eq!(sim.nodes[0].ep.len(), 1, "no duplicate association");
    assert_eq!(sim.nodes[0].ep.stats().restarts, 1);
    sim.nodes[1]
        .ep
        .send(c2, 0, false, b"after restart")
        .unwrap();
    sim.nodes[0].ep.send(s, 0, false, b"welcome back").unwrap();
    sim.run_for(Duration::from_millis(100), 1000);
    assert_eq!(messages(&sim, 0), vec![(0, b"after restart".to_vec())]);
    assert_eq!(messages(&sim, 1), vec![(0, b"welcome back".to_vec())]);
    sim.nodes[0].ep.check_invariants();
}

#[test]
fn init_collision_yields_one_association() {
    let mut sim = Sim::new(16, Netem::IDEAL);
    sim.add_node(
        addr(SERVER),
        Config {
            port: 5000,
            ..Config::default()
        },
    );
    sim.add_node(
        addr(CLIENT),
        Config {
            port: 5000,
            ..Config::default()
        },
    );
    let a = sim.nodes[0]
        .ep
        .connect(sim.now, addr(CLIENT), 5000)
        .unwrap();
    let b = sim.nodes[1]
        .ep
        .connect(sim.now, addr(SERVER), 5000)
        .unwrap();
    sim.run_for(Duration::from_secs(2), 10_000);
    assert_eq!(ups(&sim, 0), vec![a]);
    assert_eq!(ups(&sim, 1), vec![b]);
    assert_eq!(sim.nodes[0].ep.len(), 1);
    assert_eq!(sim.nodes[1].ep.len(), 1);
    sim.nodes[0].ep.send(a, 0, false, b"x").unwrap();
    sim.nodes[1].ep.send(b, 0, false, b"y").unwrap();
    sim.run_for(Duration::from_millis(100), 1000);
    assert_eq!(messages(&sim, 1), vec![(0, b"x".to_vec())]);
    assert_eq!(messages(&sim, 0), vec![(0, b"y".to_vec())]);
    assert!(downs(&sim, 0).is_empty() && downs(&sim, 1).is_empty());
}

#[test]
fn data_queued_before_establishment_is_sent_in_order() {
    let mut sim = pair(17, Netem::IDEAL);
    let c = sim.nodes[1]
        .ep
        .connect(sim.now, addr(SERVER), 5000)
        .unwrap();
    for i in 0..5u8 {
        sim.nodes[1].ep.send(c, 1, false, &[i]).unwrap();
    }
    sim.run_for(Duration::from_millis(100), 1000);
    let got: Vec<_> = messages(&sim, 0).into_iter().map(|m| m.1[0]).collect();
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
}

#[test]
fn send_errors() {
    let mut sim = pair(18, Netem::IDEAL);
    let (_, c) = establish(&mut sim);
    let ep = &mut sim.nodes[1].ep;
    assert_eq!(ep.send(c, 16, false, b"x"), Err(SendError::InvalidStream));
    assert_eq!(ep.send(c, 0, false, b""), Err(SendError::Empty));
    assert_eq!(
        ep.send(c, 0, false, &vec![0; 256 * 1024 + 1]),
        Err(SendError::TooLarge)
    );
    for _ in 0..4 {
        ep.send(c, 0, false, &vec![0; 256 * 1024]).unwrap();
    }
    assert_eq!(ep.send(c, 0, false, &[0; 10]), Err(SendError::BufferFull));
    let stale = AssocId {
        index: c.index,
        generation: c.generation + 1,
    };
    assert_eq!(ep.send(stale, 0, false, b"x"), Err(SendError::UnknownAssoc));
    assert_eq!(
        ep.connect(sim.now, addr(SERVER), 5000),
        Err(ConnectError::Exists)
    );
}

/// Flow control for a sender that paces itself: `try_send` hands a refused message back, and the association
/// is reported once, when its queue has drained to half the send buffer (not only when it is empty).
#[test]
fn a_refused_message_is_handed_back_and_the_association_reported_writable_at_half_the_buffer() {
    let mut sim = pair(19, Netem::IDEAL);
    let (s, _) = establish(&mut sim);
    let buf = server_cfg().send_buffer;
    let len = 200 * 1024;
    let msg = Payload::Shared(std::sync::Arc::from(payload(1, len)));
    let ep = &mut sim.nodes[0].ep;
    assert_eq!(ep.send_room(s), Some(buf));
    let mut taken = 0;
    let back = loop {
        match ep.try_send(s, 0, false, 0, msg.clone()) {
            Ok(()) => taken += 1,
            Err((e, back)) => {
                assert_eq!(e, SendError::BufferFull);
                break back;
            }
        }
    };
    assert_eq!(taken, buf / len);
    assert_eq!(back, msg, "the refused message is handed back whole");
    assert_eq!(ep.send_room(s), Some(buf - taken * len));
    assert_eq!(ep.poll_writable(), None, "nothing is acknowledged yet");
    // A plain send asks for no report, and an unknown association hands the message back too.
    assert_eq!(
        ep.send(s, 0, false, &[0; 250 * 1024]),
        Err(SendError::BufferFull)
    );
    let stale = AssocId {
        index: s.index,
        generation: s.generation + 1,
    };
    assert!(matches!(
        ep.try_send(stale, 0, false, 0, msg.clone()),
        Err((SendError::UnknownAssoc, m)) if m == msg
    ));
    assert_eq!(ep.send_room(stale), None);
    let mut report = None;
    for _ in 0..100_000 {
        sim.step();
        if let Some(id) = sim.nodes[0].ep.poll_writable() {
            report = Some((id, sim.nodes[0].ep.send_room(s).unwrap()));
            break;
        }
    }
    let (id, room) = report.expect("the association was never reported writable");
    assert_eq!(id, s);
    assert!(room >= buf / 2, "reported with only {room} bytes of room");
    assert!(room < buf, "reported only once everything was acknowledged");
    assert!(sim.nodes[0].ep.try_send(s, 0, false, 0, back).is_ok());
    sim.run_for(Duration::from_secs(2), 100_000);
    assert_eq!(messages(&sim, 1).len(), taken + 1);
    let want = msg.to_vec();
    assert!(messages(&sim, 1).iter().all(|(_, m)| m[..] == want[..]));
    assert_eq!(sim.nodes[0].ep.send_room(s), Some(buf));
    assert_eq!(
        sim.nodes[0].ep.poll_writable(),
        None,
        "one report per refusal"
    );
}

// ---- hostile and malformed packets -----------------------------------------------------------------------

/// A server endpoint alone, for feeding crafted packets.
fn lone_server() -> Endpoint {
    Endpoint::new(server_cfg(), [1; 32])
}

fn drain(ep: &mut Endpoint) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while let Some(t) = ep.poll_transmit(Instant::ZERO, &mut buf) {
        out.push((t.dst, buf[..t.len].to_vec()));
    }
    out
}

fn build(vtag: u32, f: impl FnOnce(&mut Writer<'_>)) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let mut w = Writer::new(
        &mut buf,
        Header {
            src_port: 6000,
            dst_port: 5000,
            vtag,
        },
    )
    .unwrap();
    f(&mut w);
    let n = w.finish();
    buf.truncate(n);
    buf
}

fn init_packet(tag: u32, os: u16, mis: u16, params: &[u8]) -> Vec<u8> {
    build(0, |w| {
        let m = chunk::begin_init(
            w,
            kind::INIT,
            &InitOut {
                initiate_tag: tag,
                a_rwnd: 100_000,
                out_streams: os,
                in_streams: mis,
                initial_tsn: Tsn(1000),
            },
        )
        .unwrap();
        w.put(params).unwrap();
        w.end_chunk(m).unwrap();
    })
}

/// Recomputes the checksum of a packet edited by hand.
fn fix_crc(mut p: Vec<u8>) -> Vec<u8> {
    let sum = wire::checksum(&p);
    p[8..12].copy_from_slice(&sum.to_le_bytes());
    p
}

fn first_chunk(p: &[u8]) -> (u32, Chunk<'_>) {
    let pk = Packet::new_checked(p).unwrap();
    assert!(pk.verify_checksum());
    (
        pk.vtag(),
        ChunkIter::new(&p[HEADER_LEN..]).next().unwrap().unwrap(),
    )
}

#[test]
fn init_gets_stateless_init_ack_with_cookie_and_unrecognized_params() {
    let mut ep = lone_server();
    // Forward-TSN-supported (0xC000: skip and report) and ECN (0x8000: skip silently), as usrsctp sends.
    let params = [0xc0, 0x00, 0, 4, 0x80, 0x00, 0, 4];
    ep.handle(
        Instant::ZERO,
        addr(CLIENT),
        &init_packet(77, 10, 2048, &params),
    );
    assert!(ep.is_empty(), "no state for an INIT");
    let out = drain(&mut ep);
    assert_eq!(out.len(), 1);
    let (vtag, c) = first_chunk(&out[0].1);
    assert_eq!(vtag, 77);
    let Chunk::InitAck(ia) = c else {
        panic!("{c:?}")
    };
    assert_ne!(ia.initiate_tag, 0);
    let tlvs: Vec<_> = param::TlvIter::new(ia.params).map(Result::unwrap).collect();
    assert_eq!(tlvs[0].kind, ptype::STATE_COOKIE);
    assert_eq!(tlvs[0].value.len(), cookie::COOKIE_LEN);
    assert_eq!(tlvs.len(), 2);
    assert_eq!(tlvs[1].kind, ptype::UNRECOGNIZED);
    assert_eq!(tlvs[1].value, &[0xc0, 0x00, 0, 4]);
}

#[test]
fn init_flood_leaves_memory_flat() {
    let mut ep = lone_server();
    let mut sent = 0;
    for i in 1..=20_000u32 {
        ep.handle(
            Instant::from_micros(u64::from(i)),
            addr(CLIENT),
            &init_packet(i.wrapping_mul(2_654_435_761) | 1, 1, 1, &[]),
        );
        if i % 3 == 0 {
            sent += drain(&mut ep).len();
        }
    }
    assert!(ep.is_empty());
    assert_eq!(ep.stats().inits, 20_000);
    // Replies not drained in time are dropped, never accumulated beyond the bound.
    assert!(sent + drain(&mut ep).len() + ep.stats().replies_dropped as usize == 20_000);
    assert!(ep.stats().replies_dropped > 0 || sent > 0);
}

#[test]
fn malformed_packets_are_counted_and_dropped() {
    let mut ep = lone_server();
    let good = init_packet(5, 1, 1, &[]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("short", vec![0; 8]),
        ("header only", good[..12].to_vec()),
        ("truncated chunk", fix_crc(good[..20].to_vec())),
        ("bad crc", {
            let mut p = good.clone();
            p[20] ^= 1;
            p
        }),
        (
            "zero-length chunk",
            build(0, |w| w.put(&[1, 0, 0, 0]).unwrap()),
        ),
        (
            "length past end",
            build(0, |w| w.put(&[1, 0, 0, 40, 0, 0, 0, 0]).unwrap()),
        ),
        (
            "bad init param length",
            init_packet(5, 1, 1, &[0, 5, 0, 7, 1, 2, 3, 0]),
        ),
    ];
    for (name, p) in &cases {
        ep.handle(Instant::ZERO, addr(CLIENT), p);
        assert!(drain(&mut ep).is_empty(), "{name}: expected a silent drop");
    }
    let st = ep.stats();
    assert_eq!(st.malformed + st.bad_checksum, cases.len() as u64);
    assert_eq!(st.bad_checksum, 1);
    assert!(ep.is_empty());
}

#[test]
fn init_with_zero_tag_is_dropped_and_zero_streams_aborted() {
    let mut ep = lone_server();
    ep.handle(Instant::ZERO, addr(CLIENT), &init_packet(0, 1, 1, &[]));
    assert!(drain(&mut ep).is_empty());
    for (os, mis) in [(0, 5), (5, 0)] {
        ep.handle(Instant::ZERO, addr(CLIENT), &init_packet(99, os, mis, &[]));
        let out = drain(&mut ep);
        assert_eq!(out.len(), 1);
        let (vtag, c) = first_chunk(&out[0].1);
        assert_eq!(vtag, 99);
        let Chunk::Abort { reflected, causes } = c else {
            panic!()
        };
        assert!(!reflected);
        assert_eq!(param::first_cause(causes).unwrap().0, cause::INVALID_PARAM);
    }
    // INIT bundled with another chunk, or with a non-zero tag: dropped.
    let mut p = init_packet(9, 1, 1, &[]);
    p[4] = 1;
    let p = fix_crc(p);
    ep.handle(Instant::ZERO, addr(CLIENT), &p);
    assert!(drain(&mut ep).is_empty());
    // Host name address: ABORT with "Unresolvable Address".
    ep.handle(
        Instant::ZERO,
        addr(CLIENT),
        &init_packet(98, 1, 1, &[0, 11, 0, 8, b'h', b'o', b's', b't']),
    );
    let out = drain(&mut ep);
    let (_, c) = first_chunk(&out[0].1);
    let Chunk::Abort { causes, .. } = c else {
        panic!()
    };
    assert_eq!(
        param::first_cause(causes).unwrap().0,
        cause::UNRESOLVABLE_ADDRESS
    );
    assert!(ep.is_empty());
}

#[test]
fn out_of_the_blue_packets() {
    let mut ep = lone_server();
    // DATA for no association: ABORT with the T bit and the packet's tag.
    let data = build(1234, |w| {
        chunk::write_data(
            w,
            &chunk::DataOut {
                flags: 3,
                tsn: Tsn(1),
                stream: 0,
                ssn: 0,
                ppid: 0,
                payload: b"x",
            },
        )
        .unwrap()
    });
    ep.handle(Instant::ZERO, addr(CLIENT), &data);
    let out = drain(&mut ep);
    let (vtag, c) = first_chunk(&out[0].1);
    assert_eq!(
        (vtag, c),
        (
            1234,
            Chunk::Abort {
                reflected: true,
                causes: &[]
            }
        )
    );
    // SHUTDOWN ACK: SHUTDOWN COMPLETE with the T bit.
    ep.handle(
        Instant::ZERO,
        addr(CLIENT),
        &build(55, |w| {
            chunk::write_empty(w, kind::SHUTDOWN_ACK, 0).unwrap()
        }),
    );
    let out = drain(&mut ep);
    assert_eq!(
        first_chunk(&out[0].1),
        (55, Chunk::ShutdownComplete { reflected: true })
    );
    // ABORT, SHUTDOWN COMPLETE, COOKIE ACK: silence.
    for k in [kind::ABORT, kind::SHUTDOWN_COMPLETE, kind::COOKIE_ACK] {
        ep.handle(
            Instant::ZERO,
            addr(CLIENT),
            &build(55, |w| chunk::write_empty(w, k, 0).unwrap()),
        );
        assert!(drain(&mut ep).is_empty(), "chunk type {k}");
    }
    assert_eq!(ep.stats().ootb, 5);
}

/// The messages `ep` delivered so far (draining its events).
fn delivered(ep: &mut Endpoint) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| ep.poll_event())
        .filter_map(|(_, e)| match e {
            Event::Message { data, .. } => Some(data),
            _ => None,
        })
        .collect()
}

#[test]
fn a_corrupted_packet_on_an_established_association_fails_its_checksum() {
    // Established associations verify with the header CRC they keep: corruption must still be caught there.
    let now = Instant::ZERO;
    let mut server = lone_server();
    let mut client = Endpoint::new(client_cfg(), [2; 32]);
    let c = client.connect(now, addr(SERVER), 5000).unwrap();
    for _ in 0..3 {
        for (_, p) in drain(&mut client) {
            server.handle(now, addr(CLIENT), &p);
        }
        for (_, p) in drain(&mut server) {
            client.handle(now, addr(SERVER), &p);
        }
    }
    assert_eq!(client.state(c), Some(State::Established));
    client.send(c, 0, false, b"hello").unwrap();
    let data = drain(&mut client);
    assert_eq!(data.len(), 1);
    for at in [8, 13, data[0].1.len() - 1] {
        let mut bad = data[0].1.clone();
        bad[at] ^= 0x20;
        server.handle(now, addr(CLIENT), &bad);
    }
    assert_eq!(server.stats().bad_checksum, 3);
    assert!(delivered(&mut server).is_empty());
    server.handle(now, addr(CLIENT), &data[0].1);
    assert_eq!(delivered(&mut server), vec![b"hello".to_vec()]);
}

/// Sends `ep` an INIT with initiate tag 77 from CLIENT; returns the INIT ACK's initiate tag and its cookie.
fn issued_cookie(ep: &mut Endpoint) -> (u32, Vec<u8>) {
    ep.handle(Instant::ZERO, addr(CLIENT), &init_packet(77, 4, 4, &[]));
    let out = drain(ep);
    let (_, c) = first_chunk(&out[0].1);
    let Chunk::InitAck(ia) = c else { panic!() };
    let cookie = param::TlvIter::new(ia.params)
        .next()
        .unwrap()
        .unwrap()
        .value
        .to_vec();
    (ia.initiate_tag, cookie)
}

fn cookie_echo(vtag: u32, cookie: &[u8]) -> Vec<u8> {
    build(vtag, |w| {
        chunk::write_raw(w, kind::COOKIE_ECHO, 0, cookie).unwrap()
    })
}

#[test]
fn a_server_that_stops_accepting_aborts_inits_and_honours_no_earlier_cookie() {
    let mut ep = lone_server();
    let (tag, cookie) = issued_cookie(&mut ep);
    ep.stop_accepting();
    // A new INIT: ABORT, with the initiator's tag, and still no state.
    ep.handle(Instant::ZERO, addr(CLIENT), &init_packet(78, 4, 4, &[]));
    let out = drain(&mut ep);
    assert_eq!(out.len(), 1);
    let (vtag, c) = first_chunk(&out[0].1);
    assert_eq!(vtag, 78);
    assert!(matches!(c, Chunk::Abort { .. }), "{c:?}");
    // A cookie issued before: authentic and fresh, but no association comes of it.
    ep.handle(
        Instant::from_millis(100),
        addr(CLIENT),
        &cookie_echo(tag, &cookie),
    );
    assert!(ep.is_empty());
    assert_eq!(ep.stats().bad_cookies, 1);
    assert!(drain(&mut ep).is_empty());
}

#[test]
fn forged_and_replayed_cookies_create_nothing() {
    let mut ep = lone_server();
    let (tag, cookie) = issued_cookie(&mut ep);
    let echo = cookie_echo;
    // Tampered cookie.
    let mut bad = cookie.clone();
    bad[13] ^= 1;
    ep.handle(Instant::ZERO, addr(CLIENT), &echo(tag, &bad));
    // Authentic cookie replayed from another address.
    ep.handle(Instant::ZERO, addr("127.0.0.2:40000"), &echo(tag, &cookie));
    // Wrong verification tag.
    ep.handle(Instant::ZERO, addr(CLIENT), &echo(tag ^ 1, &cookie));
    assert!(ep.is_empty());
    assert_eq!(ep.stats().bad_cookies, 2);
    assert_eq!(ep.stats().bad_vtag, 1);
    // Too late: a Stale Cookie error, still no state.
    ep.handle(
        Instant::from_millis(61_001),
        addr(CLIENT),
        &echo(tag, &cookie),
    );
    assert!(ep.is_empty());
    let out = drain(&mut ep);
    let (vtag, c) = first_chunk(&out[0].1);
    assert_eq!(vtag, 77);
    let Chunk::Error(causes) = c else { panic!() };
    assert_eq!(param::first_cause(causes).unwrap().0, cause::STALE_COOKIE);
    // In time: an association, answered with COOKIE ACK.
    ep.handle(Instant::from_millis(100), addr(CLIENT), &echo(tag, &cookie));
    assert_eq!(ep.len(), 1);
    let out = drain(&mut ep);
    assert_eq!(first_chunk(&out[0].1), (77, Chunk::CookieAck));
}

#[test]
fn wrong_vtag_and_unknown_chunks_in_an_association() {
    let mut sim = pair(19, Netem::IDEAL);
    let (s, _) = establish(&mut sim);
    let server = &mut sim.nodes[0].ep;
    let before = *server.stats();
    // Wrong tag: silently discarded.
    server.handle(
        sim.now,
        addr(CLIENT),
        &build(12345, |w| {
            chunk::write_empty(w, kind::COOKIE_ACK, 0).unwrap()
        }),
    );
    assert_eq!(server.stats().bad_vtag, before.bad_vtag + 1);
    assert!(drain(server).is_empty());
    assert_eq!(server.state(s), Some(State::Established));
}

#[test]
fn stale_cookie_error_makes_the_client_retry() {
    // A client whose COOKIE ECHO arrives late gets a Stale Cookie error and starts over with a preservative.
    let mut sim = pair(20, Netem::IDEAL);
    sim.nodes[0].ep = Endpoint::new(
        Config {
            cookie_life: Duration::from_millis(1),
            ..server_cfg()
        },
        [3; 32],
    );
    sim.net.netem.latency = Duration::from_millis(5);
    let c = sim.nodes[1]
        .ep
        .connect(sim.now, addr(SERVER), 5000)
        .unwrap();
    let ok = sim.run_until(sim.now + Duration::from_secs(5), 1000, |s| {
        s.nodes[0].ep.stats().stale_cookies > 0
    });
    assert!(ok);
    // The retried INIT carries a cookie preservative; with it (capped at 1 s) the cookie is fresh enough.
    let ok = sim.run_until(sim.now + Duration::from_secs(30), 10_000, |s| {
        !ups(s, 1).is_empty()
    });
    assert!(ok, "{:?}", sim.nodes[0].ep.stats());
    assert_eq!(ups(&sim, 1), vec![c]);
}

#[test]
fn icmp_unreachable_closes_the_association() {
    let mut sim = pair(21, Netem::IDEAL);
    let (s, c) = establish(&mut sim);
    sim.nodes[1].ep.send(c, 0, false, b"x").unwrap();
    let mut buf = [0u8; 1500];
    let t = sim.nodes[1].ep.poll_transmit(sim.now, &mut buf).unwrap();
    // A quoted packet with the wrong tag is ignored; the right one closes it.
    let mut wrong = buf[..t.len].to_vec();
    wrong[4] ^= 0xff;
    sim.nodes[1].ep.handle_unreachable(t.dst, &wrong);
    assert!(sim.nodes[1].ep.state(c).is_some());
    sim.nodes[1].ep.handle_unreachable(t.dst, &buf[..t.len]);
    sim.drain();
    assert_eq!(downs(&sim, 1), vec![DownReason::Unreachable]);
    let _ = s;
}

#[test]
fn one_endpoint_many_local_ports_to_one_peer() {
    let mut sim = pair(22, Netem::IDEAL);
    let now = sim.now;
    let ids: Vec<_> = (0..3)
        .map(|i| {
            sim.nodes[1]
                .ep
                .connect_from(now, 7000 + i, addr(SERVER), 5000)
                .unwrap()
        })
        .collect();
    assert_eq!(
        sim.nodes[1].ep.connect_from(now, 7000, addr(SERVER), 5000),
        Err(ConnectError::Exists)
    );
    sim.run_until(now + Duration::from_secs(5), 10_000, |s| {
        ups(s, 0).len() == 3 && ups(s, 1).len() == 3
    });
    assert_eq!(sim.nodes[0].ep.len(), 3);
    for (i, id) in ids.iter().enumerate() {
        sim.nodes[1].ep.send(*id, 0, false, &[i as u8]).unwrap();
    }
    sim.run_for(Duration::from_millis(100), 1000);
    let mut got: Vec<u8> = messages(&sim, 0).into_iter().map(|m| m.1[0]).collect();
    got.sort();
    assert_eq!(got, vec![0, 1, 2]);
    // The server tells them apart by our port.
    let mut ports: Vec<u16> = ups(&sim, 0)
        .iter()
        .map(|id| sim.nodes[0].ep.remote(*id).unwrap().1)
        .collect();
    ports.sort();
    assert_eq!(ports, vec![7000, 7001, 7002]);
    sim.nodes[0].ep.check_invariants();
    sim.nodes[1].ep.check_invariants();
}

#[test]
fn small_receive_window_still_delivers_everything() {
    let base = seed_or(300);
    for seed in base..base + 2 {
        let mut sim = Sim::new(
            seed,
            Netem {
                latency: Duration::from_millis(1),
                jitter: Duration::from_millis(2),
                loss: 0.05,
                duplicate: 0.02,
            },
        );
        // A window a few packets wide: the sender must stop, probe and resume as SACKs reopen it.
        let small = Config {
            rwnd: 8 * 1024,
            max_message: 4096,
            ..server_cfg()
        };
        sim.add_node(addr(SERVER), small);
        sim.add_node(addr(CLIENT), client_cfg());
        let (_, c) = establish(&mut sim);
        let mut want = Vec::new();
        for i in 0..300 {
            let data = payload(i, 1 + (i * 37) % 4000);
            sim.nodes[1].ep.send(c, 0, false, &data).unwrap();
            want.push((0u16, data));
        }
        let ok = sim.run_until(Instant::from_millis(3_600_000), 1_000_000, |s| {
            count_messages(s, 0) >= 300
        });
        assert!(ok, "seed {seed}: {} of 300", count_messages(&sim, 0));
        assert_eq!(messages(&sim, 0), want, "seed {seed}");
        assert_eq!(
            sim.nodes[0].ep.stats().data_dropped,
            0,
            "seed {seed}: sender overran the window"
        );
    }
}

/// Drives a client/server pair into `target` (client side) and aborts there; both sides must end.
fn abort_in(target: State) {
    let mut sim = pair(23, Netem::IDEAL);
    let (s, c) = establish(&mut sim);
    match target {
        State::Established => {}
        State::ShutdownPending => {
            sim.block(0, 1, true);
            sim.nodes[1].ep.send(c, 0, false, &[1; 10]).unwrap();
            sim.nodes[1].ep.shutdown(sim.now, c);
        }
        State::ShutdownSent => {
            sim.block(0, 1, true);
            sim.nodes[1].ep.shutdown(sim.now, c);
            sim.step();
        }
        State::ShutdownReceived => {
            sim.block(1, 0, true);
            sim.nodes[1].ep.send(c, 0, false, &[1; 10]).unwrap();
            sim.step();
            sim.block(1, 0, false);
            sim.block(0, 1, false);
            sim.nodes[0].ep.shutdown(sim.now, s);
            sim.run_until(sim.now + Duration::from_millis(50), 100, |s| {
                s.nodes[1].ep.state(c) == Some(State::ShutdownReceived)
            });
            sim.block(1, 0, true);
        }
        State::ShutdownAckSent => {
            sim.block(1, 0, true);
            sim.nodes[0].ep.shutdown(sim.now, s);
            sim.run_until(sim.now + Duration::from_millis(50), 100, |s| {
                s.nodes[1].ep.state(c) == Some(State::ShutdownAckSent)
            });
        }
        other => panic!("not covered here: {other}"),
    }
    assert_eq!(
        sim.nodes[1].ep.state(c),
        Some(target),
        "could not reach {target}"
    );
    sim.block(0, 1, false);
    sim.block(1, 0, false);
    sim.nodes[1].ep.abort(c);
    sim.run_for(Duration::from_millis(20), 1000);
    assert_eq!(downs(&sim, 1), vec![DownReason::LocalAbort], "{target}");
    assert_eq!(downs(&sim, 0).len(), 1, "{target}: server did not end");
    assert!(sim.nodes[0].ep.is_empty() && sim.nodes[1].ep.is_empty());
}

#[test]
fn abort_in_every_state_after_establishment() {
    for st in [
        State::Established,
        State::ShutdownPending,
        State::ShutdownSent,
        State::ShutdownReceived,
        State::ShutdownAckSent,
    ] {
        abort_in(st);
    }
}

#[test]
fn a_stalled_endpoint_probes_again_before_judging() {
    let mut sim = pair(25, Netem::IDEAL);
    let (s, c) = establish(&mut sim);
    // The server process is stopped for 10 s: its timers pass, nothing is read or answered.
    let stop = sim.now;
    let resume = stop + Duration::from_secs(10);
    sim.block(0, 1, true);
    sim.block(1, 0, true);
    // The client, which heartbeats too, would give up on the server meanwhile; keep it patient here so only
    // the server's judgement is tested.
    sim.nodes[1].ep.handle_stall(stop, Duration::ZERO);
    sim.now = resume;
    sim.block(0, 1, false);
    sim.block(1, 0, false);
    // On resume the server knows it was stalled and forgives, then probes.
    sim.nodes[0]
        .ep
        .handle_stall(resume, Duration::from_millis(500));
    sim.nodes[1]
        .ep
        .handle_stall(resume, Duration::from_millis(500));
    sim.run_for(Duration::from_secs(5), 10_000);
    assert!(
        downs(&sim, 0).is_empty(),
        "server declared a healthy client lost: {:?}",
        downs(&sim, 0)
    );
    assert_eq!(sim.nodes[0].ep.state(s), Some(State::Established));
    assert_eq!(sim.nodes[1].ep.state(c), Some(State::Established));
    // Without the stall notice the same gap is fatal: the control case.
    let mut sim = pair(25, Netem::IDEAL);
    establish(&mut sim);
    sim.block(1, 0, true);
    sim.run_for(Duration::from_secs(10), 100_000);
    assert_eq!(downs(&sim, 0), vec![DownReason::Lost]);
}

#[test]
fn probe_finds_a_dead_peer_within_a_few_rtos() {
    let mut sim = pair(26, Netem::IDEAL);
    let (s, _) = establish(&mut sim);
    // Let a heartbeat round finish so the next one is an interval away.
    sim.run_for(Duration::from_millis(1500), 1000);
    sim.block(1, 0, true);
    let t0 = sim.now;
    sim.nodes[0].ep.probe(t0, s);
    let ok = sim.run_until(t0 + Duration::from_secs(30), 10_000, |s| {
        !downs(s, 0).is_empty()
    });
    assert!(ok);
    let cfg = server_cfg();
    let mut rto = cfg.rto.min;
    let mut bound = Duration::from_millis(2);
    for _ in 0..=cfg.max_retransmits {
        bound += rto;
        rto = (rto * 2).min(cfg.rto.max);
    }
    assert!(sim.now - t0 <= bound, "{:?} > {bound:?}", sim.now - t0);
}

/// Runs of equal values in `flows`, as (value, length).
fn runs(flows: &[u32]) -> Vec<(u32, usize)> {
    let mut out: Vec<(u32, usize)> = Vec::new();
    for &f in flows {
        match out.last_mut() {
            Some((v, n)) if *v == f => *n += 1,
            _ => out.push((f, 1)),
        }
    }
    out
}

#[test]
fn transmits_come_in_bursts_per_association_with_their_flow() {
    let mut sim = pair(3, Netem::IDEAL);
    sim.add_node(addr("127.0.0.1:40001"), client_cfg());
    let (a, _) = establish(&mut sim);
    sim.nodes[2]
        .ep
        .connect(sim.now, addr(SERVER), 5000)
        .unwrap();
    assert!(
        sim.run_until(sim.now + Duration::from_secs(60), 100_000, |s| {
            ups(s, 0).len() == 2 && ups(s, 2).len() == 1
        })
    );
    let b = ups(&sim, 0)[1];
    for id in [a, b] {
        sim.nodes[0]
            .ep
            .send(id, 0, false, &payload(1, 200_000))
            .unwrap();
    }
    // A lossless, instant network by hand, so that every packet's flow is seen: rounds until both transfers
    // are out, their windows growing past a burst on the way.
    let mut flows = Vec::new();
    let mut buf = vec![0; 65_536];
    for _ in 0..60 {
        let now = sim.now;
        let mut out = Vec::new();
        while let Some(t) = sim.nodes[0].ep.poll_transmit(now, &mut buf) {
            flows.push(t.flow);
            out.push((t.dst, buf[..t.len].to_vec()));
        }
        for (dst, p) in out {
            let node = sim.node_at(dst).unwrap();
            sim.nodes[node].ep.handle(now, addr(SERVER), &p);
        }
        for node in 1..=2 {
            let from = if node == 1 {
                addr(CLIENT)
            } else {
                addr("127.0.0.1:40001")
            };
            while let Some(t) = sim.nodes[node].ep.poll_transmit(now, &mut buf) {
                let p = buf[..t.len].to_vec();
                sim.nodes[0].ep.handle(now, from, &p);
            }
        }
    }
    let runs = runs(&flows);
    assert!(
        runs.iter().all(|&(f, _)| f != 0),
        "association packets carry a flow: {runs:?}"
    );
    assert_eq!(
        runs.iter()
            .map(|r| r.0)
            .collect::<std::collections::HashSet<_>>()
            .len(),
        2,
        "one flow per association: {runs:?}"
    );
    // With both windows open, a burst ends at TRANSMIT_BURST and the other association takes its turn. (A
    // longer run only happens while the other has nothing it may send.)
    assert!(
        runs.windows(2)
            .any(|w| w[0].1 == TRANSMIT_BURST as usize && w[1].0 != w[0].0),
        "a wide-open window sends a whole burst, then the other's turn: {runs:?}"
    );
    assert!(runs.len() >= 3, "the associations take turns: {runs:?}");
}
