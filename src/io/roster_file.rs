//! The saved roster on disk: `roster.json` in the daemon's directory (its format is
//! [`crate::registry::saved`]), written atomically (temporary file, fsync, rename, fsync of the directory) so
//! a crash leaves either the old file or the new one, never half of one, and written by a thread of its own
//! so the daemon's loop never waits for it.
//!
//! A file that cannot be read back (truncated, corrupt, from a future version) is renamed aside with a
//! timestamp and reported; the daemon then starts with an empty roster. Nothing is silently dropped.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use crate::registry::saved::{self, Decoded, Image};

/// Name of the roster file inside the daemon's directory.
pub const FILE_NAME: &str = "roster.json";

/// What [`load`] found.
#[derive(Debug)]
pub enum Loaded {
    /// No roster file: a first start.
    Missing,
    /// The saved roster.
    Roster {
        /// What was saved (the registry turns the online entries offline).
        image: Image,
        /// Entries that were skipped as invalid (bad nickname or key, duplicate).
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

/// Writes `bytes` as `dir/roster.json`, atomically and durably.
pub fn save(dir: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomically(dir, |f| f.write_all(bytes))
}

/// Writes the roster as `dir/roster.json`, atomically and durably, encoding it straight into the file.
pub fn save_roster(dir: &Path, image: &Image) -> io::Result<()> {
    write_atomically(dir, |f| {
        let mut w = io::BufWriter::with_capacity(64 * 1024, f);
        saved::encode_into(&mut w, image)?;
        w.flush()
    })
}

/// Temporary file, `write`, fsync, rename over `dir/roster.json`, fsync of the directory.
fn write_atomically(dir: &Path, write: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let mut f = File::create(&tmp)?;
    write(&mut f)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(FILE_NAME))?;
    // The rename is durable only once the directory entry is.
    File::open(dir)?.sync_all()
}

/// One roster image to write.
struct Job {
    image: Image,
}

#[derive(Default)]
struct Slot {
    /// The newest image not yet taken by the writer: a newer one replaces it.
    job: Option<Job>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    slot: Mutex<Slot>,
    wake: Condvar,
    errors: AtomicU64,
    saves: AtomicU64,
}

/// Saves the roster on a thread of its own, so the daemon's loop never waits for the encoding, the write and
/// the two fsyncs (8 ms at 10 000 entries on this machine, and growing with the roster). Only the newest image
/// matters: one handed over while another is being written replaces any still waiting.
pub struct Saver {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Saver {
    /// Starts the writer for `dir/roster.json`.
    pub fn start(dir: PathBuf) -> io::Result<Saver> {
        let shared = Arc::new(Shared::default());
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("roster-saver".into())
            .spawn(move || write_images(&dir, &for_thread))?;
        Ok(Saver {
            shared,
            thread: Some(thread),
        })
    }

    /// Hands over the roster to be written; returns at once.
    pub fn save(&self, image: Image) {
        let job = Job { image };
        let mut slot = self
            .shared
            .slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        slot.job = Some(job);
        self.shared.wake.notify_one();
    }

    /// Saves that failed so far (each is also logged).
    pub fn errors(&self) -> u64 {
        self.shared.errors.load(Ordering::Relaxed)
    }

    /// Saves completed so far.
    pub fn saves(&self) -> u64 {
        self.shared.saves.load(Ordering::Relaxed)
    }

    /// Writes what is still waiting and stops the writer; the roster on disk is then the last one handed over.
    /// Later saves are not written. Dropping the saver does the same.
    pub fn finish(&mut self) {
        self.shared
            .slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            log::error!("the roster saver thread panicked");
        }
    }
}

impl Drop for Saver {
    fn drop(&mut self) {
        self.finish();
    }
}

fn write_images(dir: &Path, shared: &Shared) {
    loop {
        let job = {
            let mut slot = shared.slot.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                if let Some(job) = slot.job.take() {
                    break job;
                }
                if slot.closed {
                    return;
                }
                slot = shared
                    .wake
                    .wait(slot)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        match save_roster(dir, &job.image) {
            Ok(()) => shared.saves.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                log::error!("cannot save the roster in {}: {e}", dir.display());
                shared.errors.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// Reads `dir/roster.json`. An unreadable file is renamed to `roster.json.bad-<now_ms>` and reported.
pub fn load(dir: &Path, now_unix_ms: u64) -> io::Result<Loaded> {
    let path = dir.join(FILE_NAME);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(e) => return Err(e),
    };
    match saved::decode(&bytes) {
        Ok(Decoded { image, skipped }) => Ok(Loaded::Roster { image, skipped }),
        Err(e) => {
            let reason = e.to_string();
            let moved_to = dir.join(format!("{FILE_NAME}.bad-{now_unix_ms}"));
            fs::rename(&path, &moved_to)?;
            Ok(Loaded::SetAside { reason, moved_to })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nick::Nick;
    use crate::registry::saved::Record;
    use crate::registry::saved::encode;
    use crate::registry::wire::{Entry, Status};

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mp-persist-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn entry(n: &str, status: Status) -> Record {
        Record {
            entry: Entry {
                nick: Nick::new(n).unwrap(),
                instance: 9,
                status,
                since_ms: 1000,
                chat: "127.0.0.1:5000".parse().unwrap(),
                flaps: 1,
                extra: None,
            },
            key: Some(crate::identity::PublicKey([n.len() as u8; 32])),
            host: None,
        }
    }

    fn image(records: Vec<Record>, version: u64, saved_unix_ms: u64) -> Image {
        Image {
            records,
            bindings: Vec::new(),
            version,
            saved_unix_ms,
        }
    }

    #[test]
    fn saver_writes_the_newest_image_before_finish_returns() {
        let d = dir("saver");
        let mut saver = Saver::start(d.clone()).unwrap();
        for v in 1..=50u64 {
            saver.save(image(vec![entry("alice", Status::Online)], v, v));
        }
        saver.save(image(
            vec![
                entry("alice", Status::Online),
                entry("bob", Status::Offline),
            ],
            51,
            51,
        ));
        // Older images may have been skipped, never the last one.
        saver.finish();
        let Loaded::Roster { image, .. } = load(&d, 0).unwrap() else {
            panic!("no roster saved")
        };
        assert_eq!(image.version, 51);
        assert_eq!(image.records.len(), 2);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn saver_counts_failures() {
        let d = dir("saver-fail").join("missing");
        let mut saver = Saver::start(d).unwrap();
        saver.save(image(vec![entry("alice", Status::Online)], 1, 1));
        saver.finish();
        assert_eq!(saver.errors(), 1);
        assert_eq!(saver.saves(), 0);
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
        save_roster(&d, &image(es.clone(), 42, 5000)).unwrap();
        let Loaded::Roster { image, skipped } = load(&d, 0).unwrap() else {
            panic!()
        };
        assert_eq!(image.records, es[..2].to_vec());
        assert_eq!((image.version, image.saved_unix_ms, skipped), (42, 5000, 0));
        assert!(!d.join("roster.json.tmp").exists());
    }

    #[test]
    fn truncated_and_corrupt_files_are_set_aside() {
        let d = dir("bad");
        let good = encode(&image(vec![entry("alice", Status::Online)], 1, 1));
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
        let Loaded::Roster { image, skipped } = load(&d, 0).unwrap() else {
            panic!()
        };
        assert_eq!(image.records.len(), 1);
        assert_eq!(skipped, 2);
    }
}
