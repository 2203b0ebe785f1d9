//! Interoperability with Linux kernel SCTP (RFC 9260) over UDP encapsulation (RFC 6951, Linux >= 5.11).
//!
//! The kernels CI and developers run on have no SCTP, so the test boots one that has: Debian's cloud kernel
//! under qemu (software emulation, TCG), with an initramfs holding busybox, the kernel's SCTP modules, a
//! static `sctp_echo` and a static `ksctp` (tests/kernel/ksctp.c: kernel SCTP echo server and client).
//! tests/kernel/build.sh prepares it (cached under target/kernel-interop), tests/kernel/init.sh is the VM's
//! /init: it runs every scenario inside the VM over 127.0.0.1 and ::1, prints one `SCENARIO <name>: pass|fail`
//! line each and a `KERNEL-INTEROP RESULT:` line, and powers off. The VM has no network device: nothing it
//! sends leaves it.
//!
//! Needs the Debian packages qemu-system-x86, busybox-static, cpio, gcc, libc6-dev and xz-utils, and apt
//! package lists (`apt-get update`) the first time, to `apt-get download` the kernel. Without them the test
//! skips before downloading anything, or fails in CI (see tests/common/require.rs). Environment:
//! - `MULTIPROTO_KERNEL_VM_DIR`: where build.sh caches its work (default `<target dir>/kernel-interop`);
//!   `KERNEL_CARGO_TARGET_DIR` and `KERNEL_PACKAGE` are passed on to it (see build.sh).
//! - `MULTIPROTO_KERNEL_KVM=1`: use KVM instead of TCG. Off by default: some hosts offer a /dev/kvm whose
//!   nested virtualisation cannot run this kernel (qemu aborts, or stops on "KVM internal error"), and TCG
//!   runs the whole suite in well under a minute anyway.
//! - `MULTIPROTO_KERNEL_CMDLINE`: extra kernel command line words for init.sh, e.g. `multiproto_log=debug`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;

/// Time for tests/kernel/build.sh: a first run downloads the kernel (about 27 MB) and builds a release
/// sctp_echo (about a minute on 2 cores); later runs take seconds.
const BUILD_LIMIT: Duration = Duration::from_secs(15 * 60);
/// Time for one boot of the VM, scenarios included (about 35 s under TCG on 2 cores when all pass; each
/// scenario inside has its own time limit).
const VM_LIMIT: Duration = Duration::from_secs(240);

/// Scenarios init.sh runs by default; each must report pass.
const SCENARIOS: &[&str] = &[
    // Kernel SCTP clients -> our `sctp_echo listen`.
    "A1-kernel-client-small",
    "A2-kernel-client-16-streams",
    "A3-kernel-client-fragmented-100k",
    "A4-kernel-client-256k",
    "A5-kernel-client-unordered",
    "A6-kernel-client-idle-heartbeats",
    "A7-two-kernel-clients-at-once",
    "A8-our-server-shuts-down-kernel-client",
    "A9-kernel-client-ipv6",
    // Our `sctp_echo connect` -> kernel SCTP echo and discard servers.
    "B1-our-client-small",
    "B2-our-client-stream-7-tiny",
    "B3-our-client-fragmented-100k",
    "B4-our-client-256k-unordered",
    "B5-our-client-unordered",
    "B6-our-client-to-discard",
    "B7-our-client-ipv6",
    "B8-kernel-echo-server-saw-graceful-shutdowns",
    "B9-kernel-discard-server-got-everything",
    "B10-kernel-ipv6-echo-server",
    "B11-our-client-no-echo-small",
    "B12-kernel-discard-server-got-the-3-messages",
    // The kernel's SNMP counters after everything.
    "K-kernel-saw-no-checksum-errors",
];

/// The directory build.sh works in: `<target dir>/kernel-interop` unless `MULTIPROTO_KERNEL_VM_DIR` says.
fn vm_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MULTIPROTO_KERNEL_VM_DIR") {
        return PathBuf::from(d);
    }
    // target/<profile>/deps/<test binary> -> target/kernel-interop
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().join("kernel-interop")
}

/// tests/kernel/build.sh, which prepares the VM.
fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kernel/build.sh")
}

