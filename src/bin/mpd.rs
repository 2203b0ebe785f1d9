//! `mpd`, the multiproto daemon: process management around [`multiproto::daemon::run`].
//!
//! ```text
//! mpd start   [--dir DIR] [service options]   daemonize; returns once the daemon listens (or with its error)
//! mpd stop    [--dir DIR]                     SIGTERM, wait for the graceful stop
//! mpd restart [--dir DIR] [service options]   stop if running, then start
//! mpd status  [--dir DIR] [--json]            0 running, 3 not running, 4 cannot tell (LSB)
//! mpd run     [--dir DIR] [service options]   foreground (systemd, containers); logs also to stderr
//! ```
//!
//! `DIR` (default: the current directory) holds `multiproto.pid`, `multiproto.log`, the control socket
//! `multiproto.sock` and the saved roster `roster.json`.
//!
//! **The pidfile lock.** The running daemon holds an exclusive open-file-description lock (`F_OFD_SETLK`, Linux)
//! on `DIR/multiproto.pid` for its whole life; the kernel drops it when the daemon exits, however it exits. So
//! "is a daemon running here?" is "is the lock held?", never "is the pid in the file alive?" (pids are reused),
//! and a pidfile whose lock nobody holds is the stale leftover of a crash: `start` takes it over. `status` and
//! `stop` ask with `F_OFD_GETLK`, which tests for a conflicting lock without taking it, so a probe can never make
//! a concurrent `start` fail. `start` takes the lock *before* it forks: the open file description (and with it
//! the lock) is shared by the forked daemon, so the directory is never unlocked between the check and the
//! daemon.
//!
//! **Start-up handshake.** `start` forks, the child calls `setsid` and forks again; the grandchild is the
//! daemon. It writes its pid, points stdin/stdout/stderr at `/dev/null`, closes every other inherited
//! descriptor, logs to `DIR/multiproto.log` and runs the service, whose ready callback writes `ok …` or
//! `error MESSAGE` into a pipe the original process waits on (10 s at most). So `mpd start` returns only once
//! the daemon listens, and fails with the daemon's own one-line error. Nothing creates a thread before the
//! forks.
//!
//! **Logs.** fern, one line per event that matters, `2026-11-25T05:12:03.123Z INFO  join: alice at …` (UTC).
//! SIGHUP reopens the log file (for logrotate). The level is `--log-level`, else `$MULTIPROTO_LOG`, else
//! `info`.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use argh::FromArgs;
use log::LevelFilter;
use multiproto::daemon::{self, Options, Ready};
use multiproto::logging::{self, LogFile};
use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::{AccessFlags, ForkResult, Pid};

/// The pidfile's name in `--dir`.
const PIDFILE: &str = "multiproto.pid";
/// The log file's name in `--dir`.
const LOGFILE: &str = "multiproto.log";
/// How long `start` waits for the daemon to report that it listens.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `stop` waits for the daemon to exit (its graceful stop takes at most ~2 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `status` waits for the control socket to answer.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a reader waits for a locked pidfile to get its pid (the daemon writes it right after forking).
const PID_WAIT: Duration = Duration::from_secs(2);

/// Exit codes (documented in `--help`, shared with LSB init-script conventions where they overlap).
mod exit {
    /// Success; for `status`: the daemon is running.
    pub const OK: i32 = 0;
    /// An error; the one-line message on stderr says what to do.
    pub const ERROR: i32 = 1;
    /// Invalid command line.
    pub const USAGE: i32 = 2;
    /// `status`: not running (LSB "program is not running").
    pub const NOT_RUNNING: i32 = 3;
    /// `status`: cannot tell (LSB "program or service status is unknown").
    pub const UNKNOWN: i32 = 4;
    /// `stop`: there was no daemon to stop (LSB "program is not running", as an action's exit code).
    pub const STOP_NOT_RUNNING: i32 = 7;
}

// ---------------------------------------------------------------------------------------------------------
// Command line

/// The multiproto daemon: discovery, SCTP liveness and the roster for LAN chat clients (mpc).
#[derive(FromArgs)]
#[argh(
    note = "DIR (--dir, default: the current directory) holds multiproto.pid, multiproto.log, the control socket multiproto.sock and the saved roster roster.json.",
    note = "Tests and examples must pass --iface 127.0.0.1 so that no traffic leaves the machine.",
    note = "Run `{command_name} COMMAND --help` for each command's options and exit codes.",
    error_code(1, "an error; a one-line message on stderr says what to do."),
    error_code(2, "invalid command line."),
    error_code(3, "status: mpd is not running."),
    error_code(4, "status: mpd holds the pidfile but does not answer (cannot tell)."),
    error_code(7, "stop: mpd was not running.")
)]
struct Cli {
    #[argh(subcommand)]
    cmd: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Start(StartArgs),
    Stop(StopArgs),
    Restart(RestartArgs),
    Status(StatusArgs),
    Run(RunArgs),
}

