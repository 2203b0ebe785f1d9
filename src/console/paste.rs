//! Lines that arrive together (a bracketed paste, or several lines within a few milliseconds of each other)
//! are planned as a whole, so that a multi-line paste is not sent as a burst of messages without asking.
//!
//! The rule: lines before the first `msg` are commands; from a `msg NAME text` (or a bare `msg NAME`) on,
//! every line that is not itself a `msg` command continues that message, as it was pasted (its indentation,
//! and blank lines between lines, kept): a pasted paragraph or code block is one message with its newlines. A
//! line that is a `msg` command starts the next message. A paste of two or more lines that sends anything is
//! confirmed first.

use super::{Command, Dest, parse_command};

/// One thing a batch of lines asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Run a command (`Msg` included).
    Run(Command),
    /// A line that is not a command: say so.
    Error(super::CommandError),
}

/// What a batch of lines asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Non-empty lines in the batch.
    pub lines: usize,
    /// In order.
    pub steps: Vec<Step>,
}

impl Plan {
    /// How many messages the plan sends.
    pub fn messages(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| matches!(s, Step::Run(Command::Msg(..))))
            .count()
    }

    /// Whether it must be confirmed before it runs: a paste of two or more lines that sends a message.
    pub fn needs_confirmation(&self) -> bool {
        self.lines > 1 && self.messages() > 0
    }

    /// The receivers, each once, in order of appearance.
    pub fn receivers(&self) -> Vec<Dest> {
        let mut out = Vec::new();
        for s in &self.steps {
            if let Step::Run(Command::Msg(t, _)) = s
                && !out.contains(t)
            {
                out.push(*t);
            }
        }
        out
    }

    /// The question asked before running it.
    pub fn question(&self) -> String {
        let to: Vec<String> = self.receivers().iter().map(ToString::to_string).collect();
        let as_what = match self.messages() {
            1 => "one message".to_string(),
            n => format!("{n} messages"),
        };
        format!(
            "that paste has {} lines: send them as {as_what} to {}? [y/N]",
            self.lines,
            to.join(", ")
        )
    }
}

/// `msg NAME` with no text: the receiver, for the lines that follow.
fn bare_msg(line: &str) -> Option<Dest> {
    let mut words = line.split_whitespace();
    if !matches!(words.next(), Some("msg" | "m")) {
        return None;
    }
    let to = words.next()?;
    if words.next().is_some() {
        return None;
    }
    Dest::parse(to).ok()
}

/// Plans `text` (lines separated by `\n`, `\r\n` or `\r`).
pub fn plan(text: &str) -> Plan {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let all: Vec<&str> = text.split('\n').collect();
    let mut p = Plan {
        lines: all.iter().filter(|l| !l.trim().is_empty()).count(),
        steps: Vec::new(),
    };
    // The receiver of the message being written, and that message's step (none yet after a bare `msg NAME`).
    let mut to: Option<Dest> = None;
    let mut open: Option<usize> = None;
    // Blank lines seen since the message's last line: kept between its lines, dropped at its end.
    let mut blanks = 0;
    for (i, line) in all.iter().enumerate() {
        if line.trim().is_empty() {
            blanks += 1;
            continue;
        }
        match parse_command(line) {
            Ok(Command::Msg(t, text)) => {
                to = Some(t);
                open = Some(p.steps.len());
                p.steps.push(Step::Run(Command::Msg(t, text)));
            }
            parsed => {
                let continued = open.and_then(|k| match &mut p.steps[k] {
                    Step::Run(Command::Msg(_, text)) => Some(text),
                    _ => None,
                });
                if let Some(text) = continued {
                    text.push_str(&"\n".repeat(blanks + 1));
                    text.push_str(line.trim_end());
                } else if let Some(t) = to {
                    open = Some(p.steps.len());
                    p.steps
                        .push(Step::Run(Command::Msg(t, line.trim_end().to_string())));
                } else if let Some(t) =
                    bare_msg(line).filter(|_| all[i + 1..].iter().any(|l| !l.trim().is_empty()))
                {
                    to = Some(t);
                } else {
                    p.steps.push(match parsed {
                        Ok(c) => Step::Run(c),
                        Err(e) => Step::Error(e),
                    });
                }
            }
        }
        blanks = 0;
    }
    p
}

/// Whether an answer to the question means yes.
pub fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bob() -> Dest {
        Dest::One(crate::peer::Target::Nick(
            crate::nick::Nick::new("bob").unwrap(),
        ))
    }

    #[test]
    fn one_line_runs_as_typed() {
        let p = plan("msg bob hi");
        assert_eq!(p.lines, 1);
        assert!(!p.needs_confirmation());
        assert_eq!(p.steps, vec![Step::Run(Command::Msg(bob(), "hi".into()))]);
        // A trailing newline from a paste does not make it two lines.
        assert_eq!(plan("msg bob hi\n").lines, 1);
    }

    #[test]
    fn continuation_lines_are_one_message_as_pasted_and_ask_first() {
        let p = plan("msg bob first line\n    indented\r\n\nlist\n\n");
        assert_eq!(p.lines, 3);
        assert!(p.needs_confirmation());
        assert_eq!(
            p.steps,
            vec![Step::Run(Command::Msg(
                bob(),
                "first line\n    indented\n\nlist".into()
            ))]
        );
        assert_eq!(
            p.question(),
            "that paste has 3 lines: send them as one message to bob? [y/N]"
        );
        // A line that is a `msg` command starts the next message.
        let p = plan("msg bob one\ntwo\nmsg carol three");
        assert_eq!(p.messages(), 2);
        assert_eq!(
            p.question(),
            "that paste has 3 lines: send them as 2 messages to bob, carol? [y/N]"
        );
    }

    #[test]
    fn a_bare_msg_names_the_receiver_of_the_lines_after_it() {
        let p = plan("msg bob\nhello\n  there");
        assert_eq!(
            p.steps,
            vec![Step::Run(Command::Msg(bob(), "hello\n  there".into()))]
        );
        assert_eq!(p.receivers(), vec![bob()]);
        // A bare `msg NAME` with nothing after it is the usage error it is.
        assert!(matches!(plan("msg bob\n\n").steps[..], [Step::Error(_)]));
    }

    #[test]
    fn commands_without_messages_just_run() {
        let p = plan("list\nhelp\ndance");
        assert!(!p.needs_confirmation());
        assert_eq!(p.steps.len(), 3);
        assert!(matches!(p.steps[2], Step::Error(_)));
        assert!(is_yes(" Y ") && is_yes("yes") && !is_yes("") && !is_yes("no"));
    }
}
