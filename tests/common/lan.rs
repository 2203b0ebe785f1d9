//! A LAN of network namespaces for process-level tests: hosts that are separate machines as far as the
//! kernel's network stack is concerned, joined by one Ethernet switch, with real multicast between them.
//!
//! ```text
//!   switch namespace:  br0 (a Linux bridge, multicast snooping off)
//!                       ├─ p1 ══ veth ══ eth0  host 1 namespace  10.213.X.1/24
//!                       ├─ p2 ══ veth ══ eth0  host 2 namespace  10.213.X.2/24
//!                       └─ …
//! ```
//!
//! Each host has `lo` up, one interface `eth0` on the LAN, and a route for 224.0.0.0/4 through it, so
//! multicast goes out on the LAN (there is no default route: nothing can leave the machine). The bridge has
//! multicast snooping off, so a group's datagrams reach every port whether or not IGMP reports were seen,
//! as on a plain switch. `X` comes from a per-process counter, so parallel tests in one binary use different
//! subnets and multicast groups (they could not meet anyway: every LAN is its own set of namespaces; the
//! distinct numbers keep captures and logs unambiguous).
//!
//! Processes run in a host with [`Host::spawn`] (`ip netns exec NS PROGRAM ARGS…`, which execs the program, so
//! the PID is the program's). Their stdout and stderr are read line by line into memory, and tests wait for a
//! line with a deadline ([`Proc::wait_for_line`]): nothing here sleeps hoping that something has happened.
//! Their stdin is closed, unless started with [`Host::spawn_with_stdin`] (or [`Host::spawn_mpc_console`]),
//! whose stdin the test writes lines to ([`Proc::write_line`]).
//! `mpd` and `mpc` always get `--iface <the host's address>`, the LAN's multicast group and a directory of
//! their own ([`Host::spawn_mpd`], [`Host::mpc_args`]).
//!
//! Teardown is [`Lan`]'s `Drop`, which also runs when a test panics: every process the LAN started is
//! SIGKILLed by its PID and reaped; anything else still inside one of its namespaces (say a daemon that
//! forked itself into the background) is SIGKILLed by the PID `ip netns pids` reports; then the namespaces are
//! deleted. Namespaces left by a test process that crashed (its PID is in their names, and it is gone) are
//! removed the first time a process checks [`require_lan`].
//!
//! Needs root (namespaces, bridge, veth), `ip` and `bridge` (iproute2); [`Host::loss`] needs `nft`
//! (nftables; this kernel has no netem), [`Lan::capture`] needs `tcpdump` ([`udp_datagrams`] reads the UDP
//! datagrams of its pcap). Check with [`require_lan`], [`require_nft`], [`require_tcpdump`]: outside CI a
//! missing need skips the test, in CI it fails it (see tests/common/require.rs).
//!
//! Include it next to `mod common;` with `#[path = "common/lan.rs"] mod lan;` (it uses `crate::common`).

#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::common::{require, require_program, run_with_limit, temp_dir};

/// Every namespace the harness makes is named `mpl<pid>-<lan>-<role>`; the PID lets a later run tell a
/// crashed run's leftovers from a live one's.
const PREFIX: &str = "mpl";
/// The bridge in the switch namespace.
pub const BRIDGE: &str = "br0";
/// Each host's interface on the LAN (every host is its own namespace, so all can share the name).
pub const HOST_IFACE: &str = "eth0";
/// Limit for one setup command (`ip`, `nft`), for the LAN to come up, and for tcpdump to start or stop.
const SETUP_LIMIT: Duration = Duration::from_secs(10);
/// How long [`Host::spawn_mpd`] waits for the daemon to say it listens.
const MPD_READY_LIMIT: Duration = Duration::from_secs(10);
/// The nftables table [`Host::loss`] owns.
const LOSS_TABLE: &str = "mplan_loss";

/// The `mpd` binary cargo built for these tests.
pub fn mpd_exe() -> &'static str {
    env!("CARGO_BIN_EXE_mpd")
}

/// The `mpc` binary cargo built for these tests.
pub fn mpc_exe() -> &'static str {
    env!("CARGO_BIN_EXE_mpc")
}

/// The `mpbench` binary cargo built for these tests (many simulated clients from one host).
pub fn mpbench_exe() -> &'static str {
    env!("CARGO_BIN_EXE_mpbench")
}

// ---------------------------------------------------------------------------------------------------------
// What a LAN needs

/// Whether LAN tests can run here: root, `ip` and `bridge` (iproute2), and the kernel lets us create a
/// network namespace (a container may not). If not, says why through [`require`] (skip, or a panic in CI).
/// The first call in a process also removes namespaces left by crashed test runs.
#[must_use]
pub fn require_lan() -> bool {
    if !(require_program("ip", "iproute2") && require_program("bridge", "iproute2")) {
        return false;
    }
    // The owner of /proc/self is the effective uid (std has no geteuid).
    let root = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
    };
    if !require(
        root,
        "root for network namespaces, a bridge and veth pairs (run the tests as root, as CI does)",
    ) {
        return false;
    }
    let probe = netns_probe();
    require(
        probe.is_ok(),
        &format!(
            "permission to create network namespaces (`ip netns add` said: {})",
            probe.as_ref().err().map_or("", String::as_str)
        ),
    )
}

