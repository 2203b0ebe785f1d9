//! The saved roster: a JSON file in the daemon's directory, written atomically (temporary file, fsync,
//! rename, fsync of the directory) so a crash leaves either the old file or the new one, never half of one.
//!
//! A file that cannot be read back (truncated, corrupt, from a future version) is renamed aside with a
//! timestamp and reported; the daemon then starts with an empty roster. Nothing is silently dropped.

use std::fs::{self, File};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::wire::{Entry, Status};
use crate::discovery::Nick;

/// Name of the roster file inside the daemon's directory.
pub const FILE_NAME: &str = "roster.json";
const FORMAT: &str = "multiproto-roster";
const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Image {
    format: String,
    version: u32,
    saved_unix_ms: u64,
    roster_version: u64,
    entries: Vec<SavedEntry>,
}

#[derive(Serialize, Deserialize)]
struct SavedEntry {
    nick: String,
    instance: u64,
    chat: SocketAddr,
    online: bool,
    since_unix_ms: u64,
    flaps: u32,
}

/// What [`load`] found.
#[derive(Debug)]
pub enum Loaded {
    /// No roster file: a first start.
    Missing,
    /// The saved roster.
    Roster {
        /// Entries as saved (the registry turns the online ones offline).
        entries: Vec<Entry>,
        /// The roster version when saved.
        version: u64,
        /// When it was saved.
        saved_unix_ms: u64,
        /// Entries that were skipped as invalid (bad nickname, duplicate).
        skipped: usize,
    },
    /// The file could not be read back; it was moved to `moved_to`.
    SetAside {
        /// Why it was unreadable.
        reason: String,
        /// Where it is now.
        moved_to: PathBuf,
    },
}

/// Serialises the roster for [`save`].
pub fn encode(entries: impl Iterator<Item = Entry>, version: u64, saved_unix_ms: u64) -> Vec<u8> {
    let image = Image {
        format: FORMAT.into(),
        version: FORMAT_VERSION,
        saved_unix_ms,
        roster_version: version,
        entries: entries
            .filter(|e| e.status != Status::Removed)
            .map(|e| SavedEntry {
                nick: e.nick.to_string(),
                instance: e.instance,
                chat: e.chat,
                online: e.status == Status::Online,
                since_unix_ms: e.since_ms,
                flaps: e.flaps,
            })
            .collect(),
    };
    // Serialising plain data into memory cannot fail.
    serde_json::to_vec_pretty(&image).unwrap_or_default()
}

/// Writes `bytes` as `dir/roster.json`, atomically and durably.
pub fn save(dir: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(FILE_NAME))?;
    // The rename is durable only once the directory entry is.
    File::open(dir)?.sync_all()
}

fn decode(bytes: &[u8]) -> Result<(Vec<Entry>, u64, u64, usize), String> {
    let image: Image = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if image.format != FORMAT {
        return Err(format!("not a roster file (format {:?})", image.format));
    }
    if image.version != FORMAT_VERSION {
        return Err(format!(
            "roster file version {} is not supported",
            image.version
        ));
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
        entries.push(Entry {
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
        });
    }
    Ok((entries, image.roster_version, image.saved_unix_ms, skipped))
}

/// Reads `dir/roster.json`. An unreadable file is renamed to `roster.json.bad-<now_ms>` and reported.
pub fn load(dir: &Path, now_unix_ms: u64) -> io::Result<Loaded> {
    let path = dir.join(FILE_NAME);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(e) => return Err(e),
    };
    match decode(&bytes) {
        Ok((entries, version, saved_unix_ms, skipped)) => Ok(Loaded::Roster {
            entries,
            version,
            saved_unix_ms,
            skipped,
        }),
        Err(reason) => {
            let moved_to = dir.join(format!("{FILE_NAME}.bad-{now_unix_ms}"));
            fs::rename(&path, &moved_to)?;
            Ok(Loaded::SetAside { reason, moved_to })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mp-persist-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn entry(n: &str, status: Status) -> Entry {
        Entry {
            nick: Nick::new(n).unwrap(),
            instance: 9,
            status,
            since_ms: 1000,
            chat: "127.0.0.1:5000".parse().unwrap(),
            flaps: 1,
        }
    }

    #[test]
    fn save_and_load_round_trip() {
        let d = dir("rt");
        assert!(matches!(load(&d, 0).unwrap(), Loaded::Missing));
        let es = vec![
            entry("alice", Status::Online),
            entry("bob", Status::Offline),
            entry("gone", Status::Removed),
        ];
        save(&d, &encode(es.clone().into_iter(), 42, 5000)).unwrap();
        let Loaded::Roster {
            entries,
            version,
            saved_unix_ms,
            skipped,
        } = load(&d, 0).unwrap()
        else {
            panic!()
        };
        assert_eq!(entries, es[..2].to_vec());
        assert_eq!((version, saved_unix_ms, skipped), (42, 5000, 0));
        assert!(!d.join("roster.json.tmp").exists());
    }

    #[test]
    fn truncated_and_corrupt_files_are_set_aside() {
        let d = dir("bad");
        let good = encode(vec![entry("alice", Status::Online)].into_iter(), 1, 1);
        for (i, bad) in [
            &good[..good.len() / 2],
            b"\x00\xffgarbage",
            br#"{"format":"other"}"#,
        ]
        .iter()
        .enumerate()
        {
            fs::write(d.join(FILE_NAME), bad).unwrap();
            match load(&d, 100 + i as u64).unwrap() {
                Loaded::SetAside { moved_to, reason } => {
                    assert!(moved_to.exists(), "{reason}");
                    assert_eq!(fs::read(&moved_to).unwrap(), bad.to_vec());
                    assert!(!d.join(FILE_NAME).exists());
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn invalid_and_duplicate_entries_are_skipped_and_counted() {
        let d = dir("skip");
        let text = r#"{"format":"multiproto-roster","version":1,"saved_unix_ms":1,"roster_version":3,"entries":[
            {"nick":"ok","instance":1,"chat":"127.0.0.1:1","online":false,"since_unix_ms":1,"flaps":0},
            {"nick":"not ok","instance":1,"chat":"127.0.0.1:1","online":false,"since_unix_ms":1,"flaps":0},
            {"nick":"ok","instance":2,"chat":"127.0.0.1:2","online":true,"since_unix_ms":1,"flaps":0}]}"#;
        fs::write(d.join(FILE_NAME), text).unwrap();
        let Loaded::Roster {
            entries, skipped, ..
        } = load(&d, 0).unwrap()
        else {
            panic!()
        };
        assert_eq!(entries.len(), 1);
        assert_eq!(skipped, 2);
    }
}
