//! `mpc`'s interactive console: commands (`list`, `msg NAME|IP:PORT text`, `help`, `exit`), incoming
//! messages and roster changes printed as they happen, delivery shown. Messages for offline peers are kept in
//! the state directory across restarts.
//!
//! This version reads commands line by line from standard input (a terminal or a pipe).

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use mio::Token;

use crate::client::ClientEvent;
use crate::client::io::Setup;
use crate::client::roster::{Applied, Change};
use crate::discovery::Nick;
use crate::outbox;
use crate::peer::{PeerEvent, Target};
use crate::reactor::ReactorEvent;
use crate::registry::wire::{Entry, RegisterResult, Status};
use crate::session::{FIRST_SESSION_APP_TOKEN, Session, SessionEvent};

const STDIN: Token = Token(FIRST_SESSION_APP_TOKEN);
/// Longest input line kept; longer input is cut (a message is at most 4 KiB anyway).
const MAX_LINE: usize = 16 * 1024;

/// How the console runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Who we are and how to find the daemon.
    pub setup: Setup,
    /// Where the chat listener binds.
    pub chat: SocketAddr,
    /// Where waiting messages (and history) are kept.
    pub state_dir: PathBuf,
    /// How long to search for a daemon before saying what to check.
    pub daemon_wait: Duration,
}

/// A parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Show the roster.
    List,
    /// Send a message.
    Msg(Target, String),
    /// Show the commands.
    Help,
    /// Leave.
    Exit,
    /// Nothing typed.
    Nothing,
}

/// Parses one line typed at the console; the error says what is wrong and how to say it right.
pub fn parse_command(line: &str) -> Result<Command, String> {
    let line = line.trim();
    let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    match word {
        "" => Ok(Command::Nothing),
        "list" | "ls" | "who" => Ok(Command::List),
        "help" | "?" => Ok(Command::Help),
        "exit" | "quit" => Ok(Command::Exit),
        "msg" | "m" => {
            let rest = rest.trim_start();
            let (to, text) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            if to.is_empty() || text.trim().is_empty() {
                return Err("usage: msg NAME text   (or msg IP:PORT text)".into());
            }
            let target = match to.parse::<SocketAddr>() {
                Ok(a) => Target::Addr(a),
                Err(_) => Target::Nick(
                    Nick::new(to).map_err(|e| format!("{to:?} is not a nickname: {e}"))?,
                ),
            };
            Ok(Command::Msg(target, text.trim().to_string()))
        }
        other => Err(format!("unknown command {other:?}; type `help`")),
    }
}

/// The help text.
pub const HELP: &str = "commands:
  list                  who is in the roster, online or offline
  msg NAME text         send text to NAME (queued if NAME is offline)
  msg IP:PORT text      send text to a chat address directly
  help                  this text
  exit                  leave (Ctrl-D too)";

