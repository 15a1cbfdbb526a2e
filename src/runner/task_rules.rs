//! The rules of a task across iterations, as pure functions of its state and one settled
//! iteration: attempts (kept work and waits use none), restarts in a row, done, the handoff to
//! the next iteration, its spending, and when it is blocked. Green work also sets the test
//! counts and the baseline the next iterations are held to. No process, no repository: the
//! iteration writes the block (a commit) and the state itself.

use crate::checks::Baseline;
use crate::config::BudgetConfig;
use crate::record::{CheckRecord, Outcome};
use crate::state::{LastIteration, State, TaskState};
use std::time::Duration;

/// One settled iteration, as the task's state takes it.
#[derive(Debug, Clone)]
pub(crate) struct Settled<'a> {
    pub outcome: Outcome,
    /// ralph committed the iteration's work.
    pub committed: bool,
    pub failure: Option<&'a str>,
    /// The handoff: the agent's progress note, else ralph's.
    pub progress: Option<String>,
    pub tokens: u64,
    pub elapsed_ms: u64,
    pub run_id: &'a str,
    pub iteration: u32,
    /// A fingerprint of the task's spec, kept when it is done.
    pub spec_fingerprint: String,
    /// The agent could not run at all (it could not authenticate, its model does not exist):
    /// that says nothing about the task, which uses no attempt and keeps its handoff, as for
    /// a usage limit (another agent of the fallback chain may take it next).
    pub agent_unusable: bool,
}

/// Folds a settled iteration into its task's state; returns why the task is now blocked, if
/// it is: `max_attempts` failed attempts, or its own limits (`max_task_tokens`,
/// `max_task_duration`). A done task is never blocked.
pub(crate) fn settle(
    ts: &mut TaskState,
    s: &Settled<'_>,
    max_attempts: u32,
    limits: &BudgetConfig,
) -> Option<String> {
    ts.iterations += 1;
    ts.restarts = if s.outcome == Outcome::Restarted { ts.restarts + 1 } else { 0 };
    // Kept work (a stopped agent's green changes) uses no attempt.
    let attempt_used = s.outcome.counts_as_attempt() && !s.committed && !s.agent_unusable;
    if attempt_used {
        ts.attempts += 1;
    }
    if s.outcome == Outcome::Done && s.committed {
        ts.attempts = 0;
        ts.blocked_by_ralph = false;
        ts.done_hash = Some(s.spec_fingerprint.clone());
    }
    // A limit says nothing about the task: the next try starts from the same handoff.
    if s.outcome != Outcome::RateLimited && !s.agent_unusable {
        ts.last = Some(LastIteration {
            run_id: s.run_id.to_string(),
            iteration: s.iteration,
            outcome: s.outcome.as_str().to_string(),
            failure: if s.outcome.is_green() { None } else { s.failure.map(str::to_string) },
            progress: s.progress.clone(),
        });
    }
    ts.tokens += s.tokens;
    ts.elapsed_ms += s.elapsed_ms;
    ts.counted = Some((s.run_id.to_string(), s.iteration));
    if s.outcome == Outcome::Done {
        None
    } else if attempt_used && ts.attempts >= max_attempts {
        let why = crate::reporter::summary(s.failure.unwrap_or(""));
        Some(format!("{} failed attempts; the last: {} ({why})", ts.attempts, s.outcome.as_str()))
    } else {
        over_task_limit(ts, limits)
    }
}

/// Why the task's own spending (`max_task_tokens`, `max_task_duration`) blocks it, if it does.
pub(crate) fn over_task_limit(ts: &TaskState, limits: &BudgetConfig) -> Option<String> {
    if let Some(max) = limits.max_task_tokens.filter(|m| ts.tokens >= *m) {
        return Some(format!("used {} tokens, over the task's limit of {max}", ts.tokens));
    }
    limits
        .max_task_duration
        .filter(|m| ts.elapsed_ms >= u64::try_from(m.as_millis()).unwrap_or(u64::MAX))
        .map(|m| {
            format!(
                "took {}, over the task's limit of {}",
                humantime::format_duration(Duration::from_secs(ts.elapsed_ms / 1000)),
                humantime::format_duration(m)
            )
        })
}

/// Green work committed as `sha` sets the test counts the next iterations must not fall
/// below, and, when a baseline was in force, its round is the baseline of `sha`: the failures
/// it tolerated, but none of a task's own acceptance checks (`strict`).
pub(crate) fn after_commit(
    state: &mut State,
    sha: &str,
    counts: Vec<(String, u64)>,
    baseline_in_force: bool,
    records: &[CheckRecord],
    strict: &[String],
) {
    for (cmd, n) in counts {
        state.test_counts.insert(cmd, n);
    }
    if baseline_in_force {
        let failing = records
            .iter()
            .filter(|c| c.tolerated && !strict.contains(&c.command))
            .map(|c| (c.command.clone(), c.failed_tests.clone()))
            .collect();
        state.baseline = Some(Baseline { head: sha.to_string(), failing });
    }
}

