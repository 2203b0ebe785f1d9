//! The chat peer, sans-IO: messages straight from one client to another over TCP, acknowledged, retried,
//! queued while the receiver is offline, and never shown twice.
//!
//! The caller owns the sockets. It tells the peer about connections ([`Peer::accepted`],
//! [`Peer::connected`], [`Peer::handle_data`], [`Peer::closed`]), the roster ([`Peer::set_contact`]) and the
//! time; the peer hands back [`Action`]s (open a connection, write, close) and [`PeerEvent`]s (a message
//! arrived, was delivered, queued or failed). Frames are in [`frame`].
//!
//! A message is sent over a connection this client opens to the receiver (reused while idle); the receiver
//! acknowledges each MSG with an ACK. Unacknowledged messages are sent again after reconnecting, with
//! backoff capped at 8 s; the receiver drops the duplicates by (sender, instance, id). Messages for a nickname
//! the roster shows offline wait in a bounded queue until it shows it online, and one for a nickname shown
//! online that does not answer stays queued and is retried for as long as it is shown online: someone holding
//! the receiver's port busy delays a message, never loses it. Every input is bounded: one frame at a time per
//! connection, a short deadline for an incoming connection's HELLO and one for each started frame
//! (slowloris), a cap on connections per source address and in total.

//!
//! # Encryption and who is who
//! Every connection is a Noise session ([`channel`]): the sender opens it with IK to the key the daemon's
//! (authenticated) roster gives for the nickname it writes to, so only that key's holder reads the message;
//! the receiver learns the sender's key from the handshake. Keys come from the daemon on request
//! ([`Peer::poll_key_request`], answered with [`Peer::set_key`]); a message is reported from the nickname it
//! claims only if that nickname's key is the one that sealed it ([`PeerEvent::Message::verified`]), else as
//! from an unknown key. Duplicates are recognised by the sender's key, never by a claimed name.

#![forbid(unsafe_code)]

pub mod channel;
mod files;
pub mod frame;
pub mod wire;

pub use files::{
    Disk, FileEvent, FileInfo, FileSendError, FileState, MAX_OUTGOING, SEND_BUFFER, XferId,
};

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use slab::Slab;

use crate::client::roster::{Applied, Change, Roster};
use crate::group::Scope;
use crate::identity::{Identity, PublicKey};
use crate::nick::Nick;
use crate::registry::wire::Status;
use crate::secure::{Psk, Seeds, derive_seed};
use crate::time::Instant;
use channel::{Channel, ChannelError, Keys};
use frame::{Frame, FrameError, MAX_TEXT};
use wire::{Wire, WireReader};

/// Peer settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Our nickname.
    pub me: Nick,
    /// Our instance id.
    pub instance: u64,
    /// An outgoing connection with nothing to send is closed after this long.
    pub idle_timeout: Duration,
    /// A MSG not acknowledged within this long makes the connection suspect: it is closed and retried.
    pub ack_timeout: Duration,
    /// A started frame must complete within this long, and a connection we opened must hear the receiver's
    /// HELLO within it.
    pub frame_timeout: Duration,
    /// A connection someone opened to us must send its HELLO within this long (a sender sends it at once):
    /// connections opened and left silent to use up `max_conns` are closed soon.
    pub hello_timeout: Duration,
    /// Connections held at once (both directions); more incoming ones are refused.
    pub max_conns: usize,
    /// Incoming connections held at once from one source address (0 = no cap): a newcomer past it replaces
    /// that address's oldest silent connection, else its one idle longest, and is refused only if every one
    /// is in the middle of a frame. So one host cannot hold the connections every other host needs, and what
    /// its excess costs falls on its own connections.
    pub max_conns_per_source: usize,
    /// Messages waiting (offline or undelivered) at most, per receiver and in total.
    pub max_queue_per_peer: usize,
    /// See `max_queue_per_peer`.
    pub max_queue_total: usize,
    /// Attempts after which a message for an address given directly (no roster entry to say whether it will
    /// be back) fails; a message for a nickname is reported [`PeerEvent::Unanswered`] after this many and
    /// stays queued.
    pub max_attempts: u32,
    /// Dedupe memory: message ids remembered per sender (nickname and instance).
    pub dedupe_window: usize,
    /// Dedupe memory: senders remembered; the one heard from least recently is forgotten to make room, so a
    /// stream of made-up HELLOs costs bounded memory.
    pub dedupe_senders: usize,
    /// Our key: what our chat sessions prove.
    pub identity: Identity,
    /// The network secret, if the LAN uses one.
    pub psk: Option<Psk>,
    /// Seeds the handshakes' ephemeral keys ([`Config::new`] derives one; real programs put OS randomness
    /// here).
    pub seed: [u8; 32],
    /// How long a nickname's key, asked of the daemon, may take to come: a message held for it is shown as
    /// from an unknown key after that.
    pub key_timeout: Duration,
    /// Messages held at most (all senders together) while their senders' keys are asked for; past it, a
    /// message is shown at once, as from an unknown key.
    pub max_held: usize,
    /// What an incoming file transfer may be: offers past these are refused before anyone is asked.
    pub file_limits: crate::transfer::recv::Limits,
}

impl Config {
    /// Defaults, for `me` holding `identity`.
    pub fn new(me: Nick, instance: u64, identity: Identity) -> Config {
        let mut seed = identity.secret_bytes();
        seed[..8]
            .iter_mut()
            .zip(instance.to_le_bytes())
            .for_each(|(a, b)| *a ^= b);
        Config {
            me,
            instance,
            identity,
            psk: None,
            seed: derive_seed(&seed, "chat handshakes"),
            key_timeout: Duration::from_secs(5),
            max_held: 256,
            idle_timeout: Duration::from_secs(60),
            ack_timeout: Duration::from_secs(5),
            frame_timeout: Duration::from_secs(10),
            // A sender writes HELLO with its first bytes; on a LAN it arrives within milliseconds.
            hello_timeout: Duration::from_secs(3),
            max_conns: 256,
            // Room for the people of a terminal server writing to us at once; a connection past it only costs
            // its sender a reconnect, since the one replaced is that host's own.
            max_conns_per_source: 16,
            max_queue_per_peer: 100,
            max_queue_total: 1000,
            max_attempts: 5,
            dedupe_window: 1024,
            dedupe_senders: 64,
            file_limits: crate::transfer::recv::Limits::default(),
        }
    }
}

/// Whom a message is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// A nickname, reached at its roster address.
    Nick(Nick),
    /// An address given directly (`msg IP:PORT text`).
    Addr(SocketAddr),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Nick(n) => write!(f, "{n}"),
            Target::Addr(a) => write!(f, "{a}"),
        }
    }
}

