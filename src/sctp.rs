//! A userspace SCTP (RFC 9260), sans-IO: datagrams and the time go in, datagrams, timer deadlines and events
//! come out. It knows nothing of sockets; [`crate::io::sctp_udp`] carries it in UDP (RFC 6951).
//!
//! # Driving an [`Endpoint`]
//! After every call that changes it (`handle`, `handle_timeout`, `connect`, `send`, `shutdown`, `abort`),
//! drain [`Endpoint::poll_transmit`] and [`Endpoint::poll_event`] until they return `None`, then read
//! [`Endpoint::poll_timeout`] and call [`Endpoint::handle_timeout`] when it passes. Time must not go
//! backwards. A sender that paces itself by flow control sends with [`Endpoint::try_send`] and also drains
//! [`Endpoint::poll_writable`]. Nothing in this module reads a clock, opens a socket or draws OS randomness:
//! the caller seeds the endpoint's CSPRNG (from `getrandom` in programs, a constant in tests).
//!
//! # What allocates
//! A listener allocates nothing for an INIT beyond the reply it queues (bounded); an association is created
//! only from a valid COOKIE ECHO. An idle established association is a slab entry of a few hundred bytes; its
//! send and receive queues are allocated while data is in flight and freed when it is acknowledged or
//! delivered.
//!
//! # What can panic
//! Nothing reachable from peer input. Internal invariants are `debug_assert!`ed.

#![forbid(unsafe_code)]

pub mod assoc;
pub mod chunk;
pub mod cookie;
pub mod endpoint;
pub mod param;
mod payload;
mod recv;
mod send;
pub mod timer;
pub mod wire;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

pub use assoc::State;
pub use endpoint::Endpoint;
pub use payload::{HEAD_MAX, Head, Payload};
pub use timer::RtoConfig;

/// The IANA-assigned UDP port for SCTP encapsulation (RFC 6951 §5.1).
pub const DEFAULT_UDP_PORT: u16 = 9899;

/// Names an association of an [`Endpoint`]: its slab index plus a generation, so an id kept after its
/// association closed never reaches a newer one that reused the slot.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AssocId {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl AssocId {
    /// The slab index, for callers that keep their own per-association tables.
    pub fn index(self) -> usize {
        self.index as usize
    }
}

impl fmt::Display for AssocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}.{}", self.index, self.generation)
    }
}

/// A datagram to send: written into the caller's buffer, this says where it goes and how long it is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The peer's UDP address (RFC 6951 encapsulation).
    pub dst: SocketAddr,
    /// Bytes written at the start of the buffer.
    pub len: usize,
    /// Which association wrote it (its slab index + 1), or 0 for a stateless reply. Consecutive datagrams of
    /// one flow may leave in one segmented send (UDP GSO); [`Endpoint::poll_transmit`] hands out up to
    /// [`TRANSMIT_BURST`] of an association's packets in a row for that.
    pub flow: u32,
}

/// Packets [`Endpoint::poll_transmit`] takes from one association before moving on to the next ready one.
/// Bursts let a transport send them as one segmented datagram; 16 packets of 1 200 bytes stay well inside
/// the 64 KiB a segmented send may carry, and round-robin fairness between associations stays fine-grained.
pub const TRANSMIT_BURST: u32 = 16;

/// What happened to an association.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The association is established (on either side).
    Up,
    /// A complete user message arrived.
    Message {
        /// The stream it came on.
        stream: u16,
        /// Whether it was sent unordered.
        unordered: bool,
        /// Payload protocol identifier (opaque to SCTP).
        ppid: u32,
        /// The message.
        data: Vec<u8>,
    },
    /// The peer restarted (RFC 9260 §5.2.4 action A): the association continues with new tags; data queued or
    /// in flight before the restart was discarded.
    Restarted,
    /// The association is gone; its id is no longer valid.
    Down(DownReason),
}

/// Why an association ended.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DownReason {
    /// Graceful shutdown completed (either side started it).
    Shutdown,
    /// The peer sent ABORT, with the first error cause code if there was one.
    PeerAbort(Option<u16>),
    /// We aborted it ([`Endpoint::abort`]) or a protocol error forced us to.
    LocalAbort,
    /// Too many consecutive retransmissions or unanswered heartbeats (RFC 9260 §8.1).
    Lost,
    /// INIT or COOKIE ECHO went unanswered too often (RFC 9260 §5.1, Max.Init.Retransmits).
    InitFailed,
    /// The peer's UDP port is closed (ICMP port unreachable, RFC 6951 §5.5).
    Unreachable,
    /// The peer broke the protocol (e.g. DATA without user data), and we aborted.
    ProtocolViolation,
}

