//! Every SCTP parser on arbitrary bytes: `Packet::new_checked`, `verify_checksum`, a full `ChunkIter` walk,
//! `TlvIter` + `InitParam::parse` over INIT / INIT ACK parameters, `TlvIter` over ABORT / ERROR causes and
//! HEARTBEAT info, and the SACK gap-block and duplicate-TSN iterators. Nothing may panic, and what parses
//! must be consistent with the bytes: the known chunks are re-encoded with the library's writers and compared
//! with the input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use multiproto::sctp::chunk::{
    self, Chunk, ChunkIter, DataOut, InitOut, UnknownAction, begin_init, write_data, write_sack,
    write_shutdown,
};
use multiproto::sctp::param::{InitParam, Tlv, TlvIter, UnknownParamAction, first_cause};
use multiproto::sctp::wire::{HEADER_LEN, Header, Packet, WireError, Writer, pad4};

/// Walks TLVs: each is consistent with the bytes, iteration stops after the first error, and it never yields
/// more items than 4-byte words.
fn walk_tlvs(bytes: &[u8], init_params: bool) {
    let mut n = 0;
    let mut off = 0;
    let mut it = TlvIter::new(bytes);
    while let Some(t) = it.next() {
        n += 1;
        assert!(n <= bytes.len() / 4 + 1);
        match t {
            Ok(t) => {
                check_tlv(bytes, off, t);
                off += pad4(t.raw.len());
                let _ = UnknownParamAction::of(t.kind).reports();
                if init_params {
                    match InitParam::parse(t) {
                        Ok(InitParam::Ipv4(_)) => assert_eq!(t.value.len(), 4),
                        Ok(InitParam::Ipv6(_)) => assert_eq!(t.value.len(), 16),
                        Ok(InitParam::CookiePreservative(_)) => assert_eq!(t.value.len(), 4),
                        Ok(InitParam::SupportedAddrTypes(l)) => assert_eq!(l.len() % 2, 0),
                        Ok(InitParam::StateCookie(v) | InitParam::Unrecognized(v)) => {
                            assert_eq!(v, t.value)
                        }
                        Ok(InitParam::Unknown(u)) => assert_eq!(u, t),
                        Ok(InitParam::HostName) => {}
                        Err(e) => assert_eq!(e, WireError::BadParamLength),
                    }
                }
            }
            Err(e) => {
                assert_eq!(e, WireError::BadParamLength);
                assert!(it.next().is_none(), "TlvIter continued after an error");
                break;
            }
        }
    }
}

fn check_tlv(bytes: &[u8], off: usize, t: Tlv<'_>) {
    assert_eq!(&bytes[off..off + t.raw.len()], t.raw);
    assert!(t.raw.len() >= 4);
    assert_eq!(&t.raw[4..], t.value);
    assert_eq!(u16::from_be_bytes([t.raw[0], t.raw[1]]), t.kind);
}

/// Re-encodes a known chunk with the library's writers; `None` for chunks without a structured writer.
fn reencode(c: &Chunk<'_>) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 70_000];
    let mut w = Writer::new(
        &mut buf,
        Header {
            src_port: 1,
            dst_port: 1,
            vtag: 0,
        },
    )
    .ok()?;
    match *c {
        Chunk::Data(d) => write_data(
            &mut w,
            &DataOut {
                flags: d.flags,
                tsn: d.tsn,
                stream: d.stream,
                ssn: d.ssn,
                ppid: d.ppid,
                payload: d.payload,
            },
        )
        .ok()?,
        Chunk::Init(i) | Chunk::InitAck(i) => {
            let m = begin_init(
                &mut w,
                c.kind(),
                &InitOut {
                    initiate_tag: i.initiate_tag,
                    a_rwnd: i.a_rwnd,
                    out_streams: i.out_streams,
                    in_streams: i.in_streams,
                    initial_tsn: i.initial_tsn,
                },
            )
            .ok()?;
            w.put(i.params).ok()?;
            w.end_chunk(m).ok()?;
        }
        Chunk::Sack(s) => {
            let gaps: Vec<_> = s.gap_blocks().collect();
            let dups: Vec<_> = s.dup_tsns().collect();
            write_sack(&mut w, s.cum_tsn, s.a_rwnd, &gaps, &dups).ok()?;
        }
        Chunk::Shutdown { cum_tsn } => write_shutdown(&mut w, cum_tsn).ok()?,
        _ => return None,
    }
    let n = w.len();
    Some(buf[HEADER_LEN..n].to_vec())
}

