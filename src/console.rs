//! `mpc`'s interactive console: commands (`list`, `msg NAME|IP:PORT text`, `help`, `exit`), incoming
//! messages and roster changes printed as they happen, each with its local time, and delivery shown (sent,
//! then delivered, queued or failed). Messages for offline peers are kept in the state directory across
//! restarts.
//!
//! Two faces over one loop:
//! - **On a terminal** (stdin and stdout both), a line editor ([`editor`], rustyline) runs in its own thread:
//!   line editing, history kept across runs, Tab completion of commands and nicknames, and notices printed
//!   above the prompt with the half-typed line redrawn under them. Lines that arrive together (a bracketed
//!   paste, or a `msg` line followed by more within [`BURST`]) are planned as one ([`paste`]): a paste that
//!   would send several messages is confirmed first. Ctrl-C clears the line, Ctrl-D on an empty line leaves.
//! - **Otherwise** commands are read line by line from standard input through the reactor, for scripts.
//!
//! Colours only when standard output is a terminal and `NO_COLOR` is unset ([`style`]). Chat is one to one,
//! so every message received is addressed to us: each one rings the bell (on a terminal).
//!
//! The roster client behind it re-registers by itself (jittered backoff, forever) when the daemon comes
//! back; meanwhile messages still flow to peers already known.

pub mod editor;
pub mod files;
pub mod paste;
pub mod style;

use std::io::{self, IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use mio::Token;

use crate::client::ClientEvent;
use crate::client::roster::{Applied, Change};
use crate::group::{ChannelName, Scope};
use crate::io::client::Setup;
use crate::io::history::{self, History, Record};
use crate::nick::Nick;
use crate::outbox::Outbox;
use crate::peer::{PeerEvent, Target};
use crate::reactor::ReactorEvent;
use crate::registry::wire::{Entry, RegisterResult, Request, Status};
use crate::session::{FIRST_SESSION_APP_TOKEN, Session, SessionEvent};
use crate::time::Instant;
use editor::{Editor, Input};
use paste::{Plan, Step};
use style::{Kind, Style};

/// Standard input, in line mode.
const STDIN: Token = Token(FIRST_SESSION_APP_TOKEN);
/// The input thread's waker, in editor mode.
const WAKER: Token = Token(FIRST_SESSION_APP_TOKEN + 1);
/// SIGHUP (the terminal went away), added to the session's SIGINT/SIGTERM watch.
const HANGUP: Token = Token(FIRST_SESSION_APP_TOKEN + 2);
/// Longest input line kept; longer input is cut (a message is at most 64 KiB anyway, and the command before it
/// short).
const MAX_LINE: usize = crate::peer::frame::MAX_TEXT + 1024;
/// How long leaving waits for messages in flight to be acknowledged (the rest are kept for the next run).
const LINGER: Duration = Duration::from_secs(3);
/// How long the echo of a sent message waits for its receipt, to show both on one line: on a LAN a receipt
/// takes a millisecond or two, and a quarter of a second still reads as at once. Past it, the echo shows
/// the message as being sent and the receipt gets a line of its own.
const ECHO_WAIT: Duration = Duration::from_millis(250);
/// A `msg` line from the terminal followed by more lines within this long is a paste, not typing (no one
/// types a message and presses Enter again that fast); the wait delays each typed `msg` by as much.
pub const BURST: Duration = Duration::from_millis(60);

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
    /// Bounds of the message history.
    pub history: history::Limits,
    /// Where accepted files go unless `accept N DIR` says otherwise.
    pub downloads: PathBuf,
    /// What offers of files may be (larger ones are refused without asking).
    pub file_limits: crate::transfer::recv::Limits,
}

/// Where a message typed at the console goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dest {
    /// One person (a nickname, or an address given directly).
    One(Target),
    /// Everyone online (`*`), or a channel's members.
    In(Scope),
}

impl std::fmt::Display for Dest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dest::One(t) => write!(f, "{t}"),
            Dest::In(s) => f.write_str(s.label()),
        }
    }
}

impl Dest {
    /// Reads a receiver as typed: `*`, `#channel`, `IP:PORT` or a nickname.
    pub fn parse(to: &str) -> Result<Dest, CommandError> {
        if to == "*" {
            return Ok(Dest::In(Scope::Everyone));
        }
        if to.starts_with('#') {
            return ChannelName::new(to)
                .map(|c| Dest::In(Scope::Channel(c)))
                .map_err(|why| CommandError::BadChannel {
                    typed: to.to_string(),
                    why,
                });
        }
        Ok(Dest::One(match to.parse::<SocketAddr>() {
            Ok(a) => Target::Addr(a),
            Err(_) => Target::Nick(Nick::new(to).map_err(|why| CommandError::BadNick {
                typed: to.to_string(),
                why,
            })?),
        }))
    }
}

/// A parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Show the roster.
    List,
    /// Send a message.
    Msg(Dest, String),
    /// Join a channel.
    Join(ChannelName),
    /// Leave a channel.
    Part(ChannelName),
    /// Show the channels and their members.
    Channels,
    /// Make plain lines go to this receiver (`None`: back to commands).
    Query(Option<Dest>),
    /// Say we are away, with a message (possibly empty); `None`: back.
    Away(Option<String>),
    /// Change our nickname.
    Rename(Nick),
    /// Show a peer's key fingerprint, and whether it is the one remembered.
    Whois(Nick),
    /// Accept the key the daemon now gives for a peer whose key changed.
    Trust(Nick),
    /// Show the last messages kept: of one conversation (a nickname or `IP:PORT`), or of all; how many.
    History(Option<String>, usize),
    /// Show the kept messages that have every one of these words.
    Search(String),
    /// Send a file or a folder: to whom, the path as typed.
    File(Target, String),
    /// Accept offer N, into a directory (as typed) or the default one.
    Accept(u32, Option<String>),
    /// Decline offer N.
    Decline(u32),
    /// Stop transfer N, either way.
    Cancel(u32),
    /// List the transfers.
    Transfers,
    /// Show the commands.
    Help,
    /// Leave.
    Exit,
    /// Nothing typed.
    Nothing,
}

/// Messages `history` shows when not told how many.
pub const HISTORY_LINES: usize = 20;

/// Why a typed line is not a command; its `Display` says what is wrong and how to say it right.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandError {
    /// `msg` without a receiver or without text.
    MsgUsage,
    /// `whois` or `trust` without exactly one nickname (the word says which).
    NameUsage(&'static str),
    /// `history` with more than a name and a count, or a count that is not one.
    HistoryUsage,
    /// `search` without words.
    SearchUsage,
    /// The receiver is neither an address nor a valid nickname.
    BadNick {
        /// What was typed.
        typed: String,
        /// Which rule it breaks.
        why: crate::nick::NickError,
    },
    /// A channel name that is not one.
    BadChannel {
        /// What was typed.
        typed: String,
        /// Which rule it breaks.
        why: crate::group::ChannelError,
    },
    /// `join`, `part` without exactly one channel (the word says which).
    ChannelUsage(&'static str),
    /// `query` with more than one receiver.
    QueryUsage,
    /// `all` without text.
    AllUsage,
    /// `file` without a receiver or a path.
    FileUsage,
    /// `accept`, `decline`, `cancel` without a transfer number (the word says which).
    TransferUsage(&'static str),
    /// Not a command.
    Unknown(String),
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandError::MsgUsage => {
                f.write_str("usage: msg NAME|#CHANNEL|* text   (or msg IP:PORT text)")
            }
            CommandError::BadChannel { typed, why } => {
                write!(f, "{typed:?} is not a channel name: {why}")
            }
            CommandError::ChannelUsage(w) => write!(f, "usage: {w} #CHANNEL"),
            CommandError::QueryUsage => {
                f.write_str("usage: query NAME|#CHANNEL|*   (query alone goes back to commands)")
            }
            CommandError::AllUsage => f.write_str("usage: all text   (the same as msg * text)"),
            CommandError::FileUsage => f.write_str("usage: file NAME PATH   (a file or a folder)"),
            CommandError::TransferUsage("accept") => {
                f.write_str("usage: accept N [DIR]   (N from the offer, or from `transfers`)")
            }
            CommandError::TransferUsage(w) => write!(f, "usage: {w} N   (N from `transfers`)"),
            CommandError::NameUsage(w) => write!(f, "usage: {w} NAME"),
            CommandError::HistoryUsage => f.write_str("usage: history [NAME] [COUNT]"),
            CommandError::SearchUsage => f.write_str("usage: search WORDS"),
            CommandError::BadNick { typed, why } => write!(f, "{typed:?} is not a nickname: {why}"),
            CommandError::Unknown(w) => write!(f, "unknown command {w:?}; type `help`"),
        }
    }
}

impl std::error::Error for CommandError {}

