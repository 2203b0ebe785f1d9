//! The saved roster's format: a JSON image of every entry with the roster version and when it was saved.
//! Pure encoding and decoding; writing it to disk atomically, off the daemon's loop, is
//! [`crate::io::roster_file`]'s job.
//!
//! Decoding is strict about the envelope (format name and version) and lenient about entries: an entry with
//! an invalid nickname, a duplicate one or an unreadable key is skipped and counted, so one bad line does not
//! cost the rest.
//!
//! Since nicknames are owned (issue 14), each entry carries the key it is bound to (`key`, 64 hex digits;
//! absent in files of earlier versions, whose entries the first key to register then claims), and `bindings`
//! keeps the nickname → key bindings of entries that expired from the roster but not yet from their binding.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::wire::{Entry, Extra, MAX_AWAY, Status};
use crate::group::{ChannelName, MAX_CHANNELS_PER_CLIENT};
use crate::identity::{KEY_LEN, PublicKey};
use crate::nick::Nick;

const FORMAT: &str = "multiproto-roster";
const FORMAT_VERSION: u32 = 1;

/// One roster entry with what the roster wire does not carry: the key its nickname is bound to, and the
/// address the client registered from, which the per-host caps count against (see
/// [`crate::registry::Config::max_clients_per_host`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The entry as the roster shows it.
    pub entry: Entry,
    /// The key that owns the nickname; `None` for an entry saved before nicknames were owned.
    pub key: Option<PublicKey>,
    /// The source address of the registration that made the entry or last took it over; `None` for an entry
    /// from a file saved before hosts were kept (the registry counts it against its chat address's IP).
    pub host: Option<IpAddr>,
}

impl From<Entry> for Record {
    /// An entry with no key and no host known.
    fn from(entry: Entry) -> Record {
        Record {
            entry,
            key: None,
            host: None,
        }
    }
}

/// A nickname whose entry expired from the roster, still bound to its key.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The nickname.
    pub nick: Nick,
    /// Its owner.
    pub key: PublicKey,
    /// When its owner was last online (Unix ms): the binding lapses a configured time after.
    pub last_unix_ms: u64,
}

/// What is saved: the roster's records and bindings, its version, and when.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Image {
    /// Every entry (removed ones are not saved).
    pub records: Vec<Record>,
    /// Bindings of expired entries.
    pub bindings: Vec<Binding>,
    /// The roster version.
    pub version: u64,
    /// When it was saved.
    pub saved_unix_ms: u64,
}

#[derive(Deserialize)]
struct RawImage {
    format: String,
    version: u32,
    saved_unix_ms: u64,
    roster_version: u64,
    entries: Vec<SavedEntry>,
    #[serde(default)]
    bindings: Vec<SavedBinding>,
}

#[derive(Deserialize)]
struct SavedEntry {
    nick: String,
    instance: u64,
    chat: SocketAddr,
    online: bool,
    since_unix_ms: u64,
    flaps: u32,
    #[serde(default)]
    key: Option<String>,
    /// Absent in files written before the per-host caps.
    #[serde(default)]
    host: Option<IpAddr>,
    /// Channels it is in; absent in files written before channels (and when there are none).
    #[serde(default)]
    channels: Vec<String>,
    /// Its away message, if it was away; absent in files written before presence.
    #[serde(default)]
    away: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct SavedBinding {
    nick: String,
    key: String,
    last_unix_ms: u64,
}

fn key_hex(k: &PublicKey) -> String {
    data_encoding::HEXLOWER.encode(&k.0)
}

fn parse_key(s: &str) -> Option<PublicKey> {
    let raw = data_encoding::HEXLOWER.decode(s.as_bytes()).ok()?;
    let k: [u8; KEY_LEN] = raw.try_into().ok()?;
    Some(PublicKey(k))
}

/// The file's layout for writing: the same fields as [`Image`], with the entries serialised straight from
/// the roster (no intermediate copy of 100 000 entries, no image held whole in memory).
#[derive(Serialize)]
struct ImageOut<'a> {
    format: &'static str,
    version: u32,
    saved_unix_ms: u64,
    roster_version: u64,
    #[serde(serialize_with = "saved_entries")]
    entries: &'a [Record],
    #[serde(serialize_with = "saved_bindings")]
    bindings: &'a [Binding],
}

