//! The console on a terminal: a rustyline editor in an input thread, the reactor in the main thread.
//!
//! ```text
//!  input thread: readline ──Input──► channel ──► main thread (reactor), woken by a mio Waker
//!                   ▲  └─ waits for a Reply (next line, with or without a history entry, or stop)
//!                   └─ ExternalPrinter ◄── printer thread ◄── channel ◄── main thread's notices
//! ```
//!
//! The editor redraws the prompt and the half-typed line under every notice printed through its
//! `ExternalPrinter`. The printer runs in a thread of its own so the reactor never blocks on the terminal
//! (the printer's channel holds one message, and the editor takes none while, say, a completion list waits
//! for a key). History is kept in the state directory, bounded.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mio::{Registry, Token, Waker};
use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{ColorMode, CompletionType, Config, Context, ExternalPrinter, Helper};

/// History entries kept (in memory and in the file).
pub const HISTORY_MAX: usize = 1000;
/// The history file's name in the state directory.
pub const HISTORY_FILE: &str = "history";
/// The commands offered by Tab at the start of a line.
pub const COMMANDS: [&str; 22] = [
    "list",
    "msg",
    "all",
    "query",
    "join",
    "part",
    "channels",
    "away",
    "back",
    "nick",
    "whois",
    "trust",
    "history",
    "search",
    "file",
    "accept",
    "decline",
    "cancel",
    "transfers",
    "help",
    "exit",
    "quit",
];

/// What the input thread reports.
#[derive(Debug)]
pub enum Input {
    /// A line (which may hold several, from a bracketed paste). The thread waits for [`Editor::resume`] or
    /// [`Editor::stop`].
    Line(String),
    /// Ctrl-D on an empty line, or the terminal closed.
    Eof,
    /// The terminal failed; no more input.
    Failed(String),
}

enum Reply {
    Next { history: bool },
    Stop,
}

enum Print {
    Text(String),
    /// Acknowledge once everything before it is on the screen.
    Flush(Sender<()>),
}

/// Tab completion: commands first, nicknames after `msg `, paths after `file NAME ` and `accept N `.
pub struct ConsoleHelper {
    nicks: Arc<Mutex<Vec<String>>>,
    paths: FilenameCompleter,
}

/// Whether the cursor at `pos` is in a path argument: `file NAME PATH` or `accept N DIR`.
pub fn in_path_argument(line: &str, pos: usize) -> bool {
    let before = line.get(..pos).unwrap_or(line).trim_start();
    let before = before.strip_prefix('/').unwrap_or(before);
    let mut words = before.splitn(3, char::is_whitespace);
    matches!(
        (words.next(), words.next(), words.next()),
        (Some("file" | "f" | "accept"), Some(w), Some(_)) if !w.is_empty()
    )
}

/// Completion candidates for `line` with the cursor at `pos`: where the replaced word starts, and the words
/// (with the text that replaces the typed part).
pub fn complete(line: &str, pos: usize, nicks: &[String]) -> (usize, Vec<Pair>) {
    let before = &line[..pos.min(line.len())];
    let lead = before.len() - before.trim_start().len();
    let typed = &before[lead..];
    let pair = |word: &str, replacement: String| Pair {
        display: word.to_string(),
        replacement,
    };
    match typed.split_once(char::is_whitespace) {
        None => (
            lead,
            COMMANDS
                .iter()
                .filter(|c| c.starts_with(typed))
                .map(|c| {
                    // Commands that take an argument get their space.
                    let rep = if matches!(
                        *c,
                        "list" | "channels" | "back" | "transfers" | "help" | "exit" | "quit"
                    ) {
                        c.to_string()
                    } else {
                        format!("{c} ")
                    };
                    pair(c, rep)
                })
                .collect(),
        ),
        Some((
            "msg" | "m" | "query" | "q" | "join" | "j" | "part" | "whois" | "trust" | "history"
            | "file" | "f",
            rest,
        )) => {
            let word = rest.trim_start();
            if word.contains(char::is_whitespace) {
                return (pos, Vec::new());
            }
            let start = pos - word.len();
            (
                start,
                nicks
                    .iter()
                    .filter(|n| n.starts_with(word))
                    .map(|n| pair(n, format!("{n} ")))
                    .collect(),
            )
        }
        Some(_) => (pos, Vec::new()),
    }
}

impl Completer for ConsoleHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        if in_path_argument(line, pos) {
            return self.paths.complete_path(line, pos);
        }
        let nicks = self.nicks.lock().unwrap_or_else(|e| e.into_inner());
        Ok(complete(line, pos, &nicks))
    }
}

impl Hinter for ConsoleHelper {
    type Hint = String;
}
impl Highlighter for ConsoleHelper {}
impl Validator for ConsoleHelper {}
impl Helper for ConsoleHelper {}

/// The main thread's side of the terminal console.
pub struct Editor {
    input: Receiver<Input>,
    reply: Sender<Reply>,
    out: Sender<Print>,
    nicks: Arc<Mutex<Vec<String>>>,
    /// The terminal's settings before the editor changed them, restored if we leave mid-line.
    saved: libc::termios,
    /// The input thread waits for our reply.
    parked: bool,
    /// The input thread has ended.
    done: bool,
    /// The prompt the input thread shows for the next line.
    prompt: Arc<Mutex<String>>,
    _waker: Arc<Waker>,
}

