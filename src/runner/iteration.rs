//! One iteration, start to end: render and save the prompt, run the agent, run the checks,
//! then commit (green) or save the diff and revert (red), keep the learnings either way,
//! update the task's state and append the record.
//!
//! Invariants: when this returns, the working tree is either committed or back at
//! `head_before` (with `--allow-dirty`: back at the snapshot taken at the start); `.ralph/`
//! is never staged or reverted; the record is appended last, after every change is durable.

use super::frame::Frame;
use super::revert::{Back, revert};
use super::task_rules;
use super::verdict::{self, Judgement, Verdict};
use crate::agent::limits::{self, Fatal, Limit, Signal};
use crate::agent::output::{Format, Parser, Report};
use crate::agent::scan::Findings;
use crate::agent::session::{Session, Watch};
use crate::agent::{self, IterationEnv};
use crate::backlog::{Backlog, Spec, Status, spec};
use crate::checks;
use crate::config::{Config, SpecEdit};
use crate::error::CliError;
use crate::fault;
use crate::git::{self, CommitResult};
use crate::learnings;
use crate::logs;
use crate::process::{self, Ending};
use crate::prompt::{self, Template};
use crate::record::{self, Cause, IterationRecord, Outcome};
use crate::reporter::{Phase, Reporter};
use crate::secrets::{Secrets, StreamMasker};
use crate::signal::Stop;
use crate::state::{self, OwnCommit, RALPH_DIR, State};
use crate::watch::tree::Changes;
use crate::worktree::Worktree;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Lines of the agent's output shown to the next iteration when the agent failed.
const AGENT_TAIL_LINES: usize = 40;

/// Everything one iteration needs.
pub(crate) struct Iteration<'a> {
    /// The checkout: its root, and the git commands that stage, commit and revert, which keep
    /// the working tree's watch (sparing the scans of an unchanged tree) right.
    pub wt: &'a Worktree,
    /// The run's watcher of the running task's spec.
    pub spec_watch: &'a crate::watch::SpecWatch,
    /// What the frame read, kept from one iteration to the next while nothing changed it.
    pub frame: &'a super::frame::Memory,
    pub cfg: &'a Config,
    pub template: &'a Template,
    pub backlog: &'a Backlog,
    pub task: &'a Spec,
    pub run_id: &'a str,
    pub run_dir: &'a Path,
    pub number: u32,
    pub secrets: &'a Secrets,
    pub stop: &'a Stop,
    /// What is left of the run's time budget: caps the agent's wall clock.
    pub time_left: Option<Duration>,
    /// A parallel run's worker slot running this iteration in its own worktree (`ralph run
    /// -j N`): the iteration commits only the agent's work, on the slot's branch, and hands
    /// its result back; the coordinator alone writes the task's status, AGENTS.md, the
    /// learnings, blocks and the run's records (see `crate::parallel`).
    pub worker: Option<u32>,
    /// Notes from the person running the loop (`ralph note`), taken for this iteration: its
    /// prompt carries them and its record lists them.
    pub notes: &'a [String],
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> CliError {
    let full = e.kind() == std::io::ErrorKind::StorageFull;
    let err = CliError::failure(format!("cannot {what} {}: {e}", path.display()));
    if full {
        err.hint("free some space, then `ralph run` again: it resumes the run, records the cut iteration as interrupted and keeps its diff as rejected.patch")
    } else {
        err
    }
}

/// Runs one iteration and returns its record (already appended to `iterations.jsonl`): the
/// preparation, the agent's run, the looks at what it must not have touched, the verdict on
/// its ending, the checks the verdict calls for, settlement (commit or revert), the task's
/// new state and the record, in that order.
pub(crate) async fn run(
    it: Iteration<'_>,
    state: &mut State,
    reporter: &mut dyn Reporter,
) -> Result<IterationEnd, CliError> {
    let prep = prepare(&it, state, reporter)?;
    // Before the frame's snapshot: the baseline round writes ralph's state.
    let baseline = baseline(&it, &prep.dir, &prep.head_before, state, reporter).await?;
    let frame = Frame::take(it.wt.root(), it.run_dir, it.frame);
    // Decided on the tree before the agent: a file it creates is no check script.
    let protected = crate::gates::protected_patterns(
        it.cfg.protected.as_deref(),
        &task_checks(&it).commands,
        it.wt.root(),
    );
    let spec_dirs = spec_dirs(it.wt.root(), it.backlog);
    let mut agent = run_agent(&it, &prep, reporter).await?;
    let broke = look_after_agent(&it, &prep, &frame)?;
    let verdict = verdict::classify(&agent.seen(&it, broke), it.cfg.agent.format == Format::AiderText);

    let mut judged = Judged {
        head_before: prep.head_before.clone(),
        staged: None,
        spec_bodies: it.backlog.tasks.iter().map(|t| (t.label(), t.clone())).collect(),
        prev_counts: state.test_counts.clone(),
        protected,
        records: Vec::new(),
        counts: Vec::new(),
        review: None,
        task_iteration: prep.ts.iterations + 1,
        baseline,
        cause: None,
        spec_dirs,
    };
    if agent.spec_edited {
        // The user's edit, not the agent's: no gate blames the agent for it.
        judged.spec_bodies.remove(&it.task.label());
    }
    let mut j = judge(&it, &prep, &agent, verdict, &mut judged, reporter).await?;

    // The checks (and a reviewer) may leave daemons too.
    agent.escaped += process::reaper::sweep(it.cfg.agent.kill_grace);
    look_after_checks(&it, &prep, &frame, &mut judged, &mut j)?;
    if agent.escaped > 0 {
        reporter.line(&format!(
            "ended {} process(es) that escaped the agent's or the checks' process group",
            agent.escaped
        ));
    }

    // Learnings are admitted whatever the outcome: failures teach the most. A worker hands
    // them to its coordinator, which admits them into the one store.
    let mut store =
        if it.worker.is_some() { learnings::Store::default() } else { learnings::Store::load(it.wt.root())? };
    let provenance = learnings::Provenance {
        task: it.task.id.clone(),
        run_id: it.run_id.to_string(),
        iteration: it.number,
        agent: it.cfg.agent.name.clone(),
        model: agent.report.model.clone().or_else(|| it.cfg.agent.model.clone()),
        failure: j.failure.as_deref().and_then(|f| f.lines().next()).map(str::to_string),
    };
    let admitted = if it.worker.is_some() {
        learnings::Admitted::default()
    } else {
        store.admit(&agent.findings, &provenance, &it.task.body, it.secrets, &it.cfg.learnings)
    };
    for r in &admitted.rejected {
        reporter.line(&format!("learning not kept ({}): {}", r.reason, r.text));
    }
    let learnings_added = admitted.added.clone();

    let settled = settle(&it, &prep, &agent, &mut j, &judged, &mut store, &learnings_added, state, reporter)?;
    if admitted.changed() {
        store.save(it.wt.root())?;
    }
    if j.outcome == Outcome::Interrupted {
        j.failure.get_or_insert_with(|| {
            "the iteration was interrupted (ralph was stopped) and its changes were reverted".into()
        });
    }

    // The task's state, and blocking after the last attempt.
    if let Some(sha) = &settled.commit {
        let counts = std::mem::take(&mut judged.counts);
        task_rules::after_commit(
            state,
            sha,
            counts,
            judged.baseline.is_some(),
            &judged.records,
            &it.task.checks,
        );
    }
    let done = task_rules::Settled {
        outcome: j.outcome,
        committed: settled.commit.is_some(),
        failure: j.failure.as_deref(),
        progress: agent.findings.progress.clone().or_else(|| j.note.clone()),
        tokens: agent.report.tokens.map_or(0, |t| t.total()),
        elapsed_ms: u64::try_from(prep.t0.elapsed().as_millis()).unwrap_or(u64::MAX),
        run_id: it.run_id,
        iteration: it.number,
        spec_fingerprint: spec::fingerprint(&it.task.body),
        agent_unusable: j.fatal.is_some(),
    };
    let max_attempts = it.task.max_attempts.unwrap_or(it.cfg.budget.max_attempts);
    let block_reason = task_rules::settle(state.task_mut(&it.task.id), &done, max_attempts, &it.cfg.budget);
    let blocked = block_reason.is_some() && it.worker.is_none();
    let blocked_reason = block_reason.clone().filter(|_| blocked);
    let mut block_commit = None;
    if let (Some(reason), None) = (block_reason, it.worker) {
        block_commit = block(it.wt, it.task, &reason, it.run_id, it.number, state, reporter)?;
    }
    state.save(it.wt.root())?;
    fault::point("before_record");

    let findings_of_worker = it.worker.map(|_| agent.findings.clone());
    let record = make_record(
        &it,
        prep,
        agent,
        &mut j,
        &mut judged,
        settled,
        learnings_added,
        admitted.rejected,
        blocked,
        block_commit,
    );
    if it.worker.is_none() {
        let records = logs::records_path(it.run_dir);
        record::append(&records, &record).map_err(|e| io_err("write", &records, e))?;
        fault::point("after_record");
        reporter.iteration_ended(&record);
    }
    Ok(IterationEnd {
        record,
        limit: j.limit,
        fatal: j.fatal,
        findings: findings_of_worker,
        blocked: blocked_reason,
    })
}

