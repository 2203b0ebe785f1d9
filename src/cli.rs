//! Command-line parsing shared by the binaries: argh, with the exit codes their `--help` documents (0 after
//! printing help or the version, the caller's usage code for a bad command line; `-h` and `--version` everywhere)
//! and a clear message for non-UTF-8 arguments; the option values they share (durations, a daemon's
//! `HOST:PORT` with names resolved); the wording of OS errors in their one-line messages.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use argh::FromArgs;

/// Parses this process's arguments as `T` for the program `name`. `--version` (or `-V`) prints the name and
/// version and returns `Err(0)`; `--help` (or `-h`, where it is not an option's value) prints the help and
/// returns `Err(0)`; on an error prints `name: ERROR` and `hint`, and returns `Err(usage_code)`.
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
    match parse_args::<T>(name, &args) {
        Parsed::Args(t) => Ok(t),
        Parsed::Print(out) => {
            print!("{out}");
            if !out.ends_with('\n') {
                println!();
            }
            Err(0)
        }
        Parsed::Usage(e) => {
            eprintln!("{name}: {}", e.trim_end());
            eprintln!("{hint}");
            Err(usage_code)
        }
    }
}

/// What a command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<T> {
    /// Run with these arguments.
    Args(T),
    /// Print this (help, version) and exit 0.
    Print(String),
    /// A usage error, with its message: exit with the usage code.
    Usage(String),
}

/// [`parse`] without the process: `args` are the arguments after the program's name.
pub fn parse_args<T: FromArgs>(name: &str, args: &[String]) -> Parsed<T> {
    // Only before `--`: after it, every word is an operand (a message may well say "--version").
    let options = args.iter().take_while(|a| *a != "--");
    if options.clone().any(|a| a == "--version" || a == "-V") {
        return Parsed::Print(format!("{name} {}\n", env!("CARGO_PKG_VERSION")));
    }
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    match T::from_args(&[name], &strs) {
        Ok(t) => Parsed::Args(t),
        Err(early) if early.status.is_ok() => Parsed::Print(early.output),
        Err(early) => {
            // argh knows `--help` only: read `-h` as it, unless the line parses with `-h` as a value.
            if options.clone().any(|a| a == "-h") {
                let mut past = false;
                let swapped: Vec<&str> = strs
                    .iter()
                    .map(|&a| {
                        past |= a == "--";
                        if a == "-h" && !past { "--help" } else { a }
                    })
                    .collect();
                if let Err(help) = T::from_args(&[name], &swapped)
                    && help.status.is_ok()
                {
                    return Parsed::Print(help.output);
                }
            }
            Parsed::Usage(early.output)
        }
    }
}

/// A daemon's address on a command line: `HOST:PORT` or `HOST` alone (port `default_port`), where HOST is an
/// IP address or a name the resolver knows (`localhost`, a host name); an IPv4 address is preferred when a
/// name has both, as discovery and the daemon's default bind are IPv4.
pub fn parse_host_port(s: &str, default_port: u16) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    // A name, with or without a port (an IPv6 address with a port was handled above, in brackets).
    let with_port = match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => s.to_string(),
        Some((_, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            return Err(format!("{s}: the port must be 1-65535"));
        }
        _ => format!("{s}:{default_port}"),
    };
    if s.is_empty() || s.starts_with(':') {
        return Err(format!(
            "{s:?}: a host name or address is needed, e.g. localhost:{default_port}"
        ));
    }
    let addrs: Vec<SocketAddr> = with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {s}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{s} resolves to no address"))
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

