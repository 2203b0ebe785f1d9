//! A daemon and clients for integration tests: `mpd run` and `mpc ... listen --json` as real processes, each
//! test on its own multicast group, ports and directory, multicast on 127.0.0.1 only. Every wait has a
//! deadline; every process is killed by its PID when the test ends.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::common::{Guard, file_contains, run_with_limit, temp_dir, wait_until};

/// One test's private network coordinates.
#[derive(Clone, Debug)]
pub struct Net {
    /// Multicast group ADDR:PORT.
    pub group: String,
    /// The daemon's SCTP UDP port.
    pub sctp_port: u16,
    /// The daemon's directory.
    pub dir: PathBuf,
}

impl Net {
    /// Coordinates for test number `id` (unique within this test binary, 1..=200).
    pub fn new(name: &str, id: u16) -> Net {
        Net {
            group: format!("239.255.78.{id}:{}", 26000 + id),
            sctp_port: 27000 + id,
            dir: temp_dir(name),
        }
    }

    fn common_args(&self) -> Vec<String> {
        vec![
            "--group".into(),
            self.group.clone(),
            "--iface".into(),
            "127.0.0.1".into(),
        ]
    }

    /// The state directory of the user `nick` in this test: each nickname is another person, with a key
    /// and pinned daemon keys of its own (never the real user's state directory).
    pub fn state_dir(&self, nick: &str) -> std::path::PathBuf {
        self.dir.join(format!("state-{nick}"))
    }

    /// [`Net::common_args`] and the state directory of `nick`.
    pub fn client_args(&self, nick: &str) -> Vec<String> {
        let mut v = self.common_args();
        v.push("--state-dir".into());
        v.push(self.state_dir(nick).display().to_string());
        v
    }
}

/// A running `mpd run`.
pub struct Mpd {
    guard: Guard,
    pub net: Net,
}

impl Mpd {
    /// Starts the daemon in the foreground and waits until it answers `mpd status`.
    pub fn start(net: &Net, extra: &[&str]) -> Mpd {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mpd"));
        cmd.arg("run")
            .arg("--dir")
            .arg(&net.dir)
            .args(net.common_args())
            .args(["--sctp-port", &net.sctp_port.to_string()])
            .args(extra);
        let guard = Guard::spawn("mpd", &mut cmd, &net.dir);
        let m = Mpd {
            guard,
            net: net.clone(),
        };
        assert!(
            wait_until(Duration::from_secs(15), || m.status().is_some()),
            "mpd did not start: {}",
            std::fs::read_to_string(net.dir.join("mpd.err")).unwrap_or_default()
        );
        m
    }

    /// The daemon's PID.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.guard.child.as_ref().expect("mpd exited").id() as i32)
    }

    /// `mpd status --json`, or `None` if it does not report running.
    pub fn status(&self) -> Option<Value> {
        let out = Command::new(env!("CARGO_BIN_EXE_mpd"))
            .args(["status", "--json", "--dir"])
            .arg(&self.net.dir)
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, s: Signal) {
        let _ = kill(self.pid(), s);
    }

    /// Stops the daemon with SIGTERM and waits for it to exit.
    pub fn stop(self) {
        self.stop_within(Duration::from_secs(10));
    }

    /// [`Mpd::stop`], allowing `limit` (a daemon with a large roster to save, in a debug build, on a loaded
    /// machine, takes longer than the usual ten seconds).
    pub fn stop_within(mut self, limit: Duration) {
        self.signal(Signal::SIGTERM);
        let st = self.guard.wait(limit);
        assert!(
            st.is_some_and(|s| s.success()),
            "mpd did not stop cleanly: {st:?}"
        );
    }

    /// Whether the daemon's log contains `needle`.
    pub fn log_contains(&self, needle: &str) -> bool {
        file_contains(&self.net.dir.join("multiproto.log"), needle)
    }
}

/// A running `mpc ... listen --json`, with its output lines collected as they come.
pub struct Mpc {
    child: Option<Child>,
    lines: Arc<Mutex<Vec<Value>>>,
    pub nick: String,
}

