//! The console's file transfers (issue 16): `file NAME PATH`, `accept N [DIR]`, `decline N`, `cancel N`,
//! `transfers`, what an offer and each step of a transfer say, and the progress shown in the prompt, which
//! the line editor redraws on its own line, so a transfer never garbles what is being typed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::style::Kind;
use super::{Console, Ui, prompt};
use crate::peer::{FileEvent, FileInfo, FileState, Target, XferId};
use crate::time::Instant;
use crate::transfer::frame::TransferId;
use crate::transfer::recv::RecvEvent;
use crate::transfer::send::SendEvent;

/// How often the progress in the prompt (or, without a terminal, a progress line) is brought up to date.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// Without a terminal, a progress line at most this often (a log, not an animation).
const PROGRESS_LINE_EVERY: Duration = Duration::from_secs(10);

/// `n` bytes for people: `512 B`, `1.5 MiB`.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// "40% of 1.0 GiB, 12.0 MiB/s, 50 s left": how far `done` of `total` is, at the rate since `since` (when
/// `from` bytes were done).
pub fn progress(now: Instant, since: Instant, from: u64, done: u64, total: u64) -> String {
    let pct = (done as f64 * 100.0 / total.max(1) as f64).floor();
    let mut s = format!("{pct:.0}% of {}", human(total));
    if let Some(rate) = rate(now, since, from, done) {
        let left = total.saturating_sub(done) as f64 / rate as f64;
        s += &format!(", {}/s, {:.0} s left", human(rate), left.ceil());
    }
    s
}

/// Bytes a second since `since` (when `from` bytes were done) now that `done` are, once there is enough to
/// tell (half a second, a byte).
pub fn rate(now: Instant, since: Instant, from: u64, done: u64) -> Option<u64> {
    let secs = now.saturating_since(since).as_secs_f64();
    let moved = done.saturating_sub(from);
    (secs >= 0.5 && moved > 0).then(|| (moved as f64 / secs) as u64)
}

/// The directory received files go to by default: `$XDG_DOWNLOAD_DIR`, else `~/Downloads`, else the
/// current directory.
pub fn default_downloads() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DOWNLOAD_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => Path::new(&h).join("Downloads"),
        None => PathBuf::from("."),
    }
}

/// `~/x` as the home directory's `x`; anything else as it is.
pub fn expand_home(typed: &str) -> PathBuf {
    match (typed.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ if typed == "~" => std::env::var_os("HOME").map_or_else(|| typed.into(), PathBuf::from),
        _ => PathBuf::from(typed),
    }
}

/// What the console keeps of its transfers.
#[derive(Default)]
pub struct Transfers {
    /// Under way: when it started (and how much was done then, for the rate), when progress was last shown.
    shown: HashMap<XferId, (Instant, u64, Instant)>,
    /// Where each accepted transfer (by id) goes: an offer of it again (after a cut) resumes there
    /// without asking.
    dirs: HashMap<TransferId, PathBuf>,
    /// The prompt's status (progress of the transfers under way), as last set.
    status: String,
}

impl Transfers {
    /// The prompt was set without the status: the next refresh sets it whole.
    pub fn reset_prompt(&mut self) {
        self.status.clear();
    }
}

