use proptest::prelude::*;

use super::*;

fn id(n: u8) -> Identity {
    Identity::from_secret([n; KEY_LEN])
}

/// Both ends of a finished handshake (each session with the key it learned), and the last payload read.
type Ends = ((Session, PublicKey), (Session, PublicKey), Vec<u8>);

/// Runs a whole handshake; returns both sessions and what each side learned of the other, or the first
/// error (and which side hit it: true for the responder).
fn handshake(
    ctx: (Context, Context),
    init: &Identity,
    resp: &Identity,
    expect: Option<&PublicKey>,
    psk: (Option<&Psk>, Option<&Psk>),
) -> Result<Ends, (bool, NoiseError)> {
    let mut i = Handshake::initiate(ctx.0, init, expect, psk.0, [1; 32]);
    let mut r = Handshake::respond(ctx.1, i.pattern(), resp, psk.1, [2; 32]);
    let mut buf = [0u8; 1024];
    let mut pay = [0u8; 1024];
    let mut last_payload = Vec::new();
    // Alternate until both are done; the last message carries a payload (XX's third carries REGISTER).
    let mut turn_initiator = true;
    while !(i.is_finished() && r.is_finished()) {
        let (w, rd, side) = if turn_initiator {
            (&mut i, &mut r, true)
        } else {
            (&mut r, &mut i, false)
        };
        let n = w.write(b"payload", &mut buf).map_err(|e| (!side, e))?;
        let m = rd.read(&buf[..n], &mut pay).map_err(|e| (side, e))?;
        last_payload = pay[..m].to_vec();
        turn_initiator = !turn_initiator;
    }
    let a = i.into_session().map_err(|e| (false, e))?;
    let b = r.into_session().map_err(|e| (true, e))?;
    Ok((a, b, last_payload))
}

#[test]
fn ik_authenticates_both_keys_and_seals_both_ways() {
    let (alice, daemon) = (id(1), id(2));
    let ((mut a, a_sees), (mut d, d_sees), payload) = handshake(
        (Context::Roster, Context::Roster),
        &alice,
        &daemon,
        Some(&daemon.public()),
        (None, None),
    )
    .unwrap();
    assert_eq!(a_sees, daemon.public());
    assert_eq!(d_sees, alice.public());
    assert_eq!(payload, b"payload");
    let s = a.seal_vec(&[kind::DATA], b"hello").unwrap();
    assert_eq!(s.len(), 1 + 5 + TAG_LEN);
    assert_eq!(d.open_vec(&s[1..]).unwrap(), b"hello");
    let s = d.seal_vec(&[], b"back").unwrap();
    assert_eq!(a.open_vec(&s).unwrap(), b"back");
}

#[test]
fn xx_learns_the_responders_key_in_the_handshake() {
    let (alice, daemon) = (id(3), id(4));
    let ((_, a_sees), (_, d_sees), payload) = handshake(
        (Context::Roster, Context::Roster),
        &alice,
        &daemon,
        None,
        (None, None),
    )
    .unwrap();
    assert_eq!(a_sees, daemon.public());
    assert_eq!(d_sees, alice.public());
    assert_eq!(payload, b"payload", "the third message carries a payload");
}

#[test]
fn ik_to_the_wrong_key_fails_at_the_responder() {
    let (alice, rogue, pinned) = (id(5), id(6), id(7));
    let err = handshake(
        (Context::Roster, Context::Roster),
        &alice,
        &rogue,
        Some(&pinned.public()),
        (None, None),
    )
    .err()
    .unwrap();
    assert_eq!(err, (true, NoiseError::Rejected));
}

#[test]
fn a_wrong_or_missing_secret_fails_either_pattern() {
    let (alice, daemon) = (id(8), id(9));
    let (s1, s2) = (
        Psk::from_secret(b"one secret"),
        Psk::from_secret(b"another"),
    );
    for expect in [None, Some(daemon.public())] {
        for psk in [(Some(&s1), Some(&s2)), (Some(&s1), None), (None, Some(&s1))] {
            assert!(
                handshake(
                    (Context::Roster, Context::Roster),
                    &alice,
                    &daemon,
                    expect.as_ref(),
                    psk
                )
                .is_err(),
                "{expect:?} {psk:?}"
            );
        }
        assert!(
            handshake(
                (Context::Roster, Context::Roster),
                &alice,
                &daemon,
                expect.as_ref(),
                (Some(&s1), Some(&s1))
            )
            .is_ok()
        );
    }
}

