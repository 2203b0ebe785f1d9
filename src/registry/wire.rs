//! The roster protocol: messages between `mpd` and its clients over their SCTP association (stream 0,
//! ordered, payload protocol identifier [`PPID`]). Binary, big-endian; layouts in `docs/PROTOCOL.md`.
//!
//! Since roster protocol 3 every message here travels sealed inside a Noise session
//! ([`crate::secure`]): the SCTP message is a [`crate::secure::Frame`], and these are its plaintexts.
//!
//! Parsing is bounds-checked and never panics; every message from the network goes through
//! [`ClientMsg::parse`] or [`ServerMsg::parse`] and any malformed one is a [`Malformed`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::codec::{Malformed, Put, Reader, TRUNCATED};
use crate::group::{ChannelName, MAX_CHANNELS_PER_CLIENT};
use crate::nick::Nick;

/// SCTP payload protocol identifier of roster messages: "MPR4", roster protocol 4 (compact entries with
/// optional fields for channels, presence and renames, inside a Noise session).
pub const PPID: u32 = u32::from_be_bytes(*b"MPR4");

/// The identifier of roster protocol 3 (as 4, without optional entry fields or the JOIN, PART, AWAY and
/// RENAME requests), which this version no longer speaks: its clients would refuse an entry with a channel.
/// Such a client's first message is a handshake it cannot finish with this daemon; the daemon counts and
/// logs it as an old client.
pub const PPID_V3: u32 = u32::from_be_bytes(*b"MPR3");

/// The identifier of roster protocol 2 (compact entries in clear), which this version no longer speaks: a
/// daemon answers a version 2 client's REGISTER with a REGISTERED refusal in that protocol's layout (the same
/// as this one's), telling its user to upgrade.
pub const PPID_V2: u32 = u32::from_be_bytes(*b"MPR2");

/// The identifier of roster protocol 1 (fixed-size entries), which this version no longer speaks: a daemon
/// answers a version 1 client's REGISTER (whose layout is unchanged) with a refusal it can show its user.
pub const PPID_V1: u32 = u32::from_be_bytes(*b"MPR1");

const REGISTER: u8 = 1;
const RESYNC: u8 = 2;
const KEY_QUERY: u8 = 3;
const JOIN: u8 = 4;
const PART: u8 = 5;
const AWAY: u8 = 6;
const RENAME: u8 = 7;
const ANSWER: u8 = 22;
const KEY: u8 = 19;
const BROADCAST_KEYS: u8 = 20;
const TICKET: u8 = 21;
const REGISTERED: u8 = 16;
const SNAPSHOT: u8 = 17;
const DELTA: u8 = 18;

/// Bits of [`Register::flags`].
pub mod flags {
    /// A one-shot observer (`mpc list`, `mpc send`): gets the roster, is not added to it.
    pub const OBSERVER: u8 = 1;
    /// Wants roster deltas after the snapshot.
    pub const SUBSCRIBE: u8 = 2;
    /// A member that keeps only its liveness: listed in the roster like any client, but sent no snapshot and
    /// no deltas (unless it asks with RESYNC). For headless services that others chat to, and for measuring
    /// how many clients one daemon holds where N² roster bytes could not be sent (`mpbench --liveness-only`).
    pub const NO_ROSTER: u8 = 4;
    /// With OBSERVER: the observer speaks under its nickname (`mpc send`), so it claims it like a member
    /// would: refused if another key owns it, bound to this key if no one does. Without it an observer's
    /// nickname is only a label for the daemon's log (`mpc list`).
    pub const CLAIM: u8 = 8;
}

/// A client's registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Register {
    /// [`flags`] bits.
    pub flags: u8,
    /// Random per client start.
    pub instance: u64,
    /// The nickname asked for, as sent (at most 255 bytes of UTF-8): the daemon validates it, so it can tell the
    /// client what is wrong with it. Observers send one too, for the log.
    pub nick: String,
    /// The client's chat TCP port.
    pub chat_port: u16,
    /// The address peers should use, or `None` for the address the daemon sees the client at.
    pub chat_ip: Option<IpAddr>,
}

/// Messages from a client to `mpd`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMsg {
    /// Join (or observe) the roster.
    Register(Register),
    /// Send me a full snapshot again (I missed a delta).
    Resync,
    /// Which key is this nickname bound to? (A chat sender asks before writing to it; a receiver, to tell
    /// whether a message is from whom it claims.)
    KeyQuery {
        /// The nickname, as the client has it (checked by the daemon).
        nick: Nick,
    },
    /// Put me in this channel (a member already in it: nothing changes). Answered by ANSWER.
    Join {
        /// The channel.
        channel: ChannelName,
    },
    /// Take me out of this channel. Answered by ANSWER.
    Part {
        /// The channel.
        channel: ChannelName,
    },
    /// I am away, with a message (possibly empty); `None`: I am back. Answered by ANSWER.
    Away {
        /// The away message, at most [`MAX_AWAY`] bytes of UTF-8 (the daemon removes control characters).
        message: Option<String>,
    },
    /// Call me this from now on (my key keeps owning the nickname's successor). Answered by ANSWER.
    Rename {
        /// The nickname asked for, as sent (at most 255 bytes): the daemon checks it, to say what is wrong.
        nick: String,
    },
}

/// Which request an [`ServerMsg::Answer`] answers.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// [`ClientMsg::Join`].
    Join = 1,
    /// [`ClientMsg::Part`].
    Part = 2,
    /// [`ClientMsg::Away`].
    Away = 3,
    /// [`ClientMsg::Rename`].
    Rename = 4,
}

impl Request {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Request::Join,
            2 => Request::Part,
            3 => Request::Away,
            4 => Request::Rename,
            _ => return None,
        })
    }
}

/// Longest away message, in bytes of UTF-8.
pub const MAX_AWAY: usize = 160;

/// The outcome of a registration.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RegisterResult {
    /// Registered; a snapshot follows.
    Ok = 0,
    /// Another online client has this nickname.
    NickTaken = 1,
    /// The nickname is not valid.
    InvalidNick = 2,
    /// The roster is full.
    Full = 3,
    /// The request was not understood.
    BadRequest = 4,
    /// The nickname is bound to another client's key (online or offline); only that key can use it until an
    /// operator releases it.
    NickOwned = 5,
}

