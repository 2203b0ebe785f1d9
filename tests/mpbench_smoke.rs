//! A smoke run of every `mpbench` scenario with a small N: the harness starts its own `mpd`, drives 50
//! simulated clients, and must finish with exit 0 and one JSON line whose invariant counters are clean. The
//! harness fails (exit 1) by itself when an invariant breaks: a join seen twice or not by everyone, a
//! detection that missed a silenced client or hit another, rosters that disagree after a restart. No timing
//! is asserted here: timings live in PERF.md.

mod common;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

/// Runs `mpbench SCENARIO --clients 50 ...` on test `id`'s own group and port; returns its JSON object.
fn run(scenario: &str, id: u16, extra: &[&str]) -> Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mpbench"));
    cmd.args([
        scenario,
        "--clients",
        "50",
        "--json",
        "--quiet",
        "--iface",
        "127.0.0.1",
    ])
    .args(["--group", &format!("239.255.78.{id}:{}", 26000 + id)])
    .args(["--sctp-port", &(27000 + id).to_string()])
    .args(extra);
    let out = common::run_with_limit(&mut cmd, Duration::from_secs(120), b"");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "mpbench {scenario} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), 1, "one line per scenario: {stdout}");
    let v = lines.into_iter().next().unwrap();
    assert_eq!(v["scenario"], scenario);
    v
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing or not a number in {v}"))
}

#[test]
fn join_every_client_sees_every_join_once() {
    let v = run("join", 160, &["--joins", "5"]);
    assert_eq!(num(&v, "clients"), 50.0);
    assert_eq!(num(&v, "joins"), 5.0);
    assert_eq!(num(&v, "seen_twice"), 0.0);
    for k in [
        "p50_ms",
        "p99_ms",
        "max_ms",
        "snapshot_ms",
        "raw_fanout_p50_ms",
        "raw_fanout_p99_ms",
    ] {
        assert!(num(&v, k) > 0.0, "{k} in {v}");
    }
    assert!(num(&v, "p50_ms") <= num(&v, "p99_ms") && num(&v, "p99_ms") <= num(&v, "max_ms"));
    assert!(num(&v, "raw_fanout_p50_ms") <= num(&v, "raw_fanout_p99_ms"));
}

#[test]
fn storm_completes_every_roster() {
    let v = run("storm", 161, &[]);
    assert_eq!(num(&v, "clients"), 50.0);
    assert!(num(&v, "complete_ms") > 0.0);
    assert!(num(&v, "peak_rss_kib") > 0.0);
    // The same run's raw floor, and the storm's time as a multiple of it.
    assert!(num(&v, "raw_floor_ms") > 0.0, "{v}");
    assert!(num(&v, "complete_vs_raw") > 0.0, "{v}");
    // Every client learned every client: at least N² entries arrived.
    assert!(num(&v, "roster_entries_received") >= 2500.0, "{v}");
}

#[test]
fn detect_finds_exactly_the_silenced_clients() {
    let v = run("detect", 162, &["--silence", "4"]);
    assert_eq!(num(&v, "silenced"), 4.0);
    assert_eq!(num(&v, "unexpected_offline"), 0.0);
    for k in ["p50_ms", "closed_socket_max_ms", "muted_socket_max_ms"] {
        assert!(num(&v, k) > 0.0, "{k} in {v}");
    }
}

#[test]
fn restart_every_client_registers_again_and_rosters_agree() {
    let v = run("restart", 163, &[]);
    assert!(num(&v, "reregister_ms") > 0.0);
    assert!(
        num(&v, "rosters_agree_ms") >= num(&v, "reregister_ms"),
        "{v}"
    );
    // Each of the 50 reconnected at least once.
    assert!(num(&v, "reconnects") >= 50.0, "{v}");
}

#[test]
fn idle_reports_daemon_load() {
    let v = run("idle", 164, &["--duration", "1"]);
    assert!(num(&v, "daemon_rss_kib") > 0.0);
    assert!(num(&v, "heartbeats_per_s") > 0.0);
    assert!(num(&v, "cpu_percent") >= 0.0);
}

#[test]
fn idle_liveness_only_holds_every_client_without_rosters() {
    // The scenario itself fails (exit 1) unless every client is still registered at the end.
    let v = run("idle", 166, &["--duration", "1", "--liveness-only"]);
    assert_eq!(num(&v, "clients"), 50.0);
    assert!(num(&v, "heartbeats_per_s") > 0.0);
    assert!(num(&v, "bytes_per_client") >= 0.0);
}