/// Names a connection: slab index and generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId(u64);

impl ConnId {
    fn new(key: usize, generation: u32) -> Self {
        ConnId(pack(key, generation))
    }
    fn key(self) -> usize {
        (self.0 >> 32) as usize
    }
}

/// A slab slot and the generation of what it holds, in one number: the names of connections and transfers,
/// so that a name kept after its connection or transfer is gone never reaches whatever takes the slot next.
fn pack(key: usize, generation: u32) -> u64 {
    ((key as u64) << 32) | u64::from(generation)
}

/// What slab entries named by [`pack`]ed numbers carry.
trait Generational {
    fn generation(&self) -> u32;
}

/// The entry `packed` names, if its slot still holds that generation.
fn slot<T: Generational>(slab: &Slab<T>, packed: u64) -> Option<&T> {
    slab.get((packed >> 32) as usize)
        .filter(|t| t.generation() == packed as u32)
}

/// [`slot`], mutable.
fn slot_mut<T: Generational>(slab: &mut Slab<T>, packed: u64) -> Option<&mut T> {
    slab.get_mut((packed >> 32) as usize)
        .filter(|t| t.generation() == packed as u32)
}

impl Generational for Conn {
    fn generation(&self) -> u32 {
        self.generation
    }
}

/// Something for the caller to do with a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to `addr` and report [`Peer::connected`] or [`Peer::closed`].
    Connect {
        /// The connection.
        conn: ConnId,
        /// Where.
        addr: SocketAddr,
    },
    /// The connection has output: write [`Peer::output`] and report [`Peer::wrote`].
    Write(ConnId),
    /// Close the connection (the peer has forgotten it).
    Close(ConnId),
}

/// Something for the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    /// A message arrived.
    Message {
        /// The nickname its sender claims (its HELLO): only who sent it if `verified`.
        from: Nick,
        /// The sender's key, proved by the session's handshake: who sent it.
        key: PublicKey,
        /// From where.
        addr: SocketAddr,
        /// When it was sent (sender's clock, Unix ms).
        sent_ms: u64,
        /// Where it was said: to us alone, to everyone, in a channel (as the sender says; a channel message
        /// is shown under the channel whether or not we think we are in it, so nothing is hidden).
        scope: Scope,
        /// The text, with control characters and terminal escapes removed.
        text: String,
        /// The roster gives this key for `from`: the message is `from`'s. Otherwise it comes from an unknown
        /// key (show it with the key's fingerprint, never under `from`).
        verified: bool,
    },
    /// The receiver acknowledged a message.
    Delivered {
        /// The id [`Peer::send`] returned.
        id: u64,
        /// Whom it was for.
        to: Target,
    },
    /// The receiver is offline: the message waits until it is back.
    Queued {
        /// Its id.
        id: u64,
        /// Whom it is for.
        to: Target,
    },
    /// The receiver, shown online, has not acknowledged the message after [`Config::max_attempts`]
    /// attempts; it stays queued and is retried (every 8 s at most) while the roster shows the receiver
    /// online. Reported once per message.
    Unanswered {
        /// Its id.
        id: u64,
        /// Whom it is for.
        to: Target,
        /// Attempts so far.
        attempts: u32,
    },
    /// The message will not be delivered.
    Failed {
        /// Its id.
        id: u64,
        /// Whom it was for.
        to: Target,
        /// Why, for the user.
        reason: String,
    },
    /// Something happened to a file transfer.
    File {
        /// Which.
        xfer: XferId,
        /// What.
        event: FileEvent,
        /// The transfer as it stood then (it may be forgotten by the time this is read).
        info: FileInfo,
    },
}

/// Why a message was not accepted for sending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendError {
    /// Empty after trimming.
    Empty,
    /// Longer than 4 KiB of UTF-8.
    TooLong,
    /// The queue for this receiver, or all queues, are full.
    QueueFull,
    /// The nickname is not in the roster (and was never seen).
    UnknownNick(Nick),
    /// Not in the roster as typed, and in another case under several names: which one?
    Ambiguous(Nick, Vec<Nick>),
    /// A message to many for more receivers than the queues hold at all: (receivers, the most).
    TooMany(usize, usize),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Empty => f.write_str("empty message"),
            SendError::TooLong => write!(
                f,
                "message longer than {MAX_TEXT} bytes (64 KiB): send it in parts"
            ),
            SendError::QueueFull => {
                f.write_str("too many messages waiting; try again once some are delivered")
            }
            SendError::UnknownNick(n) => {
                write!(f, "no one called {n} is in the roster (see `list`)")
            }
            SendError::TooMany(n, max) => write!(
                f,
                "{n} receivers: a message to many reaches at most {max} (each copy waits in a queue of that \
                 size); write to a channel with fewer members"
            ),
            SendError::Ambiguous(n, alike) => {
                let names: Vec<&str> = alike.iter().map(Nick::as_str).collect();
                write!(
                    f,
                    "no one is called {n} exactly; did you mean {}?",
                    names.join(" or ")
                )
            }
        }
    }
}

impl std::error::Error for SendError {}

/// Counters.
#[derive(Copy, Clone, Debug, Default, serde::Serialize)]
pub struct Stats {
    /// Messages received (new, shown).
    pub received: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Messages acknowledged by their receivers.
    pub delivered: u64,
    /// Messages sent again after a failure.
    pub retransmitted: u64,
    /// Connections closed for an oversized frame.
    pub oversized: u64,
    /// Connections closed for a malformed frame.
    pub malformed: u64,
    /// Connections closed for being too slow (HELLO or a frame not completed in time).
    pub slow: u64,
    /// Incoming connections refused, or silent ones dropped to make room, at the connection cap.
    pub refused: u64,
    /// Incoming connections refused, or that address's own ones closed to make room, at
    /// [`Config::max_conns_per_source`].
    pub source_limited: u64,
    /// Messages for a nickname not acknowledged after [`Config::max_attempts`], kept queued.
    pub unanswered: u64,
    /// Connections closed because a sealed message did not open (forged, replayed, altered).
    pub forged: u64,
    /// Connections whose handshake failed (the other end is not the key we expected, or lacks our secret).
    pub handshakes_failed: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    In,
    Out(Target),
}

