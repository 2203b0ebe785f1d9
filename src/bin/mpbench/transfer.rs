//! `transfer` (issue 16): one file sent peer to peer, encrypted, on loopback, beside a raw loopback TCP copy
//! of the same bytes in the same run; the receiver's memory growth during the transfer; and chat latency
//! between the same two peers while it runs.
//!
//! The receiver is another process: mpbench run again with the hidden subcommand [`RECEIVER`], which builds
//! a [`ChatIo`] the way `mpc listen --accept-files` does (without a daemon: the sender writes to its address,
//! [`Target::Addr`], and each side is given the other's key) and accepts every offer into its directory. Its
//! memory is its own, so `/proc/PID/status` says what the transfer cost it. The same process also receives
//! the raw copy, on a thread of its own, before the transfer: the bytes read from the same file, written to
//! the same directory, and made durable (one `fsync` at the end), so the two differ by what the transfer
//! adds (Noise encryption, framing, hashing on both sides, a sync per MiB that makes VERIFIED mean "on disk",
//! the reactor) and not by where the bytes go.
//!
//! The sender is this process: a [`ChatIo`] on its own reactor, [`Files::send`] to the receiver's chat
//! port. Listing the file hashes it (BLAKE3) before the offer, so the transfer is timed from the offer to
//! DONE, and the listing is shown on its own. Every [`CHAT_EVERY`] during the transfer it sends the
//! receiver a chat message, which goes on a connection of its own, and times it from `send` to the ACK.
//!
//! Bounded: every phase has a deadline, the receiver is killed by its PID when mpbench leaves the scenario
//! by any path (and by the kernel, through `PR_SET_PDEATHSIG`, if mpbench itself is killed), and the
//! temporary directory is removed. Both copies are checked: the file received by the transfer and the one
//! received by the raw copy must hash (BLAKE3, read back from disk here) to the source's hash, or the
//! scenario fails.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant as StdInstant};

use mio::Token;

use multiproto::io::chat::ChatIo;
use multiproto::nick::Nick;
use multiproto::peer::{Config, FileEvent, Peer, PeerEvent, SendError, Target};
use multiproto::reactor::{Reactor, ReactorEvent};
use multiproto::transfer::recv::RecvEvent;
use multiproto::transfer::send::SendEvent;

use crate::chat::chat_turn;
use crate::daemon::{ProcStats, proc_stats};
use crate::report::{Figures, Progress, round3, summary};

/// The hidden subcommand that runs the receiving side (`mpbench __transfer-receiver --dir D --parent PID
/// --limit SECS`).
pub const RECEIVER: &str = "__transfer-receiver";

/// Transfer scenario settings.
pub struct Params {
    /// Bytes in the file.
    pub size: u64,
    /// Where the temporary directory goes (a directory of its own is made in it, and removed).
    pub dir: PathBuf,
}

/// A chat message goes to the receiver this often while the transfer runs.
const CHAT_EVERY: Duration = Duration::from_millis(20);
/// The chat message (a line of ordinary length).
const TEXT: &str = "mpbench transfer: a chat message while a file is on its way.";
/// Reads and writes of the raw copy: 128 KiB, what `cat` and `cp` use for a regular file.
const RAW_BUF: usize = 128 * 1024;
/// The receiver must be listening within this long.
const START_LIMIT: Duration = Duration::from_secs(10);
/// The receiver must answer the offer within this long.
const ACCEPT_LIMIT: Duration = Duration::from_secs(10);
/// No verified progress for this long fails the transfer.
const STALL_LIMIT: Duration = Duration::from_secs(30);
/// Chat messages still unacknowledged at DONE must be within this long, and the receiver must have said
/// what it received.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// The slowest rate a phase may take, beyond a fixed minute, before it is given up (a machine this slow
/// gives no useful figure): 4 MiB/s, so 1 GiB may take 5 minutes.
const FLOOR_RATE: u64 = 4 << 20;
/// The receiver's memory is sampled this often during the transfer (its VmHWM catches what falls between).
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// The receiver looks at its stdin flag at least this often.
const STOP_CHECK: Duration = Duration::from_millis(50);

fn phase_limit(size: u64) -> Duration {
    Duration::from_secs(60 + size / FLOOR_RATE)
}

/// The key of the benchmark's user `name` (fixed, so runs compare; the handshakes' ephemeral keys are fresh).
fn identity_of(name: &str) -> multiproto::identity::Identity {
    multiproto::identity::Identity::from_secret(multiproto::secure::derive_seed(
        &[0x74; 32],
        &format!("mpbench transfer {name}"),
    ))
}

