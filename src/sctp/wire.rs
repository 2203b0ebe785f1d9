//! The SCTP common header (RFC 9260 §3.1), its CRC32c checksum (§6.8, Appendix A), serial-number TSNs (§1.6)
//! and a bounds-checked packet writer.
//!
//! Nothing here allocates or panics on peer input: [`Packet::new_checked`] validates the length once, after
//! which no getter can fail. Output goes through [`Writer`], which refuses (with [`WireError::NoRoom`]) to
//! write past the caller's buffer.

use core::cmp::Ordering;
use core::fmt;

/// Length of the common header: source port, destination port, verification tag, checksum.
pub const HEADER_LEN: usize = 12;

mod field {
    use core::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const VTAG: Range<usize> = 4..8;
    pub const CHECKSUM: Range<usize> = 8..12;
}

/// Why a packet, chunk or parameter could not be parsed or written. Small and `Copy`, so counting a drop never
/// allocates.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum WireError {
    /// Shorter than the fixed part of the structure being read.
    Truncated,
    /// The CRC32c in the common header does not match the packet.
    BadChecksum,
    /// A chunk length field below 4 or past the end of the packet.
    BadChunkLength,
    /// A chunk whose length does not fit its type (e.g. a SACK whose gap blocks run past its end).
    BadChunk,
    /// A parameter or error-cause length below 4 or past the end of its chunk.
    BadParamLength,
    /// A packet with no chunks at all.
    NoChunks,
    /// A source or destination port of 0 (RFC 9260 §3.1: MUST NOT be used).
    ZeroPort,
    /// The output buffer is too small for what was being written.
    NoRoom,
}

impl WireError {
    /// A short, stable name for logs and counters.
    pub const fn as_str(self) -> &'static str {
        match self {
            WireError::Truncated => "truncated",
            WireError::BadChecksum => "bad checksum",
            WireError::BadChunkLength => "bad chunk length",
            WireError::BadChunk => "malformed chunk",
            WireError::BadParamLength => "bad parameter length",
            WireError::NoChunks => "no chunks",
            WireError::ZeroPort => "zero port",
            WireError::NoRoom => "no room in buffer",
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for WireError {}

/// Reads a big-endian `u16` at `at`. Callers have checked the bounds.
#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Reads a big-endian `u32` at `at`. Callers have checked the bounds.
#[inline]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Splits one chunk or TLV parameter (both carry a 16-bit length at offset 2 that counts their 4-byte header
/// and excludes padding) off the front of `b`: returns it, unpadded, and what follows its padding. A length
/// below 4 or past the end gives `err`. A last item whose padding is missing is accepted: padding carries
/// nothing.
pub(crate) fn split_item(b: &[u8], err: WireError) -> Result<(&[u8], &[u8]), WireError> {
    if b.len() < 4 {
        return Err(err);
    }
    let len = usize::from(be16(b, 2));
    if len < 4 || len > b.len() {
        return Err(err);
    }
    Ok((&b[..len], b.get(pad4(len)..).unwrap_or(&[])))
}

/// Rounds a length up to the 4-byte boundary that chunks and parameters are padded to.
#[inline]
pub const fn pad4(len: usize) -> usize {
    (len + 3) & !3
}

/// A read-only view of an SCTP packet: the common header followed by chunks.
///
/// Once [`Packet::new_checked`] has accepted the buffer, no getter panics.
#[derive(Copy, Clone, Debug)]
pub struct Packet<'a> {
    buf: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Wraps `buf` after checking that it holds at least a common header and one chunk header, and that
    /// neither port is zero.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        if buf.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if buf.len() < HEADER_LEN + 4 {
            return Err(WireError::NoChunks);
        }
        let p = Packet { buf };
        if p.src_port() == 0 || p.dst_port() == 0 {
            return Err(WireError::ZeroPort);
        }
        Ok(p)
    }

    /// The sender's SCTP port.
    pub fn src_port(&self) -> u16 {
        be16(self.buf, field::SRC_PORT.start)
    }

    /// The receiver's SCTP port.
    pub fn dst_port(&self) -> u16 {
        be16(self.buf, field::DST_PORT.start)
    }

    /// The verification tag.
    pub fn vtag(&self) -> u32 {
        be32(self.buf, field::VTAG.start)
    }

    /// The checksum exactly as stored (CRC32c, little-endian on the wire per RFC 9260 Appendix A).
    pub fn checksum(&self) -> u32 {
        u32::from_le_bytes([self.buf[8], self.buf[9], self.buf[10], self.buf[11]])
    }

    /// Whether the stored checksum matches the packet. Under `cfg(fuzzing)` every checksum passes, so fuzzers
    /// reach the chunk parsers.
    pub fn verify_checksum(&self) -> bool {
        cfg!(fuzzing) || self.checksum() == checksum(self.buf)
    }

    /// [`Packet::verify_checksum`] for a packet whose header the caller has matched field by field against
    /// the one `head_crc` was computed from ([`header_crc`]): one pass over the chunks instead of two calls.
    pub fn verify_checksum_from(&self, head_crc: u32) -> bool {
        cfg!(fuzzing) || self.checksum() == crc32c::crc32c_append(head_crc, &self.buf[HEADER_LEN..])
    }

    /// The bytes after the common header.
    pub fn chunk_bytes(&self) -> &'a [u8] {
        &self.buf[HEADER_LEN..]
    }

    /// The whole packet.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
}

