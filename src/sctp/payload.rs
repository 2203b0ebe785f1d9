//! A queued message's bytes, owned by one association or shared by many.
//!
//! `mpd` sends the same roster page or delta to every client. Copying it into each association's queue made
//! memory and copying grow as clients × roster: a storm of 5 000 clients held about 1 GB, most of it copies
//! of the same pages, and the copies and page faults were a third of the daemon's CPU. A shared payload is
//! encoded once and referenced by every association that still has it queued or in flight.

use std::ops::Deref;
use std::sync::Arc;

/// A message handed to [`crate::sctp::Endpoint::send_owned`] or [`crate::sctp::Endpoint::try_send`].
///
/// `Arc` rather than `Rc` keeps endpoints `Send` (benches move them to pinned threads); the count is touched
/// once per association per message, far from the per-byte work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Bytes only this association holds.
    Owned(Vec<u8>),
    /// Bytes several associations hold; never copied by the send path.
    Shared(Arc<[u8]>),
}

impl Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Payload::Owned(v) => v,
            Payload::Shared(a) => a,
        }
    }
}

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Payload {
        Payload::Owned(v)
    }
}

impl From<Arc<[u8]>> for Payload {
    fn from(a: Arc<[u8]>) -> Payload {
        Payload::Shared(a)
    }
}

/// One DATA chunk's user data, kept until acknowledged: a whole owned message, or a window of a shared one
/// (so fragments of a shared page are not copied either).
#[derive(Debug)]
pub(crate) enum ChunkBytes {
    Owned(Box<[u8]>),
    Shared {
        buf: Arc<[u8]>,
        start: u32,
        len: u32,
    },
}

impl Deref for ChunkBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ChunkBytes::Owned(b) => b,
            ChunkBytes::Shared { buf, start, len } => {
                &buf[*start as usize..(*start + *len) as usize]
            }
        }
    }
}

impl ChunkBytes {
    /// The chunk for `payload[offset..offset + len]`: takes an owned message whole when the chunk is all of
    /// it, shares a shared one, and copies only a fragment of an owned one.
    pub(crate) fn cut(payload: &mut Payload, offset: usize, len: usize) -> ChunkBytes {
        match payload {
            Payload::Owned(v) if offset == 0 && len == v.len() => {
                ChunkBytes::Owned(std::mem::take(v).into_boxed_slice())
            }
            Payload::Owned(v) => ChunkBytes::Owned(v[offset..offset + len].into()),
            // Messages are bounded by `Config::max_message`, far below 4 GiB.
            Payload::Shared(a) => ChunkBytes::Shared {
                buf: Arc::clone(a),
                start: offset as u32,
                len: len as u32,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_whole_message_moves_and_fragments_copy() {
        let mut p = Payload::Owned(vec![1, 2, 3, 4]);
        let piece = ChunkBytes::cut(&mut p, 1, 2);
        assert_eq!(&*piece, &[2, 3]);
        assert_eq!(&*p, &[1, 2, 3, 4], "a fragment leaves the message whole");
        let whole = ChunkBytes::cut(&mut p, 0, 4);
        assert_eq!(&*whole, &[1, 2, 3, 4]);
        assert!(p.is_empty(), "the whole message moved out");
    }

    #[test]
    fn shared_fragments_reference_one_buffer() {
        let a: Arc<[u8]> = Arc::from(&[9u8, 8, 7, 6, 5][..]);
        let mut p = Payload::from(Arc::clone(&a));
        let x = ChunkBytes::cut(&mut p, 0, 3);
        let y = ChunkBytes::cut(&mut p, 3, 2);
        assert_eq!((&*x, &*y), (&[9u8, 8, 7][..], &[6u8, 5][..]));
        assert_eq!(Arc::strong_count(&a), 4, "a, the payload and both chunks");
        drop((x, y, p));
        assert_eq!(Arc::strong_count(&a), 1);
    }
}