fn rl_err(e: ReadlineError) -> io::Error {
    match e {
        ReadlineError::Io(e) => e,
        e => io::Error::other(e.to_string()),
    }
}

impl Editor {
    /// Starts the editor (input and printer threads) with `prompt`, history in `state_dir`, and a waker
    /// registered as `token`. `None` if the terminal cannot host it (e.g. `TERM=dumb`): use line mode.
    ///
    /// Call it after the reactor blocked its signals: the threads inherit the mask, so SIGINT and SIGTERM
    /// still reach the reactor's signalfd.
    pub fn start(
        registry: &Registry,
        token: Token,
        prompt: String,
        state_dir: PathBuf,
        colour: bool,
    ) -> io::Result<Option<Editor>> {
        // SAFETY: tcgetattr writes into `saved`, which we own; on failure it is not used.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            return Ok(None);
        }
        let config = Config::builder()
            .max_history_size(HISTORY_MAX)
            .map_err(rl_err)?
            .history_ignore_dups(true)
            .map_err(rl_err)?
            .history_ignore_space(true)
            .auto_add_history(false)
            .completion_type(CompletionType::List)
            .bracketed_paste(true)
            .color_mode(if colour {
                ColorMode::Enabled
            } else {
                ColorMode::Disabled
            })
            .build();
        let nicks = Arc::new(Mutex::new(Vec::new()));
        let prompt = Arc::new(Mutex::new(prompt));
        let thread_prompt = prompt.clone();
        let mut rl: rustyline::Editor<ConsoleHelper, DefaultHistory> =
            rustyline::Editor::with_config(config).map_err(rl_err)?;
        rl.set_helper(Some(ConsoleHelper {
            nicks: nicks.clone(),
            paths: FilenameCompleter::new(),
        }));
        let history = state_dir.join(HISTORY_FILE);
        if history.exists()
            && let Err(e) = rl.load_history(&history)
        {
            log::warn!("cannot read the history {}: {e}", history.display());
        }
        let Ok(mut printer) = rl.create_external_printer() else {
            return Ok(None);
        };
        // Shared with the Editor: the eventfd must outlive the input thread, or its last wake-up (EOF) could
        // be dropped from the poll along with the closed fd before the reactor sees it.
        let waker = Arc::new(Waker::new(registry, token)?);
        let thread_waker = waker.clone();
        let (in_tx, in_rx) = mpsc::channel();
        let (reply_tx, reply_rx) = mpsc::channel();
        let (out_tx, out_rx) = mpsc::channel::<Print>();
        std::thread::Builder::new()
            .name("mpc-printer".into())
            .spawn(move || {
                while let Ok(p) = out_rx.recv() {
                    let mut next = Some(p);
                    while let Some(p) = next.take() {
                        match p {
                            Print::Text(mut text) => {
                                // Whatever else is already waiting goes out in the same redraw.
                                loop {
                                    match out_rx.try_recv() {
                                        Ok(Print::Text(t)) => {
                                            text.push('\n');
                                            text.push_str(&t);
                                        }
                                        Ok(other) => {
                                            next = Some(other);
                                            break;
                                        }
                                        Err(_) => break,
                                    }
                                }
                                // Ends with a newline: the editor adds none then, and a print made while it is
                                // between lines (written straight to the terminal) ends its line too.
                                text.push('\n');
                                if printer.print(text).is_err() {
                                    return;
                                }
                            }
                            Print::Flush(ack) => {
                                // The printer's channel holds one message: once two more went in, the editor
                                // has drawn everything before them. They move the cursor up a line and back
                                // down, so nothing shows.
                                for _ in 0..2 {
                                    let _ = printer.print("\x1b[A\n".into());
                                }
                                let _ = ack.send(());
                            }
                        }
                    }
                }
            })?;
        std::thread::Builder::new()
            .name("mpc-input".into())
            .spawn(move || {
                let waker = thread_waker;
                loop {
                    let prompt = thread_prompt
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone();
                    match rl.readline(&prompt) {
                        Ok(line) => {
                            if in_tx.send(Input::Line(line.clone())).is_err() {
                                return;
                            }
                            let _ = waker.wake();
                            match reply_rx.recv() {
                                Ok(Reply::Next { history }) => {
                                    if history
                                        && rl.add_history_entry(line.as_str()).unwrap_or(false)
                                    {
                                        let _ = std::fs::create_dir_all(&state_dir);
                                        if let Err(e) = rl.save_history(&history_path(&state_dir)) {
                                            log::warn!("cannot save the history: {e}");
                                        }
                                    }
                                }
                                Ok(Reply::Stop) | Err(_) => return,
                            }
                        }
                        // Ctrl-C clears the line.
                        Err(ReadlineError::Interrupted) => continue,
                        Err(ReadlineError::Eof) => {
                            let _ = in_tx.send(Input::Eof);
                            let _ = waker.wake();
                            return;
                        }
                        Err(e) => {
                            let _ = in_tx.send(Input::Failed(e.to_string()));
                            let _ = waker.wake();
                            return;
                        }
                    }
                }
            })?;
        Ok(Some(Editor {
            input: in_rx,
            reply: reply_tx,
            out: out_tx,
            nicks,
            prompt,
            saved,
            parked: false,
            done: false,
            _waker: waker,
        }))
    }

    /// The next input, if any arrived.
    pub fn poll_input(&mut self) -> Option<Input> {
        let i = self.input.try_recv().ok()?;
        match i {
            Input::Line(_) => self.parked = true,
            Input::Eof | Input::Failed(_) => self.done = true,
        }
        Some(i)
    }

    /// Lets the input thread read the next line; `history` adds the last one to the history first.
    pub fn resume(&mut self, history: bool) {
        if self.parked {
            self.parked = false;
            if self.reply.send(Reply::Next { history }).is_err() {
                self.done = true;
            }
        }
    }

    /// Ends the input thread (it is waiting for a reply, out of the terminal's raw mode).
    pub fn stop(&mut self) {
        if self.parked {
            self.parked = false;
            self.done = true;
            let _ = self.reply.send(Reply::Stop);
        }
    }

    /// Prints `text` (one or more lines) above the prompt.
    pub fn print(&self, text: String) {
        let _ = self.out.send(Print::Text(text));
    }

    /// The prompt from the next line on (query mode shows where plain lines go).
    pub fn set_prompt(&self, p: &str) {
        p.clone_into(&mut self.prompt.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// The nicknames Tab offers after `msg `.
    pub fn set_nicks(&self, nicks: Vec<String>) {
        *self.nicks.lock().unwrap_or_else(|e| e.into_inner()) = nicks;
    }

    /// Waits (up to `limit`) until everything printed so far is on the screen (the editor may still be
    /// redrawing the prompt under it).
    pub fn flush(&self, limit: Duration) {
        let (tx, rx) = mpsc::channel();
        if self.out.send(Print::Flush(tx)).is_ok() {
            match rx.recv_timeout(limit) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => {}
                Err(RecvTimeoutError::Timeout) => log::debug!("console: flush timed out"),
            }
        }
    }
}

