//! Remembered keys on disk ([`crate::known_keys`] is the format): read whole, written atomically (a temporary
//! file with mode 0600, synced, renamed into place), so a crash leaves the old file or the new one.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::known_keys::{KnownKeys, MAX_FILE};

/// The file in a client's state directory that pins the daemon's key per group or address.
pub const KNOWN_DAEMONS: &str = "known_daemons";
/// The file in a client's state directory that remembers the key of each peer talked to, by nickname.
pub const KNOWN_PEERS: &str = "known_peers";

/// Reads the file at `path`; a missing file is an empty list. A damaged one is an error (with the path and
/// line): the client must not silently forget whom it trusts.
pub fn load(path: &Path) -> io::Result<KnownKeys> {
    let f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(KnownKeys::default()),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    f.take(MAX_FILE as u64 + 1).read_to_end(&mut bytes)?;
    KnownKeys::parse(&bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is damaged ({e}); fix or remove the line (the key of that scope is then learned again)",
                path.display()
            ),
        )
    })
}

/// Writes `keys` to `path` atomically, creating its directory.
pub fn save(path: &Path, keys: &KnownKeys) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(keys.to_text().as_bytes())?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::PublicKey;
    use crate::test_dir::TempDir;

    #[test]
    fn saved_keys_load_back_and_a_damaged_file_is_an_error() {
        let d = TempDir::new("known-keys");
        let path = d.path().join("sub").join(KNOWN_DAEMONS);
        assert!(load(&path).unwrap().is_empty());
        let mut k = KnownKeys::default();
        k.set("group@239.1.2.3:5", PublicKey([9; 32]));
        save(&path, &k).unwrap();
        assert_eq!(load(&path).unwrap(), k);
        fs::write(&path, "group@x zz\n").unwrap();
        let e = load(&path).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }
}
