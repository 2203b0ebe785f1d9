//! `mpd`, the multiproto daemon: its command line, and the wiring from it to the library.
//!
//! ```text
//! mpd start   [--dir DIR] [service options]   daemonize; returns once the daemon listens (or with its error)
//! mpd stop    [--dir DIR]                     SIGTERM, wait for the graceful stop
//! mpd restart [--dir DIR] [service options]   stop if running, then start
//! mpd status  [--dir DIR] [--json]            0 running, 3 not running, 4 cannot tell (LSB)
//! mpd run     [--dir DIR] [service options]   foreground (systemd, containers); logs also to stderr
//! mpd key     [--dir DIR]                     the daemon's key fingerprint (clients pin it)
//! mpd release NAME [--dir DIR]                free a nickname from the key that owns it
//! ```
//!
//! `DIR` (default: the current directory) holds `multiproto.pid`, `multiproto.log`, the control socket
//! `multiproto.sock` and the saved roster `roster.json`.
//!
//! What it wires together, and where the explanations are:
//! - [`multiproto::daemon::pidfile`]: the pidfile's OFD lock, which says whether a daemon runs in `DIR`;
//! - [`multiproto::daemon::detach`]: `start`'s double fork and the ready pipe it waits on;
//! - [`multiproto::logging`]: the log file, its line format, SIGHUP reopening, the level;
//! - [`multiproto::daemon::run`]: the service itself; [`multiproto::daemon::status_view`]: `status` for people.
//!
//! Every failure is one line on stderr, `mpd: WHAT; WHAT TO DO`, and an exit code from [`exit`].

use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use argh::FromArgs;
use log::LevelFilter;
use multiproto::cli::os_reason as reason;
use multiproto::daemon::detach::{self, Detached, ReadySender, Report};
use multiproto::daemon::pidfile::{LockError, PIDFILE, PidLock, Probe, probe};
use multiproto::daemon::{self, Options, status_view};
use multiproto::logging::{self, LogFile};
use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::{AccessFlags, Pid};

/// The log file's name in `--dir`.
const LOGFILE: &str = "multiproto.log";
/// How long `start` waits for the daemon to report that it listens.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `stop` waits for the daemon to exit (its graceful stop takes at most ~2 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `status` waits for the control socket to answer.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);

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
    Key(KeyArgs),
    Release(ReleaseArgs),
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
            /// the network secret: a file readable only by the daemon's user (at least 16 bytes; make one
            /// with `head -c 32 /dev/urandom | base64 > FILE; chmod 600 FILE`). Only clients given the same
            /// file with their --secret-file can find, join or read this daemon
            #[argh(option)]
            secret_file: Option<PathBuf>,
            /// how long a nickname stays bound to the key that registered it after its owner was last
            /// online, e.g. 90d (default 90d; offline entries leave the roster sooner, after --offline-ttl)
            #[argh(option, from_str_fn(parse_duration))]
            nick_binding_ttl: Option<Duration>,
            /// nicknames (online and offline) registered from one address at most; more are refused with a
            /// reason (default 256: room for a terminal server's users; 0 = no limit)
            #[argh(option)]
            max_clients_per_host: Option<usize>,
            /// offline nicknames kept per address: past it, that address's one offline longest is removed,
            /// so one host cannot leave ghosts for a day (default 64; 0 = no limit)
            #[argh(option)]
            max_offline_per_host: Option<usize>,
            /// WELCOMEs per second at most to one address, in bursts of twice that; further HELLOs from it are
            /// not answered, so spoofed HELLOs cannot aim WELCOMEs at anyone (default 10; 0 = no limit)
            #[argh(option)]
            welcome_rate: Option<u32>,
            /// how long a client may resume its session with a ticket instead of a full handshake (a
            /// restart of this daemon then costs each client one key exchange, not four), e.g. 12h
            /// (default 7d; 0 = no tickets)
            #[argh(option, from_str_fn(parse_duration))]
            ticket_lifetime: Option<Duration>,
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
                    secret_file: self.secret_file.clone(),
                    nick_binding_ttl: self.nick_binding_ttl,
                    max_clients_per_host: self.max_clients_per_host,
                    max_offline_per_host: self.max_offline_per_host,
                    welcome_rate: self.welcome_rate,
                    ticket_lifetime: self.ticket_lifetime,
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
    note = "Shows pid, uptime, discovery group and interface, SCTP address and port, clients online and offline, flapping clients, the per-host limits and what they turned away, drop counters and stalls, as reported by the control socket DIR/multiproto.sock.",
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

