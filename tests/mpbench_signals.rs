//! `mpbench` stops the `mpd` it started when it is signalled, and exits with 128 + the signal.
//!
//! Each test runs a long `idle` scenario with its own `TMPDIR`, so the daemon's directory (which mpbench
//! makes there) is found without guessing; waits until that daemon answers `mpd status`; signals mpbench by
//! its PID; then waits, each time with a deadline, for mpbench's exit and for the daemon process to be gone.

mod common;
#[path = "common/mpd.rs"]
mod mpd;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Guard, run_with_limit, temp_dir, wait_until};
use mpd::{is_our_mpd, mpd_exe, process_gone};
use nix::sys::signal::Signal;

/// A daemon found running: SIGKILLed by PID at the end if it is still ours (a failed test leaves nothing).
struct DaemonGuard(i32);

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        if is_our_mpd(self.0) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0), Signal::SIGKILL);
        }
    }
}

/// The directory and pid of a daemon mpbench started under `tmp`, once `mpd status` says it runs.
fn running_daemon(tmp: &Path) -> Option<(PathBuf, i32)> {
    let dirs = std::fs::read_dir(tmp).ok()?;
    dirs.filter_map(|d| d.ok().map(|d| d.path()))
        .filter(|d| d.is_dir())
        .find_map(|dir| {
            let pid: i32 = std::fs::read_to_string(dir.join("multiproto.pid"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            let status = run_with_limit(
                Command::new(mpd_exe()).arg("status").arg("--dir").arg(&dir),
                Duration::from_secs(30),
                b"",
            );
            (status.status.code() == Some(0) && is_our_mpd(pid)).then_some((dir, pid))
        })
}

fn signal_stops_the_daemon(name: &str, id: u16, signal: Signal, code: i32) {
    let tmp = temp_dir(name);
    let logs = temp_dir(&format!("{name}-logs"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mpbench"));
    cmd.args(["idle", "--clients", "50", "--duration", "600", "--json"])
        .args(["--quiet", "--iface", "127.0.0.1"])
        .args(["--group", &format!("239.255.78.{id}:{}", 26000 + id)])
        .args(["--sctp-port", &(27000 + id).to_string()])
        .env("TMPDIR", &tmp)
        .env_remove("MPBENCH_KEEP");
    let mut bench = Guard::spawn("mpbench", &mut cmd, &logs);
    let mut found = None;
    assert!(
        wait_until(Duration::from_secs(60), || {
            found = running_daemon(&tmp);
            found.is_some()
        }),
        "mpbench's daemon did not come up under {}; mpbench stderr:\n{}",
        tmp.display(),
        std::fs::read_to_string(logs.join("mpbench.err")).unwrap_or_default()
    );
    let (dir, pid) = found.unwrap();
    let _daemon = DaemonGuard(pid);
    bench.signal(signal);
    let status = bench
        .wait(Duration::from_secs(60))
        .expect("mpbench did not exit within 60 s of the signal");
    let stderr = std::fs::read_to_string(logs.join("mpbench.err")).unwrap_or_default();
    assert_eq!(status.code(), Some(code), "mpbench: {status}\n{stderr}");
    assert!(
        wait_until(Duration::from_secs(30), || process_gone(pid)),
        "mpd {pid} still running after mpbench exited on {signal}\n{stderr}"
    );
    assert!(!dir.exists(), "{} left behind", dir.display());
    let _ = std::fs::remove_dir_all(&tmp);
    let _ = std::fs::remove_dir_all(&logs);
}

#[test]
fn sigterm_stops_the_daemon_and_exits_143() {
    signal_stops_the_daemon("mpbench-sigterm", 168, Signal::SIGTERM, 143);
}

#[test]
fn sigint_stops_the_daemon_and_exits_130() {
    signal_stops_the_daemon("mpbench-sigint", 169, Signal::SIGINT, 130);
}
