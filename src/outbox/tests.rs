use std::time::Duration;

use super::*;
use crate::identity::Identity;
use crate::peer::{Action, Config, PeerEvent};

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mp-outbox-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn me() -> Nick {
    Nick::new("me").unwrap()
}

fn bob() -> Nick {
    Nick::new("bob").unwrap()
}

fn peer(instance: u64) -> Peer {
    Peer::new(Config::new(me(), instance, Identity::from_secret([9; 32])))
}

fn queued_in(dir: &Path) -> Vec<Waiting> {
    let h = History::open(&history::path(dir, "me"), Limits::default()).unwrap();
    h.queue_load()
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn an_old_json_outbox_is_imported_once_and_removed() {
    let dir = temp("import");
    fs::create_dir_all(&dir).unwrap();
    // As the previous mpc wrote it.
    fs::write(
        dir.join("outbox-me.json"),
        br#"[{"to_nick":"bob","to_addr":null,"id":4294967297,"sent_ms":10,"text":"hi"},
             {"to_nick":null,"to_addr":"127.0.0.1:5000","id":4294967298,"sent_ms":11,"text":"there"}]"#,
    )
    .unwrap();
    let now = Instant::ZERO;
    let mut p = peer(1);
    let mut o = Outbox::new(&dir, me());
    let r = o.restore(now, &mut p);
    assert!(r.notes.is_empty(), "{:?}", r.notes);
    assert_eq!(r.count, 2);
    assert_eq!(p.waiting(), 2);
    assert!(!dir.join("outbox-me.json").exists());
    let kept = queued_in(&dir);
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[0].to, Target::Nick(bob()));
    assert_eq!((kept[0].id, kept[0].sent_ms), (4294967297, 10));
    assert_eq!(kept[1].to, Target::Addr("127.0.0.1:5000".parse().unwrap()));
    // Nothing new to write: the rows are the peer's messages.
    assert!(o.sync(now, &mut p).is_empty());
    assert_eq!(queued_in(&dir).len(), 2);
    // A second run finds them in the database only, once each.
    let mut p = peer(2);
    let r = Outbox::new(&dir, me()).restore(now, &mut p);
    assert_eq!((r.count, p.waiting()), (2, 2));
}

#[test]
fn an_unreadable_json_outbox_is_set_aside_and_said() {
    let dir = temp("bad-json");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("outbox-me.json"), b"{not json").unwrap();
    let mut p = peer(1);
    let r = Outbox::new(&dir, me()).restore(Instant::ZERO, &mut p);
    assert_eq!(r.count, 0);
    assert!(
        r.notes.iter().any(|n| n.contains("moved to")),
        "{:?}",
        r.notes
    );
    assert!(dir.join("outbox-me.json.bad").exists());
    // Nothing waits: no database is made for nothing.
    assert!(!history::path(&dir, "me").exists());
}

#[test]
fn no_file_until_a_message_has_to_wait_then_one_row_per_change() {
    let dir = temp("sync");
    let now = Instant::ZERO;
    let mut p = peer(1);
    let mut o = Outbox::new(&dir, me());
    assert_eq!(o.restore(now, &mut p).count, 0);
    assert!(o.sync(now, &mut p).is_empty());
    assert!(!o.path().exists(), "a file was made with nothing waiting");
    // bob is known and offline: the message waits, and is written.
    p.set_contact(now, bob(), "127.0.0.1:5000".parse().unwrap(), false);
    let id = p.send(now, 42, Target::Nick(bob()), "later").unwrap();
    assert!(o.sync(now, &mut p).is_empty());
    let kept = queued_in(&dir);
    assert_eq!(kept.len(), 1);
    assert_eq!((kept[0].id, kept[0].sent_ms), (id, 42));
    assert_eq!(kept[0].text, "later");
    // A message to an address nobody answers: written while it waits, taken out when given up.
    let dead = Target::Addr("127.0.0.1:9".parse().unwrap());
    let gone = p.send(now, 43, dead, "anyone?").unwrap();
    assert!(o.sync(now, &mut p).is_empty());
    assert_eq!(queued_in(&dir).len(), 2);
    let mut t = now;
    let mut failed = false;
    for _ in 0..100 {
        while let Some(a) = p.poll_action() {
            if let Action::Connect { conn, .. } = a {
                p.closed(t, conn);
            }
        }
        while let Some(ev) = p.poll_event() {
            failed |= matches!(ev, PeerEvent::Failed { id, .. } if id == gone);
        }
        if failed {
            break;
        }
        t += Duration::from_secs(10);
        p.handle_timeout(t);
    }
    assert!(failed, "the message to a dead address was never given up");
    assert!(o.sync(t, &mut p).is_empty());
    let kept = queued_in(&dir);
    assert_eq!(kept.iter().map(|w| w.id).collect::<Vec<_>>(), [id]);
}

#[test]
fn a_message_queued_by_another_process_is_taken_at_the_next_look() {
    let dir = temp("adopt");
    let now = Instant::ZERO;
    let mut p = peer(1);
    p.set_contact(now, bob(), "127.0.0.1:5000".parse().unwrap(), false);
    let mut o = Outbox::new(&dir, me());
    o.restore(now, &mut p);
    // `mpc send` while this run goes on.
    let left = Waiting {
        to: Target::Nick(bob()),
        id: 7 << 32 | 1,
        sent_ms: 5,
        text: "from mpc send".into(),
        // A channel's copy keeps its scope through the file.
        scope: "#ops".into(),
    };
    Outbox::new(&dir, me()).add(&left).unwrap();
    // Not before the look is due; then once.
    o.sync(now, &mut p);
    assert_eq!(p.waiting(), 0);
    o.sync(now + LOOK_EVERY, &mut p);
    assert_eq!(
        p.waiting_messages(),
        [(
            left.to,
            left.id,
            5,
            crate::group::Scope::Channel(crate::group::ChannelName::new("#ops").unwrap()),
            left.text.clone()
        )]
    );
    o.sync(now + LOOK_EVERY * 3, &mut p);
    assert_eq!(p.waiting(), 1);
    assert_eq!(queued_in(&dir), [left]);
}
