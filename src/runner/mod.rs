//! `ralph run`: the loop. It validates everything before touching anything (configuration,
//! specs, template, agent binaries, git state), takes the single-instance lock, then runs one
//! iteration at a time on the task the backlog picks, with the agent the fallback chain picks
//! ([`crate::agent::fallback`]), until the backlog is done, nothing is runnable, a budget runs
//! out, no agent can run, or it is stopped.
//!
//! Exit codes are in [`crate::exit_code`]; the run's end is also written to `run.json`.

mod frame;
mod iteration;
mod recover;
mod revert;
mod review;
pub(crate) mod task_rules;
mod verdict;
pub mod worker;

pub use iteration::commit_message;

use crate::agent::{self, limits};
use crate::backlog::{Backlog, Next, Status};
use crate::budget::Budget;
use crate::config::{self, Config};
use crate::error::CliError;
use crate::events::{About, Events, Gate, Hook};
use crate::exit_code;
use crate::git;
use crate::logs;
use crate::prompt::Template;
use crate::record::{self, Outcome};
use crate::reporter::Reporter;
use crate::secrets::Secrets;
use crate::signal::Stop;
use crate::state::{self, RunLock, RunMeta, State};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `ralph run`'s options.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub cwd: PathBuf,
    pub max_iterations: Option<u32>,
    pub max_duration: Option<Duration>,
    pub allow_dirty: bool,
    /// `--agent`: a preset replacing the configured agent.
    pub agent: Option<String>,
    /// Start a new run (fresh budgets) instead of resuming the last one.
    pub new_run: bool,
    /// With nothing left to do, wait for new or changed specs instead of exiting.
    pub watch: bool,
    pub max_tokens: Option<u64>,
    pub max_cost: Option<f64>,
    /// `-j N`: tasks at once (overrides `[parallel] workers`).
    pub jobs: Option<u32>,
}

/// The repository root for `cwd`, or a usage error.
pub fn repo_root(cwd: &Path) -> Result<PathBuf, CliError> {
    git::toplevel(cwd).map_err(|e| match e {
        git::GitError::NotARepo(p) => CliError::usage(format!("{} is not a git repository", p.display()))
            .hint("ralph works in a git repository: run `git init` and commit your project first"),
        other => other.into(),
    })
}

/// Loads `ralph.toml`, with a hint when it is missing.
pub fn load_config(root: &Path, overrides: &config::Overrides) -> Result<Config, CliError> {
    match Config::load(root, overrides) {
        Err(config::ConfigError::Read { path, source }) if source.kind() == std::io::ErrorKind::NotFound => {
            Err(CliError::usage(format!("{} not found", path.display()))
                .hint("run `ralph init` to create one"))
        }
        other => Ok(other?),
    }
}

/// The inputs `ralph run` reads before it changes anything, beyond ralph.toml itself: the
/// prompt template, the backlog (every spec parses) and the `[git] branch` name. `ralph
/// doctor` checks the same, so it never calls ready what `run` would refuse.
pub fn validate_inputs(root: &Path, cfg: &Config) -> Result<Template, CliError> {
    let template = Template::load(root, cfg.template.as_deref())?;
    let backlog = Backlog::load(root, &cfg.source(root))?;
    task_agents(&backlog, cfg)?;
    if let Some(branch) = &cfg.branch
        && !git::valid_branch_name(root, branch)
    {
        return Err(CliError::usage(format!(
            "{}: [git] branch `{branch}` is not a valid branch name",
            config::FILE_NAME
        )));
    }
    Ok(template)
}

/// The agents the tasks name in their front matter (`agent: NAME`), which must be agents
/// ralph.toml knows: an unknown name is an error naming the spec's file and line.
pub fn task_agents(backlog: &Backlog, cfg: &Config) -> Result<Vec<config::AgentConfig>, CliError> {
    let mut found: Vec<config::AgentConfig> = Vec::new();
    for t in &backlog.tasks {
        let Some(name) = &t.agent else { continue };
        match cfg.agent_named(name) {
            Some(a) => {
                if !found.iter().any(|f| f.name == a.name) {
                    found.push(a);
                }
            }
            None => {
                let known: Vec<String> =
                    cfg.chain(None).into_iter().chain(cfg.agents.keys().cloned()).collect();
                return Err(CliError::usage(format!(
                    "{}:{}: agent `{name}` is not an agent {} knows",
                    t.path.display(),
                    t.agent_line,
                    config::FILE_NAME
                ))
                .hint(format!(
                    "name one of {} or a preset ({}), or add an [agents.{name}] table to {}",
                    known.join(", "),
                    crate::agent::preset::names(),
                    config::FILE_NAME
                )));
            }
        }
    }
    Ok(found)
}

/// Refuses a working tree in the middle of a git operation (ralph's commits would land inside
/// a rebase stopped at `edit`, a merge, a cherry-pick...) and a detached HEAD (they would
/// belong to no branch) unless `[git] branch` names the branch to work on.
pub fn check_git_state(root: &Path, cfg: &Config) -> Result<(), CliError> {
    if let Some(op) = git::operation_in_progress(root) {
        return Err(CliError::usage(format!(
            "{} is in progress in this repository: ralph would commit into it",
            op.name()
        ))
        .hint(format!("{}, then `ralph run` again", op.way_out())));
    }
    if cfg.branch.is_none() && git::current_branch(root)?.is_none() && git::head(root)?.is_some() {
        let at = git::head(root)?.unwrap_or_default();
        return Err(CliError::usage(format!(
            "HEAD is detached (at {}): ralph's commits would belong to no branch",
            &at[..at.len().min(12)]
        ))
        .hint("check out a branch (`git switch NAME`, or `git switch -c NAME` to start one here), then `ralph run` again")
        .hint(format!("or name the branch to work on in {}: [git] branch = \"NAME\"", config::FILE_NAME)));
    }
    Ok(())
}

/// The agent can start: its sandbox's program (bwrap, the container engine) is installed, and
/// so is its own (on this machine; a container's image holds it instead).
pub fn check_agent(cfg: &Config, root: &Path, from_flag: bool) -> Result<(), CliError> {
    crate::sandbox::runner(&cfg.sandbox)?;
    if cfg.sandbox.kind != crate::sandbox::Kind::Container
        && agent::resolve_program(&cfg.agent, root).is_none()
    {
        return Err(missing_agent(&cfg.agent, from_flag));
    }
    Ok(())
}

