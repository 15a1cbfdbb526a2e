//! The figures of `ralph stats`: what the history of iteration records says about how well the
//! loop works — first-attempt success, iterations to done, why iterations fail, tokens and cost
//! per task, time per iteration, learnings, usage-limit waits — and the three signals of the
//! loop's health run by run (the trend): first-attempt success, iterations to resolution and
//! interventions, what a person did between or during runs.
//!
//! Invariants:
//! - `iterations.jsonl` is read a line at a time into one reused buffer, and each line is
//!   parsed into [`Line`], which borrows its strings from that buffer and skips every field the
//!   figures do not need; agent logs are never opened, git is never run. Besides the records,
//!   only each run's small `run.json` and the learnings store are read, once. Ten thousand
//!   iterations must stay well under the 50 ms the benchmark allows.
//! - Interventions are found from what ralph keeps, in one pass ([`Tracker`]): a record whose
//!   `head_before` is not where ralph left the branch (after the records of ralph's own
//!   commits are walked back), a `spec_edited` record, a done task that runs again (its spec
//!   was edited), a blocked task that runs again (unblocked), the sessions a person stopped
//!   (`run.json`), the store's learnings removed by hand, and the notes (`ralph note`) a
//!   record says its prompt carried. A record ralph cannot judge (an
//!   old one that may be followed by a commit of ralph's it does not name, a parallel run's) is
//!   never counted against the person.
//! - A line that does not parse (torn by a crash, edited by hand) is counted and skipped, never
//!   fatal.
//! - Runs are fed oldest first and records in file order: "iterations to done" carries a task's
//!   count across runs, so a task finished in the run after the one it started in counts whole.

use crate::record::{Cause, Outcome, Tokens};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Reading the records failed.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The part of an iteration record the figures need, borrowed from the line.
#[derive(Debug, Deserialize)]
pub struct Line<'a> {
    #[serde(borrow)]
    pub task: Cow<'a, str>,
    #[serde(borrow)]
    pub started_at: Cow<'a, str>,
    #[serde(borrow)]
    pub ended_at: Cow<'a, str>,
    pub duration_ms: u64,
    #[serde(default)]
    pub exit_code: Option<i32>,
    pub outcome: Outcome,
    #[serde(default, borrow)]
    pub checks: Vec<LineCheck<'a>>,
    /// Only counted: `IgnoredAny` is zero-sized, so the vector never allocates.
    #[serde(default)]
    pub learnings_added: Vec<IgnoredAny>,
    #[serde(default, borrow)]
    pub failure: Option<Cow<'a, str>>,
    /// Absent in records written before it was added: then, and only then, `failure` is read.
    #[serde(default)]
    pub cause: Option<Cause>,
    #[serde(default)]
    pub blocked: bool,
    #[serde(default)]
    pub tokens: Option<Tokens>,
    #[serde(default)]
    pub cost_usd: Option<f64>,
    #[serde(default, borrow)]
    pub head_before: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub commit: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub head_after: Option<Cow<'a, str>>,
    #[serde(default)]
    pub spec_edited: bool,
    #[serde(default)]
    pub worker: Option<u32>,
    /// The agent that ran it (absent in records written before it was added).
    #[serde(default, borrow)]
    pub agent: Option<Cow<'a, str>>,
    /// Only counted, like `learnings_added`.
    #[serde(default)]
    pub notes: Vec<IgnoredAny>,
}

/// The part of a check record the failure cause needs.
#[derive(Debug, Deserialize)]
pub struct LineCheck<'a> {
    #[serde(borrow)]
    pub command: Cow<'a, str>,
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub timed_out: bool,
    #[serde(default)]
    pub tolerated: bool,
}

/// Mean, median, 90th percentile and maximum (nearest-rank percentiles).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spread {
    pub mean: f64,
    pub median: u64,
    pub p90: u64,
    pub max: u64,
}

impl Spread {
    /// `None` for no values. Sorts `values`.
    pub fn of(values: &mut [u64]) -> Option<Spread> {
        if values.is_empty() {
            return None;
        }
        values.sort_unstable();
        let n = values.len();
        let rank = |p: f64| values[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
        let sum: u128 = values.iter().map(|&v| u128::from(v)).sum();
        Some(Spread { mean: sum as f64 / n as f64, median: rank(0.5), p90: rank(0.9), max: values[n - 1] })
    }
}

/// Tasks seen and done.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskFigures {
    /// Distinct tasks with at least one iteration.
    pub seen: u64,
    /// Times a task was done (a task reopened after its spec changed and done again counts again).
    pub done: u64,
    /// Of those, done on the first iteration that worked on it.
    pub done_first_iteration: u64,
    /// `done_first_iteration / done`; `null` with nothing done.
    pub first_attempt_success_rate: Option<f64>,
}

/// Failed iterations of one outcome with one cause.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureCause {
    pub outcome: Outcome,
    /// A short label: the cause, with which check failed or how the agent exited.
    pub cause: String,
    /// The records' `cause`; for records written before it existed, what their failure text
    /// says, `null` when it says none.
    pub kind: Option<Cause>,
    pub count: u64,
}

/// Tokens as the agents reported them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenFigures {
    pub total: u64,
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    /// Iterations whose agent reported tokens; the figures below are `null` when none did.
    pub iterations_reporting: u64,
    pub per_task: Option<f64>,
    pub per_done_task: Option<f64>,
}

/// Cost in US dollars as the agents reported it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostFigures {
    pub total: f64,
    pub iterations_reporting: u64,
    pub per_task: Option<f64>,
    pub per_done_task: Option<f64>,
}

/// Usage and rate limits waited out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateLimits {
    /// `rate_limited` iterations.
    pub waits: u64,
    /// From the end of each to the start of the next iteration of its run.
    pub waited_ms: u64,
}

/// One task's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskStats {
    pub task: String,
    pub iterations: u32,
    /// Iterations that used an attempt (failed ones, not interrupted or rate-limited).
    pub attempts: u32,
    /// Iterations each time it was done.
    pub iterations_to_done: Vec<u32>,
    /// Iterations since it was last done (or since its first, if never): still open work.
    pub open_iterations: u32,
    pub last_outcome: Outcome,
    /// Its last iteration blocked it.
    pub blocked: bool,
    pub tokens: Option<u64>,
    pub cost_usd: Option<f64>,
    pub time_ms: u64,
}

/// One agent's iterations (the records' `agent`: the main agent, a fallback, a task's own).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentStats {
    /// Its name; `null` for records written before the records named the agent.
    pub agent: Option<String>,
    pub iterations: u64,
    /// Iterations whose work was kept (`done` or `progress`).
    pub green: u64,
    /// Iterations that finished their task.
    pub done: u64,
    /// Iterations that ended on a usage or rate limit.
    pub rate_limited: u64,
    /// `green` over the iterations the agent saw through (not rate-limited, interrupted or
    /// restarted); `null` with none.
    pub success_rate: Option<f64>,
    /// Tokens it reported, `null` when it reported none.
    pub tokens: Option<u64>,
    /// US dollars it reported, `null` when it reported none.
    pub cost_usd: Option<f64>,
    pub time_ms: u64,
}

/// What a person did between or during runs, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Interventions {
    /// The sum of the kinds below.
    pub total: u64,
    /// Iterations that started where ralph had not left the branch: a commit (or a reset) ralph
    /// did not make since the iteration before (in the run, or the last run on that branch).
    pub commits: u64,
    /// Iterations whose task's spec was edited while they ran (`spec_edited`), and done tasks
    /// that ran again (their spec was edited since, or their status set back by hand).
    pub spec_edits: u64,
    /// Blocked tasks that ran again.
    pub unblocks: u64,
    /// Sessions a person stopped: `ralph stop`, `ralph stop --now`, Ctrl-C, a termination signal.
    pub stops: u64,
    /// `ralph learnings remove`.
    pub learnings_removed: u64,
    /// Notes (`ralph note`) an iteration's prompt carried.
    pub notes: u64,
}

impl Interventions {
    /// These kinds with their total.
    fn totalled(mut self) -> Interventions {
        self.total =
            self.commits + self.spec_edits + self.unblocks + self.stops + self.learnings_removed + self.notes;
        self
    }

    fn add(&mut self, o: &Interventions) {
        self.commits += o.commits;
        self.spec_edits += o.spec_edits;
        self.unblocks += o.unblocks;
        self.stops += o.stops;
        self.learnings_removed += o.learnings_removed;
        self.notes += o.notes;
        *self = self.totalled();
    }
}

/// One run's signals, a row of the trend.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunTrend {
    pub run_id: String,
    pub iterations: u64,
    /// Times a task was done in this run.
    pub tasks_done: u64,
    /// Of those, the share done on the first iteration that worked on the task; `null` with
    /// nothing done.
    pub first_attempt_success: Option<f64>,
    /// The median of the iterations each of those took (counted across runs, as
    /// `iterations_to_done`); `null` with nothing done.
    pub iterations_to_resolution: Option<u64>,
    pub interventions: Interventions,
    /// `interventions.total / tasks_done`; `null` with nothing done.
    pub interventions_per_done_task: Option<f64>,
}