impl Console {
    /// The prompt: who we are, where plain lines go, and how the transfers are going.
    pub(super) fn refresh_prompt(&mut self) {
        let mut status = Vec::new();
        let now = self.sess.now();
        let mut under_way: Vec<(XferId, FileInfo)> = self
            .sess
            .chat
            .peer
            .files()
            .into_iter()
            .filter(|(_, f)| matches!(f.state, FileState::Sending | FileState::Receiving))
            .collect();
        under_way.sort_by_key(|(x, _)| *x);
        for (x, f) in under_way.iter().take(2) {
            let (since, from, _) = self
                .transfers
                .shown
                .get(x)
                .copied()
                .unwrap_or((now, 0, now));
            let arrow = if f.outgoing { "↑" } else { "↓" };
            status.push(format!(
                "{arrow}{} {}",
                f.name,
                progress(now, since, from, f.verified, f.total)
            ));
        }
        if under_way.len() > 2 {
            status.push(format!("+{} more", under_way.len() - 2));
        }
        let status = status.join(" | ");
        if status == self.transfers.status {
            return;
        }
        self.transfers.status = status;
        if let Ui::Editor(e) = &self.ui {
            let base = prompt(&self.me, self.query);
            if self.transfers.status.is_empty() {
                e.set_prompt(&base);
            } else {
                e.set_prompt(&format!("[{}] {base}", self.transfers.status));
            }
        }
    }

    /// `file NAME PATH`: the path is walked now and hashed in steps while the console goes on; the offer
    /// goes when it is hashed ([`Console::offers_prepared`]).
    pub(super) fn send_file(&mut self, to: Target, typed: &str) {
        let path = expand_home(typed);
        match self.sess.chat.files.prepare(to, &path) {
            Ok((_, total, count)) => {
                let what = if count == 1 {
                    human(total)
                } else {
                    format!("{} in {count} files and folders", human(total))
                };
                self.notice(
                    Some(Kind::System),
                    &format!("reading {} ({what}) to offer it to {to}...", path.display()),
                );
            }
            Err(e) => self.notice(Some(Kind::Error), &format!("not sent: {e}")),
        }
    }

    /// Offers whose files are hashed now: said, with how to stop them.
    pub(super) fn offers_prepared(&mut self) {
        while let Some(p) = self.sess.chat.files.poll_prepared() {
            let (to, path) = (p.to, p.path.display());
            let (x, _, _) = match p.result {
                Ok(r) => r,
                Err(e) => {
                    self.notice(Some(Kind::Error), &format!("{path} not sent: {e}"));
                    continue;
                }
            };
            let online = match to {
                Target::Nick(n) => self
                    .sess
                    .io
                    .client
                    .roster()
                    .get(&n)
                    .is_some_and(|e| e.status == crate::registry::wire::Status::Online),
                Target::Addr(_) => true,
            };
            let wait = if online {
                format!("waiting for {to} to accept")
            } else {
                format!("{to} is offline: offered when {to} is back, while this runs")
            };
            let n = x.number();
            self.notice(
                Some(Kind::System),
                &format!("transfer {n}: offering {path} to {to}; {wait} (cancel {n} to stop)"),
            );
        }
    }

    /// `accept N [DIR]`.
    pub(super) fn accept_file(&mut self, n: u32, dir: Option<&str>) {
        let Some(x) = self.offer_numbered(n) else {
            return;
        };
        let dir = dir.map_or_else(|| self.opts.downloads.clone(), expand_home);
        self.accept_into(x, &dir);
    }

    fn accept_into(&mut self, x: XferId, dir: &Path) {
        let now = self.sess.now();
        let chat = &mut self.sess.chat;
        let id = chat.peer.file(x).map(|f| f.id);
        match chat.files.accept(&mut chat.peer, now, x, dir) {
            Ok(()) => {
                if let Some(id) = id {
                    self.transfers.dirs.insert(id, dir.to_path_buf());
                }
                self.transfers.shown.insert(x, (now, 0, now));
                self.notice(
                    Some(Kind::System),
                    &format!("transfer {}: receiving into {}", x.number(), dir.display()),
                );
            }
            Err(e) => self.notice(
                Some(Kind::Error),
                &format!("cannot accept transfer {}: {e}", x.number()),
            ),
        }
    }

    /// The offer numbered `n` waiting for an answer, or a notice saying there is none.
    fn offer_numbered(&mut self, n: u32) -> Option<XferId> {
        let x = self
            .sess
            .chat
            .peer
            .file_by_number(n)
            .filter(|x| self.sess.chat.peer.file(*x).is_some_and(|f| !f.outgoing));
        if x.is_none() {
            self.notice(
                Some(Kind::Error),
                &format!("no offer numbered {n} (see `transfers`)"),
            );
        }
        x
    }