/// Computes the CRC32c of a packet with its checksum field taken as zero (RFC 9260 §6.8).
pub fn checksum(packet: &[u8]) -> u32 {
    if packet.len() < HEADER_LEN {
        return crc32c::crc32c(packet);
    }
    // Two calls rather than three: the crate's per-call setup dominates for the short packets SCTP mostly sends.
    crc32c::crc32c_append(
        zeroed_header_crc(&packet[..field::CHECKSUM.start]),
        &packet[HEADER_LEN..],
    )
}

/// The CRC32c of a common header with these fields and a zero checksum, to continue over the chunks with
/// [`Packet::verify_checksum_from`]. An association's inbound header never changes, so it is computed once.
pub fn header_crc(src_port: u16, dst_port: u16, vtag: u32) -> u32 {
    let mut fields = [0u8; field::CHECKSUM.start];
    fields[field::SRC_PORT].copy_from_slice(&src_port.to_be_bytes());
    fields[field::DST_PORT].copy_from_slice(&dst_port.to_be_bytes());
    fields[field::VTAG].copy_from_slice(&vtag.to_be_bytes());
    zeroed_header_crc(&fields)
}

/// The CRC32c of a common header whose ports and tag are `fields` (its first 8 bytes) and whose checksum
/// field is zero.
fn zeroed_header_crc(fields: &[u8]) -> u32 {
    let mut head = [0u8; HEADER_LEN];
    head[..field::CHECKSUM.start].copy_from_slice(fields);
    crc32c::crc32c(&head)
}

/// The fields of a common header, for writing.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The sender's SCTP port.
    pub src_port: u16,
    /// The receiver's SCTP port.
    pub dst_port: u16,
    /// The verification tag to put on the packet.
    pub vtag: u32,
}

/// A transmission sequence number, compared with serial-number arithmetic (RFC 9260 §1.6, RFC 1982).
#[derive(Copy, Clone, PartialEq, Eq, Hash, Default)]
pub struct Tsn(pub u32);

impl Tsn {
    /// The TSN `n` after this one, wrapping.
    #[inline]
    pub const fn add(self, n: u32) -> Tsn {
        Tsn(self.0.wrapping_add(n))
    }

    /// The next TSN.
    #[inline]
    pub const fn next(self) -> Tsn {
        self.add(1)
    }

    /// `self - other` as a signed distance; meaningful while the two are within 2^31 of each other.
    #[inline]
    pub const fn distance(self, other: Tsn) -> i32 {
        self.0.wrapping_sub(other.0) as i32
    }

    /// Serial-number "less than".
    #[inline]
    pub const fn lt(self, other: Tsn) -> bool {
        self.distance(other) < 0
    }

