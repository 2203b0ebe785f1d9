//! `mpc`: the multiproto client. Without a subcommand, the interactive console (`src/console.rs`); `listen`,
//! `send` and `list` are for scripts and tests.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;

#[path = "mpc/files.rs"]
mod files;

use multiproto::client::ClientEvent;
use multiproto::client::roster::{Applied, Change};
use multiproto::discovery;
use multiproto::group::{ChannelName, Scope};
use multiproto::identity::Fingerprint;
use multiproto::io::client::{ClientIo, Setup};
use multiproto::io::history::queue::Waiting;
use multiproto::io::history::{History, Limits as HistoryLimits, Record};
use multiproto::nick::Nick;
use multiproto::outbox::Outbox;
use multiproto::peer::frame::MAX_TEXT;
use multiproto::peer::{PeerEvent, Target};
use multiproto::reactor::ReactorEvent;
use multiproto::registry::wire::{Entry, RegisterResult, Status};
use multiproto::session::{Session, SessionEvent};

/// multiproto client: find the mpd daemon on the LAN (UDP multicast), join its roster (SCTP), and chat with
/// the others directly (TCP): one to one, in channels (#ops), or to everyone. Without a subcommand: the
/// interactive console (type `help`: msg, join, part, channels, query, away, back, nick, history, search,
/// file, accept, transfers).
///
/// Exit codes: 0 success; 1 an error (nickname refused, message failed, cannot open a socket); 2 a usage
/// error (an unknown option, a missing argument, a nickname that is not valid); 3 (send, send-file) the
/// receiver is not in the roster, or offline (send: only with --now; without it the message is queued and
/// send exits 0); 4 no daemon answered in time (check that mpd runs, the group, --iface, your firewall, or
/// use --daemon HOST:PORT).
#[derive(FromArgs)]
struct Args {
    /// your nickname: 1-32 letters or digits of any script, '-', '_' or '.', at most 63 bytes of UTF-8
    /// (default: $USER)
    #[argh(option)]
    nick: Option<String>,
    /// TCP port for incoming chat (default: any free port)
    #[argh(option, default = "0")]
    port: u16,
    /// discovery multicast group (default 239.255.77.77:10001)
    #[argh(option, default = "discovery::DEFAULT_GROUP")]
    group: SocketAddr,
    /// interface for multicast, by address or name (default: the routing table's choice)
    #[argh(option)]
    iface: Option<String>,
    /// the daemon's SCTP address, skipping multicast discovery: HOST:PORT or HOST (port 9899), HOST an
    /// address or a name (localhost, a host name)
    #[argh(option, from_str_fn(daemon_addr))]
    daemon: Option<SocketAddr>,
    /// UDP port of this client's SCTP socket (default: any free port); fixing it lets a restarted client
    /// take its roster entry back at once
    #[argh(option, default = "0")]
    sctp_port: u16,
    /// seconds to wait for the daemon (and, for send, for delivery) before giving up in one-shot modes
    /// (default 10)
    #[argh(option, default = "10")]
    timeout: u64,
    /// where this client's key, the daemon keys it trusts (known_daemons), messages for offline peers and
    /// the command history are kept (default $XDG_STATE_HOME/multiproto or ~/.local/state/multiproto)
    #[argh(option)]
    state_dir: Option<PathBuf>,
    /// trust only the daemon whose key has this fingerprint (as `mpd key` prints it on the daemon's host);
    /// replaces the key pinned for this group once the daemon proves it holds it (after a reinstall)
    #[argh(option, from_str_fn(parse_fingerprint))]
    daemon_key: Option<Fingerprint>,
    /// the network secret, if the daemon requires one: a file readable only by you, the same as the
    /// daemon's --secret-file
    #[argh(option)]
    secret_file: Option<PathBuf>,
    /// messages kept in the history (STATE_DIR/history-NICK.sqlite3) at most; the oldest go first (default
    /// 1000000; 0 = keep none: no message is written to it, and a history already there is left as it is;
    /// messages waiting for delivery are still kept in that file, made only when one has to wait)
    #[argh(option, default = "1_000_000")]
    history_max: u64,
    /// how long messages are kept in the history, e.g. 30d or 365d (default 365d)
    #[argh(
        option,
        from_str_fn(parse_duration),
        default = "Duration::from_secs(365 * 86_400)"
    )]
    history_age: Duration,
    /// the largest transfer (a file, or a folder in all) accepted from anyone: bytes, or 512M, 10G, 2T
    /// (default 1T); larger offers are refused without asking
    #[argh(option, from_str_fn(parse_size), default = "1 << 40")]
    max_receive: u64,
    /// the most files and folders in one transfer accepted (default 100000)
    #[argh(option, default = "100_000")]
    max_receive_files: u32,
    /// where the console puts accepted files unless `accept N DIR` names another place (default
    /// $XDG_DOWNLOAD_DIR or ~/Downloads; made when first needed)
    #[argh(option)]
    downloads: Option<PathBuf>,
    #[argh(subcommand)]
    cmd: Option<Cmd>,
}

/// `--max-receive`.
fn parse_size(s: &str) -> Result<u64, String> {
    multiproto::cli::parse_size(s)
}

/// `--history-age`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    multiproto::cli::parse_duration(s).map_err(|e| e.to_string())
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Cmd {
    Listen(Listen),
    Send(Send),
    SendFile(files::SendFile),
    List(List),
    History(HistoryCmd),
    Search(SearchCmd),
    Whoami(Whoami),
    Trust(Trust),
}

/// print the messages kept (sent and received, by the console and by listen) with NAME, or with everyone,
/// oldest first; needs no daemon
#[derive(FromArgs)]
#[argh(subcommand, name = "history")]
struct HistoryCmd {
    /// a nickname (or IP:PORT); none: every conversation
    #[argh(positional)]
    with: Option<String>,
    /// one JSON object per message
    #[argh(switch)]
    json: bool,
    /// messages at most, the most recent (default 20)
    #[argh(option, default = "20")]
    limit: usize,
}