/// Declares a subcommand with the service options (start, restart and run share them: argh cannot flatten).
macro_rules! service_command {
    ($(#[$attr:meta])* $name:ident) => {
        #[derive(FromArgs)]
        $(#[$attr])*
        struct $name {
            /// directory for the pidfile, log, control socket and saved roster (default: the current
            /// directory; created if missing)
            #[argh(option, default = "PathBuf::from(\".\")")]
            dir: PathBuf,
            /// discovery multicast group and port (default 239.255.77.77:10001)
            #[argh(option)]
            group: Option<SocketAddr>,
            /// interface for discovery multicast, by address or name (default: the one the routing table
            /// picks; tests pass 127.0.0.1)
            #[argh(option)]
            iface: Option<String>,
            /// UDP port the SCTP encapsulation (RFC 6951) listens on, also the SCTP port (default 9899)
            #[argh(option)]
            sctp_port: Option<u16>,
            /// address the SCTP socket binds to (default 0.0.0.0: every address)
            #[argh(option)]
            bind: Option<IpAddr>,
            /// SCTP heartbeat interval per client, in ms (default 1000)
            #[argh(option)]
            heartbeat_ms: Option<u64>,
            /// SCTP retransmissions allowed: a silent client is offline after this many + 1 unanswered
            /// heartbeats (default 3)
            #[argh(option)]
            max_retransmits: Option<u8>,
            /// lower bound of the SCTP retransmission timeout, in ms (default 100)
            #[argh(option)]
            rto_min_ms: Option<u64>,
            /// upper bound of the SCTP retransmission timeout, in ms (default 400)
            #[argh(option)]
            rto_max_ms: Option<u64>,
            /// how long offline clients stay in the roster: 24h, 90m, 30s, 500ms, 1h30m or plain seconds
            /// (default 24h)
            #[argh(option, from_str_fn(parse_duration))]
            offline_ttl: Option<Duration>,
            /// roster entries held at most (default 200000)
            #[argh(option)]
            max_clients: Option<usize>,
            /// log level: off, error, warn, info, debug or trace (default: $MULTIPROTO_LOG, else info)
            #[argh(option, from_str_fn(parse_level))]
            log_level: Option<LevelFilter>,
        }

        impl $name {
            fn service(&self) -> ServiceArgs {
                ServiceArgs {
                    dir: self.dir.clone(),
                    group: self.group,
                    iface: self.iface.clone(),
                    sctp_port: self.sctp_port,
                    bind: self.bind,
                    heartbeat_ms: self.heartbeat_ms,
                    max_retransmits: self.max_retransmits,
                    rto_min_ms: self.rto_min_ms,
                    rto_max_ms: self.rto_max_ms,
                    offline_ttl: self.offline_ttl,
                    max_clients: self.max_clients,
                    log_level: self.log_level,
                }
            }
        }
    };
}

service_command! {
    /// start the daemon in the background; returns once it listens, or fails with its error
    #[argh(
        subcommand,
        name = "start",
        example = "{command_name} --dir /var/lib/multiproto --iface eth0",
        example = "{command_name} --dir /tmp/mp --iface 127.0.0.1 --sctp-port 9900 --group 239.255.77.78:10002",
        note = "Forks into the background (double fork, setsid) and logs to DIR/multiproto.log. Prints one line when the daemon listens: its pid, SCTP address, discovery group and interface.",
        note = "Fails if an mpd already runs in DIR (stop it first: mpd stop --dir DIR), if DIR cannot be written, or if a port is busy. A pidfile left by a crashed mpd is replaced.",
        note = "SIGHUP makes the daemon reopen its log file (logrotate). SIGTERM or `mpd stop` stops it gracefully.",
        error_code(0, "the daemon is running and listening."),
        error_code(1, "it could not start; a one-line message on stderr says why and what to do."),
        error_code(2, "invalid command line.")
    )]
    StartArgs
}

service_command! {
    /// stop the daemon if it runs, then start it with the given options
    #[argh(
        subcommand,
        name = "restart",
        note = "Takes the same options as start. Clients re-register by themselves; the saved roster is kept.",
        error_code(0, "the daemon was (stopped if needed and) started."),
        error_code(1, "it could not be stopped or started; a one-line message on stderr says why."),
        error_code(2, "invalid command line.")
    )]
    RestartArgs
}

service_command! {
    /// run the daemon in the foreground (systemd, containers); logs to DIR/multiproto.log and stderr
    #[argh(
        subcommand,
        name = "run",
        note = "Holds DIR/multiproto.pid like a started daemon, so `mpd status` and `mpd stop` work against it. Stops gracefully on SIGTERM or SIGINT; SIGHUP reopens the log file.",
        error_code(0, "stopped gracefully on SIGTERM or SIGINT."),
        error_code(1, "it could not start or failed; the error is logged (stderr and the log file)."),
        error_code(2, "invalid command line.")
    )]
    RunArgs
}

/// stop the daemon: SIGTERM, then wait until it has shut every association down and exited
#[derive(FromArgs)]
#[argh(
    subcommand,
    name = "stop",
    note = "Every client's association is shut down, so clients learn at once; the roster is saved and the pidfile removed.",
    error_code(0, "the daemon was running and has stopped."),
    error_code(
        1,
        "it could not be stopped (no permission, or it did not exit in time); the message says what to do."
    ),
    error_code(2, "invalid command line."),
    error_code(7, "no daemon was running in DIR (LSB: program is not running).")
)]
struct StopArgs {
    /// the daemon's directory (default: the current directory)
    #[argh(option, default = "PathBuf::from(\".\")")]
    dir: PathBuf,
    /// how long to wait for the daemon to exit, in seconds or with a unit (default 10s)
    #[argh(option, from_str_fn(parse_duration))]
    timeout: Option<Duration>,
}

