//! The cost of a roster change reaching every client: one join, coalesced into a delta by the registry and
//! sent over 10 000 SCTP associations, both ends of each association included (the clients' endpoints
//! receive and acknowledge it). Also the registry's share alone, and the roster wire format: a snapshot
//! page encoded and read in place (what every client, and the load harness 10⁸ times in a storm, does).
//!
//! `cargo bench --bench registry`

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use multiproto::nick::Nick;
use multiproto::registry::wire::{
    self, ClientMsg, Entry, Register, ServerMsg, ServerView, Status, flags,
};
use multiproto::registry::{Config, Out, Registry};
use multiproto::sctp::{AssocId, Endpoint};
use multiproto::time::Instant;

#[path = "support/pair.rs"]
mod pair;

const CLIENTS: u32 = 10_000;

/// A distinct key per client, as real clients have (the registry binds each nickname to one).
fn key_of(n: u64) -> multiproto::identity::PublicKey {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&n.to_le_bytes());
    multiproto::identity::PublicKey(k)
}

fn register_msg(nick: &str, instance: u64) -> Vec<u8> {
    ClientMsg::Register(Register {
        flags: flags::SUBSCRIBE,
        instance,
        nick: nick.into(),
        chat_port: 4000,
        chat_ip: None,
    })
    .encode()
}

/// Sends the registry's output over the server's associations; returns messages sent.
fn fan_out(reg: &mut Registry, server: &mut Endpoint) -> usize {
    let mut sent = 0;
    while let Some(o) = reg.poll_output() {
        match o {
            Out::To(id, b) => {
                let _ = server.send_owned(id, 0, false, multiproto::registry::wire::PPID, b);
                sent += 1;
            }
            Out::Broadcast(b) => {
                let subs: Vec<AssocId> = reg.subscribers().collect();
                for id in subs {
                    let _ = server.send_owned(
                        id,
                        0,
                        false,
                        multiproto::registry::wire::PPID,
                        multiproto::sctp::Payload::Shared(b.clone()),
                    );
                    sent += 1;
                }
            }
        }
    }
    sent
}

/// A server with `CLIENTS` registered, subscribed clients, each on its own association, everything
/// delivered and acknowledged.
fn setup() -> (Registry, Endpoint, Endpoint, Vec<u8>) {
    let mut buf = vec![0u8; 2048];
    let now = Instant::from_millis(1);
    let (mut server, mut client) = pair::endpoints();
    let mut reg = Registry::new(Config::default());
    for i in 0..CLIENTS {
        pair::handshake(&mut server, &mut client, i, now, &mut buf);
    }
    let ids: Vec<(AssocId, SocketAddr)> = server
        .ids()
        .map(|id| (id, server.remote(id).unwrap().0))
        .collect();
    for (n, (id, remote)) in ids.into_iter().enumerate() {
        reg.connected(id, remote, key_of(n as u64));
        reg.handle_message(now, 1, id, &register_msg(&format!("c{n}"), n as u64));
    }
    reg.flush();
    fan_out(&mut reg, &mut server);
    pair::pump(&mut server, &mut client, now, &mut buf);
    (reg, server, client, buf)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("roster_fanout_10k");
    g.sample_size(10);
    let (mut reg, mut server, mut client, mut buf) = setup();
    let now = Instant::from_millis(2);
    // Each join is a new client: a fresh association, registered once, its delta sent to every subscriber
    // and delivered, and every acknowledgement brought back.
    let mut n = 0u32;
    g.bench_function("one_join_to_10k_clients_both_ends", |b| {
        b.iter(|| {
            n += 1;
            let i = CLIENTS + n;
            pair::handshake(&mut server, &mut client, i, now, &mut buf);
            let sid = server
                .ids()
                .find(|&id| server.remote(id).unwrap().0 == pair::client_addr(i))
                .unwrap();
            reg.connected(sid, pair::client_addr(i), key_of(1_000_000 + u64::from(n)));
            reg.handle_message(
                now,
                2,
                sid,
                &register_msg(&format!("j{n}"), 1_000_000 + u64::from(n)),
            );
            reg.flush();
            let sent = fan_out(&mut reg, &mut server);
            let delivered = pair::pump(&mut server, &mut client, now, &mut buf);
            assert!(delivered >= CLIENTS as usize, "{delivered}");
            black_box(sent)
        })
    });

    // The registry's share alone: one client goes offline and comes back, one delta each time, encoded once
    // and handed out to 10 000 subscribers.
    let ids: Vec<AssocId> = reg.subscribers().collect();
    let flip = ids[0];
    let remote = server.remote(flip).unwrap().0;
    g.bench_function("one_change_registry_only_delta_for_10k", |b| {
        b.iter(|| {
            reg.connection_lost(now, 3, flip, "bench");
            reg.connected(flip, remote, key_of(0));
            reg.handle_message(now, 3, flip, &register_msg("c0", 0));
            reg.flush();
            let mut copies = 0;
            while let Some(o) = reg.poll_output() {
                if let Out::Broadcast(b) = o {
                    for id in reg.subscribers() {
                        black_box((id, b.len()));
                        copies += 1;
                    }
                }
            }
            black_box(copies)
        })
    });
    g.finish();
}

/// 10 000 entries as a storm leaves them: nicknames like the harness's, one address, ports in a row, the
/// clients online since within a few seconds of each other.
fn storm_entries() -> Vec<Entry> {
    (0..CLIENTS)
        .map(|i| Entry {
            nick: Nick::new(&format!("b1a2b-{i}")).unwrap(),
            instance: 0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(u64::from(i) + 1),
            status: Status::Online,
            since_ms: 1_764_000_000_000 + u64::from(i) * 3 / 7,
            chat: SocketAddr::from(([127, 0, 0, 1], 20_000 + (i % 40_000) as u16)),
            flaps: 0,
            extra: None,
        })
        .collect()
}

fn bench_wire(c: &mut Criterion) {
    let mut g = c.benchmark_group("roster_wire");
    let entries = storm_entries();
    let pages = wire::encode_pages(&entries, 60 * 1024, |b| wire::begin_snapshot(b, 7, 0, 1));
    let page = &pages[0];
    let per_page = match ServerMsg::view(page).unwrap() {
        ServerView::Snapshot { entries, .. } => entries.remaining(),
        _ => unreachable!(),
    };
    eprintln!(
        "roster_wire: {} pages for {CLIENTS} entries, {per_page} entries and {} bytes in the first ({:.1} B per entry)",
        pages.len(),
        page.len(),
        page.len() as f64 / per_page as f64
    );
    g.throughput(Throughput::Elements(per_page as u64));
    g.bench_function("read_snapshot_page_in_place", |b| {
        b.iter(|| {
            let ServerView::Snapshot { entries, .. } = ServerMsg::view(black_box(page)).unwrap()
            else {
                unreachable!()
            };
            let mut sum = 0u64;
            for e in entries {
                let e = e.unwrap();
                sum = sum.wrapping_add(e.since_ms ^ u64::from(e.nick[e.nick.len() - 1]));
            }
            black_box(sum)
        })
    });
    g.throughput(Throughput::Elements(u64::from(CLIENTS)));
    g.bench_function("encode_snapshot_10k", |b| {
        b.iter(|| {
            let p = wire::encode_pages(black_box(&entries), 60 * 1024, |b| {
                wire::begin_snapshot(b, 7, 0, 1)
            });
            black_box(p.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench, bench_wire);
criterion_main!(benches);
