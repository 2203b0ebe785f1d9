//! What a connection to the chat port carries after its Noise handshake: chat frames ([`super::frame`],
//! types 1 to 15) or a file transfer's frames ([`crate::transfer::frame`], types 16 and up), with one
//! framing. A connection starts with HELLO either way; the first frame after it says which kind of
//! connection it is, and the peer refuses the other kind on it from then on.
//!
//! One reader for both, so the receiver needs to know nothing in advance: a sender opens a connection to the
//! chat port for a transfer exactly as for a message, and the bound on what is buffered is the larger of the
//! two frame kinds' (one DATA frame, 64 KiB and its header).

use super::frame::{self, Body, FrameError, Reassembler};
use crate::transfer::frame as file;

/// Lowest type byte of a file transfer's frames.
const FIRST_FILE_TYPE: u8 = 16;

/// A frame from a connection to the chat port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wire {
    /// A chat frame (HELLO, MSG, ACK).
    Chat(frame::Frame),
    /// A file transfer's frame (OFFER, ENTRY, ACCEPT, DATA, VERIFIED, DONE, FAIL).
    File(file::Frame),
}

impl Body for Wire {
    const MAX: usize = if frame::MAX_FRAME > file::MAX_FRAME {
        frame::MAX_FRAME
    } else {
        file::MAX_FRAME
    };

    fn parse_body(b: &[u8]) -> Result<Wire, FrameError> {
        match b.first() {
            Some(&t) if t >= FIRST_FILE_TYPE => file::Frame::parse(b).map(Wire::File),
            _ => frame::Frame::parse(b).map(Wire::Chat),
        }
    }
}

/// Reassembles either kind of frame from a connection's plaintext.
pub type WireReader = Reassembler<Wire>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nick::Nick;
    use crate::transfer::frame::TransferId;

    #[test]
    fn both_kinds_read_from_one_stream() {
        let hello = frame::Frame::Hello {
            nick: Nick::new("ann").unwrap(),
            instance: 7,
        };
        let offer = file::Frame::Offer {
            id: TransferId([3; 16]),
            total: 10,
            count: 1,
            name: "notes.txt".into(),
        };
        let mut bytes = Vec::new();
        hello.encode(&mut bytes);
        offer.encode(&mut bytes);
        let mut r = WireReader::default();
        let mut out = Vec::new();
        // One byte at a time: the framing is shared, so a split anywhere is reassembled.
        for b in &bytes {
            r.push(std::slice::from_ref(b), &mut out).unwrap();
        }
        assert_eq!(out, vec![Wire::Chat(hello), Wire::File(offer)]);
        assert!(!r.is_partial());
    }

    #[test]
    fn a_data_frame_fits_and_a_longer_length_is_refused() {
        let mut bytes = Vec::new();
        let n = file::encode_data(&mut bytes, 0, 0, &vec![9; file::MAX_DATA]);
        assert_eq!(n, file::MAX_DATA);
        let mut out = Vec::new();
        WireReader::default().push(&bytes, &mut out).unwrap();
        assert!(
            matches!(&out[..], [Wire::File(file::Frame::Data { bytes, .. })] if bytes.len() == n)
        );
        let too_long = ((Wire::MAX + 1) as u32).to_be_bytes();
        let e = WireReader::default().push(&too_long, &mut out);
        assert_eq!(e, Err(FrameError::Oversized));
    }

    #[test]
    fn an_unknown_type_is_malformed_on_either_side_of_the_split() {
        for t in [0u8, 15, 23, 255] {
            let bytes = [0, 0, 0, 1, t];
            let e = WireReader::default().push(&bytes, &mut Vec::new());
            assert_eq!(e, Err(FrameError::Malformed), "type {t}");
        }
    }
}
