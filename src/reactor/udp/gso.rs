//! UDP segmentation offload (Linux `UDP_SEGMENT`, 4.18+) and its receive side (`UDP_GRO`, 5.0+).
//!
//! A segmented send hands the kernel several datagrams for one destination in one buffer, with their size
//! in a control message; the stack (IP output, loopback or NIC transmit, IP input, socket lookup) is crossed
//! once and the datagrams are cut apart at the end: by the NIC, by the driver, or just before the
//! receiving socket's queue. The receiver reads ordinary datagrams unless it asked for `UDP_GRO`, in which
//! case it may get the run back as one buffer plus the segment size, and cuts it itself.
//!
//! This module holds the byte layout of those control messages, the rule for which queued datagrams may
//! share a send, and the switch that turns GRO on; the sends and receives stay in the parent module.

use std::io;
use std::os::fd::AsFd;

use libc::{UDP_GRO, UDP_SEGMENT};

/// Most segments in one send: the kernel's `UDP_MAX_SEGMENTS`, 64 on every kernel with `UDP_SEGMENT`
/// (recent ones allow more).
pub const MAX_SEGMENTS: usize = 64;
/// Most payload bytes in one send: what fits an IPv6 payload length after the UDP header, with room to spare.
pub const MAX_BYTES: usize = 65_000;

/// Room for one control message: a `cmsghdr` and up to 8 bytes of data, 8-byte aligned.
pub type ControlBuf = [u64; 4];

/// An all-zero control buffer.
pub const EMPTY_CONTROL: ControlBuf = [0; 4];

const HDR_LEN: usize = std::mem::size_of::<libc::cmsghdr>();
// SAFETY: CMSG_LEN/CMSG_SPACE are plain arithmetic on their argument (libc marks them unsafe only because
// the C macros are).
const SEGMENT_CMSG_LEN: usize = unsafe { libc::CMSG_LEN(2) } as usize;
/// `msg_controllen` of a send that carries a segment size.
pub const SEGMENT_CONTROL_LEN: usize = unsafe { libc::CMSG_SPACE(2) } as usize;
const _: () = assert!(SEGMENT_CONTROL_LEN <= std::mem::size_of::<ControlBuf>());
// The data of a control message starts right after the aligned header; on Linux that header is 16 bytes
// (64-bit) or 12 (32-bit), and the byte-level encoding below relies on the 64-bit layout.
const _: () = assert!(HDR_LEN == 16 && SEGMENT_CMSG_LEN == HDR_LEN + 2);

/// Writes the `UDP_SEGMENT` control message for segments of `size` bytes into `buf`.
pub fn encode_segment_size(buf: &mut ControlBuf, size: u16) {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&(SEGMENT_CMSG_LEN as u64).to_ne_bytes());
    bytes[8..12].copy_from_slice(&libc::SOL_UDP.to_ne_bytes());
    bytes[12..16].copy_from_slice(&UDP_SEGMENT.to_ne_bytes());
    bytes[16..18].copy_from_slice(&size.to_ne_bytes());
    for (word, chunk) in buf.iter_mut().zip(bytes.chunks_exact(8)) {
        *word = u64::from_ne_bytes(chunk.try_into().unwrap_or([0; 8]));
    }
}