/// show whether the daemon runs and what it does (exit 0 running, 3 not running, 4 unknown)
#[derive(FromArgs)]
#[argh(
    subcommand,
    name = "status",
    note = "Shows pid, uptime, discovery group and interface, SCTP address and port, clients online and offline, flapping clients, drop counters and stalls, as reported by the control socket DIR/multiproto.sock.",
    note = "With --json: the daemon's status as one JSON object on one line; when it is not running, {{\"running\":false,\"dir\":...}}.",
    error_code(0, "running."),
    error_code(2, "invalid command line."),
    error_code(
        3,
        "not running (also when only a stale pidfile of a crashed mpd is left)."
    ),
    error_code(
        4,
        "unknown: the pidfile is locked but the daemon does not answer on its control socket (starting, stuck or stopping; see DIR/multiproto.log)."
    )
)]
struct StatusArgs {
    /// the daemon's directory (default: the current directory)
    #[argh(option, default = "PathBuf::from(\".\")")]
    dir: PathBuf,
    /// print the daemon's status as one JSON object on one line
    #[argh(switch)]
    json: bool,
}

/// The service options of start, restart and run.
struct ServiceArgs {
    dir: PathBuf,
    group: Option<SocketAddr>,
    iface: Option<String>,
    sctp_port: Option<u16>,
    bind: Option<IpAddr>,
    heartbeat_ms: Option<u64>,
    max_retransmits: Option<u8>,
    rto_min_ms: Option<u64>,
    rto_max_ms: Option<u64>,
    offline_ttl: Option<Duration>,
    max_clients: Option<usize>,
    log_level: Option<LevelFilter>,
}

impl ServiceArgs {
    /// The daemon's options for `dir` (already canonical), or a usage error.
    fn options(&self, dir: PathBuf) -> Result<Options, String> {
        let mut o = Options::new(dir);
        if let Some(g) = self.group {
            if !g.ip().is_multicast() {
                return Err(format!(
                    "--group {g} is not a multicast address; use one like 239.255.77.77:10001"
                ));
            }
            if g.port() == 0 {
                return Err(format!(
                    "--group {g} needs a port; use one like 239.255.77.77:10001"
                ));
            }
            o.group = g;
        }
        o.iface = self.iface.clone();
        if let Some(p) = self.sctp_port {
            if p == 0 {
                return Err("--sctp-port must be between 1 and 65535".into());
            }
            o.sctp_port = p;
        }
        if let Some(b) = self.bind {
            o.bind = b;
        }
        if let Some(ms) = self.heartbeat_ms {
            if ms == 0 {
                return Err("--heartbeat-ms must be at least 1".into());
            }
            o.heartbeat = Duration::from_millis(ms);
        }
        if let Some(n) = self.max_retransmits {
            o.max_retransmits = n;
        }
        if let Some(ms) = self.rto_min_ms {
            o.rto_min = Duration::from_millis(ms);
        }
        if let Some(ms) = self.rto_max_ms {
            o.rto_max = Duration::from_millis(ms);
        }
        if o.rto_min.is_zero() {
            return Err("--rto-min-ms must be at least 1".into());
        }
        if o.rto_min > o.rto_max {
            return Err(format!(
                "--rto-min-ms ({} ms) is above --rto-max-ms ({} ms); make the minimum the smaller one",
                o.rto_min.as_millis(),
                o.rto_max.as_millis()
            ));
        }
        if let Some(t) = self.offline_ttl {
            o.offline_ttl = t;
        }
        if let Some(n) = self.max_clients {
            if n == 0 {
                return Err("--max-clients must be at least 1".into());
            }
            o.max_clients = n;
        }
        Ok(o)
    }
}

/// Parses `24h`, `90m`, `30s`, `500ms`, `2d`, combinations like `1h30m`, or plain seconds (`3600`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let hint =
        || format!("{s:?} is not a duration; use e.g. 24h, 90m, 30s, 500ms or plain seconds");
    let t = s.trim();
    if t.is_empty() {
        return Err(hint());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(1000))
            .map(Duration::from_millis)
            .ok_or_else(|| format!("{s:?} is too long a duration"));
    }
    let mut total: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let letters = rest[digits..]
            .bytes()
            .take_while(u8::is_ascii_alphabetic)
            .count();
        if digits == 0 || letters == 0 {
            return Err(hint());
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{s:?} is too long a duration"))?;
        let unit_ms: u64 = match &rest[digits..digits + letters] {
            "ms" => 1,
            "s" => 1000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(hint()),
        };
        total = n
            .checked_mul(unit_ms)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("{s:?} is too long a duration"))?;
        rest = &rest[digits + letters..];
    }
    Ok(Duration::from_millis(total))
}

/// Parses a log level name (any case).
fn parse_level(s: &str) -> Result<LevelFilter, String> {
    logging::parse_level(s).map_err(|e| e.to_string())
}

/// Like `argh::from_env`, but a usage error exits with 2 (LSB: invalid arguments), not 1.
fn parse_command_line() -> Result<Cli, i32> {
    multiproto::cli::parse(
        "mpd",
        "Run `mpd --help` (or `mpd COMMAND --help`) for usage.",
        exit::USAGE,
    )
}

fn main() {
    let code = match parse_command_line() {
        Ok(cli) => match cli.cmd {
            Command::Start(a) => cmd_start(&a.service()),
            Command::Stop(a) => cmd_stop(&a.dir, a.timeout.unwrap_or(STOP_TIMEOUT), false),
            Command::Restart(a) => cmd_restart(&a.service()),
            Command::Status(a) => cmd_status(&a.dir, a.json),
            Command::Run(a) => cmd_run(&a.service()),
        },
        Err(code) => code,
    };
    let _ = io::stdout().flush();
    std::process::exit(code);
}

