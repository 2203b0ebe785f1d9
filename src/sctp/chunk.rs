//! SCTP chunks (RFC 9260 §3.2, §3.3): a borrowed [`Chunk`] per chunk, a [`ChunkIter`] over a packet, and
//! writers for every chunk this stack sends.
//!
//! Parsing never allocates and never panics: each variant's fixed fields are length-checked before they are
//! read, and a malformed chunk ends the iteration with a [`WireError`]. Chunk types this stack does not know
//! come out as [`Chunk::Unknown`] so the caller can act on the type's two high bits (§3.2, [`UnknownAction`]).

use super::wire::{Tsn, WireError, Writer, be16, be32, pad4, split_item};

/// Chunk type codes (RFC 9260 §3.2).
pub mod kind {
    /// Payload data.
    pub const DATA: u8 = 0;
    /// Initiation.
    pub const INIT: u8 = 1;
    /// Initiation acknowledgement.
    pub const INIT_ACK: u8 = 2;
    /// Selective acknowledgement.
    pub const SACK: u8 = 3;
    /// Heartbeat request.
    pub const HEARTBEAT: u8 = 4;
    /// Heartbeat acknowledgement.
    pub const HEARTBEAT_ACK: u8 = 5;
    /// Abort.
    pub const ABORT: u8 = 6;
    /// Shutdown.
    pub const SHUTDOWN: u8 = 7;
    /// Shutdown acknowledgement.
    pub const SHUTDOWN_ACK: u8 = 8;
    /// Operation error.
    pub const ERROR: u8 = 9;
    /// State cookie echo.
    pub const COOKIE_ECHO: u8 = 10;
    /// Cookie acknowledgement.
    pub const COOKIE_ACK: u8 = 11;
    /// Shutdown complete.
    pub const SHUTDOWN_COMPLETE: u8 = 14;
}

/// DATA chunk flag bits (RFC 9260 §3.3.1).
pub mod data_flags {
    /// Last fragment of a message.
    pub const END: u8 = 0x01;
    /// First fragment of a message.
    pub const BEGIN: u8 = 0x02;
    /// Unordered delivery.
    pub const UNORDERED: u8 = 0x04;
    /// The sender asks for an immediate SACK (RFC 9260 §3.3.1, formerly RFC 7053).
    pub const IMMEDIATE: u8 = 0x08;
}

/// The T bit of ABORT and SHUTDOWN COMPLETE: the verification tag is the receiver's own, reflected.
pub const FLAG_T: u8 = 0x01;

/// Fixed length of a DATA chunk header (type, flags, length, TSN, stream, SSN, PPID).
pub const DATA_HEADER_LEN: usize = 16;
/// Fixed length of an INIT or INIT ACK chunk before its parameters.
pub const INIT_FIXED_LEN: usize = 20;
/// Fixed length of a SACK chunk before its gap blocks.
pub const SACK_FIXED_LEN: usize = 16;

/// A parsed DATA chunk, borrowing its payload from the packet.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Data<'a> {
    /// The flag byte (see [`data_flags`]).
    pub flags: u8,
    /// Transmission sequence number.
    pub tsn: Tsn,
    /// Stream identifier.
    pub stream: u16,
    /// Stream sequence number (meaningless when unordered).
    pub ssn: u16,
    /// Payload protocol identifier, opaque to SCTP.
    pub ppid: u32,
    /// User data (may be empty on the wire, which the association answers with an ABORT).
    pub payload: &'a [u8],
}

impl Data<'_> {
    /// Whether the U bit is set.
    pub fn unordered(&self) -> bool {
        self.flags & data_flags::UNORDERED != 0
    }
    /// Whether this is the first fragment of a message.
    pub fn begin(&self) -> bool {
        self.flags & data_flags::BEGIN != 0
    }
    /// Whether this is the last fragment of a message.
    pub fn end(&self) -> bool {
        self.flags & data_flags::END != 0
    }
    /// Whether the sender asked for an immediate SACK.
    pub fn immediate(&self) -> bool {
        self.flags & data_flags::IMMEDIATE != 0
    }
}

/// The fixed fields of an INIT or INIT ACK chunk, and its parameter bytes (RFC 9260 §3.3.2, §3.3.3).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Init<'a> {
    /// The tag the sender wants on every packet it receives.
    pub initiate_tag: u32,
    /// The sender's receive window.
    pub a_rwnd: u32,
    /// Number of outbound streams the sender wants.
    pub out_streams: u16,
    /// Maximum number of inbound streams the sender allows.
    pub in_streams: u16,
    /// The TSN the sender starts with.
    pub initial_tsn: Tsn,
    /// The TLV parameters, unparsed (see [`super::param`]).
    pub params: &'a [u8],
}

