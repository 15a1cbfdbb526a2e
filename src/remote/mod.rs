//! `ralph worker`: one worker of many, on any machine, coordinated through the git remote
//! alone. In its own clone it fetches the target branch and the claims, claims a runnable task
//! ([`claims`]), keeps the claim alive with heartbeats while its iterations run (`ralph
//! work-slot`, the single loop's iteration), and lands green work with one atomic push that
//! moves the target from the tip it rebased onto and deletes (or keeps) its claim from its own
//! claim commit. The backlog's statuses travel in the landed commits: there is no other state.
//!
//! Invariants: nothing lands without the worker's claim holding at that instant (the push's
//! lease on it); a worker that loses its claim (a heartbeat that does not hold) stops its agent
//! at once and lands nothing; a landing that the remote refuses is fetched, rebased, checked
//! and retried a few times, then the work is pushed to `ralph/<task>` and the task blocked
//! with the reason. The clone is the worker's: it refuses to start with uncommitted changes.

pub mod claims;

use crate::backlog::{Backlog, Spec, Status};
use crate::error::CliError;
use crate::events::{About, Events, Hook};
use crate::git;
use crate::record::{self, Cause, IterationRecord, Outcome};
use crate::runner::worker::{RALPH_WORKER, SlotTask, WorkerResult};
use crate::signal::Stop;
use claims::{Leased, Remote, Watcher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Landings retried after the remote refused them (the target moved).
const MAX_LAND_TRIES: u32 = 3;

/// Why work does not land when its worker no longer holds the task's claim.
const LOST: &str = "another worker took the claim over (this one's lease ran out)";

/// Where a worker keeps its agents' usage limits, for a restarted worker of the clone.
fn limits_path(root: &Path) -> PathBuf {
    root.join(crate::state::RALPH_DIR).join("worker").join("agents-limited.json")
}

/// One iteration's learning proposals, kept until the push that lands or blocks its task.
struct Learned {
    findings: crate::agent::scan::Findings,
    provenance: crate::learnings::Provenance,
}

/// The workers' learnings store with what a landing adds to it: AGENTS.md is rendered from it
/// in the clone, and the push moves the store's ref from `seen`, leased, with the landing.
struct Admission {
    store: crate::learnings::Store,
    seen: Option<String>,
    added: Vec<String>,
}

/// What landed work cost, from its commits' trailers.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Spent {
    pub iterations: u32,
    pub tokens: u64,
    pub cost_usd: f64,
}

impl Spent {
    fn add(&mut self, r: &IterationRecord) {
        self.iterations += 1;
        self.tokens += r.tokens.map_or(0, |t| t.total());
        self.cost_usd += r.cost_usd.unwrap_or(0.0);
    }
}

/// The spending of every landed task in `rev`'s history, from the `Ralph-*` trailers.
pub fn remote_spent(root: &Path, rev: &str) -> Result<Spent, CliError> {
    let mut s = Spent::default();
    for (_, trailers) in git::ralph_trailers(root, rev)? {
        for (k, v) in trailers {
            match k.as_str() {
                "Ralph-Iterations" => s.iterations += v.parse::<u32>().unwrap_or(0),
                "Ralph-Tokens" => s.tokens += v.parse::<u64>().unwrap_or(0),
                "Ralph-Cost" => s.cost_usd += v.parse::<f64>().unwrap_or(0.0),
                _ => {}
            }
        }
    }
    Ok(s)
}

/// The remote as a command that only looks at it sees it (`status --remote`, `stats
/// --remote`): fetched now.
fn looking(cwd: &Path) -> Result<(PathBuf, Remote), CliError> {
    let root = crate::runner::repo_root(cwd)?;
    let cfg = crate::runner::load_config(&root, &crate::config::Overrides::default())?;
    let target = cfg.branch.clone().or(git::current_branch(&root)?).unwrap_or_else(|| "main".into());
    let remote = Remote {
        root: root.clone(),
        name: cfg.remote.name.clone(),
        target,
        worker: String::new(),
        host: String::new(),
    };
    remote.fetch()?;
    Ok((root, remote))
}

/// `ralph stats --remote`: what the workers landed and spent, from the target's history alone.
pub fn stats(cwd: &Path, json: bool) -> Result<u8, CliError> {
    let (root, remote) = looking(cwd)?;
    let mut by_worker: std::collections::BTreeMap<String, (u32, Spent)> = Default::default();
    for (subject, trailers) in git::ralph_trailers(&root, &remote.tracking())? {
        let get = |k: &str| trailers.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        let Some(worker) = get("Ralph-Worker") else { continue };
        if get("Ralph-Cost").is_none() {
            continue;
        }
        let e = by_worker.entry(worker).or_default();
        if subject.starts_with("ralph(") && !subject.contains("): blocked") {
            e.0 += 1;
        }
        e.1.iterations += get("Ralph-Iterations").and_then(|v| v.parse().ok()).unwrap_or(0);
        e.1.tokens += get("Ralph-Tokens").and_then(|v| v.parse().ok()).unwrap_or(0);
        e.1.cost_usd += get("Ralph-Cost").and_then(|v| v.parse().ok()).unwrap_or(0.0);
    }
    let total = remote_spent(&root, &remote.tracking())?;
    if json {
        let workers: Vec<serde_json::Value> = by_worker
            .iter()
            .map(|(w, (landed, s))| serde_json::json!({"worker": w, "landed": landed, "iterations": s.iterations, "tokens": s.tokens, "cost_usd": s.cost_usd}))
            .collect();
        let v = serde_json::json!({"target": remote.target, "workers": workers, "total": total});
        crate::outln!("{}", serde_json::to_string_pretty(&v).map_err(|e| CliError::failure(e.to_string()))?);
        return Ok(crate::exit_code::OK);
    }
    for (w, (landed, s)) in &by_worker {
        crate::outln!(
            "{w}: {landed} landing(s) · {} iteration(s) · {} tokens · ${:.2}",
            s.iterations,
            crate::budget::si(s.tokens),
            s.cost_usd
        );
    }
    crate::outln!(
        "total on {}: {} iteration(s) · {} tokens · ${:.2}",
        remote.target,
        total.iterations,
        crate::budget::si(total.tokens),
        total.cost_usd
    );
    Ok(crate::exit_code::OK)
}

/// A claim as `ralph status --remote` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClaimView {
    pub task: String,
    pub worker: String,
    pub host: String,
    pub base: String,
    pub attempt: String,
    /// The claim's commit (a heartbeat makes a new one).
    pub commit: String,
    /// Heartbeats so far: the claim commit's ancestors.
    pub heartbeats: u32,
}