/// print the messages kept that have every one of WORDS (whole words, any case); needs no daemon
#[derive(FromArgs)]
#[argh(subcommand, name = "search")]
struct SearchCmd {
    /// the words (options may come before or after them)
    #[argh(positional)]
    words: Vec<String>,
    /// one JSON object per message
    #[argh(switch)]
    json: bool,
    /// messages at most, the most recent (default 20)
    #[argh(option, default = "20")]
    limit: usize,
}

/// The history of `nick`, opened with the limits the options give.
fn open_history(a: &Args, nick: &Nick) -> Result<History, String> {
    let path = multiproto::io::history::path(&state_dir(a), nick.as_str());
    History::open(&path, history_limits(a)).map_err(|e| e.to_string())
}

fn history_limits(a: &Args) -> HistoryLimits {
    HistoryLimits {
        max_messages: a.history_max,
        max_age: a.history_age,
    }
}

/// A kept message as a JSON object (`mpc history --json`, `mpc search --json`).
fn record_json(r: &Record) -> serde_json::Value {
    serde_json::json!({"with": r.conversation, "from": r.sender, "outgoing": r.outgoing,
        "verified": r.verified, "at_ms": r.at_ms, "text": r.text})
}

/// `mpc history` and `mpc search`: the records, as JSON lines or as the console shows them; exit 0, or 1
/// with the reason if the history could not be read.
fn print_records(records: Result<Vec<Record>, String>, json: bool) -> ExitCode {
    let records = match records {
        Ok(rs) => rs,
        Err(e) => {
            eprintln!("mpc: {e}");
            return ExitCode::from(1);
        }
    };
    for r in &records {
        if json {
            print_line(&record_json(r));
        } else {
            println!(
                "{} [{}] <{}> {}",
                multiproto::console::style::hh_mm(r.at_ms),
                r.conversation,
                r.sender,
                r.text.trim_end_matches('\n').replace('\n', "\n  ")
            );
        }
    }
    ExitCode::SUCCESS
}

fn history_cmd(a: &Args, h: &HistoryCmd, nick: Nick) -> std::io::Result<ExitCode> {
    let records = open_history(a, &nick).and_then(|db| {
        db.recent(h.with.as_deref(), h.limit)
            .map_err(|e| e.to_string())
    });
    Ok(print_records(records, h.json))
}

fn search_cmd(a: &Args, s: &SearchCmd, nick: Nick) -> std::io::Result<ExitCode> {
    if s.words.iter().all(|w| w.trim().is_empty()) {
        eprintln!("mpc: search needs words: mpc search WORDS...");
        return Ok(ExitCode::from(USAGE));
    }
    let records = open_history(a, &nick).and_then(|db| {
        db.search(&s.words.join(" "), s.limit)
            .map_err(|e| e.to_string())
    });
    Ok(print_records(records, s.json))
}

/// stay online; print roster changes, received messages and delivery results, one JSON object per line with
/// --json ("event": roster | joined | online | offline | removed | renamed | channel_join | channel_part |
/// away | back | message | delivered | queued | failed | answer | ...; a message's "to" is your nickname,
/// "#channel" or "*"); delivers the messages queued by `mpc send` (or an earlier run) as their receivers
/// come back
#[derive(FromArgs)]
#[argh(subcommand, name = "listen")]
struct Listen {
    /// print JSON lines
    #[argh(switch)]
    json: bool,
    /// join this channel ('#ops'; repeatable): its messages arrive with "to": "#ops", and the membership
    /// is kept by the daemon (and re-joined after a reconnection)
    #[argh(option)]
    join: Vec<String>,
    /// accept every file and folder offered (within --max-receive and --max-receive-files) into DIR
    /// (made if missing): a name taken there gets a number, never overwrites; an offer of a transfer cut
    /// earlier resumes. Without it, offers are declined. Events: file_offered, file_progress (at most two
    /// a second), file_received (path, size, hash), file_failed (reason)
    #[argh(option)]
    accept_files: Option<PathBuf>,
}

/// send one message to PEER (a nickname, IP:PORT, '#channel' for each member, '*' for everyone online) and
/// exit 0 once it is acknowledged (by each online member: "delivered #N to 2 of 3 in #ops; dave offline
/// (queued)"), without joining the roster. Without TEXT the message is standard input, byte for byte (newlines and indentation kept, up
/// to 65 535 bytes of UTF-8): `git log -3 | mpc send bob`. To a nickname the roster shows offline, the
/// message is queued in STATE_DIR/history-NICK.sqlite3 and send exits 0 saying "queued": it goes when PEER
/// is back while the console or `mpc listen` of your nickname runs (--now: exit 3, nothing saved). A
/// receiver online that does not acknowledge within --timeout: exit 1, not queued (it may have arrived).
/// Exit codes: 0 delivered or queued; 1 failed (for a channel: a member did not acknowledge in time); 3 not
/// in the roster (or offline, with --now; for a channel or '*': no one there); 4 no daemon
#[derive(FromArgs)]
#[argh(subcommand, name = "send")]
struct Send {
    /// a nickname, IP:PORT, '#channel' (every member) or '*' (everyone online); quote # and * for the shell
    #[argh(positional)]
    peer: String,
    /// the message (the remaining words, joined by spaces); none: read standard input
    #[argh(positional, greedy)]
    text: Vec<String>,
    /// to a receiver offline, exit 3 and save nothing instead of queueing the message (to a channel: the
    /// offline members are left out, and named)
    #[argh(switch)]
    now: bool,
}