/// The segment size in the first `len` bytes of a received control buffer, if the kernel put a `UDP_GRO`
/// message there (a datagram that arrived whole has none).
pub fn decode_gro_size(buf: &ControlBuf, len: usize) -> Option<usize> {
    let mut bytes = [0u8; 32];
    for (chunk, word) in bytes.chunks_exact_mut(8).zip(buf) {
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    let bytes = &bytes[..len.min(bytes.len())];
    let mut at = 0;
    while at + HDR_LEN <= bytes.len() {
        let field = |from: usize, n: usize| &bytes[at + from..at + from + n];
        let cmsg_len = u64::from_ne_bytes(field(0, 8).try_into().ok()?) as usize;
        let level = i32::from_ne_bytes(field(8, 4).try_into().ok()?);
        let kind = i32::from_ne_bytes(field(12, 4).try_into().ok()?);
        if cmsg_len < HDR_LEN || at + cmsg_len > bytes.len() {
            return None;
        }
        if level == libc::SOL_UDP && kind == UDP_GRO && cmsg_len >= HDR_LEN + 4 {
            let size = i32::from_ne_bytes(field(HDR_LEN, 4).try_into().ok()?);
            return usize::try_from(size).ok().filter(|&s| s > 0);
        }
        at += cmsg_len.next_multiple_of(8);
    }
    None
}

/// Asks the kernel to deliver segmented runs to `sock` whole (`UDP_GRO`); read them with a
/// [`RecvBatch`](super::RecvBatch), which cuts them back into datagrams.
pub fn enable_gro(sock: &impl AsFd) -> io::Result<()> {
    nix::sys::socket::setsockopt(sock, nix::sys::socket::sockopt::UdpGroSegment, &true)
        .map_err(io::Error::from)
}

/// How many of the datagrams `lens[0..]` (with `same_flow(j)` saying whether datagram `j` may share a send with
/// datagram 0) go out together as one segmented send: all the size of the first, except that the last may
/// be shorter, within [`MAX_SEGMENTS`] and [`MAX_BYTES`]. At least 1.
pub fn run_length(lens: &[usize], mut same_flow: impl FnMut(usize) -> bool) -> usize {
    let Some(&size) = lens.first() else {
        return 0;
    };
    if size == 0 || size > usize::from(u16::MAX) {
        return 1;
    }
    let mut total = size;
    let mut n = 1;
    while n < lens.len() && n < MAX_SEGMENTS {
        let len = lens[n];
        if len == 0 || len > size || total + len > MAX_BYTES || !same_flow(n) {
            break;
        }
        total += len;
        n += 1;
        if len < size {
            break;
        }
    }
    n
}

/// Whether a failed segmented send means the path cannot segment (no checksum offload, an old kernel, a
/// socket option refused), so sending one datagram at a time is the way on.
pub fn is_unsupported(errno: i32) -> bool {
    matches!(
        errno,
        libc::EIO | libc::EINVAL | libc::EOPNOTSUPP | libc::ENOPROTOOPT
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_size_message_decodes_as_the_kernel_lays_it_out() {
        let mut buf = EMPTY_CONTROL;
        encode_segment_size(&mut buf, 1200);
        let words = buf;
        assert_eq!(words[0] as usize, SEGMENT_CMSG_LEN);
        let level_kind = words[1].to_ne_bytes();
        assert_eq!(
            i32::from_ne_bytes(level_kind[..4].try_into().unwrap()),
            libc::SOL_UDP
        );
        assert_eq!(
            i32::from_ne_bytes(level_kind[4..].try_into().unwrap()),
            UDP_SEGMENT
        );
        assert_eq!(
            u16::from_ne_bytes(words[2].to_ne_bytes()[..2].try_into().unwrap()),
            1200
        );
    }

    fn gro_message(size: i32) -> ControlBuf {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&((HDR_LEN + 4) as u64).to_ne_bytes());
        bytes[8..12].copy_from_slice(&libc::SOL_UDP.to_ne_bytes());
        bytes[12..16].copy_from_slice(&UDP_GRO.to_ne_bytes());
        bytes[16..20].copy_from_slice(&size.to_ne_bytes());
        let mut buf = EMPTY_CONTROL;
        for (w, c) in buf.iter_mut().zip(bytes.chunks_exact(8)) {
            *w = u64::from_ne_bytes(c.try_into().unwrap());
        }
        buf
    }

    #[test]
    fn gro_size_is_found_and_junk_is_not_trusted() {
        assert_eq!(decode_gro_size(&gro_message(1200), 24), Some(1200));
        assert_eq!(
            decode_gro_size(&gro_message(1200), 0),
            None,
            "no control data"
        );
        assert_eq!(
            decode_gro_size(&gro_message(1200), 19),
            None,
            "message cut short"
        );
        assert_eq!(decode_gro_size(&gro_message(-5), 24), None);
        assert_eq!(decode_gro_size(&gro_message(0), 24), None);
        let mut other = gro_message(1200);
        other[1] = u64::from_ne_bytes([0, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(decode_gro_size(&other, 24), None, "another level");
        let mut huge = gro_message(1200);
        huge[0] = u64::MAX;
        assert_eq!(decode_gro_size(&huge, 24), None, "length beyond the buffer");
    }

    proptest::proptest! {
        #[test]
        fn any_control_bytes_decode_without_panic(words in proptest::array::uniform4(proptest::num::u64::ANY), len in 0usize..64) {
            if let Some(size) = decode_gro_size(&words, len) {
                proptest::prop_assert!(size > 0 && size <= i32::MAX as usize);
            }
        }

        #[test]
        fn runs_never_break_the_segmentation_rules(lens in proptest::collection::vec(0usize..2000, 0..200), cut in 0usize..200) {
            let n = run_length(&lens, |j| j < cut.max(1));
            proptest::prop_assert_eq!(n == 0, lens.is_empty());
            if n > 1 {
                let run = &lens[..n];
                proptest::prop_assert!(run[..n - 1].iter().all(|&l| l == run[0]));
                proptest::prop_assert!(run[n - 1] <= run[0] && run[n - 1] > 0);
                proptest::prop_assert!(n <= MAX_SEGMENTS && run.iter().sum::<usize>() <= MAX_BYTES);
            }
        }
    }

    #[test]
    fn runs_take_equal_sizes_and_one_shorter_tail() {
        let all = |_| true;
        assert_eq!(run_length(&[], all), 0);
        assert_eq!(run_length(&[100, 100, 100], all), 3);
        assert_eq!(
            run_length(&[100, 100, 60, 100], all),
            3,
            "a shorter one ends the run"
        );
        assert_eq!(
            run_length(&[100, 120], all),
            1,
            "a longer one cannot follow"
        );
        assert_eq!(
            run_length(&[100, 100, 100], |j| j < 2),
            2,
            "another flow ends the run"
        );
        assert_eq!(run_length(&[0, 0], all), 1);
        assert_eq!(run_length(&[100; 200], all), MAX_SEGMENTS);
        assert_eq!(run_length(&[1200; 64], all), MAX_BYTES / 1200);
    }
}
