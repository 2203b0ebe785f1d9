//! Identities with the real binaries: `mpd key` and `mpc whoami` make a key once (mode 0600) and print its
//! fingerprint; the running daemon uses the same key and shows it in `mpd status`; a key file that others
//! can read stops the daemon from starting, with a one-line message saying what to do.
//!
//! Each test has its own directory, group and ports, multicast on 127.0.0.1.

mod common;
#[path = "common/mpd.rs"]
mod mpd;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};
use std::time::Duration;

use common::{run_with_limit, temp_dir};
use mpd::{MpdDir, describe};

fn out_text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).trim().to_string(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `mpk:` then eight groups of four lowercase base32 characters.
fn is_fingerprint(s: &str) -> bool {
    s.strip_prefix("mpk:").is_some_and(|g| {
        let groups: Vec<&str> = g.split('-').collect();
        groups.len() == 8
            && groups.iter().all(|g| {
                g.len() == 4
                    && g.chars()
                        .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c))
            })
    })
}

#[test]
fn the_daemon_key_is_made_once_shown_by_status_and_guarded() {
    let mut d = MpdDir::new("key", 40);
    let first = d.mpd("key", &[]);
    assert_eq!(first.status.code(), Some(0), "{}", describe(&first));
    let (fp, err) = out_text(&first);
    assert!(is_fingerprint(&fp), "{fp:?}");
    assert!(err.contains("created a new daemon key"), "{err}");
    let key = d.dir.join("daemon.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // The second time it is only read.
    let (again, err) = out_text(&d.mpd("key", &[]));
    assert_eq!(again, fp);
    assert!(err.is_empty(), "{err}");
    // The daemon uses that key.
    d.start_ok();
    let st = d.mpd("status", &["--json"]);
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).expect("status --json");
    assert_eq!(v["key"], fp.as_str(), "{v}");
    let (human, _) = out_text(&d.mpd("status", &[]));
    assert!(human.contains(&format!("key:        {fp}")), "{human}");
    let stop = d.mpd("stop", &[]);
    assert_eq!(stop.status.code(), Some(0), "{}", describe(&stop));
    // A key others could have read is refused, with what to do, before anything listens.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = d.start(&[]);
    assert_eq!(refused.status.code(), Some(1), "{}", describe(&refused));
    let (_, err) = out_text(&refused);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("chmod 600") && err.contains("daemon.key"),
        "{err}"
    );
    // It was not replaced: fixing the mode gives the same key back.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(out_text(&d.mpd("key", &[])).0, fp);
}

/// `mpc --state-dir DIR whoami`.
fn whoami(dir: &std::path::Path) -> Output {
    run_with_limit(
        Command::new(env!("CARGO_BIN_EXE_mpc"))
            .arg("--state-dir")
            .arg(dir)
            .arg("whoami"),
        Duration::from_secs(30),
        b"",
    )
}

#[test]
fn a_client_key_is_made_once_in_the_state_directory() {
    let dir = temp_dir("identity-client");
    let first = whoami(&dir);
    assert_eq!(first.status.code(), Some(0), "{}", describe(&first));
    let (fp, err) = out_text(&first);
    assert!(is_fingerprint(&fp), "{fp:?}");
    assert!(err.contains("created a new key"), "{err}");
    let mode = std::fs::metadata(dir.join("identity.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let (again, err) = out_text(&whoami(&dir));
    assert_eq!(again, fp);
    assert!(err.is_empty(), "{err}");
    // Another state directory, another identity.
    let other = temp_dir("identity-client-2");
    assert_ne!(out_text(&whoami(&other)).0, fp);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other);
}
