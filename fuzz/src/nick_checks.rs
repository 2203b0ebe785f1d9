//! Checks on nickname validation, NFC, case folding and UTS #39 look-alike keys, shared by the `nick` fuzz
//! target and `tests/nick_props.rs` (so plain `cargo test` runs them too):
//!
//! - bytes from the network: [`Nick::from_bytes`] never panics, agrees with [`Nick::check`], and keeps what it
//!   accepts byte for byte;
//! - text typed by a person: [`Nick::new`] never panics; what it accepts is NFC, within 32 characters and 63
//!   bytes, a fixed point of `Nick::new`, and round-trips through every wire encoding of a nickname (the
//!   shared codec, REGISTER as the daemon reads it, a roster entry);
//! - a refusal's message never panics and names something;
//! - folding and look-alike keys never panic, are deterministic, and nicknames equal but for case have equal
//!   look-alike keys.

use multiproto::codec::{Put, Reader};
use multiproto::nick::{MAX_NICK_BYTES, MAX_NICK_CHARS, Nick};
use multiproto::registry::wire::{ClientMsg, Entry, Register, ServerMsg, Status};

/// Runs every check on `data`, as network bytes and as typed text.
pub fn nick(data: &[u8]) {
    match Nick::from_bytes(data) {
        Ok(n) => {
            assert_eq!(n.as_bytes(), data);
            assert!(Nick::check(data).is_ok());
            accepted(n);
        }
        Err(e) => {
            assert_eq!(Nick::check(data), Err(e));
            assert!(!e.to_string().is_empty());
        }
    }
    let typed = String::from_utf8_lossy(data);
    typed_text(&typed);
}

/// Checks on `s` as typed on a command line.
pub fn typed_text(s: &str) {
    match Nick::new(s) {
        Ok(n) => {
            assert_eq!(Nick::new(n.as_str()), Ok(n), "NFC is a fixed point");
            accepted(n);
            // Upper- and lower-case spellings, where they are nicknames too, meet it without case.
            for other in [n.as_str().to_uppercase(), n.as_str().to_lowercase()] {
                if let Ok(o) = Nick::new(&other)
                    && o.same_folded(&n)
                {
                    assert_eq!(o.look_alike(), n.look_alike(), "{n:?} / {o:?}");
                    assert_eq!(o.look_alike_hash(), n.look_alike_hash());
                }
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// Checks on a nickname that was accepted.
pub fn accepted(n: Nick) {
    let s = n.as_str();
    assert_eq!(s.as_bytes(), n.as_bytes(), "stored as valid UTF-8");
    assert!(unicode_nfc(s), "not NFC: {s:?}");
    assert!((1..=MAX_NICK_CHARS).contains(&s.chars().count()));
    assert!((1..=MAX_NICK_BYTES).contains(&s.len()));
    // The shared codec (discovery, chat HELLO, KEY_QUERY).
    let mut b = Vec::new();
    b.put_nick(&n);
    let mut r = Reader::new(&b);
    assert_eq!(r.nick(), Ok(n));
    assert!(r.end().is_ok());
    // REGISTER, as the daemon reads it (a string it validates itself).
    let reg = ClientMsg::Register(Register {
        flags: 0,
        instance: 7,
        nick: s.to_owned(),
        chat_port: 4000,
        chat_ip: None,
    });
    match ClientMsg::parse(&reg.encode()) {
        Ok(ClientMsg::Register(r)) => assert_eq!(Nick::new(&r.nick), Ok(n)),
        other => panic!("REGISTER of {s:?} parsed as {other:?}"),
    }
    // A roster entry.
    let delta = ServerMsg::Delta {
        from: 1,
        to: 2,
        entries: vec![Entry {
            nick: n,
            instance: 9,
            status: Status::Online,
            since_ms: 1_700_000_000_000,
            chat: "192.0.2.1:4000".parse().expect("an address"),
            flaps: 0,
            extra: None,
        }],
    };
    assert_eq!(ServerMsg::parse(&delta.encode()), Ok(delta));
    // Folding and look-alike keys.
    assert!(n.same_folded(&n));
    assert_eq!(n.look_alike(), n.look_alike());
    assert_eq!(n.look_alike_hash(), n.look_alike_hash());
    assert_eq!(n.differences(&n), "");
}

/// Whether `s` is in NFC, by recomposing it (independent of the quick check `Nick` uses).
fn unicode_nfc(s: &str) -> bool {
    use unicode_normalization::UnicodeNormalization;
    s.nfc().eq(s.chars())
}
