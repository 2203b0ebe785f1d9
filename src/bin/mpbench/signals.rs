//! SIGINT, SIGTERM and SIGHUP: mpbench stops the daemon it started, then exits with 128 + the signal's number
//! (130 for Ctrl-C).
//!
//! [`install`] blocks the three signals before any other thread exists (threads inherit the mask, and
//! `std::process::Command` clears it in the processes it starts, so `mpd` keeps its own handling) and leaves
//! them to one watcher thread, which reads them from a signalfd. On the first one the watcher records it
//! ([`caught`]) and wakes the swarms' reactors ([`wake_on_signal`]). Every load loop checks [`check`] once per
//! turn and ends with an error, so the scenario unwinds as it does on any failure: the swarm leaves, the
//! daemon's guard runs `mpd stop`, and `main` returns 128 + the signal. Should that take longer than
//! [`GRACE`] (a phase that does not check, such as an `mpd` command under way), or a second signal come, the
//! watcher stops every daemon mpbench started itself and exits.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::daemon;

/// The signals that end a run.
const SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];
/// How long the main thread has to unwind (leave, `mpd stop`) after the first signal.
const GRACE: Duration = Duration::from_secs(15);

/// The first signal received, as its number; 0 while none has come.
static CAUGHT: AtomicI32 = AtomicI32::new(0);
/// Reactors to wake when a signal comes, so a loop waiting for its next deadline sees it at once.
static WAKERS: Mutex<Vec<Weak<Waker>>> = Mutex::new(Vec::new());

/// Blocks [`SIGNALS`] in the calling thread and starts the watcher. Call it first in `main`, before any
/// other thread is started.
pub fn install() -> io::Result<()> {
    let mut mask = SigSet::empty();
    for s in SIGNALS {
        mask.add(s);
    }
    mask.thread_block()?;
    let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut SourceFd(&fd.as_raw_fd()), Token(0), Interest::READABLE)?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || watch(&fd, poll))?;
    Ok(())
}

/// The signal that ended the run, if one came.
pub fn caught() -> Option<Signal> {
    match CAUGHT.load(Ordering::Relaxed) {
        0 => None,
        n => Signal::try_from(n).ok(),
    }
}

/// The exit status for a run ended by `signal`: 128 + its number.
pub fn exit_code(signal: Signal) -> u8 {
    (128 + signal as i32) as u8
}

/// An error once a signal came: load loops call it every turn and stop with it.
pub fn check() -> io::Result<()> {
    match caught() {
        None => Ok(()),
        Some(s) => Err(io::Error::new(
            io::ErrorKind::Interrupted,
            format!("interrupted by {s}"),
        )),
    }
}

/// Wakes `waker` (registered in a loop's poll) when a signal comes. The watcher holds it weakly: dropping
/// the returned `Arc` is enough to forget it.
pub fn wake_on_signal(waker: Waker) -> Arc<Waker> {
    let waker = Arc::new(waker);
    let mut all = WAKERS.lock().unwrap_or_else(|e| e.into_inner());
    all.retain(|w| w.strong_count() > 0);
    all.push(Arc::downgrade(&waker));
    waker
}

/// The watcher thread: records the first signal and wakes the loops, then gives the main thread [`GRACE`]
/// to finish; past it, or at a second signal, stops the daemons itself and exits.
fn watch(fd: &SignalFd, mut poll: Poll) {
    let mut events = Events::with_capacity(4);
    let mut deadline: Option<Instant> = None;
    loop {
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if timeout == Some(Duration::ZERO) {
            break;
        }
        if let Err(e) = poll.poll(&mut events, timeout)
            && e.kind() != io::ErrorKind::Interrupted
        {
            eprintln!("mpbench: signal watcher: {e}");
            return;
        }
        let mut second = false;
        while let Ok(Some(info)) = fd.read_signal() {
            let first = CAUGHT
                .compare_exchange(
                    0,
                    info.ssi_signo as i32,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok();
            if first {
                let all = WAKERS.lock().unwrap_or_else(|e| e.into_inner());
                for w in all.iter().filter_map(Weak::upgrade) {
                    let _ = w.wake();
                }
                deadline = Some(Instant::now() + GRACE);
            } else {
                second = true;
            }
        }
        if second {
            break;
        }
    }
    let signal = caught().unwrap_or(Signal::SIGTERM);
    eprintln!("mpbench: {signal}: stopping the daemon and exiting");
    daemon::stop_started();
    std::process::exit(i32::from(exit_code(signal)));
}
