//! Files and folders sent peer to peer (issue 16): the wire of a transfer ([`frame`]), the receiver's
//! sanitising of the names a sender offers ([`name`]), and the state machine of each side ([`send::Sender`],
//! [`recv::Receiver`], one instance per transfer and connection). All pure: no socket, file, thread or clock
//! in here. File reads, writes, syncs, hashing and renames are requests the cores hand out and the caller
//! answers, so every rule is tested (and fuzzed) on its own and the I/O layer only executes.
//!
//! # Design
//!
//! - **Its own connection.** A transfer runs on a TCP connection of its own, opened by the sender and set up as
//!   a chat connection is (a Noise session to the receiver's key, [`crate::peer::channel`]), so chat messages
//!   between the same two peers never wait behind file data. Inside the session the frames have the chat
//!   frames' framing (a 4-byte length, a type byte, the body), through the same reassembler
//!   ([`crate::peer::frame::Reassembler`]); their types start at 16, so neither kind can be taken for the
//!   other. One connection carries one transfer.
//! - **Streaming, in constant memory.** The OFFER says what is coming (a name, the total size, the number of
//!   entries), which is what the receiver's limits and its user decide on. Once accepted, the sender sends
//!   each entry's description (ENTRY: path, size, hash) followed by its bytes (DATA), so neither side ever
//!   holds a whole file list or a whole file: a folder of a million files costs what one entry costs.
//! - **Verified and resumable.** Each file's BLAKE3 hash comes with its ENTRY; the receiver writes to a `.part`
//!   file and renames it only once the hash matches. VERIFIED tells the sender how far each entry is safely
//!   on the receiver's disk: it is both the progress report and the resume point. A transfer cut at any point
//!   is offered again under the same id, and the ACCEPT says where each entry resumes, so nothing verified is
//!   sent twice.
//! - **Hostile senders.** Every frame is parsed strictly and bounded before anything is allocated; every path
//!   a sender names goes through [`name::sanitise_path`], whose result cannot leave the directory the receiver
//!   chose, and a name that is taken gets a number ([`name::unused_name`]) instead of overwriting anything.
//!
//!
//! # The exchange (what the state machines enforce)
//!
//! 1. Sender: OFFER. Receiver: checks its [`recv::Limits`] (total, count; else FAIL too large / too many
//!    files), shows the sanitised name, and its user accepts (ACCEPT, with what it holds of this id already:
//!    [`recv::ResumePoint`]) or declines (FAIL declined).
//! 2. Sender: for each entry from `complete_below` in index order, ENTRY, then DATA from the entry's resume
//!    offset to its end (none for a folder, an empty file or one held whole). Reads are asked of the caller
//!    one 64 KiB block at a time, and only within the **window**: at most [`send::Config::window`] bytes
//!    (8 MiB by default, never over [`MAX_WINDOW`]) sent beyond what was VERIFIED, and at most
//!    [`MAX_ENTRIES_IN_FLIGHT`] entries announced and not yet verified complete. A receiver that stops
//!    verifying stalls the sender; it never fills buffers.
//! 3. Receiver: checks each ENTRY (next index, path sanitised and under the offer's name, unique, size within
//!    limits, sizes adding up to the total) and each DATA (the current entry, contiguous, within size and
//!    window), and hands out Open / Write / Finish. It sends VERIFIED(index, offset) once
//!    [`recv::Limits::verify_every`] bytes (at most [`VERIFY_INTERVAL`], 1 MiB) are written since the last,
//!    and VERIFIED(index, size) when an entry is complete (a folder made; a file's BLAKE3 matched and the
//!    `.part` renamed), in index order. After the last entry: DONE; the sender then closes.
//! 4. Either side: FAIL at any point, and the transfer ends. The receiver's FAIL codes: declined, cancelled,
//!    too large, too many files, name refused, disk full, hash mismatch, I/O error, protocol error (any frame
//!    out of place or order, non-contiguous or overlong DATA, a path twice or outside the offer, sizes not
//!    adding up, a sender past the window). The sender's: cancelled, source changed (a file shorter than
//!    offered, or vanished), I/O error, protocol error (an ACCEPT past the entries or a size, VERIFIED going
//!    back, past what was sent, or twice, DONE early). A received FAIL's reason is shown sanitised.
//!    Nothing verified is thrown away: the receiver's failure event carries its resume point (complete
//!    entries, and the written prefix of the `.part` files; none of one whose hash did not match).
//!
//! Resume: a cut transfer is offered again under the same id; the receiver accepts with its resume point,
//! and the sender skips what it names without reading it. What is sent twice is what was in flight at the
//! cut, at most the window (the tests assert it; [`send::Stats::bytes_resent`] counts it).
//!
//! Why a window of both bytes and entries, and why these numbers: [`MAX_WINDOW`] bounds what a receiver
//! buffers between socket and disk (DESIGN.md asks ≤ 16 MiB of growth for a 1 GiB transfer); the window
//! must be at least the VERIFIED cadence or both sides would wait for each other; 8 MiB keeps a LAN link
//! busy across a disk sync. Empty files cost no bytes, so a folder of a million of them needs the entry
//! bound to keep the per-entry state bounded.
//!
//! Nothing here panics on any input, and nothing allocates more than one frame's worth for one frame.
//!
//! # What is done, and what is not yet (issue 16)
//!
//! The disk side is [`crate::io::transfer`] (reads from [`crate::io::outgoing`]'s listing, writes into
//! [`crate::io::incoming`]'s store), tested end to end on real files without the network
//! (`tests/transfer_local.rs`). Not yet: the connection. The plan: the sender opens a TCP connection to the
//! receiver's chat port, sets up the Noise session as chat does (IK to the key the daemon gives for the
//! nickname), says HELLO, then OFFER; the receiver's chat peer, seeing a frame of type 16 or more after a
//! HELLO, hands the connection and the sender's proved key to a [`recv::Receiver`] instead of reading chat
//! frames from it. Then the console's `file` / `accept` / `decline` / `transfers`, `mpc send-file` and
//! `listen --accept-files`.

