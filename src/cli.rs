//! Command-line parsing shared by the binaries: argh, with the exit codes their `--help` documents (0 after
//! printing help, the caller's usage code for a bad command line) and a clear message for non-UTF-8 arguments;
//! the option values they share (durations); the wording of OS errors in their one-line messages.

use std::io;
use std::time::Duration;

use argh::FromArgs;

/// Parses this process's arguments as `T` for the program `name`. On `--help` prints it and returns
/// `Err(0)`; on an error prints `name: ERROR` and `hint`, and returns `Err(usage_code)`.
pub fn parse<T: FromArgs>(name: &str, hint: &str, usage_code: i32) -> Result<T, i32> {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.into_string())
        .collect::<Result<_, _>>()
        .map_err(|a| {
            eprintln!(
                "{name}: argument {} is not valid UTF-8; pass paths and names in UTF-8",
                a.to_string_lossy()
            );
            usage_code
        })?;
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    T::from_args(&[name], &strs).map_err(|early| match early.status {
        Ok(()) => {
            print!("{}", early.output);
            if !early.output.ends_with('\n') {
                println!();
            }
            0
        }
        Err(()) => {
            eprintln!("{name}: {}", early.output.trim_end());
            eprintln!("{hint}");
            usage_code
        }
    })
}

/// A duration on a command line that [`parse_duration`] cannot read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurationError {
    /// Not of the form `24h`, `90m`, `1h30m`, `500ms` or plain seconds.
    Malformed(String),
    /// More milliseconds than a `u64` holds.
    TooLong(String),
}

impl std::fmt::Display for DurationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DurationError::Malformed(s) => write!(
                f,
                "{s:?} is not a duration; use e.g. 24h, 90m, 30s, 500ms or plain seconds"
            ),
            DurationError::TooLong(s) => write!(f, "{s:?} is too long a duration"),
        }
    }
}

impl std::error::Error for DurationError {}

/// Parses a duration option: `24h`, `90m` (or `90min`), `30s`, `500ms`, `2d`, combinations like `1h30m` (no
/// blanks inside), or plain seconds (`3600`). Blanks around it are ignored.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let malformed = || DurationError::Malformed(s.to_string());
    let too_long = || DurationError::TooLong(s.to_string());
    let t = s.trim();
    if t.is_empty() {
        return Err(malformed());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(1000))
            .map(Duration::from_millis)
            .ok_or_else(too_long);
    }
    let mut total: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let letters = rest[digits..]
            .bytes()
            .take_while(u8::is_ascii_alphabetic)
            .count();
        if digits == 0 || letters == 0 {
            return Err(malformed());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| too_long())?;
        let unit_ms: u64 = match &rest[digits..digits + letters] {
            "ms" => 1,
            "s" => 1000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(malformed()),
        };
        total = n
            .checked_mul(unit_ms)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(too_long)?;
        rest = &rest[digits + letters..];
    }
    Ok(Duration::from_millis(total))
}

/// An OS error's description for a one-line message: without Rust's "(os error N)" suffix, starting lowercase
/// (`permission denied`), so it reads inside a sentence.
pub fn os_reason(e: &io::Error) -> String {
    let s = match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_string(),
        None => e.to_string(),
    };
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ms = |s: &str| parse_duration(s).map(|d| d.as_millis() as u64);
        assert_eq!(ms("24h"), Ok(86_400_000));
        assert_eq!(ms("90m"), Ok(5_400_000));
        assert_eq!(ms("30s"), Ok(30_000));
        assert_eq!(ms("500ms"), Ok(500));
        assert_eq!(ms("2d"), Ok(172_800_000));
        assert_eq!(ms("1h30m"), Ok(5_400_000));
        assert_eq!(ms("1m30s250ms"), Ok(90_250));
        assert_eq!(ms("3600"), Ok(3_600_000));
        assert_eq!(ms(" 45 "), Ok(45_000));
        assert_eq!(ms("0"), Ok(0));
        assert_eq!(ms("5min"), Ok(300_000));
        for bad in ["", "h", "10x", "1.5h", "-3s", "s10", "10 s", "1h30"] {
            let e = parse_duration(bad).unwrap_err();
            assert_eq!(e, DurationError::Malformed(bad.into()));
            assert!(e.to_string().contains(bad.trim()), "{bad:?}: {e}");
        }
        for long in ["99999999999999999999", "999999999999999999d"] {
            let e = parse_duration(long).unwrap_err();
            assert_eq!(e, DurationError::TooLong(long.into()));
            assert_eq!(e.to_string(), format!("{long:?} is too long a duration"));
        }
    }

    #[test]
    fn os_reasons_read_as_text() {
        assert_eq!(
            os_reason(&io::Error::from_raw_os_error(libc::EACCES)),
            "permission denied"
        );
        assert_eq!(
            os_reason(&io::Error::from_raw_os_error(libc::ENOTDIR)),
            "not a directory"
        );
        assert_eq!(os_reason(&io::Error::other("Custom text")), "custom text");
    }
}