/// The message of `mpc send` read from standard input: all of it, as it is, if it is UTF-8 within
/// [`MAX_TEXT`] bytes and not only blanks.
fn message_from(input: impl std::io::Read) -> Result<String, String> {
    use std::io::Read as _;
    let mut buf = Vec::new();
    // One byte more than allowed tells "too long" without reading an endless pipe to its end.
    input
        .take(MAX_TEXT as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read the message from standard input: {e}"))?;
    if buf.len() > MAX_TEXT {
        return Err(format!(
            "the message on standard input is longer than {MAX_TEXT} bytes; send it in parts"
        ));
    }
    let text = String::from_utf8(buf).map_err(|e| {
        format!(
            "the message on standard input is not UTF-8 (byte {} is not); convert it first, e.g. with iconv",
            e.utf8_error().valid_up_to()
        )
    })?;
    if text.trim().is_empty() {
        return Err("the message on standard input is empty".into());
    }
    Ok(text)
}

/// print the roster once and exit (without joining it)
#[derive(FromArgs)]
#[argh(subcommand, name = "list")]
struct List {
    /// print one JSON object instead of a table
    #[argh(switch)]
    json: bool,
}

/// print this client's key fingerprint (creating its key in the state directory on first use); read it to
/// a peer who wants to check it is you
#[derive(FromArgs)]
#[argh(subcommand, name = "whoami")]
struct Whoami {}

/// accept the new key of NAME after `key_changed` (check its fingerprint with NAME first: they see it with
/// `mpc whoami`): forgets the key remembered for NAME, so the one the daemon gives next is remembered
#[derive(FromArgs)]
#[argh(subcommand, name = "trust")]
struct Trust {
    /// the nickname
    #[argh(positional)]
    name: String,
}

/// `mpc trust NAME`: edits known_peers in the state directory (no daemon needed).
fn trust_cmd(a: &Args, t: &Trust) -> std::io::Result<ExitCode> {
    let path = state_dir(a).join(multiproto::io::known_keys::KNOWN_PEERS);
    let mut known = multiproto::io::known_keys::load(&path)?;
    if known.remove(&t.name) {
        multiproto::io::known_keys::save(&path, &known)?;
        println!(
            "forgot {}'s old key; the key the daemon gives next is remembered",
            t.name
        );
    } else {
        println!("no key was remembered for {}: nothing to accept", t.name);
    }
    Ok(ExitCode::SUCCESS)
}

/// `mpc whoami`: the fingerprint on stdout; a note on stderr when the key was made just now.
fn whoami(a: &Args) -> std::io::Result<ExitCode> {
    let dir = state_dir(a);
    let path = dir.join(multiproto::io::keyfile::CLIENT_KEY);
    let (id, created) =
        multiproto::io::keyfile::load_or_create(&path).map_err(std::io::Error::other)?;
    if created {
        eprintln!("mpc: created a new key in {}", path.display());
    }
    println!("{}", id.public().fingerprint());
    Ok(ExitCode::SUCCESS)
}

fn parse_fingerprint(s: &str) -> Result<Fingerprint, String> {
    Fingerprint::parse(s).ok_or_else(|| {
        format!("{s:?} is not a key fingerprint: expected mpk:xxxx-xxxx-… as `mpd key` prints it")
    })
}

/// What a user is told when a peer's key changed (SSH's "host key changed").
fn key_changed_message(
    peer: Nick,
    remembered: multiproto::identity::Fingerprint,
    now: multiproto::identity::Fingerprint,
) -> String {
    format!(
        "WARNING: the daemon gives {peer} another key than the one you talked to before ({now}, was \
         {remembered}). Someone may be impersonating {peer}, or {peer} reinstalled mpc. Nothing goes to {peer} \
         and nothing from that key shows as {peer}'s until you check the new fingerprint with {peer} (they see \
         theirs with `mpc whoami`) and run `mpc trust {peer}`."
    )
}

fn state_dir(a: &Args) -> PathBuf {
    a.state_dir
        .clone()
        .unwrap_or_else(multiproto::outbox::default_state_dir)
}

fn init_logging() {
    let level = std::env::var("MULTIPROTO_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(log::LevelFilter::Warn);
    let _ = fern::Dispatch::new()
        .format(|out, msg, rec| out.finish(format_args!("mpc: {}: {}", rec.level(), msg)))
        .level(level)
        .chain(std::io::stderr())
        .apply();
}

fn default_nick() -> String {
    std::env::var("USER").unwrap_or_else(|_| "guest".into())
}

fn entry_json(e: &Entry) -> serde_json::Value {
    serde_json::json!({
        "nick": e.nick.as_str(),
        "status": match e.status { Status::Online => "online", Status::Offline => "offline", Status::Removed => "removed" },
        "chat": e.chat.to_string(),
        "since_ms": e.since_ms,
        "instance": format!("{:016x}", e.instance),
        "flaps": e.flaps,
        "channels": e.channels().iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        "away": e.away(),
    })
}

fn print_line(v: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn no_daemon_message(a: &Args, iface: multiproto::io::discovery::Iface) -> String {
    format!(
        "mpc: {}",
        setup(a, Nick::new("x").unwrap_or_else(|_| unreachable!())).no_daemon_message(iface)
    )
}

fn setup(a: &Args, nick: Nick) -> Setup {
    let mut s = Setup::new(nick);
    s.group = a.group;
    s.iface = a.iface.clone();
    s.daemon = a.daemon;
    s.bind.set_port(a.sctp_port);
    s.state_dir = state_dir(a);
    s.daemon_key = a.daemon_key;
    s.secret_file = a.secret_file.clone();
    s
}

/// Tells the user about an event of trust (see [`ClientEvent::trust_notice`]); true if the client gave up
/// on it, so a one-shot command should stop too.
fn trust(ev: &ClientEvent, client: &multiproto::client::Client) -> bool {
    match ev.trust_notice() {
        Some(msg) => {
            eprintln!("mpc: {msg}");
            // A one-shot command stops at what waiting would not change: a daemon that requires a secret we
            // lack, or refuses our session.
            client.has_given_up()
                || matches!(
                    ev,
                    ClientEvent::SecretRequired { .. } | ClientEvent::Refused { .. }
                )
        }
        None => false,
    }
}

fn chat_bind(a: &Args) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), a.port)
}

