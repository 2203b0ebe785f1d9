//! `CookieKeys::open` on arbitrary cookies, peer addresses, times and key rotations. Under `cfg(fuzzing)` the
//! MAC always passes, so the decoding and freshness checks run on every 60-byte input; what comes out must
//! be consistent with the bytes (re-sealing the state reproduces the cookie body) and with the clock.
//!
//! Input: `[addr kind][16 address bytes][2 port][8 now_ms][1 rotations][cookie...]` (missing bytes are 0).

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use multiproto::sctp::cookie::{COOKIE_LEN, CookieError, CookieKeys, CookieState};

fn take<const N: usize>(data: &mut &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = data.len().min(N);
    out[..n].copy_from_slice(&data[..n]);
    *data = &data[n..];
    out
}

fn check_state(cookie: &[u8], s: &CookieState, keys: &CookieKeys, peer: SocketAddr) {
    // Sealing the decoded state with the current key reproduces the body (bytes 2..44) exactly: the decoder
    // reads every field and nothing else.
    let again = keys.seal(s, peer);
    assert_eq!(again[0], cookie[0]);
    assert_eq!(&again[2..44], &cookie[2..44]);
}

fuzz_target!(|data: &[u8]| {
    let mut d = data;
    let [kind] = take::<1>(&mut d);
    let ip_bytes = take::<16>(&mut d);
    let port = u16::from_be_bytes(take::<2>(&mut d));
    let now_ms = u64::from_be_bytes(take::<8>(&mut d));
    let [rotations] = take::<1>(&mut d);
    let cookie = d;

    let ip = if kind & 1 == 0 {
        IpAddr::V4(Ipv4Addr::new(
            ip_bytes[0],
            ip_bytes[1],
            ip_bytes[2],
            ip_bytes[3],
        ))
    } else {
        IpAddr::V6(Ipv6Addr::from(ip_bytes))
    };
    let peer = SocketAddr::new(ip, port);

    let mut keys = CookieKeys::new([kind; 16], 0);
    for r in 0..rotations % 4 {
        keys.rotate(
            [r.wrapping_add(kind).wrapping_add(1); 16],
            u64::from(r) * 1000,
        );
    }
    let _ = keys.age_ms(now_ms);

    match keys.open(cookie, peer, now_ms) {
        Ok(s) => {
            assert_eq!(cookie.len(), COOKIE_LEN);
            let age = (now_ms as u32).wrapping_sub(s.created_ms);
            assert!(age <= s.life_ms, "accepted a stale cookie");
            check_state(cookie, &s, &keys, peer);
        }
        Err(CookieError::Stale(s, over_us)) => {
            assert_eq!(cookie.len(), COOKIE_LEN);
            let age = (now_ms as u32).wrapping_sub(s.created_ms);
            assert!(age > s.life_ms, "called a fresh cookie stale");
            let _ = over_us;
            check_state(cookie, &s, &keys, peer);
        }
        Err(CookieError::Invalid) => {}
    }

    // A cookie we seal ourselves always opens, from the same peer, within its life.
    if cookie.len() >= 44 {
        let created = (now_ms as u32).wrapping_sub(u32::from(cookie[5]));
        let s = CookieState {
            peer_port: port,
            created_ms: created,
            life_ms: u32::from(cookie[5]) + u32::from(cookie[6]),
            local_tag: u32::from_be_bytes([cookie[12], cookie[13], cookie[14], cookie[15]]),
            peer_tag: u32::from_be_bytes([cookie[16], cookie[17], cookie[18], cookie[19]]),
            local_tsn: multiproto::sctp::wire::Tsn(u32::from(cookie[20])),
            peer_tsn: multiproto::sctp::wire::Tsn(u32::from(cookie[24])),
            peer_rwnd: u32::from(cookie[28]),
            out_streams: u16::from(cookie[32]),
            in_streams: u16::from(cookie[34]),
            local_tie: u32::from(cookie[36]),
            peer_tie: u32::from(cookie[40]),
        };
        let sealed = keys.seal(&s, peer);
        assert_eq!(keys.open(&sealed, peer, now_ms), Ok(s));
    }
});
