//! Batched, non-blocking UDP I/O for the one socket that carries every SCTP association (RFC 6951) and for
//! multicast: `recvmmsg`/`sendmmsg` into reusable buffers, and the `IP_RECVERR` error queue.
//!
//! - [`RecvBatch`] receives up to 64 datagrams per system call into fixed slots (2 KiB each by default).
//!   A datagram larger than its slot is reported as truncated, so the caller can count and drop it.
//! - [`SendBatch`] is a ring of outgoing datagrams: the caller writes a datagram straight into the next slot (the
//!   sans-IO cores' `poll_transmit(now, buf)`), commits it with its destination, and flushes with `sendmmsg`.
//!   When the socket buffer is full, the unsent datagrams stay queued for the next flush. A datagram the kernel
//!   rejects is dropped and counted, so it never wedges the queue.
//! - Segmentation: [`SendBatch::set_segmentation`] sends runs of datagrams of one flow to one destination as
//!   one UDP GSO send; [`RecvBatch`] cuts UDP GRO runs back into datagrams on a socket with [`enable_gro`].
//! - [`enable_recverr`] and [`read_errors`] turn ICMP errors (port unreachable, host unreachable, fragmentation
//!   needed) into reports that name the destination and carry the start of the datagram that caused them. That
//!   is how a client killed with `kill -9` is noticed in milliseconds instead of after heartbeat timeouts.
//!
//! With `IP_RECVERR` set, an ICMP error also makes the *next* `recv`/`send` on the socket fail once with, e.g.,
//! `ECONNREFUSED`, whatever that call was about. Both batches absorb those errors (retrying the call), so only
//! real socket failures come back as `Err`. Drain [`read_errors`] whenever the reactor reports the socket
//! readable or in error.
//!
//! # Unsafe
//!
//! The only `unsafe` blocks are the `recvmmsg` and `sendmmsg` calls plus one all-zero header constant (and, in
//! `gso`, libc's control-message length macros, which are plain arithmetic). (nix's
//! wrappers were not used: they want per-call slices of `IoSlice`s and addresses that a ring cannot lend without
//! copying, and its `recvmmsg` does not reset `msg_namelen`, which the kernel shrinks to the last sender's
//! address length, between calls.) Addresses are encoded and decoded as bytes, with offsets taken from libc's
//! struct definitions, so Rust never reads through a raw pointer. The error queue is read with nix's safe
//! `recvmsg`. Linux only.

use std::io;
use std::mem::{offset_of, size_of};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd};

use nix::sys::socket::{self, MsgFlags, SockaddrStorage, sockopt};

mod gso;
pub use gso::enable_gro;

/// Most datagrams one `recvmmsg`/`sendmmsg` call handles; the headers for that many live on the stack.
pub const MAX_BATCH: usize = 64;
/// Default number of datagrams a batch holds.
pub const DEFAULT_DATAGRAMS: usize = 32;
/// Default receive slot size: above any Ethernet-MTU datagram, small enough to keep a batch at 64 KiB.
pub const DEFAULT_MAX_DATAGRAM: usize = 2048;

/// Room for a `sockaddr_in6`, the largest address a UDP socket deals in.
const ADDR_LEN: usize = size_of::<libc::sockaddr_in6>();
type AddrBytes = [u8; ADDR_LEN];

const _: () = assert!(size_of::<libc::sa_family_t>() == 2);
const _: () = assert!(size_of::<libc::sockaddr_in>() <= ADDR_LEN);

// SAFETY: `mmsghdr` and `iovec` are plain C structs of integers and raw pointers, for which all-zero bytes
// are a valid value (null pointers, zero lengths).
const EMPTY_MMSGHDR: libc::mmsghdr = unsafe { std::mem::zeroed() };
const EMPTY_IOVEC: libc::iovec = libc::iovec {
    iov_base: std::ptr::null_mut(),
    iov_len: 0,
};

/// Encodes `addr` as the `sockaddr_in`/`sockaddr_in6` bytes the kernel expects; returns the length used.
fn encode_addr(addr: &SocketAddr, out: &mut AddrBytes) -> libc::socklen_t {
    *out = [0; ADDR_LEN];
    match addr {
        SocketAddr::V4(a) => {
            out[..2].copy_from_slice(&(libc::AF_INET as libc::sa_family_t).to_ne_bytes());
            let port = offset_of!(libc::sockaddr_in, sin_port);
            out[port..port + 2].copy_from_slice(&a.port().to_be_bytes());
            let ip = offset_of!(libc::sockaddr_in, sin_addr);
            out[ip..ip + 4].copy_from_slice(&a.ip().octets());
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            out[..2].copy_from_slice(&(libc::AF_INET6 as libc::sa_family_t).to_ne_bytes());
            let port = offset_of!(libc::sockaddr_in6, sin6_port);
            out[port..port + 2].copy_from_slice(&a.port().to_be_bytes());
            // std keeps flowinfo and scope id exactly as stored in sockaddr_in6 (no byte swapping).
            let flow = offset_of!(libc::sockaddr_in6, sin6_flowinfo);
            out[flow..flow + 4].copy_from_slice(&a.flowinfo().to_ne_bytes());
            let ip = offset_of!(libc::sockaddr_in6, sin6_addr);
            out[ip..ip + 16].copy_from_slice(&a.ip().octets());
            let scope = offset_of!(libc::sockaddr_in6, sin6_scope_id);
            out[scope..scope + 4].copy_from_slice(&a.scope_id().to_ne_bytes());
            ADDR_LEN as libc::socklen_t
        }
    }
}

/// Decodes the first `len` bytes of a kernel-written socket address; `None` for other families or short lengths.
fn decode_addr(bytes: &AddrBytes, len: usize) -> Option<SocketAddr> {
    let field = |at: usize, n: usize| bytes.get(at..at + n).filter(|_| at + n <= len);
    let family = libc::sa_family_t::from_ne_bytes(field(0, 2)?.try_into().ok()?);
    match libc::c_int::from(family) {
        libc::AF_INET => {
            let port = field(offset_of!(libc::sockaddr_in, sin_port), 2)?;
            let ip: [u8; 4] = field(offset_of!(libc::sockaddr_in, sin_addr), 4)?
                .try_into()
                .ok()?;
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(ip),
                u16::from_be_bytes(port.try_into().ok()?),
            )))
        }
        libc::AF_INET6 => {
            let port = field(offset_of!(libc::sockaddr_in6, sin6_port), 2)?;
            let flow = field(offset_of!(libc::sockaddr_in6, sin6_flowinfo), 4)?;
            let ip: [u8; 16] = field(offset_of!(libc::sockaddr_in6, sin6_addr), 16)?
                .try_into()
                .ok()?;
            let scope = field(offset_of!(libc::sockaddr_in6, sin6_scope_id), 4)?;
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                u16::from_be_bytes(port.try_into().ok()?),
                u32::from_ne_bytes(flow.try_into().ok()?),
                u32::from_ne_bytes(scope.try_into().ok()?),
            )))
        }
        _ => None,
    }
}

