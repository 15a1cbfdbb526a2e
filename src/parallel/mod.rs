//! `ralph run -j N`: N tasks at once, each run by a worker in its own git worktree (a slot,
//! see [`slots`]), each worker a `ralph work-slot` process running the single loop's
//! iteration there (`crate::runner::worker`); green work lands on the target branch one task
//! at a time, after its checks pass again on the combined result ([`landing`]).
//!
//! Invariants: the coordinator (this process) is the one writer of the backlog's statuses,
//! AGENTS.md and the learnings store, the task states, budgets and `iterations.jsonl`;
//! workers write their slot and their iteration's folder only. A task is started only when its
//! `depends_on` tasks have landed, and never beside a running task whose `touches` patterns
//! overlap its own; no more start than the iteration budget leaves, each running one counted
//! as spent. Nothing is recorded done that is not on the target branch; work that does not
//! land is kept as its iteration's `rejected.patch`, and the task runs again on the new tip
//! (blocked after `max_attempts`). The user's checkout is only ever fast-forwarded.
//! `-j 1` (and `[parallel] workers = 1`) is the single loop, unchanged.

pub mod landing;
pub mod slots;

use crate::backlog::{Backlog, Spec, Status};
use crate::budget::Budget;
use crate::error::CliError;
use crate::events::{About, Event, Events, Gate, Hook};
use crate::git;
use crate::learnings;
use crate::logs;
use crate::record::{self, Cause, IterationRecord, Outcome};
use crate::reporter::Reporter;
use crate::runner::worker::{RALPH_WORKER, WorkerResult};
use crate::runner::{self, RunEnd, RunOptions};
use crate::secrets::Secrets;
use crate::signal::Stop;
use crate::state::{self, RunMeta, State};
use landing::{Lander, Landing};
use slots::Slots;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The file listing the workers and the queue, for `ralph status` (in the run's folder).
pub const WORKERS_FILE: &str = "workers.json";

/// `ralph run`: the single loop with one worker, the coordinator with more.
pub async fn run(opts: RunOptions, reporter: &mut dyn Reporter, stop: Stop) -> Result<u8, CliError> {
    if opts.jobs.is_some_and(|j| j > 1)
        && let Ok(w) = std::env::var(RALPH_WORKER)
    {
        return Err(CliError::usage(format!(
            "ralph run -j: this process runs under worker {w} of a parallel run, and a worker never starts workers"
        )));
    }
    let v = runner::validate(&opts)?;
    if v.cfg.workers <= 1 {
        return runner::run_validated(opts, v, reporter, stop).await;
    }
    if std::env::var_os(RALPH_WORKER).is_some() {
        return Err(CliError::usage(
            "[parallel] workers > 1 under a parallel run's worker: a worker never starts workers",
        ));
    }
    if opts.watch {
        return Err(
            CliError::usage("--watch does not work with parallel workers yet").hint("drop -j, or --watch")
        );
    }
    if opts.allow_dirty {
        return Err(CliError::usage(
            "--allow-dirty does not work with parallel workers: each worker starts from a commit",
        )
        .hint("commit your changes first"));
    }
    Coordinator::start(opts, v, reporter, stop).await
}

/// One worker's task under way.
struct Running {
    task: String,
    iteration: u32,
    slot: PathBuf,
    started: Instant,
    pid: Option<u32>,
}

/// A row of `workers.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WorkerRow {
    pub id: u32,
    pub task: String,
    pub iteration: u32,
    /// `agent` (working) or `landing`.
    pub phase: String,
    pub started_at: String,
}

/// `workers.json`: what `ralph status` shows of a parallel run.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct WorkersFile {
    pub pid: u32,
    pub workers: Vec<WorkerRow>,
    /// Tasks waiting to land, in order.
    pub queue: Vec<String>,
}

impl WorkersFile {
    pub fn load(run_dir: &Path) -> Option<WorkersFile> {
        serde_json::from_slice(&crate::fsx::read(&run_dir.join(WORKERS_FILE)).ok()?).ok()
    }
}

struct Coordinator<'a> {
    root: PathBuf,
    cfg: crate::config::Config,
    opts: RunOptions,
    target: String,
    run_id: String,
    run_dir: PathBuf,
    meta: RunMeta,
    budget: Budget,
    state: State,
    store: learnings::Store,
    secrets: Secrets,
    stop: Stop,
    slots: Slots,
    running: BTreeMap<u32, Running>,
    rows: BTreeMap<u32, WorkerRow>,
    counts: BTreeMap<Outcome, u32>,
    /// No worker starts before then (a usage limit).
    paused_until: Option<Instant>,
    /// Which agents are limited or cannot run (`[agent] fallback`).
    chain: crate::agent::fallback::Chain,
    /// Tasks whose green work did not land, with its patch: their next iteration starts from
    /// the new tip with that work put back on it (conflict markers and all), once.
    rework: BTreeMap<String, PathBuf>,
    /// Tasks whose running (or last) iteration is that rework: a second failure to land runs
    /// the task afresh.
    reworked: BTreeSet<String>,
    /// The target branch's tip as ralph last knew it (see [`Coordinator::guard_tip`]).
    known_tip: String,
    /// The files a running rework started with conflict markers in: its commit must not add
    /// them (an agent that left them unresolved would land them).
    conflicted: BTreeMap<String, Vec<String>>,
    /// Notifications and hooks: fired here alone, never by the workers.
    events: Events,
    /// Hooks due (`after_iteration`, `on_land`, `on_blocked`), run at the loop's next turn:
    /// the places that find them are not async.
    hooks_due: Vec<(Hook, Event, PathBuf)>,
    /// Tasks `before_iteration` skipped, and when each may be tried again.
    skipped: BTreeMap<String, Instant>,
    /// The notes `ralph note` leaves for the next iteration started.
    inbox: crate::notes::Inbox,
    reporter: &'a mut dyn Reporter,
}