/// Everything `ralph stats` prints; `--json` prints it as is (a documented contract).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// The run `--run` restricted the figures to.
    pub run_id: Option<String>,
    pub runs: u64,
    pub iterations: u64,
    /// Lines of iterations.jsonl that did not parse (a torn last line after a crash).
    pub skipped_lines: u64,
    pub outcomes: BTreeMap<Outcome, u64>,
    pub tasks: TaskFigures,
    pub iterations_to_done: Option<Spread>,
    pub iteration_ms: Option<Spread>,
    /// Every iteration that was not green, by outcome and cause, most frequent first.
    pub failures: Vec<FailureCause>,
    pub tokens: TokenFigures,
    pub cost_usd: CostFigures,
    pub learnings_added: u64,
    pub rate_limits: RateLimits,
    pub per_task: Vec<TaskStats>,
    /// Tokens, cost and success by agent (a run with `[agent] fallback`, tasks with their own
    /// `agent:`), most iterations first.
    pub per_agent: Vec<AgentStats>,
    /// What a person did, over every run read.
    pub interventions: Interventions,
    /// `interventions.total / tasks.done`; `null` with nothing done.
    pub interventions_per_done_task: Option<f64>,
    /// The signals run by run, oldest first.
    pub trend: Vec<RunTrend>,
}

/// What the figures need of a run besides its records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunInfo {
    pub run_id: String,
    /// The branch it ran on: the branch's next run picks up where this one left it.
    pub branch: Option<String>,
    /// Sessions a person stopped.
    pub stops: u32,
    /// Learnings removed by hand after it started and before the next run did.
    pub learnings_removed: u64,
}

/// Whether a run's `end_reason` says a person stopped it (`ralph stop`; `interrupted`: Ctrl-C,
/// `ralph stop --now`, a signal): the words `runner::RunEnd` writes.
pub fn ended_by_person(end_reason: &str) -> bool {
    end_reason.starts_with("stopped by `ralph stop`") || end_reason == "interrupted"
}

impl RunInfo {
    /// From a run's `run.json`: its `stops`, or for a `run.json` written before it was kept,
    /// its last end.
    pub fn of(meta: &crate::state::RunMeta) -> RunInfo {
        let ended = meta.end_reason.as_deref().is_some_and(ended_by_person);
        RunInfo {
            run_id: meta.run_id.clone(),
            branch: meta.branch.clone(),
            stops: meta.stops.max(u32::from(ended)),
            learnings_removed: 0,
        }
    }
}

/// Where ralph left a branch: the next iteration on it should start there.
#[derive(Debug, Clone)]
struct Left {
    head: String,
    /// `false` after an old record (no `head_after`) that may be followed by a commit of
    /// ralph's it does not name (a block, a red iteration's learnings): a move is not judged.
    sure: bool,
}

/// What one record shows a person did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Found {
    pub commit: bool,
    /// 0, 1 or 2: the iteration's own edit, and a done task reopened.
    pub spec_edits: u8,
    pub unblock: bool,
    /// The record's task, numbered in the order the tracker first saw each.
    pub task: usize,
}

/// The search for interventions: follows each branch and each task through the records, fed
/// every record in order.
#[derive(Debug, Default)]
pub struct Tracker {
    /// ralph's commits no record names (between iterations, `ralph learnings`): commit → parent.
    own: HashMap<String, String>,
    /// Per branch, where the last run on it left it.
    branches: HashMap<String, Left>,
    branch: Option<String>,
    left: Option<Left>,
    /// Each task's number.
    task_ids: HashMap<String, usize>,
    /// Per task, by number, what its last record says: (it blocked the task, it finished the
    /// task and no edit of the person's came with it).
    tasks: Vec<(bool, bool)>,
}

impl Tracker {
    /// Notes a commit ralph made that no record names.
    pub fn own_commit(&mut self, commit: &str, parent: &str) {
        self.own.insert(commit.to_string(), parent.to_string());
    }

    /// Starts a run on `branch`: it picks up where the last run on that branch left it; a run
    /// on no branch (detached, or an old `run.json`) starts afresh.
    pub fn start_run(&mut self, branch: Option<&str>) {
        if let Some(b) = self.branch.take() {
            match self.left.take() {
                Some(l) => self.branches.insert(b, l),
                None => self.branches.remove(&b),
            };
        }
        self.left = branch.and_then(|b| self.branches.get(b).cloned());
        self.branch = branch.map(str::to_string);
    }

    /// Whether `head` is `left`, or lies on it through ralph's own commits only.
    fn ours(&self, head: &str, left: &str) -> bool {
        let mut h = head;
        // Bounded: a cycle in hand-edited files cannot loop.
        for _ in 0..=self.own.len() {
            if h == left {
                return true;
            }
            match self.own.get(h) {
                Some(parent) => h = parent,
                None => return false,
            }
        }
        false
    }

    /// What this record shows a person did; then it is where the run stands.
    pub fn see(&mut self, l: &Line) -> Found {
        let mut f = Found::default();
        if l.worker.is_some() {
            // A worker's branch is not the run's: what follows a parallel run is not judged.
            self.left = None;
        } else {
            if let (Some(before), Some(left)) = (l.head_before.as_deref(), &self.left) {
                f.commit = left.sure && !self.ours(before, &left.head);
            }
            let sure = l.head_after.is_some()
                || !(l.blocked || (!l.outcome.is_green() && !l.learnings_added.is_empty()));
            let head = l.head_after.as_deref().or(l.commit.as_deref()).or(l.head_before.as_deref());
            self.left = match (head, self.left.take()) {
                (Some(h), Some(mut left)) => {
                    left.head.clear();
                    left.head.push_str(h);
                    left.sure = sure;
                    Some(left)
                }
                (Some(h), None) => Some(Left { head: h.to_string(), sure }),
                (None, _) => None,
            };
        }
        f.spec_edits = u8::from(l.spec_edited);
        let now = (l.blocked, l.outcome == Outcome::Done && !l.spec_edited);
        match self.task_ids.get(l.task.as_ref()) {
            Some(&n) => {
                let before = std::mem::replace(&mut self.tasks[n], now);
                f.unblock = before.0;
                f.spec_edits += u8::from(before.1);
                f.task = n;
            }
            None => {
                f.task = self.tasks.len();
                self.task_ids.insert(l.task.to_string(), f.task);
                self.tasks.push(now);
            }
        }
        f
    }
}

#[derive(Debug, Default)]
struct RowAcc {
    run_id: String,
    iterations: u64,
    resolutions: Vec<u64>,
    found: Interventions,
}

#[derive(Debug)]
struct TaskAcc {
    id: String,
    iterations: u32,
    attempts: u32,
    open: u32,
    resolutions: Vec<u32>,
    last_outcome: Outcome,
    blocked: bool,
    tokens: Option<u64>,
    cost: Option<f64>,
    time_ms: u64,
}

/// Folds records into [`Stats`]; feed runs oldest first.
#[derive(Debug, Default)]
pub struct Aggregator {
    runs: u64,
    iterations: u64,
    skipped_lines: u64,
    outcomes: BTreeMap<Outcome, u64>,
    tasks: Vec<TaskAcc>,
    /// Per task the [`Tracker`] numbered, its place in `tasks` (`None` for a task seen only in
    /// the runs read for their history): one lookup of the task's id per record, the tracker's.
    index: Vec<Option<usize>>,
    causes: HashMap<(Outcome, Option<Cause>, String), u64>,
    durations: Vec<u64>,
    tokens: Tokens,
    tokens_reporting: u64,
    cost: f64,
    cost_reporting: u64,
    learnings: u64,
    waits: u64,
    waited_ms: u64,
    /// The end of the run's last iteration, when it was rate-limited: the wait runs from here.
    wait_from: Option<SystemTime>,
    tracker: Tracker,
    rows: Vec<RowAcc>,
    /// Learnings removed before the first run read (counted in the total only).
    removed_before: u64,
    /// Per agent name (`None`: records that name none); a handful, searched in order.
    agents: Vec<(Option<String>, AgentAcc)>,
}

/// One agent's figures while they are summed.
#[derive(Debug, Default)]
struct AgentAcc {
    iterations: u64,
    green: u64,
    done: u64,
    rate_limited: u64,
    seen_through: u64,
    tokens: Option<u64>,
    cost: Option<f64>,
    time_ms: u64,
}

fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(s).ok()
}

impl Aggregator {
    pub fn new() -> Aggregator {
        Aggregator::default()
    }

    /// Starts the next run, of which nothing more is known: a wait never spans two runs.
    pub fn start_run(&mut self) {
        self.begin_run(RunInfo::default());
    }

    /// Starts the next run: a wait never spans two runs; its row of the trend begins with the
    /// stops and removals its `run.json` and the store say.
    pub fn begin_run(&mut self, info: RunInfo) {
        self.runs += 1;
        self.wait_from = None;
        self.tracker.start_run(info.branch.as_deref());
        let found = Interventions {
            stops: u64::from(info.stops),
            learnings_removed: info.learnings_removed,
            ..Interventions::default()
        }
        .totalled();
        self.rows.push(RowAcc { run_id: info.run_id, found, ..RowAcc::default() });
    }

    /// Learnings removed before the first run read.
    pub fn removed_before_runs(&mut self, n: u64) {
        self.removed_before += n;
    }

    /// The search for interventions, to note ralph's own commits.
    pub fn tracker_mut(&mut self) -> &mut Tracker {
        &mut self.tracker
    }

    /// Reads an earlier run's records only for what the next runs' interventions need (where
    /// it left the branch, blocked and done tasks): no figure counts them.
    pub fn read_history(&mut self, info: &RunInfo, records: &Path) -> Result<(), StatsError> {
        self.tracker.start_run(info.branch.as_deref());
        self.read_records(records, true)
    }