#[test]
fn a_chat_handshake_does_not_complete_as_a_roster_one() {
    let (alice, bob) = (id(10), id(11));
    for expect in [None, Some(bob.public())] {
        assert!(
            handshake(
                (Context::Chat, Context::Roster),
                &alice,
                &bob,
                expect.as_ref(),
                (None, None)
            )
            .is_err()
        );
    }
}

#[test]
fn replayed_altered_or_foreign_messages_do_not_open_and_the_session_goes_on() {
    let (alice, daemon) = (id(12), id(13));
    let ((mut a, _), (mut d, _), _) = handshake(
        (Context::Roster, Context::Roster),
        &alice,
        &daemon,
        Some(&daemon.public()),
        (None, None),
    )
    .unwrap();
    let first = a.seal_vec(&[], b"one").unwrap();
    assert_eq!(d.open_vec(&first).unwrap(), b"one");
    assert_eq!(d.open_vec(&first), Err(NoiseError::Rejected), "a replay");
    let second = a.seal_vec(&[], b"two").unwrap();
    let mut altered = second.clone();
    altered[0] ^= 1;
    assert_eq!(d.open_vec(&altered), Err(NoiseError::Rejected));
    // A message from another session (another client of the same daemon) at the same counter.
    let ((mut other, _), _, _) = handshake(
        (Context::Roster, Context::Roster),
        &id(30),
        &daemon,
        Some(&daemon.public()),
        (None, None),
    )
    .unwrap();
    let _ = other.seal_vec(&[], b"x").unwrap();
    let foreign = other.seal_vec(&[], b"two").unwrap();
    assert_eq!(d.open_vec(&foreign), Err(NoiseError::Rejected));
    assert_eq!(
        d.open_vec(&second).unwrap(),
        b"two",
        "the session still expects message two"
    );
}

#[test]
fn the_same_seeds_give_the_same_bytes() {
    let run = || {
        let mut i = Handshake::initiate(
            Context::Chat,
            &id(14),
            Some(&id(15).public()),
            None,
            [9; 32],
        );
        i.write_vec(&[], b"").unwrap()
    };
    assert_eq!(run(), run());
}

#[test]
fn out_of_turn_calls_are_errors_not_panics() {
    let mut i = Handshake::initiate(Context::Roster, &id(16), None, None, [1; 32]);
    assert_eq!(i.read(b"x", &mut [0; 64]), Err(NoiseError::OutOfTurn));
    let mut r = Handshake::respond(Context::Roster, Pattern::Xx, &id(17), None, [1; 32]);
    assert_eq!(r.write(b"", &mut [0; 256]), Err(NoiseError::OutOfTurn));
    assert!(r.into_session().is_err());
}

#[test]
fn frames_parse_as_written() {
    for (p, psk) in [
        (Pattern::Ik, false),
        (Pattern::Ik, true),
        (Pattern::Xx, false),
        (Pattern::Xx, true),
    ] {
        let b = [Frame::init_kind(p, psk), 7, 8];
        assert_eq!(
            Frame::parse(&b),
            Ok(Frame::Init {
                pattern: p,
                psk,
                noise: &[7, 8]
            })
        );
    }
    assert_eq!(Frame::parse(&[kind::DATA, 1]), Ok(Frame::Data(&[1])));
    assert_eq!(Frame::parse(&[kind::HANDSHAKE]), Ok(Frame::Handshake(&[])));
    assert_eq!(Frame::parse(&Frame::refusal("no")), Ok(Frame::Refuse("no")));
    assert!(Frame::parse(&[]).is_err());
    assert!(Frame::parse(&[kind::DATA | kind::PSK]).is_err());
    assert!(Frame::parse(&[kind::REFUSE, 0xff]).is_err());
    assert!(Frame::parse(&[10]).is_err());
    // A broadcast: head, then a body with its own kind byte; a body alone is no message.
    let body = broadcast::Sealer::new([1; 32]).seal(b"x");
    let head = broadcast::Tagger::new([2; 16]).head(&body);
    let f = [&head[..], &body[..]].concat();
    assert!(matches!(
        Frame::parse(&f),
        Ok(Frame::Broadcast(t)) if t.counter == 0 && t.mac[..] == head[9..] && t.body == &body[..]
    ));
    assert!(Frame::parse(&body).is_err());
    // Long enough for an empty plaintext's body, or not.
    assert_eq!(f.len(), broadcast::OVERHEAD + 1);
    assert!(Frame::parse(&f[..broadcast::OVERHEAD]).is_ok());
    assert!(Frame::parse(&f[..broadcast::OVERHEAD - 1]).is_err());
    // A refusal is cut on a character boundary.
    let long = "é".repeat(MAX_REFUSAL);
    let r = Frame::refusal(&long);
    assert!(matches!(Frame::parse(&r), Ok(Frame::Refuse(s)) if s.len() == MAX_REFUSAL));
}

