//! A receiver's disk in memory, for tests: what [`crate::io::incoming`] does on a real one (`.part` files
//! by index, entries in place by path, the hash checked before a file takes its place), answering a
//! [`Receiver`]'s actions at once. The transfer state machines' tests and the peer's tests on the in-memory
//! network both receive into it.

use std::collections::{BTreeMap, HashMap};

use super::frame::{EntryKind, Resume};
use super::name::SafePath;
use super::recv::{Action, DiskError, Receiver, ResumePoint};

/// `.part` files by index, and what is in place by path (None: a folder).
#[derive(Default, Debug)]
pub(crate) struct MemDisk {
    /// `.part` files: the path they go to, and the bytes written.
    pub parts: HashMap<u32, (SafePath, Vec<u8>)>,
    /// Entries in place, by path (None: a folder).
    pub done: BTreeMap<String, Option<Vec<u8>>>,
    /// Entries below this index are in place, and their bytes together (what a resume point says).
    pub complete_below: u32,
    /// See `complete_below`.
    pub complete_bytes: u64,
    /// Flip a byte of every write, so every file fails its hash at the end.
    pub corrupt: bool,
}

impl MemDisk {
    /// What is held: complete entries and the written prefix of each `.part`, as an ACCEPT says it.
    pub fn held(&self) -> ResumePoint {
        let mut partial: Vec<Resume> = self
            .parts
            .iter()
            .filter(|(i, p)| **i >= self.complete_below && !p.1.is_empty())
            .map(|(i, p)| Resume {
                index: *i,
                offset: p.1.len() as u64,
            })
            .collect();
        partial.sort_by_key(|r| r.index);
        ResumePoint {
            complete_below: self.complete_below,
            complete_bytes: self.complete_bytes,
            partial,
        }
    }

    /// Carries out `a` and answers `r` (writes count as written at once).
    pub fn execute(&mut self, r: &mut Receiver, a: Action) {
        match a {
            Action::Open {
                index,
                path,
                kind,
                resume_from,
            } => {
                if kind == EntryKind::Dir {
                    self.done.insert(path.as_str().into(), None);
                    self.complete_below = index + 1;
                } else {
                    let part = self
                        .parts
                        .entry(index)
                        .or_insert((path.clone(), Vec::new()));
                    assert_eq!(part.0, path);
                    assert!(part.1.len() as u64 >= resume_from, "resumed past the part");
                    part.1.truncate(resume_from as usize);
                }
                r.handle_opened(index, Ok(()));
            }
            Action::Write {
                index,
                offset,
                mut bytes,
            } => {
                let part = &mut self.parts.get_mut(&index).expect("written before opened").1;
                assert_eq!(part.len() as u64, offset, "writes are contiguous");
                if self.corrupt {
                    bytes[0] ^= 1;
                }
                part.extend_from_slice(&bytes);
                let upto = part.len() as u64;
                r.handle_written(index, Ok(upto));
            }
            Action::Finish { index, hash } => {
                let (path, bytes) = self.parts.get(&index).expect("finished before opened");
                if *blake3::hash(bytes).as_bytes() == hash {
                    let (path, bytes) = self.parts.remove(&index).unwrap_or_else(|| unreachable!());
                    self.complete_below = index + 1;
                    self.complete_bytes += bytes.len() as u64;
                    self.done.insert(path.as_str().into(), Some(bytes));
                    r.handle_finished(index, Ok(()));
                } else {
                    assert!(!self.done.contains_key(path.as_str()));
                    r.handle_finished(index, Err(DiskError::HashMismatch));
                }
            }
        }
    }
}
