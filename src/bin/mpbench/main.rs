//! `mpbench`: the load harness. It starts an `mpd` of its own (or uses `--daemon HOST:PORT`), simulates N
//! clients of the roster protocol inside this process (N SCTP associations over a few UDP sockets), and
//! measures the targets of DESIGN.md scenario by scenario. See `--help`.

mod chat;
mod daemon;
mod fanout;
mod plot;
mod report;
mod scenarios;
mod signals;
mod swarm;
mod transfer;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;

use report::{Figures, Progress};
use scenarios::Params;

/// The multiproto load harness: measures joins, join storms, failure detection, daemon restarts, idle load
/// and chat latency against a real mpd, with N simulated clients in this process; and a file transfer
/// between two peers.
#[derive(FromArgs)]
#[argh(
    note = "SCENARIO: join | storm | detect | restart | idle | chat | transfer | all",
    note = "all leaves transfer out: at its default --size of 1G it writes 3 GiB to disk and takes a minute or more; run it by name.",
    note = "Without --daemon, each scenario starts its own mpd (the binary next to mpbench) in a temporary directory, on --group/--sctp-port/--iface, and stops it afterwards.",
    note = "Multicast stays on --iface (default 127.0.0.1): nothing leaves the machine unless you say so.",
    note = "Every phase has a deadline; a run always ends by itself. Results: a table, or JSON lines with --json.",
    note = "SIGINT, SIGTERM or SIGHUP stop the mpd that mpbench started, then mpbench exits with 128 + the signal (130 for Ctrl-C).",
    error_code(
        1,
        "a scenario failed: its deadline passed, or one of the harness's own checks did not hold."
    ),
    error_code(2, "invalid command line.")
)]
struct Args {
    /// join | storm | detect | restart | idle | chat | transfer | all
    #[argh(positional)]
    scenario: String,
    /// simulated clients: one number, or several separated by commas to see how figures grow (default 100)
    #[argh(option, default = "String::from(\"100\")")]
    clients: String,
    /// use the daemon at HOST:PORT (its SCTP-over-UDP address; HOST a name or an address, PORT 9899 if left
    /// out) instead of starting one; restart needs our own
    #[argh(option, from_str_fn(daemon_addr))]
    daemon: Option<SocketAddr>,
    /// print one JSON object per scenario and N, on its own line
    #[argh(switch)]
    json: bool,
    /// draw each figure against N into FILE.svg (needs two or more N)
    #[argh(option)]
    plot: Option<String>,
    /// idle: seconds to measure (default 10); chat: seconds of the throughput run (default 3; shorter also
    /// runs fewer channel rounds, in proportion)
    #[argh(option)]
    duration: Option<f64>,
    /// interface for discovery multicast (default 127.0.0.1)
    #[argh(option, default = "String::from(\"127.0.0.1\")")]
    iface: String,
    /// discovery group of the daemon mpbench starts (default 239.255.77.78:10002, apart from mpd's default)
    #[argh(option, default = "\"239.255.77.78:10002\".parse().unwrap()")]
    group: SocketAddr,
    /// SCTP-over-UDP port of the daemon mpbench starts (default 19899)
    #[argh(option, default = "19899")]
    sctp_port: u16,
    /// join: clients joining one at a time after N are online (default 200, so that p99 is not simply the
    /// slowest join)
    #[argh(option, default = "200")]
    joins: usize,
    /// detect: clients silenced, half by closing their socket and half by muting it (default 1% of N, at
    /// least 2)
    #[argh(option)]
    silence: Option<usize>,
    /// an option for the mpd that mpbench starts, one word each, repeatable: `--mpd-arg --rto-max-ms
    /// --mpd-arg 1000` (for experiments; PERF.md's figures use mpd's defaults)
    #[argh(option)]
    mpd_arg: Vec<String>,
    /// simulated clients per UDP socket (default 1024: with 4096, the clients' windows of a join storm
    /// overflowed the shared socket's receive buffer, and the losses were the harness's own)
    #[argh(option, default = "1024")]
    per_lane: usize,
    /// clients connected together while bringing N online (default 500)
    #[argh(option, default = "500")]
    batch: usize,
    /// heartbeat interval of the simulated clients in ms (default 1000, as mpc)
    #[argh(option, default = "1000")]
    heartbeat_ms: u64,
    /// seed of the simulated clients' randomness (default 1)
    #[argh(option, default = "1")]
    seed: u64,
    /// no live progress line
    #[argh(switch)]
    quiet: bool,
    /// idle only: clients register without taking the roster (REGISTER flag NO_ROSTER), so N is not
    /// bounded by the N² roster bytes a full sync sends; measures holding clients and heartbeats alone
    #[argh(switch)]
    liveness_only: bool,
    /// transfer: bytes in the file sent (a number, or with a binary unit: 256M, 1G; default 1G)
    #[argh(option, default = "1 << 30", from_str_fn(transfer_size))]
    size: u64,
    /// transfer: the directory its temporary directory goes in (default the system's temporary directory);
    /// it needs room for twice --size
    #[argh(option)]
    dir: Option<std::path::PathBuf>,
}

/// What `all` runs.
const SCENARIOS: [&str; 6] = ["join", "storm", "detect", "restart", "idle", "chat"];
/// Run by name only (see the help's note).
const BY_NAME_ONLY: [&str; 1] = ["transfer"];

