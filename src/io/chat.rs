//! The sockets around a [`Peer`]: the chat listener and one nonblocking TCP stream per connection, registered
//! in the caller's reactor. [`ChatIo::handle_event`] takes readiness for its tokens, [`ChatIo::process`] carries
//! out what the peer asks (connect, write, close) and the disk work of its file transfers ([`Files`]).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::io::files::Files;
use crate::peer::{Action, ConnId, Peer};
use crate::reactor::{Readiness, Sources};
use crate::time::Instant;

/// Bytes read from one connection per readiness event before the others get their turn. A transfer's
/// connection can stay readable for as long as its sender has window (8 MiB by default, each MiB with a disk
/// sync), and reading it until `WouldBlock` kept a chat message on another connection waiting for all of it
/// (`mpbench transfer`: chat p50 40–100 ms, p99 120–290 ms behind a 1 GiB transfer). 256 KiB is four DATA
/// frames: about a millisecond of work, while the extra `epoll_ctl` and `epoll_wait` it costs per 256 KiB are
/// microseconds.
const READ_BUDGET: usize = 256 * 1024;
/// Most pieces of transfer disk work (a sender's 64 KiB reads, each encrypted onto its connection) per
/// [`ChatIo::process`], as [`READ_BUDGET`] is for reads: a sender whose socket keeps taking data would
/// otherwise read and send on as long as its window lasts (seconds in a debug build: no heartbeat answered,
/// the daemon declared the sender gone). Work left over makes [`ChatIo::busy`] true.
const DISK_BUDGET: usize = 4;

struct Tcp {
    id: ConnId,
    stream: TcpStream,
    /// Outgoing and not yet known to be connected.
    connecting: bool,
    writable: bool,
}

/// The chat listener, its connections, and the peer core.
pub struct ChatIo {
    /// The protocol core.
    pub peer: Peer,
    /// The files of its transfers.
    pub files: Files,
    listener: TcpListener,
    listener_token: Token,
    conns: Sources<Tcp>,
    tokens: HashMap<ConnId, Token>,
    buf: Vec<u8>,
    /// [`ChatIo::process`] stopped with transfer disk work left ([`DISK_BUDGET`]).
    more_disk: bool,
}

impl ChatIo {
    /// Takes over a bound listener (bound first, so its port can go in the registration) and registers it
    /// with `listener_token`; connections get tokens from `base` up.
    pub fn new(
        listener: std::net::TcpListener,
        peer: Peer,
        registry: &Registry,
        listener_token: Token,
        base: Token,
    ) -> io::Result<ChatIo> {
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        registry.register(&mut listener, listener_token, Interest::READABLE)?;
        Ok(ChatIo {
            peer,
            files: Files::new(),
            listener,
            listener_token,
            conns: Sources::new(base),
            tokens: HashMap::new(),
            // A transfer's DATA frame is 64 KiB: a read takes one whole.
            buf: vec![0; 64 * 1024],
            more_disk: false,
        })
    }

    /// The listening address (its port goes in the roster).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Whether there is work to do at once (transfer disk work left over by [`ChatIo::process`], files being
    /// hashed for an offer): the caller's loop should not sleep before calling [`ChatIo::handle_timeout`].
    pub fn busy(&self) -> bool {
        self.more_disk || self.files.busy()
    }