/// A parsed SACK chunk. Gap blocks and duplicate TSNs are read lazily from the packet.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Sack<'a> {
    /// Every TSN up to and including this one has arrived.
    pub cum_tsn: Tsn,
    /// The receiver's window.
    pub a_rwnd: u32,
    gaps: &'a [u8],
    dups: &'a [u8],
}

impl Sack<'static> {
    /// A SACK carrying only a cumulative ack, for the ack a SHUTDOWN chunk carries (RFC 9260 §9.2).
    pub fn cum_only(cum_tsn: Tsn, a_rwnd: u32) -> Self {
        Sack {
            cum_tsn,
            a_rwnd,
            gaps: &[],
            dups: &[],
        }
    }
}

impl<'a> Sack<'a> {
    /// Number of gap ack blocks.
    pub fn num_gaps(&self) -> usize {
        self.gaps.len() / 4
    }

    /// Gap ack blocks as (start, end) offsets from the cumulative TSN, as sent (not validated: blocks may be
    /// out of order, overlapping or have start > end, and the association must cope).
    pub fn gap_blocks(&self) -> impl Iterator<Item = (u16, u16)> + 'a {
        self.gaps.chunks_exact(4).map(|b| (be16(b, 0), be16(b, 2)))
    }

    /// Duplicate TSNs reported by the receiver.
    pub fn dup_tsns(&self) -> impl Iterator<Item = Tsn> + 'a {
        self.dups.chunks_exact(4).map(|b| Tsn(be32(b, 0)))
    }
}

