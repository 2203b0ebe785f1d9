//! Detaching `mpd start`'s daemon from its caller: the double fork, the ready pipe, and the clean slate of
//! descriptors a daemon starts from.
//!
//! **Start-up handshake.** [`detach`] forks; the child calls `setsid` and forks again; the grandchild is the
//! daemon, which no terminal or session of the caller can reach. The daemon then writes its pid, points
//! stdin/stdout/stderr at `/dev/null` and closes every other inherited descriptor ([`isolate`]), logs to its
//! file and runs the service, whose ready callback writes `ok …` or `error MESSAGE` into a pipe
//! ([`ReadySender`]) that the original process waits on ([`ReadyReceiver::wait`], 10 s at most in `mpd`). So
//! `mpd start` returns only once the daemon listens, and fails with the daemon's own one-line error.
//!
//! **No threads before the forks.** A forked child of a multi-threaded process may only call async-signal-safe
//! functions; the daemon runs everything. So nothing may start a thread before [`detach`], which checks that
//! (it counts `/proc/self/task`) and refuses otherwise: the caller's only thread (the one that waits on the
//! pipe with a deadline) is started after it, in the original process.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::unistd::ForkResult;

use super::Ready;

/// Which process returned from [`detach`].
#[derive(Debug)]
pub enum Detached {
    /// The original process: the daemon is on its way; wait for its report.
    Caller(ReadyReceiver),
    /// The daemon (the grandchild, in a session of its own): report once listening, or why not.
    Daemon(ReadySender),
}

/// Why [`detach`] failed in the original process (the forked processes report their failures through the
/// ready pipe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetachError {
    /// The ready pipe could not be created.
    Pipe(nix::Error),
    /// The first fork failed.
    Fork(nix::Error),
    /// This process runs this many threads (0: they cannot be counted), not one, so it must not fork.
    Threads(usize),
}

impl std::fmt::Display for DetachError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DetachError::Pipe(e) => write!(f, "cannot create a pipe: {e}"),
            DetachError::Fork(e) => write!(f, "cannot fork: {e}"),
            DetachError::Threads(0) => {
                write!(
                    f,
                    "cannot fork: cannot count this process's threads in /proc/self/task"
                )
            }
            DetachError::Threads(n) => {
                write!(f, "cannot fork: this process runs {n} threads, not one")
            }
        }
    }
}

impl std::error::Error for DetachError {}

