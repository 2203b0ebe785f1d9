//! `mpc`: the multiproto client. This version provides the scripting modes the daemon's tests and tools
//! need: `listen` (stay online, print roster changes) and `list` (print the roster once). The interactive
//! console and peer-to-peer chat (`send`, `msg`) come with the client issue.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;

use multiproto::client::ClientEvent;
use multiproto::client::io::{ClientIo, Setup};
use multiproto::client::roster::{Applied, Change};
use multiproto::discovery::{self, Nick};
use multiproto::reactor::ReactorEvent;
use multiproto::registry::wire::{Entry, RegisterResult, Status};

/// multiproto client: find the mpd daemon on the LAN (UDP multicast), join its roster (SCTP), and follow who
/// is online.
///
/// Exit codes: 0 success; 1 an error (bad arguments, nickname refused, cannot open a socket); 2 no daemon
/// answered (check the group, --iface, your firewall, or use --daemon HOST:PORT).
#[derive(FromArgs)]
struct Args {
    /// your nickname: 1-32 letters, digits, '-', '_' or '.' (default: $USER)
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
    /// the daemon's SCTP address HOST:PORT, skipping multicast discovery
    #[argh(option)]
    daemon: Option<SocketAddr>,
    /// UDP port of this client's SCTP socket (default: any free port); fixing it lets a restarted client
    /// take its roster entry back at once
    #[argh(option, default = "0")]
    sctp_port: u16,
    /// seconds to wait for a daemon before giving up, in one-shot modes (default 10)
    #[argh(option, default = "10")]
    timeout: u64,
    #[argh(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Cmd {
    Listen(Listen),
    List(List),
}

/// stay online and print every roster change (one JSON object per line with --json), until interrupted
#[derive(FromArgs)]
#[argh(subcommand, name = "listen")]
struct Listen {
    /// print JSON lines: {"event": "roster" | "joined" | "online" | "offline" | "removed" | ..., "nick": ...}
    #[argh(switch)]
    json: bool,
}

/// print the roster once and exit (without joining it)
#[derive(FromArgs)]
#[argh(subcommand, name = "list")]
struct List {
    /// print one JSON object instead of a table
    #[argh(switch)]
    json: bool,
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
    })
}