/// `ralph status --remote`: fetches the claims and says who holds what.
pub fn status(cwd: &Path, json: bool) -> Result<u8, CliError> {
    let (root, remote) = looking(cwd)?;
    let mut views = Vec::new();
    for (task, commit) in remote.claims()? {
        let body = git::commit_message(&root, &commit).unwrap_or_default();
        let trailer = |k: &str| {
            body.lines()
                .rev()
                .find_map(|l| l.strip_prefix(&format!("{k}: ")).map(str::to_string))
                .unwrap_or_default()
        };
        // A claim's own fields are in the newest commit that carries them (a claim or a
        // take-over); the heartbeats on top name only the worker.
        let history = git::messages(&root, &commit).unwrap_or_default();
        let heartbeats =
            u32::try_from(history.iter().take_while(|m| !m.contains("Ralph-Base: ")).count()).unwrap_or(0);
        let own = history.iter().find(|m| m.contains("Ralph-Base: ")).cloned().unwrap_or_default();
        let field = |k: &str| {
            own.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}: ")).map(str::to_string))
                .unwrap_or_default()
        };
        views.push(ClaimView {
            task,
            worker: trailer("Ralph-Worker"),
            host: field("Ralph-Host"),
            base: field("Ralph-Base"),
            attempt: field("Ralph-Attempt"),
            commit,
            heartbeats,
        });
    }
    if json {
        let text =
            serde_json::to_string_pretty(&serde_json::json!({ "remote": remote.name, "claims": views }))
                .map_err(|e| CliError::failure(e.to_string()))?;
        crate::outln!("{text}");
        return Ok(crate::exit_code::OK);
    }
    if views.is_empty() {
        crate::outln!("no claim on {}: no worker holds a task", remote.name);
    }
    for v in &views {
        crate::outln!(
            "{} · claimed by {} on {} · from {} · attempt {} · {} heartbeat(s)",
            v.task,
            v.worker,
            v.host,
            &v.base[..v.base.len().min(12)],
            v.attempt,
            v.heartbeats
        );
    }
    Ok(crate::exit_code::OK)
}

/// `ralph worker`'s options.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// End once no task is left to do (none runnable, none claimed), instead of waiting for
    /// more.
    pub until_empty: bool,
    /// End after this many tasks (landed or blocked).
    pub max_tasks: Option<u32>,
}

/// The branch a worker keeps its work on in its clone.
const LOCAL: &str = "ralph/worker";

pub async fn run(cwd: &Path, o: WorkerOptions, stop: Stop) -> Result<u8, CliError> {
    let root = crate::runner::repo_root(cwd)?;
    crate::state::check_ralph_dir(&root)?;
    let cfg = crate::runner::load_config(&root, &crate::config::Overrides::default())?;
    crate::runner::check_agents(&root, &cfg, false)?;
    if !git::dirty_entries(&root)?.is_empty() {
        return Err(CliError::usage(
            "the clone has uncommitted changes: a worker resets it to each task's start",
        )
        .hint("run `ralph worker` in a clone of its own"));
    }
    let target = match (&cfg.branch, git::current_branch(&root)?) {
        (Some(b), _) => b.clone(),
        (None, Some(c)) if c != LOCAL => c,
        _ => {
            return Err(CliError::usage(
                "name the branch work lands on: [git] branch = \"NAME\" in ralph.toml",
            ));
        }
    };
    let ralph_dir = crate::state::ensure_ralph_dir(&root)?;
    // Its own lock: `.ralph/lock` is each iteration's (`ralph work-slot` takes it).
    let _lock = crate::state::RunLock::acquire(&ralph_dir.join("worker")).map_err(|e| match e {
        crate::state::StateError::Locked { .. } => CliError::usage(format!("{e}: one worker per clone")),
        other => other.into(),
    })?;
    let worker = std::env::var("RALPH_WORKER_ID")
        .unwrap_or_else(|_| format!("{}-{}", claims::host(), std::process::id()));
    let remote =
        Remote { root: root.clone(), name: cfg.remote.name.clone(), target, worker, host: claims::host() };
    if let Some(missing) = cfg.notify_env_missing() {
        return Err(
            CliError::usage(missing).hint("export it before `ralph worker`, or remove the [[notify]] entry")
        );
    }
    let run_id = crate::logs::new_run_id(&root);
    let run_dir = crate::logs::run_dir(&root, &run_id);
    crate::fsx::create_dir_all(&run_dir)
        .map_err(|e| CliError::failure(format!("cannot create {}: {e}", run_dir.display())))?;
    eprintln!(
        "ralph worker {} ({}): landing on {} of {}, claims last {} unchanged",
        remote.worker,
        run_id,
        remote.target,
        remote.name,
        crate::runner::human(cfg.remote.lease_ttl)
    );
    let secrets = cfg.secrets();
    let events = Events::new(&cfg, &root, &run_id, &run_dir, &secrets).for_worker(&remote.worker);
    let mut w = Worker {
        remote,
        secrets,
        cfg,
        run_id,
        run_dir,
        stop,
        watcher: Watcher::default(),
        iteration: 0,
        done: 0,
        spent: Spent::default(),
        started: Instant::now(),
        // The limits a worker of this clone hit before it was restarted still hold.
        chain: crate::agent::fallback::Chain::resume(
            &crate::durable::load_json(&limits_path(&root)).ok().flatten().unwrap_or_default(),
        ),
        events,
        skipped: Default::default(),
        inbox: crate::notes::Inbox::open(&root),
        ended: String::new(),
    };
    let result = w.run(&o).await;
    // The worker's end, as a run's: `budget_spent` and `run_end` (notifications only: a
    // remote worker has no run.json).
    let (code, reason) = match &result {
        Ok(code) => (*code, w.ended.clone()),
        Err(e) => (e.code, format!("error: {}", e.message)),
    };
    let summary = crate::events::summary(&reason, code, w.events.counts(), w.started.elapsed());
    let mut said = crate::reporter::Human::new();
    w.events.run_ended(&reason, code, code == crate::exit_code::BUDGET, &summary, &mut said).await;
    result
}

