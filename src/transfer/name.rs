//! The receiver's sanitising of the names a sender offers (the OFFER's name, each ENTRY's path) into paths
//! that stay inside the directory the receiver chose, and the numbering that keeps a received file from
//! overwriting one that is there already. Pure: the file system is asked nothing here (whether a name is taken
//! is the caller's closure), so every rule is tested and fuzzed on its own.
//!
//! # The rules
//!
//! A path is split into components at `/` **and at `\`**: a Windows sender's `a\b` means a folder `a`, and a
//! backslash kept inside a name would become a separator again the day the folder is copied to Windows, so
//! `..\x` is caught as the `..` it is. Then:
//!
//! - **Refused** ([`NameError`]), because no renaming makes them mean what the sender said and they only come
//!   from a broken or hostile sender: an absolute path (a leading separator, `\\server\share`, a drive `C:`),
//!   a `..` component, more than [`MAX_DEPTH`] components, more than [`MAX_PATH`] bytes in all.
//! - **Dropped**, because they mean nothing: empty components (`a//b`, a trailing `/`) and `.`.
//! - **Replaced by `_`**, character by character: control characters (NUL included), Unicode format
//!   characters (bidirectional overrides and isolates such as U+202E, zero-width characters, the BOM, soft
//!   hyphen, tag characters: general category Cf), the line and paragraph separators, and the characters
//!   Windows forbids in names, `< > : " | ? *` (a received folder must survive being copied to a USB stick or
//!   a Windows share; `:` also names NTFS streams).
//! - **Trimmed**: leading spaces, and trailing spaces and dots (Windows drops those, so `a.` and `a` would be
//!   one file there; a trailing space is invisible). A component of a path left empty (`...`, `" "`) becomes
//!   `_` (dropping it would move what is below it); a single name left empty becomes [`FALLBACK`].
//! - **Hidden at the top, no**: the first component never starts with `.` (it becomes `_`): a received
//!   `.bashrc` or `.ssh` would otherwise land, unseen, where a shell or SSH reads it if someone accepted into
//!   their home directory. Inside a received folder a leading dot is kept: `.gitignore` and `.git` are part
//!   of what was sent, and they land inside the new folder, not over anything of the receiver's.
//! - **Reserved names** of Windows (`CON`, `PRN`, `AUX`, `NUL`, `COM0`–`COM9`, `LPT0`–`LPT9`, `CONIN$`,
//!   `CONOUT$`, in any case, with any extension) get a leading `_`.
//! - **Over-long components** are cut to [`MAX_COMPONENT`] bytes at a char boundary, keeping the extension
//!   (see [`split_extension`]). The bound is well under Linux's 255-byte `NAME_MAX`, leaving room for what the
//!   receiver appends: a number (` (12)`) and a `.part` suffix while the file is incomplete.
//! - **An empty result** (`""`, `.`, `./`) becomes [`FALLBACK`].
//!
//! The result is a [`SafePath`]: only normal components, each non-empty, within bounds and free of the
//! characters above, so joined under any directory it stays under it. Sanitising is idempotent: a
//! [`SafePath`]'s text sanitises to itself. Unicode is not normalised (a name's bytes stay the sender's, bar
//! the replacements).
//!
//! # No overwriting
//!
//! [`unused_name`] tries the name, then `name (1)`, `name (2)`, … up to [`MAX_TRIES`], asking the caller's
//! closure whether each is taken. A file keeps its extension (`report (1).pdf`), and `.tar.*` counts as one
//! (`archive (1).tar.gz`); a directory is numbered at the end of its whole name (`v1.2 (1)`).

#![forbid(unsafe_code)]

use std::fmt;
use std::path::{Path, PathBuf};

/// Longest component after sanitising, in bytes (Linux allows 255; see the module documentation).
pub const MAX_COMPONENT: usize = 200;
/// Longest sanitised path in bytes, components joined by `/`: leaves room for the receiver's directory
/// within Linux's 4096-byte `PATH_MAX`.
pub const MAX_PATH: usize = 1024;
/// Most components in a sanitised path.
pub const MAX_DEPTH: usize = 32;
/// The name given to a path that sanitises to nothing.
pub const FALLBACK: &str = "unnamed";
/// Numbered names [`unused_name`] tries before giving up.
pub const MAX_TRIES: u32 = 1000;
/// Longest extension kept whole when a name is cut or numbered, dot included (`.torrent`, `.docx`; a
/// longer "extension" is more likely part of the name).
pub const MAX_EXTENSION: usize = 16;

