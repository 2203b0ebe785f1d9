//! What a sender offers (issue 16): a file, or a folder walked into its entries, each file hashed (BLAKE3,
//! read once in bounded memory) and remembered with its size and modification time, so that a file changed
//! between the offer and its sending is noticed ([`Entry::read_at`] refuses it) instead of arriving as
//! something its hash does not describe.
//!
//! A folder is walked depth first in name order (the same order every time, so a resumed transfer offers the
//! same entries under the same indexes), each directory before what it holds. Symbolic links are not followed
//! (one could lead anywhere on the sender's disk) and neither they nor devices, sockets or pipes are sent:
//! they are counted in [`Listing::skipped`] for the user to be told. A name that is not UTF-8 cannot be
//! offered (the wire carries UTF-8) and is refused with the path, as are more entries or bytes than the
//! limits allow.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::io::file_hash;

/// One entry offered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its path as offered: the top name, then components joined by `/`.
    pub path: String,
    /// A directory (no bytes).
    pub dir: bool,
    /// Its size in bytes (0 for a directory).
    pub size: u64,
    /// BLAKE3 of its bytes (zeros for a directory).
    pub hash: [u8; 32],
    /// Where it is on this disk.
    pub source: PathBuf,
    /// When it was last modified, as hashed.
    modified: Option<SystemTime>,
}

/// A file or folder walked for offering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    /// The top name: the file's or folder's own.
    pub name: String,
    /// The entries, in the order they are offered.
    pub entries: Vec<Entry>,
    /// Bytes in all.
    pub total: u64,
    /// Symbolic links and special files left out.
    pub skipped: Vec<PathBuf>,
}

/// The most a listing may hold.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Entries (files and directories).
    pub max_entries: usize,
    /// Bytes in all.
    pub max_total: u64,
}

impl Default for Limits {
    /// The wire's own bounds (a million entries, 2^50 bytes).
    fn default() -> Self {
        Limits {
            max_entries: 1_000_000,
            max_total: 1 << 50,
        }
    }
}

/// Why a file or folder cannot be offered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListError {
    /// A name that is not UTF-8.
    NotUtf8(PathBuf),
    /// More entries or bytes than the limits allow.
    TooLarge(String),
    /// Neither a file nor a folder (a link, a device...).
    NotAFileOrFolder(PathBuf),
    /// Reading failed.
    Io(String),
}

