//! Messages waiting for offline peers, kept across `mpc` restarts: a small JSON file per nickname in the
//! user's state directory (`$XDG_STATE_HOME/multiproto`, else `~/.local/state/multiproto`), written
//! atomically whenever the set of waiting messages changes. Bounded by the peer's queue limits.

use std::fs;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::group::Scope;
use crate::nick::Nick;
use crate::peer::Target;

/// A waiting message: receiver, id, sent time (Unix ms), scope, text.
pub type Waiting = (Target, u64, u64, Scope, String);

/// The default state directory.
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("multiproto");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/state/multiproto")
}

#[derive(Serialize, Deserialize)]
struct Saved {
    to_nick: Option<String>,
    to_addr: Option<SocketAddr>,
    id: u64,
    sent_ms: u64,
    /// [`Scope::label`]: "" one-to-one (absent in files from before channels), "*", "#name".
    #[serde(default)]
    scope: String,
    text: String,
}

fn path(dir: &Path, me: &Nick) -> PathBuf {
    dir.join(format!("outbox-{me}.json"))
}

/// Saves the waiting messages of `me` (an empty list removes the file).
pub fn save(dir: &Path, me: &Nick, msgs: &[Waiting]) -> io::Result<()> {
    let p = path(dir, me);
    if msgs.is_empty() {
        return match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    fs::create_dir_all(dir)?;
    let list: Vec<Saved> = msgs
        .iter()
        .map(|(t, id, sent_ms, scope, text)| Saved {
            to_nick: match t {
                Target::Nick(n) => Some(n.to_string()),
                Target::Addr(_) => None,
            },
            to_addr: match t {
                Target::Addr(a) => Some(*a),
                Target::Nick(_) => None,
            },
            id: *id,
            sent_ms: *sent_ms,
            scope: scope.label().to_string(),
            text: text.clone(),
        })
        .collect();
    let tmp = p.with_extension("json.tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(&list).unwrap_or_default())?;
    f.sync_all()?;
    fs::rename(&tmp, &p)
}

/// Loads the waiting messages of `me`. A file that does not parse is renamed aside and reported as an error
/// message, with nothing loaded.
pub fn load(dir: &Path, me: &Nick) -> Result<Vec<Waiting>, String> {
    let p = path(dir, me);
    let bytes = match fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", p.display())),
    };
    match serde_json::from_slice::<Vec<Saved>>(&bytes) {
        Ok(list) => Ok(list
            .into_iter()
            .filter_map(|s| {
                let t = match (s.to_nick, s.to_addr) {
                    (Some(n), _) => Target::Nick(Nick::new(&n).ok()?),
                    (None, Some(a)) => Target::Addr(a),
                    _ => return None,
                };
                Some((t, s.id, s.sent_ms, Scope::from_label(&s.scope)?, s.text))
            })
            .collect()),
        Err(e) => {
            let aside = p.with_extension("json.bad");
            let _ = fs::rename(&p, &aside);
            Err(format!(
                "{} was unreadable ({e}); moved to {}",
                p.display(),
                aside.display()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_empty_and_corrupt() {
        let dir = std::env::temp_dir().join(format!("mp-outbox-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let me = Nick::new("me").unwrap();
        assert_eq!(load(&dir, &me).unwrap(), vec![]);
        let msgs = vec![
            (
                Target::Nick(Nick::new("bob").unwrap()),
                1,
                10,
                Scope::Direct,
                "hi".to_string(),
            ),
            (
                Target::Addr("127.0.0.1:5000".parse().unwrap()),
                2,
                11,
                Scope::Channel(crate::group::ChannelName::new("#ops").unwrap()),
                "there".to_string(),
            ),
        ];
        save(&dir, &me, &msgs).unwrap();
        assert_eq!(load(&dir, &me).unwrap(), msgs);
        save(&dir, &me, &[]).unwrap();
        assert!(!path(&dir, &me).exists());
        fs::write(path(&dir, &me), b"{not json").unwrap();
        let e = load(&dir, &me).unwrap_err();
        assert!(e.contains("moved to"), "{e}");
        assert!(!path(&dir, &me).exists());
    }
}
