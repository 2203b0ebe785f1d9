//! The `mpd` under test: started by mpbench in a temporary directory with the `mpd` binary beside mpbench's
//! own, asked for its status over the control socket, restarted and stopped with its own command line; and
//! what `/proc` says of its CPU time and memory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

/// Where the daemon runs and how the swarm reaches it.
#[derive(Clone, Debug)]
pub struct Net {
    /// `--iface` for discovery.
    pub iface: Option<String>,
    /// Discovery group.
    pub group: SocketAddr,
    /// The daemon's SCTP-over-UDP port.
    pub sctp_port: u16,
}

/// The per-host limits mpbench's own daemon runs without, each with its value (0 = none): every simulated
/// client comes from this one host, which those limits (made against one host crowding out the others)
/// would refuse, rate-limit and evict.
const NO_PER_HOST_LIMITS: [(&str, &str); 3] = [
    ("--max-clients-per-host", "0"),
    ("--max-offline-per-host", "0"),
    ("--welcome-rate", "0"),
];

/// `extra` (the user's `--mpd-arg`s) preceded by the per-host limits turned off, except those `extra` sets
/// itself (mpd refuses an option given twice).
pub fn daemon_args(extra: &[String]) -> Vec<String> {
    let mut args = Vec::new();
    for (flag, value) in NO_PER_HOST_LIMITS {
        if !extra
            .iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
        {
            args.extend([flag.to_string(), value.to_string()]);
        }
    }
    args.extend(extra.iter().cloned());
    args
}

/// Every daemon directory given to `mpd start` and not yet stopped, with the `mpd` binary: what
/// [`stop_started`] stops when the signal watcher cannot wait for the main thread to do it.
static STARTED: Mutex<Vec<(PathBuf, PathBuf)>> = Mutex::new(Vec::new());

/// Runs `mpd stop` for every daemon started and not yet stopped (the signal watcher's last resort).
pub fn stop_started() {
    let started = std::mem::take(&mut *STARTED.lock().unwrap_or_else(|e| e.into_inner()));
    for (mpd, dir) in started {
        if let Err(e) = mpd_command(&mpd, &dir, "stop", &[]) {
            eprintln!("mpbench: {e}");
        }
    }
}

/// An `mpd` this process started; stopped and its directory removed on drop.
pub struct OwnDaemon {
    mpd: PathBuf,
    dir: PathBuf,
    args: Vec<String>,
    /// `mpd start` succeeded: dropping stops it.
    started: bool,
}

/// CPU time and memory of a process, from `/proc/PID/stat` and `/proc/PID/status`.
#[derive(Copy, Clone, Debug, Default)]
pub struct ProcStats {
    /// User + system CPU time.
    pub cpu: Duration,
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// Peak resident set size, KiB.
    pub hwm_kib: u64,
}

/// Reads [`ProcStats`] of `pid`.
pub fn proc_stats(pid: i32) -> Result<ProcStats, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // Fields after the command name (which may contain spaces), which ends at the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or("/proc stat without ')'")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the state field.
    let ticks: u64 = f
        .get(11..13)
        .ok_or("short /proc stat")?
        .iter()
        .map(|v| v.parse::<u64>().unwrap_or(0))
        .sum();
    // SAFETY: sysconf only reads a constant of the C library.
    let hz = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        t if t > 0 => t as u64,
        _ => 100,
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Ok(ProcStats {
        cpu: Duration::from_micros(ticks * 1_000_000 / hz.max(1)),
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
    })
}

/// The kernel's count of UDP datagrams dropped for a full receive buffer (`RcvbufErrors` in
/// `/proc/net/snmp`), machine-wide; `None` where the file cannot be read.
pub fn udp_rcvbuf_errors() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    let at = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

