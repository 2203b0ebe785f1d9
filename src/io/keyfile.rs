//! Key files on disk: an identity is created on first use and kept, readable by its owner only (mode 0600),
//! in the daemon's `--dir` (`daemon.key`) or the client's state directory (`identity.key`). The format is
//! [`crate::identity`]'s.
//!
//! A new key is written to a temporary file created with mode 0600 and `O_EXCL`, synced, and renamed into
//! place, so a crash leaves either no key or a whole one, and two processes starting together end up with one
//! key (the second rename loses to nothing: both read back whatever file won). A key file that others can
//! read or write is refused, as SSH refuses such a private key: someone else may have it.
//!
//! The network secret (`--secret-file`) is read here too, under the same rule: its bytes, less trailing
//! whitespace, at least [`MIN_SECRET`] of them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::identity::{Identity, KEY_LEN, KeyFileError, MAX_KEY_FILE};
use crate::secure::Psk;

/// Fewest bytes a network secret may have: 16 random bytes (128 bits), or a passphrase at least that long.
pub const MIN_SECRET: usize = 16;
/// Most bytes of a secret file read.
pub const MAX_SECRET: usize = 4096;

/// The daemon's key file in its directory.
pub const DAEMON_KEY: &str = "daemon.key";
/// A client's key file in its state directory.
pub const CLIENT_KEY: &str = "identity.key";

/// Why an identity could not be loaded or created.
#[derive(Debug)]
pub enum KeyError {
    /// Reading, creating or writing the file failed.
    Io(PathBuf, io::Error),
    /// The file is not a key file.
    Malformed(PathBuf, KeyFileError),
    /// Others may read or change the file.
    Exposed(PathBuf, u32),
    /// The OS gave no randomness for a new key.
    Randomness(String),
    /// The secret file holds fewer than [`MIN_SECRET`] bytes (this many).
    SecretTooShort(PathBuf, usize),
    /// The secret file is larger than [`MAX_SECRET`].
    SecretTooLarge(PathBuf),
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Io(p, e) => write!(f, "cannot use the key file {}: {e}", p.display()),
            KeyError::Malformed(p, e) => write!(
                f,
                "the key file {} {e}; move it away to make a new key (peers who pinned the old one will be warned)",
                p.display()
            ),
            KeyError::Exposed(p, mode) => write!(
                f,
                "the key file {} can be read or changed by others (mode {:o}); run `chmod 600 {}`",
                p.display(),
                mode & 0o777,
                p.display()
            ),
            KeyError::Randomness(e) => write!(f, "no OS randomness for a new key: {e}"),
            KeyError::SecretTooShort(p, n) => write!(
                f,
                "the secret file {} holds {n} bytes, fewer than {MIN_SECRET}: make one with \
                 `head -c 32 /dev/urandom | base64 > {0}; chmod 600 {0}` and give it to every mpd and mpc",
                p.display()
            ),
            KeyError::SecretTooLarge(p) => write!(
                f,
                "the secret file {} is larger than {MAX_SECRET} bytes: is it the right file?",
                p.display()
            ),
        }
    }
}

impl std::error::Error for KeyError {}

/// Reads the identity at `path`, or creates one there (and its directory) if there is none. Returns it and
/// whether it was created now.
pub fn load_or_create(path: &Path) -> Result<(Identity, bool), KeyError> {
    match load(path) {
        Err(KeyError::Io(_, e)) if e.kind() == io::ErrorKind::NotFound => {}
        other => return other.map(|id| (id, false)),
    }
    let mut secret = [0u8; KEY_LEN];
    getrandom::fill(&mut secret).map_err(|e| KeyError::Randomness(e.to_string()))?;
    let id = Identity::from_secret(secret);
    let io_err = |e| KeyError::Io(path.to_path_buf(), e);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io_err)?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(id.to_file().as_bytes())?;
        f.sync_all()?;
        // Only if nobody made a key meanwhile: a hard link fails on an existing name, where rename would
        // replace it.
        fs::hard_link(&tmp, path)
    })();
    let _ = fs::remove_file(&tmp);
    match written {
        Ok(()) => Ok((id, true)),
        // Another process made one first: use theirs.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => load(path).map(|id| (id, false)),
        Err(e) => Err(io_err(e)),
    }
}