fn nick(s: &str) -> Result<Nick, String> {
    Nick::new(s).map_err(|e| format!("nickname {s}: {e}"))
}

fn err(what: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Clock ticks per second (`/proc/stat`'s unit).
fn ticks_per_s() -> u64 {
    // SAFETY: sysconf only reads a constant of the C library.
    match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        t if t > 0 => t as u64,
        _ => 100,
    }
}

fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    round3(bytes as f64 / (1 << 20) as f64 / d.as_secs_f64().max(1e-9))
}

/// A temporary directory, removed with everything in it on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(under: &Path) -> Result<TempDir, String> {
        let d = under.join(format!(
            "mpbench-transfer-{}-{:x}",
            std::process::id(),
            getrandom::u32().unwrap_or(0)
        ));
        std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        Ok(TempDir(d))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("mpbench: cannot remove {}: {e}", self.0.display());
        }
    }
}

/// Writes `size` bytes that differ everywhere (xorshift64*, so a block out of place shows) to `path`, syncs
/// them (so no writeback of the source runs during the measurements), and returns their BLAKE3 hash.
fn write_source(path: &Path, size: u64) -> Result<blake3::Hash, String> {
    let mut f = File::create(path).map_err(err("source file"))?;
    let mut h = blake3::Hasher::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for w in buf.chunks_exact_mut(8) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            w.copy_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        f.write_all(&buf[..n]).map_err(err("source file"))?;
        h.update(&buf[..n]);
        left -= n as u64;
    }
    f.sync_all().map_err(err("source file"))?;
    Ok(h.finalize())
}

/// The BLAKE3 hash and length of the file at `path`, read back from disk (as a sender hashes what it offers).
fn hash_file(path: &Path) -> Result<(blake3::Hash, u64), String> {
    let (n, h) = multiproto::io::file_hash::hash_file(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((h.into(), n))
}

/// The receiving process, killed by its PID on drop unless it was stopped.
struct ReceiverProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Its stdout, line by line, from a thread that reads it.
    lines: mpsc::Receiver<String>,
    reaped: bool,
}

