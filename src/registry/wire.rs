//! The roster protocol: messages between `mpd` and its clients over their SCTP association (stream 0,
//! ordered, payload protocol identifier [`PPID`]). Binary, big-endian; layouts in `docs/PROTOCOL.md`.
//!
//! Parsing is bounds-checked and never panics; every message from the network goes through
//! [`ClientMsg::parse`] or [`ServerMsg::parse`] and any malformed one is a [`WireError`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::discovery::Nick;

/// SCTP payload protocol identifier of roster messages ("MPR1").
pub const PPID: u32 = u32::from_be_bytes(*b"MPR1");

const REGISTER: u8 = 1;
const RESYNC: u8 = 2;
const REGISTERED: u8 = 16;
const SNAPSHOT: u8 = 17;
const DELTA: u8 = 18;

/// A malformed roster message.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct WireError(pub &'static str);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed roster message: {}", self.0)
    }
}

impl std::error::Error for WireError {}

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
}

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
}

impl RegisterResult {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => RegisterResult::Ok,
            1 => RegisterResult::NickTaken,
            2 => RegisterResult::InvalidNick,
            3 => RegisterResult::Full,
            4 => RegisterResult::BadRequest,
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
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
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
}

/// Messages from `mpd` to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerMsg {
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

/// Largest encoded entry: nick 1+32, instance 8, status 1, since 8, address 1+16, port 2, flaps 4.
pub const MAX_ENTRY_LEN: usize = 73;

#[derive(Clone, Debug)]
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.at.checked_add(n).ok_or(WireError("length"))?;
        let s = self.b.get(self.at..end).ok_or(WireError("truncated"))?;
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().unwrap_or([0; 2]),
        ))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().unwrap_or([0; 4]),
        ))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().unwrap_or([0; 8]),
        ))
    }
    fn ip(&mut self) -> Result<Option<IpAddr>, WireError> {
        match self.u8()? {
            0 => Ok(None),
            4 => {
                let o: [u8; 4] = self.take(4)?.try_into().map_err(|_| WireError("address"))?;
                Ok(Some(IpAddr::V4(Ipv4Addr::from(o))))
            }
            6 => {
                let o: [u8; 16] = self
                    .take(16)?
                    .try_into()
                    .map_err(|_| WireError("address"))?;
                Ok(Some(IpAddr::V6(Ipv6Addr::from(o))))
            }
            _ => Err(WireError("address family")),
        }
    }
    fn entry(&mut self) -> Result<EntryRef<'a>, WireError> {
        let n = usize::from(self.u8()?);
        let nick = self.take(n)?;
        Nick::check(nick).map_err(|_| WireError("nickname"))?;
        let instance = self.u64()?;
        let status = match self.u8()? {
            0 => Status::Offline,
            1 => Status::Online,
            2 => Status::Removed,
            _ => return Err(WireError("status")),
        };
        let since_ms = self.u64()?;
        let ip = self.ip()?.ok_or(WireError("entry without address"))?;
        let port = self.u16()?;
        let flaps = self.u32()?;
        Ok(EntryRef {
            nick,
            instance,
            status,
            since_ms,
            chat: SocketAddr::new(ip, port),
            flaps,
        })
    }
    /// The entry count, checked against the bytes left, and an iterator over the entries.
    fn entry_iter(&mut self) -> Result<EntryIter<'a>, WireError> {
        let n = self.u16()?;
        // Each entry takes at least 26 bytes: refuse counts the message cannot hold before allocating.
        if usize::from(n) > (self.b.len() - self.at) / 26 {
            return Err(WireError("entry count"));
        }
        Ok(EntryIter {
            r: self.clone(),
            left: n,
            failed: false,
        })
    }
    fn end(&self) -> Result<(), WireError> {
        if self.at == self.b.len() {
            Ok(())
        } else {
            Err(WireError("trailing bytes"))
        }
    }
}

fn put_nick(out: &mut Vec<u8>, n: &Nick) {
    out.push(n.as_bytes().len() as u8);
    out.extend_from_slice(n.as_bytes());
}

fn put_ip(out: &mut Vec<u8>, ip: Option<IpAddr>) {
    match ip {
        None => out.push(0),
        Some(IpAddr::V4(a)) => {
            out.push(4);
            out.extend_from_slice(&a.octets());
        }
        Some(IpAddr::V6(a)) => {
            out.push(6);
            out.extend_from_slice(&a.octets());
        }
    }
}

/// Appends one entry's encoding to `out`.
pub fn put_entry(out: &mut Vec<u8>, e: &Entry) {
    put_nick(out, &e.nick);
    out.extend_from_slice(&e.instance.to_be_bytes());
    out.push(e.status as u8);
    out.extend_from_slice(&e.since_ms.to_be_bytes());
    put_ip(out, Some(e.chat.ip()));
    out.extend_from_slice(&e.chat.port().to_be_bytes());
    out.extend_from_slice(&e.flaps.to_be_bytes());
}