/// Errors that `IP_RECVERR` parks on the socket (from an earlier ICMP message or local failure) and that the
/// next unrelated `recv`/`send` then returns once. Also the per-datagram routing failures of a send.
fn is_soft_error(errno: i32) -> bool {
    matches!(
        errno,
        libc::ECONNREFUSED
            | libc::EHOSTUNREACH
            | libc::ENETUNREACH
            | libc::EHOSTDOWN
            | libc::ENETDOWN
            | libc::EMSGSIZE
            | libc::ENOPROTOOPT
            | libc::EPROTO
            | libc::EACCES
            | libc::EPERM
            | libc::ETIMEDOUT
            | libc::ECONNRESET
    )
}

#[derive(Copy, Clone, Debug)]
struct Received {
    /// Offset of the datagram in the batch's buffer.
    start: usize,
    len: usize,
    truncated: bool,
    source: SocketAddr,
}

/// One received datagram, borrowed from a [`RecvBatch`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// Who sent it.
    pub source: SocketAddr,
    /// Its bytes; only the first `max_datagram` bytes if `truncated`.
    pub payload: &'a [u8],
    /// The datagram did not fit its slot (`MSG_TRUNC`): count it as a drop, don't parse it.
    pub truncated: bool,
}

/// Reusable buffers for receiving a batch of datagrams with one `recvmmsg`.
#[derive(Debug)]
pub struct RecvBatch {
    buf: Box<[u8]>,
    max_datagram: usize,
    addrs: Box<[AddrBytes]>,
    /// Control data of each slot: the segment size of a run received whole (`UDP_GRO`).
    controls: Box<[gso::ControlBuf]>,
    received: Vec<Received>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    /// [`DEFAULT_DATAGRAMS`] slots of [`DEFAULT_MAX_DATAGRAM`] bytes.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_DATAGRAMS, DEFAULT_MAX_DATAGRAM)
    }

    /// `datagrams` slots (clamped to 1..=[`MAX_BATCH`]) of `max_datagram` bytes each; larger datagrams are
    /// reported truncated.
    ///
    /// # Panics
    ///
    /// If `max_datagram` is zero.
    pub fn with_capacity(datagrams: usize, max_datagram: usize) -> Self {
        assert!(max_datagram > 0, "max_datagram must be positive");
        let datagrams = datagrams.clamp(1, MAX_BATCH);
        RecvBatch {
            buf: vec![0; datagrams * max_datagram].into_boxed_slice(),
            max_datagram,
            addrs: vec![[0; ADDR_LEN]; datagrams].into_boxed_slice(),
            controls: vec![gso::EMPTY_CONTROL; datagrams].into_boxed_slice(),
            received: Vec::with_capacity(datagrams),
        }
    }

    /// How many datagrams one [`recv`](Self::recv) can take.
    pub fn capacity(&self) -> usize {
        self.addrs.len()
    }

    /// The slot size: the largest datagram received whole.
    pub fn max_datagram(&self) -> usize {
        self.max_datagram
    }

    /// Receives up to [`capacity`](Self::capacity) datagrams without blocking, replacing the previous batch, and
    /// returns how many were taken off the socket; `Ok(0)` means it is drained (`EAGAIN`), so loop until then.
    /// On a socket with [`enable_gro`], one of those may be a segmented run, which [`iter`](Self::iter) yields
    /// as the datagrams it was made of.
    ///
    /// [`iter`](Self::iter) then yields them, except any whose source is not an IPv4/IPv6 address (which a UDP
    /// socket never reports in practice; they are dropped with a debug log).
    ///
    /// Errors parked by `IP_RECVERR` (`ECONNREFUSED` after an ICMP port unreachable, ...) are not about any
    /// datagram waiting here: the call is retried, and the caller learns the details from [`read_errors`].
    /// Only a failure of the socket itself is returned as `Err`.
    pub fn recv(&mut self, sock: &impl AsFd) -> io::Result<usize> {
        self.received.clear();
        let fd = sock.as_fd().as_raw_fd();
        let count = self.capacity();
        let mut iovs = [EMPTY_IOVEC; MAX_BATCH];
        let mut hdrs = [EMPTY_MMSGHDR; MAX_BATCH];
        for (iov, chunk) in iovs
            .iter_mut()
            .zip(self.buf.chunks_exact_mut(self.max_datagram))
        {
            iov.iov_base = chunk.as_mut_ptr().cast();
            iov.iov_len = chunk.len();
        }
        // Raw pointers are taken once per array, after its last write, and offset with `wrapping_add`, so no
        // later borrow of the arrays invalidates them before the system call.
        let iov_base = iovs.as_mut_ptr();
        let addr_base = self.addrs.as_mut_ptr();
        let control_base = self.controls.as_mut_ptr();
        let mut soft_errors = 0;
        let n = loop {
            for (i, hdr) in hdrs.iter_mut().enumerate().take(count) {
                // Reset on every call: the kernel shrinks msg_namelen and sets msg_flags.
                hdr.msg_hdr.msg_name = addr_base.wrapping_add(i).cast();
                hdr.msg_hdr.msg_namelen = ADDR_LEN as libc::socklen_t;
                hdr.msg_hdr.msg_iov = iov_base.wrapping_add(i);
                hdr.msg_hdr.msg_iovlen = 1;
                hdr.msg_hdr.msg_control = control_base.wrapping_add(i).cast();
                hdr.msg_hdr.msg_controllen = size_of::<gso::ControlBuf>();
                hdr.msg_hdr.msg_flags = 0;
                hdr.msg_len = 0;
            }
            // SAFETY: the first `count` headers point at `count` distinct iovecs, each covering one disjoint
            // `max_datagram`-sized chunk of `self.buf`, at `count` distinct `ADDR_LEN`-byte entries of
            // `self.addrs` and at `count` distinct control buffers of `self.controls`, with matching lengths. All of them stay alive and untouched by Rust code until the
            // call returns; the kernel writes only within those lengths. `count` <= MAX_BATCH = hdrs.len().
            let r = unsafe {
                libc::recvmmsg(
                    fd,
                    hdrs.as_mut_ptr(),
                    count as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if r >= 0 {
                break r as usize;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error().unwrap_or(0) {
                libc::EAGAIN => return Ok(0),
                libc::EINTR => continue,
                // Each retry consumes one parked error; a bound keeps an ICMP flood from pinning us here.
                e if is_soft_error(e) && soft_errors < 64 => soft_errors += 1,
                _ => return Err(err),
            }
        };
        for (slot, hdr) in hdrs.iter().enumerate().take(n) {
            let source = decode_addr(&self.addrs[slot], hdr.msg_hdr.msg_namelen as usize);
            let Some(source) = source else {
                log::debug!("udp: dropping datagram with unparseable source address");
                continue;
            };
            let start = slot * self.max_datagram;
            let len = (hdr.msg_len as usize).min(self.max_datagram);
            let truncated = hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            let segment = gso::decode_gro_size(&self.controls[slot], hdr.msg_hdr.msg_controllen)
                .filter(|_| !truncated)
                .unwrap_or(len)
                .max(1);
            let mut at = 0;
            loop {
                self.received.push(Received {
                    start: start + at,
                    len: segment.min(len - at),
                    truncated,
                    source,
                });
                at += segment;
                if at >= len {
                    break;
                }
            }
        }
        // `n`, not `received.len()`: zero must keep meaning "drained", or an edge-triggered caller would stall.
        Ok(n)
    }

    /// Number of datagrams [`iter`](Self::iter) yields for the last [`recv`](Self::recv).
    pub fn len(&self) -> usize {
        self.received.len()
    }

    /// True if the last `recv` got nothing.
    pub fn is_empty(&self) -> bool {
        self.received.is_empty()
    }

    /// The `i`-th datagram of the last `recv`.
    pub fn get(&self, i: usize) -> Option<Datagram<'_>> {
        self.received.get(i).map(|r| self.datagram(r))
    }

    /// The datagrams of the last `recv`, in arrival order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Datagram<'_>> + '_ {
        self.received.iter().map(|r| self.datagram(r))
    }

    fn datagram(&self, r: &Received) -> Datagram<'_> {
        Datagram {
            source: r.source,
            payload: &self.buf[r.start..r.start + r.len],
            truncated: r.truncated,
        }
    }
}

