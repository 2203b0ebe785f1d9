//! `mpd`'s life cycle, with the real binary: start, status, stop, restart, run, and the ways they fail.
//!
//! Every test has its own directory, multicast group and ports, and passes `--iface 127.0.0.1`: nothing leaves
//! the machine. Waits poll a condition with a deadline. `MpdDir` stops (and if need be SIGKILLs, by PID) every
//! daemon a test started, even when the test fails.

mod common;
#[path = "common/mpd.rs"]
mod mpd;

use std::process::Command;
use std::time::Duration;

use common::{Guard, file_contains, wait_until};
use mpd::{MpdDir, describe, free_udp_port, mpd_exe, process_gone};
use nix::sys::signal::Signal;

const WAIT: Duration = Duration::from_secs(15);

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that the command failed with `code` and one line on stderr that contains every one of `needles`.
fn assert_one_line_error(out: &std::process::Output, code: i32, needles: &[&str]) {
    assert_eq!(out.status.code(), Some(code), "{}", describe(out));
    let err = stderr(out);
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "not one line: {}",
        describe(out)
    );
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {}", describe(out));
    }
}

/// A saved roster with alice online, saved just now (entries saved long ago are expired at load: offline
/// entries live `--offline-ttl` from when they went offline, and online ones went offline when it was saved).
fn roster_with_alice() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    format!(
        r#"{{"format":"multiproto-roster","version":1,"saved_unix_ms":{now},"roster_version":3,"entries":[{{"nick":"alice","instance":1,"chat":"127.0.0.1:5000","online":true,"since_unix_ms":{now},"flaps":0}}]}}"#
    )
}

