//! Files and folders over the chat port (issue 16): the peer carries a transfer's connection the way it
//! carries a chat connection (the same Noise session, HELLO, limits and deadlines) and hands its frames to
//! the transfer's state machine ([`Sender`] or [`Receiver`]), whose disk work the caller does
//! ([`Peer::poll_disk`], [`Peer::with_disk`]).
//!
//! A transfer has a connection of its own, never shared with chat, so a message between the same two
//! people never waits behind file data. The sender opens it like a chat connection (IK to the roster's key
//! for the nickname), says HELLO, then OFFER; the receiver's peer sees a transfer frame after HELLO and
//! makes the connection a transfer's.
//!
//! An outgoing transfer outlives its connections: cut (the receiver went away, the link went down), it is
//! offered again under the same id when the receiver is reachable, with backoff, until it completes, fails
//! for a reason trying again cannot fix (declined, a full disk, a changed file), or is cancelled. The
//! receiver's answer then says what it holds, and that is not sent again.

use super::*;

use crate::transfer::frame::{Frame as FileFrame, TransferId};
use crate::transfer::name::SafeName;
use crate::transfer::recv::{Receiver, RecvEvent, ResumePoint};
use crate::transfer::send::{self, OfferError, Offered, Position, SendEvent, Sender};
use crate::transfer::{Failure, frame::FailCode};

/// Unwritten output on a transfer's connection below which the sender reads more of its files: enough to
/// keep the socket busy between loop turns, small enough that file data never piles up in memory.
pub const SEND_BUFFER: usize = 512 * 1024;
/// Outgoing transfers held at once (waiting, offered or under way).
pub const MAX_OUTGOING: usize = 64;

/// Names a transfer: slab index and generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct XferId(u64);

impl XferId {
    fn new(key: usize, generation: u32) -> Self {
        XferId(pack(key, generation))
    }
    fn key(self) -> usize {
        (self.0 >> 32) as usize
    }
    /// A short number for the user to type (`accept 3`): the slot, which is reused only after the transfer
    /// is gone.
    pub fn number(self) -> u32 {
        (self.0 >> 32) as u32 + 1
    }
}

/// Something that happened to a transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileEvent {
    /// Someone offers a file or folder: accept ([`Peer::accept_file`]) or decline ([`Peer::decline_file`]).
    Offered {
        /// The transfer's id (the same each time the same thing is offered again: what is already held of
        /// it is kept under it).
        id: TransferId,
        /// The nickname the sender claims (its HELLO): whose it is only if `verified`.
        from: Nick,
        /// The sender's key, proved by the session's handshake.
        key: PublicKey,
        /// The roster gives this key for `from`.
        verified: bool,
        /// The name, sanitised.
        name: SafeName,
        /// Bytes in all.
        total: u64,
        /// Files and folders in all.
        count: u32,
    },
    /// The sending side's state machine reports (accepted, progress, done, failed).
    Send(SendEvent),
    /// The receiving side's state machine reports (progress, received, failed).
    Recv(RecvEvent),
    /// The connection went before the transfer ended. An outgoing transfer is offered again when
    /// `retry_in` has passed and the receiver is reachable; an incoming one is over (what is on disk stays,
    /// and an offer of the same id resumes from it).
    Cut {
        /// Why, as far as this side knows.
        reason: String,
        /// When an outgoing transfer is tried again; `None` for an incoming one.
        retry_in: Option<Duration>,
    },
}

/// What a transfer is, for a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    /// Its id.
    pub id: TransferId,
    /// We send it (else we receive it).
    pub outgoing: bool,
    /// The other side: whom we send to, or the nickname the sender claims.
    pub peer: Target,
    /// The name offered (sanitised on the receiving side).
    pub name: String,
    /// Bytes in all.
    pub total: u64,
    /// Bytes sent (or received) so far, held ones included.
    pub moved: u64,
    /// Bytes the receiver has verified, held ones included.
    pub verified: u64,
    /// Where it stands.
    pub state: FileState,
    /// File bytes this side sent more than once (over all its connections: what resuming cost).
    pub resent: u64,
}

