//! Timer wheel throughput with 100 000 live timers: the load one SCTP endpoint carries with one timer per
//! association. Every operation below runs against a wheel that already holds that many, spread over 60 s like
//! heartbeats, so the numbers include the overflow list and a well-filled level 0.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use multiproto::time::Instant;
use multiproto::wheel::{TimerId, TimerWheel};

const LIVE: usize = 100_000;
/// Operations per measured batch: enough to amortise the timer read, few enough to keep the wheel near LIVE.
const BATCH: usize = 10_000;

/// Deterministic spread of deadlines (µs) so runs compare: xorshift64*.
fn deadlines(n: usize, seed: u64, span_us: u64) -> Vec<Instant> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            Instant::from_micros(s.wrapping_mul(0x2545_F491_4F6C_DD1D) % span_us)
        })
        .collect()
}

fn loaded_wheel() -> (TimerWheel<u64>, Vec<TimerId>) {
    let mut wheel = TimerWheel::with_capacity(LIVE + BATCH);
    let ids = deadlines(LIVE, 1, 60_000_000)
        .into_iter()
        .enumerate()
        .map(|(i, d)| wheel.arm(d, i as u64))
        .collect();
    (wheel, ids)
}

fn bench_wheel(c: &mut Criterion) {
    let mut group = c.benchmark_group("wheel_100k_live");
    group.sample_size(20);
    group.throughput(Throughput::Elements(BATCH as u64));
    // Half within the 4 s level-0 span (RTO-like), half far out (heartbeat-like, through the overflow).
    let near = deadlines(BATCH / 2, 2, 4_000_000);
    let far = deadlines(BATCH / 2, 3, 60_000_000);
    let fresh: Vec<Instant> = near.into_iter().chain(far).collect();

    group.bench_function("arm", |b| {
        b.iter_batched_ref(
            loaded_wheel,
            |(wheel, _)| {
                for (i, &d) in fresh.iter().enumerate() {
                    black_box(wheel.arm(d, i as u64));
                }
            },
            BatchSize::LargeInput,
        )
    });

    group.bench_function("cancel", |b| {
        b.iter_batched_ref(
            loaded_wheel,
            |(wheel, ids)| {
                // Every tenth id: scattered over slots and the overflow, not the most recent arms.
                for id in ids.iter().step_by(LIVE / BATCH) {
                    black_box(wheel.cancel(*id));
                }
            },
            BatchSize::LargeInput,
        )
    });

    group.bench_function("reschedule", |b| {
        b.iter_batched_ref(
            loaded_wheel,
            |(wheel, ids)| {
                for (id, &d) in ids.iter().step_by(LIVE / BATCH).zip(&fresh) {
                    black_box(wheel.reschedule(*id, d));
                }
            },
            BatchSize::LargeInput,
        )
    });

    group.bench_function("next_deadline", |b| {
        let (wheel, _) = loaded_wheel();
        b.iter(|| {
            for _ in 0..BATCH {
                black_box(black_box(&wheel).next_deadline());
            }
        })
    });
    group.finish();

    // Expiry: drain all 100 000 in 1 ms steps over the whole 60 s, as the reactor would, including the
    // empty-slot skipping and every overflow walk on the way.
    let mut group = c.benchmark_group("wheel_100k_live");
    group.sample_size(10);
    group.throughput(Throughput::Elements(LIVE as u64));
    group.bench_function("expire_all_1ms_steps", |b| {
        b.iter_batched_ref(
            loaded_wheel,
            |(wheel, _)| {
                let mut now = Instant::ZERO;
                while !wheel.is_empty() {
                    now = Instant::from_micros(now.as_micros() + 1_000);
                    while let Some(fired) = wheel.poll_expired(now) {
                        black_box(fired);
                    }
                }
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_wheel);
criterion_main!(benches);