/// Tasks the user moved back to todo after ralph blocked them start over: fresh attempts and
/// allowances. True when one did.
pub(crate) fn unblock_by_hand(state: &mut State, backlog: &crate::backlog::Backlog) -> bool {
    let mut unblocked = false;
    for t in &backlog.tasks {
        let ts = state.task_mut(&t.id);
        if t.status == crate::backlog::Status::Todo && ts.blocked_by_ralph {
            ts.blocked_by_ralph = false;
            ts.block = None;
            ts.attempts = 0;
            ts.tokens = 0;
            ts.elapsed_ms = 0;
            unblocked = true;
        }
    }
    unblocked
}

/// A done task reopened (its spec changed since): it is no longer done, and starts over.
pub(crate) fn reopen(ts: &mut TaskState) {
    ts.done_hash = None;
    ts.attempts = 0;
    ts.tokens = 0;
    ts.elapsed_ms = 0;
    ts.blocked_by_ralph = false;
}

/// A commit of ralph's own files (learnings, a block) changes no code: the baseline of the
/// commit before holds for it, and the checks need not run again on the clean tree.
pub(crate) fn carry_baseline(state: &mut State, from: &str, to: &str) {
    if let Some(b) = state.baseline.as_mut()
        && b.head == from
    {
        b.head = to.to_string();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> BudgetConfig {
        BudgetConfig {
            max_iterations: 100,
            max_duration: None,
            max_tokens: None,
            max_cost: None,
            max_attempts: 3,
            max_task_tokens: None,
            max_task_duration: None,
            max_consecutive_failures: 5,
            max_no_change: None,
            max_same_failure: None,
            on_breaker: crate::config::OnBreaker::default(),
            context_tokens: None,
        }
    }

    fn it(outcome: Outcome, committed: bool) -> Settled<'static> {
        Settled {
            outcome,
            committed,
            failure: if outcome.is_green() { None } else { Some("it broke; details") },
            progress: Some("half way".into()),
            tokens: 100,
            elapsed_ms: 2_000,
            run_id: "r1",
            iteration: 7,
            spec_fingerprint: "fp".into(),
            agent_unusable: false,
        }
    }

    #[test]
    fn done_resets_attempts_and_remembers_the_spec() {
        let mut ts = TaskState { attempts: 2, blocked_by_ralph: true, ..Default::default() };
        assert_eq!(settle(&mut ts, &it(Outcome::Done, true), 3, &limits()), None);
        assert_eq!((ts.attempts, ts.blocked_by_ralph, ts.iterations), (0, false, 1));
        assert_eq!(ts.done_hash.as_deref(), Some("fp"));
        let last = ts.last.unwrap();
        assert_eq!((last.outcome.as_str(), last.failure, last.iteration), ("done", None, 7));
        assert_eq!((ts.tokens, ts.elapsed_ms, ts.counted), (100, 2_000, Some(("r1".into(), 7))));
    }

    #[test]
    fn progress_uses_no_attempt_and_hands_off_its_note() {
        let mut ts = TaskState { attempts: 1, ..Default::default() };
        assert_eq!(settle(&mut ts, &it(Outcome::Progress, true), 3, &limits()), None);
        assert_eq!(ts.attempts, 1);
        assert_eq!(ts.done_hash, None);
        assert_eq!(ts.last.unwrap().progress.as_deref(), Some("half way"));
    }

    #[test]
    fn failures_use_attempts_and_block_at_the_last() {
        for outcome in [Outcome::ChecksFailed, Outcome::AgentFailed, Outcome::Timeout, Outcome::IdleTimeout] {
            let mut ts = TaskState::default();
            assert_eq!(settle(&mut ts, &it(outcome, false), 2, &limits()), None);
            assert_eq!(ts.attempts, 1, "{outcome:?}");
            assert_eq!(ts.last.as_ref().unwrap().failure.as_deref(), Some("it broke; details"));
            let reason = settle(&mut ts, &it(outcome, false), 2, &limits()).unwrap();
            assert_eq!(
                reason,
                format!("2 failed attempts; the last: {} (it broke; details)", outcome.as_str())
            );
        }
    }

    #[test]
    fn a_stopped_agents_kept_work_uses_no_attempt() {
        for outcome in [Outcome::Timeout, Outcome::IdleTimeout] {
            let mut ts = TaskState { attempts: 2, ..Default::default() };
            assert_eq!(settle(&mut ts, &it(outcome, true), 3, &limits()), None);
            assert_eq!(ts.attempts, 2, "{outcome:?}");
            // Without kept work, the same ending uses the last attempt and blocks.
            assert!(settle(&mut ts, &it(outcome, false), 3, &limits()).is_some());
        }
    }

    #[test]
    fn limits_interruptions_and_restarts_use_no_attempt() {
        let mut ts = TaskState { attempts: 2, ..Default::default() };
        ts.last = Some(LastIteration {
            run_id: "r0".into(),
            iteration: 1,
            outcome: "checks_failed".into(),
            failure: Some("before".into()),
            progress: None,
        });
        assert_eq!(settle(&mut ts, &it(Outcome::RateLimited, false), 3, &limits()), None);
        // The handoff stays the one before the limit.
        assert_eq!(ts.last.as_ref().unwrap().iteration, 1);
        assert_eq!(settle(&mut ts, &it(Outcome::Interrupted, false), 3, &limits()), None);
        assert_eq!(ts.last.as_ref().unwrap().outcome, "interrupted");
        assert_eq!(settle(&mut ts, &it(Outcome::Restarted, false), 3, &limits()), None);
        assert_eq!(settle(&mut ts, &it(Outcome::Restarted, false), 3, &limits()), None);
        assert_eq!((ts.attempts, ts.restarts, ts.iterations), (2, 2, 4));
        settle(&mut ts, &it(Outcome::Progress, true), 3, &limits());
        assert_eq!(ts.restarts, 0);
    }

    #[test]
    fn an_agent_that_cannot_run_uses_no_attempt_and_keeps_the_handoff() {
        let mut ts = TaskState { attempts: 2, ..Default::default() };
        let failed = Settled { agent_unusable: true, ..it(Outcome::AgentFailed, false) };
        assert_eq!(settle(&mut ts, &failed, 3, &limits()), None, "the third attempt is not used");
        assert_eq!((ts.attempts, ts.iterations), (2, 1));
        assert!(ts.last.is_none());
        // An ordinary agent failure uses one, and here blocks the task.
        assert!(settle(&mut ts, &it(Outcome::AgentFailed, false), 3, &limits()).is_some());
    }

    #[test]
    fn the_tasks_own_limits_block_it() {
        let mut l = limits();
        l.max_task_tokens = Some(150);
        let mut ts = TaskState::default();
        assert_eq!(settle(&mut ts, &it(Outcome::Progress, true), 3, &l), None);
        let reason = settle(&mut ts, &it(Outcome::Progress, true), 3, &l).unwrap();
        assert_eq!(reason, "used 200 tokens, over the task's limit of 150");
        let mut l = limits();
        l.max_task_duration = Some(Duration::from_secs(3));
        let mut ts = TaskState::default();
        assert_eq!(settle(&mut ts, &it(Outcome::ChecksFailed, false), 3, &l), None);
        let reason = settle(&mut ts, &it(Outcome::ChecksFailed, false), 3, &l).unwrap();
        assert_eq!(reason, "took 4s, over the task's limit of 3s");
        // Done is never blocked, whatever it spent.
        let mut ts = TaskState { tokens: 10_000, ..Default::default() };
        let mut l = limits();
        l.max_task_tokens = Some(150);
        assert_eq!(settle(&mut ts, &it(Outcome::Done, true), 3, &l), None);
    }

    #[test]
    fn green_work_sets_counts_and_baseline() {
        let mut state = State::default();
        let rec = |cmd: &str, tolerated: bool| CheckRecord {
            command: cmd.into(),
            exit_code: Some(1),
            duration_ms: 1,
            started_at: None,
            timed_out: false,
            failed_tests: vec!["t1".into()],
            tolerated,
        };
        let records = [rec("cargo test", true), rec("strict", true), rec("lint", false)];
        after_commit(&mut state, "abc", vec![("cargo test".into(), 12)], true, &records, &["strict".into()]);
        assert_eq!(state.test_counts.get("cargo test"), Some(&12));
        let b = state.baseline.clone().unwrap();
        assert_eq!(b.head, "abc");
        assert_eq!(b.failing.keys().collect::<Vec<_>>(), ["cargo test"]);
        carry_baseline(&mut state, "abc", "def");
        assert_eq!(state.baseline.as_ref().unwrap().head, "def");
        carry_baseline(&mut state, "zzz", "ggg");
        assert_eq!(state.baseline.as_ref().unwrap().head, "def");
    }

    #[test]
    fn a_task_moved_back_to_todo_by_hand_starts_over_and_a_reopened_one_is_no_longer_done() {
        let spec = |id: &str, status| crate::backlog::Spec { id: id.into(), status, ..Default::default() };
        let backlog = crate::backlog::Backlog {
            tasks: vec![spec("a", crate::backlog::Status::Todo), spec("b", crate::backlog::Status::Blocked)],
        };
        let mut state = State::default();
        for id in ["a", "b"] {
            let ts = state.task_mut(id);
            ts.blocked_by_ralph = true;
            ts.attempts = 3;
            ts.tokens = 10;
        }
        assert!(unblock_by_hand(&mut state, &backlog));
        assert_eq!((state.task("a").attempts, state.task("a").blocked_by_ralph), (0, false));
        assert_eq!((state.task("b").attempts, state.task("b").blocked_by_ralph), (3, true), "still blocked");
        assert!(!unblock_by_hand(&mut state, &backlog), "once");
        let ts = state.task_mut("a");
        ts.done_hash = Some("h".into());
        ts.attempts = 2;
        reopen(ts);
        assert_eq!((ts.done_hash.as_deref(), ts.attempts), (None, 0));
    }
}
