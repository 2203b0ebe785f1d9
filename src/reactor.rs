//! The single-threaded mio loop: readiness, signals, stdin and the reactor's own timers, and the only clock read.
//!
//! The reactor knows nothing about protocols. A program owns one [`Reactor`] plus its sans-IO cores and runs:
//!
//! ```no_run
//! # use multiproto::reactor::{Reactor, ReactorEvent};
//! # fn core_poll_timeout() -> Option<multiproto::time::Instant> { None }
//! # fn main() -> std::io::Result<()> {
//! let mut reactor = Reactor::new()?;
//! let mut events = Vec::with_capacity(256); // reused every turn: no allocation per turn
//! loop {
//!     // Sleep until I/O, a signal, one of the reactor's timers, or the cores' own deadline.
//!     reactor.turn(core_poll_timeout(), &mut events)?;
//!     let now = reactor.now(); // the same value for everything done in this turn
//!     for event in &events {
//!         match *event {
//!             ReactorEvent::Io(token, readiness) => { /* read until WouldBlock, feed the cores */ }
//!             ReactorEvent::Signal(signal) => { /* SIGTERM: shut down */ }
//!             ReactorEvent::Timer { key, .. } => { /* a timer armed with `reactor.arm` */ }
//!         }
//!     }
//!     // core.handle_timeout(now); drain poll_transmit / poll_event; flush the send batch.
//! #   let _ = now; break;
//! }
//! # Ok(()) }
//! ```
//!
//! Because events land in a caller-owned buffer rather than a callback, the caller can use `&mut Reactor` (arm
//! timers, register sockets) while it walks them.
//!
//! # Time
//!
//! [`Reactor::now`] is read from the monotonic clock once per turn, right after `epoll_wait` returns, and is
//! what every core sees for that turn. The poll timeout is computed from the previous turn's `now`, so a turn
//! that spends `p` ms of CPU between polls delays a deadline by up to `p` ms beyond the 1 ms rounding; under that
//! kind of load the next poll returns at once anyway.
//!
//! # Tokens
//!
//! Fixed sources (the UDP socket, multicast, listener, signalfd, stdin) use constant tokens chosen by the
//! program, all below the `base` of a [`Sources`] map, which hands out tokens for dynamic sources (connections).
//! Those tokens carry a generation, so an event for a connection that was closed and whose slot was reused within
//! the same turn is not mistaken for the new one.

pub mod udp;

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use slab::Slab;

use crate::time::{self, Instant};
use crate::wheel::{TimerId, TimerWheel};

/// Readiness flags of one I/O event, as reported by epoll (edge-triggered: drain until `WouldBlock`).
///
/// An `error` or `read_closed` flag also deserves a read: that is where the error or EOF is reported (for the
/// UDP socket with `IP_RECVERR`, `error` means the error queue needs draining, see [`udp::read_errors`]).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    /// Data (or a connection, or EOF) can be read.
    pub readable: bool,
    /// Output can be written; only reported while `WRITABLE` interest is registered.
    pub writable: bool,
    /// The source has a pending error (`EPOLLERR`).
    pub error: bool,
    /// The peer closed its writing side, or the fd hung up.
    pub read_closed: bool,
    /// Our writing side is closed (hang-up).
    pub write_closed: bool,
}

impl Readiness {
    /// Readiness of a source that is always readable (stdin redirected from a file): read it until EOF.
    pub const READABLE: Readiness = Readiness {
        readable: true,
        writable: false,
        error: false,
        read_closed: false,
        write_closed: false,
    };
}

impl From<&mio::event::Event> for Readiness {
    fn from(event: &mio::event::Event) -> Self {
        Readiness {
            readable: event.is_readable(),
            writable: event.is_writable(),
            error: event.is_error(),
            read_closed: event.is_read_closed(),
            write_closed: event.is_write_closed(),
        }
    }
}

