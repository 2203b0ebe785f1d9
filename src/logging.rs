//! The daemon's log: fern behind the `log` crate, one line per event that matters, into a file that SIGHUP
//! reopens.
//!
//! A line reads `2026-11-25T05:12:03.123Z INFO  join: alice at …`: the time in UTC to the millisecond (RFC
//! 3339, so that the lines of daemons on machines in different zones sort together and tools can parse them),
//! the level padded to five characters, the message. Each line reaches the file in one `write`, so lines stay
//! whole when the file is shared (logrotate's `copytruncate`, a second writer).
//!
//! **Reopening.** logrotate moves the file away and sends SIGHUP; [`LogFile::reopen`] then opens the path
//! again, and every later line goes to the new file. Until then lines go to the moved one, so none is lost.
//!
//! **Level.** `--log-level`, else `$MULTIPROTO_LOG`, else `info` ([`level`]).
//!
//! Nothing here reads the clock except the line format (the wall clock, for the timestamp); nothing panics.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use log::LevelFilter;

/// The environment variable that sets the log level when no `--log-level` is given.
pub const LEVEL_ENV: &str = "MULTIPROTO_LOG";

/// An append-only log file shared by the logger and the SIGHUP handler, which reopens it (for logrotate).
/// Clones are handles to the same file.
#[derive(Clone)]
pub struct LogFile {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    path: PathBuf,
    file: File,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .open(path)
}

impl LogFile {
    /// Opens (creating it if needed, mode 0644) the log file at `path` for appending.
    pub fn open(path: impl Into<PathBuf>) -> io::Result<LogFile> {
        let path = path.into();
        let file = open_append(&path)?;
        Ok(LogFile {
            inner: Arc::new(Mutex::new(Inner { path, file })),
        })
    }

    /// The inner state; a writer that panicked mid-line leaves nothing inconsistent, so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The descriptor currently written to (a daemonizing process keeps it open while it closes the rest).
    pub fn raw_fd(&self) -> RawFd {
        self.lock().file.as_raw_fd()
    }

    /// Opens the path again (after logrotate moved the file away). On failure, logs the error into the old
    /// file, which stays in use.
    pub fn reopen(&self) {
        let mut inner = self.lock();
        match open_append(&inner.path) {
            Ok(f) => inner.file = f,
            Err(e) => {
                let path = inner.path.clone();
                drop(inner);
                log::error!(
                    "cannot reopen the log file {} on SIGHUP: {e}; still writing to the old one",
                    path.display()
                );
            }
        }
    }

    /// Appends `line` with one `write` (errors are dropped: there is nowhere left to report them).
    fn write_line(&self, line: &[u8]) {
        let _ = self.lock().file.write_all(line);
    }
}

/// `t` as the log writes it: `2026-11-25T05:12:03.123Z` (UTC, milliseconds truncated, not rounded). Times
/// before 1970 (a clock set far back) read as the epoch.
pub fn timestamp(t: SystemTime) -> String {
    let ts = jiff::Timestamp::try_from(t)
        .ok()
        .filter(|ts| ts.signum() >= 0)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    format!("{ts:.3}")
}

/// A log level that is not one of `off`, `error`, `warn`, `info`, `debug`, `trace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelError {
    /// What was given.
    pub given: String,
    /// Whether it came from [`LEVEL_ENV`] (the message then names the variable).
    pub from_env: bool,
}

impl fmt::Display for LevelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.from_env {
            write!(f, "{LEVEL_ENV}: ")?;
        }
        write!(
            f,
            "{:?} is not a log level; use one of off, error, warn, info, debug, trace",
            self.given
        )
    }
}

impl std::error::Error for LevelError {}

/// Parses a log level name (any case, surrounding blanks ignored).
pub fn parse_level(s: &str) -> Result<LevelFilter, LevelError> {
    s.trim().parse::<LevelFilter>().map_err(|_| LevelError {
        given: s.to_string(),
        from_env: false,
    })
}

/// The level to log at: `flag` (`--log-level`) if given, else `$MULTIPROTO_LOG` if set and not blank, else
/// `info`.
pub fn level(flag: Option<LevelFilter>) -> Result<LevelFilter, LevelError> {
    level_from(flag, std::env::var(LEVEL_ENV).ok().as_deref())
}

/// [`level`] with the environment variable's value passed in.
fn level_from(flag: Option<LevelFilter>, env: Option<&str>) -> Result<LevelFilter, LevelError> {
    if let Some(l) = flag {
        return Ok(l);
    }
    match env {
        Some(v) if !v.trim().is_empty() => parse_level(v).map_err(|e| LevelError {
            from_env: true,
            ..e
        }),
        _ => Ok(LevelFilter::Info),
    }
}

/// The logger: records at `level` and above, formatted as the module docs say, into `file` (and stderr too
/// when `stderr`).
fn dispatch(level: LevelFilter, file: &LogFile, stderr: bool) -> fern::Dispatch {
    let file = file.clone();
    let mut d = fern::Dispatch::new()
        .format(|out, message, record| {
            out.finish(format_args!(
                "{} {:<5} {}",
                timestamp(SystemTime::now()),
                record.level(),
                message
            ))
        })
        .level(level)
        .chain(fern::Output::call(move |record| {
            // One write per line, so lines stay whole.
            file.write_line(format!("{}\n", record.args()).as_bytes());
        }));
    if stderr {
        d = d.chain(io::stderr());
    }
    d
}

