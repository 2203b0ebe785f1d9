//! The daemon directory's pidfile, `DIR/multiproto.pid`, and the lock that says a daemon runs there.
//!
//! The running daemon holds an exclusive open-file-description lock (`F_OFD_SETLK`, Linux) on the pidfile for
//! its whole life; the kernel drops it when the daemon exits, however it exits. So "is a daemon running here?"
//! is "is the lock held?", never "is the pid in the file alive?" (pids are reused), and a pidfile whose lock
//! nobody holds is the stale leftover of a crash: [`PidLock::acquire`] takes it over. `status` and `stop` ask
//! with `F_OFD_GETLK` ([`probe`]), which tests for a conflicting lock without taking it, so a probe can never
//! make a concurrent `start` fail. `start` takes the lock *before* it forks: the open file description (and with
//! it the lock) is shared by the forked daemon, so the directory is never unlocked between the check and the
//! daemon.
//!
//! OFD locks belong to an open file description, not to a process: two opens of the pidfile conflict even in
//! one process, which is what lets the tests below check the lock's semantics without starting processes.
//!
//! The pid in the file is only information for people and for `stop` (whom to signal); it is written by the
//! daemon right after it forks, so readers that find the lock held give it a moment ([`PID_WAIT`]) to appear.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};
use nix::unistd::Pid;

/// The pidfile's name in the daemon's directory.
pub const PIDFILE: &str = "multiproto.pid";

/// How long a reader waits for a locked pidfile to get its pid (the daemon writes it right after forking).
pub const PID_WAIT: Duration = Duration::from_secs(2);

/// How often the waits here look again.
const POLL: Duration = Duration::from_millis(10);

/// A whole-file write-lock request for `fcntl`.
fn whole_file(kind: libc::c_int) -> libc::flock {
    // SAFETY: `flock` is a plain C struct of integers, for which all-zero is a valid value.
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = kind as libc::c_short;
    l.l_whence = libc::SEEK_SET as libc::c_short;
    l
}

/// Takes the exclusive lock on `file`: `Ok(false)` if another open file description holds it.
fn try_lock(file: &File) -> io::Result<bool> {
    let l = whole_file(libc::F_WRLCK);
    match fcntl(file.as_fd(), FcntlArg::F_OFD_SETLK(&l)) {
        Ok(_) => Ok(true),
        Err(Errno::EAGAIN | Errno::EACCES) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Whether another open file description holds a lock on `file` (tested without taking it).
fn lock_held(file: &File) -> io::Result<bool> {
    let mut l = whole_file(libc::F_WRLCK);
    fcntl(file.as_fd(), FcntlArg::F_OFD_GETLK(&mut l))?;
    Ok(l.l_type != libc::F_UNLCK as libc::c_short)
}

/// The pid written in a pidfile, if it holds one (a positive decimal number, blanks around it allowed).
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

/// The locked pidfile of the daemon in this process. The lock lasts as long as the open file description:
/// dropping this closes only this process's descriptor, so a forked daemon that shares it keeps the lock.
#[derive(Debug)]
pub struct PidLock {
    file: File,
    path: PathBuf,
}

/// Why [`PidLock::acquire`] did not take the lock.
#[derive(Debug)]
pub enum LockError {
    /// A daemon runs in the directory (with this pid, once it has written it).
    Running(Option<i32>),
    /// The pidfile cannot be opened, locked or truncated.
    Io(io::Error),
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Running(Some(pid)) => write!(f, "a daemon (pid {pid}) holds the pidfile"),
            LockError::Running(None) => write!(f, "a daemon holds the pidfile"),
            LockError::Io(e) => write!(f, "cannot lock the pidfile: {e}"),
        }
    }
}

impl std::error::Error for LockError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LockError::Running(_) => None,
            LockError::Io(e) => Some(e),
        }
    }
}

impl PidLock {
    /// Takes `dir/multiproto.pid` (created with mode 0644 if missing) and empties it. Also returns the pid a
    /// crashed daemon left in it, if any. If the lock is held, waits up to [`PID_WAIT`] for the holder's pid.
    pub fn acquire(dir: &Path) -> Result<(PidLock, Option<i32>), LockError> {
        Self::acquire_within(dir, PID_WAIT)
    }

    fn acquire_within(dir: &Path, pid_wait: Duration) -> Result<(PidLock, Option<i32>), LockError> {
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
                let end = Instant::now() + pid_wait;
                while pid.is_none() && Instant::now() < end && lock_held(&file).unwrap_or(false) {
                    std::thread::sleep(POLL);
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

    /// The pidfile's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The locked descriptor (a daemonizing process keeps it open while it closes the rest).
    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Writes this process's pid into the pidfile, and syncs it.
    pub fn write_pid(&self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file
            .write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0)?;
        self.file.sync_all()
    }

    /// Removes the pidfile (the lock goes when the process exits). A failure is logged as a warning.
    pub fn remove(&self) {
        if let Err(e) = fs::remove_file(&self.path) {
            log::warn!("cannot remove {}: {e}", self.path.display());
        }
    }
}

/// Whether a daemon runs in a directory, as far as its pidfile tells.
#[derive(Debug)]
pub enum Probe {
    /// Nobody holds the lock; `stale` is the pid a crashed daemon left in the pidfile.
    NotRunning {
        /// The pid left in an unlocked pidfile.
        stale: Option<i32>,
    },
    /// The lock is held, by the process `pid` (`None`: no pid written yet, or not readable).
    Running {
        /// The holder's pid, as written in the pidfile.
        pid: Option<i32>,
        /// Our own open of the pidfile, to watch the lock with.
        holder: Holder,
    },
}

/// An open of a locked pidfile, to watch for the daemon holding it to exit.
#[derive(Debug)]
pub struct Holder(File);

impl Holder {
    /// Whether the lock has been released (an error reads as "still held").
    pub fn released(&self) -> bool {
        !lock_held(&self.0).unwrap_or(true)
    }

