//! A fixed amount of SCTP work, for counting instructions under callgrind (counts are repeatable where time
//! on a shared machine is not):
//!
//! ```sh
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/deps/sctp_cost-* message 0
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/deps/sctp_cost-* message 10000
//! ```
//! The difference of the two totals divided by 10 000 is the cost of one 100-byte message and its SACK, both
//! ends; `handshake N` does the same for N complete handshakes. Setup (endpoint creation, the first
//! handshake) is the same in both runs and cancels out.

use multiproto::time::Instant;

#[path = "support/pair.rs"]
mod pair;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let scenario = args.first().map(String::as_str).unwrap_or("message");
    let n: u32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut buf = vec![0u8; 2048];
    let now = Instant::from_millis(1);
    let (mut server, mut client) = pair::endpoints();
    let id = pair::handshake(&mut server, &mut client, 0, now, &mut buf);
    match scenario {
        "message" => {
            let msg = [0x5au8; 100];
            // Warm up so queues and event buffers have their steady-state capacity in both runs.
            for _ in 0..10 {
                client.send(id, 0, false, &msg).unwrap();
                pair::pump(&mut server, &mut client, now, &mut buf);
            }
            for _ in 0..n {
                client.send(id, 0, false, &msg).unwrap();
                assert_eq!(pair::pump(&mut server, &mut client, now, &mut buf), 1);
            }
        }
        "handshake" => {
            for i in 1..=n {
                pair::handshake(&mut server, &mut client, i, now, &mut buf);
            }
            assert_eq!(server.len() as u32, n + 1);
        }
        other => {
            eprintln!("unknown scenario {other}: message | handshake");
            std::process::exit(2);
        }
    }
}