fn list(a: &Args, l: &List, nick: Nick) -> std::io::Result<ExitCode> {
    let mut s = setup(a, nick);
    s.observer = true;
    s.subscribe = false;
    let mut io = ClientIo::open(&s)?;
    let deadline = io.reactor.now() + Duration::from_secs(a.timeout);
    let mut app = Vec::new();
    loop {
        io.turn(Some(deadline), &mut app)?;
        if app.iter().any(|e| matches!(e, ReactorEvent::Signal(_))) {
            return Ok(ExitCode::from(1));
        }
        while let Some(ev) = io.poll_event() {
            if trust(&ev, &io.client) {
                return Ok(ExitCode::from(1));
            }
            match ev {
                ClientEvent::Roster(Applied::Snapshot(_)) => {
                    let entries: Vec<Entry> = io.client.roster().entries().cloned().collect();
                    if l.json {
                        print_line(&serde_json::json!({
                            "version": io.client.roster().version(),
                            "entries": entries.iter().map(entry_json).collect::<Vec<_>>(),
                        }));
                    } else {
                        print!(
                            "{}",
                            multiproto::console::roster_table(&entries, io.reactor.wall_ms())
                        );
                    }
                    let now = io.reactor.now();
                    io.client.shutdown(now);
                    // Give the shutdown a moment to reach the daemon, bounded.
                    let end = now + Duration::from_millis(500);
                    while !io.client.is_closed() && io.reactor.now() < end {
                        io.turn(Some(end), &mut app)?;
                    }
                    return Ok(ExitCode::SUCCESS);
                }
                ClientEvent::Rejected { reason, .. } => {
                    eprintln!("mpc: the daemon refused: {reason}");
                    return Ok(ExitCode::from(1));
                }
                _ => {}
            }
        }
        if io.reactor.now() >= deadline {
            eprintln!("{}", no_daemon_message(a, io.iface()));
            return Ok(ExitCode::from(NO_DAEMON));
        }
    }
}

/// The JSON object `listen --json` prints for a roster change.
fn change_json(c: &Change) -> serde_json::Value {
    let (event, e) = match c {
        Change::Joined(e) => ("joined", e),
        Change::Online(e) => ("online", e),
        Change::Offline(e) => ("offline", e),
        Change::Updated(e) => ("updated", e),
        Change::Removed(n) => return serde_json::json!({"event": "removed", "nick": n.as_str()}),
        Change::Renamed { from, to } => {
            return serde_json::json!({"event": "renamed", "nick": from.as_str(), "to": to.as_str()});
        }
        Change::Channel {
            nick,
            channel,
            joined,
        } => {
            return serde_json::json!({"event": if *joined { "channel_join" } else { "channel_part" },
                "nick": nick.as_str(), "channel": channel.as_str()});
        }
        Change::Presence { nick, away } => {
            return serde_json::json!({"event": if away.is_some() { "away" } else { "back" },
                "nick": nick.as_str(), "message": away});
        }
    };
    let mut v = entry_json(e);
    v["event"] = serde_json::Value::from(event);
    v
}

/// The JSON object for a chat event; `me` is our nickname.
fn peer_json(me: &str, ev: &PeerEvent) -> serde_json::Value {
    match ev {
        // A sender whose key the roster does not give for the name it claims is no one we know: "from" is
        // null, and what it claims is only that.
        PeerEvent::Message {
            from,
            key,
            addr,
            sent_ms,
            scope,
            text,
            verified,
        } => {
            // "to": where it was said: to us (our nickname), to everyone ("*"), in a channel ("#name").
            let to = match scope {
                Scope::Direct => me,
                s => s.label(),
            };
            serde_json::json!({"event": "message", "nick": me, "to": to,
            "from": if *verified { serde_json::Value::from(from.as_str()) } else { serde_json::Value::Null },
            "claims": from.as_str(), "key": key.fingerprint().to_string(), "addr": addr.to_string(),
            "sent_ms": sent_ms, "text": text, "verified": verified})
        }
        PeerEvent::Delivered { id, to } => {
            serde_json::json!({"event": "delivered", "nick": me, "to": to.to_string(), "id": id})
        }
        PeerEvent::Queued { id, to } => {
            serde_json::json!({"event": "queued", "nick": me, "to": to.to_string(), "id": id})
        }
        PeerEvent::Unanswered { id, to, attempts } => {
            serde_json::json!({"event": "unanswered", "nick": me, "to": to.to_string(), "id": id, "attempts": attempts})
        }
        PeerEvent::Failed { id, to, reason } => {
            serde_json::json!({"event": "failed", "nick": me, "to": to.to_string(), "id": id, "reason": reason})
        }
        PeerEvent::File { .. } => serde_json::Value::Null,
    }
}