impl RegisterResult {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => RegisterResult::Ok,
            1 => RegisterResult::NickTaken,
            2 => RegisterResult::InvalidNick,
            3 => RegisterResult::Full,
            4 => RegisterResult::BadRequest,
            5 => RegisterResult::NickOwned,
            _ => return None,
        })
    }
}

/// Whether a roster entry is online.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Not connected; `since` is when it went offline.
    Offline = 0,
    /// Connected; `since` is when it came online.
    Online = 1,
    /// Removed from the roster (offline longer than the daemon's TTL). Only in deltas.
    Removed = 2,
}

/// One client as the roster shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Nickname.
    pub nick: Nick,
    /// The client's instance id (changes each time it starts).
    pub instance: u64,
    /// Online, offline or removed.
    pub status: Status,
    /// When the status last changed, in milliseconds since the Unix epoch.
    pub since_ms: u64,
    /// Where to reach its chat listener.
    pub chat: SocketAddr,
    /// How often it has gone offline and come back soon after.
    pub flaps: u32,
    /// Optional fields (channels, presence, a rename); `None` when there are none, as for most entries, so
    /// an entry without them costs no allocation.
    pub extra: Option<Box<Extra>>,
}

/// An entry's optional fields. On the wire each is a (tag, length, value) item, and items of tags a reader
/// does not know are skipped, so later fields do not need a new protocol.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extra {
    /// Channels the client is in, in ascending order, each once, at most [`MAX_CHANNELS_PER_CLIENT`].
    pub channels: Vec<ChannelName>,
    /// Away, with a message (possibly empty), at most [`MAX_AWAY`] bytes; `None`: present.
    pub away: Option<String>,
    /// On a [`Status::Removed`] entry: the nickname was renamed to this one (the same key), which the same
    /// delta lists too.
    pub renamed_to: Option<Nick>,
}

impl Extra {
    /// Whether no field is set (such an entry is sent without the optional part).
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty() && self.away.is_none() && self.renamed_to.is_none()
    }

    fn encoded_len(&self) -> usize {
        self.channels
            .iter()
            .map(|c| 2 + c.as_bytes().len())
            .sum::<usize>()
            + self.away.as_ref().map_or(0, |a| 2 + a.len().min(MAX_AWAY))
            + self.renamed_to.map_or(0, |n| 2 + n.as_bytes().len())
    }
}

impl Entry {
    /// The channels it is in (ascending).
    pub fn channels(&self) -> &[ChannelName] {
        self.extra.as_deref().map_or(&[], |x| &x.channels)
    }

    /// Its away message, if it is away.
    pub fn away(&self) -> Option<&str> {
        self.extra.as_deref().and_then(|x| x.away.as_deref())
    }

    /// For a removed entry: the nickname it was renamed to.
    pub fn renamed_to(&self) -> Option<Nick> {
        self.extra.as_deref().and_then(|x| x.renamed_to)
    }

    /// Whether it is in `c`.
    pub fn in_channel(&self, c: &ChannelName) -> bool {
        self.channels().binary_search(c).is_ok()
    }
}

/// Messages from `mpd` to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerMsg {
    /// The keys of roster broadcasts (see [`crate::secure::broadcast`]): the daemon's broadcast key and
    /// this client's MAC key; the first message of every session.
    BroadcastKeys {
        /// Encrypts every broadcast, for every client.
        key: [u8; 32],
        /// Authenticates this client's copies.
        mac_key: [u8; 16],
    },
    /// A resumption ticket ([`crate::secure::ticket`]): the client's next session with this daemon may
    /// resume with it instead of a full handshake. Sent after [`ServerMsg::BroadcastKeys`].
    Ticket {
        /// How long the daemon accepts it, in seconds (the client forgets it after that).
        lifetime_s: u32,
        /// The resumption secret.
        secret: [u8; crate::secure::ticket::SECRET_LEN],
        /// The ticket, opaque to the client.
        ticket: [u8; crate::secure::ticket::TICKET_LEN],
    },
    /// The answer to KEY_QUERY: the key the nickname is bound to, if any.
    Key {
        /// The nickname asked about.
        nick: Nick,
        /// Its owner's key; `None` if no key owns it.
        key: Option<crate::identity::PublicKey>,
    },
    /// The answer to JOIN, PART, AWAY or RENAME: done, or refused and why. What changed reaches every client
    /// (this one included) as a roster delta.
    Answer {
        /// The request answered.
        request: Request,
        /// Done.
        ok: bool,
        /// For a refusal, a sentence for the user.
        reason: String,
    },
    /// The answer to REGISTER.
    Registered {
        /// Outcome.
        result: RegisterResult,
        /// The daemon's instance id.
        daemon: u64,
        /// For `NickTaken`: when trying again may succeed (the holder is being probed), in ms; 0 = no hint.
        retry_after_ms: u32,
        /// A sentence for the user.
        reason: String,
    },
    /// One page of the roster at `version`.
    Snapshot {
        /// Roster version the pages describe.
        version: u64,
        /// This page's index.
        page: u16,
        /// Number of pages.
        pages: u16,
        /// Entries on this page.
        entries: Vec<Entry>,
    },
    /// Changes from version `from` to `to`.
    Delta {
        /// The version the receiver must have.
        from: u64,
        /// The version after applying.
        to: u64,
        /// Changed entries (latest state of each).
        entries: Vec<Entry>,
    },
}

/// Longest REGISTERED reason sent, in bytes: [`ServerMsg::encode`] cuts longer ones (at a char boundary).
pub const MAX_REASON: usize = 1024;

/// Largest optional part of an entry: every channel, an away message and a rename, each with its tag and
/// length.
pub const MAX_EXTRA_LEN: usize = MAX_CHANNELS_PER_CLIENT * (2 + crate::group::MAX_CHANNEL)
    + (2 + MAX_AWAY)
    + (2 + crate::nick::MAX_NICK_BYTES);

