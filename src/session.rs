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
    /// The daemon gives `nick` another key than the one remembered from talking to it before (SSH's
    /// "host key changed"): nothing goes to it, and nothing from it shows under its name, until the user
    /// accepts the new key (`trust NAME`).
    KeyChanged {
        /// Who.
        nick: crate::nick::Nick,
        /// The key remembered.
        remembered: crate::identity::Fingerprint,
        /// The key the daemon gives now.
        now: crate::identity::Fingerprint,
    },
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
        let mut cfg = PeerConfig::new(
            setup.nick,
            io.client.instance(),
            io.client.identity().clone(),
        );
        cfg.psk = io.client.psk().cloned();
        getrandom::fill(&mut cfg.seed)
            .map_err(|e| io::Error::other(format!("no OS randomness: {e}")))?;
        let peer = Peer::new(cfg);
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
        // Files being hashed for an offer are hashed a step per turn, and a transfer's disk work goes on a
        // piece per turn: no sleeping meanwhile.
        let wake = [self.chat.poll_timeout(self.now()), deadline]
            .into_iter()
            .flatten()
            .min();
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
        // The chat peer's questions about keys go to the daemon; its answers come back as client events.
        while let Some(nick) = self.chat.peer.poll_key_request() {
            self.io.client.query_key(nick);
        }
        while let Some(ev) = self.io.poll_event() {
            match &ev {
                ClientEvent::Roster(applied) => {
                    self.chat
                        .peer
                        .follow_roster(now, self.io.client.roster(), applied)
                }
                // New connections introduce us by the new name.
                ClientEvent::Renamed { to, .. } => self.chat.peer.set_me(*to),
                // Only the peer's own questions: a `whois` looks without remembering.
                ClientEvent::Key { nick, key } if self.chat.peer.wants_key(nick) => {
                    match self.io.vet_peer_key(*nick, *key) {
                        Ok(key) => self.chat.peer.set_key(now, *nick, key),
                        Err(remembered) => {
                            let now_fp = key.map(|k| k.fingerprint());
                            if let Some(now_fp) = now_fp {
                                self.events.push_back(SessionEvent::KeyChanged {
                                    nick: *nick,
                                    remembered: remembered.fingerprint(),
                                    now: now_fp,
                                });
                            }
                            // Withheld: messages for it wait; messages from it show as from an unknown key.
                            self.chat.peer.set_key(now, *nick, None);
                        }
                    }
                }
                _ => {}
            }
            self.events.push_back(SessionEvent::Client(ev));
        }
        self.chat.process(now, self.io.reactor.registry());
        while let Some(ev) = self.chat.peer.poll_event() {
            self.events.push_back(SessionEvent::Peer(ev));
        }
        // Asked while the peer ran just now: on their way with this turn's output.
        while let Some(nick) = self.chat.peer.poll_key_request() {
            self.io.client.query_key(nick);
        }
    }
}
