//! Lines that arrive together (a bracketed paste, or several lines within a few milliseconds of each other)
//! are planned as a whole, so that a multi-line paste is not sent as a burst of messages without asking.
//!
//! The rule: lines before the first `msg` are commands; from a `msg NAME text` (or a bare `msg NAME`) on,
//! every line that is not itself a `msg` command is one more message to the same receiver. A plan with two
//! or more messages is confirmed first.

use std::net::SocketAddr;

use super::{Command, parse_command};
use crate::nick::Nick;
use crate::peer::Target;

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

    /// Whether it must be confirmed before it runs: a paste that would send two or more messages.
    pub fn needs_confirmation(&self) -> bool {
        self.lines > 1 && self.messages() > 1
    }

    /// The receivers, each once, in order of appearance.
    pub fn receivers(&self) -> Vec<Target> {
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
        format!(
            "that paste has {} lines: send them as {} messages to {}? [y/N]",
            self.lines,
            self.messages(),
            to.join(", ")
        )
    }
}

/// `msg NAME` with no text: the receiver, for the lines that follow.
fn bare_msg(line: &str) -> Option<Target> {
    let mut words = line.split_whitespace();
    if !matches!(words.next(), Some("msg" | "m")) {
        return None;
    }
    let to = words.next()?;
    if words.next().is_some() {
        return None;
    }
    match to.parse::<SocketAddr>() {
        Ok(a) => Some(Target::Addr(a)),
        Err(_) => Nick::new(to).ok().map(Target::Nick),
    }
}

/// Plans `text` (lines separated by `\n`, `\r\n` or `\r`).
pub fn plan(text: &str) -> Plan {
    let lines: Vec<&str> = text
        .split(['\n', '\r'])
        .filter(|l| !l.trim().is_empty())
        .collect();
    let mut p = Plan {
        lines: lines.len(),
        steps: Vec::new(),
    };
    let mut to: Option<Target> = None;
    for (i, line) in lines.iter().enumerate() {
        match parse_command(line) {
            Ok(Command::Msg(t, text)) => {
                to = Some(t);
                p.steps.push(Step::Run(Command::Msg(t, text)));
            }
            parsed => {
                if let Some(t) = to {
                    p.steps
                        .push(Step::Run(Command::Msg(t, line.trim().to_string())));
                } else if let Some(t) = bare_msg(line).filter(|_| i + 1 < lines.len()) {
                    to = Some(t);
                } else {
                    p.steps.push(match parsed {
                        Ok(c) => Step::Run(c),
                        Err(e) => Step::Error(e),
                    });
                }
            }
        }
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

    fn bob() -> Target {
        Target::Nick(Nick::new("bob").unwrap())
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
    fn continuation_lines_go_to_the_same_receiver_and_ask_first() {
        let p = plan("msg bob first line\nsecond line\r\nlist\n\n");
        assert_eq!(p.lines, 3);
        assert!(p.needs_confirmation());
        assert_eq!(
            p.steps,
            vec![
                Step::Run(Command::Msg(bob(), "first line".into())),
                Step::Run(Command::Msg(bob(), "second line".into())),
                Step::Run(Command::Msg(bob(), "list".into())),
            ]
        );
        assert_eq!(
            p.question(),
            "that paste has 3 lines: send them as 3 messages to bob? [y/N]"
        );
    }

    #[test]
    fn a_bare_msg_names_the_receiver_of_the_lines_after_it() {
        let p = plan("msg bob\nhello\nthere");
        assert_eq!(p.messages(), 2);
        assert_eq!(p.receivers(), vec![bob()]);
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