/// The agent's program was not found: where it was named (ralph.toml's `[agent] command`, a
/// preset there, or `--agent`), and the key that changes it. A preset's program is overridden
/// by `[agent] bin`, never by `command` (which conflicts with a preset).
pub fn missing_agent(a: &config::AgentConfig, from_flag: bool) -> CliError {
    let program = &a.command[0];
    let not_found = if program.contains('/') { "was not found" } else { "was not found on PATH" };
    match a.preset {
        Some(p) => {
            let named = if program != p.bin {
                format!("{}: [agent] bin", config::FILE_NAME)
            } else if from_flag {
                format!("--agent {}", p.name)
            } else {
                format!("{}: [agent] preset = \"{}\"", config::FILE_NAME, p.name)
            };
            CliError::usage(format!("{named}: `{program}` {not_found}"))
                .hint(format!("install it: {}", p.install))
                .hint(format!(
                    "or, if it is installed elsewhere, name its path in {}: [agent] bin = \"/path/to/{}\"",
                    config::FILE_NAME,
                    p.bin
                ))
        }
        None => CliError::usage(format!("{}: [agent] command: `{program}` {not_found}", config::FILE_NAME))
            .hint("install the agent, or set [agent] command to its full path"),
    }
}

/// ralph.toml with this run's command-line flags on top.
fn effective_config(root: &Path, opts: &RunOptions) -> Result<Config, CliError> {
    let mut cfg = load_config(root, &config::Overrides { agent: opts.agent.clone() })?;
    if let Some(n) = opts.max_iterations {
        cfg.budget.max_iterations = n;
    }
    if let Some(d) = opts.max_duration {
        cfg.budget.max_duration = Some(d);
    }
    if let Some(t) = opts.max_tokens {
        cfg.budget.max_tokens = Some(t);
    }
    if let Some(c) = opts.max_cost {
        cfg.budget.max_cost = Some(c);
    }
    if let Some(j) = opts.jobs {
        if !(1..=config::defaults::MAX_WORKERS).contains(&j) {
            return Err(CliError::usage(format!(
                "-j {j}: the number of workers must be between 1 and {}",
                config::defaults::MAX_WORKERS
            )));
        }
        cfg.workers = j;
    }
    Ok(cfg)
}

/// What a live edit of ralph.toml or the prompt template changes, from the next iteration.
struct Reload<'a> {
    opts: &'a RunOptions,
    /// Fingerprints of ralph.toml and the template, as last read.
    seen: (String, String),
}

impl Reload<'_> {
    fn fingerprints(root: &Path, cfg: &Config) -> (String, String) {
        let read = |p: &Path| {
            crate::fsx::read_input(p).map(|t| crate::backlog::spec::fingerprint(&t)).unwrap_or_default()
        };
        let template = cfg.template.as_ref().map(|t| read(&root.join(t))).unwrap_or_default();
        (read(&root.join(config::FILE_NAME)), template)
    }

    /// Re-reads ralph.toml and the template if either changed; a broken edit keeps the
    /// previous ones (and says so) rather than stopping a night's run.
    fn check(
        &mut self,
        root: &Path,
        cfg: &mut Config,
        template: &mut Template,
        next: u32,
        reporter: &mut dyn Reporter,
    ) {
        let now = Self::fingerprints(root, cfg);
        if now == self.seen {
            return;
        }
        self.seen = now;
        match effective_config(root, self.opts)
            .and_then(|c| Template::load(root, c.template.as_deref()).map(|t| (c, t)).map_err(Into::into))
        {
            Ok((c, t)) => {
                *cfg = c;
                *template = t;
                reporter.line(&format!("ralph.toml or the prompt template changed; applies from iteration {next}"));
            }
            Err(e) => reporter.line(&format!(
                "ralph.toml or the prompt template changed but cannot be used ({}); the run goes on with the previous ones",
                e.message
            )),
        }
    }
}

/// What `ralph run` established before changing anything (see [`validate`]).
pub struct Validated {
    pub root: PathBuf,
    pub cfg: Config,
    pub template: Template,
    pub lock: RunLock,
}

/// Runs the loop; returns the exit code.
pub async fn run(opts: RunOptions, reporter: &mut dyn Reporter, stop: Stop) -> Result<u8, CliError> {
    let v = validate(&opts)?;
    run_validated(opts, v, reporter, stop).await
}

/// [`run`] once [`validate`] passed: the single loop.
pub async fn run_validated(
    opts: RunOptions,
    v: Validated,
    reporter: &mut dyn Reporter,
    stop: Stop,
) -> Result<u8, CliError> {
    let Validated { root, cfg, template, lock } = v;

    // Orphaned descendants (an agent's `setsid` daemon) re-parent to ralph, which ends them
    // after each agent and each round of checks.
    if !crate::process::reaper::become_subreaper() {
        tracing::debug!("not a child subreaper: escaped processes are not ended");
    }
    // Secrets come from the environment, known before anything is written: recovery's
    // rejected.patch is masked like the iteration's own.
    let secrets = cfg.secrets();
    let resumed = recover_latest(&root, &opts, &secrets, reporter)?;

    // The working tree's watch starts before the scan that finds the tree clean, so that it
    // vouches for the tree at the first iteration too: no second scan there.
    let worktree = crate::worktree::Worktree::open(&root);
    worktree.note_index();
    let dirty = git::dirty_entries(&root)?;
    if !dirty.is_empty() && !opts.allow_dirty {
        let mut shown: Vec<String> = dirty.iter().take(10).map(|l| format!("  {l}")).collect();
        if dirty.len() > 10 {
            shown.push(format!("  ... and {} more", dirty.len() - 10));
        }
        return Err(CliError::usage(format!(
            "the working tree has uncommitted changes:\n{}",
            shown.join("\n")
        ))
        .hint("commit or stash them first: ralph reverts failed iterations to the last commit")
        .hint("or pass --allow-dirty to start from them (they go into ralph's first commit)"));
    }
    if let Some(branch) = &cfg.branch
        && git::current_branch(&root)?.as_deref() != Some(branch.as_str())
    {
        git::checkout_branch(&root, branch)?;
        reporter.line(&format!("on branch {branch}"));
    }
    if let (true, Some(head)) = (dirty.is_empty(), git::head(&root)?) {
        worktree.settle_if_unchanged(&head);
    }

    let (run_id, mut meta, records) = open_run(&root, resumed);
    let run_dir = logs::run_dir(&root, &run_id);
    // From here on every git process is marked as this run's (recovery is done).
    git::mark_run(&run_id, &root);
    crate::fsx::create_dir_all(&run_dir)
        .map_err(|e| CliError::failure(format!("cannot create {}: {e}", run_dir.display())))?;
    meta.branch = git::current_branch(&root)?;
    let budget = Budget::resume(cfg.budget.clone(), &records, meta.elapsed_ms);
    meta.limits = Some(state::Limits::from(&cfg.budget));
    meta.spent = Some(budget.spent_now());
    meta.save(&run_dir)?;
    if meta.sessions > 1 {
        let s = budget.spent_now();
        reporter.line(&format!(
            "resuming run {run_id} (session {}): {} iteration(s), {} active, {} tokens, ${:.2} spent so far; `ralph run --new-run` starts afresh",
            meta.sessions,
            meta.iterations,
            humantime::format_duration(Duration::from_secs(s.elapsed_ms / 1000)),
            s.tokens,
            s.cost_usd
        ));
    }
    reporter.line(&format!(
        "ralph run {run_id}: agent `{}`{}, checks: {}",
        cfg.agent.command.join(" "),
        fallback_words(&cfg),
        if cfg.checks.commands.is_empty() { "none".to_string() } else { cfg.checks.commands.join(", ") }
    ));
    if cfg.checks.commands.is_empty() {
        reporter.line("warning: no [checks] commands: green means only that the agent exited 0");
    }
    let mut traced = crate::telemetry::Traced::start(reporter, &cfg, &run_id, meta.sessions, &secrets);
    let reporter = &mut traced;
    let events = Events::new(&cfg, &root, &run_id, &run_dir, &secrets);

    let started = Instant::now();
    // The frame holds the lock for the rest of the run, and makes it again if an agent takes
    // it away.
    let frame = frame::Memory::new(&root).holding(lock);
    let mut run = Run {
        wt: &worktree,
        frame: &frame,
        reload: Reload { opts: &opts, seen: Reload::fingerprints(&root, &cfg) },
        cfg,
        template,
        last_task: records.last().map(|r| r.task.clone()),
        run_id,
        run_dir,
        secrets: &secrets,
        stop: &stop,
        watch: opts.watch,
        budget,
        counts: Default::default(),
        chain: agent::fallback::Chain::resume(&meta.agents_limited),
        last_agent: None,
        meta,
        events,
        skipped: Default::default(),
        inbox: crate::notes::Inbox::open(&root),
    };
    let result = run.run_loop(reporter).await;

    // Closing an inotify instance waits for the kernel to free the marks of the folders it
    // watched (a grace period of 5 to 20 ms here), once per instance: removed from both
    // watches first, the marks are freed in one grace period, under the writes below.
    worktree.unwatch_all();
    frame.unwatch_all();
    let (code, reason) = match &result {
        Ok(end) => (end.code(), end.reason()),
        Err(e) => (e.code, format!("error: {}", e.message)),
    };
    if result.as_ref().is_ok_and(RunEnd::stopped_by_person) {
        run.meta.stops += 1;
    }
    save_end(&mut run.meta, &run.budget, &run.run_dir, code, &reason);
    let summary = summary(&reason, code, &run.counts, started.elapsed());
    let spent = result.as_ref().is_ok_and(RunEnd::budget_spent);
    run.events.run_ended(&reason, code, spent, &summary, &mut traced).await;
    traced.finish(code, &reason).await;
    match result {
        Ok(_) => {
            eprintln!("{summary}");
            Ok(code)
        }
        Err(e) => Err(e),
    }
}