/// Parses one line typed at the console. A leading `/` is allowed (and needed in query mode, where a plain
/// line is a message).
pub fn parse_command(line: &str) -> Result<Command, CommandError> {
    let line = line.trim();
    let line = line.strip_prefix('/').unwrap_or(line);
    let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    match word {
        "" => Ok(Command::Nothing),
        "list" | "ls" | "who" => Ok(Command::List),
        "help" | "?" => Ok(Command::Help),
        "exit" | "quit" => Ok(Command::Exit),
        w @ ("whois" | "trust") => {
            let name = rest.trim();
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(CommandError::NameUsage(if w == "whois" {
                    "whois"
                } else {
                    "trust"
                }));
            }
            let nick = Nick::new(name).map_err(|why| CommandError::BadNick {
                typed: name.to_string(),
                why,
            })?;
            Ok(if w == "whois" {
                Command::Whois(nick)
            } else {
                Command::Trust(nick)
            })
        }
        "history" | "h" => {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let count = |w: &str| w.parse::<usize>().ok().filter(|n| *n > 0);
            match words[..] {
                [] => Ok(Command::History(None, HISTORY_LINES)),
                [w] => Ok(match count(w) {
                    Some(n) => Command::History(None, n),
                    None => Command::History(Some(w.to_string()), HISTORY_LINES),
                }),
                [w, n] => match count(n) {
                    Some(n) => Ok(Command::History(Some(w.to_string()), n)),
                    None => Err(CommandError::HistoryUsage),
                },
                _ => Err(CommandError::HistoryUsage),
            }
        }
        "search" | "s" => {
            let words = rest.trim();
            if words.is_empty() {
                return Err(CommandError::SearchUsage);
            }
            Ok(Command::Search(words.to_string()))
        }
        "msg" | "m" => {
            let rest = rest.trim_start();
            let (to, text) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            if to.is_empty() || text.trim().is_empty() {
                return Err(CommandError::MsgUsage);
            }
            Ok(Command::Msg(Dest::parse(to)?, text.trim().to_string()))
        }
        "all" => {
            if rest.trim().is_empty() {
                return Err(CommandError::AllUsage);
            }
            Ok(Command::Msg(
                Dest::In(Scope::Everyone),
                rest.trim().to_string(),
            ))
        }
        w @ ("join" | "j" | "part" | "leave") => {
            let usage = if matches!(w, "join" | "j") {
                "join"
            } else {
                "part"
            };
            let name = rest.trim();
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(CommandError::ChannelUsage(usage));
            }
            // `join ops` means #ops: the `#` is what IRC users type, not something to trip over.
            let typed = if name.starts_with('#') {
                name.to_string()
            } else {
                format!("#{name}")
            };
            let c =
                ChannelName::new(&typed).map_err(|why| CommandError::BadChannel { typed, why })?;
            Ok(if usage == "join" {
                Command::Join(c)
            } else {
                Command::Part(c)
            })
        }
        "channels" | "ch" => Ok(Command::Channels),
        "transfers" | "tr" => Ok(Command::Transfers),
        "file" | "f" => {
            let rest = rest.trim();
            let (to, path) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            if to.is_empty() || path.trim().is_empty() {
                return Err(CommandError::FileUsage);
            }
            let Dest::One(to) = Dest::parse(to)? else {
                // Files go to one person at a time: each receiver accepts for themselves.
                return Err(CommandError::FileUsage);
            };
            Ok(Command::File(to, path.trim().to_string()))
        }
        w @ ("accept" | "decline" | "cancel") => {
            let usage = match w {
                "accept" => "accept",
                "decline" => "decline",
                _ => "cancel",
            };
            let rest = rest.trim();
            let (n, dir) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            let n = n
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or(CommandError::TransferUsage(usage))?;
            let dir = dir.trim();
            match usage {
                "accept" => Ok(Command::Accept(
                    n,
                    (!dir.is_empty()).then(|| dir.to_string()),
                )),
                _ if !dir.is_empty() => Err(CommandError::TransferUsage(usage)),
                "decline" => Ok(Command::Decline(n)),
                _ => Ok(Command::Cancel(n)),
            }
        }
        "query" | "q" => match rest.split_whitespace().collect::<Vec<_>>()[..] {
            [] => Ok(Command::Query(None)),
            [to] => Ok(Command::Query(Some(Dest::parse(to)?))),
            _ => Err(CommandError::QueryUsage),
        },
        "away" => Ok(Command::Away(Some(rest.trim().to_string()))),
        "back" => Ok(Command::Away(None)),
        "nick" => {
            let name = rest.trim();
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(CommandError::NameUsage("nick"));
            }
            Ok(Command::Rename(Nick::new(name).map_err(|why| {
                CommandError::BadNick {
                    typed: name.to_string(),
                    why,
                }
            })?))
        }
        other => Err(CommandError::Unknown(other.to_string())),
    }
}

/// The help text.
pub const HELP: &str = "commands (short forms in brackets; a leading / is allowed, and needed in query mode):
  list [ls, who]        who is in the roster: online, away or offline
  msg NAME text [m]     send text to NAME (queued if NAME is offline; Bob finds bob)
  msg #CHANNEL text     send text to everyone in the channel (offline members get it when back)
  msg * text, all text  send text to everyone online
  msg IP:PORT text      send text to a chat address directly
  query NAME|#CH|* [q]  plain lines go there from now on (commands then start with /); query alone ends it
  join #CHANNEL [j]     join a channel (it exists while someone is in it)
  part #CHANNEL [leave] leave a channel
  channels [ch]         the channels and who is in them
  away [MESSAGE]        tell everyone you are away (shown in their list); back: you are back
  nick NEWNAME          change your nickname without leaving (your key owns the new one; history follows)
  whois NAME            NAME's key fingerprint, and whether it is the one remembered from before
  trust NAME            accept NAME's new key after it changed (check its fingerprint with NAME first)
  file NAME PATH [f]     send a file or a folder to NAME (Tab completes the path); NAME accepts first
  accept N [DIR]        take offer N, into DIR or the downloads folder; a cut transfer offered again resumes
  decline N             refuse offer N
  cancel N              stop transfer N, either way (what arrived and was verified is kept)
  transfers [tr]        the transfers: offered, under way, waiting to retry
  history [NAME|#CH] [N] the last N messages (20) with NAME or in #CH, or all, kept across runs [h]
  search WORDS          the kept messages that have every one of the words [s]
  help [?]              this text
  exit [quit]           leave (Ctrl-D too)";

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
        .map(|e| e.nick.as_str().chars().count())
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
        let status = match (e.status, e.away()) {
            (Status::Online, Some(_)) => "away",
            (Status::Online, None) => "online",
            _ => "offline",
        };
        let mut line = format!(
            "{:<w$}  {:<a$}  {:<7}  {}",
            e.nick.as_str(),
            e.chat.to_string(),
            status,
            ago(now_ms, e.since_ms)
        );
        // What the others would want to know at a glance: why someone is away, where they talk.
        if let Some(m) = e.away().filter(|m| !m.is_empty()) {
            line += &format!("  \"{}\"", crate::peer::sanitize_line(m));
        }
        if !e.channels().is_empty() {
            let cs: Vec<&str> = e.channels().iter().map(ChannelName::as_str).collect();
            line += &format!("  {}", cs.join(" "));
        }
        out += &line;
        out.push('\n');
    }
    out
}

/// A nickname to suggest when `me` is taken: `alice` → `alice2`, `bob7` → `bob8`.
pub fn suggest_nick(me: &Nick) -> String {
    let s = me.as_str();
    let base = s.trim_end_matches(|c: char| c.is_ascii_digit());
    let n: u64 = s[base.len()..]
        .parse()
        .map_or(2, |n: u64| n.saturating_add(1));
    let digits = n.to_string();
    // Cut by characters, within the byte bound too: a nickname may be of any script.
    let mut keep = 0;
    for (i, (at, c)) in base.char_indices().enumerate() {
        let end = at + c.len_utf8();
        if i + digits.len() >= crate::nick::MAX_NICK_CHARS
            || end + digits.len() > crate::nick::MAX_NICK_BYTES
        {
            break;
        }
        keep = end;
    }
    format!("{}{digits}", &base[..keep])
}

/// The roster as an aligned table, coloured by `style` (header bold, online green, offline dim).
pub fn roster_table_styled(entries: &[Entry], now_ms: u64, style: Style) -> String {
    let plain = roster_table(entries, now_ms);
    if !style.colour {
        return plain;
    }
    let mut lines = plain.lines();
    let mut out = String::new();
    if let Some(h) = lines.next() {
        out += &style.paint(Kind::Header, h);
        out.push('\n');
    }
    for (l, e) in lines.zip(entries) {
        let kind = if e.status == Status::Online {
            Kind::Good
        } else {
            Kind::System
        };
        out += &style.paint(kind, l);
        out.push('\n');
    }
    out
}