/// Largest encoded entry: nick 1+63 (`nick::MAX_NICK_BYTES` of UTF-8), instance 8, kind 1, since 10 (varint),
/// address 16, port 2, flaps 5 (varint), and the optional part with its 2-byte length.
pub const MAX_ENTRY_LEN: usize = 1 + crate::nick::MAX_NICK_BYTES + 42 + 2 + MAX_EXTRA_LEN;

/// Smallest encoded entry: nick 1+1, instance 8, kind 1, since 1, address 4, port 2, flaps 1.
pub const MIN_ENTRY_LEN: usize = 19;

/// The first 8 of 9 bytes, as an array (no bounds check left to fail).
fn split8(b: &[u8; 9]) -> &[u8; 8] {
    b.first_chunk().unwrap_or(&[0; 8])
}

/// Bits of an entry's kind byte.
mod kind {
    /// Status: 0 offline, 1 online, 2 removed.
    pub const STATUS: u8 = 0b011;
    /// Set for an IPv6 address (16 bytes), clear for IPv4 (4 bytes).
    pub const IPV6: u8 = 0b100;
    /// Optional fields follow the flaps: a 2-byte length, then (tag, length, value) items.
    pub const EXTRA: u8 = 0b1000;
}

/// Tags of an entry's optional items.
mod tag {
    /// A channel the client is in (its name); repeated, in ascending order.
    pub const CHANNEL: u8 = 1;
    /// Away, and the message (UTF-8, possibly empty).
    pub const AWAY: u8 = 2;
    /// Renamed to this nickname.
    pub const RENAMED: u8 = 3;
}

/// Checks an entry's optional part (every item well formed, channels ascending and within the cap); unknown
/// tags are skipped.
fn check_extra(b: &[u8]) -> Result<(), Malformed> {
    let mut r = Reader::new(b);
    let mut channels = 0usize;
    let mut last: Option<&[u8]> = None;
    let mut prev_tag = 0u8;
    while r.remaining() > 0 {
        let t = r.u8()?;
        let n = usize::from(r.u8()?);
        let v = r.take(n)?;
        // One encoding per entry: items in tag order, the single-valued ones once.
        if t < prev_tag || (t == prev_tag && t != tag::CHANNEL && t <= tag::RENAMED) {
            return Err(Malformed("entry's optional items out of order"));
        }
        prev_tag = t;
        match t {
            tag::CHANNEL => {
                ChannelName::from_bytes(v).map_err(|_| Malformed("channel name"))?;
                if last.is_some_and(|l| l >= v) {
                    return Err(Malformed("channels out of order"));
                }
                last = Some(v);
                channels += 1;
                if channels > MAX_CHANNELS_PER_CLIENT {
                    return Err(Malformed("too many channels"));
                }
            }
            tag::AWAY if n > MAX_AWAY || std::str::from_utf8(v).is_err() => {
                return Err(Malformed("away message"));
            }
            tag::RENAMED => {
                Nick::check(v).map_err(|_| Malformed("renamed nickname"))?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Decodes a checked optional part.
fn parse_extra(b: &[u8]) -> Option<Extra> {
    let mut x = Extra::default();
    let mut r = Reader::new(b);
    while r.remaining() > 0 {
        let t = r.u8().ok()?;
        let n = usize::from(r.u8().ok()?);
        let v = r.take(n).ok()?;
        match t {
            tag::CHANNEL => x.channels.push(ChannelName::from_bytes(v).ok()?),
            tag::AWAY => x.away = Some(std::str::from_utf8(v).ok()?.to_string()),
            tag::RENAMED => x.renamed_to = Some(Nick::from_bytes(v).ok()?),
            _ => {}
        }
    }
    Some(x)
}

// Out of line: most entries have no optional part, and the loop that encodes them stays small.
#[inline(never)]
fn put_extra(out: &mut Vec<u8>, x: &Extra) {
    out.put_u16(x.encoded_len() as u16);
    for c in &x.channels {
        out.push(tag::CHANNEL);
        out.push(c.as_bytes().len() as u8);
        out.extend_from_slice(c.as_bytes());
    }
    if let Some(a) = &x.away {
        let a = crate::utf8_prefix(a, MAX_AWAY).as_bytes();
        out.push(tag::AWAY);
        out.push(a.len() as u8);
        out.extend_from_slice(a);
    }
    if let Some(n) = &x.renamed_to {
        out.push(tag::RENAMED);
        out.push(n.as_bytes().len() as u8);
        out.extend_from_slice(n.as_bytes());
    }
}

/// Roster fields read with the shared [`Reader`].
trait ReadEntries<'a> {
    fn entry(&mut self, prev_since: &mut u64) -> Result<EntryRef<'a>, Malformed>;
    fn entry_iter(&mut self) -> Result<EntryIter<'a>, Malformed>;
}

impl<'a> ReadEntries<'a> for Reader<'a> {
    /// One entry; `prev_since` is the previous entry's `since` in this message (0 before the first), and
    /// becomes this one's. Reads the fixed-size runs with one bounds check each: every client reads every
    /// entry of every roster change (the load harness 10⁸ of them in a 10 000-client storm), so it works on
    /// the reader's slice and position directly (fields the crate may use), measured by `benches/registry.rs`.
    #[inline]
    fn entry(&mut self, prev_since: &mut u64) -> Result<EntryRef<'a>, Malformed> {
        let b = self.b;
        let n = usize::from(*b.get(self.at).ok_or(TRUNCATED)?);
        let nick = b.get(self.at + 1..self.at + 1 + n).ok_or(TRUNCATED)?;
        Nick::check(nick).map_err(|_| Malformed("nickname"))?;
        self.at += 1 + n;
        // Instance and kind.
        let fixed: &[u8; 9] = b
            .get(self.at..)
            .and_then(|r| r.first_chunk())
            .ok_or(TRUNCATED)?;
        let (instance, k) = (u64::from_be_bytes(*split8(fixed)), fixed[8]);
        self.at += 9;
        if k & !(kind::STATUS | kind::IPV6 | kind::EXTRA) != 0 {
            return Err(Malformed("entry kind"));
        }
        let status = match k & kind::STATUS {
            0 => Status::Offline,
            1 => Status::Online,
            2 => Status::Removed,
            _ => return Err(Malformed("status")),
        };
        let since_ms = prev_since.wrapping_add(unzigzag(self.varint(64)?));
        *prev_since = since_ms;
        let rest = b.get(self.at..).ok_or(TRUNCATED)?;
        let chat = if k & kind::IPV6 == 0 {
            let a: &[u8; 6] = rest.first_chunk().ok_or(TRUNCATED)?;
            self.at += 6;
            SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])),
                u16::from_be_bytes([a[4], a[5]]),
            )
        } else {
            let a: &[u8; 18] = rest.first_chunk().ok_or(TRUNCATED)?;
            self.at += 18;
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&a[..16]);
            SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(ip)),
                u16::from_be_bytes([a[16], a[17]]),
            )
        };
        let flaps = self.varint(32)? as u32;
        let extra = if k & kind::EXTRA != 0 {
            let n = usize::from(self.u16()?);
            if n > MAX_EXTRA_LEN {
                return Err(Malformed("entry's optional part too long"));
            }
            let x = self.take(n)?;
            check_extra(x)?;
            x
        } else {
            &[]
        };
        Ok(EntryRef {
            nick,
            instance,
            status,
            since_ms,
            chat,
            flaps,
            extra,
        })
    }
    /// The entry count, checked against the bytes left, and an iterator over the entries.
    fn entry_iter(&mut self) -> Result<EntryIter<'a>, Malformed> {
        let n = self.u16()?;
        // Refuse counts the message cannot hold before anything is sized by them.
        if usize::from(n) > self.remaining() / MIN_ENTRY_LEN {
            return Err(Malformed("entry count"));
        }
        Ok(EntryIter {
            r: self.clone(),
            left: n,
            failed: false,
            prev_since: 0,
        })
    }
}

