//! Chat message latency over real loopback TCP, beside a raw TCP round trip measured in the same run:
//! - raw: one thread, two connected sockets, 64 bytes written one way and back;
//! - reused: a MSG from one peer to the other and its ACK back, on a connection already open;
//! - fresh: the same on a new connection each time (connect, HELLOs, MSG, ACK).
//!
//! Both peers run on one reactor in this process, so the figures are the protocol's cost plus the kernel's,
//! with no thread hand-offs. `cargo bench --bench chat_latency` prints p50/p99 in µs and one JSON line.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant as StdInstant};

use mio::Token;
use multiproto::io::chat::ChatIo;
use multiproto::nick::Nick;
use multiproto::peer::{Config, Peer, PeerEvent, Target};
use multiproto::reactor::{Reactor, ReactorEvent};

const ROUNDS: usize = 2000;

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn raw_rtt() -> Vec<f64> {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (mut b, _) = l.accept().unwrap();
    a.set_nodelay(true).unwrap();
    b.set_nodelay(true).unwrap();
    let mut buf = [0u8; 64];
    (0..ROUNDS)
        .map(|_| {
            let t = StdInstant::now();
            a.write_all(&buf).unwrap();
            b.read_exact(&mut buf).unwrap();
            b.write_all(&buf).unwrap();
            a.read_exact(&mut buf).unwrap();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect()
}

/// The key of the bench's user `name`.
fn identity_of(name: &str) -> multiproto::identity::Identity {
    multiproto::identity::Identity::from_secret(multiproto::secure::derive_seed(&[9; 32], name))
}

struct Pair {
    reactor: Reactor,
    a: ChatIo,
    b: ChatIo,
    events: Vec<ReactorEvent>,
}

impl Pair {
    fn new(idle_timeout: Duration) -> Pair {
        let reactor = Reactor::new().unwrap();
        let mk = |n: &str, i: u64, tok: usize| {
            let mut cfg = Config::new(Nick::new(n).unwrap(), i, identity_of(n));
            cfg.idle_timeout = idle_timeout;
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            ChatIo::new(
                l,
                Peer::new(cfg),
                reactor.registry(),
                Token(tok),
                Token(tok + 1000),
            )
            .unwrap()
        };
        let a = mk("alice", 1, 10);
        let b = mk("bob", 2, 20_000);
        let b_addr = b.local_addr().unwrap();
        let mut p = Pair {
            reactor,
            a,
            b,
            events: Vec::new(),
        };
        let now = p.reactor.now();
        // What the daemon would give: bob's address and key to alice (an IK handshake on each fresh
        // connection, as mpc does), alice's key to bob (her messages show at once, as hers).
        let (alice, bob) = (Nick::new("alice").unwrap(), Nick::new("bob").unwrap());
        p.a.peer.set_contact(now, bob, b_addr, true);
        p.a.peer
            .set_key(now, bob, Some(identity_of("bob").public()));
        p.b.peer
            .set_key(now, alice, Some(identity_of("alice").public()));
        p
    }

    /// Sends one message from a to b and runs until a sees it delivered; returns µs.
    fn round(&mut self) -> f64 {
        let t = StdInstant::now();
        let now = self.reactor.now();
        let wall = self.reactor.wall_ms();
        let id = self
            .a
            .peer
            .send(now, wall, Target::Nick(Nick::new("bob").unwrap()), "ping")
            .unwrap();
        self.a.process(now, self.reactor.registry());
        loop {
            self.reactor
                .turn(Some(now + Duration::from_secs(5)), &mut self.events)
                .unwrap();
            let now = self.reactor.now();
            for ev in std::mem::take(&mut self.events) {
                if let ReactorEvent::Io(tok, r) = ev {
                    if self.a.owns(tok) {
                        self.a.handle_event(now, 0, tok, r, self.reactor.registry());
                    } else if self.b.owns(tok) {
                        self.b.handle_event(now, 0, tok, r, self.reactor.registry());
                    }
                }
            }
            while self.b.peer.poll_event().is_some() {}
            self.b.process(now, self.reactor.registry());
            while let Some(e) = self.a.peer.poll_event() {
                if matches!(e, PeerEvent::Delivered { id: d, .. } if d == id) {
                    return t.elapsed().as_secs_f64() * 1e6;
                }
            }
            assert!(t.elapsed() < Duration::from_secs(5), "no delivery");
        }
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this too: keep that short.
    let quick = std::env::args().any(|a| a == "--test" || a == "--list");
    if quick {
        return;
    }
    let mut raw = raw_rtt();
    let mut reused_pair = Pair::new(Duration::from_secs(600));
    reused_pair.round(); // opens the connection
    let mut reused: Vec<f64> = (0..ROUNDS).map(|_| reused_pair.round()).collect();
    // Fresh: an idle timeout of zero closes each connection once it is quiet, so every round connects anew.
    let mut fresh_pair = Pair::new(Duration::ZERO);
    let mut fresh: Vec<f64> = (0..ROUNDS / 4)
        .map(|_| {
            let v = fresh_pair.round();
            let now = fresh_pair.reactor.now() + Duration::from_millis(1);
            fresh_pair
                .a
                .handle_timeout(now, fresh_pair.reactor.registry());
            v
        })
        .collect();
    let (r50, r99) = (percentile(&mut raw, 0.5), percentile(&mut raw, 0.99));
    let (u50, u99) = (percentile(&mut reused, 0.5), percentile(&mut reused, 0.99));
    let (f50, f99) = (percentile(&mut fresh, 0.5), percentile(&mut fresh, 0.99));
    println!("raw TCP round trip      p50 {r50:8.1} µs  p99 {r99:8.1} µs");
    println!(
        "chat, reused connection p50 {u50:8.1} µs  p99 {u99:8.1} µs  ({:.2} × raw)",
        u50 / r50
    );
    println!(
        "chat, fresh connection  p50 {f50:8.1} µs  p99 {f99:8.1} µs  ({:.2} × raw)",
        f50 / r50
    );
    println!(
        "{}",
        serde_json::json!({"raw_tcp_rtt_p50_us": r50, "raw_tcp_rtt_p99_us": r99, "reused_p50_us": u50,
            "reused_p99_us": u99, "fresh_p50_us": f50, "fresh_p99_us": f99, "rounds": ROUNDS})
    );
}