impl std::fmt::Display for ListError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListError::NotUtf8(p) => write!(
                f,
                "{} has a name that is not UTF-8, which cannot be sent; rename it first",
                p.display()
            ),
            ListError::TooLarge(why) => f.write_str(why),
            ListError::NotAFileOrFolder(p) => {
                write!(f, "{} is neither a file nor a folder", p.display())
            }
            ListError::Io(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for ListError {}

fn io_err(e: &io::Error, what: &str, p: &Path) -> ListError {
    ListError::Io(format!("cannot {what} {}: {e}", p.display()))
}

fn utf8_name(p: &Path) -> Result<String, ListError> {
    p.file_name()
        .unwrap_or(p.as_os_str())
        .to_str()
        .map(str::to_string)
        .ok_or_else(|| ListError::NotUtf8(p.to_path_buf()))
}

/// Walks `path` (a file or a folder) into what is offered, hashing every file.
pub fn list(path: &Path, limits: Limits) -> Result<Listing, ListError> {
    let mut l = scan(path, limits)?;
    Hashing::default().step(&mut l, u64::MAX)?;
    Ok(l)
}

/// Walks `path` as [`list`] does, but leaves every file's hash to [`Hashing`]: only names and metadata are
/// read, so a caller with other work (a chat to keep answering) hashes in steps between it.
pub fn scan(path: &Path, limits: Limits) -> Result<Listing, ListError> {
    let meta = fs::symlink_metadata(path).map_err(|e| io_err(&e, "read", path))?;
    let name = utf8_name(path)?;
    let mut l = Listing {
        name: name.clone(),
        entries: Vec::new(),
        total: 0,
        skipped: Vec::new(),
    };
    if meta.is_file() {
        add_file(&mut l, path, name, limits)?;
    } else if meta.is_dir() {
        walk(&mut l, path, name, limits)?;
    } else {
        return Err(ListError::NotAFileOrFolder(path.to_path_buf()));
    }
    Ok(l)
}

fn room(l: &Listing, limits: Limits, more: u64) -> Result<(), ListError> {
    if l.entries.len() >= limits.max_entries {
        return Err(ListError::TooLarge(format!(
            "more than {} files and folders: send fewer at a time",
            limits.max_entries
        )));
    }
    if l.total.saturating_add(more) > limits.max_total {
        return Err(ListError::TooLarge(format!(
            "more than {} bytes in all",
            limits.max_total
        )));
    }
    Ok(())
}

fn add_file(l: &mut Listing, p: &Path, offered: String, limits: Limits) -> Result<(), ListError> {
    let meta = fs::metadata(p).map_err(|e| io_err(&e, "read", p))?;
    room(l, limits, meta.len())?;
    l.total += meta.len();
    l.entries.push(Entry {
        path: offered,
        dir: false,
        size: meta.len(),
        hash: [0; 32],
        source: p.to_path_buf(),
        modified: meta.modified().ok(),
    });
    Ok(())
}

/// Hashes a [`scan`]ned listing's files in order, a bounded number of bytes per [`Hashing::step`], holding
/// one open file and one read buffer.
#[derive(Default)]
pub struct Hashing {
    /// The entry to hash next (or being hashed).
    next: usize,
    /// Its hashing, once begun.
    open: Option<file_hash::Stepped>,
}

impl Hashing {
    /// Hashes about `budget` more bytes (at least one read's worth); whether every file is hashed now. A
    /// file that is not the size it was when scanned, or was modified meanwhile, is an error: its hash would
    /// not describe it.
    pub fn step(&mut self, l: &mut Listing, budget: u64) -> Result<bool, ListError> {
        // Opening a file costs as much as reading a few KiB of one: a folder of many small files is
        // hashed in steps too.
        const OPEN_COST: u64 = 16 << 10;
        let mut spent = 0u64;
        while self.next < l.entries.len() {
            let e = &mut l.entries[self.next];
            if e.dir {
                self.next += 1;
                continue;
            }
            if spent >= budget {
                return Ok(false);
            }
            if self.open.is_none() {
                spent = spent.saturating_add(OPEN_COST);
            }
            let s = match &mut self.open {
                Some(s) => s,
                None => self.open.insert(
                    file_hash::Stepped::open(&e.source, e.size)
                        .map_err(|err| io_err(&err, "read", &e.source))?,
                ),
            };
            let before = s.hashed();
            let done = s
                .step(budget.saturating_sub(spent))
                .map_err(|err| match err.kind() {
                    io::ErrorKind::UnexpectedEof => changed(&e.source),
                    _ => io_err(&err, "read", &e.source),
                })?;
            spent = spent.saturating_add(s.hashed() - before);
            if !done {
                return Ok(false);
            }
            let meta = s
                .file()
                .metadata()
                .map_err(|err| io_err(&err, "read", &e.source))?;
            if meta.len() != e.size || meta.modified().ok() != e.modified {
                return Err(changed(&e.source));
            }
            if let Some(s) = self.open.take() {
                e.hash = *s.into_hasher().finalize().as_bytes();
            }
            self.next += 1;
        }
        Ok(true)
    }
}

fn changed(p: &Path) -> ListError {
    ListError::Io(format!(
        "{} changed while it was being read; offer it again once it is written",
        p.display()
    ))
}

fn walk(l: &mut Listing, dir: &Path, offered: String, limits: Limits) -> Result<(), ListError> {
    room(l, limits, 0)?;
    l.entries.push(Entry {
        path: offered.clone(),
        dir: true,
        size: 0,
        hash: [0; 32],
        source: dir.to_path_buf(),
        modified: None,
    });
    let mut children: Vec<_> = fs::read_dir(dir)
        .map_err(|e| io_err(&e, "list", dir))?
        .collect::<Result<_, _>>()
        .map_err(|e| io_err(&e, "list", dir))?;
    children.sort_by_key(|c| c.file_name());
    for c in children {
        let p = c.path();
        let name = utf8_name(&p)?;
        let path = format!("{offered}/{name}");
        // The entry itself, not what a link points at.
        let t = c.file_type().map_err(|e| io_err(&e, "read", &p))?;
        if t.is_dir() {
            walk(l, &p, path, limits)?;
        } else if t.is_file() {
            add_file(l, &p, path, limits)?;
        } else {
            l.skipped.push(p);
        }
    }
    Ok(())
}

impl Entry {
    /// Up to `len` bytes of the file from `offset`; an error if the file is no longer the one hashed (another
    /// size or modification time: its hash would not describe what is sent).
    pub fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let f = File::open(&self.source)?;
        let meta = f.metadata()?;
        if meta.len() != self.size || meta.modified().ok() != self.modified {
            return Err(io::Error::other(format!(
                "{} changed since it was offered; offer it again",
                self.source.display()
            )));
        }
        let want = usize::try_from(self.size.saturating_sub(offset)).map_or(len, |l| l.min(len));
        let mut buf = vec![0u8; want];
        let mut got = 0;
        while got < want {
            match f.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(got);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mp-outgoing-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_folder_is_walked_in_name_order_directories_first_links_left_out() {
        let d = temp("walk");
        let top = d.join("photos");
        fs::create_dir_all(top.join("b-sub")).unwrap();
        fs::write(top.join("c.jpg"), b"ccc").unwrap();
        fs::write(top.join("a.jpg"), b"a").unwrap();
        fs::write(top.join("b-sub/x.txt"), b"xx").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", top.join("link")).unwrap();
        let l = list(&top, Limits::default()).unwrap();
        let paths: Vec<(&str, bool, u64)> = l
            .entries
            .iter()
            .map(|e| (e.path.as_str(), e.dir, e.size))
            .collect();
        assert_eq!(
            paths,
            [
                ("photos", true, 0),
                ("photos/a.jpg", false, 1),
                ("photos/b-sub", true, 0),
                ("photos/b-sub/x.txt", false, 2),
                ("photos/c.jpg", false, 3),
            ]
        );
        assert_eq!(l.total, 6);
        assert_eq!(l.skipped, [top.join("link")]);
        assert_eq!(l.entries[1].hash, *blake3::hash(b"a").as_bytes());
        // The same listing every time: a resumed transfer offers the same indexes.
        assert_eq!(list(&top, Limits::default()).unwrap(), l);
        // Limits.
        let small = Limits {
            max_entries: 3,
            max_total: 1 << 20,
        };
        assert!(matches!(list(&top, small), Err(ListError::TooLarge(_))));
        let few_bytes = Limits {
            max_entries: 100,
            max_total: 5,
        };
        assert!(matches!(list(&top, few_bytes), Err(ListError::TooLarge(_))));
    }

    #[test]
    fn hashing_in_small_steps_gives_the_listing_list_gives() {
        let d = temp("steps");
        let top = d.join("f");
        fs::create_dir_all(top.join("sub")).unwrap();
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        fs::write(top.join("big.bin"), &big).unwrap();
        fs::write(top.join("empty"), b"").unwrap();
        fs::write(top.join("sub/s.txt"), b"small").unwrap();
        let whole = list(&top, Limits::default()).unwrap();
        let mut l = scan(&top, Limits::default()).unwrap();
        assert!(l.entries.iter().all(|e| e.hash == [0; 32]));
        let mut h = Hashing::default();
        let mut steps = 0;
        while !h.step(&mut l, 10_000).unwrap() {
            steps += 1;
            assert!(steps < 1000);
        }
        assert!(steps >= 3, "hashed in {steps} steps");
        assert_eq!(l, whole);
        assert_eq!(l.entries[1].hash, *blake3::hash(&big).as_bytes());
        // A file that changes between the scan and its hashing is refused.
        let mut l = scan(&top, Limits::default()).unwrap();
        fs::write(top.join("big.bin"), b"shorter now").unwrap();
        let e = Hashing::default().step(&mut l, u64::MAX).unwrap_err();
        assert!(
            e.to_string().contains("changed while it was being read"),
            "{e}"
        );
    }

    #[test]
    fn a_file_is_read_as_hashed_and_a_changed_one_is_refused() {
        let d = temp("read");
        let p = d.join("notes.txt");
        fs::write(&p, b"hello world").unwrap();
        let l = list(&p, Limits::default()).unwrap();
        assert_eq!(l.name, "notes.txt");
        let e = &l.entries[0];
        assert_eq!(e.read_at(6, 100).unwrap(), b"world");
        assert_eq!(e.read_at(0, 5).unwrap(), b"hello");
        assert_eq!(e.read_at(11, 5).unwrap(), b"");
        fs::write(&p, b"hello there, world").unwrap();
        let err = e.read_at(0, 5).unwrap_err();
        assert!(
            err.to_string().contains("changed since it was offered"),
            "{err}"
        );
    }

    #[test]
    fn a_name_that_is_not_utf8_is_refused_with_its_path() {
        use std::os::unix::ffi::OsStrExt;
        let d = temp("utf8");
        let top = d.join("dir");
        fs::create_dir_all(&top).unwrap();
        let bad = top.join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt"));
        fs::write(&bad, b"x").unwrap();
        let e = list(&top, Limits::default()).unwrap_err();
        assert_eq!(e, ListError::NotUtf8(bad));
        assert!(e.to_string().contains("rename it first"));
        assert!(matches!(
            list(&d.join("missing"), Limits::default()),
            Err(ListError::Io(_))
        ));
    }
}