/// Reads the identity at `path`.
pub fn load(path: &Path) -> Result<Identity, KeyError> {
    let bytes = read_private(path, MAX_KEY_FILE)?;
    Identity::from_file(&bytes).map_err(|e| KeyError::Malformed(path.to_path_buf(), e))
}

/// Reads the network secret at `path` (see the module docs) and derives its keys.
pub fn load_secret(path: &Path) -> Result<Psk, KeyError> {
    let bytes = read_private(path, MAX_SECRET)?;
    if bytes.len() > MAX_SECRET {
        return Err(KeyError::SecretTooLarge(path.to_path_buf()));
    }
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    if end < MIN_SECRET {
        return Err(KeyError::SecretTooShort(path.to_path_buf(), end));
    }
    Ok(Psk::from_secret(&bytes[..end]))
}

/// The first `max + 1` bytes of a file only its owner may read or change.
fn read_private(path: &Path, max: usize) -> Result<Vec<u8>, KeyError> {
    let io_err = |e| KeyError::Io(path.to_path_buf(), e);
    let f = File::open(path).map_err(io_err)?;
    let mode = f.metadata().map_err(io_err)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(KeyError::Exposed(path.to_path_buf(), mode));
    }
    let mut bytes = Vec::with_capacity(max.min(4096));
    // One byte more than allowed, so a larger file is recognised without reading all of it.
    f.take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TempDir;

    #[test]
    fn a_key_is_created_once_with_mode_0600_and_read_back() {
        let d = TempDir::new("keyfile-create");
        let path = d.path().join("sub").join(CLIENT_KEY);
        let (first, created) = load_or_create(&path).unwrap();
        assert!(created);
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, created) = load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(again.public(), first.public());
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn an_exposed_or_damaged_key_file_is_refused_with_what_to_do() {
        let d = TempDir::new("keyfile-refuse");
        let path = d.path().join(DAEMON_KEY);
        load_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create(&path).unwrap_err();
        assert!(matches!(e, KeyError::Exposed(_, _)), "{e}");
        assert!(e.to_string().contains("chmod 600"), "{e}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, "not a key\n").unwrap();
        let e = load_or_create(&path).unwrap_err();
        assert!(
            matches!(e, KeyError::Malformed(_, KeyFileError::NotAKeyFile)),
            "{e}"
        );
        // A damaged key is never silently replaced: it is still there.
        assert_eq!(fs::read_to_string(&path).unwrap(), "not a key\n");
        fs::write(&path, vec![b'a'; 10_000]).unwrap();
        let e = load_or_create(&path).unwrap_err();
        assert!(
            matches!(e, KeyError::Malformed(_, KeyFileError::TooLarge)),
            "{e}"
        );
    }

    #[test]
    fn a_secret_must_be_private_and_long_enough() {
        let d = TempDir::new("keyfile-secret");
        let path = d.path().join("secret");
        let write = |bytes: &[u8], mode| {
            fs::write(&path, bytes).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        };
        write(b"0123456789abcdef\n", 0o600);
        let a = load_secret(&path).unwrap();
        // Trailing whitespace is not part of the secret: an editor's newline does not change it.
        write(b"0123456789abcdef", 0o600);
        assert_eq!(load_secret(&path).unwrap(), a);
        write(b"0123456789abcdeX", 0o600);
        assert_ne!(load_secret(&path).unwrap(), a);
        write(b"short   \n", 0o600);
        let e = load_secret(&path).unwrap_err();
        assert!(matches!(e, KeyError::SecretTooShort(_, 5)), "{e}");
        assert!(e.to_string().contains("/dev/urandom"), "{e}");
        write(b"0123456789abcdef", 0o640);
        assert!(matches!(load_secret(&path), Err(KeyError::Exposed(_, _))));
        write(&vec![b'x'; MAX_SECRET + 1], 0o600);
        assert!(matches!(
            load_secret(&path),
            Err(KeyError::SecretTooLarge(_))
        ));
    }
}
