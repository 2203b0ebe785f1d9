//! Files and folders between real `mpc` processes (issue 16): `mpc send-file` to `mpc listen
//! --accept-files`, through a real `mpd` for the roster and keys, the bytes straight from one client to the
//! other. Multicast on 127.0.0.1, every test on its own group, ports and directories.

mod common;
mod roster_harness;

use std::path::Path;
use std::time::Duration;

use roster_harness::*;

/// Bytes that differ at every offset (so a piece in the wrong place shows).
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 13) as u8)
        .collect()
}

fn online(net: &Net, nick: &str) {
    assert!(
        common::wait_until(Duration::from_secs(15), || list(net)
            .iter()
            .any(|e| e["nick"] == nick && e["status"] == "online")),
        "{nick} never online"
    );
}

#[test]
fn a_file_sent_from_the_command_line_arrives_identical_and_verified() {
    let net = Net::new("files-one", 140);
    let _mpd = Mpd::start(&net, &[]);
    let inbox = net.dir.join("inbox");
    let bob = Mpc::listen_with(
        &net,
        "bob",
        &[],
        &["--accept-files", inbox.to_str().unwrap()],
    );
    bob.wait_registered();
    online(&net, "bob");
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
