//! The messages waiting for delivery (to a peer offline, or sent and not acknowledged yet), kept in the
//! history's database so that they survive a restart of `mpc` and so that `mpc send` can leave one for the
//! next console or `listen` of the same nickname to deliver.
//!
//! One row per message and receiver, in the order they were queued. Every change is one statement, and so
//! one SQLite transaction: a message queued is one `INSERT`, one delivered or given up is one `DELETE`; the
//! set is never rewritten whole. An `INSERT` of a row already there changes nothing, so importing the same
//! messages twice (a crash between importing an old `outbox-NICK.json` and removing it) keeps one copy.
//!
//! Ids are the peer's `u64` message ids, kept bit for bit in SQLite's signed integers (an id with its top bit
//! set reads back negative in the `sqlite3` shell and the same here). The receiver is a nickname or
//! `IP:PORT` as [`Target`]'s `Display` writes it; [`parse_receiver`] reads it back. A row that does not read
//! back (edited by hand, a damaged file) is refused with the reason and left in place, never a panic.

use rusqlite::params;
use rusqlite::types::ValueRef;

use super::{History, HistoryError, clamp, err};
use crate::nick::Nick;
use crate::peer::Target;

/// Schema 2: the queue. `scope` is where the message was addressed as its sender wrote it ('' for one to
/// one; channels and messages to everyone will write '#name' and '*'); this module keeps it, never reads
/// meaning into it.
pub(super) const SCHEMA_2: &str = "CREATE TABLE IF NOT EXISTS queue (
                 id INTEGER NOT NULL,
                 receiver TEXT NOT NULL,
                 scope TEXT NOT NULL DEFAULT '',
                 sent_ms INTEGER NOT NULL,
                 text TEXT NOT NULL,
                 PRIMARY KEY (id, receiver)
             );";

/// A message waiting for delivery, as the queue keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// Whom it goes to.
    pub to: Target,
    /// The peer's id for it (unique per sender run; with `to`, the row's key).
    pub id: u64,
    /// When it was sent, Unix ms on the sender's clock (the receiver shows it if it arrives late).
    pub sent_ms: u64,
    /// The text, as written.
    pub text: String,
    /// Where it was addressed: '' one to one, later '#name' or '*'. Carried, not interpreted here.
    pub scope: String,
}

/// A receiver as the queue stores it: `IP:PORT`, else a nickname (a nickname never holds a `:`, so no
/// nickname reads as an address). `None` for anything else.
pub fn parse_receiver(s: &str) -> Option<Target> {
    match s.parse() {
        Ok(addr) => Some(Target::Addr(addr)),
        Err(_) => Nick::new(s).ok().map(Target::Nick),
    }
}

/// Keeps one message.
const ADD: &str =
    "INSERT OR IGNORE INTO queue (id, receiver, scope, sent_ms, text) VALUES (?1, ?2, ?3, ?4, ?5)";

impl History {
    /// Queues one message (one transaction). Already queued (same id and receiver): nothing changes.
    pub fn queue_add(&mut self, w: &Waiting) -> Result<(), HistoryError> {
        self.conn
            .prepare_cached(ADD)
            .and_then(|mut st| add(&mut st, w))
            .map_err(err(&self.path, "queue a message in it"))
    }

    /// Queues many messages in one transaction, all or none (the import of an old outbox file).
    pub fn queue_add_all(&mut self, ws: &[Waiting]) -> Result<(), HistoryError> {
        let e = err(&self.path, "queue messages in it");
        let tx = self.conn.transaction().map_err(&e)?;
        {
            let mut st = tx.prepare_cached(ADD).map_err(&e)?;
            for w in ws {
                add(&mut st, w).map_err(&e)?;
            }
        }
        tx.commit().map_err(&e)
    }

    /// Takes message `id` for `to` out of the queue (delivered, or given up): one transaction. Returns
    /// whether it was there.
    pub fn queue_remove(&mut self, id: u64, to: &Target) -> Result<bool, HistoryError> {
        self.conn
            .prepare_cached("DELETE FROM queue WHERE id = ?1 AND receiver = ?2")
            .and_then(|mut st| st.execute(params![id as i64, to.to_string()]))
            .map(|n| n > 0)
            .map_err(err(&self.path, "take a message out of its queue"))
    }