/// The first roster in one line: `online: bob, carol; offline: dave (type `list` for the table)`.
pub fn roster_summary(mut online: Vec<String>, mut offline: Vec<String>) -> String {
    const SHOWN: usize = 10;
    let names = |v: &mut Vec<String>| {
        v.sort();
        let more = v.len().saturating_sub(SHOWN);
        let mut s = v[..v.len().min(SHOWN)].join(", ");
        if more > 0 {
            s += &format!(" and {more} more");
        }
        s
    };
    match (online.is_empty(), offline.is_empty()) {
        (true, true) => "no one else is in the roster yet".into(),
        (false, true) => format!("online: {}", names(&mut online)),
        (true, false) => format!("no one else is online; offline: {}", names(&mut offline)),
        (false, false) => format!(
            "online: {}; offline: {}",
            names(&mut online),
            names(&mut offline)
        ),
    }
}

/// Where output goes.
enum Ui {
    /// The line editor on a terminal.
    Editor(Editor),
    /// Plain lines on stdout; commands from stdin, with the partial line read so far.
    Lines {
        /// Input after the last newline.
        partial: Vec<u8>,
        /// Stdin is watched.
        reading: bool,
    },
}

/// The console's state around a [`Session`].
struct Console {
    sess: Session,
    ui: Ui,
    opts: Options,
    me: Nick,
    style: Style,
    /// Registered at least once.
    registered_once: bool,
    /// When to say that no daemon answers, if none has by then.
    warn_at: Option<Instant>,
    /// When to register again after a `NickTaken` with a retry hint.
    retry_at: Option<Instant>,
    retried: bool,
    /// Waiting messages, kept in step with the history database's queue.
    outbox: Outbox,
    /// Lines from the terminal not yet acted on, and when the batch closes.
    batch: Vec<String>,
    batch_until: Option<Instant>,
    /// A paste waiting for yes or no.
    question: Option<Plan>,
    /// The first roster arrived (it is summed up; later changes are shown one by one).
    roster_seen: bool,
    /// Nicknames whose key `whois` asked the daemon for.
    whois: Vec<Nick>,
    /// Our messages not echoed yet, waiting (until [`ECHO_WAIT`] after sending) for their receipt to show
    /// on the same line. Bounded by the peer's queue limits.
    echoes: Vec<Echo>,
    /// The messages kept across runs, both ways (none if it could not be opened: said once, at start).
    history: Option<History>,
    /// Query mode: where plain lines go.
    query: Option<Dest>,
    /// File transfers as the console shows them.
    transfers: files::Transfers,
}

/// A sent message whose echo waits for its receipt.
struct Echo {
    id: u64,
    to: Dest,
    text: String,
    until: Instant,
    /// For a message to many: each receiver and what became of its copy so far.
    many: Vec<(Nick, Outcome)>,
    /// Shown already as being sent (a message to many is then summed up once every copy is accounted for).
    shown: bool,
}

/// What became of one receiver's copy of a message to many.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Pending,
    Delivered,
    Queued,
    Unanswered,
    Failed(String),
}

impl Echo {
    /// For a message to many: "delivered to 4 of 5 in #ops; carol offline (queued)", and whether every copy
    /// was delivered.
    fn summary(&self) -> (String, bool) {
        let total = self.many.len();
        let done = self
            .many
            .iter()
            .filter(|(_, o)| *o == Outcome::Delivered)
            .count();
        let place = match self.to {
            Dest::In(Scope::Everyone) => "online".to_string(),
            d => format!("in {d}"),
        };
        let mut s = format!(
            "delivered #{} to {done} of {total} {place}",
            self.id & 0xffff_ffff
        );
        let missing: Vec<String> = self
            .many
            .iter()
            .filter_map(|(n, o)| match o {
                Outcome::Delivered => None,
                Outcome::Pending => Some(format!("{n} (no receipt yet)")),
                Outcome::Queued => Some(format!("{n} offline (queued)")),
                Outcome::Unanswered => Some(format!("{n} not answering (retrying)")),
                Outcome::Failed(why) => Some(format!("{n} failed: {why}")),
            })
            .collect();
        if !missing.is_empty() {
            s += "; ";
            s += &missing.join(", ");
        }
        (s, done == total)
    }
}

/// What the loop does next.
enum Flow {
    Go,
    Leave(u8),
}

/// Runs the console until `exit`, end of input, a signal, or a refusal by the daemon.
pub fn run(opts: Options) -> io::Result<ExitCode> {
    let me = opts.setup.nick;
    let style = Style::for_stdout();
    // The session first: it blocks SIGINT/SIGTERM, and the editor's threads must inherit that mask.
    let mut sess = Session::open(opts.setup.clone(), opts.chat)?;
    sess.chat.peer.set_file_limits(opts.file_limits.clone());
    // A closed terminal ends the console like `exit`: the roster hears we left, waiting messages are kept.
    sess.io
        .reactor
        .watch_signals(&[nix::sys::signal::Signal::SIGHUP], HANGUP)?;
    let editor = if io::stdin().is_terminal() && io::stdout().is_terminal() {
        Editor::start(
            sess.io.reactor.registry(),
            WAKER,
            prompt(&me, None),
            opts.state_dir.clone(),
            style.colour,
        )?
    } else {
        None
    };
    // In line mode, commands are read once the roster is in (or once we said no daemon answers), so that
    // `echo list | mpc` and scripted `msg`s act on the roster rather than on an empty one.
    let ui = match editor {
        Some(e) => Ui::Editor(e),
        None => Ui::Lines {
            partial: Vec::new(),
            reading: false,
        },
    };
    let start = sess.now();
    let outbox = Outbox::new(&opts.state_dir, me);
    let mut c = Console {
        warn_at: Some(start + opts.daemon_wait),
        sess,
        ui,
        opts,
        me,
        style,
        registered_once: false,
        retry_at: None,
        retried: false,
        whois: Vec::new(),
        echoes: Vec::new(),
        query: None,
        history: None,
        outbox,
        batch: Vec::new(),
        batch_until: None,
        question: None,
        roster_seen: false,
        transfers: files::Transfers::default(),
    };
    c.open_history();
    c.restore_outbox();
    c.notice(
        None,
        &format!("mpc: {me}, looking for the daemon... (type `help`)"),
    );
    let code = c.run()?;
    c.leave()?;
    Ok(ExitCode::from(code))
}

impl Console {
    /// Prints `text` as it is (a table, the help).
    fn say(&self, text: &str) {
        let text = text.strip_suffix('\n').unwrap_or(text);
        match &self.ui {
            Ui::Editor(e) => e.print(text.to_string()),
            Ui::Lines { .. } => {
                let mut out = io::stdout().lock();
                let _ = writeln!(out, "{text}");
                let _ = out.flush();
            }
        }
    }

    /// Prints a notice: the local time, then `text` in the colour of `kind`.
    fn notice(&self, kind: Option<Kind>, text: &str) {
        self.say(&self.style.notice(self.sess.wall_ms(), kind, text));
    }

    /// After a rename: the history database (with the waiting messages) moves to the new nickname's file,
    /// so `history`, the queue and the next start under the new name find everything.
    fn follow_rename(&mut self, from: Nick, to: Nick) {
        let had = self.history.take().is_some();
        self.outbox.rename(to);
        match history::move_files(&self.opts.state_dir, from.as_str(), to.as_str()) {
            Ok(_) => {}
            Err(e) => self.notice(Some(Kind::Warn), &format!("history: {e}")),
        }
        if had {
            let path = history::path(&self.opts.state_dir, to.as_str());
            match History::open(&path, self.opts.history) {
                Ok(h) => self.history = Some(h),
                Err(e) => self.notice(Some(Kind::Error), &format!("history is off: {e}")),
            }
        }
    }

    /// Opens the history, trims it to its limits, and shows the last lines of the conversations of the last
    /// week (three each, of five at most), so a restarted console starts where the last one left off.
    fn open_history(&mut self) {
        // --history-max 0: nothing kept, nothing shown.
        if self.opts.history.max_messages == 0 {
            return;
        }
        let path = history::path(&self.opts.state_dir, self.me.as_str());
        let mut h = match History::open(&path, self.opts.history) {
            Ok(h) => h,
            Err(e) => {
                self.notice(Some(Kind::Error), &format!("history is off: {e}"));
                return;
            }
        };
        let wall = self.sess.wall_ms();
        if let Err(e) = h.prune(wall) {
            self.notice(Some(Kind::Error), &format!("warning: {e}"));
        }
        let week = wall.saturating_sub(7 * 24 * 3600 * 1000);
        let recent = h.conversations(week, 5).unwrap_or_default();
        for with in recent.iter().rev() {
            let lines = h.recent(Some(with), 3).unwrap_or_default();
            self.say(&self.style.paint(Kind::System, &format!("-- with {with}:")));
            for r in &lines {
                self.say(&self.history_line(r, false));
            }
        }
        self.history = Some(h);
    }