impl fmt::Display for DownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownReason::Shutdown => f.write_str("shutdown"),
            DownReason::PeerAbort(Some(c)) => write!(f, "aborted by peer (cause {c})"),
            DownReason::PeerAbort(None) => f.write_str("aborted by peer"),
            DownReason::LocalAbort => f.write_str("aborted"),
            DownReason::Lost => f.write_str("peer unreachable (retransmission limit)"),
            DownReason::InitFailed => f.write_str("no answer to INIT"),
            DownReason::Unreachable => f.write_str("peer port unreachable"),
            DownReason::ProtocolViolation => f.write_str("protocol violation"),
        }
    }
}

/// Why a message could not be queued.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SendError {
    /// No such association (closed, or a stale id).
    UnknownAssoc,
    /// The stream number is not below the negotiated number of outbound streams.
    InvalidStream,
    /// Empty messages cannot be sent (RFC 9260 §6.2).
    Empty,
    /// Larger than [`Config::max_message`].
    TooLarge,
    /// The association's send buffer ([`Config::send_buffer`]) is full; try again after data is acknowledged.
    BufferFull,
    /// The association is shutting down and accepts no new data (RFC 9260 §9.2).
    ShuttingDown,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::UnknownAssoc => "no such association",
            SendError::InvalidStream => "invalid stream",
            SendError::Empty => "empty message",
            SendError::TooLarge => "message too large",
            SendError::BufferFull => "send buffer full",
            SendError::ShuttingDown => "association is shutting down",
        })
    }
}

impl std::error::Error for SendError {}

/// Why [`Endpoint::connect`] refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ConnectError {
    /// An association with that peer address and port already exists.
    Exists,
    /// The endpoint holds [`Config::max_associations`] already.
    TooMany,
    /// Port 0 is not a valid SCTP port.
    InvalidPort,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnectError::Exists => "an association with that peer already exists",
            ConnectError::TooMany => "association limit reached",
            ConnectError::InvalidPort => "port 0 is not a valid SCTP port",
        })
    }
}

impl std::error::Error for ConnectError {}

