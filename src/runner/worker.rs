//! `ralph work-slot`: one iteration of a parallel run's worker, in its slot's worktree. The
//! coordinator (`crate::parallel`) starts it with the task, the iteration's number and the
//! run's folder; it runs the single loop's iteration there (agent, checks, gates, commit or
//! revert) and hands back a [`WorkerResult`] in the iteration's folder.
//!
//! Invariants: a worker writes only its slot (worktree, branch, `.ralph/` in it) and its own
//! iteration's folder. The task's status, AGENTS.md, the learnings store, blocks, budgets and
//! `iterations.jsonl` are the coordinator's: the worker's commit holds the agent's work alone.
//! It never starts workers: `RALPH_WORKER` is set in its environment (and its agent's), and
//! `ralph run -j` refuses to run under it. It dies with its coordinator (`PR_SET_PDEATHSIG`):
//! a coordinator killed with -9 leaves no agent running on.

use super::iteration;
use crate::agent::scan::Findings;
use crate::error::CliError;
use crate::record::IterationRecord;
use crate::reporter::Reporter;
use crate::signal::Stop;
use crate::state::{self, RunLock, State};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The environment variable naming the worker (its number) in a worker and its agent.
pub const RALPH_WORKER: &str = "RALPH_WORKER";

/// The file a worker leaves in its iteration's folder.
pub const RESULT: &str = "result.json";

/// What a worker hands back.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WorkerResult {
    /// The iteration's record as the worker saw it: `commit` is its commit on the slot's
    /// branch (not landed yet), or none.
    pub record: IterationRecord,
    /// A usage limit the agent hit: when it lifts (RFC 3339), if it said, and its words.
    pub limit: Option<(Option<String>, String)>,
    /// A failure no retry fixes (bad credentials, a missing model), in words.
    pub fatal: Option<String>,
    /// What the agent proposed to learn, for the coordinator to admit.
    pub findings: Findings,
}

impl WorkerResult {
    /// Reads the result a worker left in `iter_dir`.
    pub fn load(iter_dir: &Path) -> Option<WorkerResult> {
        serde_json::from_slice(&crate::fsx::read(&iter_dir.join(RESULT)).ok()?).ok()
    }
}

/// What the coordinator tells a worker.
#[derive(Debug, Clone)]
pub struct SlotTask {
    pub slot: PathBuf,
    pub task: String,
    pub run_id: String,
    pub iteration: u32,
    pub run_dir: PathBuf,
    pub worker: u32,
    pub time_left: Option<Duration>,
    pub agent: Option<String>,
    /// The agent that runs the iteration, by name, when not the main one (a fallback, the
    /// task's own `agent:`).
    pub agent_name: Option<String>,
    /// A prompt template to use instead of the configured one (`ralph eval`'s candidate).
    pub template: Option<PathBuf>,
}

impl SlotTask {
    /// The `ralph work-slot` command (`exe`, ralph's own program) that runs this iteration:
    /// its output goes to the iteration folder's `worker.log` (made here), its stdin is
    /// `/dev/null`, and `RALPH_WORKER` names the worker. Parallel runs, evaluations and remote
    /// workers all start their iterations so.
    pub fn command(&self, exe: &Path) -> Result<tokio::process::Command, CliError> {
        let dir = crate::logs::iter_dir(&self.run_dir, self.iteration);
        crate::fsx::create_dir_all(&dir)
            .map_err(|e| CliError::failure(format!("cannot create {}: {e}", dir.display())))?;
        let log = crate::fsx::create(&dir.join("worker.log"))
            .map_err(|e| CliError::failure(format!("cannot create the worker's log: {e}")))?;
        let err =
            log.try_clone().map_err(|e| CliError::failure(format!("cannot share the worker's log: {e}")))?;
        let mut cmd = tokio::process::Command::new(exe);
        cmd.arg("-C").arg(&self.slot).arg("work-slot");
        cmd.args([
            "--task",
            &self.task,
            "--run-id",
            &self.run_id,
            "--iteration",
            &self.iteration.to_string(),
        ]);
        cmd.arg("--run-dir").arg(&self.run_dir);
        cmd.args(["--worker", &self.worker.to_string()]);
        if let Some(left) = self.time_left {
            cmd.args(["--time-left-ms", &left.as_millis().to_string()]);
        }
        if let Some(a) = &self.agent {
            cmd.args(["--agent", a]);
        }
        if let Some(a) = &self.agent_name {
            cmd.args(["--agent-name", a]);
        }
        if let Some(t) = &self.template {
            cmd.arg("--template").arg(t);
        }
        cmd.env(RALPH_WORKER, self.worker.to_string());
        cmd.stdin(std::process::Stdio::null()).stdout(log).stderr(err);
        Ok(cmd)
    }
}

