//! The iteration record: one JSON line per iteration in `runs/<id>/iterations.jsonl`.
//! The schema is a contract (documented in the README); fields are only ever added.

pub use crate::agent::output::Tokens;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// How an iteration ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Checks green and the promise given: committed, task done.
    Done,
    /// Checks green, no promise: progress committed, the task continues.
    Progress,
    /// A check (or a commit hook) failed: reverted.
    ChecksFailed,
    /// The agent exited non-zero or could not start: reverted.
    AgentFailed,
    /// The wall-clock limit: reverted.
    Timeout,
    /// No output for the idle limit: reverted.
    IdleTimeout,
    /// Ctrl-C or a termination signal: reverted.
    Interrupted,
    /// A usage or rate limit: reverted, waited out, the task retried; no attempt used.
    RateLimited,
    /// The task's spec was edited while its agent worked (`[backlog] on_spec_edit =
    /// "restart"`): reverted, the task runs again with the new spec; no attempt used.
    Restarted,
    /// The `[hooks] before_iteration` hook exited non-zero: no agent ran, the task waits
    /// `[hooks] skip_wait` before it is tried again; no attempt used, no iteration of the
    /// budget spent.
    Skipped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Progress => "progress",
            Outcome::ChecksFailed => "checks_failed",
            Outcome::AgentFailed => "agent_failed",
            Outcome::Timeout => "timeout",
            Outcome::IdleTimeout => "idle_timeout",
            Outcome::Interrupted => "interrupted",
            Outcome::RateLimited => "rate_limited",
            Outcome::Restarted => "restarted",
            Outcome::Skipped => "skipped",
        }
    }

    /// Green outcomes keep the work.
    pub fn is_green(self) -> bool {
        matches!(self, Outcome::Done | Outcome::Progress)
    }

    /// Outcomes that use up one of the task's attempts.
    pub fn counts_as_attempt(self) -> bool {
        !self.is_green()
            && !matches!(
                self,
                Outcome::Interrupted | Outcome::RateLimited | Outcome::Restarted | Outcome::Skipped
            )
    }
}

/// Why an iteration that is not green ended as it did: the record's `cause`, beside the human
/// `failure` text, so that figures (`ralph stats`) never read the prose. Names are a contract
/// (snake_case strings, documented in the README): variants are only ever added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// A check failed (exited non-zero, timed out or could not start).
    ChecksFailed,
    /// A check that already failed on the clean tree (the baseline) names failing tests it did
    /// not name there.
    NewTestFailures,
    /// The agent exited non-zero, was killed by a signal, or reported an error.
    AgentExit,
    /// The agent could not be started.
    AgentNotStarted,
    /// The agent could not authenticate (a fatal agent error: the run stops).
    Auth,
    /// The agent's model does not exist (a fatal agent error: the run stops).
    ModelMissing,
    /// A usage or rate limit.
    RateLimited,
    /// The iteration's wall-clock limit (`[agent] timeout`).
    Timeout,
    /// The run's time budget ran out while the agent worked.
    TimeBudget,
    /// No output for `[agent] idle_timeout`.
    IdleTimeout,
    /// The agent changed what it must not touch: switched branch, rewrote history, put
    /// `.ralph/` into git, removed `.ralph/`, or changed ralph's protected files.
    FrameBroken,
    /// A gate: the work changed a protected path.
    ProtectedPath,
    /// A gate: the work deleted a test file.
    TestDeleted,
    /// A gate: the work added a skip or ignore marker.
    SkipMarker,
    /// A gate: a check's runner reported fewer tests than at the last green iteration.
    FewerTests,
    /// A gate: the work rewrote a task's spec.
    SpecRewritten,
    /// A gate: the work changed another task's status.
    StatusChanged,
    /// A gate: the work deleted a file another task made.
    OtherTaskWorkDeleted,
    /// The reviewer (`[review]`) rejected green work.
    ReviewRejected,
    /// `git commit` was refused (a hook failed).
    HookRejected,
    /// ralph was stopped (Ctrl-C, a termination signal, `ralph stop`).
    Interrupted,
    /// The task's spec was edited while its agent worked (`on_spec_edit = "restart"`).
    Restarted,
    /// ralph was killed mid-iteration; the next run recovered the iteration.
    Crashed,
    /// A parallel run's green work no longer applies on the target branch's new tip (another
    /// task landed first and changed the same lines).
    LandConflict,
    /// A parallel run's green work, rebased onto the target branch's new tip, fails the checks
    /// there (it breaks the build together with what landed first).
    LandChecksFailed,
    /// The `[hooks] before_iteration` hook exited non-zero (or timed out): the task was skipped.
    HookSkipped,
}

