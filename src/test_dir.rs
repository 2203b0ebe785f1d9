//! A fresh directory under the system's temp dir for the crate's unit tests that touch files (the pidfile,
//! the log file, the saved roster), removed on drop even when the test fails.

use std::path::{Path, PathBuf};

/// See the module docs.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    /// `multiproto-{tag}-{pid}`, emptied first (a crashed earlier run may have left it).
    pub(crate) fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("multiproto-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("cannot create a temporary directory");
        TempDir(p)
    }

    /// Its path.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
