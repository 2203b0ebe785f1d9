//! The SCTP engine's smallest real program: an echo server and client over UDP encapsulation (RFC 6951).
//! Interop tests drive it against usrsctp; its command line is fixed by DESIGN.md.
//!
//! ```text
//! sctp_echo listen  --udp 127.0.0.1:9899 --port 7
//! sctp_echo connect --udp 127.0.0.1:0 --to 127.0.0.1:9899 --port 7 --count 10 --size 100
//! ```
//! Set `MULTIPROTO_LOG=debug` (or `trace`) to see state changes (or every timer) on stderr.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;
use mio::Token;
use nix::sys::signal::Signal;

use multiproto::io::sctp_udp::UdpTransport;
use multiproto::reactor::{Reactor, ReactorEvent};
use multiproto::sctp::{AssocId, Config, DownReason, Endpoint, Event, SendError};
use multiproto::time::Instant;

/// Echo server and client on multiproto's userspace SCTP, carried over UDP (RFC 6951).
#[derive(FromArgs)]
struct Args {
    #[argh(subcommand)]
    cmd: Cmd,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Cmd {
    Listen(Listen),
    Connect(Connect),
}

/// Echo every message back on the stream it came on. Prints "assoc up ADDR:PORT" and
/// "assoc down ADDR:PORT REASON" on stderr; runs until SIGTERM or SIGINT, then shuts associations down.
#[derive(FromArgs)]
#[argh(subcommand, name = "listen")]
struct Listen {
    /// local UDP address to bind, e.g. 127.0.0.1:9899
    #[argh(option)]
    udp: SocketAddr,
    /// local SCTP port
    #[argh(option)]
    port: u16,
    /// send to this UDP port instead of the one the peer's packets come from
    #[argh(option)]
    peer_udp_port: Option<u16>,
}

/// Open one association, send COUNT messages of SIZE bytes, check each echo byte for byte, shut down. Prints
/// "ok COUNT messages, SIZE bytes" and exits 0, or prints the reason and exits 1.
#[derive(FromArgs)]
#[argh(subcommand, name = "connect")]
struct Connect {
    /// local UDP address to bind (port 0 picks one)
    #[argh(option)]
    udp: SocketAddr,
    /// the server's UDP address
    #[argh(option)]
    to: SocketAddr,
    /// the server's SCTP port
    #[argh(option)]
    port: u16,
    /// our SCTP port (default: a random port from 49152-65535)
    #[argh(option)]
    local_port: Option<u16>,
    /// number of messages (default 10)
    #[argh(option, default = "10")]
    count: u32,
    /// bytes per message, 1 to 262144 (default 100)
    #[argh(option, default = "100")]
    size: usize,
    /// stream to send on (default 0)
    #[argh(option, default = "0")]
    stream: u16,
    /// send unordered
    #[argh(switch)]
    unordered: bool,
    /// do not expect echoes: succeed once everything is acknowledged and the association is shut down
    #[argh(switch)]
    no_echo: bool,
    /// give up after this many seconds (default 30)
    #[argh(option, default = "30")]
    timeout: u64,
}

const UDP: Token = Token(0);
const SIGNALS: Token = Token(1);

fn init_logging() {
    let level = std::env::var("MULTIPROTO_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(log::LevelFilter::Warn);
    let _ = fern::Dispatch::new()
        .format(|out, msg, rec| {
            out.finish(format_args!("{} {}: {}", rec.level(), rec.target(), msg))
        })
        .level(level)
        .chain(std::io::stderr())
        .apply();
}

fn seed() -> [u8; 32] {
    let mut s = [0u8; 32];
    // No entropy means unguessable tags are impossible: refuse to run rather than run predictably.
    getrandom::fill(&mut s).expect("the OS random number generator failed");
    s
}

/// The loop shared by both roles: one reactor, one UDP transport, one endpoint.
struct Io {
    reactor: Reactor,
    udp: UdpTransport,
    ep: Endpoint,
    events: Vec<ReactorEvent>,
}

impl Io {
    fn new(bind: SocketAddr, cfg: Config) -> std::io::Result<Io> {
        let mut reactor = Reactor::new()?;
        reactor.watch_signals(&[Signal::SIGTERM, Signal::SIGINT], SIGNALS)?;
        let mut udp = UdpTransport::bind(bind, cfg.max_packet)?;
        udp.register(reactor.registry(), UDP)?;
        Ok(Io {
            reactor,
            udp,
            ep: Endpoint::new(cfg, seed()),
            events: Vec::with_capacity(64),
        })
    }

    /// Flushes output, waits for input or a deadline, handles it. Returns true if a stop signal arrived.
    fn turn(&mut self, deadline: Option<Instant>) -> std::io::Result<bool> {
        let now = self.reactor.now();
        self.udp
            .write(now, &mut self.ep, self.reactor.registry(), UDP)?;
        let wake = match (self.ep.poll_timeout(), deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.reactor.turn(wake, &mut self.events)?;
        let now = self.reactor.now();
        let mut stop = false;
        for e in &self.events {
            match *e {
                ReactorEvent::Io(UDP, _) => self.udp.read(now, &mut self.ep)?,
                ReactorEvent::Signal(_) => stop = true,
                _ => {}
            }
        }
        if self.ep.poll_timeout().is_some_and(|t| t <= now) {
            self.ep.handle_timeout(now);
        }
        Ok(stop)
    }
}

/// A received message waiting to be echoed: stream, unordered, PPID, bytes.
type Echo = (u16, bool, u32, Vec<u8>);

fn listen(a: Listen) -> std::io::Result<ExitCode> {
    let cfg = Config {
        port: a.port,
        accept: true,
        ..Config::default()
    };
    let mut io = Io::new(a.udp, cfg)?;
    io.udp.set_peer_port_override(a.peer_udp_port);
    eprintln!(
        "listening on udp {} sctp port {}",
        io.udp.local_addr()?,
        a.port
    );
    let mut peers: HashMap<AssocId, SocketAddr> = HashMap::new();
    let mut backlog: HashMap<AssocId, VecDeque<Echo>> = HashMap::new();
    let mut stopping: Option<Instant> = None;
    loop {
        let deadline = stopping.map(|t| t + Duration::from_secs(2));
        if io.turn(deadline)? && stopping.is_none() {
            stopping = Some(io.reactor.now());
            let ids: Vec<_> = io.ep.ids().collect();
            for id in ids {
                io.ep.shutdown(io.reactor.now(), id);
            }
        }
        while let Some((id, e)) = io.ep.poll_event() {
            match e {
                Event::Up => {
                    let (addr, _) = io.ep.remote(id).unwrap_or((a.udp, 0));
                    peers.insert(id, addr);
                    eprintln!("assoc up {addr}");
                }
                Event::Restarted => {
                    backlog.remove(&id);
                    eprintln!(
                        "assoc restarted {}",
                        peers.get(&id).copied().unwrap_or(a.udp)
                    );
                }
                Event::Message {
                    stream,
                    unordered,
                    ppid,
                    data,
                } => backlog
                    .entry(id)
                    .or_default()
                    .push_back((stream, unordered, ppid, data)),
                Event::Down(r) => {
                    backlog.remove(&id);
                    let addr = peers.remove(&id).unwrap_or(a.udp);
                    eprintln!("assoc down {addr} {}", reason_word(r));
                }
            }
        }
        // Echo what fits in the send buffers; the rest waits for acknowledgements.
        backlog.retain(|&id, q| {
            while let Some((stream, unordered, ppid, data)) = q.pop_front() {
                match io.ep.send_owned(id, stream, unordered, ppid, data.clone()) {
                    Ok(()) => {}
                    Err(SendError::BufferFull) => {
                        q.push_front((stream, unordered, ppid, data));
                        return true;
                    }
                    Err(e) => {
                        log::warn!("echo on {id} failed: {e}");
                        return false;
                    }
                }
            }
            false
        });
        if let Some(t) = stopping
            && (io.ep.is_empty() || io.reactor.now() >= t + Duration::from_secs(2))
        {
            // One last flush so SHUTDOWN COMPLETEs and ABORTs leave.
            let now = io.reactor.now();
            io.udp.write(now, &mut io.ep, io.reactor.registry(), UDP)?;
            return Ok(ExitCode::SUCCESS);
        }
    }
}

/// One word for an association's end, as the interop tests read it.
fn reason_word(r: DownReason) -> &'static str {
    match r {
        DownReason::Shutdown => "shutdown",
        DownReason::PeerAbort(_) => "peer-abort",
        DownReason::LocalAbort => "aborted",
        DownReason::Lost => "lost",
        DownReason::InitFailed => "init-failed",
        DownReason::Unreachable => "unreachable",
        DownReason::ProtocolViolation => "protocol-violation",
    }
}

/// Message `k` of `size` bytes: its index in the first four bytes (when there is room), then a pattern that
/// depends on the index, so a corrupted, truncated or misplaced echo is caught.
fn message(k: u32, size: usize) -> Vec<u8> {
    let mut m: Vec<u8> = (0..size)
        .map(|i| {
            (i as u32)
                .wrapping_mul(13)
                .wrapping_add(k.wrapping_mul(7))
                .wrapping_add(1) as u8
        })
        .collect();
    if size >= 4 {
        m[..4].copy_from_slice(&k.to_be_bytes());
    }
    m
}

fn connect(a: Connect) -> std::io::Result<ExitCode> {
    if a.size == 0 || a.size > 256 * 1024 {
        eprintln!("--size must be between 1 and 262144");
        return Ok(ExitCode::FAILURE);
    }
    let local_port = a.local_port.unwrap_or_else(|| {
        let mut b = [0u8; 2];
        let _ = getrandom::fill(&mut b);
        49152 + u16::from_be_bytes(b) % 16384
    });
    let cfg = Config {
        port: local_port,
        accept: false,
        ..Config::default()
    };
    let mut io = Io::new(a.udp, cfg)?;
    let start = io.reactor.now();
    let deadline = start + Duration::from_secs(a.timeout);
    let id = match io.ep.connect(start, a.to, a.port) {
        Ok(id) => id,
        Err(e) => {
            eprintln!("connect failed: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let (mut sent, mut echoed) = (0u32, 0u32);
    let mut seen = vec![false; a.count as usize];
    let (mut up, mut shutting_down) = (false, false);
    loop {
        // Events first: what the last turn (or a call below) produced is seen before blocking again.
        while let Some((_, e)) = io.ep.poll_event() {
            match e {
                Event::Up => up = true,
                Event::Restarted => {}
                Event::Message { data, stream, .. } => {
                    if a.no_echo {
                        continue;
                    }
                    // Ordered echoes come back in order; unordered ones carry their index.
                    let k = if a.unordered && a.size >= 4 {
                        u32::from_be_bytes([data[0], data[1], data[2], data[3]])
                    } else {
                        echoed
                    };
                    let ok = stream == a.stream
                        && (k as usize) < seen.len()
                        && !seen[k as usize]
                        && data == message(k, a.size);
                    if !ok {
                        eprintln!(
                            "echo {echoed} does not match message {k} (stream {stream}, {} bytes)",
                            data.len()
                        );
                        return Ok(ExitCode::FAILURE);
                    }
                    seen[k as usize] = true;
                    echoed += 1;
                }
                Event::Down(DownReason::Shutdown) if shutting_down => {
                    // The SHUTDOWN COMPLETE is still queued: send it, or the server retransmits its SHUTDOWN
                    // ACK into a closed port.
                    let now = io.reactor.now();
                    io.udp.write(now, &mut io.ep, io.reactor.registry(), UDP)?;
                    println!("ok {} messages, {} bytes", a.count, a.size);
                    return Ok(ExitCode::SUCCESS);
                }
                Event::Down(r) => {
                    // Whether it ever came up tells a refused INIT (a server not listening yet) from an
                    // association lost on the way.
                    let when = if up { "" } else { " before it was up" };
                    eprintln!("association ended{when}: {r} (sent {sent}, echoed {echoed})");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        // Queue as many messages as the send buffer takes.
        while sent < a.count && !shutting_down {
            match io
                .ep
                .send_owned(id, a.stream, a.unordered, 0, message(sent, a.size))
            {
                Ok(()) => sent += 1,
                Err(SendError::BufferFull) => break,
                Err(e) => {
                    eprintln!("send failed: {e}");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        // Success means the peer acknowledged everything, which only a graceful shutdown of an association
        // that came up proves.
        let done_sending = sent == a.count && (a.no_echo || echoed == a.count);
        if up && done_sending && !shutting_down {
            shutting_down = true;
            io.ep.shutdown(io.reactor.now(), id);
            continue;
        }
        if io.reactor.now() >= deadline {
            eprintln!(
                "timed out after {} s (sent {sent}, echoed {echoed}, state {:?})",
                a.timeout,
                io.ep.state(id)
            );
            return Ok(ExitCode::FAILURE);
        }
        if io.turn(Some(deadline))? {
            eprintln!("interrupted");
            return Ok(ExitCode::FAILURE);
        }
    }
}

fn main() -> ExitCode {
    init_logging();
    let args: Args = argh::from_env();
    let r = match args.cmd {
        Cmd::Listen(l) => listen(l),
        Cmd::Connect(c) => connect(c),
    };
    r.unwrap_or_else(|e| {
        eprintln!("sctp_echo: {e}");
        ExitCode::FAILURE
    })
}