/// `--size`: 1 KiB to 64 GiB.
fn transfer_size(s: &str) -> Result<u64, String> {
    let n = multiproto::cli::parse_size(s)?;
    if (1 << 10..=64 << 30).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{s:?}: give 1K to 64G"))
    }
}

/// `--daemon`.
fn daemon_addr(s: &str) -> Result<SocketAddr, String> {
    multiproto::cli::parse_host_port(s, multiproto::io::sctp_udp::DEFAULT_UDP_PORT)
}

fn main() -> ExitCode {
    // The transfer scenario's receiving process: not a scenario, and not for people (so not in --help).
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(transfer::RECEIVER) {
        return transfer::receiver_main(&argv[2..]);
    }
    // First, before any thread exists: the signal mask is inherited.
    if let Err(e) = signals::install() {
        eprintln!("mpbench: cannot watch signals: {e}");
        return ExitCode::FAILURE;
    }
    let args: Args = match multiproto::cli::parse("mpbench", "Run `mpbench --help` for usage.", 2) {
        Ok(a) => a,
        Err(code) => return ExitCode::from(code as u8),
    };
    let _ = fern::Dispatch::new()
        .format(|out, msg, rec| out.finish(format_args!("mpbench: {}: {}", rec.level(), msg)))
        .level(
            std::env::var("MULTIPROTO_LOG")
                .ok()
                .and_then(|l| l.parse().ok())
                .unwrap_or(log::LevelFilter::Warn),
        )
        .chain(std::io::stderr())
        .apply();
    let usage = |m: String| {
        eprintln!("mpbench: {m}");
        ExitCode::from(2)
    };
    let names: Vec<&str> = match args.scenario.as_str() {
        "all" => SCENARIOS.to_vec(),
        s if SCENARIOS.contains(&s) || BY_NAME_ONLY.contains(&s) => vec![s],
        s => {
            return usage(format!(
                "unknown scenario {s:?}; one of {}, {} or all",
                SCENARIOS.join(", "),
                BY_NAME_ONLY.join(", ")
            ));
        }
    };
    let ns: Result<Vec<usize>, _> = args
        .clients
        .split(',')
        .map(|v| v.trim().parse::<usize>())
        .collect();
    let ns = match ns {
        Ok(v) if !v.is_empty() && v.iter().all(|&n| (2..=200_000).contains(&n)) => v,
        _ => {
            return usage(format!(
                "--clients {:?}: give numbers from 2 to 200000, separated by commas",
                args.clients
            ));
        }
    };
    if args.per_lane == 0 || args.per_lane > 60_000 {
        return usage("--per-lane must be 1..=60000".into());
    }
    if args.liveness_only && names != ["idle"] {
        return usage(
            "--liveness-only applies to the idle scenario alone: the others measure the roster"
                .into(),
        );
    }
    let mut progress = Progress::new(args.quiet || args.json);
    let mut results: Vec<Figures> = Vec::new();
    let mut failed = false;
    'sizes: for &n in &ns {
        let params = Params {
            clients: n,
            daemon: args.daemon,
            net: daemon::Net {
                iface: Some(args.iface.clone()),
                group: args.group,
                sctp_port: args.sctp_port,
            },
            duration: Duration::from_secs_f64(args.duration.unwrap_or(10.0).clamp(0.5, 3600.0)),
            joins: args.joins.clamp(1, 10_000),
            silence: args.silence.unwrap_or((n / 100).max(2)),
            per_lane: args.per_lane,
            batch: args.batch.max(1),
            heartbeat: Duration::from_millis(args.heartbeat_ms.clamp(10, 60_000)),
            seed: args.seed,
            liveness_only: args.liveness_only,
            mpd_args: args.mpd_arg.clone(),
        };
        for name in &names {
            if signals::caught().is_some() {
                break 'sizes;
            }
            // Chat and transfer do not depend on N: once, with the first, is enough.
            if matches!(*name, "chat" | "transfer") && n != ns[0] {
                continue;
            }
            let r = match *name {
                "join" => scenarios::join(&params, &mut progress),
                "storm" => scenarios::storm(&params, &mut progress),
                "detect" => scenarios::detect(&params, &mut progress),
                "restart" => scenarios::restart(&params, &mut progress),
                "idle" => scenarios::idle(&params, &mut progress),
                "transfer" => transfer::run(
                    &transfer::Params {
                        size: args.size,
                        dir: args.dir.clone().unwrap_or_else(std::env::temp_dir),
                    },
                    &mut progress,
                ),
                _ => chat::run(
                    &chat::Params {
                        duration: Duration::from_secs_f64(
                            args.duration.unwrap_or(3.0).clamp(0.5, 600.0),
                        ),
                    },
                    &mut progress,
                ),
            };
            progress.done();
            match r {
                Ok(f) => {
                    if args.json {
                        println!("{}", f.json());
                    } else {
                        println!("{}", f.table());
                    }
                    results.push(f);
                }
                Err(e) if matches!(*name, "chat" | "transfer") => {
                    eprintln!("mpbench: {name}: {e}");
                    failed = true;
                }
                Err(e) => {
                    eprintln!("mpbench: {name} with {n} clients: {e}");
                    failed = true;
                }
            }
        }
    }
    if let Some(s) = signals::caught() {
        return ExitCode::from(signals::exit_code(s));
    }
    if let Some(path) = &args.plot
        && let Err(e) = plot::draw(path, &results)
    {
        eprintln!("mpbench: --plot {path}: {e}");
        failed = true;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