/// Prints `mpd: MESSAGE` on stderr and returns `code`.
fn fail(code: i32, msg: impl std::fmt::Display) -> i32 {
    eprintln!("mpd: {msg}");
    code
}

/// An OS error's description without Rust's "(os error N)" suffix, starting lowercase.
fn reason(e: &io::Error) -> String {
    let s = match e.raw_os_error() {
        Some(n) => Errno::from_raw(n).desc().to_string(),
        None => e.to_string(),
    };
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => s,
    }
}

// ---------------------------------------------------------------------------------------------------------
// The directory and the pidfile

/// Creates `dir` if needed, checks that it is writable and returns its canonical path.
fn prepare_dir(dir: &Path) -> Result<PathBuf, String> {
    fs::create_dir_all(dir).map_err(|e| {
        format!(
            "cannot create {}: {}; choose another --dir",
            dir.display(),
            reason(&e)
        )
    })?;
    let canon = dir.canonicalize().map_err(|e| {
        format!(
            "cannot use {}: {}; choose another --dir",
            dir.display(),
            reason(&e)
        )
    })?;
    if !canon.is_dir() {
        return Err(format!(
            "{} is not a directory; choose another --dir",
            dir.display()
        ));
    }
    nix::unistd::access(&canon, AccessFlags::W_OK | AccessFlags::X_OK).map_err(|e| {
        format!(
            "cannot write to {}: {}; choose another --dir or fix its permissions",
            canon.display(),
            reason(&io::Error::from(e))
        )
    })?;
    Ok(canon)
}

/// The canonical form of `dir` if it exists (for `status` and `stop`, which never create it).
fn existing_dir(dir: &Path) -> PathBuf {
    dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf())
}

fn ofd_lock(kind: libc::c_int) -> libc::flock {
    // SAFETY: `flock` is a plain C struct of integers, for which all-zero is a valid value.
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = kind as libc::c_short;
    l.l_whence = libc::SEEK_SET as libc::c_short;
    l
}

/// Takes the exclusive lock on `file`: `Ok(false)` if someone else holds it.
fn try_lock(file: &File) -> io::Result<bool> {
    let l = ofd_lock(libc::F_WRLCK);
    match nix::fcntl::fcntl(file.as_fd(), nix::fcntl::FcntlArg::F_OFD_SETLK(&l)) {
        Ok(_) => Ok(true),
        Err(Errno::EAGAIN | Errno::EACCES) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Whether another open file description holds a lock on `file` (tested without taking it).
fn lock_held(file: &File) -> io::Result<bool> {
    let mut l = ofd_lock(libc::F_WRLCK);
    nix::fcntl::fcntl(file.as_fd(), nix::fcntl::FcntlArg::F_OFD_GETLK(&mut l))?;
    Ok(l.l_type != libc::F_UNLCK as libc::c_short)
}

/// The pid written in a pidfile, if it holds one.
fn read_pid(file: &File) -> Option<i32> {
    let mut buf = [0u8; 32];
    let n = file.read_at(&mut buf, 0).ok()?;
    std::str::from_utf8(&buf[..n])
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|&p: &i32| p > 0)
}

/// The locked pidfile of the daemon in this process.
struct PidLock {
    file: File,
    path: PathBuf,
}

enum LockError {
    /// A daemon runs in the directory (with this pid, once it has written it).
    Running(Option<i32>),
    /// The pidfile cannot be opened or locked.
    Io(io::Error),
}

impl PidLock {
    /// Takes `dir/multiproto.pid`, truncated. Also returns the pid a crashed daemon left in it, if any.
    fn acquire(dir: &Path) -> Result<(PidLock, Option<i32>), LockError> {
        let path = dir.join(PIDFILE);
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(&path)
                .map_err(LockError::Io)?;
            if !try_lock(&file).map_err(LockError::Io)? {
                let mut pid = read_pid(&file);
                let end = Instant::now() + PID_WAIT;
                while pid.is_none() && Instant::now() < end && lock_held(&file).unwrap_or(false) {
                    std::thread::sleep(Duration::from_millis(10));
                    pid = read_pid(&file);
                }
                return Err(LockError::Running(pid));
            }
            // A stopping daemon removes the pidfile while it still holds the lock: if it did so between our
            // open and our lock, we locked a file no longer in the directory. Start over with the new one.
            let ours = file.metadata().map_err(LockError::Io)?;
            match fs::metadata(&path) {
                Ok(m) if m.ino() == ours.ino() && m.dev() == ours.dev() => {}
                _ => continue,
            }
            let stale = read_pid(&file);
            file.set_len(0).map_err(LockError::Io)?;
            return Ok((PidLock { file, path }, stale));
        }
    }

    /// Writes this process's pid into the pidfile.
    fn write_pid(&self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file
            .write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0)?;
        self.file.sync_all()
    }

    /// Removes the pidfile (the lock goes when the process exits).
    fn remove(&self) {
        if let Err(e) = fs::remove_file(&self.path) {
            log::warn!("cannot remove {}: {e}", self.path.display());
        }
    }
}

/// Whether a daemon runs in `dir`, as far as its pidfile tells.
enum Probe {
    /// Nobody holds the lock; `stale` is the pid a crashed daemon left in the pidfile.
    NotRunning { stale: Option<i32> },
    /// The lock is held, by the process `pid` (None: no pid written yet, or not readable); `file` is our own
    /// open of the pidfile, to watch the lock with.
    Running { pid: Option<i32>, file: File },
}