#[test]
fn start_status_stop_from_the_current_directory() {
    let mut d = MpdDir::new("lifecycle", 1);
    let dir = d.dir.clone();
    // No --dir: the daemon's directory is the one `mpd start` runs in.
    let mut args = vec!["start".to_string()];
    args.extend(d.service_args());
    let out = d.mpd_in(&dir, &args);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let pid = d.pid().expect("no pidfile after start");
    d.track(pid);
    assert!(
        stdout(&out).starts_with(&format!("mpd started (pid {pid})")),
        "{}",
        describe(&out)
    );
    assert!(
        d.log().exists(),
        "multiproto.log is not in the directory mpd start ran in"
    );
    assert!(file_contains(&d.log(), "mpd started"), "{}", d.log_text());
    // Detached: its own session, and not holding the caller's directory.
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
        std::path::Path::new("/")
    );

    let out = d.mpd_in(&dir, &["status".to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stdout(&out).contains(&format!("mpd is running (pid {pid})")),
        "{}",
        describe(&out)
    );
    let (code, v) = d.status_json();
    assert_eq!(code, Some(0));
    assert_eq!(v["running"], true);
    assert_eq!(v["pid"], pid);
    assert_eq!(v["group"], d.group.as_str());
    assert_eq!(v["iface"], "127.0.0.1");
    assert_eq!(v["sctp_port"], d.sctp_port);
    assert_eq!(v["sctp_udp"], format!("0.0.0.0:{}", d.sctp_port));
    assert_eq!(v["dir"], dir.canonicalize().unwrap().display().to_string());
    assert_eq!(v["clients"]["online"], 0);

    // A second start fails clearly and leaves the first daemon alone.
    let out = d.start(&[]);
    assert_one_line_error(
        &out,
        1,
        &["already running", &format!("pid {pid}"), "mpd stop --dir"],
    );
    assert_eq!(d.pid(), Some(pid));
    let (code, v) = d.status_json();
    assert_eq!((code, v["pid"].as_i64()), (Some(0), Some(i64::from(pid))));

    let out = d.mpd_in(&dir, &["stop".to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(stdout(&out).trim(), format!("mpd stopped (pid {pid})"));
    assert!(!d.pidfile().exists(), "stop left the pidfile");
    assert!(
        !dir.join("multiproto.sock").exists(),
        "stop left the control socket"
    );
    assert!(process_gone(pid), "the daemon process is still there");
    assert!(
        dir.join("roster.json").exists(),
        "the roster was not saved on stop"
    );
    assert!(file_contains(&d.log(), "mpd stopped"), "{}", d.log_text());

    let out = d.mpd("stop", &[]);
    assert_one_line_error(&out, 7, &["not running", "mpd start"]);
    let out = d.mpd("status", &[]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert!(stdout(&out).contains("not running"), "{}", describe(&out));
    let (code, v) = d.status_json();
    assert_eq!(
        (code, &v["running"]),
        (Some(3), &serde_json::Value::Bool(false))
    );
}

#[test]
fn status_and_stop_of_a_directory_that_never_had_a_daemon() {
    let mut d = MpdDir::new("never", 2);
    let missing = d.dir.join("not-created");
    let m = missing.display().to_string();
    let out = d.mpd_in(
        &d.dir.clone(),
        &["status".into(), "--dir".into(), m.clone()],
    );
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let out = d.mpd_in(&d.dir.clone(), &["stop".into(), "--dir".into(), m]);
    assert_one_line_error(&out, 7, &["not running"]);
    assert!(
        !missing.exists(),
        "status/stop must not create the directory"
    );
}

#[test]
fn restart_keeps_the_saved_roster() {
    let mut d = MpdDir::new("restart", 3);
    let first = d.start_ok();
    let out = d.mpd("stop", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let saved =
        std::fs::read_to_string(d.dir.join("roster.json")).expect("no roster.json after stop");
    assert!(saved.contains("multiproto-roster"), "{saved}");

    // As if alice had been registered: restart (from stopped) loads her, offline until she registers again.
    std::fs::write(d.dir.join("roster.json"), roster_with_alice()).unwrap();
    let out = d.service("restart", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let second = d.pid().unwrap();
    assert_ne!(first, second);
    let (code, v) = d.status_json();
    assert_eq!(code, Some(0));
    assert_eq!(v["clients"]["offline"], 1, "{v}");
    assert_eq!(v["clients"]["online"], 0, "{v}");
    assert!(
        file_contains(&d.log(), "loaded 1 roster entries"),
        "{}",
        d.log_text()
    );

    // Restart while running: stop (roster saved again), start (roster loaded again).
    let out = d.service("restart", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stdout(&out).contains(&format!("mpd stopped (pid {second})")),
        "{}",
        describe(&out)
    );
    assert!(stdout(&out).contains("mpd started"), "{}", describe(&out));
    let third = d.pid().unwrap();
    assert_ne!(second, third);
    assert!(process_gone(second));
    let (code, v) = d.status_json();
    assert_eq!(
        (code, &v["clients"]["offline"]),
        (Some(0), &serde_json::json!(1)),
        "{v}"
    );
}

#[test]
fn a_truncated_roster_is_set_aside_and_the_daemon_starts() {
    let mut d = MpdDir::new("truncated", 4);
    let good = roster_with_alice();
    std::fs::write(d.dir.join("roster.json"), &good[..good.len() / 2]).unwrap();
    d.start_ok();
    let (code, v) = d.status_json();
    assert_eq!(code, Some(0));
    assert_eq!(v["clients"]["offline"], 0, "{v}");
    assert!(
        file_contains(&d.log(), "could not be read"),
        "{}",
        d.log_text()
    );
    let aside: Vec<String> = std::fs::read_dir(&d.dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("roster.json.bad-"))
        .collect();
    assert_eq!(aside.len(), 1, "the bad roster was not set aside");
}

#[test]
fn an_unwritable_dir_is_a_one_line_error() {
    let mut d = MpdDir::new("unwritable", 5);
    // A path below a regular file cannot be created, not even by root.
    let file = d.dir.join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let bad = file.join("sub").display().to_string();
    let mut args = vec!["start".to_string(), "--dir".into(), bad];
    args.extend(d.service_args());
    let out = d.mpd_in(&d.dir.clone(), &args);
    assert_one_line_error(&out, 1, &["cannot", "a-file/sub", "choose another --dir"]);
    assert!(stdout(&out).is_empty(), "{}", describe(&out));
}

#[test]
fn a_busy_port_is_a_one_line_error() {
    let mut d = MpdDir::new("busy", 6);
    // Held from the moment it is chosen, so no other test can take it in between.
    let blocker = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    d.sctp_port = blocker.local_addr().unwrap().port();
    let out = d.start(&[]);
    assert_one_line_error(&out, 1, &["already in use", "--sctp-port"]);
    drop(blocker);
    assert!(!d.pidfile().exists(), "a failed start left its pidfile");
    let out = d.mpd("status", &[]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    // The daemon's own error is in the log too.
    assert!(
        file_contains(&d.log(), "already in use"),
        "{}",
        d.log_text()
    );
}

#[test]
fn sighup_reopens_the_log() {
    let mut d = MpdDir::new("sighup", 7);
    let pid = d.start_ok();
    let rotated = d.dir.join("multiproto.log.1");
    std::fs::rename(d.log(), &rotated).unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGHUP).unwrap();
    assert!(
        wait_until(WAIT, || file_contains(&d.log(), "log reopened on SIGHUP")),
        "no new multiproto.log after SIGHUP"
    );
    assert!(file_contains(&rotated, "mpd started"));
    assert!(!file_contains(&rotated, "log reopened"));
    let (code, _) = d.status_json();
    assert_eq!(code, Some(0), "SIGHUP must not stop the daemon");
    // Each line: timestamp, level, message.
    let text = d.log_text();
    let line = text.lines().find(|l| l.contains("log reopened")).unwrap();
    let parts: Vec<&str> = line.splitn(3, ' ').collect();
    assert!(parts[0].ends_with('Z') && parts[0].len() == 24, "{line}");
    assert_eq!(parts[1], "INFO", "{line}");
}

#[test]
fn a_stale_pidfile_is_replaced() {
    let mut d = MpdDir::new("stale", 8);
    // The pid of a process that has exited: a crashed daemon's leftover.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id() as i32;
    child.wait().unwrap();
    std::fs::write(d.pidfile(), format!("{dead}\n")).unwrap();

    let out = d.mpd("status", &[]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert!(
        stdout(&out).contains(&format!("pid {dead}")),
        "{}",
        describe(&out)
    );
    let out = d.mpd("stop", &[]);
    assert_one_line_error(&out, 7, &["not running"]);

    let pid = d.start_ok();
    assert_ne!(pid, dead);
    assert!(
        file_contains(&d.log(), &format!("stale pidfile from pid {dead}")),
        "{}",
        d.log_text()
    );
    let (code, v) = d.status_json();
    assert_eq!((code, v["pid"].as_i64()), (Some(0), Some(i64::from(pid))));
}

#[test]
fn run_in_the_foreground_until_sigterm() {
    let mut d = MpdDir::new("run", 9);
    let mut cmd = Command::new(mpd_exe());
    cmd.arg("run")
        .arg("--dir")
        .arg(&d.dir)
        .args(d.service_args());
    let mut g = Guard::spawn("mpd-run", &mut cmd, &d.dir);
    let child = g.child.as_ref().unwrap().id() as i32;
    d.track(child);
    assert!(
        wait_until(WAIT, || d.pid() == Some(child)
            && d.mpd("status", &[]).status.success()),
        "mpd run never answered status; log:\n{}",
        d.log_text()
    );
    let (_, v) = d.status_json();
    assert_eq!(v["pid"], child);
    // It holds the directory like a started daemon.
    let out = d.start(&[]);
    assert_one_line_error(&out, 1, &["already running"]);
    // It logs to the file and to stderr.
    assert!(file_contains(&d.log(), "mpd started"));
    assert!(file_contains(&d.dir.join("mpd-run.err"), "mpd started"));

    g.signal(Signal::SIGTERM);
    let st = g.wait(WAIT).expect("mpd run did not exit after SIGTERM");
    assert_eq!(st.code(), Some(0));
    assert!(!d.pidfile().exists());
    let out = d.mpd("status", &[]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
}

#[test]
fn stop_of_a_daemon_started_from_run_works_too() {
    let mut d = MpdDir::new("runstop", 10);
    let mut cmd = Command::new(mpd_exe());
    cmd.arg("run")
        .arg("--dir")
        .arg(&d.dir)
        .args(d.service_args());
    let mut g = Guard::spawn("mpd-run", &mut cmd, &d.dir);
    let child = g.child.as_ref().unwrap().id() as i32;
    d.track(child);
    assert!(
        wait_until(WAIT, || d.mpd("status", &[]).status.success()),
        "mpd run never answered status; log:\n{}",
        d.log_text()
    );
    let out = d.mpd("stop", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let st = g.wait(WAIT).expect("mpd run did not exit after mpd stop");
    assert_eq!(st.code(), Some(0));
}

#[test]
fn usage_errors_and_help() {
    let mut d = MpdDir::new("help", 11);
    for (args, needles) in [
        (
            vec!["status", "--help"],
            vec!["0 running", "3 not running", "4 unknown", "--json"],
        ),
        (
            vec!["stop", "--help"],
            vec!["7 no daemon was running", "1 it could not"],
        ),
        (
            vec!["start", "--help"],
            vec![
                "--dir",
                "--group",
                "--iface",
                "--sctp-port",
                "--bind",
                "--heartbeat-ms",
                "--max-retransmits",
                "--rto-min-ms",
                "--rto-max-ms",
                "--offline-ttl",
                "--max-clients",
                "--log-level",
                "1 it could not start",
            ],
        ),
        (
            vec!["restart", "--help"],
            vec!["--sctp-port", "--offline-ttl"],
        ),
        (vec!["run", "--help"], vec!["--sctp-port", "SIGTERM"]),
    ] {
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        let out = d.mpd_in(&d.dir.clone(), &args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", describe(&out));
        for n in needles {
            assert!(
                stdout(&out).contains(n),
                "{args:?} help lacks {n:?}: {}",
                describe(&out)
            );
        }
    }
    let port = free_udp_port().to_string();
    for bad in [
        vec!["start", "--offline-ttl", "soon"],
        vec!["start", "--group", "10.1.2.3:10001", "--iface", "127.0.0.1"],
        vec![
            "start",
            "--rto-min-ms",
            "900",
            "--iface",
            "127.0.0.1",
            "--sctp-port",
            &port,
        ],
        vec!["frobnicate"],
        vec![],
    ] {
        let args: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
        let out = d.mpd_in(&d.dir.clone(), &args);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", describe(&out));
        assert!(!stderr(&out).is_empty());
    }
    assert!(
        !d.pidfile().exists(),
        "a usage error must not touch the directory"
    );
}

#[test]
fn a_crashed_daemon_is_detected_and_replaced() {
    let mut d = MpdDir::new("crash", 12);
    let crashed = d.start_ok();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(crashed), Signal::SIGKILL).unwrap();
    assert!(
        wait_until(WAIT, || process_gone(crashed)),
        "SIGKILL did not end the daemon"
    );
    // Its pidfile and control socket are left behind, but nobody holds the lock any more.
    assert_eq!(d.pid(), Some(crashed));
    let out = d.mpd("status", &[]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert!(
        stdout(&out).contains(&format!("pid {crashed}")),
        "{}",
        describe(&out)
    );
    let out = d.mpd("stop", &[]);
    assert_one_line_error(&out, 7, &["not running"]);

    let pid = d.start_ok();
    assert_ne!(pid, crashed);
    assert!(
        file_contains(&d.log(), &format!("stale pidfile from pid {crashed}")),
        "{}",
        d.log_text()
    );
    let (code, v) = d.status_json();
    assert_eq!((code, v["pid"].as_i64()), (Some(0), Some(i64::from(pid))));
}

#[test]
fn a_locked_pidfile_without_a_daemon_answering_is_status_unknown() {
    let mut d = MpdDir::new("unknown", 13);
    // Something that holds the pidfile lock but serves no control socket: a stuck daemon, as far as
    // `status` can tell. The pid written is a `sleep` this test owns, so nothing else could get a signal.
    let mut sleeper = Guard::spawn("sleep", Command::new("sleep").arg("60"), &d.dir.clone());
    let sleeper_pid = sleeper.child.as_ref().unwrap().id();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(d.pidfile())
        .unwrap();
    // SAFETY: `flock` is a plain C struct of integers; all-zero is a valid value.
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = libc::F_WRLCK as libc::c_short;
    l.l_whence = libc::SEEK_SET as libc::c_short;
    nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_OFD_SETLK(&l)).unwrap();
    std::fs::write(d.pidfile(), format!("{sleeper_pid}\n")).unwrap();

    let out = d.mpd("status", &[]);
    assert_one_line_error(&out, 4, &["does not answer", &format!("pid {sleeper_pid}")]);
    let out = d.start(&[]);
    assert_one_line_error(&out, 1, &["already running", &format!("pid {sleeper_pid}")]);

    drop(f);
    std::fs::remove_file(d.pidfile()).unwrap();
    sleeper.signal(Signal::SIGKILL);
    sleeper.wait(WAIT);
}