    /// Serial-number "less than or equal".
    #[inline]
    pub const fn le(self, other: Tsn) -> bool {
        self.distance(other) <= 0
    }

    /// Serial-number "greater than".
    #[inline]
    pub const fn gt(self, other: Tsn) -> bool {
        self.distance(other) > 0
    }

    /// Serial-number ordering; a total order only within a 2^31 window, which is all SCTP ever compares.
    pub fn serial_cmp(self, other: Tsn) -> Ordering {
        self.distance(other).cmp(&0)
    }
}

impl fmt::Debug for Tsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tsn{}", self.0)
    }
}

/// Serial-number "less than" for 16-bit stream sequence numbers.
#[inline]
pub const fn ssn_lt(a: u16, b: u16) -> bool {
    (a.wrapping_sub(b) as i16) < 0
}

/// Writes a packet into a caller-provided buffer, refusing to write past its end.
///
/// Chunks are opened with [`Writer::begin_chunk`] and closed with [`Writer::end_chunk`], which fills in the
/// length and the zero padding; [`Writer::finish`] stores the CRC32c and returns the packet length.
pub struct Writer<'b> {
    buf: &'b mut [u8],
    len: usize,
}

/// Where an open chunk or parameter started, so its length can be filled in when it ends.
#[derive(Copy, Clone, Debug)]
#[must_use]
pub struct Mark(usize);

impl<'b> Writer<'b> {
    /// Starts a packet with the given header. Fails if `buf` cannot even hold the header.
    pub fn new(buf: &'b mut [u8], h: Header) -> Result<Self, WireError> {
        if buf.len() < HEADER_LEN {
            return Err(WireError::NoRoom);
        }
        buf[0..2].copy_from_slice(&h.src_port.to_be_bytes());
        buf[2..4].copy_from_slice(&h.dst_port.to_be_bytes());
        buf[4..8].copy_from_slice(&h.vtag.to_be_bytes());
        buf[8..12].fill(0);
        Ok(Writer {
            buf,
            len: HEADER_LEN,
        })
    }

    /// Bytes written so far (including the header).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether only the header has been written.
    pub fn is_empty(&self) -> bool {
        self.len == HEADER_LEN
    }