impl<'a> Coordinator<'a> {
    async fn start(
        opts: RunOptions,
        v: runner::Validated,
        reporter: &'a mut dyn Reporter,
        stop: Stop,
    ) -> Result<u8, CliError> {
        let runner::Validated { root, cfg, lock, .. } = v;
        if !crate::process::reaper::become_subreaper() {
            tracing::debug!("not a child subreaper: escaped processes are not ended");
        }
        let secrets = cfg.secrets();
        let resumed = runner::recover_latest(&root, &opts, &secrets, reporter)?;
        let current = git::current_branch(&root)?;
        let target = match (&cfg.branch, &current) {
            (Some(b), _) => b.clone(),
            (None, Some(c)) => c.clone(),
            (None, None) => {
                return Err(CliError::usage(
                    "HEAD is detached: name the branch to land on in ralph.toml: [git] branch = \"NAME\"",
                ));
            }
        };
        if git::rev_parse(&root, &format!("refs/heads/{target}"))?.is_none() {
            let head = git::head(&root)?.unwrap_or_default();
            git::update_ref(&root, &format!("refs/heads/{target}"), Some(&head))?;
            reporter
                .line(&format!("made branch {target} at {}; work lands there", &head[..head.len().min(12)]));
        }
        if current.as_deref() == Some(target.as_str()) && !git::dirty_entries(&root)?.is_empty() {
            return Err(CliError::usage(format!(
                "the working tree has uncommitted changes, and {target}, where a parallel run lands work, is checked out here"
            ))
            .hint("commit or stash them first: ralph fast-forwards your checkout as tasks land")
            .hint("or land on another branch: [git] branch = \"NAME\" in ralph.toml"));
        }
        for line in slots::remove_stale(&root, &target) {
            reporter.line(&line);
        }
        let (run_id, mut meta, records) = runner::open_run(&root, resumed);
        let run_dir = logs::run_dir(&root, &run_id);
        git::mark_run(&run_id, &root);
        crate::fsx::create_dir_all(&run_dir)
            .map_err(|e| CliError::failure(format!("cannot create {}: {e}", run_dir.display())))?;
        meta.branch = Some(target.clone());
        let budget = Budget::resume(cfg.budget.clone(), &records, meta.elapsed_ms);
        meta.limits = Some(state::Limits::from(&cfg.budget));
        meta.spent = Some(budget.spent_now());
        meta.save(&run_dir)?;
        reporter.line(&format!(
            "ralph run {run_id}: {} workers, landing on {target}; agent `{}`{}, checks: {}",
            cfg.workers,
            cfg.agent.command.join(" "),
            runner::fallback_words(&cfg),
            if cfg.checks.commands.is_empty() { "none".to_string() } else { cfg.checks.commands.join(", ") }
        ));
        let state = State::load(&root)?;
        let store = learnings::Store::load(&root)?;
        let known_tip = git::rev_parse(&root, &format!("refs/heads/{target}"))?.unwrap_or_default();
        let slots = Slots::new(&root, &run_id);
        let events = Events::new(&cfg, &root, &run_id, &run_dir, &secrets);
        // Held for the run: a second `ralph run` in this checkout is refused.
        let _lock = lock;
        let started = Instant::now();
        let chain = crate::agent::fallback::Chain::resume(&meta.agents_limited);
        let inbox = crate::notes::Inbox::open(&root);
        let mut c = Coordinator {
            root,
            cfg,
            opts,
            target,
            run_id,
            run_dir,
            meta,
            budget,
            state,
            store,
            secrets,
            stop,
            slots,
            running: BTreeMap::new(),
            rows: BTreeMap::new(),
            counts: BTreeMap::new(),
            paused_until: None,
            chain,
            rework: BTreeMap::new(),
            reworked: BTreeSet::new(),
            known_tip,
            conflicted: BTreeMap::new(),
            events,
            hooks_due: Vec::new(),
            skipped: BTreeMap::new(),
            inbox,
            reporter,
        };
        let result = c.run_loop().await;
        c.stop_workers().await;
        for line in c.slots.remove_all(&c.target) {
            c.reporter.line(&line);
        }
        // With the scratch versions an earlier build (through `state::replace`) left beside it.
        for suffix in ["", ".prev", ".spare"] {
            let _ = crate::fsx::remove_any(&c.run_dir.join(format!("{WORKERS_FILE}{suffix}")));
        }
        let (code, reason) = match &result {
            Ok(end) => (end.code(), end.reason()),
            Err(e) => (e.code, format!("error: {}", e.message)),
        };
        if result.as_ref().is_ok_and(RunEnd::stopped_by_person) {
            c.meta.stops += 1;
        }
        runner::save_end(&mut c.meta, &c.budget, &c.run_dir, code, &reason);
        let summary = runner::summary(&reason, code, &c.counts, started.elapsed());
        let spent = result.as_ref().is_ok_and(RunEnd::budget_spent);
        c.events.run_ended(&reason, code, spent, &summary, &mut *c.reporter).await;
        match result {
            Ok(_) => {
                eprintln!("{summary}");
                Ok(code)
            }
            Err(e) => Err(e),
        }
    }

    /// The backlog as the target branch has it: read from the user's checkout (fast-forwarded
    /// as work lands) when it has the branch, else from the branch's tip; with ralph's blocks.
    fn backlog(&self) -> Result<Backlog, CliError> {
        let on_target = git::current_branch(&self.root)?.as_deref() == Some(self.target.as_str());
        let mut backlog = if on_target {
            Backlog::load(&self.root, &self.cfg.source(&self.root))?
        } else {
            self.backlog_at_tip()?
        };
        backlog.apply_blocks(&self.state.blocks());
        Ok(backlog)
    }