struct Worker {
    remote: Remote,
    /// The environment's secrets, masked in what the worker writes (AGENTS.md, its logs).
    secrets: crate::secrets::Secrets,
    cfg: crate::config::Config,
    run_id: String,
    run_dir: PathBuf,
    stop: Stop,
    watcher: Watcher,
    iteration: u32,
    /// Tasks this worker landed or blocked.
    done: u32,
    /// What this worker spent, against ralph.toml's `[budget]` (which holds per worker).
    spent: Spent,
    started: Instant,
    /// Which agents are limited or cannot run (`[agent] fallback`).
    chain: crate::agent::fallback::Chain,
    /// Notifications (`run_end`, `task_done`, `task_blocked`, `rate_limited`,
    /// `checks_red_streak`) and hooks.
    events: Events,
    /// Tasks `before_iteration` skipped, and when each may be claimed again.
    skipped: std::collections::BTreeMap<String, Instant>,
    /// The notes `ralph note` leaves in this clone for its next iteration.
    inbox: crate::notes::Inbox,
    /// Why the worker ended, in words (`run_end`'s reason).
    ended: String,
}

impl Worker {
    fn root(&self) -> &Path {
        &self.remote.root
    }

    async fn run(&mut self, o: &WorkerOptions) -> Result<u8, CliError> {
        let ttl = self.cfg.remote.lease_ttl;
        loop {
            if self.stop.cancel.is_cancelled() || self.stop.after_iteration.is_cancelled() {
                self.ended = "interrupted".into();
                return Ok(crate::exit_code::INTERRUPTED);
            }
            if o.max_tasks.is_some_and(|m| self.done >= m) {
                self.ended = format!("{} task(s) landed or blocked (--max-tasks)", self.done);
                return Ok(crate::exit_code::OK);
            }
            self.remote.fetch()?;
            let tip = self.remote.tip()?;
            git::reset_checkout(self.root(), LOCAL, &tip)?;
            let backlog = Backlog::load(self.root(), &self.cfg.source(self.root()))?;
            let mut claims = self.remote.claims()?;
            // Claims of work waiting in a pull request: gone once the target has the task
            // done, never stale before.
            let pending: Vec<String> =
                claims.iter().filter(|(_, c)| self.remote.pending(c)).map(|(t, _)| t.clone()).collect();
            for task in &pending {
                let done = backlog.get(task).is_some_and(|t| t.status == Status::Done);
                if done && let Some(c) = claims.get(task) {
                    let _ = self.remote.release(task, c);
                    let drop = self.remote.drop_tries(task)?;
                    if !drop.is_empty() {
                        let _ = git::push(self.root(), &self.remote.name, &drop);
                    }
                }
                if done {
                    claims.remove(task);
                }
            }
            let now = Instant::now();
            self.watcher.observe(&claims, now);
            let runnable = backlog.runnable();
            // Tasks waiting in pull requests are the forge's now: nothing for a worker to do.
            let active = claims.keys().filter(|t| !pending.contains(t)).count();
            if runnable.iter().all(|t| pending.contains(&t.id)) && active == 0 {
                eprintln!("nothing left to do on {}", self.remote.target);
                if o.until_empty {
                    self.ended = format!("nothing left to do on {}", self.remote.target);
                    return Ok(crate::exit_code::OK);
                }
            }
            if let Some(why) = self.over_budget() {
                eprintln!("{why}: this worker claims no more tasks");
                self.ended = format!("stopped: {why}");
                return Ok(crate::exit_code::BUDGET);
            }
            if let Some(max) = self.cfg.remote.max_cost {
                let total = remote_spent(self.root(), &self.remote.tracking())?.cost_usd;
                if total >= max {
                    eprintln!(
                        "the workers have spent ${total:.2} of [remote] max_cost ${max:.2}: no more tasks"
                    );
                    self.ended =
                        format!("stopped: the workers have spent ${total:.2} of [remote] max_cost ${max:.2}");
                    return Ok(crate::exit_code::BUDGET);
                }
            }
            let mut got = None;
            self.skipped.retain(|_, until| *until > now);
            let mut claimed_attempt = 1;
            for t in &runnable {
                if self.skipped.contains_key(&t.id) {
                    continue;
                }
                let attempt;
                let mut stolen_from = None;
                let leased = match claims.get(&t.id) {
                    None => {
                        attempt = self.remote.tries(&t.id)?.0 + 1;
                        self.remote.create(&t.id, &tip, attempt)?
                    }
                    Some(_) if pending.contains(&t.id) => continue,
                    Some(_) => match self.watcher.stale(&t.id, ttl, now) {
                        Some(observed) => {
                            eprintln!(
                                "task {}: its claim did not change for {}: taking it over",
                                t.id,
                                crate::runner::human(ttl)
                            );
                            let observed = observed.to_string();
                            stolen_from = Some(self.remote.holder(&observed));
                            // The vanished holder's attempt is counted once the steal holds.
                            attempt = self.remote.tries(&t.id)?.0 + 2;
                            self.remote.steal(&t.id, &observed, &tip, attempt)?
                        }
                        None => continue,
                    },
                };
                if let Leased::Won(claim) = leased {
                    claimed_attempt = attempt;
                    // A worker that vanished mid-task counts as a failed attempt: a task that
                    // kills its workers must not take the whole fleet down one by one.
                    if let Some(gone) = stolen_from {
                        let why = format!("{gone} stopped renewing its claim mid-task");
                        if let Err(e) = self.remote.add_try(&t.id, &tip, &why) {
                            eprintln!("task {}: {}", t.id, e.message);
                        }
                    }
                    got = Some(((*t).clone(), claim));
                    break;
                }
            }
            let Some((task, claim)) = got else {
                // Others hold what is left: wait for them to land, or for a claim to go stale.
                tokio::select! {
                    _ = tokio::time::sleep((ttl / 4).clamp(Duration::from_millis(200), Duration::from_secs(30))) => {}
                    _ = self.stop.cancel.cancelled() => {}
                }
                continue;
            };
            let nth =
                if claimed_attempt > 1 { format!(", attempt {claimed_attempt}") } else { String::new() };
            eprintln!("worker {} claimed {} ({}{nth})", self.remote.worker, task.id, task.title);
            self.work(&task, claim, &tip).await?;
            self.done += 1;
        }
    }