/// The signed distance from one `since` to the next, folded so that small distances either way are small
/// numbers (zigzag): 0, -1, 1, -2, ... become 0, 1, 2, 3, ...
fn zigzag(d: u64) -> u64 {
    let d = d as i64;
    ((d << 1) ^ (d >> 63)) as u64
}

fn unzigzag(z: u64) -> u64 {
    (z >> 1) ^ (z & 1).wrapping_neg()
}

/// Appends one entry's encoding to `out`. `prev_since` is the previous entry's `since` in the same message
/// (0 before the first) and becomes this one's: each `since` is sent as the distance from the one before,
/// a byte or two between clients that came online around the same time.
#[inline]
pub fn put_entry(out: &mut Vec<u8>, e: &Entry, prev_since: &mut u64) {
    out.put_nick(&e.nick);
    out.extend_from_slice(&e.instance.to_be_bytes());
    let v6 = matches!(e.chat.ip(), IpAddr::V6(_));
    let extra = e.extra.as_deref().filter(|x| !x.is_empty());
    out.push(
        e.status as u8
            | if v6 { kind::IPV6 } else { 0 }
            | if extra.is_some() { kind::EXTRA } else { 0 },
    );
    out.put_varint(zigzag(e.since_ms.wrapping_sub(*prev_since)));
    *prev_since = e.since_ms;
    match e.chat.ip() {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
    }
    out.extend_from_slice(&e.chat.port().to_be_bytes());
    out.put_varint(u64::from(e.flaps));
    if let Some(x) = extra {
        put_extra(out, x);
    }
}

/// The most bytes `e` can take encoded (its `since` and flaps at their longest): what a page must have left
/// for it. At most [`MAX_ENTRY_LEN`]; an entry without optional fields takes no more room than before they
/// existed, so pages pack as many.
#[inline]
fn max_len(e: &Entry) -> usize {
    let addr = if e.chat.is_ipv4() { 6 } else { 18 };
    let extra = e
        .extra
        .as_deref()
        .filter(|x| !x.is_empty())
        .map_or(0, |x| 2 + x.encoded_len());
    1 + e.nick.as_bytes().len() + 8 + 1 + 10 + addr + 5 + extra
}

/// Appends `entries` to a message begun by [`begin_snapshot`] or [`begin_delta`], chaining their `since`
/// from the first, and sets the count.
fn put_entries(out: &mut Vec<u8>, entries: &[Entry]) {
    let mut prev = 0;
    for e in entries {
        put_entry(out, e, &mut prev);
    }
    finish_entries(out, entries.len() as u16);
}

/// Encodes `entries` into one message or more, each begun by `begin` and holding as many entries as fit in
/// `max_bytes` (at least one each, and one message without entries when there are none), with its count
/// set. Headers are then filled in by the caller ([`set_snapshot_page`], [`set_delta_range`]), once the
/// number of messages is known.
pub fn encode_pages<E: std::borrow::Borrow<Entry>>(
    entries: impl IntoIterator<Item = E>,
    max_bytes: usize,
    begin: impl Fn(&mut Vec<u8>),
) -> Vec<Vec<u8>> {
    let mut pages = Vec::new();
    let mut page = Vec::new();
    let mut count = 0u16;
    let mut prev = 0u64;
    begin(&mut page);
    for e in entries {
        let e = e.borrow();
        if count > 0 && (page.len() + max_len(e) > max_bytes || count == u16::MAX) {
            finish_entries(&mut page, count);
            pages.push(std::mem::take(&mut page));
            begin(&mut page);
            count = 0;
            prev = 0;
        }
        put_entry(&mut page, e, &mut prev);
        count += 1;
    }
    finish_entries(&mut page, count);
    pages.push(page);
    pages
}

/// Sets the page number and page count of a message begun by [`begin_snapshot`].
pub fn set_snapshot_page(out: &mut [u8], page: u16, pages: u16) {
    out[9..11].copy_from_slice(&page.to_be_bytes());
    out[11..13].copy_from_slice(&pages.to_be_bytes());
}

/// Sets the version range of a message begun by [`begin_delta`].
pub fn set_delta_range(out: &mut [u8], from: u64, to: u64) {
    out[1..9].copy_from_slice(&from.to_be_bytes());
    out[9..17].copy_from_slice(&to.to_be_bytes());
}