    /// A kept message as `history` and `search` show it: its time, who wrote it, its text (and, with
    /// `with`, the conversation it belongs to).
    fn history_line(&self, r: &Record, with: bool) -> String {
        let st = self.style;
        let place = if with {
            format!("[{}] ", r.conversation)
        } else {
            String::new()
        };
        format!(
            "{} {place}<{}> {}",
            st.paint(Kind::System, &style::hh_mm(r.at_ms)),
            st.paint(
                if r.outgoing || r.verified {
                    Kind::Nick
                } else {
                    Kind::Warn
                },
                &r.sender
            ),
            continued(&r.text)
        )
    }

    /// Says why `history` and `search` have nothing to read.
    fn history_off(&self) {
        let why = if self.opts.history.max_messages == 0 {
            "history is off (--history-max 0)"
        } else {
            "history is off (see the message at start)"
        };
        self.notice(Some(Kind::Error), why);
    }

    /// Keeps a message in the history; a failure to write is said (once a run is enough: it repeats).
    fn keep(&mut self, r: Record) {
        if let Some(h) = &mut self.history
            && let Err(e) = h.append(&r)
        {
            self.history = None;
            self.notice(
                Some(Kind::Error),
                &format!("history is off from now on: {e}"),
            );
        }
    }

    /// Hands the peer the messages an earlier run (or `mpc send`) queued, and says how many wait.
    fn restore_outbox(&mut self) {
        let now = self.sess.now();
        let r = self.outbox.restore(now, &mut self.sess.chat.peer);
        for n in &r.notes {
            self.notice(Some(Kind::Error), &format!("warning: {n}"));
        }
        if r.count > 0 {
            self.notice(
                Some(Kind::Warn),
                &format!(
                    "{} message(s) from an earlier session are waiting for delivery",
                    r.count
                ),
            );
        }
    }

    fn run(&mut self) -> io::Result<u8> {
        loop {
            let echo = self
                .echoes
                .iter()
                .filter(|e| !e.shown)
                .map(|e| e.until)
                .min();
            let deadline = [self.batch_until, self.retry_at, self.warn_at, echo]
                .into_iter()
                .flatten()
                .min();
            self.sess.turn(deadline)?;
            let now = self.sess.now();
            self.echo_overdue(now);
            if self.retry_at.is_some_and(|t| now >= t) {
                self.retry_at = None;
                self.sess.io.client.retry(now);
            }
            if self.warn_at.is_some_and(|t| now >= t) {
                self.warn_at = None;
                if !self.sess.io.client.is_registered() {
                    let msg = self.opts.setup.no_daemon_message(self.sess.io.iface());
                    self.notice(Some(Kind::Warn), &format!("mpc: {msg} (still trying)"));
                }
                self.start_reading()?;
            }
            while let Some(ev) = self.sess.poll_event() {
                if let Flow::Leave(code) = self.handle(ev)? {
                    return Ok(code);
                }
            }
            self.offers_prepared();
            if self.batch_until.is_some_and(|t| now >= t)
                && let Flow::Leave(code) = self.run_batch()
            {
                return Ok(code);
            }
            self.save_outbox();
            self.sess.flush()?;
        }
    }

    /// Line mode: starts reading commands from stdin (once).
    fn start_reading(&mut self) -> io::Result<()> {
        if let Ui::Lines { reading, .. } = &mut self.ui
            && !*reading
        {
            *reading = true;
            self.sess.io.reactor.watch_stdin(STDIN)?;
        }
        Ok(())
    }

    /// Writes the changes to the waiting messages (one transaction each) and takes messages `mpc send`
    /// queued meanwhile: before [`Session::flush`], which sends those at once.
    fn save_outbox(&mut self) {
        let now = self.sess.now();
        for n in self.outbox.sync(now, &mut self.sess.chat.peer) {
            self.notice(Some(Kind::Error), &format!("warning: {n}"));
        }
    }

    /// Messages on their way to a receiver that is online (or addressed directly), not queued for later.
    fn in_flight(&self) -> usize {
        let roster = self.sess.io.client.roster();
        self.sess
            .chat
            .peer
            .waiting_messages()
            .iter()
            .filter(|(t, ..)| match t {
                Target::Addr(_) => true,
                Target::Nick(n) => roster.get(n).is_some_and(|e| e.status == Status::Online),
            })
            .count()
    }

    /// Gives messages in flight a moment to be acknowledged, saves what still waits, and leaves the roster
    /// cleanly (each bounded).
    fn leave(&mut self) -> io::Result<()> {
        if let Ui::Editor(e) = &mut self.ui {
            e.stop();
        }
        let end = self.sess.now() + LINGER;
        while self.in_flight() > 0 && self.sess.now() < end {
            self.sess.turn(Some(end))?;
            while let Some(ev) = self.sess.poll_event() {
                match ev {
                    SessionEvent::Peer(p) => self.peer_event(&p),
                    SessionEvent::Signal => return self.leave_roster(),
                    _ => {}
                }
            }
        }
        self.leave_roster()
    }

    /// Echoes of messages still without a receipt [`ECHO_WAIT`] after sending (all of them when leaving):
    /// shown as being sent; the receipt, when it comes, gets a line of its own.
    fn echo_overdue(&mut self, now: Instant) {
        let (due, mut keep): (Vec<Echo>, Vec<Echo>) = std::mem::take(&mut self.echoes)
            .into_iter()
            .partition(|e| e.until <= now && !e.shown);
        for mut e in due {
            let mark = if e.many.is_empty() {
                format!("… sending #{} to {}", e.id & 0xffff_ffff, e.to)
            } else {
                // Summed up on a line of its own once every copy is accounted for.
                let (so_far, _) = e.summary();
                format!("… {so_far}")
            };
            self.echo(&e.text, e.to, Kind::System, &mark);
            if !e.many.is_empty() {
                e.shown = true;
                keep.push(e);
            }
        }
        self.echoes = keep;
    }

    /// A receipt, queueing, failure or silence for message `id`'s copy for `to`, if that message went to
    /// many: noted, and the echo (or its summary) shown once every copy is accounted for. False if `id` is
    /// not such a message.
    fn note_copy(&mut self, id: u64, to: Target, outcome: Outcome) -> bool {
        let Target::Nick(n) = to else {
            return false;
        };
        let Some(at) = self
            .echoes
            .iter()
            .position(|e| e.id == id && !e.many.is_empty())
        else {
            return false;
        };
        let e = &mut self.echoes[at];
        let Some(slot) = e.many.iter_mut().find(|(m, _)| *m == n) else {
            return false;
        };
        // A later receipt replaces "not answering"; nothing replaces a receipt.
        if slot.1 != Outcome::Delivered {
            slot.1 = outcome;
        }
        if e.many.iter().any(|(_, o)| *o == Outcome::Pending) {
            return true;
        }
        let e = self.echoes.remove(at);
        let (summary, all) = e.summary();
        let kind = if all { Kind::Good } else { Kind::Warn };
        let mark = if all {
            format!("✓ {summary}")
        } else {
            summary
        };
        if e.shown {
            self.notice(Some(kind), &format!("{} {mark}", e.to));
        } else {
            self.echo(&e.text, e.to, kind, &mark);
        }
        true
    }

    /// Our message as the others see it, `<me> text` (after `[#channel]` or `[*]` for a message to many),
    /// its lines after the first indented, then `mark`.
    fn echo(&self, text: &str, to: Dest, kind: Kind, mark: &str) {
        let st = self.style;
        let place = match to {
            Dest::In(s) => format!("[{}] ", s.label()),
            Dest::One(_) => String::new(),
        };
        let line = format!(
            "{place}<{}> {}  {}",
            st.paint(Kind::Nick, self.me.as_str()),
            continued(text),
            st.paint(kind, mark)
        );
        self.notice(None, &line);
    }

    /// The echo waiting for message `id`, if any.
    fn take_echo(&mut self, id: u64) -> Option<Echo> {
        let at = self.echoes.iter().position(|e| e.id == id)?;
        Some(self.echoes.remove(at))
    }

    fn leave_roster(&mut self) -> io::Result<()> {
        let now = self.sess.now();
        self.echo_overdue(now + ECHO_WAIT);
        self.save_outbox();
        let now = self.sess.now();
        self.sess.io.client.shutdown(now);
        let end = now + Duration::from_millis(500);
        while !self.sess.io.client.is_closed() && self.sess.now() < end {
            self.sess.turn(Some(end))?;
        }
        Ok(())
    }

