//! A queued message's bytes, owned by one association, shared by many, or both: a small head of its own
//! followed by a shared body.
//!
//! `mpd` sends the same roster page or delta to every client. Copying it into each association's queue made
//! memory and copying grow as clients × roster: a storm of 5 000 clients held about 1 GB, most of it copies
//! of the same pages, and the copies and page faults were a third of the daemon's CPU. A shared payload is
//! encoded once and referenced by every association that still has it queued or in flight.
//!
//! A sealed broadcast also needs a few bytes of each client's own in front of the shared body (its counter
//! and MAC, `crate::secure::broadcast`). Sent as a message of their own, they cost every client a second
//! DATA chunk, TSN and event; copied in front of the body, they cost a copy of the body per client. A
//! [`Payload::Headed`] message is the two parts as one user message: the head inline (no allocation), the
//! body referenced. Its chunks are cut at any offset like any message's; a chunk that starts in the head
//! keeps that part of the head inline and a window of the body, one after it a window of the body alone.
//!
//! Nothing here allocates per message but an owned fragment's copy; nothing panics on a range it checked.

use std::fmt;
use std::sync::Arc;

/// Most bytes a [`Head`] holds: enough for a broadcast's counter and MAC (25 bytes), and small enough that a
/// chunk holding a head and a body window stays 48 bytes, as a [`Payload`] does.
pub const HEAD_MAX: usize = 26;

/// A few bytes kept inline: the part of a [`Payload::Headed`] message that is this association's own.
#[derive(Copy, Clone)]
pub struct Head {
    len: u8,
    bytes: [u8; HEAD_MAX],
}

impl Head {
    /// A head of `b`, or `None` if it is longer than [`HEAD_MAX`].
    pub fn new(b: &[u8]) -> Option<Head> {
        let mut h = Head {
            len: u8::try_from(b.len()).ok()?,
            bytes: [0; HEAD_MAX],
        };
        h.bytes.get_mut(..b.len())?.copy_from_slice(b);
        Some(h)
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// How many bytes.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether it holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Its bytes `start..end` (within it) as a head of their own.
    fn window(&self, start: usize, end: usize) -> Head {
        let mut bytes = [0; HEAD_MAX];
        bytes[..end - start].copy_from_slice(&self.bytes[start..end]);
        Head {
            len: (end - start) as u8,
            bytes,
        }
    }
}

impl<const N: usize> From<[u8; N]> for Head {
    /// A head of an array whose size is checked at compile time.
    fn from(a: [u8; N]) -> Head {
        const { assert!(N <= HEAD_MAX, "a head holds at most HEAD_MAX bytes") };
        let mut bytes = [0; HEAD_MAX];
        bytes[..N].copy_from_slice(&a);
        Head {
            len: N as u8,
            bytes,
        }
    }
}

impl PartialEq for Head {
    fn eq(&self, other: &Head) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Head {}

impl fmt::Debug for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Head").field(&self.as_slice()).finish()
    }
}

/// A message handed to [`crate::sctp::Endpoint::send_owned`] or [`crate::sctp::Endpoint::try_send`].
///
/// `Arc` rather than `Rc` keeps endpoints `Send` (benches move them to pinned threads); the count is touched
/// once per association per message, far from the per-byte work. A message of two parts has no contiguous
/// bytes to borrow: read it with [`Payload::len`] and [`Payload::parts`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Bytes only this association holds.
    Owned(Vec<u8>),
    /// Bytes several associations hold; never copied by the send path.
    Shared(Arc<[u8]>),
    /// `head` then `body`, one message: a few bytes of this association's own in front of bytes several
    /// associations hold. Neither part is copied by the send path but for the head's part of one chunk.
    Headed {
        /// This association's bytes, first.
        head: Head,
        /// The shared bytes that follow.
        body: Arc<[u8]>,
    },
}

// Queued messages and chunks in flight are many: keep them small (see `HEAD_MAX`).
const _: () = assert!(std::mem::size_of::<Payload>() <= 48);
const _: () = assert!(std::mem::size_of::<ChunkBytes>() <= 48);

impl Payload {
    /// Bytes in the message.
    pub fn len(&self) -> usize {
        match self {
            Payload::Owned(v) => v.len(),
            Payload::Shared(a) => a.len(),
            Payload::Headed { head, body } => head.len() + body.len(),
        }
    }

    /// Whether the message has no byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes of one part, when the message is one part; `None` for [`Payload::Headed`].
    pub fn as_contiguous(&self) -> Option<&[u8]> {
        match self {
            Payload::Owned(v) => Some(v),
            Payload::Shared(a) => Some(a),
            Payload::Headed { .. } => None,
        }
    }

