//! What a scenario measured and how it is shown: percentiles, a live progress line on a terminal, a table,
//! and the JSON lines DESIGN.md names.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One scenario's results at one N: the JSON keys of DESIGN.md first, then extra figures and the harness's
/// own checks (which also go into the JSON, so a script can see them).
#[derive(Clone, Debug)]
pub struct Figures {
    /// The scenario's name (`join`, `storm`, …).
    pub scenario: &'static str,
    /// Named values in the order they are shown.
    pub values: Vec<(&'static str, Value)>,
    /// Notes for the table (what a figure means, what was left out).
    pub notes: Vec<String>,
}

impl Figures {
    /// Empty figures for `scenario`.
    pub fn new(scenario: &'static str) -> Figures {
        Figures {
            scenario,
            values: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a value.
    pub fn set(&mut self, key: &'static str, v: impl Into<Value>) -> &mut Self {
        self.values.push((key, v.into()));
        self
    }

    /// Adds a duration in ms, rounded to µs.
    pub fn ms(&mut self, key: &'static str, d: Duration) -> &mut Self {
        self.set(key, round3(d.as_secs_f64() * 1e3))
    }

    /// A value by key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.values.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The JSON line: `{"scenario": name, …}`.
    pub fn json(&self) -> String {
        // Written by hand to keep the key order (serde_json's map sorts keys unless built with
        // `preserve_order`), so a person reading the line finds the scenario first.
        let mut s = format!("{{\"scenario\":{}", Value::from(self.scenario));
        for (k, v) in &self.values {
            s.push_str(&format!(",{}:{v}", Value::from(*k)));
        }
        s.push('}');
        s
    }

    /// A two-column table under a heading.
    pub fn table(&self) -> String {
        let width = self.values.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut s = format!("{}\n", self.scenario);
        for (k, v) in &self.values {
            let shown = match v {
                Value::Number(n) if n.is_f64() => format!("{:.3}", n.as_f64().unwrap_or(0.0)),
                Value::String(t) => t.clone(),
                other => other.to_string(),
            };
            s.push_str(&format!("  {k:<width$}  {shown}\n"));
        }
        for n in &self.notes {
            s.push_str(&format!("  note: {n}\n"));
        }
        s
    }
}

/// Rounds to three decimals, so JSON does not carry float noise.
pub fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

/// p50, p99 and max of a sample (nearest rank); zeros for an empty one.
pub fn summary(samples: &mut [Duration]) -> (Duration, Duration, Duration) {
    if samples.is_empty() {
        return (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    }
    samples.sort_unstable();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    (at(0.5), at(0.99), samples[samples.len() - 1])
}

/// A one-line live status on stderr when stderr is a terminal (redrawn at most ten times a second), and
/// nothing otherwise, so logs and CI output stay clean.
pub struct Progress {
    live: bool,
    last: Option<Instant>,
    phase: String,
}

impl Progress {
    /// Progress output, live if stderr is a terminal and `quiet` is false.
    pub fn new(quiet: bool) -> Progress {
        Progress {
            live: !quiet && std::io::stderr().is_terminal(),
            last: None,
            phase: String::new(),
        }
    }

    /// Starts a phase (ends the previous line).
    pub fn phase(&mut self, name: impl Into<String>) {
        self.done();
        self.phase = name.into();
        self.last = None;
        self.update(format_args!("…"));
    }

    /// Redraws the current phase's line with `status`, rate-limited.
    pub fn update(&mut self, status: std::fmt::Arguments<'_>) {
        if !self.live {
            return;
        }
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now - t < Duration::from_millis(100))
        {
            return;
        }
        self.last = Some(now);
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "\r\x1b[2K{}: {status}", self.phase);
        let _ = e.flush();
    }

    /// Ends the current line, if one is drawn.
    pub fn done(&mut self) {
        if self.live && self.last.is_some() {
            let _ = writeln!(std::io::stderr());
        }
        self.last = None;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.done();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_uses_nearest_rank() {
        let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let (p50, p99, max) = summary(&mut v);
        assert_eq!(p50, Duration::from_millis(51));
        assert_eq!(p99, Duration::from_millis(99));
        assert_eq!(max, Duration::from_millis(100));
        assert_eq!(summary(&mut []).2, Duration::ZERO);
    }

    #[test]
    fn json_starts_with_the_scenario() {
        let mut f = Figures::new("join");
        f.set("clients", 10)
            .ms("p50_ms", Duration::from_micros(1500));
        assert_eq!(f.json(), r#"{"scenario":"join","clients":10,"p50_ms":1.5}"#);
        assert!(f.table().contains("p50_ms"));
    }
}