impl Cause {
    /// Every cause, in declaration order.
    pub const ALL: [Cause; 26] = [
        Cause::ChecksFailed,
        Cause::NewTestFailures,
        Cause::AgentExit,
        Cause::AgentNotStarted,
        Cause::Auth,
        Cause::ModelMissing,
        Cause::RateLimited,
        Cause::Timeout,
        Cause::TimeBudget,
        Cause::IdleTimeout,
        Cause::FrameBroken,
        Cause::ProtectedPath,
        Cause::TestDeleted,
        Cause::SkipMarker,
        Cause::FewerTests,
        Cause::SpecRewritten,
        Cause::StatusChanged,
        Cause::OtherTaskWorkDeleted,
        Cause::ReviewRejected,
        Cause::HookRejected,
        Cause::Interrupted,
        Cause::Restarted,
        Cause::Crashed,
        Cause::LandConflict,
        Cause::LandChecksFailed,
        Cause::HookSkipped,
    ];

    /// The name written in the record.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::ChecksFailed => "checks_failed",
            Cause::NewTestFailures => "new_test_failures",
            Cause::AgentExit => "agent_exit",
            Cause::AgentNotStarted => "agent_not_started",
            Cause::Auth => "auth",
            Cause::ModelMissing => "model_missing",
            Cause::RateLimited => "rate_limited",
            Cause::Timeout => "timeout",
            Cause::TimeBudget => "time_budget",
            Cause::IdleTimeout => "idle_timeout",
            Cause::FrameBroken => "frame_broken",
            Cause::ProtectedPath => "protected_path",
            Cause::TestDeleted => "test_deleted",
            Cause::SkipMarker => "skip_marker",
            Cause::FewerTests => "fewer_tests",
            Cause::SpecRewritten => "spec_rewritten",
            Cause::StatusChanged => "status_changed",
            Cause::OtherTaskWorkDeleted => "other_task_work_deleted",
            Cause::ReviewRejected => "review_rejected",
            Cause::HookRejected => "hook_rejected",
            Cause::Interrupted => "interrupted",
            Cause::Restarted => "restarted",
            Cause::Crashed => "crashed",
            Cause::LandConflict => "land_conflict",
            Cause::LandChecksFailed => "land_checks_failed",
            Cause::HookSkipped => "hook_skipped",
        }
    }

    /// Whether the cause is a gate's (or the frame's) catch of work that games the checks:
    /// evaluations score such a trial 0 whatever its own check says.
    pub fn is_gaming(self) -> bool {
        matches!(
            self,
            Cause::ProtectedPath
                | Cause::TestDeleted
                | Cause::SkipMarker
                | Cause::FewerTests
                | Cause::SpecRewritten
                | Cause::StatusChanged
                | Cause::OtherTaskWorkDeleted
                | Cause::FrameBroken
        )
    }

    /// The cause an outcome stands for when nothing more precise was found.
    pub fn of(outcome: Outcome) -> Option<Cause> {
        match outcome {
            Outcome::Done | Outcome::Progress => None,
            Outcome::ChecksFailed => Some(Cause::ChecksFailed),
            Outcome::AgentFailed => Some(Cause::AgentExit),
            Outcome::Timeout => Some(Cause::Timeout),
            Outcome::IdleTimeout => Some(Cause::IdleTimeout),
            Outcome::Interrupted => Some(Cause::Interrupted),
            Outcome::RateLimited => Some(Cause::RateLimited),
            Outcome::Restarted => Some(Cause::Restarted),
            Outcome::Skipped => Some(Cause::HookSkipped),
        }
    }
}

impl From<&crate::agent::limits::Fatal> for Cause {
    fn from(f: &crate::agent::limits::Fatal) -> Cause {
        match f {
            crate::agent::limits::Fatal::Auth(_) => Cause::Auth,
            crate::agent::limits::Fatal::ModelMissing(_) => Cause::ModelMissing,
        }
    }
}

/// One check command's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRecord {
    pub command: String,
    /// `null` when it was killed (timeout or interrupt).
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    /// When it started (RFC 3339, UTC, milliseconds); absent in records written before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
    /// The tests its runner reported failing (cargo test, nextest, pytest, go test, jest, vitest).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_tests: Vec<String>,
    /// It failed, but only as it already did on the clean tree (the baseline).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tolerated: bool,
}