/// print the daemon's key fingerprint (creating DIR/daemon.key if there is none yet), for people to
/// compare with what their clients see
#[derive(FromArgs)]
#[argh(subcommand, name = "key")]
struct KeyArgs {
    /// the daemon's directory (default: the current directory)
    #[argh(option, default = "PathBuf::from(\".\")")]
    dir: PathBuf,
}

/// free a nickname from the key that registered it, so that another key (the same person after losing
/// theirs, or someone else) can register it
#[derive(FromArgs)]
#[argh(
    subcommand,
    name = "release",
    note = "Works on a running daemon (through its control socket) and on a stopped one (in DIR/roster.json). The nickname must be offline: ask its client to leave first.",
    error_code(0, "released."),
    error_code(
        1,
        "not released; the message says why (unknown, online, no daemon directory)."
    ),
    error_code(2, "invalid command line.")
)]
struct ReleaseArgs {
    /// the nickname
    #[argh(positional)]
    name: String,
    /// the daemon's directory (default: the current directory)
    #[argh(option, default = "PathBuf::from(\".\")")]
    dir: PathBuf,
}

/// `mpd release NAME`: through the running daemon if there is one, else in the saved roster.
fn cmd_release(a: &ReleaseArgs) -> i32 {
    let dir = existing_dir(&a.dir);
    match daemon::query(&dir, &format!("release {}", a.name), STATUS_TIMEOUT) {
        Ok(Some(v)) => {
            return match v["released"].as_str() {
                Some(n) => {
                    println!("released {n}: the next key to register it owns it");
                    exit::OK
                }
                None => fail(
                    exit::ERROR,
                    v["error"].as_str().unwrap_or("the daemon refused"),
                ),
            };
        }
        Ok(None) => {}
        Err(e) => {
            return fail(
                exit::ERROR,
                format!("cannot ask the daemon in {}: {e}", dir.display()),
            );
        }
    }
    // No daemon runs there: edit the saved roster, with the registry's own rules.
    let nick = match multiproto::nick::Nick::new(&a.name) {
        Ok(n) => n,
        Err(e) => return fail(exit::ERROR, format!("{:?} is not a nickname: {e}", a.name)),
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    use multiproto::io::roster_file as persist;
    let image = match persist::load(&dir, now_ms) {
        Ok(persist::Loaded::Roster { image, .. }) => image,
        Ok(_) => {
            return fail(
                exit::ERROR,
                format!(
                    "no saved roster in {}: is that the daemon's --dir?",
                    dir.display()
                ),
            );
        }
        Err(e) => {
            return fail(
                exit::ERROR,
                format!("cannot read the roster in {}: {e}", dir.display()),
            );
        }
    };
    let mut reg = multiproto::registry::Registry::new(multiproto::registry::Config::default());
    reg.load(image);
    if let Err(e) = reg.release(now_ms, &nick) {
        return fail(exit::ERROR, format!("{nick}: {e}"));
    }
    match persist::save_roster(&dir, &reg.image(now_ms)) {
        Ok(()) => {
            println!("released {nick}: the next key to register it owns it");
            exit::OK
        }
        Err(e) => fail(
            exit::ERROR,
            format!("cannot save the roster in {}: {e}", dir.display()),
        ),
    }
}

/// `mpd key`: the fingerprint on stdout; a note on stderr when the key was made just now.
fn cmd_key(dir: &Path) -> i32 {
    let path = dir.join(multiproto::io::keyfile::DAEMON_KEY);
    match multiproto::io::keyfile::load_or_create(&path) {
        Ok((id, created)) => {
            if created {
                eprintln!("mpd: created a new daemon key in {}", path.display());
            }
            println!("{}", id.public().fingerprint());
            exit::OK
        }
        Err(e) => fail(exit::ERROR, e),
    }
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
    secret_file: Option<PathBuf>,
    nick_binding_ttl: Option<Duration>,
    max_clients_per_host: Option<usize>,
    max_offline_per_host: Option<usize>,
    welcome_rate: Option<u32>,
    ticket_lifetime: Option<Duration>,
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
            o.server.group = g;
        }
        o.iface = self.iface.clone();
        if let Some(p) = self.sctp_port {
            if p == 0 {
                return Err("--sctp-port must be between 1 and 65535".into());
            }
            o.server.sctp_port = p;
        }
        if let Some(b) = self.bind {
            o.bind = b;
        }
        if let Some(ms) = self.heartbeat_ms {
            if ms == 0 {
                return Err("--heartbeat-ms must be at least 1".into());
            }
            o.server.heartbeat = Duration::from_millis(ms);
        }
        if let Some(n) = self.max_retransmits {
            o.server.max_retransmits = n;
        }
        if let Some(ms) = self.rto_min_ms {
            o.server.rto_min = Duration::from_millis(ms);
        }
        if let Some(ms) = self.rto_max_ms {
            o.server.rto_max = Duration::from_millis(ms);
        }
        if o.server.rto_min.is_zero() {
            return Err("--rto-min-ms must be at least 1".into());
        }
        if o.server.rto_min > o.server.rto_max {
            return Err(format!(
                "--rto-min-ms ({} ms) is above --rto-max-ms ({} ms); make the minimum the smaller one",
                o.server.rto_min.as_millis(),
                o.server.rto_max.as_millis()
            ));
        }
        if let Some(t) = self.offline_ttl {
            o.server.offline_ttl = t;
        }
        if let Some(n) = self.max_clients {
            if n == 0 {
                return Err("--max-clients must be at least 1".into());
            }
            o.server.max_clients = n;
        }
        if let Some(t) = self.nick_binding_ttl {
            o.server.binding_ttl = t;
        }
        if o.server.binding_ttl < o.server.offline_ttl {
            return Err(format!(
                "--nick-binding-ttl ({} s) is shorter than --offline-ttl ({} s): a nickname would be free \
                 while its owner still shows in the roster; make it at least as long",
                o.server.binding_ttl.as_secs(),
                o.server.offline_ttl.as_secs()
            ));
        }
        // Relative to where mpd was started: the daemon runs from its directory after detaching.
        o.secret_file = self
            .secret_file
            .as_ref()
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()));
        if let Some(n) = self.max_clients_per_host {
            o.server.max_clients_per_host = n;
        }
        if let Some(n) = self.max_offline_per_host {
            o.server.max_offline_per_host = n;
        }
        if let Some(n) = self.welcome_rate {
            o.server.welcome_rate = n;
        }
        if let Some(t) = self.ticket_lifetime {
            o.server.ticket_lifetime = t;
        }
        Ok(o)
    }
}