impl ClientMsg {
    /// Parses a message from a client.
    pub fn parse(b: &[u8]) -> Result<ClientMsg, WireError> {
        let mut r = Reader { b, at: 0 };
        let m = match r.u8()? {
            REGISTER => ClientMsg::Register(Register {
                flags: r.u8()?,
                instance: r.u64()?,
                nick: {
                    let n = usize::from(r.u8()?);
                    String::from_utf8(r.take(n)?.to_vec())
                        .map_err(|_| WireError("nickname is not UTF-8"))?
                },
                chat_port: r.u16()?,
                chat_ip: r.ip()?,
            }),
            RESYNC => ClientMsg::Resync,
            _ => return Err(WireError("message type")),
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
                put_ip(&mut out, g.chat_ip);
            }
            ClientMsg::Resync => out.push(RESYNC),
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
    /// REGISTERED, decoded whole (it has no entries).
    Registered(ServerMsg),
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
        })
    }
}

impl<'a> Iterator for EntryIter<'a> {
    type Item = Result<EntryRef<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let item = if self.left == 0 {
            // Trailing bytes are as malformed as a bad entry; report them once, after the last entry.
            self.r.end().err().map(Err)
        } else {
            self.left -= 1;
            Some(self.r.entry())
        };
        self.failed = matches!(item, Some(Err(_)));
        item
    }
}

impl ServerMsg {
    /// Checks a message's header and leaves its entries to be decoded as they are read (see
    /// [`ServerView`]).
    pub fn view(b: &[u8]) -> Result<ServerView<'_>, WireError> {
        let mut r = Reader { b, at: 0 };
        match r.u8()? {
            REGISTERED => {
                let result = RegisterResult::from_u8(r.u8()?).ok_or(WireError("result"))?;
                let daemon = r.u64()?;
                let retry_after_ms = r.u32()?;
                let n = usize::from(r.u16()?);
                let reason =
                    String::from_utf8(r.take(n)?.to_vec()).map_err(|_| WireError("reason"))?;
                r.end()?;
                Ok(ServerView::Registered(ServerMsg::Registered {
                    result,
                    daemon,
                    retry_after_ms,
                    reason,
                }))
            }
            SNAPSHOT => {
                let version = r.u64()?;
                let page = r.u16()?;
                let pages = r.u16()?;
                if page >= pages {
                    return Err(WireError("page number"));
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
                    return Err(WireError("version range"));
                }
                Ok(ServerView::Delta {
                    from,
                    to,
                    entries: r.entry_iter()?,
                })
            }
            _ => Err(WireError("message type")),
        }
    }

    /// Parses a message from the daemon, all or nothing: [`ServerMsg::view`] with every entry decoded.
    pub fn parse(b: &[u8]) -> Result<ServerMsg, WireError> {
        fn all(it: EntryIter<'_>) -> Result<Vec<Entry>, WireError> {
            let mut v = Vec::with_capacity(it.remaining());
            for e in it {
                v.push(e?.to_entry().ok_or(WireError("nickname"))?);
            }
            Ok(v)
        }
        Ok(match ServerMsg::view(b)? {
            ServerView::Registered(m) => m,
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
                for e in entries {
                    put_entry(&mut out, e);
                }
                finish_entries(&mut out, entries.len() as u16);
            }
            ServerMsg::Delta { from, to, entries } => {
                begin_delta(&mut out, *from, *to);
                for e in entries {
                    put_entry(&mut out, e);
                }
                finish_entries(&mut out, entries.len() as u16);
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
        let mut big = entry(&"z".repeat(32), Status::Online);
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
                entries: vec![entry("a", Status::Online), entry("b", Status::Offline), big],
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
        let mut one = Vec::new();
        put_entry(&mut one, &big);
        assert_eq!(one.len(), MAX_ENTRY_LEN);
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
        // The second entry's status byte made invalid. That entry is 30 bytes: nick 1+1, instance 8, status
        // 1, since 8, address 1+4, port 2, flaps 4; its status is 10 bytes in.
        let status = b.len() - 30 + 10;
        assert_eq!(b[status], 0, "Offline");
        b[status] = 9;
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
        assert_eq!(ServerMsg::parse(&b), Err(WireError("entry count")));
        assert!(ServerMsg::parse(&[SNAPSHOT, 0, 0, 0, 0, 0, 0, 0, 1, 0, 3, 0, 3, 0, 0]).is_err());
        let d = ServerMsg::Delta {
            from: 5,
            to: 5,
            entries: vec![],
        };
        assert_eq!(
            ServerMsg::parse(&d.encode()),
            Err(WireError("version range"))
        );
        assert!(ClientMsg::parse(&[9]).is_err());
        assert!(ClientMsg::parse(&[]).is_err());
    }
}