proptest! {
    #[test]
    fn frame_parse_is_total(b in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(f) = Frame::parse(&b) {
            let k = b[0];
            match f {
                Frame::Init { pattern, psk, noise } => {
                    prop_assert_eq!(Frame::init_kind(pattern, psk), k);
                    prop_assert_eq!(noise, &b[1..]);
                }
                Frame::Handshake(x) | Frame::Data(x) => prop_assert_eq!(x, &b[1..]),
                Frame::Broadcast(t) => {
                    prop_assert_eq!(t.to_vec(), &b[..]);
                    prop_assert!(t.body.len() >= broadcast::BODY_OVERHEAD);
                    prop_assert_eq!(t.body[0], kind::BROADCAST_BODY);
                }
                Frame::Refuse(s) => prop_assert_eq!(s.as_bytes(), &b[1..]),
                Frame::Resume { psk, ticket, noise } => {
                    prop_assert_eq!(Frame::init_kind(Pattern::Resume, psk), k);
                    prop_assert_eq!([ticket, noise].concat(), &b[1..]);
                }
                Frame::ResumeRefused => prop_assert_eq!(b.len(), 1),
            }
        }
    }

    /// Broadcast frames of any counter, MAC and body: what parses reads back the same fields and writes
    /// back the same bytes; what is too short for an empty plaintext's body, at any cut, does not parse.
    #[test]
    fn broadcast_frames_round_trip(
        counter in any::<u64>(),
        mac in any::<[u8; 16]>(),
        tail in proptest::collection::vec(any::<u8>(), 0..120),
        cut in any::<usize>(),
    ) {
        let mut f = vec![kind::BROADCAST];
        f.extend_from_slice(&counter.to_be_bytes());
        f.extend_from_slice(&mac);
        f.push(kind::BROADCAST_BODY);
        f.extend_from_slice(&tail);
        let long_enough = |n: usize| n >= broadcast::OVERHEAD;
        match Frame::parse(&f) {
            Ok(Frame::Broadcast(t)) => {
                prop_assert!(long_enough(f.len()));
                prop_assert_eq!((t.counter, t.mac, t.body), (counter, mac, &f[broadcast::HEAD_LEN..]));
                prop_assert_eq!(t.to_vec(), &f[..]);
            }
            other => prop_assert!(!long_enough(f.len()) && other.is_err(), "{:?}", other),
        }
        let n = cut % (f.len() + 1);
        prop_assert_eq!(Frame::parse(&f[..n]).is_ok(), long_enough(n));
    }

    #[test]
    fn garbage_never_completes_a_handshake(
        b in proptest::collection::vec(any::<u8>(), 0..200),
        xx in any::<bool>(),
    ) {
        let pattern = if xx { Pattern::Xx } else { Pattern::Ik };
        let mut r = Handshake::respond(Context::Roster, pattern, &id(20), None, [3; 32]);
        let mut out = [0u8; 256];
        // XX's first message is a bare ephemeral key: any 32 bytes are one. Nothing else reads.
        let read = r.read(&b, &mut out);
        prop_assert!(read.is_err() || (xx && b.len() >= 32));
        prop_assert!(!r.is_finished());
    }

    #[test]
    fn sealed_messages_open_in_order(msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..100), 1..10)) {
        let (alice, daemon) = (id(21), id(22));
        let ((mut a, _), (mut d, _), _) = handshake(
            (Context::Chat, Context::Chat), &alice, &daemon, Some(&daemon.public()), (None, None)).unwrap();
        for m in &msgs {
            let s = a.seal_vec(&[], m).unwrap();
            prop_assert_eq!(&d.open_vec(&s).unwrap(), m);
        }
    }
}

