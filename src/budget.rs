//! Run budgets and circuit breakers: iterations, active time, tokens and money for the run;
//! consecutive failures; K iterations in a row without file changes or with the same failure.
//!
//! What is spent is derived from the run's records when a run resumes, so budgets survive a
//! stop or a crash: a restart never hands the loop a fresh allowance (the peers' #244).

use crate::config::BudgetConfig;
use crate::record::{IterationRecord, Outcome};
pub use crate::state::Spent;
use std::time::{Duration, Instant};

/// Why the run must stop (or, for a breaker set to block, why the task is blocked).
#[derive(Debug, Clone, PartialEq)]
pub enum Exhausted {
    Iterations(u32),
    Duration(Duration),
    Tokens(u64),
    Cost(f64),
    ConsecutiveFailures(u32),
    /// A circuit breaker: iterations in a row that changed no file.
    NoChanges(u32),
    /// A circuit breaker: iterations in a row that failed the same way.
    SameFailure(u32),
}

impl Exhausted {
    /// Whether this is a circuit breaker (which `on_breaker = "block"` turns into a block).
    pub fn is_breaker(&self) -> bool {
        matches!(self, Exhausted::NoChanges(_) | Exhausted::SameFailure(_))
    }

    /// The flag and the ralph.toml key that raise this limit.
    pub fn how_to_raise(&self) -> &'static str {
        match self {
            Exhausted::Iterations(_) => "--max-iterations, or [budget] max_iterations in ralph.toml",
            Exhausted::Duration(_) => "--max-duration, or [budget] max_duration in ralph.toml",
            Exhausted::Tokens(_) => "--max-tokens, or [budget] max_tokens in ralph.toml",
            Exhausted::Cost(_) => "--max-cost, or [budget] max_cost in ralph.toml",
            Exhausted::ConsecutiveFailures(_) => "[budget] max_consecutive_failures in ralph.toml",
            Exhausted::NoChanges(_) => "[budget] max_no_change in ralph.toml",
            Exhausted::SameFailure(_) => "[budget] max_same_failure in ralph.toml",
        }
    }
}

impl std::fmt::Display for Exhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exhausted::Iterations(n) => write!(f, "the iteration budget ({n}) is spent"),
            Exhausted::Duration(d) => {
                write!(f, "the time budget ({}) is spent", humantime::format_duration(*d))
            }
            Exhausted::Tokens(n) => write!(f, "the token budget ({n}) is spent"),
            Exhausted::Cost(c) => write!(f, "the cost budget (${c:.2}) is spent"),
            Exhausted::ConsecutiveFailures(n) => write!(f, "{n} iterations in a row failed"),
            Exhausted::NoChanges(n) => write!(f, "{n} iterations in a row changed no file"),
            Exhausted::SameFailure(n) => write!(f, "{n} iterations in a row failed the same way"),
        }
    }
}

/// Limits, what was spent before this session, and this session's clock.
#[derive(Debug, Clone)]
pub struct Budget {
    pub limits: BudgetConfig,
    pub spent: Spent,
    before: Duration,
    session: Instant,
}

impl Budget {
    /// A budget with nothing spent, or resuming from `records` and `elapsed_ms` of a run.
    pub fn resume(limits: BudgetConfig, records: &[IterationRecord], elapsed_ms: u64) -> Self {
        let mut b = Self {
            limits,
            spent: Spent::default(),
            before: Duration::from_millis(elapsed_ms),
            session: Instant::now(),
        };
        for r in records {
            b.record(r);
        }
        b
    }

    /// Active time spent, this session included.
    pub fn elapsed(&self) -> Duration {
        self.before + self.session.elapsed()
    }

    /// What has been spent, with the time brought up to now.
    pub fn spent_now(&self) -> Spent {
        Spent {
            elapsed_ms: u64::try_from(self.elapsed().as_millis()).unwrap_or(u64::MAX),
            ..self.spent.clone()
        }
    }

