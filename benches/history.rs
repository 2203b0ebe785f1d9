//! The message history at scale (issue 15): a history of 1 000 000 messages (the default bound), then
//! - `search` of one or two words, 1 000 queries: p50 / p99 (target p99 ≤ 50 ms);
//! - `history NAME 20` (the last messages of one conversation): p50 / p99;
//! - one append (one transaction, as the console and `listen` make it) onto the full history, with criterion.
//!
//! ```sh
//! cargo bench --bench history                                   # 1 000 000 messages
//! MP_HISTORY_MESSAGES=100000 cargo bench --bench history        # fewer
//! ```
//! The history is built in a temporary directory, in batches of 10 000 per transaction, from a fixed
//! pseudo-random stream: 50 conversations, 8 to 24 words a message from a vocabulary of 5 000 (word `wN` is
//! about N times rarer than `w1`, as words in text are), so a search for a common word and for a rare one
//! both occur.

use std::time::{Duration, Instant};

use criterion::Criterion;
use multiproto::io::history::{History, Limits, Record, path};

/// Words in the vocabulary.
const VOCABULARY: u64 = 5_000;
/// Conversations.
const CONVERSATIONS: u64 = 50;

/// A small fixed PRNG (xorshift64*), so every run builds the same history.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A word, its rank drawn so that rank r is about r times rarer than rank 1 (Zipf-like).
    fn word(&mut self) -> String {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        let rank = (VOCABULARY as f64).powf(u) as u64;
        format!("w{}", rank.clamp(1, VOCABULARY))
    }

    fn record(&mut self, at_ms: u64) -> Record {
        let with = format!("peer{}", self.next() % CONVERSATIONS);
        let outgoing = self.next().is_multiple_of(2);
        let words = 8 + self.next() % 17;
        let text: Vec<String> = (0..words).map(|_| self.word()).collect();
        Record {
            at_ms,
            sender: if outgoing { "me".into() } else { with.clone() },
            conversation: with,
            outgoing,
            verified: true,
            text: text.join(" "),
        }
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn timed(mut f: impl FnMut(usize), rounds: usize) -> (f64, f64) {
    let mut ms: Vec<f64> = (0..rounds)
        .map(|i| {
            let t = Instant::now();
            f(i);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    (percentile(&mut ms, 0.5), percentile(&mut ms, 0.99))
}

fn main() {
    // An environment variable, not an argument: criterion reads the arguments.
    let messages: u64 = std::env::var("MP_HISTORY_MESSAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("mp-history-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let file = path(&dir, "me");
    let mut h = History::open(&file, Limits::default()).expect("a new history");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let t0 = Instant::now();
    let start_ms = 1_790_000_000_000u64;
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..messages {
        batch.push(rng.record(start_ms + i * 1_000));
        if batch.len() == 10_000 || i + 1 == messages {
            h.append_all(&batch).expect("a batch");
            batch.clear();
        }
    }
    let built = t0.elapsed();
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(file.with_extension("sqlite3-wal"))
            .map(|m| m.len())
            .unwrap_or(0);

    let mut q = Rng(7);
    let queries: Vec<String> = (0..1_000)
        .map(|i| {
            if i % 2 == 0 {
                q.word()
            } else {
                format!("{} {}", q.word(), q.word())
            }
        })
        .collect();
    let mut found = 0usize;
    let (search_p50, search_p99) = timed(
        |i| found += h.search(&queries[i], 20).expect("a search").len(),
        queries.len(),
    );
    let (recent_p50, recent_p99) = timed(
        |i| {
            let with = format!("peer{}", i as u64 % CONVERSATIONS);
            assert_eq!(h.recent(Some(&with), 20).expect("recent").len(), 20);
        },
        1_000,
    );

    println!(
        "history of {messages} messages: built in {:.1} s, {:.0} MB on disk",
        built.as_secs_f64(),
        size as f64 / 1e6
    );
    println!(
        "search, 1 000 queries of one or two words ({found} results): p50 {search_p50:.2} ms, p99 {search_p99:.2} ms"
    );
    println!("history NAME 20: p50 {recent_p50:.3} ms, p99 {recent_p99:.3} ms");

    // One append, one transaction, onto the full history.
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(5));
    let mut at = start_ms + messages * 1_000;
    c.bench_function("history append (one transaction, full history)", |b| {
        b.iter(|| {
            at += 1_000;
            h.append(&rng.record(at)).expect("an append");
        })
    });
    println!(
        "{}",
        serde_json::json!({"bench": "history", "messages": messages, "build_s": built.as_secs_f64(),
            "bytes": size, "search_p50_ms": search_p50, "search_p99_ms": search_p99,
            "recent_p50_ms": recent_p50, "recent_p99_ms": recent_p99})
    );
    drop(h);
    let _ = std::fs::remove_dir_all(&dir);
}