/// ", falling back to codex, pi" when `[agent] fallback` names agents.
pub(crate) fn fallback_words(cfg: &Config) -> String {
    if cfg.fallback.is_empty() {
        return String::new();
    }
    let names: Vec<&str> = cfg.fallback.iter().map(|a| a.name.as_str()).collect();
    format!(" (falling back to {})", names.join(", "))
}

/// The run's last line (see [`crate::events::summary`]).
pub(crate) use crate::events::summary;

/// Writes the run's end into `run.json` and flushes ralph's pending syncs.
pub(crate) fn save_end(meta: &mut RunMeta, budget: &Budget, run_dir: &Path, code: u8, reason: &str) {
    meta.ended_at = Some(logs::now_rfc3339());
    meta.waiting_until = None;
    meta.exit_code = Some(code);
    meta.end_reason = Some(reason.to_string());
    let spent = budget.spent_now();
    meta.elapsed_ms = spent.elapsed_ms;
    meta.spent = Some(spent);
    // Best effort: the run's own error, if any, matters more than this write.
    let _ = meta.save(run_dir);
    // The last syncs while the kernel frees the watches' marks (see above), not after.
    crate::state::flush();
}

/// Every agent the run may start (the main one, its fallbacks, those the tasks name) is found
/// and free of the hazards that would stop it (`ralph run`, `ralph worker`).
pub fn check_agents(root: &Path, cfg: &Config, from_flag: bool) -> Result<(), CliError> {
    check_agent(cfg, root, from_flag)?;
    // In a container, the programs are the image's: not looked for here.
    let on_host = cfg.sandbox.kind != crate::sandbox::Kind::Container;
    let backlog = Backlog::load(root, &cfg.source(root))?;
    let mut others: Vec<config::AgentConfig> = cfg.fallback.clone();
    for a in task_agents(&backlog, cfg)? {
        if a.name != cfg.agent.name && !others.iter().any(|o| o.name == a.name) {
            others.push(a);
        }
    }
    for a in others.iter().filter(|_| on_host) {
        if agent::resolve_program(a, root).is_none() {
            return Err(missing_other_agent(a, cfg));
        }
    }
    let env = agent::hazards::agent_env(cfg.sandbox.kind != crate::sandbox::Kind::None);
    for a in std::iter::once(&cfg.agent).chain(&others) {
        for h in agent::hazards::check(a, agent::hazards::euid(), &env) {
            if h.level == agent::hazards::Level::Problem {
                let which =
                    if a.name == cfg.agent.name { String::new() } else { format!(" (agent {})", a.name) };
                let e = CliError::usage(format!("{}{which}: {}", config::FILE_NAME, h.message));
                return Err(match h.hint {
                    Some(hint) => e.hint(hint),
                    None => e,
                });
            }
        }
    }
    Ok(())
}

/// A fallback's program (or that of an agent a task names) was not found: where it was named,
/// and the key that changes it.
pub fn missing_other_agent(a: &config::AgentConfig, cfg: &Config) -> CliError {
    let program = &a.command[0];
    let not_found = if program.contains('/') { "was not found" } else { "was not found on PATH" };
    let table = cfg.agents.contains_key(&a.name);
    let named = if table {
        format!("{}: [agents.{}]", config::FILE_NAME, a.name)
    } else {
        format!("the {} preset (in [agent] fallback, or a task's `agent:`)", a.name)
    };
    let e = CliError::usage(format!("{named}: `{program}` {not_found}"));
    match a.preset {
        Some(p) => e.hint(format!("install it: {}", p.install)).hint(format!(
            "or, if it is installed elsewhere, name its path in {}: [agents.{}] bin = \"/path/to/{}\"",
            config::FILE_NAME,
            a.name,
            p.bin
        )),
        None => e.hint(format!("install the agent, or set [agents.{}] command to its full path", a.name)),
    }
}

