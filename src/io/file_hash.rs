//! BLAKE3 of files, read in bounded memory (issue 16): the sender hashes each file it offers ([`Stepped`], a
//! step at a time, so its loop goes on meanwhile), and a receiver resumed after a restart hashes the part it
//! already holds the same way ([`hash_prefix`] at once) and goes on from there, so nothing already received
//! is read twice from the network, only once more from the disk. [`hash_file`] hashes a whole file at once
//! (mpbench's check of what arrived).

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Bytes read at a time: the memory a hash costs, whatever the file's size.
pub const CHUNK: usize = 64 * 1024;

/// A file's size and BLAKE3 hash, read once from start to end.
pub fn hash_file(path: &Path) -> io::Result<(u64, [u8; 32])> {
    let mut f = File::open(path)?;
    let mut h = blake3::Hasher::new();
    let n = feed(&mut h, &mut f, u64::MAX)?;
    Ok((n, *h.finalize().as_bytes()))
}

/// The hasher after the first `len` bytes of `path`: what a transfer resumed at offset `len` goes on from.
/// A file shorter than `len` is an error ([`io::ErrorKind::UnexpectedEof`]): the part on disk is not what
/// the offset says.
pub fn hash_prefix(path: &Path, len: u64) -> io::Result<blake3::Hasher> {
    let mut s = Stepped::open(path, len)?;
    s.step(u64::MAX)?;
    Ok(s.into_hasher())
}

/// The first `len` bytes of a file hashed a bounded number of bytes at a time ([`Stepped::step`]), so that
/// a loop with other work (chat, heartbeats) hashes a large file between it.
pub struct Stepped {
    file: File,
    path: std::path::PathBuf,
    hasher: blake3::Hasher,
    done: u64,
    len: u64,
    buf: Vec<u8>,
}

impl Stepped {
    /// Opens `path` to hash its first `len` bytes.
    pub fn open(path: &Path, len: u64) -> io::Result<Stepped> {
        Ok(Stepped {
            file: File::open(path)?,
            path: path.to_path_buf(),
            hasher: blake3::Hasher::new(),
            done: 0,
            len,
            buf: Vec::new(),
        })
    }

    /// Hashes about `budget` more bytes (at least one read's worth); true once all `len` are. A file
    /// shorter than `len` is an error ([`io::ErrorKind::UnexpectedEof`]).
    pub fn step(&mut self, budget: u64) -> io::Result<bool> {
        use std::os::unix::fs::FileExt;
        if self.buf.is_empty() && self.done < self.len {
            self.buf = vec![0; CHUNK];
        }
        let mut spent = 0u64;
        while self.done < self.len {
            if spent >= budget {
                return Ok(false);
            }
            let want = usize::try_from(self.len - self.done).map_or(CHUNK, |n| n.min(CHUNK));
            let n = match self.file.read_at(&mut self.buf[..want], self.done) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "{} has {} bytes, not the {} expected",
                            self.path.display(),
                            self.done,
                            self.len
                        ),
                    ));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.hasher.update(&self.buf[..n]);
            self.done += n as u64;
            spent += n as u64;
        }
        Ok(true)
    }

    /// Bytes hashed so far.
    pub fn hashed(&self) -> u64 {
        self.done
    }

    /// The open file (to check it is still the one meant).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The hasher, after what was hashed.
    pub fn into_hasher(self) -> blake3::Hasher {
        self.hasher
    }
}

/// Feeds at most `limit` bytes of `r` to `h`, [`CHUNK`] at a time; returns how many.
fn feed(h: &mut blake3::Hasher, r: &mut impl Read, limit: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    while done < limit {
        let want = usize::try_from(limit - done).map_or(CHUNK, |l| l.min(CHUNK));
        let n = match r.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        done += n as u64;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("mp-hash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn a_file_hashes_as_its_bytes_do_and_a_prefix_goes_on_to_the_same() {
        // Over several chunks, not a multiple of one.
        let bytes: Vec<u8> = (0..(3 * CHUNK + 123))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let p = temp("data", &bytes);
        let (n, h) = hash_file(&p).unwrap();
        assert_eq!(n, bytes.len() as u64);
        assert_eq!(h, *blake3::hash(&bytes).as_bytes());
        for cut in [0, 1, CHUNK, CHUNK + 5, bytes.len()] {
            let mut resumed = hash_prefix(&p, cut as u64).unwrap();
            resumed.update(&bytes[cut..]);
            assert_eq!(*resumed.finalize().as_bytes(), h, "cut at {cut}");
        }
        let e = hash_prefix(&p, bytes.len() as u64 + 1).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(e.to_string().contains("not the"), "{e}");
        // In small steps, the same.
        let mut s = Stepped::open(&p, bytes.len() as u64).unwrap();
        let mut steps = 0;
        while !s.step(1000).unwrap() {
            steps += 1;
        }
        assert!(steps >= 3, "a read per step at least, so {steps} steps");
        assert_eq!(*s.into_hasher().finalize().as_bytes(), h);
        let empty = temp("empty", b"");
        assert_eq!(
            hash_file(&empty).unwrap(),
            (0, *blake3::hash(b"").as_bytes())
        );
        assert!(hash_file(&p.with_file_name("missing")).is_err());
    }
}