/// [`require_program`] for `nft`, which [`Host::loss`] and [`Host::nft`] use.
#[must_use]
pub fn require_nft() -> bool {
    require_program("nft", "nftables")
}

/// [`require_program`] for `tcpdump`, which [`Lan::capture`] uses.
#[must_use]
pub fn require_tcpdump() -> bool {
    require_program("tcpdump", "tcpdump")
}

/// Once per process: reaps crashed runs' namespaces, then creates and deletes one namespace to learn whether
/// the kernel lets us (root in a restricted container may not).
fn netns_probe() -> &'static Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE.get_or_init(|| {
        reap_leftovers();
        let name = format!("{PREFIX}{}-probe", std::process::id());
        let out = ip(&["netns", "add", &name]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        let _ = ip(&["netns", "del", &name]);
        Ok(())
    })
}

/// Deletes namespaces named by this harness whose owning process is gone (a test run that was SIGKILLed or
/// aborted never ran its teardown), after killing whatever still runs in them.
fn reap_leftovers() {
    for ns in netns_list() {
        let Some(pid) = ns
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue; // a live run's (or a reused PID: then we leave it, harmlessly)
        }
        kill_everything_in(&ns);
        ip_teardown(&["netns", "del", &ns]);
    }
}

/// The names `ip netns list` shows.
pub fn netns_list() -> Vec<String> {
    // Lines look like `name (id: 3)` or just `name`.
    ip_teardown(&["netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

// ---------------------------------------------------------------------------------------------------------
// The LAN

/// A switch namespace with a bridge and `N` host namespaces, each with a veth pair to it. Dropping it ends
/// every process it started and deletes its namespaces (also while a test panics).
pub struct Lan {
    id: u32,
    subnet: u8,
    switch: String,
    hosts: Vec<Host>,
    group: String,
    dir: PathBuf,
    procs: Procs,
    /// Namespaces created so far, in creation order (teardown deletes them even if setup failed halfway).
    namespaces: Vec<String>,
    /// Captures started so far (names their files).
    captures: AtomicU32,
}

impl Lan {
    /// Builds a LAN of `hosts` hosts (1 to 250), waits until every bridge port forwards, and returns it.
    /// Call [`require_lan`] first. Panics (after tearing down what it made) if a setup command fails.
    pub fn new(hosts: usize) -> Lan {
        assert!((1..=250).contains(&hosts), "a LAN holds 1 to 250 hosts");
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let subnet = (id % 250) as u8 + 1;
        let pid = std::process::id();
        let mut lan = Lan {
            id,
            subnet,
            switch: format!("{PREFIX}{pid}-{id}-sw"),
            hosts: Vec::new(),
            group: format!("239.255.213.{subnet}:10213"),
            dir: temp_dir(&format!("lan{id}")),
            procs: Procs::default(),
            namespaces: Vec::new(),
            captures: AtomicU32::new(0),
        };
        // From here on a panic drops `lan`, whose Drop deletes whatever was created.
        let sw = lan.switch.clone();
        lan.add_netns(&sw);
        // STP off and no forward delay: a port forwards as soon as its link is up, as on a dumb switch.
        // Snooping off: the bridge floods multicast to every port instead of only to ports it saw join.
        ip_ok(&[
            "-n",
            &sw,
            "link",
            "add",
            BRIDGE,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
            "mcast_snooping",
            "0",
        ]);
        ip_ok(&["-n", &sw, "link", "set", BRIDGE, "up"]);
        for i in 1..=hosts {
            let ns = format!("{PREFIX}{pid}-{id}-h{i}");
            lan.add_netns(&ns);
            let port = format!("p{i}");
            let addr = Ipv4Addr::new(10, 213, subnet, i as u8);
            // Created in the switch namespace with its peer placed straight into the host's, so no name is
            // ever visible in the namespace the tests run in.
            ip_ok(&[
                "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", HOST_IFACE,
                "netns", &ns,
            ]);
            ip_ok(&["-n", &sw, "link", "set", &port, "master", BRIDGE, "up"]);
            ip_ok(&["-n", &ns, "link", "set", "lo", "up"]);
            ip_ok(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                HOST_IFACE,
            ]);
            ip_ok(&["-n", &ns, "link", "set", HOST_IFACE, "up"]);
            // Without it a multicast send fails (no route), or would follow a default route if one existed.
            ip_ok(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", HOST_IFACE]);
            let dir = lan.dir.join(format!("h{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            lan.hosts.push(Host {
                index: i,
                ns,
                addr,
                group: lan.group.clone(),
                dir,
                procs: lan.procs.clone(),
            });
        }
        lan.wait_until_up();
        lan
    }

    /// Host `i`, counted from 1 as the addresses are (host 1 is 10.213.X.1).
    pub fn host(&self, i: usize) -> &Host {
        assert!(
            (1..=self.hosts.len()).contains(&i),
            "host {i} does not exist: this LAN has hosts 1 to {}",
            self.hosts.len()
        );
        &self.hosts[i - 1]
    }

    /// Every host, host 1 first.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The multicast group every `mpd` and `mpc` of this LAN uses, `239.255.213.X:10213`.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The LAN's /24, e.g. `10.213.7.0/24`.
    pub fn subnet(&self) -> String {
        format!("10.213.{}.0/24", self.subnet)
    }

    /// The switch's namespace (the bridge [`BRIDGE`] lives there; ports `p1`, `p2`, … lead to the hosts).
    pub fn switch_ns(&self) -> &str {
        &self.switch
    }

    /// Every namespace this LAN created (switch first).
    pub fn namespaces(&self) -> Vec<String> {
        self.namespaces.clone()
    }

    /// The LAN's temporary directory (hosts' state directories are `h1/`, `h2/`, …; captures sit at the
    /// top). Kept after a failed test, for its logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts capturing every frame that crosses the bridge (tcpdump on [`BRIDGE`] in the switch namespace,
    /// promiscuous, so frames forwarded between two hosts are seen too, not only those to the bridge), and
    /// returns once tcpdump says it is listening. Call [`require_tcpdump`] first.
    pub fn capture(&self) -> Capture {
        let n = self.captures.fetch_add(1, Ordering::Relaxed) + 1;
        let path = self.dir.join(format!("capture{n}.pcap"));
        // tcpdump writes the pcap to its stdout, a file we opened: it need not open (as the `tcpdump` user it
        // switches to, or under an AppArmor profile) a path in our temporary directory.
        let file = std::fs::File::create(&path).unwrap();
        let mut cmd = netns_command(&self.switch, "tcpdump");
        // --immediate-mode: hand each frame over as it comes instead of in blocks every second or so; -U:
        // write each one to the file at once; -n: no name lookups; -B: a 16 MiB kernel buffer, so a burst is
        // not dropped; -s 0: whole frames.
        cmd.args([
            "-i",
            BRIDGE,
            "--immediate-mode",
            "-U",
            "-n",
            "-s",
            "0",
            "-B",
            "16384",
            "-w",
            "-",
        ]);
        let proc = Proc::start("tcpdump", cmd, Stdio::from(file), &self.procs);
        proc.expect_stderr_line(
            |l| l.contains("listening on"),
            Instant::now() + SETUP_LIMIT,
            "tcpdump listening",
        );
        let h1 = &self.hosts[0];
        Capture {
            proc,
            path,
            marker_from: (h1.ns.clone(), h1.addr),
            marker: format!("mplan-end-of-capture-{}-{n}", self.id),
        }
    }

    /// Waits until every host's interface has carrier and every bridge port forwards.
    fn wait_until_up(&self) {
        let deadline = Instant::now() + SETUP_LIMIT;
        loop {
            let ports = Command::new("bridge")
                .args(["-n", &self.switch, "-j", "link", "show"])
                .output()
                .expect("cannot run `bridge`");
            let ports: serde_json::Value =
                serde_json::from_slice(&ports.stdout).unwrap_or(serde_json::Value::Null);
            let forwarding = ports.as_array().map_or(0, |a| {
                a.iter()
                    .filter(|p| p["state"] == "forwarding" && has_flag(p, "LOWER_UP"))
                    .count()
            });
            let carrier = self.hosts.iter().all(|h| {
                let out = ip(&["-n", &h.ns, "-j", "link", "show", HOST_IFACE]);
                let v: serde_json::Value =
                    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
                has_flag(&v[0], "LOWER_UP")
            });
            if forwarding == self.hosts.len() && carrier {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the LAN did not come up within {SETUP_LIMIT:?}: {} of {} bridge ports forwarding, hosts' \
                 carrier {carrier}",
                forwarding,
                self.hosts.len()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn add_netns(&mut self, ns: &str) {
        ip_ok(&["netns", "add", ns]);
        self.namespaces.push(ns.to_string());
    }
}

impl Drop for Lan {
    /// Kills (SIGKILL, by PID) and reaps every process the LAN started, then anything else left in its
    /// namespaces, then deletes them. Never panics: it may run while a test is already panicking.
    fn drop(&mut self) {
        let procs = std::mem::take(&mut *lock(&self.procs.0));
        for p in &procs {
            p.kill();
        }
        // Hosts before the switch: the veth pairs go with the host namespaces.
        for ns in self.namespaces.iter().rev() {
            kill_everything_in(ns);
            ip_teardown(&["netns", "del", ns]);
        }
        if std::thread::panicking() {
            eprintln!(
                "lan: kept {} (logs and captures of the failed test)",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// SIGKILLs every process in namespace `ns` (by the PIDs `ip netns pids` lists; the namespace is this
/// harness's, so they are ours) and waits up to a few seconds for them to be gone.
fn kill_everything_in(ns: &str) {
    let pids: Vec<i32> = ip_teardown(&["netns", "pids", ns])
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    for &pid in &pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
    }
    // They are not our children (a forked daemon is reparented), so watch /proc instead of waiting.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pids.iter().all(|&p| process_gone(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether process `pid` is gone (or a zombie not reaped yet).
pub fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
        Err(_) => true,
    }
}

fn has_flag(link: &serde_json::Value, flag: &str) -> bool {
    link["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == flag))
}

/// Runs `ip ARGS` with a limit (panics if it overruns: for setup).
fn ip(args: &[&str]) -> Output {
    run_with_limit(Command::new("ip").args(args), SETUP_LIMIT, b"")
}

/// Runs `ip ARGS` for teardown, which must not panic (a panic while unwinding aborts the test binary): stdout,
/// or nothing if ip failed.
fn ip_teardown(args: &[&str]) -> String {
    match Command::new("ip").args(args).stdin(Stdio::null()).output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        Ok(out) => {
            eprintln!(
                "lan teardown: ip {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
            String::new()
        }
        Err(e) => {
            eprintln!("lan teardown: cannot run ip: {e}");
            String::new()
        }
    }
}

/// Runs `ip ARGS` and panics with its stderr unless it succeeded.
fn ip_ok(args: &[&str]) {
    let out = ip(args);
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// `ip netns exec NS PROGRAM` (ip execs the program after entering the namespace: same PID).
fn netns_command(ns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).arg(program);
    cmd
}

// ---------------------------------------------------------------------------------------------------------
// Hosts

/// One host of a [`Lan`]: a network namespace with `lo` and [`HOST_IFACE`] at [`Host::addr`], and a
/// directory for its programs' state.
pub struct Host {
    index: usize,
    ns: String,
    addr: Ipv4Addr,
    group: String,
    dir: PathBuf,
    procs: Procs,
}

impl Host {
    /// Its number in the LAN, from 1.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Its namespace's name (for `ip netns exec`).
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// Its address on the LAN, `10.213.X.<index>`.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// Its directory: `mpd/` for [`Host::spawn_mpd`]'s daemon, `mpc-NICK/` for each nickname's state.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `ip netns exec NS PROGRAM`, to add arguments to and run as the caller likes. Prefer [`Host::spawn`]
    /// and [`Host::run`], which make sure the process ends with the test.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        netns_command(&self.ns, program)
    }

    /// Starts `PROGRAM ARGS…` in this host, stdin closed, stdout and stderr read line by line (see [`Proc`]).
    /// It runs until it exits, [`Proc::kill`], or the LAN is dropped. `name` labels it in failure messages.
    pub fn spawn<I, S>(&self, name: &str, program: impl AsRef<OsStr>, args: I) -> Proc
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(program);
        cmd.args(args);
        Proc::start(name, cmd, Stdio::piped(), &self.procs)
    }

    /// [`Host::spawn`], with stdin a pipe the test writes to with [`Proc::write_line`] (and closes with
    /// [`Proc::close_stdin`]) instead of closed.
    pub fn spawn_with_stdin<I, S>(&self, name: &str, program: impl AsRef<OsStr>, args: I) -> Proc
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(program);
        cmd.args(args);
        Proc::start_with(name, cmd, true, Stdio::piped(), &self.procs)
    }

    /// Runs `PROGRAM ARGS…` in this host to completion and returns its output; panics (after killing it) if
    /// it takes longer than `limit`.
    pub fn run<I, S>(&self, program: impl AsRef<OsStr>, args: I, limit: Duration) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(program);
        cmd.args(args);
        run_with_limit(&mut cmd, limit, b"")
    }

    /// The directory [`Host::spawn_mpd`] gives the daemon (`--dir`).
    pub fn mpd_dir(&self) -> PathBuf {
        self.dir.join("mpd")
    }

    /// The state directory (`--state-dir`) of `nick`'s `mpc` on this host: one per nickname and host, so
    /// every run of that nickname there keeps its key and queue, as one person's machine would.
    pub fn state_dir(&self, nick: &str) -> PathBuf {
        self.dir.join(format!("mpc-{nick}"))
    }

    /// `mpd run --dir DIR --group G --iface ADDR EXTRA…` in this host, in the foreground (so its PID is the
    /// daemon's), returned once its log (stderr) says it started. Panics with its output if it exits or
    /// does not start within 10 s. EXTRA must not silence the info-level log (the start line is waited for).
    pub fn spawn_mpd(&self, extra: &[&str]) -> Proc {
        let mut args: Vec<OsString> = vec![
            "run".into(),
            "--dir".into(),
            self.mpd_dir().into(),
            "--group".into(),
            self.group.clone().into(),
            "--iface".into(),
            self.addr.to_string().into(),
        ];
        args.extend(extra.iter().map(OsString::from));
        let p = self.spawn(&format!("mpd@h{}", self.index), mpd_exe(), args);
        p.expect_stderr_line(
            |l| l.contains("mpd started:"),
            Instant::now() + MPD_READY_LIMIT,
            "mpd started",
        );
        p
    }

    /// `mpc`'s arguments for `nick` on this host: `--nick NICK --iface ADDR --group G --state-dir DIR`, then
    /// `rest` (the subcommand and its arguments, and any other global option before it).
    pub fn mpc_args(&self, nick: &str, rest: &[&str]) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--nick".into(),
            nick.into(),
            "--iface".into(),
            self.addr.to_string().into(),
            "--group".into(),
            self.group.clone().into(),
            "--state-dir".into(),
            self.state_dir(nick).into(),
        ];
        args.extend(rest.iter().map(OsString::from));
        args
    }

    /// Starts `mpc` with [`Host::mpc_args`] (e.g. `rest = ["listen", "--json"]`).
    pub fn spawn_mpc(&self, nick: &str, rest: &[&str]) -> Proc {
        let name = format!("mpc-{nick}@h{}", self.index);
        self.spawn(&name, mpc_exe(), self.mpc_args(nick, rest))
    }

    /// Starts `mpc`'s interactive console with [`Host::mpc_args`] and stdin a pipe: with stdin not a
    /// terminal, the console reads one command per line ([`Proc::write_line`], e.g. `"msg bob hi"`) and
    /// prints its notices (`registered as …`, `queued #…`, `delivered #…`) as plain lines on stdout. End of
    /// file on stdin ([`Proc::close_stdin`]) ends it, as `exit` does.
    pub fn spawn_mpc_console(&self, nick: &str, rest: &[&str]) -> Proc {
        let name = format!("mpc-console-{nick}@h{}", self.index);
        self.spawn_with_stdin(&name, mpc_exe(), self.mpc_args(nick, rest))
    }

    /// Runs `mpc` with [`Host::mpc_args`] to completion (e.g. `rest = ["send", "bob", "hi"]`), with a limit.
    pub fn run_mpc(&self, nick: &str, rest: &[&str], limit: Duration) -> Output {
        self.run(mpc_exe(), self.mpc_args(nick, rest), limit)
    }

    /// Runs `f` on a thread that has entered this host's network namespace, and returns what it returns.
    /// Sockets belong to the namespace they were created in, so one made inside `f` (a UDP socket bound to
    /// [`Host::addr`], a raw socket, a TCP connection) can be returned and used from the test's own thread:
    /// the way to send hand-made datagrams or frames "from" this host.
    pub fn in_netns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.ns, f)
            .unwrap_or_else(|e| panic!("cannot enter {}'s namespace: {e}", self.ns))
    }

    /// Loads an nftables script (`nft -f -`) into this host's namespace, and panics with nft's error unless
    /// it was accepted.
    pub fn nft(&self, script: &str) {
        let mut cmd = self.command("nft");
        cmd.args(["-f", "-"]);
        let out = run_with_limit(&mut cmd, SETUP_LIMIT, script.as_bytes());
        assert!(
            out.status.success(),
            "nft in {} refused:\n{script}\n{}",
            self.ns,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Drops `percent` % of the packets arriving on this host's LAN interface, at random, each packet on its
    /// own (nftables `numgen random mod 100 < N drop` on the input hook; this kernel has no netem). Loopback
    /// traffic inside the host is untouched. Replaces any earlier setting; 0 removes it. Call [`require_nft`]
    /// first.
    pub fn loss(&self, percent: u32) {
        assert!(percent <= 100, "loss is a percentage");
        // Adding then deleting the table makes the deletion succeed whether or not it existed; the whole
        // script is one transaction.
        let mut script = format!("table inet {LOSS_TABLE}\ndelete table inet {LOSS_TABLE}\n");
        // numgen's `mod 100` yields 0 to 99: `< 100` is out of its range, so 100 % is a plain drop.
        let sample = if percent == 100 {
            String::new()
        } else {
            format!("numgen random mod 100 < {percent} ")
        };
        if percent > 0 {
            // The first counter sees every packet from the LAN, the second the ones dropped, so a test can
            // check the rule is on the path ([`Host::loss_counters`]).
            script += &format!(
                "table inet {LOSS_TABLE} {{\n\
                 \tchain input {{\n\
                 \t\ttype filter hook input priority filter; policy accept;\n\
                 \t\tiifname \"{HOST_IFACE}\" counter {sample}counter drop\n\
                 \t}}\n\
                 }}\n"
            );
        }
        self.nft(&script);
    }

    /// Packets that reached [`Host::loss`]'s rule since it was set, and how many of them it dropped
    /// (`(0, 0)` without one).
    pub fn loss_counters(&self) -> (u64, u64) {
        let mut cmd = self.command("nft");
        cmd.args(["-j", "list", "table", "inet", LOSS_TABLE]);
        let out = run_with_limit(&mut cmd, SETUP_LIMIT, b"");
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        // {"nftables": [..., {"rule": {"expr": [..., {"counter": {"packets": N}}, ..., {"counter": …}]}}]}
        let counters: Vec<u64> = v["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o["rule"]["expr"].as_array())
            .flatten()
            .filter_map(|e| e["counter"]["packets"].as_u64())
            .collect();
        match counters[..] {
            [seen, dropped] => (seen, dropped),
            _ => (0, 0),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Processes

/// Every process a LAN started, for its teardown.
#[derive(Clone, Default)]
struct Procs(Arc<Mutex<Vec<Arc<ProcInner>>>>);

/// A process started in a host ([`Host::spawn`]). Cloning gives another handle to the same process; dropping
/// handles does not end it: [`Proc::kill`] does, and so does dropping the [`Lan`].
#[derive(Clone)]
pub struct Proc(Arc<ProcInner>);

struct ProcInner {
    name: String,
    pid: i32,
    /// `None` once reaped; while it is `Some`, the PID cannot be reused, so signalling it is safe.
    child: Mutex<Option<Child>>,
    status: Mutex<Option<ExitStatus>>,
    /// The write end of its stdin, if it was started with one ([`Host::spawn_with_stdin`]); `None` once
    /// closed ([`Proc::close_stdin`]).
    stdin: Mutex<Option<ChildStdin>>,
    stdout: Arc<Lines>,
    stderr: Arc<Lines>,
}

/// Lines of one output stream, appended by a reader thread; `closed` once it hit end of file.
#[derive(Default)]
struct Lines {
    state: Mutex<(Vec<String>, bool)>,
    changed: Condvar,
}

impl Lines {
    /// Reads `r` to its end, a line at a time (lossily decoded: a test's output need not be UTF-8).
    fn fill(self: Arc<Self>, r: impl Read) {
        use std::io::BufRead;
        let mut r = std::io::BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = r.read_until(b'\n', &mut buf).unwrap_or(0);
            let mut st = lock(&self.state);
            if n == 0 {
                st.1 = true;
                self.changed.notify_all();
                return;
            }
            let line = String::from_utf8_lossy(&buf);
            st.0.push(line.trim_end_matches(['\n', '\r']).to_string());
            self.changed.notify_all();
        }
    }

    /// The first line (since the start) that matches, waiting for more until `deadline` or the end of the
    /// stream.
    fn wait_for(&self, mut pred: impl FnMut(&str) -> bool, deadline: Instant) -> Option<String> {
        let mut st = lock(&self.state);
        let mut checked = 0;
        loop {
            if let Some(l) = st.0[checked..].iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            checked = st.0.len();
            let now = Instant::now();
            if st.1 || now >= deadline {
                return None;
            }
            st = self
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn all(&self) -> Vec<String> {
        lock(&self.state).0.clone()
    }
}

impl Proc {
    /// Spawns `cmd` (stdin closed, stdout to `stdout`, stderr read into lines), registers it with the LAN.
    fn start(name: &str, cmd: Command, stdout: Stdio, procs: &Procs) -> Proc {
        Proc::start_with(name, cmd, false, stdout, procs)
    }

    /// [`Proc::start`], with stdin a pipe the test writes to if `piped_stdin`, else closed.
    fn start_with(
        name: &str,
        mut cmd: Command,
        piped_stdin: bool,
        stdout: Stdio,
        procs: &Procs,
    ) -> Proc {
        let mut child = cmd
            .stdin(if piped_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        let out = Arc::new(Lines::default());
        let err = Arc::new(Lines::default());
        match child.stdout.take() {
            Some(o) => {
                let l = out.clone();
                std::thread::spawn(move || l.fill(o));
            }
            // Not piped (a capture's pcap goes to a file): no lines will ever come.
            None => lock(&out.state).1 = true,
        }
        let e = child.stderr.take().unwrap();
        let l = err.clone();
        std::thread::spawn(move || l.fill(e));
        let stdin = child.stdin.take();
        let p = Arc::new(ProcInner {
            name: name.to_string(),
            pid: child.id() as i32,
            child: Mutex::new(Some(child)),
            status: Mutex::new(None),
            stdin: Mutex::new(stdin),
            stdout: out,
            stderr: err,
        });
        lock(&procs.0).push(p.clone());
        Proc(p)
    }

    /// Writes `line` and a newline to its stdin (for a program that reads commands, such as `mpc`'s
    /// console with stdin not a terminal). Panics if it was started without a stdin pipe
    /// ([`Host::spawn_with_stdin`]), the pipe was closed, or the process no longer reads it.
    pub fn write_line(&self, line: &str) {
        use std::io::Write;
        let mut stdin = lock(&self.0.stdin);
        let pipe = stdin.as_mut().unwrap_or_else(|| {
            panic!(
                "{}: no stdin to write {line:?} to (not started with spawn_with_stdin, or closed)",
                self.0.name
            )
        });
        pipe.write_all(format!("{line}\n").as_bytes())
            .and_then(|()| pipe.flush())
            .unwrap_or_else(|e| {
                panic!(
                    "{}: cannot write {line:?} to its stdin: {e}\n{}",
                    self.0.name,
                    self.describe()
                )
            });
    }

    /// Closes its stdin (end of file for the program), if it had one.
    pub fn close_stdin(&self) {
        lock(&self.0.stdin).take();
    }

    /// Its PID (the program's own: `ip netns exec` execs it).
    pub fn pid(&self) -> i32 {
        self.0.pid
    }

    /// The name it was started with.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The first stdout line (since it started) for which `pred` holds, waiting for more lines until
    /// `deadline`; `None` if none came by then or stdout closed (the process ended) without one.
    pub fn wait_for_line(
        &self,
        pred: impl FnMut(&str) -> bool,
        deadline: Instant,
    ) -> Option<String> {
        self.0.stdout.wait_for(pred, deadline)
    }

    /// [`Proc::wait_for_line`] for stderr (where `mpd run` logs).
    pub fn wait_for_stderr_line(
        &self,
        pred: impl FnMut(&str) -> bool,
        deadline: Instant,
    ) -> Option<String> {
        self.0.stderr.wait_for(pred, deadline)
    }

    /// [`Proc::wait_for_line`], panicking with everything the process printed if no line matched. `what`
    /// names the awaited line in that message.
    pub fn expect_line(
        &self,
        pred: impl FnMut(&str) -> bool,
        deadline: Instant,
        what: &str,
    ) -> String {
        self.wait_for_line(pred, deadline).unwrap_or_else(|| {
            panic!(
                "{}: no stdout line {what}\n{}",
                self.0.name,
                self.describe()
            )
        })
    }

    /// [`Proc::expect_line`] for stderr.
    pub fn expect_stderr_line(
        &self,
        pred: impl FnMut(&str) -> bool,
        deadline: Instant,
        what: &str,
    ) -> String {
        self.wait_for_stderr_line(pred, deadline)
            .unwrap_or_else(|| {
                panic!(
                    "{}: no stderr line {what}\n{}",
                    self.0.name,
                    self.describe()
                )
            })
    }

    /// Every stdout line so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.stdout.all()
    }

    /// Every stderr line so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.0.stderr.all()
    }

    /// Its exit status and output so far, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "{} (pid {}, {}):\nstdout:\n{}\nstderr:\n{}",
            self.0.name,
            self.0.pid,
            match self.try_status() {
                Some(s) => s.to_string(),
                None => "running".into(),
            },
            self.lines().join("\n"),
            self.stderr_lines().join("\n")
        )
    }

    /// Sends `sig` to it, if it has not been reaped yet.
    pub fn signal(&self, sig: Signal) {
        let child = lock(&self.0.child);
        if child.is_some() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0.pid), sig);
        }
    }

    /// Its exit status if it has exited (reaping it), else `None`.
    pub fn try_status(&self) -> Option<ExitStatus> {
        let mut child = lock(&self.0.child);
        let mut status = lock(&self.0.status);
        if let Some(c) = child.as_mut()
            && let Ok(Some(st)) = c.try_wait()
        {
            *status = Some(st);
            *child = None;
        }
        *status
    }

    /// Waits until it exits or `deadline` passes; its exit status, or `None` if it still runs.
    pub fn wait_exit(&self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            if let Some(st) = self.try_status() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILLs it (by its PID) unless it has exited, and reaps it.
    pub fn kill(&self) {
        self.0.kill();
    }
}

impl ProcInner {
    fn kill(&self) {
        let mut child = lock(&self.child);
        if let Some(mut c) = child.take() {
            let _ = c.kill();
            if let Ok(st) = c.wait() {
                *lock(&self.status) = Some(st);
            }
        }
    }
}

/// Locks `m`, also after another thread panicked holding it (teardown must go on).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------------------
// Captures

/// A running tcpdump on the bridge ([`Lan::capture`]).
pub struct Capture {
    proc: Proc,
    path: PathBuf,
    /// Where the end-of-capture marker is sent from: host 1's namespace and address.
    marker_from: (String, Ipv4Addr),
    marker: String,
}

impl Capture {
    /// Ends the capture and returns the pcap file's bytes, holding every frame that crossed the bridge before
    /// the call. Panics if that cannot be ensured: tcpdump does not stop, or the kernel dropped frames (a
    /// capture missing frames cannot show what they did not contain).
    ///
    /// tcpdump, stopped by a signal, leaves frames still queued in its ring buffer unwritten. So first a
    /// marker datagram goes from host 1 to a multicast group nobody joined (the bridge floods it, so it is
    /// captured), and we wait until it is in the file (`-U` writes each frame as it comes): every frame the
    /// bridge passed before it is in the file too. Then SIGTERM (by PID), and tcpdump's report is checked.
    pub fn stop(self) -> Vec<u8> {
        let deadline = Instant::now() + SETUP_LIMIT;
        let (ns, addr) = &self.marker_from;
        let read = || std::fs::read(&self.path).unwrap_or_default();
        // A datagram can only be lost to the host's own loss rule on input, not on the way out; resend anyway
        // until it shows, in case the LAN is busy.
        loop {
            send_marker(ns, *addr, self.marker.as_bytes())
                .unwrap_or_else(|e| panic!("cannot send the capture's end marker from {ns}: {e}"));
            if crate::common::wait_until(Duration::from_millis(200), || {
                contains(&read(), &self.marker)
            }) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the capture's end marker never reached the pcap file: {}",
                self.proc.describe()
            );
        }
        self.proc.signal(Signal::SIGTERM);
        let st = self.proc.wait_exit(Instant::now() + SETUP_LIMIT);
        assert!(
            st.is_some(),
            "tcpdump did not stop on SIGTERM: {}",
            self.proc.describe()
        );
        // Its report ends with "N packets dropped by kernel"; stderr closes when it exits.
        let dropped = self.proc.wait_for_stderr_line(
            |l| l.contains("dropped by kernel"),
            Instant::now() + SETUP_LIMIT,
        );
        assert!(
            dropped
                .as_deref()
                .is_some_and(|l| l.trim_start().starts_with("0 ")),
            "tcpdump lost frames or did not report: {}",
            self.proc.describe()
        );
        read()
    }

    /// The pcap file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Sends `payload` in one UDP datagram from `addr` in namespace `ns` to 239.255.212.1:9, a group no one joins.
fn send_marker(ns: &str, addr: Ipv4Addr, payload: &[u8]) -> std::io::Result<()> {
    in_netns(ns, || {
        let sock = std::net::UdpSocket::bind((addr, 0))?;
        sock.set_multicast_ttl_v4(1)?;
        sock.send_to(payload, (Ipv4Addr::new(239, 255, 212, 1), 9))?;
        Ok(())
    })?
}

/// Runs `f` on a thread of its own that has entered network namespace `ns` (the caller's thread stays where
/// it is), and returns its result.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(&path)?;
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Whether `needle` occurs anywhere in `haystack` (e.g. a chat text in a capture's bytes).
pub fn contains(haystack: &[u8], needle: impl AsRef<[u8]>) -> bool {
    let needle = needle.as_ref();
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// One UDP datagram of a capture ([`udp_datagrams`]).
#[derive(Clone, Debug)]
pub struct UdpDatagram {
    /// Source address and port.
    pub src: (Ipv4Addr, u16),
    /// Destination address and port.
    pub dst: (Ipv4Addr, u16),
    /// The UDP payload as captured.
    pub payload: Vec<u8>,
}

/// The IPv4 UDP datagrams in a pcap file from [`Capture::stop`] (Ethernet frames, either byte order),
/// in capture order; other frames (ARP, IGMP, TCP, IPv6) and fragments after the first are skipped. Lets a
/// test show that a capture holds the traffic it reasons about (say, SCTP over UDP to the daemon's port)
/// before it asserts what that traffic does not contain.
pub fn udp_datagrams(pcap: &[u8]) -> Vec<UdpDatagram> {
    let u16_at = |b: &[u8], i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    let Some(magic) = pcap.get(..4) else {
        return Vec::new();
    };
    // The file's byte order is the writer's: its magic number tells which.
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] => false,
        _ => panic!("not a pcap file (magic {magic:02x?})"),
    };
    let u32_at = |i: usize| {
        let b: [u8; 4] = pcap[i..i + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    assert_eq!(u32_at(20), 1, "the capture's link type is not Ethernet");
    let mut out = Vec::new();
    let mut at = 24; // the global header
    while at + 16 <= pcap.len() {
        let len = u32_at(at + 8) as usize;
        let frame = &pcap[at + 16..(at + 16 + len).min(pcap.len())];
        at += 16 + len;
        // Ethernet II, IPv4 (no VLAN tags on this bridge).
        if frame.len() < 14 + 20 || u16_at(frame, 12) != 0x0800 {
            continue;
        }
        let ip = &frame[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let fragment_offset = u16_at(ip, 6) & 0x1fff;
        if ip[9] != 17 || fragment_offset != 0 || ip.len() < ihl + 8 {
            continue;
        }
        let total = usize::from(u16_at(ip, 2)).min(ip.len());
        let addr = |i: usize| Ipv4Addr::new(ip[i], ip[i + 1], ip[i + 2], ip[i + 3]);
        let udp = &ip[ihl..total];
        out.push(UdpDatagram {
            src: (addr(12), u16_at(udp, 0)),
            dst: (addr(16), u16_at(udp, 2)),
            payload: udp[8..].to_vec(),
        });
    }
    out
}
