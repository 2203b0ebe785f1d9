//! Helpers shared by the integration tests: private network namespaces, child processes that are always
//! killed (by PID) and waited for, and waits with deadlines instead of sleeps.

#![allow(dead_code)]

mod require;
pub use require::*;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// Moves the calling thread into a new network namespace with only `lo`, up. Children spawned from this
/// thread inherit it, so nothing they send can leave the machine, and ports never collide with other tests.
///
/// Returns false (through [`require`]: skipped, or a panic in CI) if `ip` is missing or the kernel refuses,
/// as it does to a user without root or CAP_SYS_ADMIN.
#[must_use]
pub fn enter_private_netns() -> bool {
    if !require_program("ip", "iproute2") {
        return false;
    }
    let entered = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET);
    let need = "a network namespace of its own (run the tests as root, as CI does, or in a container allowed \
                to create network namespaces)";
    let need = match entered {
        Ok(()) => need.to_string(),
        Err(e) => format!("{need}; the kernel said: {e}"),
    };
    if !require(entered.is_ok(), &need) {
        return false;
    }
    let st = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("cannot run `ip`");
    assert!(st.success(), "ip link set lo up failed");
    true
}

/// Runs `mount ARGS` (from this thread, so in its namespace); whether it worked.
pub fn mount(args: &[&str]) -> bool {
    Command::new("mount")
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

/// Moves the calling thread into a mount namespace of its own, its mounts private (none propagates back),
/// with a tmpfs of `size` on `dir`. Children spawned from this thread afterwards inherit the namespace (and see
/// the tmpfs); no one else does.
///
/// Returns false (through [`require`]: skipped, or a panic in CI) without `mount` or root.
#[must_use]
pub fn private_tmpfs(dir: &Path, size: &str) -> bool {
    if !require_program("mount", "mount") {
        return false;
    }
    let entered = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS);
    let need = "a mount namespace of its own (run the tests as root, as CI does)";
    let need = match &entered {
        Ok(()) => need.to_string(),
        Err(e) => format!("{need}; the kernel said: {e}"),
    };
    if !require(entered.is_ok(), &need) {
        return false;
    }
    assert!(
        mount(&["--make-rprivate", "/"]),
        "mount --make-rprivate / failed"
    );
    std::fs::create_dir_all(dir).unwrap();
    let size = format!("size={size}");
    assert!(
        mount(&["-t", "tmpfs", "-o", &size, "tmpfs", &dir.to_string_lossy()]),
        "mounting a tmpfs on {} failed",
        dir.display()
    );
    true
}

/// A child process killed (SIGKILL, by its PID) and reaped when dropped, so a failing test leaves nothing
/// behind.
pub struct Guard {
    pub child: Option<Child>,
    pub name: String,
}

impl Guard {
    /// Spawns `cmd` with stdout and stderr sent to files in `dir` (named after `name`).
    pub fn spawn(name: &str, cmd: &mut Command, dir: &Path) -> Guard {
        let out = std::fs::File::create(dir.join(format!("{name}.out"))).unwrap();
        let err = std::fs::File::create(dir.join(format!("{name}.err"))).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Guard {
            child: Some(child),
            name: name.to_string(),
        }
    }

    /// Sends `sig` to the child.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Some(c) = &self.child {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
        }
    }

    /// Waits for the child to exit, up to `limit`; kills it if it does not.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        let end = Instant::now() + limit;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if Instant::now() >= end {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `cmd` to completion with a time limit; returns its output, or panics with it if it overran.
pub fn run_with_limit(cmd: &mut Command, limit: Duration, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    {
        use std::io::Write;
        let mut i = child.stdin.take().unwrap();
        i.write_all(stdin).unwrap();
    }
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut o = Vec::new();
        let mut e = Vec::new();
        let _ = out.read_to_end(&mut o);
        let _ = err.read_to_end(&mut e);
        (o, e)
    });
    let end = Instant::now() + limit;
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let st = child.wait().unwrap();
            let (o, e) = reader.join().unwrap();
            panic!(
                "{cmd:?} did not finish within {limit:?} ({st}).\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&o),
                String::from_utf8_lossy(&e)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let (stdout, stderr) = reader.join().unwrap();
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Polls `cond` every few milliseconds until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether a UDP socket is bound to `port` in the calling thread's network namespace.
pub fn udp_port_bound(port: u16) -> bool {
    let want = format!(":{port:04X} ");
    ["/proc/thread-self/net/udp", "/proc/thread-self/net/udp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .any(|t| {
            t.lines().skip(1).any(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|a| format!("{a} ").contains(&want))
            })
        })
}

/// Whether `path` exists and its contents contain `needle`.
pub fn file_contains(path: &Path, needle: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|s| s.contains(needle))
}

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("multiproto-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The `sctp_echo` example built by `cargo test` (examples are built alongside the tests).
pub fn sctp_echo() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>/examples/sctp_echo
    let p = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("sctp_echo");
    if !p.exists() {
        // `cargo test` builds examples, `cargo test --test NAME` does not: build it now.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "--example", "sctp_echo"])
            .status();
        assert!(
            st.is_ok_and(|s| s.success()),
            "cannot build the sctp_echo example"
        );
    }
    assert!(
        p.exists(),
        "{} not built: run `cargo build --example sctp_echo`",
        p.display()
    );
    p
}

/// Path of a usrsctp example program (Debian's libusrsctp-examples installs them there).
pub fn usrsctp(prog: &str) -> PathBuf {
    Path::new("/usr/lib/usrsctp").join(prog)
}