#[test]
fn bad_arguments_are_refused_with_exit_2() {
    for args in [
        &["nosuch"][..],
        &["join", "--clients", "1"],
        &["join", "--clients", "x,5"],
        &["join", "--bogus"],
        &["join", "--liveness-only"],
        &["transfer", "--size", "1"],
        &["transfer", "--size", "lots"],
    ] {
        let out = common::run_with_limit(
            Command::new(env!("CARGO_BIN_EXE_mpbench")).args(args),
            Duration::from_secs(10),
            b"",
        );
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn chat_reports_latency_beside_the_raw_baseline() {
    let v = run("chat", 165, &["--duration", "0.5"]);
    for k in [
        "reused_p50_us",
        "reused_p99_us",
        "fresh_p50_us",
        "raw_tcp_rtt_p50_us",
        "msgs_per_s",
    ] {
        assert!(num(&v, k) > 0.0, "{k} in {v}");
    }
    assert!(num(&v, "reused_p50_us") <= num(&v, "reused_p99_us"));
    // The channel case (issue 15): a message to 100 members beside 100 one-to-one messages.
    assert_eq!(num(&v, "channel_members"), 100.0);
    for k in [
        "channel_last_p50_us",
        "channel_last_p99_us",
        "direct_seq_last_p50_us",
        "ratio_channel_to_direct_seq",
    ] {
        assert!(num(&v, k) > 0.0, "{k} in {v}");
    }
}

#[test]
fn all_scenarios_at_two_sizes_and_a_plot() {
    let id = 167u16;
    let dir = std::env::temp_dir().join(format!("mpbench-plot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("growth.svg");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mpbench"));
    cmd.args([
        "all",
        "--clients",
        "20,30",
        "--duration",
        "0.5",
        "--json",
        "--quiet",
    ])
    .args(["--iface", "127.0.0.1"])
    .args(["--group", &format!("239.255.78.{id}:{}", 26000 + id)])
    .args(["--sctp-port", &(27000 + id).to_string()])
    .arg("--plot")
    .arg(&svg);
    let out = common::run_with_limit(&mut cmd, Duration::from_secs(180), b"");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Every N-dependent scenario at both sizes, chat once.
    for s in ["join", "storm", "detect", "restart", "idle"] {
        let ns: Vec<f64> = lines
            .iter()
            .filter(|v| v["scenario"] == s)
            .map(|v| num(v, "clients"))
            .collect();
        assert_eq!(ns, [20.0, 30.0], "{s}: {stdout}");
    }
    assert_eq!(lines.iter().filter(|v| v["scenario"] == "chat").count(), 1);
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert!(
        drawn.starts_with("<svg") && drawn.contains("p99_ms"),
        "{drawn:.200}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn transfer_delivers_an_identical_file_beside_a_raw_copy() {
    // No daemon: the receiver is a second mpbench process on loopback. The scenario fails by itself (exit
    // 1) unless the file it received, read back from disk, hashes to the source's hash.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mpbench"));
    cmd.args(["transfer", "--size", "8M", "--json", "--quiet"]);
    let out = common::run_with_limit(&mut cmd, Duration::from_secs(120), b"");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mpbench transfer failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(v["scenario"], "transfer");
    assert_eq!(num(&v, "size_mib"), 8.0);
    assert_eq!(v["received_matches"], true, "{v}");
    for k in [
        "transfer_mib_per_s",
        "raw_tcp_mib_per_s",
        "ratio_transfer_to_raw",
        "transfer_ms",
        "raw_tcp_ms",
        "receiver_hwm_after_kib",
    ] {
        assert!(num(&v, k) > 0.0, "{k} in {v}");
    }
    for k in [
        "receiver_growth_mib",
        "chat_p50_ms",
        "chat_p99_ms",
        "chat_max_ms",
        "chat_msgs",
    ] {
        assert!(num(&v, k) >= 0.0, "{k} in {v}");
    }
    assert!(num(&v, "chat_p50_ms") <= num(&v, "chat_p99_ms"));
    assert!(num(&v, "chat_p99_ms") <= num(&v, "chat_max_ms"));
}