    fn handle(&mut self, ev: SessionEvent) -> io::Result<Flow> {
        Ok(match ev {
            SessionEvent::Signal => Flow::Leave(0),
            SessionEvent::App(ReactorEvent::Io(STDIN, _)) => self.read_stdin(),
            SessionEvent::App(ReactorEvent::Io(WAKER, _)) => self.read_editor(),
            SessionEvent::App(_) => Flow::Go,
            SessionEvent::Peer(p) => {
                self.peer_event(&p);
                Flow::Go
            }
            SessionEvent::KeyChanged {
                nick,
                remembered,
                now,
            } => {
                self.notice(
                    Some(Kind::Error),
                    &format!(
                        "WARNING: the daemon gives {nick} another key than the one you talked to before \
                         ({now}, was {remembered}). Someone may be impersonating {nick}, or {nick} reinstalled \
                         mpc. Nothing goes to {nick} and nothing from that key shows as {nick}'s until you \
                         check the new fingerprint with {nick} (they see theirs with `mpc whoami`) and type \
                         `trust {nick}`."
                    ),
                );
                Flow::Go
            }
            SessionEvent::Client(c) => {
                let roster = matches!(c, ClientEvent::Roster(_));
                let flow = self.client_event(c);
                if roster {
                    self.start_reading()?;
                }
                flow
            }
        })
    }