    /// Works on `task` while its claim holds: iterations until it is done or blocked.
    async fn work(&mut self, task: &Spec, claim: String, base: &str) -> Result<(), CliError> {
        let ttl = self.cfg.remote.lease_ttl;
        let lost = Arc::new(AtomicBool::new(false));
        let pid = Arc::new(AtomicU32::new(0));
        let mine = Arc::new(std::sync::Mutex::new(claim));
        let heartbeat = heartbeat(self.remote.clone(), &task.id, ttl, &lost, &pid, &mine);
        let max_attempts = task.max_attempts.unwrap_or(self.cfg.budget.max_attempts);
        // Attempts count across every worker that held the task (the remote keeps them).
        let mut attempts = self.remote.tries(&task.id)?.0;
        let mut base = base.to_string();
        // What the agents proposed to learn since the last landing: admitted into the
        // workers' store by the push that lands (or blocks) the task.
        let mut learned: Vec<Learned> = Vec::new();
        let mut keep_claim = false;
        // What the task cost since its last landing, for the landed commit's trailers.
        let mut spent = Spent::default();
        let result = loop {
            if self.stop.cancel.is_cancelled() {
                break Ok(());
            }
            if attempts >= max_attempts {
                let mine_now = held(&mine);
                let why = format!("{attempts} failed attempts across the workers");
                self.block(task, &why, &mine_now, &learned).await?;
                break Ok(());
            }
            if !self.before_iteration(task).await? {
                break Ok(());
            }
            let mut order = self.cfg.chain(task.agent.as_deref());
            order.retain(|n| self.cfg.agent_named(n).is_some());
            let agent = match self.chain.choose(&order, jiff::Timestamp::now()) {
                crate::agent::fallback::Choice::Run(name) => name,
                crate::agent::fallback::Choice::Wait { agent, until } => {
                    // Every agent is limited: the claim goes back to the pool meanwhile.
                    let wait =
                        Duration::try_from(jiff::Timestamp::now().duration_until(until)).unwrap_or_default();
                    eprintln!(
                        "every agent is limited: waiting {} for {agent}'s limit to lift before the next task",
                        crate::runner::human(wait)
                    );
                    heartbeat.abort();
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.stop.cancel.cancelled() => {}
                    }
                    break Ok(());
                }
                crate::agent::fallback::Choice::NoneLeft => {
                    break Err(CliError {
                        code: crate::exit_code::AGENT,
                        message: "no agent of the fallback chain can run".into(),
                        hints: Vec::new(),
                    });
                }
            };
            self.iteration += 1;
            let n = self.iteration;
            let Some(result) = self.iterate(task, n, &pid, &agent).await? else {
                if self.stop.cancel.is_cancelled() || lost.load(Ordering::SeqCst) {
                    break Ok(());
                }
                let log = crate::logs::iter_dir(&self.run_dir, n).join("worker.log");
                break Err(CliError::failure(format!(
                    "iteration {n} on {} ended without a result: {}",
                    task.id,
                    crate::fsx::read_to_string(&log)
                        .unwrap_or_default()
                        .lines()
                        .last()
                        .unwrap_or("see its worker.log")
                )));
            };
            let mut rec = result.record.clone();
            rec.worker = None;
            let f = &result.findings;
            if !(f.learnings.is_empty() && f.learning_updates.is_empty() && f.learning_retirements.is_empty())
            {
                learned.push(Learned {
                    findings: result.findings.clone(),
                    provenance: crate::learnings::Provenance::of(&self.cfg.agent, &rec, &self.run_id),
                });
            }
            spent.add(&rec);
            self.spent.add(&rec);
            if lost.load(Ordering::SeqCst) {
                rec.outcome = Outcome::Interrupted;
                rec.cause = Some(Cause::Interrupted);
                rec.commit = None;
                rec.failure = Some(
                    "another worker took the claim over (this one's lease ran out): nothing of it landed"
                        .into(),
                );
                self.recorded(&rec, task, false).await?;
                eprintln!("task {}: the claim was lost; nothing landed", task.id);
                break Ok(());
            }
            if let Some(f) = &result.fatal {
                // Another agent of the chain takes the task over, if one is left.
                self.chain.set_unusable(&agent, f);
                if let crate::agent::fallback::Choice::Run(next)
                | crate::agent::fallback::Choice::Wait { agent: next, .. } =
                    self.chain.choose(&order, jiff::Timestamp::now())
                {
                    eprintln!("task {}: {agent}: {f}; going on without it", task.id);
                    self.events.agent_fallback(&agent, &next, f, crate::events::About::record(&rec));
                    self.recorded(&rec, task, false).await?;
                    continue;
                }
            }
            if let (None, Some((reset_at, message))) = (&result.fatal, &result.limit) {
                let limit = crate::agent::limits::Limit {
                    reset_at: reset_at.as_deref().and_then(|r| r.parse().ok()),
                    message: message.clone(),
                };
                let retry_wait =
                    self.cfg.agent_named(&agent).map_or(self.cfg.agent.retry_wait, |a| a.retry_wait);
                let now = jiff::Timestamp::now();
                let wait = crate::agent::limits::wait_for(&limit, now, retry_wait);
                if let crate::agent::fallback::OnLimit::FallBack { .. } =
                    self.chain.on_limit(&agent, wait, self.cfg.fallback_after, &order, now)
                {
                    self.save_limits(now);
                    eprintln!(
                        "task {}: {agent} hit a usage limit that lifts in {}: going on with the next agent",
                        task.id,
                        crate::runner::human(wait)
                    );
                    if let crate::agent::fallback::Choice::Run(next) = self.chain.choose(&order, now) {
                        let why = format!("a usage limit that lifts in {}", crate::runner::human(wait));
                        self.events.agent_fallback(&agent, &next, &why, crate::events::About::record(&rec));
                    }
                    self.recorded(&rec, task, false).await?;
                    continue;
                }
            }
            if result.fatal.is_some() || result.limit.is_some() {
                self.recorded(&rec, task, false).await?;
                let mine_now = held(&mine);
                let _ = self.remote.release(&task.id, &mine_now);
                if let Some(f) = result.fatal {
                    break Err(CliError { code: crate::exit_code::AGENT, message: f, hints: Vec::new() });
                }
                // A usage limit: waited out with the claim let go (another worker, with other
                // credentials, may take the task meanwhile), then back to the pool.
                if let Some((reset_at, message)) = &result.limit {
                    let limit = crate::agent::limits::Limit {
                        reset_at: reset_at.as_deref().and_then(|r| r.parse().ok()),
                        message: message.clone(),
                    };
                    let retry_wait =
                        self.cfg.agent_named(&agent).map_or(self.cfg.agent.retry_wait, |a| a.retry_wait);
                    let wait = crate::agent::limits::wait_for(&limit, jiff::Timestamp::now(), retry_wait);
                    eprintln!("usage limit: waiting {} before the next task", crate::runner::human(wait));
                    heartbeat.abort();
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.stop.cancel.cancelled() => {}
                    }
                }
                break Ok(());
            }
            if rec.commit.is_some() && self.cfg.remote.land == crate::config::Land::PullRequest {
                if rec.outcome != Outcome::Done {
                    // Progress stays in the clone; the next iteration goes on from it.
                    self.recorded(&rec, task, false).await?;
                    continue;
                }
                let mine_now = held(&mine);
                let branch = format!("ralph/{}", task.id);
                if let Some(refused) = self.mark_done(task)? {
                    rec.outcome = Outcome::ChecksFailed;
                    rec.cause = Some(Cause::HookRejected);
                    rec.failure = Some(format!("`git commit` was refused: {refused}"));
                    rec.commit = None;
                    self.recorded(&rec, task, false).await?;
                    attempts = self.count_try(task, &base, "`git commit` was refused", attempts);
                    continue;
                }
                self.propose(task, &mine_now, &branch, rec, &learned).await?;
                // The claim stays (pending) until the target has the task done.
                keep_claim = true;
                break Ok(());
            }
            if rec.commit.is_some() {
                let done = rec.outcome == Outcome::Done;
                let mine_now = held(&mine);
                match self.land(task, &base, &mine_now, done, &spent, &learned).await? {
                    Ok((sha, added)) => {
                        spent = Spent::default();
                        learned.clear();
                        rec.learnings_added = added;
                        rec.commit = Some(sha.clone());
                        self.recorded(&rec, task, true).await?;
                        eprintln!(
                            "task {}: landed {}{}",
                            task.id,
                            &sha[..sha.len().min(12)],
                            if done { " (done)" } else { "" }
                        );
                        if done {
                            break Ok(());
                        }
                        base = sha;
                        continue;
                    }
                    Err(why) => {
                        if why == LOST {
                            lost.store(true, Ordering::SeqCst);
                        }
                        self.not_landed(task, rec, &why, &mine_now, &learned).await?;
                        break Ok(());
                    }
                }
            }
            self.recorded(&rec, task, false).await?;
            if rec.outcome.counts_as_attempt() {
                let failure = rec.failure.as_deref().unwrap_or("failed");
                attempts = self.count_try(task, &base, failure, attempts);
            }
            if attempts >= max_attempts {
                let mine_now = held(&mine);
                let why = format!(
                    "{attempts} failed attempts; the last: {}",
                    rec.failure.as_deref().and_then(|f| f.lines().next()).unwrap_or("")
                );
                self.block(task, &why, &mine_now, &learned).await?;
                break Ok(());
            }
            // The next attempt starts from the target as it is now.
            self.remote.fetch()?;
            base = self.remote.tip()?;
            git::reset_checkout(self.root(), LOCAL, &base)?;
        };
        heartbeat.abort();
        if result.is_ok() && !lost.load(Ordering::SeqCst) && !keep_claim {
            // Whatever did not land or block (stopped, a usage limit): the claim goes.
            let mine_now = held(&mine);
            self.remote.fetch()?;
            if self.remote.claims()?.get(&task.id) == Some(&mine_now) {
                let _ = self.remote.release(&task.id, &mine_now);
            }
        }
        result
    }

    /// One iteration by `ralph work-slot` in the clone; its result, `None` when it ended
    /// without one (stopped).
    async fn iterate(
        &self,
        task: &Spec,
        n: u32,
        pid: &AtomicU32,
        agent: &str,
    ) -> Result<Option<WorkerResult>, CliError> {
        let exe = std::env::current_exe()
            .map_err(|e| CliError::failure(format!("cannot find ralph's own program: {e}")))?;
        // Notes left in this clone (`ralph note`) go to its next iteration.
        let notes = crate::notes::take_for(&self.inbox, n, &self.secrets, &mut |l| eprintln!("{l}"));
        crate::notes::hand(&crate::logs::iter_dir(&self.run_dir, n), &notes)?;
        let mut cmd = SlotTask {
            slot: self.root().to_path_buf(),
            task: task.id.clone(),
            run_id: self.run_id.clone(),
            iteration: n,
            run_dir: self.run_dir.clone(),
            worker: 1,
            time_left: None,
            agent: None,
            agent_name: Some(agent.to_string()).filter(|a| *a != self.cfg.agent.name),
            template: None,
        }
        .command(&exe)?;
        // Named after the worker of many, not the one slot it runs in.
        cmd.env(RALPH_WORKER, &self.remote.worker).kill_on_drop(true);
        let dir = crate::logs::iter_dir(&self.run_dir, n);
        let mut child =
            cmd.spawn().map_err(|e| CliError::failure(format!("cannot start the iteration: {e}")))?;
        pid.store(child.id().unwrap_or(0), Ordering::SeqCst);
        tokio::select! {
            _ = child.wait() => {}
            _ = self.stop.cancel.cancelled() => {
                if let Some(p) = child.id().and_then(|p| i32::try_from(p).ok()) {
                    // SAFETY: kill with a pid of this worker's own child and a signal number.
                    unsafe { libc::kill(p, libc::SIGTERM); }
                }
                let _ = child.wait().await;
            }
        }
        pid.store(0, Ordering::SeqCst);
        Ok(WorkerResult::load(&dir))
    }

    /// Lands the clone's commit (made on `base`) with one atomic push: the target moves from
    /// the tip the work was rebased onto, the claim is deleted (`done`) or kept, both leased.
    /// `Err` words when it could not, after the retries.
    async fn land(
        &self,
        task: &Spec,
        base: &str,
        claim: &str,
        done: bool,
        spent: &Spent,
        learned: &[Learned],
    ) -> Result<Result<(String, Vec<String>), String>, CliError> {
        let root = self.root().to_path_buf();
        let mut last = String::new();
        // The commit before this landing rendered AGENTS.md into HEAD: its AGENTS.md is put back
        // before a rebase (rendered again on the new tip; rebased, it could conflict).
        let mut rendered: Option<String> = None;
        for _ in 0..MAX_LAND_TRIES {
            self.remote.fetch()?;
            if self.remote.claims()?.get(&task.id).map(String::as_str) != Some(claim) {
                return Ok(Err(LOST.into()));
            }
            let tip = self.remote.tip()?;
            let moved = tip != base && git::head(&root)?.as_deref() != Some(tip.as_str());
            if moved
                && let Some(before) = rendered.take()
                && let git::CommitResult::Refused(t) =
                    git::put_back_in_head(&root, &before, crate::learnings::AGENTS_MD)?
            {
                return Ok(Err(format!("`git commit` was refused: {}", t.trim())));
            }
            if moved && let Err(text) = git::rebase(&root, &tip)? {
                return Ok(Err(format!(
                    "the work no longer applies on {}: {}",
                    self.remote.target,
                    text.lines().next().unwrap_or("")
                )));
            }
            if done && let Some(refused) = self.mark_done(task)? {
                return Ok(Err(format!("`git commit` was refused: {refused}")));
            }
            // AGENTS.md rendered again on the tip it lands on, from the store as fetched now.
            let before = git::head(&root)?;
            let admission = match self.learnings_into_head(task, learned)? {
                Ok((admission, changed)) => {
                    if changed {
                        rendered = before;
                    }
                    admission
                }
                Err(refused) => return Ok(Err(refused)),
            };
            if moved {
                let lander = crate::parallel::landing::Lander {
                    root: &root,
                    target: &self.remote.target,
                    cfg: &self.cfg,
                    secrets: &self.secrets,
                    stop: &self.stop,
                    run_id: &self.run_id,
                };
                let log = crate::logs::iter_dir(&self.run_dir, self.iteration).join("landing.log");
                if let Some(failure) = lander.check(&root, task, None, &log).await? {
                    return Ok(Err(format!(
                        "the checks failed on the work combined with {}: {failure}",
                        self.remote.target
                    )));
                }
            }
            // What the work cost, in the commit itself: the shared ceiling and `ralph stats
            // --remote` read the target's history, the only state all workers share.
            let message = git::commit_message(&root, "HEAD")?;
            if !message.contains("\nRalph-Cost: ") {
                let with = format!(
                    "{}\nRalph-Worker: {}\nRalph-Iterations: {}\nRalph-Tokens: {}\nRalph-Cost: {:.6}\n",
                    message.trim_end(),
                    self.remote.worker,
                    spent.iterations,
                    spent.tokens,
                    spent.cost_usd
                );
                if let git::CommitResult::Refused(t) = git::amend_message(&root, &with)? {
                    return Ok(Err(format!("`git commit` was refused: {}", t.trim())));
                }
            }
            let new = git::head(&root)?.unwrap_or_default();
            let args = self.landing_push(task, &tip, &new, claim, done, admission.as_ref())?;
            match git::push(&root, &self.remote.name, &args)? {
                Ok(()) => {
                    self.keep_store_copy(admission.as_ref());
                    return Ok(Ok((new, admission.map(|a| a.added).unwrap_or_default())));
                }
                Err(text) => last = text,
            }
        }
        Ok(Err(format!(
            "the remote refused the landing {MAX_LAND_TRIES} times: {}",
            last.lines().last().unwrap_or("")
        )))
    }

    /// Blocks `task` on the target (its status and the reason, in one landed commit) and
    /// deletes the claim, leased; when that cannot land, the claim is let go all the same.
    async fn block(
        &mut self,
        task: &Spec,
        why: &str,
        claim: &str,
        learned: &[Learned],
    ) -> Result<(), CliError> {
        eprintln!("task {}: blocked: {why}", task.id);
        let about = About {
            title: Some(task.title.clone()),
            reason: Some(why.to_string()),
            worker: Some(self.remote.worker.clone()),
            iteration: Some(self.iteration),
            ..About::task(&task.id)
        };
        self.events.task_blocked(about.clone());
        if !self.stop.cancel.is_cancelled() {
            let ev = self.events.event(Hook::OnBlocked.name(), about);
            let dir = crate::logs::iter_dir(&self.run_dir, self.iteration);
            let mut said = crate::reporter::Human::new();
            self.events.hook(Hook::OnBlocked, &ev, &dir, &self.stop, &mut said).await;
        }
        let root = self.root();
        for _ in 0..MAX_LAND_TRIES {
            self.remote.fetch()?;
            let tip = self.remote.tip()?;
            git::reset_checkout(root, LOCAL, &tip)?;
            let spec = root.join(&task.path);
            let Ok(before) = crate::fsx::read_input(&spec) else { break };
            if !crate::backlog::set_status(root, task, &before, Status::Blocked, Some(why))? {
                break;
            }
            // What the failures taught lands with the block: they teach the most.
            let admission = self.admit(task, learned)?;
            let mut include = vec![task.path.as_path()];
            if let Some(a) = &admission
                && self.render_agents_md(a)?
            {
                include.push(Path::new(crate::learnings::AGENTS_MD));
            }
            let msg = format!(
                "ralph({}): blocked\n\n{why}\n\nRalph-Task: {}\nRalph-Worker: {}\n",
                task.id, task.id, self.remote.worker
            );
            let git::CommitResult::Committed(new) = git::commit_including(root, &msg, &include)? else {
                break;
            };
            let args = self.landing_push(task, &tip, &new, claim, true, admission.as_ref())?;
            if git::push(root, &self.remote.name, &args)?.is_ok() {
                self.keep_store_copy(admission.as_ref());
                return Ok(());
            }
        }
        let _ = self.remote.release(&task.id, claim);
        Ok(())
    }

    /// Work that did not land: its claim lost (nothing more to do: the work stays in the
    /// clone), or refused after the retries (the work pushed to `ralph/<task>`, the task
    /// blocked with the reason).
    async fn not_landed(
        &mut self,
        task: &Spec,
        mut rec: IterationRecord,
        why: &str,
        mine: &str,
        learned: &[Learned],
    ) -> Result<(), CliError> {
        rec.commit = None;
        if why == LOST {
            rec.outcome = Outcome::Interrupted;
            rec.cause = Some(Cause::Interrupted);
            rec.failure =
                Some(format!("{LOST}: nothing of it landed; the work stays on {LOCAL} in this clone"));
            eprintln!("task {}: the claim was lost before landing; nothing landed", task.id);
            return self.recorded(&rec, task, false).await;
        }
        rec.outcome = Outcome::ChecksFailed;
        rec.cause = Some(Cause::LandConflict);
        rec.failure = Some(why.to_string());
        rec.blocked = true;
        self.recorded(&rec, task, false).await?;
        let _ = git::push(self.root(), &self.remote.name, &[format!("+HEAD:refs/heads/ralph/{}", task.id)]);
        self.block(task, &format!("{why}; its work is on the branch ralph/{}", task.id), mine, learned).await
    }

    /// Keeps the agents' limits in force at `now` (best effort: a lost write only means one more
    /// try of a limited agent after a restart).
    fn save_limits(&self, now: jiff::Timestamp) {
        let limits = self.chain.limits(now);
        if let Ok(bytes) = serde_json::to_vec(&limits)
            && let Err(e) = crate::durable::atomic_write(&limits_path(self.root()), &bytes)
        {
            tracing::debug!("cannot keep the agents' limits: {e}");
        }
    }

    /// Counts a failed attempt at `task` on the remote, across workers; the count now. When the
    /// remote cannot be reached the worker's own count goes on (`attempts` + 1).
    fn count_try(&self, task: &Spec, base: &str, why: &str, attempts: u32) -> u32 {
        match self.remote.add_try(&task.id, base, why) {
            Ok(n) => n.max(attempts + 1),
            Err(e) => {
                eprintln!("task {}: {}", task.id, e.message);
                attempts + 1
            }
        }
    }

    /// `learned` admitted into the workers' store as fetched (or, before there is one, the
    /// entries the target's AGENTS.md shows); none when there is nothing to admit.
    fn admit(&self, task: &Spec, learned: &[Learned]) -> Result<Option<Admission>, CliError> {
        if learned.is_empty() {
            return Ok(None);
        }
        let (seen, bytes) = match self.remote.store()? {
            Some((sha, bytes)) => (Some(sha), Some(bytes)),
            None => (None, None),
        };
        let agents_md = crate::fsx::read_input_following(&self.root().join(crate::learnings::AGENTS_MD))
            .unwrap_or_default();
        let mut store = crate::learnings::Store::from_bytes(bytes.as_deref(), &agents_md).map_err(|e| {
            CliError::failure(format!(
                "the workers' learnings store ({}) is not valid: {e}",
                claims::STORE_REF
            ))
        })?;
        let mut added = Vec::new();
        for l in learned {
            let a = store.admit(&l.findings, &l.provenance, &task.body, &self.secrets, &self.cfg.learnings);
            for r in &a.rejected {
                eprintln!("task {}: learning not kept ({}): {}", task.id, r.reason, r.text);
            }
            added.extend(a.added);
        }
        Ok(Some(Admission { store, seen, added }))
    }

    /// Renders AGENTS.md in the clone from the admission's store; whether it changed.
    fn render_agents_md(&self, a: &Admission) -> Result<bool, CliError> {
        Ok(crate::learnings::write_agents_md(self.root(), &a.store, &self.cfg.learnings, &self.secrets)?)
    }

    /// `learned` admitted (see [`Worker::admit`]) and AGENTS.md rendered from the store into
    /// HEAD, amended: the admission and whether HEAD changed, or the words of a hook that
    /// refused the amend.
    fn learnings_into_head(
        &self,
        task: &Spec,
        learned: &[Learned],
    ) -> Result<Result<(Option<Admission>, bool), String>, CliError> {
        let admission = self.admit(task, learned)?;
        let Some(a) = &admission else { return Ok(Ok((None, false))) };
        if !self.render_agents_md(a)? {
            return Ok(Ok((admission, false)));
        }
        git::add_paths(self.root(), &[Path::new(crate::learnings::AGENTS_MD)])?;
        if let git::CommitResult::Refused(t) = git::amend(self.root())? {
            return Ok(Err(format!("`git commit` was refused: {}", t.trim())));
        }
        Ok(Ok((admission, true)))
    }

    /// The one atomic push that lands `new` on the target: the target leased on `tip`, the
    /// claim on the worker's own `claim` commit (deleted when the task is `done`, with its
    /// count of tries), and the learnings store moved with the AGENTS.md it rendered.
    fn landing_push(
        &self,
        task: &Spec,
        tip: &str,
        new: &str,
        claim: &str,
        done: bool,
        admission: Option<&Admission>,
    ) -> Result<Vec<String>, CliError> {
        let target = format!("refs/heads/{}", self.remote.target);
        let claim_ref = claims::claim_ref(&task.id);
        let mut args = vec![
            "--atomic".to_string(),
            format!("--force-with-lease={target}:{tip}"),
            format!("{new}:{target}"),
            format!("--force-with-lease={claim_ref}:{claim}"),
            if done { format!(":{claim_ref}") } else { format!("{claim}:{claim_ref}") },
        ];
        if done {
            args.extend(self.remote.drop_tries(&task.id)?);
        }
        args.extend(self.store_update(admission)?);
        Ok(args)
    }

    /// The push arguments that move the store's ref to the admission's store, leased on the
    /// store the admission started from.
    fn store_update(&self, a: Option<&Admission>) -> Result<Vec<String>, CliError> {
        let Some(a) = a else { return Ok(Vec::new()) };
        let bytes = a
            .store
            .to_bytes()
            .map_err(|e| CliError::failure(format!("cannot write the learnings store: {e}")))?;
        let msg = format!("ralph learnings\n\nRalph-Worker: {}\n", self.remote.worker);
        let sha = git::commit_file(self.root(), claims::STORE_FILE, &bytes, a.seen.as_deref(), &msg)?;
        let r = claims::STORE_REF;
        Ok(vec![format!("--force-with-lease={r}:{}", a.seen.as_deref().unwrap_or("")), format!("{sha}:{r}")])
    }

    /// After a push that moved the store: the clone's own `.ralph/learnings.json` follows it,
    /// so `ralph learnings` in the clone shows what the workers learned.
    fn keep_store_copy(&self, a: Option<&Admission>) {
        if let Some(a) = a
            && let Err(e) = a.store.save(self.root())
        {
            tracing::debug!("cannot keep a copy of the learnings store: {e}");
        }
    }

    /// Pushes the finished task's commit as `branch` for the forge to land, and marks the claim
    /// `mine` pending. The learnings go with the branch (AGENTS.md in its commit, the store's ref
    /// in the same atomic push).
    async fn propose(
        &mut self,
        task: &Spec,
        mine: &str,
        branch: &str,
        mut rec: IterationRecord,
        learned: &[Learned],
    ) -> Result<(), CliError> {
        let mut last = String::new();
        for _ in 0..MAX_LAND_TRIES {
            let admission = match self.learnings_into_head(task, learned)? {
                Ok((admission, _)) => admission,
                Err(refused) => {
                    last = refused;
                    break;
                }
            };
            let mut args = vec!["--atomic".to_string(), format!("+HEAD:refs/heads/{branch}")];
            args.extend(self.store_update(admission.as_ref())?);
            match git::push(self.root(), &self.remote.name, &args)? {
                Ok(()) => {
                    self.keep_store_copy(admission.as_ref());
                    rec.learnings_added = admission.map(|a| a.added).unwrap_or_default();
                    let _ = self.remote.pend(&task.id, mine, branch);
                    eprintln!("task {}: pushed {branch} for the forge to land", task.id);
                    return self.recorded(&rec, task, false).await;
                }
                Err(text) => last = text,
            }
            // The store moved under the push: fetched again, admitted again.
            self.remote.fetch()?;
        }
        rec.failure = Some(format!("cannot push {branch}: {}", last.trim()));
        // Done only once the forge lands it: no `task_done` from here.
        self.recorded(&rec, task, false).await
    }

    /// The `[budget]` this worker has spent, in words (ralph.toml's budgets hold per worker).
    fn over_budget(&self) -> Option<String> {
        let b = &self.cfg.budget;
        if self.spent.iterations >= b.max_iterations {
            return Some(format!("max_iterations {} reached", b.max_iterations));
        }
        if let Some(d) = b.max_duration
            && self.started.elapsed() >= d
        {
            return Some(format!("max_duration {} reached", crate::runner::human(d)));
        }
        if let Some(t) = b.max_tokens
            && self.spent.tokens >= t
        {
            return Some(format!("max_tokens {t} reached"));
        }
        if let Some(c) = b.max_cost
            && self.spent.cost_usd >= c
        {
            return Some(format!("max_cost ${c:.2} reached"));
        }
        None
    }

    /// Writes `status: done` into the task's spec and amends it into the clone's commit; the
    /// words of a hook that refused the amend.
    fn mark_done(&self, task: &Spec) -> Result<Option<String>, CliError> {
        let root = self.root();
        let spec = root.join(&task.path);
        let before = crate::fsx::read_input(&spec)
            .map_err(|e| CliError::failure(format!("cannot read {}: {e}", spec.display())))?;
        if crate::backlog::set_status(root, task, &before, Status::Done, None)? {
            git::add_paths(root, &[task.path.as_path()])?;
            if let git::CommitResult::Refused(t) = git::amend(root)? {
                return Ok(Some(t.trim().to_string()));
            }
        }
        Ok(None)
    }

    fn append(&self, rec: &IterationRecord) -> Result<(), CliError> {
        let path = crate::logs::records_path(&self.run_dir);
        record::append(&path, rec)
            .map_err(|e| CliError::failure(format!("cannot write {}: {e}", path.display())))
    }

    /// Appends the record, sends what it calls for (`task_done` when `landed` a done task's
    /// work on the target), and runs `after_iteration` and, for landed work, `on_land`.
    async fn recorded(&mut self, rec: &IterationRecord, task: &Spec, landed: bool) -> Result<(), CliError> {
        self.append(rec)?;
        let about = || About {
            title: Some(task.title.clone()),
            worker: Some(self.remote.worker.clone()),
            ..About::record(rec)
        };
        self.events.iteration_ended(rec, Some(&task.title), landed);
        if !self.stop.cancel.is_cancelled() {
            let dir = crate::logs::iter_dir(&self.run_dir, rec.iteration);
            let mut said = crate::reporter::Human::new();
            let ev = self.events.event(Hook::AfterIteration.name(), about());
            self.events.hook(Hook::AfterIteration, &ev, &dir, &self.stop, &mut said).await;
            if landed {
                let ev = self.events.event(Hook::OnLand.name(), about());
                self.events.hook(Hook::OnLand, &ev, &dir, &self.stop, &mut said).await;
            }
            self.events.report(&mut said);
        }
        Ok(())
    }

    /// `before_iteration` for `task`; whether its iteration may start. A skip is recorded
    /// (`skipped`), the claim let go, and the task not claimed again for `[hooks] skip_wait`.
    async fn before_iteration(&mut self, task: &Spec) -> Result<bool, CliError> {
        let number = self.iteration + 1;
        let dir = crate::logs::iter_dir(&self.run_dir, number);
        let wait = self.cfg.hooks.skip_wait;
        let again = format!("it is claimed again in {} at the soonest", crate::runner::human(wait));
        let worker = Some(self.remote.worker.clone());
        let mut said = crate::reporter::Human::new();
        let gate = self
            .events
            .before_iteration(&self.run_id, number, task, worker, &dir, &again, &self.stop, &mut said)
            .await;
        let rec = match gate {
            crate::events::Gate::Go => return Ok(true),
            crate::events::Gate::Stopped => return Ok(false),
            crate::events::Gate::Skip(rec) => *rec,
        };
        self.iteration = number;
        self.append(&rec)?;
        self.events.iteration_ended(&rec, Some(&task.title), false);
        self.skipped.insert(task.id.clone(), Instant::now() + wait);
        Ok(false)
    }
}