    /// The backlog of the target branch's tip, read through a scratch checkout of it.
    fn backlog_at_tip(&self) -> Result<Backlog, CliError> {
        let dir = slots::folder(&self.root).join("tip");
        let tip = self.tip()?;
        let listed = git::worktrees(&self.root)?.iter().any(|w| w.path == dir);
        if !listed {
            let _ = std::fs::remove_dir_all(&dir);
            git::worktree_add(
                &self.root,
                &dir,
                "ralph/slot-tip",
                &tip,
                &format!("ralph run {}", self.run_id),
            )?;
        }
        git::reset_checkout(&dir, "ralph/slot-tip", &tip)?;
        Ok(Backlog::load(&dir, &self.cfg.source(&dir))?)
    }

    fn tip(&self) -> Result<String, CliError> {
        git::rev_parse(&self.root, &format!("refs/heads/{}", self.target))?
            .ok_or_else(|| CliError::failure(format!("the branch {} is gone", self.target)))
    }

    /// The target branch's tip, checked against the last one ralph knew: moved forward (your
    /// commits) is taken; rewound or rewritten (by anyone: an agent's `git update-ref` in its
    /// slot reaches the shared branches) ends the run, naming the commit it no longer has,
    /// rather than land on a history that dropped it.
    fn guard_tip(&mut self) -> Result<String, CliError> {
        let tip = self.tip()?;
        if tip != self.known_tip {
            if !git::is_ancestor(&self.root, &self.known_tip, &tip)? {
                return Err(CliError::failure(format!(
                    "the branch {} was rewound or rewritten during the run: it was at {}, it is at {}, which does not contain it",
                    self.target,
                    &self.known_tip[..self.known_tip.len().min(12)],
                    &tip[..tip.len().min(12)]
                ))
                .hint(format!(
                    "if that was not you, put it back: `git update-ref refs/heads/{} {}`; then `ralph run -j` again",
                    self.target, self.known_tip
                )));
            }
            self.known_tip.clone_from(&tip);
        }
        Ok(tip)
    }

    async fn run_loop(&mut self) -> Result<RunEnd, CliError> {
        let mut joins: tokio::task::JoinSet<(u32, std::io::Result<std::process::ExitStatus>)> =
            tokio::task::JoinSet::new();
        let mut fatal: Option<String> = None;
        loop {
            if self.stop.cancel.is_cancelled() {
                return Ok(RunEnd::Interrupted);
            }
            if let Some(f) = &fatal
                && self.running.is_empty()
            {
                return Ok(RunEnd::AgentFatal(f.clone()));
            }
            let mut backlog = self.backlog()?;
            if self.refresh(&backlog)? {
                backlog = self.backlog()?;
            }
            let stopping = self.stop.after_iteration.is_cancelled() || fatal.is_some();
            let spent = self.budget.check().err();
            let paused = self.paused_until.is_some_and(|t| Instant::now() < t);
            if !stopping && spent.is_none() && !paused {
                self.start_ready(&backlog, &mut joins).await?;
            }
            self.run_hooks().await;
            if self.running.is_empty() {
                if self.stop.after_iteration.is_cancelled() {
                    return Ok(RunEnd::Stopped);
                }
                if let Some(spent) = spent {
                    return Ok(RunEnd::Budget(spent.to_string()));
                }
                if let Some(end) = RunEnd::of_backlog(&backlog) {
                    return Ok(end);
                }
                // Only a pause (a usage limit) or skips (`before_iteration`) hold runnable work
                // back.
                let now = Instant::now();
                let mut wait = match self.paused_until {
                    Some(t) => t.saturating_duration_since(now),
                    None => self
                        .skipped
                        .values()
                        .min()
                        .map_or(Duration::ZERO, |t| t.saturating_duration_since(now)),
                };
                if let Some(left) = self.budget.time_left()
                    && wait >= left
                {
                    if self.paused_until.is_some() {
                        return Ok(RunEnd::LimitAfterBudget(wait));
                    }
                    // Skipped tasks are waited for until the time budget ends, which ends the run.
                    wait = left;
                }
                if self.paused_until.is_none() && !wait.is_zero() {
                    self.reporter.line(&format!(
                        "the before_iteration hook skipped every runnable task: trying again in {} (no attempt used)",
                        runner::human(wait)
                    ));
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.stop.cancel.cancelled() => return Ok(RunEnd::Interrupted),
                    _ = self.stop.after_iteration.cancelled() => return Ok(RunEnd::Stopped),
                }
                self.paused_until = None;
                continue;
            }
            self.show();
            let ended = loop {
                tokio::select! {
                    ended = joins.join_next() => break ended,
                    _ = self.stop.cancel.cancelled() => break None,
                    // The live display's elapsed times.
                    _ = tokio::time::sleep(Duration::from_secs(1)) => self.show(),
                }
            };
            let Some(Ok((w, status))) = ended else { continue };
            if let Some(f) = self.finish(w, status, &backlog).await? {
                fatal = Some(f);
            }
            self.run_hooks().await;
        }
    }

    /// Runs the hooks found due, in order, their output in their folders.
    async fn run_hooks(&mut self) {
        for (hook, ev, dir) in std::mem::take(&mut self.hooks_due) {
            if self.stop.cancel.is_cancelled() {
                break;
            }
            self.events.hook(hook, &ev, &dir, &self.stop, &mut *self.reporter).await;
        }
        self.events.report(&mut *self.reporter);
    }