impl ClientMsg {
    /// Parses a message from a client.
    pub fn parse(b: &[u8]) -> Result<ClientMsg, Malformed> {
        let mut r = Reader::new(b);
        let m = match r.u8()? {
            REGISTER => ClientMsg::Register(Register {
                flags: r.u8()?,
                instance: r.u64()?,
                nick: {
                    let n = usize::from(r.u8()?);
                    String::from_utf8(r.take(n)?.to_vec())
                        .map_err(|_| Malformed("nickname is not UTF-8"))?
                },
                chat_port: r.u16()?,
                chat_ip: r.ip()?,
            }),
            RESYNC => ClientMsg::Resync,
            KEY_QUERY => ClientMsg::KeyQuery { nick: r.nick()? },
            JOIN | PART => {
                let n = usize::from(r.u8()?);
                let channel =
                    ChannelName::from_bytes(r.take(n)?).map_err(|_| Malformed("channel name"))?;
                if b[0] == JOIN {
                    ClientMsg::Join { channel }
                } else {
                    ClientMsg::Part { channel }
                }
            }
            AWAY => ClientMsg::Away {
                message: match r.u8()? {
                    0 => None,
                    1 => {
                        let n = usize::from(r.u8()?);
                        if n > MAX_AWAY {
                            return Err(Malformed("away message too long"));
                        }
                        Some(
                            String::from_utf8(r.take(n)?.to_vec())
                                .map_err(|_| Malformed("away message is not UTF-8"))?,
                        )
                    }
                    _ => return Err(Malformed("away flag")),
                },
            },
            RENAME => ClientMsg::Rename {
                nick: {
                    let n = usize::from(r.u8()?);
                    String::from_utf8(r.take(n)?.to_vec())
                        .map_err(|_| Malformed("nickname is not UTF-8"))?
                },
            },
            _ => return Err(Malformed("message type")),
        };
        r.end()?;
        Ok(m)
    }

    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        match self {
            ClientMsg::Register(g) => {
                out.push(REGISTER);
                out.push(g.flags);
                out.extend_from_slice(&g.instance.to_be_bytes());
                // The length field is one byte; cut at a char boundary so what is sent stays UTF-8.
                let n = crate::utf8_prefix(&g.nick, 255).as_bytes();
                out.push(n.len() as u8);
                out.extend_from_slice(n);
                out.extend_from_slice(&g.chat_port.to_be_bytes());
                out.put_ip(g.chat_ip);
            }
            ClientMsg::Resync => out.push(RESYNC),
            ClientMsg::KeyQuery { nick } => {
                out.push(KEY_QUERY);
                out.put_nick(nick);
            }
            ClientMsg::Join { channel } | ClientMsg::Part { channel } => {
                out.push(if matches!(self, ClientMsg::Join { .. }) {
                    JOIN
                } else {
                    PART
                });
                out.push(channel.as_bytes().len() as u8);
                out.extend_from_slice(channel.as_bytes());
            }
            ClientMsg::Away { message } => {
                out.push(AWAY);
                match message {
                    None => out.push(0),
                    Some(m) => {
                        let m = crate::utf8_prefix(m, MAX_AWAY).as_bytes();
                        out.push(1);
                        out.push(m.len() as u8);
                        out.extend_from_slice(m);
                    }
                }
            }
            ClientMsg::Rename { nick } => {
                out.push(RENAME);
                let n = crate::utf8_prefix(nick, 255).as_bytes();
                out.push(n.len() as u8);
                out.extend_from_slice(n);
            }
        }
        out
    }
}

/// Starts a DELTA message for `from`..`to`; entries are appended with [`put_entry`] and counted by
/// [`finish_entries`].
pub fn begin_delta(out: &mut Vec<u8>, from: u64, to: u64) {
    out.clear();
    out.push(DELTA);
    out.extend_from_slice(&from.to_be_bytes());
    out.extend_from_slice(&to.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
}

/// Starts a SNAPSHOT page; entries are appended with [`put_entry`] and counted by [`finish_entries`].
pub fn begin_snapshot(out: &mut Vec<u8>, version: u64, page: u16, pages: u16) {
    out.clear();
    out.push(SNAPSHOT);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&page.to_be_bytes());
    out.extend_from_slice(&pages.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
}

/// Stores the entry count in a message begun by [`begin_delta`] or [`begin_snapshot`].
pub fn finish_entries(out: &mut [u8], count: u16) {
    let at = if out[0] == DELTA { 17 } else { 13 };
    out[at..at + 2].copy_from_slice(&count.to_be_bytes());
}

/// A message from the daemon with its roster entries left in the buffer: [`ServerMsg::view`] checks the
/// header, and [`EntryIter`] decodes (and checks) the entries one at a time as the caller reads them, with
/// no allocation. For a reader of many rosters (the load harness reads 10⁸ entries in a 10 000-client
/// storm) that must not pay for a `Vec<Entry>` per message. A malformed entry shows up as an `Err` from
/// the iterator, after the entries before it: callers that must apply all or nothing use
/// [`ServerMsg::parse`].
#[derive(Clone, Debug)]
pub enum ServerView<'a> {
    /// A message without entries (REGISTERED, KEY, BROADCAST_KEYS, TICKET), decoded whole.
    Whole(ServerMsg),
    /// One page of the roster, as [`ServerMsg::Snapshot`].
    Snapshot {
        /// Roster version the pages describe.
        version: u64,
        /// This page's index.
        page: u16,
        /// Number of pages.
        pages: u16,
        /// Entries on this page.
        entries: EntryIter<'a>,
    },
    /// Changes from `from` to `to`, as [`ServerMsg::Delta`].
    Delta {
        /// The version the receiver must have.
        from: u64,
        /// The version after applying.
        to: u64,
        /// Changed entries.
        entries: EntryIter<'a>,
    },
}

/// The entries of a [`ServerView`], decoded on demand; after the last one, the message must end.
#[derive(Clone, Debug)]
pub struct EntryIter<'a> {
    r: Reader<'a>,
    left: u16,
    failed: bool,
    prev_since: u64,
}