fn walk_chunks(bytes: &[u8]) {
    let mut n = 0;
    let mut off = 0;
    let mut it = ChunkIter::new(bytes);
    while let Some(c) = it.next() {
        n += 1;
        assert!(n <= bytes.len() / 4 + 1);
        let c = match c {
            Ok(c) => c,
            Err(e) => {
                assert!(matches!(e, WireError::BadChunkLength | WireError::BadChunk));
                assert!(it.next().is_none(), "ChunkIter continued after an error");
                break;
            }
        };
        let len = usize::from(u16::from_be_bytes([bytes[off + 2], bytes[off + 3]]));
        let raw = &bytes[off..off + len];
        assert_eq!(raw[0], c.kind());
        match c {
            Chunk::Init(i) | Chunk::InitAck(i) => walk_tlvs(i.params, true),
            Chunk::Abort { causes, .. } | Chunk::Error(causes) => {
                walk_tlvs(causes, false);
                if let Some((code, value)) = first_cause(causes) {
                    assert_eq!(u16::from_be_bytes([causes[0], causes[1]]), code);
                    assert!(value.len() + 4 <= causes.len());
                }
            }
            Chunk::Heartbeat(info) | Chunk::HeartbeatAck(info) => walk_tlvs(info, false),
            Chunk::Sack(s) => {
                assert_eq!(s.gap_blocks().count(), s.num_gaps());
                let gaps = usize::from(u16::from_be_bytes([raw[12], raw[13]]));
                let dups = usize::from(u16::from_be_bytes([raw[14], raw[15]]));
                assert_eq!(s.num_gaps(), gaps);
                assert_eq!(s.dup_tsns().count(), dups);
                assert!(16 + 4 * (gaps + dups) <= len);
            }
            Chunk::Data(d) => {
                let _ = (d.begin(), d.end(), d.unordered(), d.immediate());
                assert_eq!(d.payload.len() + chunk::DATA_HEADER_LEN, len);
            }
            Chunk::Unknown { kind, raw: r } => {
                assert_eq!(r, raw);
                let a = UnknownAction::of(kind);
                let _ = (a.skips(), a.reports());
            }
            Chunk::CookieEcho(v) => assert_eq!(v, &raw[4..]),
            _ => {}
        }
        if let Some(enc) = reencode(&c) {
            // Writers reproduce every field the parser keeps. They write zero flags except for DATA (the
            // parser ignores the others' flags), and a SACK may carry bytes after its blocks, which the
            // parser ignores and the writer does not reproduce, so its length field may differ.
            let unpadded = usize::from(u16::from_be_bytes([enc[2], enc[3]]));
            assert!(unpadded <= raw.len());
            assert_eq!(enc[0], raw[0]);
            if let Chunk::Data(_) = c {
                assert_eq!(enc[1], raw[1]);
            }
            let from = if let Chunk::Sack(_) = c { 4 } else { 2 };
            assert_eq!(
                &enc[from..unpadded],
                &raw[from..unpadded],
                "re-encoded chunk differs"
            );
            if !matches!(c, Chunk::Sack(_)) {
                assert_eq!(unpadded, raw.len());
            }
        }
        off += pad4(len);
    }
}

fuzz_target!(|data: &[u8]| {
    // The raw iterators on any bytes at all.
    walk_chunks(data);
    walk_tlvs(data, true);
    let Ok(p) = Packet::new_checked(data) else {
        assert!(data.len() < HEADER_LEN + 4 || data[0..2] == [0, 0] || data[2..4] == [0, 0]);
        return;
    };
    let _ = (p.src_port(), p.dst_port(), p.vtag(), p.checksum());
    let _ = p.verify_checksum();
    assert_eq!(p.chunk_bytes().len() + HEADER_LEN, data.len());
    walk_chunks(p.chunk_bytes());
});