    /// Reads one run's `iterations.jsonl` (a missing file is a run without records yet): into
    /// the figures, or with `history` only into the search for interventions.
    fn read_records(&mut self, records: &Path, history: bool) -> Result<(), StatsError> {
        let err = |source| StatsError::Read { path: records.to_path_buf(), source };
        let file = match crate::fsx::open(records) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(err(e)),
        };
        let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
        let mut buf = Vec::with_capacity(8 << 10);
        loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf).map_err(err)? == 0 {
                return Ok(());
            }
            if history {
                if let Ok(l) = serde_json::from_slice::<Line>(&buf) {
                    self.tracker.see(&l);
                }
            } else {
                self.add_line(&buf);
            }
        }
    }

    /// Adds one line of `iterations.jsonl`; blank lines are ignored, unparsable ones counted.
    pub fn add_line(&mut self, line: &[u8]) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        match serde_json::from_slice::<Line>(line) {
            Ok(l) => self.add(&l),
            Err(_) => self.skipped_lines += 1,
        }
    }

    /// Adds one record.
    pub fn add(&mut self, l: &Line) {
        if self.rows.is_empty() {
            self.start_run();
        }
        let found = self.tracker.see(l);
        let row = self.rows.last_mut();
        if let Some(row) = row {
            row.iterations += 1;
            row.found.add(&Interventions {
                commits: u64::from(found.commit),
                spec_edits: u64::from(found.spec_edits),
                unblocks: u64::from(found.unblock),
                notes: l.notes.len() as u64,
                ..Interventions::default()
            });
        }
        self.iterations += 1;
        *self.outcomes.entry(l.outcome).or_insert(0) += 1;
        self.durations.push(l.duration_ms);
        self.learnings += l.learnings_added.len() as u64;
        if let Some(t) = &l.tokens {
            self.tokens_reporting += 1;
            self.tokens.input += t.input;
            self.tokens.output += t.output;
            self.tokens.cache_read += t.cache_read;
            self.tokens.cache_write += t.cache_write;
        }
        if let Some(c) = l.cost_usd {
            self.cost_reporting += 1;
            self.cost += c;
        }
        self.add_agent(l);
        if let Some(from) = self.wait_from.take()
            && let Some(to) = parse_time(&l.started_at)
            && let Ok(d) = to.duration_since(from)
        {
            self.waited_ms += u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        }
        if l.outcome == Outcome::RateLimited {
            self.waits += 1;
            self.wait_from = parse_time(&l.ended_at);
        }
        if !l.outcome.is_green() {
            let failed = failed_check(&l.checks);
            let (kind, c) = cause(l.outcome, l.cause, l.failure.as_deref(), failed, l.exit_code);
            *self.causes.entry((l.outcome, kind, c)).or_insert(0) += 1;
        }

        if self.index.len() <= found.task {
            self.index.resize(found.task + 1, None);
        }
        let i = match self.index[found.task] {
            Some(i) => i,
            None => {
                self.tasks.push(TaskAcc {
                    id: l.task.to_string(),
                    iterations: 0,
                    attempts: 0,
                    open: 0,
                    resolutions: Vec::new(),
                    last_outcome: l.outcome,
                    blocked: false,
                    tokens: None,
                    cost: None,
                    time_ms: 0,
                });
                self.index[found.task] = Some(self.tasks.len() - 1);
                self.tasks.len() - 1
            }
        };
        let t = &mut self.tasks[i];
        t.iterations += 1;
        t.time_ms += l.duration_ms;
        t.last_outcome = l.outcome;
        t.blocked = l.blocked;
        // An agent that could not run at all used no attempt of the task's.
        if l.outcome.counts_as_attempt() && !matches!(l.cause, Some(Cause::Auth | Cause::ModelMissing)) {
            t.attempts += 1;
        }
        if let Some(tok) = &l.tokens {
            *t.tokens.get_or_insert(0) += tok.total();
        }
        if let Some(c) = l.cost_usd {
            *t.cost.get_or_insert(0.0) += c;
        }
        // A limit or a stop says nothing about how hard the task is.
        if !matches!(
            l.outcome,
            Outcome::RateLimited | Outcome::Interrupted | Outcome::Restarted | Outcome::Skipped
        ) {
            t.open += 1;
        }
        if l.outcome == Outcome::Done {
            t.resolutions.push(t.open);
            if let Some(row) = self.rows.last_mut() {
                row.resolutions.push(u64::from(t.open));
            }
            t.open = 0;
        }
    }

    /// Adds a record to its agent's figures: one lookup of the name, an allocation only for
    /// an agent not seen before.
    fn add_agent(&mut self, l: &Line) {
        let key = l.agent.as_deref();
        let i = match self.agents.iter().position(|(n, _)| n.as_deref() == key) {
            Some(i) => i,
            None => {
                self.agents.push((key.map(str::to_string), AgentAcc::default()));
                self.agents.len() - 1
            }
        };
        let a = &mut self.agents[i].1;
        a.iterations += 1;
        a.time_ms += l.duration_ms;
        if l.outcome.is_green() {
            a.green += 1;
        }
        if l.outcome == Outcome::Done {
            a.done += 1;
        }
        if l.outcome == Outcome::RateLimited {
            a.rate_limited += 1;
        }
        if !matches!(l.outcome, Outcome::RateLimited | Outcome::Interrupted | Outcome::Restarted) {
            a.seen_through += 1;
        }
        if let Some(t) = &l.tokens {
            *a.tokens.get_or_insert(0) += t.total();
        }
        if let Some(c) = l.cost_usd {
            *a.cost.get_or_insert(0.0) += c;
        }
    }

    /// The figures.
    pub fn finish(self, run_id: Option<String>) -> Stats {
        let mut to_done: Vec<u64> =
            self.tasks.iter().flat_map(|t| t.resolutions.iter().map(|&n| u64::from(n))).collect();
        let done = to_done.len() as u64;
        let first = to_done.iter().filter(|&&n| n <= 1).count() as u64;
        let seen = self.tasks.len() as u64;
        let ratio = |total: f64, n: u64| (n > 0).then(|| total / n as f64);
        let mut durations = self.durations;
        let mut failures: Vec<FailureCause> = self
            .causes
            .into_iter()
            .map(|((outcome, kind, cause), count)| FailureCause { outcome, cause, kind, count })
            .collect();
        failures.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(a.outcome.cmp(&b.outcome))
                .then_with(|| a.cause.cmp(&b.cause))
                .then(a.kind.cmp(&b.kind))
        });
        let total_tokens = self.tokens.total();
        let mut interventions =
            Interventions { learnings_removed: self.removed_before, ..Interventions::default() };
        let trend: Vec<RunTrend> = self
            .rows
            .into_iter()
            .map(|mut r| {
                interventions.add(&r.found);
                let n = r.resolutions.len() as u64;
                let first = r.resolutions.iter().filter(|&&i| i <= 1).count() as u64;
                RunTrend {
                    run_id: r.run_id,
                    iterations: r.iterations,
                    tasks_done: n,
                    first_attempt_success: ratio(first as f64, n),
                    iterations_to_resolution: Spread::of(&mut r.resolutions).map(|s| s.median),
                    interventions: r.found,
                    interventions_per_done_task: ratio(r.found.total as f64, n),
                }
            })
            .collect();
        let interventions = interventions.totalled();
        Stats {
            run_id,
            runs: self.runs,
            iterations: self.iterations,
            skipped_lines: self.skipped_lines,
            outcomes: self.outcomes,
            tasks: TaskFigures {
                seen,
                done,
                done_first_iteration: first,
                first_attempt_success_rate: ratio(first as f64, done),
            },
            iterations_to_done: Spread::of(&mut to_done),
            iteration_ms: Spread::of(&mut durations),
            failures,
            tokens: TokenFigures {
                total: total_tokens,
                input: self.tokens.input,
                output: self.tokens.output,
                cache_read: self.tokens.cache_read,
                cache_write: self.tokens.cache_write,
                iterations_reporting: self.tokens_reporting,
                per_task: ratio(total_tokens as f64, seen).filter(|_| self.tokens_reporting > 0),
                per_done_task: ratio(total_tokens as f64, done).filter(|_| self.tokens_reporting > 0),
            },
            cost_usd: CostFigures {
                total: self.cost,
                iterations_reporting: self.cost_reporting,
                per_task: ratio(self.cost, seen).filter(|_| self.cost_reporting > 0),
                per_done_task: ratio(self.cost, done).filter(|_| self.cost_reporting > 0),
            },
            learnings_added: self.learnings,
            rate_limits: RateLimits { waits: self.waits, waited_ms: self.waited_ms },
            per_task: self
                .tasks
                .into_iter()
                .map(|t| TaskStats {
                    task: t.id,
                    iterations: t.iterations,
                    attempts: t.attempts,
                    iterations_to_done: t.resolutions,
                    open_iterations: t.open,
                    last_outcome: t.last_outcome,
                    blocked: t.blocked,
                    tokens: t.tokens,
                    cost_usd: t.cost,
                    time_ms: t.time_ms,
                })
                .collect(),
            per_agent: {
                let mut rows: Vec<AgentStats> = self
                    .agents
                    .into_iter()
                    .map(|(agent, a)| AgentStats {
                        agent,
                        iterations: a.iterations,
                        green: a.green,
                        done: a.done,
                        rate_limited: a.rate_limited,
                        success_rate: ratio(a.green as f64, a.seen_through),
                        tokens: a.tokens,
                        cost_usd: a.cost,
                        time_ms: a.time_ms,
                    })
                    .collect();
                rows.sort_by(|a, b| b.iterations.cmp(&a.iterations).then_with(|| a.agent.cmp(&b.agent)));
                rows
            },
            interventions_per_done_task: ratio(interventions.total as f64, done),
            interventions,
            trend,
        }
    }
}

