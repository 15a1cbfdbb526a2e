//! Run budgets: iterations, wall-clock duration and consecutive failures. Pure bookkeeping:
//! the runner asks before each iteration whether one more may start.

use std::time::Duration;

/// Why the run must stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exhausted {
    Iterations(u32),
    Duration(Duration),
    ConsecutiveFailures(u32),
}

impl std::fmt::Display for Exhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exhausted::Iterations(n) => write!(f, "the iteration budget ({n}) is spent"),
            Exhausted::Duration(d) => {
                write!(f, "the time budget ({}) is spent", humantime::format_duration(*d))
            }
            Exhausted::ConsecutiveFailures(n) => write!(f, "{n} iterations in a row failed"),
        }
    }
}

/// Limits and what has been spent.
#[derive(Debug, Clone)]
pub struct Budget {
    pub max_iterations: u32,
    pub max_duration: Option<Duration>,
    pub max_consecutive_failures: u32,
    pub iterations: u32,
    pub consecutive_failures: u32,
}

impl Budget {
    pub fn new(max_iterations: u32, max_duration: Option<Duration>, max_consecutive_failures: u32) -> Self {
        Self {
            max_iterations,
            max_duration,
            max_consecutive_failures,
            iterations: 0,
            consecutive_failures: 0,
        }
    }

    /// Whether another iteration may start after `elapsed`.
    pub fn check(&self, elapsed: Duration) -> Result<(), Exhausted> {
        if self.consecutive_failures >= self.max_consecutive_failures {
            return Err(Exhausted::ConsecutiveFailures(self.consecutive_failures));
        }
        if self.iterations >= self.max_iterations {
            return Err(Exhausted::Iterations(self.max_iterations));
        }
        if let Some(d) = self.max_duration
            && elapsed >= d
        {
            return Err(Exhausted::Duration(d));
        }
        Ok(())
    }

    /// Time left before the duration budget ends, if there is one.
    pub fn time_left(&self, elapsed: Duration) -> Option<Duration> {
        self.max_duration.map(|d| d.saturating_sub(elapsed))
    }

    /// Counts a finished iteration.
    pub fn record(&mut self, failed: bool) {
        self.iterations += 1;
        if failed {
            self.consecutive_failures += 1;
        } else {
            self.consecutive_failures = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterations_run_out() {
        let mut b = Budget::new(2, None, 5);
        assert!(b.check(Duration::ZERO).is_ok());
        b.record(false);
        b.record(false);
        assert_eq!(b.check(Duration::ZERO), Err(Exhausted::Iterations(2)));
    }

    #[test]
    fn duration_runs_out() {
        let b = Budget::new(10, Some(Duration::from_secs(60)), 5);
        assert!(b.check(Duration::from_secs(59)).is_ok());
        assert_eq!(b.check(Duration::from_secs(60)), Err(Exhausted::Duration(Duration::from_secs(60))));
        assert_eq!(b.time_left(Duration::from_secs(50)), Some(Duration::from_secs(10)));
    }

    #[test]
    fn a_success_resets_consecutive_failures() {
        let mut b = Budget::new(10, None, 2);
        b.record(true);
        b.record(false);
        b.record(true);
        assert!(b.check(Duration::ZERO).is_ok());
        b.record(true);
        assert_eq!(b.check(Duration::ZERO), Err(Exhausted::ConsecutiveFailures(2)));
    }
}
