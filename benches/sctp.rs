//! SCTP engine micro-benchmarks: the wire codec per packet, one 100-byte message and its SACK through both
//! ends of an association, and one complete handshake (INIT to COOKIE ACK, both ends).
//!
//! `cargo bench --bench sctp`. Instruction counts for the same paths (repeatable, unlike time on this shared
//! machine) come from `benches/sctp_cost.rs` under callgrind; see PERF.md.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use multiproto::sctp::chunk::{self, Chunk, ChunkIter, DataOut, data_flags};
use multiproto::sctp::wire::{HEADER_LEN, Header, Packet, Tsn, Writer};
use multiproto::time::Instant;

#[path = "support/pair.rs"]
mod pair;

const HDR: Header = Header {
    src_port: 5000,
    dst_port: 6000,
    vtag: 0x1234_5678,
};

fn data_packet(buf: &mut [u8], payload: &[u8]) -> usize {
    let mut w = Writer::new(buf, HDR).unwrap();
    chunk::write_data(
        &mut w,
        &DataOut {
            flags: data_flags::BEGIN | data_flags::END,
            tsn: Tsn(42),
            stream: 0,
            ssn: 7,
            ppid: 0,
            payload,
        },
    )
    .unwrap();
    w.finish()
}

fn bench_codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    let payload = [0xabu8; 100];
    let mut buf = [0u8; 1500];
    g.bench_function("write_data_100B", |b| {
        b.iter(|| black_box(data_packet(&mut buf, black_box(&payload))))
    });

    let n = data_packet(&mut buf, &payload);
    let pkt = buf[..n].to_vec();
    g.bench_function("parse_data_100B", |b| {
        b.iter(|| {
            let p = Packet::new_checked(black_box(&pkt)).unwrap();
            assert!(p.verify_checksum());
            let mut len = 0;
            for ch in ChunkIter::new(p.chunk_bytes()) {
                if let Ok(Chunk::Data(d)) = ch {
                    len += d.payload.len();
                }
            }
            black_box(len)
        })
    });

    let mut sbuf = [0u8; 256];
    let n = {
        let mut w = Writer::new(&mut sbuf, HDR).unwrap();
        chunk::write_sack(
            &mut w,
            Tsn(1000),
            65536,
            &[(2, 5), (8, 9), (12, 20), (30, 31)],
            &[Tsn(990)],
        )
        .unwrap();
        w.finish()
    };
    let sack = sbuf[..n].to_vec();
    g.bench_function("parse_sack_4_gaps", |b| {
        b.iter(|| {
            let p = Packet::new_checked(black_box(&sack)).unwrap();
            assert!(p.verify_checksum());
            let mut sum = 0u32;
            for ch in ChunkIter::new(p.chunk_bytes()) {
                if let Ok(Chunk::Sack(s)) = ch {
                    sum += s
                        .gap_blocks()
                        .map(|(a, b)| u32::from(a) + u32::from(b))
                        .sum::<u32>();
                }
            }
            black_box(sum)
        })
    });
    let _ = HEADER_LEN;
    g.finish();
}

fn bench_assoc(c: &mut Criterion) {
    let mut g = c.benchmark_group("assoc");
    g.throughput(Throughput::Elements(1));
    let mut buf = vec![0u8; 2048];
    let now = Instant::from_millis(1);

    let (mut server, mut client) = pair::endpoints();
    let id = pair::handshake(&mut server, &mut client, 0, now, &mut buf);
    let msg = [0x5au8; 100];
    g.bench_function("message_100B_and_sack_both_ends", |b| {
        b.iter(|| {
            client.send(id, 0, false, black_box(&msg)).unwrap();
            let n = pair::pump(&mut server, &mut client, now, &mut buf);
            assert_eq!(n, 1);
        })
    });

    g.bench_function("handshake_both_ends", |b| {
        b.iter_batched_ref(
            pair::endpoints,
            |(server, client)| black_box(pair::handshake(server, client, 1, now, &mut buf)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_codec, bench_assoc);
criterion_main!(benches);