fn probe(dir: &Path) -> io::Result<Probe> {
    let file = match File::open(dir.join(PIDFILE)) {
        Ok(f) => f,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(Probe::NotRunning { stale: None });
        }
        Err(e) => return Err(e),
    };
    if !lock_held(&file)? {
        return Ok(Probe::NotRunning {
            stale: read_pid(&file),
        });
    }
    // The daemon writes its pid right after it forks; give it that moment.
    let end = Instant::now() + PID_WAIT;
    let mut pid = read_pid(&file);
    while pid.is_none() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
        if !lock_held(&file)? {
            return Ok(Probe::NotRunning { stale: None });
        }
        pid = read_pid(&file);
    }
    Ok(Probe::Running { pid, file })
}

fn stale_note(stale: Option<i32>) -> String {
    match stale {
        Some(p) => format!(
            "; its pidfile names pid {p}, a daemon that did not stop cleanly (the next start replaces it)"
        ),
        None => String::new(),
    }
}

fn already_running(dir: &Path, pid: Option<i32>) -> String {
    let who = pid.map_or_else(String::new, |p| format!(" (pid {p})"));
    format!(
        "already running in {}{who}; stop it first with `mpd stop --dir {}`, or choose another --dir",
        dir.display(),
        dir.display()
    )
}

/// Opens `dir/multiproto.log`; the error says what to do.
fn open_log(dir: &Path) -> Result<LogFile, String> {
    let path = dir.join(LOGFILE);
    LogFile::open(&path).map_err(|e| {
        format!(
            "cannot write the log file {}: {}; choose another --dir or fix its permissions",
            path.display(),
            reason(&e)
        )
    })
}

/// Whether process `pid` is gone (no longer exists, or is a zombie waiting to be reaped).
fn process_gone(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses (which may itself contain ") ").
        Ok(s) => s
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
        Err(_) => nix::sys::signal::kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH),
    }
}

// ---------------------------------------------------------------------------------------------------------
// The service

/// Blocks the signals the service loop handles, so that one arriving before the loop watches them waits as
/// pending instead of killing the process.
fn block_service_signals() {
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    let _ = set.thread_block();
}

/// Runs the service until it stops; removes the pidfile and control socket afterwards. Returns the exit code.
fn serve(
    opts: Options,
    lock: &PidLock,
    log: &LogFile,
    ready: &mut dyn FnMut(Result<&Ready, String>),
) -> i32 {
    let dir = opts.dir.clone();
    let mut hup = || log.reopen();
    let mut started = false;
    let mut on_ready = |r: Result<&Ready, String>| {
        match &r {
            Ok(_) => started = true,
            Err(msg) => log::error!("mpd cannot start: {msg}"),
        }
        ready(r);
    };
    let result = daemon::run(opts, &mut on_ready, &mut hup);
    // We hold the directory's lock, so the control socket file is ours (or a crashed predecessor's).
    let _ = fs::remove_file(daemon::control_path(&dir));
    lock.remove();
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            if started {
                log::error!("mpd failed: {e}");
            }
            exit::ERROR
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Commands

/// What `start` and `run` settle before the daemon itself: the log level, the options, the directory and
/// its pid lock.
struct Service {
    level: LevelFilter,
    dir: PathBuf,
    opts: Options,
    lock: PidLock,
    /// The pid a stale pidfile named, if one was replaced.
    stale: Option<i32>,
}

/// Checks the command line (usage errors before the directory is touched), prepares the directory and takes
/// its lock; on failure, the exit code after the message is printed.
fn acquire_service(args: &ServiceArgs) -> Result<Service, i32> {
    let level = logging::level(args.log_level).map_err(|e| fail(exit::USAGE, e))?;
    args.options(PathBuf::new())
        .map_err(|e| fail(exit::USAGE, e))?;
    let dir = prepare_dir(&args.dir).map_err(|e| fail(exit::ERROR, e))?;
    let opts = args
        .options(dir.clone())
        .map_err(|e| fail(exit::USAGE, e))?;
    let (lock, stale) = match PidLock::acquire(&dir) {
        Ok(x) => x,
        Err(LockError::Running(pid)) => return Err(fail(exit::ERROR, already_running(&dir, pid))),
        Err(LockError::Io(e)) => {
            return Err(fail(
                exit::ERROR,
                format!(
                    "cannot write to {}: {}; choose another --dir or fix its permissions",
                    dir.join(PIDFILE).display(),
                    reason(&e)
                ),
            ));
        }
    };
    Ok(Service {
        level,
        dir,
        opts,
        lock,
        stale,
    })
}

fn cmd_start(args: &ServiceArgs) -> i32 {
    let Service {
        level,
        dir,
        opts,
        lock,
        stale,
    } = match acquire_service(args) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let log = match open_log(&dir) {
        Ok(l) => l,
        Err(e) => {
            lock.remove();
            return fail(exit::ERROR, e);
        }
    };
    let (rx, tx) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            lock.remove();
            return fail(exit::ERROR, format!("cannot create a pipe: {e}"));
        }
    };
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    // SAFETY: this process has a single thread (nothing before this point starts one), so the child may run
    // any code.
    match unsafe { nix::unistd::fork() } {
        Err(e) => {
            lock.remove();
            fail(exit::ERROR, format!("cannot fork: {e}"))
        }
        Ok(ForkResult::Parent { child }) => {
            drop(tx);
            // The lock lives on in the daemon, which shares its open file description: closing ours keeps it.
            drop(lock);
            drop(log);
            // The first child exits as soon as it has forked the daemon.
            let _ = nix::sys::wait::waitpid(child, None);
            await_ready(rx, &dir)
        }
        Ok(ForkResult::Child) => {
            drop(rx);
            let mut tx = File::from(tx);
            if let Err(e) = nix::unistd::setsid() {
                let _ = writeln!(tx, "error cannot start a new session: {e}");
                // SAFETY: ends this forked child at once, without running the parent's exit handlers.
                unsafe { libc::_exit(1) };
            }
            // SAFETY: still single-threaded.
            match unsafe { nix::unistd::fork() } {
                Ok(ForkResult::Child) => daemon_main(opts, level, lock, stale, log, tx),
                Ok(ForkResult::Parent { .. }) => {
                    // SAFETY: as above; the daemon carries on alone, reparented away from the caller's session.
                    unsafe { libc::_exit(0) }
                }
                Err(e) => {
                    let _ = writeln!(tx, "error cannot fork: {e}");
                    // SAFETY: as above.
                    unsafe { libc::_exit(1) }
                }
            }
        }
    }
}

