use proptest::prelude::*;

use super::*;

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mp-history-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    path(&dir, "alice")
}

fn rec(at_ms: u64, conversation: &str, outgoing: bool, text: &str) -> Record {
    Record {
        at_ms,
        conversation: conversation.into(),
        sender: if outgoing { "alice" } else { conversation }.into(),
        outgoing,
        verified: true,
        text: text.into(),
    }
}

fn texts(rs: &[Record]) -> Vec<&str> {
    rs.iter().map(|r| r.text.as_str()).collect()
}

#[test]
fn kept_both_ways_read_back_by_conversation_and_time() {
    let p = temp("basic");
    let mut h = History::open(&p, Limits::default()).unwrap();
    assert!(h.is_empty().unwrap());
    h.append(&rec(1_000, "bob", true, "hi bob")).unwrap();
    h.append(&rec(2_000, "bob", false, "hi alice\n  indented"))
        .unwrap();
    h.append(&rec(3_000, "carol", false, "the build is green"))
        .unwrap();
    assert_eq!(h.len().unwrap(), 3);
    assert_eq!(
        texts(&h.recent(Some("bob"), 10).unwrap()),
        ["hi bob", "hi alice\n  indented"]
    );
    assert_eq!(
        texts(&h.recent(None, 2).unwrap()),
        ["hi alice\n  indented", "the build is green"]
    );
    assert_eq!(h.conversations(0, 10).unwrap(), ["carol", "bob"]);
    assert_eq!(h.conversations(2_500, 10).unwrap(), ["carol"]);
    // Reopened, as the next run does: all there.
    drop(h);
    let h = History::open(&p, Limits::default()).unwrap();
    assert_eq!(
        h.recent(Some("bob"), 10).unwrap()[1],
        rec(2_000, "bob", false, "hi alice\n  indented")
    );
}

#[test]
fn many_in_one_transaction_read_back_and_are_searchable() {
    let p = temp("many");
    let mut h = History::open(&p, Limits::default()).unwrap();
    let rs: Vec<Record> = (0..100u64)
        .map(|i| rec(i, "bob", i % 2 == 0, &format!("note number{i}")))
        .collect();
    h.append_all(&rs).unwrap();
    assert_eq!(h.len().unwrap(), 100);
    assert_eq!(texts(&h.search("number42", 5).unwrap()), ["note number42"]);
    assert_eq!(h.recent(Some("bob"), 100).unwrap(), rs);
}

#[test]
fn search_finds_whole_words_in_any_case_and_every_word() {
    let p = temp("search");
    let mut h = History::open(&p, Limits::default()).unwrap();
    h.append(&rec(1, "bob", false, "Deploy at noon")).unwrap();
    h.append(&rec(2, "carol", true, "the deploy failed: disk full"))
        .unwrap();
    h.append(&rec(3, "bob", false, "redeploying now")).unwrap();
    assert_eq!(
        texts(&h.search("deploy", 10).unwrap()),
        ["Deploy at noon", "the deploy failed: disk full"]
    );
    assert_eq!(
        texts(&h.search("DEPLOY disk", 10).unwrap()),
        ["the deploy failed: disk full"]
    );
    assert!(h.search("   ", 10).unwrap().is_empty());
    assert_eq!(
        texts(&h.search("deploy", 1).unwrap()),
        ["the deploy failed: disk full"]
    );
    // What would be FTS5 syntax is looked for as text, never an error.
    for hostile in [
        "NEAR(a b)",
        "\"",
        "a*",
        "-deploy",
        "deploy OR x",
        "col:deploy",
        "^deploy",
        "(",
        "AND",
    ] {
        assert!(h.search(hostile, 10).is_ok(), "{hostile:?}");
    }
}