#[test]
fn our_transport_speaks_noise_as_snow_does() {
    // One end keeps its keys as ours, the other as snow's own transport state: what one seals, the other
    // opens, both ways, in order.
    let (alice, daemon) = (id(40), id(41));
    let mut i = Handshake::initiate(
        Context::Roster,
        &alice,
        Some(&daemon.public()),
        None,
        [4; 32],
    );
    let mut r = Handshake::respond(Context::Roster, Pattern::Ik, &daemon, None, [5; 32]);
    let (mut buf, mut pay) = ([0u8; 512], [0u8; 512]);
    let n = i.write(&[], &mut buf).unwrap();
    r.read(&buf[..n], &mut pay).unwrap();
    let n = r.write(&[], &mut buf).unwrap();
    i.read(&buf[..n], &mut pay).unwrap();
    let (mut ours, _) = i.into_session().unwrap();
    let mut snows = r.hs.into_transport_mode().unwrap();
    for text in [&b"first"[..], b"second, longer", b""] {
        let sealed = ours.seal_vec(&[], text).unwrap();
        let n = snows.read_message(&sealed, &mut pay).unwrap();
        assert_eq!(&pay[..n], text);
        let n = snows.write_message(text, &mut buf).unwrap();
        assert_eq!(ours.open_vec(&buf[..n]).unwrap(), text);
    }
}

/// A ticket as the daemon with `daemon`'s key (and `psk`) issues it to `client` at wall time 1000 s, for a
/// day; and what the client keeps.
fn ticket_for(daemon: &Identity, psk: Option<&Psk>, client: &Identity) -> ticket::Ticket {
    let key = ticket::TicketKey::derive(daemon, psk);
    let grant = ticket::Grant {
        client: client.public(),
        secret: [9; 32],
        expires_ms: 1_000_000 + 86_400_000,
    };
    ticket::Ticket {
        daemon: daemon.public(),
        ticket: key.issue(&grant, [3; 12]),
        secret: grant.secret,
    }
}

/// The daemon's side of a resumption: the first message's frame parsed, the ticket opened at `now_ms`, the
/// handshake answered. Returns the daemon's session and the client key the ticket vouched for, and the
/// answer, or where it stopped.
fn respond_to_resume(
    daemon: &Identity,
    psk: Option<&Psk>,
    first: &[u8],
    now_ms: u64,
) -> Result<((Session, PublicKey), Vec<u8>), &'static str> {
    let Ok(Frame::Resume { ticket, noise, .. }) = Frame::parse(first) else {
        return Err("not a resumption");
    };
    let grant = ticket::TicketKey::derive(daemon, psk)
        .open(ticket, now_ms)
        .map_err(|_| "ticket")?;
    let mut r = Handshake::respond_resume(Context::Roster, ticket, &grant, [8; 32]);
    let mut pay = vec![0u8; noise.len()];
    r.read(noise, &mut pay).map_err(|_| "first message")?;
    let reply = r.write_vec(&[kind::HANDSHAKE], &[]).map_err(|_| "reply")?;
    Ok((r.into_session().map_err(|_| "session")?, reply))
}

#[test]
fn a_ticket_resumes_a_session_bound_to_both_keys() {
    let (alice, daemon) = (id(50), id(51));
    let t = ticket_for(&daemon, None, &alice);
    let (mut init, first) = Initiator::resume(Context::Roster, &t, false, [6; 32]);
    let first = first.unwrap();
    assert_eq!(first[0], kind::INIT_RESUME);
    let ((mut d, d_sees), reply) = respond_to_resume(&daemon, None, &first, 1_000_000).unwrap();
    assert_eq!(d_sees, alice.public(), "the ticket names the client");
    match init.handle(&reply, |_| panic!("a resumption learns no key")) {
        Step::Opened { key, reply: None } => assert_eq!(key, daemon.public()),
        s => panic!("{s:?}"),
    }
    let sealed = init.seal(b"REGISTER").unwrap();
    assert_eq!(d.open_vec(&sealed[1..]).unwrap(), b"REGISTER");
    let back = d.seal_vec(&[kind::DATA], b"REGISTERED").unwrap();
    assert_eq!(
        init.handle(&back, |_| true),
        Step::Data(b"REGISTERED".to_vec())
    );
}