    /// After the daemon `pid` was told to stop: waits until `deadline` for it to release the lock and then
    /// to be gone (exited, or a zombie waiting to be reaped). Whether it went in time.
    pub fn wait_exit(&self, pid: i32, deadline: Instant) -> bool {
        wait_until(deadline, || self.released()) && wait_until(deadline, || process_gone(pid))
    }
}

/// Polls `cond` every 10 ms until it holds (true) or `deadline` passes (false).
fn wait_until(deadline: Instant, mut cond: impl FnMut() -> bool) -> bool {
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Whether a daemon holds `dir/multiproto.pid`. A missing pidfile (or directory) is "not running"; a held
/// lock without a pid gets [`PID_WAIT`] for the pid to appear. Errors: the pidfile cannot be opened or tested.
pub fn probe(dir: &Path) -> io::Result<Probe> {
    probe_within(dir, PID_WAIT)
}

fn probe_within(dir: &Path, pid_wait: Duration) -> io::Result<Probe> {
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
    let end = Instant::now() + pid_wait;
    let mut pid = read_pid(&file);
    while pid.is_none() && Instant::now() < end {
        std::thread::sleep(POLL);
        if !lock_held(&file)? {
            return Ok(Probe::NotRunning { stale: None });
        }
        pid = read_pid(&file);
    }
    Ok(Probe::Running {
        pid,
        holder: Holder(file),
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_dir::TempDir;

    fn me() -> i32 {
        std::process::id() as i32
    }

    #[test]
    fn no_pidfile_is_not_running() {
        let d = TempDir::new("pidfile-none");
        assert!(matches!(
            probe(d.path()).unwrap(),
            Probe::NotRunning { stale: None }
        ));
        assert!(matches!(
            probe(&d.path().join("missing")).unwrap(),
            Probe::NotRunning { stale: None }
        ));
    }

    /// While held, a second lock attempt and a probe both see the holder's pid; once the lock's file
    /// description is closed, the pidfile is stale: a probe reports its pid and the next lock takes it over.
    #[test]
    fn held_lock_is_seen_then_taken_over() {
        let d = TempDir::new("pidfile-held");
        let (lock, stale) = PidLock::acquire(d.path()).unwrap();
        assert_eq!(stale, None);
        assert_eq!(lock.path(), d.path().join(PIDFILE));
        lock.write_pid().unwrap();
        assert_eq!(
            fs::read_to_string(lock.path()).unwrap(),
            format!("{}\n", me())
        );

        match PidLock::acquire_within(d.path(), Duration::ZERO) {
            Err(LockError::Running(pid)) => assert_eq!(pid, Some(me())),
            other => panic!("{other:?}"),
        }
        let holder = match probe(d.path()).unwrap() {
            Probe::Running { pid, holder } => {
                assert_eq!(pid, Some(me()));
                holder
            }
            other => panic!("{other:?}"),
        };
        assert!(!holder.released());
        // Held, and the deadline has passed: no wait.
        assert!(!holder.wait_exit(me(), Instant::now()));

        drop(lock);
        assert!(holder.released());
        match probe(d.path()).unwrap() {
            Probe::NotRunning { stale } => assert_eq!(stale, Some(me())),
            other => panic!("{other:?}"),
        }
        let (again, stale) = PidLock::acquire(d.path()).unwrap();
        assert_eq!(stale, Some(me()));
        // Taken over and emptied until the new daemon writes its pid.
        assert_eq!(fs::read_to_string(again.path()).unwrap(), "");
        again.remove();
        assert!(!d.path().join(PIDFILE).exists());
        assert!(matches!(
            probe(d.path()).unwrap(),
            Probe::NotRunning { stale: None }
        ));
    }

    /// A held lock whose pid is not written yet reads as running with no pid once the wait is over.
    #[test]
    fn held_lock_without_a_pid() {
        let d = TempDir::new("pidfile-nopid");
        let (_lock, _) = PidLock::acquire(d.path()).unwrap();
        assert!(matches!(
            probe_within(d.path(), Duration::ZERO).unwrap(),
            Probe::Running { pid: None, .. }
        ));
        assert!(matches!(
            PidLock::acquire_within(d.path(), Duration::ZERO),
            Err(LockError::Running(None))
        ));
    }

    #[test]
    fn pids_read_from_the_file() {
        let d = TempDir::new("pidfile-read");
        let path = d.path().join("p");
        for (text, want) in [
            ("42\n", Some(42)),
            (" 7 ", Some(7)),
            ("", None),
            ("0\n", None),
            ("-5\n", None),
            ("abc\n", None),
            ("99999999999\n", None),
        ] {
            fs::write(&path, text).unwrap();
            assert_eq!(read_pid(&File::open(&path).unwrap()), want, "{text:?}");
        }
    }

    #[test]
    fn this_process_is_not_gone() {
        assert!(!process_gone(me()));
    }
}
