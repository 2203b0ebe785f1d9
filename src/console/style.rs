//! How console output looks: the local time in front of each notice, colours (only on a terminal, and never
//! when `NO_COLOR` is set), and the bell.

use std::io::IsTerminal;

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// What a piece of text is, for its colour.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The time in front of a notice.
    Time,
    /// A nickname that sent us a message.
    Nick,
    /// Roster and connection notices.
    System,
    /// Good news: delivered, registered, online.
    Good,
    /// Waiting: queued, searching.
    Warn,
    /// Something failed.
    Error,
    /// A table header.
    Header,
}

/// The console's output style.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Style {
    /// Write ANSI colours.
    pub colour: bool,
    /// Ring the bell for a message addressed to us.
    pub bell: bool,
}

impl Style {
    /// No colours, no bell: for pipes and files.
    pub const PLAIN: Style = Style {
        colour: false,
        bell: false,
    };

    /// The style for standard output: colours when it is a terminal and `NO_COLOR` is unset or empty
    /// (<https://no-color.org>), the bell when it is a terminal.
    pub fn for_stdout() -> Style {
        let tty = std::io::stdout().is_terminal();
        Style::decide(tty, std::env::var_os("NO_COLOR").as_deref())
    }

    /// The style for an output that `is_tty` or not, given the value of `NO_COLOR`.
    pub fn decide(is_tty: bool, no_color: Option<&std::ffi::OsStr>) -> Style {
        Style {
            colour: is_tty && no_color.is_none_or(|v| v.is_empty()),
            bell: is_tty,
        }
    }

    /// `text` in the colour of `kind` (unchanged without colours).
    pub fn paint(&self, kind: Kind, text: &str) -> String {
        if !self.colour {
            return text.to_string();
        }
        let sgr = match kind {
            Kind::Time => "2",
            Kind::Nick => "1;36",
            Kind::System => "2",
            Kind::Good => "32",
            Kind::Warn => "33",
            Kind::Error => "1;31",
            Kind::Header => "1",
        };
        format!("\x1b[{sgr}m{text}\x1b[0m")
    }

    /// A notice: the local time of `wall_ms`, then `text` (painted as `kind`, or as it is for `None`).
    pub fn notice(&self, wall_ms: u64, kind: Option<Kind>, text: &str) -> String {
        let body = match kind {
            Some(k) => self.paint(k, text),
            None => text.to_string(),
        };
        format!("{} {body}", self.paint(Kind::Time, &hh_mm(wall_ms)))
    }
}

/// `HH:MM` of a Unix time in ms, in the local time zone (`TZ`, else `/etc/localtime`; UTC if neither says).
pub fn hh_mm(wall_ms: u64) -> String {
    hh_mm_in(wall_ms, &TimeZone::system())
}

/// `HH:MM` of a Unix time in ms, in `tz`. Times past year 9999 (jiff's range) read as the
/// latest time it holds.
fn hh_mm_in(wall_ms: u64, tz: &TimeZone) -> String {
    let t = i64::try_from(wall_ms)
        .ok()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .unwrap_or(Timestamp::MAX);
    let local = t.to_zoned_datetime(tz.clone());
    format!("{:02}:{:02}", local.hour(), local.minute())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn no_color_and_pipes_get_plain_text() {
        assert!(Style::decide(true, None).colour);
        assert!(Style::decide(true, Some(OsStr::new(""))).colour);
        assert!(!Style::decide(true, Some(OsStr::new("1"))).colour);
        assert!(!Style::decide(false, None).colour);
        assert!(!Style::decide(false, None).bell);
        assert_eq!(Style::PLAIN.paint(Kind::Error, "x"), "x");
        assert_eq!(
            Style::decide(true, None).paint(Kind::Error, "x"),
            "\x1b[1;31mx\x1b[0m"
        );
    }

    #[test]
    fn time_is_hours_and_minutes() {
        let t = hh_mm(1_700_000_000_000);
        assert_eq!(t.len(), 5, "{t}");
        assert_eq!(&t[2..3], ":");
        assert!(t[..2].parse::<u8>().unwrap() < 24 && t[3..].parse::<u8>().unwrap() < 60);
        // 2023-11-14T22:13:20Z, in UTC and at +05:30 (the next day there).
        assert_eq!(hh_mm_in(1_700_000_000_000, &TimeZone::UTC), "22:13");
        let ist = jiff::tz::Offset::from_seconds(5 * 3600 + 1800).unwrap();
        assert_eq!(hh_mm_in(1_700_000_000_000, &TimeZone::fixed(ist)), "03:43");
        assert_eq!(hh_mm_in(0, &TimeZone::UTC), "00:00");
        // Past the range: the latest time there is (9999-12-30T22:00Z), not a panic.
        assert_eq!(hh_mm_in(u64::MAX, &TimeZone::UTC), "22:00");
    }
}
