//! mpc's file transfers: `send-file`, and what `listen` does with offers (`--accept-files DIR`) and how it
//! reports them.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;

use multiproto::client::ClientEvent;
use multiproto::client::roster::Applied;
use multiproto::console::files::{human, progress, rate};
use multiproto::io::outgoing;
use multiproto::nick::Nick;
use multiproto::peer::{FileEvent, FileInfo, PeerEvent, Target, XferId};
use multiproto::registry::wire::Status;
use multiproto::session::{Session, SessionEvent};
use multiproto::time::Instant;
use multiproto::transfer::recv::{Limits, RecvEvent};
use multiproto::transfer::send::SendEvent;

use super::{Args, NO_DAEMON, ends_early, finish, key_changed, no_daemon_message};

/// send a file or a folder (and everything in it) to PEER, straight to its client over an encrypted
/// connection of its own, and exit 0 once PEER has every byte and every file's BLAKE3 matched. PEER's user
/// is asked to accept (`mpc listen --accept-files DIR` accepts at once). Cut (either side stopped, the link
/// went down), the transfer is offered again while this runs; run the same command again later and it
/// resumes where it stopped, sending again only what was not yet verified. Symbolic links are not followed
/// or sent. Exit codes: 0 received and verified; 1 declined, failed (the reason is printed), stalled
/// for --stall seconds, or interrupted; 3 PEER is not in the roster or offline; 4 no daemon
#[derive(FromArgs)]
#[argh(subcommand, name = "send-file")]
pub struct SendFile {
    /// the receiver's nickname (or IP:PORT of its chat port)
    #[argh(positional)]
    peer: String,
    /// the file or folder
    #[argh(positional)]
    path: PathBuf,
    /// seconds to wait for the receiver to accept (default 600)
    #[argh(option, default = "600")]
    wait: u64,
    /// seconds without progress after which the transfer is given up (default 60; run again to resume)
    #[argh(option, default = "60")]
    stall: u64,
}

/// What a receiver accepts, from the command line.
pub fn receive_limits(a: &Args) -> Limits {
    Limits {
        max_total: a.max_receive,
        max_files: a.max_receive_files,
        max_file_size: a.max_receive,
        ..Limits::default()
    }
}

fn target_of(peer: &str) -> Result<Target, String> {
    match peer.parse() {
        Ok(addr) => Ok(Target::Addr(addr)),
        Err(_) => Nick::new(peer)
            .map(Target::Nick)
            .map_err(|e| format!("{peer:?} is neither a nickname nor an IP:PORT: {e}")),
    }
}