/// Reads the records of these run folders (oldest first), or with `only`, of the one of them
/// with that id: the runs before it are read only for where they left the branch and their
/// blocked and done tasks (its interventions need them), and count in no figure. `store` is
/// the learnings store: its removals, and the commits ralph made for them.
pub fn collect(
    run_dirs: &[PathBuf],
    only: Option<&str>,
    store: &crate::learnings::Store,
) -> Result<Stats, StatsError> {
    let mut agg = Aggregator::new();
    let metas: Vec<Option<crate::state::RunMeta>> =
        run_dirs.iter().map(|d| crate::state::RunMeta::load(d).ok()).collect();
    for m in metas.iter().flatten() {
        for c in &m.ralph_commits {
            agg.tracker.own_commit(&c.commit, &c.parent);
        }
    }
    for h in &store.by_hand {
        if let Some(c) = &h.commit {
            agg.tracker.own_commit(&c.commit, &c.parent);
        }
    }
    // A removal counts in the run that started last before it (a run refuses them while it
    // runs): the run whose learnings it put right.
    let starts: Vec<Option<SystemTime>> =
        metas.iter().map(|m| m.as_ref().and_then(|m| parse_time(&m.started_at))).collect();
    let mut removed = vec![0u64; run_dirs.len()];
    for (_, at) in store.removals() {
        let at = parse_time(at);
        let run = at.and_then(|at| starts.iter().rposition(|s| s.is_some_and(|s| s <= at)));
        match run {
            Some(i) => removed[i] += 1,
            None if only.is_none() => agg.removed_before_runs(1),
            None => {}
        }
    }
    for (i, dir) in run_dirs.iter().enumerate() {
        let id = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut info = metas[i].as_ref().map(RunInfo::of).unwrap_or_default();
        info.run_id.clone_from(&id);
        info.learnings_removed = removed[i];
        let records = crate::logs::records_path(dir);
        if only.is_some_and(|o| o != id) {
            agg.read_history(&info, &records)?;
            continue;
        }
        agg.begin_run(info);
        agg.read_records(&records, false)?;
        if only.is_some() {
            // Nothing after the one run matters to it.
            break;
        }
    }
    Ok(agg.finish(only.map(str::to_string)))
}

/// The first check that failed for real (not tolerated): its command and whether it timed out.
pub fn failed_check<'c>(checks: &'c [LineCheck<'_>]) -> Option<(&'c str, bool)> {
    checks
        .iter()
        .find(|c| !c.tolerated && (c.timed_out || c.exit_code != Some(0)))
        .map(|c| (c.command.as_ref(), c.timed_out))
}

/// Longest command shown in a cause: causes are grouping keys, not logs.
const CAUSE_COMMAND_CHARS: usize = 60;

/// The short cause of a failed iteration, for grouping: its kind and a label naming which
/// check failed, which gate caught it, how the agent failed. A record that names its `cause`
/// is grouped by it (and its checks and exit code); only a record written before that field
/// existed is read for its `failure` text. `failed_check` is the first check that failed for
/// real (command, timed out).
pub fn cause(
    outcome: Outcome,
    recorded: Option<Cause>,
    failure: Option<&str>,
    failed_check: Option<(&str, bool)>,
    exit_code: Option<i32>,
) -> (Option<Cause>, String) {
    match recorded {
        Some(c) => (Some(c), label(c, failed_check, exit_code)),
        None => old_cause(outcome, failure, failed_check, exit_code),
    }
}

/// A cause's label: the words `ralph stats` printed for it before causes were recorded, so that
/// old and new records of one cause fall into one group.
pub fn label(cause: Cause, failed_check: Option<(&str, bool)>, exit_code: Option<i32>) -> String {
    match cause {
        Cause::ChecksFailed => failed_check.map_or("checks failed".into(), |(c, t)| check_label(c, t)),
        Cause::NewTestFailures => failed_check
            .map_or("new test failures".into(), |(c, _)| format!("`{}`: new test failures", shorten(c))),
        Cause::AgentExit => match exit_code {
            Some(0) => "agent reported an error".into(),
            Some(c) => format!("agent exited with code {c}"),
            None => "agent killed by a signal".into(),
        },
        Cause::AgentNotStarted => "agent could not start".into(),
        Cause::Auth => "agent could not authenticate".into(),
        Cause::ModelMissing => "agent's model does not exist".into(),
        Cause::RateLimited => "usage or rate limit".into(),
        Cause::Timeout => "iteration time limit".into(),
        Cause::TimeBudget => "run time budget ran out".into(),
        Cause::IdleTimeout => "no output (idle timeout)".into(),
        Cause::FrameBroken => "agent changed the frame".into(),
        Cause::ProtectedPath => "gate: protected path changed".into(),
        Cause::TestDeleted => "gate: test file deleted".into(),
        Cause::SkipMarker => "gate: skip marker added".into(),
        Cause::FewerTests => "gate: fewer tests than before".into(),
        Cause::SpecRewritten => "gate: spec rewritten".into(),
        Cause::StatusChanged => "gate: another task's status changed".into(),
        Cause::OtherTaskWorkDeleted => "gate: another task's file deleted".into(),
        Cause::ReviewRejected => "review rejected".into(),
        Cause::HookRejected => "commit hook refused".into(),
        Cause::Interrupted => "interrupted".into(),
        Cause::Restarted => "spec edited during the iteration".into(),
        Cause::Crashed => "ralph killed mid-iteration".into(),
        Cause::LandConflict => "landing: conflict with work landed first".into(),
        Cause::LandChecksFailed => "landing: checks failed on the combined result".into(),
        Cause::HookSkipped => "skipped by the before_iteration hook".into(),
    }
}

/// A command, cut to [`CAUSE_COMMAND_CHARS`].
fn shorten(command: &str) -> String {
    let mut c: String = command.chars().take(CAUSE_COMMAND_CHARS).collect();
    if c.len() < command.len() {
        c.push('…');
    }
    c
}

fn check_label(command: &str, timed_out: bool) -> String {
    format!("`{}` {}", shorten(command), if timed_out { "timed out" } else { "failed" })
}

/// The cause of a record written before records named it, read from its failure text: the
/// fallback for old records only (rewording a message changes what this finds).
fn old_cause(
    outcome: Outcome,
    failure: Option<&str>,
    failed_check: Option<(&str, bool)>,
    exit_code: Option<i32>,
) -> (Option<Cause>, String) {
    let f = failure.unwrap_or("");
    match outcome {
        Outcome::Done | Outcome::Progress => (None, String::new()),
        Outcome::ChecksFailed => {
            if let Some(gate) = f.strip_prefix("a gate rejected the work: ") {
                let (kind, label) = if gate.starts_with("fewer tests") {
                    (Some(Cause::FewerTests), "fewer tests than before")
                } else if gate.contains("protected path") {
                    (Some(Cause::ProtectedPath), "protected path changed")
                } else if gate.contains("deleted the test file") {
                    (Some(Cause::TestDeleted), "test file deleted")
                } else if gate.contains("rewrote the spec") {
                    (Some(Cause::SpecRewritten), "spec rewritten")
                } else if gate.contains("skip marker") {
                    (Some(Cause::SkipMarker), "skip marker added")
                } else {
                    (None, "rejected")
                };
                (kind, format!("gate: {label}"))
            } else if f.starts_with("the review rejected") {
                (Some(Cause::ReviewRejected), "review rejected".into())
            } else if f.starts_with("`git commit` was refused") {
                (Some(Cause::HookRejected), "commit hook refused".into())
            } else if let Some((command, timed_out)) = failed_check {
                (Some(Cause::ChecksFailed), check_label(command, timed_out))
            } else {
                (Some(Cause::ChecksFailed), "checks failed".into())
            }
        }
        Outcome::AgentFailed => {
            if f.starts_with("the agent could not start") {
                (Some(Cause::AgentNotStarted), "agent could not start".into())
            } else if f.starts_with("the agent could not authenticate") {
                (Some(Cause::Auth), "agent could not authenticate".into())
            } else if f.starts_with("the agent's model does not exist") {
                (Some(Cause::ModelMissing), "agent's model does not exist".into())
            } else if f.starts_with("the agent switched from branch") {
                (Some(Cause::FrameBroken), "agent switched branch".into())
            } else if f.starts_with("the agent changed what it must not touch") {
                (Some(Cause::FrameBroken), "agent changed the frame".into())
            } else if f.starts_with("the agent reported an error") {
                (Some(Cause::AgentExit), "agent reported an error".into())
            } else if f.starts_with("the agent was killed by a signal") {
                (Some(Cause::AgentExit), "agent killed by a signal".into())
            } else {
                match exit_code {
                    Some(0) => (Some(Cause::AgentExit), "agent reported an error".into()),
                    Some(c) => (Some(Cause::AgentExit), format!("agent exited with code {c}")),
                    None => (None, "agent failed".into()),
                }
            }
        }
        Outcome::Timeout if f.contains("the run's time budget ran out") => {
            (Some(Cause::TimeBudget), "run time budget ran out".into())
        }
        Outcome::Timeout => (Some(Cause::Timeout), "iteration time limit".into()),
        Outcome::IdleTimeout => (Some(Cause::IdleTimeout), "no output (idle timeout)".into()),
        Outcome::Interrupted => (Some(Cause::Interrupted), "interrupted".into()),
        Outcome::RateLimited => (Some(Cause::RateLimited), "usage or rate limit".into()),
        Outcome::Restarted => (Some(Cause::Restarted), "spec edited during the iteration".into()),
        Outcome::Skipped => (Some(Cause::HookSkipped), "skipped by the before_iteration hook".into()),
    }
}