impl EntryIter<'_> {
    /// Entries not yet read, as the message announced them.
    pub fn remaining(&self) -> usize {
        usize::from(self.left)
    }
}

/// One roster entry read in place by an [`EntryIter`]: every field checked, the nickname borrowed from the
/// message rather than copied (the load harness reads 10⁸ of these in a storm and needs only two fields).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct EntryRef<'a> {
    /// Nickname bytes, checked as [`Nick`] checks them (so ASCII).
    pub nick: &'a [u8],
    /// As [`Entry::instance`].
    pub instance: u64,
    /// As [`Entry::status`].
    pub status: Status,
    /// As [`Entry::since_ms`].
    pub since_ms: u64,
    /// As [`Entry::chat`].
    pub chat: SocketAddr,
    /// As [`Entry::flaps`].
    pub flaps: u32,
    /// The optional part, checked (empty if there is none); decoded by [`EntryRef::to_entry`].
    pub extra: &'a [u8],
}

impl EntryRef<'_> {
    /// The owned entry, or `None` if the nickname is not valid (never, for one an [`EntryIter`] returned).
    pub fn to_entry(&self) -> Option<Entry> {
        Some(Entry {
            nick: Nick::from_bytes(self.nick).ok()?,
            instance: self.instance,
            status: self.status,
            since_ms: self.since_ms,
            chat: self.chat,
            flaps: self.flaps,
            // Only items of unknown tags: nothing this version shows, so the same as none.
            extra: Some(parse_extra(self.extra)?)
                .filter(|x| !x.is_empty())
                .map(Box::new),
        })
    }
}

impl<'a> Iterator for EntryIter<'a> {
    type Item = Result<EntryRef<'a>, Malformed>;

    // Inlined into the caller's loop, the reader's position stays in registers between entries.
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let item = if self.left == 0 {
            // Trailing bytes are as malformed as a bad entry; report them once, after the last entry.
            self.r.end().err().map(Err)
        } else {
            self.left -= 1;
            Some(self.r.entry(&mut self.prev_since))
        };
        self.failed = matches!(item, Some(Err(_)));
        item
    }
}