impl ReceiverProcess {
    /// Starts `mpbench __transfer-receiver` writing into `dir`, and waits for its `ready` line; returns it
    /// with its chat and raw addresses.
    fn start(
        dir: &Path,
        limit: Duration,
    ) -> Result<(ReceiverProcess, SocketAddr, SocketAddr), String> {
        let exe = std::env::current_exe().map_err(err("mpbench's own path"))?;
        // Started from the main thread, which lives as long as mpbench: PR_SET_PDEATHSIG fires when the
        // thread that started the child ends, not the process.
        let mut child = Command::new(exe)
            .arg(RECEIVER)
            .arg("--dir")
            .arg(dir)
            .args(["--parent", &std::process::id().to_string()])
            .args(["--limit", &limit.as_secs().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(err("starting the receiver"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let (tx, lines) = mpsc::channel();
        let mut p = ReceiverProcess {
            child,
            stdin,
            lines,
            reaped: false,
        };
        let stdout = stdout.ok_or("the receiver's stdout")?;
        std::thread::Builder::new()
            .name("receiver-stdout".into())
            .spawn(move || {
                for l in BufReader::new(stdout).lines() {
                    let Ok(l) = l else { return };
                    if tx.send(l).is_err() {
                        return;
                    }
                }
            })
            .map_err(err("receiver stdout thread"))?;
        let ready = p.line(START_LIMIT, "ready")?;
        let addr = |w: Option<&str>| -> Result<SocketAddr, String> {
            let port: u16 = w
                .and_then(|w| w.parse().ok())
                .ok_or_else(|| format!("the receiver said {ready:?}"))?;
            Ok(SocketAddr::from(([127, 0, 0, 1], port)))
        };
        let mut w = ready.split_whitespace().skip(1);
        let chat = addr(w.next())?;
        let raw = addr(w.next())?;
        Ok((p, chat, raw))
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The receiver's next line, which must start with `word` (a `failed …` line is its error).
    fn line(&mut self, limit: Duration, word: &str) -> Result<String, String> {
        let t0 = StdInstant::now();
        loop {
            crate::signals::check().map_err(|e| e.to_string())?;
            let left = limit.saturating_sub(t0.elapsed());
            if left.is_zero() {
                return Err(format!(
                    "the receiver did not say {word:?} within {limit:?}"
                ));
            }
            match self.lines.recv_timeout(left.min(STOP_CHECK)) {
                Ok(l) if l.split_whitespace().next() == Some(word) => return Ok(l),
                Ok(l) if l.starts_with("failed") => return Err(format!("the receiver {l}")),
                Ok(l) => return Err(format!("the receiver said {l:?}, not {word:?}")),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.try_wait().ok().flatten();
                    return Err(format!(
                        "the receiver ended before saying {word:?} ({})",
                        status.map_or("still running".into(), |s| s.to_string())
                    ));
                }
            }
        }
    }

    /// Closes its stdin, which tells it to exit, and waits (bounded) for it; an exit other than 0 is an
    /// error.
    fn stop(&mut self) -> Result<(), String> {
        self.stdin = None;
        let t0 = StdInstant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) => {
                    self.reaped = true;
                    return if s.success() {
                        Ok(())
                    } else {
                        Err(format!("the receiver exited with {s}"))
                    };
                }
                Ok(None) if t0.elapsed() < START_LIMIT => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => {
                    return Err(format!("the receiver did not exit within {START_LIMIT:?}"));
                }
                Err(e) => return Err(format!("waiting for the receiver: {e}")),
            }
        }
    }
}

impl Drop for ReceiverProcess {
    fn drop(&mut self) {
        if !self.reaped {
            // SIGKILL to its own PID (the child we started), then reap it.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Resets the receiver's VmHWM to its current RSS (`/proc/PID/clear_refs`, "5"), so the peak read after
/// the transfer is the transfer's and not the raw copy's; false where the kernel refuses.
fn reset_hwm(pid: i32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Copies `src` to the receiver's raw port the plain way (read, write, no encryption, no framing) and waits
/// for its answer, which it sends once the copy is on disk; returns the time from connect to that answer.
fn raw_copy(src: &Path, to: SocketAddr, size: u64, limit: Duration) -> Result<Duration, String> {
    let t0 = StdInstant::now();
    let mut f = File::open(src).map_err(err("raw copy: source"))?;
    let mut s = TcpStream::connect(to).map_err(err("raw copy: connect"))?;
    // Every blocking call is bounded; the whole copy is checked against `limit` as it goes.
    s.set_write_timeout(Some(limit))
        .and_then(|()| s.set_read_timeout(Some(limit)))
        .map_err(err("raw copy"))?;
    let mut buf = vec![0u8; RAW_BUF];
    loop {
        crate::signals::check().map_err(|e| e.to_string())?;
        if t0.elapsed() > limit {
            return Err(format!("raw copy: not done within {limit:?}"));
        }
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("raw copy: reading the source: {e}")),
        };
        s.write_all(&buf[..n]).map_err(err("raw copy: send"))?;
    }
    s.shutdown(std::net::Shutdown::Write)
        .map_err(err("raw copy"))?;
    let mut answer = [0u8; 8];
    s.read_exact(&mut answer)
        .map_err(err("raw copy: the receiver's answer"))?;
    let elapsed = t0.elapsed();
    let got = u64::from_be_bytes(answer);
    if got != size {
        return Err(format!(
            "raw copy: the receiver wrote {got} of {size} bytes"
        ));
    }
    Ok(elapsed)
}

/// What the transfer phase measured.
struct Sent {
    /// Listing the file (BLAKE3 over it), before the offer.
    listing: Duration,
    /// From the offer to DONE.
    transfer: Duration,
    /// From the offer until the sender's loop saw the ACCEPT (after the turn that brought it).
    accept: Duration,
    /// Chat messages, `send` to ACK.
    chat: Vec<Duration>,
    /// Chat messages refused because the peer's queue for the receiver was full.
    chat_refused: u64,
    /// The receiver's memory before the offer, and the most RSS sampled during the transfer.
    before: ProcStats,
    rss_peak_kib: u64,
    /// CPU time of each process during the transfer.
    sender_cpu: Duration,
    receiver_before_cpu: Duration,
    /// Time the sender spent waiting in its reactor (for the socket, the receiver, the next chat message)
    /// from the offer to DONE.
    sender_idle: Duration,
    /// The machine's CPU time by kind over the transfer (`/proc/stat`).
    machine: CpuTimes,
}

/// The machine's CPU time by kind, in clock ticks, from the first line of `/proc/stat`.
#[derive(Copy, Clone, Debug, Default)]
struct CpuTimes {
    busy: u64,
    idle: u64,
    iowait: u64,
    steal: u64,
}

impl CpuTimes {
    /// Now; zeros where `/proc/stat` cannot be read (the figures are then zero, not wrong).
    fn read() -> CpuTimes {
        let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
            return CpuTimes::default();
        };
        // cpu user nice system idle iowait irq softirq steal guest guest_nice
        let v: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        let at = |i: usize| v.get(i).copied().unwrap_or(0);
        CpuTimes {
            busy: at(0) + at(1) + at(2) + at(5) + at(6),
            idle: at(3),
            iowait: at(4),
            steal: at(7),
        }
    }

    fn since(self, before: CpuTimes) -> CpuTimes {
        CpuTimes {
            busy: self.busy.saturating_sub(before.busy),
            idle: self.idle.saturating_sub(before.idle),
            iowait: self.iowait.saturating_sub(before.iowait),
            steal: self.steal.saturating_sub(before.steal),
        }
    }

    /// Each kind's share of the whole, in percent: busy, idle, iowait, steal.
    fn percent(self) -> [f64; 4] {
        let all = (self.busy + self.idle + self.iowait + self.steal).max(1) as f64;
        [self.busy, self.idle, self.iowait, self.steal].map(|t| round3(t as f64 * 100.0 / all))
    }
}

/// The sending peer.
struct SenderPeer {
    reactor: Reactor,
    io: ChatIo,
    events: Vec<ReactorEvent>,
    /// Time spent waiting in the reactor.
    idle: Duration,
}

impl SenderPeer {
    fn new() -> Result<SenderPeer, String> {
        let reactor = Reactor::new().map_err(err("sender reactor"))?;
        // Its listener is never connected to; ChatIo needs one, as mpc has one.
        let l = TcpListener::bind("127.0.0.1:0").map_err(err("sender listener"))?;
        let peer = Peer::new(Config::new(nick("alice")?, 1, identity_of("alice")));
        let io =
            ChatIo::new(l, peer, reactor.registry(), Token(1), Token(16)).map_err(err("sender"))?;
        Ok(SenderPeer {
            reactor,
            io,
            events: Vec::new(),
            idle: Duration::ZERO,
        })
    }