/// Everything `ralph run` checks before it changes anything, then the lock: the repository,
/// the configuration with the flags on top, the template, the agent's program and hazards,
/// the git state.
pub fn validate(opts: &RunOptions) -> Result<Validated, CliError> {
    // Validate everything first: a bad input changes nothing.
    let root = repo_root(&opts.cwd)?;
    // ralph's folder before anything: a link there would take every write elsewhere.
    state::check_ralph_dir(&root)?;
    let cfg = effective_config(&root, opts)?;
    let template = validate_inputs(&root, &cfg)?;
    check_agents(&root, &cfg, opts.agent.is_some())?;
    if git::head(&root)?.is_none() {
        return Err(CliError::usage("the repository has no commits yet")
            .hint("commit your project (ralph.toml and specs/ included) before `ralph run`"));
    }
    check_git_state(&root, &cfg)?;
    if let Some(missing) = cfg.notify_env_missing() {
        return Err(CliError::usage(missing)
            .hint("export it before `ralph run` (its value is masked wherever ralph writes), or remove the [[notify]] entry"));
    }
    let ralph_dir = state::ensure_ralph_dir(&root)?;
    state::check_own_files(&root)?;
    let lock = RunLock::acquire(&ralph_dir).map_err(|e| match e {
        state::StateError::Locked { .. } => CliError::usage(e.to_string()).hint(
            "wait for it to finish, or stop it: `ralph stop` (after this iteration) or `ralph stop --now`",
        ),
        other => other.into(),
    })?;

    Ok(Validated { root, cfg, template, lock })
}

/// A run killed without ending (kill -9, a crash, a reboot) is put right before anything else;
/// so is one that ended on an error in the middle of an iteration (a full disk), whose
/// iteration has no record. Returns the run to resume: the latest, unless it finished its
/// backlog or `--new-run` says so.
pub(crate) fn recover_latest(
    root: &Path,
    opts: &RunOptions,
    secrets: &Secrets,
    reporter: &mut dyn Reporter,
) -> Result<Option<RunMeta>, CliError> {
    // A run killed without ending (kill -9, a crash, a reboot) is put right before anything else;
    // so is one that ended on an error in the middle of an iteration (a full disk), whose
    // iteration has no record.
    let mut latest = logs::latest_run(root).and_then(|id| RunMeta::load(&logs::run_dir(root, &id)).ok());
    if let Some(m) = latest.as_mut()
        && (m.ended_at.is_none() || recover::has_unsettled(&logs::run_dir(root, &m.run_id)))
    {
        let dir = logs::run_dir(root, &m.run_id);
        let ran = recover::crashed_run(root, &dir, &m.run_id, secrets, reporter)?;
        // Its agent may have written notes in the person's name before it was ended.
        for text in crate::notes::set_aside(root) {
            let text: String = crate::term::sanitize(&secrets.mask(&text), false).chars().take(120).collect();
            reporter.line(&format!(
                "a note left when the last run was killed is not carried (its agent may have written it): {text} (`ralph note` it again if it is yours)"
            ));
        }
        // The cut iterations' time counts toward the time budget, as if the run had ended them
        // (a run that ended on an error counted it already).
        if !ran.is_zero() && m.ended_at.is_none() {
            m.elapsed_ms += u64::try_from(ran.as_millis()).unwrap_or(u64::MAX);
            if let Some(spent) = m.spent.as_mut() {
                spent.elapsed_ms = m.elapsed_ms;
            }
            m.save(&dir)?;
        }
        if opts.new_run && m.ended_at.is_none() {
            let mut ended = m.clone();
            ended.ended_at = Some(logs::now_rfc3339());
            ended.exit_code = Some(exit_code::INTERRUPTED);
            ended.end_reason = Some("killed; recovered when the next run started".into());
            ended.save(&dir)?;
        }
    }
    // The run to resume: the latest, unless it finished its backlog or --new-run says so.
    Ok(latest.filter(|m| !opts.new_run && m.exit_code != Some(exit_code::OK)))
}

/// The run's id, its `run.json` and the records so far: the resumed run's, or a new one's.
pub(crate) fn open_run(
    root: &Path,
    resumed: Option<RunMeta>,
) -> (String, RunMeta, Vec<crate::record::IterationRecord>) {
    match resumed {
        Some(mut m) => {
            let run_dir = logs::run_dir(root, &m.run_id);
            let records = record::read_all(&logs::records_path(&run_dir));
            m.pid = std::process::id();
            m.ended_at = None;
            m.exit_code = None;
            m.end_reason = None;
            m.waiting_until = None;
            m.sessions += 1;
            m.iterations = m.iterations.max(logs::iterations(&run_dir).last().copied().unwrap_or(0));
            (m.run_id.clone(), m, records)
        }
        None => {
            let run_id = logs::new_run_id(root);
            let meta = RunMeta {
                run_id: run_id.clone(),
                pid: std::process::id(),
                started_at: logs::now_rfc3339(),
                ended_at: None,
                iterations: 0,
                exit_code: None,
                end_reason: None,
                branch: None,
                waiting_until: None,
                sessions: 1,
                elapsed_ms: 0,
                spent: None,
                limits: None,
                stops: 0,
                ralph_commits: Vec::new(),
                agents_limited: Default::default(),
            };
            (run_id, meta, Vec::new())
        }
    }
}

/// How a run ends: each end's exit code and words are given here, and only here.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RunEnd {
    /// No task at all.
    BacklogEmpty,
    BacklogDone,
    /// Nothing runnable left: these tasks are blocked.
    OnlyBlocked(Vec<String>),
    /// A budget ran out (its words).
    Budget(String),
    /// Resumed with a budget the earlier sessions spent: its words, how to raise it.
    BudgetSpentBefore {
        spent: String,
        raise: String,
        run_id: String,
    },
    /// A usage limit that lifts only after the time budget ends.
    LimitAfterBudget(Duration),
    /// Ctrl-C or a signal.
    Interrupted,
    /// `ralph stop`.
    Stopped,
    /// Stopped while waiting for specs (`--watch`).
    StoppedWaiting,
    /// A failure of the agent no retry fixes (its words).
    AgentFatal(String),
}

impl RunEnd {
    /// How a run with nothing to do ends by its backlog: empty, done, or only blocked tasks
    /// left; `None` while a task can run.
    pub(crate) fn of_backlog(backlog: &Backlog) -> Option<RunEnd> {
        match backlog.next() {
            Next::Task(_) => None,
            Next::AllDone if backlog.tasks.is_empty() => Some(RunEnd::BacklogEmpty),
            Next::AllDone => Some(RunEnd::BacklogDone),
            Next::OnlyBlocked => Some(RunEnd::OnlyBlocked(
                backlog.tasks.iter().filter(|t| t.status == Status::Blocked).map(|t| t.id.clone()).collect(),
            )),
        }
    }

    /// The run stopped because a budget (or a breaker) is spent: `budget_spent` is sent.
    pub(crate) fn budget_spent(&self) -> bool {
        matches!(self, RunEnd::Budget(_) | RunEnd::BudgetSpentBefore { .. } | RunEnd::LimitAfterBudget(_))
    }