    /// Notes `hook` as due, with its event, if it has commands.
    fn hook_due(&mut self, hook: Hook, about: About, dir: PathBuf) {
        let configured = match hook {
            Hook::BeforeIteration => false,
            Hook::AfterIteration => !self.events.hooks().after_iteration.is_empty(),
            Hook::OnLand => !self.events.hooks().on_land.is_empty(),
            Hook::OnBlocked => !self.events.hooks().on_blocked.is_empty(),
        };
        if configured {
            let ev = self.events.event(hook.name(), about);
            self.hooks_due.push((hook, ev, dir));
        }
    }

    /// Runs `before_iteration` for `task` as iteration `number`; whether it may start. A skip
    /// is recorded (`skipped`: no attempt, no iteration of the budget) and the task is not
    /// started again for `[hooks] skip_wait`.
    async fn before_iteration(&mut self, task: &Spec) -> Result<bool, CliError> {
        let number = self.meta.iterations + 1;
        let dir = logs::iter_dir(&self.run_dir, number);
        let wait = self.events.hooks().skip_wait;
        let again = format!("it is tried again in {} (other tasks go on meanwhile)", runner::human(wait));
        let gate = self
            .events
            .before_iteration(&self.run_id, number, task, None, &dir, &again, &self.stop, &mut *self.reporter)
            .await;
        let rec = match gate {
            Gate::Go => return Ok(true),
            Gate::Stopped => return Ok(false),
            Gate::Skip(rec) => *rec,
        };
        self.meta.iterations = number;
        self.budget.record(&rec);
        *self.counts.entry(rec.outcome).or_default() += 1;
        self.meta.save(&self.run_dir)?;
        let path = logs::records_path(&self.run_dir);
        record::append(&path, &rec)
            .map_err(|e| CliError::failure(format!("cannot write {}: {e}", path.display())))?;
        self.events.iteration_ended(&rec, Some(&task.title), true);
        self.reporter.iteration_ended(&rec);
        self.skipped.insert(task.id.clone(), Instant::now() + wait);
        Ok(false)
    }

    /// Starts workers on runnable tasks while slots are free.
    async fn start_ready(
        &mut self,
        backlog: &Backlog,
        joins: &mut tokio::task::JoinSet<(u32, std::io::Result<std::process::ExitStatus>)>,
    ) -> Result<(), CliError> {
        let busy: BTreeSet<String> = self.running.values().map(|r| r.task.clone()).collect();
        let running_specs: Vec<&Spec> = backlog.tasks.iter().filter(|t| busy.contains(&t.id)).collect();
        let mut chosen: Vec<Spec> = Vec::new();
        // Iterations under way count against the budget already: `max_iterations` is never
        // overshot by the workers still running when it is reached.
        let left = self.cfg.budget.max_iterations.saturating_sub(self.budget.spent.iterations) as usize;
        let room = (self.cfg.workers as usize).min(left);
        let now = Instant::now();
        self.skipped.retain(|_, until| *until > now);
        for t in backlog.runnable() {
            if self.skipped.contains_key(&t.id) {
                continue;
            }
            if self.running.len() + chosen.len() >= room {
                break;
            }
            if busy.contains(&t.id) {
                continue;
            }
            let clash = running_specs
                .iter()
                .copied()
                .chain(chosen.iter())
                .any(|o| crate::backlog::may_conflict(&o.touches, &t.touches));
            if clash {
                continue;
            }
            // A task over its own limits is blocked before it spends more.
            if let Some(reason) =
                runner::task_rules::over_task_limit(&self.state.task(&t.id), &self.cfg.budget)
            {
                self.block(t, &reason, None)?;
                continue;
            }
            chosen.push(t.clone());
        }
        for task in chosen {
            let Some(w) = (1..=self.cfg.workers).find(|w| !self.running.contains_key(w)) else { break };
            let Some(agent) = self.pick_agent(&task)? else { break };
            if !self.before_iteration(&task).await? {
                continue;
            }
            self.spawn(w, &task, agent, joins)?;
        }
        Ok(())
    }

    /// The agent for the next worker on `task` (see [`crate::agent::fallback`]); `None` when
    /// every agent of its chain is limited: no worker starts until the first limit lifts.
    fn pick_agent(&mut self, task: &Spec) -> Result<Option<String>, CliError> {
        use crate::agent::fallback::Choice;
        let mut order = self.cfg.chain(task.agent.as_deref());
        order.retain(|n| self.cfg.agent_named(n).is_some());
        let now = jiff::Timestamp::now();
        let choice = self.chain.choose(&order, now);
        self.meta.agents_limited = self.chain.limits(now);
        match choice {
            Choice::Run(name) => {
                if name != self.cfg.agent.name && task.agent.as_deref() != Some(name.as_str()) {
                    self.reporter.line(&format!("{}: runs on {name} (fallback)", task.id));
                }
                Ok(Some(name))
            }
            Choice::Wait { agent, until } => {
                let wait = Duration::try_from(now.duration_until(until)).unwrap_or_default();
                self.paused_until = Some(Instant::now() + wait);
                self.reporter.line(&format!(
                    "every agent is limited: no worker starts for {} (until {agent}'s limit lifts)",
                    runner::human(wait)
                ));
                Ok(None)
            }
            // The agents that cannot run ended the run when the last of them failed.
            Choice::NoneLeft => Ok(None),
        }
    }