fn emit(json: bool, v: &serde_json::Value) {
    if json {
        print_line(v);
        return;
    }
    let event = v["event"].as_str().unwrap_or("");
    let line = match event {
        "roster" => format!(
            "roster: {} entries",
            v["entries"].as_array().map_or(0, Vec::len)
        ),
        "searching" | "daemon_found" => return,
        "message" => format!(
            "{}{}: {}",
            match v["to"].as_str() {
                Some(to) if to == "*" || to.starts_with('#') => format!("[{to}] "),
                _ => String::new(),
            },
            match v["from"].as_str() {
                Some(f) => f.to_string(),
                None => format!(
                    "unknown {} claiming to be {}",
                    v["key"].as_str().unwrap_or("?"),
                    v["claims"].as_str().unwrap_or("?")
                ),
            },
            v["text"].as_str().unwrap_or("")
        ),
        "delivered" | "queued" | "failed" => format!(
            "{event}: message {} to {}{}",
            v["id"],
            v["to"].as_str().unwrap_or(""),
            v.get("reason")
                .and_then(|r| r.as_str())
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
        _ => format!(
            "{event}: {} {}",
            v["nick"].as_str().unwrap_or(""),
            v["chat"].as_str().unwrap_or("")
        ),
    };
    println!("{line}");
}

fn listen(a: &Args, l: &Listen, nick: Nick) -> std::io::Result<ExitCode> {
    let mut channels = Vec::new();
    for c in &l.join {
        // `--join ops` means #ops, as `join ops` does in the console.
        let typed = if c.starts_with('#') {
            c.clone()
        } else {
            format!("#{c}")
        };
        match ChannelName::new(&typed) {
            Ok(c) => channels.push(c),
            Err(e) => {
                eprintln!("mpc: --join {c:?}: {e}");
                return Ok(ExitCode::from(USAGE));
            }
        }
    }
    let s = setup(a, nick);
    let mut sess = Session::open(s, chat_bind(a))?;
    sess.chat.peer.set_file_limits(files::receive_limits(a));
    let mut transfers = files::ListenFiles::new(l.accept_files.as_deref());
    for c in channels {
        // Asked on registration (and again after every reconnection).
        if let Err(e) = sess.io.client.join(c) {
            eprintln!("mpc: --join {c}: {e}");
            return Ok(ExitCode::from(USAGE));
        }
    }
    let chat_port = sess.chat.local_addr()?.port();
    let (mut registered_once, mut roster_shown, mut warned) = (false, false, false);
    let mut retry_at = None;
    let mut retried = false;
    let start = sess.now();
    let me = nick.as_str();
    // Messages received are kept, as the console keeps them, for `mpc history` and `mpc search`.
    // Not even opened with --history-max 0 (opening creates the file).
    let opened = (a.history_max > 0).then(|| open_history(a, &nick));
    let mut kept = match opened {
        None => None,
        Some(Ok(h)) => Some(h),
        Some(Err(e)) => {
            eprintln!("mpc: history is off: {e}");
            None
        }
    };
    if let Some(h) = &mut kept
        && let Err(e) = h.prune(sess.wall_ms())
    {
        eprintln!("mpc: {e}");
    }
    // Messages queued by an earlier run or by `mpc send` go from here too, as the console sends them.
    let mut outbox = Outbox::new(&state_dir(a), nick);
    for n in outbox.restore(sess.now(), &mut sess.chat.peer).notes {
        eprintln!("mpc: warning: {n}");
    }
    loop {
        sync_outbox(&mut outbox, &mut sess)?;
        sess.turn(retry_at)?;
        let now = sess.now();
        if let Some(t) = retry_at
            && now >= t
        {
            retry_at = None;
            sess.io.client.retry(now);
        }
        while let Some(ev) = sess.poll_event() {
            let line = match ev {
                SessionEvent::KeyChanged {
                    nick: peer,
                    remembered,
                    now: fp,
                } => {
                    eprintln!("mpc: {}", key_changed_message(peer, remembered, fp));
                    serde_json::json!({"event": "key_changed", "nick": me, "peer": peer.as_str(),
                        "remembered": remembered.to_string(), "key": fp.to_string()})
                }
                SessionEvent::Signal => {
                    // What was delivered in this turn leaves the queue before we go.
                    sync_outbox(&mut outbox, &mut sess)?;
                    sess.io.client.shutdown(now);
                    let end = now + Duration::from_millis(500);
                    while !sess.io.client.is_closed() && sess.now() < end {
                        sess.turn(Some(end))?;
                    }
                    return Ok(ExitCode::SUCCESS);
                }
                SessionEvent::App(_) => continue,
                SessionEvent::Peer(PeerEvent::File { xfer, event, info }) => {
                    match transfers.event(&mut sess, me, xfer, &event, &info) {
                        Some(v) => v,
                        None => continue,
                    }
                }
                SessionEvent::Peer(p) => {
                    if let (
                        Some(h),
                        PeerEvent::Message {
                            from,
                            key,
                            text,
                            verified,
                            scope,
                            ..
                        },
                    ) = (&mut kept, &p)
                    {
                        let mut r =
                            Record::received(from.as_str(), key, *verified, text, sess.wall_ms());
                        if *scope != Scope::Direct {
                            r = r.in_conversation(scope.label());
                        }
                        if let Err(e) = h.append(&r) {
                            eprintln!("mpc: history is off from now on: {e}");
                            kept = None;
                        }
                    }
                    peer_json(me, &p)
                }
                SessionEvent::Client(c) => match c {
                    ClientEvent::Searching { attempt } => {
                        if !registered_once
                            && !warned
                            && now.saturating_since(start) >= Duration::from_secs(a.timeout)
                        {
                            warned = true;
                            eprintln!("{} (still trying)", no_daemon_message(a, sess.io.iface()));
                        }
                        serde_json::json!({"event": "searching", "nick": me, "attempt": attempt})
                    }
                    ClientEvent::DaemonFound { addr } => {
                        serde_json::json!({"event": "daemon_found", "nick": me, "daemon": addr.to_string()})
                    }
                    ClientEvent::Registered { daemon } => {
                        registered_once = true;
                        serde_json::json!({"event": "registered", "nick": me, "daemon": format!("{daemon:016x}"), "chat_port": chat_port})
                    }
                    ClientEvent::Rejected {
                        result,
                        reason,
                        retry_after,
                    } => {
                        let v =
                            serde_json::json!({"event": "rejected", "nick": me, "reason": reason});
                        // A nickname held by what may be our own previous run: the daemon probes it; try once
                        // more after its hint, then give up.
                        if result == RegisterResult::NickTaken && !retry_after.is_zero() && !retried
                        {
                            retried = true;
                            retry_at = Some(now + retry_after);
                        } else {
                            emit(l.json, &v);
                            eprintln!("mpc: {reason}");
                            return Ok(ExitCode::from(1));
                        }
                        v
                    }
                    ClientEvent::DaemonLost { reason } => {
                        serde_json::json!({"event": "daemon_lost", "nick": me, "reason": reason.to_string()})
                    }
                    // The first roster in full; after a reconnection, only what changed meanwhile.
                    ClientEvent::Roster(Applied::Snapshot(_)) if !roster_shown => {
                        roster_shown = true;
                        let entries: Vec<_> =
                            sess.io.client.roster().entries().map(entry_json).collect();
                        serde_json::json!({"event": "roster", "nick": me, "entries": entries})
                    }
                    ClientEvent::Roster(Applied::Snapshot(changes) | Applied::Changes(changes)) => {
                        for c in &changes {
                            emit(l.json, &change_json(c));
                        }
                        continue;
                    }
                    ClientEvent::Roster(_) => continue,
                    ClientEvent::Answered {
                        request,
                        subject,
                        refusal,
                    } => {
                        if let Some(why) = &refusal {
                            eprintln!("mpc: {subject}: {why}");
                        }
                        serde_json::json!({"event": "answer", "nick": me,
                            "request": format!("{request:?}").to_lowercase(), "subject": subject,
                            "ok": refusal.is_none(), "reason": refusal})
                    }
                    ClientEvent::Renamed { from, to } => {
                        serde_json::json!({"event": "renamed", "nick": from.as_str(), "to": to.as_str()})
                    }
                    other => {
                        let Some(msg) = other.trust_notice() else {
                            continue;
                        };
                        if !l.json {
                            eprintln!("mpc: {msg}");
                        }
                        let v = serde_json::json!({"event": "trust", "nick": me, "message": msg});
                        if sess.io.client.has_given_up() {
                            emit(l.json, &v);
                            return Ok(ExitCode::from(1));
                        }
                        v
                    }
                },
            };
            emit(l.json, &line);
        }
    }
}

/// Writes the changes to `listen`'s waiting messages (one transaction each), takes messages `mpc send`
/// queued meanwhile, and sends what that gave the peer.
fn sync_outbox(outbox: &mut Outbox, sess: &mut Session) -> std::io::Result<()> {
    let now = sess.now();
    for n in outbox.sync(now, &mut sess.chat.peer) {
        eprintln!("mpc: warning: {n}");
    }
    sess.flush()
}

fn send(a: &Args, s: &Send, nick: Nick) -> std::io::Result<ExitCode> {
    let text = if s.text.is_empty() {
        match message_from(std::io::stdin().lock()) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("mpc: {e}");
                return Ok(ExitCode::from(1));
            }
        }
    } else {
        s.text.join(" ")
    };
    if s.peer == "*" || s.peer.starts_with('#') {
        let scope = match s.peer.as_str() {
            "*" => Scope::Everyone,
            c => match ChannelName::new(c) {
                Ok(c) => Scope::Channel(c),
                Err(e) => {
                    eprintln!("mpc: {:?} is not a channel name: {e}", s.peer);
                    return Ok(ExitCode::from(USAGE));
                }
            },
        };
        return send_in(a, s, nick, scope, &text);
    }
    let target = match s.peer.parse::<SocketAddr>() {
        Ok(addr) => Target::Addr(addr),
        Err(_) => match Nick::new(&s.peer) {
            Ok(n) => Target::Nick(n),
            Err(e) => {
                eprintln!(
                    "mpc: {:?} is neither a nickname nor an IP:PORT: {e}",
                    s.peer
                );
                return Ok(ExitCode::from(1));
            }
        },
    };
    let (mut sess, deadline) = sender_session(a, nick, false)?;
    let mut sent: Option<u64> = None;
    // Hands the message to the peer and flushes; `None` (the reason printed) if the peer refused it.
    let send_now = |sess: &mut Session| -> std::io::Result<Option<u64>> {
        let (now, wall) = (sess.now(), sess.wall_ms());
        match sess.chat.peer.send(now, wall, target, &text) {
            Ok(id) => {
                sess.flush()?;
                Ok(Some(id))
            }
            Err(e) => {
                eprintln!("mpc: {e}");
                Ok(None)
            }
        }
    };
    if let Target::Addr(_) = target {
        match send_now(&mut sess)? {
            Some(id) => sent = Some(id),
            None => return finish(&mut sess, 1),
        }
    }
    loop {
        sess.turn(Some(deadline))?;
        while let Some(ev) = sess.poll_event() {
            if let Some(code) = ends_early(&ev, &sess).or_else(|| key_changed(&ev, target)) {
                return finish(&mut sess, code);
            }
            match ev {
                SessionEvent::Client(ClientEvent::Roster(Applied::Snapshot(_)))
                    if sent.is_none() =>
                {
                    let Target::Nick(n) = target else { continue };
                    let found = in_roster(&sess, &n);
                    match found {
                        Some(e) if e.status == Status::Online => match send_now(&mut sess)? {
                            Some(id) => sent = Some(id),
                            None => return finish(&mut sess, 1),
                        },
                        Some(_) if s.now => {
                            eprintln!("mpc: {n} is offline; nothing was sent or saved (--now)");
                            return finish(&mut sess, 3);
                        }
                        Some(_) => {
                            let code = queue_for_later(a, &mut sess, nick, target, &text);
                            return finish(&mut sess, code);
                        }
                        None => {
                            eprintln!("mpc: no one called {n} is in the roster (see `mpc list`)");
                            return finish(&mut sess, 3);
                        }
                    }
                }
                SessionEvent::Peer(PeerEvent::Delivered { id, to }) if Some(id) == sent => {
                    println!("delivered to {to}");
                    // Kept as the console keeps what it sends, for `mpc history` and `mpc search` (unless
                    // --history-max 0 keeps nothing).
                    if a.history_max > 0 {
                        let kept = open_history(a, &nick).and_then(|mut h| {
                            h.append(&Record::sent(nick.as_str(), &to, &text, sess.wall_ms()))
                                .map_err(|e| e.to_string())
                        });
                        if let Err(e) = kept {
                            eprintln!("mpc: delivered, but not kept in the history: {e}");
                        }
                    }
                    return finish(&mut sess, 0);
                }
                SessionEvent::Peer(PeerEvent::Failed { id, reason, .. }) if Some(id) == sent => {
                    eprintln!("mpc: message to {target} failed: {reason}");
                    return finish(&mut sess, 1);
                }
                _ => {}
            }
        }
        if sess.now() >= deadline {
            if sent.is_none() {
                eprintln!("{}", no_daemon_message(a, sess.io.iface()));
                return finish(&mut sess, NO_DAEMON);
            }
            // Not queued: it may have arrived with its receipt lost, and a copy sent by another run would
            // not be recognised as one.
            eprintln!(
                "mpc: no acknowledgement from {target} within {} s; not queued (it may have arrived)",
                a.timeout
            );
            return finish(&mut sess, 1);
        }
    }
}

