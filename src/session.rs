//! A client session: the roster client ([`ClientIo`]) and the chat peer ([`ChatIo`]) on one reactor, with the
//! roster feeding the peer's contacts. `mpc`'s modes (interactive, `listen`, `send`) are thin loops around
//! [`Session::turn`].

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpListener};

use mio::Token;

use crate::client::ClientEvent;
use crate::io::chat::ChatIo;
use crate::io::client::{ClientIo, FIRST_APP_TOKEN, Setup};
use crate::peer::{Config as PeerConfig, Peer, PeerEvent};
use crate::reactor::ReactorEvent;
use crate::time::Instant;

const CHAT_LISTENER: Token = Token(FIRST_APP_TOKEN);
const CHAT_BASE: Token = Token(FIRST_APP_TOKEN + 8);
/// Tokens below this belong to the session; an application adds its own sources (stdin) from here.
pub const FIRST_SESSION_APP_TOKEN: usize = FIRST_APP_TOKEN + 4;

/// What happened during a turn.
#[derive(Clone, Debug)]
pub enum SessionEvent {
    /// From the roster client.
    Client(ClientEvent),
    /// From the chat peer.
    Peer(PeerEvent),
    /// SIGINT or SIGTERM.
    Signal,
    /// Readiness of an application source.
    App(ReactorEvent),
}

/// The session.
pub struct Session {
    /// Roster client and its sockets (and the reactor).
    pub io: ClientIo,
    /// Chat peer and its sockets.
    pub chat: ChatIo,
    events: VecDeque<SessionEvent>,
    app: Vec<ReactorEvent>,
}

impl Session {
    /// Binds the chat listener at `chat`, then opens the roster client (registering that port).
    pub fn open(mut setup: Setup, chat: SocketAddr) -> io::Result<Session> {
        let listener = TcpListener::bind(chat).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot listen for chat on TCP {chat}: {e}"),
            )
        })?;
        if !setup.observer {
            setup.chat_port = listener.local_addr()?.port();
        }
        let io = ClientIo::open(&setup)?;
        let peer = Peer::new(PeerConfig::new(setup.nick, io.client.instance()));
        let chat = ChatIo::new(
            listener,
            peer,
            io.reactor.registry(),
            CHAT_LISTENER,
            CHAT_BASE,
        )?;
        Ok(Session {
            io,
            chat,
            events: VecDeque::new(),
            app: Vec::new(),
        })
    }

    /// The current time.
    pub fn now(&self) -> Instant {
        self.io.reactor.now()
    }

    /// The current wall-clock time (Unix ms).
    pub fn wall_ms(&self) -> u64 {
        self.io.reactor.wall_ms()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// Sends what is pending (after the application queued a message, say).
    pub fn flush(&mut self) -> io::Result<()> {
        let now = self.now();
        self.chat.process(now, self.io.reactor.registry());
        self.collect(now);
        self.io.flush()
    }

    /// One loop turn: waits for I/O, signals or timers (or `deadline`), handles them, and queues events.
    pub fn turn(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        let wake = match (self.chat.peer.poll_timeout(), deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.io.turn(wake, &mut self.app)?;
        let now = self.now();
        let wall = self.wall_ms();
        for ev in std::mem::take(&mut self.app) {
            match ev {
                ReactorEvent::Io(t, r) if self.chat.owns(t) => {
                    self.chat
                        .handle_event(now, wall, t, r, self.io.reactor.registry())
                }
                ReactorEvent::Signal(_) => self.events.push_back(SessionEvent::Signal),
                other => self.events.push_back(SessionEvent::App(other)),
            }
        }
        self.chat.handle_timeout(now, self.io.reactor.registry());
        self.collect(now);
        self.io.flush()
    }

    /// Moves client and peer events out, keeping the peer's contacts in step with the roster.
    fn collect(&mut self, now: Instant) {
        while let Some(ev) = self.io.poll_event() {
            if let ClientEvent::Roster(applied) = &ev {
                self.chat
                    .peer
                    .follow_roster(now, self.io.client.roster(), applied);
            }
            self.events.push_back(SessionEvent::Client(ev));
        }
        self.chat.process(now, self.io.reactor.registry());
        while let Some(ev) = self.chat.peer.poll_event() {
            self.events.push_back(SessionEvent::Peer(ev));
        }
    }
}