#[test]
fn a_ticket_opens_only_at_its_daemon_under_its_secret_and_in_time() {
    let (alice, daemon) = (id(52), id(53));
    let psk = Psk::from_secret(b"sixteen bytes or more");
    let t = ticket_for(&daemon, Some(&psk), &alice);
    let key = ticket::TicketKey::derive(&daemon, Some(&psk));
    assert!(key.open(&t.ticket, 1_000_000).is_ok());
    // Expired; another daemon's key; the secret rotated or removed; a flipped byte anywhere; a short one.
    assert_eq!(
        key.open(&t.ticket, 1_000_000 + 86_400_000),
        Err(ticket::TicketError::Expired)
    );
    let invalid = Err(ticket::TicketError::Invalid);
    assert_eq!(
        ticket::TicketKey::derive(&id(54), Some(&psk)).open(&t.ticket, 0),
        invalid
    );
    let other = Psk::from_secret(b"another secret, sixteen+");
    assert_eq!(
        ticket::TicketKey::derive(&daemon, Some(&other)).open(&t.ticket, 0),
        invalid
    );
    assert_eq!(
        ticket::TicketKey::derive(&daemon, None).open(&t.ticket, 0),
        invalid
    );
    for at in 0..ticket::TICKET_LEN {
        let mut bad = t.ticket;
        bad[at] ^= 1;
        assert_eq!(key.open(&bad, 0), invalid, "byte {at} flipped");
    }
    assert_eq!(key.open(&t.ticket[1..], 0), invalid);
}

#[test]
fn a_resumption_needs_the_tickets_secret_and_the_ticket_it_was_made_for() {
    let (alice, daemon) = (id(55), id(56));
    let t = ticket_for(&daemon, None, &alice);
    // Someone who captured the ticket but not the secret (it travelled inside the session).
    let stolen = ticket::Ticket {
        secret: [0; 32],
        ..t.clone()
    };
    let (_, first) = Initiator::resume(Context::Roster, &stolen, false, [6; 32]);
    assert_eq!(
        respond_to_resume(&daemon, None, &first.unwrap(), 1_000_000).err(),
        Some("first message")
    );
    // A first message moved onto another ticket of the same client (same secret): the prologue differs.
    let (_, first) = Initiator::resume(Context::Roster, &t, false, [6; 32]);
    let mut first = first.unwrap();
    let key = ticket::TicketKey::derive(&daemon, None);
    let grant = key.open(&t.ticket, 0).unwrap();
    first[1..1 + ticket::TICKET_LEN].copy_from_slice(&key.issue(&grant, [4; 12]));
    assert_eq!(
        respond_to_resume(&daemon, None, &first, 1_000_000).err(),
        Some("first message")
    );
    // A daemon that answers without having opened the ticket (an impostor guessing): the client drops it.
    let (mut init, _) = Initiator::resume(Context::Roster, &t, false, [6; 32]);
    let wrong = ticket::Grant {
        client: alice.public(),
        secret: [1; 32],
        expires_ms: u64::MAX,
    };
    let mut r = Handshake::respond_resume(Context::Roster, &t.ticket, &wrong, [8; 32]);
    let (_, first) = Initiator::resume(Context::Roster, &t, false, [6; 32]);
    let first = first.unwrap();
    let mut pay = [0u8; 256];
    assert!(r.read(&first[1 + ticket::TICKET_LEN..], &mut pay).is_err());
    let mut imp = Handshake::respond_resume(Context::Roster, &t.ticket, &wrong, [8; 32]);
    // Forced to answer anyway: its answer, under the wrong secret, does not open a session.
    let _ = imp.read(&first[1 + ticket::TICKET_LEN..], &mut pay);
    if let Ok(answer) = imp.write_vec(&[kind::HANDSHAKE], &[]) {
        assert_eq!(init.handle(&answer, |_| true), Step::Failed);
    }
}

