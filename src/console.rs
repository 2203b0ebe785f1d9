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
use crate::io::client::Setup;
use crate::io::history::{self, History, Record};
use crate::nick::Nick;
use crate::outbox;
use crate::peer::{PeerEvent, Target};
use crate::reactor::ReactorEvent;
use crate::registry::wire::{Entry, RegisterResult, Status};
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
}

/// A parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Show the roster.
    List,
    /// Send a message.
    Msg(Target, String),
    /// Show a peer's key fingerprint, and whether it is the one remembered.
    Whois(Nick),
    /// Accept the key the daemon now gives for a peer whose key changed.
    Trust(Nick),
    /// Show the last messages kept: of one conversation (a nickname or `IP:PORT`), or of all; how many.
    History(Option<String>, usize),
    /// Show the kept messages that have every one of these words.
    Search(String),
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
    /// Not a command.
    Unknown(String),
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandError::MsgUsage => f.write_str("usage: msg NAME text   (or msg IP:PORT text)"),
            CommandError::NameUsage(w) => write!(f, "usage: {w} NAME"),
            CommandError::HistoryUsage => f.write_str("usage: history [NAME] [COUNT]"),
            CommandError::SearchUsage => f.write_str("usage: search WORDS"),
            CommandError::BadNick { typed, why } => write!(f, "{typed:?} is not a nickname: {why}"),
            CommandError::Unknown(w) => write!(f, "unknown command {w:?}; type `help`"),
        }
    }
}

impl std::error::Error for CommandError {}

/// Parses one line typed at the console.
pub fn parse_command(line: &str) -> Result<Command, CommandError> {
    let line = line.trim();
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
            let target = match to.parse::<SocketAddr>() {
                Ok(a) => Target::Addr(a),
                Err(_) => Target::Nick(Nick::new(to).map_err(|why| CommandError::BadNick {
                    typed: to.to_string(),
                    why,
                })?),
            };
            Ok(Command::Msg(target, text.trim().to_string()))
        }
        other => Err(CommandError::Unknown(other.to_string())),
    }
}

/// The help text.
pub const HELP: &str = "commands (short forms in brackets):
  list [ls, who]        who is in the roster, online or offline
  msg NAME text [m]     send text to NAME (queued if NAME is offline; Bob finds bob)
  msg IP:PORT text      send text to a chat address directly
  whois NAME            NAME's key fingerprint, and whether it is the one remembered from before
  trust NAME            accept NAME's new key after it changed (check its fingerprint with NAME first)
  history [NAME] [N]    the last N messages (20) with NAME, or with everyone, kept across runs [h]
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
    /// Waiting messages as last saved.
    waiting: Vec<(Target, u64, u64, String)>,
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
}