    fn spawn(
        &mut self,
        w: u32,
        task: &Spec,
        agent: String,
        joins: &mut tokio::task::JoinSet<(u32, std::io::Result<std::process::ExitStatus>)>,
    ) -> Result<(), CliError> {
        let tip = self.guard_tip()?;
        let slot = self.slots.prepare(w, &tip)?;
        // Work that did not land goes back onto the new tip, uncommitted, for the agent to
        // finish (the conflict, or the failing checks, are in its prompt).
        if let Some(patch) = self.rework.remove(&task.id) {
            match git::apply_3way(&slot, &patch)? {
                Ok(conflicted) => {
                    self.reworked.insert(task.id.clone());
                    if !conflicted.is_empty() {
                        self.conflicted.insert(task.id.clone(), conflicted.clone());
                    }
                    self.reporter.line(&format!(
                        "worker {w} · {}: its work that did not land is put back on the new tip{}",
                        task.id,
                        if conflicted.is_empty() {
                            String::new()
                        } else {
                            format!(" (conflicts in {})", conflicted.join(", "))
                        }
                    ));
                }
                Err(text) => {
                    self.reporter.line(&format!(
                        "worker {w} · {}: its earlier work does not apply on the new tip ({}); it starts afresh",
                        task.id,
                        text.lines().next().unwrap_or("")
                    ));
                    git::reset_checkout(&slot, &Slots::branch(w), &tip)?;
                }
            }
        }
        // The worker's private state starts as the coordinator's (attempts, last failure).
        self.state.save(&slot)?;
        self.meta.iterations += 1;
        let iteration = self.meta.iterations;
        self.meta.spent = Some(self.budget.spent_now());
        self.meta.save(&self.run_dir)?;
        // The coordinator takes the notes for the iteration it starts, and hands them over.
        let reporter = &mut *self.reporter;
        let notes = crate::notes::take_for(&self.inbox, iteration, &self.secrets, &mut |l| reporter.line(l));
        crate::notes::hand(&logs::iter_dir(&self.run_dir, iteration), &notes)?;
        let exe = std::env::current_exe()
            .map_err(|e| CliError::failure(format!("cannot find ralph's own program: {e}")))?;
        let mut cmd = crate::runner::worker::SlotTask {
            slot: slot.clone(),
            task: task.id.clone(),
            run_id: self.run_id.clone(),
            iteration,
            run_dir: self.run_dir.clone(),
            worker: w,
            time_left: self.budget.time_left(),
            agent: self.opts.agent.clone(),
            agent_name: Some(agent).filter(|a| *a != self.cfg.agent.name),
            template: None,
        }
        .command(&exe)?;
        let mut child =
            cmd.spawn().map_err(|e| CliError::failure(format!("cannot start worker {w}: {e}")))?;
        let pid = child.id();
        joins.spawn(async move { (w, child.wait().await) });
        self.reporter
            .line(&format!("worker {w} · iteration {iteration} · {} · {}: started", task.id, task.title));
        self.running
            .insert(w, Running { task: task.id.clone(), iteration, slot, started: Instant::now(), pid });
        self.rows.insert(
            w,
            WorkerRow {
                id: w,
                task: task.id.clone(),
                iteration,
                phase: "agent".into(),
                started_at: logs::now_rfc3339(),
            },
        );
        self.save_rows();
        Ok(())
    }

    /// The live display: one line per worker, then the landing queue.
    fn show(&mut self) {
        let mut lines: Vec<String> = self
            .running
            .iter()
            .map(|(w, r)| {
                let phase = self.rows.get(w).map_or("agent", |row| row.phase.as_str());
                let secs = r.started.elapsed().as_secs();
                format!(
                    "worker {w} · iteration {} · {} · {phase} · {}",
                    r.iteration,
                    r.task,
                    runner::human(Duration::from_secs(secs))
                )
            })
            .collect();
        let queue: Vec<&str> =
            self.rows.values().filter(|r| r.phase == "landing").map(|r| r.task.as_str()).collect();
        if !queue.is_empty() {
            lines.push(format!("landing: {}", queue.join(", ")));
        }
        self.reporter.workers(&lines);
    }

    fn save_rows(&self) {
        let file = WorkersFile {
            pid: std::process::id(),
            workers: self.rows.values().cloned().collect(),
            queue: self.rows.values().filter(|r| r.phase == "landing").map(|r| r.task.clone()).collect(),
        };
        if let Ok(bytes) = serde_json::to_vec_pretty(&file) {
            // A whole new file each time (a few times a task): nothing left beside it at the end.
            let _ = state::atomic_write_later(&self.run_dir.join(WORKERS_FILE), &bytes);
        }
    }