    /// One reactor turn, waiting until `until` at most; the peer's events go to `on`.
    fn turn(
        &mut self,
        until: StdInstant,
        mut on: impl FnMut(PeerEvent) -> Result<(), String>,
    ) -> Result<(), String> {
        crate::signals::check().map_err(|e| e.to_string())?;
        let wait = until.saturating_duration_since(StdInstant::now());
        let limit = self.reactor.now() + wait;
        self.idle += chat_turn(
            &mut self.reactor,
            &mut self.io,
            &mut self.events,
            limit,
            "sender reactor",
        )?;
        while let Some(ev) = self.io.peer.poll_event() {
            on(ev)?;
        }
        Ok(())
    }
}

/// The transfer: offer `src` to the receiver at `to`, chat beside it, until DONE and every chat message is
/// acknowledged.
fn send_file(
    src: &Path,
    to: SocketAddr,
    size: u64,
    receiver_pid: i32,
    progress: &mut Progress,
) -> Result<Sent, String> {
    let mut s = SenderPeer::new()?;
    let target = Target::Addr(to);
    let me = std::process::id() as i32;
    let before = proc_stats(receiver_pid)?;
    let receiver_before_cpu = before.cpu;
    let sender_before = proc_stats(me)?;
    let t_list = StdInstant::now();
    let machine = CpuTimes::read();
    let now = s.reactor.now();
    let (x, total, _) = s.io.files.send(&mut s.io.peer, now, target, src)?;
    if total != size {
        return Err(format!(
            "the listing says {total} bytes, the file has {size}"
        ));
    }
    let offer = StdInstant::now();
    let listing = offer - t_list;
    let mut idle_at_done = None;
    s.io.process(now, s.reactor.registry());

    let limit = phase_limit(size);
    let mut accepted: Option<StdInstant> = None;
    let mut done: Option<StdInstant> = None;
    let mut last_move = offer;
    let mut verified = 0u64;
    let mut in_flight: HashMap<u64, StdInstant> = HashMap::new();
    let mut chat = Vec::new();
    let mut chat_refused = 0u64;
    let mut next_chat = offer;
    let mut next_sample = offer;
    let mut rss_peak_kib = before.rss_kib;
    let mut drain_from = None;
    let mut machine_at_done = None;
    loop {
        let t = StdInstant::now();
        if done.is_some() && in_flight.is_empty() {
            break;
        }
        if t - offer > limit {
            return Err(format!("the transfer did not end within {limit:?}"));
        }
        match (accepted, done) {
            (None, _) if t - offer > ACCEPT_LIMIT => {
                return Err(format!(
                    "the receiver did not accept within {ACCEPT_LIMIT:?}"
                ));
            }
            (Some(_), None) if t - last_move > STALL_LIMIT => {
                return Err(format!(
                    "no progress for {STALL_LIMIT:?} ({verified} of {size} bytes verified)"
                ));
            }
            _ => {}
        }
        if let Some(d) = drain_from
            && t - d > DRAIN_LIMIT
        {
            return Err(format!(
                "{} chat messages not acknowledged {DRAIN_LIMIT:?} after the transfer",
                in_flight.len()
            ));
        }
        if done.is_none() && t >= next_chat {
            let (now, wall) = (s.reactor.now(), s.reactor.wall_ms());
            match s.io.peer.send(now, wall, target, TEXT) {
                Ok(id) => {
                    in_flight.insert(id, StdInstant::now());
                }
                Err(SendError::QueueFull) => chat_refused += 1,
                Err(e) => return Err(format!("chat send: {e}")),
            }
            s.io.process(now, s.reactor.registry());
            // On schedule, unless the loop fell behind: then the next one a period from now, so a stall
            // does not turn into a burst.
            next_chat = (next_chat + CHAT_EVERY).max(t);
        }
        if done.is_none() && t >= next_sample {
            if let Ok(p) = proc_stats(receiver_pid) {
                rss_peak_kib = rss_peak_kib.max(p.rss_kib);
            }
            next_sample = t + SAMPLE_EVERY;
        }
        let until = if done.is_none() {
            next_chat.min(next_sample)
        } else {
            t + STOP_CHECK
        };
        s.turn(until, |ev| {
            match ev {
                PeerEvent::Delivered { id, .. } => {
                    if let Some(at) = in_flight.remove(&id) {
                        chat.push(at.elapsed());
                    }
                }
                PeerEvent::Failed { reason, .. } => {
                    return Err(format!("a chat message failed: {reason}"));
                }
                PeerEvent::Queued { .. } => {
                    return Err("a chat message was queued: the receiver looked offline".into());
                }
                PeerEvent::Unanswered { attempts, .. } => {
                    return Err(format!(
                        "a chat message was not acknowledged after {attempts} attempts"
                    ));
                }
                PeerEvent::File { xfer, event, .. } if xfer == x => match event {
                    FileEvent::Send(SendEvent::Accepted { skipped }) => {
                        if skipped > 0 {
                            return Err(format!(
                                "the receiver holds {skipped} bytes already: not a fresh transfer"
                            ));
                        }
                        accepted = Some(StdInstant::now());
                        last_move = StdInstant::now();
                    }
                    FileEvent::Send(SendEvent::Progress { verified: v, .. }) => {
                        verified = v;
                        last_move = StdInstant::now();
                    }
                    FileEvent::Send(SendEvent::Done) => {
                        let t = StdInstant::now();
                        done = Some(t);
                        drain_from = Some(t);
                        machine_at_done = Some(CpuTimes::read());
                    }
                    FileEvent::Send(SendEvent::Failed(f)) => {
                        return Err(format!("the transfer failed: {}", f.reason));
                    }
                    FileEvent::Cut { reason, .. } => {
                        return Err(format!("the transfer was cut: {reason}"));
                    }
                    _ => {}
                },
                PeerEvent::Message { .. } | PeerEvent::File { .. } => {}
            }
            Ok(())
        })?;
        if done.is_some() && idle_at_done.is_none() {
            idle_at_done = Some(s.idle);
        }
        progress.update(format_args!(
            "{} of {} MiB verified, {} chat messages acknowledged",
            verified >> 20,
            size >> 20,
            chat.len()
        ));
    }
    let (Some(accepted), Some(done)) = (accepted, done) else {
        return Err("the transfer ended without ACCEPT and DONE".into());
    };
    let sender_cpu = proc_stats(me)?.cpu.saturating_sub(sender_before.cpu);
    let machine = machine_at_done
        .unwrap_or_else(CpuTimes::read)
        .since(machine);
    Ok(Sent {
        listing,
        transfer: done - offer,
        accept: accepted - offer,
        chat,
        chat_refused,
        before,
        rss_peak_kib,
        sender_cpu,
        receiver_before_cpu,
        sender_idle: idle_at_done.unwrap_or(s.idle),
        machine,
    })
}

/// Runs the transfer scenario.
pub fn run(p: &Params, progress: &mut Progress) -> Result<Figures, String> {
    let tmp = TempDir::new(&p.dir)?;
    let src = tmp.0.join("data.bin");
    let recv_dir = tmp.0.join("received");
    std::fs::create_dir_all(&recv_dir).map_err(err("receiver directory"))?;
    progress.phase(format!("transfer: writing {} MiB", p.size >> 20));
    let src_hash = write_source(&src, p.size)?;
    let limit = phase_limit(p.size);
    let (mut receiver, chat_addr, raw_addr) =
        ReceiverProcess::start(&recv_dir, 2 * limit + 2 * DRAIN_LIMIT + START_LIMIT)?;
    let pid = receiver.pid();

    progress.phase("transfer: raw TCP copy");
    let raw = raw_copy(&src, raw_addr, p.size, limit)?;
    receiver.line(DRAIN_LIMIT, "raw")?;
    let raw_file = recv_dir.join("raw.bin");
    let (h, n) = hash_file(&raw_file)?;
    if h != src_hash || n != p.size {
        return Err(format!(
            "raw copy: {n} bytes, not the source's {} bytes",
            p.size
        ));
    }
    // Out of the way: the transfer needs the room, and the page cache should not keep it.
    std::fs::remove_file(&raw_file).map_err(err("removing the raw copy"))?;

    progress.phase("transfer: encrypted peer to peer");
    let hwm_reset = reset_hwm(pid);
    let sent = send_file(&src, chat_addr, p.size, pid, progress)?;
    let after = proc_stats(pid)?;
    let said = receiver.line(DRAIN_LIMIT, "received")?;
    receiver.stop()?;
    // `received SIZE HASH IDLE_US PATH`: the receiver's own check (the transfer verified the hash), then
    // ours, from the disk.
    let mut w = said.splitn(5, ' ').skip(1);
    let (said_size, said_hash) = (w.next(), w.next());
    let receiver_idle = w
        .next()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_micros)
        .ok_or_else(|| format!("the receiver says {said:?}"))?;
    let path = w.next().map(PathBuf::from);
    if said_size != Some(&p.size.to_string()) || said_hash != Some(src_hash.to_hex().as_str()) {
        return Err(format!(
            "the receiver says {said:?}; the source is {} bytes, {}",
            p.size,
            src_hash.to_hex()
        ));
    }
    let path = path.ok_or_else(|| format!("the receiver says {said:?}"))?;
    if !path.starts_with(&recv_dir) {
        return Err(format!("the receiver put the file at {}", path.display()));
    }
    let (h, n) = hash_file(&path)?;
    let matched = h == src_hash && n == p.size;
    if !matched {
        return Err(format!(
            "the received file differs from the source: {n} bytes, {}",
            h.to_hex()
        ));
    }
    Ok(figures(
        p,
        raw,
        sent,
        after,
        receiver_idle,
        hwm_reset,
        matched,
    ))
}

fn figures(
    p: &Params,
    raw: Duration,
    mut sent: Sent,
    after: ProcStats,
    receiver_idle: Duration,
    hwm_reset: bool,
    matched: bool,
) -> Figures {
    let (c50, c99, cmax) = summary(&mut sent.chat);
    let rate = mib_per_s(p.size, sent.transfer);
    let raw_rate = mib_per_s(p.size, raw);
    let ratio = round3(rate / raw_rate.max(1e-9));
    let growth_kib = after.hwm_kib.saturating_sub(sent.before.rss_kib);
    let growth_mib = round3(growth_kib as f64 / 1024.0);
    let chat_p99_ms = round3(c99.as_secs_f64() * 1e3);
    let receiver_cpu = after.cpu.saturating_sub(sent.receiver_before_cpu);
    let [busy, idle, iowait, steal] = sent.machine.percent();
    // What the rest of the machine (other processes, the kernel's own threads) ran meanwhile: a figure taken
    // while others were busy is a different figure.
    let others = Duration::from_millis(sent.machine.busy * 1000 / ticks_per_s())
        .saturating_sub(sent.sender_cpu + receiver_cpu);
    let mut f = Figures::new("transfer");
    f.set("size_mib", round3(p.size as f64 / (1 << 20) as f64))
        .set("transfer_mib_per_s", rate)
        .set("raw_tcp_mib_per_s", raw_rate)
        .set("ratio_transfer_to_raw", ratio)
        .set("receiver_growth_mib", growth_mib)
        .ms("chat_p50_ms", c50)
        .ms("chat_p99_ms", c99)
        .ms("chat_max_ms", cmax)
        .set("chat_msgs", sent.chat.len())
        .set("chat_refused", sent.chat_refused)
        .ms("transfer_ms", sent.transfer)
        .ms("raw_tcp_ms", raw)
        .ms("accept_ms", sent.accept)
        .ms("listing_ms", sent.listing)
        .set("receiver_rss_before_kib", sent.before.rss_kib)
        .set(
            "receiver_rss_peak_sampled_kib",
            sent.rss_peak_kib.max(after.rss_kib),
        )
        .set("receiver_hwm_after_kib", after.hwm_kib)
        .set("receiver_hwm_reset", hwm_reset)
        .set("sender_cpu_ms", sent.sender_cpu.as_millis() as u64)
        .set("receiver_cpu_ms", receiver_cpu.as_millis() as u64)
        .ms("sender_idle_ms", sent.sender_idle)
        .ms("receiver_idle_ms", receiver_idle)
        .ms(
            "receiver_other_ms",
            sent.transfer
                .saturating_sub(receiver_idle)
                .saturating_sub(receiver_cpu),
        )
        .set("machine_busy_pct", busy)
        .set("others_cpu_ms", others.as_millis() as u64)
        .set("machine_idle_pct", idle)
        .set("machine_iowait_pct", iowait)
        .set("machine_steal_pct", steal)
        .set("received_matches", matched);
    f.notes.push(format!(
        "one {} MiB file, offer to DONE (listing and hashing before the offer: listing_ms), beside a raw TCP \
         copy of it ({} KiB reads and writes, one fsync at the end) into the same directory, receiver in \
         another process",
        p.size >> 20,
        RAW_BUF >> 10
    ));
    f.notes.push(format!(
        "receiver_growth_mib: its VmHWM after DONE less its RSS before the offer{}",
        if hwm_reset {
            " (VmHWM reset at the offer)"
        } else {
            " (VmHWM could not be reset: an upper bound, which may include the raw copy's peak)"
        }
    ));
    f.notes.push(format!(
        "chat: a message every {} ms from offer to DONE, send to ACK, on its own connection",
        CHAT_EVERY.as_millis()
    ));
    f.notes.push(
        "accept_ms: offer until the sender's loop saw the ACCEPT, which is after the turn in which it \
         arrived, and in that turn the sender already read and sealed what its window and socket took"
            .into(),
    );
    f.notes.push(
        "where the time went, offer to DONE: *_cpu_ms user + system time of each process (CPU ticks, 10 ms); \
         *_idle_ms waiting in its reactor with nothing to do; receiver_other_ms the rest of the receiver's \
         time: blocked in a disk sync or other call, or waiting for a CPU; machine_*_pct both CPUs' time \
         by kind (/proc/stat), others_cpu_ms the CPU time the machine spent on anything else (from the \
         listing on)"
            .into(),
    );
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    f.notes.push(format!(
        "targets: throughput >= 0.5 x raw: {} ({ratio:.2} x); receiver growth <= 16 MiB: {} ({growth_mib:.1} \
         MiB); chat p99 <= 50 ms: {} ({chat_p99_ms:.1} ms)",
        verdict(ratio >= 0.5),
        verdict(growth_mib <= 16.0),
        verdict(chat_p99_ms <= 50.0),
    ));
    f
}

// ----------------------------------------------------------------------------------------------------------
// The receiving process.

/// Set by the stdin thread when mpbench closes our stdin: time to exit.
static STOP: AtomicBool = AtomicBool::new(false);

/// `mpbench __transfer-receiver --dir DIR --parent PID --limit SECS`: listens on two loopback ports, says
/// `ready CHAT_PORT RAW_PORT`, then receives one raw copy into DIR/raw.bin (says `raw BYTES`) and accepts
/// every offer into DIR (says `received SIZE HASH IDLE_US PATH`, IDLE_US the µs it spent waiting in its
/// reactor from the offer on, or `failed REASON` and exits 1), and exits when stdin closes, or after SECS.
pub fn receiver_main(args: &[String]) -> ExitCode {
    match receiver(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("failed {e}");
            eprintln!("mpbench receiver: {e}");
            ExitCode::FAILURE
        }
    }
}