/// A duration for people: `850ms`, `12.3s`, `4m05s`, `2h03m`.
pub fn human_ms(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// A token count for people: `950`, `12.3k`, `500k`, `4.56M`.
pub fn human_tokens(n: f64) -> String {
    let (v, unit, places) = if n < 1_000.0 {
        return format!("{n:.0}");
    } else if n < 1_000_000.0 {
        (n / 1_000.0, "k", 1)
    } else {
        (n / 1_000_000.0, "M", 2)
    };
    let text = format!("{v:.places$}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}{unit}")
}

/// The most runs the table's trend shows: the newest (`--json` has them all).
pub const TREND_ROWS: usize = 20;

/// The kinds of interventions that occurred, as ` (2 commits, 1 unblock)`; empty for none.
fn kinds(i: &Interventions) -> String {
    let kinds: Vec<String> = [
        (i.commits, "commit", "commits"),
        (i.spec_edits, "spec edit", "spec edits"),
        (i.unblocks, "unblock", "unblocks"),
        (i.stops, "stop", "stops"),
        (i.learnings_removed, "learning removed", "learnings removed"),
        (i.notes, "note", "notes"),
    ]
    .iter()
    .filter(|(n, ..)| *n > 0)
    .map(|&(n, one, many)| format!("{n} {}", if n == 1 { one } else { many }))
    .collect();
    if kinds.is_empty() { String::new() } else { format!(" ({})", kinds.join(", ")) }
}

/// The three signals, a row per run, oldest first (the newest [`TREND_ROWS`]).
/// The split by agent, when more than one agent ran (a fallback, a task's own `agent:`).
fn render_agents(o: &mut String, agents: &[AgentStats]) {
    use std::fmt::Write;
    if agents.len() < 2 {
        return;
    }
    let name = |a: &AgentStats| a.agent.clone().unwrap_or_else(|| "-".into());
    let w = agents.iter().map(|a| name(a).chars().count()).max().unwrap_or(5).max(5);
    let _ = writeln!(
        o,
        "\nAgents\n  {:<w$}  {:>5}  {:>5}  {:>4}  {:>7}  {:>7}  {:>8}  {:>8}  {:>8}",
        "AGENT", "ITERS", "GREEN", "DONE", "LIMITED", "SUCCESS", "TOKENS", "COST", "TIME"
    );
    for a in agents {
        let n = name(a);
        let _ = writeln!(
            o,
            "  {n}{}  {:>5}  {:>5}  {:>4}  {:>7}  {:>7}  {:>8}  {:>8}  {:>8}",
            " ".repeat(w - n.chars().count()),
            a.iterations,
            a.green,
            a.done,
            a.rate_limited,
            a.success_rate.map_or("-".into(), |r| format!("{:.0}%", r * 100.0)),
            a.tokens.map_or("-".into(), |n| human_tokens(n as f64)),
            a.cost_usd.map_or("-".into(), |c| format!("${c:.2}")),
            human_ms(a.time_ms),
        );
    }
}

fn render_trend(o: &mut String, trend: &[RunTrend]) {
    use std::fmt::Write;
    let shown = &trend[trend.len().saturating_sub(TREND_ROWS)..];
    let w = shown.iter().map(|r| r.run_id.chars().count()).max().unwrap_or(3).max(3);
    let _ = writeln!(
        o,
        "\nTrend (oldest run first{})\n  {:<w$}  {:>5}  {:>4}  {:>9}  {:>7}  {:>8}  INTERVENTIONS",
        if shown.len() < trend.len() {
            format!("; the last {} of {}, all in --json", shown.len(), trend.len())
        } else {
            String::new()
        },
        "RUN",
        "ITERS",
        "DONE",
        "FIRST TRY",
        "TO DONE",
        "PER DONE",
    );
    for r in shown {
        let _ = writeln!(
            o,
            "  {}{}  {:>5}  {:>4}  {:>9}  {:>7}  {:>8}  {}{}",
            r.run_id,
            " ".repeat(w - r.run_id.chars().count()),
            r.iterations,
            r.tasks_done,
            r.first_attempt_success.map_or("-".into(), |v| format!("{:.0}%", v * 100.0)),
            r.iterations_to_resolution.map_or("-".into(), |v| v.to_string()),
            r.interventions_per_done_task.map_or("-".into(), |v| format!("{v:.2}")),
            r.interventions.total,
            kinds(&r.interventions),
        );
    }
}

/// The human-readable table.
pub fn render(s: &Stats) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let scope = match &s.run_id {
        Some(id) => format!("run {id}"),
        None => format!("{} run(s)", s.runs),
    };
    let _ = write!(o, "Stats for {scope}: {} iteration(s)", s.iterations);
    if s.skipped_lines > 0 {
        let _ = write!(o, " ({} unreadable record line(s) skipped)", s.skipped_lines);
    }
    o.push('\n');
    if s.iterations == 0 {
        o.push_str("\nNo iterations recorded yet: `ralph run` starts one.\n");
        return o;
    }
    let outcomes: Vec<String> = s.outcomes.iter().map(|(k, n)| format!("{n} {}", k.as_str())).collect();
    let _ = writeln!(o, "  outcomes:            {}", outcomes.join(", "));
    let t = &s.tasks;
    let rate = t.first_attempt_success_rate.map_or("-".into(), |r| format!("{:.0}%", r * 100.0));
    let _ = writeln!(o, "  tasks:               {} seen, {} done", t.seen, t.done);
    let _ = writeln!(
        o,
        "  first-attempt done:  {rate} ({} of {} done on their first iteration)",
        t.done_first_iteration, t.done
    );
    let spread = |sp: &Option<Spread>, f: &dyn Fn(u64) -> String, mean: &dyn Fn(f64) -> String| {
        sp.as_ref().map_or("-".into(), |sp| {
            format!(
                "mean {} · median {} · p90 {} · max {}",
                mean(sp.mean),
                f(sp.median),
                f(sp.p90),
                f(sp.max)
            )
        })
    };
    let _ = writeln!(
        o,
        "  iterations to done:  {}",
        spread(&s.iterations_to_done, &|n| n.to_string(), &|m| format!("{m:.1}"))
    );
    let _ = writeln!(
        o,
        "  time per iteration:  {}",
        spread(&s.iteration_ms, &human_ms, &|m| human_ms(m.round() as u64))
    );
    let tk = &s.tokens;
    if tk.iterations_reporting > 0 {
        let _ = writeln!(
            o,
            "  tokens:              {} total · {} per task · {} per done task",
            human_tokens(tk.total as f64),
            tk.per_task.map_or("-".into(), human_tokens),
            tk.per_done_task.map_or("-".into(), human_tokens)
        );
    } else {
        o.push_str("  tokens:              not reported by the agent\n");
    }
    let c = &s.cost_usd;
    if c.iterations_reporting > 0 {
        let usd = |v: Option<f64>| v.map_or("-".into(), |v| format!("${v:.2}"));
        let _ = writeln!(
            o,
            "  cost:                ${:.2} total · {} per task · {} per done task",
            c.total,
            usd(c.per_task),
            usd(c.per_done_task)
        );
    } else {
        o.push_str("  cost:                not reported by the agent\n");
    }
    let _ = writeln!(o, "  learnings added:     {}", s.learnings_added);
    let _ = writeln!(
        o,
        "  rate-limit waits:    {} ({} waited)",
        s.rate_limits.waits,
        human_ms(s.rate_limits.waited_ms)
    );
    let per_done = s.interventions_per_done_task.map_or("-".into(), |r| format!("{r:.2}"));
    let _ = writeln!(
        o,
        "  interventions:       {} · {per_done} per done task{}",
        s.interventions.total,
        kinds(&s.interventions)
    );
    render_trend(&mut o, &s.trend);

    if !s.failures.is_empty() {
        let w = s.failures.iter().map(|f| f.cause.chars().count()).max().unwrap_or(5).max(5);
        let _ = writeln!(o, "\nFailures\n  {:<13}  {:<w$}  {:>5}", "OUTCOME", "CAUSE", "COUNT");
        for f in &s.failures {
            let pad = w - f.cause.chars().count();
            let _ =
                writeln!(o, "  {:<13}  {}{}  {:>5}", f.outcome.as_str(), f.cause, " ".repeat(pad), f.count);
        }
    }

    render_agents(&mut o, &s.per_agent);

    let w = s.per_task.iter().map(|t| t.task.chars().count()).max().unwrap_or(4).max(4);
    let _ = writeln!(
        o,
        "\nTasks\n  {:<w$}  {:>5}  {:>8}  {:>4}  {:>7}  {:>8}  {:>8}  {:>8}  LAST",
        "TASK", "ITERS", "ATTEMPTS", "DONE", "TO DONE", "TOKENS", "COST", "TIME"
    );
    for t in &s.per_task {
        // Iterations to done: the mean when the task was done more than once (reopened).
        let n = t.iterations_to_done.len();
        let to_done = match n {
            0 => "-".to_string(),
            1 => t.iterations_to_done[0].to_string(),
            _ => format!("{:.1}", t.iterations_to_done.iter().map(|&i| f64::from(i)).sum::<f64>() / n as f64),
        };
        let last = if t.blocked { "blocked" } else { t.last_outcome.as_str() };
        let _ = writeln!(
            o,
            "  {}{}  {:>5}  {:>8}  {:>4}  {:>7}  {:>8}  {:>8}  {:>8}  {last}",
            t.task,
            " ".repeat(w - t.task.chars().count()),
            t.iterations,
            t.attempts,
            n,
            to_done,
            t.tokens.map_or("-".into(), |n| human_tokens(n as f64)),
            t.cost_usd.map_or("-".into(), |c| format!("${c:.2}")),
            human_ms(t.time_ms),
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record line as the runner writes it (extra fields the figures skip included).
    fn rec(task: &str, outcome: &str, extra: &str) -> String {
        let base = format!(
            r#"{{"run_id":"r","iteration":1,"task":"{task}","started_at":"2026-01-01T00:00:00.000Z","ended_at":"2026-01-01T00:00:10.000Z","duration_ms":10000,"exit_code":0,"outcome":"{outcome}","checks":[],"head_before":"abc","commit":null,"files_changed":["a.rs"],"learnings_added":[],"learnings_rejected":[],"promise":false,"failure":null,"progress":null,"blocked":false,"output_leaked":false,"final_message":"a long message that is skipped"}}"#
        );
        if extra.is_empty() {
            return base;
        }
        // A duplicate key is an error for serde, so the extra fields replace the defaults.
        let mut v: serde_json::Value = serde_json::from_str(&base).unwrap();
        let e: serde_json::Value = serde_json::from_str(extra).unwrap();
        for (k, val) in e.as_object().unwrap() {
            v[k] = val.clone();
        }
        v.to_string()
    }

    fn stats(lines: &[String]) -> Stats {
        let mut a = Aggregator::new();
        a.start_run();
        for l in lines {
            a.add_line(l.as_bytes());
        }
        a.finish(None)
    }

    #[test]
    fn first_attempt_rate_and_iterations_to_done() {
        let s = stats(&[
            rec("a", "done", ""),
            rec("b", "checks_failed", ""),
            rec("b", "rate_limited", ""),
            rec("b", "progress", ""),
            rec("b", "done", ""),
            rec("c", "agent_failed", r#"{"exit_code":3}"#),
        ]);
        assert_eq!(s.tasks.seen, 3);
        assert_eq!(s.tasks.done, 2);
        assert_eq!(s.tasks.done_first_iteration, 1);
        assert_eq!(s.tasks.first_attempt_success_rate, Some(0.5));
        // b: failed, (limit not counted), progress, done = 3.
        let b = &s.per_task[1];
        assert_eq!(b.iterations_to_done, vec![3]);
        assert_eq!(b.iterations, 4);
        assert_eq!(b.attempts, 1);
        let sp = s.iterations_to_done.unwrap();
        assert_eq!((sp.mean, sp.median, sp.p90, sp.max), (2.0, 1, 3, 3));
        let c = &s.per_task[2];
        assert_eq!((c.open_iterations, c.iterations_to_done.len()), (1, 0));
        assert_eq!(s.outcomes[&Outcome::Done], 2);
        assert_eq!(s.iterations, 6);
    }

    #[test]
    fn a_task_counts_across_runs_and_again_when_reopened() {
        let mut a = Aggregator::new();
        a.start_run();
        a.add_line(rec("a", "checks_failed", "").as_bytes());
        a.start_run();
        a.add_line(rec("a", "done", "").as_bytes());
        a.add_line(rec("a", "done", "").as_bytes());
        let s = a.finish(None);
        assert_eq!(s.runs, 2);
        assert_eq!(s.per_task[0].iterations_to_done, vec![2, 1]);
        assert_eq!((s.tasks.done, s.tasks.done_first_iteration), (2, 1));
    }

    #[test]
    fn failures_are_grouped_by_outcome_and_short_cause() {
        let check_fail = r#"{"checks":[{"command":"cargo fmt --check","exit_code":1,"duration_ms":5,"tolerated":true},{"command":"cargo test","exit_code":101,"duration_ms":9,"failed_tests":["x"]}],"failure":"test x failed\nmore"}"#;
        let s = stats(&[
            rec("a", "checks_failed", check_fail),
            rec("a", "checks_failed", check_fail),
            rec(
                "a",
                "checks_failed",
                r#"{"failure":"a gate rejected the work: it deleted the test file tests/x.rs"}"#,
            ),
            rec(
                "a",
                "checks_failed",
                r#"{"checks":[{"command":"make","exit_code":null,"duration_ms":5,"timed_out":true}]}"#,
            ),
            rec(
                "a",
                "timeout",
                r#"{"failure":"the agent was stopped after 30m (the iteration's time limit)"}"#,
            ),
            rec("a", "agent_failed", r#"{"exit_code":2,"failure":"the agent exited with code 2; ..."}"#),
            rec("a", "agent_failed", r#"{"exit_code":null,"failure":"the agent could not start: nope"}"#),
            rec("a", "rate_limited", ""),
            rec("a", "done", ""),
        ]);
        let got: Vec<(&str, &str, u64)> =
            s.failures.iter().map(|f| (f.outcome.as_str(), f.cause.as_str(), f.count)).collect();
        assert_eq!(
            got,
            vec![
                ("checks_failed", "`cargo test` failed", 2),
                ("checks_failed", "`make` timed out", 1),
                ("checks_failed", "gate: test file deleted", 1),
                ("agent_failed", "agent could not start", 1),
                ("agent_failed", "agent exited with code 2", 1),
                ("timeout", "iteration time limit", 1),
                ("rate_limited", "usage or rate limit", 1),
            ]
        );
        // Every iteration that is not green is in exactly one group.
        let failed: u64 = s.failures.iter().map(|f| f.count).sum();
        assert_eq!(failed, s.iterations - 1);
    }

    #[test]
    fn a_recorded_cause_groups_the_failure_and_its_text_is_not_read() {
        let s = stats(&[
            // The text reads like a failed check; the record says a gate caught it.
            rec(
                "a",
                "checks_failed",
                r#"{"cause":"protected_path","failure":"`cargo test` failed (exit 101):\nboom"}"#,
            ),
            // Reworded: no prefix the old parsing knew, and it would have read "agent failed".
            rec("a", "agent_failed", r#"{"cause":"frame_broken","exit_code":null,"failure":"branch moved"}"#),
            rec(
                "a",
                "agent_failed",
                r#"{"cause":"auth","exit_code":1,"failure":"the agent exited with code 1"}"#,
            ),
            // A check's command comes from the record's checks, never from the text.
            rec(
                "a",
                "checks_failed",
                r#"{"cause":"new_test_failures","failure":"a gate rejected the work: it deleted the test file t.rs","checks":[{"command":"cargo test","exit_code":101,"duration_ms":9,"failed_tests":["new"]}]}"#,
            ),
            rec(
                "a",
                "agent_failed",
                r#"{"cause":"agent_exit","exit_code":3,"failure":"the agent could not start: x"}"#,
            ),
            rec(
                "a",
                "interrupted",
                r#"{"cause":"crashed","failure":"ralph was killed during this iteration"}"#,
            ),
            // An old record beside them: its text is read.
            rec(
                "a",
                "checks_failed",
                r#"{"failure":"a gate rejected the work: it changed the protected path x"}"#,
            ),
            // A cause on a green record counts nothing.
            rec("a", "done", r#"{"cause":null}"#),
        ]);
        let got: Vec<(&str, Option<&str>, &str, u64)> = s
            .failures
            .iter()
            .map(|f| (f.outcome.as_str(), f.kind.map(Cause::as_str), f.cause.as_str(), f.count))
            .collect();
        assert_eq!(
            got,
            vec![
                ("checks_failed", Some("protected_path"), "gate: protected path changed", 2),
                ("checks_failed", Some("new_test_failures"), "`cargo test`: new test failures", 1),
                ("agent_failed", Some("frame_broken"), "agent changed the frame", 1),
                ("agent_failed", Some("auth"), "agent could not authenticate", 1),
                ("agent_failed", Some("agent_exit"), "agent exited with code 3", 1),
                ("interrupted", Some("crashed"), "ralph killed mid-iteration", 1),
            ]
        );
        // --json names the cause.
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["failures"][0]["kind"], "protected_path");
        assert_eq!(json["failures"][0]["cause"], "gate: protected path changed");
    }

    #[test]
    fn an_old_record_without_a_cause_is_grouped_by_its_text() {
        let s = stats(&[
            rec(
                "a",
                "timeout",
                r#"{"failure":"the agent was stopped after 1h (the run's time budget ran out)"}"#,
            ),
            rec(
                "a",
                "agent_failed",
                r#"{"exit_code":null,"failure":"the agent rewrote the branch's history"}"#,
            ),
        ]);
        let got: Vec<(Option<Cause>, &str)> = s.failures.iter().map(|f| (f.kind, f.cause.as_str())).collect();
        assert_eq!(got, vec![(None, "agent failed"), (Some(Cause::TimeBudget), "run time budget ran out")]);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["failures"][0]["kind"], serde_json::Value::Null);
    }

    #[test]
    fn tokens_cost_time_learnings_and_waits() {
        let s = stats(&[
            rec(
                "a",
                "rate_limited",
                r#"{"duration_ms":1000,"started_at":"2026-01-01T00:00:00.000Z","ended_at":"2026-01-01T00:00:01.000Z"}"#,
            ),
            rec(
                "a",
                "done",
                r#"{"duration_ms":3000,"started_at":"2026-01-01T00:01:01.500Z","ended_at":"2026-01-01T00:01:04.500Z","tokens":{"input":100,"output":50,"cache_read":0,"cache_write":0},"cost_usd":0.5,"learnings_added":["x","y"]}"#,
            ),
            rec(
                "b",
                "checks_failed",
                r#"{"duration_ms":2000,"tokens":{"input":10,"output":20,"cache_read":30,"cache_write":40},"cost_usd":0.25}"#,
            ),
        ]);
        assert_eq!(s.rate_limits, RateLimits { waits: 1, waited_ms: 60_500 });
        assert_eq!(s.tokens.total, 250);
        assert_eq!(s.tokens.iterations_reporting, 2);
        assert_eq!(s.tokens.per_task, Some(125.0));
        assert_eq!(s.tokens.per_done_task, Some(250.0));
        assert_eq!(s.cost_usd.total, 0.75);
        assert_eq!(s.cost_usd.per_done_task, Some(0.75));
        assert_eq!(s.per_task[0].tokens, Some(150));
        assert_eq!(s.per_task[1].cost_usd, Some(0.25));
        assert_eq!(s.per_task[0].time_ms, 4000);
        assert_eq!(s.learnings_added, 2);
        let t = s.iteration_ms.unwrap();
        assert_eq!((t.mean, t.median, t.p90, t.max), (2000.0, 2000, 3000, 3000));
    }

    #[test]
    fn tokens_cost_and_success_are_split_by_agent() {
        let s = stats(&[
            rec("a", "rate_limited", r#"{"agent":"claude","duration_ms":1000}"#),
            rec(
                "a",
                "done",
                r#"{"agent":"codex","tokens":{"input":100,"output":20,"cache_read":0,"cache_write":0},"cost_usd":0.25}"#,
            ),
            rec(
                "b",
                "checks_failed",
                r#"{"agent":"codex","tokens":{"input":10,"output":0,"cache_read":0,"cache_write":0}}"#,
            ),
            rec("b", "done", r#"{"agent":"claude","cost_usd":1.5,"duration_ms":4000}"#),
            rec("c", "progress", ""),
        ]);
        let row =
            |name: Option<&str>| s.per_agent.iter().find(|a| a.agent.as_deref() == name).unwrap().clone();
        let codex = row(Some("codex"));
        assert_eq!((codex.iterations, codex.green, codex.done, codex.rate_limited), (2, 1, 1, 0));
        assert_eq!(codex.success_rate, Some(0.5));
        assert_eq!((codex.tokens, codex.cost_usd), (Some(130), Some(0.25)));
        let claude = row(Some("claude"));
        assert_eq!((claude.iterations, claude.done, claude.rate_limited), (2, 1, 1));
        // The limit says nothing of the agent's work: one iteration seen through, green.
        assert_eq!(claude.success_rate, Some(1.0));
        assert_eq!((claude.tokens, claude.cost_usd, claude.time_ms), (None, Some(1.5), 5000));
        // A record from before `agent` was written counts under no name.
        assert_eq!(row(None).iterations, 1);
        assert_eq!(s.per_agent.iter().map(|a| a.iterations).sum::<u64>(), s.iterations);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["per_agent"][0]["success_rate"], 1.0, "{v}");
        let out = render(&s);
        assert!(out.contains("AGENT   ITERS  GREEN  DONE  LIMITED  SUCCESS    TOKENS"), "{out}");
        assert!(out.contains("claude      2      1     1        1     100%         -     $1.50"), "{out}");
        assert!(out.contains("codex       2      1     1        0      50%       130     $0.25"), "{out}");
        // One agent only: no split to show.
        assert!(!render(&stats(&[rec("a", "done", r#"{"agent":"claude"}"#)])).contains("AGENT"));
    }

    #[test]
    fn nothing_reported_is_null_not_zero() {
        let s = stats(&[rec("a", "checks_failed", "")]);
        assert_eq!(s.tokens.per_task, None);
        assert_eq!(s.cost_usd.per_done_task, None);
        assert_eq!(s.tasks.first_attempt_success_rate, None);
        assert_eq!(s.per_task[0].tokens, None);
        let empty = stats(&[]);
        assert_eq!(empty.iterations_to_done, None);
        assert_eq!(empty.iteration_ms, None);
        assert!(render(&empty).contains("No iterations recorded yet"));
    }

    #[test]
    fn torn_and_invalid_lines_are_skipped() {
        let good = rec("a", "done", "");
        let torn = &good[..good.len() / 2];
        let s = stats(&[good.clone(), "not json".into(), torn.into(), "   ".into(), good.clone()]);
        assert_eq!(s.iterations, 2);
        assert_eq!(s.skipped_lines, 2);
    }

    #[test]
    fn a_wait_does_not_span_runs() {
        let mut a = Aggregator::new();
        a.start_run();
        a.add_line(rec("a", "rate_limited", "").as_bytes());
        a.start_run();
        a.add_line(rec("a", "done", r#"{"started_at":"2026-01-02T00:00:00.000Z"}"#).as_bytes());
        let s = a.finish(None);
        assert_eq!(s.rate_limits, RateLimits { waits: 1, waited_ms: 0 });
    }

    #[test]
    fn the_table_shows_the_figures() {
        let s = stats(&[
            rec(
                "010-a",
                "done",
                r#"{"cost_usd":1.0,"tokens":{"input":1500,"output":0,"cache_read":0,"cache_write":0}}"#,
            ),
            rec(
                "020-b",
                "checks_failed",
                r#"{"checks":[{"command":"npm test","exit_code":1,"duration_ms":1}]}"#,
            ),
            rec("020-b", "done", ""),
        ]);
        let out = render(&s);
        assert!(out.contains("Stats for 1 run(s): 3 iteration(s)"), "{out}");
        assert!(out.contains("first-attempt done:  50% (1 of 2 done on their first iteration)"), "{out}");
        assert!(out.contains("iterations to done:  mean 1.5 · median 1 · p90 2 · max 2"), "{out}");
        assert!(out.contains("$1.00 total · $0.50 per task · $0.50 per done task"), "{out}");
        assert!(out.contains("1.5k total"), "{out}");
        assert!(out.contains("checks_failed  `npm test` failed      1"), "{out}");
        assert!(out.contains("020-b      2         1     1        2"), "{out}");
    }

    /// A record on `task` that started at `before`; `extra` as for [`rec`].
    fn at(task: &str, outcome: &str, before: &str, extra: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(&rec(task, outcome, extra)).unwrap();
        v["head_before"] = before.into();
        v.to_string()
    }

    fn run(a: &mut Aggregator, id: &str, branch: Option<&str>, lines: &[String]) {
        a.begin_run(RunInfo { run_id: id.into(), branch: branch.map(Into::into), ..RunInfo::default() });
        for l in lines {
            a.add_line(l.as_bytes());
        }
    }

    fn commits(lines: &[String], own: &[(&str, &str)]) -> u64 {
        let mut a = Aggregator::new();
        for (c, p) in own {
            a.tracker_mut().own_commit(c, p);
        }
        run(&mut a, "r", Some("main"), lines);
        a.finish(None).interventions.commits
    }

    #[test]
    fn a_start_where_ralph_did_not_leave_the_branch_is_a_commit_of_a_person() {
        // Where each record left the branch: head_after, else commit, else head_before.
        let chain = [
            at("a", "progress", "h0", r#"{"commit":"h1","head_after":"h1"}"#),
            at("a", "checks_failed", "h1", r#"{"head_after":"h1"}"#),
            // Written before head_after: its commit, or where it started.
            at("a", "progress", "h1", r#"{"commit":"h2"}"#),
            at("a", "checks_failed", "h2", ""),
            at("a", "done", "h2", ""),
        ];
        assert_eq!(commits(&chain, &[]), 0);
        // Two gaps, each one intervention however many commits it holds.
        let moved = [
            at("a", "progress", "h0", r#"{"commit":"h1","head_after":"h1"}"#),
            at("a", "checks_failed", "u1", r#"{"head_after":"u1"}"#),
            at("a", "checks_failed", "u1", ""),
            at("a", "done", "u2", ""),
        ];
        assert_eq!(commits(&moved, &[]), 2);
        // The first record of the first run on a branch is not judged.
        assert_eq!(commits(&[at("a", "done", "anything", "")], &[]), 0);
    }

    #[test]
    fn ralph_s_own_commits_are_not_a_person_s() {
        // A block, a red iteration's learnings: in head_after.
        let named = [
            at("a", "checks_failed", "h0", r#"{"blocked":true,"head_after":"block"}"#),
            at("b", "checks_failed", "block", r#"{"learnings_added":["x"],"head_after":"learned"}"#),
            // Committed, then blocked over the task's own limits: the block is the last.
            at("b", "progress", "learned", r#"{"commit":"h1","blocked":true,"head_after":"block2"}"#),
            at("c", "done", "block2", r#"{"commit":"h2","head_after":"h2"}"#),
        ];
        assert_eq!(commits(&named, &[]), 0);
        // A head_after that says ralph left it where it began: the move is a person's.
        let wrong = [
            at("a", "checks_failed", "h0", r#"{"blocked":true,"head_after":"h0"}"#),
            at("b", "done", "block", ""),
        ];
        assert_eq!(commits(&wrong, &[]), 1);
        // Between iterations (reopen, a breaker's block) or by `ralph learnings`: walked back
        // through their parents.
        let between = [at("a", "progress", "h0", r#"{"head_after":"h0"}"#), at("a", "done", "r2", "")];
        assert_eq!(commits(&between, &[("r1", "h0"), ("r2", "r1")]), 0);
        // A person's commit under ralph's is still found.
        assert_eq!(commits(&between, &[("r2", "u1")]), 1);
        assert_eq!(commits(&between, &[]), 1);
        // Old records (no head_after) that a commit of ralph's may follow are not judged.
        for old in [r#"{"blocked":true}"#, r#"{"learnings_added":["x"]}"#] {
            let lines = [at("a", "checks_failed", "h0", old), at("a", "done", "somewhere", "")];
            assert_eq!(commits(&lines, &[]), 0, "{old}");
        }
        let red = [at("a", "checks_failed", "h0", ""), at("a", "done", "somewhere", "")];
        assert_eq!(commits(&red, &[]), 1);
    }

    #[test]
    fn runs_pick_up_where_the_last_run_on_their_branch_left_it() {
        let mut a = Aggregator::new();
        run(&mut a, "1", Some("main"), &[at("a", "progress", "h0", r#"{"commit":"m1","head_after":"m1"}"#)]);
        // Another branch: its first record is not judged, and main's end is kept.
        run(&mut a, "2", Some("feature"), &[at("b", "progress", "f0", r#"{"head_after":"f0"}"#)]);
        run(&mut a, "3", Some("main"), &[at("a", "progress", "m1", r#"{"head_after":"m1"}"#)]);
        run(&mut a, "4", Some("main"), &[]);
        // Committed on main between runs 3 and 5 (4 had no records).
        run(&mut a, "5", Some("main"), &[at("a", "progress", "u1", r#"{"head_after":"u1"}"#)]);
        // No branch: not judged.
        run(&mut a, "6", None, &[at("a", "progress", "elsewhere", "")]);
        // A parallel run's records are not judged, and what follows them neither.
        run(&mut a, "7", Some("main"), &[at("a", "progress", "x", r#"{"worker":1}"#)]);
        run(&mut a, "8", Some("main"), &[at("a", "progress", "y", r#"{"head_after":"y"}"#)]);
        let s = a.finish(None);
        let by_run: Vec<(&str, u64)> =
            s.trend.iter().map(|r| (r.run_id.as_str(), r.interventions.commits)).collect();
        assert_eq!(by_run, [("1", 0), ("2", 0), ("3", 0), ("4", 0), ("5", 1), ("6", 0), ("7", 0), ("8", 0)]);
        assert_eq!(s.interventions.commits, 1);
    }

    #[test]
    fn spec_edits_reopens_and_unblocks_are_counted() {
        let mut a = Aggregator::new();
        run(
            &mut a,
            "1",
            None,
            &[
                // Edited while it ran.
                rec("a", "restarted", r#"{"spec_edited":true}"#),
                rec("a", "done", ""),
                // a ran again after it was done: its spec was edited (reopened).
                rec("a", "done", ""),
                // Edited while it ran, then reopened for that edit: one edit, not two.
                rec("b", "done", r#"{"spec_edited":true}"#),
                rec("b", "done", ""),
                rec("c", "checks_failed", r#"{"blocked":true}"#),
            ],
        );
        // Unblocked between runs: counted in the run that found it.
        run(&mut a, "2", None, &[rec("d", "done", ""), rec("c", "done", "")]);
        let s = a.finish(None);
        let rows: Vec<(u64, u64)> =
            s.trend.iter().map(|r| (r.interventions.spec_edits, r.interventions.unblocks)).collect();
        assert_eq!(rows, [(3, 0), (0, 1)]);
        assert_eq!(
            s.interventions,
            Interventions {
                total: 4,
                commits: 0,
                spec_edits: 3,
                unblocks: 1,
                stops: 0,
                learnings_removed: 0,
                notes: 0
            }
        );
    }

    #[test]
    fn the_trend_has_the_three_signals_of_each_run() {
        let mut a = Aggregator::new();
        run(
            &mut a,
            "20260101-000000",
            None,
            &[
                rec("a", "checks_failed", ""),
                rec("a", "done", ""),
                rec("b", "done", ""),
                rec("c", "agent_failed", ""),
            ],
        );
        a.begin_run(RunInfo {
            run_id: "20260102-000000".into(),
            branch: None,
            stops: 2,
            learnings_removed: 1,
        });
        // c's failure in run 1 counts toward its resolution in run 2.
        a.add_line(rec("c", "done", "").as_bytes());
        run(&mut a, "20260103-000000", None, &[rec("d", "progress", "")]);
        a.removed_before_runs(1);
        let s = a.finish(None);
        let t = &s.trend;
        assert_eq!(t.len(), 3);
        assert_eq!((t[0].iterations, t[0].tasks_done), (4, 2));
        assert_eq!(t[0].first_attempt_success, Some(0.5));
        assert_eq!(t[0].iterations_to_resolution, Some(1));
        assert_eq!(t[0].interventions.total, 0);
        assert_eq!(t[0].interventions_per_done_task, Some(0.0));
        assert_eq!(t[1].first_attempt_success, Some(0.0));
        assert_eq!(t[1].iterations_to_resolution, Some(2));
        assert_eq!((t[1].interventions.stops, t[1].interventions.learnings_removed), (2, 1));
        assert_eq!(t[1].interventions.total, 3);
        assert_eq!(t[1].interventions_per_done_task, Some(3.0));
        assert_eq!((t[2].first_attempt_success, t[2].iterations_to_resolution), (None, None));
        assert_eq!(t[2].interventions_per_done_task, None);
        // The total holds a removal made before any run read.
        assert_eq!(s.interventions.learnings_removed, 2);
        assert_eq!(s.interventions.total, 4);
        assert_eq!(s.interventions_per_done_task, Some(4.0 / 3.0));

        // --json: the documented names.
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["trend"][1]["run_id"], "20260102-000000");
        assert_eq!(json["trend"][1]["first_attempt_success"], 0.0);
        assert_eq!(json["trend"][1]["iterations_to_resolution"], 2);
        assert_eq!(
            json["trend"][1]["interventions"],
            serde_json::json!({"total": 3, "commits": 0, "spec_edits": 0, "unblocks": 0, "stops": 2, "learnings_removed": 1, "notes": 0})
        );
        assert_eq!(json["trend"][2]["iterations_to_resolution"], serde_json::Value::Null);
        assert_eq!(json["interventions"]["total"], 4);

        let out = render(&s);
        assert!(
            out.contains("  interventions:       4 · 1.33 per done task (2 stops, 2 learnings removed)"),
            "{out}"
        );
        assert!(out.contains("Trend (oldest run first)\n  RUN              ITERS  DONE  FIRST TRY  TO DONE  PER DONE  INTERVENTIONS\n  20260101-000000      4     2        50%        1      0.00  0\n  20260102-000000      1     1         0%        2      3.00  3 (2 stops, 1 learning removed)\n  20260103-000000      1     0          -        -         -  0\n"), "{out}");
    }

    #[test]
    fn each_note_an_iteration_carried_is_an_intervention() {
        let mut a = Aggregator::new();
        a.add_line(br#"{"task":"a","started_at":"2026-01-01T00:00:00Z","ended_at":"2026-01-01T00:01:00Z","duration_ms":60000,"outcome":"progress","checks":[],"blocked":false,"notes":["use the http client","skip the docs"]}"#);
        a.add_line(br#"{"task":"a","started_at":"2026-01-01T00:02:00Z","ended_at":"2026-01-01T00:03:00Z","duration_ms":60000,"outcome":"done","checks":[],"blocked":false}"#);
        let s = a.finish(None);
        assert_eq!((s.interventions.notes, s.interventions.total), (2, 2));
        assert!(render(&s).contains("(2 notes)"), "{}", render(&s));
    }

    #[test]
    fn the_table_shows_the_newest_runs_of_a_long_trend() {
        let mut a = Aggregator::new();
        for i in 0..TREND_ROWS + 5 {
            run(&mut a, &format!("run-{i:03}"), None, &[rec("a", "progress", "")]);
        }
        let s = a.finish(None);
        assert_eq!(s.trend.len(), TREND_ROWS + 5);
        let out = render(&s);
        assert!(
            out.contains(&format!(
                "Trend (oldest run first; the last {TREND_ROWS} of {}, all in --json)",
                TREND_ROWS + 5
            )),
            "{out}"
        );
        assert!(!out.contains("run-004") && out.contains("run-005") && out.contains("run-024"), "{out}");
    }

    #[test]
    fn a_person_s_stop_is_read_from_run_json() {
        let meta = |stops: u32, end: Option<&str>| {
            let mut m: crate::state::RunMeta = serde_json::from_str(
                r#"{"run_id":"r","pid":1,"started_at":"2026-01-01T00:00:00.000Z","iterations":1,"branch":"main"}"#,
            )
            .unwrap();
            m.stops = stops;
            m.end_reason = end.map(Into::into);
            RunInfo::of(&m)
        };
        let stop = "stopped by `ralph stop` (resume with `ralph run`)";
        assert_eq!(meta(0, Some(stop)).stops, 1, "a run.json written before stops was kept");
        assert_eq!(meta(0, Some("interrupted")).stops, 1);
        assert_eq!(meta(3, Some(stop)).stops, 3, "the last stop is in the count");
        assert_eq!(meta(2, Some("backlog done")).stops, 2, "stopped, resumed and finished");
        assert_eq!(meta(0, Some("stopped while waiting for specs")).stops, 0);
        assert_eq!(meta(0, None).stops, 0);
        assert_eq!(meta(0, None).branch.as_deref(), Some("main"));
    }

    #[test]
    fn spread_uses_nearest_rank() {
        let mut v: Vec<u64> = (1..=10).rev().collect();
        let s = Spread::of(&mut v).unwrap();
        assert_eq!((s.mean, s.median, s.p90, s.max), (5.5, 5, 9, 10));
        assert_eq!(Spread::of(&mut [7]).unwrap().p90, 7);
        assert_eq!(human_ms(61_000), "1m01s");
        assert_eq!(human_ms(999), "999ms");
        assert_eq!(human_ms(7_260_000), "2h01m");
        assert_eq!(human_tokens(500_000.0), "500k");
        assert_eq!(human_tokens(1_410_000.0), "1.41M");
        assert_eq!(human_tokens(2_000_000.0), "2M");
        assert_eq!(human_tokens(12_345.0), "12.3k");
    }
}