struct Conn {
    generation: u32,
    dir: Dir,
    addr: SocketAddr,
    /// Its Noise session.
    chan: Channel,
    /// Who is on the other end, once its HELLO arrived.
    peer: Option<(Nick, u64)>,
    open: bool,
    reader: WireReader,
    /// The transfer this connection carries, if it is a transfer's (then it carries no chat).
    xfer: Option<XferId>,
    /// It has carried a chat message (then it carries no transfer).
    carried_chat: bool,
    /// Closed by us once its output is written (a transfer's last frames: FAIL, DONE); input is ignored.
    closing: bool,
    out: Vec<u8>,
    written: usize,
    opened: Instant,
    last_activity: Instant,
    partial_since: Option<Instant>,
    /// Ids sent on this connection and not yet acknowledged, with when.
    in_flight: VecDeque<(u64, Instant)>,
    /// The earliest of its deadlines in `Peer::timers` (see [`Peer::arm`]), if one is there.
    armed: Option<Instant>,
}

struct Pending {
    id: u64,
    sent_ms: u64,
    scope: Scope,
    text: String,
    attempts: u32,
    /// Sent on the current connection, awaiting ACK.
    in_flight: bool,
}

/// One sender's recent message ids: a set to look up, and their arrival order to forget the oldest.
struct SeenIds {
    ids: HashSet<u64>,
    order: VecDeque<u64>,
    last_heard: Instant,
}

#[derive(Default)]
struct Dest {
    conn: Option<ConnId>,
    msgs: VecDeque<Pending>,
    next_try: Instant,
    backoff: Duration,
}

/// The peer.
pub struct Peer {
    cfg: Config,
    conns: Slab<Conn>,
    next_generation: u32,
    dests: HashMap<Target, Dest>,
    contacts: HashMap<Nick, (SocketAddr, bool)>,
    queued_total: usize,
    next_id: u64,
    /// Recently heard senders (key, instance) → their recent message ids, for dedupe.
    seen: HashMap<(PublicKey, u64), SeenIds>,
    /// Nicknames' keys, as the daemon gave them.
    keys: HashMap<Nick, PublicKey>,
    /// Nicknames whose key was asked for and not answered yet, with when; and those the daemon answered
    /// with no usable key (`no_key`), with when, so that they are asked again only after
    /// [`Config::key_timeout`].
    asked: HashMap<Nick, Instant>,
    /// The nicknames in `asked` that were answered (no key, or one withheld): nothing is waited for from
    /// the daemon for them, so what they send is shown at once.
    no_key: HashSet<Nick>,
    /// Key requests not yet handed to the caller.
    key_requests: VecDeque<Nick>,
    /// Messages received (and acknowledged) whose claimed sender's key is being asked for, with that name:
    /// shown once the key comes (or does not), whether or not their connection is still open.
    held: VecDeque<(Nick, PeerEvent)>,
    seeds: Seeds,
    actions: VecDeque<Action>,
    events: VecDeque<PeerEvent>,
    stats: Stats,
    /// Connections' deadlines, earliest first, found without walking every connection each loop turn (a
    /// sender in a channel of 100 holds 100). An entry may be stale (its connection closed, or its deadline
    /// since moved later): it is checked when it comes due. A deadline that moves earlier is pushed
    /// ([`Peer::arm`]).
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    /// File transfers, both ways.
    xfers: Slab<files::Xfer>,
}

/// Removes control characters (but newlines and tabs, which a multi-line message needs), terminal escape
/// sequences and bidirectional overrides from received text, so a message cannot move the cursor, recolour the
/// terminal or disguise itself. A carriage return goes too (it would let a line overwrite itself on screen):
/// CRLF line ends read as LF.
pub fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI (ESC [ ... final byte in @..~) and OSC (ESC ] ... BEL or ESC \) sequences go whole.
            match chars.peek() {
                Some('[') => {
                    chars.next();
                    for d in chars.by_ref() {
                        if ('@'..='~').contains(&d) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    chars.next();
                    while let Some(d) = chars.next() {
                        if d == '\u{7}' || (d == '\u{1b}' && chars.peek() == Some(&'\\')) {
                            if d == '\u{1b}' {
                                chars.next();
                            }
                            break;
                        }
                    }
                }
                _ => {
                    chars.next();
                }
            }
            continue;
        }
        if (c.is_control() && c != '\n' && c != '\t')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
        {
            continue;
        }
        out.push(c);
    }
    out
}

/// [`sanitize`], and the line kept on one line (newlines and tabs become spaces): for text shown inside a
/// line, such as an away message in the roster listing.
pub fn sanitize_line(text: &str) -> String {
    sanitize(text)
        .chars()
        .map(|c| if c == '\n' || c == '\t' { ' ' } else { c })
        .collect()
}

impl Peer {
    /// A peer with no connections.
    pub fn new(cfg: Config) -> Peer {
        Peer {
            seeds: Seeds::new(&cfg.seed),
            // Ids unique per instance: the high half from the instance, the low half counts.
            next_id: cfg.instance << 32,
            cfg,
            conns: Slab::new(),
            next_generation: 1,
            dests: HashMap::new(),
            contacts: HashMap::new(),
            queued_total: 0,
            seen: HashMap::new(),
            keys: HashMap::new(),
            asked: HashMap::new(),
            no_key: HashSet::new(),
            key_requests: VecDeque::new(),
            held: VecDeque::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            timers: BinaryHeap::new(),
            xfers: Slab::new(),
        }
    }

    /// The next nickname whose key the daemon should be asked for; answer with [`Peer::set_key`].
    pub fn poll_key_request(&mut self) -> Option<Nick> {
        self.key_requests.pop_front()
    }

    /// The key the daemon gives for `nick` (`None`: it knows none). Messages waiting for it go out, and
    /// messages held for it are shown, verified if it is the key that sealed them. A changed key closes the
    /// connections bound to the old one.
    pub fn set_key(&mut self, now: Instant, nick: Nick, key: Option<PublicKey>) {
        self.asked.remove(&nick);
        self.no_key.remove(&nick);
        let old = match key {
            Some(k) => self.keys.insert(nick, k),
            None => self.keys.remove(&nick),
        };
        if old.is_some() && old != key {
            let stale: Vec<ConnId> = self
                .conns
                .iter()
                .filter(|(_, c)| c.dir == Dir::Out(Target::Nick(nick)))
                .map(|(k, c)| ConnId::new(k, c.generation))
                .collect();
            for c in stale {
                self.close(c, now);
            }
        }
        self.release_held(Some(nick));
        if key.is_none() {
            // No key to use (none, or one withheld until the user accepts it): asked again after the key
            // timeout, not at once, or a waiting message would ask in a loop. Nothing is held for it meanwhile:
            // the answer is in.
            self.asked.insert(nick, now);
            self.no_key.insert(nick);
        }
        self.pump(now, Target::Nick(nick));
        self.pump_files(now, Some(Target::Nick(nick)));
    }

