//! The disk side of a transfer (issue 16): the sans-IO [`Sender`] and [`Receiver`] ask, this module does.
//! A sender's reads are served from the files an [`Listing`] walked; a receiver's opens, writes and
//! finishes go to an [`Incoming`] store, and its resume point comes from there. Writes are synced once per
//! batch of actions (not once per frame), and reported to the receiver as synced only then: VERIFIED never
//! runs ahead of the disk.
//!
//! The connection (the Noise session on a TCP connection beside the chat one) is not here: frames go in and
//! out through the cores' `handle_frame` / `poll_frame`.

use crate::io::incoming::{Incoming, StoreError};
use crate::io::outgoing::{Entry, Listing};
use crate::transfer::frame::{EntryKind, Resume};
use crate::transfer::recv::{Action, DiskError, Receiver, ResumePoint};
use crate::transfer::send::{Offered, ReadError, Sender};

/// The entries of a listing as a [`Sender`] offers them.
pub fn offered(listing: &Listing) -> Vec<Offered> {
    listing
        .entries
        .iter()
        .map(|e| Offered {
            kind: if e.dir {
                EntryKind::Dir
            } else {
                EntryKind::File {
                    size: e.size,
                    hash: e.hash,
                }
            },
            path: e.path.clone(),
        })
        .collect()
}

/// Serves every read the sender asks for now from the listed files (a file changed or gone since it was
/// listed fails the transfer with its reason).
pub fn serve_reads(sender: &mut Sender, entries: &[Entry]) {
    while let Some(r) = sender.poll_read() {
        let Some(e) = entries.get(r.index as usize) else {
            sender.handle_read_error(r.index, ReadError::Io("no such entry".into()));
            continue;
        };
        match e.read_at(r.offset, r.len) {
            Ok(bytes) => sender.handle_read(r.index, r.offset, bytes),
            Err(err) => sender.handle_read_error(r.index, ReadError::Io(err.to_string())),
        }
    }
}

/// What `store` holds of its transfer, as [`Receiver::accept`] takes it.
pub fn resume_point(store: &Incoming) -> ResumePoint {
    let (complete_below, partial) = store.resume();
    ResumePoint {
        complete_below,
        complete_bytes: store.complete_bytes(),
        partial: partial
            .filter(|&(i, off)| i >= complete_below && off > 0)
            .map(|(index, offset)| Resume { index, offset })
            .into_iter()
            .collect(),
    }
}

fn disk_error(e: StoreError) -> DiskError {
    match e {
        StoreError::HashMismatch => DiskError::HashMismatch,
        StoreError::DiskFull => DiskError::Full(e.to_string()),
        e => DiskError::Io(e.to_string()),
    }
}

/// Carries out every action the receiver has queued on `store`, and reports to it how far the entry under
/// way is written (its VERIFIED cadence goes by that). Written means in the file: a receiver killed keeps it,
/// and resumes from it. A file is made durable (`fdatasync`, and the resume state saved) before it takes
/// its name, and the entry under way once `durable_every` bytes of it are not (0: after every batch): a disk
/// flush costs milliseconds, so not once per MiB; what a power loss takes back (at most that much) the
/// receiver no longer holds when the transfer is offered again, and it is sent again. Returns the files
/// finished in the batch: where each went, and its hash.
pub fn do_actions(
    recv: &mut Receiver,
    store: &mut Incoming,
    durable_every: u64,
) -> Vec<(std::path::PathBuf, [u8; 32])> {
    let mut finished = Vec::new();
    while let Some(a) = recv.poll_action() {
        match a {
            Action::Open {
                index,
                path,
                kind,
                resume_from,
            } => {
                let (dir, size) = match kind {
                    EntryKind::Dir => (true, 0),
                    EntryKind::File { size, .. } => (false, size),
                };
                let r = store.begin(index, &path, dir, size).and_then(|held| {
                    if held == resume_from {
                        Ok(())
                    } else {
                        Err(StoreError::OutOfStep(format!(
                            "entry {index} resumes at {resume_from} but {held} bytes are held"
                        )))
                    }
                });
                // A folder is done once it exists.
                let r = match (r, dir) {
                    (Ok(()), true) => store.finish(index, &[0; 32]).map(|_| ()),
                    (r, _) => r,
                };
                recv.handle_opened(index, r.map_err(disk_error));
            }
            Action::Write {
                index,
                offset,
                bytes,
            } => {
                if let Err(e) = store.write(index, offset, &bytes) {
                    recv.handle_written(index, Err(disk_error(e)));
                }
            }
            Action::Finish { index, hash } => {
                let r = store
                    .finish(index, &hash)
                    .map(|placed| finished.push((placed, hash)));
                recv.handle_finished(index, r.map_err(disk_error));
            }
        }
    }
    if let Some((index, upto)) = store.written() {
        let r = match store.unsynced() {
            Some((_, n)) if n >= durable_every => store.sync().map(|(_, upto)| upto),
            _ => {
                store.start_writeback();
                Ok(upto)
            }
        };
        recv.handle_written(index, r.map_err(disk_error));
    }
    finished
}
