//! The byte reader and writer every message codec here shares: discovery datagrams ([`crate::discovery`]),
//! roster messages ([`crate::registry::wire`]) and chat frames ([`crate::peer::frame`]). Big-endian integers,
//! LEB128 varints in their shortest form, family-tagged IP addresses and length-prefixed nicknames.
//!
//! Reading never panics and never reads past the input: every read checks its length and returns
//! [`Malformed`] with a static reason; a codec maps that onto its own error (a counted drop). Writing appends
//! to a `Vec<u8>` ([`Put`]); the caller bounds what it writes. SCTP's packets are read through checked views
//! over fixed offsets instead ([`crate::sctp::wire`]), as RFC 9260's layouts suggest.

#![forbid(unsafe_code)]

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::nick::Nick;

/// Why bytes could not be read: a short, static reason (no allocation for a hostile input).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// The input ended inside a field.
pub const TRUNCATED: Malformed = Malformed("truncated");

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Malformed {}

/// Reads fields in order from a byte slice.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    pub(crate) b: &'a [u8],
    pub(crate) at: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `b`.
    pub fn new(b: &'a [u8]) -> Reader<'a> {
        Reader { b, at: 0 }
    }

    /// A reader of `b` from offset `at` (past a header the caller checked by hand).
    pub fn at(b: &'a [u8], at: usize) -> Reader<'a> {
        Reader { b, at }
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.at
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.b.len().saturating_sub(self.at)
    }

    /// The bytes not yet read, without consuming them.
    #[inline]
    pub fn rest(&self) -> &'a [u8] {
        self.b.get(self.at..).unwrap_or(&[])
    }

    /// The next `n` bytes.
    #[inline]
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let end = self.at.checked_add(n).ok_or(Malformed("length"))?;
        let s = self.b.get(self.at..end).ok_or(TRUNCATED)?;
        self.at = end;
        Ok(s)
    }

    /// The next `N` bytes as an array.
    #[inline]
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let a: &[u8; N] = self.rest().first_chunk().ok_or(TRUNCATED)?;
        self.at += N;
        Ok(*a)
    }

    /// A byte.
    #[inline]
    pub fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.array::<1>()?[0])
    }

    /// A big-endian `u16`.
    #[inline]
    pub fn u16(&mut self) -> Result<u16, Malformed> {
        self.array().map(u16::from_be_bytes)
    }

    /// A big-endian `u32`.
    #[inline]
    pub fn u32(&mut self) -> Result<u32, Malformed> {
        self.array().map(u32::from_be_bytes)
    }

    /// A big-endian `u64`.
    #[inline]
    pub fn u64(&mut self) -> Result<u64, Malformed> {
        self.array().map(u64::from_be_bytes)
    }

    /// A family-tagged address: 0 (none), 4 (IPv4, 4 bytes) or 6 (IPv6, 16 bytes).
    pub fn ip(&mut self) -> Result<Option<IpAddr>, Malformed> {
        match self.u8()? {
            0 => Ok(None),
            4 => Ok(Some(IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)))),
            6 => Ok(Some(IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)))),
            _ => Err(Malformed("address family")),
        }
    }

    /// A nickname: a length byte, then that many bytes, checked as [`Nick`] checks them.
    pub fn nick(&mut self) -> Result<Nick, Malformed> {
        let n = usize::from(self.u8()?);
        Nick::from_bytes(self.take(n)?).map_err(|_| Malformed("nickname"))
    }

    /// An unsigned LEB128 integer of at most `bits` bits, in its shortest form only: each value has one
    /// encoding, so what parses re-encodes to the same bytes.
    #[inline]
    pub fn varint(&mut self, bits: u32) -> Result<u64, Malformed> {
        // Most varints in practice (counts, small distances) are one byte.
        let first = *self.b.get(self.at).ok_or(TRUNCATED)?;
        if first < 0x80 {
            self.at += 1;
            return Ok(u64::from(first));
        }
        self.varint_long(bits)
    }

    #[cold]
    fn varint_long(&mut self, bits: u32) -> Result<u64, Malformed> {
        let mut v = 0u64;
        let mut shift = 0u32;
        loop {
            let b = self.u8()?;
            let low = u64::from(b & 0x7f);
            if shift >= bits || (shift > 0 && low >> (bits - shift).min(63) != 0) {
                return Err(Malformed("varint too large"));
            }
            v |= low << shift;
            if b & 0x80 == 0 {
                if b == 0 && shift > 0 {
                    return Err(Malformed("varint not in its shortest form"));
                }
                return Ok(v);
            }
            shift += 7;
        }
    }

    /// Succeeds only if everything was read.
    pub fn end(&self) -> Result<(), Malformed> {
        if self.at == self.b.len() {
            Ok(())
        } else {
            Err(Malformed("trailing bytes"))
        }
    }
}

