//! What `ralph run` shows while it works. On a terminal: a live two-line display — the
//! iteration, task, phase, elapsed time, tokens and cost so far and the budgets left; under it
//! the agent's latest activity (its last tool call or message, from its structured output) —
//! and one line per finished iteration above it; while a usage limit is waited out, the time it
//! resets. Elsewhere (a pipe, CI, a log file): plain timestamped lines, the agent's tool calls
//! among them. Colour only on a terminal, and never with `NO_COLOR` set.

use crate::record::{IterationRecord, Outcome};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// The phases of an iteration, in the order they may come: what the live display shows and
/// what telemetry makes spans of. `Display` gives the words the display prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The project's checks on the clean tree, before the agent (the baseline).
    BaselineChecks,
    Agent,
    /// The gates and the checks on the agent's work.
    Checks,
    /// The `[review]` stage.
    Review,
    Commit,
    Revert,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::BaselineChecks => "baseline checks",
            Phase::Agent => "agent",
            Phase::Checks => "checks",
            Phase::Review => "review",
            Phase::Commit => "commit",
            Phase::Revert => "revert",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Receives the run's events.
pub trait Reporter {
    /// A free-form line (start-up notes, warnings).
    fn line(&mut self, text: &str);
    /// An iteration begins.
    fn iteration_started(&mut self, iteration: u32, task: &str, title: &str, attempt: u32);
    /// The iteration moves to another phase.
    fn phase(&mut self, phase: Phase);
    /// An iteration ended.
    fn iteration_ended(&mut self, record: &IterationRecord);
    /// The agent's latest activity: a tool call ("Bash cargo test") or the start of a message.
    fn activity(&mut self, text: &str, is_tool: bool);
    /// What the run has spent and has left, on one line (see [`crate::budget::Budget::summary`]).
    fn totals(&mut self, summary: &str);
    /// The loop waits for a usage limit to lift until `until`; `line` says so in words.
    fn waiting(&mut self, line: &str, until: std::time::SystemTime);
    /// A parallel run's workers, one line each, then the landing queue: the live display.
    fn workers(&mut self, _lines: &[String]) {}
}

/// The human reporter on stderr.
pub struct Human {
    tty: bool,
    color: bool,
    /// The live display of the current iteration (or wait), on a terminal only.
    bar: Option<ProgressBar>,
    label: String,
    phase: Phase,
    totals: String,
    activity: String,
    /// No phase since the iteration started: "agent started" was already said.
    fresh: bool,
}

/// Whether `NO_COLOR` asks for no colour (set and not empty, per no-color.org).
fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

impl Human {
    pub fn new() -> Self {
        let tty = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
        Self {
            tty,
            color: tty && !no_color(),
            bar: None,
            label: String::new(),
            phase: Phase::Agent,
            totals: String::new(),
            activity: String::new(),
            fresh: false,
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() }
    }