#[derive(Serialize)]
struct SavedEntryOut<'a> {
    nick: &'a str,
    instance: u64,
    chat: SocketAddr,
    online: bool,
    since_unix_ms: u64,
    flaps: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<IpAddr>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    channels: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    away: Option<&'a str>,
}

fn saved_entries<S: serde::Serializer>(records: &&[Record], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(
        records
            .iter()
            .filter(|r| r.entry.status != Status::Removed)
            .map(|r| SavedEntryOut {
                nick: r.entry.nick.as_str(),
                instance: r.entry.instance,
                chat: r.entry.chat,
                online: r.entry.status == Status::Online,
                since_unix_ms: r.entry.since_ms,
                flaps: r.entry.flaps,
                key: r.key.as_ref().map(key_hex),
                host: r.host,
                channels: r.entry.channels().iter().map(|c| c.as_str()).collect(),
                away: r.entry.away(),
            }),
    )
}

fn saved_bindings<S: serde::Serializer>(bindings: &&[Binding], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(bindings.iter().map(|b| SavedBinding {
        nick: b.nick.to_string(),
        key: key_hex(&b.key),
        last_unix_ms: b.last_unix_ms,
    }))
}

fn image_out(img: &Image) -> ImageOut<'_> {
    ImageOut {
        format: FORMAT,
        version: FORMAT_VERSION,
        saved_unix_ms: img.saved_unix_ms,
        roster_version: img.version,
        entries: &img.records,
        bindings: &img.bindings,
    }
}

/// The optional fields of a saved entry, checked as the wire checks them: channels that are not valid
/// names, repeated or past the cap are dropped, an away message is cut to its bound.
fn saved_extra(channels: Vec<String>, away: Option<String>) -> Option<Box<Extra>> {
    let mut cs: Vec<ChannelName> = channels
        .iter()
        .filter_map(|c| ChannelName::new(c).ok())
        .collect();
    cs.sort();
    cs.dedup();
    cs.truncate(MAX_CHANNELS_PER_CLIENT);
    let x = Extra {
        channels: cs,
        away: away
            .map(|a| crate::utf8_prefix(&crate::peer::sanitize_line(&a), MAX_AWAY).to_string()),
        renamed_to: None,
    };
    (!x.is_empty()).then(|| Box::new(x))
}

/// Serialises the roster image.
pub fn encode(img: &Image) -> Vec<u8> {
    // Serialising plain data into memory cannot fail.
    serde_json::to_vec_pretty(&image_out(img)).unwrap_or_default()
}

/// Serialises the roster image into `w` (a file: no copy of the whole image in memory).
pub fn encode_into(w: &mut impl io::Write, img: &Image) -> io::Result<()> {
    serde_json::to_writer_pretty(w, &image_out(img)).map_err(io::Error::other)
}