/// A sent message whose echo waits for its receipt.
struct Echo {
    id: u64,
    to: Target,
    text: String,
    until: Instant,
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
    // A closed terminal ends the console like `exit`: the roster hears we left, waiting messages are kept.
    sess.io
        .reactor
        .watch_signals(&[nix::sys::signal::Signal::SIGHUP], HANGUP)?;
    let editor = if io::stdin().is_terminal() && io::stdout().is_terminal() {
        Editor::start(
            sess.io.reactor.registry(),
            WAKER,
            format!("{me}> "),
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
        history: None,
        waiting: Vec::new(),
        batch: Vec::new(),
        batch_until: None,
        question: None,
        roster_seen: false,
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

    fn restore_outbox(&mut self) {
        let now = self.sess.now();
        match outbox::load(&self.opts.state_dir, &self.me) {
            Ok(saved) => {
                if !saved.is_empty() {
                    self.notice(
                        Some(Kind::Warn),
                        &format!(
                            "{} message(s) from an earlier session are waiting for delivery",
                            saved.len()
                        ),
                    );
                }
                for (t, id, ms, text) in saved {
                    self.sess.chat.peer.restore(now, t, id, ms, text);
                }
            }
            Err(e) => self.notice(Some(Kind::Error), &format!("warning: {e}")),
        }
        self.waiting = self.sess.chat.peer.waiting_messages();
    }

    fn run(&mut self) -> io::Result<u8> {
        loop {
            let echo = self.echoes.iter().map(|e| e.until).min();
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
            if self.batch_until.is_some_and(|t| now >= t)
                && let Flow::Leave(code) = self.run_batch()
            {
                return Ok(code);
            }
            self.sess.flush()?;
            self.save_outbox();
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

    fn save_outbox(&mut self) {
        let w = self.sess.chat.peer.waiting_messages();
        if w != self.waiting {
            self.waiting = w;
            if let Err(e) = outbox::save(&self.opts.state_dir, &self.me, &self.waiting) {
                self.notice(
                    Some(Kind::Error),
                    &format!("warning: cannot save waiting messages: {e}"),
                );
            }
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
        let (due, keep): (Vec<Echo>, Vec<Echo>) = std::mem::take(&mut self.echoes)
            .into_iter()
            .partition(|e| e.until <= now);
        self.echoes = keep;
        for e in due {
            let mark = format!("… sending #{} to {}", e.id & 0xffff_ffff, e.to);
            self.echo(&e.text, Kind::System, &mark);
        }
    }

    /// Our message as the others see it, `<me> text`, its lines after the first indented, then `mark`.
    fn echo(&self, text: &str, kind: Kind, mark: &str) {
        let st = self.style;
        let line = format!(
            "<{}> {}  {}",
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
        let _ = outbox::save(
            &self.opts.state_dir,
            &self.me,
            &self.sess.chat.peer.waiting_messages(),
        );
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
                    e.resume(!answer && !l.trim().is_empty());
                    // A single `msg` line may be the first of a paste typed out by the terminal: wait a moment
                    // for more. Anything else (a command, an answer, a bracketed paste) is complete: act now.
                    let msg = matches!(l.split_whitespace().next(), Some("msg" | "m"));
                    self.batch.push(l);
                    if idle && (answer || !single || !msg) {
                        if let Flow::Leave(code) = self.run_batch() {
                            return Flow::Leave(code);
                        }
                    } else {
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

    fn process(&mut self, text: &str) -> Flow {
        let plan = paste::plan(text);
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
                let es: Vec<Entry> = self.sess.io.client.roster().entries().copied().collect();
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
            Step::Run(Command::Msg(to, text)) => {
                let (now, wall) = (self.sess.now(), self.sess.wall_ms());
                // Echoed once its receipt (or its queueing, for an offline receiver) is known, on one line.
                match self.sess.chat.peer.send(now, wall, to, &text) {
                    Ok(id) => {
                        let to = self.sess.chat.peer.target_of(id).unwrap_or(to);
                        self.keep(Record::sent(self.me.as_str(), &to, &text, wall));
                        self.echoes.push(Echo {
                            id,
                            to,
                            text,
                            until: now + ECHO_WAIT,
                        });
                    }
                    Err(e) => self.notice(Some(Kind::Error), &format!("not sent: {e}")),
                }
            }
        }
        Flow::Go
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
                ..
            } => {
                let wall = self.sess.wall_ms();
                self.keep(Record::received(from.as_str(), key, *verified, text, wall));
                let text = continued(text);
                // A key the roster does not give for the name it claims is someone unknown: shown by its
                // fingerprint, never under the name.
                let mut line = if *verified {
                    format!("<{}> {text}", st.paint(Kind::Nick, from.as_str()))
                } else {
                    format!(
                        "<{}> {text}",
                        st.paint(
                            Kind::Warn,
                            &format!("unknown {} claiming to be {from}", key.fingerprint())
                        )
                    )
                };
                if sent_ms.abs_diff(wall) > 60_000 {
                    line += &st.paint(Kind::System, &format!(" (sent {})", style::hh_mm(*sent_ms)));
                }
                // Chat is one to one: every message is addressed to us.
                if st.bell {
                    line.push('\x07');
                }
                self.notice(None, &line);
            }
            PeerEvent::Delivered { id, to } => {
                let mark = format!("✓ delivered #{} to {to}", id & 0xffff_ffff);
                match self.take_echo(*id) {
                    Some(e) => self.echo(&e.text, Kind::Good, &mark),
                    None => self.notice(Some(Kind::Good), &mark),
                }
            }
            PeerEvent::Queued { id, to } => {
                let mark = format!(
                    "queued #{} for {to} (offline; sent when it is back)",
                    id & 0xffff_ffff
                );
                match self.take_echo(*id) {
                    Some(e) => self.echo(&e.text, Kind::Warn, &mark),
                    None => self.notice(Some(Kind::Warn), &mark),
                }
            }
            PeerEvent::Unanswered { id, to, attempts } => self.notice(
                Some(Kind::Warn),
                &format!(
                    "#{} to {to} not acknowledged after {attempts} attempts; still queued, retried while {to} is online",
                    id & 0xffff_ffff
                ),
            ),
            PeerEvent::Failed { id, to, reason } => {
                let mark = format!("failed #{} to {to}: {reason}", id & 0xffff_ffff);
                match self.take_echo(*id) {
                    Some(e) => self.echo(&e.text, Kind::Error, &mark),
                    None => self.notice(Some(Kind::Error), &mark),
                }
            }
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
                        _ => continue,
                    };
                    self.notice(Some(kind), &text);
                }
            }
            ClientEvent::Roster(_) => {}
        }
        Flow::Go
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
