use super::*;
use crate::transfer::name::sanitise_path;

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mp-incoming-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn hash(b: &[u8]) -> [u8; 32] {
    *blake3::hash(b).as_bytes()
}

const ID: [u8; 16] = [7; 16];

#[test]
fn a_file_arrives_in_pieces_and_takes_its_place_only_when_its_hash_matches() {
    let dir = temp("file");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let mut inc = Incoming::open(&dir, &ID).unwrap();
    assert_eq!(inc.resume(), (0, None));
    let path = sanitise_path("report.pdf").unwrap();
    assert_eq!(inc.begin(0, &path, false, data.len() as u64).unwrap(), 0);
    for (i, piece) in data.chunks(65_536).enumerate() {
        inc.write(0, (i * 65_536) as u64, piece).unwrap();
        inc.sync().unwrap();
    }
    // Nothing under its name before it is verified.
    assert!(!dir.join("report.pdf").exists());
    let placed = inc.finish(0, &hash(&data)).unwrap();
    assert_eq!(placed, dir.join("report.pdf"));
    assert_eq!(fs::read(&placed).unwrap(), data);
    assert_eq!(inc.resume(), (1, None));
    inc.done().unwrap();
    // The work directory is gone: only the file is left.
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["report.pdf"]);

    // The same name again: a numbered one, the first untouched.
    let mut inc = Incoming::open(&dir, &[8; 16]).unwrap();
    inc.begin(0, &path, false, 3).unwrap();
    inc.write(0, 0, b"new").unwrap();
    assert_eq!(
        inc.finish(0, &hash(b"new")).unwrap(),
        dir.join("report (1).pdf")
    );
    assert_eq!(fs::read(dir.join("report.pdf")).unwrap(), data);
}

#[test]
fn a_hash_mismatch_keeps_nothing_and_out_of_step_writes_are_refused() {
    let dir = temp("mismatch");
    let mut inc = Incoming::open(&dir, &ID).unwrap();
    let path = sanitise_path("x.bin").unwrap();
    inc.begin(0, &path, false, 4).unwrap();
    assert!(matches!(
        inc.write(0, 1, b"a"),
        Err(StoreError::OutOfStep(_))
    ));
    assert!(matches!(
        inc.write(1, 0, b"a"),
        Err(StoreError::OutOfStep(_))
    ));
    assert!(matches!(
        inc.write(0, 0, b"abcde"),
        Err(StoreError::OutOfStep(_))
    ));
    inc.write(0, 0, b"abcd").unwrap();
    assert_eq!(inc.finish(0, &hash(b"abce")), Err(StoreError::HashMismatch));
    assert!(!dir.join("x.bin").exists());
    assert!(!inc.work.join("0.part").exists());
    assert_eq!(inc.resume(), (0, None));
}

#[test]
fn a_transfer_killed_half_way_resumes_from_what_was_written() {
    let dir = temp("resume");
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let path = sanitise_path("big.iso").unwrap();
    {
        let mut inc = Incoming::open(&dir, &ID).unwrap();
        inc.begin(0, &path, false, data.len() as u64).unwrap();
        inc.write(0, 0, &data[..40_000]).unwrap();
        inc.sync().unwrap();
        // Written, never synced: the process dies here, and the OS keeps what it wrote.
        inc.write(0, 40_000, &data[40_000..50_000]).unwrap();
        assert_eq!(inc.unsynced(), Some((0, 10_000)));
        assert_eq!(inc.written(), Some((0, 50_000)));
    }
    let mut inc = Incoming::open(&dir, &ID).unwrap();
    assert_eq!(inc.resume(), (0, Some((0, 50_000))));
    assert_eq!(
        inc.begin(0, &path, false, data.len() as u64).unwrap(),
        50_000
    );
    inc.write(0, 50_000, &data[50_000..]).unwrap();
    let placed = inc.finish(0, &hash(&data)).unwrap();
    assert_eq!(fs::read(placed).unwrap(), data);
}