    /// When [`ChatIo::handle_timeout`] should next run: the peer's next timer, or `now` while there is work
    /// left ([`ChatIo::busy`]).
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        if self.busy() {
            return Some(now);
        }
        self.peer.poll_timeout()
    }

    /// Whether `token` is one of ours.
    pub fn owns(&self, token: Token) -> bool {
        token == self.listener_token || self.conns.contains(token)
    }

    /// Handles readiness on one of our tokens, then whatever the peer asks.
    pub fn handle_event(
        &mut self,
        now: Instant,
        wall_ms: u64,
        token: Token,
        r: Readiness,
        registry: &Registry,
    ) {
        if token == self.listener_token {
            self.accept(now, registry);
        } else if let Some(t) = self.conns.get_mut(token) {
            let id = t.id;
            if t.connecting && (r.writable || r.error || r.read_closed) {
                t.connecting = false;
                let ok =
                    t.stream.take_error().ok().flatten().is_none() && t.stream.peer_addr().is_ok();
                if ok {
                    self.peer.connected(now, id);
                } else {
                    self.drop_conn(token, registry);
                    self.peer.closed(now, id);
                    self.process(now, registry);
                    return;
                }
            }
            if r.readable || r.read_closed || r.error {
                self.read(now, wall_ms, token, registry);
            }
            if r.writable && self.conns.contains(token) {
                self.write(now, token, registry);
            }
        }
        self.process(now, registry);
    }

    fn accept(&mut self, now: Instant, registry: &Registry) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, from)) => {
                    let Some(id) = self.peer.accepted(now, from) else {
                        // Over the connection cap: closed at once by dropping it.
                        continue;
                    };
                    no_delay(&stream);
                    let token = self.conns.next_token();
                    if registry
                        .register(&mut stream, token, Interest::READABLE)
                        .is_err()
                    {
                        self.peer.closed(now, id);
                        continue;
                    }
                    self.conns.insert(Tcp {
                        id,
                        stream,
                        connecting: false,
                        writable: false,
                    });
                    self.tokens.insert(id, token);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors and the like: try again on the next readiness.
                    log::warn!("chat listener: {e}");
                    return;
                }
            }
        }
    }

    fn read(&mut self, now: Instant, wall_ms: u64, token: Token, registry: &Registry) {
        let mut budget = READ_BUDGET;
        loop {
            let Some(t) = self.conns.get_mut(token) else {
                return;
            };
            let id = t.id;
            if budget == 0 {
                // More may be waiting: ask epoll for a fresh edge (EPOLL_CTL_MOD reports a socket that is
                // still readable again), so it is read on the next turn, after the other connections' events.
                let interest = if t.writable {
                    Interest::READABLE | Interest::WRITABLE
                } else {
                    Interest::READABLE
                };
                if registry.reregister(&mut t.stream, token, interest).is_ok() {
                    return;
                }
                // Without a fresh edge the rest would never be reported: read on.
                budget = READ_BUDGET;
            }
            match t.stream.read(&mut self.buf) {
                Ok(0) => {
                    self.drop_conn(token, registry);
                    self.peer.closed(now, id);
                    return;
                }
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    self.peer.handle_data(now, wall_ms, id, &self.buf[..n]);
                    // A transfer's data goes to disk as it comes, so what is held between reads stays one
                    // read's worth however fast the sender is.
                    self.files.run(&mut self.peer, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.drop_conn(token, registry);
                    self.peer.closed(now, id);
                    return;
                }
            }
            // The peer may have closed it (a bad frame): stop reading.
            if !self.tokens.contains_key(&id) {
                return;
            }
        }
    }

    fn write(&mut self, now: Instant, token: Token, registry: &Registry) {
        let Some(t) = self.conns.get_mut(token) else {
            return;
        };
        if t.connecting {
            return;
        }
        let id = t.id;
        loop {
            let out = self.peer.output(id);
            if out.is_empty() {
                break;
            }
            let t = self.conns.get_mut(token).unwrap_or_else(|| unreachable!());
            match t.stream.write(out) {
                Ok(n) => self.peer.wrote(now, id, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !t.writable {
                        t.writable = true;
                        let _ = registry.reregister(
                            &mut t.stream,
                            token,
                            Interest::READABLE | Interest::WRITABLE,
                        );
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.drop_conn(token, registry);
                    self.peer.closed(now, id);
                    return;
                }
            }
        }
        let t = self.conns.get_mut(token).unwrap_or_else(|| unreachable!());
        if t.writable {
            t.writable = false;
            let _ = registry.reregister(&mut t.stream, token, Interest::READABLE);
        }
    }

    fn drop_conn(&mut self, token: Token, registry: &Registry) {
        if let Some(mut t) = self.conns.remove(token) {
            let _ = registry.deregister(&mut t.stream);
            self.tokens.remove(&t.id);
        }
    }

    /// Carries out the peer's actions until it has none, and its transfers' disk work up to [`DISK_BUDGET`]
    /// (what is left makes [`ChatIo::busy`] true).
    pub fn process(&mut self, now: Instant, registry: &Registry) {
        let mut jobs = DISK_BUDGET;
        self.files.hash_work(&mut self.peer, now);
        loop {
            jobs -= self.files.run_for(&mut self.peer, now, jobs);
            let Some(a) = self.peer.poll_action() else {
                self.more_disk = jobs == 0 && self.peer.poll_disk().is_some();
                return;
            };
            match a {
                Action::Connect { conn, addr } => match TcpStream::connect(addr) {
                    Ok(mut stream) => {
                        no_delay(&stream);
                        let token = self.conns.next_token();
                        if registry
                            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                            .is_err()
                        {
                            self.peer.closed(now, conn);
                            continue;
                        }
                        self.conns.insert(Tcp {
                            id: conn,
                            stream,
                            connecting: true,
                            writable: true,
                        });
                        self.tokens.insert(conn, token);
                    }
                    Err(e) => {
                        log::debug!("chat connect to {addr}: {e}");
                        self.peer.closed(now, conn);
                    }
                },
                Action::Write(id) => {
                    if let Some(&token) = self.tokens.get(&id) {
                        self.write(now, token, registry);
                    }
                }
                Action::Close(id) => {
                    if let Some(token) = self.tokens.get(&id).copied() {
                        // Send what is queued (an ACK) if the socket takes it now, then close.
                        self.write(now, token, registry);
                        if let Some(t) = self.conns.get(token) {
                            let _ = t.stream.shutdown(std::net::Shutdown::Both);
                        }
                        self.drop_conn(token, registry);
                    }
                }
            }
        }
    }

    /// Runs the peer's timers.
    pub fn handle_timeout(&mut self, now: Instant, registry: &Registry) {
        if self.peer.poll_timeout().is_some_and(|t| t <= now) {
            self.peer.handle_timeout(now);
        }
        self.process(now, registry);
    }
}