impl Mpc {
    /// Registers `nick` once and leaves cleanly, so the roster knows it as offline.
    pub fn register_and_leave(net: &Net, nick: &str) {
        let mut c = Mpc::listen(net, nick, &[]);
        c.wait_registered();
        c.signal(nix::sys::signal::Signal::SIGINT);
        c.wait_exit(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{nick} did not exit"));
    }

    /// Starts `mpc --nick NICK ... [extra] listen --json`.
    pub fn listen(net: &Net, nick: &str, extra: &[&str]) -> Mpc {
        Mpc::listen_with(net, nick, extra, &[])
    }

    /// Starts `mpc --nick NICK ... [extra] listen --json [after]` (`after`: listen's own options).
    pub fn listen_with(net: &Net, nick: &str, extra: &[&str], after: &[&str]) -> Mpc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mpc"))
            .args(["--nick", nick])
            .args(net.client_args(nick))
            .args(extra)
            .args(["listen", "--json"])
            .args(after)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start mpc");
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => sink.lock().unwrap().push(v),
                    Err(e) => panic!("mpc printed a line that is not JSON ({e}): {line}"),
                }
            }
        });
        Mpc {
            child: Some(child),
            lines,
            nick: nick.into(),
        }
    }

    /// The PID.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("mpc exited").id() as i32)
    }

    /// Sends a signal.
    pub fn signal(&self, s: Signal) {
        let _ = kill(self.pid(), s);
    }

    /// Everything printed so far.
    pub fn events(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until an event matching `pred` has been printed (at any time since start); returns it and how
    /// long the wait took.
    pub fn wait_for(
        &self,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<(Value, Duration)> {
        let start = Instant::now();
        let mut found = None;
        wait_until(limit, || {
            found = self.lines.lock().unwrap().iter().find(|v| pred(v)).cloned();
            found.is_some()
        });
        found.map(|v| (v, start.elapsed()))
    }

    /// Waits for the `n`th (1-based) event matching `pred`.
    pub fn wait_for_nth(
        &self,
        n: usize,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let mut found = None;
        wait_until(limit, || {
            found = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .filter(|v| pred(v))
                .nth(n - 1)
                .cloned();
            found.is_some()
        });
        found
    }

    /// The texts of the chat messages printed so far, in order.
    pub fn messages(&self) -> Vec<String> {
        message_texts(&self.events())
    }

    /// Waits (up to `limit`, else panics) for the chat message `text`; returns the texts of the messages
    /// printed up to and including it, in order. Sending a marker after something that must not arrive (a
    /// duplicate, a message that was never confirmed) and calling this proves it did not, without sleeping:
    /// mpc prints messages in the order it reads them, so anything sent before the marker shows before it.
    pub fn messages_until(&self, limit: Duration, text: &str) -> Vec<String> {
        let is_it = |v: &Value| v["event"] == "message" && v["text"] == text;
        self.wait_for(limit, is_it)
            .unwrap_or_else(|| panic!("{} never got {text:?}: {:?}", self.nick, self.messages()));
        let events = self.events();
        let end = events.iter().position(is_it).unwrap();
        message_texts(&events[..=end])
    }

    /// Waits until registered with the daemon.
    pub fn wait_registered(&self) {
        let r = self.wait_for(Duration::from_secs(15), |v| v["event"] == "registered");
        assert!(
            r.is_some(),
            "{} never registered: {:?}",
            self.nick,
            self.events()
        );
    }

    /// Waits for the process to exit (after a signal, or by itself).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let c = self.child.as_mut()?;
        let end = Instant::now() + limit;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                self.child = None;
                return Some(st);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, as a crash.
    pub fn kill9(&mut self) {
        self.signal(Signal::SIGKILL);
        self.wait_exit(Duration::from_secs(5));
    }
}

impl Drop for Mpc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The texts of the `message` events among `events`.
fn message_texts(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|v| v["event"] == "message")
        .map(|v| v["text"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Whether `v` is event `event` about `nick`.
pub fn is(v: &Value, event: &str, nick: &str) -> bool {
    v["event"] == event && v["nick"] == nick
}

/// `mpc list --json` against `net`: the roster entries.
pub fn list(net: &Net) -> Vec<Value> {
    let out = run_with_limit(
        Command::new(env!("CARGO_BIN_EXE_mpc"))
            .args(["--nick", "lister"])
            .args(net.client_args("lister"))
            .args(["--timeout", "10", "list", "--json"]),
        Duration::from_secs(20),
        b"",
    );
    assert!(
        out.status.success(),
        "mpc list failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("mpc list --json printed no JSON");
    v["entries"].as_array().cloned().unwrap_or_default()
}

/// Runs mpc with `args` to completion, in the state directory of the `--nick` it names.
pub fn mpc(net: &Net, args: &[&str]) -> Output {
    let nick = args
        .iter()
        .position(|a| *a == "--nick")
        .and_then(|i| args.get(i + 1))
        .copied()
        .unwrap_or("anonymous");
    run_with_limit(
        Command::new(env!("CARGO_BIN_EXE_mpc"))
            .args(net.client_args(nick))
            .args(args),
        Duration::from_secs(30),
        b"",
    )
}