/// The roster's entry for `n` as typed, or else the one entry `n` names in another case: `send JOSÉ` finds
/// José as `msg` does, by the case-folded form, if just one matches.
fn in_roster(sess: &Session, n: &Nick) -> Option<Entry> {
    let roster = sess.io.client.roster();
    roster.get(n).cloned().or_else(|| {
        let mut alike = roster.entries().filter(|e| e.nick.same_folded(n));
        match (alike.next(), alike.next()) {
            (Some(e), None) => Some(e.clone()),
            _ => None,
        }
    })
}

/// The session of a one-shot sender (`mpc send`, `mpc send-file`): an observer that speaks under `nick`, so
/// it claims the nickname (the daemon must know it as this key's, or receivers show the message as from an
/// unknown key); and when its `--timeout` runs out. `subscribe`: follow the roster's changes after the first
/// snapshot (a sender that outlives a cut must hear where, and whether, its receiver is back).
fn sender_session(
    a: &Args,
    nick: Nick,
    subscribe: bool,
) -> std::io::Result<(Session, multiproto::time::Instant)> {
    let mut st = setup(a, nick);
    st.observer = true;
    st.subscribe = subscribe;
    st.claim = true;
    let sess = Session::open(st, chat_bind(a))?;
    let deadline = sess.now() + Duration::from_secs(a.timeout);
    Ok((sess, deadline))
}