/// Waits for the daemon's `ok …` or `error …` line; prints the outcome.
fn await_ready(rx: OwnedFd, dir: &Path) -> i32 {
    let (tx_line, rx_line) = std::sync::mpsc::channel();
    // The daemon is detached by now, so this (parent) process may use a thread for the deadline.
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = File::from(rx).take(64 * 1024).read_to_string(&mut s);
        let _ = tx_line.send(s);
    });
    let log_path = dir.join(LOGFILE);
    let line = match rx_line.recv_timeout(READY_TIMEOUT) {
        Ok(s) => s,
        Err(_) => {
            return fail(
                exit::ERROR,
                format!(
                    "mpd did not report that it listens within {} s; see {}, and check with `mpd status --dir {}`",
                    READY_TIMEOUT.as_secs(),
                    log_path.display(),
                    dir.display()
                ),
            );
        }
    };
    let line = line.lines().next().unwrap_or("");
    if let Some(rest) = line.strip_prefix("ok\t") {
        let f: Vec<&str> = rest.splitn(4, '\t').collect();
        if let [pid, sctp, group, iface] = f[..] {
            println!(
                "mpd started (pid {pid}): SCTP on udp {sctp}, discovery {group} on interface {iface}, log {}",
                log_path.display()
            );
            return exit::OK;
        }
    }
    if let Some(msg) = line.strip_prefix("error ") {
        return fail(exit::ERROR, msg);
    }
    fail(
        exit::ERROR,
        format!(
            "mpd exited before it was listening; see {}",
            log_path.display()
        ),
    )
}

/// Closes every descriptor above 2 except `keep` (a daemon must not hold its caller's pipes or files).
fn close_fds_except(keep: &[RawFd]) {
    let Ok(rd) = fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = rd
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds {
        if fd > 2 && !keep.contains(&fd) {
            // SAFETY: these descriptors were inherited from our caller and are owned by nothing in this
            // process (the ones we own are in `keep`; the directory listing's own is already closed, EBADF).
            unsafe { libc::close(fd) };
        }
    }
}

/// The daemon (the grandchild of `mpd start`). Never returns to the caller's code path: returns the exit code.
fn daemon_main(
    opts: Options,
    level: LevelFilter,
    lock: PidLock,
    stale: Option<i32>,
    log: LogFile,
    mut tx: File,
) -> i32 {
    block_service_signals();
    let fail_early = |tx: &mut File, msg: String| {
        let _ = writeln!(tx, "error {msg}");
        lock.remove();
        exit::ERROR
    };
    if let Err(e) = lock.write_pid() {
        return fail_early(
            &mut tx,
            format!(
                "cannot write {}: {}; choose another --dir",
                lock.path.display(),
                reason(&e)
            ),
        );
    }
    match File::options().read(true).write(true).open("/dev/null") {
        Ok(null) => {
            let _ = nix::unistd::dup2_stdin(&null);
            let _ = nix::unistd::dup2_stdout(&null);
            let _ = nix::unistd::dup2_stderr(&null);
        }
        Err(e) => return fail_early(&mut tx, format!("cannot open /dev/null: {e}")),
    }
    let log_fd = log.raw_fd();
    close_fds_except(&[lock.file.as_raw_fd(), log_fd, tx.as_raw_fd()]);
    // Every path is absolute: do not keep the caller's directory busy.
    let _ = nix::unistd::chdir("/");
    if let Err(e) = logging::init("mpd", level, &log, false) {
        return fail_early(&mut tx, format!("cannot set up logging: {e}"));
    }
    if let Some(p) = stale {
        log::warn!("replaced a stale pidfile from pid {p} (that mpd did not stop cleanly)");
    }
    let mut tx = Some(tx);
    let mut ready = |r: Result<&Ready, String>| {
        if let Some(mut t) = tx.take() {
            let _ = match r {
                Ok(ready) => writeln!(
                    t,
                    "ok\t{}\t{}\t{}\t{}",
                    std::process::id(),
                    ready.sctp,
                    ready.group,
                    ready.iface
                ),
                Err(msg) => writeln!(t, "error {msg}"),
            };
        }
    };
    serve(opts, &lock, &log, &mut ready)
}