    /// Whether another iteration may start.
    pub fn check(&self) -> Result<(), Exhausted> {
        let l = &self.limits;
        let s = &self.spent;
        if s.consecutive_failures >= l.max_consecutive_failures {
            return Err(Exhausted::ConsecutiveFailures(s.consecutive_failures));
        }
        if let Some(k) = l.max_no_change
            && s.no_change_streak >= k
        {
            return Err(Exhausted::NoChanges(s.no_change_streak));
        }
        if let Some(k) = l.max_same_failure
            && s.failure_streak >= k
        {
            return Err(Exhausted::SameFailure(s.failure_streak));
        }
        if s.iterations >= l.max_iterations {
            return Err(Exhausted::Iterations(l.max_iterations));
        }
        if let Some(d) = l.max_duration
            && self.elapsed() >= d
        {
            return Err(Exhausted::Duration(d));
        }
        if let Some(t) = l.max_tokens
            && s.tokens >= t
        {
            return Err(Exhausted::Tokens(t));
        }
        if let Some(c) = l.max_cost
            && s.cost_usd >= c
        {
            return Err(Exhausted::Cost(c));
        }
        Ok(())
    }

    /// Time left before the duration budget ends, if there is one.
    pub fn time_left(&self) -> Option<Duration> {
        self.limits.max_duration.map(|d| d.saturating_sub(self.elapsed()))
    }

    /// Spent and left, on one line for the live progress: "12.3k tokens · $0.42 · left: 17
    /// iterations, 5h 12m, $9.58".
    pub fn summary(&self) -> String {
        let s = self.spent_now();
        let mut left =
            vec![format!("{} iterations", self.limits.max_iterations.saturating_sub(s.iterations))];
        if let Some(d) = self.time_left() {
            left.push(humantime::format_duration(Duration::from_secs(d.as_secs())).to_string());
        }
        if let Some(t) = self.limits.max_tokens {
            left.push(format!("{} tokens", si(t.saturating_sub(s.tokens))));
        }
        if let Some(c) = self.limits.max_cost {
            left.push(format!("${:.2}", (c - s.cost_usd).max(0.0)));
        }
        format!("{} tokens · ${:.2} · left: {}", si(s.tokens), s.cost_usd, left.join(", "))
    }

    /// Counts a finished iteration.
    pub fn record(&mut self, r: &IterationRecord) {
        let s = &mut self.spent;
        s.tokens += r.tokens.map_or(0, |t| t.total());
        s.cost_usd += r.cost_usd.unwrap_or(0.0);
        // A skip ran no agent: nothing of the iteration budget, nor of a breaker's count.
        if matches!(r.outcome, Outcome::RateLimited | Outcome::Interrupted | Outcome::Skipped) {
            return;
        }
        s.iterations += 1;
        // A restart for the user's edit says nothing about the agent or the task.
        if r.outcome == Outcome::Restarted {
            return;
        }
        if r.outcome.counts_as_attempt() && r.commit.is_none() {
            s.consecutive_failures += 1;
            let sig = signature(r);
            if s.failure_signature.as_deref() == Some(sig.as_str()) {
                s.failure_streak += 1;
            } else {
                s.failure_signature = Some(sig);
                s.failure_streak = 1;
            }
        } else {
            s.consecutive_failures = 0;
            s.failure_signature = None;
            s.failure_streak = 0;
        }
        if r.files_changed.is_empty() {
            s.no_change_streak += 1;
        } else {
            s.no_change_streak = 0;
        }
    }

    /// Resets the breakers (after a breaker blocked a task, the next task starts clean).
    pub fn reset_breakers(&mut self) {
        self.spent.no_change_streak = 0;
        self.spent.failure_signature = None;
        self.spent.failure_streak = 0;
        self.spent.consecutive_failures = 0;
    }
}

/// A failure's signature: the task, the outcome, the typed cause and the failure text with
/// numbers (times, line numbers, pids) and spacing folded, so the same error twice matches. The
/// text is compared whole, never parsed: two red rounds of one cause with different failing
/// tests are progress, not a loop.
pub fn signature(r: &IterationRecord) -> String {
    let text = r.failure.as_deref().unwrap_or("");
    let folded: String = text
        .chars()
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    format!("{}|{}|{}|{folded}", r.task, r.outcome.as_str(), r.cause.map_or("", |c| c.as_str()))
}