/// What a [`SendBatch::flush`] did.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct FlushResult {
    /// Datagrams handed to the kernel.
    pub sent: usize,
    /// Datagrams the kernel refused (unreachable, too big, filtered, ...): dropped and gone from the queue.
    pub dropped: usize,
    /// The socket buffer is full (`EAGAIN`) and datagrams are still queued: register `WRITABLE` and flush again
    /// when it is reported.
    pub blocked: bool,
    /// Of `sent`, the datagrams that left inside segmented sends (see [`SendBatch::set_segmentation`]).
    pub segmented: usize,
}

/// A ring of outgoing datagrams, written in place by the caller and sent with `sendmmsg`.
#[derive(Debug)]
pub struct SendBatch {
    buf: Box<[u8]>,
    max_datagram: usize,
    addrs: Box<[AddrBytes]>,
    addr_lens: Box<[libc::socklen_t]>,
    dsts: Box<[SocketAddr]>,
    lens: Box<[usize]>,
    /// Flow of each slot: consecutive datagrams of one nonzero flow to one destination may share a send.
    flows: Box<[u32]>,
    /// Segmented sends are on (and the kernel has not refused one).
    segmenting: bool,
    /// Ring index of the oldest queued datagram.
    head: usize,
    queued: usize,
    /// The head datagram already failed once with a soft error; a second failure drops it (see `flush`).
    head_retried: bool,
}

