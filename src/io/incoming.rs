//! One incoming transfer's files on the receiver's disk (issue 16): the I/O half of receiving, under the
//! directory the user chose.
//!
//! While a transfer runs, its files grow in a hidden work directory of their own beside what is already
//! there, `DIR/.mpc-incoming-ID/` (ID: the transfer id in hex), one `INDEX.part` at a time, with the
//! transfer's state (`state.json`: the name chosen for the transfer's top entry, the entries finished). A
//! part takes its place in `DIR` only once its BLAKE3 matches the hash the sender announced, and under a
//! numbered name if its name is taken: nothing already there is overwritten,
//! and nothing unverified is ever seen under a real name. A transfer cut at any point (the process killed,
//! the machine asleep) is opened again under the same id: [`Incoming::resume`] says where it goes on (the
//! entries finished, and what the current one's part holds), and that part is hashed from the disk, not
//! sent again. Writes reach the part at once (a killed process loses none of them); they are made durable
//! ([`Incoming::sync`]) when the caller says, and always before a file takes its name.
//!
//! Paths come sanitised ([`SafePath`]): they cannot leave `DIR`. A full disk is reported as such
//! ([`StoreError::DiskFull`]) and loses nothing already written.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::io::file_hash;
use crate::transfer::name::{SafePath, sanitise_name, split_extension, unused_name};