/// Where a transfer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileState {
    /// Outgoing, cut, waiting out its backoff (or for its receiver to be reachable).
    WaitingToRetry,
    /// Outgoing, its connection being opened.
    Connecting,
    /// Offered, not answered yet (either way).
    Offered,
    /// Outgoing, accepted.
    Sending,
    /// Incoming, accepted.
    Receiving,
}

impl FileState {
    /// In a word or two, for a listing.
    pub fn as_str(self) -> &'static str {
        match self {
            FileState::WaitingToRetry => "waiting to retry",
            FileState::Connecting => "connecting",
            FileState::Offered => "offered",
            FileState::Sending => "sending",
            FileState::Receiving => "receiving",
        }
    }
}

impl std::fmt::Display for FileState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state machine a transfer's disk work is for: [`Peer::with_disk`] lends it.
pub enum Disk<'a> {
    /// Serve its reads ([`Sender::poll_read`]).
    Send(&'a mut Sender),
    /// Carry out its actions ([`Receiver::poll_action`]).
    Recv(&'a mut Receiver),
}

/// Why a transfer cannot be started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileSendError {
    /// The receiver is not someone we can write to.
    To(SendError),
    /// What the wire cannot carry.
    Offer(OfferError),
    /// [`MAX_OUTGOING`] transfers are held already.
    TooMany,
    /// The same thing is being sent to the same receiver already (its transfer number).
    Already(u32),
}

impl std::fmt::Display for FileSendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileSendError::To(e) => e.fmt(f),
            FileSendError::Offer(OfferError::Empty) => f.write_str("nothing to send"),
            FileSendError::Offer(OfferError::TooManyEntries) => {
                f.write_str("too many files and folders for one transfer")
            }
            FileSendError::Offer(OfferError::TooLarge) => f.write_str("too large for one transfer"),
            FileSendError::TooMany => write!(
                f,
                "{MAX_OUTGOING} transfers are under way already; wait for one to end or cancel one"
            ),
            FileSendError::Already(n) => write!(f, "this is being sent already (transfer {n})"),
        }
    }
}

impl std::error::Error for FileSendError {}

pub(super) enum Side {
    Out {
        to: Target,
        entries: Vec<Offered>,
        /// The state machine of the current connection, if one is open or opening.
        core: Option<Box<Sender>>,
        /// How far earlier connections sent (what resent bytes are counted against).
        high_water: Option<Position>,
        next_try: Instant,
        backoff: Duration,
        /// Resent bytes of the connections before the current one.
        resent_before: u64,
    },
    In {
        from: Nick,
        core: Box<Receiver>,
    },
}

pub(super) struct Xfer {
    generation: u32,
    id: TransferId,
    name: String,
    total: u64,
    conn: Option<ConnId>,
    moved: u64,
    verified: u64,
    /// Accepted and not ended: its connection may not idle for long.
    accepted: bool,
    /// Done, failed or cancelled: forgotten once its connection is closed.
    ended: bool,
    side: Side,
}

impl Generational for Xfer {
    fn generation(&self) -> u32 {
        self.generation
    }
}

impl Peer {
    fn xfer(&self, x: XferId) -> Option<&Xfer> {
        slot(&self.xfers, x.0)
    }

    fn xfer_mut(&mut self, x: XferId) -> Option<&mut Xfer> {
        slot_mut(&mut self.xfers, x.0)
    }

    fn add_xfer(&mut self, t: impl FnOnce(u32) -> Xfer) -> XferId {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        let key = self.xfers.insert(t(generation));
        XferId::new(key, generation)
    }