    /// A person ended the session while there was work: `ralph stop`, or `ralph stop --now`,
    /// Ctrl-C or a termination signal (which ralph cannot tell apart). An idle `--watch`
    /// stopped is the ordinary end of a watch, not counted.
    pub(crate) fn stopped_by_person(&self) -> bool {
        matches!(self, RunEnd::Stopped | RunEnd::Interrupted)
    }

    pub(crate) fn code(&self) -> u8 {
        match self {
            RunEnd::BacklogEmpty | RunEnd::BacklogDone => exit_code::OK,
            RunEnd::OnlyBlocked(_) => exit_code::BLOCKED,
            RunEnd::Budget(_) | RunEnd::BudgetSpentBefore { .. } | RunEnd::LimitAfterBudget(_) => {
                exit_code::BUDGET
            }
            RunEnd::Interrupted | RunEnd::Stopped | RunEnd::StoppedWaiting => exit_code::INTERRUPTED,
            RunEnd::AgentFatal(_) => exit_code::AGENT,
        }
    }

    /// The run's end in words (`run.json`'s `end_reason`, the summary line).
    pub(crate) fn reason(&self) -> String {
        match self {
            RunEnd::BacklogEmpty => "the backlog is empty: add one specs/*.md per task".into(),
            RunEnd::BacklogDone => "backlog done".into(),
            RunEnd::OnlyBlocked(blocked) => format!(
                "nothing runnable left; blocked: {}",
                if blocked.is_empty() { "none".to_string() } else { blocked.join(", ") }
            ),
            RunEnd::Budget(spent) => format!("stopped: {spent}"),
            RunEnd::BudgetSpentBefore { spent, raise, run_id } => format!(
                "stopped: {spent} already, by the earlier session(s) of run {run_id}: raise it ({raise}) or start a new run with `ralph run --new-run`"
            ),
            RunEnd::LimitAfterBudget(wait) => {
                format!("stopped: the usage limit lifts in {}, after the time budget ends", human(*wait))
            }
            RunEnd::Interrupted => "interrupted".into(),
            RunEnd::Stopped => "stopped by `ralph stop` (resume with `ralph run`)".into(),
            RunEnd::StoppedWaiting => "stopped while waiting for specs".into(),
            RunEnd::AgentFatal(message) => format!("stopped: {message}"),
        }
    }
}

/// A run under way: its context, what it spent and counted, the task it ran last.
struct Run<'a> {
    /// The checkout the run works in, and its working tree's watch.
    wt: &'a crate::worktree::Worktree,
    frame: &'a frame::Memory,
    cfg: Config,
    template: Template,
    reload: Reload<'a>,
    run_id: String,
    run_dir: PathBuf,
    secrets: &'a Secrets,
    stop: &'a Stop,
    watch: bool,
    budget: Budget,
    counts: std::collections::BTreeMap<Outcome, u32>,
    meta: RunMeta,
    /// The task of the run's last iteration (a breaker that trips blocks it).
    last_task: Option<String>,
    /// Which agents are limited or cannot run (`[agent] fallback`).
    chain: agent::fallback::Chain,
    /// The agent of the run's last iteration: a change is announced.
    last_agent: Option<String>,
    /// Notifications and hooks.
    events: Events,
    /// Tasks `before_iteration` skipped, and when each may be tried again.
    skipped: std::collections::BTreeMap<String, Instant>,
    /// The notes `ralph note` leaves for the next iteration.
    inbox: crate::notes::Inbox,
}

/// What the loop does next.
enum Step {
    /// The task (boxed: a spec is large beside the other steps) and the backlog it is from.
    Run(Box<crate::backlog::Spec>, Backlog),
    Again,
    End(RunEnd),
}