    /// The message's bytes `start..start + len` as two slices, in order: the part in the head and the part in
    /// the body (the first alone for a message of one part; either may be empty). `None` if the range is not
    /// within the message.
    pub fn parts(&self, start: usize, len: usize) -> Option<(&[u8], &[u8])> {
        let end = start.checked_add(len)?;
        match self {
            Payload::Owned(v) => Some((v.get(start..end)?, &[])),
            Payload::Shared(a) => Some((a.get(start..end)?, &[])),
            Payload::Headed { head, body } => {
                let h = head.as_slice();
                let split = h.len();
                if end > split + body.len() {
                    return None;
                }
                let head_part = h.get(start.min(split)..end.min(split))?;
                let body_part = body.get(start.saturating_sub(split)..end.saturating_sub(split))?;
                Some((head_part, body_part))
            }
        }
    }

    /// The whole message in one buffer (a copy; for tests and slow paths).
    pub fn to_vec(&self) -> Vec<u8> {
        let (a, b) = self.parts(0, self.len()).unwrap_or_default();
        [a, b].concat()
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

/// One DATA chunk's user data, kept until acknowledged: a whole owned message, a window of a shared one (so
/// fragments of a shared page are not copied either), or the start of a headed one.
#[derive(Debug)]
pub(crate) enum ChunkBytes {
    Owned(Box<[u8]>),
    Shared {
        buf: Arc<[u8]>,
        start: u32,
        len: u32,
    },
    /// A chunk that starts in a [`Payload::Headed`] message's head: those head bytes (to the head's end or
    /// the chunk's), then the body's first `body_len` bytes.
    Headed {
        head: Head,
        body: Arc<[u8]>,
        body_len: u32,
    },
}

impl ChunkBytes {
    /// Bytes of user data in the chunk.
    pub(crate) fn len(&self) -> usize {
        match self {
            ChunkBytes::Owned(b) => b.len(),
            ChunkBytes::Shared { len, .. } => *len as usize,
            ChunkBytes::Headed { head, body_len, .. } => head.len() + *body_len as usize,
        }
    }

    /// The chunk's user data as two slices to write one after the other (the second empty but for a chunk
    /// that starts in a head).
    pub(crate) fn parts(&self) -> (&[u8], &[u8]) {
        match self {
            ChunkBytes::Owned(b) => (b, &[]),
            ChunkBytes::Shared { buf, start, len } => {
                (&buf[*start as usize..(*start + *len) as usize], &[])
            }
            ChunkBytes::Headed {
                head,
                body,
                body_len,
            } => (head.as_slice(), &body[..*body_len as usize]),
        }
    }

    /// The chunk for `payload`'s bytes `offset..offset + len`, a range within it: takes the message whole
    /// when the chunk is all of it, shares a shared body, and copies only a fragment of an owned message or
    /// the head bytes of a chunk that starts in a head.
    pub(crate) fn cut(payload: &mut Payload, offset: usize, len: usize) -> ChunkBytes {
        debug_assert!(offset + len <= payload.len());
        // Messages are bounded by `Config::max_message`, far below 4 GiB.
        match payload {
            Payload::Owned(v) if offset == 0 && len == v.len() => {
                ChunkBytes::Owned(std::mem::take(v).into_boxed_slice())
            }
            Payload::Owned(v) => ChunkBytes::Owned(v[offset..offset + len].into()),
            Payload::Shared(a) => ChunkBytes::Shared {
                buf: Arc::clone(a),
                start: offset as u32,
                len: len as u32,
            },
            Payload::Headed { head, body } => {
                let split = head.len();
                if offset >= split {
                    return ChunkBytes::Shared {
                        buf: Arc::clone(body),
                        start: (offset - split) as u32,
                        len: len as u32,
                    };
                }
                let end = offset + len;
                ChunkBytes::Headed {
                    head: head.window(offset, end.min(split)),
                    body: Arc::clone(body),
                    body_len: end.saturating_sub(split) as u32,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes(c: &ChunkBytes) -> Vec<u8> {
        let (a, b) = c.parts();
        assert_eq!(a.len() + b.len(), c.len());
        [a, b].concat()
    }

    #[test]
    fn owned_whole_message_moves_and_fragments_copy() {
        let mut p = Payload::Owned(vec![1, 2, 3, 4]);
        let piece = ChunkBytes::cut(&mut p, 1, 2);
        assert_eq!(bytes(&piece), [2, 3]);
        assert_eq!(
            p.to_vec(),
            [1, 2, 3, 4],
            "a fragment leaves the message whole"
        );
        let whole = ChunkBytes::cut(&mut p, 0, 4);
        assert_eq!(bytes(&whole), [1, 2, 3, 4]);
        assert!(p.is_empty(), "the whole message moved out");
    }

    #[test]
    fn shared_fragments_reference_one_buffer() {
        let a: Arc<[u8]> = Arc::from(&[9u8, 8, 7, 6, 5][..]);
        let mut p = Payload::from(Arc::clone(&a));
        let x = ChunkBytes::cut(&mut p, 0, 3);
        let y = ChunkBytes::cut(&mut p, 3, 2);
        assert_eq!((bytes(&x), bytes(&y)), (vec![9u8, 8, 7], vec![6u8, 5]));
        assert_eq!(Arc::strong_count(&a), 4, "a, the payload and both chunks");
        drop((x, y, p));
        assert_eq!(Arc::strong_count(&a), 1);
    }

    #[test]
    fn heads_hold_at_most_head_max_bytes() {
        assert_eq!(Head::new(&[7; HEAD_MAX]).map(|h| h.len()), Some(HEAD_MAX));
        assert!(Head::new(&[7; HEAD_MAX + 1]).is_none());
        assert!(Head::new(&[]).is_some_and(|h| h.is_empty()));
        assert_eq!(Head::from([1u8, 2, 3]), Head::new(&[1, 2, 3]).unwrap());
        assert_ne!(Head::from([1u8, 2]), Head::from([1u8, 2, 0]));
    }

    /// A headed message's parts, over every range: the same bytes as its concatenation, split at the head's
    /// end, and `None` past the end.
    #[test]
    fn headed_parts_split_at_the_head() {
        let body: Arc<[u8]> = Arc::from(&[10u8, 11, 12, 13][..]);
        let p = Payload::Headed {
            head: Head::from([1u8, 2, 3]),
            body,
        };
        let all = [1u8, 2, 3, 10, 11, 12, 13];
        assert_eq!(p.len(), 7);
        assert_eq!(p.as_contiguous(), None);
        for start in 0..=7 {
            for len in 0..=7 - start {
                let (a, b) = p.parts(start, len).unwrap();
                assert_eq!([a, b].concat(), &all[start..start + len]);
                assert_eq!(a.len(), 3usize.saturating_sub(start).min(len));
            }
            assert_eq!(p.parts(start, 8 - start), None);
        }
        assert_eq!(p.parts(usize::MAX, 2), None);
        assert_eq!(p.to_vec(), all);
    }

    /// Chunks of a headed message, cut at every pair of boundaries: one starting in the head keeps its head
    /// bytes and a window of the body from 0; one starting on the head's end or after it is a window of the
    /// body alone. The body is never copied: every chunk references it.
    #[test]
    fn headed_chunks_across_the_boundary() {
        let body: Arc<[u8]> = Arc::from(&[10u8, 11, 12, 13, 14][..]);
        let all = [1u8, 2, 3, 10, 11, 12, 13, 14];
        for first in 1..all.len() {
            let mut p = Payload::Headed {
                head: Head::from([1u8, 2, 3]),
                body: Arc::clone(&body),
            };
            let x = ChunkBytes::cut(&mut p, 0, first);
            let y = ChunkBytes::cut(&mut p, first, all.len() - first);
            assert_eq!(bytes(&x), &all[..first]);
            assert_eq!(bytes(&y), &all[first..]);
            assert!(matches!(x, ChunkBytes::Headed { .. }));
            assert_eq!(
                matches!(y, ChunkBytes::Shared { .. }),
                first >= 3,
                "a chunk from the head's end on is the body's alone ({first})"
            );
            assert_eq!(
                Arc::strong_count(&body),
                4,
                "the body, the payload, two chunks"
            );
        }
        // The whole message as one chunk, and a chunk inside the head.
        let mut p = Payload::Headed {
            head: Head::from([1u8, 2, 3]),
            body: Arc::clone(&body),
        };
        assert_eq!(bytes(&ChunkBytes::cut(&mut p, 0, 8)), all);
        let inside = ChunkBytes::cut(&mut p, 1, 1);
        assert_eq!(inside.parts(), (&[2u8][..], &[][..]));
    }

    proptest! {
        /// Any split of the same bytes into a head and a body cuts into the same chunks as the bytes owned
        /// whole, at any chunk size.
        #[test]
        fn any_split_cuts_like_the_whole(
            all in proptest::collection::vec(any::<u8>(), 1..80),
            split in 0usize..=HEAD_MAX,
            frag in 1usize..40,
        ) {
            let split = split.min(all.len());
            let mut headed = Payload::Headed {
                head: Head::new(&all[..split]).unwrap(),
                body: Arc::from(&all[split..]),
            };
            let mut owned = Payload::Owned(all.clone());
            prop_assert_eq!(headed.len(), all.len());
            let mut at = 0;
            while at < all.len() {
                let take = frag.min(all.len() - at);
                let (a, b) = headed.parts(at, take).unwrap();
                prop_assert_eq!([a, b].concat(), &all[at..at + take]);
                let h = ChunkBytes::cut(&mut headed, at, take);
                let o = ChunkBytes::cut(&mut owned, at, take);
                prop_assert_eq!(bytes(&h), bytes(&o));
                at += take;
            }
        }
    }
}