fn print_line(v: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn no_daemon_message(a: &Args, io: &ClientIo) -> String {
    match a.daemon {
        Some(d) => format!("mpc: no daemon answered at {d}; is mpd running there (`mpd status`)?"),
        None => format!(
            "mpc: no daemon answered on {} (interface {}); check that mpd runs (`mpd status`), that --group and \
             --iface match the daemon's, that a firewall lets UDP {} through, or use --daemon HOST:PORT",
            a.group,
            io.iface(),
            a.group.port()
        ),
    }
}

fn setup(a: &Args, nick: Nick) -> Setup {
    let mut s = Setup::new(nick);
    s.group = a.group;
    s.iface = a.iface.clone();
    s.daemon = a.daemon;
    s.bind.set_port(a.sctp_port);
    s
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
        while let Some(ev) = io.client.poll_event() {
            match ev {
                ClientEvent::Roster(Applied::Snapshot(_)) => {
                    let entries: Vec<Entry> = io.client.roster().entries().copied().collect();
                    if l.json {
                        print_line(serde_json::json!({
                            "version": io.client.roster().version(),
                            "entries": entries.iter().map(entry_json).collect::<Vec<_>>(),
                        }));
                    } else {
                        print_table(&entries);
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
            eprintln!("{}", no_daemon_message(a, &io));
            return Ok(ExitCode::from(2));
        }
    }
}

fn print_table(entries: &[Entry]) {
    let w = entries
        .iter()
        .map(|e| e.nick.as_str().len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!("{:<w$}  {:<22}  {:<7}  since", "nick", "address", "status");
    for e in entries {
        let status = if e.status == Status::Online {
            "online"
        } else {
            "offline"
        };
        println!(
            "{:<w$}  {:<22}  {:<7}  {}",
            e.nick.as_str(),
            e.chat.to_string(),
            status,
            e.since_ms
        );
    }
}

fn listen(a: &Args, l: &Listen, nick: Nick) -> std::io::Result<ExitCode> {
    // The chat listener: its port goes in the roster. (Chat itself arrives with the client issue.)
    let chat = TcpListener::bind(("0.0.0.0", a.port)).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen for chat on TCP port {}: {e}", a.port),
        )
    })?;
    let mut s = setup(a, nick);
    s.chat_port = chat.local_addr()?.port();
    let mut io = ClientIo::open(&s)?;
    let mut app = Vec::new();
    let mut registered_once = false;
    let mut roster_shown = false;
    let mut retries = 0;
    let mut retry_at = None;
    let start = io.reactor.now();
    let mut warned = false;
    loop {
        io.turn(retry_at, &mut app)?;
        let now = io.reactor.now();
        if app.iter().any(|e| matches!(e, ReactorEvent::Signal(_))) {
            io.client.shutdown(now);
            let end = now + Duration::from_millis(500);
            while !io.client.is_closed() && io.reactor.now() < end {
                io.turn(Some(end), &mut app)?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        if let Some(t) = retry_at
            && now >= t
        {
            retry_at = None;
            io.client.retry(now);
        }
        while let Some(ev) = io.client.poll_event() {
            let me = nick.as_str();
            let line = match ev {
                ClientEvent::Searching { attempt } => {
                    if !registered_once
                        && !warned
                        && now.saturating_since(start) >= Duration::from_secs(a.timeout)
                    {
                        warned = true;
                        eprintln!("{} (still trying)", no_daemon_message(a, &io));
                    }
                    serde_json::json!({"event": "searching", "nick": me, "attempt": attempt})
                }
                ClientEvent::DaemonFound { addr } => {
                    serde_json::json!({"event": "daemon_found", "nick": me, "daemon": addr.to_string()})
                }
                ClientEvent::Registered { daemon } => {
                    registered_once = true;
                    serde_json::json!({"event": "registered", "nick": me, "daemon": format!("{daemon:016x}"), "chat_port": s.chat_port})
                }
                ClientEvent::Rejected {
                    result,
                    reason,
                    retry_after,
                } => {
                    let v = serde_json::json!({"event": "rejected", "nick": me, "reason": reason});
                    if result == RegisterResult::NickTaken && !retry_after.is_zero() && retries < 3
                    {
                        retries += 1;
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
                    let entries: Vec<_> = io.client.roster().entries().map(entry_json).collect();
                    serde_json::json!({"event": "roster", "nick": me, "entries": entries})
                }
                ClientEvent::Roster(Applied::Snapshot(changes) | Applied::Changes(changes)) => {
                    for c in &changes {
                        emit(l.json, &change_json(c));
                    }
                    continue;
                }
                ClientEvent::Roster(_) => continue,
            };
            emit(l.json, &line);
        }
    }
}

fn change_json(c: &Change) -> serde_json::Value {
    let (event, e): (&str, Option<&Entry>) = match c {
        Change::Joined(e) => ("joined", Some(e)),
        Change::Online(e) => ("online", Some(e)),
        Change::Offline(e) => ("offline", Some(e)),
        Change::Updated(e) => ("updated", Some(e)),
        Change::Removed(n) => return serde_json::json!({"event": "removed", "nick": n.as_str()}),
    };
    let mut v = entry_json(e.unwrap_or_else(|| unreachable!()));
    v["event"] = serde_json::Value::from(event);
    v
}

fn emit(json: bool, v: &serde_json::Value) {
    if json {
        print_line(v.clone());
    } else {
        let event = v["event"].as_str().unwrap_or("");
        let nick = v["nick"].as_str().unwrap_or("");
        match event {
            "roster" => {
                let n = v["entries"].as_array().map_or(0, Vec::len);
                println!("roster: {n} entries");
            }
            "searching" | "daemon_found" => {}
            _ => println!(
                "{event}: {nick} {}",
                v.get("chat").and_then(|c| c.as_str()).unwrap_or("")
            ),
        }
    }
}

fn main() -> ExitCode {
    init_logging();
    let a: Args = argh::from_env();
    let raw = a.nick.clone().unwrap_or_else(default_nick);
    let nick = match Nick::new(&raw) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("mpc: --nick {raw:?}: {e}");
            return ExitCode::from(1);
        }
    };
    let r = match &a.cmd {
        Some(Cmd::Listen(l)) => listen(&a, l, nick),
        Some(Cmd::List(l)) => list(&a, l, nick),
        None => {
            eprintln!(
                "mpc: the interactive console is not built yet; use `mpc --nick NAME listen` or `mpc list` (see mpc --help)"
            );
            return ExitCode::from(1);
        }
    };
    r.unwrap_or_else(|e| {
        eprintln!("mpc: {e}");
        ExitCode::from(1)
    })
}
