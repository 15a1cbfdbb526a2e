//! What an agent's ending means for the iteration, before any check runs: a pure function of
//! what ralph saw (how the process ended, what the agent reported, what it broke), with no
//! process and no repository. The iteration acts on the [`Verdict`]: it runs the checks, or
//! records the failure, waits out a limit, ends the run, or runs the task again.

use crate::agent::limits::{Fatal, Limit, Signal};
use crate::process::Ending;
use crate::record::{Cause, Outcome};
use std::time::Duration;

/// What ralph saw of the agent's run, as the classification needs it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    /// The user edited the spec and the agent is to be restarted on the new one.
    pub restart: bool,
    /// What the agent broke that ralph put back (branch, history, `.ralph/`, the frame).
    pub broke: Option<String>,
    /// How the process ended; `Err` with why when it could not start.
    pub ending: Result<Ending, String>,
    pub exit_code: Option<i32>,
    /// The agent reported an error (structured output), whatever its exit code.
    pub is_error: bool,
    /// The agent's own error message, masked.
    pub error_message: Option<String>,
    /// A limit the agent reported in its structured output.
    pub reported_limit: Option<Limit>,
    /// What the agent's failure (or a text agent's last words) signals, read by the caller
    /// from its report and output (see `iteration::signal`).
    pub signal: Option<Signal>,
    /// The agent's last output, masked, for the failure text.
    pub tail: String,
    /// The wall-clock limit the agent ran under, and whether the run's time budget set it.
    pub timeout: Duration,
    pub budget_cuts: bool,
    pub idle_timeout: Duration,
    /// The context tokens reached and the budget, for an agent ended at its context budget.
    pub context: (u64, u64),
}

/// What the iteration does next.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// The spec was edited: the work is put back and the task runs again.
    Restarted,
    /// The checks judge the work. `promise`: whether the agent's promise counts.
    Check { promise: bool },
    /// The agent reached its context budget: the checks judge what it changed (if anything),
    /// its promise withdrawn; `note` is the handoff to the next iteration.
    Yielded { note: String },
    /// The agent failed. For a stopped agent (`Timeout`, `IdleTimeout`) whatever it left is
    /// still checked, and kept if green.
    Failed { outcome: Outcome, cause: Option<Cause>, failure: String },
    /// A usage or rate limit: wait it out, no attempt used.
    RateLimited { limit: Option<Limit>, failure: String },
    /// A failure no retry fixes (authentication, a missing model): the run ends.
    Fatal(Fatal),
    /// ralph was stopped.
    Interrupted,
}

impl Verdict {
    /// Whether the agent is stopped for the clock, its work kept if the checks pass on it.
    pub fn stopped(&self) -> bool {
        matches!(self, Verdict::Failed { outcome: Outcome::Timeout | Outcome::IdleTimeout, .. })
    }
}

/// The verdict on an agent's run. `text_agent`: its output carries no structured report, so
/// its last words are read for a limit or a fatal error even after a clean exit.
pub(crate) fn classify(seen: &Seen, text_agent: bool) -> Verdict {
    if seen.restart {
        return Verdict::Restarted;
    }
    let ending = match &seen.ending {
        Err(why) => {
            return Verdict::Failed {
                outcome: Outcome::AgentFailed,
                cause: Some(Cause::AgentNotStarted),
                failure: format!("the agent could not start: {why}"),
            };
        }
        Ok(e) => *e,
    };
    if let Some(broke) = seen.broke.clone().filter(|_| ending != Ending::Cancelled) {
        return Verdict::Failed {
            outcome: Outcome::AgentFailed,
            cause: Some(Cause::FrameBroken),
            failure: broke,
        };
    }
    let tail = &seen.tail;
    match ending {
        Ending::Cancelled => Verdict::Interrupted,
        // An agent that kept retrying a limit until ralph stopped it was limited, not hung.
        Ending::Timeout | Ending::IdleTimeout if seen.reported_limit.is_some() => {
            limited(seen.reported_limit.clone())
        }
        Ending::Yielded => Verdict::Yielded {
            note: format!(
                "the agent's context reached {} tokens (the budget is {}); ralph ended it so the next iteration starts fresh",
                seen.context.0, seen.context.1
            ),
        },
        Ending::Timeout => {
            let why =
                if seen.budget_cuts { "the run's time budget ran out" } else { "the iteration's time limit" };
            Verdict::Failed {
                outcome: Outcome::Timeout,
                cause: Some(if seen.budget_cuts { Cause::TimeBudget } else { Cause::Timeout }),
                failure: format!(
                    "the agent was stopped after {} ({why}); its last output:\n{tail}",
                    humantime::format_duration(seen.timeout)
                ),
            }
        }
        Ending::IdleTimeout => Verdict::Failed {
            outcome: Outcome::IdleTimeout,
            cause: None,
            failure: format!(
                "the agent printed nothing for {} and was stopped as hung; its last output:\n{tail}",
                humantime::format_duration(seen.idle_timeout)
            ),
        },
        Ending::Exited => {
            let failed = seen.exit_code != Some(0) || seen.is_error;
            if !failed && !text_agent {
                return Verdict::Check { promise: true };
            }
            match seen.signal.clone() {
                Some(Signal::Fatal(e)) => Verdict::Fatal(e),
                Some(Signal::Limit(l)) => limited(Some(l)),
                None if failed => {
                    let how = match seen.exit_code {
                        Some(0) => "reported an error (exit code 0)".to_string(),
                        Some(c) => format!("exited with code {c}"),
                        None => "was killed by a signal".to_string(),
                    };
                    let said =
                        seen.error_message.as_deref().map(|m| format!("; it said: {m}")).unwrap_or_default();
                    Verdict::Failed {
                        outcome: Outcome::AgentFailed,
                        cause: None,
                        failure: format!("the agent {how}{said}; its last output:\n{tail}"),
                    }
                }
                None => Verdict::Check { promise: true },
            }
        }
    }
}