/// One thing that happened during a [`Reactor::turn`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ReactorEvent {
    /// A registered source (or stdin, see [`Reactor::watch_stdin`]) is ready.
    Io(Token, Readiness),
    /// A signal watched with [`Reactor::watch_signals`] was received (once per delivery that the kernel did not
    /// merge: standard signals raised twice before being read arrive once).
    Signal(Signal),
    /// A timer armed with [`Reactor::arm`] expired.
    Timer {
        /// The id `arm` returned; it is stale from now on.
        id: TimerId,
        /// The caller's key given to `arm`.
        key: u64,
    },
}

struct SignalWatch {
    fd: SignalFd,
    mask: SigSet,
    token: Token,
}

struct InputWatch {
    fd: RawFd,
    token: Token,
    /// False when epoll refused the fd (regular file, `/dev/null`): it is then reported readable every turn.
    pollable: bool,
    /// Reported readable in the last turn; the registration is re-armed before the next poll (see `turn`).
    reported: bool,
}

/// The event loop: a `mio::Poll`, the reactor's timer wheel, signalfd and stdin handling, and the cached clock.
pub struct Reactor {
    poll: Poll,
    events: Events,
    timers: TimerWheel<u64>,
    start: std::time::Instant,
    now: Instant,
    /// How far past its wake-up deadline the last turn woke (see `lateness`).
    lateness: Duration,
    /// Wall-clock time when the reactor was created, in ms since the Unix epoch.
    start_wall_ms: u64,
    signals: Option<SignalWatch>,
    input: Option<InputWatch>,
}

impl Reactor {
    /// A reactor with room for 1024 readiness events per turn; [`now`](Self::now) starts at zero.
    pub fn new() -> io::Result<Reactor> {
        Self::with_events_capacity(1024)
    }

    /// A reactor that takes up to `events` readiness events from each `epoll_wait`; more wait for the next turn.
    pub fn with_events_capacity(events: usize) -> io::Result<Reactor> {
        Ok(Reactor {
            poll: Poll::new()?,
            events: Events::with_capacity(events.max(1)),
            timers: TimerWheel::new(),
            start: std::time::Instant::now(),
            now: Instant::ZERO,
            lateness: Duration::ZERO,
            start_wall_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            signals: None,
            input: None,
        })
    }

    /// Wall-clock time of the current turn, in ms since the Unix epoch: the creation time plus monotonic time
    /// since, so it never jumps with clock adjustments (timestamps users see, not timers).
    pub fn wall_ms(&self) -> u64 {
        self.start_wall_ms + self.now.as_millis()
    }

    /// How much later than it asked to the current turn woke up: about zero normally, seconds if the process
    /// was stopped (SIGSTOP), the machine suspended, or the loop starved. Cores use it to avoid judging peers
    /// on silences they could not have heard (see `Endpoint::handle_stall`).
    pub fn lateness(&self) -> Duration {
        self.lateness
    }

    /// The time read at the start of the current turn, in µs since the reactor was created. Hand this to the cores.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Where sources are registered, reregistered (e.g. adding `WRITABLE` while output is queued) and deregistered.
    pub fn registry(&self) -> &Registry {
        self.poll.registry()
    }

    /// Arms one of the reactor's own timers: at `at` (rounded up to the next ms), a turn reports
    /// [`ReactorEvent::Timer`] with `key`. A time in the past fires in the next turn.
    pub fn arm(&mut self, at: Instant, key: u64) -> TimerId {
        self.timers.arm(at, key)
    }

    /// Cancels a timer armed with [`arm`](Self::arm) and returns its key; `None` if it already fired or was
    /// cancelled (ids are generation-checked, so a stale id never cancels another timer).
    pub fn cancel(&mut self, id: TimerId) -> Option<u64> {
        self.timers.cancel(id)
    }