/// Leaves the daemon cleanly (bounded) and exits with `code`.
fn finish(sess: &mut Session, code: u8) -> std::io::Result<ExitCode> {
    let now = sess.now();
    sess.io.client.shutdown(now);
    let end = now + Duration::from_millis(500);
    while !sess.io.client.is_closed() && sess.now() < end {
        sess.turn(Some(end))?;
    }
    Ok(ExitCode::from(code))
}

/// What ends a one-shot sender before its message is through, with the exit code: a signal, the daemon's
/// refusal (said), or an event of trust it gave up on (said by [`trust`]).
fn ends_early(ev: &SessionEvent, sess: &Session) -> Option<u8> {
    match ev {
        SessionEvent::Signal => Some(1),
        SessionEvent::Client(ClientEvent::Rejected { reason, .. }) => {
            eprintln!("mpc: the daemon refused: {reason}");
            Some(1)
        }
        SessionEvent::Client(ev) if trust(ev, &sess.io.client) => Some(1),
        _ => None,
    }
}

/// A one-shot sender to `target` stops (exit 1) when the daemon gives `target` another key than the one
/// remembered: nothing goes to a key nobody checked (said, with what to do).
fn key_changed(ev: &SessionEvent, target: Target) -> Option<u8> {
    match ev {
        SessionEvent::KeyChanged {
            nick,
            remembered,
            now,
        } if matches!(target, Target::Nick(t) if t.same_folded(nick)) => {
            eprintln!("mpc: {}", key_changed_message(*nick, *remembered, *now));
            Some(1)
        }
        _ => None,
    }
}

