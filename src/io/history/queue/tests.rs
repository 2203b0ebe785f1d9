use proptest::prelude::*;
use rusqlite::Connection;

use super::*;
use crate::io::history::{Limits, SCHEMA, SCHEMA_1, path};

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mp-queue-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    path(&dir, "alice")
}

fn bob() -> Target {
    Target::Nick(Nick::new("bob").unwrap())
}

fn w(id: u64, to: Target, text: &str) -> Waiting {
    Waiting {
        to,
        id,
        sent_ms: 1_700_000_000_000 + id % 1000,
        text: text.into(),
        scope: String::new(),
    }
}

fn loaded(h: &History) -> Vec<Waiting> {
    h.queue_load()
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn added_removed_and_loaded_in_order_each_change_committed_on_its_own() {
    let p = temp("basic");
    let mut h = History::open(&p, Limits::default()).unwrap();
    assert!(loaded(&h).is_empty());
    let addr: Target = Target::Addr("[::1]:7000".parse().unwrap());
    // An id with its top bit set (instance ids fill the high half) and a scope other work will write.
    let first = w(0xfedc_ba98_0000_0001, bob(), "first\n  indented");
    let mut second = w(2, addr, "to an address");
    second.scope = "#ops".into();
    let third = w(3, bob(), "third");
    for m in [&first, &second, &third] {
        h.queue_add(m).unwrap();
        // Committed at once: no transaction is left open between changes.
        assert!(h.conn.is_autocommit());
    }
    // Another process (a second connection) sees each change as soon as it is made.
    let other = History::open(&p, Limits::default()).unwrap();
    assert_eq!(
        loaded(&other),
        [first.clone(), second.clone(), third.clone()]
    );
    // Queued again (an import run twice): still one copy, in its place.
    h.queue_add(&first).unwrap();
    assert_eq!(h.queue_len().unwrap(), 3);
    // Taken out by id and receiver: the same id for someone else is another message.
    assert!(!h.queue_remove(first.id, &addr).unwrap());
    assert!(h.queue_remove(first.id, &bob()).unwrap());
    assert!(h.conn.is_autocommit());
    assert!(!h.queue_remove(first.id, &bob()).unwrap());
    assert_eq!(loaded(&other), [second.clone(), third.clone()]);
    assert_eq!(h.queue_len_for(&bob()).unwrap(), 1);
    assert_eq!(h.queue_len_for(&addr).unwrap(), 1);
    // The queue is not part of the history: not counted, not searched, not pruned.
    assert_eq!(h.len().unwrap(), 0);
    assert!(h.search("third", 10).unwrap().is_empty());
    h.prune(u64::MAX).unwrap();
    assert_eq!(h.queue_len().unwrap(), 2);
    drop(h);
    drop(other);
    let h = History::open(&p, Limits::default()).unwrap();
    assert_eq!(loaded(&h), [second, third]);
}

#[test]
fn many_are_queued_all_or_none() {
    let p = temp("all");
    let mut h = History::open(&p, Limits::default()).unwrap();
    h.queue_add_all(&[w(1, bob(), "a"), w(2, bob(), "b")])
        .unwrap();
    assert_eq!(h.queue_len().unwrap(), 2);
    // A row the database refuses half-way: none of the batch stays.
    h.conn
        .execute_batch(
            "CREATE TRIGGER no_boom BEFORE INSERT ON queue WHEN new.text = 'boom'
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .unwrap();
    let e = h
        .queue_add_all(&[w(3, bob(), "c"), w(4, bob(), "boom"), w(5, bob(), "d")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot queue"), "{e}");
    assert_eq!(loaded(&h).iter().map(|m| m.id).collect::<Vec<_>>(), [1, 2]);
}

#[test]
fn a_history_of_schema_1_gets_the_queue_and_keeps_its_messages() {
    let p = temp("migrate");
    // A file as the previous mpc wrote it: schema 1, one message.
    let c = Connection::open(&p).unwrap();
    c.execute_batch(SCHEMA_1).unwrap();
    c.execute_batch(
        "INSERT INTO messages (at_ms, conversation, sender, outgoing, verified, text)
         VALUES (5, 'bob', 'bob', 0, 1, 'from before the upgrade');
         PRAGMA user_version = 1;",
    )
    .unwrap();
    drop(c);
    let mut h = History::open(&p, Limits::default()).unwrap();
    let version: i64 = h
        .conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA);
    assert_eq!(
        h.recent(None, 10).unwrap()[0].text,
        "from before the upgrade"
    );
    assert_eq!(
        h.search("upgrade", 10).unwrap()[0].text,
        "from before the upgrade"
    );
    h.queue_add(&w(1, bob(), "queued after")).unwrap();
    drop(h);
    // Opened again: nothing to migrate, nothing lost.
    let h = History::open(&p, Limits::default()).unwrap();
    assert_eq!(h.len().unwrap(), 1);
    assert_eq!(loaded(&h), [w(1, bob(), "queued after")]);
}

#[test]
fn a_damaged_row_is_refused_with_its_reason_and_the_others_load() {
    let p = temp("corrupt");
    let mut h = History::open(&p, Limits::default()).unwrap();
    h.queue_add(&w(1, bob(), "good")).unwrap();
    // SQLite keeps any type in any column: rows as a hand edit or a damaged file could leave them.
    h.conn
        .execute_batch(
            "INSERT INTO queue (id, receiver, sent_ms, text) VALUES (2, 'not a nick!', 1, 'x');
             INSERT INTO queue (id, receiver, sent_ms, text) VALUES (3, 'bob', 1, x'00ff');
             INSERT INTO queue (id, receiver, sent_ms, text) VALUES (4, 'bob', -5, 'x');
             INSERT INTO queue (id, receiver, sent_ms, text) VALUES ('four', 'bob', 1, 'x');
             INSERT INTO queue (id, receiver, sent_ms, text) VALUES (6, 'bob', 1, '   ');",
        )
        .unwrap();
    h.queue_add(&w(7, bob(), "also good")).unwrap();
    let rows = h.queue_load().unwrap();
    assert_eq!(rows.len(), 7);
    let errors: Vec<String> = rows
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
        .collect();
    for (e, why) in errors.iter().zip([
        "receiver \"not a nick!\" is neither a nickname nor IP:PORT",
        "the text is a blob, not text",
        "time sent -5 is negative",
        "the id is text, not an integer",
        "the text is empty",
    ]) {
        assert!(e.contains(why), "{e}");
        assert!(
            e.contains("refused") && e.contains("left in the file"),
            "{e}"
        );
    }
    assert_eq!(errors.len(), 5);
    let good: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|w| w.text.as_str()))
        .collect();
    assert_eq!(good, ["good", "also good"]);
    // Left where they are: nothing queued is deleted by reading it.
    assert_eq!(h.queue_len().unwrap(), 7);
}

fn any_target() -> impl Strategy<Value = Target> {
    prop_oneof![
        "[A-Za-z0-9._-]{1,32}".prop_map(|n| Target::Nick(Nick::new(&n).unwrap())),
        (any::<std::net::IpAddr>(), any::<u16>())
            .prop_map(|(ip, port)| Target::Addr(std::net::SocketAddr::new(ip, port))),
    ]
}

proptest! {
    #[test]
    fn every_receiver_reads_back_as_itself(t in any_target()) {
        prop_assert_eq!(parse_receiver(&t.to_string()), Some(t));
    }

    #[test]
    fn any_stored_receiver_reads_as_one_that_writes_back_the_same(s in ".{0,40}") {
        if let Some(t) = parse_receiver(&s) {
            prop_assert_eq!(parse_receiver(&t.to_string()), Some(t));
        }
    }
}