    /// Blocks `signals` in the calling thread and delivers them through a signalfd registered with `token`;
    /// each one received shows up as [`ReactorEvent::Signal`]. Calling it again adds to the set (and moves the
    /// registration to the new token).
    ///
    /// Call it from the thread that runs the loop, before spawning any other thread: threads inherit the mask,
    /// and a process-directed signal is delivered to any thread that has it unblocked. The signals stay blocked
    /// after the reactor is dropped.
    pub fn watch_signals(&mut self, signals: &[Signal], token: Token) -> io::Result<()> {
        let mut mask = self.signals.as_ref().map_or_else(SigSet::empty, |w| w.mask);
        for &signal in signals {
            mask.add(signal);
        }
        // Block before the signalfd exists: a signal arriving in between must wait as pending, not run its
        // default action (which for SIGTERM/SIGINT would kill us).
        mask.thread_block()?;
        match &mut self.signals {
            Some(watch) => {
                watch.fd.set_mask(&mask)?;
                watch.mask = mask;
                if watch.token != token {
                    let raw = watch.fd.as_raw_fd();
                    self.poll.registry().reregister(
                        &mut SourceFd(&raw),
                        token,
                        Interest::READABLE,
                    )?;
                    watch.token = token;
                }
            }
            None => {
                let fd =
                    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
                let raw = fd.as_raw_fd();
                self.poll
                    .registry()
                    .register(&mut SourceFd(&raw), token, Interest::READABLE)?;
                self.signals = Some(SignalWatch { fd, mask, token });
            }
        }
        Ok(())
    }

    /// Reports stdin (fd 0) as [`ReactorEvent::Io`] with `token` whenever it has input.
    ///
    /// Contract for the caller, per report: call `read` on fd 0 **once** (stdin stays blocking, because making
    /// it non-blocking would also change the terminal shared with the shell). The reactor re-arms the
    /// registration before the next poll, so input still buffered is reported again. When `read` returns 0 (EOF)
    /// or an error, call [`unwatch_stdin`](Self::unwatch_stdin).
    ///
    /// If stdin is a regular file or `/dev/null`, epoll refuses it (`EPERM`); such input never blocks, so it is
    /// then reported readable in every turn (and turns do not sleep) until `unwatch_stdin`.
    pub fn watch_stdin(&mut self, token: Token) -> io::Result<()> {
        self.watch_input(libc::STDIN_FILENO, token)
    }

    /// Stops reporting stdin (after EOF, or when the program no longer wants input).
    pub fn unwatch_stdin(&mut self) {
        if let Some(input) = self.input.take()
            && input.pollable
        {
            // Failure only means it was no longer registered (e.g. fd 0 was closed): nothing to undo.
            let _ = self.poll.registry().deregister(&mut SourceFd(&input.fd));
        }
    }

    /// `watch_stdin` for any fd, so tests can use pipes and files without touching the process's fd 0.
    fn watch_input(&mut self, fd: RawFd, token: Token) -> io::Result<()> {
        self.unwatch_stdin();
        let pollable =
            match self
                .poll
                .registry()
                .register(&mut SourceFd(&fd), token, Interest::READABLE)
            {
                Ok(()) => true,
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => false,
                Err(e) => return Err(e),
            };
        self.input = Some(InputWatch {
            fd,
            token,
            pollable,
            reported: false,
        });
        Ok(())
    }

    /// One loop iteration: waits for readiness until the earliest of the reactor's timers and `extra_deadline`
    /// (the cores' `poll_timeout`; `None` means no deadline), refreshes [`now`](Self::now) once, then fills `out`
    /// (cleared first) with readiness events, received signals and expired reactor timers, in that order.
    ///
    /// An `EINTR` from `epoll_wait` ends the turn early with whatever timers are due, which is equivalent to a
    /// retry: the caller's next turn recomputes the timeout from a fresh clock.
    pub fn turn(
        &mut self,
        extra_deadline: Option<Instant>,
        out: &mut Vec<ReactorEvent>,
    ) -> io::Result<()> {
        out.clear();
        if let Some(input) = &mut self.input
            && input.pollable
            && input.reported
        {
            // Edge-triggered epoll only reports new input, but the caller read at most one chunk from a
            // blocking fd. EPOLL_CTL_MOD re-checks readiness, so leftover input is reported again.
            input.reported = false;
            let rearmed = self.poll.registry().reregister(
                &mut SourceFd(&input.fd),
                input.token,
                Interest::READABLE,
            );
            if let Err(e) = rearmed {
                // The fd went away without `unwatch_stdin`; losing stdin must not stop the loop.
                log::warn!("stdin: cannot re-arm ({e}); no longer watching it");
                self.input = None;
            }
        }

        let timeout = self.poll_timeout(extra_deadline);
        let wake_by = timeout.map(|t| self.now + t);
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => self.events.clear(),
            Err(e) => return Err(e),
        }
        self.now = Instant::from_micros(time::duration_micros(self.start.elapsed()));
        self.lateness = wake_by.map_or(Duration::ZERO, |w| self.now.saturating_since(w));