/// One receiver of a message to many, and what became of its copy (`None`: no receipt yet).
type CopyFate = (Nick, Option<&'static str>);

/// `mpc send '#channel'|'*'`: one copy to each member the roster shows (each online one's receipt waited
/// for; an offline member's copy queued as for `send NAME`, unless `--now`). Exit 0 once every online
/// member has it, 1 if one did not acknowledge in time or a copy could not be queued, 3 if there was no one
/// to send to.
fn send_in(a: &Args, s: &Send, nick: Nick, scope: Scope, text: &str) -> std::io::Result<ExitCode> {
    let (mut sess, deadline) = sender_session(a, nick, false)?;
    let place = match scope {
        Scope::Channel(c) => format!("in {c}"),
        _ => "online".to_string(),
    };
    // The message's id, and each receiver: None while its receipt is awaited, else what became of it.
    let mut sent: Option<(u64, Vec<CopyFate>)> = None;
    // Offline members left out with --now.
    let mut skipped: Vec<Nick> = Vec::new();
    // Where offline members' copies wait: opened once (the file only when a first copy has to wait).
    let mut outbox = Outbox::new(&state_dir(a), nick);
    loop {
        sess.turn(Some(deadline))?;
        while let Some(ev) = sess.poll_event() {
            if let Some(code) = ends_early(&ev, &sess) {
                return finish(&mut sess, code);
            }
            match ev {
                SessionEvent::Client(ClientEvent::Roster(Applied::Snapshot(_)))
                    if sent.is_none() =>
                {
                    let roster = sess.io.client.roster();
                    let members: Vec<(Nick, bool)> = roster
                        .members(&nick, &scope)
                        .iter()
                        .map(|e| (e.nick, e.status == Status::Online))
                        .collect();
                    let to: Vec<Nick> = members
                        .iter()
                        .filter(|(_, online)| *online || !s.now)
                        .map(|(n, _)| *n)
                        .collect();
                    skipped = members
                        .iter()
                        .filter(|(_, online)| !*online && s.now)
                        .map(|(n, _)| *n)
                        .collect();
                    if to.is_empty() {
                        match (members.is_empty(), scope) {
                            (true, Scope::Channel(c)) => eprintln!("mpc: no one is in {c}"),
                            (true, _) => eprintln!("mpc: no one else is online"),
                            (false, _) => eprintln!(
                                "mpc: every member {place} is offline; nothing was sent or saved (--now)"
                            ),
                        }
                        return finish(&mut sess, 3);
                    }
                    let (now, wall) = (sess.now(), sess.wall_ms());
                    match sess.chat.peer.send_to_many(now, wall, scope, &to, text) {
                        Ok(id) => {
                            sess.flush()?;
                            sent = Some((id, to.iter().map(|n| (*n, None)).collect()));
                        }
                        Err(e) => {
                            eprintln!("mpc: {e}");
                            return finish(&mut sess, 1);
                        }
                    }
                }
                SessionEvent::Peer(PeerEvent::Delivered {
                    id,
                    to: Target::Nick(n),
                }) => {
                    if let Some((sid, who)) = &mut sent
                        && *sid == id
                        && let Some(w) = who.iter_mut().find(|w| w.0 == n)
                    {
                        w.1 = Some("delivered");
                    }
                }
                SessionEvent::Peer(PeerEvent::Queued { id, to }) => {
                    let Some((sid, who)) = &mut sent else {
                        continue;
                    };
                    let Target::Nick(n) = to else { continue };
                    if *sid != id {
                        continue;
                    }
                    let w = Waiting {
                        to,
                        id,
                        sent_ms: sess.wall_ms(),
                        text: text.to_string(),
                        scope: scope.label().to_string(),
                    };
                    let saved = outbox.add(&w);
                    if let Some(slot) = who.iter_mut().find(|w| w.0 == n) {
                        slot.1 = Some(if saved.is_ok() {
                            "offline (queued)"
                        } else {
                            "offline (NOT queued)"
                        });
                    }
                    if let Err(e) = saved {
                        eprintln!("mpc: {n} is offline, and the copy could not be queued: {e}");
                    }
                }
                _ => {}
            }
        }
        let done = sent
            .as_ref()
            .is_some_and(|(_, who)| who.iter().all(|w| w.1.is_some()));
        if done || sess.now() >= deadline {
            let Some((id, who)) = sent else {
                eprintln!("{}", no_daemon_message(a, sess.io.iface()));
                return finish(&mut sess, NO_DAEMON);
            };
            let got = who.iter().filter(|w| w.1 == Some("delivered")).count();
            let missing: Vec<String> = who
                .iter()
                .filter(|w| w.1 != Some("delivered"))
                .map(|(n, o)| format!("{n} {}", o.unwrap_or("did not acknowledge in time")))
                .chain(
                    skipped
                        .iter()
                        .map(|n| format!("{n} offline (not sent: --now)")),
                )
                .collect();
            let mut line = format!(
                "delivered #{} to {got} of {} {place}",
                id & 0xffff_ffff,
                who.len() + skipped.len()
            );
            if !missing.is_empty() {
                line += &format!("; {}", missing.join(", "));
            }
            println!("{line}");
            if a.history_max > 0 {
                let rec = Record::sent(nick.as_str(), &Target::Nick(nick), text, sess.wall_ms())
                    .in_conversation(scope.label());
                if let Err(e) = open_history(a, &nick)
                    .and_then(|mut h| h.append(&rec).map_err(|e| e.to_string()))
                {
                    eprintln!("mpc: sent, but not kept in the history: {e}");
                }
            }
            let ok = who
                .iter()
                .all(|w| matches!(w.1, Some("delivered" | "offline (queued)")));
            return finish(&mut sess, if ok { 0 } else { 1 });
        }
    }
}

/// `mpc send` to a nickname the roster shows offline: the message goes into the queue of `nick`'s history
/// database (one transaction), where the next console or `listen` of `nick` finds it and delivers it once
/// the receiver is back. Returns the exit code: 0 once it is saved, 1 if it could not be.
fn queue_for_later(a: &Args, sess: &mut Session, nick: Nick, to: Target, text: &str) -> u8 {
    let (now, wall) = (sess.now(), sess.wall_ms());
    // The peer gives it its id (unique, as any message's) and resolves the name as for any message.
    let id = match sess.chat.peer.send(now, wall, to, text) {
        Ok(id) => id,
        Err(e) => {
            eprintln!("mpc: {e}");
            return 1;
        }
    };
    let to = sess.chat.peer.target_of(id).unwrap_or(to);
    // The file holds what the console will hold: a script in a loop must not fill the disk for someone away.
    let mut outbox = Outbox::new(&state_dir(a), nick);
    let max = sess.chat.peer.config().max_queue_per_peer as u64;
    match outbox.waiting_for(&to) {
        Ok(n) if n >= max => {
            eprintln!(
                "mpc: {to} is offline and {n} messages already wait for {to}: nothing queued; try again once \
                 some are delivered"
            );
            return 1;
        }
        _ => {}
    }
    let w = Waiting {
        to,
        id,
        sent_ms: wall,
        text: text.to_string(),
        scope: String::new(),
    };
    if let Err(e) = outbox.add(&w) {
        eprintln!("mpc: {to} is offline, and the message could not be queued: {e}");
        return 1;
    }
    // Kept as sent, as the console keeps a message it queues (unless --history-max 0 keeps nothing).
    if a.history_max > 0 {
        let kept = open_history(a, &nick).and_then(|mut h| {
            h.append(&Record::sent(nick.as_str(), &to, text, wall))
                .map_err(|e| e.to_string())
        });
        if let Err(e) = kept {
            eprintln!("mpc: queued, but not kept in the history: {e}");
        }
    }
    println!(
        "queued #{} for {to} (offline): it goes when {to} is back and mpc runs as {nick} (the console or \
         `mpc listen`)",
        id & 0xffff_ffff
    );
    0
}

/// Exit code: a bad command line.
const USAGE: u8 = 2;
/// Exit code: no daemon answered within `--timeout`.
const NO_DAEMON: u8 = 4;

/// `--daemon`.
fn daemon_addr(s: &str) -> Result<SocketAddr, String> {
    multiproto::cli::parse_host_port(s, multiproto::io::sctp_udp::DEFAULT_UDP_PORT)
}

fn main() -> ExitCode {
    init_logging();
    let a: Args = match multiproto::cli::parse("mpc", "Run `mpc --help` for usage.", USAGE.into()) {
        Ok(a) => a,
        Err(code) => return ExitCode::from(code as u8),
    };
    // These need no nickname and no daemon.
    let local = match &a.cmd {
        Some(Cmd::Whoami(_)) => Some(whoami(&a)),
        Some(Cmd::Trust(t)) => Some(trust_cmd(&a, t)),
        _ => None,
    };
    if let Some(r) = local {
        return r.unwrap_or_else(|e| {
            eprintln!("mpc: {e}");
            ExitCode::from(1)
        });
    }
    let raw = a.nick.clone().unwrap_or_else(default_nick);
    let nick = match Nick::new(&raw) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("mpc: --nick {raw:?}: {e}");
            return ExitCode::from(USAGE);
        }
    };
    let r = match &a.cmd {
        Some(Cmd::Whoami(_) | Cmd::Trust(_)) => unreachable!("handled above"),
        Some(Cmd::Listen(l)) => listen(&a, l, nick),
        Some(Cmd::Send(s)) => send(&a, s, nick),
        Some(Cmd::SendFile(f)) => files::send_file(&a, f, nick),
        Some(Cmd::List(l)) => list(&a, l, nick),
        Some(Cmd::History(h)) => history_cmd(&a, h, nick),
        Some(Cmd::Search(q)) => search_cmd(&a, q, nick),
        None => multiproto::console::run(multiproto::console::Options {
            setup: setup(&a, nick),
            chat: chat_bind(&a),
            state_dir: state_dir(&a),
            daemon_wait: Duration::from_secs(a.timeout),
            history: history_limits(&a),
            downloads: a
                .downloads
                .clone()
                .unwrap_or_else(multiproto::console::files::default_downloads),
            file_limits: files::receive_limits(&a),
        }),
    };
    r.unwrap_or_else(|e| {
        eprintln!("mpc: {e}");
        ExitCode::from(1)
    })
}