impl Default for SendBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl SendBatch {
    /// [`DEFAULT_DATAGRAMS`] slots of [`DEFAULT_MAX_DATAGRAM`] bytes.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_DATAGRAMS, DEFAULT_MAX_DATAGRAM)
    }

    /// Room for `datagrams` queued datagrams (at least 1; flushed [`MAX_BATCH`] per call) of up to
    /// `max_datagram` bytes each.
    ///
    /// # Panics
    ///
    /// If `max_datagram` is zero.
    pub fn with_capacity(datagrams: usize, max_datagram: usize) -> Self {
        assert!(max_datagram > 0, "max_datagram must be positive");
        let datagrams = datagrams.max(1);
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        SendBatch {
            buf: vec![0; datagrams * max_datagram].into_boxed_slice(),
            max_datagram,
            addrs: vec![[0; ADDR_LEN]; datagrams].into_boxed_slice(),
            addr_lens: vec![0; datagrams].into_boxed_slice(),
            dsts: vec![unspecified; datagrams].into_boxed_slice(),
            lens: vec![0; datagrams].into_boxed_slice(),
            flows: vec![0; datagrams].into_boxed_slice(),
            segmenting: false,
            head: 0,
            queued: 0,
            head_retried: false,
        }
    }

    /// Total number of slots.
    pub fn capacity(&self) -> usize {
        self.lens.len()
    }

    /// The slot size: the largest datagram that can be queued.
    pub fn max_datagram(&self) -> usize {
        self.max_datagram
    }

    /// Datagrams queued and not yet sent.
    pub fn len(&self) -> usize {
        self.queued
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// True when every slot is queued: flush before writing more.
    pub fn is_full(&self) -> bool {
        self.queued == self.capacity()
    }

    /// The next free slot, `max_datagram` bytes long, to write a datagram into (its old contents are garbage);
    /// `None` when the ring is full. Nothing is queued until [`commit`](Self::commit).
    pub fn slot(&mut self) -> Option<&mut [u8]> {
        if self.is_full() {
            return None;
        }
        let start = self.tail() * self.max_datagram;
        Some(&mut self.buf[start..start + self.max_datagram])
    }

    /// Lets consecutive queued datagrams of one flow to one destination leave in one segmented send
    /// (`UDP_SEGMENT`): all of one size but the last, which may be shorter. The receiver still gets separate
    /// datagrams unless it turned on [`enable_gro`]. If the kernel refuses a segmented send (an old kernel, a
    /// device without checksum offload), segmentation turns itself off and the datagrams go one by one.
    pub fn set_segmentation(&mut self, on: bool) {
        self.segmenting = on;
    }

    /// Whether segmented sends are on (see [`set_segmentation`](Self::set_segmentation)).
    pub fn segmentation(&self) -> bool {
        self.segmenting
    }

    /// Queues the first `len` bytes of the slot last returned by [`slot`](Self::slot) for `dst`, on its own
    /// (flow 0: never part of a segmented send).
    ///
    /// # Panics
    ///
    /// If the ring is full or `len` exceeds `max_datagram`: both are caller bugs that would otherwise send garbage.
    pub fn commit(&mut self, dst: SocketAddr, len: usize) {
        self.commit_flow(dst, len, 0);
    }

    /// [`commit`](Self::commit), naming the datagram's flow: with segmentation on, consecutive datagrams of one
    /// nonzero flow to one destination may share a send.
    ///
    /// # Panics
    ///
    /// As `commit`.
    pub fn commit_flow(&mut self, dst: SocketAddr, len: usize, flow: u32) {
        assert!(!self.is_full(), "SendBatch::commit on a full batch");
        assert!(
            len <= self.max_datagram,
            "datagram of {len} bytes exceeds the slot"
        );
        let i = self.tail();
        self.addr_lens[i] = encode_addr(&dst, &mut self.addrs[i]);
        self.dsts[i] = dst;
        self.lens[i] = len;
        self.flows[i] = flow;
        self.queued += 1;
    }

    /// Copies `payload` into the next slot and queues it for `dst`; false (nothing queued) if the ring is full
    /// or the payload is larger than a slot.
    pub fn push(&mut self, dst: SocketAddr, payload: &[u8]) -> bool {
        let max = self.max_datagram;
        match self.slot() {
            Some(slot) if payload.len() <= max => {
                slot[..payload.len()].copy_from_slice(payload);
                self.commit(dst, payload.len());
                true
            }
            _ => false,
        }
    }

    fn tail(&self) -> usize {
        (self.head + self.queued) % self.capacity()
    }

    fn pop_front(&mut self, n: usize) {
        self.head = (self.head + n) % self.capacity();
        self.queued -= n;
        self.head_retried = false;
        if self.queued == 0 {
            // Restart at slot 0 so a lightly used batch keeps touching the same memory.
            self.head = 0;
        }
    }

    /// Sends queued datagrams with `sendmmsg` until the queue is empty or the socket would block.
    ///
    /// A datagram the kernel refuses is retried once (the first failure may be an error parked on the socket by
    /// an earlier ICMP message, which the failed call consumed) and then dropped and counted in
    /// [`FlushResult::dropped`]. `Err` only for failures of the socket itself (bad fd, not a socket).
    pub fn flush(&mut self, sock: &impl AsFd) -> io::Result<FlushResult> {
        self.flush_limited(sock, usize::MAX)
    }

    /// `flush`, but stops after `limit` datagrams (sent or dropped): lets tests leave a tail queued as a full
    /// socket buffer would.
    fn flush_limited(&mut self, sock: &impl AsFd, limit: usize) -> io::Result<FlushResult> {
        let fd = sock.as_fd().as_raw_fd();
        let mut result = FlushResult::default();
        let mut iovs = [EMPTY_IOVEC; MAX_BATCH];
        let mut hdrs = [EMPTY_MMSGHDR; MAX_BATCH];
        let mut controls = [gso::EMPTY_CONTROL; MAX_BATCH];
        // Datagrams covered by each header: 1, or a segmented run.
        let mut counts = [0usize; MAX_BATCH];
        while self.queued > 0 && result.sent + result.dropped < limit {
            // One call covers a contiguous run of the ring, at most MAX_BATCH datagrams long.
            let n = self
                .queued
                .min(self.capacity() - self.head)
                .min(MAX_BATCH)
                .min(limit - result.sent - result.dropped);
            let headers = self.plan_runs(n, &mut counts, &mut controls);
            // The kernel only reads these buffers for a send; `cast_mut` is for the C signature alone.
            let buf_base = self.buf.as_ptr();
            let addr_base = self.addrs.as_ptr();
            for (k, iov) in iovs.iter_mut().enumerate().take(n) {
                let i = self.head + k;
                iov.iov_base = buf_base
                    .wrapping_add(i * self.max_datagram)
                    .cast_mut()
                    .cast();
                iov.iov_len = self.lens[i];
            }
            let iov_base = iovs.as_mut_ptr();
            let control_base = controls.as_mut_ptr();
            let mut k = 0;
            for (h, hdr) in hdrs.iter_mut().enumerate().take(headers) {
                let i = self.head + k;
                hdr.msg_hdr.msg_name = addr_base.wrapping_add(i).cast_mut().cast();
                hdr.msg_hdr.msg_namelen = self.addr_lens[i];
                hdr.msg_hdr.msg_iov = iov_base.wrapping_add(k);
                hdr.msg_hdr.msg_iovlen = counts[h];
                if counts[h] > 1 {
                    hdr.msg_hdr.msg_control = control_base.wrapping_add(h).cast();
                    hdr.msg_hdr.msg_controllen = gso::SEGMENT_CONTROL_LEN;
                } else {
                    hdr.msg_hdr.msg_control = std::ptr::null_mut();
                    hdr.msg_hdr.msg_controllen = 0;
                }
                hdr.msg_hdr.msg_flags = 0;
                hdr.msg_len = 0;
                k += counts[h];
            }
            // SAFETY: header h points at `counts[h]` consecutive iovecs of the first `n`, which cover `lens[i]`
            // <= `max_datagram` bytes of distinct slots of `self.buf`, at the `addr_lens[i]` encoded bytes of
            // `self.addrs[i]`, and (for a run) at its own `ControlBuf`, of which `SEGMENT_CONTROL_LEN` bytes are
            // a complete control message. Everything stays alive and unmodified until the call returns;
            // `sendmmsg` only reads the buffers and writes `msg_len` into the headers. `headers` <= n <=
            // MAX_BATCH = hdrs.len().
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    hdrs.as_mut_ptr(),
                    headers as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r > 0 {
                for &c in &counts[..r as usize] {
                    result.sent += c;
                    if c > 1 {
                        result.segmented += c;
                    }
                    self.pop_front(c);
                }
                continue;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error().unwrap_or(0) {
                libc::EAGAIN => {
                    result.blocked = true;
                    break;
                }
                libc::EINTR => continue,
                errno if counts[0] > 1 && gso::is_unsupported(errno) => {
                    log::info!(
                        "udp: segmented sends refused ({}); sending datagrams one by one",
                        io::Error::from_raw_os_error(errno)
                    );
                    self.segmenting = false;
                }
                libc::EBADF | libc::ENOTSOCK | libc::EFAULT | libc::EOPNOTSUPP => return Err(err),
                errno if is_soft_error(errno) && !self.head_retried => self.head_retried = true,
                errno => {
                    // Refused twice, or an error that is about this datagram (bad address family, no buffer
                    // space): drop it (a segmented run shares its destination, so all of it) so the rest of
                    // the queue still goes out.
                    log::debug!(
                        "udp: dropping {} datagram(s) of {} bytes to {}: {}",
                        counts[0],
                        self.lens[self.head],
                        self.dsts[self.head],
                        io::Error::from_raw_os_error(errno)
                    );
                    result.dropped += counts[0];
                    self.pop_front(counts[0]);
                }
            }
        }
        Ok(result)
    }

    /// Splits the next `n` queued datagrams into sends: `counts[h]` datagrams for header `h` (more than one
    /// only with segmentation on, for one flow to one destination), and a segment-size message in
    /// `controls[h]` for each run. Returns the number of headers.
    fn plan_runs(
        &self,
        n: usize,
        counts: &mut [usize; MAX_BATCH],
        controls: &mut [gso::ControlBuf; MAX_BATCH],
    ) -> usize {
        let mut headers = 0;
        let mut k = 0;
        while k < n {
            let i = self.head + k;
            let (flow, dst) = (self.flows[i], self.dsts[i]);
            let run = if self.segmenting && flow != 0 {
                gso::run_length(&self.lens[i..self.head + n], |j| {
                    self.flows[i + j] == flow && self.dsts[i + j] == dst
                })
            } else {
                1
            };
            if run > 1 {
                // run_length only groups datagrams of at most u16::MAX bytes.
                gso::encode_segment_size(&mut controls[headers], self.lens[i] as u16);
            }
            counts[headers] = run;
            headers += 1;
            k += run;
        }
        headers
    }
}

/// Turns on `IP_RECVERR` (and `IPV6_RECVERR` on IPv6 sockets) so ICMP errors for datagrams sent from `sock` are
/// queued for [`read_errors`] instead of being lost.
pub fn enable_recverr(sock: &impl AsFd) -> io::Result<()> {
    let domain = socket2::SockRef::from(sock).domain()?;
    if domain == socket2::Domain::IPV6 {
        socket::setsockopt(sock, sockopt::Ipv6RecvErr, &true)?;
        // Errors for IPv4-mapped destinations of a dual-stack socket come through the IPv4 layer. A v6-only
        // socket may refuse this, which is fine: it has no such destinations.
        let _ = socket::setsockopt(sock, sockopt::Ipv4RecvErr, &true);
    } else {
        socket::setsockopt(sock, sockopt::Ipv4RecvErr, &true)?;
    }
    Ok(())
}

/// One entry of a socket's error queue, as passed to the [`read_errors`] callback.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct QueuedError<'a> {
    /// Where the failed datagram was going.
    pub dst: SocketAddr,
    /// The error, e.g. `libc::ECONNREFUSED` for port unreachable, `libc::EMSGSIZE` for fragmentation needed.
    pub errno: i32,
    /// `libc::SO_EE_ORIGIN_ICMP` / `SO_EE_ORIGIN_ICMP6` for errors a router or host reported,
    /// `SO_EE_ORIGIN_LOCAL` for errors found by our own stack.
    pub origin: u8,
    /// ICMP type (0 unless ICMP).
    pub icmp_type: u8,
    /// ICMP code (0 unless ICMP).
    pub icmp_code: u8,
    /// Extra information: the path MTU for `EMSGSIZE`.
    pub info: u32,
    /// The node that sent the ICMP message, when the kernel says.
    pub offender: Option<IpAddr>,
    /// The start of the failed datagram's UDP payload, as quoted back by the kernel (ICMP quotes only the
    /// first few hundred bytes); enough to find the SCTP association from its common header.
    pub payload: &'a [u8],
    /// The quoted payload was longer than the buffer and was cut.
    pub truncated: bool,
}