/// What the iteration's start established: where it began and what the agent is given.
struct Prepared {
    started_at: String,
    t0: Instant,
    dir: PathBuf,
    head_before: String,
    branch_before: Option<String>,
    spec_before: String,
    /// The `--allow-dirty` snapshot tree, if the iteration started dirty.
    snapshot: Option<String>,
    started_json: Vec<u8>,
    prompt_text: String,
    prompt_path: PathBuf,
    /// The task's state when the iteration began.
    ts: state::TaskState,
}

impl Prepared {
    fn framed<'a>(&'a self, frame: &'a Frame) -> Framed<'a> {
        Framed {
            frame,
            dir: &self.dir,
            head_before: &self.head_before,
            branch_before: self.branch_before.as_deref(),
            prompt: &self.prompt_text,
            started: &self.started_json,
        }
    }
}

/// The iteration's folder, where it began (HEAD, branch, spec, a snapshot of a dirty tree),
/// `started.json` for recovery, and the prompt.
fn prepare(it: &Iteration<'_>, state: &State, reporter: &mut dyn Reporter) -> Result<Prepared, CliError> {
    let root = it.wt.root();
    let task = it.task;
    let started_at = logs::now_rfc3339();
    let t0 = Instant::now();
    let dir = logs::iter_dir(it.run_dir, it.number);
    crate::fsx::create_dir_all(&dir).map_err(|e| io_err("create", &dir, e))?;
    let ralph_dir = root.join(RALPH_DIR);

    let head_before = git::head(root)?.ok_or_else(|| CliError::failure("HEAD disappeared during the run"))?;
    let branch_before = git::current_branch(root)?;
    let spec_path = root.join(&task.path);
    let spec_before = crate::fsx::read_input(&spec_path).map_err(|e| io_err("read", &spec_path, e))?;
    // Uncommitted changes at the start (--allow-dirty, or the user editing specs or ralph.toml
    // while the loop runs) are snapshotted, so a revert puts them back instead of losing them.
    // No scan when the working tree's watch vouches that nothing changed since ralph's commit.
    let unchanged = it.wt.unchanged(&head_before);
    let snapshot = if !unchanged && !git::dirty_entries(root)?.is_empty() {
        Some(it.wt.snapshot(&ralph_dir.join("snapshot-index"))?)
    } else {
        None
    };
    // What a run resumed after a crash needs to put this iteration right.
    let started = Started {
        task: task.id.clone(),
        started_at: started_at.clone(),
        head_before: head_before.clone(),
        branch: branch_before.clone(),
        snapshot: snapshot.clone(),
        format: it.cfg.agent.format,
        worker: it.worker,
        agent: Some(it.cfg.agent.name.clone()),
    };
    let started_json = serde_json::to_vec(&started).unwrap_or_default();
    // The folder is new: no temporary file and rename needed for a whole file.
    state::create_later(&dir.join(STARTED), &started_json)?;
    fault::point("iteration_started");

    let ts = state.task(&task.id);
    let attempt = ts.attempts + 1;
    let prompt_text = it.secrets.mask(&it.template.render(&prompt_context(it, &ts, attempt))?);
    let prompt_path = dir.join("prompt.md");
    // A log, like agent.log: no sync (recovery reads started.json, never the prompt).
    crate::fsx::write(&prompt_path, prompt_text.as_bytes()).map_err(|e| io_err("write", &prompt_path, e))?;
    reporter.iteration_started(it.number, &task.id, &task.title, attempt);
    Ok(Prepared {
        started_at,
        t0,
        dir,
        head_before,
        branch_before,
        spec_before,
        snapshot,
        started_json,
        prompt_text,
        prompt_path,
        ts,
    })
}

/// What happened while the agent ran: how it ended, what it reported and said, and what ralph
/// noticed around it.
struct AgentRun {
    /// How the process ended; `Err` with why when it could not start.
    finished: Result<process::Finished, String>,
    report: Report,
    findings: Findings,
    /// Processes that escaped the agent's group, ended since.
    escaped: usize,
    log_capped: bool,
    /// The user edited the running task's spec.
    spec_edited: bool,
    /// ... and the agent is stopped for it, the task to run again.
    restart: bool,
    /// The spec file as the user left it: a revert must not take their edit back.
    spec_kept: Option<Vec<u8>>,
    timeout: Duration,
    /// The run's time budget, not the iteration's limit, set `timeout`.
    budget_cuts: bool,
    /// The agent's last output, masked.
    tail: String,
}

impl AgentRun {
    /// What the verdict is drawn from.
    fn seen(&self, it: &Iteration<'_>, broke: Option<String>) -> verdict::Seen {
        let (ending, exit_code) = match &self.finished {
            Ok(f) => (Ok(f.ending), f.exit_code),
            Err(e) => (Err(e.clone()), None),
        };
        let failed = exit_code != Some(0) || self.report.is_error;
        let text_agent = it.cfg.agent.format == Format::AiderText;
        verdict::Seen {
            restart: self.restart,
            broke,
            ending,
            exit_code,
            is_error: self.report.is_error,
            error_message: self.report.error_message.as_deref().map(|m| it.secrets.mask(m)),
            reported_limit: self.report.limit.clone(),
            signal: (matches!(self.finished, Ok(f) if f.ending == Ending::Exited) && (failed || text_agent))
                .then(|| signal(&self.report, &self.tail, failed))
                .flatten(),
            tail: self.tail.clone(),
            timeout: self.timeout,
            budget_cuts: self.budget_cuts,
            idle_timeout: it.cfg.agent.idle_timeout,
            context: (self.report.context_tokens.unwrap_or(0), it.cfg.budget.context_tokens.unwrap_or(0)),
        }
    }

    /// The exit code and leaked output the record keeps: none for a restarted agent.
    fn exit(&self) -> (Option<i32>, bool) {
        match &self.finished {
            Ok(f) if !self.restart => (f.exit_code, f.output_leaked),
            _ => (None, false),
        }
    }
}