#[test]
fn a_resume_goes_on_from_a_prefix_hashed_by_the_caller_and_a_cut_short_part_from_what_is_left() {
    let dir = temp("prehashed");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let path = sanitise_path("disk.img").unwrap();
    {
        let mut inc = Incoming::open(&dir, &ID).unwrap();
        inc.begin(0, &path, false, data.len() as u64).unwrap();
        inc.write(0, 0, &data[..120_000]).unwrap();
        inc.sync().unwrap();
    }
    // The caller hashed the synced part in steps; begin goes on from that hasher.
    let mut inc = Incoming::open(&dir, &ID).unwrap();
    let mut part = crate::io::file_hash::Stepped::open(&inc.part_path(0), 120_000).unwrap();
    while !part.step(50_000).unwrap() {}
    inc.prehashed(0, 120_000, part.into_hasher());
    assert_eq!(
        inc.begin(0, &path, false, data.len() as u64).unwrap(),
        120_000
    );
    inc.write(0, 120_000, &data[120_000..]).unwrap();
    let placed = inc.finish(0, &hash(&data)).unwrap();
    assert_eq!(fs::read(&placed).unwrap(), data);
    fs::remove_file(placed).unwrap();
    // Another transfer's part, cut short behind our back (as a power loss may leave it): what is on disk
    // is what it resumes from.
    let id = [9u8; 16];
    {
        let mut inc = Incoming::open(&dir, &id).unwrap();
        inc.begin(0, &path, false, data.len() as u64).unwrap();
        inc.write(0, 0, &data[..150_000]).unwrap();
        inc.sync().unwrap();
    }
    let inc = Incoming::open(&dir, &id).unwrap();
    assert_eq!(inc.resume(), (0, Some((0, 150_000))));
    fs::OpenOptions::new()
        .write(true)
        .open(inc.part_path(0))
        .unwrap()
        .set_len(1000)
        .unwrap();
    assert_eq!(inc.resume(), (0, Some((0, 1000))));
    let mut inc = Incoming::open(&dir, &id).unwrap();
    assert_eq!(inc.begin(0, &path, false, data.len() as u64).unwrap(), 1000);
    inc.write(0, 1000, &data[1000..]).unwrap();
    let placed = inc.finish(0, &hash(&data)).unwrap();
    assert_eq!(fs::read(placed).unwrap(), data);
}

#[test]
fn a_folder_goes_under_one_top_name_kept_across_a_restart() {
    let dir = temp("folder");
    // A folder of that name exists: the transfer's goes beside it, numbered.
    fs::create_dir_all(dir.join("photos")).unwrap();
    let entries: [(&str, Option<&[u8]>); 4] = [
        ("photos", None),
        ("photos/a.jpg", Some(b"aaa")),
        ("photos/sub", None),
        ("photos/sub/b.jpg", Some(b"bb")),
    ];
    let mut inc = Incoming::open(&dir, &ID).unwrap();
    // One entry, begun, written whole and finished.
    let put = |inc: &mut Incoming, i: usize| {
        let (p, data) = entries[i];
        let size = data.map_or(0, |d| d.len() as u64);
        inc.begin(i as u32, &sanitise_path(p).unwrap(), data.is_none(), size)
            .unwrap();
        if let Some(d) = data {
            inc.write(i as u32, 0, d).unwrap();
        }
        inc.finish(i as u32, &hash(data.unwrap_or(b""))).unwrap();
    };
    put(&mut inc, 0);
    put(&mut inc, 1);
    drop(inc);
    let mut inc = Incoming::open(&dir, &ID).unwrap();
    assert_eq!(inc.resume(), (2, None));
    // A finished entry is not begun again.
    let first = sanitise_path("photos/a.jpg").unwrap();
    assert!(matches!(
        inc.begin(1, &first, false, 3),
        Err(StoreError::OutOfStep(_))
    ));
    put(&mut inc, 2);
    put(&mut inc, 3);
    inc.done().unwrap();
    assert_eq!(fs::read(dir.join("photos (1)/a.jpg")).unwrap(), b"aaa");
    assert_eq!(fs::read(dir.join("photos (1)/sub/b.jpg")).unwrap(), b"bb");
    assert_eq!(fs::read_dir(dir.join("photos")).unwrap().count(), 0);
    // Done: the same id starts afresh, its state gone with its work directory.
    let again = Incoming::open(&dir, &ID).unwrap();
    assert_eq!(again.resume(), (0, None));
    again.done().unwrap();
}

#[test]
fn a_full_disk_is_said_as_such() {
    let e = io::Error::from_raw_os_error(libc::ENOSPC);
    assert_eq!(io_error(&e, "write", Path::new("x")), StoreError::DiskFull);
    let e = io::Error::from_raw_os_error(libc::EACCES);
    assert!(
        matches!(io_error(&e, "write", Path::new("x")), StoreError::Io(m) if m.contains("cannot write x"))
    );
}
