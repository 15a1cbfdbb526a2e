//! What the run tells the outside world as it goes: notifications (`[[notify]]`: a webhook, a
//! command, ntfy, Slack, Discord, Telegram) and the lifecycle hooks (`[hooks]`), both fed one
//! [`Event`] shape, whose JSON is a documented contract (README, "Notifications").
//!
//! Invariants:
//! - A notification never blocks or slows the loop: [`Events::notify`] hands the deliveries to
//!   threads of their own ([`deliver`]) and returns; each delivery has its timeout and bounded
//!   retries; at the run's end ralph waits at most one timeout for those still under way
//!   ([`Events::finish`]). A failed delivery is a line in the run's output and in
//!   `notify.log`, never an error of the run.
//! - Hooks are the user's commands, run by the loop at its points and waited for (with
//!   `[hooks] timeout`), outside any sandbox, their output masked into the iteration's
//!   `hooks.log`. Only `before_iteration` changes the run: a non-zero exit skips the task.
//! - Everything written or sent is masked with the run's secrets, which hold the values of the
//!   environment variables `[[notify]]` names (URLs, tokens).
//! - Where each event fires is decided by its callers: the single loop (`crate::runner`), the
//!   coordinator of a parallel run (`crate::parallel`, the one writer: workers fire none) and a
//!   remote worker (`crate::remote`). The README's table says which fires where.

mod deliver;
pub mod hooks;
pub mod shape;

use crate::config::{Config, HooksConfig, NotifyConfig, NotifyOn};
use crate::record::{IterationRecord, Outcome};
use crate::reporter::Reporter;
use crate::secrets::Secrets;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use hooks::{Hook, HookRun};

/// The file in the run's folder where each delivery is logged.
pub const NOTIFY_LOG: &str = "notify.log";

/// One event: the body a webhook receives, a command's stdin, a hook's stdin. Every field is
/// always present (`null` when it does not apply): fields are only ever added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `run_end`, `task_done`, `task_blocked`, `budget_spent`, `rate_limited`,
    /// `agent_fallback`, `checks_red_streak`; for hooks `before_iteration`,
    /// `after_iteration`, `on_land`, `on_blocked`.
    pub event: String,
    pub run_id: String,
    /// The repository's root folder.
    pub repo: String,
    /// When the event happened (RFC 3339, UTC).
    pub timestamp: String,
    pub task: Option<String>,
    /// The task's title.
    pub title: Option<String>,
    pub iteration: Option<u32>,
    /// The iteration's outcome (`done`, `checks_failed`, ...).
    pub outcome: Option<String>,
    /// Why, as the record's `cause` names it.
    pub cause: Option<String>,
    /// In words: why the task was blocked, which budget is spent, what the usage limit said,
    /// why the run ended.
    pub reason: Option<String>,
    /// The commit the work landed as.
    pub commit: Option<String>,
    /// A parallel run's worker slot, or a remote worker's name.
    pub worker: Option<String>,
    /// Iterations of the run so far by outcome.
    pub counts: BTreeMap<String, u32>,
    /// The run's summary line: the last line `ralph run` prints for `run_end`, the same figures
    /// so far otherwise.
    pub summary: String,
    /// The run's HTML report (`run_end`), else the run's folder.
    pub report: String,
    /// `run_end`: the run's exit code.
    pub exit_code: Option<u8>,
    /// `checks_red_streak`: iterations in a row with the checks red.
    pub streak: Option<u32>,
    /// `agent_fallback`: the agent the run moves to, and the one it leaves.
    pub agent: Option<String>,
    pub previous_agent: Option<String>,
    /// One line for people: what the chat presets send.
    pub text: String,
}

impl Event {
    /// The `RALPH_EVENT_*` variables a command notifier and a hook get: `RALPH_EVENT` is the
    /// event's name, and each field is `RALPH_EVENT_<FIELD>` (upper case; `counts` as JSON;
    /// a `null` field is left out).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![("RALPH_EVENT".to_string(), self.event.clone())];
        if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(self) {
            for (k, v) in fields {
                let value = match v {
                    serde_json::Value::Null => continue,
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                env.push((format!("RALPH_EVENT_{}", k.to_ascii_uppercase()), value));
            }
        }
        env
    }

    /// The event's JSON.
    pub fn json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn masked(mut self, secrets: &Secrets) -> Event {
        if secrets.is_empty() {
            return self;
        }
        let m = |s: &mut String| *s = secrets.mask(s);
        let mo = |s: &mut Option<String>| {
            if let Some(s) = s {
                *s = secrets.mask(s);
            }
        };
        m(&mut self.summary);
        m(&mut self.text);
        mo(&mut self.reason);
        mo(&mut self.title);
        self
    }
}