/// Runs the agent: its log (capped, masked), its output parsed as it flows, the spec watched
/// for the user's edits, the context budget, and the processes that escaped it ended after.
async fn run_agent(
    it: &Iteration<'_>,
    prep: &Prepared,
    reporter: &mut dyn Reporter,
) -> Result<AgentRun, CliError> {
    let (root, task, dir) = (it.wt.root(), it.task, &prep.dir);
    let env = IterationEnv {
        run_id: it.run_id.to_string(),
        iteration: it.number,
        task: task.id.clone(),
        task_iteration: prep.ts.iterations + 1,
        iter_dir: dir.clone(),
    };
    let mut req =
        agent::request(&it.cfg.agent, &it.cfg.sandbox, root, &prep.prompt_text, &prep.prompt_path, &env)?;
    // The notifiers' URLs and tokens are ralph's, not the agent's (nor an allowlist's).
    let notifiers: Vec<&str> = it.cfg.notify.iter().flat_map(|n| n.sink.env_names()).collect();
    req.env.retain(|(k, _)| !notifiers.contains(&k.as_str()));
    req.env_remove.extend(notifiers.iter().map(|s| s.to_string()));
    let log_path = dir.join("agent.log");
    let budget_cuts = it.time_left.is_some_and(|t| t < it.cfg.agent.timeout);
    let timeout = it.time_left.map_or(it.cfg.agent.timeout, |t| t.min(it.cfg.agent.timeout));
    // The user may edit the running task's spec: `restart` stops the agent at once (its own
    // token, so the run goes on), `finish` lets it end. Either way the agent's tool calls tell
    // whether the agent wrote the spec instead (then the spec-body gate judges it).
    let agent_cancel = it.stop.cancel.child_token();
    let spec_rel = task.path.to_string_lossy().into_owned();
    // Three restarts in a row end the restarting: whoever keeps editing the spec (an agent
    // whose writes ralph cannot see, say) must not spin the loop; the iteration then finishes.
    let restartable = it.cfg.on_spec_edit == SpecEdit::Restart && prep.ts.restarts < MAX_RESTARTS;
    let task_watch = restartable.then(|| {
        let cancel = agent_cancel.clone();
        it.spec_watch.task(root, task, move || cancel.cancel())
    });
    reporter.phase(Phase::Agent);
    let mut session = Session::new(
        &it.cfg.agent,
        "agent",
        &req,
        &prep.prompt_text,
        it.secrets,
        &agent_cancel,
        &it.stop.force,
    );
    session.limits.timeout = timeout;
    session.watch_writes = Some(&spec_rel);
    let mut watch = AgentWatch {
        reporter: &mut *reporter,
        usage_path: dir.join(USAGE),
        usage_saved: None,
        context_limit: it.cfg.budget.context_tokens,
    };
    let ended = session.run(&log_path, &mut watch).await.map_err(|e| io_err("create", &log_path, e))?;
    let escaped = process::reaper::sweep(it.cfg.agent.kill_grace);
    if let Some(e) = ended.write_error {
        // A full disk or an unwritable .ralph/: the agent was stopped; so is the run.
        return Err(io_err("write", &log_path, e));
    }
    fault::point("agent_exited");
    drop(task_watch);
    // A spec that is gone (or a story removed) is no edit to restart on: the gate and the
    // status write deal with it.
    let spec_edited = crate::backlog::current_body(root, task)
        .is_some_and(|now| now.trim() != task.body.trim() && !ended.wrote_watched);
    let restart = spec_edited && restartable && !it.stop.cancel.is_cancelled();
    let spec_kept = if spec_edited {
        crate::fsx::read_input(&root.join(&task.path)).ok().map(String::into_bytes)
    } else {
        None
    };
    if spec_edited {
        reporter.line(&format!(
            "{} was edited during iteration {}: {}",
            task.label(),
            it.number,
            if restart {
                "its agent is stopped and the task runs again with the new spec"
            } else {
                "the iteration finishes on the spec it started with; the edit applies from the next one"
            }
        ));
    }
    let (report, findings) = (ended.report, ended.findings);
    let tail = it.secrets.mask(&checks::last_lines(&findings.tail, AGENT_TAIL_LINES));
    Ok(AgentRun {
        finished: ended.finished.map_err(|e| crate::error::chain(&e)),
        report,
        findings,
        escaped,
        log_capped: ended.log_capped,
        spec_edited,
        restart,
        spec_kept,
        timeout,
        budget_cuts,
        tail,
    })
}

/// Puts back what the agent must not have touched (the branch, its history, `.ralph/` out of
/// git, files hidden from git, the iteration's logs, the frame) and says what it changed, if
/// anything.
fn look_after_agent(it: &Iteration<'_>, prep: &Prepared, frame: &Frame) -> Result<Option<String>, CliError> {
    let untouched = it.wt.index_as_settled(&prep.head_before);
    frame_breaks(it, &prep.framed(frame), untouched)
}

/// After the checks and a reviewer: they ran code the agent wrote (its tests, a conftest.py)
/// or were an agent, so what they changed is held to the agent's frame and, if the work is to
/// be kept, to its gates, or it would be committed unjudged.
fn look_after_checks(
    it: &Iteration<'_>,
    prep: &Prepared,
    frame: &Frame,
    judged: &mut Judged,
    j: &mut Judgement,
) -> Result<(), CliError> {
    if judged.records.is_empty() {
        return Ok(());
    }
    // The gates' `git add` left the index as the watch noted it.
    let untouched = it.wt.changes() == Changes::None;
    let mut broke: Vec<String> = frame_breaks(it, &prep.framed(frame), untouched)?.into_iter().collect();
    let mut broke_cause = Cause::FrameBroken;
    let green = j.outcome.is_green() || j.kept_after_stop;
    if broke.is_empty() && green && it.wt.changes() != Changes::None {
        let caught = gates(it, judged)?;
        if let Some(first) = caught.first() {
            broke_cause = first.cause;
            let said: Vec<&str> = caught.iter().map(|r| r.message.as_str()).collect();
            broke.push(format!("a gate rejected the work: {}", said.join("; ")));
        }
    }
    if broke.is_empty() {
        return Ok(());
    }
    let said = format!("after the checks ran: {}", broke.join("; "));
    if green {
        j.outcome = Outcome::ChecksFailed;
        j.kept_after_stop = false;
        j.cause = Some(broke_cause);
        j.failure = Some(said);
    } else {
        let f = j.failure.get_or_insert_with(String::new);
        f.push_str(if f.is_empty() { "" } else { "\nand " });
        f.push_str(&said);
    }
    Ok(())
}

/// Acts on the verdict: runs the checks when it calls for them (and on what a stopped agent
/// left), and says what the iteration came to.
async fn judge(
    it: &Iteration<'_>,
    prep: &Prepared,
    agent: &AgentRun,
    verdict: Verdict,
    judged: &mut Judged,
    reporter: &mut dyn Reporter,
) -> Result<Judgement, CliError> {
    let stopped = verdict.stopped();
    let mut failure = None;
    let mut j = Judgement::new(Outcome::Interrupted);
    let outcome = match verdict {
        Verdict::Restarted => {
            failure = Some(
                "the spec was edited while the agent worked on it; ralph put the work back and runs the task again with the new spec"
                    .into(),
            );
            Outcome::Restarted
        }
        Verdict::Check { .. } => {
            run_checks(it, &prep.dir, reporter, &agent.findings, judged, &mut failure).await?
        }
        Verdict::Yielded { note } => {
            j.note = Some(note);
            if git::has_changes(it.wt.root(), &prep.head_before)? {
                run_checks(it, &prep.dir, reporter, &no_promise(&agent.findings), judged, &mut failure)
                    .await?
            } else {
                Outcome::Progress
            }
        }
        Verdict::Failed { outcome, cause, failure: f } => {
            (failure, j.cause) = (Some(f), cause);
            outcome
        }
        Verdict::RateLimited { limit, failure: f } => {
            (failure, j.limit) = (Some(f), limit);
            Outcome::RateLimited
        }
        Verdict::Fatal(e) => {
            (failure, j.cause) = (Some(e.message()), Some(Cause::from(&e)));
            j.fatal = Some(e);
            Outcome::AgentFailed
        }
        Verdict::Interrupted => Outcome::Interrupted,
    };
    j.outcome = outcome;
    j.failure = failure;
    // The precise cause found on the way, else the one the outcome stands for.
    j.cause = j.cause.or(judged.cause.take()).or(Cause::of(outcome));
    // A stopped agent's work is not thrown away unseen: if the checks pass, it is kept.
    if stopped && git::has_changes(it.wt.root(), &prep.head_before)? {
        reporter.line("the agent was stopped, but it changed files: running the checks on what it left");
        let mut check_failure = None;
        let checked =
            run_checks(it, &prep.dir, reporter, &no_promise(&agent.findings), judged, &mut check_failure)
                .await?;
        verdict::after_stop_checks(&mut j, checked, check_failure);
    }
    Ok(j)
}

/// What settlement did: the commit it made, and the files the iteration changed.
struct Settlement {
    commit: Option<String>,
    files_changed: Vec<String>,
    /// The commit ralph made of a red iteration's learnings, on `head_before`.
    learnings_commit: Option<String>,
}