/// Runs the iteration; the exit code is 0 when a result was written, whatever the outcome.
pub async fn run(t: SlotTask, reporter: &mut dyn Reporter, stop: Stop) -> Result<u8, CliError> {
    die_with_parent();
    if !crate::process::reaper::become_subreaper() {
        tracing::debug!("not a child subreaper: escaped processes are not ended");
    }
    let root = t.slot.clone();
    let mut cfg = super::load_config(&root, &crate::config::Overrides { agent: t.agent.clone() })?;
    if let Some(template) = &t.template {
        cfg.template = Some(template.clone());
    }
    let template = super::validate_inputs(&root, &cfg)?;
    let secrets = cfg.secrets();
    if let Some(name) = &t.agent_name {
        cfg.agent = cfg.agent_named(name).ok_or_else(|| {
            CliError::failure(format!(
                "the agent `{name}` is not in the worker's {}",
                crate::config::FILE_NAME
            ))
        })?;
    }
    let ralph_dir = state::ensure_ralph_dir(&root)?;
    let lock = RunLock::acquire(&ralph_dir)?;
    let backlog = crate::backlog::Backlog::load(&root, &cfg.source(&root))?;
    let task = backlog
        .get(&t.task)
        .cloned()
        .ok_or_else(|| CliError::failure(format!("task {} is not in the worker's backlog", t.task)))?;

    let worktree = crate::worktree::Worktree::open(&root);
    worktree.note_index();
    if let Some(head) = crate::git::head(&root)?
        && crate::git::dirty_entries(&root)?.is_empty()
    {
        worktree.settle_if_unchanged(&head);
    }
    crate::git::mark_run(&t.run_id, &root);
    let mut state = State::load(&root)?;
    let frame = super::frame::Memory::new(&root).for_worker().holding(lock);
    let spec_watch = crate::watch::SpecWatch::new();
    let notes = crate::notes::handed(&crate::logs::iter_dir(&t.run_dir, t.iteration));
    let end = iteration::run(
        iteration::Iteration {
            wt: &worktree,
            spec_watch: &spec_watch,
            frame: &frame,
            cfg: &cfg,
            template: &template,
            backlog: &backlog,
            task: &task,
            run_id: &t.run_id,
            run_dir: &t.run_dir,
            number: t.iteration,
            secrets: &secrets,
            stop: &stop,
            time_left: t.time_left,
            worker: Some(t.worker),
            notes: &notes,
        },
        &mut state,
        reporter,
    )
    .await?;
    worktree.unwatch_all();
    frame.unwatch_all();
    let result = WorkerResult {
        record: end.record,
        limit: end.limit.map(|l| (l.reset_at.map(|r| r.to_string()), l.message)),
        fatal: end.fatal.map(|f| f.message()),
        findings: end.findings.unwrap_or_default(),
    };
    let dir = crate::logs::iter_dir(&t.run_dir, t.iteration);
    let bytes = serde_json::to_vec(&result)
        .map_err(|e| CliError::failure(format!("cannot write the worker's result: {e}")))?;
    state::atomic_write(&dir.join(RESULT), &bytes)?;
    state::flush();
    Ok(crate::exit_code::OK)
}

/// Asks the kernel to end this process when its parent (the coordinator) dies: its SIGTERM
/// stops the agent and puts the slot back, as Ctrl-C would.
fn die_with_parent() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and changes nothing else.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
    }
}
