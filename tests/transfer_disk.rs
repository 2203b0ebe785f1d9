//! A receiver's disk filling up during a transfer (issue 16): on a tiny tmpfs mounted in a mount namespace of
//! the test's own (so nothing is mounted where anyone else can see it, and it goes with the test's thread),
//! the incoming file store says the disk is full, keeps what was synced, and goes on from there once there
//! is room.
//!
//! Needs root (or CAP_SYS_ADMIN) for the namespace and the mount: without it the test skips outside CI and
//! fails in it (tests/common/require.rs).

mod common;

use common::*;
use multiproto::io::incoming::{Incoming, StoreError};
use multiproto::transfer::name::sanitise_path;

#[test]
fn a_full_disk_keeps_what_was_synced_and_the_transfer_goes_on_with_room() {
    let dir = std::env::temp_dir().join(format!("mp-disk-{}", std::process::id()));
    skip_unless!(private_tmpfs(&dir, "256k"));
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 31 % 255) as u8).collect();
    let hash = *blake3::hash(&data).as_bytes();
    let path = sanitise_path("video.mkv").unwrap();
    let id = [3u8; 16];
    let mut inc = Incoming::open(&dir, &id).unwrap();
    inc.begin(0, &path, false, data.len() as u64).unwrap();
    let mut synced = 0u64;
    let mut full = None;
    for (i, piece) in data.chunks(32 * 1024).enumerate() {
        let r = inc
            .write(0, (i * 32 * 1024) as u64, piece)
            .and_then(|()| inc.sync().map(|(_, n)| synced = n));
        if let Err(e) = r {
            full = Some(e);
            break;
        }
    }
    assert_eq!(full, Some(StoreError::DiskFull), "256 KiB never filled");
    assert!(
        full.unwrap().to_string().contains("disk is full"),
        "the message says what happened"
    );
    assert!(synced > 0 && synced < data.len() as u64, "{synced}");
    drop(inc);
    // Nothing verified was lost: the part on the full disk holds at least what was synced (and the bytes
    // of the last write that fitted before the disk was full, which are as good: the hash at the end says
    // so).
    let inc = Incoming::open(&dir, &id).unwrap();
    let (0, Some((0, held))) = inc.resume() else {
        panic!("nothing to resume from: {:?}", inc.resume());
    };
    assert!(
        held >= synced && held < data.len() as u64,
        "{held} {synced}"
    );
    drop(inc);
    // Room made: the transfer goes on from there, and the file is whole.
    assert!(
        mount(&["-o", "remount,size=8m", &dir.to_string_lossy()]),
        "remount failed"
    );
    let mut inc = Incoming::open(&dir, &id).unwrap();
    let from = inc.begin(0, &path, false, data.len() as u64).unwrap();
    assert_eq!(from, held);
    inc.write(0, from, &data[from as usize..]).unwrap();
    let placed = inc.finish(0, &hash).unwrap();
    assert_eq!(std::fs::read(&placed).unwrap(), data);
    inc.done().unwrap();
}