/// Green (or a stopped agent's green work): commit, which a refusing hook turns red. Red:
/// keep the diff, put the tree back, then keep the learnings.
#[allow(clippy::too_many_arguments)]
fn settle(
    it: &Iteration<'_>,
    prep: &Prepared,
    agent: &AgentRun,
    j: &mut Judgement,
    judged: &Judged,
    store: &mut learnings::Store,
    learnings_added: &[String],
    state: &mut State,
    reporter: &mut dyn Reporter,
) -> Result<Settlement, CliError> {
    let mut settled = Settlement { commit: None, files_changed: Vec::new(), learnings_commit: None };
    if j.outcome.is_green() || j.kept_after_stop {
        settled = commit_work(it, prep, j, judged, store, learnings_added, reporter)?;
    }
    if !j.outcome.is_green() && settled.commit.is_none() {
        reporter.phase(Phase::Revert);
        let (root, head_before) = (it.wt.root(), prep.head_before.as_str());
        let back = match &prep.snapshot {
            Some(tree) => Back::Snapshot { head: head_before, tree },
            None => Back::To(head_before),
        };
        settled.files_changed = revert(it.wt, head_before, back, &prep.dir, it.secrets)?;
        if let Some(text) = &agent.spec_kept {
            state::atomic_write(&root.join(&it.task.path), text)?;
        }
        if it.worker.is_none() && learnings::write_agents_md(root, store, &it.cfg.learnings, it.secrets)? {
            let msg = format!(
                "ralph({}): learnings from iteration {}\n\n{}",
                it.task.id,
                it.number,
                trailers(it.task, it.run_id, it.number)
            );
            if let Some(sha) = commit_one(it.wt, Path::new(learnings::AGENTS_MD), &msg, reporter)? {
                store.set_commit(learnings_added, &sha);
                task_rules::carry_baseline(state, head_before, &sha);
                settled.learnings_commit = Some(sha);
            }
        }
    }
    Ok(settled)
}

/// Commits green work: ralph's status in the spec, AGENTS.md, everything staged. A hook that
/// refuses the commit turns the iteration red (`hook_rejected`).
fn commit_work(
    it: &Iteration<'_>,
    prep: &Prepared,
    j: &mut Judgement,
    judged: &Judged,
    store: &mut learnings::Store,
    learnings_added: &[String],
    reporter: &mut dyn Reporter,
) -> Result<Settlement, CliError> {
    let (root, task, head_before) = (it.wt.root(), it.task, prep.head_before.as_str());
    reporter.phase(Phase::Commit);
    // ralph owns the status: the agent's word (or edit) does not mark a task done. A worker's
    // coordinator writes it (and AGENTS.md) when it lands the work.
    if it.worker.is_none() {
        let status = if j.outcome == Outcome::Done { Status::Done } else { Status::Todo };
        crate::backlog::set_status_for_commit(root, task, &prep.spec_before, status)?;
        learnings::write_agents_md(root, store, &it.cfg.learnings, it.secrets)?;
    }
    if git::head(root)?.as_deref() != Some(head_before) {
        it.wt.reset_soft(head_before)?;
    }
    let staging = stage_all(it, judged.staged.as_deref(), head_before)?;
    let files_changed = staging.files;
    if files_changed.is_empty() {
        it.wt.settle(head_before);
        return Ok(Settlement { commit: None, files_changed, learnings_commit: None });
    }
    let mut message = commit_message(task, j.outcome, it.run_id, it.number);
    if let Some(w) = it.worker {
        message.push_str(&format!("Ralph-Worker: {w}\n"));
    }
    fault::point("before_commit");
    let include: Vec<&Path> = staging.include.iter().map(PathBuf::as_path).collect();
    let commit = match it.wt.commit_including(&message, &include)? {
        CommitResult::Committed(sha) => {
            fault::point("after_commit");
            store.set_commit(learnings_added, &sha);
            Some(sha)
        }
        CommitResult::Refused(text) => {
            let text = it.secrets.mask(&text);
            append_to(&prep.dir.join("checks.log"), &format!("$ git commit\n{text}\n"))?;
            j.failure = Some(format!(
                "`git commit` was refused (a hook failed); its output:\n{}",
                checks::last_lines(&text, checks::FAILURE_TAIL_LINES)
            ));
            j.outcome = Outcome::ChecksFailed;
            j.cause = Some(Cause::HookRejected);
            None
        }
    };
    Ok(Settlement { commit, files_changed, learnings_commit: None })
}

/// The iteration's record.
#[allow(clippy::too_many_arguments)]
fn make_record(
    it: &Iteration<'_>,
    prep: Prepared,
    agent: AgentRun,
    j: &mut Judgement,
    judged: &mut Judged,
    settled: Settlement,
    learnings_added: Vec<String>,
    learnings_rejected: Vec<learnings::Rejected>,
    blocked: bool,
    block_commit: Option<OwnCommit>,
) -> IterationRecord {
    let outcome = j.outcome;
    // ralph's last commit of the iteration; a worker's branch is its coordinator's business.
    let head_after = match it.worker {
        Some(_) => None,
        None => Some(
            block_commit
                .map(|c| c.commit)
                .or_else(|| settled.learnings_commit.clone())
                .or_else(|| settled.commit.clone())
                .unwrap_or_else(|| prep.head_before.clone()),
        ),
    };
    let (exit_code, output_leaked) = agent.exit();
    let report = agent.report;
    IterationRecord {
        run_id: it.run_id.to_string(),
        iteration: it.number,
        task: it.task.id.clone(),
        worker: it.worker,
        started_at: prep.started_at,
        ended_at: logs::now_rfc3339(),
        duration_ms: u64::try_from(prep.t0.elapsed().as_millis()).unwrap_or(u64::MAX),
        exit_code,
        outcome,
        checks: std::mem::take(&mut judged.records),
        review: judged
            .review
            .take()
            .map(|v| crate::record::Review { approved: v.approved, reasons: v.reasons }),
        head_before: Some(prep.head_before),
        commit: settled.commit,
        head_after,
        files_changed: settled.files_changed,
        learnings_added,
        learnings_rejected,
        promise: agent.findings.promise,
        failure: j.failure.take(),
        cause: j.cause.filter(|_| !outcome.is_green()),
        progress: agent.findings.progress.or(j.note.take()),
        blocked,
        spec_edited: agent.spec_edited,
        output_leaked,
        escaped_ended: u32::try_from(agent.escaped).unwrap_or(u32::MAX),
        log_capped: agent.log_capped,
        tokens: report.tokens,
        cost_usd: report.cost_usd,
        num_turns: report.num_turns,
        model: report.model.clone().or_else(|| it.cfg.agent.model.clone()),
        agent: Some(it.cfg.agent.name.clone()),
        agent_session_id: report.session_id.clone(),
        final_message: report.final_message.as_deref().map(|m| it.secrets.mask(m)),
        is_error: report.is_error,
        limit_resets_at: j.limit.as_ref().and_then(|l| l.reset_at).map(|t| t.to_string()),
        notes: it.notes.iter().map(|n| it.secrets.mask(n)).collect(),
    }
}

/// How an iteration ended, with what the loop must act on.
pub(crate) struct IterationEnd {
    pub record: IterationRecord,
    /// A limit to wait out before the task runs again.
    pub limit: Option<Limit>,
    /// A failure that ends the run.
    pub fatal: Option<Fatal>,
    /// A worker's agent's findings (its learnings), for the coordinator to admit.
    pub findings: Option<Findings>,
    /// Why the iteration blocked its task, if it did.
    pub blocked: Option<String>,
}

fn prompt_context(it: &Iteration<'_>, ts: &state::TaskState, attempt: u32) -> prompt::Context {
    let agents_md =
        crate::fsx::read_input_following(&it.wt.root().join(learnings::AGENTS_MD)).unwrap_or_default();
    prompt::Context {
        task: prompt::TaskContext {
            id: it.task.id.clone(),
            title: it.task.title.clone(),
            path: it.task.label(),
            spec: it.task.body.trim().to_string(),
        },
        other_specs: it
            .backlog
            .other_paths(&it.task.id)
            .into_iter()
            .map(|(path, status)| prompt::OtherSpec { path, status: status.as_str().to_string() })
            .collect(),
        agents_md: agents_md.trim().to_string(),
        previous: ts.last.as_ref().map(|l| prompt::Previous {
            iteration: l.iteration,
            outcome: l.outcome.clone(),
            failure: l.failure.clone(),
            progress: l.progress.clone(),
        }),
        attempt,
        max_attempts: it.task.max_attempts.unwrap_or(it.cfg.budget.max_attempts),
        promise: it.cfg.agent.completion_promise.clone(),
        checks: task_checks(it).commands,
        run_id: it.run_id.to_string(),
        iteration: it.number,
        notes: it.notes.to_vec(),
    }
}