/// The claim commit the worker holds now (the heartbeat moves it).
fn held(mine: &std::sync::Mutex<String>) -> String {
    mine.lock().map(|m| m.clone()).unwrap_or_default()
}

/// The heartbeat of a claim: a new claim commit every third of the lease, leased on the last;
/// one that does not hold means the claim is gone: `lost` is set and the iteration's process
/// (`pid`) is stopped at once.
fn heartbeat(
    remote: Remote,
    task: &str,
    ttl: Duration,
    lost: &Arc<AtomicBool>,
    pid: &Arc<AtomicU32>,
    mine: &Arc<std::sync::Mutex<String>>,
) -> tokio::task::JoinHandle<()> {
    let (lost, pid, mine, id) = (lost.clone(), pid.clone(), mine.clone(), task.to_string());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep((ttl / 3).max(Duration::from_millis(100))).await;
            let last = held(&mine);
            match remote.renew(&id, &last) {
                Ok(Leased::Won(next)) => {
                    if let Ok(mut m) = mine.lock() {
                        *m = next;
                    }
                }
                Ok(Leased::Lost(_)) => {
                    lost.store(true, Ordering::SeqCst);
                    if let Ok(p) = i32::try_from(pid.load(Ordering::SeqCst))
                        && p > 0
                    {
                        // SAFETY: kill with a pid of this worker's own child and a signal number.
                        unsafe {
                            libc::kill(p, libc::SIGTERM);
                        }
                    }
                    return;
                }
                // The remote out of reach: the lease decides; try again.
                Err(e) => tracing::debug!("heartbeat failed: {e}"),
            }
        }
    })
}