/// What replaces a character or a name that cannot be kept.
const REPLACEMENT: char = '_';

/// Why an offered path was refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum NameError {
    /// It starts at a root (`/x`, `\x`, `\\server\share`) or a drive (`C:\x`).
    Absolute,
    /// A `..` component.
    ParentDir,
    /// More than [`MAX_DEPTH`] components.
    TooDeep,
    /// More than [`MAX_PATH`] bytes once sanitised.
    TooLong,
}

impl NameError {
    /// A short description, for a FAIL's reason and the receiver's message.
    pub fn as_str(self) -> &'static str {
        match self {
            NameError::Absolute => "an absolute path",
            NameError::ParentDir => "a path with '..' in it",
            NameError::TooDeep => "a path with too many folders in it",
            NameError::TooLong => "a path too long",
        }
    }
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for NameError {}

/// One sanitised name: non-empty, at most [`MAX_COMPONENT`] bytes, no separator, no `.` or `..`, none of the
/// replaced characters, no leading space, no trailing space or dot, not a reserved name, and no leading dot
/// (it is the name of something placed directly in the receiver's directory).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SafeName(String);

impl SafeName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SafeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SafeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A sanitised relative path: 1 ..= [`MAX_DEPTH`] components, each as a [`SafeName`] is (a leading dot is
/// allowed below the first), at most [`MAX_PATH`] bytes joined by `/`. It cannot name anything outside the
/// directory it is joined under.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SafePath(String);

impl SafePath {
    /// The components joined by `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The components, first to last.
    pub fn components(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.0.split('/')
    }

    /// The first component: the name placed directly in the receiver's directory.
    pub fn first(&self) -> &str {
        self.components().next().unwrap_or(FALLBACK)
    }

    /// The last component: the entry's own name.
    pub fn last(&self) -> &str {
        self.components().next_back().unwrap_or(FALLBACK)
    }

    /// How many components.
    pub fn depth(&self) -> usize {
        self.components().count()
    }

    /// The same path with its first component replaced (by a numbered name from [`unused_name`], so that
    /// every entry of a folder follows the folder's new name). `TooLong` if the result would exceed
    /// [`MAX_PATH`].
    pub fn with_first(&self, first: &SafeName) -> Result<SafePath, NameError> {
        let rest = self.0.split_once('/').map(|(_, rest)| rest);
        let joined = match rest {
            Some(rest) => format!("{first}/{rest}"),
            None => first.0.clone(),
        };
        if joined.len() > MAX_PATH {
            return Err(NameError::TooLong);
        }
        Ok(SafePath(joined))
    }

    /// `dir` with this path below it.
    pub fn under(&self, dir: &Path) -> PathBuf {
        let mut p = dir.to_path_buf();
        p.extend(self.components());
        p
    }
}

impl fmt::Display for SafePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SafePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Sanitises a relative path a sender offers (an ENTRY's), by the rules in the module documentation.
pub fn sanitise_path(offered: &str) -> Result<SafePath, NameError> {
    if offered.starts_with(['/', '\\']) {
        return Err(NameError::Absolute);
    }
    let mut out = String::new();
    let mut depth = 0;
    for (i, raw) in offered.split(['/', '\\']).enumerate() {
        if i == 0 && is_drive(raw) {
            return Err(NameError::Absolute);
        }
        match raw {
            "" | "." => continue,
            ".." => return Err(NameError::ParentDir),
            _ => {}
        }
        depth += 1;
        if depth > MAX_DEPTH {
            return Err(NameError::TooDeep);
        }
        if !out.is_empty() {
            out.push('/');
        }
        let c = component(raw, depth == 1);
        // A component of spaces and dots (`...`) names nothing, but dropping it would move what is below it.
        out.push_str(if c.is_empty() { "_" } else { &c });
        // Checked as it grows, so a hostile 4 KiB path costs no more than the bound.
        if out.len() > MAX_PATH {
            return Err(NameError::TooLong);
        }
    }
    if out.is_empty() {
        out.push_str(FALLBACK);
    }
    Ok(SafePath(out))
}

/// Sanitises a single name (the OFFER's: the file's or folder's own name) as the first component of a path
/// is, with any separator in it replaced rather than split on; [`FALLBACK`] if nothing is left of it. Never
/// fails: a name has nothing to refuse.
pub fn sanitise_name(offered: &str) -> SafeName {
    let s = component(offered, true);
    SafeName(if s.is_empty() { FALLBACK.into() } else { s })
}

/// `C:` (a drive, on Windows: `C:\x` is absolute, `C:x` relative to that drive's current directory).
fn is_drive(c: &str) -> bool {
    matches!(c.as_bytes(), [l, b':'] if l.is_ascii_alphabetic())
}

/// One component, by the rules of the module documentation (`top`: the first, which may not be hidden);
/// empty if nothing is left of it once trimmed (the caller decides what stands in).
fn component(raw: &str, top: bool) -> String {
    let replaced: String = raw
        .chars()
        .map(|c| if refused_char(c) { REPLACEMENT } else { c })
        .collect();
    let mut s = trim(&replaced).to_owned();
    if s.is_empty() {
        return s;
    }
    if top && s.starts_with('.') {
        s.replace_range(..1, "_");
    }
    if is_reserved(&s) {
        s.insert(0, REPLACEMENT);
    }
    cut(&s, MAX_COMPONENT)
}

/// Leading spaces, trailing spaces and dots removed.
fn trim(s: &str) -> &str {
    s.trim_start_matches(' ').trim_end_matches([' ', '.'])
}

/// Whether a character is replaced: controls, format characters, line and paragraph separators, path
/// separators (in a single name) and the characters Windows refuses in names.
fn refused_char(c: char) -> bool {
    c.is_control()
        || is_format(c)
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '/' | '\\' | '<' | '>' | ':' | '"' | '|' | '?' | '*'
        )
}

/// Unicode general category Cf (format characters), Unicode 15.1: invisible characters that change how
/// text around them is shown (bidirectional overrides and isolates, zero-width joiners and spaces, the BOM,
/// interlinear annotation, tags), so a name holding one can look like another (`exe.txt` shown for
/// `txt.exe` with U+202E).
fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

/// Windows' reserved device names, whatever the case and extension (`nul.txt` is the device too).
fn is_reserved(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or("").trim_end_matches(' ');
    let upper = stem.to_ascii_uppercase();
    match upper.as_str() {
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$" => true,
        // `get`, not `split_at`: the third byte may fall inside a character.
        _ => {
            matches!(upper.get(..3), Some("COM" | "LPT"))
                && matches!(
                    upper.get(3..),
                    Some(
                        "0" | "1" | "2" | "3" | "4" | "5" | "6" | "7" | "8" | "9" | "¹" | "²" | "³"
                    )
                )
        }
    }
}

/// A name's extension, as numbering and cutting keep it: from the last `.` that is not the first character,
/// at most [`MAX_EXTENSION`] bytes with no space in it, and with a `.tar` before it included (`.tar.gz`).
/// Returns (stem, extension); the extension is empty if there is none.
pub fn split_extension(name: &str) -> (&str, &str) {
    let Some(dot) = name.rfind('.').filter(|&d| d > 0) else {
        return (name, "");
    };
    let ext = &name[dot..];
    if ext.len() > MAX_EXTENSION || ext.contains(' ') {
        return (name, "");
    }
    let stem = &name[..dot];
    match stem.len().checked_sub(4) {
        Some(t) if t > 0 && stem.is_char_boundary(t) && stem[t..].eq_ignore_ascii_case(".tar") => {
            (&name[..t], &name[t..])
        }
        _ => (stem, ext),
    }
}

/// `name` cut to at most `max` bytes at a char boundary, the extension kept when the stem has room, and
/// trimmed again (a cut may end on a space or dot).
fn cut(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_owned();
    }
    let (stem, ext) = split_extension(name);
    let (stem, ext) = if ext.len() < max {
        (stem, ext)
    } else {
        (name, "")
    };
    let kept = trim(crate::utf8_prefix(stem, max - ext.len()));
    // The stem starts with a character that is not a space (leading spaces are trimmed first), and `max`
    // leaves room for it, so `kept` is empty only for a stem of dots, kept as the replacement.
    let kept = if kept.is_empty() { "_" } else { kept };
    format!("{kept}{ext}")
}

