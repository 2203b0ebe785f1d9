//! Helpers for tests that run the real `mpd` binary: a directory, multicast group and ports of their own per
//! test, `--iface 127.0.0.1` always, commands run with time limits, and a guard that stops every daemon the
//! test started (and kills it, by PID, if it will not stop).
//!
//! Include it next to `mod common;` with `#[path = "common/mpd.rs"] mod mpd;` (it uses `crate::common`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::{run_with_limit, temp_dir};

/// Limit for one `mpd` command (`start` waits up to 10 s for the daemon, `stop` up to 10 s for its exit).
pub const COMMAND_LIMIT: Duration = Duration::from_secs(30);

/// The `mpd` binary cargo built for these tests.
pub fn mpd_exe() -> &'static str {
    env!("CARGO_BIN_EXE_mpd")
}

/// A UDP port that was free on 0.0.0.0 a moment ago (bound with port 0, read back, released), and never
/// handed out before in this test process (tests run in parallel: two must not pick the same one).
pub fn free_udp_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("cannot bind a UDP socket");
        let port = s.local_addr().unwrap().port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// stdout and stderr of a finished command, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Whether process `pid` is gone (or a zombie not reaped yet).
pub fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
        Err(_) => true,
    }
}

/// Whether `pid` is a live process running our `mpd` binary (so a reused pid is never killed).
pub fn is_our_mpd(pid: i32) -> bool {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let ours = Path::new(mpd_exe()).canonicalize().ok();
    !process_gone(pid) && exe.is_some() && exe == ours
}

/// One daemon directory with its own group and ports. Dropping it stops the daemon (`mpd stop`), then
/// SIGKILLs by PID any daemon this test saw that is still alive.
pub struct MpdDir {
    /// The `--dir`.
    pub dir: PathBuf,
    /// The `--group ADDR:PORT`.
    pub group: String,
    /// The `--sctp-port`.
    pub sctp_port: u16,
    pids: Vec<i32>,
}

impl MpdDir {
    /// A fresh directory named after the test; group `239.255.77.<100 + n>` on a free port; a free SCTP port.
    pub fn new(name: &str, n: u8) -> MpdDir {
        MpdDir {
            dir: temp_dir(&format!("mpd-{name}")),
            group: format!("239.255.77.{}:{}", 100u16 + u16::from(n), free_udp_port()),
            sctp_port: free_udp_port(),
            pids: Vec::new(),
        }
    }

    /// `--group G --iface 127.0.0.1 --sctp-port P`.
    pub fn service_args(&self) -> Vec<String> {
        vec![
            "--group".into(),
            self.group.clone(),
            "--iface".into(),
            "127.0.0.1".into(),
            "--sctp-port".into(),
            self.sctp_port.to_string(),
        ]
    }

    /// Runs `mpd ARGS` as given, in `cwd`, with a time limit.
    pub fn mpd_in(&mut self, cwd: &Path, args: &[String]) -> Output {
        let out = run_with_limit(
            Command::new(mpd_exe()).args(args).current_dir(cwd),
            COMMAND_LIMIT,
            b"",
        );
        self.track_pidfile();
        out
    }

    /// Runs `mpd CMD --dir DIR EXTRA…`.
    pub fn mpd(&mut self, cmd: &str, extra: &[&str]) -> Output {
        let mut args = vec![
            cmd.to_string(),
            "--dir".into(),
            self.dir.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let dir = self.dir.clone();
        self.mpd_in(&dir, &args)
    }

    /// `mpd start --dir DIR --group … --iface 127.0.0.1 --sctp-port … EXTRA…`.
    pub fn start(&mut self, extra: &[&str]) -> Output {
        self.service("start", extra)
    }

    /// `mpd CMD --dir DIR` with the service options (for start and restart).
    pub fn service(&mut self, cmd: &str, extra: &[&str]) -> Output {
        let mut args: Vec<String> = self.service_args();
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.mpd(cmd, &args)
    }

    /// Starts the daemon and panics (with its output) unless that succeeded; returns its pid.
    pub fn start_ok(&mut self) -> i32 {
        let out = self.start(&[]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "mpd start failed: {}",
            describe(&out)
        );
        self.pid()
            .expect("mpd start succeeded but wrote no pidfile")
    }

    /// `mpd status --json`: its exit code and the object it printed.
    pub fn status_json(&mut self) -> (Option<i32>, serde_json::Value) {
        let out = self.mpd("status", &["--json"]);
        let v = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("status --json printed no JSON ({e}): {}", describe(&out)));
        (out.status.code(), v)
    }

    /// The pid in the pidfile.
    pub fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.pidfile())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// `DIR/multiproto.pid`.
    pub fn pidfile(&self) -> PathBuf {
        self.dir.join("multiproto.pid")
    }

    /// `DIR/multiproto.log`.
    pub fn log(&self) -> PathBuf {
        self.dir.join("multiproto.log")
    }

    /// The log's contents (empty if missing).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// Remembers `pid` to kill at the end if it is still our daemon then.
    pub fn track(&mut self, pid: i32) {
        if !self.pids.contains(&pid) {
            self.pids.push(pid);
        }
    }

    fn track_pidfile(&mut self) {
        if let Some(p) = self.pid()
            && is_our_mpd(p)
        {
            self.track(p);
        }
    }
}

impl Drop for MpdDir {
    fn drop(&mut self) {
        self.track_pidfile();
        let _ = run_with_limit(
            Command::new(mpd_exe())
                .args(["stop", "--dir"])
                .arg(&self.dir),
            COMMAND_LIMIT,
            b"",
        );
        for &pid in &self.pids {
            if is_our_mpd(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