    /// Whether `nick`'s key was asked for (by [`Peer::poll_key_request`]) and not answered yet.
    pub fn wants_key(&self, nick: &Nick) -> bool {
        self.asked.contains_key(nick) && !self.no_key.contains(nick)
    }

    /// The key known for `nick`, if any.
    pub fn key_of(&self, nick: &Nick) -> Option<PublicKey> {
        self.keys.get(nick).copied()
    }

    /// Asks for `nick`'s key unless it was asked for already.
    fn want_key(&mut self, now: Instant, nick: Nick) {
        if self.keys.contains_key(&nick) || self.asked.contains_key(&nick) {
            return;
        }
        // Bounded like the connections that can cause it.
        if self.asked.len() >= self.cfg.max_conns {
            return;
        }
        self.asked.insert(nick, now);
        self.key_requests.push_back(nick);
    }

    /// Shows the messages held for their sender's key: for `nick` (or every nickname no longer asked for),
    /// verified if the key now known for the nickname they claim is the one that sealed them.
    fn release_held(&mut self, nick: Option<Nick>) {
        let mut keep = VecDeque::new();
        for (from, mut ev) in std::mem::take(&mut self.held) {
            if nick.is_some_and(|n| n != from) || self.wants_key(&from) {
                keep.push_back((from, ev));
                continue;
            }
            let known = self.keys.get(&from).copied();
            if let PeerEvent::Message { key, verified, .. }
            | PeerEvent::File {
                event: FileEvent::Offered { key, verified, .. },
                ..
            } = &mut ev
            {
                *verified = known == Some(*key);
            }
            self.events.push_back(ev);
        }
        self.held = keep;
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Its settings (the queue bounds, for a caller that queues on disk too).
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Connections open or opening.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Messages waiting for delivery (offline or in flight).
    pub fn waiting(&self) -> usize {
        self.queued_total
    }

    /// Where message `id` (still waiting or in flight) goes: the roster name it was resolved to.
    pub fn target_of(&self, id: u64) -> Option<Target> {
        self.dests
            .iter()
            .find(|(_, d)| d.msgs.iter().any(|m| m.id == id))
            .map(|(t, _)| *t)
    }

    /// Every waiting message: (receiver, id, sent time, scope, text), for saving across restarts.
    pub fn waiting_messages(&self) -> Vec<(Target, u64, u64, Scope, String)> {
        self.dests
            .iter()
            .flat_map(|(t, d)| {
                d.msgs
                    .iter()
                    .map(move |m| (*t, m.id, m.sent_ms, m.scope, m.text.clone()))
            })
            .collect()
    }

    /// The next action.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<PeerEvent> {
        self.events.pop_front()
    }

    fn get(&self, id: ConnId) -> Option<&Conn> {
        slot(&self.conns, id.0)
    }

    fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        slot_mut(&mut self.conns, id.0)
    }

    fn new_conn(
        &mut self,
        now: Instant,
        dir: Dir,
        addr: SocketAddr,
        open: bool,
        chan: Channel,
        out: Vec<u8>,
    ) -> ConnId {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        let key = self.conns.insert(Conn {
            generation,
            dir,
            addr,
            chan,
            peer: None,
            open,
            reader: WireReader::default(),
            xfer: None,
            carried_chat: false,
            closing: false,
            out,
            written: 0,
            opened: now,
            last_activity: now,
            partial_since: None,
            in_flight: VecDeque::new(),
            armed: None,
        });
        let id = ConnId::new(key, generation);
        self.arm(id);
        id
    }

    /// Puts connection `id`'s next deadline in the timer heap if it is earlier than the one there: called
    /// wherever a deadline can move earlier (a new connection, a message in flight, input read: a frame
    /// started, the last ACK in). Deadlines that move later need nothing: the earlier entry finds out when it
    /// is due.
    fn arm(&mut self, id: ConnId) {
        let Some(d) = self.get(id).and_then(|c| self.conn_deadline(c)) else {
            return;
        };
        if let Some(c) = self.get_mut(id)
            && c.armed.is_none_or(|a| d < a)
        {
            c.armed = Some(d);
            self.timers.push(Reverse((d, id.0)));
        }
    }

    /// Seals a frame onto the connection (held until its session opens).
    fn queue_frame(&mut self, id: ConnId, f: &Frame) {
        self.queue_plain(id, |plain| f.encode(plain));
    }

    /// Seals what `encode` writes (whole frames, chat or transfer) onto the connection.
    fn queue_plain(&mut self, id: ConnId, encode: impl FnOnce(&mut Vec<u8>)) {
        if let Some(c) = self.get_mut(id) {
            let was_empty = c.written == c.out.len();
            let mut plain = Vec::new();
            encode(&mut plain);
            c.chan.write(&plain, &mut c.out);
            if was_empty && c.open && c.written < c.out.len() {
                self.actions.push_back(Action::Write(id));
            }
        }
    }

    /// What a roster entry says about a nickname: where it listens and whether it is online. Messages waiting
    /// for it are retried at once when it comes online.
    pub fn set_contact(&mut self, now: Instant, nick: Nick, addr: SocketAddr, online: bool) {
        let before = self.contacts.insert(nick, (addr, online));
        let t = Target::Nick(nick);
        if online && before.is_none_or(|(a, o)| !o || a != addr) {
            if let Some(d) = self.dests.get_mut(&t) {
                d.next_try = now;
                d.backoff = Duration::ZERO;
                if let Some(c) = d
                    .conn
                    .take()
                    .filter(|_| before.is_some_and(|(a, _)| a != addr))
                {
                    // It moved: the old connection leads nowhere useful.
                    self.close(c, now);
                }
            }
            self.pump(now, t);
            // Transfers waiting to be offered again go now too, not after their backoff.
            self.files_reachable(now, t);
            self.pump_files(now, Some(t));
        }
    }

    /// Keeps the contacts in step with the roster client's copy after it applied `applied` (a snapshot or
    /// changes): every entry's address and status, and nicknames removed from the roster.
    pub fn follow_roster(&mut self, now: Instant, roster: &Roster, applied: &Applied) {
        let (Applied::Snapshot(changes) | Applied::Changes(changes)) = applied else {
            return;
        };
        // The roster copy is authoritative after any application: refresh every contact.
        for e in roster.entries() {
            self.set_contact(now, e.nick, e.chat, e.status == Status::Online);
        }
        for c in changes {
            match c {
                Change::Removed(n) => self.remove_contact(n),
                Change::Renamed { from, to } => {
                    self.remove_contact(from);
                    self.follow_rename(now, *from, *to);
                }
                _ => {}
            }
        }
    }

    /// `from` is now called `to` (the same key, the daemon says): messages waiting for `from` go to `to`, and
    /// so do transfers (their connections go on: the key is the same).
    fn follow_rename(&mut self, now: Instant, from: Nick, to: Nick) {
        self.files_follow_rename(from, to);
        let Some(mut d) = self.dests.remove(&Target::Nick(from)) else {
            return;
        };
        if let Some(c) = d.conn.take() {
            self.close(c, now);
        }
        for m in &mut d.msgs {
            m.in_flight = false;
        }
        let into = self.dests.entry(Target::Nick(to)).or_default();
        into.msgs.extend(d.msgs);
        into.next_try = now;
        self.pump(now, Target::Nick(to));
    }

    /// Our nickname changed (the daemon accepted a rename): new connections say the new one in HELLO.
    pub fn set_me(&mut self, me: Nick) {
        self.cfg.me = me;
    }

    /// A nickname left the roster. Its key is forgotten too: whoever registers the name next may hold
    /// another one (after `mpd release`), and is asked for afresh.
    pub fn remove_contact(&mut self, nick: &Nick) {
        if let Some(c) = self.contacts.get_mut(nick) {
            c.1 = false;
        }
        self.keys.remove(nick);
    }

    /// The roster's nickname a message to `to` goes to: the one typed, or else the one it names in another
    /// case (`msg Bob` finds bob, `msg ÉMILE` finds émile, by Unicode case folding) if exactly one does.
    fn resolve(&self, to: Target) -> Result<Target, SendError> {
        let Target::Nick(n) = to else {
            return Ok(to);
        };
        if self.contacts.contains_key(&n) {
            return Ok(to);
        }
        let mut alike: Vec<Nick> = self
            .contacts
            .keys()
            .filter(|c| c.same_folded(&n))
            .copied()
            .collect();
        match alike.len() {
            0 => Err(SendError::UnknownNick(n)),
            1 => Ok(Target::Nick(alike[0])),
            _ => {
                alike.sort_by(|a, b| a.as_str().cmp(b.as_str()));
                Err(SendError::Ambiguous(n, alike))
            }
        }
    }

    /// Queues `text` for `to`; returns its id. Delivery, queueing and failure are reported as events.
    pub fn send(
        &mut self,
        now: Instant,
        wall_ms: u64,
        to: Target,
        text: &str,
    ) -> Result<u64, SendError> {
        Self::check_text(text)?;
        let to = self.resolve(to)?;
        if !self.has_room(&[to]) {
            return Err(SendError::QueueFull);
        }
        self.next_id += 1;
        let id = self.next_id;
        self.enqueue(now, to, id, wall_ms, Scope::Direct, text.to_string());
        Ok(id)
    }

    /// Queues `text`, said in `scope` (everyone, a channel), for each of `to` (nicknames from the roster, the
    /// caller's choice of members); returns its one id, which every receiver's delivery, queueing or failure
    /// is reported under. All or nothing: refused if any receiver's queue is full.
    pub fn send_to_many(
        &mut self,
        now: Instant,
        wall_ms: u64,
        scope: Scope,
        to: &[Nick],
        text: &str,
    ) -> Result<u64, SendError> {
        Self::check_text(text)?;
        if to.len() > self.cfg.max_queue_total {
            return Err(SendError::TooMany(to.len(), self.cfg.max_queue_total));
        }
        let targets: Vec<Target> = to.iter().map(|n| Target::Nick(*n)).collect();
        if !self.has_room(&targets) {
            return Err(SendError::QueueFull);
        }
        self.next_id += 1;
        let id = self.next_id;
        for t in targets {
            self.enqueue(now, t, id, wall_ms, scope, text.to_string());
        }
        Ok(id)
    }

    /// Sent as written (indentation, newlines, a trailing newline from a pipe): only a message of blanks
    /// alone is refused, and one past the frame's bound.
    fn check_text(text: &str) -> Result<(), SendError> {
        if text.trim().is_empty() {
            return Err(SendError::Empty);
        }
        if text.len() > MAX_TEXT {
            return Err(SendError::TooLong);
        }
        Ok(())
    }

    /// Whether one more message for each of `to` fits the queue bounds.
    fn has_room(&self, to: &[Target]) -> bool {
        self.queued_total + to.len() <= self.cfg.max_queue_total
            && to.iter().all(|t| {
                self.dests.get(t).map_or(0, |d| d.msgs.len()) < self.cfg.max_queue_per_peer
            })
    }

    /// Restores a message saved by an earlier run (see [`Peer::waiting_messages`]).
    pub fn restore(
        &mut self,
        now: Instant,
        to: Target,
        id: u64,
        sent_ms: u64,
        scope: Scope,
        text: String,
    ) {
        if self.queued_total < self.cfg.max_queue_total {
            self.next_id = self.next_id.max(id);
            self.enqueue(now, to, id, sent_ms, scope, text);
        }
    }

    fn enqueue(
        &mut self,
        now: Instant,
        to: Target,
        id: u64,
        sent_ms: u64,
        scope: Scope,
        text: String,
    ) {
        self.queued_total += 1;
        let d = self.dests.entry(to).or_default();
        d.msgs.push_back(Pending {
            id,
            sent_ms,
            scope,
            text,
            attempts: 0,
            in_flight: false,
        });
        if let Target::Nick(n) = to
            && !self.contacts.get(&n).is_some_and(|c| c.1)
        {
            self.events.push_back(PeerEvent::Queued { id, to });
            return;
        }
        self.pump(now, to);
    }

    /// Whether a connection to `to` can be opened now: it has an address, and for a nickname its key is
    /// known (one being asked for is waited for, not retried in a loop).
    fn can_connect(&self, to: Target) -> bool {
        self.addr_of(to).is_some()
            && match to {
                Target::Nick(n) => self.keys.contains_key(&n),
                Target::Addr(_) => true,
            }
    }

    /// Where messages for `to` go now, if anywhere.
    fn addr_of(&self, to: Target) -> Option<SocketAddr> {
        match to {
            Target::Addr(a) => Some(a),
            Target::Nick(n) => self.contacts.get(&n).filter(|c| c.1).map(|c| c.0),
        }
    }

    /// Moves `to`'s waiting messages along: opens a connection if needed and allowed, writes what is unsent.
    fn pump(&mut self, now: Instant, to: Target) {
        let Some(addr) = self.addr_of(to) else {
            return;
        };
        let Some(d) = self.dests.get(&to) else {
            return;
        };
        if d.msgs.is_empty() {
            return;
        }
        let conn = match d.conn.filter(|c| self.get(*c).is_some()) {
            Some(c) => c,
            None => {
                if now < d.next_try {
                    return;
                }
                let Some(c) = self.open_conn(now, to, addr, None) else {
                    return;
                };
                if let Some(d) = self.dests.get_mut(&to) {
                    d.conn = Some(c);
                }
                c
            }
        };
        let mut frames = Vec::new();
        if let Some(d) = self.dests.get_mut(&to) {
            for m in d.msgs.iter_mut().filter(|m| !m.in_flight) {
                m.in_flight = true;
                m.attempts = m.attempts.saturating_add(1);
                if m.attempts > 1 {
                    self.stats.retransmitted += 1;
                }
                frames.push((
                    m.id,
                    Frame::Msg {
                        id: m.id,
                        sent_ms: m.sent_ms,
                        scope: m.scope,
                        text: m.text.clone(),
                    },
                ));
            }
        }
        for (id, f) in frames {
            self.queue_frame(conn, &f);
            if let Some(c) = self.get_mut(conn) {
                c.in_flight.push_back((id, now));
            }
        }
        // Its ACK deadline, earlier than an idle connection's.
        self.arm(conn);
    }

    /// Opens a connection to `to` at `addr` (for transfer `xfer`, or for chat) and queues our HELLO. IK to
    /// the roster's key for a nickname, asked for first if we do not have it (then `None`: the caller tries
    /// again when the answer comes); XX to an address given directly, whose key nobody vouches for.
    fn open_conn(
        &mut self,
        now: Instant,
        to: Target,
        addr: SocketAddr,
        xfer: Option<XferId>,
    ) -> Option<ConnId> {
        let key = match to {
            Target::Nick(n) => match self.keys.get(&n) {
                Some(k) => Some(*k),
                None => {
                    self.want_key(now, n);
                    return None;
                }
            },
            Target::Addr(_) => None,
        };
        let (chan, first) = {
            let mut keys = Keys {
                me: &self.cfg.identity,
                psk: self.cfg.psk.as_ref(),
                seeds: &mut self.seeds,
            };
            Channel::outgoing(&mut keys, key.as_ref())
        };
        let c = self.new_conn(now, Dir::Out(to), addr, false, chan, first);
        if let Some(conn) = self.get_mut(c) {
            conn.xfer = xfer;
        }
        self.actions.push_back(Action::Connect { conn: c, addr });
        let hello = Frame::Hello {
            nick: self.cfg.me,
            instance: self.cfg.instance,
        };
        self.queue_frame(c, &hello);
        Some(c)
    }

    /// A connection came in from `addr`. `None` means refuse it (close it at once): too many connections.
    pub fn accepted(&mut self, now: Instant, addr: SocketAddr) -> Option<ConnId> {
        if !self.room_for_source(now, addr) {
            return None;
        }
        if self.conns.len() >= self.cfg.max_conns {
            // A flood of silent connections must not lock real peers out: make room by dropping the oldest
            // incoming connection that has not said HELLO yet; refuse only if every one has.
            let silent = self
                .conns
                .iter()
                .filter(|(_, c)| c.dir == Dir::In && c.peer.is_none())
                .min_by_key(|(_, c)| c.opened)
                .map(|(k, c)| ConnId::new(k, c.generation));
            self.stats.refused += 1;
            match silent {
                Some(old) => self.close(old, now),
                None => return None,
            }
        }
        let c = self.new_conn(now, Dir::In, addr, true, Channel::incoming(), Vec::new());
        let hello = Frame::Hello {
            nick: self.cfg.me,
            instance: self.cfg.instance,
        };
        self.queue_frame(c, &hello);
        Some(c)
    }

    /// Whether a connection from `addr` fits under [`Config::max_conns_per_source`], after closing one of
    /// that address's own if needed: its oldest silent connection, else the one idle longest with no frame
    /// half-read (a half-read frame has its own deadline). A scan of our connections, at most `max_conns`.
    fn room_for_source(&mut self, now: Instant, addr: SocketAddr) -> bool {
        let cap = self.cfg.max_conns_per_source;
        if cap == 0 {
            return true;
        }
        let ip = addr.ip().to_canonical();
        let theirs: Vec<(ConnId, &Conn)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.dir == Dir::In && c.addr.ip().to_canonical() == ip)
            .map(|(k, c)| (ConnId::new(k, c.generation), c))
            .collect();
        if theirs.len() < cap {
            return true;
        }
        self.stats.source_limited += 1;
        let silent = theirs
            .iter()
            .filter(|(_, c)| c.peer.is_none())
            .min_by_key(|(_, c)| c.opened);
        let idle = || {
            theirs
                .iter()
                .filter(|(_, c)| c.partial_since.is_none())
                .min_by_key(|(_, c)| c.last_activity)
        };
        let Some(&(old, _)) = silent.or_else(idle) else {
            return false;
        };
        self.close(old, now);
        true
    }

    /// An outgoing connection completed.
    pub fn connected(&mut self, now: Instant, id: ConnId) {
        if let Some(c) = self.get_mut(id) {
            c.open = true;
            c.last_activity = now;
            if c.written < c.out.len() {
                self.actions.push_back(Action::Write(id));
            }
        }
    }

    /// Bytes waiting to be written on `id`.
    pub fn output(&self, id: ConnId) -> &[u8] {
        self.get(id).map_or(&[], |c| &c.out[c.written..])
    }

    /// `n` bytes of [`Peer::output`] were written.
    pub fn wrote(&mut self, now: Instant, id: ConnId, n: usize) {
        if let Some(c) = self.get_mut(id) {
            c.written += n;
            c.last_activity = now;
            if c.written >= c.out.len() {
                c.out.clear();
                c.written = 0;
                if c.closing {
                    self.close(id, now);
                }
            }
        }
    }

    /// Bytes arrived on `id`.
    pub fn handle_data(&mut self, now: Instant, wall_ms: u64, id: ConnId, bytes: &[u8]) {
        let mut frames = Vec::new();
        // Plaintext is never longer than what carried it: one allocation, no growing.
        let (mut plain, mut wire) = (Vec::with_capacity(bytes.len()), Vec::new());
        let Peer {
            conns, cfg, seeds, ..
        } = self;
        let Some(c) = conns
            .get_mut(id.key())
            .filter(|c| c.generation == id.0 as u32 && !c.closing)
        else {
            return;
        };
        let mut keys = Keys {
            me: &cfg.identity,
            psk: cfg.psk.as_ref(),
            seeds,
        };
        // An address given directly: whoever holds the key there (nobody vouches for one).
        let sealed = c
            .chan
            .read(bytes, &mut keys, |_| true, &mut plain, &mut wire);
        if !wire.is_empty() {
            let was_empty = c.written == c.out.len();
            c.out.extend_from_slice(&wire);
            if was_empty && c.open {
                self.actions.push_back(Action::Write(id));
            }
        }
        if let Err(e) = sealed {
            // Our IK to the key we had for a nickname failed: that key may be stale (the name changed hands):
            // ask the daemon again before the next attempt.
            if let (ChannelError::Handshake, Some(Dir::Out(Target::Nick(n)))) =
                (&e, self.get(id).map(|c| c.dir))
            {
                self.keys.remove(&n);
            }
            match e {
                ChannelError::Forged => self.stats.forged += 1,
                ChannelError::Handshake
                | ChannelError::NotAccepted(_)
                | ChannelError::Refused(_) => self.stats.handshakes_failed += 1,
                ChannelError::Malformed => self.stats.malformed += 1,
            }
            log::debug!("chat connection {id:?}: {e:?}, closed");
            // A refusal that says why (to a client without the LAN's secret) goes out before the close: the
            // connection stays, reading nothing, until it is written (or the frame deadline passes). Any
            // other failure closes at once, whatever the Noise layer had answered (a replayed first
            // message's reply is of use to no one).
            if e == ChannelError::Handshake {
                self.close_after_output(id, now);
            } else {
                self.close(id, now);
            }
            return;
        }
        let r = match self.get_mut(id) {
            Some(c) => {
                c.last_activity = now;
                let r = c.reader.push(&plain, &mut frames);
                c.partial_since = if c.reader.is_partial() {
                    c.partial_since.or(Some(now))
                } else {
                    None
                };
                r
            }
            None => return,
        };
        for f in frames {
            let ok = match f {
                Wire::Chat(f) => self.handle_frame(now, wall_ms, id, f),
                Wire::File(f) => self.handle_file_frame(now, id, f),
            };
            if !ok {
                self.stats.malformed += 1;
                self.close(id, now);
                return;
            }
        }
        if let Err(e) = r {
            match e {
                FrameError::Oversized => self.stats.oversized += 1,
                FrameError::Malformed => self.stats.malformed += 1,
            }
            log::debug!("chat connection {id:?}: {e}, closed");
            self.close(id, now);
            return;
        }
        // What came may have moved a deadline earlier: a frame started, or the last ACK came (an idle
        // timeout shorter than the ACK timeout then comes first).
        self.arm(id);
    }

    /// Handles one frame; false if it breaks the protocol.
    fn handle_frame(&mut self, now: Instant, _wall_ms: u64, id: ConnId, f: Frame) -> bool {
        let Some(c) = self.get_mut(id) else {
            return true;
        };
        // A transfer's connection carries nothing else after the HELLOs.
        if c.xfer.is_some() && !matches!(f, Frame::Hello { .. }) {
            return false;
        }
        match f {
            Frame::Hello { nick, instance } => {
                if c.peer.is_some() {
                    return false;
                }
                c.peer = Some((nick, instance));
                true
            }
            Frame::Msg {
                id: mid,
                sent_ms,
                scope,
                text,
            } => {
                let Some((from, instance)) = c.peer else {
                    return false;
                };
                // Plaintext arrives only through an open session, so the key is proved.
                let Some(key) = c.chan.remote() else {
                    return false;
                };
                c.carried_chat = true;
                let addr = c.addr;
                self.queue_frame(id, &Frame::Ack { id: mid });
                if !self.note_seen(now, (key, instance), mid) {
                    self.stats.duplicates += 1;
                    return true;
                }
                self.stats.received += 1;
                let ev = PeerEvent::Message {
                    from,
                    key,
                    addr,
                    sent_ms,
                    scope,
                    text: sanitize(&text),
                    verified: self.keys.get(&from) == Some(&key),
                };
                // The roster's key for the name it claims is not known yet: ask, and show the message once
                // the answer comes (bounded; past the bound, as from an unknown key at once).
                if !self.keys.contains_key(&from) {
                    self.want_key(now, from);
                    if self.held.len() < self.cfg.max_held && self.wants_key(&from) {
                        self.held.push_back((from, ev));
                        return true;
                    }
                }
                self.events.push_back(ev);
                true
            }
            Frame::Ack { id: mid } => {
                let Dir::Out(to) = c.dir else {
                    return false;
                };
                c.in_flight.retain(|x| x.0 != mid);
                if let Some(d) = self.dests.get_mut(&to)
                    && let Some(pos) = d.msgs.iter().position(|m| m.id == mid)
                {
                    d.msgs.remove(pos);
                    d.backoff = Duration::ZERO;
                    self.queued_total -= 1;
                    self.stats.delivered += 1;
                    self.events.push_back(PeerEvent::Delivered { id: mid, to });
                }
                let _ = now;
                true
            }
        }
    }

    /// Remembers message `mid` from `sender`; false if it was already remembered (a duplicate).
    fn note_seen(&mut self, now: Instant, sender: (PublicKey, u64), mid: u64) -> bool {
        if !self.seen.contains_key(&sender) && self.seen.len() >= self.cfg.dedupe_senders.max(1) {
            // A linear scan, only when a new sender arrives and the table is full: at most `dedupe_senders`.
            if let Some(stale) = self
                .seen
                .iter()
                .min_by_key(|(_, s)| s.last_heard)
                .map(|(k, _)| *k)
            {
                self.seen.remove(&stale);
            }
        }
        let s = self.seen.entry(sender).or_insert_with(|| SeenIds {
            ids: HashSet::new(),
            order: VecDeque::new(),
            last_heard: now,
        });
        s.last_heard = now;
        if !s.ids.insert(mid) {
            return false;
        }
        s.order.push_back(mid);
        if s.order.len() > self.cfg.dedupe_window
            && let Some(old) = s.order.pop_front()
        {
            s.ids.remove(&old);
        }
        true
    }

    /// The connection failed or the other side closed it.
    pub fn closed(&mut self, now: Instant, id: ConnId) {
        if self.get(id).is_none() {
            return;
        }
        self.forget(id, now);
    }

    /// Closes `id` once what is queued on it is written (at once if nothing is); until then its input is
    /// ignored. What is queued is bounded (a refusal that says why, a transfer's last frames), and a peer
    /// that does not read it is closed at the frame deadline.
    fn close_after_output(&mut self, id: ConnId, now: Instant) {
        match self.get_mut(id) {
            Some(c) if c.open && c.written < c.out.len() => {
                c.closing = true;
                c.last_activity = now;
                self.arm(id);
            }
            _ => self.close(id, now),
        }
    }

    /// Closes `id` on our side.
    fn close(&mut self, id: ConnId, now: Instant) {
        if self.get(id).is_some() {
            self.actions.push_back(Action::Close(id));
            self.forget(id, now);
        }
    }

    /// Drops a connection's state; messages in flight on it go back to waiting, with backoff.
    fn forget(&mut self, id: ConnId, now: Instant) {
        let c = self.conns.remove(id.key());
        if let Some(x) = c.xfer {
            self.file_cut(now, x);
            return;
        }
        let Dir::Out(to) = c.dir else {
            return;
        };
        let max = self.cfg.max_attempts;
        let online = self.addr_of(to).is_some();
        let Some(d) = self.dests.get_mut(&to) else {
            return;
        };
        if d.conn == Some(id) {
            d.conn = None;
        }
        let mut failed = Vec::new();
        let mut unanswered = Vec::new();
        d.msgs.retain_mut(|m| {
            if m.in_flight {
                m.in_flight = false;
                match to {
                    // An address given directly has no roster entry to say whether it will be back.
                    Target::Addr(_) if m.attempts >= max && online => {
                        failed.push(m.id);
                        return false;
                    }
                    // A nickname shown online that does not answer (stopped, or its port held busy by
                    // someone) keeps the message: retried at the capped backoff, and waiting like any other
                    // once the roster shows it offline. The queue bounds hold, as nothing is added here.
                    Target::Nick(_) if m.attempts == max && online => {
                        unanswered.push((m.id, m.attempts));
                    }
                    _ => {}
                }
            }
            true
        });
        if !d.msgs.is_empty() {
            d.backoff = (d.backoff * 2).clamp(Duration::from_millis(500), Duration::from_secs(8));
            d.next_try = now + d.backoff;
        } else if d.conn.is_none() {
            // Nothing waits for it and no connection leads there: forget it, or a long-running client keeps
            // an entry for every address it ever wrote to.
            self.dests.remove(&to);
        }
        for (mid, attempts) in unanswered {
            self.stats.unanswered += 1;
            self.events.push_back(PeerEvent::Unanswered {
                id: mid,
                to,
                attempts,
            });
        }
        for mid in failed {
            self.queued_total -= 1;
            self.events.push_back(PeerEvent::Failed {
                id: mid,
                to,
                reason: format!("no acknowledgement after {max} attempts"),
            });
        }
    }

    /// When [`Peer::handle_timeout`] should next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let conns = self.timers.peek().map(|Reverse((t, _))| *t);
        let dests = self
            .dests
            .iter()
            .filter(|(t, d)| !d.msgs.is_empty() && d.conn.is_none() && self.can_connect(**t))
            .map(|(_, d)| d.next_try);
        let keys = self.asked.values().map(|t| *t + self.cfg.key_timeout);
        // A key request not yet handed out is output: due at once.
        let asking = self
            .key_requests
            .front()
            .and_then(|n| self.asked.get(n).copied());
        conns
            .into_iter()
            .chain(self.files_due())
            .chain(dests)
            .chain(keys)
            .chain(asking)
            .min()
    }

    fn conn_deadline(&self, c: &Conn) -> Option<Instant> {
        let t = self.cfg.frame_timeout;
        let hello_within = match c.dir {
            Dir::In => self.cfg.hello_timeout,
            Dir::Out(_) => t,
        };
        if c.closing {
            return Some(c.last_activity + t);
        }
        let hello = c.peer.is_none().then_some(c.opened + hello_within);
        let partial = c.partial_since.map(|p| p + t);
        if let Some(x) = c.xfer {
            // A transfer waits for its receiver's user as long as it takes; once accepted, a connection
            // silent for long is dead (the other machine asleep, the link gone) and is closed to be retried.
            let idle = self
                .file_accepted(x)
                .then_some(c.last_activity + self.cfg.idle_timeout * 2);
            return [hello, partial, idle].into_iter().flatten().min();
        }
        let ack = c.in_flight.front().map(|(_, s)| *s + self.cfg.ack_timeout);
        let idle = matches!(c.dir, Dir::Out(_))
            .then_some(c.last_activity + self.cfg.idle_timeout)
            .filter(|_| c.in_flight.is_empty());
        let inbound_idle =
            matches!(c.dir, Dir::In).then_some(c.last_activity + self.cfg.idle_timeout * 2);
        [hello, partial, ack, idle, inbound_idle]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs every deadline due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due: Vec<(ConnId, bool)> = Vec::new();
        while let Some(&Reverse((t, raw))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let id = ConnId(raw);
            let Some(c) = self.get_mut(id) else {
                continue;
            };
            if c.armed == Some(t) {
                c.armed = None;
            }
            let Some(c) = self.get(id) else { continue };
            match self.conn_deadline(c) {
                Some(d) if d <= now && !due.iter().any(|x| x.0 == id) => {
                    due.push((id, c.peer.is_none() || c.partial_since.is_some()));
                }
                Some(d) if d <= now => {}
                // Moved later since it was pushed: pushed again at its new time.
                Some(_) => self.arm(id),
                None => {}
            }
        }
        for (id, slow) in due {
            if slow {
                self.stats.slow += 1;
            }
            self.close(id, now);
        }
        // Keys the daemon did not give in time: held messages show as from an unknown key, and a nickname's
        // messages may ask again.
        let late = self.cfg.key_timeout;
        let expired: Vec<Nick> = self
            .asked
            .iter()
            .filter(|(_, t)| now >= **t + late)
            .map(|(n, _)| *n)
            .collect();
        if !expired.is_empty() {
            for n in &expired {
                self.asked.remove(n);
                self.no_key.remove(n);
            }
            self.release_held(None);
            // Messages waiting for one of these keys ask again (at this timeout's pace, no faster).
            for n in expired {
                self.pump(now, Target::Nick(n));
            }
        }
        let ready: Vec<Target> = self
            .dests
            .iter()
            .filter(|(t, d)| {
                !d.msgs.is_empty() && d.conn.is_none() && d.next_try <= now && self.can_connect(**t)
            })
            .map(|(t, _)| *t)
            .collect();
        for t in ready {
            self.pump(now, t);
        }
        self.pump_files(now, None);
    }
}

#[cfg(test)]
mod tests;