/// The run's summary line: why it ended, what its iterations came to, how long it took, its
/// exit code (the last line `ralph run` prints, and `run_end`'s `summary`).
pub fn summary(reason: &str, code: u8, counts: &BTreeMap<Outcome, u32>, took: Duration) -> String {
    format!("ralph: {reason} — {} (exit {code})", figures(counts, took))
}

/// "3 iteration(s): 2 done, 1 checks_failed in 5m".
fn figures(counts: &BTreeMap<Outcome, u32>, took: Duration) -> String {
    let outcomes: Vec<String> = counts.iter().map(|(o, n)| format!("{n} {}", o.as_str())).collect();
    format!(
        "{} iteration(s){}{} in {}",
        counts.values().sum::<u32>(),
        if outcomes.is_empty() { "" } else { ": " },
        outcomes.join(", "),
        humantime::format_duration(Duration::from_secs(took.as_secs())),
    )
}

/// What an event is about, beyond the run: filled by the caller, the rest by [`Events`].
#[derive(Debug, Clone, Default)]
pub struct About {
    pub task: Option<String>,
    pub title: Option<String>,
    pub iteration: Option<u32>,
    pub outcome: Option<Outcome>,
    pub cause: Option<String>,
    pub reason: Option<String>,
    pub commit: Option<String>,
    pub worker: Option<String>,
}

impl About {
    /// An iteration's record, as an event sees it.
    pub fn record(r: &IterationRecord) -> About {
        About {
            task: Some(r.task.clone()),
            iteration: Some(r.iteration),
            outcome: Some(r.outcome),
            cause: r.cause.filter(|_| !r.outcome.is_green()).map(|c| c.as_str().to_string()),
            reason: r.failure.as_deref().and_then(|f| f.lines().next()).map(str::to_string),
            commit: r.commit.clone(),
            worker: r.worker.map(|w| w.to_string()),
            ..About::default()
        }
    }

    pub fn task(id: &str) -> About {
        About { task: Some(id.to_string()), ..About::default() }
    }
}

/// What `before_iteration` decided (see [`Events::before_iteration`]).
pub enum Gate {
    /// No hook, or it passed: the iteration starts.
    Go,
    /// ralph is being stopped: nothing starts, nothing is recorded.
    Stopped,
    /// The hook failed: the task is skipped, with this record.
    Skip(Box<IterationRecord>),
}

/// The run's notifications and hooks: what every event carries about the run, the deliveries
/// under way, the streak of red iterations.
pub struct Events {
    sinks: Vec<deliver::Sink>,
    hooks: HooksConfig,
    run_id: String,
    root: PathBuf,
    run_dir: PathBuf,
    secrets: Secrets,
    shared: std::sync::Arc<deliver::Shared>,
    counts: BTreeMap<Outcome, u32>,
    started: Instant,
    /// Iterations in a row whose checks were red (`checks_failed`).
    red: u32,
    /// The run's kill grace, for hooks that must be stopped.
    grace: Duration,
    /// A remote worker's name: every event's `worker`.
    worker: Option<String>,
}

impl Events {
    /// The events of run `run_id` in `root`, as `cfg` configures them.
    pub fn new(cfg: &Config, root: &Path, run_id: &str, run_dir: &Path, secrets: &Secrets) -> Events {
        let shared = std::sync::Arc::new(deliver::Shared::new(run_dir.join(NOTIFY_LOG), secrets.clone()));
        Events {
            sinks: cfg.notify.iter().map(|n| deliver::Sink::new(n, root)).collect(),
            hooks: cfg.hooks.clone(),
            run_id: run_id.to_string(),
            root: root.to_path_buf(),
            run_dir: run_dir.to_path_buf(),
            secrets: secrets.clone(),
            shared,
            counts: BTreeMap::new(),
            started: Instant::now(),
            red: 0,
            grace: cfg.agent.kill_grace,
            worker: None,
        }
    }

    /// Names the remote worker whose events these are.
    pub fn for_worker(mut self, name: &str) -> Events {
        self.worker = Some(name.to_string());
        self
    }

    /// Takes a reloaded ralph.toml's `[[notify]]` and `[hooks]` (deliveries under way go on).
    pub fn reconfigure(&mut self, cfg: &Config) {
        let (a, b): (Vec<&NotifyConfig>, Vec<&NotifyConfig>) =
            (self.sinks.iter().map(|s| &s.cfg).collect(), cfg.notify.iter().collect());
        if a != b {
            self.sinks = cfg.notify.iter().map(|n| deliver::Sink::new(n, &self.root)).collect();
        }
        self.hooks = cfg.hooks.clone();
        self.grace = cfg.agent.kill_grace;
    }