#![forbid(unsafe_code)]

pub mod frame;
pub mod name;
pub mod recv;
pub mod send;

#[cfg(test)]
pub(crate) mod mem_disk;
#[cfg(test)]
mod pair;

use frame::FailCode;

/// Most bytes a sender may have sent beyond what the receiver has VERIFIED (16 MiB): its window is at most
/// this, and a receiver that sees more unverified bytes arrive fails the transfer (protocol error). It bounds
/// what sits in buffers between the two disks, whatever the link and the disks do.
pub const MAX_WINDOW: u64 = 16 << 20;
/// A receiver sends VERIFIED at least every this many bytes of an entry written (1 MiB), and at
/// every entry's end. A sender's window must be at least this large, or it could wait for a VERIFIED the
/// receiver is not yet due to send (see [`send::Config::window`]).
pub const VERIFY_INTERVAL: u64 = 1 << 20;
/// Most entries a sender may have announced (ENTRY sent) that the receiver has not yet VERIFIED complete
/// (1024): the byte window says nothing of empty files and folders, and this keeps what either side tracks
/// per entry bounded too. A receiver that sees more fails the transfer (protocol error).
pub const MAX_ENTRIES_IN_FLIGHT: u32 = 1024;

/// Why a transfer ended without completing, as either side's core reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The FAIL code (sent or received).
    pub code: FailCode,
    /// In words: ours, or the other side's sanitised for display ([`crate::peer::sanitize_line`]).
    pub reason: String,
    /// The other side sent the FAIL (else we did, and it is queued to go out).
    pub by_peer: bool,
}

impl Failure {
    /// A FAIL received: its reason is the other side's text, so it is made safe to show (no terminal
    /// escapes, no bidirectional tricks, one line).
    fn from_peer(code: FailCode, reason: &str) -> Failure {
        Failure {
            code,
            reason: crate::peer::sanitize_line(reason),
            by_peer: true,
        }
    }
}