    /// Line mode: one read from stdin; each complete line is a command.
    fn read_stdin(&mut self) -> Flow {
        let mut buf = [0u8; 4096];
        let n = match io::stdin().lock().read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Flow::Go,
            Err(_) => 0,
        };
        if n == 0 {
            self.sess.io.reactor.unwatch_stdin();
            return Flow::Leave(0);
        }
        let Ui::Lines { partial: line, .. } = &mut self.ui else {
            return Flow::Go;
        };
        line.extend_from_slice(&buf[..n]);
        let mut lines = Vec::new();
        while let Some(pos) = line.iter().position(|&b| b == b'\n') {
            let l: Vec<u8> = line.drain(..=pos).collect();
            lines.push(String::from_utf8_lossy(&l).into_owned());
        }
        if line.len() > MAX_LINE {
            line.clear();
        }
        for l in lines {
            let l = self.in_query(&l).unwrap_or(l);
            let step = match parse_command(&l) {
                Ok(c) => Step::Run(c),
                Err(e) => Step::Error(e),
            };
            if let Flow::Leave(code) = self.step(step) {
                return Flow::Leave(code);
            }
        }
        Flow::Go
    }

    /// Editor mode: lines from the input thread join the current batch; a lone `exit` leaves at once.
    fn read_editor(&mut self) -> Flow {
        loop {
            let Ui::Editor(e) = &mut self.ui else {
                return Flow::Go;
            };
            let Some(input) = e.poll_input() else {
                return Flow::Go;
            };
            match input {
                Input::Line(l) => {
                    let single = !l.contains(['\n', '\r']);
                    let idle = self.batch.is_empty();
                    let answer = idle && self.question.is_some();
                    if idle && !answer && single && parse_command(&l) == Ok(Command::Exit) {
                        e.stop();
                        return Flow::Leave(0);
                    }
                    // An answer to the paste question is not worth recalling.
                    let recall = !answer && !l.trim().is_empty();
                    // A single `msg` line may be the first of a paste typed out by the terminal: wait a moment
                    // for more. Anything else (a command, an answer, a bracketed paste) is complete: act now.
                    let msg = matches!(l.split_whitespace().next(), Some("msg" | "m" | "all"))
                        || self.in_query(&l).is_some();
                    self.batch.push(l);
                    if idle && (answer || !single || !msg) {
                        // The next line is read once this one is acted on, so its prompt shows what the line
                        // changed (`query #ops`).
                        let flow = self.run_batch();
                        if let Ui::Editor(e) = &mut self.ui {
                            e.resume(recall);
                        }
                        if let Flow::Leave(code) = flow {
                            return Flow::Leave(code);
                        }
                    } else {
                        if let Ui::Editor(e) = &mut self.ui {
                            e.resume(recall);
                        }
                        self.batch_until = Some(self.sess.now() + BURST);
                    }
                }
                Input::Eof => {
                    if let Flow::Leave(code) = self.run_batch() {
                        return Flow::Leave(code);
                    }
                    return Flow::Leave(0);
                }
                Input::Failed(err) => {
                    self.notice(
                        Some(Kind::Error),
                        &format!("mpc: terminal input failed: {err}"),
                    );
                    return Flow::Leave(1);
                }
            }
        }
    }

    /// Acts on the lines that came together.
    fn run_batch(&mut self) -> Flow {
        self.batch_until = None;
        let text = std::mem::take(&mut self.batch).join("\n");
        if let Some(plan) = self.question.take() {
            let mut lines = text.split(['\n', '\r']).filter(|l| !l.trim().is_empty());
            let answer = lines.next().unwrap_or("");
            let rest: Vec<&str> = lines.collect();
            if paste::is_yes(answer) {
                if let Flow::Leave(code) = self.run_plan(plan) {
                    return Flow::Leave(code);
                }
            } else {
                self.notice(
                    Some(Kind::Warn),
                    &format!("not sent: the {} pasted lines were dropped", plan.lines),
                );
            }
            return self.process(&rest.join("\n"));
        }
        self.process(&text)
    }

    /// In query mode, a line that is not a `/command` is a message to the query's receiver.
    fn in_query(&self, line: &str) -> Option<String> {
        let to = self.query?;
        (!line.trim().is_empty() && !line.trim_start().starts_with('/'))
            .then(|| format!("msg {to} {line}"))
    }

    fn process(&mut self, text: &str) -> Flow {
        // In query mode the first line of a batch is a message (unless a /command); the lines after it
        // continue it, as a paste after `msg NAME text` does.
        let text = match self.query {
            Some(_) => {
                let mut lines = text.splitn(2, '\n');
                let first = lines.next().unwrap_or("");
                match (self.in_query(first), lines.next()) {
                    (Some(m), Some(rest)) => format!("{m}\n{rest}"),
                    (Some(m), None) => m,
                    (None, _) => text.to_string(),
                }
            }
            None => text.to_string(),
        };
        let plan = paste::plan(&text);
        if plan.needs_confirmation() {
            self.notice(Some(Kind::Warn), &plan.question());
            self.question = Some(plan);
            return Flow::Go;
        }
        self.run_plan(plan)
    }

    fn run_plan(&mut self, plan: Plan) -> Flow {
        for s in plan.steps {
            if let Flow::Leave(code) = self.step(s) {
                return Flow::Leave(code);
            }
        }
        Flow::Go
    }

    fn step(&mut self, s: Step) -> Flow {
        match s {
            Step::Error(e) => self.say(&self.style.paint(Kind::Error, &e.to_string())),
            Step::Run(Command::Exit) => return Flow::Leave(0),
            Step::Run(Command::Nothing) => {}
            Step::Run(Command::Help) => self.say(HELP),
            Step::Run(Command::History(with, n)) => {
                let Some(h) = &self.history else {
                    self.history_off();
                    return Flow::Go;
                };
                match h.recent(with.as_deref(), n) {
                    Ok(rs) if rs.is_empty() => self.notice(None, "no messages kept"),
                    Ok(rs) => {
                        for r in &rs {
                            self.say(&self.history_line(r, with.is_none()));
                        }
                    }
                    Err(e) => self.notice(Some(Kind::Error), &e.to_string()),
                }
            }
            Step::Run(Command::Search(words)) => {
                let Some(h) = &self.history else {
                    self.history_off();
                    return Flow::Go;
                };
                match h.search(&words, HISTORY_LINES) {
                    Ok(rs) if rs.is_empty() => {
                        self.notice(None, &format!("nothing kept has {words}"))
                    }
                    Ok(rs) => {
                        for r in &rs {
                            self.say(&self.history_line(r, true));
                        }
                    }
                    Err(e) => self.notice(Some(Kind::Error), &e.to_string()),
                }
            }
            Step::Run(Command::Whois(n)) => {
                if !self.whois.contains(&n) {
                    self.whois.push(n);
                }
                self.sess.io.client.query_key(n);
            }
            Step::Run(Command::Trust(n)) => match self.sess.io.forget_peer_key(n) {
                Ok(true) => {
                    self.notice(
                        Some(Kind::System),
                        &format!(
                            "forgot {n}'s old key; the daemon's current one is remembered now"
                        ),
                    );
                    self.sess.io.client.query_key(n);
                }
                Ok(false) => self.notice(
                    Some(Kind::System),
                    &format!("no key was remembered for {n}: nothing to accept"),
                ),
                Err(e) => self.notice(Some(Kind::Error), &format!("cannot forget {n}'s key: {e}")),
            },
            Step::Run(Command::List) => {
                let es: Vec<Entry> = self.sess.io.client.roster().entries().cloned().collect();
                if es.is_empty() {
                    self.say("the roster is empty: not registered with a daemon yet");
                } else {
                    let mut t = roster_table_styled(&es, self.sess.wall_ms(), self.style);
                    if !self.sess.io.client.is_registered() {
                        t += &self.style.paint(
                            Kind::Warn,
                            "(the daemon is out of reach: this is the roster as last known)",
                        );
                    }
                    self.say(&t);
                }
            }
            Step::Run(Command::Msg(Dest::One(to), text)) => {
                let (now, wall) = (self.sess.now(), self.sess.wall_ms());
                // Echoed once its receipt (or its queueing, for an offline receiver) is known, on one line.
                match self.sess.chat.peer.send(now, wall, to, &text) {
                    Ok(id) => {
                        let to = self.sess.chat.peer.target_of(id).unwrap_or(to);
                        self.keep(Record::sent(self.me.as_str(), &to, &text, wall));
                        self.echoes.push(Echo {
                            id,
                            to: Dest::One(to),
                            text,
                            until: now + ECHO_WAIT,
                            many: Vec::new(),
                            shown: false,
                        });
                    }
                    Err(e) => self.notice(Some(Kind::Error), &format!("not sent: {e}")),
                }
            }
            Step::Run(Command::Msg(Dest::In(scope), text)) => self.say_in(scope, text),
            Step::Run(Command::Join(c)) => {
                if let Err(e) = self.sess.io.client.join(c) {
                    self.notice(Some(Kind::Error), &format!("cannot join {c}: {e}"));
                } else if !self.sess.io.client.is_registered() {
                    self.notice(
                        Some(Kind::System),
                        &format!("will join {c} once the daemon is reached"),
                    );
                }
            }
            Step::Run(Command::Part(c)) => {
                if let Err(e) = self.sess.io.client.part(c) {
                    self.notice(Some(Kind::Error), &format!("cannot leave {c}: {e}"));
                } else if self.query == Some(Dest::In(Scope::Channel(c))) {
                    self.set_query(None);
                }
            }
            Step::Run(Command::Channels) => self.show_channels(),
            Step::Run(Command::File(to, path)) => self.send_file(to, &path),
            Step::Run(Command::Accept(n, dir)) => self.accept_file(n, dir.as_deref()),
            Step::Run(Command::Decline(n)) => self.decline_file(n),
            Step::Run(Command::Cancel(n)) => self.cancel_file(n),
            Step::Run(Command::Transfers) => self.show_transfers(),
            Step::Run(Command::Query(to)) => self.set_query(to),
            Step::Run(Command::Away(message)) => {
                if let Err(e) = self.sess.io.client.set_away(message) {
                    self.notice(Some(Kind::Error), &e);
                }
            }
            Step::Run(Command::Rename(to)) => {
                if to == self.me {
                    self.notice(None, &format!("you are {to} already"));
                } else if let Err(e) = self.sess.io.client.rename(to) {
                    self.notice(Some(Kind::Error), &format!("cannot rename: {e}"));
                }
            }
        }
        Flow::Go
    }

    /// Sends `text` in `scope` to whoever the roster shows there now, each copy with its receipt, summed up
    /// in one echo ("delivered to 4 of 5 in #ops; carol offline (queued)").
    fn say_in(&mut self, scope: Scope, text: String) {
        let (now, wall) = (self.sess.now(), self.sess.wall_ms());
        let client = &self.sess.io.client;
        let to: Vec<Nick> = client
            .roster()
            .members(&self.me, &scope)
            .iter()
            .map(|e| e.nick)
            .collect();
        let outsider = match scope {
            Scope::Channel(c) => !client.channels().any(|x| *x == c),
            _ => false,
        };
        if to.is_empty() {
            let why = match scope {
                Scope::Channel(c) if outsider => {
                    format!("no one is in {c}; `join {c}` to start it")
                }
                Scope::Channel(c) => format!("no one else is in {c} yet"),
                _ => "no one else is online".to_string(),
            };
            self.notice(Some(Kind::Error), &format!("not sent: {why}"));
            return;
        }
        match self
            .sess
            .chat
            .peer
            .send_to_many(now, wall, scope, &to, &text)
        {
            Ok(id) => {
                let rec = Record::sent(self.me.as_str(), &Target::Nick(self.me), &text, wall)
                    .in_conversation(scope.label());
                self.keep(rec);
                self.echoes.push(Echo {
                    id,
                    to: Dest::In(scope),
                    text,
                    until: now + ECHO_WAIT,
                    many: to.into_iter().map(|n| (n, Outcome::Pending)).collect(),
                    shown: false,
                });
                if let (true, Scope::Channel(c)) = (outsider, scope) {
                    self.notice(
                        Some(Kind::Warn),
                        &format!(
                            "you are not in {c}: answers there will not reach you (`join {c}`)"
                        ),
                    );
                }
            }
            Err(e) => self.notice(Some(Kind::Error), &format!("not sent: {e}")),
        }
    }

    /// `channels`: each channel someone is in, its members (online ones first; ours marked).
    fn show_channels(&self) {
        let roster = self.sess.io.client.roster();
        let all = roster.channels();
        let mine: Vec<ChannelName> = self.sess.io.client.channels().copied().collect();
        if all.is_empty() && mine.is_empty() {
            self.say("no channels yet: `join #NAME` starts one");
            return;
        }
        let mut out = String::new();
        for (c, members) in &all {
            let mark = if mine.contains(c) {
                " (you are in it)"
            } else {
                ""
            };
            let names: Vec<String> = members
                .iter()
                .map(|e| match (e.status, e.away()) {
                    (Status::Online, None) => e.nick.to_string(),
                    (Status::Online, Some(_)) => format!("{} (away)", e.nick),
                    _ => format!("{} (offline)", e.nick),
                })
                .collect();
            out += &format!(
                "{}{mark}: {} member{}: {}\n",
                self.style.paint(Kind::Header, c.as_str()),
                members.len(),
                if members.len() == 1 { "" } else { "s" },
                names.join(", ")
            );
        }
        for c in mine.iter().filter(|c| !all.contains_key(c)) {
            out += &format!("{c}: joining…\n");
        }
        self.say(out.trim_end());
    }

    /// Query mode: plain lines go to `to` (`None`: plain lines are commands again).
    fn set_query(&mut self, to: Option<Dest>) {
        self.query = to;
        match to {
            Some(d) => self.notice(
                Some(Kind::System),
                &format!(
                    "plain lines now go to {d}; commands start with / (/list, /query to stop)"
                ),
            ),
            None => self.notice(Some(Kind::System), "plain lines are commands again"),
        }
        if let Ui::Editor(e) = &self.ui {
            e.set_prompt(&prompt(&self.me, to));
        }
        // With the transfers' progress in front, if any.
        self.transfers.reset_prompt();
        self.refresh_prompt();
    }

    fn peer_event(&mut self, p: &PeerEvent) {
        let st = self.style;
        match p {
            PeerEvent::Message {
                from,
                key,
                text,
                verified,
                sent_ms,
                scope,
                ..
            } => {
                let wall = self.sess.wall_ms();
                let rec = Record::received(from.as_str(), key, *verified, text, wall);
                self.keep(match scope {
                    Scope::Direct => rec,
                    s => rec.in_conversation(s.label()),
                });
                let mentioned = text.contains(self.me.as_str());
                let text = continued(text);
                let place = match scope {
                    Scope::Direct => String::new(),
                    s => format!("[{}] ", st.paint(Kind::Header, s.label())),
                };
                // A key the roster does not give for the name it claims is someone unknown: shown by its
                // fingerprint, never under the name.
                let mut line = if *verified {
                    format!("{place}<{}> {text}", st.paint(Kind::Nick, from.as_str()))
                } else {
                    format!(
                        "{place}<{}> {text}",
                        st.paint(
                            Kind::Warn,
                            &format!("unknown {} claiming to be {from}", key.fingerprint())
                        )
                    )
                };
                if sent_ms.abs_diff(wall) > 60_000 {
                    line += &st.paint(Kind::System, &format!(" (sent {})", style::hh_mm(*sent_ms)));
                }
                // A message to us alone, or one that names us, rings; a channel's chatter does not.
                if st.bell && (*scope == Scope::Direct || mentioned) {
                    line.push('\x07');
                }
                self.notice(None, &line);
            }
            PeerEvent::Delivered { id, to } => {
                if self.note_copy(*id, *to, Outcome::Delivered) {
                    return;
                }
                let mark = format!("✓ delivered #{} to {to}", id & 0xffff_ffff);
                match self.take_echo(*id) {
                    Some(e) => self.echo(&e.text, e.to, Kind::Good, &mark),
                    None => self.notice(Some(Kind::Good), &mark),
                }
            }
            PeerEvent::Queued { id, to } => {
                if self.note_copy(*id, *to, Outcome::Queued) {
                    return;
                }
                let mark = format!(
                    "queued #{} for {to} (offline; sent when it is back)",
                    id & 0xffff_ffff
                );
                match self.take_echo(*id) {
                    Some(e) => self.echo(&e.text, e.to, Kind::Warn, &mark),
                    None => self.notice(Some(Kind::Warn), &mark),
                }
            }
            PeerEvent::Unanswered { id, to, attempts } => {
                if self.note_copy(*id, *to, Outcome::Unanswered) {
                    return;
                }
                self.notice(
                    Some(Kind::Warn),
                    &format!(
                        "#{} to {to} not acknowledged after {attempts} attempts; still queued, retried while {to} is online",
                        id & 0xffff_ffff
                    ),
                )
            }
            PeerEvent::Failed { id, to, reason } => {
                if self.note_copy(*id, *to, Outcome::Failed(reason.clone())) {
                    return;
                }
                let mark = format!("failed #{} to {to}: {reason}", id & 0xffff_ffff);
                match self.take_echo(*id) {
                    Some(e) => self.echo(&e.text, e.to, Kind::Error, &mark),
                    None => self.notice(Some(Kind::Error), &mark),
                }
            }
            PeerEvent::File { xfer, event, info } => self.file_event(*xfer, event, info),
        }
    }

    /// One line for the first roster: who else is here, online and offline.
    fn roster_summary(&self) {
        let (mut on, mut off) = (Vec::new(), Vec::new());
        for e in self.sess.io.client.roster().entries() {
            if e.nick != self.me {
                if e.status == Status::Online {
                    on.push(e.nick.to_string());
                } else {
                    off.push(e.nick.to_string());
                }
            }
        }
        self.notice(Some(Kind::System), &roster_summary(on, off));
    }

    /// The nickname cannot be ours: says why and what to type instead, and leaves.
    fn choose_another_nick(&mut self, reason: &str) -> Flow {
        let me = self.me;
        self.notice(
            Some(Kind::Error),
            &format!(
                "{reason}\n      start mpc again with another nickname, e.g. --nick {}",
                suggest_nick(&me)
            ),
        );
        Flow::Leave(1)
    }

    fn client_event(&mut self, c: ClientEvent) -> Flow {
        let me = self.me;
        let now = self.sess.now();
        match c {
            ClientEvent::Searching { .. } => {}
            ClientEvent::DaemonFound { addr } => {
                self.notice(Some(Kind::System), &format!("found the daemon at {addr}"))
            }
            ClientEvent::Registered { .. } => {
                self.warn_at = None;
                let again = if self.registered_once {
                    "the daemon is back: "
                } else {
                    ""
                };
                self.registered_once = true;
                self.notice(Some(Kind::Good), &format!("{again}registered as {me}"));
            }
            ClientEvent::Rejected {
                result: RegisterResult::NickTaken,
                reason,
                retry_after,
            } => {
                // A daemon answered: no "no daemon" warning. The nickname may be held by our own previous run:
                // the daemon probes the holder; try once more after its hint, then give up.
                self.warn_at = None;
                if !retry_after.is_zero() && !self.retried {
                    self.retried = true;
                    self.retry_at = Some(now + retry_after);
                    self.notice(
                        Some(Kind::Warn),
                        &format!(
                            "the nickname {me} is in use; checking whether its holder is still there \
                             (trying again in {} s)",
                            retry_after.as_secs_f32().ceil() as u64
                        ),
                    );
                } else {
                    return self.choose_another_nick(&reason);
                }
            }
            ClientEvent::Rejected {
                result: RegisterResult::NickOwned,
                reason,
                ..
            } => {
                self.warn_at = None;
                return self.choose_another_nick(&reason);
            }
            ClientEvent::Rejected { reason, .. } => {
                self.notice(
                    Some(Kind::Error),
                    &format!("the daemon refused us: {reason}"),
                );
                return Flow::Leave(1);
            }
            ClientEvent::Key { nick, key } => {
                if let Some(i) = self.whois.iter().position(|n| *n == nick) {
                    self.whois.swap_remove(i);
                    let remembered = self.sess.io.remembered_peer_key(nick);
                    let text = match (key, remembered) {
                        (None, _) => format!("{nick}: no key owns this nickname"),
                        (Some(k), Some(r)) if r == k => format!(
                            "{nick}: key {} (the one remembered from before)",
                            k.fingerprint()
                        ),
                        (Some(k), Some(r)) => format!(
                            "{nick}: key {} — NOT the one remembered ({}); see `trust {nick}`",
                            k.fingerprint(),
                            r.fingerprint()
                        ),
                        (Some(k), None) => format!(
                            "{nick}: key {} (not talked to before; compare it with what {nick}'s `mpc whoami` shows)",
                            k.fingerprint()
                        ),
                    };
                    self.notice(Some(Kind::System), &text);
                }
            }
            ClientEvent::DaemonPinned { .. } => {
                if let Some(msg) = c.trust_notice() {
                    self.notice(Some(Kind::System), &msg);
                }
            }
            ClientEvent::DaemonKeyMismatch { .. }
            | ClientEvent::DaemonsDisagree { .. }
            | ClientEvent::Refused { .. }
            | ClientEvent::SecretRequired { .. }
            | ClientEvent::SecretMismatch { .. }
            | ClientEvent::OldDaemon { .. } => {
                // A daemon answered: not the "no daemon" warning, this one.
                self.warn_at = None;
                let given_up = self.sess.io.client.has_given_up();
                if let Some(msg) = c.trust_notice() {
                    self.notice(Some(if given_up { Kind::Error } else { Kind::Warn }), &msg);
                }
                if given_up {
                    return Flow::Leave(1);
                }
            }
            ClientEvent::DaemonLost { reason } => {
                self.warn_at = Some(now + self.opts.daemon_wait);
                self.notice(
                    Some(Kind::Warn),
                    &format!(
                        "lost the daemon ({reason}); still chatting with known peers, looking for it again"
                    ),
                );
            }
            ClientEvent::Roster(Applied::Snapshot(cs) | Applied::Changes(cs)) => {
                let first = !self.roster_seen;
                self.roster_seen = true;
                if let Ui::Editor(e) = &self.ui {
                    let mut nicks: Vec<String> = self
                        .sess
                        .io
                        .client
                        .roster()
                        .entries()
                        .filter(|e| e.nick != me)
                        .map(|e| e.nick.to_string())
                        .collect();
                    nicks.sort();
                    // Channels complete where names do (`msg #o`, `join #o`, `query #o`).
                    let roster = self.sess.io.client.roster();
                    nicks.extend(roster.channels().keys().map(|c| c.to_string()));
                    e.set_nicks(nicks);
                }
                if first {
                    self.roster_summary();
                    return Flow::Go;
                }
                for c in &cs {
                    let (kind, text) = match c {
                        Change::Joined(e) if e.nick != me && e.status != Status::Online => (
                            Kind::System,
                            format!("{} is offline (since {})", e.nick, style::hh_mm(e.since_ms)),
                        ),
                        Change::Joined(e) if e.nick != me => {
                            (Kind::Good, format!("{} joined ({})", e.nick, e.chat))
                        }
                        Change::Online(e) if e.nick != me => {
                            (Kind::Good, format!("{} is online", e.nick))
                        }
                        Change::Offline(e) if e.nick != me => {
                            (Kind::System, format!("{} went offline", e.nick))
                        }
                        Change::Removed(n) => (Kind::System, format!("{n} left the roster")),
                        Change::Renamed { from, to } if *to != me => {
                            (Kind::System, format!("{from} is now {to}"))
                        }
                        // Joins and parts of the channels we are in; others' channels are not our business.
                        Change::Channel {
                            nick,
                            channel,
                            joined,
                        } if *nick != me
                            && self.sess.io.client.channels().any(|c| c == channel) =>
                        {
                            let verb = if *joined { "joined" } else { "left" };
                            (Kind::System, format!("{nick} {verb} {channel}"))
                        }
                        Change::Presence { nick, away } if *nick != me => match away {
                            Some(m) if !m.is_empty() => {
                                (Kind::System, format!("{nick} is away: {m}"))
                            }
                            Some(_) => (Kind::System, format!("{nick} is away")),
                            None => (Kind::System, format!("{nick} is back")),
                        },
                        _ => continue,
                    };
                    self.notice(Some(kind), &text);
                }
            }
            ClientEvent::Roster(_) => {}
            ClientEvent::Answered {
                request,
                subject,
                refusal,
            } => {
                let (kind, text) = match (request, refusal) {
                    (Request::Join, None) => (
                        Kind::Good,
                        format!(
                            "joined {subject}: `msg {subject} TEXT` writes there (`query {subject}` makes plain \
                             lines go there), `channels` lists who is in it"
                        ),
                    ),
                    (Request::Part, None) => (Kind::System, format!("left {subject}")),
                    (Request::Away, None) => match self.sess.io.client.away() {
                        None => (Kind::System, "you are back".to_string()),
                        Some("") => (
                            Kind::System,
                            "you are away; `back` when you return".to_string(),
                        ),
                        Some(m) => (
                            Kind::System,
                            format!("you are away ({m}); `back` when you return"),
                        ),
                    },
                    (Request::Rename, None) => return Flow::Go,
                    (r, Some(why)) => (
                        Kind::Error,
                        format!(
                            "{} {subject}: {why}",
                            match r {
                                Request::Join => "cannot join",
                                Request::Part => "cannot leave",
                                Request::Away => "cannot set away",
                                Request::Rename => "cannot rename to",
                            }
                        ),
                    ),
                };
                self.notice(Some(kind), &text);
            }
            ClientEvent::Renamed { from, to } => {
                self.me = to;
                if let Ui::Editor(e) = &self.ui {
                    e.set_prompt(&prompt(&to, self.query));
                }
                self.transfers.reset_prompt();
                self.refresh_prompt();
                self.notice(
                    Some(Kind::Good),
                    &format!(
                        "you are now {to} (was {from}); your key owns both names, so no one else can take {from}"
                    ),
                );
                self.follow_rename(from, to);
            }
        }
        Flow::Go
    }
}