    /// Iterations so far by outcome.
    pub fn counts(&self) -> &BTreeMap<Outcome, u32> {
        &self.counts
    }

    /// The hooks configured.
    pub fn hooks(&self) -> &HooksConfig {
        &self.hooks
    }

    /// An event of this run.
    pub fn event(&self, name: &str, about: About) -> Event {
        let so_far =
            format!("ralph run {}: {} so far", self.run_id, figures(&self.counts, self.started.elapsed()));
        let mut ev = Event {
            event: name.to_string(),
            run_id: self.run_id.clone(),
            repo: self.root.display().to_string(),
            timestamp: crate::logs::now_rfc3339(),
            task: about.task,
            title: about.title,
            iteration: about.iteration,
            outcome: about.outcome.map(|o| o.as_str().to_string()),
            cause: about.cause,
            reason: about.reason,
            commit: about.commit,
            worker: about.worker.or_else(|| self.worker.clone()),
            counts: self.counts.iter().map(|(o, n)| (o.as_str().to_string(), *n)).collect(),
            summary: so_far,
            report: self.run_dir.display().to_string(),
            exit_code: None,
            streak: None,
            agent: None,
            previous_agent: None,
            text: String::new(),
        };
        ev.text = shape::text(&ev, &self.repo_name());
        ev
    }

    fn repo_name(&self) -> String {
        self.root
            .file_name()
            .map_or_else(|| self.root.display().to_string(), |n| n.to_string_lossy().into_owned())
    }

    /// Whether any notifier listens for `on`.
    pub fn wants(&self, on: NotifyOn) -> bool {
        self.sinks.iter().any(|s| s.cfg.on.contains(&on))
    }

    /// Sends `ev` to every notifier listening for `on`, on their threads; returns at once.
    pub fn notify(&self, on: NotifyOn, ev: &Event) {
        self.notify_where(ev, |c| c.on.contains(&on));
    }

    fn notify_where(&self, ev: &Event, wanted: impl Fn(&NotifyConfig) -> bool) {
        let mut masked: Option<Event> = None;
        for sink in self.sinks.iter().filter(|s| wanted(&s.cfg)) {
            let ev = masked.get_or_insert_with(|| ev.clone().masked(&self.secrets));
            deliver::start(sink, ev, &self.shared);
        }
    }

    /// A finished iteration's record (the single loop's, or one a coordinator settled): counts
    /// it, and sends `task_done`, `task_blocked`, `rate_limited` and `checks_red_streak` as it
    /// calls for. `title` is the task's. (`task_done` for work that must still land is the
    /// caller's: see [`Events::task_done`].)
    pub fn iteration_ended(&mut self, r: &IterationRecord, title: Option<&str>, done_here: bool) {
        *self.counts.entry(r.outcome).or_default() += 1;
        match r.outcome {
            Outcome::ChecksFailed => self.red += 1,
            // Say nothing of the checks.
            Outcome::RateLimited | Outcome::Interrupted | Outcome::Restarted | Outcome::Skipped => {}
            _ => self.red = 0,
        }
        let about = || About { title: title.map(str::to_string), ..About::record(r) };
        if done_here && r.outcome == Outcome::Done && r.commit.is_some() && self.wants(NotifyOn::TaskDone) {
            self.notify(NotifyOn::TaskDone, &self.event("task_done", about()));
        }
        if r.outcome == Outcome::RateLimited && self.wants(NotifyOn::RateLimited) {
            let mut a = about();
            a.reason = r.limit_resets_at.as_ref().map_or(a.reason.clone(), |at| {
                Some(format!("{} (resets at {at})", a.reason.clone().unwrap_or_default()))
            });
            self.notify(NotifyOn::RateLimited, &self.event("rate_limited", a));
        }
        if r.outcome == Outcome::ChecksFailed && self.wants(NotifyOn::ChecksRedStreak) {
            let red = self.red;
            let mut ev = self.event("checks_red_streak", about());
            ev.streak = Some(red);
            ev.text = shape::text(&ev, &self.repo_name());
            self.notify_where(&ev, |c| c.on.contains(&NotifyOn::ChecksRedStreak) && c.red_streak == red);
        }
    }