/// Why a saved image could not be read.
#[derive(Debug)]
pub enum DecodeError {
    /// Not JSON of the image's shape (truncated, corrupt).
    Json(serde_json::Error),
    /// Another file's format name.
    Format(String),
    /// A format version this build does not read.
    Version(u32),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Json(e) => write!(f, "{e}"),
            DecodeError::Format(name) => write!(f, "not a roster file (format {name:?})"),
            DecodeError::Version(v) => write!(f, "roster file version {v} is not supported"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// A decoded image.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded {
    /// What was saved (less what was skipped).
    pub image: Image,
    /// Entries and bindings skipped as invalid (bad nickname or key, duplicate).
    pub skipped: usize,
}

/// Reads an image written by [`encode`] or [`encode_into`].
pub fn decode(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let image: RawImage = serde_json::from_slice(bytes).map_err(DecodeError::Json)?;
    if image.format != FORMAT {
        return Err(DecodeError::Format(image.format));
    }
    if image.version != FORMAT_VERSION {
        return Err(DecodeError::Version(image.version));
    }
    let mut skipped = 0;
    let mut seen = std::collections::HashSet::new();
    let mut records = Vec::with_capacity(image.entries.len());
    for e in image.entries {
        let Ok(nick) = Nick::new(&e.nick) else {
            skipped += 1;
            continue;
        };
        let key = match e.key.as_deref().map(parse_key) {
            None => None,
            Some(Some(k)) => Some(k),
            // An unreadable key: without it the nickname would be anyone's to take, so the entry is
            // skipped (and reported) rather than loaded unowned.
            Some(None) => {
                skipped += 1;
                continue;
            }
        };
        if !seen.insert(nick) {
            skipped += 1;
            continue;
        }
        let entry = Entry {
            nick,
            instance: e.instance,
            status: if e.online {
                Status::Online
            } else {
                Status::Offline
            },
            since_ms: e.since_unix_ms,
            chat: e.chat,
            flaps: e.flaps,
            extra: saved_extra(e.channels, e.away),
        };
        records.push(Record {
            entry,
            key,
            host: e.host,
        });
    }
    let mut bindings = Vec::with_capacity(image.bindings.len());
    for b in image.bindings {
        match (Nick::new(&b.nick), parse_key(&b.key)) {
            (Ok(nick), Some(key)) if seen.insert(nick) => bindings.push(Binding {
                nick,
                key,
                last_unix_ms: b.last_unix_ms,
            }),
            _ => skipped += 1,
        }
    }
    Ok(Decoded {
        image: Image {
            records,
            bindings,
            version: image.roster_version,
            saved_unix_ms: image.saved_unix_ms,
        },
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_round_trips_and_removed_entries_are_not_saved() {
        let e = |n: &str, status| Entry {
            nick: Nick::new(n).unwrap(),
            instance: 7,
            status,
            since_ms: 1_000,
            chat: "10.0.0.2:7000".parse().unwrap(),
            flaps: 2,
            extra: None,
        };
        let host = Some("10.0.0.9".parse().unwrap());
        let r = |entry, key| Record { entry, key, host };
        let img = Image {
            records: vec![
                r(e("a", Status::Online), Some(PublicKey([1; 32]))),
                r(e("b", Status::Offline), None),
                r(e("c", Status::Removed), Some(PublicKey([3; 32]))),
            ],
            bindings: vec![Binding {
                nick: Nick::new("d").unwrap(),
                key: PublicKey([4; 32]),
                last_unix_ms: 5,
            }],
            version: 42,
            saved_unix_ms: 99,
        };
        let d = decode(&encode(&img)).unwrap();
        assert_eq!(d.image.records, img.records[..2].to_vec());
        assert_eq!(d.image.bindings, img.bindings);
        assert_eq!(
            (d.image.version, d.image.saved_unix_ms, d.skipped),
            (42, 99, 0)
        );
        let mut via_writer = Vec::new();
        encode_into(&mut via_writer, &img).unwrap();
        assert_eq!(via_writer, encode(&img));
    }

    #[test]
    fn files_from_before_owned_nicknames_load_unowned_and_bad_keys_are_skipped() {
        let old = br#"{"format":"multiproto-roster","version":1,"saved_unix_ms":9,"roster_version":3,"entries":[
            {"nick":"old","instance":1,"chat":"10.0.0.1:1","online":false,"since_unix_ms":5,"flaps":0},
            {"nick":"bad","instance":1,"chat":"10.0.0.1:1","online":false,"since_unix_ms":5,"flaps":0,"key":"zz"}]}"#;
        let d = decode(old).unwrap();
        assert_eq!(d.image.records.len(), 1);
        assert_eq!(d.image.records[0].key, None);
        assert_eq!(d.image.records[0].host, None);
        assert_eq!(d.skipped, 1);
    }

    #[test]
    fn a_foreign_or_future_envelope_is_refused() {
        assert!(matches!(decode(b"{"), Err(DecodeError::Json(_))));
        let other =
            br#"{"format":"x","version":1,"saved_unix_ms":0,"roster_version":0,"entries":[]}"#;
        assert!(matches!(decode(other), Err(DecodeError::Format(f)) if f == "x"));
        let future = br#"{"format":"multiproto-roster","version":9,"saved_unix_ms":0,"roster_version":0,"entries":[]}"#;
        assert!(matches!(decode(future), Err(DecodeError::Version(9))));
    }
}