/// `--offline-ttl`, `--timeout` (argh's `from_str_fn` takes a `String` error).
fn parse_duration(s: &str) -> Result<Duration, String> {
    multiproto::cli::parse_duration(s).map_err(|e| e.to_string())
}

/// `--log-level`.
fn parse_level(s: &str) -> Result<LevelFilter, String> {
    logging::parse_level(s).map_err(|e| e.to_string())
}

fn main() {
    // Like `argh::from_env`, but a usage error exits with 2 (LSB: invalid arguments), not 1.
    let hint = "Run `mpd --help` (or `mpd COMMAND --help`) for usage.";
    let code = match multiproto::cli::parse::<Cli>("mpd", hint, exit::USAGE) {
        Ok(cli) => match cli.cmd {
            Command::Start(a) => cmd_start(&a.service()),
            Command::Stop(a) => cmd_stop(&a.dir, a.timeout.unwrap_or(STOP_TIMEOUT), false),
            Command::Restart(a) => cmd_restart(&a.service()),
            Command::Status(a) => cmd_status(&a.dir, a.json),
            Command::Run(a) => cmd_run(&a.service()),
            Command::Key(a) => cmd_key(&a.dir),
            Command::Release(a) => cmd_release(&a),
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

/// Creates `dir` if needed, checks that it is writable and returns its canonical path.
fn prepare_dir(dir: &Path) -> Result<PathBuf, String> {
    let cannot = |what: &str, e: &io::Error| {
        format!(
            "cannot {what} {}: {}; choose another --dir",
            dir.display(),
            reason(e)
        )
    };
    fs::create_dir_all(dir).map_err(|e| cannot("create", &e))?;
    let canon = dir.canonicalize().map_err(|e| cannot("use", &e))?;
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

fn stale_note(stale: Option<i32>) -> String {
    match stale {
        Some(p) => format!(
            "; its pidfile names pid {p}, a daemon that did not stop cleanly (the next start replaces it)"
        ),
        None => String::new(),
    }
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

// ---------------------------------------------------------------------------------------------------------
// start and run

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
    let (lock, stale) = PidLock::acquire(&dir).map_err(|e| match e {
        LockError::Running(pid) => {
            let who = pid.map_or_else(String::new, |p| format!(" (pid {p})"));
            fail(
                exit::ERROR,
                format!(
                    "already running in {}{who}; stop it first with `mpd stop --dir {}`, or choose another --dir",
                    dir.display(),
                    dir.display()
                ),
            )
        }
        LockError::Io(e) => fail(
            exit::ERROR,
            format!(
                "cannot write to {}: {}; choose another --dir or fix its permissions",
                dir.join(PIDFILE).display(),
                reason(&e)
            ),
        ),
    })?;
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
    // Nothing before this point starts a thread (detach's requirement).
    match detach::detach() {
        Err(e) => {
            lock.remove();
            fail(exit::ERROR, e)
        }
        Ok(Detached::Caller(rx)) => {
            // The lock lives on in the daemon, which shares its open file description: closing ours keeps it.
            drop(lock);
            drop(log);
            report_start(rx.wait(READY_TIMEOUT), &dir)
        }
        Ok(Detached::Daemon(tx)) => daemon_main(opts, level, lock, stale, log, tx),
    }
}

/// Prints the outcome of `start` from the daemon's report.
fn report_start(report: Report, dir: &Path) -> i32 {
    let log_path = dir.join(LOGFILE);
    match report {
        Report::Listening {
            pid,
            sctp,
            group,
            iface,
        } => {
            println!(
                "mpd started (pid {pid}): SCTP on udp {sctp}, discovery {group} on interface {iface}, log {}",
                log_path.display()
            );
            exit::OK
        }
        Report::Failed(msg) => fail(exit::ERROR, msg),
        Report::Exited => fail(
            exit::ERROR,
            format!(
                "mpd exited before it was listening; see {}",
                log_path.display()
            ),
        ),
        Report::TimedOut => fail(
            exit::ERROR,
            format!(
                "mpd did not report that it listens within {} s; see {}, and check with `mpd status --dir {}`",
                READY_TIMEOUT.as_secs(),
                log_path.display(),
                dir.display()
            ),
        ),
    }
}

/// The daemon (the grandchild of `mpd start`): returns its exit code, never to the caller's code path.
fn daemon_main(
    opts: Options,
    level: LevelFilter,
    lock: PidLock,
    stale: Option<i32>,
    log: LogFile,
    tx: ReadySender,
) -> i32 {
    block_service_signals();
    // The pidfile goes before the caller hears (it exits on the message).
    let fail_early = |tx: ReadySender, msg: String| {
        lock.remove();
        tx.error(&msg);
        exit::ERROR
    };
    if let Err(e) = lock.write_pid() {
        let path = lock.path().display();
        return fail_early(
            tx,
            format!("cannot write {path}: {}; choose another --dir", reason(&e)),
        );
    }
    if let Err(e) = detach::isolate(&[lock.raw_fd(), log.raw_fd(), tx.raw_fd()]) {
        return fail_early(tx, format!("cannot open /dev/null: {e}"));
    }
    if let Err(e) = logging::init("mpd", level, &log, false) {
        return fail_early(tx, format!("cannot set up logging: {e}"));
    }
    warn_stale(stale);
    let mut tx = Some(tx);
    let mut ready = |r: Result<&daemon::Ready, &daemon::StartError>| match (tx.take(), r) {
        (Some(t), Ok(ready)) => t.ready(ready),
        (Some(t), Err(e)) => t.error(&e.to_string()),
        (None, _) => {}
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
    let set_up = lock
        .write_pid()
        .map_err(|e| format!("cannot write {}: {}", lock.path().display(), reason(&e)))
        .and_then(|()| open_log(&dir))
        .and_then(|log| {
            logging::init("mpd", level, &log, true)
                .map_err(|e| format!("cannot set up logging: {e}"))?;
            Ok(log)
        });
    let log = match set_up {
        Ok(log) => log,
        Err(e) => {
            lock.remove();
            return fail(exit::ERROR, e);
        }
    };
    warn_stale(stale);
    // Errors are logged (stderr and the file) by `serve`.
    serve(opts, &lock, &log, &mut |_| {})
}

fn warn_stale(stale: Option<i32>) {
    if let Some(p) = stale {
        log::warn!("replaced a stale pidfile from pid {p} (that mpd did not stop cleanly)");
    }
}

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
    ready: &mut dyn FnMut(Result<&daemon::Ready, &daemon::StartError>),
) -> i32 {
    let dir = opts.dir.clone();
    let mut started = false;
    let mut on_ready = |r: Result<&daemon::Ready, &daemon::StartError>| {
        match &r {
            Ok(_) => started = true,
            Err(msg) => log::error!("mpd cannot start: {msg}"),
        }
        ready(r);
    };
    let result = daemon::run(opts, &mut on_ready, &mut || log.reopen());
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
// stop, restart, status

fn cmd_stop(dir: &Path, timeout: Duration, quiet_if_stopped: bool) -> i32 {
    let dir = existing_dir(dir);
    let pidfile = dir.join(PIDFILE).display().to_string();
    let (pid, holder) = match probe(&dir) {
        Ok(Probe::NotRunning { .. }) if quiet_if_stopped => return exit::STOP_NOT_RUNNING,
        Ok(Probe::NotRunning { stale }) => {
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
            holder,
        }) => (pid, holder),
        Ok(Probe::Running { pid: None, .. }) => {
            return fail(
                exit::ERROR,
                format!(
                    "an mpd holds {pidfile} but it names no pid; see {} and stop it by hand",
                    dir.join(LOGFILE).display()
                ),
            );
        }
        Err(e) => {
            return fail(
                exit::ERROR,
                format!(
                    "cannot read {pidfile}: {}; run as the user that started mpd",
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
    if holder.wait_exit(pid, Instant::now() + timeout) {
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
                    print!("{}", status_view::render(&v));
                }
                return exit::OK;
            }
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() >= end {
            break;
        }
        if let Ok(Probe::NotRunning { stale }) = probe(&dir) {
            return not_running(stale);
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

#[cfg(test)]
mod tests {
    use super::*;

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
            secret_file: None,
            nick_binding_ttl: None,
            max_clients_per_host: None,
            max_offline_per_host: None,
            welcome_rate: None,
            ticket_lifetime: None,
            log_level: None,
        };
        let o = a.options("/x".into()).unwrap();
        assert_eq!(o.server.binding_ttl, Duration::from_secs(90 * 86_400));
        a.nick_binding_ttl = Some(Duration::from_secs(3600));
        assert!(
            a.options("/x".into())
                .unwrap_err()
                .contains("--offline-ttl")
        );
        a.nick_binding_ttl = None;
        assert_eq!(o.server.sctp_port, 9899);
        // The per-host limits default to what fits a terminal server, and 0 turns each off.
        assert_eq!(
            (
                o.server.max_clients_per_host,
                o.server.max_offline_per_host,
                o.server.welcome_rate
            ),
            (256, 64, 10)
        );
        a.max_clients_per_host = Some(0);
        a.max_offline_per_host = Some(0);
        a.welcome_rate = Some(0);
        let o = a.options("/x".into()).unwrap();
        assert_eq!(
            (
                o.server.max_clients_per_host,
                o.server.max_offline_per_host,
                o.server.welcome_rate
            ),
            (0, 0, 0)
        );
        a.group = Some("10.0.0.1:10001".parse().unwrap());
        assert!(a.options("/x".into()).unwrap_err().contains("multicast"));
        a.group = Some("239.255.77.78:10002".parse().unwrap());
        a.rto_min_ms = Some(500);
        assert!(a.options("/x".into()).unwrap_err().contains("--rto-max-ms"));
        a.rto_max_ms = Some(800);
        a.offline_ttl = Some(Duration::from_secs(60));
        let o = a.options("/x".into()).unwrap();
        assert_eq!(o.server.group.port(), 10002);
        assert_eq!(o.server.rto_max, Duration::from_millis(800));
        assert_eq!(o.server.offline_ttl, Duration::from_secs(60));
    }
}