fn history_path(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join(HISTORY_FILE)
}

impl Drop for Editor {
    /// Leaving while the input thread is in the middle of a line (a signal, a refusal): show what was
    /// printed, then give the terminal back as it was (cooked mode, bracketed paste off) on a fresh line.
    fn drop(&mut self) {
        if self.done || self.parked {
            self.stop();
            return;
        }
        self.flush(Duration::from_millis(300));
        // The flush's own two redraws of the prompt are still under way: let them end before the last word is
        // ours. (No way to ask the editor; they take microseconds, this only keeps the shell's prompt off ours.)
        std::thread::sleep(Duration::from_millis(50));
        // SAFETY: restores settings read from the same fd by tcgetattr.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSADRAIN, &self.saved);
        }
        let mut out = io::stdout().lock();
        let _ = out.write_all(b"\x1b[?2004l\r\n");
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str, nicks: &[&str]) -> (usize, Vec<String>) {
        let nicks: Vec<String> = nicks.iter().map(|s| s.to_string()).collect();
        let (start, c) = complete(line, line.len(), &nicks);
        (start, c.into_iter().map(|p| p.replacement).collect())
    }

    #[test]
    fn commands_then_nicknames() {
        assert_eq!(words("li", &[]), (0, vec!["list".to_string()]));
        assert_eq!(words("  m", &[]), (2, vec!["msg ".to_string()]));
        assert_eq!(words("", &[]).1.len(), COMMANDS.len());
        assert_eq!(words("ch", &[]), (0, vec!["channels".to_string()]));
        assert_eq!(words("jo", &[]), (0, vec!["join ".to_string()]));
        // Channels are offered where names are.
        assert_eq!(
            words("join #o", &["#ops", "bob"]),
            (5, vec!["#ops ".to_string()])
        );
        assert_eq!(
            words("msg b", &["alice", "bob", "bea"]),
            (4, vec!["bob ".to_string(), "bea ".to_string()])
        );
        assert_eq!(words("msg  ", &["bob"]), (5, vec!["bob ".to_string()]));
        // Past the nickname, nothing: the text is free.
        assert!(words("msg bob he", &["bob", "hector"]).1.is_empty());
        assert!(words("list x", &["bob"]).1.is_empty());
        assert_eq!(words("file b", &["bob"]), (5, vec!["bob ".to_string()]));
    }

    #[test]
    fn paths_are_completed_after_the_receiver_of_file_and_the_number_of_accept() {
        assert!(in_path_argument("file bob ~/Doc", 14));
        assert!(in_path_argument("/file bob ", 10));
        assert!(in_path_argument("accept 3 /tm", 12));
        assert!(!in_path_argument("file bo", 7));
        assert!(!in_path_argument("file ", 5));
        assert!(!in_path_argument("msg bob hello", 13));
        assert!(!in_path_argument("decline 3 x", 11));
    }
}