        for event in self.events.iter() {
            let token = event.token();
            if let Some(watch) = self.signals.as_ref().filter(|w| w.token == token) {
                drain_signals(&watch.fd, out);
                continue;
            }
            if let Some(input) = self.input.as_mut().filter(|i| i.token == token) {
                input.reported = true;
            }
            out.push(ReactorEvent::Io(token, Readiness::from(event)));
        }
        if let Some(input) = self.input.as_ref().filter(|i| !i.pollable) {
            out.push(ReactorEvent::Io(input.token, Readiness::READABLE));
        }
        while let Some((id, key)) = self.timers.poll_expired(self.now) {
            out.push(ReactorEvent::Timer { id, key });
        }
        Ok(())
    }

    /// How long `epoll_wait` may sleep; `None` blocks until an event.
    fn poll_timeout(&self, extra_deadline: Option<Instant>) -> Option<Duration> {
        if self.input.as_ref().is_some_and(|i| !i.pollable) {
            return Some(Duration::ZERO);
        }
        let deadline = match (self.timers.next_deadline(), extra_deadline) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        // Rounded up to whole ms by mio, so a wake-up is never before the deadline.
        Some(deadline.saturating_since(self.now))
    }
}

/// Reads every pending signal (the fd is non-blocking and edge-triggered, so stopping early would lose wake-ups).
fn drain_signals(fd: &SignalFd, out: &mut Vec<ReactorEvent>) {
    loop {
        match fd.read_signal() {
            Ok(Some(info)) => match Signal::try_from(info.ssi_signo as libc::c_int) {
                Ok(signal) => out.push(ReactorEvent::Signal(signal)),
                Err(_) => log::debug!("signalfd: unknown signal number {}", info.ssi_signo),
            },
            Ok(None) => break,
            Err(Errno::EINTR) => continue,
            Err(e) => {
                log::warn!("signalfd read failed: {e}");
                break;
            }
        }
    }
}

/// Token → value map for dynamic sources (connections), backed by a [`Slab`].
///
/// Tokens are `base + key` in the low 32 bits and a per-insert generation in the high 32 bits, so tokens below
/// `base` stay free for fixed sources, and an event carrying the token of a removed entry is never delivered to a
/// later entry that reuses its slot: [`get`](Self::get) returns `None` for unknown and stale tokens alike.
///
/// Requires a 64-bit `usize` (mio tokens are `usize`).
#[derive(Debug)]
pub struct Sources<T> {
    slab: Slab<Entry<T>>,
    base: usize,
    next_generation: u32,
}

#[derive(Debug)]
struct Entry<T> {
    generation: u32,
    value: T,
}

const _: () = assert!(
    usize::BITS == 64,
    "Sources packs a generation into the high half of mio tokens"
);
const LOW: usize = 0xFFFF_FFFF;

impl<T> Sources<T> {
    /// An empty map whose tokens start at `base`; every token below it is left for fixed sources.
    ///
    /// # Panics
    ///
    /// If `base` does not fit in 32 bits.
    pub fn new(base: Token) -> Self {
        assert!(base.0 < LOW, "Sources base token must fit in 32 bits");
        Sources {
            slab: Slab::new(),
            base: base.0,
            next_generation: 0,
        }
    }

    /// The token the next [`insert`](Self::insert) will return, so a source can be registered with it first
    /// (registration can fail, and then nothing needs to be removed again).
    pub fn next_token(&self) -> Token {
        self.token(self.slab.vacant_key(), self.next_generation)
    }

