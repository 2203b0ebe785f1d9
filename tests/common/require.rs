//! What a test needs beyond a bare Rust toolchain (a program such as qemu, tshark or tmux; root; IPv6 on
//! loopback; UDP GRO), checked in one place, so `cargo test` passes on a machine with only rustup's toolchain
//! and still never skips silently in CI.
//!
//! A test that needs something asks [`require`] (or [`require_program`]) first and returns if told no:
//! - the need is met: the test runs;
//! - it is not, and `CI` is unset (or empty, `0` or `false`): `skipped: needs X (install: Y)` goes to stderr
//!   and the test returns, passing;
//! - it is not, and `CI` is set (`.ci/run` sets `CI=true` and installs everything): the test panics with the
//!   same words, because a CI run that skipped would prove nothing.
//!
//! `MULTIPROTO_TEST_PRETEND_MISSING` checks those two paths on a machine that has everything: a comma-separated
//! list of words, and every need whose text contains one of them (ignoring case; `*` matches all) is treated as
//! missing, e.g. `MULTIPROTO_TEST_PRETEND_MISSING=tmux,ipv6`.
//!
//! Uses std only: the crate's own unit tests include this file too (`src/lib.rs`), so there is one copy.

use std::path::Path;

/// Whether the calling test may go on. `have` says whether `need` is met; `need` names it and says how to get
/// it, e.g. `tmux (install: apt-get install tmux)`. If it is not met, prints `skipped: needs NEED` on stderr
/// and returns false, or, with `CI` set, panics.
pub fn require(have: bool, need: &str) -> bool {
    if have && !pretend_missing(need) {
        return true;
    }
    if in_ci() {
        panic!("needs {need}; CI is set, so this fails instead of being skipped");
    }
    // Parallel tests interleave: say which one skipped (libtest names each test's thread after it).
    let test = std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .map_or(String::new(), |n| format!("{n}: "));
    // Straight to the process's stderr, in one write: the harness hides `eprintln!` output of passing tests
    // (a skip should show in a plain `cargo test`), and one write keeps parallel tests' lines whole.
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("{test}skipped: needs {need}\n").as_bytes());
    false
}

/// [`require`] for a program: `program` (a name looked up on `PATH`, or a path) must be an executable file;
/// `package` is the Debian package that installs it.
pub fn require_program(program: &str, package: &str) -> bool {
    require(
        find_program(program),
        &format!("{program} (install: apt-get install {package})"),
    )
}

/// [`require`] for IPv6 on loopback: a UDP socket can be bound to `[::1]`.
pub fn require_ipv6_loopback() -> bool {
    require(
        std::net::UdpSocket::bind("[::1]:0").is_ok(),
        "IPv6 on loopback (enable: sysctl -w net.ipv6.conf.lo.disable_ipv6=0)",
    )
}

/// Ends the calling test (by returning) unless `$ready`, a [`require`] or [`require_program`] call (or several
/// joined by `&&`), holds. Those say why on stderr, or panic in CI.
// Each test binary compiles its own copy of this file, and most use no macro.
#[allow(unused_macros)]
macro_rules! skip_unless {
    ($ready:expr) => {
        if !$ready {
            return;
        }
    };
}
#[allow(unused_imports)]
pub(crate) use skip_unless;

/// Whether `CI` is set to something that means yes.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// Whether `MULTIPROTO_TEST_PRETEND_MISSING` names `need`.
fn pretend_missing(need: &str) -> bool {
    let Ok(list) = std::env::var("MULTIPROTO_TEST_PRETEND_MISSING") else {
        return false;
    };
    let need = need.to_lowercase();
    list.split(',')
        .map(|w| w.trim().to_lowercase())
        .filter(|w| !w.is_empty())
        .any(|w| w == "*" || need.contains(&w))
}

/// Whether `program` is an executable file: itself if it holds a `/`, else in one of `PATH`'s directories.
fn find_program(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return executable(Path::new(program));
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| executable(&d.join(program))))
}