    /// A task's work landed done where the iteration could not tell (a parallel run's landing,
    /// a remote worker's push).
    pub fn task_done(&self, about: About) {
        if self.wants(NotifyOn::TaskDone) {
            self.notify(NotifyOn::TaskDone, &self.event("task_done", about));
        }
    }

    /// A task was blocked: `task_blocked`.
    pub fn task_blocked(&self, about: About) {
        if self.wants(NotifyOn::TaskBlocked) {
            self.notify(NotifyOn::TaskBlocked, &self.event("task_blocked", about));
        }
    }

    /// The run moved from agent `from` to agent `to` (`[agent] fallback`), for `reason`:
    /// `agent_fallback`.
    pub fn agent_fallback(&self, from: &str, to: &str, reason: &str, about: About) {
        if !self.wants(NotifyOn::AgentFallback) {
            return;
        }
        let mut ev = self.event("agent_fallback", About { reason: Some(reason.to_string()), ..about });
        ev.agent = Some(to.to_string());
        ev.previous_agent = Some(from.to_string());
        ev.text = shape::text(&ev, &self.repo_name());
        self.notify(NotifyOn::AgentFallback, &ev);
    }

    /// The run ended: `budget_spent` first when a budget ended it, then `run_end` (with the
    /// run's report written beside its records, for the path); then at most one timeout's wait
    /// for what is still being delivered, and the failures said. `summary` is the run's last
    /// line.
    pub async fn run_ended(
        &mut self,
        reason: &str,
        code: u8,
        budget_spent: bool,
        summary: &str,
        reporter: &mut dyn Reporter,
    ) {
        if budget_spent && self.wants(NotifyOn::BudgetSpent) {
            let ev =
                self.event("budget_spent", About { reason: Some(reason.to_string()), ..About::default() });
            self.notify(NotifyOn::BudgetSpent, &ev);
        }
        if self.wants(NotifyOn::RunEnd) {
            let mut ev =
                self.event("run_end", About { reason: Some(reason.to_string()), ..About::default() });
            ev.exit_code = Some(code);
            ev.summary = summary.to_string();
            match crate::runreport::write_beside(&self.run_dir, &self.run_id) {
                Ok(path) => ev.report = path.display().to_string(),
                Err(e) => tracing::debug!("no report for run_end: {e}"),
            }
            ev.text = shape::text(&ev, &self.repo_name());
            self.notify(NotifyOn::RunEnd, &ev);
        }
        self.finish(reporter).await;
    }

    /// Waits at most one timeout (the longest configured) for the deliveries under way, then
    /// says the failures; what is still under way then is given up.
    pub async fn finish(&self, reporter: &mut dyn Reporter) {
        let longest = self.sinks.iter().map(|s| s.cfg.timeout).max().unwrap_or_default();
        let until = Instant::now() + longest;
        while self.shared.pending() > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let left = self.shared.pending();
        self.report(reporter);
        if left > 0 {
            reporter.line(&format!(
                "notify: {left} delivery(ies) still under way after {} given up (see {})",
                humantime::format_duration(longest),
                self.run_dir.join(NOTIFY_LOG).display()
            ));
        }
    }

    /// Says the deliveries that failed since the last call, a line each.
    pub fn report(&self, reporter: &mut dyn Reporter) {
        for line in self.shared.take_failures() {
            reporter.line(&line);
        }
    }