    /// Offers `entries` (a file, or a folder and what is in it, each path starting with `name`) to `to`
    /// under `id`, which should be the same each time the same thing is sent to the same receiver so that a
    /// resumed transfer finds what the receiver holds. The connection opens when the receiver is online and
    /// its key known; progress and the end come as [`PeerEvent::File`].
    pub fn send_files(
        &mut self,
        now: Instant,
        to: Target,
        id: TransferId,
        name: &str,
        entries: Vec<Offered>,
    ) -> Result<XferId, FileSendError> {
        let to = self.resolve(to).map_err(FileSendError::To)?;
        if let Some((k, t)) = self.xfers.iter().find(|(_, t)| {
            t.id == id && !t.ended && matches!(&t.side, Side::Out { to: o, .. } if *o == to)
        }) {
            return Err(FileSendError::Already(
                XferId::new(k, t.generation).number(),
            ));
        }
        let outgoing = self
            .xfers
            .iter()
            .filter(|(_, t)| matches!(t.side, Side::Out { .. }))
            .count();
        if outgoing >= MAX_OUTGOING {
            return Err(FileSendError::TooMany);
        }
        // Checked now, so the user hears at once what the wire cannot carry.
        let core = Sender::new(id, name, entries.clone(), send::Config::default())
            .map_err(FileSendError::Offer)?;
        let total = core.total();
        let x = self.add_xfer(|generation| Xfer {
            generation,
            id,
            name: name.to_string(),
            total,
            conn: None,
            moved: 0,
            verified: 0,
            accepted: false,
            ended: false,
            side: Side::Out {
                to,
                entries,
                core: Some(Box::new(core)),
                high_water: None,
                next_try: now,
                backoff: Duration::ZERO,
                resent_before: 0,
            },
        });
        self.pump_file(now, x);
        Ok(x)
    }

    /// What incoming offers may be from now on (offers past them are refused without asking).
    pub fn set_file_limits(&mut self, limits: crate::transfer::recv::Limits) {
        self.cfg.file_limits = limits;
    }

    /// Accepts offer `x`; `held` is what is on disk of it already (its id's resume point, or the default).
    pub fn accept_file(&mut self, now: Instant, x: XferId, held: ResumePoint) {
        if let Some(t) = self.xfer_mut(x)
            && let Side::In { core, .. } = &mut t.side
        {
            t.accepted = true;
            core.accept(held);
            self.flush_file(now, x);
        }
    }

    /// Declines offer `x`.
    pub fn decline_file(&mut self, now: Instant, x: XferId) {
        if let Some(t) = self.xfer_mut(x)
            && let Side::In { core, .. } = &mut t.side
        {
            core.decline();
            self.flush_file(now, x);
        }
    }

    /// Gives transfer `x` up, either side: FAIL cancelled goes to the other side if connected. An outgoing
    /// transfer waiting to be tried again ends at once.
    pub fn cancel_file(&mut self, now: Instant, x: XferId) {
        let Some(t) = self.xfer_mut(x) else { return };
        match &mut t.side {
            Side::In { core, .. } => core.cancel(),
            Side::Out { core: Some(c), .. } => c.cancel(),
            Side::Out { core: None, .. } => {
                let failure = Failure {
                    code: FailCode::Cancelled,
                    reason: "cancelled by the sender".into(),
                    by_peer: false,
                };
                let gone = self.xfers.remove(x.key());
                let info = self.file_info(&gone);
                self.events.push_back(PeerEvent::File {
                    xfer: x,
                    event: FileEvent::Send(SendEvent::Failed(failure)),
                    info,
                });
                return;
            }
        }
        self.flush_file(now, x);
    }

    /// Whether transfer `x` was accepted and has not ended (its connection then has an idle deadline).
    pub(super) fn file_accepted(&self, x: XferId) -> bool {
        self.xfer(x).is_some_and(|t| t.accepted && !t.ended)
    }

    /// The transfers held, for a listing, by number.
    pub fn files(&self) -> Vec<(XferId, FileInfo)> {
        self.xfers
            .iter()
            .filter(|(_, t)| !t.ended)
            .map(|(k, t)| (XferId::new(k, t.generation), self.file_info(t)))
            .collect()
    }

    /// Transfer `x`, for a listing.
    pub fn file(&self, x: XferId) -> Option<FileInfo> {
        self.xfer(x).map(|t| self.file_info(t))
    }

    /// The transfer with this number (see [`XferId::number`]), if one is held.
    pub fn file_by_number(&self, n: u32) -> Option<XferId> {
        let k = n.checked_sub(1)? as usize;
        self.xfers
            .get(k)
            .filter(|t| !t.ended)
            .map(|t| XferId::new(k, t.generation))
    }

    /// Where transfer `x` stands, if it is held: what [`Peer::file`] says, without copying the rest (the
    /// disk side asks this after every piece of work).
    pub fn file_state(&self, x: XferId) -> Option<FileState> {
        self.xfer(x).map(|t| self.state_of(t))
    }