/// Appending fields to a message being built.
pub trait Put {
    /// A byte.
    fn put_u8(&mut self, v: u8);
    /// Raw bytes.
    fn put_bytes(&mut self, b: &[u8]);
    /// A big-endian `u16`.
    fn put_u16(&mut self, v: u16) {
        self.put_bytes(&v.to_be_bytes());
    }
    /// A big-endian `u32`.
    fn put_u32(&mut self, v: u32) {
        self.put_bytes(&v.to_be_bytes());
    }
    /// A big-endian `u64`.
    fn put_u64(&mut self, v: u64) {
        self.put_bytes(&v.to_be_bytes());
    }
    /// A family-tagged address, as [`Reader::ip`] reads it.
    fn put_ip(&mut self, ip: Option<IpAddr>) {
        match ip {
            None => self.put_u8(0),
            Some(IpAddr::V4(a)) => {
                self.put_u8(4);
                self.put_bytes(&a.octets());
            }
            Some(IpAddr::V6(a)) => {
                self.put_u8(6);
                self.put_bytes(&a.octets());
            }
        }
    }
    /// A nickname, as [`Reader::nick`] reads it.
    fn put_nick(&mut self, n: &Nick) {
        // A Nick holds at most 63 bytes (`MAX_NICK_BYTES`), so its length fits the byte.
        self.put_u8(n.as_bytes().len() as u8);
        self.put_bytes(n.as_bytes());
    }
    /// An unsigned LEB128 integer in its shortest form, as [`Reader::varint`] reads it.
    fn put_varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.put_u8(v as u8 | 0x80);
            v >>= 7;
        }
        self.put_u8(v as u8);
    }
}

/// Writes into a caller's buffer (the next `sendmmsg` slot) instead of a `Vec`: a field that does not fit
/// is not written and marks the writer full, so nothing is ever written past the end.
pub struct SliceWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
    overflow: bool,
}

impl<'a> SliceWriter<'a> {
    /// A writer at the start of `buf`.
    pub fn new(buf: &'a mut [u8]) -> SliceWriter<'a> {
        SliceWriter {
            buf,
            len: 0,
            overflow: false,
        }
    }

    /// The bytes written, or `None` if something did not fit.
    pub fn finish(self) -> Option<usize> {
        (!self.overflow).then_some(self.len)
    }
}

impl Put for SliceWriter<'_> {
    fn put_u8(&mut self, v: u8) {
        self.put_bytes(&[v]);
    }
    fn put_bytes(&mut self, b: &[u8]) {
        match self.buf.get_mut(self.len..self.len + b.len()) {
            Some(dst) if !self.overflow => {
                dst.copy_from_slice(b);
                self.len += b.len();
            }
            _ => self.overflow = true,
        }
    }
}

impl Put for Vec<u8> {
    #[inline]
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    #[inline]
    fn put_bytes(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_round_trips_and_every_truncation_is_an_error() {
        let mut b = Vec::new();
        b.put_u8(7);
        b.put_u16(0xBEEF);
        b.put_u32(0xDEAD_BEEF);
        b.put_u64(u64::MAX - 1);
        b.put_ip(None);
        b.put_ip(Some("10.1.2.3".parse().unwrap()));
        b.put_ip(Some("::1".parse().unwrap()));
        b.put_nick(&Nick::new("alice").unwrap());
        b.put_varint(0);
        b.put_varint(300);
        b.put_varint(u64::MAX);
        let read = |b: &[u8]| -> Result<(), Malformed> {
            let mut r = Reader::new(b);
            assert_eq!(r.u8()?, 7);
            assert_eq!(r.u16()?, 0xBEEF);
            assert_eq!(r.u32()?, 0xDEAD_BEEF);
            assert_eq!(r.u64()?, u64::MAX - 1);
            assert_eq!(r.ip()?, None);
            assert_eq!(r.ip()?, Some("10.1.2.3".parse().unwrap()));
            assert_eq!(r.ip()?, Some("::1".parse().unwrap()));
            assert_eq!(r.nick()?.as_str(), "alice");
            assert_eq!(r.varint(64)?, 0);
            assert_eq!(r.varint(64)?, 300);
            assert_eq!(r.varint(64)?, u64::MAX);
            r.end()
        };
        assert_eq!(read(&b), Ok(()));
        for n in 0..b.len() {
            assert!(read(&b[..n]).is_err(), "cut at {n}");
        }
    }

    #[test]
    fn a_slice_writer_writes_what_fits_and_says_when_something_did_not() {
        let mut buf = [0u8; 5];
        let mut w = SliceWriter::new(&mut buf);
        w.put_u32(0x0102_0304);
        w.put_u8(5);
        assert_eq!(w.finish(), Some(5));
        assert_eq!(buf, [1, 2, 3, 4, 5]);
        let mut small = [0u8; 3];
        let mut w = SliceWriter::new(&mut small);
        w.put_u16(7);
        w.put_u16(8);
        // A later field that would fit does not go in after one that did not.
        w.put_u8(9);
        assert_eq!(w.finish(), None);
        assert_eq!(small, [0, 7, 0]);
    }

    #[test]
    fn varints_are_bounded_and_in_their_shortest_form() {
        // 2^32 does not fit 32 bits.
        let mut b = Vec::new();
        b.put_varint(1 << 32);
        assert_eq!(
            Reader::new(&b).varint(32),
            Err(Malformed("varint too large"))
        );
        // 1 with a needless continuation byte.
        assert_eq!(
            Reader::new(&[0x81, 0x00]).varint(64),
            Err(Malformed("varint not in its shortest form"))
        );
        // Eleven bytes cannot be a u64.
        assert!(Reader::new(&[0xff; 11]).varint(64).is_err());
    }

    #[test]
    fn a_bad_family_or_nickname_is_malformed() {
        assert_eq!(Reader::new(&[5]).ip(), Err(Malformed("address family")));
        assert_eq!(Reader::new(&[1, b' ']).nick(), Err(Malformed("nickname")));
        assert_eq!(Reader::new(&[0]).nick(), Err(Malformed("nickname")));
        assert_eq!(Reader::new(&[1, 2]).end(), Err(Malformed("trailing bytes")));
    }
}
