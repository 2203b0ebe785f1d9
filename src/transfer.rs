//! Files and folders sent peer to peer (issue 16): the wire of a transfer ([`frame`]) and the receiver's
//! sanitising of the names a sender offers ([`name`]). Both are pure: no socket, file, thread or clock in
//! here, so every rule is tested (and fuzzed) on its own. The transfer state machine (who sends what when,
//! limits, resume bookkeeping) and its I/O come on top of these.
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
//! Nothing here panics on any input, and nothing allocates more than one frame's worth for one frame.

#![forbid(unsafe_code)]

pub mod frame;
pub mod name;
pub mod recv;
pub mod send;

#[cfg(test)]
mod pair;

use frame::FailCode;

/// Most bytes a sender may have sent beyond what the receiver has VERIFIED (16 MiB): its window is at most
/// this, and a receiver that sees more unverified bytes arrive fails the transfer (protocol error). It bounds
/// what sits in buffers between the two disks, whatever the link and the disks do.
pub const MAX_WINDOW: u64 = 16 << 20;
/// A receiver sends VERIFIED at least every this many bytes of an entry written and synced (1 MiB), and at
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