/// 1234 → "1.2k", 1234567 → "1.2M".
pub fn si(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// The run's limits as `run.json` keeps them for `ralph status`.
impl From<&BudgetConfig> for crate::state::Limits {
    fn from(b: &BudgetConfig) -> Self {
        crate::state::Limits {
            max_iterations: b.max_iterations,
            max_duration_ms: b.max_duration.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            max_tokens: b.max_tokens,
            max_cost: b.max_cost,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Tokens;

    fn limits() -> BudgetConfig {
        BudgetConfig {
            max_iterations: 10,
            max_duration: None,
            max_attempts: 3,
            max_consecutive_failures: 5,
            max_tokens: None,
            max_cost: None,
            max_task_tokens: None,
            max_task_duration: None,
            max_no_change: None,
            max_same_failure: None,
            on_breaker: crate::config::OnBreaker::Stop,
            context_tokens: None,
        }
    }

    fn rec(outcome: Outcome, files: &[&str], failure: Option<&str>) -> IterationRecord {
        let mut r: IterationRecord = serde_json::from_value(serde_json::json!({
            "run_id": "r", "iteration": 1, "task": "t", "started_at": "", "ended_at": "", "duration_ms": 0,
            "exit_code": 0, "outcome": outcome, "checks": [], "head_before": null, "commit": null,
            "files_changed": files, "learnings_added": [], "promise": false, "failure": failure,
            "progress": null, "blocked": false, "output_leaked": false
        }))
        .unwrap();
        r.tokens = Some(Tokens { input: 100, output: 50, cache_read: 0, cache_write: 0 });
        r.cost_usd = Some(0.5);
        r
    }

    #[test]
    fn spending_resumes_from_the_records() {
        let mut l = limits();
        l.max_tokens = Some(400);
        l.max_cost = Some(10.0);
        let records = vec![rec(Outcome::Done, &["a"], None), rec(Outcome::RateLimited, &[], None)];
        let b = Budget::resume(l.clone(), &records, 60_000);
        assert_eq!(b.spent.iterations, 1);
        assert_eq!(b.spent.tokens, 300);
        assert_eq!(b.spent.cost_usd, 1.0);
        assert!(b.elapsed() >= Duration::from_secs(60));
        assert!(b.check().is_ok());
        let done = rec(Outcome::Done, &["a"], None);
        let b = Budget::resume(l, &[done.clone(), done.clone(), done], 0);
        assert_eq!(b.check(), Err(Exhausted::Tokens(400)));
    }

    #[test]
    fn duration_and_iterations_run_out() {
        let mut l = limits();
        l.max_duration = Some(Duration::from_secs(60));
        assert_eq!(
            Budget::resume(l.clone(), &[], 60_000).check(),
            Err(Exhausted::Duration(Duration::from_secs(60)))
        );
        l.max_iterations = 2;
        let b =
            Budget::resume(l, &[rec(Outcome::Progress, &["a"], None), rec(Outcome::Done, &["b"], None)], 0);
        assert_eq!(b.check(), Err(Exhausted::Iterations(2)));
    }

    #[test]
    fn breakers_trip_on_streaks() {
        let mut l = limits();
        l.max_no_change = Some(2);
        l.max_same_failure = Some(3);
        let b = Budget::resume(
            l.clone(),
            &[rec(Outcome::Progress, &[], None), rec(Outcome::Progress, &[], None)],
            0,
        );
        assert_eq!(b.check(), Err(Exhausted::NoChanges(2)));
        let f1 = rec(Outcome::ChecksFailed, &["a"], Some("test x failed at line 12 after 0.31s"));
        let f2 = rec(Outcome::ChecksFailed, &["a"], Some("test x failed at line 14 after 0.29s"));
        let b = Budget::resume(l.clone(), &[f1.clone(), f2.clone(), f1.clone()], 0);
        assert_eq!(b.check(), Err(Exhausted::SameFailure(3)));
        let other = rec(Outcome::ChecksFailed, &["a"], Some("another error"));
        let b = Budget::resume(l.clone(), &[f1.clone(), other, f2.clone()], 0);
        assert!(b.check().is_ok());
        // The same words from another cause are another failure.
        let mut timeout = f1.clone();
        timeout.cause = Some(crate::record::Cause::Timeout);
        let b = Budget::resume(l, &[f1, timeout, f2], 0);
        assert!(b.check().is_ok());
    }

    #[test]
    fn a_success_resets_consecutive_failures() {
        let mut l = limits();
        l.max_consecutive_failures = 2;
        let fail = rec(Outcome::AgentFailed, &["a"], Some("x"));
        let ok = rec(Outcome::Progress, &["a"], None);
        let b = Budget::resume(l.clone(), &[fail.clone(), ok, fail.clone()], 0);
        assert!(b.check().is_ok());
        let b = Budget::resume(l, &[fail.clone(), fail], 0);
        assert_eq!(b.check(), Err(Exhausted::ConsecutiveFailures(2)));
    }
}