/// Whether everything the VM needs is here: qemu, and what `build.sh --check` looks for (its list is the only
/// one). If not, [`require`] has said what is missing (or panicked, in CI).
fn vm_prerequisites() -> bool {
    if !require_program("qemu-system-x86_64", "qemu-system-x86") {
        return false;
    }
    let out = run_with_limit(
        Command::new("bash")
            .arg(build_script())
            .arg("--check")
            .arg(vm_dir()),
        Duration::from_secs(60),
        b"",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Exit status 3: a prerequisite is missing, named on a `build.sh: needs ...` line.
    let missing = stderr
        .lines()
        .find_map(|l| l.strip_prefix("build.sh: needs "));
    match (out.status.code(), missing) {
        (Some(0), _) => require(true, "what tests/kernel/build.sh needs"),
        (Some(3), Some(need)) => require(false, need),
        _ => panic!("build.sh --check failed ({}):\n{stderr}", out.status),
    }
}

/// Runs tests/kernel/build.sh once per test process; returns the directory with vmlinuz and initramfs.gz.
fn build_vm() -> PathBuf {
    static BUILT: OnceLock<Mutex<Option<PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(|| Mutex::new(None))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(d) = built.as_ref() {
        return d.clone();
    }
    let dir = vm_dir();
    let script = build_script();
    let started = Instant::now();
    let out = run_with_limit(
        Command::new("bash").arg(&script).arg(&dir),
        BUILD_LIMIT,
        b"",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} failed ({}); it says which package is missing, if one is:\n{stderr}",
        script.display(),
        out.status
    );
    eprintln!(
        "build.sh took {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        stderr.lines().last().unwrap_or("")
    );
    for f in ["vmlinuz", "initramfs.gz"] {
        assert!(
            dir.join(f).exists(),
            "build.sh did not produce {}",
            dir.join(f).display()
        );
    }
    *built = Some(dir.clone());
    dir
}

/// Boots the VM with `cmdline` words added, waits (up to [`VM_LIMIT`]) for its result line, and returns the
/// console output.
fn boot(name: &str, cmdline: &str) -> String {
    let vm = build_vm();
    let dir = temp_dir(name);
    let kvm = std::env::var("MULTIPROTO_KERNEL_KVM").is_ok_and(|v| v == "1");
    let accel: &[&str] = if kvm {
        &["-accel", "kvm", "-cpu", "host"]
    } else {
        &["-accel", "tcg", "-cpu", "max"]
    };
    let extra = std::env::var("MULTIPROTO_KERNEL_CMDLINE").unwrap_or_default();
    let append = format!("console=ttyS0 panic=-1 quiet {cmdline} {extra}");
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(accel)
        .args([
            "-smp",
            "2",
            "-m",
            "512M",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
        ])
        .args(["-serial", "stdio", "-no-reboot", "-kernel"])
        .arg(vm.join("vmlinuz"))
        .arg("-initrd")
        .arg(vm.join("initramfs.gz"))
        .args(["-append", append.trim_end()]);
    let started = Instant::now();
    let mut qemu = Guard::spawn("qemu", &mut cmd, &dir);
    let console = dir.join("qemu.out");
    let read = || {
        std::fs::read_to_string(&console)
            .unwrap_or_default()
            .replace('\r', "")
    };
    // Done when the VM has powered off (or died), or once the result line is out, give it a moment to.
    let finished = wait_until(VM_LIMIT, || {
        qemu.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some())
            || read().contains("KERNEL-INTEROP RESULT:")
    });
    let status = qemu.wait(Duration::from_secs(10));
    let text = read();
    let qemu_err = std::fs::read_to_string(dir.join("qemu.err")).unwrap_or_default();
    eprintln!(
        "VM ({}) ran {:.1} s, {status:?}",
        if kvm { "KVM" } else { "TCG" },
        started.elapsed().as_secs_f64()
    );
    assert!(
        finished || text.contains("KERNEL-INTEROP RESULT:"),
        "the VM did not finish within {VM_LIMIT:?}; console:\n{text}\nqemu stderr:\n{qemu_err}"
    );
    assert!(
        text.contains("KERNEL-INTEROP RESULT:"),
        "the VM stopped without a result line ({status:?}); console:\n{text}\nqemu stderr:\n{qemu_err}"
    );
    text
}

/// Lines of `console` that start with `prefix`.
fn lines_with<'a>(console: &'a str, prefix: &str) -> Vec<&'a str> {
    console.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[test]
fn linux_kernel_sctp_interoperates_in_both_directions() {
    skip_unless!(vm_prerequisites());
    let console = boot("kernel-interop", "");
    let scenarios = lines_with(&console, "SCENARIO ");
    eprintln!("{}", scenarios.join("\n"));
    let failed: Vec<&str> = scenarios
        .iter()
        .copied()
        .filter(|l| !l.ends_with(": pass"))
        .collect();
    let missing: Vec<&str> = SCENARIOS
        .iter()
        .copied()
        .filter(|s| !scenarios.contains(&format!("SCENARIO {s}: pass").as_str()))
        .collect();
    let result = lines_with(&console, "KERNEL-INTEROP RESULT:");
    assert!(
        failed.is_empty() && missing.is_empty() && result == ["KERNEL-INTEROP RESULT: pass"],
        "kernel SCTP interop failed.\nfailed: {failed:#?}\nnot passed: {missing:#?}\nresult: {result:?}\n\
         console:\n{console}"
    );
}