/// The review stage's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub approved: bool,
    pub reasons: String,
}

/// One line of `iterations.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IterationRecord {
    pub run_id: String,
    pub iteration: u32,
    pub task: String,
    pub started_at: String,
    pub ended_at: String,
    pub duration_ms: u64,
    /// The agent's exit code; `null` when it was killed.
    pub exit_code: Option<i32>,
    pub outcome: Outcome,
    pub checks: Vec<CheckRecord>,
    /// The reviewer's verdict (`[review]`), when the checks passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<Review>,
    pub head_before: Option<String>,
    pub commit: Option<String>,
    /// HEAD when ralph was done with the iteration: `commit`, or a commit ralph made on its own
    /// after it (a red iteration's learnings, a block), else `head_before`. A next iteration
    /// that starts elsewhere started after a commit ralph did not make (`ralph stats` counts
    /// it). Absent in records written before it was added, and for a parallel run's worker
    /// or an iteration settled after a crash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_after: Option<String>,
    pub files_changed: Vec<String>,
    pub learnings_added: Vec<String>,
    /// Learnings the agent proposed that were not admitted, with the reason.
    #[serde(default)]
    pub learnings_rejected: Vec<crate::learnings::Rejected>,
    /// Whether the agent printed the completion promise.
    pub promise: bool,
    /// What failed, as shown to the next iteration.
    pub failure: Option<String>,
    /// Why, as a name: set on every record that is not green (absent in records written
    /// before it was added).
    #[serde(default)]
    pub cause: Option<Cause>,
    /// The agent's `<progress>` note.
    pub progress: Option<String>,
    /// Set when this iteration used the task's last attempt.
    pub blocked: bool,
    /// The task's spec was edited (by the user: the agent's tool calls did not write it) while
    /// the iteration ran.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub spec_edited: bool,
    /// The agent's output stayed open past the drain bound (an escaped grandchild).
    pub output_leaked: bool,
    /// Processes that escaped the agent's (or the checks') process group and outlived it
    /// (`setsid`, a double fork), which ralph ended.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub escaped_ended: u32,
    /// agent.log reached `[agent] max_log_size` and was cut.
    #[serde(default)]
    pub log_capped: bool,
    /// Tokens the agent reported using, when its output says.
    #[serde(default)]
    pub tokens: Option<Tokens>,
    /// What the agent reported the iteration cost, in US dollars.
    #[serde(default)]
    pub cost_usd: Option<f64>,
    /// Model turns, when the agent reports them.
    #[serde(default)]
    pub num_turns: Option<u32>,
    /// The model the agent used (reported, else configured).
    #[serde(default)]
    pub model: Option<String>,
    /// The agent that ran the iteration, by name (`[agents.NAME]`, else its preset's, else its
    /// program's file name): the main agent, a fallback, or the task's own `agent:`. Absent in
    /// records written before it was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The agent's own session or thread id.
    #[serde(default)]
    pub agent_session_id: Option<String>,
    /// The agent's final message (capped at 4 KiB).
    #[serde(default)]
    pub final_message: Option<String>,
    /// The agent reported an error, whatever its exit code.
    #[serde(default)]
    pub is_error: bool,
    /// For `rate_limited`: when the agent said the limit resets (RFC 3339), if it said.
    #[serde(default)]
    pub limit_resets_at: Option<String>,
    /// The parallel run's worker (`ralph run -j N`) that ran the iteration in its own
    /// worktree; absent for the single loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<u32>,
    /// The notes (`ralph note`) this iteration's prompt carried, once: each is an intervention
    /// (`ralph stats`). Absent when there were none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Appends one record as one line.
impl IterationRecord {
    /// A record with its identity and outcome and nothing else yet: no times, checks, commit,
    /// usage or messages; the cause the outcome stands for. Fill in the rest with struct update syntax.
    pub fn new(run_id: &str, iteration: u32, task: &str, outcome: Outcome) -> Self {
        IterationRecord {
            run_id: run_id.to_string(),
            iteration,
            task: task.to_string(),
            started_at: String::new(),
            ended_at: String::new(),
            duration_ms: 0,
            exit_code: None,
            outcome,
            checks: Vec::new(),
            review: None,
            head_before: None,
            commit: None,
            head_after: None,
            files_changed: Vec::new(),
            learnings_added: Vec::new(),
            learnings_rejected: Vec::new(),
            promise: false,
            failure: None,
            cause: Cause::of(outcome),
            progress: None,
            blocked: false,
            spec_edited: false,
            output_leaked: false,
            escaped_ended: 0,
            log_capped: false,
            tokens: None,
            cost_usd: None,
            num_turns: None,
            model: None,
            agent: None,
            agent_session_id: None,
            final_message: None,
            is_error: false,
            limit_resets_at: None,
            worker: None,
            notes: Vec::new(),
        }
    }
}