/// One chunk of a packet, borrowed from it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Chunk<'a> {
    /// DATA (0).
    Data(Data<'a>),
    /// INIT (1).
    Init(Init<'a>),
    /// INIT ACK (2).
    InitAck(Init<'a>),
    /// SACK (3).
    Sack(Sack<'a>),
    /// HEARTBEAT (4): its parameters (the heartbeat info TLV), to be echoed unchanged.
    Heartbeat(&'a [u8]),
    /// HEARTBEAT ACK (5): the echoed parameters.
    HeartbeatAck(&'a [u8]),
    /// ABORT (6).
    Abort {
        /// T bit: the verification tag is the receiver's peer tag, reflected.
        reflected: bool,
        /// Error causes (TLVs).
        causes: &'a [u8],
    },
    /// SHUTDOWN (7).
    Shutdown {
        /// The sender's cumulative TSN ack.
        cum_tsn: Tsn,
    },
    /// SHUTDOWN ACK (8).
    ShutdownAck,
    /// ERROR (9): error causes (TLVs).
    Error(&'a [u8]),
    /// COOKIE ECHO (10): the state cookie, opaque to everyone but its maker.
    CookieEcho(&'a [u8]),
    /// COOKIE ACK (11).
    CookieAck,
    /// SHUTDOWN COMPLETE (14).
    ShutdownComplete {
        /// T bit, as for ABORT.
        reflected: bool,
    },
    /// A chunk type this stack does not implement; `raw` is the whole chunk, header included, unpadded.
    Unknown {
        /// The chunk type.
        kind: u8,
        /// The whole chunk as received (header and value, without padding).
        raw: &'a [u8],
    },
}

/// What RFC 9260 §3.2 says to do with a chunk of unknown type, from its two high bits.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum UnknownAction {
    /// 00: stop processing the packet, discard it.
    Stop,
    /// 01: stop processing, and report it in an ERROR chunk.
    StopAndReport,
    /// 10: skip this chunk.
    Skip,
    /// 11: skip, and report it in an ERROR chunk.
    SkipAndReport,
}

impl UnknownAction {
    /// The action encoded in the type's upper two bits.
    pub const fn of(kind: u8) -> Self {
        match kind >> 6 {
            0 => UnknownAction::Stop,
            1 => UnknownAction::StopAndReport,
            2 => UnknownAction::Skip,
            _ => UnknownAction::SkipAndReport,
        }
    }
    /// Whether processing continues after the chunk.
    pub const fn skips(self) -> bool {
        matches!(self, UnknownAction::Skip | UnknownAction::SkipAndReport)
    }
    /// Whether the chunk is reported to the sender.
    pub const fn reports(self) -> bool {
        matches!(
            self,
            UnknownAction::StopAndReport | UnknownAction::SkipAndReport
        )
    }
}

impl<'a> Chunk<'a> {
    /// The chunk type code.
    pub fn kind(&self) -> u8 {
        match self {
            Chunk::Data(_) => kind::DATA,
            Chunk::Init(_) => kind::INIT,
            Chunk::InitAck(_) => kind::INIT_ACK,
            Chunk::Sack(_) => kind::SACK,
            Chunk::Heartbeat(_) => kind::HEARTBEAT,
            Chunk::HeartbeatAck(_) => kind::HEARTBEAT_ACK,
            Chunk::Abort { .. } => kind::ABORT,
            Chunk::Shutdown { .. } => kind::SHUTDOWN,
            Chunk::ShutdownAck => kind::SHUTDOWN_ACK,
            Chunk::Error(_) => kind::ERROR,
            Chunk::CookieEcho(_) => kind::COOKIE_ECHO,
            Chunk::CookieAck => kind::COOKIE_ACK,
            Chunk::ShutdownComplete { .. } => kind::SHUTDOWN_COMPLETE,
            Chunk::Unknown { kind, .. } => *kind,
        }
    }

    /// Parses one chunk from its type, flags and value (the bytes after the 4-byte chunk header, up to the
    /// chunk length, unpadded). `raw` is the whole chunk for [`Chunk::Unknown`].
    fn parse(kind: u8, flags: u8, value: &'a [u8], raw: &'a [u8]) -> Result<Self, WireError> {
        let exact = |n: usize| {
            if value.len() == n {
                Ok(())
            } else {
                Err(WireError::BadChunk)
            }
        };
        Ok(match kind {
            kind::DATA => {
                if value.len() < DATA_HEADER_LEN - 4 {
                    return Err(WireError::BadChunk);
                }
                Chunk::Data(Data {
                    flags,
                    tsn: Tsn(be32(value, 0)),
                    stream: be16(value, 4),
                    ssn: be16(value, 6),
                    ppid: be32(value, 8),
                    payload: &value[12..],
                })
            }
            kind::INIT | kind::INIT_ACK => {
                if value.len() < INIT_FIXED_LEN - 4 {
                    return Err(WireError::BadChunk);
                }
                let init = Init {
                    initiate_tag: be32(value, 0),
                    a_rwnd: be32(value, 4),
                    out_streams: be16(value, 8),
                    in_streams: be16(value, 10),
                    initial_tsn: Tsn(be32(value, 12)),
                    params: &value[16..],
                };
                if kind == kind::INIT {
                    Chunk::Init(init)
                } else {
                    Chunk::InitAck(init)
                }
            }
            kind::SACK => {
                if value.len() < SACK_FIXED_LEN - 4 {
                    return Err(WireError::BadChunk);
                }
                let gaps = usize::from(be16(value, 8)) * 4;
                let dups = usize::from(be16(value, 10)) * 4;
                let body = &value[12..];
                if gaps + dups > body.len() {
                    return Err(WireError::BadChunk);
                }
                Chunk::Sack(Sack {
                    cum_tsn: Tsn(be32(value, 0)),
                    a_rwnd: be32(value, 4),
                    gaps: &body[..gaps],
                    dups: &body[gaps..gaps + dups],
                })
            }
            kind::HEARTBEAT => Chunk::Heartbeat(value),
            kind::HEARTBEAT_ACK => Chunk::HeartbeatAck(value),
            kind::ABORT => Chunk::Abort {
                reflected: flags & FLAG_T != 0,
                causes: value,
            },
            kind::SHUTDOWN => {
                exact(4)?;
                Chunk::Shutdown {
                    cum_tsn: Tsn(be32(value, 0)),
                }
            }
            kind::SHUTDOWN_ACK => {
                exact(0)?;
                Chunk::ShutdownAck
            }
            kind::ERROR => Chunk::Error(value),
            kind::COOKIE_ECHO => Chunk::CookieEcho(value),
            kind::COOKIE_ACK => {
                exact(0)?;
                Chunk::CookieAck
            }
            kind::SHUTDOWN_COMPLETE => {
                exact(0)?;
                Chunk::ShutdownComplete {
                    reflected: flags & FLAG_T != 0,
                }
            }
            _ => Chunk::Unknown { kind, raw },
        })
    }
}

/// Iterates over the chunks of a packet (the bytes after the common header).
///
/// Yields `Err` once for the first malformed chunk and then stops. A last chunk whose padding is missing is
/// accepted, since the padding carries nothing.
#[derive(Clone, Debug)]
pub struct ChunkIter<'a> {
    rest: &'a [u8],
}

impl<'a> ChunkIter<'a> {
    /// Iterates over `chunks`, the bytes after a packet's common header.
    pub fn new(chunks: &'a [u8]) -> Self {
        ChunkIter { rest: chunks }
    }
}

impl<'a> Iterator for ChunkIter<'a> {
    type Item = Result<Chunk<'a>, WireError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        // Any failure ends the iteration: there is no way to find the next chunk boundary.
        let b = std::mem::take(&mut self.rest);
        Some(
            split_item(b, WireError::BadChunkLength).and_then(|(raw, rest)| {
                let chunk = Chunk::parse(raw[0], raw[1], &raw[4..], raw)?;
                self.rest = rest;
                Ok(chunk)
            }),
        )
    }
}

/// What to put in an outgoing DATA chunk.
#[derive(Copy, Clone, Debug)]
pub struct DataOut<'a> {
    /// Flag byte.
    pub flags: u8,
    /// TSN.
    pub tsn: Tsn,
    /// Stream.
    pub stream: u16,
    /// Stream sequence number.
    pub ssn: u16,
    /// Payload protocol identifier.
    pub ppid: u32,
    /// User data (its first part, for [`write_data_parts`]).
    pub payload: &'a [u8],
}

/// Bytes a DATA chunk with `payload_len` bytes of user data takes on the wire, padding included.
pub const fn data_chunk_len(payload_len: usize) -> usize {
    pad4(DATA_HEADER_LEN + payload_len)
}

/// Writes a DATA chunk.
pub fn write_data(w: &mut Writer<'_>, d: &DataOut<'_>) -> Result<(), WireError> {
    write_data_parts(w, d, &[])
}

/// Writes a DATA chunk whose user data is `d.payload` followed by `rest`: a chunk of a message kept in two
/// parts (a head of one association's own and a shared body), written without joining them first.
pub fn write_data_parts(w: &mut Writer<'_>, d: &DataOut<'_>, rest: &[u8]) -> Result<(), WireError> {
    if w.remaining() < data_chunk_len(d.payload.len() + rest.len()) {
        return Err(WireError::NoRoom);
    }
    let m = w.begin_chunk(kind::DATA, d.flags)?;
    w.put_u32(d.tsn.0)?;
    w.put_u16(d.stream)?;
    w.put_u16(d.ssn)?;
    w.put_u32(d.ppid)?;
    w.put(d.payload)?;
    w.put(rest)?;
    w.end_chunk(m)
}

/// The fixed fields of an INIT or INIT ACK to write; parameters follow through the returned mark.
#[derive(Copy, Clone, Debug)]
pub struct InitOut {
    /// Our initiate tag.
    pub initiate_tag: u32,
    /// Our receive window.
    pub a_rwnd: u32,
    /// Outbound streams requested.
    pub out_streams: u16,
    /// Inbound streams allowed.
    pub in_streams: u16,
    /// Our initial TSN.
    pub initial_tsn: Tsn,
}

/// Opens an INIT (`kind::INIT`) or INIT ACK chunk and writes its fixed fields. The caller appends parameters
/// and closes it with [`Writer::end_chunk`].
pub fn begin_init(
    w: &mut Writer<'_>,
    chunk_kind: u8,
    i: &InitOut,
) -> Result<super::wire::Mark, WireError> {
    let m = w.begin_chunk(chunk_kind, 0)?;
    w.put_u32(i.initiate_tag)?;
    w.put_u32(i.a_rwnd)?;
    w.put_u16(i.out_streams)?;
    w.put_u16(i.in_streams)?;
    w.put_u32(i.initial_tsn.0)?;
    Ok(m)
}

/// Writes a SACK chunk. Gap blocks are (start, end) offsets from `cum_tsn`; as many as fit are written
/// (RFC 9260 §6.2: as many as fit in the PMTU), then as many duplicate TSNs as fit.
pub fn write_sack(
    w: &mut Writer<'_>,
    cum_tsn: Tsn,
    a_rwnd: u32,
    gaps: &[(u16, u16)],
    dups: &[Tsn],
) -> Result<(), WireError> {
    let room = w
        .remaining()
        .checked_sub(SACK_FIXED_LEN)
        .ok_or(WireError::NoRoom)?;
    let ngaps = gaps.len().min(room / 4).min(usize::from(u16::MAX));
    let ndups = dups
        .len()
        .min((room - ngaps * 4) / 4)
        .min(usize::from(u16::MAX));
    let m = w.begin_chunk(kind::SACK, 0)?;
    w.put_u32(cum_tsn.0)?;
    w.put_u32(a_rwnd)?;
    w.put_u16(ngaps as u16)?;
    w.put_u16(ndups as u16)?;
    for &(s, e) in &gaps[..ngaps] {
        w.put_u16(s)?;
        w.put_u16(e)?;
    }
    for d in &dups[..ndups] {
        w.put_u32(d.0)?;
    }
    w.end_chunk(m)
}

/// Writes a chunk whose value is `value` verbatim (HEARTBEAT, HEARTBEAT ACK, COOKIE ECHO, ERROR, ABORT).
pub fn write_raw(
    w: &mut Writer<'_>,
    chunk_kind: u8,
    flags: u8,
    value: &[u8],
) -> Result<(), WireError> {
    if w.remaining() < pad4(4 + value.len()) {
        return Err(WireError::NoRoom);
    }
    let m = w.begin_chunk(chunk_kind, flags)?;
    w.put(value)?;
    w.end_chunk(m)
}

/// Writes a chunk with no value (SHUTDOWN ACK, COOKIE ACK, SHUTDOWN COMPLETE).
pub fn write_empty(w: &mut Writer<'_>, chunk_kind: u8, flags: u8) -> Result<(), WireError> {
    let m = w.begin_chunk(chunk_kind, flags)?;
    w.end_chunk(m)
}

/// Writes a SHUTDOWN chunk carrying our cumulative TSN ack.
pub fn write_shutdown(w: &mut Writer<'_>, cum_tsn: Tsn) -> Result<(), WireError> {
    let m = w.begin_chunk(kind::SHUTDOWN, 0)?;
    w.put_u32(cum_tsn.0)?;
    w.end_chunk(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sctp::wire::{HEADER_LEN, Header, Packet};

    fn packet(f: impl FnOnce(&mut Writer<'_>)) -> Vec<u8> {
        let mut buf = vec![0u8; 1500];
        let mut w = Writer::new(
            &mut buf,
            Header {
                src_port: 1,
                dst_port: 2,
                vtag: 3,
            },
        )
        .unwrap();
        f(&mut w);
        let n = w.finish();
        buf.truncate(n);
        buf
    }

    fn chunks(p: &[u8]) -> Vec<Result<Chunk<'_>, WireError>> {
        ChunkIter::new(&p[HEADER_LEN..]).collect()
    }

    #[test]
    fn data_round_trip() {
        let p = packet(|w| {
            write_data(
                w,
                &DataOut {
                    flags: data_flags::BEGIN | data_flags::END | data_flags::UNORDERED,
                    tsn: Tsn(77),
                    stream: 3,
                    ssn: 9,
                    ppid: 51,
                    payload: b"hello",
                },
            )
            .unwrap();
        });
        assert_eq!(p.len(), HEADER_LEN + 24);
        assert!(Packet::new_checked(&p).unwrap().verify_checksum());
        let c = chunks(&p);
        assert_eq!(c.len(), 1);
        let Ok(Chunk::Data(d)) = c[0] else {
            panic!("{:?}", c[0])
        };
        assert!(d.begin() && d.end() && d.unordered() && !d.immediate());
        assert_eq!(
            (d.tsn, d.stream, d.ssn, d.ppid, d.payload),
            (Tsn(77), 3, 9, 51, &b"hello"[..])
        );
    }

    #[test]
    fn sack_round_trip_and_truncation() {
        let p = packet(|w| write_sack(w, Tsn(10), 5000, &[(2, 3), (5, 9)], &[Tsn(4)]).unwrap());
        let c = chunks(&p);
        let Ok(Chunk::Sack(s)) = c[0] else { panic!() };
        assert_eq!(s.cum_tsn, Tsn(10));
        assert_eq!(s.a_rwnd, 5000);
        assert_eq!(s.gap_blocks().collect::<Vec<_>>(), vec![(2, 3), (5, 9)]);
        assert_eq!(s.dup_tsns().collect::<Vec<_>>(), vec![Tsn(4)]);
        // Claim one more gap block than present: rejected.
        let mut bad = p.clone();
        bad[HEADER_LEN + 13] = 3;
        assert_eq!(chunks(&bad), vec![Err(WireError::BadChunk)]);
    }

    #[test]
    fn sack_truncates_to_room() {
        let mut buf = [0u8; 12 + 16 + 8];
        let mut w = Writer::new(
            &mut buf,
            Header {
                src_port: 1,
                dst_port: 2,
                vtag: 3,
            },
        )
        .unwrap();
        let gaps = [(1u16, 1u16), (3, 3), (5, 5)];
        write_sack(&mut w, Tsn(0), 1, &gaps, &[Tsn(9)]).unwrap();
        let n = w.finish();
        let c = chunks(&buf[..n]);
        let Ok(Chunk::Sack(s)) = c[0] else { panic!() };
        assert_eq!(s.num_gaps(), 2);
        assert_eq!(s.dup_tsns().count(), 0);
    }

    #[test]
    fn bundles_and_fixed_chunks() {
        let p = packet(|w| {
            write_empty(w, kind::COOKIE_ACK, 0).unwrap();
            write_shutdown(w, Tsn(5)).unwrap();
            write_raw(w, kind::HEARTBEAT, 0, &[0, 1, 0, 6, 0xaa, 0xbb]).unwrap();
            write_empty(w, kind::SHUTDOWN_COMPLETE, FLAG_T).unwrap();
            write_raw(w, 0xc1, 0x5, &[1, 2, 3, 4, 5]).unwrap();
        });
        let c: Vec<_> = chunks(&p).into_iter().map(Result::unwrap).collect();
        assert_eq!(c[0], Chunk::CookieAck);
        assert_eq!(c[1], Chunk::Shutdown { cum_tsn: Tsn(5) });
        assert_eq!(c[2], Chunk::Heartbeat(&[0, 1, 0, 6, 0xaa, 0xbb]));
        assert_eq!(c[3], Chunk::ShutdownComplete { reflected: true });
        let Chunk::Unknown { kind, raw } = c[4] else {
            panic!()
        };
        assert_eq!((kind, raw.len()), (0xc1, 9));
        assert_eq!(UnknownAction::of(kind), UnknownAction::SkipAndReport);
    }

    #[test]
    fn init_round_trip() {
        let p = packet(|w| {
            let m = begin_init(
                w,
                kind::INIT,
                &InitOut {
                    initiate_tag: 0x1234,
                    a_rwnd: 65536,
                    out_streams: 10,
                    in_streams: 2048,
                    initial_tsn: Tsn(99),
                },
            )
            .unwrap();
            w.put(&[0, 9, 0, 8, 0, 0, 0, 1]).unwrap();
            w.end_chunk(m).unwrap();
        });
        let Ok(Chunk::Init(i)) = chunks(&p)[0] else {
            panic!()
        };
        assert_eq!(
            (
                i.initiate_tag,
                i.a_rwnd,
                i.out_streams,
                i.in_streams,
                i.initial_tsn
            ),
            (0x1234, 65536, 10, 2048, Tsn(99))
        );
        assert_eq!(i.params.len(), 8);
    }

    #[test]
    fn malformed_lengths() {
        // Zero-length chunk.
        assert_eq!(chunks(&[0; 16][..]), vec![Err(WireError::BadChunkLength)]);
        // Length past the end.
        let mut p = packet(|w| write_empty(w, kind::COOKIE_ACK, 0).unwrap());
        p[HEADER_LEN + 3] = 8;
        assert_eq!(chunks(&p), vec![Err(WireError::BadChunkLength)]);
        // Fixed-size chunk with the wrong length.
        let mut p = packet(|w| write_shutdown(w, Tsn(1)).unwrap());
        p[HEADER_LEN + 3] = 6;
        assert_eq!(chunks(&p), vec![Err(WireError::BadChunk)]);
        // Short DATA.
        let p = packet(|w| write_raw(w, kind::DATA, 3, &[0; 8]).unwrap());
        assert_eq!(chunks(&p), vec![Err(WireError::BadChunk)]);
        // Three trailing bytes after a chunk.
        let mut p = packet(|w| write_empty(w, kind::COOKIE_ACK, 0).unwrap());
        p.extend_from_slice(&[1, 2, 3]);
        assert_eq!(chunks(&p)[1], Err(WireError::BadChunkLength));
    }

    #[test]
    fn missing_final_padding_is_accepted() {
        let p = packet(|w| write_raw(w, kind::HEARTBEAT, 0, &[0, 1, 0, 5, 9]).unwrap());
        let unpadded = &p[..p.len() - 3];
        assert_eq!(
            chunks(unpadded),
            vec![Ok(Chunk::Heartbeat(&[0, 1, 0, 5, 9]))]
        );
    }
}