    /// Stores `value` and returns its token.
    ///
    /// # Panics
    ///
    /// If the map already holds `2^32 - base` entries.
    pub fn insert(&mut self, value: T) -> Token {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let key = self.slab.insert(Entry { generation, value });
        assert!(self.base + key < LOW, "Sources: out of tokens");
        self.token(key, generation)
    }

    /// The value for `token`, or `None` if the token is a fixed one, unknown, or of a removed entry.
    pub fn get(&self, token: Token) -> Option<&T> {
        let (key, generation) = self.split(token)?;
        let entry = self.slab.get(key)?;
        (entry.generation == generation).then_some(&entry.value)
    }

    /// Mutable access to the value for `token`; `None` as for [`get`](Self::get).
    pub fn get_mut(&mut self, token: Token) -> Option<&mut T> {
        let (key, generation) = self.split(token)?;
        let entry = self.slab.get_mut(key)?;
        (entry.generation == generation).then_some(&mut entry.value)
    }

    /// Removes and returns the value for `token`; `None` (and no change) for unknown or stale tokens.
    pub fn remove(&mut self, token: Token) -> Option<T> {
        self.get(token)?;
        let (key, _) = self.split(token)?;
        Some(self.slab.remove(key).value)
    }

    /// True if `token` belongs to a live entry.
    pub fn contains(&self, token: Token) -> bool {
        self.get(token).is_some()
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// True when no entry is live.
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// All live entries with their tokens, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (Token, &T)> + '_ {
        self.slab
            .iter()
            .map(|(key, entry)| (self.token(key, entry.generation), &entry.value))
    }

    fn token(&self, key: usize, generation: u32) -> Token {
        Token(((generation as usize) << 32) | (self.base + key))
    }

