//! What `ralph run` shows while it works. On a terminal: a spinner line with the iteration,
//! task, phase and elapsed time, and one line per finished iteration above it. Elsewhere (a
//! pipe, CI, a log file): the same lines with a timestamp and no spinner.

use crate::record::{IterationRecord, Outcome};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// Receives the run's events.
pub trait Reporter {
    /// A free-form line (start-up notes, warnings).
    fn line(&mut self, text: &str);
    /// An iteration begins.
    fn iteration_started(&mut self, iteration: u32, task: &str, title: &str, attempt: u32);
    /// The iteration moves to another phase ("agent", "checks", "commit").
    fn phase(&mut self, phase: &str);
    /// An iteration ended.
    fn iteration_ended(&mut self, record: &IterationRecord);
}

/// The human reporter on stderr.
pub struct Human {
    tty: bool,
    /// The live spinner of the current iteration, on a terminal only.
    bar: Option<ProgressBar>,
    label: String,
    /// No phase since the iteration started: "agent started" was already said.
    fresh: bool,
}

impl Human {
    pub fn new() -> Self {
        let tty = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
        Self { tty, bar: None, label: String::new(), fresh: false }
    }

    fn print(&self, text: &str) {
        match (&self.bar, self.tty) {
            (Some(bar), _) => bar.println(text),
            (None, true) => eprintln!("{text}"),
            (None, false) => {
                let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
                eprintln!("[{now}] {text}");
            }
        }
    }
}

impl Default for Human {
    fn default() -> Self {
        Self::new()
    }
}

impl Reporter for Human {
    fn line(&mut self, text: &str) {
        self.print(text);
    }

    fn iteration_started(&mut self, iteration: u32, task: &str, title: &str, attempt: u32) {
        self.fresh = true;
        let attempt = if attempt > 1 { format!(" (attempt {attempt})") } else { String::new() };
        self.label = format!("iteration {iteration} · {task}{attempt}");
        if self.tty {
            let bar = ProgressBar::new_spinner();
            let style = ProgressStyle::with_template("{spinner} {msg} · {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(250));
            bar.set_message(format!("{} · {title} · agent", self.label));
            self.bar = Some(bar);
        } else {
            self.print(&format!("{} · {title}: agent started", self.label));
        }
    }

    fn phase(&mut self, phase: &str) {
        let fresh = std::mem::replace(&mut self.fresh, false);
        if fresh && phase == "agent" {
            return;
        }
        match &self.bar {
            Some(bar) => bar.set_message(format!("{} · {phase}", self.label)),
            None => self.print(&format!("{} · {phase}", self.label)),
        }
    }

    fn iteration_ended(&mut self, r: &IterationRecord) {
        let secs = r.duration_ms as f64 / 1000.0;
        let detail = match r.outcome {
            Outcome::Done | Outcome::Progress => match &r.commit {
                Some(c) => format!("committed {} ({} files)", &c[..c.len().min(8)], r.files_changed.len()),
                None => "no changes".to_string(),
            },
            _ => format!("reverted; {}", summary(r.failure.as_deref().unwrap_or(""))),
        };
        let mut line = format!(
            "iteration {} · {} → {} in {secs:.1}s: {detail}",
            r.iteration,
            r.task,
            r.outcome.as_str()
        );
        if !r.learnings_added.is_empty() {
            line.push_str(&format!("; {} learning(s) kept", r.learnings_added.len()));
        }
        if r.blocked {
            line.push_str("; task blocked");
        }
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.print(&line);
    }
}

/// A reporter that prints nothing (for callers that report on their own).
pub struct Silent;

impl Reporter for Silent {
    fn line(&mut self, _: &str) {}
    fn iteration_started(&mut self, _: u32, _: &str, _: &str, _: u32) {}
    fn phase(&mut self, _: &str) {}
    fn iteration_ended(&mut self, _: &IterationRecord) {}
}

/// One line for a multi-line failure: its first line and, when there is more, its last.
pub fn summary(failure: &str) -> String {
    let mut lines = failure.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("");
    match lines.next_back() {
        Some(last) => format!("{} {last}", first.trim_end_matches(':').to_string() + ":"),
        None => first.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn failure_summaries_fit_on_one_line() {
        assert_eq!(
            super::summary("`make` failed (exit 2):\nx\nerror: y\n"),
            "`make` failed (exit 2): error: y"
        );
        assert_eq!(super::summary("the agent exited with code 1"), "the agent exited with code 1");
    }
}