    /// A worker ended: its result is landed (green work) or recorded; returns a fatal agent
    /// failure that ends the run.
    async fn finish(
        &mut self,
        w: u32,
        status: std::io::Result<std::process::ExitStatus>,
        backlog: &Backlog,
    ) -> Result<Option<String>, CliError> {
        let Some(run) = self.running.remove(&w) else { return Ok(None) };
        let conflicted = self.conflicted.remove(&run.task).unwrap_or_default();
        let dir = logs::iter_dir(&self.run_dir, run.iteration);
        let Some(result) = WorkerResult::load(&dir) else {
            let how = match status {
                Ok(s) => s.to_string(),
                Err(e) => e.to_string(),
            };
            let mut rec = IterationRecord::new(&self.run_id, run.iteration, &run.task, Outcome::Interrupted);
            rec.worker = Some(w);
            rec.failure = Some(format!("worker {w} ended without a result ({how}); its log is worker.log"));
            rec.cause = Some(Cause::Crashed);
            rec.duration_ms = u64::try_from(run.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.rows.remove(&w);
            self.save_rows();
            self.settle(rec, None)?;
            return Ok(None);
        };
        let mut rec = result.record;
        rec.worker = Some(w);
        let task = backlog.get(&run.task).cloned();
        // Learnings are admitted whatever the outcome: failures teach the most.
        let added = self.admit(&result.findings, &rec, task.as_ref());
        rec.learnings_added.clone_from(&added);
        if rec.commit.is_none() {
            // A rework that did not even reach landing is over: next time, afresh.
            self.reworked.remove(&rec.task);
        }
        if let (Some(commit), Some(task)) = (rec.commit.clone(), task.as_ref()) {
            if let Some(row) = self.rows.get_mut(&w) {
                row.phase = "landing".into();
            }
            self.save_rows();
            self.show();
            self.reporter.line(&format!("worker {w} · iteration {} · {}: landing", run.iteration, task.id));
            self.guard_tip()?;
            let status = if rec.outcome == Outcome::Done { Status::Done } else { Status::Todo };
            let base = rec.head_before.clone().unwrap_or_default();
            let lander = Lander {
                root: &self.root,
                target: &self.target,
                cfg: &self.cfg,
                secrets: &self.secrets,
                stop: &self.stop,
                run_id: &self.run_id,
            };
            let baseline = self.state.baseline.clone();
            let unresolved = markers_left(&run.slot, &base, &commit, &conflicted)?;
            let landed = if unresolved.is_empty() {
                lander
                    .land(
                        &landing::Work { slot: &run.slot, task, status, base: &base },
                        &self.store,
                        baseline.as_ref(),
                        &dir.join("landing.log"),
                    )
                    .await?
            } else {
                Landing::Conflict(format!("conflict markers are left in {}", unresolved.join(", ")))
            };
            match landed {
                Landing::Landed(sha) => {
                    self.known_tip.clone_from(&sha);
                    self.store.set_commit(&added, &sha);
                    // The checks passed on what landed: the next workers, starting from it,
                    // need not run them on the clean tree first.
                    runner::task_rules::after_commit(
                        &mut self.state,
                        &sha,
                        Vec::new(),
                        true,
                        &rec.checks,
                        &task.checks,
                    );
                    rec.commit = Some(sha);
                }
                other => {
                    let patch = git::diff_between(&run.slot, &base, &commit).unwrap_or_default();
                    let masked = self.secrets.mask(&String::from_utf8_lossy(&patch));
                    let kept = state::atomic_write(&dir.join("rejected.patch"), masked.as_bytes()).is_ok();
                    // Once: the rework's own failure to land runs the task afresh.
                    let rework =
                        kept && !self.reworked.remove(&task.id) && !matches!(other, Landing::Refused(_));
                    if rework {
                        self.rework.insert(task.id.clone(), dir.join("rejected.patch"));
                    }
                    let again = if rework {
                        "the next iteration starts from the new tip with this work put back on it, uncommitted: finish it there"
                    } else {
                        "the task runs again from the new tip"
                    };
                    let (cause, failure) = match other {
                        Landing::Conflict(t) => (
                            Cause::LandConflict,
                            format!(
                                "the work no longer applies on {} (another task landed first; resolve the conflict markers `<<<<<<<` and keep both changes): {}; {again}",
                                self.target,
                                crate::checks::last_lines(&t, 20)
                            ),
                        ),
                        Landing::Red(t) => (
                            Cause::LandChecksFailed,
                            format!(
                                "the checks failed on the work combined with what landed first; {again}:\n{t}"
                            ),
                        ),
                        Landing::Refused(t) | Landing::Landed(t) => (
                            Cause::HookRejected,
                            format!(
                                "`git commit` was refused when ralph landed the work: {}",
                                crate::checks::last_lines(&t, 20)
                            ),
                        ),
                    };
                    rec.outcome = Outcome::ChecksFailed;
                    rec.cause = Some(cause);
                    rec.failure = Some(failure);
                    rec.commit = None;
                    let tip = self.tip()?;
                    git::reset_checkout(&run.slot, &Slots::branch(w), &tip)?;
                }
            }
        }
        self.store.save(&self.root)?;
        self.rows.remove(&w);
        self.save_rows();
        let name = rec.agent.clone().unwrap_or_else(|| self.cfg.agent.name.clone());
        let mut order = self.cfg.chain(task.as_ref().and_then(|t| t.agent.as_deref()));
        order.retain(|n| self.cfg.agent_named(n).is_some());
        if let Some((reset_at, message)) = &result.limit {
            let limit = crate::agent::limits::Limit {
                reset_at: reset_at.as_deref().and_then(|r| r.parse().ok()),
                message: message.clone(),
            };
            let retry_wait = self.cfg.agent_named(&name).map_or(self.cfg.agent.retry_wait, |a| a.retry_wait);
            let now = jiff::Timestamp::now();
            let wait = crate::agent::limits::wait_for(&limit, now, retry_wait);
            match self.chain.on_limit(&name, wait, self.cfg.fallback_after, &order, now) {
                crate::agent::fallback::OnLimit::WaitOut => {
                    self.paused_until = Some(Instant::now() + wait);
                    self.reporter.line(&format!(
                        "worker {w} hit a usage limit: no worker starts for {}; the same task runs again, no attempt used",
                        runner::human(wait)
                    ));
                }
                crate::agent::fallback::OnLimit::FallBack { .. } => {
                    self.meta.agents_limited = self.chain.limits(now);
                    self.reporter.line(&format!(
                        "worker {w}: {name} hit a usage limit that lifts in {}: the next workers run on the agents after it, no attempt used",
                        runner::human(wait)
                    ));
                    if let crate::agent::fallback::Choice::Run(next) = self.chain.choose(&order, now) {
                        let why = format!("a usage limit that lifts in {}", runner::human(wait));
                        self.events.agent_fallback(&name, &next, &why, About::record(&rec));
                    }
                }
            }
        }
        let about = About::record(&rec);
        self.settle(rec, task.as_ref())?;
        let Some(fatal) = result.fatal else { return Ok(None) };
        // The next agent of the chain takes over; with none left the run ends.
        self.chain.set_unusable(&name, &fatal);
        let crate::agent::fallback::Choice::Run(next) = self.chain.choose(&order, jiff::Timestamp::now())
        else {
            return Ok(Some(fatal));
        };
        self.reporter.line(&format!("worker {w}: {name}: {fatal}; the run goes on without it"));
        self.events.agent_fallback(&name, &next, &fatal, about);
        Ok(None)
    }

    /// Admits a worker's learnings into the one store; the ids added.
    fn admit(
        &mut self,
        findings: &crate::agent::scan::Findings,
        rec: &IterationRecord,
        task: Option<&Spec>,
    ) -> Vec<String> {
        let provenance = learnings::Provenance::of(&self.cfg.agent, rec, &self.run_id);
        let body = task.map(|t| t.body.as_str()).unwrap_or("");
        let admitted = self.store.admit(findings, &provenance, body, &self.secrets, &self.cfg.learnings);
        for r in &admitted.rejected {
            self.reporter.line(&format!("learning not kept ({}): {}", r.reason, r.text));
        }
        admitted.added
    }

    /// Folds a finished iteration into the task's state, budgets and records.
    fn settle(&mut self, mut rec: IterationRecord, task: Option<&Spec>) -> Result<(), CliError> {
        let settled = runner::task_rules::Settled {
            outcome: rec.outcome,
            committed: rec.commit.is_some(),
            failure: rec.failure.as_deref(),
            progress: rec.progress.clone(),
            tokens: rec.tokens.map_or(0, |t| t.total()),
            elapsed_ms: rec.duration_ms,
            run_id: &self.run_id,
            iteration: rec.iteration,
            spec_fingerprint: task.map(|t| crate::backlog::spec::fingerprint(&t.body)).unwrap_or_default(),
            agent_unusable: matches!(rec.cause, Some(Cause::Auth | Cause::ModelMissing)),
        };
        let max_attempts = task.and_then(|t| t.max_attempts).unwrap_or(self.cfg.budget.max_attempts);
        let reason = runner::task_rules::settle(
            self.state.task_mut(&rec.task),
            &settled,
            max_attempts,
            &self.cfg.budget,
        );
        if let (Some(reason), Some(task)) = (reason, task) {
            self.block(task, &reason, Some(rec.iteration))?;
            rec.blocked = true;
        }
        self.state.save(&self.root)?;
        self.budget.record(&rec);
        *self.counts.entry(rec.outcome).or_default() += 1;
        let spent = self.budget.spent_now();
        self.meta.elapsed_ms = spent.elapsed_ms;
        self.meta.spent = Some(spent);
        let path = logs::records_path(&self.run_dir);
        record::append(&path, &rec)
            .map_err(|e| CliError::failure(format!("cannot write {}: {e}", path.display())))?;
        self.reporter.iteration_ended(&rec);
        self.reporter.totals(&self.budget.summary());
        // The record is the landed one: `commit` is on the target branch.
        self.events.iteration_ended(&rec, task.map(|t| t.title.as_str()), true);
        if rec.outcome != Outcome::Interrupted {
            let dir = logs::iter_dir(&self.run_dir, rec.iteration);
            let about = || About { title: task.map(|t| t.title.clone()), ..About::record(&rec) };
            self.hook_due(Hook::AfterIteration, about(), dir.clone());
            if rec.commit.is_some() {
                self.hook_due(Hook::OnLand, about(), dir);
            }
        }
        Ok(())
    }

    /// Blocks a task: `status: blocked` and the reason, committed on the target branch through
    /// a free slot (a story or item keeps its block in ralph's state).
    /// `iteration`: the one that blocked it, if one did (the hook's output goes to its folder).
    fn block(&mut self, task: &Spec, reason: &str, iteration: Option<u32>) -> Result<(), CliError> {
        let ts = self.state.task_mut(&task.id);
        ts.blocked_by_ralph = true;
        ts.block = Some((reason.to_string(), logs::now_rfc3339()));
        self.reporter.line(&format!("blocked {}: {reason}", task.id));
        let about = About {
            title: Some(task.title.clone()),
            iteration,
            reason: Some(reason.to_string()),
            ..About::task(&task.id)
        };
        self.events.task_blocked(about.clone());
        let dir = iteration.map_or_else(|| self.run_dir.clone(), |n| logs::iter_dir(&self.run_dir, n));
        self.hook_due(Hook::OnBlocked, about, dir);
        if task.origin != crate::backlog::Origin::File {
            return Ok(());
        }
        let short = reason.split(';').next().unwrap_or(reason);
        let message = format!("ralph({}): blocked ({short})\n\n{reason}\n\n{}", task.id, self.trailers(task));
        self.commit_status(task, Status::Blocked, Some(reason), &message)
    }

    /// Reopens a done task whose spec changed since (`[backlog] reopen_changed`).
    fn reopen(&mut self, task: &Spec) -> Result<(), CliError> {
        let message = format!(
            "ralph({}): reopened: the spec changed since it was done\n\n{}",
            task.id,
            self.trailers(task)
        );
        self.commit_status(task, Status::Todo, None, &message)?;
        runner::task_rules::reopen(self.state.task_mut(&task.id));
        self.reporter.line(&format!("{} changed since {} was done: reopened", task.path.display(), task.id));
        Ok(())
    }

    fn trailers(&self, task: &Spec) -> String {
        format!(
            "Ralph-Task: {}\nRalph-Run: {}\nRalph-Iteration: {}\n",
            task.id, self.run_id, self.meta.iterations
        )
    }

    /// Writes `status` into the task's spec and commits it on the target branch through a free
    /// slot, landing it as work lands (a compare-and-swap, or a fast-forward of your checkout).
    fn commit_status(
        &mut self,
        task: &Spec,
        status: Status,
        reason: Option<&str>,
        message: &str,
    ) -> Result<(), CliError> {
        let Some(w) = (1..=self.cfg.workers).find(|w| !self.running.contains_key(w)) else { return Ok(()) };
        for _ in 0..3 {
            let tip = self.guard_tip()?;
            let slot = self.slots.prepare(w, &tip)?;
            let spec = slot.join(&task.path);
            let before = crate::fsx::read_input(&spec)
                .map_err(|e| CliError::failure(format!("cannot read {}: {e}", spec.display())))?;
            if !crate::backlog::set_status(&slot, task, &before, status, reason)? {
                return Ok(());
            }
            let new = match git::commit_including(&slot, message, &[task.path.as_path()])? {
                git::CommitResult::Committed(new) => new,
                git::CommitResult::Refused(text) => {
                    self.reporter.line(&format!(
                        "warning: git commit of {}'s status was refused; the change is not kept: {}",
                        task.id,
                        text.trim()
                    ));
                    return Ok(());
                }
            };
            // Local changes in the way of the fast-forward: the status waits for the next try.
            if landing::move_target(&self.root, &self.target, &new, &tip)?.unwrap_or(false) {
                self.known_tip.clone_from(&new);
                // A status changes no code: what the checks made of the tip holds.
                runner::task_rules::carry_baseline(&mut self.state, &tip, &new);
                return Ok(());
            }
        }
        Ok(())
    }

    /// Between rounds, as the single loop does: a task the user moved back to todo starts over
    /// with fresh attempts; a done task whose spec was edited since is reopened. True when the
    /// backlog changed.
    fn refresh(&mut self, backlog: &Backlog) -> Result<bool, CliError> {
        let busy: BTreeSet<String> = self.running.values().map(|r| r.task.clone()).collect();
        let mut changed = runner::task_rules::unblock_by_hand(&mut self.state, backlog);
        if self.cfg.reopen_changed {
            let edited: Vec<Spec> = backlog
                .tasks
                .iter()
                .filter(|t| {
                    t.status == Status::Done && !busy.contains(&t.id) && runner::spec_changed(&self.state, t)
                })
                .cloned()
                .collect();
            for t in &edited {
                self.reopen(t)?;
                changed = true;
            }
        }
        if changed {
            self.state.save(&self.root)?;
        }
        Ok(changed)
    }

    /// Stops every worker (their agents stop, their slots are put back) and waits for them.
    async fn stop_workers(&mut self) {
        for r in self.running.values() {
            if let Some(pid) = r.pid.and_then(|p| i32::try_from(p).ok()) {
                // SAFETY: kill with a pid of ralph's own child and a signal number.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
        }
        let deadline = Instant::now() + self.cfg.agent.kill_grace + Duration::from_secs(10);
        while self.running.values().any(|r| r.pid.is_some_and(state::running)) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for (w, r) in std::mem::take(&mut self.running) {
            let mut rec = IterationRecord::new(&self.run_id, r.iteration, &r.task, Outcome::Interrupted);
            rec.worker = Some(w);
            rec.failure = Some("the run was stopped while the worker ran; nothing of it landed".into());
            rec.duration_ms = u64::try_from(r.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let _ = self.settle(rec, None);
        }
    }
}

/// The files of `files` to which `commit` adds conflict markers (`<<<<<<< ` or `>>>>>>> ` at
/// the start of a line): a rework's conflicts left unresolved.
fn markers_left(slot: &Path, base: &str, commit: &str, files: &[String]) -> Result<Vec<String>, CliError> {
    let mut left = Vec::new();
    for f in files {
        let patch = git::tree_patch(slot, base, commit, std::slice::from_ref(f))?;
        let added_marker = String::from_utf8_lossy(&patch)
            .lines()
            .any(|l| l.starts_with("+<<<<<<< ") || l.starts_with("+>>>>>>> "));
        if added_marker {
            left.push(f.clone());
        }
    }
    Ok(left)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, status: Status, depends_on: &[&str], priority: Option<i64>) -> Spec {
        Spec {
            id: id.into(),
            path: PathBuf::from(format!("specs/{id}.md")),
            status,
            priority,
            depends_on: depends_on.iter().map(|d| d.to_string()).collect(),
            ..Spec::default()
        }
    }

    #[test]
    fn runnable_tasks_are_the_todo_ones_whose_dependencies_landed_in_the_loops_order() {
        let backlog = Backlog {
            tasks: vec![
                spec("a", Status::Done, &[], None),
                spec("b", Status::Todo, &["a"], None),
                spec("c", Status::Todo, &["b"], None),
                spec("d", Status::Todo, &[], Some(1)),
                spec("e", Status::Blocked, &[], None),
                spec("f", Status::Todo, &["e"], None),
                spec("g", Status::Todo, &[], None),
            ],
        };
        let ids: Vec<&str> = backlog.runnable().iter().map(|t| t.id.as_str()).collect();
        // `c` waits for `b` to land, `f` for a blocked task; a priority goes first.
        assert_eq!(ids, ["d", "b", "g"]);
    }

    #[test]
    fn the_workers_file_reads_back_what_status_shows() {
        let dir = tempfile::tempdir().unwrap();
        let file = WorkersFile {
            pid: 7,
            workers: vec![WorkerRow {
                id: 2,
                task: "010-a".into(),
                iteration: 5,
                phase: "landing".into(),
                started_at: "2026-12-06T05:00:00Z".into(),
            }],
            queue: vec!["010-a".into()],
        };
        std::fs::write(dir.path().join(WORKERS_FILE), serde_json::to_vec(&file).unwrap()).unwrap();
        let back = WorkersFile::load(dir.path()).unwrap();
        assert_eq!(
            (back.pid, back.workers[0].id, back.queue.as_slice()),
            (7, 2, ["010-a".to_string()].as_slice())
        );
        assert!(WorkersFile::load(&dir.path().join("none")).is_none());
    }
}
