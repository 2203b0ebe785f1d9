//! The message history a client keeps, both directions, in an SQLite database in its state directory
//! (`history-NICK.sqlite3`): what `history` and `search` read, and what the console shows of recent
//! conversations when it starts. The same file holds the messages still waiting for delivery ([`queue`]).
//!
//! One table of messages, indexed by conversation and time, and an FTS5 index of their text (kept in step by
//! triggers) for `search`. Bounded by a count and an age: [`History::prune`] removes the oldest beyond
//! either. Each append is one transaction (SQLite's own, in WAL mode), so a crash loses at most the message
//! being written, never the file.
//!
//! A search is built from the user's words, each quoted as an FTS5 string, so no input is FTS5 syntax: a
//! word like `NEAR(` or `"` is looked for as text, never parsed as a query.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

/// Bounds of a history.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Messages kept at most; the oldest go first.
    pub max_messages: u64,
    /// Messages older than this go.
    pub max_age: Duration,
}

impl Default for Limits {
    /// A million messages (a few hundred MB of typical chat at most) and a year.
    fn default() -> Limits {
        Limits {
            max_messages: 1_000_000,
            max_age: Duration::from_secs(365 * 24 * 3600),
        }
    }
}

/// One message as the history keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// When it was sent (ours) or received (theirs), Unix ms on this host.
    pub at_ms: u64,
    /// The conversation: the other party's nickname (or `IP:PORT` for an address), later `#channel` or `*`.
    pub conversation: String,
    /// Who wrote it: a nickname, or an unknown sender's fingerprint.
    pub sender: String,
    /// Ours.
    pub outgoing: bool,
    /// For a received message: its sender was proved to be who the roster says (false for an unknown key).
    pub verified: bool,
    /// The text, as received (sanitised) or sent.
    pub text: String,
}

impl Record {
    /// A message we sent to `to`, at `at_ms`.
    pub fn sent(me: &str, to: &crate::peer::Target, text: &str, at_ms: u64) -> Record {
        Record {
            at_ms,
            conversation: to.to_string(),
            sender: me.to_string(),
            outgoing: true,
            verified: true,
            text: text.to_string(),
        }
    }

    /// The same message, in conversation `c` instead (a channel's name, or `*` for a message to everyone).
    pub fn in_conversation(mut self, c: &str) -> Record {
        c.clone_into(&mut self.conversation);
        self
    }

    /// A message received at `at_ms` from the sender who claims `from` and proved `key`: under the name if
    /// the roster gives that key for it (`verified`), else as the unknown key it is, in a conversation of
    /// its own.
    pub fn received(
        from: &str,
        key: &crate::identity::PublicKey,
        verified: bool,
        text: &str,
        at_ms: u64,
    ) -> Record {
        let fp = key.fingerprint().to_string();
        Record {
            at_ms,
            conversation: if verified {
                from.to_string()
            } else {
                fp.clone()
            },
            sender: if verified {
                from.to_string()
            } else {
                format!("unknown {fp} claiming to be {from}")
            },
            outgoing: false,
            verified,
            text: text.to_string(),
        }
    }
}

/// Why the history could not be used.
#[derive(Debug)]
pub struct HistoryError(String);

impl std::fmt::Display for HistoryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HistoryError {}

fn err(path: &Path, what: &str) -> impl Fn(rusqlite::Error) -> HistoryError {
    let p = path.display().to_string();
    let what = what.to_string();
    move |e| HistoryError(format!("history {p}: cannot {what}: {e}"))
}

/// Keeps one message.
const INSERT: &str = "INSERT INTO messages (at_ms, conversation, sender, outgoing, verified, text)
                      VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// The schema's version (SQLite's `user_version`): a file of a later one is not touched. 1: the messages and
/// their search index; 2: the queue of messages waiting for delivery ([`queue`]).
const SCHEMA: i64 = 2;

/// Schema 1: the messages, their indexes, and the FTS5 index kept in step by triggers.
const SCHEMA_1: &str = "CREATE TABLE IF NOT EXISTS messages (
                 id INTEGER PRIMARY KEY,
                 at_ms INTEGER NOT NULL,
                 conversation TEXT NOT NULL,
                 sender TEXT NOT NULL,
                 outgoing INTEGER NOT NULL,
                 verified INTEGER NOT NULL,
                 text TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages (conversation, at_ms);
             CREATE INDEX IF NOT EXISTS messages_by_time ON messages (at_ms);
             CREATE VIRTUAL TABLE IF NOT EXISTS messages_text
                 USING fts5 (text, content = 'messages', content_rowid = 'id');
             CREATE TRIGGER IF NOT EXISTS messages_indexed AFTER INSERT ON messages BEGIN
                 INSERT INTO messages_text (rowid, text) VALUES (new.id, new.text);
             END;
             CREATE TRIGGER IF NOT EXISTS messages_unindexed AFTER DELETE ON messages BEGIN
                 INSERT INTO messages_text (messages_text, rowid, text) VALUES ('delete', old.id, old.text);
             END;";