/// Control buffer for one `sock_extended_err` plus offender address; over-aligned as `cmsghdr` requires.
#[repr(C, align(8))]
struct CmsgBuf([u8; 128]);

/// Drains the error queue of `sock` (`MSG_ERRQUEUE`), calling `f` for each entry, and returns how many there
/// were. Call it when the reactor reports the socket readable or in error; it never blocks.
pub fn read_errors(sock: &impl AsFd, mut f: impl FnMut(&QueuedError<'_>)) -> io::Result<usize> {
    let fd = sock.as_fd().as_raw_fd();
    let mut payload = [0u8; DEFAULT_MAX_DATAGRAM];
    let mut cmsg = CmsgBuf([0; 128]);
    let mut count = 0;
    loop {
        let mut iov = [io::IoSliceMut::new(&mut payload)];
        let msg = match socket::recvmsg::<SockaddrStorage>(
            fd,
            &mut iov,
            Some(&mut cmsg.0),
            MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(msg) => msg,
            Err(nix::errno::Errno::EAGAIN) => return Ok(count),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        count += 1;
        // Everything is taken out of `msg` before `payload` is read again (it borrows the buffer).
        let len = msg.bytes.min(DEFAULT_MAX_DATAGRAM);
        let truncated = msg.flags.contains(MsgFlags::MSG_TRUNC);
        let dst = msg.address.as_ref().and_then(storage_to_socket_addr);
        let mut report = None;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                let (ee, offender) = match c {
                    socket::ControlMessageOwned::Ipv4RecvErr(ee, off) => (
                        ee,
                        off.map(|a| IpAddr::V4(Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes()))),
                    ),
                    socket::ControlMessageOwned::Ipv6RecvErr(ee, off) => (
                        ee,
                        off.map(|a| IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr))),
                    ),
                    _ => continue,
                };
                report = Some((ee, offender));
            }
        }
        let (Some(dst), Some((ee, offender))) = (dst, report) else {
            // Not an error we can attribute (no address or no extended error, e.g. a truncated control
            // message): it is consumed all the same, so the queue still drains.
            log::debug!("udp: unattributable error-queue entry skipped");
            continue;
        };
        // Unspecified offender (0.0.0.0 / ::) means "not known".
        let offender = offender.filter(|ip| !ip.is_unspecified());
        f(&QueuedError {
            dst,
            errno: ee.ee_errno as i32,
            origin: ee.ee_origin,
            icmp_type: ee.ee_type,
            icmp_code: ee.ee_code,
            info: ee.ee_info,
            offender,
            payload: &payload[..len],
            truncated,
        });
    }
}