fn cmd_run(args: &ServiceArgs) -> i32 {
    block_service_signals();
    let Service {
        level,
        dir,
        opts,
        lock,
        stale,
    } = match acquire_service(args) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if let Err(e) = lock.write_pid() {
        lock.remove();
        return fail(
            exit::ERROR,
            format!("cannot write {}: {}", lock.path.display(), reason(&e)),
        );
    }
    let log = match open_log(&dir) {
        Ok(l) => l,
        Err(e) => {
            lock.remove();
            return fail(exit::ERROR, e);
        }
    };
    if let Err(e) = logging::init("mpd", level, &log, true) {
        lock.remove();
        return fail(exit::ERROR, format!("cannot set up logging: {e}"));
    }
    if let Some(p) = stale {
        log::warn!("replaced a stale pidfile from pid {p} (that mpd did not stop cleanly)");
    }
    // Errors are logged (stderr and the file) by `serve`.
    serve(opts, &lock, &log, &mut |_| {})
}

fn cmd_stop(dir: &Path, timeout: Duration, quiet_if_stopped: bool) -> i32 {
    let dir = existing_dir(dir);
    let (pid, file) = match probe(&dir) {
        Ok(Probe::NotRunning { stale }) => {
            if quiet_if_stopped {
                return exit::STOP_NOT_RUNNING;
            }
            return fail(
                exit::STOP_NOT_RUNNING,
                format!(
                    "not running in {}, nothing to stop (start it with `mpd start --dir {}`){}",
                    dir.display(),
                    dir.display(),
                    stale_note(stale)
                ),
            );
        }
        Ok(Probe::Running {
            pid: Some(pid),
            file,
        }) => (pid, file),
        Ok(Probe::Running { pid: None, .. }) => {
            return fail(
                exit::ERROR,
                format!(
                    "an mpd holds {} but it names no pid; see {} and stop it by hand",
                    dir.join(PIDFILE).display(),
                    dir.join(LOGFILE).display()
                ),
            );
        }
        Err(e) => {
            return fail(
                exit::ERROR,
                format!(
                    "cannot read {}: {}; run as the user that started mpd",
                    dir.join(PIDFILE).display(),
                    reason(&e)
                ),
            );
        }
    };
    match nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGTERM) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(Errno::EPERM) => {
            return fail(
                exit::ERROR,
                format!(
                    "not allowed to signal mpd (pid {pid}); run `mpd stop` as the user that started it"
                ),
            );
        }
        Err(e) => return fail(exit::ERROR, format!("cannot signal mpd (pid {pid}): {e}")),
    }
    let end = Instant::now() + timeout;
    let released = wait_for(end, || !lock_held(&file).unwrap_or(true));
    // The lock goes as the process exits; wait for the exit to finish too.
    if released && wait_for(end, || process_gone(pid)) {
        println!("mpd stopped (pid {pid})");
        return exit::OK;
    }
    fail(
        exit::ERROR,
        format!(
            "mpd (pid {pid}) did not stop within {} s; see {}, or force it with `kill -9 {pid}`",
            timeout.as_secs_f32(),
            dir.join(LOGFILE).display()
        ),
    )
}