    fn state_of(&self, t: &Xfer) -> FileState {
        let open = t.conn.and_then(|c| self.get(c)).is_some_and(|c| c.open);
        match &t.side {
            Side::Out { core: None, .. } => FileState::WaitingToRetry,
            Side::Out { .. } if !open => FileState::Connecting,
            Side::Out { .. } if !t.accepted => FileState::Offered,
            Side::Out { .. } => FileState::Sending,
            Side::In { .. } if t.accepted => FileState::Receiving,
            Side::In { .. } => FileState::Offered,
        }
    }

    fn file_info(&self, t: &Xfer) -> FileInfo {
        let (outgoing, peer, resent) = match &t.side {
            Side::Out {
                to,
                core,
                resent_before,
                ..
            } => {
                let resent = resent_before + core.as_ref().map_or(0, |c| c.stats().bytes_resent);
                (true, *to, resent)
            }
            Side::In { from, .. } => (false, Target::Nick(*from), 0),
        };
        let state = self.state_of(t);
        FileInfo {
            id: t.id,
            outgoing,
            peer,
            name: t.name.clone(),
            total: t.total,
            moved: t.moved,
            verified: t.verified,
            state,
            resent,
        }
    }

    /// A transfer with disk work to do now, if any: a sender with a read asked for and room on its
    /// connection, or a receiver with actions queued. Answer it with [`Peer::with_disk`], which must make
    /// progress (serve the read, carry out the actions).
    pub fn poll_disk(&self) -> Option<XferId> {
        self.xfers.iter().find_map(|(k, t)| {
            let wants = match &t.side {
                Side::Out { core: Some(c), .. } => {
                    c.wants_read()
                        && t.conn.and_then(|c| self.get(c)).is_some_and(|c| {
                            c.open && c.chan.is_open() && c.out.len() - c.written < SEND_BUFFER
                        })
                }
                Side::Out { core: None, .. } => false,
                Side::In { core, .. } => core.actions_queued() > 0,
            };
            wants.then(|| XferId::new(k, t.generation))
        })
    }