fn storage_to_socket_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    if let Some(v6) = s.as_sockaddr_in6() {
        return Some(SocketAddr::V6((*v6).into()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_require::{require, require_ipv6_loopback, skip_unless};
    use std::time::{Duration, Instant};

    fn any_v4() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    /// Waits (with a wall-clock deadline, not a fixed sleep) until `sock` is reported readable or in error.
    fn wait_ready(sock: &mut mio::net::UdpSocket, limit: Duration) -> bool {
        let mut poll = mio::Poll::new().unwrap();
        poll.registry()
            .register(sock, mio::Token(0), mio::Interest::READABLE)
            .unwrap();
        let mut events = mio::Events::with_capacity(4);
        let give_up = Instant::now() + limit;
        let mut ready = false;
        while !ready && Instant::now() < give_up {
            poll.poll(&mut events, Some(Duration::from_millis(50)))
                .unwrap();
            ready = !events.is_empty();
        }
        poll.registry().deregister(sock).unwrap();
        ready
    }

    /// Receives until `want` datagrams arrived or the deadline passed.
    fn recv_all(
        batch: &mut RecvBatch,
        sock: &mut mio::net::UdpSocket,
        want: usize,
    ) -> Vec<(SocketAddr, Vec<u8>, bool)> {
        let mut got = Vec::new();
        let give_up = Instant::now() + Duration::from_secs(5);
        while got.len() < want && Instant::now() < give_up {
            if batch.recv(sock).unwrap() == 0 {
                wait_ready(sock, Duration::from_millis(200));
                continue;
            }
            got.extend(
                batch
                    .iter()
                    .map(|d| (d.source, d.payload.to_vec(), d.truncated)),
            );
        }
        got
    }

    /// Queues `payloads` for `dst` under `flows[i]` and flushes them all.
    fn send_flows(
        send: &mut SendBatch,
        sock: &mio::net::UdpSocket,
        dst: SocketAddr,
        payloads: &[Vec<u8>],
        flows: &[u32],
    ) -> FlushResult {
        for (p, &f) in payloads.iter().zip(flows) {
            let slot = send.slot().unwrap();
            slot[..p.len()].copy_from_slice(p);
            send.commit_flow(dst, p.len(), f);
        }
        let r = send.flush(sock).unwrap();
        assert_eq!(r.sent, payloads.len());
        assert!(send.is_empty());
        r
    }

    /// Distinct payloads: `sizes[i]` bytes, each byte `i`.
    fn numbered(sizes: &[usize]) -> Vec<Vec<u8>> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| vec![i as u8; n])
            .collect()
    }

    #[test]
    fn segmented_run_arrives_as_the_datagrams_it_was_made_of() {
        let mut rx = mio::net::UdpSocket::bind(any_v4()).unwrap();
        let tx = mio::net::UdpSocket::bind(any_v4()).unwrap();
        let dst = rx.local_addr().unwrap();
        let mut send = SendBatch::with_capacity(64, 1500);
        send.set_segmentation(true);
        // Ten of one size and a shorter tail: one run; then another flow; then flow 0, never grouped.
        let mut sizes = vec![700; 10];
        sizes.extend([300, 700, 700, 50, 50]);
        let flows = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 0, 0];
        let payloads = numbered(&sizes);
        let r = send_flows(&mut send, &tx, dst, &payloads, &flows);
        assert!(send.segmentation(), "loopback takes segmented sends");
        assert_eq!(r.segmented, 13, "11 of flow 1 and 2 of flow 2");
        let mut recv = RecvBatch::with_capacity(64, 2048);
        let got = recv_all(&mut recv, &mut rx, payloads.len());
        let want: Vec<_> = payloads
            .iter()
            .map(|p| (tx.local_addr().unwrap(), p.clone(), false))
            .collect();
        assert_eq!(got, want, "same datagrams, same order");
    }

    #[test]
    fn gro_receiver_cuts_a_run_back_into_datagrams() {
        let mut rx = mio::net::UdpSocket::bind(any_v4()).unwrap();
        let gro = enable_gro(&rx);
        let refused = gro.as_ref().map_or_else(
            |e| format!("; this kernel refused UDP_GRO: {e}"),
            |()| String::new(),
        );
        skip_unless!(require(
            gro.is_ok(),
            &format!("UDP GRO (Linux 5.0 or later{refused})")
        ));
        let tx = mio::net::UdpSocket::bind(any_v4()).unwrap();
        let dst = rx.local_addr().unwrap();
        let mut send = SendBatch::with_capacity(64, 1500);
        send.set_segmentation(true);
        let payloads = numbered(&[1200, 1200, 1200, 1200, 17]);
        let r = send_flows(&mut send, &tx, dst, &payloads, &[9; 5]);
        assert_eq!(r.segmented, 5);
        let mut recv = RecvBatch::with_capacity(4, 65_536);
        assert!(wait_ready(&mut rx, Duration::from_secs(5)));
        assert_eq!(recv.recv(&rx).unwrap(), 1, "the run is read whole");
        let got: Vec<_> = recv.iter().map(|d| d.payload.to_vec()).collect();
        assert_eq!(got, payloads, "and handed out datagram by datagram");
        assert!(
            recv.iter()
                .all(|d| !d.truncated && d.source == tx.local_addr().unwrap())
        );
        // A lone datagram on the same socket carries no segment size and stays whole.
        let single = send_flows(&mut send, &tx, dst, &numbered(&[900]), &[9]);
        assert_eq!(single.segmented, 0);
        assert!(wait_ready(&mut rx, Duration::from_secs(5)));
        assert_eq!(recv.recv(&rx).unwrap(), 1);
        assert_eq!(recv.len(), 1);
        assert_eq!(recv.get(0).unwrap().payload.len(), 900);
    }

    #[test]
    fn segmentation_off_sends_one_by_one() {
        let mut rx = mio::net::UdpSocket::bind(any_v4()).unwrap();
        let tx = mio::net::UdpSocket::bind(any_v4()).unwrap();
        let dst = rx.local_addr().unwrap();
        let mut send = SendBatch::with_capacity(8, 1500);
        let payloads = numbered(&[400; 6]);
        let r = send_flows(&mut send, &tx, dst, &payloads, &[3; 6]);
        assert_eq!(r.segmented, 0, "off unless asked for");
        let mut recv = RecvBatch::with_capacity(8, 2048);
        assert_eq!(recv_all(&mut recv, &mut rx, 6).len(), 6);
    }

    #[test]
    fn address_encoding_round_trips() {
        for addr in [
            "127.0.0.1:9899",
            "255.255.255.255:65535",
            "0.0.0.0:0",
            "[::1]:9899",
            "[fe80::1%7]:1",
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut bytes = [0; ADDR_LEN];
            let len = encode_addr(&addr, &mut bytes);
            assert_eq!(decode_addr(&bytes, len as usize), Some(addr));
            // What the kernel (via socket2) makes of the same address matches byte for byte.
            let reference = socket2::SockAddr::from(addr);
            assert_eq!(reference.len(), len);
        }
        let v6 = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 5, 0x1234, 9));
        let mut bytes = [0; ADDR_LEN];
        let len = encode_addr(&v6, &mut bytes);
        assert_eq!(decode_addr(&bytes, len as usize), Some(v6));
        // Short or foreign addresses are rejected, not misread.
        assert_eq!(decode_addr(&bytes, 10), None);
        assert_eq!(decode_addr(&[0; ADDR_LEN], ADDR_LEN), None);
    }

    #[test]
    fn batch_of_datagrams_arrives_in_one_recv_with_sources() {
        let mut rx = mio::net::UdpSocket::bind(any_v4()).unwrap();
        let tx1 = mio::net::UdpSocket::bind(any_v4()).unwrap();
        let tx2 = mio::net::UdpSocket::bind(any_v4()).unwrap();
        let dst = rx.local_addr().unwrap();
        let mut send1 = SendBatch::new();
        let mut send2 = SendBatch::new();
        for i in 0..10u8 {
            assert!(send1.push(dst, &[1, i]));
        }
        // Written in place, as a core's poll_transmit would.
        let slot = send2.slot().unwrap();
        slot[..3].copy_from_slice(b"two");
        send2.commit(dst, 3);
        assert_eq!(send1.len(), 10);
        let r = send1.flush(&tx1).unwrap();
        assert_eq!(
            r,
            FlushResult {
                sent: 10,
                dropped: 0,
                blocked: false,
                segmented: 0,
            }
        );
        assert!(send1.is_empty());
        assert_eq!(send2.flush(&tx2).unwrap().sent, 1);

        assert!(wait_ready(&mut rx, Duration::from_secs(5)));
        let mut batch = RecvBatch::new();
        // Everything was queued before the first recv, so one call takes all 11.
        assert_eq!(batch.recv(&rx).unwrap(), 11);
        let got: Vec<_> = batch
            .iter()
            .map(|d| (d.source, d.payload.to_vec()))
            .collect();
        let from1: Vec<_> = got
            .iter()
            .filter(|(s, _)| *s == tx1.local_addr().unwrap())
            .collect();
        assert_eq!(from1.len(), 10);
        for (i, (_, payload)) in from1.iter().enumerate() {
            assert_eq!(payload, &vec![1, i as u8]);
        }
        assert!(got.contains(&(tx2.local_addr().unwrap(), b"two".to_vec())));
        assert!(batch.iter().all(|d| !d.truncated));
        assert_eq!(batch.recv(&rx).unwrap(), 0, "drained");
        assert!(batch.is_empty());
    }

    #[test]
    fn more_datagrams_than_slots_take_several_recvs() {
        let mut rx = mio::net::UdpSocket::bind(any_v4()).unwrap();
        let tx = std::net::UdpSocket::bind(any_v4()).unwrap();
        let dst = rx.local_addr().unwrap();
        let mut send = SendBatch::with_capacity(100, 64);
        for i in 0..100u8 {
            assert!(send.push(dst, &[i; 8]));
        }
        assert!(send.is_full());
        assert!(!send.push(dst, b"x"), "full ring refuses");
        assert!(send.slot().is_none());
        // Crosses MAX_BATCH, so flush takes two sendmmsg calls.
        assert_eq!(send.flush(&tx).unwrap().sent, 100);
        let mut batch = RecvBatch::with_capacity(7, 64);
        let got = recv_all(&mut batch, &mut rx, 100);
        assert_eq!(got.len(), 100);
        for (i, (src, payload, truncated)) in got.iter().enumerate() {
            assert_eq!(*src, tx.local_addr().unwrap());
            assert_eq!(payload, &vec![i as u8; 8]);
            assert!(!truncated);
        }
    }

    #[test]
    fn oversized_datagram_is_reported_truncated() {
        let mut rx = mio::net::UdpSocket::bind(any_v4()).unwrap();
        let tx = std::net::UdpSocket::bind(any_v4()).unwrap();
        let dst = rx.local_addr().unwrap();
        tx.send_to(&[7u8; 100], dst).unwrap();
        tx.send_to(&[8u8; 16], dst).unwrap();
        let mut batch = RecvBatch::with_capacity(4, 16);
        let got = recv_all(&mut batch, &mut rx, 2);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], (tx.local_addr().unwrap(), vec![7u8; 16], true));
        assert_eq!(got[1], (tx.local_addr().unwrap(), vec![8u8; 16], false));
    }

    #[test]
    fn ipv6_loopback_batch() {
        skip_unless!(require_ipv6_loopback());
        let any6: SocketAddr = "[::1]:0".parse().unwrap();
        let mut rx = mio::net::UdpSocket::bind(any6).unwrap();
        let tx = mio::net::UdpSocket::bind(any6).unwrap();
        let dst = rx.local_addr().unwrap();
        let mut send = SendBatch::new();
        for i in 0..5u8 {
            assert!(send.push(dst, &[6, i]));
        }
        assert_eq!(send.flush(&tx).unwrap().sent, 5);
        let mut batch = RecvBatch::new();
        let got = recv_all(&mut batch, &mut rx, 5);
        let expected: Vec<_> = (0..5u8)
            .map(|i| (tx.local_addr().unwrap(), vec![6, i], false))
            .collect();
        assert_eq!(got, expected);
        assert!(got[0].0.is_ipv6());
    }

    #[test]
    fn partial_flush_keeps_order_across_the_ring_wrap() {
        let tx = mio::net::UdpSocket::bind(any_v4()).unwrap();
        let mut rx = mio::net::UdpSocket::bind(any_v4()).unwrap();
        let dst = rx.local_addr().unwrap();
        let mut send = SendBatch::with_capacity(4, 16);
        for i in 0..4u8 {
            assert!(send.push(dst, &[i]));
        }
        // As if the socket buffer filled after two: the other two stay queued.
        let r = send.flush_limited(&tx, 2).unwrap();
        assert_eq!((r.sent, send.len()), (2, 2));
        // The freed slots at the start of the ring take the next datagrams.
        assert!(send.push(dst, &[4]));
        assert!(send.push(dst, &[5]));
        assert!(send.is_full());
        assert_eq!(send.flush(&tx).unwrap().sent, 4);
        let mut batch = RecvBatch::new();
        let got: Vec<u8> = recv_all(&mut batch, &mut rx, 6)
            .iter()
            .map(|d| d.1[0])
            .collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn unsendable_datagram_is_dropped_not_wedged() {
        let tx = mio::net::UdpSocket::bind(any_v4()).unwrap();
        let mut rx = mio::net::UdpSocket::bind(any_v4()).unwrap();
        let mut send = SendBatch::new();
        // An IPv6 destination on an IPv4 socket is refused by the kernel for this datagram only.
        assert!(send.push("[::1]:9".parse().unwrap(), b"bad"));
        assert!(send.push(rx.local_addr().unwrap(), b"good"));
        let r = send.flush(&tx).unwrap();
        assert_eq!(
            r,
            FlushResult {
                sent: 1,
                dropped: 1,
                blocked: false,
                segmented: 0,
            }
        );
        assert!(send.is_empty());
        let mut batch = RecvBatch::new();
        let got = recv_all(&mut batch, &mut rx, 1);
        assert_eq!(got[0].1, b"good");
    }

    #[test]
    fn large_bursts_flush_without_drops_and_keep_any_blocked_tail() {
        // A tiny send buffer towards a receiver that never reads: eventually EAGAIN, or the kernel silently
        // drops on loopback. Either way flush must not lose its queue to EAGAIN or spin.
        let tx = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        tx.set_nonblocking(true).unwrap();
        tx.set_send_buffer_size(4096).unwrap();
        tx.bind(&any_v4().into()).unwrap();
        let rx = std::net::UdpSocket::bind(any_v4()).unwrap();
        let dst = rx.local_addr().unwrap();
        let mut send = SendBatch::with_capacity(256, 1400);
        let mut total_sent = 0;
        let mut saw_block = false;
        for _ in 0..50 {
            while send.push(dst, &[0u8; 1400]) {}
            let r = send.flush(&tx).unwrap();
            total_sent += r.sent;
            assert_eq!(r.dropped, 0);
            if r.blocked {
                saw_block = true;
                assert!(!send.is_empty(), "blocked means something is still queued");
                break;
            }
            assert!(send.is_empty());
        }
        assert!(total_sent > 0);
        if !saw_block {
            println!("note: the kernel never reported EAGAIN for a full UDP send buffer here");
        }
    }

    /// A port on `ip` that nothing listens on (bound, read, then closed).
    fn closed_port(ip: &str) -> Option<SocketAddr> {
        let s = std::net::UdpSocket::bind(format!("{ip}:0")).ok()?;
        s.local_addr().ok()
    }

    fn wait_for_errors(
        sock: &mut mio::net::UdpSocket,
    ) -> Vec<(SocketAddr, i32, u8, u8, u8, Vec<u8>)> {
        let mut errors = Vec::new();
        let give_up = Instant::now() + Duration::from_secs(5);
        while errors.is_empty() && Instant::now() < give_up {
            wait_ready(sock, Duration::from_millis(200));
            read_errors(sock, |e| {
                errors.push((
                    e.dst,
                    e.errno,
                    e.origin,
                    e.icmp_type,
                    e.icmp_code,
                    e.payload.to_vec(),
                ))
            })
            .unwrap();
        }
        errors
    }

    #[test]
    fn icmp_port_unreachable_shows_up_in_the_error_queue() {
        let mut sock = mio::net::UdpSocket::bind(any_v4()).unwrap();
        enable_recverr(&sock).unwrap();
        let dead = closed_port("127.0.0.1").unwrap();
        let mut send = SendBatch::new();
        assert!(send.push(dead, b"hello, anyone?"));
        assert_eq!(send.flush(&sock).unwrap().sent, 1);
        let errors = wait_for_errors(&mut sock);
        assert_eq!(errors.len(), 1, "{errors:?}");
        let (dst, errno, origin, icmp_type, icmp_code, payload) = errors[0].clone();
        assert_eq!(dst, dead);
        assert_eq!(errno, libc::ECONNREFUSED);
        assert_eq!(origin, libc::SO_EE_ORIGIN_ICMP);
        assert_eq!(
            (icmp_type, icmp_code),
            (3, 3),
            "destination / port unreachable"
        );
        assert_eq!(payload, b"hello, anyone?");
        // Drained: nothing more.
        assert_eq!(
            read_errors(&sock, |_| panic!("queue should be empty")).unwrap(),
            0
        );
    }

    #[test]
    fn parked_icmp_error_does_not_break_recv_or_send() {
        let mut sock = mio::net::UdpSocket::bind(any_v4()).unwrap();
        enable_recverr(&sock).unwrap();
        let mut peer = mio::net::UdpSocket::bind(any_v4()).unwrap();
        let dead = closed_port("127.0.0.1").unwrap();
        let mut send = SendBatch::new();
        assert!(send.push(dead, b"x"));
        send.flush(&sock).unwrap();
        // Wait until the ICMP error is parked on the socket, without consuming it.
        assert!(wait_ready(&mut sock, Duration::from_secs(5)));
        // A send now first fails with the parked ECONNREFUSED; the batch retries and delivers.
        assert!(send.push(peer.local_addr().unwrap(), b"still works"));
        let r = send.flush(&sock).unwrap();
        assert_eq!(
            r,
            FlushResult {
                sent: 1,
                dropped: 0,
                blocked: false,
                segmented: 0,
            }
        );
        let mut batch = RecvBatch::new();
        assert_eq!(recv_all(&mut batch, &mut peer, 1)[0].1, b"still works");
        // Another error, and this time recv meets it: no data, but no failure either.
        assert!(send.push(dead, b"y"));
        send.flush(&sock).unwrap();
        wait_for_errors(&mut sock);
        assert_eq!(batch.recv(&sock).unwrap(), 0);
        assert!(send.push(dead, b"z"));
        send.flush(&sock).unwrap();
        assert!(wait_ready(&mut sock, Duration::from_secs(5)));
        assert_eq!(batch.recv(&sock).unwrap(), 0);
    }

    #[test]
    fn icmp6_port_unreachable_shows_up_in_the_error_queue() {
        skip_unless!(require_ipv6_loopback());
        let mut sock = mio::net::UdpSocket::bind("[::1]:0".parse().unwrap()).unwrap();
        enable_recverr(&sock).unwrap();
        let dead = closed_port("[::1]").unwrap();
        let mut send = SendBatch::new();
        assert!(send.push(dead, b"v6?"));
        assert_eq!(send.flush(&sock).unwrap().sent, 1);
        let errors = wait_for_errors(&mut sock);
        assert_eq!(errors.len(), 1, "{errors:?}");
        let (dst, errno, origin, icmp_type, icmp_code, payload) = errors[0].clone();
        assert_eq!(dst, dead);
        assert_eq!(errno, libc::ECONNREFUSED);
        assert_eq!(origin, libc::SO_EE_ORIGIN_ICMP6);
        assert_eq!(
            (icmp_type, icmp_code),
            (1, 4),
            "ICMPv6 destination unreachable / port unreachable"
        );
        assert_eq!(payload, b"v6?");
    }
}