#[test]
fn pruned_by_age_then_by_count() {
    let p = temp("prune");
    let limits = Limits {
        max_messages: 3,
        max_age: Duration::from_secs(10),
    };
    let mut h = History::open(&p, limits).unwrap();
    for i in 0..6u64 {
        h.append(&rec(i * 1_000, "bob", false, &format!("m{i}")))
            .unwrap();
    }
    // At 13.5 s, m0 to m3 are older than 10 s and go; m4 and m5 stay (under the count).
    assert_eq!(h.prune(13_500).unwrap(), 4);
    assert_eq!(texts(&h.recent(None, 10).unwrap()), ["m4", "m5"]);
    for i in 6..10u64 {
        h.append(&rec(i * 1_000, "bob", false, &format!("m{i}")))
            .unwrap();
    }
    // By count: the three newest stay; the removed ones are gone from search too.
    assert_eq!(h.prune(10_000).unwrap(), 3);
    assert_eq!(texts(&h.recent(None, 10).unwrap()), ["m7", "m8", "m9"]);
    assert!(h.search("m4", 10).unwrap().is_empty());
    assert_eq!(texts(&h.search("m8", 10).unwrap()), ["m8"]);
}

#[test]
fn a_file_that_is_not_a_history_is_refused_and_left_alone() {
    let p = temp("foreign");
    std::fs::write(
        &p,
        b"this is not SQLite, and it must not be overwritten ...................",
    )
    .unwrap();
    let e = History::open(&p, Limits::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("move it away"), "{e}");
    assert!(
        std::fs::read(&p)
            .unwrap()
            .starts_with(b"this is not SQLite")
    );
    // One of a newer schema: refused, untouched.
    let p = temp("newer");
    let c = Connection::open(&p).unwrap();
    c.execute_batch("PRAGMA user_version = 7").unwrap();
    drop(c);
    let e = History::open(&p, Limits::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("upgrade mpc"), "{e}");
}

proptest! {
    #[test]
    fn any_words_make_a_query_that_runs(words in ".{0,40}") {
        let q = fts_query(&words);
        let has_words = words
            .split_whitespace()
            .any(|w| w.chars().any(|c| !c.is_control()));
        prop_assert_eq!(q.is_some(), has_words);
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE VIRTUAL TABLE t USING fts5(text); INSERT INTO t VALUES ('some text');").unwrap();
        if let Some(q) = q {
            let r: rusqlite::Result<i64> =
                c.query_row("SELECT count(*) FROM t WHERE t MATCH ?1", [q], |r| r.get(0));
            prop_assert!(r.is_ok(), "{:?}", r);
        }
    }
}

#[test]
fn a_rename_moves_the_history_and_never_overwrites_another() {
    let p = temp("rename");
    let dir = p.parent().unwrap().to_path_buf();
    let mut h = History::open(&p, Limits::default()).unwrap();
    h.append(&rec(1_000, "#ops", false, "in the channel"))
        .unwrap();
    drop(h);
    assert_eq!(move_files(&dir, "alice", "alicia"), Ok(true));
    assert!(!p.exists());
    let h = History::open(&path(&dir, "alicia"), Limits::default()).unwrap();
    assert_eq!(
        texts(&h.recent(Some("#ops"), 5).unwrap()),
        ["in the channel"]
    );
    drop(h);
    // Nothing under the old name: nothing to move, no error.
    assert_eq!(move_files(&dir, "alice", "alicia"), Ok(false));
    // A history under the new name already: both stay as they are.
    let mut other = History::open(&path(&dir, "bob"), Limits::default()).unwrap();
    other.append(&rec(2_000, "carol", false, "bob's")).unwrap();
    drop(other);
    let e = move_files(&dir, "alicia", "bob").unwrap_err();
    assert!(e.contains("exists already"), "{e}");
    let h = History::open(&path(&dir, "alicia"), Limits::default()).unwrap();
    assert_eq!(h.len().unwrap(), 1);
    let b = History::open(&path(&dir, "bob"), Limits::default()).unwrap();
    assert_eq!(texts(&b.recent(None, 5).unwrap()), ["bob's"]);
}