/// `mpc send-file`.
pub fn send_file(a: &Args, f: &SendFile, nick: Nick) -> std::io::Result<ExitCode> {
    let mut target = match target_of(&f.peer) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("mpc: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    // Read and hashed before the daemon is looked for: a path that cannot be sent is the user's to fix, and
    // the session need not wait for the hashing of a large file.
    let scanned = outgoing::scan(&f.path, outgoing::Limits::default()).and_then(|mut l| {
        if l.total >= 256 << 20 {
            eprintln!("mpc: reading {} ({})...", f.path.display(), human(l.total));
        }
        outgoing::Hashing::default().step(&mut l, u64::MAX)?;
        Ok(l)
    });
    let mut listing = match scanned {
        Ok(l) => Some(l),
        Err(e) => {
            eprintln!("mpc: {}: {e}", f.path.display());
            return Ok(ExitCode::from(1));
        }
    };
    // Subscribed to the roster's changes, unlike `mpc send`: a cut transfer is offered again where the
    // roster says the receiver is now, so this must hear when it is back and on which port (a restarted
    // receiver listens on a new one). Without them, the snapshot taken at the start (or after the daemon was
    // lost and found again) is all it knows, and it retries a dead port, or waits forever for an online
    // that never comes.
    let (mut sess, deadline) = super::sender_session(a, nick, true)?;
    let mut xfer: Option<XferId> = None;
    let mut waited_from = sess.now();
    let mut last_move = sess.now();
    let mut accepted = false;
    // What the receiver held of this transfer when it first accepted (left by an earlier run): not sent.
    let mut held: Option<u64> = None;
    let tty = std::io::stderr().is_terminal();
    let mut shown = sess.now();
    // Since when, and from how many bytes, the rate is measured (bytes held from before are not sent now).
    let mut since = (sess.now(), 0);
    let mut offer = |sess: &mut Session, target: Target| -> Result<XferId, String> {
        let now = sess.now();
        let listing = listing.take().ok_or("offered twice")?;
        let chat = &mut sess.chat;
        let (x, total, count) = chat
            .files
            .offer(&mut chat.peer, now, target, &f.path, listing)?;
        let what = if count == 1 {
            human(total)
        } else {
            format!("{} in {count} files and folders", human(total))
        };
        eprintln!("mpc: offering {} ({what}) to {target}", f.path.display());
        sess.flush().map_err(|e| e.to_string())?;
        Ok(x)
    };
    if let Target::Addr(_) = target {
        match offer(&mut sess, target) {
            Ok(x) => xfer = Some(x),
            Err(e) => {
                eprintln!("mpc: {e}");
                return finish(&mut sess, 1);
            }
        }
    }
    loop {
        let now = sess.now();
        let wake = if xfer.is_none() {
            deadline
        } else if accepted {
            last_move + Duration::from_secs(f.stall)
        } else {
            waited_from + Duration::from_secs(f.wait)
        };
        sess.turn(Some(wake.min(now + Duration::from_secs(1))))?;
        while let Some(ev) = sess.poll_event() {
            if let Some(code) = ends_early(&ev, &sess).or_else(|| key_changed(&ev, target)) {
                if xfer.is_some() {
                    eprintln!("mpc: stopped; run the same command again to resume");
                }
                return finish(&mut sess, code);
            }
            match ev {
                SessionEvent::Client(ClientEvent::Roster(Applied::Snapshot(_)))
                    if xfer.is_none() =>
                {
                    let Target::Nick(n) = target else { continue };
                    let found = super::in_roster(&sess, &n);
                    match found {
                        Some(e) if e.status == Status::Online => {
                            target = Target::Nick(e.nick);
                            match offer(&mut sess, target) {
                                Ok(x) => {
                                    xfer = Some(x);
                                    waited_from = sess.now();
                                }
                                Err(e) => {
                                    eprintln!("mpc: {e}");
                                    return finish(&mut sess, 1);
                                }
                            }
                        }
                        Some(e) => {
                            eprintln!(
                                "mpc: {} is offline; files go only to someone online (try again when {} is back)",
                                e.nick, e.nick
                            );
                            return finish(&mut sess, 3);
                        }
                        None => {
                            eprintln!("mpc: no one called {n} is in the roster (see `mpc list`)");
                            return finish(&mut sess, 3);
                        }
                    }
                }
                SessionEvent::Peer(PeerEvent::File {
                    xfer: x,
                    event,
                    info,
                }) if Some(x) == xfer => {
                    let now = sess.now();
                    match event {
                        FileEvent::Send(SendEvent::Accepted { skipped }) => {
                            accepted = true;
                            last_move = now;
                            since = (now, skipped);
                            held.get_or_insert(skipped);
                            if skipped > 0 {
                                eprintln!(
                                    "mpc: accepted; {} ({skipped} bytes) are there already and are not sent again",
                                    human(skipped)
                                );
                            } else {
                                eprintln!("mpc: accepted");
                            }
                        }
                        FileEvent::Send(SendEvent::Progress {
                            verified, total, ..
                        }) => {
                            last_move = now;
                            if tty && now.saturating_since(shown) >= Duration::from_millis(500) {
                                shown = now;
                                eprint!(
                                    "\r\x1b[Ksent {}",
                                    progress(now, since.0, since.1, verified, total)
                                );
                            }
                        }
                        FileEvent::Send(SendEvent::Done) => {
                            if tty {
                                eprint!("\r\x1b[K");
                            }
                            let size = info.total;
                            // What resuming saved (bytes an earlier run left with the receiver, not sent
                            // again) and what it cost (bytes sent twice because a connection was cut), exact.
                            let speed = rate(now, since.0, since.1, size)
                                .map_or_else(String::new, |r| format!(" at {}/s", human(r)));
                            println!(
                                "sent {} to {target}: {}, verified{speed}; {target} had {} bytes of it already; \
                                 sent again after a cut: {} bytes",
                                f.path.display(),
                                human(size),
                                held.unwrap_or(0),
                                info.resent
                            );
                            return finish(&mut sess, 0);
                        }
                        FileEvent::Send(SendEvent::Failed(fail)) => {
                            if tty {
                                eprint!("\r\x1b[K");
                            }
                            let who = if fail.by_peer {
                                format!("{target}: ")
                            } else {
                                String::new()
                            };
                            eprintln!("mpc: not sent: {who}{}", fail.reason);
                            return finish(&mut sess, 1);
                        }
                        FileEvent::Cut { reason, retry_in } => {
                            accepted = false;
                            waited_from = now;
                            let again = retry_in
                                .map(|d| format!("; offering it again in {:.1} s", d.as_secs_f64()))
                                .unwrap_or_default();
                            eprintln!("\nmpc: {reason}{again}");
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        let now = sess.now();
        match xfer {
            None if now >= deadline => {
                eprintln!("{}", no_daemon_message(a, sess.io.iface()));
                return finish(&mut sess, NO_DAEMON);
            }
            Some(_) if !accepted && now >= waited_from + Duration::from_secs(f.wait) => {
                eprintln!(
                    "mpc: {target} did not accept within {} s; nothing more was sent (run again to offer it again)",
                    f.wait
                );
                return finish(&mut sess, 1);
            }
            Some(_) if accepted && now >= last_move + Duration::from_secs(f.stall) => {
                eprintln!(
                    "\nmpc: no progress for {} s; stopped (run the same command again to resume)",
                    f.stall
                );
                return finish(&mut sess, 1);
            }
            _ => {}
        }
    }
}

/// What `listen` does with file transfers: accepts offers into its directory (or declines them without
/// one) and turns the events into JSON lines, progress at most twice a second per transfer.
pub struct ListenFiles {
    dir: Option<PathBuf>,
    /// Accepted transfers: when progress was last said, and since when it is measured.
    shown: HashMap<XferId, (Instant, Instant)>,
}

impl ListenFiles {
    /// Accepting into `dir`, if given.
    pub fn new(dir: Option<&Path>) -> ListenFiles {
        ListenFiles {
            dir: dir.map(Path::to_path_buf),
            shown: HashMap::new(),
        }
    }

    /// Handles a transfer's event and says it as JSON (`None`: nothing to say now).
    pub fn event(
        &mut self,
        sess: &mut Session,
        me: &str,
        x: XferId,
        event: &FileEvent,
        info: &FileInfo,
    ) -> Option<serde_json::Value> {
        let now = sess.now();
        let id = info.id.to_string();
        let base = |event: &str| serde_json::json!({"event": event, "nick": me, "transfer": x.number(), "id": id});
        match event {
            FileEvent::Offered {
                from,
                key,
                verified,
                name,
                total,
                count,
                ..
            } => {
                let mut v = base("file_offered");
                v["from"] = if *verified {
                    from.as_str().into()
                } else {
                    serde_json::Value::Null
                };
                v["claims"] = from.as_str().into();
                v["key"] = key.fingerprint().to_string().into();
                v["name"] = name.as_str().into();
                v["size"] = (*total).into();
                v["files"] = (*count).into();
                match &self.dir {
                    Some(dir) => {
                        let r = sess.chat.files.accept(&mut sess.chat.peer, now, x, dir);
                        v["accepted"] = r.is_ok().into();
                        v["dir"] = dir.display().to_string().into();
                        if let Err(e) = r {
                            eprintln!("mpc: cannot accept {name}: {e}");
                            sess.chat.peer.decline_file(now, x);
                        } else {
                            self.shown.insert(x, (now, now));
                        }
                    }
                    None => {
                        v["accepted"] = false.into();
                        sess.chat.peer.decline_file(now, x);
                    }
                }
                let _ = sess.flush();
                Some(v)
            }
            FileEvent::Recv(RecvEvent::Progress {
                verified, total, ..
            }) => {
                let (last, since) = self.shown.get_mut(&x)?;
                if now.saturating_since(*last) < Duration::from_millis(500) {
                    return None;
                }
                *last = now;
                let mut v = base("file_progress");
                v["bytes"] = (*verified).into();
                v["size"] = (*total).into();
                v["progress"] = progress(now, *since, 0, *verified, *total).into();
                Some(v)
            }
            FileEvent::Recv(RecvEvent::Received { .. }) => {
                self.shown.remove(&x);
                let mut v = base("file_received");
                match sess.chat.files.take_received(x) {
                    Some(r) => {
                        v["path"] = r.path.display().to_string().into();
                        v["size"] = r.size.into();
                        v["hash"] = r.hash.into();
                    }
                    None => v["path"] = serde_json::Value::Null,
                }
                Some(v)
            }
            FileEvent::Recv(RecvEvent::Failed { failure, .. }) => {
                self.shown.remove(&x);
                let mut v = base("file_failed");
                v["reason"] = failure.reason.clone().into();
                v["code"] = failure.code.as_str().into();
                v["by_sender"] = failure.by_peer.into();
                Some(v)
            }
            FileEvent::Cut { reason, .. } => {
                self.shown.remove(&x);
                let mut v = base("file_failed");
                v["reason"] =
                    format!("{reason}; what arrived is kept, and resumes if it is offered again")
                        .into();
                v["code"] = "cut".into();
                Some(v)
            }
            FileEvent::Send(_) | FileEvent::Recv(RecvEvent::Offered { .. }) => None,
        }
    }
}