/// Parses a size option: plain bytes (`1000000`) or a whole number with a binary unit, `K`, `M`, `G` or
/// `T` (optionally followed by `iB` or `B`, any case): `512M`, `10GiB`, `2t`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let bad = || format!("{s:?} is not a size (say 1000000, 512M, 10G or 2T)");
    if digits == 0 {
        return Err(bad());
    }
    let n: u64 = t[..digits].parse().map_err(|_| bad())?;
    let shift = match t[digits..].to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
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

    /// A command line with an option that takes a value, to tell `-h` as a value from `-h` as help.
    #[derive(FromArgs, Debug, PartialEq, Eq)]
    /// test
    struct Line {
        /// a value
        #[argh(option)]
        name: Option<String>,
        /// words
        #[argh(positional)]
        words: Vec<String>,
    }

    fn line(args: &[&str]) -> Parsed<Line> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse_args("t", &args)
    }

    #[test]
    fn version_help_and_usage_errors() {
        assert_eq!(
            line(&["--version"]),
            Parsed::Print(format!("t {}\n", env!("CARGO_PKG_VERSION")))
        );
        assert!(matches!(line(&["-V", "x"]), Parsed::Print(v) if v.starts_with("t ")));
        assert!(matches!(line(&["-h"]), Parsed::Print(h) if h.starts_with("Usage: t")));
        assert!(matches!(line(&["x", "--help"]), Parsed::Print(h) if h.starts_with("Usage: t")));
        // `-h` as an option's value is a value; after `--`, words are words.
        assert_eq!(
            line(&["--name", "-h"]),
            Parsed::Args(Line {
                name: Some("-h".into()),
                words: vec![]
            })
        );
        assert_eq!(
            line(&["--", "--version", "-h"]),
            Parsed::Args(Line {
                name: None,
                words: vec!["--version".into(), "-h".into()]
            })
        );
        assert!(matches!(line(&["--bogus"]), Parsed::Usage(e) if e.contains("--bogus")));
        assert!(matches!(line(&["--name"]), Parsed::Usage(_)));
    }

    #[test]
    fn daemon_addresses() {
        let a = |s: &str| parse_host_port(s, 9899);
        assert_eq!(a("10.1.2.3:9900"), Ok("10.1.2.3:9900".parse().unwrap()));
        assert_eq!(a(" 10.1.2.3 "), Ok("10.1.2.3:9899".parse().unwrap()));
        assert_eq!(a("[::1]:9900"), Ok("[::1]:9900".parse().unwrap()));
        assert_eq!(a("::1"), Ok("[::1]:9899".parse().unwrap()));
        // Names go to the resolver; localhost is in every /etc/hosts, and IPv4 is preferred.
        assert_eq!(a("localhost:9900"), Ok("127.0.0.1:9900".parse().unwrap()));
        assert_eq!(a("localhost"), Ok("127.0.0.1:9899".parse().unwrap()));
        for bad in ["", ":9899", "localhost:99999", "no-such-host.invalid"] {
            assert!(a(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size(" 10GiB "), Ok(10 << 30));
        assert_eq!(parse_size("2t"), Ok(2 << 40));
        assert_eq!(parse_size("4kb"), Ok(4096));
        for bad in ["", "M", "1.5G", "10X", "-1", "99999999999999999999"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(parse_size("20000000T").unwrap_err().contains("too large"));
    }

    proptest::proptest! {
        // A fixed seed: the same cases every run.
        #![proptest_config(proptest::test_runner::Config {
            rng_seed: proptest::test_runner::RngSeed::Fixed(16),
            ..proptest::test_runner::Config::default()
        })]

        /// Any text: a size or an error, never a panic; a number and a unit read as that many bytes, or
        /// as too large, never as something else.
        #[test]
        fn sizes_are_read_exactly_or_refused(
            text in "\\PC{0,24}",
            n in proptest::prelude::any::<u64>(),
            unit in 0usize..5,
        ) {
            let _ = parse_size(&text);
            let (suffix, shift) = [("", 0), ("K", 10), ("MiB", 20), ("g", 30), ("TB", 40)][unit];
            let typed = format!("{n}{suffix}");
            let got = parse_size(&typed);
            match n.checked_mul(1 << shift) {
                Some(bytes) => proptest::prop_assert_eq!(got, Ok(bytes)),
                None => proptest::prop_assert!(got.is_err()),
            }
        }
    }

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