/// Forks the daemon off this process: fork, `setsid`, fork. Returns in the original process (once the
/// intermediate child has exited) and in the daemon; never in the intermediate child, which exits with 0 after
/// its fork, or with 1 after reporting a failed `setsid` or fork through the pipe.
///
/// Descriptors are inherited as they are: an open file description shared with the daemon (the pidfile lock)
/// stays with the daemon when the caller closes its copy.
///
/// Refuses ([`DetachError::Threads`]) unless this process has a single thread (see the module docs). Flushes
/// stdout and stderr first, so that nothing buffered is printed twice.
pub fn detach() -> Result<Detached, DetachError> {
    let threads = thread_count();
    if threads != 1 {
        return Err(DetachError::Threads(threads));
    }
    let (rx, tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(DetachError::Pipe)?;
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    // SAFETY: this process has a single thread (counted just now; only this thread could have started
    // another since), so the child may run any code.
    match unsafe { nix::unistd::fork() }.map_err(DetachError::Fork)? {
        ForkResult::Parent { child } => {
            drop(tx);
            // The intermediate child exits as soon as it has forked the daemon.
            let _ = nix::sys::wait::waitpid(child, None);
            Ok(Detached::Caller(ReadyReceiver(rx)))
        }
        ForkResult::Child => {
            drop(rx);
            let tx = ReadySender(File::from(tx));
            if let Err(e) = nix::unistd::setsid() {
                tx.error(&format!("cannot start a new session: {e}"));
                exit_now(1);
            }
            // SAFETY: still single-threaded.
            match unsafe { nix::unistd::fork() } {
                Ok(ForkResult::Child) => Ok(Detached::Daemon(tx)),
                // The daemon carries on alone, reparented away from the caller's session.
                Ok(ForkResult::Parent { .. }) => exit_now(0),
                Err(e) => {
                    tx.error(&format!("cannot fork: {e}"));
                    exit_now(1)
                }
            }
        }
    }
}

/// The number of threads in this process, 0 if `/proc/self/task` cannot be read.
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// Ends the intermediate child at once, without the parent's exit handlers or buffered output.
fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` ends the process without touching any state of this one; it is always sound to call.
    unsafe { libc::_exit(code) }
}

/// Points stdin, stdout and stderr at `/dev/null`, closes every other descriptor except `keep` (a daemon must
/// not hold its caller's pipes, terminals or files open), and moves to `/` (every path the daemon uses is
/// absolute: it must not keep the caller's directory busy). Errors: `/dev/null` cannot be opened (nothing
/// has been changed then).
pub fn isolate(keep: &[RawFd]) -> io::Result<()> {
    let null = File::options().read(true).write(true).open("/dev/null")?;
    let _ = nix::unistd::dup2_stdin(&null);
    let _ = nix::unistd::dup2_stdout(&null);
    let _ = nix::unistd::dup2_stderr(&null);
    drop(null);
    close_fds_except(keep);
    let _ = nix::unistd::chdir("/");
    Ok(())
}

/// Closes every descriptor above 2 except `keep`.
fn close_fds_except(keep: &[RawFd]) {
    let Ok(rd) = std::fs::read_dir("/proc/self/fd") else {
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

/// The daemon's end of the ready pipe: one report, then it is closed.
#[derive(Debug)]
pub struct ReadySender(File);

impl ReadySender {
    /// The descriptor (to keep open through [`isolate`]).
    pub fn raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Reports that the daemon (this process) listens where `ready` says.
    pub fn ready(mut self, ready: &Ready) {
        let _ = writeln!(
            self.0,
            "ok\t{}\t{}\t{}\t{}",
            std::process::id(),
            ready.sctp,
            ready.group,
            ready.iface
        );
    }

    /// Reports that the daemon cannot start, with a one-line `msg` for the caller to print.
    pub fn error(mut self, msg: &str) {
        let _ = writeln!(self.0, "error {msg}");
    }
}

/// The original process's end of the ready pipe.
#[derive(Debug)]
pub struct ReadyReceiver(OwnedFd);

/// What the daemon reported through the ready pipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// It listens: its pid, SCTP address, discovery group and interface, as text to print.
    Listening {
        /// The daemon's pid.
        pid: String,
        /// The SCTP-over-UDP socket's address.
        sctp: String,
        /// The discovery group.
        group: String,
        /// The interface discovery joined on.
        iface: String,
    },
    /// It cannot start; the one-line reason.
    Failed(String),
    /// It closed the pipe without a report it could understand (it exited or crashed).
    Exited,
    /// No report within the time allowed.
    TimedOut,
}

impl ReadyReceiver {
    /// Waits up to `timeout` for the daemon's report (until every copy of the write end is closed).
    pub fn wait(self, timeout: Duration) -> Report {
        let (tx_text, rx_text) = std::sync::mpsc::channel();
        let rx = self.0;
        // The daemon is detached by now, so this (original) process may use a thread for the deadline. If the
        // deadline passes, the thread is left blocked on the pipe and ends with the process.
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = File::from(rx).take(64 * 1024).read_to_string(&mut s);
            let _ = tx_text.send(s);
        });
        match rx_text.recv_timeout(timeout) {
            Ok(text) => parse_report(&text),
            Err(_) => Report::TimedOut,
        }
    }
}

/// The report in what the pipe carried (its first line counts).
fn parse_report(text: &str) -> Report {
    let line = text.lines().next().unwrap_or("");
    if let Some(rest) = line.strip_prefix("ok\t")
        && let [pid, sctp, group, iface] = rest.splitn(4, '\t').collect::<Vec<_>>()[..]
    {
        return Report::Listening {
            pid: pid.into(),
            sctp: sctp.into(),
            group: group.into(),
            iface: iface.into(),
        };
    }
    match line.strip_prefix("error ") {
        Some(msg) => Report::Failed(msg.into()),
        None => Report::Exited,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ready pipe within this process (no fork): what a daemon would send is what its caller receives.
    fn pipe() -> (ReadyReceiver, ReadySender) {
        let (rx, tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        (ReadyReceiver(rx), ReadySender(File::from(tx)))
    }

    const WAIT: Duration = Duration::from_secs(10);

    #[test]
    fn ready_reports_where_it_listens() {
        let (rx, tx) = pipe();
        let ready = Ready {
            sctp: "0.0.0.0:9899".parse().unwrap(),
            group: "239.255.77.77:10001".parse().unwrap(),
            iface: crate::io::discovery::Iface::V4("127.0.0.1".parse().unwrap()),
        };
        tx.ready(&ready);
        assert_eq!(
            rx.wait(WAIT),
            Report::Listening {
                pid: std::process::id().to_string(),
                sctp: "0.0.0.0:9899".into(),
                group: "239.255.77.77:10001".into(),
                iface: ready.iface.to_string(),
            }
        );
    }

    #[test]
    fn errors_and_silence() {
        let (rx, tx) = pipe();
        tx.error("cannot bind udp 0.0.0.0:9899: address in use; choose another --sctp-port");
        assert_eq!(
            rx.wait(WAIT),
            Report::Failed(
                "cannot bind udp 0.0.0.0:9899: address in use; choose another --sctp-port".into()
            )
        );
        let (rx, tx) = pipe();
        drop(tx);
        assert_eq!(rx.wait(WAIT), Report::Exited);
        // The write end stays open and silent: the deadline decides.
        let (rx, _tx) = pipe();
        assert_eq!(rx.wait(Duration::from_millis(1)), Report::TimedOut);
    }

    /// With a second thread alive, detach refuses before it creates or forks anything.
    #[test]
    fn refuses_to_fork_a_threaded_process() {
        let (hold, wait) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            let _ = wait.recv();
        });
        match detach() {
            Err(DetachError::Threads(n)) => assert!(n >= 2, "{n}"),
            Err(e) => panic!("{e}"),
            // Unreachable with the guard; without it, only the caller returns here (the daemon side exits).
            Ok(Detached::Caller(_)) => panic!("forked a threaded process"),
            Ok(Detached::Daemon(_)) => std::process::exit(0),
        }
        drop(hold);
        other.join().unwrap();
    }

    #[test]
    fn reports_parse_from_the_first_line() {
        assert_eq!(parse_report(""), Report::Exited);
        assert_eq!(parse_report("ok\t1\t2\t3\n"), Report::Exited);
        assert_eq!(parse_report("garbage\nerror x\n"), Report::Exited);
        assert_eq!(
            parse_report("error x\nok\t1\t2\t3\t4\n"),
            Report::Failed("x".into())
        );
        assert_eq!(
            parse_report("ok\t12\ta\tb\tc\td\n"),
            Report::Listening {
                pid: "12".into(),
                sctp: "a".into(),
                group: "b".into(),
                iface: "c\td".into()
            }
        );
    }
}