    /// Lends transfer `x`'s state machine to `f` for its disk work, then sends what it has to say.
    pub fn with_disk(&mut self, now: Instant, x: XferId, f: impl FnOnce(Disk<'_>)) {
        let Some(t) = self.xfer_mut(x) else { return };
        match &mut t.side {
            Side::Out { core: Some(c), .. } => f(Disk::Send(c)),
            Side::Out { core: None, .. } => return,
            Side::In { core, .. } => f(Disk::Recv(core)),
        }
        self.flush_file(now, x);
    }

    /// Moves what transfer `x`'s state machine has for the other side onto its connection and what it
    /// reports into our events; closes the connection once the transfer is over.
    fn flush_file(&mut self, now: Instant, x: XferId) {
        let mut frames = Vec::new();
        let mut events = Vec::new();
        let Some(t) = self.xfer_mut(x) else { return };
        let closed = match &mut t.side {
            Side::Out {
                core: Some(c),
                high_water,
                backoff,
                ..
            } => {
                frames.extend(std::iter::from_fn(|| c.poll_frame()));
                while let Some(e) = c.poll_event() {
                    match &e {
                        SendEvent::Accepted { .. } => {
                            t.accepted = true;
                            // The receiver answered: the next cut starts its backoff afresh.
                            *backoff = Duration::ZERO;
                        }
                        SendEvent::Progress { sent, verified, .. } => {
                            (t.moved, t.verified) = (*sent, *verified);
                        }
                        SendEvent::Done => {
                            t.verified = t.total;
                            t.ended = true;
                        }
                        SendEvent::Failed(_) => t.ended = true,
                    }
                    events.push(FileEvent::Send(e));
                }
                *high_water = c.high_water();
                c.is_closed()
            }
            Side::Out { core: None, .. } => false,
            Side::In { core, .. } => {
                frames.extend(std::iter::from_fn(|| core.poll_frame()));
                while let Some(e) = core.poll_event() {
                    match &e {
                        RecvEvent::Progress {
                            received, verified, ..
                        } => (t.moved, t.verified) = (*received, *verified),
                        RecvEvent::Received { .. } => {
                            t.verified = t.total;
                            t.ended = true;
                        }
                        RecvEvent::Failed { .. } => t.ended = true,
                        RecvEvent::Offered { .. } => {}
                    }
                    events.push(FileEvent::Recv(e));
                }
                core.is_closed()
            }
        };
        let conn = t.conn;
        if let Some(c) = conn {
            for f in &frames {
                self.queue_plain(c, |plain| f.encode(plain));
            }
            // Accepted: the idle deadline starts to apply.
            self.arm(c);
        }
        for e in events {
            self.file_event(now, x, e);
        }
        if closed && let Some(c) = conn {
            self.close_after_output(c, now);
        }
    }

    /// Reports a transfer's event; an offer whose sender's key is being asked for waits for the answer (like
    /// a message), so it is shown under the right name.
    fn file_event(&mut self, now: Instant, x: XferId, e: FileEvent) {
        if let Some(ev) = self.file_peer_event(now, x, e) {
            self.events.push_back(ev);
        }
    }

    /// [`Peer::file_event`]'s event, `None` if it is held (or its transfer is gone).
    fn file_peer_event(&mut self, now: Instant, x: XferId, e: FileEvent) -> Option<PeerEvent> {
        Some(match e {
            FileEvent::Recv(RecvEvent::Offered {
                id,
                name,
                total,
                count,
            }) => {
                let (from, key) = self
                    .xfer(x)
                    .and_then(|t| t.conn)
                    .and_then(|c| self.get(c))
                    .and_then(|c| Some((c.peer?.0, c.chan.remote()?)))?;
                let ev = PeerEvent::File {
                    xfer: x,
                    info: self.file(x)?,
                    event: FileEvent::Offered {
                        id,
                        from,
                        key,
                        verified: self.keys.get(&from) == Some(&key),
                        name,
                        total,
                        count,
                    },
                };
                if !self.keys.contains_key(&from) {
                    self.want_key(now, from);
                    if self.held.len() < self.cfg.max_held && self.wants_key(&from) {
                        self.held.push_back((from, ev));
                        return None;
                    }
                }
                ev
            }
            event => PeerEvent::File {
                xfer: x,
                info: self.file(x)?,
                event,
            },
        })
    }

    /// A transfer frame arrived on connection `id`; false if it breaks the protocol (the connection is then
    /// closed).
    pub(super) fn handle_file_frame(&mut self, now: Instant, id: ConnId, f: FileFrame) -> bool {
        let Some(c) = self.get(id) else { return true };
        let Some((from, _)) = c.peer else {
            return false;
        };
        let x = match c.xfer {
            Some(x) => x,
            // The first transfer frame on a connection someone opened to us, which has carried no chat:
            // it becomes that transfer's.
            None if c.dir == Dir::In && !c.carried_chat && matches!(f, FileFrame::Offer { .. }) => {
                let limits = self.cfg.file_limits.clone();
                let FileFrame::Offer { id: tid, total, .. } = &f else {
                    return false;
                };
                let (tid, total) = (*tid, *total);
                let x = self.add_xfer(|generation| Xfer {
                    generation,
                    id: tid,
                    name: String::new(),
                    total,
                    conn: Some(id),
                    moved: 0,
                    verified: 0,
                    accepted: false,
                    ended: false,
                    side: Side::In {
                        from,
                        core: Box::new(Receiver::new(limits)),
                    },
                });
                if let Some(c) = self.get_mut(id) {
                    c.xfer = Some(x);
                }
                x
            }
            None => return false,
        };
        let Some(t) = self.xfer_mut(x) else {
            return true;
        };
        match &mut t.side {
            Side::Out { core: Some(c), .. } => c.handle_frame(f),
            Side::Out { core: None, .. } => return true,
            Side::In { core, .. } => {
                if let FileFrame::Offer { name, .. } = &f {
                    t.name = crate::transfer::name::sanitise_name(name)
                        .as_str()
                        .to_string();
                }
                core.handle_frame(f)
            }
        }
        self.flush_file(now, x);
        true
    }

    /// Transfer `x`'s connection is gone. An ended transfer is forgotten; an outgoing one still under way
    /// waits to be offered again; an incoming one is over.
    pub(super) fn file_cut(&mut self, now: Instant, x: XferId) {
        let Some(t) = self.xfer_mut(x) else { return };
        t.conn = None;
        t.accepted = false;
        if t.ended {
            self.xfers.remove(x.key());
            return;
        }
        match &mut t.side {
            Side::In { .. } => {
                let gone = self.xfers.remove(x.key());
                let info = self.file_info(&gone);
                self.events.push_back(PeerEvent::File {
                    xfer: x,
                    info,
                    event: FileEvent::Cut {
                        reason: "the sender's connection closed".into(),
                        retry_in: None,
                    },
                });
            }
            Side::Out {
                core,
                next_try,
                backoff,
                resent_before,
                ..
            } => {
                if let Some(c) = core.take() {
                    *resent_before += c.stats().bytes_resent;
                }
                *backoff = (*backoff * 2).clamp(Duration::from_millis(500), Duration::from_secs(8));
                *next_try = now + *backoff;
                let retry_in = Some(*backoff);
                let Some(info) = self.file(x) else { return };
                self.events.push_back(PeerEvent::File {
                    xfer: x,
                    info,
                    event: FileEvent::Cut {
                        reason: "the connection to the receiver closed".into(),
                        retry_in,
                    },
                });
            }
        }
    }

    /// Outgoing transfers to `to` (or every one) that wait for a connection try now if they can.
    pub(super) fn pump_files(&mut self, now: Instant, to: Option<Target>) {
        let waiting: Vec<XferId> = self
            .xfers
            .iter()
            .filter(|(_, t)| {
                t.conn.is_none()
                    && !t.ended
                    && matches!(&t.side, Side::Out { to: o, .. } if to.is_none_or(|to| to == *o))
            })
            .map(|(k, t)| XferId::new(k, t.generation))
            .collect();
        for x in waiting {
            self.pump_file(now, x);
        }
    }

    /// `to` came online (or moved): its outgoing transfers waiting out a backoff after a cut may try at once.
    pub(super) fn files_reachable(&mut self, now: Instant, to: Target) {
        for (_, t) in self.xfers.iter_mut() {
            if let Side::Out {
                to: o,
                next_try,
                backoff,
                ..
            } = &mut t.side
                && *o == to
                && t.conn.is_none()
            {
                *next_try = now;
                *backoff = Duration::ZERO;
            }
        }
    }

    /// Outgoing transfers to `from` are to `to` now (a rename).
    pub(super) fn files_follow_rename(&mut self, from: Nick, to: Nick) {
        for (_, t) in self.xfers.iter_mut() {
            if let Side::Out { to: o, .. } = &mut t.side
                && *o == Target::Nick(from)
            {
                *o = Target::Nick(to);
            }
        }
    }

    /// When the earliest outgoing transfer waiting to be tried again is due, if it can be tried.
    pub(super) fn files_due(&self) -> Option<Instant> {
        self.xfers
            .iter()
            .filter_map(|(_, t)| match &t.side {
                Side::Out { to, next_try, .. }
                    if t.conn.is_none() && !t.ended && self.can_connect(*to) =>
                {
                    Some(*next_try)
                }
                _ => None,
            })
            .min()
    }

    /// Opens outgoing transfer `x`'s connection if it has none and can have one now.
    fn pump_file(&mut self, now: Instant, x: XferId) {
        let Some(t) = self.xfer(x) else { return };
        let Side::Out { to, next_try, .. } = &t.side else {
            return;
        };
        if t.conn.is_some() || t.ended || now < *next_try {
            return;
        }
        let to = *to;
        let Some(addr) = self.addr_of(to) else { return };
        let Some(c) = self.open_conn(now, to, addr, Some(x)) else {
            return;
        };
        if let Some(t) = self.xfer_mut(x)
            && let Side::Out {
                core,
                entries,
                high_water,
                ..
            } = &mut t.side
        {
            t.conn = Some(c);
            // The first connection uses the sender made when the transfer was started; a later one starts
            // afresh from the offer, told how far the earlier ones got.
            if core.is_none() {
                let cfg = send::Config {
                    sent_before: *high_water,
                    ..send::Config::default()
                };
                if let Ok(s) = Sender::new(t.id, &t.name, entries.clone(), cfg) {
                    *core = Some(Box::new(s));
                }
            }
        }
        self.flush_file(now, x);
    }
}