/// What the frame's look after the agent (and again after the checks) needs.
struct Framed<'a> {
    frame: &'a Frame,
    dir: &'a Path,
    head_before: &'a str,
    branch_before: Option<&'a str>,
    prompt: &'a str,
    started: &'a [u8],
}

/// Puts back whatever broke the frame (the branch, its history, `.ralph/` in git, the
/// iteration's folder, the protected files and refs) and says what did, `None` when nothing.
/// `index_untouched`: the index is the one ralph's last git command left (then neither
/// `.ralph/` nor a hidden entry can be in it anew).
fn frame_breaks(
    it: &Iteration<'_>,
    f: &Framed<'_>,
    index_untouched: bool,
) -> Result<Option<String>, CliError> {
    let switched = put_branch_back(it.wt.root(), f.branch_before)?;
    // Read once, after the branch is put back: what the looks below judge.
    let head = git::head(it.wt.root())?;
    let rewrote = history_rewritten(it.wt.root(), f.head_before, head.as_deref())?;
    let untouched = index_untouched && head.as_deref() == Some(f.head_before);
    let (tracked, hidden) = if untouched {
        (None, None)
    } else {
        (ralph_dir_tracked(it, f.head_before, head.as_deref().unwrap_or_default())?, hidden_from_git(it))
    };
    let removed = put_logs_back(it.wt.root(), f.dir, f.prompt, f.started)?;
    let switched = [switched, rewrote, tracked, hidden, removed]
        .into_iter()
        .flatten()
        .reduce(|a, b| format!("{a}; {b}"));
    let broke_frame = f.frame.restore_masked(&f.dir.join("frame"), it.frame, it.secrets).map_err(|e| {
        CliError::failure(format!(
            "the agent changed what it must not touch, and ralph {}",
            crate::error::chain(&e)
        ))
    })?;
    Ok(match (switched, broke_frame.is_empty()) {
        (s, true) => s,
        (s, false) => Some(format!(
            "{}the agent changed what it must not touch: {}; ralph put it back (the changed versions are in this iteration's frame/ folder) and rejected the iteration",
            s.map(|s| format!("{s}; ")).unwrap_or_default(),
            broke_frame.join(", ")
        )),
    })
}

/// If the agent left the branch the iteration started on, points HEAD back at it without
/// touching the tree (the revert that follows restores the tree) and says what happened.
fn put_branch_back(root: &Path, before: Option<&str>) -> Result<Option<String>, CliError> {
    let now = git::current_branch(root)?;
    if now.as_deref() == before {
        return Ok(None);
    }
    let Some(before) = before else { return Ok(None) };
    git::point_head_at(root, before)?;
    Ok(Some(format!(
        "the agent switched from branch `{before}` to {}; ralph works on one branch and commits for the agent",
        now.map_or("a detached HEAD".to_string(), |b| format!("`{b}`"))
    )))
}

/// If the branch no longer holds `head_before` (the agent reset it back, amended or rebased
/// ralph's commits), says so: work that was on the branch may not disappear in a commit. The
/// revert that follows puts the branch back at `head_before`.
fn history_rewritten(root: &Path, head_before: &str, now: Option<&str>) -> Result<Option<String>, CliError> {
    let Some(now) = now else {
        return Ok(Some("the agent left the branch without a commit; ralph put it back".into()));
    };
    if now == head_before || git::is_ancestor(root, head_before, now)? {
        return Ok(None);
    }
    let short = |s: &str| s.chars().take(10).collect::<String>();
    Ok(Some(format!(
        "the agent rewrote the branch's history (HEAD went from {} to {}, which does not contain it: a reset, an amend or a rebase); ralph put the branch back",
        short(head_before),
        short(now)
    )))
}

/// If the agent hid files from `git add` (`git update-index --assume-unchanged` or
/// `--skip-worktree`), shows them again and says so: ralph commits the files its checks ran
/// on, never what the index holds in their place. The user's own marks are left alone.
fn hidden_from_git(it: &Iteration<'_>) -> Option<String> {
    let hidden = it.frame.unhide_new(it.wt.root());
    if hidden.is_empty() {
        return None;
    }
    Some(format!(
        "the agent hid files from git (assume-unchanged or skip-worktree: {}{}); ralph showed them again",
        hidden.iter().take(3).cloned().collect::<Vec<_>>().join(", "),
        if hidden.len() > 3 { format!(" and {} more", hidden.len() - 3) } else { String::new() }
    ))
}

/// If the agent put ralph's own folder into git (`git add -f .ralph`, perhaps committed), takes
/// it out of the index again and says so: `.ralph/` is never committed.
fn ralph_dir_tracked(it: &Iteration<'_>, head_before: &str, head: &str) -> Result<Option<String>, CliError> {
    let added = git::ralph_dir_added(it.wt.root(), head_before, head)?;
    if added.is_empty() {
        return Ok(None);
    }
    git::untrack_ralph_dir(it.wt.root(), head_before)?;
    Ok(Some(format!(
        "the agent put ralph's own folder into git ({}{}); ralph took it out again, .ralph/ is never committed",
        added.iter().take(3).cloned().collect::<Vec<_>>().join(", "),
        if added.len() > 3 { format!(" and {} more", added.len() - 3) } else { String::new() }
    )))
}

/// If the agent removed the iteration's folder (`rm -rf .ralph`), makes it again with what
/// ralph still holds (the prompt, where the iteration began) so the iteration can end, be
/// reverted and be recovered, and says so. The frame puts ralph's state files back itself.
fn put_logs_back(root: &Path, dir: &Path, prompt: &str, started: &[u8]) -> Result<Option<String>, CliError> {
    // ralph made every folder from `.ralph` down to the iteration's: one the agent replaced (by
    // a file, a link) is not ralph's, and goes (unlinked, never followed) for ralph's own.
    let mut replaced = false;
    for folder in dir.ancestors().take_while(|a| a.starts_with(root.join(RALPH_DIR))) {
        if std::fs::symlink_metadata(folder).is_ok_and(|m| !m.is_dir()) {
            std::fs::remove_file(folder).map_err(|e| io_err("remove", folder, e))?;
            replaced = true;
        }
    }
    if !replaced && std::fs::symlink_metadata(dir.join(STARTED)).is_ok() {
        return Ok(None);
    }
    crate::fsx::create_dir_all(dir).map_err(|e| io_err("create", dir, e))?;
    state::atomic_write(&dir.join(STARTED), started)?;
    let prompt_path = dir.join("prompt.md");
    crate::fsx::write(&prompt_path, prompt.as_bytes()).map_err(|e| io_err("write", &prompt_path, e))?;
    let log = dir.join("agent.log");
    crate::fsx::write(
        &log,
        b"[ralph: the agent removed this log while it ran; its output was read, not kept]\n",
    )
    .map_err(|e| io_err("write", &log, e))?;
    Ok(Some(
        "the agent removed or replaced ralph's folder .ralph/ (or this iteration's logs in it), which it must not touch; ralph made it again".into(),
    ))
}

fn append_to(path: &Path, text: &str) -> Result<(), CliError> {
    crate::fsx::append(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| io_err("write", path, e))
}

/// Commits one path on its own (learnings of a reverted iteration, a block). If a hook refuses,
/// the path is put back so the tree stays clean, and the run goes on.
fn commit_one(
    wt: &Worktree,
    path: &Path,
    message: &str,
    reporter: &mut dyn Reporter,
) -> Result<Option<String>, CliError> {
    match wt.commit_path(message, path)? {
        CommitResult::Committed(sha) => Ok(Some(sha)),
        CommitResult::Refused(text) => {
            reporter.line(&format!(
                "warning: git commit of {} was refused; the change is not kept: {}",
                path.display(),
                text.trim()
            ));
            Ok(None)
        }
    }
}