    /// `decline N`.
    pub(super) fn decline_file(&mut self, n: u32) {
        if let Some(x) = self.offer_numbered(n) {
            let now = self.sess.now();
            self.sess.chat.peer.decline_file(now, x);
        }
    }

    /// `cancel N`: either way.
    pub(super) fn cancel_file(&mut self, n: u32) {
        let now = self.sess.now();
        match self.sess.chat.peer.file_by_number(n) {
            Some(x) => self.sess.chat.peer.cancel_file(now, x),
            None => self.notice(
                Some(Kind::Error),
                &format!("no transfer numbered {n} (see `transfers`)"),
            ),
        }
    }

    /// `transfers`: a line each.
    pub(super) fn show_transfers(&self) {
        let files = self.sess.chat.peer.files();
        if files.is_empty() {
            self.say("no transfers (file NAME PATH sends one)");
            return;
        }
        let now = self.sess.now();
        let mut lines = Vec::new();
        for (x, f) in files {
            let (since, from, _) = self
                .transfers
                .shown
                .get(&x)
                .copied()
                .unwrap_or((now, 0, now));
            let way = if f.outgoing {
                format!("to {}", f.peer)
            } else {
                format!("from {}", f.peer)
            };
            let answer = if !f.outgoing && f.state == FileState::Offered {
                format!(" (accept {} [DIR] / decline {})", x.number(), x.number())
            } else {
                String::new()
            };
            lines.push(format!(
                "{:>3}  {} {way}: {}, {}{answer}",
                x.number(),
                f.name,
                f.state,
                progress(now, since, from, f.verified, f.total)
            ));
        }
        self.say(&lines.join("\n"));
    }

    /// What happened to a transfer, said.
    pub(super) fn file_event(&mut self, x: XferId, event: &FileEvent, info: &FileInfo) {
        let now = self.sess.now();
        let n = x.number();
        let (kind, text) = match event {
            FileEvent::Offered {
                id,
                from,
                key,
                verified,
                name,
                total,
                count,
            } => {
                let who = if *verified {
                    from.to_string()
                } else {
                    format!("an unknown key {} claiming to be {from}", key.fingerprint())
                };
                let what = if *count == 1 {
                    format!("{name} ({})", human(*total))
                } else {
                    format!(
                        "the folder {name} ({} in {count} files and folders)",
                        human(*total)
                    )
                };
                // Offered again after a cut: it goes on where it was going, without asking again.
                if let Some(dir) = self.transfers.dirs.get(id).cloned() {
                    self.notice(
                        Some(Kind::System),
                        &format!("transfer {n}: {who} offers {what} again; resuming"),
                    );
                    self.accept_into(x, &dir);
                    return;
                }
                (
                    Kind::Warn,
                    format!(
                        "transfer {n}: {who} offers {what}: accept {n} [DIR] (into {}) or decline {n}",
                        self.opts.downloads.display()
                    ),
                )
            }
            FileEvent::Send(SendEvent::Accepted { skipped }) => {
                self.transfers.shown.insert(x, (now, *skipped, now));
                let held = if *skipped > 0 {
                    format!("; {} already there, not sent again", human(*skipped))
                } else {
                    String::new()
                };
                (
                    Kind::System,
                    format!("transfer {n}: {} accepted {}{held}", info.peer, info.name),
                )
            }
            FileEvent::Send(SendEvent::Progress { .. })
            | FileEvent::Recv(RecvEvent::Progress { .. }) => {
                self.progress_line(x, info);
                return;
            }
            FileEvent::Send(SendEvent::Done) => {
                self.transfers.shown.remove(&x);
                (
                    Kind::Good,
                    format!(
                        "transfer {n}: {} has {} ({}), every byte verified",
                        info.peer,
                        info.name,
                        human(info.total)
                    ),
                )
            }
            FileEvent::Recv(RecvEvent::Received { .. }) => {
                self.transfers.shown.remove(&x);
                let at = self
                    .sess
                    .chat
                    .files
                    .take_received(x)
                    .map_or_else(String::new, |r| format!(" as {}", r.path.display()));
                (
                    Kind::Good,
                    format!(
                        "transfer {n}: received {} from {}{at} ({}), every file's hash matched",
                        info.name,
                        info.peer,
                        human(info.total)
                    ),
                )
            }
            FileEvent::Send(SendEvent::Failed(f))
            | FileEvent::Recv(RecvEvent::Failed { failure: f, .. }) => {
                self.transfers.shown.remove(&x);
                let by = if f.by_peer {
                    format!("{} says: ", info.peer)
                } else {
                    String::new()
                };
                let kept = if info.outgoing || info.verified == 0 {
                    String::new()
                } else {
                    format!("; the {} verified are kept", human(info.verified))
                };
                (
                    Kind::Error,
                    format!(
                        "transfer {n} ({}) failed: {by}{}{kept}",
                        info.name, f.reason
                    ),
                )
            }
            FileEvent::Cut { reason, retry_in } => {
                self.transfers.shown.remove(&x);
                match retry_in {
                    Some(d) => (
                        Kind::Warn,
                        format!(
                            "transfer {n} ({}): {reason}; offering it again in {:.0} s (cancel {n} to stop)",
                            info.name,
                            d.as_secs_f64().ceil()
                        ),
                    ),
                    None => (
                        Kind::Warn,
                        format!(
                            "transfer {n} ({}): {reason}; what arrived is kept and resumes if it is sent again",
                            info.name
                        ),
                    ),
                }
            }
            FileEvent::Recv(RecvEvent::Offered { .. }) => return,
        };
        self.notice(Some(kind), &text);
        self.refresh_prompt();
    }

