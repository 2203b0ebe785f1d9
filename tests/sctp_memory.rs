//! What SCTP state costs in memory, measured with a counting allocator: an idle established association, and
//! a flood of INITs that never complete (which must cost nothing: the cookie holds the state).
//!
//! Allocations are counted per thread, so tests running in parallel do not disturb each other's figures.

use multiproto::sctp::chunk::{self, InitOut, kind};
use multiproto::sctp::wire::{Header, Tsn, Writer};
use multiproto::sctp::{Config, Endpoint};
use multiproto::time::Instant;

#[path = "../benches/support/pair.rs"]
mod pair;

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::live;

#[global_allocator]
static ALLOC: counting_alloc::Counting = counting_alloc::Counting;

#[test]
fn idle_established_association_fits_its_budget() {
    const N: u32 = 4000;
    let mut buf = vec![0u8; 2048];
    let now = Instant::from_millis(1);
    let (mut server, mut client) = pair::endpoints();
    // Warm up: the first associations size the slab, maps and pools; measure the steady state after them.
    for i in 0..64 {
        pair::handshake(&mut server, &mut client, i, now, &mut buf);
    }
    let before = live();
    let mut ids = Vec::with_capacity(N as usize);
    for i in 64..64 + N {
        ids.push((
            i,
            pair::handshake(&mut server, &mut client, i, now, &mut buf),
        ));
    }
    // One message each way, so stream tables exist and queues were used and released.
    for &(_, id) in &ids {
        client.send(id, 0, false, &[7; 100]).unwrap();
        pair::pump(&mut server, &mut client, now, &mut buf);
    }
    let after =
        live() - (ids.capacity() * std::mem::size_of::<(u32, multiproto::sctp::AssocId)>()) as i64;
    // Both endpoints hold N associations each; their costs are alike.
    let per_assoc = (after - before) as f64 / (2.0 * f64::from(N));
    let struct_and_heap = Endpoint::assoc_size() + client.heap_bytes(ids[0].1).unwrap();
    println!(
        "association struct {} B, struct + heap {} B, all-in per association (slab, indexes, timer) {per_assoc:.0} B",
        Endpoint::assoc_size(),
        struct_and_heap
    );
    assert!(
        struct_and_heap <= 256,
        "struct + heap {struct_and_heap} B > 256 B"
    );
    // Slab slot, two hash-map entries and a timer-wheel node on top; slabs and maps grow by doubling, so
    // allow for half-empty capacity.
    assert!(per_assoc <= 640.0, "{per_assoc:.0} B per association");
}

fn init(tag: u32) -> Vec<u8> {
    let mut b = vec![0u8; 64];
    let mut w = Writer::new(
        &mut b,
        Header {
            src_port: 6000,
            dst_port: 5000,
            vtag: 0,
        },
    )
    .unwrap();
    let m = chunk::begin_init(
        &mut w,
        kind::INIT,
        &InitOut {
            initiate_tag: tag,
            a_rwnd: 65536,
            out_streams: 10,
            in_streams: 10,
            initial_tsn: Tsn(tag),
        },
    )
    .unwrap();
    w.end_chunk(m).unwrap();
    let n = w.finish();
    b.truncate(n);
    b
}

#[test]
fn init_flood_leaves_memory_flat() {
    let mut ep = Endpoint::new(
        Config {
            port: 5000,
            ..Config::default()
        },
        [9; 32],
    );
    let mut buf = vec![0u8; 2048];
    let packets: Vec<Vec<u8>> = (1..=2000u32)
        .map(|i| init(i.wrapping_mul(0x9e37_79b9) | 1))
        .collect();
    let mut flood = |ep: &mut Endpoint, rounds: u32| {
        for r in 0..rounds {
            for (i, p) in packets.iter().enumerate() {
                let from = std::net::SocketAddr::from((
                    [10, 0, (i >> 8) as u8, i as u8],
                    40_000 + r as u16,
                ));
                ep.handle(
                    Instant::from_micros(u64::from(r) * 10_000 + i as u64),
                    from,
                    p,
                );
                // Replies are drained as a reactor would, a batch at a time.
                if i % 32 == 31 {
                    while ep.poll_transmit(Instant::ZERO, &mut buf).is_some() {}
                }
            }
            while ep.poll_transmit(Instant::ZERO, &mut buf).is_some() {}
        }
    };
    flood(&mut ep, 1);
    let before = live();
    flood(&mut ep, 10);
    let grew = live() - before;
    println!("20 000 more INITs: {grew} bytes retained");
    assert_eq!(ep.len(), 0);
    assert_eq!(ep.stats().inits, 22_000);
    assert!(grew <= 0, "INITs retained {grew} bytes");
}