fn trailers(task: &Spec, run_id: &str, iteration: u32) -> String {
    format!("Ralph-Task: {}\nRalph-Run: {run_id}\nRalph-Iteration: {iteration}\n", task.id)
}

/// The commit message of a green iteration: names the task, ends with the trailer block.
pub fn commit_message(task: &Spec, outcome: Outcome, run_id: &str, iteration: u32) -> String {
    let subject = match outcome {
        Outcome::Done => format!("ralph({}): {}", task.id, task.title),
        _ => format!("ralph({}): progress on {}", task.id, task.title),
    };
    format!("{subject}\n\n{}", trailers(task, run_id, iteration))
}

/// Runs the checks after a clean agent exit and says what they make of the iteration.
async fn run_checks(
    it: &Iteration<'_>,
    dir: &Path,
    reporter: &mut dyn Reporter,
    findings: &Findings,
    judged: &mut Judged,
    failure: &mut Option<String>,
) -> Result<Outcome, CliError> {
    reporter.phase(Phase::Checks);
    // The gates first: no point running checks on work that games them.
    let caught = gates(it, judged)?;
    if !caught.is_empty() {
        let said: Vec<&str> = caught.iter().map(|r| r.message.as_str()).collect();
        *failure = Some(format!("a gate rejected the work: {}", said.join("; ")));
        judged.cause = Some(caught[0].cause);
        return Ok(Outcome::ChecksFailed);
    }
    let checks_path = dir.join("checks.log");
    let mut clog = crate::fsx::create(&checks_path).map_err(|e| io_err("create", &checks_path, e))?;
    let mut cmasker = StreamMasker::new(it.secrets.clone());
    let env = check_env(it);
    let ctx = checks::Ctx::new(&env, it.wt.root(), it.cfg.agent.kill_grace, it.stop, &it.cfg.sandbox);
    let judge =
        checks::Judge { keep_going: false, baseline: judged.baseline.as_ref(), strict: &it.task.checks };
    let r = checks::run(&task_checks(it), &ctx, &mut clog, &mut cmasker, &judge)
        .await
        .map_err(|e| io_err("write", &checks_path, e))?;
    judged.records = r.records;
    let mut dropped: Vec<String> = r
        .test_counts
        .iter()
        .filter_map(|(cmd, n)| {
            judged
                .prev_counts
                .get(cmd)
                .filter(|p| n < p)
                .map(|p| format!("`{cmd}` ran {n} tests, {p} before"))
        })
        .collect();
    // A runner that reported its tests before and passes now (or fails only as the clean tree
    // did) without a word of them (a conftest.py that exits at once, or prints an old failure's
    // name and exits) ran none that it told.
    for c in judged.records.iter().filter(|c| c.exit_code == Some(0) || c.tolerated) {
        if let Some(p) = judged.prev_counts.get(&c.command)
            && !r.test_counts.iter().any(|(cmd, _)| *cmd == c.command)
        {
            dropped.push(format!("`{}` reported no tests, {p} before", c.command));
        }
    }
    judged.counts = r.test_counts;
    let outcome = if r.interrupted {
        Outcome::Interrupted
    } else if let Some(f) = r.failure {
        *failure = Some(f);
        judged.cause = Some(if r.new_test_failures { Cause::NewTestFailures } else { Cause::ChecksFailed });
        Outcome::ChecksFailed
    } else if !dropped.is_empty() {
        *failure = Some(format!("a gate rejected the work: fewer tests than before: {}", dropped.join("; ")));
        judged.cause = Some(Cause::FewerTests);
        Outcome::ChecksFailed
    } else if findings.promise {
        Outcome::Done
    } else {
        Outcome::Progress
    };
    // Green: the reviewer, if there is one, has the last word.
    if outcome.is_green() && it.cfg.review.is_some() {
        reporter.phase(Phase::Review);
        let verdict = super::review::review(
            it,
            dir,
            &judged.head_before,
            &judged.records,
            judged.task_iteration,
            reporter,
        )
        .await?;
        let approved = verdict.approved;
        // Stopped (Ctrl-C) while the reviewer worked or waited: not judged, not a rejection.
        if !approved && it.stop.cancel.is_cancelled() {
            return Ok(Outcome::Interrupted);
        }
        if !approved {
            *failure = Some(format!("the review rejected it: {}", verdict.reasons));
            judged.cause = Some(Cause::ReviewRejected);
        }
        judged.review = Some(verdict);
        if !approved {
            return Ok(Outcome::ChecksFailed);
        }
    }
    Ok(outcome)
}

/// What a failed (or, for text agents, any) agent run signals: the structured output first,
/// then the known error messages in what it printed last.
pub(super) fn signal(report: &Report, tail: &str, failed: bool) -> Option<Signal> {
    if let Some(f) = &report.fatal {
        return Some(Signal::Fatal(f.clone()));
    }
    if let Some(l) = &report.limit {
        return Some(Signal::Limit(l.clone()));
    }
    let now = jiff::Zoned::now();
    let said = [
        report.error_message.as_deref(),
        report.is_error.then_some(report.final_message.as_deref()).flatten(),
    ];
    for text in said.into_iter().flatten() {
        if let Some(s) = limits::classify(text, &now) {
            return Some(s);
        }
    }
    // An agent that exited 0 without an error report is only read for its last words.
    let tail: String = if failed { tail.to_string() } else { checks::last_lines(tail, 5) };
    limits::classify(&tail, &now)
}

/// What the agent spent so far, kept in the iteration's folder while it runs: a run killed
/// mid-iteration still counts it (`ralph run` reads it when it recovers the iteration).
pub(crate) const USAGE: &str = "usage.json";

/// How often at most [`USAGE`] is written while the agent's output flows.
const USAGE_EVERY: Duration = Duration::from_secs(2);

/// What the iteration hears while its agent runs: the fault point, live activity, the usage
/// so far ([`USAGE`]) and the context budget, which ends the agent so the next iteration
/// starts fresh.
struct AgentWatch<'r> {
    reporter: &'r mut dyn Reporter,
    usage_path: PathBuf,
    usage_saved: Option<(Instant, Usage)>,
    context_limit: Option<u64>,
}

impl Watch for AgentWatch<'_> {
    fn chunk(&mut self) {
        fault::point("agent_running");
    }

    fn activity(&mut self, text: &str, is_tool: bool) {
        self.reporter.activity(text, is_tool);
    }

    fn parsed(&mut self, parser: &Parser, ended: bool) -> ControlFlow<()> {
        save_usage(&self.usage_path, parser, &mut self.usage_saved, ended);
        match (self.context_limit, parser.context_tokens()) {
            (Some(limit), Some(now)) if !ended && now >= limit => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        }
    }
}

/// The agent's usage so far, as [`USAGE`] holds it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Usage {
    pub tokens: Option<crate::agent::output::Tokens>,
    pub cost_usd: Option<f64>,
}

/// Writes the usage seen so far to `path`: once there is any, then at most every
/// [`USAGE_EVERY`] when it changed; `last` when the agent has ended. The write is ralph's
/// write-behind one (no sync on the loop); a failure only loses the figure.
fn save_usage(path: &Path, parser: &Parser, saved: &mut Option<(Instant, Usage)>, last: bool) {
    let (tokens, cost_usd) = parser.usage();
    let now = Usage { tokens, cost_usd };
    let due = match saved {
        // Nothing reported yet: nothing to keep (a text agent never reports any).
        None => now != Usage::default(),
        Some((at, was)) => *was != now && (last || at.elapsed() >= USAGE_EVERY),
    };
    if !due {
        return;
    }
    if let Ok(bytes) = serde_json::to_vec(&now) {
        let _ = state::atomic_write_later(path, &bytes);
    }
    *saved = Some((Instant::now(), now));
}

/// The file an iteration writes first, for crash recovery.
pub(crate) const STARTED: &str = "started.json";

/// Restarts of one task in a row for spec edits before an edited iteration finishes instead.
const MAX_RESTARTS: u32 = 3;

