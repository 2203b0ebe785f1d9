//! The saved roster's format: a JSON image of every entry with the roster version and when it was saved.
//! Pure encoding and decoding; writing it to disk atomically, off the daemon's loop, is
//! [`crate::io::roster_file`]'s job.
//!
//! Decoding is strict about the envelope (format name and version) and lenient about entries: an entry with
//! an invalid nickname or a duplicate one is skipped and counted, so one bad line does not cost the rest.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::wire::{Entry, Status};
use crate::nick::Nick;

const FORMAT: &str = "multiproto-roster";
const FORMAT_VERSION: u32 = 1;

#[derive(Deserialize)]
struct Image {
    format: String,
    version: u32,
    saved_unix_ms: u64,
    roster_version: u64,
    entries: Vec<SavedEntry>,
}

#[derive(Deserialize)]
struct SavedEntry {
    nick: String,
    instance: u64,
    chat: SocketAddr,
    online: bool,
    since_unix_ms: u64,
    flaps: u32,
    /// Absent in files written before the per-host caps (the chat address's IP stands in for it then).
    #[serde(default)]
    host: Option<IpAddr>,
}

/// One roster entry as saved: what the roster shows, and the address the client registered from, which the
/// per-host caps count against (see [`crate::registry::Config::max_clients_per_host`]). The roster wire format
/// does not carry the host (clients have no use for it), so it travels beside the entry here.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The entry.
    pub entry: Entry,
    /// The source address of the registration that made the entry or last took it over; `None` for an entry
    /// from a file saved before hosts were kept.
    pub host: Option<IpAddr>,
}

impl From<Entry> for Record {
    /// An entry whose host is not known (the registry counts it against its chat address's IP).
    fn from(entry: Entry) -> Record {
        Record { entry, host: None }
    }
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
    host: Option<IpAddr>,
}

fn saved_entries<S: serde::Serializer>(entries: &&[Record], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(
        entries
            .iter()
            .filter(|r| r.entry.status != Status::Removed)
            .map(|&Record { ref entry, host }| SavedEntryOut {
                nick: entry.nick.as_str(),
                instance: entry.instance,
                chat: entry.chat,
                online: entry.status == Status::Online,
                since_unix_ms: entry.since_ms,
                flaps: entry.flaps,
                host,
            }),
    )
}

fn image_out(entries: &[Record], version: u64, saved_unix_ms: u64) -> ImageOut<'_> {
    ImageOut {
        format: FORMAT,
        version: FORMAT_VERSION,
        saved_unix_ms,
        roster_version: version,
        entries,
    }
}

/// Serialises the roster image.
pub fn encode(entries: &[Record], version: u64, saved_unix_ms: u64) -> Vec<u8> {
    // Serialising plain data into memory cannot fail.
    serde_json::to_vec_pretty(&image_out(entries, version, saved_unix_ms)).unwrap_or_default()
}

/// Serialises the roster image into `w` (a file: no copy of the whole image in memory).
pub fn encode_into(
    w: &mut impl io::Write,
    entries: &[Record],
    version: u64,
    saved_unix_ms: u64,
) -> io::Result<()> {
    serde_json::to_writer_pretty(w, &image_out(entries, version, saved_unix_ms))
        .map_err(io::Error::other)
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
    /// Entries as saved.
    pub entries: Vec<Record>,
    /// The roster version when saved.
    pub version: u64,
    /// When it was saved.
    pub saved_unix_ms: u64,
    /// Entries skipped as invalid (bad nickname, duplicate).
    pub skipped: usize,
}

/// Reads an image written by [`encode`] or [`encode_into`].
pub fn decode(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let image: Image = serde_json::from_slice(bytes).map_err(DecodeError::Json)?;
    if image.format != FORMAT {
        return Err(DecodeError::Format(image.format));
    }
    if image.version != FORMAT_VERSION {
        return Err(DecodeError::Version(image.version));
    }
    let mut skipped = 0;
    let mut seen = std::collections::HashSet::new();
    let mut entries = Vec::with_capacity(image.entries.len());
    for e in image.entries {
        let Ok(nick) = Nick::new(&e.nick) else {
            skipped += 1;
            continue;
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
        };
        entries.push(Record {
            entry,
            host: e.host,
        });
    }
    Ok(Decoded {
        entries,
        version: image.roster_version,
        saved_unix_ms: image.saved_unix_ms,
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
        };
        let host = Some("10.0.0.9".parse().unwrap());
        let entries = [
            Record {
                entry: e("a", Status::Online),
                host,
            },
            e("b", Status::Offline).into(),
            e("c", Status::Removed).into(),
        ];
        let d = decode(&encode(&entries, 42, 99)).unwrap();
        assert_eq!(d.entries, entries[..2].to_vec());
        assert_eq!((d.version, d.saved_unix_ms, d.skipped), (42, 99, 0));
        let mut via_writer = Vec::new();
        encode_into(&mut via_writer, &entries, 42, 99).unwrap();
        assert_eq!(via_writer, encode(&entries, 42, 99));
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

    /// Files written before the per-host caps have no `host`: they load, with the host unknown.
    #[test]
    fn an_image_without_hosts_still_loads() {
        let old = br#"{"format":"multiproto-roster","version":1,"saved_unix_ms":5,"roster_version":3,
            "entries":[{"nick":"ann","instance":1,"chat":"10.0.0.2:7000","online":false,"since_unix_ms":4,"flaps":0}]}"#;
        let d = decode(old).unwrap();
        assert_eq!(d.entries.len(), 1);
        assert_eq!(d.entries[0].entry.nick.as_str(), "ann");
        assert_eq!(d.entries[0].host, None);
    }
}