impl Run<'_> {
    async fn run_loop(&mut self, reporter: &mut dyn Reporter) -> Result<RunEnd, CliError> {
        let mut state = State::load(self.wt.root())?;
        // Per agent: the next wait for a limit that names no reset; doubles each time.
        let mut backoff: std::collections::BTreeMap<String, Duration> = Default::default();
        let spec_watch = crate::watch::SpecWatch::new();
        let mut seen = crate::watch::Seen::default();
        let mut ran_this_session = false;
        loop {
            if self.stop.cancel.is_cancelled() {
                return Ok(RunEnd::Interrupted);
            }
            if self.stop.after_iteration.is_cancelled() {
                return Ok(RunEnd::Stopped);
            }
            let (task, backlog) = match self.next_task(&mut state, &mut seen, reporter).await? {
                Step::Run(task, backlog) => (task, backlog),
                Step::Again => continue,
                Step::End(end) => return Ok(end),
            };
            if let Err(spent) = self.budget.check() {
                if spent.is_breaker() && self.cfg.budget.on_breaker == config::OnBreaker::Block {
                    // The breaker tripped on the task that ran last: block that one and go on.
                    if let Some(spec) = self.last_task.as_deref().and_then(|t| backlog.get(t))
                        && spec.status == Status::Todo
                    {
                        let (run_id, n) = (&self.run_id, self.meta.iterations);
                        let made = iteration::block(
                            self.wt,
                            spec,
                            &spent.to_string(),
                            run_id,
                            n,
                            &mut state,
                            reporter,
                        )?;
                        self.meta.ralph_commits.extend(made);
                        state.save(self.wt.root())?;
                        self.budget.reset_breakers();
                        let about = About {
                            title: Some(spec.title.clone()),
                            reason: Some(spent.to_string()),
                            ..About::task(&spec.id)
                        };
                        self.blocked(about, &self.run_dir, reporter).await;
                        continue;
                    }
                }
                if !ran_this_session && self.meta.sessions > 1 {
                    // Resumed with nothing left to spend: say which limit and the ways on.
                    return Ok(RunEnd::BudgetSpentBefore {
                        spent: spent.to_string(),
                        raise: spent.how_to_raise().to_string(),
                        run_id: self.run_id.clone(),
                    });
                }
                return Ok(RunEnd::Budget(spent.to_string()));
            }
            if !self.before_iteration(&task, reporter).await? {
                continue;
            }
            ran_this_session = true;
            let order = self.order(&task, reporter);
            let agent = match self.pick_agent(&task, &order, reporter).await? {
                Ok(agent) => agent,
                Err(end) => return Ok(end),
            };
            let name = agent.name.clone();
            let (retry_wait, retry_wait_max) = (agent.retry_wait, agent.retry_wait_max);
            let end = self.iterate(&task, &backlog, agent, &spec_watch, &mut state, reporter).await?;
            self.after_iteration(&task, &end, reporter).await;
            seen.note_agents_md(self.wt.root());
            if end.record.outcome == Outcome::Interrupted {
                return Ok(RunEnd::Interrupted);
            }
            if let Some(fatal) = end.fatal {
                // The next agent of the chain takes over; with none left the run ends.
                self.chain.set_unusable(&name, &fatal.message());
                let next = match self.chain.choose(&order, jiff::Timestamp::now()) {
                    agent::fallback::Choice::Run(n) | agent::fallback::Choice::Wait { agent: n, .. } => n,
                    agent::fallback::Choice::NoneLeft => return Ok(RunEnd::AgentFatal(fatal.message())),
                };
                reporter.line(&format!(
                    "{name}: {}; the run goes on without it: the next iteration runs on {next}",
                    fatal.message()
                ));
                self.events.agent_fallback(&name, &next, &fatal.message(), About::record(&end.record));
                continue;
            }
            let Some(limit) = end.limit else {
                backoff.remove(&name);
                continue;
            };
            let now = jiff::Timestamp::now();
            let next_wait = backoff.entry(name.clone()).or_insert(retry_wait);
            let wait = limits::wait_for(&limit, now, *next_wait);
            if limit.reset_at.is_none() {
                *next_wait = (*next_wait * 2).min(retry_wait_max);
            }
            match self.chain.on_limit(&name, wait, self.cfg.fallback_after, &order, now) {
                agent::fallback::OnLimit::WaitOut => {
                    let line = format!(
                        "waiting for the usage limit to lift: until {} (in {}); the same task runs next, no attempt used",
                        utc(until(wait)),
                        human(wait)
                    );
                    if let Some(end) = self.wait_out(wait, &line, reporter).await? {
                        return Ok(end);
                    }
                }
                agent::fallback::OnLimit::FallBack { until } => {
                    self.meta.agents_limited = self.chain.limits(now);
                    let next = match self.chain.choose(&order, now) {
                        agent::fallback::Choice::Run(n) => {
                            let why =
                                format!("a usage limit that lifts at {} (in {})", utc(until), human(wait));
                            self.events.agent_fallback(&name, &n, &why, About::record(&end.record));
                            format!("the next iteration runs on {n}")
                        }
                        _ => "every agent of the chain is limited".to_string(),
                    };
                    reporter.line(&format!(
                        "{name} hit a usage limit that lifts at {} (in {}, later than fallback_after): {next}, no attempt used; back to {name} once it lifts",
                        utc(until),
                        human(wait)
                    ));
                }
            }
        }
    }

    /// The agents that may run `task`, by name, in order of preference: its own `agent:`, then
    /// the main agent and its fallbacks. A name ralph.toml no longer knows (an edit during the
    /// run) is left out, and said.
    fn order(&self, task: &crate::backlog::Spec, reporter: &mut dyn Reporter) -> Vec<String> {
        let mut order = self.cfg.chain(task.agent.as_deref());
        if let Some(own) = &task.agent
            && self.cfg.agent_named(own).is_none()
        {
            reporter.line(&format!(
                "{}:{}: agent `{own}` is not an agent {} knows; the task runs on the configured agents",
                task.path.display(),
                task.agent_line,
                config::FILE_NAME
            ));
            order.retain(|n| n != own);
        }
        order
    }

    /// The agent for the next iteration on `task`: the first of `order` that is not limited,
    /// else (every one limited) the one whose limit lifts first, once it has; says so when it
    /// is not the agent of the last iteration.
    async fn pick_agent(
        &mut self,
        task: &crate::backlog::Spec,
        order: &[String],
        reporter: &mut dyn Reporter,
    ) -> Result<Result<config::AgentConfig, RunEnd>, CliError> {
        use agent::fallback::Choice;
        loop {
            let now = jiff::Timestamp::now();
            let name = match self.chain.choose(order, now) {
                Choice::Run(name) => name,
                Choice::Wait { agent, until: at } => {
                    let wait = Duration::try_from(now.duration_until(at)).unwrap_or_default();
                    let line = format!(
                        "every agent is limited: waiting for {agent}'s usage limit to lift: until {} (in {}); {} runs next on {agent}, no attempt used",
                        utc(at),
                        human(wait),
                        task.id
                    );
                    if let Some(end) = self.wait_out(wait, &line, reporter).await? {
                        return Ok(Err(end));
                    }
                    continue;
                }
                Choice::NoneLeft => {
                    let why: Vec<String> = order
                        .iter()
                        .filter_map(|n| Some(format!("{n}: {}", self.chain.unusable(n)?)))
                        .collect();
                    return Ok(Err(RunEnd::AgentFatal(format!("no agent can run ({})", why.join("; ")))));
                }
            };
            let Some(agent) = self.cfg.agent_named(&name) else {
                // Only names the configuration knows are in `order`.
                return Err(CliError::failure(format!("the agent `{name}` is not configured")));
            };
            self.announce(task, order, &name, now, reporter);
            self.meta.agents_limited = self.chain.limits(now);
            return Ok(Ok(agent));
        }
    }

    /// Says why the next iteration runs on `name` when that is news: another agent than the
    /// last iteration's, or (the first iteration) than the main agent.
    fn announce(
        &mut self,
        task: &crate::backlog::Spec,
        order: &[String],
        name: &str,
        now: jiff::Timestamp,
        reporter: &mut dyn Reporter,
    ) {
        let last = self.last_agent.replace(name.to_string());
        let before = last.unwrap_or_else(|| self.cfg.agent.name.clone());
        if before == name {
            return;
        }
        let n = self.meta.iterations + 1;
        let why = if task.agent.as_deref() == Some(name) {
            format!("{}'s own agent (`agent:` in its front matter)", task.id)
        } else if let Some(skipped) = order.iter().take_while(|o| *o != name).find_map(|o| {
            if let Some(at) = self.chain.limited_until(o, now) {
                Some(format!("{o} is limited until {}", utc(at)))
            } else {
                self.chain.unusable(o).map(|why| format!("{o} cannot run: {why}"))
            }
        }) {
            format!("fallback: {skipped}")
        } else if self.chain.lifted(name, now) {
            format!("back to {name}: its usage limit has lifted")
        } else {
            format!("after {before}")
        };
        reporter.line(&format!("iteration {n} runs on {name} ({why})"));
    }

    /// Reloads what changed and picks the next task: blocks, reopens and unblocks on the way.
    async fn next_task(
        &mut self,
        state: &mut State,
        seen: &mut crate::watch::Seen,
        reporter: &mut dyn Reporter,
    ) -> Result<Step, CliError> {
        let (root, run_id) = (self.wt.root(), self.run_id.as_str());
        // ralph.toml, the template and the specs are read afresh each iteration: edits
        // between iterations apply, and say so.
        self.reload.check(root, &mut self.cfg, &mut self.template, self.meta.iterations + 1, reporter);
        self.budget.limits = self.cfg.budget.clone();
        self.events.reconfigure(&self.cfg);
        let source = self.cfg.source(root);
        let listing =
            if self.watch { crate::watch::specs_listing(root, &source) } else { Default::default() };
        let mut backlog = Backlog::load(root, &source)?;
        backlog.apply_blocks(&state.blocks());
        for line in seen.update(root, &backlog) {
            reporter.line(&format!("{line}; applies from iteration {}", self.meta.iterations + 1));
        }
        // A task the user moved back to todo starts over with fresh attempts and allowances.
        let unblocked = task_rules::unblock_by_hand(state, &backlog);
        // A done task whose spec was edited since is reopened (`[backlog] reopen_changed`).
        let changed: Vec<&crate::backlog::Spec> =
            backlog.tasks.iter().filter(|t| t.status == Status::Done && spec_changed(state, t)).collect();
        if self.cfg.reopen_changed && !changed.is_empty() {
            for t in changed {
                let made = iteration::reopen(self.wt, t, run_id, self.meta.iterations, state, reporter)?;
                self.meta.ralph_commits.extend(made);
            }
            state.save(root)?;
            return Ok(Step::Again);
        }
        if unblocked {
            state.save(root)?;
        }
        let next = backlog.next();
        if self.watch && !matches!(next, Next::Task(_)) {
            // The wait may be long: what the last iteration spent is saved first.
            self.meta.save(&self.run_dir)?;
            reporter.line(
                "nothing to do: waiting for new or changed specs (--watch; Ctrl-C or `ralph stop` ends it)",
            );
            match crate::watch::specs_changed(root, &source, &listing, self.stop).await {
                crate::watch::Woken::Changed => return Ok(Step::Again),
                crate::watch::Woken::Stopped => return Ok(Step::End(RunEnd::StoppedWaiting)),
                // `ralph stop` ends an idle watch as a normal end: the run exits as it would
                // have without --watch (0 with the backlog done, 4 with only blocked tasks).
                crate::watch::Woken::StopRequested => {}
            }
        }
        // A task `before_iteration` skipped waits its turn; the others go on meanwhile.
        let now = Instant::now();
        self.skipped.retain(|_, until| *until > now);
        let task = match next {
            Next::Task(t) if !self.skipped.contains_key(&t.id) => t.clone(),
            Next::Task(_) => match backlog.runnable().into_iter().find(|t| !self.skipped.contains_key(&t.id))
            {
                Some(t) => t.clone(),
                None => return self.wait_for_skipped(reporter).await,
            },
            _ => return Ok(Step::End(RunEnd::of_backlog(&backlog).unwrap_or(RunEnd::BacklogDone))),
        };
        // A task already over its own limits (a killed iteration's spending, counted by
        // recovery, or a limit lowered since) is blocked before it spends more.
        if let Some(reason) = task_rules::over_task_limit(&state.task(&task.id), &self.cfg.budget) {
            let made =
                iteration::block(self.wt, &task, &reason, run_id, self.meta.iterations, state, reporter)?;
            self.meta.ralph_commits.extend(made);
            state.save(root)?;
            let about =
                About { title: Some(task.title.clone()), reason: Some(reason), ..About::task(&task.id) };
            self.blocked(about, &self.run_dir, reporter).await;
            return Ok(Step::Again);
        }
        Ok(Step::Run(Box::new(task), backlog))
    }

    /// Runs one iteration on `task` and counts what it spent.
    async fn iterate(
        &mut self,
        task: &crate::backlog::Spec,
        backlog: &Backlog,
        agent: config::AgentConfig,
        spec_watch: &crate::watch::SpecWatch,
        state: &mut State,
        reporter: &mut dyn Reporter,
    ) -> Result<iteration::IterationEnd, CliError> {
        self.meta.iterations += 1;
        let number = self.meta.iterations;
        self.meta.spent = Some(self.budget.spent_now());
        self.meta.save(&self.run_dir)?;
        reporter.totals(&self.budget.summary());
        // The configuration with the chosen agent in `[agent]`'s place (a fallback, the task's
        // own): a copy only when it is not the main agent.
        let with_agent;
        let cfg = if agent.name == self.cfg.agent.name {
            &self.cfg
        } else {
            with_agent = Config { agent, ..self.cfg.clone() };
            &with_agent
        };
        // Taken now, when the iteration surely starts: its prompt carries them, once.
        let notes = crate::notes::take_for(&self.inbox, number, self.secrets, &mut |l| reporter.line(l));
        let end = iteration::run(
            iteration::Iteration {
                wt: self.wt,
                spec_watch,
                frame: self.frame,
                cfg,
                template: &self.template,
                backlog,
                task,
                run_id: &self.run_id,
                run_dir: &self.run_dir,
                number,
                secrets: self.secrets,
                stop: self.stop,
                time_left: self.budget.time_left(),
                worker: None,
                notes: &notes,
            },
            state,
            reporter,
        )
        .await?;
        *self.counts.entry(end.record.outcome).or_default() += 1;
        self.last_task = Some(end.record.task.clone());
        self.budget.record(&end.record);
        let spent = self.budget.spent_now();
        self.meta.elapsed_ms = spent.elapsed_ms;
        self.meta.spent = Some(spent);
        // Saved by the next iteration's start, a moment from now, or by the run's end or wait:
        // one sync less per iteration. A run killed in between resumes its spending from the
        // records all the same.
        Ok(end)
    }

    /// Runs the `before_iteration` hook for `task`; whether the iteration goes ahead. A
    /// non-zero exit (or a timeout) skips the task: a `skipped` record with the hook's words,
    /// no attempt and no iteration of the budget used, and the task is not tried again for
    /// `[hooks] skip_wait` (other runnable tasks go on meanwhile).
    async fn before_iteration(
        &mut self,
        task: &crate::backlog::Spec,
        reporter: &mut dyn Reporter,
    ) -> Result<bool, CliError> {
        let number = self.meta.iterations + 1;
        let dir = logs::iter_dir(&self.run_dir, number);
        let wait = self.events.hooks().skip_wait;
        let again = format!("it is tried again in {} (other tasks go on meanwhile)", human(wait));
        let gate = self
            .events
            .before_iteration(&self.run_id, number, task, None, &dir, &again, self.stop, reporter)
            .await;
        let mut record = match gate {
            Gate::Go => return Ok(true),
            Gate::Stopped => return Ok(false),
            Gate::Skip(rec) => *rec,
        };
        self.meta.iterations = number;
        let head = git::head(self.wt.root())?;
        record.head_before.clone_from(&head);
        record.head_after = head;
        let records = logs::records_path(&self.run_dir);
        record::append(&records, &record)
            .map_err(|e| CliError::failure(format!("cannot write {}: {e}", records.display())))?;
        *self.counts.entry(Outcome::Skipped).or_default() += 1;
        self.budget.record(&record);
        self.meta.save(&self.run_dir)?;
        self.events.iteration_ended(&record, Some(&task.title), true);
        reporter.iteration_ended(&record);
        self.skipped.insert(task.id.clone(), Instant::now() + wait);
        Ok(false)
    }

    /// What follows an iteration outside it: the notifications its record calls for, and the
    /// `after_iteration`, `on_land` and `on_blocked` hooks (not when ralph is being stopped).
    async fn after_iteration(
        &mut self,
        task: &crate::backlog::Spec,
        end: &iteration::IterationEnd,
        reporter: &mut dyn Reporter,
    ) {
        let r = &end.record;
        self.events.iteration_ended(r, Some(&task.title), true);
        let dir = logs::iter_dir(&self.run_dir, r.iteration);
        let about = || About { title: Some(task.title.clone()), ..About::record(r) };
        if let Some(reason) = &end.blocked {
            self.events.task_blocked(About { reason: Some(reason.clone()), ..about() });
        }
        if !self.stop.cancel.is_cancelled() {
            let ev = self.events.event(Hook::AfterIteration.name(), about());
            self.events.hook(Hook::AfterIteration, &ev, &dir, self.stop, reporter).await;
            if r.commit.is_some() {
                let ev = self.events.event(Hook::OnLand.name(), about());
                self.events.hook(Hook::OnLand, &ev, &dir, self.stop, reporter).await;
            }
            if let Some(reason) = &end.blocked {
                let ev = self
                    .events
                    .event(Hook::OnBlocked.name(), About { reason: Some(reason.clone()), ..about() });
                self.events.hook(Hook::OnBlocked, &ev, &dir, self.stop, reporter).await;
            }
        }
        self.events.report(reporter);
    }

    /// A task blocked between iterations (a breaker, its own limits): `task_blocked`, and the
    /// `on_blocked` hook with its output in `dir` (the run's folder).
    async fn blocked(&self, about: About, dir: &Path, reporter: &mut dyn Reporter) {
        self.events.task_blocked(about.clone());
        if !self.stop.cancel.is_cancelled() {
            let ev = self.events.event(Hook::OnBlocked.name(), about);
            self.events.hook(Hook::OnBlocked, &ev, dir, self.stop, reporter).await;
        }
        self.events.report(reporter);
    }

    /// Every runnable task was skipped by `before_iteration`: waits for the first to be due
    /// (at most what is left of the time budget), then looks again.
    async fn wait_for_skipped(&mut self, reporter: &mut dyn Reporter) -> Result<Step, CliError> {
        // A budget spent meanwhile (the time budget, which the wait is cut to) ends the run.
        if let Err(spent) = self.budget.check()
            && !spent.is_breaker()
        {
            return Ok(Step::End(RunEnd::Budget(spent.to_string())));
        }
        let now = Instant::now();
        let mut wait =
            self.skipped.values().min().map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
        if let Some(left) = self.budget.time_left() {
            wait = wait.min(left);
        }
        self.meta.save(&self.run_dir)?;
        reporter.waiting(
            &format!(
                "the before_iteration hook skipped every runnable task: trying again in {} (no attempt used)",
                human(wait)
            ),
            std::time::SystemTime::now() + wait,
        );
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = self.stop.cancel.cancelled() => return Ok(Step::End(RunEnd::Interrupted)),
            _ = self.stop.after_iteration.cancelled() => return Ok(Step::End(RunEnd::Stopped)),
        }
        Ok(Step::Again)
    }

    /// Waits out a usage limit for `wait` (`line` says so); an end if the run is stopped
    /// meanwhile or the limit outlasts the time budget.
    async fn wait_out(
        &mut self,
        wait: Duration,
        line: &str,
        reporter: &mut dyn Reporter,
    ) -> Result<Option<RunEnd>, CliError> {
        if let Some(left) = self.budget.time_left()
            && wait >= left
        {
            return Ok(Some(RunEnd::LimitAfterBudget(wait)));
        }
        reporter.waiting(line, std::time::SystemTime::now() + wait);
        self.meta.waiting_until = Some(until(wait).to_string());
        self.meta.save(&self.run_dir)?;
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = self.stop.cancel.cancelled() => return Ok(Some(RunEnd::Interrupted)),
            _ = self.stop.after_iteration.cancelled() => return Ok(Some(RunEnd::Stopped)),
        }
        self.meta.waiting_until = None;
        self.meta.save(&self.run_dir)?;
        Ok(None)
    }
}