    /// Bytes still free in the buffer.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.len
    }

    /// Appends raw bytes.
    pub fn put(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        let end = self.len.checked_add(bytes.len()).ok_or(WireError::NoRoom)?;
        if end > self.buf.len() {
            return Err(WireError::NoRoom);
        }
        self.buf[self.len..end].copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    /// Appends a big-endian `u16`.
    pub fn put_u16(&mut self, v: u16) -> Result<(), WireError> {
        self.put(&v.to_be_bytes())
    }

    /// Appends a big-endian `u32`.
    pub fn put_u32(&mut self, v: u32) -> Result<(), WireError> {
        self.put(&v.to_be_bytes())
    }

    /// Opens a chunk: writes type and flags and reserves the length field.
    pub fn begin_chunk(&mut self, kind: u8, flags: u8) -> Result<Mark, WireError> {
        let at = self.len;
        self.put(&[kind, flags, 0, 0])?;
        Ok(Mark(at))
    }

    /// Opens a TLV parameter or error cause: writes its type and reserves the length field.
    pub fn begin_tlv(&mut self, kind: u16) -> Result<Mark, WireError> {
        let at = self.len;
        self.put_u16(kind)?;
        self.put_u16(0)?;
        Ok(Mark(at))
    }

    /// Closes a chunk or TLV: stores its unpadded length and appends zero padding to a 4-byte boundary.
    pub fn end_chunk(&mut self, m: Mark) -> Result<(), WireError> {
        let len = self.len - m.0;
        let len16 = u16::try_from(len).map_err(|_| WireError::NoRoom)?;
        self.buf[m.0 + 2..m.0 + 4].copy_from_slice(&len16.to_be_bytes());
        let padded = pad4(self.len);
        if padded > self.buf.len() {
            return Err(WireError::NoRoom);
        }
        // At most three bytes, and usually none: a loop, not a `memset` call.
        for b in &mut self.buf[self.len..padded] {
            *b = 0;
        }
        self.len = padded;
        Ok(())
    }

    /// Same as [`Writer::end_chunk`], for TLVs.
    pub fn end_tlv(&mut self, m: Mark) -> Result<(), WireError> {
        self.end_chunk(m)
    }

    /// Drops everything written after `m`, e.g. a chunk that turned out not to fit.
    pub fn rewind(&mut self, m: Mark) {
        self.len = m.0;
    }

    /// A mark at the current position, for [`Writer::rewind`].
    pub fn mark(&self) -> Mark {
        Mark(self.len)
    }

    /// Stores the CRC32c and returns the packet's length.
    pub fn finish(self) -> usize {
        // The checksum field is still zero, so one pass over the packet computes it.
        let sum = crc32c::crc32c(&self.buf[..self.len]);
        self.buf[8..12].copy_from_slice(&sum.to_le_bytes());
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        // The CRC-32C check value of "123456789" (RFC 3720 B.4 / the CRC catalogue).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        // RFC 3720 B.4: 32 bytes of zeros.
        assert_eq!(crc32c::crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c::crc32c(&[0xffu8; 32]), 0x62A8_AB43);
    }

    #[test]
    fn writer_round_trip_and_checksum() {
        let mut buf = [0u8; 64];
        let mut w = Writer::new(
            &mut buf,
            Header {
                src_port: 5000,
                dst_port: 7,
                vtag: 0xdead_beef,
            },
        )
        .unwrap();
        let m = w.begin_chunk(11, 0).unwrap();
        w.end_chunk(m).unwrap();
        let m = w.begin_chunk(4, 0).unwrap();
        w.put(&[1, 2, 3]).unwrap();
        w.end_chunk(m).unwrap();
        let n = w.finish();
        assert_eq!(n, 12 + 4 + 8);
        let p = Packet::new_checked(&buf[..n]).unwrap();
        assert_eq!(
            (p.src_port(), p.dst_port(), p.vtag()),
            (5000, 7, 0xdead_beef)
        );
        assert!(p.verify_checksum());
        // Second chunk: length 7 stored, one byte of zero padding.
        assert_eq!(&buf[16..24], &[4, 0, 0, 7, 1, 2, 3, 0]);
        let mut bad = buf;
        bad[20] ^= 1;
        assert!(!Packet::new_checked(&bad[..n]).unwrap().verify_checksum() || cfg!(fuzzing));
    }

    #[test]
    fn writer_refuses_overflow() {
        let mut buf = [0u8; 15];
        let mut w = Writer::new(
            &mut buf,
            Header {
                src_port: 1,
                dst_port: 2,
                vtag: 3,
            },
        )
        .unwrap();
        assert_eq!(w.begin_chunk(1, 0).unwrap_err(), WireError::NoRoom);
        assert_eq!(w.len(), 12);
        assert!(
            Writer::new(
                &mut [0u8; 4],
                Header {
                    src_port: 1,
                    dst_port: 2,
                    vtag: 3
                }
            )
            .is_err()
        );
    }

    #[test]
    fn packet_rejects_short_and_zero_ports() {
        assert_eq!(
            Packet::new_checked(&[0; 11]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            Packet::new_checked(&[1; 12]).unwrap_err(),
            WireError::NoChunks
        );
        let mut b = [1u8; 16];
        b[0] = 0;
        b[1] = 0;
        assert_eq!(Packet::new_checked(&b).unwrap_err(), WireError::ZeroPort);
    }

    #[test]
    fn tsn_serial_arithmetic() {
        let a = Tsn(u32::MAX);
        let b = a.next();
        assert_eq!(b, Tsn(0));
        assert!(a.lt(b) && b.gt(a) && a.le(a));
        assert_eq!(b.distance(a), 1);
        assert!(Tsn(5).lt(Tsn(0x8000_0000)));
        assert!(ssn_lt(u16::MAX, 0) && !ssn_lt(0, u16::MAX));
    }
}