    /// Redraws the live display from the current state.
    fn refresh(&self) {
        if let Some(bar) = &self.bar {
            bar.set_message(live_message(&self.label, self.phase.as_str(), &self.totals));
            let activity = if self.activity.is_empty() { "…".to_string() } else { self.activity.clone() };
            bar.set_prefix(self.paint("2", &format!("  └ {activity}")));
        }
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
        self.phase = Phase::Agent;
        self.activity.clear();
        if self.tty {
            if let Some(old) = self.bar.take() {
                old.finish_and_clear();
            }
            let bar = ProgressBar::new_spinner();
            let style = ProgressStyle::with_template("{spinner} {msg} · {elapsed}\n{prefix}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(250));
            self.bar = Some(bar);
            self.print(&self.paint("1", &format!("{} · {title}", self.label)));
            self.refresh();
        } else {
            self.print(&format!("{} · {title}: agent started", self.label));
        }
    }

    fn phase(&mut self, phase: Phase) {
        self.phase = phase;
        let fresh = std::mem::replace(&mut self.fresh, false);
        if fresh && phase == Phase::Agent {
            return;
        }
        match &self.bar {
            Some(_) => self.refresh(),
            None => self.print(&format!("{} · {phase}", self.label)),
        }
    }

    fn activity(&mut self, text: &str, is_tool: bool) {
        // The agent's words reach the terminal: none of its control sequences may.
        let text = &crate::term::sanitize(text, false);
        self.activity = text.to_string();
        match &self.bar {
            Some(_) => self.refresh(),
            // In a log, the tool calls tell the story; the agent's prose stays in agent.log.
            None if is_tool => self.print(&format!("{} ·   {text}", self.label)),
            None => {}
        }
    }

    fn totals(&mut self, summary: &str) {
        self.totals = summary.to_string();
        self.refresh();
    }

    fn waiting(&mut self, line: &str, until: std::time::SystemTime) {
        if !self.tty {
            self.print(line);
            return;
        }
        if let Some(old) = self.bar.take() {
            old.finish_and_clear();
        }
        self.print(line);
        let left = until.duration_since(std::time::SystemTime::now()).unwrap_or_default();
        let bar = ProgressBar::new(left.as_secs().max(1));
        let style = ProgressStyle::with_template(
            "{spinner} waiting for the usage limit to lift · {msg} · {eta} left",
        )
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        bar.set_message(format!("resets {}", humantime::format_rfc3339_seconds(until)));
        bar.enable_steady_tick(Duration::from_millis(1000));
        // The bar advances with the clock; the next iteration's start clears it.
        let ticker = bar.clone();
        std::thread::spawn(move || {
            while !ticker.is_finished() {
                let gone = left
                    .saturating_sub(until.duration_since(std::time::SystemTime::now()).unwrap_or_default());
                ticker.set_position(gone.as_secs());
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        self.bar = Some(bar);
    }

    fn workers(&mut self, lines: &[String]) {
        if !self.tty {
            return;
        }
        if lines.is_empty() {
            if let Some(bar) = self.bar.take() {
                bar.finish_and_clear();
            }
            return;
        }
        let bar = self.bar.get_or_insert_with(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar
        });
        bar.set_message(lines.join("\n"));
    }

    fn iteration_ended(&mut self, r: &IterationRecord) {
        let secs = r.duration_ms as f64 / 1000.0;
        let detail = match r.outcome {
            Outcome::Done | Outcome::Progress => match &r.commit {
                Some(c) => format!("committed {} ({} files)", &c[..c.len().min(8)], r.files_changed.len()),
                None => "no changes".to_string(),
            },
            // No agent ran: nothing to revert.
            Outcome::Skipped => format!("not run; {}", summary(r.failure.as_deref().unwrap_or(""))),
            _ => format!("reverted; {}", summary(r.failure.as_deref().unwrap_or(""))),
        };
        let outcome = match r.outcome {
            Outcome::Done | Outcome::Progress => self.paint("32", r.outcome.as_str()),
            Outcome::RateLimited | Outcome::Interrupted | Outcome::Restarted | Outcome::Skipped => {
                self.paint("33", r.outcome.as_str())
            }
            _ => self.paint("31", r.outcome.as_str()),
        };
        let mut line = format!("iteration {} · {} → {outcome} in {secs:.1}s: {detail}", r.iteration, r.task);
        if let Some(t) = r.tokens {
            line.push_str(&format!(" · {} tokens", crate::budget::si(t.total())));
        }
        if let Some(c) = r.cost_usd {
            line.push_str(&format!(" · ${c:.2}"));
        }
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

/// The live display's first line: where the iteration is, and what the run has spent and left.
fn live_message(label: &str, phase: &str, totals: &str) -> String {
    if totals.is_empty() { format!("{label} · {phase}") } else { format!("{label} · {phase} · {totals}") }
}

/// A reporter that prints nothing (for callers that report on their own).
pub struct Silent;

impl Reporter for Silent {
    fn line(&mut self, _: &str) {}
    fn iteration_started(&mut self, _: u32, _: &str, _: &str, _: u32) {}
    fn phase(&mut self, _: Phase) {}
    fn iteration_ended(&mut self, _: &IterationRecord) {}
    fn activity(&mut self, _: &str, _: bool) {}
    fn totals(&mut self, _: &str) {}
    fn waiting(&mut self, _: &str, _: std::time::SystemTime) {}
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

    #[test]
    fn phases_read_as_the_words_the_display_always_printed() {
        use super::Phase;
        let words: Vec<String> =
            [Phase::BaselineChecks, Phase::Agent, Phase::Checks, Phase::Review, Phase::Commit, Phase::Revert]
                .iter()
                .map(Phase::to_string)
                .collect();
        assert_eq!(words, ["baseline checks", "agent", "checks", "review", "commit", "revert"]);
    }

    #[test]
    fn the_live_line_carries_phase_and_totals() {
        assert_eq!(
            super::live_message("iteration 3 · 020-b", "checks", "1.2k tokens · $0.10 · left: 7 iterations"),
            "iteration 3 · 020-b · checks · 1.2k tokens · $0.10 · left: 7 iterations"
        );
        assert_eq!(super::live_message("iteration 1 · a", "agent", ""), "iteration 1 · a · agent");
    }
}