/// Brings a file of schema `from` (0: a new file) up to [`SCHEMA`], one step per version, each step and its
/// version number in one transaction: a crash leaves the file at one version or the next, never between.
/// `IMMEDIATE` takes the write lock first, so two clients opening an old file at once migrate it one after
/// the other (the second finds the tables there: every step is `IF NOT EXISTS`).
fn migrate(conn: &mut Connection, from: i64) -> rusqlite::Result<()> {
    let steps: [(i64, &str); 2] = [(1, SCHEMA_1), (2, queue::SCHEMA_2)];
    for (version, sql) in steps {
        if from < version {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", version)?;
            tx.commit()?;
        }
    }
    Ok(())
}

/// A client's message history.
pub struct History {
    conn: Connection,
    path: PathBuf,
    limits: Limits,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History").field("path", &self.path).finish()
    }
}

/// The history file of `nick` in the state directory `dir`.
pub fn path(dir: &Path, nick: &str) -> PathBuf {
    dir.join(format!("history-{nick}.sqlite3"))
}

/// Moves `from`'s history database (with its write-ahead log, if any) to `to`'s name in `dir`, after a
/// rename: the conversations and the waiting messages follow the nickname. Every connection to it must be
/// closed first. Nothing to move is no error; a history of `to` already there is, and nothing is moved (the
/// two are not merged).
pub fn move_files(dir: &Path, from: &str, to: &str) -> Result<bool, String> {
    let (old, new) = (path(dir, from), path(dir, to));
    if !old.exists() {
        return Ok(false);
    }
    if new.exists() {
        return Err(format!(
            "{} exists already, so {} stays where it is (read it with `mpc --nick {from} history`)",
            new.display(),
            old.display()
        ));
    }
    // The log first: a crash between the two leaves the main file under the old name and its log under the
    // new one, which SQLite ignores (the log's changes were checkpointed when the last connection closed).
    for suffix in ["-wal", "-shm"] {
        let (o, n) = (
            PathBuf::from(format!("{}{suffix}", old.display())),
            PathBuf::from(format!("{}{suffix}", new.display())),
        );
        if o.exists() {
            std::fs::rename(&o, &n).map_err(|e| format!("cannot move {}: {e}", o.display()))?;
        }
    }
    std::fs::rename(&old, &new).map_err(|e| format!("cannot move {}: {e}", old.display()))?;
    Ok(true)
}

impl History {
    /// Opens (creating it if needed) the history at `path`. A file that is not a history of this schema, or
    /// of a later one, is refused with a message that says what to do; nothing is overwritten.
    pub fn open(path: &Path, limits: Limits) -> Result<History, HistoryError> {
        let mut conn = Connection::open(path).map_err(err(path, "open it"))?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| {
                HistoryError(format!(
                    "history {}: not an SQLite database ({e}); move it away and a new one is made",
                    path.display()
                ))
            })?;
        if version > SCHEMA {
            return Err(HistoryError(format!(
                "history {} was written by a newer mpc (schema {version}, this one knows {SCHEMA}): upgrade mpc",
                path.display()
            )));
        }
        // WAL: a reader (`mpc history`) never waits for the writer; NORMAL: a commit is not an fsync, a
        // power cut may lose the last ones but never the file. Neither can be set inside a transaction.
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            .map_err(err(path, "set it up"))?;
        migrate(&mut conn, version).map_err(err(path, "set it up"))?;
        Ok(History {
            conn,
            path: path.to_path_buf(),
            limits,
        })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps one message (one transaction).
    pub fn append(&mut self, r: &Record) -> Result<(), HistoryError> {
        self.conn
            .prepare_cached(INSERT)
            .and_then(|mut st| insert(&mut st, r))
            .map_err(err(&self.path, "write to it"))
    }

    /// Keeps many messages in one transaction (an import, the benchmark's history): all or none.
    pub fn append_all(&mut self, rs: &[Record]) -> Result<(), HistoryError> {
        let e = err(&self.path, "write to it");
        let tx = self.conn.transaction().map_err(&e)?;
        {
            let mut st = tx.prepare_cached(INSERT).map_err(&e)?;
            for r in rs {
                insert(&mut st, r).map_err(&e)?;
            }
        }
        tx.commit().map_err(&e)
    }

    /// The last `n` messages, oldest first: of one conversation, or of all.
    pub fn recent(
        &self,
        conversation: Option<&str>,
        n: usize,
    ) -> Result<Vec<Record>, HistoryError> {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let sql = "SELECT at_ms, conversation, sender, outgoing, verified, text FROM messages
                   WHERE ?1 IS NULL OR conversation = ?1 ORDER BY at_ms DESC, id DESC LIMIT ?2";
        let mut rows = self.query(sql, params![conversation, n])?;
        rows.reverse();
        Ok(rows)
    }