#[test]
fn a_refused_ticket_asks_for_the_full_handshake_only_during_a_resumption() {
    let (alice, daemon) = (id(57), id(58));
    let t = ticket_for(&daemon, None, &alice);
    let (mut init, _) = Initiator::resume(Context::Roster, &t, false, [6; 32]);
    assert_eq!(
        init.handle(&[kind::RESUME_REFUSED], |_| true),
        Step::ResumeRefused(daemon.public())
    );
    // Out of place (a full handshake under way), or with bytes after it: nothing.
    let (mut full, _) = Initiator::start(
        Context::Roster,
        &alice,
        Some(&daemon.public()),
        None,
        [6; 32],
    );
    assert_eq!(
        full.handle(&[kind::RESUME_REFUSED], |_| true),
        Step::Nothing
    );
    assert!(matches!(full, Initiator::Handshake(_)));
    assert!(Frame::parse(&[kind::RESUME_REFUSED, 0]).is_err());
    assert!(Frame::parse(&[kind::RESUME_REFUSED | kind::PSK]).is_err());
    // A resumption whose ticket is cut short is malformed.
    assert!(Frame::parse(&[kind::INIT_RESUME; 50]).is_err());
}

proptest! {
    #[test]
    fn resumption_frames_round_trip(psk: bool, ticket in proptest::collection::vec(any::<u8>(), ticket::TICKET_LEN), noise in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut m = vec![Frame::init_kind(Pattern::Resume, psk)];
        m.extend_from_slice(&ticket);
        m.extend_from_slice(&noise);
        prop_assert_eq!(
            Frame::parse(&m),
            Ok(Frame::Resume { psk, ticket: &ticket, noise: &noise })
        );
    }

    #[test]
    fn made_up_tickets_never_open(bytes in proptest::collection::vec(any::<u8>(), 0..200), now: u64) {
        let key = ticket::TicketKey::derive(&id(59), None);
        prop_assert!(key.open(&bytes, now).is_err());
    }
}

/// snow's own X25519 (its default resolver), with a seeded RNG: the other end of the test below.
struct SnowDefault([u8; 32]);

impl CryptoResolver for SnowDefault {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SeededRng(ChaCha20Rng::from_seed(self.0))))
    }
    fn resolve_dh(&self, choice: &snow::params::DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }
    fn resolve_hash(&self, choice: &snow::params::HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &snow::params::CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

#[test]
fn our_x25519_handshakes_with_snows_own() {
    // Our initiator (X25519 through x25519-dalek, our identity's public key reused) against a responder on
    // snow's default X25519, for IK and XX: both finish, agree on each other's keys, and talk.
    let (alice, daemon) = (id(60), id(61));
    for (pattern, expect) in [(Pattern::Ik, Some(daemon.public())), (Pattern::Xx, None)] {
        let mut i = Handshake::initiate(Context::Roster, &alice, expect.as_ref(), None, [4; 32]);
        let secret = daemon.secret_bytes();
        let mut r =
            snow::Builder::with_resolver(params(pattern, false), Box::new(SnowDefault([5; 32])))
                .local_private_key(&secret)
                .unwrap()
                .prologue(Context::Roster.prologue())
                .unwrap()
                .build_responder()
                .unwrap();
        let (mut buf, mut pay) = ([0u8; 512], [0u8; 512]);
        loop {
            let n = i.write(&[], &mut buf).unwrap();
            r.read_message(&buf[..n], &mut pay).unwrap();
            if r.is_handshake_finished() {
                break;
            }
            let n = r.write_message(&[], &mut buf).unwrap();
            i.read(&buf[..n], &mut pay).unwrap();
            if i.is_finished() {
                break;
            }
        }
        assert!(i.is_finished() && r.is_handshake_finished(), "{pattern:?}");
        assert_eq!(
            r.get_remote_static(),
            Some(&alice.public().0[..]),
            "{pattern:?}"
        );
        let (mut ours, seen) = i.into_session().unwrap();
        assert_eq!(seen, daemon.public(), "{pattern:?}");
        let mut theirs = r.into_transport_mode().unwrap();
        let sealed = ours.seal_vec(&[], b"hello").unwrap();
        let n = theirs.read_message(&sealed, &mut pay).unwrap();
        assert_eq!(&pay[..n], b"hello", "{pattern:?}");
    }
}