/// Where an iteration began: what recovery needs if ralph dies during it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Started {
    pub task: String,
    pub started_at: String,
    pub head_before: String,
    pub branch: Option<String>,
    /// The `--allow-dirty` snapshot tree, if the iteration started dirty.
    pub snapshot: Option<String>,
    /// How the agent's output is written: `ralph logs` renders agent.log by it.
    #[serde(default)]
    pub format: Format,
    /// The parallel run's worker slot that ran it, in its own worktree: recovery leaves the
    /// user's checkout alone for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<u32>,
    /// The agent that ran it, by name (a fallback's, say): the record of a killed iteration
    /// names it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

/// Blocks a task: `status: blocked` and the reason in its front matter, committed on its own,
/// and remembered so that moving it back to `todo` gives it fresh attempts. Returns the commit
/// of the block, if one was made.
pub(crate) fn block(
    wt: &Worktree,
    task: &Spec,
    reason: &str,
    run_id: &str,
    iteration: u32,
    state: &mut State,
    reporter: &mut dyn Reporter,
) -> Result<Option<OwnCommit>, CliError> {
    let short = reason.split(';').next().unwrap_or(reason);
    let mut made = None;
    if task.origin == crate::backlog::Origin::File {
        let msg = format!(
            "ralph({}): blocked ({short})\n\n{reason}\n\n{}",
            task.id,
            trailers(task, run_id, iteration)
        );
        made = commit_status(wt, task, Status::Blocked, Some(reason), &msg, state, reporter)?;
    } else {
        // A story or an item has no place for a block in its file: ralph's state keeps it
        // until the task's text changes.
        state.task_mut(&task.id).block = Some((reason.to_string(), spec::fingerprint(&task.body)));
    }
    state.task_mut(&task.id).blocked_by_ralph = true;
    reporter.line(&format!("blocked {}: {reason}", task.id));
    Ok(made)
}

/// The findings with the promise withdrawn: work kept from a stopped agent is progress, never
/// a finished task.
fn no_promise(f: &Findings) -> Findings {
    Findings { promise: false, ..f.clone() }
}

/// The project's checks, then the task's own acceptance checks.
fn task_checks(it: &Iteration<'_>) -> crate::config::ChecksConfig {
    let mut cfg = it.cfg.checks.clone();
    cfg.commands.extend(it.task.checks.iter().cloned());
    cfg
}

/// What the checks and gates need and found.
struct Judged {
    head_before: String,
    /// The files the gates saw changed, once they staged the work.
    staged: Option<Vec<String>>,
    /// Each task as it was before the agent ran, by label.
    spec_bodies: std::collections::BTreeMap<String, Spec>,
    /// Tests per check command at the last green iteration.
    prev_counts: std::collections::BTreeMap<String, u64>,
    /// Protected path patterns, decided before the agent ran.
    protected: Vec<String>,
    records: Vec<crate::record::CheckRecord>,
    /// Tests per check command in this round.
    counts: Vec<(String, u64)>,
    /// The reviewer's verdict, if `[review]` is set and the checks passed.
    review: Option<super::review::Verdict>,
    /// The nth iteration on this task (the reviewer is told too).
    task_iteration: u32,
    /// What the project's checks already failed on the clean tree.
    baseline: Option<checks::Baseline>,
    /// Why the last round of checks, gates or review turned the work red.
    cause: Option<Cause>,
    /// The backlog's folders before the agent ran (see [`spec_dirs`]).
    spec_dirs: std::collections::BTreeMap<std::path::PathBuf, Option<std::path::PathBuf>>,
}

/// Protected paths and test weakening: what the agent's changes did that a gate forbids.
/// Stages everything for it; `j.staged` keeps the list of changed files.
fn gates(it: &Iteration<'_>, j: &mut Judged) -> Result<Vec<crate::gates::Rejection>, CliError> {
    let git::Staged { changes, added } = stage_for_gates(it, &j.head_before)?;
    j.staged = Some(changes.iter().map(|c| c.path.clone()).collect());
    let before = j.spec_bodies.iter().map(|(label, t)| (label.clone(), t.body.clone())).collect();
    let now = crate::backlog::current_tasks(it.wt.root(), j.spec_bodies.values());
    let after = j
        .spec_bodies
        .iter()
        .filter_map(|(label, t)| Some((label.clone(), now.get(&t.id)?.0.clone())))
        .collect();
    let mut found = crate::gates::inspect(&changes, &added, &j.protected, &before, &after);
    // Other tasks' results: a file a done task's commit added may not be deleted, unless the
    // running task's spec names it (a task that asks for the removal).
    let deleted: Vec<&str> = changes
        .iter()
        .filter(|c| c.kind == 'D' && !it.task.body.contains(c.path.as_str()))
        .map(|c| c.path.as_str())
        .take(MAX_DELETIONS_TRACED)
        .collect();
    for (path, task) in git::added_by_task(it.wt.root(), &j.head_before, &deleted)? {
        if task != it.task.id {
            found.push(crate::gates::Rejection::new(Cause::OtherTaskWorkDeleted, format!(
                "it deleted {path}, which task {task} made; another task's result stays unless this task's spec names it"
            )));
        }
    }
    // ralph sets every task's status: another task marked done (or undone) during the agent's
    // run would skip (or redo) work unseen. The agent's log cannot vouch for who wrote it (a
    // script it started, a file it renamed), so any change is rejected; the diff is kept.
    for (label, t) in j.spec_bodies.iter().filter(|(_, t)| t.id != it.task.id) {
        // A task removed (its spec deleted or renamed, its story or item taken out) would
        // leave the backlog "done" without it ever running, like a status set to done.
        let Some((_, status)) = now.get(&t.id) else {
            found.push(crate::gates::Rejection::new(
                Cause::StatusChanged,
                format!(
                    "it removed {label} (or made it unreadable); ralph's backlog loses a task only by your hand, between iterations"
                ),
            ));
            continue;
        };
        let Some(status) = status else { continue };
        let was = t.file_status();
        if *status != was {
            found.push(crate::gates::Rejection::new(Cause::StatusChanged, format!(
                "it changed the status of {label} ({} → {}); ralph sets task status (a change of yours made during the iteration is in its rejected.patch: make it again between iterations)",
                was.as_str(),
                status.as_str()
            )));
        }
    }
    // ralph renders its learnings into AGENTS.md before it commits: one it cannot read (made
    // larger than ralph reads, a link to a device, not UTF-8) would end the run there, with
    // the work staged, at every try.
    let agents_md = it.wt.root().join(learnings::AGENTS_MD);
    if let Err(e) = crate::fsx::read_input_following(&agents_md)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        found.push(crate::gates::Rejection::new(
            Cause::FrameBroken,
            format!("{} cannot be read ({e}); ralph keeps its learnings there", learnings::AGENTS_MD),
        ));
    }
    // ralph writes task status into these folders: one that leads elsewhere now (replaced by
    // a link) would have it write outside the repository, or commit the backlog away.
    for (dir, was) in &j.spec_dirs {
        if std::fs::canonicalize(it.wt.root().join(dir)).ok() != *was {
            found.push(crate::gates::Rejection::new(
                Cause::FrameBroken,
                format!(
                    "it replaced the backlog's folder {} (a symbolic link, or gone); ralph writes task status only where the backlog was",
                    if dir.as_os_str().is_empty() { Path::new(".") } else { dir }.display()
                ),
            ));
        }
    }
    Ok(found)
}

/// The folders holding the backlog's files, each with where it leads (resolved), as they are
/// before the agent runs.
fn spec_dirs(
    root: &Path,
    backlog: &Backlog,
) -> std::collections::BTreeMap<std::path::PathBuf, Option<std::path::PathBuf>> {
    let dirs: std::collections::BTreeSet<&Path> =
        backlog.tasks.iter().filter_map(|t| t.path.parent()).collect();
    dirs.into_iter().map(|d| (d.to_path_buf(), std::fs::canonicalize(root.join(d)).ok())).collect()
}

/// Deleted files traced back to the task that made them, at most, per iteration.
const MAX_DELETIONS_TRACED: usize = 500;