    /// The conversations with a message since `since_ms`, the most recent first, at most `n`.
    pub fn conversations(&self, since_ms: u64, n: usize) -> Result<Vec<String>, HistoryError> {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT conversation FROM messages WHERE at_ms >= ?1
                 GROUP BY conversation ORDER BY max(at_ms) DESC LIMIT ?2",
            )
            .map_err(err(&self.path, "read it"))?;
        let rows = st
            .query_map(params![clamp(since_ms), n], |r| r.get(0))
            .and_then(|it| it.collect::<Result<Vec<String>, _>>())
            .map_err(err(&self.path, "read it"))?;
        Ok(rows)
    }

    /// The messages whose text has every one of `words` (whole words, any case), the most recent `n`,
    /// oldest first. No words: nothing.
    pub fn search(&self, words: &str, n: usize) -> Result<Vec<Record>, HistoryError> {
        let Some(q) = fts_query(words) else {
            return Ok(Vec::new());
        };
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        // Newest first by rowid, which FTS5 walks in order and stops after the limit: a word in a third of a
        // million messages costs the 20 it returns, not a sort of all of them (p99 37 ms at 100 000 messages
        // sorting by time; see PERF.md). Ids grow with time, as messages are kept when sent or received.
        let sql = "SELECT m.at_ms, m.conversation, m.sender, m.outgoing, m.verified, m.text
                   FROM (SELECT rowid FROM messages_text WHERE messages_text MATCH ?1
                         ORDER BY rowid DESC LIMIT ?2) AS hit
                   JOIN messages m ON m.id = hit.rowid ORDER BY m.id DESC";
        let mut rows = self.query(sql, params![q, n])?;
        rows.reverse();
        Ok(rows)
    }

    /// Removes what is beyond the limits at wall-clock time `now_ms`: messages older than the age limit, then
    /// the oldest beyond the count. Returns how many went.
    pub fn prune(&mut self, now_ms: u64) -> Result<usize, HistoryError> {
        let cutoff = now_ms.saturating_sub(self.limits.max_age.as_millis() as u64);
        let e = err(&self.path, "prune it");
        let tx = self.conn.transaction().map_err(&e)?;
        let mut gone = tx
            .execute(
                "DELETE FROM messages WHERE at_ms < ?1",
                params![clamp(cutoff)],
            )
            .map_err(&e)?;
        let count: i64 = tx
            .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
            .map_err(&e)?;
        let max = i64::try_from(self.limits.max_messages).unwrap_or(i64::MAX);
        if count > max {
            gone += tx
                .execute(
                    "DELETE FROM messages WHERE id IN
                     (SELECT id FROM messages ORDER BY at_ms, id LIMIT ?1)",
                    params![count - max],
                )
                .map_err(&e)?;
        }
        tx.commit().map_err(&e)?;
        Ok(gone)
    }

    /// Messages kept.
    pub fn len(&self) -> Result<u64, HistoryError> {
        self.conn
            .query_row("SELECT count(*) FROM messages", [], |r| r.get::<_, i64>(0))
            .optional()
            .map(|n| n.unwrap_or(0).max(0) as u64)
            .map_err(err(&self.path, "read it"))
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> Result<bool, HistoryError> {
        Ok(self.len()? == 0)
    }

    fn query(&self, sql: &str, args: impl rusqlite::Params) -> Result<Vec<Record>, HistoryError> {
        let e = err(&self.path, "read it");
        let mut st = self.conn.prepare_cached(sql).map_err(&e)?;
        let rows = st
            .query_map(args, |r| {
                Ok(Record {
                    at_ms: r.get::<_, i64>(0)?.max(0) as u64,
                    conversation: r.get(1)?,
                    sender: r.get(2)?,
                    outgoing: r.get(3)?,
                    verified: r.get(4)?,
                    text: r.get(5)?,
                })
            })
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(&e)?;
        Ok(rows)
    }
}

/// Runs [`INSERT`] for `r`.
fn insert(st: &mut rusqlite::CachedStatement<'_>, r: &Record) -> rusqlite::Result<()> {
    st.execute(params![
        clamp(r.at_ms),
        r.conversation,
        r.sender,
        r.outgoing,
        r.verified,
        r.text
    ])
    .map(|_| ())
}

/// SQLite integers are signed: times past 2^63 ms (never real) are kept as the largest.
fn clamp(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// An FTS5 query for `words`: each whitespace-separated word as a quoted string (a `"` inside doubled, control
/// characters dropped: FTS5 ends a string at a NUL), all of them required. `None` if there are no words.
/// Nothing the user types is FTS5 syntax.
pub fn fts_query(words: &str) -> Option<String> {
    let terms: Vec<String> = words
        .split_whitespace()
        .map(|w| w.chars().filter(|c| !c.is_control()).collect::<String>())
        .filter(|w| !w.is_empty())
        .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" "))
}

pub mod queue;

#[cfg(test)]
mod tests;