/// Sends the `log` crate's records to `file` (and to stderr when `stderr`), and logs panics as errors first
/// (`PROGRAM panicked: …`: stderr may be `/dev/null`, the log file is where a daemon's operator looks). Fails
/// only if a logger is already installed.
pub fn init(
    program: &'static str,
    level: LevelFilter,
    file: &LogFile,
    stderr: bool,
) -> Result<(), log::SetLoggerError> {
    dispatch(level, file, stderr).apply()?;
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        log::error!("{program} panicked: {info}");
        default_hook(info);
    }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    use crate::test_dir::TempDir;

    #[test]
    fn utc_timestamps() {
        let at = |s: u64, ns: u64| {
            timestamp(UNIX_EPOCH + Duration::from_secs(s) + Duration::from_nanos(ns))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 7_000_000), "2000-02-29T00:00:00.007Z");
        assert_eq!(at(1_700_000_000, 123_000_000), "2023-11-14T22:13:20.123Z");
        assert_eq!(at(1_709_251_199, 999_000_000), "2024-02-29T23:59:59.999Z");
        // Truncated, never rounded up into the next second (or day).
        assert_eq!(at(1_709_251_199, 999_999_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(at(4_102_444_800, 0), "2100-01-01T00:00:00.000Z");
        assert_eq!(at(1_798_173_123, 0), "2026-12-25T04:32:03.000Z");
        assert_eq!(
            timestamp(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn levels() {
        assert_eq!(parse_level("info"), Ok(LevelFilter::Info));
        assert_eq!(parse_level("DEBUG"), Ok(LevelFilter::Debug));
        assert_eq!(parse_level(" off "), Ok(LevelFilter::Off));
        assert_eq!(
            parse_level("loud").unwrap_err().to_string(),
            "\"loud\" is not a log level; use one of off, error, warn, info, debug, trace"
        );
        // The flag wins over the environment, which wins over the default; a blank variable is unset.
        let warn = Some(LevelFilter::Warn);
        assert_eq!(level_from(warn, Some("trace")), Ok(LevelFilter::Warn));
        assert_eq!(level_from(warn, Some("loud")), Ok(LevelFilter::Warn));
        assert_eq!(level_from(None, Some("trace")), Ok(LevelFilter::Trace));
        assert_eq!(level_from(None, Some("  ")), Ok(LevelFilter::Info));
        assert_eq!(level_from(None, None), Ok(LevelFilter::Info));
        let e = level_from(None, Some("loud")).unwrap_err();
        assert!(e.from_env);
        assert!(
            e.to_string().starts_with("MULTIPROTO_LOG: \"loud\" is not"),
            "{e}"
        );
    }

    /// Lines reach the file as `TIMESTAMP LEVEL MESSAGE`, below-level records do not, and after the file is
    /// moved away `reopen` sends the next lines to a new file at the path.
    #[test]
    fn lines_and_reopen() {
        let dir = TempDir::new("logging-lines");
        let path = dir.path().join("test.log");
        let file = LogFile::open(&path).unwrap();
        let (_, logger) = dispatch(LevelFilter::Info, &file, false).into_log();
        let emit = |level: log::Level, msg: &str| {
            logger.log(
                &log::Record::builder()
                    .level(level)
                    .args(format_args!("{msg}"))
                    .build(),
            );
        };
        let before = jiff::Timestamp::now();
        emit(log::Level::Info, "join: alice at 127.0.0.1:5000");
        emit(log::Level::Debug, "not at info");
        emit(log::Level::Warn, "two\nlines");
        let after = jiff::Timestamp::now();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text:?}");
        let (ts, rest) = lines[0].split_once(' ').unwrap();
        assert_eq!(rest, "INFO  join: alice at 127.0.0.1:5000");
        assert_eq!(ts.len(), "2026-11-25T05:12:03.123Z".len(), "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[19] == b'.', "{ts}");
        let t: jiff::Timestamp = ts.parse().unwrap();
        // Truncated to the millisecond, so compare at that precision.
        let ms = |t: jiff::Timestamp| t.as_millisecond();
        assert!(ms(before) <= ms(t) && ms(t) <= ms(after), "{ts}");
        assert!(lines[1].ends_with(" WARN  two"), "{}", lines[1]);
        assert_eq!(lines[2], "lines");

        let moved = dir.path().join("test.log.1");
        std::fs::rename(&path, &moved).unwrap();
        emit(log::Level::Error, "before the reopen");
        file.reopen();
        emit(log::Level::Error, "after the reopen");
        let old = std::fs::read_to_string(&moved).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert!(old.ends_with("ERROR before the reopen\n"), "{old:?}");
        assert_eq!(new.lines().count(), 1, "{new:?}");
        assert!(new.ends_with("ERROR after the reopen\n"), "{new:?}");
    }
}