/// Stages everything and says what changed against `head_before`, as the gates judge it.
/// When the index is still the one ralph's commit of `head_before` left (the agent staged and
/// committed nothing), `git add -v` already lists the changes, and a file that holds no skip
/// marker adds none: `git diff` is only asked when one might.
fn stage_for_gates(it: &Iteration<'_>, head_before: &str) -> Result<git::Staged, CliError> {
    const MAX_READ: u64 = 4 * 1024 * 1024;
    if !it.wt.index_as_settled(head_before) {
        it.wt.add_all()?;
        return Ok(it.wt.staged(head_before)?);
    }
    let Some(changes) = it.wt.add_all_listed()? else { return Ok(it.wt.staged(head_before)?) };
    let mut read = 0;
    for c in changes.iter().filter(|c| c.kind != 'D') {
        let path = it.wt.root().join(&c.path);
        // Regular files only, as they are now (a symlink's text is its target's name).
        let text = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() && read + m.len() <= MAX_READ => {
                read += m.len();
                // Not through a link swapped in since the look (a daemon the agent left).
                crate::fsx::read(&path).ok()
            }
            Ok(m) if m.file_type().is_symlink() => {
                std::fs::read_link(&path).ok().map(|l| l.into_os_string().into_encoded_bytes())
            }
            _ => None,
        };
        if text.is_none_or(|t| crate::gates::holds_skip_marker(&t)) {
            return Ok(it.wt.staged(head_before)?);
        }
    }
    Ok(git::Staged { changes, added: Vec::new() })
}

/// What the commit takes: the files it changes, and ralph's own files it stages itself.
struct Staging {
    files: Vec<String>,
    /// Written by ralph after the gates staged the work (the spec's status, AGENTS.md), for
    /// `git commit --include`: one git process fewer than `git add` then `git commit`.
    include: Vec<PathBuf>,
}

/// Stages the iteration's work for its commit and names the files the commit changes. The
/// gates staged everything before the checks (`staged`, the files they saw); the working
/// tree's watch tells what changed since (the checks, a reviewer, ralph's own status and
/// AGENTS.md writes), so the tree is scanned again only when something else did. When only
/// ralph's own files changed, they are left for the commit to include, and the files changed
/// are the gates' list and those (ralph wrote each because its content changed).
fn stage_all(it: &Iteration<'_>, staged: Option<&[String]>, head_before: &str) -> Result<Staging, CliError> {
    if let Some(staged) = staged {
        let own = [it.task.path.as_path(), Path::new(learnings::AGENTS_MD)];
        match it.wt.changes() {
            Changes::None => return Ok(Staging { files: staged.to_vec(), include: Vec::new() }),
            Changes::Only(paths) if paths.iter().all(|p| ralph_wrote(p, &own)) => {
                let include: Vec<PathBuf> = own
                    .iter()
                    .filter(|o| paths.iter().any(|p| p.as_path() == **o))
                    .map(|o| o.to_path_buf())
                    .collect();
                let mut files = staged.to_vec();
                for p in &include {
                    let p = p.to_string_lossy();
                    if !files.iter().any(|f| *f == p) {
                        files.push(p.into_owned());
                    }
                }
                files.sort();
                return Ok(Staging { files, include });
            }
            _ => {}
        }
    }
    it.wt.add_all()?;
    Ok(Staging { files: it.wt.staged_files(head_before)?, include: Vec::new() })
}

/// Whether a changed path is one of ralph's own writes: one of `own`, or the temporary file
/// it writes one of them through.
fn ralph_wrote(path: &Path, own: &[&Path]) -> bool {
    own.contains(&path)
        || (path.file_name().is_some_and(|n| n.to_string_lossy().starts_with(state::TMP_PREFIX))
            && own.iter().any(|o| o.parent() == path.parent()))
}

/// The checks' environment: marked as this run's, for crash recovery.
fn check_env(it: &Iteration<'_>) -> [(String, String); 2] {
    [
        ("RALPH_RUN_ID".to_string(), it.run_id.to_string()),
        ("RALPH_ROOT".to_string(), it.wt.root().to_string_lossy().into_owned()),
    ]
}

/// The baseline for `head`: what the project's checks already fail on the clean tree. Known
/// when ralph's own last green round ran at `head`; otherwise the checks run once now, before
/// the agent, into `baseline.log`.
async fn baseline(
    it: &Iteration<'_>,
    dir: &Path,
    head: &str,
    state: &mut State,
    reporter: &mut dyn Reporter,
) -> Result<Option<checks::Baseline>, CliError> {
    if it.cfg.checks.gate != crate::config::Gate::NoNewFailures || it.cfg.checks.commands.is_empty() {
        return Ok(None);
    }
    if let Some(b) = state.baseline.as_ref().filter(|b| b.head == head) {
        return Ok(Some(b.clone()));
    }
    reporter.phase(Phase::BaselineChecks);
    let path = dir.join("baseline.log");
    let mut log = crate::fsx::create(&path).map_err(|e| io_err("create", &path, e))?;
    let mut masker = StreamMasker::new(it.secrets.clone());
    let env = check_env(it);
    let ctx = checks::Ctx::new(&env, it.wt.root(), it.cfg.agent.kill_grace, it.stop, &it.cfg.sandbox);
    let judge = checks::Judge { keep_going: true, baseline: None, strict: &[] };
    let r = checks::run(&it.cfg.checks, &ctx, &mut log, &mut masker, &judge)
        .await
        .map_err(|e| io_err("write", &path, e))?;
    if r.interrupted {
        return Ok(None);
    }
    let failing: std::collections::BTreeMap<String, Vec<String>> = r
        .records
        .iter()
        .filter(|c| c.timed_out || c.exit_code != Some(0))
        // A timed-out round named only the failures it reached: as good as naming none.
        .map(|c| (c.command.clone(), if c.timed_out { Vec::new() } else { c.failed_tests.clone() }))
        .collect();
    for (cmd, tests) in &failing {
        reporter.line(&baseline_note(cmd, tests));
    }
    // The clean tree's test counts are the least the agent's work may run, from its first
    // iteration on: a tolerated failure must not hide that its runner stopped short.
    for (cmd, n) in r.test_counts {
        state.test_counts.insert(cmd, n);
    }
    let b = checks::Baseline { head: head.to_string(), failing };
    state.baseline = Some(b.clone());
    state.save(it.wt.root())?;
    Ok(Some(b))
}

/// What the run is told of a check that fails on the clean tree.
pub(crate) fn baseline_note(cmd: &str, tests: &[String]) -> String {
    if tests.is_empty() {
        format!(
            "baseline: `{cmd}` fails on the clean tree and names no failing test: nothing of it is tolerated, it must pass before any work is committed (see baseline.log)"
        )
    } else {
        format!(
            "baseline: `{cmd}` already fails on the clean tree ({} tests): they may go on failing, nothing new may",
            tests.len()
        )
    }
}

/// Reopens a done task whose spec changed since: `status: todo`, committed on its own, fresh
/// attempts. Returns the commit of the reopening, if one was made.
pub(crate) fn reopen(
    wt: &Worktree,
    task: &Spec,
    run_id: &str,
    iteration: u32,
    state: &mut State,
    reporter: &mut dyn Reporter,
) -> Result<Option<OwnCommit>, CliError> {
    let msg = format!(
        "ralph({}): reopened: the spec changed since it was done\n\n{}",
        task.id,
        trailers(task, run_id, iteration)
    );
    let made = commit_status(wt, task, Status::Todo, None, &msg, state, reporter)?;
    task_rules::reopen(state.task_mut(&task.id));
    reporter.line(&format!("{} changed since {} was done: reopened", task.path.display(), task.id));
    Ok(made)
}

/// Writes a task's status into its spec and commits that file on its own; the baseline carries
/// over (no code changed). Returns the commit, if one was made.
fn commit_status(
    wt: &Worktree,
    task: &Spec,
    status: Status,
    reason: Option<&str>,
    message: &str,
    state: &mut State,
    reporter: &mut dyn Reporter,
) -> Result<Option<OwnCommit>, CliError> {
    let root = wt.root();
    let path = root.join(&task.path);
    let before = crate::fsx::read_input(&path).map_err(|e| io_err("read", &path, e))?;
    crate::backlog::set_status(root, task, &before, status, reason)?;
    let head = git::head(root)?.unwrap_or_default();
    let Some(sha) = commit_one(wt, &task.path, message, reporter)? else { return Ok(None) };
    task_rules::carry_baseline(state, &head, &sha);
    Ok(Some(OwnCommit { commit: sha, parent: head }))
}