/// Polls `cond` every 10 ms until it holds (true) or `end` passes (false).
fn wait_for(end: Instant, mut cond: impl FnMut() -> bool) -> bool {
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn cmd_restart(args: &ServiceArgs) -> i32 {
    if let Err(e) = logging::level(args.log_level) {
        return fail(exit::USAGE, e);
    }
    if let Err(e) = args.options(PathBuf::new()) {
        return fail(exit::USAGE, e);
    }
    match cmd_stop(&args.dir, STOP_TIMEOUT, true) {
        exit::OK | exit::STOP_NOT_RUNNING => cmd_start(args),
        code => code,
    }
}

fn cmd_status(dir: &Path, json: bool) -> i32 {
    let dir = existing_dir(dir);
    let not_running = |stale: Option<i32>| {
        if json {
            let mut v = serde_json::json!({"running": false, "dir": dir.display().to_string()});
            if let Some(p) = stale {
                v["stale_pid"] = p.into();
            }
            println!("{v}");
        } else {
            println!(
                "mpd is not running ({}){}",
                dir.display(),
                stale_note(stale)
            );
        }
        exit::NOT_RUNNING
    };
    let pid = match probe(&dir) {
        Ok(Probe::NotRunning { stale }) => return not_running(stale),
        Ok(Probe::Running { pid, .. }) => pid,
        Err(e) => {
            return fail(
                exit::UNKNOWN,
                format!(
                    "cannot tell whether mpd runs: cannot read {}: {}; run as the user that started mpd",
                    dir.join(PIDFILE).display(),
                    reason(&e)
                ),
            );
        }
    };
    // The daemon may be between taking its pidfile and opening its control socket: retry for a moment.
    let end = Instant::now() + STATUS_TIMEOUT;
    let mut last_err = None;
    loop {
        match daemon::query_status(&dir, STATUS_TIMEOUT) {
            Ok(Some(v)) => {
                if json {
                    println!("{v}");
                } else {
                    print_status(&v);
                }
                return exit::OK;
            }
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() >= end {
            break;
        }
        match probe(&dir) {
            Ok(Probe::NotRunning { stale }) => return not_running(stale),
            Ok(Probe::Running { .. }) | Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let who = pid.map_or_else(String::new, |p| format!(" (pid {p})"));
    let why = last_err.map_or_else(
        || "does not answer".to_string(),
        |e| format!("does not answer ({e})"),
    );
    fail(
        exit::UNKNOWN,
        format!(
            "mpd{who} holds {} but {why} on {}: it may be starting, stuck or stopping; see {}, or stop it with `mpd stop --dir {}`",
            dir.join(PIDFILE).display(),
            daemon::control_path(&dir).display(),
            dir.join(LOGFILE).display(),
            dir.display()
        ),
    )
}

/// `3d 04h 05m 06s`, `5m 00s`, `42s`.
fn fmt_uptime(s: u64) -> String {
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d {h:02}h {m:02}m {s:02}s")
    } else if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

/// The human form of the daemon's status JSON.
fn print_status(v: &serde_json::Value) {
    let text = |k: &str| match &v[k] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "?".into(),
        other => other.to_string(),
    };
    let num = |x: &serde_json::Value| x.as_u64().unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "mpd is running (pid {}), up {}, version {}, instance {}",
        text("pid"),
        fmt_uptime(num(&v["uptime_s"])),
        text("version"),
        text("instance")
    );
    let _ = writeln!(out, "  directory:  {}", text("dir"));
    let _ = writeln!(
        out,
        "  discovery:  group {} on interface {}",
        text("group"),
        text("iface")
    );
    let _ = writeln!(
        out,
        "  SCTP:       udp {} (SCTP port {}), heartbeat every {} ms, silent clients detected within {} ms",
        text("sctp_udp"),
        text("sctp_port"),
        text("heartbeat_ms"),
        text("detection_bound_ms")
    );
    let c = &v["clients"];
    let _ = writeln!(
        out,
        "  clients:    {} online, {} offline ({} associations, roster version {})",
        num(&c["online"]),
        num(&c["offline"]),
        num(&v["associations"]),
        num(&v["roster_version"])
    );
    let flapping: Vec<String> = v["flapping"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| {
                    format!(
                        "{} ({} flaps)",
                        f["nick"].as_str().unwrap_or("?"),
                        num(&f["flaps"])
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  flapping:   {}",
        if flapping.is_empty() {
            "none".into()
        } else {
            flapping.join(", ")
        }
    );
    let drops: Vec<String> = v["drops"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, n)| num(n) > 0)
                .map(|(k, n)| format!("{k} {}", num(n)))
                .collect()
        })
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  drops:      {}",
        if drops.is_empty() {
            "none".into()
        } else {
            drops.join(", ")
        }
    );
    let d = &v["daemon"];
    let _ = writeln!(
        out,
        "  stalls:     {} (longest {} ms)",
        num(&d["stalls"]),
        num(&d["longest_stall_ms"])
    );
    if num(&d["save_errors"]) > 0 || num(&d["send_buffer_full"]) > 0 {
        let _ = writeln!(
            out,
            "  problems:   {} roster saves failed, {} roster messages dropped on full send buffers",
            num(&d["save_errors"]),
            num(&d["send_buffer_full"])
        );
    }
    print!("{out}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ms = |s: &str| parse_duration(s).map(|d| d.as_millis() as u64);
        assert_eq!(ms("24h"), Ok(86_400_000));
        assert_eq!(ms("90m"), Ok(5_400_000));
        assert_eq!(ms("30s"), Ok(30_000));
        assert_eq!(ms("500ms"), Ok(500));
        assert_eq!(ms("2d"), Ok(172_800_000));
        assert_eq!(ms("1h30m"), Ok(5_400_000));
        assert_eq!(ms("1m30s250ms"), Ok(90_250));
        assert_eq!(ms("3600"), Ok(3_600_000));
        assert_eq!(ms(" 45 "), Ok(45_000));
        assert_eq!(ms("0"), Ok(0));
        assert_eq!(ms("5min"), Ok(300_000));
        for bad in [
            "",
            "h",
            "10x",
            "1.5h",
            "-3s",
            "s10",
            "10 s",
            "99999999999999999999",
            "1h30",
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains(bad.trim()), "{bad:?}: {e}");
        }
        assert!(parse_duration("999999999999999999d").is_err());
    }

    #[test]
    fn uptimes() {
        assert_eq!(fmt_uptime(42), "42s");
        assert_eq!(fmt_uptime(300), "5m 00s");
        assert_eq!(fmt_uptime(3 * 3600 + 7), "3h 00m 07s");
        assert_eq!(fmt_uptime(90_061), "1d 01h 01m 01s");
    }

    #[test]
    fn os_reasons_read_as_text() {
        assert_eq!(
            reason(&io::Error::from_raw_os_error(libc::EACCES)),
            "permission denied"
        );
        assert_eq!(
            reason(&io::Error::from_raw_os_error(libc::ENOTDIR)),
            "not a directory"
        );
    }

    #[test]
    fn option_checks() {
        let mut a = ServiceArgs {
            dir: ".".into(),
            group: None,
            iface: None,
            sctp_port: None,
            bind: None,
            heartbeat_ms: None,
            max_retransmits: None,
            rto_min_ms: None,
            rto_max_ms: None,
            offline_ttl: None,
            max_clients: None,
            log_level: None,
        };
        let o = a.options("/x".into()).unwrap();
        assert_eq!(o.sctp_port, 9899);
        a.group = Some("10.0.0.1:10001".parse().unwrap());
        assert!(a.options("/x".into()).unwrap_err().contains("multicast"));
        a.group = Some("239.255.77.78:10002".parse().unwrap());
        a.rto_min_ms = Some(500);
        assert!(a.options("/x".into()).unwrap_err().contains("--rto-max-ms"));
        a.rto_max_ms = Some(800);
        a.offline_ttl = Some(Duration::from_secs(60));
        let o = a.options("/x".into()).unwrap();
        assert_eq!(o.group.port(), 10002);
        assert_eq!(o.rto_max, Duration::from_millis(800));
        assert_eq!(o.offline_ttl, Duration::from_secs(60));
    }
}