pub fn append(path: &Path, record: &IterationRecord) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut f = crate::fsx::append(path)?;
    // One write call per line, so a reader never sees half a record.
    f.write_all(&line)?;
    // On disk soon, without the loop waiting: a power cut before it costs at most the last
    // records, whose iterations the next run settles from their folders.
    drop(crate::state::sync_later(f));
    Ok(())
}

/// Reads all records of a run; a torn last line (a crash mid-write) is skipped.
pub fn read_all(path: &Path) -> Vec<IterationRecord> {
    let Ok(text) = crate::fsx::read_to_string(path) else { return Vec::new() };
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// What a summary of a run needs of each record (`ralph status`): the rest of the line is
/// skipped, not decoded, so that a history of thousands of iterations reads in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Brief {
    pub iteration: u32,
    pub task: String,
    pub outcome: Outcome,
}

/// The [`Brief`] of each record of a run; like [`read_all`], a torn line is skipped.
pub fn read_briefs(path: &Path) -> Vec<Brief> {
    let Ok(bytes) = crate::fsx::read(path) else { return Vec::new() };
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"run_id":"r","iteration":1,"task":"010-a","started_at":"2026-11-22T07:50:30.897Z","ended_at":"2026-11-22T07:50:31.006Z","duration_ms":109,"exit_code":0,"outcome":"progress","checks":[{"command":"true","exit_code":0,"duration_ms":1}],"head_before":"5b31a7c9cf520777ea0b38533915bfff84b36882","commit":null,"files_changed":["work.txt"],"learnings_added":[],"learnings_rejected":[],"promise":false,"failure":null,"progress":"half \"done\"","blocked":false,"output_leaked":false,"log_capped":false,"tokens":{"input":1,"output":2,"cache_read":3,"cache_write":4},"cost_usd":0.5,"num_turns":3,"model":"m","agent_session_id":"s","final_message":"é","is_error":false,"limit_resets_at":null}"#;

    #[test]
    fn causes_are_written_as_their_snake_case_names() {
        for c in Cause::ALL {
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
            assert_eq!(serde_json::from_str::<Cause>(&json).unwrap(), c);
        }
        assert_eq!(
            serde_json::to_string(&Cause::OtherTaskWorkDeleted).unwrap(),
            r#""other_task_work_deleted""#
        );
        assert_eq!(serde_json::to_string(&Cause::NewTestFailures).unwrap(), r#""new_test_failures""#);
        // No two causes share a name.
        let mut names: Vec<&str> = Cause::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Cause::ALL.len());
        // Every outcome that is not green stands for a cause, and a record names it.
        let r = IterationRecord::new("r", 1, "t", Outcome::Timeout);
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["cause"], "timeout");
        let green = serde_json::to_value(IterationRecord::new("r", 1, "t", Outcome::Done)).unwrap();
        assert_eq!(green["cause"], serde_json::Value::Null);
    }

    #[test]
    fn a_record_without_a_cause_still_loads() {
        // LINE was written before `cause` existed.
        assert!(!LINE.contains("\"cause\""));
        let r: IterationRecord = serde_json::from_str(LINE).unwrap();
        assert_eq!(r.cause, None);
    }

    #[test]
    fn briefs_are_the_records_summary_and_skip_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("iterations.jsonl");
        let first: IterationRecord = serde_json::from_str(LINE).unwrap();
        let mut second = first.clone();
        second.iteration = 2;
        second.task = "020-b".into();
        second.outcome = Outcome::ChecksFailed;
        append(&path, &first).unwrap();
        append(&path, &second).unwrap();
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&LINE.as_bytes()[..LINE.len() / 2]).unwrap();
        let full: Vec<Brief> = read_all(&path)
            .into_iter()
            .map(|r| Brief { iteration: r.iteration, task: r.task, outcome: r.outcome })
            .collect();
        assert_eq!(full.len(), 2);
        assert_eq!(read_briefs(&path), full);
        assert!(read_briefs(&dir.path().join("missing.jsonl")).is_empty());
    }
}