/// How long ago `ms` was, in a few characters.
pub fn ago(now_ms: u64, ms: u64) -> String {
    let s = now_ms.saturating_sub(ms) / 1000;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86_399 => format!("{}h{:02}m ago", s / 3600, (s % 3600) / 60),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// The roster as an aligned table: nickname, address, status, since.
pub fn roster_table(entries: &[Entry], now_ms: u64) -> String {
    let w = entries
        .iter()
        .map(|e| e.nick.as_str().len())
        .max()
        .unwrap_or(4)
        .max(4);
    let a = entries
        .iter()
        .map(|e| e.chat.to_string().len())
        .max()
        .unwrap_or(7)
        .max(7);
    let mut out = format!(
        "{:<w$}  {:<a$}  {:<7}  since\n",
        "nick", "address", "status"
    );
    for e in entries {
        let status = if e.status == Status::Online {
            "online"
        } else {
            "offline"
        };
        out += &format!(
            "{:<w$}  {:<a$}  {:<7}  {}\n",
            e.nick.as_str(),
            e.chat.to_string(),
            status,
            ago(now_ms, e.since_ms)
        );
    }
    out
}

fn say(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs the console until `exit`, end of input, or a signal.
pub fn run(opts: Options) -> io::Result<ExitCode> {
    let me = opts.setup.nick;
    let mut sess = Session::open(opts.setup.clone(), opts.chat)?;
    sess.io.reactor.watch_stdin(STDIN)?;
    let now = sess.now();
    match outbox::load(&opts.state_dir, &me) {
        Ok(saved) => {
            if !saved.is_empty() {
                say(&format!(
                    "{} message(s) from an earlier session are waiting for delivery",
                    saved.len()
                ));
            }
            for (t, id, ms, text) in saved {
                sess.chat.peer.restore(now, t, id, ms, text);
            }
        }
        Err(e) => say(&format!("warning: {e}")),
    }
    let start = now;
    let (mut registered, mut warned) = (false, false);
    let mut line = Vec::new();
    let mut waiting = sess.chat.peer.waiting_messages();
    say(&format!(
        "mpc: {me}, looking for the daemon... (type `help`)"
    ));
    loop {
        sess.turn(None)?;
        let now = sess.now();
        let wall = sess.wall_ms();
        while let Some(ev) = sess.poll_event() {
            match ev {
                SessionEvent::Signal => return leave(&mut sess, &opts, me),
                SessionEvent::App(ReactorEvent::Io(STDIN, _)) => {
                    let mut buf = [0u8; 4096];
                    let n = match io::stdin().lock().read(&mut buf) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => 0,
                    };
                    if n == 0 {
                        sess.io.reactor.unwatch_stdin();
                        return leave(&mut sess, &opts, me);
                    }
                    line.extend_from_slice(&buf[..n]);
                    while let Some(pos) = line.iter().position(|&b| b == b'\n') {
                        let l: Vec<u8> = line.drain(..=pos).collect();
                        let l = String::from_utf8_lossy(&l).into_owned();
                        match parse_command(&l) {
                            Ok(Command::Exit) => return leave(&mut sess, &opts, me),
                            Ok(Command::Nothing) => {}
                            Ok(Command::Help) => say(HELP),
                            Ok(Command::List) => {
                                let es: Vec<Entry> =
                                    sess.io.client.roster().entries().copied().collect();
                                print!("{}", roster_table(&es, wall));
                            }
                            Ok(Command::Msg(to, text)) => {
                                match sess.chat.peer.send(now, wall, to, &text) {
                                    Ok(id) => say(&format!("sent #{} to {to}", id & 0xffff_ffff)),
                                    Err(e) => say(&format!("not sent: {e}")),
                                }
                            }
                            Err(e) => say(&e),
                        }
                    }
                    if line.len() > MAX_LINE {
                        line.clear();
                    }
                    sess.flush()?;
                }
                SessionEvent::App(_) => {}
                SessionEvent::Peer(p) => say(&peer_line(&p)),
                SessionEvent::Client(c) => {
                    if let Some(l) = client_line(me, &c, &mut registered) {
                        say(&l);
                    }
                    if let ClientEvent::Rejected { result, .. } = c
                        && result != RegisterResult::NickTaken
                    {
                        return Ok(ExitCode::from(1));
                    }
                    if let ClientEvent::Searching { .. } = c
                        && !registered
                        && !warned
                        && now.saturating_since(start) >= opts.daemon_wait
                    {
                        warned = true;
                        say(&format!(
                            "mpc: {} (still trying)",
                            opts.setup.no_daemon_message(sess.io.iface())
                        ));
                    }
                }
            }
        }
        let w = sess.chat.peer.waiting_messages();
        if w != waiting {
            waiting = w;
            if let Err(e) = outbox::save(&opts.state_dir, &me, &waiting) {
                say(&format!("warning: cannot save waiting messages: {e}"));
            }
        }
    }
}

fn leave(sess: &mut Session, opts: &Options, me: Nick) -> io::Result<ExitCode> {
    let _ = outbox::save(&opts.state_dir, &me, &sess.chat.peer.waiting_messages());
    let now = sess.now();
    sess.io.client.shutdown(now);
    let end = now + Duration::from_millis(500);
    while !sess.io.client.is_closed() && sess.now() < end {
        sess.turn(Some(end))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One line for a chat event.
pub fn peer_line(p: &PeerEvent) -> String {
    match p {
        PeerEvent::Message {
            from,
            text,
            verified,
            ..
        } => format!(
            "<{from}>{} {text}",
            if *verified { "" } else { " (unverified)" }
        ),
        PeerEvent::Delivered { id, to } => format!("delivered #{} to {to}", id & 0xffff_ffff),
        PeerEvent::Queued { id, to } => format!(
            "queued #{} for {to} (offline; sent when it is back)",
            id & 0xffff_ffff
        ),
        PeerEvent::Failed { id, to, reason } => {
            format!("failed #{} to {to}: {reason}", id & 0xffff_ffff)
        }
    }
}

/// One line for a roster or connection event, if it deserves one.
pub fn client_line(me: Nick, c: &ClientEvent, registered: &mut bool) -> Option<String> {
    Some(match c {
        ClientEvent::Searching { .. } => return None,
        ClientEvent::DaemonFound { addr } => format!("found the daemon at {addr}"),
        ClientEvent::Registered { .. } => {
            *registered = true;
            format!("registered as {me}")
        }
        ClientEvent::Rejected { result, reason, .. } => match result {
            RegisterResult::NickTaken => format!("{reason} (try e.g. --nick {me}2)"),
            _ => format!("refused: {reason}"),
        },
        ClientEvent::DaemonLost { reason } => {
            format!(
                "lost the daemon ({reason}); still chatting with known peers, looking for it again"
            )
        }
        ClientEvent::Roster(Applied::Snapshot(cs) | Applied::Changes(cs)) => {
            let lines: Vec<String> = cs
                .iter()
                .filter_map(|c| match c {
                    Change::Joined(e) if e.nick != me => {
                        Some(format!("{} joined ({})", e.nick, e.chat))
                    }
                    Change::Online(e) if e.nick != me => Some(format!("{} is online", e.nick)),
                    Change::Offline(e) if e.nick != me => Some(format!("{} went offline", e.nick)),
                    Change::Removed(n) => Some(format!("{n} left the roster")),
                    _ => None,
                })
                .collect();
            if lines.is_empty() {
                return None;
            }
            lines.join("\n")
        }
        ClientEvent::Roster(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        let bob = Nick::new("bob").unwrap();
        assert_eq!(parse_command("  list "), Ok(Command::List));
        assert_eq!(
            parse_command("msg bob hello there"),
            Ok(Command::Msg(Target::Nick(bob), "hello there".into()))
        );
        assert_eq!(
            parse_command("msg 127.0.0.1:5000 hi"),
            Ok(Command::Msg(
                Target::Addr("127.0.0.1:5000".parse().unwrap()),
                "hi".into()
            ))
        );
        assert!(parse_command("msg bob").is_err());
        assert!(
            parse_command("msg b!ob hi")
                .unwrap_err()
                .contains("not a nickname")
        );
        assert!(parse_command("dance").unwrap_err().contains("help"));
        assert_eq!(parse_command(""), Ok(Command::Nothing));
        assert_eq!(parse_command("exit"), Ok(Command::Exit));
    }

    #[test]
    fn table_is_aligned() {
        let e = |n: &str, port: u16, online: bool| Entry {
            nick: Nick::new(n).unwrap(),
            instance: 1,
            status: if online {
                Status::Online
            } else {
                Status::Offline
            },
            since_ms: 1000,
            chat: SocketAddr::from(([127, 0, 0, 1], port)),
            flaps: 0,
        };
        let t = roster_table(
            &[e("al", 5, true), e("bartholomew", 50000, false)],
            3_700_000,
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        let col = lines[0].find("address").unwrap();
        assert!(lines.iter().all(|l| l.len() > col));
        assert_eq!(lines[1].find("127.0.0.1:5 ").unwrap(), col);
        assert!(lines[2].ends_with("1h01m ago"), "{t}");
    }
}