/// The time `wait` from now.
fn until(wait: Duration) -> jiff::Timestamp {
    let now = jiff::Timestamp::now();
    jiff::SignedDuration::try_from(wait).ok().and_then(|d| now.checked_add(d).ok()).unwrap_or(now)
}

/// A time as the lines of a run show it.
fn utc(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A duration to the second, as "1h 5m 3s".
pub(crate) fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs().max(1))).to_string()
}

/// Whether a done task's spec changed since it was done.
pub fn spec_changed(state: &State, t: &crate::backlog::Spec) -> bool {
    state
        .tasks
        .get(&t.id)
        .and_then(|ts| ts.done_hash.as_deref())
        .is_some_and(|h| h != crate::backlog::spec::fingerprint(&t.body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_end_has_its_exit_code_and_words() {
        let cases = [
            (RunEnd::BacklogDone, exit_code::OK, "backlog done"),
            (RunEnd::BacklogEmpty, exit_code::OK, "the backlog is empty: add one specs/*.md per task"),
            (
                RunEnd::OnlyBlocked(vec!["a".into(), "b".into()]),
                exit_code::BLOCKED,
                "nothing runnable left; blocked: a, b",
            ),
            (RunEnd::OnlyBlocked(Vec::new()), exit_code::BLOCKED, "nothing runnable left; blocked: none"),
            (
                RunEnd::Budget("max_iterations reached".into()),
                exit_code::BUDGET,
                "stopped: max_iterations reached",
            ),
            (
                RunEnd::LimitAfterBudget(Duration::from_secs(65)),
                exit_code::BUDGET,
                "stopped: the usage limit lifts in 1m 5s, after the time budget ends",
            ),
            (RunEnd::Interrupted, exit_code::INTERRUPTED, "interrupted"),
            (RunEnd::Stopped, exit_code::INTERRUPTED, "stopped by `ralph stop` (resume with `ralph run`)"),
            (RunEnd::StoppedWaiting, exit_code::INTERRUPTED, "stopped while waiting for specs"),
            (RunEnd::AgentFatal("bad key".into()), exit_code::AGENT, "stopped: bad key"),
        ];
        for (end, code, words) in cases {
            assert_eq!((end.code(), end.reason().as_str()), (code, words), "{end:?}");
            // `ralph stats` reads a person's stop from these words in a run.json written
            // before `stops` was kept.
            assert_eq!(crate::stats::ended_by_person(words), end.stopped_by_person(), "{end:?}");
        }
        let before = RunEnd::BudgetSpentBefore { spent: "x".into(), raise: "y".into(), run_id: "r".into() };
        assert_eq!(before.code(), exit_code::BUDGET);
        assert_eq!(
            before.reason(),
            "stopped: x already, by the earlier session(s) of run r: raise it (y) or start a new run with `ralph run --new-run`"
        );
    }
}