    /// Runs `hook`'s commands with `ev` on their stdin, their output into `dir`'s `hooks.log`
    /// (the iteration's folder, or the run's for a hook outside an iteration); says a failure
    /// in the run's output.
    /// Runs `before_iteration` for `task` as iteration `number` (its output in `dir`): whether
    /// the iteration may start. A skip comes with its `skipped` record (no agent ran; the
    /// failure names the hook's words, then `again`: when the task is tried next); the caller
    /// keeps the books (the record appended, the counts, when to try the task again).
    #[allow(clippy::too_many_arguments)]
    pub async fn before_iteration(
        &self,
        run_id: &str,
        number: u32,
        task: &crate::backlog::Spec,
        worker: Option<String>,
        dir: &Path,
        again: &str,
        stop: &crate::signal::Stop,
        reporter: &mut dyn Reporter,
    ) -> Gate {
        if self.hooks.before_iteration.is_empty() {
            return Gate::Go;
        }
        let started_at = crate::logs::now_rfc3339();
        let t0 = Instant::now();
        let about = About {
            title: Some(task.title.clone()),
            iteration: Some(number),
            worker,
            ..About::task(&task.id)
        };
        let ev = self.event(Hook::BeforeIteration.name(), about);
        let run = self.hook(Hook::BeforeIteration, &ev, dir, stop, reporter).await;
        let Some(failure) = run.failure else { return Gate::Go };
        if run.interrupted || stop.cancel.is_cancelled() {
            // The caller's next look at the stop ends its run; nothing ran, nothing to record.
            return Gate::Stopped;
        }
        Gate::Skip(Box::new(IterationRecord {
            started_at,
            ended_at: crate::logs::now_rfc3339(),
            duration_ms: u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX),
            failure: Some(format!("the before_iteration hook skipped the task: {failure}; {again}")),
            ..IterationRecord::new(run_id, number, &task.id, Outcome::Skipped)
        }))
    }

    pub async fn hook(
        &self,
        hook: Hook,
        ev: &Event,
        dir: &Path,
        stop: &crate::signal::Stop,
        reporter: &mut dyn Reporter,
    ) -> HookRun {
        let commands = hook.commands(&self.hooks);
        if commands.is_empty() {
            return HookRun::default();
        }
        let ev = ev.clone().masked(&self.secrets);
        let ctx = hooks::Ctx {
            root: &self.root,
            timeout: self.hooks.timeout,
            grace: self.grace,
            stop,
            secrets: &self.secrets,
        };
        let run = hooks::run(hook, commands, &ev, dir, &ctx).await;
        // A skip is said by the iteration's line.
        if let Some(f) = run.failure.as_ref().filter(|_| hook != Hook::BeforeIteration) {
            reporter.line(&format!(
                "hook {}: {}{}",
                hook.name(),
                f.lines().next().unwrap_or(""),
                " (the run goes on)"
            ));
        }
        run
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_a_variable_and_nulls_are_left_out() {
        let cfg = Config::parse(Path::new("ralph.toml"), "[agent]\ncommand = [\"a\"]\n").unwrap();
        let ev_src = Events::new(
            &cfg,
            Path::new("/r/proj"),
            "run-1",
            Path::new("/r/proj/.ralph/runs/run-1"),
            &Secrets::default(),
        );
        let mut r = IterationRecord::new("run-1", 4, "010-a", Outcome::ChecksFailed);
        r.failure = Some("`cargo test` failed (exit 101):\ntail".into());
        let ev = ev_src.event("task_blocked", About { title: Some("Add login".into()), ..About::record(&r) });
        let env: BTreeMap<String, String> = ev.env().into_iter().collect();
        assert_eq!(env["RALPH_EVENT"], "task_blocked");
        assert_eq!(env["RALPH_EVENT_EVENT"], "task_blocked");
        assert_eq!(env["RALPH_EVENT_TASK"], "010-a");
        assert_eq!(env["RALPH_EVENT_ITERATION"], "4");
        assert_eq!(env["RALPH_EVENT_OUTCOME"], "checks_failed");
        assert_eq!(env["RALPH_EVENT_CAUSE"], "checks_failed");
        assert_eq!(env["RALPH_EVENT_REASON"], "`cargo test` failed (exit 101):");
        assert_eq!(env["RALPH_EVENT_REPO"], "/r/proj");
        assert_eq!(env["RALPH_EVENT_COUNTS"], "{}");
        assert!(!env.contains_key("RALPH_EVENT_COMMIT"), "null is left out");
        assert!(env["RALPH_EVENT_TEXT"].contains("010-a"), "{}", env["RALPH_EVENT_TEXT"]);
        // The JSON has every field, nulls included.
        let v: serde_json::Value = serde_json::from_slice(&ev.json()).unwrap();
        for k in [
            "event",
            "run_id",
            "repo",
            "timestamp",
            "task",
            "title",
            "iteration",
            "outcome",
            "cause",
            "reason",
            "commit",
            "worker",
            "counts",
            "summary",
            "report",
            "exit_code",
            "streak",
            "agent",
            "previous_agent",
            "text",
        ] {
            assert!(v.get(k).is_some(), "{k} missing from {v}");
        }
    }

    #[test]
    fn the_summary_line_reads_as_before() {
        let counts = BTreeMap::from([(Outcome::Done, 2), (Outcome::ChecksFailed, 1)]);
        assert_eq!(
            summary("backlog done", 0, &counts, Duration::from_secs(65)),
            "ralph: backlog done — 3 iteration(s): 2 done, 1 checks_failed in 1m 5s (exit 0)"
        );
        assert_eq!(
            summary("interrupted", 130, &BTreeMap::new(), Duration::from_millis(300)),
            "ralph: interrupted — 0 iteration(s) in 0s (exit 130)"
        );
    }
}