fn limited(limit: Option<Limit>) -> Verdict {
    let failure = limit.as_ref().map(|l| format!("usage or rate limit: {}", l.message)).unwrap_or_default();
    Verdict::RateLimited { limit, failure }
}

/// How the iteration was judged: its outcome, why it is red, and what the loop acts on.
#[derive(Debug, Clone)]
pub(crate) struct Judgement {
    pub outcome: Outcome,
    pub failure: Option<String>,
    pub cause: Option<Cause>,
    pub limit: Option<Limit>,
    pub fatal: Option<Fatal>,
    /// The handoff ralph writes for the next iteration (an agent ended at its context budget).
    pub note: Option<String>,
    /// A stopped agent's work passed the checks: it is committed as progress.
    pub kept_after_stop: bool,
}

impl Judgement {
    pub fn new(outcome: Outcome) -> Judgement {
        Judgement {
            outcome,
            failure: None,
            cause: None,
            limit: None,
            fatal: None,
            note: None,
            kept_after_stop: false,
        }
    }
}

/// What the checks made of the work of a stopped agent (`Timeout`, `IdleTimeout`): an
/// interrupted round makes the iteration interrupted, a green one keeps the work, a red one
/// adds its reason to the agent's failure.
pub(crate) fn after_stop_checks(j: &mut Judgement, checked: Outcome, check_failure: Option<String>) {
    match checked {
        Outcome::Interrupted => (j.outcome, j.cause) = (Outcome::Interrupted, Some(Cause::Interrupted)),
        Outcome::Progress | Outcome::Done => j.kept_after_stop = true,
        _ => {
            if let (Some(f), Some(c)) = (j.failure.as_mut(), check_failure) {
                f.push_str("\nand the checks on what it left failed: ");
                f.push_str(&c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(ending: Ending, exit_code: Option<i32>) -> Seen {
        Seen {
            restart: false,
            broke: None,
            ending: Ok(ending),
            exit_code,
            is_error: false,
            error_message: None,
            reported_limit: None,
            signal: None,
            tail: "last words".into(),
            timeout: Duration::from_secs(60),
            budget_cuts: false,
            idle_timeout: Duration::from_secs(30),
            context: (900, 800),
        }
    }

    fn limit() -> Limit {
        Limit { reset_at: None, message: "slow down".into() }
    }

    #[test]
    fn a_clean_exit_goes_to_the_checks_with_its_promise() {
        assert_eq!(classify(&seen(Ending::Exited, Some(0)), false), Verdict::Check { promise: true });
        // A text agent that exited 0 and said nothing of a limit: the same.
        assert_eq!(classify(&seen(Ending::Exited, Some(0)), true), Verdict::Check { promise: true });
    }

    #[test]
    fn a_failed_exit_is_agent_failed_with_its_words() {
        let mut s = seen(Ending::Exited, Some(3));
        s.error_message = Some("boom".into());
        let Verdict::Failed { outcome, cause, failure } = classify(&s, false) else { panic!() };
        assert_eq!((outcome, cause), (Outcome::AgentFailed, None));
        assert!(failure.starts_with("the agent exited with code 3; it said: boom"), "{failure}");
        assert!(failure.ends_with("last words"));
        s.exit_code = None;
        let Verdict::Failed { failure, .. } = classify(&s, false) else { panic!() };
        assert!(failure.contains("was killed by a signal"));
        let mut s = seen(Ending::Exited, Some(0));
        s.is_error = true;
        let Verdict::Failed { failure, .. } = classify(&s, false) else { panic!() };
        assert!(failure.contains("reported an error (exit code 0)"));
    }

    #[test]
    fn an_agent_that_cannot_start_failed() {
        let mut s = seen(Ending::Exited, None);
        s.ending = Err("no such file".into());
        let v = classify(&s, false);
        assert_eq!(
            v,
            Verdict::Failed {
                outcome: Outcome::AgentFailed,
                cause: Some(Cause::AgentNotStarted),
                failure: "the agent could not start: no such file".into()
            }
        );
    }

    #[test]
    fn timeouts_name_what_cut_them_and_keep_work_checked() {
        let v = classify(&seen(Ending::Timeout, None), false);
        let Verdict::Failed { outcome, cause, failure } = &v else { panic!() };
        assert_eq!((*outcome, *cause), (Outcome::Timeout, Some(Cause::Timeout)));
        assert!(failure.contains("after 1m (the iteration's time limit)"), "{failure}");
        assert!(v.stopped());
        let mut s = seen(Ending::Timeout, None);
        s.budget_cuts = true;
        let Verdict::Failed { cause, failure, .. } = classify(&s, false) else { panic!() };
        assert_eq!(cause, Some(Cause::TimeBudget));
        assert!(failure.contains("the run's time budget ran out"));
        let v = classify(&seen(Ending::IdleTimeout, None), false);
        let Verdict::Failed { outcome, cause, failure } = &v else { panic!() };
        assert_eq!((*outcome, *cause), (Outcome::IdleTimeout, None));
        assert!(failure.contains("printed nothing for 30s"));
        assert!(v.stopped());
    }

    #[test]
    fn limits_are_rate_limited_whether_reported_or_said() {
        let mut s = seen(Ending::IdleTimeout, None);
        s.reported_limit = Some(limit());
        let v = classify(&s, false);
        assert_eq!(
            v,
            Verdict::RateLimited { limit: Some(limit()), failure: "usage or rate limit: slow down".into() }
        );
        assert!(!v.stopped());
        let mut s = seen(Ending::Exited, Some(1));
        s.signal = Some(Signal::Limit(limit()));
        assert!(matches!(classify(&s, false), Verdict::RateLimited { .. }));
        // A text agent's last words are read after a clean exit too.
        let mut s = seen(Ending::Exited, Some(0));
        s.signal = Some(Signal::Limit(limit()));
        assert!(matches!(classify(&s, true), Verdict::RateLimited { .. }));
        assert_eq!(classify(&s, false), Verdict::Check { promise: true });
    }

    #[test]
    fn a_fatal_signal_ends_the_run() {
        let mut s = seen(Ending::Exited, Some(1));
        s.signal = Some(Signal::Fatal(Fatal::Auth("bad key".into())));
        assert_eq!(classify(&s, false), Verdict::Fatal(Fatal::Auth("bad key".into())));
    }

    #[test]
    fn interrupted_restarted_and_yielded() {
        assert_eq!(classify(&seen(Ending::Cancelled, None), false), Verdict::Interrupted);
        // A broken frame does not turn an interrupted iteration into a failure.
        let mut s = seen(Ending::Cancelled, None);
        s.broke = Some("switched".into());
        assert_eq!(classify(&s, false), Verdict::Interrupted);
        s.restart = true;
        assert_eq!(classify(&s, false), Verdict::Restarted);
        let Verdict::Yielded { note } = classify(&seen(Ending::Yielded, None), false) else { panic!() };
        assert!(note.contains("reached 900 tokens (the budget is 800)"), "{note}");
    }

    #[test]
    fn a_broken_frame_fails_even_a_clean_exit() {
        let mut s = seen(Ending::Exited, Some(0));
        s.broke = Some("the agent switched branch".into());
        assert_eq!(
            classify(&s, false),
            Verdict::Failed {
                outcome: Outcome::AgentFailed,
                cause: Some(Cause::FrameBroken),
                failure: "the agent switched branch".into()
            }
        );
    }

    #[test]
    fn a_stopped_agents_work_is_kept_only_when_green() {
        let stopped = || Judgement {
            failure: Some("stopped".into()),
            cause: Some(Cause::Timeout),
            ..Judgement::new(Outcome::Timeout)
        };
        let mut j = stopped();
        after_stop_checks(&mut j, Outcome::Progress, None);
        assert!(j.kept_after_stop);
        assert_eq!(j.outcome, Outcome::Timeout);
        let mut j = stopped();
        after_stop_checks(&mut j, Outcome::ChecksFailed, Some("tests failed".into()));
        assert!(!j.kept_after_stop);
        assert_eq!(
            j.failure.as_deref(),
            Some("stopped\nand the checks on what it left failed: tests failed")
        );
        let mut j = stopped();
        after_stop_checks(&mut j, Outcome::Interrupted, None);
        assert_eq!((j.outcome, j.cause), (Outcome::Interrupted, Some(Cause::Interrupted)));
    }
}