/// Protocol parameters of an endpoint, shared by all its associations (passed by reference, never copied into
/// them). Defaults suit a LAN; the RFC's Internet defaults are noted on each field.
#[derive(Clone, Debug)]
pub struct Config {
    /// Our SCTP port (in the SCTP common header; not the UDP port).
    pub port: u16,
    /// Whether to accept associations (answer INIT). A client-only endpoint answers INIT with ABORT.
    pub accept: bool,
    /// Largest SCTP packet we send (common header included; UDP and IP headers not). 1200 keeps the IPv6
    /// packet under the 1280-byte minimum MTU with room for the UDP header.
    pub max_packet: usize,
    /// RTO.Initial / Min / Max (RFC: 1 s / 1 s / 60 s; on a LAN, much less).
    pub rto: RtoConfig,
    /// Max.Init.Retransmits (RFC: 8).
    pub max_init_retransmits: u8,
    /// Association.Max.Retrans (RFC: 10): consecutive timeouts (T3-rtx or unanswered heartbeats) before the
    /// peer is declared unreachable.
    pub max_retransmits: u8,
    /// HB.interval (RFC: 30 s); `None` disables heartbeats.
    pub heartbeat_interval: Option<Duration>,
    /// A HEARTBEAT from the peer postpones our own by a full interval, so when both ends heartbeat only one
    /// of them does. It shows the peer alive and the path from it working; the path to it is checked by
    /// the peer, which gives the association up when our acknowledgements stop arriving. For a server of
    /// many clients that all heartbeat (mpd): it answers their heartbeats and sends none of its own, half
    /// the packets, and still probes a client that goes quiet one interval after its last heartbeat. The
    /// first heartbeat still goes out, to measure the RTT. A peer's heartbeat also clears the count of
    /// consecutive timeouts (Association.Max.Retrans), as an acknowledgement of ours does: a peer that keeps
    /// heartbeating is not given up on when its SACKs are late or our DATA is lost on the way (a slow or
    /// overloaded receiver is not a dead one); a silent one is, as before.
    pub defer_to_peer_heartbeats: bool,
    /// SACK.Delay (RFC: 200 ms, at most 500 ms).
    pub sack_delay: Duration,
    /// Valid.Cookie.Life (RFC: 60 s).
    pub cookie_life: Duration,
    /// How often the cookie secret rotates.
    pub cookie_rotation: Duration,
    /// Outbound streams we ask for, and inbound streams we allow.
    pub streams: u16,
    /// Our receive window, in bytes of buffered user data plus a per-chunk overhead.
    pub rwnd: u32,
    /// Largest message we send or reassemble.
    pub max_message: usize,
    /// Bytes of user data an association may have queued but not yet acknowledged.
    pub send_buffer: usize,
    /// Associations this endpoint holds at most; further COOKIE ECHOes are answered with ABORT.
    pub max_associations: usize,
    /// Stateless replies (INIT ACK, ABORT, …) waiting to be sent at most; beyond that they are dropped and
    /// counted, which bounds what a flood of INITs can cost.
    pub max_pending_replies: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: 9899,
            accept: true,
            max_packet: 1200,
            rto: RtoConfig {
                initial: Duration::from_millis(300),
                min: Duration::from_millis(100),
                max: Duration::from_secs(2),
            },
            max_init_retransmits: 8,
            max_retransmits: 5,
            heartbeat_interval: Some(Duration::from_secs(1)),
            defer_to_peer_heartbeats: false,
            sack_delay: Duration::from_millis(20),
            cookie_life: Duration::from_secs(60),
            cookie_rotation: Duration::from_secs(60),
            streams: 16,
            rwnd: 1024 * 1024,
            max_message: 256 * 1024,
            send_buffer: 1024 * 1024,
            max_associations: 200_000,
            max_pending_replies: 1024,
        }
    }
}

/// Endpoint-wide counters (not per association, to keep associations small). `Copy`, so a snapshot is cheap.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Datagrams handed to [`Endpoint::handle`].
    pub packets_in: u64,
    /// Datagrams returned by [`Endpoint::poll_transmit`].
    pub packets_out: u64,
    /// Dropped: CRC32c mismatch.
    pub bad_checksum: u64,
    /// Dropped: malformed header, chunk or parameter.
    pub malformed: u64,
    /// Dropped: verification tag did not match.
    pub bad_vtag: u64,
    /// Out-of-the-blue packets (no association), RFC 9260 §8.4.
    pub ootb: u64,
    /// INIT chunks received.
    pub inits: u64,
    /// COOKIE ECHO with a bad MAC, length or key.
    pub bad_cookies: u64,
    /// COOKIE ECHO that was authentic but expired.
    pub stale_cookies: u64,
    /// Stateless replies dropped because [`Config::max_pending_replies`] were queued.
    pub replies_dropped: u64,
    /// Associations that reached ESTABLISHED.
    pub assocs_up: u64,
    /// Associations that ended, for any reason.
    pub assocs_down: u64,
    /// Associations lost to the retransmission limit.
    pub assocs_lost: u64,
    /// Peer restarts detected.
    pub restarts: u64,
    /// HEARTBEAT chunks sent.
    pub heartbeats_sent: u64,
    /// HEARTBEAT ACKs received that matched an outstanding heartbeat.
    pub heartbeats_acked: u64,
    /// T3-rtx expirations.
    pub t3_timeouts: u64,
    /// DATA chunks retransmitted (timeout or fast retransmit).
    pub retransmits: u64,
    /// Fast retransmit events.
    pub fast_retransmits: u64,
    /// DATA chunks received more than once.
    pub dup_tsns: u64,
    /// DATA chunks dropped for lack of receive window or out of the reportable TSN range.
    pub data_dropped: u64,
    /// SACK chunks sent.
    pub sacks_sent: u64,
    /// Complete messages delivered.
    pub messages_in: u64,
    /// Messages accepted by [`Endpoint::send`].
    pub messages_out: u64,
    /// ICMP unreachable reports that matched an association.
    pub icmp_unreachable: u64,
}

#[cfg(test)]
mod tests;