impl OwnDaemon {
    /// Starts `mpd start` in a new temporary directory with `net` and `extra` options.
    pub fn start(net: &Net, extra: &[String]) -> Result<OwnDaemon, String> {
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find mpbench's path: {e}"))?;
        let mpd = exe.with_file_name("mpd");
        if !mpd.exists() {
            return Err(format!(
                "{} not found: build it (`cargo build --release --bin mpd`) or pass --daemon HOST:PORT",
                mpd.display()
            ));
        }
        let dir = std::env::temp_dir().join(format!(
            "mpbench-{}-{:x}",
            std::process::id(),
            getrandom::u32().unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut args = vec![
            "--group".to_string(),
            net.group.to_string(),
            "--sctp-port".into(),
            net.sctp_port.to_string(),
        ];
        if let Some(i) = &net.iface {
            args.extend(["--iface".to_string(), i.clone()]);
        }
        args.extend(daemon_args(extra));
        let mut d = OwnDaemon {
            mpd,
            dir,
            args,
            started: false,
        };
        // Known before it runs: a signal during `mpd start` must find it.
        STARTED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((d.mpd.clone(), d.dir.clone()));
        d.started = true;
        if let Err(e) = mpd_command(&d.mpd, &d.dir, "start", &d.args) {
            // A start that failed left no daemon, unless a signal cut it short (Ctrl-C reaches `mpd start`
            // too): then stop whatever it got to start.
            if crate::signals::caught().is_some() {
                let _ = mpd_command(&d.mpd, &d.dir, "stop", &[]);
            }
            d.forget();
            d.started = false;
            return Err(e);
        }
        Ok(d)
    }

    /// Takes this daemon off the list [`stop_started`] stops.
    fn forget(&self) {
        STARTED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(_, dir)| dir != &self.dir);
    }

    /// The daemon's `status --json` object, over its control socket.
    pub fn status(&self) -> Result<Value, String> {
        status_of(&self.dir)
    }

    /// The daemon's pid.
    pub fn pid(&self) -> Result<i32, String> {
        self.status()?["pid"]
            .as_i64()
            .map(|p| p as i32)
            .ok_or_else(|| "status without pid".into())
    }

    /// Its directory (log, saved roster).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The status of the daemon whose directory is `dir`.
pub fn status_of(dir: &Path) -> Result<Value, String> {
    multiproto::daemon::query_status(dir, Duration::from_secs(5))
        .map_err(|e| format!("status: {e}"))?
        .ok_or_else(|| "mpd does not answer on its control socket".into())
}

/// Runs `mpd VERB --dir DIR ARGS…` and returns its stdout, or its exit status and stderr.
fn mpd_command(mpd: &Path, dir: &Path, verb: &str, args: &[String]) -> Result<String, String> {
    let out = Command::new(mpd)
        .arg(verb)
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", mpd.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "mpd {verb} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Drop for OwnDaemon {
    fn drop(&mut self) {
        if self.started {
            if let Err(e) = mpd_command(&self.mpd, &self.dir, "stop", &[]) {
                eprintln!("mpbench: {e}");
            }
            self.forget();
        }
        if std::env::var_os("MPBENCH_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("mpbench: daemon directory kept: {}", self.dir.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_drop_counter_is_read() {
        assert!(udp_rcvbuf_errors().is_some());
    }

    #[test]
    fn own_process_stats_are_read() {
        let s = proc_stats(std::process::id() as i32).unwrap();
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib);
    }

    #[test]
    fn the_daemon_runs_without_per_host_limits_unless_told_otherwise() {
        let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            daemon_args(&[]),
            strs(&[
                "--max-clients-per-host",
                "0",
                "--max-offline-per-host",
                "0",
                "--welcome-rate",
                "0"
            ])
        );
        let own = strs(&["--welcome-rate", "5", "--heartbeat-ms", "500"]);
        assert_eq!(
            daemon_args(&own),
            strs(&[
                "--max-clients-per-host",
                "0",
                "--max-offline-per-host",
                "0",
                "--welcome-rate",
                "5",
                "--heartbeat-ms",
                "500"
            ])
        );
    }
}