    fn split(&self, token: Token) -> Option<(usize, u32)> {
        let low = token.0 & LOW;
        let key = low.checked_sub(self.base)?;
        Some((key, (token.0 >> 32) as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::SocketAddr;
    use std::os::fd::AsRawFd;

    /// Runs turns until `pred` has seen what it wants or `limit` of wall time passed; returns whether it did.
    fn turn_until(
        reactor: &mut Reactor,
        limit: Duration,
        mut pred: impl FnMut(&mut Reactor, &ReactorEvent) -> bool,
    ) -> bool {
        let give_up = std::time::Instant::now() + limit;
        let mut events = Vec::new();
        while std::time::Instant::now() < give_up {
            // Never sleep past the limit, whatever is armed.
            let cap = reactor.now() + Duration::from_millis(50);
            reactor.turn(Some(cap), &mut events).unwrap();
            for event in &events {
                if pred(reactor, event) {
                    return true;
                }
            }
        }
        false
    }

    #[test]
    fn timer_fires_through_turn_after_its_deadline() {
        let mut reactor = Reactor::new().unwrap();
        let deadline = reactor.now() + Duration::from_millis(20);
        let id = reactor.arm(deadline, 7);
        let cancelled = reactor.arm(deadline, 8);
        assert_eq!(reactor.cancel(cancelled), Some(8));
        let mut events = Vec::new();
        let mut fired = None;
        for _ in 0..100 {
            // No extra deadline: the wheel alone must wake the loop.
            reactor.turn(None, &mut events).unwrap();
            if let Some(ReactorEvent::Timer { id: got, key }) = events.first().copied() {
                fired = Some((got, key, reactor.now()));
                break;
            }
        }
        let (got, key, at) = fired.expect("timer never fired");
        assert_eq!((got, key), (id, 7));
        assert!(at >= deadline, "fired early: {at:?} < {deadline:?}");
        assert_eq!(events.len(), 1, "cancelled timer must not fire: {events:?}");
        assert_eq!(reactor.cancel(id), None);
    }

    #[test]
    fn extra_deadline_bounds_the_sleep() {
        let mut reactor = Reactor::new().unwrap();
        let mut events = vec![ReactorEvent::Signal(Signal::SIGHUP)];
        let deadline = reactor.now() + Duration::from_millis(15);
        let wall = std::time::Instant::now();
        while reactor.now() < deadline {
            reactor.turn(Some(deadline), &mut events).unwrap();
            assert!(
                events.is_empty(),
                "buffer is cleared and nothing happened: {events:?}"
            );
        }
        assert!(wall.elapsed() >= Duration::from_millis(15));
        assert!(wall.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn udp_socket_readiness_is_reported() {
        const UDP: Token = Token(1);
        let mut reactor = Reactor::new().unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut rx = mio::net::UdpSocket::bind(any).unwrap();
        let tx = std::net::UdpSocket::bind(any).unwrap();
        reactor
            .registry()
            .register(&mut rx, UDP, Interest::READABLE)
            .unwrap();
        tx.send_to(b"ping", rx.local_addr().unwrap()).unwrap();
        let mut got = None;
        let seen = turn_until(&mut reactor, Duration::from_secs(5), |_, event| {
            if let ReactorEvent::Io(UDP, readiness) = *event {
                assert!(readiness.readable);
                let mut buf = [0u8; 16];
                let (n, from) = rx.recv_from(&mut buf).unwrap();
                got = Some((buf[..n].to_vec(), from));
                return true;
            }
            false
        });
        assert!(seen, "no readiness for the UDP socket");
        assert_eq!(got, Some((b"ping".to_vec(), tx.local_addr().unwrap())));
    }

    #[test]
    fn signals_arrive_through_signalfd() {
        const SIGNALS: Token = Token(2);
        let mut reactor = Reactor::new().unwrap();
        reactor.watch_signals(&[Signal::SIGUSR1], SIGNALS).unwrap();
        // Adding a second signal keeps the first.
        reactor.watch_signals(&[Signal::SIGUSR2], SIGNALS).unwrap();
        // `raise` targets the calling thread, which is the one that blocked the signals and reads the signalfd,
        // so the multithreaded test harness cannot steal or be killed by them.
        nix::sys::signal::raise(Signal::SIGUSR1).unwrap();
        nix::sys::signal::raise(Signal::SIGUSR2).unwrap();
        let mut seen = Vec::new();
        turn_until(&mut reactor, Duration::from_secs(5), |_, event| {
            if let ReactorEvent::Signal(s) = *event {
                seen.push(s);
            }
            assert!(
                !matches!(event, ReactorEvent::Io(SIGNALS, _)),
                "signalfd leaked"
            );
            seen.len() == 2
        });
        seen.sort_by_key(|s| *s as i32);
        assert_eq!(seen, vec![Signal::SIGUSR1, Signal::SIGUSR2]);
    }

    #[test]
    fn unpollable_input_is_always_readable_and_does_not_block() {
        const STDIN: Token = Token(3);
        for path in ["/dev/null", "/proc/self/status"] {
            let file = std::fs::File::open(path).unwrap();
            let mut reactor = Reactor::new().unwrap();
            reactor.watch_input(file.as_raw_fd(), STDIN).unwrap();
            assert!(
                !reactor.input.as_ref().unwrap().pollable,
                "{path} should be refused by epoll"
            );
            let mut events = Vec::new();
            let wall = std::time::Instant::now();
            // Even with no deadline at all, the turn must not sleep.
            reactor.turn(None, &mut events).unwrap();
            assert!(wall.elapsed() < Duration::from_secs(1));
            assert_eq!(events, vec![ReactorEvent::Io(STDIN, Readiness::READABLE)]);
            reactor.turn(None, &mut events).unwrap();
            assert_eq!(events, vec![ReactorEvent::Io(STDIN, Readiness::READABLE)]);
            // After EOF the caller unwatches, and turns sleep normally again.
            reactor.unwatch_stdin();
            let soon = reactor.now() + Duration::from_millis(5);
            reactor.turn(Some(soon), &mut events).unwrap();
            assert!(events.is_empty());
        }
    }

    #[test]
    fn pipe_input_is_reported_again_while_data_remains() {
        const STDIN: Token = Token(3);
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        let mut reader = std::fs::File::from(read_end);
        let mut writer = std::fs::File::from(write_end);
        let mut reactor = Reactor::new().unwrap();
        reactor.watch_input(reader.as_raw_fd(), STDIN).unwrap();
        assert!(reactor.input.as_ref().unwrap().pollable);
        writer.write_all(b"ab").unwrap();

        // The caller reads one byte per report (as a line-at-a-time tty read would leave the rest); each
        // report must still come, though epoll is edge-triggered and no new data arrives.
        let mut got = Vec::new();
        turn_until(&mut reactor, Duration::from_secs(5), |_, event| {
            if let ReactorEvent::Io(STDIN, r) = *event {
                assert!(r.readable);
                let mut byte = [0u8; 1];
                assert_eq!(reader.read(&mut byte).unwrap(), 1);
                got.push(byte[0]);
            }
            got.len() == 2
        });
        assert_eq!(got, b"ab");
        // Drained: no more reports.
        let mut events = Vec::new();
        let soon = reactor.now() + Duration::from_millis(20);
        reactor.turn(Some(soon), &mut events).unwrap();
        reactor.turn(Some(soon), &mut events).unwrap();
        assert!(events.is_empty(), "{events:?}");
        // EOF is reported too, so the caller can see read() == 0 and unwatch.
        drop(writer);
        let eof = turn_until(&mut reactor, Duration::from_secs(5), |r, event| {
            if let ReactorEvent::Io(STDIN, _) = *event {
                let mut byte = [0u8; 1];
                assert_eq!(reader.read(&mut byte).unwrap(), 0);
                r.unwatch_stdin();
                return true;
            }
            false
        });
        assert!(eof);
    }

    #[test]
    fn sources_map_tokens_and_ignore_fixed_unknown_and_stale_ones() {
        let mut sources = Sources::new(Token(16));
        assert!(sources.is_empty());
        let next = sources.next_token();
        let a = sources.insert("a");
        assert_eq!(a, next);
        let b = sources.insert("b");
        assert!(a.0 >= 16 && b.0 >= 16 && a != b);
        assert_eq!(sources.get(a), Some(&"a"));
        *sources.get_mut(b).unwrap() = "B";
        assert_eq!(sources.get(b), Some(&"B"));
        assert_eq!(sources.len(), 2);
        // Fixed tokens below the base, and tokens never handed out.
        assert_eq!(sources.get(Token(0)), None);
        assert_eq!(sources.get(Token(15)), None);
        assert_eq!(sources.get(Token(16 + 1000)), None);
        assert_eq!(sources.remove(Token(3)), None);
        // A removed entry's token stays dead even after its slot is reused.
        assert_eq!(sources.remove(a), Some("a"));
        assert_eq!(sources.remove(a), None);
        let c = sources.insert("c");
        assert_eq!(c.0 & LOW, a.0 & LOW, "slot reused");
        assert_ne!(c, a);
        assert_eq!(sources.get(a), None);
        assert_eq!(sources.get_mut(a), None);
        assert!(!sources.contains(a));
        assert_eq!(sources.remove(a), None);
        assert_eq!(sources.get(c), Some(&"c"));
        let mut all: Vec<_> = sources.iter().map(|(t, v)| (t, *v)).collect();
        all.sort();
        let mut expected = vec![(b, "B"), (c, "c")];
        expected.sort();
        assert_eq!(all, expected);
    }

    #[test]
    fn sources_tokens_work_with_mio() {
        let mut reactor = Reactor::new().unwrap();
        let mut sources = Sources::new(Token(8));
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut sock = mio::net::UdpSocket::bind(any).unwrap();
        let token = sources.next_token();
        reactor
            .registry()
            .register(&mut sock, token, Interest::READABLE)
            .unwrap();
        let addr = sock.local_addr().unwrap();
        assert_eq!(sources.insert(sock), token);
        std::net::UdpSocket::bind(any)
            .unwrap()
            .send_to(b"x", addr)
            .unwrap();
        let seen = turn_until(
            &mut reactor,
            Duration::from_secs(5),
            |_, event| matches!(*event, ReactorEvent::Io(t, _) if sources.get(t).is_some()),
        );
        assert!(seen);
    }
}