    /// Progress: in the prompt on a terminal (at most twice a second), as a line now and then without one.
    fn progress_line(&mut self, x: XferId, info: &FileInfo) {
        let now = self.sess.now();
        let Some((since, from, last)) = self.transfers.shown.get(&x).copied() else {
            return;
        };
        let every = match self.ui {
            Ui::Editor(_) => PROGRESS_EVERY,
            Ui::Lines { .. } => PROGRESS_LINE_EVERY,
        };
        if now.saturating_since(last) < every {
            return;
        }
        self.transfers.shown.insert(x, (since, from, now));
        match self.ui {
            Ui::Editor(_) => self.refresh_prompt(),
            Ui::Lines { .. } => self.notice(
                None,
                &format!(
                    "transfer {}: {}",
                    x.number(),
                    progress(now, since, from, info.verified, info.total)
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_progress_read_well() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(5 << 30), "5.0 GiB");
        let t0 = Instant::from_millis(0);
        let t1 = Instant::from_millis(2000);
        assert_eq!(progress(t0, t0, 0, 0, 100), "0% of 100 B");
        assert_eq!(
            progress(t1, t0, 0, 40 << 20, 100 << 20),
            "40% of 100.0 MiB, 20.0 MiB/s, 3 s left"
        );
        // Bytes held from before a resume do not count towards the rate.
        assert_eq!(
            progress(t1, t0, 30 << 20, 40 << 20, 100 << 20),
            "40% of 100.0 MiB, 5.0 MiB/s, 12 s left"
        );
    }

    #[test]
    fn home_is_expanded_only_at_the_start() {
        if let Some(home) = std::env::var_os("HOME") {
            assert_eq!(expand_home("~/x/y"), Path::new(&home).join("x/y"));
        }
        assert_eq!(expand_home("a/~/b"), PathBuf::from("a/~/b"));
        assert_eq!(expand_home("/abs"), PathBuf::from("/abs"));
    }
}