/// Why a transfer's files could not be kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// No space left on the device (what was written before is kept, to resume once there is room).
    DiskFull,
    /// The bytes received do not hash to what the sender announced; the part was removed.
    HashMismatch,
    /// The entry does not follow the transfer's state (another index, a gap, more bytes than its size).
    OutOfStep(String),
    /// Any other I/O error, with what was being done.
    Io(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::DiskFull => f.write_str(
                "the disk is full: what arrived so far is kept, and the transfer goes on from there once there \
                 is room",
            ),
            StoreError::HashMismatch => {
                f.write_str("the file received does not match the sender's hash; it was not kept")
            }
            StoreError::OutOfStep(why) => write!(f, "out of step: {why}"),
            StoreError::Io(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for StoreError {}

/// `e`, met while doing `what` to `path`, as a [`StoreError`]: ENOSPC and EDQUOT are a full disk.
fn io_error(e: &io::Error, what: &str, path: &Path) -> StoreError {
    if e.kind() == io::ErrorKind::StorageFull
        || e.raw_os_error() == Some(libc::ENOSPC)
        || e.raw_os_error() == Some(libc::EDQUOT)
    {
        return StoreError::DiskFull;
    }
    StoreError::Io(format!("cannot {what} {}: {e}", path.display()))
}

/// What is kept between runs in `state.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    /// The name the transfer's top entry takes in the directory (numbered if the offered one was taken),
    /// chosen at its first entry.
    top: Option<String>,
    /// Entries below this index are finished: in place, verified.
    complete_below: u32,
    /// Their bytes together (a resumed receiver checks the offer's total with them).
    #[serde(default)]
    complete_bytes: u64,
    /// The entry being written, and how many of its bytes were last made durable ([`Incoming::sync`]).
    partial: Option<(u32, u64)>,
}

/// The entry being written.
struct Open {
    index: u32,
    /// `None` for a directory.
    file: Option<File>,
    part: PathBuf,
    /// Where it goes, relative to the directory (its first component the transfer's top name).
    path: SafePath,
    size: u64,
    written: u64,
    /// Bytes handed to the kernel's writeback ([`Incoming::start_writeback`]).
    kicked: u64,
    hasher: blake3::Hasher,
}

/// One incoming transfer's files (see the module docs).
pub struct Incoming {
    dir: PathBuf,
    work: PathBuf,
    state: State,
    open: Option<Open>,
    /// The partial entry's held bytes hashed already ([`Incoming::prehashed`]): index, length, hasher.
    prefix: Option<(u32, u64, blake3::Hasher)>,
}

impl Incoming {
    /// The transfer `id`'s files under `dir`: its work directory made, or its state read back if an earlier
    /// run left one (a state that does not parse starts the transfer over, keeping nothing unverified).
    pub fn open(dir: &Path, id: &[u8; 16]) -> Result<Incoming, StoreError> {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let work = dir.join(format!(".mpc-incoming-{hex}"));
        fs::create_dir_all(&work).map_err(|e| io_error(&e, "create", &work))?;
        let state = fs::read(work.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Ok(Incoming {
            dir: dir.to_path_buf(),
            work,
            state,
            open: None,
            prefix: None,
        })
    }

    /// Where the transfer resumes: entries below the first number are finished; the second, if any, is the
    /// entry under way and how many of its bytes are safely on disk.
    /// The entry under way is the first not finished (entries go in order), and what it holds is what its
    /// `.part` holds: everything written, for a process that was killed (the OS has it); after a power loss,
    /// what the disk kept (at least what was last synced, unless someone cut the file short). Its hash is
    /// checked when it is complete, so a part the disk mangled fails then and is received again.
    pub fn resume(&self) -> (u32, Option<(u32, u64)>) {
        let i = self.state.complete_below;
        let partial = fs::metadata(self.part_path(i))
            .ok()
            .map(|m| (i, m.len()))
            .filter(|&(_, len)| len > 0);
        (i, partial)
    }

    /// Asks the kernel to start writing the entry under way's bytes written since the last call to disk,
    /// without waiting (`sync_file_range(SYNC_FILE_RANGE_WRITE)`): the periodic [`Incoming::sync`] then finds
    /// most of them written already, and blocks its caller's loop for a moment rather than for the whole
    /// interval's worth of disk writes. A hint: an error is ignored (the sync does the work anyway).
    pub fn start_writeback(&mut self) {
        use std::os::fd::AsRawFd;
        let Some(o) = &mut self.open else { return };
        let Some(f) = &o.file else { return };
        if o.written <= o.kicked {
            return;
        }
        let (from, len) = (o.kicked, o.written - o.kicked);
        let (Ok(from), Ok(len)) = (i64::try_from(from), i64::try_from(len)) else {
            return;
        };
        // SAFETY: the descriptor is the open file's own, alive for the call; the call reads no memory of ours.
        let r =
            unsafe { libc::sync_file_range(f.as_raw_fd(), from, len, libc::SYNC_FILE_RANGE_WRITE) };
        if r == 0 {
            o.kicked = o.written;
        }
    }

    /// The entry under way (a file) and how many of its bytes are written.
    pub fn written(&self) -> Option<(u32, u64)> {
        self.open
            .as_ref()
            .filter(|o| o.file.is_some())
            .map(|o| (o.index, o.written))
    }

    /// Where entry `index`'s bytes are written until the entry is complete.
    pub fn part_path(&self, index: u32) -> PathBuf {
        self.work.join(format!("{index}.part"))
    }

    /// The first `len` bytes of entry `index`'s `.part` are hashed already (by the caller, in steps, so a
    /// large part does not stop its loop): [`Incoming::begin`] goes on from `hasher` instead of reading
    /// them again.
    pub fn prehashed(&mut self, index: u32, len: u64, hasher: blake3::Hasher) {
        self.prefix = Some((index, len, hasher));
    }

    /// The bytes of the entries finished.
    pub fn complete_bytes(&self) -> u64 {
        self.state.complete_bytes
    }

    /// Begins entry `index` (the next one), a directory (`dir_entry`) or a file of `size` bytes at `path`;
    /// returns the offset its bytes resume from (0, or what an earlier run left in its part).
    pub fn begin(
        &mut self,
        index: u32,
        path: &SafePath,
        dir_entry: bool,
        size: u64,
    ) -> Result<u64, StoreError> {
        if index < self.state.complete_below {
            return Err(StoreError::OutOfStep(format!(
                "entry {index} is finished already"
            )));
        }
        let path = self.placed(path)?;
        if dir_entry {
            let at = path.under(&self.dir);
            fs::create_dir_all(&at).map_err(|e| io_error(&e, "create", &at))?;
            self.open = Some(Open {
                index,
                file: None,
                part: at,
                path,
                size: 0,
                written: 0,
                kicked: 0,
                hasher: blake3::Hasher::new(),
            });
            return Ok(0);
        }
        let part = self.part_path(index);
        let resume = match self.resume().1 {
            Some((i, synced)) if i == index && synced <= size => synced,
            _ => 0,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&part)
            .map_err(|e| io_error(&e, "open", &part))?;
        // A part longer than the file it is for is not this entry's: cut it back, and hash what stays.
        file.set_len(resume)
            .map_err(|e| io_error(&e, "truncate", &part))?;
        let hasher = match self.prefix.take() {
            _ if resume == 0 => blake3::Hasher::new(),
            Some((i, len, h)) if i == index && len == resume => h,
            _ => file_hash::hash_prefix(&part, resume).map_err(|e| io_error(&e, "read", &part))?,
        };
        file.seek(SeekFrom::Start(resume))
            .map_err(|e| io_error(&e, "seek in", &part))?;
        self.state.partial = Some((index, resume));
        self.open = Some(Open {
            index,
            file: Some(file),
            part,
            path,
            size,
            written: resume,
            kicked: resume,
            hasher,
        });
        Ok(resume)
    }

    /// `path` with the transfer's top name as its first component: chosen (numbered if taken in the
    /// directory) at the first entry, and kept across runs so a resumed folder goes on in the same place.
    fn placed(&mut self, path: &SafePath) -> Result<SafePath, StoreError> {
        let top = match &self.state.top {
            Some(t) => sanitise_name(t),
            None => {
                let offered = sanitise_name(path.first());
                let file = path.depth() == 1;
                let dir = &self.dir;
                let t = unused_name(&offered, file, |n| dir.join(n.as_str()).exists()).ok_or_else(
                    || StoreError::Io(format!("no free name like {offered} in {}", dir.display())),
                )?;
                self.state.top = Some(t.as_str().to_string());
                self.save()?;
                t
            }
        };
        path.with_first(&top)
            .map_err(|e| StoreError::OutOfStep(format!("{path}: {e}")))
    }

    /// Appends `bytes` at `offset` to the entry under way (which must be `index`, and `offset` where it
    /// stands).
    pub fn write(&mut self, index: u32, offset: u64, bytes: &[u8]) -> Result<(), StoreError> {
        let o = self.expect(index)?;
        if offset != o.written || o.written + bytes.len() as u64 > o.size {
            return Err(StoreError::OutOfStep(format!(
                "{} bytes at {offset} for entry {index}, which has {} of {}",
                bytes.len(),
                o.written,
                o.size
            )));
        }
        let Some(f) = &mut o.file else {
            return Err(StoreError::OutOfStep(format!(
                "entry {index} is a directory"
            )));
        };
        f.write_all(bytes)
            .map_err(|e| io_error(&e, "write", &o.part))?;
        o.hasher.update(bytes);
        o.written += bytes.len() as u64;
        Ok(())
    }

    /// Makes what was written to the entry under way durable, and records it as the resume point; returns
    /// (index, bytes synced).
    pub fn sync(&mut self) -> Result<(u32, u64), StoreError> {
        let Some(o) = &mut self.open else {
            return Err(StoreError::OutOfStep("no entry under way".into()));
        };
        if let Some(f) = &o.file {
            f.sync_data().map_err(|e| io_error(&e, "sync", &o.part))?;
        }
        let at = (o.index, o.written);
        self.state.partial = Some(at);
        self.save()?;
        Ok(at)
    }

    /// Ends entry `index`: all its bytes arrived, their hash is `expected`; it takes its place (under a
    /// numbered name if its name is taken) and the path it got is returned. On a mismatch the part is
    /// removed and the entry starts over if offered again.
    pub fn finish(&mut self, index: u32, expected: &[u8; 32]) -> Result<PathBuf, StoreError> {
        let o = self.expect(index)?;
        if o.written != o.size {
            return Err(StoreError::OutOfStep(format!(
                "entry {index} has {} of its {} bytes",
                o.written, o.size
            )));
        }
        let mut o = self.open.take().unwrap_or_else(|| unreachable!());
        let placed = match o.file.take() {
            // A directory is in place since it began.
            None => o.part.clone(),
            Some(f) => {
                if o.hasher.finalize().as_bytes() != expected {
                    drop(f);
                    let _ = fs::remove_file(&o.part);
                    self.state.partial = None;
                    self.save()?;
                    return Err(StoreError::HashMismatch);
                }
                f.sync_data().map_err(|e| io_error(&e, "sync", &o.part))?;
                let target = o.path.under(&self.dir);
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent).map_err(|e| io_error(&e, "create", parent))?;
                }
                let target = free_name(&target).ok_or_else(|| {
                    StoreError::Io(format!("no free name like {} there", target.display()))
                })?;
                fs::rename(&o.part, &target)
                    .map_err(|e| io_error(&e, "move into place", &target))?;
                target
            }
        };
        self.state.complete_below = index + 1;
        self.state.complete_bytes += o.size;
        self.state.partial = None;
        self.save()?;
        Ok(placed)
    }

    /// The entry under way and the bytes written to it since its last sync, if any are.
    pub fn unsynced(&self) -> Option<(u32, u64)> {
        let o = self.open.as_ref()?;
        let synced = match self.state.partial {
            Some((i, synced)) if i == o.index => synced,
            _ => 0,
        };
        let n = o.written.saturating_sub(synced);
        (n > 0 && o.file.is_some()).then_some((o.index, n))
    }

    /// Where the transfer's top entry is (or goes) in the directory, once its first entry began.
    pub fn top(&self) -> Option<PathBuf> {
        self.state.top.as_ref().map(|t| self.dir.join(t))
    }

    /// The transfer ended with nothing of it on disk (no entry begun): its work directory goes, so refused
    /// and cancelled offers leave nothing behind. One that holds anything stays, to resume from.
    pub fn discard_if_empty(&self) {
        if self.state.top.is_none() && self.state.complete_below == 0 {
            let _ = fs::remove_dir_all(&self.work);
        }
    }

    /// Every entry finished: the work directory goes.
    pub fn done(self) -> Result<(), StoreError> {
        fs::remove_dir_all(&self.work).map_err(|e| io_error(&e, "remove", &self.work))
    }

    fn expect(&mut self, index: u32) -> Result<&mut Open, StoreError> {
        match &mut self.open {
            Some(o) if o.index == index => Ok(o),
            _ => Err(StoreError::OutOfStep(format!(
                "entry {index} is not under way"
            ))),
        }
    }

    /// Writes the state atomically (a temporary file, synced, renamed over the old one).
    fn save(&self) -> Result<(), StoreError> {
        let p = self.work.join("state.json");
        let tmp = self.work.join("state.json.tmp");
        let bytes = serde_json::to_vec(&self.state).unwrap_or_default();
        let mut f = File::create(&tmp).map_err(|e| io_error(&e, "create", &tmp))?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| io_error(&e, "write", &tmp))?;
        fs::rename(&tmp, &p).map_err(|e| io_error(&e, "replace", &p))
    }
}

/// `target`, or the first numbered name beside it that is free (`a (1).txt`): an entry named like one that
/// exists (two entries of one transfer that sanitise alike) never overwrites it.
fn free_name(target: &Path) -> Option<PathBuf> {
    if !target.exists() {
        return Some(target.to_path_buf());
    }
    let parent = target.parent().unwrap_or(Path::new("."));
    let name = sanitise_name(&target.file_name().unwrap_or_default().to_string_lossy());
    let keep_ext = !split_extension(name.as_str()).1.is_empty();
    unused_name(&name, keep_ext, |n| parent.join(n.as_str()).exists())
        .map(|n| parent.join(n.as_str()))
}

#[cfg(test)]
mod tests;