/// The line editor's prompt: `alice> `, and in query mode where plain lines go (`alice #ops> `).
fn prompt(me: &Nick, query: Option<Dest>) -> String {
    match query {
        None => format!("{me}> "),
        Some(d) => format!("{me} {d}> "),
    }
}

/// A multi-line message as the console shows it: each line after the first indented by two spaces, so it reads
/// as part of the message above it and not as a line of its own (a message's own indentation is kept behind
/// them).
fn continued(text: &str) -> String {
    text.trim_end_matches('\n').replace('\n', "\n  ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multi_line_message_is_indented_under_its_first_line() {
        assert_eq!(continued("one line"), "one line");
        assert_eq!(
            continued("fn main() {\n    run();\n}\n"),
            "fn main() {\n      run();\n  }"
        );
    }

    #[test]
    fn history_and_search_parse() {
        assert_eq!(
            parse_command("history"),
            Ok(Command::History(None, HISTORY_LINES))
        );
        assert_eq!(parse_command("h 5"), Ok(Command::History(None, 5)));
        assert_eq!(
            parse_command("history bob"),
            Ok(Command::History(Some("bob".into()), HISTORY_LINES))
        );
        assert_eq!(
            parse_command("history bob 3"),
            Ok(Command::History(Some("bob".into()), 3))
        );
        assert_eq!(
            parse_command("history bob x"),
            Err(CommandError::HistoryUsage)
        );
        assert_eq!(
            parse_command("history a b c"),
            Err(CommandError::HistoryUsage)
        );
        assert_eq!(
            parse_command("search  disk full "),
            Ok(Command::Search("disk full".into()))
        );
        assert_eq!(parse_command("search"), Err(CommandError::SearchUsage));
    }

    #[test]
    fn group_commands_parse() {
        let ops = ChannelName::new("#ops").unwrap();
        let everyone = Dest::In(Scope::Everyone);
        assert_eq!(
            parse_command("msg * lunch?"),
            Ok(Command::Msg(everyone, "lunch?".into()))
        );
        assert_eq!(
            parse_command("all lunch?"),
            Ok(Command::Msg(everyone, "lunch?".into()))
        );
        assert_eq!(
            parse_command("m #Ops deploy done"),
            Ok(Command::Msg(
                Dest::In(Scope::Channel(ops)),
                "deploy done".into()
            ))
        );
        assert_eq!(parse_command("join #ops"), Ok(Command::Join(ops)));
        assert_eq!(parse_command("join ops"), Ok(Command::Join(ops)));
        assert_eq!(parse_command("/part #ops"), Ok(Command::Part(ops)));
        assert_eq!(parse_command("leave #OPS"), Ok(Command::Part(ops)));
        assert_eq!(parse_command("channels"), Ok(Command::Channels));
        assert_eq!(
            parse_command("query #ops"),
            Ok(Command::Query(Some(Dest::In(Scope::Channel(ops)))))
        );
        assert_eq!(parse_command("/query"), Ok(Command::Query(None)));
        assert_eq!(
            parse_command("away at lunch "),
            Ok(Command::Away(Some("at lunch".into())))
        );
        assert_eq!(
            parse_command("away"),
            Ok(Command::Away(Some(String::new())))
        );
        assert_eq!(parse_command("back"), Ok(Command::Away(None)));
        assert_eq!(
            parse_command("nick alicia"),
            Ok(Command::Rename(Nick::new("alicia").unwrap()))
        );
        for (bad, says) in [
            ("join", "usage: join"),
            ("join #a b", "usage: join"),
            ("join #a/b", "not a channel name"),
            ("msg #a/b hi", "not a channel name"),
            ("query a b", "usage: query"),
            ("all", "usage: all"),
            ("nick", "usage: nick"),
        ] {
            let e = parse_command(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn commands_parse() {
        let bob = Nick::new("bob").unwrap();
        assert_eq!(parse_command("  list "), Ok(Command::List));
        assert_eq!(
            parse_command("msg bob hello there"),
            Ok(Command::Msg(
                Dest::One(Target::Nick(bob)),
                "hello there".into()
            ))
        );
        assert_eq!(
            parse_command("msg 127.0.0.1:5000 hi"),
            Ok(Command::Msg(
                Dest::One(Target::Addr("127.0.0.1:5000".parse().unwrap())),
                "hi".into()
            ))
        );
        assert!(parse_command("msg bob").is_err());
        assert!(
            parse_command("msg b!ob hi")
                .unwrap_err()
                .to_string()
                .contains("not a nickname")
        );
        assert!(
            parse_command("dance")
                .unwrap_err()
                .to_string()
                .contains("help")
        );
        assert_eq!(parse_command(""), Ok(Command::Nothing));
        assert_eq!(parse_command("exit"), Ok(Command::Exit));
    }

    #[test]
    fn file_commands_parse() {
        let bob = Nick::new("bob").unwrap();
        assert_eq!(
            parse_command("file bob ~/My Documents/report.pdf "),
            Ok(Command::File(
                Target::Nick(bob),
                "~/My Documents/report.pdf".into()
            ))
        );
        assert_eq!(
            parse_command("/f 10.0.0.2:4000 x"),
            Ok(Command::File(
                Target::Addr("10.0.0.2:4000".parse().unwrap()),
                "x".into()
            ))
        );
        for bad in ["file", "file bob", "file #ops x", "file * x"] {
            assert_eq!(parse_command(bad), Err(CommandError::FileUsage), "{bad}");
        }
        assert_eq!(parse_command("accept 3"), Ok(Command::Accept(3, None)));
        assert_eq!(
            parse_command("accept 3 /srv/in box"),
            Ok(Command::Accept(3, Some("/srv/in box".into())))
        );
        assert_eq!(parse_command("decline 2"), Ok(Command::Decline(2)));
        assert_eq!(parse_command("cancel 1"), Ok(Command::Cancel(1)));
        assert_eq!(parse_command("transfers"), Ok(Command::Transfers));
        for bad in ["accept", "accept 0", "accept x", "decline 2 x", "cancel"] {
            let e = parse_command(bad).unwrap_err();
            assert!(matches!(e, CommandError::TransferUsage(_)), "{bad}");
            assert!(e.to_string().starts_with("usage: "), "{e}");
        }
    }

    #[test]
    fn suggestions_count_up() {
        let n = |s: &str| Nick::new(s).unwrap();
        assert_eq!(suggest_nick(&n("alice")), "alice2");
        assert_eq!(suggest_nick(&n("bob7")), "bob8");
        assert_eq!(suggest_nick(&n("42")), "43");
        let long = "a".repeat(32);
        let s = suggest_nick(&n(&long));
        assert_eq!(s.len(), 32);
        assert!(Nick::new(&s).is_ok());
        // Cut at a character, within the byte bound, whatever the script.
        assert_eq!(suggest_nick(&n("José")), "José2");
        for long in ["é".repeat(31), "李".repeat(21), "ab".repeat(16)] {
            let s = suggest_nick(&n(&long));
            assert!(Nick::new(&s).is_ok(), "{long}: {s}");
            assert!(s.ends_with('2'), "{s}");
        }
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
            extra: None,
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