fn receiver(args: &[String]) -> Result<(), String> {
    let mut dir = None;
    let mut parent = None;
    let mut limit = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--dir" => dir = Some(PathBuf::from(v)),
            "--parent" => parent = v.parse::<i32>().ok(),
            "--limit" => limit = v.parse::<u64>().ok().map(Duration::from_secs),
            _ => return Err(format!("unknown option {a}")),
        }
    }
    let (Some(dir), Some(parent), Some(limit)) = (dir, parent, limit) else {
        return Err("usage: --dir DIR --parent PID --limit SECS".into());
    };
    // Killed with mpbench, however mpbench ends; and if it ended already, stop now.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| format!("PR_SET_PDEATHSIG: {e}"))?;
    if nix::unistd::getppid().as_raw() != parent {
        return Err("mpbench is gone".into());
    }
    let chat_listener = TcpListener::bind("127.0.0.1:0").map_err(err("chat listener"))?;
    let raw_listener = TcpListener::bind("127.0.0.1:0").map_err(err("raw listener"))?;
    let chat_port = chat_listener
        .local_addr()
        .map_err(err("chat listener"))?
        .port();
    let raw_port = raw_listener
        .local_addr()
        .map_err(err("raw listener"))?
        .port();
    let raw_path = dir.join("raw.bin");
    std::thread::Builder::new()
        .name("raw-receiver".into())
        .spawn(move || match raw_receive(&raw_listener, &raw_path, limit) {
            Ok(n) => println!("raw {n}"),
            Err(e) => println!("failed raw copy: {e}"),
        })
        .map_err(err("raw receiver thread"))?;
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(|| {
            // Until EOF (mpbench closed it or is gone); what is read means nothing.
            let mut sink = [0u8; 64];
            while std::io::stdin().read(&mut sink).is_ok_and(|n| n > 0) {}
            STOP.store(true, Ordering::Relaxed);
        })
        .map_err(err("stdin thread"))?;

    let mut reactor = Reactor::new().map_err(err("receiver reactor"))?;
    let mut peer = Peer::new(Config::new(nick("bob")?, 2, identity_of("bob")));
    // The sender's key, as a daemon would give it: its offer and messages are shown at once, as its own.
    peer.set_key(
        reactor.now(),
        nick("alice")?,
        Some(identity_of("alice").public()),
    );
    let mut io = ChatIo::new(chat_listener, peer, reactor.registry(), Token(1), Token(16))
        .map_err(err("receiver"))?;
    println!("ready {chat_port} {raw_port}");
    let t0 = StdInstant::now();
    let mut events = Vec::new();
    // Time spent waiting in the reactor from the offer to the end of the transfer.
    let mut idle: Option<Duration> = None;
    while !STOP.load(Ordering::Relaxed) {
        if t0.elapsed() > limit {
            return Err(format!("still running after {limit:?}"));
        }
        let check = reactor.now() + STOP_CHECK;
        let waited = chat_turn(
            &mut reactor,
            &mut io,
            &mut events,
            check,
            "receiver reactor",
        )?;
        if let Some(i) = &mut idle {
            *i += waited;
        }
        let now = reactor.now();
        while let Some(ev) = io.peer.poll_event() {
            let PeerEvent::File { xfer, event, .. } = ev else {
                // Chat messages are acknowledged by the peer itself.
                continue;
            };
            match event {
                FileEvent::Offered { .. } => {
                    idle = Some(Duration::ZERO);
                    io.files.accept(&mut io.peer, now, xfer, &dir)?;
                    io.process(now, reactor.registry());
                }
                FileEvent::Recv(RecvEvent::Received { .. }) => {
                    let r = io
                        .files
                        .take_received(xfer)
                        .ok_or("received, but where to is not known")?;
                    println!(
                        "received {} {} {} {}",
                        r.size,
                        r.hash.unwrap_or_default(),
                        idle.take().unwrap_or_default().as_micros(),
                        r.path.display()
                    );
                }
                FileEvent::Recv(RecvEvent::Failed { failure, .. }) => {
                    return Err(format!("transfer failed: {}", failure.reason));
                }
                FileEvent::Cut { reason, .. } => return Err(format!("transfer cut: {reason}")),
                _ => {}
            }
        }
    }
    Ok(())
}

/// Receives one raw copy into `path`: reads until the sender shuts its side, syncs the file, answers with
/// the byte count (8 bytes, big-endian) once it is on disk.
fn raw_receive(l: &TcpListener, path: &Path, limit: Duration) -> Result<u64, String> {
    let (mut s, _) = l.accept().map_err(err("accept"))?;
    s.set_read_timeout(Some(limit))
        .and_then(|()| s.set_write_timeout(Some(limit)))
        .map_err(err("raw receiver"))?;
    let mut f = File::create(path).map_err(err("raw file"))?;
    let mut buf = vec![0u8; RAW_BUF];
    let mut n = 0u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => {
                f.write_all(&buf[..k]).map_err(err("raw file"))?;
                n += k as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("receive: {e}")),
        }
    }
    f.sync_all().map_err(err("raw file sync"))?;
    s.write_all(&n.to_be_bytes()).map_err(err("answer"))?;
    Ok(n)
}