    /// Every queued message in the order queued: each one, or why its row was refused (it stays in the
    /// file; the others load). `Err` only if the table cannot be read at all.
    pub fn queue_load(&self) -> Result<Vec<Result<Waiting, HistoryError>>, HistoryError> {
        let e = err(&self.path, "read its queue");
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT rowid, id, receiver, scope, sent_ms, text FROM queue ORDER BY rowid",
            )
            .map_err(&e)?;
        let mut rows = st.query([]).map_err(&e)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(&e)? {
            let rowid: i64 = r.get(0).map_err(&e)?;
            out.push(row(r).map_err(|why| {
                HistoryError(format!(
                    "history {}: queued message (row {rowid}) refused: {why}; it is left in the file",
                    self.path.display()
                ))
            }));
        }
        Ok(out)
    }

    /// Messages queued for `to`.
    pub fn queue_len_for(&self, to: &Target) -> Result<u64, HistoryError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM queue WHERE receiver = ?1",
                [to.to_string()],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n.max(0) as u64)
            .map_err(err(&self.path, "read its queue"))
    }

    /// Messages queued.
    pub fn queue_len(&self) -> Result<u64, HistoryError> {
        self.conn
            .query_row("SELECT count(*) FROM queue", [], |r| r.get::<_, i64>(0))
            .map(|n| n.max(0) as u64)
            .map_err(err(&self.path, "read its queue"))
    }
}

/// Runs [`ADD`] for `w`.
fn add(st: &mut rusqlite::CachedStatement<'_>, w: &Waiting) -> rusqlite::Result<()> {
    st.execute(params![
        w.id as i64,
        w.to.to_string(),
        w.scope,
        clamp(w.sent_ms),
        w.text
    ])
    .map(|_| ())
}

/// Reads one row of the queue (columns after the rowid), saying what is wrong with it if it does not read
/// as a message. SQLite stores any type in any column, so each is checked, not assumed.
fn row(r: &rusqlite::Row<'_>) -> Result<Waiting, String> {
    let int = |i: usize, what: &str| match r.get_ref(i) {
        Ok(ValueRef::Integer(n)) => Ok(n),
        Ok(v) => Err(format!("{what} is {}, not an integer", type_name(v))),
        Err(e) => Err(format!("{what}: {e}")),
    };
    let text = |i: usize, what: &str| match r.get_ref(i) {
        Ok(ValueRef::Text(t)) => std::str::from_utf8(t)
            .map(str::to_string)
            .map_err(|_| format!("{what} is not UTF-8")),
        Ok(v) => Err(format!("{what} is {}, not text", type_name(v))),
        Err(e) => Err(format!("{what}: {e}")),
    };
    let id = int(1, "the id")? as u64;
    let receiver = text(2, "the receiver")?;
    let to = parse_receiver(&receiver)
        .ok_or_else(|| format!("receiver {receiver:?} is neither a nickname nor IP:PORT"))?;
    let scope = text(3, "the scope")?;
    let sent_ms = int(4, "the time sent")?;
    let sent_ms = u64::try_from(sent_ms).map_err(|_| format!("time sent {sent_ms} is negative"))?;
    let text = text(5, "the text")?;
    if text.trim().is_empty() {
        return Err("the text is empty".into());
    }
    if text.len() > crate::peer::frame::MAX_TEXT {
        return Err(format!(
            "the text is {} bytes, more than a message holds ({})",
            text.len(),
            crate::peer::frame::MAX_TEXT
        ));
    }
    Ok(Waiting {
        to,
        id,
        sent_ms,
        text,
        scope,
    })
}

/// An SQLite value's type, for an error message.
fn type_name(v: ValueRef<'_>) -> &'static str {
    match v {
        ValueRef::Null => "NULL",
        ValueRef::Integer(_) => "an integer",
        ValueRef::Real(_) => "a real",
        ValueRef::Text(_) => "text",
        ValueRef::Blob(_) => "a blob",
    }
}

#[cfg(test)]
mod tests;