/// `name` numbered: `stem (n)ext` for a file (`keep_extension`), `name (n)` for a directory; the stem cut
/// so the result stays within [`MAX_COMPONENT`].
pub fn numbered(name: &SafeName, n: u32, keep_extension: bool) -> SafeName {
    let (stem, ext) = if keep_extension {
        split_extension(&name.0)
    } else {
        (name.0.as_str(), "")
    };
    let suffix = format!(" ({n})");
    let room = MAX_COMPONENT.saturating_sub(suffix.len() + ext.len());
    let stem = trim(crate::utf8_prefix(stem, room));
    let stem = if stem.is_empty() { "_" } else { stem };
    SafeName(format!("{stem}{suffix}{ext}"))
}

/// The first of `name`, `name (1)`, `name (2)`, … ([`numbered`]) that `taken` says is free, or `None` after
/// [`MAX_TRIES`] numbered names. `keep_extension`: number a file before its extension; a directory after its
/// whole name.
pub fn unused_name(
    name: &SafeName,
    keep_extension: bool,
    mut taken: impl FnMut(&SafeName) -> bool,
) -> Option<SafeName> {
    if !taken(name) {
        return Some(name.clone());
    }
    (1..=MAX_TRIES)
        .map(|n| numbered(name, n, keep_extension))
        .find(|c| !taken(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::path::Component;

    fn ok(s: &str) -> String {
        sanitise_path(s)
            .unwrap_or_else(|e| panic!("{s:?}: {e}"))
            .as_str()
            .to_owned()
    }

    fn name(s: &str) -> SafeName {
        sanitise_name(s)
    }

    #[test]
    fn the_issues_hostile_names() {
        // Climbing out, in any spelling.
        assert_eq!(sanitise_path("../../x"), Err(NameError::ParentDir));
        assert_eq!(sanitise_path("a/../../b"), Err(NameError::ParentDir));
        assert_eq!(sanitise_path("a/.."), Err(NameError::ParentDir));
        assert_eq!(sanitise_path("a\\..\\..\\b"), Err(NameError::ParentDir));
        assert_eq!(sanitise_path("\\..\\x"), Err(NameError::Absolute));
        // Absolute, on Unix and on Windows.
        assert_eq!(sanitise_path("/etc/passwd"), Err(NameError::Absolute));
        assert_eq!(sanitise_path("//x"), Err(NameError::Absolute));
        assert_eq!(
            sanitise_path("\\\\server\\share\\x"),
            Err(NameError::Absolute)
        );
        assert_eq!(sanitise_path("C:\\x"), Err(NameError::Absolute));
        assert_eq!(sanitise_path("c:/x"), Err(NameError::Absolute));
        assert_eq!(sanitise_path("C:"), Err(NameError::Absolute));
        // `C:x` is a name with a colon in it here, not a drive: the colon goes.
        assert_eq!(ok("C:x"), "C_x");
        // A 4 KB name is cut, its extension kept.
        let long = format!("{}.txt", "n".repeat(4096));
        let got = ok(&long);
        assert_eq!(got.len(), MAX_COMPONENT);
        assert!(got.ends_with("nnn.txt"), "{got}");
        // 4 KB of folders is too deep; a long folder path within the depth is too long.
        assert_eq!(sanitise_path(&"a/".repeat(2048)), Err(NameError::TooDeep));
        let deep = vec!["d".repeat(100); 11].join("/");
        assert_eq!(sanitise_path(&deep), Err(NameError::TooLong));
        assert!(sanitise_path(&vec!["d".repeat(100); 10].join("/")).is_ok());
        assert!(sanitise_path(&vec!["d"; MAX_DEPTH].join("/")).is_ok());
        assert_eq!(
            sanitise_path(&vec!["d"; MAX_DEPTH + 1].join("/")),
            Err(NameError::TooDeep)
        );
        // Control characters, NUL among them, and escape sequences lose their teeth.
        assert_eq!(ok("a\nb\tc\u{1b}[31m\u{7f}\u{85}"), "a_b_c_[31m__");
        assert_eq!(ok("nul\0here"), "nul_here");
        // A right-to-left override that would show `txt.exe` as `exe.txt`, and other format characters.
        assert_eq!(ok("photo\u{202E}gpj.exe"), "photo_gpj.exe");
        assert_eq!(ok("a\u{200B}b\u{FEFF}c\u{2066}d\u{E0041}"), "a_b_c_d_");
        assert_eq!(ok("line\u{2028}sep"), "line_sep");
        // Names of dots only, or spaces.
        assert_eq!(ok("..."), "_");
        assert_eq!(ok("a/..../b"), "a/_/b");
        assert_eq!(ok(" . ."), "_");
        assert_eq!(ok("a/   /b"), "a/_/b");
    }

    #[test]
    fn empty_and_current_components_are_dropped() {
        assert_eq!(ok("a//b/./c/"), "a/b/c");
        assert_eq!(ok("./a"), "a");
        assert_eq!(ok("a\\b"), "a/b");
        assert_eq!(ok(""), FALLBACK);
        assert_eq!(ok("."), FALLBACK);
        assert_eq!(ok("./."), FALLBACK);
        assert_eq!(name("").as_str(), FALLBACK);
        assert_eq!(name(" ..").as_str(), FALLBACK);
    }

    #[test]
    fn spaces_dots_and_windows_characters() {
        assert_eq!(ok("  a b  "), "a b");
        assert_eq!(ok("report.pdf."), "report.pdf");
        assert_eq!(ok("report.pdf . "), "report.pdf");
        assert_eq!(ok("what? <this>: \"a|b\"*"), "what_ _this__ _a_b__");
        // A leading dot: replaced at the top, kept inside a folder.
        assert_eq!(ok(".bashrc"), "_bashrc");
        assert_eq!(ok(".ssh/authorized_keys"), "_ssh/authorized_keys");
        assert_eq!(ok("project/.gitignore"), "project/.gitignore");
        assert_eq!(ok("project/.git/HEAD"), "project/.git/HEAD");
        assert_eq!(name(".profile").as_str(), "_profile");
        // A single name has no separators to split on: they are replaced.
        assert_eq!(name("../../x").as_str(), "_._.._x");
        assert_eq!(name("/etc/passwd").as_str(), "_etc_passwd");
        assert_eq!(name("a\\b").as_str(), "a_b");
    }

    #[test]
    fn reserved_names_are_prefixed() {
        for n in [
            "CON",
            "con",
            "Prn.txt",
            "aux.tar.gz",
            "NUL ",
            "nul .txt",
            "COM1",
            "lpt9.log",
            "COM¹",
            "conin$",
            "CONOUT$.x",
        ] {
            let got = ok(n);
            assert!(got.starts_with('_'), "{n:?} gave {got:?}");
            assert!(!is_reserved(&got));
        }
        for n in ["CONSOLE", "COM10", "LPT", "nul_", "com", "éCOM1", "COMé"] {
            assert!(!ok(n).starts_with('_'), "{n:?}");
        }
        assert_eq!(ok("dir/Aux"), "dir/_Aux");
    }

    #[test]
    fn long_names_are_cut_at_a_char_boundary_keeping_the_extension() {
        let got = ok(&format!("{}.tar.gz", "é".repeat(300)));
        assert!(
            got.len() <= MAX_COMPONENT && got.ends_with("é.tar.gz"),
            "{got}"
        );
        // No extension (or one too long to be one): cut at a char boundary.
        let got = ok(&"✓".repeat(100));
        assert_eq!(got, "✓".repeat(MAX_COMPONENT / 3));
        let got = ok(&format!("a.{}", "b".repeat(300)));
        assert_eq!(got.len(), MAX_COMPONENT);
        // A cut that ends on spaces or dots trims them.
        let got = ok(&format!(
            "{}{}x",
            "a".repeat(MAX_COMPONENT - 2),
            " ".repeat(10)
        ));
        assert_eq!(got, "a".repeat(MAX_COMPONENT - 2));
    }

    #[test]
    fn extensions() {
        assert_eq!(split_extension("report.pdf"), ("report", ".pdf"));
        assert_eq!(split_extension("archive.tar.gz"), ("archive", ".tar.gz"));
        assert_eq!(split_extension("archive.TAR.xz"), ("archive", ".TAR.xz"));
        assert_eq!(split_extension(".tar.gz"), (".tar", ".gz"));
        assert_eq!(split_extension("photo.2024.jpg"), ("photo.2024", ".jpg"));
        assert_eq!(split_extension(".gitignore"), (".gitignore", ""));
        assert_eq!(split_extension("Makefile"), ("Makefile", ""));
        assert_eq!(split_extension("v1. two"), ("v1. two", ""));
        assert_eq!(
            split_extension("a.verylongextension"),
            ("a.verylongextension", "")
        );
    }

    #[test]
    fn a_taken_name_gets_a_number() {
        let taken: HashSet<&str> = [
            "report.pdf",
            "report (1).pdf",
            "archive.tar.gz",
            "v1.2",
            "photos",
        ]
        .into();
        let free = |n: &str, keep| {
            unused_name(&name(n), keep, |c| taken.contains(c.as_str()))
                .unwrap()
                .as_str()
                .to_owned()
        };
        assert_eq!(free("new.pdf", true), "new.pdf");
        assert_eq!(free("report.pdf", true), "report (2).pdf");
        assert_eq!(free("archive.tar.gz", true), "archive (1).tar.gz");
        assert_eq!(free("v1.2", false), "v1.2 (1)");
        assert_eq!(free("photos", false), "photos (1)");
        // Bounded: every name taken gives up after MAX_TRIES numbered tries.
        let mut asked = 0;
        assert_eq!(
            unused_name(&name("x"), true, |_| {
                asked += 1;
                true
            }),
            None
        );
        assert_eq!(asked, MAX_TRIES + 1);
        // A numbered long name stays within the bound, its extension kept.
        let long = name(&format!("{}.txt", "é".repeat(200)));
        let n = numbered(&long, MAX_TRIES, true);
        assert!(n.as_str().len() <= MAX_COMPONENT && n.as_str().ends_with("é (1000).txt"));
    }

    #[test]
    fn safe_paths_stay_under_their_directory() {
        let dir = Path::new("/home/u/Downloads");
        let p = sanitise_path("photos/2024/a.jpg").unwrap();
        assert_eq!(p.under(dir), dir.join("photos/2024/a.jpg"));
        assert_eq!((p.first(), p.last(), p.depth()), ("photos", "a.jpg", 3));
        let q = p.with_first(&name("photos (1)")).unwrap();
        assert_eq!(q.as_str(), "photos (1)/2024/a.jpg");
        let single = sanitise_path("a.txt").unwrap();
        assert_eq!(
            single.with_first(&name("a (1).txt")).unwrap().as_str(),
            "a (1).txt"
        );
        let full = sanitise_path(&vec!["d".repeat(99); 10].join("/")).unwrap();
        assert_eq!(
            full.with_first(&name(&"e".repeat(150))),
            Err(NameError::TooLong)
        );
        for s in ["a/b", "x\\..\\y", "..", "/", "C:\\", "a/./../b"] {
            if let Ok(p) = sanitise_path(s) {
                let under = p.under(dir);
                assert!(under.starts_with(dir));
                assert!(
                    under
                        .strip_prefix(dir)
                        .unwrap()
                        .components()
                        .all(|c| matches!(c, Component::Normal(_)))
                );
            }
        }
    }

    #[test]
    fn sanitising_is_idempotent() {
        for s in [
            "a/b",
            ".bashrc",
            "CON.txt",
            "x\u{202E}y/ z ./.w",
            &"é".repeat(300),
            "a:b|c",
        ] {
            let p = sanitise_path(s).unwrap();
            assert_eq!(sanitise_path(p.as_str()).as_ref(), Ok(&p), "{s:?}");
            let n = sanitise_name(s);
            assert_eq!(sanitise_name(n.as_str()), n, "{s:?}");
        }
    }
}