impl ServerMsg {
    /// Checks a message's header and leaves its entries to be decoded as they are read (see
    /// [`ServerView`]).
    pub fn view(b: &[u8]) -> Result<ServerView<'_>, Malformed> {
        let mut r = Reader::new(b);
        match r.u8()? {
            REGISTERED => {
                let result = RegisterResult::from_u8(r.u8()?).ok_or(Malformed("result"))?;
                let daemon = r.u64()?;
                let retry_after_ms = r.u32()?;
                let n = usize::from(r.u16()?);
                let reason =
                    String::from_utf8(r.take(n)?.to_vec()).map_err(|_| Malformed("reason"))?;
                r.end()?;
                Ok(ServerView::Whole(ServerMsg::Registered {
                    result,
                    daemon,
                    retry_after_ms,
                    reason,
                }))
            }
            BROADCAST_KEYS => {
                let key = r.array()?;
                let mac_key = r.array()?;
                r.end()?;
                Ok(ServerView::Whole(ServerMsg::BroadcastKeys { key, mac_key }))
            }
            TICKET => {
                let lifetime_s = r.u32()?;
                let secret = r.array()?;
                let ticket = r.array()?;
                r.end()?;
                Ok(ServerView::Whole(ServerMsg::Ticket {
                    lifetime_s,
                    secret,
                    ticket,
                }))
            }
            ANSWER => {
                let request = Request::from_u8(r.u8()?).ok_or(Malformed("request"))?;
                let ok = match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(Malformed("answer flag")),
                };
                let n = usize::from(r.u16()?);
                if n > MAX_REASON {
                    return Err(Malformed("reason too long"));
                }
                let reason =
                    String::from_utf8(r.take(n)?.to_vec()).map_err(|_| Malformed("reason"))?;
                r.end()?;
                Ok(ServerView::Whole(ServerMsg::Answer {
                    request,
                    ok,
                    reason,
                }))
            }
            KEY => {
                let nick = r.nick()?;
                let key = match r.u8()? {
                    0 => None,
                    1 => Some(crate::identity::PublicKey(r.array()?)),
                    _ => return Err(Malformed("key flag")),
                };
                r.end()?;
                Ok(ServerView::Whole(ServerMsg::Key { nick, key }))
            }
            SNAPSHOT => {
                let version = r.u64()?;
                let page = r.u16()?;
                let pages = r.u16()?;
                if page >= pages {
                    return Err(Malformed("page number"));
                }
                Ok(ServerView::Snapshot {
                    version,
                    page,
                    pages,
                    entries: r.entry_iter()?,
                })
            }
            DELTA => {
                let from = r.u64()?;
                let to = r.u64()?;
                if to <= from {
                    return Err(Malformed("version range"));
                }
                Ok(ServerView::Delta {
                    from,
                    to,
                    entries: r.entry_iter()?,
                })
            }
            _ => Err(Malformed("message type")),
        }
    }

    /// Parses a message from the daemon, all or nothing: [`ServerMsg::view`] with every entry decoded.
    pub fn parse(b: &[u8]) -> Result<ServerMsg, Malformed> {
        fn all(it: EntryIter<'_>) -> Result<Vec<Entry>, Malformed> {
            let mut v = Vec::with_capacity(it.remaining());
            for e in it {
                v.push(e?.to_entry().ok_or(Malformed("nickname"))?);
            }
            Ok(v)
        }
        Ok(match ServerMsg::view(b)? {
            ServerView::Whole(m) => m,
            ServerView::Snapshot {
                version,
                page,
                pages,
                entries,
            } => ServerMsg::Snapshot {
                version,
                page,
                pages,
                entries: all(entries)?,
            },
            ServerView::Delta { from, to, entries } => ServerMsg::Delta {
                from,
                to,
                entries: all(entries)?,
            },
        })
    }

    /// Encodes the message (deltas and snapshots with many entries are better built in place with
    /// [`begin_delta`] / [`begin_snapshot`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            ServerMsg::BroadcastKeys { key, mac_key } => {
                out.push(BROADCAST_KEYS);
                out.extend_from_slice(key);
                out.extend_from_slice(mac_key);
            }
            ServerMsg::Ticket {
                lifetime_s,
                secret,
                ticket,
            } => {
                out.push(TICKET);
                out.extend_from_slice(&lifetime_s.to_be_bytes());
                out.extend_from_slice(secret);
                out.extend_from_slice(ticket);
            }
            ServerMsg::Key { nick, key } => {
                out.push(KEY);
                out.put_nick(nick);
                match key {
                    None => out.push(0),
                    Some(k) => {
                        out.push(1);
                        out.extend_from_slice(&k.0);
                    }
                }
            }
            ServerMsg::Answer {
                request,
                ok,
                reason,
            } => {
                out.push(ANSWER);
                out.push(*request as u8);
                out.push(u8::from(*ok));
                let r = crate::utf8_prefix(reason, MAX_REASON).as_bytes();
                out.extend_from_slice(&(r.len() as u16).to_be_bytes());
                out.extend_from_slice(r);
            }
            ServerMsg::Registered {
                result,
                daemon,
                retry_after_ms,
                reason,
            } => {
                out.push(REGISTERED);
                out.push(*result as u8);
                out.extend_from_slice(&daemon.to_be_bytes());
                out.extend_from_slice(&retry_after_ms.to_be_bytes());
                // Cut at a char boundary: the daemon's reasons quote the client's nickname (escaped, so it
                // can grow past the cap), and a cut inside a character would make the client reject the
                // whole reply as invalid UTF-8.
                let r = crate::utf8_prefix(reason, MAX_REASON).as_bytes();
                out.extend_from_slice(&(r.len() as u16).to_be_bytes());
                out.extend_from_slice(r);
            }
            ServerMsg::Snapshot {
                version,
                page,
                pages,
                entries,
            } => {
                begin_snapshot(&mut out, *version, *page, *pages);
                put_entries(&mut out, entries);
            }
            ServerMsg::Delta { from, to, entries } => {
                begin_delta(&mut out, *from, *to);
                put_entries(&mut out, entries);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: &str, status: Status) -> Entry {
        Entry {
            nick: Nick::new(n).unwrap(),
            instance: 77,
            status,
            since_ms: 1_700_000_000_000,
            chat: "192.0.2.1:4000".parse().unwrap(),
            flaps: 2,
            extra: None,
        }
    }

    #[test]
    fn client_messages_round_trip() {
        for m in [
            ClientMsg::Register(Register {
                flags: flags::SUBSCRIBE,
                instance: u64::MAX,
                nick: "alice".into(),
                chat_port: 5000,
                chat_ip: None,
            }),
            ClientMsg::Register(Register {
                flags: flags::OBSERVER,
                instance: 1,
                nick: "not a valid nick, but UTF-8: ✓".into(),
                chat_port: 0,
                chat_ip: Some("::1".parse().unwrap()),
            }),
            ClientMsg::Resync,
        ] {
            let b = m.encode();
            assert_eq!(ClientMsg::parse(&b), Ok(m.clone()));
            for n in 0..b.len() {
                assert!(ClientMsg::parse(&b[..n]).is_err());
            }
            let mut long = b.clone();
            long.push(0);
            assert!(ClientMsg::parse(&long).is_err());
        }
    }

    #[test]
    fn server_messages_round_trip() {
        let mut big = entry(&format!("{}z", "é".repeat(31)), Status::Online);
        big.chat = "[2001:db8::1]:65535".parse().unwrap();
        for m in [
            ServerMsg::Registered {
                result: RegisterResult::NickTaken,
                daemon: 5,
                retry_after_ms: 3000,
                reason: "nickname bob is in use".into(),
            },
            ServerMsg::Snapshot {
                version: 10,
                page: 1,
                pages: 3,
                entries: vec![
                    entry("a", Status::Online),
                    entry("b", Status::Offline),
                    big.clone(),
                ],
            },
            ServerMsg::Delta {
                from: 10,
                to: 12,
                entries: vec![entry("c", Status::Removed)],
            },
        ] {
            let b = m.encode();
            assert_eq!(ServerMsg::parse(&b), Ok(m.clone()));
            for n in 0..b.len() {
                assert!(ServerMsg::parse(&b[..n]).is_err());
            }
        }
        // The largest entry: a 63-byte nickname, IPv6, and both varints at their longest (a `since` as far
        // as it can be from the one before, the most flaps).
        big.since_ms = 1 << 63;
        big.flaps = u32::MAX;
        big.extra = Some(Box::new(Extra {
            channels: (0..MAX_CHANNELS_PER_CLIENT)
                .map(|i| ChannelName::new(&format!("#{i:0>31}")).unwrap())
                .collect(),
            away: Some("é".repeat(MAX_AWAY / 2)),
            renamed_to: Some(Nick::new(&"李".repeat(21)).unwrap()),
        }));
        let mut one = Vec::new();
        put_entry(&mut one, &big, &mut 0);
        assert_eq!(one.len(), MAX_ENTRY_LEN);
        let smallest = Entry {
            nick: Nick::new("a").unwrap(),
            instance: 0,
            status: Status::Offline,
            since_ms: 5,
            chat: "192.0.2.1:1".parse().unwrap(),
            flaps: 0,
            extra: None,
        };
        let mut one = Vec::new();
        put_entry(&mut one, &smallest, &mut 3);
        assert_eq!(one.len(), MIN_ENTRY_LEN);
    }

    #[test]
    fn since_is_sent_as_the_distance_from_the_entry_before() {
        let mut a = entry("a", Status::Online);
        let mut b = entry("b", Status::Online);
        for (x, y) in [
            (0, 0),
            (0, u64::MAX),
            (u64::MAX, 0),
            (1_700_000_000_000, 1_700_000_000_001),
            (1_700_000_000_000, 1_699_999_999_000),
            (1 << 63, (1 << 63) - 1),
        ] {
            a.since_ms = x;
            b.since_ms = y;
            let m = ServerMsg::Delta {
                from: 1,
                to: 2,
                entries: vec![a.clone(), b.clone()],
            };
            assert_eq!(ServerMsg::parse(&m.encode()), Ok(m));
        }
        // Neighbours a second apart cost two bytes for the second one's `since`, not eight.
        a.since_ms = 1_700_000_000_000;
        b.since_ms = a.since_ms + 1000;
        let (mut prev, mut out) = (0, Vec::new());
        put_entry(&mut out, &a, &mut prev);
        let first = out.len();
        put_entry(&mut out, &b, &mut prev);
        assert_eq!(first - (out.len() - first), 6 - 2);
    }

    #[test]
    fn varints_must_be_short_and_in_range() {
        let parse = |b: &[u8], bits| Reader::new(b).varint(bits);
        assert_eq!(parse(&[0], 32), Ok(0));
        assert_eq!(parse(&[0x7f], 32), Ok(127));
        assert_eq!(parse(&[0x80, 0x01], 32), Ok(128));
        assert_eq!(
            parse(&[0xff, 0xff, 0xff, 0xff, 0x0f], 32),
            Ok(u64::from(u32::MAX))
        );
        assert!(
            parse(&[0xff, 0xff, 0xff, 0xff, 0x1f], 32).is_err(),
            "33 bits"
        );
        assert!(
            parse(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01], 32).is_err(),
            "six bytes"
        );
        assert!(parse(&[0x80, 0x00], 32).is_err(), "zero in two bytes");
        assert!(parse(&[0xff, 0x00], 32).is_err(), "127 in two bytes");
        assert!(parse(&[0x80], 32).is_err(), "truncated");
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(parse(&max, 64), Ok(u64::MAX));
        let mut over = max;
        over[9] = 0x02;
        assert!(parse(&over, 64).is_err(), "65 bits");
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut b = Vec::new();
            b.put_varint(v);
            assert_eq!(parse(&b, 64), Ok(v), "{v}");
            assert_eq!(zigzag(unzigzag(v)), v);
        }
    }

    #[test]
    fn pages_hold_what_fits_and_follow_each_other() {
        let entries: Vec<Entry> = (0..1000)
            .map(|i| {
                let mut e = entry(&format!("n{i}"), Status::Online);
                e.since_ms += i;
                e
            })
            .collect();
        let pages = encode_pages(&entries, 4096, |b| begin_snapshot(b, 9, 0, 1));
        assert!(pages.len() > 1);
        let mut got = Vec::new();
        let n = pages.len() as u16;
        for (p, mut b) in pages.into_iter().enumerate() {
            assert!(b.len() <= 4096, "page {p}: {} bytes", b.len());
            set_snapshot_page(&mut b, p as u16, n);
            let Ok(ServerMsg::Snapshot {
                version,
                page,
                pages,
                entries,
            }) = ServerMsg::parse(&b)
            else {
                panic!("page {p} does not parse");
            };
            assert_eq!((version, page, pages), (9, p as u16, n));
            got.extend(entries);
        }
        assert_eq!(got, entries);
        // No entries: one empty message, so a delta still advances the versions.
        let mut empty = encode_pages(&[] as &[Entry], 4096, |b| begin_delta(b, 0, 1));
        assert_eq!(empty.len(), 1);
        set_delta_range(&mut empty[0], 4, 6);
        assert_eq!(
            ServerMsg::parse(&empty[0]),
            Ok(ServerMsg::Delta {
                from: 4,
                to: 6,
                entries: vec![]
            })
        );
    }

    #[test]
    fn a_view_yields_the_entries_before_a_bad_one_then_stops() {
        let good = ServerMsg::Delta {
            from: 1,
            to: 2,
            entries: vec![entry("a", Status::Online), entry("b", Status::Offline)],
        };
        let mut b = good.encode();
        let ServerView::Delta { entries, .. } = ServerMsg::view(&b).unwrap() else {
            panic!("a delta");
        };
        assert_eq!(entries.remaining(), 2);
        let got: Vec<_> = entries.map(|e| e.map(|e| e.to_entry())).collect();
        assert_eq!(
            got,
            vec![
                Ok(Some(entry("a", Status::Online))),
                Ok(Some(entry("b", Status::Offline)))
            ]
        );
        // The second entry's kind byte made invalid. That entry is 19 bytes: nick 1+1, instance 8, kind 1,
        // since 1 (the same as the entry before), address 4, port 2, flaps 1; its kind is 10 bytes in.
        let kind = b.len() - 19 + 10;
        assert_eq!(b[kind], 0, "Offline, IPv4");
        b[kind] = 3;
        let ServerView::Delta { entries, .. } = ServerMsg::view(&b).unwrap() else {
            panic!("a delta");
        };
        let got: Vec<_> = entries.map(|e| e.map(|e| e.to_entry())).collect();
        assert_eq!(
            got.len(),
            2,
            "one good entry, one error, then nothing: {got:?}"
        );
        assert_eq!(got[0], Ok(Some(entry("a", Status::Online))));
        assert!(got[1].is_err());
        assert!(ServerMsg::parse(&b).is_err(), "parse is all or nothing");
        // Trailing bytes are an error after the last entry.
        let mut long = good.encode();
        long.push(0);
        let ServerView::Delta { entries, .. } = ServerMsg::view(&long).unwrap() else {
            panic!("a delta");
        };
        let got: Vec<_> = entries.collect();
        assert_eq!(got.len(), 3);
        assert!(got[2].is_err());
    }

    #[test]
    fn hostile_counts_and_fields() {
        // A count far larger than the bytes present is refused before anything is allocated for it.
        let mut b = Vec::new();
        begin_delta(&mut b, 1, 2);
        finish_entries(&mut b, u16::MAX);
        assert_eq!(ServerMsg::parse(&b), Err(Malformed("entry count")));
        assert!(ServerMsg::parse(&[SNAPSHOT, 0, 0, 0, 0, 0, 0, 0, 1, 0, 3, 0, 3, 0, 0]).is_err());
        let d = ServerMsg::Delta {
            from: 5,
            to: 5,
            entries: vec![],
        };
        assert_eq!(
            ServerMsg::parse(&d.encode()),
            Err(Malformed("version range"))
        );
        assert!(ClientMsg::parse(&[9]).is_err());
        assert!(ClientMsg::parse(&[]).is_err());
    }
}