/// Sends small writes at once. The peer writes whole frames and then waits for an answer, and a frame written
/// while an earlier small one is unacknowledged (HELLO then ACCEPT on a transfer's connection, VERIFIED after
/// VERIFIED) otherwise waits under Nagle's algorithm for the other side's delayed ACK, 40 ms on Linux
/// (`mpbench transfer`: the offer took 55–120 ms to be accepted on loopback). A refusal costs only that.
fn no_delay(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        log::debug!("chat connection: TCP_NODELAY: {e}");
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::Duration;

    use mio::net::TcpStream;
    use mio::{Events, Interest, Poll, Token};

    /// What [`super::ChatIo`]'s read budget relies on: a socket left with data unread gets no new edge from
    /// epoll by itself, but renewing its registration reports it again at once.
    #[test]
    fn a_renewed_registration_reports_data_left_unread() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut writer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        accepted.set_nonblocking(true).unwrap();
        let mut reader = TcpStream::from_std(accepted);
        let mut poll = Poll::new().unwrap();
        let mut events = Events::with_capacity(8);
        poll.registry()
            .register(&mut reader, Token(1), Interest::READABLE)
            .unwrap();
        // One segment on loopback, in the reader's queue when write_all returns: no edge comes later.
        writer.write_all(&[7; 16 * 1024]).unwrap();
        let ready = |poll: &mut Poll, events: &mut Events| {
            poll.poll(events, Some(Duration::from_millis(500))).unwrap();
            events
                .iter()
                .any(|e| e.token() == Token(1) && e.is_readable())
        };
        assert!(ready(&mut poll, &mut events), "no first edge");
        // Part of it read, the rest left: no new edge...
        let mut buf = [0; 1024];
        reader.read_exact(&mut buf).unwrap();
        poll.poll(&mut events, Some(Duration::ZERO)).unwrap();
        assert!(events.is_empty(), "an edge without new data");
        // ... until the registration is renewed.
        poll.registry()
            .reregister(&mut reader, Token(1), Interest::READABLE)
            .unwrap();
        assert!(ready(&mut poll, &mut events), "not reported again");
    }
}
